//! Who may create a session: a token bucket per client address, so that one client cannot
//! fill the server-wide `--max-sessions` pool and lock everyone else out for a lease.
//!
//! The other two defences are in `mod.rs`: a session that never listens lives only
//! `--session-join-timeout`, and a full pool makes room by evicting the oldest never-used
//! session of any worker (`claims.rs`). Together they bound what joins alone can hold: at most
//! `rate x join timeout` unused sessions per address and worker, and never the listening ones.
//!
//! The table of addresses is bounded too ([`MAX_ADDRESSES`]). When it is full of addresses that
//! are all still creating (a flood from many source addresses), it is cleared: the limiter then
//! fails open, and the pool's own eviction is what protects listening sessions.

use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// Client addresses tracked per worker.
pub(super) const MAX_ADDRESSES: usize = 4096;

/// A token bucket per client address.
#[derive(Debug)]
pub(super) struct CreateLimiter {
    buckets: FxHashMap<IpAddr, Bucket>,
    /// Tokens added per second.
    rate: f64,
    /// Tokens a bucket holds at most (a burst).
    burst: f64,
    /// `--session-create-rate 0`: no limit (behind a proxy that cannot say who its clients are).
    unlimited: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket's tokens at `now`, refilled at `rate` up to `burst`.
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

impl CreateLimiter {
    /// `rate` sessions per second per address, bursts of twice that; 0: unlimited.
    pub(super) fn new(rate: usize) -> CreateLimiter {
        let unlimited = rate == 0;
        let rate = rate.max(1) as f64;
        CreateLimiter { buckets: FxHashMap::default(), rate, burst: 2.0 * rate, unlimited }
    }

    /// Whether `peer` may create a session now; takes a token if so. A request whose peer
    /// address is unknown (the socket is already gone) is allowed: it cannot be answered anyway.
    pub(super) fn allow(&mut self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(peer) = peer.map(client_of).filter(|_| !self.unlimited) else { return true };
        let (rate, burst) = (self.rate, self.burst);
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_ADDRESSES {
            // Forget the addresses that are idle again (a full bucket says nothing).
            self.buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
            if self.buckets.len() >= MAX_ADDRESSES {
                self.buckets.clear();
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket { tokens: burst, at: now });
        let tokens = bucket.refilled(now, rate, burst);
        let allowed = tokens >= 1.0;
        *bucket = Bucket { tokens: if allowed { tokens - 1.0 } else { tokens }, at: now };
        allowed
    }

    /// Addresses tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The client an address stands for: an IPv4 address, or an IPv6 address's /64 (one host
/// commonly holds a whole /64, so counting single IPv6 addresses would not limit anyone).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n)))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut limiter = CreateLimiter::new(10);
        let t0 = Instant::now();
        let allowed = (0..25).filter(|_| limiter.allow(ip(1), t0)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(limiter.allow(ip(2), t0), "another address has its own bucket");
        assert!(!limiter.allow(ip(1), t0 + Duration::from_millis(50)), "half a token is not one");
        assert!(limiter.allow(ip(1), t0 + Duration::from_millis(100)), "one token per 1/rate s");
        assert!(limiter.allow(None, t0), "no address: allowed");
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut limiter = CreateLimiter::new(0);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.allow(ip(1), t0)));
        assert_eq!(limiter.tracked(), 0, "nothing is tracked");
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let mut limiter = CreateLimiter::new(1);
        let t0 = Instant::now();
        let v6 = |low: u16| Some(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, low)));
        assert!(limiter.allow(v6(1), t0) && limiter.allow(v6(2), t0), "a burst of two");
        assert!(!limiter.allow(v6(3), t0), "another address in the same /64 shares the bucket");
        let other = Some(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1)));
        assert!(limiter.allow(other, t0), "another /64 has its own");
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_idle_addresses_first() {
        let mut limiter = CreateLimiter::new(1);
        let t0 = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 {
            assert!(limiter.allow(ip(n), t0));
        }
        assert_eq!(limiter.tracked(), MAX_ADDRESSES);
        // Two seconds later every bucket is full again: the newcomer replaces the idle ones.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.allow(ip(1 << 20), later));
        assert_eq!(limiter.tracked(), 1);
        // A flood of busy addresses clears the table rather than growing it.
        for n in 0..MAX_ADDRESSES as u32 {
            limiter.allow(ip(n), later);
        }
        assert!(limiter.tracked() <= MAX_ADDRESSES);
    }
}
