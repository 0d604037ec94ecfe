//! Messenger's messaging windows and what may be sent when: a reply goes out as `RESPONSE` within 24 h of the
//! customer's last action on Messenger; with the HUMAN_AGENT feature, a human agent's reply may go out with that
//! tag up to 7 days after the customer's last message; after that nothing may be sent until the customer writes
//! again, and the agent is told why. Pure functions of stored times and `now`: the store loads the contact's
//! thread in the message's transaction, asks [`MirrorPolicy::decide`], and stores the answer.

use super::send_api::MessagingType;
use crate::sentences;

/// The standard messaging window after the customer's last action (message, postback, referral).
pub const RESPONSE_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The HUMAN_AGENT window after the customer's last message.
pub const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// How a message written here is mirrored to Messenger.
#[derive(Clone, Copy, Debug, Default)]
pub struct MirrorPolicy {
    /// The Page may reply with the HUMAN_AGENT tag from 24 h to 7 d after the customer's last message.
    pub human_agent: bool,
}

/// A contact's Messenger thread, as stored.
#[derive(Clone, Debug)]
pub struct Thread {
    pub psid: String,
    /// The customer's last action on Messenger (epoch ms).
    pub last_action_at: Option<i64>,
    /// The customer's last message on Messenger (epoch ms).
    pub last_message_at: Option<i64>,
}

/// What to do with a message written here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mirror {
    /// Queue it for the Send API with this messaging type.
    Send(MessagingType),
    /// Do not send it; agents read `detail` under the message.
    NotSent { detail: &'static str },
}

impl MirrorPolicy {
    /// What may be sent now for a message by a human agent (`by_agent`) or by Parley itself.
    pub fn decide(&self, by_agent: bool, thread: &Thread, now: i64) -> Mirror {
        if thread.last_action_at.is_some_and(|t| now - t < RESPONSE_WINDOW_MS) {
            Mirror::Send(MessagingType::Response)
        } else if self.human_agent
            && by_agent
            && thread.last_message_at.is_some_and(|t| now - t < HUMAN_AGENT_WINDOW_MS)
        {
            Mirror::Send(MessagingType::HumanAgent)
        } else if self.human_agent {
            Mirror::NotSent { detail: sentences::NOT_SENT_AFTER_7D }
        } else {
            Mirror::NotSent { detail: sentences::NOT_SENT_AFTER_24H }
        }
    }

    /// Until when a human agent may still answer with the HUMAN_AGENT tag (`None` without the feature).
    pub fn human_agent_until(&self, last_message_at: Option<i64>) -> Option<i64> {
        last_message_at.filter(|_| self.human_agent).map(|t| t.saturating_add(HUMAN_AGENT_WINDOW_MS))
    }
}

/// Until when a plain reply may go out.
pub fn response_until(last_action_at: Option<i64>) -> Option<i64> {
    last_action_at.map(|t| t.saturating_add(RESPONSE_WINDOW_MS))
}

impl MessagingType {
    /// How the outbox stores it.
    pub fn as_stored(self) -> &'static str {
        match self {
            MessagingType::Response => "RESPONSE",
            MessagingType::HumanAgent => "HUMAN_AGENT",
        }
    }

    /// From the outbox's column (anything unknown is a plain response).
    pub fn from_stored(stored: &str) -> Self {
        if stored == "HUMAN_AGENT" { MessagingType::HumanAgent } else { MessagingType::Response }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * 1000;
    const NOW: i64 = 1_000 * 24 * HOUR;

    fn thread(action_hours_ago: i64, message_hours_ago: i64) -> Thread {
        Thread {
            psid: "p".into(),
            last_action_at: Some(NOW - action_hours_ago * HOUR),
            last_message_at: Some(NOW - message_hours_ago * HOUR),
        }
    }

    #[test]
    fn within_24_hours_anyone_may_reply() {
        for policy in [MirrorPolicy { human_agent: false }, MirrorPolicy { human_agent: true }] {
            for by_agent in [true, false] {
                assert_eq!(policy.decide(by_agent, &thread(23, 23), NOW), Mirror::Send(MessagingType::Response));
            }
        }
    }

    #[test]
    fn a_postback_reopens_the_response_window_without_a_message() {
        let policy = MirrorPolicy::default();
        assert_eq!(policy.decide(true, &thread(1, 200), NOW), Mirror::Send(MessagingType::Response));
    }

    #[test]
    fn from_24_hours_to_7_days_only_a_human_agent_may_reply_and_only_with_the_feature() {
        let with = MirrorPolicy { human_agent: true };
        assert_eq!(with.decide(true, &thread(25, 25), NOW), Mirror::Send(MessagingType::HumanAgent));
        assert_eq!(with.decide(false, &thread(25, 25), NOW), Mirror::NotSent { detail: sentences::NOT_SENT_AFTER_7D });
        let without = MirrorPolicy { human_agent: false };
        assert_eq!(
            without.decide(true, &thread(25, 25), NOW),
            Mirror::NotSent { detail: sentences::NOT_SENT_AFTER_24H }
        );
    }

    #[test]
    fn after_7_days_nothing_may_be_sent() {
        let with = MirrorPolicy { human_agent: true };
        assert_eq!(
            with.decide(true, &thread(24 * 7, 24 * 7), NOW),
            Mirror::NotSent { detail: sentences::NOT_SENT_AFTER_7D }
        );
    }

    #[test]
    fn a_contact_who_never_wrote_on_messenger_gets_nothing() {
        let never = Thread { psid: "p".into(), last_action_at: None, last_message_at: None };
        assert!(matches!(MirrorPolicy { human_agent: true }.decide(true, &never, NOW), Mirror::NotSent { .. }));
    }

    #[test]
    fn the_windows_end_where_the_console_says() {
        assert_eq!(response_until(Some(NOW)), Some(NOW + 24 * HOUR));
        assert_eq!(MirrorPolicy { human_agent: true }.human_agent_until(Some(NOW)), Some(NOW + 7 * 24 * HOUR));
        assert_eq!(MirrorPolicy { human_agent: false }.human_agent_until(Some(NOW)), None);
    }

    #[test]
    fn messaging_types_round_trip_through_the_outbox_column() {
        for kind in [MessagingType::Response, MessagingType::HumanAgent] {
            assert_eq!(MessagingType::from_stored(kind.as_stored()), kind);
        }
    }
}
