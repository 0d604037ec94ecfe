//! The Messenger channel's shared handle: settings, the Graph client, the spool, the link-token key, the Page
//! token key, and the operations other parts of the server call (offer a link, unlink, typing, mark seen), each
//! through the Page of the customer's site (see `pages`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::fetch::{AllowList, Fetcher};
use super::landing::Landing;
use super::link;
use super::pages::{ConfiguredPage, Page, TokenKey};
use super::send_api::GraphClient;
use super::spool::Spool;
use crate::config::MessengerSettings;
use crate::services::{Conversations, SenderActions, ServiceError};

/// A link to continue on Messenger.
pub struct LinkOffer {
    pub url: String,
    pub code: String,
    pub expires_at: i64,
}

pub struct Messenger {
    pub settings: MessengerSettings,
    /// The Graph client without a Page (downloads); `Page::graph` speaks for one Page.
    pub graph: GraphClient,
    /// The key Page tokens are stored under (`messenger.token_key`).
    pub(super) token_key: Option<TokenKey>,
    /// `messenger.page_id` + `messenger.page_token`, when configured.
    pub(super) configured_page: Option<ConfiguredPage>,
    pub spool: Spool,
    /// Stores acked webhook deliveries in the database, batched.
    pub landing: Landing,
    pub conversations: Conversations,
    /// Wakes the intake worker when a delivery was stored or spooled.
    pub intake_wake: Notify,
    /// Downloads attachments from allow-listed hosts only.
    pub fetcher: Fetcher,
    /// Wakes the download queue when an attachment was queued.
    pub media_wake: Notify,
    link_key: [u8; 32],
    /// Last `typing_on` per PSID, to send it at most every few seconds.
    typing_sent: Mutex<HashMap<String, Instant>>,
    /// Facts that never change once they exist, read once: each site's workspace, each conversation's site.
    site_workspaces: Mutex<HashMap<String, String>>,
    conversation_sites: Mutex<HashMap<String, String>>,
    /// Store reads the intake made for one event at a time (its contact, whether its mid is stored), since the
    /// intake last reported them (`event_reads` in its health entry).
    pub(super) event_reads: AtomicU64,
}

/// The most entries a cache of [`Messenger`] holds before it starts again empty.
const CACHE_ENTRIES: usize = 10_000;

/// `key`'s value in `cache`, else `read`'s, kept in `cache` when there is one.
async fn cached<F>(cache: &Mutex<HashMap<String, String>>, key: &str, read: F) -> Result<Option<String>, ServiceError>
where
    F: std::future::Future<Output = Result<Option<String>, ServiceError>>,
{
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
        return Ok(Some(found.clone()));
    }
    let found = read.await?;
    if let Some(value) = &found {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key.to_string(), value.clone());
    }
    Ok(found)
}

impl Messenger {
    pub fn new(settings: MessengerSettings, conversations: Conversations, spool: Spool) -> anyhow::Result<Arc<Self>> {
        let graph = GraphClient::new(&settings)?;
        let allow = AllowList::parse(&settings.attachment_hosts).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(settings.attachment_max_bytes > 0, "messenger.attachment_max_bytes must be at least 1");
        anyhow::ensure!(settings.attachment_timeout_secs > 0, "messenger.attachment_timeout_secs must be at least 1");
        anyhow::ensure!(settings.max_delivery_attempts > 0, "messenger.max_delivery_attempts must be at least 1");
        let fetcher =
            Fetcher::new(allow, settings.attachment_max_bytes, Duration::from_secs(settings.attachment_timeout_secs))?;
        let link_key: [u8; 32] = Sha256::digest(
            [b"parley messenger link v1:".as_slice(), settings.app_secret.expose_secret().as_bytes()].concat(),
        )
        .into();
        let token_key = settings.token_key()?;
        let configured_page = (!settings.page_id.trim().is_empty()).then(|| ConfiguredPage {
            page_id: settings.page_id.trim().to_string(),
            token: settings.page_token.clone(),
        });
        let messenger = Arc::new(Self {
            settings,
            graph,
            token_key,
            configured_page,
            spool,
            landing: Landing::start(conversations.clone())?,
            conversations,
            intake_wake: Notify::new(),
            fetcher,
            media_wake: Notify::new(),
            link_key,
            typing_sent: Mutex::new(HashMap::new()),
            site_workspaces: Mutex::new(HashMap::new()),
            conversation_sites: Mutex::new(HashMap::new()),
            event_reads: AtomicU64::new(0),
        });
        let actions: std::sync::Weak<dyn SenderActions> = Arc::downgrade(&messenger) as std::sync::Weak<Messenger>;
        messenger.conversations.attach_sender_actions(actions);
        Ok(messenger)
    }

    pub fn link_key(&self) -> &[u8] {
        &self.link_key
    }

    /// The workspace of a site (`None`: no such site), read once per site: a site never changes workspace.
    pub async fn site_workspace(&self, site_id: &str) -> Result<Option<String>, ServiceError> {
        let read = async { Ok(self.conversations.messenger_rows().site_workspace(site_id).await?) };
        cached(&self.site_workspaces, site_id, read).await
    }

    /// The site of a conversation (`None`: no such conversation), read once per conversation: it never changes.
    pub async fn conversation_site(&self, conversation_id: &str) -> Result<Option<String>, ServiceError> {
        let rows = self.conversations.messenger_rows();
        let read = async { Ok(rows.conversation(conversation_id).await?.map(|c| c.site_id)) };
        cached(&self.conversation_sites, conversation_id, read).await
    }

    /// Mints a signed single-use link (and a fallback code) for a contact.
    pub async fn offer_link(&self, contact_id: &str) -> Result<LinkOffer, ServiceError> {
        let ttl = self.settings.link_ttl_secs.max(60);
        let expires_secs =
            u32::try_from(self.conversations.clock().now_ms() / 1000).unwrap_or(u32::MAX).saturating_add(ttl);
        let (token, minted) = link::mint(&self.link_key, expires_secs);
        let code = link::short_code();
        let expires_at = i64::from(minted.expires_at) * 1000;
        let page = self
            .page_for_contact(contact_id)
            .await?
            .ok_or(ServiceError::Invalid("this site has no Messenger Page connected"))?;
        self.conversations.messenger_rows().create_link(&minted.nonce, contact_id, &code, expires_at).await?;
        Ok(LinkOffer {
            url: format!("{}/{}?ref={token}", self.settings.m_me_url.trim_end_matches('/'), page.link_name()),
            code,
            expires_at,
        })
    }

    /// "Not me": detaches the Messenger user from this contact.
    pub async fn unlink(&self, contact_id: &str) -> Result<(), ServiceError> {
        self.conversations.unlink(contact_id).await
    }
}

/// Called by the conversation service (which cannot hold the channel: the channel holds it).
impl SenderActions for Messenger {
    /// Tells Messenger the agent is typing (at most every 5 s per person; failures only logged).
    fn typing_on(self: Arc<Self>, psid: String) {
        {
            let mut sent = self.typing_sent.lock().unwrap_or_else(|p| p.into_inner());
            if sent.get(&psid).is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return;
            }
            sent.insert(psid.clone(), Instant::now());
        }
        tokio::spawn(async move {
            let Some(page) = self.page_for_psid(&psid).await else { return };
            if let Err(e) = page.graph.sender_action(&psid, "typing_on").await {
                tracing::debug!(error = %e, "typing_on not sent");
            }
        });
    }

    /// Tells Messenger the agent has seen the conversation.
    fn mark_seen(self: Arc<Self>, psid: String) {
        tokio::spawn(async move {
            let Some(page) = self.page_for_psid(&psid).await else { return };
            if let Err(e) = page.graph.sender_action(&psid, "mark_seen").await {
                tracing::debug!(error = %e, "mark_seen not sent");
            }
        });
    }
}

impl Messenger {
    /// The Page a Messenger customer is reached through (that of their contact's site).
    async fn page_for_psid(&self, psid: &str) -> Option<Page> {
        let contact = match self.conversations.messenger_rows().contact_by_psid(psid).await {
            Ok(contact) => contact?,
            Err(e) => {
                tracing::debug!(error = ?e, "no contact for a sender action");
                return None;
            }
        };
        self.page_for_site(&contact.site_id).await.ok().flatten()
    }
}
