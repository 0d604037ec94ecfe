//! The webhook sender task: turns queued events into signed payloads and delivers them.
//!
//! Success is a 2xx within `webhook_timeout`. A failure is retried at once a few times,
//! then with backoff; a jump of the virtual clock wakes a waiting retry. After
//! `alert_after` of continuous (virtual) failure a developer alert is recorded, after
//! `disable_after` the app is unsubscribed and the payload dropped. By default delivery
//! is head-of-line per Page: the next payload waits until the previous one is acked.
//! Payload-level faults (duplicate, reorder, batch, bad signature) are applied here.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::emulator::Emulator;
use crate::faults::WebhookFault;
use crate::state::{Attempt, DeliveryStatus, OutEvent, WebhookDelivery, World};
use crate::webhook::{signature_256, signature_sha1, to_meta_json};

/// How long a batch waits for its other events.
const GATHER_WINDOW: Duration = Duration::from_millis(500);
/// How long a held (reordered) payload waits for the next event.
const REORDER_WINDOW: Duration = Duration::from_millis(1000);

/// A payload ready to deliver.
#[derive(Clone)]
struct Payload {
    body: String,
    fields: Vec<String>,
    event_count: usize,
    generation: u64,
}

/// Runs until the queue closes.
pub async fn run(emulator: Emulator, mut queue: UnboundedReceiver<OutEvent>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        let batch = emulator.with(|w| take_fault(w, |f| matches!(f, WebhookFault::Batch { .. })));
        let entries = match batch {
            Some(WebhookFault::Batch { events, entries }) => {
                while group.len() < events.max(1) {
                    match tokio::time::timeout(GATHER_WINDOW, queue.recv()).await {
                        Ok(Some(event)) => group.push(event),
                        _ => break,
                    }
                }
                entries
            }
            _ => 1,
        };
        let Some(payload) = emulator.with(|w| build(w, group, entries)) else {
            continue;
        };
        let reorder = emulator.with(|w| take_fault(w, |f| *f == WebhookFault::Reorder));
        if reorder.is_some() {
            // Hold this payload and let the next event overtake it.
            if let Ok(Some(next)) = tokio::time::timeout(REORDER_WINDOW, queue.recv()).await
                && let Some(next) = emulator.with(|w| build(w, vec![next], 1))
            {
                dispatch(&emulator, next).await;
            }
        }
        dispatch(&emulator, payload).await;
    }
}

fn take_fault(world: &mut World, applies: impl Fn(&WebhookFault) -> bool) -> Option<WebhookFault> {
    let World { faults, rng, .. } = world;
    faults.take_webhook(rng, applies)
}

/// Builds the envelope for events of the current generation, spread over `entries` items.
fn build(world: &mut World, events: Vec<OutEvent>, entries: usize) -> Option<Payload> {
    let generation = world.generation;
    let events: Vec<OutEvent> = events.into_iter().filter(|e| e.generation == generation).collect();
    if events.is_empty() {
        return None;
    }
    let time = world.now_ms();
    let page_id = world.cfg.page_id.clone();
    let per_entry = events.len().div_ceil(entries.clamp(1, events.len()));
    let mut entry = Vec::new();
    for chunk in events.chunks(per_entry) {
        // An entry holds either `messaging[]` or `standby[]`.
        for standby in [false, true] {
            let items: Vec<Value> = chunk.iter().filter(|e| e.standby == standby).map(|e| e.event.clone()).collect();
            if !items.is_empty() {
                let key = if standby { "standby" } else { "messaging" };
                entry.push(json!({ "id": page_id, "time": time, key: items }));
            }
        }
    }
    let mut fields: Vec<String> = Vec::new();
    for event in &events {
        if !fields.iter().any(|f| f == event.field) {
            fields.push(event.field.to_owned());
        }
    }
    let body = to_meta_json(&json!({ "object": "page", "entry": entry }));
    Some(Payload { body, fields, event_count: events.len(), generation })
}

/// Delivers a payload (and its deliberate duplicate), head-of-line or in parallel.
async fn dispatch(emulator: &Emulator, payload: Payload) {
    let duplicate = emulator.with(|w| take_fault(w, |f| *f == WebhookFault::Duplicate));
    let head_of_line = emulator.with(|w| w.settings.head_of_line);
    let job = {
        let emulator = emulator.clone();
        async move {
            let first = deliver(&emulator, payload.clone(), None).await;
            if duplicate.is_some() {
                deliver(&emulator, payload, Some(first)).await;
            }
        }
    };
    if head_of_line {
        job.await;
    } else {
        tokio::spawn(job);
    }
}

enum Step {
    Send { url: String, secret: String, timeout: Duration, bad_signature: bool, at_ms: i64 },
    Stop(String),
}

/// Tries until delivered or given up; returns the delivery id.
async fn deliver(emulator: &Emulator, payload: Payload, duplicate_of: Option<u64>) -> u64 {
    let id = emulator.with(|w| {
        let id = w.deliveries.len() as u64 + 1;
        w.deliveries.push(WebhookDelivery {
            id,
            body: payload.body.clone(),
            fields: payload.fields.clone(),
            event_count: payload.event_count,
            duplicate_of,
            attempts: Vec::new(),
            status: DeliveryStatus::Pending,
        });
        w.touch();
        id
    });
    // Only the original counts against `pending_events`.
    let pending = if duplicate_of.is_some() { 0 } else { payload.event_count };
    let mut clock = emulator.subscribe_clock();
    let mut retry = 0u32;
    loop {
        let step = emulator.with(|w| next_step(w, &payload));
        let (url, secret, timeout, bad_signature, at_ms) = match step {
            Step::Stop(reason) => {
                finish(emulator, id, pending, payload.generation, DeliveryStatus::Dropped { reason });
                return id;
            }
            Step::Send { url, secret, timeout, bad_signature, at_ms } => (url, secret, timeout, bad_signature, at_ms),
        };
        // A clock jump from now on wakes the backoff below.
        clock.borrow_and_update();
        let started = Instant::now();
        let signing_key = if bad_signature { format!("{secret}-wrong") } else { secret };
        let result = emulator
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature_256(&signing_key, payload.body.as_bytes()))
            .header("x-hub-signature", signature_sha1(&signing_key, payload.body.as_bytes()))
            .body(payload.body.clone())
            .timeout(timeout)
            .send()
            .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) if error.is_timeout() => (None, Some("timeout".to_owned())),
            Err(error) => (None, Some(error.to_string())),
        };
        let success = status.is_some_and(|s| (200..300).contains(&s));
        let attempt = Attempt { at_ms, status, error, latency_ms, bad_signature, success };
        let disabled = emulator.with(|w| {
            if let Some(delivery) = w.deliveries.iter_mut().find(|d| d.id == id) {
                delivery.attempts.push(attempt);
            }
            w.touch();
            if success {
                w.app.failing_since_ms = None;
                w.app.alerted = false;
                false
            } else {
                note_failure(w)
            }
        });
        if success {
            finish(emulator, id, pending, payload.generation, DeliveryStatus::Delivered);
            return id;
        }
        if disabled {
            let reason = "webhooks disabled: the app was unsubscribed from the Page".to_owned();
            finish(emulator, id, pending, payload.generation, DeliveryStatus::Dropped { reason });
            return id;
        }
        retry += 1;
        let delay = emulator.with(|w| w.cfg.retry.delay_before(retry));
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = clock.changed() => {}
            }
        }
    }
}

fn next_step(world: &mut World, payload: &Payload) -> Step {
    if world.generation != payload.generation {
        return Step::Stop("reset".into());
    }
    if !world.app.subscribed {
        return Step::Stop("the app is not subscribed to the Page".into());
    }
    let Some(url) = world.app.callback_url.clone() else {
        return Step::Stop("no callback URL".into());
    };
    if !world.app.verified {
        return Step::Stop("the callback URL is not verified".into());
    }
    let bad_signature = take_fault(world, |f| *f == WebhookFault::BadSignature).is_some();
    Step::Send {
        url,
        secret: world.cfg.app_secret.clone(),
        timeout: world.cfg.webhook_timeout,
        bad_signature,
        at_ms: world.now_ms(),
    }
}

/// Tracks the failing streak; returns true when the app has just been unsubscribed.
fn note_failure(world: &mut World) -> bool {
    let now = world.now_ms();
    let since = *world.app.failing_since_ms.get_or_insert(now);
    let failing_for = now - since;
    let policy = world.cfg.retry.clone();
    if failing_for >= crate::clock::ms(policy.disable_after) {
        world.app.subscribed = false;
        world.app.failing_since_ms = None;
        world.app.alerted = false;
        let message = format!(
            "Webhooks Disabled: deliveries to {} failed for {} min; the app was unsubscribed from the Page",
            world.app.callback_url.clone().unwrap_or_default(),
            failing_for / 60_000
        );
        world.alert("webhooks_disabled", message);
        return true;
    }
    if failing_for >= crate::clock::ms(policy.alert_after) && !world.app.alerted {
        world.app.alerted = true;
        let message = format!("Developer alert: webhook deliveries have been failing for {} min", failing_for / 60_000);
        world.alert("developer_alert", message);
    }
    false
}

fn finish(emulator: &Emulator, id: u64, pending: usize, generation: u64, status: DeliveryStatus) {
    emulator.with(|w| {
        if let Some(delivery) = w.deliveries.iter_mut().find(|d| d.id == id) {
            delivery.status = status;
        }
        if w.generation == generation {
            w.pending_events = w.pending_events.saturating_sub(pending);
        }
        w.touch();
    });
}
