//! "Continue on Messenger": a real link (so the browser opens it on the visitor's click, no pop-up blocker), the
//! short code to send instead when the link does not carry over, and — once linked — "Continued on Messenger as
//! <name>" with an undo. Only signals are read reactively; the session is used in the click handler alone.

use std::rc::Rc;

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
    let undo = move |_| session.unlink_messenger();
    view! {
        <div class="parley-messenger parley-messenger-linked" role="status" hidden=move || linked.get().is_none()>
            <span>{linked_text}</span>
            " "
            <button type="button" class="parley-link-button" on:click=undo>"Undo"</button>
        </div>
        <div class="parley-messenger" hidden=move || linked.get().is_some() || offer.with(Option::is_none)>
            <a class="parley-messenger-link" href=url target="_blank" rel="noopener noreferrer">
                "Continue on Messenger"
            </a>
            <span class="parley-messenger-code">
                "No luck? Send us the code " <strong>{code}</strong> " on Messenger."
            </span>
        </div>
    }
}
