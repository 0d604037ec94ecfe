//! Wall-clock time as a handle: [`Clock::system`] in production, [`Clock::adjustable`] in tests, which move it
//! forward with [`Clock::advance`] (e.g. past Messenger's 24 h window) instead of editing stored timestamps. Every
//! user of wall time (store rows, the Messenger intake and outbox, link expiry, sessions) reads it from the one
//! clock in the application state. Durations measured between two moments (rate limits, timeouts) keep using
//! `tokio::time::Instant`, which is monotonic and not this clock's business.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Epoch-millisecond time source; cheap to clone (clones share one offset).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// How far this clock runs ahead of the system clock (always 0 for [`Clock::system`]).
    offset_ms: AtomicI64,
    adjustable: bool,
    /// Woken on every [`Clock::advance`], so sleepers waiting for a wall-clock time re-check it.
    advanced: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that runs with the system clock and that tests can move forward.
    pub fn adjustable() -> Self {
        Self { inner: Arc::new(Inner { adjustable: true, ..Inner::default() }) }
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        system_now_ms().saturating_add(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves an adjustable clock forward by `by` and wakes whoever waits in [`Clock::advanced`]. Returns `false`
    /// (and changes nothing) on the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        if !self.inner.adjustable {
            return false;
        }
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.inner.offset_ms.fetch_add(by, Ordering::Relaxed);
        self.inner.advanced.notify_waiters();
        true
    }

    /// Resolves at the next [`Clock::advance`] (never, on the system clock): a worker sleeping until a wall-clock
    /// time selects on it to notice that the time came early.
    pub async fn advanced(&self) {
        if self.inner.adjustable {
            self.inner.advanced.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_and_its_clones_follow() {
        let clock = Clock::adjustable();
        let other = clock.clone();
        let before = other.now_ms();
        assert!(clock.advance(Duration::from_secs(25 * 3600)));
        assert!(other.now_ms() - before >= 25 * 3600 * 1000);
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let clock = Clock::system();
        let before = clock.now_ms();
        assert!(!clock.advance(Duration::from_secs(3600)));
        assert!(clock.now_ms() - before < 3600 * 1000);
    }
}
