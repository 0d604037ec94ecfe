//! The agent socket: authentication, origin check, inbox.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use parley::ws::agent::SIGNED_OUT;
use protocol::console::{ClientMsg, ServerMsg};
use std::io::Write;

use crate::helpers::{
    AGENT_EMAIL, AGENT_NAME, AGENT_PASSWORD, TestApp, Ws, refused_status, session_cookie, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn an_agent_socket_without_a_session_is_refused_with_401() {
    let app = spawn_app().await;
    let err = app.agent_socket(Some(&app.origin()), None).await.err().expect("refused");
    assert_eq!(refused_status(err), 401);
    let err = app.agent_socket(Some(&app.origin()), Some("parley_session=forged")).await.err().expect("refused");
    assert_eq!(refused_status(err), 401);
}

#[tokio::test]
async fn an_agent_socket_from_another_origin_is_refused_with_403_even_with_a_valid_cookie() {
    let app = spawn_app().await;
    let cookie = app.agent_cookie().await;
    let err = app.agent_socket(Some("https://evil.example"), Some(&cookie)).await.err().expect("refused");
    assert_eq!(refused_status(err), 403);
}

#[tokio::test]
async fn a_signed_in_agent_gets_the_inbox_first() {
    let app = spawn_app().await;
    let (_ws, inbox) = app.agent().await;
    match inbox {
        ServerMsg::Inbox { agent, conversations } => {
            assert_eq!(agent.name, AGENT_NAME);
            assert!(conversations.is_empty());
        }
        other => panic!("expected the inbox, got {other:?}"),
    }
}

/// The agent's socket opened with a session cookie from the real login endpoint.
async fn signed_in_socket(app: &TestApp) -> (Ws, String) {
    let login = app.sign_in(IpAddr::V4(Ipv4Addr::LOCALHOST), AGENT_PASSWORD).await;
    let cookie = session_cookie(&login).expect("signed in");
    let mut ws = app.agent_socket(Some(&app.origin()), Some(&cookie)).await.expect("agent connects");
    let _inbox: ServerMsg = ws.recv().await;
    (ws, cookie)
}

#[tokio::test]
async fn signing_out_closes_the_agents_open_socket() {
    let app = spawn_app_with(|s| s.console.session_check_secs = 1).await;
    let (mut ws, cookie) = signed_in_socket(&app).await;
    let origin = app.origin();
    let logout = app
        .console_post(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "/api/console/logout",
            &[],
            &[("origin", &origin), ("cookie", &cookie)],
        )
        .await;
    assert!(logout.status().is_success() || logout.status().is_redirection(), "{}", logout.status());
    assert_eq!(ws.closed().await, Some(SIGNED_OUT));
    let err = app.agent_socket(Some(&origin), Some(&cookie)).await.err().expect("refused");
    assert_eq!(refused_status(err), 401);
}

#[tokio::test]
async fn parley_agent_set_password_from_another_process_closes_the_open_agent_socket() {
    let app = spawn_app_with(|s| s.console.session_check_secs = 1).await;
    let (mut ws, _cookie) = signed_in_socket(&app).await;
    let database_url = app.db_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["agent", "set-password", "--email", AGENT_EMAIL, "--password-stdin"])
            .env("PARLEY_DATABASE__URL", database_url)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("parley starts");
        cli.stdin.take().expect("stdin").write_all(b"a brand new password\n").expect("write stdin");
        cli.wait_with_output().expect("parley finishes")
    })
    .await
    .expect("joins");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let changed = Instant::now();
    assert_eq!(ws.closed().await, Some(SIGNED_OUT));
    // One check interval (1 s) plus scheduling slack on a busy machine.
    assert!(changed.elapsed() < Duration::from_secs(5), "closed after {:?}", changed.elapsed());
}

#[tokio::test]
async fn a_frame_after_the_session_ended_closes_the_socket_at_once() {
    // The periodic check is far away: only the per-frame check can close the socket within the test.
    let app = spawn_app_with(|s| s.console.session_check_secs = 300).await;
    let (mut ws, cookie) = signed_in_socket(&app).await;
    let token = cookie.trim_start_matches("parley_session=");
    app.store.delete_session(&parley::auth::token_hash(token)).await.expect("session deleted");
    ws.send(&ClientMsg::SetStatus { conversation_id: "c1".into(), status: protocol::ConversationStatus::Resolved })
        .await;
    assert_eq!(ws.closed().await, Some(SIGNED_OUT));
}
