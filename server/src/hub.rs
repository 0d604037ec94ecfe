//! In-process fan-out of live conversation traffic to connected sockets.
//!
//! The hub never holds a lock across an `.await` and never blocks on a slow socket: each connection has a bounded
//! queue, and a connection whose queue is full is dropped (its socket closes and the client resumes from its last
//! sequence number, so nothing is lost). Registrations are removed by a `Drop` guard, so no early return or panic
//! in a connection task can leave a dead entry behind. Delivery order and completeness are not the hub's job:
//! connections fill gaps from the store (see `ws::Relay`), so a missed or reordered hub message costs a query, not
//! a message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::Event;
use protocol::console::ConversationSummary;
use tokio::sync::mpsc;

/// What travels through the hub.
#[derive(Clone, Debug)]
pub enum HubMsg {
    /// A committed conversation event.
    Event { conversation_id: String, contact_id: String, event: Event },
    /// Someone started or stopped typing.
    Typing { conversation_id: String, contact_id: String, from_visitor: bool, typing: bool, name: Option<String> },
    /// An inbox row changed (for agents).
    Summary(ConversationSummary),
    /// An operational alert for agents (`message: None` clears it).
    Alert { key: String, message: Option<String> },
}

pub type HubReceiver = mpsc::Receiver<Arc<HubMsg>>;

#[derive(Default)]
struct Inner {
    /// contact id → visitor connections of that contact.
    visitors: HashMap<String, HashMap<u64, mpsc::Sender<Arc<HubMsg>>>>,
    /// Every agent connection.
    agents: HashMap<u64, mpsc::Sender<Arc<HubMsg>>>,
    /// Alerts in force, by key.
    alerts: HashMap<String, String>,
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
    /// A hub whose connections may queue up to `queue` messages.
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
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().visitors.entry(contact_id.to_string()).or_default().insert(id, tx);
        let registration = Registration { hub: self.clone(), id, contact_id: Some(contact_id.to_string()) };
        (registration, rx)
    }

    /// Registers an agent connection.
    pub fn join_agent(&self) -> (Registration, HubReceiver) {
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().agents.insert(id, tx);
        (Registration { hub: self.clone(), id, contact_id: None }, rx)
    }

    /// Number of live (registered) connections, visitors and agents.
    pub fn connection_count(&self) -> usize {
        let inner = self.lock();
        inner.visitors.values().map(HashMap::len).sum::<usize>() + inner.agents.len()
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
        let contact = match &*msg {
            HubMsg::Event { contact_id, .. } => Some(contact_id.clone()),
            HubMsg::Typing { contact_id, from_visitor: false, .. } => Some(contact_id.clone()),
            HubMsg::Typing { .. } | HubMsg::Summary(_) | HubMsg::Alert { .. } => None,
        };
        if let Some(contact) = contact
            && let Some(conns) = inner.visitors.get_mut(&contact)
        {
            conns.retain(|_, tx| deliver(tx, &msg));
        }
        let to_agents = !matches!(&*msg, HubMsg::Typing { from_visitor: false, .. });
        if to_agents {
            inner.agents.retain(|_, tx| deliver(tx, &msg));
        }
    }
}

/// Queues without waiting; `false` drops the connection (full queue, or the socket task is gone).
fn deliver(tx: &mpsc::Sender<Arc<HubMsg>>, msg: &Arc<HubMsg>) -> bool {
    match tx.try_send(Arc::clone(msg)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("dropping a connection that cannot keep up; it will resume from its last seq");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
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
        assert!(visitor_a.try_recv().is_ok());
        assert!(visitor_b.try_recv().is_err());
        assert!(agent.try_recv().is_ok());
    }

    #[test]
    fn a_full_queue_drops_the_connection_instead_of_blocking() {
        let hub = Hub::new(1);
        let (_reg, mut rx) = hub.join_visitor("a");
        hub.publish(read_event("a", 1));
        hub.publish(read_event("a", 2));
        assert!(rx.try_recv().is_ok());
        // The second message closed the channel: the receiver sees the end, the socket task then closes the socket.
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
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
        assert!(visitor.try_recv().is_err());
        assert!(agent.try_recv().is_ok());
        hub.publish(typing(false));
        assert!(visitor.try_recv().is_ok());
        assert!(agent.try_recv().is_err());
    }
}
