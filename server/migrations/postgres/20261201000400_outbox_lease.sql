-- Outbox leases (twin of ../sqlite/20261201000400_outbox_lease.sql). Before a Graph call the worker commits a lease
-- on the row (an attempt id and an expiry), so a crash or a stop between the call and its settlement leaves a trace:
-- a leased but unsettled row is not sent again until our echo had time to settle it (reconciliation by `metadata`).
-- Workers on several nodes claim rows with `for update skip locked`, so one row has one live lease.
alter table outbox add column lease_id text;
alter table outbox add column leased_until bigint;
-- Head of line per customer: the oldest pending send of each PSID.
create index outbox_psid_pending on outbox(psid, status, id);
