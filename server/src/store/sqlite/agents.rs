//! Agents and their console sessions. Session tokens are stored only as SHA-256 hashes.

use async_trait::async_trait;

use super::{SqliteStore, on_unique};
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
        sqlx::query_as::<_, Agent>(
            "insert into agents (id, email, name, password_hash, created_at, updated_at, workspace_id)
             select ?, ?, ?, ?, ?, ?, id from workspaces where id = ? returning id, email, name, password_hash, workspace_id",
        )
        .bind(new_id())
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .bind(now)
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| on_unique(e, "an agent with this email"))?
        .ok_or(StoreError::NotFound)
    }

    async fn set_agent_password(&self, email: &str, password_hash: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let id: Option<String> =
            sqlx::query_scalar("update agents set password_hash = ?, updated_at = ? where email = ? returning id")
                .bind(password_hash)
                .bind(self.now())
                .bind(email)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = &id {
            sqlx::query("delete from agent_sessions where agent_id = ?").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(id.is_some())
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
        sqlx::query("insert into agent_sessions (token_hash, agent_id, expires_at, created_at) values (?, ?, ?, ?)")
            .bind(token_hash)
            .bind(agent_id)
            .bind(expires_at)
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn agent_for_session(&self, token_hash: &[u8]) -> StoreResult<Option<Agent>> {
        Ok(sqlx::query_as::<_, Agent>(
            "select a.id, a.email, a.name, a.password_hash, a.workspace_id from agent_sessions s join agents a on a.id = s.agent_id
             where s.token_hash = ? and s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("delete from agent_sessions where token_hash = ? or expires_at <= ?")
            .bind(token_hash)
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
