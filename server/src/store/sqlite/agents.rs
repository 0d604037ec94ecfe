//! Agents and their console sessions. Session tokens are stored only as SHA-256 hashes.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec, on_unique, row};
use crate::store::models::Agent;
use crate::store::{AgentStore, StoreError, StoreResult, new_id};

#[async_trait]
impl AgentStore for SqliteStore {
    async fn create_agent_in(
        &self,
        workspace_id: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> StoreResult<Agent> {
        let now = self.now();
        let (workspace_id, email, name, password_hash) =
            (workspace_id.to_owned(), email.to_owned(), name.to_owned(), password_hash.to_owned());
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "insert into agents (id, email, name, password_hash, created_at, updated_at, workspace_id)
                     select ?1, ?2, ?3, ?4, ?5, ?5, id from workspaces where id = ?6
                     returning id, email, name, password_hash, workspace_id",
                )?
                .query_row(params![new_id(), email, name, password_hash, now, workspace_id], |r| {
                    Ok(Agent {
                        id: r.get(0)?,
                        email: r.get(1)?,
                        name: r.get(2)?,
                        password_hash: r.get(3)?,
                        workspace_id: r.get(4)?,
                    })
                })
                .map_err(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
                    e => on_unique(e, "an agent with this email"),
                })
            })
            .await
    }

    async fn set_agent_password(&self, email: &str, password_hash: &str) -> StoreResult<bool> {
        let (now, email, password_hash) = (self.now(), email.to_owned(), password_hash.to_owned());
        self.writer
            .run(move |conn| {
                let id: Option<String> = row(
                    conn,
                    "update agents set password_hash = ?, updated_at = ? where email = ? returning id",
                    params![password_hash, now, email],
                    |r| r.get(0),
                )?;
                if let Some(id) = &id {
                    exec(conn, "delete from agent_sessions where agent_id = ?", params![id])?;
                }
                Ok(id.is_some())
            })
            .await
    }

    async fn agent_by_email(&self, email: &str) -> StoreResult<Option<Agent>> {
        Ok(sqlx::query_as::<_, Agent>(
            "select id, email, name, password_hash, workspace_id from agents where email = ?",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn create_session(&self, token_hash: &[u8], agent_id: &str, expires_at: i64) -> StoreResult<()> {
        let (now, token_hash, agent_id) = (self.now(), token_hash.to_vec(), agent_id.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "insert into agent_sessions (token_hash, agent_id, expires_at, created_at) values (?, ?, ?, ?)",
                    params![token_hash, agent_id, expires_at, now],
                )
            })
            .await?;
        Ok(())
    }

    async fn agent_for_session(&self, token_hash: &[u8]) -> StoreResult<Option<Agent>> {
        self.reads().agent_for_session(token_hash, self.now()).await
    }

    async fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        let (now, token_hash) = (self.now(), token_hash.to_vec());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "delete from agent_sessions where token_hash = ? or expires_at <= ?",
                    params![token_hash, now],
                )
            })
            .await?;
        Ok(())
    }
}
