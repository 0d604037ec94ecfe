-- Outbox leases. Before a Graph call the worker commits a lease on the row (an attempt id and an expiry), so a
-- crash or a stop between the call and its settlement leaves a trace: a leased but unsettled row is not sent
-- again until our echo had time to settle it (reconciliation by `metadata`).
alter table outbox add column lease_id text;
alter table outbox add column leased_until integer;
-- Head of line per customer: the oldest pending send of each PSID.
create index outbox_psid_pending on outbox(psid, status, id);
