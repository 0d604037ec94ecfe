//! Small in-memory rate limits: a token bucket per visitor socket for messages (console sign-in has its own guard,
//! `crate::signin`). They protect agents from floods; they reset with the process, which is fine for their purpose.

use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
