//! Store tests, run against both engines: the schemas of the two migration folders agree, and (once the store is
//! one interface) the same conformance tests pass on SQLite and on PostgreSQL (a private test cluster, `testpg`).

mod conformance;
mod schema;
