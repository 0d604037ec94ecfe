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
        // The agent pipelines its replies (a batch in flight at once), so the kernel's buffers toward the deaf
        // peer (megabytes on loopback) fill in a few commits, not one fsync per reply.
        s.limits.agent_frame_burst = 100_000;
        s.limits.agent_frames_per_minute = 1_000_000;
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
    const BATCH: usize = 25;
    let start = Instant::now();
    let mut replies = 0;
    while server_holds(app.addr, deaf_addr) {
        assert!(start.elapsed() < Duration::from_secs(60), "still holding the socket after {replies} replies");
        for n in replies..replies + BATCH {
            let reply = console::ClientMsg::Send {
                conversation_id: conversation_id.clone(),
                client_id: format!("a-{n}"),
                body: body.clone(),
            };
            agent.send(&reply).await;
        }
        let mut acked = 0;
        agent
            .recv_until(|m: console::ServerMsg| {
                acked += usize::from(matches!(m, console::ServerMsg::Ack { .. }));
                (acked == BATCH).then_some(())
            })
            .await;
        replies += BATCH;
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

/// Flood limits high enough that only liveness can end a pipelining visitor's socket.
pub fn unthrottled(s: &mut parley::config::Settings) {
    s.limits.visitor_message_burst = 100_000;
    s.limits.visitor_messages_per_minute = 1_000_000;
    s.limits.ip_frame_burst = 100_000;
    s.limits.ip_frames_per_minute = 1_000_000;
}

#[tokio::test]
async fn a_visitor_pipelining_2000_sends_without_reading_gets_every_ack_and_is_not_dropped() {
    const SENDS: usize = 2000;
    let app = spawn_app_with(|s| {
        unthrottled(s);
        // A write stalled this long means the peer really stopped reading; a pipelining peer reads at the end.
        s.limits.write_timeout_secs = 2;
    })
    .await;
    // A small receive buffer, as on a busy phone: the server's acks back up into its own send queue at once.
    let (mut ws, _) = raw_visitor(&app).await;
    // Every send first, reading nothing: the server must keep reading (and acking) meanwhile.
    for i in 0..SENDS {
        let send = text(&ClientMsg::Send { client_id: format!("p-{i}"), body: format!("pipelined {i}") });
        tokio::time::timeout(Duration::from_secs(30), ws.send(send))
            .await
            .unwrap_or_else(|_| panic!("the server stopped reading after {i} pipelined sends"))
            .expect("the socket stays open while sending");
    }
    let mut acks = std::collections::HashSet::new();
    let read_all = async {
        while acks.len() < SENDS {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(ServerMsg::Ack { client_id, .. }) => {
                        acks.insert(client_id);
                    }
                    Ok(ServerMsg::Error { message, .. }) => panic!("refused: {message}"),
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => panic!("dropped after {} acks: {frame:?}", acks.len()),
                Some(Ok(_)) => {}
                other => panic!("ended after {} acks: {other:?}", acks.len()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read_all).await.expect("every ack within 2 minutes");
    assert_eq!(acks.len(), SENDS);
    assert_eq!(app.store.summaries().await.expect("summaries")[0].last_seq, SENDS as i64, "each send stored once");
    // Still connected: a ping is answered.
    ws.send(text(&ClientMsg::Ping)).await.expect("still open");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer") {
            Some(Ok(Message::Text(t))) if t.contains("\"pong\"") => break,
            Some(Ok(Message::Close(frame))) => panic!("dropped after every ack: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_visitor_that_pipelines_sends_and_never_reads_is_still_dropped() {
    let app = spawn_app_with(|s| {
        unthrottled(s);
        s.limits.ping_secs = 280;
        s.limits.write_timeout_secs = 1;
    })
    .await;
    let (mut deaf, deaf_addr) = raw_visitor(&app).await;
    // Big messages, each answered by an ack and echoed back as an event, and nothing ever read. Sending stalls
    // once the server stops reading this socket; the server must let go of it either way.
    let body = "x".repeat(protocol::MAX_BODY_CHARS);
    let sender = tokio::spawn(async move {
        for sent in 0.. {
            let send = text(&ClientMsg::Send { client_id: format!("d-{sent}"), body: body.clone() });
            if deaf.send(send).await.is_err() {
                return sent;
            }
        }
        0
    });
    let took = released_within(app.addr, deaf_addr, Duration::from_secs(90)).await;
    sender.abort();
    let took = took.expect("a pipelining socket that never reads is let go");
    eprintln!("the server let go of the non-reading pipelining socket after {took:?}");
}

#[tokio::test]
async fn the_listener_queues_a_storm_of_2000_connections_without_dropping_any() {
    const STORM: usize = 2000;
    // Never accepts: every connection must fit the listen queue (tokio's own `bind` asks for 1024).
    let listener = parley::startup::bind_listener("127.0.0.1:0".parse().expect("addr")).expect("binds");
    let addr = listener.local_addr().expect("addr");
    let attempts: Vec<_> = (0..STORM)
        .map(|_| tokio::spawn(tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr))))
        .collect();
    let mut queued = Vec::new();
    for attempt in attempts {
        // An overflowing connection waits for a SYN retransmit (1 s or more) and misses the deadline.
        if let Ok(Ok(stream)) = attempt.await.expect("task") {
            queued.push(stream);
        }
    }
    assert_eq!(queued.len(), STORM, "connections the listen queue dropped");
    drop(listener);
}

#[tokio::test]
async fn an_agent_stays_connected_when_more_conversations_change_at_once_than_the_connection_queue() {
    const CONVERSATIONS: usize = 20;
    let app = spawn_app_with(|s| s.limits.connection_queue = 4).await;
    let mut visitors = Vec::new();
    for i in 0..CONVERSATIONS {
        let (mut visitor, _) = app.visitor(None, 0).await;
        crate::helpers::send_acked(&mut visitor, &format!("c-{i}"), &format!("hello {i}")).await;
        visitors.push(visitor);
    }
    let (mut agent, inbox) = app.agent().await;
    assert!(matches!(inbox, console::ServerMsg::Inbox { conversations, .. } if conversations.len() == CONVERSATIONS));
    let mut summaries = Vec::new();
    for row in app.store.summaries().await.expect("summaries") {
        summaries.push(app.state.conversations.summary(&row.id).await.expect("summary").expect("a row"));
    }
    // Every conversation changes before the agent's socket task runs again (nothing awaits in between): the
    // agent's mailbox holds more distinct rows than `connection_queue`, as with 10,000 active conversations.
    for summary in summaries {
        app.state.hub.publish(parley::hub::HubMsg::Summary(summary));
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < CONVERSATIONS {
        match agent.recv::<console::ServerMsg>().await {
            console::ServerMsg::Summary { conversation } => {
                seen.insert(conversation.id);
            }
            other => panic!("expected the changed rows, got {other:?}"),
        }
    }
    agent.send(&console::ClientMsg::Ping).await;
    agent.recv_until(|m: console::ServerMsg| matches!(m, console::ServerMsg::Pong).then_some(())).await;
}

/// Sends a visitor writes back to back, read by the server together, are posted together (batches of the socket,
/// their writes queued back to back): every one is acked once, in order, with consecutive seqs; the socket gets
/// every message's event once, in seq order (the batch's own events, which the hub coalesced into the last one,
/// with no gap and no repeat); each is stored once.
#[tokio::test]
async fn sends_pipelined_in_one_write_are_acked_in_order_and_each_event_arrives_once_in_order() {
    const SENDS: usize = 40;
    let app = spawn_app_with(unthrottled).await;
    let (mut raw, _) = raw_visitor(&app).await;
    // Every send fed before one flush: one TCP write, so the server reads them together.
    for i in 0..SENDS {
        raw.feed(text(&ClientMsg::Send { client_id: format!("p-{i}"), body: format!("pipelined {i}") }))
            .await
            .expect("fed");
    }
    raw.flush().await.expect("written");
    let (mut acks, mut events) = (Vec::new(), Vec::new());
    let read_all = async {
        while acks.len() < SENDS || events.len() < SENDS {
            match raw.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()).expect("a server frame") {
                    ServerMsg::Ack { client_id, seq, .. } => acks.push((client_id, seq)),
                    ServerMsg::Event { event } => events.push(event),
                    ServerMsg::Error { message, .. } => panic!("refused: {message}"),
                    _ => {}
                },
                Some(Ok(_)) => {}
                other => panic!("ended after {} acks: {other:?}", acks.len()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all).await.expect("every ack and event within 30 s");
    let expected: Vec<(String, u64)> = (0..SENDS).map(|i| (format!("p-{i}"), 1 + i as u64)).collect();
    assert_eq!(acks, expected, "acks once each, in order, consecutive seqs");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=SENDS as u64).collect::<Vec<_>>(), "every event once, in seq order");
    for (i, event) in events.iter().enumerate() {
        assert!(
            matches!(&event.kind, protocol::EventKind::Message { message } if message.client_id == format!("p-{i}")),
            "event {i} is message p-{i}: {event:?}"
        );
    }
    let summaries = app.store.summaries().await.expect("summaries");
    assert_eq!(summaries.len(), 1);
    let stored = app.store.events_after(&summaries[0].id, 0).await.expect("events");
    assert_eq!(stored.len(), SENDS, "each send stored once");
}
