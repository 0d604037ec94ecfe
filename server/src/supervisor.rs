//! Background workers under supervision, and the health registry `/healthz` reports from.
//!
//! [`Workers::supervise`] runs a worker in its own task and watches its `JoinHandle`: a worker that returns an
//! error, panics or simply ends while the server is not stopping is logged and restarted after an exponential
//! backoff (reset once it has run longer than the longest delay), and its entry shows `restarting` meanwhile. On
//! shutdown the stop signal flips, the worker winds down by itself (the outbox lets in-flight sends finish), and its
//! entry shows `stopped`. Each entry also carries named counters a worker keeps (`iterations`, `graph_calls`, a
//! quarantine count…) through its [`WorkerHealth`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a worker is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Running,
    /// It failed and waits for its restart.
    Restarting,
    /// The server is shutting down and the worker has ended.
    Stopped,
}

/// One worker's entry in `/healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStatus {
    pub state: WorkerState,
    /// Times it failed and was started again.
    pub restarts: u64,
    /// Why it failed last (an error chain or a panic message).
    pub last_failure: Option<String>,
    /// Counters the worker keeps.
    pub counters: BTreeMap<&'static str, u64>,
}

/// The registry of supervised workers. Cheap to share (`Arc`).
#[derive(Default)]
pub struct Workers {
    entries: Mutex<BTreeMap<&'static str, WorkerStatus>>,
}

/// Restart delays.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { first: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

/// What a worker run gets: the stop signal (`true` = wind down) and its health entry.
#[derive(Clone)]
pub struct WorkerContext {
    pub stop: watch::Receiver<bool>,
    pub health: WorkerHealth,
}

/// A worker's handle on its own entry.
#[derive(Clone)]
pub struct WorkerHealth {
    workers: Arc<Workers>,
    name: &'static str,
}

impl WorkerHealth {
    /// Adds `n` to a counter.
    pub fn add(&self, counter: &'static str, n: u64) {
        self.workers.update(self.name, |s| {
            let value = s.counters.entry(counter).or_insert(0);
            *value = value.saturating_add(n);
        });
    }

    /// Sets a counter (a gauge such as the number of quarantined deliveries).
    pub fn set(&self, counter: &'static str, value: u64) {
        self.workers.update(self.name, |s| {
            s.counters.insert(counter, value);
        });
    }
}

/// Aborts the task when dropped, so a supervisor that is itself aborted takes its worker with it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Workers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, WorkerStatus>> {
        // Every update is a single field change: a poisoned lock still holds consistent entries.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut WorkerStatus)) {
        let mut entries = self.lock();
        let entry = entries.entry(name).or_insert_with(|| WorkerStatus {
            state: WorkerState::Running,
            restarts: 0,
            last_failure: None,
            counters: BTreeMap::new(),
        });
        change(entry);
    }

    /// Every worker's entry, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, WorkerStatus> {
        self.lock().clone()
    }

    /// Whether every registered worker is running.
    pub fn all_running(&self) -> bool {
        self.lock().values().all(|s| s.state == WorkerState::Running)
    }

    /// The health handle of a worker (registering it).
    pub fn health(self: &Arc<Self>, name: &'static str) -> WorkerHealth {
        self.update(name, |_| {});
        WorkerHealth { workers: Arc::clone(self), name }
    }

    /// Runs `make(ctx)` as worker `name` until `stop` turns `true`, restarting it with backoff whenever it fails.
    /// The returned task ends once the worker has stopped.
    pub fn supervise<F, Fut>(
        self: &Arc<Self>,
        name: &'static str,
        stop: watch::Receiver<bool>,
        backoff: Backoff,
        make: F,
    ) -> JoinHandle<()>
    where
        F: Fn(WorkerContext) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let health = self.health(name);
        let workers = Arc::clone(self);
        tokio::spawn(async move {
            let mut stop = stop;
            let mut delay = backoff.first;
            loop {
                workers.update(name, |s| s.state = WorkerState::Running);
                let started = Instant::now();
                let mut child =
                    AbortOnDrop(tokio::spawn(make(WorkerContext { stop: stop.clone(), health: health.clone() })));
                let outcome = (&mut child.0).await;
                let stopping = *stop.borrow();
                let failure = match outcome {
                    Ok(Ok(())) if stopping => None,
                    Ok(Ok(())) => Some("the worker ended by itself".to_string()),
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(e) if e.is_panic() => Some(format!("panicked: {}", panic_message(e.into_panic()))),
                    Err(e) => Some(e.to_string()),
                };
                if stopping {
                    if let Some(failure) = &failure {
                        tracing::warn!(worker = name, failure = %failure, "worker failed while stopping");
                    }
                    workers.update(name, |s| s.state = WorkerState::Stopped);
                    return;
                }
                let failure = failure.unwrap_or_default();
                if started.elapsed() > backoff.max {
                    delay = backoff.first;
                }
                tracing::error!(worker = name, failure = %failure, retry_in_ms = delay.as_millis(), "worker failed; restarting");
                workers.update(name, |s| {
                    s.state = WorkerState::Restarting;
                    s.restarts += 1;
                    s.last_failure = Some(failure);
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stopping| *stopping) => {
                        workers.update(name, |s| s.state = WorkerState::Stopped);
                        return;
                    }
                }
                delay = delay.saturating_mul(2).min(backoff.max);
            }
        })
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn wait_for(workers: &Workers, name: &str, what: impl Fn(&WorkerStatus) -> bool) -> WorkerStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = workers.snapshot().get(name).filter(|s| what(s)) {
                return status.clone();
            }
            assert!(Instant::now() < deadline, "{name} never got there: {:?}", workers.snapshot());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_worker_that_panics_or_fails_is_restarted_with_growing_delays() {
        let workers = Workers::new();
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let backoff = Backoff { first: Duration::from_millis(20), max: Duration::from_secs(5) };
        let task = workers.supervise("flaky", stop, backoff, move |ctx| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.health.add("runs", 1);
                match run {
                    0 => panic!("bad input at byte 3"),
                    1 => anyhow::bail!("database gone"),
                    _ => {
                        let mut stop = ctx.stop;
                        let _ = stop.wait_for(|s| *s).await;
                        Ok(())
                    }
                }
            }
        });
        let status = wait_for(&workers, "flaky", |s| s.restarts == 2 && s.state == WorkerState::Running).await;
        assert_eq!(status.last_failure.as_deref(), Some("database gone"));
        assert_eq!(status.counters.get("runs"), Some(&3));
        assert!(workers.all_running());
        stop_tx.send_replace(true);
        task.await.expect("supervisor ends");
        assert_eq!(workers.snapshot()["flaky"].state, WorkerState::Stopped);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failing_worker_shows_as_restarting_until_it_is_back() {
        let workers = Workers::new();
        let (_stop_tx, stop) = watch::channel(false);
        let backoff = Backoff { first: Duration::from_secs(3600), max: Duration::from_secs(3600) };
        let _task = workers.supervise("broken", stop, backoff, |_| async { panic!("always") });
        let status = wait_for(&workers, "broken", |s| s.state == WorkerState::Restarting).await;
        assert_eq!(status.restarts, 1);
        assert_eq!(status.last_failure.as_deref(), Some("panicked: always"));
        assert!(!workers.all_running());
    }
}
