//! Frames between the chat frame (the Leptos/Wasm widget) and the server, on `GET /ws/visitor`.
//!
//! Flow: the chat frame first calls `POST /api/visitor/session` (which sets the visitor cookie the upgrade then
//! carries), opens the socket and sends [`ClientMsg::Hello`] (with its stored token, if any, and the last `seq` it
//! applied). The server answers [`ServerMsg::Welcome`] with the token to keep (none when the cookie holds the
//! session), the token's fingerprint (`sid`) and every event after `last_seq`, then streams live [`ServerMsg::Event`]s. Each [`ClientMsg::Send`] is answered by exactly one
//! [`ServerMsg::Ack`] (or an `Error` naming the same `client_id`) only after the message is committed to disk;
//! re-sending the same `client_id` is safe and returns the original ack.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Event};

/// Frames the widget sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First frame on every connection.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the client.
        #[serde(default)]
        protocol: u32,
        /// The visitor token from a previous `Welcome`, a fallback for the visitor cookie (which wins when the
        /// upgrade carries it); `None` and no cookie start a new visitor.
        #[serde(default)]
        token: Option<String>,
        /// Highest event `seq` the client has applied (0 for none).
        #[serde(default)]
        last_seq: u64,
        /// Where the visitor is; shown to agents.
        #[serde(default)]
        context: VisitorContext,
        /// The host page's signed statement of who its logged-in customer is (`Parley('identify', …)`).
        #[serde(default)]
        identity: Option<Identity>,
    },
    /// Post a message.
    Send { client_id: String, body: String },
    /// The visitor started or stopped typing.
    Typing { typing: bool },
    /// The visitor has seen everything up to `up_to_seq`.
    Read { up_to_seq: u64 },
    /// Keep-alive; answered by `Pong`.
    Ping,
    /// Ask for a fresh "Continue on Messenger" link (answered by `MessengerLink`).
    MessengerLink,
    /// Undo the Messenger link ("not me").
    UnlinkMessenger,
}

/// What the host page told the widget about the visitor's whereabouts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorContext {
    /// URL of the host page the visitor is on.
    #[serde(default)]
    pub page_url: Option<String>,
    /// `document.referrer` of the host page.
    #[serde(default)]
    pub referrer: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Minutes to add to UTC to get the visitor's local time (the negation of JS `getTimezoneOffset()`).
    #[serde(default)]
    pub utc_offset_minutes: Option<i32>,
    /// `navigator.language`.
    #[serde(default)]
    pub language: Option<String>,
}

/// A logged-in customer, as the host page states it: `hash` is the lowercase hex HMAC-SHA256 of `id` under the
/// site's identity secret, computed by the customer's backend. Only `id` is signed; `name` and `email` are what the
/// host page says about that id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub hash: String,
}

/// Frames the server sends to the widget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Welcome {
        /// Token to store (in the frame's own storage) and present in the next `Hello`; empty when the session
        /// lives in the visitor cookie, which no script may read.
        token: String,
        /// Events after the client's `last_seq`, in order.
        events: Vec<Event>,
        /// Highest `seq` of the conversation (0 when none exists yet).
        last_seq: u64,
        /// How far the agent side has read (for "read" ticks).
        #[serde(default)]
        agent_read_seq: u64,
        /// Whether `events` starts at seq 1 although the client asked for more: the client must drop what it
        /// holds and rebuild from `events` (its token did not match its stored history).
        #[serde(default)]
        reset: bool,
        /// The fingerprint of the visitor token this socket speaks for (16 hex digits of a domain-separated
        /// SHA-256; never the token, which cannot be derived from it). `POST /api/visitor/session` reports the same
        /// fingerprint for the cookie the browser holds, so the frame sees when its socket speaks for another token
        /// than the one in the cookie jar. Empty from servers that predate it.
        #[serde(default)]
        sid: String,
    },
    /// A new conversation event, live.
    Event {
        event: Event,
    },
    /// A message from this client was committed.
    Ack {
        client_id: String,
        message_id: String,
        seq: u64,
    },
    /// An agent started or stopped typing.
    Typing {
        typing: bool,
        #[serde(default)]
        name: Option<String>,
    },
    /// A request failed; `client_id` names the `Send` it answers, if any.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    Pong,
    /// A signed, single-use link that continues this conversation on Messenger, and a short code to send there
    /// instead if the link does not carry over.
    MessengerLink {
        url: String,
        code: String,
        /// Epoch ms after which the link and the code stop working.
        expires_at: i64,
    },
    /// A frame this client does not know yet.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_without_identity_still_parses_and_one_with_it_round_trips() {
        let old: ClientMsg = serde_json::from_str(r#"{"type":"hello","protocol":1,"last_seq":3}"#).expect("old hello");
        assert!(matches!(old, ClientMsg::Hello { identity: None, last_seq: 3, .. }));
        let with = ClientMsg::Hello {
            protocol: crate::PROTOCOL_VERSION,
            token: None,
            last_seq: 0,
            context: VisitorContext::default(),
            identity: Some(Identity { id: "u-1".into(), name: None, email: None, hash: "ab".into() }),
        };
        let json = serde_json::to_string(&with).expect("serializes");
        assert_eq!(serde_json::from_str::<ClientMsg>(&json).expect("parses"), with);
        let partial: Identity = serde_json::from_str(r#"{"id":"u-1","hash":"ab"}"#).expect("name and email optional");
        assert_eq!(partial.name, None);
    }

    #[test]
    fn a_welcome_without_sid_still_parses() {
        let old: ServerMsg =
            serde_json::from_str(r#"{"type":"welcome","token":"","events":[],"last_seq":0}"#).expect("old welcome");
        assert!(matches!(old, ServerMsg::Welcome { sid, .. } if sid.is_empty()));
    }

    #[test]
    fn the_identity_error_codes_are_snake_case() {
        let code = serde_json::to_string(&crate::ErrorCode::IdentityRefused).expect("serializes");
        assert_eq!(code, r#""identity_refused""#);
        let code = serde_json::to_string(&crate::ErrorCode::IdentityRequired).expect("serializes");
        assert_eq!(code, r#""identity_required""#);
    }
}
