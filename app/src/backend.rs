//! The narrow interface the console's server side needs from the Parley server.
//!
//! `app` cannot depend on `server` (that would pull sqlx and axum handlers into the console crate), so it declares
//! what it needs here and the server implements it. Server functions reach it through
//! `expect_context::<std::sync::Arc<dyn ConsoleBackend>>()`, provided by the server in `leptos_routes_with_context`
//! and `handle_server_fns_with_context`. Only compiled with the `ssr` feature.

use protocol::Event;
use protocol::console::{AgentInfo, ConversationSummary};

/// Name of the console's session cookie (HttpOnly, SameSite=Strict, Path=/).
pub const SESSION_COOKIE: &str = "parley_session";

/// The client's IP address, provided as context by the server for each request (sign-in is throttled by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// A successful login.
#[derive(Clone, Debug)]
pub struct LoginSession {
    /// Opaque session token to put in the [`SESSION_COOKIE`]. Never log it.
    pub token: String,
    pub agent: AgentInfo,
    /// Cookie lifetime in seconds.
    pub max_age_secs: i64,
}

/// Failures of the backend, already worded for the agent.
#[derive(Clone, Debug)]
pub enum BackendError {
    /// The request was refused (e.g. too many login attempts); the text says why.
    Refused(String),
    /// Too many attempts: the text says why; try again after `retry_after_secs`.
    Throttled { why: String, retry_after_secs: u64 },
    /// The server is at capacity (e.g. every password-hashing slot is taken); try again shortly.
    Busy,
    /// Something failed on the server; details are in the server log, not here.
    Internal,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) | Self::Throttled { why, .. } => f.write_str(why),
            Self::Busy => f.write_str("the server is busy; try again in a moment"),
            Self::Internal => f.write_str("something went wrong on the server; try again"),
        }
    }
}

impl std::error::Error for BackendError {}

/// What the console's server side asks of the Parley server.
#[async_trait::async_trait]
pub trait ConsoleBackend: Send + Sync + 'static {
    /// Checks the credentials of a sign-in from `client`; `Ok(None)` means wrong email or password.
    async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<ClientAddr>,
    ) -> Result<Option<LoginSession>, BackendError>;
    /// The agent a session token belongs to, if the session is valid.
    async fn agent_for_session(&self, token: &str) -> Result<Option<AgentInfo>, BackendError>;
    /// Ends a session (no error if it was already gone).
    async fn logout(&self, token: &str) -> Result<(), BackendError>;
    /// Every conversation of the agent's workspace, most recent activity first (for the server-rendered inbox).
    async fn inbox(&self, agent: &AgentInfo) -> Result<Vec<ConversationSummary>, BackendError>;
    /// One conversation of the agent's workspace and all its events, for the server-rendered conversation view
    /// (`None` for another workspace's conversation, as for an unknown one).
    async fn conversation(
        &self,
        agent: &AgentInfo,
        id: &str,
    ) -> Result<Option<(ConversationSummary, Vec<Event>)>, BackendError>;
    /// Whether cookies must carry `Secure` (the server is reached over https).
    fn secure_cookies(&self) -> bool;
}
