//! Scenario d, a reconnect storm: `count` visitors, each with one acked message, send one more message and lose
//! their connection at once (cut, no close handshake: the last message may or may not have been stored). All then
//! reconnect — at once, or spread by a random delay of up to `jitter` — resuming from their last acked `seq` and
//! re-sending the last message if their welcome does not hold it, as the widget does. Reported: time until every
//! visitor has resumed (welcome received and the last message acked), reconnect attempts that failed, listen-queue
//! overflows (TcpExt ListenOverflows), and then, from a fresh `hello` of every visitor, messages lost or stored
//! twice (both must be 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hdrhistogram::Histogram;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{Event, EventKind};
use tokio::sync::Semaphore;

use crate::client::{self, Endpoint, Ws};
use crate::scenarios::{CONNECTING, Measured, connect_visitors, histogram};
use crate::sys;

pub struct StormOutcome {
    pub visitors: usize,
    pub all_resumed_seconds: f64,
    pub resume: Histogram<u64>,
    pub failed_attempts: u64,
    pub not_resumed: u64,
    pub lost: u64,
    pub doubled: u64,
    pub listen_overflows: u64,
    pub measured: Measured,
}

const LIMIT: Duration = Duration::from_secs(60);

/// Sends a message and waits for its ack; its seq.
async fn send_acked(ws: &mut Ws, wire: client::Wire, client_id: &str, body: &str) -> Option<u64> {
    let msg = ClientMsg::Send { client_id: client_id.to_string(), body: body.to_string() };
    ws.send(client::encode(wire, &msg).ok()?).await.ok()?;
    client::recv_until(ws, wire, LIMIT, |text| match serde_json::from_str(text).ok()? {
        ServerMsg::Ack { client_id: c, seq, .. } if c == client_id => Some(seq),
        _ => None,
    })
    .await
}

fn count_of(events: &[Event], client_id: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Message { message } if message.client_id == client_id))
        .count()
}

pub async fn run(endpoint: &Endpoint, pid: u32, count: usize, jitter: Duration) -> anyhow::Result<StormOutcome> {
    let sockets = connect_visitors(endpoint, count, 0).await?;
    // Everyone has a conversation with one acked message.
    let gate = Arc::new(Semaphore::new(CONNECTING * 4));
    let mut setup = Vec::with_capacity(count);
    for (i, (mut ws, welcome)) in sockets.into_iter().enumerate() {
        let wire = endpoint.wire;
        let gate = Arc::clone(&gate);
        setup.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let seq = send_acked(&mut ws, wire, &format!("s{i}-0"), "before the storm").await?;
            Some((ws, welcome.token, seq))
        }));
    }
    let mut visitors = Vec::with_capacity(count);
    for task in setup {
        visitors.push(task.await?.ok_or_else(|| anyhow::anyhow!("a visitor's first message was not acked"))?);
    }
    let (overflows_before, _) = sys::listen_overflows()?;
    // One more message each, then every connection is cut at once.
    let mut cut = Vec::with_capacity(count);
    for (i, (mut ws, token, seq)) in visitors.into_iter().enumerate() {
        let msg = ClientMsg::Send { client_id: format!("s{i}-1"), body: "during the storm".into() };
        if let Ok(frame) = client::encode(endpoint.wire, &msg) {
            let _ = ws.send(frame).await;
        }
        cut.push((ws, token, seq));
    }
    let meter = Measured::start(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for (i, (ws, token, seq)) in cut.into_iter().enumerate() {
        drop(ws);
        let endpoint = endpoint.clone();
        let delay = jitter.mul_f64(rand::random::<f64>());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut failed = 0_u64;
            let client_id = format!("s{i}-1");
            while t0.elapsed() < LIMIT {
                let attempt = async {
                    let (mut ws, welcome) = client::visitor(&endpoint, i, Some(token.clone()), seq).await?;
                    if count_of(&welcome.events, &client_id) == 0 {
                        send_acked(&mut ws, endpoint.wire, &client_id, "during the storm")
                            .await
                            .ok_or_else(|| anyhow::anyhow!("re-send not acked"))?;
                    }
                    anyhow::Ok(ws)
                };
                match attempt.await {
                    Ok(ws) => return (Some(t0.elapsed()), failed, Some(ws), token),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (None, failed, None, token)
        }));
    }
    let mut resume = histogram();
    let (mut all, mut failed_attempts, mut not_resumed) = (Duration::ZERO, 0, 0);
    let mut tokens = Vec::with_capacity(count);
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        let (took, failed, ws, token) = task.await?;
        failed_attempts += failed;
        match took {
            Some(took) => {
                all = all.max(took);
                let _ = resume.record(took.as_micros().max(1) as u64);
            }
            None => not_resumed += 1,
        }
        held.extend(ws);
        tokens.push(token);
    }
    let measured = meter.finish();
    let (overflows_after, _) = sys::listen_overflows()?;
    drop(held);
    // Count every visitor's messages from a fresh hello.
    let (mut lost, mut doubled) = (0, 0);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut checks = Vec::with_capacity(count);
    for (i, token) in tokens.into_iter().enumerate() {
        let endpoint = endpoint.clone();
        let gate = Arc::clone(&gate);
        checks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let (_, welcome) = client::visitor(&endpoint, i, Some(token), 0).await?;
            anyhow::Ok([0, 1].map(|k| count_of(&welcome.events, &format!("s{i}-{k}"))))
        }));
    }
    for check in checks {
        for n in check.await?? {
            match n {
                0 => lost += 1,
                1 => {}
                _ => doubled += 1,
            }
        }
    }
    Ok(StormOutcome {
        visitors: count,
        all_resumed_seconds: all.as_secs_f64(),
        resume,
        failed_attempts,
        not_resumed,
        lost,
        doubled,
        listen_overflows: overflows_after.saturating_sub(overflows_before),
        measured,
    })
}
