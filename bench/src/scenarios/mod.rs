//! The scenarios (`chat` b, `delivery` c, `idle` a, `storm` d, `webhook` e, `outbox` f, `widget`, `pg`, `nodes` g) and what they share: connecting many visitors
//! without flooding the listen queue, HDR histograms in microseconds, and the CPU and memory measured over a run.

pub mod chat;
pub mod delivery;
pub mod idle;
pub mod nodes;
pub mod outbox;
pub mod pg;
pub mod storm;
pub mod webhook;
pub mod widget;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::{self, Endpoint, Welcome, Ws};
use crate::sys::{self, CpuMeter};

/// Connection attempts in progress at once while a scenario sets up.
pub const CONNECTING: usize = 200;

/// A histogram of microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// p50, p99 and p99.9 in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1000.0)
}

/// CPU and memory over one measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub seconds: f64,
    /// Percent of one core.
    pub server_cpu: f64,
    pub generator_cpu: f64,
    pub server_rss: u64,
}

pub struct Meter {
    servers: Vec<CpuMeter>,
    generator: CpuMeter,
    pids: Vec<u32>,
    t0: Instant,
}

impl Measured {
    pub fn start(pid: u32) -> Meter {
        Self::start_many(&[pid])
    }

    /// One window over several server processes (nodes): their CPU and RSS summed.
    pub fn start_many(pids: &[u32]) -> Meter {
        Meter {
            servers: pids.iter().map(|&pid| CpuMeter::start(pid)).collect(),
            generator: CpuMeter::start(std::process::id()),
            pids: pids.to_vec(),
            t0: Instant::now(),
        }
    }

    /// Whether the generator was busy enough that it, not the server, may have been the limit.
    pub fn generator_bound(&self) -> bool {
        self.generator_cpu > 80.0
    }
}

impl Meter {
    pub fn finish(self) -> Measured {
        Measured {
            seconds: self.t0.elapsed().as_secs_f64(),
            server_cpu: self.servers.iter().map(CpuMeter::percent).sum(),
            generator_cpu: self.generator.percent(),
            server_rss: self.pids.iter().map(|&pid| sys::rss_bytes(pid).unwrap_or(0)).sum(),
        }
    }
}

/// Connects `count` visitors (source addresses from `first_source` on), each past its welcome, `CONNECTING` at a
/// time; in order.
pub async fn connect_visitors(
    endpoint: &Endpoint,
    count: usize,
    first_source: usize,
) -> anyhow::Result<Vec<(Ws, Welcome)>> {
    connect_visitors_over(std::slice::from_ref(endpoint), count, first_source).await
}

/// [`connect_visitors`] spread round robin over several endpoints (nodes): visitor `i` on `endpoints[i % len]`.
pub async fn connect_visitors_over(
    endpoints: &[Endpoint],
    count: usize,
    first_source: usize,
) -> anyhow::Result<Vec<(Ws, Welcome)>> {
    anyhow::ensure!(!endpoints.is_empty(), "no endpoint to connect visitors to");
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut last = None;
            for _ in 0..5 {
                match client::visitor(&endpoint, first_source + i, None, 0).await {
                    Ok(found) => return Ok(found),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot connect")))
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    for task in tasks {
        sockets.push(task.await??);
    }
    Ok(sockets)
}

/// Keeps a socket read (and so answering pings) until it ends or the task is dropped.
pub fn drain(ws: Ws) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ws = ws;
        while let Some(Ok(_)) = ws.next().await {}
    })
}
