//! Scenario c, visitor → agent delivery: `visitors` sockets connected, one signed-in agent, and messages sent at
//! `rate` msg/s overall, round robin over the visitors. Each body carries its number; the latency is from the
//! visitor's send to the first frame the agent gets that carries that body (on Parley the inbox `summary` every
//! agent receives; the baselines send a `summary` and an `event`). Messages never seen by the agent are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::widget::ClientMsg;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::client::{self, Endpoint, Incoming, Role};
use crate::scenarios::{Measured, connect_visitors_over, histogram};

pub struct DeliveryOutcome {
    pub sent: u64,
    pub seen: u64,
    pub latency: Histogram<u64>,
    pub agent_dropped: u64,
    pub measured: Measured,
}

const TAG: &str = "delivery-";

#[derive(Deserialize)]
struct AgentFrame {
    #[serde(default)]
    conversation: Option<Summary>,
    #[serde(default)]
    event: Option<EventBody>,
}

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    last_message: Option<String>,
}

#[derive(Deserialize)]
struct EventBody {
    #[serde(default)]
    message: Option<MessageBody>,
}

#[derive(Deserialize)]
struct MessageBody {
    body: String,
}

fn number(body: &str) -> Option<usize> {
    body.strip_prefix(TAG)?.parse().ok()
}

pub async fn run(
    endpoint: &Endpoint,
    pid: u32,
    visitors: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<DeliveryOutcome> {
    run_over(std::slice::from_ref(endpoint), endpoint, &[pid], visitors, rate, duration).await
}

/// [`run`] with the visitors spread round robin over `visitors_at` and the agent on `agent_at` (several nodes:
/// processes `pids`).
pub async fn run_over(
    visitors_at: &[Endpoint],
    agent_at: &Endpoint,
    pids: &[u32],
    visitors: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<DeliveryOutcome> {
    let endpoint = agent_at;
    let sockets = connect_visitors_over(visitors_at, visitors, 0).await?;
    let expected = (rate * duration.as_secs_f64()) as usize + 16;
    // When message n was sent, in µs since `t0` (0: not sent yet), and whether the agent has seen it.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..expected).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let mut agent = client::connect(endpoint, Role::Agent, visitors + 1).await?;
    let agent_dropped = Arc::new(AtomicU64::new(0));
    let seen_count = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let agent_task = {
        let seen_count = Arc::clone(&seen_count);
        let sent_at = Arc::clone(&sent_at);
        let dropped = Arc::clone(&agent_dropped);
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let mut latency = histogram();
            let mut seen = vec![false; sent_at.len()];
            let mut count = 0_u64;
            loop {
                let next = tokio::select! {
                    next = agent.next() => next,
                    _ = stop_rx.changed() => break,
                };
                match client::decode(endpoint.wire, next) {
                    Incoming::Frame(text) => {
                        let Ok(frame) = serde_json::from_str::<AgentFrame>(&text) else { continue };
                        let body = frame
                            .conversation
                            .and_then(|s| s.last_message)
                            .or_else(|| frame.event.and_then(|e| e.message).map(|m| m.body));
                        if let Some(n) = body.as_deref().and_then(number)
                            && n < seen.len()
                            && !seen[n]
                        {
                            let at = sent_at[n].load(Ordering::Acquire);
                            if at > 0 {
                                seen[n] = true;
                                count += 1;
                                seen_count.fetch_add(1, Ordering::Relaxed);
                                let now = t0.elapsed().as_micros() as u64;
                                let _ = latency.record(now.saturating_sub(at).max(1));
                            }
                        }
                    }
                    Incoming::SioPing => {
                        let _ = agent.send("3".into()).await;
                    }
                    Incoming::Nothing => {}
                    Incoming::End => {
                        // Dropped (too slow?): count it and sign back in.
                        dropped.fetch_add(1, Ordering::Relaxed);
                        match client::connect(&endpoint, Role::Agent, visitors + 2).await {
                            Ok(ws) => agent = ws,
                            Err(_) => break,
                        }
                    }
                }
            }
            (latency, count)
        })
    };
    // Visitors: each gets its sends through a channel; every socket is read so acks never back up.
    let mut senders = Vec::with_capacity(visitors);
    for (i, (ws, _)) in sockets.into_iter().enumerate() {
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        senders.push(tx);
        let wire = endpoint.wire;
        let sent_at = Arc::clone(&sent_at);
        tokio::spawn(async move {
            let (mut tx, mut reader) = ws.split();
            loop {
                tokio::select! {
                    n = rx.recv() => {
                        let Some(n) = n else { break };
                        let msg = ClientMsg::Send { client_id: format!("d{i}-{n}"), body: format!("{TAG}{n}") };
                        let Ok(frame) = client::encode(wire, &msg) else { break };
                        sent_at[n].store(t0.elapsed().as_micros().max(1) as u64, Ordering::Release);
                        if tx.send(frame).await.is_err() { break }
                    }
                    msg = reader.next() => match client::decode(wire, msg) {
                        Incoming::End => break,
                        Incoming::SioPing => { let _ = tx.send("3".into()).await; }
                        _ => {}
                    },
                }
            }
        });
    }
    let measured = Measured::start_many(pids);
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut n = 0;
    while start.elapsed() < duration && n < expected {
        let _ = senders[n % senders.len()].send(n);
        n += 1;
        tokio::time::sleep_until((start + gap * n as u32).into()).await;
    }
    let measured = measured.finish();
    // Give the last messages time to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && seen_count.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    drop(senders);
    let (latency, seen) = agent_task.await.unwrap_or_else(|_| (histogram(), 0));
    Ok(DeliveryOutcome {
        sent: n as u64,
        seen,
        latency,
        agent_dropped: agent_dropped.load(Ordering::Relaxed),
        measured,
    })
}
