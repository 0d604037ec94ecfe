//! Customer messages from Messenger are stored in Messenger timestamp order per customer, even when Meta delivers
//! the later message's webhook first and the earlier one comes in a later intake pass; a message later than the
//! reorder window is stored (late, counted), not lost; and a reordered customer holds up no one else. Webhooks are
//! signed and posted to the real endpoint, with timestamps chosen by the test.

use std::time::Duration;

use protocol::EventKind;
use tokio::time::Instant;

use crate::helpers::{MessengerApp, TestApp, spawn_messenger_app};
use crate::messenger_intake::deliver;
use crate::outbox::wait_for;

const PAGE: &str = "100000000000001";

/// A delivery holding one customer message.
fn message(psid: &str, mid: &str, timestamp: i64, text: &str) -> String {
    serde_json::json!({"object": "page", "entry": [{"id": PAGE, "time": timestamp, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": timestamp,
        "message": {"mid": mid, "text": text}}]}]})
    .to_string()
}

/// The messages in the customer's conversation, in log (seq) order.
async fn stored(app: &TestApp, psid: &str) -> Vec<String> {
    let Some(contact) = app.store.contact_by_psid(psid).await.expect("query") else { return Vec::new() };
    let Some(conversation) = app.store.conversation_for_contact(&contact.id).await.expect("query") else {
        return Vec::new();
    };
    let events = app.store.events_after(&conversation.id, 0).await.expect("events");
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { message } => Some(message.body),
            _ => None,
        })
        .collect()
}

/// Waits until the customer's conversation holds `n` messages; returns them.
async fn stored_n(app: &TestApp, psid: &str, n: usize) -> Vec<String> {
    wait_for(|| async {
        let got = stored(app, psid).await;
        (got.len() >= n).then_some(got)
    })
    .await
}

/// The intake's count of messages applied after the reorder window.
fn late_events(app: &TestApp) -> u64 {
    app.workers.snapshot().get("messenger_intake").and_then(|w| w.counters.get("late_events").copied()).unwrap_or(0)
}

/// Waits until `n` deliveries are stored and none is waiting (so nothing can still be applied later).
async fn all_processed(app: &TestApp, n: i64) {
    wait_for(|| async {
        let stored = app.count_rows("webhook_deliveries").await;
        let waiting = app.store.unprocessed_webhook_deliveries(1).await.expect("query").len();
        (stored == n && waiting == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_earlier_message_whose_webhook_comes_in_a_later_batch_is_still_stored_first() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, s| s.messenger.reorder_window_ms = 2000).await;
    let psid = "7100000000000001";
    let t = app.store.clock().now_ms();
    deliver(&app, &message(psid, "m_order_b", t + 1, "B")).await;
    // The intake has taken B's delivery in (its pass is under way or over) before A's webhook is sent...
    wait_for(|| async { (app.count_rows("webhook_deliveries").await == 1).then_some(()) }).await;
    // ...and A comes after a gap longer than the intake's 150 ms gather, shorter than the window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before_a = stored(&app, psid).await;
    deliver(&app, &message(psid, "m_order_a", t, "A")).await;
    let got = stored_n(&app, psid, 2).await;
    assert_eq!(got, ["A", "B"], "stored in Messenger timestamp order");
    assert!(before_a.is_empty(), "B was stored before the window was over: {before_a:?}");
    all_processed(&app, 2).await;
    assert_eq!(stored(&app, psid).await, ["A", "B"]);
    assert_eq!(late_events(&app), 0);
}

#[tokio::test]
async fn a_message_later_than_the_window_is_stored_late_and_counted_not_lost() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, s| s.messenger.reorder_window_ms = 300).await;
    let psid = "7100000000000002";
    let t = app.store.clock().now_ms();
    deliver(&app, &message(psid, "m_late_b", t + 1, "B")).await;
    assert_eq!(stored_n(&app, psid, 1).await, ["B"]);
    // A's webhook comes after B was stored: too late to go first, so it goes after.
    deliver(&app, &message(psid, "m_late_a", t, "A")).await;
    assert_eq!(stored_n(&app, psid, 2).await, ["B", "A"]);
    wait_for(|| async { (late_events(&app) == 1).then_some(()) }).await;
    // Meta redelivering A later still is a duplicate: stored once, not counted as late again.
    deliver(&app, &message(psid, "m_late_a", t, "A")).await;
    all_processed(&app, 3).await;
    assert_eq!(stored(&app, psid).await, ["B", "A"]);
    assert_eq!(late_events(&app), 1);
    assert_eq!(app.store.quarantined_delivery_count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_reordered_customer_holds_up_no_one_else() {
    const WINDOW_MS: u64 = 1000;
    let MessengerApp { app, .. } = spawn_messenger_app(|_, s| s.messenger.reorder_window_ms = WINDOW_MS).await;
    let (busy, quiet) = ("7100000000000003", "7100000000000004");
    let t = app.store.clock().now_ms();
    let pairs = 12i64;
    let mut quiet_posted = None;
    let mut quiet_stored = None;
    // The busy customer writes for about 5 s, every pair delivered in reverse, 200 ms between webhooks (so each
    // lands in a pass of its own); the quiet one writes once near the start.
    for pair in 0..pairs {
        for k in [2 * pair + 1, 2 * pair] {
            deliver(&app, &message(busy, &format!("m_busy_{k:02}"), t + k, &format!("busy {k:02}"))).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if quiet_posted.is_none() {
                deliver(&app, &message(quiet, "m_quiet", t + 1, "quiet")).await;
                quiet_posted = Some(Instant::now());
            }
            if quiet_stored.is_none() && !stored(&app, quiet).await.is_empty() {
                quiet_stored = Some(Instant::now());
            }
        }
    }
    let busy_done = Instant::now();
    let posted = quiet_posted.expect("posted");
    let waited = quiet_stored.map(|at| at - posted);
    // Stored while the busy customer was still writing, within the window and a scheduling allowance.
    let allowance = Duration::from_millis(WINDOW_MS + 1500);
    assert!(waited.is_some_and(|w| w <= allowance), "the quiet customer waited {waited:?} (busy for {:?})", {
        busy_done - posted
    });
    let want: Vec<String> = (0..2 * pairs).map(|k| format!("busy {k:02}")).collect();
    assert_eq!(stored_n(&app, busy, want.len()).await, want, "the busy customer's messages in timestamp order");
    assert_eq!(stored(&app, quiet).await, ["quiet"]);
    assert_eq!(late_events(&app), 0);
}
