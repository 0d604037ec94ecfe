//! `/console/conversations/:id`: the conversation's log, the reply composer, Resolve/Reopen and the visitor panel.
//!
//! The log is server-rendered from `load_conversation` (a blocking resource carried in [`ConsoleJson`], so the page
//! has it before hydration) and then kept live by the socket: the page `Open`s the conversation after the last
//! applied seq, and reports new visitor messages as read while it is visible.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use protocol::ConversationStatus;

use crate::api::{ConsoleError, load_conversation};
use crate::codec::ConsoleJson;
use crate::components::composer::Composer;
use crate::components::message_log::MessageLog;
use crate::components::messenger_window::MessengerWindow;
use crate::components::visitor_details::VisitorDetails;
use crate::live::use_live;

#[component]
pub fn ConversationPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").unwrap_or_default()));
    let snapshot = Resource::<_, ConsoleJson>::new_with_options(move || id.get(), load_conversation, true);

    // Browser only: stream this conversation's events, and stop when leaving it.
    Effect::new(move |_| live.open(&id.get()));
    let shown = StoredValue::new(id.get_untracked());
    Effect::new(move |_| shown.set_value(id.get()));
    on_cleanup(move || {
        if let Some(id) = shown.try_get_value() {
            live.leave(&id);
        }
    });

    // Report visitor messages as read while the agent is looking at them.
    let last_seq = Memo::new(move |_| live.state.with(|s| s.threads.get(&id.get()).map_or(0, |t| t.last_seq)));
    let unread = Memo::new(move |_| live.state.with(|s| s.summary(&id.get()).map_or(0, |c| c.unread)));
    Effect::new(move |_| {
        // Read the values (not just `track()`): a memo that is only tracked is never recomputed, so it would
        // stay dirty and stop notifying this effect.
        let _ = (last_seq.get(), unread.get(), live.visible.get(), live.conn.get());
        let id = id.get();
        // Write outside the effect's run: writing the state this effect (through the memos) depends on, while it
        // runs, can leave those memos dirty and unsubscribed, and the effect would never wake again.
        queue_microtask(move || live.mark_read(&id));
    });

    view! {
        <Transition fallback=|| view! { <main class="main"><p class="loading">"Loading conversation…"</p></main> }>
            {move || Suspend::new(async move {
                match snapshot.await {
                    Ok(snap) => {
                        live.seed_conversation(snap);
                        view! { <Conversation id /> }.into_any()
                    }
                    Err(e) => {
                        let signed_out = e == ConsoleError::SignedOut;
                        view! {
                            <main class="main main--empty">
                                <div class="empty">
                                    <h1>"Conversation unavailable"</h1>
                                    <p role="alert">{e.to_string()}</p>
                                    {if signed_out {
                                        view! { <a href="/console/login" rel="external">"Sign in"</a> }.into_any()
                                    } else {
                                        view! { <a href="/console">"Back to the inbox"</a> }.into_any()
                                    }}
                                </div>
                            </main>
                        }
                        .into_any()
                    }
                }
            })}
        </Transition>
    }
}

#[component]
fn Conversation(id: Memo<String>) -> impl IntoView {
    let live = use_live();
    let summary = Memo::new(move |_| live.state.with(|s| s.summary(&id.get()).cloned()));
    let status = Memo::new(move |_| summary.with(|s| s.as_ref().map(|s| s.status)));
    let title = move || {
        summary.with(|s| s.as_ref().map(|s| s.visitor_name.clone()).unwrap_or_else(|| "Conversation".to_owned()))
    };
    let subtitle = move || {
        summary.with(|s| {
            s.as_ref().map(|s| {
                let status = match s.status {
                    ConversationStatus::Open => "Open",
                    ConversationStatus::Resolved => "Resolved",
                };
                format!("{} · {status}", s.site_name)
            })
        })
    };
    let set_status = move |to: ConversationStatus| live.set_status(&id.get_untracked(), to);

    view! {
        <main class="main conversation">
            <section class="thread" aria-labelledby="conversation-title">
                <header class="thread__header">
                    <div class="thread__heading">
                        <a class="thread__back" href="/console">"← Inbox"</a>
                        <h1 id="conversation-title">{title}</h1>
                        <p class="thread__sub">{subtitle}</p>
                    </div>
                    {move || match status.get() {
                        Some(ConversationStatus::Open) => Some(view! {
                            <button type="button" class="btn" on:click=move |_| set_status(ConversationStatus::Resolved)>
                                "Resolve"
                            </button>
                        }.into_any()),
                        Some(ConversationStatus::Resolved) => Some(view! {
                            <button type="button" class="btn" on:click=move |_| set_status(ConversationStatus::Open)>
                                "Reopen"
                            </button>
                        }.into_any()),
                        None => None,
                    }}
                </header>
                <MessageLog id />
                <MessengerWindow summary />
                <Composer id />
            </section>
            <VisitorDetails summary />
        </main>
    }
}
