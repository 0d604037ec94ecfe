//! The pong deadline, seen from a client that writes its own frames (so it decides when, and what, it answers to a
//! ping): a pong that waits behind the client's own frames while the server is stalled does not get the client
//! dropped; an unsolicited pong does not keep a deaf client alive.

use std::collections::HashSet;
use std::io::Cursor;
use std::time::Duration;

use protocol::widget::{ClientMsg, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::helpers::{SITE_KEY, TestApp, spawn_app_with};
use crate::liveness::unthrottled;

/// A WebSocket client over a bare TCP stream: frames are written exactly when and as the test says.
struct RawClient {
    tcp: TcpStream,
    /// Bytes read and not yet parsed into frames.
    buf: Vec<u8>,
}

/// A frame from the server: its opcode and payload.
struct ServerFrame {
    opcode: OpCode,
    payload: Vec<u8>,
}

impl RawClient {
    /// Upgrades a TCP connection to `/ws/visitor` by hand and says hello; returns once welcomed.
    async fn visitor(app: &TestApp) -> Self {
        let mut tcp = TcpStream::connect(app.addr).await.expect("connects");
        let request = format!(
            "GET /ws/visitor?site={SITE_KEY} HTTP/1.1\r\nHost: {}\r\nOrigin: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            app.addr,
            app.origin()
        );
        tcp.write_all(request.as_bytes()).await.expect("upgrade request");
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.expect("upgrade response");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        buf.drain(..head_end);
        let mut client = Self { tcp, buf };
        let hello = ClientMsg::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            token: None,
            last_seq: 0,
            context: Default::default(),
            identity: None,
        };
        client.write(&[Self::text(&hello)]).await;
        loop {
            let frame = client.read().await;
            if frame.opcode == OpCode::Data(Data::Text) && String::from_utf8_lossy(&frame.payload).contains("welcome") {
                return client;
            }
        }
    }

    /// A masked text frame carrying `msg` as JSON.
    fn text(msg: &ClientMsg) -> Frame {
        Frame::message(serde_json::to_vec(msg).expect("serializes"), OpCode::Data(Data::Text), true)
    }

    /// Writes `frames`, masked as a client's must be, in one write.
    async fn write(&mut self, frames: &[Frame]) {
        self.try_write(frames).await.expect("writes");
    }

    /// Like [`Self::write`], for a connection the server may have closed.
    async fn try_write(&mut self, frames: &[Frame]) -> std::io::Result<()> {
        let mut out = Vec::new();
        for frame in frames {
            let mut frame = frame.clone();
            frame.header_mut().mask = Some([0x5a, 0x13, 0xc7, 0x2e]);
            frame.format(&mut out).map_err(std::io::Error::other)?;
        }
        self.tcp.write_all(&out).await
    }

    /// The next frame from the server (unmasked, unfragmented: the server sends whole frames).
    async fn read(&mut self) -> ServerFrame {
        loop {
            let mut cursor = Cursor::new(&self.buf);
            if let Some((header, len)) = FrameHeader::parse(&mut cursor).expect("a well-formed frame header") {
                let start = cursor.position() as usize;
                let end = start + len as usize;
                if self.buf.len() >= end {
                    let payload = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    return ServerFrame { opcode: header.opcode, payload };
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.tcp.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "the server closed the connection without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the server pings; that ping's payload. Panics on a close frame.
    async fn next_ping(&mut self) -> Vec<u8> {
        loop {
            let frame = self.read().await;
            match frame.opcode {
                OpCode::Control(Control::Ping) => return frame.payload,
                OpCode::Control(Control::Close) => panic!("closed: {}", close_reason(&frame.payload)),
                _ => {}
            }
        }
    }
}

/// A close frame's code and reason, for a failure message.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [hi, lo, reason @ ..] => format!("{} {}", u16::from_be_bytes([*hi, *lo]), String::from_utf8_lossy(reason)),
        _ => "no code".into(),
    }
}

#[tokio::test]
async fn a_pong_behind_the_clients_own_frames_while_the_server_is_stalled_does_not_get_it_dropped() {
    // More sends than the server reads and handles in one turn (16 a turn, one read ahead), so the pong is many
    // turns behind them; the old deadline closed the socket at random among those turns.
    const SENDS: usize = 320;
    let app = spawn_app_with(|s| {
        s.limits.ping_secs = 1;
        s.limits.pong_timeout_secs = 1;
        unthrottled(s);
    })
    .await;
    let mut client = RawClient::visitor(&app).await;
    // The disk "stalls": no send can commit until the lock goes.
    let lock = app.hold_write_lock().await;
    let payload = client.next_ping().await;
    let pinged = tokio::time::Instant::now();
    // The answer to the ping goes out behind every send, as it does from a client that was writing when the ping
    // came: the server reaches it only after handling them all.
    let mut frames: Vec<Frame> = (0..SENDS)
        .map(|i| RawClient::text(&ClientMsg::Send { client_id: format!("s-{i}"), body: format!("send {i}") }))
        .collect();
    frames.push(Frame::pong(payload));
    client.write(&frames).await;
    // The stall outlasts the pong deadline (1 s) twice over; the deadline is a time, so this waits for it.
    tokio::time::sleep_until(pinged + Duration::from_secs(3)).await;
    lock.release().await;

    let mut acks = HashSet::new();
    let mut pings_answered = 0;
    let read_on = async {
        // Every ack, then two more pings answered: the socket outlived the stall and its backlog.
        while acks.len() < SENDS || pings_answered < 2 {
            let frame = client.read().await;
            match frame.opcode {
                OpCode::Data(Data::Text) => {
                    if let Ok(ServerMsg::Ack { client_id, .. }) = serde_json::from_slice(&frame.payload) {
                        acks.insert(client_id);
                    }
                }
                OpCode::Control(Control::Ping) => {
                    client.write(&[Frame::pong(frame.payload)]).await;
                    pings_answered += usize::from(acks.len() == SENDS);
                }
                OpCode::Control(Control::Close) => {
                    panic!("dropped after {} of {SENDS} acks: {}", acks.len(), close_reason(&frame.payload))
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_on).await.expect("every ack and two pings within a minute");
    assert_eq!(acks.len(), SENDS);
    assert_eq!(app.store.summaries().await.expect("summaries")[0].last_seq, SENDS as i64, "each send stored once");
}

#[tokio::test]
async fn unsolicited_pongs_do_not_keep_a_client_that_answers_no_ping_alive() {
    let app = spawn_app_with(|s| {
        s.limits.ping_secs = 1;
        s.limits.pong_timeout_secs = 1;
    })
    .await;
    let mut client = RawClient::visitor(&app).await;
    let payload = client.next_ping().await;
    let pinged = tokio::time::Instant::now();
    // From here on the client answers no ping, and sends pongs that answer none every 200 ms: empty (a heartbeat,
    // which RFC 6455 allows) and with a guessed payload.
    let guessed: Vec<u8> = payload.iter().map(|b| b.wrapping_add(1)).collect();
    let closed = async {
        loop {
            if client.try_write(&[Frame::pong(Vec::new()), Frame::pong(guessed.clone())]).await.is_err() {
                return "the connection was cut".to_string();
            }
            // Cancel safe: a read cut short by the timeout leaves what it had in the buffer.
            if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), client.read()).await
                && frame.opcode == OpCode::Control(Control::Close)
            {
                return close_reason(&frame.payload);
            }
        }
    };
    let reason = tokio::time::timeout(Duration::from_secs(10), closed).await.expect("closed within 10 s of the ping");
    let took = pinged.elapsed();
    assert!(reason.contains("no pong"), "closed for another reason: {reason}");
    // The pong deadline (1 s) after the ping, with slack for a slow machine.
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
}
