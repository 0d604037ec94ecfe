//! The database check every fault and cluster test ends with, on either engine (sqlx's `Any` driver; the SQL is
//! written once, with `$N` parameters, which SQLite reads as numbered ones too): every conversation's event log
//! numbered 1..=last_seq without gaps or repeats and agreeing with `conversations.last_seq`, messages stored twice
//! counted, and on SQLite its integrity check.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use sqlx::{Connection, Row};

/// What the database holds once the dust has settled.
pub struct DbReport {
    /// `PRAGMA integrity_check` on SQLite; `None` on PostgreSQL (it has no such check).
    pub integrity: Option<String>,
    /// Per conversation: client id → (seq, body) of every message.
    pub messages: BTreeMap<String, HashMap<String, (u64, String)>>,
    /// Messages stored more than once (a client id or a body twice in one conversation).
    pub doubled: usize,
    pub total_messages: usize,
}

impl DbReport {
    /// Client id → stored seq over every conversation (client ids are unique across a test).
    pub fn seqs_by_client_id(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for conversation in self.messages.values() {
            for (client_id, (seq, _)) in conversation {
                assert!(out.insert(client_id.clone(), *seq).is_none(), "{client_id} stored in two conversations");
            }
        }
        out
    }
}

/// Opens the database at `url` (`sqlite://…` or `postgres://…`) from the test and checks it (see the module).
pub async fn check_database(url: &str) -> DbReport {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(url).await.expect("the test opens the database");
    let integrity = if url.starts_with("sqlite:") {
        Some(sqlx::query_scalar("pragma integrity_check").fetch_one(&mut db).await.expect("pragma"))
    } else {
        None
    };
    let conversations =
        sqlx::query("select id, last_seq from conversations").fetch_all(&mut db).await.expect("conversations");
    let mut report = DbReport { integrity, messages: BTreeMap::new(), doubled: 0, total_messages: 0 };
    for row in conversations {
        let id: String = row.get("id");
        let last_seq: i64 = row.get("last_seq");
        let seqs: Vec<i64> = sqlx::query_scalar("select seq from events where conversation_id = $1 order by seq")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .expect("events");
        assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "conversation {id}: event log not 1..=last_seq");
        let rows = sqlx::query("select client_id, seq, body from messages where conversation_id = $1")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .expect("messages");
        let mut by_client = HashMap::new();
        let mut bodies = HashMap::<String, usize>::new();
        for m in rows {
            let body: String = m.get("body");
            *bodies.entry(body.clone()).or_default() += 1;
            let seq: i64 = m.get("seq");
            let client_id: Option<String> = m.get("client_id");
            let key = client_id.unwrap_or_else(|| format!("(no client id) seq {seq}"));
            if by_client.insert(key, (u64::try_from(seq).expect("seq"), body)).is_some() {
                report.doubled += 1;
            }
            report.total_messages += 1;
        }
        report.doubled += bodies.values().map(|n| n - 1).sum::<usize>();
        report.messages.insert(id, by_client);
    }
    db.close().await.expect("close");
    report
}
