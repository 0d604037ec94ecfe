//! `messenger-sandbox`: a local emulator of the Messenger Platform for Parley's tests and
//! demo. It serves the Graph API (Send, User Profile, subscribed_apps, messenger_profile,
//! thread control, batch), sends signed webhooks to the app's callback, offers a test-control
//! API under `/__emu/…` and a Messenger-like chat page for a simulated customer at
//! `/m.me/{page}`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use messenger_sandbox::{SandboxConfig, launch};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sandbox = launch(SandboxConfig::default(), listener).await?;
//! let customer = sandbox.create_user(Default::default())?;
//! sandbox.user_sends_text(&customer.psid, "hello")?;
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`Sandbox`] dereferences to [`Emulator`], whose methods mirror the control API.

use std::net::SocketAddr;
use std::ops::Deref;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod clock;
pub mod config;
pub mod control;
pub mod customer;
pub mod emulator;
pub mod errors;
pub mod events;
pub mod faults;
pub mod graph;
pub mod media;
pub mod page;
pub mod state;
pub mod webhook;

pub use config::{PAGE_INBOX_APP_ID, RetryPolicy, SandboxConfig};
pub use customer::{OpenOutcome, THUMBS_UP_STICKER_ID, UserAttachment, UserMessage};
pub use emulator::Emulator;
pub use errors::{ControlError, GraphError};
pub use faults::{FaultRule, Faults, SendFault, WebhookFault};
pub use state::{
    Alert, Attempt, Author, DeliveryStatus, NewUser, SentMessage, Settings, SettingsPatch, ThreadMessage, ThreadView,
    User, Verification, WebhookDelivery,
};

/// A running emulator. Dereferences to [`Emulator`] for the control operations.
pub struct Sandbox {
    emulator: Emulator,
    addr: SocketAddr,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl Sandbox {
    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or the configured public origin).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Graph base URL with the default version, e.g. `http://127.0.0.1:PORT/v25.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v25.0", self.base_url)
    }

    /// The m.me base for links, e.g. `http://127.0.0.1:PORT/m.me`.
    pub fn m_me_base(&self) -> String {
        format!("{}/m.me", self.base_url)
    }

    /// `<m.me base>/<page username>?ref=<ref>`.
    pub fn m_me_link(&self, reference: Option<&str>) -> String {
        let username = self.emulator.with(|w| w.cfg.page_username.clone());
        match reference {
            Some(reference) => format!("{}/{username}?ref={reference}", self.m_me_base()),
            None => format!("{}/{username}", self.m_me_base()),
        }
    }

    /// A cheap handle for other tasks.
    pub fn emulator(&self) -> Emulator {
        self.emulator.clone()
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.sender.abort();
        // Open long polls would hold a graceful shutdown for up to 25 s.
        let server = std::mem::replace(&mut self.server, tokio::spawn(async {}));
        let abort = server.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(1), server).await.is_err() {
            abort.abort();
        }
    }
}

impl Deref for Sandbox {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.emulator
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.sender.abort();
    }
}

/// The emulator's router (Graph fallback, control API, media, chat page).
pub fn router(emulator: Emulator) -> Router {
    Router::new()
        .merge(control::router())
        .merge(media::router())
        .merge(page::router())
        .fallback(graph::handle)
        .with_state(emulator)
}

/// Starts the emulator on `listener` in a spawned task and returns its handle.
pub async fn launch(config: SandboxConfig, listener: TcpListener) -> anyhow::Result<Sandbox> {
    let addr = listener.local_addr().context("reading the listener address")?;
    let base_url = config
        .public_base_url
        .clone()
        .map(|url| url.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", addr.port()));
    let http = reqwest::Client::builder().no_proxy().build().context("building the webhook HTTP client")?;
    let (outbox, queue) = tokio::sync::mpsc::unbounded_channel();
    let verify_on_launch = config.verify_on_launch && config.callback_url.is_some();
    let world = state::World::new(config, base_url.clone(), outbox);
    let emulator = Emulator::new(world, http);
    let sender = tokio::spawn(webhook::sender::run(emulator.clone(), queue));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let app = router(emulator.clone());
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "messenger sandbox server stopped");
        }
    });
    if verify_on_launch {
        emulator.verify_webhook().await;
    }
    tracing::info!(%base_url, "messenger sandbox listening");
    Ok(Sandbox { emulator, addr, base_url, shutdown: Some(shutdown), server, sender })
}
