//! `GET /healthz`: 200 when the database answers, 503 otherwise.

use axum::extract::State;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn get(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await.map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok("ok")
}
