-- Twin of ../sqlite/20261202007001_messages_seq_key.sql: `messages` loses its unique rule on (conversation_id, seq),
-- which only duplicated the event log's key (every message is the `message` event of the same seq). Reads by seq use
-- the event log (the read cursors, the unread count) or the conversation's own rows (its recent messages).
alter table messages drop constraint messages_conversation_id_seq_key;
