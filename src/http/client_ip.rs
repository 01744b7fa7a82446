//! Who is calling, as far as we can tell: the client IP (rate limits, audit metadata).
//!
//! `X-Forwarded-For` is believed only when the connection comes from a trusted proxy
//! (`TRUSTED_PROXIES`), and then only as far as the chain of trusted proxies reaches: the
//! client is the right-most address that is not itself a trusted proxy. Everything left of
//! it was written by the client and may be forged.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::state::AppState;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request that reached us from `peer`.
pub fn client_ip(parts: &Parts, peer: SocketAddr, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Several X-Forwarded-For headers form one list, in order. Each entry is parsed on its
    // own, so one unreadable entry on the client's side cannot hide the proxies' entries.
    let hops: Vec<&[u8]> = parts
        .headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage: believe nothing beyond it.
            return nearest;
        };
        if !is_trusted(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:443`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The peer address of the connection. The server runs with
/// `into_make_service_with_connect_info::<SocketAddr>()`; a router driven without a socket
/// (in-process tests) has none and counts as the unspecified address.
pub fn peer_addr(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Extractor for [`client_ip`] with the configured trusted proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            parts,
            peer_addr(parts),
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(forwarded: &[&str]) -> Parts {
        let mut request = Request::builder();
        for value in forwarded {
            request = request.header(X_FORWARDED_FOR, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = parts(&["203.0.113.9"]);
        assert_eq!(client_ip(&p, peer("198.51.100.1"), &[]), ip("198.51.100.1"));
        assert_eq!(
            client_ip(&p, peer("198.51.100.1"), &nets(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        // The client forged the first entry; the edge proxy appended the real one.
        let p = parts(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(&p, peer("10.0.0.2"), &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn several_forwarded_headers_are_one_list() {
        let p = parts(&["1.1.1.1", "203.0.113.9:5123"]);
        assert_eq!(
            client_ip(&p, peer("10.0.0.2"), &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn without_a_usable_forwarded_address_the_nearest_trusted_hop_is_used() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&parts(&[]), peer("10.0.0.2"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(&parts(&["not-an-ip, 10.0.0.7"]), peer("10.0.0.2"), &trusted),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_count_as_ipv4() {
        let p = parts(&["[2001:db8::1]:443"]);
        assert_eq!(
            client_ip(&p, peer("::ffff:127.0.0.1"), &nets(&["127.0.0.1/32"])),
            ip("2001:db8::1")
        );
    }
}

/// The key a per-client rate limit counts under: an IPv4 address as it is, an IPv6 address
/// by its /64 prefix — one subscriber's network, from which a client may use any of 2⁶⁴
/// addresses to dodge a per-address limit. IPv4-mapped IPv6 counts as its IPv4 address.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod rate_key_tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:77::1".parse().unwrap();
        let b: IpAddr = "2001:db8:77::c".parse().unwrap();
        let other: IpAddr = "2001:db8:78::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(other));
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(rate_key(v4), v4);
        assert_eq!(rate_key(mapped), v4);
    }
}
