//! Fuzz target bodies, shared by the short stable run under `cargo test` (`server/tests/fuzz.rs`, proptest) and
//! the long coverage-guided runs (`fuzz/`, cargo-fuzz on nightly). Each takes raw bytes, must never panic on any
//! input, and checks what must hold for every input it accepts.

use std::fmt::Debug;

use parley::messenger::graph_types::Envelope;
use parley::messenger::{link, signature};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The key the link-token targets sign with.
pub const LINK_KEY: &[u8] = b"fuzz link key";
/// The app secret the webhook targets sign with.
pub const APP_SECRET: &[u8] = b"fuzz app secret";

/// A frame that decodes must encode, and decode back to the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame: &T) {
    let text = serde_json::to_string(frame).expect("a decoded frame encodes");
    let again: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} does not decode again: {e}"));
    assert_eq!(&again, frame, "{text} changed in a round trip");
}

/// The browsers' JSON reader (`protocol::json`, under the widget's and the console's decoders): it reads every
/// text serde_json reads, and neither it nor the console's frame decoder panics on any input.
fn browser_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ours = protocol::json::parse(text);
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        assert!(ours.is_some(), "serde_json reads {text:?}, protocol::json does not");
    }
    let _ = protocol::decode::console_server_msg(text);
}

/// The visitor socket's decoders: what the server reads from the widget, and what the widget reads from the
/// server. A `send` that decodes goes through the server's validation.
pub fn visitor_frame(data: &[u8]) {
    browser_json(data);
    if let Ok(frame) = serde_json::from_slice::<protocol::widget::ClientMsg>(data) {
        round_trip(&frame);
        if let protocol::widget::ClientMsg::Send { client_id, body } = &frame {
            let _ = protocol::validate_client_id(client_id);
            let _ = protocol::validate_body(body);
        }
    }
    if let Ok(frame) = serde_json::from_slice::<protocol::widget::ServerMsg>(data) {
        round_trip(&frame);
    }
}

/// The agent socket's decoders, both directions.
pub fn agent_frame(data: &[u8]) {
    browser_json(data);
    if let Ok(frame) = serde_json::from_slice::<protocol::console::ClientMsg>(data) {
        round_trip(&frame);
        if let protocol::console::ClientMsg::Send { client_id, body, .. } = &frame {
            let _ = protocol::validate_client_id(client_id);
            let _ = protocol::validate_body(body);
        }
    }
    if let Ok(frame) = serde_json::from_slice::<protocol::console::ServerMsg>(data) {
        round_trip(&frame);
    }
}

/// A webhook delivery as the endpoint sees it: the signature over these exact bytes verifies and no other key's
/// does; the bytes taken as a signature header never verify nor panic; then the payload parser.
pub fn webhook_body(data: &[u8]) {
    let header = signature::sign_sha256(APP_SECRET, data);
    assert_eq!(signature::verify(APP_SECRET, data, Some(&header), None), Ok(()));
    assert!(signature::verify(b"another secret", data, Some(&header), None).is_err());
    let as_header = String::from_utf8_lossy(data);
    assert!(signature::verify(APP_SECRET, data, Some(&as_header), None).is_err(), "a body is not its own signature");
    assert!(signature::verify(APP_SECRET, data, None, Some(&as_header)).is_err());
    let _ = serde_json::from_slice::<Envelope>(data);
}

/// A `ref` or a message text from Messenger: no input verifies as a link token without the key (the MAC is 96
/// bits; a fuzzer finding one has found a bug), and short-code candidates are well formed.
pub fn link_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for now in [0, u32::MAX] {
        if let Ok(token) = link::verify(LINK_KEY, &text, now) {
            panic!("{text:?} verified as a link token without being minted: {token:?}");
        }
    }
    let candidates = link::short_code_candidates(&text);
    assert!(candidates.len() <= 5);
    for code in candidates {
        assert_eq!(code.len(), 6, "{code}");
        assert!(code.bytes().all(|b| b"23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(&b)), "{code}");
    }
}
