//! Conversation events: the durable, sequenced log that both the widget and the console replay.
//!
//! Every event of a conversation has a per-conversation sequence number (`seq`, starting at 1, no gaps). A client
//! remembers the highest `seq` it has applied and asks for everything after it when it reconnects, so nothing is
//! lost and nothing is applied twice. Ephemeral signals (typing) are not events and carry no `seq`.

use serde::{Deserialize, Serialize};

/// One entry of a conversation's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Per-conversation sequence number, 1-based and gap-free.
    pub seq: u64,
    /// When the server committed it, in epoch milliseconds.
    pub at: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A message was posted.
    Message { message: ChatMessage },
    /// `by` has read every message up to and including `up_to_seq`.
    Read { by: Party, up_to_seq: u64 },
    /// The conversation was resolved or reopened.
    Status {
        status: ConversationStatus,
        /// Display name of the agent who changed it; `None` when the system did (e.g. a visitor's new message reopens).
        #[serde(default)]
        by: Option<String>,
    },
    /// A message's delivery on another channel changed (e.g. sent to, delivered or read on Messenger, or not sent).
    Delivery {
        message_id: String,
        channel: Channel,
        state: DeliveryState,
        /// Plain words for agents when the state needs explaining (why it was not sent, ...).
        #[serde(default)]
        detail: Option<String>,
    },
    /// The customer joined or left a channel, e.g. continued the conversation on Messenger.
    Channel {
        channel: Channel,
        linked: bool,
        /// The customer's first name there, when known.
        #[serde(default)]
        name: Option<String>,
    },
    /// An event kind this peer does not know yet; it still advances `seq`.
    #[serde(other)]
    Unknown,
}

/// A chat message as every peer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server-assigned id (a UUIDv7 string).
    pub id: String,
    /// The id the sender chose; unique per conversation, used to make re-sends idempotent.
    pub client_id: String,
    pub author: Author,
    /// Plain text. Always rendered as text, never as HTML.
    pub body: String,
    /// Server commit time, epoch milliseconds.
    pub sent_at: i64,
    /// Where the message came from or was written.
    #[serde(default)]
    pub channel: Channel,
    /// Files and images that came with the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file attached to a message, served by the Parley server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Path on the chat server, e.g. `/attachments/<id>`.
    pub url: String,
    /// `image`, `video`, `audio` or `file`.
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Where a message stands on a channel other than the one it was written on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Queued for sending.
    Pending,
    /// Accepted by the channel.
    Sent,
    /// Reached the customer's device.
    Delivered,
    /// Seen by the customer.
    Read,
    /// The channel refused it; `detail` says why.
    Failed,
    /// Deliberately not sent (e.g. outside Messenger's reply window); `detail` says why.
    NotSent,
    #[serde(other)]
    Unknown,
}

/// Who wrote a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Author {
    Visitor,
    Agent {
        /// The agent's display name, shown to the visitor.
        name: String,
    },
    System,
}

/// A side of the conversation, for read receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Visitor,
    Agent,
}

/// The channel a message travelled on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    #[default]
    Web,
    Messenger,
}

/// Whether a conversation still needs attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    #[default]
    Open,
    Resolved,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}
