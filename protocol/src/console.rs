//! Frames between the agent console (hydrated Leptos app) and the server, on `GET /ws/agent`.
//!
//! The socket is authenticated by the console's session cookie. On connect the server sends [`ServerMsg::Inbox`]
//! with every conversation summary, then a [`ServerMsg::Summary`] whenever one changes. Events of a conversation
//! stream only after [`ClientMsg::Open`], which replays everything after `since_seq` first.

use serde::{Deserialize, Serialize};

use crate::{ConversationStatus, ErrorCode, Event};

/// Frames the console sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Stream this conversation's events, starting after `since_seq`.
    Open {
        conversation_id: String,
        since_seq: u64,
    },
    /// Stop streaming this conversation's events.
    Close {
        conversation_id: String,
    },
    /// Reply in a conversation.
    Send {
        conversation_id: String,
        client_id: String,
        body: String,
    },
    /// The agent started or stopped typing in a conversation.
    Typing {
        conversation_id: String,
        typing: bool,
    },
    /// The agent has read the conversation up to `up_to_seq`.
    Read {
        conversation_id: String,
        up_to_seq: u64,
    },
    /// Resolve or reopen.
    SetStatus {
        conversation_id: String,
        status: ConversationStatus,
    },
    Ping,
}

/// Frames the server sends to the console.
#[allow(clippy::large_enum_variant)] // a wire type: boxing would not change the JSON and frames are short-lived
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Sent once on connect: the signed-in agent and every conversation, most recent activity first.
    Inbox {
        agent: AgentInfo,
        conversations: Vec<ConversationSummary>,
    },
    /// A conversation was created or changed (new message, status, read cursor).
    Summary {
        conversation: ConversationSummary,
    },
    /// Answer to `Open`: the events after `since_seq`, in order. Live `Event`s follow.
    History {
        conversation_id: String,
        events: Vec<Event>,
        last_seq: u64,
    },
    /// A live event of an opened conversation.
    Event {
        conversation_id: String,
        event: Event,
    },
    /// The visitor started or stopped typing.
    Typing {
        conversation_id: String,
        typing: bool,
    },
    /// An agent reply was committed.
    Ack {
        conversation_id: String,
        client_id: String,
        message_id: String,
        seq: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    Pong,
    /// Something agents must know about (shown as a banner), e.g. the Facebook Page token stopped working.
    Alert {
        /// Stable key, e.g. `messenger_token`; an alert with `message: None` clears it.
        key: String,
        #[serde(default)]
        message: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

/// The signed-in agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// One row of the inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub id: String,
    pub site_key: String,
    pub site_name: String,
    /// A short stable label for the visitor, e.g. "Visitor 3F2A".
    pub visitor_name: String,
    pub status: ConversationStatus,
    /// Body of the last message, cut to 140 characters.
    #[serde(default)]
    pub last_message: Option<String>,
    /// Epoch ms of the last event.
    pub last_activity_at: i64,
    /// Visitor messages after the agents' read cursor.
    pub unread: u32,
    pub last_seq: u64,
    /// How far the visitor has read (for "seen" ticks on agent replies).
    #[serde(default)]
    pub visitor_read_seq: u64,
    #[serde(default)]
    pub visitor: VisitorDetails,
    /// Set when the customer is reachable on Messenger.
    #[serde(default)]
    pub messenger: Option<MessengerInfo>,
}

/// The customer's Messenger side and the reply window that is open now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessengerInfo {
    /// The customer's name on Messenger.
    #[serde(default)]
    pub name: Option<String>,
    /// Until when (epoch ms) a reply goes out as a normal response (24 h after the customer's last action).
    #[serde(default)]
    pub response_until: Option<i64>,
    /// Until when (epoch ms) a human agent may still reply with the HUMAN_AGENT tag (7 days), if the Page has it.
    #[serde(default)]
    pub human_agent_until: Option<i64>,
}

/// What agents see about the visitor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorDetails {
    #[serde(default)]
    pub page_url: Option<String>,
    #[serde(default)]
    pub referrer: Option<String>,
    /// Raw `User-Agent` of the visitor's browser.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Short human form of the user agent, e.g. "Chrome 156 on Linux".
    #[serde(default)]
    pub browser: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub utc_offset_minutes: Option<i32>,
    #[serde(default)]
    pub language: Option<String>,
    /// Picture of the customer (e.g. from Messenger), served by the chat server.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Whether a widget of this visitor is connected right now.
    #[serde(default)]
    pub online: bool,
}
