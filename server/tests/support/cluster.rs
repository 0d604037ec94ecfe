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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::nginx;
use crate::process::ParleyProcess;

/// The site every cluster test's visitors write to.
pub const SITE_KEY: &str = "shop";
pub const AGENT_EMAIL: &str = "alex@example.com";
pub const AGENT_PASSWORD: &str = "correct horse battery";

// The cluster tests and the example each use a part of these.
#[allow(unused_imports)]
pub use crate::db_check::check_database;
#[allow(unused_imports)]
pub use crate::process::{WAIT, free_port, wait_for, wait_within};

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

/// One node: a `parley` process on its own port (kept across restarts), logging to its own files, started to die
/// with the thread that started it.
pub type Node = ParleyProcess;

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
            env.extend(spec.env);
            nodes.push(Node::new(&name, addr, spec.program, &spec.args, env, dir.path()).until_ready());
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
