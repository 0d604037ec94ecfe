//! A conversation's messages and status changes, in a `role="log"` live region, plus the visitor's typing
//! indicator. Message bodies are inserted as text nodes only — never as HTML.

use leptos::html::Div;
use leptos::prelude::*;
use protocol::{Attachment, Author, ConversationStatus};

use crate::live::use_live;
use crate::state::{Delivery, Entry, channel_name};
use crate::time;

#[component]
pub fn MessageLog(#[prop(into)] id: Signal<String>) -> impl IntoView {
    let live = use_live();
    let entries = Memo::new(move |_| live.state.with(|s| s.timeline(&id.get())));
    let visitor_name = Memo::new(move |_| {
        live.state
            .with(|s| s.summary(&id.get()).map(|c| c.visitor_name.clone()).unwrap_or_else(|| "Visitor".to_owned()))
    });
    let typing = Memo::new(move |_| live.state.with(|s| s.visitor_typing(&id.get())));
    let log = NodeRef::<Div>::new();

    // Keep the newest message in view, unless the agent scrolled up to read older ones.
    let stick = StoredValue::new(true);
    let on_scroll = move |_| {
        if let Some(el) = log.get_untracked() {
            stick.set_value(el.scroll_height() - el.scroll_top() - el.client_height() < 80);
        }
    };
    Effect::new(move |_| {
        // Read (not just track) the memos, so they are recomputed and keep notifying.
        let _ = (entries.with(Vec::len), typing.get());
        if stick.get_value()
            && let Some(el) = log.get()
        {
            el.set_scroll_top(el.scroll_height());
        }
    });

    view! {
        <div class="log" role="log" aria-live="polite" aria-label="Messages" tabindex="0" node_ref=log on:scroll=on_scroll>
            <Show when=move || !entries.with(Vec::is_empty)>
                <p class="log__start">"Start of the conversation"</p>
            </Show>
            <For each=move || entries.get() key=|e| e.key().to_owned() let(entry)>
                <EntryRow entry conversation=id visitor_name />
            </For>
        </div>
        <p class="typing" aria-live="polite">
            {move || typing.get().then_some("Visitor is typing…")}
        </p>
    }
}

#[component]
fn EntryRow(entry: Entry, conversation: Signal<String>, visitor_name: Memo<String>) -> impl IntoView {
    let live = use_live();
    match entry {
        Entry::Message { key, author, body, at, channel, attachments, .. } => {
            let (class, who) = match &author {
                Author::Visitor => ("msg msg--visitor", None),
                Author::Agent { name } => ("msg msg--agent", Some(name.clone())),
                Author::System => ("msg msg--system", Some("System".to_owned())),
            };
            let is_agent = matches!(author, Author::Agent { .. });
            let author_name = move || who.clone().unwrap_or_else(|| visitor_name.get());
            let channel = channel_name(channel);
            let elsewhere = {
                let key = key.clone();
                Memo::new(move |_| live.state.with(|s| s.channel_delivery(&conversation.get(), &key)))
            };
            let delivery = {
                let key = key.clone();
                Memo::new(
                    move |_| {
                        if is_agent { live.state.with(|s| s.delivery(&conversation.get(), &key)) } else { None }
                    },
                )
            };
            let retry = move |_| live.retry(&key);
            view! {
                <article class=class>
                    <header class="msg__meta">
                        <span class="msg__author">{author_name}</span>
                        <time datetime=time::iso(at)>{move || time::message_time(at, live.now.get(), live.offset_at(at))}</time>
                        <span class="msg__channel">{channel}</span>
                    </header>
                    {(!body.is_empty()).then(|| view! { <p class="msg__body">{body}</p> })}
                    {(!attachments.is_empty()).then(|| view! {
                        <ul class="msg__files">{attachments.into_iter().map(attachment_view).collect_view()}</ul>
                    })}
                    {move || elsewhere.get().map(|d| view! {
                        <p class="msg__route" class:msg__route--problem=d.is_problem()>{d.describe()}</p>
                    })}
                    {move || delivery.get().map(|d| {
                        let retry = retry.clone();
                        let failed = match &d {
                            Delivery::Failed(why) => Some(why.clone()),
                            _ => None,
                        };
                        view! {
                            <p class=d.class()>
                                {failed.clone().unwrap_or_else(|| d.label().to_owned())}
                                {failed.map(|_| view! { <button type="button" class="btn btn--link" on:click=retry>"Retry"</button> })}
                            </p>
                        }
                    })}
                </article>
            }
            .into_any()
        }
        Entry::Channel { channel, linked, name, at, .. } => {
            let channel = channel_name(channel);
            let text = match (linked, name) {
                (true, Some(name)) => format!("Continued on {channel} as {name}"),
                (true, None) => format!("Continued on {channel}"),
                (false, _) => format!("Left {channel}"),
            };
            view! {
                <p class="log__status">
                    {text} " · "
                    <time datetime=time::iso(at)>{move || time::message_time(at, live.now.get(), live.offset_at(at))}</time>
                </p>
            }
            .into_any()
        }
        Entry::Status { status, by, at, .. } => {
            let what = match status {
                ConversationStatus::Resolved => "Resolved",
                ConversationStatus::Open => "Reopened",
            };
            let text = match by {
                Some(name) => format!("{what} by {name}"),
                None => what.to_owned(),
            };
            view! {
                <p class="log__status">
                    {text} " · "
                    <time datetime=time::iso(at)>{move || time::message_time(at, live.now.get(), live.offset_at(at))}</time>
                </p>
            }
            .into_any()
        }
    }
}

/// An attachment: images inline, everything else as a download link. Only same-server paths and https URLs are
/// used as sources; anything else is shown as its name.
fn attachment_view(a: Attachment) -> impl IntoView {
    let name = a.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| match a.kind.as_str() {
        "image" => "Image".to_owned(),
        "video" => "Video".to_owned(),
        "audio" => "Audio".to_owned(),
        _ => "File".to_owned(),
    });
    let safe = (a.url.starts_with('/') && !a.url.starts_with("//")) || a.url.starts_with("https://");
    let inner = match (safe, a.kind.as_str()) {
        (true, "image") => view! {
            <a href=a.url.clone() target="_blank" rel="noopener noreferrer">
                <img class="msg__image" src=a.url.clone() alt=name loading="lazy" />
            </a>
        }
        .into_any(),
        (true, _) => view! {
            <a href=a.url target="_blank" rel="noopener noreferrer" class="msg__file">{name}</a>
        }
        .into_any(),
        (false, _) => view! { <span class="msg__file">{name}</span> }.into_any(),
    };
    view! { <li>{inner}</li> }
}
