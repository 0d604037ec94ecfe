//! Several nodes on one database: this node's side of the bus (see [`crate::store::bus`]) — sending nudges after
//! commits, turning other nodes' nudges into hub messages, catching up after the listener reconnects — and presence
//! across nodes (this node's lease and presence rows, and reaping nodes that died).
//!
//! On an engine without a bus (SQLite: one node) every method here is a no-op and fan-out stays in process.
//!
//! Delivery is at least "eventually, by seq", never "exactly once by notification": a nudge says only how far a
//! conversation's log reaches, and each socket's `ws::Relay` reads what it has not sent from the log. So this node
//! skips its own nudges (its hub got the events already), a duplicate costs nothing, and after the listener lost its
//! connection every socket reads its logs after its last seq ([`HubMsg::Resync`]) — nothing missed meanwhile is lost.
//!
//! Nudges are sent *after* the commit, from a queue drained by one task in batches (one round trip for many), not
//! inside the committing transaction: PostgreSQL serializes the commits of all transactions that notify on one
//! global lock, and a message transaction would hold it across its WAL flush. A node that dies between a commit and
//! its nudge leaves the far sockets one event short until that conversation's next event (or their next
//! reconnect), which the relay then fills.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::config::ClusterSettings;
use crate::hub::{Hub, HubMsg};
use crate::meters::Meters;
use crate::services::Conversations;
use crate::store::bus::{Bus, Notice, Nudge};
use crate::supervisor::WorkerContext;

/// Most nudges waiting to be sent; past this the oldest are dropped (and counted): other nodes then see those
/// changes with the conversation's next event.
const MAX_OUTGOING: usize = 100_000;
/// Most nudges sent in one statement.
const BATCH: usize = 1_000;
/// First and longest wait before subscribing again after the listener lost its connection.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// This node's membership of the group sharing the database. Cheap to clone.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    bus: Option<Arc<dyn Bus>>,
    hub: Hub,
    clock: Clock,
    meters: Arc<Meters>,
    settings: ClusterSettings,
    /// Encoded nudges waiting for the sender.
    outgoing: Mutex<Vec<String>>,
    outgoing_wake: Notify,
    /// Held while a batch is sent, so a final flush waits for the one in flight.
    sending: tokio::sync::Mutex<()>,
    /// Serializes this node's presence writes, so a join and a leave of one contact cannot cross.
    presence: tokio::sync::Mutex<()>,
    /// Conversations whose inbox row another node changed, to load once (many nudges coalesce into one load).
    summaries: Mutex<HashSet<String>>,
    summaries_wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert, push or take: a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Nodes {
    /// This node (a fresh id per process) on `bus` (`None`: a single node).
    pub fn new(
        bus: Option<Arc<dyn Bus>>,
        hub: Hub,
        clock: Clock,
        meters: Arc<Meters>,
        settings: ClusterSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                node_id: crate::store::new_id(),
                bus,
                hub,
                clock,
                meters,
                settings,
                outgoing: Mutex::default(),
                outgoing_wake: Notify::new(),
                sending: tokio::sync::Mutex::new(()),
                presence: tokio::sync::Mutex::new(()),
                summaries: Mutex::default(),
                summaries_wake: Notify::new(),
            }),
        }
    }

    /// A single node: no bus.
    pub fn single(hub: Hub, clock: Clock, meters: Arc<Meters>) -> Self {
        Self::new(None, hub, clock, meters, ClusterSettings::default())
    }

    /// This node's id (in `nodes`, `node_presence` and its listener's `application_name`, `parley-bus <id>`).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Whether other nodes may share the database.
    pub fn shared(&self) -> bool {
        self.inner.bus.is_some()
    }

    /// Queues a nudge for the other nodes (only after the change it announces has committed).
    pub fn announce(&self, nudge: Nudge) {
        if self.inner.bus.is_none() {
            return;
        }
        let payload = Notice { origin: self.inner.node_id.clone(), nudge }.encode();
        let dropped = {
            let mut outgoing = lock(&self.inner.outgoing);
            outgoing.push(payload);
            let over = outgoing.len().saturating_sub(MAX_OUTGOING);
            outgoing.drain(..over);
            over
        };
        if dropped > 0 {
            tracing::warn!(dropped, "the bus cannot keep up; dropping the oldest nudges");
            self.inner.meters.bus_publish_failed(dropped);
        }
        self.inner.outgoing_wake.notify_one();
    }

    /// Records that `contact_id` has a visitor socket here (call after it joined the hub).
    pub async fn visitor_joined(&self, contact_id: &str) {
        let Some(bus) = &self.inner.bus else { return };
        let _serial = self.inner.presence.lock().await;
        if let Err(e) = bus.presence_join(&self.inner.node_id, contact_id).await {
            // The next heartbeat writes it.
            tracing::warn!(error = ?e, "presence not recorded");
        }
    }

    /// Records that a visitor socket of `contact_id` closed (call after it left the hub): the row goes once the
    /// contact has no socket left here.
    pub async fn visitor_left(&self, contact_id: &str) {
        let Some(bus) = &self.inner.bus else { return };
        let _serial = self.inner.presence.lock().await;
        if self.inner.hub.visitor_online(contact_id) {
            return;
        }
        if let Err(e) = bus.presence_leave(&self.inner.node_id, contact_id).await {
            // The next heartbeat removes it.
            tracing::warn!(error = ?e, "presence not cleared");
        }
    }

    /// Which of `contacts` have a visitor socket on another live node (none when the database cannot say: the
    /// inbox shows them offline until the next change).
    pub async fn online_elsewhere(&self, contacts: &[String]) -> HashSet<String> {
        let Some(bus) = &self.inner.bus else { return HashSet::new() };
        match bus.online_elsewhere(&self.inner.node_id, contacts, self.inner.clock.now_ms()).await {
            Ok(online) => online.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = ?e, "cannot read presence on other nodes");
                HashSet::new()
            }
        }
    }

    /// Handles one payload from the bus: another node's nudge becomes a hub message here.
    fn receive(&self, payload: &str) {
        let Some(notice) = Notice::decode(payload) else {
            tracing::warn!(bytes = payload.len(), "ignoring a bus payload that is not ours");
            return;
        };
        if notice.origin == self.inner.node_id {
            return;
        }
        match notice.nudge {
            Nudge::Event { conversation_id, contact_id, seq, at } => {
                let lag = u64::try_from(self.inner.clock.now_ms().saturating_sub(at)).unwrap_or(0);
                self.inner.meters.bus_received(Some(Duration::from_millis(lag)));
                self.inner.hub.publish(HubMsg::Behind { conversation_id, contact_id, seq });
            }
            Nudge::Summary { conversation_id } => {
                self.inner.meters.bus_received(None);
                lock(&self.inner.summaries).insert(conversation_id);
                self.inner.summaries_wake.notify_one();
            }
            Nudge::Typing { conversation_id, contact_id, from_visitor, typing, name } => {
                self.inner.meters.bus_received(None);
                self.inner.hub.publish(HubMsg::Typing { conversation_id, contact_id, from_visitor, typing, name });
            }
            Nudge::Resync => {
                self.inner.meters.bus_received(None);
                self.inner.hub.publish(HubMsg::Resync);
            }
        }
    }

    /// Sends what is queued, a batch per statement. A batch that fails is dropped (and counted): the other nodes
    /// lost their listeners too if the database is gone, and catch up when they subscribe again.
    async fn flush(&self, bus: &dyn Bus) {
        let _sending = self.inner.sending.lock().await;
        let queued = std::mem::take(&mut *lock(&self.inner.outgoing));
        for batch in queued.chunks(BATCH) {
            match bus.publish(batch).await {
                Ok(()) => self.inner.meters.bus_sent(batch.len()),
                Err(e) => {
                    tracing::warn!(error = ?e, nudges = batch.len(), "nudges to other nodes not sent");
                    self.inner.meters.bus_publish_failed(batch.len());
                }
            }
        }
    }

    /// Sends whatever is queued now (the sender does this by itself; for a final flush).
    pub async fn send_queued(&self) {
        if let Some(bus) = &self.inner.bus {
            self.flush(&**bus).await;
        }
    }

    /// The sender: drains the queue whenever something is announced, until the stop signal (the final flush is
    /// [`Nodes::stop`]'s).
    pub async fn run_sender(self, ctx: WorkerContext) -> anyhow::Result<()> {
        let Some(bus) = self.inner.bus.clone() else { return wait_stop(ctx.stop).await };
        let mut stop = ctx.stop;
        loop {
            tokio::select! {
                () = self.inner.outgoing_wake.notified() => self.flush(&*bus).await,
                () = stopped(&mut stop) => return Ok(()),
            }
        }
    }

    /// The listener: subscribes (again, with backoff, whenever the connection is lost), tells every socket to catch
    /// up from the log after each subscription, and hands nudges to the hub. Its failures never end the node.
    pub async fn run_listener(self, ctx: WorkerContext) -> anyhow::Result<()> {
        let Some(bus) = self.inner.bus.clone() else { return wait_stop(ctx.stop).await };
        let mut stop = ctx.stop;
        let mut delay = RECONNECT_FIRST;
        let mut subscribed_before = false;
        loop {
            let listening = tokio::select! {
                listening = bus.listen(&self.inner.node_id) => listening,
                () = stopped(&mut stop) => return Ok(()),
            };
            let mut listener = match listening {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = ?e, retry_in_ms = delay.as_millis(), "cannot subscribe to the bus");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(&mut stop) => return Ok(()),
                    }
                    delay = delay.saturating_mul(2).min(RECONNECT_MAX);
                    continue;
                }
            };
            delay = RECONNECT_FIRST;
            ctx.health.set("connected", 1);
            if subscribed_before {
                tracing::info!("bus listener subscribed again; catching up from the log");
                self.inner.meters.bus_reconnected();
                ctx.health.add("reconnects", 1);
            }
            subscribed_before = true;
            // Subscribed first, then caught up: whatever committed before now is read from the log, whatever
            // commits after is nudged.
            self.inner.hub.publish(HubMsg::Resync);
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(payload) => self.receive(&payload),
                        Err(e) => {
                            tracing::warn!(error = ?e, "the bus listener lost its connection");
                            ctx.health.set("connected", 0);
                            break;
                        }
                    },
                    () = stopped(&mut stop) => return Ok(()),
                }
            }
        }
    }

    /// Loads the inbox rows other nodes changed and hands them to this node's agents (none here: nothing loaded).
    pub async fn run_summaries(self, conversations: Conversations, ctx: WorkerContext) -> anyhow::Result<()> {
        if self.inner.bus.is_none() {
            return wait_stop(ctx.stop).await;
        }
        let mut stop = ctx.stop;
        loop {
            tokio::select! {
                () = self.inner.summaries_wake.notified() => {}
                () = stopped(&mut stop) => return Ok(()),
            }
            let wanted = std::mem::take(&mut *lock(&self.inner.summaries));
            if self.inner.hub.connection_counts().1 == 0 {
                continue;
            }
            for conversation_id in wanted {
                if let Err(e) = conversations.publish_summary_here(&conversation_id).await {
                    tracing::warn!(error = ?e, "cannot load an inbox row another node changed");
                }
            }
        }
    }

    /// Renews this node's lease, repairs its presence rows, and reaps nodes whose lease ran out (their visitors
    /// show offline), every `cluster.heartbeat_ms`. A failed beat is logged and the next one tries again.
    pub async fn run_heartbeat(self, conversations: Conversations, ctx: WorkerContext) -> anyhow::Result<()> {
        let Some(bus) = self.inner.bus.clone() else { return wait_stop(ctx.stop).await };
        let mut stop = ctx.stop;
        let mut tick = tokio::time::interval(Duration::from_millis(self.inner.settings.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopped(&mut stop) => return Ok(()),
            }
            if let Err(e) = self.beat(&*bus).await {
                tracing::warn!(error = ?e, "node heartbeat failed");
                continue;
            }
            ctx.health.add("heartbeats", 1);
            match bus.reap_dead_nodes(&self.inner.node_id, self.inner.clock.now_ms()).await {
                Ok(reaped) if reaped.nodes > 0 => {
                    let contacts: HashSet<String> = reaped.contacts.into_iter().collect();
                    tracing::info!(
                        nodes = reaped.nodes,
                        visitors = contacts.len(),
                        "a node's lease ran out; its visitors are offline and every node re-reads its logs"
                    );
                    // What the dead node committed but never announced is in the logs: every node catches up.
                    self.announce(Nudge::Resync);
                    self.inner.hub.publish(HubMsg::Resync);
                    conversations.contacts_went_offline(contacts).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "cannot reap dead nodes"),
            }
        }
    }

    /// One heartbeat: the lease, and the presence rows made to match the hub.
    pub async fn beat(&self, bus: &dyn Bus) -> crate::store::StoreResult<()> {
        let _serial = self.inner.presence.lock().await;
        let alive_until = self.inner.clock.now_ms().saturating_add(self.inner.settings.node_lease_ms as i64);
        bus.heartbeat(&self.inner.node_id, alive_until, &self.inner.hub.local_contacts()).await
    }

    /// Joins the group before serving (so this node's first visitors count as online at once).
    pub async fn start(&self) {
        if let Some(bus) = &self.inner.bus
            && let Err(e) = self.beat(&**bus).await
        {
            tracing::warn!(error = ?e, "first node heartbeat failed; the heartbeat worker retries");
        }
    }

    /// A clean stop, once sockets and workers are done: this node's rows are removed, agents everywhere are told
    /// that its visitors went offline (whether or not each socket's own goodbye got out before the sender stopped),
    /// and the last nudges go out.
    pub async fn stop(&self, conversations: &Conversations) {
        let Some(bus) = self.inner.bus.clone() else { return };
        match bus.leave(&self.inner.node_id).await {
            Ok(contacts) => {
                let contacts: HashSet<String> = contacts.into_iter().collect();
                conversations.contacts_went_offline(contacts).await;
            }
            Err(e) => tracing::warn!(error = ?e, "cannot remove this node's rows; its lease runs out by itself"),
        }
        self.flush(&*bus).await;
    }
}

async fn wait_stop(mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    stopped(&mut stop).await;
    Ok(())
}

/// Resolves once the stop signal is `true` (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
