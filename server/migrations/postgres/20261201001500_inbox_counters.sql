-- The inbox's unread count is kept in a column (twin of ../sqlite/20261201001500_inbox_counters.sql), maintained in
-- each message's and each agent read's transaction, instead of being recounted from messages for every inbox row.
alter table conversations add column unread_count bigint not null default 0;
update conversations set unread_count = (
    select count(*) from messages m
    where m.conversation_id = conversations.id and m.author_role = 'visitor' and m.seq > conversations.agent_read_seq
);
