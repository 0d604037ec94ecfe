//! Webhook signatures: Meta signs the exact raw body with the app secret. `X-Hub-Signature-256: sha256=<hex>` is
//! checked; the legacy `X-Hub-Signature: sha1=<hex>` only when the -256 header is absent. Comparison is constant
//! time (through `Mac::verify_slice`). Never parse or re-serialize a body before this check.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature header")]
    Missing,
    #[error("malformed signature header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies a delivery given its two possible headers.
pub fn verify(app_secret: &[u8], body: &[u8], sha256: Option<&str>, sha1: Option<&str>) -> Result<(), SignatureError> {
    if let Some(header) = sha256 {
        let expected = parse(header, "sha256=")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).map_err(|_| SignatureError::Mismatch)?;
        mac.update(body);
        return mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch);
    }
    if let Some(header) = sha1 {
        let expected = parse(header, "sha1=")?;
        let mut mac = Hmac::<Sha1>::new_from_slice(app_secret).map_err(|_| SignatureError::Mismatch)?;
        mac.update(body);
        return mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch);
    }
    Err(SignatureError::Missing)
}

fn parse(header: &str, prefix: &str) -> Result<Vec<u8>, SignatureError> {
    let hex_digest = header.trim().strip_prefix(prefix).ok_or(SignatureError::Malformed)?;
    hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)
}

/// `sha256=<hex>` for a body (used by tests and the sandbox's peers).
pub fn sign_sha256(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector computed independently: python3 -c "import hmac,hashlib;print(hmac.new(b'secret',b'{\"a\":1}',hashlib.sha256).hexdigest())"
    const BODY: &[u8] = br#"{"a":1}"#;
    const SHA256: &str = "sha256=aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494";

    #[test]
    fn a_signature_over_the_exact_bytes_verifies() {
        let header = sign_sha256(b"secret", BODY);
        assert_eq!(header, SHA256);
        assert_eq!(verify(b"secret", BODY, Some(&header), None), Ok(()));
        assert_eq!(verify(b"other", BODY, Some(&header), None), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", br#"{"a": 1}"#, Some(&header), None), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_sha256_header_wins_over_sha1_and_sha1_is_only_a_fallback() {
        let good_sha1 = {
            let mut mac = Hmac::<Sha1>::new_from_slice(b"secret").expect("key");
            mac.update(BODY);
            format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
        };
        assert_eq!(verify(b"secret", BODY, None, Some(&good_sha1)), Ok(()));
        assert_eq!(
            verify(b"secret", BODY, Some(SHA256.replace("aa9e", "0000").as_str()), Some(&good_sha1)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"secret", BODY, None, None), Err(SignatureError::Missing));
        assert_eq!(verify(b"secret", BODY, Some("md5=abc"), None), Err(SignatureError::Malformed));
    }
}
