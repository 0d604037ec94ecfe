//! WebSocket endpoints: `/ws/visitor` for the widget and `/ws/agent` for the console.
//!
//! Both share the same shape: authenticate the upgrade, split the socket, then one task `select!`s over client
//! frames, hub messages and a ping timer. Live events pass through a [`Relay`] that guarantees each socket sees a
//! conversation's events exactly once and in `seq` order, fetching any gap from the store.

pub mod agent;
pub mod visitor;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use protocol::Event;
use serde::Serialize;

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

/// Sends one JSON frame.
async fn send_json<T: Serialize>(sink: &mut Sink, msg: &T) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).map_err(axum::Error::new)?;
    sink.send(Message::Text(text.into())).await
}

/// Sends a close frame (errors ignored: the peer may already be gone).
async fn send_close(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
        .await;
}
