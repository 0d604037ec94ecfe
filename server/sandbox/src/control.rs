//! The test-control HTTP API under `/__emu/…` (not Meta's): drive simulated customers,
//! move the clock, inject faults, and read what the Page sent and what webhooks went out.
//!
//! Every route is a thin wrapper over an [`Emulator`] method, so HTTP clients (Playwright,
//! the chat page) and Rust tests see the same behaviour. Errors are
//! `{"error": "..."}` with 400/404/409.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::customer::UserMessage;
use crate::emulator::Emulator;
use crate::errors::ControlError;
use crate::faults::{FaultRule, SendFault, WebhookFault};
use crate::state::{NewUser, SettingsPatch};

/// Longest a thread long poll waits.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Routes under `/__emu`.
pub fn router() -> Router<Emulator> {
    Router::new()
        .route("/__emu", get(overview))
        .route("/__emu/reset", post(reset))
        .route("/__emu/clock", get(clock))
        .route("/__emu/clock/advance", post(advance))
        .route("/__emu/settings", get(settings).patch(update_settings))
        .route("/__emu/users", get(users).post(create_user))
        .route("/__emu/users/{psid}", get(user))
        .route("/__emu/users/{psid}/thread", get(thread))
        .route("/__emu/users/{psid}/messages", post(user_sends))
        .route("/__emu/users/{psid}/get_started", post(get_started))
        .route("/__emu/users/{psid}/open", post(open_link))
        .route("/__emu/users/{psid}/read", post(read))
        .route("/__emu/users/{psid}/react", post(react))
        .route("/__emu/users/{psid}/block", post(block))
        .route("/__emu/users/{psid}/unblock", post(unblock))
        .route("/__emu/users/{psid}/inbox_reply", post(inbox_reply))
        .route("/__emu/users/{psid}/inbox_take", post(inbox_take))
        .route("/__emu/users/{psid}/inbox_pass", post(inbox_pass))
        .route("/__emu/sent", get(sent))
        .route("/__emu/webhooks", get(webhooks))
        .route("/__emu/webhooks/events", get(webhook_events))
        .route("/__emu/alerts", get(alerts))
        .route("/__emu/verifications", get(verifications))
        .route("/__emu/faults", get(faults).delete(clear_faults))
        .route("/__emu/faults/send", post(send_fault))
        .route("/__emu/faults/webhook", post(webhook_fault))
        .route("/__emu/faults/seed", post(seed))
        .route("/__emu/token/revoke", post(revoke_token))
        .route("/__emu/token/restore", post(restore_token))
        .route("/__emu/callback", post(set_callback))
        .route("/__emu/callback/verify", post(verify_callback))
        .route("/__emu/subscription", post(subscription).delete(unsubscribe))
        .route("/__emu/get_started", post(set_get_started).delete(remove_get_started))
        .route("/__emu/idle", get(idle))
}

type ControlResult = Result<Response, ControlError>;

/// Parses an optional JSON body (empty = defaults).
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ControlError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ControlError::Invalid(format!("bad JSON: {e}")))
}

fn ok(value: impl serde::Serialize) -> ControlResult {
    Ok(Json(value).into_response())
}

async fn overview(State(e): State<Emulator>) -> ControlResult {
    let value = e.with(|w| {
        json!({
            "app_id": w.cfg.app_id,
            "page_id": w.cfg.page_id,
            "page_username": w.cfg.page_username,
            "page_name": w.cfg.page_name,
            "base_url": w.base_url,
            "now_ms": w.now_ms(),
            "app": w.app,
            "settings": w.settings,
            "messenger_profile": w.profile,
            "users": w.customers.len(),
            "pending_events": w.pending_events,
        })
    });
    ok(value)
}

async fn reset(State(e): State<Emulator>) -> ControlResult {
    e.reset();
    ok(json!({ "reset": true }))
}

async fn clock(State(e): State<Emulator>) -> ControlResult {
    ok(json!({ "now_ms": e.now_ms() }))
}

#[derive(Debug, Default, Deserialize)]
struct Advance {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    seconds: u64,
    #[serde(default)]
    minutes: u64,
    #[serde(default)]
    hours: u64,
    #[serde(default)]
    days: u64,
}

async fn advance(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let a: Advance = body(&bytes)?;
    let secs = a.seconds + 60 * a.minutes + 3600 * a.hours + 86_400 * a.days;
    let now = e.advance(Duration::from_secs(secs) + Duration::from_millis(a.ms));
    ok(json!({ "now_ms": now }))
}

async fn settings(State(e): State<Emulator>) -> ControlResult {
    ok(e.settings())
}

async fn update_settings(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let patch: SettingsPatch = body(&bytes)?;
    ok(e.update_settings(patch))
}

async fn users(State(e): State<Emulator>) -> ControlResult {
    ok(e.users())
}

async fn create_user(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let new: NewUser = body(&bytes)?;
    ok(e.create_user(new)?)
}

async fn user(State(e): State<Emulator>, Path(psid): Path<String>) -> ControlResult {
    ok(e.user(&psid).ok_or(ControlError::UnknownUser(psid))?)
}

#[derive(Debug, Deserialize)]
struct ThreadQuery {
    since: Option<u64>,
    wait_ms: Option<u64>,
}

/// The thread; with `since=<version>` it long-polls until the thread changes.
async fn thread(
    State(e): State<Emulator>,
    Path(psid): Path<String>,
    Query(query): Query<ThreadQuery>,
) -> ControlResult {
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(25_000)).min(MAX_WAIT);
    let since = query.since;
    let probe = |e: &Emulator| {
        let view = e.thread(&psid);
        match (view, since) {
            (None, _) => Some(None),
            (Some(view), Some(since)) if view.version <= since => None,
            (Some(view), _) => Some(Some(view)),
        }
    };
    let view = match e.wait_until(wait, probe).await {
        Ok(view) => view,
        Err(_) => e.thread(&psid),
    };
    ok(view.ok_or(ControlError::UnknownUser(psid))?)
}

async fn user_sends(State(e): State<Emulator>, Path(psid): Path<String>, bytes: Bytes) -> ControlResult {
    let message: UserMessage = body(&bytes)?;
    ok(json!({ "mid": e.user_sends(&psid, message)? }))
}

#[derive(Debug, Default, Deserialize)]
struct RefBody {
    #[serde(default, rename = "ref")]
    reference: Option<String>,
}

async fn get_started(State(e): State<Emulator>, Path(psid): Path<String>, bytes: Bytes) -> ControlResult {
    let b: RefBody = body(&bytes)?;
    ok(json!({ "mid": e.user_taps_get_started(&psid, b.reference.as_deref())? }))
}

async fn open_link(State(e): State<Emulator>, Path(psid): Path<String>, bytes: Bytes) -> ControlResult {
    let b: RefBody = body(&bytes)?;
    ok(json!({ "outcome": e.user_opens_link(&psid, b.reference.as_deref())? }))
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// Set by the chat page: only counts when `read_on_page_open` is on.
    from_page: Option<String>,
}

async fn read(State(e): State<Emulator>, Path(psid): Path<String>, Query(q): Query<ReadQuery>) -> ControlResult {
    if q.from_page.is_some() && !e.settings().read_on_page_open {
        return ok(json!({ "watermark": Value::Null }));
    }
    ok(json!({ "watermark": e.user_reads(&psid)? }))
}

#[derive(Debug, Default, Deserialize)]
struct ReactBody {
    mid: String,
    #[serde(default)]
    emoji: Option<String>,
}

async fn react(State(e): State<Emulator>, Path(psid): Path<String>, bytes: Bytes) -> ControlResult {
    let b: ReactBody = body(&bytes)?;
    e.user_reacts(&psid, &b.mid, b.emoji.as_deref())?;
    ok(json!({ "ok": true }))
}

async fn block(State(e): State<Emulator>, Path(psid): Path<String>) -> ControlResult {
    e.user_blocks(&psid)?;
    ok(json!({ "blocked": true }))
}

async fn unblock(State(e): State<Emulator>, Path(psid): Path<String>) -> ControlResult {
    e.user_unblocks(&psid)?;
    ok(json!({ "blocked": false }))
}

#[derive(Debug, Default, Deserialize)]
struct TextBody {
    text: String,
}

async fn inbox_reply(State(e): State<Emulator>, Path(psid): Path<String>, bytes: Bytes) -> ControlResult {
    let b: TextBody = body(&bytes)?;
    if b.text.is_empty() {
        return Err(ControlError::Invalid("text must be non-empty".into()));
    }
    ok(json!({ "mid": e.inbox_replies(&psid, &b.text)? }))
}

async fn inbox_take(State(e): State<Emulator>, Path(psid): Path<String>) -> ControlResult {
    e.inbox_takes_thread(&psid)?;
    ok(json!({ "ok": true }))
}

async fn inbox_pass(State(e): State<Emulator>, Path(psid): Path<String>) -> ControlResult {
    e.inbox_passes_thread(&psid)?;
    ok(json!({ "ok": true }))
}

#[derive(Debug, Deserialize)]
struct SentQuery {
    psid: Option<String>,
}

async fn sent(State(e): State<Emulator>, Query(q): Query<SentQuery>) -> ControlResult {
    let mut sent = e.sent_messages();
    if let Some(psid) = q.psid {
        sent.retain(|m| m.psid == psid);
    }
    ok(sent)
}

async fn webhooks(State(e): State<Emulator>) -> ControlResult {
    ok(e.webhook_deliveries())
}

async fn webhook_events(State(e): State<Emulator>) -> ControlResult {
    ok(e.delivered_events())
}

async fn alerts(State(e): State<Emulator>) -> ControlResult {
    ok(e.alerts())
}

async fn verifications(State(e): State<Emulator>) -> ControlResult {
    ok(e.verifications())
}

async fn faults(State(e): State<Emulator>) -> ControlResult {
    ok(e.faults())
}

async fn clear_faults(State(e): State<Emulator>) -> ControlResult {
    e.clear_faults();
    ok(json!({ "cleared": true }))
}

async fn send_fault(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let rule: FaultRule<SendFault> =
        serde_json::from_slice(&bytes).map_err(|err| ControlError::Invalid(format!("bad fault rule: {err}")))?;
    e.push_send_fault(rule);
    ok(e.faults())
}

async fn webhook_fault(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let rule: FaultRule<WebhookFault> =
        serde_json::from_slice(&bytes).map_err(|err| ControlError::Invalid(format!("bad fault rule: {err}")))?;
    e.push_webhook_fault(rule);
    ok(e.faults())
}

#[derive(Debug, Default, Deserialize)]
struct SeedBody {
    seed: u64,
}

async fn seed(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let b: SeedBody = body(&bytes)?;
    e.reseed(b.seed);
    ok(json!({ "seed": b.seed }))
}

async fn revoke_token(State(e): State<Emulator>) -> ControlResult {
    e.revoke_token();
    ok(json!({ "token_revoked": true }))
}

async fn restore_token(State(e): State<Emulator>) -> ControlResult {
    e.restore_token();
    ok(json!({ "token_revoked": false }))
}

#[derive(Debug, Default, Deserialize)]
struct CallbackBody {
    url: Option<String>,
    #[serde(default)]
    skip_verification: bool,
}

async fn set_callback(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let b: CallbackBody = body(&bytes)?;
    if b.skip_verification {
        e.set_callback_url_unverified(b.url);
        return ok(json!({ "verified": true, "skipped": true }));
    }
    ok(e.set_callback_url(b.url).await)
}

async fn verify_callback(State(e): State<Emulator>) -> ControlResult {
    ok(e.verify_webhook().await)
}

#[derive(Debug, Default, Deserialize)]
struct SubscriptionBody {
    #[serde(default)]
    fields: Option<Vec<String>>,
}

async fn subscription(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let b: SubscriptionBody = body(&bytes)?;
    e.subscribe(b.fields);
    ok(json!({ "subscribed": true }))
}

async fn unsubscribe(State(e): State<Emulator>) -> ControlResult {
    e.unsubscribe();
    ok(json!({ "subscribed": false }))
}

#[derive(Debug, Default, Deserialize)]
struct GetStartedBody {
    #[serde(default)]
    payload: Option<String>,
}

async fn set_get_started(State(e): State<Emulator>, bytes: Bytes) -> ControlResult {
    let b: GetStartedBody = body(&bytes)?;
    let payload = b.payload.unwrap_or_else(|| "GET_STARTED".into());
    e.set_get_started(Some(&payload));
    ok(json!({ "get_started": { "payload": payload } }))
}

async fn remove_get_started(State(e): State<Emulator>) -> ControlResult {
    e.set_get_started(None);
    ok(json!({ "get_started": Value::Null }))
}

#[derive(Debug, Deserialize)]
struct IdleQuery {
    wait_ms: Option<u64>,
}

/// Waits until every emitted webhook event was delivered or dropped.
async fn idle(State(e): State<Emulator>, Query(q): Query<IdleQuery>) -> ControlResult {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(10_000)).min(MAX_WAIT);
    e.wait_idle(wait).await?;
    ok(json!({ "idle": true }))
}
