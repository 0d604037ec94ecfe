//! The Send API outbox worker. Sends go out oldest first and one at a time per customer (Messenger shows them in
//! the order received); customers are served side by side, up to `messenger.max_in_flight` calls at once (default
//! [`MAX_IN_FLIGHT`]), longest waiting first, so one customer's backlog or outage never holds up another's. The worker sleeps until the earliest time a
//! customer's *head* send may go (a later send due behind a head in backoff does not wake it). Retryable failures
//! back off exponentially with full jitter and are retried forever, so nothing is lost when the Graph API is down
//! for hours; permanent ones are marked failed with plain words for agents. A revoked page token pauses everything
//! and raises a console alert until a send succeeds again.
//!
//! No send goes out twice: before each Graph call the row is leased (attempt id and expiry) in a committed
//! transaction. Our message id travels in `metadata` (the recap's too), so when the outcome is unknown (a timeout,
//! 1/1357046, or a crash or kill during the call, which leaves the lease unsettled) the row waits
//! `messenger.reconcile_secs` for our own echo to settle it before it is sent again. A send the Graph API accepted
//! is settled again and again until the database takes it, never sent again. On shutdown the worker takes no new
//! sends and lets the calls in flight finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::DeliveryState;
use rand::Rng;
use tokio::task::JoinSet;

use super::channel::Messenger;
use super::send_api::{Disposition, MessagingType};
use crate::sentences;
use crate::store::{OutboxRow, outbox_metadata};
use crate::supervisor::{WorkerContext, WorkerHealth};

/// Alert key for a broken page token.
pub const TOKEN_ALERT: &str = "messenger_token";

/// The default of `messenger.max_in_flight`: Graph calls in flight at once (each to a different customer).
pub const MAX_IN_FLIGHT: usize = 32;

/// How long a revoked token pauses every send.
const TOKEN_PAUSE_MS: i64 = 30_000;

/// A lease outlives the Graph call's timeout by this much (time to record the outcome).
const LEASE_MARGIN_MS: i64 = 5_000;

/// Delay before retry number `attempts + 1`: full jitter over an exponential ceiling (1 s … 5 min).
pub fn backoff_ms(attempts: i64) -> i64 {
    let ceiling = 1000_i64.saturating_mul(1 << attempts.clamp(0, 9)).min(300_000);
    rand::rng().random_range(ceiling / 2..=ceiling)
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 2_000).saturating_mul(1000)
}

/// Runs until `ctx.stop` turns `true`, then lets the sends in flight finish. Counts its wake-ups (`iterations`),
/// Graph calls (`graph_calls`), leases (`leases`: each one write for every row it takes) and sends finished
/// (`sends_finished`) in its health entry; a failed settle is counted as `settle_retries`.
pub async fn run(messenger: Arc<Messenger>, ctx: WorkerContext) -> anyhow::Result<()> {
    let WorkerContext { mut stop, health } = ctx;
    let store = messenger.conversations.messenger_rows();
    let clock = messenger.conversations.clock().clone();
    let reconcile_ms = secs_ms(messenger.settings.reconcile_secs.max(1));
    let lease_ms = secs_ms(messenger.settings.timeout_secs.max(1)) + LEASE_MARGIN_MS;
    let max_in_flight = messenger.settings.max_in_flight.max(1);
    let mut in_flight: JoinSet<Outcome> = JoinSet::new();
    let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut paused_until = 0_i64;
    let mut panicked: Option<String> = None;
    while !*stop.borrow() && panicked.is_none() {
        health.add("iterations", 1);
        let now = clock.now_ms();
        let wake_at = if now < paused_until {
            Some(paused_until)
        } else {
            let free = max_in_flight.saturating_sub(in_flight.len());
            let mut psids: Vec<String> = busy.values().cloned().collect();
            let claimed = if free == 0 {
                Ok(Vec::new())
            } else {
                health.add("leases", 1);
                store.lease_outbox_heads(now, lease_ms, reconcile_ms, i64::try_from(free).unwrap_or(1), &psids).await
            };
            let next = match claimed {
                Ok(rows) => {
                    for row in rows {
                        psids.push(row.psid.clone());
                        let psid = row.psid.clone();
                        let task = in_flight.spawn(deliver(Arc::clone(&messenger), row, health.clone()));
                        busy.insert(task.id(), psid);
                    }
                    if in_flight.len() >= max_in_flight {
                        // Every slot is taken: nothing can be leased before a call finishes, which wakes the loop
                        // anyway, so when the next row is due does not matter yet.
                        Ok(None)
                    } else {
                        store.next_outbox_eligible(reconcile_ms, &psids).await
                    }
                }
                Err(e) => Err(e),
            };
            match next {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = ?e, "outbox: the database did not answer; trying again in a second");
                    Some(now + 1000)
                }
            }
        };
        let wait = wake_at.map_or(Duration::from_secs(30), |at| {
            Duration::from_millis(u64::try_from((at - clock.now_ms()).clamp(0, 30_000)).unwrap_or(0))
        });
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // And every other send that finished meanwhile: the next lease (one write) covers all the slots
                // they freed, instead of one lease per finished send.
                let mut finished = Some(joined);
                while let Some(joined) = finished.take() {
                    health.add("sends_finished", 1);
                    match joined {
                        Ok((id, outcome)) => {
                            busy.remove(&id);
                            if outcome == Outcome::PauseAll {
                                paused_until = clock.now_ms() + TOKEN_PAUSE_MS;
                            }
                        }
                        Err(e) => {
                            busy.remove(&e.id());
                            panicked = Some(e.to_string());
                        }
                    }
                    finished = in_flight.try_join_next_with_id();
                }
            }
            _ = messenger.conversations.outbox_wake().notified() => {}
            // A test moved the clock: what was due later may be due now.
            () = clock.advanced() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // A call is never cut off halfway: the sends in flight finish and settle (shutdown bounds how long).
    while let Some(joined) = in_flight.join_next().await {
        if let Err(e) = joined {
            panicked = Some(e.to_string());
        }
    }
    match panicked {
        // Its row stays leased: it is reconciled by its echo, or sent again after the reconcile window.
        Some(why) => anyhow::bail!("a send task failed: {why}"),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Later,
    PauseAll,
}

/// Sends one leased row and records what happened.
async fn deliver(messenger: Arc<Messenger>, row: OutboxRow, health: WorkerHealth) -> Outcome {
    match send(&messenger, &row, &health).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // The outcome was not recorded: the lease stays, and the row is reconciled or retried after it.
            tracing::error!(outbox = row.id, error = ?e, "outbox: could not record a send's outcome");
            Outcome::Later
        }
    }
}

async fn send(messenger: &Messenger, row: &OutboxRow, health: &WorkerHealth) -> anyhow::Result<Outcome> {
    let store = messenger.conversations.messenger_rows();
    let kind = MessagingType::from_stored(&row.messaging_type);
    let lease = row.lease_id.clone().unwrap_or_default();
    // Sent as the Page of the conversation's site, and its workspace's agents hear about that Page's token.
    let page = match messenger.conversation_site(&row.conversation_id).await? {
        Some(site_id) => messenger.page_for_site(&site_id).await?,
        None => None,
    };
    let Some(page) = page else {
        return settle_failed(messenger, row, sentences::SEND_NO_PAGE, DeliveryState::Failed).await;
    };
    let token_alert = crate::ws::agent::workspace_alert_key(&page.workspace_id, TOKEN_ALERT);
    health.add("graph_calls", 1);
    match page.graph.send_text(&row.psid, &row.body, kind, &outbox_metadata(row)).await {
        Ok(mid) => {
            messenger.conversations.set_alert(&token_alert, None);
            settle_sent(messenger, row.id, &mid, health).await;
            Ok(Outcome::Done)
        }
        Err(err) => {
            let disposition = err.disposition();
            tracing::warn!(outbox = row.id, attempts = row.attempts, error = %err, ?disposition, "Messenger send failed");
            let retry_at = |delay: i64| messenger.conversations.clock().now_ms() + delay;
            match disposition {
                Disposition::Retry => {
                    store.outbox_retry(row.id, &lease, retry_at(backoff_ms(row.attempts)), &err.for_agents()).await?;
                    Ok(Outcome::Later)
                }
                Disposition::Ambiguous => {
                    // Give our echo time to arrive and settle the row before trying again.
                    let wait = backoff_ms(row.attempts).max(secs_ms(messenger.settings.reconcile_secs.max(1)));
                    store.outbox_retry(row.id, &lease, retry_at(wait), &err.for_agents()).await?;
                    Ok(Outcome::Later)
                }
                Disposition::TokenInvalid => {
                    messenger.conversations.set_alert(&token_alert, Some(err.for_agents()));
                    store.outbox_retry(row.id, &lease, retry_at(TOKEN_PAUSE_MS), &err.for_agents()).await?;
                    // One Page: every send would fail alike, so all pause. Several: only this send waits (each
                    // of this Page's customers tries once per pause), and the other Pages' customers go on.
                    let several = store.pages().await.map(|pages| pages.len() > 1).unwrap_or(false);
                    Ok(if several { Outcome::Later } else { Outcome::PauseAll })
                }
                Disposition::OutsideWindow => {
                    settle_failed(messenger, row, &err.for_agents(), DeliveryState::NotSent).await
                }
                Disposition::Unreachable | Disposition::Permanent => {
                    settle_failed(messenger, row, &err.for_agents(), DeliveryState::Failed).await
                }
            }
        }
    }
}

/// Records an accepted send. It went out, so it is never sent again: a failed settle is retried (with backoff up
/// to 5 s) until the database takes it; our echo may settle it first, which is just as good.
async fn settle_sent(messenger: &Messenger, id: i64, mid: &str, health: &WorkerHealth) {
    let mut delay = Duration::from_millis(100);
    loop {
        match messenger.conversations.outbox_sent(id, mid).await {
            Ok(()) => return,
            Err(e) => {
                health.add("settle_retries", 1);
                tracing::warn!(outbox = id, error = ?e, "outbox: a send went out but was not recorded; retrying that");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn settle_failed(
    messenger: &Messenger,
    row: &OutboxRow,
    detail: &str,
    state: DeliveryState,
) -> anyhow::Result<Outcome> {
    messenger.conversations.outbox_failed(row.id, detail, state).await?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempts in 0..20 {
            let ceiling = (1000_i64 << attempts.min(9)).min(300_000);
            let d = backoff_ms(attempts);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempts}: {d}");
        }
        assert!(backoff_ms(30) <= 300_000);
    }
}
