//! Contacts, conversations, messages and the per-conversation event log.
//!
//! Every durable change to a conversation appends an [`Event`] with the next `seq` in the same transaction as the
//! change itself, so the log and the tables never disagree and replaying the log from any `seq` is exact.

use async_trait::async_trait;
use protocol::{Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, EventKind, Party};
use sqlx::{Postgres, Transaction};

use super::{PgStore, on_unique};
use crate::messenger::policy::{Mirror, MirrorPolicy, Thread};
use crate::store::models::{Contact, ContactContext, Conversation, SummaryRow};
use crate::store::{AppendOutcome, ConversationStore, NewMessage, StoreError, StoreResult, new_id, web_contact_id};

pub(super) use crate::store::reads::{CONVERSATION_COLUMNS, SUMMARY_SELECT, conversation_from_row, seq_of, seq_param};

#[async_trait]
impl ConversationStore for PgStore {
    async fn contact_for_token(
        &self,
        site_id: &str,
        token_hash: &[u8],
        label: &str,
        ctx: &ContactContext,
    ) -> StoreResult<Contact> {
        let now = self.now();
        sqlx::query(
            "insert into contacts (id, site_id, web_token_hash, label, page_url, referrer, user_agent, timezone,
                utc_offset_minutes, language, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             on conflict do nothing",
        )
        .bind(web_contact_id(site_id, token_hash))
        .bind(site_id)
        .bind(token_hash)
        .bind(label)
        .bind(&ctx.page_url)
        .bind(&ctx.referrer)
        .bind(&ctx.user_agent)
        .bind(&ctx.timezone)
        .bind(ctx.utc_offset_minutes)
        .bind(&ctx.language)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.contact_by_token(site_id, token_hash)
            .await?
            .ok_or_else(|| StoreError::Conflict("a contact of another site with this token".into()))
    }

    async fn web_token_taken(&self, token_hash: &[u8]) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("select 1::bigint from contacts where web_token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn contact_by_token(&self, site_id: &str, token_hash: &[u8]) -> StoreResult<Option<Contact>> {
        self.reads().contact_by_token(site_id, token_hash).await
    }

    async fn update_contact_context(&self, contact_id: &str, ctx: &ContactContext) -> StoreResult<()> {
        sqlx::query(
            "update contacts set page_url = coalesce($1, page_url), referrer = coalesce($2, referrer),
                user_agent = coalesce($3, user_agent), timezone = coalesce($4, timezone),
                utc_offset_minutes = coalesce($5, utc_offset_minutes), language = coalesce($6, language),
                updated_at = $7
             where id = $8 and (page_url is distinct from coalesce($1, page_url) or referrer is distinct from coalesce($2, referrer)
                or user_agent is distinct from coalesce($3, user_agent) or timezone is distinct from coalesce($4, timezone)
                or utc_offset_minutes is distinct from coalesce($5, utc_offset_minutes) or language is distinct from coalesce($6, language))",
        )
        .bind(&ctx.page_url)
        .bind(&ctx.referrer)
        .bind(&ctx.user_agent)
        .bind(&ctx.timezone)
        .bind(ctx.utc_offset_minutes)
        .bind(&ctx.language)
        .bind(self.now())
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.reads().contact(id).await
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let row = sqlx::query_as(&format!("{CONVERSATION_COLUMNS} where id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(conversation_from_row).transpose()
    }

    async fn conversation_for_contact(&self, contact_id: &str) -> StoreResult<Option<Conversation>> {
        self.reads().conversation_for_contact(contact_id).await
    }

    async fn events_after(&self, conversation_id: &str, after_seq: u64) -> StoreResult<Vec<Event>> {
        self.reads().events_after(conversation_id, after_seq).await
    }

    async fn visitor_resume(
        &self,
        site_id: &str,
        token_hash: &[u8],
        after_seq: u64,
    ) -> StoreResult<crate::store::VisitorResume> {
        self.reads().visitor_resume(site_id, token_hash, after_seq).await
    }

    async fn message_by_external_id(&self, external_id: &str) -> StoreResult<Option<(String, ChatMessage, u64)>> {
        self.reads().message_by_external_id(external_id).await
    }

    async fn message_by_client_id(
        &self,
        conversation_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<(ChatMessage, u64)>> {
        self.reads().message_by_client_id(conversation_id, client_id).await
    }

    async fn append_message(&self, contact_id: &str, site_id: &str, msg: NewMessage) -> StoreResult<AppendOutcome> {
        if let Some(external_id) = &msg.external_id
            && let Some((conversation_id, message, seq)) = self.message_by_external_id(external_id).await?
        {
            return Ok(AppendOutcome::Duplicate { conversation_id, message, seq });
        }
        if let Some(conversation) = self.conversation_for_contact(contact_id).await?
            && let Some((message, seq)) = self.message_by_client_id(&conversation.id, &msg.client_id).await?
        {
            return Ok(AppendOutcome::Duplicate { conversation_id: conversation.id, message, seq });
        }
        match self.append_message_tx(contact_id, site_id, &msg).await {
            Err(StoreError::Conflict(_)) => {
                // Lost a race with the same client id (or channel id): report the winner.
                if let Some(external_id) = &msg.external_id
                    && let Some((conversation_id, message, seq)) = self.message_by_external_id(external_id).await?
                {
                    return Ok(AppendOutcome::Duplicate { conversation_id, message, seq });
                }
                let conversation = self.conversation_for_contact(contact_id).await?.ok_or(StoreError::NotFound)?;
                let (message, seq) =
                    self.message_by_client_id(&conversation.id, &msg.client_id).await?.ok_or(StoreError::NotFound)?;
                Ok(AppendOutcome::Duplicate { conversation_id: conversation.id, message, seq })
            }
            other => other,
        }
    }

    async fn mark_read(&self, conversation_id: &str, by: Party, up_to_seq: u64) -> StoreResult<Option<Event>> {
        let now = self.now();
        let column = match by {
            Party::Visitor => "visitor_read_seq",
            Party::Agent => "agent_read_seq",
        };
        let mut tx = self.pool.begin().await?;
        // The seq of the last message: the log's last `message` event (read backwards by its key, usually the first).
        let last_message = "coalesce((select e.seq from events e where e.conversation_id = conversations.id
            and e.payload::jsonb ->> 'kind' = 'message' order by e.seq desc limit 1), 0)";
        let moved = sqlx::query(&format!(
            "update conversations set {column} = least($1, {last_message}), updated_at = $2
             where id = $3 and {column} < least($4, {last_message})"
        ))
        .bind(seq_param(up_to_seq))
        .bind(now)
        .bind(conversation_id)
        .bind(seq_param(up_to_seq))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let cursor: i64 = sqlx::query_scalar(&format!("select {column} from conversations where id = $1"))
            .bind(conversation_id)
            .fetch_one(&mut *tx)
            .await?;
        if by == Party::Agent {
            // Only the customer's messages after the agents' cursor are unread (a few events, by the log's key).
            sqlx::query(
                "update conversations set unread_count = (select count(*) from events e
                    where e.conversation_id = $1 and e.seq > $2 and e.payload::jsonb ->> 'kind' = 'message'
                        and e.payload::jsonb #>> '{message,author,role}' = 'visitor') where id = $1",
            )
            .bind(conversation_id)
            .bind(cursor)
            .execute(&mut *tx)
            .await?;
        }
        let seq = bump_seq(&mut tx, conversation_id, now).await?;
        let event =
            insert_event(&mut tx, conversation_id, seq, now, EventKind::Read { by, up_to_seq: seq_of(cursor) }).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn set_status(
        &self,
        conversation_id: &str,
        status: ConversationStatus,
        by: Option<String>,
    ) -> StoreResult<Option<Event>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("update conversations set status = $1, updated_at = $2 where id = $3 and status <> $4")
            .bind(status.as_str())
            .bind(now)
            .bind(conversation_id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let seq = bump_seq(&mut tx, conversation_id, now).await?;
        let event = insert_event(&mut tx, conversation_id, seq, now, EventKind::Status { status, by }).await?;
        sqlx::query("update conversations set last_activity_at = $1 where id = $2")
            .bind(now)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn summaries(&self) -> StoreResult<Vec<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!("{SUMMARY_SELECT} order by c.last_activity_at desc limit 500"))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn workspace_summaries(&self, workspace_id: &str) -> StoreResult<Vec<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!(
            "{SUMMARY_SELECT} where s.workspace_id = $1 order by c.last_activity_at desc limit 500"
        ))
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn summary(&self, conversation_id: &str) -> StoreResult<Option<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!("{SUMMARY_SELECT} where c.id = $1"))
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

impl PgStore {
    async fn append_message_tx(&self, contact_id: &str, site_id: &str, msg: &NewMessage) -> StoreResult<AppendOutcome> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        // The contact's row before the conversation's (the backend's lock order).
        if let Some(at) = msg.messenger_action_at {
            sqlx::query(
                "update contacts set messenger_last_action_at = greatest(coalesce(messenger_last_action_at, 0), $1),
                    messenger_last_message_at = greatest(coalesce(messenger_last_message_at, 0), $2) where id = $3",
            )
            .bind(at)
            .bind(at)
            .bind(contact_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "insert into conversations (id, site_id, contact_id, status, last_activity_at, created_at, updated_at)
             values ($1, $2, $3, 'open', $4, $5, $6) on conflict(contact_id) do nothing",
        )
        .bind(new_id())
        .bind(site_id)
        .bind(contact_id)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Locked until commit: the status read here is the one this transaction acts on, and concurrent appends
        // to this conversation (from any node) take their seq one after the other.
        let row = sqlx::query_as(&format!("{CONVERSATION_COLUMNS} where contact_id = $1 for no key update"))
            .bind(contact_id)
            .fetch_one(&mut *tx)
            .await?;
        let conversation = conversation_from_row(row)?;

        let seq = bump_seq(&mut tx, &conversation.id, now).await?;
        let message = ChatMessage {
            id: new_id(),
            client_id: msg.client_id.clone(),
            author: msg.author.clone(),
            body: msg.body.clone(),
            sent_at: now,
            channel: msg.channel,
            attachments: msg.attachments.clone(),
        };
        let (role, name) = match &msg.author {
            Author::Visitor => ("visitor", None),
            Author::Agent { name } => ("agent", Some(name.as_str())),
            Author::System => ("system", None),
        };
        sqlx::query(
            "insert into messages (id, conversation_id, seq, client_id, author_role, agent_id, author_name, channel,
                body, external_id, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&message.id)
        .bind(&conversation.id)
        .bind(seq_param(seq))
        .bind(&message.client_id)
        .bind(role)
        .bind(&msg.agent_id)
        .bind(name)
        .bind(channel_str(msg.channel))
        .bind(&message.body)
        .bind(&msg.external_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| on_unique(e, "a message with this client id"))?;
        let mut events = vec![
            insert_event(&mut tx, &conversation.id, seq, now, EventKind::Message { message: message.clone() }).await?,
        ];
        if let Some(policy) = msg.mirror
            && let Some(event) =
                mirror_to_messenger(&mut tx, &conversation.id, contact_id, &message, policy, now).await?
        {
            events.push(event);
        }

        if matches!(msg.author, Author::Visitor) && conversation.status == ConversationStatus::Resolved {
            let status_seq = bump_seq(&mut tx, &conversation.id, now).await?;
            sqlx::query("update conversations set status = 'open' where id = $1")
                .bind(&conversation.id)
                .execute(&mut *tx)
                .await?;
            events.push(
                insert_event(
                    &mut tx,
                    &conversation.id,
                    status_seq,
                    now,
                    EventKind::Status { status: ConversationStatus::Open, by: None },
                )
                .await?,
            );
        }
        let preview: String = message.body.chars().take(140).collect();
        let unread = i64::from(matches!(msg.author, Author::Visitor));
        sqlx::query(
            "update conversations set last_message = $1, last_activity_at = $2, unread_count = unread_count + $3
             where id = $4",
        )
        .bind(preview)
        .bind(now)
        .bind(unread)
        .bind(&conversation.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AppendOutcome::Created { conversation_id: conversation.id, message, seq, events })
    }
}

/// Queues a message for Messenger in the message's own transaction, or records why it is not sent.
async fn mirror_to_messenger(
    tx: &mut Transaction<'_, Postgres>,
    conversation_id: &str,
    contact_id: &str,
    message: &ChatMessage,
    policy: MirrorPolicy,
    now: i64,
) -> StoreResult<Option<Event>> {
    let row: Option<(Option<String>, Option<i64>, Option<i64>)> =
        sqlx::query_as("select psid, messenger_last_action_at, messenger_last_message_at from contacts where id = $1")
            .bind(contact_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((Some(psid), last_action_at, last_message_at)) = row else { return Ok(None) };
    let thread = Thread { psid, last_action_at, last_message_at };
    let messaging_type = match policy.decide(matches!(message.author, Author::Agent { .. }), &thread, now) {
        Mirror::Send(kind) => kind.as_stored(),
        Mirror::NotSent { detail } => {
            let seq = bump_seq(tx, conversation_id, now).await?;
            let kind = EventKind::Delivery {
                message_id: message.id.clone(),
                channel: Channel::Messenger,
                state: DeliveryState::NotSent,
                detail: Some(detail.to_string()),
            };
            return Ok(Some(insert_event(tx, conversation_id, seq, now, kind).await?));
        }
    };
    let body = message.body.clone();
    sqlx::query(
        "insert into outbox (conversation_id, message_id, psid, body, messaging_type, next_attempt_at, created_at,
            updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(conversation_id)
    .bind(&message.id)
    .bind(&thread.psid)
    .bind(body)
    .bind(messaging_type)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(None)
}

fn channel_str(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "web",
        Channel::Messenger => "messenger",
    }
}

pub(super) async fn bump_seq(tx: &mut Transaction<'_, Postgres>, conversation_id: &str, now: i64) -> StoreResult<u64> {
    let seq: i64 = sqlx::query_scalar(
        "update conversations set last_seq = last_seq + 1, updated_at = $1 where id = $2 returning last_seq",
    )
    .bind(now)
    .bind(conversation_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(seq_of(seq))
}

pub(super) async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    conversation_id: &str,
    seq: u64,
    at: i64,
    kind: EventKind,
) -> StoreResult<Event> {
    let event = Event { seq, at, kind };
    let payload = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("insert into events (conversation_id, seq, payload, created_at) values ($1, $2, $3, $4)")
        .bind(conversation_id)
        .bind(seq_param(seq))
        .bind(payload)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(event)
}
