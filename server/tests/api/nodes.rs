//! Several nodes on one PostgreSQL database: two in-process apps on port 0 share a fresh database from the test
//! cluster (testpg). Visitors on one node and agents on the other chat live, typing crosses, two nodes posting into
//! one conversation at once keep the seqs gap-free, a node whose bus listener was killed catches up from the log
//! with nothing lost or doubled, and "visitor online" follows the visitor's node — cleared on a clean stop and, for
//! a node that died without a word, once its lease runs out. What a node committed but never announced (it died
//! first) reaches the others when the client sends it again, or at the latest when the dead node's lease runs out;
//! and the inbox an agent gets again after a bus reconnect is its own workspace's.

use std::collections::BTreeMap;
use std::time::Duration;

use parley::meters::Levels;
use parley::services::{PostInput, Poster};
use parley::store::Store;
use protocol::console::{ClientMsg as AgentMsg, ConversationSummary, ServerMsg as AgentFrame};
use protocol::widget::{ClientMsg as VisitorMsg, ServerMsg as VisitorFrame};
use protocol::{Event, EventKind};
use sqlx::Connection;

use crate::helpers::{
    AGENT_EMAIL, AGENT_NAME, AGENT_PASSWORD, HOST_ORIGIN, SITE_KEY, TestApp, Ws, send_acked, spawn_app_on_database_with,
};

/// How long a condition may take to come true.
const WAIT: Duration = Duration::from_secs(15);

/// A fresh database holding the test site and agent, for several nodes.
async fn shared_database() -> String {
    let db = testpg::database().await;
    let store = Store::connect(&db.url, 2).await.expect("store opens");
    store.create_site(SITE_KEY, "Test Shop", &[HOST_ORIGIN.to_string()], "Hello there").await.expect("site");
    parley::cli::create_agent(&store, AGENT_EMAIL, AGENT_NAME, AGENT_PASSWORD).await.expect("agent");
    store.close().await;
    db.url
}

/// A node on `url` whose heartbeat and lease are short (so a dead node is noticed within a second).
async fn node(url: &str, lease_ms: u64) -> TestApp {
    spawn_app_on_database_with(url, |s| {
        s.cluster.heartbeat_ms = 100;
        s.cluster.node_lease_ms = lease_ms;
    })
    .await
}

fn node_id(app: &TestApp) -> String {
    app.state.conversations.nodes().node_id().to_string()
}

/// The agent's next inbox row for a conversation that satisfies `want`.
async fn summary_until(agent: &mut Ws, want: impl Fn(&ConversationSummary) -> bool) -> ConversationSummary {
    agent
        .recv_until(|m: AgentFrame| match m {
            AgentFrame::Summary { conversation } if want(&conversation) => Some(conversation),
            AgentFrame::Inbox { conversations, .. } => conversations.into_iter().find(|c| want(c)),
            _ => None,
        })
        .await
}

/// Opens a conversation on an agent socket; returns the history's last seq.
async fn open(agent: &mut Ws, conversation_id: &str) -> u64 {
    agent.send(&AgentMsg::Open { conversation_id: conversation_id.into(), since_seq: 0 }).await;
    agent
        .recv_until(|m: AgentFrame| match m {
            AgentFrame::History { last_seq, .. } => Some(last_seq),
            _ => None,
        })
        .await
}

/// The message events a socket receives until every client id in `expected` has arrived (at most `WAIT`): each
/// as (seq, client id), in arrival order, others (e.g. a visitor's own earlier messages) included.
async fn messages_until<F>(ws: &mut Ws, expected: &[String], mut event_of: F) -> Vec<(u64, String)>
where
    F: FnMut(serde_json::Value) -> Option<Event>,
{
    let mut seen: Vec<(u64, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !expected.iter().all(|id| seen.iter().any(|(_, c)| c == id)) {
        assert!(tokio::time::Instant::now() < deadline, "not every message arrived: {seen:?}");
        let frame: serde_json::Value = ws.recv().await;
        if let Some(Event { seq, kind: EventKind::Message { message }, .. }) = event_of(frame) {
            seen.push((seq, message.client_id));
        }
    }
    seen
}

/// Only the messages with these client ids.
fn only(seen: Vec<(u64, String)>, ids: &[&str]) -> Vec<(u64, String)> {
    seen.into_iter().filter(|(_, c)| ids.contains(&c.as_str())).collect()
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn visitor_event(frame: serde_json::Value) -> Option<Event> {
    match serde_json::from_value(frame).ok()? {
        VisitorFrame::Event { event } => Some(event),
        _ => None,
    }
}

fn agent_event(frame: serde_json::Value) -> Option<Event> {
    match serde_json::from_value(frame).ok()? {
        AgentFrame::Event { event, .. } => Some(event),
        _ => None,
    }
}

/// Every client id once, and seqs rising without a repeat.
fn once_each_in_order(seen: &[(u64, String)], expected: &[String], at: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, client_id) in seen {
        *counts.entry(client_id).or_default() += 1;
    }
    for id in expected {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{at}: {id} arrived {:?} times", counts.get(id.as_str()));
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{at}: seqs not rising: {seen:?}");
}

/// The conversation a visitor's first message created.
async fn conversation_of(app: &TestApp, agent: &mut Ws) -> ConversationSummary {
    let summary = summary_until(agent, |c| c.last_seq >= 1).await;
    assert!(app.store.conversation(&summary.id).await.expect("read").is_some());
    summary
}

#[tokio::test]
async fn a_visitor_on_one_node_and_an_agent_on_another_chat_live_both_ways_and_typing_crosses() {
    let url = shared_database().await;
    let (a, b) = (node(&url, 15_000).await, node(&url, 15_000).await);
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = a.visitor(None, 0).await;

    send_acked(&mut visitor, "v1", "Hello from node A").await;
    // The inbox row crosses: B's agent learns of the new conversation without reloading.
    let summary = conversation_of(&b, &mut agent).await;
    assert_eq!(summary.last_message.as_deref(), Some("Hello from node A"));
    assert_eq!(open(&mut agent, &summary.id).await, 1);

    // Visitor → agent, live.
    send_acked(&mut visitor, "v2", "Are you there?").await;
    let got = messages_until(&mut agent, &ids(&["v2"]), agent_event).await;
    assert_eq!(got, vec![(2, "v2".to_string())]);

    // Agent → visitor, live.
    agent
        .send(&AgentMsg::Send { conversation_id: summary.id.clone(), client_id: "a1".into(), body: "Yes!".into() })
        .await;
    let got = messages_until(&mut visitor, &ids(&["a1"]), visitor_event).await;
    assert_eq!(only(got, &["a1"]), vec![(3, "a1".to_string())]);

    // Typing crosses both ways (it is never stored: the nudge carries it whole).
    visitor.send(&VisitorMsg::Typing { typing: true }).await;
    agent
        .recv_until(|m: AgentFrame| match m {
            AgentFrame::Typing { conversation_id, typing: true } if conversation_id == summary.id => Some(()),
            _ => None,
        })
        .await;
    agent.send(&AgentMsg::Typing { conversation_id: summary.id.clone(), typing: true }).await;
    let name = visitor
        .recv_until(|m: VisitorFrame| match m {
            VisitorFrame::Typing { typing: true, name } => Some(name),
            _ => None,
        })
        .await;
    assert_eq!(name.as_deref(), Some(AGENT_NAME));
}

#[tokio::test]
async fn two_nodes_posting_into_one_conversation_at_once_keep_seqs_gap_free_and_each_message_arrives_once() {
    let url = shared_database().await;
    let (a, b) = (node(&url, 15_000).await, node(&url, 15_000).await);
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = a.visitor(None, 0).await;
    send_acked(&mut visitor, "first", "first").await;
    let summary = conversation_of(&b, &mut agent).await;
    open(&mut agent, &summary.id).await;
    let conversation = a.store.conversation(&summary.id).await.expect("read").expect("conversation");

    // 25 visitor messages through node A and 25 agent replies through node B, all at once.
    const EACH: usize = 25;
    let mut posts = Vec::new();
    for i in 0..EACH {
        let (a_conv, contact, site) =
            (a.state.conversations.clone(), conversation.contact_id.clone(), conversation.site_id.clone());
        posts.push(tokio::spawn(async move {
            let client_id = format!("va{i}");
            let input = PostInput::new(&contact, &site, Poster::Visitor, &client_id, "from A");
            a_conv.post(input).await.expect("posted on A").seq
        }));
        let (b_conv, id, agent_id) = (b.state.conversations.clone(), summary.id.clone(), b.agent_id.clone());
        posts.push(tokio::spawn(async move {
            let client_id = format!("ab{i}");
            b_conv.reply(&id, &agent_id, AGENT_NAME, &client_id, "from B").await.expect("posted on B").seq
        }));
    }
    let mut seqs = Vec::new();
    for post in posts {
        seqs.push(post.await.expect("post task"));
    }
    seqs.sort_unstable();
    let total = 2 * EACH as u64;
    assert_eq!(seqs, (2..=total + 1).collect::<Vec<_>>(), "every post got its own seq, none skipped");
    let logged: Vec<i64> = {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar("select seq from events where conversation_id = $1 order by seq")
            .bind(&summary.id)
            .fetch_all(&mut conn)
            .await
            .expect("events")
    };
    assert_eq!(logged, (1..=total as i64 + 1).collect::<Vec<_>>(), "the log is 1..N without a gap");

    // Both far ends see every message once, in seq order.
    let expected: Vec<String> = (0..EACH).flat_map(|i| [format!("va{i}"), format!("ab{i}")]).collect();
    let at_visitor = messages_until(&mut visitor, &expected, visitor_event).await;
    once_each_in_order(&at_visitor, &expected, "the visitor on A");
    let at_agent = messages_until(&mut agent, &expected, agent_event).await;
    once_each_in_order(&at_agent, &expected, "the agent on B");
}

/// A login role of its own for one node, so the test can lock that node out of the database.
async fn node_role(url: &str) -> (String, String) {
    let role = format!("node_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(&format!("create role {role} login superuser")).execute(&mut conn).await.expect("role");
    let own = url.replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(own, url, "the test cluster's URL names the postgres user");
    (role, own)
}

fn reconnects(app: &TestApp) -> u64 {
    let text = app.state.meters.render(&Levels::default());
    let line = text.lines().find(|l| l.starts_with("parley_bus_reconnects_total")).expect("the counter is rendered");
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count")
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_node_whose_bus_listener_was_killed_catches_up_from_the_log_with_nothing_lost_or_doubled() {
    let url = shared_database().await;
    let (role, b_url) = node_role(&url).await;
    let a = node(&url, 15_000).await;
    let b = node(&b_url, 15_000).await;
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = a.visitor(None, 0).await;
    send_acked(&mut visitor, "first", "first").await;
    let summary = conversation_of(&b, &mut agent).await;
    open(&mut agent, &summary.id).await;

    // Node B may not log in again, then its listener connection is killed: B cannot subscribe until let back in.
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(&format!("alter role {role} nologin")).execute(&mut admin).await.expect("lock out");
    let listener_name = format!("parley-bus {}", node_id(&b));
    let killed: Vec<bool> =
        sqlx::query_scalar("select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1")
            .bind(&listener_name)
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
    assert_eq!(killed, vec![true], "B's listener was found by its application_name and killed");

    // Messages committed on A while B hears nothing.
    let sent: Vec<String> = (1..=10).map(|i| format!("gap{i}")).collect();
    for id in &sent {
        send_acked(&mut visitor, id, "while B is deaf").await;
    }
    assert_eq!(reconnects(&b), 0, "B has not subscribed again yet: these nudges were lost to it");

    // Let B back in: its listener subscribes again (with backoff) and every socket catches up from the log.
    sqlx::query(&format!("alter role {role} login")).execute(&mut admin).await.expect("let in");
    let at_agent = messages_until(&mut agent, &sent, agent_event).await;
    once_each_in_order(&at_agent, &sent, "the agent on B");
    let expected: Vec<(u64, String)> = (2..).zip(sent.iter().cloned()).collect();
    assert_eq!(at_agent, expected, "exactly the missed messages, in order, nothing else");
    wait_until("B counts the reconnect", || async { reconnects(&b) == 1 }).await;
    let new_listener: i64 = sqlx::query_scalar("select count(*) from pg_stat_activity where application_name = $1")
        .bind(&listener_name)
        .fetch_one(&mut admin)
        .await
        .expect("listeners");
    assert_eq!(new_listener, 1, "B listens again");
    // The node stayed up throughout, and live traffic flows again.
    assert_eq!(b.http.get(b.url("/healthz")).send().await.expect("healthz").status(), 200);
    send_acked(&mut visitor, "after", "after").await;
    let after = messages_until(&mut agent, &ids(&["after"]), agent_event).await;
    assert_eq!(after, vec![(12, "after".to_string())], "no event is sent twice after the catch-up");
}

#[tokio::test]
async fn presence_crosses_nodes_and_clears_when_the_visitors_node_stops() {
    let url = shared_database().await;
    // A long lease: only the clean stop can clear the presence within the test's wait.
    let (a, b) = (node(&url, 60_000).await, node(&url, 60_000).await);
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, welcome) = a.visitor(None, 0).await;
    let VisitorFrame::Welcome { token, .. } = welcome else { panic!("a welcome") };
    send_acked(&mut visitor, "v1", "hi").await;
    let summary = summary_until(&mut agent, |c| c.last_seq >= 1 && c.visitor.online).await;
    assert!(!b.state.hub.visitor_online(&summary_contact(&b, &summary.id).await), "the socket is on A, not B");

    // The visitor leaves A: offline on B.
    visitor.cut();
    summary_until(&mut agent, |c| c.id == summary.id && !c.visitor.online).await;
    // Back on A (a new socket with the same token): online on B again, and a fresh inbox on B agrees.
    let (_visitor, _welcome) = a.visitor(Some(&token), 1).await;
    summary_until(&mut agent, |c| c.id == summary.id && c.visitor.online).await;
    let (_fresh, inbox) = b.agent().await;
    let AgentFrame::Inbox { conversations, .. } = inbox else { panic!("an inbox") };
    assert!(conversations.iter().any(|c| c.id == summary.id && c.visitor.online), "{conversations:?}");

    // Node A stops cleanly: its visitors show offline on B at once, not after a lease.
    drop(a);
    summary_until(&mut agent, |c| c.id == summary.id && !c.visitor.online).await;
}

async fn summary_contact(app: &TestApp, conversation_id: &str) -> String {
    app.store.conversation(conversation_id).await.expect("read").expect("conversation").contact_id
}

/// A node on a runtime of its own, so the test can make it vanish without a clean stop (like SIGKILL: no socket
/// is closed politely, no row removed).
struct DoomedNode {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
}

impl DoomedNode {
    async fn start(url: &str, lease_ms: u64) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let url = url.to_string();
        let app = runtime.spawn(async move { node(&url, lease_ms).await }).await.expect("node starts");
        Self { runtime, app }
    }

    fn crash(self) {
        self.runtime.shutdown_background();
        drop(self.app);
    }
}

#[tokio::test]
async fn a_dead_nodes_visitors_show_offline_everywhere_once_its_lease_runs_out() {
    let url = shared_database().await;
    let a = DoomedNode::start(&url, 500).await;
    let b = node(&url, 500).await;
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = a.app.visitor(None, 0).await;
    send_acked(&mut visitor, "v1", "hi").await;
    let summary = summary_until(&mut agent, |c| c.last_seq >= 1 && c.visitor.online).await;

    a.crash();
    // Nobody said goodbye: B reaps A once its lease has run out and tells its agents.
    summary_until(&mut agent, |c| c.id == summary.id && !c.visitor.online).await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let rows: i64 = sqlx::query_scalar("select count(*) from node_presence").fetch_one(&mut conn).await.expect("rows");
    assert_eq!(rows, 0, "the dead node's presence rows are gone");
}

#[tokio::test]
async fn the_inbox_an_agent_gets_again_after_a_bus_reconnect_holds_only_its_own_workspace() {
    let url = shared_database().await;
    let a = node(&url, 15_000).await;
    let b = node(&url, 15_000).await;
    a.second_workspace().await;
    let (mut visitor1, _) = a.visitor(None, 0).await;
    send_acked(&mut visitor1, "m1", "hello one").await;
    let (mut visitor2, _) = a.visitor_on(crate::helpers::OTHER_SITE, None).await;
    send_acked(&mut visitor2, "m2", "hello two").await;

    let (mut agent, first) = b.agent().await;
    let sites = |conversations: &[ConversationSummary]| -> Vec<String> {
        conversations.iter().map(|c| c.site_key.clone()).collect()
    };
    match first {
        AgentFrame::Inbox { conversations, .. } => assert_eq!(sites(&conversations), vec![SITE_KEY.to_string()]),
        other => panic!("expected the inbox, got {other:?}"),
    }

    // B's listener is killed; when it subscribes again every agent socket on B gets its inbox afresh.
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    let killed: Vec<bool> =
        sqlx::query_scalar("select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1")
            .bind(format!("parley-bus {}", node_id(&b)))
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
    assert_eq!(killed, vec![true], "B's listener was found and killed");
    let again = agent
        .recv_until(|m: AgentFrame| match m {
            AgentFrame::Inbox { conversations, .. } => Some(conversations),
            _ => None,
        })
        .await;
    assert_eq!(sites(&again), vec![SITE_KEY.to_string()], "the other workspace's conversation is not in it");
    assert_eq!(reconnects(&b), 1);
}

/// Commits a visitor message with no node behind it: what a node that died between its commit and its nudge leaves.
async fn commit_unannounced(url: &str, conversation_id: &str, client_id: &str) -> u64 {
    let outside = Store::connect(url, 1).await.expect("store opens");
    let conversation = outside.conversation(conversation_id).await.expect("read").expect("conversation");
    let outcome = outside
        .append_message(
            &conversation.contact_id,
            &conversation.site_id,
            parley::store::NewMessage {
                client_id: client_id.to_string(),
                body: "committed, never announced".to_string(),
                author: protocol::Author::Visitor,
                agent_id: None,
                channel: protocol::Channel::Web,
                external_id: None,
                attachments: Vec::new(),
                messenger_action_at: None,
                mirror: None,
            },
        )
        .await
        .expect("committed");
    outside.close().await;
    match outcome {
        parley::store::AppendOutcome::Created { seq, .. } => seq,
        other => panic!("expected a new message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_its_node_committed_but_never_announced_reaches_the_other_nodes_when_the_client_sends_it_again() {
    let url = shared_database().await;
    let a = node(&url, 15_000).await;
    let b = node(&url, 15_000).await;
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = a.visitor(None, 0).await;
    send_acked(&mut visitor, "first", "first").await;
    let summary = conversation_of(&b, &mut agent).await;
    open(&mut agent, &summary.id).await;

    // The node that committed "lost" died before its nudge; the visitor never got the ack and sends it again here.
    let seq = commit_unannounced(&url, &summary.id, "lost").await;
    send_acked(&mut visitor, "lost", "committed, never announced").await;
    let at_agent = messages_until(&mut agent, &ids(&["lost"]), agent_event).await;
    assert_eq!(at_agent, vec![(seq, "lost".to_string())], "the agent on B gets it once, at its seq");
    send_acked(&mut visitor, "next", "next").await;
    let after = messages_until(&mut agent, &ids(&["next"]), agent_event).await;
    assert_eq!(after, vec![(seq + 1, "next".to_string())], "nothing twice");
}

#[tokio::test]
async fn when_a_dead_nodes_lease_runs_out_every_node_catches_up_on_what_it_never_announced() {
    let url = shared_database().await;
    let doomed = DoomedNode::start(&url, 500).await;
    let b = node(&url, 500).await;
    let (mut agent, _inbox) = b.agent().await;
    let (mut visitor, _welcome) = doomed.app.visitor(None, 0).await;
    send_acked(&mut visitor, "first", "first").await;
    let summary = conversation_of(&b, &mut agent).await;
    open(&mut agent, &summary.id).await;

    // A commit the doomed node never announced (it acked, then died before its nudge went out).
    let seq = commit_unannounced(&url, &summary.id, "unannounced").await;
    drop(visitor);
    doomed.crash();
    // Once B reaps the dead node, its sockets read their logs again: the agent gets the message, once.
    let at_agent = messages_until(&mut agent, &ids(&["unannounced"]), agent_event).await;
    assert_eq!(only(at_agent, &["unannounced"]), vec![(seq, "unannounced".to_string())]);
}
