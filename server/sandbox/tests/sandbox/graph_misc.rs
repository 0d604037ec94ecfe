//! Profile API, subscriptions, thread control, attachments, batch, the chat page.

use std::time::Duration;

use messenger_sandbox::{NewUser, SettingsPatch};
use serde_json::json;

use crate::helpers::{is_kind, spawn};

#[tokio::test]
async fn the_profile_api_returns_fields_empty_or_2018218() {
    let env = spawn().await;
    let user = env.sandbox.create_user(NewUser::named("Peter", "Chang")).expect("user");
    let fields = [("fields", "first_name,last_name,profile_pic")];
    let before = env.graph_get(&format!("/v25.0/{}", user.psid), &fields).await;
    assert_eq!(before.body, json!({}), "no access before the customer writes");
    env.sandbox.user_sends_text(&user.psid, "hi").expect("send");
    let profile = env.graph_get(&format!("/v25.0/{}", user.psid), &fields).await;
    assert_eq!(profile.body["first_name"], "Peter");
    assert_eq!(profile.body["last_name"], "Chang");
    assert_eq!(profile.body["id"], user.psid);
    let pic = profile.body["profile_pic"].as_str().expect("pic");
    let svg = env.http.get(pic).send().await.expect("pic").text().await.expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains(">PC<"));

    let hidden = env.sandbox.create_user(NewUser { profile_allowed: Some(false), ..NewUser::default() }).expect("user");
    env.sandbox.user_sends_text(&hidden.psid, "hi").expect("send");
    assert_eq!(env.graph_get(&format!("/{}", hidden.psid), &fields).await.body, json!({}));

    let phone = env.sandbox.create_user(NewUser { phone_only: true, ..NewUser::default() }).expect("user");
    env.sandbox.user_sends_text(&phone.psid, "hi").expect("send");
    assert_eq!(env.graph_get(&format!("/{}", phone.psid), &fields).await.code(), (100, Some(2018218)));
    let locale = env.graph_get(&format!("/{}", user.psid), &[("fields", "locale")]).await;
    assert_eq!(locale.code(), (100, Some(2018247)));
}

#[tokio::test]
async fn subscribed_apps_can_be_read_deleted_and_restored() {
    let env = spawn().await;
    let got = env.graph_get("/v25.0/100000000000001/subscribed_apps", &[]).await;
    assert_eq!(got.body["data"][0]["id"], "1517776481860111");
    assert!(env.graph_delete("/v25.0/100000000000001/subscribed_apps", json!({})).await.ok());
    assert!(!env.sandbox.is_subscribed());
    let bad = env.graph_post("/v25.0/100000000000001/subscribed_apps", json!({"subscribed_fields":["nope"]})).await;
    assert_eq!(bad.code().0, 100);
    let ok = env
        .graph_post(
            "/v25.0/100000000000001/subscribed_apps",
            json!({"subscribed_fields":["messages","messaging_postbacks"]}),
        )
        .await;
    assert_eq!(ok.body, json!({"success": true}));
    let got = env.graph_get("/v25.0/100000000000001/subscribed_apps", &[]).await;
    assert_eq!(got.body["data"][0]["subscribed_fields"], json!(["messages", "messaging_postbacks"]));
}

#[tokio::test]
async fn routing_makes_a_non_owner_send_fail_until_control_returns() {
    let env = spawn().await;
    env.sandbox.update_settings(SettingsPatch { routing: Some(true), ..SettingsPatch::default() });
    let psid = env.active_customer().await;
    let pass = env
        .graph_post(
            "/v25.0/me/pass_thread_control",
            json!({"recipient":{"id":psid},"target_app_id":263902037430900u64,"metadata":"to a human"}),
        )
        .await;
    assert_eq!(pass.body, json!({"success": true}));
    assert_eq!(env.send_text(&psid, "x").await.code(), (10, Some(2018300)));
    let take = env.graph_post("/v25.0/me/take_thread_control", json!({"recipient":{"id":psid}})).await;
    assert!(take.ok());
    assert!(env.send_text(&psid, "mine again").await.ok());
    let release = env.graph_post("/v25.0/me/release_thread_control", json!({"recipient":{"id":psid}})).await;
    assert!(release.ok());
    let request = env.graph_post("/v25.0/me/request_thread_control", json!({"recipient":{"id":psid}})).await;
    assert!(request.ok());
}

#[tokio::test]
async fn attachment_urls_expire_by_virtual_time_and_by_fetch_count() {
    let env = spawn().await;
    env.sandbox.update_settings(SettingsPatch { attachment_ttl_secs: Some(600), ..SettingsPatch::default() });
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let mid = env.sandbox.user_sends_attachment(&user.psid, "file").expect("send");
    let event = env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    assert_eq!(event["message"]["attachments"][0]["type"], "file");
    let url = event["message"]["attachments"][0]["payload"]["url"].as_str().expect("url").to_owned();
    let pdf = env.http.get(&url).send().await.expect("fetch");
    assert_eq!(pdf.status().as_u16(), 200);
    assert!(pdf.bytes().await.expect("bytes").starts_with(b"%PDF"));
    env.sandbox.advance(Duration::from_secs(601));
    assert_eq!(env.http.get(&url).send().await.expect("fetch").status().as_u16(), 403);

    env.sandbox.update_settings(SettingsPatch { attachment_max_fetches: Some(Some(1)), ..SettingsPatch::default() });
    let mid = env.sandbox.user_sends_attachment(&user.psid, "image").expect("send");
    let event = env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    let url = event["message"]["attachments"][0]["payload"]["url"].as_str().expect("url").to_owned();
    assert_eq!(env.http.get(&url).send().await.expect("fetch").status().as_u16(), 200);
    assert_eq!(env.http.get(&url).send().await.expect("fetch").status().as_u16(), 403);
}

#[tokio::test]
async fn quick_replies_replies_and_reactions_have_meta_shapes() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let sent = env
        .send(json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":{"text":"Pick",
            "quick_replies":[{"content_type":"text","title":"Yes","payload":"Y"}]}}))
        .await;
    let page_mid = sent.body["message_id"].as_str().expect("mid").to_owned();
    let tap = env.sandbox.user_taps_quick_reply(&psid, "Yes", "Y").expect("tap");
    let reply = env.sandbox.user_replies_to(&psid, &page_mid, "About that").expect("reply");
    env.sandbox.user_reacts(&psid, &page_mid, Some("❤️")).expect("react");
    let tap_event = env.receiver.wait_event(|e| e["message"]["mid"] == tap).await;
    assert_eq!(tap_event["message"]["quick_reply"]["payload"], "Y");
    let reply_event = env.receiver.wait_event(|e| e["message"]["mid"] == reply).await;
    assert_eq!(reply_event["message"]["reply_to"]["mid"], page_mid);
    let reaction = env.receiver.wait_event(|e| is_kind(e, "reaction")).await;
    assert_eq!(reaction["reaction"]["reaction"], "love");
    assert_eq!(reaction["reaction"]["action"], "react");
    assert_eq!(reaction["reaction"]["mid"], page_mid);
}

#[tokio::test]
async fn batch_requests_run_each_sub_request() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let body = format!(
        "recipient={}&messaging_type=RESPONSE&message={}",
        urlencode(&json!({"id": psid}).to_string()),
        urlencode(&json!({"text": "batched"}).to_string())
    );
    let batch = json!([
        {"method":"POST","relative_url":"me/messages","body":body},
        {"method":"GET","relative_url":format!("{psid}?fields=first_name")},
        {"method":"POST","relative_url":"me/messages","body":"recipient=%7B%22id%22%3A%221%22%7D&messaging_type=RESPONSE&message=%7B%22text%22%3A%22x%22%7D"}
    ]);
    let reply = env.graph_post("/v25.0/", json!({"batch": batch})).await;
    let items = reply.body.as_array().expect("array");
    assert_eq!(items[0]["code"], 200);
    assert_eq!(items[1]["code"], 200);
    assert_eq!(items[2]["code"], 400);
    let first: serde_json::Value = serde_json::from_str(items[0]["body"].as_str().expect("s")).expect("json");
    assert!(first["message_id"].as_str().is_some_and(|m| m.starts_with("m_")));
    let debug = env.graph_get("/v25.0/debug_token", &[("input_token", env.token.as_str())]).await;
    assert_eq!(debug.body["data"]["is_valid"], true);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_chat_page_identifies_the_customer_by_cookie() {
    let env = spawn().await;
    let page = env.http.get(env.url("/m.me/parleydemo?ref=ws1_x")).send().await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let cookie = page.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    let psid = cookie.strip_prefix("emu_psid=").and_then(|rest| rest.split(';').next()).expect("cookie").to_owned();
    let html = page.text().await.expect("html");
    assert!(html.contains(&format!(r#"data-psid="{psid}""#)));
    assert!(html.contains(r#"data-ref="ws1_x""#));
    assert!(html.contains(r#"aria-label="Message""#) && html.contains(r#"role="log""#));
    // The same browser (cookie) gets the same customer.
    let again = env
        .http
        .get(env.url("/m.me/100000000000001"))
        .header("cookie", format!("emu_psid={psid}"))
        .send()
        .await
        .expect("page");
    assert!(again.text().await.expect("html").contains(&format!(r#"data-psid="{psid}""#)));
    assert_eq!(env.sandbox.users().len(), 1);
    // Markup in a ref comes back escaped.
    let evil = env.http.get(env.url("/m.me/parleydemo?ref=%22%3E%3Cscript%3E")).send().await.expect("page");
    let html = evil.text().await.expect("html");
    assert!(!html.contains("\"><script>") && html.contains("&quot;&gt;&lt;script&gt;"));
    let unknown = env.http.get(env.url("/m.me/someone-else")).send().await.expect("page");
    assert_eq!(unknown.status().as_u16(), 404);
    let js = env.http.get(env.url("/__emu/assets/chat.js")).send().await.expect("js");
    assert_eq!(js.status().as_u16(), 200);
}

#[tokio::test]
async fn the_thread_long_poll_returns_when_the_page_replies() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let (_, view) = env.control_get(&format!("/__emu/users/{psid}/thread")).await;
    let version = view["version"].as_u64().expect("version");
    let poll = {
        let http = env.http.clone();
        let url = env.url(&format!("/__emu/users/{psid}/thread?since={version}&wait_ms=10000"));
        tokio::spawn(async move { http.get(url).send().await.expect("poll").json::<serde_json::Value>().await })
    };
    assert!(env.send_text(&psid, "live!").await.ok());
    let view = poll.await.expect("join").expect("json");
    let last = view["messages"].as_array().and_then(|m| m.last()).cloned().expect("message");
    assert_eq!(last["text"], "live!");
    assert_eq!(last["from"]["role"], "page");
}
