//! Node A is SIGKILLed while visitors connected through nginx are writing: nginx spreads the visitors over the three
//! nodes, A's visitors lose their sockets, reconnect through nginx (which passes them to B or C), resume by seq and
//! re-send what was not acked. Counted at the far end, the database: every client id once, at the seq of its ack,
//! every conversation's log gap-free, nothing sent missing.

use crate::client::{Ledger, Visitor};
use crate::harness::{Cluster, Database, Options, check_database, seed_site_and_agent, wait_for};

const VISITORS: usize = 12;
const MESSAGES_PER_VISITOR: usize = 40;
const WINDOW: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_a_sigkilled_its_visitors_resume_through_nginx_on_b_or_c_with_nothing_lost_or_doubled() {
    let database = Database::shared().await;
    seed_site_and_agent(&database.url).await;
    let mut cluster = Cluster::start(database, Options::serve(env!("CARGO_BIN_EXE_parley"), 3)).await;
    let ledger = Ledger::default();
    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let mut visitor = Visitor::new(&format!("v{i}"), cluster.nginx_addr(), &cluster.public_url(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            visitor.run(MESSAGES_PER_VISITOR, WINDOW).await;
            visitor
        }));
    }
    let total = VISITORS * MESSAGES_PER_VISITOR;
    wait_for("a third of the messages acked", async || (ledger.len() >= total / 3).then_some(())).await;
    cluster.nodes[0].kill();
    let acked_at_kill = ledger.len();

    let mut visitors = Vec::new();
    for task in tasks {
        visitors.push(task.await.expect("a visitor finished"));
    }
    let report = check_database(&cluster.database.url).await;
    let stored = report.seqs_by_client_id();
    let acks = ledger.snapshot();
    for (client_id, seq) in &acks {
        assert_eq!(stored.get(client_id), Some(seq), "acked {client_id} is not stored at its acked seq");
    }
    let lost: Vec<String> = visitors
        .iter()
        .flat_map(|v| (0..MESSAGES_PER_VISITOR).map(|n| v.message(n).0))
        .filter(|id| !stored.contains_key(id))
        .collect();
    assert!(lost.is_empty(), "sent but never stored: {lost:?}");
    assert_eq!(report.doubled, 0, "messages stored twice");
    assert_eq!(report.total_messages, total, "stored messages besides the ones sent");
    assert_eq!(acks.len(), total, "every message sent was acked in the end");

    // Each visitor applied its own messages once, in the order sent (seq order is checked as they arrive).
    for v in &visitors {
        let own: Vec<String> = v.seen.iter().map(|(_, id)| id.clone()).collect();
        let expected: Vec<String> = (0..MESSAGES_PER_VISITOR).map(|n| v.message(n).0).collect();
        assert_eq!(own, expected, "{} saw its messages out of order or not once", v.name);
    }
    // The visitors that had to reconnect were A's: they moved to B or C, some with messages in flight.
    let moved: Vec<&Visitor> = visitors.iter().filter(|v| v.reconnects > 1).collect();
    assert!(!moved.is_empty(), "no visitor was on node A (nginx did not spread them)");
    let resent: usize = moved.iter().map(|v| v.resent).sum();
    assert!(resent > 0, "the kill caught no message in flight");
    for node in &mut cluster.nodes[1..] {
        assert!(node.is_running(), "node {} died too", node.name);
    }
    println!(
        "cluster sigkill: {VISITORS} visitors through nginx, node A killed after {acked_at_kill} acks; {} visitors \
         moved to B/C re-sending {resent} unacked; {} messages stored, lost 0, doubled 0, logs gap-free",
        moved.len(),
        report.total_messages
    );
}
