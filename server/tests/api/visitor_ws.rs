//! The visitor socket: hello/welcome, send/ack, fan-out, resume, idempotency, origin checks.

use protocol::console;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{Author, ErrorCode, EventKind, Party};

use crate::helpers::{HOST_ORIGIN, refused_status, spawn_app};

fn send(client_id: &str, body: &str) -> ClientMsg {
    ClientMsg::Send { client_id: client_id.into(), body: body.into() }
}

fn token_of(welcome: &ServerMsg) -> String {
    match welcome {
        ServerMsg::Welcome { token, .. } => token.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_visitor_gets_a_token_and_an_empty_history() {
    let app = spawn_app().await;
    let (_ws, welcome) = app.visitor(None, 0).await;
    match welcome {
        ServerMsg::Welcome { token, events, last_seq, reset, .. } => {
            assert_eq!(token.len(), 43);
            assert!(events.is_empty());
            assert_eq!(last_seq, 0);
            assert!(!reset);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sent_message_is_acked_after_it_is_stored_and_reaches_the_agent_live() {
    let app = spawn_app().await;
    let (mut agent, _) = app.agent().await;
    let (mut visitor, _) = app.visitor(None, 0).await;

    visitor.send(&send("c-1", "Hello, is anyone there?")).await;
    let (message_id, seq) = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Ack { client_id, message_id, seq } if client_id == "c-1" => Some((message_id, seq)),
            _ => None,
        })
        .await;
    assert_eq!(seq, 1);

    // Acked means on disk: the store has it now.
    let summaries = app.store.summaries().await.expect("summaries");
    assert_eq!(summaries.len(), 1);
    let events = app.store.events_after(&summaries[0].id, 0).await.expect("events");
    assert!(matches!(&events[0].kind, EventKind::Message { message } if message.id == message_id));

    // The agent's inbox learns about the conversation live, with one unread message and the visitor's details.
    let summary = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Summary { conversation } => Some(conversation),
            _ => None,
        })
        .await;
    assert_eq!(summary.unread, 1);
    assert_eq!(summary.last_message.as_deref(), Some("Hello, is anyone there?"));
    assert_eq!(summary.visitor.page_url.as_deref(), Some(&*format!("{HOST_ORIGIN}/pricing")));
    assert_eq!(summary.visitor.browser.as_deref(), Some("Chrome 156 on Linux"));
    assert_eq!(summary.visitor.timezone.as_deref(), Some("Europe/Berlin"));
    assert!(summary.visitor.online);

    // Opening the conversation replays it.
    agent.send(&console::ClientMsg::Open { conversation_id: summary.id.clone(), since_seq: 0 }).await;
    let events = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::History { events, .. } => Some(events),
            _ => None,
        })
        .await;
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].kind, EventKind::Message { message } if message.body == "Hello, is anyone there?"));
}

#[tokio::test]
async fn agent_replies_reach_the_visitor_and_read_receipts_flow_both_ways() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", "Hi")).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Event { .. }).then_some(())).await;
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();

    let (mut agent, _) = app.agent().await;
    agent.send(&console::ClientMsg::Open { conversation_id: conversation_id.clone(), since_seq: 0 }).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::History { .. }).then_some(())).await;
    agent.send(&console::ClientMsg::Read { conversation_id: conversation_id.clone(), up_to_seq: 1 }).await;
    agent
        .send(&console::ClientMsg::Send {
            conversation_id: conversation_id.clone(),
            client_id: "a-1".into(),
            body: "Hello! How can I help?".into(),
        })
        .await;

    // The visitor first sees the agent's read receipt, then the reply, with the agent's name.
    let read = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Event { event } => Some(event),
            _ => None,
        })
        .await;
    assert!(matches!(read.kind, EventKind::Read { by: Party::Agent, up_to_seq: 1 }), "{read:?}");
    let reply = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Event { event } => Some(event),
            _ => None,
        })
        .await;
    match reply.kind {
        EventKind::Message { message } => {
            assert_eq!(message.body, "Hello! How can I help?");
            assert_eq!(message.author, Author::Agent { name: crate::helpers::AGENT_NAME.into() });
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    assert_eq!(reply.seq, 3);

    visitor.send(&ClientMsg::Read { up_to_seq: 3 }).await;
    let seen = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Event { event, .. }
                if matches!(event.kind, EventKind::Read { by: Party::Visitor, .. }) =>
            {
                Some(event)
            }
            _ => None,
        })
        .await;
    assert!(matches!(seen.kind, EventKind::Read { up_to_seq: 3, .. }));
}

#[tokio::test]
async fn typing_is_relayed_both_ways() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", "Hi")).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    let (mut agent, _) = app.agent().await;

    visitor.send(&ClientMsg::Typing { typing: true }).await;
    agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Typing { conversation_id: c, typing: true } if c == conversation_id => Some(()),
            _ => None,
        })
        .await;
    agent.send(&console::ClientMsg::Typing { conversation_id: conversation_id.clone(), typing: true }).await;
    let name = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Typing { typing: true, name } => Some(name),
            _ => None,
        })
        .await;
    assert_eq!(name.as_deref(), Some(crate::helpers::AGENT_NAME));
}

#[tokio::test]
async fn a_dropped_visitor_resumes_from_its_last_seq_with_nothing_lost_or_doubled() {
    let app = spawn_app().await;
    let (mut visitor, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    for (id, body) in [("c-1", "one"), ("c-2", "two")] {
        visitor.send(&send(id, body)).await;
        visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    }
    // Make sure the socket applied both events before the cut.
    let mut last_seen = 0;
    while last_seen < 2 {
        last_seen = visitor
            .recv_until(|m: ServerMsg| match m {
                ServerMsg::Event { event } => Some(event.seq),
                _ => None,
            })
            .await;
    }
    visitor.cut();

    // While the visitor is away, the agent answers twice.
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    let (mut agent, _) = app.agent().await;
    for (id, body) in [("a-1", "three"), ("a-2", "four")] {
        agent
            .send(&console::ClientMsg::Send {
                conversation_id: conversation_id.clone(),
                client_id: id.into(),
                body: body.into(),
            })
            .await;
        agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Ack { .. }).then_some(())).await;
    }

    // The visitor comes back with its token and last seq 2: it gets exactly 3 and 4.
    let (_visitor, welcome) = app.visitor(Some(&token), 2).await;
    match welcome {
        ServerMsg::Welcome { token: again, events, last_seq, reset, .. } => {
            assert_eq!(again, token);
            assert!(!reset);
            assert_eq!(last_seq, 4);
            let bodies: Vec<(u64, String)> = events
                .into_iter()
                .map(|e| match e.kind {
                    EventKind::Message { message } => (e.seq, message.body),
                    other => panic!("unexpected event {other:?}"),
                })
                .collect();
            assert_eq!(bodies, vec![(3, "three".to_string()), (4, "four".to_string())]);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn re_sending_an_unacked_message_with_the_same_client_id_stores_it_once() {
    let app = spawn_app().await;
    let (mut visitor, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    visitor.send(&send("c-1", "only once")).await;
    let first = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Ack { message_id, seq, .. } => Some((message_id, seq)),
            _ => None,
        })
        .await;
    visitor.cut();

    // The ack was lost with the socket: the client re-sends on a new connection with the same client id.
    let (mut again, _) = app.visitor(Some(&token), 0).await;
    again.send(&send("c-1", "only once")).await;
    let second = again
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Ack { message_id, seq, .. } => Some((message_id, seq)),
            _ => None,
        })
        .await;
    assert_eq!(first, second);

    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    let events = app.store.events_after(&conversation_id, 0).await.expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn invalid_messages_are_refused_with_a_clear_error_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", "   ")).await;
    let (code, client_id) = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Error { code, client_id, .. } => Some((code, client_id)),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::InvalidInput);
    assert_eq!(client_id.as_deref(), Some("c-1"));
    visitor.send(&send("bad id!", "hello")).await;
    let code = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Error { code, .. } => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::InvalidInput);
    visitor.send_raw("{not json").await;
    let code = visitor
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Error { code, .. } => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(app.store.summaries().await.expect("summaries").is_empty());
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403() {
    let app = spawn_app().await;
    let err = app.visitor_socket(Some("https://evil.example")).await.err().expect("refused");
    assert_eq!(refused_status(err), 403);
    let err = app.visitor_socket(None).await.err().expect("refused");
    assert_eq!(refused_status(err), 403);
    // The site's own allowed origin may connect directly.
    assert!(app.visitor_socket(Some(HOST_ORIGIN)).await.is_ok());
}

#[tokio::test]
async fn a_socket_that_does_not_say_hello_is_closed_with_a_policy_error() {
    let app = spawn_app().await;
    let mut ws = app.visitor_socket(Some(&app.origin())).await.expect("connects");
    ws.send(&ClientMsg::Ping).await;
    assert_eq!(ws.closed().await, Some(1008));
}

#[tokio::test]
async fn a_visitor_message_reopens_a_resolved_conversation() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&send("c-1", "Hi")).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    let (mut agent, _) = app.agent().await;
    agent
        .send(&console::ClientMsg::SetStatus {
            conversation_id: conversation_id.clone(),
            status: protocol::ConversationStatus::Resolved,
        })
        .await;
    let status = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Summary { conversation } => Some(conversation.status),
            _ => None,
        })
        .await;
    assert_eq!(status, protocol::ConversationStatus::Resolved);

    visitor.send(&send("c-2", "One more thing")).await;
    let status = agent
        .recv_until(|m: console::ServerMsg| match m {
            console::ServerMsg::Summary { conversation } if conversation.last_seq >= 4 => Some(conversation.status),
            _ => None,
        })
        .await;
    assert_eq!(status, protocol::ConversationStatus::Open);
}

#[tokio::test]
async fn a_visitor_flooding_messages_is_slowed_down_and_nothing_is_lost() {
    let app = spawn_app().await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    for i in 0..25 {
        visitor.send(&send(&format!("c-{i}"), &format!("message {i}"))).await;
    }
    let mut acked = 0;
    let mut limited = Vec::new();
    while acked + limited.len() < 25 {
        match visitor.recv::<ServerMsg>().await {
            ServerMsg::Ack { .. } => acked += 1,
            ServerMsg::Error { code: ErrorCode::RateLimited, client_id: Some(id), .. } => limited.push(id),
            _ => {}
        }
    }
    // The burst of 20 goes through (a slow machine may refill a token or two meanwhile); the rest is refused.
    assert!(acked >= 20, "{acked}");
    assert!(!limited.is_empty());
    // Refused sends were not stored; the client re-sends them later with the same ids.
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    for id in &limited {
        assert!(app.store.message_by_client_id(&conversation_id, id).await.expect("query").is_none());
    }
}

#[tokio::test]
async fn a_returning_visitor_whose_whereabouts_did_not_change_resumes_without_a_write() {
    let app = spawn_app().await;
    let (mut ws, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    let seq = crate::helpers::send_acked(&mut ws, "c-1", "hello").await;
    drop(ws);
    // Another writer holds SQLite's write lock: a hello that needed a write would wait for it.
    let blocker = app.hold_write_lock().await;
    let resumed = tokio::time::timeout(std::time::Duration::from_secs(3), app.visitor(Some(&token), seq)).await;
    blocker.release().await;
    match resumed.expect("the welcome does not wait for the write lock") {
        (_, ServerMsg::Welcome { last_seq, reset: false, .. }) => assert_eq!(last_seq, seq),
        (_, other) => panic!("expected a welcome, got {other:?}"),
    }
}

/// Upgrades reuse a site's row for at most `SITE_TTL` (a storm of one site's visitors reads it once): an origin
/// removed from the site (here through the store, as the CLI does from another process) is refused within it.
#[tokio::test]
async fn an_origin_removed_from_the_site_is_refused_within_the_site_cache_ttl() {
    use parley::ws::site_cache::SITE_TTL;
    let app = spawn_app().await;
    assert!(app.visitor_socket(Some(HOST_ORIGIN)).await.is_ok(), "allowed, and the row is now cached");
    let site = app.store.site_by_key(crate::helpers::SITE_KEY).await.expect("query").expect("site");
    app.store.set_allowed_origins(&site.id, &[]).await.expect("origins");
    let removed_at = std::time::Instant::now();
    let deadline = removed_at + SITE_TTL + std::time::Duration::from_secs(2);
    loop {
        match app.visitor_socket(Some(HOST_ORIGIN)).await {
            Err(err) => {
                assert_eq!(refused_status(err), 403);
                break;
            }
            Ok(_) => assert!(std::time::Instant::now() < deadline, "still accepted {:?} after", removed_at.elapsed()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The server's own origin (the chat frame) is still accepted.
    assert!(app.visitor_socket(Some(&app.origin())).await.is_ok());
}

/// A visitor cut while its last message waits to be committed (every socket of a reconnect storm) gives its
/// connection back at once, not when the commit is done: in a storm the cut sockets' descriptors are what the
/// reconnecting ones need. The message is still stored, once.
#[tokio::test]
async fn a_socket_cut_while_its_message_commits_is_let_go_at_once_and_the_message_is_kept() {
    let app = spawn_app().await;
    let (mut ws, welcome) = app.visitor(None, 0).await;
    let token = token_of(&welcome);
    crate::helpers::send_acked(&mut ws, "c-1", "before").await;
    // The commit cannot happen while another writer holds SQLite's write lock.
    let blocker = app.hold_write_lock().await;
    ws.send(&send("c-2", "sent as the network dies")).await;
    let seen = ws.half_close(std::time::Duration::from_secs(3)).await;
    let acked = |m: &tokio_tungstenite::tungstenite::Message| {
        let text = m.to_text().unwrap_or_default();
        matches!(serde_json::from_str(text), Ok(ServerMsg::Ack { client_id, .. }) if client_id == "c-2")
    };
    assert!(!seen.iter().any(acked), "no ack can have come while the lock is held: {seen:?}");
    blocker.release().await;
    // The message is stored once the lock is free; a resume sees it exactly once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, welcome) = app.visitor(Some(&token), 0).await;
        let ServerMsg::Welcome { events, .. } = welcome else { panic!("expected a welcome, got {welcome:?}") };
        let sent = |id: &str| {
            events
                .iter()
                .filter(|e| matches!(&e.kind, EventKind::Message { message } if message.client_id == id))
                .count()
        };
        assert!(sent("c-2") <= 1, "stored twice");
        if sent("c-2") == 1 {
            assert_eq!(sent("c-1"), 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the message was not stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
