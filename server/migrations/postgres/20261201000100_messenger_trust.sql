-- Messenger intake hardening (twin of ../sqlite/20261201000100_messenger_trust.sql): attachments downloaded off the
-- intake path, quarantined deliveries, consent before a "Continue on Messenger" link binds anything.

-- An attachment row is created when its message is posted and filled by the download queue.
alter table attachments add column status text not null default 'ready'
    check (status in ('ready', 'pending', 'downloading', 'failed'));
alter table attachments add column source_url text;            -- only while waiting to be downloaded
alter table attachments add column error text;                 -- why it is unavailable
create index attachments_waiting on attachments(status, created_at) where status in ('pending', 'downloading');

-- A delivery that keeps failing is quarantined after `messenger.max_delivery_attempts` tries.
alter table webhook_deliveries add column attempts bigint not null default 0;
alter table webhook_deliveries add column quarantined_at bigint;
create index webhook_deliveries_waiting on webhook_deliveries(id) where processed_at is null;

-- A link presented from Messenger is first offered to that person, who must answer "Yes, continue here".
alter table messenger_links add column offered_at bigint;
alter table messenger_links add column offer_expires_at bigint;
alter table messenger_links add column refused_at bigint;
create index messenger_links_expiry on messenger_links(expires_at);
create index messenger_links_contact on messenger_links(contact_id);
