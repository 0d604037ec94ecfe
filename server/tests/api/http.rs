//! Plain HTTP: health, the frame page and its headers.

use std::net::{IpAddr, Ipv4Addr};

use parley::config::Settings;

use crate::helpers::{AGENT_EMAIL, AGENT_PASSWORD, HOST_ORIGIN, SITE_KEY, session_cookie, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_is_liveness_and_readyz_names_an_unreachable_database() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/readyz")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["failed"], serde_json::json!([]), "{body}");
    assert_eq!(body["migrations"], "ok", "{body}");
    app.store.close().await;
    let response = app.http.get(app.url("/readyz")).send().await.expect("request");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["failed"], serde_json::json!(["database"]), "{body}");
    assert_eq!(body["database"], "unavailable", "{body}");
    // The process is alive all the same: a restart would not bring the database back.
    let response = app.http.get(app.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.expect("json"), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn the_frame_page_may_only_be_framed_by_the_sites_origins() {
    let app = spawn_app().await;
    let response = app.http.get(app.url(&format!("/frame/{SITE_KEY}"))).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let csp =
        response.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).expect("a CSP").to_string();
    assert!(csp.contains(&format!("frame-ancestors {HOST_ORIGIN}")), "{csp}");
    let body = response.text().await.expect("body");
    assert!(body.contains("\"greeting\":\"Hello there\""), "{body}");

    let missing = app.http.get(app.url("/frame/nope")).send().await.expect("request");
    assert_eq!(missing.status(), 404);
    let error: serde_json::Value = missing.json().await.expect("json error");
    assert_eq!(error["error"]["code"], "not_found");
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Sign-in settings that never get in the way unless a test lowers them.
fn roomy(settings: &mut Settings) {
    settings.auth.attempts_per_ip_per_minute = 10_000;
    settings.limits.login_failures = 10_000;
    settings.auth.hash_wait_ms = 120_000;
}

#[tokio::test]
async fn fifty_parallel_sign_ins_never_hash_more_than_the_configured_slots_at_once() {
    let app = spawn_app_with(|s| {
        roomy(s);
        s.auth.max_concurrent_hashes = 2;
    })
    .await;
    let attempts = (0..50).map(|n| {
        let app = &app;
        async move { app.sign_in(LOCAL, if n % 5 == 0 { AGENT_PASSWORD } else { "wrong password" }).await }
    });
    let responses = futures_util::future::join_all(attempts).await;
    let signed_in = responses.iter().filter(|r| session_cookie(r).is_some()).count();
    let refused = responses.iter().filter(|r| r.status() == 401).count();
    assert_eq!((signed_in, refused), (10, 40), "{:?}", responses.iter().map(|r| r.status()).collect::<Vec<_>>());
    let gauge = app.state.signin.hashing();
    assert!((1..=2).contains(&gauge.peak()), "{} hashes ran at once", gauge.peak());
    assert_eq!(gauge.running(), 0);
}

#[tokio::test]
async fn parallel_wrong_passwords_beyond_the_limit_are_all_refused() {
    let app = spawn_app_with(|s| {
        roomy(s);
        s.limits.login_failures = 3;
        s.auth.backoff_base_secs = 600;
        s.auth.backoff_max_secs = 600;
    })
    .await;
    let attempts = (0..20).map(|_| app.sign_in(LOCAL, "wrong password"));
    let responses = futures_util::future::join_all(attempts).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 17, "{statuses:?}");
    let throttled = responses.iter().find(|r| r.status() == 429).expect("a refusal");
    let wait: u64 = header(throttled, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((590..=600).contains(&wait), "{wait}");
    // The right password from the same address waits too: the delay is per email and IP, and it is bounded.
    assert_eq!(app.sign_in(LOCAL, AGENT_PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn an_attackers_failures_from_one_ip_do_not_lock_the_agent_out_from_another() {
    let app = spawn_app_with(|s| {
        roomy(s);
        s.limits.login_failures = 3;
        s.auth.backoff_base_secs = 600;
        s.auth.backoff_max_secs = 600;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.sign_in(OTHER, "guess").await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    let agent = app.sign_in(LOCAL, AGENT_PASSWORD).await;
    assert!(session_cookie(&agent).is_some(), "the agent is locked out: {}", agent.status());
}

#[tokio::test]
async fn one_address_is_rate_limited_whatever_emails_it_tries() {
    let app = spawn_app_with(|s| {
        roomy(s);
        s.auth.attempts_per_ip_per_minute = 5;
    })
    .await;
    let origin = app.origin();
    let mut statuses = Vec::new();
    for n in 0..6 {
        let email = format!("user{n}@example.com");
        let form = [("email", email.as_str()), ("password", "guess")];
        statuses.push(app.console_post(OTHER, "/api/console/login", &form, &[("origin", &origin)]).await.status());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    assert!(session_cookie(&app.sign_in(LOCAL, AGENT_PASSWORD).await).is_some());
}

#[tokio::test]
async fn cross_site_posts_to_the_console_are_refused_with_403() {
    let app = spawn_app().await;
    let login = [("email", AGENT_EMAIL), ("password", AGENT_PASSWORD)];
    let own = app.origin();
    let own_referer = format!("{own}/console/login");
    let same_site = format!("http://127.0.0.1:{}", app.addr.port() + 1);
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("origin", same_site.as_str())],
        vec![("referer", "https://evil.example/login.html")],
        vec![],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-site")],
    ] {
        let response = app.console_post(LOCAL, "/api/console/login", &login, &headers).await;
        assert_eq!(response.status(), 403, "{headers:?}");
        assert!(session_cookie(&response).is_none(), "{headers:?}");
    }
    // A cross-site sign-out does not end the session.
    let cookie = app.agent_cookie().await;
    let response = app
        .console_post(LOCAL, "/api/console/logout", &[], &[("origin", "https://evil.example"), ("cookie", &cookie)])
        .await;
    assert_eq!(response.status(), 403);
    let inbox = app.console_post(LOCAL, "/api/console/inbox", &[], &[("origin", &own), ("cookie", &cookie)]).await;
    assert_eq!(inbox.status(), 200, "the session survived");
    // The console's own pages may post: by Origin, or by Referer when Origin is missing.
    for headers in [vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")], vec![("referer", &own_referer)]]
    {
        let response = app.console_post(LOCAL, "/api/console/login", &login, &headers).await;
        assert!(session_cookie(&response).is_some(), "{headers:?}: {}", response.status());
    }
}

#[tokio::test]
async fn console_endpoints_without_a_session_answer_401_not_500() {
    let app = spawn_app().await;
    let origin = app.origin();
    let headers = [("origin", origin.as_str())];
    for (path, form) in [("/api/console/inbox", vec![]), ("/api/console/conversation", vec![("id", "c1")])] {
        let response = app.console_post(LOCAL, path, &form, &headers).await;
        assert_eq!(response.status(), 401, "{path}");
        let body = response.text().await.expect("body");
        assert!(body.contains("SignedOut"), "{path}: {body}");
    }
    let cookie = app.agent_cookie().await;
    let with_cookie = [("origin", origin.as_str()), ("cookie", cookie.as_str())];
    let missing = app.console_post(LOCAL, "/api/console/conversation", &[("id", "nope")], &with_cookie).await;
    assert_eq!(missing.status(), 404);
    let session = app.console_post(LOCAL, "/api/console/session", &[], &headers).await;
    assert_eq!(session.status(), 200);
    assert_eq!(session.text().await.expect("body"), "null");
}

#[tokio::test]
async fn console_pages_carry_a_nonce_csp_and_refuse_framing() {
    let app = spawn_app().await;
    let cookie = app.agent_cookie().await;
    let page = app.http.get(app.url("/console")).header("cookie", &cookie).send().await.expect("request");
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "x-frame-options").as_deref(), Some("DENY"));
    assert!(header(&page, "strict-transport-security").is_none(), "no HSTS over http");
    let csp = header(&page, "content-security-policy").expect("a CSP");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let nonce = csp.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).expect("a nonce").to_string();
    assert!(nonce.len() >= 22, "{nonce}");
    let body = page.text().await.expect("body");
    let inline: Vec<&str> =
        body.split("<script").skip(1).filter(|tag| !tag.starts_with(" type=\"module\" src=")).collect();
    assert!(!inline.is_empty(), "the signed-in page has inline hydration data: {body}");
    for script in inline {
        assert!(script.starts_with(&format!(" nonce=\"{nonce}\"")), "inline script without the nonce: <script{script}");
    }
    // Each response gets its own nonce.
    let again = app.http.get(app.url("/console/login")).send().await.expect("request");
    let csp_again = header(&again, "content-security-policy").expect("a CSP");
    assert!(!csp_again.contains(&nonce), "{csp_again}");
    // The chat frame stays frameable by its sites.
    let frame = app.http.get(app.url(&format!("/frame/{SITE_KEY}"))).send().await.expect("request");
    assert!(header(&frame, "x-frame-options").is_none());
}

#[tokio::test]
async fn https_deployments_send_hsts() {
    let app = spawn_app_with(|s| s.http.public_url = "https://chat.example".into()).await;
    for path in ["/console/login", "/healthz"] {
        let response = app.http.get(app.url(path)).send().await.expect("request");
        assert_eq!(header(&response, "strict-transport-security").as_deref(), Some("max-age=31536000"), "{path}");
    }
}
