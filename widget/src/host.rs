//! The postMessage bridge to the host page's loader (`widget/loader/widget.js`).
//!
//! The host origin comes from the frame URL's fragment (`#host=…`) and is trusted only if the boot config lists it.
//! Every message names that exact target origin, and incoming ones must come from that origin AND from
//! `window.parent`. Messages are plain objects `{parley: 1, type, …}`; unknown ones are ignored.
//! `init` and `identify` may carry the host page's signed identity of its logged-in customer
//! (`Parley('identify', {id, name, email, hash})`), passed on to the server in `hello` and checked there.

use js_sys::{Object, Reflect};
use leptos::prelude::window_event_listener_untyped;
use protocol::widget::Identity;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{MessageEvent, Window};

use crate::boot::{self, BootConfig};
use crate::js::warn;

/// What the loader tells the frame.
pub enum HostMsg {
    Init {
        page_url: Option<String>,
        referrer: Option<String>,
        identity: Option<Identity>,
    },
    /// The host page identified its customer (or, with `None`, signed them out).
    Identify(Option<Identity>),
    Open,
    Close,
}

pub struct Host {
    origin: String,
    parent: Window,
}

impl Host {
    /// The embedding page, if the frame is embedded by an allowed origin; `None` when opened top-level.
    pub fn detect(cfg: &BootConfig) -> Option<Self> {
        let w = web_sys::window()?;
        let parent = w.parent().ok().flatten()?;
        if JsValue::from(&parent) == JsValue::from(&w) {
            return None;
        }
        let hash = w.location().hash().unwrap_or_default();
        match boot::host_from_fragment(&hash) {
            Some(origin) if cfg.allows(&origin) => Some(Self { origin, parent }),
            _ => {
                warn("parley: the embedding page's origin is not allowed for this site");
                None
            }
        }
    }

    /// Calls `on` for each well-formed message from the host page.
    pub fn listen(&self, on: impl Fn(HostMsg) + 'static) {
        let origin = self.origin.clone();
        let parent = JsValue::from(&self.parent);
        // The listener lives as long as the page; its handle is deliberately not kept.
        let _ = window_event_listener_untyped("message", move |ev| {
            let Some(ev) = ev.dyn_ref::<MessageEvent>() else {
                return;
            };
            if ev.origin() != origin || ev.source().map(JsValue::from) != Some(parent.clone()) {
                return;
            }
            let data = ev.data();
            if get(&data, "parley") != 1 {
                return;
            }
            match get(&data, "type").as_string().as_deref() {
                Some("init") => on(HostMsg::Init {
                    page_url: get(&data, "page_url").as_string(),
                    referrer: get(&data, "referrer").as_string().filter(|r| !r.is_empty()),
                    identity: identity_of(&get(&data, "identity")),
                }),
                Some("identify") => on(HostMsg::Identify(identity_of(&get(&data, "identity")))),
                Some("open") => on(HostMsg::Open),
                Some("close") => on(HostMsg::Close),
                _ => {}
            }
        });
    }

    pub fn ready(&self) {
        self.post(&msg("ready"));
    }

    pub fn close(&self) {
        self.post(&msg("close"));
    }

    pub fn unread(&self, count: u32) {
        let m = msg("unread");
        set(&m, "count", &JsValue::from(count));
        self.post(&m);
    }

    /// A new live message from the agent.
    pub fn agent_message(&self, name: &str, body: &str) {
        let inner = Object::new();
        set(&inner, "author", &JsValue::from_str("agent"));
        set(&inner, "name", &JsValue::from_str(name));
        set(&inner, "body", &JsValue::from_str(body));
        let m = msg("message");
        set(&m, "message", &inner);
        self.post(&m);
    }

    fn post(&self, m: &Object) {
        let _ = self.parent.post_message(m, &self.origin);
    }
}

/// The identity in a host message: `id` and `hash` must be non-empty strings; a `name` or `email` that is not a
/// string is dropped. Anything else (no object, a number for an id) means no identity.
fn identity_of(value: &JsValue) -> Option<Identity> {
    let text = |key: &str| get(value, key).as_string();
    let identity = boot::parse_identity(text("id"), text("name"), text("email"), text("hash"));
    if identity.is_none() && value.is_object() {
        warn("parley: identify needs string `id` and `hash`; continuing without identity");
    }
    identity
}

fn msg(ty: &str) -> Object {
    let m = Object::new();
    set(&m, "parley", &JsValue::from(1));
    set(&m, "type", &JsValue::from_str(ty));
    m
}

fn set(o: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(o, &JsValue::from_str(key), value);
}

fn get(o: &JsValue, key: &str) -> JsValue {
    if !o.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(o, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}
