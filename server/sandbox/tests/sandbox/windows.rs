//! The 24 h and 7 d windows on the virtual clock.

use messenger_sandbox::SettingsPatch;
use serde_json::json;

use crate::helpers::spawn;

fn human_agent(psid: &str) -> serde_json::Value {
    json!({"recipient":{"id":psid},"messaging_type":"MESSAGE_TAG","tag":"HUMAN_AGENT",
        "message":{"text":"A human here"}})
}

#[tokio::test]
async fn a_customer_who_never_wrote_cannot_be_messaged() {
    let env = spawn().await;
    let user = env.sandbox.create_user(Default::default()).expect("user");
    assert_eq!(env.send_text(&user.psid, "hi").await.code(), (10, Some(2018108)));
}

#[tokio::test]
async fn response_closes_after_24_hours_and_a_new_message_reopens_it() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(23);
    assert!(env.send_text(&psid, "still open").await.ok());
    env.sandbox.advance_hours(2);
    assert_eq!(env.send_text(&psid, "too late").await.code(), (10, Some(2018278)));
    let update = env.send(json!({"recipient":{"id":psid},"messaging_type":"UPDATE","message":{"text":"u"}})).await;
    assert_eq!(update.code(), (10, Some(2018278)));
    env.sandbox.user_sends_text(&psid, "back").expect("user writes");
    assert!(env.send_text(&psid, "welcome back").await.ok());
}

#[tokio::test]
async fn human_agent_works_for_seven_days_after_the_last_message() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(30);
    assert!(env.send(human_agent(&psid)).await.ok());
    env.sandbox.advance_hours(24 * 5);
    assert!(env.send(human_agent(&psid)).await.ok(), "6 d 6 h after the message");
}

#[tokio::test]
async fn human_agent_fails_after_seven_days() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(24 * 7 + 1);
    assert_eq!(env.send(human_agent(&psid)).await.code(), (10, Some(2018278)));
}

#[tokio::test]
async fn human_agent_counts_from_the_last_message_not_the_last_action() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(24 * 8);
    // A referral reopens the 24 h window but is not a message.
    assert_eq!(
        env.sandbox.user_opens_link(&psid, Some("again")).expect("open"),
        messenger_sandbox::OpenOutcome::ReferralSent
    );
    assert!(env.send_text(&psid, "inside 24 h again").await.ok());
    env.sandbox.advance_hours(25);
    assert_eq!(env.send(human_agent(&psid)).await.code(), (10, Some(2018278)));
}

#[tokio::test]
async fn human_agent_without_the_feature_is_a_permission_error() {
    let env = spawn().await;
    env.sandbox.update_settings(SettingsPatch { human_agent_feature: Some(false), ..SettingsPatch::default() });
    let psid = env.active_customer().await;
    assert_eq!(env.send(human_agent(&psid)).await.code(), (10, None));
}

#[tokio::test]
async fn deprecated_tags_worked_before_2026_04_27() {
    let env = crate::helpers::spawn_with(|c| c.start_time_ms = Some(1_776_000_000_000)).await;
    let psid = env.active_customer().await;
    env.sandbox.advance_hours(48);
    let body = json!({"recipient":{"id":psid},"messaging_type":"MESSAGE_TAG","tag":"POST_PURCHASE_UPDATE","message":{"text":"shipped"}});
    assert!(env.send(body.clone()).await.ok());
    env.sandbox.advance_hours(24 * 30);
    assert_eq!(env.send(body).await.code(), (100, None));
}

#[tokio::test]
async fn get_started_opens_the_window() {
    let env = spawn().await;
    let user = env.sandbox.create_user(Default::default()).expect("user");
    env.sandbox.user_taps_get_started(&user.psid, None).expect("tap");
    assert!(env.send_text(&user.psid, "Welcome!").await.ok());
    // But HUMAN_AGENT needs a message within 7 d: none yet, and 24 h have passed.
    env.sandbox.advance_hours(25);
    assert_eq!(env.send(human_agent(&user.psid)).await.code(), (10, Some(2018278)));
}
