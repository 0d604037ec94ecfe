//! Two node processes post into one conversation at the same moment (the agent's socket on node A, another on node
//! B, and the visitor on A, all flooding at once): every ack names a different seq, and the conversation's log is
//! numbered 1, 2, 3 … without gaps or repeats. The seqs the two nodes were given interleave, so the posts really
//! raced.

use std::collections::HashSet;

use sqlx::Connection;

use crate::harness::{Cluster, Database, Options, check_database, seed_site_and_agent};
use crate::ws;

const PER_WRITER: usize = 150;
const WINDOW: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_posting_into_one_conversation_at_once_number_it_without_gaps_or_repeats() {
    let database = Database::shared().await;
    let cookie = seed_site_and_agent(&database.url).await;
    let cluster = Cluster::start(database, Options::serve(env!("CARGO_BIN_EXE_parley"), 2)).await;
    let origin = cluster.public_url();
    let (a, b) = (cluster.nodes[0].addr.to_string(), cluster.nodes[1].addr.to_string());
    let mut visitor = ws::visitor(&a, &origin).await;
    assert_eq!(ws::visitor_says(&mut visitor, "opening", "I have a question").await, 1);
    let mut db = sqlx::PgConnection::connect(&cluster.database.url).await.expect("database");
    let conversation_id: String =
        sqlx::query_scalar("select id from conversations").fetch_one(&mut db).await.expect("the conversation");
    db.close().await.expect("close");

    let mut on_a = ws::agent(&a, &origin, &cookie).await;
    let mut on_b = ws::agent(&b, &origin, &cookie).await;
    let visitor_floods = async {
        let mut acks = Vec::new();
        for n in 0..PER_WRITER {
            acks.push(ws::visitor_says(&mut visitor, &format!("v-{n}"), &format!("visitor says {n}")).await);
        }
        acks
    };
    let (from_a, from_b, from_visitor) = tokio::join!(
        ws::agent_floods(&mut on_a, &conversation_id, "node-a", PER_WRITER, WINDOW),
        ws::agent_floods(&mut on_b, &conversation_id, "node-b", PER_WRITER, WINDOW),
        visitor_floods,
    );

    let seqs_a: Vec<u64> = from_a.values().copied().collect();
    let seqs_b: Vec<u64> = from_b.values().copied().collect();
    let mut all: Vec<u64> = seqs_a.iter().chain(&seqs_b).chain(&from_visitor).copied().collect();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "two posts were acked with the same seq");
    all.sort_unstable();
    let expected: Vec<u64> = (2..=u64::try_from(3 * PER_WRITER + 1).expect("small")).collect();
    assert_eq!(all, expected, "the acked seqs are not 2..=last without gaps");
    let (max_a, max_b) = (seqs_a.iter().max().expect("acks"), seqs_b.iter().max().expect("acks"));
    let (min_a, min_b) = (seqs_a.iter().min().expect("acks"), seqs_b.iter().min().expect("acks"));
    assert!(
        min_a < max_b && min_b < max_a,
        "the nodes did not post at the same time: A {min_a}..{max_a}, B {min_b}..{max_b}"
    );

    let report = check_database(&cluster.database.url).await;
    assert_eq!(report.total_messages, 3 * PER_WRITER + 1);
    assert_eq!(report.doubled, 0);
    let stored = report.seqs_by_client_id();
    for (client_id, seq) in from_a.iter().chain(&from_b) {
        assert_eq!(stored.get(client_id), Some(seq), "{client_id} not stored at its acked seq");
    }
    let interleaved = seqs_a.iter().filter(|s| **s > *min_b && **s < *max_b).count();
    println!(
        "cluster seq: {} posts from node A (agent and visitor) and node B at once into one conversation: seqs 1..={} \
         unique and gap-free; {interleaved} of A's agent seqs fell inside B's range",
        3 * PER_WRITER,
        3 * PER_WRITER + 1
    );
}
