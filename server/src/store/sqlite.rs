//! The SQLite backend of the store: the connection pool, migrations (`server/migrations/sqlite`) and every query.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction is on disk: callers ack a message
//! only after `append_message` returns.
//!
//! One writer: every write is a job (the caller's whole transaction, a closure over a rusqlite connection) run by
//! the one write connection's own thread ([`writer::Writer`]), which runs jobs in order and commits concurrent ones
//! together (group commit, see `writer`); no two connections of this process ever contend for SQLite's write lock.
//! Reads use their own connections (sqlx's `pool`, `query_only`, so a write there fails instead of taking the
//! lock), which WAL lets run beside the writer. Migrations (sqlx) run before the writer opens.

mod agents;
mod attachments;
mod conversations;
mod identity;
mod messenger;
mod ops;
mod sites;
mod workspaces;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{Backend, StoreError, StoreResult};
use crate::clock::Clock;

/// The page size a new database file is created with (an existing file keeps its own: SQLite changes it only by a
/// `VACUUM` outside WAL mode). Each COMMIT writes every page it changed to the WAL, whole: a message changes a leaf
/// of each index at its conversation's place, so the WAL bytes per message scale with the page, not the message
/// (in scenario b's shape, 100 conversations and 200 messages per COMMIT, about a third less WAL than at 4 KiB).
/// Rows and event payloads of up to 2,013 bytes still fit on a page of a table (no overflow page).
pub const PAGE_SIZE: u32 = 2048;

/// The store on one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Read connections (`query_only`).
    pool: SqlitePool,
    /// The one write connection.
    writer: writer::Writer,
    clock: Clock,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite:…`) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create database folder {}", dir.display()))?;
        }
        // Migrations run first (waiting up to the busy timeout for another process), then the write connection
        // becomes the writer's.
        // (On a one-connection pool: `Migrator::run` on a bare `&mut SqliteConnection` makes the opening future
        // `Send` for one lifetime only, and callers spawn it.)
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .context("cannot open the SQLite database")?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&migrations).await;
        migrations.close().await;
        migrated.context("database migration failed")?;
        let writer = writer::Writer::start(options.get_filename()).context("cannot open the SQLite database")?;
        // No ping before each acquire (sqlx's default): a connection to a local file cannot go stale, and the ping
        // was a round trip to the connection's thread before every read.
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "true"))
            .await
            .context("cannot open the SQLite database")?;
        Ok(Self { pool, writer, clock })
    }

    /// The write connection's counters (lock waits, groups and commits).
    pub fn writer(&self) -> &writer::Writer {
        &self.writer
    }

    /// Now, from the store's clock.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The reads both engines share, on this store's read pool.
    fn reads(&self) -> super::reads::Reads<'_, sqlx::Sqlite> {
        super::reads::Reads(&self.pool)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

/// Turns a unique-constraint violation on the write connection into [`StoreError::Conflict`].
fn on_unique(err: rusqlite::Error, what: &str) -> StoreError {
    let unique = [rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY];
    match &err {
        rusqlite::Error::SqliteFailure(e, _) if unique.contains(&e.extended_code) => {
            StoreError::Conflict(what.to_string())
        }
        _ => err.into(),
    }
}

/// Runs one statement on the write connection (prepared once per connection); returns the rows it changed.
fn exec(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// The first row a statement on the write connection returns (an `update … returning` that matched), if any.
fn row<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    use rusqlite::OptionalExtension;
    Ok(conn.prepare_cached(sql)?.query_row(params, map).optional()?)
}

/// Every row a statement on the write connection returns.
fn rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let found = statement.query_map(params, map)?.collect::<rusqlite::Result<Vec<T>>>()?;
    Ok(found)
}

#[async_trait]
impl Backend for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Every write is a job the one writer runs in the order it was queued, on the write's first poll.
    fn writes_in_order(&self) -> bool {
        true
    }
}
