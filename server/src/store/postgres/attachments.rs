//! Attachments: files uploaded here and files downloaded from Messenger, kept in the database.

use async_trait::async_trait;

use super::PgStore;
use crate::store::{AttachmentStore, StoreResult};

#[async_trait]
impl AttachmentStore for PgStore {
    async fn insert_attachment(
        &self,
        conversation_id: Option<&str>,
        content_type: &str,
        name: Option<&str>,
        bytes: &[u8],
    ) -> StoreResult<String> {
        let id = crate::auth::new_token();
        sqlx::query(
            "insert into attachments (id, conversation_id, content_type, name, bytes, created_at) values ($1, $2, $3, $4, $5, $6)",
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
        self.reads().attachment(id).await
    }

    async fn attachment_status(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>> {
        self.reads().attachment_status(id).await
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
             values ($1, 'application/octet-stream', $2, ''::bytea, $3, 'pending', $4, $5)",
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
             where id in (select id from attachments where status = 'pending' order by created_at limit $1
                          for update skip locked)
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
            "update attachments set status = 'ready', content_type = $1, bytes = $2, source_url = null, error = null
             where id = $3",
        )
        .bind(content_type)
        .bind(bytes)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn attachment_unavailable(&self, id: &str, error: &str) -> StoreResult<()> {
        sqlx::query("update attachments set status = 'failed', error = $1, source_url = null where id = $2")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
