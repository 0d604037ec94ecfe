//! The emulated world: the app, the Page, its customers and their threads, the virtual
//! clock, fault rules and the records tests inspect (webhook deliveries, alerts).
//!
//! [`World`] is plain data behind one mutex; it never awaits. Customer actions live in
//! `customer.rs`, event building in `events.rs`, Send API rules in `graph/send.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::Clock;
use crate::config::SandboxConfig;
use crate::faults::Faults;

/// A simulated customer (a Page-scoped user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Page-scoped id: a 16-digit numeric string.
    pub psid: String,
    /// Profile first name.
    pub first_name: String,
    /// Profile last name.
    pub last_name: String,
    /// The customer blocked the Page (sends fail with 551).
    pub blocked: bool,
    /// A phone-number-only account (Profile API fails with 2018218).
    pub phone_only: bool,
    /// The Profile API returns fields (otherwise `{}`).
    pub profile_allowed: bool,
    /// `locale` (needs a permission the app does not have).
    pub locale: String,
}

/// Input for creating a customer. Missing fields get generated values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewUser {
    /// Use this PSID instead of a random one.
    #[serde(default)]
    pub psid: Option<String>,
    /// First name (default: generated).
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name (default: generated).
    #[serde(default)]
    pub last_name: Option<String>,
    /// Start blocked.
    #[serde(default)]
    pub blocked: bool,
    /// Phone-number-only account.
    #[serde(default)]
    pub phone_only: bool,
    /// Profile API access (default true).
    #[serde(default)]
    pub profile_allowed: Option<bool>,
}

impl NewUser {
    /// A customer with the given name.
    pub fn named(first_name: &str, last_name: &str) -> Self {
        Self { first_name: Some(first_name.to_owned()), last_name: Some(last_name.to_owned()), ..Self::default() }
    }
}

/// Who wrote a thread message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Author {
    /// The simulated customer.
    Customer,
    /// The Page, through the app with this id (our app, or the Page Inbox 263902037430900).
    Page {
        /// The sending app.
        app_id: String,
    },
}

/// One message (or postback) in a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadMessage {
    /// `m_…` id.
    pub mid: String,
    /// Author.
    pub from: Author,
    /// Virtual epoch ms.
    pub timestamp: i64,
    /// `message` or `postback`.
    pub kind: String,
    /// Text, if any.
    pub text: Option<String>,
    /// Attachments as they appear in webhooks (`{type, payload}`).
    pub attachments: Vec<Value>,
    /// Quick replies the Page offered.
    pub quick_replies: Vec<Value>,
    /// Payload of the quick reply the customer tapped.
    pub quick_reply_payload: Option<String>,
    /// Postback payload (Get Started).
    pub postback_payload: Option<String>,
    /// Replied-to mid.
    pub reply_to: Option<String>,
    /// Sticker id (`message.sticker_id`).
    pub sticker_id: Option<String>,
    /// Send API `metadata`.
    pub metadata: Option<String>,
    /// Send API `messaging_type`.
    pub messaging_type: Option<String>,
    /// Send API `tag`.
    pub tag: Option<String>,
    /// Send API `notification_type`.
    pub notification_type: Option<String>,
    /// Send API `persona_id`.
    pub persona_id: Option<String>,
    /// Reaction emoji the other side put on this message.
    pub reaction: Option<String>,
    /// The Send API returned an error although the message was delivered (1357046, hang).
    pub error_returned: bool,
}

impl ThreadMessage {
    /// An empty message shell.
    pub fn new(mid: String, from: Author, timestamp: i64, kind: &str) -> Self {
        Self {
            mid,
            from,
            timestamp,
            kind: kind.to_owned(),
            text: None,
            attachments: Vec::new(),
            quick_replies: Vec::new(),
            quick_reply_payload: None,
            postback_payload: None,
            reply_to: None,
            sticker_id: None,
            metadata: None,
            messaging_type: None,
            tag: None,
            notification_type: None,
            persona_id: None,
            reaction: None,
            error_returned: false,
        }
    }

    /// Sent by the Page (any app).
    pub fn is_from_page(&self) -> bool {
        matches!(self.from, Author::Page { .. })
    }
}

/// A message the Page sent, with the customer it went to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Recipient PSID.
    pub psid: String,
    /// The message.
    #[serde(flatten)]
    pub message: ThreadMessage,
}

/// A customer's conversation with the Page.
#[derive(Debug, Clone, Default)]
pub struct Thread {
    /// The customer has talked to the Page (message, Get Started…).
    pub started: bool,
    /// Last message, postback, referral or reaction (the 24 h window).
    pub last_user_action_ms: Option<i64>,
    /// Last message (the 7 d HUMAN_AGENT window).
    pub last_user_message_ms: Option<i64>,
    /// Conversation Routing owner (`None` = the default: our app).
    pub owner_app_id: Option<String>,
    /// Messages and postbacks, oldest first.
    pub messages: Vec<ThreadMessage>,
    /// Read watermark sent to the app.
    pub read_watermark: i64,
    /// Delivery watermark sent to the app.
    pub delivered_watermark: i64,
    /// The Page shows a typing indicator.
    pub typing: bool,
    /// How many `mark_seen` sender actions the Page sent.
    pub page_seen_count: u32,
    /// World version of the last change (for long polls).
    pub version: u64,
    /// Real instants of recent sends (per-thread rate limit).
    pub send_times: VecDeque<Instant>,
}

/// A customer and their thread.
#[derive(Debug, Clone)]
pub struct Customer {
    /// Profile.
    pub user: User,
    /// Conversation.
    pub thread: Thread,
}

/// A snapshot of one thread, as the chat page and tests see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadView {
    /// The customer.
    pub user: User,
    /// Page display name.
    pub page_name: String,
    /// The customer has talked to the Page.
    pub started: bool,
    /// A Get Started button is configured.
    pub get_started_available: bool,
    /// Messages, oldest first.
    pub messages: Vec<ThreadMessage>,
    /// The Page shows a typing indicator.
    pub typing: bool,
    /// How many `mark_seen` sender actions the Page sent.
    #[serde(default)]
    pub page_seen_count: u32,
    /// Version for `?since=` long polls.
    pub version: u64,
    /// Last user action (virtual epoch ms).
    pub last_user_action_ms: Option<i64>,
    /// Last user message (virtual epoch ms).
    pub last_user_message_ms: Option<i64>,
    /// Current thread owner under Conversation Routing.
    pub owner_app_id: Option<String>,
    /// Read watermark sent to the app.
    pub read_watermark: i64,
}

/// Our app's subscription and webhook health.
#[derive(Debug, Clone, Serialize)]
pub struct AppRecord {
    /// Webhook callback.
    pub callback_url: Option<String>,
    /// The callback passed (or skipped) verification.
    pub verified: bool,
    /// Subscribed to the Page.
    pub subscribed: bool,
    /// Subscribed fields.
    pub fields: Vec<String>,
    /// The Page token was revoked (190 until restored).
    pub token_revoked: bool,
    /// Virtual time of the first failure in the current failing streak.
    pub failing_since_ms: Option<i64>,
    /// A developer alert was raised for the current streak.
    pub alerted: bool,
}

/// Mutable settings a test can change at run time (`PATCH /__emu/settings`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Conversation Routing configured.
    pub routing: bool,
    /// Human Agent feature approved.
    pub human_agent_feature: bool,
    /// Utility messaging permission.
    pub utility_messaging: bool,
    /// Reject sends without `messaging_type`.
    pub require_messaging_type: bool,
    /// Head-of-line webhook delivery.
    pub head_of_line: bool,
    /// Delivery webhook delay in ms (`None` = never).
    pub delivery_delay_ms: Option<u64>,
    /// Read webhook delay in ms (`None` = only when the customer reads).
    pub read_delay_ms: Option<u64>,
    /// The open chat page marks messages read.
    pub read_on_page_open: bool,
    /// Attachment URL lifetime in virtual seconds.
    pub attachment_ttl_secs: u64,
    /// Attachment URL fetch limit.
    pub attachment_max_fetches: Option<u32>,
    /// Per-thread Send API limit per second.
    pub thread_rate_limit_per_sec: Option<u32>,
}

impl Settings {
    fn from_config(cfg: &SandboxConfig) -> Self {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            routing: cfg.routing,
            human_agent_feature: cfg.human_agent_feature,
            utility_messaging: cfg.utility_messaging,
            require_messaging_type: cfg.require_messaging_type,
            head_of_line: cfg.head_of_line,
            delivery_delay_ms: cfg.delivery_delay.map(millis),
            read_delay_ms: cfg.read_delay.map(millis),
            read_on_page_open: cfg.read_on_page_open,
            attachment_ttl_secs: cfg.attachment_ttl.as_secs(),
            attachment_max_fetches: cfg.attachment_max_fetches,
            thread_rate_limit_per_sec: cfg.thread_rate_limit_per_sec,
        }
    }
}

/// Partial update of [`Settings`]; absent fields stay unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// See [`Settings::routing`].
    #[serde(default)]
    pub routing: Option<bool>,
    /// See [`Settings::human_agent_feature`].
    #[serde(default)]
    pub human_agent_feature: Option<bool>,
    /// See [`Settings::utility_messaging`].
    #[serde(default)]
    pub utility_messaging: Option<bool>,
    /// See [`Settings::require_messaging_type`].
    #[serde(default)]
    pub require_messaging_type: Option<bool>,
    /// See [`Settings::head_of_line`].
    #[serde(default)]
    pub head_of_line: Option<bool>,
    /// See [`Settings::delivery_delay_ms`]; `Some(None)` (JSON `null`) disables.
    #[serde(default, with = "double_option")]
    pub delivery_delay_ms: Option<Option<u64>>,
    /// See [`Settings::read_delay_ms`]; `Some(None)` (JSON `null`) disables.
    #[serde(default, with = "double_option")]
    pub read_delay_ms: Option<Option<u64>>,
    /// See [`Settings::read_on_page_open`].
    #[serde(default)]
    pub read_on_page_open: Option<bool>,
    /// See [`Settings::attachment_ttl_secs`].
    #[serde(default)]
    pub attachment_ttl_secs: Option<u64>,
    /// See [`Settings::attachment_max_fetches`]; JSON `null` removes the limit.
    #[serde(default, with = "double_option")]
    pub attachment_max_fetches: Option<Option<u32>>,
    /// See [`Settings::thread_rate_limit_per_sec`]; JSON `null` removes the limit.
    #[serde(default, with = "double_option")]
    pub thread_rate_limit_per_sec: Option<Option<u32>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

impl Settings {
    /// Applies a patch.
    pub fn apply(&mut self, patch: SettingsPatch) {
        let SettingsPatch {
            routing,
            human_agent_feature,
            utility_messaging,
            require_messaging_type,
            head_of_line,
            delivery_delay_ms,
            read_delay_ms,
            read_on_page_open,
            attachment_ttl_secs,
            attachment_max_fetches,
            thread_rate_limit_per_sec,
        } = patch;
        set(&mut self.routing, routing);
        set(&mut self.human_agent_feature, human_agent_feature);
        set(&mut self.utility_messaging, utility_messaging);
        set(&mut self.require_messaging_type, require_messaging_type);
        set(&mut self.head_of_line, head_of_line);
        set(&mut self.delivery_delay_ms, delivery_delay_ms);
        set(&mut self.read_delay_ms, read_delay_ms);
        set(&mut self.read_on_page_open, read_on_page_open);
        set(&mut self.attachment_ttl_secs, attachment_ttl_secs);
        set(&mut self.attachment_max_fetches, attachment_max_fetches);
        set(&mut self.thread_rate_limit_per_sec, thread_rate_limit_per_sec);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A "developer alert" or "Webhooks Disabled" notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Virtual epoch ms.
    pub at_ms: i64,
    /// `developer_alert` or `webhooks_disabled`.
    pub kind: String,
    /// Human-readable text.
    pub message: String,
}

/// One POST of a webhook payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Virtual epoch ms when it started.
    pub at_ms: i64,
    /// HTTP status, if the receiver answered in time.
    pub status: Option<u16>,
    /// Transport error or timeout.
    pub error: Option<String>,
    /// Real latency.
    pub latency_ms: u64,
    /// This attempt was signed with a wrong secret on purpose.
    pub bad_signature: bool,
    /// 2xx within the timeout.
    pub success: bool,
}

/// Where a payload ended up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Still being tried.
    Pending,
    /// A 2xx arrived in time.
    Delivered,
    /// Given up (unsubscribed, no callback, unverified, reset).
    Dropped {
        /// Why.
        reason: String,
    },
}

/// A webhook payload and every attempt to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Sequence number.
    pub id: u64,
    /// The exact signed body.
    pub body: String,
    /// Webhook fields of the events inside (`messages`, `message_echoes`…).
    pub fields: Vec<String>,
    /// Number of events inside.
    pub event_count: usize,
    /// This is a deliberate duplicate of that delivery.
    pub duplicate_of: Option<u64>,
    /// Attempts, in order.
    pub attempts: Vec<Attempt>,
    /// Outcome.
    pub status: DeliveryStatus,
}

impl WebhookDelivery {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One verification GET.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Callback URL.
    pub url: String,
    /// The challenge sent.
    pub challenge: String,
    /// HTTP status received.
    pub status: Option<u16>,
    /// Body received (or the transport error).
    pub body: Option<String>,
    /// 200 and the body equal to the challenge.
    pub verified: bool,
}

/// An attachment file served from an expiring URL.
#[derive(Debug, Clone)]
pub struct Media {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Bytes.
    pub bytes: &'static [u8],
    /// Virtual expiry.
    pub expires_at_ms: i64,
    /// Fetches left before the URL stops working.
    pub fetches_left: Option<u32>,
}

/// An event waiting for the webhook sender.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// Webhook field (`messages`, `message_echoes`…).
    pub field: &'static str,
    /// Goes into `standby[]` instead of `messaging[]`.
    pub standby: bool,
    /// The `messaging[]` element.
    pub event: Value,
    /// World generation (events from before a reset are dropped).
    pub generation: u64,
}

/// The whole emulated state.
pub struct World {
    /// Launch configuration.
    pub cfg: SandboxConfig,
    /// Origin for URLs handed out.
    pub base_url: String,
    /// Run-time settings.
    pub settings: Settings,
    /// Virtual clock.
    pub clock: Clock,
    /// Seeded RNG (ids, probabilistic faults).
    pub rng: StdRng,
    /// Our app.
    pub app: AppRecord,
    /// `messenger_profile` properties (`get_started`, `greeting`…).
    pub profile: Map<String, Value>,
    /// Customers in creation order.
    pub customers: Vec<Customer>,
    /// Fault rules.
    pub faults: Faults,
    /// Webhook payloads and attempts.
    pub deliveries: Vec<WebhookDelivery>,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Verification GETs sent.
    pub verifications: Vec<Verification>,
    /// Attachment files by token.
    pub media: HashMap<String, Media>,
    /// Events emitted but not yet delivered or dropped.
    pub pending_events: usize,
    /// Incremented by `reset`.
    pub generation: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Set by `touch`, cleared by the emulator after notifying waiters.
    pub dirty: bool,
    /// Queue to the webhook sender.
    pub outbox: UnboundedSender<OutEvent>,
}

impl World {
    /// A fresh world from the launch configuration.
    pub fn new(cfg: SandboxConfig, base_url: String, outbox: UnboundedSender<OutEvent>) -> Self {
        let rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut profile = Map::new();
        if cfg.get_started {
            profile.insert("get_started".into(), json!({ "payload": cfg.get_started_payload }));
        }
        Self {
            settings: Settings::from_config(&cfg),
            clock: Clock::new(cfg.start_time_ms, cfg.clock_runs),
            rng,
            app: AppRecord {
                callback_url: cfg.callback_url.clone(),
                verified: cfg.callback_url.is_some() && !cfg.verify_on_launch,
                subscribed: cfg.subscribed,
                fields: cfg.subscribed_fields.clone(),
                token_revoked: false,
                failing_since_ms: None,
                alerted: false,
            },
            profile,
            customers: Vec::new(),
            faults: Faults::default(),
            deliveries: Vec::new(),
            alerts: Vec::new(),
            verifications: Vec::new(),
            media: HashMap::new(),
            pending_events: 0,
            generation: 0,
            version: 0,
            dirty: false,
            outbox,
            cfg,
            base_url,
        }
    }

    /// Back to the launch state, keeping the callback URL and its verification.
    pub fn reset(&mut self) {
        let callback_url = self.app.callback_url.clone();
        let verified = self.app.verified;
        let generation = self.generation + 1;
        let version = self.version;
        let fresh = World::new(self.cfg.clone(), self.base_url.clone(), self.outbox.clone());
        *self = fresh;
        self.app.callback_url = callback_url;
        self.app.verified = verified;
        self.generation = generation;
        self.version = version;
        self.touch();
    }

    /// Marks a change (wakes long polls and `wait_until`).
    pub fn touch(&mut self) -> u64 {
        self.version += 1;
        self.dirty = true;
        self.version
    }

    /// Marks a change to one thread (its version follows the world version).
    pub fn bump_thread(&mut self, psid: &str) {
        let version = self.touch();
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.version = version;
        }
    }

    /// Virtual now.
    pub fn now_ms(&mut self) -> i64 {
        self.clock.now_ms()
    }

    /// A fresh `m_…` message id: `m_` + base64url(18 random bytes).
    pub fn mint_mid(&mut self) -> String {
        let mut bytes = [0u8; 18];
        self.rng.fill(&mut bytes);
        format!("m_{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A fresh 16-digit PSID not yet in use.
    pub fn mint_psid(&mut self) -> String {
        loop {
            let psid = self.rng.random_range(1_000_000_000_000_000u64..10_000_000_000_000_000u64).to_string();
            if self.customer(&psid).is_none() {
                return psid;
            }
        }
    }

    /// A random URL-safe token.
    pub fn mint_token(&mut self, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes).map(|_| self.rng.random()).collect();
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The customer with this PSID.
    pub fn customer(&self, psid: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.user.psid == psid)
    }

    /// The customer with this PSID, mutably.
    pub fn customer_mut(&mut self, psid: &str) -> Option<&mut Customer> {
        self.customers.iter_mut().find(|c| c.user.psid == psid)
    }

    /// The Get Started payload, if a Get Started button is configured.
    pub fn get_started_payload(&self) -> Option<String> {
        self.profile.get("get_started").and_then(|g| g.get("payload")).and_then(Value::as_str).map(str::to_owned)
    }

    /// The snapshot of one thread.
    pub fn thread_view(&self, psid: &str) -> Option<ThreadView> {
        let customer = self.customer(psid)?;
        let thread = &customer.thread;
        Some(ThreadView {
            user: customer.user.clone(),
            page_name: self.cfg.page_name.clone(),
            started: thread.started,
            get_started_available: self.get_started_payload().is_some(),
            messages: thread.messages.clone(),
            typing: thread.typing,
            page_seen_count: thread.page_seen_count,
            version: thread.version,
            last_user_action_ms: thread.last_user_action_ms,
            last_user_message_ms: thread.last_user_message_ms,
            owner_app_id: thread.owner_app_id.clone(),
            read_watermark: thread.read_watermark,
        })
    }

    /// Every message the Page sent, oldest first across customers.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        let mut sent: Vec<SentMessage> = self
            .customers
            .iter()
            .flat_map(|c| {
                c.thread
                    .messages
                    .iter()
                    .filter(|m| m.is_from_page())
                    .map(|m| SentMessage { psid: c.user.psid.clone(), message: m.clone() })
            })
            .collect();
        sent.sort_by_key(|s| s.message.timestamp);
        sent
    }

    /// Records an alert.
    pub fn alert(&mut self, kind: &str, message: String) {
        let at_ms = self.now_ms();
        tracing::warn!(kind, %message, "messenger sandbox alert");
        self.alerts.push(Alert { at_ms, kind: kind.to_owned(), message });
        self.touch();
    }
}
