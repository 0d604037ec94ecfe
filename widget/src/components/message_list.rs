//! The message list: a `role="log"` live region with the greeting (not persisted) first, then the conversation keyed
//! by each message's stable key, so a pending bubble turns into the committed one in place. Bodies are text nodes,
//! never HTML. Sticks to the bottom unless the visitor scrolled up.

use std::cell::Cell;
use std::rc::Rc;

use leptos::html;
use leptos::prelude::*;

use crate::clock;
use crate::js::utc_offset_minutes;
use crate::state::{Chat, Delivery, Msg, Who};

#[component]
pub fn MessageList(chat: RwSignal<Chat>, greeting: String, site_name: String) -> impl IntoView {
    let list = NodeRef::<html::Div>::new();
    let stick = Rc::new(Cell::new(true));

    let s = stick.clone();
    Effect::new(move |_| {
        chat.track();
        if s.get() {
            let list = list;
            request_animation_frame(move || {
                if let Some(el) = list.get_untracked() {
                    el.set_scroll_top(el.scroll_height());
                }
            });
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = list.get_untracked() {
            stick.set(el.scroll_top() + el.client_height() >= el.scroll_height() - 48);
        }
    };

    let greeting = (!greeting.is_empty()).then(|| {
        view! {
            <div class="msg msg-agent msg-greeting">
                <p class="msg-meta"><span class="msg-author">{site_name}</span></p>
                <p class="msg-body">{greeting}</p>
            </div>
        }
    });

    view! {
        <div
            class="parley-log"
            role="log"
            aria-live="polite"
            aria-relevant="additions"
            aria-label="Messages"
            tabindex="0"
            node_ref=list
            on:scroll=on_scroll
        >
            {greeting}
            <For
                each=move || chat.with(|c| c.messages().to_vec())
                key=|m: &Msg| m.key.clone()
                children=move |m: Msg| row(chat, m)
            />
        </div>
    }
}

fn row(chat: RwSignal<Chat>, m: Msg) -> impl IntoView {
    let (class, author) = match &m.who {
        Who::Visitor => ("msg msg-visitor", "You".to_string()),
        Who::Agent(name) => ("msg msg-agent", name.clone()),
        Who::System => ("msg msg-system", String::new()),
    };
    let time = clock::hhmm(m.at, utc_offset_minutes(m.at));
    let delivery = (m.who == Who::Visitor).then(|| {
        let key = m.key.clone();
        let state = Memo::new(move |_| chat.with(|c| c.delivery(&key)));
        let class = move || match state.get() {
            Some(Delivery::Failed(_)) => "msg-status msg-failed",
            Some(Delivery::Sending) => "msg-status msg-sending",
            _ => "msg-status",
        };
        let text = move || match state.get() {
            Some(Delivery::Sending) => "Sending…".to_string(),
            Some(Delivery::Sent) => "Sent".to_string(),
            Some(Delivery::Read) => "Read".to_string(),
            Some(Delivery::Failed(reason)) => format!("Not sent: {reason}"),
            None => String::new(),
        };
        view! { <p class=class>{text}</p> }
    });
    let author = (!author.is_empty()).then(|| view! { <span class="msg-author">{author}</span> " " });
    let channel = m.via_messenger.then(|| view! { <span class="msg-channel">"via Messenger"</span> " " });
    let mirrored = matches!(m.who, Who::Agent(_)).then(|| {
        let key = m.key.clone();
        let state = Memo::new(move |_| chat.with(|c| c.messenger_state(&key)));
        let text = move || match state.get() {
            Some(protocol::DeliveryState::Sent) => "Sent to Messenger",
            Some(protocol::DeliveryState::Delivered) => "Delivered on Messenger",
            Some(protocol::DeliveryState::Read) => "Seen on Messenger",
            _ => "",
        };
        view! { <p class="msg-status" hidden=move || text().is_empty()>{text}</p> }
    });
    let attachments = (!m.attachments.is_empty()).then(|| {
        m.attachments
            .iter()
            .map(|a| {
                let url = a.url.clone();
                let name = a.name.clone().unwrap_or_else(|| "file".to_string());
                if a.kind == "image" {
                    let src = url.clone();
                    view! { <a class="msg-attachment" href=url target="_blank" rel="noopener"><img src=src alt=name/></a> }
                        .into_any()
                } else {
                    view! { <a class="msg-attachment" href=url target="_blank" rel="noopener">{name}</a> }.into_any()
                }
            })
            .collect_view()
    });
    view! {
        <div class=class>
            <p class="msg-meta">{author}{channel}<span class="msg-time">{time}</span></p>
            <p class="msg-body">{m.body}</p>
            {attachments}
            {mirrored}
            {delivery}
        </div>
    }
}
