//! Scenario e, signed webhook intake: `clients` keep-alive HTTP connections POST Messenger deliveries (one
//! customer message each, from a thousand customers in turn) to `/webhooks/messenger` as fast as they are
//! answered, each signed like Meta (and the sandbox) sign: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
//! secret, raw body)>`. Parley answers 200 only once the delivery is spooled to disk. Reported: deliveries acked
//! per second and the ack latency; refusals counted. Either at saturation (each client posts again as soon as it is
//! answered) or at a fixed offered rate spread over the clients (open loop: each client's posts are due at fixed
//! times, and an ack's latency counts from when its post was due, so a stalled server cannot hide its queue; the
//! latency from when the post was actually sent, which leaves out the wait for the client's previous answer, is
//! reported beside it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::scenarios::{Measured, histogram};

pub struct WebhookOutcome {
    pub acked: u64,
    pub refused: u64,
    /// From when each post was due (at saturation: when it was sent).
    pub latency: Histogram<u64>,
    /// From when each post was sent.
    pub from_sent: Histogram<u64>,
    pub measured: Measured,
}

impl WebhookOutcome {
    pub fn per_second(&self) -> f64 {
        self.acked as f64 / self.measured.seconds.max(1e-9)
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &str, body: &str) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body.as_bytes());
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// One delivery with one customer message.
fn delivery(page_id: &str, n: u64) -> String {
    let psid = format!("{}", 7_000_000_000_000_000_u64 + n % 1000);
    serde_json::json!({"object": "page", "entry": [{"id": page_id, "time": n, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": 1_700_000_000_000_u64 + n,
        "message": {"mid": format!("m_bench_{n}"), "text": format!("webhook message {n}")}}]}]})
    .to_string()
}

pub async fn run(
    addr: std::net::SocketAddr,
    pid: u32,
    app_secret: &str,
    page_id: &str,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<WebhookOutcome> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).tcp_nodelay(true).build()?;
    let url = format!("http://{addr}/webhooks/messenger");
    let next = Arc::new(AtomicU64::new(0));
    let meter = Measured::start(pid);
    let start = Instant::now();
    // At a fixed rate each client posts every `gap`, the clients' schedules staggered evenly over one gap.
    let gap = rate.map(|r| Duration::from_secs_f64(clients as f64 / r.max(1e-9)));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (http, url, next) = (http.clone(), url.clone(), Arc::clone(&next));
        let (secret, page) = (app_secret.to_string(), page_id.to_string());
        let mut due = gap.map(|g| start + g.mul_f64(i as f64 / clients as f64));
        tasks.push(tokio::spawn(async move {
            let (mut latency, mut from_sent, mut acked, mut refused) = (histogram(), histogram(), 0_u64, 0_u64);
            while start.elapsed() < duration {
                if let Some(at) = due {
                    tokio::time::sleep_until(at.into()).await;
                    if start.elapsed() >= duration {
                        break;
                    }
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = delivery(&page, n);
                let Ok(signature) = sign(&secret, &body) else { break };
                // Open loop: the latency counts from when the post was due, not from when it could be sent.
                let posted = Instant::now();
                let sent = due.unwrap_or(posted);
                if let (Some(at), Some(g)) = (due.as_mut(), gap) {
                    *at += g;
                }
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        acked += 1;
                        let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                        let _ = from_sent.record(posted.elapsed().as_micros().max(1) as u64);
                    }
                    _ => refused += 1,
                }
            }
            (latency, from_sent, acked, refused)
        }));
    }
    let mut outcome = WebhookOutcome {
        acked: 0,
        refused: 0,
        latency: histogram(),
        from_sent: histogram(),
        measured: Measured::default(),
    };
    for task in tasks {
        let (latency, from_sent, acked, refused) = task.await?;
        outcome.latency.add(&latency).ok();
        outcome.from_sent.add(&from_sent).ok();
        outcome.acked += acked;
        outcome.refused += refused;
    }
    outcome.measured = meter.finish();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_match_the_known_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        let signed = super::sign("Jefe", "what do ya want for nothing?").expect("signs");
        assert_eq!(signed, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
