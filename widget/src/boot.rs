//! Boot configuration of the chat frame: the `#parley-boot` JSON the server writes into the frame's HTML, the
//! absolute WebSocket URL built from it, and the host-page origin handed over in the frame URL's fragment.
//!
//! Pure functions only (no DOM), so everything here is unit-tested on the host.

use protocol::widget::Identity;

/// The JSON inside `<script id="parley-boot" type="application/json">` (decoded by [`crate::wire`]). `greeting`,
/// `allowed_origins` and `messenger` may be missing (empty, none, false); unknown fields are ignored.
#[derive(Clone)]
pub struct BootConfig {
    pub site_key: String,
    pub site_name: String,
    /// First bubble shown to the visitor; not persisted, not part of the conversation.
    pub greeting: String,
    /// Exact origins (`scheme://host[:port]`) allowed to embed the frame.
    pub allowed_origins: Vec<String>,
    /// Path (or absolute `ws(s)://` URL) of the visitor socket, e.g. `/ws/visitor?site=demo`.
    pub ws_url: String,
    /// Whether "Continue on Messenger" is offered.
    pub messenger: bool,
}

impl BootConfig {
    /// Parses the boot JSON; the error is a short human-readable reason.
    pub fn parse(json: &str) -> Result<Self, String> {
        let cfg = crate::wire::decode_boot_config(json).ok_or("the boot JSON is malformed or lacks a field")?;
        if cfg.site_key.is_empty() {
            return Err("site_key is empty".into());
        }
        if cfg.ws_url.is_empty() {
            return Err("ws_url is empty".into());
        }
        Ok(cfg)
    }

    /// Whether `origin` may embed the frame and exchange messages with it (exact match).
    pub fn allows(&self, origin: &str) -> bool {
        !origin.is_empty() && self.allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin)
    }
}

/// Builds the absolute socket URL from the page's `location.protocol` (`"https:"`), `location.host`
/// (`"chat.example.com:8443"`) and the configured `ws_url`.
pub fn ws_absolute(page_protocol: &str, page_host: &str, ws_url: &str) -> String {
    if ws_url.starts_with("ws://") || ws_url.starts_with("wss://") {
        return ws_url.to_string();
    }
    if let Some(rest) = ws_url.strip_prefix("https://") {
        return format!("wss://{rest}");
    }
    if let Some(rest) = ws_url.strip_prefix("http://") {
        return format!("ws://{rest}");
    }
    let scheme = if page_protocol == "https:" { "wss" } else { "ws" };
    let sep = if ws_url.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{page_host}{sep}{ws_url}")
}

/// Extracts the host-page origin from a frame URL fragment like `#host=https%3A%2F%2Fshop.example`.
pub fn host_from_fragment(hash: &str) -> Option<String> {
    let hash = hash.strip_prefix('#').unwrap_or(hash);
    hash.split('&').find_map(|pair| pair.strip_prefix("host=")).and_then(percent_decode).filter(|s| !s.is_empty())
}

/// Decodes `%XX` escapes (as produced by `encodeURIComponent`); `None` for malformed input.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The identity in a host page's `init` or `identify` message: the checks the frame makes before it presents an identity.
pub fn parse_identity(
    id: Option<String>,
    name: Option<String>,
    email: Option<String>,
    hash: Option<String>,
) -> Option<Identity> {
    let id = id.filter(|s| !s.is_empty())?;
    let hash = hash.map(|h| h.trim().to_string()).filter(|h| !h.is_empty())?;
    let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    Some(Identity { id, name: some(name), email: some(email), hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"site_key":"demo","site_name":"Demo Shop","greeting":"Hi! How can we help?","allowed_origins":["http://127.0.0.1:8080"],"ws_url":"/ws/visitor?site=demo"}"#;

    #[test]
    fn parses_the_servers_boot_json() {
        let cfg = BootConfig::parse(SAMPLE).expect("sample is valid");
        assert_eq!(cfg.site_key, "demo");
        assert_eq!(cfg.site_name, "Demo Shop");
        assert_eq!(cfg.greeting, "Hi! How can we help?");
        assert_eq!(cfg.allowed_origins, vec!["http://127.0.0.1:8080".to_string()]);
        assert_eq!(cfg.ws_url, "/ws/visitor?site=demo");
    }

    #[test]
    fn boot_json_tolerates_missing_optional_fields_and_extra_ones() {
        let cfg = BootConfig::parse(r#"{"site_key":"k","site_name":"S","ws_url":"/ws","theme":"x"}"#)
            .expect("optional fields default");
        assert_eq!(cfg.greeting, "");
        assert!(cfg.allowed_origins.is_empty());
    }

    #[test]
    fn boot_json_rejects_garbage_and_empty_keys() {
        assert!(BootConfig::parse("not json").is_err());
        assert!(BootConfig::parse(r#"{"site_name":"S","ws_url":"/ws"}"#).is_err());
        assert!(BootConfig::parse(r#"{"site_key":"","site_name":"S","ws_url":"/ws"}"#).is_err());
    }

    #[test]
    fn origin_check_is_exact() {
        let cfg = BootConfig::parse(SAMPLE).expect("sample is valid");
        assert!(cfg.allows("http://127.0.0.1:8080"));
        assert!(!cfg.allows("http://127.0.0.1:8081"));
        assert!(!cfg.allows("http://127.0.0.1:8080.evil.com"));
        assert!(!cfg.allows("https://127.0.0.1:8080"));
        assert!(!cfg.allows(""));
    }

    #[test]
    fn ws_url_follows_the_page_scheme() {
        assert_eq!(
            ws_absolute("https:", "chat.example.com", "/ws/visitor?site=demo"),
            "wss://chat.example.com/ws/visitor?site=demo"
        );
        assert_eq!(ws_absolute("http:", "127.0.0.1:3000", "/ws/visitor"), "ws://127.0.0.1:3000/ws/visitor");
        assert_eq!(ws_absolute("http:", "h", "ws/visitor"), "ws://h/ws/visitor");
        assert_eq!(ws_absolute("https:", "h", "wss://other/ws"), "wss://other/ws");
        assert_eq!(ws_absolute("http:", "h", "https://other/ws"), "wss://other/ws");
    }

    #[test]
    fn host_origin_comes_from_the_fragment() {
        assert_eq!(host_from_fragment("#host=http%3A%2F%2F127.0.0.1%3A8080").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(host_from_fragment("#x=1&host=https%3A%2F%2Fa.b").as_deref(), Some("https://a.b"));
        assert_eq!(host_from_fragment("#host="), None);
        assert_eq!(host_from_fragment(""), None);
        assert_eq!(host_from_fragment("#host=%zz"), None);
        assert_eq!(host_from_fragment("#host=%4"), None);
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn an_identity_needs_an_id_and_a_hash() {
        let full = parse_identity(s("u-1"), s("Ada"), s(" "), s(" ab12 ")).expect("valid");
        assert_eq!(
            (full.id.as_str(), full.name.as_deref(), full.email, full.hash.as_str()),
            ("u-1", Some("Ada"), None, "ab12")
        );
        assert!(parse_identity(None, s("Ada"), None, s("ab12")).is_none());
        assert!(parse_identity(s(""), None, None, s("ab12")).is_none());
        assert!(parse_identity(s("u-1"), None, None, None).is_none());
        assert!(parse_identity(s("u-1"), None, None, s("  ")).is_none());
    }
}
