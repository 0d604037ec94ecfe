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
        let (pending, oldest_created_at): (i64, Option<i64>) =
            sqlx::query_as("select count(*), min(created_at) from outbox where status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(OutboxBacklog { pending, oldest_created_at })
    }

    async fn missing_migrations(&self) -> StoreResult<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("select version from _sqlx_migrations where success = 1").fetch_all(&self.pool).await?;
        Ok(missing(&sqlx::migrate!("./migrations/sqlite"), &applied))
    }
}
