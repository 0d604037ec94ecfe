//! Attachments: files uploaded here and files downloaded from Messenger, kept in the database.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{AttachmentStore, StoreResult};

#[async_trait]
impl AttachmentStore for SqliteStore {
    async fn insert_attachment(
        &self,
        conversation_id: Option<&str>,
        content_type: &str,
        name: Option<&str>,
        bytes: &[u8],
    ) -> StoreResult<String> {
        let id = crate::auth::new_token();
        sqlx::query(
            "insert into attachments (id, conversation_id, content_type, name, bytes, created_at) values (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(conversation_id)
        .bind(content_type)
        .bind(name)
        .bind(bytes)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    async fn attachment(&self, id: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
        Ok(sqlx::query_as("select content_type, bytes from attachments where id = ? and status = 'ready'")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn attachment_status(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>> {
        Ok(sqlx::query_as("select status, error from attachments where id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn queue_attachment(
        &self,
        workspace_id: Option<&str>,
        name: Option<&str>,
        source_url: &str,
    ) -> StoreResult<String> {
        let id = crate::auth::new_token();
        sqlx::query(
            "insert into attachments (id, content_type, name, bytes, created_at, status, source_url, workspace_id)
             values (?, 'application/octet-stream', ?, x'', ?, 'pending', ?, ?)",
        )
        .bind(&id)
        .bind(name)
        .bind(self.now())
        .bind(source_url)
        .bind(workspace_id)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    async fn claim_attachments(&self, limit: i64) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "update attachments set status = 'downloading'
             where id in (select id from attachments where status = 'pending' order by created_at limit ?)
             returning id, coalesce(source_url, '')",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn requeue_attachments(&self) -> StoreResult<u64> {
        Ok(sqlx::query("update attachments set status = 'pending' where status = 'downloading'")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn attachment_downloaded(&self, id: &str, content_type: &str, bytes: &[u8]) -> StoreResult<()> {
        sqlx::query(
            "update attachments set status = 'ready', content_type = ?, bytes = ?, source_url = null, error = null
             where id = ?",
        )
        .bind(content_type)
        .bind(bytes)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn attachment_unavailable(&self, id: &str, error: &str) -> StoreResult<()> {
        sqlx::query("update attachments set status = 'failed', error = ?, source_url = null where id = ?")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
