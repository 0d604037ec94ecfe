//! Small WebSocket steps for the cluster tests: a visitor or an agent socket on a given node (or nginx), sends, and
//! reads until an expected frame arrives within a bound.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{SITE_KEY, WAIT};

pub use crate::process::Socket;
use crate::process::open_socket;

pub async fn send<T: Serialize>(ws: &mut Socket, msg: &T) {
    ws.send(Message::Text(serde_json::to_string(msg).expect("json").into())).await.expect("send");
}

/// Reads frames until `pick` accepts one, failing after `within` with `what`.
pub async fn recv_until<T: DeserializeOwned, R>(
    ws: &mut Socket,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(T) -> Option<R>,
) -> R {
    let deadline = Instant::now() + within;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await else {
            panic!("timed out after {within:?} waiting for {what}");
        };
        match frame.unwrap_or_else(|| panic!("socket ended waiting for {what}")).expect("frame") {
            Message::Text(text) => {
                if let Some(found) = serde_json::from_str::<T>(text.as_str()).ok().and_then(&mut pick) {
                    return found;
                }
            }
            Message::Close(close) => panic!("socket closed waiting for {what}: {close:?}"),
            _ => {}
        }
    }
}

/// A new visitor on `host` (a node or nginx): hello, then the welcome.
pub async fn visitor(host: &str, origin: &str) -> Socket {
    let mut ws = open_socket(host, &format!("/ws/visitor?site={SITE_KEY}"), origin, None).await;
    let hello = protocol::widget::ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: None,
        last_seq: 0,
        context: protocol::widget::VisitorContext::default(),
        identity: None,
    };
    send(&mut ws, &hello).await;
    recv_until(&mut ws, WAIT, "the welcome", |m: protocol::widget::ServerMsg| {
        matches!(m, protocol::widget::ServerMsg::Welcome { .. }).then_some(())
    })
    .await;
    ws
}

/// The signed-in agent on `host`, once its inbox arrived.
pub async fn agent(host: &str, origin: &str, cookie: &str) -> Socket {
    let mut ws = open_socket(host, "/ws/agent", origin, Some(cookie)).await;
    recv_until(&mut ws, WAIT, "the inbox", |m: protocol::console::ServerMsg| {
        matches!(m, protocol::console::ServerMsg::Inbox { .. }).then_some(())
    })
    .await;
    ws
}

/// A visitor's message; returns its acked seq.
pub async fn visitor_says(ws: &mut Socket, client_id: &str, body: &str) -> u64 {
    send(ws, &protocol::widget::ClientMsg::Send { client_id: client_id.into(), body: body.into() }).await;
    recv_until(ws, WAIT, &format!("the ack of {client_id}"), |m: protocol::widget::ServerMsg| match m {
        protocol::widget::ServerMsg::Ack { client_id: id, seq, .. } if id == client_id => Some(seq),
        protocol::widget::ServerMsg::Error { client_id: Some(id), message, .. } if id == client_id => {
            panic!("{client_id} refused: {message}")
        }
        _ => None,
    })
    .await
}

/// An agent's reply; returns its acked seq.
pub async fn agent_says(ws: &mut Socket, conversation_id: &str, client_id: &str, body: &str) -> u64 {
    let msg = protocol::console::ClientMsg::Send {
        conversation_id: conversation_id.into(),
        client_id: client_id.into(),
        body: body.into(),
    };
    send(ws, &msg).await;
    recv_until(ws, WAIT, &format!("the ack of {client_id}"), |m: protocol::console::ServerMsg| match m {
        protocol::console::ServerMsg::Ack { client_id: id, seq, .. } if id == client_id => Some(seq),
        protocol::console::ServerMsg::Error { client_id: Some(id), message, .. } if id == client_id => {
            panic!("{client_id} refused: {message}")
        }
        _ => None,
    })
    .await
}

/// Sends `count` agent replies into `conversation_id` (client ids `{prefix}-{n}`) with at most `window` unacked;
/// returns client id → acked seq.
pub async fn agent_floods(
    ws: &mut Socket,
    conversation_id: &str,
    prefix: &str,
    count: usize,
    window: usize,
) -> HashMap<String, u64> {
    let mut acks = HashMap::new();
    let mut sent = 0;
    while acks.len() < count {
        while sent < count && sent - acks.len() < window {
            let msg = protocol::console::ClientMsg::Send {
                conversation_id: conversation_id.into(),
                client_id: format!("{prefix}-{sent}"),
                body: format!("{prefix} says {sent}"),
            };
            send(ws, &msg).await;
            sent += 1;
        }
        let (client_id, seq) = recv_until(ws, WAIT, "an ack", |m: protocol::console::ServerMsg| match m {
            protocol::console::ServerMsg::Ack { client_id, seq, .. } => Some((client_id, seq)),
            protocol::console::ServerMsg::Error { client_id: Some(id), message, .. } => {
                panic!("{id} refused: {message}")
            }
            _ => None,
        })
        .await;
        assert!(acks.insert(client_id.clone(), seq).is_none(), "{client_id} acked twice");
    }
    acks
}

/// The body of a message event.
pub fn message_body(event: &protocol::Event) -> Option<&str> {
    match &event.kind {
        protocol::EventKind::Message { message } => Some(message.body.as_str()),
        _ => None,
    }
}
