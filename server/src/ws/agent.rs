//! `GET /ws/agent`: the console's socket, authenticated by the console session cookie.
//!
//! The upgrade is refused unless `Origin` is this server's own origin (no cross-site WebSocket hijacking) and the
//! cookie names a live session. Every agent socket receives the inbox changes of its agent's workspace (and only
//! those: another workspace's conversations, typing signals and alerts never reach it, and opening, answering,
//! reading or resolving one is answered as for an unknown conversation); a conversation's events stream only after
//! `open`, each through its own [`Relay`].
//!
//! The session is checked again before every frame that reads or changes anything, and every
//! `console.session_check_secs` while the socket is open: once it is gone (sign-out, `parley agent set-password`
//! from another process, expiry), the socket closes with [`SIGNED_OUT`].

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::Response;
use protocol::console::{AgentInfo, ClientMsg, ConversationSummary, ServerMsg};
use protocol::{ErrorCode, Party};

use super::flood::TypingGate;
use super::{Connection, Liveness, Relay, Sink, close, send_close, send_json, serve};
use crate::auth;
use crate::console::{session_agent_in, session_token};
use crate::error::ApiError;
use crate::hub::HubMsg;
use crate::services::ServiceError;
use crate::state::AppState;
use crate::store::Store;

/// Close code for a socket whose session ended (like HTTP 401): the console goes to its login page.
pub const SIGNED_OUT: u16 = 4401;

/// Checks origin and session, then upgrades.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
    if origin != &*state.public_origin {
        return Err(ApiError::ForbiddenOrigin);
    }
    let token_hash = session_token(&headers).map(|t| auth::token_hash(&t)).ok_or(ApiError::Unauthorized)?;
    let (agent, workspace_id) = session_agent_in(&state, &headers).await?.ok_or(ApiError::Unauthorized)?;
    let ws = super::configure(ws, &state.settings.limits);
    Ok(ws.on_upgrade(move |socket| run(state, agent, workspace_id, token_hash, socket)))
}

struct Session {
    state: AppState,
    agent: AgentInfo,
    /// The agent's workspace: the only one whose conversations this socket sees.
    workspace_id: String,
    /// Which conversations are the workspace's (a conversation never changes workspace), as far as looked up.
    visible: HashMap<String, bool>,
    /// Which sites (by key) are the workspace's (a site never changes workspace; a conversation's workspace is its
    /// site's): an inbox row is placed by its site key, with no lookup per conversation.
    visible_sites: HashMap<String, bool>,
    /// Digest of the session token this socket was opened with.
    token_hash: Vec<u8>,
    /// Opened conversations and how far each has been sent.
    open: HashMap<String, Relay>,
    /// Typing signals passed on, per conversation (changes and a periodic refresh only).
    typing: HashMap<String, TypingGate>,
}

/// Conversations whose typing state one socket remembers; past this it starts over (at worst one extra signal each).
const TYPING_GATES: usize = 256;

/// Conversations whose workspace one socket remembers; past this it starts over (at worst one lookup each).
const VISIBLE_CACHE: usize = 4096;

/// The hub key of an alert only one workspace's agents see (e.g. its Page's token was refused); they get it under
/// the plain `key`. Keys without this form are for everyone.
pub fn workspace_alert_key(workspace_id: &str, key: &str) -> String {
    format!("workspace:{workspace_id}/{key}")
}

/// The key an agent of `workspace_id` gets an alert under, or `None` if the alert is another workspace's.
fn alert_for<'k>(key: &'k str, workspace_id: &str) -> Option<&'k str> {
    match key.strip_prefix("workspace:").and_then(|rest| rest.split_once('/')) {
        Some((owner, plain)) => (owner == workspace_id).then_some(plain),
        None => Some(key),
    }
}

impl Session {
    /// Whether to pass this typing signal on (see [`TypingGate`]).
    fn typing_changed(&mut self, conversation_id: &str, typing: bool) -> bool {
        if self.typing.len() >= TYPING_GATES && !self.typing.contains_key(conversation_id) {
            self.typing.clear();
        }
        self.typing.entry(conversation_id.to_string()).or_default().pass(typing)
    }

    /// Whether an inbox row belongs to the agent's workspace, by its site (`false` when the database cannot say).
    async fn sees_summary(&mut self, summary: &ConversationSummary) -> bool {
        let visible = match self.visible_sites.get(&summary.site_key) {
            Some(visible) => *visible,
            None => match self.state.store.site_by_key(&summary.site_key).await {
                Ok(site) => {
                    let visible = site.is_some_and(|site| site.workspace_id == self.workspace_id);
                    if self.visible_sites.len() >= VISIBLE_CACHE {
                        self.visible_sites.clear();
                    }
                    self.visible_sites.insert(summary.site_key.clone(), visible);
                    visible
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot look up a site's workspace");
                    return false;
                }
            },
        };
        if !self.visible.contains_key(&summary.id) && self.visible.len() < VISIBLE_CACHE {
            self.visible.insert(summary.id.clone(), visible);
        }
        visible
    }

    /// Whether the conversation belongs to the agent's workspace (`false` for an unknown one, or when the database
    /// cannot say: nothing is shown that might be another workspace's).
    async fn sees(&mut self, conversation_id: &str) -> bool {
        if let Some(visible) = self.visible.get(conversation_id) {
            return *visible;
        }
        match self.state.store.conversation_workspace(conversation_id).await {
            Ok(Some(workspace)) => {
                if self.visible.len() >= VISIBLE_CACHE {
                    self.visible.clear();
                }
                let visible = workspace == self.workspace_id;
                self.visible.insert(conversation_id.to_string(), visible);
                visible
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot look up a conversation's workspace");
                false
            }
        }
    }
}

/// Whether the session is gone. A database error is not a sign-out: the next check decides.
async fn session_gone(store: &Store, token_hash: &[u8]) -> bool {
    match store.agent_for_session(token_hash).await {
        Ok(agent) => agent.is_none(),
        Err(e) => {
            tracing::warn!(error = ?e, "cannot check an agent session");
            false
        }
    }
}

fn error_frame(code: ErrorCode, message: &str, client_id: Option<String>) -> ServerMsg {
    ServerMsg::Error { code, message: message.to_string(), client_id }
}

async fn run(state: AppState, agent: AgentInfo, workspace_id: String, token_hash: Vec<u8>, socket: WebSocket) {
    let (mut sink, mut stream) = super::split(socket, &state.settings.limits);
    let (_registration, mut hub_rx) = state.hub.join_agent();
    let inbox = match state.conversations.workspace_summaries(&workspace_id).await {
        Ok(conversations) => ServerMsg::Inbox { agent: agent.clone(), conversations },
        Err(e) => {
            tracing::error!(error = ?e, "cannot load the inbox");
            return send_close(&mut sink, close::TRY_AGAIN_LATER, "try again").await;
        }
    };
    if send_json(&mut sink, &inbox).await.is_err() {
        return;
    }
    for (key, message) in state.hub.alerts() {
        let Some(key) = alert_for(&key, &workspace_id).map(str::to_string) else { continue };
        if send_json(&mut sink, &ServerMsg::Alert { key, message: Some(message) }).await.is_err() {
            return;
        }
    }
    let mut session = Session {
        state: state.clone(),
        agent,
        workspace_id,
        visible: HashMap::new(),
        visible_sites: HashMap::new(),
        token_hash,
        open: HashMap::new(),
        typing: HashMap::new(),
    };
    let liveness = Liveness::new(&state.settings.limits);
    serve(&mut session, &mut sink, &mut stream, &mut hub_rx, state.shutdown.clone(), liveness).await;
}

impl Connection for Session {
    type Client = ClientMsg;
    type Server = ServerMsg;

    fn admit(&mut self, msg: Option<&ClientMsg>) -> Result<(), ServerMsg> {
        if self.state.floods.agent_frame(&self.agent.id) {
            return Ok(());
        }
        let client_id = match msg {
            Some(ClientMsg::Send { client_id, .. }) => Some(client_id.clone()),
            _ => None,
        };
        Err(error_frame(ErrorCode::RateLimited, "too many requests; slow down", client_id))
    }

    async fn on_client(&mut self, sink: &mut Sink, msg: ClientMsg) -> Result<(), axum::Error> {
        if !matches!(msg, ClientMsg::Ping | ClientMsg::Close { .. })
            && session_gone(&self.state.store, &self.token_hash).await
        {
            send_close(sink, SIGNED_OUT, "signed out").await;
            return Err(axum::Error::new("the agent's session ended"));
        }
        handle_client(self, sink, msg).await
    }

    async fn on_hub(&mut self, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error> {
        handle_hub(self, sink, msg).await
    }

    fn bad_frame(&self, why: &str) -> ServerMsg {
        error_frame(ErrorCode::BadFrame, why, None)
    }

    fn ended(&self) -> impl Future<Output = (u16, &'static str)> + Send + 'static {
        let store = self.state.store.clone();
        let token_hash = self.token_hash.clone();
        let every = Duration::from_secs(self.state.settings.console.session_check_secs.max(1));
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.reset();
            loop {
                tick.tick().await;
                if session_gone(&store, &token_hash).await {
                    tracing::info!("agent socket closed: its session ended");
                    return (SIGNED_OUT, "signed out");
                }
            }
        }
    }
}

async fn handle_client(session: &mut Session, sink: &mut Sink, msg: ClientMsg) -> Result<(), axum::Error> {
    let state = session.state.clone();
    // Another workspace's conversation is answered exactly as an unknown one.
    let named = match &msg {
        ClientMsg::Open { conversation_id, .. }
        | ClientMsg::Send { conversation_id, .. }
        | ClientMsg::Typing { conversation_id, .. }
        | ClientMsg::Read { conversation_id, .. }
        | ClientMsg::SetStatus { conversation_id, .. } => Some(conversation_id.clone()),
        ClientMsg::Ping | ClientMsg::Close { .. } => None,
    };
    if let Some(conversation_id) = named
        && !session.sees(&conversation_id).await
    {
        return match msg {
            ClientMsg::Open { .. } | ClientMsg::SetStatus { .. } => {
                send_json(sink, &error_frame(ErrorCode::NotFound, "no such conversation", None)).await
            }
            ClientMsg::Send { client_id, .. } => {
                send_json(sink, &error_frame(ErrorCode::NotFound, "no such conversation", Some(client_id))).await
            }
            _ => Ok(()),
        };
    }
    match msg {
        ClientMsg::Ping => send_json(sink, &ServerMsg::Pong).await,
        ClientMsg::Open { conversation_id, since_seq } => {
            let Ok(Some(conversation)) = state.store.conversation(&conversation_id).await else {
                return send_json(sink, &error_frame(ErrorCode::NotFound, "no such conversation", None)).await;
            };
            let from = if since_seq > conversation.last_seq { 0 } else { since_seq };
            match state.store.events_after(&conversation_id, from).await {
                Ok(events) => {
                    let last_seq = events.last().map_or(from, |e| e.seq);
                    session.open.insert(conversation_id.clone(), Relay::starting_at(last_seq));
                    state.conversations.agent_opened(&conversation).await;
                    send_json(sink, &ServerMsg::History { conversation_id, events, last_seq }).await
                }
                Err(e) => {
                    tracing::error!(error = ?e, "cannot read a conversation log");
                    send_json(sink, &error_frame(ErrorCode::Internal, "could not load the conversation", None)).await
                }
            }
        }
        ClientMsg::Close { conversation_id } => {
            session.open.remove(&conversation_id);
            Ok(())
        }
        ClientMsg::Send { conversation_id, client_id, body } => {
            let result = state
                .conversations
                .reply(&conversation_id, &session.agent.id, &session.agent.name, &client_id, &body)
                .await;
            let reply = match result {
                Ok(posted) => ServerMsg::Ack {
                    conversation_id: posted.conversation_id,
                    client_id,
                    message_id: posted.message.id,
                    seq: posted.seq,
                },
                Err(ServiceError::Invalid(why)) => error_frame(ErrorCode::InvalidInput, why, Some(client_id)),
                Err(ServiceError::NotFound) => {
                    error_frame(ErrorCode::NotFound, "no such conversation", Some(client_id))
                }
                Err(e) => {
                    tracing::error!(error = ?e, "agent reply not stored");
                    error_frame(ErrorCode::Internal, "reply not stored; it will be re-sent", Some(client_id))
                }
            };
            send_json(sink, &reply).await
        }
        ClientMsg::Typing { conversation_id, typing } => {
            // The visitor (and Messenger's Graph API) hear about changes and a periodic refresh, not every frame.
            if let Ok(Some(conversation)) = state.store.conversation(&conversation_id).await
                && session.typing_changed(&conversation.id, typing)
            {
                state.conversations.typing(&conversation, false, typing, Some(session.agent.name.clone())).await;
            }
            Ok(())
        }
        ClientMsg::Read { conversation_id, up_to_seq } => {
            if let Ok(Some(conversation)) = state.store.conversation(&conversation_id).await
                && let Err(e) = state.conversations.mark_read(&conversation, Party::Agent, up_to_seq).await
            {
                tracing::warn!(error = ?e, "agent read cursor not stored");
            }
            Ok(())
        }
        ClientMsg::SetStatus { conversation_id, status } => {
            match state.conversations.set_status(&conversation_id, status, &session.agent.name).await {
                Ok(()) => Ok(()),
                Err(ServiceError::NotFound) => {
                    send_json(sink, &error_frame(ErrorCode::NotFound, "no such conversation", None)).await
                }
                Err(e) => {
                    tracing::error!(error = ?e, "status not stored");
                    send_json(sink, &error_frame(ErrorCode::Internal, "status not changed; try again", None)).await
                }
            }
        }
    }
}

async fn handle_hub(session: &mut Session, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error> {
    match msg {
        HubMsg::Summary(summary) if session.sees_summary(summary).await => {
            send_json(sink, &ServerMsg::Summary { conversation: summary.clone() }).await
        }
        HubMsg::Summary(_) => Ok(()),
        HubMsg::Typing { conversation_id, typing, from_visitor: true, .. } if session.sees(conversation_id).await => {
            send_json(sink, &ServerMsg::Typing { conversation_id: conversation_id.clone(), typing: *typing }).await
        }
        HubMsg::Typing { .. } => Ok(()),
        HubMsg::Alert { key, message } => match alert_for(key, &session.workspace_id) {
            Some(key) => send_json(sink, &ServerMsg::Alert { key: key.to_string(), message: message.clone() }).await,
            None => Ok(()),
        },
        HubMsg::Event { conversation_id, event, .. } => {
            let Some(relay) = session.open.get_mut(conversation_id) else { return Ok(()) };
            let read = relay.next(&session.state.store, conversation_id, event).await;
            send_events(sink, conversation_id, read).await
        }
        HubMsg::Behind { conversation_id, seq, .. } => {
            let Some(relay) = session.open.get_mut(conversation_id) else { return Ok(()) };
            let read = relay.catch_up(&session.state.store, conversation_id, *seq).await;
            send_events(sink, conversation_id, read).await
        }
        HubMsg::Resync => {
            // Inbox rows may have changed unseen: the whole inbox again, then whatever each open log gained.
            match session.state.conversations.workspace_summaries(&session.workspace_id).await {
                Ok(conversations) => {
                    let agent = session.agent.clone();
                    send_json(sink, &ServerMsg::Inbox { agent, conversations }).await?;
                }
                Err(e) => tracing::warn!(error = ?e, "cannot reload the inbox after a bus reconnect"),
            }
            for (conversation_id, relay) in &mut session.open {
                let read = relay.catch_up(&session.state.store, conversation_id, u64::MAX).await;
                send_events(sink, conversation_id, read).await?;
            }
            Ok(())
        }
    }
}

/// Sends events read for an open conversation; a log that cannot be read closes the socket (it resumes by seq).
async fn send_events(
    sink: &mut Sink,
    conversation_id: &str,
    read: crate::store::StoreResult<Vec<protocol::Event>>,
) -> Result<(), axum::Error> {
    let events = match read {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = ?e, "cannot read the log to fill a gap");
            send_close(sink, close::TRY_AGAIN_LATER, "resume").await;
            return Err(axum::Error::new(e));
        }
    };
    for event in events {
        send_json(sink, &ServerMsg::Event { conversation_id: conversation_id.to_string(), event }).await?;
    }
    Ok(())
}
