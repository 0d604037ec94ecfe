//! The PostgreSQL backend of the store: the connection pool, migrations (`server/migrations/postgres`) and every
//! query, for one or several `parley` nodes sharing one database.
//!
//! Concurrency rules (PostgreSQL runs transactions at READ COMMITTED here):
//! - A conversation's `seq` is taken by `update conversations set last_seq = last_seq + 1 … returning`, which holds
//!   the conversation row's lock until commit: concurrent writers to one conversation (from any node) queue on that
//!   row, and a rolled-back writer's number is rolled back with it, so numbers stay unique and gap-free.
//! - `append_message` locks the conversation row (`for no key update`) before it reads the status it acts on.
//! - Queue claims (outbox heads, attachment downloads) select with `for update skip locked`, so workers on several
//!   nodes never lease the same row; the outbox lease's expiry lets another node take over a dead node's rows.
//! - Where a transaction locks several rows it takes them in one order — contacts, outbox rows, then the
//!   conversation — so two writers cannot deadlock.
//!
//! A committed transaction is durable under PostgreSQL's default `synchronous_commit = on`: callers ack a message
//! only after `append_message` returns.

mod agents;
mod attachments;
mod bus;
mod conversations;
mod identity;
mod messenger;
mod ops;
mod sites;
mod workspaces;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::bus::Bus;
use super::sqlx_common::on_unique;
use super::{Backend, StoreResult};
use crate::clock::Clock;

/// The store on one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    clock: Clock,
    /// `LISTEN/NOTIFY` between the nodes on this database, with their leases and presence rows.
    bus: Arc<bus::PgBus>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres:…` or `postgresql:…`) and applies pending migrations. The
    /// database must exist; several nodes may migrate at once (sqlx serializes them with an advisory lock).
    pub async fn connect(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
        let options = options.application_name("parley");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .context("cannot connect to the PostgreSQL database")?;
        let bus = Arc::new(bus::PgBus::new(pool.clone(), options));
        let store = Self { pool, clock, bus };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every pending migration; refuses to continue on failure.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await.context("database migration failed")
    }

    /// Now, from the store's clock.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The reads both engines share, on this store's read pool.
    fn reads(&self) -> super::reads::Reads<'_, sqlx::Postgres> {
        super::reads::Reads(&self.pool)
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn bus(&self) -> Option<Arc<dyn Bus>> {
        Some(Arc::clone(&self.bus) as Arc<dyn Bus>)
    }
}
