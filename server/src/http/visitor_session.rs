//! `POST /api/visitor/session?site=KEY`: where a web visitor's session lives, and the cookies that hold it.
//!
//! The chat frame calls this before it opens its socket (same origin only: `Origin` must be this server's own
//! origin). The answer sets (or refreshes) a visitor cookie on the chat origin:
//! `HttpOnly; Secure; SameSite=None; Partitioned; Path=/`. Browsers keep a partitioned cookie (CHIPS) per top-level
//! site even where third-party storage is blocked, so the session survives reloads and new tabs of the same host
//! site; `HttpOnly` keeps it out of reach of every script, the host page's and the frame's. The socket upgrade from
//! the frame reads it ([`cookie_token`]).
//!
//! Which token: the cookie's, else the frame's stored token (a session from before the cookie), else a new one.
//! Minting writes nothing to the database: the contact is created when the visitor first writes (`ws::visitor`).
//!
//! Two tabs of a brand-new visitor opened at the same instant may both call before either answer has set a cookie
//! (Chromium refuses a third-party frame the Web Lock that would order them), so both mint. With one cookie name the
//! answer landing last would overwrite the first, after the first tab may already have written under it: two
//! conversations. So a minted token never overwrites: it gets a cookie of its own, `parley_v_<site>.<8 hex>`, and the
//! browser's cookie jar only ever grows. Browsers send cookies of one path oldest first (RFC 6265 §5.4, and an
//! overwrite with the same value keeps the creation time), so *the first visitor cookie in the request* names the
//! token that landed first: every request that carries any visitor cookie carries that one, first, and every tab
//! ends on it whatever the order of the answers. The next session call refreshes that cookie and expires the others.
//!
//! Every answer reports `sid`, a fingerprint of the token in effect ([`sid`]), which `welcome` carries too. With
//! `"check": true` the call only reports the fingerprint of the cookie it received (or none) and sets nothing; the
//! frame makes it before its first write, and reconnects when its socket speaks for another token than the jar.
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
    /// Only report the fingerprint of the cookie the request carries; set nothing, mint nothing.
    check: bool,
}

#[derive(Serialize)]
struct SessionResponse {
    /// Whether a new token was minted (no cookie and no stored token came with the request): the frame tells the
    /// host site's other tabs, which then reconnect so every tab ends on the cookie the browser kept.
    minted: bool,
    /// The fingerprint of the token now in effect ([`sid`]); with `check`, of the cookie the request carried (none
    /// without one).
    sid: Option<String>,
    /// Only with `storage_access`: the token the frame must present in `hello`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The plain visitor cookie name for a site key: `parley_v_<key>`, or a digest of the key when the key has characters
/// a cookie name may not carry. Minted tokens get this name and a suffix (`cookie_name_for`).
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

/// A token's public fingerprint: 16 hex digits of SHA-256 over a domain-separation prefix and the token. It tells
/// two tokens apart without revealing either (64 bits of a one-way digest of 256 random bits).
pub fn sid(token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"parley visitor sid\0");
    digest.update(token.as_bytes());
    hex::encode(&digest.finalize()[..8])
}

/// The cookie name a token minted (or adopted) for a site gets: `<cookie_name>.<first 8 hex of its sid>`, so it
/// never overwrites another tab's token.
fn cookie_name_for(site_key: &str, token: &str) -> String {
    format!("{}.{}", cookie_name(site_key), &sid(token)[..8])
}

/// Whether a cookie name is one of this site's visitor cookies: the plain name, or the plain name and a suffix.
fn is_visitor_cookie(name: &str, plain: &str) -> bool {
    name.strip_prefix(plain).is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|s| (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// This site's well-formed visitor cookies in the request as `(name, token)`, in the browser's order: oldest first.
pub fn visitor_cookies(headers: &HeaderMap, site_key: &str) -> Vec<(String, String)> {
    let plain = cookie_name(site_key);
    super::cookie_pairs(headers)
        .filter(|(k, v)| is_visitor_cookie(k, &plain) && valid_token(v))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The visitor token the request's cookies name for this site: the oldest visitor cookie's (see the module doc).
pub fn cookie_token(headers: &HeaderMap, site_key: &str) -> Option<String> {
    visitor_cookies(headers, site_key).into_iter().next().map(|(_, token)| token)
}

/// The `Set-Cookie` value that stores `token` under the cookie `name`.
pub fn set_cookie(name: &str, token: &str, partitioned: bool) -> String {
    let partition = if partitioned { "; Partitioned" } else { "" };
    format!("{name}={token}; Max-Age={COOKIE_MAX_AGE_SECS}; Path=/; Secure; HttpOnly; SameSite=None{partition}")
}

/// The `Set-Cookie` value that expires the partitioned cookie `name`.
fn expire_cookie(name: &str) -> String {
    format!("{name}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=None; Partitioned")
}

fn header(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|e| ApiError::Internal(e.into()))
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
    let jar = visitor_cookies(&headers, &site.key);
    let mut cookies = Vec::new();
    let reply = if request.check {
        SessionResponse { minted: false, sid: jar.first().map(|(_, token)| sid(token)), token: None }
    } else {
        let (name, token, minted) = match jar.first() {
            Some((name, token)) => (name.clone(), token.clone(), false),
            None => {
                let stored = request.token.filter(|t| valid_token(t));
                let minted = stored.is_none();
                let token = stored.unwrap_or_else(auth::new_token);
                (cookie_name_for(&site.key, &token), token, minted)
            }
        };
        if request.storage_access {
            cookies.push(set_cookie(&cookie_name(&site.key), &token, false));
        } else {
            // Same name, same value: the browser keeps the cookie's creation time, so it stays the oldest.
            cookies.push(set_cookie(&name, &token, true));
            cookies
                .extend(jar.iter().skip(1).filter(|(other, _)| *other != name).map(|(other, _)| expire_cookie(other)));
        }
        SessionResponse { minted, sid: Some(sid(&token)), token: request.storage_access.then_some(token) }
    };
    let cookies = cookies.iter().map(|c| header(c)).collect::<Result<Vec<_>, _>>()?;
    let mut response = (StatusCode::OK, axum::Json(reply)).into_response();
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
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

    #[test]
    fn the_oldest_visitor_cookie_names_the_token() {
        let (first, second) = (auth::new_token(), auth::new_token());
        let (a, b) = (cookie_name_for("demo", &first), cookie_name_for("demo", &second));
        assert!(a.starts_with("parley_v_demo.") && a.len() == "parley_v_demo.".len() + 8, "{a}");
        let mut headers = HeaderMap::new();
        let header = format!("x=1; {a}={first}; parley_v_demo2.00ff00ff={}; {b}={second}", auth::new_token());
        headers.insert(COOKIE, HeaderValue::from_str(&header).expect("header"));
        assert_eq!(cookie_token(&headers, "demo"), Some(first.clone()));
        assert_eq!(visitor_cookies(&headers, "demo"), vec![(a, first.clone()), (b, second)]);
        assert!(!is_visitor_cookie("parley_v_demo.xyz", "parley_v_demo"));
        assert!(is_visitor_cookie("parley_v_demo", "parley_v_demo"));
    }

    #[test]
    fn a_sid_is_a_short_fingerprint_that_tells_tokens_apart() {
        let token = auth::new_token();
        let fingerprint = sid(&token);
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fingerprint, sid(&token));
        assert_ne!(fingerprint, sid(&auth::new_token()));
        // Not the token's plain digest (the one contacts are stored under) either.
        assert!(!hex::encode(auth::token_hash(&token)).starts_with(&fingerprint));
    }
}
