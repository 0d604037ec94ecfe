//! One fresh, empty database per test on the test cluster, so tests run in parallel without seeing each other's rows.

use sqlx::Connection;

/// A database made for one test. It is left behind when the test ends; the cluster's removal takes it away.
#[derive(Clone, Debug)]
pub struct TestDatabase {
    /// `postgres://…/<name>`, ready for the server's `database.url`.
    pub url: String,
    pub name: String,
}

/// Creates a new database on the test cluster (see [`crate::admin_url`]). Panics when PostgreSQL cannot be had:
/// a test that needs it fails rather than skips.
pub async fn database() -> TestDatabase {
    match try_database().await {
        Ok(db) => db,
        Err(e) => panic!(
            "this test needs PostgreSQL and could not get it: {e:#}\n(`cargo xtask test` installs Debian's \
             postgresql package when missing and starts a private cluster; set {} to use a running one)",
            crate::URL_ENV
        ),
    }
}

/// Creates a new database on the cluster whose admin URL is `admin` (e.g. a [`crate::Cluster`] of the test's own,
/// which it may stop and start). Panics when it cannot.
pub async fn database_on(admin: &str) -> TestDatabase {
    match create_on(admin).await {
        Ok(db) => db,
        Err(e) => panic!("cannot create a database on {admin}: {e:#}"),
    }
}

async fn try_database() -> anyhow::Result<TestDatabase> {
    create_on(&crate::admin_url()?).await
}

async fn create_on(admin: &str) -> anyhow::Result<TestDatabase> {
    use anyhow::Context;
    let name = format!("parley_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.with_context(|| format!("cannot connect to {admin}"))?;
    sqlx::query(&format!("create database {name}")).execute(&mut conn).await.context("create database failed")?;
    conn.close().await?;
    let mut url = url::Url::parse(admin).context("the admin URL is not a URL")?;
    url.set_path(&name);
    Ok(TestDatabase { url: url.to_string(), name })
}
