-- Tenancy: a workspace owns its sites, agents and Messenger Pages. An existing database gets one workspace, the
-- default one (id and key `default`), holding everything that exists; new sites and agents land in it unless told
-- otherwise. Agents see only their workspace's conversations.
create table workspaces (
    id text primary key,
    key text not null unique,               -- the name the CLI takes (`--workspace KEY`)
    name text not null,
    created_at integer not null,
    updated_at integer not null
);
insert into workspaces (id, key, name, created_at, updated_at)
values ('default', 'default', 'Default', cast(strftime('%s', 'now') as integer) * 1000,
        cast(strftime('%s', 'now') as integer) * 1000);

-- SQLite cannot add a column with a foreign key and a non-null default: the rule is kept by the store (and by the
-- PostgreSQL twin's constraint).
alter table sites add column workspace_id text not null default 'default';
create index sites_workspace on sites(workspace_id);
alter table agents add column workspace_id text not null default 'default';
create index agents_workspace on agents(workspace_id);

-- Files downloaded from Messenger belong to the workspace whose Page received them.
alter table attachments add column workspace_id text;

-- Messenger Pages. A Page connected to a site (`site_id`) serves that site; one Page per workspace may serve every
-- other site of the workspace (`site_id` null: what a single-Page installation's configured Page becomes). The Page
-- token is stored only encrypted (ChaCha20-Poly1305 under `messenger.token_key`, a random nonce per token, the
-- page id as associated data).
create table messenger_pages (
    page_id text primary key,
    workspace_id text not null references workspaces(id) on delete cascade,
    site_id text references sites(id) on delete cascade,
    username text,                          -- m.me/<username> in "Continue on Messenger" links (else the page id)
    token_nonce blob not null,
    token_ciphertext blob not null,
    created_at integer not null,
    updated_at integer not null
);
create unique index messenger_pages_site on messenger_pages(site_id) where site_id is not null;
create unique index messenger_pages_workspace on messenger_pages(workspace_id) where site_id is null;
