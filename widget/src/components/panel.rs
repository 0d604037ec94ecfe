//! The panel: header (site name, the agent's name once one has written, "Close chat"), connection status line,
//! message list, typing indicator and composer. It fills the iframe; the loader sizes the iframe.

use std::rc::Rc;

use leptos::prelude::*;

use crate::components::composer::Composer;
use crate::components::message_list::MessageList;
use crate::components::messenger::MessengerBar;
use crate::session::{Link, Session};
use crate::state::Chat;

#[component]
pub fn Panel(session: Rc<Session>) -> impl IntoView {
    let ui = session.ui;
    let site_name = session.cfg.site_name.clone();
    let greeting = session.cfg.greeting.clone();
    let agent = move || ui.chat.with(|c: &Chat| c.agent_name().map(str::to_string));
    let status = move || match ui.link.get() {
        Link::Online => "",
        Link::Connecting => "Connecting…",
        Link::Reconnecting => "Reconnecting…",
    };
    let typing = move || ui.agent_typing.get().map(|n| format!("{n} is typing…"));
    let close = session.is_embedded().then(|| {
        let s = session.clone();
        view! {
            <button type="button" class="parley-close" aria-label="Close chat" on:click=move |_| s.request_close()>
                <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                    <path d="M6 6l12 12M18 6L6 18" stroke="currentColor" stroke-width="2" stroke-linecap="round"></path>
                </svg>
            </button>
        }
    });

    view! {
        <main class="parley">
            <header class="parley-header">
                <div class="parley-title">
                    <h1 class="parley-site">{site_name.clone()}</h1>
                    <p class="parley-agent">{agent}</p>
                </div>
                {close}
            </header>
            <p class="parley-status" role="status">{status}</p>
            <MessageList chat=ui.chat greeting=greeting site_name=site_name/>
            <p class="parley-typing" aria-live="polite">{typing}</p>
            <MessengerBar session=session.clone()/>
            <Composer session=session/>
        </main>
    }
}
