//! The visitor WebSocket: one socket at a time, JSON text frames in and out, reconnect with exponential backoff and
//! full jitter, and a heartbeat (`Ping` every 25 s; a socket silent for 60 s is replaced).
//!
//! It knows nothing about the conversation: it reports `Open`, each parsed `ServerMsg` and `Down` to its owner
//! (`session.rs`), which speaks the protocol. Callbacks of a replaced socket are detached before it is dropped, and
//! a generation counter ignores anything a stale socket still delivers. No borrow is held while calling the owner.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use leptos::prelude::{TimeoutHandle, set_interval_with_handle, set_timeout_with_handle};
use protocol::widget::{ClientMsg, ServerMsg};
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, WebSocket};

use crate::backoff;
use crate::js::{now_ms, random_u32, warn};

pub enum ConnEvent {
    /// The socket is open; the owner must send `Hello` now.
    Open,
    Frame(ServerMsg),
    /// The socket closed or failed; a reconnect is already scheduled.
    Down,
}

#[derive(Clone)]
pub struct Connection(Rc<Inner>);

struct Inner {
    url: String,
    on_event: Box<dyn Fn(ConnEvent)>,
    st: RefCell<St>,
}

#[derive(Default)]
struct St {
    sock: Option<Socket>,
    open: bool,
    generation: u32,
    attempt: u32,
    retry: Option<TimeoutHandle>,
    last_rx: i64,
    last_ping: i64,
}

struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

impl Connection {
    pub fn new(url: String, on_event: Box<dyn Fn(ConnEvent)>) -> Self {
        Self(Rc::new(Inner { url, on_event, st: RefCell::new(St::default()) }))
    }

    /// Opens the first socket and starts the heartbeat. Call once.
    pub fn start(&self) {
        connect(&self.0);
        let weak = Rc::downgrade(&self.0);
        let _ = set_interval_with_handle(
            move || {
                if let Some(inner) = weak.upgrade() {
                    heartbeat(&inner);
                }
            },
            Duration::from_millis(5_000),
        );
    }

    /// Sends a frame if the socket is open; returns whether it was handed to the browser.
    pub fn send(&self, msg: &ClientMsg) -> bool {
        let st = self.0.st.borrow();
        match (&st.sock, st.open) {
            (Some(s), true) => serde_json::to_string(msg).ok().is_some_and(|text| s.ws.send_with_str(&text).is_ok()),
            _ => false,
        }
    }

    /// The network may be back (online, tab visible): if no socket exists, connect now instead of waiting.
    pub fn kick(&self) {
        if self.0.st.borrow().sock.is_none() {
            connect(&self.0);
        }
    }

    /// Drops the current socket (without reporting `Down`) and reconnects, now or after the backoff delay.
    pub fn restart(&self, immediately: bool) {
        let old = {
            let mut st = self.0.st.borrow_mut();
            st.open = false;
            st.generation = st.generation.wrapping_add(1);
            st.sock.take()
        };
        drop(old);
        if immediately {
            connect(&self.0);
        } else {
            schedule(&self.0);
        }
    }

    /// The server accepted us: the next failure starts the backoff from the beginning again.
    pub fn welcomed(&self) {
        self.0.st.borrow_mut().attempt = 0;
    }
}

fn connect(inner: &Rc<Inner>) {
    let (old, generation) = {
        let mut st = inner.st.borrow_mut();
        if let Some(h) = st.retry.take() {
            h.clear();
        }
        st.open = false;
        st.generation = st.generation.wrapping_add(1);
        st.last_rx = now_ms();
        (st.sock.take(), st.generation)
    };
    drop(old);
    match Socket::open(&inner.url, Rc::downgrade(inner), generation) {
        Ok(sock) => inner.st.borrow_mut().sock = Some(sock),
        Err(_) => {
            warn("parley: cannot open the chat socket");
            schedule(inner);
            (inner.on_event)(ConnEvent::Down);
        }
    }
}

fn schedule(inner: &Rc<Inner>) {
    let mut st = inner.st.borrow_mut();
    if let Some(h) = st.retry.take() {
        h.clear();
    }
    let delay = backoff::delay_ms(st.attempt, random_u32());
    st.attempt = st.attempt.saturating_add(1);
    let weak = Rc::downgrade(inner);
    st.retry = set_timeout_with_handle(
        move || {
            if let Some(inner) = weak.upgrade() {
                inner.st.borrow_mut().retry = None;
                connect(&inner);
            }
        },
        Duration::from_millis(delay.into()),
    )
    .ok();
}

fn heartbeat(inner: &Rc<Inner>) {
    let now = now_ms();
    let (stale, ping) = {
        let st = inner.st.borrow();
        match st.sock {
            Some(_) => {
                (now - st.last_rx > backoff::STALE_AFTER_MS, st.open && now - st.last_ping >= backoff::PING_EVERY_MS)
            }
            None => (false, false),
        }
    };
    let conn = Connection(inner.clone());
    if stale {
        conn.restart(false);
        (inner.on_event)(ConnEvent::Down);
    } else if ping && conn.send(&ClientMsg::Ping) {
        inner.st.borrow_mut().last_ping = now;
    }
}

impl Inner {
    fn is_current(&self, generation: u32) -> bool {
        self.st.borrow().generation == generation
    }
}

impl Socket {
    fn open(url: &str, weak: Weak<Inner>, generation: u32) -> Result<Self, JsValue> {
        let ws = WebSocket::new(url)?;

        let w = weak.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            let Some(inner) = w.upgrade().filter(|i| i.is_current(generation)) else {
                return;
            };
            {
                let mut st = inner.st.borrow_mut();
                st.open = true;
                st.last_rx = now_ms();
                st.last_ping = st.last_rx;
            }
            (inner.on_event)(ConnEvent::Open);
        });

        let w = weak.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(inner) = w.upgrade().filter(|i| i.is_current(generation)) else {
                return;
            };
            inner.st.borrow_mut().last_rx = now_ms();
            let Some(text) = ev.data().as_string() else {
                return;
            };
            match crate::wire::decode_server_msg(&text) {
                Some(msg) => (inner.on_event)(ConnEvent::Frame(msg)),
                None => warn("parley: ignored an unreadable frame"),
            }
        });

        let w = weak;
        let on_close = Closure::<dyn FnMut()>::new(move || {
            let Some(inner) = w.upgrade().filter(|i| i.is_current(generation)) else {
                return;
            };
            let old = {
                let mut st = inner.st.borrow_mut();
                st.open = false;
                st.sock.take()
            };
            // Dropping the socket detaches this very closure; wasm-bindgen defers freeing it until it returns.
            drop(old);
            schedule(&inner);
            (inner.on_event)(ConnEvent::Down);
        });

        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Self { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close })
    }
}
