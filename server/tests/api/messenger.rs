//! The Messenger channel against the sandbox: webhook intake, linking a web chat to a Messenger user, one
//! conversation across both channels, window rules, and the outbox under every injected fault.

use std::time::Duration;

use messenger_sandbox::{FaultRule, NewUser, OpenOutcome, SendFault, WebhookFault};
use parley::messenger::signature;
use protocol::console;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{Author, Channel, DeliveryState, Event, EventKind};

use crate::helpers::{MessengerApp, TestApp, Ws, spawn_messenger_app};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

fn send(client_id: &str, body: &str) -> ClientMsg {
    ClientMsg::Send { client_id: client_id.into(), body: body.into() }
}

pub(crate) async fn next_event(ws: &mut Ws, mut pick: impl FnMut(&Event) -> bool) -> Event {
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Event { event } if pick(&event) => Some(event),
        _ => None,
    })
    .await
}

pub(crate) async fn agent_event(ws: &mut Ws, mut pick: impl FnMut(&Event) -> bool) -> Event {
    ws.recv_until(|m: console::ServerMsg| match m {
        console::ServerMsg::Event { event, .. } if pick(&event) => Some(event),
        _ => None,
    })
    .await
}

pub(crate) fn is_message(event: &Event, body: &str) -> bool {
    matches!(&event.kind, EventKind::Message { message } if message.body == body)
}

/// The log of a Messenger customer's conversation once it holds `n` messages (the store is polled: intake runs
/// in the background and this test has no socket on that conversation).
pub(crate) async fn wait_for_messages(app: &TestApp, psid: &str, n: usize) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(contact) = app.store.contact_by_psid(psid).await.expect("query")
            && let Some(conversation) = app.store.conversation_for_contact(&contact.id).await.expect("query")
        {
            let events = app.store.events_after(&conversation.id, 0).await.expect("events");
            if events.iter().filter(|e| matches!(e.kind, EventKind::Message { .. })).count() >= n {
                return events;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "fewer than {n} messages arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A visitor who wrote on the web, then asked for a Messenger link; returns the socket and the ref.
pub(crate) async fn web_visitor_with_link(app: &TestApp, first: &str) -> (Ws, String, String) {
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", first)).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    visitor.send(&ClientMsg::MessengerLink).await;
    let (url, code) = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::MessengerLink { url, code, .. } => Some((url, code)),
            _ => None,
        })
        .await;
    let reference = url.split("ref=").nth(1).expect("the link carries a ref").to_string();
    assert!(reference.len() <= 64 && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    (visitor, reference, code)
}

/// Opens the agent socket on the (only) conversation.
async fn agent_on(app: &TestApp) -> (Ws, String) {
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    let (mut agent, _) = app.agent().await;
    agent.send(&console::ClientMsg::Open { conversation_id: conversation_id.clone(), since_seq: 0 }).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::History { .. }).then_some(())).await;
    (agent, conversation_id)
}

pub(crate) async fn agent_says(agent: &mut Ws, conversation_id: &str, client_id: &str, body: &str) -> String {
    agent
        .send(&console::ClientMsg::Send {
            conversation_id: conversation_id.into(),
            client_id: client_id.into(),
            body: body.into(),
        })
        .await;
    agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Ack { client_id: c, message_id, .. } if c == client_id => Some(message_id),
            _ => None,
        })
        .await
}

pub(crate) fn customer(sandbox: &messenger_sandbox::Sandbox, first_name: &str) -> String {
    sandbox
        .create_user(NewUser {
            first_name: Some(first_name.into()),
            last_name: Some("Chang".into()),
            ..Default::default()
        })
        .expect("user")
        .psid
}

/// Waits until the Page asks this customer whether to continue the web chat in Messenger; returns the payload of
/// the "Yes, continue here" quick reply.
pub(crate) async fn consent_question(sandbox: &messenger_sandbox::Sandbox, psid: &str) -> String {
    sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().filter(|m| m.psid == psid).find_map(|m| {
                m.message.quick_replies.iter().find_map(|q| {
                    (q["title"] == "Yes, continue here").then(|| q["payload"].as_str().unwrap_or_default().to_string())
                })
            })
        })
        .await
        .expect("the Page asks before linking")
}

/// The customer taps "Yes, continue here" on the Page's question.
pub(crate) async fn says_yes(sandbox: &messenger_sandbox::Sandbox, psid: &str) {
    let payload = consent_question(sandbox, psid).await;
    sandbox.user_taps_quick_reply(psid, "Yes, continue here", &payload).expect("tap");
}

/// The recap of the web conversation the customer receives once linked.
async fn recap(sandbox: &messenger_sandbox::Sandbox) -> messenger_sandbox::SentMessage {
    sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages()
                .into_iter()
                .find(|m| m.message.text.as_deref().is_some_and(|t| t.starts_with("Here's where we left off")))
        })
        .await
        .expect("recap sent")
}

/// Links a fresh customer through Get Started with the visitor's ref (and their "Yes").
async fn link_new_customer(sandbox: &messenger_sandbox::Sandbox, visitor: &mut Ws, reference: &str) -> String {
    let psid = customer(sandbox, "Peter");
    assert_eq!(sandbox.user_opens_link(&psid, Some(reference)).expect("open"), OpenOutcome::GetStartedShown);
    sandbox.user_taps_get_started(&psid, Some(reference)).expect("get started");
    says_yes(sandbox, &psid).await;
    let linked = next_event(visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
    assert!(matches!(linked.kind, EventKind::Channel { name: Some(ref n), .. } if n == "Peter"), "{linked:?}");
    psid
}

#[tokio::test]
async fn the_webhook_handshake_answers_the_challenge_only_for_the_right_token() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, _| {}).await;
    let ok = app
        .http
        .get(app.url(
            "/webhooks/messenger?hub.mode=subscribe&hub.verify_token=sandbox-verify-token&hub.challenge=1158201444",
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    let wrong = app
        .http
        .get(app.url("/webhooks/messenger?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 403);
}

#[tokio::test]
async fn a_bad_or_missing_signature_gets_403_and_nothing_is_stored() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, _| {}).await;
    let body = r#"{"object":"page","entry":[{"id":"100000000000001","time":1,"messaging":[{"sender":{"id":"1"},"recipient":{"id":"100000000000001"},"timestamp":1,"message":{"mid":"m_x","text":"hi"}}]}]}"#;
    for header in [None, Some(signature::sign_sha256(b"wrong secret", body.as_bytes()))] {
        let mut request = app.http.post(app.url("/webhooks/messenger")).body(body);
        if let Some(h) = header {
            request = request.header("x-hub-signature-256", h);
        }
        assert_eq!(request.send().await.expect("request").status(), 403);
    }
    let good = signature::sign_sha256(b"sandbox-app-secret-0123456789abcdef", body.as_bytes());
    let response = app
        .http
        .post(app.url("/webhooks/messenger"))
        .header("x-hub-signature-256", good)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // Only the signed delivery reached the database.
    let mut stored = 0;
    for _ in 0..100 {
        stored = app.count_rows("webhook_deliveries").await;
        if stored > 0 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_web_chat_continues_on_messenger_as_one_conversation() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "Where is my order 1234?").await;
    let psid = link_new_customer(&sandbox, &mut visitor, &reference).await;

    // The customer gets a recap of the web conversation in Messenger.
    let sent = recap(&sandbox).await;
    let text = sent.message.text.clone().unwrap_or_default();
    assert!(text.contains("Where is my order 1234?"), "{text}");
    assert_eq!(sent.message.messaging_type.as_deref(), Some("RESPONSE"));

    // They write in Messenger: it shows in the widget, in the same conversation.
    sandbox.user_sends_text(&psid, "It was due yesterday").expect("send");
    let event = next_event(&mut visitor, |e| is_message(e, "It was due yesterday")).await;
    assert!(matches!(&event.kind, EventKind::Message { message } if message.channel == Channel::Messenger));
    assert_eq!(app.store.summaries().await.expect("summaries").len(), 1);

    // One agent reply reaches both channels.
    let (mut agent, conversation_id) = agent_on(&app).await;
    let message_id = agent_says(&mut agent, &conversation_id, "a-1", "It ships today, sorry!").await;
    next_event(&mut visitor, |e| is_message(e, "It ships today, sorry!")).await;
    let sent = sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().find(|m| m.message.text.as_deref() == Some("It ships today, sorry!"))
        })
        .await
        .expect("reply sent to Messenger");
    assert_eq!(sent.psid, psid);
    assert_eq!(sent.message.metadata.as_deref(), Some(message_id.as_str()));
    assert_eq!(sent.message.messaging_type.as_deref(), Some("RESPONSE"));

    // Its Messenger delivery shows as message states.
    for state in [DeliveryState::Sent, DeliveryState::Delivered] {
        agent_event(&mut agent, |e| {
            matches!(&e.kind, EventKind::Delivery { message_id: m, state: s, .. } if *m == message_id && *s == state)
        })
        .await;
    }
    let summary = app.store.summaries().await.expect("summaries").remove(0);
    assert_eq!(summary.psid.as_deref(), Some(psid.as_str()));
    assert_eq!(summary.display_name.as_deref(), Some("Peter Chang"));
}

#[tokio::test]
async fn a_ref_into_an_existing_thread_links_too() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Ana");
    sandbox.user_sends_text(&psid, "hello page").expect("send");
    // That made a Messenger-first conversation; now the same person chats on the web and links.
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "web question").await;
    assert_eq!(sandbox.user_opens_link(&psid, Some(&reference)).expect("open"), OpenOutcome::ReferralSent);
    says_yes(&sandbox, &psid).await;
    let linked = next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
    assert!(matches!(linked.kind, EventKind::Channel { name: Some(ref n), .. } if n == "Ana"));
    sandbox.user_sends_text(&psid, "now from messenger").expect("send");
    next_event(&mut visitor, |e| is_message(e, "now from messenger")).await;
}

#[tokio::test]
async fn expired_forged_and_reused_refs_bind_nothing() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.link_ttl_secs = 60).await;
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "question").await;
    // Forged: a token signed with another key.
    let forged = parley::messenger::link::mint(b"not our key", u32::MAX - 1).0;
    let intruder = customer(&sandbox, "Mallory");
    sandbox.user_taps_get_started(&intruder, Some(&forged)).expect("tap");
    // Reused: the first redeemer wins, the second binds nothing.
    let peter = link_new_customer(&sandbox, &mut visitor, &reference).await;
    let second = customer(&sandbox, "Eve");
    sandbox.user_taps_get_started(&second, Some(&reference)).expect("tap");
    sandbox.user_sends_text(&second, "am I linked?").expect("send");
    sandbox.user_sends_text(&peter, "I am").expect("send");
    next_event(&mut visitor, |e| is_message(e, "I am")).await;
    // Eve's and Mallory's messages went to conversations of their own, not to the visitor's.
    let contact = app.store.contact_by_psid(&second).await.expect("query").expect("Eve has a contact");
    let visitor_conversation = app.store.contact_by_psid(&peter).await.expect("query").expect("Peter");
    assert_ne!(contact.id, visitor_conversation.id);
    assert!(
        app.store.contact_by_psid(&intruder).await.expect("query").is_some_and(|c| c.id != visitor_conversation.id)
    );
    // Expired: a correctly signed token past its expiry.
    let expired = parley::messenger::link::verify(b"k", &parley::messenger::link::mint(b"k", 10).0, 11);
    assert!(expired.is_err());
}

#[tokio::test]
async fn the_short_code_links_when_no_referral_arrives() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|s, _| s.get_started = false).await;
    let (mut visitor, reference, code) = web_visitor_with_link(&app, "question").await;
    let psid = customer(&sandbox, "Kim");
    // Without Get Started no ref ever arrives.
    assert_eq!(sandbox.user_opens_link(&psid, Some(&reference)).expect("open"), OpenOutcome::ComposerShown);
    sandbox.user_sends_text(&psid, &format!("my code is {}", code.to_lowercase())).expect("send");
    says_yes(&sandbox, &psid).await;
    let linked = next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
    assert!(matches!(linked.kind, EventKind::Channel { name: Some(ref n), .. } if n == "Kim"));
    // What they wrote before saying yes stayed on their side; what they write now reaches the web conversation.
    sandbox.user_sends_text(&psid, "linked now").expect("send");
    let seen = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Event { event: Event { kind: EventKind::Message { message }, .. } } => {
                (message.body == "linked now" || message.body.contains("my code is")).then_some(message.body)
            }
            _ => None,
        })
        .await;
    assert_eq!(seen, "linked now");
}

#[tokio::test]
async fn a_conversation_started_on_messenger_shows_the_customers_name_and_picture() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut agent, _) = app.agent().await;
    let psid = customer(&sandbox, "Lea");
    sandbox.user_sends_text(&psid, "Hi from Messenger").expect("send");
    let summary = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Summary { conversation } if conversation.last_message.is_some() => Some(conversation),
            _ => None,
        })
        .await;
    assert_eq!(summary.visitor_name, "Lea Chang");
    let avatar = summary.visitor.avatar_url.expect("a cached picture");
    let picture = app.http.get(app.url(&avatar)).send().await.expect("request");
    assert_eq!(picture.status(), 200);
    assert!(summary.messenger.is_some_and(|m| m.response_until.is_some()));
}

#[tokio::test]
async fn duplicated_and_reordered_deliveries_apply_once_in_timestamp_order() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Dup");
    // Every delivery is sent several times, and the first is held back until after the second.
    sandbox.push_webhook_fault(FaultRule::times(WebhookFault::Duplicate, 3));
    sandbox.push_webhook_fault(FaultRule::once(WebhookFault::Reorder));
    for text in ["first", "second", "third"] {
        sandbox.user_sends_text(&psid, text).expect("send");
        sandbox.advance(Duration::from_secs(1));
    }
    sandbox.wait_idle(WAIT).await.expect("delivered");
    let conversation = wait_for_messages(&app, &psid, 3).await;
    let bodies: Vec<String> = conversation
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { message } => Some(message.body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec!["first", "second", "third"]);
}

/// A linked visitor with the agent on the conversation; returns (visitor, agent, conversation id, psid).
pub(crate) async fn linked(app: &TestApp, sandbox: &messenger_sandbox::Sandbox) -> (Ws, Ws, String, String) {
    let (mut visitor, reference, _) = web_visitor_with_link(app, "hello").await;
    let psid = link_new_customer(sandbox, &mut visitor, &reference).await;
    recap(sandbox).await;
    let (agent, conversation_id) = agent_on(app).await;
    (visitor, agent, conversation_id, psid)
}

async fn delivery_state(agent: &mut Ws, message_id: &str) -> (DeliveryState, Option<String>) {
    let event = agent_event(agent, |e| {
        matches!(&e.kind, EventKind::Delivery { message_id: m, state, .. }
            if m == message_id && *state != DeliveryState::Delivered)
    })
    .await;
    match event.kind {
        EventKind::Delivery { state, detail, .. } => (state, detail),
        _ => unreachable!("filtered above"),
    }
}

#[tokio::test]
async fn replies_follow_the_messenger_windows() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.human_agent = true).await;
    let (_visitor, mut agent, conversation_id, psid) = linked(&app, &sandbox).await;
    sandbox.user_sends_text(&psid, "are you there?").expect("send");
    agent_event(&mut agent, |e| is_message(e, "are you there?")).await;

    // 25 hours later: only a human agent may answer, with the HUMAN_AGENT tag.
    sandbox.advance_hours(25);
    app.clock.advance(Duration::from_secs(25 * 3600));
    let late = agent_says(&mut agent, &conversation_id, "a-1", "Sorry for the wait").await;
    let sent = sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().find(|m| m.message.text.as_deref() == Some("Sorry for the wait"))
        })
        .await
        .expect("sent");
    assert_eq!(sent.message.messaging_type.as_deref(), Some("MESSAGE_TAG"));
    assert_eq!(sent.message.tag.as_deref(), Some("HUMAN_AGENT"));
    assert_eq!(delivery_state(&mut agent, &late).await.0, DeliveryState::Sent);

    // 8 days later: nothing may be sent; the message says so and stays on the web.
    sandbox.advance_hours(24 * 7);
    app.clock.advance(Duration::from_secs(24 * 7 * 3600));
    let too_late = agent_says(&mut agent, &conversation_id, "a-2", "Still there?").await;
    let (state, detail) = delivery_state(&mut agent, &too_late).await;
    assert_eq!(state, DeliveryState::NotSent);
    assert!(detail.unwrap_or_default().contains("must write first"));
    assert!(sandbox.sent_messages().iter().all(|m| m.message.text.as_deref() != Some("Still there?")));
}

#[tokio::test]
async fn without_the_human_agent_feature_nothing_goes_out_after_24_hours() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    sandbox.advance_hours(25);
    app.clock.advance(Duration::from_secs(25 * 3600));
    let id = agent_says(&mut agent, &conversation_id, "a-1", "hello?").await;
    assert_eq!(delivery_state(&mut agent, &id).await.0, DeliveryState::NotSent);
}

#[tokio::test]
async fn retryable_failures_are_retried_until_the_message_goes_out_in_order() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    sandbox.push_send_fault(FaultRule::once(SendFault::TemporaryFailure));
    sandbox.push_send_fault(FaultRule::once(SendFault::ServiceUnavailable));
    sandbox.push_send_fault(FaultRule::once(SendFault::RateLimited { code: 613 }));
    let first = agent_says(&mut agent, &conversation_id, "a-1", "one").await;
    agent_says(&mut agent, &conversation_id, "a-2", "two").await;
    assert_eq!(delivery_state(&mut agent, &first).await.0, DeliveryState::Sent);
    let texts = sandbox
        .wait_until(Duration::from_secs(30), |s| {
            let texts: Vec<String> = s.sent_messages().into_iter().filter_map(|m| m.message.text).collect();
            texts.iter().any(|t| t == "two").then_some(texts)
        })
        .await
        .expect("both sent");
    let order: Vec<&String> = texts.iter().filter(|t| *t == "one" || *t == "two").collect();
    assert_eq!(order, vec!["one", "two"]);
}

#[tokio::test]
async fn a_revoked_token_raises_an_alert_and_sending_resumes_when_it_is_fixed() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    sandbox.revoke_token();
    agent_says(&mut agent, &conversation_id, "a-1", "are you getting this?").await;
    let alert = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Alert { key, message: Some(message) } if key == "messenger_token" => Some(message),
            _ => None,
        })
        .await;
    assert!(alert.contains("token"), "{alert}");
    sandbox.restore_token();
    sandbox
        .wait_until(Duration::from_secs(45), |s| {
            s.sent_messages().into_iter().find(|m| m.message.text.as_deref() == Some("are you getting this?"))
        })
        .await
        .expect("sent after the token came back");
    agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Alert { key, message: None } if key == "messenger_token" => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn a_customer_who_blocked_the_page_gets_a_failed_state_in_plain_words() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    sandbox.push_send_fault(FaultRule::once(SendFault::UserBlocks));
    let id = agent_says(&mut agent, &conversation_id, "a-1", "hello").await;
    let (state, detail) = delivery_state(&mut agent, &id).await;
    assert_eq!(state, DeliveryState::Failed);
    assert!(detail.unwrap_or_default().contains("can't receive"));
}

#[tokio::test]
async fn an_ambiguous_failure_does_not_send_twice() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    sandbox.push_send_fault(FaultRule::once(SendFault::DeliveredButError));
    let first = agent_says(&mut agent, &conversation_id, "a-1", "only once please").await;
    sandbox.push_send_fault(FaultRule::once(SendFault::Hang { ms: 2500 }));
    let second = agent_says(&mut agent, &conversation_id, "a-2", "and this one too").await;
    // Both settle through our own echoes.
    assert_eq!(delivery_state(&mut agent, &first).await.0, DeliveryState::Sent);
    assert_eq!(delivery_state(&mut agent, &second).await.0, DeliveryState::Sent);
    let count = |text: &str| sandbox.sent_messages().iter().filter(|m| m.message.text.as_deref() == Some(text)).count();
    assert_eq!(count("only once please"), 1);
    assert_eq!(count("and this one too"), 1);
}

#[tokio::test]
async fn replies_from_the_page_inbox_appear_in_the_conversation() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, _agent, _conversation_id, psid) = linked(&app, &sandbox).await;
    sandbox.inbox_replies(&psid, "Answered from Meta's inbox").expect("inbox reply");
    let event = next_event(&mut visitor, |e| is_message(e, "Answered from Meta's inbox")).await;
    assert!(matches!(&event.kind, EventKind::Message { message } if matches!(message.author, Author::Agent { .. })));
}

#[tokio::test]
async fn attachments_from_messenger_are_downloaded_and_served() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Pic");
    sandbox.user_sends_attachment(&psid, "image").expect("send");
    let events = wait_for_messages(&app, &psid, 1).await;
    let attachment = events
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::Message { message } => message.attachments.into_iter().next(),
            _ => None,
        })
        .expect("an attachment");
    assert_eq!(attachment.kind, "image");
    let response = app.http.get(app.url(&attachment.url)).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert!(!response.bytes().await.expect("bytes").is_empty());
}

#[tokio::test]
async fn a_delivery_is_acknowledged_while_the_database_is_locked_and_stored_once_it_is_free() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Slow");
    // Another writer holds SQLite's write lock: the webhook must still be answered (from the spool).
    let blocker = app.hold_write_lock().await;
    sandbox.user_sends_text(&psid, "while the database is busy").expect("send");
    let deliveries = sandbox.wait_for_deliveries(1, WAIT).await.expect("acknowledged while locked");
    assert!(deliveries.iter().all(|d| d.attempts.last().is_some_and(|a| a.status == Some(200))));
    blocker.release().await;
    let events = wait_for_messages(&app, &psid, 1).await;
    assert!(events.iter().any(|e| is_message(e, "while the database is busy")));
}

#[tokio::test]
async fn batched_deliveries_are_all_applied() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Batch");
    sandbox.push_webhook_fault(FaultRule::once(WebhookFault::Batch { events: 3, entries: 2 }));
    for text in ["a", "b", "c"] {
        sandbox.user_sends_text(&psid, text).expect("send");
        sandbox.advance(Duration::from_secs(1));
    }
    let events = wait_for_messages(&app, &psid, 3).await;
    let bodies: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { message } => Some(message.body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn a_badly_signed_delivery_is_refused_and_the_retry_applies_once() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Sig");
    sandbox.push_webhook_fault(FaultRule::once(WebhookFault::BadSignature));
    sandbox.user_sends_text(&psid, "signed twice").expect("send");
    let deliveries = sandbox.wait_for_deliveries(1, WAIT).await.expect("delivered on retry");
    assert!(deliveries[0].attempts.iter().any(|a| a.status == Some(403)), "{:?}", deliveries[0].attempts);
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(events.iter().filter(|e| is_message(e, "signed twice")).count(), 1);
}

#[tokio::test]
async fn when_android_drops_the_referral_the_short_code_still_links() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, reference, code) = web_visitor_with_link(&app, "question").await;
    let psid = customer(&sandbox, "Droid");
    sandbox.push_webhook_fault(FaultRule::once(WebhookFault::DropReferral));
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("tap");
    sandbox.wait_idle(WAIT).await.expect("delivered");
    sandbox.user_sends_text(&psid, &code).expect("send");
    says_yes(&sandbox, &psid).await;
    let linked = next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
    assert!(matches!(linked.kind, EventKind::Channel { name: Some(ref n), .. } if n == "Droid"));
}

#[tokio::test]
async fn delivery_without_mids_and_read_watermarks_become_message_states() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, psid) = linked(&app, &sandbox).await;
    sandbox.push_webhook_fault(FaultRule::times(WebhookFault::NoDeliveryMids, 5));
    let id = agent_says(&mut agent, &conversation_id, "a-1", "did you get this?").await;
    agent_event(&mut agent, |e| {
        matches!(&e.kind, EventKind::Delivery { message_id, state: DeliveryState::Delivered, .. } if *message_id == id)
    })
    .await;
    sandbox.user_reads(&psid).expect("read");
    let read =
        agent_event(&mut agent, |e| matches!(e.kind, EventKind::Read { by: protocol::Party::Visitor, .. })).await;
    let seq_of_reply = app
        .store
        .events_after(&conversation_id, 0)
        .await
        .expect("events")
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::Message { message } if message.id == id))
        .expect("the reply")
        .seq;
    assert!(matches!(read.kind, EventKind::Read { up_to_seq, .. } if up_to_seq >= seq_of_reply));
}

#[tokio::test]
async fn undoing_the_link_stops_the_mirror() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    visitor.send(&ClientMsg::UnlinkMessenger).await;
    next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: false, .. })).await;
    agent_says(&mut agent, &conversation_id, "a-1", "web only now").await;
    next_event(&mut visitor, |e| is_message(e, "web only now")).await;
    // Sent to Messenger: only the question and the recap.
    assert_eq!(sandbox.sent_messages().len(), 2, "{:?}", sandbox.sent_messages());
    let summary = app.store.summaries().await.expect("summaries").remove(0);
    assert!(summary.psid.is_none());
}

#[tokio::test]
async fn agent_typing_shows_in_messenger_and_opening_the_conversation_marks_it_seen() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, psid) = linked(&app, &sandbox).await;
    // `linked` opened the conversation in the console.
    sandbox
        .wait_until(WAIT, |s| s.thread(&psid).filter(|t| t.page_seen_count > 0).map(|_| ()))
        .await
        .expect("mark_seen reached Messenger");
    agent.send(&console::ClientMsg::Typing { conversation_id, typing: true }).await;
    sandbox
        .wait_until(WAIT, |s| s.thread(&psid).filter(|t| t.typing).map(|_| ()))
        .await
        .expect("typing_on reached Messenger");
}

#[tokio::test]
async fn page_inbox_owning_the_thread_and_server_errors_are_told_apart() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, mut agent, conversation_id, _psid) = linked(&app, &sandbox).await;
    // A 502 with an HTML page is retried.
    sandbox.push_send_fault(FaultRule::once(SendFault::ServerError { status: 502 }));
    let retried = agent_says(&mut agent, &conversation_id, "a-1", "after a 502").await;
    assert_eq!(delivery_state(&mut agent, &retried).await.0, DeliveryState::Sent);
    // The Page inbox taking the thread is not retried, and agents are told why.
    sandbox.push_send_fault(FaultRule::once(SendFault::InboxTakesThread));
    let refused = agent_says(&mut agent, &conversation_id, "a-2", "owned elsewhere").await;
    let (state, detail) = delivery_state(&mut agent, &refused).await;
    assert_eq!(state, DeliveryState::Failed);
    assert!(detail.unwrap_or_default().contains("another inbox"));
}

#[tokio::test]
async fn a_visitor_who_has_not_written_yet_can_continue_on_messenger() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&ClientMsg::MessengerLink).await;
    let url = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::MessengerLink { url, .. } => Some(url),
            _ => None,
        })
        .await;
    let reference = url.split("ref=").nth(1).expect("ref").to_string();
    link_new_customer(&sandbox, &mut visitor, &reference).await;
    let psid = sandbox.users()[0].psid.clone();
    sandbox.user_sends_text(&psid, "first words, on Messenger").expect("send");
    next_event(&mut visitor, |e| is_message(e, "first words, on Messenger")).await;
}
