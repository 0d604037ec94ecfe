//! The site rows visitor upgrades check (`/ws/visitor?site=KEY`), kept for [`SITE_TTL`] so a reconnect storm of
//! thousands of visitors of one site reads the row once, not once per socket.
//!
//! Why a time limit and not invalidation: a site's row (its allowed origins, above all) changes through the CLI or
//! the console, possibly in another process or on another node, which this cache never hears from. Every node's
//! copy is at most [`SITE_TTL`] old, so an origin removed anywhere stops being accepted everywhere within that
//! time. Only sites that exist are kept (a key that names none is read every time, so made-up keys cannot fill the
//! cache), and at most [`MAX_SITES`] of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::models::Site;
use crate::store::{Store, StoreResult};

/// How long a site row read by an upgrade is used before it is read again.
pub const SITE_TTL: Duration = Duration::from_secs(1);

/// Sites kept at most; past it, expired rows go first, then all of them.
pub const MAX_SITES: usize = 4096;

/// A site row and when it was read.
type Entry = (Instant, Arc<Site>);

/// Site rows by key (cheap to clone: shared).
#[derive(Clone, Default)]
pub struct SiteCache {
    rows: Arc<Mutex<HashMap<String, Entry>>>,
}

impl SiteCache {
    /// The site of `key`: the copy read less than [`SITE_TTL`] ago, else the store's row.
    pub async fn by_key(&self, store: &Store, key: &str) -> StoreResult<Option<Arc<Site>>> {
        if let Some(site) = self.fresh(key, Instant::now()) {
            return Ok(Some(site));
        }
        // Read before the store is asked, so the copy is never taken as newer than it is.
        let read_at = Instant::now();
        let Some(site) = store.site_by_key(key).await? else { return Ok(None) };
        let site = Arc::new(site);
        self.keep(key, Arc::clone(&site), read_at);
        Ok(Some(site))
    }

    /// The copy of `key` if it was read less than [`SITE_TTL`] before `now`.
    fn fresh(&self, key: &str, now: Instant) -> Option<Arc<Site>> {
        let rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (read_at, site) = rows.get(key)?;
        (now.saturating_duration_since(*read_at) < SITE_TTL).then(|| Arc::clone(site))
    }

    fn keep(&self, key: &str, site: Arc<Site>, read_at: Instant) {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if rows.len() >= MAX_SITES && !rows.contains_key(key) {
            rows.retain(|_, (at, _)| read_at.saturating_duration_since(*at) < SITE_TTL);
            if rows.len() >= MAX_SITES {
                rows.clear();
            }
        }
        rows.insert(key.to_owned(), (read_at, site));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(key: &str, origins: &str) -> Arc<Site> {
        Arc::new(Site {
            id: format!("id-{key}"),
            key: key.into(),
            name: key.into(),
            allowed_origins_json: origins.into(),
            greeting: String::new(),
            created_at: 0,
            workspace_id: "w".into(),
        })
    }

    #[test]
    fn a_site_row_is_used_for_less_than_the_ttl_then_read_again() {
        let cache = SiteCache::default();
        let t0 = Instant::now();
        cache.keep("a", site("a", r#"["https://a.example"]"#), t0);
        let within = cache.fresh("a", t0 + SITE_TTL - Duration::from_millis(1)).expect("fresh");
        assert_eq!(within.allowed_origins(), vec!["https://a.example"]);
        assert!(cache.fresh("a", t0 + SITE_TTL).is_none(), "a copy as old as the TTL is read again");
        assert!(cache.fresh("b", t0).is_none(), "never read");
        // The new read replaces the old copy (an origin removed is gone).
        cache.keep("a", site("a", "[]"), t0 + SITE_TTL);
        let reread = cache.fresh("a", t0 + SITE_TTL).expect("fresh again");
        assert!(reread.allowed_origins().is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_max_sites() {
        let cache = SiteCache::default();
        let t0 = Instant::now();
        for i in 0..MAX_SITES {
            cache.keep(&format!("k{i}"), site("k", "[]"), t0);
        }
        assert_eq!(cache.len(), MAX_SITES);
        // All still fresh: making room drops them all rather than growing.
        cache.keep("one-more", site("k", "[]"), t0);
        assert_eq!(cache.len(), 1);
        // Expired rows go first, fresh ones stay.
        for i in 0..MAX_SITES - 1 {
            cache.keep(&format!("old{i}"), site("k", "[]"), t0);
        }
        let later = t0 + SITE_TTL;
        cache.keep("fresh", site("k", "[]"), later);
        cache.keep("newest", site("k", "[]"), later);
        assert_eq!(cache.len(), 2, "the expired rows made room");
        assert!(cache.fresh("fresh", later).is_some() && cache.fresh("newest", later).is_some());
    }
}
