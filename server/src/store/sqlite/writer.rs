//! The one SQLite connection that writes, and group commit over it.
//!
//! SQLite lets one connection write at a time. Instead of several pooled connections contending for the file lock
//! (the losers sleep in SQLite's busy handler: the 1.0–1.6 s stalls the benchmark found), one task owns the only
//! write connection of the process and lends it to one caller at a time, in the order they asked
//! ([`Writer::begin`] returns a [`WriteTx`] that derefs to the connection).
//!
//! Group commit: callers that queue while a transaction is open join it. The first caller of a group starts
//! `BEGIN IMMEDIATE`; each later one runs inside a `SAVEPOINT` of that transaction, so a caller whose work fails
//! (an error, or a `WriteTx` dropped without [`WriteTx::commit`]) is rolled back alone. When no caller is waiting
//! (or the group is [`MAX_GROUP`] large) the writer issues one `COMMIT` for all of them, and only then does each
//! caller's `commit` return: acked still means on disk, at the connection's `synchronous = FULL`. If that `COMMIT`
//! fails, every caller of the group gets the error and nothing of the group is on disk.
//!
//! The write connection has no busy timeout: the only statement that waits for SQLite's write lock is the group's
//! `BEGIN IMMEDIATE`, and only when another process (the CLI, an operator's `sqlite3`) holds it; the writer then
//! retries with an async back-off, up to [`LOCK_WAIT`], and counts every retry ([`Writer::busy_waits`]), so a
//! test can show that no write of this process ever waits for another writer of this process.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// The most callers one `COMMIT` covers (bounds how long the first of them waits for its ack).
pub const MAX_GROUP: usize = 256;

/// How long a group waits for another process to release SQLite's write lock before its callers get an error.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What a caller asks the writer for: the connection, inside the open transaction.
enum Request {
    Lease(oneshot::Sender<StoreResult<WriteTx>>),
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// How a caller gave the connection back.
enum Outcome {
    /// Keep the work; the sender hears once the group's `COMMIT` is on disk.
    Commit(oneshot::Sender<StoreResult<()>>),
    /// Undo the work (an error, or the transaction was dropped).
    Rollback,
}

struct Returned {
    conn: SqliteConnection,
    outcome: Outcome,
}

/// Counts kept by the writer task.
#[derive(Debug, Default)]
pub struct WriterStats {
    busy_waits: AtomicU64,
    groups: AtomicU64,
    commits: AtomicU64,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    requests: mpsc::UnboundedSender<Request>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer task on `conn` (already migrated); `options` reopens the connection if it is ever lost.
    pub fn start(conn: SqliteConnection, options: SqliteConnectOptions) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(run(conn, options, rx, Arc::clone(&stats)));
        Self { requests, stats }
    }

    /// The write connection, inside a transaction, once the callers ahead have given it back.
    pub async fn begin(&self) -> StoreResult<WriteTx> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Lease(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Lets what is queued finish, then closes the write connection; later writes fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// How often a group waited for SQLite's write lock, held by another process (retries of `BEGIN IMMEDIATE`).
    pub fn busy_waits(&self) -> u64 {
        self.stats.busy_waits.load(Ordering::Relaxed)
    }

    /// Groups committed so far.
    pub fn groups(&self) -> u64 {
        self.stats.groups.load(Ordering::Relaxed)
    }

    /// Callers' transactions committed so far (in [`Writer::groups`] commits).
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }
}

/// The write connection lent to one caller, inside the group's transaction. [`WriteTx::commit`] keeps the work
/// (returning once it is on disk); dropping it rolls the work back.
pub struct WriteTx {
    conn: Option<SqliteConnection>,
    back: Option<oneshot::Sender<Returned>>,
}

impl WriteTx {
    /// Keeps this caller's work and waits until the group's `COMMIT` is durable.
    pub async fn commit(mut self) -> StoreResult<()> {
        let (done, committed) = oneshot::channel();
        let (Some(conn), Some(back)) = (self.conn.take(), self.back.take()) else { return Err(stopped()) };
        back.send(Returned { conn, outcome: Outcome::Commit(done) }).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let (Some(conn), Some(back)) = (self.conn.take(), self.back.take()) {
            let _ = back.send(Returned { conn, outcome: Outcome::Rollback });
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // `conn` is only taken by `commit` and `drop`, which consume the transaction.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lent connection is present until given back"))
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lent connection is present until given back"))
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the database writer has stopped".into())
}

fn backend(e: &sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// SQLITE_BUSY and its extended codes (another connection holds the lock).
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}

/// Opens the write connection: no busy timeout (see the module doc).
pub async fn open(options: &SqliteConnectOptions) -> sqlx::Result<SqliteConnection> {
    options.clone().busy_timeout(Duration::ZERO).connect().await
}

/// Runs `sql` (one or several statements, no parameters) on the write connection.
/// (Boxed: the spawned writer future must be `Send` for every lifetime, which sqlx's executor bounds only give
/// through a concrete future type.)
fn raw<'a>(conn: &'a mut SqliteConnection, sql: &'a str) -> BoxFuture<'a, sqlx::Result<()>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
}

/// Runs `sql`, retrying while another process holds the write lock, up to [`LOCK_WAIT`].
fn raw_waiting<'a>(
    conn: &'a mut SqliteConnection,
    sql: &'a str,
    stats: &'a WriterStats,
) -> BoxFuture<'a, sqlx::Result<()>> {
    Box::pin(raw_waiting_inner(conn, sql, stats))
}

async fn raw_waiting_inner(conn: &mut SqliteConnection, sql: &str, stats: &WriterStats) -> sqlx::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match raw(conn, sql).await {
            Err(e) if is_busy(&e) && started.elapsed() < LOCK_WAIT => {
                stats.busy_waits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Tells every kept caller of a group how it ended.
fn finish(kept: Vec<oneshot::Sender<StoreResult<()>>>, result: &Result<(), String>) {
    for caller in kept {
        let _ = caller.send(result.clone().map_err(StoreError::Backend));
    }
}

async fn run(
    conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<WriterStats>,
) {
    let mut conn = Some(conn);
    let mut pending: Option<Request> = None;
    loop {
        let request = match pending.take() {
            Some(request) => request,
            None => match rx.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        match request {
            Request::Close(done) => {
                if let Some(conn) = conn.take() {
                    let _ = conn.close().await;
                }
                rx.close();
                let _ = done.send(());
                while let Some(request) = rx.recv().await {
                    if let Request::Close(done) = request {
                        let _ = done.send(());
                    }
                }
                return;
            }
            Request::Lease(first) => {
                let c = match conn.take() {
                    Some(c) => c,
                    None => match open(&options).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = first.send(Err(backend(&e)));
                            continue;
                        }
                    },
                };
                (conn, pending) = group(c, first, &mut rx, &stats).await;
            }
        }
    }
}

/// Runs one group: lends the connection to `first`, then to each caller already queued, then commits them all.
/// Returns the connection (`None` if it was lost) and a request taken from the queue that the group did not serve.
async fn group(
    mut c: SqliteConnection,
    first: oneshot::Sender<StoreResult<WriteTx>>,
    rx: &mut mpsc::UnboundedReceiver<Request>,
    stats: &WriterStats,
) -> (Option<SqliteConnection>, Option<Request>) {
    if let Err(e) = raw_waiting(&mut c, "begin immediate", stats).await {
        let _ = first.send(Err(backend(&e)));
        return (Some(c), None);
    }
    let mut kept: Vec<oneshot::Sender<StoreResult<()>>> = Vec::new();
    // What ends the last caller's savepoint; run together with the next statement, to save a round trip.
    let mut end: &'static str = "";
    let mut caller = first;
    let mut pending = None;
    loop {
        // The group's first kept caller needs no savepoint: while nothing is kept, a rollback undoes only its work.
        let savepoint = !kept.is_empty();
        if savepoint && let Err(e) = raw(&mut c, &format!("{end}savepoint w")).await {
            // SQLite rolled the group's transaction back (e.g. an I/O error): nothing of it is kept.
            let _ = caller.send(Err(backend(&e)));
            let _ = raw(&mut c, "rollback").await;
            finish(kept, &Err(e.to_string()));
            return (Some(c), None);
        }
        let (back, returned) = oneshot::channel();
        let outcome = match caller.send(Ok(WriteTx { conn: Some(c), back: Some(back) })) {
            Ok(()) => match returned.await {
                Ok(returned) => {
                    c = returned.conn;
                    returned.outcome
                }
                Err(_) => {
                    // The connection went away with its caller (a panic while lent); the next request reopens it.
                    finish(kept, &Err("the write connection was lost".into()));
                    return (None, None);
                }
            },
            Err(unsent) => {
                // The caller stopped waiting before it got the connection.
                let Some(taken) = unsent.ok().and_then(|mut tx| {
                    tx.back = None;
                    tx.conn.take()
                }) else {
                    finish(kept, &Err("the write connection was lost".into()));
                    return (None, None);
                };
                c = taken;
                Outcome::Rollback
            }
        };
        match outcome {
            Outcome::Commit(done) => {
                kept.push(done);
                end = if savepoint { "release w; " } else { "" };
            }
            Outcome::Rollback if !savepoint => {
                // Nothing was kept: the transaction held only this caller's work.
                if let Err(e) = raw(&mut c, "rollback").await {
                    tracing::debug!(error = %e, "rollback of a failed write");
                }
                return (Some(c), None);
            }
            Outcome::Rollback => end = "rollback to w; release w; ",
        }
        if kept.len() >= MAX_GROUP {
            break;
        }
        match rx.try_recv() {
            Ok(Request::Lease(next)) => caller = next,
            Ok(other) => {
                pending = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    let committed = match raw(&mut c, &format!("{end}commit")).await {
        // `end` ran; only the COMMIT waits (another process's lock): retry it alone.
        Err(e) if is_busy(&e) => raw_waiting(&mut c, "commit", stats).await,
        other => other,
    };
    let result = match committed {
        Ok(()) => {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.commits.fetch_add(kept.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let _ = raw(&mut c, "rollback").await;
            Err(e.to_string())
        }
    };
    finish(kept, &result);
    (Some(c), pending)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;
    use std::sync::Arc;

    use protocol::{Author, Channel};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use super::super::SqliteStore;
    use crate::clock::Clock;
    use crate::store::models::ContactContext;
    use crate::store::{AppendOutcome, ConversationStore, NewMessage, SiteStore};

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        SqliteStore::connect(&url, 4, Clock::system()).await.expect("opens")
    }

    async fn scratch(store: &SqliteStore) {
        let mut tx = store.writer.begin().await.expect("lent");
        sqlx::query("create table t (v text primary key)").execute(&mut *tx).await.expect("table");
        tx.commit().await.expect("committed");
    }

    async fn insert(tx: &mut super::WriteTx, v: &str) -> sqlx::Result<()> {
        sqlx::query("insert into t (v) values (?)").bind(v).execute(&mut **tx).await.map(|_| ())
    }

    async fn stored(store: &SqliteStore) -> Vec<String> {
        sqlx::query_scalar("select v from t order by v").fetch_all(&store.pool).await.expect("reads")
    }

    fn message(client_id: String) -> NewMessage {
        NewMessage {
            client_id,
            body: "hello".into(),
            author: Author::Visitor,
            agent_id: None,
            channel: Channel::Web,
            external_id: None,
            attachments: Vec::new(),
            messenger_action_at: None,
            mirror: None,
        }
    }

    /// Three callers in one group: the middle one fails (a unique violation, then its transaction is dropped). It
    /// alone is rolled back; the other two are committed by the group's one COMMIT, and each one's `commit` returns
    /// only after it.
    #[tokio::test]
    async fn a_failing_caller_in_a_group_is_rolled_back_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        scratch(&store).await;
        let (groups, commits) = (store.writer.groups(), store.writer.commits());

        let mut a = store.writer.begin().await.expect("a lent");
        insert(&mut a, "a").await.expect("a inserts");
        // b and c queue while a holds the connection.
        let b = store.writer.begin();
        let c = store.writer.begin();
        tokio::pin!(b, c);
        assert!(futures_util::poll!(&mut b).is_pending() && futures_util::poll!(&mut c).is_pending());
        let a_commit = tokio::spawn(a.commit());

        let mut b = b.await.expect("b lent, in a's group");
        insert(&mut b, "b").await.expect("b inserts");
        assert!(insert(&mut b, "a").await.is_err(), "a duplicate fails");
        drop(b);

        let mut c = c.await.expect("c lent, in the same group");
        insert(&mut c, "c").await.expect("c inserts");
        // Nothing of the group is visible to readers before its COMMIT.
        assert!(stored(&store).await.is_empty(), "not committed yet");
        c.commit().await.expect("c committed");
        a_commit.await.expect("joins").expect("a committed");

        assert_eq!(stored(&store).await, ["a", "c"], "a and c kept, b rolled back alone");
        assert_eq!(store.writer.groups() - groups, 1, "one COMMIT for the group");
        assert_eq!(store.writer.commits() - commits, 2);
    }

    /// A first caller that fails leaves nothing behind, and the next caller starts a clean transaction.
    #[tokio::test]
    async fn a_failing_first_caller_leaves_the_writer_clean() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        scratch(&store).await;
        let mut a = store.writer.begin().await.expect("lent");
        insert(&mut a, "gone").await.expect("inserts");
        drop(a);
        let mut b = store.writer.begin().await.expect("lent");
        insert(&mut b, "kept").await.expect("inserts");
        b.commit().await.expect("committed");
        assert_eq!(stored(&store).await, ["kept"]);
    }

    /// 400 concurrent posts into 10 conversations: every one commits, sequence numbers stay unique and gap-free,
    /// commits are grouped (fewer COMMITs than posts), and no write of this process ever waited for SQLite's write
    /// lock (`busy_waits` counts every such wait). The control half shows that the counter counts: a connection of
    /// another "process" holding the lock makes the writer wait, and the write still lands after it lets go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_posts_are_grouped_gap_free_and_never_wait_for_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(store(&dir).await);
        let site = store.create_site("s", "S", &[], "hi").await.expect("site");
        let mut contacts = Vec::new();
        for i in 0..10u8 {
            let contact = store.contact_for_token(&site.id, &[i; 32], "V", &ContactContext::default()).await;
            contacts.push(contact.expect("contact").id);
        }
        let (groups, commits) = (store.writer.groups(), store.writer.commits());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..400 {
            let (store, site_id, contact_id) = (Arc::clone(&store), site.id.clone(), contacts[n % 10].clone());
            tasks.spawn(async move { store.append_message(&contact_id, &site_id, message(format!("c-{n}"))).await });
        }
        let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task").expect("committed") {
                AppendOutcome::Created { conversation_id, seq, .. } => {
                    seqs.entry(conversation_id).or_default().push(seq)
                }
                AppendOutcome::Duplicate { .. } => panic!("every client id is new"),
            }
        }
        assert_eq!(seqs.len(), 10);
        for (_, mut seq) in seqs {
            seq.sort_unstable();
            assert_eq!(seq, (1..=40).collect::<Vec<u64>>(), "gap-free and unique");
        }
        let (posts, commit_statements) = (store.writer.commits() - commits, store.writer.groups() - groups);
        println!("400 concurrent posts: {commit_statements} COMMITs");
        assert_eq!(posts, 400);
        assert!(commit_statements < posts, "grouped: {commit_statements} COMMITs for {posts} posts");
        assert_eq!(store.writer.busy_waits(), 0, "a write of this process waited for the lock");

        // Control: another connection holds the write lock for a moment.
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let mut other = SqliteConnectOptions::from_str(&url).expect("url").connect().await.expect("opens");
        sqlx::query("begin immediate").execute(&mut other).await.expect("lock taken");
        let writer = {
            let (store, site_id, contact_id) = (Arc::clone(&store), site.id.clone(), contacts[0].clone());
            tokio::spawn(async move { store.append_message(&contact_id, &site_id, message("late".into())).await })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.writer.busy_waits() == 0 {
            assert!(std::time::Instant::now() < deadline, "the writer never waited for the held lock");
            tokio::task::yield_now().await;
        }
        sqlx::query("commit").execute(&mut other).await.expect("lock released");
        other.close().await.expect("closes");
        assert!(matches!(writer.await.expect("joins").expect("lands"), AppendOutcome::Created { seq: 41, .. }));
    }

    #[tokio::test]
    async fn the_read_connections_cannot_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let wrote = sqlx::query(
            "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at)
             values ('x', 'x', 'x', '[]', '', 0, 0)",
        )
        .execute(&store.pool)
        .await;
        assert!(wrote.is_err(), "a read connection wrote");
    }
}
