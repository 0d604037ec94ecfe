//! PostgreSQL is restarted (a fast shutdown of the private cluster, then a start on the same port) while three
//! nodes hold visitors mid-conversation. No node is restarted: each notices the outage (`/readyz` 503, naming the
//! database), refuses what it cannot store instead of acking it, and recovers by itself once the database is back
//! (`/readyz` 200 again, same process). Messages posted after the recovery go through, the one refused during the
//! outage is re-sent and stored once, and nothing acked before the outage is lost.

use crate::client::{Ledger, Step, Visitor};
use crate::harness::{Cluster, Database, Options, check_database, seed_site_and_agent};

const BEFORE: usize = 10;
const AFTER: usize = 10;
const WINDOW: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_conversation_every_node_recovers_by_itself() {
    let database = Database::private().await;
    seed_site_and_agent(&database.url).await;
    let mut cluster = Cluster::start(database, Options::serve(env!("CARGO_BIN_EXE_parley"), 3)).await;
    let ledger = Ledger::default();
    let origin = cluster.public_url();
    // One visitor straight on each node, and one through nginx.
    let mut visitors: Vec<Visitor> = cluster
        .nodes
        .iter()
        .map(|n| Visitor::new(&format!("on-{}", n.name), n.addr, &origin, ledger.clone()))
        .collect();
    visitors.push(Visitor::new("via-nginx", cluster.nginx_addr(), &origin, ledger.clone()));
    for v in &mut visitors {
        v.run(BEFORE, WINDOW).await;
    }
    let acked_before = ledger.snapshot();
    assert_eq!(acked_before.len(), visitors.len() * BEFORE);
    let pids: Vec<Option<u32>> = cluster.nodes.iter().map(|n| n.pid()).collect();

    let postgres = cluster.database.postgres();
    postgres.stop_server().expect("PostgreSQL stops");
    cluster
        .wait_every_node("/readyz 503 naming the database", |status, body| {
            status == 503 && body["failed"].as_array().is_some_and(|f| f.iter().any(|c| c == "database"))
        })
        .await;
    // A message written during the outage is refused (it stays with the client), not acked.
    let during = &mut visitors[0];
    during.send_next().await.expect("the socket is still open");
    match during.answer().await {
        Ok(Step::Refused { code, .. }) => assert_eq!(code, protocol::ErrorCode::Internal),
        Ok(Step::Acked) => panic!("a message was acked while the database was down"),
        Ok(Step::Other) => unreachable!("answer() returns only answers"),
        // The node may also drop the socket: the message stays pending all the same.
        Err(_) => {}
    }
    assert_eq!(during.pending.len(), 1);

    postgres.start_server().expect("PostgreSQL starts again");
    cluster.wait_every_node("/readyz 200 again by itself", |status, _| status == 200).await;
    let now: Vec<Option<u32>> = cluster.nodes.iter().map(|n| n.pid()).collect();
    assert_eq!(now, pids, "no node was restarted");
    for node in &mut cluster.nodes {
        assert!(node.is_running(), "node {} exited:\n{}", node.name, node.log());
    }

    // Posting goes on: every visitor reconnects if its socket went, re-sends what is pending, and writes more.
    for v in &mut visitors {
        v.run(BEFORE + AFTER, WINDOW).await;
    }
    let report = check_database(&cluster.database.url).await;
    let stored = report.seqs_by_client_id();
    for (client_id, seq) in &acked_before {
        assert_eq!(stored.get(client_id), Some(seq), "{client_id}, acked before the outage, is not at its seq");
    }
    let total = visitors.len() * (BEFORE + AFTER);
    assert_eq!(ledger.len(), total, "every message was acked in the end");
    for v in &visitors {
        for n in 0..BEFORE + AFTER {
            assert!(stored.contains_key(&v.message(n).0), "{} was never stored", v.message(n).0);
        }
    }
    assert_eq!(report.doubled, 0, "messages stored twice");
    assert_eq!(report.total_messages, total);
    println!(
        "cluster postgres restart: {} messages acked before the outage kept, 1 refused during it and re-sent, {} \
         stored in the end, lost 0, doubled 0; all 3 nodes back to ready without a restart",
        acked_before.len(),
        report.total_messages
    );
}
