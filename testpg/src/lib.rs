//! Test support owning throw-away PostgreSQL clusters: [`Cluster::start`] runs `initdb` and `pg_ctl -w start` in a
//! fresh temp dir on a free port (as the `postgres` user when run as root, since PostgreSQL refuses to run as root),
//! and [`database`] hands each test its own fresh database.
//!
//! `cargo xtask test` starts one cluster for the whole run and exports its admin URL as [`URL_ENV`]; a test binary run
//! on its own (`cargo test -p server`) starts one cluster per process on first use. A cluster never outlives the
//! process that started it: a small guard shell holds the read end of a pipe whose write end only that process
//! holds, and when it closes (drop, exit, crash or SIGKILL) the guard stops the server and removes the dir.
//!
//! A test that needs PostgreSQL and cannot get it fails; it never skips (CI runs with `CI=true` on a fresh machine
//! where xtask installs Debian's `postgresql` package first).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// The variable through which `cargo xtask test` hands a running cluster's admin URL to the test binaries.
pub const URL_ENV: &str = "PARLEY_TEST_POSTGRES_URL";

/// Server settings for a disposable cluster: durability off (nothing here must survive the machine), room for the
/// pools of many parallel tests, TCP on loopback only.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "max_connections=400",
];

/// Stops the server and removes the cluster dir once stdin closes, i.e. once the process that started it is gone.
/// It ignores terminal signals so a Ctrl-C of the test run cannot kill it before it cleans up.
const GUARD_SCRIPT: &str = r#"trap '' INT HUP TERM
cat >/dev/null
"$1/pg_ctl" -D "$2/data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$2""#;

/// The folder holding PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`): the newest Debian
/// `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok();
    if let Some(out) = out.filter(|o| o.status.success()) {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").is_file() {
            return Ok(bin);
        }
    }
    anyhow::bail!(
        "PostgreSQL's server programs are missing (no /usr/lib/postgresql/*/bin/initdb); `cargo xtask test` installs \
         Debian's `postgresql` package, or install it yourself"
    )
}

/// A running private cluster. Dropping it stops the server and removes its files.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid when this process is root.
    run_as: Option<(u32, u32)>,
    guard: Child,
    /// Server settings after (so overriding) [`SERVER_SETTINGS`].
    settings: Vec<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("dir", &self.dir).field("port", &self.port).finish()
    }
}

impl Cluster {
    /// Creates a cluster in a new temp dir and starts it on a free loopback port (about a second).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Like [`Cluster::start`], with server settings (`name=value`) overriding the disposable defaults — e.g.
    /// `fsync=on`, `synchronous_commit=on`, `full_page_writes=on` for a benchmark whose commits must be durable.
    pub fn start_with(settings: &[&str]) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let run_as = if is_root() { Some(postgres_user()?) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("parley-testpg-")
            .tempdir()
            .context("cannot create a temp dir for the PostgreSQL cluster")?
            .keep();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to the postgres user", dir.display()))?;
        }
        let mut guard = Command::new("sh");
        guard
            .args(["-c", GUARD_SCRIPT, "testpg-guard"])
            .arg(&bin)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        as_user(&mut guard, run_as);
        let guard = guard.spawn().context("cannot start the cluster's cleanup guard (sh)")?;
        let settings = settings.iter().map(|s| s.to_string()).collect();
        let mut cluster = Self { dir, bin, port: 0, run_as, guard, settings };
        cluster.initdb()?;
        cluster.listen()?;
        Ok(cluster)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder: `data/` and the server `log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of the maintenance database `postgres`, as the superuser `postgres` (trust authentication).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown), keeping its data: with [`Cluster::start_server`], a database restart.
    pub fn stop_server(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]).map(drop)
    }

    /// Starts the stopped server again on the same port.
    pub fn start_server(&self) -> anyhow::Result<()> {
        self.pg_ctl(&self.start_args()).map(drop)
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.arg("-D").arg(self.dir.join("data"));
        cmd.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(cmd, self.run_as, &self.dir).context("initdb failed")
    }

    /// Starts the server on a free port, trying another when one is taken between choosing and binding it.
    fn listen(&mut self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl(&self.start_args()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(e.context(format!("PostgreSQL did not start; its log:\n{log}")));
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port")).context("PostgreSQL found no free port"))
    }

    fn start_args(&self) -> Vec<String> {
        let mut opts = format!("-p {} -k {}", self.port, self.dir.display());
        for setting in SERVER_SETTINGS.iter().copied().chain(self.settings.iter().map(String::as_str)) {
            opts.push_str(" -c ");
            opts.push_str(setting);
        }
        let log = self.dir.join("log").display().to_string();
        ["-l", &log, "-o", &opts, "-w", "-t", "60", "start"].map(String::from).to_vec()
    }

    fn pg_ctl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.dir.join("data")).args(args);
        run(cmd, self.run_as, &self.dir).context("pg_ctl failed")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the guard's stdin is its signal; waiting lets the files be gone when drop returns.
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}

/// Runs `cmd` (as `run_as` when given) in `dir`, failing with its output.
fn run(mut cmd: Command, run_as: Option<(u32, u32)>, dir: &Path) -> anyhow::Result<()> {
    as_user(&mut cmd, run_as);
    let shown = format!("{cmd:?}");
    let out = cmd.current_dir(dir).stdin(Stdio::null()).output().with_context(|| format!("cannot run {shown}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{shown} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn as_user(cmd: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn is_root() -> bool {
    id(&["-u"]).is_ok_and(|uid| uid == 0)
}

/// The uid and gid of the `postgres` user Debian's package creates.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let uid = id(&["-u", "postgres"]);
    let gid = id(&["-g", "postgres"]);
    uid.and_then(|uid| Ok((uid, gid?)))
        .context("running as root, but there is no `postgres` user to run PostgreSQL as (Debian's package creates it)")
}

fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id").args(args).output().context("cannot run id")?;
    anyhow::ensure!(out.status.success(), "id {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The admin URL tests use: [`URL_ENV`] when set (xtask's cluster), else a cluster started for this process.
pub fn admin_url() -> anyhow::Result<String> {
    static OWN: std::sync::OnceLock<Result<Cluster, String>> = std::sync::OnceLock::new();
    if let Ok(url) = std::env::var(URL_ENV) {
        return Ok(url);
    }
    match OWN.get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}"))) {
        Ok(cluster) => Ok(cluster.admin_url()),
        Err(e) => anyhow::bail!("{e}"),
    }
}

#[cfg(feature = "sqlx")]
mod database;
#[cfg(feature = "sqlx")]
pub use database::{TestDatabase, database, database_on};
