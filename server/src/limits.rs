//! Small in-memory rate limits: a token bucket per visitor socket for messages, and a failure counter per email
//! address for console sign-in. They protect agents from floods and passwords from guessing; both reset with the
//! process, which is fine for their purpose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled continuously at `per_minute`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { capacity, per_sec: f64::from(per_minute) / 60.0, tokens: capacity, at: Instant::now() }
    }

    /// Takes a token if one is left.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Failed sign-ins per email address in a sliding 15-minute window.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32) -> Self {
        Self { max_failures: max_failures.max(1), window: Duration::from_secs(15 * 60), failures: Mutex::default() }
    }

    fn key(email: &str) -> String {
        email.trim().to_lowercase()
    }

    /// `Some(wait)` when this address must wait before trying again.
    pub fn blocked(&self, email: &str) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = failures.get(&Self::key(email))?;
        let elapsed = since.elapsed();
        (*count >= self.max_failures && elapsed < self.window).then(|| self.window - elapsed)
    }

    pub fn failed(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        failures.retain(|_, (_, since)| since.elapsed() < window);
        let entry = failures.entry(Self::key(email)).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    pub fn succeeded(&self, email: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&Self::key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_over_time() {
        let mut bucket = TokenBucket::new(3, 60);
        let start = bucket.at;
        assert!((0..3).all(|_| bucket.try_take_at(start)));
        assert!(!bucket.try_take_at(start));
        assert!(bucket.try_take_at(start + Duration::from_secs(1)));
        assert!(!bucket.try_take_at(start + Duration::from_secs(1)));
    }

    #[test]
    fn sign_in_is_refused_after_too_many_failures_for_that_address_only() {
        let throttle = LoginThrottle::new(3);
        for _ in 0..3 {
            assert!(throttle.blocked("Dana@shop.example").is_none());
            throttle.failed("dana@shop.example ");
        }
        assert!(throttle.blocked("dana@shop.example").is_some());
        assert!(throttle.blocked("other@shop.example").is_none());
        throttle.succeeded("DANA@shop.example");
        assert!(throttle.blocked("dana@shop.example").is_none());
    }
}
