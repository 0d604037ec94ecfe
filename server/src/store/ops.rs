//! Operational reads for `/metrics` and `/readyz`: pool usage, the outbox backlog, and whether every migration
//! this build knows is applied. Read-only, cheap, and never part of a request's own work.

use super::{Store, StoreResult};

/// The connection pool right now.
#[derive(Clone, Copy, Debug)]
pub struct PoolUsage {
    /// Connections open (idle or in use).
    pub open: u32,
    pub idle: usize,
    /// The most the pool opens.
    pub max: u32,
}

/// Messenger sends still waiting.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutboxBacklog {
    pub pending: i64,
    /// When the oldest pending send was queued (epoch ms).
    pub oldest_created_at: Option<i64>,
}

impl Store {
    pub fn pool_usage(&self) -> PoolUsage {
        PoolUsage { open: self.pool.size(), idle: self.pool.num_idle(), max: self.pool.options().get_max_connections() }
    }

    pub async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (pending, oldest_created_at): (i64, Option<i64>) =
            sqlx::query_as("select count(*), min(created_at) from outbox where status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(OutboxBacklog { pending, oldest_created_at })
    }

    /// Versions of the migrations this build carries that the database has not applied (successfully).
    pub async fn missing_migrations(&self) -> StoreResult<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("select version from _sqlx_migrations where success = 1").fetch_all(&self.pool).await?;
        Ok(sqlx::migrate!("./migrations/sqlite")
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect())
    }
}
