//! `GET /healthz`: 200 when the database answers and every background worker runs, 503 otherwise. The JSON body
//! says which part is down: `{"status", "database", "workers": {name: {state, restarts, last_failure, counters}}}`,
//! and, with Messenger on, `"messenger": {"quarantined": n}`: webhook deliveries that kept failing and wait for
//! `parley messenger quarantine replay` (visible, but not a reason for 503: later deliveries still apply).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::state::AppState;

pub async fn get(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = ?e, "health check: the database does not answer");
            false
        }
    };
    let workers = state.workers.snapshot();
    let healthy = database && state.workers.all_running();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "unavailable" },
        "workers": workers,
    });
    if state.messenger.is_some() && database {
        match state.store.quarantined_delivery_count().await {
            Ok(quarantined) => body["messenger"] = serde_json::json!({ "quarantined": quarantined }),
            Err(e) => tracing::warn!(error = ?e, "health check: cannot count quarantined deliveries"),
        }
    }
    (status, Json(body))
}
