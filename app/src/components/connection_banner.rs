//! The "Reconnecting…" banner shown while the live socket is down, and the server's alerts (e.g. the Facebook Page
//! token stopped working). The live region is always in the page so
//! screen readers announce the change; only its text comes and goes.

use leptos::prelude::*;

use crate::live::{ConnState, use_live};

#[component]
pub fn ConnectionBanner() -> impl IntoView {
    let live = use_live();
    let down = move || live.conn.get() == ConnState::Reconnecting;
    view! {
        <div class="conn-banner" class:conn-banner--shown=down role="status">
            {move || down().then_some("Reconnecting…")}
        </div>
    }
}

/// Alerts every agent must see, as sent by the server (`ServerMsg::Alert`), until the server clears them.
#[component]
pub fn Alerts() -> impl IntoView {
    let live = use_live();
    let alerts = Memo::new(move |_| live.state.with(|s| s.alerts.clone()));
    view! {
        <div class="alerts" role="alert">
            <For each=move || alerts.get() key=|(k, m)| format!("{k}:{m}") let((_key, message))>
                <p class="alert">{message}</p>
            </For>
        </div>
    }
}
