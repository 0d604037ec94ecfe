//! Flood control on the sockets: every frame kind is limited per visitor and per client address (buckets survive
//! reconnects), `X-Forwarded-For` counts only from a trusted proxy, sockets per address are capped, repeated
//! `read`/`typing` frames do no repeated work, agents are limited too, and broken frames get clear answers.

use std::time::{Duration, Instant};

use protocol::console;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{ErrorCode, EventKind};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::{TestApp, Ws, hello, refused_status, spawn_app, spawn_app_with, spawn_messenger_app};

fn send(client_id: &str, body: &str) -> ClientMsg {
    ClientMsg::Send { client_id: client_id.into(), body: body.into() }
}

fn token_of(welcome: &ServerMsg) -> String {
    match welcome {
        ServerMsg::Welcome { token, .. } => token.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn is_rate_limited(msg: &ServerMsg) -> bool {
    matches!(msg, ServerMsg::Error { code: ErrorCode::RateLimited, .. })
}

/// Sends a ping and waits for its pong: every frame sent before it has been handled.
async fn settle(ws: &mut Ws) {
    ws.send(&ClientMsg::Ping).await;
    ws.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Pong).then_some(())).await;
}

/// Reads answers until `count` rate-limit errors have arrived (panics after 10 s without the next frame).
async fn expect_rate_limited(ws: &mut Ws, count: usize) {
    let mut seen = 0;
    while seen < count {
        if is_rate_limited(&ws.recv::<ServerMsg>().await) {
            seen += 1;
        }
    }
}

/// Whether the next answer to a ping is a pong (else it must be a rate-limit error).
async fn ping_passes(ws: &mut Ws) -> bool {
    ws.send(&ClientMsg::Ping).await;
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Pong => Some(true),
        other if is_rate_limited(&other) => Some(false),
        _ => None,
    })
    .await
}

async fn conversation_id(app: &TestApp) -> String {
    app.store.summaries().await.expect("summaries")[0].id.clone()
}

#[tokio::test]
async fn every_visitor_frame_kind_is_rate_limited_with_a_clear_error() {
    // Burst 5, refilled at one a minute: the 6th to 10th frame of each kind are refused.
    let app = spawn_app_with(|s| {
        s.limits.visitor_frame_burst = 5;
        s.limits.visitor_frames_per_minute = 1;
    })
    .await;
    let kinds: Vec<(&str, Message)> = vec![
        ("typing", Message::text(r#"{"type":"typing","typing":true}"#)),
        ("read", Message::text(r#"{"type":"read","up_to_seq":1}"#)),
        ("ping", Message::text(r#"{"type":"ping"}"#)),
        ("hello", Message::text(r#"{"type":"hello"}"#)),
        ("bad json", Message::text("{nope")),
        ("unknown type", Message::text(r#"{"type":"format_disk"}"#)),
        ("binary", Message::binary(vec![1u8, 2, 3])),
    ];
    for (kind, frame) in kinds {
        let (mut visitor, _) = app.visitor(None, 0).await;
        for _ in 0..10 {
            visitor.send_message(frame.clone()).await;
        }
        tokio::time::timeout(Duration::from_secs(10), expect_rate_limited(&mut visitor, 5))
            .await
            .unwrap_or_else(|_| panic!("{kind}: expected 5 rate-limit errors"));
    }
}

#[tokio::test]
async fn messenger_link_requests_are_limited_and_refused_ones_write_no_row() {
    let messenger = spawn_messenger_app(|_, s| s.limits.visitor_links_per_minute = 3).await;
    let app = &messenger.app;
    let (mut visitor, _) = app.visitor(None, 0).await;
    for _ in 0..10 {
        visitor.send(&ClientMsg::MessengerLink).await;
    }
    let (mut links, mut limited) = (0, 0);
    while links + limited < 10 {
        match visitor.recv::<ServerMsg>().await {
            ServerMsg::MessengerLink { .. } => links += 1,
            other if is_rate_limited(&other) => limited += 1,
            _ => {}
        }
    }
    assert_eq!((links, limited), (3, 7));
    assert_eq!(app.count_rows("messenger_links").await, 3);
}

#[tokio::test]
async fn a_flood_of_reads_far_beyond_the_log_writes_one_read_event() {
    let app = spawn_app().await;
    let (mut visitor, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    visitor.send(&send("c-1", "Hi")).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    let conversation_id = conversation_id(&app).await;
    let (mut agent, _) = app.agent().await;
    agent
        .send(&console::ClientMsg::Send {
            conversation_id: conversation_id.clone(),
            client_id: "a-1".into(),
            body: "Hello!".into(),
        })
        .await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Ack { .. }).then_some(())).await;
    let before = app.count_rows("events").await;
    assert_eq!(before, 2);

    // One socket flooding, then several fresh sockets (no per-socket memory) each asking once more.
    for _ in 0..20 {
        visitor.send(&ClientMsg::Read { up_to_seq: u64::MAX }).await;
    }
    settle(&mut visitor).await;
    for _ in 0..3 {
        let (mut again, _) = app.visitor(Some(&token), 0).await;
        again.send(&ClientMsg::Read { up_to_seq: u64::MAX }).await;
        settle(&mut again).await;
    }
    assert_eq!(app.count_rows("events").await, 3, "exactly one read receipt");
    let events = app.store.events_after(&conversation_id, 0).await.expect("events");
    assert!(matches!(events[2].kind, EventKind::Read { up_to_seq: 2, .. }), "{:?}", events[2]);
}

#[tokio::test]
async fn a_typing_flood_reaches_agents_as_changes_only() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", "Hi")).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    let (mut agent, _) = app.agent().await;
    for typing in [true, false] {
        for _ in 0..20 {
            visitor.send(&ClientMsg::Typing { typing }).await;
        }
    }
    visitor.send(&send("c-2", "done")).await;
    let mut typing = Vec::new();
    agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Typing { typing: t, .. } => {
                typing.push(t);
                None
            }
            console::ServerMsg::Summary { conversation } if conversation.last_message.as_deref() == Some("done") => {
                Some(())
            }
            _ => None,
        })
        .await;
    // "typing" then "stopped" (a slow agent socket may only see the latest of the two).
    assert!(!typing.is_empty() && typing.len() <= 2, "{typing:?}");
    assert_eq!(typing.last(), Some(&false));
}

#[tokio::test]
async fn the_message_bucket_survives_a_reconnect() {
    let app = spawn_app_with(|s| {
        s.limits.visitor_message_burst = 3;
        s.limits.visitor_messages_per_minute = 1;
    })
    .await;
    let (mut visitor, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    for i in 0..3 {
        visitor.send(&send(&format!("c-{i}"), "hi")).await;
        visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    }
    visitor.cut();
    let (mut again, _) = app.visitor(Some(&token), 0).await;
    again.send(&send("c-3", "one more")).await;
    let refused = again
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Ack { .. } => Some(None),
            ServerMsg::Error { code: ErrorCode::RateLimited, client_id, .. } => Some(client_id),
            _ => None,
        })
        .await;
    // Refused (not dropped): the widget re-sends it later under the same id.
    assert_eq!(refused.as_deref(), Some("c-3"));
    let conversation_id = conversation_id(&app).await;
    assert!(app.store.message_by_client_id(&conversation_id, "c-3").await.expect("query").is_none());
}

/// Limits small enough to exhaust from one address in a test: 10 frames, then one a minute.
fn small_address_budget(s: &mut parley::config::Settings) {
    s.limits.ip_frame_burst = 10;
    s.limits.ip_frames_per_minute = 1;
}

/// Spends most of an address's budget from one visitor: hello (1) + 8 pings = 9 of 10.
async fn spend_address_budget(app: &TestApp, headers: &[(&str, &str)]) -> Ws {
    let mut ws = app.visitor_socket_with(headers).await.expect("connects");
    assert!(matches!(hello(&mut ws, None, 0).await, ServerMsg::Welcome { .. }));
    for _ in 0..8 {
        assert!(ping_passes(&mut ws).await);
    }
    ws
}

#[tokio::test]
async fn an_address_budget_is_shared_by_all_its_visitors() {
    let app = spawn_app_with(small_address_budget).await;
    let _first = spend_address_budget(&app, &[]).await;
    // Another visitor (its own fresh visitor bucket) from the same address: its hello takes the last frame.
    let mut second = app.visitor_socket_with(&[]).await.expect("connects");
    assert!(matches!(hello(&mut second, None, 0).await, ServerMsg::Welcome { .. }));
    assert!(!ping_passes(&mut second).await, "the address is out of frames");
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    // Behind a trusted proxy, two clients are two addresses.
    let app = spawn_app_with(|s| {
        small_address_budget(s);
        s.http.trusted_proxies = "127.0.0.1".parse().expect("proxies");
    })
    .await;
    let _first = spend_address_budget(&app, &[("x-forwarded-for", "203.0.113.1")]).await;
    let mut second = app.visitor_socket_with(&[("x-forwarded-for", "203.0.113.2")]).await.expect("connects");
    assert!(matches!(hello(&mut second, None, 0).await, ServerMsg::Welcome { .. }));
    assert!(ping_passes(&mut second).await, "another client behind the proxy has its own budget");
    // A forged hop left of the one the proxy appended changes nothing.
    let mut forged =
        app.visitor_socket_with(&[("x-forwarded-for", "198.51.100.7, 203.0.113.1")]).await.expect("connects");
    assert!(matches!(hello(&mut forged, None, 0).await, ServerMsg::Welcome { .. }), "its hello takes the last frame");
    assert!(!ping_passes(&mut forged).await, "a forged hop does not buy a new budget");

    // Without trusted proxies the header is the client's own claim: ignored.
    let app = spawn_app_with(small_address_budget).await;
    let _first = spend_address_budget(&app, &[("x-forwarded-for", "203.0.113.1")]).await;
    let mut second = app.visitor_socket_with(&[("x-forwarded-for", "203.0.113.2")]).await.expect("connects");
    assert!(matches!(hello(&mut second, None, 0).await, ServerMsg::Welcome { .. }));
    assert!(!ping_passes(&mut second).await, "a claimed address does not buy a new budget");
}

#[tokio::test]
async fn sockets_per_address_are_capped_and_freed_on_close() {
    let app = spawn_app_with(|s| {
        s.limits.max_sockets_per_ip = 2;
        s.http.trusted_proxies = "127.0.0.0/8".parse().expect("proxies");
    })
    .await;
    let first = app.visitor_socket_with(&[]).await.expect("first");
    let _second = app.visitor_socket_with(&[]).await.expect("second");
    let err = app.visitor_socket_with(&[]).await.err().expect("third refused");
    assert_eq!(refused_status(err), 429);
    // Another client behind the trusted proxy has its own sockets.
    assert!(app.visitor_socket_with(&[("x-forwarded-for", "203.0.113.9")]).await.is_ok());
    // Closing one gives its slot back (once the server has noticed).
    first.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match app.visitor_socket_with(&[]).await {
            Ok(_) => break,
            Err(err) => {
                assert_eq!(refused_status(err), 429);
                assert!(Instant::now() < deadline, "the closed socket's slot was never given back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn hellos_per_address_are_limited_and_a_refused_one_writes_nothing() {
    let app = spawn_app_with(|s| s.limits.ip_hellos_per_minute = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (ws, welcome) = app.visitor(None, 0).await;
        assert!(matches!(welcome, ServerMsg::Welcome { .. }));
        open.push(ws);
    }
    let contacts = app.count_rows("contacts").await;
    let mut fourth = app.visitor_socket_with(&[]).await.expect("connects");
    assert!(is_rate_limited(&hello(&mut fourth, None, 0).await));
    assert_eq!(fourth.closed().await, Some(1013));
    assert_eq!(app.count_rows("contacts").await, contacts);
}

#[tokio::test]
async fn agent_frames_are_limited_per_agent_across_sockets() {
    let app = spawn_app_with(|s| {
        s.limits.agent_frame_burst = 5;
        s.limits.agent_frames_per_minute = 1;
    })
    .await;
    let (mut agent, _) = app.agent().await;
    for _ in 0..5 {
        agent.send(&console::ClientMsg::Ping).await;
        agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Pong).then_some(())).await;
    }
    agent
        .send(&console::ClientMsg::Send { conversation_id: "x".into(), client_id: "a-1".into(), body: "hi".into() })
        .await;
    let refused = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Error { code, client_id, .. } => Some((code, client_id)),
            _ => None,
        })
        .await;
    assert_eq!(refused, (ErrorCode::RateLimited, Some("a-1".to_string())));
    // A new socket (even with a new session) does not refill the agent's bucket.
    agent.cut();
    let (mut again, _) = app.agent().await;
    again.send(&console::ClientMsg::Ping).await;
    let code = again
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Pong => Some(None),
            console::ServerMsg::Error { code, .. } => Some(Some(code)),
            _ => None,
        })
        .await;
    assert_eq!(code, Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn an_oversized_frame_is_closed_with_1009_and_other_broken_frames_are_answered_or_closed_with_their_code() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 4096).await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    // Binary and malformed frames get a clear error and the socket lives on.
    visitor.send_message(Message::binary(vec![0u8; 16])).await;
    assert!(matches!(visitor.recv::<ServerMsg>().await, ServerMsg::Error { code: ErrorCode::BadFrame, .. }));
    visitor.send_raw(r#"{"type":"send","client_id":"c-1"}"#).await;
    assert!(matches!(visitor.recv::<ServerMsg>().await, ServerMsg::Error { code: ErrorCode::BadFrame, .. }));
    settle(&mut visitor).await;
    // A frame over the limit ends the socket with "message too big", not a bare TCP reset.
    visitor.send_raw(&format!(r#"{{"type":"send","client_id":"c-2","body":"{}"}}"#, "x".repeat(5000))).await;
    assert_eq!(visitor.closed().await, Some(1009));

    // A text frame that is not UTF-8 breaks the protocol: 1007, with the reason.
    let (mut visitor, _) = app.visitor(None, 0).await;
    let not_utf8 = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    visitor.send_message(Message::Frame(not_utf8)).await;
    assert_eq!(visitor.closed().await, Some(1007));

    // The same before hello, and on the agent socket.
    let mut fresh = app.visitor_socket_with(&[]).await.expect("connects");
    fresh.send_raw(&"x".repeat(5000)).await;
    assert_eq!(fresh.closed().await, Some(1009));
    let (mut agent, _) = app.agent().await;
    agent.send_raw(&"x".repeat(5000)).await;
    assert_eq!(agent.closed().await, Some(1009));
}
