//! "Continue on Messenger": a button that, on the visitor's click (or Enter), opens a window and asks the server for
//! the signed link to send it to — nothing is asked for before, since the link creates the contact. Where the browser
//! blocked the window, the link shows as a real anchor instead (same name). Then the short code to send instead when
//! the link does not carry over, and — once linked — "Continued on Messenger as <name>" with an undo. Only signals
//! are read reactively; the session is used in the click handlers alone.

use std::rc::Rc;

use leptos::html;
use leptos::prelude::*;

use crate::session::Session;

#[component]
pub fn MessengerBar(session: Rc<Session>) -> impl IntoView {
    let ui = session.ui;
    let linked = Memo::new(move |_| ui.chat.with(|c| c.messenger().map(|n| n.map(str::to_string))));
    let linked_text = move || match linked.get() {
        Some(Some(name)) => format!("Continued on Messenger as {name}."),
        _ => "Continued on Messenger.".to_string(),
    };
    let offer = ui.messenger_offer;
    let url = move || offer.with(|o| o.as_ref().map(|o| o.url.clone()).unwrap_or_default());
    let code = move || offer.with(|o| o.as_ref().map(|o| o.code.clone()).unwrap_or_default());
    let blocked = ui.messenger_blocked;
    let as_anchor = Memo::new(move |_| blocked.get() && offer.with(Option::is_some));
    let anchor = NodeRef::<html::A>::new();
    // The button the visitor used turns into the anchor: focus follows.
    Effect::new(move |_| {
        if as_anchor.get()
            && let Some(a) = anchor.get()
        {
            let _ = a.focus();
        }
    });
    let offered = session.cfg.messenger;
    let continue_session = session.clone();
    let go = move |_| continue_session.continue_on_messenger();
    let undo = move |_| session.unlink_messenger();
    view! {
        <div class="parley-messenger parley-messenger-linked" role="status" hidden=move || linked.get().is_none()>
            <span>{linked_text}</span>
            " "
            <button type="button" class="parley-link-button" on:click=undo>"Undo"</button>
        </div>
        <div class="parley-messenger" hidden=move || !offered || linked.get().is_some()>
            <button
                type="button"
                class="parley-link-button parley-messenger-link"
                hidden=move || as_anchor.get()
                on:click=go
            >
                "Continue on Messenger"
            </button>
            <a
                class="parley-messenger-link"
                node_ref=anchor
                hidden=move || !as_anchor.get()
                href=url
                target="_blank"
                rel="noopener noreferrer"
            >
                "Continue on Messenger"
            </a>
            <span class="parley-messenger-code" hidden=move || offer.with(Option::is_none)>
                "No luck? Send us the code " <strong>{code}</strong> " on Messenger."
            </span>
        </div>
    }
}
