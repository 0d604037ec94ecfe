//! Decoding the server's frames in the browser without serde's derived `Deserialize`: the
//! events every client replays and the agent console's frames ([`console::ServerMsg`], its summaries and agent).
//!
//! Why: the derive for internally tagged enums (`#[serde(tag = "type")]`, `#[serde(flatten)]`) buffers every
//! frame into serde's `Content` and instantiates a deserializer per variant, per field type, per error path and per
//! input type (string, bytes); in the widget's and the console's Wasm that was the largest single part of the
//! download. Here a frame is parsed once into a [`json::Value`](crate::json::Value) and read by hand: the same JSON, the same
//! result. The rules mirror the derive exactly: an unknown `type`, `kind`, `code` or delivery state becomes
//! `Unknown`; fields marked `#[serde(default)]` may be missing (and an `Option` may be `null`); a missing required
//! field or a value of the wrong JSON type rejects the whole frame; extra fields are ignored. One difference: serde
//! also reads a struct written as a JSON array of its fields, which no server writes; here that is refused. The
//! tests compare every result with serde's derive. The server keeps the derive (it never runs in a browser).

pub use crate::json::parse;
use crate::json::{Map, Value};

use crate::console::{self, AgentInfo, ConversationSummary, MessengerInfo, VisitorDetails};
use crate::{
    Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, ErrorCode, Event, EventKind, Party,
};

/// A JSON object.
pub type Obj = Map;

/// Parses one agent-console frame; `None` when it is not valid JSON or not a frame the console can read.
pub fn console_server_msg(text: &str) -> Option<console::ServerMsg> {
    let value = parse(text)?;
    console_msg(value.as_object()?)
}

fn console_msg(o: &Obj) -> Option<console::ServerMsg> {
    use console::ServerMsg as M;
    Some(match tag(o, "type")? {
        "inbox" => M::Inbox {
            agent: agent_info(o.get("agent")?)?,
            conversations: list(o, "conversations", conversation_summary)??,
        },
        "summary" => M::Summary { conversation: conversation_summary(o.get("conversation")?)? },
        "history" => M::History {
            conversation_id: string(o, "conversation_id")?,
            events: list(o, "events", event)??,
            last_seq: u64_req(o, "last_seq")?,
        },
        "event" => M::Event { conversation_id: string(o, "conversation_id")?, event: event(o.get("event")?)? },
        "typing" => M::Typing { conversation_id: string(o, "conversation_id")?, typing: o.get("typing")?.as_bool()? },
        "ack" => M::Ack {
            conversation_id: string(o, "conversation_id")?,
            client_id: string(o, "client_id")?,
            message_id: string(o, "message_id")?,
            seq: u64_req(o, "seq")?,
        },
        "error" => M::Error {
            code: error_code(o.get("code")?.as_str()?),
            message: string(o, "message")?,
            client_id: opt_string(o, "client_id")?,
        },
        "pong" => M::Pong,
        "alert" => M::Alert { key: string(o, "key")?, message: opt_string(o, "message")? },
        _ => M::Unknown,
    })
}

/// The signed-in agent.
pub fn agent_info(v: &Value) -> Option<AgentInfo> {
    let o = v.as_object()?;
    Some(AgentInfo { id: string(o, "id")?, name: string(o, "name")?, email: string(o, "email")? })
}

/// One conversation of the inbox.
pub fn conversation_summary(v: &Value) -> Option<ConversationSummary> {
    let o = v.as_object()?;
    Some(ConversationSummary {
        id: string(o, "id")?,
        site_key: string(o, "site_key")?,
        site_name: string(o, "site_name")?,
        visitor_name: string(o, "visitor_name")?,
        status: ConversationStatus::parse(o.get("status")?.as_str()?)?,
        last_message: opt_string(o, "last_message")?,
        last_activity_at: o.get("last_activity_at")?.as_i64()?,
        unread: u32::try_from(o.get("unread")?.as_u64()?).ok()?,
        last_seq: u64_req(o, "last_seq")?,
        visitor_read_seq: u64_or_zero(o, "visitor_read_seq")?,
        visitor: o.get("visitor").map_or(Some(VisitorDetails::default()), visitor_details)?,
        messenger: match o.get("messenger") {
            None | Some(Value::Null) => None,
            Some(v) => Some(messenger_info(v)?),
        },
    })
}

fn visitor_details(v: &Value) -> Option<VisitorDetails> {
    let o = v.as_object()?;
    Some(VisitorDetails {
        page_url: opt_string(o, "page_url")?,
        referrer: opt_string(o, "referrer")?,
        user_agent: opt_string(o, "user_agent")?,
        browser: opt_string(o, "browser")?,
        timezone: opt_string(o, "timezone")?,
        utc_offset_minutes: match o.get("utc_offset_minutes") {
            None | Some(Value::Null) => None,
            Some(v) => Some(i32::try_from(v.as_i64()?).ok()?),
        },
        language: opt_string(o, "language")?,
        avatar_url: opt_string(o, "avatar_url")?,
        online: bool_or_false(o, "online")?,
    })
}

fn messenger_info(v: &Value) -> Option<MessengerInfo> {
    let o = v.as_object()?;
    Some(MessengerInfo {
        name: opt_string(o, "name")?,
        response_until: opt_i64(o, "response_until")?,
        human_agent_until: opt_i64(o, "human_agent_until")?,
    })
}

/// One event of a conversation's log.
pub fn event(v: &Value) -> Option<Event> {
    let o = v.as_object()?;
    let kind = match tag(o, "kind")? {
        "message" => EventKind::Message { message: chat_message(o.get("message")?)? },
        "read" => EventKind::Read {
            by: match o.get("by")?.as_str()? {
                "visitor" => Party::Visitor,
                "agent" => Party::Agent,
                _ => return None,
            },
            up_to_seq: u64_req(o, "up_to_seq")?,
        },
        "status" => EventKind::Status {
            status: ConversationStatus::parse(o.get("status")?.as_str()?)?,
            by: opt_string(o, "by")?,
        },
        "delivery" => EventKind::Delivery {
            message_id: string(o, "message_id")?,
            channel: channel(o.get("channel")?)?,
            state: delivery_state(o.get("state")?.as_str()?),
            detail: opt_string(o, "detail")?,
        },
        "channel" => EventKind::Channel {
            channel: channel(o.get("channel")?)?,
            linked: o.get("linked")?.as_bool()?,
            name: opt_string(o, "name")?,
        },
        _ => EventKind::Unknown,
    };
    Some(Event { seq: u64_req(o, "seq")?, at: o.get("at")?.as_i64()?, kind })
}

fn chat_message(v: &Value) -> Option<ChatMessage> {
    let o = v.as_object()?;
    let author = o.get("author")?.as_object()?;
    Some(ChatMessage {
        id: string(o, "id")?,
        client_id: string(o, "client_id")?,
        author: match tag(author, "role")? {
            "visitor" => Author::Visitor,
            "agent" => Author::Agent { name: string(author, "name")? },
            "system" => Author::System,
            _ => return None,
        },
        body: string(o, "body")?,
        sent_at: o.get("sent_at")?.as_i64()?,
        channel: o.get("channel").map_or(Some(Channel::Web), channel)?,
        attachments: list(o, "attachments", attachment)?.unwrap_or_default(),
    })
}

fn attachment(v: &Value) -> Option<Attachment> {
    let o = v.as_object()?;
    Some(Attachment { url: string(o, "url")?, kind: string(o, "kind")?, name: opt_string(o, "name")? })
}

fn channel(v: &Value) -> Option<Channel> {
    match v.as_str()? {
        "web" => Some(Channel::Web),
        "messenger" => Some(Channel::Messenger),
        _ => None,
    }
}

fn delivery_state(s: &str) -> DeliveryState {
    match s {
        "pending" => DeliveryState::Pending,
        "sent" => DeliveryState::Sent,
        "delivered" => DeliveryState::Delivered,
        "read" => DeliveryState::Read,
        "failed" => DeliveryState::Failed,
        "not_sent" => DeliveryState::NotSent,
        _ => DeliveryState::Unknown,
    }
}

/// An error frame's code; one this peer does not know is `Unknown`.
pub fn error_code(s: &str) -> ErrorCode {
    match s {
        "bad_frame" => ErrorCode::BadFrame,
        "invalid_input" => ErrorCode::InvalidInput,
        "unauthorized" => ErrorCode::Unauthorized,
        "not_found" => ErrorCode::NotFound,
        "rate_limited" => ErrorCode::RateLimited,
        "internal" => ErrorCode::Internal,
        "identity_refused" => ErrorCode::IdentityRefused,
        "identity_required" => ErrorCode::IdentityRequired,
        _ => ErrorCode::Unknown,
    }
}

/// The string tag of an internally tagged enum (required).
pub fn tag<'a>(o: &'a Obj, key: &str) -> Option<&'a str> {
    o.get(key)?.as_str()
}

/// A required `String`.
pub fn string(o: &Obj, key: &str) -> Option<String> {
    o.get(key)?.as_str().map(str::to_owned)
}

/// A required `u64`.
pub fn u64_req(o: &Obj, key: &str) -> Option<u64> {
    o.get(key)?.as_u64()
}

/// An `Option<String>` with `#[serde(default)]`: missing or `null` is `None`, another type rejects the frame.
/// (The outer `Option` is the verdict, the inner one the value.)
pub fn opt_string(o: &Obj, key: &str) -> Option<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_str().map(|s| Some(s.to_owned())),
    }
}

/// An `Option<i64>` with `#[serde(default)]`, read as [`opt_string`] reads a string.
pub fn opt_i64(o: &Obj, key: &str) -> Option<Option<i64>> {
    match o.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_i64().map(Some),
    }
}

/// A `u64` with `#[serde(default)]`: missing is 0 (`null` is a wrong type, as for serde).
pub fn u64_or_zero(o: &Obj, key: &str) -> Option<u64> {
    o.get(key).map_or(Some(0), Value::as_u64)
}

/// A `String` with `#[serde(default)]`: missing is empty (`null` is a wrong type, as for serde).
pub fn string_or_empty(o: &Obj, key: &str) -> Option<String> {
    o.get(key).map_or(Some(String::new()), |v| v.as_str().map(str::to_owned))
}

/// A `bool` with `#[serde(default)]`: missing is false (`null` is a wrong type, as for serde).
pub fn bool_or_false(o: &Obj, key: &str) -> Option<bool> {
    o.get(key).map_or(Some(false), Value::as_bool)
}

/// A JSON array read item by item; `Some(None)` when the key is missing, `None` when anything is malformed.
pub fn list<T>(o: &Obj, key: &str, item: fn(&Value) -> Option<T>) -> Option<Option<Vec<T>>> {
    match o.get(key) {
        None => Some(None),
        Some(v) => v.as_array()?.iter().map(item).collect::<Option<Vec<T>>>().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use crate::console::{AgentInfo, ConversationSummary, MessengerInfo, ServerMsg, VisitorDetails};
    use crate::*;

    use super::console_server_msg;

    fn assert_same(text: &str) {
        assert_eq!(console_server_msg(text), serde_json::from_str::<ServerMsg>(text).ok(), "frame: {text}");
    }

    fn summary(n: u64) -> ConversationSummary {
        ConversationSummary {
            id: format!("c-{n}"),
            site_key: "demo".into(),
            site_name: "Demo".into(),
            visitor_name: "Visitor \"7\"".into(),
            status: if n % 2 == 0 { ConversationStatus::Open } else { ConversationStatus::Resolved },
            last_message: (n > 0).then(|| "hello <b>".into()),
            last_activity_at: -1_700_000_000_000 + n as i64,
            unread: u32::MAX - n as u32,
            last_seq: u64::MAX - n,
            visitor_read_seq: n,
            visitor: if n == 0 {
                VisitorDetails::default()
            } else {
                VisitorDetails {
                    page_url: Some("https://shop.example/cart".into()),
                    referrer: Some("https://search.example/".into()),
                    user_agent: Some("Mozilla/5.0".into()),
                    browser: Some("Firefox 140".into()),
                    timezone: Some("Europe/Paris".into()),
                    utc_offset_minutes: Some(i32::MIN),
                    language: Some("fr".into()),
                    avatar_url: Some("/avatars/1".into()),
                    online: true,
                }
            },
            messenger: (n > 0).then(|| MessengerInfo {
                name: Some("Ada".into()),
                response_until: Some(i64::MAX),
                human_agent_until: None,
            }),
        }
    }

    fn events() -> Vec<Event> {
        let message = |author: Author, channel: Channel, attachments: Vec<Attachment>| EventKind::Message {
            message: ChatMessage {
                id: "m-1".into(),
                client_id: "c-1".into(),
                author,
                body: "hi \u{1F600}".into(),
                sent_at: 5,
                channel,
                attachments,
            },
        };
        let kinds = vec![
            message(Author::Visitor, Channel::Web, Vec::new()),
            message(
                Author::Agent { name: "Alice".into() },
                Channel::Messenger,
                vec![Attachment { url: "/a/1".into(), kind: "image".into(), name: Some("a.png".into()) }],
            ),
            message(Author::System, Channel::Web, Vec::new()),
            EventKind::Read { by: Party::Agent, up_to_seq: 3 },
            EventKind::Status { status: ConversationStatus::Resolved, by: Some("Alice".into()) },
            EventKind::Delivery {
                message_id: "m-1".into(),
                channel: Channel::Messenger,
                state: DeliveryState::NotSent,
                detail: None,
            },
            EventKind::Channel { channel: Channel::Messenger, linked: true, name: None },
            EventKind::Unknown,
        ];
        kinds.into_iter().enumerate().map(|(i, kind)| Event { seq: i as u64 + 1, at: i as i64, kind }).collect()
    }

    /// Every console frame with every field set (struct literals: a field added to the protocol breaks this test
    /// until the decoder reads it too).
    fn every_frame() -> Vec<ServerMsg> {
        let agent = AgentInfo { id: "a-1".into(), name: "Alice".into(), email: "alice@example.com".into() };
        let mut frames = vec![
            ServerMsg::Inbox { agent: agent.clone(), conversations: vec![summary(0), summary(1), summary(2)] },
            ServerMsg::Inbox { agent, conversations: Vec::new() },
            ServerMsg::Summary { conversation: summary(3) },
            ServerMsg::History { conversation_id: "c-1".into(), events: events(), last_seq: 8 },
            ServerMsg::History { conversation_id: "c-1".into(), events: Vec::new(), last_seq: 0 },
            ServerMsg::Typing { conversation_id: "c-1".into(), typing: true },
            ServerMsg::Ack { conversation_id: "c-1".into(), client_id: "k".into(), message_id: "m".into(), seq: 4 },
            ServerMsg::Error { code: ErrorCode::RateLimited, message: "slow down".into(), client_id: Some("k".into()) },
            ServerMsg::Error { code: ErrorCode::Unknown, message: String::new(), client_id: None },
            ServerMsg::Pong,
            ServerMsg::Alert { key: "messenger_token".into(), message: Some("Renew the Page token".into()) },
            ServerMsg::Alert { key: "k".into(), message: None },
            ServerMsg::Unknown,
        ];
        frames.extend(events().into_iter().map(|event| ServerMsg::Event { conversation_id: "c-2".into(), event }));
        frames
    }

    #[test]
    fn every_console_frame_the_server_writes_decodes_to_the_same_value_as_with_serde() {
        for frame in every_frame() {
            let text = serde_json::to_string(&frame).expect("serializes");
            assert_eq!(console_server_msg(&text).as_ref(), Some(&frame), "frame: {text}");
            assert_same(&text);
        }
    }

    const SUMMARY: &str = r#""id":"c","site_key":"s","site_name":"S","visitor_name":"V","status":"open","last_activity_at":1,"unread":0,"last_seq":2"#;

    #[test]
    fn optional_console_fields_may_be_missing_or_null_and_unknown_fields_are_ignored() {
        for text in [
            format!(r#"{{"type":"summary","conversation":{{{SUMMARY}}}}}"#),
            format!(r#"{{"type":"summary","conversation":{{{SUMMARY},"last_message":null,"messenger":null,"x":1}}}}"#),
            format!(r#"{{"type":"summary","conversation":{{{SUMMARY},"visitor":{{}},"messenger":{{}}}}}}"#),
            format!(
                r#"{{"type":"summary","conversation":{{{SUMMARY},"visitor":{{"utc_offset_minutes":null,"page_url":null}}}}}}"#
            ),
            r#"{"type":"inbox","agent":{"id":"a","name":"n","email":"e","role":"admin"},"conversations":[]}"#.into(),
            r#"{"type":"error","code":"brand_new","message":"m"}"#.into(),
            r#"{"type":"alert","key":"k","message":null}"#.into(),
            r#"{"type":"future_frame","x":1}"#.into(),
        ] {
            assert!(console_server_msg(&text).is_some(), "should decode: {text}");
            assert_same(&text);
        }
    }

    #[test]
    fn malformed_console_frames_are_rejected_as_serde_rejects_them() {
        let bad_summaries = [
            r#""status":"archived""#,
            r#""unread":4294967296"#,
            r#""unread":-1"#,
            r#""last_seq":"2""#,
            r#""visitor":null"#,
            r#""visitor":{"online":null}"#,
            r#""visitor":{"utc_offset_minutes":2147483648}"#,
            r#""visitor":{"language":5}"#,
            r#""messenger":{"response_until":"soon"}"#,
            r#""last_message":7"#,
        ];
        let mut texts: Vec<String> = bad_summaries
            .iter()
            .map(|field| {
                // The bad field replaces its good twin: serde's derive refuses a duplicate field, a Value keeps
                // the last one.
                let key = field.split(':').next().unwrap_or_default();
                let base: Vec<&str> = SUMMARY.split(',').filter(|f| !f.starts_with(key)).collect();
                format!(r#"{{"type":"summary","conversation":{{{},{field}}}}}"#, base.join(","))
            })
            .collect();
        texts.extend(
            [
                "",
                "[]",
                r#"{"type":"summary"}"#,
                r#"{"type":"inbox","agent":{"id":"a","name":"n"},"conversations":[]}"#,
                r#"{"type":"inbox","agent":{"id":"a","name":"n","email":"e"}}"#,
                r#"{"type":"history","conversation_id":"c","events":[{"seq":1}],"last_seq":1}"#,
                r#"{"type":"event","conversation_id":"c"}"#,
                r#"{"type":"typing","conversation_id":"c","typing":1}"#,
                r#"{"type":"ack","conversation_id":"c","client_id":"k","message_id":"m","seq":-4}"#,
                r#"{"type":"error","code":1,"message":"m"}"#,
                r#"{"type":"alert","message":"m"}"#,
                r#"{"type":null}"#,
            ]
            .map(String::from),
        );
        for text in texts {
            assert_eq!(console_server_msg(&text), None, "should be rejected: {text}");
            assert_same(&text);
        }
    }
}
