//! The store's conformance suite: what every backend behind `parley::store::Backend` must do, written once against
//! the interface. Each engine runs the same functions (`server/tests/store/conformance.rs` runs them on SQLite and
//! on PostgreSQL). Each case takes a fresh, empty store opened on an adjustable clock.

use std::sync::Arc;
use std::time::Duration;

use parley::messenger::policy::MirrorPolicy;
use parley::store::models::{Contact, ContactContext, Site};
use parley::store::{AppendOutcome, NewMessage, OfferOutcome, Store};
use protocol::{Author, Channel, ConversationStatus, DeliveryState, EventKind, Party};

fn message(client_id: &str, author: Author) -> NewMessage {
    NewMessage {
        client_id: client_id.into(),
        body: format!("body of {client_id}"),
        author,
        agent_id: None,
        channel: Channel::Web,
        external_id: None,
        attachments: Vec::new(),
        messenger_action_at: None,
        mirror: None,
    }
}

fn agent() -> Author {
    Author::Agent { name: "Alex".into() }
}

async fn site_and_contact(store: &Store, token: u8) -> (Site, Contact) {
    let site = match store.site_by_key("conformance").await.expect("query") {
        Some(site) => site,
        None => store.create_site("conformance", "Conformance", &[], "Hi").await.expect("site"),
    };
    let contact = store.contact_for_token(&site.id, &[token; 32], "Visitor", &ContactContext::default()).await;
    (site, contact.expect("contact"))
}

async fn post(store: &Store, site: &Site, contact: &Contact, msg: NewMessage) -> (String, u64, bool) {
    match store.append_message(&contact.id, &site.id, msg).await.expect("append") {
        AppendOutcome::Created { conversation_id, seq, .. } => (conversation_id, seq, true),
        AppendOutcome::Duplicate { conversation_id, seq, .. } => (conversation_id, seq, false),
    }
}

/// A repeated client id (or channel id) stores nothing and answers with the original.
pub async fn appends_are_idempotent(store: Store) {
    let (site, contact) = site_and_contact(&store, 1).await;
    let (conversation, first, created) = post(&store, &site, &contact, message("c-1", Author::Visitor)).await;
    assert!(created);
    let (_, again, created) = post(&store, &site, &contact, message("c-1", Author::Visitor)).await;
    assert!(!created && again == first, "a repeat is the original");
    let from_messenger = NewMessage { external_id: Some("mid-1".into()), ..message("c-2", Author::Visitor) };
    let (_, mid_seq, _) = post(&store, &site, &contact, from_messenger.clone()).await;
    let redelivered = NewMessage { client_id: "c-3".into(), ..from_messenger };
    let (_, again, created) = post(&store, &site, &contact, redelivered).await;
    assert!(!created && again == mid_seq, "a redelivered channel message is stored once");
    let events = store.events_after(&conversation, 0).await.expect("log");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
}

/// Posts from many tasks at once into a few conversations commit with unique, gap-free sequence numbers.
pub async fn concurrent_posts_are_gap_free(store: Store) {
    let mut targets = Vec::new();
    for token in 0..4 {
        targets.push(site_and_contact(&store, 10 + token).await);
    }
    let targets = Arc::new(targets);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..80 {
        let (store, targets) = (store.clone(), Arc::clone(&targets));
        tasks.spawn(async move {
            let (site, contact) = &targets[n % 4];
            post(&store, site, contact, message(&format!("c-{n}"), Author::Visitor)).await
        });
    }
    let mut seqs: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (conversation, seq, created) = joined.expect("task");
        assert!(created);
        seqs.entry(conversation).or_default().push(seq);
    }
    assert_eq!(seqs.len(), 4);
    for (conversation, mut got) in seqs {
        got.sort_unstable();
        assert_eq!(got, (1..=20).collect::<Vec<u64>>(), "gap-free");
        let logged: Vec<u64> = store.events_after(&conversation, 0).await.expect("log").iter().map(|e| e.seq).collect();
        assert_eq!(logged, (1..=20).collect::<Vec<u64>>(), "the log matches");
    }
}

/// Read cursors move forward only, never past the last message; the inbox's unread count follows agent reads.
pub async fn read_cursors_and_unread(store: Store) {
    let (site, contact) = site_and_contact(&store, 2).await;
    let (conversation, _, _) = post(&store, &site, &contact, message("v-1", Author::Visitor)).await;
    post(&store, &site, &contact, message("a-1", agent())).await;
    let (_, last, _) = post(&store, &site, &contact, message("v-2", Author::Visitor)).await;
    let unread = || async { store.summary(&conversation).await.expect("query").expect("row").unread };
    assert_eq!(unread().await, 2, "customer messages only");
    let event = store.mark_read(&conversation, Party::Agent, 1000).await.expect("read").expect("moved");
    assert!(matches!(event.kind, EventKind::Read { by: Party::Agent, up_to_seq } if up_to_seq == last));
    assert_eq!(unread().await, 0);
    assert!(store.mark_read(&conversation, Party::Agent, 1).await.expect("read").is_none(), "never back");
    assert!(store.mark_read(&conversation, Party::Agent, 1000).await.expect("read").is_none(), "receipts aren't read");
    store.mark_read(&conversation, Party::Visitor, last).await.expect("visitor reads");
    post(&store, &site, &contact, message("v-3", Author::Visitor)).await;
    assert_eq!(unread().await, 1);
}

/// Resolving logs a status change once; the customer writing again reopens the conversation.
pub async fn a_customer_message_reopens(store: Store) {
    let (site, contact) = site_and_contact(&store, 3).await;
    let (conversation, _, _) = post(&store, &site, &contact, message("v-1", Author::Visitor)).await;
    let resolved = store.set_status(&conversation, ConversationStatus::Resolved, Some("Alex".into())).await;
    assert!(resolved.expect("status").is_some());
    let again = store.set_status(&conversation, ConversationStatus::Resolved, Some("Alex".into())).await;
    assert!(again.expect("status").is_none(), "no change, no event");
    match store.append_message(&contact.id, &site.id, message("v-2", Author::Visitor)).await.expect("append") {
        AppendOutcome::Created { events, .. } => assert!(
            events.iter().any(|e| matches!(e.kind, EventKind::Status { status: ConversationStatus::Open, by: None })),
            "{events:?}"
        ),
        AppendOutcome::Duplicate { .. } => panic!("new client id"),
    }
    let status = store.conversation(&conversation).await.expect("query").expect("row").status;
    assert_eq!(status, ConversationStatus::Open);
}

/// A reply to a Messenger contact is queued under the window the policy decides at the store's "now": RESPONSE
/// within 24 h, HUMAN_AGENT up to 7 days (for an agent, with the feature), and not sent after that.
pub async fn mirrored_replies_follow_the_windows(store: Store) {
    let (site, _) = site_and_contact(&store, 4).await;
    let contact = store.create_messenger_contact(&site.id, "psid-4", "Messenger 4").await.expect("contact");
    let written_at = store.clock().now_ms();
    let customer = NewMessage { messenger_action_at: Some(written_at), ..message("m-1", Author::Visitor) };
    let (conversation, _, _) = post(&store, &site, &contact, customer).await;
    let policy = Some(MirrorPolicy { human_agent: true });
    let reply = |id: &str| NewMessage { mirror: policy, ..message(id, agent()) };
    let lease = || async {
        let now = store.clock().now_ms();
        store.lease_outbox_heads(now, 60_000, 60_000, 10, &[]).await.expect("lease")
    };

    post(&store, &site, &contact, reply("a-1")).await;
    let leased = lease().await;
    assert_eq!(leased.iter().map(|r| r.messaging_type.as_str()).collect::<Vec<_>>(), vec!["RESPONSE"]);
    assert!(lease().await.is_empty(), "a leased send is not leased twice");
    store.outbox_sent(leased[0].id, "mid-a-1").await.expect("settles").expect("first settle logs Sent");
    assert!(store.outbox_sent(leased[0].id, "mid-a-1").await.expect("settles").is_none(), "idempotent");

    assert!(store.clock().advance(Duration::from_secs(25 * 3600)));
    post(&store, &site, &contact, reply("a-2")).await;
    let leased = lease().await;
    assert_eq!(leased.iter().map(|r| r.messaging_type.as_str()).collect::<Vec<_>>(), vec!["HUMAN_AGENT"]);
    store.outbox_sent(leased[0].id, "mid-a-2").await.expect("settles");

    assert!(store.clock().advance(Duration::from_secs(7 * 24 * 3600)));
    match store.append_message(&contact.id, &site.id, reply("a-3")).await.expect("append") {
        AppendOutcome::Created { events, .. } => assert!(
            events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Delivery { state: DeliveryState::NotSent, detail: Some(d), .. }
                if d == parley::sentences::NOT_SENT_AFTER_7D)),
            "{events:?}"
        ),
        AppendOutcome::Duplicate { .. } => panic!("new client id"),
    }
    assert!(lease().await.is_empty(), "nothing queued after 7 days");
    let _ = conversation;
}

/// A link is offered once per event key (the key is committed with the offer), and expires with the clock.
pub async fn link_offers_are_keyed_and_expire(store: Store) {
    let (_, contact) = site_and_contact(&store, 5).await;
    let expires_at = store.clock().now_ms() + 600_000;
    store.create_link("nonce-5", &contact.id, "ABCDE", expires_at).await.expect("link");
    let offered = store.offer_link("nonce-5", "psid-5", "referral:5", 60_000).await.expect("offer");
    assert!(matches!(offered, OfferOutcome::Offered(ref row) if row.contact_id == contact.id));
    let again = store.offer_link("nonce-5", "psid-5", "referral:5", 60_000).await.expect("offer");
    assert!(matches!(again, OfferOutcome::Duplicate), "the same event is applied once");
    let other = store.offer_link("nonce-5", "psid-other", "referral:other", 60_000).await.expect("offer");
    assert!(matches!(other, OfferOutcome::Unavailable), "offered to its first presenter only");
    assert!(store.pending_offer("nonce-5", "psid-5").await.expect("query").is_some());
    assert!(store.clock().advance(Duration::from_secs(61)));
    assert!(store.pending_offer("nonce-5", "psid-5").await.expect("query").is_none(), "the offer expired");
    let accepted = store.accept_link("nonce-5", "psid-5", None, store.clock().now_ms(), None).await;
    assert!(accepted.expect("accept").is_none(), "an expired offer binds nothing");
}
