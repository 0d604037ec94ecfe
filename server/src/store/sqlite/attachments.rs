//! Attachments: files uploaded here and files downloaded from Messenger, kept in the database.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec, rows};
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
        let (now, conversation_id, content_type) =
            (self.now(), conversation_id.map(str::to_owned), content_type.to_owned());
        let (name, bytes, row_id) = (name.map(str::to_owned), bytes.to_vec(), id.clone());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "insert into attachments (id, conversation_id, content_type, name, bytes, created_at)
                     values (?, ?, ?, ?, ?, ?)",
                    params![row_id, conversation_id, content_type, name, bytes, now],
                )
            })
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
        let (now, workspace_id, name) = (self.now(), workspace_id.map(str::to_owned), name.map(str::to_owned));
        let (source_url, row_id) = (source_url.to_owned(), id.clone());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "insert into attachments (id, content_type, name, bytes, created_at, status, source_url, workspace_id)
                     values (?, 'application/octet-stream', ?, x'', ?, 'pending', ?, ?)",
                    params![row_id, name, now, source_url, workspace_id],
                )
            })
            .await?;
        Ok(id)
    }

    async fn claim_attachments(&self, limit: i64) -> StoreResult<Vec<(String, String)>> {
        self.writer
            .run(move |conn| {
                rows(
                    conn,
                    "update attachments set status = 'downloading'
                     where id in (select id from attachments where status = 'pending' order by created_at limit ?)
                     returning id, coalesce(source_url, '')",
                    params![limit],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
    }

    async fn requeue_attachments(&self) -> StoreResult<u64> {
        let requeued = self
            .writer
            .run(|conn| exec(conn, "update attachments set status = 'pending' where status = 'downloading'", []))
            .await?;
        Ok(requeued as u64)
    }

    async fn attachment_downloaded(&self, id: &str, content_type: &str, bytes: &[u8]) -> StoreResult<()> {
        let (id, content_type, bytes) = (id.to_owned(), content_type.to_owned(), bytes.to_vec());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update attachments set status = 'ready', content_type = ?, bytes = ?, source_url = null,
                        error = null
                     where id = ?",
                    params![content_type, bytes, id],
                )
            })
            .await?;
        Ok(())
    }

    async fn attachment_unavailable(&self, id: &str, error: &str) -> StoreResult<()> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update attachments set status = 'failed', error = ?, source_url = null where id = ?",
                    params![error, id],
                )
            })
            .await?;
        Ok(())
    }
}
