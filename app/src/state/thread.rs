//! One opened conversation as the console holds it ([`Thread`]): its applied event log (messages, channel and
//! status changes, in `seq` order, events ahead of a gap buffered until it closes), read cursors and the delivery
//! of its messages on other channels; and the agent's replies waiting for their ack ([`Outgoing`], [`Delivery`]).
//! Pure data; [`super::ConsoleState`] routes frames to it.

use std::collections::{BTreeMap, HashMap};

use protocol::{Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, EventKind, Party};

/// Delivery state of one of the agent's replies, as shown under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written, not yet committed by the server.
    Sending,
    /// Committed by the server.
    Sent,
    /// The visitor has read it.
    Seen,
    /// The server refused it; the text says why. The agent may retry.
    Failed(String),
}

impl Delivery {
    pub fn label(&self) -> &str {
        match self {
            Self::Sending => "Sending…",
            Self::Sent => "Sent",
            Self::Seen => "Seen",
            Self::Failed(_) => "Not sent",
        }
    }

    /// The classes of its status line: `msg__state` and the state's modifier (the label in kebab case).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Sending => "msg__state msg__state--sending",
            Self::Sent => "msg__state msg__state--sent",
            Self::Seen => "msg__state msg__state--seen",
            Self::Failed(_) => "msg__state msg__state--not-sent",
        }
    }
}

/// A reply the agent wrote that the conversation log does not hold yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub conversation_id: String,
    pub client_id: String,
    pub body: String,
    /// Epoch ms when it was written (shown until the server's time is known).
    pub created_at: i64,
    /// Set by the ack.
    pub seq: Option<u64>,
    pub failed: Option<String>,
}

/// One line of a conversation as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Message {
        /// Stable across the pending → committed transition (the client id).
        key: String,
        /// Server id, once committed.
        id: Option<String>,
        seq: Option<u64>,
        author: Author,
        body: String,
        at: i64,
        channel: Channel,
        attachments: Vec<Attachment>,
    },
    /// The customer joined or left another channel (e.g. continued on Messenger).
    Channel {
        key: String,
        channel: Channel,
        linked: bool,
        name: Option<String>,
        at: i64,
    },
    Status {
        key: String,
        seq: u64,
        status: ConversationStatus,
        by: Option<String>,
        at: i64,
    },
}

impl Entry {
    pub fn key(&self) -> &str {
        match self {
            Self::Message { key, .. } | Self::Status { key, .. } | Self::Channel { key, .. } => key,
        }
    }
}

/// The applied event log of one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thread {
    /// Highest `seq` applied; everything from 1 to here is applied.
    pub last_seq: u64,
    /// Messages and status changes, in `seq` order.
    pub entries: Vec<Entry>,
    /// Events that arrived ahead of a gap, waiting for the missing ones.
    ahead: BTreeMap<u64, Event>,
    pub visitor_read_seq: u64,
    pub agent_read_seq: u64,
    /// Highest `seq` of a visitor message.
    pub last_visitor_seq: u64,
    /// Delivery of messages on another channel (e.g. Messenger), by server message id; the latest state wins.
    pub deliveries: HashMap<String, ChannelDelivery>,
}

/// Where a message stands on another channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelDelivery {
    pub channel: Channel,
    pub state: DeliveryState,
    pub detail: Option<String>,
}

impl ChannelDelivery {
    /// "Delivered on Messenger", "Not sent on Messenger: outside the reply window", …
    pub fn describe(&self) -> String {
        let state = match self.state {
            DeliveryState::Pending => "Sending",
            DeliveryState::Sent => "Sent",
            DeliveryState::Delivered => "Delivered",
            DeliveryState::Read => "Read",
            DeliveryState::Failed => "Failed",
            DeliveryState::NotSent => "Not sent",
            DeliveryState::Unknown => "Unknown state",
        };
        let mut out = format!("{state} on {}", channel_name(self.channel));
        if let Some(detail) = self.detail.as_deref().filter(|d| !d.is_empty()) {
            out.push_str(": ");
            out.push_str(detail);
        }
        out
    }

    pub fn is_problem(&self) -> bool {
        matches!(self.state, DeliveryState::Failed | DeliveryState::NotSent)
    }
}

/// Display name of a channel.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "Web",
        Channel::Messenger => "Messenger",
    }
}

impl Thread {
    /// Applies one event if it is the next in line; buffers it if it is ahead; drops it if already applied.
    /// Returns whether a gap is now pending (some event is buffered ahead of a missing one).
    pub(super) fn push(&mut self, event: Event) -> bool {
        if event.seq <= self.last_seq {
            return !self.ahead.is_empty();
        }
        self.ahead.insert(event.seq, event);
        while let Some(next) = self.ahead.remove(&(self.last_seq + 1)) {
            self.apply(next);
        }
        // Anything left at or below last_seq is a duplicate; drop it.
        let last = self.last_seq;
        self.ahead.retain(|seq, _| *seq > last);
        !self.ahead.is_empty()
    }

    fn apply(&mut self, event: Event) {
        self.last_seq = event.seq;
        match event.kind {
            EventKind::Message { message } => {
                let ChatMessage { id, client_id, author, body, sent_at, channel, attachments } = message;
                let duplicate = self.entries.iter().any(|e| match e {
                    Entry::Message { key, .. } => *key == client_id || *key == id,
                    Entry::Status { .. } | Entry::Channel { .. } => false,
                });
                if duplicate {
                    return;
                }
                if author == Author::Visitor {
                    self.last_visitor_seq = event.seq;
                }
                let key = if client_id.is_empty() { id.clone() } else { client_id };
                self.entries.push(Entry::Message {
                    key,
                    id: Some(id),
                    seq: Some(event.seq),
                    author,
                    body,
                    at: sent_at,
                    channel,
                    attachments,
                });
            }
            EventKind::Read { by: Party::Visitor, up_to_seq } => {
                self.visitor_read_seq = self.visitor_read_seq.max(up_to_seq);
            }
            EventKind::Read { by: Party::Agent, up_to_seq } => {
                self.agent_read_seq = self.agent_read_seq.max(up_to_seq);
            }
            EventKind::Status { status, by } => {
                self.entries.push(Entry::Status {
                    key: format!("status-{}", event.seq),
                    seq: event.seq,
                    status,
                    by,
                    at: event.at,
                });
            }
            EventKind::Delivery { message_id, channel, state, detail } => {
                self.deliveries.insert(message_id, ChannelDelivery { channel, state, detail });
            }
            EventKind::Channel { channel, linked, name } => {
                self.entries.push(Entry::Channel {
                    key: format!("channel-{}", event.seq),
                    channel,
                    linked,
                    name,
                    at: event.at,
                });
            }
            EventKind::Unknown => {}
        }
    }

    pub(super) fn holds_client_id(&self, client_id: &str) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Message { key, .. } if key == client_id))
    }
}
