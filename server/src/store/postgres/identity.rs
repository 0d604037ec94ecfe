//! Signed identity's rows: a site's identity secret and whether it requires identity, and the identified
//! contact's external id, name and email. An identified contact is an ordinary web contact whose `web_token_hash`
//! is [`identity_key`] instead of a token's hash, so creation on first write (insert-or-get) works as for any
//! visitor, and every device presenting the same verified id reaches the same contact.

use async_trait::async_trait;

use super::PgStore;
use crate::identity::{IdentitySecret, Verified};
use crate::store::{IdentityStore, SiteIdentity, StoreResult};

#[async_trait]
impl IdentityStore for PgStore {
    async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity> {
        self.reads().site_identity(site_id).await
    }

    async fn set_identity_secret(&self, site_key: &str, secret: Option<&IdentitySecret>) -> StoreResult<bool> {
        let done = sqlx::query("update sites set identity_secret = $1, updated_at = $2 where key = $3")
            .bind(secret.map(IdentitySecret::expose))
            .bind(self.now())
            .bind(site_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_identity_required(&self, site_key: &str, required: bool) -> StoreResult<bool> {
        let done = sqlx::query("update sites set identity_required = $1, updated_at = $2 where key = $3")
            .bind(required)
            .bind(self.now())
            .bind(site_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_identity(&self, contact_id: &str, who: &Verified) -> StoreResult<()> {
        sqlx::query(
            "update contacts set external_id = $1, label = coalesce($2, label), email = coalesce($3, email),
                updated_at = $4
             where id = $5 and (external_id is distinct from $1 or label is distinct from coalesce($2, label)
                or email is distinct from coalesce($3, email))",
        )
        .bind(&who.id)
        .bind(&who.name)
        .bind(&who.email)
        .bind(self.now())
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
