//! Parley's settings: one tree, layered defaults → optional TOML file → `PARLEY_*` environment variables.
//!
//! Environment variables use `PARLEY_<SECTION>__<KEY>`, e.g. `PARLEY_DATABASE__URL`, `PARLEY_HTTP__BIND`.
//! The file is `--config <path>`, else `$PARLEY_CONFIG`, else `parley.toml` in the working directory when it exists.
//! Secrets are `SecretString`s and never appear in `Debug` output or logs; the database URL is redacted too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

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
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 3000)), public_url: String::new() }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (created if missing). PostgreSQL comes with the scale-out work.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: "sqlite://data/parley.db".into(), max_connections: 8 }
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
        }
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
    pub app_id: String,
    pub page_id: String,
    /// Page username for m.me links (the page id works too).
    pub page_username: String,
    pub page_token: SecretString,
    pub app_secret: SecretString,
    /// Token Meta echoes in the webhook verification handshake.
    pub verify_token: SecretString,
    /// Base of "Continue on Messenger" links.
    pub m_me_url: String,
    /// Key of the site that conversations started on Messenger belong to (default: the oldest site).
    pub site_key: String,
    /// Whether the app has the Human Agent feature (replies 24 h – 7 d after the customer's last message).
    pub human_agent: bool,
    /// Lifetime of a "Continue on Messenger" link, in seconds.
    pub link_ttl_secs: u32,
    /// Timeout of one Graph API call, in seconds.
    pub timeout_secs: u64,
    /// Folder where signed webhook deliveries are spooled before they reach the database.
    pub spool_dir: PathBuf,
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
            m_me_url: "https://m.me".into(),
            site_key: String::new(),
            human_agent: false,
            link_ttl_secs: 600,
            timeout_secs: 10,
            spool_dir: PathBuf::from("data/webhook-spool"),
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
        figment.extract().context("invalid configuration")
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
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[http]\nbnd = \"127.0.0.1:4000\"\n")?;
            assert!(Settings::load(Some(Path::new("p.toml"))).is_err());
            Ok(())
        });
    }
}
