//! Signed identity for logged-in customers: the host page passes `Parley('identify', {id, name, email, hash})`,
//! where `hash` is the hex HMAC-SHA256 of `id` keyed with the site's identity secret (the secret's UTF-8 bytes, as
//! printed by `parley site identity --generate`), computed by the customer's backend. This module owns the secret's
//! type (never printed by `Debug`), its generation and the check, which compares in constant time (`subtle`).
//! Only `id` is signed; `name` and `email` are taken as the host page states them for that id.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth;

/// Longest external id accepted, in characters.
pub const MAX_ID_CHARS: usize = 256;
const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 320;

/// A site's identity secret. Kept out of logs: `Debug` prints no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentitySecret(String);

impl IdentitySecret {
    /// A new random secret (32 bytes, base64url).
    pub fn generate() -> Self {
        Self(auth::new_token())
    }

    pub fn from_stored(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself: for storing it and for printing it once on the CLI that made it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hex HMAC-SHA256 of `id` under this secret (what the customer's backend computes).
    pub fn sign(&self, id: &str) -> String {
        hex::encode(self.mac(id))
    }

    /// Whether `hash` (hex, either case) is the HMAC of `id`. The digests are compared in constant time.
    pub fn verify(&self, id: &str, hash: &str) -> bool {
        let Ok(given) = hex::decode(hash.trim()) else { return false };
        bool::from(self.mac(id).as_slice().ct_eq(&given))
    }

    fn mac(&self, id: &str) -> [u8; 32] {
        // HMAC takes a key of any length, so this cannot fail; a failure would verify nothing.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()) else { return [0; 32] };
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySecret(..)")
    }
}

/// An identity that verified: the customer's id on the host site and what the host page said about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// Checks a `hello`'s identity against the site's secret: `None` when there is no secret, the id is empty, too
/// long or has control characters, or the hash does not match. Name and email are trimmed and clipped.
pub fn verify(secret: Option<&IdentitySecret>, claimed: protocol::widget::Identity) -> Option<Verified> {
    let secret = secret?;
    let id_ok = !claimed.id.is_empty()
        && claimed.id.chars().count() <= MAX_ID_CHARS
        && !claimed.id.chars().any(char::is_control);
    if !id_ok || !secret.verify(&claimed.id, &claimed.hash) {
        return None;
    }
    Some(Verified {
        id: claimed.id,
        name: clip(claimed.name, MAX_NAME_CHARS),
        email: clip(claimed.email, MAX_EMAIL_CHARS),
    })
}

fn clip(value: Option<String>, max: usize) -> Option<String> {
    let value = value?;
    let value: String = value.trim().chars().filter(|c| !c.is_control()).take(max).collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::widget::Identity;

    fn claim(id: &str, hash: &str) -> Identity {
        Identity { id: id.into(), name: Some("  Ada  ".into()), email: None, hash: hash.into() }
    }

    #[test]
    fn matches_an_independent_hmac() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'secret',b'user-42',hashlib.sha256).hexdigest())"
        let secret = IdentitySecret::from_stored("secret".into());
        let expected = "e286b7b944100ab478fe553b39122922de0000aee1d04087dc3e96eefc3a8d47";
        assert_eq!(secret.sign("user-42"), expected);
        assert!(secret.verify("user-42", expected));
        assert!(secret.verify("user-42", &expected.to_ascii_uppercase()));
    }

    #[test]
    fn refuses_wrong_hashes_ids_and_missing_secrets() {
        let secret = IdentitySecret::generate();
        let good = secret.sign("user-42");
        assert_eq!(verify(Some(&secret), claim("user-42", &good)).map(|v| v.name), Some(Some("Ada".into())));
        assert_eq!(verify(Some(&secret), claim("user-43", &good)), None);
        assert_eq!(verify(Some(&secret), claim("user-42", &good[..62])), None);
        assert_eq!(verify(Some(&secret), claim("user-42", "not hex")), None);
        assert_eq!(verify(Some(&IdentitySecret::generate()), claim("user-42", &good)), None);
        assert_eq!(verify(None, claim("user-42", &good)), None);
        assert_eq!(verify(Some(&secret), claim("", &secret.sign(""))), None);
        assert_eq!(verify(Some(&secret), claim("a\nb", &secret.sign("a\nb"))), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = IdentitySecret::from_stored("hunter2-very-secret".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
