//! The Messenger channel through the sandbox's faults in sequence, counted at both far ends: four linked customers,
//! agents replying and customers writing while the Send API is down for hours of virtual time, then answers bursts
//! of 613, then times out (or errors) on calls that still delivered, and while webhooks arrive duplicated and
//! reordered. Every agent reply must reach the sandbox exactly once and in order per customer, every customer
//! message must be in Parley exactly once and in the order it was written.

use std::collections::HashMap;
use std::time::Duration;

use messenger_sandbox::{FaultRule, OpenOutcome, SendFault, WebhookFault};
use protocol::{Author, Channel, EventKind};

use crate::helpers::{MessengerApp, TestApp, Ws, spawn_messenger_app};
use crate::messenger::{agent_says, customer, next_event, says_yes, web_visitor_with_link};
use crate::outbox::wait_for;

const WAIT: Duration = Duration::from_secs(25);
const NAMES: [&str; 4] = ["Ana", "Ben", "Cai", "Dee"];
/// Replies per customer in each of the three phases (outage, 613 bursts, timeouts that delivered).
const REPLIES_PER_PHASE: usize = 5;
/// Messages each customer writes in each phase (in pairs, so a reordered delivery can overtake its own sibling).
const WRITES_PER_PHASE: usize = 4;
/// Graph client timeout (seconds); a hang this long plus half a second outlives it.
const TIMEOUT_SECS: u64 = 1;

struct Linked {
    name: &'static str,
    psid: String,
    conversation_id: String,
    _visitor: Ws,
}

fn reply(name: &str, k: usize) -> String {
    format!("reply {k:02} to {name}")
}

fn write(name: &str, k: usize) -> String {
    format!("message {k:02} from {name}")
}

/// A web visitor who continued on Messenger (Get Started with their ref, then "Yes"), once the recap went out.
async fn link(app: &TestApp, sandbox: &messenger_sandbox::Sandbox, name: &'static str) -> Linked {
    let (mut visitor, reference, _) = web_visitor_with_link(app, &format!("{name} on the web")).await;
    let psid = customer(sandbox, name);
    assert_eq!(sandbox.user_opens_link(&psid, Some(&reference)).expect("open"), OpenOutcome::GetStartedShown);
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("get started");
    says_yes(sandbox, &psid).await;
    next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
    sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().find(|m| {
                m.psid == psid && m.message.text.as_deref().is_some_and(|t| t.starts_with("Here's where we left off"))
            })
        })
        .await
        .expect("recap sent");
    let contact = app.store.contact_by_psid(&psid).await.expect("query").expect("contact");
    let conversation_id =
        app.store.conversation_for_contact(&contact.id).await.expect("query").expect("conversation").id;
    Linked { name, psid, conversation_id, _visitor: visitor }
}

/// Replies `from..to` for every customer, acked (stored) one by one.
async fn agent_replies(agent: &mut Ws, customers: &[Linked], from: usize, to: usize) {
    for k in from..to {
        for c in customers {
            agent_says(agent, &c.conversation_id, &format!("{}-{k}", c.name), &reply(c.name, k)).await;
        }
    }
}

/// Each customer writes messages `from..to`, two at a time (one virtual second apart, so timestamps order them).
fn customers_write(sandbox: &messenger_sandbox::Sandbox, customers: &[Linked], from: usize, to: usize) {
    for pair in (from..to).step_by(2) {
        for c in customers {
            for k in pair..(pair + 2).min(to) {
                sandbox.user_sends_text(&c.psid, &write(c.name, k)).expect("customer writes");
                sandbox.advance(Duration::from_secs(1));
            }
        }
    }
}

/// How often each reply text reached the sandbox.
fn received(sandbox: &messenger_sandbox::Emulator) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in sandbox.sent_messages() {
        if let Some(text) = m.message.text.filter(|t| t.starts_with("reply ")) {
            *counts.entry(text).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits until every reply below `to` reached the sandbox and every outbox row is settled as sent (a settled row
/// is never sent again, so no double can still come later).
async fn drained(app: &TestApp, sandbox: &messenger_sandbox::Sandbox, customers: &[Linked], to: usize) {
    let expected: Vec<String> = (0..to).flat_map(|k| customers.iter().map(move |c| reply(c.name, k))).collect();
    sandbox
        .wait_until(WAIT, |s| {
            let got = received(s);
            expected.iter().all(|t| got.contains_key(t)).then_some(())
        })
        .await
        .unwrap_or_else(|_| {
            let got = received(sandbox);
            let missing: Vec<&String> = expected.iter().filter(|t| !got.contains_key(*t)).collect();
            panic!("replies never reached the sandbox: {missing:?}")
        });
    wait_for(|| async {
        let rows = app.outbox_statuses().await;
        let unsettled: Vec<_> = rows.iter().filter(|(_, status, _)| status != "sent").collect();
        assert!(unsettled.iter().all(|(_, status, _)| status == "pending"), "a send was given up: {unsettled:?}");
        unsettled.is_empty().then_some(())
    })
    .await;
}

/// Waits until every fault rule matching `pick` has fired as often as it was told to.
async fn consumed(sandbox: &messenger_sandbox::Sandbox, what: &str, pick: impl Fn(&messenger_sandbox::Faults) -> bool) {
    sandbox
        .wait_until(WAIT, |s| pick(&s.faults()).then_some(()))
        .await
        .unwrap_or_else(|_| panic!("{what}: the injected faults did not all fire: {:?}", sandbox.faults()));
}

#[tokio::test]
async fn an_outage_of_hours_613_bursts_timeouts_that_delivered_and_unruly_webhooks_lose_and_double_nothing() {
    let started = std::time::Instant::now();
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| {
        s.messenger.timeout_secs = TIMEOUT_SECS;
        // Generous: the echo of a call that hung or errored settles it long before; only a lost echo waits this long.
        s.messenger.reconcile_secs = 8;
    })
    .await;
    let mut customers = Vec::new();
    for name in NAMES {
        customers.push(link(&app, &sandbox, name).await);
    }
    let (mut agent, _) = app.agent().await;
    let virtual_start = sandbox.now_ms();
    let n = customers.len() as u64;
    let mut webhook_reorders = 0;

    // 1. The Send API answers every call with 2 "Service temporarily unavailable" while the virtual clock moves
    //    on 6 hours (inside the 24 h window, so every reply is still a RESPONSE). Webhooks arrive twice.
    sandbox.clear_faults();
    sandbox.push_send_fault(FaultRule::probability(SendFault::ServiceUnavailable, 1.0));
    sandbox.push_webhook_fault(FaultRule::times(WebhookFault::Duplicate, 6));
    agent_replies(&mut agent, &customers, 0, REPLIES_PER_PHASE).await;
    customers_write(&sandbox, &customers, 0, WRITES_PER_PHASE);
    for round in 1..=2 {
        // Every customer's head send was refused once more; then hours pass.
        sandbox
            .wait_until(WAIT, |s| (s.faults().send_calls >= round * n).then_some(()))
            .await
            .expect("the outbox keeps trying during the outage");
        sandbox.advance_hours(3);
    }
    consumed(&sandbox, "duplicates during the outage", |f| f.webhook.is_empty()).await;
    assert!(received(&sandbox).is_empty(), "a reply got through the outage");
    let outage_errors = sandbox.faults().send_calls;
    let outage_hours = (sandbox.now_ms() - virtual_start) as f64 / 3_600_000.0;
    sandbox.clear_faults();
    drained(&app, &sandbox, &customers, REPLIES_PER_PHASE).await;

    // 2. Two bursts of 613 "Calls to this api have exceeded the rate limit"; webhooks arrive reordered.
    let bursts: [u32; 2] = [8, 8];
    for (i, burst) in bursts.iter().enumerate() {
        sandbox.push_send_fault(FaultRule::times(SendFault::RateLimited { code: 613 }, *burst));
        sandbox.push_webhook_fault(FaultRule::times(WebhookFault::Reorder, 2));
        webhook_reorders += 2;
        let from = REPLIES_PER_PHASE + i * 3;
        let to = (from + 3).min(2 * REPLIES_PER_PHASE);
        agent_replies(&mut agent, &customers, from, to).await;
        let w = WRITES_PER_PHASE + i * 2;
        customers_write(&sandbox, &customers, w, w + 2);
        consumed(&sandbox, "613 burst", |f| f.send.is_empty()).await;
        // Each burst meets fresh sends (a send refused by both would wait out a long backoff).
        drained(&app, &sandbox, &customers, to).await;
    }
    consumed(&sandbox, "reorders", |f| f.webhook.is_empty()).await;

    // 3. Calls that time out (the sandbox hangs past the client timeout, then delivers) and calls that deliver but
    //    answer 1/1357046; webhooks duplicated and reordered at once.
    let hang_ms = TIMEOUT_SECS * 1000 + 500;
    let hang = SendFault::Hang { ms: hang_ms };
    for fault in [hang.clone(), SendFault::DeliveredButError, hang, SendFault::DeliveredButError] {
        sandbox.push_send_fault(FaultRule::once(fault));
    }
    sandbox.push_webhook_fault(FaultRule::times(WebhookFault::Duplicate, 4));
    sandbox.push_webhook_fault(FaultRule::times(WebhookFault::Reorder, 3));
    webhook_reorders += 3;
    agent_replies(&mut agent, &customers, 2 * REPLIES_PER_PHASE, 3 * REPLIES_PER_PHASE).await;
    customers_write(&sandbox, &customers, 2 * WRITES_PER_PHASE, 3 * WRITES_PER_PHASE);
    consumed(&sandbox, "timeouts that delivered", |f| f.send.is_empty()).await;
    // The last hanging call started by now; it delivers when its hang is over, even after Parley has settled (or
    // re-sent) that reply, so the count waits for that moment too: a late double must be counted, not missed.
    let hangs_over = tokio::time::Instant::now() + Duration::from_millis(hang_ms + 250);
    consumed(&sandbox, "duplicates and reorders", |f| f.webhook.is_empty()).await;
    drained(&app, &sandbox, &customers, 3 * REPLIES_PER_PHASE).await;
    tokio::time::sleep_until(hangs_over).await;

    // Count at the sandbox: every reply once, in order, as a RESPONSE.
    let replies = 3 * REPLIES_PER_PHASE;
    let counts = received(&sandbox);
    let expected: Vec<String> = customers.iter().flat_map(|c| (0..replies).map(|k| reply(c.name, k))).collect();
    let lost = expected.iter().filter(|t| !counts.contains_key(*t)).count();
    let doubled: usize = counts.values().map(|n| n.saturating_sub(1)).sum();
    let mut out_of_order = 0;
    // (what, as received, as sent): checked after the counts are printed.
    let mut sequences: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for c in &customers {
        let got: Vec<String> = sandbox
            .sent_messages()
            .into_iter()
            .filter(|m| m.psid == c.psid)
            .filter_map(|m| m.message.text)
            .filter(|t| t.starts_with("reply "))
            .collect();
        let want: Vec<String> = (0..replies).map(|k| reply(c.name, k)).collect();
        out_of_order += got.windows(2).filter(|w| w[0] > w[1]).count();
        sequences.push((format!("replies to {} as the sandbox received them", c.name), got, want));
    }
    let not_response = sandbox
        .sent_messages()
        .into_iter()
        .filter(|m| m.message.text.as_deref().is_some_and(|t| t.starts_with("reply ")))
        .filter(|m| m.message.messaging_type.as_deref() != Some("RESPONSE"))
        .count();

    // Count at Parley: every customer message once, every reply once (our own echoes add nothing).
    sandbox.wait_idle(WAIT).await.expect("every webhook delivered");
    let delivered = sandbox.delivered_webhooks();
    let webhook_duplicates = delivered.iter().filter(|d| d.duplicate_of.is_some()).count();
    wait_for(|| async {
        let stored = app.count_rows("webhook_deliveries").await;
        let waiting = app.store.unprocessed_webhook_deliveries(1).await.expect("query").len();
        (stored >= i64::try_from(delivered.len()).unwrap_or(i64::MAX) && waiting == 0).then_some(())
    })
    .await;
    let writes = 3 * WRITES_PER_PHASE;
    let (mut written_lost, mut written_doubled, mut written_out_of_order, mut replies_in_parley) = (0, 0, 0, 0);
    for c in &customers {
        let events = app.store.events_after(&c.conversation_id, 0).await.expect("events");
        let messages: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Message { message } => Some(message),
                _ => None,
            })
            .collect();
        let from_customer: Vec<&str> = messages
            .iter()
            .filter(|m| m.channel == Channel::Messenger && matches!(m.author, Author::Visitor))
            .map(|m| m.body.as_str())
            .filter(|b| b.starts_with("message "))
            .collect();
        for k in 0..writes {
            let text = write(c.name, k);
            match from_customer.iter().filter(|b| **b == text).count() {
                0 => written_lost += 1,
                n => written_doubled += n - 1,
            }
        }
        for w in from_customer.windows(2).filter(|w| w[0] > w[1]) {
            written_out_of_order += 1;
            eprintln!("messenger chaos: applied out of order: {:?} before {:?}", w[0], w[1]);
        }
        let agent_replies: Vec<&str> =
            messages.iter().map(|m| m.body.as_str()).filter(|b| b.starts_with("reply ")).collect();
        replies_in_parley += agent_replies.len();
        sequences.push((
            format!("replies to {} in Parley's log", c.name),
            agent_replies.into_iter().map(str::to_owned).collect(),
            (0..replies).map(|k| reply(c.name, k)).collect(),
        ));
    }

    let rate_limited: u32 = bursts.iter().sum();
    eprintln!(
        "messenger chaos ({} customers, {:.1} s): faults injected: {outage_errors} outage errors (code 2) over \
         {outage_hours:.1} virtual hours, {rate_limited} × 613 in {} bursts, 2 hangs past the {TIMEOUT_SECS} s \
         timeout that delivered, 2 × 1/1357046 that delivered, {webhook_duplicates} duplicated and \
         {webhook_reorders} reordered webhook deliveries",
        customers.len(),
        started.elapsed().as_secs_f64(),
        bursts.len(),
    );
    eprintln!(
        "messenger chaos: replies sent {}, received by the sandbox {}, lost {lost}, doubled {doubled}, out of order \
         {out_of_order}, not RESPONSE {not_response}; in Parley's log {replies_in_parley}",
        expected.len(),
        counts.values().sum::<usize>(),
    );
    eprintln!(
        "messenger chaos: customer messages sent {}, in Parley lost {written_lost}, doubled {written_doubled}, out \
         of order {written_out_of_order}",
        customers.len() * writes,
    );
    assert!(outage_hours >= 6.0, "{outage_hours} virtual hours");
    assert!(outage_errors >= 2 * n, "{outage_errors} refused calls during the outage");
    assert!(webhook_duplicates >= 10, "{webhook_duplicates} duplicated deliveries");
    assert_eq!((lost, doubled, not_response), (0, 0, 0));
    assert_eq!((written_lost, written_doubled), (0, 0));
    // A reordered delivery's overtaking sibling and the held-back one may land in different intake passes; the
    // reorder window still stores them in timestamp order.
    assert_eq!(written_out_of_order, 0, "customer messages stored out of Messenger timestamp order");
    for (what, got, want) in sequences {
        assert_eq!(got, want, "{what}");
    }
}
