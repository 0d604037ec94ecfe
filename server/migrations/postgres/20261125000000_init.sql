-- Parley's initial schema (PostgreSQL), the twin of ../sqlite/20261125000000_init.sql: same tables, columns,
-- constraints and indexes, in PostgreSQL's types. Never edit an applied migration: add a new one to both folders,
-- with the same version number.
-- Times are epoch milliseconds (bigint); ids are UUIDv7 strings; secrets are stored only as SHA-256 hashes (bytea).

create table sites (
    id text primary key,
    key text not null unique,
    name text not null,
    allowed_origins text not null,          -- JSON array of exact origins, e.g. ["https://shop.example"]
    greeting text not null default '',
    created_at bigint not null,
    updated_at bigint not null
);

create table agents (
    id text primary key,
    email text not null,                    -- unique ignoring ASCII case, as SQLite's `collate nocase`
    name text not null,
    password_hash text not null,            -- argon2id PHC string
    created_at bigint not null,
    updated_at bigint not null
);
create unique index agents_email on agents (lower(email));

create table agent_sessions (
    token_hash bytea primary key,           -- sha256(session token)
    agent_id text not null references agents(id) on delete cascade,
    expires_at bigint not null,
    created_at bigint not null
);
create index agent_sessions_agent on agent_sessions(agent_id);

-- A person on the other side: today a web visitor; Messenger identities attach here later.
create table contacts (
    id text primary key,
    site_id text not null references sites(id) on delete cascade,
    web_token_hash bytea unique,            -- sha256(visitor token kept in the chat frame's storage)
    label text not null,                    -- "Visitor 3F2A"
    page_url text,
    referrer text,
    user_agent text,
    timezone text,
    utc_offset_minutes integer,
    language text,
    created_at bigint not null,
    updated_at bigint not null
);

create table conversations (
    id text primary key,
    site_id text not null references sites(id) on delete cascade,
    contact_id text not null unique references contacts(id) on delete cascade,
    status text not null default 'open' check (status in ('open', 'resolved')),
    last_seq bigint not null default 0,     -- highest event seq; events are numbered 1.. without gaps
    agent_read_seq bigint not null default 0,
    visitor_read_seq bigint not null default 0,
    last_message text,
    last_activity_at bigint not null,
    created_at bigint not null,
    updated_at bigint not null
);
create index conversations_activity on conversations(last_activity_at desc);

create table messages (
    id text primary key,
    conversation_id text not null references conversations(id) on delete cascade,
    seq bigint not null,
    client_id text not null,
    author_role text not null check (author_role in ('visitor', 'agent', 'system')),
    agent_id text references agents(id) on delete set null,
    author_name text,
    channel text not null default 'web',
    body text not null,
    created_at bigint not null,
    unique (conversation_id, client_id),
    unique (conversation_id, seq)
);

-- The sequenced log every client replays: one row per event, payload = protocol::Event as JSON.
create table events (
    conversation_id text not null references conversations(id) on delete cascade,
    seq bigint not null,
    payload text not null,
    created_at bigint not null,
    primary key (conversation_id, seq)
);
