//! The servers under test, each a real process pinned to the server core: Parley (`parley serve`, release build,
//! on a fresh SQLite database in a temporary folder, set up with its own CLI: one site, one agent), the bare relay
//! (`parley-bench relay`) and the Socket.IO peer on Node (`bench/node/server.js`, with or without better-sqlite3).
//!
//! Flood limits are raised for Parley (see [`PARLEY_ENV`]): the benchmark measures throughput, not the defences
//! that stop one visitor from flooding; everything else is Parley's default configuration.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{AGENT_EMAIL, AGENT_PASSWORD, Endpoint, SITE_KEY, SITE_ORIGIN, Wire};

/// Settings Parley runs with in the benchmark, on top of its defaults: flood limits out of the way.
pub const PARLEY_ENV: &[(&str, &str)] = &[
    ("PARLEY_LIMITS__MAX_SOCKETS_PER_IP", "1000000"),
    ("PARLEY_LIMITS__IP_HELLOS_PER_MINUTE", "1000000000"),
    ("PARLEY_LIMITS__IP_FRAME_BURST", "1000000000"),
    ("PARLEY_LIMITS__IP_FRAMES_PER_MINUTE", "1000000000"),
    ("PARLEY_LIMITS__VISITOR_MESSAGE_BURST", "1000000000"),
    ("PARLEY_LIMITS__VISITOR_MESSAGES_PER_MINUTE", "1000000000"),
    ("PARLEY_LIMITS__VISITOR_FRAME_BURST", "1000000000"),
    ("PARLEY_LIMITS__VISITOR_FRAMES_PER_MINUTE", "1000000000"),
    ("PARLEY_LIMITS__AGENT_FRAME_BURST", "1000000000"),
    ("PARLEY_LIMITS__AGENT_FRAMES_PER_MINUTE", "1000000000"),
];

/// The Messenger app secret and Page of [`Kind::ParleyMessenger`] (the webhook scenario signs with the secret).
pub const APP_SECRET: &str = "bench-app-secret";
pub const PAGE_ID: &str = "100000000000001";

/// Parley's Messenger settings in the webhook scenario. The Graph API URL goes nowhere (port 9, refused at once):
/// the scenario measures the intake of signed deliveries, not the calls the intake then makes.
fn messenger_env(dir: &Path) -> Vec<(String, String)> {
    [
        ("ENABLED", "true".to_string()),
        ("APP_ID", "bench-app".to_string()),
        ("PAGE_ID", PAGE_ID.to_string()),
        ("PAGE_USERNAME", "bench".to_string()),
        ("PAGE_TOKEN", "bench-page-token".to_string()),
        ("APP_SECRET", APP_SECRET.to_string()),
        ("VERIFY_TOKEN", "bench-verify-token".to_string()),
        ("SITE_KEY", SITE_KEY.to_string()),
        ("GRAPH_URL", "http://127.0.0.1:9".to_string()),
        ("SPOOL_DIR", dir.join("spool").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("PARLEY_MESSENGER__{k}"), v))
    .collect()
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Parley,
    /// Parley with the Messenger channel on.
    ParleyMessenger,
    Relay,
    /// Socket.IO on Node; `true`: each message persisted with better-sqlite3 before its ack.
    Node {
        persist: bool,
    },
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Parley => "Parley",
            Self::ParleyMessenger => "Parley (Messenger on)",
            Self::Relay => "bare relay",
            Self::Node { persist: false } => "Socket.IO relay",
            Self::Node { persist: true } => "Socket.IO + better-sqlite3",
        }
    }
}

/// What the harness needs to start targets.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub parley: PathBuf,
    pub node_dir: PathBuf,
    /// The core servers are pinned to (`None`: not pinned, on a one-core machine).
    pub server_core: Option<usize>,
    /// Settles the machine before each target starts (see `quiet`).
    pub quiet: std::sync::Arc<crate::quiet::Quiet>,
}

/// A running target; killed when dropped.
pub struct Target {
    pub endpoint: Endpoint,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Target {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SIGTERM first: Parley then closes its sockets and database cleanly.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A command run through `taskset` on the server core.
fn pinned(bins: &Binaries, program: &Path) -> Command {
    match bins.server_core {
        Some(core) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(core.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// `parley` with the benchmark's settings on the database at `database` (SQLite in `dir`, or a PostgreSQL URL
/// several nodes share).
fn parley_cmd_on(bins: &Binaries, dir: &Path, addr: SocketAddr, database: &str) -> Command {
    let mut cmd = pinned(bins, &bins.parley);
    cmd.current_dir(dir)
        .env_remove("PARLEY_CONFIG")
        .env("PARLEY_DATABASE__URL", database)
        .env("PARLEY_HTTP__BIND", addr.to_string())
        .env("PARLEY_ASSETS__DIR", dir.join("site"))
        .env("RUST_LOG", "warn")
        .envs(PARLEY_ENV.iter().copied());
    cmd
}

fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().with_context(|| format!("cannot {what}"))?;
    anyhow::ensure!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Sets up Parley's database with its CLI (site and agent) and starts `parley serve`.
fn start_parley(bins: &Binaries, dir: &Path, addr: SocketAddr, messenger: bool) -> anyhow::Result<Child> {
    let env = if messenger { messenger_env(dir) } else { Vec::new() };
    start_parley_with(bins, dir, addr, SITE_ORIGIN, env)
}

/// [`start_parley`] with the site's page origin and extra settings given.
fn start_parley_with(
    bins: &Binaries,
    dir: &Path,
    addr: SocketAddr,
    origin: &str,
    env: Vec<(String, String)>,
) -> anyhow::Result<Child> {
    let db = format!("sqlite://{}", dir.join("parley.db").display());
    set_up_parley(bins, dir, addr, origin, &db)?;
    serve_parley(bins, dir, addr, &db, env)
}

/// Migrates the database at `db` and creates the benchmark's site and agent with Parley's CLI.
fn set_up_parley(bins: &Binaries, dir: &Path, addr: SocketAddr, origin: &str, db: &str) -> anyhow::Result<()> {
    check(parley_cmd_on(bins, dir, addr, db).arg("migrate"), "parley migrate")?;
    check(
        parley_cmd_on(bins, dir, addr, db)
            .args(["site", "create", "--origin", origin, "--key", SITE_KEY, "--name", "Bench"]),
        "parley site create",
    )?;
    let mut agent = parley_cmd_on(bins, dir, addr, db)
        .args(["agent", "create", "--email", AGENT_EMAIL, "--name", "Bench", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("parley agent create")?;
    if let Some(stdin) = agent.stdin.as_mut() {
        writeln!(stdin, "{AGENT_PASSWORD}")?;
    }
    anyhow::ensure!(agent.wait()?.success(), "parley agent create failed");
    Ok(())
}

/// Starts `parley serve` on `addr` and the database at `db`.
fn serve_parley(
    bins: &Binaries,
    dir: &Path,
    addr: SocketAddr,
    db: &str,
    env: Vec<(String, String)>,
) -> anyhow::Result<Child> {
    parley_cmd_on(bins, dir, addr, db)
        .arg("serve")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("parley serve")
}

/// Waits until a started target accepts connections (60 s at most).
async fn wait_listening(target: &mut Target, label: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = target.child.try_wait() {
            anyhow::bail!("{label} exited at start: {status}");
        }
        if tokio::net::TcpStream::connect(target.endpoint.addr).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{label} did not start listening within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a target and waits until it accepts connections.
pub async fn start(kind: Kind, bins: &Binaries) -> anyhow::Result<Target> {
    bins.quiet.settle(kind.label()).await;
    let dir = tempfile::tempdir()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let (child, wire) = match kind {
        Kind::Parley => (start_parley(bins, dir.path(), addr, false)?, Wire::Plain),
        Kind::ParleyMessenger => (start_parley(bins, dir.path(), addr, true)?, Wire::Plain),
        Kind::Relay => {
            let exe = std::env::current_exe()?;
            let child = pinned(bins, &exe).args(["relay", "--addr", &addr.to_string()]).spawn()?;
            (child, Wire::Plain)
        }
        Kind::Node { persist } => {
            let mut cmd = pinned(bins, Path::new("node"));
            cmd.arg(bins.node_dir.join("server.js")).arg("--port").arg(addr.port().to_string());
            if persist {
                cmd.arg("--db").arg(dir.path().join("node.db"));
            }
            (cmd.spawn().context("node (run `cargo xtask bench`, which installs bench/node)")?, Wire::SocketIo)
        }
    };
    let mut target = Target { endpoint: Endpoint { addr, wire, agent_cookie: None }, child, _dir: dir };
    wait_listening(&mut target, kind.label()).await?;
    if matches!(kind, Kind::Parley | Kind::ParleyMessenger) {
        target.endpoint.agent_cookie = Some(crate::client::agent_cookie(addr).await?);
    }
    Ok(target)
}

/// Parley serving the built widget (`site`, as `cargo xtask build` lays it out) to a host page on `page_origin`
/// (scenario `widget`); the same settings as every other Parley target.
pub async fn start_for_widget(bins: &Binaries, site: &Path, page_origin: &str) -> anyhow::Result<Target> {
    bins.quiet.settle("Parley (widget)").await;
    let dir = tempfile::tempdir()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let env = vec![("PARLEY_ASSETS__DIR".to_string(), site.display().to_string())];
    let child = start_parley_with(bins, dir.path(), addr, page_origin, env)?;
    let mut target = Target { endpoint: Endpoint { addr, wire: Wire::Plain, agent_cookie: None }, child, _dir: dir };
    wait_listening(&mut target, Kind::Parley.label()).await?;
    Ok(target)
}

/// A free port on 127.0.0.1 (for a server another process starts).
pub fn free_local_port() -> anyhow::Result<u16> {
    free_port()
}

/// `count` Parley nodes sharing the PostgreSQL database at `database` (set up once with the CLI), each on its own
/// port and folder, all on the server core; each endpoint carries the same agent session (sessions live in the
/// database, so one sign-in holds on every node).
pub async fn start_parley_nodes(bins: &Binaries, database: &str, count: usize) -> anyhow::Result<Vec<Target>> {
    // The PostgreSQL cluster stays up beside the nodes.
    bins.quiet.settle_beside_running(&format!("{count} Parley node(s)")).await;
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        if i == 0 {
            set_up_parley(bins, dir.path(), addr, SITE_ORIGIN, database)?;
        }
        let child = serve_parley(bins, dir.path(), addr, database, Vec::new())?;
        let mut target =
            Target { endpoint: Endpoint { addr, wire: Wire::Plain, agent_cookie: None }, child, _dir: dir };
        wait_listening(&mut target, &format!("Parley node {}", i + 1)).await?;
        nodes.push(target);
    }
    let first = nodes.first().map(|n| n.endpoint.addr).context("no node to start")?;
    let cookie = crate::client::agent_cookie(first).await?;
    for node in &mut nodes {
        node.endpoint.agent_cookie = Some(cookie.clone());
    }
    Ok(nodes)
}

/// The Messenger sandbox as its own process (`parley-bench sandbox`, on the generator's core: it plays Meta's side,
/// as the generator plays the people's); killed when dropped.
pub struct SandboxProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl SandboxProcess {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parley's Messenger settings for scenario f: the sandbox's app and Page, the Graph API at the sandbox.
fn sandbox_messenger_env(dir: &Path, sandbox: &str) -> Vec<(String, String)> {
    let c = crate::sandbox::config(None, None);
    [
        ("ENABLED", "true".to_string()),
        ("APP_ID", c.app_id),
        ("PAGE_ID", c.page_id),
        ("PAGE_USERNAME", c.page_username),
        ("PAGE_TOKEN", c.page_token),
        ("APP_SECRET", c.app_secret),
        ("VERIFY_TOKEN", c.verify_token),
        ("SITE_KEY", SITE_KEY.to_string()),
        ("GRAPH_URL", sandbox.to_string()),
        ("M_ME_URL", format!("{sandbox}/m.me")),
        ("SPOOL_DIR", dir.join("spool").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("PARLEY_MESSENGER__{k}"), v))
    .collect()
}

/// Waits until something listens on `addr` (60 s at most).
async fn wait_port(addr: SocketAddr, child: &mut Child, label: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{label} exited at start: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "{label} did not start listening within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Scenario f's pair: the sandbox process, and Parley (Messenger on, the Graph API at the sandbox, its webhooks
/// coming from the sandbox) with `extra` settings on top.
pub async fn start_parley_on_sandbox(
    bins: &Binaries,
    extra: &[(String, String)],
) -> anyhow::Result<(Target, SandboxProcess)> {
    bins.quiet.settle("the sandbox and Parley (Messenger on)").await;
    let dir = tempfile::tempdir()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let sandbox_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let exe = std::env::current_exe()?;
    let callback = format!("http://{addr}/webhooks/messenger");
    let mut child = Command::new(exe)
        .args(["sandbox", "--addr", &sandbox_addr.to_string(), "--callback", &callback])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("parley-bench sandbox")?;
    wait_port(sandbox_addr, &mut child, "the sandbox").await?;
    let sandbox = SandboxProcess { addr: sandbox_addr, child };
    let mut env = sandbox_messenger_env(dir.path(), &sandbox.base_url());
    env.extend(extra.iter().cloned());
    let child = start_parley_with(bins, dir.path(), addr, SITE_ORIGIN, env)?;
    let mut target = Target { endpoint: Endpoint { addr, wire: Wire::Plain, agent_cookie: None }, child, _dir: dir };
    wait_listening(&mut target, Kind::ParleyMessenger.label()).await?;
    target.endpoint.agent_cookie = Some(crate::client::agent_cookie(addr).await?);
    Ok((target, sandbox))
}
