//! What a simulated customer (and the Page Inbox's human) can do: write, tap Get Started,
//! open an m.me link, read, react, block; and the Inbox replying.
//!
//! Each action updates the thread and the messaging windows and emits the webhook events
//! Meta would. The control API, the Rust handle and the chat page all call these, so the
//! three cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{PAGE_INBOX_APP_ID, STICKER_TRANSITION_END_MS};
use crate::errors::ControlError;
use crate::events::field;
use crate::faults::WebhookFault;
use crate::state::{Author, Customer, NewUser, Thread, ThreadMessage, User, World};

const FIRST_NAMES: &[&str] =
    &["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia", "Dennis", "Frances"];
const LAST_NAMES: &[&str] =
    &["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Perlman", "Ritchie", "Allen"];

/// Sticker id of the classic thumbs-up.
pub const THUMBS_UP_STICKER_ID: &str = "369239263222822";

/// A message the customer writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserMessage {
    /// Text.
    #[serde(default)]
    pub text: Option<String>,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<UserAttachment>,
    /// The customer tapped the quick reply with this payload (`text` is its title).
    #[serde(default)]
    pub quick_reply_payload: Option<String>,
    /// Reply to this mid.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Send a sticker (e.g. [`THUMBS_UP_STICKER_ID`]).
    #[serde(default)]
    pub sticker_id: Option<String>,
}

impl UserMessage {
    /// A plain text message.
    pub fn text(text: &str) -> Self {
        Self { text: Some(text.to_owned()), ..Self::default() }
    }
}

/// An attachment the customer sends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserAttachment {
    /// `image`, `file`, `audio`, `video`, `fallback`…
    #[serde(rename = "type")]
    pub kind: String,
    /// Use this URL instead of an emulator-served sample.
    #[serde(default)]
    pub url: Option<String>,
    /// Title (for `fallback` links).
    #[serde(default)]
    pub title: Option<String>,
}

/// What opening `m.me/<page>?ref=…` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenOutcome {
    /// Existing thread: a `messaging_referrals` event was sent (window reopened).
    ReferralSent,
    /// Existing thread but the referral was lost (no `ref`, or the Android fault).
    Reopened,
    /// New thread: the customer sees "Get Started" and must tap it.
    GetStartedShown,
    /// New thread without Get Started: nothing is sent, no ref ever arrives.
    ComposerShown,
}

/// A webhook follow-up due later (delivery / read receipts with a delay).
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// Customer.
    pub psid: String,
    /// The Page message.
    pub mid: String,
    /// Its timestamp (the watermark).
    pub timestamp: i64,
    /// Send a delivery receipt after this long.
    pub delivery_after_ms: Option<u64>,
    /// Send a read receipt after this long.
    pub read_after_ms: Option<u64>,
}

impl World {
    /// Creates a customer.
    pub fn create_user(&mut self, new: NewUser) -> Result<User, ControlError> {
        let psid = match new.psid {
            Some(psid) => {
                if psid.is_empty() || !psid.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ControlError::Invalid("a PSID is a numeric string".into()));
                }
                if self.customer(&psid).is_some() {
                    return Err(ControlError::Conflict(format!("PSID {psid} exists")));
                }
                psid
            }
            None => self.mint_psid(),
        };
        fn pick(names: &[&'static str], n: usize) -> &'static str {
            names.get(n % names.len()).copied().unwrap_or("X")
        }
        let n = self.customers.len();
        let user = User {
            first_name: new.first_name.unwrap_or_else(|| pick(FIRST_NAMES, n).to_owned()),
            last_name: new.last_name.unwrap_or_else(|| pick(LAST_NAMES, n / FIRST_NAMES.len() + n).to_owned()),
            blocked: new.blocked,
            phone_only: new.phone_only,
            profile_allowed: new.profile_allowed.unwrap_or(true),
            locale: "en_US".into(),
            psid,
        };
        self.customers.push(Customer { user: user.clone(), thread: Thread::default() });
        self.bump_thread(&user.psid);
        Ok(user)
    }

    fn active_customer(&mut self, psid: &str) -> Result<&mut Customer, ControlError> {
        let customer = self.customer_mut(psid).ok_or_else(|| ControlError::UnknownUser(psid.to_owned()))?;
        if customer.user.blocked {
            return Err(ControlError::Conflict("the customer has blocked the Page".into()));
        }
        Ok(customer)
    }

    fn note_user_action(&mut self, psid: &str, now: i64, is_message: bool) {
        if let Some(customer) = self.customer_mut(psid) {
            let thread = &mut customer.thread;
            thread.started = true;
            thread.last_user_action_ms = Some(now);
            if is_message {
                thread.last_user_message_ms = Some(now);
            }
        }
    }

    /// The customer sends a message; returns its mid.
    pub fn user_sends(&mut self, psid: &str, message: UserMessage) -> Result<String, ControlError> {
        self.active_customer(psid)?;
        if message.text.is_none() && message.attachments.is_empty() && message.sticker_id.is_none() {
            return Err(ControlError::Invalid("a message needs text, attachments or a sticker".into()));
        }
        if let Some(reply_to) = &message.reply_to
            && !self.customer(psid).is_some_and(|c| c.thread.messages.iter().any(|m| &m.mid == reply_to))
        {
            return Err(ControlError::UnknownMessage(reply_to.clone()));
        }
        let now = self.now_ms();
        let mid = self.mint_mid();
        let mut attachments: Vec<Value> = Vec::new();
        for attachment in &message.attachments {
            let url = match &attachment.url {
                Some(url) => url.clone(),
                None => self.add_media(&attachment.kind),
            };
            let mut item = json!({ "type": attachment.kind, "payload": { "url": url } });
            if let Some(title) = &attachment.title {
                item["title"] = json!(title);
            }
            attachments.push(item);
        }
        if let Some(sticker_id) = &message.sticker_id {
            let url = self.add_media("image");
            let both = now < STICKER_TRANSITION_END_MS || self.take_event_fault(WebhookFault::StickerAsImageAndSticker);
            if both {
                attachments.push(json!({ "type": "image", "payload": { "url": url, "sticker_id": sticker_id } }));
            }
            attachments.push(json!({ "type": "sticker", "payload": { "url": url, "sticker_id": sticker_id } }));
        }
        let mut body = Map::new();
        body.insert("mid".into(), json!(mid));
        if let Some(text) = &message.text {
            body.insert("text".into(), json!(text));
        }
        if let Some(payload) = &message.quick_reply_payload {
            body.insert("quick_reply".into(), json!({ "payload": payload }));
        }
        if let Some(reply_to) = &message.reply_to {
            body.insert("reply_to".into(), json!({ "mid": reply_to, "is_self_reply": false }));
        }
        if !attachments.is_empty() {
            body.insert("attachments".into(), Value::Array(attachments.clone()));
        }
        let mut record = ThreadMessage::new(mid.clone(), Author::Customer, now, "message");
        record.text = message.text.clone();
        record.attachments = attachments;
        record.quick_reply_payload = message.quick_reply_payload.clone();
        record.reply_to = message.reply_to.clone();
        record.sticker_id = message.sticker_id.clone();
        self.note_user_action(psid, now, true);
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.messages.push(record);
        }
        let event = self.inbound(psid, now, "message", Value::Object(body));
        self.emit(field::MESSAGES, psid, event);
        self.bump_thread(psid);
        Ok(mid)
    }

    /// The customer taps Get Started, optionally arriving through `m.me/…?ref=`.
    /// Returns the postback's mid.
    pub fn user_taps_get_started(&mut self, psid: &str, referral: Option<&str>) -> Result<String, ControlError> {
        self.active_customer(psid)?;
        let payload = self
            .get_started_payload()
            .ok_or_else(|| ControlError::Conflict("no Get Started button is configured".into()))?;
        let now = self.now_ms();
        let mid = self.mint_mid();
        let mut postback = json!({ "mid": mid, "title": "Get Started", "payload": payload });
        if let Some(reference) = referral
            && !self.take_event_fault(WebhookFault::DropReferral)
        {
            postback["referral"] = shortlink_referral(reference);
        }
        let mut record = ThreadMessage::new(mid.clone(), Author::Customer, now, "postback");
        record.text = Some("Get Started".into());
        record.postback_payload = Some(payload);
        self.note_user_action(psid, now, false);
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.messages.push(record);
        }
        let event = self.inbound(psid, now, "postback", postback);
        self.emit(field::POSTBACKS, psid, event);
        self.bump_thread(psid);
        Ok(mid)
    }

    /// The customer opens `m.me/<page>` (with an optional `ref`). An existing thread gets a
    /// `messaging_referrals` event and its 24 h window reopens; a new thread shows Get
    /// Started (or just the composer when none is configured).
    pub fn user_opens_link(&mut self, psid: &str, referral: Option<&str>) -> Result<OpenOutcome, ControlError> {
        let started = self.active_customer(psid)?.thread.started;
        if !started {
            return Ok(if self.get_started_payload().is_some() {
                OpenOutcome::GetStartedShown
            } else {
                OpenOutcome::ComposerShown
            });
        }
        let Some(reference) = referral else {
            return Ok(OpenOutcome::Reopened);
        };
        let now = self.now_ms();
        self.note_user_action(psid, now, false);
        self.bump_thread(psid);
        if self.take_event_fault(WebhookFault::DropReferral) {
            return Ok(OpenOutcome::Reopened);
        }
        let event = self.inbound(psid, now, "referral", shortlink_referral(reference));
        self.emit(field::REFERRALS, psid, event);
        Ok(OpenOutcome::ReferralSent)
    }

    /// The customer reads the thread; returns the new read watermark if it moved.
    pub fn user_reads(&mut self, psid: &str) -> Result<Option<i64>, ControlError> {
        self.active_customer(psid)?;
        Ok(self.emit_read(psid))
    }

    /// The customer reacts to (or un-reacts from) a message.
    pub fn user_reacts(&mut self, psid: &str, mid: &str, emoji: Option<&str>) -> Result<(), ControlError> {
        let customer = self.active_customer(psid)?;
        let message = customer
            .thread
            .messages
            .iter_mut()
            .find(|m| m.mid == mid)
            .ok_or_else(|| ControlError::UnknownMessage(mid.to_owned()))?;
        let previous = message.reaction.clone();
        message.reaction = emoji.map(str::to_owned);
        let now = self.now_ms();
        self.note_user_action(psid, now, false);
        let body = match emoji.or(previous.as_deref()) {
            Some(shown) => json!({
                "reaction": reaction_name(shown),
                "emoji": shown,
                "action": if emoji.is_some() { "react" } else { "unreact" },
                "mid": mid,
            }),
            None => return Ok(()),
        };
        let event = self.inbound(psid, now, "reaction", body);
        self.emit(field::REACTIONS, psid, event);
        self.bump_thread(psid);
        Ok(())
    }

    /// The customer blocks (or unblocks) the Page.
    pub fn set_blocked(&mut self, psid: &str, blocked: bool) -> Result<(), ControlError> {
        let customer = self.customer_mut(psid).ok_or_else(|| ControlError::UnknownUser(psid.to_owned()))?;
        customer.user.blocked = blocked;
        self.bump_thread(psid);
        Ok(())
    }

    /// A human replies from the Page Inbox: the echo carries app_id 263902037430900.
    pub fn inbox_replies(&mut self, psid: &str, text: &str) -> Result<(String, Option<FollowUp>), ControlError> {
        self.active_customer(psid)?;
        let now = self.now_ms();
        let mid = self.mint_mid();
        let mut record =
            ThreadMessage::new(mid.clone(), Author::Page { app_id: PAGE_INBOX_APP_ID.to_owned() }, now, "message");
        record.text = Some(text.to_owned());
        let follow_up = self.record_page_message(psid, record);
        Ok((mid, follow_up))
    }

    /// Stores a Page message, emits its echo, and sends (or schedules) the receipts.
    pub fn record_page_message(&mut self, psid: &str, record: ThreadMessage) -> Option<FollowUp> {
        let echo_body = self.echo_body(&record);
        let echo = self.echo(psid, record.timestamp, echo_body);
        let (mid, timestamp) = (record.mid.clone(), record.timestamp);
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.typing = false;
            customer.thread.messages.push(record);
        }
        self.emit(field::ECHOES, psid, echo);
        self.bump_thread(psid);
        let delivery = self.settings.delivery_delay_ms;
        let read = self.settings.read_delay_ms;
        let mut follow_up = FollowUp {
            psid: psid.to_owned(),
            mid: mid.clone(),
            timestamp,
            delivery_after_ms: None,
            read_after_ms: None,
        };
        match delivery {
            Some(0) => self.emit_delivery(psid, vec![mid], timestamp),
            other => follow_up.delivery_after_ms = other,
        }
        match read {
            Some(0) => {
                self.emit_read(psid);
            }
            other => follow_up.read_after_ms = other,
        }
        (follow_up.delivery_after_ms.is_some() || follow_up.read_after_ms.is_some()).then_some(follow_up)
    }

    /// The `message` of an echo webhook for a Page message.
    pub fn echo_body(&self, record: &ThreadMessage) -> Value {
        let app_id = match &record.from {
            Author::Page { app_id } => app_id.clone(),
            Author::Customer => self.cfg.app_id.clone(),
        };
        let mut body = Map::new();
        body.insert("is_echo".into(), json!(true));
        body.insert("app_id".into(), self.app_id_json(&app_id));
        if let Some(metadata) = &record.metadata {
            body.insert("metadata".into(), json!(metadata));
        }
        body.insert("mid".into(), json!(record.mid));
        if let Some(text) = &record.text {
            body.insert("text".into(), json!(text));
        }
        if !record.attachments.is_empty() {
            body.insert("attachments".into(), Value::Array(record.attachments.clone()));
        }
        if !record.quick_replies.is_empty() {
            body.insert("quick_replies".into(), Value::Array(record.quick_replies.clone()));
        }
        if let Some(reply_to) = &record.reply_to {
            body.insert("reply_to".into(), json!({ "mid": reply_to }));
        }
        Value::Object(body)
    }
}

fn shortlink_referral(reference: &str) -> Value {
    json!({ "ref": reference, "source": "SHORTLINK", "type": "OPEN_THREAD" })
}

/// Meta's reaction name for an emoji.
pub fn reaction_name(emoji: &str) -> &'static str {
    match emoji {
        "😆" | "😄" => "smile",
        "😠" => "angry",
        "😢" => "sad",
        "😮" => "wow",
        "❤️" | "❤" => "love",
        "👍" => "like",
        "👎" => "dislike",
        _ => "other",
    }
}
