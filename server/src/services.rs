//! The conversation service: the one writer of conversations. Every change that commits and then notifies —
//! messages, read cursors, status, Messenger link and unlink, delivery states, outbox settlement, the recap, typing
//! and Messenger sender actions — is a method here, whoever makes it (visitor socket, agent socket, console,
//! Messenger intake and outbox): validate → persist (commit) → fan out. Its store and hub are private; Messenger
//! code reaches the rows it keeps (webhook deliveries, the outbox queue, links, downloads) through
//! [`Conversations::messenger_rows`], which offers only writes that notify no one.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use protocol::console::{ConversationSummary, MessengerInfo, VisitorDetails};
use protocol::{Attachment, Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, Party};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::hub::{Hub, HubMsg};
use crate::messenger::policy::{self, MirrorPolicy};
use crate::meters::{AuthorKind, Meters};
use crate::nodes::Nodes;
use crate::store::bus::Nudge;
use crate::store::models::{Contact, LinkRow, OutboxRow, RecentMessage};
use crate::store::models::{Conversation, PageRow, Site, SummaryRow};
use crate::store::{AppendOutcome, NewMessage, OfferOutcome, Store, StoreError, StoreResult};
use crate::useragent;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("conversation not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A committed (or already committed) message.
#[derive(Clone, Debug)]
pub struct Posted {
    pub conversation_id: String,
    pub message: ChatMessage,
    pub seq: u64,
    /// The events the post committed, in order (none for a repeat): a socket that posts several messages at once
    /// sends them itself, in order, instead of reading them back (the hub keeps only a conversation's latest).
    pub events: Vec<Event>,
}

/// Who is posting.
#[derive(Clone, Copy)]
pub enum Poster<'a> {
    /// The customer, on the web or on Messenger.
    Visitor,
    /// A signed-in agent.
    Agent { id: &'a str, name: &'a str },
    /// Someone answering from the Page's own inbox on Meta's side.
    Page { name: &'a str },
    /// Parley itself (e.g. the recap sent when a conversation moves to Messenger).
    System,
}

/// A message to post.
pub struct PostInput<'a> {
    pub contact_id: &'a str,
    pub site_id: &'a str,
    pub poster: Poster<'a>,
    pub client_id: &'a str,
    pub body: &'a str,
    pub channel: Channel,
    pub external_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub messenger_action_at: Option<i64>,
}

impl<'a> PostInput<'a> {
    /// A plain web message.
    pub fn new(contact_id: &'a str, site_id: &'a str, poster: Poster<'a>, client_id: &'a str, body: &'a str) -> Self {
        Self {
            contact_id,
            site_id,
            poster,
            client_id,
            body,
            channel: Channel::Web,
            external_id: None,
            attachments: Vec::new(),
            messenger_action_at: None,
        }
    }
}

/// What the agent's side tells Messenger besides messages (the Graph API's sender actions), best effort.
pub trait SenderActions: Send + Sync {
    /// "The Page is typing…".
    fn typing_on(self: Arc<Self>, psid: String);
    /// "Seen".
    fn mark_seen(self: Arc<Self>, psid: String);
}

/// Shared service handle.
#[derive(Clone)]
pub struct Conversations {
    store: Store,
    hub: Hub,
    /// Whether (and how) replies are mirrored to Messenger; `None` when the channel is off.
    mirror: Option<MirrorPolicy>,
    /// Wakes the Messenger outbox after a commit that queued a send.
    outbox_wake: Arc<Notify>,
    /// The application's wall clock (the store's).
    clock: Clock,
    /// The Messenger channel's sender actions, once it exists (weak: the channel holds this service).
    sender_actions: Arc<OnceLock<Weak<dyn SenderActions>>>,
    /// Counts posts, their commit latency and the fan-out lag.
    meters: Arc<Meters>,
    /// The other nodes on the database, told of every change after it committed (none on a single node).
    nodes: Nodes,
}

impl Conversations {
    pub fn new(store: Store, hub: Hub, mirror: Option<MirrorPolicy>, meters: Arc<Meters>) -> Self {
        let clock = store.clock().clone();
        let nodes = Nodes::single(hub.clone(), clock.clone(), Arc::clone(&meters));
        Self {
            store,
            hub,
            mirror,
            outbox_wake: Arc::new(Notify::new()),
            clock,
            sender_actions: Arc::new(OnceLock::new()),
            meters,
            nodes,
        }
    }

    /// The same service, telling `nodes` of every change as well (several nodes on one database).
    pub fn with_nodes(mut self, nodes: Nodes) -> Self {
        self.nodes = nodes;
        self
    }

    /// This node's membership of the group sharing the database.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The application's meters (for counts kept outside the service, e.g. webhook failures).
    pub fn meters(&self) -> &Meters {
        &self.meters
    }

    /// Where Messenger's sender actions go (set once, by the Messenger channel when it starts).
    pub fn attach_sender_actions(&self, actions: Weak<dyn SenderActions>) {
        let _ = self.sender_actions.set(actions);
    }

    fn sender_actions(&self) -> Option<Arc<dyn SenderActions>> {
        self.sender_actions.get().and_then(Weak::upgrade)
    }

    /// The application's wall clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Notified after a commit that queued a Messenger send (the outbox worker waits on it).
    pub fn outbox_wake(&self) -> &Notify {
        &self.outbox_wake
    }

    /// Raises (`Some`) or clears (`None`) a console alert.
    pub fn set_alert(&self, key: &str, message: Option<String>) {
        self.hub.set_alert(key, message);
    }

    /// The Messenger rows that change without notifying anyone (see [`MessengerRows`]).
    pub fn messenger_rows(&self) -> MessengerRows<'_> {
        MessengerRows { store: &self.store }
    }
    /// Posts a message into the contact's conversation. Returns only after the message is on disk; a repeated
    /// `client_id` (or channel id) returns the original message and writes nothing.
    pub async fn post(&self, input: PostInput<'_>) -> Result<Posted, ServiceError> {
        let received = Instant::now();
        protocol::validate_client_id(input.client_id).map_err(ServiceError::Invalid)?;
        if input.attachments.is_empty() || !input.body.is_empty() {
            protocol::validate_body(input.body).map_err(ServiceError::Invalid)?;
        }
        let author_kind = match input.poster {
            Poster::Visitor => AuthorKind::Visitor,
            Poster::Agent { .. } => AuthorKind::Agent,
            Poster::Page { .. } => AuthorKind::Page,
            Poster::System => AuthorKind::System,
        };
        let channel = input.channel;
        let (author, agent_id) = match input.poster {
            Poster::Visitor => (Author::Visitor, None),
            Poster::Agent { id, name } => (Author::Agent { name: name.to_string() }, Some(id.to_string())),
            Poster::Page { name } => (Author::Agent { name: name.to_string() }, None),
            Poster::System => (Author::System, None),
        };
        // Replies written here go to Messenger too; messages that came from there (customer or Page inbox) do not.
        let mirror = match input.poster {
            Poster::Agent { .. } | Poster::System => self.mirror,
            Poster::Visitor | Poster::Page { .. } => None,
        };
        let msg = NewMessage {
            client_id: input.client_id.to_string(),
            body: input.body.to_string(),
            author,
            agent_id,
            channel: input.channel,
            external_id: input.external_id,
            attachments: input.attachments,
            messenger_action_at: input.messenger_action_at,
            mirror,
        };
        // With an agent here, the writer reads the new inbox row in the message's own transaction (no query after
        // the commit); without one, no one is told of rows, so none is read.
        let (outcome, row) = if self.hub.has_agents() {
            self.store.append_message_summarized(input.contact_id, input.site_id, msg).await?
        } else {
            (self.store.append_message(input.contact_id, input.site_id, msg).await?, None)
        };
        match outcome {
            AppendOutcome::Duplicate { conversation_id, message, seq } => {
                // The original may have been committed by a node that died before announcing it (the client sends
                // again because it never got the ack): announce it again, here and to the other nodes. Sockets
                // that have it already lose nothing (a nudge at or below their last seq reads nothing).
                self.announce_again(&conversation_id, input.contact_id, seq).await;
                Ok(Posted { conversation_id, message, seq, events: Vec::new() })
            }
            AppendOutcome::Created { conversation_id, message, seq, events } => {
                self.meters.message_posted(channel, author_kind, received.elapsed());
                self.publish_committed(&conversation_id, input.contact_id, events.clone());
                match row {
                    Some(row) => self.publish_row(row).await,
                    None => self.publish_summary(&conversation_id).await?,
                }
                if mirror.is_some() {
                    self.outbox_wake.notify_one();
                }
                Ok(Posted { conversation_id, message, seq, events })
            }
        }
    }

    /// An agent's reply in a conversation.
    pub async fn reply(
        &self,
        conversation_id: &str,
        agent_id: &str,
        agent_name: &str,
        client_id: &str,
        body: &str,
    ) -> Result<Posted, ServiceError> {
        let conversation = self.store.conversation(conversation_id).await?.ok_or(ServiceError::NotFound)?;
        self.post(PostInput::new(
            &conversation.contact_id,
            &conversation.site_id,
            Poster::Agent { id: agent_id, name: agent_name },
            client_id,
            body,
        ))
        .await
    }

    /// Moves a read cursor.
    pub async fn mark_read(&self, conversation: &Conversation, by: Party, up_to_seq: u64) -> Result<(), ServiceError> {
        if let Some(event) = self.store.mark_read(&conversation.id, by, up_to_seq).await? {
            self.fan_out(&conversation.id, &conversation.contact_id, vec![event]).await?;
        }
        Ok(())
    }

    /// Resolves or reopens.
    pub async fn set_status(
        &self,
        conversation_id: &str,
        status: ConversationStatus,
        agent_name: &str,
    ) -> Result<(), ServiceError> {
        let conversation = self.store.conversation(conversation_id).await?.ok_or(ServiceError::NotFound)?;
        if let Some(event) = self.store.set_status(conversation_id, status, Some(agent_name.to_string())).await? {
            self.fan_out(&conversation.id, &conversation.contact_id, vec![event]).await?;
        }
        Ok(())
    }

    /// Relays typing; an agent starting to type shows "typing…" on the customer's Messenger thread too.
    pub async fn typing(&self, conversation: &Conversation, from_visitor: bool, typing: bool, name: Option<String>) {
        self.nodes.announce(Nudge::Typing {
            conversation_id: conversation.id.clone(),
            contact_id: conversation.contact_id.clone(),
            from_visitor,
            typing,
            name: name.clone(),
        });
        self.hub.publish(HubMsg::Typing {
            conversation_id: conversation.id.clone(),
            contact_id: conversation.contact_id.clone(),
            from_visitor,
            typing,
            name,
        });
        if typing
            && !from_visitor
            && let Some(actions) = self.sender_actions()
            && let Some(psid) = self.psid_of(&conversation.contact_id).await
        {
            actions.typing_on(psid);
        }
    }

    /// An agent opened a conversation: Messenger shows the customer it was seen.
    pub async fn agent_opened(&self, conversation: &Conversation) {
        if let Some(actions) = self.sender_actions()
            && let Some(psid) = self.psid_of(&conversation.contact_id).await
        {
            actions.mark_seen(psid);
        }
    }

    async fn psid_of(&self, contact_id: &str) -> Option<String> {
        match self.store.contact(contact_id).await {
            Ok(contact) => contact.and_then(|c| c.psid),
            Err(e) => {
                tracing::debug!(error = ?e, "no Messenger id for a sender action");
                None
            }
        }
    }

    /// "Not me": detaches the Messenger user from this contact (pending sends to them are dropped).
    pub async fn unlink(&self, contact_id: &str) -> Result<(), ServiceError> {
        if let Some((conversation_id, event)) = self.store.unbind_psid(contact_id).await? {
            self.publish_events(&conversation_id, vec![event]).await?;
        }
        Ok(())
    }

    /// The person said "Yes, continue here" on Messenger: binds them to the link's contact, logs the link and
    /// queues the `recap`, in one transaction (see [`crate::store::MessengerStore::accept_link`]). `false` if the
    /// offer is gone.
    pub async fn accept_link(
        &self,
        nonce: &str,
        psid: &str,
        name: Option<String>,
        action_at: i64,
        recap: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let Some(accepted) = self.store.accept_link(nonce, psid, name, action_at, recap).await? else {
            return Ok(false);
        };
        if let Some((conversation_id, event)) = accepted.event {
            self.publish_events(&conversation_id, vec![event]).await?;
        }
        self.publish_contact_summary(&accepted.contact_id).await?;
        if recap.is_some() {
            self.outbox_wake.notify_one();
        }
        Ok(true)
    }

    /// A user action on Messenger (referral, postback, consent answer) reopens the 24 h window the inbox shows.
    pub async fn record_messenger_action(&self, contact_id: &str, at: i64) -> Result<(), ServiceError> {
        self.store.record_messenger_action(contact_id, at).await?;
        self.publish_contact_summary(contact_id).await
    }

    /// Messenger says these messages reached the customer's device.
    pub async fn messenger_delivered(&self, mids: &[String]) -> Result<(), ServiceError> {
        for (conversation_id, event) in self.store.messenger_delivered(mids).await? {
            self.publish_events(&conversation_id, vec![event]).await?;
        }
        Ok(())
    }

    /// Messenger says the customer read what the Page sent up to `watermark`.
    pub async fn messenger_read(&self, contact_id: &str, watermark: i64) -> Result<(), ServiceError> {
        if let Some((conversation_id, event)) = self.store.messenger_read(contact_id, watermark).await? {
            self.publish_events(&conversation_id, vec![event]).await?;
        }
        Ok(())
    }

    /// Settles a send the Graph API accepted (from its answer or from our echo) and shows `Sent`. Idempotent. An
    /// error means nothing was committed (a caller retries); once committed, a failure to show it is only logged
    /// (agents see the state when they next load the conversation), since settling again would show nothing.
    pub async fn outbox_sent(&self, outbox_id: i64, mid: &str) -> Result<(), ServiceError> {
        if let Some((conversation_id, event)) = self.store.outbox_sent(outbox_id, mid).await?
            && let Err(e) = self.publish_events(&conversation_id, vec![event]).await
        {
            tracing::warn!(error = ?e, "a Sent state was stored but not published");
        }
        Ok(())
    }

    /// Settles a send that failed for good and shows why.
    pub async fn outbox_failed(&self, outbox_id: i64, detail: &str, state: DeliveryState) -> Result<(), ServiceError> {
        if let Some((conversation_id, event)) = self.store.outbox_failed(outbox_id, detail, state).await? {
            self.publish_events(&conversation_id, vec![event]).await?;
        }
        Ok(())
    }

    /// Publishes committed events, then the conversation's fresh inbox row.
    /// Announces a conversation's log up to `seq` once more (see the duplicate case of [`Self::post`]).
    async fn announce_again(&self, conversation_id: &str, contact_id: &str, seq: u64) {
        self.nodes.announce(Nudge::Event {
            conversation_id: conversation_id.to_string(),
            contact_id: contact_id.to_string(),
            seq,
            at: self.clock.now_ms(),
        });
        self.hub.publish(HubMsg::Behind {
            conversation_id: conversation_id.to_string(),
            contact_id: contact_id.to_string(),
            seq,
        });
        if let Err(e) = self.publish_summary(conversation_id).await {
            tracing::warn!(error = ?e, "could not publish the inbox row of a repeated message");
        }
    }

    async fn fan_out(&self, conversation_id: &str, contact_id: &str, events: Vec<Event>) -> Result<(), ServiceError> {
        self.publish_committed(conversation_id, contact_id, events);
        self.publish_summary(conversation_id).await
    }

    /// Publishes committed events (here and, by a nudge, on the other nodes), without the inbox row.
    fn publish_committed(&self, conversation_id: &str, contact_id: &str, events: Vec<Event>) {
        for event in events {
            let committed_at = event.at;
            self.nodes.announce(Nudge::Event {
                conversation_id: conversation_id.to_string(),
                contact_id: contact_id.to_string(),
                seq: event.seq,
                at: committed_at,
            });
            self.hub.publish(HubMsg::Event {
                conversation_id: conversation_id.to_string(),
                contact_id: contact_id.to_string(),
                event,
            });
            let lag_ms = u64::try_from(self.clock.now_ms().saturating_sub(committed_at)).unwrap_or(0);
            self.meters.fanned_out(Duration::from_millis(lag_ms));
        }
    }

    /// Publishes committed events of a conversation.
    async fn publish_events(&self, conversation_id: &str, events: Vec<Event>) -> Result<(), ServiceError> {
        let conversation = self.store.conversation(conversation_id).await?.ok_or(ServiceError::NotFound)?;
        self.fan_out(&conversation.id, &conversation.contact_id, events).await
    }

    /// Publishes the inbox row of a contact's conversation, if there is one.
    async fn publish_contact_summary(&self, contact_id: &str) -> Result<(), ServiceError> {
        if let Some(conversation) = self.store.conversation_for_contact(contact_id).await? {
            self.publish_summary(&conversation.id).await?;
        }
        Ok(())
    }

    /// Publishes a conversation's inbox row (after any change, or when the visitor comes or goes), here and, by a
    /// nudge, on the other nodes.
    pub async fn publish_summary(&self, conversation_id: &str) -> Result<(), ServiceError> {
        self.nodes.announce(Nudge::Summary { conversation_id: conversation_id.to_string() });
        self.publish_summary_here(conversation_id).await
    }

    /// Publishes an inbox row read in the transaction that changed it, here and, by a nudge, on the other nodes.
    async fn publish_row(&self, row: SummaryRow) {
        self.nodes.announce(Nudge::Summary { conversation_id: row.id.clone() });
        let elsewhere = self.online_elsewhere(std::slice::from_ref(&row)).await;
        self.hub.publish(HubMsg::Summary(self.to_summary(row, &elsewhere)));
    }

    /// Publishes a conversation's inbox row to this node's agents only (another node changed it and said so).
    pub async fn publish_summary_here(&self, conversation_id: &str) -> Result<(), ServiceError> {
        // No agent here, no query: an agent that joins after this reads its inbox afresh (it registers first).
        if !self.hub.has_agents() {
            return Ok(());
        }
        if let Some(summary) = self.summary(conversation_id).await? {
            self.hub.publish(HubMsg::Summary(summary));
        }
        Ok(())
    }

    /// A visitor socket of `contact_id` opened (`joined`) or closed here: presence is recorded for the other nodes
    /// first, then every agent gets the conversation's row with the new "online" (if it has a conversation).
    pub async fn visitor_presence(&self, contact_id: &str, conversation_id: Option<&str>, joined: bool) {
        if joined {
            self.nodes.visitor_joined(contact_id).await;
        } else {
            self.nodes.visitor_left(contact_id).await;
        }
        if let Some(conversation_id) = conversation_id
            && let Err(e) = self.publish_summary(conversation_id).await
        {
            tracing::warn!(error = ?e, "could not publish presence");
        }
    }

    /// Visitors whose node died: agents everywhere get their rows, now offline.
    pub async fn contacts_went_offline(&self, contacts: impl IntoIterator<Item = String>) {
        for contact_id in contacts {
            if let Err(e) = self.publish_contact_summary(&contact_id).await {
                tracing::warn!(error = ?e, "could not publish a visitor going offline");
            }
        }
    }

    pub async fn summary(&self, conversation_id: &str) -> Result<Option<ConversationSummary>, ServiceError> {
        let Some(row) = self.store.summary(conversation_id).await? else { return Ok(None) };
        let elsewhere = self.online_elsewhere(std::slice::from_ref(&row)).await;
        Ok(Some(self.to_summary(row, &elsewhere)))
    }

    /// The inbox of one workspace.
    pub async fn workspace_summaries(&self, workspace_id: &str) -> Result<Vec<ConversationSummary>, ServiceError> {
        let rows = self.store.workspace_summaries(workspace_id).await?;
        let elsewhere = self.online_elsewhere(&rows).await;
        Ok(rows.into_iter().map(|row| self.to_summary(row, &elsewhere)).collect())
    }

    /// The contacts of `rows` with no visitor socket here but one on another node.
    async fn online_elsewhere(&self, rows: &[SummaryRow]) -> HashSet<String> {
        if !self.nodes.shared() {
            return HashSet::new();
        }
        let away: Vec<String> =
            rows.iter().filter(|r| !self.hub.visitor_online(&r.contact_id)).map(|r| r.contact_id.clone()).collect();
        self.nodes.online_elsewhere(&away).await
    }

    fn to_summary(&self, row: SummaryRow, online_elsewhere: &HashSet<String>) -> ConversationSummary {
        let online = self.hub.visitor_online(&row.contact_id) || online_elsewhere.contains(&row.contact_id);
        let messenger = row.psid.as_ref().map(|_| MessengerInfo {
            name: row.display_name.clone(),
            response_until: policy::response_until(row.messenger_last_action_at),
            human_agent_until: self.mirror.and_then(|m| m.human_agent_until(row.messenger_last_message_at)),
        });
        ConversationSummary {
            id: row.id,
            site_key: row.site_key,
            site_name: row.site_name,
            visitor_name: row.display_name.clone().unwrap_or(row.label),
            status: ConversationStatus::parse(&row.status).unwrap_or_default(),
            last_message: row.last_message,
            last_activity_at: row.last_activity_at,
            unread: u32::try_from(row.unread).unwrap_or(u32::MAX),
            last_seq: u64::try_from(row.last_seq).unwrap_or(0),
            visitor_read_seq: u64::try_from(row.visitor_read_seq).unwrap_or(0),
            visitor: VisitorDetails {
                browser: row.user_agent.as_deref().map(useragent::describe),
                page_url: row.page_url,
                referrer: row.referrer,
                user_agent: row.user_agent,
                timezone: row.timezone,
                utc_offset_minutes: row.utc_offset_minutes,
                language: row.language,
                avatar_url: row.avatar_id.map(|id| format!("/attachments/{id}")),
                online,
            },
            messenger,
        }
    }
}

/// The Messenger channel's own rows — webhook deliveries, link offers, the outbox queue and its leases, contacts
/// first seen on Messenger, downloads — and the reads it needs. Nothing here notifies anyone: every change that
/// agents or visitors see is a method of [`Conversations`].
pub struct MessengerRows<'a> {
    store: &'a Store,
}

impl MessengerRows<'_> {
    pub async fn insert_webhook_delivery(&self, body: &[u8]) -> StoreResult<i64> {
        self.store.insert_webhook_delivery(body).await
    }

    pub async fn insert_webhook_deliveries(&self, bodies: &[&[u8]]) -> StoreResult<()> {
        self.store.insert_webhook_deliveries(bodies).await
    }

    pub async fn insert_webhook_batch(&self, take: crate::store::TakeBodies) -> StoreResult<()> {
        self.store.insert_webhook_batch(take).await
    }

    pub async fn unprocessed_webhook_deliveries(&self, limit: i64) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        self.store.unprocessed_webhook_deliveries(limit).await
    }

    pub async fn unprocessed_webhook_deliveries_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        self.store.unprocessed_webhook_deliveries_after(after_id, limit).await
    }

    pub async fn mark_webhook_processed(&self, id: i64, error: Option<&str>) -> StoreResult<()> {
        self.store.mark_webhook_processed(id, error).await
    }

    pub async fn mark_webhooks_processed(&self, done: &[(i64, Option<String>)]) -> StoreResult<()> {
        self.store.mark_webhooks_processed(done).await
    }

    pub async fn intake_lookup(
        &self,
        psids: &[String],
        mids: &[String],
        codes: &[String],
    ) -> StoreResult<crate::store::IntakeLookup> {
        self.store.intake_lookup(psids, mids, codes).await
    }

    pub async fn webhook_delivery_failed(&self, id: i64, error: &str, max_attempts: u32) -> StoreResult<bool> {
        self.store.webhook_delivery_failed(id, error, max_attempts).await
    }

    pub async fn create_link(&self, nonce: &str, contact_id: &str, code: &str, expires_at: i64) -> StoreResult<()> {
        self.store.create_link(nonce, contact_id, code, expires_at).await
    }

    pub async fn offer_link(&self, nonce: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.store.offer_link(nonce, psid, key, ttl_ms).await
    }

    pub async fn offer_code(&self, code: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.store.offer_code(code, psid, key, ttl_ms).await
    }

    pub async fn pending_offer(&self, nonce: &str, psid: &str) -> StoreResult<Option<LinkRow>> {
        self.store.pending_offer(nonce, psid).await
    }

    pub async fn link_answered(&self, nonce: &str, psid: &str) -> StoreResult<Option<bool>> {
        self.store.link_answered(nonce, psid).await
    }

    pub async fn refuse_link(&self, nonce: &str, psid: &str) -> StoreResult<bool> {
        self.store.refuse_link(nonce, psid).await
    }

    pub async fn contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.store.contact(id).await
    }

    pub async fn contact_by_psid(&self, psid: &str) -> StoreResult<Option<Contact>> {
        self.store.contact_by_psid(psid).await
    }

    pub async fn create_messenger_contact(&self, site_id: &str, psid: &str, label: &str) -> StoreResult<Contact> {
        self.store.create_messenger_contact(site_id, psid, label).await
    }

    pub async fn set_contact_profile(&self, id: &str, name: Option<&str>, avatar: Option<&str>) -> StoreResult<()> {
        self.store.set_contact_profile(id, name, avatar).await
    }

    pub async fn conversation_for_contact(&self, contact_id: &str) -> StoreResult<Option<Conversation>> {
        self.store.conversation_for_contact(contact_id).await
    }

    pub async fn message_by_external_id(&self, mid: &str) -> StoreResult<Option<(String, ChatMessage, u64)>> {
        self.store.message_by_external_id(mid).await
    }

    pub async fn recent_messages(&self, conversation_id: &str, limit: i64) -> StoreResult<Vec<RecentMessage>> {
        self.store.recent_messages(conversation_id, limit).await
    }

    /// The id of the site with this key.
    pub async fn site_id_by_key(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.store.site_by_key(key).await?.map(|site| site.id))
    }

    pub async fn oldest_site_id(&self) -> StoreResult<Option<String>> {
        self.store.oldest_site_id().await
    }

    pub async fn sent_mids_until(&self, psid: &str, watermark: i64) -> StoreResult<Vec<String>> {
        self.store.sent_mids_until(psid, watermark).await
    }

    pub async fn outbox_for_message(&self, metadata: &str) -> StoreResult<Option<i64>> {
        self.store.outbox_for_message(metadata).await
    }

    pub async fn lease_outbox_heads(
        &self,
        now: i64,
        lease_ms: i64,
        reconcile_ms: i64,
        limit: i64,
        busy: &[String],
    ) -> StoreResult<Vec<OutboxRow>> {
        self.store.lease_outbox_heads(now, lease_ms, reconcile_ms, limit, busy).await
    }

    pub async fn next_outbox_eligible(&self, reconcile_ms: i64, busy: &[String]) -> StoreResult<Option<i64>> {
        self.store.next_outbox_eligible(reconcile_ms, busy).await
    }

    pub async fn outbox_retry(&self, id: i64, lease_id: &str, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        self.store.outbox_retry(id, lease_id, next_attempt_at, error).await
    }

    pub async fn queue_attachment(
        &self,
        workspace_id: Option<&str>,
        name: Option<&str>,
        source_url: &str,
    ) -> StoreResult<String> {
        self.store.queue_attachment(workspace_id, name, source_url).await
    }

    pub async fn page(&self, page_id: &str) -> StoreResult<Option<PageRow>> {
        self.store.page(page_id).await
    }

    pub async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>> {
        self.store.page_for_site(site_id).await
    }

    pub async fn pages(&self) -> StoreResult<Vec<PageRow>> {
        self.store.pages().await
    }

    pub async fn save_page(&self, page: &PageRow) -> StoreResult<()> {
        self.store.save_page(page).await
    }

    pub async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>> {
        self.store.site_workspace(site_id).await
    }

    /// Sites of a workspace, oldest first.
    pub async fn workspace_sites(&self, workspace_id: &str) -> StoreResult<Vec<Site>> {
        Ok(self.store.sites().await?.into_iter().filter(|s| s.workspace_id == workspace_id).collect())
    }

    pub async fn conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        self.store.conversation(id).await
    }

    pub async fn claim_attachments(&self, limit: i64) -> StoreResult<Vec<(String, String)>> {
        self.store.claim_attachments(limit).await
    }

    pub async fn requeue_attachments(&self) -> StoreResult<u64> {
        self.store.requeue_attachments().await
    }

    pub async fn attachment_downloaded(&self, id: &str, content_type: &str, bytes: &[u8]) -> StoreResult<()> {
        self.store.attachment_downloaded(id, content_type, bytes).await
    }

    pub async fn attachment_unavailable(&self, id: &str, error: &str) -> StoreResult<()> {
        self.store.attachment_unavailable(id, error).await
    }
}
