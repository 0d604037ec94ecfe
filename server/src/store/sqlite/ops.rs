//! [`OpsStore`] on SQLite: the pool, the outbox backlog, applied migrations.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::StoreResult;
use crate::store::ops::{OpsStore, OutboxBacklog, PoolUsage, missing};

#[async_trait]
impl OpsStore for SqliteStore {
    fn pool_usage(&self) -> PoolUsage {
        PoolUsage { open: self.pool.size(), idle: self.pool.num_idle(), max: self.pool.options().get_max_connections() }
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        self.reads().outbox_backlog().await
    }

    async fn missing_migrations(&self) -> StoreResult<Vec<i64>> {
        let applied = self.reads().applied_migrations().await?;
        Ok(missing(&sqlx::migrate!("./migrations/sqlite"), &applied))
    }
}
