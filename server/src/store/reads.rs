//! The reads both engines share, written once: the SQL (with `$N` parameters, which SQLite reads as numbered ones
//! as PostgreSQL does), its binding and its row mapping. [`Reads`] borrows an engine's read pool; the macro below
//! gives it the same methods on `Pool<Sqlite>` and on `Pool<Postgres>`, each compiled against its own engine's
//! types, so no generic bounds are needed and each engine runs its own prepared statements.
//!
//! Only reads whose SQL is the same on both engines live here (not, e.g., `agent_by_email`: SQLite compares with
//! the column's `nocase` collation, PostgreSQL through its `lower(email)` index). Writes stay in each backend (rusqlite jobs on the
//! SQLite writer thread, sqlx transactions on PostgreSQL), as do reads whose SQL differs.

use crate::identity::IdentitySecret;
use crate::store::models::{Agent, PageRow, Site, Workspace};
use crate::store::ops::OutboxBacklog;
use crate::store::{SiteIdentity, StoreResult};

/// An engine's read pool, borrowed for one shared read.
pub(crate) struct Reads<'a, DB: sqlx::Database>(pub(crate) &'a sqlx::Pool<DB>);

const SITE_COLUMNS: &str = "select id, key, name, allowed_origins, greeting, created_at, workspace_id from sites";
const PAGE_COLUMNS: &str =
    "select p.page_id, p.workspace_id, p.site_id, p.username, p.token_nonce, p.token_ciphertext from messenger_pages p";
const AGENT_COLUMNS: &str = "select a.id, a.email, a.name, a.password_hash, a.workspace_id from agents a";

macro_rules! shared_reads {
    ($db:ty) => {
        impl Reads<'_, $db> {
            pub(crate) async fn site_by_key(&self, key: &str) -> StoreResult<Option<Site>> {
                Ok(sqlx::query_as::<_, Site>(&format!("{SITE_COLUMNS} where key = $1"))
                    .bind(key)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn sites(&self) -> StoreResult<Vec<Site>> {
                Ok(sqlx::query_as::<_, Site>(&format!("{SITE_COLUMNS} order by created_at")).fetch_all(self.0).await?)
            }

            pub(crate) async fn site_identity(&self, site_id: &str) -> StoreResult<SiteIdentity> {
                let row: Option<(Option<String>, bool)> =
                    sqlx::query_as("select identity_secret, identity_required from sites where id = $1")
                        .bind(site_id)
                        .fetch_optional(self.0)
                        .await?;
                Ok(row.map_or_else(SiteIdentity::default, |(secret, required)| SiteIdentity {
                    secret: secret.filter(|s| !s.is_empty()).map(IdentitySecret::from_stored),
                    required,
                }))
            }

            /// The agent of an unexpired session (`now`: epoch ms from the backend's clock).
            pub(crate) async fn agent_for_session(&self, token_hash: &[u8], now: i64) -> StoreResult<Option<Agent>> {
                Ok(sqlx::query_as::<_, Agent>(&format!(
                    "{AGENT_COLUMNS} join agent_sessions s on a.id = s.agent_id
                     where s.token_hash = $1 and s.expires_at > $2"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn attachment(&self, id: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
                Ok(sqlx::query_as("select content_type, bytes from attachments where id = $1 and status = 'ready'")
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn attachment_status(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>> {
                Ok(sqlx::query_as("select status, error from attachments where id = $1")
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn workspace_by_key(&self, key: &str) -> StoreResult<Option<Workspace>> {
                Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces where key = $1")
                    .bind(key)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
                Ok(sqlx::query_as::<_, Workspace>("select id, key, name from workspaces order by created_at, id")
                    .fetch_all(self.0)
                    .await?)
            }

            pub(crate) async fn site_workspace(&self, site_id: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar("select workspace_id from sites where id = $1")
                    .bind(site_id)
                    .fetch_optional(self.0)
                    .await?)
            }

            pub(crate) async fn conversation_workspace(&self, conversation_id: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar(
                    "select s.workspace_id from conversations c join sites s on s.id = c.site_id where c.id = $1",
                )
                .bind(conversation_id)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn attachment_workspace(&self, attachment_id: &str) -> StoreResult<Option<String>> {
                let found: Option<Option<String>> = sqlx::query_scalar(
                    "select coalesce(a.workspace_id,
                        (select s.workspace_id from conversations c join sites s on s.id = c.site_id
                         where c.id = a.conversation_id),
                        (select s.workspace_id from contacts k join sites s on s.id = k.site_id
                         where k.avatar_id = a.id limit 1))
                     from attachments a where a.id = $1",
                )
                .bind(attachment_id)
                .fetch_optional(self.0)
                .await?;
                Ok(found.flatten())
            }

            pub(crate) async fn page(&self, page_id: &str) -> StoreResult<Option<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} where p.page_id = $1"))
                    .bind(page_id)
                    .fetch_optional(self.0)
                    .await?)
            }

            /// The site's own Page, else its workspace's workspace-wide one.
            pub(crate) async fn page_for_site(&self, site_id: &str) -> StoreResult<Option<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!(
                    "{PAGE_COLUMNS} join sites s on s.id = $1
                     where p.site_id = s.id or (p.site_id is null and p.workspace_id = s.workspace_id)
                     order by p.site_id is null limit 1"
                ))
                .bind(site_id)
                .fetch_optional(self.0)
                .await?)
            }

            pub(crate) async fn pages(&self) -> StoreResult<Vec<PageRow>> {
                Ok(sqlx::query_as::<_, PageRow>(&format!("{PAGE_COLUMNS} order by p.created_at, p.page_id"))
                    .fetch_all(self.0)
                    .await?)
            }

            pub(crate) async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
                let (pending, oldest_created_at): (i64, Option<i64>) =
                    sqlx::query_as("select count(*), min(created_at) from outbox where status = 'pending'")
                        .fetch_one(self.0)
                        .await?;
                Ok(OutboxBacklog { pending, oldest_created_at })
            }

            /// The versions of the migrations that ran to the end.
            pub(crate) async fn applied_migrations(&self) -> StoreResult<Vec<i64>> {
                Ok(sqlx::query_scalar("select version from _sqlx_migrations where success = true")
                    .fetch_all(self.0)
                    .await?)
            }
        }
    };
}

shared_reads!(sqlx::Sqlite);
shared_reads!(sqlx::Postgres);
