//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Secrets never reach a log line:
//! tokens and passwords are not fields of any span or event, and the database URL is redacted in `Debug`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
