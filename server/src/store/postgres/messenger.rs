//! Messenger state: PSID identities, link tokens, raw webhook deliveries, the send outbox and its delivery states.

use protocol::{Channel, DeliveryState, Event, EventKind, Party};

use async_trait::async_trait;

use super::PgStore;
use super::conversations::{bump_seq, insert_event, seq_of};
use crate::messenger::send_api::MessagingType;
use crate::store::models::{Contact, LinkRow, OutboxRow, QuarantinedDelivery, RecentMessage};
use crate::store::reads::CONTACT_COLUMNS;
use crate::store::{
    Accepted, ConversationStore, IntakeLookup, MAX_LIVE_LINKS, MessengerStore, OfferOutcome, StoreError, StoreResult,
    WEBHOOK_ROWS_PER_STATEMENT, new_id,
};

/// `o` is the oldest pending send of its PSID.
const OUTBOX_HEAD: &str =
    "o.status = 'pending' and o.id = (select min(p.id) from outbox p where p.psid = o.psid and p.status = 'pending')";

/// When `o` may be leased: at its next attempt, or for a row whose lease was never settled (a crash, a stop, a
/// failed settle) `reconcile` ms (a bind parameter) after that lease ran out, once our echo had time to settle it.
fn outbox_eligible_at(reconcile: &str) -> String {
    format!(
        "(case when o.lease_id is null then o.next_attempt_at else greatest(o.next_attempt_at, o.leased_until + {reconcile}) end)"
    )
}

#[async_trait]
impl MessengerStore for PgStore {
    async fn contact_by_psid(&self, psid: &str) -> StoreResult<Option<Contact>> {
        self.reads().contact_by_psid(psid).await
    }

    async fn create_messenger_contact(&self, site_id: &str, psid: &str, label: &str) -> StoreResult<Contact> {
        let now = self.now();
        let id = new_id();
        sqlx::query(
            "insert into contacts (id, site_id, label, psid, messenger_linked_at, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
        )
        .bind(&id)
        .bind(site_id)
        .bind(label)
        .bind(psid)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
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
        sqlx::query(
            "update contacts set display_name = coalesce($1, display_name), avatar_id = coalesce($2, avatar_id),
                updated_at = $3 where id = $4",
        )
        .bind(name)
        .bind(avatar_id)
        .bind(self.now())
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_messenger_action(&self, contact_id: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "update contacts set messenger_last_action_at = greatest(coalesce(messenger_last_action_at, 0), $1) where id = $2",
        )
        .bind(at)
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_link(&self, nonce: &str, contact_id: &str, code: &str, expires_at: i64) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from messenger_links where greatest(expires_at, coalesce(offer_expires_at, 0)) <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "delete from messenger_links where contact_id = $1 and used_at is null and nonce not in
                (select nonce from messenger_links where contact_id = $2 and used_at is null
                 order by created_at desc, nonce desc limit $3)",
        )
        .bind(contact_id)
        .bind(contact_id)
        .bind(MAX_LIVE_LINKS - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into messenger_links (nonce, contact_id, code, expires_at, created_at) values ($1, $2, $3, $4, $5)",
        )
        .bind(nonce)
        .bind(contact_id)
        .bind(code)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn offer_link(&self, nonce: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.offer("nonce = $1", nonce, psid, key, ttl_ms).await
    }

    async fn offer_code(&self, code: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        self.offer(
            "nonce = (select nonce from messenger_links where code = $1 and used_at is null and expires_at > $2
                      and (psid is null or psid = $3) order by created_at desc limit 1)",
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
        let mut tx = self.pool.begin().await?;
        let contact_id: Option<String> = sqlx::query_scalar(
            "update messenger_links set used_at = $1 where nonce = $2 and psid = $3 and used_at is null
                and offer_expires_at > $4 returning contact_id",
        )
        .bind(now)
        .bind(nonce)
        .bind(psid)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(contact_id) = contact_id else { return Ok(None) };
        let event = bind_in(&mut tx, &contact_id, psid, name, now).await?;
        sqlx::query(
            "update contacts set messenger_last_action_at = greatest(coalesce(messenger_last_action_at, 0), $1) where id = $2",
        )
        .bind(action_at)
        .bind(&contact_id)
        .execute(&mut *tx)
        .await?;
        if let (Some(recap), Some((conversation_id, _))) = (recap, &event) {
            sqlx::query(
                "insert into outbox (conversation_id, psid, body, messaging_type, next_attempt_at, created_at, updated_at)
                 values ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(conversation_id)
            .bind(psid)
            .bind(recap)
            .bind(MessagingType::Response.as_stored())
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Accepted { contact_id, event }))
    }

    async fn refuse_link(&self, nonce: &str, psid: &str) -> StoreResult<bool> {
        let now = self.now();
        let done = sqlx::query(
            "update messenger_links set used_at = $1, refused_at = $2 where nonce = $3 and psid = $4 and used_at is null",
        )
        .bind(now)
        .bind(now)
        .bind(nonce)
        .bind(psid)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn unbind_psid(&self, contact_id: &str) -> StoreResult<Option<(String, Event)>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let psid: Option<Option<String>> =
            sqlx::query_scalar("update contacts set psid = null, updated_at = $1 where id = $2 returning psid")
                .bind(now)
                .bind(contact_id)
                .fetch_optional(&mut *tx)
                .await?;
        let conversation: Option<String> = sqlx::query_scalar("select id from conversations where contact_id = $1")
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?;
        let event = match (psid, conversation) {
            (Some(_), Some(conversation_id)) => {
                sqlx::query(
                    "update outbox set status = 'failed', last_error = 'unlinked', updated_at = $1
                             where conversation_id = $2 and status = 'pending'",
                )
                .bind(now)
                .bind(&conversation_id)
                .execute(&mut *tx)
                .await?;
                let seq = bump_seq(&mut tx, &conversation_id, now).await?;
                let kind = EventKind::Channel { channel: Channel::Messenger, linked: false, name: None };
                Some((conversation_id.clone(), insert_event(&mut tx, &conversation_id, seq, now, kind).await?))
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(event)
    }

    async fn insert_webhook_delivery(&self, body: &[u8]) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("insert into webhook_deliveries (body, received_at) values ($1, $2) returning id")
            .bind(body)
            .bind(self.now())
            .fetch_one(&self.pool)
            .await?)
    }

    async fn insert_webhook_deliveries(&self, bodies: &[&[u8]]) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        for chunk in bodies.chunks(WEBHOOK_ROWS_PER_STATEMENT) {
            let mut query =
                sqlx::QueryBuilder::<sqlx::Postgres>::new("insert into webhook_deliveries (body, received_at) ");
            query.push_values(chunk, |mut row, body| {
                row.push_bind(*body).push_bind(now);
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
        let quarantined: Option<Option<i64>> = sqlx::query_scalar(
            "update webhook_deliveries set attempts = attempts + 1, error = $1,
                quarantined_at = case when attempts + 1 >= $2 then $3 end
             where id = $4 and processed_at is null returning quarantined_at",
        )
        .bind(error)
        .bind(i64::from(max_attempts))
        .bind(self.now())
        .bind(id)
        .fetch_optional(&self.pool)
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
        Ok(sqlx::query(
            "update webhook_deliveries set quarantined_at = null, attempts = 0, error = null
             where quarantined_at is not null and processed_at is null and ($1::bigint is null or id = $1)",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn mark_webhook_processed(&self, id: i64, error: Option<&str>) -> StoreResult<()> {
        sqlx::query("update webhook_deliveries set processed_at = $1, error = $2 where id = $3")
            .bind(self.now())
            .bind(error)
            .bind(id)
            .execute(&self.pool)
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
        let eligible_at = outbox_eligible_at("$4");
        Ok(sqlx::query_as::<_, OutboxRow>(&format!(
            "update outbox set lease_id = $1 || ':' || id, leased_until = $2, updated_at = $3
             where id in (select o.id from outbox o where {OUTBOX_HEAD} and {eligible_at} <= $3
                            and o.psid <> all($5)
                          order by {eligible_at}, o.id limit $6
                          for update of o skip locked)
             returning id, conversation_id, message_id, psid, body, messaging_type, attempts, last_error, lease_id"
        ))
        .bind(&lease)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .bind(reconcile_ms)
        .bind(busy)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn next_outbox_eligible(&self, reconcile_ms: i64, busy: &[String]) -> StoreResult<Option<i64>> {
        let eligible_at = outbox_eligible_at("$1");
        Ok(sqlx::query_scalar(&format!(
            "select min({eligible_at}) from outbox o
             where {OUTBOX_HEAD} and o.psid <> all($2)"
        ))
        .bind(reconcile_ms)
        .bind(busy)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn outbox_sent(&self, id: i64, external_id: &str) -> StoreResult<Option<(String, Event)>> {
        self.outbox_settle(id, "sent", Some(external_id), None, DeliveryState::Sent).await
    }

    async fn outbox_failed(&self, id: i64, detail: &str, state: DeliveryState) -> StoreResult<Option<(String, Event)>> {
        self.outbox_settle(id, "failed", None, Some(detail), state).await
    }

    async fn outbox_retry(&self, id: i64, lease_id: &str, next_attempt_at: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "update outbox set attempts = attempts + 1, next_attempt_at = $1, last_error = $2, updated_at = $3,
                lease_id = null, leased_until = null
             where id = $4 and status = 'pending' and lease_id = $5",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(self.now())
        .bind(id)
        .bind(lease_id)
        .execute(&self.pool)
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
        let mut out = Vec::new();
        for mid in mids {
            let row: Option<(String, String)> =
                sqlx::query_as("select conversation_id, id from messages where external_id = $1")
                    .bind(mid)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some((conversation_id, message_id)) = row else { continue };
            let now = self.now();
            let mut tx = self.pool.begin().await?;
            if !mark_applied_in(&mut tx, &format!("delivered:{mid}"), now).await? {
                continue;
            }
            let seq = bump_seq(&mut tx, &conversation_id, now).await?;
            let kind = EventKind::Delivery {
                message_id,
                channel: Channel::Messenger,
                state: DeliveryState::Delivered,
                detail: None,
            };
            let event = insert_event(&mut tx, &conversation_id, seq, now, kind).await?;
            tx.commit().await?;
            out.push((conversation_id, event));
        }
        Ok(out)
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
        let ids: Vec<i64> = done.iter().map(|(id, _)| *id).collect();
        let errors: Vec<Option<String>> = done.iter().map(|(_, error)| error.clone()).collect();
        // One statement (so one transaction) for the whole batch.
        sqlx::query(
            "update webhook_deliveries w set processed_at = $1, error = d.error
             from unnest($2::bigint[], $3::text[]) as d(id, error) where w.id = d.id",
        )
        .bind(self.now())
        .bind(ids)
        .bind(errors)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn intake_lookup(&self, psids: &[String], mids: &[String], codes: &[String]) -> StoreResult<IntakeLookup> {
        // Three statements for the whole wave (no per-event round trips).
        let contacts: Vec<Contact> =
            sqlx::query_as(&format!("select {CONTACT_COLUMNS} from contacts where psid = any($1)"))
                .bind(psids)
                .fetch_all(&self.pool)
                .await?;
        let stored: Vec<String> = sqlx::query_scalar("select external_id from messages where external_id = any($1)")
            .bind(mids)
            .fetch_all(&self.pool)
            .await?;
        let live: Vec<String> = sqlx::query_scalar(
            "select distinct code from messenger_links where code = any($1) and used_at is null and expires_at > $2",
        )
        .bind(codes)
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        Ok(IntakeLookup {
            contacts: contacts.into_iter().filter_map(|c| Some((c.psid.clone()?, c))).collect(),
            stored_mids: stored.into_iter().collect(),
            live_codes: live.into_iter().collect(),
        })
    }
}

impl PgStore {
    async fn offer(&self, which: &str, id: &str, psid: &str, key: &str, ttl_ms: i64) -> StoreResult<OfferOutcome> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !mark_applied_in(&mut tx, key, now).await? {
            return Ok(OfferOutcome::Duplicate);
        }
        // $1 = nonce or code, $2 = now, $3 = psid, $4 = offer expiry.
        let row = sqlx::query_as::<_, LinkRow>(&format!(
            "update messenger_links set psid = $3, offered_at = coalesce(offered_at, $2), offer_expires_at = $4
             where {which} and used_at is null and expires_at > $2 and (psid is null or psid = $3)
             returning nonce, contact_id, code, expires_at"
        ))
        .bind(id)
        .bind(now)
        .bind(psid)
        .bind(now.saturating_add(ttl_ms))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map_or(OfferOutcome::Unavailable, OfferOutcome::Offered))
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
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "update outbox set status = $1, external_id = coalesce($2, external_id), last_error = coalesce($3, last_error),
                updated_at = $4, lease_id = null, leased_until = null
             where id = $5 and status = 'pending' returning conversation_id, message_id",
        )
        .bind(status)
        .bind(external_id)
        .bind(detail)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((conversation_id, message_id)) = row else { return Ok(None) };
        let Some(message_id) = message_id else {
            // A send that carries no conversation message (the recap): nothing to log.
            tx.commit().await?;
            return Ok(None);
        };
        if let Some(external_id) = external_id {
            sqlx::query("update messages set external_id = coalesce(external_id, $1) where id = $2")
                .bind(external_id)
                .bind(&message_id)
                .execute(&mut *tx)
                .await?;
        }
        let seq = bump_seq(&mut tx, &conversation_id, now).await?;
        let kind =
            EventKind::Delivery { message_id, channel: Channel::Messenger, state, detail: detail.map(str::to_string) };
        let event = insert_event(&mut tx, &conversation_id, seq, now, kind).await?;
        tx.commit().await?;
        Ok(Some((conversation_id, event)))
    }
}

/// Records an applied-key inside a transaction; `false` if it was recorded before.
async fn mark_applied_in(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, key: &str, now: i64) -> StoreResult<bool> {
    let inserted = sqlx::query("insert into webhook_applied (key, created_at) values ($1, $2) on conflict do nothing")
        .bind(key)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Binds a PSID to a contact (moving it off any other contact) and logs the link in the contact's conversation.
async fn bind_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    contact_id: &str,
    psid: &str,
    name: Option<String>,
    now: i64,
) -> StoreResult<Option<(String, Event)>> {
    sqlx::query("update contacts set psid = null where psid = $1 and id <> $2")
        .bind(psid)
        .bind(contact_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("update contacts set psid = $1, messenger_linked_at = $2, updated_at = $3 where id = $4")
        .bind(psid)
        .bind(now)
        .bind(now)
        .bind(contact_id)
        .execute(&mut **tx)
        .await?;
    // A visitor may continue on Messenger before writing anything: the conversation starts with the link.
    sqlx::query(
        "insert into conversations (id, site_id, contact_id, status, last_activity_at, created_at, updated_at)
         select $1, site_id, id, 'open', $2, $3, $4 from contacts where id = $5 on conflict(contact_id) do nothing",
    )
    .bind(new_id())
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(contact_id)
    .execute(&mut **tx)
    .await?;
    let conversation: Option<String> = sqlx::query_scalar("select id from conversations where contact_id = $1")
        .bind(contact_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match conversation {
        Some(conversation_id) => {
            let seq = bump_seq(tx, &conversation_id, now).await?;
            let kind = EventKind::Channel { channel: Channel::Messenger, linked: true, name };
            Some((conversation_id.clone(), insert_event(tx, &conversation_id, seq, now, kind).await?))
        }
        None => None,
    })
}
