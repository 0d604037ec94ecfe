//! `GET /attachments/{id}`: files that came with messages (downloaded from Messenger by the download queue, since
//! Meta's URLs expire) and cached profile pictures. Ids are 256-bit random tokens. Served with `nosniff` and a
//! sandboxing CSP so a hostile file cannot run as a page on the chat origin. A file still being downloaded is
//! waited for (up to [`WAIT`]); one that could not be downloaded answers 410 "attachment unavailable".
//!
//! A request carrying an agent's console session is scoped to that agent's workspace: another workspace's file
//! answers 404, as an unknown id does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a request waits for a file that is still being downloaded.
const WAIT: Duration = Duration::from_secs(20);

/// Types shown inline; anything else downloads.
const INLINE: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "audio/mpeg", "audio/wav"];

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if id.len() != 43 {
        return Err(ApiError::NotFound("attachment"));
    }
    if let Some((_, workspace)) = crate::console::session_agent_in(&state, &headers).await?
        && state.store.attachment_workspace(&id).await?.is_some_and(|owner| owner != workspace)
    {
        return Err(ApiError::NotFound("attachment"));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let (content_type, bytes) = loop {
        if let Some(found) = state.store.attachment(&id).await? {
            break found;
        }
        match state.store.attachment_status(&id).await? {
            None => return Err(ApiError::NotFound("attachment")),
            Some((status, _)) if status == "failed" => {
                return Ok((StatusCode::GONE, "attachment unavailable").into_response());
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Ok((StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")], "attachment not downloaded yet")
                    .into_response());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
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
