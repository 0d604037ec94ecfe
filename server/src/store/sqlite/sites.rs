//! Sites: the websites that embed the widget.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec, on_unique};
use crate::store::models::Site;
use crate::store::{SiteStore, StoreError, StoreResult, new_id};

#[async_trait]
impl SiteStore for SqliteStore {
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
        let (workspace_id, key, name, greeting) =
            (workspace_id.to_owned(), key.to_owned(), name.to_owned(), greeting.to_owned());
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at, workspace_id)
                     select ?1, ?2, ?3, ?4, ?5, ?6, ?6, id from workspaces where id = ?7
                     returning id, key, name, allowed_origins, greeting, created_at, workspace_id",
                )?
                .query_row(params![new_id(), key, name, origins_json, greeting, now, workspace_id], |r| {
                    Ok(Site {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        name: r.get(2)?,
                        allowed_origins_json: r.get(3)?,
                        greeting: r.get(4)?,
                        created_at: r.get(5)?,
                        workspace_id: r.get(6)?,
                    })
                })
                .map_err(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
                    e => on_unique(e, "a site with this key"),
                })
            })
            .await
    }

    async fn site_by_key(&self, key: &str) -> StoreResult<Option<Site>> {
        self.reads().site_by_key(key).await
    }

    async fn sites(&self) -> StoreResult<Vec<Site>> {
        self.reads().sites().await
    }

    async fn set_allowed_origins(&self, site_id: &str, origins: &[String]) -> StoreResult<()> {
        let origins_json = serde_json::to_string(origins).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (now, site_id) = (self.now(), site_id.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update sites set allowed_origins = ?, updated_at = ? where id = ?",
                    params![origins_json, now, site_id],
                )
            })
            .await?;
        Ok(())
    }
}
