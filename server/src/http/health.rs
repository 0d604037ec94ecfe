//! `GET /healthz` and `GET /readyz`.
//!
//! `/healthz` is liveness: 200 `{"status": "ok"}` whenever the process serves HTTP, whatever its dependencies do
//! (a supervisor restarting this process would not bring the database back).
//!
//! `/readyz` is readiness: 200 when the database answers, every migration this build carries is applied and every
//! background worker runs; otherwise 503 with `"failed"` naming each failing check (`database`, `migrations`,
//! `workers`). The body says the rest: `{"status", "failed": [..], "database", "migrations", "workers": {name:
//! {state, restarts, last_failure, counters}}}`, and, with Messenger on, `"messenger": {"quarantined": n}`: webhook
//! deliveries that kept failing and wait for `parley messenger quarantine replay` (visible, but not a reason for
//! 503: later deliveries still apply). A load balancer sends traffic only to ready nodes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::state::AppState;
use crate::supervisor::WorkerState;

pub async fn get() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut failed = Vec::new();
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness: the database does not answer");
            failed.push("database");
            "unavailable".to_string()
        }
    };
    let migrations = if failed.is_empty() {
        match state.store.missing_migrations().await {
            Ok(missing) if missing.is_empty() => "ok".to_string(),
            Ok(missing) => {
                failed.push("migrations");
                let versions: Vec<String> = missing.iter().map(i64::to_string).collect();
                format!("not applied: {} (run `parley migrate`)", versions.join(", "))
            }
            Err(e) => {
                tracing::warn!(error = ?e, "readiness: cannot read the applied migrations");
                failed.push("migrations");
                "unknown".to_string()
            }
        }
    } else {
        "unknown".to_string()
    };
    let workers = state.workers.snapshot();
    let down: Vec<&str> = workers.iter().filter(|(_, s)| s.state != WorkerState::Running).map(|(n, _)| *n).collect();
    if !down.is_empty() {
        failed.push("workers");
    }
    let ready = failed.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "failed": failed,
        "database": database,
        "migrations": migrations,
        "workers": workers,
    });
    if !down.is_empty() {
        body["workers_down"] = serde_json::json!(down);
    }
    if state.messenger.is_some() && database == "ok" {
        match state.store.quarantined_delivery_count().await {
            Ok(quarantined) => body["messenger"] = serde_json::json!({ "quarantined": quarantined }),
            Err(e) => tracing::warn!(error = ?e, "readiness: cannot count quarantined deliveries"),
        }
    }
    (status, Json(body))
}
