//! Webhooks to the app: Meta's byte format and signatures, the verification GET, and
//! (in `webhook/sender.rs`) delivery with retries, alerts and unsubscription.
//!
//! The body is compact JSON with every non-ASCII character escaped as lowercase `\uXXXX`
//! (surrogate pairs above U+FFFF) and `/` escaped as `\/`. Both signatures are computed
//! over exactly the bytes that are sent.

use std::io;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{Formatter, Serializer};
use sha1::Sha1;
use sha2::Sha256;

use crate::emulator::Emulator;
use crate::state::Verification;

pub mod sender;

/// Serializes like Meta: compact, non-ASCII as `\uXXXX` (lowercase hex), `/` as `\/`.
pub fn to_meta_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut serializer = Serializer::with_formatter(&mut out, MetaFormatter);
    // Writing a `Value` into a Vec cannot fail.
    if value.serialize(&mut serializer).is_err() {
        return String::new();
    }
    // Only ASCII is ever written.
    String::from_utf8(out).unwrap_or_default()
}

struct MetaFormatter;

impl Formatter for MetaFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c == '/' {
                writer.write_all(b"\\/")?;
            } else if c.is_ascii() {
                let mut buf = [0u8; 1];
                writer.write_all(c.encode_utf8(&mut buf).as_bytes())?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>` for `X-Hub-Signature-256`.
pub fn signature_256(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC can take any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `sha1=<hex HMAC-SHA1(secret, body)>` for the legacy `X-Hub-Signature`.
pub fn signature_sha1(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC can take any key length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `messaging[]` and `standby[]` events of a payload, in order.
pub fn events_of(payload: &Value) -> Vec<Value> {
    payload["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|entry| {
            ["messaging", "standby"].into_iter().flat_map(move |key| entry[key].as_array().cloned().unwrap_or_default())
        })
        .collect()
}

/// Sends the verification GET to the current callback and records the outcome: verified
/// when the answer is 200 with a body exactly equal to the challenge.
pub async fn verify(emulator: &Emulator) -> Verification {
    let (url, verify_token, challenge, timeout) = emulator.with(|w| {
        (
            w.app.callback_url.clone(),
            w.cfg.verify_token.clone(),
            w.rng.random_range(1_000_000_000u64..10_000_000_000u64).to_string(),
            w.cfg.webhook_timeout,
        )
    });
    let Some(url) = url else {
        return Verification {
            url: String::new(),
            challenge,
            status: None,
            body: Some("no callback URL".into()),
            verified: false,
        };
    };
    let response = emulator
        .http()
        .get(&url)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.challenge", challenge.as_str()),
            ("hub.verify_token", verify_token.as_str()),
        ])
        .timeout(timeout)
        .send()
        .await;
    let (status, body) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            (Some(status), response.text().await.ok())
        }
        Err(error) => (None, Some(error.to_string())),
    };
    let verified = status == Some(200) && body.as_deref() == Some(challenge.as_str());
    let record = Verification { url: url.clone(), challenge, status, body, verified };
    emulator.with(|w| {
        if w.app.callback_url.as_deref() == Some(url.as_str()) {
            w.app.verified = verified;
        }
        w.verifications.push(record.clone());
        w.touch();
    });
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Vectors computed independently with Python:
    //   s = json.dumps(v, separators=(',',':'), ensure_ascii=True).replace('/', '\\/')
    //   hmac.new(secret, s.encode(), hashlib.sha256 / hashlib.sha1).hexdigest()
    const SECRET: &str = "sandbox-app-secret-0123456789abcdef";
    const ESCAPED: &str = r#"{"text":"\u00e4\u00f6\u00e5 \/ \ud83d\ude00 \"q\"\n\u001f https:\/\/youtu.be\/x"}"#;

    #[test]
    fn escapes_non_ascii_astral_and_slash_like_meta() {
        let value = json!({ "text": "äöå / 😀 \"q\"\n\u{1f} https://youtu.be/x" });
        assert_eq!(to_meta_json(&value), ESCAPED);
    }

    #[test]
    fn the_docs_example_escapes_to_lowercase_hex() {
        assert_eq!(to_meta_json(&json!({ "a": "äöå" })), r#"{"a":"\u00e4\u00f6\u00e5"}"#);
        assert_eq!(to_meta_json(&json!({ "e": "É" })), r#"{"e":"\u00c9"}"#);
    }

    #[test]
    fn escaped_json_parses_back_to_the_same_value() {
        let value = json!({ "t": "héllo 👋🏽 / <b>", "n": [1, 2.5, null, true] });
        let parsed: Value = serde_json::from_str(&to_meta_json(&value)).expect("valid JSON");
        assert_eq!(parsed, value);
    }

    #[test]
    fn signatures_match_independently_computed_vectors() {
        assert_eq!(
            signature_256(SECRET, ESCAPED.as_bytes()),
            "sha256=149fb12ae755c85a770db4ca83ce040aaa2c1039dca8a9551705d9e7c7370e10"
        );
        assert_eq!(signature_sha1(SECRET, ESCAPED.as_bytes()), "sha1=675944c8c8d31fcd04c73c155934cb47f553037a");
        let docs = r#"{"a":"\u00e4\u00f6\u00e5"}"#.as_bytes();
        assert_eq!(
            signature_256("secret", docs),
            "sha256=4c95ebf5a6aeada924fcc3db7249b6395add1912d034e50fea97235093e4a26f"
        );
        assert_eq!(signature_sha1("secret", docs), "sha1=996eeea7f2e5c557c42edc9cc3bab54a3a5aab13");
    }

    #[test]
    fn events_of_reads_messaging_and_standby() {
        let payload = json!({"object":"page","entry":[
            {"id":"1","time":1,"messaging":[{"a":1},{"a":2}]},
            {"id":"1","time":1,"standby":[{"a":3}]}
        ]});
        assert_eq!(events_of(&payload).len(), 3);
    }
}
