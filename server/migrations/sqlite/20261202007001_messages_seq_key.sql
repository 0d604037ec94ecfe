-- `messages` loses its unique index on (conversation_id, seq). The event log already has that key (every message is
-- the `message` event of the same seq), so the index only duplicated it, and it cost every message a leaf at its
-- conversation's place in one more b-tree (about 30 % of the WAL a message writes under group commit). Reads by seq
-- now use the event log (the read cursors, the unread count) or the conversation's own rows (its recent messages).
-- The rest of the table is unchanged: ids stay unique, and (conversation_id, client_id) still dedupes resends.
--
-- SQLite drops a constraint only by rebuilding the table. Migrations run in a transaction, where foreign keys cannot
-- be turned off, so dropping the old table deletes its rows first, and with them (`on delete cascade`) the outbox
-- rows of those messages: the outbox is kept aside and put back as it was, same ids.
create table messages_rebuilt (
    id text primary key,
    conversation_id text not null references conversations(id) on delete cascade,
    seq integer not null,
    client_id text not null,
    author_role text not null check (author_role in ('visitor', 'agent', 'system')),
    agent_id text references agents(id) on delete set null,
    author_name text,
    channel text not null default 'web',
    body text not null,
    created_at integer not null,
    external_id text,
    unique (conversation_id, client_id)
);
insert into messages_rebuilt (id, conversation_id, seq, client_id, author_role, agent_id, author_name, channel, body,
        created_at, external_id)
    select id, conversation_id, seq, client_id, author_role, agent_id, author_name, channel, body, created_at,
        external_id
    from messages order by rowid;
create temp table outbox_kept as select * from outbox;
drop table messages;
alter table messages_rebuilt rename to messages;
create unique index messages_external_id on messages(external_id) where external_id is not null;
delete from outbox;
insert into outbox select * from temp.outbox_kept;
drop table temp.outbox_kept;
