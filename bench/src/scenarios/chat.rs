//! Scenario b, persisted chat: `visitors` sockets each keeping up to `in_flight` sends pipelined, either as fast
//! as acks come back (saturation) or at a fixed offered rate spread over the visitors (open loop: a send's latency
//! counts from when it was due, so a stalled server cannot hide its queue). Every message must be acked; on
//! Parley an ack means committed. Reported: acks/s (and per second, to show drift), ack latency percentiles,
//! sends never acked, sockets dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::widget::ClientMsg;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::client::{self, Endpoint, Incoming};
use crate::scenarios::{Measured, connect_visitors_over, histogram};

/// The parts of a server frame the generator looks at.
#[derive(Deserialize)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub client_id: Option<String>,
}

pub struct ChatOutcome {
    pub acked: u64,
    pub per_second: Vec<u64>,
    pub latency: Histogram<u64>,
    pub unacked: u64,
    pub errors: u64,
    pub dropped: u64,
    pub measured: Measured,
}

impl ChatOutcome {
    pub fn throughput(&self) -> f64 {
        self.acked as f64 / self.measured.seconds.max(1e-9)
    }
}

struct VisitorResult {
    latency: Histogram<u64>,
    unacked: u64,
    errors: u64,
    dropped: bool,
}

/// Runs one chat load: `rate` msg/s overall, or `None` for saturation.
pub async fn run(
    endpoint: &Endpoint,
    pid: u32,
    visitors: usize,
    in_flight: usize,
    rate: Option<f64>,
    duration: Duration,
) -> anyhow::Result<ChatOutcome> {
    run_over(std::slice::from_ref(endpoint), &[pid], visitors, in_flight, rate, duration).await
}

/// [`run`] with the visitors spread round robin over several nodes (`endpoints`, processes `pids`).
pub async fn run_over(
    endpoints: &[Endpoint],
    pids: &[u32],
    visitors: usize,
    in_flight: usize,
    rate: Option<f64>,
    duration: Duration,
) -> anyhow::Result<ChatOutcome> {
    let sockets = connect_visitors_over(endpoints, visitors, 0).await?;
    let wire = endpoints.first().map_or(client::Wire::Plain, |e| e.wire);
    let acked = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tickets = Vec::new();
    let mut tasks = Vec::new();
    for (i, (ws, _)) in sockets.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        tickets.push(tx);
        let acked = Arc::clone(&acked);
        let stop = stop_rx.clone();
        let saturate = rate.is_none();
        tasks.push(tokio::spawn(visitor(ws, wire, i, in_flight, saturate, rx, stop, acked)));
    }
    let measured = Measured::start_many(pids);
    let start = Instant::now();
    let mut per_second = Vec::new();
    let mut last = 0;
    let mut next_second = start + Duration::from_secs(1);
    match rate {
        Some(rate) => {
            let gap = Duration::from_secs_f64(1.0 / rate.max(1.0));
            let mut due = start;
            let mut n = 0_usize;
            while start.elapsed() < duration {
                if Instant::now() >= next_second {
                    let now = acked.load(Ordering::Relaxed);
                    per_second.push(now - last);
                    last = now;
                    next_second += Duration::from_secs(1);
                }
                // Hand out every send that is due by now; then wait for the next one.
                while due <= Instant::now() {
                    let _ = tickets[n % tickets.len()].send(due);
                    n += 1;
                    due += gap;
                }
                tokio::time::sleep_until(due.into()).await;
            }
        }
        None => {
            while start.elapsed() < duration {
                tokio::time::sleep_until(next_second.into()).await;
                let now = acked.load(Ordering::Relaxed);
                per_second.push(now - last);
                last = now;
                next_second += Duration::from_secs(1);
            }
        }
    }
    let total = acked.load(Ordering::Relaxed);
    let measured = measured.finish();
    let _ = stop_tx.send(true);
    drop(tickets);
    let mut latency = histogram();
    let (mut unacked, mut errors, mut dropped) = (0, 0, 0);
    for task in tasks {
        if let Ok(r) = task.await {
            latency.add(&r.latency).ok();
            unacked += r.unacked;
            errors += r.errors;
            dropped += u64::from(r.dropped);
        }
    }
    Ok(ChatOutcome { acked: total, per_second, latency, unacked, errors, dropped, measured })
}

#[allow(clippy::too_many_arguments)]
async fn visitor(
    ws: client::Ws,
    wire: client::Wire,
    id: usize,
    in_flight: usize,
    saturate: bool,
    mut tickets: mpsc::UnboundedReceiver<Instant>,
    mut stop: watch::Receiver<bool>,
    acked: Arc<AtomicU64>,
) -> VisitorResult {
    let (mut tx, mut rx) = ws.split();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut waiting: std::collections::VecDeque<Instant> = Default::default();
    let mut result = VisitorResult { latency: histogram(), unacked: 0, errors: 0, dropped: false };
    let mut n = 0_u64;
    let mut stopping = false;
    let mut drain_until = None;
    loop {
        // Fill the window: saturation sends now, a fixed rate sends what is due.
        while !stopping && pending.len() < in_flight {
            let due = if saturate {
                Instant::now()
            } else if let Some(d) = waiting.pop_front() {
                d
            } else {
                break;
            };
            let client_id = format!("v{id}-{n}");
            n += 1;
            let msg = ClientMsg::Send { client_id: client_id.clone(), body: format!("benchmark message {n}") };
            let Ok(frame) = client::encode(wire, &msg) else { break };
            if tx.send(frame).await.is_err() {
                result.dropped = true;
                result.unacked += pending.len() as u64;
                return result;
            }
            pending.insert(client_id, due);
        }
        if stopping && pending.is_empty() {
            break;
        }
        let drain = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.next() => match client::decode(wire, msg) {
                Incoming::Frame(text) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
                    match (frame.kind.as_str(), frame.client_id) {
                        ("ack", Some(c)) => if let Some(sent) = pending.remove(&c) {
                            let _ = result.latency.record(sent.elapsed().as_micros().max(1) as u64);
                            acked.fetch_add(1, Ordering::Relaxed);
                        },
                        ("error", Some(c)) => {
                            pending.remove(&c);
                            result.errors += 1;
                        }
                        _ => {}
                    }
                }
                Incoming::SioPing => { let _ = tx.send("3".into()).await; }
                Incoming::Nothing => {}
                Incoming::End => {
                    result.dropped = true;
                    break;
                }
            },
            due = tickets.recv(), if !stopping && !saturate => match due {
                Some(due) => waiting.push_back(due),
                None => stopping = true,
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(15));
            }
            () = drain => break,
        }
    }
    result.unacked += pending.len() as u64;
    result
}
