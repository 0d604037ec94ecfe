//! Flood control for the sockets: how many frames a visitor, a client address and an agent may send, how many
//! sockets an address may hold, and the per-socket gates that keep repeated frames from doing repeated work.
//!
//! The limiters are `governor` keyed limiters (GCRA: a burst, then a steady rate) shared by every socket, so
//! reconnecting does not refill a bucket. A visitor's frame must pass both its visitor bucket and its address
//! bucket. Everything lives in memory and resets with the process, which is fine for its purpose (protecting the
//! database and the agents from floods).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_ip;
use crate::config::LimitSettings;

/// What a visitor frame costs: which per-visitor bucket it draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitorFrame {
    /// `send`: a message to store.
    Message,
    /// `messenger_link` / `unlink_messenger`: a link row to write or a binding to undo.
    Link,
    /// Everything else: typing, read, ping, a repeated hello, a frame that could not be read.
    Other,
}

/// Checks run between housekeeping passes that drop idle keys.
const HOUSEKEEPING_EVERY: u32 = 4096;

/// Every flood limit of the server; one per process, shared by all sockets.
pub struct FloodControl {
    visitor_messages: DefaultKeyedRateLimiter<String>,
    visitor_links: DefaultKeyedRateLimiter<String>,
    visitor_frames: DefaultKeyedRateLimiter<String>,
    ip_frames: DefaultKeyedRateLimiter<IpAddr>,
    ip_hellos: DefaultKeyedRateLimiter<IpAddr>,
    agent_frames: DefaultKeyedRateLimiter<String>,
    max_sockets_per_ip: u32,
    sockets: Mutex<HashMap<IpAddr, u32>>,
    checks: AtomicU32,
}

fn quota(burst: u32, per_minute: u32) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(nonzero(per_minute)).allow_burst(nonzero(burst))
}

impl FloodControl {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            visitor_messages: RateLimiter::keyed(quota(
                limits.visitor_message_burst,
                limits.visitor_messages_per_minute,
            )),
            visitor_links: RateLimiter::keyed(quota(limits.visitor_links_per_minute, limits.visitor_links_per_minute)),
            visitor_frames: RateLimiter::keyed(quota(limits.visitor_frame_burst, limits.visitor_frames_per_minute)),
            ip_frames: RateLimiter::keyed(quota(limits.ip_frame_burst, limits.ip_frames_per_minute)),
            ip_hellos: RateLimiter::keyed(quota(limits.ip_hellos_per_minute, limits.ip_hellos_per_minute)),
            agent_frames: RateLimiter::keyed(quota(limits.agent_frame_burst, limits.agent_frames_per_minute)),
            max_sockets_per_ip: limits.max_sockets_per_ip.max(1),
            sockets: Mutex::default(),
            checks: AtomicU32::new(0),
        }
    }

    /// Whether a visitor's frame may be handled: it must fit the visitor's bucket for its kind and its address's.
    pub fn visitor_frame(&self, visitor: &str, ip: IpAddr, kind: VisitorFrame) -> bool {
        self.housekeeping();
        let bucket = match kind {
            VisitorFrame::Message => &self.visitor_messages,
            VisitorFrame::Link => &self.visitor_links,
            VisitorFrame::Other => &self.visitor_frames,
        };
        // The visitor's own bucket first: a visitor refused anyway does not eat its neighbours' address budget.
        bucket.check_key(&visitor.to_string()).is_ok() && self.ip_frames.check_key(&client_ip::limit_key(ip)).is_ok()
    }

    /// Whether this address may open another visitor session (say `hello`) now.
    pub fn hello(&self, ip: IpAddr) -> bool {
        self.housekeeping();
        let key = client_ip::limit_key(ip);
        self.ip_hellos.check_key(&key).is_ok() && self.ip_frames.check_key(&key).is_ok()
    }

    /// Whether an agent's frame may be handled.
    pub fn agent_frame(&self, agent_id: &str) -> bool {
        self.housekeeping();
        self.agent_frames.check_key(&agent_id.to_string()).is_ok()
    }

    /// Takes one of the address's socket slots; `None` when it holds `max_sockets_per_ip` already. The slot is
    /// given back when the returned guard drops.
    pub fn open_socket(self: &Arc<Self>, ip: IpAddr) -> Option<SocketSlot> {
        let key = client_ip::limit_key(ip);
        let mut sockets = self.lock_sockets();
        let open = sockets.entry(key).or_insert(0);
        if *open >= self.max_sockets_per_ip {
            return None;
        }
        *open += 1;
        Some(SocketSlot { floods: Arc::clone(self), key })
    }

    fn lock_sockets(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Every update is one increment or decrement: a poisoned map is still consistent.
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now and then, forgets keys whose buckets are full again (they would behave exactly like new keys).
    fn housekeeping(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % HOUSEKEEPING_EVERY != HOUSEKEEPING_EVERY - 1 {
            return;
        }
        fn sweep<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        sweep(&self.visitor_messages);
        sweep(&self.visitor_links);
        sweep(&self.visitor_frames);
        sweep(&self.ip_frames);
        sweep(&self.ip_hellos);
        sweep(&self.agent_frames);
    }
}

/// One open socket of an address; dropping it frees the slot.
pub struct SocketSlot {
    floods: Arc<FloodControl>,
    key: IpAddr,
}

impl std::fmt::Debug for SocketSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketSlot").field("key", &self.key).finish()
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut sockets = self.floods.lock_sockets();
        if let Some(open) = sockets.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                sockets.remove(&self.key);
            }
        }
    }
}

/// How often an unchanged "typing" is passed on: often enough to keep an indicator alive (clients repeat it every
/// 3 s), rarely enough that a flood of it is one message every two seconds.
pub const TYPING_REFRESH: Duration = Duration::from_secs(2);

/// Passes on typing changes only: a new state at once, the same "typing" again after [`TYPING_REFRESH`], a
/// "stopped" only after a "typing".
#[derive(Debug, Default)]
pub struct TypingGate {
    last: Option<(bool, Instant)>,
}

impl TypingGate {
    /// Whether to forward `typing` now.
    pub fn pass(&mut self, typing: bool) -> bool {
        self.pass_at(typing, Instant::now())
    }

    fn pass_at(&mut self, typing: bool, now: Instant) -> bool {
        let forward = match self.last {
            None => typing,
            Some((prev, _)) if prev != typing => true,
            Some((_, at)) => typing && now.saturating_duration_since(at) >= TYPING_REFRESH,
        };
        if forward {
            self.last = Some((typing, now));
        }
        forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitSettings {
        LimitSettings {
            visitor_frame_burst: 3,
            visitor_frames_per_minute: 1,
            ip_frame_burst: 5,
            ip_frames_per_minute: 1,
            max_sockets_per_ip: 2,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn a_visitor_bucket_is_shared_by_its_sockets_and_an_address_bucket_by_its_visitors() {
        let floods = FloodControl::new(&limits());
        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        assert!((0..3).all(|_| floods.visitor_frame("a", ip, VisitorFrame::Other)));
        assert!(!floods.visitor_frame("a", ip, VisitorFrame::Other), "visitor a is over its burst");
        // Visitor b has its own bucket but the same address, which has two frames left of its 5.
        assert!(floods.visitor_frame("b", ip, VisitorFrame::Other));
        assert!(floods.visitor_frame("b", ip, VisitorFrame::Other));
        assert!(!floods.visitor_frame("b", ip, VisitorFrame::Other), "the address is over its burst");
        let other: IpAddr = "203.0.113.2".parse().expect("ip");
        assert!(floods.visitor_frame("c", other, VisitorFrame::Other));
    }

    #[test]
    fn socket_slots_are_capped_per_address_and_given_back_on_drop() {
        let floods = Arc::new(FloodControl::new(&limits()));
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let same_net: IpAddr = "2001:db8::2".parse().expect("ip");
        let a = floods.open_socket(ip).expect("first");
        let _b = floods.open_socket(same_net).expect("second");
        assert!(floods.open_socket(ip).is_none(), "the /64 holds two already");
        drop(a);
        assert!(floods.open_socket(ip).is_some());
    }

    #[test]
    fn typing_is_forwarded_on_change_and_refreshed_at_most_every_two_seconds() {
        let mut gate = TypingGate::default();
        let t0 = Instant::now();
        assert!(!gate.pass_at(false, t0), "nothing to stop");
        assert!(gate.pass_at(true, t0));
        assert!(!gate.pass_at(true, t0 + Duration::from_millis(500)));
        assert!(gate.pass_at(true, t0 + TYPING_REFRESH));
        assert!(gate.pass_at(false, t0 + TYPING_REFRESH));
        assert!(!gate.pass_at(false, t0 + TYPING_REFRESH * 2));
    }
}
