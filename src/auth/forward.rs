//! Forward authentication: the client's bearer credential is checked by an
//! upstream API (e.g. its `whoami` endpoint) before the proxy serves it, the
//! pattern of gateways that front one API's MCP server for many users.
//!
//! `GET <--forward-auth-url>` with the client's `Authorization` header and
//! nothing else: 2xx accepts, and the principal is read from the JSON answer
//! at `--forward-auth-principal` (a JSON pointer such as `/loginId`; without
//! one, a digest of the credential names it); 401, 403 and any other 4xx
//! but 408 and 429 refuse (401 to the client); anything else (5xx, 408,
//! 429, a timeout, a refused connection, an answer without the principal)
//! is 503, never an accept. Answers are cached for
//! `--forward-auth-ttl` keyed by the SHA-256 of the credential (the
//! credential itself is never stored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::fetch::{Fetcher, redact_url};
use super::principal::MAX_PRINCIPAL_BYTES;
use crate::logging::Outage;

use crate::lock;

/// How long an answer is reused.
pub const DEFAULT_FORWARD_AUTH_TTL: Duration = Duration::from_secs(60);
/// Most cached answers.
const CACHE_MAX: usize = 10_000;

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The endpoint that vouches for a credential.
    pub url: Uri,
    /// JSON pointer to the principal in a 2xx answer.
    pub principal_pointer: Option<String>,
    /// Cache lifetime of an answer (0: no cache).
    pub ttl: Duration,
}

/// Why forward auth refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The upstream said no (401, 403 or another refusing 4xx).
    #[error("the credential was refused by the forward-auth endpoint")]
    Denied,
    /// The upstream could not say: 503.
    #[error("forward-auth endpoint unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
enum Outcome {
    Accept(String),
    Deny,
}

/// The forward-auth checker.
pub struct ForwardAuth {
    config: ForwardConfig,
    fetcher: Fetcher,
    cache: Mutex<HashMap<[u8; 32], (Outcome, Instant)>>,
    /// Lookups in progress, by credential digest: requests presenting a
    /// credential that is being looked up wait for that answer instead of
    /// asking again (at most one entry per request in progress, see
    /// [`Asking`]).
    asking: Mutex<HashMap<[u8; 32], Lookup>>,
    calls: AtomicU64,
    /// The endpoint's failures, as the log tells them.
    outage: Outage,
    /// Whether a refusal by another 4xx than 401/403 was logged.
    warned_other_refusal: AtomicBool,
}

type Lookup = Arc<tokio::sync::OnceCell<Result<String, ForwardError>>>;

/// One request's hold on the lookup of its credential in
/// [`ForwardAuth::asking`]. Whoever lets go of a lookup last, with its
/// answer or because its request went away (a client that hung up: its
/// future is dropped mid-lookup), takes it out of the table, so the table
/// holds only lookups some request is waiting for.
struct Asking<'a> {
    table: &'a Mutex<HashMap<[u8; 32], Lookup>>,
    key: [u8; 32],
    /// `Some` until dropped.
    lookup: Option<Lookup>,
}

impl<'a> Asking<'a> {
    /// Joins the lookup of `key` in `table`, or starts one.
    fn join(table: &'a Mutex<HashMap<[u8; 32], Lookup>>, key: [u8; 32]) -> Asking<'a> {
        let lookup = lock(table).entry(key).or_default().clone();
        Asking {
            table,
            key,
            lookup: Some(lookup),
        }
    }

    fn lookup(&self) -> &Lookup {
        // Invariant: taken only by `drop`.
        self.lookup.as_ref().expect("held until dropped")
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let mut table = lock(self.table);
        // Let go under the lock, where others join: the last to let go
        // sees the table's own reference alone.
        drop(self.lookup.take());
        if table
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            table.remove(&self.key);
        }
    }
}

/// Whether the endpoint's `status` refuses the credential it was sent:
/// 401, 403 and every other client error but 408 (the endpoint timed out
/// reading the request) and 429 (it limits the proxy), which say nothing
/// of the credential.
fn refuses_credential(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ForwardAuth {
    /// A checker.
    pub fn new(config: ForwardConfig, fetcher: Fetcher) -> ForwardAuth {
        super::fetch::warn_if_cleartext(
            "--forward-auth-url (it receives bearer tokens)",
            &config.url,
        );
        ForwardAuth {
            config,
            fetcher,
            cache: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            outage: Outage::new("forward-auth endpoint"),
            warned_other_refusal: AtomicBool::new(false),
        }
    }

    /// Calls made to the endpoint so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Outcome> {
        let cache = lock(&self.cache);
        cache
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(o, _)| o.clone())
    }

    fn remember(&self, key: [u8; 32], outcome: Outcome) {
        if self.config.ttl.is_zero() {
            return;
        }
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                // Refusals go first: a flood of bad tokens (from many
                // IPs) must not push out the users who got in.
                cache.retain(|_, (o, _)| matches!(o, Outcome::Accept(_)));
            }
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (outcome, Instant::now() + self.config.ttl));
    }

    /// Checks the `Authorization` value `credential`; the principal name.
    pub async fn check(&self, credential: &HeaderValue) -> Result<String, ForwardError> {
        let key: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        match self.cached(&key) {
            Some(Outcome::Accept(p)) => return Ok(p),
            Some(Outcome::Deny) => return Err(ForwardError::Denied),
            None => {}
        }
        let hold = Asking::join(&self.asking, key);
        // The first request asks; the others wait for its answer (if it
        // goes away, one of them asks instead).
        hold.lookup()
            // Boxed: a cache miss is rare, and an HTTP call's state is large.
            .get_or_init(|| Box::pin(self.ask(credential, key)))
            .await
            .clone()
    }

    /// Asks the endpoint about `credential` (digest `key`) and caches a
    /// definite answer; a failure goes to the log as part of an outage
    /// ([`Outage`]), not one line per call.
    async fn ask(&self, credential: &HeaderValue, key: [u8; 32]) -> Result<String, ForwardError> {
        let r = self.call_endpoint(credential, key).await;
        match &r {
            Err(ForwardError::Unavailable(why)) => self.outage.failed(why),
            _ => self.outage.answered(),
        }
        r
    }

    async fn call_endpoint(
        &self,
        credential: &HeaderValue,
        key: [u8; 32],
    ) -> Result<String, ForwardError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, credential.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let shown = redact_url(&self.config.url);
        let (status, _, body) = self
            .fetcher
            .get(&self.config.url, headers)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        if refuses_credential(status) {
            // The request held nothing but the credential, so any client
            // error is the endpoint's refusal of it (some APIs answer 400
            // to a malformed token, 404 to a user they do not know); taken
            // for an outage (503, no failure counted), it would let
            // guesses through without limit. Said once: a wrong URL shows.
            let usual = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            if !usual && !self.warned_other_refusal.swap(true, Ordering::Relaxed) {
                warn!(url = %shown, %status, "forward-auth endpoint refused a credential with a status other than 401/403; taken as a refusal (401), from now on without this warning");
            }
            self.remember(key, Outcome::Deny);
            return Err(ForwardError::Denied);
        }
        if !status.is_success() {
            return Err(ForwardError::Unavailable(format!(
                "{shown} answered {status}"
            )));
        }
        let principal = match &self.config.principal_pointer {
            None => format!("sha256:{}", &hex(&key)[..16]),
            Some(pointer) => {
                let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
                    ForwardError::Unavailable(format!("{shown} answered 2xx without JSON"))
                })?;
                match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) if s.len() > MAX_PRINCIPAL_BYTES => {
                        return Err(ForwardError::Unavailable(format!(
                            "{shown} answered a principal of {} bytes at {pointer}, longer than {MAX_PRINCIPAL_BYTES}",
                            s.len()
                        )));
                    }
                    Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(ForwardError::Unavailable(format!(
                            "{shown} answered without a principal at {pointer}"
                        )));
                    }
                }
            }
        };
        self.remember(key, Outcome::Accept(principal.clone()));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression from review: at the cache's bound, expired entries went
    /// and then everything, so a flood of bad tokens evicted every user's
    /// cached acceptance (and multiplied calls upstream). Refusals go
    /// first now.
    #[test]
    fn a_flood_of_refusals_does_not_evict_accepted_users() {
        let f = ForwardAuth::new(
            ForwardConfig {
                url: "http://127.0.0.1:9/whoami".parse().unwrap(),
                principal_pointer: None,
                ttl: Duration::from_secs(60),
            },
            Fetcher::new(Duration::from_secs(1)),
        );
        let alice = [1u8; 32];
        f.remember(alice, Outcome::Accept("alice".into()));
        for i in 0..CACHE_MAX as u32 + 5 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key[31] = 2;
            f.remember(key, Outcome::Deny);
        }
        assert!(matches!(f.cached(&alice), Some(Outcome::Accept(p)) if p == "alice"));
    }

    /// Regression: a lookup whose request went away (its client hung up
    /// while the endpoint was still answering, and the request's future
    /// was dropped) left its entry in the table of lookups in progress for
    /// ever. With an endpoint slower than a hang-up, a client sending
    /// made-up tokens and hanging up grew the proxy's memory without
    /// bound, and spent no failure doing so.
    #[tokio::test]
    async fn a_lookup_whose_request_went_away_leaves_nothing_behind() {
        // An endpoint that takes connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let f = ForwardAuth::new(
            ForwardConfig {
                url: format!("http://{addr}/whoami").parse().unwrap(),
                principal_pointer: None,
                ttl: Duration::from_secs(60),
            },
            Fetcher::new(Duration::from_secs(5)),
        );
        for i in 0..50 {
            let token = HeaderValue::from_str(&format!("Bearer made-up-{i}")).unwrap();
            let hung_up = tokio::time::timeout(Duration::from_millis(20), f.check(&token)).await;
            assert!(hung_up.is_err(), "the endpoint answered");
        }
        let left = f.asking.lock().unwrap().len();
        silent.abort();
        assert_eq!(left, 0, "lookups of requests that went away stay behind");
    }
}
