//! Test support for `parley` started as a real process: waiting until it answers `/healthz`, and failing with its
//! log when it exits or never gets there.

use std::process::Child;
use std::time::Duration;

use tokio::time::Instant;

/// Waits (at most `wait`) until the process on `port` answers `/healthz` with 200; panics with `log()` if it
/// exits first or the time runs out.
pub async fn wait_healthy(child: &mut Child, port: u16, wait: Duration, log: impl Fn() -> String) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + wait;
    loop {
        assert!(child.try_wait().expect("status").is_none(), "parley exited:\n{}", log());
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "parley never became healthy:\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
