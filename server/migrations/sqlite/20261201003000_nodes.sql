-- Twin of ../postgres/20261201003000_nodes.sql, deliberately empty: the `nodes` and `node_presence` tables hold the
-- leases and presence of several nodes sharing one PostgreSQL database. A SQLite database serves one node, whose
-- presence lives in its memory, so there is nothing to create here (the version keeps the two folders in step).
select 1;
