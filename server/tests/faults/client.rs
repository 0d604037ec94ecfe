//! Clients that behave as the widget and the console promise to under faults: a visitor and an agent that keep
//! every message they sent until it is acked, reconnect (a visitor with `hello` and its last applied `seq`, an
//! agent with its session cookie), re-send every unacked message with its original client id, and check that the
//! events they apply arrive exactly once, in `seq` order, without gaps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use protocol::{ErrorCode, Event, EventKind};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{SITE_KEY, WAIT};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The connection is gone (closed, reset, refused); the client reconnects and resumes.
#[derive(Debug)]
pub struct Gone(#[allow(dead_code)] pub String);

fn gone(e: impl std::fmt::Display) -> Gone {
    Gone(e.to_string())
}

/// Every ack any client got: client id → seq. Client ids are unique across the test, so this is the ledger the
/// database is checked against: an ack promises the message is on disk at exactly that seq.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<HashMap<String, u64>>>);

impl Ledger {
    /// Records an ack; the same client id must always be acked with the same seq.
    fn record(&self, client_id: &str, seq: u64) {
        let mut acks = self.0.lock().expect("ledger");
        if let Some(before) = acks.insert(client_id.to_string(), seq) {
            assert_eq!(before, seq, "{client_id} was acked at seq {before}, then at seq {seq}");
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("ledger").len()
    }

    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.0.lock().expect("ledger").clone()
    }
}

/// What one frame did.
#[derive(Debug)]
pub enum Step {
    Acked,
    /// A `Send` was answered with an error (it stays pending).
    Refused {
        client_id: String,
        code: ErrorCode,
        message: String,
    },
    Other,
}

async fn open(url: &str, origin: &str, cookie: Option<&str>) -> Result<Socket, Gone> {
    let mut request = url.into_client_request().map_err(gone)?;
    request.headers_mut().insert("origin", HeaderValue::from_str(origin).map_err(gone)?);
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).map_err(gone)?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(gone)?;
    Ok(socket)
}

async fn write<T: Serialize>(socket: &mut Option<Socket>, msg: &T) -> Result<(), Gone> {
    let socket = socket.as_mut().ok_or_else(|| Gone("not connected".into()))?;
    let text = serde_json::to_string(msg).expect("serializes");
    socket.send(Message::Text(text.into())).await.map_err(gone)
}

/// The next JSON frame. A connection that says nothing for [`WAIT`] fails the test: every fault here either
/// ends the connection or is ended by the test.
async fn read<T: serde::de::DeserializeOwned>(socket: &mut Option<Socket>) -> Result<T, Gone> {
    let ws = socket.as_mut().ok_or_else(|| Gone("not connected".into()))?;
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Ok(
                        serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("unexpected frame {text}: {e}"))
                    );
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => return Err(Gone(format!("closed: {frame:?}"))),
                Some(Ok(Message::Binary(_))) => panic!("the server sent a binary frame"),
                Some(Err(e)) => return Err(gone(e)),
                None => return Err(Gone("ended".into())),
            }
        }
    })
    .await
    .expect("a frame or the end of the connection within the wait");
    if frame.is_err() {
        *socket = None;
    }
    frame
}

/// A web visitor, like the widget: keeps its token, the last seq it applied, and its unacked messages.
pub struct Visitor {
    pub name: String,
    /// Where to connect (the server, or a proxy in front of it).
    pub connect_to: SocketAddr,
    origin: String,
    token: Option<String>,
    pub last_seq: u64,
    /// Unacked messages, in the order they were first sent: (client id, body).
    pub pending: Vec<(String, String)>,
    /// Messages applied from the log, in seq order: (seq, client id).
    pub seen: Vec<(u64, String)>,
    pub sent: usize,
    /// Messages re-sent after a reconnect.
    pub resent: usize,
    pub reconnects: usize,
    /// Highest seq of this visitor's acked messages.
    acked_seq: u64,
    ledger: Ledger,
    socket: Option<Socket>,
}

impl Visitor {
    pub fn new(name: &str, connect_to: SocketAddr, origin: &str, ledger: Ledger) -> Self {
        Self {
            name: name.to_string(),
            connect_to,
            origin: origin.to_string(),
            token: None,
            last_seq: 0,
            pending: Vec::new(),
            seen: Vec::new(),
            sent: 0,
            resent: 0,
            reconnects: 0,
            acked_seq: 0,
            ledger,
            socket: None,
        }
    }

    /// The client id and body of this visitor's `n`th message.
    pub fn message(&self, n: usize) -> (String, String) {
        (format!("{}-{n}", self.name), format!("{} says {n}", self.name))
    }

    /// Opens the socket, says hello with the token and last seq, applies the welcome's events and re-sends every
    /// unacked message.
    pub async fn connect(&mut self) -> Result<(), Gone> {
        self.socket = None;
        let url = format!("ws://{}/ws/visitor?site={SITE_KEY}", self.connect_to);
        self.socket = Some(open(&url, &self.origin, None).await?);
        let hello = protocol::widget::ClientMsg::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            token: self.token.clone(),
            last_seq: self.last_seq,
            context: Default::default(),
            identity: None,
        };
        write(&mut self.socket, &hello).await?;
        match read(&mut self.socket).await? {
            protocol::widget::ServerMsg::Welcome { token, events, reset, .. } => {
                assert!(!reset, "{}: the server reset a client that holds its own history", self.name);
                self.token = Some(token);
                for event in events {
                    self.apply(event);
                }
            }
            other => panic!("{}: expected welcome, got {other:?}", self.name),
        }
        self.resend_pending().await
    }

    /// Connects, retrying while the server is away (restarting, or a fault still in force).
    pub async fn reconnect(&mut self) {
        let deadline = Instant::now() + WAIT;
        self.reconnects += 1;
        while let Err(e) = self.connect().await {
            assert!(Instant::now() < deadline, "{}: no connection within the wait: {e:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops the connection without a close handshake (the client gave up on it).
    pub fn abandon(&mut self) {
        self.socket = None;
    }

    fn apply(&mut self, event: Event) {
        assert_eq!(event.seq, self.last_seq + 1, "{}: event out of order, repeated or after a gap", self.name);
        self.last_seq = event.seq;
        if let EventKind::Message { message } = event.kind {
            self.seen.push((event.seq, message.client_id));
        }
    }

    /// Sends the next new message (kept pending until acked, even if the write fails).
    pub async fn send_next(&mut self) -> Result<(), Gone> {
        let (client_id, body) = self.message(self.sent);
        self.sent += 1;
        self.pending.push((client_id.clone(), body.clone()));
        write(&mut self.socket, &protocol::widget::ClientMsg::Send { client_id, body }).await
    }

    /// Re-sends every unacked message with its client id, on the open connection.
    pub async fn resend_pending(&mut self) -> Result<(), Gone> {
        for (client_id, body) in self.pending.clone() {
            self.resent += 1;
            write(&mut self.socket, &protocol::widget::ClientMsg::Send { client_id, body }).await?;
        }
        Ok(())
    }

    /// Reads frames until one answers a `Send` (an ack or a refusal).
    pub async fn answer(&mut self) -> Result<Step, Gone> {
        loop {
            match self.step().await? {
                Step::Other => continue,
                answer => return Ok(answer),
            }
        }
    }

    /// Reads and handles one frame.
    pub async fn step(&mut self) -> Result<Step, Gone> {
        Ok(match read(&mut self.socket).await? {
            protocol::widget::ServerMsg::Ack { client_id, seq, .. } => {
                self.ledger.record(&client_id, seq);
                self.acked_seq = self.acked_seq.max(seq);
                self.pending.retain(|(id, _)| *id != client_id);
                Step::Acked
            }
            protocol::widget::ServerMsg::Event { event } => {
                self.apply(event);
                Step::Other
            }
            protocol::widget::ServerMsg::Error { code, message, client_id: Some(client_id) } => {
                Step::Refused { client_id, code, message }
            }
            _ => Step::Other,
        })
    }

    /// Reads on until the log has caught up with every ack (an ack can overtake its own event).
    pub async fn catch_up(&mut self) {
        while self.last_seq < self.acked_seq {
            if self.step().await.is_err() {
                self.reconnect().await;
            }
        }
    }

    /// Sends `total` messages with at most `window` unacked at once, reconnecting whenever the connection goes,
    /// until every one is acked. Any refusal fails the test.
    pub async fn run(&mut self, total: usize, window: usize) {
        self.reconnect().await;
        while self.sent < total || !self.pending.is_empty() {
            let mut alive = true;
            while alive && self.sent < total && self.pending.len() < window {
                alive = self.send_next().await.is_ok();
            }
            match self.step().await {
                Ok(Step::Refused { client_id, code, message }) => {
                    panic!("{}: {client_id} refused: {code:?} {message}", self.name)
                }
                Ok(_) => {}
                Err(_) => self.reconnect().await,
            }
        }
        self.catch_up().await;
    }
}

/// A signed-in agent, like the console: replies round-robin into the conversations it learns of, keeps every
/// unacked reply and re-sends it with its client id after a reconnect.
pub struct Agent {
    connect_to: SocketAddr,
    origin: String,
    cookie: String,
    conversations: Vec<String>,
    /// Unacked replies: (conversation id, client id, body).
    pub pending: Vec<(String, String, String)>,
    pub sent: usize,
    pub resent: usize,
    ledger: Ledger,
    socket: Option<Socket>,
}

impl Agent {
    pub fn new(connect_to: SocketAddr, origin: &str, cookie: &str, ledger: Ledger) -> Self {
        Self {
            connect_to,
            origin: origin.to_string(),
            cookie: cookie.to_string(),
            conversations: Vec::new(),
            pending: Vec::new(),
            sent: 0,
            resent: 0,
            ledger,
            socket: None,
        }
    }

    fn learn(&mut self, conversation_id: String) {
        if !self.conversations.contains(&conversation_id) {
            self.conversations.push(conversation_id);
        }
    }

    async fn connect(&mut self) -> Result<(), Gone> {
        self.socket = None;
        let url = format!("ws://{}/ws/agent", self.connect_to);
        self.socket = Some(open(&url, &self.origin, Some(&self.cookie)).await?);
        match read(&mut self.socket).await? {
            protocol::console::ServerMsg::Inbox { conversations, .. } => {
                for c in conversations {
                    self.learn(c.id);
                }
            }
            other => panic!("agent: expected the inbox, got {other:?}"),
        }
        for (conversation_id, client_id, body) in self.pending.clone() {
            self.resent += 1;
            let msg = protocol::console::ClientMsg::Send { conversation_id, client_id, body };
            write(&mut self.socket, &msg).await?;
        }
        Ok(())
    }

    async fn reconnect(&mut self) {
        let deadline = Instant::now() + WAIT;
        while let Err(e) = self.connect().await {
            assert!(Instant::now() < deadline, "agent: no connection within the wait: {e:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client id and body of the agent's `n`th reply.
    pub fn reply(n: usize) -> (String, String) {
        (format!("agent-{n}"), format!("agent replies {n}"))
    }

    /// Sends `total` replies with at most `window` unacked, as conversations appear; returns when all are acked.
    pub async fn run(&mut self, total: usize, window: usize) {
        self.reconnect().await;
        while self.sent < total || !self.pending.is_empty() {
            let mut alive = true;
            while alive && self.sent < total && self.pending.len() < window && !self.conversations.is_empty() {
                let conversation_id = self.conversations[self.sent % self.conversations.len()].clone();
                let (client_id, body) = Self::reply(self.sent);
                self.sent += 1;
                self.pending.push((conversation_id.clone(), client_id.clone(), body.clone()));
                let msg = protocol::console::ClientMsg::Send { conversation_id, client_id, body };
                alive = write(&mut self.socket, &msg).await.is_ok();
            }
            match read(&mut self.socket).await {
                Ok(protocol::console::ServerMsg::Summary { conversation }) => self.learn(conversation.id),
                Ok(protocol::console::ServerMsg::Ack { client_id, seq, .. }) => {
                    self.ledger.record(&client_id, seq);
                    self.pending.retain(|(_, id, _)| *id != client_id);
                }
                Ok(protocol::console::ServerMsg::Error { client_id: Some(id), code, message }) => {
                    panic!("agent: {id} refused: {code:?} {message}")
                }
                Ok(_) => {}
                Err(_) => self.reconnect().await,
            }
        }
    }
}
