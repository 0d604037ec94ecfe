//! The writer's priority lane ([`super::Writer::run_first`]): a priority job queued behind background jobs runs
//! and commits before them, and neither lane starves the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{MAX_AFTER_FIRST, MAX_PASSED, Writer};
use crate::store::{StoreError, StoreResult};

type Pending = Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>;

/// A writer on a fresh database file with a scratch table `t`.
async fn writer(dir: &tempfile::TempDir) -> Writer {
    let writer = Writer::start(&dir.path().join("lanes.db")).expect("starts");
    writer
        .run(|conn| {
            conn.execute_batch("create table t (v text)")?;
            Ok(())
        })
        .await
        .expect("table");
    writer
}

fn insert(conn: &rusqlite::Connection, v: &str) -> StoreResult<()> {
    conn.execute("insert into t (v) values (?)", [v])?;
    Ok(())
}

/// Starts a job that holds the writer thread until the returned sender is used (or dropped), and returns once it
/// runs: everything queued meanwhile waits behind it.
async fn hold(writer: &Writer) -> (std::sync::mpsc::Sender<()>, Pending) {
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let mut held: Pending = Box::pin({
        let writer = writer.clone();
        async move {
            writer
                .run(move |conn| {
                    insert(conn, "held")?;
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
        }
    });
    assert!(futures_util::poll!(&mut held).is_pending());
    running.await.expect("the holding job runs");
    (release, held)
}

/// Queues `job` (its first poll sends it to the writer) and returns it, still pending.
async fn queued(mut job: Pending) -> Pending {
    assert!(futures_util::poll!(&mut job).is_pending(), "a queued job waits behind the held writer");
    job
}

/// 100 background jobs are queued behind a held writer, then one priority job. The priority job runs before every
/// one of them, and its COMMIT does not wait for them all: at most [`MAX_AFTER_FIRST`] join its group, and its
/// caller has its answer while the next background job (which then holds the writer) is still running. In one FIFO
/// the priority job would wait for that gated job, and time out here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_job_behind_background_jobs_runs_and_commits_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = writer(&dir).await;
    let (release, held) = hold(&writer).await;
    let (gate_open, gate) = std::sync::mpsc::channel::<()>();
    let mut gate = Some(gate);
    let mut background = Vec::new();
    for n in 0..100 {
        let w = writer.clone();
        // The first background job after the priority job's group holds the writer until the priority caller has
        // its answer.
        let gate = if n == MAX_AFTER_FIRST { gate.take() } else { None };
        background.push(
            queued(Box::pin(async move {
                w.run(move |conn| {
                    if let Some(gate) = gate {
                        let _ = gate.recv();
                    }
                    insert(conn, "background")
                })
                .await
            }))
            .await,
        );
    }
    let w = writer.clone();
    let first = queued(Box::pin(async move {
        w.run_first(|conn| {
            let ahead: i64 = conn.query_row("select count(*) from t where v = 'background'", [], |r| r.get(0))?;
            if ahead != 0 {
                return Err(StoreError::Backend(format!("{ahead} background jobs ran before the priority job")));
            }
            insert(conn, "first")
        })
        .await
    }))
    .await;
    release.send(()).expect("the held job waits");
    let answered = tokio::time::timeout(Duration::from_secs(5), first).await;
    // Let the background jobs finish whatever happened, so the writer thread is never left blocked.
    drop(gate_open);
    let answered = answered.expect("the priority job waited for the background jobs queued before it");
    answered.expect("the priority job ran before every background job and committed");
    held.await.expect("the held job committed with it");
    for job in background {
        job.await.expect("every background job still commits");
    }
    let rows: i64 =
        writer.run(|conn| Ok(conn.query_row("select count(*) from t", [], |r| r.get(0))?)).await.expect("counts");
    assert_eq!(rows, 102);
}

/// Neither lane starves: with 5 × [`MAX_PASSED`] priority jobs queued behind one background job, the background
/// job runs after at most [`MAX_PASSED`] of them (and not before the first: they do go first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_priority_jobs_does_not_starve_background_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = writer(&dir).await;
    let (release, held) = hold(&writer).await;
    let priority_ran = Arc::new(AtomicUsize::new(0));
    let seen_by_background = Arc::new(AtomicUsize::new(usize::MAX));
    let mut jobs = Vec::new();
    {
        let (w, ran, seen) = (writer.clone(), Arc::clone(&priority_ran), Arc::clone(&seen_by_background));
        jobs.push(
            queued(Box::pin(async move {
                w.run(move |_| {
                    seen.store(ran.load(Ordering::SeqCst), Ordering::SeqCst);
                    Ok(())
                })
                .await
            }))
            .await,
        );
    }
    for _ in 0..5 * MAX_PASSED {
        let (w, ran) = (writer.clone(), Arc::clone(&priority_ran));
        jobs.push(
            queued(Box::pin(async move {
                w.run_first(move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }))
            .await,
        );
    }
    release.send(()).expect("the held job waits");
    held.await.expect("committed");
    for job in futures_util::future::join_all(jobs).await {
        job.expect("committed");
    }
    let seen = seen_by_background.load(Ordering::SeqCst);
    assert!(seen <= MAX_PASSED, "the background job ran only after {seen} priority jobs went before it");
    assert!(seen > 0, "priority jobs queued after the background job went first (it saw {seen})");
    assert_eq!(priority_ran.load(Ordering::SeqCst), 5 * MAX_PASSED);
}

/// The priority lane bounds only groups that hold a priority job: 300 background jobs (the outbox's and the
/// intake's writes) queued behind a held writer, with no priority job anywhere, commit in groups of the full
/// [`super::MAX_GROUP`] (the held job's group takes 255 of them, the next group the other 45), not in groups of
/// [`MAX_AFTER_FIRST`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_jobs_behind_no_priority_job_commit_in_full_groups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = writer(&dir).await;
    let (release, held) = hold(&writer).await;
    let (groups, commits) = (writer.groups(), writer.commits());
    let mut background = Vec::new();
    for _ in 0..300 {
        let w = writer.clone();
        background.push(queued(Box::pin(async move { w.run(|conn| insert(conn, "background")).await })).await);
    }
    release.send(()).expect("the held job waits");
    held.await.expect("committed");
    for job in futures_util::future::join_all(background).await {
        job.expect("committed");
    }
    assert_eq!(writer.commits() - commits, 301);
    assert_eq!(writer.groups() - groups, 2, "301 jobs in groups of up to {} each", super::MAX_GROUP);
}
