//! Parley's wire types: the JSON frames that the widget, the agent console and the server exchange over
//! WebSockets, and the small value types inside them.
//!
//! Compatibility promise: widgets stay cached on customers' pages, so a frame an older peer understands must keep
//! parsing. New fields get `#[serde(default)]`; every `ServerMsg` has an `Unknown` catch-all variant; renaming or
//! removing a field or a `type` tag is a breaking change and needs a new [`PROTOCOL_VERSION`].
//! This crate depends on serde and serde_json only, so it builds for `wasm32-unknown-unknown` without pulling anything
//! heavy in; [`decode`] reads the server's frames in the browsers without serde's derive, through the small JSON
//! reader in [`json`].

pub mod console;
pub mod decode;
pub mod event;
pub mod json;
pub mod widget;

pub use event::{Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, EventKind, Party};

/// Version of the WebSocket protocol; sent by clients in their first frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest message body accepted, in Unicode scalar values.
pub const MAX_BODY_CHARS: usize = 5000;

/// Longest client id accepted (client ids are opaque strings chosen by the sender, usually a UUID).
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Stable, machine-readable error codes used in WebSocket `error` frames and HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON or not a known message.
    BadFrame,
    /// A field failed validation (empty or too long body, bad client id, ...).
    InvalidInput,
    /// The session token is unknown or expired; the client should start a new session.
    Unauthorized,
    /// The referenced conversation does not exist (or is not visible to this peer).
    NotFound,
    /// The client sends too fast.
    RateLimited,
    /// Something failed on the server; the client may retry the same frame later.
    Internal,
    /// The `hello`'s identity did not verify (wrong hash, or the site has no identity secret): it was ignored.
    IdentityRefused,
    /// The site accepts messages only from customers the host page identified (`Parley('identify', …)`).
    IdentityRequired,
    /// An error code this peer does not know yet.
    #[serde(other)]
    Unknown,
}

/// Checks a message body the way the server does: not blank, at most [`MAX_BODY_CHARS`].
pub fn validate_body(body: &str) -> Result<(), &'static str> {
    if body.trim().is_empty() {
        return Err("message is empty");
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err("message is too long");
    }
    Ok(())
}

/// Checks a client id: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn validate_client_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
        return Err("client id must be 1 to 64 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err("client id may hold only letters, digits, '-' and '_'");
    }
    Ok(())
}
