//! Messenger Pages: which Page (and so which workspace and site) a webhook event, a send or a "Continue on
//! Messenger" link belongs to, and the Page tokens.
//!
//! A Page's token is kept in the database only encrypted: ChaCha20-Poly1305 under the 32-byte key of
//! `messenger.token_key` (or `messenger.token_key_file`), a random 96-bit nonce per token, the page id as associated
//! data (a sealed token copied onto another Page's row does not open). The clear token exists only in memory, in
//! the Graph client of one call. At startup ([`Messenger::prepare_pages`]) every stored token must open with the
//! configured key, or the server refuses to start; a single-Page installation's `messenger.page_id` and
//! `messenger.page_token` become the default workspace's Page (stored encrypted when a key is configured, kept in
//! memory only otherwise, as before).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use super::channel::Messenger;
use super::send_api::GraphClient;
use crate::services::ServiceError;
use crate::store::models::PageRow;
use crate::store::{DEFAULT_WORKSPACE, StoreError};

/// Bytes of a token key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The key Page tokens are sealed under. Its bytes never reach `Debug` or a log.
#[derive(Clone)]
pub struct TokenKey(Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why a sealed token did not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the token key does not open this Page's token (another key sealed it, or the row was altered)")]
    WrongKey,
    #[error("the sealed token is malformed")]
    Malformed,
}

impl TokenKey {
    /// A key from its base64 text (standard alphabet, padding optional; surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| anyhow::anyhow!("the token key is not base64"))?;
        anyhow::ensure!(
            bytes.len() == KEY_BYTES,
            "the token key must be {KEY_BYTES} random bytes in base64 (it has {}); make one with `parley page key`",
            bytes.len()
        );
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// A fresh random key, in base64.
    pub fn generate() -> String {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// Seals a Page's token: `(nonce, ciphertext)`.
    pub fn seal(&self, page_id: &str, token: &SecretString) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = ChaCha20Poly1305::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload { msg: token.expose_secret().as_bytes(), aad: page_id.as_bytes() },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal the Page token"))?;
        Ok((nonce.to_vec(), sealed))
    }

    /// Opens a Page's sealed token.
    pub fn open(&self, page_id: &str, nonce: &[u8], sealed: &[u8]) -> Result<SecretString, SealError> {
        if nonce.len() != NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let clear = ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: page_id.as_bytes() })
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(clear).map(SecretString::from).map_err(|_| SealError::Malformed)
    }
}

/// A connected Page, ready to call the Graph API as.
#[derive(Clone)]
pub struct Page {
    pub page_id: String,
    pub workspace_id: String,
    /// The site it serves; `None`: every site of its workspace without a Page of its own.
    pub site_id: Option<String>,
    pub username: Option<String>,
    /// The Graph client with this Page's id and token.
    pub graph: GraphClient,
}

impl Page {
    /// What follows `m.me/` in links to this Page.
    pub fn link_name(&self) -> &str {
        self.username.as_deref().filter(|u| !u.is_empty()).unwrap_or(&self.page_id)
    }
}

/// The configured single Page (`messenger.page_id` + `messenger.page_token`), when it is not stored.
#[derive(Clone)]
pub(super) struct ConfiguredPage {
    pub page_id: String,
    pub token: SecretString,
}

impl Messenger {
    /// At startup: imports the configured single Page into the database (encrypted; it belongs to the default
    /// workspace and serves its sites without a Page of their own) when a token key is configured, and checks that
    /// every stored Page token opens with the key. Refuses to start when Pages are stored and the key is missing
    /// or wrong.
    pub async fn prepare_pages(&self) -> anyhow::Result<()> {
        self.check_stored_pages().await?;
        let rows = self.conversations.messenger_rows();
        if let Some(configured) = &self.configured_page {
            let Some(key) = &self.token_key else {
                tracing::warn!(
                    page = %configured.page_id,
                    "the configured Messenger Page's token is used from the configuration only; set \
                     messenger.token_key (make one with `parley page key`) to store it encrypted in the database"
                );
                return Ok(());
            };
            let (token_nonce, token_ciphertext) = key.seal(&configured.page_id, &configured.token)?;
            let existing = rows.page(&configured.page_id).await?;
            let row = match existing {
                // Connected with the CLI already: the configuration's token wins, its site and workspace stay.
                Some(row) => PageRow { token_nonce, token_ciphertext, ..row },
                None => PageRow {
                    page_id: configured.page_id.clone(),
                    workspace_id: DEFAULT_WORKSPACE.into(),
                    site_id: None,
                    username: Some(self.settings.page_username.clone()).filter(|u| !u.is_empty()),
                    token_nonce,
                    token_ciphertext,
                },
            };
            rows.save_page(&row).await.map_err(|e| match e {
                StoreError::Conflict(_) => anyhow::anyhow!(
                    "messenger.page_id {} cannot become the default workspace's Page: that workspace has another \
                     workspace-wide Page (see `parley page list`)",
                    configured.page_id
                ),
                other => other.into(),
            })?;
            tracing::info!(page = %configured.page_id, "the configured Messenger Page is stored (token encrypted)");
        }
        Ok(())
    }

    async fn check_stored_pages(&self) -> anyhow::Result<()> {
        let pages = self.conversations.messenger_rows().pages().await?;
        if pages.is_empty() {
            return Ok(());
        }
        let Some(key) = &self.token_key else {
            anyhow::bail!(
                "{} Messenger Page(s) are stored with encrypted tokens, but messenger.token_key (or \
                 messenger.token_key_file) is not set: set the key they were sealed with",
                pages.len()
            );
        };
        for row in &pages {
            key.open(&row.page_id, &row.token_nonce, &row.token_ciphertext).map_err(|e| {
                anyhow::anyhow!(
                    "Messenger Page {}: {e}; is messenger.token_key the key it was stored with?",
                    row.page_id
                )
            })?;
        }
        Ok(())
    }

    /// The Page with this id (`None`: not connected here).
    pub async fn page(&self, page_id: &str) -> Result<Option<Page>, ServiceError> {
        match self.conversations.messenger_rows().page(page_id).await? {
            Some(row) => Ok(self.ready(row)),
            None => Ok(self.configured(page_id, DEFAULT_WORKSPACE)),
        }
    }

    /// The Page a site's customers reach (its own, else its workspace's), if any.
    pub async fn page_for_site(&self, site_id: &str) -> Result<Option<Page>, ServiceError> {
        let rows = self.conversations.messenger_rows();
        if let Some(row) = rows.page_for_site(site_id).await? {
            return Ok(self.ready(row));
        }
        match (&self.configured_page, self.site_workspace(site_id).await?) {
            (Some(configured), Some(workspace)) if workspace == DEFAULT_WORKSPACE => {
                Ok(self.configured(&configured.page_id, &workspace))
            }
            _ => Ok(None),
        }
    }

    /// The Page a contact's site reaches them through.
    pub async fn page_for_contact(&self, contact_id: &str) -> Result<Option<Page>, ServiceError> {
        match self.conversations.messenger_rows().contact(contact_id).await? {
            Some(contact) => self.page_for_site(&contact.site_id).await,
            None => Ok(None),
        }
    }

    /// A stored Page with its token opened (`None`, logged, when it does not open: checked at startup, so only a
    /// row changed since by hand or with another key).
    fn ready(&self, row: PageRow) -> Option<Page> {
        let key = self.token_key.as_ref()?;
        match key.open(&row.page_id, &row.token_nonce, &row.token_ciphertext) {
            Ok(token) => Some(Page {
                graph: self.graph.for_page(&row.page_id, token),
                page_id: row.page_id,
                workspace_id: row.workspace_id,
                site_id: row.site_id,
                username: row.username,
            }),
            Err(e) => {
                tracing::error!(page = %row.page_id, error = %e, "a Messenger Page's token does not open");
                None
            }
        }
    }

    /// The configured single Page, when it is the one asked for and not stored.
    fn configured(&self, page_id: &str, workspace_id: &str) -> Option<Page> {
        let configured = self.configured_page.as_ref().filter(|c| c.page_id == page_id)?;
        Some(Page {
            page_id: configured.page_id.clone(),
            workspace_id: workspace_id.to_string(),
            site_id: None,
            username: Some(self.settings.page_username.clone()).filter(|u| !u.is_empty()),
            graph: self.graph.for_page(&configured.page_id, configured.token.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_page() {
        let key = TokenKey::from_base64(&TokenKey::generate()).expect("key");
        let token = SecretString::from("EAAB-page-token".to_string());
        let (nonce, sealed) = key.seal("100", &token).expect("seal");
        assert!(!sealed.windows(5).any(|w| w == b"EAAB-"), "the token is not stored in clear");
        assert_eq!(key.open("100", &nonce, &sealed).expect("opens").expose_secret(), "EAAB-page-token");
        assert!(matches!(key.open("200", &nonce, &sealed), Err(SealError::WrongKey)), "bound to its page id");
        let other = TokenKey::from_base64(&TokenKey::generate()).expect("key");
        assert!(matches!(other.open("100", &nonce, &sealed), Err(SealError::WrongKey)));
        assert!(matches!(key.open("100", &nonce[..4], &sealed), Err(SealError::Malformed)));
        let (nonce2, sealed2) = key.seal("100", &token).expect("seal");
        assert_ne!((nonce, sealed), (nonce2, sealed2), "a random nonce per token");
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(TokenKey::from_base64(&TokenKey::generate()).is_ok());
        assert!(TokenKey::from_base64(&format!("  {}\n", TokenKey::generate())).is_ok(), "a file's newline");
        assert!(TokenKey::from_base64("c2hvcnQ=").is_err(), "too short");
        assert!(TokenKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{:?}", TokenKey::from_base64(&TokenKey::generate()).expect("key")), "TokenKey(..)");
    }
}
