//! The Messenger reply window above the composer, ticking, so the agent sees before typing whether (and how) a
//! reply will reach the customer on Messenger.

use leptos::prelude::*;
use protocol::console::ConversationSummary;

use crate::live::use_live;
use crate::time;

#[component]
pub fn MessengerWindow(summary: Memo<Option<ConversationSummary>>) -> impl IntoView {
    let live = use_live();
    let text = move || {
        summary.with(|s| {
            let m = s.as_ref()?.messenger.as_ref()?;
            Some(format!("Messenger reply window: {}", time::messenger_window(m, live.now.get())))
        })
    };
    view! {
        <Show when=move || summary.with(|s| s.as_ref().is_some_and(|s| s.messenger.is_some()))>
            <p class="messenger-window" role="status">{text}</p>
        </Show>
    }
}
