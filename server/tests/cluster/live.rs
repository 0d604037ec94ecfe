//! Live chat across nodes: the visitor's socket is on node A, the agent's on node B, so every event between them
//! crosses nodes through PostgreSQL (`LISTEN/NOTIFY`, catch-up by seq). Each step must arrive live, within
//! [`LIVE`], not on some later reconnect. Also after PostgreSQL restarted under the nodes: each node's bus listener
//! subscribes again by itself (seen in `/readyz`: `bus_listener` connected, one reconnect more), and chat is live
//! again.

use std::time::Duration;

use protocol::console::{ClientMsg as AgentMsg, ServerMsg as ToAgent};
use protocol::widget::ServerMsg as ToVisitor;

use crate::harness::{Cluster, Database, Options, seed_site_and_agent};
use crate::ws;

/// How long a message may take from one node's socket to another's: "live".
const LIVE: Duration = Duration::from_secs(5);

/// A visitor on node `visitor_on` and the agent on node `agent_on` exchange three messages; each arrives live.
async fn chat_across(cluster: &Cluster, cookie: &str, visitor_on: usize, agent_on: usize, tag: &str) {
    let origin = cluster.public_url();
    let (v_node, a_node) = (&cluster.nodes[visitor_on], &cluster.nodes[agent_on]);
    let mut agent = ws::agent(&a_node.addr.to_string(), &origin, cookie).await;
    let mut visitor = ws::visitor(&v_node.addr.to_string(), &origin).await;
    let first = format!("{tag}: hello from a visitor on node {}", v_node.name);
    let seq = ws::visitor_says(&mut visitor, &format!("{tag}-v1"), &first).await;
    assert_eq!(seq, 1);

    // The agent's inbox on the other node shows the new conversation live.
    let what = format!("{tag}: the visitor's message (node {}) in the inbox of node {}", v_node.name, a_node.name);
    let conversation_id = ws::recv_until(&mut agent, LIVE, &what, |m: ToAgent| match m {
        ToAgent::Summary { conversation } if conversation.last_message.as_deref() == Some(first.as_str()) => {
            Some(conversation.id)
        }
        _ => None,
    })
    .await;
    ws::send(&mut agent, &AgentMsg::Open { conversation_id: conversation_id.clone(), since_seq: 0 }).await;
    let history = ws::recv_until(&mut agent, LIVE, "the history", |m: ToAgent| match m {
        ToAgent::History { events, .. } => Some(events),
        _ => None,
    })
    .await;
    assert_eq!(history.iter().filter_map(ws::message_body).collect::<Vec<_>>(), [first.as_str()]);

    // The agent answers from its node; the visitor sees it live on the other.
    let reply = format!("{tag}: the agent answers from node {}", a_node.name);
    let reply_seq = ws::agent_says(&mut agent, &conversation_id, &format!("{tag}-a1"), &reply).await;
    let what = format!("the agent's reply (node {}) on the visitor's socket (node {})", a_node.name, v_node.name);
    let event = ws::recv_until(&mut visitor, LIVE, &what, |m: ToVisitor| match m {
        ToVisitor::Event { event } if ws::message_body(&event) == Some(reply.as_str()) => Some(event),
        _ => None,
    })
    .await;
    assert_eq!(event.seq, reply_seq, "the visitor sees the reply at the seq the agent was acked");

    // And the visitor's next message reaches the opened conversation on the agent's node live.
    let second = format!("{tag}: thanks, still on node {}", v_node.name);
    let second_seq = ws::visitor_says(&mut visitor, &format!("{tag}-v2"), &second).await;
    let event =
        ws::recv_until(&mut agent, LIVE, "the visitor's second message as a live event", |m: ToAgent| match m {
            ToAgent::Event { conversation_id: id, event }
                if id == conversation_id && ws::message_body(&event) == Some(second.as_str()) =>
            {
                Some(event)
            }
            _ => None,
        })
        .await;
    assert_eq!(event.seq, second_seq);
    assert!(reply_seq > seq && second_seq > reply_seq, "seqs {seq}, {reply_seq}, {second_seq}");
}

#[tokio::test]
async fn a_visitor_on_node_a_and_an_agent_on_node_b_chat_live() {
    let database = Database::shared().await;
    let cookie = seed_site_and_agent(&database.url).await;
    let cluster = Cluster::start(database, Options::serve(env!("CARGO_BIN_EXE_parley"), 3)).await;
    chat_across(&cluster, &cookie, 0, 1, "a-to-b").await;
    chat_across(&cluster, &cookie, 2, 0, "c-to-a").await;
}

#[tokio::test]
async fn after_postgres_restarts_a_visitor_and_an_agent_on_different_nodes_still_chat_live() {
    let database = Database::private().await;
    let cookie = seed_site_and_agent(&database.url).await;
    let cluster = Cluster::start(database, Options::serve(env!("CARGO_BIN_EXE_parley"), 3)).await;
    chat_across(&cluster, &cookie, 0, 1, "before").await;
    let postgres = cluster.database.postgres();
    postgres.stop_server().expect("PostgreSQL stops");
    cluster.wait_every_node("/readyz 503 in the outage", |status, _| status == 503).await;
    postgres.start_server().expect("PostgreSQL starts again");
    // Ready again, and each node's bus listener subscribed anew by itself (it retries with a backoff of up to 5 s).
    cluster
        .wait_every_node("ready with its bus listener subscribed again", |status, body| {
            let listener = &body["workers"]["bus_listener"]["counters"];
            let back = listener["connected"] == 1 && listener["reconnects"].as_u64().is_some_and(|n| n >= 1);
            status == 200 && back
        })
        .await;
    chat_across(&cluster, &cookie, 0, 1, "after").await;
}
