//! In-process fan-out of live conversation traffic to connected sockets.
//!
//! The hub never holds a lock across an `.await` and never blocks on a slow socket. Each connection has a
//! [`HubReceiver`]: a mailbox that keeps only the *latest* pending message per conversation and kind (a newer
//! inbox row replaces an unsent one, a newer event stands for the ones before it), so a busy client that reads
//! steadily never falls behind however fast conversations change; its pending work is bounded by the number of
//! conversations, not the number of changes. Only a visitor mailbox with more distinct pending items than its
//! capacity is closed (the socket closes and the client resumes from its last sequence number, so nothing is lost).
//! An agent's mailbox has no such cap: an agent sees every conversation of its workspace, so a fixed cap smaller than
//! the number of conversations changing at once (10,000 active ones against a `queue` of 256) closed healthy agents
//! that were a few milliseconds behind. Coalescing already bounds it by the conversations that exist (times the few
//! kinds of item); an agent that stops reading is dropped by the write and pong deadlines (`ws::serve`) instead.
//! Registrations are removed by a `Drop` guard, so no early return or panic in a connection task can leave a dead
//! entry behind. Delivery order and completeness are not the hub's job: connections fill gaps from the store (see
//! `ws::Relay`), so a coalesced, missed or reordered event costs a query, not a message.
//!
//! Inbox rows are the exception: a row is the whole state, nothing fills in behind it, and rows of one conversation
//! can be published out of order (those of one commit group are read in the writer and published by each caller's
//! task as it wakes). So the hub forwards a conversation's row only if its `last_seq` is at least that of the last
//! row it forwarded for that conversation (remembered for [`SUMMARY_MEMORY`] at least), and a pending row gives way
//! only to one as new: an older row never overwrites a newer one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::Event;
use protocol::console::ConversationSummary;
use tokio::sync::Notify;

/// What travels through the hub.
#[derive(Clone, Debug)]
pub enum HubMsg {
    /// A committed conversation event.
    Event { conversation_id: String, contact_id: String, event: Event },
    /// Another node committed the conversation's events up to `seq`: a socket that has sent less reads the rest
    /// from the log.
    Behind { conversation_id: String, contact_id: String, seq: u64 },
    /// Notifications from other nodes may have been missed (the bus reconnected): every socket reads its
    /// conversations' logs after what it has sent, and agents get their inbox afresh.
    Resync,
    /// Someone started or stopped typing.
    Typing { conversation_id: String, contact_id: String, from_visitor: bool, typing: bool, name: Option<String> },
    /// An inbox row changed (for agents).
    Summary(ConversationSummary),
    /// An operational alert for agents (`message: None` clears it).
    Alert { key: String, message: Option<String> },
}

/// What a pending message replaces: a newer message with the same key stands for the older one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Event(String),
    Summary(String),
    Typing { conversation_id: String, from_visitor: bool },
    Alert(String),
    Resync,
}

impl HubMsg {
    fn key(&self) -> Key {
        match self {
            Self::Event { conversation_id, .. } | Self::Behind { conversation_id, .. } => {
                Key::Event(conversation_id.clone())
            }
            Self::Summary(summary) => Key::Summary(summary.id.clone()),
            Self::Typing { conversation_id, from_visitor, .. } => {
                Key::Typing { conversation_id: conversation_id.clone(), from_visitor: *from_visitor }
            }
            Self::Alert { key, .. } => Key::Alert(key.clone()),
            Self::Resync => Key::Resync,
        }
    }

    /// How far into its conversation's log an event or a nudge reaches.
    fn log_seq(&self) -> Option<u64> {
        match self {
            Self::Event { event, .. } => Some(event.seq),
            Self::Behind { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Whether `self`, pending, should give way to `newer`. An event gives way only to a later one: the relay
    /// fills whatever lies between from the store. An inbox row gives way to one at least as far into the log (the
    /// same `last_seq` with a change outside the log, such as presence, is newer).
    fn superseded_by(&self, newer: &HubMsg) -> bool {
        match (self, newer) {
            (Self::Summary(old), Self::Summary(new)) => new.last_seq >= old.last_seq,
            _ => match (self.log_seq(), newer.log_seq()) {
                (Some(old), Some(new)) => new > old,
                _ => true,
            },
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Keys in the order they first became pending.
    order: VecDeque<Key>,
    latest: HashMap<Key, Arc<HubMsg>>,
    /// Overflowed (or the hub let go of it): the receiver reports the end once.
    closed: bool,
}

/// One connection's mailbox: the hub writes, the socket task reads.
struct Mailbox {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
}

impl Mailbox {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { pending: Mutex::default(), wake: Notify::new(), capacity })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every update leaves `order` and `latest` consistent before anything can panic.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds, or replaces the pending message with the same key; `false` when the mailbox is closed (now: too many
    /// distinct pending messages).
    fn offer(&self, msg: &Arc<HubMsg>) -> bool {
        let mut guard = self.lock();
        let pending = &mut *guard;
        if pending.closed {
            return false;
        }
        let key = msg.key();
        if let Some(old) = pending.latest.get_mut(&key) {
            if old.superseded_by(msg) {
                *old = Arc::clone(msg);
            }
        } else if pending.latest.len() < self.capacity {
            pending.order.push_back(key.clone());
            pending.latest.insert(key, Arc::clone(msg));
        } else {
            tracing::warn!("dropping a connection that cannot keep up; it will resume from its last seq");
            pending.closed = true;
            pending.order.clear();
            pending.latest.clear();
        }
        let open = !pending.closed;
        drop(guard);
        self.wake.notify_one();
        open
    }

    fn take(&self) -> Result<Option<Arc<HubMsg>>, Closed> {
        let mut pending = self.lock();
        if pending.closed {
            return Err(Closed);
        }
        while let Some(key) = pending.order.pop_front() {
            if let Some(msg) = pending.latest.remove(&key) {
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }
}

/// The mailbox was closed: the connection could not keep up and must resume from its last sequence number.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the connection fell too far behind")]
pub struct Closed;

/// A connection's end of its mailbox.
pub struct HubReceiver {
    mailbox: Arc<Mailbox>,
}

impl HubReceiver {
    /// The next pending message, waiting for one; `None` once the connection was dropped as too slow.
    pub async fn recv(&mut self) -> Option<Arc<HubMsg>> {
        loop {
            match self.mailbox.take() {
                Ok(Some(msg)) => return Some(msg),
                Ok(None) => {}
                Err(Closed) => return None,
            }
            // `notify_one` stores a permit when no one waits, so an offer between `take` and here is not missed.
            self.mailbox.wake.notified().await;
        }
    }

    /// The next pending message without waiting: `Ok(None)` when there is none, `Err(Closed)` once closed.
    pub fn try_recv(&mut self) -> Result<Option<Arc<HubMsg>>, Closed> {
        self.mailbox.take()
    }
}

/// How long the hub remembers the `last_seq` of the last inbox row it forwarded per conversation (at least this,
/// at most twice this): far longer than a row can take from its transaction to the hub.
pub const SUMMARY_MEMORY: Duration = Duration::from_secs(60);

/// The `last_seq` of the last inbox row forwarded per conversation, in two generations: a conversation's entry
/// lives from [`SUMMARY_MEMORY`] to twice that after its last row, so the map holds only recently changed ones.
#[derive(Default)]
struct SummarySeqs {
    current: HashMap<String, u64>,
    previous: HashMap<String, u64>,
    /// When `current` started (unset until the first row).
    since: Option<Instant>,
}

impl SummarySeqs {
    /// Whether a row of `conversation_id` at `last_seq` may be forwarded (no newer one was), remembering it if so.
    fn admit(&mut self, conversation_id: &str, last_seq: u64, now: Instant) -> bool {
        let age = self.since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if self.since.is_none() || age >= SUMMARY_MEMORY {
            self.previous = if age >= SUMMARY_MEMORY * 2 { HashMap::new() } else { std::mem::take(&mut self.current) };
            self.current.clear();
            self.since = Some(now);
        }
        let known = self.current.get(conversation_id).or_else(|| self.previous.get(conversation_id));
        if known.is_some_and(|&seq| last_seq < seq) {
            return false;
        }
        self.current.insert(conversation_id.to_string(), last_seq);
        true
    }
}

#[derive(Default)]
struct Inner {
    /// contact id → visitor connections of that contact.
    visitors: HashMap<String, HashMap<u64, Arc<Mailbox>>>,
    /// Every agent connection.
    agents: HashMap<u64, Arc<Mailbox>>,
    /// Alerts in force, by key.
    alerts: HashMap<String, String>,
    /// The newest inbox row forwarded per conversation (see the module header).
    summary_seqs: SummarySeqs,
}

/// The registry of live connections. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    next_id: Arc<AtomicU64>,
    queue: usize,
}

/// Keeps a connection registered; unregisters on drop.
pub struct Registration {
    hub: Hub,
    id: u64,
    contact_id: Option<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        match &self.contact_id {
            Some(contact) => {
                if let Some(conns) = inner.visitors.get_mut(contact) {
                    conns.remove(&self.id);
                    if conns.is_empty() {
                        inner.visitors.remove(contact);
                    }
                }
            }
            None => {
                inner.agents.remove(&self.id);
            }
        }
    }
}

impl Hub {
    /// A hub whose visitor connections may each have up to `queue` distinct messages pending.
    pub fn new(queue: usize) -> Self {
        Self { queue: queue.max(1), ..Self::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent (every update is a single insert or
        // remove), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a visitor connection of `contact_id`.
    pub fn join_visitor(&self, contact_id: &str) -> (Registration, HubReceiver) {
        let mailbox = Mailbox::new(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().visitors.entry(contact_id.to_string()).or_default().insert(id, Arc::clone(&mailbox));
        let registration = Registration { hub: self.clone(), id, contact_id: Some(contact_id.to_string()) };
        (registration, HubReceiver { mailbox })
    }

    /// Registers an agent connection. Its mailbox is bounded by coalescing alone (see the module header).
    pub fn join_agent(&self) -> (Registration, HubReceiver) {
        let mailbox = Mailbox::new(usize::MAX);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().agents.insert(id, Arc::clone(&mailbox));
        (Registration { hub: self.clone(), id, contact_id: None }, HubReceiver { mailbox })
    }

    /// Number of live (registered) connections, visitors and agents.
    pub fn connection_count(&self) -> usize {
        let inner = self.lock();
        inner.visitors.values().map(HashMap::len).sum::<usize>() + inner.agents.len()
    }

    /// Live (registered) connections by kind: `(visitors, agents)`.
    pub fn connection_counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.visitors.values().map(HashMap::len).sum(), inner.agents.len())
    }

    /// Whether any agent connection is live here (no one to tell about inbox rows otherwise).
    pub fn has_agents(&self) -> bool {
        !self.lock().agents.is_empty()
    }

    /// The contacts with a live visitor connection here.
    pub fn local_contacts(&self) -> Vec<String> {
        self.lock().visitors.keys().cloned().collect()
    }

    /// Whether any visitor connection of this contact is live.
    pub fn visitor_online(&self, contact_id: &str) -> bool {
        self.lock().visitors.contains_key(contact_id)
    }

    /// Raises (`Some`) or clears (`None`) an alert; agents are told only when it changes.
    pub fn set_alert(&self, key: &str, message: Option<String>) {
        let changed = {
            let mut inner = self.lock();
            match &message {
                Some(m) => inner.alerts.insert(key.to_string(), m.clone()).as_ref() != Some(m),
                None => inner.alerts.remove(key).is_some(),
            }
        };
        if changed {
            self.publish(HubMsg::Alert { key: key.to_string(), message });
        }
    }

    /// Alerts in force.
    pub fn alerts(&self) -> Vec<(String, String)> {
        self.lock().alerts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Delivers to the contact's visitor connections and to every agent connection.
    pub fn publish(&self, msg: HubMsg) {
        let msg = Arc::new(msg);
        let mut inner = self.lock();
        if let HubMsg::Summary(row) = &*msg
            && !inner.summary_seqs.admit(&row.id, row.last_seq, Instant::now())
        {
            // A newer row of this conversation went out already.
            return;
        }
        let contact = match &*msg {
            HubMsg::Event { contact_id, .. } | HubMsg::Behind { contact_id, .. } => Some(contact_id.clone()),
            HubMsg::Typing { contact_id, from_visitor: false, .. } => Some(contact_id.clone()),
            HubMsg::Typing { .. } | HubMsg::Summary(_) | HubMsg::Alert { .. } | HubMsg::Resync => None,
        };
        if matches!(&*msg, HubMsg::Resync) {
            for conns in inner.visitors.values_mut() {
                conns.retain(|_, mailbox| mailbox.offer(&msg));
            }
        }
        if let Some(contact) = contact
            && let Some(conns) = inner.visitors.get_mut(&contact)
        {
            conns.retain(|_, mailbox| mailbox.offer(&msg));
        }
        let to_agents = !matches!(&*msg, HubMsg::Typing { from_visitor: false, .. });
        if to_agents {
            inner.agents.retain(|_, mailbox| mailbox.offer(&msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{EventKind, Party};

    fn read_event(contact: &str, seq: u64) -> HubMsg {
        HubMsg::Event {
            conversation_id: "c".into(),
            contact_id: contact.into(),
            event: Event { seq, at: 0, kind: EventKind::Read { by: Party::Agent, up_to_seq: 0 } },
        }
    }

    #[test]
    fn events_reach_the_contact_and_agents_but_not_other_contacts() {
        let hub = Hub::new(8);
        let (_a, mut visitor_a) = hub.join_visitor("a");
        let (_b, mut visitor_b) = hub.join_visitor("b");
        let (_g, mut agent) = hub.join_agent();
        hub.publish(read_event("a", 1));
        assert!(matches!(visitor_a.try_recv(), Ok(Some(_))));
        assert!(matches!(visitor_b.try_recv(), Ok(None)));
        assert!(matches!(agent.try_recv(), Ok(Some(_))));
    }

    fn summary(id: &str, last_seq: u64) -> HubMsg {
        let row = serde_json::json!({
            "id": id, "site_key": "s", "site_name": "S", "visitor_name": "V", "status": "open",
            "last_activity_at": 0, "unread": 0, "last_seq": last_seq,
        });
        HubMsg::Summary(serde_json::from_value(row).expect("a summary"))
    }

    fn event_in(conversation: &str, contact: &str, seq: u64) -> HubMsg {
        HubMsg::Event {
            conversation_id: conversation.into(),
            contact_id: contact.into(),
            event: Event { seq, at: 0, kind: EventKind::Read { by: Party::Agent, up_to_seq: 0 } },
        }
    }

    #[test]
    fn a_visitor_mailbox_with_too_many_distinct_pending_messages_closes_instead_of_blocking() {
        let hub = Hub::new(2);
        let (_reg, mut rx) = hub.join_visitor("a");
        hub.publish(event_in("c1", "a", 1));
        hub.publish(event_in("c2", "a", 1));
        hub.publish(event_in("c3", "a", 1));
        // The third distinct message closed the mailbox: the receiver sees the end, the socket task then closes.
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_agent_mailbox_holds_every_changed_conversation_however_small_the_queue() {
        const CONVERSATIONS: u64 = 10_000;
        let hub = Hub::new(2);
        let (_reg, mut rx) = hub.join_agent();
        // Every conversation changes twice before the agent reads anything (it was busy for a moment).
        for round in 1..=2 {
            for c in 0..CONVERSATIONS {
                hub.publish(event_in(&format!("c{c}"), &format!("v{c}"), round));
                hub.publish(summary(&format!("c{c}"), round));
            }
        }
        let (mut events, mut summaries) = (0, 0);
        while let Some(msg) = rx.try_recv().expect("a busy agent is not dropped") {
            match &*msg {
                HubMsg::Event { event, .. } if event.seq == 2 => events += 1,
                HubMsg::Summary(s) if s.last_seq == 2 => summaries += 1,
                other => panic!("only the latest item of each conversation is pending, got {other:?}"),
            }
        }
        assert_eq!((events, summaries), (CONVERSATIONS, CONVERSATIONS));
    }

    #[test]
    fn pending_summaries_and_events_coalesce_per_conversation_latest_wins() {
        let hub = Hub::new(2);
        let (_reg, mut rx) = hub.join_visitor("a");
        let (_agent, mut agent) = hub.join_agent();
        for seq in 1..=1000 {
            hub.publish(read_event("a", seq));
            hub.publish(summary("c", seq));
        }
        // An event arriving late does not replace a newer pending one.
        hub.publish(read_event("a", 500));
        let next = |rx: &mut HubReceiver| rx.try_recv().expect("open").map(|m| (*m).clone());
        assert!(matches!(next(&mut rx), Some(HubMsg::Event { event, .. }) if event.seq == 1000));
        assert!(next(&mut rx).is_none());
        assert!(matches!(next(&mut agent), Some(HubMsg::Event { event, .. }) if event.seq == 1000));
        assert!(matches!(next(&mut agent), Some(HubMsg::Summary(s)) if s.last_seq == 1000));
        assert!(next(&mut agent).is_none());
    }

    /// Rows of one commit group reach the hub in any order (each caller publishes its own as its task wakes): an
    /// older row neither replaces a newer pending one nor follows it once it was taken.
    #[test]
    fn an_older_inbox_row_never_replaces_or_follows_a_newer_one() {
        let hub = Hub::new(4);
        let (_g, mut agent) = hub.join_agent();
        let next = |rx: &mut HubReceiver| match rx.try_recv().expect("open").as_deref() {
            Some(HubMsg::Summary(s)) => Some((s.id.clone(), s.last_seq)),
            Some(other) => panic!("only rows were published, got {other:?}"),
            None => None,
        };
        hub.publish(summary("c", 7));
        hub.publish(summary("c", 6));
        assert_eq!(next(&mut agent), Some(("c".into(), 7)), "the older row replaced the newer pending one");
        assert_eq!(next(&mut agent), None);
        hub.publish(summary("c", 5));
        assert_eq!(next(&mut agent), None, "an older row followed the newer one");
        // The same seq (a change outside the log, e.g. presence) and later ones go out; other conversations too.
        hub.publish(summary("c", 7));
        assert_eq!(next(&mut agent), Some(("c".into(), 7)));
        hub.publish(summary("d", 1));
        hub.publish(summary("c", 8));
        assert_eq!(next(&mut agent), Some(("d".into(), 1)));
        assert_eq!(next(&mut agent), Some(("c".into(), 8)));
        assert_eq!(next(&mut agent), None);
    }

    /// The hub remembers a conversation's last row for at least [`SUMMARY_MEMORY`] and forgets it after twice that,
    /// so what it keeps is bounded by the conversations that changed lately.
    #[test]
    fn the_newest_row_per_conversation_is_remembered_for_a_while_then_forgotten() {
        let mut seqs = SummarySeqs::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(seqs.admit("c", 5, t0));
        assert!(!seqs.admit("c", 4, at(59)));
        assert!(seqs.admit("x", 1, at(61)), "another conversation");
        assert!(!seqs.admit("c", 4, at(62)), "forgotten right after the first rotation");
        assert!(seqs.admit("y", 1, at(122)));
        assert_eq!(seqs.current.len() + seqs.previous.len(), 2, "c is forgotten, x and y are kept");
        assert!(seqs.admit("c", 4, at(123)), "an old entry is gone");
        assert!(seqs.admit("z", 1, at(400)));
        assert_eq!(seqs.current.len() + seqs.previous.len(), 1, "a long pause forgets everything before it");
    }

    #[test]
    fn a_nudge_from_another_node_coalesces_with_events_by_seq_and_a_resync_reaches_everyone() {
        let hub = Hub::new(4);
        let (_v, mut visitor) = hub.join_visitor("a");
        let (_w, mut other) = hub.join_visitor("b");
        let (_g, mut agent) = hub.join_agent();
        hub.publish(read_event("a", 3));
        hub.publish(HubMsg::Behind { conversation_id: "c".into(), contact_id: "a".into(), seq: 9 });
        // A late local event does not replace the further-reaching nudge.
        hub.publish(read_event("a", 5));
        let next = |rx: &mut HubReceiver| rx.try_recv().expect("open").map(|m| (*m).clone());
        assert!(matches!(next(&mut visitor), Some(HubMsg::Behind { seq: 9, .. })));
        assert!(next(&mut visitor).is_none());
        assert!(matches!(next(&mut agent), Some(HubMsg::Behind { seq: 9, .. })));
        assert!(next(&mut other).is_none());
        hub.publish(HubMsg::Resync);
        for rx in [&mut visitor, &mut other, &mut agent] {
            assert!(matches!(next(rx), Some(HubMsg::Resync)));
        }
        assert_eq!(hub.local_contacts().len(), 2);
    }

    #[test]
    fn dropping_the_registration_unregisters() {
        let hub = Hub::new(4);
        let (reg, _rx) = hub.join_visitor("a");
        assert!(hub.visitor_online("a"));
        drop(reg);
        assert!(!hub.visitor_online("a"));
    }

    #[test]
    fn visitor_typing_goes_to_agents_only_and_agent_typing_to_the_visitor_only() {
        let hub = Hub::new(4);
        let (_v, mut visitor) = hub.join_visitor("a");
        let (_g, mut agent) = hub.join_agent();
        let typing = |from_visitor| HubMsg::Typing {
            conversation_id: "c".into(),
            contact_id: "a".into(),
            from_visitor,
            typing: true,
            name: None,
        };
        hub.publish(typing(true));
        assert!(matches!(visitor.try_recv(), Ok(None)));
        assert!(matches!(agent.try_recv(), Ok(Some(_))));
        hub.publish(typing(false));
        assert!(matches!(visitor.try_recv(), Ok(Some(_))));
        assert!(matches!(agent.try_recv(), Ok(None)));
    }
}
