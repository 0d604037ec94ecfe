//! The HTTP layer's error type: each variant is one status a client can see. 5xx bodies are opaque; the error
//! itself rides in the response extensions and the `log_errors` middleware logs it (never inside
//! `into_response`, so handlers stay free of logging and nothing is logged twice).

use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;

use crate::services::ServiceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid session.
    #[error("sign in first")]
    Unauthorized,
    /// 403: the request's `Origin` is not allowed for this resource.
    #[error("this origin is not allowed")]
    ForbiddenOrigin,
    /// 429: this client address holds too many sockets already.
    #[error("too many connections from your network; close some tabs or try again later")]
    TooManySockets,
    /// 404: the named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 503: a dependency (the database) is not answering.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: anything else; details only in the log.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound("record"),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(why) => Self::BadRequest(why.to_string()),
            ServiceError::NotFound => Self::NotFound("conversation"),
            ServiceError::Store(e) => e.into(),
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::ForbiddenOrigin => (StatusCode::FORBIDDEN, ErrorCode::Unauthorized),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::TooManySockets => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

/// The logged form of an error, carried in response extensions.
#[derive(Clone)]
pub struct LoggedError(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(LoggedError(Arc::new(self)));
        response
    }
}

/// Logs server-side failures once, with their cause chain.
pub async fn log_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if let Some(LoggedError(err)) = response.extensions().get::<LoggedError>() {
        match &**err {
            ApiError::Internal(e) | ApiError::Unavailable(e) => tracing::error!(%path, error = ?e, "request failed"),
            other => tracing::debug!(%path, error = %other, "request refused"),
        }
    }
    response
}
