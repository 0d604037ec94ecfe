//! Where the visitor's session lives: the `POST /api/visitor/session` cookie, the upgrade that reads it, the `sid`
//! fingerprint that lets the frame compare its socket's token with the jar's, two tabs minting at once, and
//! contacts created on the first write only (never on `hello`).

use parley::auth;
use protocol::EventKind;
use protocol::widget::{ClientMsg, ServerMsg, VisitorContext};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{HOST_ORIGIN, MessengerApp, SITE_KEY, TestApp, Ws, send_acked, spawn_app, spawn_messenger_app};

/// The plain visitor cookie name; minted tokens get `<COOKIE_NAME>.<8 hex>`.
const COOKIE_NAME: &str = "parley_v_test-site";

/// Calls the session endpoint as the chat frame would (or with another `Origin`); returns the response.
async fn session_call(app: &TestApp, origin: Option<&str>, cookie: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = app.http.post(app.url(&format!("/api/visitor/session?site={SITE_KEY}"))).body(body.to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("request")
}

/// Every `Set-Cookie` of a response.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
}

/// The `name=value` pair of the visitor cookie the response stores (exactly one), as a browser sends it back.
fn cookie_pair(response: &reqwest::Response) -> String {
    let stored: Vec<String> = set_cookies(response)
        .into_iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .filter_map(|c| c.split(';').next().map(str::to_string))
        .collect();
    let [pair] = &stored[..] else { panic!("expected one visitor cookie, got {stored:?}") };
    assert!(pair.starts_with(COOKIE_NAME), "unexpected cookie {pair}");
    pair.clone()
}

/// The token the response's `Set-Cookie` stores.
fn cookie_token(response: &reqwest::Response) -> String {
    let pair = cookie_pair(response);
    pair.split_once('=').map(|(_, token)| token.to_string()).expect("name=value")
}

/// The `sid` a session call answered.
async fn session_sid(response: reqwest::Response) -> Option<String> {
    let body: serde_json::Value = response.json().await.expect("json");
    body["sid"].as_str().map(str::to_string)
}

/// The `sid` a socket's `welcome` carried.
fn welcome_sid(welcome: &ServerMsg) -> String {
    match welcome {
        ServerMsg::Welcome { sid, .. } => sid.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn hello(ws: &mut Ws, token: Option<&str>) -> ServerMsg {
    ws.send(&ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.map(str::to_string),
        last_seq: 0,
        context: VisitorContext { page_url: Some(format!("{HOST_ORIGIN}/")), ..Default::default() },
        identity: None,
    })
    .await;
    ws.recv().await
}

fn welcome_parts(welcome: ServerMsg) -> (String, Vec<protocol::Event>) {
    match welcome {
        ServerMsg::Welcome { token, events, .. } => (token, events),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Every row of every table, and SQLite's `data_version` (which moves whenever another connection commits).
async fn db_state(conn: &mut SqliteConnection) -> (i64, Vec<(String, i64)>) {
    let version: i64 = sqlx::query_scalar("pragma data_version").fetch_one(&mut *conn).await.expect("data_version");
    let tables: Vec<String> = sqlx::query_scalar(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("tables");
    let mut counts = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from \"{table}\""))
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        counts.push((table, n));
    }
    (version, counts)
}

fn rows(state: &(i64, Vec<(String, i64)>), table: &str) -> i64 {
    state.1.iter().find(|(t, _)| t == table).map(|(_, n)| *n).unwrap_or_else(|| panic!("no table {table}"))
}

#[tokio::test]
async fn opening_the_chat_writes_nothing_until_the_visitor_writes() {
    let app = spawn_app().await;
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    let before = db_state(&mut db).await;

    // A brand-new visitor: the session call, then hellos with the cookie, with a stored token, and with nothing.
    let response = session_call(&app, Some(&app.origin()), None, "").await;
    assert_eq!(response.status(), 200);
    let token = cookie_token(&response);
    let cookie = cookie_pair(&response);
    let mut sockets = Vec::new();
    for (cookie, token) in [(Some(cookie.as_str()), None), (None, Some(token.as_str())), (None, None)] {
        let mut ws = app.visitor_socket_with_cookie(Some(&app.origin()), cookie).await;
        let (_, events) = welcome_parts(hello(&mut ws, token).await);
        assert!(events.is_empty());
        ws.send(&ClientMsg::Typing { typing: true }).await;
        ws.send(&ClientMsg::Read { up_to_seq: 5 }).await;
        ws.send(&ClientMsg::Ping).await;
        assert_eq!(ws.recv::<ServerMsg>().await, ServerMsg::Pong);
        sockets.push(ws);
    }
    let after = db_state(&mut db).await;
    assert_eq!(after, before, "opening the chat wrote to the database");

    // The first message creates the contact and the conversation.
    send_acked(&mut sockets[0], "c-1", "Hello").await;
    let written = db_state(&mut db).await;
    assert_eq!(rows(&written, "contacts"), rows(&before, "contacts") + 1);
    assert_eq!(rows(&written, "conversations"), rows(&before, "conversations") + 1);

    // A known visitor reopening the chat from the same page writes nothing either.
    let mut again = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let (_, events) = welcome_parts(hello(&mut again, None).await);
    assert_eq!(events.len(), 1);
    assert_eq!(db_state(&mut db).await, written);

    // Moving to another page is recorded for the agent.
    let mut moved = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    moved
        .send(&ClientMsg::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            token: None,
            last_seq: 1,
            context: VisitorContext { page_url: Some(format!("{HOST_ORIGIN}/checkout")), ..Default::default() },
            identity: None,
        })
        .await;
    welcome_parts(moved.recv().await);
    let summary = app.store.summaries().await.expect("summaries").remove(0);
    assert_eq!(summary.page_url.as_deref(), Some(&*format!("{HOST_ORIGIN}/checkout")));
}

#[tokio::test]
async fn opening_the_chat_on_a_messenger_site_writes_nothing_until_the_visitor_asks_for_the_link() {
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    let before = db_state(&mut db).await;

    // A new visitor opens the chat and idles: no contact, no link row, no write at all.
    let response = session_call(&app, Some(&app.origin()), None, "").await;
    assert_eq!(response.status(), 200);
    let cookie = cookie_pair(&response);
    let mut ws = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let (_, events) = welcome_parts(hello(&mut ws, None).await);
    assert!(events.is_empty());
    ws.send(&ClientMsg::Typing { typing: true }).await;
    ws.send(&ClientMsg::Read { up_to_seq: 5 }).await;
    ws.send(&ClientMsg::Ping).await;
    assert_eq!(ws.recv::<ServerMsg>().await, ServerMsg::Pong);
    assert_eq!(db_state(&mut db).await, before, "opening the chat on a Messenger site wrote to the database");

    // Asking for the "Continue on Messenger" link is the visitor's intent: it creates the contact and one link.
    ws.send(&ClientMsg::MessengerLink).await;
    ws.recv_until(|m: ServerMsg| matches!(m, ServerMsg::MessengerLink { .. }).then_some(())).await;
    let asked = db_state(&mut db).await;
    assert_eq!(rows(&asked, "contacts"), rows(&before, "contacts") + 1);
    assert_eq!(rows(&asked, "messenger_links"), rows(&before, "messenger_links") + 1);
    assert_eq!(rows(&asked, "conversations"), rows(&before, "conversations"));
}

#[tokio::test]
async fn the_socket_upgrade_uses_the_cookie_token_and_never_echoes_it() {
    let app = spawn_app().await;
    let response = session_call(&app, Some(&app.origin()), None, "").await;
    let token = cookie_token(&response);
    let cookie = cookie_pair(&response);

    let mut ws = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let (echoed, _) = welcome_parts(hello(&mut ws, None).await);
    assert_eq!(echoed, "", "a cookie token must not reach the frame's script");
    send_acked(&mut ws, "c-1", "Where is my parcel?").await;

    // The contact is the cookie token's.
    let site = app.store.site_by_key(SITE_KEY).await.expect("query").expect("site");
    let contact = app.store.contact_by_token(&site.id, &auth::token_hash(&token)).await.expect("query");
    assert!(contact.is_some(), "the message was not stored under the cookie's token");

    // A reload: the cookie alone brings the conversation back, even with a stale token in hello.
    let mut reload = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let (_, events) = welcome_parts(hello(&mut reload, Some(&auth::new_token())).await);
    assert!(
        matches!(&events[..], [e] if matches!(&e.kind, EventKind::Message { message } if message.body == "Where is my parcel?"))
    );

    // A host page opening the socket itself is not the chat frame: the cookie does not speak for it.
    let mut direct = app.visitor_socket_with_cookie(Some(HOST_ORIGIN), Some(&cookie)).await;
    let (fresh, events) = welcome_parts(hello(&mut direct, None).await);
    assert!(events.is_empty());
    assert_ne!(fresh, token);
    assert_eq!(fresh.len(), 43);
}

#[tokio::test]
async fn the_session_endpoint_refuses_every_origin_but_its_own() {
    let app = spawn_app().await;
    for origin in [Some("https://evil.example"), Some(HOST_ORIGIN), Some("null"), None] {
        let response = session_call(&app, origin, None, "").await;
        assert_eq!(response.status(), 403, "{origin:?}");
        assert!(response.headers().get("set-cookie").is_none(), "{origin:?}");
    }
    let response = app
        .http
        .post(app.url("/api/visitor/session?site=nope"))
        .header("origin", app.origin())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let response = session_call(&app, Some(&app.origin()), None, "{not json").await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn the_visitor_cookie_has_exactly_the_right_attributes() {
    let app = spawn_app().await;
    let response = session_call(&app, Some(&app.origin()), None, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let set = set_cookies(&response);
    let token = cookie_token(&response);
    assert_eq!(token.len(), 43);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let name = cookie_pair(&response).split_once('=').expect("pair").0.to_string();
    let suffix = name.strip_prefix(&format!("{COOKIE_NAME}.")).expect("a minted token gets a cookie of its own");
    assert!(suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    assert_eq!(
        set,
        vec![format!("{name}={token}; Max-Age=34560000; Path=/; Secure; HttpOnly; SameSite=None; Partitioned")]
    );
    let body: serde_json::Value = response.json().await.expect("json");
    let sid = body["sid"].as_str().expect("sid").to_string();
    assert_eq!(
        body,
        serde_json::json!({"minted": true, "sid": sid}),
        "the token must not be in a script-readable body"
    );

    // The cookie's token is kept (under its own name); without a cookie, a token from the frame's storage is adopted.
    let cookie = format!("{name}={token}");
    let renewed = session_call(&app, Some(&app.origin()), Some(&cookie), r#"{"token":null}"#).await;
    assert_eq!(cookie_pair(&renewed), cookie);
    assert_eq!(
        renewed.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!({"minted": false, "sid": sid})
    );
    // A cookie of the plain name (set before tokens got names of their own) is read and kept as it is.
    let legacy = format!("{COOKIE_NAME}={token}");
    assert_eq!(cookie_pair(&session_call(&app, Some(&app.origin()), Some(&legacy), "").await), legacy);
    let stored = auth::new_token();
    let adopted = session_call(&app, Some(&app.origin()), None, &format!(r#"{{"token":"{stored}"}}"#)).await;
    assert_eq!(cookie_token(&adopted), stored);

    // With storage access (Storage Access API) the cookie is unpartitioned and the frame gets the token to present.
    let access =
        session_call(&app, Some(&app.origin()), Some(&cookie), r#"{"token":null,"storage_access":true}"#).await;
    let set = set_cookies(&access);
    assert_eq!(set, vec![format!("{COOKIE_NAME}={token}; Max-Age=34560000; Path=/; Secure; HttpOnly; SameSite=None")]);
    let body: serde_json::Value = access.json().await.expect("json");
    assert_eq!(body["token"], token);
}

#[tokio::test]
async fn two_tabs_of_a_new_visitor_writing_at_once_make_one_contact_and_one_conversation() {
    let app = spawn_app().await;
    let cookie = cookie_pair(&session_call(&app, Some(&app.origin()), None, "").await);
    let mut a = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let mut b = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    welcome_parts(hello(&mut a, None).await);
    welcome_parts(hello(&mut b, None).await);

    let (seq_a, seq_b) = tokio::join!(send_acked(&mut a, "a-1", "from tab A"), send_acked(&mut b, "b-1", "from tab B"));
    let mut seqs = [seq_a, seq_b];
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2], "both messages in one conversation");
    let summaries = app.store.summaries().await.expect("summaries");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    assert_eq!(rows(&db_state(&mut db).await, "contacts"), 1);

    // Each tab sees the other tab's message live, though the contact did not exist when it said hello.
    for (ws, other) in [(&mut a, "from tab B"), (&mut b, "from tab A")] {
        ws.recv_until(|m: ServerMsg| match m {
            ServerMsg::Event { event: protocol::Event { kind: EventKind::Message { message }, .. } }
                if message.body == other =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    }
}

#[tokio::test]
async fn concurrent_first_writes_with_one_token_create_one_contact() {
    let app = spawn_app().await;
    let site = app.store.site_by_key(SITE_KEY).await.expect("query").expect("site");
    let hash = auth::token_hash(&auth::new_token());
    let ctx = parley::store::models::ContactContext::default();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = app.store.clone();
            let (site_id, hash, ctx) = (site.id.clone(), hash.clone(), ctx.clone());
            tokio::spawn(async move { store.contact_for_token(&site_id, &hash, &format!("V{i}"), &ctx).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task").expect("contact").id);
    }
    ids.dedup();
    assert_eq!(ids, vec![parley::store::web_contact_id(&site.id, &hash)]);
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    assert_eq!(rows(&db_state(&mut db).await, "contacts"), 1);

    // The same token presented to another site names nothing there.
    let other = app.store.create_site("other", "Other", &[], "").await.expect("site");
    assert!(app.store.contact_for_token(&other.id, &hash, "V", &ctx).await.is_err());
}

#[tokio::test]
async fn welcome_carries_the_session_calls_sid_and_never_the_token() {
    let app = spawn_app().await;
    let minted = session_call(&app, Some(&app.origin()), None, "").await;
    let (token, cookie) = (cookie_token(&minted), cookie_pair(&minted));
    let sid = session_sid(minted).await.expect("a sid");
    assert_eq!(sid.len(), 16);
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
    assert!(!token.contains(&sid) && !sid.contains(&token), "the sid must not reveal the token");
    assert!(!hex::encode(auth::token_hash(&token)).contains(&sid), "nor the digest contacts are stored under");

    // The socket on that cookie says the same sid, and still no token.
    let mut ws = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&cookie)).await;
    let welcome = hello(&mut ws, None).await;
    assert_eq!(welcome_sid(&welcome), sid);
    assert_eq!(welcome_parts(welcome).0, "");
    // A socket on a token from the frame's storage gets that token back, and its sid.
    let mut stored = app.visitor_socket_with_cookie(Some(&app.origin()), None).await;
    let welcome = hello(&mut stored, Some(&token)).await;
    assert_eq!(welcome_sid(&welcome), sid);
    assert_eq!(welcome_parts(welcome).0, token);
    // A socket without any token gets a new one, with its own sid.
    let mut fresh = app.visitor_socket_with_cookie(Some(&app.origin()), None).await;
    let welcome = hello(&mut fresh, None).await;
    assert_ne!(welcome_sid(&welcome), sid);
    assert_eq!(welcome_sid(&welcome).len(), 16);

    // The check reports the jar's sid and sets nothing; without a cookie it reports none and mints nothing.
    let check = session_call(&app, Some(&app.origin()), Some(&cookie), r#"{"check":true}"#).await;
    assert_eq!(check.status(), 200);
    assert!(set_cookies(&check).is_empty(), "{:?}", set_cookies(&check));
    assert_eq!(
        check.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!({"minted": false, "sid": sid})
    );
    let empty = session_call(&app, Some(&app.origin()), None, r#"{"check":true}"#).await;
    assert!(set_cookies(&empty).is_empty());
    assert_eq!(
        empty.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!({"minted": false, "sid": null})
    );
    // Like every session call, the check answers only the chat frame's own origin.
    let foreign = session_call(&app, Some(HOST_ORIGIN), Some(&cookie), r#"{"check":true}"#).await;
    assert_eq!(foreign.status(), 403);
}

/// Two brand-new tabs whose session calls both left before either answer set a cookie: both mint. The browser keeps
/// both cookies (different names) and sends them oldest first, so whichever answer lands first names the token of
/// every socket, including the socket of the tab that opened before the other answer landed.
#[tokio::test]
async fn a_second_mint_never_overwrites_the_first_and_every_socket_speaks_for_the_oldest_cookie() {
    let app = spawn_app().await;
    let origin = app.origin();
    let (a, b) = tokio::join!(session_call(&app, Some(&origin), None, ""), session_call(&app, Some(&origin), None, ""));
    let (pair_a, pair_b) = (cookie_pair(&a), cookie_pair(&b));
    let (name_a, name_b) = (pair_a.split_once('=').expect("pair").0, pair_b.split_once('=').expect("pair").0);
    assert_ne!(name_a, name_b, "the second mint must not overwrite the first cookie");
    let (sid_a, sid_b) = (session_sid(a).await.expect("sid"), session_sid(b).await.expect("sid"));
    assert_ne!(sid_a, sid_b);

    // A's answer landed first: tab A's socket opened with A's cookie alone, tab B's with both (oldest first).
    let jar = format!("{pair_a}; {pair_b}");
    let mut tab_a = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&pair_a)).await;
    let mut tab_b = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&jar)).await;
    assert_eq!(welcome_sid(&hello(&mut tab_a, None).await), sid_a);
    assert_eq!(welcome_sid(&hello(&mut tab_b, None).await), sid_a, "tab B must speak for the oldest cookie");
    let check = session_call(&app, Some(&app.origin()), Some(&jar), r#"{"check":true}"#).await;
    assert_eq!(session_sid(check).await, Some(sid_a.clone()));

    // Both write at once: one contact, one conversation.
    let (seq_a, seq_b) =
        tokio::join!(send_acked(&mut tab_a, "a-1", "first tab"), send_acked(&mut tab_b, "b-1", "second tab"));
    let mut seqs = [seq_a, seq_b];
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2], "both messages in one conversation");
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    assert_eq!(rows(&db_state(&mut db).await, "contacts"), 1);
    assert_eq!(app.store.summaries().await.expect("summaries").len(), 1);

    // The next session call keeps the oldest cookie as it is and expires the other.
    let tidy = session_call(&app, Some(&app.origin()), Some(&jar), "").await;
    let set = set_cookies(&tidy);
    assert_eq!(cookie_pair(&tidy), pair_a);
    assert!(
        set.iter()
            .any(|c| c.starts_with(&format!("{name_b}=;")) && c.contains("Max-Age=0") && c.contains("Partitioned")),
        "{set:?}"
    );
    assert_eq!(session_sid(tidy).await, Some(sid_a));
}

/// What the frame's check before its first write catches: a socket opened on another token than the oldest cookie
/// the jar holds now (e.g. opened without the cookie, after the session call timed out).
#[tokio::test]
async fn a_socket_whose_token_is_not_the_jars_is_detected_by_its_sid() {
    let app = spawn_app().await;
    let pair = cookie_pair(&session_call(&app, Some(&app.origin()), None, "").await);
    let mut stale = app.visitor_socket_with_cookie(Some(&app.origin()), None).await;
    let socket_sid = welcome_sid(&hello(&mut stale, None).await);
    let jar_sid = session_sid(session_call(&app, Some(&app.origin()), Some(&pair), r#"{"check":true}"#).await).await;
    assert_ne!(jar_sid.as_deref(), Some(&*socket_sid), "the stale socket must be told apart from the jar");
    // Reconnected with the jar's cookie, the socket's sid is the jar's.
    let mut again = app.visitor_socket_with_cookie(Some(&app.origin()), Some(&pair)).await;
    assert_eq!(Some(welcome_sid(&hello(&mut again, None).await)), jar_sid);
}
