//! `/console/login`: the sign-in form. A plain `<form>` posting to the `login` server function, so it works before
//! (or without) the Wasm; once hydrated it submits in place and shows errors without a reload.

use leptos::prelude::*;

use crate::api::Login;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let pending = login.pending();
    let error = move || login.value().with(|v| v.as_ref().and_then(|r| r.as_ref().err()).map(ToString::to_string));

    view! {
        <main class="login">
            <div class="login__card">
                <p class="brand brand--large">"Parley"</p>
                <h1>"Sign in to the console"</h1>
                <ActionForm action=login>
                    <div class="field">
                        <label for="login-email">"Email"</label>
                        <input
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
                </ActionForm>
            </div>
        </main>
    }
}
