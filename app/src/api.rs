//! The console's server functions (mounted under `/api/console/…`) and the error type they share.
//!
//! They stay thin: read the session cookie from the request, call the [`ConsoleBackend`](crate::backend::ConsoleBackend)
//! the server put in context, and translate failures into [`ConsoleError`], worded for the agent. The session token
//! only ever travels in the HttpOnly cookie: it is never logged, returned to the page, or put in a URL.

use leptos::prelude::*;
use leptos::server_fn::codec::Post;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use protocol::Event;
use protocol::console::{AgentInfo, ConversationSummary};
use protocol::decode;
use protocol::json::Value;
use serde::Serialize;

use crate::codec::{ConsoleJson, FromJson};

/// Why a console request failed; `Display` is the sentence shown to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ConsoleError {
    /// Login with an unknown email or a wrong password.
    WrongCredentials,
    /// No valid session (never signed in, signed out, or expired).
    SignedOut,
    /// The conversation does not exist.
    NotFound,
    /// The server refused, and says why (e.g. too many login attempts).
    Refused(String),
    /// The server is at capacity for now (e.g. checking many sign-ins at once).
    Busy,
    /// The server failed; details are in its log.
    Server,
    /// The request did not reach the server.
    Unreachable,
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WrongCredentials => "Wrong email or password.",
            Self::SignedOut => "Your session has ended. Sign in again.",
            Self::NotFound => "This conversation does not exist.",
            Self::Refused(why) => why,
            Self::Busy => "The server is busy. Try again in a moment.",
            Self::Server => "Something went wrong on the server. Try again.",
            Self::Unreachable => "Could not reach the server. Check your connection and try again.",
        })
    }
}

impl std::error::Error for ConsoleError {}

impl FromServerFnError for ConsoleError {
    type Encoder = ConsoleJson;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Request(_) => Self::Unreachable,
            _ => Self::Server,
        }
    }
}

/// The signed-in agent and the inbox, for the server-rendered console. The browser reads it by hand
/// ([`FromJson`]), as the console's frames are read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboxSnapshot {
    pub agent: AgentInfo,
    pub conversations: Vec<ConversationSummary>,
    /// Server time (epoch ms), so relative times render the same on the server and during hydration.
    pub now: i64,
}

/// One conversation and its whole log, for the server-rendered conversation view (read by hand, as
/// [`InboxSnapshot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationSnapshot {
    pub summary: ConversationSummary,
    pub events: Vec<Event>,
}

impl FromJson for InboxSnapshot {
    fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        Some(Self {
            agent: decode::agent_info(o.get("agent")?)?,
            conversations: decode::list(o, "conversations", decode::conversation_summary)??,
            now: o.get("now")?.as_i64()?,
        })
    }
}

impl FromJson for ConversationSnapshot {
    fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        Some(Self {
            summary: decode::conversation_summary(o.get("summary")?)?,
            events: decode::list(o, "events", decode::event)??,
        })
    }
}

/// As serde writes it: a unit variant as its name, `Refused` as `{"Refused":"…"}`.
impl FromJson for ConsoleError {
    fn from_json(v: &Value) -> Option<Self> {
        if let Some(o) = v.as_object() {
            return (o.len() == 1).then(|| o.get("Refused")?.as_str().map(|why| Self::Refused(why.to_owned())))?;
        }
        Some(match v.as_str()? {
            "WrongCredentials" => Self::WrongCredentials,
            "SignedOut" => Self::SignedOut,
            "NotFound" => Self::NotFound,
            "Busy" => Self::Busy,
            "Server" => Self::Server,
            "Unreachable" => Self::Unreachable,
            _ => return None,
        })
    }
}

/// Checks the credentials; on success sets the session cookie and redirects to the inbox.
#[server(endpoint = "console/login", output = Post<ConsoleJson>)]
pub async fn login(email: String, password: String) -> Result<(), ConsoleError> {
    ssr::answer(
        async move {
            let email = email.trim();
            if email.is_empty() || password.is_empty() {
                return Err(ConsoleError::WrongCredentials);
            }
            let backend = ssr::backend()?;
            let session = backend.login(email, &password, ssr::client_addr()).await.map_err(ssr::from_backend)?;
            let session = session.ok_or(ConsoleError::WrongCredentials)?;
            let mut cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                crate::backend::SESSION_COOKIE,
                session.token,
                session.max_age_secs.max(0)
            );
            if backend.secure_cookies() {
                cookie.push_str("; Secure");
            }
            ssr::set_cookie(&cookie)?;
            leptos_axum::redirect("/console");
            Ok(())
        }
        .await,
    )
}

/// Ends the session, clears the cookie and redirects to the login page.
#[server(endpoint = "console/logout", output = Post<ConsoleJson>)]
pub async fn logout() -> Result<(), ConsoleError> {
    ssr::answer(
        async move {
            let backend = ssr::backend()?;
            if let Some(token) = ssr::session_token() {
                backend.logout(&token).await.map_err(ssr::from_backend)?;
            }
            let mut cookie =
                format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", crate::backend::SESSION_COOKIE);
            if backend.secure_cookies() {
                cookie.push_str("; Secure");
            }
            ssr::set_cookie(&cookie)?;
            leptos_axum::redirect("/console/login");
            Ok(())
        }
        .await,
    )
}

/// The signed-in agent, or `None` without a valid session.
#[server(endpoint = "console/session", output = Post<ConsoleJson>)]
pub async fn current_agent() -> Result<Option<AgentInfo>, ConsoleError> {
    ssr::no_store();
    ssr::answer(ssr::agent().await)
}

/// The agent and every conversation, most recent activity first.
#[server(endpoint = "console/inbox", output = Post<ConsoleJson>)]
pub async fn load_inbox() -> Result<InboxSnapshot, ConsoleError> {
    ssr::no_store();
    ssr::answer(
        async {
            let agent = ssr::agent().await?.ok_or(ConsoleError::SignedOut)?;
            let conversations = ssr::backend()?.inbox(&agent).await.map_err(ssr::from_backend)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            Ok(InboxSnapshot { agent, conversations, now })
        }
        .await,
    )
}

/// One conversation with its whole log.
#[server(endpoint = "console/conversation", output = Post<ConsoleJson>)]
pub async fn load_conversation(id: String) -> Result<ConversationSnapshot, ConsoleError> {
    ssr::no_store();
    ssr::answer(
        async {
            let agent = ssr::agent().await?.ok_or(ConsoleError::SignedOut)?;
            let (summary, events) = ssr::backend()?
                .conversation(&agent, &id)
                .await
                .map_err(ssr::from_backend)?
                .ok_or(ConsoleError::NotFound)?;
            Ok(ConversationSnapshot { summary, events })
        }
        .await,
    )
}

#[cfg(feature = "ssr")]
mod ssr {
    use std::sync::Arc;

    use http::header::{CACHE_CONTROL, COOKIE, RETRY_AFTER, SET_COOKIE};
    use http::{HeaderValue, StatusCode, request::Parts};
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;
    use protocol::console::AgentInfo;

    use super::ConsoleError;
    use crate::backend::{BackendError, ClientAddr, ConsoleBackend, SESSION_COOKIE};

    pub fn backend() -> Result<Arc<dyn ConsoleBackend>, ConsoleError> {
        use_context::<Arc<dyn ConsoleBackend>>().ok_or_else(|| {
            leptos::logging::error!("console: no ConsoleBackend in context; the server must provide it");
            ConsoleError::Server
        })
    }

    pub fn from_backend(e: BackendError) -> ConsoleError {
        match e {
            BackendError::Refused(why) => ConsoleError::Refused(why),
            BackendError::Throttled { why, retry_after_secs } => {
                retry_after(retry_after_secs);
                ConsoleError::Refused(why)
            }
            BackendError::Busy => {
                retry_after(1);
                ConsoleError::Busy
            }
            BackendError::Internal => ConsoleError::Server,
        }
    }

    fn retry_after(secs: u64) {
        if let Some(res) = use_context::<ResponseOptions>() {
            res.insert_header(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
    }

    /// The HTTP status of each failure, so that no failure is answered with a success or a bare 500.
    pub fn status(e: &ConsoleError) -> StatusCode {
        match e {
            ConsoleError::WrongCredentials | ConsoleError::SignedOut => StatusCode::UNAUTHORIZED,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Refused(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Server | ConsoleError::Unreachable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Sets the response status from a server function's result.
    pub fn answer<T>(result: Result<T, ConsoleError>) -> Result<T, ConsoleError> {
        if let Err(e) = &result
            && let Some(res) = use_context::<ResponseOptions>()
        {
            res.set_status(status(e));
        }
        result
    }

    /// The client's address, as the server determined it for this request.
    pub fn client_addr() -> Option<ClientAddr> {
        use_context::<ClientAddr>()
    }

    /// The session token from the request's `Cookie` header(s).
    pub fn session_token() -> Option<String> {
        let parts = use_context::<Parts>()?;
        parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
            .map(|(_, value)| value.to_owned())
    }

    pub async fn agent() -> Result<Option<AgentInfo>, ConsoleError> {
        let Some(token) = session_token() else {
            return Ok(None);
        };
        backend()?.agent_for_session(&token).await.map_err(from_backend)
    }

    pub fn set_cookie(cookie: &str) -> Result<(), ConsoleError> {
        let value = HeaderValue::from_str(cookie).map_err(|_| ConsoleError::Server)?;
        if let Some(res) = use_context::<ResponseOptions>() {
            res.append_header(SET_COOKIE, value);
        }
        Ok(())
    }

    /// Console data is per agent: keep it out of shared caches and the back-forward cache of other users.
    pub fn no_store() {
        if let Some(res) = use_context::<ResponseOptions>() {
            res.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

#[cfg(test)]
mod tests {
    use leptos::server::codee;
    use leptos::server_fn::{Decodes, Encodes};
    use protocol::console::VisitorDetails;
    use protocol::{Author, Channel, ChatMessage, ConversationStatus, EventKind};

    use super::*;
    use crate::codec::read;

    fn summary() -> ConversationSummary {
        ConversationSummary {
            id: "c-1".into(),
            site_key: "demo".into(),
            site_name: "Demo".into(),
            visitor_name: "Visitor 1".into(),
            status: ConversationStatus::Resolved,
            last_message: Some("hi".into()),
            last_activity_at: 5,
            unread: 2,
            last_seq: 3,
            visitor_read_seq: 1,
            visitor: VisitorDetails { language: Some("fr".into()), online: true, ..VisitorDetails::default() },
            messenger: None,
        }
    }

    #[test]
    fn snapshots_read_back_what_the_server_wrote_and_refuse_what_is_malformed() {
        let inbox = InboxSnapshot {
            agent: AgentInfo { id: "a".into(), name: "Alice".into(), email: "alice@example.com".into() },
            conversations: vec![summary()],
            now: 1_700_000_000_000,
        };
        let text = serde_json::to_string(&Ok::<_, ConsoleError>(inbox.clone())).expect("serializes");
        assert_eq!(read::<Result<InboxSnapshot, ConsoleError>>(text.as_bytes()).ok(), Some(Ok(inbox)));
        let message = ChatMessage {
            id: "m".into(),
            client_id: "k".into(),
            author: Author::Agent { name: "Alice".into() },
            body: "<b>hi</b>".into(),
            sent_at: 4,
            channel: Channel::Web,
            attachments: Vec::new(),
        };
        let conversation = ConversationSnapshot {
            summary: summary(),
            events: vec![Event { seq: 1, at: 4, kind: EventKind::Message { message } }],
        };
        let bytes = serde_json::to_vec(&conversation).expect("serializes");
        assert_eq!(read::<ConversationSnapshot>(&bytes).ok(), Some(conversation));
        let err = serde_json::to_string(&Err::<InboxSnapshot, _>(ConsoleError::SignedOut)).expect("serializes");
        assert_eq!(
            read::<Result<InboxSnapshot, ConsoleError>>(err.as_bytes()).ok(),
            Some(Err(ConsoleError::SignedOut))
        );
        for bad in [r#"{"agent":{"id":"a"},"conversations":[],"now":1}"#, r#"{"summary":{},"events":[]}"#, "[]", "{"] {
            assert!(read::<InboxSnapshot>(bad.as_bytes()).is_err(), "{bad}");
            assert!(read::<ConversationSnapshot>(bad.as_bytes()).is_err(), "{bad}");
        }
        for bad in [r#"{"Ok":null,"Err":"Busy"}"#, r#"{}"#, r#""Ok""#, r#"{"Maybe":"Busy"}"#, r#"{"Err":"Busy""#] {
            assert!(read::<Result<(), ConsoleError>>(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(read::<Result<(), ConsoleError>>(br#"{"Ok":null}"#).ok(), Some(Ok(())));
        assert!(read::<()>(b"0").is_err());
    }

    #[test]
    fn every_answer_the_server_functions_write_reads_back_in_the_browser() {
        let errors = [
            ConsoleError::WrongCredentials,
            ConsoleError::SignedOut,
            ConsoleError::NotFound,
            ConsoleError::Refused("Too many attempts.".into()),
            ConsoleError::Busy,
            ConsoleError::Server,
            ConsoleError::Unreachable,
        ];
        for e in errors {
            let bytes = <ConsoleJson as Encodes<ConsoleError>>::encode(&e).expect("serializes");
            assert_eq!(<ConsoleJson as Decodes<ConsoleError>>::decode(bytes).ok(), Some(e));
        }
        for bad in [r#""Refused""#, r#"{"Refused":1}"#, r#"{"Busy":null,"Refused":"x"}"#, r#""Lost""#, "7"] {
            assert!(read::<ConsoleError>(bad.as_bytes()).is_err(), "{bad}");
        }
        let agent = AgentInfo { id: "a".into(), name: "Alice".into(), email: "alice@example.com".into() };
        for answer in [None, Some(agent)] {
            let bytes = <ConsoleJson as Encodes<Option<AgentInfo>>>::encode(&answer).expect("serializes");
            assert_eq!(<ConsoleJson as Decodes<Option<AgentInfo>>>::decode(bytes).ok(), Some(answer));
        }
        let unit = <ConsoleJson as Encodes<()>>::encode(&()).expect("serializes");
        assert!(<ConsoleJson as Decodes<()>>::decode(unit).is_ok());
        // What a resource carries from the server-rendered page into hydration.
        let text = <ConsoleJson as codee::Encoder<Result<(), ConsoleError>>>::encode(&Err(ConsoleError::NotFound))
            .expect("serializes");
        assert_eq!(
            <ConsoleJson as codee::Decoder<Result<(), ConsoleError>>>::decode(&text).ok(),
            Some(Err(ConsoleError::NotFound))
        );
    }
}
