//! Assembling and running the application: [`Application::build`] takes settings and an already-bound listener
//! (tests bind port 0), [`build_router`] wires every route, and `run_until_stopped` serves until the shutdown
//! future resolves, then lets open sockets say goodbye (close 1001) before returning.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::accept::Acceptor;
use crate::assets::Assets;
use crate::config::Settings;
use crate::console::Backend;
use crate::hub::Hub;
use crate::messenger::policy::MirrorPolicy;
use crate::messenger::{Messenger, intake, outbox, spool::Spool};
use crate::meters::Meters;
use crate::nodes::Nodes;
use crate::services::Conversations;
use crate::signin::SignInGuard;
use crate::state::AppState;
use crate::store::Store;
use crate::supervisor::{Backoff, Workers};
use crate::ws::flood::FloodControl;
use crate::ws::site_cache::SiteCache;
use crate::{console, error, http, messenger, ws};

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
        settings.validate()?;
        let addr = listener.local_addr().context("listener has no address")?;
        settings.limits.validate().context("invalid configuration")?;
        if settings.http.public_url.is_empty() {
            settings.http.public_url = format!("http://{addr}");
        }
        let public_origin: Arc<str> = settings.public_origin().into();
        settings.console.validate()?;
        let signin = Arc::new(SignInGuard::new(&settings.auth, settings.limits.login_failures)?);
        let hub = Hub::new(settings.limits.connection_queue);
        let meters = Arc::new(Meters::new(settings.metrics.scrape_token()?)?);
        let assets = Arc::new(Assets::load(&settings.assets.dir));
        let leptos = LeptosOptions::builder()
            .output_name("console")
            .site_root(settings.assets.dir.to_string_lossy().to_string())
            .site_pkg_dir("assets")
            .site_addr(addr)
            .build();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mirror = settings.messenger.enabled.then_some(MirrorPolicy { human_agent: settings.messenger.human_agent });
        let nodes =
            Nodes::new(store.bus(), hub.clone(), store.clock().clone(), Arc::clone(&meters), settings.cluster.clone());
        let conversations =
            Conversations::new(store.clone(), hub.clone(), mirror, Arc::clone(&meters)).with_nodes(nodes);
        let messenger = if settings.messenger.enabled {
            let spool = Spool::open(&settings.messenger.spool_dir)?;
            Some(Messenger::new(settings.messenger.clone(), conversations.clone(), spool)?)
        } else {
            None
        };
        let floods = Arc::new(FloodControl::new(&settings.limits));
        let state = AppState {
            clock: store.clock().clone(),
            floods,
            conversations,
            messenger,
            store,
            hub,
            settings: Arc::new(settings),
            public_origin,
            assets,
            leptos,
            shutdown: shutdown_rx,
            workers: Workers::new(),
            signin,
            meters,
            sites: SiteCache::default(),
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

    /// Serves until `shutdown` resolves, then stops within `http.shutdown_grace_secs`: the listener closes at once
    /// (new connections are refused), open sockets are told to reconnect (close 1001), open requests finish, and
    /// the workers finish what they are doing (the outbox its in-flight sends) before the database closes.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, router, state, shutdown_tx } = self;
        // Refuses to start when stored Page tokens do not open with the configured key.
        if let Some(messenger) = &state.messenger {
            messenger.prepare_pages().await.context("cannot start the Messenger channel")?;
        }
        let mut workers = match &state.messenger {
            Some(m) => spawn_messenger_workers(&state, m),
            None => Vec::new(),
        };
        if state.conversations.nodes().shared() {
            state.conversations.nodes().start().await;
            workers.extend(spawn_node_workers(&state));
        }
        let grace = Duration::from_secs(state.settings.http.shutdown_grace_secs.max(1));
        let (stopping_tx, stopping_rx) = oneshot::channel::<Instant>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(Instant::now() + grace);
            // Tell sockets and workers to finish so the graceful shutdown below can end.
            let _ = shutdown_tx.send(true);
        };
        // Connections are accepted on a thread of their own (see `accept`). Chat frames are small and latency
        // matters: no Nagle delay.
        let listener = Acceptor::spawn(listener).context("cannot start the accept thread")?.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .into_future();
        tokio::pin!(server);
        let mut deadline = None;
        let mut stopping = Box::pin(stopping_rx);
        loop {
            tokio::select! {
                served = &mut server => {
                    served.context("server failed")?;
                    break;
                }
                at = &mut stopping, if deadline.is_none() => match at {
                    Ok(at) => deadline = Some(at),
                    // The server ended without a shutdown signal: `served` says why.
                    Err(_) => deadline = Some(Instant::now() + Duration::from_secs(3600 * 24 * 365)),
                },
                _ = sleep_until_some(deadline) => {
                    tracing::warn!("requests still open after the shutdown grace period; closing them");
                    break;
                }
            }
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
        // Sockets got their 1001; let them send it before the runtime goes.
        while state.hub.connection_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for worker in &mut workers {
            if tokio::time::timeout_at(deadline, &mut *worker).await.is_err() {
                tracing::warn!("a worker did not finish within the shutdown grace period; stopping it");
                worker.abort();
            }
        }
        state.conversations.nodes().stop(&state.conversations).await;
        state.store.close().await;
        Ok(())
    }
}

/// Connections the kernel may queue before the server accepts them (it caps this at `net.core.somaxconn`). Tokio's
/// `TcpListener::bind` asks for 1024, which a reconnect storm of thousands of visitors overflows: the overflowing
/// connections wait for a SYN retransmit (a second or more) instead of being accepted.
pub const LISTEN_BACKLOG: u32 = 16_384;

/// Binds the HTTP listener with a [`LISTEN_BACKLOG`]-long queue.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Messenger intake and outbox, each under supervision (restarted with backoff when it fails).
fn spawn_messenger_workers(state: &AppState, messenger: &Arc<Messenger>) -> Vec<tokio::task::JoinHandle<()>> {
    let intake_messenger = Arc::clone(messenger);
    let intake = state.workers.supervise("messenger_intake", state.shutdown.clone(), Backoff::default(), move |ctx| {
        let messenger = Arc::clone(&intake_messenger);
        // The intake holds nothing that is not also an unprocessed delivery in the database (events in the reorder
        // window included) and applies idempotently, so on shutdown it simply stops.
        // (A quarantine count belongs in its health entry: `ctx.health.set("quarantined", n)`.)
        async move {
            let mut stop = ctx.stop;
            tokio::select! {
                () = intake::run(messenger, ctx.health) => anyhow::bail!("the intake loop ended"),
                _ = stop.wait_for(|stopping| *stopping) => Ok(()),
            }
        }
    });
    let outbox_messenger = Arc::clone(messenger);
    let outbox = state.workers.supervise("messenger_outbox", state.shutdown.clone(), Backoff::default(), move |ctx| {
        outbox::run(Arc::clone(&outbox_messenger), ctx)
    });
    vec![intake, outbox]
}

/// The bus workers of a node sharing its database (see [`crate::nodes`]), each under supervision.
fn spawn_node_workers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let nodes = state.conversations.nodes().clone();
    let stop = state.shutdown.clone();
    let sender = nodes.clone();
    let listener = nodes.clone();
    let (summaries, summaries_for) = (nodes.clone(), state.conversations.clone());
    let (heartbeat, heartbeat_for) = (nodes, state.conversations.clone());
    vec![
        state
            .workers
            .supervise("bus_sender", stop.clone(), Backoff::default(), move |ctx| sender.clone().run_sender(ctx)),
        state
            .workers
            .supervise("bus_listener", stop.clone(), Backoff::default(), move |ctx| listener.clone().run_listener(ctx)),
        state.workers.supervise("bus_summaries", stop.clone(), Backoff::default(), move |ctx| {
            summaries.clone().run_summaries(summaries_for.clone(), ctx)
        }),
        state.workers.supervise("node_heartbeat", stop, Backoff::default(), move |ctx| {
            heartbeat.clone().run_heartbeat(heartbeat_for.clone(), ctx)
        }),
    ]
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
        console::provide_request_context();
    };
    let leptos = state.leptos.clone();
    let console_routes = generate_route_list(app::App);

    Router::new()
        .route("/healthz", get(http::health::get))
        .route("/readyz", get(http::health::ready))
        .route("/metrics", get(http::metrics::get))
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), console::guard))
        .layer(SetResponseHeaderLayer::if_not_present(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(
            REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
