//! Faults survived, with the server as a real process (`parley serve` on a temporary SQLite database): SIGKILL
//! mid-stream, a locked database, a full disk, and a fault proxy (latency, cuts, resets, blackholes) between the
//! clients and the server. Every test ends with the same promises checked: nothing acked is lost, nothing sent is
//! lost or doubled, every log is gap-free, and SQLite's integrity check passes.

mod client;
mod database;
#[path = "../support/db_check.rs"]
mod db_check;
mod harness;
#[path = "../support/parley_cli.rs"]
mod parley_cli;
#[path = "../support/process.rs"]
mod process;
mod proxy;
mod sigkill;
