//! Applying webhook deliveries: the spool → `webhook_deliveries` → conversation changes.
//!
//! One worker drains the spool, stores each body raw, then applies all waiting deliveries together: events are
//! gathered from every `entry[]` (`messaging[]` and `standby[]`), sorted by timestamp (stable, so one customer's
//! events apply in the order they happened even when Meta delivered them out of order), and applied one by one.
//! Every application is idempotent: messages by `mid`, postbacks and referrals by an applied-key, deliveries and
//! reads by watermark, so a redelivered payload changes nothing.

use std::sync::Arc;
use std::time::Duration;

use protocol::{Attachment, Channel};

use super::channel::Messenger;
use super::graph_types::{Envelope, Messaging};
use super::link;
use crate::services::{PostInput, Poster, ServiceError};
use crate::store::models::Contact;
use crate::store::now_ms;

/// The app id Meta uses for messages sent from the Page's own inbox (Business Suite).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

/// Largest attachment downloaded, in bytes.
const MAX_ATTACHMENT: usize = 25 * 1024 * 1024;

/// Runs forever: waits for spooled deliveries, stores and applies them.
pub async fn run(messenger: Arc<Messenger>) {
    loop {
        if let Err(e) = drain(&messenger).await {
            tracing::error!(error = ?e, "webhook intake failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::select! {
            _ = messenger.intake_wake.notified() => {
                // Let a burst (and any reordered stragglers) arrive, then apply them together in time order.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Moves spooled files into the database and applies every unprocessed delivery.
pub async fn drain(messenger: &Messenger) -> anyhow::Result<()> {
    let store = &messenger.conversations.store;
    for path in messenger.spool.pending().await? {
        let body = tokio::fs::read(&path).await?;
        store.insert_webhook_delivery(&body).await?;
        tokio::fs::remove_file(&path).await?;
    }
    loop {
        let deliveries = store.unprocessed_webhook_deliveries(200).await?;
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut events: Vec<(i64, String, Messaging)> = Vec::new();
        let mut errors: Vec<(i64, String)> = Vec::new();
        for (id, body) in &deliveries {
            match serde_json::from_slice::<Envelope>(body) {
                Ok(envelope) if envelope.object == "page" => {
                    for entry in envelope.entry {
                        let page = entry.id.clone();
                        events.extend(entry.messaging.into_iter().chain(entry.standby).map(|m| (*id, page.clone(), m)));
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push((*id, format!("unreadable payload: {e}"))),
            }
        }
        events.sort_by_key(|(_, _, m)| m.timestamp);
        for (delivery, page, event) in events {
            match apply(messenger, &page, event).await {
                Ok(()) => {}
                // An event that can never apply (e.g. no site to file it under) is recorded and skipped, so it
                // cannot hold up the events behind it.
                Err(ServiceError::Invalid(why)) => {
                    tracing::warn!(reason = why, "a webhook event was not applied");
                    errors.push((delivery, why.to_string()));
                }
                // Transient failures (database) stop the batch; it is retried, and the events already applied are
                // skipped on the second pass by their idempotency keys.
                Err(e) => return Err(e.into()),
            }
        }
        for (id, _) in &deliveries {
            let error = errors.iter().find(|(e, _)| e == id).map(|(_, m)| m.as_str());
            store.mark_webhook_processed(*id, error).await?;
        }
    }
}

async fn apply(messenger: &Messenger, page: &str, event: Messaging) -> Result<(), ServiceError> {
    if !messenger.settings.page_id.is_empty() && page != messenger.settings.page_id {
        tracing::debug!("ignoring an event for another page");
        return Ok(());
    }
    let store = &messenger.conversations.store;
    if let Some(message) = &event.message
        && message.is_echo
    {
        let Some(psid) = event.recipient.as_ref().map(|p| p.id.clone()) else { return Ok(()) };
        return apply_echo(messenger, &psid, message).await;
    }
    let Some(psid) = event.sender.as_ref().map(|p| p.id.clone()) else { return Ok(()) };

    if let Some(message) = &event.message {
        let Some(mid) = message.mid.clone() else { return Ok(()) };
        let text = message.text.clone().unwrap_or_default();
        let mut contact = store.contact_by_psid(&psid).await?;
        // A customer sending the code shown on the website links this thread to that conversation (also when the
        // thread already exists on its own, e.g. after a Get Started whose referral Android dropped).
        for code in link::short_code_candidates(&text) {
            if let Some(row) = store.redeem_code(&code, &psid).await? {
                link_contact(messenger, &row.contact_id, &psid, event.timestamp).await?;
                send_recap(messenger, &row.contact_id, &psid).await?;
                contact = store.contact(&row.contact_id).await?;
                break;
            }
        }
        let contact = match contact {
            Some(c) => c,
            None => new_messenger_contact(messenger, &psid).await?,
        };
        let action_at = Some(event.timestamp.min(now_ms()));
        return post_from_messenger(messenger, &contact, Poster::Visitor, mid, message, action_at).await;
    }

    if let Some(postback) = &event.postback {
        let key = match &postback.mid {
            Some(mid) => format!("postback:{mid}"),
            None => format!("postback:{psid}:{}", event.timestamp),
        };
        if !store.mark_applied(&key).await? {
            return Ok(());
        }
        let reference = postback.referral.as_ref().and_then(|r| r.reference.clone());
        return apply_referral(messenger, &psid, reference.as_deref(), event.timestamp).await;
    }

    if let Some(referral) = &event.referral {
        let reference = referral.reference.clone().unwrap_or_default();
        if !store.mark_applied(&format!("referral:{psid}:{}:{reference}", event.timestamp)).await? {
            return Ok(());
        }
        return apply_referral(messenger, &psid, Some(&reference), event.timestamp).await;
    }

    if let Some(delivery) = &event.delivery {
        let mids = if delivery.mids.is_empty() {
            store.sent_mids_until(&psid, delivery.watermark).await?
        } else {
            delivery.mids.clone()
        };
        for (conversation_id, event) in store.messenger_delivered(&mids).await? {
            messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
        }
        return Ok(());
    }

    if let Some(read) = &event.read
        && let Some(contact) = store.contact_by_psid(&psid).await?
        && let Some((conversation_id, event)) = store.messenger_read(&contact.id, read.watermark).await?
    {
        messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
    }
    Ok(())
}

/// Our own sends come back as echoes (reconcile them); echoes from other apps are replies written elsewhere.
async fn apply_echo(
    messenger: &Messenger,
    psid: &str,
    message: &super::graph_types::Message,
) -> Result<(), ServiceError> {
    let store = &messenger.conversations.store;
    let Some(mid) = message.mid.clone() else { return Ok(()) };
    let ours = message.app_id.as_deref() == Some(messenger.settings.app_id.as_str());
    if ours {
        if let Some(message_id) = &message.metadata
            && let Some(outbox_id) = store.outbox_for_message(message_id).await?
            && let Some((conversation_id, event)) = store.outbox_sent(outbox_id, &mid).await?
        {
            messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
        }
        return Ok(());
    }
    if store.message_by_external_id(&mid).await?.is_some() {
        return Ok(());
    }
    let contact = match store.contact_by_psid(psid).await? {
        Some(c) => c,
        None => new_messenger_contact(messenger, psid).await?,
    };
    let name = if message.app_id.as_deref() == Some(PAGE_INBOX_APP_ID) { "Page inbox" } else { "Page" };
    post_from_messenger(messenger, &contact, Poster::Page { name }, mid, message, None).await
}

/// Posts a message that arrived from Messenger (the customer's, or one the Page sent from elsewhere), keyed by
/// its `mid` so a redelivery is stored once.
async fn post_from_messenger(
    messenger: &Messenger,
    contact: &Contact,
    poster: Poster<'_>,
    mid: String,
    message: &super::graph_types::Message,
    messenger_action_at: Option<i64>,
) -> Result<(), ServiceError> {
    let text = message.text.clone().unwrap_or_default();
    let attachments = download_attachments(messenger, &message.attachments).await;
    let body = if text.is_empty() && attachments.is_empty() { "[unsupported message]".to_string() } else { text };
    let client_id = format!("fb-{}", short_hash(&mid));
    messenger
        .conversations
        .post(PostInput {
            contact_id: &contact.id,
            site_id: &contact.site_id,
            poster,
            client_id: &client_id,
            body: body.trim(),
            channel: Channel::Messenger,
            external_id: Some(mid),
            attachments,
            messenger_action_at,
        })
        .await?;
    Ok(())
}

/// A Get Started tap or an m.me click: reopens the window and, with a valid ref, links the thread.
async fn apply_referral(
    messenger: &Messenger,
    psid: &str,
    reference: Option<&str>,
    timestamp: i64,
) -> Result<(), ServiceError> {
    let store = &messenger.conversations.store;
    let now_secs = u32::try_from(now_ms() / 1000).unwrap_or(u32::MAX);
    let linked = match reference.map(|r| link::verify(messenger.link_key(), r, now_secs)) {
        Some(Ok(token)) => match store.redeem_link(&token.nonce, psid).await? {
            Some(row) => {
                link_contact(messenger, &row.contact_id, psid, timestamp).await?;
                send_recap(messenger, &row.contact_id, psid).await?;
                true
            }
            None => {
                tracing::info!("a used or expired Messenger link was presented; nothing bound");
                false
            }
        },
        Some(Err(e)) => {
            tracing::info!(reason = %e, "a Messenger ref was refused");
            false
        }
        None => false,
    };
    if !linked {
        let contact = match store.contact_by_psid(psid).await? {
            Some(c) => c,
            None => new_messenger_contact(messenger, psid).await?,
        };
        store.record_messenger_action(&contact.id, timestamp.min(now_ms())).await?;
        messenger.conversations.publish_contact_summary(&contact.id).await?;
    }
    Ok(())
}

/// Binds the PSID to the contact, fetching the customer's name, and tells everyone.
async fn link_contact(messenger: &Messenger, contact_id: &str, psid: &str, timestamp: i64) -> Result<(), ServiceError> {
    let store = &messenger.conversations.store;
    let profile = fetch_profile(messenger, contact_id, psid).await;
    if let Some((conversation_id, event)) = store.bind_psid(contact_id, psid, profile.clone()).await? {
        store.record_messenger_action(contact_id, timestamp.min(now_ms())).await?;
        messenger.conversations.publish_events(&conversation_id, vec![event]).await?;
    } else {
        store.record_messenger_action(contact_id, timestamp.min(now_ms())).await?;
    }
    Ok(())
}

/// Sends the customer a short recap of the web conversation, so the Messenger thread makes sense.
async fn send_recap(messenger: &Messenger, contact_id: &str, psid: &str) -> Result<(), ServiceError> {
    let store = &messenger.conversations.store;
    let Some(conversation) = store.conversation_for_contact(contact_id).await? else { return Ok(()) };
    let recent = store.recent_messages(&conversation.id, 6).await?;
    if recent.is_empty() {
        return Ok(());
    }
    let mut text = String::from("Here's where we left off on the website:\n");
    for (who, body) in recent {
        let line: String = body.chars().take(200).collect();
        text.push_str(&format!("\n{who}: {line}"));
    }
    let text: String = text.chars().take(1900).collect();
    store.enqueue_outbox(&conversation.id, psid, &text).await?;
    messenger.conversations.outbox_wake.notify_one();
    Ok(())
}

async fn new_messenger_contact(messenger: &Messenger, psid: &str) -> Result<Contact, ServiceError> {
    let store = &messenger.conversations.store;
    let site_id = match store.site_by_key(&messenger.settings.site_key).await? {
        Some(site) => site.id,
        None => {
            store.oldest_site_id().await?.ok_or(ServiceError::Invalid("no site exists for Messenger conversations"))?
        }
    };
    // The last four characters (not bytes: a PSID from the wire may hold any Unicode).
    let tail = psid.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    let label = format!("Messenger {}", &psid[tail..]);
    let contact = store.create_messenger_contact(&site_id, psid, &label).await?;
    fetch_profile(messenger, &contact.id, psid).await;
    Ok(store.contact(&contact.id).await?.unwrap_or(contact))
}

/// Fetches and caches the customer's name and picture once; returns the first name.
async fn fetch_profile(messenger: &Messenger, contact_id: &str, psid: &str) -> Option<String> {
    let store = &messenger.conversations.store;
    if let Ok(Some(contact)) = store.contact(contact_id).await
        && contact.psid.as_deref() == Some(psid)
        && let Some(name) = contact.display_name
    {
        return name.split(' ').next().map(str::to_string);
    }
    let profile = match messenger.graph.profile(psid).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no Messenger profile");
            return None;
        }
    };
    let full = [profile.first_name.as_deref(), profile.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let avatar = match &profile.profile_pic {
        // Picture URLs expire: keep the image, not the URL.
        Some(url) => match messenger.graph.download(url, 2 * 1024 * 1024).await {
            Ok((bytes, content_type)) => store
                .insert_attachment(None, content_type.as_deref().unwrap_or("image/jpeg"), Some("profile"), &bytes)
                .await
                .ok(),
            Err(e) => {
                tracing::info!(error = %e, "profile picture not downloaded");
                None
            }
        },
        None => None,
    };
    let name = (!full.is_empty()).then_some(full);
    if let Err(e) = store.set_contact_profile(contact_id, name.as_deref(), avatar.as_deref()).await {
        tracing::warn!(error = ?e, "profile not stored");
    }
    profile.first_name
}

/// Downloads attachments right away (their URLs expire) and stores them; failures become a note in the text.
async fn download_attachments(
    messenger: &Messenger,
    attachments: &[super::graph_types::Attachment],
) -> Vec<Attachment> {
    let mut out = Vec::new();
    let mut seen_urls = std::collections::HashSet::new();
    for attachment in attachments {
        let Some(url) = attachment.payload.as_ref().and_then(|p| p.url.clone()) else { continue };
        if !seen_urls.insert(url.clone()) {
            continue;
        }
        let kind = match attachment.kind.as_str() {
            "image" | "sticker" => "image",
            "video" => "video",
            "audio" => "audio",
            _ => "file",
        };
        match messenger.graph.download(&url, MAX_ATTACHMENT).await {
            Ok((bytes, content_type)) => {
                let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
                let name = url.rsplit('/').next().and_then(|n| n.split('?').next()).map(str::to_string);
                match messenger
                    .conversations
                    .store
                    .insert_attachment(None, &content_type, name.as_deref(), &bytes)
                    .await
                {
                    Ok(id) => out.push(Attachment { url: format!("/attachments/{id}"), kind: kind.into(), name }),
                    Err(e) => tracing::warn!(error = ?e, "attachment not stored"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "attachment not downloaded"),
        }
    }
    out
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}
