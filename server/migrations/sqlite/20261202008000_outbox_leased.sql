-- The pending sends holding a lease (in flight, or left unsettled by a crash): few, so the outbox's lease and its
-- wake-up time read them through this index instead of scanning every pending send.
create index outbox_leased on outbox(id) where status = 'pending' and lease_id is not null;
