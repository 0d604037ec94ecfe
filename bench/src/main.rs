//! `parley-bench`: Parley's load generator and its baselines (run through `cargo xtask bench`, which builds the
//! release server and installs the Node peer first).
//!
//! - `run [SCENARIO…] [--quick]`: the scenarios (`chat` b, `delivery` c, `idle` a, `storm` d; default all, in that
//!   order, then `webhook` e, `outbox` f and `widget`; `pg` and `nodes` g, which need PostgreSQL's server programs, only when
//!   named), each
//!   against Parley and its baselines, every target a fresh process pinned to core 0 while the generator pins itself
//!   to core 1; prints Markdown and writes it to `--out`. `widget` needs `--site` (the built widget) and
//!   `--widget-dir` (`bench/widget`, its npm packages installed).
//! - `relay --addr ADDR`: the bare tokio-tungstenite relay baseline (started by `run`).
//! - `sandbox --addr ADDR --callback URL`: the Messenger sandbox for scenario `outbox` f (started by `run`).
//! - `sqlite --per-commit N --seconds S`: the raw SQLite baseline, one line of JSON (started by `run`, pinned).

mod client;
mod quiet;
mod relay;
mod report;
mod sandbox;
mod scenarios;
mod sqlite;
mod sys;
mod target;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

use report::{Report, Row};
use scenarios::chat::ChatOutcome;
use scenarios::{Measured, percentiles};
use target::{Binaries, Kind};

#[derive(Parser)]
#[command(name = "parley-bench", about = "Parley's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios against Parley and the baselines.
    Run {
        /// Scenarios to run: chat, delivery, idle, storm, webhook, outbox, widget, pg, nodes (default: all but pg
        /// and nodes).
        scenarios: Vec<String>,
        /// Smaller loads and shorter runs (a smoke test of the harness; figures not comparable).
        #[arg(long)]
        quick: bool,
        /// Run Parley alone in scenarios a, b, c and d (no relay, Socket.IO or raw SQLite beside it): for
        /// before/after comparisons of two Parley binaries.
        #[arg(long)]
        no_baselines: bool,
        /// The release `parley` binary.
        #[arg(long)]
        parley: PathBuf,
        /// Folder holding the Node peer (`server.js`, installed `node_modules`).
        #[arg(long)]
        node_dir: PathBuf,
        /// The built site (`target/site` of `cargo xtask build`), for the `widget` scenario.
        #[arg(long)]
        site: Option<PathBuf>,
        /// Folder holding the widget measurement (`measure.mjs`, installed `node_modules`), for `widget`.
        #[arg(long)]
        widget_dir: Option<PathBuf>,
        /// Where to write the Markdown results.
        #[arg(long)]
        out: Option<PathBuf>,
        /// A line printed in bold under the header (e.g. that the machine was shared).
        #[arg(long)]
        note: Option<String>,
        /// The command line to print as the reproducing command.
        #[arg(long, default_value = "cargo xtask bench")]
        command: String,
        /// Only record the machine's state before each target: neither sync nor wait for it to settle (the
        /// harness as it was, to show what settling changes).
        #[arg(long)]
        no_settle: bool,
        /// Where to write a CSV trace of the machine's state, sampled every 250 ms through the run (replaced).
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// The bare relay baseline.
    Relay {
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
    /// The Messenger sandbox, its webhooks going to `callback` (scenario `outbox`).
    Sandbox {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        callback: String,
    },
    /// The raw SQLite baseline; prints `{"messages":…,"seconds":…}`.
    Sqlite {
        #[arg(long)]
        per_commit: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 100)]
        contacts: usize,
    },
}

/// Writers and listening nodes of the `pg` scenario.
const PG_WRITERS: usize = 16;
const PG_LISTENERS: usize = 3;

/// Scenario `pg` (see `scenarios::pg`): notifications and commits per second through one PostgreSQL.
async fn pg(report: &mut Report, plan: &Plan) -> anyhow::Result<()> {
    let o = scenarios::pg::run(plan.seconds, PG_WRITERS, PG_LISTENERS).await?;
    let mut rows = Vec::new();
    for n in &o.notify {
        let target = format!("NOTIFY, {} sender(s), {} per statement", n.senders, n.per_statement);
        let note = format!(
            "{} listeners each received {:.0} /s ({:.1} % of all sent); generator CPU {:.0} %",
            n.listeners,
            n.received_per_second,
            100.0 * n.received_share,
            n.generator_cpu
        );
        rows.push(row(&target, "notifications/s sent", n.sent_per_second, "/s").note(note));
    }
    let commits = |target: &str, c: &scenarios::pg::Commits, base: Option<(f64, &str)>| {
        let [p50, p99, _] = percentiles(&c.latency);
        let note =
            format!("{} writers; p50 {p50:.2} ms, p99 {p99:.2} ms; generator CPU {:.0} %", c.writers, c.generator_cpu);
        let r = row(target, "commits/s", c.per_second, "/s").note(note);
        match base {
            Some((b, name)) => r.vs(Some(b), name),
            None => r,
        }
    };
    let spread = Some((o.spread.per_second, "spread"));
    rows.push(commits("Parley's message transaction, one conversation per writer", &o.spread, None));
    rows.push(commits("Parley's message transaction, all writers in one conversation", &o.hot, spread));
    rows.push(commits("Parley's message transaction + its nudge (bus sender)", &o.with_nudge, spread));
    let plain = Some((o.plain_tx.per_second, "plain"));
    rows.push(commits("one-row insert transaction", &o.plain_tx, None));
    rows.push(commits("one-row insert, pg_notify inside the transaction", &o.notify_inside, plain));
    rows.push(commits("one-row insert, pg_notify right after its commit", &o.notify_after, plain));
    report.section(&format!("pg. One PostgreSQL for several nodes ({})", o.server), rows);
    Ok(())
}

/// Offered rate of the delivery half of scenario `nodes`, msg/s.
const NODES_DELIVERY_RATE: f64 = 250.0;

/// Scenario `nodes` (g, see `scenarios::nodes`): 1, 2 and 3 nodes on PostgreSQL beside one on SQLite.
async fn nodes(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    let loads = scenarios::nodes::Loads {
        seconds: plan.seconds,
        chat_visitors: plan.chat_visitors,
        in_flight: plan.in_flight,
        delivery_visitors: plan.delivery_visitors,
        // Below what one PostgreSQL persists here at saturation (about 800 msg/s on the shared 2-core machine):
        // at scenario c's 1,000 msg/s the queue would grow and the latency would measure the backlog.
        delivery_rate: NODES_DELIVERY_RATE,
        counts: vec![1, 2, 3],
    };
    let o = scenarios::nodes::run(bins, &loads).await?;
    let placement = match bins.server_core {
        Some(core) => format!(
            "every node pinned to core {core} together (two cores cannot hold three nodes apart), the generator on \
             the other core, PostgreSQL unpinned"
        ),
        None => "nothing pinned (one core)".to_string(),
    };
    let title = format!("g. Several nodes on one PostgreSQL beside one on SQLite ({placement})");
    report.table(&title, scenarios::nodes::table(&o, &loads));
    Ok(())
}

/// Loads and lengths of one run.
struct Plan {
    seconds: Duration,
    chat_visitors: usize,
    in_flight: usize,
    rates: Vec<f64>,
    delivery_visitors: usize,
    delivery_rate: f64,
    idle: usize,
    storms: Vec<usize>,
    sqlite_seconds: f64,
    webhook_clients: usize,
    outbox: OutboxPlan,
    widget_runs: usize,
    /// Whether scenarios a, b, c and d run the baselines beside Parley.
    baselines: bool,
}

/// Scenario f's loads.
struct OutboxPlan {
    customers: usize,
    /// Replies per customer at saturation.
    per_customer: usize,
    rates: Vec<f64>,
    /// Extra latency the sandbox adds to every Send API call in the last phase, ms.
    latency_ms: u64,
}

impl Plan {
    fn new(quick: bool, nofile: u64) -> Self {
        // Both ends hold one descriptor per socket; keep a margin for everything else.
        let cap = (nofile as usize).saturating_sub(512);
        if quick {
            Self {
                seconds: Duration::from_secs(5),
                chat_visitors: 100,
                in_flight: 4,
                rates: vec![500.0],
                delivery_visitors: 1000,
                delivery_rate: 1000.0,
                idle: 2000.min(cap),
                storms: vec![1000],
                sqlite_seconds: 3.0,
                webhook_clients: 16,
                outbox: OutboxPlan { customers: 50, per_customer: 10, rates: vec![100.0], latency_ms: 100 },
                widget_runs: 3,
                baselines: true,
            }
        } else {
            Self {
                seconds: Duration::from_secs(20),
                chat_visitors: 100,
                in_flight: 4,
                rates: vec![500.0, 1000.0, 2000.0],
                delivery_visitors: 10_000.min(cap),
                delivery_rate: 1000.0,
                idle: 15_000.min(cap),
                storms: vec![5000.min(cap), 15_000.min(cap)],
                sqlite_seconds: 10.0,
                webhook_clients: 64,
                outbox: OutboxPlan {
                    customers: 200,
                    per_customer: 20,
                    rates: vec![100.0, 300.0, 1000.0],
                    latency_ms: 100,
                },
                widget_runs: 7,
                baselines: true,
            }
        }
    }

    /// The targets of a socket scenario: `kinds`, or Parley alone without baselines.
    fn targets(&self, kinds: &[Kind]) -> Vec<Kind> {
        kinds.iter().copied().filter(|k| self.baselines || *k == Kind::Parley).collect()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Cmd::Relay { addr } => runtime.block_on(async { relay::serve(relay::bind(addr).await?).await }),
        Cmd::Sandbox { addr, callback } => runtime.block_on(sandbox::serve(addr, callback)),
        Cmd::Sqlite { per_commit, seconds, contacts } => {
            let dir = tempfile::tempdir()?;
            let outcome = sqlite::run(dir.path(), contacts, per_commit, Duration::from_secs_f64(seconds))?;
            println!("{}", serde_json::json!({"messages": outcome.messages, "seconds": outcome.elapsed.as_secs_f64()}));
            Ok(())
        }
        Cmd::Run {
            scenarios,
            quick,
            no_baselines,
            parley,
            node_dir,
            site,
            widget_dir,
            out,
            note,
            command,
            no_settle,
            trace,
        } => {
            let pinned = sys::cores() >= 2;
            // Targets run in their own temporary folders.
            let parley = std::fs::canonicalize(&parley).with_context(|| format!("no {}", parley.display()))?;
            let node_dir = std::fs::canonicalize(&node_dir).with_context(|| format!("no {}", node_dir.display()))?;
            let mut limits = quiet::Limits { wait: !no_settle, ..quiet::Limits::default() };
            if quick {
                // A smoke test: its figures are not compared, so a busy machine need not hold it up long.
                limits.timeout = Duration::from_secs(5);
            }
            let quiet = quiet::Quiet::new(limits);
            let bins = Binaries { parley, node_dir, server_core: pinned.then_some(0), quiet: Arc::clone(&quiet) };
            if let Some(trace) = &trace {
                let _ = std::fs::remove_file(trace);
            }
            if pinned && !sys::pin_self(1) {
                eprintln!("bench: could not pin the generator to core 1");
            }
            let nofile = sys::raise_nofile(1 << 20);
            let mut plan = Plan::new(quick, nofile);
            plan.baselines = !no_baselines;
            let wanted: Vec<String> = if scenarios.is_empty() {
                ["chat", "delivery", "idle", "storm", "webhook", "outbox", "widget"].map(String::from).to_vec()
            } else {
                scenarios
            };
            let mut report = Report::default();
            let mut header = report::header(&command, pinned, note.as_deref());
            header.push_str(&settle_line(&limits));
            runtime.block_on(async {
                for scenario in &wanted {
                    eprintln!("bench: scenario {scenario}");
                    let start = quiet.settle(&format!("scenario {scenario}")).await;
                    let sampler =
                        quiet::Sampler::start(Arc::clone(&quiet), SAMPLE_EVERY, trace.clone(), scenario.clone());
                    let mark = report.mark();
                    match scenario.as_str() {
                        "chat" | "b" => chat(&mut report, &bins, &plan).await?,
                        "delivery" | "c" => delivery(&mut report, &bins, &plan).await?,
                        "idle" | "a" => idle(&mut report, &bins, &plan, nofile).await?,
                        "storm" | "d" => storm(&mut report, &bins, &plan).await?,
                        "webhook" | "e" => webhook(&mut report, &bins, &plan).await?,
                        "outbox" | "f" => outbox(&mut report, &bins, &plan).await?,
                        "pg" => pg(&mut report, &plan).await?,
                        "nodes" | "g" => nodes(&mut report, &bins, &plan).await?,
                        "widget" => {
                            let site = site.as_deref().context("the widget scenario needs --site")?;
                            let dir = widget_dir.as_deref().context("the widget scenario needs --widget-dir")?;
                            widget(&mut report, &bins, &plan, site, dir).await?
                        }
                        other => {
                            anyhow::bail!(
                                "unknown scenario {other} (chat, delivery, idle, storm, webhook, outbox, widget, pg, nodes)"
                            )
                        }
                    }
                    let during = sampler.finish();
                    let targets = quiet.take();
                    // The first settle logged is the scenario's own (above).
                    let targets = targets.get(1..).unwrap_or_default();
                    report.annotate_since(mark, &quiet::scenario_notes(&start, targets, &during));
                }
                anyhow::Ok(())
            })?;
            let markdown = report.markdown(&header);
            println!("{markdown}");
            if let Some(out) = out {
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&out, &markdown).with_context(|| format!("cannot write {}", out.display()))?;
                eprintln!("bench: results written to {}", out.display());
            }
            Ok(())
        }
    }
}

/// How often the machine's state is sampled through a scenario.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The header's line on what the harness waits for before each scenario and target.
fn settle_line(limits: &quiet::Limits) -> String {
    if !limits.wait {
        return "- settling: off (`--no-settle`): the machine's state is only recorded before each target\n"
            .to_string();
    }
    format!(
        "- settling: before each scenario and each target, the previous target's processes have exited (waited \
         for) and the generator's tasks of it ended, its folder is removed, `syncfs`, then until {} consecutive {} ms \
         windows show Dirty + Writeback ≤ {} MiB, the disk busy ≤ {:.0} % and a one-page write + fdatasync ≤ {} ms \
         ({} s at most; TIME_WAIT recorded, not waited for: fresh ports, spread source addresses)\n",
        limits.quiet_windows,
        limits.window.as_millis(),
        limits.max_unwritten_kb / 1024,
        100.0 * limits.max_disk_busy,
        limits.max_fsync_ms,
        limits.timeout.as_secs()
    )
}

fn row(target: &str, figure: &str, value: f64, unit: &'static str) -> Row {
    Row {
        target: target.to_string(),
        figure: figure.to_string(),
        value,
        unit,
        baseline: None,
        measured: None,
        note: String::new(),
    }
}

impl Row {
    fn vs(mut self, baseline: Option<f64>, name: &str) -> Self {
        self.baseline = baseline.map(|b| (b, name.to_string()));
        self
    }

    fn with(mut self, m: Measured) -> Self {
        self.measured = Some(m);
        self
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// The raw SQLite baseline, run as its own process on the server core: messages per second.
fn raw_sqlite(bins: &Binaries, per_commit: usize, seconds: f64) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let mut cmd = match bins.server_core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args(["sqlite", "--per-commit", &per_commit.to_string(), "--seconds", &seconds.to_string()])
        .output()
        .context("raw SQLite baseline")?;
    anyhow::ensure!(out.status.success(), "raw SQLite baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let messages = v["messages"].as_f64().unwrap_or(0.0);
    Ok(messages / v["seconds"].as_f64().unwrap_or(1.0).max(1e-9))
}

/// p50, p99 and p99.9 rows of one latency figure, each beside the baseline's.
fn latency_rows(rows: &mut Vec<Row>, name: &str, figure: &str, p: [f64; 3], baseline: Option<[f64; 3]>, base: &str) {
    for (i, q) in ["p50", "p99", "p99.9"].iter().enumerate() {
        rows.push(row(name, &format!("{figure} {q}"), p[i], "ms").vs(baseline.map(|b| b[i]), base));
    }
}

/// One chat load against a fresh target: saturation (`rate: None`) or a fixed offered rate.
async fn chat_once(kind: Kind, bins: &Binaries, plan: &Plan, rate: Option<f64>) -> anyhow::Result<ChatOutcome> {
    let target = target::start(kind, bins).await?;
    scenarios::chat::run(&target.endpoint, target.pid(), plan.chat_visitors, plan.in_flight, rate, plan.seconds).await
}

const CHAT_TARGETS: [Kind; 4] =
    [Kind::Parley, Kind::Relay, Kind::Node { persist: false }, Kind::Node { persist: true }];

async fn chat(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    // Without baselines (a before/after pair of Parley binaries): Parley alone, no raw SQLite runs.
    let (raw1, mut rows) = if plan.baselines {
        bins.quiet.settle("raw SQLite 1/commit").await;
        let raw1 = raw_sqlite(bins, 1, plan.sqlite_seconds)?;
        bins.quiet.settle("raw SQLite 100/commit").await;
        let raw100 = raw_sqlite(bins, 100, plan.sqlite_seconds)?;
        let rows = vec![
            row("raw SQLite, Parley's transaction, 1 msg/commit", "msg/s", raw1, "msg/s"),
            row("raw SQLite, Parley's transaction, 100 msg/commit", "msg/s", raw100, "msg/s"),
        ];
        (Some(raw1), rows)
    } else {
        (None, Vec::new())
    };
    let label = format!("saturation ({} visitors × {} in flight)", plan.chat_visitors, plan.in_flight);
    let mut saturation = Vec::new();
    for kind in plan.targets(&CHAT_TARGETS) {
        saturation.push((kind, chat_once(kind, bins, plan, None).await?));
    }
    let find = |k: Kind| saturation.iter().find(|(kind, _)| *kind == k).map(|(_, o)| o);
    let relay = find(Kind::Relay);
    let sio_sql = find(Kind::Node { persist: true });
    for (kind, o) in &saturation {
        let first = o.per_second.first().copied().unwrap_or(0);
        let last = o.per_second.last().copied().unwrap_or(0);
        let note = format!(
            "per second: first {first}, last {last}; unacked {}, errors {}, dropped {}",
            o.unacked, o.errors, o.dropped
        );
        let name = kind.label();
        let tput = row(name, &format!("acked msg/s, {label}"), o.throughput(), "msg/s").with(o.measured).note(note);
        let tput = match kind {
            Kind::Parley => tput.vs(raw1, "raw SQLite 1/commit"),
            Kind::Node { persist: true } => tput.vs(raw1, "raw SQLite 1/commit"),
            _ => tput,
        };
        rows.push(tput);
        if *kind == Kind::Parley {
            rows.push(
                row(name, "acked msg/s vs Socket.IO + better-sqlite3", o.throughput(), "msg/s")
                    .vs(sio_sql.map(|s| s.throughput()), "Socket.IO + better-sqlite3"),
            );
        }
        let rp = relay.map(|r| percentiles(&r.latency));
        latency_rows(&mut rows, name, "ack", percentiles(&o.latency), rp, "relay");
    }
    for rate in &plan.rates {
        for kind in plan.targets(&[Kind::Parley, Kind::Node { persist: true }]) {
            let o = chat_once(kind, bins, plan, Some(*rate)).await?;
            let note = format!("unacked {}, errors {}, dropped {}", o.unacked, o.errors, o.dropped);
            let name = kind.label();
            let figure = format!("acked msg/s at {rate} offered");
            rows.push(row(name, &figure, o.throughput(), "msg/s").with(o.measured).note(note));
            latency_rows(&mut rows, name, &format!("ack at {rate} msg/s:"), percentiles(&o.latency), None, "");
        }
    }
    report.section("b. Persisted chat (every message acked; Parley acks after commit)", rows);
    Ok(())
}

async fn delivery(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut relay_p = None;
    for kind in plan.targets(&[Kind::Relay, Kind::Node { persist: false }, Kind::Parley]) {
        let target = target::start(kind, bins).await?;
        let o = scenarios::delivery::run(
            &target.endpoint,
            target.pid(),
            plan.delivery_visitors,
            plan.delivery_rate,
            plan.seconds,
        )
        .await?;
        let p = percentiles(&o.latency);
        if kind == Kind::Relay {
            relay_p = Some(p);
        }
        let note = format!("sent {}, seen by the agent {}, agent socket dropped {}×", o.sent, o.seen, o.agent_dropped);
        let figure = format!("send → agent, {} visitors, {} msg/s", plan.delivery_visitors, plan.delivery_rate);
        let first = rows.len();
        latency_rows(&mut rows, kind.label(), &figure, p, relay_p, "relay");
        if let Some(r) = rows.get_mut(first) {
            r.measured = Some(o.measured);
            r.note = note;
        }
    }
    report.section("c. Visitor → agent delivery", rows);
    Ok(())
}

async fn idle(report: &mut Report, bins: &Binaries, plan: &Plan, nofile: u64) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut relay_per = None;
    for kind in plan.targets(&[Kind::Relay, Kind::Node { persist: false }, Kind::Parley]) {
        let target = target::start(kind, bins).await?;
        let o = scenarios::idle::run(&target.endpoint, target.pid(), plan.idle).await?;
        if kind == Kind::Relay {
            relay_per = Some(o.per_socket());
        }
        let name = kind.label();
        let note = format!(
            "{} held (file limit {nofile}); RSS before {:.1} MiB, held {:.1} MiB; connected in {:.1} s",
            o.held,
            o.rss_before as f64 / 1048576.0,
            o.rss_held as f64 / 1048576.0,
            o.connect_seconds
        );
        rows.push(
            row(name, "memory per idle visitor socket", o.per_socket(), "B")
                .vs(relay_per, "relay")
                .with(o.measured)
                .note(note),
        );
        rows.push(row(name, "RSS after they all closed", o.rss_after as f64, "B").note(format!(
            "{:.0} % of what the sockets took is still held",
            100.0 * o.rss_after.saturating_sub(o.rss_before) as f64
                / o.rss_held.saturating_sub(o.rss_before).max(1) as f64
        )));
    }
    report.section("a. Idle visitors", rows);
    Ok(())
}

async fn storm(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &count in &plan.storms {
        for jitter in [Duration::ZERO, Duration::from_millis(500)] {
            let mut relay_all = None;
            for kind in plan.targets(&[Kind::Relay, Kind::Parley]) {
                let target = target::start(kind, bins).await?;
                let o = scenarios::storm::run(&target.endpoint, target.pid(), count, jitter).await?;
                if kind == Kind::Relay {
                    relay_all = Some(o.all_resumed_seconds);
                }
                let [p50, p99, _] = percentiles(&o.resume);
                let note = format!(
                    "lost {}, doubled {}, not resumed {}, failed attempts {}, ListenOverflows +{}, resume p50 {p50:.0} ms p99 {p99:.0} ms",
                    o.lost, o.doubled, o.not_resumed, o.failed_attempts, o.listen_overflows
                );
                let figure = format!("{} visitors, jitter 0–{} ms: all resumed", o.visitors, jitter.as_millis());
                rows.push(
                    row(kind.label(), &figure, o.all_resumed_seconds, "s")
                        .vs(relay_all, "relay")
                        .with(o.measured)
                        .note(note),
                );
            }
        }
    }
    report.section("d. Reconnect storms", rows);
    Ok(())
}

async fn webhook(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    let name = Kind::ParleyMessenger.label();
    let mut rows = Vec::new();
    // The target rate offered at a fixed pace, then saturation; each on a fresh server, so the backlog saturation
    // leaves for the intake does not weigh on the paced run.
    for rate in [Some(WEBHOOK_OFFERED), None] {
        // Paced, each client posts only every `clients / rate` seconds (51 ms with 256 clients at 5,000/s), so a
        // post is seldom due while its client still waits for the answer before: what it measures is the server's
        // answer, not a queue in the generator's connections (Meta sends on as many connections as it needs).
        let clients = if rate.is_some() { plan.webhook_clients * WEBHOOK_PACED_CLIENTS } else { plan.webhook_clients };
        let target = target::start(Kind::ParleyMessenger, bins).await?;
        let o = scenarios::webhook::run(
            target.endpoint.addr,
            target.pid(),
            target::APP_SECRET,
            target::PAGE_ID,
            clients,
            plan.seconds,
            rate,
        )
        .await?;
        drop(target);
        let note = format!("{clients} clients; refused {}; target ≥ 5,000/s", o.refused);
        let (figure, label) = match rate {
            Some(r) => (format!("signed deliveries acked per second, {r:.0} offered/s"), format!("ack at {r:.0}/s:")),
            None => ("signed deliveries acked (spooled) per second, saturation".to_string(), "ack".to_string()),
        };
        let r = row(name, &figure, o.per_second(), "/s").with(o.measured).note(note);
        rows.push(if rate.is_none() { r.vs(Some(5000.0), "target") } else { r });
        match rate {
            Some(_) => {
                latency_rows(&mut rows, name, &format!("{label} from when due"), percentiles(&o.latency), None, "");
                latency_rows(&mut rows, name, &format!("{label} from when sent"), percentiles(&o.from_sent), None, "");
            }
            None => latency_rows(&mut rows, name, &label, percentiles(&o.latency), None, ""),
        }
    }
    report.section("e. Signed webhook intake", rows);
    Ok(())
}

/// How many times the saturation run's clients the paced run spreads its posts over.
const WEBHOOK_PACED_CLIENTS: usize = 4;

/// The rate scenario e offers at a fixed pace: the target's 5,000 deliveries a second.
const WEBHOOK_OFFERED: f64 = 5000.0;

/// Scenario f (see `scenarios::outbox`): agent replies to Messenger customers delivered at the sandbox per second,
/// beside the same Send API calls made straight to the sandbox.
async fn outbox(report: &mut Report, bins: &Binaries, plan: &Plan) -> anyhow::Result<()> {
    use scenarios::outbox as f;
    let p = &plan.outbox;
    let (target, sandbox) = target::start_parley_on_sandbox(bins, &[]).await?;
    let mut setup = f::set_up(&target.endpoint, target.pid(), sandbox.base_url(), sandbox.pid(), p.customers).await?;
    let name = "Parley (Messenger on, sandbox)";
    let total = p.customers * p.per_customer;
    let mut rows = Vec::new();
    let phase_rows = |rows: &mut Vec<Row>, label: &str, o: &f::Phase, base: Option<(f64, &str)>| {
        let validity = if o.valid() { "" } else { "⚠ INVALID (lost or doubled): " };
        let note = format!(
            "{validity}{} replies, delivered {}, lost {}, doubled {}, out of order per customer {}; sandbox CPU {:.0} %",
            o.replies, o.delivered, o.lost, o.doubled, o.out_of_order, o.sandbox_cpu
        );
        let r = row(name, &format!("replies delivered/s, {label}"), o.per_second, "/s").with(o.measured).note(note);
        rows.push(match base {
            Some((b, n)) => r.vs(Some(b), n),
            None => r,
        });
        latency_rows(rows, name, &format!("queued → delivered, {label}:"), percentiles(&o.latency), None, "");
    };
    // Parley's default `messenger.max_in_flight` (the binary before it was a setting: 8).
    let in_flight = 32;
    let baseline_rows = |rows: &mut Vec<Row>, label: &str, b: &(f64, Histogram<u64>, u64), k: usize| {
        let note = format!("{} calls answered 200; {k} in flight", b.2);
        rows.push(
            row("plain keep-alive client → sandbox", &format!("Send API calls/s, {label}"), b.0, "/s").note(note),
        );
        let [p50, p99, p999] = percentiles(&b.1);
        rows.push(
            row("plain keep-alive client → sandbox", &format!("call latency p50 / p99 / p99.9, {label}"), p50, "ms")
                .note(format!("p99 {p99:.2} ms, p99.9 {p999:.2} ms")),
        );
    };
    let base_k = f::baseline(&setup, "base", total, in_flight).await?;
    let base_n = f::baseline(&setup, "basen", total, p.customers).await?;
    baseline_rows(&mut rows, &format!("{in_flight} in flight"), &base_k, in_flight);
    baseline_rows(&mut rows, &format!("{} in flight (one per customer)", p.customers), &base_n, p.customers);
    let saturation = f::phase(&mut setup, "sat", total, None).await?;
    let label = format!("saturation ({} customers × {} replies)", p.customers, p.per_customer);
    phase_rows(&mut rows, &label, &saturation, Some((base_k.0, "plain client, same in-flight limit")));
    rows.push(
        row(name, "replies delivered/s vs one call in flight per customer", saturation.per_second, "/s")
            .vs(Some(base_n.0), "plain client, one per customer"),
    );
    for (i, rate) in p.rates.iter().enumerate() {
        let replies = (rate * plan.seconds.as_secs_f64()) as usize;
        let o = f::phase(&mut setup, &format!("rate{i}"), replies, Some(*rate)).await?;
        phase_rows(&mut rows, &format!("{rate} offered/s"), &o, None);
    }
    // Concurrency: every Send API call now takes longer.
    f::set_latency(&setup, p.latency_ms).await?;
    let slow_total = p.customers * 2;
    let slow_k = f::baseline(&setup, "slowbase", slow_total, in_flight).await?;
    let slow_n = f::baseline(&setup, "slowbasen", slow_total, p.customers).await?;
    let slow_label = format!("sandbox +{} ms per call", p.latency_ms);
    baseline_rows(&mut rows, &format!("{slow_label}, {in_flight} in flight"), &slow_k, in_flight);
    baseline_rows(&mut rows, &format!("{slow_label}, {} in flight", p.customers), &slow_n, p.customers);
    let slow = f::phase(&mut setup, "slow", slow_total, None).await?;
    let label = format!("saturation, {slow_label} ({} customers × 2 replies)", p.customers);
    phase_rows(&mut rows, &label, &slow, Some((slow_n.0, "plain client, one per customer")));
    f::set_latency(&setup, 0).await?;
    drop(setup);
    drop(target);
    drop(sandbox);
    report.section("f. Outbox sends to the Messenger sandbox (agent replies → Send API)", rows);
    Ok(())
}

/// Bytes in a row's value: shown exactly.
const BYTES: &str = "bytes";

fn spread_note(s: &scenarios::widget::Spread, unit: &str) -> String {
    format!("median of {} runs; min {:.0}, max {:.0} {unit}", s.n, s.min, s.max)
}

/// Scenario `widget`: the host page bare, with Parley's loader (then a click on its launcher) and with
/// `@rocket.chat/livechat`, in Chromium with 4× CPU throttling.
async fn widget(report: &mut Report, bins: &Binaries, plan: &Plan, site: &Path, dir: &Path) -> anyhow::Result<()> {
    use scenarios::widget::{self as w, WidgetOutcome, totals};
    let host_port = target::free_local_port()?;
    let page_origin = format!("http://localhost:{host_port}");
    let parley = target::start_for_widget(bins, site, &page_origin).await?;
    let chat_origin = format!("http://{}", parley.endpoint.addr);
    let o: WidgetOutcome = w::run(dir, &chat_origin, host_port, plan.widget_runs, sys::cores())?;
    drop(parley);
    let rc = format!("Rocket.Chat livechat {}", o.livechat_version);
    let mut rows = Vec::new();

    // Weight: what each variant fetched (the last run's files), compressed alike.
    let weight = |rows: &mut Vec<Row>, name: &str, what: &str, files: &[w::File], base: Option<(u64, u64, u64)>| {
        let (raw, gz, br) = totals(files);
        let list = files
            .iter()
            .map(|f| {
                let short = f.url.rsplit('/').next().unwrap_or(&f.url);
                let short = short.split('?').next().unwrap_or(short);
                format!("{short} {} B{}", f.brotli, if f.status == 200 { "" } else { " (not 200)" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!("{} files, brotli each: {list}", files.len());
        rows.push(row(name, &format!("{what}, raw"), raw as f64, BYTES).vs(base.map(|b| b.0 as f64), "Parley"));
        rows.push(row(name, &format!("{what}, gzip -9"), gz as f64, BYTES).vs(base.map(|b| b.1 as f64), "Parley"));
        rows.push(
            row(name, &format!("{what}, brotli -q11"), br as f64, BYTES)
                .vs(base.map(|b| b.2 as f64), "Parley")
                .note(note),
        );
    };
    let parley_load = o.files("parley", "load", true);
    let loader: Vec<w::File> = parley_load.iter().filter(|f| f.url.ends_with("/widget.js")).cloned().collect();
    let parley_click = o.files("parley", "click", false);
    let chat_assets: Vec<w::File> = parley_click.iter().filter(|f| f.url.contains("/assets/")).cloned().collect();
    weight(&mut rows, "Parley", "loader (widget.js), at page load", &loader, None);
    weight(&mut rows, "Parley", "everything the widget adds at page load", &parley_load, None);
    weight(&mut rows, "Parley", "full chat (boot + glue + Wasm + CSS), after the click", &chat_assets, None);
    weight(&mut rows, "Parley", "everything fetched after the click (with the frame page)", &parley_click, None);
    let parley_total: Vec<w::File> = parley_load.iter().chain(&parley_click).cloned().collect();
    weight(&mut rows, "Parley", "page load + click, all of it", &parley_total, None);
    let rc_load = o.files("livechat", "load", true);
    weight(&mut rows, &rc, "everything the widget adds at page load", &rc_load, Some(totals(&parley_load)));
    weight(&mut rows, &rc, "vs Parley's page load + click", &rc_load, Some(totals(&parley_total)));

    // Timings, main thread and requests: medians over the runs, each beside the bare page where it has one.
    let figures: [(&str, &str, &str, bool); 17] = [
        ("first_paint_ms", "first paint", "ms", true),
        ("load_ms", "navigation to load event", "ms", true),
        ("load_task_ms", "main thread at page load: TaskDuration", "ms", true),
        ("load_script_ms", "main thread at page load: ScriptDuration", "ms", true),
        ("requests_before_first_paint", "requests before first paint", "", true),
        ("load_requests", "requests at page load", "", true),
        ("launcher_visible_ms", "navigation to launcher visible", "ms", false),
        ("click_to_input_ms", "click → chat input visible in the open panel", "ms", false),
        ("click_to_welcome_ms", "click → first frame (welcome) received", "ms", false),
        ("click_to_usable_ms", "click → usable (input visible and welcome received)", "ms", false),
        ("requests_until_usable", "requests from navigation until usable (WebSocket included)", "", false),
        ("click_requests", "requests after the click", "", false),
        ("click_task_ms", "main thread from the click until settled: TaskDuration", "ms", false),
        ("click_script_ms", "main thread from the click until settled: ScriptDuration", "ms", false),
        (
            "first_api_request_ms",
            "navigation to its first API request (bundle run, needs a server from here)",
            "ms",
            false,
        ),
        ("frame_first_contentful_paint_ms", "navigation to its frame's first contentful paint", "ms", false),
        ("api_404s", "API requests answered 404 (no Rocket.Chat server)", "", false),
    ];
    for (variant, name) in [("bare", "host page without a widget"), ("parley", "Parley"), ("livechat", rc.as_str())] {
        for (key, figure, unit, vs_bare) in figures {
            let Some(s) = o.spread(variant, key) else { continue };
            let base = if vs_bare && variant != "bare" { o.spread("bare", key).map(|b| b.median) } else { None };
            rows.push(row(name, figure, s.median, unit).vs(base, "bare page").note(spread_note(&s, unit)));
        }
        if let Some(s) = o.spread(variant, "page_errors").filter(|s| s.max > 0.0) {
            let first = o.first_text(variant, "first_page_error").unwrap_or_default();
            rows.push(
                row(name, "uncaught exceptions in the page and its frames", s.median, "")
                    .note(format!("{}; the first: {first}", spread_note(&s, ""))),
            );
        }
        if variant != "bare" && !o.all(variant, "frame_in_process") {
            rows.push(row(name, "⚠ its frame ran in another renderer: throttling and metrics missed it", 0.0, ""));
        }
    }
    let title = format!(
        "widget. Widget weight and cost to a page (Chromium {}, {}× CPU throttling, {} runs after a warm-up)",
        o.chromium, o.throttle, plan.widget_runs
    );
    report.section(&title, rows);
    Ok(())
}
