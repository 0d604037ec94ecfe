//! The conversation as the visitor sees it, as plain data: applying server events strictly in `seq` order,
//! de-duplicating pending and committed messages, the outbox of unacknowledged sends, delivery ticks and the
//! unread count.
//!
//! No DOM, no timers, no I/O: `session.rs` feeds it frames and renders it, and every rule here is unit-tested on the
//! host. Invariants: a message appears once (keyed by its client id for the visitor's own messages, by server id
//! otherwise); committed messages are ordered by `seq`; pending ones follow in the order they were written.

use protocol::{Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, EventKind, Party};
use serde::Serialize;

/// Who wrote a message.
#[derive(Clone, PartialEq, Eq)]
pub enum Who {
    Visitor,
    Agent(String),
    System,
}

/// Delivery state of one of the visitor's own messages.
#[derive(Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Not acknowledged yet; it is in the outbox.
    Sending,
    /// Committed by the server.
    Sent,
    /// The agent side has read it.
    Read,
    /// Rejected by the server; the reason is shown and it will not be re-sent.
    Failed(String),
}

/// One row of the message list.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    /// Stable render key: `c<client_id>` for the visitor's messages (so the pending bubble becomes the committed one
    /// in place), `m<id>` for others, `s<seq>` for status notes.
    pub key: String,
    pub client_id: String,
    /// Server id once committed.
    pub id: Option<String>,
    /// 0 while not committed.
    pub seq: u64,
    pub who: Who,
    pub body: String,
    /// Epoch ms: creation time while pending, server commit time afterwards.
    pub at: i64,
    /// Why the server refused it.
    pub failed: Option<String>,
    /// Written or sent on Messenger.
    pub via_messenger: bool,
    /// Files that came with it (served by the chat server).
    pub attachments: Vec<Attachment>,
    /// How far an agent reply got on Messenger (sent, delivered, seen), when it was mirrored there.
    pub messenger_state: Option<DeliveryState>,
}

impl Msg {
    fn is_pending(&self) -> bool {
        self.who == Who::Visitor && self.seq == 0 && self.failed.is_none()
    }
}

/// An unacknowledged send, as persisted so that a reload re-sends it with the same client id.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct OutboxItem {
    pub client_id: String,
    pub body: String,
    pub created_at: i64,
}

/// Result of applying one live event.
#[derive(PartialEq, Eq)]
pub enum Applied {
    /// Already applied (seq ≤ last applied); nothing changed.
    Stale,
    /// The event skips a seq; nothing changed, the caller must resume from `last_seq`.
    Gap,
    /// Applied; carries the agent message it added, if any.
    Done(Option<Msg>),
}

/// Result of applying a `Welcome`.
pub struct Welcomed {
    /// Our history is inconsistent with the server's: drop it and ask again from seq 0.
    pub resync: bool,
    /// Agent messages that were new to this client.
    pub agent_messages: Vec<Msg>,
}

/// The whole visible conversation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Chat {
    messages: Vec<Msg>,
    last_seq: u64,
    agent_read_seq: u64,
    visitor_read_seq: u64,
    agent_name: Option<String>,
    status: ConversationStatus,
    /// `Some(first name, if known)` while the conversation continues on Messenger.
    messenger: Option<Option<String>>,
}

impl Chat {
    pub fn messages(&self) -> &[Msg] {
        &self.messages
    }

    /// Highest seq applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Name of the agent who wrote last.
    pub fn agent_name(&self) -> Option<&str> {
        self.agent_name.as_deref()
    }

    /// How far the message with this render key got on Messenger.
    pub fn messenger_state(&self, key: &str) -> Option<DeliveryState> {
        self.messages.iter().find(|m| m.key == key).and_then(|m| m.messenger_state)
    }

    /// `Some(first name)` while the conversation continues on Messenger.
    pub fn messenger(&self) -> Option<Option<&str>> {
        self.messenger.as_ref().map(|n| n.as_deref())
    }

    pub fn is_resolved(&self) -> bool {
        self.status == ConversationStatus::Resolved
    }

    /// Restores persisted, unacknowledged sends as pending bubbles (in their original order).
    pub fn restore_outbox(&mut self, items: Vec<OutboxItem>) {
        for item in items {
            if !self.messages.iter().any(|m| m.who == Who::Visitor && m.client_id == item.client_id) {
                self.messages.push(pending(item));
            }
        }
        self.sort();
    }

    /// Adds a message the visitor just wrote; returns the outbox entry to persist and send.
    pub fn add_pending(&mut self, client_id: String, body: String, now: i64) -> OutboxItem {
        let item = OutboxItem { client_id, body, created_at: now };
        self.messages.push(pending(item.clone()));
        item
    }

    /// Every unacknowledged send, oldest first, for (re-)sending.
    pub fn outbox(&self) -> Vec<OutboxItem> {
        self.messages
            .iter()
            .filter(|m| m.is_pending())
            .map(|m| OutboxItem { client_id: m.client_id.clone(), body: m.body.clone(), created_at: m.at })
            .collect()
    }

    /// The server committed our message `client_id` as `seq`. Returns whether a pending bubble was updated.
    pub fn ack(&mut self, client_id: &str, message_id: String, seq: u64) -> bool {
        let Some(m) = self.visitor_msg_mut(client_id) else {
            return false;
        };
        if m.seq != 0 {
            return false;
        }
        m.seq = seq;
        m.id = Some(message_id);
        m.failed = None;
        self.sort();
        true
    }

    /// The server refused our message `client_id`; it leaves the outbox and shows `reason`.
    pub fn fail(&mut self, client_id: &str, reason: String) -> bool {
        match self.visitor_msg_mut(client_id) {
            Some(m) if m.seq == 0 => {
                m.failed = Some(reason);
                true
            }
            _ => false,
        }
    }

    /// Delivery state of the visitor's message with render key `key` (`None` for other authors).
    pub fn delivery(&self, key: &str) -> Option<Delivery> {
        let m = self.messages.iter().find(|m| m.key == key)?;
        if m.who != Who::Visitor {
            return None;
        }
        Some(match (&m.failed, m.seq) {
            (Some(reason), _) => Delivery::Failed(reason.clone()),
            (None, 0) => Delivery::Sending,
            (None, seq) if seq <= self.agent_read_seq => Delivery::Read,
            (None, _) => Delivery::Sent,
        })
    }

    /// Agent messages the visitor has not read yet.
    pub fn unread(&self) -> u32 {
        let n =
            self.messages.iter().filter(|m| matches!(m.who, Who::Agent(_)) && m.seq > self.visitor_read_seq).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The visitor is looking at the conversation: if an agent message is unread, everything up to the last applied
    /// seq becomes read and that seq is returned, to send as `Read{up_to_seq}`.
    pub fn mark_read(&mut self) -> Option<u64> {
        if self.unread() == 0 {
            return None;
        }
        self.visitor_read_seq = self.last_seq;
        Some(self.last_seq)
    }

    /// Forgets everything the server told us (keeps pending and failed bubbles), e.g. after the token was refused.
    pub fn reset_committed(&mut self) {
        self.messages.retain(|m| m.who == Who::Visitor && m.seq == 0);
        self.last_seq = 0;
        self.agent_read_seq = 0;
        self.visitor_read_seq = 0;
        self.agent_name = None;
        self.status = ConversationStatus::Open;
    }

    /// Applies a `Welcome`: the events after our `last_seq` (or, with `reset`, the whole history).
    pub fn apply_welcome(
        &mut self,
        events: Vec<Event>,
        server_last_seq: u64,
        agent_read_seq: u64,
        reset: bool,
    ) -> Welcomed {
        if reset {
            self.reset_committed();
        }
        let mut out = Welcomed { resync: false, agent_messages: Vec::new() };
        for ev in events {
            match self.apply_event(ev) {
                Applied::Stale => {}
                Applied::Gap => {
                    out.resync = true;
                    return out;
                }
                Applied::Done(m) => out.agent_messages.extend(m),
            }
        }
        // The server's history is shorter than ours: ours cannot be trusted. (Fewer events than `server_last_seq` is
        // a benign race with a message committed meanwhile; its live event follows, or a later gap resumes.)
        if self.last_seq > server_last_seq {
            out.resync = true;
            return out;
        }
        self.agent_read_seq = self.agent_read_seq.max(agent_read_seq);
        out
    }

    /// Applies one event if it is the next in sequence.
    pub fn apply_event(&mut self, ev: Event) -> Applied {
        if ev.seq <= self.last_seq {
            return Applied::Stale;
        }
        if ev.seq != self.last_seq + 1 {
            return Applied::Gap;
        }
        self.last_seq = ev.seq;
        match ev.kind {
            EventKind::Message { message } => {
                return Applied::Done(self.apply_message(ev.seq, message));
            }
            EventKind::Read { by, up_to_seq } => match by {
                Party::Agent => self.agent_read_seq = self.agent_read_seq.max(up_to_seq),
                Party::Visitor => self.visitor_read_seq = self.visitor_read_seq.max(up_to_seq),
            },
            EventKind::Status { status, .. } => {
                if status == ConversationStatus::Resolved && self.status != status {
                    self.messages.push(Msg {
                        key: format!("s{}", ev.seq),
                        client_id: String::new(),
                        id: None,
                        seq: ev.seq,
                        who: Who::System,
                        body: "This conversation was marked as resolved.".into(),
                        at: ev.at,
                        failed: None,
                        via_messenger: false,
                        attachments: Vec::new(),
                        messenger_state: None,
                    });
                    self.sort();
                }
                self.status = status;
            }
            EventKind::Channel { channel: Channel::Messenger, linked, name } => {
                self.messenger = linked.then_some(name);
            }
            EventKind::Delivery { message_id, channel: Channel::Messenger, state, .. } => {
                let rank = |s: DeliveryState| match s {
                    DeliveryState::Sent => 1,
                    DeliveryState::Delivered => 2,
                    DeliveryState::Read => 3,
                    _ => 0,
                };
                if let Some(m) = self.messages.iter_mut().find(|m| m.id.as_deref() == Some(message_id.as_str()))
                    && rank(state) > m.messenger_state.map_or(0, rank)
                {
                    m.messenger_state = Some(state);
                }
            }
            EventKind::Channel { .. } | EventKind::Delivery { .. } | EventKind::Unknown => {}
        }
        Applied::Done(None)
    }

    fn apply_message(&mut self, seq: u64, msg: ChatMessage) -> Option<Msg> {
        if self.messages.iter().any(|m| m.id.as_deref() == Some(msg.id.as_str())) {
            return None;
        }
        let who = match msg.author {
            Author::Visitor => Who::Visitor,
            Author::Agent { name } => Who::Agent(name),
            Author::System => Who::System,
        };
        if who == Who::Visitor
            && let Some(m) = self.visitor_msg_mut(&msg.client_id)
        {
            // Our own pending (or already acked) bubble: commit it in place, never show it twice.
            m.seq = seq;
            m.id = Some(msg.id);
            m.body = msg.body;
            m.at = msg.sent_at;
            m.failed = None;
            m.via_messenger = msg.channel == Channel::Messenger;
            m.attachments = msg.attachments;
            self.sort();
            return None;
        }
        if let Who::Agent(name) = &who {
            self.agent_name = Some(name.clone());
        }
        let m = Msg {
            key: match who {
                Who::Visitor => format!("c{}", msg.client_id),
                _ => format!("m{}", msg.id),
            },
            client_id: msg.client_id,
            id: Some(msg.id),
            seq,
            who,
            body: msg.body,
            at: msg.sent_at,
            failed: None,
            via_messenger: msg.channel == Channel::Messenger,
            attachments: msg.attachments,
            messenger_state: None,
        };
        let agent = matches!(m.who, Who::Agent(_)).then(|| m.clone());
        self.messages.push(m);
        self.sort();
        agent
    }

    fn visitor_msg_mut(&mut self, client_id: &str) -> Option<&mut Msg> {
        self.messages.iter_mut().find(|m| m.who == Who::Visitor && m.client_id == client_id)
    }

    /// Committed by seq, then uncommitted in insertion order: a stable insertion sort. The list is always nearly
    /// in order (a message is appended, or one moves when it commits), where this is linear; and it is a few
    /// hundred bytes of Wasm where the standard library's stable sort (driftsort) was about 7 KB.
    fn sort(&mut self) {
        let key = |m: &Msg| if m.seq == 0 { u64::MAX } else { m.seq };
        for i in 1..self.messages.len() {
            let mut j = i;
            while j > 0 && key(&self.messages[j - 1]) > key(&self.messages[j]) {
                self.messages.swap(j - 1, j);
                j -= 1;
            }
        }
    }
}

fn pending(item: OutboxItem) -> Msg {
    Msg {
        key: format!("c{}", item.client_id),
        client_id: item.client_id,
        id: None,
        seq: 0,
        who: Who::Visitor,
        body: item.body,
        at: item.created_at,
        failed: None,
        via_messenger: false,
        attachments: Vec::new(),
        messenger_state: None,
    }
}

/// Parses a persisted outbox; anything unreadable or invalid is dropped rather than trusted.
pub fn decode_outbox(json: &str) -> Vec<OutboxItem> {
    let mut items = crate::wire::decode_outbox_items(json).unwrap_or_default();
    items.retain(|i| protocol::validate_client_id(&i.client_id).is_ok() && protocol::validate_body(&i.body).is_ok());
    let mut seen: Vec<String> = Vec::new();
    items.retain(|i| {
        let fresh = !seen.contains(&i.client_id);
        seen.push(i.client_id.clone());
        fresh
    });
    items
}

pub fn encode_outbox(items: &[OutboxItem]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Adds `item` to a persisted outbox (read-modify-write, so sends from other tabs are kept).
pub fn outbox_with(json: Option<&str>, item: &OutboxItem) -> String {
    let mut items = json.map(decode_outbox).unwrap_or_default();
    if !items.iter().any(|i| i.client_id == item.client_id) {
        items.push(item.clone());
    }
    encode_outbox(&items)
}

/// Removes `client_id` from a persisted outbox; `None` when it is now empty.
pub fn outbox_without(json: Option<&str>, client_id: &str) -> Option<String> {
    let mut items = json.map(decode_outbox).unwrap_or_default();
    items.retain(|i| i.client_id != client_id);
    (!items.is_empty()).then(|| encode_outbox(&items))
}

/// Lowercase hex of random bytes: a valid client id (`[A-Za-z0-9_-]{1,64}`) for 16 bytes.
pub fn hex_id(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// `outbox` for the anonymous visitor, `outbox:<first 16 hex digits of the identity's hash>` for a customer.
pub fn outbox_key(identity_hash: Option<&str>) -> String {
    match identity_hash {
        Some(hash) => {
            let digits: String = hash.chars().filter(char::is_ascii_hexdigit).take(16).collect();
            format!("outbox:{}", digits.to_ascii_lowercase())
        }
        None => "outbox".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg_event(seq: u64, id: &str, client_id: &str, author: Author, body: &str) -> Event {
        Event {
            seq,
            at: 1000 + seq as i64,
            kind: EventKind::Message {
                message: ChatMessage {
                    id: id.into(),
                    client_id: client_id.into(),
                    author,
                    body: body.into(),
                    sent_at: 1000 + seq as i64,
                    channel: Channel::Web,
                    attachments: Vec::new(),
                },
            },
        }
    }

    fn agent(seq: u64, id: &str, body: &str) -> Event {
        msg_event(seq, id, &format!("a{id}"), Author::Agent { name: "Alice".into() }, body)
    }

    fn visitor(seq: u64, id: &str, client_id: &str, body: &str) -> Event {
        msg_event(seq, id, client_id, Author::Visitor, body)
    }

    fn read(seq: u64, by: Party, up_to_seq: u64) -> Event {
        Event { seq, at: 0, kind: EventKind::Read { by, up_to_seq } }
    }

    fn bodies(c: &Chat) -> Vec<&str> {
        c.messages().iter().map(|m| m.body.as_str()).collect()
    }

    #[test]
    fn events_apply_in_order_and_stale_ones_are_ignored() {
        let mut c = Chat::default();
        assert!(matches!(c.apply_event(agent(1, "m1", "hi")), Applied::Done(Some(_))));
        assert!(c.apply_event(agent(1, "m1", "hi")) == Applied::Stale);
        assert!(c.apply_event(agent(2, "m2", "there")) == Applied::Done(Some(c.messages()[1].clone())));
        assert_eq!(bodies(&c), ["hi", "there"]);
        assert_eq!(c.last_seq(), 2);
        assert_eq!(c.agent_name(), Some("Alice"));
    }

    #[test]
    fn a_gap_is_reported_and_nothing_is_applied() {
        let mut c = Chat::default();
        assert!(c.apply_event(agent(1, "m1", "a")) != Applied::Gap);
        assert!(c.apply_event(agent(3, "m3", "c")) == Applied::Gap);
        assert_eq!(c.last_seq(), 1);
        assert_eq!(bodies(&c), ["a"]);
    }

    #[test]
    fn pending_message_is_replaced_by_its_ack_then_event_without_duplicates() {
        let mut c = Chat::default();
        c.add_pending("cid1".into(), "hello".into(), 5);
        assert!(c.delivery("ccid1") == Some(Delivery::Sending));
        assert_eq!(c.outbox().len(), 1);
        assert!(c.ack("cid1", "m1".into(), 1));
        assert!(c.delivery("ccid1") == Some(Delivery::Sent));
        assert!(c.outbox().is_empty());
        assert!(c.apply_event(visitor(1, "m1", "cid1", "hello")) == Applied::Done(None));
        assert_eq!(c.messages().len(), 1);
        assert!(!c.ack("cid1", "m1".into(), 1), "a repeated ack changes nothing");
        assert_eq!(c.messages().len(), 1);
    }

    #[test]
    fn pending_message_is_replaced_by_its_event_arriving_before_the_ack() {
        let mut c = Chat::default();
        c.add_pending("cid1".into(), "hello".into(), 5);
        c.apply_event(visitor(1, "m1", "cid1", "hello"));
        assert_eq!(c.messages().len(), 1);
        assert_eq!(c.messages()[0].key, "ccid1");
        assert_eq!(c.messages()[0].seq, 1);
        assert!(c.outbox().is_empty());
        assert!(!c.ack("cid1", "m1".into(), 1));
        assert_eq!(c.messages().len(), 1);
    }

    #[test]
    fn a_replayed_message_with_a_known_id_is_not_added_twice() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        c.apply_event(visitor(2, "m1", "zzz", "dup id"));
        assert_eq!(bodies(&c), ["a"]);
        assert_eq!(c.last_seq(), 2);
    }

    #[test]
    fn visitor_messages_from_another_tab_appear_once() {
        let mut c = Chat::default();
        c.apply_event(visitor(1, "m1", "other-tab", "from tab B"));
        c.apply_event(visitor(2, "m2", "other-tab2", "again"));
        assert_eq!(bodies(&c), ["from tab B", "again"]);
        assert!(c.delivery("cother-tab") == Some(Delivery::Sent));
    }

    #[test]
    fn pending_messages_stay_below_committed_ones_and_move_into_seq_order() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a1"));
        c.add_pending("p1".into(), "mine".into(), 0);
        c.add_pending("p2".into(), "mine too".into(), 0);
        c.apply_event(agent(2, "m2", "a2"));
        assert_eq!(bodies(&c), ["a1", "a2", "mine", "mine too"]);
        // Ack for p2 first, with a seq after an agent message we haven't received yet.
        c.ack("p2", "m4".into(), 4);
        assert_eq!(bodies(&c), ["a1", "a2", "mine too", "mine"]);
        c.apply_event(agent(3, "m3", "a3"));
        assert_eq!(bodies(&c), ["a1", "a2", "a3", "mine too", "mine"]);
        c.apply_event(visitor(4, "m4", "p2", "mine too"));
        c.apply_event(visitor(5, "m5", "p1", "mine"));
        assert_eq!(bodies(&c), ["a1", "a2", "a3", "mine too", "mine"]);
        assert_eq!(c.messages().len(), 5);
    }

    #[test]
    fn delivery_goes_sending_sent_read() {
        let mut c = Chat::default();
        c.add_pending("p".into(), "x".into(), 0);
        c.add_pending("q".into(), "y".into(), 0);
        c.apply_event(visitor(1, "m1", "p", "x"));
        c.apply_event(visitor(2, "m2", "q", "y"));
        assert!(c.delivery("cp") == Some(Delivery::Sent));
        c.apply_event(read(3, Party::Agent, 1));
        assert!(c.delivery("cp") == Some(Delivery::Read));
        assert!(c.delivery("cq") == Some(Delivery::Sent));
        c.apply_event(read(4, Party::Agent, 0));
        assert!(c.delivery("cp") == Some(Delivery::Read), "the read cursor never moves back");
    }

    #[test]
    fn failed_message_leaves_the_outbox_and_shows_the_reason() {
        let mut c = Chat::default();
        c.add_pending("p".into(), "x".into(), 0);
        assert!(c.fail("p", "message is too long".into()));
        assert!(c.delivery("cp") == Some(Delivery::Failed("message is too long".into())));
        assert!(c.outbox().is_empty());
        assert!(!c.fail("unknown", "x".into()));
    }

    #[test]
    fn agent_messages_have_no_delivery_state() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        assert!(c.delivery("mm1").is_none());
        assert!(c.delivery("nope").is_none());
    }

    #[test]
    fn unread_counts_agent_messages_after_the_visitor_cursor() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        c.apply_event(visitor(2, "m2", "v", "b"));
        c.apply_event(agent(3, "m3", "c"));
        assert_eq!(c.unread(), 2);
        assert_eq!(c.mark_read(), Some(3));
        assert_eq!(c.unread(), 0);
        assert_eq!(c.mark_read(), None, "nothing new, no Read frame");
        // Our own Read echoed back as an event does not create unread messages nor another Read.
        c.apply_event(read(4, Party::Visitor, 3));
        assert_eq!(c.mark_read(), None);
        c.apply_event(agent(5, "m5", "d"));
        assert_eq!(c.unread(), 1);
    }

    #[test]
    fn a_read_from_another_tab_clears_unread() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        c.apply_event(agent(2, "m2", "b"));
        c.apply_event(read(3, Party::Visitor, 2));
        assert_eq!(c.unread(), 0);
    }

    #[test]
    fn welcome_replays_history_and_keeps_pending_messages() {
        let mut c = Chat::default();
        c.restore_outbox(vec![OutboxItem { client_id: "p".into(), body: "queued".into(), created_at: 1 }]);
        let w = c.apply_welcome(vec![agent(1, "m1", "a"), visitor(2, "m2", "v", "b")], 2, 2, false);
        assert!(!w.resync);
        assert_eq!(w.agent_messages.len(), 1);
        assert_eq!(bodies(&c), ["a", "b", "queued"]);
        assert!(c.delivery("cv") == Some(Delivery::Read));
        assert_eq!(c.outbox().len(), 1);
    }

    #[test]
    fn welcome_with_reset_rebuilds_from_scratch() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "old", "stale"));
        c.apply_event(agent(2, "old2", "stale2"));
        c.add_pending("p".into(), "queued".into(), 0);
        let w = c.apply_welcome(vec![agent(1, "new", "fresh")], 1, 0, true);
        assert!(!w.resync);
        assert_eq!(bodies(&c), ["fresh", "queued"]);
        assert_eq!(c.last_seq(), 1);
    }

    #[test]
    fn welcome_that_does_not_line_up_asks_for_a_resync() {
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        assert!(c.apply_welcome(vec![agent(3, "m3", "c")], 3, 0, false).resync);
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        assert!(!c.apply_welcome(vec![], 5, 0, false).resync, "a commit racing the welcome is caught up live");
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        c.apply_event(agent(2, "m2", "b"));
        assert!(c.apply_welcome(vec![], 1, 0, false).resync, "server has less than we hold");
        let mut c = Chat::default();
        c.apply_event(agent(1, "m1", "a"));
        let w = c.apply_welcome(vec![agent(1, "m1", "a"), agent(2, "m2", "b")], 2, 0, false);
        assert!(!w.resync, "overlapping replay is fine");
        assert_eq!(w.agent_messages.len(), 1);
        assert_eq!(bodies(&c), ["a", "b"]);
    }

    #[test]
    fn unknown_events_still_advance_the_sequence() {
        let mut c = Chat::default();
        c.apply_event(Event { seq: 1, at: 0, kind: EventKind::Unknown });
        assert_eq!(c.last_seq(), 1);
        assert!(c.apply_event(agent(2, "m2", "a")) != Applied::Gap);
    }

    #[test]
    fn resolving_adds_one_system_note() {
        let mut c = Chat::default();
        let status = |seq, status| Event { seq, at: 0, kind: EventKind::Status { status, by: None } };
        c.apply_event(status(1, ConversationStatus::Resolved));
        c.apply_event(status(2, ConversationStatus::Resolved));
        assert!(c.is_resolved());
        c.apply_event(status(3, ConversationStatus::Open));
        assert!(!c.is_resolved());
        assert_eq!(c.messages().len(), 1);
        assert!(c.messages()[0].who == Who::System);
    }

    #[test]
    fn outbox_persistence_round_trips_and_merges() {
        let a = OutboxItem { client_id: "a".into(), body: "one".into(), created_at: 1 };
        let b = OutboxItem { client_id: "b".into(), body: "two".into(), created_at: 2 };
        let s = outbox_with(None, &a);
        let s = outbox_with(Some(&s), &b);
        let s = outbox_with(Some(&s), &a);
        assert!(decode_outbox(&s) == vec![a.clone(), b.clone()]);
        let s = outbox_without(Some(&s), "a").expect("b is left");
        assert!(decode_outbox(&s) == vec![b]);
        assert_eq!(outbox_without(Some(&s), "b"), None);
    }

    #[test]
    fn corrupt_or_invalid_outbox_entries_are_dropped() {
        assert!(decode_outbox("garbage").is_empty());
        let items = decode_outbox(
            r#"[{"client_id":"ok","body":"x","created_at":1},{"client_id":"bad id!","body":"x","created_at":1},
                {"client_id":"e","body":"  ","created_at":1},{"client_id":"ok","body":"dup","created_at":2}]"#,
        );
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].body, "x");
    }

    #[test]
    fn restoring_the_outbox_does_not_duplicate_bubbles() {
        let mut c = Chat::default();
        let item = OutboxItem { client_id: "p".into(), body: "x".into(), created_at: 1 };
        c.restore_outbox(vec![item.clone(), item]);
        assert_eq!(c.messages().len(), 1);
    }

    #[test]
    fn each_identity_has_its_own_outbox_key() {
        assert_eq!(outbox_key(None), "outbox");
        assert_eq!(outbox_key(Some("ABCDEF0123456789ffff")), "outbox:abcdef0123456789");
        assert_ne!(outbox_key(Some("00aa")), outbox_key(Some("00ab")));
        assert_eq!(outbox_key(Some("<x>:1")), "outbox:1");
    }

    #[test]
    fn hex_ids_are_valid_client_ids() {
        let id = hex_id(&[0, 1, 0xab, 0xff, 16, 32, 64, 128, 9, 8, 7, 6, 5, 4, 3, 2]);
        assert_eq!(id, "0001abff102040800908070605040302");
        assert!(protocol::validate_client_id(&id).is_ok());
    }
}

#[cfg(test)]
mod messenger_tests {
    use super::*;

    #[test]
    fn channel_events_track_the_messenger_link_and_undo() {
        let mut chat = Chat::default();
        let linked = Event {
            seq: 1,
            at: 1,
            kind: EventKind::Channel { channel: Channel::Messenger, linked: true, name: Some("Peter".into()) },
        };
        assert!(matches!(chat.apply_event(linked), Applied::Done(None)));
        assert_eq!(chat.messenger(), Some(Some("Peter")));
        let unlinked = Event {
            seq: 2,
            at: 2,
            kind: EventKind::Channel { channel: Channel::Messenger, linked: false, name: None },
        };
        chat.apply_event(unlinked);
        assert_eq!(chat.messenger(), None);
    }
}
