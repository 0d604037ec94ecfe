//! The composer: a textarea where Enter sends and Shift+Enter adds a line (IME composition never sends), a "Send"
//! button, typing notifications, and an inline reason when a message cannot be sent.

use std::rc::Rc;

use leptos::ev::KeyboardEvent;
use leptos::html;
use leptos::prelude::*;

use crate::session::Session;

#[component]
pub fn Composer(session: Rc<Session>) -> impl IntoView {
    let (text, set_text) = signal(String::new());
    let (error, set_error) = signal(None::<&'static str>);
    let area = NodeRef::<html::Textarea>::new();

    let focus_request = session.ui.focus_request;
    Effect::new(move |_| {
        if focus_request.get() > 0
            && let Some(el) = area.get_untracked()
        {
            let _ = el.focus();
        }
    });

    let s = session.clone();
    let submit = Rc::new(move || {
        let body = text.get_untracked();
        if body.trim().is_empty() {
            return;
        }
        match s.send_message(&body) {
            Ok(()) => {
                set_text.set(String::new());
                set_error.set(None);
            }
            Err(reason) => set_error.set(Some(reason)),
        }
    });

    let on_submit = {
        let submit = submit.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            submit();
            if let Some(el) = area.get_untracked() {
                let _ = el.focus();
            }
        }
    };
    let on_keydown = move |ev: KeyboardEvent| {
        // 229: the Enter that ends an IME composition in Safari, reported with `isComposing == false`.
        #[allow(deprecated)]
        let ime = ev.is_composing() || ev.key_code() == 229;
        if ev.key() == "Enter" && !ev.shift_key() && !ime {
            ev.prevent_default();
            submit();
        }
    };
    let s = session;
    let on_input = move |ev| {
        let value = event_target_value(&ev);
        s.on_input(!value.trim().is_empty());
        set_text.set(value);
        set_error.set(None);
    };
    let error_text = move || {
        error.get().map(|e| match e {
            "message is too long" => "Message is too long (5000 characters at most).",
            other => other,
        })
    };

    view! {
        <form class="parley-composer" on:submit=on_submit>
            <textarea
                node_ref=area
                rows="1"
                aria-label="Type a message"
                placeholder="Type a message…"
                prop:value=move || text.get()
                on:input=on_input
                on:keydown=on_keydown
            ></textarea>
            <button type="submit" class="parley-send" aria-label="Send">
                <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                    <path d="M3 20.5l18-8.5L3 3.5v6.6l12 1.9-12 1.9z" fill="currentColor"></path>
                </svg>
            </button>
        </form>
        <p class="parley-error" role="alert">{error_text}</p>
    }
}
