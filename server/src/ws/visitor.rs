//! `GET /ws/visitor?site=KEY`: the widget's socket.
//!
//! The upgrade is refused with 403 unless `Origin` is this server's own origin (the chat frame) or one of the site's
//! allowed origins. The first frame must be `hello`; the visitor token in it (kept in the frame's own storage)
//! names the contact, or a new contact is created and its token returned in `welcome`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{ORIGIN, USER_AGENT};
use axum::response::Response;
use protocol::widget::{ClientMsg, ServerMsg, VisitorContext};
use protocol::{ErrorCode, Party};
use serde::Deserialize;

use super::flood::{TypingGate, VisitorFrame};
use super::{Connection, FRAME_TOO_BIG, Liveness, Peer, Relay, Sink, close, next_frame, send_close, send_json, serve};
use crate::error::ApiError;
use crate::hub::HubMsg;
use crate::services::{PostInput, Poster, ServiceError};
use crate::state::AppState;
use crate::store::models::{Contact, ContactContext, Conversation, Site};
use crate::{auth, client_ip};

#[derive(Deserialize)]
pub struct SiteQuery {
    site: String,
}

/// Checks the site and the origin, then upgrades — unless the client's address holds `limits.max_sockets_per_ip`
/// sockets already (429).
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<SiteQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let site = state.store.site_by_key(&query.site).await?.ok_or(ApiError::NotFound("site"))?;
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
    if origin != &*state.public_origin && !site.allowed_origins().iter().any(|o| o == origin) {
        return Err(ApiError::ForbiddenOrigin);
    }
    let user_agent =
        headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(512).collect::<String>());
    let ip = client_ip::resolve(peer, &headers, &state.settings.http.trusted_proxies);
    let slot = state.floods.open_socket(ip).ok_or(ApiError::TooManySockets)?;
    let peer = Peer::new(ip, Some(slot));
    let limit = state.settings.limits.max_frame_bytes;
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run(state, site, user_agent, socket, peer)))
}

fn clip(value: Option<String>, max: usize) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(|v| v.chars().take(max).collect())
}

fn contact_context(ctx: VisitorContext, user_agent: Option<String>) -> ContactContext {
    ContactContext {
        page_url: clip(ctx.page_url, 2048),
        referrer: clip(ctx.referrer, 2048),
        user_agent,
        timezone: clip(ctx.timezone, 64),
        utc_offset_minutes: ctx.utc_offset_minutes.filter(|m| (-16 * 60..=16 * 60).contains(m)),
        language: clip(ctx.language, 35),
    }
}

struct Session {
    state: AppState,
    site: Site,
    contact: Contact,
    conversation: Option<Conversation>,
    relay: Relay,
    /// Where the socket comes from (flood limits count per visitor and per address).
    peer: Peer,
    /// Repeated frames that would repeat work.
    gates: Gates,
}

/// Per-socket memory that turns repeated `typing` and `read` frames into no work.
#[derive(Debug, Default)]
struct Gates {
    typing: TypingGate,
    /// The highest `up_to_seq` already handled: a read at or below it cannot move the cursor.
    read_up_to: u64,
}

impl Session {
    /// The contact's conversation, looked up once it exists.
    async fn conversation(&mut self) -> Result<Option<Conversation>, ServiceError> {
        if self.conversation.is_none() {
            self.conversation = self.state.store.conversation_for_contact(&self.contact.id).await?;
        }
        Ok(self.conversation.clone())
    }
}

async fn run(state: AppState, site: Site, user_agent: Option<String>, socket: WebSocket, peer: Peer) {
    let (mut sink, mut stream) = super::split(socket, &state.settings.limits);
    let hello_timeout = Duration::from_secs(state.settings.limits.hello_timeout_secs);
    let hello = match tokio::time::timeout(hello_timeout, next_frame(&mut stream)).await {
        Ok(Some(Ok(ClientMsg::Hello { token, last_seq, context, .. }))) => (token, last_seq, context),
        Ok(None) => return,
        Ok(Some(Err(why))) if why == FRAME_TOO_BIG => return send_close(&mut sink, close::TOO_BIG, &why).await,
        _ => return send_close(&mut sink, close::POLICY, "expected hello").await,
    };
    if !state.floods.hello(peer.ip) {
        let why = "too many new chats from your network; try again in a minute";
        let _ = send_json(&mut sink, &error_frame(ErrorCode::RateLimited, why, None)).await;
        return send_close(&mut sink, close::TRY_AGAIN_LATER, "rate limited").await;
    }
    let (token, last_seq, context) = hello;
    let ctx = contact_context(context, user_agent);
    let (contact, token) = match resolve_contact(&state, &site, token.as_deref(), &ctx).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = ?e, "visitor hello failed");
            let _ = send_json(&mut sink, &error_frame(ErrorCode::Internal, "try again", None)).await;
            return send_close(&mut sink, close::TRY_AGAIN_LATER, "try again").await;
        }
    };
    // Join the hub before reading the log, so no event can fall between the two.
    let (registration, mut hub_rx) = state.hub.join_visitor(&contact.id);
    let mut session = Session {
        state: state.clone(),
        site,
        contact,
        conversation: None,
        relay: Relay::default(),
        peer,
        gates: Gates::default(),
    };
    let welcome = match welcome(&mut session, token, last_seq).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = ?e, "visitor welcome failed");
            return send_close(&mut sink, close::TRY_AGAIN_LATER, "try again").await;
        }
    };
    if send_json(&mut sink, &welcome).await.is_err() {
        return;
    }
    announce_presence(&session).await;

    let liveness = Liveness::new(&state.settings.limits);
    serve(&mut session, &mut sink, &mut stream, &mut hub_rx, state.shutdown.clone(), liveness).await;
    drop(registration);
    announce_presence(&session).await;
}

/// Finds the contact for a token, or creates a new one with a fresh token.
async fn resolve_contact(
    state: &AppState,
    site: &Site,
    token: Option<&str>,
    ctx: &ContactContext,
) -> Result<(Contact, String), ServiceError> {
    if let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 128)
        && let Some(contact) = state.store.contact_by_token(&site.id, &auth::token_hash(token)).await?
    {
        state.store.update_contact_context(&contact.id, ctx).await?;
        return Ok((contact, token.to_string()));
    }
    let token = auth::new_token();
    let label = format!("Visitor {}", &auth::new_token()[..4].to_ascii_uppercase());
    let contact = state.store.create_contact(&site.id, &auth::token_hash(&token), &label, ctx).await?;
    Ok((contact, token))
}

async fn welcome(session: &mut Session, token: String, last_seq: u64) -> Result<ServerMsg, ServiceError> {
    let Some(conversation) = session.conversation().await? else {
        return Ok(ServerMsg::Welcome {
            token,
            events: Vec::new(),
            last_seq: 0,
            agent_read_seq: 0,
            reset: last_seq > 0,
        });
    };
    // A client ahead of the log holds someone else's history (e.g. a token it no longer has): start it over.
    let reset = last_seq > conversation.last_seq;
    let from = if reset { 0 } else { last_seq };
    let events = session.state.store.events_after(&conversation.id, from).await?;
    let sent_to = events.last().map_or(from, |e| e.seq);
    session.relay = Relay::starting_at(sent_to);
    Ok(ServerMsg::Welcome { token, events, last_seq: sent_to, agent_read_seq: conversation.agent_read_seq, reset })
}

async fn announce_presence(session: &Session) {
    if let Some(conversation) = &session.conversation
        && let Err(e) = session.state.conversations.publish_summary(&conversation.id).await
    {
        tracing::warn!(error = ?e, "could not publish presence");
    }
}

fn error_frame(code: ErrorCode, message: &str, client_id: Option<String>) -> ServerMsg {
    ServerMsg::Error { code, message: message.to_string(), client_id }
}

impl Connection for Session {
    type Client = ClientMsg;
    type Server = ServerMsg;

    fn admit(&mut self, msg: Option<&ClientMsg>) -> Result<(), ServerMsg> {
        let kind = match msg {
            Some(ClientMsg::Send { .. }) => VisitorFrame::Message,
            Some(ClientMsg::MessengerLink | ClientMsg::UnlinkMessenger) => VisitorFrame::Link,
            _ => VisitorFrame::Other,
        };
        if self.state.floods.visitor_frame(&self.contact.id, self.peer.ip, kind) {
            return Ok(());
        }
        Err(match msg {
            // The widget keeps the message and re-sends it with the same client id.
            Some(ClientMsg::Send { client_id, .. }) => error_frame(
                ErrorCode::RateLimited,
                "you are sending messages too fast; it will be sent in a moment",
                Some(client_id.clone()),
            ),
            _ => error_frame(ErrorCode::RateLimited, "too many requests; slow down", None),
        })
    }

    async fn on_client(&mut self, sink: &mut Sink, msg: ClientMsg) -> Result<(), axum::Error> {
        handle_client(self, sink, msg).await
    }

    async fn on_hub(&mut self, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error> {
        handle_hub(self, sink, msg).await
    }

    fn bad_frame(&self, why: &str) -> ServerMsg {
        error_frame(ErrorCode::BadFrame, why, None)
    }
}

async fn handle_client(session: &mut Session, sink: &mut Sink, msg: ClientMsg) -> Result<(), axum::Error> {
    match msg {
        ClientMsg::Hello { .. } => {
            send_json(sink, &error_frame(ErrorCode::BadFrame, "hello was already received", None)).await
        }
        ClientMsg::Ping => send_json(sink, &ServerMsg::Pong).await,
        ClientMsg::Send { client_id, body } => {
            let result = session
                .state
                .conversations
                .post(PostInput::new(&session.contact.id, &session.site.id, Poster::Visitor, &client_id, &body))
                .await;
            let reply = match result {
                Ok(posted) => {
                    let _ = session.conversation().await;
                    ServerMsg::Ack { client_id, message_id: posted.message.id, seq: posted.seq }
                }
                Err(ServiceError::Invalid(why)) => error_frame(ErrorCode::InvalidInput, why, Some(client_id)),
                Err(e) => {
                    tracing::error!(error = ?e, "visitor message not stored");
                    error_frame(ErrorCode::Internal, "message not stored; it will be re-sent", Some(client_id))
                }
            };
            send_json(sink, &reply).await
        }
        ClientMsg::Typing { typing } => {
            // Agents hear about changes (and a periodic refresh), not about every frame.
            if session.gates.typing.pass(typing)
                && let Ok(Some(conversation)) = session.conversation().await
            {
                session.state.conversations.typing(&conversation, true, typing, None);
            }
            Ok(())
        }
        ClientMsg::MessengerLink => {
            let Some(messenger) = session.state.messenger.clone() else {
                return send_json(sink, &error_frame(ErrorCode::InvalidInput, "Messenger is not available", None))
                    .await;
            };
            match messenger.offer_link(&session.contact.id).await {
                Ok(offer) => {
                    send_json(
                        sink,
                        &ServerMsg::MessengerLink { url: offer.url, code: offer.code, expires_at: offer.expires_at },
                    )
                    .await
                }
                Err(e) => {
                    tracing::error!(error = ?e, "no Messenger link");
                    send_json(sink, &error_frame(ErrorCode::Internal, "could not create a Messenger link", None)).await
                }
            }
        }
        ClientMsg::UnlinkMessenger => {
            if let Some(messenger) = session.state.messenger.clone()
                && let Err(e) = messenger.unlink(&session.contact.id).await
            {
                tracing::error!(error = ?e, "unlink failed");
                return send_json(sink, &error_frame(ErrorCode::Internal, "could not unlink; try again", None)).await;
            }
            Ok(())
        }
        ClientMsg::Read { up_to_seq } => {
            // A read at or below one already stored cannot move the cursor: no query.
            if up_to_seq <= session.gates.read_up_to {
                return Ok(());
            }
            if let Ok(Some(conversation)) = session.conversation().await {
                match session.state.conversations.mark_read(&conversation, Party::Visitor, up_to_seq).await {
                    Ok(()) => session.gates.read_up_to = up_to_seq,
                    Err(e) => tracing::warn!(error = ?e, "visitor read cursor not stored"),
                }
            }
            Ok(())
        }
    }
}

async fn handle_hub(session: &mut Session, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error> {
    match msg {
        HubMsg::Event { conversation_id, event, .. } => {
            let events = match session.relay.next(&session.state.store, conversation_id, event).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = ?e, "cannot read the log to fill a gap");
                    send_close(sink, close::TRY_AGAIN_LATER, "resume").await;
                    return Err(axum::Error::new(e));
                }
            };
            for event in events {
                send_json(sink, &ServerMsg::Event { event }).await?;
            }
            Ok(())
        }
        HubMsg::Typing { typing, name, from_visitor: false, .. } => {
            send_json(sink, &ServerMsg::Typing { typing: *typing, name: name.clone() }).await
        }
        HubMsg::Typing { .. } | HubMsg::Summary(_) | HubMsg::Alert { .. } => Ok(()),
    }
}
