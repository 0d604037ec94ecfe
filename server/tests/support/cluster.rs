//! The process-level cluster harness: PostgreSQL (a fresh database on the run's shared test cluster, or a private
//! cluster of the test's own that it may stop and start), several `parley` node processes on free ports sharing that
//! one database, and a real nginx in front of them running the repo's `deploy/nginx/parley.conf` with only its
//! addresses changed. Nodes are started, SIGKILLed and restarted at will; every child (nodes, nginx, a private
//! PostgreSQL) is killed when the [`Cluster`] is dropped, on success and on panic alike, and each node is also
//! started to die with the thread that started it (`setpriv --pdeathsig KILL`), in case no Drop runs. Everything is waited for by condition
//! (`/readyz` answering 200, nginx proxying it), never by sleeping a fixed time.
//!
//! Used by the cluster tests (`server/tests/cluster/`) and by `server/examples/cluster.rs`, which runs the same setup
//! for the browser suite (`cargo xtask test`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};

use crate::nginx;

/// The site every cluster test's visitors write to.
pub const SITE_KEY: &str = "shop";
pub const AGENT_EMAIL: &str = "alex@example.com";
pub const AGENT_PASSWORD: &str = "correct horse battery";

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

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

/// The database the nodes share.
pub struct Database {
    pub url: String,
    /// A cluster of this test's own (stoppable); `None` on the run's shared cluster.
    postgres: Option<testpg::Cluster>,
}

impl Database {
    /// A fresh database on the run's shared test cluster (`PARLEY_TEST_POSTGRES_URL`, or one for this process).
    pub async fn shared() -> Self {
        Self { url: testpg::database().await.url, postgres: None }
    }

    /// A fresh database on a private cluster, which the test may stop and start ([`Database::postgres`]).
    pub async fn private() -> Self {
        let postgres = tokio::task::spawn_blocking(testpg::Cluster::start)
            .await
            .expect("the cluster start ran")
            .unwrap_or_else(|e| panic!("this test needs its own PostgreSQL cluster and could not start one: {e:#}"));
        let url = testpg::database_on(&postgres.admin_url()).await.url;
        Self { url, postgres: Some(postgres) }
    }

    /// The private cluster (panics on the shared one: other tests use it).
    pub fn postgres(&self) -> &testpg::Cluster {
        self.postgres.as_ref().expect("a private PostgreSQL cluster (Database::private)")
    }
}

/// Writes the cluster tests' site and agent (with a session) into `url`; returns the agent's `Cookie` value.
pub async fn seed_site_and_agent(url: &str) -> String {
    let store = parley::store::Store::connect(url, 1).await.expect("the test database");
    store.create_site(SITE_KEY, "Shop", &["http://shop.test:8080".to_string()], "Hi").await.expect("site");
    let agent = parley::cli::create_agent(&store, AGENT_EMAIL, "Alex", AGENT_PASSWORD).await.expect("agent");
    let session = parley::auth::new_token();
    let expires = store.clock().now_ms() + 3_600_000;
    store.create_session(&parley::auth::token_hash(&session), &agent.id, expires).await.expect("session");
    store.close().await;
    format!("parley_session={session}")
}

/// What the database holds once the dust has settled.
pub struct DbReport {
    /// Per conversation: client id → (seq, body) of every message.
    pub messages: BTreeMap<String, HashMap<String, (u64, String)>>,
    /// Messages stored more than once (a client id or a body twice in one conversation).
    pub doubled: usize,
    pub total_messages: usize,
}

impl DbReport {
    /// Client id → stored seq over every conversation (client ids are unique across a test).
    pub fn seqs_by_client_id(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for conversation in self.messages.values() {
            for (client_id, (seq, _)) in conversation {
                assert!(out.insert(client_id.clone(), *seq).is_none(), "{client_id} stored in two conversations");
            }
        }
        out
    }
}

/// Reads every conversation back and checks its event log is numbered 1..=last_seq without gaps or repeats, in
/// agreement with `conversations.last_seq`; counts messages whose client id or body is stored twice.
pub async fn check_database(url: &str) -> DbReport {
    let mut db = sqlx::PgConnection::connect(url).await.expect("the test opens the database");
    let conversations =
        sqlx::query("select id, last_seq from conversations").fetch_all(&mut db).await.expect("conversations");
    let mut report = DbReport { messages: BTreeMap::new(), doubled: 0, total_messages: 0 };
    for row in conversations {
        let id: String = row.get("id");
        let last_seq: i64 = row.get("last_seq");
        let seqs: Vec<i64> = sqlx::query_scalar("select seq from events where conversation_id = $1 order by seq")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .expect("events");
        assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "conversation {id}: event log not 1..=last_seq");
        let rows = sqlx::query("select client_id, seq, body from messages where conversation_id = $1")
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
            let client_id: Option<String> = m.get("client_id");
            let key = client_id.unwrap_or_else(|| format!("(no client id) seq {seq}"));
            if by_client.insert(key, (u64::try_from(seq).expect("seq"), body)).is_some() {
                report.doubled += 1;
            }
            report.total_messages += 1;
        }
        report.doubled += bodies.values().map(|n| n - 1).sum::<usize>();
        report.messages.insert(id, by_client);
    }
    db.close().await.expect("close");
    report
}

// ---------------------------------------------------------------------------------------------------------------
// Nodes

/// How to run one node: the program (`parley`, or `parley-demo` when the node carries the sandbox), its
/// arguments (`serve`, or `demo …`) and environment variables of its own.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    /// `program serve`.
    pub fn serve(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), args: vec!["serve".into()], env: Vec::new() }
    }
}

/// One `parley` process on its own port (kept across restarts), logging to its own files.
pub struct Node {
    /// `A`, `B`, `C` …
    pub name: String,
    pub addr: SocketAddr,
    spec: NodeSpec,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the process (see [`Node::wait_ready`]).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        // setpriv (util-linux, always on Debian) makes the node die with the thread that started it, even when the
        // test process itself is SIGKILLed and no Drop runs.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("{} starts: {e}", self.spec.program.display())));
    }

    /// Waits until `/readyz` answers 200 (database reachable, migrations applied, workers running).
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.url());
        let name = self.name.clone();
        wait_for(&format!("node {name} to answer /readyz with 200"), async || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("node {} exited with {status}:\n{}", self.name, self.log());
            }
            let ok = http.get(&url).send().await.is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    /// Spawns the node and waits until it is ready.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// SIGKILLs the node (no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("node {} is not running", self.name));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(status.code().is_none(), "node {} was killed by a signal, not exited: {status}", self.name);
    }

    /// Whether the process is still the one started last (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// `GET /readyz`: the status and the JSON body, or `None` when the node does not answer.
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("{}/readyz", self.url())).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Everything the node logged, over all its starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("node-{}-{start}.log", self.name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The cluster

/// What to start.
pub struct Options {
    /// One entry per node, in order: node `A` first.
    pub nodes: Vec<NodeSpec>,
    /// Variables for every node (after the harness's own, so they may override them).
    pub env: Vec<(String, String)>,
    /// The nginx port (a free one when `None`): `http.public_url` of every node is `http://127.0.0.1:<port>`.
    pub nginx_port: Option<u16>,
}

impl Options {
    /// `count` nodes running `program serve`.
    pub fn serve(program: impl Into<PathBuf>, count: usize) -> Self {
        let program = program.into();
        Self { nodes: (0..count).map(|_| NodeSpec::serve(&program)).collect(), env: Vec::new(), nginx_port: None }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }
}

/// Nodes behind nginx on one database. Fields drop in order: nginx, then the nodes, then the database (a private
/// PostgreSQL is stopped and removed), then the folder.
pub struct Cluster {
    pub nginx_port: u16,
    nginx: nginx::Running,
    pub nodes: Vec<Node>,
    pub database: Database,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts every node on `database` (each on a free port) and nginx in front of them; returns once every node's
    /// `/readyz` and nginx's proxied `/readyz` answer 200.
    pub async fn start(database: Database, options: Options) -> Self {
        let dir = tempfile::Builder::new().prefix("parley-cluster-").tempdir().expect("temp dir");
        let nginx_port = options.nginx_port.unwrap_or_else(free_port);
        let public = format!("http://127.0.0.1:{nginx_port}");
        let mut nodes = Vec::new();
        for (i, spec) in options.nodes.into_iter().enumerate() {
            let name = char::from(b'A' + u8::try_from(i).expect("a few nodes")).to_string();
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let node_dir = dir.path().join(format!("node-{name}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let mut env: Vec<(String, String)> = [
                ("PARLEY_HTTP__BIND", addr.to_string()),
                ("PARLEY_HTTP__PUBLIC_URL", public.clone()),
                // nginx connects from 127.0.0.1; its X-Forwarded-For names the client.
                ("PARLEY_HTTP__TRUSTED_PROXIES", "127.0.0.1".into()),
                ("PARLEY_DATABASE__URL", database.url.clone()),
                ("PARLEY_ASSETS__DIR", node_dir.join("site").display().to_string()),
                ("PARLEY_MESSENGER__SPOOL_DIR", node_dir.join("spool").display().to_string()),
                // Every test client connects from 127.0.0.1, and many messages go out at once: the per-visitor
                // and per-address flood limits are not what these tests measure.
                ("PARLEY_LIMITS__VISITOR_MESSAGE_BURST", "100000".into()),
                ("PARLEY_LIMITS__VISITOR_MESSAGES_PER_MINUTE", "1000000".into()),
                ("PARLEY_LIMITS__IP_HELLOS_PER_MINUTE", "6000".into()),
                ("PARLEY_LIMITS__IP_FRAME_BURST", "100000".into()),
                ("PARLEY_LIMITS__IP_FRAMES_PER_MINUTE", "1000000".into()),
                ("PARLEY_LIMITS__AGENT_FRAME_BURST", "100000".into()),
                ("PARLEY_LIMITS__AGENT_FRAMES_PER_MINUTE", "1000000".into()),
                ("RUST_LOG", "info".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            env.extend(options.env.iter().cloned());
            nodes.push(Node { name, addr, spec, env, dir: dir.path().to_path_buf(), child: None, starts: 0 });
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready().await;
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let nginx = nginx::start(&dir.path().join("nginx"), &nginx::site_config(&addrs, nginx_port));
        let cluster = Self { nginx_port, nginx, nodes, database, dir };
        let http = reqwest::Client::new();
        wait_for("nginx to proxy /readyz", async || {
            let r = http.get(format!("{public}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        cluster
    }

    /// Waits, for every node at once, until its `/readyz` (status and JSON body) satisfies `check`.
    pub async fn wait_every_node(&self, what: &str, check: impl Fn(u16, &serde_json::Value) -> bool) {
        let check = &check;
        let waits = self.nodes.iter().map(|node| async move {
            wait_for(&format!("node {}: {what}", node.name), async || {
                let (status, body) = node.readyz().await?;
                check(status, &body).then_some(())
            })
            .await
        });
        futures_util::future::join_all(waits).await;
    }

    /// `http://127.0.0.1:<nginx port>`: every node's `http.public_url`.
    pub fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.nginx_port)
    }

    pub fn nginx_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nginx_port))
    }

    /// The cluster's folder (node logs, nginx's files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nginx's error log (upstream failures are logged there).
    pub fn nginx_log(&self) -> String {
        self.nginx.log()
    }

    /// Every node's log, headed by its name: for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("=== node {} ===\n{}", n.name, n.log())).collect::<Vec<_>>().join("\n")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Messenger

/// The variables that point a node at a Messenger sandbox launched with `config` at `base_url` (its webhooks go
/// to the cluster's public URL, i.e. through nginx to any node).
pub fn messenger_env(
    config: &messenger_sandbox::SandboxConfig,
    base_url: &str,
    site_key: &str,
) -> Vec<(String, String)> {
    [
        ("PARLEY_MESSENGER__ENABLED", "true".to_string()),
        ("PARLEY_MESSENGER__GRAPH_URL", base_url.to_string()),
        ("PARLEY_MESSENGER__M_ME_URL", format!("{base_url}/m.me")),
        ("PARLEY_MESSENGER__APP_ID", config.app_id.clone()),
        ("PARLEY_MESSENGER__PAGE_ID", config.page_id.clone()),
        ("PARLEY_MESSENGER__PAGE_USERNAME", config.page_username.clone()),
        ("PARLEY_MESSENGER__PAGE_TOKEN", config.page_token.clone()),
        ("PARLEY_MESSENGER__APP_SECRET", config.app_secret.clone()),
        ("PARLEY_MESSENGER__VERIFY_TOKEN", config.verify_token.clone()),
        ("PARLEY_MESSENGER__SITE_KEY", site_key.to_string()),
        ("PARLEY_MESSENGER__HUMAN_AGENT", config.human_agent_feature.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
