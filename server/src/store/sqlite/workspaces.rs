//! Workspaces (tenants), which workspace a conversation or file belongs to, and the connected Messenger Pages.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec, on_unique};
use crate::store::models::{PageRow, Workspace};
use crate::store::{StoreError, StoreResult, WorkspaceStore, new_id};

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(&self, key: &str, name: &str) -> StoreResult<Workspace> {
        let (now, key, name) = (self.now(), key.to_owned(), name.to_owned());
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "insert into workspaces (id, key, name, created_at, updated_at) values (?1, ?2, ?3, ?4, ?4)
                     returning id, key, name",
                )?
                .query_row(params![new_id(), key, name, now], |r| {
                    Ok(Workspace { id: r.get(0)?, key: r.get(1)?, name: r.get(2)? })
                })
                .map_err(|e| on_unique(e, "a workspace with this key"))
            })
            .await
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
        let (now, page) = (self.now(), page.clone());
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "insert into messenger_pages
                         (page_id, workspace_id, site_id, username, token_nonce, token_ciphertext, created_at, updated_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                     on conflict (page_id) do update set workspace_id = excluded.workspace_id,
                         site_id = excluded.site_id, username = excluded.username, token_nonce = excluded.token_nonce,
                         token_ciphertext = excluded.token_ciphertext, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    page.page_id,
                    page.workspace_id,
                    page.site_id,
                    page.username,
                    page.token_nonce,
                    page.token_ciphertext,
                    now
                ])
                .map_err(|e| on_unique(e, "a Page for this site (or a workspace-wide Page)"))
            })
            .await?;
        Ok(())
    }

    async fn delete_page(&self, page_id: &str) -> StoreResult<bool> {
        let page_id = page_id.to_owned();
        let done = self
            .writer
            .run(move |conn| exec(conn, "delete from messenger_pages where page_id = ?", params![page_id]))
            .await?;
        Ok(done > 0)
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
