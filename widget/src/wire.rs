//! Decoding the JSON the widget reads — the server's frames ([`ServerMsg`]), the boot config ([`BootConfig`]) and the
//! persisted outbox ([`OutboxItem`]) — without serde's derived `Deserialize`, by the rules and with the readers of
//! [`protocol::decode`] (which also decodes the events inside the frames, for the console too). The host tests
//! compare every result with serde's derive.
//!
//! Pure functions only (no DOM), so everything here is unit-tested on the host.

use protocol::decode::{
    Obj, bool_or_false, error_code, event, list, opt_string, parse, string, string_or_empty, tag, u64_or_zero, u64_req,
};
use protocol::json::Value;
use protocol::widget::ServerMsg;

use crate::boot::BootConfig;
use crate::state::OutboxItem;

/// The `#parley-boot` JSON; `None` when it is not an object with the required fields of the right types.
pub fn decode_boot_config(text: &str) -> Option<BootConfig> {
    let value = parse(text)?;
    let o = value.as_object()?;
    Some(BootConfig {
        site_key: string(o, "site_key")?,
        site_name: string(o, "site_name")?,
        greeting: o.get("greeting").map_or(Some(String::new()), |v| v.as_str().map(str::to_owned))?,
        allowed_origins: list(o, "allowed_origins", |v| v.as_str().map(str::to_owned))?.unwrap_or_default(),
        ws_url: string(o, "ws_url")?,
        messenger: bool_or_false(o, "messenger")?,
    })
}

/// A persisted outbox (a JSON array); `None` when anything in it is malformed.
pub fn decode_outbox_items(text: &str) -> Option<Vec<OutboxItem>> {
    let value = parse(text)?;
    let item = |v: &Value| {
        let o = v.as_object()?;
        Some(OutboxItem {
            client_id: string(o, "client_id")?,
            body: string(o, "body")?,
            created_at: o.get("created_at")?.as_i64()?,
        })
    };
    value.as_array()?.iter().map(item).collect()
}

/// Parses one text frame; `None` when it is not valid JSON or not a frame this peer can read.
pub fn decode_server_msg(text: &str) -> Option<ServerMsg> {
    let value = parse(text)?;
    server_msg(value.as_object()?)
}

fn server_msg(o: &Obj) -> Option<ServerMsg> {
    Some(match tag(o, "type")? {
        "welcome" => ServerMsg::Welcome {
            token: string(o, "token")?,
            events: list(o, "events", event)??,
            last_seq: u64_req(o, "last_seq")?,
            agent_read_seq: u64_or_zero(o, "agent_read_seq")?,
            reset: bool_or_false(o, "reset")?,
            sid: string_or_empty(o, "sid")?,
        },
        "event" => ServerMsg::Event { event: event(o.get("event")?)? },
        "ack" => ServerMsg::Ack {
            client_id: string(o, "client_id")?,
            message_id: string(o, "message_id")?,
            seq: u64_req(o, "seq")?,
        },
        "typing" => ServerMsg::Typing { typing: o.get("typing")?.as_bool()?, name: opt_string(o, "name")? },
        "error" => ServerMsg::Error {
            code: error_code(o.get("code")?.as_str()?),
            message: string(o, "message")?,
            client_id: opt_string(o, "client_id")?,
        },
        "pong" => ServerMsg::Pong,
        "messenger_link" => ServerMsg::MessengerLink {
            url: string(o, "url")?,
            code: string(o, "code")?,
            expires_at: o.get("expires_at")?.as_i64()?,
        },
        _ => ServerMsg::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use protocol::widget::ServerMsg;
    use protocol::*;

    use super::decode_server_msg;

    /// serde's derive, the reference the hand-written decoder must match.
    fn serde(text: &str) -> Option<ServerMsg> {
        serde_json::from_str(text).ok()
    }

    fn assert_same(text: &str) {
        assert_eq!(decode_server_msg(text), serde(text), "frame: {text}");
    }

    fn message(author: Author, channel: Channel, attachments: Vec<Attachment>) -> EventKind {
        EventKind::Message {
            message: ChatMessage {
                id: "m-1".into(),
                client_id: "c-1".into(),
                author,
                body: "hello <b>".into(),
                sent_at: 1_700_000_000_000,
                channel,
                attachments,
            },
        }
    }

    /// Every variant with every field set (struct literals: a field added to the protocol breaks this test until
    /// the decoder reads it too).
    fn every_frame() -> Vec<ServerMsg> {
        let kinds = vec![
            message(Author::Visitor, Channel::Web, Vec::new()),
            message(
                Author::Agent { name: "Alice".into() },
                Channel::Messenger,
                vec![
                    Attachment { url: "/attachments/1".into(), kind: "image".into(), name: Some("a.png".into()) },
                    Attachment { url: "/attachments/2".into(), kind: "file".into(), name: None },
                ],
            ),
            message(Author::System, Channel::Web, Vec::new()),
            EventKind::Read { by: Party::Visitor, up_to_seq: 7 },
            EventKind::Read { by: Party::Agent, up_to_seq: 0 },
            EventKind::Status { status: ConversationStatus::Resolved, by: Some("Alice".into()) },
            EventKind::Status { status: ConversationStatus::Open, by: None },
            EventKind::Channel { channel: Channel::Messenger, linked: true, name: Some("Ada".into()) },
            EventKind::Channel { channel: Channel::Web, linked: false, name: None },
            EventKind::Unknown,
        ];
        let states = [
            DeliveryState::Pending,
            DeliveryState::Sent,
            DeliveryState::Delivered,
            DeliveryState::Read,
            DeliveryState::Failed,
            DeliveryState::NotSent,
            DeliveryState::Unknown,
        ];
        let deliveries = states.iter().map(|&state| EventKind::Delivery {
            message_id: "m-1".into(),
            channel: Channel::Messenger,
            state,
            detail: Some("outside the window".into()),
        });
        let events: Vec<Event> = kinds
            .into_iter()
            .chain(deliveries)
            .enumerate()
            .map(|(i, kind)| Event { seq: i as u64 + 1, at: -5 + i as i64, kind })
            .collect();
        let codes = [
            ErrorCode::BadFrame,
            ErrorCode::InvalidInput,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
            ErrorCode::IdentityRefused,
            ErrorCode::IdentityRequired,
            ErrorCode::Unknown,
        ];
        let mut frames = vec![
            ServerMsg::Welcome {
                token: "t".into(),
                events: events.clone(),
                last_seq: u64::MAX,
                agent_read_seq: 3,
                reset: true,
                sid: "0123456789abcdef".into(),
            },
            ServerMsg::Welcome {
                token: String::new(),
                events: Vec::new(),
                last_seq: 0,
                agent_read_seq: 0,
                reset: false,
                sid: String::new(),
            },
            ServerMsg::Ack { client_id: "c-1".into(), message_id: "m-1".into(), seq: 9 },
            ServerMsg::Typing { typing: true, name: Some("Alice".into()) },
            ServerMsg::Typing { typing: false, name: None },
            ServerMsg::Pong,
            ServerMsg::MessengerLink {
                url: "https://m.me/x?ref=y".into(),
                code: "ABC123".into(),
                expires_at: i64::MIN,
            },
            ServerMsg::Unknown,
        ];
        frames.extend(events.into_iter().map(|event| ServerMsg::Event { event }));
        frames.extend(codes.iter().map(|&code| ServerMsg::Error {
            code,
            message: "nope \"quoted\" \u{1F600}".into(),
            client_id: Some("c-2".into()),
        }));
        frames.push(ServerMsg::Error { code: ErrorCode::Internal, message: String::new(), client_id: None });
        frames
    }

    #[test]
    fn every_frame_the_server_writes_decodes_to_the_same_value_as_with_serde() {
        for frame in every_frame() {
            let text = serde_json::to_string(&frame).expect("serializes");
            assert_eq!(decode_server_msg(&text).as_ref(), Some(&frame), "frame: {text}");
            assert_same(&text);
        }
    }

    #[test]
    fn optional_fields_may_be_missing_or_null_and_unknown_fields_are_ignored() {
        for text in [
            r#"{"type":"welcome","token":"t","events":[],"last_seq":4}"#,
            r#"{"type":"typing","typing":true}"#,
            r#"{"type":"typing","typing":true,"name":null,"extra":[1,2]}"#,
            r#"{"type":"error","code":"internal","message":"m"}"#,
            r#"{"type":"error","code":"brand_new","message":"m","client_id":null}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"message","message":{"id":"i","client_id":"c","author":{"role":"visitor"},"body":"b","sent_at":3}}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"status","status":"open"}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"delivery","message_id":"m","channel":"web","state":"teleported"}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"channel","channel":"messenger","linked":true}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"future_kind","anything":{}}}"#,
            r#"{"type":"future_frame","x":1}"#,
            r#"{"type":"pong","seq":"ignored"}"#,
        ] {
            assert!(decode_server_msg(text).is_some(), "should decode: {text}");
            assert_same(text);
        }
    }

    #[test]
    fn an_outbox_is_read_whole_or_not_at_all() {
        let items = super::decode_outbox_items(r#"[{"client_id":"c1","body":"hi","created_at":5,"x":0}]"#);
        assert_eq!(items.map(|v| v.len()), Some(1));
        for text in [
            "",
            "{}",
            r#"[{"client_id":"c1","body":"hi"}]"#,
            r#"[{"client_id":"c1","body":"hi","created_at":"5"}]"#,
            "[1]",
        ] {
            assert!(super::decode_outbox_items(text).is_none(), "{text}");
        }
    }

    #[test]
    fn a_boot_config_with_a_field_of_the_wrong_type_is_refused() {
        let base = r#""site_key":"k","site_name":"S","ws_url":"/ws""#;
        assert!(super::decode_boot_config(&format!("{{{base},\"messenger\":true}}")).is_some_and(|c| c.messenger));
        for extra in
            [r#""messenger":"yes""#, r#""greeting":null"#, r#""allowed_origins":"x""#, r#""allowed_origins":[1]"#]
        {
            assert!(super::decode_boot_config(&format!("{{{base},{extra}}}")).is_none(), "{extra}");
        }
    }

    #[test]
    fn malformed_frames_are_rejected_as_serde_rejects_them() {
        for text in [
            "",
            "not json",
            "[]",
            "null",
            r#"{"token":"t"}"#,
            r#"{"type":7}"#,
            r#"{"type":"welcome","events":[],"last_seq":4}"#,
            r#"{"type":"welcome","token":"t","last_seq":4}"#,
            r#"{"type":"welcome","token":"t","events":[],"last_seq":-1}"#,
            r#"{"type":"welcome","token":"t","events":[],"last_seq":1.5}"#,
            r#"{"type":"welcome","token":"t","events":[],"last_seq":"1"}"#,
            r#"{"type":"welcome","token":"t","events":[],"last_seq":1,"agent_read_seq":null}"#,
            r#"{"type":"welcome","token":"t","events":[],"last_seq":1,"reset":1}"#,
            r#"{"type":"welcome","token":"t","events":{},"last_seq":1}"#,
            r#"{"type":"welcome","token":"t","events":[{"seq":1,"at":2}],"last_seq":1}"#,
            r#"{"type":"ack","client_id":"c","seq":1}"#,
            r#"{"type":"typing"}"#,
            r#"{"type":"typing","typing":"yes"}"#,
            r#"{"type":"typing","typing":true,"name":5}"#,
            r#"{"type":"error","code":3,"message":"m"}"#,
            r#"{"type":"messenger_link","url":"u","code":"c","expires_at":1e3}"#,
            r#"{"type":"event"}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"read","by":"robot","up_to_seq":1}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"status","status":"archived"}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"delivery","message_id":"m","channel":"fax","state":"sent"}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"message","message":{"id":"i","client_id":"c","author":{"role":"alien"},"body":"b","sent_at":3}}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"message","message":{"id":"i","client_id":"c","author":{"role":"agent"},"body":"b","sent_at":3}}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"message","message":{"id":"i","client_id":"c","author":{"role":"visitor"},"body":"b","sent_at":3,"channel":null}}}"#,
            r#"{"type":"event","event":{"seq":1,"at":2,"kind":"message","message":{"id":"i","client_id":"c","author":{"role":"visitor"},"body":"b","sent_at":3,"attachments":[{"url":"u"}]}}}"#,
            r#"{"type":"event","event":{"seq":"1","at":2,"kind":"read","by":"agent","up_to_seq":1}}"#,
            r#"{"type":"event","event":{"at":2,"kind":"read","by":"agent","up_to_seq":1}}"#,
        ] {
            assert_eq!(decode_server_msg(text), None, "should be rejected: {text}");
            assert_same(text);
        }
    }
}
