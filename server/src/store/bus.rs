//! The event bus between nodes that share one database, and the node and presence rows behind "visitor online".
//!
//! A backend that can serve several nodes (PostgreSQL: `LISTEN/NOTIFY`) hands out a [`Bus`] from
//! [`crate::store::Backend::bus`]; a single-node engine (SQLite) has none, and the application then fans out in
//! process only. The bus carries *nudges*, not data: the rows are the truth, a nudge only says "look again" (an
//! event with this `seq` exists, this inbox row changed), so a lost, repeated or reordered nudge costs a query and
//! never a message (sockets fill gaps from the log by `seq`, see `ws::Relay`). Only typing, which is never stored,
//! travels whole.
//!
//! Presence: each node keeps a row with a lease (`alive_until`) that its heartbeat renews, and one presence row per
//! contact with a visitor socket on it. A contact is online elsewhere while some presence row of theirs belongs to a
//! node whose lease has not run out; a node that dies stops renewing, and after its lease its rows count for nothing
//! and are reaped by whichever node notices first.
//!
//! Payloads are engine-neutral JSON ([`Notice::encode`]); no engine type appears here.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;

/// Longest typing name carried in a nudge (PostgreSQL refuses payloads over 8000 bytes).
const MAX_NAME_CHARS: usize = 200;

/// What [`Bus::reap_dead_nodes`] took away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Nodes whose lease had run out.
    pub nodes: u64,
    /// Contacts that had a visitor socket on one of them.
    pub contacts: Vec<String>,
}

/// What changed, as far as another node needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Nudge {
    /// A node died (its lease ran out): whatever it committed but never announced is in the logs, so every node
    /// catches up by seq.
    Resync,
    /// The conversation's log holds events up to `seq` (committed at `at`, epoch ms).
    Event {
        #[serde(rename = "c")]
        conversation_id: String,
        #[serde(rename = "p")]
        contact_id: String,
        #[serde(rename = "s")]
        seq: u64,
        at: i64,
    },
    /// The conversation's inbox row changed: load it.
    Summary {
        #[serde(rename = "c")]
        conversation_id: String,
    },
    /// Someone started or stopped typing (never stored: carried whole).
    Typing {
        #[serde(rename = "c")]
        conversation_id: String,
        #[serde(rename = "p")]
        contact_id: String,
        #[serde(rename = "v")]
        from_visitor: bool,
        #[serde(rename = "t")]
        typing: bool,
        #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// A nudge and the node it comes from (a node skips its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(flatten)]
    pub nudge: Nudge,
}

impl Notice {
    /// The payload on the wire (small: ids, a seq, a flag).
    pub fn encode(&self) -> String {
        let mut notice = self.clone();
        if let Nudge::Typing { name: Some(name), .. } = &mut notice.nudge
            && name.chars().count() > MAX_NAME_CHARS
        {
            *name = name.chars().take(MAX_NAME_CHARS).collect();
        }
        // Plain strings, numbers and flags: serializing cannot fail.
        serde_json::to_string(&notice).unwrap_or_default()
    }

    /// Reads a payload; `None` for anything that is not one of ours (logged by the caller, never fatal).
    pub fn decode(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// One node's subscription to the bus. Dropping it unsubscribes.
#[async_trait]
pub trait BusListener: Send {
    /// The next payload. An error means the subscription is gone (the connection dropped): notifications may have
    /// been missed, so the caller subscribes again and catches up from the log.
    async fn recv(&mut self) -> StoreResult<String>;
}

/// The bus and the node rows of a database that several nodes share.
#[async_trait]
pub trait Bus: std::fmt::Debug + Send + Sync {
    /// Sends payloads to every subscribed node (this one included), in one round trip.
    async fn publish(&self, payloads: &[String]) -> StoreResult<()>;

    /// Subscribes on a connection of its own (named after `node_id` where the engine can name connections, so an
    /// operator can find it). Notifications sent from the moment this returns are received.
    async fn listen(&self, node_id: &str) -> StoreResult<Box<dyn BusListener>>;

    /// Renews this node's lease until `alive_until` (creating its row), and makes its presence rows exactly
    /// `contacts` (the contacts with a visitor socket here now), repairing any join or leave that was missed.
    async fn heartbeat(&self, node_id: &str, alive_until: i64, contacts: &[String]) -> StoreResult<()>;

    /// Records that `contact_id` has a visitor socket on this node.
    async fn presence_join(&self, node_id: &str, contact_id: &str) -> StoreResult<()>;

    /// Records that `contact_id` has no visitor socket left on this node.
    async fn presence_leave(&self, node_id: &str, contact_id: &str) -> StoreResult<()>;

    /// Which of `contacts` have a visitor socket on a live node other than `node_id` (leases checked at `now`).
    async fn online_elsewhere(&self, node_id: &str, contacts: &[String], now: i64) -> StoreResult<Vec<String>>;

    /// Forgets nodes whose lease ran out before `now` (this one excepted) and returns how many, and the contacts
    /// that had a visitor socket there, once: the caller tells agents they went offline, and every node re-reads
    /// its logs (a node that died between a commit and its nudge left the others an event short). Several nodes
    /// may reap at once; each row is returned to one of them.
    async fn reap_dead_nodes(&self, node_id: &str, now: i64) -> StoreResult<Reaped>;

    /// Removes this node's rows (a clean stop: its visitors are no longer online here) and returns the contacts
    /// that had a visitor socket here, so the caller can tell agents.
    async fn leave(&self, node_id: &str) -> StoreResult<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_small_and_foreign_payloads_are_refused() {
        let notice = Notice {
            origin: "n1".into(),
            nudge: Nudge::Event { conversation_id: "c".into(), contact_id: "p".into(), seq: 7, at: 5 },
        };
        let wire = notice.encode();
        assert_eq!(wire, r#"{"o":"n1","k":"event","c":"c","p":"p","s":7,"at":5}"#);
        assert_eq!(Notice::decode(&wire), Some(notice));
        assert_eq!(Notice::decode("hello"), None);
        assert_eq!(Notice::decode(r#"{"o":"n1","k":"other"}"#), None);
    }

    #[test]
    fn a_long_typing_name_is_clipped_to_fit_a_notification() {
        let notice = Notice {
            origin: "n1".into(),
            nudge: Nudge::Typing {
                conversation_id: "c".into(),
                contact_id: "p".into(),
                from_visitor: false,
                typing: true,
                name: Some("é".repeat(10_000)),
            },
        };
        let wire = notice.encode();
        assert!(wire.len() < 8000, "{} bytes", wire.len());
        let Some(Notice { nudge: Nudge::Typing { name: Some(name), .. }, .. }) = Notice::decode(&wire) else {
            panic!("a typing notice")
        };
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
    }
}
