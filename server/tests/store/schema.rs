//! The PostgreSQL migrations build the same schema as the SQLite ones: the same tables and columns with the same
//! nullability, the same named indexes and the same unique rules. Types
//! differ on purpose (bigint, bytea, boolean), so they are not compared. The node tables (`nodes`, `node_presence`:
//! leases and presence of several nodes on one database) exist only on PostgreSQL.

use std::collections::BTreeSet;

use sqlx::{Connection, Row};

/// `table.column` with its nullability.
type Columns = BTreeSet<(String, String, bool)>;
/// `table: columns` of each unique rule (primary keys included).
type Uniques = BTreeSet<(String, String)>;

struct Schema {
    columns: Columns,
    indexes: BTreeSet<(String, String)>,
    uniques: Uniques,
}

async fn sqlite_schema() -> Schema {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("schema.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open sqlite");
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await.expect("sqlite migrations");
    let tables: Vec<String> = sqlx::query_scalar(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' and name != '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut schema = Schema { columns: Columns::new(), indexes: BTreeSet::new(), uniques: Uniques::new() };
    for table in tables {
        let rows = sqlx::query(&format!("pragma table_info({table})")).fetch_all(&mut conn).await.expect("columns");
        let mut pk = Vec::new();
        for row in rows {
            let name: String = row.get("name");
            let notnull: bool = row.get::<i64, _>("notnull") != 0 || row.get::<i64, _>("pk") != 0;
            if row.get::<i64, _>("pk") != 0 {
                pk.push(name.clone());
            }
            schema.columns.insert((table.clone(), name, !notnull));
        }
        if !pk.is_empty() {
            schema.uniques.insert((table.clone(), pk.join(",")));
        }
        let indexes = sqlx::query(&format!("pragma index_list({table})")).fetch_all(&mut conn).await.expect("indexes");
        for index in indexes {
            let (name, origin, unique): (String, String, bool) =
                (index.get("name"), index.get("origin"), index.get::<i64, _>("unique") != 0);
            let cols: Vec<String> = sqlx::query(&format!("pragma index_info({name})"))
                .fetch_all(&mut conn)
                .await
                .expect("index columns")
                .iter()
                .map(|c| c.get::<Option<String>, _>("name").unwrap_or_else(|| "<expr>".into()))
                .collect();
            if origin == "c" {
                schema.indexes.insert((table.clone(), name));
            }
            if unique && origin != "pk" {
                schema.uniques.insert((table.clone(), cols.join(",")));
            }
        }
    }
    schema
}

async fn postgres_schema() -> Schema {
    let db = testpg::database().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::migrate!("./migrations/postgres").run(&mut conn).await.expect("postgres migrations");
    let mut schema = Schema { columns: Columns::new(), indexes: BTreeSet::new(), uniques: Uniques::new() };
    let rows = sqlx::query(
        "select table_name::text, column_name::text, is_nullable::text from information_schema.columns
         where table_schema = 'public' and table_name != '_sqlx_migrations'
            and table_name not in ('nodes', 'node_presence')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    for row in rows {
        schema.columns.insert((row.get(0), row.get(1), row.get::<String, _>(2) == "YES"));
    }
    // Every unique index (constraints and `create unique index`), its columns in key order; expressions as <expr>.
    let rows = sqlx::query(
        "select t.relname::text, i.relname::text, x.indisunique,
            exists (select 1 from pg_constraint c where c.conindid = x.indexrelid) as is_constraint,
            (select string_agg(coalesce(a.attname::text, '<expr>'), ',' order by k.n)
               from unnest(x.indkey) with ordinality k(attnum, n)
               left join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum and k.attnum > 0) as cols
         from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid
         join pg_namespace s on s.oid = t.relnamespace
         where s.nspname = 'public' and t.relname != '_sqlx_migrations'
            and t.relname not in ('nodes', 'node_presence')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    for row in rows {
        let (table, name, unique, constraint, cols): (String, String, bool, bool, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if !constraint {
            schema.indexes.insert((table.clone(), name));
        }
        if unique {
            schema.uniques.insert((table, cols));
        }
    }
    schema
}

#[tokio::test]
async fn postgres_migrations_build_the_sqlite_schema() {
    let (sqlite, mut postgres) = (sqlite_schema().await, postgres_schema().await);
    assert!(sqlite.columns.len() > 50, "the SQLite schema was read ({} columns)", sqlite.columns.len());
    same(&postgres.columns, &sqlite.columns, "tables, columns and nullability");
    // The one planned difference: SQLite's `email ... unique collate nocase` is `unique (lower(email))` here.
    assert!(postgres.indexes.remove(&("agents".into(), "agents_email".into())));
    assert!(postgres.uniques.remove(&("agents".into(), "<expr>".into())));
    postgres.uniques.insert(("agents".into(), "email".into()));
    same(&postgres.indexes, &sqlite.indexes, "named indexes");
    same(&postgres.uniques, &sqlite.uniques, "unique rules");
}

/// Fails with only what differs.
fn same<T: Ord + std::fmt::Debug>(postgres: &BTreeSet<T>, sqlite: &BTreeSet<T>, what: &str) {
    let only_pg: Vec<_> = postgres.difference(sqlite).collect();
    let only_sqlite: Vec<_> = sqlite.difference(postgres).collect();
    assert!(
        only_pg.is_empty() && only_sqlite.is_empty(),
        "{what} differ: only on PostgreSQL {only_pg:?}, only on SQLite {only_sqlite:?}"
    );
}

/// The migration folders move in step: every SQLite migration has its PostgreSQL twin with the same version.
#[test]
fn every_migration_has_a_twin() {
    let versions = |engine: &str| -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(engine);
        std::fs::read_dir(dir)
            .expect("migrations folder")
            .filter_map(|e| e.ok()?.file_name().to_str()?.split('_').next().map(str::to_string))
            .collect()
    };
    assert_eq!(versions("postgres"), versions("sqlite"));
}
