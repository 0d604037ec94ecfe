//! Console sign-in protection: who may try a password, and how much password hashing runs at once.
//!
//! - Hashing runs in a bounded pool ([`AuthSettings::max_concurrent_hashes`] slots): argon2id needs ~19 MiB per
//!   hash, so unbounded parallel sign-ins could exhaust memory. A sign-in that finds no slot within
//!   `auth.hash_wait_ms` is answered "busy" instead of queueing without end.
//! - Each client IP has an attempt rate (a `governor` keyed limiter), whatever emails it tries.
//! - Failures for one email *from one IP* earn growing delays (exponential backoff, capped), never a lockout:
//!   an attacker's failures slow only the attacker's own address, so the real agent signs in from anywhere else.
//! - Admission is decided and recorded under one lock before the password is checked (the attempt counts as a
//!   failure until it succeeds), so parallel attempts cannot all slip past the limit.
//!
//! State is in memory and resets with the process, which is fine for its purpose.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::auth;
use crate::config::AuthSettings;

/// (email, client IP) pairs remembered at most; past it, the pair idle the longest is forgotten.
const MAX_TRACKED: usize = 100_000;
/// Idle records (and idle per-IP rate states) are dropped every this many attempts.
const PRUNE_EVERY: usize = 4096;

/// Why an attempt was not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This IP address made too many attempts; it may try again after the wait.
    TooManyFromIp(Duration),
    /// This email failed too often from this IP address; it may try again after the wait.
    Backoff(Duration),
}

impl Refusal {
    pub fn wait(&self) -> Duration {
        match self {
            Self::TooManyFromIp(wait) | Self::Backoff(wait) => *wait,
        }
    }
}

/// The password could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Every hashing slot stayed taken for `auth.hash_wait_ms`.
    #[error("too many sign-ins are being checked at once")]
    Busy,
    #[error("password check failed: {0}")]
    Failed(#[from] tokio::task::JoinError),
}

/// How many password hashes run right now, and the most that ever ran at once.
#[derive(Debug, Default)]
pub struct HashGauge {
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl HashGauge {
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(Arc::clone(self))
    }
}

struct GaugeGuard(Arc<HashGauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Failures {
    count: u32,
    /// No attempt before this instant.
    next_at: Instant,
    last: Instant,
}

type Key = (String, IpAddr);

/// The sign-in guard shared by every console request.
pub struct SignInGuard {
    hashing: Arc<Semaphore>,
    hash_wait: Duration,
    gauge: Arc<HashGauge>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    failures: Mutex<HashMap<Key, Failures>>,
    /// Failures per (email, IP) before delays start.
    free_failures: u32,
    base: Duration,
    max: Duration,
    /// Attempts seen, to prune idle state now and then.
    admitted: AtomicUsize,
}

/// An admitted attempt. It already counts as a failure; [`Attempt::succeeded`] clears the record and
/// [`Attempt::not_checked`] takes the count back when the password was never checked.
#[must_use]
pub struct Attempt<'a> {
    guard: &'a SignInGuard,
    key: Key,
}

impl Attempt<'_> {
    /// The password was right: this email starts afresh from this IP.
    pub fn succeeded(self) {
        self.guard.lock().remove(&self.key);
    }

    /// The password was never checked (the server was busy): this attempt does not count.
    pub fn not_checked(self) {
        if let Some(entry) = self.guard.lock().get_mut(&self.key) {
            entry.count = entry.count.saturating_sub(1);
        }
    }
}

impl SignInGuard {
    /// `free_failures` is `limits.login_failures`: failures per email and IP before delays start.
    pub fn new(settings: &AuthSettings, free_failures: u32) -> anyhow::Result<Self> {
        settings.validate()?;
        let per_minute = NonZeroU32::new(settings.attempts_per_ip_per_minute)
            .ok_or_else(|| anyhow::anyhow!("auth.attempts_per_ip_per_minute must be at least 1"))?;
        Ok(Self {
            hashing: Arc::new(Semaphore::new(settings.max_concurrent_hashes)),
            hash_wait: Duration::from_millis(settings.hash_wait_ms),
            gauge: Arc::default(),
            per_ip: RateLimiter::keyed(Quota::per_minute(per_minute)),
            failures: Mutex::default(),
            free_failures: free_failures.max(1),
            base: Duration::from_secs(settings.backoff_base_secs),
            max: Duration::from_secs(settings.backoff_max_secs),
            admitted: AtomicUsize::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay after the `count`-th failure: none before `free_failures`, then `base`, doubling, up to `max`.
    fn delay(&self, count: u32) -> Duration {
        let Some(over) = count.checked_sub(self.free_failures) else { return Duration::ZERO };
        self.base.saturating_mul(1u32 << over.min(20)).min(self.max)
    }

    /// Decides, atomically, whether this attempt may check a password; if so it is recorded at once.
    pub fn admit(&self, email: &str, ip: IpAddr) -> Result<Attempt<'_>, Refusal> {
        self.admit_at(email, ip, Instant::now())
    }

    fn admit_at(&self, email: &str, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Refusal> {
        if let Err(not_until) = self.per_ip.check_key(&ip) {
            return Err(Refusal::TooManyFromIp(not_until.wait_time_from(DefaultClock::default().now())));
        }
        let key = (email.trim().to_lowercase(), ip);
        let mut failures = self.lock();
        let admitted = self.admitted.fetch_add(1, Ordering::Relaxed);
        if admitted.is_multiple_of(PRUNE_EVERY) || (failures.len() >= MAX_TRACKED && !failures.contains_key(&key)) {
            self.forget_idle(&mut failures, now);
        }
        let entry = failures.entry(key.clone()).or_insert(Failures { count: 0, next_at: now, last: now });
        if now < entry.next_at {
            return Err(Refusal::Backoff(entry.next_at - now));
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.next_at = now + self.delay(entry.count);
        Ok(Attempt { guard: self, key })
    }

    /// Drops records idle for longer than the longest delay (and, if still full, the one idle the longest).
    fn forget_idle(&self, failures: &mut HashMap<Key, Failures>, now: Instant) {
        let keep = self.max.max(Duration::from_secs(15 * 60));
        failures.retain(|_, f| now.saturating_duration_since(f.last) < keep);
        if failures.len() >= MAX_TRACKED
            && let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
        {
            failures.remove(&oldest);
        }
        self.per_ip.retain_recent();
    }

    /// Checks `password` against `phc` (or against a dummy hash when the account does not exist, so a wrong email
    /// costs as long as a wrong password), in a hashing slot, off the async workers.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, VerifyError> {
        let permit = tokio::time::timeout(self.hash_wait, Arc::clone(&self.hashing).acquire_owned())
            .await
            .map_err(|_| VerifyError::Busy)?
            .map_err(|_| VerifyError::Busy)?;
        let gauge = Arc::clone(&self.gauge);
        // The permit moves into the blocking task: if the request is dropped, the slot stays taken until the
        // hash really finishes.
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = gauge.enter();
            auth::verify_password(&password, phc.as_deref().unwrap_or_else(|| auth::dummy_hash()))
        })
        .await?)
    }

    /// The hashing gauge (for tests and diagnostics).
    pub fn hashing(&self) -> &HashGauge {
        &self.gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(free: u32, base: u64, max: u64) -> SignInGuard {
        let settings = AuthSettings {
            max_concurrent_hashes: 2,
            hash_wait_ms: 10_000,
            attempts_per_ip_per_minute: 1000,
            backoff_base_secs: base,
            backoff_max_secs: max,
        };
        SignInGuard::new(&settings, free).expect("valid settings")
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    #[test]
    fn delays_grow_after_the_free_failures_and_stay_bounded() {
        let g = guard(3, 1, 60);
        let secs: Vec<u64> = (1..=12).map(|n| g.delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(g.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn failures_from_one_ip_never_slow_the_same_email_from_another() {
        let g = guard(2, 30, 300);
        let now = Instant::now();
        for _ in 0..2 {
            let _ = g.admit_at("dana@shop.example", A, now).expect("free attempt");
        }
        assert_eq!(g.admit_at("Dana@Shop.example ", A, now).err(), Some(Refusal::Backoff(Duration::from_secs(30))));
        let attempt = g.admit_at("dana@shop.example", B, now).expect("another IP is not slowed");
        attempt.succeeded();
        // After the delay, the attacker's IP may try once more, and then waits twice as long.
        let later = now + Duration::from_secs(30);
        let _ = g.admit_at("dana@shop.example", A, later).expect("after the delay");
        assert_eq!(g.admit_at("dana@shop.example", A, later).err(), Some(Refusal::Backoff(Duration::from_secs(60))));
    }

    #[test]
    fn a_success_clears_the_record_and_an_unchecked_attempt_does_not_count() {
        let g = guard(2, 30, 300);
        let now = Instant::now();
        g.admit_at("dana@shop.example", A, now).expect("first").not_checked();
        g.admit_at("dana@shop.example", A, now).expect("second").succeeded();
        let _ = g.admit_at("dana@shop.example", A, now).expect("fresh");
        let _ = g.admit_at("dana@shop.example", A, now).expect("fresh");
        assert!(g.admit_at("dana@shop.example", A, now).is_err());
    }

    #[test]
    fn an_ip_over_its_rate_is_refused_whatever_the_email() {
        let settings = AuthSettings {
            max_concurrent_hashes: 1,
            hash_wait_ms: 10,
            attempts_per_ip_per_minute: 3,
            backoff_base_secs: 1,
            backoff_max_secs: 1,
        };
        let g = SignInGuard::new(&settings, 100).expect("valid");
        for n in 0..3 {
            let _ = g.admit(&format!("user{n}@shop.example"), A).expect("within the rate");
        }
        assert!(matches!(g.admit("other@shop.example", A), Err(Refusal::TooManyFromIp(_))));
        let _ = g.admit("other@shop.example", B).expect("another IP has its own rate");
    }

    #[tokio::test]
    async fn a_check_that_finds_no_free_slot_in_time_is_busy() {
        let settings = AuthSettings {
            max_concurrent_hashes: 1,
            hash_wait_ms: 50,
            attempts_per_ip_per_minute: 10,
            backoff_base_secs: 1,
            backoff_max_secs: 1,
        };
        let g = SignInGuard::new(&settings, 5).expect("valid");
        let taken = Arc::clone(&g.hashing).acquire_owned().await.expect("the only slot");
        assert!(matches!(g.verify("pw".into(), None).await, Err(VerifyError::Busy)));
        drop(taken);
        assert!(!g.verify("pw".into(), None).await.expect("a slot is free again"));
    }

    #[test]
    fn unsafe_settings_are_refused() {
        let ok = AuthSettings::default();
        assert!(ok.validate().is_ok() && ok.max_concurrent_hashes >= 1);
        for bad in [
            AuthSettings { max_concurrent_hashes: 0, ..ok.clone() },
            AuthSettings { attempts_per_ip_per_minute: 0, ..ok.clone() },
            AuthSettings { backoff_base_secs: 0, ..ok.clone() },
            AuthSettings { backoff_base_secs: 10, backoff_max_secs: 5, ..ok.clone() },
            AuthSettings { backoff_max_secs: 86_400, ..ok.clone() },
        ] {
            assert!(SignInGuard::new(&bad, 5).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn no_more_hashes_than_slots_run_at_once() {
        let g = Arc::new(guard(100, 1, 1));
        let hash = auth::hash_password("correct horse").expect("hash");
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let g = Arc::clone(&g);
                let hash = hash.clone();
                tokio::spawn(async move { g.verify("correct horse".into(), Some(hash)).await })
            })
            .collect();
        for check in checks {
            assert!(check.await.expect("joins").expect("verified"));
        }
        assert!((1..=2).contains(&g.hashing().peak()), "peak {}", g.hashing().peak());
        assert_eq!(g.hashing().running(), 0);
    }
}
