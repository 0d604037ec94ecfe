//! The test cluster itself: it starts, serves a fresh database per caller, survives a restart with its data, and
//! leaves nothing behind when dropped or when the process that started it is SIGKILLed.

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

/// Set in the child process of [`a_cluster_dies_with_the_process_that_started_it`].
const CHILD_ENV: &str = "TESTPG_KILLED_OWNER";

/// The child: starts a cluster, says where it is, and waits to be killed. Ignored: only the test below runs it,
/// in a process of its own.
#[test]
#[ignore = "the child process of a_cluster_dies_with_the_process_that_started_it"]
fn killed_owner_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let cluster = testpg::Cluster::start().expect("cluster starts");
    println!("CLUSTER {} {}", cluster.port(), cluster.dir().display());
    std::thread::park();
}

#[test]
fn a_cluster_dies_with_the_process_that_started_it() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "killed_owner_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest.to_string()))
        .expect("the child reports its cluster");
    let mut parts = line.split(' ');
    let port: u16 = parts.next().expect("port").parse().expect("port number");
    let dir = std::path::PathBuf::from(parts.next().expect("dir"));
    assert!(dir.join("data/PG_VERSION").is_file());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "the server listens");

    child.kill().expect("SIGKILL the owner");
    child.wait().expect("reaped");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dir.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the cluster outlived its SIGKILLed owner: {}", dir.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
