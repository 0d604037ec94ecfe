//! The console's server side: the `app::backend::ConsoleBackend` implementation (login, sessions, SSR data), the
//! session-cookie lookup shared with the agent socket, and the console's HTTP guard: state-changing requests must
//! come from the console's own origin (no login CSRF, no forced sign-out), and console pages carry a CSP with a
//! per-response nonce for Leptos' inline hydration scripts, `frame-ancestors 'none'` and `X-Frame-Options: DENY`.
//! On https, every response carries `Strict-Transport-Security`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use app::backend::{BackendError, ClientAddr, ConsoleBackend, LoginSession, SESSION_COOKIE};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, ORIGIN, REFERER, STRICT_TRANSPORT_SECURITY, X_FRAME_OPTIONS};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leptos::prelude::{provide_context, use_context};
use protocol::Event;
use protocol::console::{AgentInfo, ConversationSummary};

use crate::auth;
use crate::error::ApiError;
use crate::signin::{Refusal, VerifyError};
use crate::state::AppState;
use crate::store::StoreError;

/// Reads the session token from a `Cookie` header.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    crate::http::cookie_value(headers, SESSION_COOKIE, |v| !v.is_empty())
}

/// The agent signed in by the request's cookie.
pub async fn session_agent(state: &AppState, headers: &HeaderMap) -> Result<Option<AgentInfo>, ApiError> {
    Ok(session_agent_in(state, headers).await?.map(|(agent, _)| agent))
}

/// The agent signed in by the request's cookie, with the workspace whose conversations they see.
pub async fn session_agent_in(state: &AppState, headers: &HeaderMap) -> Result<Option<(AgentInfo, String)>, ApiError> {
    let Some(token) = session_token(headers) else { return Ok(None) };
    Ok(state
        .store
        .agent_for_session(&auth::token_hash(&token))
        .await?
        .map(|a| (AgentInfo { id: a.id, name: a.name, email: a.email }, a.workspace_id)))
}

/// The CSP nonce chosen for one console page response (a request extension, read by [`provide_request_context`]).
#[derive(Clone, Debug)]
pub struct CspNonce(pub String);

/// Console context for one request, provided to every console page and server function: the client's address
/// (sign-in is throttled by it) and, on pages, the CSP nonce the guard chose, so that Leptos' inline scripts
/// carry the nonce the `Content-Security-Policy` header allows. Call it from the Leptos context closure.
pub fn provide_request_context() {
    let Some(parts) = use_context::<Parts>() else { return };
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        provide_context(ClientAddr(addr.ip()));
    }
    if let Some(CspNonce(nonce)) = parts.extensions.get::<CspNonce>() {
        provide_context(leptos::nonce::Nonce::from_value(nonce.as_str()));
    }
}

/// Server functions (`/api/…`) and console pages.
fn is_console(path: &str) -> bool {
    path.starts_with("/api/") || is_console_page(path)
}

fn is_console_page(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> Option<&str> {
    let rest = url.find("://").map(|i| i + 3)?;
    Some(url[rest..].find(['/', '?', '#']).map_or(url, |end| &url[..rest + end]))
}

/// Whether a request comes from a page of `public_origin`: `Sec-Fetch-Site` (when sent) must say same-origin,
/// and `Origin` (else `Referer`) must be `public_origin`. A request with neither is refused: every browser sends
/// `Origin` on a POST, so only a non-browser client could omit both, and it has no business posting here.
pub fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    let header = |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if header(&HeaderName::from_static("sec-fetch-site")).is_some_and(|site| site != "same-origin") {
        return false;
    }
    match (header(&ORIGIN), header(&REFERER)) {
        (Some(origin), _) => origin.eq_ignore_ascii_case(public_origin),
        (None, Some(referer)) => origin_of(referer).is_some_and(|o| o.eq_ignore_ascii_case(public_origin)),
        (None, None) => false,
    }
}

/// The console's HTTP guard (a middleware over every route): refuses cross-origin state-changing requests to
/// the console with 403, and sets the security headers described in the module documentation.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let console = is_console(path);
    let state_changing = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if console && state_changing && !same_origin(request.headers(), &state.public_origin) {
        tracing::warn!(%path, "cross-origin console request refused");
        return ApiError::ForbiddenOrigin.into_response();
    }
    let nonce = is_console_page(path).then(auth::new_token);
    if let Some(nonce) = &nonce {
        request.extensions_mut().insert(CspNonce(nonce.clone()));
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if state.public_origin.starts_with("https://") {
        headers.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    if console {
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let csp = match &nonce {
            Some(nonce) => page_csp(&state.public_origin, nonce),
            None => "default-src 'none'; frame-ancestors 'none'".to_string(),
        };
        if let Ok(csp) = HeaderValue::from_str(&csp) {
            headers.insert(CONTENT_SECURITY_POLICY, csp);
        }
    }
    response
}

/// The console page policy: scripts only from this origin or carrying this response's nonce (Leptos' inline
/// resource and hydration scripts), Wasm compilation for the hydrated console, the live socket, no framing.
fn page_csp(public_origin: &str, nonce: &str) -> String {
    let ws_origin = public_origin.replacen("http", "ws", 1);
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self' {ws_origin}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// `ConsoleBackend` over the application state.
pub struct Backend {
    pub state: AppState,
}

impl Backend {
    pub fn shared(state: AppState) -> Arc<dyn ConsoleBackend> {
        Arc::new(Self { state })
    }
}

impl Backend {
    /// The workspace of a signed-in agent (`None` if the agent is gone).
    async fn workspace_of(&self, agent: &AgentInfo) -> Result<Option<String>, BackendError> {
        let found = self.state.store.agent_by_email(&agent.email).await.map_err(internal)?;
        Ok(found.filter(|a| a.id == agent.id).map(|a| a.workspace_id))
    }
}

fn internal(e: impl Into<anyhow::Error>) -> BackendError {
    let e = e.into();
    tracing::error!(error = ?e, "console backend failed");
    BackendError::Internal
}

#[async_trait::async_trait]
impl ConsoleBackend for Backend {
    async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<ClientAddr>,
    ) -> Result<Option<LoginSession>, BackendError> {
        let ip = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0);
        let signin = &self.state.signin;
        let attempt = signin.admit(email, ip).map_err(|refusal| {
            tracing::warn!(%ip, ?refusal, "console sign-in throttled");
            let secs = refusal.wait().as_secs_f64().ceil().max(1.0) as u64;
            let why = match refusal {
                Refusal::TooManyFromIp(_) => {
                    format!("Too many sign-in attempts from your network. Try again in {secs} s.")
                }
                Refusal::Backoff(_) => format!("Too many failed sign-ins for this address. Try again in {secs} s."),
            };
            BackendError::Throttled { why, retry_after_secs: secs }
        })?;
        let agent = self.state.store.agent_by_email(email.trim()).await.map_err(internal)?;
        let hash = agent.as_ref().map(|a| a.password_hash.clone());
        let ok = match signin.verify(password.to_string(), hash).await {
            Ok(ok) => ok,
            Err(VerifyError::Busy) => {
                attempt.not_checked();
                tracing::warn!("console sign-in refused: every hashing slot is taken");
                return Err(BackendError::Busy);
            }
            Err(e) => return Err(internal(e)),
        };
        let Some(agent) = agent.filter(|_| ok) else {
            tracing::info!(%ip, "console sign-in refused");
            return Ok(None);
        };
        attempt.succeeded();
        let token = auth::new_token();
        let max_age_secs = self.state.settings.console.session_hours.max(1) * 3600;
        self.state
            .store
            .create_session(&auth::token_hash(&token), &agent.id, self.state.clock.now_ms() + max_age_secs * 1000)
            .await
            .map_err(internal)?;
        tracing::info!(agent = %agent.id, "agent signed in");
        Ok(Some(LoginSession {
            token,
            agent: AgentInfo { id: agent.id, name: agent.name, email: agent.email },
            max_age_secs,
        }))
    }

    async fn agent_for_session(&self, token: &str) -> Result<Option<AgentInfo>, BackendError> {
        Ok(self.state.store.agent_for_session(&auth::token_hash(token)).await.map_err(internal)?.map(|a| AgentInfo {
            id: a.id,
            name: a.name,
            email: a.email,
        }))
    }

    async fn logout(&self, token: &str) -> Result<(), BackendError> {
        self.state.store.delete_session(&auth::token_hash(token)).await.map_err(internal)
    }

    async fn inbox(&self, agent: &AgentInfo) -> Result<Vec<ConversationSummary>, BackendError> {
        let Some(workspace) = self.workspace_of(agent).await? else { return Ok(Vec::new()) };
        self.state.conversations.workspace_summaries(&workspace).await.map_err(internal)
    }

    async fn conversation(
        &self,
        agent: &AgentInfo,
        id: &str,
    ) -> Result<Option<(ConversationSummary, Vec<Event>)>, BackendError> {
        let Some(workspace) = self.workspace_of(agent).await? else { return Ok(None) };
        if self.state.store.conversation_workspace(id).await.map_err(internal)?.as_deref() != Some(&*workspace) {
            return Ok(None);
        }
        let Some(summary) = self.state.conversations.summary(id).await.map_err(internal)? else {
            return Ok(None);
        };
        let events = self.state.store.events_after(id, 0).await.map_err(|e: StoreError| internal(e))?;
        Ok(Some((summary, events)))
    }

    fn secure_cookies(&self) -> bool {
        self.state.public_origin.starts_with("https://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; parley_session=tok123; b=2"));
        assert_eq!(session_token(&headers).as_deref(), Some("tok123"));
        headers.insert(COOKIE, HeaderValue::from_static("parley_sessionx=1"));
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn only_requests_from_the_public_origin_count_as_same_origin() {
        let public = "http://127.0.0.1:3000";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            same_origin(&headers, public)
        };
        assert!(with(&[("origin", "http://127.0.0.1:3000")]));
        assert!(with(&[("origin", "http://127.0.0.1:3000"), ("sec-fetch-site", "same-origin")]));
        assert!(with(&[("referer", "http://127.0.0.1:3000/console/login?x=1")]));
        assert!(!with(&[]));
        assert!(!with(&[("origin", "null")]));
        assert!(!with(&[("origin", "http://127.0.0.1:8080")]));
        assert!(!with(&[("origin", "http://127.0.0.1:3000.evil.example")]));
        assert!(!with(&[("referer", "http://127.0.0.1:3000.evil.example/")]));
        assert!(!with(&[("referer", "http://evil.example/?http://127.0.0.1:3000/")]));
        // Sec-Fetch-Site wins over a forged or missing Origin (e.g. another port of the same host: same-site).
        assert!(!with(&[("origin", "http://127.0.0.1:3000"), ("sec-fetch-site", "same-site")]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
    }
}
