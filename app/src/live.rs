//! The live side of the console: a reactive store wrapping [`ConsoleState`] and, in the browser, the WebSocket to
//! `/ws/agent` that keeps it current.
//!
//! [`Live`] is provided as context by the signed-in layout. Components read its signals and call its intent methods
//! (`reply`, `open`, `set_status`, …); those update the pure state and put the resulting frames on the socket. The
//! socket reconnects with exponential backoff plus jitter (and at once on `online` or when the tab becomes visible),
//! sends a `Ping` every 25 s and drops a connection that has been silent for a minute. What to re-send after a
//! reconnect is decided by [`ConsoleState::on_connected`], not here. During server rendering the store exists but
//! has no socket, and every intent is a no-op on the wire.

use leptos::prelude::*;
use protocol::ConversationStatus;
use protocol::console::ClientMsg;

use crate::api::{ConversationSnapshot, InboxSnapshot};
use crate::state::ConsoleState;

/// How the socket is doing, for the banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// First connection attempt (nothing to report yet).
    Connecting,
    Online,
    /// The connection dropped or could not be made; retrying.
    Reconnecting,
}

/// The console's reactive store. `Copy`: all fields are arena handles.
#[derive(Clone, Copy)]
pub struct Live {
    pub state: RwSignal<ConsoleState>,
    pub conn: RwSignal<ConnState>,
    /// Current time in epoch ms; ticks in the browser, fixed to the server's clock while rendering and hydrating.
    pub now: RwSignal<i64>,
    /// Whether times should use the browser's time zone (only after hydration, so the first client render
    /// matches the server's UTC rendering).
    pub local_tz: RwSignal<bool>,
    /// Whether the page is visible (reads are only reported for what the agent can see).
    pub visible: RwSignal<bool>,
    #[cfg(feature = "hydrate")]
    link: StoredValue<Option<std::rc::Rc<std::cell::RefCell<socket::Link>>>, LocalStorage>,
}

impl Live {
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(ConsoleState::default()),
            conn: RwSignal::new(ConnState::Connecting),
            now: RwSignal::new(0),
            local_tz: RwSignal::new(false),
            visible: RwSignal::new(true),
            #[cfg(feature = "hydrate")]
            link: StoredValue::new_local(None),
        }
    }

    /// Takes the server-rendered inbox (ignored for the list if the socket already delivered a newer one).
    pub fn seed_inbox(&self, snap: InboxSnapshot) {
        if self.now.get_untracked() == 0 {
            self.now.set(snap.now);
        }
        self.state.update(|s| s.seed_inbox(snap.agent, snap.conversations));
    }

    /// Takes a server-rendered conversation; events already applied are skipped.
    pub fn seed_conversation(&self, snap: ConversationSnapshot) {
        let out = self.state.try_update(|s| s.seed_conversation(snap.summary, snap.events)).unwrap_or_default();
        self.send_all(out);
    }

    /// The UTC offset (minutes) to show a time in: the browser's once hydrated, UTC before.
    pub fn offset_at(&self, ms: i64) -> i32 {
        if self.local_tz.get() { browser_offset(ms) } else { 0 }
    }

    pub fn open(&self, conversation_id: &str) {
        let out = self.state.try_update(|s| s.open(conversation_id)).unwrap_or_default();
        self.send_all(out);
    }

    pub fn leave(&self, conversation_id: &str) {
        let out = self
            .state
            .try_update(|s| if s.current.as_deref() == Some(conversation_id) { s.close() } else { Vec::new() })
            .unwrap_or_default();
        self.send_all(out);
    }

    /// Writes a reply; it shows at once as "Sending…" and is delivered as soon as the socket is up.
    pub fn reply(&self, conversation_id: &str, body: &str) -> Result<(), &'static str> {
        let client_id = new_client_id();
        let now = self.now.get_untracked();
        let msg = self
            .state
            .try_update(|s| s.compose(conversation_id, client_id, body, now))
            .unwrap_or(Err("the console was closed"))?;
        self.send(msg);
        Ok(())
    }

    pub fn retry(&self, client_id: &str) {
        if let Some(msg) = self.state.try_update(|s| s.retry(client_id)).flatten() {
            self.send(msg);
        }
    }

    pub fn set_status(&self, conversation_id: &str, status: ConversationStatus) {
        if let Some(msg) = self.state.try_update(|s| s.set_status(conversation_id, status)) {
            self.send(msg);
        }
    }

    pub fn typing(&self, conversation_id: &str, typing: bool) {
        self.send(ClientMsg::Typing { conversation_id: conversation_id.to_owned(), typing });
    }

    /// Reports new visitor messages of the shown conversation as read (no-op if nothing new or tab hidden).
    pub fn mark_read(&self, conversation_id: &str) {
        if !self.visible.get_untracked() || self.conn.get_untracked() != ConnState::Online {
            return;
        }
        // Check before writing: callers track the state, and a write that changes nothing would still wake them.
        if self.state.try_with_untracked(|s| s.read_pending(conversation_id)).flatten().is_none() {
            return;
        }
        if let Some(msg) = self.state.try_update(|s| s.read_due(conversation_id)).flatten() {
            self.send(msg);
        }
    }

    fn send_all(&self, msgs: Vec<ClientMsg>) {
        for msg in msgs {
            self.send(msg);
        }
    }

    /// Puts a frame on the socket if it is open. Frames sent while it is down are not queued: replies live in the
    /// outbox and the current conversation is re-opened on reconnect, which covers everything that matters.
    #[cfg(feature = "hydrate")]
    fn send(&self, msg: ClientMsg) {
        if let Some(Some(link)) = self.link.try_get_value() {
            link.borrow().send(&msg);
        }
    }

    #[cfg(not(feature = "hydrate"))]
    fn send(&self, _msg: ClientMsg) {}

    /// Connects the socket and starts the clock (browser only; idempotent).
    #[cfg(feature = "hydrate")]
    pub fn start(&self) {
        if self.link.with_value(|l| l.is_some()) {
            return;
        }
        self.local_tz.set(true);
        self.now.set(js_sys::Date::now() as i64);
        self.visible.set(!document().hidden());
        let link = socket::Link::start(*self);
        self.link.set_value(Some(link));
    }

    /// Closes the socket and stops every timer and listener.
    #[cfg(feature = "hydrate")]
    pub fn stop(&self) {
        if let Some(Some(link)) = self.link.try_get_value() {
            socket::Link::stop(&link);
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

/// The store provided by the signed-in layout.
pub fn use_live() -> Live {
    expect_context::<Live>()
}

#[cfg(feature = "hydrate")]
fn browser_offset(ms: i64) -> i32 {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    -(date.get_timezone_offset() as i32)
}

#[cfg(not(feature = "hydrate"))]
fn browser_offset(_ms: i64) -> i32 {
    0
}

/// A fresh client id for a reply: `crypto.randomUUID()` where available (secure contexts), else a v4 UUID built
/// from `crypto.getRandomValues()`.
#[cfg(feature = "hydrate")]
fn new_client_id() -> String {
    let Ok(crypto) = window().crypto() else {
        return fallback_id();
    };
    let has_uuid = js_sys::Reflect::get(&crypto, &"randomUUID".into()).is_ok_and(|f| f.is_function());
    if has_uuid {
        return crypto.random_uuid();
    }
    let mut bytes = [0u8; 16];
    if crypto.get_random_values_with_u8_array(&mut bytes).is_err() {
        return fallback_id();
    }
    uuid_v4(bytes)
}

#[cfg(feature = "hydrate")]
fn fallback_id() -> String {
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        *b = (js_sys::Math::random() * 256.0) as u8;
    }
    uuid_v4(bytes)
}

#[cfg(not(feature = "hydrate"))]
fn new_client_id() -> String {
    String::from("server-render")
}

/// Formats 16 random bytes as an RFC 4122 version 4 UUID.
#[cfg_attr(not(any(feature = "hydrate", test)), allow(dead_code))]
fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(feature = "hydrate")]
mod socket {
    //! The browser WebSocket and its timers. Single-threaded: shared through `Rc<RefCell<_>>`.

    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use leptos::prelude::*;
    use protocol::console::{ClientMsg, ServerMsg};
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use web_sys::{CloseEvent, MessageEvent, WebSocket};

    use super::{ConnState, Live};

    const HEARTBEAT: Duration = Duration::from_secs(25);
    /// A connection that delivered nothing (not even a `Pong`) for this long is presumed dead.
    const SILENCE_LIMIT_MS: f64 = 60_000.0;
    const BACKOFF_BASE_MS: f64 = 500.0;
    /// Close code of a socket whose session ended (the server's `ws::agent::SIGNED_OUT`).
    const SIGNED_OUT: u16 = 4401;
    const BACKOFF_MAX_MS: f64 = 30_000.0;
    /// How long a visitor's "typing" lasts without a refresh.
    const TYPING_TTL: Duration = Duration::from_secs(8);

    type Handler = Closure<dyn FnMut(JsValue)>;

    pub struct Link {
        live: Live,
        ws: Option<WebSocket>,
        /// Handlers of the current socket; kept alive as long as it can call them.
        handlers: Vec<Handler>,
        /// Handlers of a closed socket: dropped on the next connect, never from inside one of them.
        retired: Vec<Handler>,
        attempt: u32,
        retry: Option<TimeoutHandle>,
        heartbeat: Option<IntervalHandle>,
        clock: Option<IntervalHandle>,
        listeners: Vec<WindowListenerHandle>,
        visibility: Option<Closure<dyn FnMut()>>,
        last_rx: f64,
        stopped: bool,
    }

    impl Link {
        pub fn start(live: Live) -> Rc<RefCell<Link>> {
            let link = Rc::new(RefCell::new(Link {
                live,
                ws: None,
                handlers: Vec::new(),
                retired: Vec::new(),
                attempt: 0,
                retry: None,
                heartbeat: None,
                clock: None,
                listeners: Vec::new(),
                visibility: None,
                last_rx: 0.0,
                stopped: false,
            }));

            let weak = Rc::downgrade(&link);
            let heartbeat = set_interval_with_handle(
                move || {
                    if let Some(link) = weak.upgrade() {
                        heartbeat_tick(&link);
                    }
                },
                HEARTBEAT,
            )
            .ok();
            let clock = set_interval_with_handle(
                move || {
                    live.now.try_set(js_sys::Date::now() as i64);
                },
                Duration::from_secs(15),
            )
            .ok();

            let weak = Rc::downgrade(&link);
            let online = window_event_listener(leptos::ev::online, move |_| {
                if let Some(link) = weak.upgrade() {
                    reconnect_now(&link);
                }
            });
            let weak = Rc::downgrade(&link);
            let visibility = Closure::<dyn FnMut()>::new(move || {
                let visible = !document().hidden();
                live.visible.try_set(visible);
                if visible {
                    live.now.try_set(js_sys::Date::now() as i64);
                    if let Some(link) = weak.upgrade() {
                        reconnect_now(&link);
                    }
                }
            });
            let _ =
                document().add_event_listener_with_callback("visibilitychange", visibility.as_ref().unchecked_ref());

            {
                let mut l = link.borrow_mut();
                l.heartbeat = heartbeat;
                l.clock = clock;
                l.listeners.push(online);
                l.visibility = Some(visibility);
            }
            connect(&link);
            link
        }

        pub fn stop(link: &Rc<RefCell<Link>>) {
            let mut l = link.borrow_mut();
            l.stopped = true;
            if let Some(t) = l.retry.take() {
                t.clear();
            }
            if let Some(t) = l.heartbeat.take() {
                t.clear();
            }
            if let Some(t) = l.clock.take() {
                t.clear();
            }
            for h in l.listeners.drain(..) {
                h.remove();
            }
            if let Some(v) = l.visibility.take() {
                let _ = document().remove_event_listener_with_callback("visibilitychange", v.as_ref().unchecked_ref());
            }
            if let Some(ws) = l.ws.take() {
                detach(&ws);
                let _ = ws.close();
            }
            let handlers = std::mem::take(&mut l.handlers);
            l.retired.extend(handlers);
        }

        pub fn send(&self, msg: &ClientMsg) {
            let Some(ws) = &self.ws else { return };
            if ws.ready_state() != WebSocket::OPEN {
                return;
            }
            if let Ok(text) = serde_json::to_string(msg) {
                let _ = ws.send_with_str(&text);
            }
        }
    }

    fn socket_url() -> Option<String> {
        let location = window().location();
        let scheme = if location.protocol().ok()? == "https:" { "wss" } else { "ws" };
        Some(format!("{scheme}://{}/ws/agent", location.host().ok()?))
    }

    fn detach(ws: &WebSocket) {
        ws.set_onopen(None);
        ws.set_onmessage(None);
        ws.set_onclose(None);
        ws.set_onerror(None);
    }

    fn connect(link: &Rc<RefCell<Link>>) {
        let mut l = link.borrow_mut();
        if l.stopped || l.ws.is_some() {
            return;
        }
        l.retired.clear();
        if let Some(t) = l.retry.take() {
            t.clear();
        }
        let Some(ws) = socket_url().and_then(|url| WebSocket::new(&url).ok()) else {
            drop(l);
            schedule_retry(link);
            return;
        };

        let weak = Rc::downgrade(link);
        let on_open = Handler::new(move |_| {
            if let Some(link) = weak.upgrade() {
                on_open(&link);
            }
        });
        let weak = Rc::downgrade(link);
        let on_message = Handler::new(move |ev: JsValue| {
            let Some(link) = weak.upgrade() else { return };
            let Some(text) = ev.dyn_ref::<MessageEvent>().and_then(|m| m.data().as_string()) else {
                return;
            };
            on_frame(&link, &text);
        });
        let weak = Rc::downgrade(link);
        let on_close = Handler::new(move |ev: JsValue| {
            let code = ev.dyn_ref::<CloseEvent>().map(CloseEvent::code);
            if let Some(link) = weak.upgrade() {
                on_close(&link, code);
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        // An error is always followed by a close; the close handler does the work.
        l.handlers = vec![on_open, on_message, on_close];
        l.ws = Some(ws);
    }

    fn on_open(link: &Rc<RefCell<Link>>) {
        let live = {
            let mut l = link.borrow_mut();
            l.last_rx = js_sys::Date::now();
            l.live
        };
        live.conn.try_set(ConnState::Online);
        live.now.try_set(js_sys::Date::now() as i64);
        let out = live.state.try_update(|s| s.on_connected()).unwrap_or_default();
        let l = link.borrow();
        for msg in &out {
            l.send(msg);
        }
    }

    fn on_frame(link: &Rc<RefCell<Link>>, text: &str) {
        let live = {
            let mut l = link.borrow_mut();
            l.last_rx = js_sys::Date::now();
            l.live
        };
        // Frames this console does not understand are skipped, not fatal. Read by hand, not with serde's derive
        // (see `protocol::decode`: the derive was the largest part of the console's Wasm).
        let Some(msg) = protocol::decode::console_server_msg(text) else {
            return;
        };
        if matches!(msg, ServerMsg::Inbox { .. }) {
            // A full handshake: the connection is healthy, so the backoff starts over.
            link.borrow_mut().attempt = 0;
        }
        let typing_in = match &msg {
            ServerMsg::Typing { conversation_id, typing: true } => Some(conversation_id.clone()),
            _ => None,
        };
        let Some(out) = live.state.try_update(|s| s.apply(msg)) else {
            return;
        };
        {
            let l = link.borrow();
            for msg in &out {
                l.send(msg);
            }
        }
        if let Some(id) = typing_in {
            expire_typing_later(live, id);
        }
        if live.state.with_untracked(|s| s.signed_out) {
            sign_out(link);
        }
    }

    fn on_close(link: &Rc<RefCell<Link>>, code: Option<u16>) {
        let (live, was_attempt) = {
            let mut l = link.borrow_mut();
            if let Some(ws) = l.ws.take() {
                detach(&ws);
            }
            let handlers = std::mem::take(&mut l.handlers);
            l.retired.extend(handlers);
            if l.stopped {
                return;
            }
            (l.live, l.attempt)
        };
        // The server closed the socket because this session ended (sign-out elsewhere, password changed).
        if code == Some(SIGNED_OUT) {
            sign_out(link);
            return;
        }
        live.conn.try_set(ConnState::Reconnecting);
        schedule_retry(link);
        // Repeated failures may mean the session is gone (the upgrade is refused before any frame): ask.
        if was_attempt >= 2 {
            let weak = Rc::downgrade(link);
            leptos::task::spawn_local(async move {
                if let Ok(None) = crate::api::current_agent().await
                    && let Some(link) = weak.upgrade()
                {
                    sign_out(&link);
                }
            });
        }
    }

    fn schedule_retry(link: &Rc<RefCell<Link>>) {
        let mut l = link.borrow_mut();
        if l.stopped || l.retry.is_some() {
            return;
        }
        let exp = BACKOFF_BASE_MS * f64::from(1u32 << l.attempt.min(10));
        let capped = exp.min(BACKOFF_MAX_MS);
        // "Equal jitter": half fixed, half random, so a server restart is not met by every console at once.
        let delay = capped / 2.0 + js_sys::Math::random() * capped / 2.0;
        l.attempt = l.attempt.saturating_add(1);
        let weak = Rc::downgrade(link);
        l.retry = set_timeout_with_handle(
            move || {
                if let Some(link) = weak.upgrade() {
                    link.borrow_mut().retry = None;
                    connect(&link);
                }
            },
            Duration::from_millis(delay as u64),
        )
        .ok();
    }

    /// Back online or visible again: don't wait out the backoff.
    fn reconnect_now(link: &Rc<RefCell<Link>>) {
        let idle = {
            let mut l = link.borrow_mut();
            let idle = l.ws.is_none() && !l.stopped;
            if idle && let Some(t) = l.retry.take() {
                t.clear();
            }
            idle
        };
        if idle {
            connect(link);
        }
    }

    fn heartbeat_tick(link: &Rc<RefCell<Link>>) {
        let l = link.borrow();
        let Some(ws) = &l.ws else { return };
        if ws.ready_state() != WebSocket::OPEN {
            return;
        }
        if js_sys::Date::now() - l.last_rx > SILENCE_LIMIT_MS {
            // Half-open connection: closing fires `onclose`, which reconnects.
            let _ = ws.close();
            return;
        }
        l.send(&ClientMsg::Ping);
    }

    fn expire_typing_later(live: Live, conversation_id: String) {
        let Some(generation) = live.state.with_untracked(|s| s.typing_generation(&conversation_id)) else {
            return;
        };
        let _ = set_timeout_with_handle(
            move || {
                live.state.try_update(|s| s.expire_typing(&conversation_id, generation));
            },
            TYPING_TTL,
        );
    }

    /// The session is gone: leave for the login page (a full load, so no state of this session survives).
    fn sign_out(link: &Rc<RefCell<Link>>) {
        Link::stop(link);
        let _ = window().location().set_href("/console/login");
    }
}

#[cfg(test)]
mod tests {
    use super::uuid_v4;

    #[test]
    fn uuid_v4_sets_version_and_variant_and_passes_client_id_validation() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(protocol::validate_client_id(&id).is_ok());
    }
}
