//! Messenger intake under attack and faults: SSRF through attachment URLs, forced binding through forwarded links,
//! hostile PSIDs, deliveries that keep failing (quarantine), and failures between an idempotency key and its effect.
//! Probe servers are real sockets on 127.0.0.1 that count what reaches them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use messenger_sandbox::{UserAttachment, UserMessage};
use parley::messenger::signature;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{Event, EventKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{MessengerApp, TestApp, spawn_messenger_app};
use crate::messenger::{
    WAIT, consent_question, customer, is_message, says_yes, wait_for_messages, web_visitor_with_link,
};

/// What a probe server answers.
#[derive(Clone)]
enum Reply {
    Body(&'static [u8]),
    /// 302 to this URL.
    Redirect(String),
    /// A chunked body that never ends.
    Endless,
    /// Accept, read the request, never answer.
    Hang,
}

/// A tiny HTTP server counting requests, bytes written and connections still open.
struct Probe {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
}

impl Probe {
    async fn start(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (hits, written, open) = (Arc::default(), Arc::<AtomicU64>::default(), Arc::<AtomicUsize>::default());
        let probe = Self { addr, hits: Arc::clone(&hits), written: Arc::clone(&written), open: Arc::clone(&open) };
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (hits, written, open, reply) =
                    (Arc::clone(&hits), Arc::clone(&written), Arc::clone(&open), Arc::clone(&reply));
                tokio::spawn(async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    match reply(&path) {
                        Reply::Body(body) => {
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = socket.write_all(response.as_bytes()).await;
                            let _ = socket.write_all(body).await;
                        }
                        Reply::Redirect(to) => {
                            let response = format!(
                                "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(response.as_bytes()).await;
                        }
                        Reply::Endless => {
                            let _ = socket
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n",
                                )
                                .await;
                            let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
                            while socket.write_all(chunk.as_bytes()).await.is_ok() {
                                written.fetch_add(16 * 1024, Ordering::SeqCst);
                            }
                        }
                        Reply::Hang => {
                            // Wait until the client gives up (read returns 0 or fails).
                            let _ = socket.read(&mut buf).await;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        probe
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Polls until `probe` returns `Some` (WAIT at most).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The customer sends one attachment per URL (as a shared link would arrive, `fallback`).
fn send_links(sandbox: &messenger_sandbox::Sandbox, psid: &str, urls: &[String]) {
    let attachments = urls
        .iter()
        .map(|u| UserAttachment { kind: "fallback".into(), url: Some(u.clone()), ..Default::default() })
        .collect();
    sandbox
        .user_sends(psid, UserMessage { text: Some("look".into()), attachments, ..Default::default() })
        .expect("send");
}

/// Ids of the attachments in the customer's conversation, in message order.
async fn attachment_ids(app: &TestApp, psid: &str, n: usize) -> Vec<String> {
    let events = wait_for_messages(app, psid, 1).await;
    let ids: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { message } => Some(message.attachments),
            _ => None,
        })
        .flatten()
        .map(|a| a.url.trim_start_matches("/attachments/").to_string())
        .collect();
    assert_eq!(ids.len(), n, "{ids:?}");
    ids
}

/// Waits until the download queue settled an attachment; returns (status, error).
async fn settled(app: &TestApp, id: &str) -> (String, Option<String>) {
    eventually("the download to settle", || async {
        app.store.attachment_status(id).await.expect("query").filter(|(s, _)| s == "ready" || s == "failed")
    })
    .await
}

#[tokio::test]
async fn an_attachment_link_to_a_loopback_server_fetches_nothing_and_shows_as_unavailable() {
    let metadata = Probe::start(|_| Reply::Body(b"{\"AccessKeyId\":\"secret\"}")).await;
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Mal");
    send_links(&sandbox, &psid, &[metadata.url("/latest/meta-data/iam/security-credentials/")]);
    let ids = attachment_ids(&app, &psid, 1).await;
    let (status, error) = settled(&app, &ids[0]).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("allow-list"));
    // The message is kept; its attachment answers "unavailable", never the probe's body.
    let response = app.http.get(app.url(&format!("/attachments/{}", ids[0]))).send().await.expect("request");
    assert_eq!(response.status(), 410);
    assert_eq!(response.text().await.expect("body"), "attachment unavailable");
    assert_eq!(metadata.hits(), 0, "nothing may connect to the loopback server");
}

#[tokio::test]
async fn the_metadata_address_is_refused_even_when_a_rule_names_it() {
    // An entry without a port is not explicit: it cannot admit a non-public address.
    let MessengerApp { app, sandbox } =
        spawn_messenger_app(|_, s| s.messenger.attachment_hosts.push("http://169.254.169.254".into())).await;
    let psid = customer(&sandbox, "Mal");
    send_links(&sandbox, &psid, &["http://169.254.169.254/latest/meta-data/".to_string()]);
    let ids = attachment_ids(&app, &psid, 1).await;
    assert_eq!(settled(&app, &ids[0]).await, ("failed".to_string(), Some("address is not public".to_string())));
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let private = Probe::start(|_| Reply::Body(b"internal")).await;
    let target = private.url("/admin");
    let cdn = Probe::start(move |path| match path {
        "/to-private" => Reply::Redirect(target.clone()),
        "/to-metadata" => Reply::Redirect("http://169.254.169.254/latest/meta-data/".into()),
        "/hop" => Reply::Redirect("/file.png".into()),
        _ => Reply::Body(b"\x89PNG fine"),
    })
    .await;
    let cdn_entry = format!("http://{}", cdn.addr);
    let MessengerApp { app, sandbox } =
        spawn_messenger_app(move |_, s| s.messenger.attachment_hosts.push(cdn_entry)).await;
    let psid = customer(&sandbox, "Red");
    send_links(&sandbox, &psid, &[cdn.url("/to-private"), cdn.url("/to-metadata"), cdn.url("/hop")]);
    let ids = attachment_ids(&app, &psid, 3).await;
    assert_eq!(settled(&app, &ids[0]).await, ("failed".into(), Some("host not on the attachment allow-list".into())));
    assert_eq!(settled(&app, &ids[1]).await.0, "failed");
    // A redirect within the allowed host is followed.
    assert_eq!(settled(&app, &ids[2]).await.0, "ready");
    let served = app.http.get(app.url(&format!("/attachments/{}", ids[2]))).send().await.expect("request");
    assert_eq!(served.bytes().await.expect("body").as_ref(), b"\x89PNG fine");
    assert_eq!(private.hits(), 0, "the private server was never reached");
}

#[tokio::test]
async fn an_oversized_body_is_aborted_at_the_cap() {
    let endless = Probe::start(|_| Reply::Endless).await;
    let entry = format!("http://{}", endless.addr);
    let MessengerApp { app, sandbox } = spawn_messenger_app(move |_, s| {
        s.messenger.attachment_hosts.push(entry);
        s.messenger.attachment_max_bytes = 64 * 1024;
        s.messenger.attachment_timeout_secs = 60;
    })
    .await;
    let psid = customer(&sandbox, "Big");
    send_links(&sandbox, &psid, &[endless.url("/huge.png")]);
    let ids = attachment_ids(&app, &psid, 1).await;
    let (status, error) = settled(&app, &ids[0]).await;
    assert_eq!((status.as_str(), error.as_deref()), ("failed", Some("larger than the 65536-byte limit")));
    // The connection was dropped: the server stops being able to write (what it wrote is the cap plus what the
    // kernel's socket buffers absorbed, not an endless body).
    eventually("the server to notice the abort", || async { (endless.open.load(Ordering::SeqCst) == 0).then_some(()) })
        .await;
    let written = endless.written.load(Ordering::SeqCst);
    assert!(written < 16 * 1024 * 1024, "{written} bytes were pushed before the abort");
}

#[tokio::test]
async fn a_slow_attachment_does_not_delay_another_customers_message() {
    let slow = Probe::start(|_| Reply::Hang).await;
    let entry = format!("http://{}", slow.addr);
    let MessengerApp { app, sandbox } = spawn_messenger_app(move |_, s| {
        s.messenger.attachment_hosts.push(entry);
        s.messenger.attachment_timeout_secs = 60;
    })
    .await;
    let first = customer(&sandbox, "Slow");
    send_links(&sandbox, &first, &[slow.url("/never.png")]);
    eventually("the slow download to start", || async { (slow.hits() == 1).then_some(()) }).await;
    let other = customer(&sandbox, "Quick");
    sandbox.user_sends_text(&other, "am I stuck behind someone?").expect("send");
    let events = wait_for_messages(&app, &other, 1).await;
    assert!(events.iter().any(|e| is_message(e, "am I stuck behind someone?")));
    // The slow download is still in flight, and the slow customer's own message was posted without waiting.
    assert_eq!(slow.open.load(Ordering::SeqCst), 1, "the slow download must still be running");
    wait_for_messages(&app, &first, 1).await;
}

/// Events a socket receives until (and without) the one matching `until`.
async fn events_before(ws: &mut crate::helpers::Ws, mut until: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Event { event } if until(&event) => Some(()),
        ServerMsg::Event { event } => {
            seen.push(event);
            None
        }
        _ => None,
    })
    .await;
    seen
}

#[tokio::test]
async fn a_forwarded_link_binds_nothing_unless_the_person_says_yes() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    // Mallory mints a link in her own widget and sends it to Victor.
    let (mut mallory, reference, _) = web_visitor_with_link(&app, "hi, it's Mallory").await;
    let victor = customer(&sandbox, "Victor");
    sandbox.user_taps_get_started(&victor, Some(&reference)).expect("get started");
    let yes = consent_question(&sandbox, &victor).await;
    // Before answering, Victor writes: it stays in a conversation of his own.
    sandbox.user_sends_text(&victor, "my card number is 4111").expect("send");
    wait_for_messages(&app, &victor, 1).await;
    // Victor says no. His own later message arrives in his conversation, never in Mallory's.
    let no = yes.replace("_yes_", "_no_");
    sandbox.user_taps_quick_reply(&victor, "No", &no).expect("no");
    sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages()
                .into_iter()
                .find(|m| m.psid == victor && m.message.text.as_deref().is_some_and(|t| t.starts_with("OK, nothing")))
        })
        .await
        .expect("the refusal is confirmed");
    // Even the old "Yes" button does nothing after "No".
    sandbox.user_taps_quick_reply(&victor, "Yes, continue here", &yes).expect("late yes");
    sandbox.user_sends_text(&victor, "second message").expect("send");
    wait_for_messages(&app, &victor, 2).await;
    mallory.send(&ClientMsg::Send { client_id: "c-2".into(), body: "sentinel".into() }).await;
    let before = events_before(&mut mallory, |e| is_message(e, "sentinel")).await;
    assert!(
        before.iter().all(|e| !matches!(&e.kind, EventKind::Channel { .. } | EventKind::Message { .. })),
        "nothing from Messenger reached Mallory: {before:?}"
    );
    let mallory_contact = &app
        .store
        .summaries()
        .await
        .expect("summaries")
        .into_iter()
        .find(|s| s.label.starts_with("Visitor"))
        .expect("Mallory")
        .contact_id;
    let contact = app.store.contact(mallory_contact).await.expect("query").expect("contact");
    assert_eq!((contact.psid, contact.display_name, contact.avatar_id), (None, None, None));
    assert!(app.store.contact_by_psid(&victor).await.expect("query").is_some_and(|c| c.id != *mallory_contact));
}

#[tokio::test]
async fn an_unanswered_offer_expires_and_binds_nothing() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "question").await;
    let psid = customer(&sandbox, "Late");
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("get started");
    let yes = consent_question(&sandbox, &psid).await;
    // The offer's lifetime passes without an answer.
    app.clock.advance(Duration::from_secs(601));
    sandbox.user_taps_quick_reply(&psid, "Yes, continue here", &yes).expect("too late");
    sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().find(|m| m.message.text.as_deref().is_some_and(|t| t.contains("expired")))
        })
        .await
        .expect("told the link expired");
    visitor.send(&ClientMsg::Send { client_id: "c-2".into(), body: "sentinel".into() }).await;
    let before = events_before(&mut visitor, |e| is_message(e, "sentinel")).await;
    assert!(before.iter().all(|e| !matches!(e.kind, EventKind::Channel { .. })), "{before:?}");
    assert!(app.store.contact_by_psid(&psid).await.expect("query").is_none());
}

#[tokio::test]
async fn the_short_code_asks_too_and_nothing_binds_before_yes() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|s, _| s.get_started = false).await;
    let (mut visitor, _, code) = web_visitor_with_link(&app, "question").await;
    let psid = customer(&sandbox, "Kim");
    sandbox.user_sends_text(&psid, &code).expect("send");
    consent_question(&sandbox, &psid).await;
    let own = wait_for_messages(&app, &psid, 1).await;
    assert!(own.iter().any(|e| is_message(e, &code)), "the code message stayed on Kim's side");
    visitor.send(&ClientMsg::Send { client_id: "c-2".into(), body: "sentinel".into() }).await;
    let before = events_before(&mut visitor, |e| is_message(e, "sentinel")).await;
    assert!(before.iter().all(|e| !matches!(&e.kind, EventKind::Channel { .. } | EventKind::Message { .. })));
    says_yes(&sandbox, &psid).await;
    crate::messenger::next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
}

#[tokio::test]
async fn link_rows_are_capped_per_contact_and_expired_ones_are_deleted() {
    let MessengerApp { app, .. } = spawn_messenger_app(|_, _| {}).await;
    let (_visitor, _, _) = web_visitor_with_link(&app, "question").await;
    let contact_id = app.store.summaries().await.expect("summaries")[0].contact_id.clone();
    let messenger = app.state.messenger.clone().expect("messenger on");
    for _ in 0..25 {
        messenger.offer_link(&contact_id).await.expect("offer");
    }
    assert_eq!(
        app.query_i64(&format!("select count(*) from messenger_links where contact_id = '{contact_id}'")).await,
        parley::store::MAX_LIVE_LINKS
    );
    app.clock.advance(Duration::from_secs(601));
    messenger.offer_link(&contact_id).await.expect("offer");
    assert_eq!(
        app.query_i64(&format!("select count(*) from messenger_links where contact_id = '{contact_id}'")).await,
        1
    );
}

/// Posts a signed webhook body as Meta would.
pub(crate) async fn deliver(app: &TestApp, body: &str) {
    let signed = signature::sign_sha256(b"sandbox-app-secret-0123456789abcdef", body.as_bytes());
    let response = app
        .http
        .post(app.url("/webhooks/messenger"))
        .header("x-hub-signature-256", signed)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn hostile_psids_and_payloads_never_stop_the_intake() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let long = "é".repeat(3000);
    let psids = ["1é234", "é", "😀😀😀", "a\u{0}b", "\u{202e}1234", "x", "ab\u{301}\u{301}", long.as_str()];
    let page = "100000000000001";
    for (i, psid) in psids.iter().enumerate() {
        let event = |kind: serde_json::Value| {
            let mut e = serde_json::json!({"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": 1_000 + i});
            e.as_object_mut().expect("object").extend(kind.as_object().expect("object").clone());
            e
        };
        let events = vec![
            event(
                serde_json::json!({"message": {"mid": format!("m_hostile_{i}"), "text": "é ABCDEFé 23456789 ws1c_yes_é",
                "quick_reply": {"payload": "ws1c_yes_ééééééééééééé"},
                "attachments": [{"type": "image", "payload": {"url": "http://[::1"}}, {"type": "file", "payload": {"url": "javascript:alert(1)"}},
                                {"type": "fallback", "payload": {"url": "é"}}, {"type": "x"}]}}),
            ),
            event(
                serde_json::json!({"postback": {"title": "é", "payload": "é", "referral": {"ref": format!("ws1_{psid}")}}}),
            ),
            event(serde_json::json!({"referral": {"ref": "ws1_ééééééééééééééééééééééééééééééééééééééééééé"}})),
            event(serde_json::json!({"read": {"watermark": -1}})),
            event(serde_json::json!({"delivery": {"mids": ["é"], "watermark": i64::MAX}})),
        ];
        let body = serde_json::json!({"object": "page", "entry": [{"id": page, "time": 1, "messaging": events}]});
        deliver(&app, &body.to_string()).await;
    }
    // The intake is alive: an ordinary customer's message after all that is applied.
    let normal = customer(&sandbox, "Normal");
    sandbox.user_sends_text(&normal, "still working?").expect("send");
    wait_for_messages(&app, &normal, 1).await;
    let contact = app.store.contact_by_psid("1é234").await.expect("query").expect("the é PSID got a contact");
    assert!(contact.label.ends_with("é234"), "{}", contact.label);
    assert_eq!(app.store.quarantined_delivery_count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_delivery_that_always_fails_is_quarantined_and_replays_once_fixed() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.max_delivery_attempts = 3).await;
    // A fault that makes this one message impossible to store.
    app.execute_raw(
        "create trigger poison before insert on messages when new.body = 'poison'
             begin select raise(abort, 'injected failure'); end",
    )
    .await;
    let psid = customer(&sandbox, "Q");
    sandbox.user_sends_text(&psid, "poison").expect("send");
    eventually("the delivery to be quarantined", || async {
        (app.store.quarantined_delivery_count().await.expect("count") == 1).then_some(())
    })
    .await;
    let quarantined = app.store.quarantined_deliveries().await.expect("list");
    assert_eq!(quarantined[0].attempts, 3);
    assert!(quarantined[0].error.as_deref().unwrap_or_default().contains("injected failure"));
    // /readyz shows it, without calling the server down.
    let health = app.http.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.expect("json");
    assert_eq!(health["messenger"]["quarantined"], 1, "{health}");
    // Later deliveries are not blocked.
    sandbox.user_sends_text(&psid, "after").expect("send");
    let events = wait_for_messages(&app, &psid, 1).await;
    assert!(events.iter().any(|e| is_message(e, "after")));
    // The operator sees it from the command line, fixes the fault, and replays it.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(args)
            .env("PARLEY_DATABASE__URL", &app.db_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("parley runs")
    };
    let listed = cli(&["messenger", "quarantine", "list"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success() && listed_text.contains("1 quarantined"), "{listed_text}");
    assert!(listed_text.starts_with(&format!("{}\t", quarantined[0].id)), "{listed_text}");
    app.execute_raw("drop trigger poison").await;
    let replayed = cli(&["messenger", "quarantine", "replay", &quarantined[0].id.to_string()]);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    app.state.messenger.as_ref().expect("messenger").intake_wake.notify_one();
    let events = wait_for_messages(&app, &psid, 2).await;
    assert_eq!(events.iter().filter(|e| is_message(e, "poison")).count(), 1);
    assert_eq!(app.store.quarantined_delivery_count().await.expect("count"), 0);
    let health: serde_json::Value =
        app.http.get(app.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(health["messenger"]["quarantined"], 0, "{health}");
    let none = cli(&["messenger", "quarantine", "replay", "999"]);
    assert!(!none.status.success());
}

/// Waits until the intake has failed at least once on the stored deliveries.
async fn intake_failed(app: &TestApp) {
    eventually("a failed attempt", || async {
        (app.query_i64("select coalesce(sum(attempts), 0) from webhook_deliveries where processed_at is null").await
            > 0)
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failure_between_a_referral_key_and_the_offer_loses_nothing() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.max_delivery_attempts = 1000).await;
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "question").await;
    app.execute_raw(
        "create trigger fail_offer before update of offered_at on messenger_links
             begin select raise(abort, 'injected failure'); end",
    )
    .await;
    let psid = customer(&sandbox, "Fay");
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("get started");
    intake_failed(&app).await;
    app.execute_raw("drop trigger fail_offer").await;
    // The retry still offers the link: the postback's key was not committed without its effect.
    says_yes(&sandbox, &psid).await;
    crate::messenger::next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
}

#[tokio::test]
async fn a_failure_while_binding_after_yes_loses_nothing() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.max_delivery_attempts = 1000).await;
    let (mut visitor, reference, _) = web_visitor_with_link(&app, "question").await;
    let psid = customer(&sandbox, "Bo");
    sandbox.user_taps_get_started(&psid, Some(&reference)).expect("get started");
    let yes = consent_question(&sandbox, &psid).await;
    app.execute_raw(
        "create trigger fail_bind before update of psid on contacts when new.psid is not null
             begin select raise(abort, 'injected failure'); end",
    )
    .await;
    sandbox.user_taps_quick_reply(&psid, "Yes, continue here", &yes).expect("yes");
    intake_failed(&app).await;
    app.execute_raw("drop trigger fail_bind").await;
    // The retry binds: the link was not used up without the binding.
    crate::messenger::next_event(&mut visitor, |e| matches!(e.kind, EventKind::Channel { linked: true, .. })).await;
}

#[tokio::test]
async fn a_failure_between_a_delivery_key_and_its_state_loses_nothing() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, s| s.messenger.max_delivery_attempts = 1000).await;
    let (_visitor, mut agent, conversation_id, _psid) = crate::messenger::linked(&app, &sandbox).await;
    app.execute_raw(
        r#"create trigger fail_delivered before insert on events when new.payload like '%"delivered"%'
               begin select raise(abort, 'injected failure'); end"#,
    )
    .await;
    let id = crate::messenger::agent_says(&mut agent, &conversation_id, "a-1", "did it arrive?").await;
    intake_failed(&app).await;
    app.execute_raw("drop trigger fail_delivered").await;
    // The retry records the state: its key was not committed without it.
    crate::messenger::agent_event(&mut agent, |e| {
        matches!(&e.kind, EventKind::Delivery { message_id, state: protocol::DeliveryState::Delivered, .. }
            if *message_id == id)
    })
    .await;
}

fn deliveries_read(app: &TestApp) -> u64 {
    app.workers.snapshot().get("messenger_intake").and_then(|w| w.counters.get("deliveries_read").copied()).unwrap_or(0)
}

/// Stores `count` deliveries at once (one message each, mids `m_{tag}_{n}`, 50 customers of a Page not connected
/// here, so each applies cheaply) and wakes the intake once.
async fn store_backlog(app: &TestApp, tag: &str, count: usize) {
    let bodies: Vec<String> = (0..count)
        .map(|n| {
            format!(
                r#"{{"object":"page","entry":[{{"id":"424242","time":{n},"messaging":[{{"sender":{{"id":"{}"}},
                "recipient":{{"id":"424242"}},"timestamp":{},"message":{{"mid":"m_{tag}_{n}","text":"t"}}}}]}}]}}"#,
                7_000 + n % 50,
                1_700_000_000_000_u64 + n as u64
            )
        })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    app.store.insert_webhook_deliveries(&refs).await.expect("stored");
    app.state.messenger.as_ref().expect("Messenger on").intake_wake.notify_one();
}

/// A backlog is read about once, not once for every batch of new deliveries behind it: 3,000 deliveries waiting
/// at once (their events held in the reorder window, for a Page not connected here, so each applies cheaply) are
/// all processed, having read at most 4 rows per delivery (reading the held ones again every round of 200 read
/// about 9 per delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_deliveries_is_not_read_again_for_every_batch() {
    const DELIVERIES: usize = 3000;
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    let before = deliveries_read(&app);
    store_backlog(&app, "backlog", DELIVERIES).await;
    // Generous: 3,000 deliveries are marked processed one by one (in a debug build).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while app.query_i64("select count(*) from webhook_deliveries where processed_at is null").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the backlog was not processed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The count is reported after each pass.
    let deadline = tokio::time::Instant::now() + WAIT;
    while deliveries_read(&app) - before < DELIVERIES as u64 {
        assert!(tokio::time::Instant::now() < deadline, "the intake reported no reads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = deliveries_read(&app) - before;
    assert!(read <= 4 * DELIVERIES as u64, "{read} rows read for {DELIVERIES} deliveries");
}

/// A backlog larger than the intake holds (5,000) drains without any webhook to wake the intake: 6,000 deliveries
/// stored at once and one wake-up are all processed within [`WAIT`]. Before, the pass that applied the 5,000 held
/// ones read no more, and nothing held was left to wake the intake: the other 1,000 waited for its 30 s idle timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_intake_holds_drains_without_another_webhook() {
    const DELIVERIES: usize = 6000;
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    store_backlog(&app, "big", DELIVERIES).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = app.query_i64("select count(*) from webhook_deliveries where processed_at is null").await;
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} deliveries still waiting after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
