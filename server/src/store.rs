//! Persistence: the one place that speaks SQL. Owns the connection pool, migrations and every query.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction is on disk: callers ack a message
//! only after `append_message` returns. Each write transaction starts with a write statement, so SQLite takes the
//! write lock up front and concurrent writers wait on `busy_timeout` instead of failing with SQLITE_BUSY.
//! Handlers never see `sqlx` types: they get rows from `store::models` and [`StoreError`].

mod agents;
mod conversations;
pub mod copy;
mod identity;
mod messenger;
mod sites;

pub mod models;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use conversations::web_contact_id;
pub use conversations::{AppendOutcome, HUMAN_AGENT_WINDOW_MS, MirrorPolicy, NewMessage, RESPONSE_WINDOW_MS};
pub use identity::{SiteIdentity, identity_key};
pub use messenger::{Accepted, MAX_LIVE_LINKS, OfferOutcome, QuarantinedDelivery};
pub use messenger::{LinkRow, OutboxRow, outbox_metadata};

/// Errors from the store, sorted by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. an email that already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// Stored data could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating when missing) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("sqlite:"),
            "unsupported database URL scheme (only sqlite: is supported so far)"
        );
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create database folder {}", dir.display()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .context("cannot open the SQLite database")?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every pending migration; refuses to continue on failure.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await.context("database migration failed")
    }

    /// Answers when the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Takes SQLite's write lock and holds it until [`WriteLock::release`]: lets tests (and operators checking
    /// behaviour under a busy database) see what the server does while the database cannot be written.
    pub async fn hold_write_lock(&self) -> StoreResult<WriteLock> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("begin immediate").execute(&mut *conn).await?;
        Ok(WriteLock { conn })
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite's write lock, held by [`Store::hold_write_lock`].
pub struct WriteLock {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
}

impl WriteLock {
    pub async fn release(mut self) {
        let _ = sqlx::query("commit").execute(&mut *self.conn).await;
    }
}

/// Turns a unique-constraint violation into [`StoreError::Conflict`].
fn on_unique(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.to_string()),
        _ => StoreError::Db(err),
    }
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
