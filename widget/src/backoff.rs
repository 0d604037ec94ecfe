//! Reconnect delays: exponential backoff with full jitter, plus the heartbeat timings. Pure, so it is tested on the
//! host; `connection.rs` feeds it random numbers and the attempt counter.

/// First retry window.
pub const BASE_MS: u32 = 500;
/// Largest retry window.
pub const CAP_MS: u32 = 30_000;
/// How often the client sends `Ping` while connected.
pub const PING_EVERY_MS: i64 = 25_000;
/// A socket that delivered no frame for this long is considered dead and replaced.
pub const STALE_AFTER_MS: i64 = 60_000;

/// Upper bound of the delay before retry number `attempt` (0-based): `min(CAP, BASE * 2^attempt)`.
pub fn window_ms(attempt: u32) -> u32 {
    BASE_MS.saturating_mul(1u32 << attempt.min(16)).min(CAP_MS)
}

/// Full jitter: a delay uniformly drawn from `0..=window_ms(attempt)` using the caller's random number.
pub fn delay_ms(attempt: u32, random: u32) -> u32 {
    random % (window_ms(attempt) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_doubles_from_base_up_to_the_cap() {
        assert_eq!(window_ms(0), 500);
        assert_eq!(window_ms(1), 1_000);
        assert_eq!(window_ms(2), 2_000);
        assert_eq!(window_ms(5), 16_000);
        assert_eq!(window_ms(6), 30_000);
        assert_eq!(window_ms(40), 30_000);
        assert_eq!(window_ms(u32::MAX), 30_000);
    }

    #[test]
    fn delay_stays_inside_the_window_and_uses_the_randomness() {
        for attempt in 0..20 {
            for r in [0, 1, 499, 500, 501, 12_345, u32::MAX / 3, u32::MAX] {
                assert!(delay_ms(attempt, r) <= window_ms(attempt));
            }
        }
        assert_eq!(delay_ms(0, 0), 0);
        assert_eq!(delay_ms(0, 500), 500);
        assert_eq!(delay_ms(0, 501), 0);
        assert_ne!(delay_ms(3, 1234), delay_ms(3, 1235));
    }
}
