//! The SQLite backend of the store: the connection pool, migrations (`server/migrations/sqlite`) and every query.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction is on disk: callers ack a message
//! only after `append_message` returns.
//!
//! One writer: every write goes through the one write connection of [`writer::Writer`], which queues writers in
//! order and commits concurrent ones together (group commit, see `writer`); no two connections of this process
//! ever contend for SQLite's write lock. Reads use their own connections (`pool`, `query_only`, so a write there
//! fails instead of taking the lock), which WAL lets run beside the writer.

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
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::sqlx_common::on_unique;
use super::{Backend, StoreResult};
use crate::clock::Clock;

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
        let mut conn = options.connect().await.context("cannot open the SQLite database")?;
        sqlx::query("pragma busy_timeout = 0").execute(&mut conn).await.context("cannot set up the writer")?;
        let writer = writer::Writer::start(conn, options.clone());
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
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
}
