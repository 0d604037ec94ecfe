//! The virtual clock: real time plus test-controlled jumps.
//!
//! Every timestamp the emulator hands out (webhook `timestamp`, `watermark`, window checks,
//! attachment expiry) comes from here, so tests can cross the 24 h and 7 d windows instantly.
//! Readings never go backwards.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Virtual epoch-millisecond clock.
#[derive(Debug, Clone)]
pub struct Clock {
    start_ms: i64,
    started: Instant,
    offset_ms: i64,
    runs: bool,
    last_ms: i64,
}

impl Clock {
    /// Starts at `start_ms` (or the system clock) and, if `runs`, follows real time.
    pub fn new(start_ms: Option<i64>, runs: bool) -> Self {
        let start_ms = start_ms.unwrap_or_else(system_now_ms);
        Self { start_ms, started: Instant::now(), offset_ms: 0, runs, last_ms: start_ms }
    }

    /// The current virtual time in epoch milliseconds (monotonic, non-decreasing).
    pub fn now_ms(&mut self) -> i64 {
        let real =
            if self.runs { i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX / 2) } else { 0 };
        let now = self.start_ms + real + self.offset_ms;
        self.last_ms = self.last_ms.max(now);
        self.last_ms
    }

    /// Jumps the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.offset_ms += i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
    }
}

/// Milliseconds since the epoch by the system clock.
pub fn system_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(0)).unwrap_or(0)
}

/// A duration as whole milliseconds (saturating).
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_clock_moves_only_by_advance() {
        let mut clock = Clock::new(Some(1_000), false);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
    }

    #[test]
    fn a_running_clock_never_goes_backwards() {
        let mut clock = Clock::new(None, true);
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(b >= a);
    }
}
