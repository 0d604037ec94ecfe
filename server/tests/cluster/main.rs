//! Several `parley` nodes as real processes on one PostgreSQL database, behind a real nginx running the repo's
//! `deploy/nginx/parley.conf` (the harness: `server/tests/support/cluster.rs`): a visitor on one node and an agent
//! on another chat live; a SIGKILLed node's visitors resume through nginx on the others with nothing lost or
//! doubled; PostgreSQL restarts under running nodes and every node recovers by itself; two nodes' outbox workers
//! send every queued Messenger reply exactly once, counted at the sandbox, even when one of them is killed; and
//! two nodes posting into one conversation at once number it without gaps or repeats.
//!
//! PostgreSQL, nginx: Debian's packages, installed by `cargo xtask test`; without them these tests fail, never skip.

#[allow(dead_code)]
#[path = "../faults/client.rs"]
mod client;
#[path = "../support/db_check.rs"]
mod db_check;
#[path = "../support/cluster.rs"]
mod harness;
mod live;
#[path = "../support/nginx.rs"]
mod nginx;
mod outbox;
mod postgres_restart;
#[path = "../support/process.rs"]
mod process;
mod sequence;
mod sigkill;
mod ws;
