//! The store conformance suite (`support/store_conformance.rs`) on SQLite: each case on a fresh database file.

#[path = "support/store_conformance.rs"]
mod conformance;

use parley::clock::Clock;
use parley::store::Store;

async fn fresh_sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = Store::connect_with_clock(&url, 4, Clock::adjustable()).await.expect("store opens");
    (store, dir)
}

macro_rules! on_sqlite {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (store, _dir) = fresh_sqlite().await;
            conformance::$case(store.clone()).await;
            store.close().await;
        }
    )*};
}

on_sqlite!(
    appends_are_idempotent,
    concurrent_posts_are_gap_free,
    read_cursors_and_unread,
    a_customer_message_reopens,
    mirrored_replies_follow_the_windows,
    link_offers_are_keyed_and_expire,
);
