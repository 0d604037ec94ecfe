//! `parley serve` as a real process with the Messenger channel on (ids passed as numeric environment variables),
//! stopped in the middle of a Send API call. SIGTERM: new connections are refused at once, the open socket is told
//! to reconnect (1001), the call in flight finishes and is recorded, and the process exits 0 within
//! `http.shutdown_grace_secs`. SIGKILL: after the restart the send is not repeated blindly; its echo settles it.
//! What the sandbox received is counted: 0 lost, 0 doubled.

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use messenger_sandbox::{FaultRule, NewUser, RetryPolicy, Sandbox, SandboxConfig, SendFault};
use nix::sys::signal::Signal;
use parley::store::Store;
use process::ParleyProcess;
use protocol::widget::{ClientMsg, ServerMsg, VisitorContext};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);
const RECAP: &str = "Here's where we left off";

struct Env {
    _dir: tempfile::TempDir,
    db: String,
    sandbox: Sandbox,
    vars: Vec<(String, String)>,
    process: ParleyProcess,
}

async fn setup(grace_secs: u64, reconcile_secs: u64) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    // The sandbox needs the server's callback URL before the server starts.
    let port = process::free_port();
    let config = SandboxConfig {
        callback_url: Some(format!("http://127.0.0.1:{port}/webhooks/messenger")),
        verify_on_launch: false,
        // While the server is down, webhooks (our echoes) are retried every 200 ms.
        retry: RetryPolicy { immediate_retries: 1, backoff: vec![Duration::from_millis(200)], ..Default::default() },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let vars: Vec<(String, String)> = [
        ("PARLEY_HTTP__SHUTDOWN_GRACE_SECS", grace_secs.to_string()),
        ("PARLEY_DATABASE__URL", format!("sqlite://{}", dir.path().join("parley.db").display())),
        ("PARLEY_ASSETS__DIR", dir.path().join("site").display().to_string()),
        ("PARLEY_MESSENGER__ENABLED", "true".into()),
        // Numeric, as Meta's ids are: they must arrive as strings.
        ("PARLEY_MESSENGER__APP_ID", config.app_id.clone()),
        ("PARLEY_MESSENGER__PAGE_ID", config.page_id.clone()),
        ("PARLEY_MESSENGER__PAGE_USERNAME", config.page_username.clone()),
        ("PARLEY_MESSENGER__PAGE_TOKEN", config.page_token.clone()),
        ("PARLEY_MESSENGER__APP_SECRET", config.app_secret.clone()),
        ("PARLEY_MESSENGER__VERIFY_TOKEN", config.verify_token.clone()),
        ("PARLEY_MESSENGER__SITE_KEY", "shop".into()),
        ("PARLEY_MESSENGER__SPOOL_DIR", dir.path().join("spool").display().to_string()),
        ("PARLEY_MESSENGER__TIMEOUT_SECS", "5".into()),
        ("PARLEY_MESSENGER__RECONCILE_SECS", reconcile_secs.to_string()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sandbox = messenger_sandbox::launch(config, listener).await.expect("sandbox");
    let mut vars = vars;
    vars.push(("PARLEY_MESSENGER__GRAPH_URL".into(), sandbox.base_url().to_string()));
    vars.push(("PARLEY_MESSENGER__M_ME_URL".into(), sandbox.m_me_base()));
    let db = format!("sqlite://{}", dir.path().join("parley.db").display());
    let store = Store::connect(&db, 1).await.expect("store");
    store.create_site("shop", "Shop", &["http://shop.test".to_string()], "Hi").await.expect("site");
    store.close().await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let process =
        ParleyProcess::new("serve", addr, env!("CARGO_BIN_EXE_parley"), &["serve".into()], vars.clone(), dir.path());
    Env { _dir: dir, db, sandbox, vars, process }
}

impl Env {
    /// A visitor who wrote and asked for a Messenger link; returns the socket and the ref.
    async fn visitor_with_link(&self) -> (Ws, String) {
        let mut ws = Ws(process::visitor_socket(self.process.port(), "shop").await);
        ws.send(&ClientMsg::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            token: None,
            last_seq: 0,
            context: VisitorContext::default(),
            identity: None,
        })
        .await;
        ws.send(&ClientMsg::Send { client_id: "c-1".into(), body: "Where is my parcel?".into() }).await;
        ws.recv_until(|m| matches!(m, ServerMsg::Ack { .. }).then_some(())).await;
        ws.send(&ClientMsg::MessengerLink).await;
        let url = ws
            .recv_until(|m| match m {
                ServerMsg::MessengerLink { url, .. } => Some(url),
                _ => None,
            })
            .await;
        (ws, url.split("ref=").nth(1).expect("a ref").to_string())
    }

    /// Links a new Messenger customer, whose recap send then hangs for `hang_ms` at the sandbox; returns once that
    /// call is in flight.
    async fn recap_in_flight(&self, reference: &str, hang_ms: u64) {
        let psid = self.sandbox.create_user(NewUser::default()).expect("user").psid;
        self.sandbox.user_taps_get_started(&psid, Some(reference)).expect("get started");
        // The Page asks before linking; the recap is queued once the customer says yes.
        let yes = self
            .sandbox
            .wait_until(WAIT, |s| {
                s.sent_messages().into_iter().filter(|m| m.psid == psid).find_map(|m| {
                    m.message.quick_replies.iter().find_map(|q| {
                        (q["title"] == "Yes, continue here")
                            .then(|| q["payload"].as_str().unwrap_or_default().to_string())
                    })
                })
            })
            .await
            .expect("the Page asks before linking");
        self.sandbox.push_send_fault(FaultRule::once(SendFault::Hang { ms: hang_ms }));
        self.sandbox.user_taps_quick_reply(&psid, "Yes, continue here", &yes).expect("tap yes");
        self.sandbox.wait_until(WAIT, |s| s.faults().send.is_empty().then_some(())).await.expect("the recap call");
    }

    fn recaps(&self) -> Vec<String> {
        self.sandbox
            .sent_messages()
            .into_iter()
            .filter(|m| m.message.text.as_deref().is_some_and(|t| t.starts_with(RECAP)))
            .map(|m| m.message.mid)
            .collect()
    }

    /// The recap's outbox row as (status, external id).
    async fn recap_row(&self) -> Option<(String, Option<String>)> {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&self.db).await.expect("database opens");
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("select body, status, external_id from outbox order by id")
                .fetch_all(&mut db)
                .await
                .expect("query");
        rows.into_iter().find(|(body, _, _)| body.starts_with(RECAP)).map(|(_, status, id)| (status, id))
    }
}

struct Ws(process::Socket);

impl Ws {
    async fn send(&mut self, msg: &ClientMsg) {
        let text = serde_json::to_string(msg).expect("serializes");
        self.0.send(Message::Text(text.into())).await.expect("send");
    }

    async fn recv_until<R>(&mut self, mut pick: impl FnMut(ServerMsg) -> Option<R>) -> R {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.0.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(found) = serde_json::from_str(text.as_str()).ok().and_then(&mut pick) {
                            return found;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended: {other:?}"),
                }
            }
        })
        .await
        .expect("the expected frame")
    }

    /// The close code the server sends.
    async fn close_code(&mut self) -> Option<u16> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.0.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        .expect("closed")
    }
}

#[tokio::test]
async fn sigterm_refuses_new_connections_tells_sockets_to_reconnect_and_finishes_the_send_in_flight() {
    let mut env = setup(10, 30).await;
    env.process.start().await;
    let (mut visitor, reference) = env.visitor_with_link().await;
    env.recap_in_flight(&reference, 3000).await;

    let stopped_at = Instant::now();
    env.process.signal(Signal::SIGTERM);
    assert_eq!(visitor.close_code().await, Some(1001), "the socket is told to reconnect");
    // The listener is closed at once, while the send is still in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", env.process.port())).is_ok() {
        assert!(Instant::now() < deadline, "new connections are still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.process.is_running(), "refused only because parley had already exited");

    let status = env.process.wait_exit(Duration::from_secs(12)).await;
    let took = stopped_at.elapsed();
    assert!(status.success(), "{status}:\n{}", env.process.log());
    assert!(took < Duration::from_secs(10), "took {took:?}, over the 10 s grace period");
    // The call in flight (3 s at the sandbox) completed and was recorded: once, and settled.
    assert!(took >= Duration::from_millis(2000), "exited after {took:?}: the send in flight was cut off");
    let recaps = env.recaps();
    assert_eq!(recaps.len(), 1, "{recaps:?}");
    assert_eq!(env.recap_row().await, Some(("sent".to_string(), Some(recaps[0].clone()))), "{}", env.process.log());
}

#[tokio::test]
async fn after_sigkill_during_a_send_the_restarted_server_reconciles_it_by_its_echo_instead_of_resending() {
    let mut env = setup(10, 5).await;
    env.process.start().await;
    let (_visitor, reference) = env.visitor_with_link().await;
    env.recap_in_flight(&reference, 1500).await;
    env.process.signal(Signal::SIGKILL);
    env.process.wait_exit(Duration::from_secs(5)).await;
    // The sandbox delivers the recap anyway; its echo cannot reach the dead server and is retried.
    env.sandbox
        .wait_until(WAIT, |s| {
            s.sent_messages().into_iter().find(|m| m.message.text.as_deref().is_some_and(|t| t.starts_with(RECAP)))
        })
        .await
        .expect("delivered");
    assert_eq!(env.recap_row().await.map(|(status, _)| status).as_deref(), Some("pending"));

    env.process.start().await;
    let deadline = Instant::now() + WAIT;
    let row = loop {
        match env.recap_row().await {
            Some((status, id)) if status == "sent" => break id,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the recap was never settled:\n{}", env.process.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let recaps = env.recaps();
    assert_eq!(recaps.len(), 1, "sent again after the crash: {recaps:?}");
    assert_eq!(row.as_ref(), recaps.first(), "settled by the echo of the first send");
    env.process.signal(Signal::SIGTERM);
    assert!(env.process.wait_exit(Duration::from_secs(12)).await.success());
}

/// Customer messages acked while they wait in the reorder window (a later one's webhook first) are in the database
/// as unprocessed deliveries: SIGKILL loses nothing, and the restarted server stores them once, in timestamp order.
#[tokio::test]
async fn after_sigkill_during_the_reorder_window_the_restarted_server_stores_the_held_messages_once_in_order() {
    let mut env = setup(10, 5).await;
    // Long enough that the kill surely comes while both messages are held.
    env.process.set_env("PARLEY_MESSENGER__REORDER_WINDOW_MS", "30000");
    env.process.start().await;
    let var = |key: &str| env.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).expect("set");
    let (page, secret) = (var("PARLEY_MESSENGER__PAGE_ID"), var("PARLEY_MESSENGER__APP_SECRET"));
    let psid = "7200000000000001";
    let t = parley::clock::Clock::system().now_ms();
    let http = reqwest::Client::new();
    // Meta delivers B's webhook first, then A's (A was written first).
    for (mid, timestamp, text) in [("m_held_b", t + 1, "B"), ("m_held_a", t, "A")] {
        let body = serde_json::json!({"object": "page", "entry": [{"id": page, "time": timestamp, "messaging": [{
            "sender": {"id": psid}, "recipient": {"id": page}, "timestamp": timestamp,
            "message": {"mid": mid, "text": text}}]}]})
        .to_string();
        let response = http
            .post(format!("http://127.0.0.1:{}/webhooks/messenger", env.process.port()))
            .header(
                "x-hub-signature-256",
                parley::messenger::signature::sign_sha256(secret.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .expect("delivered");
        assert_eq!(response.status(), 200, "acked");
    }
    let store = Store::connect(&env.db, 1).await.expect("store");
    let stored = || async {
        let Some(contact) = store.contact_by_psid(psid).await.expect("query") else { return Vec::new() };
        let Some(conversation) = store.conversation_for_contact(&contact.id).await.expect("query") else {
            return Vec::new();
        };
        let events = store.events_after(&conversation.id, 0).await.expect("events");
        events
            .into_iter()
            .filter_map(|e| match e.kind {
                protocol::EventKind::Message { message } => Some(message.body),
                _ => None,
            })
            .collect::<Vec<String>>()
    };
    // The intake has both deliveries in the database and holds their messages.
    let deadline = Instant::now() + WAIT;
    while store.unprocessed_webhook_deliveries(10).await.expect("count").len() < 2 {
        assert!(Instant::now() < deadline, "the deliveries never reached the database:\n{}", env.process.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.process.signal(Signal::SIGKILL);
    env.process.wait_exit(Duration::from_secs(5)).await;
    assert!(stored().await.is_empty(), "stored before the window was over");
    assert_eq!(store.unprocessed_webhook_deliveries(10).await.expect("query").len(), 2, "both still waiting");

    env.process.set_env("PARLEY_MESSENGER__REORDER_WINDOW_MS", "500");
    env.process.start().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let waiting = store.unprocessed_webhook_deliveries(10).await.expect("query").len();
        if waiting == 0 && stored().await.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held messages were not stored after the restart:\n{}",
            env.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored().await, ["A", "B"]);
    env.process.signal(Signal::SIGTERM);
    assert!(env.process.wait_exit(Duration::from_secs(12)).await.success());
    store.close().await;
}
