//! [`Emulator`]: the cheap-to-clone handle on the emulated world, and the typed Rust
//! mirror of the test-control API.
//!
//! All state sits in one `std::sync::Mutex<World>` that is never held across an await.
//! Every change bumps a version on a `watch` channel, which wakes long polls (chat page)
//! and [`Emulator::wait_until`] (tests), so nobody needs to sleep.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::customer::{FollowUp, OpenOutcome, THUMBS_UP_STICKER_ID, UserAttachment, UserMessage};
use crate::errors::ControlError;
use crate::faults::{FaultRule, Faults, SendFault, WebhookFault, normalise};
use crate::state::{
    Alert, NewUser, SentMessage, Settings, SettingsPatch, ThreadView, User, Verification, WebhookDelivery, World,
};

pub(crate) struct Inner {
    world: Mutex<World>,
    changed: watch::Sender<u64>,
    clock_jumps: watch::Sender<u64>,
    pub(crate) http: reqwest::Client,
}

/// Handle on the emulated Messenger Platform. Clone freely.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl Emulator {
    pub(crate) fn new(world: World, http: reqwest::Client) -> Self {
        let (changed, _) = watch::channel(0);
        let (clock_jumps, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { world: Mutex::new(world), changed, clock_jumps, http }) }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Runs `f` on the world under the lock and wakes waiters if it changed anything.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut world = self.inner.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = f(&mut world);
        let changed = std::mem::take(&mut world.dirty).then_some(world.version);
        drop(world);
        if let Some(version) = changed {
            self.inner.changed.send_replace(version);
        }
        result
    }

    /// A receiver that fires on every change of the world.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// A receiver that fires when the virtual clock jumps.
    pub(crate) fn subscribe_clock(&self) -> watch::Receiver<u64> {
        self.inner.clock_jumps.subscribe()
    }

    /// Waits until `probe` returns `Some`, re-checking after every change of the world.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(&Emulator) -> Option<T>,
    ) -> Result<T, ControlError> {
        let mut changes = self.subscribe_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(found) = probe(self) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return probe(self).ok_or_else(|| ControlError::Timeout("a condition".into()));
                }
            }
        }
    }

    /// Waits until at least `n` webhook payloads were delivered (2xx); returns them all.
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Result<Vec<WebhookDelivery>, ControlError> {
        self.wait_until(timeout, |e| {
            let delivered = e.delivered_webhooks();
            (delivered.len() >= n).then_some(delivered)
        })
        .await
        .map_err(|_| ControlError::Timeout(format!("{n} delivered webhooks")))
    }

    /// Waits until a delivered webhook event matches `predicate`; returns that event.
    pub async fn wait_for_event(
        &self,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Result<Value, ControlError> {
        self.wait_until(timeout, |e| e.delivered_events().into_iter().find(|ev| predicate(ev)))
            .await
            .map_err(|_| ControlError::Timeout("a matching webhook event".into()))
    }

    /// Waits until the Page has sent at least `n` messages; returns them all.
    pub async fn wait_for_sent(&self, n: usize, timeout: Duration) -> Result<Vec<SentMessage>, ControlError> {
        self.wait_until(timeout, |e| {
            let sent = e.sent_messages();
            (sent.len() >= n).then_some(sent)
        })
        .await
        .map_err(|_| ControlError::Timeout(format!("{n} sent messages")))
    }

    /// Waits until every emitted event was delivered or dropped.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), ControlError> {
        self.wait_until(timeout, |e| e.with(|w| (w.pending_events == 0).then_some(())))
            .await
            .map_err(|_| ControlError::Timeout("the webhook queue to drain".into()))
    }

    // ----- clock -----

    /// Virtual now (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.with(World::now_ms)
    }

    /// Jumps the virtual clock forward (wakes the webhook sender's backoff).
    pub fn advance(&self, by: Duration) -> i64 {
        let now = self.with(|w| {
            w.clock.advance(by);
            w.touch();
            w.now_ms()
        });
        self.inner.clock_jumps.send_modify(|n| *n += 1);
        now
    }

    /// Jumps the virtual clock forward by whole hours.
    pub fn advance_hours(&self, hours: u64) -> i64 {
        self.advance(Duration::from_secs(hours * 3600))
    }

    // ----- customers -----

    /// Creates a customer.
    pub fn create_user(&self, new: NewUser) -> Result<User, ControlError> {
        self.with(|w| w.create_user(new))
    }

    /// A customer's profile.
    pub fn user(&self, psid: &str) -> Option<User> {
        self.with(|w| w.customer(psid).map(|c| c.user.clone()))
    }

    /// All customers, in creation order.
    pub fn users(&self) -> Vec<User> {
        self.with(|w| w.customers.iter().map(|c| c.user.clone()).collect())
    }

    /// A customer's thread.
    pub fn thread(&self, psid: &str) -> Option<ThreadView> {
        self.with(|w| w.thread_view(psid))
    }

    /// The customer sends a message; returns its mid.
    pub fn user_sends(&self, psid: &str, message: UserMessage) -> Result<String, ControlError> {
        self.with(|w| w.user_sends(psid, message))
    }

    /// The customer sends text.
    pub fn user_sends_text(&self, psid: &str, text: &str) -> Result<String, ControlError> {
        self.user_sends(psid, UserMessage::text(text))
    }

    /// The customer sends an attachment of `kind` (`image`, `file`, `audio`, `video`)
    /// served by the emulator from an expiring URL.
    pub fn user_sends_attachment(&self, psid: &str, kind: &str) -> Result<String, ControlError> {
        let message = UserMessage {
            attachments: vec![UserAttachment { kind: kind.to_owned(), ..UserAttachment::default() }],
            ..UserMessage::default()
        };
        self.user_sends(psid, message)
    }

    /// The customer sends the thumbs-up sticker.
    pub fn user_sends_sticker(&self, psid: &str) -> Result<String, ControlError> {
        let message = UserMessage { sticker_id: Some(THUMBS_UP_STICKER_ID.to_owned()), ..UserMessage::default() };
        self.user_sends(psid, message)
    }

    /// The customer taps a quick reply.
    pub fn user_taps_quick_reply(&self, psid: &str, title: &str, payload: &str) -> Result<String, ControlError> {
        let message = UserMessage {
            text: Some(title.to_owned()),
            quick_reply_payload: Some(payload.to_owned()),
            ..UserMessage::default()
        };
        self.user_sends(psid, message)
    }

    /// The customer replies to a message.
    pub fn user_replies_to(&self, psid: &str, mid: &str, text: &str) -> Result<String, ControlError> {
        let message =
            UserMessage { text: Some(text.to_owned()), reply_to: Some(mid.to_owned()), ..UserMessage::default() };
        self.user_sends(psid, message)
    }

    /// The customer taps Get Started (a new thread from `m.me/<page>?ref=…` carries the ref).
    pub fn user_taps_get_started(&self, psid: &str, referral: Option<&str>) -> Result<String, ControlError> {
        self.with(|w| w.user_taps_get_started(psid, referral))
    }

    /// The customer opens `m.me/<page>?ref=…`.
    pub fn user_opens_link(&self, psid: &str, referral: Option<&str>) -> Result<OpenOutcome, ControlError> {
        self.with(|w| w.user_opens_link(psid, referral))
    }

    /// The customer reads the thread; returns the new watermark if it moved.
    pub fn user_reads(&self, psid: &str) -> Result<Option<i64>, ControlError> {
        self.with(|w| w.user_reads(psid))
    }

    /// The customer reacts to a message (`None` removes the reaction).
    pub fn user_reacts(&self, psid: &str, mid: &str, emoji: Option<&str>) -> Result<(), ControlError> {
        self.with(|w| w.user_reacts(psid, mid, emoji))
    }

    /// The customer blocks the Page.
    pub fn user_blocks(&self, psid: &str) -> Result<(), ControlError> {
        self.with(|w| w.set_blocked(psid, true))
    }

    /// The customer unblocks the Page.
    pub fn user_unblocks(&self, psid: &str) -> Result<(), ControlError> {
        self.with(|w| w.set_blocked(psid, false))
    }

    /// A human replies from the Page Inbox (echo with app_id 263902037430900).
    pub fn inbox_replies(&self, psid: &str, text: &str) -> Result<String, ControlError> {
        let (mid, follow_up) = self.with(|w| w.inbox_replies(psid, text))?;
        self.schedule(follow_up);
        Ok(mid)
    }

    /// The Page Inbox takes the thread (Conversation Routing turns on).
    pub fn inbox_takes_thread(&self, psid: &str) -> Result<(), ControlError> {
        self.with(|w| {
            w.customer(psid).ok_or_else(|| ControlError::UnknownUser(psid.to_owned()))?;
            w.inbox_takes_thread(psid);
            Ok(())
        })
    }

    /// The Page Inbox passes the thread back to our app.
    pub fn inbox_passes_thread(&self, psid: &str) -> Result<(), ControlError> {
        self.with(|w| {
            w.customer(psid).ok_or_else(|| ControlError::UnknownUser(psid.to_owned()))?;
            w.inbox_passes_thread(psid);
            Ok(())
        })
    }

    /// Sends delayed delivery/read receipts.
    pub(crate) fn schedule(&self, follow_up: Option<FollowUp>) {
        let Some(follow_up) = follow_up else {
            return;
        };
        if let Some(after) = follow_up.delivery_after_ms {
            let emulator = self.clone();
            let FollowUp { psid, mid, timestamp, .. } = follow_up.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                emulator.with(|w| w.emit_delivery(&psid, vec![mid], timestamp));
            });
        }
        if let Some(after) = follow_up.read_after_ms {
            let emulator = self.clone();
            let psid = follow_up.psid;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                emulator.with(|w| w.emit_read(&psid));
            });
        }
    }

    // ----- faults, token, settings -----

    /// Adds a Send API fault rule (no `times`/`probability` = once).
    pub fn push_send_fault(&self, rule: FaultRule<SendFault>) {
        self.with(|w| {
            w.faults.send.push(normalise(rule));
            w.touch();
        });
    }

    /// Adds a webhook fault rule (no `times`/`probability` = once).
    pub fn push_webhook_fault(&self, rule: FaultRule<WebhookFault>) {
        self.with(|w| {
            w.faults.webhook.push(normalise(rule));
            w.touch();
        });
    }

    /// The active fault rules.
    pub fn faults(&self) -> Faults {
        self.with(|w| w.faults.clone())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.with(|w| {
            w.faults = Faults::default();
            w.touch();
        });
    }

    /// Reseeds the RNG used by probabilistic faults and ids.
    pub fn reseed(&self, seed: u64) {
        use rand::SeedableRng;
        self.with(|w| w.rng = rand::rngs::StdRng::seed_from_u64(seed));
    }

    /// Revokes the Page token (190 until [`Emulator::restore_token`]).
    pub fn revoke_token(&self) {
        self.with(|w| {
            w.app.token_revoked = true;
            w.touch();
        });
    }

    /// Makes the Page token valid again.
    pub fn restore_token(&self) {
        self.with(|w| {
            w.app.token_revoked = false;
            w.touch();
        });
    }

    /// Current run-time settings.
    pub fn settings(&self) -> Settings {
        self.with(|w| w.settings.clone())
    }

    /// Changes run-time settings.
    pub fn update_settings(&self, patch: SettingsPatch) -> Settings {
        self.with(|w| {
            w.settings.apply(patch);
            w.touch();
            w.settings.clone()
        })
    }

    /// Configures (`Some(payload)`) or removes the Get Started button.
    pub fn set_get_started(&self, payload: Option<&str>) {
        self.with(|w| {
            match payload {
                Some(payload) => {
                    w.profile.insert("get_started".into(), serde_json::json!({ "payload": payload }));
                }
                None => {
                    w.profile.remove("get_started");
                }
            }
            w.touch();
        });
    }

    // ----- subscription and callback -----

    /// Subscribes the app to the Page (`None` keeps the current fields).
    pub fn subscribe(&self, fields: Option<Vec<String>>) {
        self.with(|w| {
            w.app.subscribed = true;
            if let Some(fields) = fields {
                w.app.fields = fields;
            }
            w.app.failing_since_ms = None;
            w.app.alerted = false;
            w.touch();
        });
    }

    /// Unsubscribes the app from the Page.
    pub fn unsubscribe(&self) {
        self.with(|w| {
            w.app.subscribed = false;
            w.touch();
        });
    }

    /// Whether the app is subscribed to the Page.
    pub fn is_subscribed(&self) -> bool {
        self.with(|w| w.app.subscribed)
    }

    /// Changes the callback URL and runs the verification GET (Meta does this on every
    /// change). Webhooks are only sent to a verified callback.
    pub async fn set_callback_url(&self, url: Option<String>) -> Option<Verification> {
        self.with(|w| {
            w.app.callback_url = url.clone();
            w.app.verified = false;
            w.touch();
        });
        match url {
            Some(_) => Some(self.verify_webhook().await),
            None => None,
        }
    }

    /// Sets the callback URL and marks it verified without a GET.
    pub fn set_callback_url_unverified(&self, url: Option<String>) {
        self.with(|w| {
            w.app.verified = url.is_some();
            w.app.callback_url = url;
            w.touch();
        });
    }

    /// Runs the verification GET against the current callback.
    pub async fn verify_webhook(&self) -> Verification {
        crate::webhook::verify(self).await
    }

    // ----- records -----

    /// Every message the Page sent (our app and the Inbox), oldest first.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.with(|w| w.sent_messages())
    }

    /// Every webhook payload with its attempts.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.with(|w| w.deliveries.clone())
    }

    /// Payloads that were delivered (2xx).
    pub fn delivered_webhooks(&self) -> Vec<WebhookDelivery> {
        self.with(|w| {
            w.deliveries.iter().filter(|d| d.status == crate::state::DeliveryStatus::Delivered).cloned().collect()
        })
    }

    /// The `messaging[]`/`standby[]` events of delivered payloads, in delivery order.
    pub fn delivered_events(&self) -> Vec<Value> {
        self.delivered_webhooks().iter().flat_map(|d| crate::webhook::events_of(&d.json())).collect()
    }

    /// Alerts raised (developer alert, webhooks disabled).
    pub fn alerts(&self) -> Vec<Alert> {
        self.with(|w| w.alerts.clone())
    }

    /// Verification GETs sent.
    pub fn verifications(&self) -> Vec<Verification> {
        self.with(|w| w.verifications.clone())
    }

    /// Back to the launch state (customers, faults, records, clock, settings), keeping the
    /// callback URL and its verification.
    pub fn reset(&self) {
        self.with(World::reset);
    }
}
