//! The simulated customer's Messenger-like chat page at `/m.me/{page}` (`?ref=…`).
//!
//! One page = one customer, chosen by `?psid=` or by the `emu_psid` cookie on the
//! emulator's origin (a fresh customer is created otherwise, or with `?new=1`). The page
//! itself is static HTML/JS/CSS (embedded); it talks to the control API: `open` (sends
//! the referral into an existing thread), `get_started`, `messages`, `read`, and a long
//! poll on `thread`. Everything dynamic is inserted as text, never as HTML.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::emulator::Emulator;
use crate::state::NewUser;

const HTML: &str = include_str!("../assets/chat.html");
const JS: &str = include_str!("../assets/chat.js");
const CSS: &str = include_str!("../assets/chat.css");
const COOKIE: &str = "emu_psid";

/// Routes for the chat page and its assets.
pub fn router() -> Router<Emulator> {
    Router::new()
        .route("/m.me/{page}", get(chat))
        .route("/__emu/assets/chat.js", get(script))
        .route("/__emu/assets/chat.css", get(style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

#[derive(Debug, Deserialize)]
struct ChatQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
    psid: Option<String>,
    new: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

async fn chat(
    State(emulator): State<Emulator>,
    Path(page): Path<String>,
    Query(query): Query<ChatQuery>,
    headers: HeaderMap,
) -> Response {
    let page_name =
        emulator.with(|w| (page == w.cfg.page_username || page == w.cfg.page_id).then(|| w.cfg.page_name.clone()));
    let Some(page_name) = page_name else {
        return (StatusCode::NOT_FOUND, "This Page isn't available in the Messenger sandbox.").into_response();
    };
    let wanted = query.psid.clone().or_else(|| (query.new.is_none()).then(|| cookie(&headers, COOKIE)).flatten());
    let existing = wanted.and_then(|psid| emulator.user(&psid));
    let user = match existing {
        Some(user) => user,
        None => {
            let new = NewUser {
                first_name: query.first_name.clone(),
                last_name: query.last_name.clone(),
                ..NewUser::default()
            };
            match emulator.create_user(new) {
                Ok(user) => user,
                Err(error) => return error.into_response(),
            }
        }
    };
    let initial = page_name.chars().next().unwrap_or('P').to_string();
    let html = HTML
        .replace("{{PSID}}", &escape(&user.psid))
        .replace("{{REF}}", &escape(query.reference.as_deref().unwrap_or("")))
        .replace("{{USER_NAME}}", &escape(&format!("{} {}", user.first_name, user.last_name)))
        .replace("{{PAGE_INITIAL}}", &escape(&initial))
        .replace("{{PAGE_NAME}}", &escape(&page_name));
    let set_cookie = format!("{COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000", user.psid);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::SET_COOKIE, set_cookie),
        ],
        html,
    )
        .into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS).into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Escapes text for HTML text and attribute contexts.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(escape(r#"<img src=x onerror="a">&'"#), "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_page_has_the_accessible_controls() {
        assert!(HTML.contains(r#"aria-label="Message""#));
        assert!(HTML.contains(">Send</button>"));
        assert!(HTML.contains(">Get Started</button>"));
        assert!(HTML.contains(r#"role="log""#));
        assert!(!JS.contains("innerHTML"));
    }
}
