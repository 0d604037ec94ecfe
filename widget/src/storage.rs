//! The frame's own persistence: its origin's `localStorage` only (never the host page's, never URLs), under keys
//! `parley:<site_key>:…`. It holds the outbox and, only where the visitor cookie does not stick, the visitor token.
//! The session itself normally lives in the chat origin's `HttpOnly` partitioned cookie (see `identity.rs`), which
//! no script can read: browsers block `localStorage` in a frame on another site (Chromium throws `SecurityError`),
//! so storage is a fallback here, not the home of the session. When storage is blocked or full, values are kept in
//! memory for this page's lifetime, so the chat keeps working; nothing here may fail loudly.
//! The outbox is kept per identity ([`Store::scope_outbox`]): unsent messages of a signed-in customer are never
//! sent as an anonymous visitor or as another customer, and the other way round.

use std::cell::RefCell;

use crate::state::{self, OutboxItem};

pub struct Store {
    prefix: String,
    local: Option<web_sys::Storage>,
    memory: RefCell<Vec<(String, String)>>,
    /// The outbox's key for the current identity.
    outbox_key: RefCell<String>,
}

impl Store {
    pub fn new(site_key: &str) -> Self {
        // `localStorage` throws (SecurityError) when the browser blocks third-party storage: treat as absent.
        let local = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
        Self {
            prefix: format!("parley:{site_key}:"),
            local,
            memory: RefCell::new(Vec::new()),
            outbox_key: RefCell::new(state::outbox_key(None)),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        let key = format!("{}{name}", self.prefix);
        if let Some(v) = self.memory.borrow().iter().find(|(k, _)| *k == key) {
            return Some(v.1.clone());
        }
        self.local.as_ref().and_then(|s| s.get_item(&key).ok().flatten())
    }

    fn set(&self, name: &str, value: Option<String>) {
        let key = format!("{}{name}", self.prefix);
        let stored = match (&self.local, &value) {
            (Some(s), Some(v)) => s.set_item(&key, v).is_ok(),
            (Some(s), None) => s.remove_item(&key).is_ok(),
            (None, _) => false,
        };
        let mut memory = self.memory.borrow_mut();
        memory.retain(|(k, _)| *k != key);
        if !stored && let Some(v) = value {
            memory.push((key, v));
        }
    }

    /// Whether values outlive this page (the frame may use `localStorage`).
    pub fn persistent(&self) -> bool {
        self.local.is_some()
    }

    pub fn token(&self) -> Option<String> {
        self.get("token").filter(|t| !t.is_empty())
    }

    pub fn set_token(&self, token: Option<&str>) {
        self.set("token", token.map(str::to_string));
    }

    /// Keeps the outbox under the identity's key from now on (`identity_hash`: the host page's signed hash).
    pub fn scope_outbox(&self, identity_hash: Option<&str>) {
        *self.outbox_key.borrow_mut() = state::outbox_key(identity_hash);
    }

    pub fn outbox(&self) -> Vec<OutboxItem> {
        let key = self.outbox_key.borrow().clone();
        self.get(&key).map(|s| state::decode_outbox(&s)).unwrap_or_default()
    }

    /// Read-modify-write, so entries written by other tabs of this visitor survive.
    pub fn outbox_add(&self, item: &OutboxItem) {
        let key = self.outbox_key.borrow().clone();
        let next = state::outbox_with(self.get(&key).as_deref(), item);
        self.set(&key, Some(next));
    }

    pub fn outbox_remove(&self, client_id: &str) {
        let key = self.outbox_key.borrow().clone();
        let next = state::outbox_without(self.get(&key).as_deref(), client_id);
        self.set(&key, next);
    }
}
