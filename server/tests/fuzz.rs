//! The short fuzz run that is part of `cargo test` (stable toolchain, proptest): the visitor and agent frame
//! decoders, the webhook signature check and parser, link-token parsing, and the whole webhook intake (signed
//! bodies POSTed to the real endpoint, then applied to a real database). Inputs are both raw bytes and
//! structure-aware JSON close to what each decoder expects (right keys and tags, wrong types, odd numbers and
//! Unicode, truncations and flipped bytes), so a short run reaches deep into each decoder.
//!
//! `FUZZ_SCALE=N` multiplies every target's case count (e.g. `FUZZ_SCALE=100 cargo test -p server --test fuzz
//! --release -- --nocapture` for a long stable run); coverage-guided runs use cargo-fuzz in `fuzz/` (see
//! `fuzz/README.md`).

#[path = "support/fuzz_targets.rs"]
mod fuzz_targets;

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parley::config::Settings;
use parley::messenger::Messenger;
use parley::startup::Application;
use parley::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use sqlx::Connection;
use tower::ServiceExt;

fn scale() -> u32 {
    std::env::var("FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

/// Runs `target` on `cases` inputs from `inputs`; returns how many ran.
fn run<S: Strategy<Value = Vec<u8>>>(name: &str, cases: u32, inputs: S, target: impl Fn(&[u8])) -> u32 {
    let cases = cases * scale();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&inputs, |bytes| {
            target(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("fuzz {name}: {cases} inputs, no failure");
    cases
}

/// Odd strings: empty, Unicode (multi-byte, combining, RTL, NUL), long, and anything at all.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("1é234".to_string()),
        Just("\u{0}\u{202e}<script>alert(1)</script>".to_string()),
        Just("e\u{301}\u{1F600}".to_string()),
        "[a-zA-Z0-9_-]{1,70}",
        any::<String>(),
        (any::<char>(), 0usize..6000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Any JSON leaf, numbers at their edges included.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(u64::MAX), Just(i64::MAX as u64 + 1), Just(u32::MAX as u64 + 1)]
            .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        odd_string().prop_map(Value::String),
    ]
}

/// Any JSON value, objects keyed from `keys` (so decoders meet their own field names with the wrong shapes).
fn any_json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Usually `good`, sometimes missing (None) or a leaf of any type.
fn field(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![200 => good.prop_map(Some), 6 => Just(None), 1 => leaf().prop_map(Some)].boxed()
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect::<Map<_, _>>())
}

fn tag(values: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![9 => prop::sample::select(values).prop_map(Value::from), 1 => odd_string().prop_map(Value::String)]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![9 => (0i64..4_000_000_000_000).prop_map(Value::from), 1 => leaf()]
}

fn text() -> impl Strategy<Value = Value> {
    odd_string().prop_map(Value::String)
}

/// The bytes of a JSON value, sometimes damaged: truncated, a byte changed, or a byte inserted.
fn damaged(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<u8>> {
    (values, 0u8..16, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(value, damage, at, byte)| {
        let mut bytes = serde_json::to_vec(&value).expect("json");
        let i = at.index(bytes.len().max(1)).min(bytes.len());
        match damage {
            0 => bytes.truncate(i),
            1 if i < bytes.len() => bytes[i] = byte,
            2 => bytes.insert(i, byte),
            _ => {}
        }
        bytes
    })
}

/// Inputs for a decoder: mostly near-valid JSON from `shaped`, some any-JSON, some raw bytes.
fn inputs(shaped: impl Strategy<Value = Value> + 'static, keys: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => damaged(shaped),
        2 => damaged(any_json(keys)),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
    .boxed()
}

const FRAME_KEYS: &[&str] = &[
    "type",
    "protocol",
    "token",
    "last_seq",
    "context",
    "page_url",
    "referrer",
    "timezone",
    "utc_offset_minutes",
    "language",
    "client_id",
    "body",
    "typing",
    "up_to_seq",
    "conversation_id",
    "since_seq",
    "status",
    "events",
    "seq",
    "at",
    "kind",
    "message",
    "id",
    "author",
    "role",
    "name",
    "sent_at",
    "channel",
    "attachments",
    "code",
];

fn event() -> impl Strategy<Value = Value> {
    let message = (field(text()), field(text()), field(tag(&["visitor", "agent", "system"])), field(text())).prop_map(
        |(id, client_id, role, body)| {
            let author = object(vec![("role", role), ("name", Some(json!("Alex")))]);
            object(vec![
                ("id", id),
                ("client_id", client_id),
                ("author", Some(author)),
                ("body", body),
                ("sent_at", Some(json!(1))),
                ("channel", Some(json!("web"))),
            ])
        },
    );
    (
        field(number()),
        field(number()),
        field(tag(&["message", "read", "status", "delivery", "channel"])),
        field(message),
    )
        .prop_map(|(seq, at, kind, message)| {
            object(vec![("seq", seq), ("at", at), ("kind", kind), ("message", message)])
        })
}

fn visitor_frames() -> impl Strategy<Value = Value> {
    let context = (field(text()), field(text()), field(number()), field(text())).prop_map(|(url, tz, offset, lang)| {
        object(vec![("page_url", url), ("timezone", tz), ("utc_offset_minutes", offset), ("language", lang)])
    });
    let tags = &[
        "hello",
        "send",
        "typing",
        "read",
        "ping",
        "messenger_link",
        "unlink_messenger",
        "welcome",
        "event",
        "ack",
        "error",
        "pong",
    ];
    (
        field(tag(tags)),
        (field(number()), field(text()), field(number()), field(context)),
        (field(text()), field(text()), field(leaf()), field(number())),
        (field(prop::collection::vec(event(), 0..3).prop_map(Value::Array)), field(event()), field(text())),
    )
        .prop_map(
            |(kind, (protocol, token, last_seq, context), (client_id, body, typing, up_to), (events, ev, code))| {
                object(vec![
                    ("type", kind),
                    ("protocol", protocol),
                    ("token", token),
                    ("last_seq", last_seq),
                    ("context", context),
                    ("client_id", client_id),
                    ("body", body),
                    ("typing", typing),
                    ("up_to_seq", up_to),
                    ("events", events),
                    ("event", ev),
                    ("code", code),
                    ("seq", Some(json!(3))),
                    ("message_id", Some(json!("m"))),
                    ("message", Some(json!("x"))),
                ])
            },
        )
}

fn agent_frames() -> impl Strategy<Value = Value> {
    let tags = &[
        "open",
        "close",
        "send",
        "typing",
        "read",
        "set_status",
        "ping",
        "inbox",
        "summary",
        "history",
        "event",
        "ack",
        "error",
        "pong",
        "alert",
    ];
    (
        field(tag(tags)),
        (field(text()), field(number()), field(text()), field(text())),
        (field(tag(&["open", "resolved"])), field(leaf()), field(number()), field(event())),
    )
        .prop_map(|(kind, (conversation_id, since, client_id, body), (status, typing, up_to, ev))| {
            object(vec![
                ("type", kind),
                ("conversation_id", conversation_id),
                ("since_seq", since),
                ("client_id", client_id),
                ("body", body),
                ("status", status),
                ("typing", typing),
                ("up_to_seq", up_to),
                ("event", ev),
                ("events", Some(json!([]))),
                ("last_seq", Some(json!(1))),
                ("key", Some(json!("k"))),
            ])
        })
}

const PAGE_ID: &str = "1000000001";
const APP_ID: &str = "2000000002";

const WEBHOOK_KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "messaging",
    "standby",
    "sender",
    "recipient",
    "timestamp",
    "message",
    "mid",
    "text",
    "is_echo",
    "app_id",
    "metadata",
    "attachments",
    "type",
    "payload",
    "url",
    "sticker_id",
    "postback",
    "title",
    "referral",
    "ref",
    "source",
    "delivery",
    "mids",
    "watermark",
    "read",
];

/// A message id: usually fresh (so the message is new), sometimes odd or repeated.
fn mid() -> impl Strategy<Value = Value> {
    prop_oneof![9 => "m_[a-zA-Z0-9]{12}".prop_map(Value::from), 1 => text()]
}

fn psid() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&["3000000003", "3000000004", "1é234", "", "x"][..]).prop_map(Value::from),
        1 => text(),
    ]
}

fn reference() -> impl Strategy<Value = Value> {
    prop_oneof!["ws1_[A-Za-z0-9_-]{0,50}".prop_map(Value::from), text(), Just(Value::from(link_shaped_token())),]
}

/// A well-formed token signed with a key the server does not have.
fn link_shaped_token() -> String {
    parley::messenger::link::mint(b"not the server's key", u32::MAX).0
}

fn messaging() -> impl Strategy<Value = Value> {
    let attachment = (field(tag(&["image", "sticker", "video", "audio", "file", "fallback"])), field(text())).prop_map(
        |(kind, name)| {
            let url =
                format!("http://127.0.0.1:1/{}", name.and_then(|n| n.as_str().map(str::to_string)).unwrap_or_default());
            object(vec![("type", kind), ("payload", Some(json!({ "url": url, "sticker_id": 369239263222822u64 })))])
        },
    );
    let message = (
        field(mid()),
        field(prop_oneof![text(), Just(json!("my code is ABC234")), Just(json!("hi"))]),
        field(any::<bool>().prop_map(Value::Bool)),
        field(prop_oneof![Just(json!(APP_ID)), Just(json!(2000000002u64)), Just(json!(263902037430900u64)), text()]),
        field(text()),
        field(prop::collection::vec(attachment, 0..3).prop_map(Value::Array)),
    )
        .prop_map(|(mid, text, echo, app_id, metadata, attachments)| {
            object(vec![
                ("mid", mid),
                ("text", text),
                ("is_echo", echo),
                ("app_id", app_id),
                ("metadata", metadata),
                ("attachments", attachments),
            ])
        });
    let referral =
        (field(reference()), field(text())).prop_map(|(r, source)| object(vec![("ref", r), ("source", source)]));
    let postback = (field(mid()), field(text()), field(referral.clone()))
        .prop_map(|(mid, payload, referral)| object(vec![("mid", mid), ("payload", payload), ("referral", referral)]));
    let delivery = (field(prop::collection::vec(text(), 0..3).prop_map(Value::Array)), field(number()))
        .prop_map(|(mids, watermark)| object(vec![("mids", mids), ("watermark", watermark)]));
    let read = field(number()).prop_map(|watermark| object(vec![("watermark", watermark)]));
    let party = |id| object(vec![("id", Some(id))]);
    (
        (
            field(psid().prop_map(party)),
            field(prop_oneof![Just(json!(PAGE_ID)), psid()].prop_map(party)),
            field(number()),
        ),
        prop::sample::select(&["message", "postback", "referral", "delivery", "read"][..]),
        (message, postback, referral, delivery, read),
    )
        .prop_map(|((sender, recipient, timestamp), which, (message, postback, referral, delivery, read))| {
            let body = match which {
                "message" => Some(message),
                "postback" => Some(postback),
                "referral" => Some(referral),
                "delivery" => Some(delivery),
                _ => Some(read),
            };
            object(vec![("sender", sender), ("recipient", recipient), ("timestamp", timestamp), (which, body)])
        })
}

fn webhook_payloads() -> impl Strategy<Value = Value> {
    let entry = (
        field(prop_oneof![4 => Just(json!(PAGE_ID)), 1 => text()]),
        field(prop::collection::vec(messaging(), 0..4).prop_map(Value::Array)),
        field(prop::collection::vec(messaging(), 0..2).prop_map(Value::Array)),
    )
        .prop_map(|(id, messaging, standby)| {
            object(vec![("id", id), ("time", Some(json!(1))), ("messaging", messaging), ("standby", standby)])
        });
    (field(tag(&["page", "page", "user"])), field(prop::collection::vec(entry, 0..3).prop_map(Value::Array)))
        .prop_map(|(kind, entry)| object(vec![("object", kind), ("entry", entry)]))
}

fn link_inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // The token's own shape: prefix, base64url of about the right length, odd tails.
        ("(ws1_|ws2_|WS1_|)", prop::collection::vec(any::<u8>(), 20..34), "[A-Za-z0-9_=+/-]{0,3}").prop_map(
            |(prefix, raw, tail)| {
                use base64::Engine;
                format!("{prefix}{}{tail}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)).into_bytes()
            }
        ),
        // A real token from another key, damaged.
        damaged(Just(Value::from(link_shaped_token()))).prop_map(|b| b.into_iter().filter(|c| *c != b'"').collect()),
        odd_string().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..120),
    ]
}

#[test]
fn fuzz_visitor_frames() {
    run("visitor frame", 3000, inputs(visitor_frames(), FRAME_KEYS), fuzz_targets::visitor_frame);
}

#[test]
fn fuzz_agent_frames() {
    run("agent frame", 3000, inputs(agent_frames(), FRAME_KEYS), fuzz_targets::agent_frame);
}

#[test]
fn fuzz_webhook_signature_and_parser() {
    run("webhook body", 3000, inputs(webhook_payloads(), WEBHOOK_KEYS), fuzz_targets::webhook_body);
}

#[test]
fn fuzz_link_tokens() {
    run("link token", 5000, link_inputs(), fuzz_targets::link_token);
}

/// A minted token verifies; the same token with any one character changed, or cut, never does.
#[test]
fn fuzz_tampered_link_tokens_never_verify() {
    let key = fuzz_targets::LINK_KEY;
    let strategy = (any::<prop::sample::Index>(), "[A-Za-z0-9_-]", any::<bool>());
    let mut runner = TestRunner::new(Config { cases: 2000 * scale(), failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(at, replacement, cut)| {
            let (token, minted) = parley::messenger::link::mint(key, 5_000);
            prop_assert_eq!(parley::messenger::link::verify(key, &token, 4_999), Ok(minted));
            let i = at.index(token.len());
            let tampered =
                if cut { token[..i].to_string() } else { format!("{}{replacement}{}", &token[..i], &token[i + 1..]) };
            if tampered != token {
                prop_assert!(parley::messenger::link::verify(key, &tampered, 4_999).is_err(), "{} verified", tampered);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("tampered link tokens: {e}"));
    println!("fuzz tampered link token: {} inputs, no failure", 2000 * scale());
}

/// A server with the Messenger channel on (Graph API on a closed port), built but not running: the test drives
/// its webhook endpoint and its intake itself.
async fn messenger_app(dir: &std::path::Path) -> (Application, Arc<Messenger>) {
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}", dir.join("parley.db").display());
    settings.assets.dir = dir.join("site");
    let m = &mut settings.messenger;
    m.enabled = true;
    m.graph_url = "http://127.0.0.1:1".into();
    m.app_id = APP_ID.into();
    m.page_id = PAGE_ID.into();
    m.page_token = "page token".to_string().into();
    m.app_secret = String::from_utf8(fuzz_targets::APP_SECRET.to_vec()).expect("utf-8").into();
    m.verify_token = "verify".to_string().into();
    m.spool_dir = dir.join("spool");
    m.timeout_secs = 1;
    let store = Store::connect(&settings.database.url, 4).await.expect("store");
    store.create_site("shop", "Shop", &["http://shop.test".to_string()], "Hi").await.expect("site");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = Application::with_store(settings, listener, store).expect("app builds");
    let messenger = app.state().messenger.clone().expect("messenger on");
    (app, messenger)
}

async fn post_webhook(router: &axum::Router, body: &[u8], signature: &str) -> StatusCode {
    let request = Request::post("/webhooks/messenger")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(Body::from(body.to_vec()))
        .expect("request");
    router.clone().oneshot(request).await.expect("answers").status()
}

async fn count(db: &mut sqlx::SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect("count")
}

/// A webhook body, shown as text when a case fails.
#[derive(Clone)]
struct Delivery(Vec<u8>);

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

/// Signed bodies through the real endpoint into the real intake: a bad signature is refused and spools nothing,
/// a good one is answered 200, every delivery is applied (or recorded as not applicable) without a panic or a
/// stuck batch, and the same delivery again stores no second message.
#[test]
fn fuzz_webhook_intake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (app, messenger) = rt.block_on(messenger_app(dir.path()));
    let router = parley::startup::build_router(app.state().clone());
    let db_path = dir.path().join("parley.db");
    let db = rt
        .block_on(sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", db_path.display())).expect("url"),
        ))
        .expect("db");
    // An async mutex: the connection is used across awaits inside each case.
    let db = tokio::sync::Mutex::new(db);
    let cases = 150 * scale();
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    // Mostly well-formed payloads, so most deliveries get past the parser into the intake's logic.
    let bodies = prop_oneof![
        8 => webhook_payloads().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        2 => inputs(webhook_payloads(), WEBHOOK_KEYS),
    ];
    let result = runner.run(&bodies.prop_map(Delivery), |Delivery(body)| {
        rt.block_on(async {
            let mut db = db.lock().await;
            let forged = parley::messenger::signature::sign_sha256(b"not the app secret", &body);
            assert_eq!(post_webhook(&router, &body, &forged).await, StatusCode::FORBIDDEN);
            assert!(messenger.spool.pending().await.expect("spool").is_empty(), "a refused delivery was spooled");
            let signed = parley::messenger::signature::sign_sha256(fuzz_targets::APP_SECRET, &body);
            assert_eq!(post_webhook(&router, &body, &signed).await, StatusCode::OK);
            parley::messenger::intake::drain(&messenger).await.expect("the intake applies the delivery");
            let unprocessed =
                count(&mut db, "select count(*) from webhook_deliveries where processed_at is null").await;
            assert_eq!(unprocessed, 0, "a delivery was left unapplied");
            let messages = count(&mut db, "select count(*) from messages").await;
            assert_eq!(post_webhook(&router, &body, &signed).await, StatusCode::OK);
            parley::messenger::intake::drain(&messenger).await.expect("the intake applies the redelivery");
            assert_eq!(count(&mut db, "select count(*) from messages").await, messages, "a redelivery stored again");
        });
        Ok(())
    });
    result.unwrap_or_else(|e| panic!("webhook intake: {e}"));
    let mut db = db.into_inner();
    let integrity: String =
        rt.block_on(sqlx::query_scalar("pragma integrity_check").fetch_one(&mut db)).expect("pragma");
    assert_eq!(integrity, "ok");
    let applied = rt.block_on(count(&mut db, "select count(*) from webhook_deliveries"));
    let messages = rt.block_on(count(&mut db, "select count(*) from messages"));
    let contacts = rt.block_on(count(&mut db, "select count(*) from contacts"));
    let refused = rt.block_on(count(&mut db, "select count(*) from webhook_deliveries where error is not null"));
    let errors: Vec<String> = rt
        .block_on(
            sqlx::query_scalar(
                "select distinct substr(error, 1, 90) from webhook_deliveries where error is not null limit 8",
            )
            .fetch_all(&mut db),
        )
        .expect("errors");
    println!("not applicable, for example: {errors:#?}");
    println!(
        "fuzz webhook intake: {cases} signed bodies (+ as many forged and redelivered): {applied} deliveries \
         applied ({refused} recorded as not applicable), {messages} messages and {contacts} contacts created"
    );
}
