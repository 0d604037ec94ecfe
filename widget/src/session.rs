//! The controller of the chat frame: speaks the visitor protocol over the [`Connection`], keeps [`Chat`] and the
//! other UI signals up to date, persists the outbox (and the token, where the visitor cookie does not stick), and
//! reports to the host page through [`Host`]. Before the first socket it sets up the visitor cookie ([`identity`]).
//!
//! Rules it enforces: `Hello` (token + last applied seq) first on every socket; after `Welcome`, every unacked
//! message is re-sent with its same client id, in order; a gap in live events resumes instead of applying out of
//! order; `Read` is sent only while the panel is open and the document visible. The host page's signed identity
//! (`init`/`identify`) goes into every `hello`; when it changes after the start, the chat starts over on the new
//! identity's history (and outbox), so nothing of one person shows under another. No `RefCell` borrow is held across
//! a call into the connection, the host or a signal. Before the first write on a socket of a visitor without a
//! conversation yet, the frame checks that the socket speaks for the token the cookie jar holds (`welcome`'s `sid`
//! against the session call's, see `identity.rs`) and reconnects first when it does not; what waits stays in the
//! outbox and goes out, once, on the right socket.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use leptos::prelude::*;
use protocol::widget::{ClientMsg, Identity, ServerMsg, VisitorContext};
use protocol::{ErrorCode, PROTOCOL_VERSION};
use wasm_bindgen::prelude::*;
use web_sys::VisibilityState;

use crate::boot::{self, BootConfig};
use crate::components::panel::Panel;
use crate::connection::{ConnEvent, Connection};
use crate::election::Election;
use crate::host::{Host, HostMsg};
use crate::identity;
use crate::js::{new_client_id, now_ms, warn};
use crate::state::{Applied, Chat};
use crate::storage::Store;
use crate::typing::{self, Throttle};

/// How long to wait for the loader's `init` (page URL, referrer) before connecting without it.
const INIT_WAIT_MS: u64 = 1_500;
/// What a tab tells its siblings after the server minted a token for it.
const SIBLING_MINTED: &str = "minted";
/// How many times one page reconnects because its socket spoke for another token than the cookie jar (a bound in
/// case a browser sends the cookie on `fetch` but not on the socket upgrade).
const MAX_JAR_SWITCHES: u8 = 3;
/// Retry delay for sends the server refused with a retryable error.
const RESEND_AFTER_MS: u64 = 3_000;

/// State of the link to the server, as shown to the visitor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Online,
    Reconnecting,
}

/// The reactive state the components render. `Copy`, so views can capture it freely.
#[derive(Clone, Copy)]
pub struct Ui {
    pub chat: RwSignal<Chat>,
    pub link: RwSignal<Link>,
    /// Name of the agent currently typing.
    pub agent_typing: RwSignal<Option<String>>,
    /// Whether the panel is shown on the host page.
    pub open: RwSignal<bool>,
    /// Bumped whenever the composer should take focus.
    pub focus_request: RwSignal<u32>,
    /// The current "Continue on Messenger" link and fallback code (asked for on the visitor's click only).
    pub messenger_offer: RwSignal<Option<MessengerOffer>>,
    /// The browser blocked the window "Continue on Messenger" opened: the link is shown as a plain anchor.
    pub messenger_blocked: RwSignal<bool>,
}

/// A signed link that continues the conversation on Messenger, and the code to send there instead.
#[derive(Clone, PartialEq, Eq)]
pub struct MessengerOffer {
    pub url: String,
    pub code: String,
    pub expires_at: i64,
}

/// Links are asked for again this long before they expire.
const LINK_REFRESH_MARGIN_MS: i64 = 120_000;
/// The name of the window "Continue on Messenger" opens (a second click reuses it).
const MESSENGER_WINDOW: &str = "parley-messenger";

pub struct Session {
    pub ui: Ui,
    pub cfg: BootConfig,
    store: Store,
    host: Option<Host>,
    conn: Connection,
    st: RefCell<St>,
    /// Handle to itself, for timers and listeners that must not keep the session alive.
    me: Weak<Session>,
}

#[derive(Default)]
struct St {
    token: Option<String>,
    context: VisitorContext,
    /// The host page's signed identity of its logged-in customer, sent in `hello`.
    identity: Option<Identity>,
    started: bool,
    welcomed: bool,
    ever_welcomed: bool,
    typing: Throttle,
    typing_idle: Option<TimeoutHandle>,
    agent_typing_ttl: Option<TimeoutHandle>,
    resend: Option<TimeoutHandle>,
    posted_unread: Option<u32>,
    /// The server handed us a token: the visitor cookie did not come back on the socket.
    cookie_missing: bool,
    /// Storage access was asked for already (once per page).
    access_asked: bool,
    /// The socket was started (after the session call).
    connecting: bool,
    /// Where sibling tabs of this host site say they minted a token (`identity.rs`).
    siblings: Option<web_sys::BroadcastChannel>,
    /// Which sibling tab mints the session when several open at once (`election.rs`).
    election: Option<Rc<Election>>,
    /// The fingerprint of the token the current socket speaks for (from `welcome`).
    sid: String,
    /// Welcomes so far: tells a jar check which socket it was made for.
    welcomes: u32,
    /// The current socket may write: it speaks for the cookie jar's token, or there is nothing to compare.
    jar_checked: bool,
    /// A jar check is under way.
    jar_checking: bool,
    /// Reconnects because the socket's token was not the jar's (at most [`MAX_JAR_SWITCHES`]).
    jar_switches: u8,
    /// The session call, if the socket opened before its answer came (the jar check waits for it).
    session_call: Option<js_sys::Promise>,
    /// The visitor asked to continue on Messenger: only then is a link asked for (it creates the contact), and kept
    /// fresh.
    messenger_asked: bool,
    /// The blank window the visitor's click opened, waiting for the link.
    messenger_window: Option<web_sys::Window>,
}

/// Builds the session, mounts the panel into `<body>` and starts talking to the host page and the server.
pub fn mount(cfg: BootConfig) {
    let session = Session::new(cfg);
    let for_view = session.clone();
    leptos::mount::mount_to_body(move || view! { <Panel session=for_view/> });
    session.after_mount();
}

impl Session {
    fn new(cfg: BootConfig) -> Rc<Self> {
        let location = window().location();
        let url = boot::ws_absolute(
            &location.protocol().unwrap_or_default(),
            &location.host().unwrap_or_default(),
            &cfg.ws_url,
        );
        let store = Store::new(&cfg.site_key);
        let host = Host::detect(&cfg);
        // The outbox is restored in `start`, once the host page said who the visitor is.
        let ui = Ui {
            chat: RwSignal::new(Chat::default()),
            link: RwSignal::new(Link::Connecting),
            agent_typing: RwSignal::new(None),
            // Opened directly (not embedded), the page is the panel.
            open: RwSignal::new(host.is_none()),
            focus_request: RwSignal::new(0),
            messenger_offer: RwSignal::new(None),
            messenger_blocked: RwSignal::new(false),
        };
        let st = St { token: store.token(), context: local_context(), ..St::default() };
        Rc::new_cyclic(|weak: &Weak<Session>| {
            let w = weak.clone();
            let conn = Connection::new(
                url,
                Box::new(move |ev| {
                    if let Some(s) = w.upgrade() {
                        s.on_conn(ev);
                    }
                }),
            );
            Session { ui, cfg, store, host, conn, st: RefCell::new(st), me: weak.clone() }
        })
    }

    /// Whether the frame is embedded by an allowed host page (and so has a close button).
    pub fn is_embedded(&self) -> bool {
        self.host.is_some()
    }

    fn after_mount(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let w = weak.clone();
        let _ = window_event_listener_untyped("online", move |_| {
            if let Some(s) = w.upgrade() {
                s.conn.kick();
            }
        });
        let w = weak.clone();
        let on_visibility = Closure::<dyn FnMut()>::new(move || {
            if let Some(s) = w.upgrade() {
                if document_visible() {
                    s.conn.kick();
                }
                s.after_change();
            }
        });
        let _ = document().add_event_listener_with_callback("visibilitychange", on_visibility.as_ref().unchecked_ref());
        // Lives as long as the page.
        on_visibility.forget();

        let w = weak.clone();
        let _ = window_event_listener(leptos::ev::click, move |_| {
            if let Some(s) = w.upgrade() {
                s.on_click();
            }
        });
        let w = weak.clone();
        let _ = window_event_listener(leptos::ev::keydown, move |ev| {
            if ev.key() == "Escape"
                && !ev.is_composing()
                && let Some(s) = w.upgrade()
            {
                s.request_close();
            }
        });

        match &self.host {
            Some(host) => {
                let w = weak.clone();
                host.listen(move |m| {
                    if let Some(s) = w.upgrade() {
                        s.on_host(m);
                    }
                });
                host.ready();
                let w = weak;
                set_timeout(
                    move || {
                        if let Some(s) = w.upgrade() {
                            s.start();
                        }
                    },
                    Duration::from_millis(INIT_WAIT_MS),
                );
            }
            None => self.start(),
        }
    }

    fn start(&self) {
        if std::mem::replace(&mut self.st.borrow_mut().started, true) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        self.restore_outbox();
        self.listen_to_siblings();
        let stored = self.store.token();
        wasm_bindgen_futures::spawn_local(async move {
            let election = me.st.borrow().election.clone();
            if let Some(election) = &election {
                election.run().await;
            }
            let established = identity::establish(&me.cfg.site_key, stored).await;
            if let Some(election) = &election {
                election.done();
            }
            // Another tab may have stored a token while this one waited for the lock.
            let token = established.token.or_else(|| me.store.token());
            let siblings = {
                let mut st = me.st.borrow_mut();
                if let Some(token) = token {
                    st.token = Some(token);
                }
                st.session_call = established.pending;
                st.connecting = true;
                st.siblings.clone()
            };
            if established.minted
                && let Some(channel) = siblings
            {
                let _ = channel.post_message(&JsValue::from_str(SIBLING_MINTED));
            }
            me.conn.start();
        });
    }

    /// Two tabs of a new visitor may each mint a token where the browser gives the frame no Web Lock; the browser
    /// keeps the cookie set last. A tab told that a sibling minted reconnects, so its socket carries that cookie —
    /// unless it already has a conversation of its own.
    fn listen_to_siblings(&self) {
        let Ok(channel) = web_sys::BroadcastChannel::new(&format!("parley-session:{}", self.cfg.site_key)) else {
            return;
        };
        let w = self.me.clone();
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            let Some(s) = w.upgrade() else { return };
            let data = ev.data().as_string().unwrap_or_default();
            let election = s.st.borrow().election.clone();
            if election.is_some_and(|e| e.on_message(&data)) {
                return;
            }
            if data != SIBLING_MINTED || !s.st.borrow().connecting {
                return;
            }
            if s.ui.chat.with_untracked(Chat::last_seq) == 0 {
                s.conn.restart(true);
                s.on_down();
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // Lives as long as the page.
        on_message.forget();
        let mut st = self.st.borrow_mut();
        st.election = Some(Rc::new(Election::new(Some(channel.clone()))));
        st.siblings = Some(channel);
    }

    /// Where neither the cookie nor the frame's storage keep the session, a click in the frame asks the browser for
    /// storage access (it needs a user gesture); once granted, the next load finds the session.
    fn on_click(&self) {
        let token = {
            let mut st = self.st.borrow_mut();
            if !st.cookie_missing || st.access_asked || self.store.persistent() || self.host.is_none() {
                return;
            }
            let Some(token) = st.token.clone() else { return };
            st.access_asked = true;
            token
        };
        if !identity::storage_access_api() {
            return;
        }
        let site_key = self.cfg.site_key.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if !identity::ask_storage_access(&site_key, token).await {
                warn("parley: no storage access; the chat will start over on the next page load");
            }
        });
    }

    fn on_host(&self, m: HostMsg) {
        match m {
            HostMsg::Init { page_url, referrer, identity } => {
                {
                    let mut st = self.st.borrow_mut();
                    st.context.page_url = page_url;
                    st.context.referrer = referrer;
                }
                self.identify(identity);
                self.start();
            }
            HostMsg::Identify(identity) => self.identify(identity),
            HostMsg::Open => {
                self.ui.open.set(true);
                self.ui.focus_request.update(|n| *n = n.wrapping_add(1));
                self.after_change();
            }
            HostMsg::Close => self.ui.open.set(false),
        }
    }

    /// Takes the host page's identity. Before the start it only goes into the first `hello`; after, a different one
    /// drops what the frame shows, restores that identity's outbox and reconnects from seq 0.
    fn identify(&self, identity: Option<Identity>) {
        let (started, connecting) = {
            let mut st = self.st.borrow_mut();
            if st.identity == identity {
                return;
            }
            st.identity = identity;
            // Another person has not asked to continue on Messenger.
            st.messenger_asked = false;
            st.messenger_window = None;
            (st.started, st.connecting)
        };
        if !started {
            return;
        }
        self.ui.chat.set(Chat::default());
        self.ui.messenger_offer.set(None);
        self.restore_outbox();
        if connecting {
            self.conn.restart(true);
            self.on_down();
        }
        self.after_change();
    }

    /// Puts the current identity's unsent messages back in the chat.
    fn restore_outbox(&self) {
        let hash = self.st.borrow().identity.as_ref().map(|i| i.hash.clone());
        self.store.scope_outbox(hash.as_deref());
        let outbox = self.store.outbox();
        self.ui.chat.update(|c| c.restore_outbox(outbox));
    }

    /// Asks for a fresh Messenger link when the site offers Messenger, the visitor asked to continue there, the
    /// conversation is not there yet, and the current link is missing or about to expire. Never before the visitor
    /// asked: the request creates the contact, and opening the chat writes nothing.
    pub fn refresh_messenger_link(&self) {
        {
            let st = self.st.borrow();
            if !self.cfg.messenger || !st.welcomed || !st.messenger_asked {
                return;
            }
        }
        if self.ui.chat.with_untracked(|c| c.messenger().is_some()) {
            return;
        }
        let fresh = self
            .ui
            .messenger_offer
            .with_untracked(|o| o.as_ref().is_some_and(|o| o.expires_at - now_ms() > LINK_REFRESH_MARGIN_MS));
        if !fresh && self.jar_ready() {
            self.conn.send(&ClientMsg::MessengerLink);
        }
    }

    fn schedule_link_refresh(&self, expires_at: i64) {
        let wait = (expires_at - now_ms() - LINK_REFRESH_MARGIN_MS + 1_000).max(5_000);
        let w = self.me.clone();
        set_timeout(
            move || {
                if let Some(s) = w.upgrade() {
                    s.refresh_messenger_link();
                }
            },
            Duration::from_millis(u64::try_from(wait).unwrap_or(5_000)),
        );
    }

    /// The visitor activated "Continue on Messenger". Inside their gesture the browser lets the frame open a window:
    /// it opens a blank one now and sends it to the link — the current one, or the one asked for here when it
    /// arrives. Where the window is blocked, the link shows as a plain anchor instead.
    pub fn continue_on_messenger(&self) {
        let window = open_blank_window(MESSENGER_WINDOW);
        let fresh = self.ui.messenger_offer.with_untracked(|o| {
            o.as_ref().filter(|o| o.expires_at - now_ms() > LINK_REFRESH_MARGIN_MS).map(|o| o.url.clone())
        });
        let mut blocked = window.is_none();
        let mut waiting = None;
        if let Some(window) = window {
            match fresh {
                Some(url) => blocked = !navigate(&window, &url),
                None => waiting = Some(window),
            }
        }
        {
            let mut st = self.st.borrow_mut();
            st.messenger_asked = true;
            st.messenger_window = waiting;
        }
        if blocked {
            self.ui.messenger_blocked.set(true);
        }
        self.refresh_messenger_link();
    }

    /// A link arrived: the window the visitor's click opened goes there.
    fn on_messenger_link(&self, offer: MessengerOffer) {
        let window = self.st.borrow_mut().messenger_window.take();
        if let Some(window) = window
            && !window.closed().unwrap_or(true)
            && !navigate(&window, &offer.url)
        {
            self.ui.messenger_blocked.set(true);
        }
        let expires_at = offer.expires_at;
        self.ui.messenger_offer.set(Some(offer));
        self.schedule_link_refresh(expires_at);
    }

    /// "Not you?": detach the Messenger user from this conversation.
    pub fn unlink_messenger(&self) {
        self.conn.send(&ClientMsg::UnlinkMessenger);
        self.ui.messenger_offer.set(None);
    }

    /// The visitor closed the panel (close button or Escape).
    pub fn request_close(&self) {
        if let Some(host) = &self.host {
            self.ui.open.set(false);
            host.close();
        }
    }

    fn on_conn(&self, ev: ConnEvent) {
        match ev {
            ConnEvent::Open => {
                let hello = {
                    let st = self.st.borrow();
                    ClientMsg::Hello {
                        protocol: PROTOCOL_VERSION,
                        token: st.token.clone(),
                        last_seq: self.ui.chat.with_untracked(Chat::last_seq),
                        context: st.context.clone(),
                        identity: st.identity.clone(),
                    }
                };
                self.conn.send(&hello);
            }
            ConnEvent::Frame(msg) => self.on_frame(msg),
            ConnEvent::Down => self.on_down(),
        }
    }

    fn on_down(&self) {
        {
            let mut st = self.st.borrow_mut();
            st.welcomed = false;
            st.typing.stop();
        }
        self.ui.link.set(Link::Reconnecting);
        self.ui.agent_typing.set(None);
    }

    fn on_frame(&self, msg: ServerMsg) {
        match msg {
            ServerMsg::Welcome { token, events, last_seq, agent_read_seq, reset, sid } => {
                self.on_welcome(token, events, last_seq, agent_read_seq, reset, sid)
            }
            ServerMsg::Event { event } => {
                match self.ui.chat.try_update(|c| c.apply_event(event)) {
                    Some(Applied::Gap) => {
                        // Never apply out of order: resume from the last applied seq.
                        self.conn.restart(true);
                        self.on_down();
                    }
                    Some(Applied::Done(agent_msg)) => {
                        if let Some(m) = agent_msg {
                            self.ui.agent_typing.set(None);
                            if let (Some(host), crate::state::Who::Agent(name)) = (&self.host, &m.who) {
                                host.agent_message(name, &m.body);
                            }
                        }
                        self.after_change();
                    }
                    Some(Applied::Stale) | None => {}
                }
            }
            ServerMsg::Ack { client_id, message_id, seq } => {
                self.ui.chat.update(|c| {
                    c.ack(&client_id, message_id, seq);
                });
                self.store.outbox_remove(&client_id);
            }
            ServerMsg::Typing { typing, name } => self.on_agent_typing(typing, name),
            ServerMsg::Error { code, message, client_id } => self.on_error(code, message, client_id),
            ServerMsg::MessengerLink { url, code, expires_at } => {
                self.on_messenger_link(MessengerOffer { url, code, expires_at })
            }
            ServerMsg::Pong | ServerMsg::Unknown => {}
        }
    }

    fn on_welcome(
        &self,
        token: String,
        events: Vec<protocol::Event>,
        last_seq: u64,
        agent_read_seq: u64,
        reset: bool,
        sid: String,
    ) {
        if token.is_empty() {
            // The session lives in the visitor cookie: no copy of a token in script-readable storage.
            self.store.set_token(None);
            let mut st = self.st.borrow_mut();
            st.token = None;
            st.cookie_missing = false;
        } else {
            self.store.set_token(Some(&token));
            let mut st = self.st.borrow_mut();
            st.token = Some(token);
            st.cookie_missing = true;
        }
        let Some(w) = self.ui.chat.try_update(|c| c.apply_welcome(events, last_seq, agent_read_seq, reset)) else {
            return;
        };
        if w.resync {
            // Our history does not line up with the server's: rebuild it from seq 1.
            self.ui.chat.update(Chat::reset_committed);
            self.conn.restart(false);
            self.on_down();
            return;
        }
        // A tab with a conversation stays on it; one without checks the jar before it writes (`check_jar`).
        let unchecked = !sid.is_empty() && self.ui.chat.with_untracked(Chat::last_seq) == 0;
        let first = {
            let mut st = self.st.borrow_mut();
            st.welcomed = true;
            st.welcomes = st.welcomes.wrapping_add(1);
            st.jar_checked = !unchecked;
            st.sid = sid;
            !std::mem::replace(&mut st.ever_welcomed, true)
        };
        self.conn.welcomed();
        self.ui.link.set(Link::Online);
        self.resend_outbox();
        self.refresh_messenger_link();
        // The first Welcome replays history; later ones deliver what arrived while we were away.
        if !first && let Some(host) = &self.host {
            for m in &w.agent_messages {
                if let crate::state::Who::Agent(name) = &m.who {
                    host.agent_message(name, &m.body);
                }
            }
        }
        self.after_change();
    }

    fn on_error(&self, code: ErrorCode, message: String, client_id: Option<String>) {
        match client_id {
            Some(cid) => match code {
                ErrorCode::RateLimited | ErrorCode::Internal => self.schedule_resend(),
                _ => {
                    self.ui.chat.update(|c| {
                        c.fail(&cid, message);
                    });
                    self.store.outbox_remove(&cid);
                }
            },
            None if code == ErrorCode::Unauthorized && !self.st.borrow().welcomed => {
                // The token is unknown or expired: forget it and start as a new visitor.
                let had_token = self.st.borrow_mut().token.take().is_some();
                self.store.set_token(None);
                self.ui.chat.update(Chat::reset_committed);
                self.conn.restart(had_token);
                self.on_down();
            }
            None => {
                // A window waiting for a Messenger link the server could not make does not stay blank.
                let waiting = self.st.borrow_mut().messenger_window.take();
                if let Some(window) = waiting {
                    let _ = window.close();
                }
                warn(&format!("parley: server error: {message}"))
            }
        }
    }

    fn on_agent_typing(&self, typing: bool, name: Option<String>) {
        if let Some(h) = self.st.borrow_mut().agent_typing_ttl.take() {
            h.clear();
        }
        if !typing {
            self.ui.agent_typing.set(None);
            return;
        }
        let name = name
            .filter(|n| !n.is_empty())
            .or_else(|| self.ui.chat.with_untracked(|c| c.agent_name().map(str::to_string)))
            .unwrap_or_else(|| "Agent".into());
        self.ui.agent_typing.set(Some(name));
        // A lost `typing: false` must not leave the indicator up forever.
        let agent_typing = self.ui.agent_typing;
        self.st.borrow_mut().agent_typing_ttl = set_timeout_with_handle(
            move || agent_typing.set(None),
            Duration::from_millis(typing::AGENT_TYPING_TTL_MS.into()),
        )
        .ok();
    }

    fn resend_outbox(&self) {
        let outbox = self.ui.chat.with_untracked(Chat::outbox);
        if outbox.is_empty() || !self.jar_ready() {
            return;
        }
        for item in outbox {
            self.conn.send(&ClientMsg::Send { client_id: item.client_id, body: item.body });
        }
    }

    /// Whether the current socket may write now. When its token may not be the cookie jar's, starts the check and
    /// answers `false`: the check sends what waits, or reconnects first.
    fn jar_ready(&self) -> bool {
        if self.st.borrow().jar_checked {
            return true;
        }
        self.check_jar();
        false
    }

    /// Asks the server which token the cookie jar holds now (by fingerprint). Another tab's session call may have
    /// landed since this socket opened: then the socket is replaced before anything is written on it.
    fn check_jar(&self) {
        let (welcome, session_call) = {
            let mut st = self.st.borrow_mut();
            if !st.welcomed || std::mem::replace(&mut st.jar_checking, true) {
                return;
            }
            (st.welcomes, st.session_call.clone())
        };
        let Some(me) = self.me.upgrade() else { return };
        wasm_bindgen_futures::spawn_local(async move {
            let jar = identity::jar_sid(&me.cfg.site_key, session_call).await;
            me.st.borrow_mut().session_call = None;
            let stale = {
                let mut st = me.st.borrow_mut();
                st.jar_checking = false;
                if st.welcomes != welcome || !st.welcomed {
                    None
                } else if let Some(Some(jar)) = &jar
                    && *jar != st.sid
                    && st.jar_switches < MAX_JAR_SWITCHES
                {
                    st.jar_switches += 1;
                    Some(true)
                } else {
                    // Same token, no visitor cookie to compare with, or the check failed: write on this socket.
                    st.jar_checked = true;
                    Some(false)
                }
            };
            match stale {
                Some(true) => {
                    me.conn.restart(true);
                    me.on_down();
                }
                // Checked, or made for an earlier socket: the current one checks (or sends) now.
                Some(false) | None if me.st.borrow().welcomed => {
                    me.resend_outbox();
                    me.refresh_messenger_link();
                }
                Some(false) | None => {}
            }
        });
    }

    /// Re-sends the outbox a little later (after a retryable error); at most one retry is pending at a time.
    fn schedule_resend(&self) {
        if self.st.borrow().resend.is_some() {
            return;
        }
        let me = self.me.clone();
        let handle = set_timeout_with_handle(
            move || {
                if let Some(s) = me.upgrade() {
                    s.st.borrow_mut().resend = None;
                    if s.st.borrow().welcomed {
                        s.resend_outbox();
                    }
                }
            },
            Duration::from_millis(RESEND_AFTER_MS),
        );
        self.st.borrow_mut().resend = handle.ok();
    }

    /// Sends a message the visitor wrote. `Err` is a reason to show under the composer.
    pub fn send_message(&self, body: &str) -> Result<(), &'static str> {
        let body = body.trim();
        protocol::validate_body(body)?;
        let item = self
            .ui
            .chat
            .try_update(|c| c.add_pending(new_client_id(), body.to_string(), now_ms()))
            .ok_or("the chat is not available")?;
        self.store.outbox_add(&item);
        self.stop_typing();
        let welcomed = self.st.borrow().welcomed;
        if welcomed && self.jar_ready() {
            self.conn.send(&ClientMsg::Send { client_id: item.client_id, body: item.body });
        }
        Ok(())
    }

    /// The composer's text changed.
    pub fn on_input(&self, has_text: bool) {
        if !has_text {
            self.stop_typing();
            return;
        }
        let send = {
            let mut st = self.st.borrow_mut();
            if let Some(h) = st.typing_idle.take() {
                h.clear();
            }
            st.welcomed && st.typing.input(now_ms())
        };
        if send {
            self.conn.send(&ClientMsg::Typing { typing: true });
        }
        let weak = self.me.clone();
        self.st.borrow_mut().typing_idle = set_timeout_with_handle(
            move || {
                if let Some(s) = weak.upgrade() {
                    s.stop_typing();
                }
            },
            Duration::from_millis(typing::IDLE_MS.into()),
        )
        .ok();
    }

    fn stop_typing(&self) {
        let send = {
            let mut st = self.st.borrow_mut();
            if let Some(h) = st.typing_idle.take() {
                h.clear();
            }
            st.typing.stop() && st.welcomed
        };
        if send {
            self.conn.send(&ClientMsg::Typing { typing: false });
        }
    }

    /// After anything that may change what is read or unread: mark read if the visitor can see the panel, and
    /// report the unread count to the host page when it changed.
    fn after_change(&self) {
        let welcomed = self.st.borrow().welcomed;
        let looking = self.ui.open.get_untracked() && document_visible();
        if welcomed
            && looking
            && self.ui.chat.with_untracked(Chat::unread) > 0
            && let Some(Some(up_to_seq)) = self.ui.chat.try_update(Chat::mark_read)
        {
            self.conn.send(&ClientMsg::Read { up_to_seq });
        }
        let unread = self.ui.chat.with_untracked(Chat::unread);
        let changed = {
            let mut st = self.st.borrow_mut();
            st.posted_unread.replace(unread) != Some(unread)
        };
        if changed && let Some(host) = &self.host {
            host.unread(unread);
        }
    }
}

/// Opens a blank window under `name` (allowed inside a user gesture only); `None` where the browser blocked it. The
/// window gets no handle on the chat frame.
fn open_blank_window(name: &str) -> Option<web_sys::Window> {
    let window = window().open_with_url_and_target("", name).ok().flatten()?;
    if window.closed().unwrap_or(true) {
        return None;
    }
    // Fails (harmlessly) when the name finds the window an earlier click sent on to Messenger: its opener was cut then.
    let _ = window.set_opener(&JsValue::NULL);
    Some(window)
}

/// Sends a window the frame opened to `url`; `false` where the browser refused.
fn navigate(window: &web_sys::Window, url: &str) -> bool {
    window.location().set_href(url).is_ok()
}

fn document_visible() -> bool {
    document().visibility_state() == VisibilityState::Visible
}

/// What the frame knows about the visitor itself; the loader adds the page URL and referrer.
fn local_context() -> VisitorContext {
    let timezone = js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new())
        .resolved_options()
        .dyn_into::<js_sys::Object>()
        .ok()
        .and_then(|o| js_sys::Reflect::get(&o, &JsValue::from_str("timeZone")).ok())
        .and_then(|v| v.as_string());
    VisitorContext {
        page_url: None,
        referrer: None,
        timezone,
        utc_offset_minutes: Some(crate::js::utc_offset_minutes(now_ms())),
        language: window().navigator().language(),
    }
}
