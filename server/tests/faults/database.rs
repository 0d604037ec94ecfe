//! The database locked by another connection, and the disk full: the visitor gets no ack but an error saying the
//! message was not stored, nothing unstored is acked, and once the database can be written again the re-sent
//! message (same client id) is stored exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use protocol::ErrorCode;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use crate::client::{Ledger, Step, Visitor};
use crate::harness::{Server, check_database};

async fn open_db(path: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).expect("url");
    SqliteConnection::connect_with(&options).await.expect("the test opens the database")
}

async fn stored_count(db: &mut SqliteConnection, client_id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from messages where client_id = ?")
        .bind(client_id)
        .fetch_one(db)
        .await
        .expect("count")
}

/// A visitor that has said hello and has had its first message acked.
async fn visitor_with_one_message(server: &Server, name: &str) -> Visitor {
    let mut visitor = Visitor::new(name, server.addr, &server.origin(), Ledger::default());
    visitor.connect().await.expect("connects");
    visitor.send_next().await.expect("sends");
    assert!(matches!(visitor.answer().await.expect("answer"), Step::Acked));
    visitor
}

/// The next answer must refuse `client_id` as not stored.
async fn expect_not_stored(visitor: &mut Visitor, client_id: &str) {
    let step = visitor.answer().await.expect("an answer, not a dropped socket");
    check_not_stored(step, visitor, client_id);
}

/// `step` must refuse `client_id` as not stored, the message kept pending.
fn check_not_stored(step: Step, visitor: &Visitor, client_id: &str) {
    match step {
        Step::Refused { client_id: refused, code, message } => {
            assert_eq!(refused, client_id);
            assert_eq!(code, ErrorCode::Internal, "{message}");
            assert!(message.contains("not stored"), "the visitor is told it is not stored: {message}");
        }
        other => panic!("expected a refusal while the database cannot be written, got {other:?}"),
    }
    assert_eq!(visitor.pending.len(), 1, "the refused message stays pending");
}

/// Re-sends the pending message, expects its ack, and checks the database holds it once.
async fn resend_and_check_stored_once(visitor: &mut Visitor, server: &Server, client_id: &str) {
    visitor.resend_pending().await.expect("re-sends");
    assert!(matches!(visitor.answer().await.expect("answer"), Step::Acked));
    assert!(visitor.pending.is_empty());
    let report = check_database(&server.db_url()).await;
    assert_eq!(report.integrity.as_deref(), Some("ok"));
    assert_eq!(report.doubled, 0);
    let mut db = open_db(&server.db_path).await;
    assert_eq!(stored_count(&mut db, client_id).await, 1, "the re-sent message is stored exactly once");
    assert_eq!(stored_count(&mut db, &visitor.message(0).0).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_acks_nothing_and_the_resent_message_is_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::set_up(dir.path());
    server.start().await;
    let mut visitor = visitor_with_one_message(&server, "locked").await;

    // Another process holds SQLite's exclusive lock (an operator's sqlite3 shell, a backup, a long migration).
    let mut blocker = open_db(&server.db_path).await;
    blocker.execute("begin exclusive").await.expect("lock");
    visitor.send_next().await.expect("sends");
    let client_id = visitor.message(1).0;
    expect_not_stored(&mut visitor, &client_id).await;
    assert_eq!(stored_count(&mut blocker, &client_id).await, 0, "refused, and indeed not stored");
    blocker.execute("rollback").await.expect("unlock");
    blocker.close().await.expect("close");

    resend_and_check_stored_once(&mut visitor, &server, &client_id).await;
    println!("locked database: 1 send refused while locked, re-sent and stored once after; lost 0, doubled 0");
}

/// Sends the full-disk test makes before the file system must refuse one (the WAL's own space runs out well before).
const MAX_SENDS_WHILE_FULL: usize = 2_000;

/// A small tmpfs mounted for the test (needs root or CAP_SYS_ADMIN, as CI and the dev machines have).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root (or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses more.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    let _ = file.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acks_nothing_and_the_message_is_stored_once_space_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared before the server, so the server is killed before the file system is unmounted.
    let disk = Tmpfs::mount(&dir.path().join("disk"), "16m");
    let mut server = Server::set_up_with_db(dir.path(), &disk.0.join("parley.db"));
    server.start().await;
    let mut visitor = visitor_with_one_message(&server, "full").await;

    let filler = disk.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    // A commit may still fit in space the WAL file already holds (once checkpointed, SQLite writes the WAL again
    // from its start, and overwriting needs no new blocks): such a message is on disk and its ack is true. So send
    // until the WAL must grow: that message, the first refused, is not acked and not stored; each one before it is.
    let mut acked_while_full = Vec::new();
    let client_id = loop {
        assert!(acked_while_full.len() < MAX_SENDS_WHILE_FULL, "the full disk never refused a message");
        visitor.send_next().await.expect("sends");
        let client_id = visitor.message(acked_while_full.len() + 1).0;
        match visitor.answer().await.expect("an answer, not a dropped socket") {
            Step::Acked => acked_while_full.push(client_id),
            step => {
                check_not_stored(step, &visitor, &client_id);
                break client_id;
            }
        }
    };

    std::fs::remove_file(&filler).expect("space is back");
    let mut db = open_db(&server.db_path).await;
    assert_eq!(stored_count(&mut db, &client_id).await, 0, "refused, and indeed not stored");
    for acked in &acked_while_full {
        assert_eq!(stored_count(&mut db, acked).await, 1, "acked while the disk was full, so stored");
    }
    db.close().await.expect("close");
    resend_and_check_stored_once(&mut visitor, &server, &client_id).await;
    println!(
        "full disk: {} acked into the WAL's own space, then 1 refused ({filled} bytes of filler), stored once after; \
         lost 0, doubled 0",
        acked_while_full.len()
    );
}
