//! `/console`: the inbox with no conversation selected (the list itself belongs to the layout).

use leptos::prelude::*;

#[component]
pub fn InboxPage() -> impl IntoView {
    view! {
        <main class="main main--empty main--landing">
            <div class="empty">
                <h1>"Inbox"</h1>
                <p>"Select a conversation to read and reply. New conversations appear in the list as they start."</p>
            </div>
        </main>
    }
}
