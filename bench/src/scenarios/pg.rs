//! Scenario `pg`: how far one PostgreSQL goes for several Parley nodes. On a private cluster started for the run
//! with durable commits (`fsync`, `synchronous_commit` and `full_page_writes` on — unlike the test cluster), it
//! measures:
//! - notifications per second through `LISTEN/NOTIFY`, one `pg_notify` per transaction and batched as Parley's bus
//!   sender sends them (`Bus::publish`), each received by every one of several listening connections (nodes);
//! - commits per second of Parley's own message transaction (`Store::append_message`), writers spread over many
//!   conversations, all in one conversation (they queue on its row lock), and followed by the nudge Parley sends
//!   after each commit;
//! - the cost of notifying inside the committing transaction rather than after it: PostgreSQL serializes the
//!   commits of notifying transactions on one lock, held across their WAL flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use parley::messenger::policy::MirrorPolicy;
use parley::store::bus::Nudge;
use parley::store::models::ContactContext;
use parley::store::{AppendOutcome, NewMessage, Store};
use protocol::{Author, Channel};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener, PgPoolOptions};

use crate::scenarios::histogram;
use crate::sys::CpuMeter;

/// The channel of this benchmark (not Parley's own).
const CHANNEL: &str = "parley_bench";
/// A payload the size of Parley's event nudge (node id, conversation id, contact id, seq, time).
const PAYLOAD: &str = r#"{"o":"0190f5c3-6a4e-7cc2-9d0b-4f8a1c2e3b4d","k":"event","c":"0190f5c3-6a4e-7cc2-9d0b-4f8a1c2e3b4e","p":"0190f5c3-6a4e-7cc2-9d0b-4f8a1c2e3b4f","s":123456,"at":1764600000000}"#;
/// Notifications per statement in the batched run (Parley's sender sends what queued up, up to 1000).
pub const BATCH: usize = 100;

/// One notification run.
#[derive(Debug)]
pub struct Notify {
    pub senders: usize,
    pub per_statement: usize,
    pub listeners: usize,
    /// Notifications sent per second.
    pub sent_per_second: f64,
    /// Of all sent, the share every listener received (1.0: none lost).
    pub received_share: f64,
    /// Notifications one listener received per second, from the first send to its last receipt.
    pub received_per_second: f64,
    pub generator_cpu: f64,
}

/// One commit run.
#[derive(Debug)]
pub struct Commits {
    pub writers: usize,
    pub per_second: f64,
    pub latency: Histogram<u64>,
    pub generator_cpu: f64,
}

/// Everything the scenario measured.
#[derive(Debug)]
pub struct PgOutcome {
    pub server: String,
    pub notify: Vec<Notify>,
    /// Writers on their own conversations; all in one conversation; each commit followed by its nudge.
    pub spread: Commits,
    pub hot: Commits,
    pub with_nudge: Commits,
    /// A one-row insert per transaction: plain, with `pg_notify` inside it, and with `pg_notify` right after it.
    pub plain_tx: Commits,
    pub notify_inside: Commits,
    pub notify_after: Commits,
}

/// Starts the cluster and runs every measurement for `seconds` each with `writers` concurrent connections.
pub async fn run(seconds: Duration, writers: usize, listeners: usize) -> anyhow::Result<PgOutcome> {
    let cluster = tokio::task::spawn_blocking(|| {
        testpg::Cluster::start_with(&["fsync=on", "synchronous_commit=on", "full_page_writes=on"])
    })
    .await?
    .context("cannot start a PostgreSQL cluster (install Debian's postgresql package)")?;
    let admin = cluster.admin_url();
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query("create database parley_bench").execute(&mut conn).await?;
    let version: String = sqlx::query_scalar("show server_version").fetch_one(&mut conn).await?;
    let fsync: String = sqlx::query_scalar("show fsync").fetch_one(&mut conn).await?;
    let sync: String = sqlx::query_scalar("show synchronous_commit").fetch_one(&mut conn).await?;
    conn.close().await?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    let url = format!("{base}/parley_bench");
    let server = format!("PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}");

    let mut notify = Vec::new();
    for (senders, per_statement) in [(1, 1), (writers, 1), (1, BATCH), (writers, BATCH)] {
        notify.push(notifications(&url, senders, per_statement, listeners, seconds).await?);
    }
    let store = Store::connect(&url, u32::try_from(writers + 2).unwrap_or(64)).await?;
    let spread = messages(&store, writers, false, false, seconds).await?;
    let hot = messages(&store, writers, true, false, seconds).await?;
    let with_nudge = messages(&store, writers, false, true, seconds).await?;
    store.close().await;
    let plain_tx = inserts(&url, writers, Nudging::No, seconds).await?;
    let notify_inside = inserts(&url, writers, Nudging::Inside, seconds).await?;
    let notify_after = inserts(&url, writers, Nudging::After, seconds).await?;
    drop(cluster);
    Ok(PgOutcome { server, notify, spread, hot, with_nudge, plain_tx, notify_inside, notify_after })
}

async fn notifications(
    url: &str,
    senders: usize,
    per_statement: usize,
    listeners: usize,
    seconds: Duration,
) -> anyhow::Result<Notify> {
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..listeners).map(|_| AtomicU64::new(0)).collect());
    let last_receipt = Arc::new(std::sync::Mutex::new(vec![Instant::now(); listeners]));
    let mut listening = Vec::new();
    for i in 0..listeners {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let (received, last_receipt) = (Arc::clone(&received), Arc::clone(&last_receipt));
        listening.push(tokio::spawn(async move {
            while listener.recv().await.is_ok() {
                received[i].fetch_add(1, Ordering::Relaxed);
                if let Ok(mut at) = last_receipt.lock() {
                    at[i] = Instant::now();
                }
            }
        }));
    }
    let pool = PgPoolOptions::new().max_connections(u32::try_from(senders).unwrap_or(64)).connect(url).await?;
    // Distinct payloads: PostgreSQL delivers identical ones sent in one transaction once.
    let payloads: Vec<String> = (0..per_statement).map(|i| PAYLOAD.replace("123456", &i.to_string())).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu = CpuMeter::start(std::process::id());
    let t0 = Instant::now();
    let mut sending = Vec::new();
    for _ in 0..senders {
        let (pool, payloads, stop, sent) = (pool.clone(), payloads.clone(), Arc::clone(&stop), Arc::clone(&sent));
        sending.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let done = sqlx::query("select pg_notify($1, p) from unnest($2::text[]) as p")
                    .bind(CHANNEL)
                    .bind(&payloads)
                    .execute(&pool)
                    .await;
                if done.is_ok() {
                    sent.fetch_add(payloads.len() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    for task in sending {
        task.await?;
    }
    let send_seconds = t0.elapsed().as_secs_f64();
    let total = sent.load(Ordering::Relaxed);
    // Let the listeners drain what is queued for them (at most half a minute).
    let drained = Instant::now();
    while received.iter().any(|r| r.load(Ordering::Relaxed) < total) && drained.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let generator_cpu = cpu.percent();
    for task in listening {
        task.abort();
    }
    pool.close().await;
    let least = received.iter().map(|r| r.load(Ordering::Relaxed)).min().unwrap_or(0);
    let last = last_receipt.lock().map(|at| at.iter().copied().max()).ok().flatten().unwrap_or_else(Instant::now);
    let receive_seconds = last.saturating_duration_since(t0).as_secs_f64().max(send_seconds.min(1e-3));
    Ok(Notify {
        senders,
        per_statement,
        listeners,
        sent_per_second: total as f64 / send_seconds,
        received_share: if total == 0 { 0.0 } else { least as f64 / total as f64 },
        received_per_second: least as f64 / receive_seconds,
        generator_cpu,
    })
}

fn reply(i: u64) -> NewMessage {
    NewMessage {
        client_id: format!("m{i}"),
        body: "A reply of about the length agents write, give or take a few words.".into(),
        author: Author::Visitor,
        agent_id: None,
        channel: Channel::Web,
        external_id: None,
        attachments: Vec::new(),
        messenger_action_at: None,
        mirror: None::<MirrorPolicy>,
    }
}

/// `writers` concurrent posters through `Store::append_message`, each on its own conversation (or all on one).
/// With `nudge`, each commit is announced through Parley's own bus sender (`nodes::Nodes`: one task sending what
/// queued up, a batch per statement), and a listener checks that every nudge arrives.
async fn messages(store: &Store, writers: usize, one: bool, nudge: bool, seconds: Duration) -> anyhow::Result<Commits> {
    let key = format!("bench-{}", parley::store::new_id());
    let site = store.create_site(&key, "Bench", &[], "Hello").await?;
    let mut contacts = Vec::new();
    for i in 0..writers {
        let hash = format!("{key}-{i}").into_bytes();
        let contact = store.contact_for_token(&site.id, &hash, "Visitor", &ContactContext::default()).await?;
        contacts.push(contact.id);
        if one {
            break;
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let nodes = nudge.then(|| {
        let meters = Arc::new(parley::meters::Meters::new(None).ok()?);
        let hub = parley::hub::Hub::new(16);
        let settings = parley::config::ClusterSettings::default();
        Some(parley::nodes::Nodes::new(store.bus(), hub, store.clock().clone(), meters, settings))
    });
    let nodes = nodes.flatten();
    let mut sender = None;
    let mut counted = None;
    if let Some(nodes) = &nodes {
        let health = parley::supervisor::Workers::new().health("bus_sender");
        let ctx = parley::supervisor::WorkerContext { stop: stop_rx.clone(), health };
        sender = Some(tokio::spawn(nodes.clone().run_sender(ctx)));
        let bus = store.bus().context("the PostgreSQL store has a bus")?;
        // A listener of "another node", counting the nudges that reach it.
        let mut listener = bus.listen("bench-listener").await?;
        let got = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&got);
        let task = tokio::spawn(async move {
            while listener.recv().await.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        counted = Some((got, task));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let cpu = CpuMeter::start(std::process::id());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..writers {
        let (store, nodes, stop, next) = (store.clone(), nodes.clone(), Arc::clone(&stop), Arc::clone(&next));
        let (contact, site) = (contacts[i % contacts.len()].clone(), site.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let n = next.fetch_add(1, Ordering::Relaxed);
                let outcome = store.append_message(&contact, &site, reply(n)).await?;
                if let (Some(nodes), AppendOutcome::Created { conversation_id, seq, .. }) = (&nodes, outcome) {
                    let at = store.clock().now_ms();
                    nodes.announce(Nudge::Event { conversation_id, contact_id: contact.clone(), seq, at });
                }
                latency.record(started.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(latency)
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??).ok();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let generator_cpu = cpu.percent();
    let _ = stop_tx.send(true);
    if let (Some(nodes), Some(sender)) = (&nodes, sender) {
        sender.await??;
        nodes.send_queued().await;
    }
    if let Some((got, task)) = counted {
        let drained = Instant::now();
        while got.load(Ordering::Relaxed) < latency.len() && drained.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        anyhow::ensure!(
            got.load(Ordering::Relaxed) >= latency.len(),
            "only {} of {} nudges arrived",
            got.load(Ordering::Relaxed),
            latency.len()
        );
    }
    Ok(Commits { writers, per_second: latency.len() as f64 / elapsed, latency, generator_cpu })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nudging {
    No,
    Inside,
    After,
}

/// `writers` connections each committing one-row inserts, notifying as told.
async fn inserts(url: &str, writers: usize, nudging: Nudging, seconds: Duration) -> anyhow::Result<Commits> {
    let pool = PgPoolOptions::new().max_connections(u32::try_from(writers).unwrap_or(64)).connect(url).await?;
    sqlx::query("create table if not exists bench_rows (id bigserial primary key, body text not null)")
        .execute(&pool)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = CpuMeter::start(std::process::id());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut tx = pool.begin().await?;
                sqlx::query("insert into bench_rows (body) values ($1)").bind(PAYLOAD).execute(&mut *tx).await?;
                if nudging == Nudging::Inside {
                    sqlx::query("select pg_notify($1, $2)").bind(CHANNEL).bind(PAYLOAD).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                if nudging == Nudging::After {
                    sqlx::query("select pg_notify($1, $2)").bind(CHANNEL).bind(PAYLOAD).execute(&pool).await?;
                }
                latency.record(started.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(latency)
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??).ok();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    pool.close().await;
    Ok(Commits { writers, per_second: latency.len() as f64 / elapsed, latency, generator_cpu: cpu.percent() })
}
