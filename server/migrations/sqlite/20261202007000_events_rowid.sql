-- The event log becomes an ordinary (rowid) table with its key (conversation_id, seq) as a unique index, instead of
-- a `without rowid` table clustered on that key. Clustered, every event's whole payload (the message again, as
-- JSON) went into the middle of the b-tree, at its conversation's place: under load each group commit dirtied a
-- leaf per conversation and split them often, about one WAL page per message for this table alone. Now payloads
-- append at the table's end (pages shared by every conversation) and only the small key entries go to each
-- conversation's place. Replays read the same key, through the index. Same columns, same unique rule.
create table events_by_rowid (
    conversation_id text not null references conversations(id) on delete cascade,
    seq integer not null,
    payload text not null,
    created_at integer not null,
    unique (conversation_id, seq)
);
insert into events_by_rowid (conversation_id, seq, payload, created_at)
    select conversation_id, seq, payload, created_at from events order by conversation_id, seq;
-- No table references `events`, so dropping it deletes nothing elsewhere.
drop table events;
alter table events_by_rowid rename to events;
