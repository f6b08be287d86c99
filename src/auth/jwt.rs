//! JWT access tokens: the proxy as an OAuth 2.1 resource server, or behind
//! Cloudflare Access (transport.md §5; RFC 7519, RFC 8725).
//!
//! Owns: the signing keys (a JWKS fetched at start and cached, or an HS256
//! secret), the choice of algorithm, and the claim checks (`iss`, `aud` as
//! a string or an array, `exp` and `nbf` with 60 s of leeway, `sub`).
//!
//! The algorithm is never taken from the token alone: each key says which
//! algorithms it may verify (from its JWK `alg`, else from its type and
//! curve), and a token is checked only with a key that allows the token's
//! `alg`. So `alg: none` finds no key, and an HS256 token "signed" with the
//! RSA public key finds no HMAC key (a JWKS's symmetric `oct` keys are
//! ignored). An unknown `kid` triggers one refetch of the JWKS, at most once
//! per [`DEFAULT_JWKS_MIN_REFETCH`]: a flood of made-up kids costs one fetch
//! a minute, not one per request. A token without a `kid` is checked only
//! when one key of the set fits its algorithm, so that it costs one
//! signature check, not one per key.
//!
//! A refused token that is this proxy's issuer's (its signature checked
//! out, or it names one of the configured issuers or audiences) is
//! [`JwtError::Refused`], so that the caller offers it to no other login
//! method.
//!
//! A verified token is remembered (keyed by its SHA-256, never the token
//! itself) until it expires or for [`VERIFIED_CACHE_TTL`], whichever comes
//! first, so a client's repeated requests cost a hash, not a signature check.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Uri;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::fetch::Fetcher;

/// Leeway on `exp` and `nbf` for clock skew.
pub const LEEWAY_SECS: u64 = 60;
/// Least time between two JWKS fetches caused by unknown key ids.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// A cached JWKS is refreshed (on the next request) once this old.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Longest a verified token is remembered.
pub const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);
/// Most verified tokens remembered.
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Where the token travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer <jwt>` (the default).
    Bearer,
    /// A header of its own, e.g. `cf-access-jwt-assertion`; a bearer token
    /// is still accepted when the header is absent (local development).
    Named(http::HeaderName),
}

/// JWT settings.
#[derive(Clone)]
pub struct JwtConfig {
    /// Where to fetch signing keys.
    pub jwks_url: Option<Uri>,
    /// HS256 shared secret (`--jwt-secret-file`).
    pub secret: Option<Vec<u8>>,
    /// Accepted `iss` values (empty: any).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (never empty: a token for someone else is refused).
    pub audiences: Vec<String>,
    /// Where the token travels.
    pub header: TokenHeader,
    /// Least time between refetches on unknown kids.
    pub jwks_min_refetch: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("jwks_url", &self.jwks_url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("header", &self.header)
            .finish()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwtError {
    /// The token is bad, and nothing says it is this proxy's: the reason
    /// is for the log and the 401's `error_description` (it never repeats
    /// the token).
    #[error("{0}")]
    Invalid(&'static str),
    /// A token of this proxy's issuer, refused: signed by one of its keys
    /// (but expired, for another audience…), or naming one of its issuers
    /// or audiences. Such a token is never offered to another login method
    /// (forward auth would send it to somebody else's API).
    #[error("{0}")]
    Refused(&'static str),
    /// The keys could not be fetched: 503, never an accept.
    #[error("signing keys unavailable: {0}")]
    Unavailable(String),
}

/// A token without a `sub` but with a `common_name` is a Cloudflare Access
/// service token: its principal is the common name under a login method of
/// its own ([`crate::auth::AuthMethod::ServiceToken`], written
/// `service-token:<common name>`), never a `sub`. Earlier versions made it
/// the JWT `sub` `service-token:<common name>`, which a user's token could
/// spell; a `sub` starting with this prefix is refused, so that what was
/// stored under `jwt:service-token:…` then can never be reached by a user.
pub const SERVICE_TOKEN_PREFIX: &str = "service-token:";

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sub`, or a service token's `common_name`.
    pub subject: String,
    /// Whether `subject` is a service token's `common_name`: a principal of
    /// its own login method, which no `sub` can name.
    pub service_token: bool,
    /// `email`, when present.
    pub email: Option<String>,
    /// `scope` (space-separated) or `scp` (array).
    pub scopes: Vec<String>,
    exp: u64,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    /// Cloudflare Access service tokens carry no user: an empty `sub`, and
    /// the token's client id here.
    #[serde(default)]
    common_name: Option<String>,
    exp: u64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<ScopeList>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    One(String),
    Many(Vec<String>),
}

struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

/// Verifies tokens.
pub struct JwtVerifier {
    config: JwtConfig,
    fetcher: Fetcher,
    keys: RwLock<Arc<KeySet>>,
    secret: Option<DecodingKey>,
    /// Serialises fetches; holds when the last one was attempted.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    verified: Mutex<HashMap<[u8; 32], (Verified, Instant)>>,
    /// JWKS fetches so far (for tests and `/health`).
    fetches: std::sync::atomic::AtomicU64,
    /// Requests refused because no keys could be had, as the log tells
    /// them (not one line per request).
    outage: crate::logging::Outage,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn algorithms_of(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        // A named algorithm is the only one the key may verify.
        return Algorithm::from_str(&format!("{alg:?}"))
            .ok()
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .into_iter()
            .collect();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => vec![],
    }
}

/// Parses a JWKS document into verification keys; symmetric, encryption
/// and unusable keys are left out.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in set.keys.iter().take(MAX_KEYS) {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let algorithms = algorithms_of(jwk);
        if algorithms.is_empty() {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            }),
            Err(e) => {
                warn!(kid = ?jwk.common.key_id, error = %e, "skipping a JWKS key that cannot be used")
            }
        }
    }
    Ok(keys)
}

/// Whether `jsonwebtoken` refused a token after its signature checked
/// out: then the token was signed by the key it was checked with. (The
/// header was parsed before, so a JSON error here is the claims'.)
fn after_signature(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ExpiredSignature
            | ErrorKind::ImmatureSignature
            | ErrorKind::InvalidIssuer
            | ErrorKind::InvalidAudience
            | ErrorKind::InvalidSubject
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
    )
}

/// The claims a token says it has, unverified: only ever used to hold a
/// token back, never to accept one.
#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "token issuer not accepted",
        ErrorKind::InvalidAudience => "token audience is not this server",
        ErrorKind::InvalidSignature => "token signature invalid",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp, aud, iss)",
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted for this key",
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => "token claims malformed",
        _ => "token malformed",
    }
}

impl JwtVerifier {
    /// A verifier; call [`JwtVerifier::prefetch`] at start.
    pub fn new(config: JwtConfig, fetcher: Fetcher) -> Result<JwtVerifier, String> {
        let secret = match &config.secret {
            Some(s) => Some(DecodingKey::from_secret(s).map_err(|e| e.to_string())?),
            None => None,
        };
        if let Some(url) = &config.jwks_url {
            super::fetch::warn_if_cleartext("--jwt-jwks-url (the keys that sign tokens)", url);
        }
        Ok(JwtVerifier {
            config,
            fetcher,
            keys: RwLock::new(Arc::default()),
            secret,
            refetch: tokio::sync::Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
            fetches: Default::default(),
            outage: crate::logging::Outage::new("JWKS endpoint"),
        })
    }

    /// A verifier holding the keys of `jwks` as just fetched, that never
    /// fetches (its last fetch is now, and `config.jwks_min_refetch` should
    /// be long): for the fuzz targets, which have no network.
    #[cfg(fuzzing)]
    pub(crate) fn with_jwks(config: JwtConfig, jwks: &[u8]) -> Result<JwtVerifier, String> {
        let v = JwtVerifier::new(config, Fetcher::new(Duration::from_secs(1)))?;
        *v.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(KeySet {
            keys: parse_jwks(jwks)?,
            fetched: Some(Instant::now()),
        });
        *v.refetch.try_lock().map_err(|e| e.to_string())? = Some(Instant::now());
        Ok(v)
    }

    /// Where tokens travel.
    pub fn header(&self) -> &TokenHeader {
        &self.config.header
    }

    /// JWKS fetches so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the JWKS once at start; a failure is logged and retried on demand.
    pub async fn prefetch(&self) {
        if self.config.jwks_url.is_none() {
            return;
        }
        // Serialised with refetches, but not counted against their
        // interval: a key rotated just after start is still found at once.
        let _guard = self.refetch.lock().await;
        let mut not_counted = None;
        if let Err(e) = self.fetch_keys(&mut not_counted).await {
            warn!(error = %e, "fetching the JWKS at start failed; will retry when a token needs it");
        }
    }

    async fn fetch_keys(&self, last: &mut Option<Instant>) -> Result<(), JwtError> {
        let Some(url) = &self.config.jwks_url else {
            return Err(JwtError::Invalid("unknown signing key"));
        };
        *last = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, _, body) = self
            .fetcher
            .get(url, http::HeaderMap::new())
            .await
            .map_err(|e| JwtError::Unavailable(e.to_string()))?;
        if !status.is_success() {
            return Err(JwtError::Unavailable(format!(
                "JWKS endpoint answered {status}"
            )));
        }
        let keys = parse_jwks(&body).map_err(JwtError::Unavailable)?;
        // A set with no key the proxy can use is taken as a broken
        // endpoint, like a garbage answer: cached keys keep working. An
        // issuer retires a key by publishing its successor first, never by
        // emptying the set; taken as it is, one bad answer from the
        // endpoint would refuse every user until the next refetch.
        if keys.is_empty() {
            return Err(JwtError::Unavailable(
                "the JWKS holds no signing key the proxy can use".into(),
            ));
        }
        info!(keys = keys.len(), "JWKS fetched");
        self.outage.answered();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(KeySet {
            keys,
            fetched: Some(Instant::now()),
        });
        Ok(())
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_audience(&self.config.audiences);
        // `sub` is checked in `check`: a Cloudflare Access service token
        // names its holder in `common_name` instead.
        let mut required = vec!["exp", "aud"];
        if !self.config.issuers.is_empty() {
            v.set_issuer(&self.config.issuers);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// What `token` was verified as, if it was and is still remembered: a
    /// token no guesser could have made (its signature checked out), so
    /// the failure limiter need not stand in its way, and the caller need
    /// not ask [`JwtVerifier::verify`] (which would hash it again).
    pub fn remembered(&self, token: &str) -> Option<Verified> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.cached(&digest)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Verified> {
        let cache = crate::lock(&self.verified);
        let (v, until) = cache.get(digest)?;
        (Instant::now() < *until && now_unix() <= v.exp.saturating_add(LEEWAY_SECS))
            .then(|| v.clone())
    }

    fn remember(&self, digest: [u8; 32], v: &Verified) {
        let mut cache = crate::lock(&self.verified);
        if cache.len() >= VERIFIED_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (v.clone(), Instant::now() + VERIFIED_CACHE_TTL));
    }

    /// Whether `token` names one of this proxy's issuers (`--jwt-issuer`)
    /// or audiences in its claims, whoever signed it.
    fn names_us(&self, token: &str) -> bool {
        use base64::Engine;
        let Some(payload) = token.split('.').nth(1) else {
            return false;
        };
        let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return false;
        };
        let Ok(claims) = serde_json::from_slice::<Unverified>(&json) else {
            return false;
        };
        let one_of = |v: &Option<serde_json::Value>, ours: &[String]| match v {
            Some(serde_json::Value::String(s)) => ours.contains(s),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .any(|s| s.as_str().is_some_and(|s| ours.iter().any(|o| o == s))),
            _ => false,
        };
        one_of(&claims.iss, &self.config.issuers) || one_of(&claims.aud, &self.config.audiences)
    }

    /// Verifies `token`. A refusal is [`JwtError::Refused`] when the token
    /// is this proxy's issuer's (signed by its key, or naming its issuer
    /// or audience), so that it goes no further.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        match self.verify_signed(token).await {
            Err(JwtError::Invalid(why)) if self.names_us(token) => Err(JwtError::Refused(why)),
            Err(JwtError::Unavailable(why)) => {
                self.outage.failed(&why);
                Err(JwtError::Unavailable(why))
            }
            r => r,
        }
    }

    async fn verify_signed(&self, token: &str) -> Result<Verified, JwtError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.cached(&digest) {
            return Ok(v);
        }
        // `alg: none` and unknown algorithms fail here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| JwtError::Invalid("token malformed or its algorithm is not accepted"))?;
        let v = if matches!(header.alg, Algorithm::HS256) {
            let key = self
                .secret
                .as_ref()
                .ok_or(JwtError::Invalid("token algorithm not accepted"))?;
            self.check(token, key, header.alg)?
        } else if matches!(header.alg, Algorithm::HS384 | Algorithm::HS512) {
            return Err(JwtError::Invalid("token algorithm not accepted"));
        } else {
            self.verify_with_jwks(token, header.alg, header.kid.as_deref())
                .await?
        };
        self.remember(digest, &v);
        Ok(v)
    }

    async fn verify_with_jwks(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Verified, JwtError> {
        if self.config.jwks_url.is_none() {
            return Err(JwtError::Invalid("token algorithm not accepted"));
        }
        let mut set = self.key_set();
        let stale = set.fetched.is_none_or(|t| t.elapsed() > JWKS_MAX_AGE);
        let known = |set: &KeySet| {
            set.keys
                .iter()
                .any(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
        };
        // Keys that still check this token serve it while another request
        // refreshes them: a JWKS endpoint that hangs stalls one request,
        // not every request behind the lock.
        let refresh = if !known(&set) {
            Some(self.refetch.lock().await)
        } else if stale {
            self.refetch.try_lock().ok()
        } else {
            None
        };
        if let Some(mut last) = refresh {
            // Another request may have fetched while this one waited.
            let fresh = self.key_set();
            let may_fetch = last.is_none_or(|t| t.elapsed() >= self.config.jwks_min_refetch);
            let fresh_enough =
                known(&fresh) && fresh.fetched.is_some_and(|t| t.elapsed() <= JWKS_MAX_AGE);
            set = if fresh_enough {
                fresh
            } else if may_fetch {
                // Boxed: rare, and every token check's future would carry
                // an HTTP fetch's state otherwise.
                match Box::pin(self.fetch_keys(&mut last)).await {
                    Ok(()) => self.key_set(),
                    Err(e) if fresh.keys.is_empty() => return Err(e),
                    // Keys we still have keep working while the endpoint is down.
                    Err(e) => {
                        warn!(error = %e, "refreshing the JWKS failed; keeping the cached keys");
                        fresh
                    }
                }
            } else if fresh.fetched.is_none() {
                return Err(JwtError::Unavailable(
                    "the JWKS could not be fetched yet".into(),
                ));
            } else {
                fresh
            };
        }
        let candidates: Vec<_> = set
            .keys
            .iter()
            .filter(|k| {
                kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)) && k.algorithms.contains(&alg)
            })
            .collect();
        // A token without a kid would be checked against every key (up to
        // MAX_KEYS signature checks, on the runtime's thread, for one
        // made-up token). OpenID Connect Core 10.1 requires a kid when
        // the set has several keys; one key of its algorithm is enough.
        if kid.is_none() && candidates.len() > 1 {
            return Err(JwtError::Invalid(
                "token has no kid and the JWKS has several keys for its algorithm",
            ));
        }
        let mut error = JwtError::Invalid("unknown signing key");
        for k in candidates {
            match self.check(token, &k.key, alg) {
                // Signed with this key: no other key would say otherwise.
                Err(JwtError::Invalid(why)) => error = JwtError::Invalid(why),
                r => return r,
            }
        }
        Err(error)
    }

    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Verified, JwtError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation(alg)).map_err(|e| {
                match after_signature(e.kind()) {
                    true => JwtError::Refused(describe(e.kind())),
                    false => JwtError::Invalid(describe(e.kind())),
                }
            })?;
        // From here on the signature is good: every refusal is `Refused`.
        let c = data.claims;
        let (subject, service_token) = match (c.sub.is_empty(), c.common_name) {
            (false, _) if c.sub.starts_with(SERVICE_TOKEN_PREFIX) => {
                return Err(JwtError::Refused(
                    "token sub starts with service-token:, which names service tokens only",
                ));
            }
            (false, _) => (c.sub, false),
            (true, Some(name)) if !name.is_empty() => (name, true),
            _ => {
                return Err(JwtError::Refused(
                    "token has no sub (nor a service token's common_name)",
                ));
            }
        };
        if subject.len() > super::principal::MAX_PRINCIPAL_BYTES {
            return Err(JwtError::Refused(
                "token sub (or common_name) is longer than 512 bytes",
            ));
        }
        let mut scopes: Vec<String> = c
            .scope
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        match c.scp {
            Some(ScopeList::One(s)) => scopes.extend(s.split_whitespace().map(String::from)),
            Some(ScopeList::Many(v)) => scopes.extend(v),
            None => {}
        }
        Ok(Verified {
            subject,
            service_token,
            email: c.email,
            scopes,
            exp: c.exp,
        })
    }
}

/// Whether a credential looks like a JWS compact token (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let b64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut n = 0;
    token.split('.').all(|p| {
        n += 1;
        n <= 3 && b64url(p)
    }) && n == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifier for audience `aud1` whose JWKS (at an address nothing
    /// answers) was fetched at `fetched` and held `jwks`.
    fn verifier_with_keys(jwks: &str, fetched: Instant) -> JwtVerifier {
        let v = JwtVerifier::new(
            JwtConfig {
                jwks_url: Some("http://127.0.0.1:9/jwks".parse().unwrap()),
                secret: None,
                issuers: vec![],
                audiences: vec!["aud1".into()],
                header: TokenHeader::Bearer,
                jwks_min_refetch: Duration::from_secs(60),
            },
            Fetcher::new(Duration::from_secs(5)),
        )
        .unwrap();
        *v.keys.write().unwrap() = Arc::new(KeySet {
            keys: parse_jwks(jwks.as_bytes()).unwrap(),
            fetched: Some(fetched),
        });
        v
    }

    /// Regression from review: once the keys were over an hour old, every
    /// JWT request queued behind the one refreshing them, so a JWKS
    /// endpoint that hangs stalled all of them. A token whose key is
    /// still known is checked at once while another request refreshes.
    #[tokio::test]
    async fn a_known_key_serves_while_another_request_refreshes_the_jwks() {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let Some(long_ago) = Instant::now().checked_sub(JWKS_MAX_AGE * 2) else {
            eprintln!("skipped: the monotonic clock is younger than two hours");
            return;
        };
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            b64(sk.verifying_key().as_bytes())
        );
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let claims = serde_json::json!({"sub":"alice","aud":"aud1","exp": now_unix() + 600});
        let der = sk.to_pkcs8_der().unwrap();
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap();
        let v = verifier_with_keys(&jwks, long_ago);
        // Another request is refreshing (and the endpoint hangs).
        let _refreshing = v.refetch.lock().await;
        let checked = tokio::time::timeout(Duration::from_secs(1), v.verify(&token))
            .await
            .expect("checked without waiting for the refresh");
        assert_eq!(checked.unwrap().subject, "alice");
    }

    /// Regression: a JWKS endpoint that answered an empty set (or one of
    /// keys the proxy cannot use) replaced the cached keys with nothing,
    /// so every token was refused (401) until the next refetch. Such an
    /// answer is now a failed fetch: the cached keys keep working.
    #[tokio::test]
    async fn an_empty_jwks_does_not_wipe_the_cached_keys() {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits = served.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"sym"}]}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (cached, unknown) = (
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        );
        let sign = |k: &ed25519_dalek::SigningKey, kid: &str| {
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.into());
            let claims = serde_json::json!({"sub":"alice","aud":"aud1","exp": now_unix() + 600});
            let der = k.to_pkcs8_der().unwrap();
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            )
            .unwrap()
        };
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            b64(cached.verifying_key().as_bytes())
        );
        let mut v = verifier_with_keys(&jwks, Instant::now());
        v.config.jwks_url = Some(format!("http://{addr}/jwks").parse().unwrap());
        // An unknown kid makes the proxy fetch the set again.
        assert!(v.verify(&sign(&unknown, "k2")).await.is_err());
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the set was fetched"
        );
        let checked = v.verify(&sign(&cached, "k1")).await;
        assert_eq!(
            checked
                .expect("the cached key still checks its tokens")
                .subject,
            "alice"
        );
    }

    /// A kid-less token is checked only when one key of the set fits its
    /// algorithm: otherwise one made-up token would cost a signature check
    /// per key (up to 64).
    #[tokio::test]
    async fn a_token_without_kid_is_refused_when_several_keys_could_check_it() {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let keys: Vec<_> = (1..=3u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
            .collect();
        let jwk = |k: &ed25519_dalek::SigningKey, kid: &str| {
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{}"}}"#,
                b64(k.verifying_key().as_bytes())
            )
        };
        let claims = serde_json::json!({"sub":"alice","aud":"aud1","exp": now_unix() + 600});
        // Signed by the last key, without a kid.
        let der = keys[2].to_pkcs8_der().unwrap();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::EdDSA),
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap();
        let verifier = |jwks: String| verifier_with_keys(&jwks, Instant::now());
        let all = keys
            .iter()
            .enumerate()
            .map(|(i, k)| jwk(k, &format!("k{i}")))
            .collect::<Vec<_>>()
            .join(",");
        let several = verifier(format!(r#"{{"keys":[{all}]}}"#));
        let refused = several.verify(&token).await.unwrap_err();
        assert!(refused.to_string().contains("no kid"), "{refused}");
        let one = verifier(format!(r#"{{"keys":[{}]}}"#, jwk(&keys[2], "only")));
        assert_eq!(one.verify(&token).await.unwrap().subject, "alice");
    }

    #[test]
    fn jwt_shape_is_recognised() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("0123456789abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b+.c"));
    }

    #[test]
    fn jwks_symmetric_and_encryption_keys_are_ignored() {
        let keys = parse_jwks(
            br#"{"keys":[
              {"kty":"oct","k":"c2VjcmV0","kid":"sym"},
              {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},
              {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
              {"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB","kid":"rsa","alg":"RS256"}
            ]}"#,
        )
        .unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["ed", "rsa"]);
        assert_eq!(keys[0].algorithms, vec![Algorithm::EdDSA]);
        assert_eq!(keys[1].algorithms, vec![Algorithm::RS256]);
    }
}
