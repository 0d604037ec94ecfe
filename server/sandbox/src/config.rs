//! Configuration of one emulated app + Page pair.
//!
//! Everything a test may want to vary lives here, with defaults that behave like a
//! freshly connected, subscribed, verified Page with Get Started configured. Values that
//! can also change while the emulator runs (routing, Human Agent feature, delivery
//! delays…) are copied into [`crate::state::World`] at launch and changed through the
//! control API afterwards.

use std::time::Duration;

/// The Page Inbox / Business Suite shows up as this app id in echoes and handovers.
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

/// Virtual instant (epoch ms) from which `CONFIRMED_EVENT_UPDATE`, `POST_PURCHASE_UPDATE` and
/// `ACCOUNT_UPDATE` are rejected with error 100 (2026-04-27T00:00:00Z).
pub const DEPRECATED_TAGS_CUTOFF_MS: i64 = 1_777_248_000_000;

/// Virtual instant (epoch ms) after which stickers arrive only as `sticker` attachments
/// (2026-08-30T00:00:00Z); before it they arrive as both `image` and `sticker`.
pub const STICKER_TRANSITION_END_MS: i64 = 1_788_048_000_000;

/// Everything about the emulated Messenger app and Page.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Our app's id (appears as `app_id` in echoes of our sends).
    pub app_id: String,
    /// Key for webhook signatures and `appsecret_proof`.
    pub app_secret: String,
    /// Sent as `hub.verify_token` in the verification GET.
    pub verify_token: String,
    /// Page id (numeric string).
    pub page_id: String,
    /// Page username used in `m.me/<username>` links (the page id works too).
    pub page_username: String,
    /// Display name of the Page on the chat page.
    pub page_name: String,
    /// The Page access token the app uses.
    pub page_token: String,
    /// Webhook callback (e.g. `http://127.0.0.1:PORT/webhooks/messenger`).
    pub callback_url: Option<String>,
    /// Run the verification GET for `callback_url` at launch. Off by default because tests
    /// usually launch the emulator before the receiving server.
    pub verify_on_launch: bool,
    /// Real-time limit for the receiver to answer a webhook POST (Meta: 5 s; ≤ 20 s).
    pub webhook_timeout: Duration,
    /// Retry, alert and unsubscribe timings of the webhook sender.
    pub retry: RetryPolicy,
    /// Head-of-line delivery per Page: the next payload waits for the previous ack.
    pub head_of_line: bool,
    /// The app has the approved Human Agent feature (`HUMAN_AGENT` tag).
    pub human_agent_feature: bool,
    /// The app has `page_utility_messaging` (`messaging_type: UTILITY`).
    pub utility_messaging: bool,
    /// A Get Started button is configured (`messenger_profile.get_started`).
    pub get_started: bool,
    /// Payload of the configured Get Started button.
    pub get_started_payload: String,
    /// The app starts subscribed to the Page.
    pub subscribed: bool,
    /// Webhook fields the app starts subscribed to.
    pub subscribed_fields: Vec<String>,
    /// Conversation Routing is configured: a non-owner's send fails with 2018300 and its
    /// events arrive in `standby[]`.
    pub routing: bool,
    /// Reject sends without `messaging_type` (lenient mode defaults it to `RESPONSE`).
    pub require_messaging_type: bool,
    /// Reject calls without a valid `appsecret_proof` ("Require App Secret").
    pub require_appsecret_proof: bool,
    /// Emit a delivery webhook this long (real time) after each Page message; `None` = never.
    pub delivery_delay: Option<Duration>,
    /// Emit a read webhook this long (real time) after each Page message; `None` = only when
    /// the simulated customer reads (control API or the chat page being open).
    pub read_delay: Option<Duration>,
    /// The chat page marks Page messages as read while it is open and visible.
    pub read_on_page_open: bool,
    /// Customer attachment URLs expire after this much virtual time.
    pub attachment_ttl: Duration,
    /// Customer attachment URLs stop working after this many fetches.
    pub attachment_max_fetches: Option<u32>,
    /// Virtual time at launch (epoch ms); `None` = the system clock.
    pub start_time_ms: Option<i64>,
    /// Virtual time also flows with real time (otherwise it only moves by `advance`).
    pub clock_runs: bool,
    /// Seed for PSIDs, mids and probabilistic faults; `None` = random.
    pub seed: Option<u64>,
    /// Origin used in URLs the emulator hands out (profile pictures, attachments); `None` =
    /// `http://127.0.0.1:PORT` of the listener.
    pub public_base_url: Option<String>,
    /// Optional Send API limit per thread per second (613 when exceeded).
    pub thread_rate_limit_per_sec: Option<u32>,
    /// Echo `app_id` as a JSON string instead of a number (docs show both).
    pub app_id_as_string: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            app_id: "1517776481860111".into(),
            app_secret: "sandbox-app-secret-0123456789abcdef".into(),
            verify_token: "sandbox-verify-token".into(),
            page_id: "100000000000001".into(),
            page_username: "parleydemo".into(),
            page_name: "Parley Demo Shop".into(),
            page_token: "EAAsandboxPageToken0123456789".into(),
            callback_url: None,
            verify_on_launch: false,
            webhook_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            head_of_line: true,
            human_agent_feature: true,
            utility_messaging: false,
            get_started: true,
            get_started_payload: "GET_STARTED".into(),
            subscribed: true,
            subscribed_fields: ALL_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            routing: false,
            require_messaging_type: true,
            require_appsecret_proof: false,
            delivery_delay: Some(Duration::ZERO),
            read_delay: None,
            read_on_page_open: true,
            attachment_ttl: Duration::from_secs(3600),
            attachment_max_fetches: None,
            start_time_ms: None,
            clock_runs: true,
            seed: None,
            public_base_url: None,
            thread_rate_limit_per_sec: None,
            app_id_as_string: false,
        }
    }
}

/// Webhook fields a fresh app subscribes to by default.
pub const ALL_FIELDS: &[&str] = &[
    "messages",
    "message_echoes",
    "message_deliveries",
    "message_reads",
    "messaging_postbacks",
    "messaging_referrals",
    "messaging_optins",
    "messaging_handovers",
    "standby",
    "message_reactions",
];

/// How the webhook sender retries a failed delivery.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries sent right after a failure, without waiting.
    pub immediate_retries: u32,
    /// Real-time waits before the following retries; the last one repeats.
    pub backoff: Vec<Duration>,
    /// Virtual time of continuous failure before the "developer alert".
    pub alert_after: Duration,
    /// Virtual time of continuous failure before the app is unsubscribed from the Page.
    pub disable_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            immediate_retries: 3,
            backoff: [1, 2, 5, 10, 30, 60].into_iter().map(Duration::from_secs).collect(),
            alert_after: Duration::from_secs(15 * 60),
            disable_after: Duration::from_secs(60 * 60),
        }
    }
}

impl RetryPolicy {
    /// Wait before retry number `retry` (1-based) after a failure.
    pub fn delay_before(&self, retry: u32) -> Duration {
        if retry <= self.immediate_retries {
            return Duration::ZERO;
        }
        let index = (retry - self.immediate_retries - 1) as usize;
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_immediate_then_back_off_and_repeat_the_last_delay() {
        let policy = RetryPolicy {
            immediate_retries: 3,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
            ..RetryPolicy::default()
        };
        let delays: Vec<u64> = (1..=7).map(|n| policy.delay_before(n).as_secs()).collect();
        assert_eq!(delays, vec![0, 0, 0, 1, 5, 5, 5]);
    }

    #[test]
    fn defaults_use_numeric_ids() {
        let config = SandboxConfig::default();
        assert!(config.app_id.bytes().all(|b| b.is_ascii_digit()));
        assert!(config.page_id.bytes().all(|b| b.is_ascii_digit()));
    }
}
