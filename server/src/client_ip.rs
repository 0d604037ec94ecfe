//! Who is on the other end of a request: the peer address, or — only when the peer is one of our own trusted
//! proxies (`http.trusted_proxies`) — the rightmost address in `X-Forwarded-For` that is not a trusted proxy.
//!
//! Everything left of that hop was written by the client and can be forged, so it is never used. Rate limits and
//! socket caps key on the result ([`limit_key`] folds an IPv6 address to its /64, the block one subscriber gets).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The `X-Forwarded-For` header.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Networks whose `X-Forwarded-For` we believe. Empty (the default) believes no one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One CIDR (`10.0.0.0/8`) or a single address (`127.0.0.1`, taken as /32 or /128).
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    IpNet::from_str(text)
        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list, as an environment variable would give it.
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',').filter(|s| !s.trim().is_empty()).map(parse_net).collect::<Result<_, _>>().map(Self)
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = TrustedProxies;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of IP addresses or CIDR networks")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut nets = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    nets.push(parse_net(&text).map_err(de::Error::custom)?);
                }
                Ok(TrustedProxies(nets))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address for a request that arrived from `peer`.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer.ip());
    if !trusted.contains(peer) {
        return peer;
    }
    // Hops are appended left to right, each proxy adding the address it received from; several headers count as one
    // list in order. Walk from the right past our own proxies; the first other address is the client.
    let hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = IpAddr::from_str(hop).map(canonical) else {
            // Garbage from a hop we cannot trust past: stop at the last trusted proxy.
            break;
        };
        if !trusted.contains(ip) {
            return ip;
        }
    }
    // Only trusted hops (or none): the request came from our own network.
    hops.iter().rev().find_map(|hop| IpAddr::from_str(hop).ok().map(canonical)).unwrap_or(peer)
}

/// The key rate limits count under: the address itself for IPv4, its /64 network for IPv6.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(X_FORWARDED_FOR, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(resolve(peer("198.51.100.1"), &headers(&["203.0.113.9"]), &none), ip("198.51.100.1"));
        let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("parses");
        assert_eq!(resolve(peer("198.51.100.1"), &headers(&["203.0.113.9"]), &trusted), ip("198.51.100.1"));
        assert_eq!(resolve(peer("10.1.2.3"), &headers(&["203.0.113.9"]), &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_wins_and_forged_left_hops_are_ignored() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().expect("parses");
        // The client forged "1.1.1.1"; our edge proxy (10.0.0.2) appended the real address, our inner one 10.0.0.1.
        let h = headers(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Garbage to the right of the real client stops the walk at the last trusted hop.
        let h = headers(&["203.0.113.9, not-an-ip, 10.0.0.2"]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &trusted), ip("10.0.0.2"));
        // No header at all: the proxy itself.
        assert_eq!(resolve(peer("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_addresses_and_ipv6_networks_are_folded() {
        let trusted: TrustedProxies = "127.0.0.1".parse().expect("parses");
        assert!(trusted.contains(ip("::ffff:127.0.0.1")));
        assert_eq!(limit_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn bad_networks_are_refused_naming_the_value() {
        let err = "10.0.0.0/8, nope".parse::<TrustedProxies>().expect_err("refused");
        assert!(err.contains("`nope`"), "{err}");
        let list: TrustedProxies = serde_json::from_str(r#"["192.168.0.0/16", "::1"]"#).expect("a list deserializes");
        assert!(list.contains(ip("::1")) && list.contains(ip("192.168.3.4")));
        assert!(serde_json::from_str::<TrustedProxies>(r#"["300.1.1.1"]"#).is_err());
    }
}
