//! Tenancy: two workspaces, each with a site, a visitor and an agent. Each agent lists, opens, answers, reads,
//! resolves and fetches the files of only its own workspace's conversations — over its socket, the console's
//! server functions and the attachment route (another workspace's conversation answers as an unknown one: 404 /
//! `not_found`) — and live traffic of the other workspace never reaches its socket. A visitor of one site cannot
//! reach another site's conversation.

use std::net::{IpAddr, Ipv4Addr};

use protocol::console::{ClientMsg, ServerMsg};
use protocol::{ConversationStatus, ErrorCode, EventKind};

use crate::helpers::{OTHER_SITE, TestApp, Ws, send_acked, spawn_app};
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct TwoWorkspaces {
    app: TestApp,
    /// Conversation of the default workspace's site (agent 1's) and of Acme's site (agent 2's).
    conv1: String,
    conv2: String,
    cookie1: String,
    cookie2: String,
    visitor1: Ws,
    visitor2: Ws,
    token1: String,
}

/// The test app's default workspace (site, agent) plus an "acme" workspace with its own site and agent; one visitor
/// of each site has written once.
async fn two_workspaces() -> TwoWorkspaces {
    let app = spawn_app().await;
    let (_, cookie2) = app.second_workspace().await;
    let cookie1 = app.agent_cookie().await;
    let (mut visitor1, welcome) = app.visitor(None, 0).await;
    let token1 = match welcome {
        protocol::widget::ServerMsg::Welcome { token, .. } => token,
        other => panic!("expected a welcome, got {other:?}"),
    };
    let (mut visitor2, _) = app.visitor_on(OTHER_SITE, None).await;
    send_acked(&mut visitor1, "m1", "hello one").await;
    send_acked(&mut visitor2, "m2", "hello two").await;
    let all = app.store.summaries().await.expect("summaries");
    let of = |site: &str| all.iter().find(|s| s.site_key == site).map(|s| s.id.clone()).expect("conversation");
    let (conv1, conv2) = (of(crate::helpers::SITE_KEY), of(OTHER_SITE));
    TwoWorkspaces { app, conv1, conv2, cookie1, cookie2, visitor1, visitor2, token1 }
}

async fn agent_socket(app: &TestApp, cookie: &str) -> (Ws, Vec<String>) {
    let mut ws = app.agent_socket(Some(&app.origin()), Some(cookie)).await.expect("agent connects");
    let inbox = ws
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Inbox { conversations, .. } => Some(conversations.into_iter().map(|c| c.id).collect()),
            _ => None,
        })
        .await;
    (ws, inbox)
}

/// The next `not_found` error on the socket (other frames are skipped); its `client_id`.
async fn not_found(ws: &mut Ws) -> Option<String> {
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Error { code: ErrorCode::NotFound, client_id, .. } => Some(client_id),
        ServerMsg::Error { code, message, .. } => panic!("expected not_found, got {code:?}: {message}"),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn an_agent_socket_lists_opens_answers_reads_and_resolves_only_its_workspace() {
    let t = two_workspaces().await;
    let (mut agent1, inbox1) = agent_socket(&t.app, &t.cookie1).await;
    let (mut agent2, inbox2) = agent_socket(&t.app, &t.cookie2).await;
    assert_eq!(inbox1, vec![t.conv1.clone()]);
    assert_eq!(inbox2, vec![t.conv2.clone()]);

    for (ws, other) in [(&mut agent1, &t.conv2), (&mut agent2, &t.conv1)] {
        ws.send(&ClientMsg::Open { conversation_id: other.clone(), since_seq: 0 }).await;
        assert_eq!(not_found(ws).await, None, "open");
        ws.send(&ClientMsg::Send { conversation_id: other.clone(), client_id: "x1".into(), body: "leak".into() }).await;
        assert_eq!(not_found(ws).await.as_deref(), Some("x1"), "reply");
        ws.send(&ClientMsg::Read { conversation_id: other.clone(), up_to_seq: 99 }).await;
        ws.send(&ClientMsg::Typing { conversation_id: other.clone(), typing: true }).await;
        ws.send(&ClientMsg::SetStatus { conversation_id: other.clone(), status: ConversationStatus::Resolved }).await;
        assert_eq!(not_found(ws).await, None, "status");
    }
    for conv in [&t.conv1, &t.conv2] {
        let stored = t.app.store.conversation(conv).await.expect("read").expect("exists");
        assert_eq!(stored.status, ConversationStatus::Open, "not resolved by the other workspace's agent");
        assert_eq!(stored.agent_read_seq, 0, "not marked read by the other workspace's agent");
        let events = t.app.store.events_after(conv, 0).await.expect("log");
        assert!(
            events.iter().all(|e| !matches!(&e.kind, EventKind::Message { message } if message.body == "leak")),
            "no reply stored: {events:?}"
        );
    }

    // Each agent still works on its own conversation.
    agent2.send(&ClientMsg::Open { conversation_id: t.conv2.clone(), since_seq: 0 }).await;
    agent2
        .recv_until(|m: ServerMsg| {
            matches!(m, ServerMsg::History { conversation_id, .. } if conversation_id == t.conv2).then_some(())
        })
        .await;
}

#[tokio::test]
async fn live_traffic_of_another_workspace_never_reaches_an_agent_socket() {
    let mut t = two_workspaces().await;
    let (mut agent1, _) = agent_socket(&t.app, &t.cookie1).await;
    let (mut agent2, _) = agent_socket(&t.app, &t.cookie2).await;
    // Workspace 2's visitor types and writes; its agent sees both (so both were published)...
    t.visitor2.send(&protocol::widget::ClientMsg::Typing { typing: true }).await;
    agent2
        .recv_until(|m: ServerMsg| {
            matches!(m, ServerMsg::Typing { conversation_id, typing: true } if conversation_id == t.conv2).then_some(())
        })
        .await;
    send_acked(&mut t.visitor2, "m3", "second two").await;
    agent2
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Summary { conversation } if conversation.id == t.conv2 => {
                (conversation.last_message.as_deref() == Some("second two")).then_some(())
            }
            _ => None,
        })
        .await;
    // ...then workspace 1's visitor writes: agent 1's first conversation frame is that one, nothing of conv2 before.
    send_acked(&mut t.visitor1, "m4", "second one").await;
    let conv2 = t.conv2.clone();
    agent1
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Summary { conversation } if conversation.id == conv2 => panic!("another workspace's inbox row"),
            ServerMsg::Typing { conversation_id, .. } if conversation_id == conv2 => {
                panic!("another workspace's typing")
            }
            ServerMsg::Summary { conversation } if conversation.id == t.conv1 => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn console_server_functions_and_files_are_scoped_to_the_agents_workspace() {
    let t = two_workspaces().await;
    let origin = t.app.origin();
    let post = |path: &'static str, form: Vec<(&'static str, String)>, cookie: String| {
        let app = &t.app;
        let origin = origin.clone();
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = app.console_post(LOCAL, path, &form, &[("origin", &origin), ("cookie", &cookie)]).await;
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let (status, inbox1) = post("/api/console/inbox", vec![], t.cookie1.clone()).await;
    assert_eq!(status, 200);
    assert!(inbox1.contains(&t.conv1) && !inbox1.contains(&t.conv2), "{inbox1}");
    let (_, inbox2) = post("/api/console/inbox", vec![], t.cookie2.clone()).await;
    assert!(inbox2.contains(&t.conv2) && !inbox2.contains(&t.conv1), "{inbox2}");
    for (conv, mine, theirs) in [(&t.conv1, &t.cookie1, &t.cookie2), (&t.conv2, &t.cookie2, &t.cookie1)] {
        let (status, body) = post("/api/console/conversation", vec![("id", conv.clone())], mine.clone()).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = post("/api/console/conversation", vec![("id", conv.clone())], theirs.clone()).await;
        assert_eq!(status, 404, "another workspace's conversation: {body}");
        assert!(!body.contains("hello"), "{body}");
    }

    let file = t.app.store.insert_attachment(Some(&t.conv2), "image/png", None, b"\x89PNG").await.expect("file");
    let get = |cookie: Option<String>| {
        let request = t.app.http.get(t.app.url(&format!("/attachments/{file}")));
        let request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(get(Some(t.cookie2.clone())).await, 200, "its workspace's agent");
    assert_eq!(get(Some(t.cookie1.clone())).await, 404, "another workspace's agent");
    // Without a console session the id stays the capability it was (the chat frame shows files to the visitor).
    assert_eq!(get(None).await, 200);
}

#[tokio::test]
async fn a_visitor_of_one_site_cannot_reach_another_sites_conversation() {
    let t = two_workspaces().await;
    let (mut ws, welcome) = t.app.visitor_on(OTHER_SITE, Some(&t.token1)).await;
    match welcome {
        protocol::widget::ServerMsg::Welcome { token, events, .. } => {
            assert!(events.is_empty(), "site 1's history shown on site 2: {events:?}");
            assert_ne!(token, t.token1, "site 1's token does not name a visitor of site 2");
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
    send_acked(&mut ws, "m9", "from site 2").await;
    let events = t.app.store.events_after(&t.conv1, 0).await.expect("log");
    assert!(
        events.iter().all(|e| !matches!(&e.kind, EventKind::Message { message } if message.body == "from site 2")),
        "{events:?}"
    );
}
