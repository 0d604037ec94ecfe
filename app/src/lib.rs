//! Parley's agent console: a Leptos app rendered on the server (through `leptos_axum`, feature `ssr`) and hydrated
//! in the browser (feature `hydrate`).
//!
//! The server mounts [`App`] with [`shell`] as the document, provides an `Arc<dyn backend::ConsoleBackend>` and
//! [`ConsoleAssets`] as context, and serves the `/ws/agent` socket that [`live`] talks to. This crate never links
//! the server's storage: everything it needs from the server goes through `backend::ConsoleBackend`.

pub mod api;
pub mod app;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod codec;
pub mod components;
pub mod live;
pub mod pages;
pub mod state;
pub mod time;

pub use app::{App, shell};

/// URLs of the console's content-hashed assets, provided as context by the server; [`shell`] links them.
#[derive(Clone, Debug, Default)]
pub struct ConsoleAssets {
    /// Stylesheet (`style/console.css` after the build), e.g. `/assets/console-1a2b3c.css`.
    pub css: Option<String>,
    /// The boot module that loads the Wasm and calls [`hydrate`].
    pub boot_js: Option<String>,
}

/// Browser entry point, called by the boot module once the Wasm is instantiated.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
