//! `GET /frame/{site_key}`: the page inside the widget's iframe, on the chat server's own origin.
//!
//! Only the site's allowed origins may frame it (`Content-Security-Policy: frame-ancestors …`). The page carries
//! the site's public boot settings as JSON and loads the content-hashed Wasm chat; the host page never runs Wasm,
//! so it never needs `'wasm-unsafe-eval'`.

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::assets::Assets;
use crate::error::ApiError;
use crate::state::AppState;

/// Public settings the widget boots with.
#[derive(Serialize)]
struct Boot<'a> {
    site_key: &'a str,
    site_name: &'a str,
    greeting: &'a str,
    allowed_origins: Vec<String>,
    ws_url: String,
    /// Whether "Continue on Messenger" is offered.
    messenger: bool,
}

/// JSON that is safe inside `<script type="application/json">`: no `<` can close the element.
fn script_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    Ok(serde_json::to_string(value).map_err(|e| ApiError::Internal(e.into()))?.replace('<', "\\u003c"))
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Origins as they may appear in a CSP source list (scheme://host[:port] only).
fn csp_origin(origin: &str) -> Option<&str> {
    let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
        && origin.bytes().all(|b| b.is_ascii_alphanumeric() || b".:/-[]".contains(&b))
        && origin.matches('/').count() == 2;
    ok.then_some(origin)
}

pub async fn get(State(state): State<AppState>, Path(site_key): Path<String>) -> Result<Response, ApiError> {
    let site = state.store.site_by_key(&site_key).await?.ok_or(ApiError::NotFound("site"))?;
    let origins = site.allowed_origins();
    // Offered only where the site reaches a Messenger Page (its own, or its workspace's).
    let messenger = match &state.messenger {
        Some(messenger) => messenger.page_for_site(&site.id).await.map_err(|e| ApiError::Internal(e.into()))?.is_some(),
        None => false,
    };
    let boot = Boot {
        site_key: &site.key,
        site_name: &site.name,
        greeting: &site.greeting,
        allowed_origins: origins.clone(),
        ws_url: format!("/ws/visitor?site={}", site.key),
        messenger,
    };
    let manifest = &state.assets.manifest;
    let head_assets = match (Assets::url(&manifest.widget_css), Assets::url(&manifest.widget_boot)) {
        (Some(css), Some(js)) => format!(
            "<link rel=\"stylesheet\" href=\"{}\"><script type=\"module\" src=\"{}\"></script>",
            escape_attr(&css),
            escape_attr(&js)
        ),
        _ => String::new(),
    };
    let fallback = if head_assets.is_empty() { "<p>The chat is not built yet (cargo xtask build).</p>" } else { "" };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Chat</title>\
         <script id=\"parley-boot\" type=\"application/json\">{}</script>{head_assets}</head><body>{fallback}</body></html>",
        script_json(&boot)?
    );
    let ancestors: Vec<&str> = origins.iter().filter_map(|o| csp_origin(o)).collect();
    let ancestors = if ancestors.is_empty() { "'none'".to_string() } else { ancestors.join(" ") };
    let ws_origin = state.public_origin.replacen("http", "ws", 1);
    let csp = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {ws_origin}; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let mut response = html.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_str(&csp).map_err(|e| ApiError::Internal(e.into()))?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_json_cannot_close_its_script_element() {
        let json = script_json(&serde_json::json!({"greeting": "</script><script>alert(1)</script>"})).expect("json");
        assert!(!json.contains('<'), "{json}");
    }

    #[test]
    fn only_plain_origins_enter_the_csp() {
        assert_eq!(csp_origin("https://shop.example"), Some("https://shop.example"));
        assert_eq!(csp_origin("http://127.0.0.1:8080"), Some("http://127.0.0.1:8080"));
        assert_eq!(csp_origin("https://a.example; script-src *"), None);
        assert_eq!(csp_origin("https://a.example/path"), None);
        assert_eq!(csp_origin("javascript:alert(1)"), None);
    }
}
