//! Store tests, run against both engines: the schemas of the two migration folders agree, and (once the store is
//! one interface) the same conformance tests pass on SQLite and on PostgreSQL (a private test cluster, `testpg`).

// Cases written against the interface alone, each taking a fresh store; `conformance` runs them on both engines.
#[path = "../support/store_conformance.rs"]
mod cases;
mod conformance;
mod schema;
