//! The SQLite backend of the store: the connection pool, migrations (`server/migrations/sqlite`) and every query.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction is on disk: callers ack a message
//! only after `append_message` returns.
//!
//! One writer: SQLite lets one connection write at a time, so every write goes through a pool of exactly one
//! connection (`writer`), and writers queue for it in order instead of several connections contending for the file
//! lock and sleeping in the busy handler (which stalled commits by a second and more under load). Reads use their
//! own read-only connections (`pool`), which WAL lets run beside the writer. `busy_timeout` still covers other
//! processes writing the same file (the CLI, an operator's `sqlite3`).

mod agents;
mod attachments;
mod conversations;
mod identity;
mod messenger;
mod ops;
mod sites;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::sqlx_common::on_unique;
use super::{Backend, StoreResult};
use crate::clock::Clock;

/// The store on one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Read-only connections.
    pool: SqlitePool,
    /// The one connection that writes.
    writer: SqlitePool,
    clock: Clock,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite:…`) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create database folder {}", dir.display()))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Writes queue here; a write waiting longer than this fails instead of hanging its caller.
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .context("cannot open the SQLite database")?;
        let pool =
            SqlitePoolOptions::new().max_connections(max_connections.max(1)).connect_lazy_with(options.read_only(true));
        let store = Self { pool, writer, clock };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every pending migration; refuses to continue on failure.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.writer).await.context("database migration failed")
    }

    /// Now, from the store's clock.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use protocol::{Author, Channel};

    use super::SqliteStore;
    use crate::clock::Clock;
    use crate::store::models::ContactContext;
    use crate::store::{AppendOutcome, ConversationStore, NewMessage, SiteStore};

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

    /// Concurrent posts queue for the one write connection: all commit, sequence numbers stay gap-free per
    /// conversation, and no second connection ever writes. Prints the slowest commit (compare with the pooled
    /// writers this replaced, which stalled in SQLite's busy handler).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_posts_queue_for_the_one_writer_and_stay_gap_free() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = Arc::new(SqliteStore::connect(&url, 8, Clock::system()).await.expect("opens"));
        let site = store.create_site("s", "S", &[], "hi").await.expect("site");
        let mut contacts = Vec::new();
        for i in 0..10u8 {
            let contact = store.contact_for_token(&site.id, &[i; 32], "V", &ContactContext::default()).await;
            contacts.push(contact.expect("contact").id);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..200 {
            let (store, site_id, contact_id) = (Arc::clone(&store), site.id.clone(), contacts[n % 10].clone());
            tasks.spawn(async move {
                let started = Instant::now();
                let outcome = store.append_message(&contact_id, &site_id, message(format!("c-{n}"))).await;
                (outcome, started.elapsed())
            });
        }
        let mut slowest = Duration::ZERO;
        let mut seqs: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (outcome, took) = joined.expect("task");
            slowest = slowest.max(took);
            match outcome.expect("committed") {
                AppendOutcome::Created { conversation_id, seq, .. } => {
                    seqs.entry(conversation_id).or_default().push(seq)
                }
                AppendOutcome::Duplicate { .. } => panic!("every client id is new"),
            }
            assert!(store.writer.size() <= 1, "a second connection writes");
        }
        println!("200 concurrent posts into 10 conversations: slowest commit {slowest:?}");
        assert_eq!(seqs.len(), 10);
        for (_, mut seq) in seqs {
            seq.sort_unstable();
            assert_eq!(seq, (1..=20).collect::<Vec<u64>>(), "gap-free and unique");
        }
    }

    #[tokio::test]
    async fn the_read_connections_cannot_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let store = SqliteStore::connect(&url, 2, Clock::system()).await.expect("opens");
        let wrote = sqlx::query(
            "insert into sites (id, key, name, allowed_origins, greeting, created_at, updated_at)
                values ('x', 'x', 'x', '[]', '', 0, 0)",
        )
        .execute(&store.pool)
        .await;
        assert!(wrote.is_err(), "a read connection wrote");
    }
}
