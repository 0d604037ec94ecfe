//! Operational reads for `/metrics` and `/readyz`: pool usage, the outbox backlog, and whether every migration
//! this build knows is applied. Read-only, cheap, and never part of a request's own work. Each backend implements
//! [`OpsStore`] next to its own pools and migrations.

use async_trait::async_trait;

use super::StoreResult;

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

/// What operators read about the database.
#[async_trait]
pub trait OpsStore: Send + Sync {
    fn pool_usage(&self) -> PoolUsage;

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;

    /// Versions of the migrations this build carries that the database has not applied (successfully).
    async fn missing_migrations(&self) -> StoreResult<Vec<i64>>;
}

/// The versions in `carried` that are not in `applied` (down migrations ignored).
pub(crate) fn missing(carried: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<i64> {
    carried
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect()
}
