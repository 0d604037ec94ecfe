//! Assembling and running the application: [`Application::build`] takes settings and an already-bound listener
//! (tests bind port 0), [`build_router`] wires every route, and `run_until_stopped` serves until the shutdown
//! future resolves, then lets open sockets say goodbye (close 1001) before returning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::response::Redirect;
use axum::routing::{get, post};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::assets::Assets;
use crate::config::Settings;
use crate::console::Backend;
use crate::hub::Hub;
use crate::messenger::{Messenger, intake, outbox, spool::Spool};
use crate::services::Conversations;
use crate::state::AppState;
use crate::store::MirrorPolicy;
use crate::store::Store;
use crate::{error, http, messenger, ws};
use tokio::sync::Notify;

/// A built, not yet running, server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown_tx: watch::Sender<bool>,
}

impl Application {
    /// Opens the database (applying migrations), loads the front-end manifest and wires the routes.
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database.url, settings.database.max_connections).await?;
        Self::with_store(settings, listener, store)
    }

    /// Like [`Application::build`] with an already opened store.
    pub fn with_store(mut settings: Settings, listener: TcpListener, store: Store) -> anyhow::Result<Self> {
        let addr = listener.local_addr().context("listener has no address")?;
        if settings.http.public_url.is_empty() {
            settings.http.public_url = format!("http://{addr}");
        }
        let public_origin: Arc<str> = settings.public_origin().into();
        let hub = Hub::new(settings.limits.connection_queue);
        let assets = Arc::new(Assets::load(&settings.assets.dir));
        let leptos = LeptosOptions::builder()
            .output_name("console")
            .site_root(settings.assets.dir.to_string_lossy().to_string())
            .site_pkg_dir("assets")
            .site_addr(addr)
            .build();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let conversations = Conversations {
            store: store.clone(),
            hub: hub.clone(),
            mirror: settings.messenger.enabled.then_some(MirrorPolicy { human_agent: settings.messenger.human_agent }),
            outbox_wake: Arc::new(Notify::new()),
        };
        let messenger = if settings.messenger.enabled {
            let spool = Spool::open(&settings.messenger.spool_dir)?;
            Some(Messenger::new(settings.messenger.clone(), conversations.clone(), spool)?)
        } else {
            None
        };
        let state = AppState {
            conversations,
            messenger,
            store,
            hub,
            settings: Arc::new(settings),
            public_origin,
            assets,
            leptos,
            shutdown: shutdown_rx,
        };
        let router = build_router(state.clone());
        Ok(Self { listener, router, state, shutdown_tx })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr().context("listener has no address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, router, state, shutdown_tx } = self;
        let workers =
            state.messenger.clone().map(|m| (tokio::spawn(intake::run(Arc::clone(&m))), tokio::spawn(outbox::run(m))));
        let signal = async move {
            shutdown.await;
            // Tell sockets to close so the graceful shutdown below can finish.
            let _ = shutdown_tx.send(true);
        };
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .await
            .context("server failed")?;
        if let Some((intake, outbox)) = workers {
            intake.abort();
            outbox.abort();
        }
        state.store.close().await;
        Ok(())
    }
}

/// Every route of the server.
pub fn build_router(state: AppState) -> Router {
    let backend = Backend::shared(state.clone());
    let console_assets = app::ConsoleAssets {
        css: Assets::url(&state.assets.manifest.console_css),
        boot_js: Assets::url(&state.assets.manifest.console_boot),
    };
    let context = move || {
        provide_context(backend.clone());
        provide_context(console_assets.clone());
    };
    let leptos = state.leptos.clone();
    let console_routes = generate_route_list(app::App);

    Router::new()
        .route("/healthz", get(http::health::get))
        .route("/frame/{site_key}", get(http::frame::get))
        .route("/ws/visitor", get(ws::visitor::upgrade))
        .route("/api/visitor/session", post(http::visitor_session::post))
        .route("/ws/agent", get(ws::agent::upgrade))
        .route("/webhooks/messenger", get(messenger::webhook::verify).post(messenger::webhook::receive))
        .route("/attachments/{id}", get(http::attachments::get))
        .route("/", get(|| async { Redirect::to("/console") }))
        .leptos_routes_with_context(&state, console_routes, context, move || app::shell(leptos.clone()))
        .merge(http::static_files::router(&state.assets.dir))
        .layer(axum::middleware::from_fn(error::log_errors))
        .layer(SetResponseHeaderLayer::if_not_present(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(
            REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
