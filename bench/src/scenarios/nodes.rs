//! Scenario `nodes` (g): Parley on 1, 2 and 3 nodes sharing one PostgreSQL, beside one node on SQLite, in one run.
//! PostgreSQL is a private cluster started for the run with durable commits (`fsync`, `synchronous_commit` and
//! `full_page_writes` on, as in scenario `pg`); each node count gets a fresh database, set up once with Parley's CLI,
//! and its nodes are real `parley serve` processes. Visitors connect to the nodes directly, round robin (no proxy in
//! between). For each target it measures, with the generators of scenarios b and c:
//! - persisted msg/s at saturation (every visitor pipelining, each message acked after its commit) and the ack
//!   latency;
//! - visitor → agent delivery at a fixed offered rate, the agent signed in on the last node and the visitors on the
//!   others, so with two nodes or more every message crosses the nodes' `LISTEN/NOTIFY` bus.
//!
//! The server CPU is the sum over the nodes (percent of one core); PostgreSQL's own processes are not counted.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::scenarios::chat::{self, ChatOutcome};
use crate::scenarios::delivery::{self, DeliveryOutcome};
use crate::target::{self, Binaries, Kind, Target};

/// Loads of one run.
pub struct Loads {
    pub seconds: Duration,
    pub chat_visitors: usize,
    pub in_flight: usize,
    pub delivery_visitors: usize,
    pub delivery_rate: f64,
    /// Node counts on PostgreSQL.
    pub counts: Vec<usize>,
}

/// One target: `nodes` nodes on `engine`.
pub struct NodesOutcome {
    pub nodes: usize,
    pub engine: &'static str,
    pub chat: ChatOutcome,
    pub delivery: DeliveryOutcome,
}

/// Everything the scenario measured, and the PostgreSQL it ran on.
pub struct Outcome {
    pub server: String,
    pub runs: Vec<NodesOutcome>,
}

pub async fn run(bins: &Binaries, loads: &Loads) -> anyhow::Result<Outcome> {
    let cluster = tokio::task::spawn_blocking(|| {
        testpg::Cluster::start_with(&["fsync=on", "synchronous_commit=on", "full_page_writes=on"])
    })
    .await?
    .context("cannot start a PostgreSQL cluster (install Debian's postgresql package)")?;
    let admin = cluster.admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base).to_string();
    let mut conn = PgConnection::connect(&admin).await?;
    let version: String = sqlx::query_scalar("show server_version").fetch_one(&mut conn).await?;
    let mut runs = Vec::new();
    for &count in &loads.counts {
        let name = format!("parley_nodes_{count}");
        sqlx::query(&format!("create database {name}")).execute(&mut conn).await?;
        eprintln!("bench: nodes: {count} node(s) on PostgreSQL");
        let nodes = target::start_parley_nodes(bins, &format!("{base}/{name}"), count).await?;
        runs.push(measure(&nodes, count, "PostgreSQL", loads).await?);
    }
    conn.close().await?;
    // The SQLite node runs without PostgreSQL beside it (and its start settles with no cluster process left).
    drop(cluster);
    eprintln!("bench: nodes: 1 node on SQLite");
    let sqlite = target::start(Kind::Parley, bins).await?;
    runs.push(measure(std::slice::from_ref(&sqlite), 1, "SQLite", loads).await?);
    drop(sqlite);
    let server = format!("PostgreSQL {version}, fsync=on, synchronous_commit=on, full_page_writes=on");
    Ok(Outcome { server, runs })
}

/// Saturation, then delivery, on the running `nodes`.
async fn measure(nodes: &[Target], count: usize, engine: &'static str, loads: &Loads) -> anyhow::Result<NodesOutcome> {
    let endpoints: Vec<_> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let pids: Vec<u32> = nodes.iter().map(Target::pid).collect();
    let chat = chat::run_over(&endpoints, &pids, loads.chat_visitors, loads.in_flight, None, loads.seconds).await?;
    // The agent on the last node, the visitors on the others (all on the one node when there is one).
    let (agent_at, others) = endpoints.split_last().context("no node")?;
    let visitors_at = if others.is_empty() { std::slice::from_ref(agent_at) } else { others };
    let delivery =
        delivery::run_over(visitors_at, agent_at, &pids, loads.delivery_visitors, loads.delivery_rate, loads.seconds)
            .await?;
    Ok(NodesOutcome { nodes: count, engine, chat, delivery })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The table of the run: one line per target.
pub fn table(o: &Outcome, loads: &Loads) -> String {
    let mut out = format!(
        "{}; saturation: {} visitors × {} in flight; delivery: {} visitors, {} msg/s offered, agent on the last \
         node, visitors on the others; {} s each. Server CPU: the nodes' sum, percent of one core (PostgreSQL's \
         processes not counted).\n\n",
        o.server,
        loads.chat_visitors,
        loads.in_flight,
        loads.delivery_visitors,
        loads.delivery_rate,
        loads.seconds.as_secs()
    );
    out.push_str(
        "| nodes | engine | persisted msg/s | ack p50 | ack p99 | delivery p50 | delivery p99 | server CPU (chat / delivery) | note |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &o.runs {
        let c = &r.chat;
        let d = &r.delivery;
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} % / {:.0} % | unacked {}, errors {}, \
             dropped {}; delivered {} of {}, agent dropped {}×; generator CPU {:.0} % / {:.0} % |\n",
            r.nodes,
            r.engine,
            c.throughput(),
            ms(&c.latency, 0.5),
            ms(&c.latency, 0.99),
            ms(&d.latency, 0.5),
            ms(&d.latency, 0.99),
            c.measured.server_cpu,
            d.measured.server_cpu,
            c.unacked,
            c.errors,
            c.dropped,
            d.seen,
            d.sent,
            d.agent_dropped,
            c.measured.generator_cpu,
            d.measured.generator_cpu,
        ));
    }
    out
}
