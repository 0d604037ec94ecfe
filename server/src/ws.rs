//! WebSocket endpoints: `/ws/visitor` for the widget and `/ws/agent` for the console.
//!
//! Both share the same shape: authenticate the upgrade, split the socket, then one task `select!`s over client
//! frames, hub messages and a ping timer. Live events pass through a [`Relay`] that guarantees each socket sees a
//! conversation's events exactly once and in `seq` order, fetching any gap from the store.

pub mod agent;
pub mod visitor;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::hub::{HubMsg, HubReceiver};
use crate::store::{Store, StoreResult};

/// Close codes we use.
pub mod close {
    /// The client broke the protocol (e.g. no `hello`).
    pub const POLICY: u16 = 1008;
    /// The client could not keep up; reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
}

/// Seconds between server pings.
pub const PING_SECS: u64 = 30;

/// Per-conversation delivery cursor of one socket.
#[derive(Debug, Default)]
pub struct Relay {
    last_sent: u64,
}

impl Relay {
    pub fn starting_at(seq: u64) -> Self {
        Self { last_sent: seq }
    }

    pub fn last_sent(&self) -> u64 {
        self.last_sent
    }

    /// The events to send for a live `event`: none if already sent, the event itself if it is next, or the whole
    /// gap read from the store if some events were missed or arrive out of order.
    pub async fn next(&mut self, store: &Store, conversation_id: &str, event: &Event) -> StoreResult<Vec<Event>> {
        if event.seq <= self.last_sent {
            return Ok(Vec::new());
        }
        let events = if event.seq == self.last_sent + 1 {
            vec![event.clone()]
        } else {
            store.events_after(conversation_id, self.last_sent).await?
        };
        if let Some(last) = events.last() {
            self.last_sent = self.last_sent.max(last.seq);
        }
        Ok(events)
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Reads the next client frame; `None` when the socket ended. Control frames are skipped.
async fn next_frame<T: DeserializeOwned>(stream: &mut Stream) -> Option<Result<T, String>> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).map_err(|e| format!("bad frame: {e}")));
            }
            Ok(Message::Binary(_)) => return Some(Err("binary frames are not supported".into())),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
}

/// One side's handling of an established socket (visitor or agent).
trait Connection {
    type Client: DeserializeOwned;

    /// Answers a client frame; an error ends the connection.
    async fn on_client(&mut self, sink: &mut Sink, msg: Self::Client) -> Result<(), axum::Error>;
    /// Forwards a hub message; an error ends the connection.
    async fn on_hub(&mut self, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error>;
    /// The frame telling the client its frame could not be read.
    fn bad_frame(&self, why: &str) -> impl Serialize;
    /// Resolves when the connection must end for a reason of its own (e.g. the agent's session is gone), with
    /// the close code and reason to send. Never, by default.
    fn ended(&self) -> impl Future<Output = (u16, &'static str)> + Send + 'static {
        std::future::pending()
    }
}

/// Runs a socket until it ends: client frames, hub messages, pings every [`PING_SECS`], and shutdown (1001).
/// A hub queue that overflowed closes with 1013 so the client resumes from its last seq.
async fn serve<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    stream: &mut Stream,
    hub_rx: &mut HubReceiver,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ping = tokio::time::interval(Duration::from_secs(PING_SECS));
    ping.reset();
    let ended = conn.ended();
    tokio::pin!(ended);
    loop {
        tokio::select! {
            frame = next_frame::<C::Client>(stream) => match frame {
                None => break,
                Some(Ok(msg)) => {
                    if conn.on_client(sink, msg).await.is_err() {
                        break;
                    }
                }
                Some(Err(why)) => {
                    if send_json(sink, &conn.bad_frame(&why)).await.is_err() {
                        break;
                    }
                }
            },
            hub = hub_rx.recv() => match hub {
                None => {
                    send_close(sink, close::TRY_AGAIN_LATER, "too slow; resume").await;
                    break;
                }
                Some(msg) => {
                    let msg: Arc<HubMsg> = msg;
                    if conn.on_hub(sink, &msg).await.is_err() {
                        break;
                    }
                }
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                send_close(sink, close::GOING_AWAY, "server restarting").await;
                break;
            }
            (code, reason) = &mut ended => {
                send_close(sink, code, reason).await;
                break;
            }
        }
    }
}

/// Sends one JSON frame.
async fn send_json<T: Serialize>(sink: &mut Sink, msg: &T) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).map_err(axum::Error::new)?;
    sink.send(Message::Text(text.into())).await
}

/// Sends a close frame (errors ignored: the peer may already be gone).
async fn send_close(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}
