//! The Messenger outbox under faults, counted at the sandbox: a head send in backoff neither spins the worker nor
//! holds up other customers, an outage costs a handful of calls, and nothing is sent twice — not when the call
//! timed out but delivered, not when the answer was lost, not when recording the send failed, not for the recap.

use std::time::Duration;

use messenger_sandbox::{FaultRule, NewUser, SendFault};
use protocol::console;
use protocol::{DeliveryState, EventKind};

use crate::helpers::{MessengerApp, TestApp, Ws, spawn_messenger_app};
use crate::messenger::{agent_says, consent_question, web_visitor_with_link};

const WAIT: Duration = Duration::from_secs(20);

/// A customer who wrote to the Page first; returns (psid, conversation id).
async fn messenger_customer(app: &TestApp, sandbox: &messenger_sandbox::Sandbox, name: &str) -> (String, String) {
    let psid = sandbox.create_user(NewUser { first_name: Some(name.into()), ..Default::default() }).expect("user").psid;
    sandbox.user_sends_text(&psid, &format!("hello from {name}")).expect("send");
    let conversation_id = wait_for(|| async {
        let contact = app.store.contact_by_psid(&psid).await.expect("query")?;
        app.store.conversation_for_contact(&contact.id).await.expect("query").map(|c| c.id)
    })
    .await;
    (psid, conversation_id)
}

/// Polls `probe` until it returns `Some`, failing after [`WAIT`].
pub(crate) async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent socket with the conversation open. Opening it sends `mark_seen` to Messenger: once that call is in,
/// the faults a test injects next hit the outbox's sends.
async fn agent_on(app: &TestApp, sandbox: &messenger_sandbox::Sandbox, conversation_id: &str) -> Ws {
    let calls = sandbox.faults().send_calls;
    let (mut agent, _) = app.agent().await;
    agent.send(&console::ClientMsg::Open { conversation_id: conversation_id.into(), since_seq: 0 }).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::History { .. }).then_some(())).await;
    sandbox.wait_until(WAIT, |s| (s.faults().send_calls > calls).then_some(())).await.expect("mark_seen");
    agent
}

fn sent_count(sandbox: &messenger_sandbox::Emulator, text: &str) -> usize {
    sandbox.sent_messages().iter().filter(|m| m.message.text.as_deref() == Some(text)).count()
}

fn counter(app: &TestApp, name: &str) -> u64 {
    app.workers.snapshot().get("messenger_outbox").and_then(|w| w.counters.get(name).copied()).unwrap_or(0)
}

/// Waits until the outbox row carrying `body` has `status`; returns its external id.
async fn outbox_status(app: &TestApp, body_prefix: &str, status: &str) -> Option<String> {
    wait_for(|| async {
        app.outbox_statuses()
            .await
            .into_iter()
            .find(|(body, s, _)| body.starts_with(body_prefix) && s == status)
            .map(|(_, _, external)| external)
    })
    .await
}

#[tokio::test]
async fn a_head_send_in_backoff_neither_spins_the_worker_nor_delays_another_customer() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (psid_a, conversation_a) = messenger_customer(&app, &sandbox, "Ann").await;
    let (_psid_b, conversation_b) = messenger_customer(&app, &sandbox, "Bob").await;

    // Customer A: a head send in backoff for an hour, and 100 sends due now queued behind it.
    let db = sqlx::SqlitePool::connect(&app.db_url).await.expect("db");
    let now = app.clock.now_ms();
    let mut tx = db.begin().await.expect("tx");
    for i in 0..101 {
        sqlx::query(
            "insert into outbox (conversation_id, psid, body, messaging_type, attempts, next_attempt_at, created_at,
                updated_at) values (?, ?, ?, 'RESPONSE', ?, ?, ?, ?)",
        )
        .bind(&conversation_a)
        .bind(&psid_a)
        .bind(format!("for Ann #{i}"))
        .bind(if i == 0 { 5 } else { 0 })
        .bind(if i == 0 { now + 3_600_000 } else { now })
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");

    // Customer B's reply goes out at once.
    let mut agent = agent_on(&app, &sandbox, &conversation_b).await;
    agent_says(&mut agent, &conversation_b, "b-1", "for Bob").await;
    sandbox
        .wait_until(WAIT, |s| (sent_count(s, "for Bob") == 1).then_some(()))
        .await
        .expect("B's reply was not held up by A's queue");

    // And the worker sleeps: over a second it wakes a handful of times at most, not thousands.
    let before = counter(&app, "iterations");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let woke = counter(&app, "iterations") - before;
    println!("head in backoff + 100 due behind it: the worker woke {woke} times in 1 s");
    assert!(woke <= 5, "the outbox worker woke {woke} times in a second");
    // A's queue keeps its order: nothing behind the head went out.
    assert!(sandbox.sent_messages().iter().all(|m| !m.message.text.as_deref().unwrap_or("").starts_with("for Ann")));
}

#[tokio::test]
async fn an_outage_costs_a_few_calls_and_every_message_then_goes_out_once_in_order() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_psid, conversation_id) = messenger_customer(&app, &sandbox, "Oda").await;
    let mut agent = agent_on(&app, &sandbox, &conversation_id).await;
    // The Graph API answers every call with 2 "Service temporarily unavailable".
    sandbox.push_send_fault(FaultRule::probability(SendFault::ServiceUnavailable, 1.0));
    agent_says(&mut agent, &conversation_id, "a-1", "one").await;
    agent_says(&mut agent, &conversation_id, "a-2", "two").await;
    // Counted where the call lands, not by the worker's own `graph_calls` (counted before the call is made): read
    // in between, the first call would fall inside the window below.
    wait_for(|| async { (sandbox.faults().send_calls >= 1).then_some(()) }).await;
    let (calls_before, iterations_before) = (sandbox.faults().send_calls, counter(&app, "iterations"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = sandbox.faults().send_calls - calls_before;
    let iterations = counter(&app, "iterations") - iterations_before;
    // Backoff 0.5–1 s, 1–2 s, 2–4 s …: 1 to 3 more tries of the head in 4 s, none of the send queued behind it.
    println!("4 s of outage: {calls} Graph calls, {iterations} worker wake-ups");
    assert!((1..=3).contains(&calls), "{calls} Graph calls in 4 s of outage");
    assert!(iterations <= 16, "the worker woke {iterations} times in 4 s of outage");
    assert_eq!(sandbox.sent_messages().iter().filter(|m| m.message.text.is_some()).count(), 0);

    sandbox.clear_faults();
    let texts = sandbox
        .wait_until(Duration::from_secs(30), |s| {
            let texts: Vec<String> = s
                .sent_messages()
                .into_iter()
                .filter_map(|m| m.message.text)
                .filter(|t| t == "one" || t == "two")
                .collect();
            (texts.len() >= 2).then_some(texts)
        })
        .await
        .expect("both sent after the outage");
    assert_eq!(texts, vec!["one", "two"]);
    outbox_status(&app, "two", "sent").await;
    assert_eq!((sent_count(&sandbox, "one"), sent_count(&sandbox, "two")), (1, 1));
}

#[tokio::test]
async fn a_send_that_went_out_but_could_not_be_recorded_is_recorded_later_and_not_sent_again() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_psid, conversation_id) = messenger_customer(&app, &sandbox, "Sam").await;
    // The database refuses to mark any send as sent (as with a full disk), from the worker and from the echo.
    let db = sqlx::SqlitePool::connect(&app.db_url).await.expect("db");
    sqlx::query(
        "create trigger refuse_settle before update of status on outbox when new.status = 'sent'
         begin select raise(abort, 'injected: disk full'); end",
    )
    .execute(&db)
    .await
    .expect("trigger");
    let mut agent = agent_on(&app, &sandbox, &conversation_id).await;
    agent_says(&mut agent, &conversation_id, "a-1", "record me").await;
    sandbox.wait_until(WAIT, |s| (sent_count(s, "record me") == 1).then_some(())).await.expect("sent");
    wait_for(|| async { (counter(&app, "settle_retries") >= 3).then_some(()) }).await;
    sqlx::query("drop trigger refuse_settle").execute(&db).await.expect("drop trigger");

    let external_id = outbox_status(&app, "record me", "sent").await;
    assert_eq!(sent_count(&sandbox, "record me"), 1, "the send was repeated instead of its settlement");
    let sent = sandbox.sent_messages().into_iter().find(|m| m.message.text.as_deref() == Some("record me"));
    assert_eq!(external_id, sent.map(|m| m.message.mid));
}

#[tokio::test]
async fn the_recap_is_reconciled_by_its_echo_after_a_lost_answer_and_sent_once() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.reconcile_secs = 2).await;
    let (_visitor, reference, _) = web_visitor_with_link(&app, "Is my parcel lost?").await;
    let psid =
        sandbox.create_user(NewUser { first_name: Some("Rae".into()), ..Default::default() }).expect("user").psid;
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("get started");
    // The Page asks first; once the customer says yes, the recap is queued. It is delivered (and echoed) but the
    // call answers 1/1357046 "invalid JSON reply".
    let yes = consent_question(&sandbox, &psid).await;
    sandbox.push_send_fault(FaultRule::once(SendFault::DeliveredButError));
    sandbox.user_taps_quick_reply(&psid, "Yes, continue here", &yes).expect("tap");

    let external_id = outbox_status(&app, "Here's where we left off", "sent").await;
    let recaps: Vec<_> = sandbox
        .sent_messages()
        .into_iter()
        .filter(|m| m.message.text.as_deref().is_some_and(|t| t.contains("Is my parcel lost?")))
        .collect();
    assert_eq!(recaps.len(), 1);
    assert_eq!(external_id.as_deref(), Some(recaps[0].message.mid.as_str()));
    let metadata = recaps[0].message.metadata.clone().unwrap_or_default();
    assert!(metadata.starts_with("outbox-"), "the recap carries reconcilable metadata: {metadata:?}");
}

#[tokio::test]
async fn a_timeout_that_still_delivered_is_settled_by_the_echo_and_the_next_send_follows() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_psid, conversation_id) = messenger_customer(&app, &sandbox, "Tim").await;
    let mut agent = agent_on(&app, &sandbox, &conversation_id).await;
    // The call outlives the 2 s client timeout, then the sandbox delivers it anyway.
    sandbox.push_send_fault(FaultRule::once(SendFault::Hang { ms: 2500 }));
    let first = agent_says(&mut agent, &conversation_id, "a-1", "slow one").await;
    agent_says(&mut agent, &conversation_id, "a-2", "right behind").await;
    agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Event { event, .. } => matches!(&event.kind,
                EventKind::Delivery { message_id, state: DeliveryState::Sent, .. } if *message_id == first)
            .then_some(()),
            _ => None,
        })
        .await;
    outbox_status(&app, "right behind", "sent").await;
    assert_eq!((sent_count(&sandbox, "slow one"), sent_count(&sandbox, "right behind")), (1, 1));
}
