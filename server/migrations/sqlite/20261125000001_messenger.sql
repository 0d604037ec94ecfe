-- The Messenger channel: identities, raw webhook deliveries, link tokens, the send outbox, attachments.

alter table contacts add column psid text;                      -- page-scoped Messenger id
create unique index contacts_psid on contacts(psid) where psid is not null;
alter table contacts add column display_name text;              -- from the User Profile API
alter table contacts add column avatar_id text;                 -- cached profile picture (attachments.id)
alter table contacts add column messenger_linked_at integer;
alter table contacts add column messenger_last_action_at integer;   -- any user action: opens the 24 h window
alter table contacts add column messenger_last_message_at integer;  -- last user message: base of HUMAN_AGENT's 7 days

alter table messages add column external_id text;              -- Messenger mid
create unique index messages_external_id on messages(external_id) where external_id is not null;

-- Every signed delivery, exactly as received, before any processing.
create table webhook_deliveries (
    id integer primary key autoincrement,
    body blob not null,
    received_at integer not null,
    processed_at integer,
    error text
);

-- Keys of webhook events already applied (postbacks, referrals), so a redelivery applies once.
create table webhook_applied (
    key text primary key,
    created_at integer not null
);

-- "Continue on Messenger" tokens; single use.
create table messenger_links (
    nonce text primary key,
    contact_id text not null references contacts(id) on delete cascade,
    code text not null,
    expires_at integer not null,
    used_at integer,
    psid text,
    created_at integer not null
);
create index messenger_links_code on messenger_links(code);

-- Sends to the Graph API, written in the same transaction as the message they carry.
create table outbox (
    id integer primary key autoincrement,
    conversation_id text not null references conversations(id) on delete cascade,
    message_id text references messages(id) on delete cascade,
    psid text not null,
    body text not null,
    messaging_type text not null,            -- RESPONSE | HUMAN_AGENT
    status text not null default 'pending' check (status in ('pending', 'sent', 'failed')),
    attempts integer not null default 0,
    next_attempt_at integer not null,
    last_error text,
    external_id text,
    created_at integer not null,
    updated_at integer not null
);
create index outbox_due on outbox(status, next_attempt_at);
create index outbox_message on outbox(message_id);

create table attachments (
    id text primary key,                     -- random, unguessable
    conversation_id text references conversations(id) on delete cascade,
    content_type text not null,
    name text,
    bytes blob not null,
    created_at integer not null
);
