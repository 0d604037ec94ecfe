//! `GET /metrics`: the Prometheus text exposition of [`crate::meters`], with the levels (sockets, outbox, quarantine,
//! workers, pool) read now. Off unless `metrics.enabled`: then 404, like any unknown path. On, a scrape must send
//! `Authorization: Bearer <metrics.token>` (compared in constant time), else 401.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::meters::{Levels, WorkerLevel};
use crate::state::AppState;
use crate::supervisor::WorkerState;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = state.meters.scrape_token() else { return StatusCode::NOT_FOUND.into_response() };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    if !bool::from(token.expose_secret().as_bytes().ct_eq(given)) {
        return (StatusCode::UNAUTHORIZED, [(WWW_AUTHENTICATE, "Bearer")]).into_response();
    }
    let levels = levels(&state).await;
    ([(CONTENT_TYPE, TEXT_FORMAT)], state.meters.render(&levels)).into_response()
}

/// Levels from their owners; a database that does not answer leaves its levels at their last value rather than
/// failing the scrape (`/readyz` says what is wrong).
async fn levels(state: &AppState) -> Levels {
    let (visitor_sockets, agent_sockets) = state.hub.connection_counts();
    let pool = state.store.pool_usage();
    let mut levels = Levels {
        visitor_sockets,
        agent_sockets,
        pool_open: pool.open,
        pool_idle: pool.idle,
        pool_max: pool.max,
        workers: state
            .workers
            .snapshot()
            .into_iter()
            .map(|(name, s)| WorkerLevel { name, running: s.state == WorkerState::Running, restarts: s.restarts })
            .collect(),
        ..Levels::default()
    };
    match state.store.outbox_backlog().await {
        Ok(backlog) => {
            let age =
                |at: i64| Duration::from_millis(u64::try_from(state.clock.now_ms().saturating_sub(at)).unwrap_or(0));
            levels.outbox = Some((backlog.pending, backlog.oldest_created_at.map(age)));
        }
        Err(e) => tracing::warn!(error = ?e, "metrics: cannot read the outbox backlog"),
    }
    match state.store.quarantined_delivery_count().await {
        Ok(n) => levels.quarantined = Some(n),
        Err(e) => tracing::warn!(error = ?e, "metrics: cannot count quarantined deliveries"),
    }
    levels
}
