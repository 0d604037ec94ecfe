//! The visitor panel: page, referrer, browser, language and the visitor's local time (ticking), all taken from
//! the conversation summary. Everything here was supplied by the visitor's browser, so it is shown as text, and
//! only `http(s)` URLs become links (opened with `noopener noreferrer`).

use leptos::prelude::*;
use protocol::console::ConversationSummary;

use crate::live::use_live;
use crate::time;

#[component]
pub fn VisitorDetails(summary: Memo<Option<ConversationSummary>>) -> impl IntoView {
    let live = use_live();
    let v = move |f: fn(&ConversationSummary) -> Option<String>| move || summary.with(|s| s.as_ref().and_then(f));
    let page = v(|s| s.visitor.page_url.clone());
    let referrer = v(|s| s.visitor.referrer.clone());
    let browser = v(|s| s.visitor.browser.clone().or_else(|| s.visitor.user_agent.clone()));
    let language = v(|s| s.visitor.language.clone());
    let name = v(|s| Some(s.visitor_name.clone()));
    let site = v(|s| Some(s.site_name.clone()));
    let online = move || summary.with(|s| s.as_ref().is_some_and(|s| s.visitor.online));
    let avatar = v(|s| {
        s.visitor
            .avatar_url
            .clone()
            .filter(|u| (u.starts_with('/') && !u.starts_with("//")) || u.starts_with("https://"))
    });
    let messenger = Memo::new(move |_| summary.with(|s| s.as_ref().and_then(|s| s.messenger.clone())));
    let window = move || messenger.with(|m| m.as_ref().map(|m| time::messenger_window(m, live.now.get())));
    let local_time = move || {
        summary.with(|s| {
            let visitor = &s.as_ref()?.visitor;
            let offset = visitor.utc_offset_minutes?;
            let clock = time::clock(live.now.get(), offset);
            let zone = match &visitor.timezone {
                Some(tz) if *tz != time::offset_label(offset) => format!("{tz}, {}", time::offset_label(offset)),
                _ => time::offset_label(offset),
            };
            Some(format!("{clock} ({zone})"))
        })
    };

    view! {
        <aside class="details" aria-labelledby="details-title">
            <h2 id="details-title" class="details__title">"Visitor"</h2>
            <p class="details__who">
                {move || avatar().map(|src| view! { <img class="details__avatar" src=src alt="" /> })}
                <span class="details__name">{name}</span>
                <span class="presence" class:presence--online=online>
                    {move || if online() { "Online" } else { "Offline" }}
                </span>
            </p>
            <dl class="details__list">
                <dt>"Page"</dt>
                <dd>{move || url_view(page())}</dd>
                <dt>"Referrer"</dt>
                <dd>{move || url_view(referrer())}</dd>
                <dt>"Browser"</dt>
                <dd>{move || text_or_unknown(browser())}</dd>
                <dt>"Language"</dt>
                <dd>{move || text_or_unknown(language())}</dd>
                <dt>"Local time"</dt>
                <dd>{move || text_or_unknown(local_time())}</dd>
                <dt>"Site"</dt>
                <dd>{move || text_or_unknown(site())}</dd>
                <Show when=move || messenger.with(Option::is_some)>
                    <dt>"Messenger"</dt>
                    <dd>{move || text_or_unknown(messenger.with(|m| m.as_ref().map(|m| m.name.clone().unwrap_or_else(|| "Linked".to_owned()))))}</dd>
                    <dt>"Reply window"</dt>
                    <dd>{move || text_or_unknown(window())}</dd>
                </Show>
            </dl>
        </aside>
    }
}

fn text_or_unknown(value: Option<String>) -> impl IntoView {
    match value.filter(|v| !v.trim().is_empty()) {
        Some(v) => leptos::either::Either::Left(v),
        None => leptos::either::Either::Right(view! { <span class="muted">"Unknown"</span> }),
    }
}

/// A link for `http(s)` URLs; anything else (e.g. `javascript:`) is shown as inert text.
fn url_view(value: Option<String>) -> impl IntoView {
    use leptos::either::EitherOf3;
    match value.filter(|v| !v.trim().is_empty()) {
        Some(url) if is_web_url(&url) => EitherOf3::A(view! {
            <a href=url.clone() target="_blank" rel="noopener noreferrer" class="details__url">
                {url.clone()}
            </a>
        }),
        Some(text) => EitherOf3::B(view! { <span class="details__url">{text}</span> }),
        None => EitherOf3::C(view! { <span class="muted">"Unknown"</span> }),
    }
}

fn is_web_url(url: &str) -> bool {
    let lower = url.trim_start().get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::is_web_url;

    #[test]
    fn only_http_urls_become_links() {
        assert!(is_web_url("https://shop.example/cart"));
        assert!(is_web_url("HTTP://x"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("data:text/html,hi"));
        assert!(!is_web_url("ht"));
    }
}
