//! Who a request comes from: a [`Principal`] and how it proved it
//! ([`AuthMethod`]). Plain data, below everything that authenticates,
//! audits or keys sessions by it.

use std::sync::Arc;

/// The longest principal name taken, in bytes: a login, an email address
/// (at most 254), a key name or a subject id fits many times over. A name
/// is kept in every session, stateless request and cache entry of its
/// principal and written in every log and audit line, so one of
/// megabytes (a `sub` in a large token, a forward-auth answer echoing
/// what a user typed) is refused rather than carried.
pub const MAX_PRINCIPAL_BYTES: usize = 512;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// No authentication is configured: everyone is the same anonymous principal.
    None,
    /// A named API key.
    ApiKey,
    /// A JWT's `sub`: a user.
    Jwt,
    /// A Cloudflare Access service token (a JWT with an empty `sub` and the
    /// token's client id in `common_name`): a machine. A login method of
    /// its own, so that no user's `sub` can name it.
    ServiceToken,
    /// What the forward-auth endpoint answered.
    Forward,
}

impl AuthMethod {
    /// The name used in logs, the audit log and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ApiKey => "api-key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::ServiceToken => "service-token",
            AuthMethod::Forward => "forward",
        }
    }
}

/// Who a request comes from. Two principals are the same when method and
/// name agree: a key named `alice` and a JWT whose `sub` is `alice` are
/// different principals. Where a principal is one string (`Display`, the
/// store's name), it is `<method>:<name>`; no method's name has a `:`, so
/// two principals never share a string either.
#[derive(Debug, Clone)]
pub struct Principal {
    pub(super) method: AuthMethod,
    pub(super) name: Arc<str>,
    pub(super) email: Option<Arc<str>>,
}

impl PartialEq for Principal {
    fn eq(&self, other: &Principal) -> bool {
        self.method == other.method && self.name == other.name
    }
}

impl Eq for Principal {}

impl std::hash::Hash for Principal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.method.hash(state);
        self.name.hash(state);
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.method.as_str(), self.name)
    }
}

impl Principal {
    /// The principal of every request when no authentication is configured.
    pub fn anonymous() -> Principal {
        Principal::new(AuthMethod::None, "anonymous")
    }

    /// A principal.
    pub fn new(method: AuthMethod, name: &str) -> Principal {
        Principal {
            method,
            name: name.into(),
            email: None,
        }
    }

    /// How it authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// Its name (key name, `sub`, service token client id, forward-auth answer).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A JWT's `email`, when it had one.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
}
