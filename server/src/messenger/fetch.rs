//! Fetching files a Messenger payload points at (attachments, profile pictures) without letting a URL reach
//! anything but the CDNs we trust.
//!
//! A webhook's `payload.url` is attacker-controlled (a shared link becomes a `fallback` attachment), so a URL is
//! fetched only when every hop passes the [`AllowList`] (`messenger.attachment_hosts`): scheme, host pattern and
//! port. Names are resolved by [`CheckedResolver`], which refuses a name if *any* of its addresses is loopback,
//! private, link-local, unique-local, multicast, unspecified or otherwise not public, and hands reqwest exactly
//! the checked addresses to connect to (no second lookup, so DNS rebinding cannot slip in between). IP literals,
//! which reqwest connects to without resolving, are checked against the same rule up front. Only an exact entry
//! with an explicit port (such as the sandbox's `http://127.0.0.1:3001`) admits a non-public address, and only for
//! that host and port. Redirects are followed only to URLs that pass the same checks. Bodies are streamed and the
//! download is aborted as soon as it passes `messenger.attachment_max_bytes`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// Why a fetch did not produce a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL")]
    BadUrl,
    #[error("host not on the attachment allow-list")]
    HostNotAllowed,
    #[error("address is not public")]
    PrivateAddress,
    #[error("larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("download failed: {0}")]
    Transport(String),
}

/// One `messenger.attachment_hosts` entry: `[http://|https://]host[:port]`, where host may start with `*.`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    https: bool,
    /// Lower-case host, or the suffix after `*` (starting with `.`) for a wildcard.
    host: String,
    wildcard: bool,
    port: u16,
    /// Exact host with an explicit port: may resolve to a non-public address.
    explicit: bool,
}

/// The hosts attachments may come from.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses the configured entries; an entry that is not `[scheme://]host[:port]` is an error naming it.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let rules = entries.iter().map(|e| parse_rule(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// Whether this URL may be fetched (before any connection): scheme, host and port on the list, and an IP
    /// literal only if public or explicitly listed.
    pub fn check(&self, url: &Url) -> Result<(), FetchError> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(FetchError::BadUrl),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl);
        }
        let port = url.port_or_known_default().ok_or(FetchError::BadUrl)?;
        let host = url.host().ok_or(FetchError::BadUrl)?;
        let (name, ip) = match host {
            Host::Domain(d) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
            Host::Ipv4(ip) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Host::Ipv6(ip) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.https == https && r.port == port && r.matches(&name))
            .ok_or(FetchError::HostNotAllowed)?;
        match ip {
            Some(ip) if !is_public(ip) && !rule.explicit => Err(FetchError::PrivateAddress),
            _ => Ok(()),
        }
    }

    /// Names that an explicit entry admits even when they resolve to non-public addresses.
    fn explicit_names(&self) -> HashSet<String> {
        self.rules.iter().filter(|r| r.explicit).map(|r| r.host.clone()).collect()
    }
}

impl Rule {
    fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.host.len() && host.ends_with(self.host.as_str())
        } else {
            host == self.host
        }
    }
}

fn parse_rule(entry: &str) -> Result<Rule, String> {
    let bad = || format!("messenger.attachment_hosts: `{entry}` is not [http://|https://]host[:port]");
    let trimmed = entry.trim().to_ascii_lowercase();
    let (https, rest) = match trimmed.split_once("://") {
        Some(("https", rest)) => (true, rest.to_string()),
        Some(("http", rest)) => (false, rest.to_string()),
        Some(_) => return Err(bad()),
        None => (true, trimmed.clone()),
    };
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(r) => (true, r.to_string()),
        None => (false, rest),
    };
    // Let the URL parser split host and port (and normalise IPv6 and IPv4 forms).
    let url = Url::parse(&format!("{}://{rest}", if https { "https" } else { "http" })).map_err(|_| bad())?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() || rest.contains('/') {
        return Err(bad());
    }
    let host = match url.host().ok_or_else(bad)? {
        Host::Domain(d) => d.trim_end_matches('.').to_string(),
        Host::Ipv4(ip) if !wildcard => ip.to_string(),
        Host::Ipv6(ip) if !wildcard => ip.to_string(),
        _ => return Err(bad()),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = url.port_or_known_default().ok_or_else(bad)?;
    let explicit = !wildcard && url.port().is_some();
    Ok(Rule { https, host: if wildcard { format!(".{host}") } else { host }, wildcard, port, explicit })
}

/// Whether an address is on the public internet (not loopback, private, link-local, unique-local, multicast,
/// unspecified, shared, documentation, benchmarking or reserved; IPv4 inside IPv6 is judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b;
            let embeds_v4 = (s[0] == 0x2002) || nat64 || (s[0..6].iter().all(|x| *x == 0));
            if embeds_v4 {
                // 6to4, NAT64 and IPv4-compatible addresses lead to an IPv4 address: judge that one.
                let [a, b] = if s[0] == 0x2002 { [s[1], s[2]] } else { [s[6], s[7]] };
                let v4 = Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8);
                return is_public_v4(v4) && !v6.is_unspecified() && !v6.is_loopback();
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// A resolver that refuses names with any non-public address (unless an explicit entry names them) and returns
/// the addresses it checked, which are the ones reqwest connects to.
pub struct CheckedResolver {
    explicit: HashSet<String>,
}

impl CheckedResolver {
    /// Resolves and checks one name.
    pub async fn lookup(&self, name: &str) -> Result<Vec<SocketAddr>, FetchError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|e| FetchError::Transport(format!("cannot resolve the host: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(FetchError::Transport("the host has no address".into()));
        }
        if !self.explicit.contains(&name.trim_end_matches('.').to_ascii_lowercase())
            && addrs.iter().any(|a| !is_public(a.ip()))
        {
            return Err(FetchError::PrivateAddress);
        }
        Ok(addrs)
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = Self { explicit: self.explicit.clone() };
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs =
                this.lookup(&name).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A downloaded file.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// The HTTP client for attachments: allow-listed hosts, checked addresses, checked redirects, capped bodies.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    allow: Arc<AllowList>,
    max_bytes: u64,
}

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    pub fn new(allow: AllowList, max_bytes: u64, timeout: Duration) -> anyhow::Result<Self> {
        let allow = Arc::new(allow);
        let policy_allow = Arc::clone(&allow);
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(FetchError::Transport("too many redirects".into()));
            }
            match policy_allow.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            .dns_resolver(Arc::new(CheckedResolver { explicit: allow.explicit_names() }))
            // A proxy would resolve names itself, past our checks.
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()?;
        Ok(Self { http, allow, max_bytes })
    }

    /// Downloads `url` if the allow-list admits it, streaming and stopping at `max_bytes` (or the configured cap,
    /// whichever is smaller).
    pub async fn get(&self, url: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        let max = max_bytes.min(self.max_bytes);
        let url = Url::parse(url).map_err(|_| FetchError::BadUrl)?;
        self.allow.check(&url)?;
        let mut response = self.http.get(url).send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge(max));
        }
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if u64::try_from(bytes.len() + chunk.len()).unwrap_or(u64::MAX) > max {
                // Dropping the response closes the connection: the rest is never read.
                return Err(FetchError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched { bytes, content_type })
    }
}

/// A reqwest error in words, with its causes (our resolver's and redirect policy's reasons) but without the URL.
fn transport(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(ours) = cause.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        source = cause.source();
    }
    let mut causes = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Transport(format!("{}{causes}", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid list")
    }

    fn check(list: &AllowList, url: &str) -> Result<(), FetchError> {
        list.check(&Url::parse(url).expect("url"))
    }

    #[test]
    fn only_listed_hosts_schemes_and_ports_pass() {
        let l = list(&["*.fbcdn.net", "cdn.fbsbx.com", "http://127.0.0.1:3001"]);
        assert_eq!(check(&l, "https://scontent.xx.fbcdn.net/v/t1/a.png?oe=1"), Ok(()));
        assert_eq!(check(&l, "https://cdn.fbsbx.com/v/file.pdf"), Ok(()));
        assert_eq!(check(&l, "http://127.0.0.1:3001/__emu/media/x/y.png"), Ok(()));
        for refused in [
            "https://fbcdn.net/a",               // the wildcard needs a subdomain
            "https://evilfbcdn.net/a",           // not a subdomain
            "https://fbcdn.net.evil.example/a",  // suffix trick
            "http://scontent.xx.fbcdn.net/a",    // wrong scheme
            "https://scontent.fbcdn.net:8443/a", // wrong port
            "http://127.0.0.1:3002/a",           // another port on the explicit host
            "http://127.0.0.1/a",
            "http://localhost:3001/a",
            "https://user:pw@cdn.fbsbx.com/a",
            "file:///etc/passwd",
            "gopher://cdn.fbsbx.com/a",
        ] {
            assert!(check(&l, refused).is_err(), "{refused} must be refused");
        }
    }

    #[test]
    fn private_ip_literals_need_an_explicit_entry_in_every_spelling() {
        let l = list(&["http://169.254.169.254", "http://10.0.0.1", "http://127.0.0.1:3001"]);
        // Entries without a port are not explicit: the private rule still holds.
        assert_eq!(check(&l, "http://169.254.169.254/latest/meta-data/"), Err(FetchError::PrivateAddress));
        assert_eq!(check(&l, "http://10.0.0.1/"), Err(FetchError::PrivateAddress));
        // The URL parser normalises decimal and hex forms, so they meet the same rules.
        assert_eq!(check(&l, "http://2130706433:3001/"), Ok(()));
        assert_eq!(check(&l, "http://0x7f.0.0.1:3002/"), Err(FetchError::HostNotAllowed));
        assert_eq!(check(&list(&["*.example"]), "http://[::1]/"), Err(FetchError::HostNotAllowed));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's error type
    fn the_list_comes_from_the_environment_as_an_array() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PARLEY_MESSENGER__ATTACHMENT_HOSTS", r#"["*.fbcdn.net", "http://127.0.0.1:3001"]"#);
            let settings = crate::config::Settings::load(None).expect("loads");
            let l = AllowList::parse(&settings.messenger.attachment_hosts).expect("valid");
            assert_eq!(check(&l, "http://127.0.0.1:3001/x"), Ok(()));
            assert_eq!(check(&l, "https://cdn.fbsbx.com/x"), Err(FetchError::HostNotAllowed));
            Ok(())
        });
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in ["ftp://x.example", "x.example/path", "*.127.0.0.1", "", "http://"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip} is not public");
        }
        for ip in ["157.240.1.1", "31.13.64.35", "2a03:2880:f003:c07:face:b00c::2", "::ffff:157.240.1.1"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_after_resolution() {
        let resolver = CheckedResolver { explicit: HashSet::new() };
        assert_eq!(resolver.lookup("localhost").await, Err(FetchError::PrivateAddress));
        let explicit = CheckedResolver { explicit: ["localhost".to_string()].into() };
        assert!(explicit.lookup("localhost").await.is_ok_and(|a| a.iter().all(|a| a.ip().is_loopback())));
    }
}
