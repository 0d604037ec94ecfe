//! The reorder window: holds a Messenger thread's webhook events back so they apply in Messenger timestamp order,
//! even when Meta delivers a later event's webhook before an earlier one's (it does, after failures and retries).
//!
//! Events are queued per thread (the customer's PSID) in `(timestamp, tie-break, arrival)` order; the tie-break is
//! the `mid`, so equal timestamps always order the same way. An event is *ripe* once it has waited the window
//! (`messenger.reorder_window_ms`) since the intake first saw it; a ripe event is released together with every event
//! of its thread that sorts before it. So an earlier event whose webhook comes up to one window after a later one's
//! still goes first, and nothing waits longer than one window. Threads never wait for each other, and events that
//! belong to no thread (receipts, our own echoes) are released at once. An event that sorts before one already
//! released (it came later than the window) is released anyway, marked late, never dropped.
//!
//! Memory only and clock-free (callers pass `now`): what is held here is still an unprocessed row in
//! `webhook_deliveries`, so a crash loses nothing; the next start holds it again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// A thread that has released nothing for this long is forgotten (lateness is judged against what it remembers).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Where an event sorts within its thread: Messenger's timestamp, then a deterministic tie-break (the `mid`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub timestamp: i64,
    pub tie: String,
}

/// An event waiting in the window.
struct Held<E> {
    key: Key,
    /// Arrival order, the last tie-break.
    arrival: u64,
    ripe_at: Instant,
    item: E,
}

impl<E> Held<E> {
    fn order(&self) -> (&Key, u64) {
        (&self.key, self.arrival)
    }
}

struct Thread<E> {
    /// Sorted by [`Held::order`].
    pending: Vec<Held<E>>,
    /// The greatest key released so far.
    released: Option<Key>,
    released_at: Instant,
}

/// An event released for applying.
pub struct Due<E> {
    pub item: E,
    pub key: Key,
    /// It sorts before an event of its thread that was already released: it came after the window.
    pub late: bool,
    thread: Option<String>,
    arrival: u64,
    ripe_at: Instant,
    /// The thread's `released` before this event.
    before: Option<Key>,
}

impl<E> Due<E> {
    /// The customer whose thread it waited in (`None`: an event that may apply at once).
    pub fn thread(&self) -> Option<&str> {
        self.thread.as_deref()
    }
}

pub struct HoldBack<E> {
    window: Duration,
    threads: HashMap<String, Thread<E>>,
    unthreaded: Vec<Held<E>>,
    arrivals: u64,
}

impl<E> HoldBack<E> {
    pub fn new(window: Duration) -> Self {
        Self { window, threads: HashMap::new(), unthreaded: Vec::new(), arrivals: 0 }
    }

    /// Holds an event first seen `now`: in its thread's queue for one window, or (no thread) until the next release.
    pub fn hold(&mut self, thread: Option<String>, key: Key, item: E, now: Instant) {
        self.arrivals += 1;
        let held = Held { key, arrival: self.arrivals, ripe_at: now + self.window, item };
        match thread {
            Some(thread) => {
                let queue = self.threads.entry(thread).or_insert_with(|| Thread {
                    pending: Vec::new(),
                    released: None,
                    released_at: now,
                });
                insert_sorted(&mut queue.pending, held);
            }
            None => self.unthreaded.push(Held { ripe_at: now, ..held }),
        }
    }

    /// Releases every event that may apply at `now`: in each thread, the ripe events and all that sort before them,
    /// in thread order. Threads are merged by timestamp, then arrival (events of different customers in the same
    /// millisecond go in the order they came). Threads idle for long are forgotten.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due<E>> {
        let mut lists: Vec<std::collections::VecDeque<Due<E>>> = Vec::new();
        for held in self.unthreaded.drain(..) {
            lists.push(
                [Due {
                    key: held.key,
                    late: false,
                    thread: None,
                    arrival: held.arrival,
                    ripe_at: held.ripe_at,
                    before: None,
                    item: held.item,
                }]
                .into(),
            );
        }
        for (name, thread) in &mut self.threads {
            let Some(last_ripe) = thread.pending.iter().rposition(|h| h.ripe_at <= now) else { continue };
            let mut list = std::collections::VecDeque::new();
            for held in thread.pending.drain(..=last_ripe) {
                let before = thread.released.clone();
                let late = before.as_ref().is_some_and(|released| held.key < *released);
                if !late {
                    thread.released = Some(held.key.clone());
                }
                thread.released_at = now;
                list.push_back(Due {
                    key: held.key,
                    late,
                    thread: Some(name.clone()),
                    arrival: held.arrival,
                    ripe_at: held.ripe_at,
                    before,
                    item: held.item,
                });
            }
            lists.push(list);
        }
        self.threads
            .retain(|_, t| !t.pending.is_empty() || now.saturating_duration_since(t.released_at) < FORGET_AFTER);
        // Merge the lists by their heads, keeping each list's own order.
        let mut heads: BinaryHeap<Reverse<(i64, u64, usize)>> = lists
            .iter()
            .enumerate()
            .filter_map(|(i, list)| list.front().map(|d| Reverse((d.key.timestamp, d.arrival, i))))
            .collect();
        let mut due = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
        while let Some(Reverse((_, _, i))) = heads.pop() {
            let Some(next) = lists[i].pop_front() else { continue };
            due.push(next);
            if let Some(d) = lists[i].front() {
                heads.push(Reverse((d.key.timestamp, d.arrival, i)));
            }
        }
        due
    }

    /// Puts back released events that were not applied (a failure), as if they had never been released.
    pub fn put_back(&mut self, undone: Vec<Due<E>>, now: Instant) {
        // Latest first, so each thread ends with `released` as it was before its earliest undone event.
        for due in undone.into_iter().rev() {
            let held = Held { key: due.key, arrival: due.arrival, ripe_at: due.ripe_at, item: due.item };
            match due.thread {
                Some(name) => {
                    let thread = self.threads.entry(name).or_insert_with(|| Thread {
                        pending: Vec::new(),
                        released: None,
                        released_at: now,
                    });
                    thread.released = due.before;
                    insert_sorted(&mut thread.pending, held);
                }
                None => self.unthreaded.insert(0, held),
            }
        }
    }

    /// Drops held events (e.g. those of a delivery that was quarantined).
    pub fn discard(&mut self, drop: impl Fn(&E) -> bool) {
        self.unthreaded.retain(|h| !drop(&h.item));
        for thread in self.threads.values_mut() {
            thread.pending.retain(|h| !drop(&h.item));
        }
    }

    /// When the next held event ripens (`None`: nothing is held).
    pub fn next_ripe(&self) -> Option<Instant> {
        self.unthreaded.iter().chain(self.threads.values().flat_map(|t| &t.pending)).map(|h| h.ripe_at).min()
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.unthreaded.len() + self.threads.values().map(|t| t.pending.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn insert_sorted<E>(queue: &mut Vec<Held<E>>, held: Held<E>) {
    let at = queue.partition_point(|h| h.order() <= held.order());
    queue.insert(at, held);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(timestamp: i64, mid: &str) -> Key {
        Key { timestamp, tie: mid.to_string() }
    }

    fn items(due: Vec<Due<&'static str>>) -> Vec<&'static str> {
        due.into_iter().map(|d| d.item).collect()
    }

    const W: Duration = Duration::from_millis(1000);

    #[test]
    fn an_earlier_event_arriving_within_the_window_goes_first() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("p".into()), key(2, "m_b"), "B", t0);
        assert!(hold.take_due(t0 + Duration::from_millis(500)).is_empty(), "B waits for the window");
        hold.hold(Some("p".into()), key(1, "m_a"), "A", t0 + Duration::from_millis(600));
        assert_eq!(hold.next_ripe(), Some(t0 + W));
        // B is ripe at 1000 ms; A sorts before it and goes with it.
        assert_eq!(items(hold.take_due(t0 + W)), ["A", "B"]);
        assert!(hold.is_empty());
        assert_eq!(hold.next_ripe(), None);
    }

    #[test]
    fn equal_timestamps_order_by_mid_then_arrival() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("p".into()), key(5, "m_2"), "second", t0);
        hold.hold(Some("p".into()), key(5, "m_1"), "first", t0);
        hold.hold(Some("p".into()), key(5, "m_2"), "second again", t0);
        assert_eq!(items(hold.take_due(t0 + W)), ["first", "second", "second again"]);
    }

    #[test]
    fn an_event_after_the_window_is_released_late_not_dropped() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("p".into()), key(2, "m_b"), "B", t0);
        let released = hold.take_due(t0 + W);
        assert_eq!(released.len(), 1);
        assert!(!released[0].late);
        hold.hold(Some("p".into()), key(1, "m_a"), "A", t0 + 2 * W);
        let late = hold.take_due(t0 + 3 * W);
        assert_eq!(late.len(), 1);
        assert!(late[0].late && late[0].item == "A");
        // The late one does not lower the thread's mark: a later event is on time, an earlier one late again.
        hold.hold(Some("p".into()), key(3, "m_c"), "C", t0 + 3 * W);
        hold.hold(Some("p".into()), key(1, "m_a0"), "A0", t0 + 3 * W);
        let next = hold.take_due(t0 + 4 * W);
        assert_eq!(next.iter().map(|d| (d.item, d.late)).collect::<Vec<_>>(), [("A0", true), ("C", false)]);
    }

    #[test]
    fn threads_do_not_wait_for_each_other_and_receipts_do_not_wait() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        // p keeps receiving events; q's one event is released one window after it arrived regardless.
        hold.hold(Some("q".into()), key(10, "m_q"), "Q", t0);
        hold.hold(None, key(11, ""), "receipt", t0);
        assert_eq!(items(hold.take_due(t0)), ["receipt"]);
        for i in 0..10u32 {
            let at = t0 + Duration::from_millis(200) * i;
            hold.hold(Some("p".into()), key(i64::from(i), &format!("m_p{i}")), "P", at);
        }
        let due = hold.take_due(t0 + W);
        // q's event and p's events up to the ripe ones (seen at 0 ms) go; p's later ones still wait.
        assert!(due.iter().any(|d| d.item == "Q"));
        assert_eq!(due.iter().filter(|d| d.item == "P").count(), 1);
        assert_eq!(hold.len(), 9);
    }

    #[test]
    fn put_back_restores_the_queue_and_the_lateness_mark() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("p".into()), key(1, "m_a"), "A", t0);
        hold.hold(Some("p".into()), key(2, "m_b"), "B", t0);
        hold.hold(Some("p".into()), key(3, "m_c"), "C", t0 + 5 * W);
        let mut due = hold.take_due(t0 + W);
        assert_eq!(due.len(), 2);
        // A applied, B failed: B goes back and is released again, on time.
        let undone = due.split_off(1);
        hold.put_back(undone, t0 + W);
        let again = hold.take_due(t0 + W);
        assert_eq!(again.iter().map(|d| (d.item, d.late)).collect::<Vec<_>>(), [("B", false)]);
        assert_eq!(hold.next_ripe(), Some(t0 + 6 * W));
    }

    #[test]
    fn discarded_events_are_gone() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("p".into()), key(1, "m_a"), 1, t0);
        hold.hold(Some("p".into()), key(2, "m_b"), 2, t0);
        hold.hold(None, key(2, ""), 3, t0);
        hold.discard(|i| *i != 2);
        assert_eq!(hold.take_due(t0 + W).into_iter().map(|d| d.item).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn customers_in_the_same_millisecond_go_in_arrival_order_and_each_keeps_its_own_order() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(W);
        hold.hold(Some("eve".into()), key(7, "m_a"), "eve taps", t0);
        hold.hold(Some("peter".into()), key(7, "m_b"), "peter writes", t0);
        hold.hold(Some("eve".into()), key(7, "m_c"), "eve writes", t0);
        assert_eq!(items(hold.take_due(t0 + W)), ["eve taps", "peter writes", "eve writes"]);
        // Within one customer, equal timestamps order by mid whatever the arrival.
        hold.hold(Some("eve".into()), key(8, "m_y"), "second", t0 + W);
        hold.hold(Some("eve".into()), key(8, "m_x"), "first", t0 + W);
        assert_eq!(items(hold.take_due(t0 + 2 * W)), ["first", "second"]);
    }

    #[test]
    fn a_zero_window_releases_everything_at_once_in_timestamp_order() {
        let t0 = Instant::now();
        let mut hold = HoldBack::new(Duration::ZERO);
        hold.hold(Some("p".into()), key(2, "m_b"), "B", t0);
        hold.hold(Some("q".into()), key(1, "m_x"), "X", t0);
        hold.hold(Some("p".into()), key(1, "m_a"), "A", t0);
        // Timestamp 1 first (X came before A), then B.
        assert_eq!(items(hold.take_due(t0)), ["X", "A", "B"]);
    }
}
