//! Agents and their console sessions. Session tokens are stored only as SHA-256 hashes.

use async_trait::async_trait;

use super::{PgStore, on_unique};
use crate::store::models::Agent;
use crate::store::{AgentStore, StoreError, StoreResult, new_id};

#[async_trait]
impl AgentStore for PgStore {
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
             select $1, $2, $3, $4, $5, $6, id from workspaces where id = $7 returning id, email, name, password_hash, workspace_id",
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
        let id: Option<String> = sqlx::query_scalar(
            "update agents set password_hash = $1, updated_at = $2 where lower(email) = lower($3) returning id",
        )
        .bind(password_hash)
        .bind(self.now())
        .bind(email)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = &id {
            sqlx::query("delete from agent_sessions where agent_id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(id.is_some())
    }

    async fn agent_by_email(&self, email: &str) -> StoreResult<Option<Agent>> {
        Ok(sqlx::query_as::<_, Agent>(
            "select id, email, name, password_hash, workspace_id from agents where lower(email) = lower($1)",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn create_session(&self, token_hash: &[u8], agent_id: &str, expires_at: i64) -> StoreResult<()> {
        sqlx::query(
            "insert into agent_sessions (token_hash, agent_id, expires_at, created_at) values ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(agent_id)
        .bind(expires_at)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn agent_for_session(&self, token_hash: &[u8]) -> StoreResult<Option<Agent>> {
        self.reads().agent_for_session(token_hash, self.now()).await
    }

    async fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("delete from agent_sessions where token_hash = $1 or expires_at <= $2")
            .bind(token_hash)
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
