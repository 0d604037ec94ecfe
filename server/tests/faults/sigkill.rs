//! SIGKILL while visitors and an agent are sending: after each restart on the same database every acked message
//! is there exactly once at the seq its ack named, clients resume by seq and re-send what was not acked, and
//! SQLite's integrity check passes.

use std::collections::HashMap;

use crate::client::{Agent, Ledger, Visitor};
use crate::harness::{Server, check_database, wait_for};

const VISITORS: usize = 8;
const MESSAGES_PER_VISITOR: usize = 60;
const AGENT_REPLIES: usize = 160;
const WINDOW: usize = 4;
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_doubles_nothing_that_was_acked_or_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::set_up(dir.path());
    server.start().await;
    let cookie = server.agent_cookie().await;
    let ledger = Ledger::default();

    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let mut visitor = Visitor::new(&format!("v{i}"), server.addr, &server.origin(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            visitor.run(MESSAGES_PER_VISITOR, WINDOW).await;
            (visitor.name.clone(), visitor.resent, visitor.seen.clone(), visitor.last_seq)
        }));
    }
    let mut agent = Agent::new(server.addr, &server.origin(), &cookie, ledger.clone());
    let agent_task = tokio::spawn(async move {
        agent.run(AGENT_REPLIES, WINDOW).await;
        agent.resent
    });

    let total = VISITORS * MESSAGES_PER_VISITOR + AGENT_REPLIES;
    let mut acked_at_kill = Vec::new();
    for kill in 1..=KILLS {
        let threshold = total * kill / (KILLS + 1);
        wait_for(&format!("{threshold} acks before kill {kill}"), async || (ledger.len() >= threshold).then_some(()))
            .await;
        server.kill();
        let acked = ledger.snapshot();
        // Nothing that was acked may be missing while the server is down: it was on disk when acked.
        let on_disk = stored_seqs(&check_database(&server.db_url()).await.messages);
        for (client_id, seq) in &acked {
            assert_eq!(on_disk.get(client_id), Some(seq), "acked {client_id} is not on disk after SIGKILL {kill}");
        }
        acked_at_kill.push(acked.len());
        server.start().await;
    }

    let mut resent = 0;
    let mut visitor_logs = Vec::new();
    for task in tasks {
        let (name, visitor_resent, seen, last_seq) = task.await.expect("visitor finished");
        resent += visitor_resent;
        visitor_logs.push((name, seen, last_seq));
    }
    resent += agent_task.await.expect("agent finished");

    let report = check_database(&server.db_url()).await;
    assert_eq!(report.integrity.as_deref(), Some("ok"));
    let stored = stored_seqs(&report.messages);
    let acks = ledger.snapshot();
    for (client_id, seq) in &acks {
        assert_eq!(stored.get(client_id), Some(seq), "acked {client_id} not stored at its acked seq");
    }
    let mut lost = 0;
    for i in 0..VISITORS {
        lost += (0..MESSAGES_PER_VISITOR).filter(|n| !stored.contains_key(&format!("v{i}-{n}"))).count();
    }
    lost += (0..AGENT_REPLIES).filter(|n| !stored.contains_key(&Agent::reply(*n).0)).count();
    assert_eq!(lost, 0, "messages sent but never stored");
    assert_eq!(report.doubled, 0, "messages stored twice");
    assert_eq!(report.total_messages, total, "stored messages besides the ones sent");
    assert_eq!(acks.len(), total, "every message sent was acked in the end");

    // What each visitor applied live is its conversation's log: every own message once, in the order sent.
    for (name, seen, last_seq) in &visitor_logs {
        let own: Vec<&String> =
            seen.iter().map(|(_, id)| id).filter(|id| id.starts_with(&format!("{name}-"))).collect();
        let expected: Vec<String> = (0..MESSAGES_PER_VISITOR).map(|n| format!("{name}-{n}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>(), "{name} saw its messages out of order or not once");
        let conversation = report
            .messages
            .values()
            .find(|m| m.contains_key(&format!("{name}-0")))
            .expect("the visitor's conversation");
        // The agent may reply after the visitor's last frame: compare up to the last seq it applied.
        let mut log: Vec<(u64, String)> = conversation
            .iter()
            .filter(|(_, (seq, _))| *seq <= *last_seq)
            .map(|(id, (seq, _))| (*seq, id.clone()))
            .collect();
        log.sort();
        assert_eq!(seen, &log, "{name}'s applied log differs from the database");
    }
    assert!(resent > 0, "no kill caught a message in flight");
    println!(
        "sigkill: {KILLS} kills (acks before each: {acked_at_kill:?}), {} messages acked, {resent} re-sent after \
         reconnects, lost 0, doubled 0, integrity ok",
        acks.len()
    );
}

/// Client id → stored seq, over every conversation (client ids are unique across the test).
fn stored_seqs(messages: &std::collections::BTreeMap<String, HashMap<String, (u64, String)>>) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for conversation in messages.values() {
        for (client_id, (seq, _)) in conversation {
            assert!(out.insert(client_id.clone(), *seq).is_none(), "{client_id} stored in two conversations");
        }
    }
    out
}
