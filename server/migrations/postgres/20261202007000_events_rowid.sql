-- Twin of ../sqlite/20261202007000_events_rowid.sql, deliberately empty: there the event log stops being clustered
-- on (conversation_id, seq) (a `without rowid` table) and keeps that key as a unique index. A PostgreSQL table is
-- never clustered: its rows are already a heap beside the primary key's index, which is the shape SQLite now has.
select 1;
