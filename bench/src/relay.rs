//! The bare relay baseline: a tokio-tungstenite server answering Parley's frames the way Parley does (welcome,
//! ack, the visitor's own event echoed, every message to every agent as a `summary` and an `event`) from memory,
//! with no persistence, no flood control and no liveness checks. What it measures is what the socket path alone
//! costs; Parley's figures are given as ratios to it.
//!
//! Per visitor token it keeps the conversation's events, so a visitor resuming with `last_seq` gets what it missed
//! and a re-sent `client_id` gets its original ack, as from Parley.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use protocol::console::ConversationSummary;
use protocol::widget::{ClientMsg, ServerMsg};
use protocol::{Author, Channel, ChatMessage, ConversationStatus, Event, EventKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Default)]
struct Conversation {
    events: Vec<Event>,
    acks: HashMap<String, (String, u64)>,
}

#[derive(Default)]
struct State {
    conversations: HashMap<String, Conversation>,
    agents: HashMap<u64, mpsc::UnboundedSender<Message>>,
    next: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves until the process is killed.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let state = Shared::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = connection(stream, state).await;
        });
    }
}

fn text<T: serde::Serialize>(msg: &T) -> anyhow::Result<Message> {
    Ok(Message::Text(Utf8Bytes::from(serde_json::to_string(msg)?)))
}

// The handshake callback's signature (and its large error type) is tungstenite's.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, state: Shared) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_string();
        Ok(response)
    };
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(8 * 1024);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    let (mut tx, mut rx) = ws.split();
    if path == "/ws/agent" {
        let (out, mut queue) = mpsc::unbounded_channel();
        let id = {
            let mut s = lock(&state);
            s.next += 1;
            let id = s.next;
            s.agents.insert(id, out);
            id
        };
        let inbox = protocol::console::ServerMsg::Inbox {
            agent: protocol::console::AgentInfo { id: "a".into(), name: "Bench".into(), email: "b@x".into() },
            conversations: Vec::new(),
        };
        tx.send(text(&inbox)?).await?;
        loop {
            tokio::select! {
                msg = rx.next() => match msg {
                    Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                    _ => break,
                },
                out = queue.recv() => match out {
                    Some(m) => if tx.send(m).await.is_err() { break },
                    None => break,
                },
            }
        }
        lock(&state).agents.remove(&id);
        return Ok(());
    }
    let mut token = String::new();
    while let Some(msg) = rx.next().await {
        let Ok(Message::Text(t)) = msg else {
            if matches!(msg, Ok(Message::Ping(_) | Message::Pong(_))) {
                continue;
            }
            break;
        };
        let Ok(msg) = serde_json::from_str::<ClientMsg>(t.as_str()) else { continue };
        match msg {
            ClientMsg::Hello { token: known, last_seq, .. } => {
                token = known.filter(|t| !t.is_empty()).unwrap_or_else(new_id);
                let (events, last) = {
                    let mut s = lock(&state);
                    let c = s.conversations.entry(token.clone()).or_default();
                    let from = if last_seq as usize > c.events.len() { 0 } else { last_seq as usize };
                    (c.events[from..].to_vec(), c.events.len() as u64)
                };
                let welcome = ServerMsg::Welcome {
                    token: token.clone(),
                    events,
                    last_seq: last,
                    agent_read_seq: 0,
                    reset: false,
                    sid: String::new(),
                };
                tx.send(text(&welcome)?).await?;
            }
            ClientMsg::Send { client_id, body } => {
                let (ack, fresh) = {
                    let mut s = lock(&state);
                    let s = &mut *s;
                    let c = s.conversations.entry(token.clone()).or_default();
                    match c.acks.get(&client_id) {
                        Some((id, seq)) => ((id.clone(), *seq), None),
                        None => {
                            let seq = c.events.len() as u64 + 1;
                            let message = ChatMessage {
                                id: new_id(),
                                client_id: client_id.clone(),
                                author: Author::Visitor,
                                body: body.clone(),
                                sent_at: 0,
                                channel: Channel::Web,
                                attachments: Vec::new(),
                            };
                            let event = Event { seq, at: 0, kind: EventKind::Message { message: message.clone() } };
                            c.events.push(event.clone());
                            c.acks.insert(client_id.clone(), (message.id.clone(), seq));
                            let agents: Vec<_> = s.agents.values().cloned().collect();
                            ((message.id, seq), Some((event, agents)))
                        }
                    }
                };
                tx.feed(text(&ServerMsg::Ack { client_id, message_id: ack.0, seq: ack.1 })?).await?;
                if let Some((event, agents)) = fresh {
                    tx.feed(text(&ServerMsg::Event { event: event.clone() })?).await?;
                    let summary = protocol::console::ServerMsg::Summary { conversation: summary(&token, &body, ack.1) };
                    let summary = text(&summary)?;
                    let event = text(&protocol::console::ServerMsg::Event { conversation_id: token.clone(), event })?;
                    for agent in agents {
                        let _ = agent.send(summary.clone());
                        let _ = agent.send(event.clone());
                    }
                }
                tx.flush().await?;
            }
            ClientMsg::Ping => tx.send(text(&ServerMsg::Pong)?).await?,
            _ => {}
        }
    }
    Ok(())
}

fn summary(conversation: &str, body: &str, seq: u64) -> ConversationSummary {
    ConversationSummary {
        id: conversation.to_string(),
        site_key: "bench".into(),
        site_name: "Bench".into(),
        visitor_name: "Visitor".into(),
        status: ConversationStatus::Open,
        last_message: Some(body.to_string()),
        last_activity_at: 0,
        unread: 1,
        last_seq: seq,
        visitor_read_seq: 0,
        visitor: Default::default(),
        messenger: None,
    }
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Binds the relay (used by `parley-bench relay`) with the listen queue Parley asks for.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(16_384)?)
}
