//! Messenger webhook payloads as Meta sends them (Facebook's contract, not ours): only the fields Parley uses,
//! all optional where Meta may leave them out. IDs are opaque strings; `app_id` may come as a number.

use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub messaging: Vec<Messaging>,
    /// Events for threads another app owns; same shape.
    #[serde(default)]
    pub standby: Vec<Messaging>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Party {
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Messaging {
    pub sender: Option<Party>,
    pub recipient: Option<Party>,
    #[serde(default)]
    pub timestamp: i64,
    pub message: Option<Message>,
    pub postback: Option<Postback>,
    pub referral: Option<Referral>,
    pub delivery: Option<Delivery>,
    pub read: Option<Read>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    pub mid: Option<String>,
    pub text: Option<String>,
    #[serde(default)]
    pub is_echo: bool,
    #[serde(default, deserialize_with = "string_or_number")]
    pub app_id: Option<String>,
    pub metadata: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Set when the customer tapped a quick reply.
    pub quick_reply: Option<QuickReply>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct QuickReply {
    pub payload: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Attachment {
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Option<AttachmentPayload>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AttachmentPayload {
    pub url: Option<String>,
    pub sticker_id: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Postback {
    pub mid: Option<String>,
    pub title: Option<String>,
    pub payload: Option<String>,
    pub referral: Option<Referral>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Referral {
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub source: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Delivery {
    #[serde(default)]
    pub mids: Vec<String>,
    #[serde(default)]
    pub watermark: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Read {
    #[serde(default)]
    pub watermark: i64,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_batched_entries_with_echoes_and_standby() {
        let body = r#"{"object":"page","entry":[
            {"id":"P","time":1,"messaging":[
                {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":5,"message":{"mid":"m_1","text":"h\u00e9llo \/ there"}},
                {"sender":{"id":"P"},"recipient":{"id":"U"},"timestamp":6,"message":{"mid":"m_2","is_echo":true,"app_id":263902037430900,"text":"hi"}}]},
            {"id":"P","time":2,"standby":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":7,"read":{"watermark":6}}]}]}"#;
        let env: Envelope = serde_json::from_str(body).expect("parses");
        assert_eq!(env.entry.len(), 2);
        let first = &env.entry[0].messaging[0];
        assert_eq!(first.message.as_ref().and_then(|m| m.text.as_deref()), Some("héllo / there"));
        let echo = env.entry[0].messaging[1].message.as_ref().expect("echo");
        assert!(echo.is_echo);
        assert_eq!(echo.app_id.as_deref(), Some("263902037430900"));
        assert_eq!(env.entry[1].standby[0].read.as_ref().map(|r| r.watermark), Some(6));
    }
}
