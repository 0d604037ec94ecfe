//! Signed identity (`Parley('identify', {id, name, email, hash})`): a valid hash reaches the customer's one
//! conversation from any client; a wrong one is refused and shows nothing of that id; a site can require identity.
//! Every client here is independent: its own socket, no shared cookie and no shared token.

use parley::identity::IdentitySecret;
use protocol::widget::{ClientMsg, Identity, ServerMsg, VisitorContext};
use protocol::{ErrorCode, Event, EventKind};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{HOST_ORIGIN, SITE_KEY, TestApp, Ws, send_acked, spawn_app};

/// Gives the test site a fresh identity secret.
async fn with_secret(app: &TestApp) -> IdentitySecret {
    let secret = IdentitySecret::generate();
    assert!(app.store.set_identity_secret(SITE_KEY, Some(&secret)).await.expect("secret stored"));
    secret
}

fn identity(id: &str, hash: String) -> Identity {
    Identity { id: id.into(), name: Some("Ada Lovelace".into()), email: Some("ada@example.com".into()), hash }
}

/// A fresh socket from the chat frame (no cookie) saying hello with a token and an identity.
async fn connect(app: &TestApp, token: Option<&str>, identity: Option<Identity>) -> Ws {
    let mut ws = app.visitor_socket(Some(&app.origin())).await.expect("visitor connects");
    ws.send(&ClientMsg::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.map(str::to_string),
        last_seq: 0,
        context: VisitorContext { page_url: Some(format!("{HOST_ORIGIN}/account")), ..Default::default() },
        identity,
    })
    .await;
    ws
}

/// The welcome's token and message bodies.
fn welcome(msg: ServerMsg) -> (String, Vec<String>) {
    match msg {
        ServerMsg::Welcome { token, events, .. } => (token, bodies(&events)),
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn bodies(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { message } => Some(message.body.clone()),
            _ => None,
        })
        .collect()
}

/// The refusal a socket gets for a send.
async fn send_refused(ws: &mut Ws, client_id: &str, body: &str) -> ErrorCode {
    ws.send(&ClientMsg::Send { client_id: client_id.into(), body: body.into() }).await;
    ws.recv_until(|m: ServerMsg| match m {
        ServerMsg::Error { code, client_id: Some(c), .. } if c == client_id => Some(code),
        ServerMsg::Ack { client_id: c, .. } if c == client_id => panic!("{client_id} was accepted"),
        _ => None,
    })
    .await
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = SqliteConnection::connect(&app.db_url).await.expect("db opens");
    sqlx::query_scalar(sql).fetch_one(&mut db).await.expect("count")
}

#[tokio::test]
async fn a_valid_identity_reaches_the_same_conversation_from_two_independent_clients() {
    let app = spawn_app().await;
    let secret = with_secret(&app).await;
    let ada = || Some(identity("user-42", secret.sign("user-42")));

    // The laptop: a new browser, identified.
    let mut laptop = connect(&app, None, ada()).await;
    let (laptop_token, history) = welcome(laptop.recv().await);
    assert!(history.is_empty());
    send_acked(&mut laptop, "c-1", "Where is order 1001?").await;

    // The phone: another browser with its own anonymous history, same identity.
    let (mut anonymous_phone, _) = app.visitor(None, 0).await;
    send_acked(&mut anonymous_phone, "p-1", "anonymous question from the phone").await;
    let mut phone = connect(&app, None, ada()).await;
    let (_, history) = welcome(phone.recv().await);
    assert_eq!(history, ["Where is order 1001?"], "the customer's history, and only it");

    // Both are live in one conversation.
    send_acked(&mut phone, "c-2", "Also order 1002").await;
    // (The laptop first gets the live copy of its own message, then the phone's.)
    let live = laptop
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Event { event } => bodies(&[event]).pop().filter(|b| b != "Where is order 1001?"),
            _ => None,
        })
        .await;
    assert_eq!(live, "Also order 1002");

    // One contact for the id, with what the host page said about it.
    assert_eq!(count(&app, "select count(*) from contacts where external_id = 'user-42'").await, 1);
    assert_eq!(
        count(&app, "select count(*) from contacts where label = 'Ada Lovelace' and email = 'ada@example.com'").await,
        1
    );

    // The laptop's anonymous session (its token, without the identity) never sees the customer's messages.
    let (_, welcome_msg) = app.visitor(Some(&laptop_token), 0).await;
    let (_, anonymous_history) = welcome(welcome_msg);
    assert!(
        anonymous_history.is_empty(),
        "identified history leaked into the anonymous session: {anonymous_history:?}"
    );
}

#[tokio::test]
async fn an_anonymous_history_never_joins_an_identified_one() {
    let app = spawn_app().await;
    let secret = with_secret(&app).await;
    let (mut anonymous, welcome_msg) = app.visitor(None, 0).await;
    let (token, _) = welcome(welcome_msg);
    send_acked(&mut anonymous, "a-1", "my anonymous question").await;

    // The same browser (same token) logs in: the identified conversation is its own.
    let mut identified = connect(&app, Some(&token), Some(identity("user-7", secret.sign("user-7")))).await;
    let (_, history) = welcome(identified.recv().await);
    assert!(history.is_empty(), "anonymous history leaked into the identified one: {history:?}");
    send_acked(&mut identified, "i-1", "as user 7").await;

    // And the anonymous session still has only its own message.
    let (_, welcome_msg) = app.visitor(Some(&token), 0).await;
    assert_eq!(welcome(welcome_msg).1, ["my anonymous question"]);
}

#[tokio::test]
async fn a_wrong_hash_is_refused_and_shows_nothing_of_that_id() {
    let app = spawn_app().await;
    let secret = with_secret(&app).await;
    let mut victim = connect(&app, None, Some(identity("user-42", secret.sign("user-42")))).await;
    welcome(victim.recv().await);
    send_acked(&mut victim, "v-1", "my address is 1 Private Lane").await;

    let forgeries = [
        secret.sign("user-43"),                     // a valid hash, for another id
        IdentitySecret::generate().sign("user-42"), // the right id under another key
        "00".repeat(32),                            // well-formed, wrong
        "not a hash".to_string(),                   // malformed
        String::new(),                              // empty
    ];
    for (n, hash) in forgeries.into_iter().enumerate() {
        let mut attacker = connect(&app, None, Some(identity("user-42", hash))).await;
        match attacker.recv().await {
            ServerMsg::Error { code: ErrorCode::IdentityRefused, client_id: None, .. } => {}
            other => panic!("forgery {n}: expected identity_refused, got {other:?}"),
        }
        let (_, history) = welcome(attacker.recv().await);
        assert!(history.is_empty(), "forgery {n} saw {history:?}");
        // It goes on anonymously: what it writes is its own, never the victim's.
        send_acked(&mut attacker, &format!("x-{n}"), "attacker text").await;
    }
    let mut again = connect(&app, None, Some(identity("user-42", secret.sign("user-42")))).await;
    assert_eq!(welcome(again.recv().await).1, ["my address is 1 Private Lane"]);
    assert_eq!(count(&app, "select count(*) from contacts where external_id is not null").await, 1);
}

#[tokio::test]
async fn an_identity_is_refused_on_a_site_without_a_secret() {
    let app = spawn_app().await;
    let unrelated = IdentitySecret::generate();
    let mut ws = connect(&app, None, Some(identity("user-42", unrelated.sign("user-42")))).await;
    assert!(matches!(ws.recv().await, ServerMsg::Error { code: ErrorCode::IdentityRefused, .. }));
    welcome(ws.recv().await);
}

#[tokio::test]
async fn a_site_that_requires_identity_refuses_anonymous_sends_and_shows_no_history() {
    let app = spawn_app().await;
    let secret = with_secret(&app).await;
    // A visitor who chatted before the site required identity.
    let (mut before, welcome_msg) = app.visitor(None, 0).await;
    let (token, _) = welcome(welcome_msg);
    send_acked(&mut before, "b-1", "written while anonymous chat was allowed").await;
    assert!(app.store.set_identity_required(SITE_KEY, true).await.expect("required"));
    let messages = count(&app, "select count(*) from messages").await;

    // Anonymous, and with a forged identity: no history, no send.
    let mut anonymous = connect(&app, Some(&token), None).await;
    let (_, history) = welcome(anonymous.recv().await);
    assert!(history.is_empty(), "an unidentified socket saw {history:?}");
    assert_eq!(send_refused(&mut anonymous, "a-1", "let me in").await, ErrorCode::IdentityRequired);
    anonymous.send(&ClientMsg::MessengerLink).await;
    let refused = anonymous
        .recv_until(|m: ServerMsg| match m {
            ServerMsg::Error { code, .. } => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(refused, ErrorCode::IdentityRequired);

    let mut forged = connect(&app, Some(&token), Some(identity("user-42", "00".repeat(32)))).await;
    assert!(matches!(forged.recv().await, ServerMsg::Error { code: ErrorCode::IdentityRefused, .. }));
    assert!(welcome(forged.recv().await).1.is_empty());
    assert_eq!(send_refused(&mut forged, "f-1", "let me in").await, ErrorCode::IdentityRequired);
    assert_eq!(count(&app, "select count(*) from messages").await, messages, "a refused send was stored");

    // Identified customers chat as usual.
    let mut customer = connect(&app, Some(&token), Some(identity("user-42", secret.sign("user-42")))).await;
    assert!(welcome(customer.recv().await).1.is_empty());
    send_acked(&mut customer, "c-1", "signed in now").await;
}
