//! Client-side token buckets, one per Coda request class.
//!
//! Coda limits each user per class (figures from Coda's rendered API
//! documentation, "Rate limiting"; the OpenAPI file only has placeholders): reads 100 / 6 s, writes 10 / 6 s, doc-content
//! writes 5 / 10 s, listing docs 4 / 6 s, analytics 100 / 6 s. Waiting here
//! before sending avoids most 429s; the retry loop in the client handles the
//! rest. A doc-content write also spends a write token.
//!
//! The lock is a `std::sync::Mutex` held only to do arithmetic; sleeping
//! happens outside it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The classes Coda rate-limits separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// GET requests in general.
    Read,
    /// POST/PUT/PATCH/DELETE that do not touch doc content.
    Write,
    /// Writes to rows or page content (also spend a [`RequestClass::Write`] token).
    DocContentWrite,
    /// `GET /docs`.
    ListDocs,
    /// `/analytics/...`.
    Analytics,
}

impl RequestClass {
    fn index(self) -> usize {
        self as usize
    }
}

/// Per-class limits: (requests, per window).
pub const DEFAULT_LIMITS: [(RequestClass, u32, Duration); 5] = [
    (RequestClass::Read, 100, Duration::from_secs(6)),
    (RequestClass::Write, 10, Duration::from_secs(6)),
    (RequestClass::DocContentWrite, 5, Duration::from_secs(10)),
    (RequestClass::ListDocs, 4, Duration::from_secs(6)),
    (RequestClass::Analytics, 100, Duration::from_secs(6)),
];

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// Time until one token is available (zero if one is there now).
    fn wait_for_one(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// Snapshot of one bucket for the `coda_rate_limit_status` tool.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    pub class: String,
    pub capacity: u32,
    pub window_seconds: f64,
    pub available: f64,
}

/// The set of buckets shared by every tool call of one server.
#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    buckets: Mutex<Vec<Bucket>>,
}

impl RateLimiter {
    pub fn new(enabled: bool) -> Self {
        let now = Instant::now();
        let buckets = DEFAULT_LIMITS
            .iter()
            .map(|(_, n, window)| Bucket {
                capacity: f64::from(*n),
                per_second: f64::from(*n) / window.as_secs_f64(),
                tokens: f64::from(*n),
                updated: now,
            })
            .collect();
        Self {
            enabled,
            buckets: Mutex::new(buckets),
        }
    }

    fn classes(class: RequestClass) -> &'static [RequestClass] {
        match class {
            RequestClass::DocContentWrite => &[RequestClass::DocContentWrite, RequestClass::Write],
            RequestClass::Read => &[RequestClass::Read],
            RequestClass::Write => &[RequestClass::Write],
            RequestClass::ListDocs => &[RequestClass::ListDocs, RequestClass::Read],
            RequestClass::Analytics => &[RequestClass::Analytics],
        }
    }

    /// Take a token for `class`, or say how long to wait before trying again.
    pub fn try_acquire(&self, class: RequestClass) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        // Invariant: nobody panics while holding this lock (arithmetic only).
        let mut buckets = self.buckets.lock().expect("rate-limit lock poisoned");
        let mut wait = Duration::ZERO;
        for c in Self::classes(class) {
            let b = &mut buckets[c.index()];
            b.refill(now);
            wait = wait.max(b.wait_for_one());
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for c in Self::classes(class) {
            buckets[c.index()].tokens -= 1.0;
        }
        Ok(())
    }

    /// Wait for a token, but not past `deadline`. `Err` carries the wait
    /// that would have been needed.
    pub async fn acquire(&self, class: RequestClass, deadline: Instant) -> Result<(), Duration> {
        loop {
            match self.try_acquire(class) {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    if Instant::now() + wait > deadline {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub fn status(&self) -> Vec<BucketStatus> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate-limit lock poisoned");
        DEFAULT_LIMITS
            .iter()
            .map(|(class, n, window)| {
                let b = &mut buckets[class.index()];
                b.refill(now);
                BucketStatus {
                    class: format!("{class:?}"),
                    capacity: *n,
                    window_seconds: window.as_secs_f64(),
                    available: if self.enabled {
                        (b.tokens * 100.0).floor() / 100.0
                    } else {
                        f64::from(*n)
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_content_writes_stop_after_five_in_a_burst() {
        let rl = RateLimiter::new(true);
        for _ in 0..5 {
            rl.try_acquire(RequestClass::DocContentWrite).unwrap();
        }
        let wait = rl.try_acquire(RequestClass::DocContentWrite).unwrap_err();
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
    }

    #[test]
    fn doc_content_writes_also_spend_write_tokens() {
        let rl = RateLimiter::new(true);
        for _ in 0..5 {
            rl.try_acquire(RequestClass::DocContentWrite).unwrap();
        }
        for _ in 0..5 {
            rl.try_acquire(RequestClass::Write).unwrap();
        }
        assert!(rl.try_acquire(RequestClass::Write).is_err());
    }

    #[test]
    fn disabled_limiter_never_waits() {
        let rl = RateLimiter::new(false);
        for _ in 0..1000 {
            rl.try_acquire(RequestClass::ListDocs).unwrap();
        }
    }
}
