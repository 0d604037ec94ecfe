//! WebSocket endpoints: `/ws/visitor` for the widget and `/ws/agent` for the console.
//!
//! Both share the same shape: authenticate the upgrade, split the socket, then one task `select!`s over client
//! frames, hub messages, a ping timer and the pong deadline (see [`serve`]). Live events pass through a [`Relay`]
//! that guarantees each socket sees a conversation's events exactly once and in `seq` order, fetching any gap from
//! the store. Every client frame passes flood control ([`flood`]) before it is handled; every write has a deadline.

pub mod agent;
pub mod flood;
pub mod site_cache;
pub mod visitor;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use protocol::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::config::LimitSettings;
use crate::hub::{HubMsg, HubReceiver};
use crate::store::{Store, StoreResult};
use flood::SocketSlot;

/// Close codes we use.
pub mod close {
    /// The client broke the protocol (e.g. no `hello`).
    pub const POLICY: u16 = 1008;
    /// The client could not keep up (or stopped answering pings); reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was larger than `limits.max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// A frame broke the WebSocket protocol itself.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
}

/// Bytes tungstenite allocates up front to read each socket and keeps for the socket's life (its default is 128 KiB,
/// paid by every idle socket; 4 KiB was still a third of an idle socket's memory). Chat frames are small; a bigger
/// frame (up to `limits.max_frame_bytes`) is reserved whole once its header is read, then read 1 KiB per call.
pub const READ_BUFFER_BYTES: usize = 1024;
/// Bytes tungstenite collects before it writes to the socket. Every frame we send is flushed at once, so this only
/// caps what the buffer keeps allocated after a burst (its default is 128 KiB).
pub const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Applies the per-socket buffer sizes and frame limits every upgrade shares.
pub fn configure(
    ws: axum::extract::ws::WebSocketUpgrade,
    limits: &LimitSettings,
) -> axum::extract::ws::WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
}

/// The reason sent with a 1009 close (and the error `next_frame` reports for such a frame).
pub const FRAME_TOO_BIG: &str = "frame too big";

/// Where a socket comes from: the client's address (see `client_ip`) and the socket slot it holds for that address.
#[derive(Debug)]
pub struct Peer {
    pub ip: IpAddr,
    _slot: Option<SocketSlot>,
}

impl Peer {
    pub fn new(ip: IpAddr, slot: Option<SocketSlot>) -> Self {
        Self { ip, _slot: slot }
    }
}

/// Ping, pong and write deadlines of one socket.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    pub ping_every: Duration,
    pub pong_timeout: Duration,
    pub write_timeout: Duration,
}

impl Liveness {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            ping_every: Duration::from_secs(limits.ping_secs.max(1)),
            pong_timeout: Duration::from_secs(limits.pong_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(limits.write_timeout_secs.max(1)),
        }
    }

    /// How long after the socket opens its first ping goes out: a random point in the second half of the first
    /// period. Sockets that opened together (a reconnect storm, a deploy) would otherwise ping, and be answered, in
    /// the same instant every period from then on, a burst that delays everything else the server does.
    pub fn first_ping(&self) -> Duration {
        let half = self.ping_every / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

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

    /// The events to send once the log is known to reach `seq` (a nudge from another node; `u64::MAX` after
    /// notifications may have been missed): none if all were sent, else everything after the last one sent.
    pub async fn catch_up(&mut self, store: &Store, conversation_id: &str, seq: u64) -> StoreResult<Vec<Event>> {
        if seq <= self.last_sent {
            return Ok(Vec::new());
        }
        let events = store.events_after(conversation_id, self.last_sent).await?;
        if let Some(last) = events.last() {
            self.last_sent = self.last_sent.max(last.seq);
        }
        Ok(events)
    }
}

/// The writing half of a socket. Every write has a deadline: a peer that stops reading fills its TCP window, the
/// write stalls, and the socket is given up instead of holding its queue for minutes.
///
/// Inside [`serve`] frames are batched: what one wake-up of the socket's task produces (a message's ack and the
/// message's own event, which its post put in this socket's mailbox; several hub messages ready at once) is
/// queued and written with one flush, one `write` and one TCP segment instead of one per frame. Outside it (the
/// hello, the welcome) every frame is flushed at once.
pub struct Sink {
    writer: Writer,
    write_timeout: Duration,
    /// Frames are queued until [`Sink::flush`] (set by [`serve`] while it handles a wake-up).
    batching: bool,
    /// Frames were queued since the last flush.
    queued: bool,
}

type SinkHalf = SplitSink<WebSocket, Message>;

/// Where a socket's writing half is.
enum Writer {
    /// With the socket's task.
    Own(SinkHalf),
    /// Lent while a client frame is handled (see [`handle_watching`]): the reading side empties the slot when the
    /// peer goes away meanwhile.
    Lent(Arc<Mutex<Slot>>),
    /// Let go of: the peer is gone.
    Gone,
}

/// A lent writing half.
#[derive(Default)]
enum Slot {
    Here(SinkHalf),
    /// A write has it.
    #[default]
    Writing,
    /// The peer went away: the half is dropped (after the write that has it, if any).
    Cut,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reading half of a socket (`None` once let go of: the peer went away while a frame was handled).
pub struct Stream(Option<SplitStream<WebSocket>>);

/// The write deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the peer stopped reading (write timed out)")]
struct WriteTimedOut;

/// The socket was let go of (its peer went away).
#[derive(Debug, thiserror::Error)]
#[error("the peer is gone")]
struct PeerGone;

/// One write to a socket's writing half.
enum Write {
    /// Written and flushed at once.
    Send(Message),
    /// Queued for the next flush.
    Feed(Message),
    /// What was queued.
    Flush,
}

/// Does `write` on `half` within `limit`.
async fn timed(half: &mut SinkHalf, limit: Duration, write: Write) -> Result<(), axum::Error> {
    let done = match write {
        Write::Send(msg) => tokio::time::timeout(limit, half.send(msg)).await,
        Write::Feed(msg) => tokio::time::timeout(limit, half.feed(msg)).await,
        Write::Flush => tokio::time::timeout(limit, half.flush()).await,
    };
    done.unwrap_or_else(|_| Err(axum::Error::new(WriteTimedOut)))
}

impl Sink {
    /// Sends a frame: queued while batching (written by the next [`Sink::flush`]), else written at once.
    async fn send(&mut self, msg: Message) -> Result<(), axum::Error> {
        if self.batching {
            self.queued = true;
            return self.write(Write::Feed(msg)).await;
        }
        self.write(Write::Send(msg)).await
    }

    /// Ends batching and writes what was queued.
    async fn flush(&mut self) -> Result<(), axum::Error> {
        self.batching = false;
        if !std::mem::take(&mut self.queued) {
            return Ok(());
        }
        self.write(Write::Flush).await
    }

    /// Does `write` on the writing half, wherever it is (with the task, or lent while a frame is handled).
    async fn write(&mut self, write: Write) -> Result<(), axum::Error> {
        let slot = match &mut self.writer {
            Writer::Own(half) => return timed(half, self.write_timeout, write).await,
            Writer::Gone => return Err(axum::Error::new(PeerGone)),
            Writer::Lent(slot) => Arc::clone(slot),
        };
        // (Taken in a statement of its own: the guard must be gone before the arm below locks again.)
        let taken = std::mem::take(&mut *lock(&slot));
        let mut half = match taken {
            Slot::Here(half) => half,
            _ => {
                *lock(&slot) = Slot::Cut;
                return Err(axum::Error::new(PeerGone));
            }
        };
        let result = timed(&mut half, self.write_timeout, write).await;
        let mut guard = lock(&slot);
        if matches!(*guard, Slot::Writing) {
            *guard = Slot::Here(half);
        }
        result
    }

    /// Lends the writing half to a slot the reading side can empty; `None` if it is not here.
    fn lend(&mut self) -> Option<Arc<Mutex<Slot>>> {
        match std::mem::replace(&mut self.writer, Writer::Gone) {
            Writer::Own(half) => {
                let slot = Arc::new(Mutex::new(Slot::Here(half)));
                self.writer = Writer::Lent(Arc::clone(&slot));
                Some(slot)
            }
            other => {
                self.writer = other;
                None
            }
        }
    }

    /// Takes a lent half back (it is gone if the reading side let go of it).
    fn take_back(&mut self) {
        let Writer::Lent(slot) = std::mem::replace(&mut self.writer, Writer::Gone) else { return };
        let taken = std::mem::replace(&mut *lock(&slot), Slot::Cut);
        if let Slot::Here(half) = taken {
            self.writer = Writer::Own(half);
        }
    }
}

/// Splits an upgraded socket; writes get `limits.write_timeout_secs`.
pub fn split(socket: WebSocket, limits: &LimitSettings) -> (Sink, Stream) {
    let (half, stream) = socket.split();
    let write_timeout = Liveness::new(limits).write_timeout;
    (Sink { writer: Writer::Own(half), write_timeout, batching: false, queued: false }, Stream(Some(stream)))
}

/// What the client sent, as far as the session is concerned.
enum Inbound<T> {
    Frame(T),
    /// A frame we could not read as a client message (bad JSON, unknown type, binary); answered, not fatal.
    Bad(String),
    /// A pong, with its payload: the answer to our ping if it echoes that ping's (see [`Pings`]).
    Pong(axum::body::Bytes),
    /// The socket must close with this code and reason (a frame too big, a broken frame).
    Fatal(u16, &'static str),
    /// The socket ended.
    End,
}

/// The close code and reason for a read error that deserves one; `None` when the peer is simply gone.
fn read_error(err: &axum::Error) -> Option<(u16, &'static str)> {
    match std::error::Error::source(err).and_then(|e| e.downcast_ref::<tungstenite::Error>())? {
        tungstenite::Error::Capacity(_) => Some((close::TOO_BIG, FRAME_TOO_BIG)),
        tungstenite::Error::Utf8(_) => Some((close::INVALID_PAYLOAD, "text frames must be UTF-8")),
        // The peer closed its end without a close frame (a cut, a tab closed): it is gone, not broken.
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some((close::PROTOCOL_ERROR, "broken WebSocket frame")),
        _ => None,
    }
}

/// Reads the next client frame (pings skipped: the socket answers them itself).
async fn read_inbound<T: DeserializeOwned>(stream: &mut Stream) -> Inbound<T> {
    let Some(stream) = stream.0.as_mut() else { return Inbound::End };
    loop {
        return match stream.next().await {
            None | Some(Ok(Message::Close(_))) => Inbound::End,
            Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                Ok(msg) => Inbound::Frame(msg),
                Err(e) => Inbound::Bad(format!("bad frame: {e}")),
            },
            Some(Ok(Message::Binary(_))) => Inbound::Bad("binary frames are not supported".into()),
            Some(Ok(Message::Pong(payload))) => Inbound::Pong(payload),
            Some(Ok(Message::Ping(_))) => continue,
            Some(Err(e)) => read_error(&e).map_or(Inbound::End, |(code, why)| Inbound::Fatal(code, why)),
        };
    }
}

/// Reads the next client frame; `None` when the socket ended. Control frames are skipped; a frame over the size
/// limit is `Err(FRAME_TOO_BIG)`.
async fn next_frame<T: DeserializeOwned>(stream: &mut Stream) -> Option<Result<T, String>> {
    loop {
        match read_inbound(stream).await {
            Inbound::Frame(msg) => return Some(Ok(msg)),
            Inbound::Bad(why) => return Some(Err(why)),
            Inbound::Fatal(_, why) => return Some(Err(why.to_string())),
            Inbound::End => return None,
            Inbound::Pong(_) => {}
        }
    }
}

/// One side's handling of an established socket (visitor or agent).
trait Connection {
    type Client: DeserializeOwned;
    type Server: Serialize;

    /// Counts a client frame (`None`: one that could not be read) against the flood limits; `Err` refuses it with
    /// that reply, and the frame is not handled.
    fn admit(&mut self, msg: Option<&Self::Client>) -> Result<(), Self::Server>;
    /// Answers a client frame; an error ends the connection.
    async fn on_client(&mut self, sink: &mut Sink, msg: Self::Client) -> Result<(), axum::Error>;
    /// Answers client frames that arrived together (all admitted), in order; one by one unless the connection
    /// does better (a visitor's pipelined sends are posted together).
    async fn on_clients(&mut self, sink: &mut Sink, msgs: Vec<Self::Client>) -> Result<(), axum::Error> {
        for msg in msgs {
            // Boxed: a handler's future (store queries and all) lives only while it runs, instead of widening every
            // idle socket's task to the largest handler's size.
            Box::pin(self.on_client(sink, msg)).await?;
        }
        Ok(())
    }
    /// Forwards a hub message; an error ends the connection.
    async fn on_hub(&mut self, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error>;
    /// The frame telling the client its frame could not be read.
    fn bad_frame(&self, why: &str) -> Self::Server;
    /// Resolves when the connection must end for a reason of its own (e.g. the agent's session is gone), with
    /// the close code and reason to send. Never, by default.
    fn ended(&self) -> impl Future<Output = (u16, &'static str)> + Send + 'static {
        std::future::pending()
    }
}

/// Answers a frame that could not be read as a client message: refused by flood control, or explained.
async fn on_bad<C: Connection>(conn: &mut C, sink: &mut Sink, why: &str) -> Result<(), axum::Error> {
    let reply = conn.admit(None).err().unwrap_or_else(|| conn.bad_frame(why));
    send_json(sink, &reply).await
}

/// Client frames one wake-up reads and handles together at most (a client pipelining its sends).
const BATCH_FRAMES: usize = 16;

/// The frame read ahead while the last ones were handled, else the next one from the socket. (Cancel safe: a frame
/// read ahead is taken only by the poll that returns it.)
async fn next_inbound<T: DeserializeOwned>(stream: &mut Stream, ahead: &mut Option<Box<Inbound<T>>>) -> Inbound<T> {
    match ahead.take() {
        Some(inbound) => *inbound,
        None => read_inbound(stream).await,
    }
}

/// Handles the client frame `first` together with the client frames already read behind it (up to
/// [`BATCH_FRAMES`], without waiting for more): each passes flood control in order, and the admitted ones go to the
/// connection together ([`Connection::on_clients`], watched: see [`handle_watching`]; a refusal is answered in its
/// place). Returns what ended the batch when it was not a client frame (a pong, an unreadable frame, the end), for
/// the caller to handle.
async fn on_frames<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    stream: &mut Stream,
    ahead: &mut Option<Box<Inbound<C::Client>>>,
    first: C::Client,
) -> Result<Option<Inbound<C::Client>>, axum::Error> {
    let mut frames = vec![first];
    let mut after = None;
    while frames.len() < BATCH_FRAMES {
        match next_inbound::<C::Client>(stream, ahead).now_or_never() {
            Some(Inbound::Frame(msg)) => frames.push(msg),
            Some(other) => {
                after = Some(other);
                break;
            }
            None => break,
        }
    }
    let mut admitted = Vec::with_capacity(frames.len());
    for msg in frames {
        match conn.admit(Some(&msg)) {
            Ok(()) => admitted.push(msg),
            Err(refusal) => {
                if !admitted.is_empty() {
                    handle_watching(conn, sink, stream, ahead, std::mem::take(&mut admitted)).await?;
                }
                send_json(sink, &refusal).await?;
            }
        }
    }
    if !admitted.is_empty() {
        handle_watching(conn, sink, stream, ahead, admitted).await?;
    }
    Ok(after)
}

/// Handles admitted client frames while still reading the socket. A frame that arrives meanwhile waits in `ahead`
/// for the next turn. If the peer goes away meanwhile (cut while its last message commits, as every socket of a
/// reconnect storm is), both halves of the socket are let go at once, so its descriptor is free for the socket
/// that reconnects, and the frames' work still finishes (the message is stored; its ack has no one to go to).
async fn handle_watching<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    stream: &mut Stream,
    ahead: &mut Option<Box<Inbound<C::Client>>>,
    msgs: Vec<C::Client>,
) -> Result<(), axum::Error> {
    let slot = sink.lend();
    let result = {
        let handling = conn.on_clients(sink, msgs);
        tokio::pin!(handling);
        loop {
            tokio::select! {
                biased;
                result = &mut handling => break result,
                next = read_inbound::<C::Client>(stream), if ahead.is_none() && stream.0.is_some() => match next {
                    Inbound::End => {
                        stream.0 = None;
                        if let Some(slot) = &slot {
                            *lock(slot) = Slot::Cut;
                        }
                    }
                    other => *ahead = Some(Box::new(other)),
                },
            }
        }
    };
    sink.take_back();
    result
}

/// The socket's pings: at most one unanswered at a time, each carrying its number, so only the pong that echoes it
/// counts. An unsolicited pong (RFC 6455 allows them) proves nothing: a peer that never reads could send one every
/// second and otherwise never be found out.
#[derive(Debug, Default)]
struct Pings {
    /// Pings sent so far; the last one's number is its payload.
    sent: u64,
    /// When the unanswered ping went out.
    unanswered: Option<Instant>,
}

impl Pings {
    /// A ping's payload when one should go out now (none while one is unanswered), marked as sent at `now`.
    fn next(&mut self, now: Instant) -> Option<[u8; 8]> {
        if self.unanswered.is_some() {
            return None;
        }
        self.sent += 1;
        self.unanswered = Some(now);
        Some(self.sent.to_be_bytes())
    }

    /// A pong arrived: it answers the unanswered ping if it echoes its payload.
    fn answered(&mut self, payload: &[u8]) {
        if payload == self.sent.to_be_bytes() {
            self.unanswered = None;
        }
    }

    /// When the unanswered ping went out.
    fn unanswered(&self) -> Option<Instant> {
        self.unanswered
    }
}

/// Runs a socket until it ends: client frames, hub messages, pings every `limits.ping_secs`, and shutdown (1001).
///
/// Liveness: a ping unanswered for `limits.pong_timeout_secs` closes the socket (1013), and so does a write that
/// takes longer than `limits.write_timeout_secs` — only a peer that stopped reading is dropped. A busy peer is not:
/// hub messages coalesce per conversation (see `hub`), and neither client frames nor hub output can starve the
/// other (`select!` picks at random among the ready branches). Nor is a peer whose pong waits behind frames it sent
/// before it, while the server works through them more slowly than they come (a stalled disk, an agent replying
/// faster than the outbox commits): when the deadline passes with a frame already waiting, that frame is handled
/// instead, and the deadline is looked at again after it. The pong is read in its turn; a peer that keeps sending
/// but stopped reading is still found, because every frame is answered and that write's deadline ends it.
async fn serve<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    stream: &mut Stream,
    hub_rx: &mut HubReceiver,
    mut shutdown: watch::Receiver<bool>,
    liveness: Liveness,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + liveness.first_ping(), liveness.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pings = Pings::default();
    let ended = conn.ended();
    tokio::pin!(ended);
    // Boxed: an idle socket's task keeps a pointer, not room for the largest client frame.
    let mut ahead: Option<Box<Inbound<C::Client>>> = None;
    loop {
        // What this wake-up sends is written by one flush below (see `Sink`).
        sink.batching = true;
        let unanswered = pings.unanswered();
        let pong_due = async {
            match unanswered {
                Some(sent) => tokio::time::sleep_until(sent + liveness.pong_timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            inbound = next_inbound::<C::Client>(stream, &mut ahead) => {
                // Boxed like the handlers (`Connection::on_clients`): an idle task keeps only the select's size.
                if Box::pin(on_read(conn, sink, stream, &mut ahead, inbound, &mut pings)).await {
                    break;
                }
            },
            hub = hub_rx.recv() => match hub {
                None => {
                    send_close(sink, close::TRY_AGAIN_LATER, "too slow; resume").await;
                    break;
                }
                Some(msg) => {
                    let msg: Arc<HubMsg> = msg;
                    // Boxed like `on_client` (see `Connection::on_clients`).
                    if Box::pin(conn.on_hub(sink, &msg)).await.is_err() {
                        break;
                    }
                }
            },
            _ = ping.tick() => {
                if let Some(payload) = pings.next(Instant::now())
                    && sink.send(Message::Ping(payload.to_vec().into())).await.is_err()
                {
                    break;
                }
            }
            _ = pong_due => {
                // What the peer sent before its pong is read first (cancel safe: see `next_inbound`).
                let waiting = next_inbound::<C::Client>(stream, &mut ahead).now_or_never();
                match waiting {
                    Some(inbound) => {
                        if Box::pin(on_read(conn, sink, stream, &mut ahead, inbound, &mut pings)).await {
                            break;
                        }
                    }
                    None => {
                        send_close(sink, close::TRY_AGAIN_LATER, "no pong; reconnect").await;
                        break;
                    }
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
        if Box::pin(end_wake_up(conn, sink, hub_rx)).await.is_err() {
            break;
        }
    }
}

/// Handles what the client sent: a client frame takes the frames already read behind it along (`on_frames`), and
/// what ended that batch (a pong, an unreadable frame, the end) is handled next. `true` when the socket must end.
async fn on_read<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    stream: &mut Stream,
    ahead: &mut Option<Box<Inbound<C::Client>>>,
    inbound: Inbound<C::Client>,
    pings: &mut Pings,
) -> bool {
    let mut next = Some(inbound);
    while let Some(inbound) = next.take() {
        let result = match inbound {
            Inbound::End => return true,
            Inbound::Pong(payload) => {
                pings.answered(&payload);
                Ok(())
            }
            Inbound::Fatal(code, why) => {
                send_close(sink, code, why).await;
                return true;
            }
            Inbound::Frame(msg) => on_frames(conn, sink, stream, ahead, msg).await.map(|after| next = after),
            Inbound::Bad(why) => on_bad(conn, sink, &why).await,
        };
        if result.is_err() {
            return true;
        }
    }
    false
}

/// Ends a wake-up: the hub messages already waiting, then one flush of everything it queued.
async fn end_wake_up<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    hub_rx: &mut HubReceiver,
) -> Result<(), axum::Error> {
    batch_ready(conn, sink, hub_rx).await?;
    sink.flush().await
}

/// Hub messages already waiting that one wake-up handles before its frames are written (bounds the batch).
const BATCH_HUB_MESSAGES: usize = 32;

/// Handles the hub messages that are already waiting (up to [`BATCH_HUB_MESSAGES`]), so their frames go out with
/// the wake-up's own: after a post, the message's event is in the poster's mailbox before its ack is sent.
async fn batch_ready<C: Connection>(
    conn: &mut C,
    sink: &mut Sink,
    hub_rx: &mut HubReceiver,
) -> Result<(), axum::Error> {
    for _ in 0..BATCH_HUB_MESSAGES {
        // A closed mailbox is left to the next `recv` (which closes the socket).
        let Ok(Some(msg)) = hub_rx.try_recv() else { break };
        Box::pin(conn.on_hub(sink, &msg)).await?;
    }
    Ok(())
}

/// Sends one JSON frame.
async fn send_json<T: Serialize>(sink: &mut Sink, msg: &T) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).map_err(axum::Error::new)?;
    sink.send(Message::Text(text.into())).await
}

/// Sends a close frame, after anything queued (errors ignored: the peer may already be gone).
async fn send_close(sink: &mut Sink, code: u16, reason: &str) {
    sink.batching = false;
    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pings_spread_over_the_second_half_of_the_period() {
        let secs = Duration::from_secs;
        let liveness = Liveness { ping_every: secs(20), pong_timeout: secs(10), write_timeout: secs(10) };
        let firsts: Vec<Duration> = (0..500).map(|_| liveness.first_ping()).collect();
        assert!(firsts.iter().all(|d| (secs(10)..=secs(20)).contains(d)), "within the second half: {firsts:?}");
        let (min, max) = (firsts.iter().min().expect("some"), firsts.iter().max().expect("some"));
        // 500 uniform draws over 10 s span less than 8 s with a chance of about 1e-45.
        assert!(*max - *min > secs(8), "spread from {min:?} to {max:?} only");
    }

    #[test]
    fn one_ping_is_out_at_a_time_and_only_the_pong_echoing_it_answers_it() {
        let mut pings = Pings::default();
        let t0 = Instant::now();
        let first = pings.next(t0).expect("a first ping");
        assert_eq!(pings.next(t0 + Duration::from_secs(1)), None, "no second ping while the first is unanswered");
        // An unsolicited pong, or one echoing something else, leaves the ping unanswered since it went out.
        pings.answered(b"");
        pings.answered(&0u64.to_be_bytes());
        assert_eq!(pings.unanswered(), Some(t0));
        pings.answered(&first);
        assert_eq!(pings.unanswered(), None);
        let second = pings.next(t0 + Duration::from_secs(2)).expect("the next ping");
        assert_ne!(first, second);
        // The first ping's pong, arriving late, does not answer the second.
        pings.answered(&first);
        assert_eq!(pings.unanswered(), Some(t0 + Duration::from_secs(2)));
    }
}
