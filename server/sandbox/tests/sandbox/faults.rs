//! Fault injection: Send API errors and webhook misbehaviour.

use std::time::Duration;

use messenger_sandbox::{FaultRule, SendFault, WebhookFault};
use serde_json::json;

use crate::helpers::{WAIT, is_echo, is_kind, spawn, spawn_with};

#[tokio::test]
async fn plain_error_faults_fire_once_then_sends_work_again() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let cases = [
        (SendFault::TemporaryFailure, 400, (1200, None)),
        (SendFault::ServiceUnavailable, 400, (2, None)),
        (SendFault::UnknownError, 400, (1, Some(99))),
        (SendFault::AttachmentUnreachable, 400, (100, Some(2018008))),
        (SendFault::ServerError { status: 500 }, 500, (1, Some(99))),
        (SendFault::ServerError { status: 503 }, 503, (2, None)),
        (SendFault::Custom { code: 368, subcode: None, message: None, status: None }, 400, (368, None)),
    ];
    for (fault, status, code) in cases {
        env.sandbox.push_send_fault(FaultRule::once(fault.clone()));
        let reply = env.send_text(&psid, "x").await;
        assert_eq!(reply.status, status, "{fault:?}");
        assert_eq!(reply.code(), code, "{fault:?}");
        assert!(env.send_text(&psid, "x").await.ok(), "{fault:?} fired twice");
    }
    assert_eq!(env.sandbox.sent_messages().len(), 7, "failed calls send nothing");
}

#[tokio::test]
async fn a_502_is_an_html_page() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::ServerError { status: 502 }));
    let reply = env.send_text(&psid, "x").await;
    assert_eq!(reply.status, 502);
    assert!(reply.body.as_str().is_some_and(|b| b.contains("Bad Gateway")));
}

#[tokio::test]
async fn throttling_carries_the_business_use_case_header() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::times(SendFault::RateLimited { code: 80006 }, 2));
    env.sandbox.push_send_fault(FaultRule::once(SendFault::RateLimited { code: 613 }));
    for expected in [(80006, None), (80006, None), (613, Some(2534040))] {
        let reply = env.send_text(&psid, "x").await;
        assert_eq!(reply.code(), expected);
        let usage: serde_json::Value =
            serde_json::from_str(reply.headers["x-business-use-case-usage"].to_str().expect("ascii"))
                .expect("json header");
        assert_eq!(usage["100000000000001"][0]["type"], "messenger");
    }
    assert!(env.send_text(&psid, "x").await.ok());
}

#[tokio::test]
async fn delivered_but_error_sends_the_message_and_its_echo() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::DeliveredButError));
    let reply = env
        .send(json!({"recipient":{"id":psid},"messaging_type":"RESPONSE",
            "message":{"text":"maybe","metadata":"ws-7"}}))
        .await;
    assert_eq!(reply.code(), (1, Some(1357046)));
    let sent = env.sandbox.sent_messages();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].message.error_returned);
    let echo = env.receiver.wait_event(is_echo).await;
    assert_eq!(echo["message"]["metadata"], "ws-7");
}

#[tokio::test]
async fn a_hang_outlives_the_client_and_still_delivers() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::Hang { ms: 600 }));
    let result = env
        .http
        .post(env.url("/v25.0/me/messages"))
        .query(&[("access_token", env.token.as_str())])
        .json(&json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":{"text":"slow","metadata":"m-9"}}))
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    let sent = env.sandbox.wait_for_sent(1, WAIT).await.expect("delivered anyway");
    assert_eq!(sent[0].message.metadata.as_deref(), Some("m-9"));
    env.receiver.wait_event(|e| e["message"]["metadata"] == "m-9").await;
}

#[tokio::test]
async fn token_revocation_persists_until_restored() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::TokenRevoked));
    assert_eq!(env.send_text(&psid, "x").await.code(), (190, Some(460)));
    assert_eq!(env.send_text(&psid, "x").await.code(), (190, Some(460)));
    let profile = env.graph_get(&format!("/v25.0/{psid}"), &[("fields", "first_name")]).await;
    assert_eq!(profile.code().0, 190);
    env.sandbox.restore_token();
    assert!(env.send_text(&psid, "x").await.ok());
}

#[tokio::test]
async fn the_user_blocking_mid_conversation_is_551_from_then_on() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::UserBlocks));
    assert_eq!(env.send_text(&psid, "x").await.code(), (551, Some(1545041)));
    assert_eq!(env.send_text(&psid, "x").await.code(), (551, Some(1545041)));
    assert!(env.sandbox.user(&psid).expect("user").blocked);
}

#[tokio::test]
async fn the_inbox_taking_the_thread_gives_2018300_and_standby_events() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.push_send_fault(FaultRule::once(SendFault::InboxTakesThread));
    assert_eq!(env.send_text(&psid, "x").await.code(), (10, Some(2018300)));
    let handover = env.receiver.wait_event(|e| is_kind(e, "take_thread_control")).await;
    assert_eq!(handover["take_thread_control"]["new_owner_app_id"], "263902037430900");
    let owner = env.graph_get("/v25.0/me/thread_owner", &[("recipient", psid.as_str())]).await;
    assert_eq!(owner.body["data"][0]["thread_owner"]["app_id"], "263902037430900");
    // The Inbox's reply and the customer's next message arrive in standby[].
    let inbox_mid = env.sandbox.inbox_replies(&psid, "Human here").expect("inbox");
    let customer_mid = env.sandbox.user_sends_text(&psid, "thanks").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == customer_mid).await;
    let standby: Vec<_> = env
        .receiver
        .accepted()
        .iter()
        .flat_map(|r| r.json["entry"][0]["standby"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        standby.iter().any(|e| e["message"]["mid"] == inbox_mid && e["message"]["app_id"] == json!(263902037430900u64))
    );
    assert!(standby.iter().any(|e| e["message"]["mid"] == customer_mid));
    env.sandbox.inbox_passes_thread(&psid).expect("pass back");
    env.receiver.wait_event(|e| is_kind(e, "pass_thread_control")).await;
    assert!(env.send_text(&psid, "back to the bot").await.ok());
}

#[tokio::test]
async fn probabilistic_faults_are_seeded_over_http() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let (status, _) = env.control_post("/__emu/faults/seed", json!({"seed": 11})).await;
    assert_eq!(status, 200);
    let (status, _) =
        env.control_post("/__emu/faults/send", json!({"kind":"temporary_failure","probability":0.5})).await;
    assert_eq!(status, 200);
    let mut outcomes = Vec::new();
    for _ in 0..24 {
        outcomes.push(env.send_text(&psid, "x").await.ok());
    }
    assert!(outcomes.iter().any(|ok| *ok) && outcomes.iter().any(|ok| !*ok), "{outcomes:?}");
    let (status, _) = env.control_get("/__emu/faults").await;
    assert_eq!(status, 200);
    env.sandbox.clear_faults();
    assert!(env.send_text(&psid, "x").await.ok());
}

#[tokio::test]
async fn duplicate_delivery_repeats_the_same_bytes() {
    let env = spawn().await;
    env.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::Duplicate));
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let mid = env.sandbox.user_sends_text(&user.psid, "twice").expect("send");
    let posts = env.receiver.wait_posts(2).await;
    assert_eq!(posts[0].body, posts[1].body);
    assert_eq!(env.receiver.events().iter().filter(|e| e["message"]["mid"] == mid).count(), 2);
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let deliveries = env.sandbox.webhook_deliveries();
    assert_eq!(deliveries[1].duplicate_of, Some(deliveries[0].id));
}

#[tokio::test]
async fn reordering_delivers_the_next_event_first() {
    let env = spawn().await;
    env.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::Reorder));
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let a = env.sandbox.user_sends_text(&user.psid, "A").expect("A");
    let b = env.sandbox.user_sends_text(&user.psid, "B").expect("B");
    env.receiver.wait_event(|e| e["message"]["mid"] == a).await;
    let order: Vec<_> = env.receiver.events().iter().map(|e| e["message"]["mid"].clone()).collect();
    assert_eq!(order, vec![json!(b), json!(a)]);
}

#[tokio::test]
async fn batching_spreads_events_over_entries_in_one_post() {
    let env = spawn().await;
    env.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::Batch { events: 3, entries: 2 }));
    let user = env.sandbox.create_user(Default::default()).expect("user");
    for text in ["1", "2", "3"] {
        env.sandbox.user_sends_text(&user.psid, text).expect("send");
    }
    let posts = env.receiver.wait_posts(1).await;
    let entries = posts[0].json["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["messaging"].as_array().map(Vec::len), Some(2));
    assert_eq!(entries[1]["messaging"].as_array().map(Vec::len), Some(1));
    assert_eq!(env.receiver.events().len(), 3);
}

#[tokio::test]
async fn a_bad_signature_is_rejected_and_the_retry_is_signed_correctly() {
    let env = spawn().await;
    env.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::BadSignature));
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let mid = env.sandbox.user_sends_text(&user.psid, "signed?").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    let all = env.receiver.all();
    assert_eq!(all.len(), 2);
    assert!(!all[0].signature_ok && all[1].signature_ok);
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let attempts = &env.sandbox.webhook_deliveries()[0].attempts;
    assert!(attempts[0].bad_signature && attempts[0].status == Some(403));
}

#[tokio::test]
async fn deliveries_can_lose_their_mids() {
    let env = spawn_with(|c| c.delivery_delay = Some(Duration::ZERO)).await;
    env.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::NoDeliveryMids));
    let psid = env.active_customer().await;
    assert!(env.send_text(&psid, "x").await.ok());
    let delivery = env.receiver.wait_event(|e| is_kind(e, "delivery")).await;
    assert!(delivery["delivery"].get("mids").is_none());
    assert!(delivery["delivery"]["watermark"].as_i64().is_some());
}

#[tokio::test]
async fn stickers_arrive_as_image_and_sticker_until_the_transition_ends() {
    let before = spawn_with(|c| c.start_time_ms = Some(1_780_000_000_000)).await;
    let user = before.sandbox.create_user(Default::default()).expect("user");
    let mid = before.sandbox.user_sends_sticker(&user.psid).expect("sticker");
    let event = before.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    let types: Vec<_> =
        event["message"]["attachments"].as_array().expect("attachments").iter().map(|a| a["type"].clone()).collect();
    assert_eq!(types, vec![json!("image"), json!("sticker")]);

    let after = spawn_with(|c| c.start_time_ms = Some(1_790_000_000_000)).await;
    let user = after.sandbox.create_user(Default::default()).expect("user");
    let only = after.sandbox.user_sends_sticker(&user.psid).expect("sticker");
    after.sandbox.push_webhook_fault(FaultRule::once(WebhookFault::StickerAsImageAndSticker));
    let both = after.sandbox.user_sends_sticker(&user.psid).expect("sticker");
    let event = after.receiver.wait_event(|e| e["message"]["mid"] == only).await;
    assert_eq!(event["message"]["attachments"].as_array().map(Vec::len), Some(1));
    assert_eq!(event["message"]["attachments"][0]["payload"]["sticker_id"], "369239263222822");
    let event = after.receiver.wait_event(|e| e["message"]["mid"] == both).await;
    assert_eq!(event["message"]["attachments"].as_array().map(Vec::len), Some(2));
}
