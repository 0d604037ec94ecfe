//! Test harness: `spawn()` starts a signature-checking webhook receiver and the sandbox
//! pointed at it, and offers typed Graph calls.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use hmac::{Hmac, Mac};
use messenger_sandbox::{Sandbox, SandboxConfig, launch};
use serde_json::{Value, json};
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(10);

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub json: Value,
    pub signature_ok: bool,
}

#[derive(Default)]
pub struct ReceiverState {
    pub secret: String,
    pub verify_token: String,
    pub received: Mutex<Vec<Received>>,
    pub fail_next: AtomicUsize,
    pub always_fail: AtomicBool,
    pub delay_ms: AtomicU64,
    pub wrong_challenge: AtomicBool,
    pub changed: Option<watch::Sender<usize>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub state: Arc<ReceiverState>,
}

impl Receiver {
    /// Accepted (signature-valid) payloads.
    pub fn accepted(&self) -> Vec<Received> {
        self.state.received.lock().expect("receiver lock").iter().filter(|r| r.signature_ok).cloned().collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().expect("receiver lock").clone()
    }

    /// Events (messaging[] and standby[]) of accepted payloads, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.accepted().iter().flat_map(|r| messenger_sandbox::webhook::events_of(&r.json)).collect()
    }

    /// Waits until an accepted event matches.
    pub async fn wait_event(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let mut rx = self.state.changed.as_ref().expect("watch sender").subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            rx.borrow_and_update();
            if let Some(event) = self.events().into_iter().find(|e| predicate(e)) {
                return event;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("timed out waiting for a webhook event; got {:#?}", self.events()),
            }
        }
    }

    /// Waits until `n` POSTs (accepted or not) arrived.
    pub async fn wait_posts(&self, n: usize) -> Vec<Received> {
        let mut rx = self.state.changed.as_ref().expect("watch sender").subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            rx.borrow_and_update();
            let all = self.all();
            if all.len() >= n {
                return all;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("timed out waiting for {n} posts; got {}", all.len()),
            }
        }
    }
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(secret: &str, body: &[u8]) -> String {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let sha256 = format!("sha256={}", hmac_hex::<Hmac<sha2::Sha256>>(&state.secret, &body));
    let sha1 = format!("sha1={}", hmac_hex::<Hmac<sha1::Sha1>>(&state.secret, &body));
    let signature_ok = header("x-hub-signature-256") == sha256
        && header("x-hub-signature") == sha1
        && header("content-type") == "application/json";
    let text = String::from_utf8(body.to_vec()).unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    let fail = state.always_fail.load(Ordering::SeqCst)
        || state.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    {
        let mut received = state.received.lock().expect("receiver lock");
        received.push(Received { body: text, json, signature_ok: signature_ok && !fail });
        if let Some(changed) = &state.changed {
            changed.send_replace(received.len());
        }
    }
    if !signature_ok {
        StatusCode::FORBIDDEN
    } else if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn verify(
    State(state): State<Arc<ReceiverState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, String) {
    let ok = q.get("hub.mode").map(String::as_str) == Some("subscribe")
        && q.get("hub.verify_token") == Some(&state.verify_token);
    match (ok, q.get("hub.challenge")) {
        (true, Some(challenge)) if !state.wrong_challenge.load(Ordering::SeqCst) => (StatusCode::OK, challenge.clone()),
        (true, Some(_)) => (StatusCode::OK, "nope".into()),
        _ => (StatusCode::FORBIDDEN, String::new()),
    }
}

pub async fn spawn_receiver(secret: &str, verify_token: &str) -> Receiver {
    let (changed, _) = watch::channel(0);
    let state = Arc::new(ReceiverState {
        secret: secret.to_owned(),
        verify_token: verify_token.to_owned(),
        changed: Some(changed),
        ..ReceiverState::default()
    });
    let app = Router::new().route("/webhooks/messenger", get(verify).post(receive)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url: format!("http://127.0.0.1:{port}/webhooks/messenger"), state }
}

pub struct TestEnv {
    pub sandbox: Sandbox,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    pub token: String,
}

/// Sandbox + receiver with default config.
pub async fn spawn() -> TestEnv {
    spawn_with(|_| {}).await
}

/// Sandbox + receiver; `tweak` adjusts the config (callback is already set).
pub async fn spawn_with(tweak: impl FnOnce(&mut SandboxConfig)) -> TestEnv {
    let mut config = SandboxConfig { seed: Some(7), delivery_delay: None, ..SandboxConfig::default() };
    let receiver = spawn_receiver(&config.app_secret, &config.verify_token).await;
    config.callback_url = Some(receiver.url.clone());
    tweak(&mut config);
    let token = config.page_token.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sandbox");
    let sandbox = launch(config, listener).await.expect("launch");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    TestEnv { sandbox, receiver, http, token }
}

/// A Graph response.
#[derive(Debug)]
pub struct GraphReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl GraphReply {
    pub fn code(&self) -> (i64, Option<i64>) {
        let error = &self.body["error"];
        (error["code"].as_i64().unwrap_or(0), error["error_subcode"].as_i64())
    }

    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

impl TestEnv {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sandbox.base_url(), path)
    }

    async fn reply(response: reqwest::Response) -> GraphReply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        GraphReply { status, headers, body }
    }

    /// POST JSON to a Graph path with the Page token in the query.
    pub async fn graph_post(&self, path: &str, body: Value) -> GraphReply {
        let response = self
            .http
            .post(self.url(path))
            .query(&[("access_token", self.token.as_str())])
            .json(&body)
            .send()
            .await
            .expect("graph post");
        Self::reply(response).await
    }

    /// GET a Graph path with the Page token.
    pub async fn graph_get(&self, path: &str, query: &[(&str, &str)]) -> GraphReply {
        let response = self
            .http
            .get(self.url(path))
            .query(&[("access_token", self.token.as_str())])
            .query(query)
            .send()
            .await
            .expect("graph get");
        Self::reply(response).await
    }

    /// DELETE a Graph path with the Page token and a JSON body.
    pub async fn graph_delete(&self, path: &str, body: Value) -> GraphReply {
        let response = self
            .http
            .delete(self.url(path))
            .query(&[("access_token", self.token.as_str())])
            .json(&body)
            .send()
            .await
            .expect("graph delete");
        Self::reply(response).await
    }

    /// Send API: text with RESPONSE.
    pub async fn send_text(&self, psid: &str, text: &str) -> GraphReply {
        self.send(json!({
            "recipient": { "id": psid },
            "messaging_type": "RESPONSE",
            "message": { "text": text },
        }))
        .await
    }

    /// Send API with any body.
    pub async fn send(&self, body: Value) -> GraphReply {
        self.graph_post("/v25.0/me/messages", body).await
    }

    /// A customer who has written "hi" (so the window is open); returns the PSID.
    pub async fn active_customer(&self) -> String {
        let user = self.sandbox.create_user(Default::default()).expect("create user");
        self.sandbox.user_sends_text(&user.psid, "hi").expect("user sends");
        user.psid
    }

    /// POST to the control API.
    pub async fn control_post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.http.post(self.url(path)).json(&body).send().await.expect("control post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET from the control API.
    pub async fn control_get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("control get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Whether an event is of this kind (`message`, `postback`, `referral`, `delivery`…).
pub fn is_kind(event: &Value, key: &str) -> bool {
    event.get(key).is_some()
}

/// Whether an event is an echo.
pub fn is_echo(event: &Value) -> bool {
    event["message"]["is_echo"] == json!(true)
}
