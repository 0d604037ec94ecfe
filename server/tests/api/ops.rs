//! Operations: `/metrics` scraped after real traffic (each family with the value the traffic must give), its
//! bearer token, and `/readyz` naming each failing check (migrations, workers; the database is in `http.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parley::config::Settings;
use parley::supervisor::Backoff;
use protocol::console::ClientMsg as AgentMsg;
use tokio::time::Instant;

use crate::helpers::{MessengerApp, TestApp, send_acked, spawn_app_with, spawn_messenger_app};

const TOKEN: &str = "scrape-token-0123456789";

fn with_metrics(s: &mut Settings) {
    s.metrics.enabled = true;
    s.metrics.token = TOKEN.to_string().into();
}

async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    response.text().await.expect("body")
}

/// The value of one series (`name` or `name{labels}` exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until `series` has `expected`, failing with the last scrape after 10 s.
async fn wait_for_value(app: &TestApp, series: &str, expected: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(app).await;
        if value(&text, series) == Some(expected) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never became {expected}:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_are_off_by_default_and_on_they_want_the_bearer_token() {
    let app = spawn_app_with(|_| {}).await;
    let response = app.http.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.expect("request");
    assert_eq!(response.status(), 404);

    let app = spawn_app_with(with_metrics).await;
    let none = app.http.get(app.url("/metrics")).send().await.expect("request");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let wrong = app.http.get(app.url("/metrics")).bearer_auth("scrape-token-0123456788").send().await.expect("request");
    assert_eq!(wrong.status(), 401);
    let prefix = app.http.get(app.url("/metrics")).bearer_auth(&TOKEN[..20]).send().await.expect("request");
    assert_eq!(prefix.status(), 401);
    let text = scrape(&app).await;
    assert!(text.contains("# TYPE parley_messages_posted_total counter") || text.contains("parley_open_sockets"));
}

#[tokio::test]
async fn metrics_count_sockets_messages_latency_fan_out_outbox_restarts_and_the_pool() {
    let app = spawn_app_with(with_metrics).await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, r#"parley_open_sockets{kind="visitor"}"#), Some(0.0), "{text}");
    assert_eq!(value(&text, r#"parley_outbox_depth"#), Some(0.0), "{text}");

    // Two visitors and one agent online.
    let (mut first, _) = app.visitor(None, 0).await;
    let (second, _) = app.visitor(None, 0).await;
    let (mut agent, _) = app.agent().await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, r#"parley_open_sockets{kind="visitor"}"#), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"parley_open_sockets{kind="agent"}"#), Some(1.0), "{text}");

    // Three visitor messages, then one agent reply.
    for i in 0..3 {
        send_acked(&mut first, &format!("m{i}"), "hello").await;
    }
    let text = scrape(&app).await;
    assert_eq!(value(&text, r#"parley_messages_posted_total{channel="web",author="visitor"}"#), Some(3.0), "{text}");
    assert_eq!(value(&text, "parley_post_commit_seconds_count"), Some(3.0), "{text}");
    let commit_secs = value(&text, "parley_post_commit_seconds_sum").expect("a sum");
    assert!(commit_secs > 0.0 && commit_secs < 30.0, "{text}");
    // Each message is one event handed to the hub.
    assert_eq!(value(&text, "parley_fanout_lag_seconds_count"), Some(3.0), "{text}");
    assert!(value(&text, r#"parley_fanout_lag_seconds_bucket{le="+Inf"}"#) == Some(3.0), "{text}");

    let conversation = app.store.summaries().await.expect("inbox").remove(0).id;
    agent
        .send(&AgentMsg::Send { conversation_id: conversation.clone(), client_id: "r1".into(), body: "hi".into() })
        .await;
    let text = wait_for_value(&app, r#"parley_messages_posted_total{channel="web",author="agent"}"#, 1.0).await;
    assert_eq!(value(&text, "parley_post_commit_seconds_count"), Some(4.0), "{text}");

    // One visitor leaves.
    drop(second);
    wait_for_value(&app, r#"parley_open_sockets{kind="visitor"}"#, 1.0).await;

    // Two sends waiting in the outbox (no worker runs here: the Messenger channel is off), the oldest queued 90 s
    // ago.
    let now = app.store.clock().now_ms();
    for (id, at) in [(1, now - 90_000), (2, now - 5_000)] {
        app.execute_raw(&format!(
            "insert into outbox (id, conversation_id, psid, body, messaging_type, next_attempt_at, created_at, \
                 updated_at) values ({id}, '{conversation}', 'p', 'x', 'RESPONSE', {at}, {at}, {at})"
        ))
        .await;
    }
    let text = scrape(&app).await;
    assert_eq!(value(&text, "parley_outbox_depth"), Some(2.0), "{text}");
    let age = value(&text, "parley_outbox_oldest_age_seconds").expect("an age");
    assert!((90.0..120.0).contains(&age), "{text}");

    // A worker that panics once is restarted once.
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let backoff = Backoff { first: Duration::from_millis(10), max: Duration::from_secs(1) };
    let _worker = app.workers.supervise("test_worker", app.stop.clone(), backoff, move |ctx| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            anyhow::ensure!(run > 0, "the first run fails");
            let mut stop = ctx.stop;
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        }
    });
    let text = wait_for_value(&app, r#"parley_worker_up{worker="test_worker"}"#, 1.0).await;
    assert_eq!(value(&text, r#"parley_worker_restarts_total{worker="test_worker"}"#), Some(1.0), "{text}");

    // The pool: the test store was opened with 4 connections at most.
    let open = value(&text, r#"parley_db_pool_connections{state="open"}"#).expect("open");
    let idle = value(&text, r#"parley_db_pool_connections{state="idle"}"#).expect("idle");
    assert_eq!(value(&text, r#"parley_db_pool_connections{state="max"}"#), Some(4.0), "{text}");
    assert!((1.0..=4.0).contains(&open) && idle <= open, "{text}");
    drop(first);
}

#[tokio::test]
async fn metrics_count_webhook_deliveries_refusals_failures_and_quarantine() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| {
        with_metrics(s);
        s.messenger.max_delivery_attempts = 2;
    })
    .await;
    let text = scrape(&app).await;
    for worker in ["messenger_intake", "messenger_outbox"] {
        assert_eq!(value(&text, &format!(r#"parley_worker_up{{worker="{worker}"}}"#)), Some(1.0), "{text}");
        assert_eq!(value(&text, &format!(r#"parley_worker_restarts_total{{worker="{worker}"}}"#)), Some(0.0));
    }
    assert_eq!(value(&text, r#"parley_webhook_deliveries_total{result="accepted"}"#), Some(0.0), "{text}");

    // An unsigned POST is refused.
    let refused = app.http.post(app.url("/webhooks/messenger")).body("{}").send().await.expect("request");
    assert_eq!(refused.status(), 403);
    // A customer's message is accepted and posted as a Messenger visitor message.
    let psid = crate::messenger::customer(&sandbox, "Mia");
    sandbox.user_sends_text(&psid, "hello from messenger").expect("send");
    let text = wait_for_value(&app, r#"parley_messages_posted_total{channel="messenger",author="visitor"}"#, 1.0).await;
    assert_eq!(value(&text, r#"parley_webhook_deliveries_total{result="refused"}"#), Some(1.0), "{text}");
    assert_eq!(value(&text, r#"parley_webhook_deliveries_total{result="accepted"}"#), Some(1.0), "{text}");
    assert_eq!(value(&text, "parley_webhook_failures_total"), Some(0.0), "{text}");

    // A delivery that cannot be applied fails twice and is quarantined.
    app.execute_raw(
        "create trigger poison before insert on messages when new.body = 'poison'
             begin select raise(abort, 'injected failure'); end",
    )
    .await;
    sandbox.user_sends_text(&psid, "poison").expect("send");
    let text = wait_for_value(&app, "parley_webhook_quarantined", 1.0).await;
    assert_eq!(value(&text, "parley_webhook_failures_total"), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"parley_webhook_deliveries_total{result="accepted"}"#), Some(2.0), "{text}");
}

async fn ready(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app.http.get(app.url("/readyz")).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON readiness"))
}

#[tokio::test]
async fn readyz_names_a_migration_that_is_not_applied() {
    let app = spawn_app_with(|_| {}).await;
    assert_eq!(ready(&app).await.0, 200);
    app.execute_raw("delete from _sqlx_migrations where version = (select max(version) from _sqlx_migrations)").await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failed"], serde_json::json!(["migrations"]), "{body}");
    assert!(body["migrations"].as_str().unwrap_or("").contains("parley migrate"), "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(app.http.get(app.url("/healthz")).send().await.expect("request").status(), 200);
}

#[tokio::test]
async fn readyz_names_a_dead_worker_until_it_is_back() {
    let app = spawn_app_with(|_| {}).await;
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    // Its first run fails when the test lets it; the restart then waits 500 ms, in which it is down.
    let backoff = Backoff { first: Duration::from_millis(500), max: Duration::from_secs(10) };
    let _worker = app.workers.supervise("test_worker", app.stop.clone(), backoff, move |ctx| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        let mut release = release.clone();
        async move {
            if run == 0 {
                let _ = release.wait_for(|go| *go).await;
                anyhow::bail!("database gone");
            }
            let mut stop = ctx.stop;
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        }
    });
    assert_eq!(ready(&app).await.0, 200);
    release_tx.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_down = false;
    loop {
        let (status, body) = ready(&app).await;
        if body["workers"]["test_worker"]["state"] == "restarting" {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["failed"], serde_json::json!(["workers"]), "{body}");
            assert_eq!(body["workers_down"], serde_json::json!(["test_worker"]), "{body}");
            saw_down = true;
        } else if saw_down && body["workers"]["test_worker"]["state"] == "running" {
            assert_eq!(status, 200, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the worker never went down and came back: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
