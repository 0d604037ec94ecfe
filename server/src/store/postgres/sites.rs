//! Sites: the websites that embed the widget.

use async_trait::async_trait;

use super::{PgStore, on_unique};
use crate::store::models::Site;
use crate::store::{SiteStore, StoreError, StoreResult, new_id};

#[async_trait]
impl SiteStore for PgStore {
    async fn create_site_in(
        &self,
        workspace_id: &str,
        key: &str,
        name: &str,
        origins: &[String],
        greeting: &str,
    ) -> StoreResult<Site> {
        let now = self.now();
        let origins_json = serde_json::to_string(origins).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query_as::<_, Site>(
            "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at, workspace_id)
             select $1, $2, $3, $4, $5, $6, $7, id from workspaces where id = $8
             returning id, key, name, allowed_origins, greeting, created_at, workspace_id",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(origins_json)
        .bind(greeting)
        .bind(now)
        .bind(now)
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| on_unique(e, "a site with this key"))?
        .ok_or(StoreError::NotFound)
    }

    async fn site_by_key(&self, key: &str) -> StoreResult<Option<Site>> {
        self.reads().site_by_key(key).await
    }

    async fn sites(&self) -> StoreResult<Vec<Site>> {
        self.reads().sites().await
    }

    async fn set_allowed_origins(&self, site_id: &str, origins: &[String]) -> StoreResult<()> {
        let origins_json = serde_json::to_string(origins).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("update sites set allowed_origins = $1, updated_at = $2 where id = $3")
            .bind(origins_json)
            .bind(self.now())
            .bind(site_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
