//! Supervised workers: one that panics is restarted with backoff and `/readyz` shows it (503 while it is down).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parley::supervisor::Backoff;

use crate::helpers::{MessengerApp, spawn_app, spawn_messenger_app};

async fn health(app: &crate::helpers::TestApp) -> (u16, serde_json::Value) {
    let response = app.http.get(app.url("/readyz")).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON health"))
}

#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_readyz_shows_it() {
    let app = spawn_app().await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");

    // A worker that panics on its first two runs (as on a poisoned input), then keeps running.
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let backoff = Backoff { first: Duration::from_millis(300), max: Duration::from_secs(10) };
    app.workers.supervise("test_worker", app.stop.clone(), backoff, move |ctx| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        let mut release = release.clone();
        async move {
            // Each failing run waits for the test to let it fail, so the test can see every state.
            let _ = release.wait_for(|go| *go).await;
            if run < 2 {
                panic!("index out of range in run {run}");
            }
            let mut stop = ctx.stop;
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        }
    });
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workers"]["test_worker"]["state"], "running");

    release_tx.send_replace(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_restarting = false;
    loop {
        let (status, body) = health(&app).await;
        let worker = &body["workers"]["test_worker"];
        if worker["state"] == "restarting" {
            assert_eq!(status, 503, "{body}");
            assert!(worker["last_failure"].as_str().unwrap_or("").contains("index out of range"), "{body}");
            saw_restarting = true;
        }
        if worker["state"] == "running" && worker["restarts"] == 2 {
            assert_eq!(status, 200, "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never restarted twice: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each restart waited 300 ms or more, in which /readyz answered 503 "restarting".
    assert!(saw_restarting);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn readyz_lists_the_messenger_workers() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, _| {}).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
    for worker in ["messenger_intake", "messenger_outbox"] {
        assert_eq!(body["workers"][worker]["state"], "running", "{body}");
        assert_eq!(body["workers"][worker]["restarts"], 0, "{body}");
    }
}
