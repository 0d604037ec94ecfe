//! Messenger state: PSID identities, link tokens, raw webhook deliveries, the send outbox and its delivery states.

use protocol::{Channel, DeliveryState, Event, EventKind, Party};

use async_trait::async_trait;

use rusqlite::{Connection, named_params, params};

use super::conversations::{bump_seq, contact_row, insert_event, seq_of};
use super::{SqliteStore, exec, row, rows};
use crate::messenger::send_api::MessagingType;
use crate::store::models::{Contact, LinkRow, OutboxRow, QuarantinedDelivery, RecentMessage};
use crate::store::reads::CONTACT_COLUMNS;
use crate::store::{
    Accepted, ConversationStore, IntakeLookup, MAX_LIVE_LINKS, MessengerStore, OfferOutcome, StoreError, StoreResult,
    new_id,
};

/// The heads that may be leased, with when each became eligible (`at`), as two arms over few rows each: those
/// holding no lease, eligible at their next attempt, walked in `outbox_due`'s order from the longest waiting
/// (`?now`: eligible by then, at most `?limit` of them); and those whose lease was never settled (a crash, a stop, a
/// failed settle, through the small `outbox_leased` index), eligible `?reconcile` ms after that lease ran out, once
/// our echo had time to settle it. `?busy`: a JSON array of PSIDs to skip. (One scan of every pending send with a
/// head test per row cost about 15 ms with 4,000 pending, on the writer, for every lease.)
const OUTBOX_ELIGIBLE_HEADS: &str = "
    select id, at from (
        select o.id, o.next_attempt_at as at from outbox o
        where o.status = 'pending' and o.lease_id is null and o.next_attempt_at <= :now
          and o.id = (select min(p.id) from outbox p where p.psid = o.psid and p.status = 'pending')
          and o.psid not in (select value from json_each(:busy))
        order by o.next_attempt_at, o.id limit :limit)
    union all
    select o.id, max(o.next_attempt_at, o.leased_until + :reconcile) as at from outbox o indexed by outbox_leased
    where o.status = 'pending' and o.lease_id is not null and max(o.next_attempt_at, o.leased_until + :reconcile) <= :now
      and o.id = (select min(p.id) from outbox p where p.psid = o.psid and p.status = 'pending')
      and o.psid not in (select value from json_each(:busy))";

/// The earliest time a head not in `?busy` may be leased, in the two arms of [`OUTBOX_ELIGIBLE_HEADS`].
const OUTBOX_NEXT_ELIGIBLE: &str = "
    select min(at) from (
        select at from (
            select o.next_attempt_at as at from outbox o
            where o.status = 'pending' and o.lease_id is null
              and o.id = (select min(p.id) from outbox p where p.psid = o.psid and p.status = 'pending')
              and o.psid not in (select value from json_each(?2))
            order by o.next_attempt_at, o.id limit 1)
        union all
        select max(o.next_attempt_at, o.leased_until + ?1) as at from outbox o indexed by outbox_leased
        where o.status = 'pending' and o.lease_id is not null
          and o.id = (select min(p.id) from outbox p where p.psid = o.psid and p.status = 'pending')
          and o.psid not in (select value from json_each(?2)))";

#[async_trait]
impl MessengerStore for SqliteStore {
    async fn contact_by_psid(&self, psid: &str) -> StoreResult<Option<Contact>> {
        self.reads().contact_by_psid(psid).await
    }

    async fn create_messenger_contact(&self, site_id: &str, psid: &str, label: &str) -> StoreResult<Contact> {
        let now = self.now();
        let (id, site_id, psid_owned, label) = (new_id(), site_id.to_owned(), psid.to_owned(), label.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "insert into contacts (id, site_id, label, psid, messenger_linked_at, created_at, updated_at)
                     values (?1, ?2, ?3, ?4, ?5, ?5, ?5) on conflict do nothing",
                    params![id, site_id, label, psid_owned, now],
                )
            })
            .await?;
        // Either ours, or one a concurrent delivery created first.
        self.contact_by_psid(psid).await?.ok_or(StoreError::NotFound)
    }

    async fn set_contact_profile(
        &self,
        contact_id: &str,
        name: Option<&str>,
        avatar_id: Option<&str>,
    ) -> StoreResult<()> {
        let (now, contact_id) = (self.now(), contact_id.to_owned());
        let (name, avatar_id) = (name.map(str::to_owned), avatar_id.map(str::to_owned));
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update contacts set display_name = coalesce(?, display_name), avatar_id = coalesce(?, avatar_id),
                        updated_at = ? where id = ?",
                    params![name, avatar_id, now, contact_id],
                )
            })
            .await?;
        Ok(())
    }

    async fn record_messenger_action(&self, contact_id: &str, at: i64) -> StoreResult<()> {
        let contact_id = contact_id.to_owned();
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update contacts set messenger_last_action_at = max(coalesce(messenger_last_action_at, 0), ?)
                     where id = ?",
                    params![at, contact_id],
                )
            })
            .await?;
        Ok(())
    }

    async fn create_link(&self, nonce: &str, contact_id: &str, code: &str, expires_at: i64) -> StoreResult<()> {
        let now = self.now();
        let (nonce, contact_id, code) = (nonce.to_owned(), contact_id.to_owned(), code.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "delete from messenger_links where max(expires_at, coalesce(offer_expires_at, 0)) <= ?",
                    params![now],
                )?;
                exec(
                    conn,
                    "delete from messenger_links where contact_id = ?1 and used_at is null and nonce not in
                        (select nonce from messenger_links where contact_id = ?1 and used_at is null
                         order by created_at desc, rowid desc limit ?2)",
                    params![contact_id, MAX_LIVE_LINKS - 1],
                )?;
                exec(
                    conn,
                    "insert into messenger_links (nonce, contact_id, code, expires_at, created_at)
                     values (?, ?, ?, ?, ?)",
                    params![nonce, contact_id, code, expires_at, now],
                )
            })
            .await?;
        Ok(())
    }

    async fn offer_link(&self, nonce: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.offer("nonce = ?1", nonce, psid, key, ttl_ms).await
    }

    async fn offer_code(&self, code: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.offer(
            "nonce = (select nonce from messenger_links where code = ?1 and used_at is null and expires_at > ?2
                      and (psid is null or psid = ?3) order by created_at desc limit 1)",
            code,
            psid,
            key,
            ttl_ms,
        )
        .await
    }

    async fn pending_offer(&self, nonce: &str, psid: &str) -> StoreResult<Option<LinkRow>> {
        self.reads().pending_offer(nonce, psid, self.now()).await
    }

    async fn link_answered(&self, nonce: &str, psid: &str) -> StoreResult<Option<bool>> {
        self.reads().link_answered(nonce, psid).await
    }

    async fn accept_link(
        &self,
        nonce: &str,
        psid: &str,
        name: Option<String>,
        action_at: i64,
        recap: Option<&str>,
    ) -> StoreResult<Option<Accepted>> {
        let now = self.now();
        let (nonce, psid, recap) = (nonce.to_owned(), psid.to_owned(), recap.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let contact_id: Option<String> = row(
                    conn,
                    "update messenger_links set used_at = ?1 where nonce = ?2 and psid = ?3 and used_at is null
                        and offer_expires_at > ?1 returning contact_id",
                    params![now, nonce, psid],
                    |r| r.get(0),
                )?;
                let Some(contact_id) = contact_id else { return Ok(None) };
                let event = bind_in(conn, &contact_id, &psid, name, now)?;
                exec(
                    conn,
                    "update contacts set messenger_last_action_at = max(coalesce(messenger_last_action_at, 0), ?)
                     where id = ?",
                    params![action_at, contact_id],
                )?;
                if let (Some(recap), Some((conversation_id, _))) = (recap, &event) {
                    exec(
                        conn,
                        "insert into outbox (conversation_id, psid, body, messaging_type, next_attempt_at, created_at,
                            updated_at) values (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
                        params![conversation_id, psid, recap, MessagingType::Response.as_stored(), now],
                    )?;
                }
                Ok(Some(Accepted { contact_id, event }))
            })
            .await
    }

    async fn refuse_link(&self, nonce: &str, psid: &str) -> StoreResult<bool> {
        let now = self.now();
        let (nonce, psid) = (nonce.to_owned(), psid.to_owned());
        let done = self
            .writer
            .run(move |conn| {
                exec(
                    conn,
                    "update messenger_links set used_at = ?1, refused_at = ?1
                     where nonce = ?2 and psid = ?3 and used_at is null",
                    params![now, nonce, psid],
                )
            })
            .await?;
        Ok(done == 1)
    }

    async fn unbind_psid(&self, contact_id: &str) -> StoreResult<Option<(String, Event)>> {
        let (now, contact_id) = (self.now(), contact_id.to_owned());
        self.writer
            .run(move |conn| {
                let psid: Option<Option<String>> = row(
                    conn,
                    "update contacts set psid = null, updated_at = ? where id = ? returning psid",
                    params![now, contact_id],
                    |r| r.get(0),
                )?;
                let conversation: Option<String> =
                    row(conn, "select id from conversations where contact_id = ?", params![contact_id], |r| r.get(0))?;
                let (Some(_), Some(conversation_id)) = (psid, conversation) else { return Ok(None) };
                exec(
                    conn,
                    "update outbox set status = 'failed', last_error = 'unlinked', updated_at = ?
                     where conversation_id = ? and status = 'pending'",
                    params![now, conversation_id],
                )?;
                let seq = bump_seq(conn, &conversation_id, now)?;
                let kind = EventKind::Channel { channel: Channel::Messenger, linked: false, name: None };
                let event = insert_event(conn, &conversation_id, seq, now, kind)?;
                Ok(Some((conversation_id, event)))
            })
            .await
    }

    async fn insert_webhook_delivery(&self, body: &[u8]) -> StoreResult<i64> {
        let (now, body) = (self.now(), body.to_vec());
        self.writer
            .run(move |conn| {
                row(
                    conn,
                    "insert into webhook_deliveries (body, received_at) values (?, ?) returning id",
                    params![body, now],
                    |r| r.get(0),
                )?
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn insert_webhook_deliveries(&self, bodies: &[&[u8]]) -> StoreResult<()> {
        let bodies: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
        self.insert_webhook_batch(Box::new(move || bodies)).await
    }

    async fn insert_webhook_batch(&self, take: crate::store::TakeBodies) -> StoreResult<()> {
        let now = self.now();
        // One job, one cached statement run per body: on the writer thread each run costs microseconds, so a
        // multi-row statement would buy nothing here. In the writer's priority lane: Meta waits for this commit (the
        // webhook's 200), so it goes before the intake's queued writes instead of behind them. The bodies are taken
        // on the writer thread, when the batch's turn comes: what arrived while it waited (behind the group being
        // written) joins it instead of forming a batch of its own behind it.
        self.writer
            .run_first(move |conn| {
                for body in take() {
                    exec(conn, "insert into webhook_deliveries (body, received_at) values (?, ?)", params![body, now])?;
                }
                Ok(())
            })
            .await
    }

    async fn unprocessed_webhook_deliveries(&self, limit: i64) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        // Ids start at 1.
        self.reads().unprocessed_webhook_deliveries_after(0, limit).await
    }

    async fn unprocessed_webhook_deliveries_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        self.reads().unprocessed_webhook_deliveries_after(after_id, limit).await
    }

    async fn webhook_delivery_failed(&self, id: i64, error: &str, max_attempts: u32) -> StoreResult<bool> {
        let (now, error) = (self.now(), error.to_owned());
        let quarantined: Option<Option<i64>> = self
            .writer
            .run(move |conn| {
                row(
                    conn,
                    "update webhook_deliveries set attempts = attempts + 1, error = ?,
                        quarantined_at = case when attempts + 1 >= ? then ? end
                     where id = ? and processed_at is null returning quarantined_at",
                    params![error, i64::from(max_attempts), now, id],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(quarantined.flatten().is_some())
    }

    async fn quarantined_deliveries(&self) -> StoreResult<Vec<QuarantinedDelivery>> {
        self.reads().quarantined_deliveries().await
    }

    async fn quarantined_delivery_count(&self) -> StoreResult<i64> {
        self.reads().quarantined_delivery_count().await
    }

    async fn replay_quarantined(&self, id: Option<i64>) -> StoreResult<u64> {
        let replayed = self
            .writer
            .run(move |conn| {
                exec(
                    conn,
                    "update webhook_deliveries set quarantined_at = null, attempts = 0, error = null
                     where quarantined_at is not null and processed_at is null and (?1 is null or id = ?1)",
                    params![id],
                )
            })
            .await?;
        Ok(replayed as u64)
    }

    async fn mark_webhook_processed(&self, id: i64, error: Option<&str>) -> StoreResult<()> {
        let (now, error) = (self.now(), error.map(str::to_owned));
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update webhook_deliveries set processed_at = ?, error = ? where id = ?",
                    params![now, error, id],
                )
            })
            .await?;
        Ok(())
    }

    async fn lease_outbox_heads(
        &self,
        now: i64,
        lease_ms: i64,
        reconcile_ms: i64,
        limit: i64,
        busy: &[String],
    ) -> StoreResult<Vec<OutboxRow>> {
        let lease = new_id();
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        let sql = lease_sql();
        let until = now.saturating_add(lease_ms);
        self.writer
            .run(move |conn| {
                let params = named_params! {
                    ":lease": lease, ":until": until, ":now": now, ":reconcile": reconcile_ms, ":busy": busy,
                    ":limit": limit,
                };
                rows(conn, &sql, params, |r| {
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        conversation_id: r.get(1)?,
                        message_id: r.get(2)?,
                        psid: r.get(3)?,
                        body: r.get(4)?,
                        messaging_type: r.get(5)?,
                        attempts: r.get(6)?,
                        last_error: r.get(7)?,
                        lease_id: r.get(8)?,
                    })
                })
            })
            .await
    }

    async fn next_outbox_eligible(&self, reconcile_ms: i64, busy: &[String]) -> StoreResult<Option<i64>> {
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_scalar(OUTBOX_NEXT_ELIGIBLE).bind(reconcile_ms).bind(busy).fetch_one(&self.pool).await?)
    }

    async fn outbox_sent(&self, id: i64, external_id: &str) -> StoreResult<Option<(String, Event)>> {
        self.outbox_settle(id, "sent", Some(external_id), None, DeliveryState::Sent).await
    }

    async fn outbox_failed(&self, id: i64, detail: &str, state: DeliveryState) -> StoreResult<Option<(String, Event)>> {
        self.outbox_settle(id, "failed", None, Some(detail), state).await
    }

    async fn outbox_retry(&self, id: i64, lease_id: &str, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        let (now, lease_id, error) = (self.now(), lease_id.to_owned(), error.to_owned());
        self.writer
            .run(move |conn| {
                exec(
                    conn,
                    "update outbox set attempts = attempts + 1, next_attempt_at = ?, last_error = ?, updated_at = ?,
                        lease_id = null, leased_until = null
                     where id = ? and status = 'pending' and lease_id = ?",
                    params![next_attempt_at, error, now, id, lease_id],
                )
            })
            .await?;
        Ok(())
    }

    async fn sent_mids_until(&self, psid: &str, watermark: i64) -> StoreResult<Vec<String>> {
        self.reads().sent_mids_until(psid, watermark).await
    }

    async fn outbox_for_message(&self, metadata: &str) -> StoreResult<Option<i64>> {
        self.reads().outbox_for_message(metadata).await
    }

    async fn messenger_delivered(&self, mids: &[String]) -> StoreResult<Vec<(String, Event)>> {
        if mids.is_empty() {
            return Ok(Vec::new());
        }
        let (now, mids) = (self.now(), mids.to_vec());
        // One job for the whole receipt, the messages looked up on the write connection itself: no read of the pool
        // and no writer round trip per mid.
        self.writer
            .run(move |conn| {
                let mut out = Vec::new();
                for mid in &mids {
                    let found: Option<(String, String)> = row(
                        conn,
                        "select conversation_id, id from messages where external_id = ?",
                        params![mid],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    let Some((conversation_id, message_id)) = found else { continue };
                    if !mark_applied_in(conn, &format!("delivered:{mid}"), now)? {
                        continue;
                    }
                    let seq = bump_seq(conn, &conversation_id, now)?;
                    let kind = EventKind::Delivery {
                        message_id,
                        channel: Channel::Messenger,
                        state: DeliveryState::Delivered,
                        detail: None,
                    };
                    let event = insert_event(conn, &conversation_id, seq, now, kind)?;
                    out.push((conversation_id, event));
                }
                Ok(out)
            })
            .await
    }

    async fn messenger_read(&self, contact_id: &str, watermark: i64) -> StoreResult<Option<(String, Event)>> {
        let Some((conversation_id, Some(seq))) = self.reads().messenger_read_up_to(contact_id, watermark).await? else {
            return Ok(None);
        };
        Ok(self.mark_read(&conversation_id, Party::Visitor, seq_of(seq)).await?.map(|event| (conversation_id, event)))
    }

    async fn recent_messages(&self, conversation_id: &str, limit: i64) -> StoreResult<Vec<RecentMessage>> {
        self.reads().recent_messages(conversation_id, limit).await
    }

    async fn oldest_site_id(&self) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("select id from sites order by created_at limit 1").fetch_optional(&self.pool).await?)
    }

    async fn mark_webhooks_processed(&self, done: &[(i64, Option<String>)]) -> StoreResult<()> {
        if done.is_empty() {
            return Ok(());
        }
        let (now, done) = (self.now(), done.to_vec());
        // One job: the statement is cached, each run costs microseconds on the writer thread.
        self.writer
            .run(move |conn| {
                for (id, error) in &done {
                    exec(
                        conn,
                        "update webhook_deliveries set processed_at = ?, error = ? where id = ?",
                        params![now, error, id],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn intake_lookup(&self, psids: &[String], mids: &[String], codes: &[String]) -> StoreResult<IntakeLookup> {
        let now = self.now();
        let (psids, mids, codes) = (psids.to_vec(), mids.to_vec(), codes.to_vec());
        // On the write connection, a job of its own: each lookup is one cached statement run (microseconds on the
        // writer thread), where a read of the pool per event was a hop to a connection thread and back.
        self.writer
            .run(move |conn| {
                let mut found = IntakeLookup::default();
                let by_psid = format!("select {CONTACT_COLUMNS} from contacts where psid = ?");
                for psid in psids {
                    if let Some(contact) = row(conn, &by_psid, params![psid], contact_row)? {
                        found.contacts.insert(psid, contact);
                    }
                }
                for mid in mids {
                    if row(conn, "select 1 from messages where external_id = ?", params![mid], |_| Ok(()))?.is_some() {
                        found.stored_mids.insert(mid);
                    }
                }
                for code in codes {
                    let live = row(
                        conn,
                        "select 1 from messenger_links where code = ? and used_at is null and expires_at > ? limit 1",
                        params![code, now],
                        |_| Ok(()),
                    )?;
                    if live.is_some() {
                        found.live_codes.insert(code);
                    }
                }
                Ok(found)
            })
            .await
    }
}

impl SqliteStore {
    async fn offer(&self, which: &str, id: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        let now = self.now();
        let (id, psid, key) = (id.to_owned(), psid.to_owned(), key.to_owned());
        // ?1 = nonce or code, ?2 = now, ?3 = psid, ?4 = offer expiry.
        let sql = format!(
            "update messenger_links set psid = ?3, offered_at = coalesce(offered_at, ?2), offer_expires_at = ?4
             where {which} and used_at is null and expires_at > ?2 and (psid is null or psid = ?3)
             returning nonce, contact_id, code, expires_at"
        );
        self.writer
            .run(move |conn| {
                if !mark_applied_in(conn, &key, now)? {
                    return Ok(OfferOutcome::Duplicate);
                }
                let offered = row(conn, &sql, params![id, now, psid, now.saturating_add(ttl_ms)], |r| {
                    Ok(LinkRow { nonce: r.get(0)?, contact_id: r.get(1)?, code: r.get(2)?, expires_at: r.get(3)? })
                })?;
                Ok(offered.map_or(OfferOutcome::Unavailable, OfferOutcome::Offered))
            })
            .await
    }

    async fn outbox_settle(
        &self,
        id: i64,
        status: &str,
        external_id: Option<&str>,
        detail: Option<&str>,
        state: DeliveryState,
    ) -> StoreResult<Option<(String, Event)>> {
        let now = self.now();
        let (status, external_id, detail) =
            (status.to_owned(), external_id.map(str::to_owned), detail.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let found: Option<(String, Option<String>)> = row(
                    conn,
                    "update outbox set status = ?, external_id = coalesce(?, external_id),
                        last_error = coalesce(?, last_error), updated_at = ?, lease_id = null, leased_until = null
                     where id = ? and status = 'pending' returning conversation_id, message_id",
                    params![status, external_id, detail, now, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                // No row: settled before. No message: a send that carries no conversation message (the recap),
                // nothing to log.
                let Some((conversation_id, Some(message_id))) = found else { return Ok(None) };
                if let Some(external_id) = &external_id {
                    exec(
                        conn,
                        "update messages set external_id = coalesce(external_id, ?) where id = ?",
                        params![external_id, message_id],
                    )?;
                }
                let seq = bump_seq(conn, &conversation_id, now)?;
                let kind = EventKind::Delivery { message_id, channel: Channel::Messenger, state, detail };
                let event = insert_event(conn, &conversation_id, seq, now, kind)?;
                Ok(Some((conversation_id, event)))
            })
            .await
    }
}

/// The statement that leases the heads [`OUTBOX_ELIGIBLE_HEADS`] finds, longest waiting first (one write for all
/// of them).
fn lease_sql() -> String {
    format!(
        "update outbox set lease_id = :lease || ':' || id, leased_until = :until, updated_at = :now
         where id in (select id from ({OUTBOX_ELIGIBLE_HEADS}) order by at, id limit :limit)
         returning id, conversation_id, message_id, psid, body, messaging_type, attempts, last_error, lease_id"
    )
}

/// Records an applied-key inside a transaction; `false` if it was recorded before.
fn mark_applied_in(conn: &Connection, key: &str, now: i64) -> StoreResult<bool> {
    let inserted = exec(
        conn,
        "insert into webhook_applied (key, created_at) values (?, ?) on conflict do nothing",
        params![key, now],
    )?;
    Ok(inserted == 1)
}

/// Binds a PSID to a contact (moving it off any other contact) and logs the link in the contact's conversation.
fn bind_in(
    conn: &Connection,
    contact_id: &str,
    psid: &str,
    name: Option<String>,
    now: i64,
) -> StoreResult<Option<(String, Event)>> {
    exec(conn, "update contacts set psid = null where psid = ? and id <> ?", params![psid, contact_id])?;
    exec(
        conn,
        "update contacts set psid = ?1, messenger_linked_at = ?2, updated_at = ?2 where id = ?3",
        params![psid, now, contact_id],
    )?;
    // A visitor may continue on Messenger before writing anything: the conversation starts with the link.
    exec(
        conn,
        "insert into conversations (id, site_id, contact_id, status, last_activity_at, created_at, updated_at)
         select ?1, site_id, id, 'open', ?2, ?2, ?2 from contacts where id = ?3 on conflict(contact_id) do nothing",
        params![new_id(), now, contact_id],
    )?;
    let conversation: Option<String> =
        row(conn, "select id from conversations where contact_id = ?", params![contact_id], |r| r.get(0))?;
    Ok(match conversation {
        Some(conversation_id) => {
            let seq = bump_seq(conn, &conversation_id, now)?;
            let kind = EventKind::Channel { channel: Channel::Messenger, linked: true, name };
            let event = insert_event(conn, &conversation_id, seq, now, kind)?;
            Some((conversation_id, event))
        }
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::lease_sql;
    use crate::clock::Clock;
    use crate::store::MessengerStore;
    use crate::store::sqlite::SqliteStore;

    /// 4,000 pending sends of 200 customers (20 each, queued round robin): leasing a few heads runs a few hundred
    /// SQLite VM steps, not a scan of every pending send with a head test for each (about 200,000 steps before,
    /// 15 ms of the writer for every lease), and the heads come longest waiting first, busy customers skipped.
    #[tokio::test]
    async fn leasing_heads_reads_few_rows_however_many_sends_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("o.db").display());
        let store = SqliteStore::connect(&url, 2, Clock::system()).await.expect("opens");
        store
            .writer
            .run(|conn| {
                conn.execute_batch(
                    "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at)
                        values ('s', 's', 'S', '[]', '', 0, 0);
                     insert into contacts (id, site_id, label, created_at, updated_at) values ('k', 's', 'K', 0, 0);
                     insert into conversations (id, site_id, contact_id, status, last_activity_at, created_at,
                        updated_at) values ('c', 's', 'k', 'open', 0, 0, 0);",
                )?;
                let mut insert = conn.prepare(
                    "insert into outbox (conversation_id, psid, body, messaging_type, next_attempt_at, created_at,
                        updated_at) values ('c', ?1, 'hi', 'RESPONSE', ?2, 0, 0)",
                )?;
                for n in 0..4000_i64 {
                    insert.execute(rusqlite::params![format!("p{}", n % 200), 1000 + n])?;
                }
                Ok(())
            })
            .await
            .expect("sends queued");
        let leased = store.lease_outbox_heads(10_000, 60_000, 5_000, 3, &["p0".into()]).await.expect("leased");
        let psids: Vec<&str> = leased.iter().map(|r| r.psid.as_str()).collect();
        assert_eq!(psids, ["p1", "p2", "p3"], "the longest waiting heads, the busy customer skipped");
        let steps = store
            .writer
            .run(|conn| Ok(conn.prepare_cached(&lease_sql())?.get_status(StatementStatus::VmStep)))
            .await
            .expect("the cached lease statement");
        println!("leasing 3 heads of 4,000 pending sends: {steps} VM steps");
        assert!(steps > 0, "the counter counts the lease that ran");
        assert!(steps < 5_000, "{steps} VM steps to lease 3 heads of 4,000 pending sends");
        // Leased heads wait for their lease: the next lease takes the next customers.
        let next = store.lease_outbox_heads(10_000, 60_000, 5_000, 2, &[]).await.expect("leased");
        assert_eq!(next.iter().map(|r| r.psid.as_str()).collect::<Vec<_>>(), ["p0", "p4"]);
        let eligible = store.next_outbox_eligible(5_000, &[]).await.expect("next");
        assert_eq!(eligible, Some(1005), "the head of p5 waits longest among those not leased");
    }
}
