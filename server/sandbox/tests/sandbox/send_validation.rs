//! Send API validation, rule by rule.

use serde_json::json;

use crate::helpers::{WAIT, is_echo, spawn};

#[tokio::test]
async fn a_valid_send_returns_recipient_and_a_fresh_mid() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let reply = env.send_text(&psid, "Hello").await;
    assert!(reply.ok(), "{reply:?}");
    assert_eq!(reply.body["recipient_id"], psid);
    let mid = reply.body["message_id"].as_str().expect("mid");
    assert!(mid.starts_with("m_") && mid.len() == 26, "{mid}");
    let sent = env.sandbox.sent_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.mid, mid);
    assert_eq!(sent[0].message.messaging_type.as_deref(), Some("RESPONSE"));
}

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_get_190_with_www_authenticate() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let body = json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":{"text":"x"}});

    let missing = env.http.post(env.url("/v25.0/me/messages")).json(&body).send().await.expect("post");
    assert_eq!(missing.status().as_u16(), 400);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("OAuth \"Facebook Platform\" \"invalid_token\"")
    );
    let value: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(value["error"]["code"], 190);
    assert_eq!(value["error"]["type"], "OAuthException");
    assert!(value["error"]["fbtrace_id"].is_string());

    let unknown =
        env.http.post(env.url("/v25.0/me/messages?access_token=nope")).json(&body).send().await.expect("post");
    assert_eq!(unknown.status().as_u16(), 400);
    assert!(unknown.headers().contains_key("www-authenticate"));

    env.sandbox.revoke_token();
    let revoked = env.send(body.clone()).await;
    assert_eq!(revoked.code(), (190, Some(460)));
    assert!(env.send(body.clone()).await.code().0 == 190, "stays revoked");
    env.sandbox.restore_token();
    assert!(env.send(body).await.ok());
}

#[tokio::test]
async fn bearer_tokens_form_bodies_and_any_version_work() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let recipient = json!({ "id": psid }).to_string();
    let message = json!({ "text": "form" }).to_string();
    let form = [
        ("recipient", recipient.as_str()),
        ("messaging_type", "RESPONSE"),
        ("message", message.as_str()),
        ("access_token", env.token.as_str()),
    ];
    for path in ["/v19.0/me/messages", "/me/messages", "/v25.0/100000000000001/messages"] {
        let response = env.http.post(env.url(path)).form(&form).send().await.expect("post");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let bearer = env
        .http
        .post(env.url("/v25.0/me/messages"))
        .bearer_auth(&env.token)
        .json(&json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":{"text":"b"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(bearer.status().as_u16(), 200);
}

#[tokio::test]
async fn another_page_in_the_path_is_rejected() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let reply = env
        .graph_post(
            "/v25.0/999/messages",
            json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":{"text":"x"}}),
        )
        .await;
    assert_eq!(reply.code(), (100, Some(33)));
}

#[tokio::test]
async fn unknown_psid_is_2018001_and_blocked_is_551() {
    let env = spawn().await;
    assert_eq!(env.send_text("1234567890123456", "x").await.code(), (100, Some(2018001)));
    let psid = env.active_customer().await;
    env.sandbox.user_blocks(&psid).expect("block");
    assert_eq!(env.send_text(&psid, "x").await.code(), (551, Some(1545041)));
    env.sandbox.user_unblocks(&psid).expect("unblock");
    assert!(env.send_text(&psid, "x").await.ok());
}

#[tokio::test]
async fn sender_actions_are_alone_and_return_only_the_recipient() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let both = env.send(json!({"recipient":{"id":psid},"sender_action":"typing_on","message":{"text":"x"}})).await;
    assert_eq!(both.code(), (100, Some(2018014)));
    let neither = env.send(json!({"recipient":{"id":psid},"messaging_type":"RESPONSE"})).await;
    assert_eq!(neither.code(), (100, None));
    let typing = env.send(json!({"recipient":{"id":psid},"sender_action":"typing_on"})).await;
    assert!(typing.ok());
    assert_eq!(typing.body, json!({ "recipient_id": psid }));
    assert!(env.sandbox.thread(&psid).expect("thread").typing);
    let bad = env.send(json!({"recipient":{"id":psid},"sender_action":"wave"})).await;
    assert_eq!(bad.code().0, 100);
}

#[tokio::test]
async fn message_content_rules_return_100() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let with =
        |message: serde_json::Value| json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","message":message});
    let qr = json!({"content_type":"text","title":"Yes","payload":"Y"});
    let bad = [
        with(json!({})),
        with(json!({"text":"a","attachment":{"type":"image","payload":{"url":"http://x/y.png"}}})),
        with(json!({"text":"x".repeat(2001)})),
        with(json!({"text":"a","quick_replies":vec![qr.clone(); 14]})),
        with(json!({"text":"a","metadata":"m".repeat(1000)})),
        with(json!({"attachment":{"type":"hologram","payload":{"url":"http://x"}}})),
        json!({"recipient":{"id":psid},"messaging_type":"SOMETIMES","message":{"text":"a"}}),
        json!({"recipient":{"id":psid},"message":{"text":"a"}}),
        json!({"recipient":{"id":psid},"messaging_type":"MESSAGE_TAG","message":{"text":"a"}}),
        json!({"recipient":{"id":psid},"messaging_type":"MESSAGE_TAG","tag":"ACCOUNT_UPDATE","message":{"text":"a"}}),
        json!({"recipient":{"id":psid},"messaging_type":"RESPONSE","notification_type":"LOUD","message":{"text":"a"}}),
    ];
    for body in bad {
        let reply = env.send(body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.code().0, 100, "{body} → {:?}", reply.body);
    }
    let good = [
        with(json!({"text":"é".repeat(2000)})),
        with(json!({"text":"a","quick_replies":vec![qr; 13],"metadata":"m".repeat(999)})),
        with(json!({"attachment":{"type":"file","payload":{"url":"https://example.com/a.pdf"}}})),
        with(json!({"attachments":[{"type":"image","payload":{"url":"https://example.com/a.png"}}]})),
        with(json!({"sticker_id":"369239263222822"})),
    ];
    for body in good {
        let reply = env.send(body.clone()).await;
        assert!(reply.ok(), "{body} → {:?}", reply.body);
    }
}

#[tokio::test]
async fn success_emits_an_echo_with_our_app_id_and_metadata() {
    let env = spawn().await;
    let psid = env.active_customer().await;
    let reply = env
        .send(json!({"recipient":{"id":psid},"messaging_type":"RESPONSE",
            "message":{"text":"Grüße 👋","metadata":"ws-msg-1"}}))
        .await;
    let mid = reply.body["message_id"].as_str().expect("mid").to_owned();
    let echo = env.receiver.wait_event(|e| is_echo(e) && e["message"]["mid"] == mid).await;
    assert_eq!(echo["message"]["app_id"], json!(1517776481860111u64));
    assert_eq!(echo["message"]["metadata"], "ws-msg-1");
    assert_eq!(echo["message"]["text"], "Grüße 👋");
    assert_eq!(echo["sender"]["id"], "100000000000001");
    assert_eq!(echo["recipient"]["id"], psid);
    // The raw body has the non-ASCII escaped.
    let raw = env.receiver.accepted().into_iter().find(|r| r.body.contains(&mid)).expect("raw echo");
    assert!(raw.body.contains(r"Gr\u00fc\u00dfe \ud83d\udc4b"), "{}", raw.body);
    assert!(raw.body.is_ascii());
    // And without metadata there is no metadata key.
    let plain = env.send_text(&psid, "plain").await;
    let plain_mid = plain.body["message_id"].as_str().expect("mid").to_owned();
    let echo = env.receiver.wait_event(|e| e["message"]["mid"] == plain_mid).await;
    assert!(echo["message"].get("metadata").is_none());
    env.sandbox.wait_idle(WAIT).await.expect("idle");
}
