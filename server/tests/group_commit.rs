//! Group commit as a real `parley serve` process: many visitors pipeline messages (several in flight each), the
//! process is SIGKILLed while they post, and the database file is counted — every acked message is on disk (acked
//! means durable, also when its COMMIT covered many callers), none is stored twice. After a restart each visitor
//! re-sends everything it sent (as the widget does with what it holds unacked): every message ends up stored once.

#[path = "support/process.rs"]
mod process;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use parley::store::Store;
use process::{ParleyProcess, Socket};
use protocol::widget::{ClientMsg, ServerMsg, VisitorContext};
use sqlx::Connection;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);
const VISITORS: usize = 40;
const IN_FLIGHT: usize = 4;
/// Acks to see before the kill (the posters keep going until it lands).
const ACKED_BEFORE_KILL: usize = 600;

struct Server {
    _dir: tempfile::TempDir,
    db: String,
    process: ParleyProcess,
}

impl Server {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("parley.db").display());
        let store = Store::connect(&db, 1).await.expect("store");
        store.create_site("shop", "Shop", &["http://shop.test".to_string()], "Hi").await.expect("site");
        store.close().await;
        let env = [
            ("PARLEY_DATABASE__URL", db.clone()),
            ("PARLEY_ASSETS__DIR", dir.path().join("site").display().to_string()),
            ("RUST_LOG", "warn".into()),
            // The flood limits would slow these posters down (with a refusal the widget re-sends later).
            ("PARLEY_LIMITS__VISITOR_MESSAGE_BURST", "1000000".into()),
            ("PARLEY_LIMITS__VISITOR_MESSAGES_PER_MINUTE", "1000000".into()),
            ("PARLEY_LIMITS__IP_FRAME_BURST", "1000000".into()),
            ("PARLEY_LIMITS__IP_FRAMES_PER_MINUTE", "1000000".into()),
            ("PARLEY_LIMITS__IP_HELLOS_PER_MINUTE", "1000000".into()),
            ("PARLEY_LIMITS__MAX_SOCKETS_PER_IP", "1000".into()),
        ];
        let process = ParleyProcess::serve(
            env!("CARGO_BIN_EXE_parley"),
            env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            dir.path(),
        );
        Self { _dir: dir, db, process }
    }

    /// A visitor socket after its `Welcome`; returns the socket and the token to resume with.
    async fn visitor(&self, token: Option<String>) -> (Socket, String) {
        let mut socket = process::visitor_socket(self.process.port(), "shop").await;
        let hello = ClientMsg::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            token,
            last_seq: 0,
            context: VisitorContext::default(),
            identity: None,
        };
        send(&mut socket, &hello).await.expect("hello");
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(ServerMsg::Welcome { token, .. }) = serde_json::from_str(t.as_str()) {
                        return (socket, token);
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("no welcome: {other:?}"),
            }
        }
    }
}

async fn send(socket: &mut Socket, msg: &ClientMsg) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    socket.send(Message::Text(serde_json::to_string(msg).expect("serializes").into())).await
}

fn send_msg(client_id: &str) -> ClientMsg {
    ClientMsg::Send { client_id: client_id.to_string(), body: format!("message {client_id}") }
}

/// What one visitor did before the kill.
#[derive(Default)]
struct Posted {
    sent: Vec<String>,
    acked: HashSet<String>,
}

/// Posts with `IN_FLIGHT` messages outstanding until the socket dies; records what was sent and acked.
async fn pipeline(mut socket: Socket, visitor: usize, posted: Arc<Mutex<Posted>>, acked_total: Arc<Mutex<usize>>) {
    let mut next = 0usize;
    let mut outstanding = 0usize;
    loop {
        while outstanding < IN_FLIGHT {
            let client_id = format!("v{visitor}-{next}");
            next += 1;
            posted.lock().expect("lock").sent.push(client_id.clone());
            if send(&mut socket, &send_msg(&client_id)).await.is_err() {
                return;
            }
            outstanding += 1;
        }
        match socket.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                Ok(ServerMsg::Ack { client_id, .. }) => {
                    outstanding -= 1;
                    posted.lock().expect("lock").acked.insert(client_id);
                    *acked_total.lock().expect("lock") += 1;
                }
                Ok(ServerMsg::Error { .. }) => panic!("a post was refused: {t}"),
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => return,
        }
    }
}

/// (client id → rows) of every stored message.
async fn stored(db: &str) -> HashMap<String, i64> {
    let mut conn = sqlx::SqliteConnection::connect(db).await.expect("database opens");
    let rows: Vec<(String, i64)> = sqlx::query_as("select client_id, count(*) from messages group by client_id")
        .fetch_all(&mut conn)
        .await
        .expect("counts");
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_visitors_pipeline_posts_loses_no_acked_message_and_doubles_none() {
    let mut server = Server::new().await;
    server.process.start().await;

    let acked_total = Arc::new(Mutex::new(0usize));
    let mut visitors = Vec::new();
    let mut tasks = Vec::new();
    for v in 0..VISITORS {
        let (socket, token) = server.visitor(None).await;
        let posted = Arc::new(Mutex::new(Posted::default()));
        tasks.push(tokio::spawn(pipeline(socket, v, Arc::clone(&posted), Arc::clone(&acked_total))));
        visitors.push((token, posted));
    }
    let deadline = Instant::now() + WAIT;
    while *acked_total.lock().expect("lock") < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "too few acks before the kill:\n{}", server.process.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.process.kill();
    for task in tasks {
        task.await.expect("poster ends with the socket");
    }

    let on_disk = stored(&server.db).await;
    let mut acked = 0;
    let mut sent = 0;
    for (_, posted) in &visitors {
        let posted = posted.lock().expect("lock");
        sent += posted.sent.len();
        acked += posted.acked.len();
        for client_id in &posted.acked {
            assert_eq!(on_disk.get(client_id), Some(&1), "acked {client_id} is not on disk exactly once");
        }
    }
    assert!(on_disk.values().all(|&n| n == 1), "a message is stored twice");
    let unacked_on_disk = on_disk.len() - acked;
    println!(
        "killed after {acked} acks of {sent} sent: all {acked} on disk, plus {unacked_on_disk} committed but not \
         acked yet"
    );

    // Restart; each visitor resumes and re-sends everything it sent. Each gets one ack per message.
    server.process.start().await;
    for (token, posted) in &visitors {
        let (mut socket, _) = server.visitor(Some(token.clone())).await;
        let sent = posted.lock().expect("lock").sent.clone();
        for client_id in &sent {
            send(&mut socket, &send_msg(client_id)).await.expect("re-sent");
        }
        let mut acks = HashSet::new();
        let outcome = tokio::time::timeout(WAIT, async {
            while acks.len() < sent.len() {
                match socket.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(ServerMsg::Ack { client_id, .. }) = serde_json::from_str(t.as_str()) {
                            acks.insert(client_id);
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended: {other:?}"),
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "{} of {} re-sends acked", acks.len(), sent.len());
    }
    let on_disk = stored(&server.db).await;
    assert_eq!(on_disk.len(), sent, "every sent message stored after the re-sends");
    assert!(on_disk.values().all(|&n| n == 1), "a message is stored twice");
    server.process.signal(Signal::SIGTERM);
    server.process.wait_exit(WAIT).await;
}
