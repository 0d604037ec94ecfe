//! Contacts, conversations, messages and the per-conversation event log.
//!
//! Every durable change to a conversation appends an [`Event`] with the next `seq` in the same transaction as the
//! change itself, so the log and the tables never disagree and replaying the log from any `seq` is exact.

use async_trait::async_trait;
use protocol::{Author, Channel, ChatMessage, ConversationStatus, DeliveryState, Event, EventKind, Party};

use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::{SqliteStore, exec, on_unique, row};
use crate::messenger::policy::{Mirror, MirrorPolicy, Thread};
use crate::store::models::{Contact, ContactContext, Conversation, SummaryRow};
use crate::store::{AppendOutcome, ConversationStore, NewMessage, StoreError, StoreResult, new_id, web_contact_id};

pub(super) use crate::store::reads::{
    CONTACT_COLUMNS, CONVERSATION_COLUMNS, SUMMARY_SELECT, conversation_from_row, seq_of, seq_param,
};

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn contact_for_token(
        &self,
        site_id: &str,
        token_hash: &[u8],
        label: &str,
        ctx: &ContactContext,
    ) -> StoreResult<Contact> {
        let now = self.now();
        let (id, site, hash, label, ctx) = (
            web_contact_id(site_id, token_hash),
            site_id.to_owned(),
            token_hash.to_vec(),
            label.to_owned(),
            ctx.clone(),
        );
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "insert into contacts (page_url, referrer, user_agent, timezone, utc_offset_minutes, language, id,
                        site_id, web_token_hash, label, created_at, updated_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                     on conflict do nothing",
                    with_context(&ctx, [&id as &dyn ToSql, &site, &hash, &label, &now]),
                )?;
                // Read back in the same job (the writer has the row at hand): no read through the pool after it.
                row(
                    conn,
                    &format!("select {CONTACT_COLUMNS} from contacts where web_token_hash = ? and site_id = ?"),
                    params![hash, site],
                    contact_row,
                )
            })
            .await?
            .ok_or_else(|| StoreError::Conflict("a contact of another site with this token".into()))
    }

    async fn web_token_taken(&self, token_hash: &[u8]) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("select 1 from contacts where web_token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn contact_by_token(&self, site_id: &str, token_hash: &[u8]) -> StoreResult<Option<Contact>> {
        self.reads().contact_by_token(site_id, token_hash).await
    }

    async fn update_contact_context(&self, contact_id: &str, ctx: &ContactContext) -> StoreResult<()> {
        let (now, contact_id, ctx) = (self.now(), contact_id.to_owned(), ctx.clone());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update contacts set page_url = coalesce(?1, page_url), referrer = coalesce(?2, referrer),
                        user_agent = coalesce(?3, user_agent), timezone = coalesce(?4, timezone),
                        utc_offset_minutes = coalesce(?5, utc_offset_minutes), language = coalesce(?6, language),
                        updated_at = ?7
                     where id = ?8 and (page_url is not coalesce(?1, page_url) or referrer is not coalesce(?2, referrer)
                        or user_agent is not coalesce(?3, user_agent) or timezone is not coalesce(?4, timezone)
                        or utc_offset_minutes is not coalesce(?5, utc_offset_minutes)
                        or language is not coalesce(?6, language))",
                    with_context(&ctx, [&now as &dyn ToSql, &contact_id]),
                )
            })
            .await?;
        Ok(())
    }

    async fn contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.reads().contact(id).await
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let row =
            sqlx::query_as(&format!("{CONVERSATION_COLUMNS} where id = ?")).bind(id).fetch_optional(&self.pool).await?;
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
        Ok(self.append(contact_id, site_id, msg, false).await?.0)
    }

    async fn append_message_summarized(
        &self,
        contact_id: &str,
        site_id: &str,
        msg: NewMessage,
    ) -> StoreResult<(AppendOutcome, Option<SummaryRow>)> {
        self.append(contact_id, site_id, msg, true).await
    }

    async fn mark_read(&self, conversation_id: &str, by: Party, up_to_seq: u64) -> StoreResult<Option<Event>> {
        let now = self.now();
        let column = match by {
            Party::Visitor => "visitor_read_seq",
            Party::Agent => "agent_read_seq",
        };
        let conversation_id = conversation_id.to_owned();
        self.writer.run(move |conn| mark_read_in(conn, &conversation_id, by, column, up_to_seq, now)).await
    }

    async fn set_status(
        &self,
        conversation_id: &str,
        status: ConversationStatus,
        by: Option<String>,
    ) -> StoreResult<Option<Event>> {
        let (now, conversation_id) = (self.now(), conversation_id.to_owned());
        self.writer
            .run(move |conn| {
                let moved = exec(
                    conn,
                    "update conversations set status = ?1, updated_at = ?2 where id = ?3 and status <> ?1",
                    params![status.as_str(), now, conversation_id],
                )?;
                if moved == 0 {
                    return Ok(None);
                }
                let seq = bump_seq(conn, &conversation_id, now)?;
                let event = insert_event(conn, &conversation_id, seq, now, EventKind::Status { status, by })?;
                exec(
                    conn,
                    "update conversations set last_activity_at = ? where id = ?",
                    params![now, conversation_id],
                )?;
                Ok(Some(event))
            })
            .await
    }

    async fn summaries(&self) -> StoreResult<Vec<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!("{SUMMARY_SELECT} order by c.last_activity_at desc limit 500"))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn workspace_summaries(&self, workspace_id: &str) -> StoreResult<Vec<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!(
            "{SUMMARY_SELECT} where s.workspace_id = ? order by c.last_activity_at desc limit 500"
        ))
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn summary(&self, conversation_id: &str) -> StoreResult<Option<SummaryRow>> {
        Ok(sqlx::query_as::<_, SummaryRow>(&format!("{SUMMARY_SELECT} where c.id = ?"))
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

impl SqliteStore {
    /// Appends a message; with `summarize`, the writer also reads the conversation's inbox row in the message's own
    /// transaction (it has the connection and the pages at hand: no read through the pool after the commit).
    async fn append(
        &self,
        contact_id: &str,
        site_id: &str,
        msg: NewMessage,
        summarize: bool,
    ) -> StoreResult<(AppendOutcome, Option<SummaryRow>)> {
        // No look-up first: a repeated client id (or channel id) fails the insert on its unique index, which rolls
        // the whole attempt back, and is answered below. New messages, the common case, save two reads.
        let (external_id, client_id) = (msg.external_id.clone(), msg.client_id.clone());
        let (now, contact, site) = (self.now(), contact_id.to_owned(), site_id.to_owned());
        let appended = self
            .writer
            .run(move |conn| {
                let outcome = append_message_in(conn, &contact, &site, msg, now)?;
                let row = match (&outcome, summarize) {
                    (AppendOutcome::Created { conversation_id, .. }, true) => summary_in(conn, conversation_id)?,
                    _ => None,
                };
                Ok((outcome, row))
            })
            .await;
        match appended {
            Err(StoreError::Conflict(_)) => {
                // A repeat, or lost a race with the same client id (or channel id): report the original. It may be
                // in this very group, not committed yet: an empty write returns once the group is on disk.
                self.writer.settle().await?;
                if let Some(external_id) = &external_id
                    && let Some((conversation_id, message, seq)) = self.message_by_external_id(external_id).await?
                {
                    return Ok((AppendOutcome::Duplicate { conversation_id, message, seq }, None));
                }
                let conversation = self.conversation_for_contact(contact_id).await?.ok_or(StoreError::NotFound)?;
                let (message, seq) =
                    self.message_by_client_id(&conversation.id, &client_id).await?.ok_or(StoreError::NotFound)?;
                Ok((AppendOutcome::Duplicate { conversation_id: conversation.id, message, seq }, None))
            }
            other => other,
        }
    }
}

/// A contact's six context columns as the parameters ?1 … ?6 (the order both statements that write them number
/// them), followed by `rest` as ?7 ….
fn with_context<'a, const N: usize>(ctx: &'a ContactContext, rest: [&'a dyn ToSql; N]) -> impl rusqlite::Params + 'a {
    let context: [&'a dyn ToSql; 6] =
        [&ctx.page_url, &ctx.referrer, &ctx.user_agent, &ctx.timezone, &ctx.utc_offset_minutes, &ctx.language];
    params_from_iter(context.into_iter().chain(rest))
}

/// A [`Contact`] from a row of [`CONTACT_COLUMNS`] on the write connection.
pub(super) fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    Ok(Contact {
        id: r.get(0)?,
        site_id: r.get(1)?,
        label: r.get(2)?,
        page_url: r.get(3)?,
        referrer: r.get(4)?,
        user_agent: r.get(5)?,
        timezone: r.get(6)?,
        utc_offset_minutes: r.get(7)?,
        language: r.get(8)?,
        psid: r.get(9)?,
        display_name: r.get(10)?,
        avatar_id: r.get(11)?,
        messenger_last_action_at: r.get(12)?,
        messenger_last_message_at: r.get(13)?,
    })
}

/// A conversation's inbox row, read on the write connection (inside the transaction that just changed it).
fn summary_in(conn: &Connection, conversation_id: &str) -> StoreResult<Option<SummaryRow>> {
    row(conn, &format!("{SUMMARY_SELECT} where c.id = ?"), params![conversation_id], |r| {
        Ok(SummaryRow {
            id: r.get("id")?,
            contact_id: r.get("contact_id")?,
            site_key: r.get("site_key")?,
            site_name: r.get("site_name")?,
            label: r.get("label")?,
            status: r.get("status")?,
            last_message: r.get("last_message")?,
            last_activity_at: r.get("last_activity_at")?,
            unread: r.get("unread")?,
            last_seq: r.get("last_seq")?,
            visitor_read_seq: r.get("visitor_read_seq")?,
            page_url: r.get("page_url")?,
            referrer: r.get("referrer")?,
            user_agent: r.get("user_agent")?,
            timezone: r.get("timezone")?,
            utc_offset_minutes: r.get("utc_offset_minutes")?,
            language: r.get("language")?,
            psid: r.get("psid")?,
            display_name: r.get("display_name")?,
            avatar_id: r.get("avatar_id")?,
            messenger_last_action_at: r.get("messenger_last_action_at")?,
            messenger_last_message_at: r.get("messenger_last_message_at")?,
        })
    })
}

/// Appends a message (creating the conversation on the first one), as one job of the writer: the caller's whole
/// transaction runs here, back to back on the write connection.
fn append_message_in(
    conn: &Connection,
    contact_id: &str,
    site_id: &str,
    msg: NewMessage,
    now: i64,
) -> StoreResult<AppendOutcome> {
    let preview: String = msg.body.chars().take(140).collect();
    let unread = i64::from(matches!(msg.author, Author::Visitor));
    // One statement creates the conversation or takes its next seq, and updates the inbox columns (last message,
    // activity, unread); it returns the row as it was before, but with the new seq (the message's).
    let found = row(
        conn,
        "insert into conversations (id, site_id, contact_id, status, last_seq, last_message, unread_count,
            last_activity_at, created_at, updated_at)
         values (?1, ?2, ?3, 'open', 1, ?4, ?5, ?6, ?6, ?6)
         on conflict(contact_id) do update set last_seq = last_seq + 1, last_message = excluded.last_message,
            unread_count = unread_count + excluded.unread_count, last_activity_at = excluded.last_activity_at,
            updated_at = excluded.updated_at
         returning id, site_id, contact_id, status, last_seq, agent_read_seq, visitor_read_seq",
        params![new_id(), site_id, contact_id, preview, unread, now],
        conversation_row,
    )?;
    let conversation = conversation_from_row(found.ok_or(StoreError::NotFound)?)?;

    let seq = conversation.last_seq;
    let NewMessage {
        client_id,
        body,
        author,
        agent_id,
        channel,
        external_id,
        attachments,
        messenger_action_at,
        mirror,
    } = msg;
    let (role, name) = match &author {
        Author::Visitor => ("visitor", None),
        Author::Agent { name } => ("agent", Some(name.clone())),
        Author::System => ("system", None),
    };
    let message = ChatMessage { id: new_id(), client_id, author, body, sent_at: now, channel, attachments };
    conn.prepare_cached(
        "insert into messages (id, conversation_id, seq, client_id, author_role, agent_id, author_name, channel,
            body, external_id, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        message.id,
        conversation.id,
        seq_param(seq),
        message.client_id,
        role,
        agent_id,
        name,
        channel_str(channel),
        message.body,
        external_id,
        now
    ])
    .map_err(|e| on_unique(e, "a message with this client id"))?;
    let mut events =
        vec![insert_event(conn, &conversation.id, seq, now, EventKind::Message { message: message.clone() })?];
    if let Some(at) = messenger_action_at {
        exec(
            conn,
            "update contacts set messenger_last_action_at = max(coalesce(messenger_last_action_at, 0), ?1),
                messenger_last_message_at = max(coalesce(messenger_last_message_at, 0), ?1) where id = ?2",
            params![at, contact_id],
        )?;
    }
    if let Some(policy) = mirror
        && let Some(event) = mirror_to_messenger(conn, &conversation.id, contact_id, &message, policy, now)?
    {
        events.push(event);
    }

    if matches!(message.author, Author::Visitor) && conversation.status == ConversationStatus::Resolved {
        let status_seq = bump_seq(conn, &conversation.id, now)?;
        exec(conn, "update conversations set status = 'open' where id = ?", params![conversation.id])?;
        events.push(insert_event(
            conn,
            &conversation.id,
            status_seq,
            now,
            EventKind::Status { status: ConversationStatus::Open, by: None },
        )?);
    }
    Ok(AppendOutcome::Created { conversation_id: conversation.id, message, seq, events })
}

/// Moves one party's read cursor up to `up_to_seq` (never past the last message), as one job of the writer.
fn mark_read_in(
    conn: &Connection,
    conversation_id: &str,
    by: Party,
    column: &str,
    up_to_seq: u64,
    now: i64,
) -> StoreResult<Option<Event>> {
    // The seq of the last message: the log's last `message` event (read backwards by its key, usually the first).
    let last_message = "coalesce((select e.seq from events e where e.conversation_id = conversations.id
        and e.payload ->> '$.kind' = 'message' order by e.seq desc limit 1), 0)";
    let moved = exec(
        conn,
        &format!(
            "update conversations set {column} = min(?1, {last_message}), updated_at = ?2
             where id = ?3 and {column} < min(?1, {last_message})"
        ),
        params![seq_param(up_to_seq), now, conversation_id],
    )?;
    if moved == 0 {
        return Ok(None);
    }
    let cursor: i64 =
        row(conn, &format!("select {column} from conversations where id = ?"), params![conversation_id], |r| r.get(0))?
            .ok_or(StoreError::NotFound)?;
    if by == Party::Agent {
        // Only the customer's messages after the agents' cursor are unread (a few events, by the log's key).
        exec(
            conn,
            "update conversations set unread_count = (select count(*) from events e
                where e.conversation_id = ?1 and e.seq > ?2 and e.payload ->> '$.kind' = 'message'
                    and e.payload ->> '$.message.author.role' = 'visitor') where id = ?1",
            params![conversation_id, cursor],
        )?;
    }
    let seq = bump_seq(conn, conversation_id, now)?;
    let event = insert_event(conn, conversation_id, seq, now, EventKind::Read { by, up_to_seq: seq_of(cursor) })?;
    Ok(Some(event))
}

/// A conversation row as [`conversation_from_row`] takes it.
fn conversation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, i64, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

/// Queues a message for Messenger in the message's own transaction, or records why it is not sent.
fn mirror_to_messenger(
    conn: &Connection,
    conversation_id: &str,
    contact_id: &str,
    message: &ChatMessage,
    policy: MirrorPolicy,
    now: i64,
) -> StoreResult<Option<Event>> {
    let found: Option<(Option<String>, Option<i64>, Option<i64>)> = row(
        conn,
        "select psid, messenger_last_action_at, messenger_last_message_at from contacts where id = ?",
        params![contact_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((Some(psid), last_action_at, last_message_at)) = found else { return Ok(None) };
    let thread = Thread { psid, last_action_at, last_message_at };
    let messaging_type = match policy.decide(matches!(message.author, Author::Agent { .. }), &thread, now) {
        Mirror::Send(kind) => kind.as_stored(),
        Mirror::NotSent { detail } => {
            let seq = bump_seq(conn, conversation_id, now)?;
            let kind = EventKind::Delivery {
                message_id: message.id.clone(),
                channel: Channel::Messenger,
                state: DeliveryState::NotSent,
                detail: Some(detail.to_string()),
            };
            return Ok(Some(insert_event(conn, conversation_id, seq, now, kind)?));
        }
    };
    exec(
        conn,
        "insert into outbox (conversation_id, message_id, psid, body, messaging_type, next_attempt_at, created_at,
            updated_at) values (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
        params![conversation_id, message.id, thread.psid, message.body, messaging_type, now],
    )?;
    Ok(None)
}

fn channel_str(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "web",
        Channel::Messenger => "messenger",
    }
}

pub(super) fn bump_seq(conn: &Connection, conversation_id: &str, now: i64) -> StoreResult<u64> {
    let seq: i64 = row(
        conn,
        "update conversations set last_seq = last_seq + 1, updated_at = ? where id = ? returning last_seq",
        params![now, conversation_id],
        |r| r.get(0),
    )?
    .ok_or(StoreError::NotFound)?;
    Ok(seq_of(seq))
}

pub(super) fn insert_event(
    conn: &Connection,
    conversation_id: &str,
    seq: u64,
    at: i64,
    kind: EventKind,
) -> StoreResult<Event> {
    let event = Event { seq, at, kind };
    let payload = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    exec(
        conn,
        "insert into events (conversation_id, seq, payload, created_at) values (?, ?, ?, ?)",
        params![conversation_id, seq_param(seq), payload, at],
    )?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::append_message_in;
    use crate::clock::Clock;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::writer::tests::message;
    use crate::store::{Backend, NewMessage};

    /// Conversations written to at once, and messages per COMMIT, as in scenario b at saturation (100 visitors,
    /// 4 sends in flight each: groups of about 200–256).
    const CONVERSATIONS: usize = 100;
    const PER_COMMIT: usize = 200;

    /// A database migrated by the store, then opened alone with rusqlite and no automatic checkpoint, so that the
    /// WAL holds exactly the frames of the transactions run on it.
    async fn migrated(dir: &tempfile::TempDir) -> Connection {
        let path = dir.path().join("frames.db");
        let store =
            SqliteStore::connect(&format!("sqlite://{}", path.display()), 1, Clock::system()).await.expect("migrates");
        store.close().await;
        let conn = Connection::open(&path).expect("opens");
        conn.execute_batch("pragma foreign_keys = on; pragma wal_autocheckpoint = 0;").expect("pragmas");
        conn.execute(
            "insert into sites (id, key, name, allowed_origins, created_at, updated_at)
             values ('s', 's', 'S', '[]', 0, 0)",
            [],
        )
        .expect("site");
        for i in 0..CONVERSATIONS {
            conn.execute(
                "insert into contacts (id, site_id, label, created_at, updated_at) values (?1, 's', 'V', 0, 0)",
                params![format!("k{i}")],
            )
            .expect("contact");
        }
        conn
    }

    /// Bytes of pages in the WAL file at `wal` (each frame is a 24-byte header and a page, after a 32-byte file
    /// header), which a checkpoint then copies into the database and truncates.
    fn pages_checkpointed(conn: &Connection, wal: &std::path::Path, page: u64) -> u64 {
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        let busy: i64 = conn.query_row("pragma wal_checkpoint(truncate)", [], |r| r.get(0)).expect("checkpoint");
        assert_eq!(busy, 0, "the checkpoint completed");
        size.saturating_sub(32) / (page + 24) * page
    }

    /// What one message costs the WAL: 20,000 visitor messages into 100 conversations, 200 to a COMMIT (each after
    /// the first in a savepoint, as a group runs them), through the append path itself. Each COMMIT writes every page
    /// it changed, and a message changes a leaf at its conversation's place in each b-tree keyed by conversation.
    /// With the schema before 20261202007000 on 4 KiB pages this was about 12 KB per message; the event log no
    /// longer clustered by conversation (20261202007000) and 2 KiB pages ([`super::super::PAGE_SIZE`]) left about
    /// 5.6; without the second index by seq on `messages` (20261202007001) it is about 4.0.
    #[tokio::test]
    async fn a_message_costs_few_wal_bytes_under_group_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = migrated(&dir).await;
        let wal = dir.path().join("frames.db-wal");
        let page: u64 = conn.query_row("pragma page_size", [], |r| r.get(0)).expect("page size");
        pages_checkpointed(&conn, &wal, page);
        let (mut bytes, mut messages) = (0, 0);
        for group in 0..100 {
            conn.execute_batch("begin immediate").expect("begin");
            for i in 0..PER_COMMIT {
                let n = group * PER_COMMIT + i;
                if i > 0 {
                    conn.execute_batch("savepoint w").expect("savepoint");
                }
                let msg = NewMessage {
                    body: format!("benchmark message {n}"),
                    ..message(format!("v{}-{}", n % CONVERSATIONS, n / CONVERSATIONS))
                };
                append_message_in(&conn, &format!("k{}", n % CONVERSATIONS), "s", msg, n as i64).expect("appends");
                if i > 0 {
                    conn.execute_batch("release w").expect("release");
                }
                messages += 1;
            }
            conn.execute_batch("commit").expect("commit");
            bytes += pages_checkpointed(&conn, &wal, page);
        }
        let per_message = bytes as f64 / f64::from(messages);
        println!("{per_message:.0} bytes of WAL per message (pages of {page} bytes)");
        assert!(per_message > 500.0, "the WAL was measured: {per_message:.0} bytes per message");
        assert!(per_message < 4_800.0, "{per_message:.0} bytes of WAL per message");
    }
}
