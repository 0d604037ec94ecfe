//! What a webhook 200 means: the raw delivery is in the database before it (on PostgreSQL shared by every node, so
//! it survives the death of the node that acked it); the node-local spool is only a fallback for a database that
//! cannot take it, drained into the database once it is back; when both fail, Meta gets a 5xx and retries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::Event;
use sqlx::Connection;

use crate::helpers::{MessengerApp, TestApp, spawn_messenger_app};
use crate::messenger::{WAIT, customer, is_message, wait_for_messages};

/// The app's spool folder.
fn spool_dir(app: &TestApp) -> PathBuf {
    app.state.settings.messenger.spool_dir.clone()
}

fn spooled(app: &TestApp) -> usize {
    std::fs::read_dir(spool_dir(app)).expect("spool folder").count()
}

/// Puts a plain file where the spool folder was, so every spool write fails (even for root, which a read-only
/// folder would not stop).
fn break_spool(app: &TestApp) {
    let dir = spool_dir(app);
    std::fs::remove_dir_all(&dir).expect("spool folder removed");
    std::fs::write(&dir, b"not a folder").expect("a file in its place");
}

fn mend_spool(app: &TestApp) {
    let dir = spool_dir(app);
    std::fs::remove_file(&dir).expect("the file removed");
    std::fs::create_dir(&dir).expect("spool folder again");
}

async fn pg_count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count");
    conn.close().await.expect("close");
    n
}

fn messages_saying(events: &[Event], body: &str) -> usize {
    events.iter().filter(|e| is_message(e, body)).count()
}

/// Polls `done` until it holds or [`WAIT`] passes.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long [`statuses`] waits for Meta's answers: longer than the 30 s the outage tests give the sandbox to
/// record one, so on a loaded machine a slow answer is still read as the answer it was (200 or 5xx), not as none.
const ANSWER_WAIT: Duration = Duration::from_secs(35);

/// Every attempt Meta made for its deliveries so far, in order.
async fn statuses(sandbox: &messenger_sandbox::Sandbox, n: usize) -> Vec<Option<u16>> {
    let deliveries = sandbox.wait_for_deliveries(n, ANSWER_WAIT).await.expect("delivered");
    deliveries.iter().flat_map(|d| d.attempts.iter().map(|a| a.status)).collect()
}

/// A private cluster (stopping it must not disturb other tests) and a Messenger app on its `postgres` database.
async fn messenger_app_on_own_cluster() -> (Arc<testpg::Cluster>, MessengerApp) {
    let cluster = tokio::task::spawn_blocking(testpg::Cluster::start).await.expect("join").expect("cluster starts");
    let url = cluster.admin_url();
    let app = spawn_messenger_app(|sandbox, settings| {
        settings.database.url = url;
        // These tests ask what the answer was (200 or 5xx), not how fast it came: on a loaded machine the
        // handler's 2 s database bound plus scheduling can pass the sandbox's default 5 s, which would record no
        // status at all.
        sandbox.webhook_timeout = Duration::from_secs(30);
    })
    .await;
    (Arc::new(cluster), app)
}

async fn on_cluster(cluster: &Arc<testpg::Cluster>, what: fn(&testpg::Cluster) -> anyhow::Result<()>) {
    let cluster = Arc::clone(cluster);
    tokio::task::spawn_blocking(move || what(&cluster)).await.expect("join").expect("pg_ctl");
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// POSTs delivery `n` (an empty one, for the app's Page), signed, on a task of its own: the status it is answered.
fn post_delivery(app: &TestApp, n: usize) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
    let page = &app.state.settings.messenger.page_id;
    let body = format!(r#"{{"object":"page","entry":[{{"id":"{page}","time":{n},"messaging":[]}}]}}"#);
    let signature = parley::messenger::signature::sign_sha256(b"sandbox-app-secret-0123456789abcdef", body.as_bytes());
    let request = app.http.post(app.url("/webhooks/messenger")).header("x-hub-signature-256", signature).body(body);
    tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
}

#[tokio::test]
async fn on_postgres_an_acked_delivery_is_in_the_database_before_the_200_and_never_spooled() {
    let database = testpg::database().await;
    let url = database.url.clone();
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, settings| settings.database.url = url).await;
    let psid = customer(&sandbox, "Durable");
    // A spool write would fail the request: a 200 can only come from the database.
    break_spool(&app);
    sandbox.user_sends_text(&psid, "in the database first").expect("send");
    assert_eq!(statuses(&sandbox, 1).await, vec![Some(200)], "acked at the first attempt");
    let body = sandbox.webhook_deliveries()[0].body.clone();
    let mut conn = sqlx::PgConnection::connect(&database.url).await.expect("connect");
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("select body from webhook_deliveries").fetch_all(&mut conn).await.expect("rows");
    assert_eq!(rows, vec![body.into_bytes()], "the raw delivery, byte for byte, is a row");
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "in the database first"), 1);
}

#[tokio::test]
async fn on_postgres_a_delivery_during_an_outage_is_spooled_acked_and_stored_once_when_it_returns() {
    let (cluster, MessengerApp { app, sandbox }) = messenger_app_on_own_cluster().await;
    let url = cluster.admin_url();
    let psid = customer(&sandbox, "Outage");
    on_cluster(&cluster, testpg::Cluster::stop_server).await;
    sandbox.user_sends_text(&psid, "while PostgreSQL is down").expect("send");
    assert_eq!(statuses(&sandbox, 1).await, vec![Some(200)], "acked from the spool");
    assert_eq!(spooled(&app), 1, "the fallback is on this node's disk");
    assert_eq!(sandbox.webhook_deliveries().len(), 1);
    on_cluster(&cluster, testpg::Cluster::start_server).await;
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "while PostgreSQL is down"), 1);
    let dir = spool_dir(&app);
    until("the spool is drained", || async { empty(&dir) }).await;
    until("every delivery is processed", || async {
        pg_count(&url, "select count(*) from webhook_deliveries where processed_at is null").await == 0
    })
    .await;
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "while PostgreSQL is down"), 1, "stored once");
}

#[tokio::test]
async fn on_sqlite_a_delivery_while_the_database_is_locked_is_spooled_acked_and_stored_once_after() {
    let MessengerApp { app, sandbox } = spawn_messenger_app(|_, _| {}).await;
    let psid = customer(&sandbox, "Locked");
    let blocker = app.hold_write_lock().await;
    sandbox.user_sends_text(&psid, "while SQLite is locked").expect("send");
    assert_eq!(statuses(&sandbox, 1).await, vec![Some(200)], "acked from the spool");
    assert_eq!(spooled(&app), 1, "the fallback is on disk");
    blocker.release().await;
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "while SQLite is locked"), 1);
    let dir = spool_dir(&app);
    until("the spool is drained", || async { empty(&dir) }).await;
    until("every delivery is processed", || async {
        app.query_i64("select count(*) from webhook_deliveries where processed_at is null").await == 0
    })
    .await;
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "while SQLite is locked"), 1, "stored once");
}

#[tokio::test]
async fn with_the_database_and_the_spool_both_failing_nothing_is_acked_and_the_retry_is_stored_once() {
    let (cluster, MessengerApp { app, sandbox }) = messenger_app_on_own_cluster().await;
    let psid = customer(&sandbox, "Nowhere");
    on_cluster(&cluster, testpg::Cluster::stop_server).await;
    break_spool(&app);
    sandbox.user_sends_text(&psid, "stored nowhere").expect("send");
    until("Meta's first attempt is answered", || async {
        sandbox.webhook_deliveries().iter().any(|d| !d.attempts.is_empty())
    })
    .await;
    let attempt = sandbox.webhook_deliveries()[0].attempts[0].clone();
    assert!(attempt.status.is_some_and(|s| s >= 500), "not acked: {attempt:?}");
    mend_spool(&app);
    on_cluster(&cluster, testpg::Cluster::start_server).await;
    // Meta's retry (the sandbox's virtual clock moved past its backoff).
    sandbox.advance(Duration::from_secs(3600));
    let events = wait_for_messages(&app, &psid, 1).await;
    assert_eq!(messages_saying(&events, "stored nowhere"), 1);
    assert!(statuses(&sandbox, 1).await.last().is_some_and(|s| *s == Some(200)));
}

/// Deliveries that arrive together land together: 300 signed deliveries posted at once are each acked from the
/// database (the spool is broken, so a 200 can come from nowhere else), each stored once byte for byte, in far
/// fewer transactions than deliveries (one per batch, see `messenger::landing`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_land_in_shared_transactions_each_acked_from_the_database() {
    const DELIVERIES: usize = 300;
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    break_spool(&app);
    let page = app.state.settings.messenger.page_id.clone();
    let landing = &app.state.messenger.as_ref().expect("Messenger on").landing;
    let before = landing.batches();
    let bodies: Vec<String> = (0..DELIVERIES)
        .map(|n| format!(r#"{{"object":"page","entry":[{{"id":"{page}","time":{n},"messaging":[]}}]}}"#))
        .collect();
    let posts = bodies.iter().map(|body| {
        let signature =
            parley::messenger::signature::sign_sha256(b"sandbox-app-secret-0123456789abcdef", body.as_bytes());
        app.http.post(app.url("/webhooks/messenger")).header("x-hub-signature-256", signature).body(body.clone()).send()
    });
    let answers = futures_util::future::join_all(posts).await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status() == 200)), "every delivery acked");
    let mut conn = sqlx::SqliteConnection::connect(&app.db_url).await.expect("connect");
    let mut stored: Vec<String> = sqlx::query_scalar::<_, Vec<u8>>("select body from webhook_deliveries")
        .fetch_all(&mut conn)
        .await
        .expect("rows")
        .into_iter()
        .map(|b| String::from_utf8(b).expect("text"))
        .collect();
    conn.close().await.expect("close");
    stored.sort();
    let mut sent = bodies.clone();
    sent.sort();
    assert_eq!(stored, sent, "every acked delivery is a row, once, byte for byte");
    let batches = landing.batches() - before;
    assert!(batches < DELIVERIES as u64 / 2, "{batches} transactions for {DELIVERIES} deliveries");
}

/// The landing hands the next batch to the store while the one before it still waits for its commit: with the
/// table locked, a second delivery's insert waits on the lock beside the first's (a landing that waited for each
/// commit before starting the next would leave it queued in the process, and only one insert would wait). Both are
/// acked from the database, once each, when the lock goes.
#[tokio::test]
async fn on_postgres_a_delivery_lands_while_the_batch_before_it_still_waits_for_its_commit() {
    let database = testpg::database().await;
    let url = database.url.clone();
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, settings| settings.database.url = url).await;
    // A spool write would fail the request: a 200 can only come from the database.
    break_spool(&app);
    let mut holder = sqlx::PgConnection::connect(&database.url).await.expect("connect");
    sqlx::query("begin").execute(&mut holder).await.expect("begin");
    sqlx::query("lock table webhook_deliveries in access exclusive mode").execute(&mut holder).await.expect("lock");
    let post = |n: usize| post_delivery(&app, n);
    let waiting = "select count(*) from pg_locks where not granted and relation = 'webhook_deliveries'::regclass";
    let first = post(1);
    until("the first delivery's insert waits on the lock", || async { pg_count(&database.url, waiting).await == 1 })
        .await;
    let second = post(2);
    // Well inside the handler's 2 s bound on the database, after which both would spool (and fail: no spool).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while pg_count(&database.url, waiting).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the second delivery never reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("commit").execute(&mut holder).await.expect("unlock");
    assert_eq!(first.await.expect("join").expect("answered"), 200);
    assert_eq!(second.await.expect("join").expect("answered"), 200);
    assert_eq!(pg_count(&database.url, "select count(*) from webhook_deliveries").await, 2, "each stored once");
}

/// A batch takes its deliveries when the writer gets to it, not when it is formed: while another process holds
/// SQLite's write lock, the first delivery's batch waits for the write connection, and twenty deliveries that
/// arrive meanwhile join it. When the lock goes, all twenty-one land in that one transaction, each acked from the
/// database (the spool is broken). A landing that formed batches as deliveries came would have handed over one
/// batch per delivery up to its in-flight limit, and the rest in another transaction after those.
#[tokio::test]
async fn on_sqlite_deliveries_arriving_while_a_batch_waits_for_the_writer_join_it() {
    const LATER: usize = 20;
    let MessengerApp { app, sandbox: _sandbox } = spawn_messenger_app(|_, _| {}).await;
    break_spool(&app);
    let landing = &app.state.messenger.as_ref().expect("Messenger on").landing;
    let blocker = app.hold_write_lock().await;
    let before = landing.batches();
    let post = |n: usize| post_delivery(&app, n);
    let mut answers = vec![post(0)];
    until("the first delivery waits for a batch", || async { landing.waiting() == 1 }).await;
    answers.extend((1..=LATER).map(post));
    // Well inside the handler's 2 s bound on the database, after which they would spool (and fail: no spool).
    until("every delivery waits", || async { landing.waiting() == LATER + 1 }).await;
    blocker.release().await;
    for answer in answers {
        assert_eq!(answer.await.expect("join").expect("answered"), 200, "acked from the database");
    }
    assert_eq!(app.query_i64("select count(*) from webhook_deliveries").await, (LATER + 1) as i64, "each stored once");
    assert_eq!(landing.batches() - before, 1, "one transaction for all of them");
}
