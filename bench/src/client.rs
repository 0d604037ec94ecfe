//! The load generator's sockets: a visitor or an agent connected to the target under test, speaking Parley's JSON
//! frames (`protocol::widget`, `protocol::console`) either as plain WebSocket text frames (Parley, the bare relay)
//! or wrapped in Socket.IO packets (the Node peer: Engine.IO v4 over the `websocket` transport, event `msg`).
//!
//! Every socket is bound to a source address from [`sys::source_addr`] and has TCP_NODELAY and a small read
//! buffer, so the generator's own costs stay small next to the server's.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::sys;

/// The origin the benchmark site allows (visitor sockets send it).
pub const SITE_ORIGIN: &str = "http://bench.test";
pub const SITE_KEY: &str = "bench";
pub const AGENT_EMAIL: &str = "bench@example.com";
pub const AGENT_PASSWORD: &str = "bench password 1";

/// How the target frames Parley's JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// One WebSocket text frame per JSON frame.
    Plain,
    /// Socket.IO: `42["msg",<frame>]`, pings `2` answered `3`.
    SocketIo,
}

/// Where the sockets go and how they speak.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub wire: Wire,
    /// The `Cookie` header of a signed-in agent (Parley only).
    pub agent_cookie: Option<String>,
}

pub type Ws = WebSocketStream<TcpStream>;

/// Which of the target's sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Visitor,
    Agent,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Opens a socket from source address number `source`.
pub async fn connect(endpoint: &Endpoint, role: Role, source: usize) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(sys::source_addr(source), 0)).context("bind a source address")?;
    let stream = socket.connect(endpoint.addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let path = match (endpoint.wire, role) {
        (Wire::Plain, Role::Visitor) => format!("/ws/visitor?site={SITE_KEY}"),
        (Wire::Plain, Role::Agent) => "/ws/agent".to_string(),
        (Wire::SocketIo, Role::Visitor) => "/socket.io/?EIO=4&transport=websocket&role=visitor".to_string(),
        (Wire::SocketIo, Role::Agent) => "/socket.io/?EIO=4&transport=websocket&role=agent".to_string(),
    };
    let mut request = format!("ws://{}{path}", endpoint.addr).into_client_request()?;
    let origin = match role {
        Role::Visitor => SITE_ORIGIN.to_string(),
        Role::Agent => format!("http://{}", endpoint.addr),
    };
    request.headers_mut().insert("origin", HeaderValue::from_str(&origin)?);
    if role == Role::Agent
        && let Some(cookie) = &endpoint.agent_cookie
    {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie)?);
    }
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
    if endpoint.wire == Wire::SocketIo {
        // Engine.IO open packet, then connect to the default namespace and wait for its answer.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with('0') => break,
                Some(Ok(_)) => {}
                other => anyhow::bail!("no Engine.IO open packet: {other:?}"),
            }
        }
        ws.send(Message::Text("40".into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => break,
                Some(Ok(_)) => {}
                other => anyhow::bail!("no Socket.IO connect: {other:?}"),
            }
        }
    }
    Ok(ws)
}

/// The WebSocket message carrying one JSON frame on this wire.
pub fn encode<T: Serialize>(wire: Wire, msg: &T) -> anyhow::Result<Message> {
    let json = serde_json::to_string(msg)?;
    Ok(Message::Text(Utf8Bytes::from(match wire {
        Wire::Plain => json,
        Wire::SocketIo => format!("42[\"msg\",{json}]"),
    })))
}

/// What one received WebSocket message means.
pub enum Incoming {
    /// A JSON frame (its text).
    Frame(String),
    /// A Socket.IO ping to answer with `3`.
    SioPing,
    /// Anything else that needs no action (pings, pongs, Socket.IO noise).
    Nothing,
    /// The socket closed or failed.
    End,
}

/// Unwraps one received message.
pub fn decode(wire: Wire, msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Incoming {
    match msg {
        Some(Ok(Message::Text(t))) => match wire {
            Wire::Plain => Incoming::Frame(t.as_str().to_string()),
            Wire::SocketIo => {
                let t = t.as_str();
                if t == "2" {
                    return Incoming::SioPing;
                }
                let Some(array) = t.strip_prefix("42") else { return Incoming::Nothing };
                match serde_json::from_str::<(String, serde_json::Value)>(array) {
                    Ok((_, frame)) => Incoming::Frame(frame.to_string()),
                    Err(_) => Incoming::Nothing,
                }
            }
        },
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Incoming::End,
        Some(Ok(_)) => Incoming::Nothing,
    }
}

/// Reads until a JSON frame that `pick` accepts (answering Socket.IO pings); `None` when the socket ends first or
/// `limit` passes.
pub async fn recv_until<R>(
    ws: &mut Ws,
    wire: Wire,
    limit: Duration,
    mut pick: impl FnMut(&str) -> Option<R>,
) -> Option<R> {
    tokio::time::timeout(limit, async {
        loop {
            match decode(wire, ws.next().await) {
                Incoming::Frame(text) => {
                    if let Some(found) = pick(&text) {
                        return Some(found);
                    }
                }
                Incoming::SioPing => {
                    let _ = ws.send(Message::Text("3".into())).await;
                }
                Incoming::Nothing => {}
                Incoming::End => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// A visitor's `hello`.
pub fn hello(token: Option<String>, last_seq: u64) -> protocol::widget::ClientMsg {
    protocol::widget::ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token,
        last_seq,
        context: Default::default(),
        identity: None,
    }
}

/// What a visitor learned from its `welcome`.
pub struct Welcome {
    pub token: String,
    pub events: Vec<protocol::Event>,
}

/// Connects a visitor and says hello; its welcome.
pub async fn visitor(
    endpoint: &Endpoint,
    source: usize,
    token: Option<String>,
    last_seq: u64,
) -> anyhow::Result<(Ws, Welcome)> {
    let mut ws = connect(endpoint, Role::Visitor, source).await?;
    ws.send(encode(endpoint.wire, &hello(token, last_seq))?).await?;
    let welcome =
        recv_until(&mut ws, endpoint.wire, Duration::from_secs(60), |text| match serde_json::from_str(text).ok()? {
            protocol::widget::ServerMsg::Welcome { token, events, .. } => Some(Ok(Welcome { token, events })),
            protocol::widget::ServerMsg::Error { message, .. } => Some(Err(message)),
            _ => None,
        })
        .await
        .context("no welcome")?
        .map_err(|why| anyhow::anyhow!("refused: {why}"))?;
    Ok((ws, welcome))
}

/// Signs the benchmark agent in through the console's login endpoint; the `Cookie` header for its socket.
pub async fn agent_cookie(addr: SocketAddr) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let response = client
        .post(format!("http://{addr}/api/console/login"))
        .header("origin", format!("http://{addr}"))
        .form(&[("email", AGENT_EMAIL), ("password", AGENT_PASSWORD)])
        .send()
        .await?;
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("parley_session=") && pair.len() > "parley_session=".len())
        .map(str::to_string)
        .with_context(|| format!("sign-in failed ({})", response.status()))
}
