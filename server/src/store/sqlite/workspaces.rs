//! Workspaces (tenants), which workspace a conversation or file belongs to, and the connected Messenger Pages.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec, on_unique};
use crate::store::models::{PageRow, Workspace};
use crate::store::{StoreError, StoreResult, WorkspaceStore, new_id};

const PAGE_COLUMNS: &str =
    "select p.page_id, p.workspace_id, p.site_id, p.username, p.token_nonce, p.token_ciphertext from messenger_pages p";

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
        Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces where key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces order by created_at, id")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("select workspace_id from sites where id = ?")
            .bind(site_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn conversation_workspace(&self, conversation_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "select s.workspace_id from conversations c join sites s on s.id = c.site_id where c.id = ?",
        )
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn attachment_workspace(&self, attachment_id: &str) -> StoreResult<Option<String>> {
        let found: Option<Option<String>> = sqlx::query_scalar(
            "select coalesce(a.workspace_id,
                (select s.workspace_id from conversations c join sites s on s.id = c.site_id
                 where c.id = a.conversation_id),
                (select s.workspace_id from contacts k join sites s on s.id = k.site_id where k.avatar_id = a.id
                 limit 1))
             from attachments a where a.id = ?",
        )
        .bind(attachment_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.flatten())
    }

    async fn save_page(&self, page: &PageRow) -> StoreResult<()> {
        if let Some(site_id) = &page.site_id {
            let owner: Option<String> = sqlx::query_scalar("select workspace_id from sites where id = ?")
                .bind(site_id)
                .fetch_optional(&self.pool)
                .await?;
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
        Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} where p.page_id = ?"))
            .bind(page_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>> {
        Ok(sqlx::query_as::<_, PageRow>(&format!(
            "{PAGE_COLUMNS} join sites s on s.id = ?
             where p.site_id = s.id or (p.site_id is null and p.workspace_id = s.workspace_id)
             order by p.site_id is null limit 1"
        ))
        .bind(site_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn pages(&self) -> StoreResult<Vec<PageRow>> {
        Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} order by p.created_at, p.page_id"))
            .fetch_all(&self.pool)
            .await?)
    }
}
