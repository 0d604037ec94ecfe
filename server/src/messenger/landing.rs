//! Where signed webhook deliveries land in the database before Meta gets its 200: batched, one transaction (and
//! so one commit) for every delivery waiting, instead of one transaction each.
//!
//! Each webhook request hands its raw body to [`Landing::store`] and waits for its answer. One task takes every
//! body queued so far (up to [`MAX_BATCH`]), inserts them with
//! [`crate::store::MessengerStore::insert_webhook_deliveries`] and answers each request only once that commit is
//! durable; bodies that arrive meanwhile form the next batch, which is handed to the store at once, without waiting
//! for the commit before it (at most [`MAX_IN_FLIGHT`] batches at a time). So on SQLite the next batch is already in
//! the writer's priority lane when the group before it commits, and goes next, instead of queueing only after the
//! intake's next job has started. A request that stopped waiting (its
//! [`super::webhook::DATABASE_WAIT`] passed and it spooled its body instead) is left out of the batch not yet
//! started. All of a batch lands or none of it does: on an error every request of the batch hears it (and spools).
//!
//! With the task gone (it never is, short of a bug) [`Landing::store`] fails at once and the request spools.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::services::Conversations;
use crate::store::{StoreError, StoreResult};

/// The most deliveries one batch carries.
pub const MAX_BATCH: usize = 1000;

/// The most batches handed to the store and not yet answered.
pub const MAX_IN_FLIGHT: usize = 4;

/// One request waiting for its body to land.
struct Waiting {
    body: Bytes,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the batching task; dropping it ends the task once the queue is empty.
pub struct Landing {
    queue: mpsc::UnboundedSender<Waiting>,
    batches: Arc<AtomicU64>,
}

impl Landing {
    /// Starts the batching task on the current Tokio runtime.
    pub fn start(conversations: Conversations) -> anyhow::Result<Self> {
        let (queue, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("the webhook landing needs a Tokio runtime: {e}"))?;
        let batches = Arc::new(AtomicU64::new(0));
        runtime.spawn(run(conversations, rx, Arc::clone(&batches)));
        Ok(Self { queue, batches })
    }

    /// Batches committed so far (each one transaction).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stores `body` in `webhook_deliveries`; returns once it is committed.
    pub async fn store(&self, body: Bytes) -> StoreResult<()> {
        let (done, landed) = oneshot::channel();
        self.queue.send(Waiting { body, done }).map_err(|_| stopped())?;
        landed.await.map_err(|_| stopped())?.map_err(StoreError::Backend)
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the webhook landing task has stopped".into())
}

async fn run(conversations: Conversations, mut rx: mpsc::UnboundedReceiver<Waiting>, batches: Arc<AtomicU64>) {
    let mut flying = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            received = rx.recv_many(&mut batch, MAX_BATCH), if flying.len() < MAX_IN_FLIGHT => {
                if received == 0 {
                    break;
                }
                // Those that gave up have spooled their body: storing it here too would only add a duplicate raw row.
                batch.retain(|w: &Waiting| !w.done.is_closed());
                if !batch.is_empty() {
                    let taken = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                    flying.push(land(conversations.clone(), taken, Arc::clone(&batches)));
                }
            }
            Some(()) = flying.next(), if !flying.is_empty() => {}
        }
    }
    while flying.next().await.is_some() {}
}

/// Inserts one batch and answers each of its requests.
async fn land(conversations: Conversations, batch: Vec<Waiting>, batches: Arc<AtomicU64>) {
    let bodies: Vec<&[u8]> = batch.iter().map(|w| w.body.as_ref()).collect();
    let result = conversations.messenger_rows().insert_webhook_deliveries(&bodies).await.map_err(|e| e.to_string());
    drop(bodies);
    if result.is_ok() {
        batches.fetch_add(1, Ordering::Relaxed);
    }
    for waiting in batch {
        let _ = waiting.done.send(result.clone());
    }
}
