//! Where the visitor's session lives, seen from the frame (the server's side is `http::visitor_session`).
//!
//! Before its first socket the frame calls `POST /api/visitor/session?site=KEY` on its own origin. The answer sets
//! the visitor cookie (`HttpOnly; Secure; SameSite=None; Partitioned`): the browser keeps it per top-level site even
//! where third-party storage is blocked and sends it on the socket's upgrade; no script can read it. Tabs of one
//! host site opened at the same instant must end on one token. Where the browser grants a Web Lock the call runs
//! under it, so the first tab mints and the others reuse its cookie. Chromium refuses Web Locks (like storage) to a
//! third-party frame; the tabs then elect one tab to mint on a BroadcastChannel (`election.rs`), which narrows the
//! race but cannot close it. What closes it is on the server: a minted token gets a cookie of its own instead of
//! overwriting another tab's, and the oldest visitor cookie in the jar names the token, so every socket of the host
//! site speaks for the token that landed first. Before its first write the frame checks that ([`jar_sid`]): the
//! session call's `sid` and `welcome`'s are fingerprints of the token, and a socket whose `sid` is not the jar's is
//! reconnected before anything is sent (`session.rs`).
//!
//! Fallbacks: where the cookie does not stick, `welcome` carries a token and the frame keeps it in its own storage
//! (`storage.rs`) where that works. Where neither works, the frame asks for storage access
//! (`document.requestStorageAccess`, on the visitor's next click in the frame); once granted, the cookie is set
//! unpartitioned, and later loads get access again without asking. Every step is best effort: a failure here only
//! means the chat starts without the cookie.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The longest the frame waits for the lock and the session call before connecting anyway.
const SESSION_WAIT_MS: i32 = 5_000;

/// Calls `target[method](...args)`; `None` when the method is missing or throws.
fn call(target: &JsValue, method: &str, args: &Array) -> Option<JsValue> {
    let f = Reflect::get(target, &JsValue::from_str(method)).ok()?.dyn_into::<Function>().ok()?;
    f.apply(target, args).ok()
}

/// Awaits a value that may be a promise; `None` when it rejects.
async fn settle(value: JsValue) -> Option<JsValue> {
    JsFuture::from(Promise::resolve(&value)).await.ok()
}

/// What the session call said.
#[derive(Default)]
pub struct Established {
    /// Only in storage-access mode: the token the frame must present in `hello` itself.
    pub token: Option<String>,
    /// The server minted a new token: the other tabs of this host site reconnect (a second net, see `session.rs`).
    pub minted: bool,
    /// The session call, when its answer did not come in time: the frame connected without waiting for it, and
    /// waits for it (see [`jar_sid`]) before its first write, because the cookie it sets may change the jar's token.
    pub pending: Option<Promise>,
}

/// What the visitor cookie jar holds now: `Some(sid)` of the token the oldest visitor cookie names, `Some(None)`
/// without a visitor cookie, `None` when the call failed. Sets nothing and mints nothing. `pending` is this frame's
/// own session call if it was still under way when the socket opened: its answer lands first (at most
/// [`SESSION_WAIT_MS`] more), so the jar holds at least this frame's cookie, or an older one.
pub async fn jar_sid(site_key: &str, pending: Option<Promise>) -> Option<Option<String>> {
    if let Some(call) = pending {
        let _ = with_timeout(call.into()).await;
    }
    let answer = post_session_call(site_key, &SessionCall::Check { check: true }).await?;
    Some(Reflect::get(&answer, &JsValue::from_str("sid")).ok().and_then(|s| s.as_string()))
}

/// Sets or refreshes the visitor cookie, under the site's Web Lock where the browser grants one (Chromium refuses
/// it to a third-party frame, like storage: then unlocked; the server keeps every tab on the oldest cookie).
/// `stored` is a token the frame kept from an earlier session (adopted when there is no cookie yet).
pub async fn establish(site_key: &str, stored: Option<String>) -> Established {
    let access = storage_access_granted_before().await;
    // The call runs once, whether the lock grants it, refuses it or is too slow.
    let started: Rc<RefCell<Option<Promise>>> = Rc::default();
    let site = site_key.to_string();
    let session = started.clone();
    let run = move || -> Promise {
        let (site, stored) = (site.clone(), stored.clone());
        session
            .borrow_mut()
            .get_or_insert_with(|| wasm_bindgen_futures::future_to_promise(post_session(site, stored, access)))
            .clone()
    };
    let locked = {
        let run = run.clone();
        let callback = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_lock: JsValue| run());
        let navigator = web_sys::window().map(|w| JsValue::from(w.navigator())).unwrap_or(JsValue::UNDEFINED);
        let locks = Reflect::get(&navigator, &JsValue::from_str("locks")).unwrap_or(JsValue::UNDEFINED);
        let name = JsValue::from_str(&format!("parley-session:{site_key}"));
        let request = call(&locks, "request", &Array::of2(&name, callback.as_ref()));
        // The lock may call it after we stopped waiting.
        callback.forget();
        request
    };
    let answer = match locked {
        Some(p) => with_timeout(p).await,
        None => None,
    };
    let answer = match answer {
        Some(a) => Some(a),
        None => with_timeout(run().into()).await,
    };
    let Some(answer) = answer.filter(|a| a.is_object()) else {
        return Established { pending: started.borrow().clone(), ..Established::default() };
    };
    let field = |name: &str| Reflect::get(&answer, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    Established { token: field("token").as_string(), minted: field("minted").as_bool().unwrap_or(false), pending: None }
}

/// Awaits `p` for at most [`SESSION_WAIT_MS`]; `None` when it rejects or takes longer.
async fn with_timeout(p: JsValue) -> Option<JsValue> {
    let timeout = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, SESSION_WAIT_MS);
        }
    });
    settle(Promise::race(&Array::of2(&p, &timeout)).into()).await.filter(|v| !v.is_undefined())
}

/// The session call itself: the server's JSON answer, or `null` when it failed.
async fn post_session(site_key: String, stored: Option<String>, storage_access: bool) -> Result<JsValue, JsValue> {
    Ok(post_session_inner(&site_key, stored, storage_access).await.unwrap_or(JsValue::NULL))
}

async fn post_session_inner(site_key: &str, stored: Option<String>, storage_access: bool) -> Option<JsValue> {
    post_session_call(site_key, &SessionCall::Establish { token: stored.as_deref(), storage_access }).await
}

/// The body of `POST /api/visitor/session`: a look at the cookie jar, or a session to set up. Serialized with
/// serde's derive, as the socket's frames are (a `serde_json::Value` here would add its own serializer and
/// `Display` to the download).
#[derive(Serialize)]
#[serde(untagged)]
enum SessionCall<'a> {
    Check { check: bool },
    Establish { token: Option<&'a str>, storage_access: bool },
}

async fn post_session_call(site_key: &str, body: &SessionCall<'_>) -> Option<JsValue> {
    let body = serde_json::to_string(body).ok()?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(&body));
    let url = format!("/api/visitor/session?site={}", String::from(js_sys::encode_uri_component(site_key)));
    let response = settle(web_sys::window()?.fetch_with_str_and_init(&url, &init).into()).await?;
    let response: web_sys::Response = response.dyn_into().ok()?;
    if !response.ok() {
        return None;
    }
    settle(response.json().ok()?.into()).await
}

/// Whether the visitor granted storage access to this frame before: then it is taken again now (no prompt).
async fn storage_access_granted_before() -> bool {
    let Some(window) = web_sys::window() else { return false };
    let permissions =
        Reflect::get(&window.navigator(), &JsValue::from_str("permissions")).unwrap_or(JsValue::UNDEFINED);
    let query = js_sys::Object::new();
    let _ = Reflect::set(&query, &JsValue::from_str("name"), &JsValue::from_str("storage-access"));
    let Some(status) = call(&permissions, "query", &Array::of1(&query)) else { return false };
    let state = settle(status).await.and_then(|s| Reflect::get(&s, &JsValue::from_str("state")).ok());
    if state.and_then(|s| s.as_string()).as_deref() != Some("granted") {
        return false;
    }
    request_access().await
}

async fn request_access() -> bool {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return false };
    match call(&document, "requestStorageAccess", &Array::new()) {
        Some(p) => settle(p).await.is_some(),
        None => false,
    }
}

/// Whether this browser has the Storage Access API.
pub fn storage_access_api() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| Reflect::get(&d, &JsValue::from_str("requestStorageAccess")).ok())
        .is_some_and(|f| f.is_function())
}

/// Neither the cookie nor frame storage work: ask for storage access (call on a user gesture). When granted, the
/// cookie is set unpartitioned for `token`, so the next load finds the session.
pub async fn ask_storage_access(site_key: &str, token: String) -> bool {
    if !request_access().await {
        return false;
    }
    post_session_inner(site_key, Some(token), true).await.is_some()
}
