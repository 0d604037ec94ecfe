//! Applying webhook deliveries: `webhook_deliveries` (and this node's fallback spool) → conversation changes.
//!
//! The webhook handler stores each delivery raw in `webhook_deliveries` before acking it, or in the node-local
//! spool when the database could not take it. One worker moves whatever is spooled into the table on every pass,
//! then gathers the events of every waiting delivery (from every `entry[]`, `messaging[]` and `standby[]`) and
//! applies them in Messenger timestamp order per customer, even across deliveries that arrive apart: each
//! customer's events wait in a reorder window (`messenger.reorder_window_ms`, see [`super::reorder`]) so an
//! earlier event whose webhook Meta delivers later still goes first; a slow or reordered customer holds up no one
//! else. An event later than the window is still applied (after the ones already stored), logged and counted
//! (`late_events` in the worker's health entry). A delivery is marked processed only once every one of its events
//! is applied, so a crash during the window loses nothing: the next start reads the delivery again and holds its
//! events again.
//!
//! Every application is idempotent: messages by `mid`, link offers by an applied-key recorded in the same
//! transaction as the offer, acceptances by the link row itself, deliveries and reads by watermark, so a
//! redelivered payload changes nothing. A delivery that fails to apply (an error or even a panic) is retried with
//! growing delays and quarantined after `messenger.max_delivery_attempts` tries, so it cannot block the ones
//! behind it; `parley messenger quarantine` lists and replays quarantined deliveries.
//!
//! "Continue on Messenger" needs the Messenger side's consent: a ref or short code only *offers* the link to the
//! person who presented it, and the Page asks them in Messenger ("Yes, continue here" / "No"). Nothing from
//! Messenger reaches the web conversation before "Yes"; "No" or no answer within the link lifetime binds nothing.
//! Attachments are queued for [`super::media`] and downloaded off this path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use protocol::{Attachment, Channel};
use tokio::time::Instant;

use super::channel::Messenger;
use super::graph_types::{Envelope, Messaging};
use super::pages::Page;
use super::reorder::{Due, HoldBack, Key};
use super::{link, media};
use crate::config::MessengerSettings;
use crate::sentences;
use crate::services::{PostInput, Poster, ServiceError};
use crate::store::models::Contact;
use crate::store::{IntakeLookup, OfferOutcome};
use crate::supervisor::WorkerHealth;

/// The app id Meta uses for messages sent from the Page's own inbox (Business Suite).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

pub use crate::sentences::CONSENT_QUESTION;

/// New deliveries read from the database per round.
const BATCH: usize = 200;

/// The most released events applied at once (each of a different customer), so their writes share a commit.
const WAVE: usize = 32;

/// Every this many rounds, and in the first round of a pass (with more than [`BATCH`] deliveries held, only at
/// least [`FULL_READ_AFTER`] after the last full read: a full read reads again every delivery held), the read covers
/// every waiting delivery again (the rounds between read only the deliveries after the last one read). On
/// PostgreSQL ids can commit out of order across nodes, so a cursor read may pass over a delivery committed late: a
/// full read picks it up (and a delivery replayed from quarantine).
const FULL_READ_EVERY: usize = 10;

/// See [`FULL_READ_EVERY`].
const FULL_READ_AFTER: Duration = Duration::from_secs(1);

/// The most deliveries read and not yet applied that the intake holds: a pass reads no more once it holds this
/// many. With a backlog (deliveries arriving faster than they apply) it would otherwise read all of it into memory
/// and read it again in every full read (the cost of each growing with the backlog, on the thread that answers
/// webhooks). Above what applies within a reorder window at full speed (about 4,000 a second here).
const MAX_OPEN: usize = 5_000;

/// Aborts a task when dropped: the download queue lives exactly as long as the intake that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before the next pass after `failures` failed ones in a row: 250 ms, doubling, at most 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << failures.saturating_sub(1).min(7))).min(Duration::from_secs(30))
}

/// Runs forever: waits for spooled deliveries, stores them, and applies their events as they become due. Keeps
/// `late_events` (applied after the reorder window), `held_events` (in the window now), `deliveries_read`
/// (delivery rows read from the database), `event_reads` (store reads made for one event at a time) and `passes`
/// (reported after each pass, the others with it) in its health entry.
pub async fn run(messenger: Arc<Messenger>, health: WorkerHealth) {
    let _media = AbortOnDrop(tokio::spawn(media::run(Arc::clone(&messenger))));
    let mut intake = Intake::new(Duration::from_millis(messenger.settings.reorder_window_ms));
    let mut failures = 0u32;
    loop {
        let result = intake.pass(&messenger, Instant::now()).await;
        // Added, not set: the count survives a restart of the worker.
        health.add("late_events", std::mem::take(&mut intake.late_events));
        health.add("deliveries_read", std::mem::take(&mut intake.deliveries_read));
        health.add("event_reads", messenger.event_reads.swap(0, Ordering::Relaxed));
        health.add("passes", 1);
        health.set("held_events", u64::try_from(intake.held.len()).unwrap_or(u64::MAX));
        let next_ripe = match result {
            Ok(next_ripe) => next_ripe,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = ?e, "webhook intake failed; retrying");
                tokio::time::sleep(retry_delay(failures)).await;
                continue;
            }
        };
        failures = 0;
        let idle = Instant::now() + Duration::from_secs(30);
        let wake_at = next_ripe.map_or(idle, |at| at.min(idle));
        tokio::select! {
            _ = messenger.intake_wake.notified() => {
                // Let a burst arrive, then store and hold it together.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

/// Moves spooled files into the database and applies every unprocessed delivery now, sorted by timestamp among
/// what is waiting (no reorder window): for tests and one-off runs.
pub async fn drain(messenger: &Messenger) -> anyhow::Result<()> {
    Intake::new(Duration::ZERO).pass(messenger, Instant::now()).await.map(|_| ())
}

/// One webhook event and the delivery it came in.
struct Event {
    delivery: i64,
    page: String,
    /// The customer (PSID) it concerns, also when it waits in no thread (a receipt, our own echo): no wave holds
    /// two events of one customer (see [`waves`]).
    customer: Option<String>,
    messaging: Messaging,
}

/// A delivery whose events are not all applied yet.
struct Open {
    left: usize,
    /// Why an event of it could not apply (the first reason).
    error: Option<String>,
}

/// The intake's memory between passes. All of it is also in `webhook_deliveries` (rows not yet processed), so
/// losing it (a crash, a restarted worker) loses nothing.
struct Intake {
    held: HoldBack<Event>,
    open: BTreeMap<i64, Open>,
    /// Events applied after the reorder window (a message not stored before, so not a mere redelivery) since the
    /// count was last reported.
    late_events: u64,
    /// Delivery rows read from the database since the count was last reported.
    deliveries_read: u64,
    /// The Pages looked up this round (by page id), so a round of events for one Page reads it once; emptied at
    /// the start of every round, so a Page connected or removed meanwhile counts from the next round.
    pages: HashMap<String, Option<Page>>,
    /// The last delivery id read, across passes.
    cursor: Option<i64>,
    /// When the last full read ran, and the rounds since.
    full_read: Option<(Instant, usize)>,
}

impl Intake {
    fn new(window: Duration) -> Self {
        Self {
            held: HoldBack::new(window),
            open: BTreeMap::new(),
            late_events: 0,
            deliveries_read: 0,
            pages: HashMap::new(),
            cursor: None,
            full_read: None,
        }
    }

    /// Whether this round (the first of its pass: `first`) reads every waiting delivery (see [`FULL_READ_EVERY`]).
    fn full_read_due(&self, now: Instant, first: bool) -> bool {
        match self.full_read {
            None => true,
            Some((at, rounds)) => {
                rounds + 1 >= FULL_READ_EVERY
                    || (first && (self.open.len() <= BATCH || now.duration_since(at) >= FULL_READ_AFTER))
            }
        }
    }

    /// One pass at `now`: stores spooled deliveries, holds the events of new ones, applies those that are due and
    /// marks finished deliveries processed. Returns when the next held event is due.
    async fn pass(&mut self, messenger: &Messenger, now: Instant) -> anyhow::Result<Option<Instant>> {
        let store = messenger.conversations.messenger_rows();
        // A spool that cannot be read (its disk gone bad) must not stop what is in the database from applying.
        let spooled = messenger.spool.pending().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the webhook spool; applying what is in the database");
            Vec::new()
        });
        for path in spooled {
            let body = tokio::fs::read(&path).await?;
            store.insert_webhook_delivery(&body).await?;
            tokio::fs::remove_file(&path).await?;
        }
        // A full read now and then (see [`FULL_READ_EVERY`]); the other reads only those after the last one read, so
        // a backlog is not read again for every batch of new deliveries. No more reads once [`MAX_OPEN`] are held.
        for round in 1.. {
            self.settle(messenger).await?;
            let mut fresh = 0;
            let capped = self.open.len() >= MAX_OPEN;
            if !capped {
                let full = self.full_read_due(now, round == 1);
                let last;
                (fresh, last) = self.load(messenger, now, if full { None } else { self.cursor }).await?;
                self.cursor = last.max(self.cursor);
                self.full_read = match self.full_read {
                    Some((at, rounds)) if !full => Some((at, rounds + 1)),
                    _ => Some((now, 0)),
                };
            }
            self.pages.clear();
            let due = self.held.take_due(now);
            self.apply_released(messenger, due, now).await?;
            self.settle(messenger).await?;
            // A round that read nothing because [`MAX_OPEN`] were held, and applied them all: the rest of the backlog
            // is read now (no webhook may come to wake the intake, and nothing held is left to wake it). With events
            // still held, the pass at their time reads on.
            let room_again = capped && self.open.len() < MAX_OPEN && self.held.next_ripe().is_none();
            if (fresh < BATCH && !room_again) || self.open.len() >= MAX_OPEN {
                break;
            }
        }
        Ok(self.held.next_ripe())
    }

    /// Reads the waiting deliveries (only those after `after`, when given); holds the events of those not seen
    /// before and returns how many those were, and the last id read. After a full read, deliveries no longer
    /// waiting (quarantined) are forgotten.
    async fn load(
        &mut self,
        messenger: &Messenger,
        now: Instant,
        after: Option<i64>,
    ) -> anyhow::Result<(usize, Option<i64>)> {
        let rows = messenger.conversations.messenger_rows();
        let limit = if after.is_some() { BATCH } else { self.open.len() + BATCH };
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let deliveries = match after {
            Some(after) => rows.unprocessed_webhook_deliveries_after(after, limit_sql).await?,
            None => rows.unprocessed_webhook_deliveries(limit_sql).await?,
        };
        let last = deliveries.last().map(|(id, _)| *id);
        self.deliveries_read += u64::try_from(deliveries.len()).unwrap_or(u64::MAX);
        if after.is_none() {
            self.forget_gone(&deliveries, limit, last);
        }
        let mut fresh = 0;
        for (id, body) in deliveries {
            if self.open.contains_key(&id) {
                continue;
            }
            fresh += 1;
            self.hold_delivery(messenger, id, &body, now);
        }
        Ok((fresh, last))
    }

    /// Forgets the open deliveries a full read (of at most `limit` rows, the last `last`) no longer returned.
    fn forget_gone(&mut self, deliveries: &[(i64, Vec<u8>)], limit: usize, last: Option<i64>) {
        let waiting: HashSet<i64> = deliveries.iter().map(|(id, _)| *id).collect();
        let complete = deliveries.len() < limit;
        let gone: Vec<i64> = self
            .open
            .keys()
            .copied()
            .filter(|id| !waiting.contains(id) && (complete || last.is_some_and(|last| *id < last)))
            .collect();
        for id in gone {
            self.open.remove(&id);
            self.held.discard(|e| e.delivery == id);
        }
    }

    /// Holds the events of delivery `id`, read for the first time.
    fn hold_delivery(&mut self, messenger: &Messenger, id: i64, body: &[u8], now: Instant) {
        let mut open = Open { left: 0, error: None };
        match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) if envelope.object == "page" => {
                for entry in envelope.entry {
                    for messaging in entry.messaging.into_iter().chain(entry.standby) {
                        let (thread, key) = place(&messenger.settings, &entry.id, &messaging);
                        let customer = customer_of(&messaging);
                        let event = Event { delivery: id, page: entry.id.clone(), customer, messaging };
                        self.held.hold(thread, key, event, now);
                        open.left += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => open.error = Some(format!("unreadable payload: {e}")),
        }
        self.open.insert(id, open);
    }

    /// Applies released events in their order, in waves (see [`waves`]): the events of one wave belong to
    /// different customers and apply at once, so their writes share one commit; each customer's events still apply
    /// one after another in order (receipts and our own echoes too: they wait in no thread, but a wave holds one
    /// event per customer), and an event of no customer applies alone between waves. After a wave with a failure
    /// the failed events and every event after the wave wait for the next pass, in the same order.
    async fn apply_released(
        &mut self,
        messenger: &Messenger,
        due: Vec<Due<Event>>,
        now: Instant,
    ) -> anyhow::Result<()> {
        let threads: Vec<Option<&str>> = due.iter().map(|d| d.item.customer.as_deref()).collect();
        let sizes: Vec<usize> = waves(&threads, WAVE).map(|wave| wave.len()).collect();
        let mut rest = due.into_iter();
        for size in sizes {
            let wave: Vec<Due<Event>> = rest.by_ref().take(size).collect();
            let mut pages = Vec::with_capacity(wave.len());
            let mut lookup = Ok(());
            for due in &wave {
                match self.page(messenger, &due.item.page).await {
                    Ok(page) => pages.push(page),
                    Err(e) => {
                        lookup = Err(e);
                        break;
                    }
                }
            }
            // What the wave's events read (contacts, stored mids, live codes): one trip to the store, right before
            // the wave applies (after the waves before it, whose writes it sees).
            let found = match lookup {
                Ok(()) => wave_lookup(messenger, &wave).await.map_err(ServiceError::from),
                Err(e) => Err(e),
            };
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    self.held.put_back(wave.into_iter().chain(rest).collect(), now);
                    return Err(e.into());
                }
            };
            let attempts = wave.iter().zip(pages).map(|(due, page)| attempt(messenger, page, due, &found));
            let outcomes = futures_util::future::join_all(attempts).await;
            let (mut undone, mut first_error) = (Vec::new(), None);
            for (due, outcome) in wave.into_iter().zip(outcomes) {
                if let Err(e) = self.record(messenger, &due, outcome).await {
                    first_error.get_or_insert(e);
                    undone.push(due);
                }
            }
            if let Some(e) = first_error {
                // Not applied: they and the ones after them wait for the next pass, in the same order.
                self.held.put_back(undone.into_iter().chain(rest).collect(), now);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The Page `page_id` names (`None`: not connected here), read once per round.
    async fn page(&mut self, messenger: &Messenger, page_id: &str) -> Result<Option<Page>, ServiceError> {
        if let Some(found) = self.pages.get(page_id) {
            return Ok(found.clone());
        }
        let found = messenger.page(page_id).await?;
        self.pages.insert(page_id.to_string(), found.clone());
        Ok(found)
    }

    /// Counts one applied event against its delivery. A transient failure (or a panic) is counted as a failed
    /// attempt at the delivery and returned.
    async fn record(&mut self, messenger: &Messenger, due: &Due<Event>, outcome: Attempt) -> anyhow::Result<()> {
        let delivery = &due.item.delivery;
        // A panic is a bug, but it must not take the intake down with it: it counts as a failed attempt.
        let error = match outcome {
            Ok(Ok(late)) => {
                if late {
                    self.late_events += 1;
                    tracing::warn!(
                        delivery,
                        timestamp = due.key.timestamp,
                        "a Messenger message arrived after the reorder window; stored after later ones"
                    );
                }
                None
            }
            // An event that can never apply (e.g. no site to file it under) is recorded and skipped, so it cannot
            // hold up the events behind it.
            Ok(Err(ServiceError::Invalid(why))) => {
                tracing::warn!(reason = why, "a webhook event was not applied");
                Some(why.to_string())
            }
            // Transient failures (database) stop the pass; it is retried. A delivery that keeps failing is
            // quarantined, so the ones behind it go on.
            Ok(Err(e)) => return Err(failed(messenger, *delivery, &e.to_string()).await),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(failed(messenger, *delivery, &format!("panicked: {what}")).await);
            }
        };
        if let Some(open) = self.open.get_mut(delivery) {
            open.left = open.left.saturating_sub(1);
            if open.error.is_none() {
                open.error = error;
            }
        }
        Ok(())
    }

    /// Marks the deliveries whose events are all applied as processed, all in one transaction.
    async fn settle(&mut self, messenger: &Messenger) -> anyhow::Result<()> {
        let done: Vec<(i64, Option<String>)> =
            self.open.iter().filter(|(_, open)| open.left == 0).map(|(id, open)| (*id, open.error.clone())).collect();
        messenger.conversations.messenger_rows().mark_webhooks_processed(&done).await?;
        for (id, _) in done {
            self.open.remove(&id);
        }
        Ok(())
    }
}

/// What applying one event came to: whether it was a late new message, or why not applied, or the panic.
type Attempt = Result<Result<bool, ServiceError>, Box<dyn std::any::Any + Send>>;

/// Applies one released event for `page` (the Page it names, looked up), with what its wave's lookup found.
async fn attempt(messenger: &Messenger, page: Option<Page>, due: &Due<Event>, found: &IntakeLookup) -> Attempt {
    let Event { page: page_id, messaging, .. } = &due.item;
    let work = async {
        let late = due.late && is_new_message(found, messaging);
        apply(messenger, page, page_id, messaging, found).await.map(|()| late)
    };
    AssertUnwindSafe(work).catch_unwind().await
}

/// Reads what the events of a wave need, in one trip to the store ([`crate::store::MessengerStore::intake_lookup`]):
/// each customer's contact, whether each message's mid is stored, and which code-like words of the customers'
/// messages name a live link.
async fn wave_lookup(messenger: &Messenger, wave: &[Due<Event>]) -> crate::store::StoreResult<IntakeLookup> {
    let (mut psids, mut mids, mut codes) = (Vec::new(), Vec::new(), Vec::new());
    for due in wave {
        psids.extend(due.item.customer.clone());
        if let Some(message) = &due.item.messaging.message {
            mids.extend(message.mid.clone());
            if !message.is_echo {
                codes.extend(link::short_code_candidates(message.text.as_deref().unwrap_or_default()));
            }
        }
    }
    codes.sort_unstable();
    codes.dedup();
    messenger.conversations.messenger_rows().intake_lookup(&psids, &mids, &codes).await
}

/// Splits events (given by their threads, in order) into consecutive waves of at most `max`: a wave is either one
/// event of no thread, or events of distinct threads. So no thread has two events in one wave, and events of no
/// thread keep their place between the others.
fn waves<'a>(threads: &'a [Option<&'a str>], max: usize) -> impl Iterator<Item = &'a [Option<&'a str>]> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= threads.len() {
            return None;
        }
        let mut end = start + 1;
        if threads[start].is_some() {
            let mut seen: HashSet<&str> = threads[start].into_iter().collect();
            while end < threads.len() && end - start < max.max(1) {
                match threads[end] {
                    Some(thread) if seen.insert(thread) => end += 1,
                    _ => break,
                }
            }
        }
        let wave = &threads[start..end];
        start = end;
        Some(wave)
    })
}

/// Where an event waits: the customer's thread (their PSID) for what becomes part of their conversation or
/// changes it (messages, consent answers, postbacks, referrals, replies sent from the Page inbox); no thread for
/// what may apply at once (our own echoes, delivery and read receipts). Events of a Page that is not connected wait
/// like the others and are then dropped by [`apply`]. Ordered by Messenger's timestamp, then the `mid`.
fn place(settings: &MessengerSettings, _page: &str, event: &Messaging) -> (Option<String>, Key) {
    let mid = event.message.as_ref().and_then(|m| m.mid.clone());
    let mid = mid.or_else(|| event.postback.as_ref().and_then(|p| p.mid.clone()));
    let key = Key { timestamp: event.timestamp, tie: mid.unwrap_or_default() };
    let party = match &event.message {
        Some(message) if message.is_echo => {
            if message.app_id.as_deref() == Some(settings.app_id.as_str()) {
                None
            } else {
                event.recipient.as_ref()
            }
        }
        Some(_) => event.sender.as_ref(),
        None if event.postback.is_some() || event.referral.is_some() => event.sender.as_ref(),
        None => None,
    };
    (party.map(|p| p.id.clone()).filter(|psid| !psid.is_empty()), key)
}

/// The customer an event concerns: the recipient of an echo (the Page wrote to them), else the sender.
fn customer_of(event: &Messaging) -> Option<String> {
    let echo = event.message.as_ref().is_some_and(|m| m.is_echo);
    let party = if echo { event.recipient.as_ref() } else { event.sender.as_ref() };
    party.map(|p| p.id.clone()).filter(|psid| !psid.is_empty())
}

/// Whether `event` is a message not stored yet (a late redelivery of a stored one is not late, just a duplicate).
fn is_new_message(found: &IntakeLookup, event: &Messaging) -> bool {
    event.message.as_ref().and_then(|m| m.mid.as_deref()).is_some_and(|mid| !found.stored_mids.contains(mid))
}

/// Counts a failed attempt at a delivery (quarantining it at the limit) and returns the error for the caller.
async fn failed(messenger: &Messenger, delivery: i64, why: &str) -> anyhow::Error {
    messenger.conversations.meters().webhook_failed();
    let store = messenger.conversations.messenger_rows();
    match store.webhook_delivery_failed(delivery, why, messenger.settings.max_delivery_attempts).await {
        Ok(true) => tracing::error!(
            delivery,
            reason = why,
            "a webhook delivery kept failing and was quarantined (see `parley messenger quarantine list`)"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = ?e, "a failed attempt was not counted"),
    }
    anyhow::anyhow!("applying webhook delivery {delivery} failed: {why}")
}

/// Applies one event for `page` (the Page `page_id` names, `None` when it is not connected here).
async fn apply(
    messenger: &Messenger,
    page: Option<Page>,
    page_id: &str,
    event: &Messaging,
    found: &IntakeLookup,
) -> Result<(), ServiceError> {
    // Routed by the Page the event is for: its workspace and site. An unknown Page's event is dropped (the raw
    // delivery stays in `webhook_deliveries`); the page id is public, the log carries nothing else of it.
    let Some(page) = page else {
        tracing::info!(page = %page_id, "ignoring an event for a Page that is not connected here");
        return Ok(());
    };
    let page = &page;
    let store = messenger.conversations.messenger_rows();
    let customer = if event.message.as_ref().is_some_and(|m| m.is_echo) { &event.recipient } else { &event.sender };
    // The customer's contact, read with the wave: the steps below that need it take this one.
    let known = customer.as_ref().and_then(|p| found.contacts.get(&p.id)).cloned();
    if let Some(contact) = &known
        && messenger.site_workspace(&contact.site_id).await?.as_deref() != Some(page.workspace_id.as_str())
    {
        tracing::warn!(page = %page_id, "ignoring an event of a customer who belongs to another workspace's Page");
        return Ok(());
    }
    if let Some(message) = &event.message
        && message.is_echo
    {
        let Some(psid) = event.recipient.as_ref().map(|p| p.id.clone()) else { return Ok(()) };
        if psid.is_empty() {
            return Err(ServiceError::Invalid("an echo without a recipient id"));
        }
        return apply_echo(messenger, page, &psid, message, known, found).await;
    }
    let Some(psid) = event.sender.as_ref().map(|p| p.id.clone()) else { return Ok(()) };
    if psid.is_empty() {
        return Err(ServiceError::Invalid("an event without a sender id"));
    }
    let ttl_ms = i64::from(messenger.settings.link_ttl_secs.max(60)) * 1000;

    if let Some(message) = &event.message {
        let Some(mid) = message.mid.clone() else { return Ok(()) };
        // "Yes, continue here" / "No" answers an offer; it is not part of any conversation.
        if let Some((nonce, yes)) =
            message.quick_reply.as_ref().and_then(|q| q.payload.as_deref()).and_then(link::parse_consent)
        {
            return answer_offer(messenger, page, &psid, &nonce, yes, event.timestamp, known.as_ref()).await;
        }
        // A redelivery of a stored message: nothing to do again (its code offers and contact came before it).
        if found.stored_mids.contains(&mid) {
            return Ok(());
        }
        let text = message.text.clone().unwrap_or_default();
        // A customer sending the code shown on the website is asked whether to continue that conversation here
        // (also when the thread already exists on its own, e.g. after a Get Started whose referral Android dropped).
        // Only a word that names a live link somewhere can be offered: the others cost no write.
        let codes = link::short_code_candidates(&text).into_iter().filter(|c| found.live_codes.contains(c));
        for code in codes {
            match store.offer_code(&code, &psid, &format!("code:{mid}:{code}"), ttl_ms).await? {
                OfferOutcome::Offered(row) => {
                    ask_consent(page, &psid, &row.nonce);
                    break;
                }
                OfferOutcome::Duplicate => break,
                OfferOutcome::Unavailable => {}
            }
        }
        // Until they say yes, what they write stays in a conversation of their own. (Offering a link changes no
        // contact, so the one read above still holds.)
        let contact = match known {
            Some(c) => c,
            None => new_messenger_contact(messenger, page, &psid).await?,
        };
        let action_at = Some(event.timestamp.min(messenger.conversations.clock().now_ms()));
        return post_from_messenger(messenger, page, &contact, Poster::Visitor, mid, message, action_at).await;
    }

    if let Some(postback) = &event.postback {
        let key = match &postback.mid {
            Some(mid) => format!("postback:{mid}"),
            None => format!("postback:{psid}:{}", event.timestamp),
        };
        let reference = postback.referral.as_ref().and_then(|r| r.reference.clone());
        return apply_referral(messenger, page, &psid, reference.as_deref(), event.timestamp, &key, known).await;
    }

    if let Some(referral) = &event.referral {
        let reference = referral.reference.clone().unwrap_or_default();
        let key = format!("referral:{psid}:{}:{reference}", event.timestamp);
        return apply_referral(messenger, page, &psid, Some(&reference), event.timestamp, &key, known).await;
    }

    if let Some(delivery) = &event.delivery {
        let mids = if delivery.mids.is_empty() {
            messenger.event_reads.fetch_add(1, Ordering::Relaxed);
            store.sent_mids_until(&psid, delivery.watermark).await?
        } else {
            delivery.mids.clone()
        };
        return messenger.conversations.messenger_delivered(&mids).await;
    }

    if let Some(read) = &event.read
        && let Some(contact) = &known
    {
        messenger.conversations.messenger_read(&contact.id, read.watermark).await?;
    }
    Ok(())
}

/// Our own sends come back as echoes (reconcile them); echoes from other apps are replies written elsewhere.
async fn apply_echo(
    messenger: &Messenger,
    page: &Page,
    psid: &str,
    message: &super::graph_types::Message,
    known: Option<Contact>,
    found: &IntakeLookup,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let Some(mid) = message.mid.clone() else { return Ok(()) };
    let ours = message.app_id.as_deref() == Some(messenger.settings.app_id.as_str());
    if ours {
        if let Some(message_id) = &message.metadata
            && let Some(outbox_id) = {
                messenger.event_reads.fetch_add(1, Ordering::Relaxed);
                store.outbox_for_message(message_id).await?
            }
        {
            messenger.conversations.outbox_sent(outbox_id, &mid).await?;
            // The echo settled the head of this customer's queue: the next send may go now. (An echo of a send
            // already settled changed nothing, so it wakes no one: the worker heard of that send's answer.)
            messenger.conversations.outbox_wake().notify_one();
        }
        return Ok(());
    }
    if found.stored_mids.contains(&mid) {
        return Ok(());
    }
    let contact = match known {
        Some(c) => c,
        None => new_messenger_contact(messenger, page, psid).await?,
    };
    let name =
        if message.app_id.as_deref() == Some(PAGE_INBOX_APP_ID) { sentences::PAGE_INBOX } else { sentences::PAGE };
    post_from_messenger(messenger, page, &contact, Poster::Page { name }, mid, message, None).await
}

/// Posts a message that arrived from Messenger (the customer's, or one the Page sent from elsewhere), keyed by
/// its `mid` so a redelivery is stored once. Its caller found the mid not stored yet (the wave's lookup), before
/// anything is queued for download: a redelivered message fetches nothing.
async fn post_from_messenger(
    messenger: &Messenger,
    page: &Page,
    contact: &Contact,
    poster: Poster<'_>,
    mid: String,
    message: &super::graph_types::Message,
    messenger_action_at: Option<i64>,
) -> Result<(), ServiceError> {
    let text = message.text.clone().unwrap_or_default();
    let attachments = queue_attachments(messenger, page, &message.attachments).await?;
    let queued = !attachments.is_empty();
    let body =
        if text.is_empty() && attachments.is_empty() { sentences::UNSUPPORTED_MESSAGE.to_string() } else { text };
    let client_id = format!("fb-{}", short_hash(&mid));
    messenger
        .conversations
        .post(PostInput {
            contact_id: &contact.id,
            site_id: &contact.site_id,
            poster,
            client_id: &client_id,
            body: body.trim(),
            channel: Channel::Messenger,
            external_id: Some(mid),
            attachments,
            messenger_action_at,
        })
        .await?;
    if queued {
        messenger.media_wake.notify_one();
    }
    Ok(())
}

/// A Get Started tap or an m.me click: reopens the window and, with a valid ref, offers the link (asking in
/// Messenger). The offer and the event's idempotency `key` are committed together.
async fn apply_referral(
    messenger: &Messenger,
    page: &Page,
    psid: &str,
    reference: Option<&str>,
    timestamp: i64,
    key: &str,
    known: Option<Contact>,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let now_secs = u32::try_from(messenger.conversations.clock().now_ms() / 1000).unwrap_or(u32::MAX);
    let ttl_ms = i64::from(messenger.settings.link_ttl_secs.max(60)) * 1000;
    let offered = match reference.map(|r| link::verify(messenger.link_key(), r, now_secs)) {
        Some(Ok(token)) => match store.offer_link(&token.nonce, psid, key, ttl_ms).await? {
            OfferOutcome::Offered(row) => {
                ask_consent(page, psid, &row.nonce);
                true
            }
            OfferOutcome::Duplicate => return Ok(()),
            OfferOutcome::Unavailable => {
                tracing::info!("a used, expired or already offered Messenger link was presented; nothing bound");
                false
            }
        },
        Some(Err(e)) => {
            tracing::info!(reason = %e, "a Messenger ref was refused");
            false
        }
        None => false,
    };
    // The tap is a user action on this person's own thread either way (it reopens the 24 h window).
    // (Offering a link changes no contact: the one the wave read still holds.)
    let contact = match known {
        Some(c) => Some(c),
        None if !offered => Some(new_messenger_contact(messenger, page, psid).await?),
        // Asked: a contact appears when they write (their own) or say yes (the web one).
        None => None,
    };
    if let Some(contact) = contact {
        let at = timestamp.min(messenger.conversations.clock().now_ms());
        messenger.conversations.record_messenger_action(&contact.id, at).await?;
    }
    Ok(())
}

/// Asks in Messenger whether to continue the web conversation there (sent off the intake's path, retried a few
/// times on retryable errors; presenting the link again asks again).
fn ask_consent(page: &Page, psid: &str, nonce: &str) {
    let replies = [
        (link::CONSENT_YES, link::consent_payload(nonce, true)),
        (link::CONSENT_NO, link::consent_payload(nonce, false)),
    ];
    let graph = page.graph.clone();
    let psid = psid.to_string();
    tokio::spawn(async move {
        let replies: Vec<(&str, &str)> = replies.iter().map(|(t, p)| (*t, p.as_str())).collect();
        for attempt in 0..5u32 {
            match graph.send_quick_replies(&psid, CONSENT_QUESTION, &replies).await {
                Ok(_) => return,
                Err(e) if e.disposition() == super::send_api::Disposition::Retry => {
                    tracing::info!(error = %e, "consent question not sent yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consent question not sent");
                    return;
                }
            }
        }
    });
}

/// Tells the customer something in Messenger, best effort (not a conversation message).
fn say(page: &Page, psid: &str, text: &'static str) {
    let graph = page.graph.clone();
    let psid = psid.to_string();
    tokio::spawn(async move {
        if let Err(e) = graph.send_quick_replies(&psid, text, &[]).await {
            tracing::info!(error = %e, "notice not sent to Messenger");
        }
    });
}

/// "Yes, continue here" binds this person's thread to the link's web conversation (name, recap and all, in one
/// transaction); "No" uses the offer up and binds nothing.
async fn answer_offer(
    messenger: &Messenger,
    page: &Page,
    psid: &str,
    nonce: &str,
    yes: bool,
    timestamp: i64,
    own: Option<&Contact>,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let action_at = timestamp.min(messenger.conversations.clock().now_ms());
    if let Some(own) = own {
        messenger.conversations.record_messenger_action(&own.id, action_at).await?;
    }
    if !yes {
        if store.refuse_link(nonce, psid).await? {
            say(page, psid, sentences::LINK_REFUSED);
        }
        return Ok(());
    }
    let Some(offer) = store.pending_offer(nonce, psid).await? else {
        if store.link_answered(nonce, psid).await? != Some(true) {
            say(page, psid, sentences::LINK_EXPIRED);
        }
        return Ok(());
    };
    // A link binds only within one workspace: a web conversation of another workspace's site stays where it is.
    let owner = match store.contact(&offer.contact_id).await? {
        Some(contact) => messenger.site_workspace(&contact.site_id).await?,
        None => None,
    };
    if owner.as_deref() != Some(page.workspace_id.as_str()) {
        tracing::warn!(page = %page.page_id, "a link of another workspace's site was presented on this Page");
        store.refuse_link(nonce, psid).await?;
        say(page, psid, sentences::LINK_EXPIRED);
        return Ok(());
    }
    let name = fetch_profile(messenger, page, &offer.contact_id, psid).await;
    let recap = recap_text(messenger, &offer.contact_id).await?;
    messenger.conversations.accept_link(nonce, psid, name, action_at, recap.as_deref()).await?;
    Ok(())
}

/// A short recap of the web conversation, so the Messenger thread makes sense.
async fn recap_text(messenger: &Messenger, contact_id: &str) -> Result<Option<String>, ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let Some(conversation) = store.conversation_for_contact(contact_id).await? else { return Ok(None) };
    let recent = store.recent_messages(&conversation.id, 6).await?;
    Ok(sentences::recap(recent.iter().map(|m| sentences::RecapLine {
        from_customer: m.author_role == "visitor",
        agent_name: m.author_name.as_deref(),
        body: &m.body,
    })))
}

/// The label of a contact who first wrote on Messenger: the PSID's last four characters (not bytes: a PSID is
/// opaque and may hold anything).
pub fn contact_label(psid: &str) -> String {
    let tail: Vec<char> = psid.chars().rev().take(4).collect();
    let tail: String = tail.into_iter().rev().filter(|c| !c.is_control()).collect();
    format!("Messenger {tail}")
}

async fn new_messenger_contact(messenger: &Messenger, page: &Page, psid: &str) -> Result<Contact, ServiceError> {
    let store = messenger.conversations.messenger_rows();
    // The Page's own site; else (a workspace-wide Page) `messenger.site_key` when it is one of the workspace's
    // sites, else the workspace's oldest site.
    let sites = store.workspace_sites(&page.workspace_id).await?;
    let site_id = match &page.site_id {
        Some(site_id) => site_id.clone(),
        None => sites
            .iter()
            .find(|s| s.key == messenger.settings.site_key)
            .or(sites.first())
            .map(|s| s.id.clone())
            .ok_or(ServiceError::Invalid("no site exists for Messenger conversations"))?,
    };
    let label = contact_label(psid);
    let contact = store.create_messenger_contact(&site_id, psid, &label).await?;
    fetch_profile(messenger, page, &contact.id, psid).await;
    Ok(store.contact(&contact.id).await?.unwrap_or(contact))
}

/// Fetches and caches the customer's name and picture once; returns the first name.
async fn fetch_profile(messenger: &Messenger, page: &Page, contact_id: &str, psid: &str) -> Option<String> {
    let store = messenger.conversations.messenger_rows();
    if let Ok(Some(contact)) = store.contact(contact_id).await
        && contact.psid.as_deref() == Some(psid)
        && let Some(name) = contact.display_name
    {
        return name.split(' ').next().map(str::to_string);
    }
    let profile = match page.graph.profile(psid).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no Messenger profile");
            return None;
        }
    };
    let full = [profile.first_name.as_deref(), profile.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    // Picture URLs expire: keep the image, not the URL (downloaded by the queue, from allowed hosts only).
    let avatar = match &profile.profile_pic {
        Some(url) => match store.queue_attachment(Some(&page.workspace_id), Some("profile"), url).await {
            Ok(id) => {
                messenger.media_wake.notify_one();
                Some(id)
            }
            Err(e) => {
                tracing::info!(error = ?e, "profile picture not queued");
                None
            }
        },
        None => None,
    };
    let name = (!full.is_empty()).then_some(full);
    if let Err(e) = store.set_contact_profile(contact_id, name.as_deref(), avatar.as_deref()).await {
        tracing::warn!(error = ?e, "profile not stored");
    }
    profile.first_name
}

/// Queues a message's attachments for download (their URLs expire, so the queue runs at once) and returns the
/// links the message carries; each shows the file once it is downloaded, or "attachment unavailable".
async fn queue_attachments(
    messenger: &Messenger,
    page: &Page,
    attachments: &[super::graph_types::Attachment],
) -> Result<Vec<Attachment>, ServiceError> {
    let mut out = Vec::new();
    let mut seen_urls = std::collections::HashSet::new();
    for attachment in attachments {
        let Some(url) = attachment.payload.as_ref().and_then(|p| p.url.clone()) else { continue };
        if !seen_urls.insert(url.clone()) {
            continue;
        }
        let kind = match attachment.kind.as_str() {
            "image" | "sticker" => "image",
            "video" => "video",
            "audio" => "audio",
            _ => "file",
        };
        let name = url
            .rsplit('/')
            .next()
            .and_then(|n| n.split('?').next())
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(200).collect::<String>());
        let id = messenger
            .conversations
            .messenger_rows()
            .queue_attachment(Some(&page.workspace_id), name.as_deref(), &url)
            .await?;
        out.push(Attachment { url: format!("/attachments/{id}"), kind: kind.into(), name });
    }
    Ok(out)
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Characters that break byte-offset code: multi-byte, combining, zero-width, bidi, control, astral.
    const TRICKY: &[char] = &[
        'a',
        '1',
        '9',
        'Z',
        '_',
        '-',
        ' ',
        '/',
        '?',
        '%',
        '.',
        ':',
        '@',
        '[',
        ']',
        '\\',
        '"',
        '\0',
        '\n',
        '\u{7f}',
        'é',
        'ß',
        'ı',
        'İ',
        '\u{301}',
        '\u{200b}',
        '\u{202e}',
        '\u{feff}',
        '中',
        '😀',
        '👩',
        '\u{200d}',
        '\u{10ffff}',
    ];

    fn arbitrary(rng: &mut StdRng) -> String {
        let len = rng.random_range(0..40);
        (0..len).map(|_| TRICKY[rng.random_range(0..TRICKY.len())]).collect()
    }

    /// Fuzz-style: thousands of arbitrary strings through every string-handling step of the intake (PSID labels,
    /// consent payloads, short codes, link tokens, attachment URLs, payload parsing) never panic.
    #[test]
    fn arbitrary_strings_never_panic_the_intake_paths() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let allow = super::super::fetch::AllowList::parse(&["*.fbcdn.net".into(), "http://127.0.0.1:3001".into()])
            .expect("valid list");
        for _ in 0..20_000 {
            let s = arbitrary(&mut rng);
            let label = contact_label(&s);
            assert!(label.starts_with("Messenger ") && label.chars().count() <= "Messenger ".len() + 4);
            let _ = link::parse_consent(&s);
            let _ = link::parse_consent(&format!("ws1c_yes_{s}"));
            assert!(link::short_code_candidates(&s).iter().all(|c| c.len() == 6));
            let _ = link::verify(b"k", &format!("ws1_{s}"), 0);
            for url in [s.clone(), format!("https://{s}.fbcdn.net/{s}"), format!("http://127.0.0.1:3001/{s}")] {
                if let Ok(url) = reqwest::Url::parse(&url) {
                    let _ = allow.check(&url);
                }
            }
            let body = serde_json::json!({"object": "page", "entry": [{"id": s, "messaging": [{
                "sender": {"id": s}, "recipient": {"id": s}, "timestamp": 1,
                "message": {"mid": s, "text": s, "quick_reply": {"payload": s}, "app_id": s,
                            "attachments": [{"type": s, "payload": {"url": s}}]},
                "postback": {"payload": s, "referral": {"ref": s}}, "referral": {"ref": s}}]}]});
            let parsed: Envelope = serde_json::from_value(body).expect("any strings parse");
            assert_eq!(parsed.entry[0].messaging[0].sender.as_ref().map(|p| p.id.as_str()), Some(s.as_str()));
        }
    }

    #[test]
    fn labels_use_the_last_four_characters_not_bytes() {
        assert_eq!(contact_label("1é234"), "Messenger é234");
        assert_eq!(contact_label("12345678"), "Messenger 5678");
        assert_eq!(contact_label("é"), "Messenger é");
        assert_eq!(contact_label(""), "Messenger ");
    }

    #[test]
    fn waves_hold_distinct_customers_and_keep_unthreaded_events_in_place() {
        let (a, b, c) = (Some("a"), Some("b"), Some("c"));
        let threads = [a, b, a, None, None, c, b, c, a, b];
        let got: Vec<Vec<Option<&str>>> = waves(&threads, 32).map(<[_]>::to_vec).collect();
        assert_eq!(got, vec![vec![a, b], vec![a], vec![None], vec![None], vec![c, b], vec![c, a, b]]);
        let capped: Vec<usize> = waves_of(&[a, b, c, Some("d"), Some("e")], 2);
        assert_eq!(capped, vec![2, 2, 1]);
        assert!(super::waves(&[], 32).next().is_none());
        // Every event lands in exactly one wave, in order.
        let flat: Vec<Option<&str>> = super::waves(&threads, 3).flatten().copied().collect();
        assert_eq!(flat, threads.to_vec());
    }

    /// Delivery and read receipts and our own echoes wait in no thread, but each concerns one customer: those of
    /// different customers share a wave (their writes one commit) instead of applying one by one, and two of one
    /// customer still never share one.
    #[test]
    fn receipts_and_our_echoes_of_different_customers_share_a_wave() {
        let settings = MessengerSettings { app_id: "our-app".into(), ..MessengerSettings::default() };
        let event = |value: serde_json::Value| -> Messaging { serde_json::from_value(value).expect("an event") };
        let events = [
            event(serde_json::json!({"sender": {"id": "a"}, "recipient": {"id": "page"}, "timestamp": 1,
                "delivery": {"mids": ["m1"], "watermark": 1}})),
            event(serde_json::json!({"sender": {"id": "b"}, "recipient": {"id": "page"}, "timestamp": 2,
                "delivery": {"mids": ["m2"], "watermark": 2}})),
            event(serde_json::json!({"sender": {"id": "page"}, "recipient": {"id": "c"}, "timestamp": 3,
                "message": {"mid": "m3", "is_echo": true, "app_id": "our-app", "text": "hi"}})),
            event(serde_json::json!({"sender": {"id": "a"}, "recipient": {"id": "page"}, "timestamp": 4,
                "read": {"watermark": 4}})),
        ];
        for e in &events {
            assert_eq!(place(&settings, "page", e).0, None, "applies at once, in no thread");
        }
        let customers: Vec<Option<String>> = events.iter().map(customer_of).collect();
        assert_eq!(customers, [Some("a"), Some("b"), Some("c"), Some("a")].map(|c| c.map(String::from)));
        let keys: Vec<Option<&str>> = customers.iter().map(Option::as_deref).collect();
        assert_eq!(waves_of(&keys, WAVE), vec![3, 1]);
    }

    fn waves_of(threads: &[Option<&str>], max: usize) -> Vec<usize> {
        waves(threads, max).map(<[_]>::len).collect()
    }

    #[test]
    fn retries_back_off_up_to_30_seconds() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }
}
