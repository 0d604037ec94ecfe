//! Scenario f, outbox sends per second to the sandbox: Parley with Messenger on, its Graph API and webhooks
//! served by the Messenger sandbox (its own process, see [`crate::sandbox`]). `customers` people write to the Page
//! once each (through the sandbox, so Parley learns them from real webhooks), then the signed-in agent replies to
//! their conversations through the agent socket, round robin, either as fast as the socket acks them (saturation:
//! up to [`WINDOW`] replies unacked) or at a fixed offered rate. Each reply's text carries its phase, customer
//! and number.
//!
//! Measured: replies delivered per second at the sandbox (first ack to last delivery), and queued → delivered
//! latency: from the agent's ack (the reply and its outbox row committed) to the sandbox answering the Send API
//! call 200 (its recorder's wall clock; same machine). Counted on the sandbox's own record of what the Page sent:
//! each reply exactly once (lost and doubled must be 0, or the figure is marked invalid) and in order per customer.
//!
//! Baseline, the path's limit: the same number of Send API calls (the same JSON, bearer token and URL as Parley's)
//! made straight to the sandbox by a plain keep-alive HTTP client, `concurrency` calls in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::console::{ClientMsg, ServerMsg};
use tokio::sync::{Mutex, Semaphore};

use crate::client::{self, Endpoint, Role};
use crate::sandbox::epoch_us;
use crate::scenarios::{Measured, histogram};
use crate::sys::CpuMeter;

/// Agent replies sent but not yet acked, at saturation.
pub const WINDOW: usize = 64;

/// How long the deliveries of one phase may take to reach the sandbox after its last reply is acked.
const DRAIN: Duration = Duration::from_secs(180);

/// What one phase measured.
pub struct Phase {
    pub replies: u64,
    pub delivered: u64,
    pub lost: u64,
    pub doubled: u64,
    /// Deliveries to one customer that reached the sandbox before an earlier reply to them.
    pub out_of_order: u64,
    pub per_second: f64,
    pub latency: Histogram<u64>,
    pub measured: Measured,
    pub sandbox_cpu: f64,
}

impl Phase {
    /// Every reply delivered once: the figure stands.
    pub fn valid(&self) -> bool {
        self.lost == 0 && self.doubled == 0
    }
}

/// The customers and the agent's view of them.
pub struct Setup {
    sandbox: String,
    http: reqwest::Client,
    pub psids: Vec<String>,
    /// Conversation id of each customer, in the order of `psids`.
    conversations: Vec<String>,
    agent: Agent,
    parley_pid: u32,
    sandbox_pid: u32,
}

/// The agent socket: a writer, and a reader task noting when each reply was acked (µs since the epoch).
struct Agent {
    sink: futures_util::stream::SplitSink<client::Ws, tokio_tungstenite::tungstenite::Message>,
    acked: Arc<Mutex<HashMap<String, u64>>>,
    window: Arc<Semaphore>,
    /// How the socket ended, once it did (the server's close frame, or the read error).
    ended: Arc<std::sync::Mutex<Option<String>>>,
    _reader: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// How the socket ended, for an error: "still open" when it did not.
    fn ended(&self) -> String {
        self.ended.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| "still open".to_string())
    }
}

async fn json(response: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<serde_json::Value> {
    let response = response.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "{what}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Creates `customers` people who each write once, and waits until the agent sees all their conversations.
pub async fn set_up(
    endpoint: &Endpoint,
    parley_pid: u32,
    sandbox: String,
    sandbox_pid: u32,
    customers: usize,
) -> anyhow::Result<Setup> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    // The agent first: every new conversation then reaches it as a summary.
    let ws = client::connect(endpoint, Role::Agent, 0).await?;
    let (sink, mut stream) = ws.split();
    let mut psids = Vec::with_capacity(customers);
    for n in 0..customers {
        let user =
            json(http.post(format!("{sandbox}/__emu/users")).json(&serde_json::json!({})).send().await, "user").await?;
        let psid = user["psid"].as_str().unwrap_or_default().to_string();
        anyhow::ensure!(!psid.is_empty(), "the sandbox created a user without a PSID: {user}");
        let text = serde_json::json!({ "text": format!("hello from customer {n}") });
        json(http.post(format!("{sandbox}/__emu/users/{psid}/messages")).json(&text).send().await, "message").await?;
        psids.push(psid);
    }
    // Conversations by the customer's first message (the summary's last message until the agent replies).
    let mut by_text: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while by_text.len() < customers {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "the agent saw {} of {customers} conversations", by_text.len());
        let Ok(Some(Ok(message))) = tokio::time::timeout(left, stream.next()).await else {
            anyhow::bail!("the agent socket ended while waiting for conversations");
        };
        let client::Incoming::Frame(text) = client::decode(client::Wire::Plain, Some(Ok(message))) else { continue };
        let summaries = match serde_json::from_str::<ServerMsg>(&text) {
            Ok(ServerMsg::Inbox { conversations, .. }) => conversations,
            Ok(ServerMsg::Summary { conversation }) => vec![conversation],
            _ => continue,
        };
        for s in summaries {
            if let Some(last) = s.last_message.filter(|m| m.starts_with("hello from customer ")) {
                by_text.insert(last, s.id);
            }
        }
    }
    let conversations =
        (0..customers).map(|n| by_text.get(&format!("hello from customer {n}")).cloned().unwrap_or_default()).collect();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let window = Arc::new(Semaphore::new(WINDOW));
    let ended: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let reader = {
        let (acked, window, ended) = (Arc::clone(&acked), Arc::clone(&window), Arc::clone(&ended));
        tokio::spawn(async move {
            let why = loop {
                let message = match stream.next().await {
                    None => break "the stream ended".to_string(),
                    Some(Err(e)) => break format!("read error: {e}"),
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        break format!("closed by the server: {frame:?}");
                    }
                    Some(Ok(message)) => message,
                };
                let client::Incoming::Frame(text) = client::decode(client::Wire::Plain, Some(Ok(message))) else {
                    continue;
                };
                // Cheap filter: most frames are summaries and events.
                if !text.starts_with(r#"{"type":"ack""#) && !text.starts_with(r#"{"type":"error""#) {
                    continue;
                }
                let at = epoch_us();
                match serde_json::from_str::<ServerMsg>(&text) {
                    Ok(ServerMsg::Ack { client_id, .. }) => {
                        acked.lock().await.insert(client_id, at);
                        window.add_permits(1);
                    }
                    Ok(ServerMsg::Error { client_id: Some(_), message, .. }) => {
                        eprintln!("bench: an agent reply was refused: {message}");
                        window.add_permits(1);
                    }
                    _ => {}
                }
            };
            eprintln!("bench: the agent socket ended ({why})");
            // A saturation phase waiting for a window slot hears it instead of waiting for acks that cannot come.
            window.close();
            if let Ok(mut e) = ended.lock() {
                *e = Some(why);
            }
        })
    };
    let agent = Agent { sink, acked, window, ended, _reader: reader };
    Ok(Setup { sandbox, http, psids, conversations, agent, parley_pid, sandbox_pid })
}

/// The text of reply `n` of `phase` to customer `c`.
fn reply_text(phase: &str, c: usize, n: usize) -> String {
    format!("f {phase} {c} {n}")
}

/// `(customer, number)` of a reply text of `phase`.
fn parse_reply(phase: &str, text: &str) -> Option<(usize, usize)> {
    let rest = text.strip_prefix("f ")?.strip_prefix(phase)?.strip_prefix(' ')?;
    let (c, n) = rest.split_once(' ')?;
    Some((c.parse().ok()?, n.parse().ok()?))
}

/// Sends `replies` agent replies round robin over the customers: at `rate` per second, or (`None`) as fast as the
/// socket acks them with [`WINDOW`] in flight; then waits for the sandbox to have them all and counts.
pub async fn phase(setup: &mut Setup, name: &str, replies: usize, rate: Option<f64>) -> anyhow::Result<Phase> {
    let customers = setup.conversations.len().max(1);
    let meter = Measured::start(setup.parley_pid);
    let sandbox_meter = CpuMeter::start(setup.sandbox_pid);
    let start = Instant::now();
    for i in 0..replies {
        let (c, n) = (i % customers, i / customers);
        match rate {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(i as f64 / rate.max(1e-9));
                tokio::time::sleep_until(due.into()).await;
            }
            None => match setup.agent.window.acquire().await {
                Ok(slot) => slot.forget(),
                Err(_) => anyhow::bail!("phase {name}: the agent socket ended at reply {i}: {}", setup.agent.ended()),
            },
        }
        let msg = ClientMsg::Send {
            conversation_id: setup.conversations[c].clone(),
            client_id: format!("{name}-{i}"),
            body: reply_text(name, c, n),
        };
        if let Err(e) = setup.agent.sink.send(client::encode(client::Wire::Plain, &msg)?).await {
            anyhow::bail!(
                "reply {i} of phase {name} could not be sent ({e}); the agent socket: {}",
                setup.agent.ended()
            );
        }
    }
    // Every reply delivered (or the drain time up).
    let deadline = Instant::now() + DRAIN;
    let delivered = loop {
        let all: Vec<(String, u64)> = serde_json::from_value(
            json(setup.http.get(format!("{}/__bench/delivered", setup.sandbox)).send().await, "delivered").await?,
        )?;
        let mine: Vec<(String, u64)> = all.into_iter().filter(|(t, _)| parse_reply(name, t).is_some()).collect();
        if mine.len() >= replies || Instant::now() > deadline {
            break mine;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let measured = meter.finish();
    let sandbox_cpu = sandbox_meter.percent();
    // Counted on the sandbox's own record, in the order it recorded them.
    let sent: Vec<serde_json::Value> = serde_json::from_value(
        json(setup.http.get(format!("{}/__emu/sent", setup.sandbox)).send().await, "sent").await?,
    )?;
    let mut seen: HashMap<(usize, usize), u64> = HashMap::new();
    let mut last_of: HashMap<usize, usize> = HashMap::new();
    let mut out_of_order = 0;
    for m in &sent {
        let Some((c, n)) = m["text"].as_str().and_then(|t| parse_reply(name, t)) else { continue };
        *seen.entry((c, n)).or_default() += 1;
        if last_of.get(&c).is_some_and(|last| *last > n) {
            out_of_order += 1;
        }
        last_of.insert(c, last_of.get(&c).copied().unwrap_or(0).max(n));
    }
    let lost = (0..replies).filter(|i| !seen.contains_key(&(i % customers, i / customers))).count() as u64;
    let doubled = seen.values().map(|k| k.saturating_sub(1)).sum();
    let acked = setup.agent.acked.lock().await;
    let mut latency = histogram();
    let mut first_ack = u64::MAX;
    let mut last_delivery = 0;
    for i in 0..replies {
        if let Some(at) = acked.get(&format!("{name}-{i}")) {
            first_ack = first_ack.min(*at);
        }
    }
    for (text, at) in &delivered {
        last_delivery = last_delivery.max(*at);
        let Some((c, n)) = parse_reply(name, text) else { continue };
        if let Some(queued) = acked.get(&format!("{name}-{}", n * customers + c)) {
            let _ = latency.record(at.saturating_sub(*queued).max(1));
        }
    }
    let span = last_delivery.saturating_sub(first_ack) as f64 / 1e6;
    Ok(Phase {
        replies: replies as u64,
        delivered: seen.len() as u64,
        lost,
        doubled,
        out_of_order,
        per_second: if span > 0.0 { seen.len() as f64 / span } else { 0.0 },
        latency,
        measured,
        sandbox_cpu,
    })
}

/// Makes every Send API call of the sandbox take `ms` longer (its `hang` fault on every call); 0 clears it.
pub async fn set_latency(setup: &Setup, ms: u64) -> anyhow::Result<()> {
    json(setup.http.delete(format!("{}/__emu/faults", setup.sandbox)).send().await, "clear faults").await?;
    if ms > 0 {
        let rule = serde_json::json!({ "kind": "hang", "ms": ms, "probability": 1.0 });
        json(setup.http.post(format!("{}/__emu/faults/send", setup.sandbox)).json(&rule).send().await, "fault").await?;
    }
    Ok(())
}

/// The baseline: `calls` Send API calls straight to the sandbox, `concurrency` in flight over keep-alive
/// connections, round robin over the customers. Returns calls answered 200 per second and their latency.
pub async fn baseline(
    setup: &Setup,
    name: &str,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, Histogram<u64>, u64)> {
    let c = crate::sandbox::config(None, None);
    let url = format!("{}/{}/{}/messages", setup.sandbox, "v25.0", c.page_id);
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, url, next, token) = (http.clone(), url.clone(), Arc::clone(&next), c.page_token.clone());
        let (psids, name) = (setup.psids.clone(), name.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut latency, mut ok) = (histogram(), 0_u64);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let customer = i % psids.len().max(1);
                let body = serde_json::json!({
                    "recipient": { "id": psids[customer] },
                    "messaging_type": "RESPONSE",
                    "message": { "text": reply_text(&name, customer, i / psids.len().max(1)), "metadata": format!("base-{i}") },
                });
                let sent = Instant::now();
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(r) => eprintln!("bench: baseline call refused: {}", r.status()),
                    Err(e) => eprintln!("bench: baseline call failed: {e}"),
                }
            }
            (latency, ok)
        }));
    }
    let (mut latency, mut ok) = (histogram(), 0);
    for task in tasks {
        let (l, n) = task.await?;
        latency.add(&l).ok();
        ok += n;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok((ok as f64 / seconds, latency, ok))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reply_texts_round_trip_and_phases_stay_apart() {
        let text = super::reply_text("sat", 12, 7);
        assert_eq!(super::parse_reply("sat", &text), Some((12, 7)));
        assert_eq!(super::parse_reply("sat2", &text), None);
        assert_eq!(super::parse_reply("sa", &text), None);
        assert_eq!(super::parse_reply("sat", "hello from customer 1"), None);
    }
}
