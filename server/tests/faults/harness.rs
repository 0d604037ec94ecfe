//! The server as a real process: a temporary data folder set up with the `parley` CLI, `parley serve` on a free
//! port (SIGKILLed and restarted at will on the same database), agent sign-in over HTTP, and the database checks
//! every fault test ends with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::db_check::check_database;
use crate::process::ParleyProcess;
pub use crate::process::{WAIT, wait_for};

pub const SITE_KEY: &str = "shop";
pub const AGENT_EMAIL: &str = "alex@example.com";
pub const AGENT_PASSWORD: &str = "correct horse battery";

/// A data folder with a database holding one site and one agent, and the `parley serve` process using it.
pub struct Server {
    pub db_path: PathBuf,
    pub addr: SocketAddr,
    process: ParleyProcess,
}

/// Runs one CLI command against the database; panics with its output when it fails.
fn cli(db_url: &str, args: &[&str], stdin: Option<&str>) {
    let out = crate::parley_cli::parley(db_url, args, stdin);
    assert!(out.status.success(), "parley {args:?} failed: {}", crate::parley_cli::text(&out));
}

impl Server {
    /// Sets up `dir` (logs) and the database file `dir/parley.db` with the CLI: migrations, one site, one agent.
    pub fn set_up(dir: &Path) -> Self {
        Self::set_up_with_db(dir, &dir.join("parley.db"))
    }

    /// Like [`Server::set_up`] with the database file elsewhere (e.g. on a small file system of its own).
    pub fn set_up_with_db(dir: &Path, db_path: &Path) -> Self {
        let url = format!("sqlite://{}", db_path.display());
        let env = [
            ("PARLEY_DATABASE__URL", url.clone()),
            ("PARLEY_ASSETS__DIR", dir.join("site").display().to_string()),
            // Many messages from one machine: the per-visitor rate limits are not what these tests measure.
            ("PARLEY_LIMITS__VISITOR_MESSAGE_BURST", "100000".into()),
            ("PARLEY_LIMITS__VISITOR_MESSAGES_PER_MINUTE", "1000000".into()),
            ("RUST_LOG", "warn".into()),
        ];
        let process = ParleyProcess::serve(
            env!("CARGO_BIN_EXE_parley"),
            env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            dir,
        );
        let server = Self { db_path: db_path.to_path_buf(), addr: process.addr, process };
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
        self.process.start().await;
    }

    /// SIGKILLs the server (no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
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
