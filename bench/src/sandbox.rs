//! `parley-bench sandbox`: the Messenger sandbox (`messenger-sandbox`, the emulator Parley's tests use) as its own
//! process for scenario f, with the sandbox's default app and Page, its webhooks going to `--callback`.
//!
//! The emulator is served behind one extra layer that records, for every Send API call it answered 200, the
//! message text and the wall-clock time of that answer (µs since the epoch): `GET /__bench/delivered` returns them
//! (`[[text, µs], …]`), so the generator can tell when each reply was delivered. Counting each reply exactly once
//! is done on the emulator's own record (`GET /__emu/sent`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use messenger_sandbox::SandboxConfig;

/// Text and time (µs since the epoch) of every Send API call answered 200.
type Delivered = Arc<Mutex<Vec<(String, u64)>>>;

/// The largest Send API body the recorder reads (the Send API takes far less).
const MAX_BODY: usize = 1 << 20;

/// Now, in µs since the epoch (the generator compares it with its own clock: same machine).
pub fn epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The sandbox's configuration on both sides: the sandbox process and the Parley it talks to.
pub fn config(callback: Option<String>, public: Option<String>) -> SandboxConfig {
    SandboxConfig { callback_url: callback, public_base_url: public, ..SandboxConfig::default() }
}

/// Serves the sandbox on `addr` until the process is killed.
pub async fn serve(addr: SocketAddr, callback: String) -> anyhow::Result<()> {
    // The emulator (and its webhook sender) runs on a private listener nothing calls; its router, with the
    // recorder in front, is served on `addr`.
    let private = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sandbox = messenger_sandbox::launch(config(Some(callback), Some(format!("http://{addr}"))), private).await?;
    let delivered: Delivered = Arc::default();
    let app = messenger_sandbox::router(sandbox.emulator())
        .layer(middleware::from_fn_with_state(Arc::clone(&delivered), record))
        .route("/__bench/delivered", get(list).with_state(delivered));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    drop(sandbox);
    Ok(())
}

async fn list(State(delivered): State<Delivered>) -> Json<Vec<(String, u64)>> {
    Json(delivered.lock().map(|d| d.clone()).unwrap_or_default())
}

/// Records the text of each Send API call (`POST …/messages`) answered 200.
async fn record(State(delivered): State<Delivered>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !request.uri().path().ends_with("/messages") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return next.run(Request::from_parts(parts, Body::empty())).await;
    };
    let text = text_of(&bytes);
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if response.status().is_success()
        && let Some(text) = text
        && let Ok(mut d) = delivered.lock()
    {
        d.push((text, epoch_us()));
    }
    response
}

/// `message.text` of a Send API body (JSON, as Parley and the baseline send it).
fn text_of(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.pointer("/message/text")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_text_of_a_send_is_found() {
        let json = br#"{"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{"text":"hi 1"}}"#;
        assert_eq!(super::text_of(json).as_deref(), Some("hi 1"));
        assert_eq!(super::text_of(b"not json"), None);
        assert_eq!(super::text_of(br#"{"sender_action":"typing_on"}"#), None);
    }
}
