//! The store interface: everything the server persists, as traits with one implementation per database engine,
//! chosen at runtime by the database URL's scheme (`sqlite:` → [`sqlite::SqliteStore`], `postgres:` or
//! `postgresql:` → [`postgres::PgStore`]). Callers hold a [`Store`] (a cheap clone of `Arc<dyn Backend>`) and see
//! only these traits, the rows in [`models`] and [`StoreError`]: no `sqlx` type appears above this line.
//!
//! Rules of the interface, which every backend keeps:
//! - A method returns only after its transaction committed (acked means on disk).
//! - Every durable change to a conversation appends an [`Event`] with the next `seq` in the same transaction, so
//!   replaying the log from any `seq` is exact; sequence numbers are unique and gap-free per conversation.
//! - Idempotency keys (`webhook_applied`) are written in the transaction of the effect they guard.
//! - Times are epoch milliseconds; a backend takes "now" from the [`Clock`] it was opened with, never from the OS.
//! - Each backend has its own migrations folder (`server/migrations/<engine>`).

pub mod bus;
pub mod copy;
pub mod models;
pub mod ops;
pub mod postgres;
mod reads;
pub mod sqlite;
mod sqlx_common;

use std::sync::Arc;

use async_trait::async_trait;
use protocol::{Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, Party};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::identity::{IdentitySecret, Verified};
use crate::messenger::policy::MirrorPolicy;
use models::{Agent, Contact, ContactContext, Conversation, PageRow, Site, SummaryRow, Workspace};
pub use models::{LinkRow, OutboxRow, QuarantinedDelivery, RecentMessage};
pub use ops::{OpsStore, OutboxBacklog, PoolUsage};

/// Errors from the store, sorted by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. an email that already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// Stored data could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed or could not be reached (the backend's message, for logs).
    #[error("database error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One storage engine: every area of the interface, plus its lifecycle.
#[async_trait]
pub trait Backend:
    SiteStore
    + IdentityStore
    + AgentStore
    + ConversationStore
    + MessengerStore
    + AttachmentStore
    + OpsStore
    + WorkspaceStore
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Answers when the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the connections, waiting for them to return.
    async fn close(&self);

    /// The bus between the nodes sharing this database (see [`bus`]); `None` for an engine that serves one node.
    fn bus(&self) -> Option<Arc<dyn bus::Bus>> {
        None
    }

    /// Whether writes commit in the order they were started (the first poll of their futures): then a caller may
    /// start several writes at once and still have them land in that order. `false` unless the engine says so.
    fn writes_in_order(&self) -> bool {
        false
    }
}

/// Gives the bodies of the webhook deliveries a batch carries (see [`MessengerStore::insert_webhook_batch`]).
pub type TakeBodies = Box<dyn FnOnce() -> Vec<Vec<u8>> + Send>;

/// Handle to the database; cheap to clone. Derefs to the [`Backend`], so `store.append_message(…)` calls the
/// engine directly.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    clock: Clock,
}

impl Store {
    /// Opens (creating when missing) the database at `url` and applies pending migrations, on the system clock.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::connect_with_clock(url, max_connections, Clock::system()).await
    }

    /// Like [`Store::connect`], taking the time from `clock` (tests pass an adjustable one).
    pub async fn connect_with_clock(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let backend: Arc<dyn Backend> = if url.starts_with("sqlite:") {
            Arc::new(sqlite::SqliteStore::connect(url, max_connections, clock.clone()).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Arc::new(postgres::PgStore::connect(url, max_connections, clock.clone()).await?)
        } else {
            anyhow::bail!("unsupported database URL scheme (expected sqlite:, postgres: or postgresql:)")
        };
        Ok(Self { backend, clock })
    }

    /// A store over an already opened backend (which must use `clock` too).
    pub fn from_backend(backend: Arc<dyn Backend>, clock: Clock) -> Self {
        Self { backend, clock }
    }

    /// The clock this store (and the application around it) takes the time from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The workspace every existing database's rows belong to after the upgrade, and where sites and agents land when
/// no workspace is named.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Sites that embed the widget.
#[async_trait]
pub trait SiteStore: Send + Sync {
    /// Creates a site in a workspace; `Conflict` if the key is taken (keys are unique across workspaces: the embed
    /// tag names only the key), `NotFound` if there is no such workspace.
    async fn create_site_in(
        &self,
        workspace_id: &str,
        key: &str,
        name: &str,
        origins: &[String],
        greeting: &str,
    ) -> StoreResult<Site>;

    /// Creates a site in the default workspace.
    async fn create_site(&self, key: &str, name: &str, origins: &[String], greeting: &str) -> StoreResult<Site> {
        self.create_site_in(DEFAULT_WORKSPACE, key, name, origins, greeting).await
    }

    async fn site_by_key(&self, key: &str) -> StoreResult<Option<Site>>;

    async fn sites(&self) -> StoreResult<Vec<Site>>;

    /// Replaces a site's allowed origins.
    async fn set_allowed_origins(&self, site_id: &str, origins: &[String]) -> StoreResult<()>;
}

/// Signed identity: a site's identity secret and whether it requires identity, and who an identified contact is.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity>;

    /// Replaces (or, with `None`, removes) a site's identity secret; `false` if there is no site with this key.
    async fn set_identity_secret(&self, site_key: &str, secret: Option<&IdentitySecret>) -> StoreResult<bool>;

    /// Sets whether a site requires identity; `false` if there is no site with this key.
    async fn set_identity_required(&self, site_key: &str, required: bool) -> StoreResult<bool>;

    /// Records who an identified contact is: the external id, and the name (as the contact's label) and email the
    /// host page gave, when given. Writes nothing when nothing changed.
    async fn record_identity(&self, contact_id: &str, who: &Verified) -> StoreResult<()>;
}

/// Agents and their console sessions (session tokens only as SHA-256 hashes).
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Creates an agent of a workspace; `Conflict` if the email is taken (case-insensitively, across workspaces:
    /// sign-in names only the email), `NotFound` if there is no such workspace.
    async fn create_agent_in(
        &self,
        workspace_id: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> StoreResult<Agent>;

    /// Creates an agent of the default workspace.
    async fn create_agent(&self, email: &str, name: &str, password_hash: &str) -> StoreResult<Agent> {
        self.create_agent_in(DEFAULT_WORKSPACE, email, name, password_hash).await
    }

    /// Replaces an agent's password and ends all of their sessions.
    async fn set_agent_password(&self, email: &str, password_hash: &str) -> StoreResult<bool>;

    async fn agent_by_email(&self, email: &str) -> StoreResult<Option<Agent>>;

    async fn create_session(&self, token_hash: &[u8], agent_id: &str, expires_at: i64) -> StoreResult<()>;

    /// The agent owning an unexpired session.
    async fn agent_for_session(&self, token_hash: &[u8]) -> StoreResult<Option<Agent>>;

    async fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()>;
}

/// Contacts, conversations, messages and the per-conversation event log. Every durable change to a conversation
/// appends an [`Event`] with the next `seq` in the same transaction as the change itself.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// The web visitor's contact for a token, created on first use. Insert-or-get: the insert is a no-op when the
    /// token hash (or the id derived from it, [`web_contact_id`]) already exists, so concurrent first writes with one
    /// token (two tabs of a brand-new visitor) end with one contact. `Conflict` if the token belongs to another site.
    async fn contact_for_token(
        &self,
        site_id: &str,
        token_hash: &[u8],
        label: &str,
        ctx: &ContactContext,
    ) -> StoreResult<Contact>;

    /// Whether any contact, of any site, holds this web token.
    async fn web_token_taken(&self, token_hash: &[u8]) -> StoreResult<bool>;

    /// The contact holding a web token on a site.
    async fn contact_by_token(&self, site_id: &str, token_hash: &[u8]) -> StoreResult<Option<Contact>>;

    /// Records where the contact is now (fields the browser did not send keep their old value). Writes nothing when
    /// nothing changed, so a visitor reopening the chat from the same page writes nothing.
    async fn update_contact_context(&self, contact_id: &str, ctx: &ContactContext) -> StoreResult<()>;

    async fn contact(&self, id: &str) -> StoreResult<Option<Contact>>;

    async fn conversation(&self, id: &str) -> StoreResult<Option<Conversation>>;

    async fn conversation_for_contact(&self, contact_id: &str) -> StoreResult<Option<Conversation>>;

    /// The log of a conversation after `after_seq`, in order.
    async fn events_after(&self, conversation_id: &str, after_seq: u64) -> StoreResult<Vec<Event>>;

    /// The message a channel id (Messenger `mid`) names, if it exists.
    async fn message_by_external_id(&self, external_id: &str) -> StoreResult<Option<(String, ChatMessage, u64)>>;

    /// The message a client id names in a conversation, if it exists.
    async fn message_by_client_id(
        &self,
        conversation_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<(ChatMessage, u64)>>;

    /// Appends a message to the contact's conversation (creating the conversation on the first message).
    /// Idempotent on `client_id`: a repeat returns [`AppendOutcome::Duplicate`] with the stored message.
    /// A visitor message in a resolved conversation reopens it.
    async fn append_message(&self, contact_id: &str, site_id: &str, msg: NewMessage) -> StoreResult<AppendOutcome>;

    /// [`Self::append_message`], and for a new message also the conversation's inbox row as its commit left it
    /// (`None` for a duplicate). An engine may read the row in the message's own transaction (SQLite does: its
    /// writer has the connection and the data, so no second query through the read pool after the commit); this
    /// default reads it after the commit. Rows of concurrent appends may reach the caller in any order: the hub
    /// keeps the one with the highest `last_seq`.
    async fn append_message_summarized(
        &self,
        contact_id: &str,
        site_id: &str,
        msg: NewMessage,
    ) -> StoreResult<(AppendOutcome, Option<SummaryRow>)> {
        let outcome = self.append_message(contact_id, site_id, msg).await?;
        let row = match &outcome {
            AppendOutcome::Created { conversation_id, .. } => self.summary(conversation_id).await?,
            AppendOutcome::Duplicate { .. } => None,
        };
        Ok((outcome, row))
    }

    /// Moves a read cursor forward (never back, never past the conversation's last message: read receipts are
    /// events themselves, and a cursor clamped to the whole log would move again with every receipt). Returns the
    /// new event, if the cursor moved.
    async fn mark_read(&self, conversation_id: &str, by: Party, up_to_seq: u64) -> StoreResult<Option<Event>>;

    /// Resolves or reopens. Returns the new event, if the status changed.
    async fn set_status(
        &self,
        conversation_id: &str,
        status: ConversationStatus,
        by: Option<String>,
    ) -> StoreResult<Option<Event>>;

    /// Inbox rows of every workspace, most recent activity first.
    async fn summaries(&self) -> StoreResult<Vec<SummaryRow>>;

    /// Inbox rows of one workspace's sites, most recent activity first.
    async fn workspace_summaries(&self, workspace_id: &str) -> StoreResult<Vec<SummaryRow>>;

    async fn summary(&self, conversation_id: &str) -> StoreResult<Option<SummaryRow>>;

    /// Everything a visitor socket's `hello` reads to resume, in one trip to the read pool: the site's identity
    /// settings, the contact holding `token_hash` on the site, its conversation, and the log after `after_seq` (the
    /// whole log when `after_seq` is ahead of it: see [`VisitorResume::reset`]). One pooled connection, two
    /// statements (the row, then the log), instead of four reads each taking a connection of its own.
    async fn visitor_resume(&self, site_id: &str, token_hash: &[u8], after_seq: u64) -> StoreResult<VisitorResume>;
}

/// What [`ConversationStore::visitor_resume`] read.
#[derive(Clone, Debug, Default)]
pub struct VisitorResume {
    pub identity: SiteIdentity,
    pub contact: Option<Contact>,
    pub conversation: Option<Conversation>,
    /// The log after the resume's `after_seq` (after 0 when `reset`).
    pub events: Vec<Event>,
    /// The client claimed a `seq` beyond the conversation's log (it holds someone else's history): `events` is the
    /// whole log.
    pub reset: bool,
}

/// Messenger state: PSID identities, link tokens, raw webhook deliveries, the send outbox and its delivery states.
#[async_trait]
pub trait MessengerStore: Send + Sync {
    async fn contact_by_psid(&self, psid: &str) -> StoreResult<Option<Contact>>;

    /// A contact who first wrote on Messenger.
    async fn create_messenger_contact(&self, site_id: &str, psid: &str, label: &str) -> StoreResult<Contact>;

    async fn set_contact_profile(
        &self,
        contact_id: &str,
        name: Option<&str>,
        avatar_id: Option<&str>,
    ) -> StoreResult<()>;

    /// A non-message user action on Messenger (referral, postback) reopens the 24 h window.
    async fn record_messenger_action(&self, contact_id: &str, at: i64) -> StoreResult<()>;

    /// Stores a new link for a contact. Expired links (of anyone) are deleted first, and the contact keeps at most
    /// [`MAX_LIVE_LINKS`] unused ones: asking again and again replaces the oldest instead of piling up rows.
    async fn create_link(&self, nonce: &str, contact_id: &str, code: &str, expires_at: i64) -> StoreResult<()>;

    /// A Messenger user presented a link token: offers that link to them (the first presenter only; presenting it
    /// again re-offers it), recording the event's idempotency `key` in the same transaction. Binds nothing: the
    /// person must accept first ([`MessengerStore::accept_link`]).
    async fn offer_link(&self, nonce: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome>;

    /// Like [`MessengerStore::offer_link`] for a fallback short code (the newest live link with that code).
    async fn offer_code(&self, code: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome>;

    /// The link offered to this PSID and still waiting for an answer, if any.
    async fn pending_offer(&self, nonce: &str, psid: &str) -> StoreResult<Option<LinkRow>>;

    /// Whether the link offered to this PSID was answered already (`None`: no such offer, e.g. cleaned up).
    async fn link_answered(&self, nonce: &str, psid: &str) -> StoreResult<Option<bool>>;

    /// The person said "Yes, continue here": uses the offer once and, in the same transaction, binds the PSID to
    /// the link's contact, logs the link in its conversation, reopens the messaging window at `action_at` and
    /// queues the `recap`. `None` if the offer is gone (answered before, expired, or never made to this PSID).
    async fn accept_link(
        &self,
        nonce: &str,
        psid: &str,
        name: Option<String>,
        action_at: i64,
        recap: Option<&str>,
    ) -> StoreResult<Option<Accepted>>;

    /// The person said "No": the offer is used up and binds nothing. `false` if there was no open offer.
    async fn refuse_link(&self, nonce: &str, psid: &str) -> StoreResult<bool>;

    /// Undoes a link ("not me"): pending sends to that PSID are dropped.
    async fn unbind_psid(&self, contact_id: &str) -> StoreResult<Option<(String, Event)>>;

    /// Stores a signed webhook delivery exactly as received.
    async fn insert_webhook_delivery(&self, body: &[u8]) -> StoreResult<i64>;

    /// Stores several signed webhook deliveries exactly as received, in order, in one transaction (one commit):
    /// all of them or none.
    async fn insert_webhook_deliveries(&self, bodies: &[&[u8]]) -> StoreResult<()>;

    /// [`MessengerStore::insert_webhook_deliveries`] of the bodies `take` returns, taken as late as the engine
    /// allows: on SQLite when the write connection starts the batch, so deliveries that arrive while it waits its
    /// turn still join it. `take` is called at most once, and not at all when the write fails before it starts.
    async fn insert_webhook_batch(&self, take: TakeBodies) -> StoreResult<()> {
        let bodies = take();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        self.insert_webhook_deliveries(&refs).await
    }

    /// Deliveries waiting to be applied, oldest first (quarantined ones wait for an operator instead).
    async fn unprocessed_webhook_deliveries(&self, limit: i64) -> StoreResult<Vec<(i64, Vec<u8>)>>;

    /// [`MessengerStore::unprocessed_webhook_deliveries`] with an id above `after_id` only.
    async fn unprocessed_webhook_deliveries_after(&self, after_id: i64, limit: i64)
    -> StoreResult<Vec<(i64, Vec<u8>)>>;

    /// Counts a failed attempt to apply a delivery; at `max_attempts` it is quarantined. Returns whether it was.
    async fn webhook_delivery_failed(&self, id: i64, error: &str, max_attempts: u32) -> StoreResult<bool>;

    /// Quarantined deliveries, oldest first.
    async fn quarantined_deliveries(&self) -> StoreResult<Vec<QuarantinedDelivery>>;

    async fn quarantined_delivery_count(&self) -> StoreResult<i64>;

    /// Releases quarantined deliveries (one, or all with `None`) for the intake to try again from scratch.
    /// Returns how many were released.
    async fn replay_quarantined(&self, id: Option<i64>) -> StoreResult<u64>;

    async fn mark_webhook_processed(&self, id: i64, error: Option<&str>) -> StoreResult<()>;

    /// Leases the sends that may go now: at most one per customer (the oldest pending send of each PSID, so
    /// Messenger shows them in order), none of the PSIDs in `busy`, up to `limit`, longest waiting first. The
    /// lease (attempt id `<lease>:<row id>`, valid until `now + lease_ms`) is committed before this returns, so a
    /// crash during the Graph call leaves the row leased but unsettled; such a row becomes eligible again only
    /// `reconcile_ms` after its lease ran out, giving our echo time to settle it first.
    async fn lease_outbox_heads(
        &self,
        now: i64,
        lease_ms: i64,
        reconcile_ms: i64,
        limit: i64,
        busy: &[String],
    ) -> StoreResult<Vec<OutboxRow>>;

    /// The earliest time a send may be leased (see [`MessengerStore::lease_outbox_heads`]), to sleep until then: only the
    /// head of each customer's queue counts, so a later send due now behind a head in backoff does not wake the
    /// worker.
    async fn next_outbox_eligible(&self, reconcile_ms: i64, busy: &[String]) -> StoreResult<Option<i64>>;

    /// Marks a send done (from the Send API's answer or from our own echo) and logs `Sent`. Idempotent.
    async fn outbox_sent(&self, id: i64, external_id: &str) -> StoreResult<Option<(String, Event)>>;

    /// Marks a send failed for good and logs why.
    async fn outbox_failed(&self, id: i64, detail: &str, state: DeliveryState) -> StoreResult<Option<(String, Event)>>;

    /// Schedules another try and ends the attempt's lease (only while `lease_id` still holds it: a newer attempt
    /// is left alone).
    async fn outbox_retry(&self, id: i64, lease_id: &str, next_attempt_at: i64, error: &str) -> StoreResult<()>;

    /// Mids of our sends to a PSID accepted at or before `watermark` and not yet marked delivered.
    async fn sent_mids_until(&self, psid: &str, watermark: i64) -> StoreResult<Vec<String>>;

    /// The pending send an echo's `metadata` names: our message id, or `outbox-<row id>` for a send that carries
    /// no conversation message (the recap); see [`outbox_metadata`].
    async fn outbox_for_message(&self, metadata: &str) -> StoreResult<Option<i64>>;

    /// Messenger says these messages reached the customer's device. Each mid's applied-key is recorded in the
    /// same transaction as its `Delivered` event, so a failure in between loses nothing.
    async fn messenger_delivered(&self, mids: &[String]) -> StoreResult<Vec<(String, Event)>>;

    /// Messenger says the customer read everything the Page sent up to `watermark` (epoch ms): moves the
    /// customer's read cursor to the last message sent to Messenger by then.
    async fn messenger_read(&self, contact_id: &str, watermark: i64) -> StoreResult<Option<(String, Event)>>;

    /// The last `limit` messages of a conversation, oldest first (for the recap sent to Messenger).
    async fn recent_messages(&self, conversation_id: &str, limit: i64) -> StoreResult<Vec<RecentMessage>>;

    /// Sites ordered by age (the oldest is the default home of Messenger-first conversations).
    async fn oldest_site_id(&self) -> StoreResult<Option<String>>;

    /// [`MessengerStore::mark_webhook_processed`] for several deliveries (each with why an event of it was not
    /// applied, if one was not) in one transaction (one commit): all of them or none.
    async fn mark_webhooks_processed(&self, done: &[(i64, Option<String>)]) -> StoreResult<()>;

    /// What the Messenger intake reads before it applies a wave of events, in one trip to the store (on SQLite one
    /// job on the write connection, inside the writer's transaction, instead of a read of the pool per event): the
    /// contact of each of `psids` that has one, which of `mids` are stored messages already, and which of `codes`
    /// (short-code candidates) name a live, unused link at all.
    async fn intake_lookup(&self, psids: &[String], mids: &[String], codes: &[String]) -> StoreResult<IntakeLookup>;
}

/// What [`MessengerStore::intake_lookup`] found.
#[derive(Clone, Debug, Default)]
pub struct IntakeLookup {
    /// Contacts by PSID (only the PSIDs that have one).
    pub contacts: std::collections::HashMap<String, Contact>,
    /// The mids already stored as messages.
    pub stored_mids: std::collections::HashSet<String>,
    /// The codes a live, unused link has (to anyone): only those can be offered.
    pub live_codes: std::collections::HashSet<String>,
}

/// Uploaded and downloaded files.
#[async_trait]
pub trait AttachmentStore: Send + Sync {
    async fn insert_attachment(
        &self,
        conversation_id: Option<&str>,
        content_type: &str,
        name: Option<&str>,
        bytes: &[u8],
    ) -> StoreResult<String>;

    /// A downloaded file: (content type, bytes). `None` while it is being downloaded or when it is unavailable.
    async fn attachment(&self, id: &str) -> StoreResult<Option<(String, Vec<u8>)>>;

    /// `ready`, `pending`, `downloading` or `failed` (with why), or `None` for an unknown id.
    async fn attachment_status(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>>;

    /// Records a file to download from `source_url` for a workspace (the one whose Page received it); the download
    /// queue fills it in. Returns its id.
    async fn queue_attachment(
        &self,
        workspace_id: Option<&str>,
        name: Option<&str>,
        source_url: &str,
    ) -> StoreResult<String>;

    /// Takes up to `limit` waiting downloads, oldest first: (id, URL).
    async fn claim_attachments(&self, limit: i64) -> StoreResult<Vec<(String, String)>>;

    /// Puts downloads interrupted by a stop back in the queue.
    async fn requeue_attachments(&self) -> StoreResult<u64>;

    async fn attachment_downloaded(&self, id: &str, content_type: &str, bytes: &[u8]) -> StoreResult<()>;

    async fn attachment_unavailable(&self, id: &str, error: &str) -> StoreResult<()>;
}

/// Workspaces (tenants) and what they own: which workspace a conversation or a file belongs to, and the Messenger
/// Pages connected to their sites (tokens only encrypted; the store never sees a clear token).
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace; `Conflict` if the key is taken.
    async fn create_workspace(&self, key: &str, name: &str) -> StoreResult<Workspace>;

    async fn workspace_by_key(&self, key: &str) -> StoreResult<Option<Workspace>>;

    /// Every workspace, oldest first.
    async fn workspaces(&self) -> StoreResult<Vec<Workspace>>;

    /// The workspace a site belongs to.
    async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>>;

    /// The workspace a conversation belongs to (through its site).
    async fn conversation_workspace(&self, conversation_id: &str) -> StoreResult<Option<String>>;

    /// The workspace a file belongs to: the one whose Page received it, else its conversation's, else that of the
    /// contact whose profile picture it is. `None` for an unknown id or a file of no workspace.
    async fn attachment_workspace(&self, attachment_id: &str) -> StoreResult<Option<String>>;

    /// Connects a Page, or replaces a connected Page's row (same page id): its workspace, site, username and
    /// encrypted token. `Conflict` if the site (or, for a workspace-wide Page, the workspace) has another Page.
    async fn save_page(&self, page: &PageRow) -> StoreResult<()>;

    /// Disconnects a Page; `false` if it was not connected.
    async fn delete_page(&self, page_id: &str) -> StoreResult<bool>;

    async fn page(&self, page_id: &str) -> StoreResult<Option<PageRow>>;

    /// The Page a site's customers reach: the site's own, else its workspace's workspace-wide Page.
    async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>>;

    /// Every connected Page.
    async fn pages(&self) -> StoreResult<Vec<PageRow>>;
}

/// A message to append.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub client_id: String,
    pub body: String,
    pub author: Author,
    /// The agent who wrote it, for agent messages.
    pub agent_id: Option<String>,
    pub channel: Channel,
    /// Id on the channel it came from (Messenger `mid`); unique, so a redelivered message is stored once.
    pub external_id: Option<String>,
    pub attachments: Vec<Attachment>,
    /// For messages from the customer on Messenger: when they wrote (epoch ms), which opens the reply window.
    pub messenger_action_at: Option<i64>,
    /// Mirror this message to the contact's Messenger thread (agent replies, recaps), under these rules (the
    /// store asks the policy with the thread it loads in the message's transaction).
    pub mirror: Option<MirrorPolicy>,
}

/// What appending a message did.
#[derive(Clone, Debug)]
pub enum AppendOutcome {
    /// The message was committed; `events` are the new log entries in order (the message, maybe a reopen).
    Created { conversation_id: String, message: ChatMessage, seq: u64, events: Vec<Event> },
    /// A message with this client id already exists in the conversation: nothing was written.
    Duplicate { conversation_id: String, message: ChatMessage, seq: u64 },
}

/// The id a web visitor's contact has (or will have once the visitor first writes): derived from the site and the
/// token's hash, so every socket holding the token knows it before the contact exists. One-way: the id reveals
/// nothing usable about the token.
pub fn web_contact_id(site_id: &str, token_hash: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(b"parley web contact\0");
    digest.update(site_id.as_bytes());
    digest.update([0]);
    digest.update(token_hash);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

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

/// The Send API `metadata` of a queued send: our message id, or `outbox-<row id>` for a send that carries no
/// conversation message. Our echo brings it back, and [`MessengerStore::outbox_for_message`] finds the row by it.
pub fn outbox_metadata(row: &OutboxRow) -> String {
    row.message_id.clone().unwrap_or_else(|| format!("outbox-{}", row.id))
}

/// Live (unused, unexpired) links a contact may hold; asking for more replaces the oldest.
pub const MAX_LIVE_LINKS: i64 = 3;

/// Webhook deliveries one `insert` statement of [`MessengerStore::insert_webhook_deliveries`] carries on PostgreSQL
/// (two parameters each, well under its parameter limit; SQLite's writer thread runs one cached statement per row).
pub const WEBHOOK_ROWS_PER_STATEMENT: usize = 500;

/// What presenting a link from Messenger did.
#[derive(Debug)]
pub enum OfferOutcome {
    /// The link is now offered to this person (first time or again).
    Offered(LinkRow),
    /// This event was applied before: do nothing again.
    Duplicate,
    /// No such live link, or it was offered to someone else first.
    Unavailable,
}

/// An accepted link.
#[derive(Debug)]
pub struct Accepted {
    pub contact_id: String,
    /// The conversation and its `Channel { linked: true }` event.
    pub event: Option<(String, Event)>,
}
