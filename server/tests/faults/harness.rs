//! The server as a real process: a temporary data folder set up with the `parley` CLI, `parley serve` on a free
//! port (SIGKILLed and restarted at will on the same database), agent sign-in over HTTP, and the database checks
//! every fault test ends with.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

pub const SITE_KEY: &str = "shop";
pub const AGENT_EMAIL: &str = "alex@example.com";
pub const AGENT_PASSWORD: &str = "correct horse battery";

/// How long a condition may take before a test gives up.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, panicking with `what` after [`WAIT`].
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A data folder with a database holding one site and one agent, and the `parley serve` process using it.
pub struct Server {
    pub db_path: PathBuf,
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// Runs one CLI command against the database; panics with its output when it fails.
fn cli(db_url: &str, args: &[&str], stdin: Option<&str>) {
    let out = crate::parley_cli::parley(db_url, args, stdin);
    assert!(out.status.success(), "parley {args:?} failed: {}", crate::parley_cli::text(&out));
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Server {
    /// Sets up `dir` (logs) and the database file `dir/parley.db` with the CLI: migrations, one site, one agent.
    pub fn set_up(dir: &Path) -> Self {
        Self::set_up_with_db(dir, &dir.join("parley.db"))
    }

    /// Like [`Server::set_up`] with the database file elsewhere (e.g. on a small file system of its own).
    pub fn set_up_with_db(dir: &Path, db_path: &Path) -> Self {
        let server = Self {
            db_path: db_path.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        };
        let url = server.db_url();
        cli(&url, &["migrate"], None);
        cli(&url, &["site", "create", "--name", "Shop", "--key", SITE_KEY, "--origin", "http://shop.test:8080"], None);
        cli(
            &url,
            &["agent", "create", "--email", AGENT_EMAIL, "--name", "Alex", "--password-stdin"],
            Some(&format!("{AGENT_PASSWORD}\n")),
        );
        server
    }

    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.db_path.display())
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts `parley serve` and waits until `/healthz` answers 200.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("serve-{}.log", self.starts))).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        command
            .arg("serve")
            .env("PARLEY_DATABASE__URL", self.db_url())
            .env("PARLEY_HTTP__BIND", self.addr.to_string())
            .env("PARLEY_ASSETS__DIR", self.dir.join("site"))
            // Many messages from one machine: the per-visitor rate limits are not what these tests measure.
            .env("PARLEY_LIMITS__VISITOR_MESSAGE_BURST", "100000")
            .env("PARLEY_LIMITS__VISITOR_MESSAGES_PER_MINUTE", "1000000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().expect("parley serve starts"));
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.origin());
        wait_for("the server to answer /healthz", async || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("parley serve exited with {status}: {}", self.log());
            }
            let ok = http.get(&url).send().await.is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    /// SIGKILLs the server (no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(status.code().is_none(), "the server was killed by a signal, not exited: {status}");
    }

    /// Everything the server logged so far (all starts).
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.dir.join(format!("serve-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Signs the agent in through the console's login endpoint; returns the `Cookie` header value.
    pub async fn agent_cookie(&self) -> String {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let response = http
            .post(format!("{}/api/console/login", self.origin()))
            .header("origin", self.origin())
            .form(&[("email", AGENT_EMAIL), ("password", AGENT_PASSWORD)])
            .send()
            .await
            .expect("login answers");
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("parley_session="))
            .unwrap_or_else(|| panic!("no session cookie from login: {}", response.status()));
        cookie.split(';').next().expect("name=value").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the database holds once the dust has settled.
pub struct DbReport {
    /// `PRAGMA integrity_check`.
    pub integrity: String,
    /// Per conversation: client id → (seq, body) of every message.
    pub messages: BTreeMap<String, HashMap<String, (u64, String)>>,
    /// Messages stored more than once (same body twice in a conversation).
    pub doubled: usize,
    pub total_messages: usize,
}

/// Opens the database from the test (read-only use) and checks it: integrity, every conversation's event log
/// numbered 1..=last_seq without gaps and agreeing with `conversations.last_seq`, no message body stored twice.
pub async fn check_database(db_path: &Path) -> DbReport {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db_path.display())).expect("url");
    let mut db = SqliteConnection::connect_with(&options).await.expect("the test opens the database");
    let integrity: String = sqlx::query_scalar("pragma integrity_check").fetch_one(&mut db).await.expect("pragma");
    let conversations = sqlx::query("select id, last_seq from conversations").fetch_all(&mut db).await.expect("rows");
    let mut messages = BTreeMap::new();
    let mut doubled = 0;
    let mut total_messages = 0;
    for row in conversations {
        let id: String = row.get("id");
        let last_seq: i64 = row.get("last_seq");
        let seqs: Vec<i64> = sqlx::query_scalar("select seq from events where conversation_id = ? order by seq")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .expect("events");
        assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "conversation {id}: event log not 1..=last_seq");
        let rows = sqlx::query("select client_id, seq, body from messages where conversation_id = ?")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .expect("messages");
        let mut by_client = HashMap::new();
        let mut bodies = HashMap::<String, usize>::new();
        for m in rows {
            let body: String = m.get("body");
            *bodies.entry(body.clone()).or_default() += 1;
            let seq: i64 = m.get("seq");
            by_client.insert(m.get::<String, _>("client_id"), (u64::try_from(seq).expect("seq"), body));
            total_messages += 1;
        }
        doubled += bodies.values().map(|n| n - 1).sum::<usize>();
        messages.insert(id, by_client);
    }
    db.close().await.expect("close");
    DbReport { integrity, messages, doubled, total_messages }
}
