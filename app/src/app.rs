//! The HTML shell, the router and the signed-in layout, which is also the auth guard.
//!
//! Every route under `/console` except `/console/login` renders inside [`ConsoleLayout`]. It loads the agent and
//! the inbox through a *blocking* resource, so during server rendering nothing is streamed before we know whether
//! the session is valid: without one, `<Redirect>` turns the response into a 302 to the login page (on the server)
//! or navigates there (in the browser). With one, it seeds the [`Live`] store, renders the header and the inbox,
//! and, once hydrated, opens the live socket.

use leptos::either::EitherOf3;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_router::components::{Outlet, ParentRoute, Redirect, Route, Router, Routes};
use leptos_router::hooks::use_location;
use leptos_router::path;

use crate::ConsoleAssets;
use crate::api::{ConsoleError, Logout, load_inbox};
use crate::codec::ConsoleJson;
use crate::components::connection_banner::{Alerts, ConnectionBanner};
use crate::components::conversation_list::ConversationList;
use crate::live::Live;
use crate::pages::conversation::ConversationPage;
use crate::pages::inbox::InboxPage;
use crate::pages::login::LoginPage;

/// The whole HTML document. Assets have content-hashed names, so they come from [`ConsoleAssets`] in context
/// rather than from leptos' `HydrationScripts`.
pub fn shell(options: leptos::config::LeptosOptions) -> impl IntoView {
    let _ = options;
    let assets = use_context::<ConsoleAssets>().unwrap_or_default();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light" />
                <meta name="referrer" content="same-origin" />
                <title>"Parley console"</title>
                {assets.css.map(|href| view! { <link rel="stylesheet" href=href /> })}
                {assets.boot_js.map(|src| view! { <script type="module" src=src></script> })}
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The console's router.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/console/login") view=LoginPage />
                <ParentRoute path=path!("/console") view=ConsoleLayout>
                    <Route path=path!("") view=InboxPage />
                    <Route path=path!("conversations/:id") view=ConversationPage />
                </ParentRoute>
            </Routes>
        </Router>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="notice-page">
            <h1>"Page not found"</h1>
            <p>
                <a href="/console">"Go to the inbox"</a>
            </p>
        </main>
    }
}

/// Header, connection banner, conversation list and the routed view; only for a signed-in agent.
#[component]
fn ConsoleLayout() -> impl IntoView {
    let live = Live::new();
    provide_context(live);
    let inbox = Resource::<_, ConsoleJson>::new_with_options(|| (), |_| load_inbox(), true);
    #[cfg(feature = "hydrate")]
    on_cleanup(move || live.stop());

    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match inbox.await {
                    Ok(snap) => {
                        live.seed_inbox(snap);
                        EitherOf3::A(view! { <SignedIn /> })
                    }
                    Err(ConsoleError::SignedOut) => {
                        EitherOf3::B(view! { <Redirect path="/console/login" /> })
                    }
                    Err(e) => EitherOf3::C(view! { <LoadFailed error=e /> }),
                }
            })}
        </Suspense>
    }
}

#[component]
fn SignedIn() -> impl IntoView {
    let live = crate::live::use_live();
    let logout = ServerAction::<Logout>::new();
    // `ActionForm`'s submit, without its generic form-data decoding (see the login page).
    let on_logout = move |ev: leptos::ev::SubmitEvent| {
        if !ev.default_prevented() {
            ev.prevent_default();
            logout.dispatch(Logout {});
        }
    };
    let agent_name = move || live.state.with(|s| s.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default());
    let location = use_location();
    let in_conversation = move || location.pathname.with(|p| p.starts_with("/console/conversations/"));
    // Effects only run in the browser, after hydration: that is when the live socket opens.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| live.start());

    view! {
        <div class="console">
            <header class="topbar">
                <a class="brand" href="/console">
                    "Parley"
                </a>
                <div class="topbar__agent">
                    <span class="agent-name">{agent_name}</span>
                    <form action=Logout::url() method="post" on:submit=on_logout>
                        <button type="submit" class="btn btn--quiet">
                            "Sign out"
                        </button>
                    </form>
                </div>
            </header>
            <ConnectionBanner />
            <Alerts />
            <div class="workspace" class:workspace--conversation=in_conversation>
                <ConversationList />
                <Outlet />
            </div>
        </div>
    }
}

#[component]
fn LoadFailed(error: ConsoleError) -> impl IntoView {
    view! {
        <main class="notice-page">
            <h1>"The console could not load"</h1>
            <p role="alert">{error.to_string()}</p>
            <p>
                <a href="/console" rel="external">
                    "Try again"
                </a>
            </p>
        </main>
    }
}
