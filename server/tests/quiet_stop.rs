//! A graceful stop is quiet: `parley serve` as a real process, with an agent signed in and visitors connected who
//! have conversations, stopped with SIGTERM, exits 0 and logs no failed presence announcement (a visitor socket
//! closing while the database closes used to log "could not publish presence … closed pool").

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use parley::store::Store;
use process::{ParleyProcess, Socket};
use protocol::widget::{ClientMsg, ServerMsg, VisitorContext};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

/// Visitors connected when the stop comes: enough that their leaves queue for the database while it closes.
const VISITORS: usize = 300;

/// A visitor who wrote once (so it has a stored contact and a conversation), its socket left open.
async fn visitor(port: u16, n: usize) -> Socket {
    let mut ws = process::visitor_socket(port, "shop").await;
    let hello = ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: None,
        last_seq: 0,
        context: VisitorContext::default(),
        identity: None,
    };
    let send = ClientMsg::Send { client_id: format!("c-{n}"), body: format!("hello {n}") };
    for msg in [hello, send] {
        ws.send(Message::Text(serde_json::to_string(&msg).expect("serializes").into())).await.expect("send");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("an ack in time");
        let Some(Ok(Message::Text(text))) = frame else { panic!("the visitor socket closed before its ack") };
        if matches!(serde_json::from_str::<ServerMsg>(&text), Ok(ServerMsg::Ack { .. })) {
            return ws;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_with_visitors_and_an_agent_connected_logs_no_failed_presence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("parley.db").display());
    let store = Store::connect(&db, 1).await.expect("store");
    store.create_site("shop", "Shop", &["http://shop.test".to_string()], "Hi").await.expect("site");
    let agent = parley::cli::create_agent(&store, "ana@example.com", "Ana", "a long password").await.expect("agent");
    let token = parley::auth::new_token();
    let expires = store.clock().now_ms() + 3_600_000;
    store.create_session(&parley::auth::token_hash(&token), &agent.id, expires).await.expect("session");
    store.close().await;

    let env = [
        ("PARLEY_DATABASE__URL", db.clone()),
        ("PARLEY_ASSETS__DIR", dir.path().join("site").display().to_string()),
        ("RUST_LOG", "info".into()),
        // Every visitor comes from 127.0.0.1: the per-address flood limits out of the way.
        ("PARLEY_LIMITS__MAX_SOCKETS_PER_IP", "100000".into()),
        ("PARLEY_LIMITS__IP_HELLOS_PER_MINUTE", "100000".into()),
        ("PARLEY_LIMITS__IP_FRAME_BURST", "100000".into()),
        ("PARLEY_LIMITS__IP_FRAMES_PER_MINUTE", "100000".into()),
    ];
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let mut server = ParleyProcess::serve(env!("CARGO_BIN_EXE_parley"), env, dir.path());
    server.start().await;
    let port = server.port();

    let cookie = format!("parley_session={token}");
    let mut agent = process::agent_socket(port, &cookie).await;
    let inbox = tokio::time::timeout(WAIT, agent.next()).await.expect("the inbox in time");
    assert!(matches!(inbox, Some(Ok(Message::Text(_)))), "the agent is signed in: {inbox:?}");
    let visitors = futures_util::future::join_all((0..VISITORS).map(|n| visitor(port, n))).await;
    // Every socket keeps reading, as a browser does, so each sees its close and answers it.
    let readers: Vec<_> = std::iter::once(agent)
        .chain(visitors)
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();

    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(WAIT).await;
    for reader in readers {
        reader.abort();
    }
    let log = server.log();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(!log.contains("could not publish presence"), "a presence announcement failed during the stop:\n{log}");
    assert!(!log.contains("closed pool") && !log.contains("PoolClosed"), "the pool closed under a task:\n{log}");
}
