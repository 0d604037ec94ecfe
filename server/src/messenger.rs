//! The Messenger channel: webhook intake, linking web sessions to Messenger users, and sending through the Graph
//! API via a persistent outbox. Meta's payloads stay in `graph_types`; the rest of the server sees only
//! conversations and messages.

pub mod graph_types;
pub mod link;
pub mod send_api;
pub mod signature;
