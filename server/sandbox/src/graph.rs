//! The emulated Graph API: request parsing, authentication and the endpoint table.
//!
//! Paths are accepted with any `/vNN.N/` prefix or unversioned. The token comes from
//! `access_token` (query or body) or `Authorization: Bearer|OAuth`. Bodies are JSON or
//! form-encoded with JSON-encoded values (`recipient={"id":"…"}`). The Send API and its
//! validation live in `graph/send.rs`; the other edges are here.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{ALL_FIELDS, PAGE_INBOX_APP_ID};
use crate::emulator::Emulator;
use crate::errors::GraphError;
use crate::state::World;

pub mod send;

/// Largest batch Graph accepts.
const MAX_BATCH: usize = 50;

/// A parsed Graph request.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    /// HTTP method.
    pub method: Method,
    /// Path segments after the optional version prefix.
    pub segments: Vec<String>,
    /// Query and body parameters merged (body wins); JSON-looking form values parsed.
    pub params: Map<String, Value>,
    /// Access token, from wherever it came.
    pub token: Option<String>,
}

impl GraphRequest {
    /// Parses method, path, query, headers and body.
    pub fn parse(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Self, GraphError> {
        let mut segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if segments.first().is_some_and(|s| is_version(s)) {
            segments.remove(0);
        }
        let mut params = Map::new();
        if let Some(query) = query {
            merge_form(&mut params, query.as_bytes())?;
        }
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !body.iter().all(u8::is_ascii_whitespace) {
            let json_first = content_type.starts_with("application/json")
                || (!content_type.starts_with("application/x-www-form-urlencoded") && body.first() == Some(&b'{'));
            if json_first {
                merge_json(&mut params, body)?;
            } else {
                merge_form(&mut params, body)?;
            }
        }
        let mut token = params.remove("access_token").and_then(|v| v.as_str().map(str::to_owned));
        if token.is_none() {
            token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("OAuth ")))
                .map(|t| t.trim().to_owned());
        }
        Ok(Self { method, segments, params, token })
    }

    /// A string parameter.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }

    /// A list parameter given as a JSON array or a comma-separated string.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        match self.params.get(key)? {
            Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
            Value::String(text) => {
                Some(text.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            }
            _ => None,
        }
    }

    /// The PSID in `recipient` (`{"id": …}`, or a bare id as in `thread_owner`).
    pub fn recipient_id(&self) -> Option<String> {
        match self.params.get("recipient")? {
            Value::Object(recipient) => recipient.get("id").and_then(id_string),
            other => id_string(other),
        }
    }
}

/// An id given as a string or a number.
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_version(segment: &str) -> bool {
    segment.strip_prefix('v').and_then(|rest| rest.split_once('.')).is_some_and(|(major, minor)| {
        !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) && minor.bytes().all(|b| b.is_ascii_digit())
    })
}

fn merge_json(params: &mut Map<String, Value>, body: &[u8]) -> Result<(), GraphError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            params.extend(object);
            Ok(())
        }
        _ => Err(GraphError::param("Invalid JSON in the request body")),
    }
}

fn merge_form(params: &mut Map<String, Value>, body: &[u8]) -> Result<(), GraphError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| GraphError::param("Malformed form body"))?;
    for (key, value) in pairs {
        let trimmed = value.trim_start();
        let parsed = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            serde_json::from_str(&value)
                .map_err(|_| GraphError::param(format!("param {key} must be a valid JSON value")))?
        } else {
            Value::String(value)
        };
        params.insert(key, parsed);
    }
    Ok(())
}

/// The fallback handler: every path that is not `/__emu/…` or `/m.me/…` is Graph.
pub async fn handle(
    State(emulator): State<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match GraphRequest::parse(method, uri.path(), uri.query(), &headers, &body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    if request.segments.is_empty() && request.method == Method::POST {
        return batch(&emulator, request).await.into_response();
    }
    match route(&emulator, request).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Runs one (non-batch) Graph request.
pub async fn route(emulator: &Emulator, request: GraphRequest) -> Result<Value, GraphError> {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let method = request.method.clone();
    match (method.as_str(), segments.as_slice()) {
        ("POST", [node, "messages"]) => send::send(emulator, &request, node).await,
        ("GET", ["debug_token"]) => emulator.with(|w| debug_token(w, &request)),
        ("GET", [node]) => emulator.with(|w| node_info(w, &request, node)),
        (_, [node, "subscribed_apps"]) => emulator.with(|w| subscribed_apps(w, &request, node)),
        (_, [node, "messenger_profile"]) => emulator.with(|w| messenger_profile(w, &request, node)),
        ("GET", [node, "thread_owner"]) => emulator.with(|w| thread_owner(w, &request, node)),
        ("POST", [node, edge]) if edge.ends_with("_thread_control") => {
            emulator.with(|w| thread_control(w, &request, node, edge))
        }
        (_, []) => Err(GraphError::unknown_path("/")),
        (method, [node, ..]) => {
            let authorized = emulator.with(|w| authenticate(w, &request));
            authorized?;
            if segments.len() == 2 {
                Err(GraphError::unknown_path(segments[1]))
            } else {
                Err(GraphError::unsupported(&method.to_lowercase(), node))
            }
        }
    }
}

/// Checks the token (190) and `appsecret_proof` (100).
pub fn authenticate(world: &World, request: &GraphRequest) -> Result<(), GraphError> {
    let token = request.token.as_deref().ok_or_else(GraphError::token_missing)?;
    if token.is_empty() {
        return Err(GraphError::token_missing());
    }
    if !bool::from(token.as_bytes().ct_eq(world.cfg.page_token.as_bytes())) {
        return Err(GraphError::token_invalid());
    }
    if world.app.token_revoked {
        return Err(GraphError::token_revoked());
    }
    match request.str("appsecret_proof") {
        Some(proof) => {
            let expected = appsecret_proof(&world.cfg.app_secret, token);
            if !bool::from(proof.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(GraphError::bad_appsecret_proof());
            }
        }
        None if world.cfg.require_appsecret_proof => {
            return Err(GraphError::bad_appsecret_proof());
        }
        None => {}
    }
    Ok(())
}

/// `hex(HMAC-SHA256(key=app_secret, msg=access_token))`.
pub fn appsecret_proof(app_secret: &str, token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes()).expect("HMAC can take any key length");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `node` names our Page (`me`, its id or its username).
pub fn is_page(world: &World, node: &str) -> bool {
    node == "me" || node == world.cfg.page_id || node == world.cfg.page_username
}

fn require_page(world: &World, request: &GraphRequest, node: &str) -> Result<(), GraphError> {
    authenticate(world, request)?;
    if is_page(world, node) {
        Ok(())
    } else {
        Err(GraphError::unsupported(&request.method.as_str().to_lowercase(), node))
    }
}

fn success() -> Value {
    json!({ "success": true })
}

/// `GET /{page}` or `GET /{psid}` (User Profile API).
fn node_info(world: &mut World, request: &GraphRequest, node: &str) -> Result<Value, GraphError> {
    authenticate(world, request)?;
    if is_page(world, node) {
        return Ok(json!({
            "name": world.cfg.page_name,
            "id": world.cfg.page_id,
            "username": world.cfg.page_username,
        }));
    }
    let customer = world.customer(node).ok_or_else(|| GraphError::unsupported("get", node))?;
    let user = customer.user.clone();
    if user.phone_only {
        return Err(GraphError::no_profile());
    }
    // Access is granted once the customer has talked to the Page.
    if !user.profile_allowed || !customer.thread.started {
        return Ok(json!({}));
    }
    let fields = request.list("fields").unwrap_or_else(|| vec!["name".into(), "id".into()]);
    let mut out = Map::new();
    for field in fields {
        let value = match field.as_str() {
            "id" => json!(user.psid),
            "name" => json!(format!("{} {}", user.first_name, user.last_name)),
            "first_name" => json!(user.first_name),
            "last_name" => json!(user.last_name),
            "profile_pic" => json!(world.picture_url(&user.psid)),
            "locale" | "timezone" | "gender" => {
                return Err(GraphError::profile_field_permission(&field));
            }
            other => {
                return Err(GraphError::param(format!(
                    "Tried accessing nonexisting field ({other}) on node type (User)"
                )));
            }
        };
        out.insert(field, value);
    }
    out.entry("id").or_insert_with(|| json!(user.psid));
    Ok(Value::Object(out))
}

/// `GET /debug_token?input_token=…`.
fn debug_token(world: &mut World, request: &GraphRequest) -> Result<Value, GraphError> {
    authenticate(world, request)?;
    let input = request.str("input_token").unwrap_or_default();
    let valid = input == world.cfg.page_token && !world.app.token_revoked;
    Ok(json!({ "data": {
        "app_id": world.cfg.app_id,
        "type": "PAGE",
        "application": world.cfg.page_name,
        "is_valid": valid,
        "profile_id": world.cfg.page_id,
        "scopes": ["pages_messaging", "pages_manage_metadata", "pages_show_list"],
    }}))
}

/// `POST|GET|DELETE /{page}/subscribed_apps`.
fn subscribed_apps(world: &mut World, request: &GraphRequest, node: &str) -> Result<Value, GraphError> {
    require_page(world, request, node)?;
    match request.method.as_str() {
        "GET" => {
            let data = if world.app.subscribed {
                vec![json!({
                    "category": "Business",
                    "link": "https://parley.example/",
                    "name": "Parley",
                    "id": world.cfg.app_id,
                    "subscribed_fields": world.app.fields,
                })]
            } else {
                Vec::new()
            };
            Ok(json!({ "data": data }))
        }
        "POST" => {
            let fields = request
                .list("subscribed_fields")
                .ok_or_else(|| GraphError::param("param subscribed_fields is required"))?;
            if let Some(bad) =
                fields.iter().find(|f| !ALL_FIELDS.contains(&f.as_str()) && !EXTRA_FIELDS.contains(&f.as_str()))
            {
                return Err(GraphError::param(format!(
                    "param subscribed_fields[{bad}] must be one of the supported fields"
                )));
            }
            world.app.subscribed = true;
            world.app.fields = fields;
            world.app.failing_since_ms = None;
            world.app.alerted = false;
            world.touch();
            Ok(success())
        }
        "DELETE" => {
            world.app.subscribed = false;
            world.touch();
            Ok(success())
        }
        _ => Err(GraphError::unknown_path("subscribed_apps")),
    }
}

const EXTRA_FIELDS: &[&str] =
    &["message_edits", "messaging_policy_enforcement", "messaging_account_linking", "messaging_game_plays", "feed"];

/// `POST|GET|DELETE /me/messenger_profile`.
fn messenger_profile(world: &mut World, request: &GraphRequest, node: &str) -> Result<Value, GraphError> {
    require_page(world, request, node)?;
    const PROPERTIES: &[&str] =
        &["get_started", "greeting", "ice_breakers", "persistent_menu", "whitelisted_domains", "account_linking_url"];
    match request.method.as_str() {
        "GET" => {
            let fields = request.list("fields").ok_or_else(|| GraphError::param("param fields is required"))?;
            let mut out = Map::new();
            for field in fields {
                if let Some(value) = world.profile.get(&field) {
                    out.insert(field, value.clone());
                }
            }
            let data = if out.is_empty() { Vec::new() } else { vec![Value::Object(out)] };
            Ok(json!({ "data": data }))
        }
        "POST" => {
            let mut changed = false;
            for property in PROPERTIES {
                if let Some(value) = request.params.get(*property) {
                    if *property == "get_started" && value.get("payload").and_then(Value::as_str).is_none() {
                        return Err(GraphError::param("param get_started[payload] is required"));
                    }
                    world.profile.insert((*property).to_owned(), value.clone());
                    changed = true;
                }
            }
            if !changed {
                return Err(GraphError::param("No properties to set"));
            }
            world.touch();
            Ok(json!({ "result": "success" }))
        }
        "DELETE" => {
            let fields = request.list("fields").ok_or_else(|| GraphError::param("param fields is required"))?;
            for field in fields {
                world.profile.remove(&field);
            }
            world.touch();
            Ok(json!({ "result": "success" }))
        }
        _ => Err(GraphError::unknown_path("messenger_profile")),
    }
}

/// `GET /{page}/thread_owner?recipient=<PSID>`.
fn thread_owner(world: &mut World, request: &GraphRequest, node: &str) -> Result<Value, GraphError> {
    require_page(world, request, node)?;
    let psid = request.recipient_id().ok_or_else(|| GraphError::param("param recipient must be non-empty."))?;
    let customer = world.customer(&psid).ok_or_else(GraphError::no_matching_user)?;
    let owner = customer.thread.owner_app_id.clone().unwrap_or_else(|| world.cfg.app_id.clone());
    Ok(json!({ "data": [{ "thread_owner": { "app_id": owner } }] }))
}

/// `POST /{page}/{pass|take|release|request}_thread_control`.
fn thread_control(world: &mut World, request: &GraphRequest, node: &str, edge: &str) -> Result<Value, GraphError> {
    require_page(world, request, node)?;
    let psid = request.recipient_id().ok_or_else(|| GraphError::param("param recipient must be non-empty."))?;
    let owner = world.customer(&psid).ok_or_else(GraphError::no_matching_user)?.thread.owner_app_id.clone();
    let ours = world.cfg.app_id.clone();
    let we_own = owner.as_deref().is_none_or(|o| o == ours);
    let new_owner = match edge {
        "pass_thread_control" => {
            let target = request
                .params
                .get("target_app_id")
                .and_then(id_string)
                .ok_or_else(|| GraphError::param("param target_app_id must be non-empty."))?;
            if target != PAGE_INBOX_APP_ID && target != ours {
                return Err(GraphError::param(format!(
                    "param target_app_id ({target}) is not an app connected to this Page"
                )));
            }
            if !we_own {
                return Err(GraphError::thread_owned_by_other_app());
            }
            Some(target)
        }
        "take_thread_control" => {
            if !world.settings.routing {
                return Err(GraphError::permission(
                    "take_thread_control is not allowed unless Conversation Routing makes this app the default",
                ));
            }
            if let Some(previous) = owner.clone().filter(|o| *o != ours) {
                // The Inbox has no webhook; nobody else needs telling.
                tracing::debug!(%previous, "our app takes the thread");
            }
            Some(ours.clone())
        }
        "release_thread_control" => {
            if !we_own {
                return Err(GraphError::thread_owned_by_other_app());
            }
            None
        }
        "request_thread_control" => {
            // The owner (the Inbox) is a person; the request is simply recorded.
            return Ok(success());
        }
        other => return Err(GraphError::unknown_path(other)),
    };
    if let Some(customer) = world.customer_mut(&psid) {
        customer.thread.owner_app_id = new_owner.filter(|o| *o != ours);
    }
    world.bump_thread(&psid);
    Ok(success())
}

/// `POST /` with `batch=[{method, relative_url, body}]` (≤ 50).
async fn batch(emulator: &Emulator, request: GraphRequest) -> Response {
    let Some(Value::Array(items)) = request.params.get("batch").cloned() else {
        return GraphError::param("param batch must be a JSON array").into_response();
    };
    if items.len() > MAX_BATCH {
        return GraphError::param("Too many requests in batch message. Maximum batch size is 50").into_response();
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let method = item["method"].as_str().unwrap_or("GET").to_ascii_uppercase();
        let relative = item["relative_url"].as_str().unwrap_or("");
        let (path, query) = match relative.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (relative, None),
        };
        let body = item["body"].as_str().unwrap_or("");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/x-www-form-urlencoded"));
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let outcome = match GraphRequest::parse(method, path, query, &headers, body.as_bytes()) {
            Ok(mut sub) => {
                if sub.token.is_none() {
                    sub.token.clone_from(&request.token);
                }
                route(emulator, sub).await
            }
            Err(error) => Err(error),
        };
        let (code, body) = match outcome {
            Ok(value) => (200, value),
            Err(error) => (error.status.as_u16(), error.body()),
        };
        results.push(json!({
            "code": code,
            "headers": [{ "name": "Content-Type", "value": "text/javascript; charset=UTF-8" }],
            "body": body.to_string(),
        }));
    }
    (StatusCode::OK, axum::Json(Value::Array(results))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_are_recognised() {
        assert!(is_version("v25.0"));
        assert!(is_version("v2.12"));
        assert!(!is_version("me"));
        assert!(!is_version("v"));
        assert!(!is_version("100000000000001"));
    }

    #[test]
    fn form_values_that_look_like_json_are_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/x-www-form-urlencoded"));
        let body = b"recipient=%7B%22id%22%3A%2212%22%7D&messaging_type=RESPONSE&access_token=T";
        let request = GraphRequest::parse(Method::POST, "/v25.0/me/messages", None, &headers, body).expect("parses");
        assert_eq!(request.segments, vec!["me", "messages"]);
        assert_eq!(request.recipient_id().as_deref(), Some("12"));
        assert_eq!(request.str("messaging_type"), Some("RESPONSE"));
        assert_eq!(request.token.as_deref(), Some("T"));
    }

    #[test]
    fn bearer_tokens_are_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, axum::http::HeaderValue::from_static("Bearer abc"));
        let request = GraphRequest::parse(Method::GET, "/me", Some("fields=name"), &headers, b"").expect("parses");
        assert_eq!(request.token.as_deref(), Some("abc"));
        assert_eq!(request.list("fields"), Some(vec!["name".to_owned()]));
    }
}
