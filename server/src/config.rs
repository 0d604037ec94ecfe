//! Parley's settings: one tree, layered defaults → optional TOML file → `PARLEY_*` environment variables.
//!
//! Environment variables use `PARLEY_<SECTION>__<KEY>`, e.g. `PARLEY_DATABASE__URL`, `PARLEY_HTTP__BIND`.
//! The file is `--config <path>`, else `$PARLEY_CONFIG`, else `parley.toml` in the working directory when it exists.
//! Secrets are `SecretString`s and never appear in `Debug` output or logs; the database URL is redacted too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::client_ip::TrustedProxies;

/// Every setting Parley reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub assets: AssetSettings,
    pub console: ConsoleSettings,
    pub limits: LimitSettings,
    pub messenger: MessengerSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub cluster: ClusterSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address `parley serve` listens on.
    pub bind: SocketAddr,
    /// The URL browsers use to reach this server (scheme, host and port; no path). Used for the widget's origin
    /// check, the console's WebSocket origin check, and whether cookies are `Secure`.
    /// Empty means `http://<bind>`.
    pub public_url: String,
    /// Reverse proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client; empty trusts no one, so the
    /// peer address is the client.
    pub trusted_proxies: TrustedProxies,
    /// On SIGTERM or Ctrl-C: seconds open requests, sockets and in-flight Messenger sends get to finish before the
    /// process exits anyway.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            public_url: String::new(),
            trusted_proxies: TrustedProxies::default(),
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (created if missing), or `postgres://user@host[:port]/database` (also
    /// `postgresql://`; the database must exist) for several nodes on one PostgreSQL.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: "sqlite://data/parley.db".into(), max_connections: 8 }
    }
}

impl DatabaseSettings {
    /// Refuses a URL no engine can open and an empty pool.
    pub fn validate(&self) -> anyhow::Result<()> {
        let scheme = self.url.split(':').next().unwrap_or("");
        anyhow::ensure!(
            matches!(scheme, "sqlite" | "postgres" | "postgresql") && self.url.len() > scheme.len() + 1,
            "database.url must be a sqlite:, postgres: or postgresql: URL"
        );
        anyhow::ensure!(self.max_connections >= 1, "database.max_connections must be at least 1");
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A database URL can carry a password: print only its scheme.
        let scheme = self.url.split(':').next().unwrap_or("");
        f.debug_struct("DatabaseSettings")
            .field("url", &format_args!("{scheme}:…"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Several nodes on one PostgreSQL database (ignored on SQLite, which serves one node): how often a node renews its
/// lease, and how long after its last renewal a node counts as gone (its visitors then show offline everywhere).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Milliseconds between a node's heartbeats (lease renewal, presence repair, reaping dead nodes).
    pub heartbeat_ms: u64,
    /// Milliseconds a heartbeat keeps a node alive; at least twice `heartbeat_ms`, so one late beat is no death.
    pub node_lease_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { heartbeat_ms: 5_000, node_lease_ms: 15_000 }
    }
}

impl ClusterSettings {
    /// Refuses a heartbeat that would hammer the database or a lease one late beat could end.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (100..=60_000).contains(&self.heartbeat_ms),
            "cluster.heartbeat_ms must be between 100 and 60000"
        );
        anyhow::ensure!(
            self.node_lease_ms >= 2 * self.heartbeat_ms && self.node_lease_ms <= 600_000,
            "cluster.node_lease_ms must be at least twice cluster.heartbeat_ms and at most 600000"
        );
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssetSettings {
    /// Folder with the built front-end (`widget.js`, `assets/`, `manifest.json`), made by `cargo xtask build`.
    pub dir: PathBuf,
}

impl Default for AssetSettings {
    fn default() -> Self {
        Self { dir: PathBuf::from("target/site") }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// How long an agent stays signed in, in hours.
    pub session_hours: i64,
    /// Seconds between checks that an open agent socket's session still exists (sign-out, password change).
    pub session_check_secs: u64,
}

impl ConsoleSettings {
    /// Refuses values that would leave revoked sessions working for long, or poll the database in a loop.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.session_hours >= 1, "console.session_hours must be at least 1");
        anyhow::ensure!(
            (1..=300).contains(&self.session_check_secs),
            "console.session_check_secs must be between 1 and 300"
        );
        Ok(())
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { session_hours: 24 * 14, session_check_secs: 5 }
    }
}

/// Console sign-in: how much password hashing may run at once and how repeated failures slow down.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Password hashes (argon2id, ~19 MiB each) computed at once; more sign-ins wait for a slot.
    pub max_concurrent_hashes: usize,
    /// How long a sign-in waits for a hashing slot before it is answered 503 "busy".
    pub hash_wait_ms: u64,
    /// Sign-in attempts per client IP address per minute (any email), then 429 until the rate allows again.
    pub attempts_per_ip_per_minute: u32,
    /// First delay after `limits.login_failures` failures for one email from one IP; it doubles with each
    /// further failure up to `backoff_max_secs`. Other IPs are not slowed, so nobody can lock an agent out.
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            max_concurrent_hashes: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            hash_wait_ms: 2000,
            attempts_per_ip_per_minute: 30,
            backoff_base_secs: 1,
            backoff_max_secs: 300,
        }
    }
}

impl AuthSettings {
    /// Refuses values that would disable a defence or make sign-in impossible.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_concurrent_hashes >= 1, "auth.max_concurrent_hashes must be at least 1");
        anyhow::ensure!(self.attempts_per_ip_per_minute >= 1, "auth.attempts_per_ip_per_minute must be at least 1");
        anyhow::ensure!(self.backoff_base_secs >= 1, "auth.backoff_base_secs must be at least 1");
        anyhow::ensure!(
            (self.backoff_base_secs..=3600).contains(&self.backoff_max_secs),
            "auth.backoff_max_secs must be between auth.backoff_base_secs and 3600 (a bounded delay, not a lockout)"
        );
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Frames a connection may queue before it is dropped as too slow (it then resumes by sequence number).
    pub connection_queue: usize,
    /// Seconds a new socket has to send its `hello`.
    pub hello_timeout_secs: u64,
    /// Messages a visitor socket may send in a burst; refilled at `visitor_messages_per_minute`.
    pub visitor_message_burst: u32,
    pub visitor_messages_per_minute: u32,
    /// Failed sign-ins allowed per email address within 15 minutes before sign-in is refused for that address.
    pub login_failures: u32,
    /// Visitor sockets one client address may hold open at once (more are refused with 429).
    pub max_sockets_per_ip: u32,
    /// New visitor sockets (`hello`s) one client address may open per minute (also the burst).
    pub ip_hellos_per_minute: u32,
    /// Frames of every kind, over all visitor sockets of one client address: burst, then the sustained rate.
    pub ip_frame_burst: u32,
    pub ip_frames_per_minute: u32,
    /// Frames other than messages (typing, read, ping, bad frames, ...) per visitor: burst, then the rate.
    pub visitor_frame_burst: u32,
    pub visitor_frames_per_minute: u32,
    /// "Continue on Messenger" link requests and unlinks per visitor per minute (also the burst).
    pub visitor_links_per_minute: u32,
    /// Frames of every kind per signed-in agent: burst, then the sustained rate.
    pub agent_frame_burst: u32,
    pub agent_frames_per_minute: u32,
    /// Seconds between server pings on every socket.
    pub ping_secs: u64,
    /// Seconds a socket has to answer a ping before it is closed as dead.
    pub pong_timeout_secs: u64,
    /// Seconds one write to a socket may take before the socket is closed as not reading.
    pub write_timeout_secs: u64,
}

impl LimitSettings {
    /// Refuses values that would switch a defence off or cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("limits.connection_queue", self.connection_queue as u64),
            ("limits.hello_timeout_secs", self.hello_timeout_secs),
            ("limits.visitor_message_burst", self.visitor_message_burst.into()),
            ("limits.visitor_messages_per_minute", self.visitor_messages_per_minute.into()),
            ("limits.max_sockets_per_ip", self.max_sockets_per_ip.into()),
            ("limits.ip_hellos_per_minute", self.ip_hellos_per_minute.into()),
            ("limits.ip_frame_burst", self.ip_frame_burst.into()),
            ("limits.ip_frames_per_minute", self.ip_frames_per_minute.into()),
            ("limits.visitor_frame_burst", self.visitor_frame_burst.into()),
            ("limits.visitor_frames_per_minute", self.visitor_frames_per_minute.into()),
            ("limits.visitor_links_per_minute", self.visitor_links_per_minute.into()),
            ("limits.agent_frame_burst", self.agent_frame_burst.into()),
            ("limits.agent_frames_per_minute", self.agent_frames_per_minute.into()),
            ("limits.ping_secs", self.ping_secs),
            ("limits.pong_timeout_secs", self.pong_timeout_secs),
            ("limits.write_timeout_secs", self.write_timeout_secs),
        ];
        for (key, value) in positive {
            anyhow::ensure!(value > 0, "{key} must be at least 1");
        }
        anyhow::ensure!(
            (1024..=16 * 1024 * 1024).contains(&self.max_frame_bytes),
            "limits.max_frame_bytes must be between 1024 and 16777216"
        );
        // Dead sockets must be found within minutes, not hours.
        anyhow::ensure!(
            self.ping_secs + self.pong_timeout_secs <= 300,
            "limits.ping_secs + limits.pong_timeout_secs must be at most 300"
        );
        anyhow::ensure!(self.write_timeout_secs <= 300, "limits.write_timeout_secs must be at most 300");
        Ok(())
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            connection_queue: 256,
            hello_timeout_secs: 10,
            visitor_message_burst: 20,
            visitor_messages_per_minute: 30,
            login_failures: 10,
            max_sockets_per_ip: 64,
            ip_hellos_per_minute: 60,
            ip_frame_burst: 600,
            ip_frames_per_minute: 1200,
            visitor_frame_burst: 60,
            visitor_frames_per_minute: 120,
            visitor_links_per_minute: 6,
            agent_frame_burst: 2000,
            agent_frames_per_minute: 1200,
            ping_secs: 20,
            pong_timeout_secs: 20,
            write_timeout_secs: 10,
        }
    }
}

/// How log lines are written (to stderr; the level comes from `RUST_LOG`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (readable) or `json` (one JSON object per line, for log collectors).
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `GET /metrics` (Prometheus text). Off by default; on, every scrape must carry `Authorization: Bearer <token>`,
/// so the counts are never world-readable, even on a listener behind a public reverse proxy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// The bearer token scrapers send (at least 16 characters).
    #[serde(deserialize_with = "secret_from_scalar")]
    pub token: SecretString,
    /// A file holding the token instead (e.g. a systemd credential or a mounted secret); surrounding whitespace is
    /// ignored.
    pub token_file: Option<PathBuf>,
}

/// Shortest `/metrics` bearer token accepted.
pub const MIN_METRICS_TOKEN_CHARS: usize = 16;

impl MetricsSettings {
    /// The scrape token when `/metrics` is on (`None`: off), read from `token_file` when that is set.
    pub fn scrape_token(&self) -> anyhow::Result<Option<SecretString>> {
        if !self.enabled {
            return Ok(None);
        }
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read metrics.token_file {}", path.display()))?;
                SecretString::from(text.trim().to_string())
            }
            None => self.token.clone(),
        };
        anyhow::ensure!(
            token.expose_secret().chars().count() >= MIN_METRICS_TOKEN_CHARS,
            "metrics.enabled is on: metrics.token (or the file metrics.token_file names) must hold a bearer token of \
             at least {MIN_METRICS_TOKEN_CHARS} characters, or /metrics would be open to anyone who can reach the server"
        );
        Ok(Some(token))
    }

    /// Refuses combinations that leave `/metrics` open or say two things.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.token_file.is_none() || self.token.expose_secret().is_empty(),
            "set metrics.token or metrics.token_file, not both"
        );
        if self.enabled && self.token_file.is_none() {
            self.scrape_token()?;
        }
        Ok(())
    }
}

/// The Facebook Page that conversations continue on. Secrets are redacted in `Debug` and never logged.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessengerSettings {
    /// Turns the Messenger channel on.
    pub enabled: bool,
    /// Graph API base URL (the sandbox's URL in tests and the demo).
    pub graph_url: String,
    /// Graph API version in request paths.
    pub api_version: String,
    /// Our app's id (echoes with another `app_id` are messages sent from elsewhere, e.g. Meta's Page inbox).
    #[serde(deserialize_with = "string_from_scalar")]
    pub app_id: String,
    #[serde(deserialize_with = "string_from_scalar")]
    pub page_id: String,
    /// Page username for m.me links (the page id works too).
    #[serde(deserialize_with = "string_from_scalar")]
    pub page_username: String,
    #[serde(deserialize_with = "secret_from_scalar")]
    pub page_token: SecretString,
    #[serde(deserialize_with = "secret_from_scalar")]
    pub app_secret: SecretString,
    /// Token Meta echoes in the webhook verification handshake.
    #[serde(deserialize_with = "secret_from_scalar")]
    pub verify_token: SecretString,
    /// Files holding `page_token`, `app_secret`, `verify_token` or `token_key` instead (e.g. systemd credentials or
    /// mounted secrets); surrounding whitespace is ignored. Setting both a key and its file is refused.
    pub page_token_file: Option<PathBuf>,
    pub app_secret_file: Option<PathBuf>,
    pub verify_token_file: Option<PathBuf>,
    pub token_key_file: Option<PathBuf>,
    /// The key Page tokens are stored under in the database: 32 random bytes in base64 (`parley page key` makes
    /// one). Required once any Page is stored; a configured `page_id`/`page_token` is stored under it when set.
    #[serde(deserialize_with = "secret_from_scalar")]
    pub token_key: SecretString,
    /// Base of "Continue on Messenger" links.
    pub m_me_url: String,
    /// Key of the site that conversations started on Messenger belong to (default: the oldest site).
    #[serde(deserialize_with = "string_from_scalar")]
    pub site_key: String,
    /// Whether the app has the Human Agent feature (replies 24 h – 7 d after the customer's last message).
    pub human_agent: bool,
    /// Lifetime of a "Continue on Messenger" link, in seconds.
    pub link_ttl_secs: u32,
    /// Timeout of one Graph API call, in seconds.
    pub timeout_secs: u64,
    /// Folder where signed webhook deliveries are spooled when the database cannot take them before the 200.
    pub spool_dir: PathBuf,
    /// Seconds a send whose outcome is unknown (a timeout, 1/1357046, a crash during the call) waits for our own
    /// echo to settle it before it is sent again.
    pub reconcile_secs: u64,
    /// Hosts attachments and profile pictures may be downloaded from: `[http://|https://]host[:port]`, host may
    /// start with `*.`; no scheme means https. Only an exact entry with a port (e.g. the sandbox's
    /// `http://127.0.0.1:3001`) may resolve to a loopback or private address.
    pub attachment_hosts: Vec<String>,
    /// Largest attachment downloaded, in bytes (the download is aborted there).
    pub attachment_max_bytes: u64,
    /// Time one attachment download may take, in seconds.
    pub attachment_timeout_secs: u64,
    /// Tries before a webhook delivery that keeps failing is quarantined.
    pub max_delivery_attempts: u32,
    /// How long each customer's webhook events wait, in milliseconds, so that one whose webhook Meta delivers late
    /// (after a later one's) is still stored in timestamp order; every customer message waits this long. 0 turns
    /// the wait off (events are then sorted only among those that arrive together).
    pub reorder_window_ms: u64,
    /// Send API calls the outbox makes at once (each to a different customer: one customer's sends stay in order).
    pub max_in_flight: usize,
}

impl Default for MessengerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            graph_url: "https://graph.facebook.com".into(),
            api_version: "v25.0".into(),
            app_id: String::new(),
            page_id: String::new(),
            page_username: String::new(),
            page_token: SecretString::default(),
            app_secret: SecretString::default(),
            verify_token: SecretString::default(),
            page_token_file: None,
            app_secret_file: None,
            verify_token_file: None,
            token_key_file: None,
            token_key: SecretString::default(),
            m_me_url: "https://m.me".into(),
            site_key: String::new(),
            human_agent: false,
            link_ttl_secs: 600,
            timeout_secs: 10,
            spool_dir: PathBuf::from("data/webhook-spool"),
            reconcile_secs: 30,
            attachment_hosts: vec!["*.fbcdn.net".into(), "*.fbsbx.com".into(), "cdn.fbsbx.com".into()],
            attachment_max_bytes: 25 * 1024 * 1024,
            attachment_timeout_secs: 60,
            max_delivery_attempts: 5,
            reorder_window_ms: 1000,
            max_in_flight: crate::messenger::outbox::MAX_IN_FLIGHT,
        }
    }
}

impl Settings {
    /// Loads defaults, then the TOML file (if any), then `PARLEY_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        // Every struct is `#[serde(default)]`, so missing keys take the defaults in code.
        let mut figment = Figment::new();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("PARLEY_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("parley.toml")).filter(|p| p.exists()));
        if let Some(path) = &file {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            figment = figment.merge(Toml::file(path));
        }
        // Only `PARLEY_<SECTION>__<KEY>` names are settings; other PARLEY_* variables (PARLEY_CONFIG,
        // PARLEY_DEMO_PASSWORD, ...) belong to the command line.
        figment = figment.merge(Env::prefixed("PARLEY_").filter(|key| key.as_str().contains("__")).split("__"));
        // Figment reads `PARLEY_MESSENGER__PAGE_ID=100000000000001` as a number (and would drop a leading zero or
        // trim a secret): ids and secrets are taken exactly as written.
        for key in RAW_STRING_KEYS {
            let var = format!("PARLEY_{}", key.to_ascii_uppercase().replace('.', "__"));
            if let Ok(value) = std::env::var(&var) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let mut settings: Self = figment.extract().context("invalid configuration")?;
        settings.messenger.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses settings that would run unsafely, naming the key to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=3600).contains(&self.http.shutdown_grace_secs),
            "http.shutdown_grace_secs must be between 1 and 3600"
        );
        self.metrics.validate()?;
        self.database.validate()?;
        self.cluster.validate()?;
        let m = &self.messenger;
        if m.enabled {
            // Empty, each of these fails open: webhooks signed with an empty key would be accepted, our own echoes
            // would become Page messages, any page's events would be applied.
            // Pages may instead be connected with `parley page connect` (stored in the database), so the single
            // Page's keys may both be empty — not one of them.
            anyhow::ensure!(
                m.page_id.trim().is_empty() == m.page_token.expose_secret().trim().is_empty(),
                "set both messenger.page_id (PARLEY_MESSENGER__PAGE_ID) and messenger.page_token \
                 (PARLEY_MESSENGER__PAGE_TOKEN), or neither and connect Pages with `parley page connect`"
            );
            m.token_key()?;
            let missing: Vec<String> = [
                ("app_id", m.app_id.trim().is_empty()),
                ("app_secret", m.app_secret.expose_secret().trim().is_empty()),
                ("verify_token", m.verify_token.expose_secret().trim().is_empty()),
            ]
            .into_iter()
            .filter(|(_, empty)| *empty)
            .map(|(key, _)| format!("messenger.{key} (PARLEY_MESSENGER__{})", key.to_ascii_uppercase()))
            .collect();
            anyhow::ensure!(
                missing.is_empty(),
                "messenger.enabled is on but these keys are empty: {}",
                missing.join(", ")
            );
            anyhow::ensure!(m.reconcile_secs >= 1, "messenger.reconcile_secs must be at least 1");
            anyhow::ensure!(
                (1..=MAX_SENDS_IN_FLIGHT).contains(&m.max_in_flight),
                "messenger.max_in_flight must be from 1 to {MAX_SENDS_IN_FLIGHT}"
            );
            anyhow::ensure!(
                m.reorder_window_ms <= MAX_REORDER_WINDOW_MS,
                "messenger.reorder_window_ms must be at most {MAX_REORDER_WINDOW_MS} (every customer message waits \
                 this long)"
            );
        }
        Ok(())
    }

    /// The origin browsers use for this server, e.g. `http://127.0.0.1:3000`.
    pub fn public_origin(&self) -> String {
        if self.http.public_url.is_empty() {
            format!("http://{}", self.http.bind)
        } else {
            self.http.public_url.trim_end_matches('/').to_string()
        }
    }
}

impl MessengerSettings {
    /// Reads every `*_file` secret into its key (refusing a key set both ways).
    pub fn read_secret_files(&mut self) -> anyhow::Result<()> {
        for (name, file, value) in [
            ("page_token", &self.page_token_file, &mut self.page_token),
            ("app_secret", &self.app_secret_file, &mut self.app_secret),
            ("verify_token", &self.verify_token_file, &mut self.verify_token),
            ("token_key", &self.token_key_file, &mut self.token_key),
        ] {
            let Some(path) = file else { continue };
            anyhow::ensure!(
                value.expose_secret().is_empty(),
                "set messenger.{name} or messenger.{name}_file, not both"
            );
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read messenger.{name}_file {}", path.display()))?;
            *value = SecretString::from(text.trim().to_string());
        }
        Ok(())
    }

    /// The key Page tokens are sealed under, if one is configured (refusing one that is not 32 bytes of base64).
    pub fn token_key(&self) -> anyhow::Result<Option<crate::messenger::pages::TokenKey>> {
        let text = self.token_key.expose_secret().trim();
        if text.is_empty() {
            return Ok(None);
        }
        crate::messenger::pages::TokenKey::from_base64(text).map(Some).context("invalid messenger.token_key")
    }
}

/// The most `messenger.max_in_flight` accepted (each call holds a connection and a lease).
pub const MAX_SENDS_IN_FLIGHT: usize = 1024;

/// The longest `messenger.reorder_window_ms` accepted: a minute (every customer message waits the window).
pub const MAX_REORDER_WINDOW_MS: u64 = 60_000;

/// String settings read from the environment exactly as written (see [`Settings::load`]).
const RAW_STRING_KEYS: &[&str] = &[
    "messenger.app_id",
    "messenger.page_id",
    "messenger.page_username",
    "messenger.page_token",
    "messenger.app_secret",
    "messenger.verify_token",
    "messenger.token_key",
    "messenger.site_key",
    "metrics.token",
];

/// A string setting that a TOML file may also write as a bare number (`page_id = 100000000000001`).
fn string_from_scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Scalar;
    impl serde::de::Visitor<'_> for Scalar {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Scalar)
}

fn secret_from_scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    string_from_scalar(deserializer).map(SecretString::from)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's error type, not ours
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[http]\nbind = \"127.0.0.1:4000\"\n[database]\nurl = \"sqlite://x.db\"\n")?;
            jail.set_env("PARLEY_DATABASE__URL", "sqlite://y.db");
            let s = Settings::load(Some(Path::new("p.toml"))).expect("loads");
            assert_eq!(s.http.bind.port(), 4000);
            assert_eq!(s.database.url, "sqlite://y.db");
            assert_eq!(s.limits.connection_queue, 256);
            Ok(())
        });
    }

    #[test]
    fn parley_variables_that_are_not_settings_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PARLEY_DEMO_PASSWORD", "x");
            jail.set_env("PARLEY_CONFIG", "nope.toml");
            jail.set_env("PARLEY_HTTP__PUBLIC_URL", "https://chat.example");
            let s = Settings::load(Some(Path::new("/dev/null"))).expect("loads");
            assert_eq!(s.public_origin(), "https://chat.example");
            Ok(())
        });
    }

    #[test]
    fn database_urls_of_both_engines_are_accepted_and_others_refused() {
        let db = |url: &str, max_connections| DatabaseSettings { url: url.into(), max_connections };
        for ok in ["sqlite://data/parley.db", "postgres://parley@db/parley", "postgresql://db:5433/parley"] {
            assert!(db(ok, 8).validate().is_ok(), "{ok}");
        }
        for bad in ["mysql://db/parley", "data/parley.db", "postgres:", ""] {
            let err = db(bad, 8).validate().expect_err(bad);
            assert!(format!("{err:#}").contains("database.url"), "{bad}: {err:#}");
        }
        assert!(db("sqlite://x.db", 0).validate().is_err());
    }

    #[test]
    fn database_url_is_redacted_in_debug() {
        let s = DatabaseSettings { url: "postgres://u:hunter2@db/parley".into(), max_connections: 1 };
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PARLEY_MESSENGER__PAGE_TOKEN", "EAAB-very-secret");
            jail.set_env("PARLEY_MESSENGER__APP_SECRET", "app-secret-value");
            let s = Settings::load(None).expect("loads");
            let printed = format!("{s:?}");
            assert!(!printed.contains("EAAB-very-secret") && !printed.contains("app-secret-value"), "{printed}");
            use secrecy::ExposeSecret;
            assert_eq!(s.messenger.page_token.expose_secret(), "EAAB-very-secret");
            Ok(())
        });
    }

    #[test]
    fn trusted_proxies_come_from_a_list_or_a_comma_separated_variable_and_bad_ones_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n")?;
            let s = Settings::load(Some(Path::new("p.toml"))).expect("loads");
            assert!(s.http.trusted_proxies.contains("10.2.3.4".parse().expect("ip")));
            jail.set_env("PARLEY_HTTP__TRUSTED_PROXIES", "192.168.0.0/16,::1");
            let s = Settings::load(Some(Path::new("p.toml"))).expect("loads");
            assert!(s.http.trusted_proxies.contains("::1".parse().expect("ip")));
            assert!(!s.http.trusted_proxies.contains("10.2.3.4".parse().expect("ip")));
            jail.set_env("PARLEY_HTTP__TRUSTED_PROXIES", "10.0.0.0/33");
            let err = Settings::load(Some(Path::new("p.toml"))).expect_err("refused");
            assert!(format!("{err:#}").contains("10.0.0.0/33"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn limits_that_switch_a_defence_off_are_refused() {
        assert!(LimitSettings::default().validate().is_ok());
        let zero_cap = LimitSettings { max_sockets_per_ip: 0, ..LimitSettings::default() };
        assert!(format!("{:#}", zero_cap.validate().expect_err("refused")).contains("limits.max_sockets_per_ip"));
        let slow = LimitSettings { ping_secs: 3600, ..LimitSettings::default() };
        assert!(slow.validate().is_err());
        let tiny = LimitSettings { max_frame_bytes: 10, ..LimitSettings::default() };
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[http]\nbnd = \"127.0.0.1:4000\"\n")?;
            assert!(Settings::load(Some(Path::new("p.toml"))).is_err());
            Ok(())
        });
    }
    fn messenger_env(jail: &mut figment::Jail) {
        jail.set_env("PARLEY_MESSENGER__ENABLED", "true");
        jail.set_env("PARLEY_MESSENGER__APP_ID", "1517776481860111");
        jail.set_env("PARLEY_MESSENGER__PAGE_ID", "100000000000001");
        jail.set_env("PARLEY_MESSENGER__PAGE_TOKEN", "EAAB-token");
        jail.set_env("PARLEY_MESSENGER__APP_SECRET", "app-secret");
        jail.set_env("PARLEY_MESSENGER__VERIFY_TOKEN", "0042");
    }

    #[test]
    fn numeric_ids_and_secrets_from_the_environment_are_strings_exactly_as_written() {
        figment::Jail::expect_with(|jail| {
            messenger_env(jail);
            let s = Settings::load(None).expect("numeric ids load");
            assert_eq!(s.messenger.app_id, "1517776481860111");
            assert_eq!(s.messenger.page_id, "100000000000001");
            // No number parsing: the leading zeros stay.
            assert_eq!(s.messenger.verify_token.expose_secret(), "0042");
            Ok(())
        });
    }

    #[test]
    fn numeric_ids_in_the_file_are_strings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "[messenger]\nenabled = true\napp_id = 1517776481860111\npage_id = 100000000000001\n\
                 page_token = \"t\"\napp_secret = \"s\"\nverify_token = 12345\n",
            )?;
            let s = Settings::load(Some(Path::new("p.toml"))).expect("loads");
            assert_eq!(s.messenger.page_id, "100000000000001");
            assert_eq!(s.messenger.verify_token.expose_secret(), "12345");
            Ok(())
        });
    }

    #[test]
    fn messenger_refuses_to_start_with_an_empty_id_or_secret_and_names_it() {
        for (key, env) in [
            ("messenger.app_secret", "PARLEY_MESSENGER__APP_SECRET"),
            ("messenger.app_id", "PARLEY_MESSENGER__APP_ID"),
            ("messenger.page_id", "PARLEY_MESSENGER__PAGE_ID"),
            ("messenger.page_token", "PARLEY_MESSENGER__PAGE_TOKEN"),
            ("messenger.verify_token", "PARLEY_MESSENGER__VERIFY_TOKEN"),
        ] {
            figment::Jail::expect_with(|jail| {
                messenger_env(jail);
                jail.set_env(env, "");
                let err = Settings::load(None).expect_err("an empty key is refused");
                let text = format!("{err:#}");
                assert!(text.contains(key) && text.contains(env), "{text}");
                Ok(())
            });
        }
        // Off, the keys may stay empty.
        figment::Jail::expect_with(|_| {
            let s = Settings::load(None).expect("loads");
            assert!(!s.messenger.enabled);
            Ok(())
        });
    }

    #[test]
    fn messenger_secrets_come_from_files_and_the_token_key_must_be_32_bytes() {
        figment::Jail::expect_with(|jail| {
            messenger_env(jail);
            jail.set_env("PARLEY_MESSENGER__PAGE_ID", "");
            jail.set_env("PARLEY_MESSENGER__PAGE_TOKEN", "");
            let s = Settings::load(None).expect("no configured Page: Pages come from the database");
            assert!(s.messenger.token_key().expect("ok").is_none());
            let key = crate::messenger::pages::TokenKey::generate();
            jail.create_file("key", &format!("{key}\n"))?;
            jail.create_file("secret", " file-secret \n")?;
            jail.create_file("verify", "file-verify")?;
            jail.set_env("PARLEY_MESSENGER__TOKEN_KEY_FILE", "key");
            jail.set_env("PARLEY_MESSENGER__APP_SECRET", "");
            jail.set_env("PARLEY_MESSENGER__APP_SECRET_FILE", "secret");
            jail.set_env("PARLEY_MESSENGER__VERIFY_TOKEN", "");
            jail.set_env("PARLEY_MESSENGER__VERIFY_TOKEN_FILE", "verify");
            let s = Settings::load(None).expect("secrets from files");
            assert!(s.messenger.token_key().expect("valid").is_some());
            assert_eq!(s.messenger.app_secret.expose_secret(), "file-secret");
            assert_eq!(s.messenger.verify_token.expose_secret(), "file-verify");
            jail.set_env("PARLEY_MESSENGER__APP_SECRET", "also-here");
            let err = format!("{:#}", Settings::load(None).expect_err("two ways"));
            assert!(err.contains("messenger.app_secret_file"), "{err}");
            jail.set_env("PARLEY_MESSENGER__APP_SECRET", "");
            jail.create_file("key", "c2hvcnQ=")?;
            let err = format!("{:#}", Settings::load(None).expect_err("a short key"));
            assert!(err.contains("messenger.token_key") && !err.contains("c2hvcnQ"), "{err}");
            jail.set_env("PARLEY_MESSENGER__TOKEN_KEY_FILE", "missing");
            assert!(format!("{:#}", Settings::load(None).expect_err("no file")).contains("token_key_file"));
            Ok(())
        });
    }

    #[test]
    fn metrics_are_refused_without_a_long_enough_token_or_with_two_and_read_from_a_file() {
        figment::Jail::expect_with(|jail| {
            assert!(Settings::load(None).expect("off by default").metrics.scrape_token().expect("ok").is_none());
            jail.set_env("PARLEY_METRICS__ENABLED", "true");
            let err = format!("{:#}", Settings::load(None).expect_err("no token"));
            assert!(err.contains("metrics.token"), "{err}");
            jail.set_env("PARLEY_METRICS__TOKEN", "short");
            assert!(Settings::load(None).is_err());
            jail.set_env("PARLEY_METRICS__TOKEN", "0123456789012345");
            let s = Settings::load(None).expect("loads");
            let token = s.metrics.scrape_token().expect("ok").expect("on");
            assert_eq!(token.expose_secret(), "0123456789012345");
            jail.create_file("token", "  from-a-file-0123456789\n")?;
            jail.set_env("PARLEY_METRICS__TOKEN_FILE", "token");
            let err = format!("{:#}", Settings::load(None).expect_err("both"));
            assert!(err.contains("not both"), "{err}");
            jail.set_env("PARLEY_METRICS__TOKEN", "");
            let s = Settings::load(None).expect("loads");
            let token = s.metrics.scrape_token().expect("ok").expect("on");
            assert_eq!(token.expose_secret(), "from-a-file-0123456789");
            jail.set_env("PARLEY_METRICS__TOKEN_FILE", "missing");
            assert!(Settings::load(None).is_ok(), "the file is read when the server starts");
            assert!(
                format!("{:#}", Settings::load(None).expect("loads").metrics.scrape_token().expect_err("no file"))
                    .contains("metrics.token_file")
            );
            Ok(())
        });
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Settings::load(None).expect("loads").log.format, LogFormat::Text);
            jail.set_env("PARLEY_LOG__FORMAT", "json");
            assert_eq!(Settings::load(None).expect("loads").log.format, LogFormat::Json);
            jail.set_env("PARLEY_LOG__FORMAT", "xml");
            assert!(Settings::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn the_shutdown_grace_period_is_bounded() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Settings::load(None).expect("loads").http.shutdown_grace_secs, 10);
            jail.set_env("PARLEY_HTTP__SHUTDOWN_GRACE_SECS", "0");
            assert!(format!("{:#}", Settings::load(None).expect_err("refused")).contains("shutdown_grace_secs"));
            Ok(())
        });
    }

    #[test]
    fn the_reorder_window_defaults_to_a_second_and_is_bounded() {
        figment::Jail::expect_with(|jail| {
            messenger_env(jail);
            assert_eq!(Settings::load(None).expect("loads").messenger.reorder_window_ms, 1000);
            jail.set_env("PARLEY_MESSENGER__REORDER_WINDOW_MS", "0");
            assert_eq!(Settings::load(None).expect("loads").messenger.reorder_window_ms, 0);
            jail.set_env("PARLEY_MESSENGER__REORDER_WINDOW_MS", "3600000");
            let text = format!("{:#}", Settings::load(None).expect_err("refused"));
            assert!(text.contains("messenger.reorder_window_ms"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn the_outbox_concurrency_defaults_to_32_and_is_bounded() {
        figment::Jail::expect_with(|jail| {
            messenger_env(jail);
            assert_eq!(Settings::load(None).expect("loads").messenger.max_in_flight, 32);
            jail.set_env("PARLEY_MESSENGER__MAX_IN_FLIGHT", "1");
            assert_eq!(Settings::load(None).expect("loads").messenger.max_in_flight, 1);
            for refused in ["0", "1025"] {
                jail.set_env("PARLEY_MESSENGER__MAX_IN_FLIGHT", refused);
                let text = format!("{:#}", Settings::load(None).expect_err("refused"));
                assert!(text.contains("messenger.max_in_flight"), "{text}");
            }
            Ok(())
        });
    }

    #[test]
    fn the_cluster_lease_outlasts_two_heartbeats() {
        figment::Jail::expect_with(|jail| {
            let cluster = Settings::load(None).expect("loads").cluster;
            assert_eq!((cluster.heartbeat_ms, cluster.node_lease_ms), (5_000, 15_000));
            jail.set_env("PARLEY_CLUSTER__HEARTBEAT_MS", "1000");
            jail.set_env("PARLEY_CLUSTER__NODE_LEASE_MS", "1500");
            let text = format!("{:#}", Settings::load(None).expect_err("refused"));
            assert!(text.contains("cluster.node_lease_ms"), "{text}");
            jail.set_env("PARLEY_CLUSTER__NODE_LEASE_MS", "2000");
            assert_eq!(Settings::load(None).expect("loads").cluster.node_lease_ms, 2000);
            jail.set_env("PARLEY_CLUSTER__HEARTBEAT_MS", "10");
            assert!(format!("{:#}", Settings::load(None).expect_err("refused")).contains("cluster.heartbeat_ms"));
            Ok(())
        });
    }
}
