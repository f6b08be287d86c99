//! Failed-authentication rate limiting per client IP, and which IP is the
//! client's.
//!
//! Each IP has a token bucket of `--auth-failure-limit` failures a minute
//! (default 10). A failure takes a token; once the bucket is empty, every
//! request from that IP gets 429 with `Retry-After` before its credential
//! is even looked at, so guessing keys or tokens stays slow whatever the
//! attacker sends (except a JWT verified before and still remembered,
//! which no guesser can present: see [`super::Authenticator`]). Other IPs are not affected. A check still in progress
//! (waiting on a forward-auth or JWKS endpoint) holds one of the IP's
//! remaining failures until it ends, so guesses sent all at once are
//! bounded the same way; requests presenting the same credential at once
//! hold one between them, and spend one between them when refused. IPv6
//! clients are limited by their /64.
//!
//! The client IP is the TCP peer, unless the peer is a `--trusted-proxy`
//! (CIDR): then `X-Forwarded-For` is read from the right, skipping trusted
//! hops, and the first untrusted address is the client (an entry may carry
//! a port, as some load balancers write it; an entry that is no address
//! ends the walk at the nearest trusted hop). An untrusted peer's
//! `X-Forwarded-For` is ignored: anyone can write one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;
use tracing::warn;

/// Failed authentications allowed per IP per minute.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 10;
/// Most IPs tracked at once.
const MAX_TRACKED: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Credentials (by digest) with checks not finished yet, and how many
    /// checks each: each credential may still fail, so each holds one of
    /// the bucket's tokens until its checks end. Requests that present
    /// the same credential at once (a client's burst) share one.
    pending: HashMap<Credential, u32>,
}

/// A digest of what a request presented to authenticate.
pub type Credential = [u8; 32];

/// Per-IP failure buckets.
pub struct FailureLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Where the servers of one proxy find their one [`FailureLimiter`]: a
/// client's failures count against one budget whichever server (and
/// whichever generation of it, after a reload) it sends them to. A clone
/// is the same slot. Its `Debug` shows no state, so that a configuration
/// compares equal to itself however many failures it has seen.
#[derive(Clone, Default)]
pub struct SharedLimiter(Arc<Mutex<Option<Arc<FailureLimiter>>>>);

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimiter")
    }
}

impl SharedLimiter {
    /// The limiter of `per_minute` failures in this slot: the one already
    /// there when it has that limit (a reload that changes the limit
    /// starts a new one, its predecessor staying with the generations that
    /// hold it).
    pub fn get(&self, per_minute: u32) -> Arc<FailureLimiter> {
        let mut slot = crate::lock(&self.0);
        match &*slot {
            Some(l) if l.per_minute == per_minute => l.clone(),
            _ => {
                let l = Arc::new(FailureLimiter::new(per_minute));
                *slot = Some(l.clone());
                l
            }
        }
    }
}

/// A check let through by [`FailureLimiter::admit`]. It holds one of its
/// IP's remaining failures until it is dropped, or [`Admission::failed`]
/// spends it: a burst of guesses sent at once cannot all be waiting on a
/// slow forward-auth or JWKS endpoint while the bucket still looks full.
pub struct Admission<'a> {
    limiter: &'a FailureLimiter,
    /// `None` when limiting is off.
    key: Option<(IpAddr, Credential)>,
}

impl Admission<'_> {
    /// The check failed: its token is spent.
    pub fn failed(self) {
        self.failed_times(1);
    }

    /// The check failed `n` guesses at once (a request that presented two
    /// different keys): `n` tokens are spent.
    pub fn failed_times(mut self, n: u32) {
        if let Some(key) = self.key.take() {
            self.limiter.release(key, n);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.release(key, 0);
        }
    }
}

/// The key an IP is limited under: an IPv6 address by its /64 (one
/// subscriber's network hands out any address in it), IPv4 as it is.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl FailureLimiter {
    /// `per_minute` failures a minute per IP; 0 turns limiting off.
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn full(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let rate = self.full() / 60.0;
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(self.full());
        b.updated = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        crate::lock(&self.buckets)
    }

    /// Lets a check from `ip` go ahead while the IP has a failure left
    /// that no other of its checks in progress holds; `Err(retry_after)`
    /// otherwise.
    pub fn admit(&self, ip: IpAddr, credential: Credential) -> Result<Admission<'_>, Duration> {
        if self.per_minute == 0 {
            return Ok(Admission {
                limiter: self,
                key: None,
            });
        }
        let key = limit_key(ip);
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            let (full, rate) = (self.full(), self.full() / 60.0);
            buckets.retain(|_, b| {
                !b.pending.is_empty()
                    || b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < full
            });
            if buckets.len() >= MAX_TRACKED {
                warn!(
                    "too many IPs with failed or unfinished authentications; forgetting those not in progress"
                );
                buckets.retain(|_, b| !b.pending.is_empty());
                if buckets.len() >= MAX_TRACKED {
                    return Err(Duration::from_secs(1));
                }
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.full(),
            updated: now,
            pending: HashMap::new(),
        });
        self.refill(b, now);
        let joins = b.pending.contains_key(&credential);
        let free = b.tokens - b.pending.len() as f64;
        if b.tokens >= 1.0 && (joins || free >= 1.0) {
            *b.pending.entry(credential).or_insert(0) += 1;
            return Ok(Admission {
                limiter: self,
                key: Some((key, credential)),
            });
        }
        if b.tokens >= 1.0 {
            // Out only while its own checks are in progress.
            return Err(Duration::from_secs(1));
        }
        let rate = self.full() / 60.0;
        Err(Duration::from_secs_f64(
            ((1.0 - b.tokens) / rate).ceil().max(1.0),
        ))
    }

    fn release(&self, (key, credential): (IpAddr, Credential), failed: u32) {
        let now = Instant::now();
        let mut buckets = self.lock();
        let Some(b) = buckets.get_mut(&key) else {
            return;
        };
        // A burst presenting one credential spends one failure: the last
        // of its checks to end does (the others can only say the same).
        let last = match b.pending.get_mut(&credential) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                b.pending.remove(&credential);
                true
            }
            None => true,
        };
        self.refill(b, now);
        if failed > 0 && last {
            b.tokens = (b.tokens - f64::from(failed)).max(0.0);
            if b.tokens < 1.0 {
                warn!(ip = %key, "authentication failures over the limit; refusing this IP for a while (--auth-failure-limit)");
            }
        } else if b.pending.is_empty() && b.tokens >= self.full() {
            // Nothing to remember: a full bucket is what a new IP gets.
            buckets.remove(&key);
        }
    }
}

/// One `X-Forwarded-For` entry as an address: `192.0.2.1`, `2001:db8::1`,
/// or with the port some proxies add, `192.0.2.1:4321`, `[2001:db8::1]:4321`.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then(|| v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    let (v4, port) = entry.rsplit_once(':')?;
    is_port(port)
        .then(|| v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The client's IP: the peer, or what trusted proxies say it is; an
/// IPv4-mapped IPv6 address is taken as the IPv4 address it is.
/// `X-Forwarded-For` is walked from the right (the entry the nearest proxy
/// wrote) over trusted hops; the first untrusted address is the client.
/// An entry that is no address ends the walk: what stands left of it was
/// written by nobody this proxy trusts, so the nearest trusted hop is taken.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    // On a dual-stack listener an IPv4 peer is `::ffff:a.b.c.d`: compared
    // as the IPv4 address it is, or no IPv4 `--trusted-proxy` contains it.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let values: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut nearest = peer;
    // Entry by entry, as bytes: a value is not text as a whole when the
    // client's part, left of what the proxies appended, is not.
    let entries = values.iter().rev().flat_map(|v| v.rsplit(|b| *b == b','));
    for entry in entries {
        let addr = std::str::from_utf8(entry).ok().and_then(forwarded_addr);
        match addr.map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(&ip) => nearest = ip,
            Some(ip) => return ip,
            None => return nearest,
        }
    }
    nearest
}

/// Parses `--trusted-proxy` values: CIDRs, or single addresses.
pub fn parse_trusted(values: &[String]) -> Result<Vec<IpNet>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("--trusted-proxy: expected a CIDR such as 10.0.0.0/8, got {v:?}")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_failure_is_refused_and_other_ips_are_not() {
        let l = FailureLimiter::new(10);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..10 {
            l.admit(a, [0; 32]).unwrap().failed();
        }
        let retry = l.admit(a, [0; 32]).err().unwrap();
        assert!(retry >= Duration::from_secs(1) && retry <= Duration::from_secs(6));
        assert!(l.admit(b, [0; 32]).is_ok());
        assert!(FailureLimiter::new(0).admit(a, [0; 32]).is_ok());
    }

    /// Regression from review: checks were counted only once they had
    /// failed, so 60 guesses sent at once to a slow forward-auth endpoint
    /// all reached it. Credentials being checked hold a failure each; a
    /// burst presenting one credential holds one.
    #[test]
    fn checks_in_progress_hold_the_failures_they_may_spend() {
        let l = FailureLimiter::new(10);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let guess = |n: u8| [n; 32];
        let waiting: Vec<_> = (0..10).map(|n| l.admit(a, guess(n)).unwrap()).collect();
        assert_eq!(l.admit(a, guess(99)).err(), Some(Duration::from_secs(1)));
        let same: Vec<_> = (0..20).map(|_| l.admit(a, guess(3)).unwrap()).collect();
        drop(same);
        // Successes give their tokens back; failures spend them.
        let mut waiting = waiting.into_iter();
        drop(waiting.next());
        assert!(l.admit(a, guess(99)).is_ok());
        for w in waiting {
            w.failed();
        }
        assert!(l.admit(a, guess(99)).is_ok(), "one failure left");
        l.admit(a, guess(99)).unwrap().failed();
        assert!(l.admit(a, guess(99)).is_err());
        assert!(
            l.admit(a, guess(5)).is_err(),
            "an empty bucket takes no one"
        );
    }

    #[test]
    fn an_ipv6_network_is_limited_as_one_and_quiet_ips_are_forgotten() {
        let l = FailureLimiter::new(2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.admit(one, [1; 32]).unwrap().failed();
        l.admit(other, [2; 32]).unwrap().failed();
        assert!(l.admit(one, [3; 32]).is_err(), "the /64 is out of failures");
        assert!(l.admit(elsewhere, [3; 32]).is_ok());
        let fine: IpAddr = "198.51.100.1".parse().unwrap();
        drop(l.admit(fine, [3; 32]).unwrap());
        assert!(
            !l.lock().contains_key(&fine),
            "a success leaves nothing behind"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &trusted).to_string(), "198.51.100.7");
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert!(parse_trusted(&["nonsense".into()]).is_err());
    }

    #[test]
    fn forwarded_entries_with_ports_are_addresses_and_garbage_ends_the_walk() {
        assert_eq!(forwarded_addr(" 192.0.2.1:80"), "192.0.2.1".parse().ok());
        assert_eq!(
            forwarded_addr("[2001:db8::1]:443"),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(forwarded_addr("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(forwarded_addr("2001:db8::1"), "2001:db8::1".parse().ok());
        for bad in [
            "unknown",
            "192.0.2.1:",
            "192.0.2.1:x",
            "[::1]x",
            "_hidden",
            "",
        ] {
            assert_eq!(forwarded_addr(bad), None, "{bad}");
        }
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |xff: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", xff.parse().unwrap());
            client_ip(proxy, &h, &trusted).to_string()
        };
        assert_eq!(ip("6.6.6.6, 198.51.100.7:4242"), "198.51.100.7");
        assert_eq!(ip("6.6.6.6, unknown, 10.1.1.1"), "10.1.1.1");
        assert_eq!(ip("6.6.6.6, unknown"), "10.0.0.1");
        assert_eq!(ip("10.2.2.2, 10.1.1.1"), "10.2.2.2");
    }

    /// Regression: a value was read as text as a whole, and one holding a
    /// byte that is not visible ASCII counted as empty, so the client was
    /// the trusted proxy itself. A client who wrote such a byte to its own
    /// `X-Forwarded-For` (the proxy appending its address) had its
    /// failures charged to, and audited as, the proxy's address: a second
    /// budget, its own address hidden, and the proxy's emptied.
    #[test]
    fn a_client_entry_that_is_not_text_does_not_hide_the_address_appended_right_of_it() {
        let trusted = parse_trusted(&["10.0.0.0/8".into()]).unwrap();
        let mut h = HeaderMap::new();
        let value = http::HeaderValue::from_bytes(b"\xff, 198.51.100.7, 10.1.1.1").unwrap();
        h.insert("x-forwarded-for", value);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &trusted).to_string(), "198.51.100.7");
        let value = http::HeaderValue::from_bytes(b"198.51.100.7, \xff").unwrap();
        h.insert("x-forwarded-for", value);
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            proxy,
            "nothing left of it is believed"
        );
    }
}
