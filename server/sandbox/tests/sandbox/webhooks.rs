//! Webhook sender: signatures, verification, receipts, retries, alerts, unsubscription.

use std::sync::atomic::Ordering;
use std::time::Duration;

use messenger_sandbox::{DeliveryStatus, SettingsPatch};
use serde_json::json;

use crate::helpers::{WAIT, is_echo, is_kind, spawn, spawn_receiver, spawn_with};

#[tokio::test]
async fn a_customer_message_arrives_signed_with_both_headers() {
    let env = spawn().await;
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let mid = env.sandbox.user_sends_text(&user.psid, "Hej åäö / 🎉").expect("send");
    let event = env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    assert_eq!(event["sender"]["id"], user.psid);
    assert_eq!(event["recipient"]["id"], "100000000000001");
    assert_eq!(event["message"]["text"], "Hej åäö / 🎉");
    assert!(event["timestamp"].as_i64().is_some());
    let raw = &env.receiver.accepted()[0];
    assert!(raw.body.starts_with(r#"{"#) && raw.body.contains(r"\u00e5\u00e4\u00f6 \/ \ud83c\udf89"));
    assert_eq!(raw.json["object"], "page");
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let deliveries = env.sandbox.webhook_deliveries();
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivered);
    assert_eq!(deliveries[0].body, raw.body);
    assert_eq!(deliveries[0].fields, vec!["messages"]);
}

#[tokio::test]
async fn changing_the_callback_sends_a_verification_get() {
    let env = spawn().await;
    let other = spawn_receiver("sandbox-app-secret-0123456789abcdef", "sandbox-verify-token").await;
    let verification = env.sandbox.set_callback_url(Some(other.url.clone())).await.expect("verification");
    assert!(verification.verified, "{verification:?}");
    assert!(verification.challenge.parse::<u64>().is_ok());
    let psid = env.active_customer().await;
    other.wait_event(|e| e["sender"]["id"] == psid).await;

    other.state.wrong_challenge.store(true, Ordering::SeqCst);
    let failed = env.sandbox.verify_webhook().await;
    assert!(!failed.verified);
    env.sandbox.user_sends_text(&psid, "lost").expect("send");
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let last = env.sandbox.webhook_deliveries().pop().expect("delivery");
    assert!(matches!(last.status, DeliveryStatus::Dropped { .. }), "{last:?}");
}

#[tokio::test]
async fn a_wrong_verify_token_fails_verification() {
    let env = spawn().await;
    let other = spawn_receiver("sandbox-app-secret-0123456789abcdef", "another-token").await;
    let verification = env.sandbox.set_callback_url(Some(other.url)).await.expect("v");
    assert_eq!(verification.status, Some(403));
    assert!(!verification.verified);
}

#[tokio::test]
async fn delivery_and_read_receipts_follow_page_messages() {
    let env = spawn_with(|c| c.delivery_delay = Some(Duration::ZERO)).await;
    let psid = env.active_customer().await;
    let reply = env.send_text(&psid, "Receipt me").await;
    let mid = reply.body["message_id"].as_str().expect("mid").to_owned();
    let delivery = env.receiver.wait_event(|e| is_kind(e, "delivery")).await;
    assert_eq!(delivery["delivery"]["mids"], json!([mid]));
    assert!(delivery["delivery"]["watermark"].as_i64().is_some());
    assert_eq!(delivery["sender"]["id"], psid);
    let watermark = env.sandbox.user_reads(&psid).expect("read").expect("moved");
    let read = env.receiver.wait_event(|e| is_kind(e, "read")).await;
    assert_eq!(read["read"]["watermark"], json!(watermark));
    assert_eq!(env.sandbox.user_reads(&psid).expect("read again"), None);
}

#[tokio::test]
async fn delayed_receipts_arrive_after_the_configured_delay() {
    let env = spawn().await;
    env.sandbox.update_settings(SettingsPatch {
        delivery_delay_ms: Some(Some(50)),
        read_delay_ms: Some(Some(80)),
        ..SettingsPatch::default()
    });
    let psid = env.active_customer().await;
    assert!(env.send_text(&psid, "later").await.ok());
    env.receiver.wait_event(|e| is_kind(e, "delivery")).await;
    env.receiver.wait_event(|e| is_kind(e, "read")).await;
}

#[tokio::test]
async fn failures_are_retried_immediately_then_succeed() {
    let env = spawn().await;
    env.receiver.state.fail_next.store(2, Ordering::SeqCst);
    let psid = env.active_customer().await;
    env.receiver.wait_event(|e| e["sender"]["id"] == psid).await;
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let delivery = env.sandbox.webhook_deliveries().remove(0);
    assert_eq!(delivery.attempts.len(), 3);
    assert_eq!(delivery.attempts[0].status, Some(500));
    assert!(delivery.attempts[2].success);
    assert_eq!(env.receiver.all().len(), 3);
    assert!(env.receiver.all().windows(2).all(|w| w[0].body == w[1].body), "same bytes on retry");
}

#[tokio::test]
async fn slow_acks_time_out_and_are_retried() {
    let env = spawn_with(|c| c.webhook_timeout = Duration::from_millis(200)).await;
    env.receiver.state.delay_ms.store(400, Ordering::SeqCst);
    let psid = env.active_customer().await;
    env.sandbox
        .wait_until(WAIT, |s| {
            let d = s.webhook_deliveries();
            (d.first().is_some_and(|d| d.attempts.len() >= 2)).then_some(())
        })
        .await
        .expect("two attempts");
    env.receiver.state.delay_ms.store(0, Ordering::SeqCst);
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    let delivery = env.sandbox.webhook_deliveries().remove(0);
    assert_eq!(delivery.attempts[0].error.as_deref(), Some("timeout"));
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert!(env.receiver.events().iter().any(|e| e["sender"]["id"] == psid));
}

#[tokio::test]
async fn continuous_failure_alerts_after_15_minutes_and_unsubscribes_after_an_hour() {
    let env = spawn_with(|c| {
        c.retry.backoff = vec![Duration::from_secs(60)];
    })
    .await;
    env.receiver.state.always_fail.store(true, Ordering::SeqCst);
    let psid = env.active_customer().await;
    env.sandbox
        .wait_until(WAIT, |s| (s.webhook_deliveries().first().map_or(0, |d| d.attempts.len()) >= 4).then_some(()))
        .await
        .expect("immediate retries");
    // The clock jump wakes the backoff.
    env.sandbox.advance(Duration::from_secs(16 * 60));
    let alerts = env
        .sandbox
        .wait_until(WAIT, |s| {
            let alerts = s.alerts();
            (!alerts.is_empty()).then_some(alerts)
        })
        .await
        .expect("alert");
    assert_eq!(alerts[0].kind, "developer_alert");
    assert!(env.sandbox.is_subscribed());
    env.sandbox.advance(Duration::from_secs(45 * 60));
    env.sandbox.wait_idle(WAIT).await.expect("dropped");
    assert!(!env.sandbox.is_subscribed());
    assert!(env.sandbox.alerts().iter().any(|a| a.kind == "webhooks_disabled"));
    let subscribed = env.graph_get("/v25.0/me/subscribed_apps", &[]).await;
    assert_eq!(subscribed.body["data"], json!([]));
    // Nothing is sent while unsubscribed; re-subscribing restores delivery.
    env.receiver.state.always_fail.store(false, Ordering::SeqCst);
    let before = env.receiver.all().len();
    env.sandbox.user_sends_text(&psid, "unheard").expect("send");
    env.sandbox.wait_idle(WAIT).await.expect("idle");
    assert_eq!(env.receiver.all().len(), before);
    let again = env
        .graph_post("/v25.0/100000000000001/subscribed_apps", json!({"subscribed_fields": "messages,message_echoes"}))
        .await;
    assert!(again.ok(), "{again:?}");
    let mid = env.sandbox.user_sends_text(&psid, "heard").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
}

#[tokio::test]
async fn head_of_line_keeps_order_while_the_first_payload_is_failing() {
    let env = spawn().await;
    env.receiver.state.fail_next.store(2, Ordering::SeqCst);
    let user = env.sandbox.create_user(Default::default()).expect("user");
    let a = env.sandbox.user_sends_text(&user.psid, "A").expect("A");
    let b = env.sandbox.user_sends_text(&user.psid, "B").expect("B");
    env.receiver.wait_event(|e| e["message"]["mid"] == b).await;
    let order: Vec<_> = env
        .receiver
        .events()
        .into_iter()
        .map(|e| e["message"]["mid"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order, vec![a, b]);
}

#[tokio::test]
async fn unsubscribed_fields_are_not_sent() {
    let env = spawn().await;
    env.sandbox.subscribe(Some(vec!["messages".into()]));
    let psid = env.active_customer().await;
    assert!(env.send_text(&psid, "no echo please").await.ok());
    let mid = env.sandbox.user_sends_text(&psid, "after").expect("send");
    env.receiver.wait_event(|e| e["message"]["mid"] == mid).await;
    assert!(!env.receiver.events().iter().any(is_echo));
}
