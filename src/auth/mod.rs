//! Who is asking: every MCP request is authenticated to a [`Principal`] or
//! refused with a typed [`AuthError`] (transport.md §5, §6; spec
//! `basic/authorization`, `basic/security_best_practices`).
//!
//! Methods, any of which may be combined; the first that accepts wins:
//! - API keys ([`keys`]), as `Authorization: Bearer` or `X-API-Key`;
//! - JWT access tokens ([`jwt`]): JWKS or HS256, in `Authorization: Bearer`
//!   or a header of their own (`cf-access-jwt-assertion`);
//! - forward auth ([`forward`]): an upstream API vouches for the bearer.
//!
//! Also here: failed-auth rate limiting per client IP ([`limit`]), the
//! RFC 9728 metadata and challenges ([`metadata`]), the Origin, Host and
//! fetch-metadata checks against DNS rebinding and cross-site use
//! ([`access`]), the outbound client for JWKS and forward auth
//! ([`fetch`]), whose outages are logged as [`crate::logging::Outage`]s.
//!
//! The principal owns what it creates: sessions are looked up as
//! (principal, id), 2026-07-28 clients get a child per principal. The
//! credential itself goes nowhere: not to the child (argv, env, stdin), not
//! to a log line, not to an error message.

pub mod access;
pub mod fetch;
pub mod forward;
pub mod jwt;
pub mod keys;
pub mod limit;
pub mod metadata;
pub mod principal;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, header};
use ipnet::IpNet;

pub use access::Access;

use crate::audit::Audit;
use forward::{ForwardAuth, ForwardConfig, ForwardError};
use jwt::{JwtConfig, JwtError, JwtVerifier, TokenHeader};
use keys::{ApiKey, KeyRing};
use limit::FailureLimiter;
pub use limit::SharedLimiter;
use metadata::ResourceMetadata;
pub use principal::{AuthMethod, Principal};

/// Why a request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No credential at all: 401.
    #[error("authentication required: send Authorization: Bearer <token> or X-API-Key")]
    Missing,
    /// A credential that does not authenticate: 401.
    #[error("invalid credential: {0}")]
    Invalid(&'static str),
    /// Authenticated, but the token lacks a `--required-scope`: 403.
    #[error("the token lacks a required scope")]
    InsufficientScope,
    /// Too many failed attempts from this IP: 429.
    #[error("too many failed authentication attempts; retry later")]
    RateLimited(Duration),
    /// The JWKS or forward-auth endpoint could not answer: 503.
    #[error("authentication is temporarily unavailable")]
    Unavailable,
}

/// A refusal with the `WWW-Authenticate` challenge it carries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct AuthRefusal {
    /// Why.
    pub error: AuthError,
    /// The `WWW-Authenticate` value for 401 and 403.
    pub challenge: String,
}

/// Authentication settings.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Named API keys.
    pub api_keys: Vec<ApiKey>,
    /// JWT validation.
    pub jwt: Option<JwtConfig>,
    /// Forward auth.
    pub forward: Option<ForwardConfig>,
    /// `--auth-server`: authorization servers named in the RFC 9728 metadata.
    pub auth_servers: Vec<String>,
    /// `--public-url`: the URL clients reach the proxy at.
    pub public_url: Option<String>,
    /// `--required-scope`: scopes every JWT must carry.
    pub required_scopes: Vec<String>,
    /// `--auth-failure-limit`: failures per IP per minute (0: off).
    pub failure_limit: u32,
    /// `--trusted-proxy`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where the failure limiter is kept: every server of a proxy uses the
    /// same one (`[auth]` is global), so a client cannot multiply its
    /// budget by the number of servers or reloads.
    pub limiter: limit::SharedLimiter,
}

impl AuthConfig {
    /// Whether `name` (lowercase) is a header that may carry a client's
    /// credential for the proxy itself: the bearer token, an API key, a
    /// cookie, or the configured JWT header (`--jwt-header`). Such a header
    /// never reaches a child (that would be token passthrough, which the
    /// MCP authorization spec forbids).
    pub fn carries_client_credential(&self, name: &str) -> bool {
        matches!(
            name,
            "authorization" | "proxy-authorization" | "x-api-key" | "cookie"
        ) || matches!(
            self.jwt.as_ref().map(|j| &j.header),
            Some(jwt::TokenHeader::Named(h)) if h.as_str() == name
        )
    }

    /// Whether any method is configured.
    pub fn is_enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some() || self.forward.is_some()
    }

    /// A digest of the secrets that this configuration's `Debug` shows as
    /// `<redacted>`: the API keys' values and the HS256 secret. Whoever
    /// tells two configurations apart by their `Debug` text (a reload,
    /// [`crate::servers`]) compares this too; else a key given a new value
    /// under its old name, or a new `--jwt-secret-file` secret, would look
    /// like no change, and the old value would keep working.
    pub fn secrets_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        // Length-prefixed: no two lists digest alike by concatenation.
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        for k in &self.api_keys {
            part(k.name.as_bytes());
            part(k.key.as_bytes());
        }
        match self.jwt.as_ref().and_then(|j| j.secret.as_deref()) {
            Some(secret) => {
                part(b"jwt-secret");
                part(secret);
            }
            None => part(b"no jwt-secret"),
        }
        h.finalize().into()
    }

    /// The configured methods, for `/health` and the start line.
    pub fn modes(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.api_keys.is_empty() {
            m.push("api-key");
        }
        if self.jwt.is_some() {
            m.push("jwt");
        }
        if self.forward.is_some() {
            m.push("forward");
        }
        if m.is_empty() {
            m.push("none");
        }
        m
    }
}

/// Authenticates requests.
pub struct Authenticator {
    config: AuthConfig,
    keys: KeyRing,
    jwt: Option<JwtVerifier>,
    forward: Option<ForwardAuth>,
    metadata: Option<ResourceMetadata>,
    limiter: Arc<FailureLimiter>,
    /// Records of refusals by the limiter: a client past it decides their
    /// rate, so they are sampled (the skipped ones counted in the next).
    limited_records: crate::logging::RateLimit,
    audit: Arc<Audit>,
}

/// Audit records of rate-limited refusals: at once, then per second.
const LIMITED_RECORDS_BURST: u32 = 20;
const LIMITED_RECORDS_PER_SECOND: u32 = 2;

/// `Authorization: Bearer <token>`'s token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

impl Authenticator {
    /// An authenticator for `config`; `mcp_path` places the RFC 9728 document.
    pub fn new(
        config: AuthConfig,
        mcp_path: &str,
        audit: Arc<Audit>,
    ) -> Result<Authenticator, String> {
        let fetcher = fetch::Fetcher::new(fetch::DEFAULT_FETCH_TIMEOUT);
        let jwt = match &config.jwt {
            Some(c) => Some(JwtVerifier::new(c.clone(), fetcher.clone())?),
            None => None,
        };
        let forward = config
            .forward
            .clone()
            .map(|c| ForwardAuth::new(c, fetcher.clone()));
        let metadata = match &config.public_url {
            Some(url) if !config.auth_servers.is_empty() => Some(ResourceMetadata::new(
                url,
                mcp_path,
                config.auth_servers.clone(),
                config.required_scopes.clone(),
            )?),
            _ => None,
        };
        Ok(Authenticator {
            keys: KeyRing::new(&config.api_keys),
            jwt,
            forward,
            metadata,
            limiter: config.limiter.get(config.failure_limit),
            limited_records: crate::logging::RateLimit::new(
                LIMITED_RECORDS_BURST,
                LIMITED_RECORDS_PER_SECOND,
            ),
            audit,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether requests must authenticate.
    pub fn is_enabled(&self) -> bool {
        self.config.is_enabled()
    }

    /// The RFC 9728 metadata, when the proxy is a resource server.
    pub fn metadata(&self) -> Option<&ResourceMetadata> {
        self.metadata.as_ref()
    }

    /// The JWT verifier, if configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The forward-auth checker, if configured.
    pub fn forward(&self) -> Option<&ForwardAuth> {
        self.forward.as_ref()
    }

    /// Work to do once at start: fetch the JWKS.
    pub async fn prefetch(&self) {
        if let Some(j) = &self.jwt {
            j.prefetch().await;
        }
    }

    /// The client's IP as this proxy believes it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        limit::client_ip(peer, headers, &self.config.trusted_proxies)
    }

    fn refusal(&self, error: AuthError) -> AuthRefusal {
        let challenge = match &error {
            AuthError::Invalid(why) => metadata::challenge(
                self.metadata.as_ref(),
                &self.config.required_scopes,
                Some(("invalid_token", why)),
            ),
            AuthError::InsufficientScope => metadata::challenge(
                self.metadata.as_ref(),
                &self.config.required_scopes,
                Some(("insufficient_scope", "the token lacks a required scope")),
            ),
            _ => metadata::challenge(self.metadata.as_ref(), &self.config.required_scopes, None),
        };
        AuthRefusal { error, challenge }
    }

    /// Authenticates a request from `peer` (the TCP peer; `None` in
    /// in-process callers that have none).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthRefusal> {
        self.check(headers, peer, true).await
    }

    /// Authenticates as [`Authenticator::authenticate`] does, but records
    /// no `auth.success`: for a request that another authenticator (a
    /// retiring generation's) authenticates, and audits, next. Failures
    /// are recorded, since nothing else will see the request.
    pub async fn recheck(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(), AuthRefusal> {
        self.check(headers, peer, false).await.map(drop)
    }

    async fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        record_success: bool,
    ) -> Result<Principal, AuthRefusal> {
        if !self.is_enabled() {
            return Ok(Principal::anonymous());
        }
        let ip = peer.map(|p| self.client_ip(p, headers));
        // A JWT verified before cannot be a guess: whoever else at this
        // address has spent its failures does not lock its holder out.
        // Only when it is all the request presents: a key beside it may
        // be one.
        let known = match (&self.jwt, self.jwt_token(headers)) {
            (Some(jwt), Some(token))
                if headers.get("x-api-key").is_none()
                    && bearer(headers).is_none_or(|b| b == token) =>
            {
                jwt.remembered(token)
            }
            _ => None,
        };
        let limited = ip.filter(|_| known.is_none());
        let admission =
            match limited.map(|ip| (ip, self.limiter.admit(ip, self.credential(headers)))) {
                Some((ip, Err(retry))) => {
                    if let Some(skipped) = self.limited_records.admit() {
                        self.audit.auth_rate_limited(ip, skipped);
                    }
                    return Err(self.refusal(AuthError::RateLimited(retry)));
                }
                Some((_, Ok(a))) => Some(a),
                None => None,
            };
        let (result, guessed) = self.identify(headers, known).await;
        match &result {
            Ok(p) => {
                if let Some(ip) = ip.filter(|_| record_success) {
                    self.audit.auth_success(p, ip);
                }
            }
            Err(e) => {
                let reason = match e {
                    AuthError::Invalid(why) => why,
                    AuthError::Missing => "no credential",
                    AuthError::InsufficientScope => "insufficient scope",
                    AuthError::Unavailable => "authentication upstream unavailable",
                    AuthError::RateLimited(_) => "rate limited",
                };
                tracing::debug!(reason, "authentication refused");
                if let (Some(a), 1..) = (admission, guessed) {
                    a.failed_times(guessed);
                }
                if let Some(ip) = ip {
                    self.audit.auth_failure(reason, ip);
                }
            }
        }
        result.map_err(|e| self.refusal(e))
    }

    /// A digest of every credential the request presents (the failure
    /// limiter tells guesses apart by it; it is never stored or logged).
    fn credential(&self, headers: &HeaderMap) -> limit::Credential {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let named = match self.jwt.as_ref().map(|j| j.header()) {
            Some(TokenHeader::Named(name)) => headers.get(name),
            _ => None,
        };
        for v in [
            headers.get(header::AUTHORIZATION),
            headers.get("x-api-key"),
            named,
        ] {
            let v = v.map_or(&[][..], |v| v.as_bytes());
            h.update((v.len() as u64).to_le_bytes());
            h.update(v);
        }
        h.finalize().into()
    }

    /// Who the request is, or why not, and how many failed attempts the
    /// refusal counts as for the limiter: each distinct key the key check
    /// refused (a request with a bearer token and a different `X-API-Key`
    /// is two guesses), at least one for any invalid credential. A 503
    /// counts its refused keys too: else, while forward auth or the JWKS
    /// fails, keys could be guessed without limit (503 meaning "not a key").
    async fn identify(
        &self,
        headers: &HeaderMap,
        known: Option<jwt::Verified>,
    ) -> (Result<Principal, AuthError>, u32) {
        let result = self.identify_by(headers, known).await;
        let keys_refused = if self.keys.is_empty() {
            0
        } else {
            let x_api_key = headers.get("x-api-key").map(|v| v.as_bytes());
            match (bearer(headers).map(str::as_bytes), x_api_key) {
                (Some(b), Some(x)) if b != x => 2,
                (None, None) => 0,
                _ => 1,
            }
        };
        let guessed = match &result {
            Err(AuthError::Invalid(_)) => keys_refused.max(1),
            Err(AuthError::Unavailable) => keys_refused,
            _ => 0,
        };
        (result, guessed)
    }

    /// The JWT the request presents, if it presents one: the configured
    /// header's, else the bearer token, if it has a JWT's shape.
    fn jwt_token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let bearer = bearer(headers);
        let token = match self.jwt.as_ref()?.header() {
            TokenHeader::Bearer => bearer,
            TokenHeader::Named(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .or(bearer),
        };
        token.filter(|t| jwt::looks_like_jwt(t))
    }

    /// `known`: what the request's JWT was verified as before, if it is
    /// remembered (see [`JwtVerifier::remembered`]).
    async fn identify_by(
        &self,
        headers: &HeaderMap,
        known: Option<jwt::Verified>,
    ) -> Result<Principal, AuthError> {
        let bearer = bearer(headers);
        let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        // Every key candidate a request presents must be good. A request
        // is authenticated by one credential; were a second one that is
        // not good ignored, a holder of any good credential could send key
        // guesses beside it that cost no failure, and tell a right guess
        // by the principal the request got.
        if !self.keys.is_empty() {
            if let Some(x) = x_api_key {
                let Some(name) = self.keys.find(x.as_bytes()) else {
                    return Err(AuthError::Invalid("X-API-Key is not a valid key"));
                };
                if bearer.is_some_and(|b| b != x) {
                    return Err(AuthError::Invalid(
                        "Authorization and X-API-Key carry two different credentials",
                    ));
                }
                return Ok(Principal::new(AuthMethod::ApiKey, name));
            }
            if let Some(name) = bearer.and_then(|b| self.keys.find(b.as_bytes())) {
                return Ok(Principal::new(AuthMethod::ApiKey, name));
            }
        }
        let mut error = None;
        let mut unavailable = false;
        // Whether the bearer token may be offered to forward auth: not when
        // the JWT check found it to be this proxy's issuer's token, nor
        // when it could not tell (its keys unavailable). Forward auth would
        // hand it to somebody else's API, which could then replay it here.
        let mut forwardable = true;
        if let Some(jwt) = &self.jwt
            && let Some(token) = self.jwt_token(headers)
        {
            let is_bearer = bearer == Some(token);
            let verified = match known {
                Some(v) => Ok(v),
                None => jwt.verify(token).await,
            };
            match verified {
                // The token came in its own header, and the bearer beside
                // it is no key (see above) nor this token.
                Ok(_) if !self.keys.is_empty() && bearer.is_some() && !is_bearer => {
                    return Err(AuthError::Invalid(
                        "the bearer credential is not a valid key",
                    ));
                }
                Ok(v) => {
                    let missing = self
                        .config
                        .required_scopes
                        .iter()
                        .any(|s| !v.scopes.contains(s));
                    if missing {
                        return Err(AuthError::InsufficientScope);
                    }
                    let method = if v.service_token {
                        AuthMethod::ServiceToken
                    } else {
                        AuthMethod::Jwt
                    };
                    let mut p = Principal::new(method, &v.subject);
                    p.email = v.email.as_deref().map(Arc::from);
                    return Ok(p);
                }
                Err(JwtError::Invalid(why)) => error = Some(AuthError::Invalid(why)),
                Err(JwtError::Refused(why)) => {
                    error = Some(AuthError::Invalid(why));
                    forwardable &= !is_bearer;
                }
                // Logged by the verifier, once per outage.
                Err(JwtError::Unavailable(_)) => {
                    unavailable = true;
                    forwardable &= !is_bearer;
                }
            }
        }
        if let Some(forward) = &self.forward
            && bearer.is_some()
            && forwardable
            && let Some(value) = headers.get(header::AUTHORIZATION)
        {
            match forward.check(value).await {
                Ok(name) => return Ok(Principal::new(AuthMethod::Forward, &name)),
                Err(ForwardError::Denied) => {
                    error.get_or_insert(AuthError::Invalid("refused by the forward-auth endpoint"));
                }
                // Logged by the checker, once per outage.
                Err(ForwardError::Unavailable(_)) => unavailable = true,
            }
        }
        let presented = bearer.is_some()
            || x_api_key.is_some()
            || matches!(self.jwt.as_ref().map(|j| j.header()), Some(TokenHeader::Named(h)) if headers.contains_key(h));
        if unavailable {
            return Err(AuthError::Unavailable);
        }
        match error {
            Some(e) => Err(e),
            None if presented => Err(AuthError::Invalid("unknown credential")),
            None => Err(AuthError::Missing),
        }
    }
}
