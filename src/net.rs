//! Which addresses Valet's outbound fetches may reach: the SSRF guard shared by the provider
//! HTTP client (`oauth/http.rs`) and MCP discovery (`mcp/fetch.rs`). Unless private networks
//! are allowed, a host that is (or resolves only to) a private, loopback, link-local or other
//! special-purpose address is never connected to; the check runs on the addresses the
//! connection uses (`PublicOnly`, the resolver), so DNS cannot rebind around it, and on IP
//! literals (which no resolver sees).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::Url;

/// What the resolver's refusal says (and what callers look for in an error's sources).
pub const PRIVATE_ONLY: &str = "private, loopback or link-local addresses";

/// Whether the URL names this machine by its usual loopback spellings (where plain http is
/// acceptable: nothing crosses a network).
pub fn loopback_host(url: &Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

/// Whether the URL's host may be public: IP literals are checked here (the resolver never sees
/// them); names are checked again on every address they resolve to.
pub fn public_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => is_public(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => is_public(IpAddr::V6(a)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            !(d == "localhost"
                || d.ends_with(".localhost")
                || d == "metadata"
                || d == "metadata.google.internal")
        }
        None => false,
    }
}

/// Whether an address is publicly routable (IANA special-purpose registries: not this network,
/// private, shared (CGNAT), loopback, link-local (cloud metadata), documentation, benchmarking,
/// multicast, reserved; IPv6 unique-local, link- and site-local, and v4 embedded in v6).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(o0 == 0
        || a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || (o0 == 100 && (o1 & 0xc0) == 64)
        || (o0 == 192 && o1 == 0 && o2 == 0)
        || a.is_documentation()
        || (o0 == 198 && (o1 & 0xfe) == 18)
        || a.is_multicast()
        || o0 >= 240)
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = a.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    !(s[..6] == [0; 6]
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || a.is_multicast()
        || s[0] == 0x2002
        || (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8)))
}

/// Resolves with the system resolver and keeps only public addresses; none left is an error,
/// so a name pointing inside the network is never connected to.
#[derive(Debug)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(PRIVATE_ONLY.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a request failed because its host resolves only to non-public addresses.
pub fn refused_as_private(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.to_string().contains(PRIVATE_ONLY) {
            return true;
        }
        source = s.source();
    }
    false
}

/// A URL as errors show it: without user name, password, query or fragment (a server-supplied
/// URL could carry anything there).
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    // Err only for URLs that cannot have them (no host), which then have none.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// [`shown`] for URL text; `None` when it is not a URL (then nothing of it should be shown).
pub fn shown_text(raw: &str) -> Option<String> {
    Url::parse(raw).ok().map(|u| shown(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_credentials_query_or_fragment() {
        let u = Url::parse("https://user:pw@mcp.example:8443/a/b?key=k#frag").unwrap();
        assert_eq!(shown(&u), "https://mcp.example:8443/a/b");
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "100.128.0.1", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }
}
