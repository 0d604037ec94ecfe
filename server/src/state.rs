//! Shared application state handed to every handler.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::watch;

use crate::assets::Assets;
use crate::clock::Clock;
use crate::config::Settings;
use crate::hub::Hub;
use crate::messenger::Messenger;
use crate::meters::Meters;
use crate::services::Conversations;
use crate::signin::SignInGuard;
use crate::store::Store;
use crate::supervisor::Workers;
use crate::ws::flood::FloodControl;
use crate::ws::site_cache::SiteCache;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Wall-clock time for everything that stores or compares epoch times (the store's clock).
    pub clock: Clock,
    pub hub: Hub,
    pub conversations: Conversations,
    pub settings: Arc<Settings>,
    /// Origin browsers use to reach this server, e.g. `https://chat.example.com`.
    pub public_origin: Arc<str>,
    pub assets: Arc<Assets>,
    pub leptos: LeptosOptions,
    /// The Messenger channel, when enabled.
    pub messenger: Option<Arc<Messenger>>,
    /// Flips to `true` when the server is shutting down; sockets close with 1001 so clients reconnect elsewhere.
    pub shutdown: watch::Receiver<bool>,
    /// Frame rate limits and socket caps, shared by every socket.
    pub floods: Arc<FloodControl>,
    /// Supervised background workers and their health.
    pub workers: Arc<Workers>,
    /// Console sign-in: hashing slots, per-IP rate and per (email, IP) backoff.
    pub signin: Arc<SignInGuard>,
    /// Prometheus meters behind `/metrics`.
    pub meters: Arc<Meters>,
    /// Site rows visitor upgrades check, each at most a second old.
    pub sites: SiteCache,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}
