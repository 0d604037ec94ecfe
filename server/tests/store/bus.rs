//! The bus between nodes (`store::bus`), at the store seam: SQLite has none (one node); on PostgreSQL a published
//! batch reaches every subscription in order, a subscription whose connection is killed says so instead of going
//! quiet, and node leases decide presence — only live other nodes count, and a dead node is reaped exactly once
//! however many nodes reap at the same moment.

use parley::clock::Clock;
use parley::store::Store;
use sqlx::Connection;

use crate::conformance::Engine;

async fn postgres() -> (Store, String) {
    let db = Engine::Postgres.database().await;
    let store = Store::connect_with_clock(&db.url, 4, Clock::system()).await.expect("store opens");
    (store, db.url)
}

#[tokio::test]
async fn sqlite_has_no_bus_and_postgres_has_one() {
    let db = Engine::Sqlite.database().await;
    let sqlite = Store::connect(&db.url, 2).await.expect("store opens");
    assert!(sqlite.bus().is_none());
    let (pg, _) = postgres().await;
    assert!(pg.bus().is_some());
}

#[tokio::test]
async fn a_batch_reaches_every_subscription_in_order_and_a_killed_subscription_reports_it() {
    let (store, url) = postgres().await;
    let bus = store.bus().expect("a bus");
    let mut first = bus.listen("node-1").await.expect("subscribes");
    let mut second = bus.listen("node-2").await.expect("subscribes");
    let batch: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    bus.publish(&batch).await.expect("published");
    for listener in [&mut first, &mut second] {
        for want in &batch {
            assert_eq!(&listener.recv().await.expect("a payload"), want);
        }
    }
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    let killed: bool = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'parley-bus node-1'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("found by its name");
    assert!(killed);
    let lost = tokio::time::timeout(std::time::Duration::from_secs(10), first.recv()).await.expect("not silent");
    assert!(lost.is_err(), "a dead subscription is reported: {lost:?}");
    // The other subscription is untouched.
    bus.publish(&["d".to_string()]).await.expect("published");
    assert_eq!(second.recv().await.expect("a payload"), "d");
}

#[tokio::test]
async fn presence_counts_live_other_nodes_only_and_a_dead_node_is_reaped_exactly_once() {
    let (store, _) = postgres().await;
    let bus = store.bus().expect("a bus");
    let now = store.clock().now_ms();
    bus.heartbeat("n1", now + 1_000, &["c1".into(), "shared".into()]).await.expect("beat");
    bus.heartbeat("n2", now + 60_000, &["c2".into(), "shared".into()]).await.expect("beat");
    let asked: Vec<String> = ["c1", "c2", "shared", "nobody"].map(String::from).to_vec();
    let mut seen = bus.online_elsewhere("n2", &asked, now).await.expect("read");
    seen.sort();
    assert_eq!(seen, ["c1", "shared"], "n2's own sockets do not count as elsewhere");
    // Past n1's lease its rows count for nothing, even before anyone reaps them.
    let later = now + 2_000;
    assert!(bus.online_elsewhere("n2", &asked, later).await.expect("read").is_empty());
    let mut from_n3 = bus.online_elsewhere("n3", &asked, later).await.expect("read");
    from_n3.sort();
    assert_eq!(from_n3, ["c2", "shared"], "n2 is alive, n1 is not");
    // Three nodes reap at once: n1's contacts come back once in all.
    let (a, b, c) = tokio::join!(
        bus.reap_dead_nodes("n2", later),
        bus.reap_dead_nodes("n3", later),
        bus.reap_dead_nodes("n4", later)
    );
    let reaped: Vec<_> = [a, b, c].into_iter().map(|r| r.expect("reaped")).collect();
    assert_eq!(reaped.iter().map(|r| r.nodes).sum::<u64>(), 1, "one of the three reaped n1");
    let mut contacts: Vec<String> = reaped.into_iter().flat_map(|r| r.contacts).collect();
    contacts.sort();
    assert_eq!(contacts, ["c1", "shared"]);
    // A heartbeat repairs a node's rows to exactly its sockets; leaving removes them.
    bus.presence_join("n2", "c3").await.expect("join");
    bus.heartbeat("n2", later + 60_000, &["c2".into()]).await.expect("beat");
    let mut left = bus
        .online_elsewhere("n9", &asked.iter().cloned().chain(["c3".into()]).collect::<Vec<_>>(), later)
        .await
        .expect("read");
    left.sort();
    assert_eq!(left, ["c2"]);
    assert_eq!(bus.leave("n2").await.expect("leave"), ["c2".to_string()], "leaving names who was here");
    assert!(bus.online_elsewhere("n9", &["c2".into()], later).await.expect("read").is_empty());
}
