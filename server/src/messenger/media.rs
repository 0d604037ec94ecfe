//! The attachment download queue: files Messenger payloads point at (attachments, profile pictures) are fetched
//! here, off the intake's path, so one slow or hostile URL never holds up anyone's messages.
//!
//! The queue lives in the `attachments` table: the intake records a `pending` row (only for an event it has not
//! applied before) and posts the message at once with a link to that row; this worker claims rows a few at a time
//! (at most [`PARALLEL`] downloads run together), fetches them through the allow-listed [`Fetcher`], and marks each
//! `ready` or `failed` ("attachment unavailable", with why). Downloads interrupted by a stop are claimed again on
//! the next start. The message itself never waits for, nor depends on, its files.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::channel::Messenger;
use super::fetch::FetchError;

/// Downloads running at the same time.
pub const PARALLEL: usize = 4;

/// Runs until aborted: downloads queued files.
pub async fn run(messenger: Arc<Messenger>) {
    let store = messenger.conversations.messenger_rows();
    if let Err(e) = store.requeue_attachments().await {
        tracing::warn!(error = ?e, "interrupted downloads not requeued");
    }
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        let free = PARALLEL.saturating_sub(running.len());
        let claimed = if free > 0 {
            store.claim_attachments(i64::try_from(free).unwrap_or(1)).await.unwrap_or_else(|e| {
                tracing::warn!(error = ?e, "cannot read the download queue");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let claimed_any = !claimed.is_empty();
        for (id, url) in claimed {
            let messenger = Arc::clone(&messenger);
            running.spawn(async move { download(&messenger, &id, &url).await });
        }
        if claimed_any && running.len() < PARALLEL {
            continue;
        }
        tokio::select! {
            _ = messenger.media_wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Fetches one file and records the outcome.
async fn download(messenger: &Messenger, id: &str, url: &str) {
    let store = messenger.conversations.messenger_rows();
    let result = messenger.fetcher.get(url, messenger.settings.attachment_max_bytes).await;
    let stored = match result {
        Ok(file) => {
            let content_type = file.content_type.unwrap_or_else(|| "application/octet-stream".into());
            store.attachment_downloaded(id, &content_type, &file.bytes).await
        }
        Err(e) => {
            match &e {
                FetchError::HostNotAllowed | FetchError::PrivateAddress | FetchError::BadUrl => {
                    tracing::warn!(reason = %e, "an attachment URL was refused");
                }
                _ => tracing::info!(reason = %e, "attachment not downloaded"),
            }
            store.attachment_unavailable(id, &e.to_string()).await
        }
    };
    if let Err(e) = stored {
        tracing::warn!(error = ?e, "download outcome not stored");
    }
}
