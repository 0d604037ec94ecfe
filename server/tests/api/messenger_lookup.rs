//! The Messenger intake reads what a wave of events needs (each customer's contact, whether each mid is stored,
//! whether a code-like word names a link) in one trip to the store per wave, not one read of the pool per event,
//! and applies the events exactly as before: one message per mid, each customer's in order, non-ASCII PSIDs alike.

use std::time::Duration;

use protocol::EventKind;

use crate::helpers::{MessengerApp, TestApp, spawn_messenger_app};
use crate::messenger::WAIT;
use crate::messenger_intake::deliver;

/// The Page the sandbox app is configured with.
const PAGE: &str = "100000000000001";

/// Customers per delivery: one wave (the intake's waves hold up to 32 customers).
const CUSTOMERS: usize = 20;

fn counter(app: &TestApp, name: &str) -> u64 {
    app.workers.snapshot().get("messenger_intake").and_then(|w| w.counters.get(name).copied()).unwrap_or(0)
}

fn psid(n: usize) -> String {
    // Every other one non-ASCII: the lookup keys by the PSID exactly as Meta sent it.
    if n.is_multiple_of(2) { format!("lookup-{n}") } else { format!("lookup-é😀-{n}") }
}

/// One delivery: a message `m_{round}_{n}` from each customer, `text` followed by the round and number.
fn delivery(round: usize, text: &str) -> String {
    let events: Vec<serde_json::Value> = (0..CUSTOMERS)
        .map(|n| {
            serde_json::json!({"sender": {"id": psid(n)}, "recipient": {"id": PAGE},
                "timestamp": 1_700_000_000_000_u64 + (round * 1000 + n) as u64,
                "message": {"mid": format!("m_{round}_{n}"), "text": format!("{text} {round} {n}")}})
        })
        .collect();
    serde_json::json!({"object": "page", "entry": [{"id": PAGE, "time": round, "messaging": events}]}).to_string()
}

/// Waits until every stored delivery is processed and the pass that processed them has reported its counts.
async fn all_applied(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.query_i64("select count(*) from webhook_deliveries where processed_at is null").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the deliveries were not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counts are reported after each pass: one more pass after this point has reported everything before it.
    let passes = counter(app, "passes");
    app.state.messenger.as_ref().expect("Messenger on").intake_wake.notify_one();
    while counter(app, "passes") <= passes {
        assert!(tokio::time::Instant::now() < deadline, "the intake reported no pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 20 customers (half with non-ASCII PSIDs) write once (their contacts are created), then again, and one
/// message of the first round is delivered again. The intake made no store read for single events (before: a
/// contact read and a mid read each), every customer has exactly their two messages in order, and the words that
/// look like short codes but name no link cost no write (before: an idempotency key per candidate).
#[tokio::test]
async fn a_wave_is_looked_up_in_one_trip_and_applies_as_before() {
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    deliver(&app, &delivery(1, "hello")).await;
    all_applied(&app).await;
    deliver(&app, &delivery(2, "code 234567")).await;
    // A redelivery of a first-round message: stored once.
    let again = serde_json::json!({"object": "page", "entry": [{"id": PAGE, "time": 3, "messaging": [
        {"sender": {"id": psid(3)}, "recipient": {"id": PAGE}, "timestamp": 1_700_000_001_003_u64,
         "message": {"mid": "m_1_3", "text": "hello 1 3"}}]}]});
    deliver(&app, &again.to_string()).await;
    all_applied(&app).await;

    for n in 0..CUSTOMERS {
        let contact = app.store.contact_by_psid(&psid(n)).await.expect("query").expect("a contact per PSID");
        let conversation =
            app.store.conversation_for_contact(&contact.id).await.expect("query").expect("a conversation");
        let bodies: Vec<String> = app
            .store
            .events_after(&conversation.id, 0)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Message { message } => Some(message.body),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, [format!("hello 1 {n}"), format!("code 234567 2 {n}")], "customer {n}");
    }
    assert_eq!(app.query_i64("select count(*) from messages").await, 2 * CUSTOMERS as i64);
    assert_eq!(app.query_i64("select count(*) from webhook_applied where key like 'code:%'").await, 0);
    assert_eq!(counter(&app, "event_reads"), 0, "the intake read the store for single events");
    assert_eq!(app.store.quarantined_delivery_count().await.expect("count"), 0);
}
