//! The inbox column: "Open" / "Resolved" filter tabs and one link per conversation, most recent activity first.
//!
//! Rows are keyed by conversation id and read their summary reactively, so a live update changes the text in
//! place (focus and scroll survive) and a new conversation slides in at the top.

use leptos::prelude::*;
use leptos_router::hooks::use_location;
use protocol::ConversationStatus;

use crate::live::use_live;
use crate::time;

#[component]
pub fn ConversationList() -> impl IntoView {
    let live = use_live();
    let filter = RwSignal::new(ConversationStatus::Open);
    let location = use_location();
    let selected = Memo::new(move |_| {
        location
            .pathname
            .with(|p| p.strip_prefix("/console/conversations/").map(|id| id.trim_end_matches('/').to_owned()))
    });
    let ids = Memo::new(move |_| {
        let status = filter.get();
        live.state
            .with(|s| s.conversations.iter().filter(|c| c.status == status).map(|c| c.id.clone()).collect::<Vec<_>>())
    });

    let tab = move |status: ConversationStatus, label: &'static str| {
        let id = format!("tab-{}", status.as_str());
        view! {
            <button
                type="button"
                role="tab"
                id=id
                class="tab"
                aria-controls="conversation-list"
                aria-selected=move || (filter.get() == status).to_string()
                tabindex=move || if filter.get() == status { "0" } else { "-1" }
                on:click=move |_| filter.set(status)
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    // Arrow keys move between the two tabs, as the ARIA tabs pattern expects.
                    if matches!(ev.key().as_str(), "ArrowLeft" | "ArrowRight") {
                        ev.prevent_default();
                        let next = match filter.get_untracked() {
                            ConversationStatus::Open => ConversationStatus::Resolved,
                            ConversationStatus::Resolved => ConversationStatus::Open,
                        };
                        filter.set(next);
                        if let Some(el) = document().get_element_by_id(&format!("tab-{}", next.as_str())) {
                            use leptos::wasm_bindgen::JsCast;
                            if let Ok(el) = el.dyn_into::<leptos::web_sys::HtmlElement>() {
                                let _ = el.focus();
                            }
                        }
                    }
                }
            >
                {label}
            </button>
        }
    };

    view! {
        <nav class="inbox" aria-label="Conversations">
            <div class="tabs" role="tablist" aria-label="Filter conversations">
                {tab(ConversationStatus::Open, "Open")}
                {tab(ConversationStatus::Resolved, "Resolved")}
            </div>
            <div
                id="conversation-list"
                class="inbox__panel"
                role="tabpanel"
                aria-labelledby=move || format!("tab-{}", filter.get().as_str())
            >
                <Show
                    when=move || !ids.with(Vec::is_empty)
                    fallback=move || {
                        view! {
                            <p class="inbox__empty">
                                {move || match filter.get() {
                                    ConversationStatus::Open => "No open conversations.",
                                    ConversationStatus::Resolved => "No resolved conversations.",
                                }}
                            </p>
                        }
                    }
                >
                    <ul class="conv-list">
                        <For each=move || ids.get() key=String::clone let(id)>
                            <Row id selected />
                        </For>
                    </ul>
                </Show>
            </div>
        </nav>
    }
}

#[component]
fn Row(id: String, selected: Memo<Option<String>>) -> impl IntoView {
    let live = use_live();
    let summary = {
        let id = id.clone();
        Memo::new(move |_| live.state.with(|s| s.summary(&id).cloned()))
    };
    let field = move |f: fn(&protocol::console::ConversationSummary) -> String| {
        move || summary.with(|s| s.as_ref().map(f).unwrap_or_default())
    };
    let is_selected = {
        let id = id.clone();
        Memo::new(move |_| selected.with(|s| s.as_deref() == Some(id.as_str())))
    };
    let unread = move || summary.with(|s| s.as_ref().map_or(0, |s| s.unread));
    let online = move || summary.with(|s| s.as_ref().is_some_and(|s| s.visitor.online));
    let at = move || summary.with(|s| s.as_ref().map_or(0, |s| s.last_activity_at));
    let href = format!("/console/conversations/{id}");

    view! {
        <li class="conv" class:conv--selected=is_selected class:conv--unread=move || { unread() > 0 }>
            <a href=href class="conv__link" aria-current=move || is_selected.get().then_some("page")>
                <span class="conv__top">
                    <span class="conv__name">{field(|s| s.visitor_name.clone())}</span>
                    {move || online().then(|| view! { <span class="dot dot--online" role="img" aria-label="online"></span> })}
                    <time class="conv__time" datetime=move || time::iso(at())>
                        {move || time::ago(at(), live.now.get(), live.offset_at(at()))}
                    </time>
                </span>
                <span class="conv__bottom">
                    <span class="conv__preview">
                        {move || summary.with(|s| {
                            s.as_ref().and_then(|s| s.last_message.clone()).unwrap_or_else(|| "No messages yet".to_owned())
                        })}
                    </span>
                    {move || {
                        let n = unread();
                        (n > 0).then(|| view! {
                            <span class="badge" role="img" aria-label=format!("{n} unread")>{n}</span>
                        })
                    }}
                </span>
                <span class="conv__site">{field(|s| s.site_name.clone())}</span>
            </a>
        </li>
    }
}
