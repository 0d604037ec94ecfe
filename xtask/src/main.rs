//! Parley's build driver, run as `cargo xtask <command>`:
//!
//! - `build [--release]`: the server binary (debug builds add `parley-demo`, the same with the Messenger sandbox
//!   built in for `parley demo`; the release `parley` never carries it), the widget (Leptos CSR → Wasm) and the hydrated console, each Wasm
//!   through wasm-bindgen (the `wasm-bindgen-cli-support` library, pinned to the exact `wasm-bindgen` version in
//!   Cargo.lock, so no CLI needs installing) and binaryen's `wasm-opt -Oz` (from npm: Debian's wasm-opt corrupts
//!   Rust Wasm), minified JS/CSS, content-hashed names, `.br`/`.gz` beside each file, and `manifest.json`.
//!   Output: `target/site/`.
//! - `demo`: build, then `parley-demo demo` on SQLite under `./data` (chat on :3000, host page on :8080).
//! - `test`: build, then every test: cargo tests of each crate, the size budget, and the Playwright browser tests
//!   in Debian's Chromium (installed with apt when missing). A private PostgreSQL cluster (the `testpg` crate) runs
//!   for the whole run on a free port; its admin URL reaches the tests as `PARLEY_TEST_POSTGRES_URL`. The browser
//!   suite then runs once more against three nodes on that PostgreSQL behind nginx (`server/examples/cluster.rs`).
//!
//! - `bench [SCENARIO…] [--quick] [--note TEXT]`: the release server and `parley-bench`, the Node peer's packages
//!   (`npm ci` in `bench/node`), then the benchmark (see `bench/`): Markdown to `target/bench/results.md`. Scenarios
//!   `pg` and `nodes` (only when named) start a durable private PostgreSQL cluster, installing Debian's package
//!   when missing.
//!   The `widget` scenario (in the default set) first runs the release `build` (the site it measures), `npm ci` in
//!   `bench/widget` (playwright-core and `@rocket.chat/livechat`) and installs Chromium when missing.
//!
//! Everything it needs it installs itself: the wasm32 target (rustup), the npm tools (`npm ci`), Chromium, nginx
//! and systemd's `systemd-analyze`, and the sqlite3 shell the browser tests count rows with (apt).

mod build;
mod cluster;
mod sizes;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: cargo xtask <build [--release] | demo | test [--no-browser] | bench [chat|delivery|idle|storm|webhook|outbox|widget|pg|nodes]… [--quick]>"
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    std::env::set_current_dir(&root).context("cannot enter the workspace root")?;
    let flag = |name: &str| args.iter().any(|a| a == name);
    match args.first().map(String::as_str) {
        Some("build") => {
            let profile = if flag("--release") { build::ServerProfile::Release } else { build::ServerProfile::Debug };
            build::all(&root, profile)?;
            Ok(())
        }
        Some("demo") => {
            build::all(&root, build::ServerProfile::Debug)?;
            let parley = build::target_dir(&root).join("debug/parley-demo");
            println!("xtask: starting the demo (Ctrl-C stops it)");
            tools::run(
                std::process::Command::new(parley)
                    .arg("demo")
                    .env("PARLEY_ASSETS__DIR", build::target_dir(&root).join("site"))
                    .env("PARLEY_DATABASE__URL", "sqlite://data/parley.db"),
            )
        }
        Some("test") => test(&root, !flag("--no-browser")),
        Some("bench") => bench(&root, &args[1..]),
        _ => anyhow::bail!(usage()),
    }
}

/// The folder holding the workspace `Cargo.toml` (this crate's parent).
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).context("xtask has no parent folder")
}

/// The scenario names among `bench`'s arguments: neither flags nor `--note`'s text (none means all).
fn bench_scenarios(args: &[String]) -> Vec<&str> {
    let after_note = |i: usize| i > 0 && args[i - 1] == "--note";
    args.iter().enumerate().filter(|&(i, a)| !a.starts_with("--") && !after_note(i)).map(|(_, a)| a.as_str()).collect()
}

/// Builds the release server and the harness, installs the Node peer, runs `parley-bench run` with `args`.
fn bench(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let names = bench_scenarios(args);
    if names.is_empty() || names.contains(&"widget") {
        build::all(root, build::ServerProfile::Release)?;
        tools::ensure_chromium()?;
        tools::npm_ci(&root.join("bench/widget"))?;
    }
    tools::cargo(&["build", "--release", "-p", "server", "--bin", "parley", "-p", "bench", "--bin", "parley-bench"])?;
    tools::npm_ci(&root.join("bench/node"))?;
    if args.iter().any(|a| a == "pg" || a == "nodes") {
        // Scenarios pg and nodes start a private PostgreSQL cluster of their own.
        tools::ensure_postgres()?;
    }
    let release = build::target_dir(root).join("release");
    let out = build::target_dir(root).join("bench/results.md");
    let shown: Vec<String> =
        args.iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.clone() }).collect();
    let command = format!("cargo xtask bench {}", shown.join(" "));
    tools::run(
        std::process::Command::new(release.join("parley-bench"))
            .arg("run")
            .args(args)
            .arg("--parley")
            .arg(release.join("parley"))
            .arg("--node-dir")
            .arg(root.join("bench/node"))
            .arg("--site")
            .arg(build::target_dir(root).join("site"))
            .arg("--widget-dir")
            .arg(root.join("bench/widget"))
            .arg("--out")
            .arg(&out)
            .arg("--trace")
            .arg(build::target_dir(root).join("bench/trace.csv"))
            .arg("--command")
            .arg(command.trim_end()),
    )
}

fn test(root: &Path, browser: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    tools::cargo(&["fmt", "--all", "--", "--check"])?;
    let report = build::all(root, build::ServerProfile::Debug)?;
    sizes::check_budgets(&report)?;
    // server/tests/ops.rs runs a real nginx and `systemd-analyze verify`; the store and copy tests a PostgreSQL.
    tools::ensure_postgres()?;
    tools::ensure_nginx()?;
    tools::ensure_systemd_analyze()?;
    let pg_started = std::time::Instant::now();
    let pg = testpg::Cluster::start().context("cannot start the PostgreSQL test cluster")?;
    println!("xtask: PostgreSQL test cluster on 127.0.0.1:{} (started in {:.1?})", pg.port(), pg_started.elapsed());
    let pg_url = pg.admin_url();
    let pg_env = [(testpg::URL_ENV, pg_url.as_str())];
    // Crates are tested one by one: the widget (Leptos `csr`) and the server (Leptos `ssr`) must not share a
    // feature-unified build.
    tools::cargo_with_env(
        &[
            "test",
            "-p",
            "protocol",
            "-p",
            "server",
            "-p",
            "messenger-sandbox",
            "-p",
            "faultproxy",
            "-p",
            "testpg",
            "-p",
            "xtask",
            "-p",
            "bench",
        ],
        &pg_env,
    )?;
    tools::cargo(&["test", "-p", "widget"])?;
    tools::cargo(&["test", "-p", "app", "--features", "ssr"])?;
    if browser {
        tools::ensure_chromium()?;
        tools::ensure_sqlite3()?;
        tools::npm_ci(&root.join("end2end"))?;
        tools::run(
            std::process::Command::new("npx")
                .args(["playwright", "test"])
                .current_dir(root.join("end2end"))
                .env("PARLEY_E2E_BIN", build::target_dir(root).join("debug/parley-demo"))
                .env("PARLEY_E2E_SITE_DIR", build::target_dir(root).join("site")),
        )?;
        // The same suite once more against three nodes on PostgreSQL behind nginx.
        cluster::browser_suite(root, &pg_url)?;
    }
    println!("xtask: all tests passed in {:.0?}", started.elapsed());
    Ok(())
}
