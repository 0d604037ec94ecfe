//! Throttling of the visitor's own typing signal: `Typing{true}` at most every [`REPEAT_MS`] while the visitor types,
//! `Typing{false}` once after [`IDLE_MS`] without input or when the message is sent. Pure; the timers live in
//! `session.rs`.

/// Minimum gap between two `Typing{typing:true}` frames.
pub const REPEAT_MS: i64 = 3_000;
/// Idle time after which `Typing{typing:false}` is sent.
pub const IDLE_MS: u32 = 4_000;
/// How long an agent's "is typing" indicator survives without a refresh.
pub const AGENT_TYPING_TTL_MS: u32 = 8_000;

#[derive(Default)]
pub struct Throttle {
    last_true_at: Option<i64>,
}

impl Throttle {
    /// The visitor typed at `now`; returns whether to send `Typing{typing:true}`.
    pub fn input(&mut self, now: i64) -> bool {
        match self.last_true_at {
            Some(t) if now - t < REPEAT_MS && now >= t => false,
            _ => {
                self.last_true_at = Some(now);
                true
            }
        }
    }

    /// Idle, sent, emptied or disconnected; returns whether to send `Typing{typing:false}`.
    pub fn stop(&mut self) -> bool {
        self.last_true_at.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_true_at_most_every_three_seconds() {
        let mut t = Throttle::default();
        assert!(t.input(1_000));
        assert!(!t.input(1_500));
        assert!(!t.input(3_999));
        assert!(t.input(4_000));
        assert!(!t.input(4_001));
    }

    #[test]
    fn stop_is_sent_once_and_only_after_a_start() {
        let mut t = Throttle::default();
        assert!(!t.stop());
        assert!(t.input(0));
        assert!(t.stop());
        assert!(!t.stop());
        assert!(t.input(100), "typing again after a stop announces itself at once");
    }

    #[test]
    fn a_clock_going_backwards_does_not_mute_typing() {
        let mut t = Throttle::default();
        assert!(t.input(10_000));
        assert!(t.input(5_000));
    }
}
