//! The reply box. Enter sends, Shift+Enter adds a line, and nothing is sent while an IME composition is open.
//! While the agent types it tells the visitor (at most one `Typing` every few seconds, and a stop after a pause).

use std::time::Duration;

use leptos::html::Textarea;
use leptos::prelude::*;

use crate::live::use_live;

/// Re-announce "typing" at most this often.
const TYPING_REFRESH_MS: i64 = 3_000;
/// Announce "stopped typing" after this much quiet.
const TYPING_IDLE: Duration = Duration::from_secs(4);

#[component]
pub fn Composer(#[prop(into)] id: Signal<String>) -> impl IntoView {
    let live = use_live();
    let text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<&'static str>);
    let input = NodeRef::<Textarea>::new();
    // Time of the last `Typing{true}` sent (0 = not typing), and the timer that will send `Typing{false}`.
    let typing_since = StoredValue::new(0i64);
    let idle_timer = StoredValue::new(None::<TimeoutHandle>);

    let stop_typing = move || {
        if let Some(t) = idle_timer.try_update_value(Option::take).flatten() {
            t.clear();
        }
        if typing_since.try_get_value().unwrap_or(0) != 0 {
            typing_since.set_value(0);
            live.typing(&id.get_untracked(), false);
        }
    };

    let on_input = move |ev: leptos::ev::Event| {
        let value = event_target_value(&ev);
        let blank = value.trim().is_empty();
        text.set(value);
        error.set(None);
        if blank {
            stop_typing();
            return;
        }
        let now = now_ms();
        if now - typing_since.get_value() > TYPING_REFRESH_MS {
            typing_since.set_value(now);
            live.typing(&id.get_untracked(), true);
        }
        if let Some(t) = idle_timer.try_update_value(Option::take).flatten() {
            t.clear();
        }
        idle_timer.set_value(set_timeout_with_handle(stop_typing, TYPING_IDLE).ok());
    };

    let submit = move || {
        let body = text.get_untracked();
        match live.reply(&id.get_untracked(), &body) {
            Ok(()) => {
                text.set(String::new());
                stop_typing();
                if let Some(el) = input.get_untracked() {
                    el.set_value("");
                    let _ = el.focus();
                }
            }
            Err(why) => error.set(Some(match why {
                "message is too long" => "The reply is too long (at most 5000 characters).",
                "message is empty" => "Write a reply first.",
                _ => "The reply could not be sent.",
            })),
        }
    };

    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        // 229: the key event belongs to an IME composition in some browsers that don't set `isComposing`.
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() && ev.key_code() != 229 {
            ev.prevent_default();
            submit();
        }
    };

    on_cleanup(stop_typing);

    view! {
        <form
            class="composer"
            on:submit=move |ev| {
                ev.prevent_default();
                submit();
            }
        >
            <textarea
                class="composer__input"
                aria-label="Reply"
                aria-describedby="composer-hint"
                placeholder="Write a reply…"
                rows="3"
                maxlength="5000"
                node_ref=input
                prop:value=move || text.get()
                on:input=on_input
                on:keydown=on_keydown
            ></textarea>
            <div class="composer__bar">
                <p id="composer-hint" class="composer__hint">
                    {move || error.get().unwrap_or("Enter to send, Shift+Enter for a new line")}
                </p>
                <button type="submit" class="btn btn--primary" disabled=move || text.with(|t| t.trim().is_empty())>
                    "Send"
                </button>
            </div>
        </form>
    }
}

#[cfg(feature = "hydrate")]
fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

#[cfg(not(feature = "hydrate"))]
fn now_ms() -> i64 {
    0
}
