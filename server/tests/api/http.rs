//! Plain HTTP: health, the frame page and its headers.

use crate::helpers::{HOST_ORIGIN, SITE_KEY, spawn_app};

#[tokio::test]
async fn healthz_answers_200_when_the_database_answers() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    app.store.close().await;
    let response = app.http.get(app.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status(), 503);
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
