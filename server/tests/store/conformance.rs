//! The store's contract, one test function per area, each run against both engines: [`conformance!`] instantiates
//! every function once as `sqlite::<name>` (a temp-file database) and once as `postgres::<name>` (a fresh database
//! on the test cluster), and [`conformance_on_store!`] does the same for the cases in `support/store_conformance.rs`
//! (`sqlite_cases::…`, `postgres_cases::…`). A backend passes when both copies pass; no test is written twice.

use std::collections::BTreeSet;
use std::time::Duration;

use parley::clock::Clock;
use parley::identity::{IdentitySecret, Verified};
use parley::messenger::policy::{MirrorPolicy, RESPONSE_WINDOW_MS};
use parley::store::models::{ContactContext, PageRow};
use parley::store::{AppendOutcome, DEFAULT_WORKSPACE, NewMessage, OfferOutcome, Store, StoreError};
use protocol::{Author, Channel, ConversationStatus, DeliveryState, Event, EventKind, Party};

/// Which engine a test instance runs on.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one engine (the SQLite file lives as long as this).
pub struct Db {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Engine {
    pub async fn database(self) -> Db {
        match self {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("parley.db").display());
                Db { url, _dir: Some(dir) }
            }
            Engine::Postgres => Db { url: testpg::database().await.url, _dir: None },
        }
    }
}

impl Db {
    /// A store (its own connection pool) on this database.
    pub async fn open(&self, clock: &Clock) -> Store {
        Store::connect_with_clock(&self.url, 8, clock.clone()).await.expect("store opens")
    }
}

async fn fresh(engine: Engine) -> (Db, Store, Clock) {
    let clock = Clock::adjustable();
    let db = engine.database().await;
    let store = db.open(&clock).await;
    (db, store, clock)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Engine::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Engine::Postgres).await
            })*
        }
    };
}

conformance!(
    sites_and_identity_settings,
    agents_and_sessions,
    contacts_are_inserted_or_got,
    appends_dedupe_by_client_id_and_read_back,
    appends_started_together_commit_in_the_order_they_started_where_the_engine_says_so,
    a_visitor_resume_reads_contact_conversation_and_log_at_once,
    an_append_returns_the_inbox_row_its_commit_left,
    read_cursors_and_status,
    seq_is_gap_free_under_concurrent_appends_from_two_pools,
    links_are_offered_accepted_refused_and_expire,
    outbox_is_leased_claimed_once_and_settled,
    outbox_claims_from_two_pools_are_disjoint,
    webhook_deliveries_are_quarantined_and_replayed,
    webhook_deliveries_land_in_one_batch_in_order,
    webhook_deliveries_are_marked_processed_in_one_batch,
    attachments_are_stored_queued_and_claimed,
    unbinding_fails_pending_sends,
    workspaces_own_sites_agents_conversations_and_files,
    pages_are_connected_per_site_or_workspace,
    an_existing_database_upgrades_into_the_default_workspace,
    an_existing_event_log_is_kept_when_it_stops_being_clustered,
);

/// The same for the cases of `support/store_conformance.rs`, which take a fresh store.
macro_rules! conformance_on_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite_cases {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_db, store, _clock) = super::fresh(super::Engine::Sqlite).await;
                crate::cases::$name(store.clone()).await;
                store.close().await;
            })*
        }
        mod postgres_cases {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_db, store, _clock) = super::fresh(super::Engine::Postgres).await;
                crate::cases::$name(store.clone()).await;
                store.close().await;
            })*
        }
    };
}

conformance_on_store!(
    appends_are_idempotent,
    concurrent_posts_are_gap_free,
    read_cursors_and_unread,
    a_customer_message_reopens,
    mirrored_replies_follow_the_windows,
    link_offers_are_keyed_and_expire,
);

fn visitor(client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        client_id: client_id.into(),
        body: body.into(),
        author: Author::Visitor,
        agent_id: None,
        channel: Channel::Web,
        external_id: None,
        attachments: Vec::new(),
        messenger_action_at: None,
        mirror: None,
    }
}

fn agent(client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        author: Author::Agent { name: "Ada".into() },
        mirror: Some(MirrorPolicy::default()),
        ..visitor(client_id, body)
    }
}

fn created(outcome: AppendOutcome) -> (String, u64, Vec<Event>) {
    match outcome {
        AppendOutcome::Created { conversation_id, seq, events, .. } => (conversation_id, seq, events),
        AppendOutcome::Duplicate { .. } => panic!("expected a new message, got a duplicate"),
    }
}

/// A site and one web visitor's contact on it.
async fn site_and_contact(store: &Store, token: &[u8]) -> (String, String) {
    let site = store.create_site("k1", "Shop", &["https://shop.example".into()], "Hi").await.expect("site");
    let contact =
        store.contact_for_token(&site.id, token, "Visitor 1", &ContactContext::default()).await.expect("contact");
    (site.id, contact.id)
}

async fn sites_and_identity_settings(engine: Engine) {
    let (_db, store, clock) = fresh(engine).await;
    assert_eq!(store.oldest_site_id().await.expect("oldest"), None);
    let a = store.create_site("a", "A", &["https://a.example".into()], "Hello").await.expect("a");
    clock.advance(Duration::from_millis(5));
    let b = store.create_site("b", "B", &[], "").await.expect("b");
    assert!(matches!(store.create_site("a", "again", &[], "").await, Err(StoreError::Conflict(_))));
    let found = store.site_by_key("a").await.expect("by key").expect("exists");
    assert_eq!((found.id.as_str(), found.greeting.as_str()), (a.id.as_str(), "Hello"));
    assert_eq!(found.allowed_origins(), vec!["https://a.example"]);
    assert!(store.site_by_key("nope").await.expect("by key").is_none());
    let keys: Vec<String> = store.sites().await.expect("sites").into_iter().map(|s| s.key).collect();
    assert_eq!(keys, vec!["a", "b"], "oldest first");
    assert_eq!(store.oldest_site_id().await.expect("oldest"), Some(a.id.clone()));
    store.set_allowed_origins(&b.id, &["https://b.example".into(), "https://c.example".into()]).await.expect("set");
    let b2 = store.site_by_key("b").await.expect("b").expect("b");
    assert_eq!(b2.allowed_origins(), vec!["https://b.example", "https://c.example"]);

    let identity = store.site_identity(&a.id).await.expect("identity");
    assert!(identity.secret.is_none() && !identity.required);
    let secret = IdentitySecret::generate();
    assert!(store.set_identity_secret("a", Some(&secret)).await.expect("secret"));
    assert!(store.set_identity_required("a", true).await.expect("required"));
    assert!(!store.set_identity_required("nope", true).await.expect("no site"));
    let identity = store.site_identity(&a.id).await.expect("identity");
    assert_eq!(identity.secret.as_ref().map(IdentitySecret::expose), Some(secret.expose()));
    assert!(identity.required);
    assert!(store.set_identity_secret("a", None).await.expect("clear"));
    assert!(store.site_identity(&a.id).await.expect("identity").secret.is_none());
}

async fn agents_and_sessions(engine: Engine) {
    let (_db, store, clock) = fresh(engine).await;
    let ada = store.create_agent("Ada@Example.com", "Ada", "hash1").await.expect("agent");
    assert!(
        matches!(store.create_agent("ada@example.com", "Other", "h").await, Err(StoreError::Conflict(_))),
        "emails are unique ignoring case"
    );
    let found = store.agent_by_email("ADA@example.com").await.expect("by email").expect("found ignoring case");
    assert_eq!(found.id, ada.id);
    let now = clock.now_ms();
    store.create_session(b"token-1", &ada.id, now + 60_000).await.expect("session");
    store.create_session(b"token-2", &ada.id, now + 1_000).await.expect("session");
    assert_eq!(store.agent_for_session(b"token-1").await.expect("s1").map(|a| a.id), Some(ada.id.clone()));
    clock.advance(Duration::from_secs(2));
    assert!(store.agent_for_session(b"token-2").await.expect("s2").is_none(), "an expired session finds no one");
    store.delete_session(b"token-1").await.expect("delete");
    assert!(store.agent_for_session(b"token-1").await.expect("s1").is_none());

    store.create_session(b"token-3", &ada.id, clock.now_ms() + 60_000).await.expect("session");
    assert!(store.set_agent_password("ada@EXAMPLE.com", "hash2").await.expect("set password"));
    assert!(store.agent_for_session(b"token-3").await.expect("s3").is_none(), "a new password ends sessions");
    assert_eq!(store.agent_by_email("ada@example.com").await.expect("a").expect("a").password_hash, "hash2");
    assert!(!store.set_agent_password("nobody@example.com", "h").await.expect("no agent"));
}

async fn contacts_are_inserted_or_got(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let site = store.create_site("k", "S", &[], "").await.expect("site");
    let other = store.create_site("k2", "S2", &[], "").await.expect("site");
    let ctx = ContactContext { page_url: Some("https://shop.example/a".into()), ..ContactContext::default() };
    // Eight concurrent first uses of one token end with one contact.
    let ids: BTreeSet<String> = futures_util::future::join_all((0..8).map(|_| {
        let (store, site_id, ctx) = (store.clone(), site.id.clone(), ctx.clone());
        async move { store.contact_for_token(&site_id, b"tok", "Visitor", &ctx).await.expect("contact").id }
    }))
    .await
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1, "one contact for one token");
    let id = ids.into_iter().next().expect("one");
    assert_eq!(id, parley::store::web_contact_id(&site.id, b"tok"));
    assert!(store.web_token_taken(b"tok").await.expect("taken"));
    assert!(!store.web_token_taken(b"other").await.expect("not taken"));
    assert!(matches!(store.contact_for_token(&other.id, b"tok", "Visitor", &ctx).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.contact_by_token(&site.id, b"tok").await.expect("by token").map(|c| c.id), Some(id.clone()));
    assert!(store.contact_by_token(&other.id, b"tok").await.expect("other site").is_none());

    let moved = ContactContext {
        referrer: Some("https://search.example".into()),
        utc_offset_minutes: Some(-120),
        ..ContactContext::default()
    };
    store.update_contact_context(&id, &moved).await.expect("context");
    let contact = store.contact(&id).await.expect("contact").expect("exists");
    assert_eq!(contact.page_url.as_deref(), Some("https://shop.example/a"), "unsent fields keep their value");
    assert_eq!(contact.referrer.as_deref(), Some("https://search.example"));
    assert_eq!(contact.utc_offset_minutes, Some(-120));

    let who = Verified { id: "cust-7".into(), name: Some("Grace".into()), email: Some("g@example.com".into()) };
    store.record_identity(&id, &who).await.expect("identity");
    assert_eq!(store.contact(&id).await.expect("contact").expect("exists").label, "Grace");
}

/// Several appends started at once (a visitor's pipelined sends, `join_all`) each land once, gap-free; where the
/// engine promises `writes_in_order` (SQLite's one writer), in the order they started, which the visitor socket
/// relies on to post a client's pipelined sends together.
async fn appends_started_together_commit_in_the_order_they_started_where_the_engine_says_so(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    created(store.append_message(&contact_id, &site_id, visitor("c0", "first")).await.expect("append"));
    let client_ids: Vec<String> = (1..=20).map(|i| format!("c{i}")).collect();
    let outcomes = futures_util::future::join_all(
        client_ids.iter().map(|c| store.append_message(&contact_id, &site_id, visitor(c, "together"))),
    )
    .await;
    let seqs: Vec<u64> = outcomes.into_iter().map(|o| created(o.expect("append")).1).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (2..=21).collect::<Vec<u64>>(), "each once, gap-free");
    assert_eq!(store.writes_in_order(), matches!(engine, Engine::Sqlite));
    if store.writes_in_order() {
        assert_eq!(seqs, sorted, "committed in the order they started");
    }
}

async fn appends_dedupe_by_client_id_and_read_back(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    assert!(store.conversation_for_contact(&contact_id).await.expect("none yet").is_none());
    let (conversation_id, seq1, events) =
        created(store.append_message(&contact_id, &site_id, visitor("c1", "hello")).await.expect("append"));
    assert_eq!((seq1, events.len()), (1, 1));
    let (_, seq2, _) = created(store.append_message(&contact_id, &site_id, visitor("c2", "again")).await.expect("2"));
    assert_eq!(seq2, 2);
    match store.append_message(&contact_id, &site_id, visitor("c1", "hello (resent)")).await.expect("dup") {
        AppendOutcome::Duplicate { seq, message, conversation_id: c } => {
            assert_eq!((seq, message.body.as_str(), c.as_str()), (1, "hello", conversation_id.as_str()));
        }
        AppendOutcome::Created { .. } => panic!("a repeated client id must not be stored twice"),
    }
    // Two concurrent sends with one client id: one message.
    let outcomes = futures_util::future::join_all((0..4).map(|_| {
        let (store, contact_id, site_id) = (store.clone(), contact_id.clone(), site_id.clone());
        async move { store.append_message(&contact_id, &site_id, visitor("c3", "race")).await.expect("append") }
    }))
    .await;
    let created_count = outcomes.iter().filter(|o| matches!(o, AppendOutcome::Created { .. })).count();
    assert_eq!(created_count, 1, "concurrent repeats of one client id store it once");

    let mut from_messenger = visitor("m1", "from messenger");
    from_messenger.external_id = Some("mid.1".into());
    from_messenger.channel = Channel::Messenger;
    created(store.append_message(&contact_id, &site_id, from_messenger.clone()).await.expect("external"));
    from_messenger.client_id = "m1-redelivered".into();
    assert!(matches!(
        store.append_message(&contact_id, &site_id, from_messenger).await.expect("redelivery"),
        AppendOutcome::Duplicate { seq: 4, .. }
    ));
    let (c, message, seq) = store.message_by_external_id("mid.1").await.expect("by mid").expect("found");
    assert_eq!((c.as_str(), message.body.as_str(), seq), (conversation_id.as_str(), "from messenger", 4));

    let events = store.events_after(&conversation_id, 0).await.expect("events");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(store.events_after(&conversation_id, 3).await.expect("tail").len(), 1);
    let (message, seq) = store.message_by_client_id(&conversation_id, "c2").await.expect("by client id").expect("c2");
    assert_eq!((message.body.as_str(), seq), ("again", 2));
    assert!(store.message_by_client_id(&conversation_id, "nope").await.expect("none").is_none());

    let conversation = store.conversation(&conversation_id).await.expect("conversation").expect("exists");
    assert_eq!((conversation.last_seq, conversation.contact_id.as_str()), (4, contact_id.as_str()));
    let summary = store.summary(&conversation_id).await.expect("summary").expect("exists");
    assert_eq!((summary.unread, summary.last_seq, summary.site_key.as_str()), (4, 4, "k1"));
    assert_eq!(summary.last_message.as_deref(), Some("from messenger"));
    assert_eq!(store.summaries().await.expect("summaries").len(), 1);
    let recent = store.recent_messages(&conversation_id, 2).await.expect("recent");
    assert_eq!(recent.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["race", "from messenger"]);
}

/// `visitor_resume` returns what the four single reads a `hello` used to make return: the site's identity settings
/// (also when no contact holds the token), the token's contact on that site only, its conversation, and the log
/// after the client's `seq` — the whole log, flagged `reset`, when the client claims a `seq` beyond it.
async fn a_visitor_resume_reads_contact_conversation_and_log_at_once(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let nothing = store.visitor_resume("no-such-site", b"t", 0).await.expect("unknown site");
    assert!(nothing.contact.is_none() && nothing.conversation.is_none() && nothing.events.is_empty());
    assert!(nothing.identity.secret.is_none() && !nothing.identity.required);

    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    let other = store.create_site("k2", "Other", &[], "").await.expect("other site");
    let secret = IdentitySecret::generate();
    assert!(store.set_identity_secret("k1", Some(&secret)).await.expect("secret"));
    assert!(store.set_identity_required("k1", true).await.expect("required"));

    let stranger = store.visitor_resume(&site_id, b"someone else", 0).await.expect("unknown token");
    assert!(stranger.contact.is_none() && stranger.conversation.is_none());
    assert_eq!(stranger.identity.secret.as_ref().map(IdentitySecret::expose), Some(secret.expose()));
    assert!(stranger.identity.required);
    let elsewhere = store.visitor_resume(&other.id, b"t", 0).await.expect("other site");
    assert!(elsewhere.contact.is_none(), "a token names a contact on its own site only");
    assert!(!elsewhere.identity.required, "the other site's own settings");

    let fresh_contact = store.visitor_resume(&site_id, b"t", 0).await.expect("no conversation yet");
    assert_eq!(fresh_contact.contact.map(|c| c.id), Some(contact_id.clone()));
    assert!(fresh_contact.conversation.is_none() && fresh_contact.events.is_empty() && !fresh_contact.reset);

    let (conversation_id, _, _) =
        created(store.append_message(&contact_id, &site_id, visitor("c1", "one")).await.expect("1"));
    for (i, body) in ["two", "three"].iter().enumerate() {
        created(store.append_message(&contact_id, &site_id, visitor(&format!("c{}", i + 2), body)).await.expect("n"));
    }
    store.mark_read(&conversation_id, Party::Agent, 2).await.expect("agent read");
    let single = store.conversation_for_contact(&contact_id).await.expect("conversation").expect("exists");
    let resumed = store.visitor_resume(&site_id, b"t", 2).await.expect("resume");
    let contact = resumed.contact.expect("contact");
    assert_eq!(
        (contact.id.as_str(), contact.site_id.as_str(), contact.label.as_str()),
        (&*contact_id, &*site_id, "Visitor 1")
    );
    let conversation = resumed.conversation.expect("conversation");
    assert_eq!(
        (conversation.id.as_str(), conversation.site_id.as_str(), conversation.contact_id.as_str()),
        (single.id.as_str(), single.site_id.as_str(), single.contact_id.as_str())
    );
    assert_eq!(
        (conversation.status, conversation.last_seq, conversation.agent_read_seq, conversation.visitor_read_seq),
        (single.status, single.last_seq, single.agent_read_seq, single.visitor_read_seq)
    );
    assert_eq!(conversation.last_seq, 4, "three messages and the agent's read receipt");
    let seqs = |events: &[Event]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&resumed.events), vec![3, 4]);
    assert_eq!(seqs(&resumed.events), seqs(&store.events_after(&conversation_id, 2).await.expect("log")));
    assert!(!resumed.reset);
    let caught_up = store.visitor_resume(&site_id, b"t", 4).await.expect("caught up");
    assert!(caught_up.events.is_empty() && !caught_up.reset);
    let ahead = store.visitor_resume(&site_id, b"t", 9).await.expect("ahead of the log");
    assert!(ahead.reset, "a client ahead of the log is started over");
    assert_eq!(seqs(&ahead.events), vec![1, 2, 3, 4]);
}

/// `append_message_summarized` returns, with a new message, the conversation's inbox row exactly as the commit left
/// it (the row a read after it returns), and no row for a duplicate; a reopening message's row is open again.
async fn an_append_returns_the_inbox_row_its_commit_left(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    for (n, client_id) in ["s1", "s2"].into_iter().enumerate() {
        let (outcome, row) = store
            .append_message_summarized(&contact_id, &site_id, visitor(client_id, client_id))
            .await
            .expect("append");
        let (conversation_id, seq, _) = created(outcome);
        let row = row.expect("a new message comes with its row");
        let read = store.summary(&conversation_id).await.expect("summary").expect("exists");
        assert_eq!(format!("{row:?}"), format!("{read:?}"), "the returned row is the stored one");
        assert_eq!((row.id.as_str(), row.contact_id.as_str()), (conversation_id.as_str(), contact_id.as_str()));
        assert_eq!(
            (row.last_seq, row.unread, row.last_message.as_deref()),
            (seq as i64, n as i64 + 1, Some(client_id))
        );
    }
    let (outcome, row) =
        store.append_message_summarized(&contact_id, &site_id, visitor("s1", "again")).await.expect("duplicate");
    assert!(matches!(outcome, AppendOutcome::Duplicate { seq: 1, .. }));
    assert!(row.is_none(), "a duplicate changed nothing, so it has no row");

    let conversation = store.conversation_for_contact(&contact_id).await.expect("reads").expect("exists");
    store.set_status(&conversation.id, ConversationStatus::Resolved, None).await.expect("resolved");
    let (outcome, row) =
        store.append_message_summarized(&contact_id, &site_id, visitor("s3", "back")).await.expect("reopens");
    let (_, seq, events) = created(outcome);
    let row = row.expect("row");
    assert_eq!((row.status.as_str(), row.last_seq), ("open", (seq + 1) as i64), "the row after the reopen: {events:?}");
}

async fn read_cursors_and_status(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    let (conversation_id, _, _) =
        created(store.append_message(&contact_id, &site_id, visitor("a", "1")).await.expect("1"));
    created(store.append_message(&contact_id, &site_id, visitor("b", "2")).await.expect("2"));
    let read = store.mark_read(&conversation_id, Party::Agent, 99).await.expect("read").expect("moved");
    assert!(
        matches!(read.kind, EventKind::Read { by: Party::Agent, up_to_seq: 2 }),
        "clamped to the last message: {read:?}"
    );
    assert_eq!(read.seq, 3);
    assert!(store.mark_read(&conversation_id, Party::Agent, 1).await.expect("back").is_none(), "never moves back");
    assert!(store.mark_read(&conversation_id, Party::Agent, 2).await.expect("same").is_none());
    assert_eq!(store.summary(&conversation_id).await.expect("s").expect("s").unread, 0);

    let resolved = store
        .set_status(&conversation_id, ConversationStatus::Resolved, Some("Ada".into()))
        .await
        .expect("resolve")
        .expect("changed");
    assert_eq!(resolved.seq, 4);
    assert!(store.set_status(&conversation_id, ConversationStatus::Resolved, None).await.expect("again").is_none());
    let (_, seq, events) = created(store.append_message(&contact_id, &site_id, visitor("c", "3")).await.expect("3"));
    assert_eq!(seq, 5);
    assert!(
        events.iter().any(|e| matches!(e.kind, EventKind::Status { status: ConversationStatus::Open, .. })),
        "a visitor message reopens a resolved conversation: {events:?}"
    );
    let conversation = store.conversation(&conversation_id).await.expect("c").expect("c");
    assert_eq!(
        (conversation.status, conversation.last_seq, conversation.agent_read_seq),
        (ConversationStatus::Open, 6, 2)
    );
}

async fn seq_is_gap_free_under_concurrent_appends_from_two_pools(engine: Engine) {
    let clock = Clock::adjustable();
    let db = engine.database().await;
    // Two stores with their own pools on one database: two nodes posting into one conversation at once.
    let (node_a, node_b) = (db.open(&clock).await, db.open(&clock).await);
    let (site_id, contact_id) = site_and_contact(&node_a, b"t").await;
    const EACH: usize = 25;
    let writers = [("a", node_a.clone()), ("b", node_b.clone())].into_iter().flat_map(|(node, store)| {
        let (site_id, contact_id) = (site_id.clone(), contact_id.clone());
        (0..EACH).map(move |i| {
            let (store, site_id, contact_id) = (store.clone(), site_id.clone(), contact_id.clone());
            tokio::spawn(async move {
                let body = format!("{node}{i}");
                created(store.append_message(&contact_id, &site_id, visitor(&body, &body)).await.expect("append")).1
            })
        })
    });
    let mut seqs = Vec::new();
    for writer in writers.collect::<Vec<_>>() {
        seqs.push(writer.await.expect("writer"));
    }
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=u64::try_from(2 * EACH).expect("small")).collect();
    assert_eq!(seqs, expected, "every append got its own seq, with no gap");
    let conversation = node_b.conversation_for_contact(&contact_id).await.expect("c").expect("c");
    let log = node_b.events_after(&conversation.id, 0).await.expect("log");
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), expected, "the log agrees");
    assert_eq!(conversation.last_seq, expected.len() as u64);
}

async fn links_are_offered_accepted_refused_and_expire(engine: Engine) {
    let (_db, store, clock) = fresh(engine).await;
    let (site_id, contact_id) = site_and_contact(&store, b"t").await;
    created(store.append_message(&contact_id, &site_id, visitor("a", "hi")).await.expect("append"));
    let now = clock.now_ms();
    store.create_link("n1", &contact_id, "CODE1", now + 60_000).await.expect("link");
    let OfferOutcome::Offered(row) = store.offer_link("n1", "psid-1", "key-1", 30_000).await.expect("offer") else {
        panic!("a live link is offered to its first presenter")
    };
    assert_eq!(row.contact_id, contact_id);
    assert!(matches!(store.offer_link("n1", "psid-1", "key-1", 30_000).await.expect("dup"), OfferOutcome::Duplicate));
    assert!(matches!(
        store.offer_link("n1", "psid-2", "key-2", 30_000).await.expect("other"),
        OfferOutcome::Unavailable
    ));
    assert!(store.pending_offer("n1", "psid-1").await.expect("pending").is_some());
    assert_eq!(store.link_answered("n1", "psid-1").await.expect("answered"), Some(false));
    let accepted = store
        .accept_link("n1", "psid-1", Some("Grace".into()), clock.now_ms(), Some("recap"))
        .await
        .expect("accept")
        .expect("accepted");
    assert_eq!(accepted.contact_id, contact_id);
    let (_, event) = accepted.event.expect("the link is logged");
    assert!(matches!(event.kind, EventKind::Channel { channel: Channel::Messenger, linked: true, .. }));
    assert_eq!(store.contact_by_psid("psid-1").await.expect("by psid").map(|c| c.id), Some(contact_id.clone()));
    assert_eq!(store.link_answered("n1", "psid-1").await.expect("answered"), Some(true));
    assert!(store.accept_link("n1", "psid-1", None, clock.now_ms(), None).await.expect("twice").is_none());
    let recap = store.lease_outbox_heads(clock.now_ms(), 60_000, 0, 10, &[]).await.expect("lease");
    assert_eq!(recap.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), vec!["recap"], "the recap is queued");

    store.create_link("n2", &contact_id, "CODE2", clock.now_ms() + 60_000).await.expect("link 2");
    assert!(matches!(
        store.offer_code("CODE2", "psid-3", "key-3", 30_000).await.expect("code"),
        OfferOutcome::Offered(_)
    ));
    assert!(store.refuse_link("n2", "psid-3").await.expect("refuse"));
    assert!(!store.refuse_link("n2", "psid-3").await.expect("refuse twice"));
    assert!(store.accept_link("n2", "psid-3", None, clock.now_ms(), None).await.expect("after no").is_none());

    store.create_link("n3", &contact_id, "CODE3", clock.now_ms() + 1_000).await.expect("link 3");
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        store.offer_link("n3", "psid-4", "key-4", 30_000).await.expect("expired"),
        OfferOutcome::Unavailable
    ));

    // A contact keeps at most MAX_LIVE_LINKS unused links: the oldest goes.
    for i in 0..=parley::store::MAX_LIVE_LINKS {
        clock.advance(Duration::from_millis(2));
        store.create_link(&format!("m{i}"), &contact_id, "C", clock.now_ms() + 60_000).await.expect("link");
    }
    assert!(matches!(
        store.offer_link("m0", "psid-5", "key-5", 30_000).await.expect("oldest"),
        OfferOutcome::Unavailable
    ));
    assert!(matches!(store.offer_link("m1", "psid-5", "key-6", 30_000).await.expect("kept"), OfferOutcome::Offered(_)));
}

/// A Messenger-linked contact whose 24 h window is open, and its conversation.
async fn messenger_contact(store: &Store, clock: &Clock, psid: &str) -> (String, String) {
    let site_id = match store.oldest_site_id().await.expect("site") {
        Some(id) => id,
        None => store.create_site("m", "M", &[], "").await.expect("site").id,
    };
    let contact = store.create_messenger_contact(&site_id, psid, "Customer").await.expect("contact");
    store.record_messenger_action(&contact.id, clock.now_ms()).await.expect("action");
    (site_id, contact.id)
}

async fn outbox_is_leased_claimed_once_and_settled(engine: Engine) {
    let (_db, store, clock) = fresh(engine).await;
    let (site_id, contact_id) = messenger_contact(&store, &clock, "psid-1").await;
    let (conversation_id, _, _) =
        created(store.append_message(&contact_id, &site_id, agent("r1", "first reply")).await.expect("reply"));
    created(store.append_message(&contact_id, &site_id, agent("r2", "second reply")).await.expect("reply"));
    let now = clock.now_ms();
    let leased = store.lease_outbox_heads(now, 10_000, 5_000, 10, &[]).await.expect("lease");
    assert_eq!(leased.len(), 1, "one send per customer at a time: {leased:?}");
    let head = leased.into_iter().next().expect("head");
    assert_eq!((head.body.as_str(), head.messaging_type.as_str()), ("first reply", "RESPONSE"));
    let lease_id = head.lease_id.clone().expect("leased");
    assert!(store.lease_outbox_heads(now, 10_000, 5_000, 10, &[]).await.expect("again").is_empty(), "held");
    assert!(
        store.lease_outbox_heads(now, 10_000, 5_000, 10, &["psid-1".into()]).await.expect("busy").is_empty(),
        "busy customers are skipped"
    );
    // The lease runs out, and the row waits `reconcile_ms` more before anyone may send it again.
    assert_eq!(store.next_outbox_eligible(5_000, &[]).await.expect("next"), Some(now + 15_000));

    store.outbox_retry(head.id, "someone-else", now + 1_000, "boom").await.expect("stale retry");
    assert_eq!(
        store.next_outbox_eligible(5_000, &[]).await.expect("next"),
        Some(now + 15_000),
        "a stale lease is ignored"
    );
    store.outbox_retry(head.id, &lease_id, now + 1_000, "boom").await.expect("retry");
    assert_eq!(store.next_outbox_eligible(5_000, &[]).await.expect("next"), Some(now + 1_000));
    assert!(store.lease_outbox_heads(now, 10_000, 5_000, 10, &[]).await.expect("backoff").is_empty());
    clock.advance(Duration::from_millis(1_500));
    let retried = store.lease_outbox_heads(clock.now_ms(), 10_000, 5_000, 10, &[]).await.expect("lease");
    assert_eq!(retried.iter().map(|r| (r.id, r.attempts)).collect::<Vec<_>>(), vec![(head.id, 1)]);

    let metadata = parley::store::outbox_metadata(&retried[0]);
    assert_eq!(store.outbox_for_message(&metadata).await.expect("by metadata"), Some(head.id));
    let (c, sent) = store.outbox_sent(head.id, "mid.sent.1").await.expect("sent").expect("settled");
    assert_eq!(c, conversation_id);
    assert!(matches!(sent.kind, EventKind::Delivery { state: DeliveryState::Sent, .. }));
    assert!(store.outbox_sent(head.id, "mid.sent.1").await.expect("twice").is_none(), "settling is idempotent");
    assert!(store.outbox_for_message(&metadata).await.expect("settled").is_none());

    let next = store.lease_outbox_heads(clock.now_ms(), 10_000, 5_000, 10, &[]).await.expect("next head");
    assert_eq!(next.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), vec!["second reply"]);
    let (_, failed) = store.outbox_failed(next[0].id, "refused", DeliveryState::Failed).await.expect("f").expect("f");
    assert!(matches!(failed.kind, EventKind::Delivery { state: DeliveryState::Failed, .. }));
    assert_eq!(store.next_outbox_eligible(5_000, &[]).await.expect("empty"), None);

    let mids = store.sent_mids_until("psid-1", clock.now_ms()).await.expect("mids");
    assert_eq!(mids, vec!["mid.sent.1"]);
    let delivered = store.messenger_delivered(&mids).await.expect("delivered");
    assert_eq!(delivered.len(), 1);
    assert!(store.messenger_delivered(&mids).await.expect("again").is_empty(), "a delivery applies once");
    let read = store.messenger_read(&contact_id, clock.now_ms()).await.expect("read").expect("moved");
    assert!(matches!(read.1.kind, EventKind::Read { by: Party::Visitor, up_to_seq: 1 }), "{read:?}");

    // Outside the 24 h window a reply is not queued, and says why.
    clock.advance(Duration::from_millis(u64::try_from(RESPONSE_WINDOW_MS).expect("ms") + 1));
    let (_, _, events) = created(store.append_message(&contact_id, &site_id, agent("r3", "late")).await.expect("late"));
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::Delivery { state: DeliveryState::NotSent, .. })));
    assert!(store.lease_outbox_heads(clock.now_ms(), 10_000, 0, 10, &[]).await.expect("none").is_empty());
}

async fn outbox_claims_from_two_pools_are_disjoint(engine: Engine) {
    let clock = Clock::adjustable();
    let db = engine.database().await;
    let (node_a, node_b) = (db.open(&clock).await, db.open(&clock).await);
    const CUSTOMERS: usize = 20;
    for i in 0..CUSTOMERS {
        let (site_id, contact_id) = messenger_contact(&node_a, &clock, &format!("psid-{i}")).await;
        created(node_a.append_message(&contact_id, &site_id, agent(&format!("r{i}"), "reply")).await.expect("reply"));
    }
    let now = clock.now_ms();
    let claim = |store: Store| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..CUSTOMERS {
                got.extend(
                    store.lease_outbox_heads(now, 60_000, 0, 1, &[]).await.expect("lease").into_iter().map(|r| r.id),
                );
            }
            got
        })
    };
    let (a, b) = (claim(node_a.clone()), claim(node_b.clone()));
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    let all: BTreeSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(all.len(), a.len() + b.len(), "no row was leased by both nodes: {a:?} {b:?}");
    assert_eq!(all.len(), CUSTOMERS, "every row was leased");
}

async fn webhook_deliveries_are_quarantined_and_replayed(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let first = store.insert_webhook_delivery(b"{\"a\":1}").await.expect("insert");
    let second = store.insert_webhook_delivery(&[0xff, 0x00, 0xfe]).await.expect("binary body");
    assert!(second > first, "ids grow");
    let waiting = store.unprocessed_webhook_deliveries(10).await.expect("waiting");
    assert_eq!(waiting, vec![(first, b"{\"a\":1}".to_vec()), (second, vec![0xff, 0x00, 0xfe])]);
    assert!(!store.webhook_delivery_failed(second, "bad", 2).await.expect("fail 1"));
    assert!(store.webhook_delivery_failed(second, "bad again", 2).await.expect("fail 2"), "quarantined at max");
    assert_eq!(store.quarantined_delivery_count().await.expect("count"), 1);
    let quarantined = store.quarantined_deliveries().await.expect("list");
    assert_eq!((quarantined[0].id, quarantined[0].attempts), (second, 2));
    assert_eq!(quarantined[0].error.as_deref(), Some("bad again"));
    assert_eq!(store.unprocessed_webhook_deliveries(10).await.expect("w").len(), 1, "quarantined ones wait");
    assert_eq!(store.replay_quarantined(Some(first)).await.expect("not quarantined"), 0);
    assert_eq!(store.replay_quarantined(None).await.expect("replay"), 1);
    assert_eq!(store.unprocessed_webhook_deliveries(10).await.expect("w").len(), 2);
    store.mark_webhook_processed(first, None).await.expect("processed");
    store.mark_webhook_processed(second, Some("ignored")).await.expect("processed");
    assert!(store.unprocessed_webhook_deliveries(10).await.expect("none").is_empty());
    assert_eq!(store.quarantined_delivery_count().await.expect("count"), 0);
}

/// A batch lands whole, in the order given, byte for byte, also across the statements it is split into; an empty
/// batch stores nothing. Reading after a cursor returns only the later deliveries still waiting.
async fn webhook_deliveries_land_in_one_batch_in_order(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    store.insert_webhook_deliveries(&[]).await.expect("an empty batch");
    let bodies: Vec<Vec<u8>> = (0..1201_u32)
        .map(|n| if n % 100 == 7 { vec![0xff, 0x00, (n % 256) as u8] } else { format!("{{\"n\":{n}}}").into_bytes() })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    store.insert_webhook_deliveries(&refs).await.expect("a batch over three statements");
    let waiting = store.unprocessed_webhook_deliveries(5000).await.expect("waiting");
    let stored: Vec<Vec<u8>> = waiting.iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(stored, bodies, "every body, in order, once");
    assert!(waiting.windows(2).all(|w| w[0].0 < w[1].0), "ids grow in the order given");
    // Read from a cursor: only later ids, still waiting ones, at most `limit`.
    store.mark_webhook_processed(waiting[600].0, None).await.expect("processed");
    let after = store.unprocessed_webhook_deliveries_after(waiting[599].0, 5000).await.expect("after");
    assert_eq!(after, waiting[601..].to_vec(), "after the cursor, the processed one left out");
    let two = store.unprocessed_webhook_deliveries_after(waiting[599].0, 2).await.expect("limited");
    assert_eq!(two, waiting[601..603].to_vec());
    let last = waiting.last().map(|(id, _)| *id).unwrap_or_default();
    assert!(store.unprocessed_webhook_deliveries_after(last, 10).await.expect("none after").is_empty());
}

/// Marking several deliveries processed at once marks exactly those (each with its own reason, or none) and
/// leaves the others waiting; an empty batch changes nothing.
async fn webhook_deliveries_are_marked_processed_in_one_batch(engine: Engine) {
    let (db, store, _clock) = fresh(engine).await;
    let bodies: Vec<Vec<u8>> = (0..5_u32).map(|n| format!("{{\"n\":{n}}}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    store.insert_webhook_deliveries(&refs).await.expect("stored");
    let ids: Vec<i64> =
        store.unprocessed_webhook_deliveries(10).await.expect("waiting").iter().map(|(id, _)| *id).collect();
    store.mark_webhooks_processed(&[]).await.expect("an empty batch");
    assert_eq!(store.unprocessed_webhook_deliveries(10).await.expect("waiting").len(), 5);
    store
        .mark_webhooks_processed(&[(ids[0], None), (ids[2], Some("unreadable payload".into())), (ids[4], None)])
        .await
        .expect("processed");
    let waiting: Vec<i64> =
        store.unprocessed_webhook_deliveries(10).await.expect("waiting").iter().map(|(id, _)| *id).collect();
    assert_eq!(waiting, vec![ids[1], ids[3]], "exactly the others still wait");
    let sql = "select id, error from webhook_deliveries where processed_at is not null order by id";
    let marked: Vec<(i64, Option<String>)> = match engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("read connection");
            sqlx::query_as(sql).fetch_all(&pool).await.expect("read")
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("read connection");
            sqlx::query_as(sql).fetch_all(&pool).await.expect("read")
        }
    };
    assert_eq!(marked, vec![(ids[0], None), (ids[2], Some("unreadable payload".into())), (ids[4], None)]);
}

async fn attachments_are_stored_queued_and_claimed(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let bytes = vec![0u8, 1, 2, 255];
    let id = store.insert_attachment(None, "image/png", Some("a.png"), &bytes).await.expect("insert");
    assert_eq!(store.attachment(&id).await.expect("get"), Some(("image/png".into(), bytes.clone())));
    let queued = store.queue_attachment(None, Some("b.jpg"), "https://cdn.example/b").await.expect("queue");
    assert_eq!(store.attachment(&queued).await.expect("pending"), None, "not served before it is downloaded");
    assert_eq!(store.attachment_status(&queued).await.expect("status"), Some(("pending".into(), None)));
    let claimed = store.claim_attachments(10).await.expect("claim");
    assert_eq!(claimed, vec![(queued.clone(), "https://cdn.example/b".into())]);
    assert!(store.claim_attachments(10).await.expect("again").is_empty(), "claimed once");
    assert_eq!(store.requeue_attachments().await.expect("requeue"), 1);
    assert_eq!(store.claim_attachments(10).await.expect("reclaim").len(), 1);
    store.attachment_downloaded(&queued, "image/jpeg", &bytes).await.expect("downloaded");
    assert_eq!(store.attachment(&queued).await.expect("ready"), Some(("image/jpeg".into(), bytes)));
    let broken = store.queue_attachment(None, None, "https://cdn.example/c").await.expect("queue");
    store.attachment_unavailable(&broken, "404").await.expect("unavailable");
    assert_eq!(store.attachment_status(&broken).await.expect("s"), Some(("failed".into(), Some("404".into()))));
    assert_eq!(store.attachment_status("nope").await.expect("unknown"), None);
}

async fn unbinding_fails_pending_sends(engine: Engine) {
    let (_db, store, clock) = fresh(engine).await;
    let (site_id, contact_id) = messenger_contact(&store, &clock, "psid-9").await;
    created(store.append_message(&contact_id, &site_id, agent("r1", "reply")).await.expect("reply"));
    store.set_contact_profile(&contact_id, Some("Grace H"), None).await.expect("profile");
    let (_, event) = store.unbind_psid(&contact_id).await.expect("unbind").expect("logged");
    assert!(matches!(event.kind, EventKind::Channel { linked: false, .. }));
    assert!(store.contact_by_psid("psid-9").await.expect("psid").is_none());
    assert!(store.lease_outbox_heads(clock.now_ms(), 10_000, 0, 10, &[]).await.expect("lease").is_empty());
}

async fn workspaces_own_sites_agents_conversations_and_files(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let default = store.workspace_by_key("default").await.expect("by key").expect("a new database has the default");
    assert_eq!(default.id, DEFAULT_WORKSPACE);
    let acme = store.create_workspace("acme", "Acme").await.expect("workspace");
    assert!(matches!(store.create_workspace("acme", "again").await, Err(StoreError::Conflict(_))));
    let keys: Vec<String> = store.workspaces().await.expect("list").into_iter().map(|w| w.key).collect();
    assert_eq!(keys, vec!["default", "acme"]);

    let (one, c1) = site_and_contact(&store, b"visitor-1").await;
    let two = store.create_site_in(&acme.id, "k2", "Acme shop", &[], "").await.expect("site in acme");
    assert_eq!(two.workspace_id, acme.id);
    assert_eq!(store.site_by_key("k1").await.expect("k1").expect("k1").workspace_id, DEFAULT_WORKSPACE);
    assert!(matches!(store.create_site_in("nope", "k3", "x", &[], "").await, Err(StoreError::NotFound)));
    assert!(matches!(store.create_site_in(&acme.id, "k1", "x", &[], "").await, Err(StoreError::Conflict(_))));
    let ada = store.create_agent("ada@example.com", "Ada", "h").await.expect("default agent");
    let bob = store.create_agent_in(&acme.id, "bob@example.com", "Bob", "h").await.expect("acme agent");
    assert_eq!((ada.workspace_id.as_str(), bob.workspace_id.as_str()), (DEFAULT_WORKSPACE, acme.id.as_str()));
    assert!(matches!(store.create_agent_in("nope", "c@example.com", "C", "h").await, Err(StoreError::NotFound)));
    assert!(matches!(store.create_agent_in(&acme.id, "ADA@example.com", "A", "h").await, Err(StoreError::Conflict(_))));
    let found = store.agent_by_email("bob@example.com").await.expect("bob").expect("bob");
    assert_eq!(found.workspace_id, acme.id);

    let c2 = store.contact_for_token(&two.id, b"visitor-2", "Visitor 2", &ContactContext::default()).await.expect("c2");
    let (conv1, _, _) = created(store.append_message(&c1, &one, visitor("a", "hello one")).await.expect("m1"));
    let (conv2, _, _) = created(store.append_message(&c2.id, &two.id, visitor("b", "hello two")).await.expect("m2"));
    let inbox = |ws: String| {
        let store = store.clone();
        async move { store.workspace_summaries(&ws).await.expect("inbox").into_iter().map(|s| s.id).collect::<Vec<_>>() }
    };
    assert_eq!(inbox(DEFAULT_WORKSPACE.into()).await, vec![conv1.clone()]);
    assert_eq!(inbox(acme.id.clone()).await, vec![conv2.clone()]);
    assert_eq!(store.summaries().await.expect("all").len(), 2, "the unscoped list still has both");
    assert_eq!(store.conversation_workspace(&conv1).await.expect("w1").as_deref(), Some(DEFAULT_WORKSPACE));
    assert_eq!(store.conversation_workspace(&conv2).await.expect("w2"), Some(acme.id.clone()));
    assert_eq!(store.conversation_workspace("nope").await.expect("none"), None);
    assert_eq!(store.site_workspace(&two.id).await.expect("site"), Some(acme.id.clone()));
    assert_eq!(store.site_workspace(&one).await.expect("site").as_deref(), Some(DEFAULT_WORKSPACE));
    assert_eq!(store.site_workspace("nope").await.expect("none"), None);

    let in_conversation = store.insert_attachment(Some(&conv2), "image/png", None, b"x").await.expect("file");
    let from_page = store.queue_attachment(Some(&acme.id), None, "https://cdn.example/a").await.expect("queued");
    let loose = store.queue_attachment(None, None, "https://cdn.example/b").await.expect("queued");
    store.set_contact_profile(&c1, None, Some(&loose)).await.expect("avatar");
    let orphan = store.insert_attachment(None, "image/png", None, b"y").await.expect("file");
    assert_eq!(store.attachment_workspace(&in_conversation).await.expect("a"), Some(acme.id.clone()));
    assert_eq!(store.attachment_workspace(&from_page).await.expect("b"), Some(acme.id.clone()));
    assert_eq!(store.attachment_workspace(&loose).await.expect("c").as_deref(), Some(DEFAULT_WORKSPACE));
    assert_eq!(store.attachment_workspace(&orphan).await.expect("d"), None);
    assert_eq!(store.attachment_workspace("nope").await.expect("e"), None);
}

fn page(page_id: &str, workspace_id: &str, site_id: Option<&str>) -> PageRow {
    PageRow {
        page_id: page_id.into(),
        workspace_id: workspace_id.into(),
        site_id: site_id.map(str::to_string),
        username: None,
        token_nonce: vec![1; 12],
        token_ciphertext: format!("sealed {page_id}").into_bytes(),
    }
}

async fn pages_are_connected_per_site_or_workspace(engine: Engine) {
    let (_db, store, _clock) = fresh(engine).await;
    let acme = store.create_workspace("acme", "Acme").await.expect("workspace");
    let one = store.create_site("k1", "One", &[], "").await.expect("site");
    let other = store.create_site("k1b", "Other", &[], "").await.expect("site");
    let two = store.create_site_in(&acme.id, "k2", "Two", &[], "").await.expect("site");
    assert!(store.pages().await.expect("none").is_empty());
    assert_eq!(store.page_for_site(&one.id).await.expect("none"), None);

    let wide = page("100", DEFAULT_WORKSPACE, None);
    store.save_page(&wide).await.expect("workspace-wide page");
    let own = PageRow { username: Some("acmeshop".into()), ..page("200", &acme.id, Some(&two.id)) };
    store.save_page(&own).await.expect("site page");
    assert_eq!(store.page_for_site(&one.id).await.expect("one"), Some(wide.clone()), "the workspace's Page");
    assert_eq!(store.page_for_site(&other.id).await.expect("other"), Some(wide.clone()));
    assert_eq!(store.page_for_site(&two.id).await.expect("two"), Some(own.clone()));
    assert_eq!(store.page("200").await.expect("by id"), Some(own.clone()));
    assert_eq!(store.page("999").await.expect("unknown"), None);

    let site_page = page("300", DEFAULT_WORKSPACE, Some(&other.id));
    store.save_page(&site_page).await.expect("a site's own Page wins over the workspace's");
    assert_eq!(store.page_for_site(&other.id).await.expect("other"), Some(site_page));
    assert!(
        matches!(store.save_page(&page("101", DEFAULT_WORKSPACE, None)).await, Err(StoreError::Conflict(_))),
        "one workspace-wide Page per workspace"
    );
    assert!(
        matches!(store.save_page(&page("201", &acme.id, Some(&two.id))).await, Err(StoreError::Conflict(_))),
        "one Page per site"
    );
    assert!(
        matches!(store.save_page(&page("400", &acme.id, Some(&one.id))).await, Err(StoreError::NotFound)),
        "a Page cannot serve another workspace's site"
    );
    let rotated = PageRow { token_ciphertext: b"new".to_vec(), token_nonce: vec![2; 12], ..own.clone() };
    store.save_page(&rotated).await.expect("same page id: replaced");
    assert_eq!(store.page("200").await.expect("by id"), Some(rotated));
    assert_eq!(store.pages().await.expect("all").len(), 3);
    assert!(store.delete_page("100").await.expect("delete"));
    assert!(!store.delete_page("100").await.expect("gone"));
    assert_eq!(store.page_for_site(&one.id).await.expect("one"), None);
}

/// A database of `engine` migrated only up to (not including) the migration `before`, holding `rows` (SQLite
/// spelling; the blob `'x'` becomes PostgreSQL's bytea).
async fn older_database(engine: Engine, before: i64, rows: &[&str]) -> Db {
    let db = engine.database().await;
    match engine {
        Engine::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", db.url)).await.expect("open");
            let mut migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.migrations = migrator.migrations.iter().filter(|m| m.version < before).cloned().collect();
            migrator.run(&mut conn).await.expect("older migrations");
            for sql in rows {
                sqlx::query(sql).execute(&mut conn).await.expect("old rows");
            }
            conn.close().await.expect("close");
        }
        Engine::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            let mut migrator = sqlx::migrate!("./migrations/postgres");
            migrator.migrations = migrator.migrations.iter().filter(|m| m.version < before).cloned().collect();
            migrator.run(&mut conn).await.expect("older migrations");
            for sql in rows {
                let sql = sql.replace("'x'", "'\\x78'::bytea");
                sqlx::query(&sql).execute(&mut conn).await.expect("old rows");
            }
            conn.close().await.expect("close");
        }
    }
    db
}

/// A database at the migration before workspaces, holding a site, an agent, a conversation and a file, migrated to
/// the latest schema: everything lands in the default workspace and the agent sees the conversation.
async fn an_existing_database_upgrades_into_the_default_workspace(engine: Engine) {
    const BEFORE: i64 = 20261201002000;
    const ROWS: &[&str] = &[
        "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at)
         values ('s1', 'shop', 'Shop', '[]', '', 1, 1)",
        "insert into agents (id, email, name, password_hash, created_at, updated_at)
         values ('a1', 'ada@example.com', 'Ada', 'h', 1, 1)",
        "insert into contacts (id, site_id, label, created_at, updated_at) values ('k1', 's1', 'Visitor 1', 1, 1)",
        "insert into conversations (id, site_id, contact_id, last_activity_at, created_at, updated_at)
         values ('c1', 's1', 'k1', 1, 1, 1)",
        "insert into attachments (id, conversation_id, content_type, bytes, created_at)
         values ('f1', 'c1', 'image/png', 'x', 1)",
    ];
    let db = older_database(engine, BEFORE, ROWS).await;
    let store = db.open(&Clock::adjustable()).await;
    let workspaces = store.workspaces().await.expect("workspaces");
    assert_eq!(workspaces.len(), 1, "{workspaces:?}");
    assert_eq!((workspaces[0].id.as_str(), workspaces[0].key.as_str()), (DEFAULT_WORKSPACE, "default"));
    assert_eq!(store.site_by_key("shop").await.expect("site").expect("kept").workspace_id, DEFAULT_WORKSPACE);
    let ada = store.agent_by_email("ada@example.com").await.expect("agent").expect("kept");
    assert_eq!(ada.workspace_id, DEFAULT_WORKSPACE);
    let inbox: Vec<String> =
        store.workspace_summaries(&ada.workspace_id).await.expect("inbox").into_iter().map(|s| s.id).collect();
    assert_eq!(inbox, vec!["c1"]);
    assert_eq!(store.conversation_workspace("c1").await.expect("c1").as_deref(), Some(DEFAULT_WORKSPACE));
    assert_eq!(store.attachment_workspace("f1").await.expect("f1").as_deref(), Some(DEFAULT_WORKSPACE));
    let site = store.create_site("new", "New", &[], "").await.expect("a new site after the upgrade");
    assert_eq!(site.workspace_id, DEFAULT_WORKSPACE);
    store.close().await;
}

/// A database before 20261202007000 (on SQLite: the event log clustered on its key, `messages` unique by seq)
/// holding a conversation of two messages, a read and a pending Messenger send of the second message, migrated to
/// the latest schema: the log replays exactly as it was, the messages and the send are kept (the rebuild of
/// `messages` must not cascade to the outbox), a repeated client id is still answered with the original, the next
/// message takes the next seq, and the read cursors still stop at the last message.
async fn an_existing_event_log_is_kept_when_it_stops_being_clustered(engine: Engine) {
    const BEFORE: i64 = 20261202007000;
    let message = |seq: u64, client_id: &str, body: &str| Event {
        seq,
        at: 10 + seq as i64,
        kind: EventKind::Message {
            message: protocol::ChatMessage {
                id: format!("m{seq}"),
                client_id: client_id.into(),
                author: Author::Visitor,
                body: body.into(),
                sent_at: 10 + seq as i64,
                channel: Channel::Web,
                attachments: Vec::new(),
            },
        },
    };
    let log = vec![
        message(1, "c-1", "first"),
        message(2, "c-2", "second"),
        Event { seq: 3, at: 13, kind: EventKind::Read { by: Party::Agent, up_to_seq: 2 } },
    ];
    let mut rows = vec![
        "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at)
         values ('s1', 'shop', 'Shop', '[]', '', 1, 1)"
            .to_string(),
        "insert into contacts (id, site_id, label, created_at, updated_at) values ('k1', 's1', 'Visitor 1', 1, 1)"
            .into(),
        "insert into conversations (id, site_id, contact_id, last_seq, agent_read_seq, last_activity_at, created_at,
            updated_at) values ('c1', 's1', 'k1', 3, 2, 13, 1, 13)"
            .into(),
    ];
    for event in &log {
        if let EventKind::Message { message } = &event.kind {
            rows.push(format!(
                "insert into messages (id, conversation_id, seq, client_id, author_role, body, created_at)
                 values ('{}', 'c1', {}, '{}', 'visitor', '{}', {})",
                message.id, event.seq, message.client_id, message.body, event.at
            ));
        }
        let payload = serde_json::to_string(event).expect("json");
        rows.push(format!(
            "insert into events (conversation_id, seq, payload, created_at) values ('c1', {}, '{payload}', {})",
            event.seq, event.at
        ));
    }
    rows.push(
        "insert into outbox (id, conversation_id, message_id, psid, body, messaging_type, next_attempt_at, created_at,
            updated_at) values (7, 'c1', 'm2', 'p1', 'second', 'RESPONSE', 1, 1, 1)"
            .into(),
    );
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let db = older_database(engine, BEFORE, &rows).await;
    let store = db.open(&Clock::adjustable()).await;
    assert_eq!(store.events_after("c1", 0).await.expect("replay"), log, "the log replays as it was");
    assert_eq!(store.events_after("c1", 2).await.expect("replay from 2"), log[2..]);
    let recent = store.recent_messages("c1", 6).await.expect("recent");
    assert_eq!(recent.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    assert_eq!(store.outbox_for_message("m2").await.expect("outbox"), Some(7), "the pending send is kept");
    match store.append_message("k1", "s1", visitor("c-2", "second again")).await.expect("a repeat") {
        AppendOutcome::Duplicate { message, seq, .. } => assert_eq!((message.id.as_str(), seq), ("m2", 2)),
        AppendOutcome::Created { .. } => panic!("a repeated client id was stored again"),
    }
    let (conversation_id, seq, events) =
        created(store.append_message("k1", "s1", visitor("c-4", "third")).await.expect("appends"));
    assert_eq!((conversation_id.as_str(), seq), ("c1", 4));
    let replay = store.events_after("c1", 0).await.expect("replay");
    assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4], "gap-free, in order");
    assert_eq!(replay[3..], events[..1]);
    let read = store.mark_read("c1", Party::Visitor, 100).await.expect("read").expect("moved");
    assert!(matches!(read.kind, EventKind::Read { up_to_seq: 4, .. }), "up to the last message: {read:?}");
    store.close().await;
}
