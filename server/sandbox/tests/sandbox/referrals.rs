//! m.me referrals: Get Started into a new thread, referral into an existing one, and the
//! Android case where the ref is lost.

use messenger_sandbox::{FaultRule, OpenOutcome, WebhookFault};
use serde_json::json;

use crate::helpers::{is_kind, spawn, spawn_with};

#[tokio::test]
async fn a_new_thread_gets_the_ref_through_the_get_started_postback() {
    let env = spawn().await;
    let user = env.sandbox.create_user(Default::default()).expect("user");
    assert_eq!(
        env.sandbox.user_opens_link(&user.psid, Some("ws1_abc-DEF_123")).expect("open"),
        OpenOutcome::GetStartedShown
    );
    let mid = env.sandbox.user_taps_get_started(&user.psid, Some("ws1_abc-DEF_123")).expect("tap");
    let event = env.receiver.wait_event(|e| is_kind(e, "postback")).await;
    assert_eq!(event["postback"]["mid"], mid);
    assert_eq!(event["postback"]["payload"], "GET_STARTED");
    assert_eq!(event["postback"]["title"], "Get Started");
    assert_eq!(
        event["postback"]["referral"],
        json!({"ref":"ws1_abc-DEF_123","source":"SHORTLINK","type":"OPEN_THREAD"})
    );
}

#[tokio::test]
async fn an_existing_thread_gets_a_messaging_referrals_event_and_reopens_the_window() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(30);
    assert_eq!(env.send_text(&psid, "closed").await.code(), (10, Some(2018278)));
    assert_eq!(env.sandbox.user_opens_link(&psid, Some("ws1_again")).expect("open"), OpenOutcome::ReferralSent);
    let event = env.receiver.wait_event(|e| is_kind(e, "referral")).await;
    assert_eq!(event["sender"]["id"], psid);
    assert_eq!(event["referral"]["ref"], "ws1_again");
    assert_eq!(event["referral"]["source"], "SHORTLINK");
    assert_eq!(event["referral"]["type"], "OPEN_THREAD");
    assert!(env.send_text(&psid, "Here's where we left off").await.ok());
}

#[tokio::test]
async fn android_can_drop_the_referral() {
    let env = spawn().await;
    env.sandbox.push_webhook_fault(FaultRule::times(WebhookFault::DropReferral, 2));
    let user = env.sandbox.create_user(Default::default()).expect("user");
    env.sandbox.user_taps_get_started(&user.psid, Some("lost")).expect("tap");
    let event = env.receiver.wait_event(|e| is_kind(e, "postback")).await;
    assert!(event["postback"].get("referral").is_none());
    assert_eq!(env.sandbox.user_opens_link(&user.psid, Some("lost-too")).expect("open"), OpenOutcome::Reopened);
    let mid = env.sandbox.user_sends_text(&user.psid, "hello").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    assert!(!env.receiver.events().iter().any(|e| is_kind(e, "referral")));
}

#[tokio::test]
async fn without_get_started_a_new_thread_never_gets_the_ref() {
    let env = spawn_with(|c| c.get_started = false).await;
    let user = env.sandbox.create_user(Default::default()).expect("user");
    assert_eq!(env.sandbox.user_opens_link(&user.psid, Some("nowhere")).expect("open"), OpenOutcome::ComposerShown);
    assert!(env.sandbox.user_taps_get_started(&user.psid, None).is_err());
    let mid = env.sandbox.user_sends_text(&user.psid, "hi").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    assert!(!env.receiver.accepted().iter().any(|r| r.body.contains("nowhere")));
}

#[tokio::test]
async fn get_started_can_be_configured_through_messenger_profile() {
    let env = spawn_with(|c| c.get_started = false).await;
    let set = env.graph_post("/v25.0/me/messenger_profile", json!({"get_started": {"payload": "HELLO"}})).await;
    assert_eq!(set.body, json!({"result": "success"}));
    let got = env.graph_get("/v25.0/me/messenger_profile", &[("fields", "get_started")]).await;
    assert_eq!(got.body["data"][0]["get_started"]["payload"], "HELLO");
    let user = env.sandbox.create_user(Default::default()).expect("user");
    env.sandbox.user_taps_get_started(&user.psid, Some("r")).expect("tap");
    let event = env.receiver.wait_event(|e| is_kind(e, "postback")).await;
    assert_eq!(event["postback"]["payload"], "HELLO");
    let deleted = env.graph_delete("/v25.0/me/messenger_profile", json!({"fields": ["get_started"]})).await;
    assert!(deleted.ok());
    let got = env.graph_get("/v25.0/me/messenger_profile", &[("fields", "get_started")]).await;
    assert_eq!(got.body["data"], json!([]));
}

#[tokio::test]
async fn the_customer_flow_works_over_the_control_api() {
    let env = spawn().await;
    let (status, user) = env.control_post("/__emu/users", json!({"first_name":"Zoë","last_name":"Ng"})).await;
    assert_eq!(status, 200);
    let psid = user["psid"].as_str().expect("psid").to_owned();
    assert_eq!(psid.len(), 16);
    let base = format!("/__emu/users/{psid}");
    let (_, open) = env.control_post(&format!("{base}/open"), json!({"ref":"abc"})).await;
    assert_eq!(open["outcome"], "get_started_shown");
    let (status, _) = env.control_post(&format!("{base}/get_started"), json!({"ref":"abc"})).await;
    assert_eq!(status, 200);
    let (_, sent) = env
        .control_post(&format!("{base}/messages"), json!({"text":"Hi from HTTP","attachments":[{"type":"image"}]}))
        .await;
    let mid = sent["mid"].as_str().expect("mid").to_owned();
    let event = env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    let url = event["message"]["attachments"][0]["payload"]["url"].as_str().expect("url");
    let image = env.http.get(url).send().await.expect("fetch");
    assert_eq!(image.headers()["content-type"], "image/png");
    let (_, reply) = env.control_post(&format!("{base}/inbox_reply"), json!({"text":"Inbox"})).await;
    assert!(reply["mid"].is_string());
    let (_, thread) = env.control_get(&format!("{base}/thread")).await;
    assert_eq!(thread["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(thread["user"]["first_name"], "Zoë");
    let (status, missing) = env.control_post("/__emu/users/42/messages", json!({"text":"x"})).await;
    assert_eq!(status, 404);
    assert!(missing["error"].is_string());
    let (_, advanced) = env.control_post("/__emu/clock/advance", json!({"hours": 2})).await;
    assert!(advanced["now_ms"].as_i64().is_some());
    let (_, sent) = env.control_get("/__emu/sent").await;
    assert_eq!(sent[0]["from"]["app_id"], "263902037430900");
    let (status, _) = env.control_post("/__emu/reset", json!({})).await;
    assert_eq!(status, 200);
    assert!(env.sandbox.users().is_empty());
}
