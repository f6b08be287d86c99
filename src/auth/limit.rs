//! Failed-authentication rate limiting per client IP, and which IP is the
//! client's.
//!
//! Each IP has a token bucket of `--auth-failure-limit` failures a minute
//! (default 10). A failure takes a token; once the bucket is empty, every
//! request from that IP gets 429 with `Retry-After` before its credential
//! is even looked at, so guessing keys or tokens stays slow whatever the
//! attacker sends. Other IPs are not affected.
//!
//! The client IP is the TCP peer, unless the peer is a `--trusted-proxy`
//! (CIDR): then `X-Forwarded-For` is read from the right, skipping trusted
//! hops, and the first untrusted address is the client. An untrusted peer's
//! `X-Forwarded-For` is ignored: anyone can write one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
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
}

/// Per-IP failure buckets.
pub struct FailureLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimiter {
    /// `per_minute` failures a minute per IP; 0 turns limiting off.
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(self.per_minute));
        b.updated = now;
    }

    /// `Err(retry_after)` when `ip` has used up its failures.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = buckets.get_mut(&ip) else {
            return Ok(());
        };
        let now = Instant::now();
        self.refill(b, now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        Err(Duration::from_secs_f64(
            ((1.0 - b.tokens) / rate).ceil().max(1.0),
        ))
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let full = f64::from(self.per_minute);
            let rate = full / 60.0;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < full
            });
            if buckets.len() >= MAX_TRACKED {
                warn!("too many IPs with failed authentications; forgetting them all");
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: f64::from(self.per_minute),
            updated: now,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        if b.tokens < 1.0 {
            warn!(ip = %ip, "authentication failures over the limit; refusing this IP for a while (--auth-failure-limit)");
        }
    }
}

/// The client's IP: the peer, or what trusted proxies say it is.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
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
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        let retry = l.check(a).unwrap_err();
        assert!(retry >= Duration::from_secs(1) && retry <= Duration::from_secs(6));
        assert!(l.check(b).is_ok());
        assert!(FailureLimiter::new(0).check(a).is_ok());
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
}
