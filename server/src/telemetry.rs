//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as readable text or, with
//! `log.format = "json"`, one JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`s) for log
//! collectors. Secrets never reach a log line: tokens and passwords are not fields of any span or event, and the
//! database URL is redacted in `Debug`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process's log subscriber (once; later calls change nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
