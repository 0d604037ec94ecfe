//! Parley's chat frame: the visitor-facing chat, a Leptos (CSR) app compiled to Wasm that runs inside a
//! cross-origin iframe served by the chat server at `/frame/{site_key}`.
//!
//! This file owns start-up only: `start()` is called by the generated boot module, reads the `#parley-boot`
//! config and mounts the panel. Pure logic (`boot`, `state`, `backoff`, `clock`, `typing`, `wire`) builds and is tested on
//! the host; everything touching the DOM is compiled for `wasm32` only.

pub mod backoff;
pub mod boot;
pub mod clock;
pub mod state;
pub mod typing;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod components;
#[cfg(target_arch = "wasm32")]
mod connection;
#[cfg(target_arch = "wasm32")]
mod election;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod identity;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod storage;

#[cfg(target_arch = "wasm32")]
mod entry {
    use wasm_bindgen::prelude::*;

    use crate::boot::BootConfig;

    /// Entry point, run when the boot module instantiates the Wasm. Never panics on bad input: a missing or broken
    /// config is logged and nothing is mounted.
    #[wasm_bindgen(start)]
    pub fn start() {
        console_error_panic_hook::set_once();
        match read_config() {
            Ok(cfg) => crate::session::mount(cfg),
            Err(reason) => web_sys::console::error_1(&format!("parley: cannot start: {reason}").into()),
        }
    }

    fn read_config() -> Result<BootConfig, String> {
        let json = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("parley-boot"))
            .and_then(|el| el.text_content())
            .ok_or("no #parley-boot element")?;
        BootConfig::parse(&json)
    }
}
