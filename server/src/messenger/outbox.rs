//! The Send API outbox worker. Sends go out oldest first and one at a time per customer (Messenger shows them in
//! the order received). Retryable failures back off exponentially with full jitter and are retried forever, so
//! nothing is lost when the Graph API is down for hours; permanent ones are marked failed with plain words for
//! agents. A revoked page token pauses everything and raises a console alert until a send succeeds again.
//! Our message id travels in `metadata`: if a call's outcome is unknown (timeout, 1/1357046), the retry waits
//! long enough for our own echo to arrive and settle the row, so a crash or timeout does not send twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use protocol::DeliveryState;
use rand::Rng;

use super::channel::Messenger;
use super::send_api::{Disposition, MessagingType};
use crate::store::{OutboxRow, now_ms};

/// Alert key for a broken page token.
pub const TOKEN_ALERT: &str = "messenger_token";

/// Delay before retry number `attempts + 1`: full jitter over an exponential ceiling (1 s … 5 min).
pub fn backoff_ms(attempts: i64) -> i64 {
    let ceiling = 1000_i64.saturating_mul(1 << attempts.clamp(0, 9)).min(300_000);
    rand::rng().random_range(ceiling / 2..=ceiling)
}

/// Runs forever.
pub async fn run(messenger: Arc<Messenger>) {
    loop {
        let next = match pass(&messenger).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = ?e, "outbox pass failed");
                Some(now_ms() + 1000)
            }
        };
        let wait = next.map_or(Duration::from_secs(30), |at| {
            Duration::from_millis(u64::try_from((at - now_ms()).clamp(0, 30_000)).unwrap_or(0))
        });
        tokio::select! {
            _ = messenger.conversations.outbox_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends everything due; returns when the next send is due.
pub async fn pass(messenger: &Messenger) -> anyhow::Result<Option<i64>> {
    let store = &messenger.conversations.store;
    loop {
        let due = store.due_outbox(100).await?;
        if due.is_empty() {
            return Ok(store.next_outbox_due().await?);
        }
        let mut blocked: HashSet<String> = HashSet::new();
        let mut progressed = false;
        for row in due {
            if blocked.contains(&row.psid) {
                continue;
            }
            // Strict order per customer: only the oldest pending send of a PSID may go.
            if store.first_pending_for_psid(&row.psid).await? != Some(row.id) {
                blocked.insert(row.psid.clone());
                continue;
            }
            match send(messenger, &row).await? {
                Outcome::Done => progressed = true,
                Outcome::Later => {
                    blocked.insert(row.psid.clone());
                }
                Outcome::PauseAll => return Ok(store.next_outbox_due().await?),
            }
        }
        if !progressed {
            return Ok(store.next_outbox_due().await?);
        }
    }
}

enum Outcome {
    Done,
    Later,
    PauseAll,
}

async fn send(messenger: &Messenger, row: &OutboxRow) -> anyhow::Result<Outcome> {
    let store = &messenger.conversations.store;
    let kind = if row.messaging_type == "HUMAN_AGENT" { MessagingType::HumanAgent } else { MessagingType::Response };
    let metadata = row.message_id.clone().unwrap_or_else(|| format!("outbox-{}", row.id));
    match messenger.graph.send_text(&row.psid, &row.body, kind, &metadata).await {
        Ok(mid) => {
            messenger.conversations.hub.set_alert(TOKEN_ALERT, None);
            if let Some((conversation_id, event)) = store.outbox_sent(row.id, &mid).await? {
                messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
            }
            Ok(Outcome::Done)
        }
        Err(err) => {
            let disposition = err.disposition();
            tracing::warn!(outbox = row.id, attempts = row.attempts, error = %err, ?disposition, "Messenger send failed");
            match disposition {
                Disposition::Retry => {
                    store.outbox_retry(row.id, now_ms() + backoff_ms(row.attempts), &err.for_agents()).await?;
                    Ok(Outcome::Later)
                }
                Disposition::Ambiguous => {
                    // Give our echo time to arrive and settle the row before trying again.
                    let wait = backoff_ms(row.attempts).max(15_000);
                    store.outbox_retry(row.id, now_ms() + wait, &err.for_agents()).await?;
                    Ok(Outcome::Later)
                }
                Disposition::TokenInvalid => {
                    messenger.conversations.hub.set_alert(TOKEN_ALERT, Some(err.for_agents()));
                    store.outbox_retry(row.id, now_ms() + 30_000, &err.for_agents()).await?;
                    Ok(Outcome::PauseAll)
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

async fn settle_failed(
    messenger: &Messenger,
    row: &OutboxRow,
    detail: &str,
    state: DeliveryState,
) -> anyhow::Result<Outcome> {
    if let Some((conversation_id, event)) = messenger.conversations.store.outbox_failed(row.id, detail, state).await? {
        messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
    }
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
