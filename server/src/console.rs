//! The console's server side: the `app::backend::ConsoleBackend` implementation (login, sessions, SSR data) and
//! the session-cookie lookup shared with the agent socket.

use std::sync::Arc;

use app::backend::{BackendError, ConsoleBackend, LoginSession, SESSION_COOKIE};
use axum::http::HeaderMap;
use protocol::Event;
use protocol::console::{AgentInfo, ConversationSummary};

use crate::auth;
use crate::error::ApiError;
use crate::limits::LoginThrottle;
use crate::state::AppState;
use crate::store::{StoreError, now_ms};

/// Reads the session token from a `Cookie` header.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    crate::http::cookie_value(headers, SESSION_COOKIE, |v| !v.is_empty())
}

/// The agent signed in by the request's cookie.
pub async fn session_agent(state: &AppState, headers: &HeaderMap) -> Result<Option<AgentInfo>, ApiError> {
    let Some(token) = session_token(headers) else { return Ok(None) };
    Ok(state.store.agent_for_session(&auth::token_hash(&token)).await?.map(|a| AgentInfo {
        id: a.id,
        name: a.name,
        email: a.email,
    }))
}

/// `ConsoleBackend` over the application state.
pub struct Backend {
    pub state: AppState,
    throttle: LoginThrottle,
}

impl Backend {
    pub fn shared(state: AppState) -> Arc<dyn ConsoleBackend> {
        let throttle = LoginThrottle::new(state.settings.limits.login_failures);
        Arc::new(Self { state, throttle })
    }
}

fn internal(e: impl Into<anyhow::Error>) -> BackendError {
    let e = e.into();
    tracing::error!(error = ?e, "console backend failed");
    BackendError::Internal
}

#[async_trait::async_trait]
impl ConsoleBackend for Backend {
    async fn login(&self, email: &str, password: &str) -> Result<Option<LoginSession>, BackendError> {
        if let Some(wait) = self.throttle.blocked(email) {
            tracing::warn!("console sign-in throttled after repeated failures");
            let minutes = wait.as_secs().div_ceil(60).max(1);
            return Err(BackendError::Refused(format!(
                "Too many failed sign-ins for this address. Try again in {minutes} min."
            )));
        }
        let agent = self.state.store.agent_by_email(email.trim()).await.map_err(internal)?;
        let password = password.to_string();
        let hash = agent.as_ref().map_or_else(|| auth::dummy_hash().to_string(), |a| a.password_hash.clone());
        // argon2 is deliberately slow: keep it off the async workers.
        let ok =
            tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash)).await.map_err(internal)?;
        let Some(agent) = agent.filter(|_| ok) else {
            tracing::info!("console sign-in refused");
            self.throttle.failed(email);
            return Ok(None);
        };
        self.throttle.succeeded(email);
        let token = auth::new_token();
        let max_age_secs = self.state.settings.console.session_hours.max(1) * 3600;
        self.state
            .store
            .create_session(&auth::token_hash(&token), &agent.id, now_ms() + max_age_secs * 1000)
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

    async fn inbox(&self) -> Result<Vec<ConversationSummary>, BackendError> {
        self.state.conversations.summaries().await.map_err(internal)
    }

    async fn conversation(&self, id: &str) -> Result<Option<(ConversationSummary, Vec<Event>)>, BackendError> {
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
}
