//! `parley db copy`: a single-box SQLite installation moves to PostgreSQL with its history intact. The app then
//! runs on the PostgreSQL URL, the same visitor resumes by seq and sees the same events, new messages continue the
//! numbering without a gap, and the pending outbox row and webhook deliveries are still there to work on.

use parley::messenger::policy::MirrorPolicy;
use parley::store::{AppendOutcome, NewMessage, Store};
use protocol::widget::ServerMsg;
use protocol::{Author, Channel, Event};

use crate::helpers::{send_acked, spawn_app, spawn_app_on_database};

fn agent_reply(client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        client_id: client_id.into(),
        body: body.into(),
        author: Author::Agent { name: "Alex".into() },
        agent_id: None,
        channel: Channel::Web,
        external_id: None,
        attachments: Vec::new(),
        messenger_action_at: None,
        mirror: Some(MirrorPolicy::default()),
    }
}

fn welcome(msg: ServerMsg) -> (String, Vec<Event>, u64) {
    match msg {
        ServerMsg::Welcome { token, events, last_seq, .. } => (token, events, last_seq),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// Everything that must survive the move, read through the store.
async fn snapshot(store: &Store, conversations: &[String]) -> Vec<Vec<Event>> {
    let mut logs = Vec::new();
    for id in conversations {
        logs.push(store.events_after(id, 0).await.expect("events"));
    }
    logs
}

#[tokio::test]
async fn a_copied_installation_replays_the_same_history_on_postgres() {
    let old = spawn_app().await;
    // A web visitor's conversation, written through the real socket.
    let (mut ws, hello) = old.visitor(None, 0).await;
    let (token, _, _) = welcome(hello);
    assert!(!token.is_empty(), "the visitor keeps a token");
    for i in 1..=5 {
        send_acked(&mut ws, &format!("c{i}"), &format!("message {i}")).await;
    }
    drop(ws);
    // A Messenger customer with a reply still waiting in the outbox, and two raw webhook deliveries.
    let site = old.store.site_by_key(crate::helpers::SITE_KEY).await.expect("site").expect("site");
    let customer = old.store.create_messenger_contact(&site.id, "psid-copy", "Customer").await.expect("contact");
    old.store.record_messenger_action(&customer.id, old.store.clock().now_ms()).await.expect("action");
    let AppendOutcome::Created { conversation_id: messenger_conversation, .. } =
        old.store.append_message(&customer.id, &site.id, agent_reply("r1", "queued reply")).await.expect("reply")
    else {
        panic!("a new reply")
    };
    let first_delivery = old.store.insert_webhook_delivery(b"{\"object\":\"page\"}").await.expect("delivery");
    old.store.insert_webhook_delivery(&[0, 159, 146, 150]).await.expect("binary delivery");
    let visitor_contact = old
        .store
        .contact_by_token(&site.id, &parley::auth::token_hash(&token))
        .await
        .expect("contact")
        .expect("the visitor's contact");
    let web_conversation =
        old.store.conversation_for_contact(&visitor_contact.id).await.expect("c").expect("conversation").id;
    let conversations = [web_conversation.clone(), messenger_conversation.clone()];
    let before = snapshot(&old.store, &conversations).await;
    assert_eq!(before[0].len(), 5);

    let target = testpg::database().await;
    let report = parley::store::copy::copy(&old.db_url, &target.url).await.expect("copy");
    let copied = |table: &str| report.tables.iter().find(|(t, _)| *t == table).map(|(_, n)| *n);
    assert_eq!(copied("messages"), Some(6));
    assert_eq!(copied("outbox"), Some(1));
    assert_eq!(copied("webhook_deliveries"), Some(2));
    let again = parley::store::copy::copy(&old.db_url, &target.url).await;
    assert!(
        again.as_ref().is_err_and(|e| format!("{e:#}").contains("not empty")),
        "a second copy into the same database is refused: {again:?}"
    );

    let new = spawn_app_on_database(&target.url).await;
    assert_eq!(snapshot(&new.store, &conversations).await, before, "every event, seq for seq");
    // The same visitor resumes: from the start, and from the middle by seq.
    let (_, events, last_seq) = welcome(new.visitor(Some(&token), 0).await.1);
    assert_eq!((events, last_seq), (before[0].clone(), 5));
    let (mut ws, hello) = new.visitor(Some(&token), 3).await;
    let (_, events, _) = welcome(hello);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(send_acked(&mut ws, "c6", "after the move").await, 6, "the numbering goes on without a gap");
    assert_eq!(send_acked(&mut ws, "c1", "message 1 (resent)").await, 1, "old client ids still dedupe");

    // The pending send and the unprocessed deliveries are still there, and new rows get new ids.
    let now = new.store.clock().now_ms();
    let pending = new.store.lease_outbox_heads(now, 60_000, 0, 10, &[]).await.expect("lease");
    assert_eq!(pending.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), vec!["queued reply"]);
    assert_eq!(pending[0].conversation_id, messenger_conversation);
    let deliveries = new.store.unprocessed_webhook_deliveries(10).await.expect("deliveries");
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0], (first_delivery, b"{\"object\":\"page\"}".to_vec()));
    let next = new.store.insert_webhook_delivery(b"{}").await.expect("new delivery");
    assert!(next > deliveries[1].0, "the id sequence moved past the copied ids");
    let AppendOutcome::Created { events, .. } = new
        .store
        .append_message(&customer.id, &site.id, agent_reply("r2", "after the move"))
        .await
        .expect("a new outbox row next to the copied one")
    else {
        panic!("a new reply")
    };
    assert_eq!(events.len(), 1, "queued for Messenger, not refused: {events:?}");
}
