//! Failure injection: scripted ("the next N calls") and probabilistic (seeded) faults.
//!
//! Send API faults are consumed once per `POST …/messages` call, after authentication and
//! request validation. Webhook faults are consumed where they apply: payload-level ones
//! (duplicate, reorder, batch, bad signature) by the sender, event-level ones (drop the
//! referral, delivery without `mids`, sticker shape) where the event is built.

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// A fault of the Send API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendFault {
    /// 1200 "Temporary send message failure".
    TemporaryFailure,
    /// 2 "Service temporarily unavailable".
    ServiceUnavailable,
    /// 1/99 "An unknown error occurred".
    UnknownError,
    /// 1/1357046: the message IS delivered (echo and all) but the call returns an error.
    DeliveredButError,
    /// The call hangs for `ms` real milliseconds (past the client's timeout), then the
    /// message is delivered anyway even if the client has gone.
    Hang {
        /// How long to hang.
        ms: u64,
    },
    /// Throttling: 613 or 80006 (default) with `X-Business-Use-Case-Usage`.
    RateLimited {
        /// 613, 80006, 4, 17, 32…
        #[serde(default = "default_throttle_code")]
        code: i64,
    },
    /// 190: the token is revoked now and stays revoked until restored.
    TokenRevoked,
    /// 551: the customer blocks the Page just now (stays blocked).
    UserBlocks,
    /// 2018300: the Page Inbox takes the thread just now (routing turns on).
    InboxTakesThread,
    /// 100/2018008: the attachment URL is unreachable.
    AttachmentUnreachable,
    /// An HTTP 5xx (500 and 503 with a JSON body, 502 with an HTML page).
    ServerError {
        /// 500, 502, 503…
        status: u16,
    },
    /// Anything else.
    Custom {
        /// `error.code`.
        code: i64,
        /// `error.error_subcode`.
        #[serde(default)]
        subcode: Option<i64>,
        /// `error.message`.
        #[serde(default)]
        message: Option<String>,
        /// HTTP status (default 400).
        #[serde(default)]
        status: Option<u16>,
    },
}

fn default_throttle_code() -> i64 {
    80006
}

/// A fault of the webhook sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebhookFault {
    /// Deliver the same payload (same bytes, same mids) twice.
    Duplicate,
    /// Hold this payload and deliver it after the next one.
    Reorder,
    /// Gather `events` events into one payload spread over `entries` `entry[]` items.
    Batch {
        /// Events to gather (waits briefly for them).
        events: usize,
        /// `entry[]` items to spread them over.
        #[serde(default = "one")]
        entries: usize,
    },
    /// Sign one delivery attempt with a wrong secret (the retry is signed correctly).
    BadSignature,
    /// Drop `postback.referral` / the `messaging_referrals` event (Messenger for Android).
    DropReferral,
    /// Send a delivery event with only the `watermark`.
    NoDeliveryMids,
    /// Send a sticker as both `image` and `sticker` attachments (regardless of the date).
    StickerAsImageAndSticker,
}

fn one() -> usize {
    1
}

/// A fault plus when it fires. Without `times` or `probability` it fires once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule<F> {
    /// What happens.
    #[serde(flatten)]
    pub fault: F,
    /// Fire on the next N matching calls (combined with `probability`: at most N times).
    #[serde(default)]
    pub times: Option<u32>,
    /// Fire with this probability on each matching call (seeded RNG).
    #[serde(default)]
    pub probability: Option<f64>,
}

impl<F> FaultRule<F> {
    /// Fires on the next matching call only.
    pub fn once(fault: F) -> Self {
        Self::times(fault, 1)
    }

    /// Fires on the next `n` matching calls.
    pub fn times(fault: F, n: u32) -> Self {
        Self { fault, times: Some(n), probability: None }
    }

    /// Fires with probability `p` on every matching call.
    pub fn probability(fault: F, p: f64) -> Self {
        Self { fault, times: None, probability: Some(p) }
    }
}

/// The active fault rules.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    /// Send API rules, checked in order.
    pub send: Vec<FaultRule<SendFault>>,
    /// Webhook rules, checked in order.
    pub webhook: Vec<FaultRule<WebhookFault>>,
    /// Send API calls that reached fault injection (authenticated and valid), faulted or not, since the rules were
    /// last cleared: tests count the calls an app makes during an outage.
    pub send_calls: u64,
}

impl Faults {
    /// Takes the Send API fault for this call, if one fires.
    pub fn take_send(&mut self, rng: &mut StdRng) -> Option<SendFault> {
        self.send_calls += 1;
        take(&mut self.send, rng, |_| true)
    }

    /// Takes a webhook fault accepted by `applies`, if one fires.
    pub fn take_webhook(&mut self, rng: &mut StdRng, applies: impl Fn(&WebhookFault) -> bool) -> Option<WebhookFault> {
        take(&mut self.webhook, rng, applies)
    }
}

fn take<F: Clone>(rules: &mut Vec<FaultRule<F>>, rng: &mut StdRng, applies: impl Fn(&F) -> bool) -> Option<F> {
    let mut fired = None;
    for (index, rule) in rules.iter_mut().enumerate() {
        if !applies(&rule.fault) || rule.times == Some(0) {
            continue;
        }
        let hit = match rule.probability {
            Some(p) => rng.random_bool(p.clamp(0.0, 1.0)),
            None => true,
        };
        if hit {
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
            }
            fired = Some((index, rule.fault.clone()));
            break;
        }
    }
    let (index, fault) = fired?;
    if rules.get(index).is_some_and(|r| r.times == Some(0)) {
        rules.remove(index);
    }
    Some(fault)
}

/// Normalises a rule: with neither `times` nor `probability` it fires once.
pub fn normalise<F>(mut rule: FaultRule<F>) -> FaultRule<F> {
    if rule.times.is_none() && rule.probability.is_none() {
        rule.times = Some(1);
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scripted_rules_fire_n_times_then_vanish() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut faults = Faults::default();
        faults.send.push(FaultRule::times(SendFault::TemporaryFailure, 2));
        assert_eq!(faults.take_send(&mut rng), Some(SendFault::TemporaryFailure));
        assert_eq!(faults.take_send(&mut rng), Some(SendFault::TemporaryFailure));
        assert_eq!(faults.take_send(&mut rng), None);
        assert!(faults.send.is_empty());
        assert_eq!(faults.send_calls, 3);
    }

    #[test]
    fn probabilistic_rules_are_reproducible_with_a_seed() {
        let run = || {
            let mut rng = StdRng::seed_from_u64(42);
            let mut faults = Faults::default();
            faults.send.push(FaultRule::probability(SendFault::UnknownError, 0.5));
            (0..64).map(|_| faults.take_send(&mut rng).is_some()).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|hit| *hit) && first.iter().any(|hit| !*hit));
    }

    #[test]
    fn rules_parse_from_flat_json() {
        let rule: FaultRule<SendFault> =
            serde_json::from_str(r#"{"kind":"hang","ms":1500,"times":2}"#).expect("valid rule");
        assert_eq!(rule.fault, SendFault::Hang { ms: 1500 });
        assert_eq!(rule.times, Some(2));
        let rule: FaultRule<WebhookFault> = serde_json::from_str(r#"{"kind":"batch","events":3}"#).expect("valid rule");
        assert_eq!(rule.fault, WebhookFault::Batch { events: 3, entries: 1 });
        let rule: FaultRule<SendFault> = serde_json::from_str(r#"{"kind":"rate_limited"}"#).expect("valid rule");
        assert_eq!(rule.fault, SendFault::RateLimited { code: 80006 });
    }

    #[test]
    fn webhook_rules_only_fire_where_they_apply() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut faults = Faults::default();
        faults.webhook.push(FaultRule::once(WebhookFault::DropReferral));
        assert_eq!(faults.take_webhook(&mut rng, |f| *f == WebhookFault::Duplicate), None);
        assert_eq!(
            faults.take_webhook(&mut rng, |f| *f == WebhookFault::DropReferral),
            Some(WebhookFault::DropReferral)
        );
    }
}
