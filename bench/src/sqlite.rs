//! The storage baseline: raw SQLite (rusqlite, no pool, no async hops) on Parley's own schema (its migrations),
//! running Parley's own transaction for a visitor message, as `append_message` writes it today — one upsert of the
//! conversation that takes the next sequence number and updates the inbox columns, the message, its event — on
//! Parley's page size, in WAL mode with `synchronous = FULL`, the durability Parley acks at. `per_commit` messages share one transaction, each
//! after the first inside its own `SAVEPOINT` (as Parley's group commit runs them): 1 is one message per commit,
//! 100 the ceiling a group-committing single writer could reach.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, params};

/// Parley's migrations, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("../../server/migrations/sqlite/20261125000000_init.sql"),
    include_str!("../../server/migrations/sqlite/20261125000001_messenger.sql"),
    include_str!("../../server/migrations/sqlite/20261201000100_messenger_trust.sql"),
    include_str!("../../server/migrations/sqlite/20261201000400_outbox_lease.sql"),
    include_str!("../../server/migrations/sqlite/20261201000731_site_identity.sql"),
    include_str!("../../server/migrations/sqlite/20261201001500_inbox_counters.sql"),
    include_str!("../../server/migrations/sqlite/20261201002000_workspaces.sql"),
    include_str!("../../server/migrations/sqlite/20261201003000_nodes.sql"),
    include_str!("../../server/migrations/sqlite/20261202007000_events_rowid.sql"),
    include_str!("../../server/migrations/sqlite/20261202007001_messages_seq_key.sql"),
    include_str!("../../server/migrations/sqlite/20261202008000_outbox_leased.sql"),
];

/// Messages committed and how long it took.
pub struct Outcome {
    pub messages: u64,
    pub elapsed: Duration,
}

fn open(path: &Path, contacts: usize) -> anyhow::Result<Connection> {
    let db = Connection::open(path).context("open the database")?;
    // The page size Parley creates its own databases with (set before the first write creates the file's header).
    db.pragma_update(None, "page_size", parley::store::sqlite::PAGE_SIZE)?;
    db.pragma_update(None, "journal_mode", "wal")?;
    db.pragma_update(None, "synchronous", "full")?;
    db.pragma_update(None, "foreign_keys", "on")?;
    for sql in MIGRATIONS {
        db.execute_batch(sql).context("apply Parley's migrations")?;
    }
    let now = 0_i64;
    db.execute(
        "insert into sites (id, key, name, allowed_origins, created_at, updated_at) values ('s', 'bench', 'Bench', '[]', ?1, ?1)",
        params![now],
    )?;
    let tx = db.unchecked_transaction()?;
    for i in 0..contacts {
        tx.execute(
            "insert into contacts (id, site_id, label, created_at, updated_at) values (?1, 's', 'Visitor', ?2, ?2)",
            params![format!("contact-{i}"), now],
        )?;
    }
    tx.commit()?;
    Ok(db)
}

/// One visitor message, as Parley's `append_message` writes it.
fn append(tx: &rusqlite::Transaction<'_>, contact: &str, n: u64) -> anyhow::Result<()> {
    let now = n as i64;
    let body = format!("message {n}");
    let (id, seq): (String, i64) = tx
        .prepare_cached(
            "insert into conversations (id, site_id, contact_id, status, last_seq, last_message, unread_count,
                last_activity_at, created_at, updated_at)
             values (?1, 's', ?2, 'open', 1, ?3, 1, ?4, ?4, ?4)
             on conflict(contact_id) do update set last_seq = last_seq + 1, last_message = excluded.last_message,
                unread_count = unread_count + excluded.unread_count, last_activity_at = excluded.last_activity_at,
                updated_at = excluded.updated_at
             returning id, site_id, contact_id, status, last_seq, agent_read_seq, visitor_read_seq",
        )?
        .query_row(params![format!("conv-{contact}-{n}"), contact, body, now], |r| Ok((r.get(0)?, r.get(4)?)))?;
    let message_id = format!("m-{n}");
    tx.prepare_cached(
        "insert into messages (id, conversation_id, seq, client_id, author_role, agent_id, author_name, channel,
            body, external_id, created_at) values (?1, ?2, ?3, ?4, 'visitor', null, null, 'web', ?5, null, ?6)",
    )?
    .execute(params![message_id, id, seq, format!("c-{n}"), body, now])?;
    let payload = serde_json::json!({"seq": seq, "at": now, "type": "message", "message": {
        "id": message_id, "client_id": format!("c-{n}"), "author": {"role": "visitor"}, "body": body,
        "sent_at": now, "channel": "web"}})
    .to_string();
    tx.prepare_cached("insert into events (conversation_id, seq, payload, created_at) values (?1, ?2, ?3, ?4)")?
        .execute(params![id, seq, payload, now])?;
    Ok(())
}

/// Writes messages from `contacts` visitors in turn for `duration`, `per_commit` to a transaction.
pub fn run(dir: &Path, contacts: usize, per_commit: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let mut db = open(&dir.join(format!("raw-{per_commit}.db")), contacts)?;
    let names: Vec<String> = (0..contacts).map(|i| format!("contact-{i}")).collect();
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < duration {
        let tx = db.transaction()?;
        for i in 0..per_commit.max(1) {
            // Every message after the group's first runs in a savepoint, so a failing one would be undone alone.
            if i > 0 {
                tx.prepare_cached("savepoint w")?.execute([])?;
            }
            append(&tx, &names[n as usize % contacts], n)?;
            if i > 0 {
                tx.prepare_cached("release w")?.execute([])?;
            }
            n += 1;
        }
        tx.commit()?;
    }
    Ok(Outcome { messages: n, elapsed: start.elapsed() })
}
