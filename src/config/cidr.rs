//! `--trusted-proxies`: address ranges (CIDR) whose `X-Forwarded-For` Halley believes, and
//! the rule that finds the client behind them.
//!
//! Behind a reverse proxy every request comes from the proxy's address, so whatever is counted
//! per client address (the session create rate) would count everyone as one client. A proxy
//! appends the address it received the request from to `X-Forwarded-For`; a client can put
//! anything in front of that. So the header is read only when the socket's peer is a trusted
//! proxy, from the right: each hop that is itself a trusted proxy passes the question on to
//! the hop before it, and the first untrusted hop is the client. An entry that is not an
//! address ends the walk at the hop after it (the last address that a trusted proxy vouched
//! for).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address range: a network address and a prefix length (`10.0.0.0/8`, `::1/128`; a bare
/// address is a range of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let net = IpAddr::from_str(addr.trim()).map_err(|_| bad())?.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The client's address for a request that came from `peer` with `forwarded` (the elements of
/// its `X-Forwarded-For` headers, in order): `peer` itself unless it is trusted; never a
/// loopback address named by the header of a proxy that is not itself on loopback.
pub fn client_behind<'a>(peer: IpAddr, forwarded: impl Iterator<Item = &'a [u8]>, trusted: &[Cidr]) -> IpAddr {
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !trusted_ip(peer) {
        return peer;
    }
    // At most the header's own length in entries; collected to walk it from the right.
    let hops: Vec<&[u8]> = forwarded.collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = std::str::from_utf8(hop).ok().and_then(|s| IpAddr::from_str(s.trim()).ok()) else {
            break;
        };
        let ip = ip.to_canonical();
        // Loopback is where the rules trust most (publishing without auth, /metrics): a proxy
        // on another host cannot have a client on this host's loopback, so a header that says
        // so is not believed and the proxy itself is the client.
        if ip.is_loopback() && !peer.is_loopback() {
            return peer;
        }
        client = ip;
        if !trusted_ip(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn a_remote_proxy_cannot_name_a_loopback_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.5");
        let hops = |list: &'static [&'static str]| list.iter().map(|h| h.as_bytes());
        assert_eq!(client_behind(peer, hops(&["127.0.0.1"]), &trusted), peer);
        assert_eq!(client_behind(peer, hops(&["::1"]), &trusted), peer);
        assert_eq!(client_behind(peer, hops(&["203.0.113.9"]), &trusted), ip("203.0.113.9"));
        // A proxy on this host may: its client can be local too.
        let local = cidrs(&["127.0.0.1/32"]);
        assert_eq!(client_behind(ip("127.0.0.1"), hops(&["127.0.0.1"]), &local), ip("127.0.0.1"));
        assert_eq!(client_behind(ip("127.0.0.1"), hops(&["127.0.0.1", "198.51.100.4"]), &local), ip("198.51.100.4"));
    }

    #[test]
    fn ranges_parse_and_contain() {
        let net: Cidr = "10.0.0.0/8".parse().expect("v4");
        assert!(net.contains(ip("10.200.0.1")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts as IPv4");
        let one: Cidr = "192.0.2.7".parse().expect("bare");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop_and_only_behind_a_trusted_peer() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let header = |s: &'static str| s.split(',').map(str::as_bytes).collect::<Vec<_>>().into_iter();
        // A trusted proxy says who its client was; what the client wrote in front is ignored.
        assert_eq!(client_behind(ip("10.0.0.1"), header("1.1.1.1, 203.0.113.5"), &trusted), ip("203.0.113.5"));
        // Two proxies of ours in a row.
        assert_eq!(client_behind(ip("10.0.0.1"), header("203.0.113.5, 10.0.0.2"), &trusted), ip("203.0.113.5"));
        // An untrusted peer's header means nothing.
        assert_eq!(client_behind(ip("198.51.100.1"), header("203.0.113.5"), &trusted), ip("198.51.100.1"));
        // No header, or garbage: the last address a trusted hop vouched for.
        assert_eq!(client_behind(ip("10.0.0.1"), header(""), &trusted), ip("10.0.0.1"));
        assert_eq!(client_behind(ip("10.0.0.1"), header("junk, 10.0.0.3"), &trusted), ip("10.0.0.3"));
        // Nothing trusted: the peer, always.
        assert_eq!(client_behind(ip("10.0.0.1"), header("203.0.113.5"), &[]), ip("10.0.0.1"));
    }
}
