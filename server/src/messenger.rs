//! The Messenger channel: webhook intake, linking web sessions to Messenger users, and sending through the Graph
//! API via a persistent outbox. Meta's payloads stay in `graph_types`; the rest of the server sees only
//! conversations and messages.

pub mod channel;
pub mod fetch;
pub mod graph_types;
pub mod intake;
pub mod landing;
pub mod link;
pub mod media;
pub mod outbox;
pub mod pages;
pub mod policy;
pub mod reorder;
pub mod send_api;
pub mod signature;
pub mod spool;
pub mod webhook;

pub use channel::Messenger;
