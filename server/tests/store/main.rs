//! Store tests, run against both engines: the schemas of the two migration folders agree, and (once the store is
//! one interface) the same conformance tests pass on SQLite and on PostgreSQL (a private test cluster, `testpg`); the
//! bus between nodes (`bus`) exists on PostgreSQL only.

// Cases written against the interface alone, each taking a fresh store; `conformance` runs them on both engines.
mod bus;
#[path = "../support/store_conformance.rs"]
mod cases;
mod conformance;
mod schema;
