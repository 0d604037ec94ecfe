-- Nodes sharing this database, and which contacts have a visitor socket on each (PostgreSQL only: a SQLite
-- database serves one node, whose presence lives in its memory). A node renews `alive_until` with its heartbeat;
-- presence rows of a node whose lease ran out count for nothing and are reaped by the first node to notice.
create table nodes (
    id text primary key,
    alive_until bigint not null,
    started_at bigint not null
);

create table node_presence (
    contact_id text not null,
    node_id text not null,
    primary key (contact_id, node_id)
);
create index node_presence_node on node_presence (node_id);
