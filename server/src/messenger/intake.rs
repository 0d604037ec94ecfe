//! Applying webhook deliveries: the spool → `webhook_deliveries` → conversation changes.
//!
//! One worker drains the spool, stores each body raw, then applies all waiting deliveries together: events are
//! gathered from every `entry[]` (`messaging[]` and `standby[]`), sorted by timestamp (stable, so one customer's
//! events apply in the order they happened even when Meta delivered them out of order), and applied one by one.
//! Every application is idempotent: messages by `mid`, link offers by an applied-key recorded in the same
//! transaction as the offer, acceptances by the link row itself, deliveries and reads by watermark, so a
//! redelivered payload changes nothing. A delivery that fails to apply (an error or even a panic) is retried with
//! growing delays and quarantined after `messenger.max_delivery_attempts` tries, so it cannot block the ones
//! behind it; `parley messenger quarantine` lists and replays quarantined deliveries.
//!
//! "Continue on Messenger" needs the Messenger side's consent: a ref or short code only *offers* the link to the
//! person who presented it, and the Page asks them in Messenger ("Yes, continue here" / "No"). Nothing from
//! Messenger reaches the web conversation before "Yes"; "No" or no answer within the link lifetime binds nothing.
//! Attachments are queued for [`super::media`] and downloaded off this path.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use protocol::{Attachment, Channel};

use super::channel::Messenger;
use super::graph_types::{Envelope, Messaging};
use super::{link, media};
use crate::sentences;
use crate::services::{PostInput, Poster, ServiceError};
use crate::store::OfferOutcome;
use crate::store::models::Contact;

/// The app id Meta uses for messages sent from the Page's own inbox (Business Suite).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

pub use crate::sentences::CONSENT_QUESTION;

/// Aborts a task when dropped: the download queue lives exactly as long as the intake that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before the next pass after `failures` failed ones in a row: 250 ms, doubling, at most 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << failures.saturating_sub(1).min(7))).min(Duration::from_secs(30))
}

/// Runs forever: waits for spooled deliveries, stores and applies them.
pub async fn run(messenger: Arc<Messenger>) {
    let _media = AbortOnDrop(tokio::spawn(media::run(Arc::clone(&messenger))));
    let mut failures = 0u32;
    loop {
        if let Err(e) = drain(&messenger).await {
            failures = failures.saturating_add(1);
            tracing::error!(error = ?e, "webhook intake failed; retrying");
            tokio::time::sleep(retry_delay(failures)).await;
            continue;
        }
        failures = 0;
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
    let store = messenger.conversations.messenger_rows();
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
            // A panic is a bug, but it must not take the intake down with it: it counts as a failed attempt.
            match AssertUnwindSafe(apply(messenger, &page, event)).catch_unwind().await {
                Ok(Ok(())) => {}
                // An event that can never apply (e.g. no site to file it under) is recorded and skipped, so it
                // cannot hold up the events behind it.
                Ok(Err(ServiceError::Invalid(why))) => {
                    tracing::warn!(reason = why, "a webhook event was not applied");
                    errors.push((delivery, why.to_string()));
                }
                // Transient failures (database) stop the batch; it is retried, and the events already applied are
                // skipped on the second pass by their idempotency keys. A delivery that keeps failing is
                // quarantined, so the ones behind it go on.
                Ok(Err(e)) => return Err(failed(messenger, delivery, &e.to_string()).await),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(failed(messenger, delivery, &format!("panicked: {what}")).await);
                }
            }
        }
        for (id, _) in &deliveries {
            let error = errors.iter().find(|(e, _)| e == id).map(|(_, m)| m.as_str());
            store.mark_webhook_processed(*id, error).await?;
        }
    }
}

/// Counts a failed attempt at a delivery (quarantining it at the limit) and returns the error for the caller.
async fn failed(messenger: &Messenger, delivery: i64, why: &str) -> anyhow::Error {
    let store = messenger.conversations.messenger_rows();
    match store.webhook_delivery_failed(delivery, why, messenger.settings.max_delivery_attempts).await {
        Ok(true) => tracing::error!(
            delivery,
            reason = why,
            "a webhook delivery kept failing and was quarantined (see `parley messenger quarantine list`)"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = ?e, "a failed attempt was not counted"),
    }
    anyhow::anyhow!("applying webhook delivery {delivery} failed: {why}")
}

async fn apply(messenger: &Messenger, page: &str, event: Messaging) -> Result<(), ServiceError> {
    if !messenger.settings.page_id.is_empty() && page != messenger.settings.page_id {
        tracing::debug!("ignoring an event for another page");
        return Ok(());
    }
    let store = messenger.conversations.messenger_rows();
    if let Some(message) = &event.message
        && message.is_echo
    {
        let Some(psid) = event.recipient.as_ref().map(|p| p.id.clone()) else { return Ok(()) };
        if psid.is_empty() {
            return Err(ServiceError::Invalid("an echo without a recipient id"));
        }
        return apply_echo(messenger, &psid, message).await;
    }
    let Some(psid) = event.sender.as_ref().map(|p| p.id.clone()) else { return Ok(()) };
    if psid.is_empty() {
        return Err(ServiceError::Invalid("an event without a sender id"));
    }
    let ttl_ms = i64::from(messenger.settings.link_ttl_secs.max(60)) * 1000;

    if let Some(message) = &event.message {
        let Some(mid) = message.mid.clone() else { return Ok(()) };
        // "Yes, continue here" / "No" answers an offer; it is not part of any conversation.
        if let Some((nonce, yes)) =
            message.quick_reply.as_ref().and_then(|q| q.payload.as_deref()).and_then(link::parse_consent)
        {
            return answer_offer(messenger, &psid, &nonce, yes, event.timestamp).await;
        }
        let text = message.text.clone().unwrap_or_default();
        // A customer sending the code shown on the website is asked whether to continue that conversation here
        // (also when the thread already exists on its own, e.g. after a Get Started whose referral Android dropped).
        for code in link::short_code_candidates(&text) {
            match store.offer_code(&code, &psid, &format!("code:{mid}:{code}"), ttl_ms).await? {
                OfferOutcome::Offered(row) => {
                    ask_consent(messenger, &psid, &row.nonce);
                    break;
                }
                OfferOutcome::Duplicate => break,
                OfferOutcome::Unavailable => {}
            }
        }
        // Until they say yes, what they write stays in a conversation of their own.
        let contact = match store.contact_by_psid(&psid).await? {
            Some(c) => c,
            None => new_messenger_contact(messenger, &psid).await?,
        };
        let action_at = Some(event.timestamp.min(messenger.conversations.clock().now_ms()));
        return post_from_messenger(messenger, &contact, Poster::Visitor, mid, message, action_at).await;
    }

    if let Some(postback) = &event.postback {
        let key = match &postback.mid {
            Some(mid) => format!("postback:{mid}"),
            None => format!("postback:{psid}:{}", event.timestamp),
        };
        let reference = postback.referral.as_ref().and_then(|r| r.reference.clone());
        return apply_referral(messenger, &psid, reference.as_deref(), event.timestamp, &key).await;
    }

    if let Some(referral) = &event.referral {
        let reference = referral.reference.clone().unwrap_or_default();
        let key = format!("referral:{psid}:{}:{reference}", event.timestamp);
        return apply_referral(messenger, &psid, Some(&reference), event.timestamp, &key).await;
    }

    if let Some(delivery) = &event.delivery {
        let mids = if delivery.mids.is_empty() {
            store.sent_mids_until(&psid, delivery.watermark).await?
        } else {
            delivery.mids.clone()
        };
        return messenger.conversations.messenger_delivered(&mids).await;
    }

    if let Some(read) = &event.read
        && let Some(contact) = store.contact_by_psid(&psid).await?
    {
        messenger.conversations.messenger_read(&contact.id, read.watermark).await?;
    }
    Ok(())
}

/// Our own sends come back as echoes (reconcile them); echoes from other apps are replies written elsewhere.
async fn apply_echo(
    messenger: &Messenger,
    psid: &str,
    message: &super::graph_types::Message,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let Some(mid) = message.mid.clone() else { return Ok(()) };
    let ours = message.app_id.as_deref() == Some(messenger.settings.app_id.as_str());
    if ours {
        if let Some(message_id) = &message.metadata
            && let Some(outbox_id) = store.outbox_for_message(message_id).await?
        {
            messenger.conversations.outbox_sent(outbox_id, &mid).await?;
        }
        // The echo may have settled the head of this customer's queue: the next send may go now.
        messenger.conversations.outbox_wake().notify_one();
        return Ok(());
    }
    if store.message_by_external_id(&mid).await?.is_some() {
        return Ok(());
    }
    let contact = match store.contact_by_psid(psid).await? {
        Some(c) => c,
        None => new_messenger_contact(messenger, psid).await?,
    };
    let name =
        if message.app_id.as_deref() == Some(PAGE_INBOX_APP_ID) { sentences::PAGE_INBOX } else { sentences::PAGE };
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
    // Dedupe before anything is queued for download: a redelivered message fetches nothing.
    if messenger.conversations.messenger_rows().message_by_external_id(&mid).await?.is_some() {
        return Ok(());
    }
    let text = message.text.clone().unwrap_or_default();
    let attachments = queue_attachments(messenger, &message.attachments).await?;
    let queued = !attachments.is_empty();
    let body =
        if text.is_empty() && attachments.is_empty() { sentences::UNSUPPORTED_MESSAGE.to_string() } else { text };
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
    if queued {
        messenger.media_wake.notify_one();
    }
    Ok(())
}

/// A Get Started tap or an m.me click: reopens the window and, with a valid ref, offers the link (asking in
/// Messenger). The offer and the event's idempotency `key` are committed together.
async fn apply_referral(
    messenger: &Messenger,
    psid: &str,
    reference: Option<&str>,
    timestamp: i64,
    key: &str,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let now_secs = u32::try_from(messenger.conversations.clock().now_ms() / 1000).unwrap_or(u32::MAX);
    let ttl_ms = i64::from(messenger.settings.link_ttl_secs.max(60)) * 1000;
    let offered = match reference.map(|r| link::verify(messenger.link_key(), r, now_secs)) {
        Some(Ok(token)) => match store.offer_link(&token.nonce, psid, key, ttl_ms).await? {
            OfferOutcome::Offered(row) => {
                ask_consent(messenger, psid, &row.nonce);
                true
            }
            OfferOutcome::Duplicate => return Ok(()),
            OfferOutcome::Unavailable => {
                tracing::info!("a used, expired or already offered Messenger link was presented; nothing bound");
                false
            }
        },
        Some(Err(e)) => {
            tracing::info!(reason = %e, "a Messenger ref was refused");
            false
        }
        None => false,
    };
    // The tap is a user action on this person's own thread either way (it reopens the 24 h window).
    let contact = match store.contact_by_psid(psid).await? {
        Some(c) => Some(c),
        None if !offered => Some(new_messenger_contact(messenger, psid).await?),
        // Asked: a contact appears when they write (their own) or say yes (the web one).
        None => None,
    };
    if let Some(contact) = contact {
        let at = timestamp.min(messenger.conversations.clock().now_ms());
        messenger.conversations.record_messenger_action(&contact.id, at).await?;
    }
    Ok(())
}

/// Asks in Messenger whether to continue the web conversation there (sent off the intake's path, retried a few
/// times on retryable errors; presenting the link again asks again).
fn ask_consent(messenger: &Messenger, psid: &str, nonce: &str) {
    let replies = [
        (link::CONSENT_YES, link::consent_payload(nonce, true)),
        (link::CONSENT_NO, link::consent_payload(nonce, false)),
    ];
    let graph = messenger.graph.clone();
    let psid = psid.to_string();
    tokio::spawn(async move {
        let replies: Vec<(&str, &str)> = replies.iter().map(|(t, p)| (*t, p.as_str())).collect();
        for attempt in 0..5u32 {
            match graph.send_quick_replies(&psid, CONSENT_QUESTION, &replies).await {
                Ok(_) => return,
                Err(e) if e.disposition() == super::send_api::Disposition::Retry => {
                    tracing::info!(error = %e, "consent question not sent yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consent question not sent");
                    return;
                }
            }
        }
    });
}

/// Tells the customer something in Messenger, best effort (not a conversation message).
fn say(messenger: &Messenger, psid: &str, text: &'static str) {
    let graph = messenger.graph.clone();
    let psid = psid.to_string();
    tokio::spawn(async move {
        if let Err(e) = graph.send_quick_replies(&psid, text, &[]).await {
            tracing::info!(error = %e, "notice not sent to Messenger");
        }
    });
}

/// "Yes, continue here" binds this person's thread to the link's web conversation (name, recap and all, in one
/// transaction); "No" uses the offer up and binds nothing.
async fn answer_offer(
    messenger: &Messenger,
    psid: &str,
    nonce: &str,
    yes: bool,
    timestamp: i64,
) -> Result<(), ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let action_at = timestamp.min(messenger.conversations.clock().now_ms());
    if let Some(own) = store.contact_by_psid(psid).await? {
        messenger.conversations.record_messenger_action(&own.id, action_at).await?;
    }
    if !yes {
        if store.refuse_link(nonce, psid).await? {
            say(messenger, psid, sentences::LINK_REFUSED);
        }
        return Ok(());
    }
    let Some(offer) = store.pending_offer(nonce, psid).await? else {
        if store.link_answered(nonce, psid).await? != Some(true) {
            say(messenger, psid, sentences::LINK_EXPIRED);
        }
        return Ok(());
    };
    let name = fetch_profile(messenger, &offer.contact_id, psid).await;
    let recap = recap_text(messenger, &offer.contact_id).await?;
    messenger.conversations.accept_link(nonce, psid, name, action_at, recap.as_deref()).await?;
    Ok(())
}

/// A short recap of the web conversation, so the Messenger thread makes sense.
async fn recap_text(messenger: &Messenger, contact_id: &str) -> Result<Option<String>, ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let Some(conversation) = store.conversation_for_contact(contact_id).await? else { return Ok(None) };
    let recent = store.recent_messages(&conversation.id, 6).await?;
    Ok(sentences::recap(recent.iter().map(|m| sentences::RecapLine {
        from_customer: m.author_role == "visitor",
        agent_name: m.author_name.as_deref(),
        body: &m.body,
    })))
}

/// The label of a contact who first wrote on Messenger: the PSID's last four characters (not bytes: a PSID is
/// opaque and may hold anything).
pub fn contact_label(psid: &str) -> String {
    let tail: Vec<char> = psid.chars().rev().take(4).collect();
    let tail: String = tail.into_iter().rev().filter(|c| !c.is_control()).collect();
    format!("Messenger {tail}")
}

async fn new_messenger_contact(messenger: &Messenger, psid: &str) -> Result<Contact, ServiceError> {
    let store = messenger.conversations.messenger_rows();
    let site_id = match store.site_id_by_key(&messenger.settings.site_key).await? {
        Some(site_id) => site_id,
        None => {
            store.oldest_site_id().await?.ok_or(ServiceError::Invalid("no site exists for Messenger conversations"))?
        }
    };
    let label = contact_label(psid);
    let contact = store.create_messenger_contact(&site_id, psid, &label).await?;
    fetch_profile(messenger, &contact.id, psid).await;
    Ok(store.contact(&contact.id).await?.unwrap_or(contact))
}

/// Fetches and caches the customer's name and picture once; returns the first name.
async fn fetch_profile(messenger: &Messenger, contact_id: &str, psid: &str) -> Option<String> {
    let store = messenger.conversations.messenger_rows();
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
    // Picture URLs expire: keep the image, not the URL (downloaded by the queue, from allowed hosts only).
    let avatar = match &profile.profile_pic {
        Some(url) => match store.queue_attachment(Some("profile"), url).await {
            Ok(id) => {
                messenger.media_wake.notify_one();
                Some(id)
            }
            Err(e) => {
                tracing::info!(error = ?e, "profile picture not queued");
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

/// Queues a message's attachments for download (their URLs expire, so the queue runs at once) and returns the
/// links the message carries; each shows the file once it is downloaded, or "attachment unavailable".
async fn queue_attachments(
    messenger: &Messenger,
    attachments: &[super::graph_types::Attachment],
) -> Result<Vec<Attachment>, ServiceError> {
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
        let name = url
            .rsplit('/')
            .next()
            .and_then(|n| n.split('?').next())
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(200).collect::<String>());
        let id = messenger.conversations.messenger_rows().queue_attachment(name.as_deref(), &url).await?;
        out.push(Attachment { url: format!("/attachments/{id}"), kind: kind.into(), name });
    }
    Ok(out)
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Characters that break byte-offset code: multi-byte, combining, zero-width, bidi, control, astral.
    const TRICKY: &[char] = &[
        'a',
        '1',
        '9',
        'Z',
        '_',
        '-',
        ' ',
        '/',
        '?',
        '%',
        '.',
        ':',
        '@',
        '[',
        ']',
        '\\',
        '"',
        '\0',
        '\n',
        '\u{7f}',
        'é',
        'ß',
        'ı',
        'İ',
        '\u{301}',
        '\u{200b}',
        '\u{202e}',
        '\u{feff}',
        '中',
        '😀',
        '👩',
        '\u{200d}',
        '\u{10ffff}',
    ];

    fn arbitrary(rng: &mut StdRng) -> String {
        let len = rng.random_range(0..40);
        (0..len).map(|_| TRICKY[rng.random_range(0..TRICKY.len())]).collect()
    }

    /// Fuzz-style: thousands of arbitrary strings through every string-handling step of the intake (PSID labels,
    /// consent payloads, short codes, link tokens, attachment URLs, payload parsing) never panic.
    #[test]
    fn arbitrary_strings_never_panic_the_intake_paths() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let allow = super::super::fetch::AllowList::parse(&["*.fbcdn.net".into(), "http://127.0.0.1:3001".into()])
            .expect("valid list");
        for _ in 0..20_000 {
            let s = arbitrary(&mut rng);
            let label = contact_label(&s);
            assert!(label.starts_with("Messenger ") && label.chars().count() <= "Messenger ".len() + 4);
            let _ = link::parse_consent(&s);
            let _ = link::parse_consent(&format!("ws1c_yes_{s}"));
            assert!(link::short_code_candidates(&s).iter().all(|c| c.len() == 6));
            let _ = link::verify(b"k", &format!("ws1_{s}"), 0);
            for url in [s.clone(), format!("https://{s}.fbcdn.net/{s}"), format!("http://127.0.0.1:3001/{s}")] {
                if let Ok(url) = reqwest::Url::parse(&url) {
                    let _ = allow.check(&url);
                }
            }
            let body = serde_json::json!({"object": "page", "entry": [{"id": s, "messaging": [{
                "sender": {"id": s}, "recipient": {"id": s}, "timestamp": 1,
                "message": {"mid": s, "text": s, "quick_reply": {"payload": s}, "app_id": s,
                            "attachments": [{"type": s, "payload": {"url": s}}]},
                "postback": {"payload": s, "referral": {"ref": s}}, "referral": {"ref": s}}]}]});
            let parsed: Envelope = serde_json::from_value(body).expect("any strings parse");
            assert_eq!(parsed.entry[0].messaging[0].sender.as_ref().map(|p| p.id.as_str()), Some(s.as_str()));
        }
    }

    #[test]
    fn labels_use_the_last_four_characters_not_bytes() {
        assert_eq!(contact_label("1é234"), "Messenger é234");
        assert_eq!(contact_label("12345678"), "Messenger 5678");
        assert_eq!(contact_label("é"), "Messenger é");
        assert_eq!(contact_label(""), "Messenger ");
    }

    #[test]
    fn retries_back_off_up_to_30_seconds() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }
}
