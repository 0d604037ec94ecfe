//! The one SQLite connection that writes: a thread of its own that runs each caller's whole transaction, and
//! group commit over it.
//!
//! SQLite lets one connection write at a time, so one OS thread owns the only write connection of the process
//! (rusqlite, statements prepared once and cached) and runs callers' jobs on it in the order they asked
//! ([`Writer::run`]): a job is the caller's whole transaction, a closure over the connection, so its statements
//! run back to back on this thread with no hop to the async runtime between them (with sqlx each statement was a
//! channel round trip to sqlx's connection thread and back).
//!
//! Group commit: jobs that queue while a group is open join it. The first job of a group runs right after
//! `BEGIN IMMEDIATE`; each later one inside a `SAVEPOINT` of that transaction, so a job that fails (returns an
//! error, or panics: the panic is caught) is rolled back alone and only its caller hears of it. When no job is
//! waiting (or the group is [`MAX_GROUP`] large) the writer issues one `COMMIT` for all of them, and only then does
//! each caller's `run` return: acked still means on disk, at the connection's `synchronous = FULL`. If that `COMMIT`
//! fails, every caller of the group gets the error and nothing of the group is on disk.
//!
//! The write connection has no busy timeout: the only statements that wait for SQLite's write lock are the group's
//! `BEGIN IMMEDIATE` (and its `COMMIT`), and only when another process (the CLI, an operator's `sqlite3`) holds it;
//! the writer then retries with a back-off, up to [`LOCK_WAIT`], and counts every retry ([`Writer::busy_waits`]), so
//! a test can show that no write of this process ever waits for another writer of this process. A connection left
//! in an unknown state (a failed `ROLLBACK`) is dropped and opened again for the next job.
//!
//! Checkpoints: SQLite's automatic checkpoint runs inside the `COMMIT` that crosses 1,000 pages of WAL, copying the
//! WAL into the database file and fsyncing it while every caller of the group (and every job queued behind it)
//! waits. So the write connection checkpoints itself only as a safety net ([`SELF_CHECKPOINT_PAGES`]); after each
//! group a second thread with its own connection runs a `PASSIVE` checkpoint, which takes no write lock and runs
//! beside the writer's next groups.
//!
//! Under a steady stream of groups that thread's checkpoint never completes (the writer has appended frames by the
//! time it has copied the ones it saw), and SQLite fsyncs the database file only when a checkpoint completes; nor
//! does the WAL start over, which needs a completed one. Left alone, the copied pages pile up unsynced in the page
//! cache while the WAL grows to the safety net, where the writer's own checkpoint fsyncs all of them at once, 20 MB
//! of pages, with every caller waiting (24 ms typical, 73 ms at worst, every second or so at 5,000 webhook
//! deliveries a second). So the checkpoint thread fsyncs the database file itself after each pass that copied
//! pages (SQLite's answer does not say whether it synced them: a redundant fsync finds nothing to write), and once
//! the WAL holds [`RESTART_FRAMES`] it asks the writer to finish the checkpoint between two groups
//! ([`Writer::catch_ups`]): only the frames written since that pass are left to copy and sync, and the writer's
//! next group starts the WAL over.
//!
//! Priority lane: a caller whose answer someone outside is waiting on (a webhook's 200, see
//! [`Writer::run_first`]) goes before every other job waiting, and a group that holds such a job commits as soon
//! as no other priority job waits and at most [`MAX_AFTER_FIRST`] other jobs joined after it, instead of taking
//! every job queued behind (up to [`MAX_GROUP`] of them). So its wait is the job running now, its own work, a few
//! short jobs and one `COMMIT`, however long the queue of background writes (the Messenger intake's waves); the few
//! jobs keep groups from shrinking to one `COMMIT` per priority job when those come often. Starvation-free both ways: each lane is FIFO, and after [`MAX_PASSED`] priority
//! jobs in a row taken while other jobs waited, the oldest of those goes next.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// The most callers one `COMMIT` covers (bounds how long the first of them waits for its ack).
pub const MAX_GROUP: usize = 256;

/// How long a group waits for another process to release SQLite's write lock before its callers get an error.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// WAL pages after which the write connection checkpoints itself (only if the checkpoint thread fell this far
/// behind: 10,000 pages, 20 MB at a new database's 2 KiB, see [`super::PAGE_SIZE`]).
pub const SELF_CHECKPOINT_PAGES: u32 = 10_000;

/// WAL frames after which the checkpoint thread asks the writer to finish a checkpoint between two groups, so the
/// WAL starts over (4,096 frames: 8 MB at 2 KiB pages; see the module doc).
pub const RESTART_FRAMES: i64 = 4_096;

/// The write connection's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// The least time between two checkpoints of the checkpoint thread (each one fsyncs the database file).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Prepared statements kept per connection (every write statement of the store, with room to spare).
const STATEMENT_CACHE: usize = 128;

/// Jobs a group takes after its first priority job before it commits (see the module doc).
pub const MAX_AFTER_FIRST: usize = 4;

/// Priority jobs taken in a row while other jobs wait, before the oldest of those goes (see the module doc).
pub const MAX_PASSED: usize = 16;

/// What the writer tells a kept caller once its group's `COMMIT` has run.
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A caller's transaction, run on the writer thread.
trait Job: Send {
    /// Runs the work on `conn` (inside the group's transaction). `Some` when it is to be kept: the answer waits for
    /// the `COMMIT`; `None` when it failed or panicked (its caller has the error) or its caller is gone.
    fn run(self: Box<Self>, conn: &Connection) -> Option<Answer>;
    /// Answers the caller without running the work.
    fn fail(self: Box<Self>, err: StoreError);
}

struct Call<T, F> {
    work: F,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(self: Box<Self>, conn: &Connection) -> Option<Answer> {
        let Call { work, reply } = *self;
        if reply.is_closed() {
            // The caller stopped waiting: nothing to write for it.
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(Ok(value)) => Some(Box::new(move |committed: Result<(), String>| {
                let _ = reply.send(committed.map(|()| value).map_err(StoreError::Backend));
            })),
            Ok(Err(e)) => {
                let _ = reply.send(Err(e));
                None
            }
            Err(_) => {
                tracing::error!("a database write panicked; its work was rolled back");
                let _ =
                    reply.send(Err(StoreError::Backend("the write failed (it panicked) and was rolled back".into())));
                None
            }
        }
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

enum Request {
    Job(Box<dyn Job>),
    /// A job of the priority lane ([`Writer::run_first`]).
    First(Box<dyn Job>),
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// Counts kept by the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    busy_waits: AtomicU64,
    groups: AtomicU64,
    commits: AtomicU64,
    /// Set by the checkpoint thread: the WAL is long and the writer is to finish the checkpoint after its group.
    catch_up_due: AtomicBool,
    catch_ups: AtomicU64,
}

/// Handle to the writer thread; cheap to clone. The thread ends when the last handle is dropped (or on `close`).
#[derive(Clone, Debug)]
pub struct Writer {
    requests: mpsc::UnboundedSender<Request>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Opens the write connection on the database file at `path` (already migrated) and starts its thread.
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let conn = open(path)?;
        let (requests, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let (checkpoint, wakes) = std::sync::mpsc::sync_channel(1);
        let (checkpoints, asks) = (path.to_path_buf(), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(&checkpoints, &wakes, &asks))?;
        let rx = Lanes::new(rx);
        let thread = Thread { path: path.to_path_buf(), conn: Some(conn), rx, stats: Arc::clone(&stats), checkpoint };
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || thread.serve())?;
        Ok(Self { requests, stats })
    }

    /// Runs `work` as one transaction on the write connection, after the callers ahead, and returns its result
    /// once it is on disk. An error (or a panic) in `work` rolls back `work` alone.
    pub async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.call(Request::Job, work).await
    }

    /// [`Writer::run`] in the priority lane: `work` goes before every job not of that lane waiting, and its group
    /// commits without taking the jobs queued behind. For a write someone outside waits on (a webhook's ack).
    pub async fn run_first<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.call(Request::First, work).await
    }

    async fn call<T, F>(&self, lane: fn(Box<dyn Job>) -> Request, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.requests.send(lane(Box::new(Call { work, reply }))).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Returns once every write queued so far is on disk (a caller that must see a concurrent group committed).
    pub async fn settle(&self) -> StoreResult<()> {
        self.run(|_| Ok(())).await
    }

    /// Lets what is queued finish, then closes the write connection; later writes fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// How often a group waited for SQLite's write lock, held by another process (retries of `BEGIN IMMEDIATE`
    /// or `COMMIT`).
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

    /// Checkpoints the writer finished between two groups at the checkpoint thread's request (see the module doc).
    pub fn catch_ups(&self) -> u64 {
        self.stats.catch_ups.load(Ordering::Relaxed)
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the database writer has stopped".into())
}

/// SQLITE_BUSY and its extended codes (another connection holds the lock).
fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// Opens the write connection: WAL, `synchronous = FULL`, foreign keys on, no busy timeout (see the module doc).
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.execute_batch("pragma journal_mode = wal; pragma synchronous = full; pragma foreign_keys = on;")?;
    conn.pragma_update(None, "wal_autocheckpoint", SELF_CHECKPOINT_PAGES)?;
    // The pages every write touches (the indexes' right edges, the conversations) stay cached: SQLite's default
    // 2 MiB made the writer re-read pages (`pread`: 6 % of its samples in scenario b).
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.saturating_neg())?;
    // A group's savepoints journal the pages they change in a statement journal. SQLite spills one past 64 KiB
    // to a temporary file (created, written and deleted per group: `pwrite`s to /var/tmp/etilqs_* on the writer in
    // scenario c's trace); in memory it is a copy. It holds only what rolls back a savepoint, never committed data.
    conn.pragma_update(None, "temp_store", "memory")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The checkpoint thread: after the writer's groups (at most every [`CHECKPOINT_EVERY`]), a `PASSIVE` checkpoint on
/// a connection of its own; after one that did not complete, an fsync of the database file, and once the WAL is
/// [`RESTART_FRAMES`] long, a request to the writer to finish it (see the module doc). Ends with the writer (when
/// `wakes` closes).
fn checkpointer(path: &Path, wakes: &std::sync::mpsc::Receiver<()>, stats: &WriterStats) {
    let mut state = Checkpointer::default();
    while wakes.recv().is_ok() {
        let started = Instant::now();
        if let Err(e) = checkpoint_pass(path, &mut state, stats) {
            tracing::warn!(error = %e, "WAL checkpoint");
        }
        std::thread::sleep(CHECKPOINT_EVERY.saturating_sub(started.elapsed()));
    }
}

/// What the checkpoint thread keeps between its passes.
#[derive(Default)]
struct Checkpointer {
    conn: Option<Connection>,
    /// The database file, for its fsync.
    file: Option<std::fs::File>,
    /// The WAL's length and the frames copied, as of the last pass.
    last: (i64, i64),
}

/// One pass of the checkpoint thread (see [`checkpointer`]).
fn checkpoint_pass(path: &Path, state: &mut Checkpointer, stats: &WriterStats) -> anyhow::Result<()> {
    let c = match state.conn.take() {
        Some(c) => c,
        None => open(path)?,
    };
    // Frames in the WAL and frames copied into the database file, both as of the pass's start: the two are equal
    // whether or not the writer appended frames meanwhile, so they do not tell whether SQLite synced the file.
    let (_, log, copied): (i64, i64, i64) =
        c.query_row("pragma wal_checkpoint(passive)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    state.conn = Some(c);
    if (log, copied) == state.last {
        return Ok(());
    }
    state.last = (log, copied);
    if copied > 0 {
        // Pages were copied, and SQLite syncs them only if no frame was appended while it copied.
        let f = match state.file.take() {
            Some(f) => f,
            None => std::fs::File::open(path)?,
        };
        f.sync_data()?;
        state.file = Some(f);
    }
    if log >= RESTART_FRAMES {
        stats.catch_up_due.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Finishes the checkpoint on the write connection between two groups, when the checkpoint thread asked for it:
/// it copies and syncs what was written since that thread's last pass, so the next group starts the WAL over.
fn catch_up(conn: &Connection, stats: &WriterStats) {
    if !stats.catch_up_due.swap(false, Ordering::Relaxed) {
        return;
    }
    match conn.query_row("pragma wal_checkpoint(passive)", [], |_| Ok(())) {
        Ok(()) => {
            stats.catch_ups.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint on the write connection"),
    }
}

/// Runs one statement without parameters, prepared once per connection.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `sql`, retrying while another process holds the write lock, up to [`LOCK_WAIT`].
fn exec_waiting(conn: &Connection, sql: &str, stats: &WriterStats) -> rusqlite::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match exec(conn, sql) {
            Err(e) if is_busy(&e) && started.elapsed() < LOCK_WAIT => {
                stats.busy_waits.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Tells every kept caller of a group how it ended.
fn finish(kept: Vec<Answer>, result: &Result<(), String>) {
    for answer in kept {
        answer(result.clone());
    }
}

/// How a group left the connection.
enum Left {
    /// Usable, outside any transaction.
    Clean,
    /// In an unknown state: drop it; the next job opens a new one.
    Lost,
}

/// The writer thread's state.
struct Thread {
    path: PathBuf,
    conn: Option<Connection>,
    rx: Lanes,
    stats: Arc<WriterStats>,
    /// Wakes the checkpoint thread (a full channel means it is already due to run).
    checkpoint: std::sync::mpsc::SyncSender<()>,
}

impl Thread {
    fn serve(mut self) {
        let mut pending: Option<Request> = None;
        loop {
            let request = match pending.take().or_else(|| self.rx.blocking_next()) {
                Some(request) => request,
                None => return,
            };
            let urgent = matches!(request, Request::First(_));
            match request {
                Request::Close(done) => return self.close(done),
                Request::Job(first) | Request::First(first) => {
                    let conn = match self.conn.take() {
                        Some(conn) => conn,
                        None => match open(&self.path) {
                            Ok(conn) => conn,
                            Err(e) => {
                                first.fail(e.into());
                                continue;
                            }
                        },
                    };
                    let left;
                    (left, pending) = group(&conn, (first, urgent), &mut self.rx, &self.stats);
                    let _ = self.checkpoint.try_send(());
                    match left {
                        Left::Clean => {
                            catch_up(&conn, &self.stats);
                            self.conn = Some(conn);
                        }
                        Left::Lost => tracing::warn!("the write connection was left inside a transaction; reopening"),
                    }
                }
            }
        }
    }

    fn close(mut self, done: oneshot::Sender<()>) {
        if let Some(conn) = self.conn.take()
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "closing the write connection");
        }
        self.rx.rx.close();
        let _ = done.send(());
        while let Some(request) = self.rx.blocking_next() {
            match request {
                Request::Close(done) => {
                    let _ = done.send(());
                }
                Request::Job(job) | Request::First(job) => job.fail(stopped()),
            }
        }
    }
}

/// Ends a group whose transaction is to be undone: rolls back, and reports whether the connection is still usable.
fn abandon(conn: &Connection) -> Left {
    if conn.is_autocommit() {
        return Left::Clean;
    }
    match exec(conn, "rollback") {
        Ok(()) => Left::Clean,
        Err(e) => {
            tracing::warn!(error = %e, "rollback of a failed write");
            Left::Lost
        }
    }
}

/// Runs one group: `first` (`true`: of the priority lane), then each job already queued (each in a savepoint), then
/// commits them all; a group holding a priority job commits once no other priority job waits and
/// [`MAX_AFTER_FIRST`] jobs joined after it. Returns how the
/// connection was left and a request taken from the queue that the group did not serve.
fn group(
    conn: &Connection,
    (first, mut urgent): (Box<dyn Job>, bool),
    rx: &mut Lanes,
    stats: &WriterStats,
) -> (Left, Option<Request>) {
    if let Err(e) = exec_waiting(conn, "begin immediate", stats) {
        first.fail(e.into());
        return (abandon(conn), None);
    }
    let mut kept: Vec<Answer> = Vec::new();
    let mut after_first = 0;
    let mut job = first;
    let mut pending = None;
    loop {
        // The group's first kept job needs no savepoint: while nothing is kept, a rollback undoes only its work.
        let savepoint = !kept.is_empty();
        if savepoint && let Err(e) = exec(conn, "savepoint w") {
            let failed = format!("the group's transaction failed: {e}");
            job.fail(e.into());
            let left = abandon(conn);
            finish(kept, &Err(failed));
            return (left, None);
        }
        let answer = job.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk): nothing of the group is kept.
            if let Some(answer) = answer {
                answer(Err("the transaction was rolled back by SQLite".into()));
            }
            finish(kept, &Err("the transaction was rolled back by SQLite".into()));
            return (Left::Clean, None);
        }
        let ended = match (answer, savepoint) {
            (Some(answer), true) => {
                kept.push(answer);
                exec(conn, "release w")
            }
            (Some(answer), false) => {
                kept.push(answer);
                Ok(())
            }
            // Nothing was kept: the transaction held only this job's work.
            (None, false) => return (abandon(conn), None),
            (None, true) => exec(conn, "rollback to w").and_then(|()| exec(conn, "release w")),
        };
        if let Err(e) = ended {
            let left = abandon(conn);
            finish(kept, &Err(format!("the group's transaction failed: {e}")));
            return (left, None);
        }
        if urgent {
            after_first += 1;
        }
        if kept.len() >= MAX_GROUP || (urgent && after_first > MAX_AFTER_FIRST && !rx.first_waiting()) {
            break;
        }
        match rx.try_next() {
            Some(Request::Job(next)) => job = next,
            Some(Request::First(next)) => (job, urgent) = (next, true),
            Some(other) => {
                pending = Some(other);
                break;
            }
            None => break,
        }
    }
    match exec_waiting(conn, "commit", stats) {
        Ok(()) => {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.commits.fetch_add(kept.len() as u64, Ordering::Relaxed);
            finish(kept, &Ok(()));
            (Left::Clean, pending)
        }
        Err(e) => {
            let left = abandon(conn);
            finish(kept, &Err(e.to_string()));
            (left, pending)
        }
    }
}

/// The writer's queue: requests in arrival order, and beside them the priority lane ([`Writer::run_first`]).
struct Lanes {
    rx: mpsc::UnboundedReceiver<Request>,
    first: VecDeque<Box<dyn Job>>,
    rest: VecDeque<Request>,
    /// Priority jobs taken in a row while `rest` was not empty.
    passed: usize,
}

impl Lanes {
    fn new(rx: mpsc::UnboundedReceiver<Request>) -> Self {
        Self { rx, first: VecDeque::new(), rest: VecDeque::new(), passed: 0 }
    }

    fn sort(&mut self, request: Request) {
        match request {
            Request::First(job) => self.first.push_back(job),
            other => self.rest.push_back(other),
        }
    }

    /// Sorts everything sent so far into the two lanes.
    fn take_sent(&mut self) {
        while let Ok(request) = self.rx.try_recv() {
            self.sort(request);
        }
    }

    /// The next request, if any waits: the oldest priority job, unless [`MAX_PASSED`] of them in a row went before
    /// the others waiting.
    fn try_next(&mut self) -> Option<Request> {
        self.take_sent();
        if !self.first.is_empty() && (self.rest.is_empty() || self.passed < MAX_PASSED) {
            if !self.rest.is_empty() {
                self.passed += 1;
            }
            return self.first.pop_front().map(Request::First);
        }
        self.passed = 0;
        self.rest.pop_front()
    }

    /// The next request, waiting for one; `None` once every sender is gone and nothing waits.
    fn blocking_next(&mut self) -> Option<Request> {
        if let Some(request) = self.try_next() {
            return Some(request);
        }
        let request = self.rx.blocking_recv()?;
        self.sort(request);
        self.try_next()
    }

    /// Whether a priority job waits.
    fn first_waiting(&mut self) -> bool {
        self.take_sent();
        !self.first.is_empty()
    }
}

#[cfg(test)]
mod lane_tests;

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;
    use std::sync::Arc;

    use protocol::{Author, Channel};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use super::super::SqliteStore;
    use crate::clock::Clock;
    use crate::store::models::ContactContext;
    use crate::store::{AppendOutcome, ConversationStore, NewMessage, SiteStore, StoreError, StoreResult};

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        SqliteStore::connect(&url, 4, Clock::system()).await.expect("opens")
    }

    /// A store in a temporary directory (kept alive by the first half) with the [`scratch`] tables.
    async fn scratch_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        scratch(&store).await;
        (dir, store)
    }

    /// The writer's counters of COMMITs (groups) and of committed jobs, to take differences of.
    fn counters(store: &SqliteStore) -> (u64, u64) {
        (store.writer.groups(), store.writer.commits())
    }

    /// A scratch table `t`, and `parent`/`child` whose foreign key is checked only at COMMIT.
    async fn scratch(store: &SqliteStore) {
        store
            .writer
            .run(|conn| {
                conn.execute_batch(
                    "create table t (v text primary key);
                     create table parent (id integer primary key);
                     create table child (p integer references parent (id) deferrable initially deferred);",
                )?;
                Ok(())
            })
            .await
            .expect("tables");
    }

    fn insert(conn: &rusqlite::Connection, v: &str) -> StoreResult<()> {
        conn.execute("insert into t (v) values (?)", [v])?;
        Ok(())
    }

    async fn stored(store: &SqliteStore) -> Vec<String> {
        sqlx::query_scalar("select v from t order by v").fetch_all(&store.pool).await.expect("reads")
    }

    /// Three jobs in one group: `a` (which holds the writer until the two others are queued behind it, so they
    /// join its group), then `b` and `c`, the jobs `middle` and `last` make. Returns the three results, once all
    /// are answered.
    async fn group_of_three<B, C>(store: &SqliteStore, middle: B, last: C) -> [StoreResult<()>; 3]
    where
        B: FnOnce(&rusqlite::Connection) -> StoreResult<()> + Send + 'static,
        C: FnOnce(&rusqlite::Connection) -> StoreResult<()> + Send + 'static,
    {
        let (started, running) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let a = store.writer.run(move |conn| {
            insert(conn, "a")?;
            let _ = started.send(());
            released.recv().map_err(|_| StoreError::Backend("never released".into()))?;
            Ok(())
        });
        let b = store.writer.run(middle);
        let c = store.writer.run(last);
        tokio::pin!(a, b, c);
        // Each first poll queues its job: a first, and b and c only once a runs (so they wait behind it).
        assert!(futures_util::poll!(&mut a).is_pending());
        running.await.expect("a runs");
        assert!(futures_util::poll!(&mut b).is_pending() && futures_util::poll!(&mut c).is_pending());
        assert!(stored(store).await.is_empty(), "nothing of the group is visible before its COMMIT");
        release.send(()).expect("a waits");
        let (a, b, c) = tokio::join!(a, b, c);
        [a, b, c]
    }

    /// A visitor's web message "hello" (also for the other tests of the SQLite store).
    pub(in crate::store::sqlite) fn message(client_id: String) -> NewMessage {
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

    /// Three callers in one group: the middle one fails (a unique violation). It alone is rolled back; the other
    /// two are committed by the group's one COMMIT, and each one's `run` returns only after it.
    #[tokio::test]
    async fn a_failing_caller_in_a_group_is_rolled_back_alone() {
        let (_dir, store) = scratch_store().await;
        let (groups, commits) = counters(&store);
        let [a, b, c] = group_of_three(
            &store,
            |conn| {
                insert(conn, "b")?;
                insert(conn, "a")
            },
            |conn| insert(conn, "c"),
        )
        .await;
        assert!(a.is_ok() && c.is_ok(), "a and c committed: {a:?} {c:?}");
        assert!(b.is_err(), "a duplicate fails");
        assert_eq!(stored(&store).await, ["a", "c"], "a and c kept, b rolled back alone");
        let (groups_after, commits_after) = counters(&store);
        assert_eq!((groups_after - groups, commits_after - commits), (1, 2), "one COMMIT for the group's two writes");
    }

    /// A job that panics halfway is caught: its caller gets an error, its work is rolled back (also what it wrote
    /// before the panic), the rest of its group is committed, and the writer thread goes on serving.
    #[tokio::test]
    async fn a_panicking_job_is_rolled_back_alone_and_the_writer_survives() {
        let (_dir, store) = scratch_store().await;
        let [a, b, c] = group_of_three(
            &store,
            |conn| {
                insert(conn, "b")?;
                panic!("a bug in a write");
            },
            |conn| insert(conn, "c"),
        )
        .await;
        assert!(a.is_ok() && c.is_ok(), "a and c committed: {a:?} {c:?}");
        assert!(matches!(b, Err(StoreError::Backend(_))), "the panicking caller gets an error: {b:?}");
        assert_eq!(stored(&store).await, ["a", "c"]);

        // The first job of a group panics: nothing of it stays, and the next job still runs.
        let first = store
            .writer
            .run(|conn| -> StoreResult<()> {
                insert(conn, "d")?;
                panic!("again");
            })
            .await;
        assert!(first.is_err());
        store.writer.run(|conn| insert(conn, "e")).await.expect("the writer still writes");
        assert_eq!(stored(&store).await, ["a", "c", "e"]);
    }

    /// When the group's COMMIT fails (here a foreign key checked only at COMMIT, broken by the middle caller),
    /// every caller of the group gets the error, nothing of the group is on disk, and the writer is clean after.
    #[tokio::test]
    async fn a_failing_commit_fails_every_caller_of_the_group() {
        let (_dir, store) = scratch_store().await;
        let (groups, commits) = counters(&store);
        let [a, b, c] = group_of_three(
            &store,
            |conn| {
                conn.execute("insert into child (p) values (1)", [])?;
                Ok(())
            },
            |conn| insert(conn, "c"),
        )
        .await;
        for (name, result) in [("a", a), ("b", b), ("c", c)] {
            assert!(result.is_err(), "{name} was told it committed: {result:?}");
        }
        assert!(stored(&store).await.is_empty(), "nothing of the failed group is on disk");
        let children: i64 =
            sqlx::query_scalar("select count(*) from child").fetch_one(&store.pool).await.expect("reads");
        assert_eq!(children, 0);
        let (groups_after, commits_after) = counters(&store);
        assert_eq!((groups_after - groups, commits_after - commits), (0, 0));
        store.writer.run(|conn| insert(conn, "after")).await.expect("the next write starts clean");
        assert_eq!(stored(&store).await, ["after"]);
    }

    /// A first caller that fails leaves nothing behind, and the next caller starts a clean transaction.
    #[tokio::test]
    async fn a_failing_first_caller_leaves_the_writer_clean() {
        let (_dir, store) = scratch_store().await;
        let failed = store
            .writer
            .run(|conn| {
                insert(conn, "gone")?;
                Err::<(), _>(StoreError::Conflict("no".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Conflict(_))), "the caller gets its own error: {failed:?}");
        store.writer.run(|conn| insert(conn, "kept")).await.expect("committed");
        assert_eq!(stored(&store).await, ["kept"]);
    }

    /// `close` lets the queued writes finish; writes after it fail instead of hanging.
    #[tokio::test]
    async fn close_drains_the_queue_then_refuses() {
        let (_dir, store) = scratch_store().await;
        let queued: Vec<_> = (0..20).map(|n| store.writer.run(move |conn| insert(conn, &format!("q{n:02}")))).collect();
        let all = futures_util::future::join_all(queued);
        tokio::pin!(all);
        // The first poll queues all twenty, then close queues behind them.
        let early = futures_util::poll!(&mut all);
        store.writer.close().await;
        let results = match early {
            std::task::Poll::Ready(results) => results,
            std::task::Poll::Pending => all.await,
        };
        assert!(results.iter().all(Result::is_ok), "every write queued before close lands");
        assert_eq!(stored(&store).await.len(), 20);
        assert!(store.writer.run(|conn| insert(conn, "late")).await.is_err());
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
        let (groups, commits) = counters(&store);
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
        let (groups_after, commits_after) = counters(&store);
        let (posts, commit_statements) = (commits_after - commits, groups_after - groups);
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
        assert!(!writer.is_finished(), "the write went ahead while another process held the lock");
        sqlx::query("commit").execute(&mut other).await.expect("lock released");
        other.close().await.expect("closes");
        assert!(matches!(writer.await.expect("joins").expect("lands"), AppendOutcome::Created { seq: 41, .. }));
    }

    /// COMMITs do not checkpoint (the write connection's own threshold is far above SQLite's 1,000 pages); the
    /// checkpoint thread copies the WAL into the database file. 3 MB of WAL (about 750 pages, under SQLite's
    /// default threshold too) reaches the database file only through that thread.
    #[tokio::test]
    async fn the_checkpoint_thread_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let threshold: i64 = store
            .writer
            .run(|conn| {
                conn.execute_batch("create table blobs (b blob)")?;
                Ok(conn.query_row("pragma wal_autocheckpoint", [], |r| r.get(0))?)
            })
            .await
            .expect("reads the pragma");
        assert_eq!(threshold, i64::from(super::SELF_CHECKPOINT_PAGES));
        let db = dir.path().join("w.db");
        let size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        let before = size();
        for _ in 0..30 {
            store
                .writer
                .run(|conn| {
                    conn.execute("insert into blobs (b) values (randomblob(100000))", [])?;
                    Ok(())
                })
                .await
                .expect("written");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < before + 3_000_000 {
            assert!(std::time::Instant::now() < deadline, "the WAL never reached the database file");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Under a steady stream of groups (four callers that each write again as soon as they are answered, so the
    /// checkpoint thread's checkpoint never completes on its own), the WAL still starts over near
    /// [`super::RESTART_FRAMES`]: the writer finishes the checkpoint between two groups when asked. Without that
    /// the WAL grew to the write connection's safety net ([`super::SELF_CHECKPOINT_PAGES`], 20 MB), whose
    /// checkpoint then synced all of it with every caller waiting. The WAL file never shrinks, so its length at
    /// the end is the longest it was.
    #[tokio::test]
    async fn under_a_steady_stream_of_groups_the_wal_starts_over_without_reaching_the_safety_net() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(store(&dir).await);
        store
            .writer
            .run(|conn| {
                conn.execute_batch(
                    "create table blobs (id integer primary key, b blob);
                     with recursive n(i) as (select 1 union all select i + 1 from n where i < 64)
                     insert into blobs (id, b) select i, randomblob(16000) from n;",
                )?;
                Ok(())
            })
            .await
            .expect("creates");
        // About 8 pages a write: 4,000 writes are 32,000 frames, over three times the safety net.
        let writers = (0..4_i64).map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..1_000_i64 {
                    let id = (w * 16 + i % 16) + 1;
                    store
                        .writer
                        .run(move |conn| {
                            conn.execute("update blobs set b = randomblob(16000) where id = ?1", [id])?;
                            Ok(())
                        })
                        .await
                        .expect("written");
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.expect("joins");
        }
        let frame = i64::from(super::super::PAGE_SIZE) + 24;
        let wal = std::fs::metadata(dir.path().join("w.db-wal")).expect("a WAL").len();
        let frames = (i64::try_from(wal).expect("fits") - 32) / frame;
        let catch_ups = store.writer.catch_ups();
        println!("WAL at most {frames} frames ({wal} bytes); {catch_ups} checkpoints finished by the writer");
        assert!(catch_ups >= 1, "the writer never finished a checkpoint");
        // Where it starts over depends on how much is written between two passes of the checkpoint thread (here
        // about 1,500 frames a pass, so at most about 5,900); the safety net is 10,000.
        assert!(
            frames < i64::from(super::SELF_CHECKPOINT_PAGES) - 1_000,
            "the WAL grew to {frames} frames (starts over near {}; safety net {})",
            super::RESTART_FRAMES,
            super::SELF_CHECKPOINT_PAGES
        );
    }

    /// The write connection keeps statement journals (a group's savepoints) in memory: no temporary file is
    /// created, written and deleted per group.
    #[tokio::test]
    async fn savepoint_journals_stay_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let temp_store: i64 =
            store.writer.run(|conn| Ok(conn.query_row("pragma temp_store", [], |r| r.get(0))?)).await.expect("reads");
        assert_eq!(temp_store, 2, "temp_store = memory");
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
