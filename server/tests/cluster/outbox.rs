//! Two nodes' outbox workers against the Messenger sandbox, counted at the sandbox. Eight Messenger customers write
//! to the Page (webhooks through nginx to either node); the agent replies 8 times to each from sockets on both
//! nodes, so both nodes queue and both workers send (each Graph call held 500 ms at the sandbox, so calls are in
//! flight). Node A is SIGKILLed mid-way, with replies still queued: whatever A had leased is either settled by the
//! echo of a send that reached the sandbox (through nginx, on B) or sent by B once the lease runs out, and B sends
//! the rest. At the sandbox every reply arrives exactly once; in the database every outbox row ends `sent`; both
//! workers made Graph calls.

use std::collections::HashMap;
use std::time::Duration;

use messenger_sandbox::{FaultRule, NewUser, RetryPolicy, SandboxConfig, SendFault};
use sqlx::Connection;

use crate::harness::{
    Cluster, Database, Options, SITE_KEY, free_port, messenger_env, seed_site_and_agent, wait_for, wait_within,
};
use crate::ws;

const CUSTOMERS: usize = 8;
const REPLIES: usize = 8;

fn reply(customer: usize, n: usize) -> String {
    format!("reply {customer}-{n}")
}

/// How often each of our replies reached the sandbox.
fn sent_counts(sandbox: &messenger_sandbox::Sandbox) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in sandbox.sent_messages() {
        if let Some(text) = m.message.text.filter(|t| t.starts_with("reply ")) {
            *counts.entry(text).or_default() += 1;
        }
    }
    counts
}

/// The outbox worker's Graph calls so far, from the node's `/readyz`.
async fn graph_calls(node: &crate::harness::Node) -> u64 {
    let (_, body) = node.readyz().await.expect("the node answers /readyz");
    body["workers"]["messenger_outbox"]["counters"]["graph_calls"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_outbox_workers_send_every_queued_reply_once_even_when_one_is_killed() {
    let database = Database::shared().await;
    let cookie = seed_site_and_agent(&database.url).await;
    let nginx_port = free_port();
    let config = SandboxConfig {
        callback_url: Some(format!("http://127.0.0.1:{nginx_port}/webhooks/messenger")),
        // A webhook nginx could not deliver (the node died under it) is retried soon.
        retry: RetryPolicy { immediate_retries: 1, backoff: vec![Duration::from_millis(200)], ..Default::default() },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sandbox = messenger_sandbox::launch(config.clone(), listener).await.expect("sandbox");
    let mut options = Options::serve(env!("CARGO_BIN_EXE_parley"), 2)
        // A lease outlives the call timeout by 5 s: a dead node's rows are free 6 s after it leased them, then
        // wait 2 s for an echo before they are sent again.
        .env("PARLEY_MESSENGER__TIMEOUT_SECS", "1")
        .env("PARLEY_MESSENGER__RECONCILE_SECS", "2")
        .env("PARLEY_MESSENGER__REORDER_WINDOW_MS", "0");
    options.env.extend(messenger_env(&config, sandbox.base_url(), SITE_KEY));
    options.nginx_port = Some(nginx_port);
    let mut cluster = Cluster::start(database, options).await;

    for i in 0..CUSTOMERS {
        let psid = sandbox.create_user(NewUser::default()).expect("user").psid;
        sandbox.user_sends_text(&psid, &format!("customer {i} asks")).expect("the customer writes");
    }
    let mut db = sqlx::PgConnection::connect(&cluster.database.url).await.expect("database");
    let conversations: Vec<String> = wait_for("a conversation per customer", async || {
        let ids: Vec<String> =
            sqlx::query_scalar("select id from conversations order by id").fetch_all(&mut db).await.ok()?;
        (ids.len() == CUSTOMERS).then_some(ids)
    })
    .await;

    // Every send now takes 500 ms at the sandbox: calls are in flight when node A dies.
    sandbox.push_send_fault(FaultRule::probability(SendFault::Hang { ms: 500 }, 1.0));
    let origin = cluster.public_url();
    let mut on_a = ws::agent(&cluster.nodes[0].addr.to_string(), &origin, &cookie).await;
    let mut on_b = ws::agent(&cluster.nodes[1].addr.to_string(), &origin, &cookie).await;
    for n in 0..REPLIES {
        for (i, conversation_id) in conversations.iter().enumerate() {
            let agent = if (i + n) % 2 == 0 { &mut on_a } else { &mut on_b };
            ws::agent_says(agent, conversation_id, &format!("r-{i}-{n}"), &reply(i, n)).await;
        }
    }
    let total = CUSTOMERS * REPLIES;
    wait_for("a quarter of the replies at the sandbox", async || {
        (sent_counts(&sandbox).len() >= total / 4).then_some(())
    })
    .await;
    let calls_a = graph_calls(&cluster.nodes[0]).await;
    cluster.nodes[0].kill();
    let at_kill = sent_counts(&sandbox).len();
    assert!(at_kill < total, "every reply was out before the kill: nothing was left to take over");

    // Lease expiry (6 s) plus the reconcile window (2 s) bound the takeover.
    wait_within(Duration::from_secs(60), "every reply at the sandbox", async || {
        (sent_counts(&sandbox).len() == total).then_some(())
    })
    .await;
    let settled = wait_for("every outbox row settled as sent", async || {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select status, count(*) from outbox group by status").fetch_all(&mut db).await.ok()?;
        (rows.len() == 1 && rows[0].0 == "sent").then_some(rows[0].1)
    })
    .await;
    assert_eq!(settled, i64::try_from(total).expect("small"));
    let counts = sent_counts(&sandbox);
    let doubled: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "sent more than once: {doubled:?}");
    for i in 0..CUSTOMERS {
        for n in 0..REPLIES {
            assert_eq!(counts.get(&reply(i, n)), Some(&1), "{} never reached the sandbox", reply(i, n));
        }
    }
    let calls_b = graph_calls(&cluster.nodes[1]).await;
    assert!(calls_a > 0 && calls_b > 0, "both workers sent: A made {calls_a} calls, B {calls_b}");
    db.close().await.expect("close");
    println!(
        "cluster outbox: {total} replies queued on 2 nodes; A made {calls_a} Graph calls before its SIGKILL \
         ({at_kill} replies out by then), B {calls_b}; at the sandbox each reply exactly once (lost 0, doubled 0)"
    );
}
