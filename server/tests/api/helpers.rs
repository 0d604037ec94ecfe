//! `spawn_app()` and typed clients for the tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley::config::Settings;
use parley::startup::Application;
use parley::store::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The origin the test site allows.
pub const HOST_ORIGIN: &str = "http://shop.test:8080";
pub const SITE_KEY: &str = "test-site";
/// The site of [`TestApp::second_workspace`].
pub const OTHER_SITE: &str = "acme-site";
pub const AGENT_NAME: &str = "Alex";
pub const AGENT_EMAIL: &str = "alex@example.com";
pub const AGENT_PASSWORD: &str = "correct horse battery";

/// The `parley_session=…` pair a response sets, if any.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("parley_session=") && pair.len() > "parley_session=".len())
        .map(str::to_string)
}

/// SQLite's write lock, held by [`TestApp::hold_write_lock`].
pub struct WriteLock {
    conn: sqlx::SqliteConnection,
}

impl WriteLock {
    pub async fn release(mut self) {
        sqlx::query("commit").execute(&mut self.conn).await.expect("write lock released");
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub store: Store,
    /// The app's clock: tests move it forward (e.g. past Messenger's 24 h window) with `clock.advance`.
    pub clock: parley::clock::Clock,
    /// The database, for counting rows behind the store's back.
    pub db_url: String,
    pub agent_id: String,
    pub http: reqwest::Client,
    /// The app's supervised workers and their health.
    pub workers: std::sync::Arc<parley::supervisor::Workers>,
    /// The app's stop signal (for workers a test adds).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The running app's shared state (e.g. to reach the Messenger channel directly).
    pub state: parley::state::AppState,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Boots the app on port 0 with a fresh database holding one site and one agent.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(&dir);
    configure(&mut settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start(settings, listener, dir).await
}

fn test_settings(dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}", dir.path().join("parley.db").display());
    settings.assets.dir = dir.path().join("site");
    settings
}

/// Seeds the database and runs the app on `listener` until the returned `TestApp` is dropped.
async fn start(settings: Settings, listener: tokio::net::TcpListener, dir: tempfile::TempDir) -> TestApp {
    let clock = parley::clock::Clock::adjustable();
    let store = Store::connect_with_clock(&settings.database.url, 4, clock.clone()).await.expect("store opens");
    store.create_site(SITE_KEY, "Test Shop", &[HOST_ORIGIN.to_string()], "Hello there").await.expect("site");
    let agent = parley::cli::create_agent(&store, AGENT_EMAIL, AGENT_NAME, AGENT_PASSWORD).await.expect("agent");
    run(settings, listener, store, clock, agent.id, dir)
}

/// Boots the app on port 0 on an existing database that already holds the test site and agent (e.g. one that
/// `parley db copy` filled), of either engine.
pub async fn spawn_app_on_database(url: &str) -> TestApp {
    spawn_app_on_database_with(url, |_| {}).await
}

/// Like [`spawn_app_on_database`], with settings changed by `configure` (e.g. several nodes on one PostgreSQL).
pub async fn spawn_app_on_database_with(url: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(&dir);
    settings.database.url = url.to_string();
    configure(&mut settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let clock = parley::clock::Clock::adjustable();
    let store = Store::connect_with_clock(url, 4, clock.clone()).await.expect("store opens");
    let agent = store.agent_by_email(AGENT_EMAIL).await.expect("agent").expect("the test agent exists");
    run(settings, listener, store, clock, agent.id, dir)
}

/// Runs the app on `listener` until the returned `TestApp` is dropped.
fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    store: Store,
    clock: parley::clock::Clock,
    agent_id: String,
    dir: tempfile::TempDir,
) -> TestApp {
    let addr = listener.local_addr().expect("addr");
    let database_url = settings.database.url.clone();
    let app = Application::with_store(settings, listener, store.clone()).expect("app builds");
    let workers = app.state().workers.clone();
    let stop = app.state().shutdown.clone();
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        store,
        clock,
        db_url: database_url,
        agent_id,
        http: reqwest::Client::new(),
        workers,
        state,
        stop,
        _dir: dir,
        _shutdown: tx,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Opens the visitor socket with the given `Origin` (None sends none).
    pub async fn visitor_socket(&self, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://{}/ws/visitor?site={SITE_KEY}", self.addr);
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("header"));
        }
        request
            .headers_mut()
            .insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0"));
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws { inner: stream })
    }

    /// Rows in `table` now.
    pub async fn count_rows(&self, table: &str) -> i64 {
        self.query_i64(&format!("select count(*) from {table}")).await
    }

    /// A connection of its own to the app's database file, behind the store's back (to look, or to inject faults).
    pub async fn raw_db(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&self.db_url).await.expect("database opens")
    }

    /// Runs raw SQL on the database file (e.g. a trigger that makes an insert fail).
    pub async fn execute_raw(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&mut self.raw_db().await).await.expect("raw SQL runs");
    }

    /// The one integer a query returns.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&mut self.raw_db().await).await.expect("query runs")
    }

    /// Every queued send as (body, status, external id), oldest first.
    pub async fn outbox_statuses(&self) -> Vec<(String, String, Option<String>)> {
        sqlx::query_as("select body, status, external_id from outbox order by id")
            .fetch_all(&mut self.raw_db().await)
            .await
            .expect("query runs")
    }

    /// Takes SQLite's write lock on a connection of its own and holds it until [`WriteLock::release`]: what the
    /// server does while another writer holds the database.
    pub async fn hold_write_lock(&self) -> WriteLock {
        let mut conn = self.raw_db().await;
        sqlx::query("begin immediate").execute(&mut conn).await.expect("write lock taken");
        WriteLock { conn }
    }

    /// A visitor socket from the chat frame's origin with extra request headers (e.g. `X-Forwarded-For`).
    pub async fn visitor_socket_with(&self, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://{}/ws/visitor?site={SITE_KEY}", self.addr);
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("origin", HeaderValue::from_str(&self.origin()).expect("header"));
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request.headers_mut().append(name, HeaderValue::from_str(value).expect("header"));
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws { inner: stream })
    }

    /// A second workspace, `acme`, with its own site ([`OTHER_SITE`], allowing [`HOST_ORIGIN`]) and agent:
    /// (workspace id, a session cookie of its agent).
    pub async fn second_workspace(&self) -> (String, String) {
        let acme = self.store.create_workspace("acme", "Acme").await.expect("workspace");
        self.store.create_site_in(&acme.id, OTHER_SITE, "Acme", &[HOST_ORIGIN.into()], "Hi").await.expect("site");
        let agent = parley::cli::create_agent_in(&self.store, &acme.id, "bea@acme.example", "Bea", AGENT_PASSWORD)
            .await
            .expect("agent");
        let token = parley::auth::new_token();
        self.store
            .create_session(&parley::auth::token_hash(&token), &agent.id, self.clock.now_ms() + 3_600_000)
            .await
            .expect("session");
        (acme.id, format!("parley_session={token}"))
    }

    /// A visitor socket of another site (`?site=KEY`) from the chat frame's origin that has said hello.
    pub async fn visitor_on(&self, site_key: &str, token: Option<&str>) -> (Ws, protocol::widget::ServerMsg) {
        let url = format!("ws://{}/ws/visitor?site={site_key}", self.addr);
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("origin", HeaderValue::from_str(&self.origin()).expect("header"));
        let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("visitor connects");
        let mut ws = Ws { inner: stream };
        let welcome = hello(&mut ws, token, 0).await;
        (ws, welcome)
    }

    /// Opens the visitor socket with the given `Origin` and `Cookie` headers (None sends none).
    pub async fn visitor_socket_with_cookie(&self, origin: Option<&str>, cookie: Option<&str>) -> Ws {
        let url = format!("ws://{}/ws/visitor?site={SITE_KEY}", self.addr);
        let mut request = url.into_client_request().expect("request");
        for (name, value) in [("origin", origin), ("cookie", cookie)] {
            if let Some(value) = value {
                request.headers_mut().insert(name, HeaderValue::from_str(value).expect("header"));
            }
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("visitor connects");
        Ws { inner: stream }
    }

    /// A visitor socket from the chat frame (this server's own origin) that has said hello.
    pub async fn visitor(&self, token: Option<&str>, last_seq: u64) -> (Ws, protocol::widget::ServerMsg) {
        let mut ws = self.visitor_socket(Some(&self.origin())).await.expect("visitor connects");
        let welcome = hello(&mut ws, token, last_seq).await;
        (ws, welcome)
    }

    /// A console request as a browser on `from` (a loopback address such as 127.0.0.2) would send it: POST, form
    /// encoded, with the given extra headers (e.g. `Origin`), redirects not followed.
    pub async fn console_post(
        &self,
        from: std::net::IpAddr,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .local_address(from)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut request = client.post(self.url(path)).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request")
    }

    /// Signs in through the real login endpoint from `from` (same origin); the response.
    pub async fn sign_in(&self, from: std::net::IpAddr, password: &str) -> reqwest::Response {
        let origin = self.origin();
        self.console_post(
            from,
            "/api/console/login",
            &[("email", AGENT_EMAIL), ("password", password)],
            &[("origin", &origin)],
        )
        .await
    }

    /// A session cookie for the test agent, valid for 30 days of the app's clock (tests move it by days).
    pub async fn agent_cookie(&self) -> String {
        let token = parley::auth::new_token();
        self.store
            .create_session(
                &parley::auth::token_hash(&token),
                &self.agent_id,
                self.clock.now_ms() + 30 * 24 * 3_600_000,
            )
            .await
            .expect("session");
        format!("parley_session={token}")
    }

    pub async fn agent_socket(&self, origin: Option<&str>, cookie: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let mut request = format!("ws://{}/ws/agent", self.addr).into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("header"));
        }
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).expect("header"));
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws { inner: stream })
    }

    /// A signed-in agent socket past its `inbox` frame.
    pub async fn agent(&self) -> (Ws, protocol::console::ServerMsg) {
        let cookie = self.agent_cookie().await;
        let mut ws = self.agent_socket(Some(&self.origin()), Some(&cookie)).await.expect("agent connects");
        let inbox = ws.recv().await;
        (ws, inbox)
    }
}

/// Says hello on a fresh visitor socket and returns the answer (a welcome, or an error when refused).
pub async fn hello(ws: &mut Ws, token: Option<&str>, last_seq: u64) -> protocol::widget::ServerMsg {
    ws.send(&protocol::widget::ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.map(str::to_string),
        last_seq,
        context: protocol::widget::VisitorContext {
            page_url: Some(format!("{HOST_ORIGIN}/pricing")),
            referrer: Some("https://search.example/".into()),
            timezone: Some("Europe/Berlin".into()),
            utc_offset_minutes: Some(60),
            language: Some("de-DE".into()),
        },
        identity: None,
    })
    .await;
    ws.recv().await
}

/// Sends a message and waits for its ack (panics when it is refused); returns its seq.
pub async fn send_acked(ws: &mut Ws, client_id: &str, body: &str) -> u64 {
    ws.send(&protocol::widget::ClientMsg::Send { client_id: client_id.into(), body: body.into() }).await;
    ws.recv_until(|m: protocol::widget::ServerMsg| match m {
        protocol::widget::ServerMsg::Ack { client_id: c, seq, .. } if c == client_id => Some(seq),
        protocol::widget::ServerMsg::Error { message, client_id: Some(c), .. } if c == client_id => {
            panic!("refused: {message}")
        }
        _ => None,
    })
    .await
}

/// The HTTP status of a refused WebSocket upgrade.
pub fn refused_status(err: tungstenite::Error) -> u16 {
    match err {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    pub async fn send<T: Serialize>(&mut self, msg: &T) {
        let text = serde_json::to_string(msg).expect("serializes");
        self.inner.send(Message::Text(text.into())).await.expect("send");
    }

    /// Sends any WebSocket message (binary, oversized, ...).
    pub async fn send_message(&mut self, msg: Message) {
        self.inner.send(msg).await.expect("send");
    }

    /// The underlying stream, e.g. to split it into a reader and a writer.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.inner
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.inner.send(Message::Text(text.to_string().into())).await.expect("send");
    }

    /// The next JSON frame (control frames skipped); panics after 10 s.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("unexpected frame {text}: {e}"));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("socket ended or sent a non-text frame: {other:?}"),
                }
            }
        })
        .await
        .expect("a frame within 10 s")
    }

    /// Skips frames until one matches; panics after 10 s.
    pub async fn recv_until<T: DeserializeOwned, R>(&mut self, mut pick: impl FnMut(T) -> Option<R>) -> R {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(found) = pick(self.recv().await) {
                    return found;
                }
            }
        })
        .await
        .expect("the expected frame within 10 s")
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .expect("closed within 10 s")
    }

    /// Sends a FIN, as a peer that went away does, but keeps reading: the frames the server still sends until it
    /// ends the connection (panics unless it does within `within`).
    pub async fn half_close(&mut self, within: Duration) -> Vec<Message> {
        use tokio::io::AsyncWriteExt;
        if let MaybeTlsStream::Plain(tcp) = self.inner.get_mut() {
            tcp.shutdown().await.expect("shutdown");
        }
        let mut seen = Vec::new();
        tokio::time::timeout(within, async {
            while let Some(Ok(msg)) = self.inner.next().await {
                seen.push(msg);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {within:?} after the peer left"));
        seen
    }

    /// Drops the connection without a close handshake (like a network cut).
    pub fn cut(self) {
        drop(self.inner);
    }
}

/// A Parley server with the Messenger channel on, wired to a fresh sandbox (both on port 0).
pub struct MessengerApp {
    pub app: TestApp,
    pub sandbox: messenger_sandbox::Sandbox,
}

pub async fn spawn_messenger_app(
    configure: impl FnOnce(&mut messenger_sandbox::SandboxConfig, &mut Settings),
) -> MessengerApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");

    let mut sandbox_config = messenger_sandbox::SandboxConfig {
        callback_url: Some(format!("http://{addr}/webhooks/messenger")),
        ..Default::default()
    };
    let m = &mut settings.messenger;
    m.enabled = true;
    m.app_id = sandbox_config.app_id.clone();
    m.page_id = sandbox_config.page_id.clone();
    m.page_username = sandbox_config.page_username.clone();
    m.page_token = sandbox_config.page_token.clone().into();
    m.app_secret = sandbox_config.app_secret.clone().into();
    m.verify_token = sandbox_config.verify_token.clone().into();
    m.spool_dir = dir.path().join("spool");
    m.site_key = SITE_KEY.into();
    m.timeout_secs = 2;
    configure(&mut sandbox_config, &mut settings);
    let sandbox = messenger_sandbox::launch(sandbox_config, sandbox_listener).await.expect("sandbox starts");
    settings.messenger.graph_url = sandbox.base_url().to_string();
    settings.messenger.m_me_url = sandbox.m_me_base();
    // The sandbox's media and pictures, on exactly its host and port (loopback needs an explicit entry).
    settings.messenger.attachment_hosts.push(sandbox.base_url().to_string());
    MessengerApp { app: start(settings, listener, dir).await, sandbox }
}
