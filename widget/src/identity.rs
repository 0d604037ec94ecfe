//! Where the visitor's session lives, seen from the frame (the server's side is `http::visitor_session`).
//!
//! Before its first socket the frame calls `POST /api/visitor/session?site=KEY` on its own origin. The answer sets
//! the visitor cookie (`HttpOnly; Secure; SameSite=None; Partitioned`): the browser keeps it per top-level site even
//! where third-party storage is blocked and sends it on the socket's upgrade; no script can read it. The call runs
//! under a Web Lock (`navigator.locks`, partitioned per top-level site like the cookie), so tabs of one host site
//! opened at the same instant take turns: the first mints the token, the others reuse its cookie — one visitor, one
//! conversation.
//!
//! Fallbacks: where the cookie does not stick, `welcome` carries a token and the frame keeps it in its own storage
//! (`storage.rs`) where that works. Where neither works, the frame asks for storage access
//! (`document.requestStorageAccess`, on the visitor's next click in the frame); once granted, the cookie is set
//! unpartitioned, and later loads get access again without asking. Every step is best effort: a failure here only
//! means the chat starts without the cookie.

use js_sys::{Array, Function, Promise, Reflect};
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

/// Sets or refreshes the visitor cookie, under the site's Web Lock. `stored` is a token the frame kept from an
/// earlier session (adopted when there is no cookie yet). Returns a token only in storage-access mode, where the
/// frame must present it in `hello` itself.
pub async fn establish(site_key: &str, stored: Option<String>) -> Option<String> {
    let access = storage_access_granted_before().await;
    let site = site_key.to_string();
    let work = Closure::once_into_js(move |_lock: JsValue| -> Promise {
        wasm_bindgen_futures::future_to_promise(async move {
            Ok(post_session(&site, stored, access).await.map(JsValue::from).unwrap_or(JsValue::NULL))
        })
    });
    let navigator = web_sys::window()?.navigator();
    let locks = Reflect::get(&navigator, &JsValue::from_str("locks")).unwrap_or(JsValue::UNDEFINED);
    let name = JsValue::from_str(&format!("parley-session:{site_key}"));
    let done = match call(&locks, "request", &Array::of2(&name, &work)) {
        Some(p) => p,
        // No Web Locks here: run unlocked.
        None => work.dyn_into::<Function>().ok()?.call1(&JsValue::NULL, &JsValue::NULL).ok()?,
    };
    let timeout = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, SESSION_WAIT_MS);
        }
    });
    settle(Promise::race(&Array::of2(&done, &timeout)).into()).await?.as_string()
}

/// The session call itself; `Some(token)` only when the server returned one (storage-access mode).
async fn post_session(site_key: &str, stored: Option<String>, storage_access: bool) -> Option<String> {
    let body = serde_json::json!({ "token": stored, "storage_access": storage_access }).to_string();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(&body));
    let url = format!("/api/visitor/session?site={}", String::from(js_sys::encode_uri_component(site_key)));
    let response = settle(web_sys::window()?.fetch_with_str_and_init(&url, &init).into()).await?;
    let response: web_sys::Response = response.dyn_into().ok()?;
    if !response.ok() || !storage_access {
        return None;
    }
    let json = settle(response.json().ok()?.into()).await?;
    Reflect::get(&json, &JsValue::from_str("token")).ok()?.as_string()
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
    post_session(site_key, Some(token), true).await.is_some()
}
