//! The SQLite backend of the store: the connection pool, migrations (`server/migrations/sqlite`) and every query.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction is on disk: callers ack a message
//! only after `append_message` returns. Each write transaction starts with a write statement, so SQLite takes the
//! write lock up front and concurrent writers wait on `busy_timeout` instead of failing with SQLITE_BUSY.

mod agents;
mod attachments;
mod conversations;
mod identity;
mod messenger;
mod ops;
mod sites;
mod workspaces;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::sqlx_common::on_unique;
use super::{Backend, StoreResult};
use crate::clock::Clock;

/// The store on one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .context("cannot open the SQLite database")?;
        let store = Self { pool, clock };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every pending migration; refuses to continue on failure.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await.context("database migration failed")
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
        self.pool.close().await;
    }
}
