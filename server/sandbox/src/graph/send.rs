//! The Send API (`POST /{page|me}/messages`) with the validation of §13.
//!
//! Order of checks: token → page → request shape → recipient exists → injected fault →
//! blocked → tag/window rules (virtual clock) → Conversation Routing → rate limit.
//! On success the message is recorded, the echo emitted and receipts scheduled.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::config::DEPRECATED_TAGS_CUTOFF_MS;
use crate::customer::FollowUp;
use crate::emulator::Emulator;
use crate::errors::GraphError;
use crate::faults::SendFault;
use crate::graph::{GraphRequest, authenticate, id_string, is_page};
use crate::state::{Author, ThreadMessage, World};

const DAY_MS: i64 = 24 * 3600 * 1000;
const MESSAGING_TYPES: &[&str] = &["RESPONSE", "UPDATE", "MESSAGE_TAG", "UTILITY"];
const DEPRECATED_TAGS: &[&str] = &["CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"];
const SENDER_ACTIONS: &[&str] = &["typing_on", "typing_off", "mark_seen", "react", "unreact"];
const ATTACHMENT_TYPES: &[&str] = &["image", "audio", "video", "file", "template"];
const NOTIFICATION_TYPES: &[&str] = &["REGULAR", "SILENT_PUSH", "NO_PUSH"];

/// A validated Send API request.
#[derive(Debug, Clone)]
pub struct SendRequest {
    psid: String,
    action: Action,
    messaging_type: Option<String>,
    tag: Option<String>,
    notification_type: Option<String>,
    persona_id: Option<String>,
    reply_to: Option<String>,
    thread_control: Option<(String, Option<String>)>,
}

#[derive(Debug, Clone)]
enum Action {
    Sender { action: String, payload: Option<Value> },
    Message(OutMessage),
}

#[derive(Debug, Clone, Default)]
struct OutMessage {
    text: Option<String>,
    attachments: Vec<Value>,
    quick_replies: Vec<Value>,
    metadata: Option<String>,
    sticker_id: Option<String>,
}

/// Handles one Send API call.
pub async fn send(emulator: &Emulator, request: &GraphRequest, node: &str) -> Result<Value, GraphError> {
    let prepared = emulator.with(|w| prepare(w, request, node))?;
    let (send, fault) = prepared;
    match fault {
        Some(SendFault::Hang { ms }) => {
            // Deliver from a separate task so a client that gives up does not cancel it.
            let emulator = emulator.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let outcome = emulator.with(|w| process(w, &send, false));
                outcome.map(|(value, follow_up)| {
                    emulator.schedule(follow_up);
                    value
                })
            });
            task.await.unwrap_or_else(|_| Err(GraphError::unknown_error()))
        }
        Some(SendFault::DeliveredButError) => {
            let (_, follow_up) = emulator.with(|w| process(w, &send, true))?;
            emulator.schedule(follow_up);
            Err(GraphError::invalid_json_reply())
        }
        Some(fault) => {
            let error = emulator.with(|w| {
                apply_stateful_fault(w, &fault, &send.psid);
                fault_error(&fault, &w.cfg.page_id)
            });
            match error {
                Some(error) => Err(error),
                // Blocked / taken over: the normal checks now produce the error.
                None => finish(emulator, &send),
            }
        }
        None => finish(emulator, &send),
    }
}

fn finish(emulator: &Emulator, send: &SendRequest) -> Result<Value, GraphError> {
    let (value, follow_up) = emulator.with(|w| process(w, send, false))?;
    emulator.schedule(follow_up);
    Ok(value)
}

/// Faults that change the world before the normal checks run.
fn apply_stateful_fault(world: &mut World, fault: &SendFault, psid: &str) {
    match fault {
        SendFault::TokenRevoked => {
            world.app.token_revoked = true;
            world.touch();
        }
        SendFault::UserBlocks => {
            if let Some(customer) = world.customer_mut(psid) {
                customer.user.blocked = true;
            }
            world.bump_thread(psid);
        }
        SendFault::InboxTakesThread => world.inbox_takes_thread(psid),
        _ => {}
    }
}

/// The error a plain (non-stateful) fault returns.
fn fault_error(fault: &SendFault, page_id: &str) -> Option<GraphError> {
    Some(match fault {
        SendFault::TemporaryFailure => GraphError::temporary_send_failure(),
        SendFault::ServiceUnavailable => GraphError::service_unavailable(),
        SendFault::UnknownError => GraphError::unknown_error(),
        SendFault::RateLimited { code } => GraphError::rate_limited(*code, page_id),
        SendFault::AttachmentUnreachable => GraphError::attachment_unreachable(),
        SendFault::ServerError { status } => GraphError::server_error(*status),
        SendFault::Custom { code, subcode, message, status } => GraphError::custom(
            status
                .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
            *code,
            *subcode,
            message.clone().unwrap_or_else(|| format!("(#{code}) Injected error")),
        ),
        SendFault::TokenRevoked => GraphError::token_revoked(),
        SendFault::UserBlocks | SendFault::InboxTakesThread | SendFault::DeliveredButError | SendFault::Hang { .. } => {
            return None;
        }
    })
}

/// Authenticates, validates the shape, checks the recipient and draws the fault.
fn prepare(
    world: &mut World,
    request: &GraphRequest,
    node: &str,
) -> Result<(SendRequest, Option<SendFault>), GraphError> {
    authenticate(world, request)?;
    if !is_page(world, node) {
        return Err(GraphError::unsupported("post", node));
    }
    let now = world.now_ms();
    let send = parse(&request.params, world.settings.require_messaging_type, now)?;
    if world.customer(&send.psid).is_none() {
        return Err(GraphError::no_matching_user());
    }
    let World { faults, rng, .. } = world;
    let fault = faults.take_send(rng);
    if fault.is_some() {
        world.touch();
    }
    Ok((send, fault))
}

/// Validates the request body (pure: no state but the clock reading).
pub fn parse(
    params: &Map<String, Value>,
    require_messaging_type: bool,
    now_ms: i64,
) -> Result<SendRequest, GraphError> {
    let recipient = params.get("recipient").ok_or_else(|| GraphError::param("param recipient must be non-empty."))?;
    let psid = match recipient {
        Value::Object(recipient) => match recipient.get("id").and_then(id_string) {
            Some(id) => id,
            None if recipient.contains_key("user_ref")
                || recipient.contains_key("notification_messages_token")
                || recipient.contains_key("comment_id")
                || recipient.contains_key("post_id") =>
            {
                return Err(GraphError::param(
                    "this recipient type is not supported by the emulator; use recipient.id",
                ));
            }
            None => return Err(GraphError::param("param recipient[id] must be non-empty.")),
        },
        _ => return Err(GraphError::param("param recipient must be a JSON object")),
    };
    let sender_action = params.get("sender_action");
    let message = params.get("message");
    let action = match (sender_action, message) {
        (Some(_), Some(_)) => return Err(GraphError::sender_action_with_message()),
        (None, None) => return Err(GraphError::param("Must send either message or state")),
        (Some(action), None) => parse_sender_action(action, params.get("payload"))?,
        (None, Some(message)) => Action::Message(parse_message(message)?),
    };
    let messaging_type = match params.get("messaging_type") {
        None => None,
        Some(Value::String(t)) if MESSAGING_TYPES.contains(&t.as_str()) => Some(t.clone()),
        Some(_) => {
            return Err(GraphError::param(
                "param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG, UTILITY}",
            ));
        }
    };
    let is_message = matches!(action, Action::Message(_));
    let messaging_type = match messaging_type {
        None if is_message && require_messaging_type => {
            return Err(GraphError::param(
                "param messaging_type is required and must be one of {RESPONSE, UPDATE, MESSAGE_TAG, UTILITY}",
            ));
        }
        None if is_message => Some("RESPONSE".to_owned()),
        other => other,
    };
    let tag = match params.get("tag") {
        None => None,
        Some(Value::String(tag)) => Some(tag.clone()),
        Some(_) => return Err(GraphError::param("param tag must be a string")),
    };
    if messaging_type.as_deref() == Some("MESSAGE_TAG") {
        let tag = tag
            .as_deref()
            .ok_or_else(|| GraphError::param("param tag is required when messaging_type is MESSAGE_TAG"))?;
        if DEPRECATED_TAGS.contains(&tag) {
            if now_ms >= DEPRECATED_TAGS_CUTOFF_MS {
                return Err(GraphError::param(format!(
                    "The {tag} tag is no longer supported. Use Utility Messages or the Marketing Messages API."
                )));
            }
        } else if tag != "HUMAN_AGENT" {
            return Err(GraphError::param(format!("Tag {tag} is invalid")));
        }
    }
    let notification_type = match params.get("notification_type") {
        None => None,
        Some(Value::String(t)) if NOTIFICATION_TYPES.contains(&t.as_str()) => Some(t.clone()),
        Some(_) => {
            return Err(GraphError::param("param notification_type must be one of {REGULAR, SILENT_PUSH, NO_PUSH}"));
        }
    };
    let reply_to = match params.get("reply_to") {
        None => None,
        Some(value) => Some(
            value
                .get("mid")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| GraphError::param("param reply_to[mid] must be non-empty."))?,
        ),
    };
    let thread_control = match params.get("thread_control") {
        None => None,
        Some(value) => {
            let kind = value
                .get("control_type")
                .and_then(Value::as_str)
                .filter(|k| *k == "pass" || *k == "release")
                .ok_or_else(|| GraphError::param("param thread_control[control_type] must be pass or release"))?;
            Some((kind.to_owned(), value.get("app_id").and_then(id_string)))
        }
    };
    Ok(SendRequest {
        psid,
        action,
        messaging_type,
        tag,
        notification_type,
        persona_id: params.get("persona_id").and_then(id_string),
        reply_to,
        thread_control,
    })
}

fn parse_sender_action(action: &Value, payload: Option<&Value>) -> Result<Action, GraphError> {
    let action = action
        .as_str()
        .map(str::to_ascii_lowercase)
        .filter(|a| SENDER_ACTIONS.contains(&a.as_str()))
        .ok_or_else(|| {
            GraphError::param("param sender_action must be one of {TYPING_ON, TYPING_OFF, MARK_SEEN, REACT, UNREACT}")
        })?;
    if action == "react" || action == "unreact" {
        let payload = payload.ok_or_else(|| GraphError::param("param payload is required for react/unreact"))?;
        if payload.get("message_id").and_then(Value::as_str).is_none() {
            return Err(GraphError::param("param payload[message_id] must be non-empty."));
        }
        if action == "react" && payload.get("reaction").and_then(Value::as_str).is_none() {
            return Err(GraphError::param("param payload[reaction] must be non-empty."));
        }
    }
    Ok(Action::Sender { action, payload: payload.cloned() })
}

fn parse_message(message: &Value) -> Result<OutMessage, GraphError> {
    let message = message.as_object().ok_or_else(|| GraphError::param("param message must be a JSON object"))?;
    let kinds =
        ["text", "attachment", "attachments", "sticker_id"].iter().filter(|k| message.contains_key(**k)).count();
    if kinds != 1 {
        return Err(GraphError::param(
            "param message must have exactly one of text, attachment, attachments or sticker_id",
        ));
    }
    let mut out = OutMessage::default();
    if let Some(text) = message.get("text") {
        let text = text
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GraphError::param("param message[text] must be a non-empty UTF-8 string"))?;
        if text.chars().count() > 2000 {
            return Err(GraphError::param(
                "param message[text] must be UTF-8 encoded and have 2000 characters or fewer",
            ));
        }
        out.text = Some(text.to_owned());
    }
    if let Some(attachment) = message.get("attachment") {
        out.attachments.push(parse_attachment(attachment)?);
    }
    if let Some(attachments) = message.get("attachments") {
        let items = attachments
            .as_array()
            .filter(|a| !a.is_empty() && a.len() <= 30)
            .ok_or_else(|| GraphError::param("param message[attachments] must hold 1 to 30 images"))?;
        for item in items {
            if item.get("type").and_then(Value::as_str) != Some("image") {
                return Err(GraphError::param("param message[attachments][type] must be image"));
            }
            out.attachments.push(parse_attachment(item)?);
        }
    }
    if let Some(sticker) = message.get("sticker_id") {
        out.sticker_id =
            Some(id_string(sticker).ok_or_else(|| GraphError::param("param message[sticker_id] must be an id"))?);
    }
    if let Some(quick_replies) = message.get("quick_replies") {
        let items = quick_replies
            .as_array()
            .ok_or_else(|| GraphError::param("param message[quick_replies] must be an array"))?;
        if items.len() > 13 {
            return Err(GraphError::param("param message[quick_replies] must have at most 13 items"));
        }
        for item in items {
            validate_quick_reply(item)?;
        }
        out.quick_replies = items.clone();
    }
    if let Some(metadata) = message.get("metadata") {
        let metadata =
            metadata.as_str().ok_or_else(|| GraphError::param("param message[metadata] must be a string"))?;
        if metadata.chars().count() >= 1000 {
            return Err(GraphError::param("param message[metadata] must be less than 1000 characters"));
        }
        out.metadata = Some(metadata.to_owned());
    }
    Ok(out)
}

fn parse_attachment(attachment: &Value) -> Result<Value, GraphError> {
    let kind =
        attachment.get("type").and_then(Value::as_str).filter(|t| ATTACHMENT_TYPES.contains(t)).ok_or_else(|| {
            GraphError::param("param message[attachment][type] must be one of {image, audio, video, file, template}")
        })?;
    let payload = attachment
        .get("payload")
        .and_then(Value::as_object)
        .ok_or_else(|| GraphError::param("param message[attachment][payload] must be an object"))?;
    if kind == "template" {
        if payload.get("template_type").and_then(Value::as_str).is_none() {
            return Err(GraphError::param("param message[attachment][payload][template_type] is required"));
        }
    } else if let Some(url) = payload.get("url") {
        let url = url.as_str().unwrap_or("");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(GraphError::attachment_unreachable());
        }
    } else if payload.get("attachment_id").and_then(id_string).is_none() {
        return Err(GraphError::param("param message[attachment][payload] needs url or attachment_id"));
    }
    Ok(json!({ "type": kind, "payload": payload }))
}

fn validate_quick_reply(item: &Value) -> Result<(), GraphError> {
    let content_type = item.get("content_type").and_then(Value::as_str);
    match content_type {
        Some("text") => {
            let title = item.get("title").and_then(Value::as_str).unwrap_or("");
            let has_image = item.get("image_url").is_some();
            if title.is_empty() && !has_image {
                return Err(GraphError::param("param quick_replies[title] must be non-empty"));
            }
            if title.chars().count() > 20 {
                return Err(GraphError::param("param quick_replies[title] has a 20 character limit"));
            }
            let payload = item
                .get("payload")
                .and_then(id_string)
                .ok_or_else(|| GraphError::param("param quick_replies[payload] must be non-empty"))?;
            if payload.chars().count() > 1000 {
                return Err(GraphError::param("param quick_replies[payload] has a 1000 character limit"));
            }
            Ok(())
        }
        Some("user_phone_number" | "user_email") => Ok(()),
        _ => Err(GraphError::param(
            "param quick_replies[content_type] must be one of {text, user_phone_number, user_email}",
        )),
    }
}

/// State checks and, on success, the side effects.
fn process(
    world: &mut World,
    send: &SendRequest,
    error_returned: bool,
) -> Result<(Value, Option<FollowUp>), GraphError> {
    let now = world.now_ms();
    let app_id = world.cfg.app_id.clone();
    let settings = world.settings.clone();
    let customer = world.customer_mut(&send.psid).ok_or_else(GraphError::no_matching_user)?;
    if customer.user.blocked {
        return Err(GraphError::user_unavailable());
    }
    let thread = &mut customer.thread;
    check_window(send, thread.last_user_action_ms, thread.last_user_message_ms, now, &settings)?;
    if settings.routing
        && let Some(owner) = &thread.owner_app_id
        && *owner != app_id
    {
        return Err(GraphError::thread_owned_by_other_app());
    }
    if let Some(limit) = settings.thread_rate_limit_per_sec {
        let cutoff = Instant::now() - Duration::from_secs(1);
        while thread.send_times.front().is_some_and(|t| *t < cutoff) {
            thread.send_times.pop_front();
        }
        if thread.send_times.len() >= limit as usize {
            let page_id = world.cfg.page_id.clone();
            return Err(GraphError::rate_limited(613, &page_id));
        }
        thread.send_times.push_back(Instant::now());
    }
    if let Some(reply_to) = &send.reply_to
        && !thread.messages.iter().any(|m| &m.mid == reply_to)
    {
        return Err(GraphError::param("param reply_to[mid] is not a message in this thread"));
    }
    let message = match &send.action {
        Action::Sender { action, payload } => {
            match action.as_str() {
                "typing_on" => thread.typing = true,
                "typing_off" => thread.typing = false,
                "mark_seen" => thread.page_seen_count += 1,
                "react" | "unreact" => {
                    let target =
                        payload.as_ref().and_then(|p| p.get("message_id")).and_then(Value::as_str).unwrap_or("");
                    let message = thread.messages.iter_mut().find(|m| m.mid == target).ok_or_else(|| {
                        GraphError::param("param payload[message_id] is not a message in this thread")
                    })?;
                    message.reaction = (action == "react").then(|| {
                        payload
                            .as_ref()
                            .and_then(|p| p.get("reaction"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    });
                }
                _ => {}
            }
            world.bump_thread(&send.psid);
            return Ok((json!({ "recipient_id": send.psid }), None));
        }
        Action::Message(message) => message.clone(),
    };
    let mid = world.mint_mid();
    let mut record = ThreadMessage::new(mid.clone(), Author::Page { app_id: app_id.clone() }, now, "message");
    record.text = message.text;
    record.attachments = message.attachments;
    record.quick_replies = message.quick_replies;
    record.metadata = message.metadata;
    record.sticker_id = message.sticker_id.clone();
    if let Some(sticker_id) = message.sticker_id {
        let url = world.add_media("image");
        record.attachments = vec![json!({ "type": "image", "payload": { "url": url, "sticker_id": sticker_id } })];
    }
    record.messaging_type = send.messaging_type.clone();
    record.tag = send.tag.clone();
    record.notification_type = send.notification_type.clone();
    record.persona_id = send.persona_id.clone();
    record.reply_to = send.reply_to.clone();
    record.error_returned = error_returned;
    let follow_up = world.record_page_message(&send.psid, record);
    if let Some((kind, target)) = &send.thread_control {
        let new_owner = if kind == "pass" { target.clone() } else { None };
        if let Some(customer) = world.customer_mut(&send.psid) {
            customer.thread.owner_app_id = new_owner.filter(|o| *o != app_id);
        }
        world.bump_thread(&send.psid);
    }
    Ok((json!({ "recipient_id": send.psid, "message_id": mid }), follow_up))
}

/// The 24 h / 7 d rules on the virtual clock.
fn check_window(
    send: &SendRequest,
    last_action: Option<i64>,
    last_message: Option<i64>,
    now: i64,
    settings: &crate::state::Settings,
) -> Result<(), GraphError> {
    let tag = send.tag.as_deref();
    let tagged = send.messaging_type.as_deref() == Some("MESSAGE_TAG");
    if tagged && tag == Some("HUMAN_AGENT") && !settings.human_agent_feature {
        return Err(GraphError::permission("The HUMAN_AGENT tag requires the approved Human Agent feature"));
    }
    if send.messaging_type.as_deref() == Some("UTILITY") && !settings.utility_messaging {
        return Err(GraphError::permission("Application does not have the page_utility_messaging permission"));
    }
    let Some(last_action) = last_action else {
        return Err(GraphError::cannot_receive());
    };
    if now - last_action <= DAY_MS {
        return Ok(());
    }
    let allowed = match (send.messaging_type.as_deref(), tag) {
        (Some("MESSAGE_TAG"), Some("HUMAN_AGENT")) => last_message.is_some_and(|m| now - m <= 7 * DAY_MS),
        // Only reachable before the cutoff: legacy tags ignored the window.
        (Some("MESSAGE_TAG"), Some(_)) => true,
        (Some("UTILITY"), _) => true,
        _ => false,
    };
    if allowed { Ok(()) } else { Err(GraphError::outside_window()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn parse_err(value: Value) -> GraphError {
        match parse(&params(value), true, DEPRECATED_TAGS_CUTOFF_MS + 1) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_plain_text_send_parses() {
        let send = parse(
            &params(json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{"text":"hi"}})),
            true,
            0,
        )
        .expect("valid");
        assert_eq!(send.psid, "1");
    }

    #[test]
    fn shape_rules_return_100() {
        let cases = [
            json!({"messaging_type":"RESPONSE","message":{"text":"hi"}}),
            json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE"}),
            json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{}}),
            json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{"text":"a","sticker_id":"1"}}),
            json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{"text":"x".repeat(2001)}}),
            json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":{"text":"a","metadata":"m".repeat(1000)}}),
            json!({"recipient":{"id":"1"},"messaging_type":"NOPE","message":{"text":"a"}}),
            json!({"recipient":{"id":"1"},"message":{"text":"a"}}),
            json!({"recipient":{"id":"1"},"messaging_type":"MESSAGE_TAG","message":{"text":"a"}}),
            json!({"recipient":{"id":"1"},"messaging_type":"MESSAGE_TAG","tag":"ACCOUNT_UPDATE","message":{"text":"a"}}),
            json!({"recipient":{"id":"1"},"sender_action":"dance"}),
        ];
        for case in cases {
            let error = parse_err(case.clone());
            assert_eq!(error.code, 100, "{case}");
        }
        let error = parse_err(json!({"recipient":{"id":"1"},"sender_action":"typing_on","message":{"text":"a"}}));
        assert_eq!((error.code, error.subcode), (100, Some(2018014)));
    }

    #[test]
    fn limits_are_inclusive_where_meta_says_so() {
        let ok = |message: Value| {
            parse(&params(json!({"recipient":{"id":"1"},"messaging_type":"RESPONSE","message":message})), true, 0)
                .is_ok()
        };
        assert!(ok(json!({"text": "é".repeat(2000)})));
        assert!(ok(json!({"text": "a", "metadata": "m".repeat(999)})));
        let qr = json!({"content_type":"text","title":"t","payload":"p"});
        assert!(ok(json!({"text": "a", "quick_replies": vec![qr.clone(); 13]})));
        assert!(!ok(json!({"text": "a", "quick_replies": vec![qr; 14]})));
    }

    #[test]
    fn deprecated_tags_work_before_the_cutoff() {
        let body = params(
            json!({"recipient":{"id":"1"},"messaging_type":"MESSAGE_TAG","tag":"POST_PURCHASE_UPDATE","message":{"text":"a"}}),
        );
        assert!(parse(&body, true, DEPRECATED_TAGS_CUTOFF_MS - 1).is_ok());
        assert!(parse(&body, true, DEPRECATED_TAGS_CUTOFF_MS).is_err());
    }

    #[test]
    fn lenient_mode_defaults_messaging_type() {
        let send = parse(&params(json!({"recipient":{"id":"1"},"message":{"text":"a"}})), false, 0).expect("lenient");
        assert_eq!(send.messaging_type.as_deref(), Some("RESPONSE"));
    }
}
