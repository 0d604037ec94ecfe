//! Liveness and back-pressure: a socket whose peer stopped reading is closed within the pong or write deadline
//! (checked on the server's own TCP socket in `/proc/net/tcp`), while a busy client that reads is never dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use protocol::console;
use protocol::widget::{ClientMsg, ServerMsg};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::helpers::{SITE_KEY, TestApp, spawn_app_with};

/// Whether the server still holds an established TCP connection from `client` (Linux `/proc/net/tcp`). Once the
/// server closes its end, the entry leaves ESTABLISHED (FIN-WAIT, or gone) even if the peer never reads again.
fn server_holds(server: SocketAddr, client: SocketAddr) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    let port = |field: &str| field.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && port(fields[1]) == Some(server.port())
            && port(fields[2]) == Some(client.port())
            && fields[3] == "01"
    })
}

/// Polls until the server no longer holds the connection; the time it took, or `None` after `limit`.
async fn released_within(server: SocketAddr, client: SocketAddr, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !server_holds(server, client) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

type Raw = WebSocketStream<TcpStream>;

fn text(msg: &impl serde::Serialize) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(msg).expect("serializes")))
}

/// A visitor socket over a TCP connection whose receive buffer is tiny, past its welcome; and its local address.
async fn raw_visitor(app: &TestApp) -> (Raw, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    let stream = socket.connect(app.addr).await.expect("connects");
    let local = stream.local_addr().expect("local address");
    let mut request = format!("ws://{}/ws/visitor?site={SITE_KEY}", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("origin", HeaderValue::from_str(&app.origin()).expect("header"));
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("upgrades");
    let hello = ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: None,
        last_seq: 0,
        context: Default::default(),
        identity: None,
    };
    ws.send(text(&hello)).await.expect("hello");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => break,
            Some(Ok(_)) => {}
            other => panic!("no welcome: {other:?}"),
        }
    }
    (ws, local)
}

/// Keeps reading (and so answering pings) in the background, like a healthy browser.
fn keep_reading(mut ws: Raw) {
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
}

#[tokio::test]
async fn a_visitor_that_never_reads_is_closed_by_the_pong_deadline_and_a_reading_one_is_not() {
    let app = spawn_app_with(|s| {
        s.limits.ping_secs = 1;
        s.limits.pong_timeout_secs = 1;
    })
    .await;
    let (healthy, healthy_addr) = raw_visitor(&app).await;
    keep_reading(healthy);
    // From here on this client never reads: it answers no ping.
    let (deaf, deaf_addr) = raw_visitor(&app).await;
    assert!(server_holds(app.addr, deaf_addr));
    let took = released_within(app.addr, deaf_addr, Duration::from_secs(10)).await;
    let took = took.expect("a socket that never answers pings is closed");
    eprintln!("the server let go of the non-reading socket after {took:?}");
    // One ping interval plus the pong deadline, with slack for a slow machine.
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(server_holds(app.addr, healthy_addr), "a socket that answers its pings stays");
    drop(deaf);
}

#[tokio::test]
async fn a_visitor_that_stops_reading_while_replies_pour_in_is_closed_by_the_write_deadline() {
    // Pings far apart: only the write deadline can notice this peer.
    let app = spawn_app_with(|s| {
        s.limits.ping_secs = 280;
        s.limits.write_timeout_secs = 1;
    })
    .await;
    let (mut deaf, deaf_addr) = raw_visitor(&app).await;
    deaf.send(text(&ClientMsg::Send { client_id: "c-1".into(), body: "Hi".into() })).await.expect("sends");
    let conversation_id = loop {
        if let Some(s) = app.store.summaries().await.expect("summaries").first() {
            break s.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut agent, _) = app.agent().await;
    let body = "x".repeat(protocol::MAX_BODY_CHARS);
    let start = Instant::now();
    let mut replies = 0;
    while server_holds(app.addr, deaf_addr) {
        assert!(start.elapsed() < Duration::from_secs(60), "still holding the socket after {replies} replies");
        agent
            .send(&console::ClientMsg::Send {
                conversation_id: conversation_id.clone(),
                client_id: format!("a-{replies}"),
                body: body.clone(),
            })
            .await;
        agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Ack { .. }).then_some(())).await;
        replies += 1;
    }
    eprintln!("the server let go of the non-reading socket after {replies} replies, {:?}", start.elapsed());
    // The agent is unaffected.
    agent.send(&console::ClientMsg::Ping).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Pong).then_some(())).await;
    drop(deaf);
}

#[tokio::test]
async fn an_agent_sending_1500_replies_as_fast_as_it_can_gets_1500_acks_and_stays_connected() {
    const REPLIES: usize = 1500;
    let app = spawn_app_with(|_| {}).await;
    let (mut visitor, _) = app.visitor(None, 0).await;
    visitor.send(&ClientMsg::Send { client_id: "c-1".into(), body: "Hi".into() }).await;
    visitor.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
    let conversation_id = app.store.summaries().await.expect("summaries")[0].id.clone();
    // The visitor keeps reading, as a browser does.
    let visitor = visitor.into_inner();
    tokio::spawn(async move {
        let mut visitor = visitor;
        while let Some(Ok(_)) = visitor.next().await {}
    });

    let (mut agent, _) = app.agent().await;
    agent.send(&console::ClientMsg::Open { conversation_id: conversation_id.clone(), since_seq: 0 }).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::History { .. }).then_some(())).await;
    let (mut tx, mut rx) = agent.into_inner().split();
    let reader = tokio::spawn(async move {
        let mut acks = std::collections::HashSet::new();
        while acks.len() < REPLIES {
            match rx.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(console::ServerMsg::Ack { client_id, .. }) = serde_json::from_str(t.as_str()) {
                        acks.insert(client_id);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed after {} acks: {frame:?}", acks.len())),
                Some(Ok(_)) => {}
                other => return Err(format!("ended after {} acks: {other:?}", acks.len())),
            }
        }
        Ok(acks.len())
    });
    for i in 0..REPLIES {
        let reply = console::ClientMsg::Send {
            conversation_id: conversation_id.clone(),
            client_id: format!("a-{i}"),
            body: format!("reply {i}"),
        };
        tx.send(text(&reply)).await.expect("the agent socket stays open");
    }
    let acked = tokio::time::timeout(Duration::from_secs(240), reader).await.expect("acks within 4 minutes");
    assert_eq!(acked.expect("reader"), Ok(REPLIES));
    let conversation = app.store.summaries().await.expect("summaries");
    assert_eq!(conversation[0].last_seq, 1 + REPLIES as i64, "each reply stored once");
}
