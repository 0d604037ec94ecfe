//! `/console/login`: the sign-in form. A plain `<form>` posting to the `login` server function, so it works before
//! (or without) the Wasm; once hydrated it submits in place and shows errors without a reload.

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use crate::api::Login;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let pending = login.pending();
    let error = move || login.value().with(|v| v.as_ref().and_then(|r| r.as_ref().err()).map(ToString::to_string));
    let email = NodeRef::<html::Input>::new();
    let password = NodeRef::<html::Input>::new();
    // What `ActionForm` does, reading the two fields itself: its generic form-data decoding (serde_qs) was about
    // 30 KB of the console's Wasm.
    let on_submit = move |ev: SubmitEvent| {
        if ev.default_prevented() {
            return;
        }
        ev.prevent_default();
        if let (Some(email), Some(password)) = (email.get_untracked(), password.get_untracked()) {
            login.dispatch(Login { email: email.value(), password: password.value() });
        }
    };

    view! {
        <main class="login">
            <div class="login__card">
                <p class="brand brand--large">"Parley"</p>
                <h1>"Sign in to the console"</h1>
                <form action=Login::url() method="post" on:submit=on_submit>
                    <div class="field">
                        <label for="login-email">"Email"</label>
                        <input
                            node_ref=email
                            id="login-email"
                            name="email"
                            type="email"
                            autocomplete="username"
                            required
                            autofocus
                        />
                    </div>
                    <div class="field">
                        <label for="login-password">"Password"</label>
                        <input
                            node_ref=password
                            id="login-password"
                            name="password"
                            type="password"
                            autocomplete="current-password"
                            required
                        />
                    </div>
                    <p class="form-error" role="alert">
                        {error}
                    </p>
                    <button type="submit" class="btn btn--primary btn--block" aria-busy=move || pending.get().to_string()>
                        "Sign in"
                    </button>
                </form>
            </div>
        </main>
    }
}
