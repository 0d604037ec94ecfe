-- Tenancy (twin of ../sqlite/20261201002000_workspaces.sql): a workspace owns its sites, agents and Messenger
-- Pages. An existing database gets one workspace, the default one (id and key `default`), holding everything that
-- exists; new sites and agents land in it unless told otherwise. Agents see only their workspace's conversations.
create table workspaces (
    id text primary key,
    key text not null unique,
    name text not null,
    created_at bigint not null,
    updated_at bigint not null
);
insert into workspaces (id, key, name, created_at, updated_at)
values ('default', 'default', 'Default', (extract(epoch from now()) * 1000)::bigint,
        (extract(epoch from now()) * 1000)::bigint);

alter table sites add column workspace_id text not null default 'default' references workspaces(id);
create index sites_workspace on sites(workspace_id);
alter table agents add column workspace_id text not null default 'default' references workspaces(id);
create index agents_workspace on agents(workspace_id);

-- Files downloaded from Messenger belong to the workspace whose Page received them.
alter table attachments add column workspace_id text references workspaces(id) on delete cascade;

-- Messenger Pages; the token is stored only encrypted (see the SQLite twin).
create table messenger_pages (
    page_id text primary key,
    workspace_id text not null references workspaces(id) on delete cascade,
    site_id text references sites(id) on delete cascade,
    username text,
    token_nonce bytea not null,
    token_ciphertext bytea not null,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index messenger_pages_site on messenger_pages(site_id) where site_id is not null;
create unique index messenger_pages_workspace on messenger_pages(workspace_id) where site_id is null;
