//! Plain HTTP routes (everything that is not a WebSocket or the console): health and readiness, metrics, the chat
//! frame page, the visitor session cookie, and the built front-end files. Each submodule owns its routes.

pub mod attachments;
pub mod frame;
pub mod health;
pub mod metrics;
pub mod static_files;
pub mod visitor_session;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The first value of the cookie `name` in a request's `Cookie` headers that `accept` takes.
pub fn cookie_value(headers: &HeaderMap, name: &str, accept: impl Fn(&str) -> bool) -> Option<String> {
    cookie_pairs(headers).find(|(k, v)| *k == name && accept(v)).map(|(_, v)| v.to_string())
}

/// Every `name=value` pair of a request's `Cookie` headers, in the order the browser sent them (oldest cookie first
/// among those of one path, RFC 6265 §5.4).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}
