//! Signed identity's rows: a site's identity secret and whether it requires identity, and the identified
//! contact's external id, name and email. An identified contact is an ordinary web contact whose `web_token_hash`
//! is [`identity_key`] instead of a token's hash, so creation on first write (insert-or-get) works as for any
//! visitor, and every device presenting the same verified id reaches the same contact.

use async_trait::async_trait;

use rusqlite::params;

use super::{SqliteStore, exec};
use crate::identity::{IdentitySecret, Verified};
use crate::store::{IdentityStore, SiteIdentity, StoreResult};

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity> {
        self.reads().site_identity(site_id).await
    }

    async fn set_identity_secret(&self, site_key: &str, secret: Option<&IdentitySecret>) -> StoreResult<bool> {
        let (now, site_key) = (self.now(), site_key.to_owned());
        let secret = secret.map(|s| s.expose().to_owned());
        let done = self
            .writer
            .run(move |conn| {
                exec(
                    conn,
                    "update sites set identity_secret = ?, updated_at = ? where key = ?",
                    params![secret, now, site_key],
                )
            })
            .await?;
        Ok(done > 0)
    }

    async fn set_identity_required(&self, site_key: &str, required: bool) -> StoreResult<bool> {
        let (now, site_key) = (self.now(), site_key.to_owned());
        let done = self
            .writer
            .run(move |conn| {
                exec(
                    conn,
                    "update sites set identity_required = ?, updated_at = ? where key = ?",
                    params![required, now, site_key],
                )
            })
            .await?;
        Ok(done > 0)
    }

    async fn record_identity(&self, contact_id: &str, who: &Verified) -> StoreResult<()> {
        let (now, contact_id) = (self.now(), contact_id.to_owned());
        let (id, name, email) = (who.id.clone(), who.name.clone(), who.email.clone());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update contacts set external_id = ?1, label = coalesce(?2, label), email = coalesce(?3, email),
                        updated_at = ?4
                     where id = ?5 and (external_id is not ?1 or label is not coalesce(?2, label)
                        or email is not coalesce(?3, email))",
                    params![id, name, email, now, contact_id],
                )
            })
            .await?;
        Ok(())
    }
}
