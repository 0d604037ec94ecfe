//! The reads both engines share, written once: the SQL (with `$N` parameters, which SQLite reads as numbered ones
//! as PostgreSQL does), its binding and its row mapping. [`Reads`] borrows an engine's read pool; the macro below
//! gives it the same methods on `Pool<Sqlite>` and on `Pool<Postgres>`, each compiled against its own engine's
//! types, so no generic bounds are needed and each engine runs its own prepared statements.
//!
//! Only reads whose SQL is the same on both engines live here (not, e.g., `agent_by_email`: SQLite compares with
//! the column's `nocase` collation, PostgreSQL through its `lower(email)` index). Writes stay in each backend (rusqlite jobs on the
//! SQLite writer thread, sqlx transactions on PostgreSQL), as do reads whose SQL differs.

use protocol::{ChatMessage, ConversationStatus, Event, EventKind};

use crate::identity::IdentitySecret;
use crate::store::models::{
    Agent, Contact, Conversation, LinkRow, PageRow, QuarantinedDelivery, RecentMessage, Site, Workspace,
};
use crate::store::ops::OutboxBacklog;
use crate::store::{SiteIdentity, StoreError, StoreResult};

/// An engine's read pool, borrowed for one shared read.
pub(crate) struct Reads<'a, DB: sqlx::Database>(pub(crate) &'a sqlx::Pool<DB>);

/// Columns of [`Contact`], in its field order.
pub(crate) const CONTACT_COLUMNS: &str =
    "id, site_id, label, page_url, referrer, user_agent, timezone, utc_offset_minutes,
    language, psid, display_name, avatar_id, messenger_last_action_at, messenger_last_message_at";

/// An inbox row ([`crate::store::models::SummaryRow`]): a conversation with its site and contact.
pub(crate) const SUMMARY_SELECT: &str =
    "select c.id, c.contact_id, s.key as site_key, s.name as site_name, k.label, c.status,
        c.last_message, c.last_activity_at, c.last_seq, c.visitor_read_seq,
        c.unread_count as unread,
        k.page_url, k.referrer, k.user_agent, k.timezone, k.utc_offset_minutes, k.language,
        k.psid, k.display_name, k.avatar_id, k.messenger_last_action_at, k.messenger_last_message_at
    from conversations c join sites s on s.id = c.site_id join contacts k on k.id = c.contact_id";

pub(crate) const CONVERSATION_COLUMNS: &str =
    "select id, site_id, contact_id, status, last_seq, agent_read_seq, visitor_read_seq from conversations";

pub(crate) fn seq_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn seq_param(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn conversation_from_row(row: (String, String, String, String, i64, i64, i64)) -> StoreResult<Conversation> {
    let (id, site_id, contact_id, status, last_seq, agent_read_seq, visitor_read_seq) = row;
    Ok(Conversation {
        status: ConversationStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        id,
        site_id,
        contact_id,
        last_seq: seq_of(last_seq),
        agent_read_seq: seq_of(agent_read_seq),
        visitor_read_seq: seq_of(visitor_read_seq),
    })
}

fn event_from_payload(payload: &str) -> StoreResult<Event> {
    serde_json::from_str(payload).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A visitor's resume row ([`crate::store::VisitorResume`]): the site's identity settings, the contact of a token
/// on it (its columns under their own names, as [`Contact`] reads them) and the contact's conversation.
const RESUME_SELECT: &str = "select s.identity_secret as site_identity_secret,
        s.identity_required as site_identity_required,
        k.id, k.site_id, k.label, k.page_url, k.referrer, k.user_agent, k.timezone, k.utc_offset_minutes,
        k.language, k.psid, k.display_name, k.avatar_id, k.messenger_last_action_at, k.messenger_last_message_at,
        c.id as conversation_id, c.site_id as conversation_site_id, c.status as conversation_status, c.last_seq as conversation_last_seq,
        c.agent_read_seq as conversation_agent_read_seq, c.visitor_read_seq as conversation_visitor_read_seq
    from sites s left join contacts k on k.web_token_hash = $2 and k.site_id = s.id
        left join conversations c on c.contact_id = k.id
    where s.id = $1";

const EVENTS_AFTER: &str = "select payload from events where conversation_id = $1 and seq > $2 order by seq";

fn site_identity_of(secret: Option<String>, required: bool) -> SiteIdentity {
    SiteIdentity { secret: secret.filter(|s| !s.is_empty()).map(IdentitySecret::from_stored), required }
}

const SITE_COLUMNS: &str = "select id, key, name, allowed_origins, greeting, created_at, workspace_id from sites";
const PAGE_COLUMNS: &str =
    "select p.page_id, p.workspace_id, p.site_id, p.username, p.token_nonce, p.token_ciphertext from messenger_pages p";
const AGENT_COLUMNS: &str = "select a.id, a.email, a.name, a.password_hash, a.workspace_id from agents a";

macro_rules! shared_reads {
    ($db:ty) => {
        impl Reads<'_, $db> {
            pub(crate) async fn contact(&self, id: &str) -> StoreResult<Option<Contact>> {
                Ok(sqlx::query_as::<_, Contact>(&format!("select {CONTACT_COLUMNS} from contacts where id = $1"))
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn contact_by_token(
                &self,
                site_id: &str,
                token_hash: &[u8],
            ) -> StoreResult<Option<Contact>> {
                Ok(sqlx::query_as::<_, Contact>(&format!(
                    "select {CONTACT_COLUMNS} from contacts where web_token_hash = $1 and site_id = $2"
                ))
                .bind(token_hash)
                .bind(site_id)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn contact_by_psid(&self, psid: &str) -> StoreResult<Option<Contact>> {
                Ok(sqlx::query_as::<_, Contact>(&format!("select {CONTACT_COLUMNS} from contacts where psid = $1"))
                    .bind(psid)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn conversation_for_contact(&self, contact_id: &str) -> StoreResult<Option<Conversation>> {
                let row = sqlx::query_as(&format!("{CONVERSATION_COLUMNS} where contact_id = $1"))
                    .bind(contact_id)
                    .fetch_optional(self.0)
                    .await?;
                row.map(conversation_from_row).transpose()
            }

            pub(crate) async fn events_after(&self, conversation_id: &str, after_seq: u64) -> StoreResult<Vec<Event>> {
                let rows: Vec<(String,)> = sqlx::query_as(EVENTS_AFTER)
                    .bind(conversation_id)
                    .bind(seq_param(after_seq))
                    .fetch_all(self.0)
                    .await?;
                rows.iter().map(|(payload,)| event_from_payload(payload)).collect()
            }

            /// See [`crate::store::ConversationStore::visitor_resume`]: the row, then the log, on one connection.
            pub(crate) async fn visitor_resume(
                &self,
                site_id: &str,
                token_hash: &[u8],
                after_seq: u64,
            ) -> StoreResult<crate::store::VisitorResume> {
                use sqlx::Row as _;
                let mut conn = self.0.acquire().await?;
                let row = sqlx::query(RESUME_SELECT).bind(site_id).bind(token_hash).fetch_optional(&mut *conn).await?;
                let mut resume = crate::store::VisitorResume::default();
                let Some(row) = row else { return Ok(resume) };
                resume.identity = site_identity_of(row.try_get("site_identity_secret")?, row.try_get("site_identity_required")?);
                if row.try_get::<Option<String>, _>("id")?.is_none() {
                    return Ok(resume);
                }
                resume.contact = Some(<Contact as sqlx::FromRow<_>>::from_row(&row)?);
                let Some(conversation_id) = row.try_get::<Option<String>, _>("conversation_id")? else {
                    return Ok(resume);
                };
                let conversation = conversation_from_row((
                    conversation_id,
                    row.try_get("conversation_site_id")?,
                    row.try_get("id")?,
                    row.try_get("conversation_status")?,
                    row.try_get("conversation_last_seq")?,
                    row.try_get("conversation_agent_read_seq")?,
                    row.try_get("conversation_visitor_read_seq")?,
                ))?;
                resume.reset = after_seq > conversation.last_seq;
                let from = if resume.reset { 0 } else { after_seq };
                let rows: Vec<(String,)> = sqlx::query_as(EVENTS_AFTER)
                    .bind(&conversation.id)
                    .bind(seq_param(from))
                    .fetch_all(&mut *conn)
                    .await?;
                resume.events = rows.iter().map(|(payload,)| event_from_payload(payload)).collect::<StoreResult<_>>()?;
                resume.conversation = Some(conversation);
                Ok(resume)
            }

            pub(crate) async fn message_by_external_id(
                &self,
                external_id: &str,
            ) -> StoreResult<Option<(String, ChatMessage, u64)>> {
                let row: Option<(String, String)> =
                    sqlx::query_as("select conversation_id, client_id from messages where external_id = $1")
                        .bind(external_id)
                        .fetch_optional(self.0)
                        .await?;
                let Some((conversation_id, client_id)) = row else { return Ok(None) };
                let found = self.message_by_client_id(&conversation_id, &client_id).await?;
                Ok(found.map(|(message, seq)| (conversation_id, message, seq)))
            }

            pub(crate) async fn message_by_client_id(
                &self,
                conversation_id: &str,
                client_id: &str,
            ) -> StoreResult<Option<(ChatMessage, u64)>> {
                let seq: Option<i64> =
                    sqlx::query_scalar("select seq from messages where conversation_id = $1 and client_id = $2")
                        .bind(conversation_id)
                        .bind(client_id)
                        .fetch_optional(self.0)
                        .await?;
                let Some(seq) = seq else { return Ok(None) };
                let event: Option<(String,)> =
                    sqlx::query_as("select payload from events where conversation_id = $1 and seq = $2")
                        .bind(conversation_id)
                        .bind(seq)
                        .fetch_optional(self.0)
                        .await?;
                let Some((payload,)) = event else {
                    return Err(StoreError::Corrupt(format!("message seq {seq} has no event")));
                };
                match event_from_payload(&payload)?.kind {
                    EventKind::Message { message } => Ok(Some((message, seq_of(seq)))),
                    _ => Err(StoreError::Corrupt(format!("event {seq} is not a message"))),
                }
            }

            /// The link offered to `psid` under `nonce`, while its offer stands (`now`: epoch ms).
            pub(crate) async fn pending_offer(&self, nonce: &str, psid: &str, now: i64) -> StoreResult<Option<LinkRow>> {
                Ok(sqlx::query_as::<_, LinkRow>(
                    "select nonce, contact_id, code, expires_at from messenger_links
                     where nonce = $1 and psid = $2 and used_at is null and offer_expires_at > $3",
                )
                .bind(nonce)
                .bind(psid)
                .bind(now)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn link_answered(&self, nonce: &str, psid: &str) -> StoreResult<Option<bool>> {
                Ok(sqlx::query_scalar(
                    "select used_at is not null from messenger_links where nonce = $1 and psid = $2",
                )
                .bind(nonce)
                .bind(psid)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn unprocessed_webhook_deliveries_after(
                &self,
                after_id: i64,
                limit: i64,
            ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
                Ok(sqlx::query_as(
                    "select id, body from webhook_deliveries where processed_at is null and quarantined_at is null
                       and id > $1 order by id limit $2",
                )
                .bind(after_id)
                .bind(limit)
                .fetch_all(self.0)
                .await?)
            }

            pub(crate) async fn quarantined_deliveries(&self) -> StoreResult<Vec<QuarantinedDelivery>> {
                Ok(sqlx::query_as::<_, QuarantinedDelivery>(
                    "select id, received_at, attempts, error from webhook_deliveries
                     where quarantined_at is not null and processed_at is null order by id",
                )
                .fetch_all(self.0)
                .await?)
            }

            pub(crate) async fn quarantined_delivery_count(&self) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(
                    "select count(*) from webhook_deliveries where quarantined_at is not null and processed_at is null",
                )
                .fetch_one(self.0)
                .await?)
            }

            /// Mids of sends to `psid` that Meta's `watermark` (read or delivered up to) covers, with a minute's
            /// slack for clocks.
            pub(crate) async fn sent_mids_until(&self, psid: &str, watermark: i64) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "select external_id from outbox where psid = $1 and status = 'sent' and external_id is not null
                        and updated_at <= $2 order by id",
                )
                .bind(psid)
                .bind(watermark.saturating_add(60_000))
                .fetch_all(self.0)
                .await?)
            }

            pub(crate) async fn outbox_for_message(&self, metadata: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "select id from outbox where status = 'pending'
                        and (message_id = $1 or (message_id is null and 'outbox-' || id = $1))",
                )
                .bind(metadata)
                .fetch_optional(self.0)
                .await?)
            }

            /// The contact's conversation and the highest seq of its sends that Meta's read `watermark` covers.
            pub(crate) async fn messenger_read_up_to(
                &self,
                contact_id: &str,
                watermark: i64,
            ) -> StoreResult<Option<(String, Option<i64>)>> {
                Ok(sqlx::query_as(
                    "select c.id, (select max(m.seq) from messages m join outbox o on o.message_id = m.id
                         where m.conversation_id = c.id and o.status = 'sent' and o.updated_at <= $1)
                     from conversations c where c.contact_id = $2",
                )
                .bind(watermark.saturating_add(60_000))
                .bind(contact_id)
                .fetch_optional(self.0)
                .await?)
            }

            /// The conversation's last `limit` messages but system ones, oldest first.
            pub(crate) async fn recent_messages(
                &self,
                conversation_id: &str,
                limit: i64,
            ) -> StoreResult<Vec<RecentMessage>> {
                let mut rows: Vec<RecentMessage> = sqlx::query_as(
                    "select author_role, author_name, body
                     from messages where conversation_id = $1 and author_role <> 'system' order by seq desc limit $2",
                )
                .bind(conversation_id)
                .bind(limit)
                .fetch_all(self.0)
                .await?;
                rows.reverse();
                Ok(rows)
            }

            pub(crate) async fn site_by_key(&self, key: &str) -> StoreResult<Option<Site>> {
                Ok(sqlx::query_as::<_, Site>(&format!("{SITE_COLUMNS} where key = $1"))
                    .bind(key)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn sites(&self) -> StoreResult<Vec<Site>> {
                Ok(sqlx::query_as::<_, Site>(&format!("{SITE_COLUMNS} order by created_at")).fetch_all(self.0).await?)
            }

            pub(crate) async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity> {
                let row: Option<(Option<String>, bool)> =
                    sqlx::query_as("select identity_secret, identity_required from sites where id = $1")
                        .bind(site_id)
                        .fetch_optional(self.0)
                        .await?;
                Ok(row.map_or_else(SiteIdentity::default, |(secret, required)| site_identity_of(secret, required)))
            }

            /// The agent of an unexpired session (`now`: epoch ms from the backend's clock).
            pub(crate) async fn agent_for_session(&self, token_hash: &[u8], now: i64) -> StoreResult<Option<Agent>> {
                Ok(sqlx::query_as::<_, Agent>(&format!(
                    "{AGENT_COLUMNS} join agent_sessions s on a.id = s.agent_id
                     where s.token_hash = $1 and s.expires_at > $2"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn attachment(&self, id: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
                Ok(sqlx::query_as("select content_type, bytes from attachments where id = $1 and status = 'ready'")
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn attachment_status(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>> {
                Ok(sqlx::query_as("select status, error from attachments where id = $1")
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn workspace_by_key(&self, key: &str) -> StoreResult<Option<Workspace>> {
                Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces where key = $1")
                    .bind(key)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
                Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces order by created_at, id")
                    .fetch_all(self.0)
                    .await?)
            }

            pub(crate) async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar("select workspace_id from sites where id = $1")
                    .bind(site_id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn conversation_workspace(&self, conversation_id: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar(
                    "select s.workspace_id from conversations c join sites s on s.id = c.site_id where c.id = $1",
                )
                .bind(conversation_id)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn attachment_workspace(&self, attachment_id: &str) -> StoreResult<Option<String>> {
                let found: Option<Option<String>> = sqlx::query_scalar(
                    "select coalesce(a.workspace_id,
                        (select s.workspace_id from conversations c join sites s on s.id = c.site_id
                         where c.id = a.conversation_id),
                        (select s.workspace_id from contacts k join sites s on s.id = k.site_id
                         where k.avatar_id = a.id limit 1))
                     from attachments a where a.id = $1",
                )
                .bind(attachment_id)
                .fetch_optional(self.0)
                .await?;
                Ok(found.flatten())
            }

            pub(crate) async fn page(&self, page_id: &str) -> StoreResult<Option<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} where p.page_id = $1"))
                    .bind(page_id)
                    .fetch_optional(self.0)
                    .await?)
            }

            /// The site's own Page, else its workspace's workspace-wide one.
            pub(crate) async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!(
                    "{PAGE_COLUMNS} join sites s on s.id = $1
                     where p.site_id = s.id or (p.site_id is null and p.workspace_id = s.workspace_id)
                     order by p.site_id is null limit 1"
                ))
                .bind(site_id)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn pages(&self) -> StoreResult<Vec<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} order by p.created_at, p.page_id"))
                    .fetch_all(self.0)
                    .await?)
            }

            pub(crate) async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
                let (pending, oldest_created_at): (i64, Option<i64>) =
                    sqlx::query_as("select count(*), min(created_at) from outbox where status = 'pending'")
                        .fetch_one(self.0)
                        .await?;
                Ok(OutboxBacklog { pending, oldest_created_at })
            }

            /// The versions of the migrations that ran to the end.
            pub(crate) async fn applied_migrations(&self) -> StoreResult<Vec<i64>> {
                Ok(sqlx::query_scalar("select version from _sqlx_migrations where success = true")
                    .fetch_all(self.0)
                    .await?)
            }
        }
    };
}

shared_reads!(sqlx::Sqlite);
shared_reads!(sqlx::Postgres);
