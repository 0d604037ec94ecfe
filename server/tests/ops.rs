//! Operations, with real processes: `parley serve` behind a real nginx running the repo's `deploy/nginx/parley.conf`
//! (a visitor and an agent chat through it over WebSocket, nginx's `X-Forwarded-For` names each client to
//! Parley's per-address caps, the body limit holds), the systemd unit checked by `systemd-analyze verify`, JSON
//! logs that are valid JSON lines without secrets, and a `parley` binary that does not carry the Messenger
//! sandbox. nginx and systemd come from Debian, installed by `cargo xtask test` when missing; without them these
//! tests fail (never skip), naming the package.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley::store::Store;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "support/nginx.rs"]
mod nginx;

use nginx::{Running, repo_file, require};

const WAIT: Duration = Duration::from_secs(30);
const SITE: &str = "opsite";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `probe` until it gives a value, failing after 30 s.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `parley serve` on `port` with `vars`, logging to `dir/serve.log`, and waits for `/healthz`.
async fn serve(dir: &Path, port: u16, vars: &[(&str, String)]) -> Running {
    let log = dir.join("serve.log");
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("serve")
        .env("PARLEY_HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("PARLEY_DATABASE__URL", format!("sqlite://{}", dir.join("parley.db").display()))
        .env("PARLEY_ASSETS__DIR", dir.join("site"))
        .env("PARLEY_MESSENGER__SPOOL_DIR", dir.join("spool"))
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("parley serve starts");
    let mut running = Running { child, log };
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually("parley serve to answer /healthz", async || {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            panic!("parley serve exited with {status}: {}", running.log());
        }
        http.get(&url).send().await.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    running
}

// ---------------------------------------------------------------------------------------------------------------
// nginx (the config and the process: support/nginx.rs)

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url` from the local address `from` (a loopback address such as 127.0.0.2), or the HTTP status
/// that refused the upgrade.
async fn ws_from(from: IpAddr, url: &str, headers: &[(&'static str, String)]) -> Result<Ws, u16> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_str(value).expect("header"));
    }
    let authority = request.uri().authority().expect("authority").as_str().to_string();
    let addr: SocketAddr = authority.parse().expect("an ip:port URL");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind the client address");
    let stream = socket.connect(addr).await.expect("connect");
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket failed: {e}"),
    }
}

async fn send<T: serde::Serialize>(ws: &mut Ws, msg: &T) {
    ws.send(Message::Text(serde_json::to_string(msg).expect("json").into())).await.expect("send");
}

/// Reads frames until `pick` accepts one.
async fn recv_until<T: DeserializeOwned, R>(ws: &mut Ws, mut pick: impl FnMut(T) -> Option<R>) -> R {
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("a frame in time");
        match frame.expect("socket open").expect("frame") {
            Message::Text(text) => {
                if let Some(found) = serde_json::from_str::<T>(text.as_str()).ok().and_then(&mut pick) {
                    return found;
                }
            }
            Message::Close(close) => panic!("socket closed: {close:?}"),
            _ => {}
        }
    }
}

fn hello() -> protocol::widget::ClientMsg {
    protocol::widget::ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: None,
        last_seq: 0,
        context: protocol::widget::VisitorContext::default(),
        identity: None,
    }
}

fn message_body(event: &protocol::Event) -> Option<&str> {
    match &event.kind {
        protocol::EventKind::Message { message } => Some(message.body.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_visitor_and_an_agent_chat_through_nginx_with_the_repo_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node_port, nginx_port) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{nginx_port}");
    // A site and an agent session, written before the server starts.
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("parley.db").display()), 1).await.expect("db");
    store.create_site(SITE, "Ops Shop", &["https://shop.example".to_string()], "Hi").await.expect("site");
    let agent = parley::cli::create_agent(&store, "ops@example.com", "Olga", "ops-password-1").await.expect("agent");
    let session = parley::auth::new_token();
    let expires = store.clock().now_ms() + 3_600_000;
    store.create_session(&parley::auth::token_hash(&session), &agent.id, expires).await.expect("session");
    store.close().await;

    let _node = serve(
        dir.path(),
        node_port,
        &[
            ("PARLEY_HTTP__PUBLIC_URL", public.clone()),
            // nginx connects from 127.0.0.1; only its X-Forwarded-For names the client.
            ("PARLEY_HTTP__TRUSTED_PROXIES", "127.0.0.1".into()),
            ("PARLEY_LIMITS__MAX_SOCKETS_PER_IP", "1".into()),
            ("RUST_LOG", "warn".into()),
        ],
    )
    .await;
    let nginx_dir = dir.path().join("nginx");
    let site = nginx::site_config(&[SocketAddr::from(([127, 0, 0, 1], node_port))], nginx_port);
    let _nginx = nginx::start(&nginx_dir, &site);
    let http = reqwest::Client::new();
    eventually("nginx to proxy /healthz", async || {
        let r = http.get(format!("{public}/healthz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // The visitor (from 127.0.0.2, through nginx) writes; the agent (from 127.0.0.3) sees it live and answers.
    let origin = ("origin", public.clone());
    let visitor_url = format!("ws://127.0.0.1:{nginx_port}/ws/visitor?site={SITE}");
    let mut visitor = ws_from([127, 0, 0, 2].into(), &visitor_url, std::slice::from_ref(&origin)).await.expect("ws");
    send(&mut visitor, &hello()).await;
    recv_until(&mut visitor, |m: protocol::widget::ServerMsg| {
        matches!(m, protocol::widget::ServerMsg::Welcome { .. }).then_some(())
    })
    .await;
    let agent_url = format!("ws://127.0.0.1:{nginx_port}/ws/agent");
    let cookie = ("cookie", format!("parley_session={session}"));
    let mut agent = ws_from([127, 0, 0, 3].into(), &agent_url, &[origin.clone(), cookie]).await.expect("agent ws");
    recv_until(&mut agent, |m: protocol::console::ServerMsg| {
        matches!(m, protocol::console::ServerMsg::Inbox { .. }).then_some(())
    })
    .await;
    send(&mut visitor, &protocol::widget::ClientMsg::Send { client_id: "v1".into(), body: "hello via nginx".into() })
        .await;
    let conversation_id = recv_until(&mut agent, |m: protocol::console::ServerMsg| match m {
        protocol::console::ServerMsg::Summary { conversation }
            if conversation.last_message.as_deref() == Some("hello via nginx") =>
        {
            Some(conversation.id)
        }
        _ => None,
    })
    .await;
    send(
        &mut agent,
        &protocol::console::ClientMsg::Send {
            conversation_id,
            client_id: "a1".into(),
            body: "hello back through nginx".into(),
        },
    )
    .await;
    recv_until(&mut visitor, |m: protocol::widget::ServerMsg| match m {
        protocol::widget::ServerMsg::Event { event } => {
            (message_body(&event) == Some("hello back through nginx")).then_some(())
        }
        _ => None,
    })
    .await;

    // One socket per client address: a second from 127.0.0.2 is refused, yet 127.0.0.4 gets one — Parley sees
    // each client's own address through nginx, not nginx's.
    let again = ws_from([127, 0, 0, 2].into(), &visitor_url, std::slice::from_ref(&origin)).await;
    assert_eq!(again.err(), Some(429));
    let mut other = ws_from([127, 0, 0, 4].into(), &visitor_url, std::slice::from_ref(&origin)).await.expect("ws");
    send(&mut other, &hello()).await;
    recv_until(&mut other, |m: protocol::widget::ServerMsg| {
        matches!(m, protocol::widget::ServerMsg::Welcome { .. }).then_some(())
    })
    .await;

    // nginx enforces the body limit and hides /metrics.
    let big = http.post(format!("{public}/webhooks/messenger")).body(vec![b'x'; 2 * 1024 * 1024]).send().await;
    assert_eq!(big.expect("request").status(), 413);
    assert_eq!(http.get(format!("{public}/metrics")).send().await.expect("request").status(), 404);
}

#[test]
fn the_nginx_config_keeps_sockets_open_longer_than_the_ping_interval() {
    let conf = std::fs::read_to_string(repo_file("deploy/nginx/parley.conf")).expect("config");
    let limits = parley::config::LimitSettings::default();
    let seconds = |directive: &str| -> u64 {
        let line = conf.lines().map(str::trim).find(|l| l.starts_with(directive)).unwrap_or_else(|| {
            panic!("{directive} missing");
        });
        line.trim_start_matches(directive).trim().trim_end_matches(';').trim_end_matches('s').parse().expect("secs")
    };
    for directive in ["proxy_read_timeout", "proxy_send_timeout"] {
        assert!(seconds(directive) > limits.ping_secs + limits.pong_timeout_secs, "{directive}");
    }
    for needle in ["proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;", "X-Forwarded-For"] {
        assert!(conf.contains(needle), "{needle}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// systemd

/// Runs `systemd-analyze verify` on `unit` inside a scratch root holding the system's units and an executable at
/// the unit's `ExecStart` path; returns everything it printed (empty when the unit is clean).
fn systemd_verify(unit: &str) -> String {
    let analyze = require("systemd-analyze", "systemd");
    let root = tempfile::tempdir().expect("temp dir");
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"].into_iter().find(|d| Path::new(d).is_dir());
    let units = units.expect("the system's unit folder (Debian's `systemd` package)");
    std::fs::create_dir_all(root.path().join("usr/lib/systemd/system")).expect("dirs");
    let copied = Command::new("cp").arg("-rT").arg(units).arg(root.path().join("usr/lib/systemd/system")).status();
    assert!(copied.expect("cp runs").success(), "cannot copy the system units");
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).expect("dirs");
    std::fs::write(root.path().join("etc/systemd/system/parley.service"), unit).expect("unit");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let binary = root.path().join(exec.split_whitespace().next().expect("a program").trim_start_matches('/'));
    std::fs::create_dir_all(binary.parent().expect("a folder")).expect("dirs");
    std::fs::write(&binary, "#!/bin/sh\n").expect("stand-in binary");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(analyze)
        .arg(format!("--root={}", root.path().display()))
        .args(["verify", "/etc/systemd/system/parley.service"])
        .output()
        .expect("systemd-analyze runs");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && printed.is_empty() {
        return format!("systemd-analyze verify failed ({})", out.status);
    }
    printed
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_outlives_the_shutdown_grace() {
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/parley.service")).expect("unit");
    let printed = systemd_verify(&unit);
    assert!(printed.trim().is_empty(), "systemd-analyze verify complains:\n{printed}");
    // The checker does catch mistakes: a misspelt value and an unknown key.
    let broken = unit.replace("ProtectSystem=strict", "ProtectSystem=stricty\nRestartt=always");
    let complaints = systemd_verify(&broken);
    assert!(complaints.contains("stricty") && complaints.contains("Restartt"), "{complaints}");

    let value = |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(str::trim);
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "parley"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(value(key), Some(expected), "{key}");
    }
    let files: u64 = value("LimitNOFILE").expect("LimitNOFILE").parse().expect("a number");
    assert!(files >= 65536, "LimitNOFILE={files}");
    let stop: u64 = value("TimeoutStopSec").expect("TimeoutStopSec").parse().expect("seconds");
    let grace = parley::config::Settings::default().http.shutdown_grace_secs;
    assert!(stop > grace, "TimeoutStopSec={stop} must exceed http.shutdown_grace_secs={grace}");
}

// ---------------------------------------------------------------------------------------------------------------
// Logs and the binary

#[tokio::test]
async fn json_logs_are_one_valid_json_object_per_line_and_carry_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let secrets = [
        ("PARLEY_MESSENGER__PAGE_TOKEN", "EAAB-page-token-never-logged"),
        ("PARLEY_MESSENGER__APP_SECRET", "app-secret-never-logged"),
        ("PARLEY_MESSENGER__VERIFY_TOKEN", "verify-token-never-logged"),
        ("PARLEY_METRICS__TOKEN", "metrics-token-never-logged"),
    ];
    let mut vars: Vec<(&str, String)> = secrets.iter().map(|(k, v)| (*k, v.to_string())).collect();
    vars.extend([
        ("PARLEY_LOG__FORMAT", "json".to_string()),
        ("RUST_LOG", "debug".into()),
        ("PARLEY_METRICS__ENABLED", "true".into()),
        ("PARLEY_MESSENGER__ENABLED", "true".into()),
        ("PARLEY_MESSENGER__APP_ID", "1517776481860111".into()),
        ("PARLEY_MESSENGER__PAGE_ID", "100000000000001".into()),
        // Nothing listens there: the workers' calls fail and log, which is what this test reads.
        ("PARLEY_MESSENGER__GRAPH_URL", format!("http://127.0.0.1:{}", free_port())),
    ]);
    let server = serve(dir.path(), port, &vars).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Requests that log: a refused webhook, a bad verification handshake, a scrape, a failed sign-in.
    let _ = http.post(format!("{base}/webhooks/messenger")).body("{}").send().await.expect("webhook");
    let _ = http
        .get(format!("{base}/webhooks/messenger?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"))
        .send()
        .await
        .expect("verify");
    let scrape = http.get(format!("{base}/metrics")).bearer_auth(secrets[3].1).send().await.expect("scrape");
    assert_eq!(scrape.status(), 200);
    let login = http
        .post(format!("{base}/api/console/login"))
        .header("origin", &base)
        .form(&[("email", "nobody@example.com"), ("password", "a-password-never-logged")])
        .send()
        .await
        .expect("login");
    assert!(!login.status().is_success());
    let log = eventually("the refused webhook in the log", async || {
        let log = server.log();
        log.contains("webhook delivery refused").then_some(log)
    })
    .await;
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(entry["level"].is_string() && entry["timestamp"].is_string(), "{line}");
        assert!(entry["fields"].is_object(), "{line}");
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    for secret in secrets.iter().map(|(_, v)| *v).chain(["a-password-never-logged"]) {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[test]
fn the_parley_binary_does_not_carry_the_messenger_sandbox_and_says_how_to_get_the_demo() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_parley")).expect("the parley binary");
    let mentions = |needle: &str| binary.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The check sees crate names: a dependency the binary does link is there.
    assert!(mentions("metrics_exporter_prometheus"));
    assert_eq!(mentions("messenger_sandbox"), cfg!(feature = "demo-sandbox"));
    if cfg!(feature = "demo-sandbox") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["demo", "--host-bind", "127.0.0.1:0", "--messenger-bind", "127.0.0.1:0"])
        .env("PARLEY_DATABASE__URL", format!("sqlite://{}", dir.path().join("demo.db").display()))
        .env("PARLEY_HTTP__BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("parley demo runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("cargo xtask demo") && text.contains("--no-messenger"), "{text}");
}
