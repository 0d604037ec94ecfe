//! The test cluster itself: it starts, serves a fresh database per caller, survives a restart with its data, and
//! leaves nothing behind when dropped.

use sqlx::Connection;

async fn count(url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("select count(*) from t").fetch_one(&mut conn).await.expect("count")
}

#[tokio::test]
async fn a_cluster_starts_restarts_and_is_removed_on_drop() {
    let started = std::time::Instant::now();
    let cluster = tokio::task::spawn_blocking(testpg::Cluster::start).await.expect("join").expect("cluster starts");
    println!("cluster started in {:?}", started.elapsed());
    let url = cluster.admin_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("create table t (x bigint)").execute(&mut conn).await.expect("create");
    sqlx::query("insert into t values (1), (2)").execute(&mut conn).await.expect("insert");
    conn.close().await.expect("close");

    cluster.stop_server().expect("stop");
    assert!(sqlx::PgConnection::connect(&url).await.is_err(), "a stopped server must refuse connections");
    cluster.start_server().expect("start again");
    assert_eq!(count(&url).await, 2, "rows survive a restart");

    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").is_file());
    drop(cluster);
    assert!(!dir.exists(), "dropping the cluster removes {}", dir.display());
    assert!(sqlx::PgConnection::connect(&url).await.is_err(), "dropping the cluster stops the server");
}

#[tokio::test]
async fn each_test_gets_its_own_empty_database() {
    let (a, b) = (testpg::database().await, testpg::database().await);
    assert_ne!(a.name, b.name);
    let mut conn = sqlx::PgConnection::connect(&a.url).await.expect("connect a");
    sqlx::query("create table t (x bigint)").execute(&mut conn).await.expect("create in a");
    let mut conn = sqlx::PgConnection::connect(&b.url).await.expect("connect b");
    let tables: i64 = sqlx::query_scalar("select count(*) from pg_tables where schemaname = 'public'")
        .fetch_one(&mut conn)
        .await
        .expect("tables");
    assert_eq!(tables, 0, "b does not see a's table");
}
