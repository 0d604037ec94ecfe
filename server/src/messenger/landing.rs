//! Where signed webhook deliveries land in the database before Meta gets its 200: batched, one transaction (and
//! so one commit) for every delivery waiting, instead of one transaction each.
//!
//! Each webhook request hands its raw body to [`Landing::store`] and waits for its answer. One task gathers the
//! bodies as they come and hands batches to the store
//! ([`crate::store::MessengerStore::insert_webhook_batch`]), answering each request only once its batch's commit
//! is durable. A batch takes its bodies (up to [`MAX_BATCH`]) only when the store starts writing it: on SQLite when
//! its turn on the write connection comes, so every delivery that arrived while it waited behind the group being
//! written joins it, instead of waiting for a batch of its own behind it. The task hands the next batch over as
//! soon as the one before has taken its bodies, without waiting for its commit (at most [`MAX_IN_FLIGHT`] batches
//! at a time): on SQLite it is then already in the writer's priority lane when the group before it commits; on
//! PostgreSQL, which takes the bodies at once, batches commit side by side. A request that stopped waiting (its
//! [`super::webhook::DATABASE_WAIT`] passed and it spooled its body instead) is left out of the batch that has not
//! taken its bodies yet. All of a batch lands or none of it does: on an error every request of the batch hears it
//! (and spools).
//!
//! With the task gone (it never is, short of a bug) [`Landing::store`] fails at once and the request spools.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};

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

/// Handle to the batching task; dropping it ends the task once every request it took is answered.
pub struct Landing {
    queue: mpsc::UnboundedSender<Waiting>,
    shared: Arc<Shared>,
}

/// What the batching task and the batches it handed over share.
#[derive(Default)]
struct Shared {
    /// Requests not yet taken by a batch, oldest first.
    pending: Mutex<Vec<Waiting>>,
    /// A batch was handed to the store and has not taken its bodies yet.
    untaken: AtomicBool,
    /// Wakes the task when a batch has taken its bodies (the next one can be handed over).
    taken: Notify,
    /// Batches committed so far.
    batches: AtomicU64,
    /// Requests queued and not yet taken by a batch (what [`Landing::waiting`] reports).
    waiting: AtomicUsize,
}

/// Locks `m`; a panic while it was held leaves a consistent queue (each change is one push or drain), so a poisoned
/// lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Landing {
    /// Starts the batching task on the current Tokio runtime.
    pub fn start(conversations: Conversations) -> anyhow::Result<Self> {
        let (queue, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("the webhook landing needs a Tokio runtime: {e}"))?;
        let shared = Arc::new(Shared::default());
        runtime.spawn(run(conversations, rx, Arc::clone(&shared)));
        Ok(Self { queue, shared })
    }

    /// Batches committed so far (each one transaction).
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// Requests that handed over their body and wait for a batch to take it.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Stores `body` in `webhook_deliveries`; returns once it is committed.
    pub async fn store(&self, body: Bytes) -> StoreResult<()> {
        let (done, landed) = oneshot::channel();
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(Waiting { body, done }).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(stopped());
        }
        landed.await.map_err(|_| stopped())?.map_err(StoreError::Backend)
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the webhook landing task has stopped".into())
}

async fn run(conversations: Conversations, mut rx: mpsc::UnboundedReceiver<Waiting>, shared: Arc<Shared>) {
    let mut flying = FuturesUnordered::new();
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    loop {
        let pending = !lock(&shared.pending).is_empty();
        if pending && !shared.untaken.load(Ordering::Acquire) && flying.len() < MAX_IN_FLIGHT {
            shared.untaken.store(true, Ordering::Release);
            flying.push(land(conversations.clone(), Arc::clone(&shared)));
        }
        if !open && !pending && flying.is_empty() {
            break;
        }
        tokio::select! {
            n = rx.recv_many(&mut received, MAX_BATCH), if open => {
                if n == 0 {
                    open = false;
                } else {
                    lock(&shared.pending).append(&mut received);
                }
            }
            Some(()) = flying.next(), if !flying.is_empty() => {}
            () = shared.taken.notified() => {}
        }
    }
}

/// One batch handed to the store: the requests it took, once it took them.
struct Batch {
    shared: Arc<Shared>,
    requests: Mutex<Option<Vec<Waiting>>>,
}

impl Batch {
    /// Takes the oldest waiting requests (up to [`MAX_BATCH`], leaving out those no longer waiting) and returns
    /// their bodies; lets the task hand over the next batch.
    fn take(&self) -> Vec<Vec<u8>> {
        let requests: Vec<Waiting> = {
            let mut pending = lock(&self.shared.pending);
            let n = pending.len().min(MAX_BATCH);
            self.shared.waiting.fetch_sub(n, Ordering::Relaxed);
            pending.drain(..n).filter(|w| !w.done.is_closed()).collect()
        };
        let bodies = requests.iter().map(|w| w.body.to_vec()).collect();
        *lock(&self.requests) = Some(requests);
        self.shared.untaken.store(false, Ordering::Release);
        self.shared.taken.notify_one();
        bodies
    }
}

/// Hands one batch to the store and answers each request it took.
async fn land(conversations: Conversations, shared: Arc<Shared>) {
    let batch = Arc::new(Batch { shared: Arc::clone(&shared), requests: Mutex::new(None) });
    let taker = Arc::clone(&batch);
    let result = conversations
        .messenger_rows()
        .insert_webhook_batch(Box::new(move || taker.take()))
        .await
        .map_err(|e| e.to_string());
    let taken = lock(&batch.requests).take();
    let requests = match (taken, &result) {
        (Some(requests), _) => requests,
        // The store failed before it took the bodies: the requests waiting hear the error (and spool) instead of
        // waiting for a batch that may fail the same way.
        (None, Err(_)) => {
            batch.take();
            lock(&batch.requests).take().unwrap_or_default()
        }
        (None, Ok(())) => {
            shared.untaken.store(false, Ordering::Release);
            shared.taken.notify_one();
            Vec::new()
        }
    };
    if result.is_ok() {
        shared.batches.fetch_add(1, Ordering::Relaxed);
    }
    for waiting in requests {
        let _ = waiting.done.send(result.clone());
    }
}
