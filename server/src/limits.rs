//! Small in-memory rate limits: a failure counter per email address for console sign-in (socket frame limits are
//! in `ws::flood`). It protects passwords from guessing and resets with the process, which is fine for its purpose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
