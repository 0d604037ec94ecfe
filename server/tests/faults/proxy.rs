//! A visitor talks to the real server through the fault proxy while each fault is injected mid-stream: latency,
//! a cut, a reset and a blackhole. The visitor reconnects with `hello` and its last seq and re-sends what was not
//! acked; in the end every message is in the conversation exactly once, in the order it was sent.

use std::net::SocketAddr;
use std::time::Duration;

use faultproxy::FaultProxy;

use crate::client::{Ledger, Step, Visitor};
use crate::harness::{Server, check_database, wait_for};

/// Messages sent while each fault is in force.
const PER_FAULT: usize = 12;
const WINDOW: usize = 6;

/// Sends `PER_FAULT` more messages pipelined; `inject` runs once the first of them is acked, while the rest are
/// in flight. Returns after every message is acked (reconnecting as often as the faults require).
async fn send_through(visitor: &mut Visitor, inject: &mut dyn FnMut()) {
    let target = visitor.sent + PER_FAULT;
    let mut injected = false;
    while visitor.sent < target || !visitor.pending.is_empty() {
        let mut alive = true;
        while alive && visitor.sent < target && visitor.pending.len() < WINDOW {
            alive = visitor.send_next().await.is_ok();
        }
        match visitor.step().await {
            Ok(Step::Acked) if !injected => {
                injected = true;
                inject();
            }
            Ok(Step::Refused { client_id, code, message }) => panic!("{client_id} refused: {code:?} {message}"),
            Ok(_) => {}
            Err(_) => visitor.reconnect().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_latency_cuts_resets_and_blackholes_every_message_arrives_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::set_up(dir.path());
    server.start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), server.addr).await.expect("proxy");
    let mut visitor = Visitor::new("p", proxy.local_addr(), &server.origin(), Ledger::default());
    visitor.reconnect().await;
    let mut faults = 0;

    // Latency: 40 ms each way for the whole batch.
    proxy.set_latency(Duration::from_millis(40));
    send_through(&mut visitor, &mut || {}).await;
    proxy.set_latency(Duration::ZERO);
    faults += 1;

    // A cut and a reset while messages are in flight.
    for reset in [false, true] {
        let before = visitor.reconnects;
        send_through(&mut visitor, &mut || {
            let killed = if reset { proxy.reset() } else { proxy.cut() };
            assert!(killed >= 1, "the visitor's connection goes through the proxy");
        })
        .await;
        assert!(visitor.reconnects > before, "the visitor had to reconnect");
        faults += 1;
    }

    // A blackhole: with messages in flight the network stops forwarding. Once a frame is surely stuck in it,
    // the visitor gives up on the connection (as its liveness check would), the network comes back (delivering
    // what it held to the old connection, so the server may store those messages after all), and the visitor
    // reconnects and re-sends everything unacked.
    let before = visitor.reconnects;
    for _ in 0..WINDOW {
        visitor.send_next().await.expect("sends");
    }
    proxy.set_blackhole(true);
    visitor.send_next().await.expect("a write into a blackhole succeeds");
    wait_for("a frame held in the blackhole", async || (proxy.held_bytes() > 0).then_some(())).await;
    visitor.abandon();
    proxy.set_blackhole(false);
    visitor.reconnect().await;
    while !visitor.pending.is_empty() {
        match visitor.step().await {
            Ok(Step::Refused { client_id, code, message }) => panic!("{client_id} refused: {code:?} {message}"),
            Ok(_) => {}
            Err(_) => visitor.reconnect().await,
        }
    }
    assert!(visitor.reconnects > before);
    faults += 1;
    visitor.catch_up().await;

    // Every message once, in the order sent: in the visitor's applied log and in the database.
    let sent: Vec<String> = (0..visitor.sent).map(|n| visitor.message(n).0).collect();
    let applied: Vec<String> = visitor.seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(applied, sent, "the visitor's log holds every message once, in order");
    let report = check_database(&server.db_url()).await;
    assert_eq!(report.integrity.as_deref(), Some("ok"));
    assert_eq!(report.doubled, 0);
    let conversation = report.messages.values().next().expect("one conversation");
    let mut stored: Vec<(u64, String)> = conversation.iter().map(|(id, (seq, _))| (*seq, id.clone())).collect();
    stored.sort();
    assert_eq!(stored.into_iter().map(|(_, id)| id).collect::<Vec<_>>(), sent, "stored once each, in order");
    println!(
        "fault proxy: {faults} faults (latency, cut, reset, blackhole), {} messages, {} reconnects, {} re-sent, \
         lost 0, doubled 0, out of order 0",
        visitor.sent, visitor.reconnects, visitor.resent
    );
}
