//! Workspaces (tenants), which workspace a conversation or file belongs to, and the connected Messenger Pages.

use async_trait::async_trait;

use super::{PgStore, on_unique};
use crate::store::models::{PageRow, Workspace};
use crate::store::{StoreError, StoreResult, WorkspaceStore, new_id};

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn create_workspace(&self, key: &str, name: &str) -> StoreResult<Workspace> {
        let now = self.now();
        sqlx::query_as::<_, Workspace>(
            "insert into workspaces (id, key, name, created_at, updated_at) values ($1, $2, $3, $4, $5)
             returning id, key, name",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| on_unique(e, "a workspace with this key"))
    }

    async fn workspace_by_key(&self, key: &str) -> StoreResult<Option<Workspace>> {
        self.reads().workspace_by_key(key).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.reads().workspaces().await
    }

    async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>> {
        self.reads().site_workspace(site_id).await
    }

    async fn conversation_workspace(&self, conversation_id: &str) -> StoreResult<Option<String>> {
        self.reads().conversation_workspace(conversation_id).await
    }

    async fn attachment_workspace(&self, attachment_id: &str) -> StoreResult<Option<String>> {
        self.reads().attachment_workspace(attachment_id).await
    }

    async fn save_page(&self, page: &PageRow) -> StoreResult<()> {
        if let Some(site_id) = &page.site_id {
            let owner = self.reads().site_workspace(site_id).await?;
            if owner.as_deref() != Some(page.workspace_id.as_str()) {
                return Err(StoreError::NotFound);
            }
        }
        let now = self.now();
        sqlx::query(
            "insert into messenger_pages
                 (page_id, workspace_id, site_id, username, token_nonce, token_ciphertext, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (page_id) do update set workspace_id = excluded.workspace_id, site_id = excluded.site_id,
                 username = excluded.username, token_nonce = excluded.token_nonce,
                 token_ciphertext = excluded.token_ciphertext, updated_at = excluded.updated_at",
        )
        .bind(&page.page_id)
        .bind(&page.workspace_id)
        .bind(&page.site_id)
        .bind(&page.username)
        .bind(&page.token_nonce)
        .bind(&page.token_ciphertext)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| on_unique(e, "a Page for this site (or a workspace-wide Page)"))?;
        Ok(())
    }

    async fn delete_page(&self, page_id: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("delete from messenger_pages where page_id = $1").bind(page_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn page(&self, page_id: &str) -> StoreResult<Option<PageRow>> {
        self.reads().page(page_id).await
    }

    async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>> {
        self.reads().page_for_site(site_id).await
    }

    async fn pages(&self) -> StoreResult<Vec<PageRow>> {
        self.reads().pages().await
    }
}
