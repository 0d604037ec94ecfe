//! `POST /api/visitor/session?site=KEY`: where a web visitor's session lives, and the cookie that holds it.
//!
//! The chat frame calls this before it opens its socket (same origin only: `Origin` must be this server's own
//! origin), under a Web Lock that the host site's tabs share, so two tabs of a brand-new visitor opened at the same
//! instant get one token instead of two. The answer sets (or refreshes) the visitor cookie on the chat origin, one
//! per site key: `HttpOnly; Secure; SameSite=None; Partitioned; Path=/`. Browsers keep a partitioned cookie (CHIPS)
//! per top-level site even where third-party storage is blocked, so the session survives reloads and new tabs of
//! the same host site; `HttpOnly` keeps it out of reach of every script, the host page's and the frame's. The
//! socket upgrade from the frame reads it ([`cookie_token`]).
//!
//! Which token: the cookie's, else the frame's stored token (a session from before the cookie), else a new one.
//! Minting writes nothing to the database: the contact is created when the visitor first writes (`ws::visitor`).
//! Where the browser refuses a third-party frame Web Locks (Chromium does, like storage), two tabs may mint at
//! once; the answer's `minted` lets the frame tell its sibling tabs (BroadcastChannel, which still works there), and
//! every tab reconnects on the cookie the browser kept last, before the visitor can write.
//! When the frame has storage access through the Storage Access API (`"storage_access": true`, used where neither
//! partitioned cookies nor frame storage work), the cookie is set unpartitioned and the token is also returned,
//! because the frame must then present it in `hello` itself.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

/// How long the browser keeps the visitor cookie (400 days, the longest Chromium allows).
pub const COOKIE_MAX_AGE_SECS: u64 = 400 * 24 * 3600;

#[derive(Deserialize)]
pub struct SiteQuery {
    site: String,
}

/// The request body (optional; `{}` when empty).
#[derive(Default, Deserialize)]
#[serde(default)]
struct SessionRequest {
    /// A token the frame kept in its own storage from an earlier session.
    token: Option<String>,
    /// The frame holds storage access (Storage Access API): set the cookie unpartitioned.
    storage_access: bool,
}

#[derive(Serialize)]
struct SessionResponse {
    /// Whether a new token was minted (no cookie and no stored token came with the request): the frame tells the
    /// host site's other tabs, which then reconnect so every tab ends on the cookie the browser kept.
    minted: bool,
    /// Only with `storage_access`: the token the frame must present in `hello`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The visitor cookie's name for a site key: `parley_v_<key>`, or a digest of the key when the key has characters a
/// cookie name may not carry.
pub fn cookie_name(site_key: &str) -> String {
    let plain = !site_key.is_empty()
        && site_key.len() <= 64
        && site_key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("parley_v_{site_key}")
    } else {
        format!("parley_v_{}", hex::encode(&Sha256::digest(site_key)[..8]))
    }
}

/// Whether a string has the shape of a visitor token (ours are 43 characters of base64url).
pub fn valid_token(token: &str) -> bool {
    (16..=128).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The visitor token in the request's cookies for this site, if any well-formed one is there.
pub fn cookie_token(headers: &HeaderMap, site_key: &str) -> Option<String> {
    super::cookie_value(headers, &cookie_name(site_key), valid_token)
}

/// The `Set-Cookie` value that stores `token` for a site.
pub fn set_cookie(site_key: &str, token: &str, partitioned: bool) -> String {
    let partition = if partitioned { "; Partitioned" } else { "" };
    format!(
        "{}={token}; Max-Age={COOKIE_MAX_AGE_SECS}; Path=/; Secure; HttpOnly; SameSite=None{partition}",
        cookie_name(site_key)
    )
}

pub async fn post(
    State(state): State<AppState>,
    Query(query): Query<SiteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
    if origin != &*state.public_origin {
        return Err(ApiError::ForbiddenOrigin);
    }
    let site = state.store.site_by_key(&query.site).await?.ok_or(ApiError::NotFound("site"))?;
    let request: SessionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SessionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("bad session request: {e}")))?
    };
    let known = cookie_token(&headers, &site.key).or(request.token.filter(|t| valid_token(t)));
    let minted = known.is_none();
    let token = known.unwrap_or_else(auth::new_token);
    let cookie = HeaderValue::from_str(&set_cookie(&site.key, &token, !request.storage_access))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let reply = SessionResponse { minted, token: request.storage_access.then_some(token) };
    let mut response = (StatusCode::OK, axum::Json(reply)).into_response();
    response.headers_mut().insert(SET_COOKIE, cookie);
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::COOKIE;

    #[test]
    fn cookie_names_are_per_site_and_always_valid() {
        assert_eq!(cookie_name("demo"), "parley_v_demo");
        assert_ne!(cookie_name("a b"), cookie_name("a;b"));
        assert!(cookie_name("a=b; c").bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn only_this_sites_well_formed_cookie_is_read() {
        let token = auth::new_token();
        let mut headers = HeaderMap::new();
        let other = format!("parley_v_other={}", auth::new_token());
        headers.insert(COOKIE, HeaderValue::from_str(&format!("{other}; parley_v_demo={token}")).expect("header"));
        assert_eq!(cookie_token(&headers, "demo"), Some(token));
        headers.insert(COOKIE, HeaderValue::from_static("parley_v_demo=short; x=y"));
        assert_eq!(cookie_token(&headers, "demo"), None);
        assert!(!valid_token("has space in it, long enough"));
    }
}
