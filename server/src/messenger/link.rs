//! "Continue on Messenger" link tokens: signed, single-use and short-lived.
//!
//! A token is `ws1_` + base64url(nonce[12] ‖ expiry[4, epoch seconds, big-endian] ‖ HMAC-SHA256(key, "ws1" ‖ nonce ‖
//! expiry)[..12]) — 42 characters of `[A-Za-z0-9_-]`, well within m.me's `ref` rules. The MAC lets the webhook
//! drop forged or expired refs without touching the database; single use is enforced by the store, which binds
//! the nonce atomically the first time it is redeemed. The key is derived from the app secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "ws1_";
const NONCE: usize = 12;
const TAG: usize = 12;

/// A verified token's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkToken {
    /// Hex of the nonce: the key of the token's row in the store.
    pub nonce: String,
    /// Expiry, epoch seconds.
    pub expires_at: u32,
}

/// Why a ref was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("not a Parley link token")]
    Malformed,
    #[error("forged link token")]
    Forged,
    #[error("expired link token")]
    Expired,
}

fn mac(key: &[u8], nonce: &[u8], expiry: &[u8]) -> [u8; TAG] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"ws1");
    mac.update(nonce);
    mac.update(expiry);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&full[..TAG]);
    tag
}

/// Mints a token valid until `expires_at` (epoch seconds).
pub fn mint(key: &[u8], expires_at: u32) -> (String, LinkToken) {
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let expiry = expires_at.to_be_bytes();
    let mut raw = Vec::with_capacity(NONCE + 4 + TAG);
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&expiry);
    raw.extend_from_slice(&mac(key, &nonce, &expiry));
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    (token, LinkToken { nonce: hex::encode(nonce), expires_at })
}

/// Checks a token's form, signature and expiry at `now` (epoch seconds).
pub fn verify(key: &[u8], token: &str, now: u32) -> Result<LinkToken, LinkError> {
    let body = token.strip_prefix(PREFIX).ok_or(LinkError::Malformed)?;
    if body.len() > 64 {
        return Err(LinkError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| LinkError::Malformed)?;
    if raw.len() != NONCE + 4 + TAG {
        return Err(LinkError::Malformed);
    }
    let (nonce, rest) = raw.split_at(NONCE);
    let (expiry, tag) = rest.split_at(4);
    let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    check.update(b"ws1");
    check.update(nonce);
    check.update(expiry);
    check.verify_truncated_left(tag).map_err(|_| LinkError::Forged)?;
    let expires_at = u32::from_be_bytes([expiry[0], expiry[1], expiry[2], expiry[3]]);
    if now >= expires_at {
        return Err(LinkError::Expired);
    }
    Ok(LinkToken { nonce: hex::encode(nonce), expires_at })
}

/// A short code for the fallback path ("send this code in Messenger"): 6 characters from an alphabet without
/// look-alikes (no 0/O, 1/I/L).
pub fn short_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// Words of a message text that could be short codes (whole words, any case), for lookup in the store.
pub fn short_code_candidates(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 6)
        .map(str::to_ascii_uppercase)
        .filter(|w| w.bytes().all(|b| b"23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(&b)))
        .take(5)
        .collect()
}

pub use crate::sentences::{CONSENT_NO, CONSENT_YES};
const CONSENT_PREFIX: &str = "ws1c_";

/// The quick-reply payload answering the offer of link `nonce` (hex).
pub fn consent_payload(nonce: &str, yes: bool) -> String {
    format!("{CONSENT_PREFIX}{}_{nonce}", if yes { "yes" } else { "no" })
}

/// Reads a consent quick-reply payload: `(nonce, yes)`. Anything else (other apps' payloads, junk) is `None`.
pub fn parse_consent(payload: &str) -> Option<(String, bool)> {
    let rest = payload.strip_prefix(CONSENT_PREFIX)?;
    let (answer, nonce) = rest.split_once('_')?;
    let yes = match answer {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    (nonce.len() == NONCE * 2 && nonce.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| (nonce.to_string(), yes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_payloads_round_trip_and_junk_is_ignored() {
        let (_, minted) = mint(b"key", 2_000);
        assert_eq!(parse_consent(&consent_payload(&minted.nonce, true)), Some((minted.nonce.clone(), true)));
        assert_eq!(parse_consent(&consent_payload(&minted.nonce, false)), Some((minted.nonce.clone(), false)));
        assert!(consent_payload(&minted.nonce, true).len() <= 1000);
        for junk in ["", "ws1c_", "ws1c_yes_", "ws1c_maybe_00", "ws1c_yes_zz", "GET_STARTED", "ws1c_yes_é"] {
            assert_eq!(parse_consent(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_minted_token_verifies_and_fits_m_me_rules() {
        let (token, minted) = mint(b"key", 2_000);
        assert!(token.len() <= 64, "{token}");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(verify(b"key", &token, 1_999), Ok(minted));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let (token, _) = mint(b"key", 2_000);
        assert_eq!(verify(b"key", &token, 2_000), Err(LinkError::Expired));
        assert_eq!(verify(b"other key", &token, 1_000), Err(LinkError::Forged));
        // Change one character inside the MAC (not the last one: its low bits are padding and must stay zero).
        let mut tampered = token.clone().into_bytes();
        let inside_mac = tampered.len() - 5;
        tampered[inside_mac] = if tampered[inside_mac] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(b"key", &String::from_utf8(tampered).expect("ascii"), 1_000), Err(LinkError::Forged));
        assert_eq!(verify(b"key", "hello", 1_000), Err(LinkError::Malformed));
        assert_eq!(verify(b"key", "ws1_!!!", 1_000), Err(LinkError::Malformed));
    }

    #[test]
    fn short_codes_are_found_in_messages() {
        let code = short_code();
        assert_eq!(code.len(), 6);
        assert_eq!(short_code_candidates(&format!("hi, my code is {}!", code.to_lowercase())), vec![code]);
        assert!(short_code_candidates("hello there").is_empty());
    }
}
