//! [`Bus`] on PostgreSQL: nudges travel by `NOTIFY` on one channel and arrive through a `LISTEN`ing connection of
//! the node's own (sqlx's `PgListener` on a one-connection pool, named `parley-bus <node id>` in
//! `pg_stat_activity`); node leases and presence rows live in the `nodes` and `node_presence` tables.
//!
//! Nudges are sent after the change they announce has committed, in one statement for a batch
//! (`pg_notify` over an array). PostgreSQL delivers a transaction's notifications at its commit, in order, to
//! every listener, and drops them for a listener whose connection is gone — which the listener sees as an error
//! and answers by subscribing again and catching up from the log.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::store::StoreError;
use crate::store::StoreResult;
use crate::store::bus::{Bus, BusListener, Reaped};

/// The one channel every node listens on.
pub const CHANNEL: &str = "parley_bus";

/// The bus of one database.
#[derive(Clone, Debug)]
pub struct PgBus {
    pool: PgPool,
    /// How to open the listener's own connection (the store's, renamed).
    options: PgConnectOptions,
}

impl PgBus {
    pub fn new(pool: PgPool, options: PgConnectOptions) -> Self {
        Self { pool, options }
    }
}

/// A subscription: the listener and the one-connection pool it lives on.
struct PgBusListener {
    listener: PgListener,
    pool: PgPool,
}

impl Drop for PgBusListener {
    fn drop(&mut self) {
        // Closes the connection in the background; the listener's drop returns it first.
        let pool = self.pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { pool.close().await });
        }
    }
}

#[async_trait]
impl BusListener for PgBusListener {
    async fn recv(&mut self) -> StoreResult<String> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(notification.payload().to_string()),
            Ok(None) => Err(StoreError::Backend("the bus connection was lost".into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Bus for PgBus {
    async fn publish(&self, payloads: &[String]) -> StoreResult<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("select pg_notify($1, p) from unnest($2::text[]) as p")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, node_id: &str) -> StoreResult<Box<dyn BusListener>> {
        let name: String = format!("parley-bus {node_id}").chars().take(63).collect();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.options.clone().application_name(&name))
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is reported, not silently re-made: the caller must catch up after it.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok(Box::new(PgBusListener { listener, pool }))
    }

    async fn heartbeat(&self, node_id: &str, alive_until: i64, contacts: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "insert into nodes (id, alive_until, started_at) values ($1, $2, $2)
             on conflict (id) do update set alive_until = excluded.alive_until",
        )
        .bind(node_id)
        .bind(alive_until)
        .execute(&mut *tx)
        .await?;
        sqlx::query("delete from node_presence where node_id = $1 and not (contact_id = any($2))")
            .bind(node_id)
            .bind(contacts)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into node_presence (contact_id, node_id) select c, $1 from unnest($2::text[]) as c
             on conflict do nothing",
        )
        .bind(node_id)
        .bind(contacts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn presence_join(&self, node_id: &str, contact_id: &str) -> StoreResult<()> {
        sqlx::query("insert into node_presence (contact_id, node_id) values ($1, $2) on conflict do nothing")
            .bind(contact_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn presence_leave(&self, node_id: &str, contact_id: &str) -> StoreResult<()> {
        sqlx::query("delete from node_presence where contact_id = $1 and node_id = $2")
            .bind(contact_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn online_elsewhere(&self, node_id: &str, contacts: &[String], now: i64) -> StoreResult<Vec<String>> {
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "select distinct p.contact_id from node_presence p join nodes n on n.id = p.node_id
             where p.contact_id = any($1) and p.node_id <> $2 and n.alive_until > $3",
        )
        .bind(contacts)
        .bind(node_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn reap_dead_nodes(&self, node_id: &str, now: i64) -> StoreResult<Reaped> {
        // Deleting the node row first serializes reapers: a second one waits on the row, then finds it gone.
        let (nodes, contacts): (i64, Vec<String>) = sqlx::query_as(
            "with dead as (delete from nodes where alive_until < $1 and id <> $2 returning id),
                  gone as (delete from node_presence p using dead where p.node_id = dead.id returning p.contact_id)
             select (select count(*) from dead), coalesce((select array_agg(contact_id) from gone), '{}')",
        )
        .bind(now)
        .bind(node_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Reaped { nodes: u64::try_from(nodes).unwrap_or(0), contacts })
    }

    async fn leave(&self, node_id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let contacts = sqlx::query_scalar("delete from node_presence where node_id = $1 returning contact_id")
            .bind(node_id)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("delete from nodes where id = $1").bind(node_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(contacts)
    }
}
