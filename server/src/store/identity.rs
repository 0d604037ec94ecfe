//! Signed identity's rows: a site's identity secret and whether it requires identity, and the identified
//! contact's external id, name and email. An identified contact is an ordinary web contact whose `web_token_hash`
//! is [`identity_key`] instead of a token's hash, so creation on first write (insert-or-get) works as for any
//! visitor, and every device presenting the same verified id reaches the same contact.

use sha2::{Digest, Sha256};

use super::{Store, StoreResult, now_ms};
use crate::identity::{IdentitySecret, Verified};

/// A site's identity settings.
#[derive(Clone, Debug, Default)]
pub struct SiteIdentity {
    pub secret: Option<IdentitySecret>,
    /// Only identified customers may write, and anonymous sockets see no history.
    pub required: bool,
}

/// The `web_token_hash` of the contact for an external id on a site. It never equals a visitor token's hash: a
/// token would have to be this exact preimage, and tokens may not contain its NUL bytes.
pub fn identity_key(site_id: &str, external_id: &str) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(b"parley identity\0");
    digest.update(site_id.as_bytes());
    digest.update([0]);
    digest.update(external_id.as_bytes());
    digest.finalize().to_vec()
}

impl Store {
    pub async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity> {
        let row: Option<(Option<String>, bool)> =
            sqlx::query_as("select identity_secret, identity_required from sites where id = ?")
                .bind(site_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or_else(SiteIdentity::default, |(secret, required)| SiteIdentity {
            secret: secret.filter(|s| !s.is_empty()).map(IdentitySecret::from_stored),
            required,
        }))
    }

    /// Replaces (or, with `None`, removes) a site's identity secret; `false` if there is no site with this key.
    pub async fn set_identity_secret(&self, site_key: &str, secret: Option<&IdentitySecret>) -> StoreResult<bool> {
        let done = sqlx::query("update sites set identity_secret = ?, updated_at = ? where key = ?")
            .bind(secret.map(IdentitySecret::expose))
            .bind(now_ms())
            .bind(site_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets whether a site requires identity; `false` if there is no site with this key.
    pub async fn set_identity_required(&self, site_key: &str, required: bool) -> StoreResult<bool> {
        let done = sqlx::query("update sites set identity_required = ?, updated_at = ? where key = ?")
            .bind(required)
            .bind(now_ms())
            .bind(site_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records who an identified contact is: the external id, and the name (as the contact's label) and email the
    /// host page gave, when given. Writes nothing when nothing changed.
    pub async fn record_identity(&self, contact_id: &str, who: &Verified) -> StoreResult<()> {
        sqlx::query(
            "update contacts set external_id = ?1, label = coalesce(?2, label), email = coalesce(?3, email),
                updated_at = ?4
             where id = ?5 and (external_id is not ?1 or label is not coalesce(?2, label)
                or email is not coalesce(?3, email))",
        )
        .bind(&who.id)
        .bind(&who.name)
        .bind(&who.email)
        .bind(now_ms())
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
