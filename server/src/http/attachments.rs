//! `GET /attachments/{id}`: files that came with messages (downloaded from Messenger at once, since Meta's URLs
//! expire) and cached profile pictures. Ids are 256-bit random tokens. Served with `nosniff` and a sandboxing CSP
//! so a hostile file cannot run as a page on the chat origin.

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Types shown inline; anything else downloads.
const INLINE: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "audio/mpeg", "audio/wav"];

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if id.len() != 43 {
        return Err(ApiError::NotFound("attachment"));
    }
    let (content_type, bytes) = state.store.attachment(&id).await?.ok_or(ApiError::NotFound("attachment"))?;
    let inline = INLINE.contains(&content_type.as_str());
    let content_type = if inline { content_type } else { "application/octet-stream".to_string() };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static(if inline { "inline" } else { "attachment" }));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    Ok(response)
}
