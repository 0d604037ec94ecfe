//! The conversation service: the one code path every change to a conversation takes, whoever makes it (visitor
//! socket, agent socket, console, and later the Messenger webhook): validate → persist (commit) → fan out.
//! Messenger delivery will hook in here, after the commit, through the outbox written in the same transaction.

use protocol::console::{ConversationSummary, VisitorDetails};
use protocol::{Author, Channel, ChatMessage, ConversationStatus, Event, Party};

use crate::hub::{Hub, HubMsg};
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
pub enum Poster<'a> {
    Visitor,
    Agent { id: &'a str, name: &'a str },
}

/// Shared service handle.
#[derive(Clone)]
pub struct Conversations {
    pub store: Store,
    pub hub: Hub,
}

impl Conversations {
    /// Posts a message into the contact's conversation. Returns only after the message is on disk; a repeated
    /// `client_id` returns the original message and writes nothing.
    pub async fn post(
        &self,
        contact_id: &str,
        site_id: &str,
        poster: Poster<'_>,
        client_id: &str,
        body: &str,
        channel: Channel,
    ) -> Result<Posted, ServiceError> {
        protocol::validate_client_id(client_id).map_err(ServiceError::Invalid)?;
        protocol::validate_body(body).map_err(ServiceError::Invalid)?;
        let (author, agent_id) = match poster {
            Poster::Visitor => (Author::Visitor, None),
            Poster::Agent { id, name } => (Author::Agent { name: name.to_string() }, Some(id.to_string())),
        };
        let msg = NewMessage {
            client_id: client_id.to_string(),
            body: body.to_string(),
            author,
            agent_id,
            channel,
        };
        match self.store.append_message(contact_id, site_id, msg).await? {
            AppendOutcome::Duplicate { message, seq } => {
                let conversation = self
                    .store
                    .conversation_for_contact(contact_id)
                    .await?
                    .ok_or(ServiceError::NotFound)?;
                Ok(Posted { conversation_id: conversation.id, message, seq })
            }
            AppendOutcome::Created { message, seq, events } => {
                let conversation = self
                    .store
                    .conversation_for_contact(contact_id)
                    .await?
                    .ok_or(ServiceError::NotFound)?;
                self.fan_out(&conversation, events).await?;
                Ok(Posted { conversation_id: conversation.id, message, seq })
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
        self.post(
            &conversation.contact_id,
            &conversation.site_id,
            Poster::Agent { id: agent_id, name: agent_name },
            client_id,
            body,
            Channel::Web,
        )
        .await
    }

    /// Moves a read cursor.
    pub async fn mark_read(&self, conversation: &Conversation, by: Party, up_to_seq: u64) -> Result<(), ServiceError> {
        if let Some(event) = self.store.mark_read(&conversation.id, by, up_to_seq).await? {
            self.fan_out(conversation, vec![event]).await?;
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
            self.fan_out(&conversation, vec![event]).await?;
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
    async fn fan_out(&self, conversation: &Conversation, events: Vec<Event>) -> Result<(), ServiceError> {
        for event in events {
            self.hub.publish(HubMsg::Event {
                conversation_id: conversation.id.clone(),
                contact_id: conversation.contact_id.clone(),
                event,
            });
        }
        self.publish_summary(&conversation.id).await
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
        ConversationSummary {
            id: row.id,
            site_key: row.site_key,
            site_name: row.site_name,
            visitor_name: row.label,
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
                online,
            },
        }
    }
}
