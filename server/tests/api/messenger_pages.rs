//! Several Messenger Pages in one deployment: webhooks are routed by page id to that Page's site and workspace
//! (an unknown page id is acked and stored as a raw delivery only), each send, profile fetch and "Continue on
//! Messenger" link uses the Page of the conversation's site, Page tokens are stored only encrypted, and the server
//! refuses to start when stored tokens do not open with the configured key. A single-Page configuration still
//! works and is imported as the default workspace's Page.
//!
//! The Graph API is a recording server on a real socket (the sandbox emulates one Page only): it answers every
//! call and keeps each call's path and bearer token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use parley::config::Settings;
use parley::messenger::pages::TokenKey;
use parley::messenger::signature;
use parley::startup::Application;
use parley::store::Store;
use parley::tenancy::{PageTarget, connect_page};
use protocol::console::{ClientMsg, ServerMsg};
use secrecy::SecretString;

use crate::helpers::{HOST_ORIGIN, OTHER_SITE, SITE_KEY, TestApp, spawn_app_with};

const APP_SECRET: &str = "pages-test-app-secret-0123456789";

/// One Graph API call: path (after the version) and the bearer token it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    path: String,
    token: String,
    body: String,
}

#[derive(Clone, Default)]
struct Graph {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Tokens answered with error 190 (revoked).
    revoked: Arc<Mutex<Vec<String>>>,
}

impl Graph {
    async fn start() -> (Self, String) {
        let graph = Self::default();
        let router = axum::Router::new().fallback(record).with_state(graph.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (graph, url)
    }

    fn revoke(&self, token: &str) {
        self.revoked.lock().expect("revoked").push(token.to_string());
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// Waits (up to 10 s) for a call matching `pick`.
    async fn wait_for(&self, what: &str, pick: impl Fn(&Call) -> bool) -> Call {
        wait(what, || self.calls().into_iter().find(|c| pick(c))).await
    }
}

async fn record(State(graph): State<Graph>, request: Request) -> axum::Json<serde_json::Value> {
    let path = request.uri().path().trim_start_matches("/v25.0").to_string();
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
    let body = String::from_utf8_lossy(&body).to_string();
    let revoked = graph.revoked.lock().expect("revoked").contains(&token);
    let n = {
        let mut calls = graph.calls.lock().expect("calls");
        calls.push(Call { path: path.clone(), token, body });
        calls.len()
    };
    if revoked {
        return axum::Json(serde_json::json!({"error": {"message": "Invalid OAuth access token", "code": 190}}));
    }
    axum::Json(if path.ends_with("/messages") {
        serde_json::json!({ "recipient_id": "x", "message_id": format!("m_sent_{n}") })
    } else {
        serde_json::json!({ "first_name": "Sam" })
    })
}

/// Polls `probe` every 20 ms until it yields, for at most 10 s.
async fn wait<T, F: Fn() -> Option<T>>(what: &str, probe: F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn messenger_settings(s: &mut Settings, graph_url: &str, spool: &std::path::Path, key: Option<&str>) {
    let m = &mut s.messenger;
    m.enabled = true;
    m.app_id = "4242".into();
    m.app_secret = APP_SECRET.to_string().into();
    m.verify_token = "pages-verify".to_string().into();
    m.graph_url = graph_url.into();
    m.spool_dir = spool.to_path_buf();
    m.reorder_window_ms = 0;
    m.timeout_secs = 2;
    m.token_key = key.unwrap_or_default().to_string().into();
}

/// A customer's message to a Page, signed as Meta signs it.
async fn deliver(app: &TestApp, page_id: &str, psid: &str, mid: &str, text: &str) {
    let now = app.clock.now_ms();
    let body = serde_json::json!({"object": "page", "entry": [{"id": page_id, "time": now, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": now,
        "message": {"mid": mid, "text": text}
    }]}]})
    .to_string();
    let response = app
        .http
        .post(app.url("/webhooks/messenger"))
        .header("x-hub-signature-256", signature::sign_sha256(APP_SECRET.as_bytes(), body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "acked");
}

async fn conversation_of(app: &TestApp, psid: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(contact) = app.store.contact_by_psid(psid).await.expect("contact")
            && let Some(conversation) = app.store.conversation_for_contact(&contact.id).await.expect("conversation")
        {
            return conversation.id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no conversation for {psid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reply(app: &TestApp, cookie: &str, conversation_id: &str, body: &str) {
    let mut ws = app.agent_socket(Some(&app.origin()), Some(cookie)).await.expect("agent connects");
    let id = body.replace(' ', "-");
    ws.send(&ClientMsg::Send { conversation_id: conversation_id.into(), client_id: id.clone(), body: body.into() })
        .await;
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Ack { client_id, .. } if client_id == id => Some(()),
        ServerMsg::Error { message, client_id: Some(c), .. } if c == id => panic!("reply refused: {message}"),
        _ => None,
    })
    .await;
}

const ONE: &str = "111000111";
const TWO: &str = "222000222";

/// The test app with Messenger on against a recording Graph server, a second workspace (`acme`), Page [`ONE`]
/// (token `token-one`) connected to the default workspace's site and Page [`TWO`] (`token-two`, username
/// `acmeshop`) to Acme's: (app, graph, acme's id, a session cookie of acme's agent, spool dir).
async fn two_pages() -> (TestApp, Graph, String, String, tempfile::TempDir) {
    let (graph, graph_url) = Graph::start().await;
    let spool = tempfile::tempdir().expect("spool");
    let key_text = TokenKey::generate();
    let app = spawn_app_with(|s| messenger_settings(s, &graph_url, spool.path(), Some(&key_text))).await;
    let key = TokenKey::from_base64(&key_text).expect("key");
    let (acme, cookie_b) = app.second_workspace().await;
    let secret = |t: &str| SecretString::from(t.to_string());
    connect_page(&app.store, &key, &PageTarget::Site(SITE_KEY.into()), ONE, &secret("token-one"), None)
        .await
        .expect("page one");
    connect_page(&app.store, &key, &PageTarget::Site(OTHER_SITE.into()), TWO, &secret("token-two"), Some("acmeshop"))
        .await
        .expect("page two");
    (app, graph, acme, cookie_b, spool)
}

#[tokio::test]
async fn webhooks_sends_and_links_go_through_the_page_of_each_site() {
    let (app, graph, acme, cookie_b, _spool) = two_pages().await;
    let (one, two) = (ONE, TWO);
    // Stored only encrypted.
    let mut raw = app.raw_db().await;
    let sealed: Vec<Vec<u8>> =
        sqlx::query_scalar("select token_ciphertext from messenger_pages").fetch_all(&mut raw).await.expect("rows");
    assert_eq!(sealed.len(), 2);
    assert!(sealed.iter().all(|c| !String::from_utf8_lossy(c).contains("token-")), "no clear token in the database");

    // Routed by page id: each customer lands in the workspace of the Page they wrote to.
    deliver(&app, two, "psid-b", "mid-b1", "hi from two").await;
    deliver(&app, one, "psid-a", "mid-a1", "hi from one").await;
    let conv_b = conversation_of(&app, "psid-b").await;
    let conv_a = conversation_of(&app, "psid-a").await;
    assert_eq!(app.store.conversation_workspace(&conv_b).await.expect("w").as_deref(), Some(acme.as_str()));
    assert_eq!(app.store.conversation_workspace(&conv_a).await.expect("w").as_deref(), Some("default"));
    let site_of = |conv: String| {
        let store = app.store.clone();
        async move { store.summary(&conv).await.expect("summary").expect("exists").site_key }
    };
    assert_eq!(site_of(conv_b.clone()).await, OTHER_SITE);
    assert_eq!(site_of(conv_a.clone()).await, SITE_KEY);
    // Each Page's customer profile was fetched with that Page's token.
    graph.wait_for("profile b", |c| c.path == "/psid-b" && c.token == "token-two").await;
    graph.wait_for("profile a", |c| c.path == "/psid-a" && c.token == "token-one").await;

    // An unknown page id: acked and kept as a raw delivery, but nothing becomes a conversation.
    let deliveries_before = app.count_rows("webhook_deliveries").await;
    deliver(&app, "999000999", "psid-x", "mid-x1", "who am I").await;
    deliver(&app, one, "psid-a", "mid-a2", "barrier").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.store.message_by_external_id("mid-a2").await.expect("mid").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the barrier message was not stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.count_rows("webhook_deliveries").await, deliveries_before + 2, "both deliveries kept raw");
    assert!(app.store.contact_by_psid("psid-x").await.expect("contact").is_none(), "no contact for an unknown Page");
    assert!(app.store.message_by_external_id("mid-x1").await.expect("mid").is_none());

    // Each workspace's agent replies; each send goes out as the Page of that conversation's site.
    let cookie_a = app.agent_cookie().await;
    reply(&app, &cookie_b, &conv_b, "reply from acme").await;
    reply(&app, &cookie_a, &conv_a, "reply from default").await;
    let sent_b = graph.wait_for("send b", |c| c.body.contains("reply from acme")).await;
    let sent_a = graph.wait_for("send a", |c| c.body.contains("reply from default")).await;
    assert_eq!((sent_b.path.as_str(), sent_b.token.as_str()), ("/222000222/messages", "token-two"));
    assert_eq!((sent_a.path.as_str(), sent_a.token.as_str()), ("/111000111/messages", "token-one"));

    // "Continue on Messenger" uses the visitor's site's Page.
    let messenger = app.state.messenger.clone().expect("messenger on");
    let (mut visitor, _) = app.visitor_on(OTHER_SITE, None).await;
    crate::helpers::send_acked(&mut visitor, "w1", "from the web").await;
    let web_contact = app
        .store
        .summaries()
        .await
        .expect("inbox")
        .into_iter()
        .find(|s| s.site_key == OTHER_SITE && s.psid.is_none())
        .expect("web conversation")
        .contact_id;
    let link = messenger.offer_link(&web_contact).await.expect("link");
    assert!(link.url.contains("/acmeshop?ref="), "{}", link.url);
    let contact_one = app.store.contact_by_psid("psid-a").await.expect("a").expect("a").id;
    assert!(messenger.offer_link(&contact_one).await.expect("link").url.contains("/111000111?ref="));

    // A site without a Page (its workspace has none for all its sites) is not offered Messenger at all.
    app.store.create_site_in(&acme, "acme-blog", "Blog", &[HOST_ORIGIN.into()], "").await.expect("site");
    let boot = |site: &'static str| {
        let app = &app;
        async move { app.http.get(app.url(&format!("/frame/{site}"))).send().await.expect("frame").text().await }
    };
    assert!(boot("acme-blog").await.expect("body").contains(r#""messenger":false"#));
    assert!(boot(OTHER_SITE).await.expect("body").contains(r#""messenger":true"#));
    let (mut blog_visitor, _) = app.visitor_on("acme-blog", None).await;
    blog_visitor.send(&protocol::widget::ClientMsg::MessengerLink).await;
    let (code, message) = blog_visitor
        .recv_until(|m: protocol::widget::ServerMsg| match m {
            protocol::widget::ServerMsg::Error { code, message, .. } => Some((code, message)),
            _ => None,
        })
        .await;
    assert_eq!((code, message.as_str()), (protocol::ErrorCode::InvalidInput, "Messenger is not available"));
    assert_eq!(app.count_rows("messenger_links").await, 2, "no link minted for a site without a Page");
}

/// Meta refuses one Page's token: only that workspace's agents are alerted, and the other Page's sends go on.
#[tokio::test]
async fn a_revoked_page_token_alerts_only_its_workspace_and_holds_up_no_other_page() {
    let (app, graph, _acme, cookie_b, _spool) = two_pages().await;
    graph.revoke("token-two");
    deliver(&app, TWO, "psid-b", "mid-b1", "hi from two").await;
    deliver(&app, ONE, "psid-a", "mid-a1", "hi from one").await;
    let conv_b = conversation_of(&app, "psid-b").await;
    let conv_a = conversation_of(&app, "psid-a").await;
    let cookie_a = app.agent_cookie().await;
    let connect = |cookie: String| {
        let app = &app;
        async move {
            let mut ws = app.agent_socket(Some(&app.origin()), Some(&cookie)).await.expect("agent connects");
            ws.recv_until(|m: ServerMsg| matches!(m, ServerMsg::Inbox { .. }).then_some(())).await;
            ws
        }
    };
    let mut agent_a = connect(cookie_a.clone()).await;
    let mut agent_b = connect(cookie_b.clone()).await;

    reply(&app, &cookie_b, &conv_b, "blocked reply").await;
    let alert = agent_b
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Alert { key, message: Some(message) } if key == "messenger_token" => Some(message),
            _ => None,
        })
        .await;
    assert!(alert.contains("token"), "{alert}");
    // The alert is out; then workspace 1's agent replies: its send goes out at once, and its socket, which got
    // the alert's moment before its own inbox change, never shows the alert.
    reply(&app, &cookie_a, &conv_a, "free reply").await;
    let sent = graph.wait_for("the other Page's send", |c| c.body.contains("free reply")).await;
    assert_eq!(sent.token, "token-one");
    agent_a
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Alert { key, .. } => panic!("another workspace's alert reached this agent: {key}"),
            ServerMsg::Summary { conversation } if conversation.id == conv_a => {
                (conversation.last_message.as_deref() == Some("free reply")).then_some(())
            }
            _ => None,
        })
        .await;
}

/// Pages stored under one key; the server started with no key or another key refuses to start and says why.
#[tokio::test]
async fn the_server_refuses_to_start_when_stored_page_tokens_do_not_open() {
    let (_graph, graph_url) = Graph::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("parley.db").display());
    let store = Store::connect(&url, 2).await.expect("store");
    store.create_site(SITE_KEY, "Shop", &[HOST_ORIGIN.into()], "").await.expect("site");
    let key = TokenKey::from_base64(&TokenKey::generate()).expect("key");
    connect_page(&store, &key, &PageTarget::Workspace(None), "333", &SecretString::from("t".to_string()), None)
        .await
        .expect("page");
    store.close().await;

    let start = |key: Option<String>| {
        let url = url.clone();
        let graph_url = graph_url.clone();
        let spool = dir.path().join("spool");
        async move {
            let mut settings = Settings::default();
            settings.database.url = url.clone();
            settings.assets.dir = spool.join("site");
            messenger_settings(&mut settings, &graph_url, &spool, key.as_deref());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let store = Store::connect(&url, 2).await.expect("store");
            let app = Application::with_store(settings, listener, store).expect("builds");
            tokio::time::timeout(Duration::from_secs(10), app.run_until_stopped(std::future::pending()))
                .await
                .expect("refused at once")
        }
    };
    let missing = start(None).await.expect_err("no key");
    assert!(format!("{missing:#}").contains("messenger.token_key"), "{missing:#}");
    let wrong = start(Some(TokenKey::generate())).await.expect_err("another key");
    let wrong = format!("{wrong:#}");
    assert!(wrong.contains("333") && wrong.contains("messenger.token_key"), "{wrong}");
    assert!(!wrong.contains("\"t\""));
}

/// The single-Page configuration of an existing installation keeps working; with a token key it becomes the
/// default workspace's Page, stored encrypted.
#[tokio::test]
async fn a_configured_single_page_becomes_the_default_workspaces_page() {
    let (graph, graph_url) = Graph::start().await;
    let spool = tempfile::tempdir().expect("spool");
    let key_text = TokenKey::generate();
    let app = spawn_app_with(|s| {
        messenger_settings(s, &graph_url, spool.path(), Some(&key_text));
        s.messenger.page_id = "444000444".into();
        s.messenger.page_token = "configured-token".to_string().into();
    })
    .await;
    // Served only after the startup import.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.expect("health").status(), 200);
    let pages = app.store.pages().await.expect("pages");
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!((pages[0].page_id.as_str(), pages[0].workspace_id.as_str()), ("444000444", "default"));
    assert_eq!(pages[0].site_id, None, "serves every site of the default workspace");
    assert!(!String::from_utf8_lossy(&pages[0].token_ciphertext).contains("configured-token"));
    let key = TokenKey::from_base64(&key_text).expect("key");
    let opened = key.open("444000444", &pages[0].token_nonce, &pages[0].token_ciphertext).expect("opens");
    assert_eq!(secrecy::ExposeSecret::expose_secret(&opened), "configured-token");

    deliver(&app, "444000444", "psid-c", "mid-c1", "hello").await;
    let conv = conversation_of(&app, "psid-c").await;
    assert_eq!(app.store.summary(&conv).await.expect("summary").expect("exists").site_key, SITE_KEY);
    let cookie = app.agent_cookie().await;
    reply(&app, &cookie, &conv, "configured reply").await;
    let sent = graph.wait_for("send", |c| c.body.contains("configured reply")).await;
    assert_eq!((sent.path.as_str(), sent.token.as_str()), ("/444000444/messages", "configured-token"));
}
