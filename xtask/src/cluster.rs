//! The browser suite once more on three nodes: `server/examples/cluster.rs` starts nginx (the repo's config) in
//! front of three nodes on one PostgreSQL database (node A is `parley-demo demo`, with the host page and the
//! Messenger sandbox), prints its origins as one JSON line, and the same Playwright suite runs against them (all
//! specs but `faults.spec.ts`, which starts a single-node server of its own). Closing the example's stdin stops
//! everything it started; the nodes' and nginx's logs are kept in `target/e2e-cluster/`.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::{build, tools};

pub fn browser_suite(root: &Path, pg_url: &str) -> anyhow::Result<()> {
    tools::cargo(&["build", "-p", "server", "--example", "cluster"])?;
    let target = build::target_dir(root);
    let logs = target.join("e2e-cluster");
    let _ = std::fs::remove_dir_all(&logs);
    let mut cluster = Command::new(target.join("debug/examples/cluster"))
        .arg("--demo-bin")
        .arg(target.join("debug/parley-demo"))
        .arg("--site-dir")
        .arg(target.join("site"))
        .arg("--logs")
        .arg(&logs)
        .env(testpg::URL_ENV, pg_url)
        // The password the specs sign in with (end2end/tests/fixtures.ts).
        .env("PARLEY_DEMO_PASSWORD", "e2e-password-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the three-node cluster (server/examples/cluster.rs)")?;
    let mut line = String::new();
    if let Some(out) = cluster.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line).context("cannot read the cluster's ready line")?;
    }
    let ready: Option<serde_json::Value> = serde_json::from_str(&line).ok();
    let result = match &ready {
        Some(ready) => {
            let origin = |key: &str| ready[key].as_str().unwrap_or_default().to_string();
            println!("xtask: browser suite on three nodes behind nginx ({})", origin("chat_origin"));
            tools::run(
                Command::new("npx")
                    .args(["playwright", "test"])
                    .current_dir(root.join("end2end"))
                    .env("PARLEY_E2E_CHAT_ORIGIN", origin("chat_origin"))
                    .env("PARLEY_E2E_HOST_ORIGIN", origin("host_origin"))
                    .env("PARLEY_E2E_DATABASE_URL", origin("database_url"))
                    .env("PARLEY_E2E_BIN", target.join("debug/parley-demo"))
                    .env("PARLEY_E2E_SITE_DIR", target.join("site")),
            )
        }
        None => Err(anyhow::anyhow!("the three-node cluster did not start (it printed {line:?})")),
    };
    drop(cluster.stdin.take());
    let stopped = cluster.wait().context("the cluster did not stop")?;
    if result.is_err() {
        eprintln!("xtask: the nodes' and nginx's logs are in {}", logs.display());
    }
    result?;
    anyhow::ensure!(stopped.success(), "the three-node cluster failed ({stopped})");
    Ok(())
}
