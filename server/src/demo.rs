//! `parley demo`: everything a newcomer needs to see Parley work, in one process.
//!
//! It makes sure a demo site (key `demo`, allowed origin = the host page's origin) and a demo agent exist, prints
//! the agent's credentials, serves the chat server (default http://127.0.0.1:3000) and, on a *different site*
//! (default http://localhost:8080: another host name, not only another port, so the browser treats the chat frame as
//! a third party exactly as on a customer's site), a host page that embeds the widget with the one script tag. The host page sends a strict CSP without `'wasm-unsafe-eval'`, to show it is not needed.
//! Unless `--no-messenger` is given, it also starts the Messenger sandbox (default http://127.0.0.1:3001) and wires
//! the server to it, so "Continue on Messenger" opens the sandbox's Messenger-like page for a simulated customer and
//! the whole loop works locally without a Facebook account. The sandbox is built in only with the `demo-sandbox`
//! cargo feature (the `parley-demo` binary that `cargo xtask build` makes); the production `parley` binary does not
//! carry it and asks for `--no-messenger` or that binary instead.
//! `/account` on the host page is the same shop with a signed-in customer: the host server (standing for the
//! customer's backend) signs the customer's id with the demo site's identity secret and the page calls
//! `Parley('identify', …)`, so the customer's conversation follows them to any browser.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use clap::Args;
use tokio::net::TcpListener;

use crate::cli::{create_agent, shutdown_signal};
use crate::config::Settings;
use crate::identity::IdentitySecret;
use crate::startup::Application;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address of the demo host page (served under another site name than the chat server: `localhost` for a
    /// loopback address).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub host_bind: SocketAddr,
    /// Address of the Messenger sandbox (Graph API emulator and simulated customer page).
    #[arg(long, default_value = "127.0.0.1:3001")]
    pub messenger_bind: SocketAddr,
    /// Run without the Messenger channel.
    #[arg(long)]
    pub no_messenger: bool,
    /// Demo agent email.
    #[arg(long, default_value = "agent@demo.parley", env = "PARLEY_DEMO_EMAIL")]
    pub email: String,
    /// Demo agent password (default: a fixed, printed demo password; set your own for anything public).
    #[arg(long, default_value = "parley-demo", env = "PARLEY_DEMO_PASSWORD", hide_env_values = true)]
    pub password: String,
}

/// What `parley demo` says when this binary has no sandbox built in.
pub const NO_SANDBOX: &str = "this parley binary is built without the Messenger sandbox (the production build never \
     carries it): run `cargo xtask demo`, or build the demo binary with `cargo build -p server --features demo-sandbox \
     --bin parley-demo` and run `parley-demo demo`, or run `parley demo --no-messenger`";

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.no_messenger || cfg!(feature = "demo-sandbox"), NO_SANDBOX);
    let host_listener = TcpListener::bind(args.host_bind)
        .await
        .with_context(|| format!("cannot listen on {} for the demo host page", args.host_bind))?;
    let host_origin = host_page_origin(host_listener.local_addr()?, &settings.public_origin());
    let listener = TcpListener::bind(settings.http.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http.bind))?;
    let chat_addr = listener.local_addr()?;
    let sandbox = if args.no_messenger {
        None
    } else {
        Some(start_sandbox(&mut settings, args.messenger_bind, chat_addr).await?)
    };
    let store = Store::connect(&settings.database.url, settings.database.max_connections).await?;
    match store.site_by_key("demo").await? {
        None => {
            store
                .create_site(
                    "demo",
                    "Parley Demo Shop",
                    std::slice::from_ref(&host_origin),
                    "Hi! Ask us anything — a person will answer.",
                )
                .await?;
        }
        // A demo database from an earlier run may name another host page address.
        Some(site) if !site.allowed_origins().contains(&host_origin) => {
            store.set_allowed_origins(&site.id, std::slice::from_ref(&host_origin)).await?;
        }
        Some(_) => {}
    }
    let identity = demo_identity_secret(&store).await?;
    let agent_created = if store.agent_by_email(&args.email).await?.is_none() {
        create_agent(&store, &args.email, "Dana (demo agent)", &args.password).await?;
        true
    } else {
        false
    };
    let app = Application::with_store(settings, listener, store)?;
    let chat_origin = app.state().public_origin.to_string();

    println!();
    println!("  Parley demo");
    println!("  host page (a customer's site):  {host_origin}/");
    println!("  ... with a signed-in customer:  {host_origin}/account");
    println!("  agent console:                  {chat_origin}/console");
    if let Some(sandbox) = &sandbox {
        println!(
            "  Messenger sandbox:              {}/__emu (simulated customers open {}/…)",
            sandbox.base_url(),
            sandbox.m_me_base()
        );
    }
    if agent_created {
        println!("  agent sign-in:                  {} / {}", args.email, args.password);
    } else {
        println!("  agent sign-in:                  {} (existing account; password unchanged)", args.email);
    }
    println!();

    let host = host_router(&chat_origin, &identity);
    let host_server = axum::serve(host_listener, host).with_graceful_shutdown(shutdown_signal());
    let (chat, host) = tokio::join!(app.run_until_stopped(shutdown_signal()), host_server);
    chat?;
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    host.context("demo host page server failed")
}

/// The host page's origin: on a loopback address, the loopback *name* the chat server does not use (`localhost`
/// when the chat is on `127.0.0.1`), so host page and chat are different sites, as on a customer's site.
fn host_page_origin(addr: SocketAddr, chat_origin: &str) -> String {
    if !addr.ip().is_loopback() {
        return format!("http://{addr}");
    }
    let host = if chat_origin.contains("://localhost") { "127.0.0.1" } else { "localhost" };
    format!("http://{host}:{}", addr.port())
}

#[cfg(feature = "demo-sandbox")]
use messenger_sandbox::Sandbox;

/// Stands for the sandbox in a binary built without it: no value of it exists (`run` refuses before).
#[cfg(not(feature = "demo-sandbox"))]
enum Sandbox {}

#[cfg(not(feature = "demo-sandbox"))]
impl Sandbox {
    fn base_url(&self) -> &str {
        match *self {}
    }
    fn m_me_base(&self) -> String {
        match *self {}
    }
    async fn shutdown(self) {
        match self {}
    }
}

#[cfg(not(feature = "demo-sandbox"))]
async fn start_sandbox(_: &mut Settings, _: SocketAddr, _: SocketAddr) -> anyhow::Result<Sandbox> {
    anyhow::bail!(NO_SANDBOX)
}

/// Starts the sandbox and points the Messenger settings at it (same app, page and secrets on both sides).
#[cfg(feature = "demo-sandbox")]
async fn start_sandbox(settings: &mut Settings, bind: SocketAddr, chat_addr: SocketAddr) -> anyhow::Result<Sandbox> {
    let listener =
        TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind} for the Messenger sandbox"))?;
    let public =
        if settings.http.public_url.is_empty() { format!("http://{chat_addr}") } else { settings.public_origin() };
    let config = messenger_sandbox::SandboxConfig {
        callback_url: Some(format!("{public}/webhooks/messenger")),
        ..Default::default()
    };
    let m = &mut settings.messenger;
    m.enabled = true;
    m.app_id = config.app_id.clone();
    m.page_id = config.page_id.clone();
    m.page_username = config.page_username.clone();
    m.page_token = config.page_token.clone().into();
    m.app_secret = config.app_secret.clone().into();
    m.verify_token = config.verify_token.clone().into();
    m.site_key = "demo".into();
    m.human_agent = config.human_agent_feature;
    let sandbox = messenger_sandbox::launch(config, listener).await?;
    settings.messenger.graph_url = sandbox.base_url().to_string();
    settings.messenger.m_me_url = sandbox.m_me_base();
    // The sandbox serves customers' attachments and pictures itself, on this exact host and port.
    settings.messenger.attachment_hosts.push(sandbox.base_url().to_string());
    Ok(sandbox)
}

/// The demo site's identity secret, made on the first run.
async fn demo_identity_secret(store: &Store) -> anyhow::Result<IdentitySecret> {
    let site = store.site_by_key("demo").await?.context("the demo site is missing")?;
    if let Some(secret) = store.site_identity(&site.id).await?.secret {
        return Ok(secret);
    }
    let secret = IdentitySecret::generate();
    store.set_identity_secret(&site.key, Some(&secret)).await?;
    Ok(secret)
}

/// The demo's signed-in customer.
pub const DEMO_CUSTOMER_ID: &str = "demo-customer-ada";

/// The demo customer site: a page embedding the widget, plus its own script using the JS API; `/account` is the
/// same page with a signed-in customer, identified with a hash the host server computes (as a backend would).
pub fn host_router(chat_origin: &str, identity: &IdentitySecret) -> Router {
    let csp = format!("script-src 'self' {chat_origin}; frame-src {chat_origin}; object-src 'none'; base-uri 'none'");
    let csp = HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("object-src 'none'"));
    let anonymous = HOST_PAGE.replace("{CHAT}", chat_origin).replace("{IDENTIFY}", "").replace("{WHO}", "");
    let account = HOST_PAGE
        .replace("{CHAT}", chat_origin)
        .replace("{IDENTIFY}", "<script src=\"/identify.js\"></script>\n")
        .replace("{WHO}", "<p id=\"signed-in\">Signed in as Ada (demo customer).</p>\n");
    let claim = serde_json::json!({
        "id": DEMO_CUSTOMER_ID,
        "name": "Ada (demo customer)",
        "email": "ada@demo.parley",
        "hash": identity.sign(DEMO_CUSTOMER_ID),
    });
    let identify_js = format!(
        "// The shop's backend signed its logged-in customer's id with the site's identity secret (HMAC-SHA256).\n\
         window.Parley = window.Parley || function () {{ (Parley.q = Parley.q || []).push(arguments); }};\n\
         Parley('identify', {claim});\n"
    );
    let page = move |html: String| {
        let csp = csp.clone();
        get(move || {
            let html = html.clone();
            let csp = csp.clone();
            async move {
                let mut response = Html(html).into_response();
                response.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
        })
    };
    let script = |js: String| {
        get(move || {
            let js = js.clone();
            async move {
                let mut response =
                    ([(CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"))], js).into_response();
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
        })
    };
    Router::new()
        .route("/", page(anonymous))
        .route("/account", page(account))
        .route("/host.js", script(HOST_JS.to_string()))
        .route("/identify.js", script(identify_js))
}

const HOST_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley Demo Shop</title>
<script src="/host.js"></script>
{IDENTIFY}<script src="{CHAT}/widget.js" data-site="demo" async></script>
</head>
<body>
<header><h1>Parley Demo Shop</h1></header>
<main>
{WHO}
<p>This page stands for a customer's website on its own origin. The chat in the corner comes from one script tag:</p>
<pre>&lt;script src="{CHAT}/widget.js" data-site="demo" async&gt;&lt;/script&gt;</pre>
<p>
<button id="open-chat" type="button">Ask a question</button>
<span id="host-unread" aria-live="polite"></span>
</p>
<h2>Events seen by the host page</h2>
<ol id="host-events"></ol>
</main>
</body>
</html>
"#;

const HOST_JS: &str = r#"// The host page's own script: the documented Parley stub (so calls before widget.js loads are queued) and a
// few uses of the JS API. widget.js is async and may run before the page body is parsed, so the handlers wait
// for the DOM before touching it.
window.Parley = window.Parley || function () { (Parley.q = Parley.q || []).push(arguments); };
function whenReady(fn) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn);
  else fn();
}
function hostLog(text) {
  whenReady(function () {
    var li = document.createElement('li');
    li.textContent = text;
    document.getElementById('host-events').appendChild(li);
  });
}
Parley('on', 'ready', function () { hostLog('ready'); });
Parley('on', 'unread', function (n) {
  whenReady(function () { document.getElementById('host-unread').textContent = n ? n + ' unread' : ''; });
});
Parley('on', 'message', function (m) { hostLog('message from ' + m.author + ': ' + m.body); });
whenReady(function () {
  document.getElementById('open-chat').addEventListener('click', function () { Parley('open'); });
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_page_is_on_another_site_than_the_chat() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(host_page_origin(addr, "http://127.0.0.1:3000"), "http://localhost:8080");
        assert_eq!(host_page_origin(addr, "http://localhost:3000"), "http://127.0.0.1:8080");
        let public: SocketAddr = "192.0.2.7:8080".parse().expect("addr");
        assert_eq!(host_page_origin(public, "https://chat.example"), "http://192.0.2.7:8080");
    }

    #[tokio::test]
    async fn the_account_page_identifies_its_customer_with_a_hash_that_verifies() {
        let secret = IdentitySecret::generate();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(axum::serve(listener, host_router("http://127.0.0.1:3000", &secret)).into_future());
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move { reqwest::get(url).await.expect("get").text().await.expect("body") }
        };
        assert!(!get("/").await.contains("identify.js"));
        assert!(get("/account").await.contains("<script src=\"/identify.js\"></script>"));
        let script = get("/identify.js").await;
        let json = script.split("Parley('identify', ").nth(1).and_then(|rest| rest.strip_suffix(");\n")).expect("call");
        let claim: protocol::widget::Identity = serde_json::from_str(json).expect("an identity");
        assert_eq!(claim.id, DEMO_CUSTOMER_ID);
        assert!(secret.verify(&claim.id, &claim.hash));
        assert!(!script.contains(secret.expose()), "the secret reached the page");
    }
}
