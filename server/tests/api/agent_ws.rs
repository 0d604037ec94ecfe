//! The agent socket: authentication, origin check, inbox.

use protocol::console::ServerMsg;

use crate::helpers::{AGENT_NAME, refused_status, spawn_app};

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
