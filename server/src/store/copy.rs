//! `parley db copy`: moves a whole installation from one SQLite database to an empty PostgreSQL database, row for
//! row — every site, agent, session, contact, conversation, message, event (with its sequence number), webhook
//! delivery, link, outbox row (pending ones stay pending, with their leases and attempt counts) and attachment.
//!
//! It works below the store interface, table by table, because it must carry what no store method exposes (row
//! ids, sequence numbers, timestamps) exactly. Both databases are first brought to the latest migration; the
//! PostgreSQL schema (its column list and types) drives the copy, and the twin-migration test keeps the two
//! schemas equal. Everything is written in one PostgreSQL transaction: a failed copy leaves the target empty.
//! Apart from its pending migrations the source is only read; stop the server while copying, so nothing is written
//! to the source after the copy started.

use std::str::FromStr;

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};

/// Tables in an order that satisfies every foreign key.
pub const TABLES: &[&str] = &[
    "workspaces",
    "sites",
    "messenger_pages",
    "agents",
    "agent_sessions",
    "contacts",
    "conversations",
    "messages",
    "events",
    "webhook_deliveries",
    "webhook_applied",
    "messenger_links",
    "outbox",
    "attachments",
];

/// Tables whose `id` is an identity column: after the copy their sequence moves past the copied ids.
const IDENTITY_TABLES: &[&str] = &["webhook_deliveries", "outbox"];

/// Rows per insert statement (PostgreSQL allows 65 535 bind parameters per statement).
const BATCH_ROWS: usize = 200;

/// How many rows each table got.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

/// A column's PostgreSQL type, as the copy reads it from SQLite.
#[derive(Clone, Copy, Debug)]
enum Kind {
    BigInt,
    Int,
    Text,
    Bytes,
    Bool,
}

/// One value read from SQLite, to bind on PostgreSQL.
enum Value {
    BigInt(Option<i64>),
    Int(Option<i32>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database at `to`.
pub async fn copy(from: &str, to: &str) -> anyhow::Result<CopyReport> {
    anyhow::ensure!(from.starts_with("sqlite:"), "--from must be a sqlite: URL");
    anyhow::ensure!(
        to.starts_with("postgres:") || to.starts_with("postgresql:"),
        "--to must be a postgres: or postgresql: URL"
    );
    let source_options = SqliteConnectOptions::from_str(from).context("invalid SQLite URL")?.foreign_keys(true);
    anyhow::ensure!(
        source_options.get_filename().exists(),
        "no SQLite database at {}",
        source_options.get_filename().display()
    );
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(source_options)
        .await
        .context("cannot open the SQLite database")?;
    sqlx::migrate!("./migrations/sqlite").run(&source).await.context("migrating the SQLite database failed")?;
    let target = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(PgConnectOptions::from_str(to).context("invalid PostgreSQL URL")?)
        .await
        .context("cannot connect to the PostgreSQL database")?;
    sqlx::migrate!("./migrations/postgres").run(&target).await.context("migrating the PostgreSQL database failed")?;

    let mut tx = target.begin().await?;
    // The migrations seed the default workspace; the copy brings the source's (its default included).
    sqlx::query(
        "delete from workspaces where id = 'default' and not exists (select 1 from sites)
                 and not exists (select 1 from agents)",
    )
    .execute(&mut *tx)
    .await?;
    for table in TABLES {
        let rows: i64 = sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(&mut *tx).await?;
        anyhow::ensure!(
            rows == 0,
            "the PostgreSQL database is not empty ({table} has {rows} rows); copy into a new one"
        );
    }
    let mut report = CopyReport::default();
    for table in TABLES {
        let columns = columns(&mut tx, table).await?;
        let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
        let select = format!("select {} from {table}", names.join(", "));
        let mut rows = sqlx::query(&select).fetch(&source);
        let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
        let mut copied = 0u64;
        while let Some(row) = rows.try_next().await.with_context(|| format!("reading {table}"))? {
            let values = columns
                .iter()
                .enumerate()
                .map(|(i, (name, kind))| read(&row, i, *kind).with_context(|| format!("{table}.{name}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            batch.push(values);
            if batch.len() == BATCH_ROWS {
                copied += insert(&mut tx, table, &names, std::mem::take(&mut batch)).await?;
            }
        }
        copied += insert(&mut tx, table, &names, batch).await?;
        let source_rows: i64 = sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(&source).await?;
        anyhow::ensure!(
            u64::try_from(source_rows).ok() == Some(copied),
            "{table}: copied {copied} rows of {source_rows}"
        );
        report.tables.push((table, copied));
    }
    for table in IDENTITY_TABLES {
        sqlx::query(&format!(
            "select setval(pg_get_serial_sequence('{table}', 'id'), coalesce((select max(id) from {table}), 0) + 1,
                false)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await.context("committing the copy failed")?;
    source.close().await;
    target.close().await;
    Ok(report)
}

/// The table's columns on PostgreSQL, in order, with the kind of value each holds.
async fn columns(tx: &mut sqlx::Transaction<'_, Postgres>, table: &str) -> anyhow::Result<Vec<(String, Kind)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text from information_schema.columns
         where table_schema = current_schema() and table_name = $1 order by ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await?;
    anyhow::ensure!(!rows.is_empty(), "table {table} is missing on PostgreSQL");
    rows.into_iter()
        .map(|(name, data_type)| {
            let kind = match data_type.as_str() {
                "bigint" => Kind::BigInt,
                "integer" => Kind::Int,
                "text" => Kind::Text,
                "bytea" => Kind::Bytes,
                "boolean" => Kind::Bool,
                other => anyhow::bail!("{table}.{name}: the copy does not handle type {other}"),
            };
            Ok((name, kind))
        })
        .collect()
}

fn read(row: &sqlx::sqlite::SqliteRow, i: usize, kind: Kind) -> anyhow::Result<Value> {
    Ok(match kind {
        Kind::BigInt => Value::BigInt(row.try_get(i)?),
        Kind::Int => Value::Int(row.try_get(i)?),
        Kind::Text => Value::Text(row.try_get(i)?),
        Kind::Bytes => Value::Bytes(row.try_get(i)?),
        Kind::Bool => Value::Bool(row.try_get(i)?),
    })
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    table: &str,
    names: &[&str],
    rows: Vec<Vec<Value>>,
) -> anyhow::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut query = QueryBuilder::<Postgres>::new(format!("insert into {table} ({}) ", names.join(", ")));
    // Identity columns accept the copied ids (`generated by default`).
    query.push_values(rows, |mut b, row| {
        for value in row {
            match value {
                Value::BigInt(v) => b.push_bind(v),
                Value::Int(v) => b.push_bind(v),
                Value::Text(v) => b.push_bind(v),
                Value::Bytes(v) => b.push_bind(v),
                Value::Bool(v) => b.push_bind(v),
            };
        }
    });
    let done = query.build().execute(&mut **tx).await.with_context(|| format!("writing {table}"))?;
    Ok(done.rows_affected())
}
