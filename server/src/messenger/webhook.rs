//! `GET|POST /webhooks/messenger`: Meta's verification handshake and event deliveries.
//!
//! POST checks the signature over the exact raw bytes before anything else; a bad or missing one gets 403 and
//! nothing is stored. A good one is inserted raw into `webhook_deliveries` (committed, so on disk on either engine,
//! and on PostgreSQL shared by every node; batched with the deliveries arriving alongside it, see
//! [`super::landing`]) before Meta gets its 200, and the intake worker is woken to apply it.
//! Only when that insert fails or takes longer than [`DATABASE_WAIT`] (database unreachable, locked, disk full)
//! does the delivery go to this node's durable spool instead (fsynced, still answered 200); the intake drains the
//! spool into the database on every pass, so the node moves its own fallback there once the database is back. If
//! the spool fails too, the answer is 503 and Meta retries: nothing unstored is ever acked.
//!
//! An insert that timed out may still commit afterwards (the driver finishes a statement already sent), so a
//! delivery can end up both in the table and in the spool; every event is applied idempotently (see
//! [`super::intake`]), so that stores a duplicate raw row, never a duplicate message.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::signature;
use crate::meters::WebhookOutcome;
use crate::state::AppState;

/// How long a delivery waits for the database before it is spooled instead: bounds the time to answer Meta.
pub const DATABASE_WAIT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Answers the subscription handshake with the raw challenge.
pub async fn verify(State(state): State<AppState>, Query(query): Query<Handshake>) -> Response {
    let Some(messenger) = &state.messenger else { return StatusCode::NOT_FOUND.into_response() };
    let expected = messenger.settings.verify_token.expose_secret().as_bytes();
    let given = query.verify_token.as_deref().unwrap_or("").as_bytes();
    let token_ok = !expected.is_empty() && bool::from(expected.ct_eq(given));
    match (query.mode.as_deref(), token_ok, query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain")], challenge).into_response()
        }
        _ => {
            tracing::info!("webhook verification refused");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

/// Receives a delivery.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(messenger) = &state.messenger else { return StatusCode::NOT_FOUND.into_response() };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = messenger.settings.app_secret.expose_secret().as_bytes();
    if let Err(e) = signature::verify(secret, &body, header("x-hub-signature-256"), header("x-hub-signature")) {
        tracing::warn!(reason = %e, "webhook delivery refused");
        state.meters.webhook_delivery(WebhookOutcome::Refused);
        return StatusCode::FORBIDDEN.into_response();
    }
    let stored = match tokio::time::timeout(DATABASE_WAIT, messenger.landing.store(body.clone())).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot store a webhook delivery in the database; spooling it");
            false
        }
        Err(_) => {
            tracing::warn!(
                wait_ms = DATABASE_WAIT.as_millis(),
                "the database is too slow for a webhook delivery; spooling it"
            );
            false
        }
    };
    if !stored && let Err(e) = messenger.spool.write(&body).await {
        // Stored nowhere: let Meta retry.
        tracing::error!(error = %e, "cannot spool a webhook delivery either");
        state.meters.webhook_delivery(WebhookOutcome::Unavailable);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    messenger.intake_wake.notify_one();
    state.meters.webhook_delivery(WebhookOutcome::Accepted);
    (StatusCode::OK, "EVENT_RECEIVED").into_response()
}
