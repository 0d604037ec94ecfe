//! Test support for `parley` started as a real process (`serve`, or the demo binary): spawning it on its own port
//! with its log in files of its own (one per start), waiting by condition until it answers, SIGKILL and signals,
//! waiting for it to exit, and visitor and agent sockets to it. Shared by the fault tests, the cluster harness (and its
//! example), the group-commit test and the shutdown test, so each starts and stops processes the same way.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How long a condition may take before a test gives up.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, panicking with `what` after `within`.
pub async fn wait_within<T>(within: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_within`] [`WAIT`].
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_within(WAIT, what, check).await
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One `parley` process on its own port (kept across restarts), logging each start to its own file
/// `<dir>/<name>-<start>.log`. It is started to die with the thread that started it (`setpriv --pdeathsig KILL`,
/// util-linux, always on Debian), even when the test process itself is SIGKILLed and no Drop runs; Drop kills it.
pub struct ParleyProcess {
    /// `serve`, or `A`, `B`, `C` … in a cluster.
    pub name: String,
    pub addr: SocketAddr,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    /// What [`ParleyProcess::wait_ready`] waits for: `/healthz` (serving) or `/readyz` (ready for traffic).
    ready_path: &'static str,
    child: Option<Child>,
    starts: u32,
}

impl ParleyProcess {
    /// `program args…` with `env` (after `PARLEY_HTTP__BIND=addr`, so it may not override the port), logging below
    /// `dir`. Nothing runs until [`ParleyProcess::spawn`].
    pub fn new(
        name: &str,
        addr: SocketAddr,
        program: impl Into<PathBuf>,
        args: &[String],
        env: Vec<(String, String)>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        let mut all = vec![("PARLEY_HTTP__BIND".to_string(), addr.to_string())];
        all.extend(env);
        Self {
            name: name.to_string(),
            addr,
            program: program.into(),
            args: args.to_vec(),
            env: all,
            dir: dir.into(),
            ready_path: "/healthz",
            child: None,
            starts: 0,
        }
    }

    /// `program serve` (a test passes `env!("CARGO_BIN_EXE_parley")`) on a free port of 127.0.0.1 with `env`,
    /// logging below `dir`.
    pub fn serve(program: &str, env: Vec<(String, String)>, dir: impl Into<PathBuf>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::new("serve", addr, program, &["serve".to_string()], env, dir)
    }

    /// Waits for `/readyz` instead of `/healthz` ([`ParleyProcess::wait_ready`]).
    pub fn until_ready(mut self) -> Self {
        self.ready_path = "/readyz";
        self
    }

    /// Sets `key=value` for the next starts (over any earlier value).
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the process (see [`ParleyProcess::wait_ready`]).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display())));
    }

    /// Waits until `GET /healthz` (or `/readyz`, see [`ParleyProcess::until_ready`]) answers 2xx; panics with the
    /// log if the process exits first.
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let path = self.ready_path;
        let url = format!("{}{path}", self.url());
        let what = format!("{} to answer {path} with 200", self.name);
        wait_for(&what, async || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            let ok = http.get(&url).send().await.is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    /// Spawns the process and waits until it is ready ([`ParleyProcess::wait_ready`]).
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// SIGKILLs the process (no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(status.code().is_none(), "{} was killed by a signal, not exited: {status}", self.name);
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.name));
        kill(Pid::from_raw(i32::try_from(child.id()).expect("pid")), signal).expect("signal sent");
    }

    /// Waits (at most `within`) until the process exits, and reaps it.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} is not running", self.name));
        let status =
            wait_within(within, &format!("{} to exit", self.name), async || child.try_wait().expect("try_wait")).await;
        self.child = None;
        status
    }

    /// Whether the process is still the one started last (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// `GET /readyz`: the status and the JSON body, or `None` when the process does not answer.
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("{}/readyz", self.url())).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Everything the process logged, over all its starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("{}-{start}.log", self.name))
    }
}

impl Drop for ParleyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `ws://{host}{path}` with `Origin: origin` and, for an agent, its session cookie.
pub async fn open_socket(host: &str, path: &str, origin: &str, cookie: Option<&str>) -> Socket {
    let mut request = format!("ws://{host}{path}").into_client_request().expect("request");
    request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("origin"));
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).expect("cookie"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap_or_else(|e| panic!("ws to {host}: {e}"));
    socket
}

/// A visitor socket to `site` on the server at `port`, from the server's own origin (no `Hello` sent yet).
pub async fn visitor_socket(port: u16, site: &str) -> Socket {
    let host = format!("127.0.0.1:{port}");
    open_socket(&host, &format!("/ws/visitor?site={site}"), &format!("http://{host}"), None).await
}

/// An agent socket on the server at `port` with the session `cookie`, from the server's own origin.
pub async fn agent_socket(port: u16, cookie: &str) -> Socket {
    let host = format!("127.0.0.1:{port}");
    open_socket(&host, "/ws/agent", &format!("http://{host}"), Some(cookie)).await
}
