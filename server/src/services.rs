//! The conversation service: the one code path every change to a conversation takes, whoever makes it (visitor
//! socket, agent socket, console, and later the Messenger webhook): validate → persist (commit) → fan out.
//! Messenger delivery will hook in here, after the commit, through the outbox written in the same transaction.

use std::sync::Arc;

use protocol::console::{ConversationSummary, MessengerInfo, VisitorDetails};
use protocol::{Attachment, Author, Channel, ChatMessage, ConversationStatus, Event, Party};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::hub::{Hub, HubMsg};
use crate::messenger::policy::{self, MirrorPolicy};
use crate::store::models::{Conversation, SummaryRow};
use crate::store::{AppendOutcome, NewMessage, Store, StoreError};
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

/// Shared service handle.
#[derive(Clone)]
pub struct Conversations {
    pub store: Store,
    pub hub: Hub,
    /// Whether (and how) replies are mirrored to Messenger; `None` when the channel is off.
    pub mirror: Option<MirrorPolicy>,
    /// Wakes the Messenger outbox after a commit that queued a send.
    pub outbox_wake: Arc<Notify>,
    /// The application's wall clock (the store's).
    pub clock: Clock,
}

impl Conversations {
    /// Posts a message into the contact's conversation. Returns only after the message is on disk; a repeated
    /// `client_id` (or channel id) returns the original message and writes nothing.
    pub async fn post(&self, input: PostInput<'_>) -> Result<Posted, ServiceError> {
        protocol::validate_client_id(input.client_id).map_err(ServiceError::Invalid)?;
        if input.attachments.is_empty() || !input.body.is_empty() {
            protocol::validate_body(input.body).map_err(ServiceError::Invalid)?;
        }
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
        match self.store.append_message(input.contact_id, input.site_id, msg).await? {
            AppendOutcome::Duplicate { conversation_id, message, seq } => Ok(Posted { conversation_id, message, seq }),
            AppendOutcome::Created { conversation_id, message, seq, events } => {
                self.fan_out(&conversation_id, input.contact_id, events).await?;
                if mirror.is_some() {
                    self.outbox_wake.notify_one();
                }
                Ok(Posted { conversation_id, message, seq })
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

    /// Relays typing.
    pub fn typing(&self, conversation: &Conversation, from_visitor: bool, typing: bool, name: Option<String>) {
        self.hub.publish(HubMsg::Typing {
            conversation_id: conversation.id.clone(),
            contact_id: conversation.contact_id.clone(),
            from_visitor,
            typing,
            name,
        });
    }

    /// Publishes committed events, then the conversation's fresh inbox row.
    async fn fan_out(&self, conversation_id: &str, contact_id: &str, events: Vec<Event>) -> Result<(), ServiceError> {
        for event in events {
            self.hub.publish(HubMsg::Event {
                conversation_id: conversation_id.to_string(),
                contact_id: contact_id.to_string(),
                event,
            });
        }
        self.publish_summary(conversation_id).await
    }

    /// Publishes events committed elsewhere (Messenger intake, outbox) for a conversation.
    pub async fn publish_events(&self, conversation_id: &str, events: Vec<Event>) -> Result<(), ServiceError> {
        let conversation = self.store.conversation(conversation_id).await?.ok_or(ServiceError::NotFound)?;
        self.fan_out(&conversation.id, &conversation.contact_id, events).await
    }

    /// Publishes the inbox row of a contact's conversation, if there is one.
    pub async fn publish_contact_summary(&self, contact_id: &str) -> Result<(), ServiceError> {
        if let Some(conversation) = self.store.conversation_for_contact(contact_id).await? {
            self.publish_summary(&conversation.id).await?;
        }
        Ok(())
    }

    /// Publishes a conversation's inbox row (after any change, or when the visitor comes or goes).
    pub async fn publish_summary(&self, conversation_id: &str) -> Result<(), ServiceError> {
        if let Some(summary) = self.summary(conversation_id).await? {
            self.hub.publish(HubMsg::Summary(summary));
        }
        Ok(())
    }

    pub async fn summary(&self, conversation_id: &str) -> Result<Option<ConversationSummary>, ServiceError> {
        Ok(self.store.summary(conversation_id).await?.map(|row| self.to_summary(row)))
    }

    pub async fn summaries(&self) -> Result<Vec<ConversationSummary>, ServiceError> {
        Ok(self.store.summaries().await?.into_iter().map(|row| self.to_summary(row)).collect())
    }

    fn to_summary(&self, row: SummaryRow) -> ConversationSummary {
        let online = self.hub.visitor_online(&row.contact_id);
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
