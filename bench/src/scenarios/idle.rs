//! Scenario a, idle visitors: opens `count` visitor sockets (each past its welcome, then silent) and holds them;
//! reports the server's resident memory before, while they are held (per socket), and after they all closed and
//! the server let go of their descriptors.

use std::time::{Duration, Instant};

use crate::client::Endpoint;
use crate::scenarios::{Measured, connect_visitors, drain};
use crate::sys;

pub struct IdleOutcome {
    pub held: usize,
    pub rss_before: u64,
    pub rss_held: u64,
    pub rss_after: u64,
    pub connect_seconds: f64,
    pub measured: Measured,
}

impl IdleOutcome {
    pub fn per_socket(&self) -> f64 {
        self.rss_held.saturating_sub(self.rss_before) as f64 / self.held.max(1) as f64
    }
}

/// Waits until the server's open descriptors fall to `fds` (plus a few) or `limit` passes.
async fn fds_back_to(pid: u32, fds: usize, limit: Duration) {
    let start = Instant::now();
    while sys::open_fds(pid) > fds + 8 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(endpoint: &Endpoint, pid: u32, count: usize) -> anyhow::Result<IdleOutcome> {
    // One visitor first, so start-up allocations (the first hello's queries) are not counted per socket.
    let warm = connect_visitors(endpoint, 1, count + 10).await?;
    drop(warm);
    let fds = sys::open_fds(pid);
    fds_back_to(pid, fds, Duration::from_secs(5)).await;
    let rss_before = sys::rss_bytes(pid)?;
    let meter = Measured::start(pid);
    let start = Instant::now();
    let sockets = connect_visitors(endpoint, count, 0).await?;
    let connect_seconds = start.elapsed().as_secs_f64();
    let readers: Vec<_> = sockets.into_iter().map(|(ws, _)| drain(ws)).collect();
    // Let the server settle (hello work done, buffers at rest) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = sys::rss_bytes(pid)?;
    let measured = meter.finish();
    for reader in &readers {
        reader.abort();
    }
    drop(readers);
    fds_back_to(pid, fds, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = sys::rss_bytes(pid)?;
    Ok(IdleOutcome { held: count, rss_before, rss_held, rss_after, connect_seconds, measured })
}
