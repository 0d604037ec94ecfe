//! `GET /ws/visitor?site=KEY`: the widget's socket.
//!
//! The upgrade is refused with 403 unless `Origin` is this server's own origin (the chat frame) or one of the site's
//! allowed origins. The first frame must be `hello`. The visitor token comes from the visitor cookie (read only on
//! an upgrade from the chat frame's own origin, see `http::visitor_session`), else from `hello` (the frame's own
//! storage, where it works), else a new one is minted and returned in `welcome` (a cookie token is never echoed;
//! `welcome` carries its fingerprint, `sid`, so the frame can compare it with the cookie jar's).
//! Opening the chat writes nothing: the contact is created when the visitor first writes or asks for a Messenger
//! link, insert-or-get on the token, under an id derived from it, so the socket can join the hub before the contact
//! exists and two tabs with one token end in one contact.
//!
//! Signed identity (`crate::identity`): a `hello` whose identity verifies under the site's secret speaks for the
//! contact of that external id (`store::identity_key`), whatever the cookie or token say, so the customer finds
//! their conversation on any device; the anonymous session is left as it was (never merged, in either direction).
//! An identity that does not verify is refused with an `identity_refused` error frame before `welcome`, and the
//! socket goes on anonymously. On a site that requires identity, a socket without a verified identity gets an
//! empty `welcome`, no live events, and `identity_required` errors for `send` and `messenger_link`.

use std::net::SocketAddr;
use std::sync::Arc;
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
use crate::http::visitor_session;
use crate::hub::HubMsg;
use crate::identity::{self, Verified};
use crate::services::{PostInput, Posted, Poster, ServiceError};
use crate::state::AppState;
use crate::store;
use crate::store::models::{Contact, ContactContext, Conversation, Site};
use crate::store::{SiteIdentity, VisitorResume};
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
    let site = state.sites.by_key(&state.store, &query.site).await?.ok_or(ApiError::NotFound("site"))?;
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
    if origin != &*state.public_origin && !site.allowed_origins().iter().any(|o| o == origin) {
        return Err(ApiError::ForbiddenOrigin);
    }
    // Only the chat frame's own socket speaks for the cookie: a host page connecting directly gets no session.
    let cookie =
        (origin == &*state.public_origin).then(|| visitor_session::cookie_token(&headers, &site.key)).flatten();
    let user_agent =
        headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(512).collect::<String>());
    let ip = client_ip::resolve(peer, &headers, &state.settings.http.trusted_proxies);
    let slot = state.floods.open_socket(ip).ok_or(ApiError::TooManySockets)?;
    let peer = Peer::new(ip, Some(slot));
    let ws = super::configure(ws, &state.settings.limits);
    Ok(ws.on_upgrade(move |socket| run(state, site, cookie, user_agent, socket, peer)))
}

fn clip(value: Option<String>, max: usize) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(|v| v.chars().take(max).collect())
}

/// Whether the browser told nothing about itself (most reconnects, and clients other than browsers).
fn said_nothing(ctx: &ContactContext) -> bool {
    let ContactContext { page_url, referrer, user_agent, timezone, utc_offset_minutes, language } = ctx;
    [page_url, referrer, user_agent, timezone, language].iter().all(|v| v.is_none()) && utc_offset_minutes.is_none()
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
    /// The site's id (all the session needs of the site: an idle socket keeps no copy of its row).
    site_id: String,
    /// The contact this socket speaks for; it exists once `contact_stored` (see [`Session::ensure_contact`]).
    contact_id: String,
    contact_stored: bool,
    /// SHA-256 of the visitor token and what the browser said (`None`: nothing), to create the contact on the first
    /// write; both are let go once the contact exists.
    token_hash: Vec<u8>,
    context: Option<Box<ContactContext>>,
    conversation: Option<Conversation>,
    relay: Relay,
    /// Where the socket comes from (flood limits count per visitor and per address).
    peer: Peer,
    /// Repeated frames that would repeat work.
    gates: Gates,
    /// The verified customer this socket speaks for, if the host page identified them (boxed: most sockets have
    /// none).
    identified: Option<Box<Verified>>,
    /// The site requires identity and this socket has none: it may read nothing and write nothing.
    refused: bool,
    /// The conversation and log read with the contact (`hello`'s one trip to the store), until `welcome` uses
    /// them (boxed: an idle socket keeps a pointer's worth of room for them, not the whole row).
    prefetched: Option<Box<Prefetched>>,
}

/// What [`ConversationStore::visitor_resume`](crate::store::ConversationStore::visitor_resume) read beside the
/// contact, for its `welcome`.
struct Prefetched {
    conversation: Option<Conversation>,
    events: Vec<protocol::Event>,
    reset: bool,
}

impl From<VisitorResume> for Prefetched {
    fn from(read: VisitorResume) -> Self {
        Self { conversation: read.conversation, events: read.events, reset: read.reset }
    }
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
            self.conversation = self.state.store.conversation_for_contact(&self.contact_id).await?;
        }
        Ok(self.conversation.clone())
    }

    /// Creates the contact on the visitor's first write (insert-or-get on the token, so other tabs share it).
    async fn ensure_contact(&mut self) -> Result<(), ServiceError> {
        if self.contact_stored {
            return Ok(());
        }
        let label = match &self.identified {
            Some(who) => who.name.clone().unwrap_or_else(|| "Customer".to_string()),
            None => format!("Visitor {}", &auth::new_token()[..4].to_ascii_uppercase()),
        };
        let none = ContactContext::default();
        let context = self.context.as_deref().unwrap_or(&none);
        let contact = self.state.store.contact_for_token(&self.site_id, &self.token_hash, &label, context).await?;
        if contact.id != self.contact_id {
            tracing::warn!("a web contact's id is not the one derived from its token");
            self.contact_id = contact.id;
        }
        if let Some(who) = &self.identified {
            self.state.store.record_identity(&self.contact_id, who).await?;
        }
        self.contact_stored = true;
        self.token_hash = Vec::new();
        self.context = None;
        // From now on this socket's contact can have a conversation: the other nodes count it as online.
        self.state.conversations.nodes().visitor_joined(&self.contact_id).await;
        Ok(())
    }
}

async fn run(
    state: AppState,
    site: Arc<Site>,
    cookie: Option<String>,
    user_agent: Option<String>,
    socket: WebSocket,
    peer: Peer,
) {
    let (mut sink, mut stream) = super::split(socket, &state.settings.limits);
    let hello_timeout = Duration::from_secs(state.settings.limits.hello_timeout_secs);
    let hello = match tokio::time::timeout(hello_timeout, next_frame(&mut stream)).await {
        Ok(Some(Ok(ClientMsg::Hello { token, last_seq, context, identity, .. }))) => {
            (token, last_seq, context, identity)
        }
        Ok(None) => return,
        Ok(Some(Err(why))) if why == FRAME_TOO_BIG => return send_close(&mut sink, close::TOO_BIG, &why).await,
        _ => return send_close(&mut sink, close::POLICY, "expected hello").await,
    };
    if !state.floods.hello(peer.ip) {
        let why = "too many new chats from your network; try again in a minute";
        let _ = send_json(&mut sink, &error_frame(ErrorCode::RateLimited, why, None)).await;
        return send_close(&mut sink, close::TRY_AGAIN_LATER, "rate limited").await;
    }
    let (token, last_seq, context, claimed) = hello;
    let ctx = contact_context(context, user_agent);
    // The hello's queries run in boxed futures: the socket's task keeps only what it needs while idle.
    let resolved = match Box::pin(resolve_contact(&state, &site, cookie, token, &ctx, last_seq)).await {
        Ok((anonymous, settings)) => {
            Box::pin(resolve_identity(&state, &site, anonymous, settings, claimed, &ctx)).await
        }
        Err(e) => Err(e),
    };
    let (visitor, speaker) = match resolved {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = ?e, "visitor hello failed");
            let _ = send_json(&mut sink, &error_frame(ErrorCode::Internal, "try again", None)).await;
            return send_close(&mut sink, close::TRY_AGAIN_LATER, "try again").await;
        }
    };
    // Join the hub before reading the log, so no event can fall between the two.
    let (registration, mut hub_rx) = state.hub.join_visitor(&visitor.contact_id);
    if speaker.identity_refused {
        let why = "the identity did not verify; continuing without it";
        if send_json(&mut sink, &error_frame(ErrorCode::IdentityRefused, why, None)).await.is_err() {
            return;
        }
    }
    let liveness = Liveness::new(&state.settings.limits);
    let shutdown = state.shutdown.clone();
    // The session holds the only copy of the state from here on (an idle socket keeps one, not two).
    let stored = visitor.stored;
    let mut session = Session {
        state,
        // The rest of the row goes now, not when the socket closes.
        site_id: site_id_of(site),
        contact_id: visitor.contact_id,
        contact_stored: stored,
        token_hash: if stored { Vec::new() } else { visitor.token_hash },
        context: (!stored && !said_nothing(&ctx)).then(|| Box::new(ctx)),
        conversation: None,
        relay: Relay::default(),
        peer,
        gates: Gates::default(),
        identified: speaker.identified.map(Box::new),
        refused: speaker.refused,
        prefetched: visitor.prefetched.map(Box::new),
    };
    // A token from the cookie stays out of reach of scripts: the frame is told none, only its fingerprint.
    let sid = visitor_session::sid(&visitor.token);
    let token = if visitor.from_cookie { String::new() } else { visitor.token };
    let welcome = match Box::pin(welcome(&mut session, token, sid, last_seq)).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = ?e, "visitor welcome failed");
            return send_close(&mut sink, close::TRY_AGAIN_LATER, "try again").await;
        }
    };
    let sent = send_json(&mut sink, &welcome).await;
    // The history it carried is not kept for the socket's lifetime.
    drop(welcome);
    if sent.is_err() {
        return;
    }
    Box::pin(announce_presence(&session, true)).await;

    serve(&mut session, &mut sink, &mut stream, &mut hub_rx, shutdown, liveness).await;
    // The socket's descriptor goes back now, not after the leave is announced (in a storm, thousands of cut
    // sockets would otherwise hold theirs while the new connections run out).
    drop((sink, stream));
    drop(registration);
    Box::pin(announce_presence(&session, false)).await;
}

/// The site's id; the socket lets go of its row.
fn site_id_of(site: Arc<Site>) -> String {
    Arc::try_unwrap(site).map_or_else(|shared| shared.id.clone(), |site| site.id)
}

/// Who a socket speaks for.
struct Visitor {
    token: String,
    /// The token came from the visitor cookie.
    from_cookie: bool,
    token_hash: Vec<u8>,
    /// The stored contact's id, or the id the contact will get on the first write.
    contact_id: String,
    /// Whether the contact exists already.
    stored: bool,
    /// Its conversation and log, when they were read with it.
    prefetched: Option<Prefetched>,
}

/// Picks the token (the cookie's, else `hello`'s, preferring one that already has a contact; else a new one) and
/// finds its contact, and reads the site's identity settings. The first token's read also brings its contact's
/// conversation and the log after `last_seq` (a resume takes one trip to the store). Writes nothing, except the
/// whereabouts of a known contact when they changed.
async fn resolve_contact(
    state: &AppState,
    site: &Site,
    cookie: Option<String>,
    hello_token: Option<String>,
    ctx: &ContactContext,
    last_seq: u64,
) -> Result<(Visitor, SiteIdentity), ServiceError> {
    let hello_token = hello_token.filter(|t| visitor_session::valid_token(t));
    let mut unused = None;
    let mut settings = None;
    for (token, from_cookie) in [(cookie, true), (hello_token, false)] {
        let Some(token) = token else { continue };
        let token_hash = auth::token_hash(&token);
        let found = match &settings {
            None => {
                let read = state.store.visitor_resume(&site.id, &token_hash, last_seq).await?;
                settings = Some(read.identity.clone());
                read.contact.clone().map(|contact| (contact, Some(Prefetched::from(read))))
            }
            Some(_) => state.store.contact_by_token(&site.id, &token_hash).await?.map(|contact| (contact, None)),
        };
        if let Some((contact, prefetched)) = found {
            update_context(state, &contact, ctx).await?;
            let settings = settings.unwrap_or_default();
            let visitor = Visitor { token, from_cookie, token_hash, contact_id: contact.id, stored: true, prefetched };
            return Ok((visitor, settings));
        }
        // A token some other site's contact holds cannot name a contact here.
        if unused.is_none() && !state.store.web_token_taken(&token_hash).await? {
            unused = Some((token, from_cookie, token_hash));
        }
    }
    let (token, from_cookie, token_hash) = unused.unwrap_or_else(|| {
        let token = auth::new_token();
        let hash = auth::token_hash(&token);
        (token, false, hash)
    });
    let contact_id = store::web_contact_id(&site.id, &token_hash);
    let settings = match settings {
        Some(settings) => settings,
        None => state.store.site_identity(&site.id).await?,
    };
    Ok((Visitor { token, from_cookie, token_hash, contact_id, stored: false, prefetched: None }, settings))
}

/// Records where a known contact is now, if the browser said anything new (most reconnects say nothing new: no
/// write transaction for them).
async fn update_context(state: &AppState, contact: &Contact, ctx: &ContactContext) -> Result<(), ServiceError> {
    // What `update_contact_context` changes: each field the browser sent that differs from the stored one.
    fn differs<T: PartialEq>(sent: &Option<T>, stored: &Option<T>) -> bool {
        sent.as_ref().is_some_and(|sent| Some(sent) != stored.as_ref())
    }
    let changed = differs(&ctx.page_url, &contact.page_url)
        || differs(&ctx.referrer, &contact.referrer)
        || differs(&ctx.user_agent, &contact.user_agent)
        || differs(&ctx.timezone, &contact.timezone)
        || differs(&ctx.utc_offset_minutes, &contact.utc_offset_minutes)
        || differs(&ctx.language, &contact.language);
    if changed {
        state.store.update_contact_context(&contact.id, ctx).await?;
    }
    Ok(())
}

/// Whom a socket speaks for once the `hello`'s identity is checked.
#[derive(Default)]
struct Speaker {
    identified: Option<Verified>,
    /// An identity came and did not verify.
    identity_refused: bool,
    /// The site requires identity and there is none: read nothing, write nothing.
    refused: bool,
}

/// Checks the `hello`'s identity. Verified: the socket speaks for the contact of that external id (its name and
/// email recorded when the contact exists; otherwise on the first write). Else the anonymous visitor stands, unless
/// the site requires identity: then the socket gets a contact id no one holds, so it sees no history and no events.
/// The anonymous visitor's token still decides what `welcome` returns, so its session is kept for later.
async fn resolve_identity(
    state: &AppState,
    site: &Site,
    mut visitor: Visitor,
    settings: SiteIdentity,
    claimed: Option<protocol::widget::Identity>,
    ctx: &ContactContext,
) -> Result<(Visitor, Speaker), ServiceError> {
    let claimed_any = claimed.is_some();
    let verified = claimed.and_then(|claim| identity::verify(settings.secret.as_ref(), claim));
    let mut speaker = Speaker { identity_refused: claimed_any && verified.is_none(), ..Speaker::default() };
    match verified {
        Some(who) => {
            // Another contact: what was read with the anonymous one is not its.
            visitor.prefetched = None;
            visitor.token_hash = store::identity_key(&site.id, &who.id);
            visitor.contact_id = store::web_contact_id(&site.id, &visitor.token_hash);
            visitor.stored = match state.store.contact_by_token(&site.id, &visitor.token_hash).await? {
                Some(contact) => {
                    update_context(state, &contact, ctx).await?;
                    visitor.contact_id = contact.id;
                    state.store.record_identity(&visitor.contact_id, &who).await?;
                    true
                }
                None => false,
            };
            speaker.identified = Some(who);
        }
        None if settings.required => {
            visitor.prefetched = None;
            visitor.contact_id = store::new_id();
            visitor.stored = false;
            speaker.refused = true;
        }
        None => {}
    }
    Ok((visitor, speaker))
}

async fn welcome(session: &mut Session, token: String, sid: String, last_seq: u64) -> Result<ServerMsg, ServiceError> {
    // Read with the contact (a resume), else now.
    let prefetched = session.prefetched.take().map(|read| *read);
    let conversation = match &prefetched {
        Some(read) => {
            session.conversation = read.conversation.clone();
            read.conversation.clone()
        }
        None => session.conversation().await?,
    };
    let Some(conversation) = conversation else {
        return Ok(ServerMsg::Welcome {
            token,
            events: Vec::new(),
            last_seq: 0,
            agent_read_seq: 0,
            reset: last_seq > 0,
            sid,
        });
    };
    // A client ahead of the log holds someone else's history (e.g. a token it no longer has): start it over.
    let (events, reset) = match prefetched {
        Some(read) => (read.events, read.reset),
        None => {
            let reset = last_seq > conversation.last_seq;
            (session.state.store.events_after(&conversation.id, if reset { 0 } else { last_seq }).await?, reset)
        }
    };
    let from = if reset { 0 } else { last_seq };
    let sent_to = events.last().map_or(from, |e| e.seq);
    session.relay = Relay::starting_at(sent_to);
    let agent_read_seq = conversation.agent_read_seq;
    Ok(ServerMsg::Welcome { token, events, last_seq: sent_to, agent_read_seq, reset, sid })
}

/// Tells the other nodes (and every agent) that this contact's socket came or went. A visitor who never wrote has
/// no contact row, so no conversation whose "online" anyone sees: no presence row is written for every page view
/// (the heartbeat still lists every socket, so a conversation another tab starts is covered within a beat).
async fn announce_presence(session: &Session, joined: bool) {
    if !session.contact_stored {
        return;
    }
    // A stopping node announces no leave socket by socket: the database may be closing under it (and the leave
    // would only log a closed pool). Its presence goes all at once instead (`Nodes::stop`), and the agents, told to
    // reconnect too, read their inbox afresh.
    if !joined && *session.state.shutdown.borrow() {
        return;
    }
    let conversation_id = session.conversation.as_ref().map(|c| c.id.as_str());
    session.state.conversations.visitor_presence(&session.contact_id, conversation_id, joined).await;
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
        if self.state.floods.visitor_frame(&self.contact_id, self.peer.ip, kind) {
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
        // Without identity on a site that requires it: writes are refused, reads and typing are ignored.
        if self.refused {
            let why = "sign in on this site to chat with us";
            match msg {
                ClientMsg::Send { client_id, .. } => {
                    let refusal = error_frame(ErrorCode::IdentityRequired, why, Some(client_id));
                    return send_json(sink, &refusal).await;
                }
                ClientMsg::MessengerLink => {
                    return send_json(sink, &error_frame(ErrorCode::IdentityRequired, why, None)).await;
                }
                ClientMsg::Typing { .. } | ClientMsg::Read { .. } | ClientMsg::UnlinkMessenger => return Ok(()),
                ClientMsg::Ping | ClientMsg::Hello { .. } => {}
            }
        }
        handle_client(self, sink, msg).await
    }

    async fn on_clients(&mut self, sink: &mut Sink, msgs: Vec<ClientMsg>) -> Result<(), axum::Error> {
        // Several sends at once are posted together where the store commits writes in the order they start.
        let together = msgs.len() > 1
            && !self.refused
            && self.state.store.writes_in_order()
            && msgs.iter().all(|m| matches!(m, ClientMsg::Send { .. }));
        if !together {
            for msg in msgs {
                Box::pin(self.on_client(sink, msg)).await?;
            }
            return Ok(());
        }
        let sends = msgs
            .into_iter()
            .filter_map(|m| match m {
                ClientMsg::Send { client_id, body } => Some((client_id, body)),
                _ => None,
            })
            .collect();
        post_all(self, sink, sends).await
    }

    async fn on_hub(&mut self, sink: &mut Sink, msg: &HubMsg) -> Result<(), axum::Error> {
        handle_hub(self, sink, msg).await
    }

    fn bad_frame(&self, why: &str) -> ServerMsg {
        error_frame(ErrorCode::BadFrame, why, None)
    }
}

/// The answer to a send: its ack, or why it was not stored.
fn post_reply(client_id: String, result: Result<Posted, ServiceError>) -> ServerMsg {
    match result {
        Ok(posted) => ServerMsg::Ack { client_id, message_id: posted.message.id, seq: posted.seq },
        Err(ServiceError::Invalid(why)) => error_frame(ErrorCode::InvalidInput, why, Some(client_id)),
        Err(e) => {
            tracing::error!(error = ?e, "visitor message not stored");
            error_frame(ErrorCode::Internal, "message not stored; it will be re-sent", Some(client_id))
        }
    }
}

/// Sends that arrived together (a client pipelining them), posted together: their writes are queued back to back
/// (`join_all` first polls them in order, and the writer commits in queue order), so they usually share one
/// commit and the pages of this conversation it writes, where one by one each waited for the commit of the one
/// before. Acks go out in order, then the posts' own events (which the hub coalesced into the last one).
async fn post_all(session: &mut Session, sink: &mut Sink, sends: Vec<(String, String)>) -> Result<(), axum::Error> {
    // Input that will be refused creates nothing.
    let valid = sends.iter().any(|(client_id, body)| {
        protocol::validate_client_id(client_id).is_ok() && protocol::validate_body(body).is_ok()
    });
    if valid && let Err(e) = session.ensure_contact().await {
        tracing::error!(error = ?e, "visitor contact not stored");
        for (client_id, _) in sends {
            let why = "message not stored; it will be re-sent";
            send_json(sink, &error_frame(ErrorCode::Internal, why, Some(client_id))).await?;
        }
        return Ok(());
    }
    let (conversations, contact_id, site_id) = (&session.state.conversations, &session.contact_id, &session.site_id);
    let results = futures_util::future::join_all(sends.iter().map(|(client_id, body)| {
        conversations.post(PostInput::new(contact_id, site_id, Poster::Visitor, client_id, body))
    }))
    .await;
    let mut events = Vec::new();
    let mut replies = Vec::with_capacity(sends.len());
    for ((client_id, _), mut result) in sends.into_iter().zip(results) {
        if let Ok(posted) = &mut result {
            events.append(&mut posted.events);
        }
        replies.push(post_reply(client_id, result));
    }
    if !events.is_empty() {
        let _ = session.conversation().await;
    }
    for reply in &replies {
        send_json(sink, reply).await?;
    }
    let Some(conversation_id) = session.conversation.as_ref().map(|c| c.id.clone()) else { return Ok(()) };
    events.sort_by_key(|e| e.seq);
    for event in events {
        // Only the next one in the log: past a gap (another tab's or an agent's event between them), the hub's
        // message brings the rest.
        if event.seq != session.relay.last_sent() + 1 {
            break;
        }
        let next = session.relay.next(&session.state.store, &conversation_id, &event).await.unwrap_or_default();
        for event in next {
            send_json(sink, &ServerMsg::Event { event }).await?;
        }
    }
    Ok(())
}

async fn handle_client(session: &mut Session, sink: &mut Sink, msg: ClientMsg) -> Result<(), axum::Error> {
    match msg {
        ClientMsg::Hello { .. } => {
            send_json(sink, &error_frame(ErrorCode::BadFrame, "hello was already received", None)).await
        }
        ClientMsg::Ping => send_json(sink, &ServerMsg::Pong).await,
        ClientMsg::Send { client_id, body } => {
            // Input that will be refused creates nothing.
            let valid = protocol::validate_client_id(&client_id).is_ok() && protocol::validate_body(&body).is_ok();
            if valid && let Err(e) = session.ensure_contact().await {
                tracing::error!(error = ?e, "visitor contact not stored");
                let why = "message not stored; it will be re-sent";
                return send_json(sink, &error_frame(ErrorCode::Internal, why, Some(client_id))).await;
            }
            let result = session
                .state
                .conversations
                .post(PostInput::new(&session.contact_id, &session.site_id, Poster::Visitor, &client_id, &body))
                .await;
            if result.is_ok() {
                let _ = session.conversation().await;
            }
            send_json(sink, &post_reply(client_id, result)).await
        }
        ClientMsg::Typing { typing } => {
            // Agents hear about changes (and a periodic refresh), not about every frame.
            if session.gates.typing.pass(typing)
                && let Ok(Some(conversation)) = session.conversation().await
            {
                session.state.conversations.typing(&conversation, true, typing, None).await;
            }
            Ok(())
        }
        ClientMsg::MessengerLink => {
            let Some(messenger) = session.state.messenger.clone() else {
                return send_json(sink, &error_frame(ErrorCode::InvalidInput, "Messenger is not available", None))
                    .await;
            };
            if let Err(e) = session.ensure_contact().await {
                tracing::error!(error = ?e, "visitor contact not stored");
                return send_json(sink, &error_frame(ErrorCode::Internal, "could not create a Messenger link", None))
                    .await;
            }
            match messenger.offer_link(&session.contact_id).await {
                Ok(offer) => {
                    send_json(
                        sink,
                        &ServerMsg::MessengerLink { url: offer.url, code: offer.code, expires_at: offer.expires_at },
                    )
                    .await
                }
                Err(ServiceError::Invalid(why)) => {
                    send_json(sink, &error_frame(ErrorCode::InvalidInput, "Messenger is not available", None)).await?;
                    tracing::info!(reason = why, "no Messenger link");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = ?e, "no Messenger link");
                    send_json(sink, &error_frame(ErrorCode::Internal, "could not create a Messenger link", None)).await
                }
            }
        }
        ClientMsg::UnlinkMessenger => {
            if let Some(messenger) = session.state.messenger.clone()
                && let Err(e) = messenger.unlink(&session.contact_id).await
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
    let store = session.state.store.clone();
    let read = match msg {
        HubMsg::Event { conversation_id, event, .. } => session.relay.next(&store, conversation_id, event).await,
        HubMsg::Behind { conversation_id, seq, .. } => session.relay.catch_up(&store, conversation_id, *seq).await,
        HubMsg::Resync => match session.conversation().await {
            Ok(Some(conversation)) => session.relay.catch_up(&store, &conversation.id, u64::MAX).await,
            Ok(None) => Ok(Vec::new()),
            Err(ServiceError::Store(e)) => Err(e),
            Err(e) => Err(store::StoreError::Backend(e.to_string())),
        },
        HubMsg::Typing { typing, name, from_visitor: false, .. } => {
            return send_json(sink, &ServerMsg::Typing { typing: *typing, name: name.clone() }).await;
        }
        HubMsg::Typing { .. } | HubMsg::Summary(_) | HubMsg::Alert { .. } => return Ok(()),
    };
    match read {
        Ok(events) => {
            for event in events {
                send_json(sink, &ServerMsg::Event { event }).await?;
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = ?e, "cannot read the log to fill a gap");
            send_close(sink, close::TRY_AGAIN_LATER, "resume").await;
            Err(axum::Error::new(e))
        }
    }
}
