//! Per-user credentials at spawn: the environment variables a server's
//! child takes from the store, filled with the caller's own values.
//!
//! Owns: the lookup for one (principal, server) at spawn time, the refusal
//! when a value is missing (naming what is missing, never a child started
//! without it), and the seam through which the HTTP layer says who the
//! caller is. Does not own: authentication (the principal is given).

use std::future::Future;
use std::sync::Arc;

use super::{Store, StoreError};

/// Who the current request is from, and the credential headers it
/// carries for a server that takes them.
#[derive(Clone, Default)]
pub struct Caller {
    /// The principal, as the authenticator names it.
    pub principal: Option<Arc<str>>,
    /// (variable, value) from the server's `credential_headers`.
    pub header_env: Vec<(String, String)>,
    /// The request was routed to a generation that a reload retired: it
    /// may use a session that generation already holds, never start a
    /// child (a new session or a 2026-07-28 child belongs to the current
    /// configuration).
    pub existing_sessions_only: bool,
}

tokio::task_local! {
    /// Set by the dispatcher around the request's handling and read at
    /// spawn. A seam: the authenticator names the principal; this carries
    /// the name to the spawn.
    static CALLER: Caller;
}

/// Runs `f` with `principal` as the caller of the current request.
pub async fn with_principal<F: Future>(principal: Option<Arc<str>>, f: F) -> F::Output {
    with_caller(
        Caller {
            principal,
            ..Caller::default()
        },
        f,
    )
    .await
}

/// Runs `f` on behalf of `caller`.
pub async fn with_caller<F: Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// The caller of the current request, if the dispatcher set one.
pub fn current_principal() -> Option<Arc<str>> {
    CALLER.try_with(|c| c.principal.clone()).ok().flatten()
}

/// Whether the current request may only use an existing session (see
/// [`Caller::existing_sessions_only`]).
pub fn current_existing_sessions_only() -> bool {
    CALLER
        .try_with(|c| c.existing_sessions_only)
        .unwrap_or(false)
}

/// The credential-header values of the current request.
pub fn current_header_env() -> Vec<(String, String)> {
    CALLER
        .try_with(|c| c.header_env.clone())
        .unwrap_or_default()
}

/// Why a child cannot get its credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No principal: the request was not authenticated by name.
    #[error("server {server:?} needs per-user credentials, but the request has no principal")]
    NoPrincipal {
        /// The server.
        server: String,
    },
    /// The principal has no value for some of the server's secrets.
    #[error(
        "no stored credential for {principal:?} on server {server:?}: missing {}; the operator adds it with `mcp-proxy secrets set {principal} {server} NAME`",
        missing.iter().map(|(var, name)| format!("{name} (for {var})")).collect::<Vec<_>>().join(", ")
    )]
    Missing {
        /// The principal.
        principal: String,
        /// The server.
        server: String,
        /// (variable, secret name) of each missing value.
        missing: Vec<(String, String)>,
    },
    /// A configured credential header is absent from the request.
    #[error(
        "server {server:?} takes its upstream credential from the request: send the {} header",
        headers.join(", ")
    )]
    MissingHeader {
        /// The server.
        server: String,
        /// The headers missing.
        headers: Vec<String>,
    },
    /// A value that cannot be an environment variable (not UTF-8, or NUL).
    #[error(
        "stored credential {name:?} of {principal:?} on server {server:?} is not valid text for an environment variable"
    )]
    NotText {
        /// The principal.
        principal: String,
        /// The server.
        server: String,
        /// The secret name.
        name: String,
    },
    /// A principal the store cannot name (a JWT `sub` or forward-auth
    /// name too long for it, or with a control character): no value can
    /// ever be stored for it, so this is no store failure to retry.
    #[error("principal {principal:?} cannot hold stored credentials: {reason}")]
    UnusablePrincipal {
        /// The principal, cut to 64 characters.
        principal: String,
        /// The store's reason.
        reason: StoreError,
    },
    /// The store failed or timed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store-backed variables of one server.
pub struct ChildSecrets {
    store: Option<Arc<Store>>,
    server: String,
    /// (variable, secret name).
    vars: Vec<(String, String)>,
    names: Vec<String>,
    /// (variable, header name): taken from the request instead.
    headers: Vec<(String, String)>,
}

impl ChildSecrets {
    /// The variables `vars` (variable, secret name) of `server`.
    pub fn new(store: Arc<Store>, server: &str, vars: Vec<(String, String)>) -> ChildSecrets {
        ChildSecrets::with_headers(Some(store), server, vars, Vec::new())
    }

    /// Store-backed `vars` and request-header `headers`, both as
    /// (variable, secret or header name).
    pub fn with_headers(
        store: Option<Arc<Store>>,
        server: &str,
        vars: Vec<(String, String)>,
        headers: Vec<(String, String)>,
    ) -> ChildSecrets {
        let names = vars.iter().map(|(_, n)| n.clone()).collect();
        ChildSecrets {
            store,
            server: server.to_string(),
            vars,
            names,
            headers,
        }
    }

    /// The store the values come from, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The header names a request may carry for this server.
    pub fn header_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(v, h)| (v.as_str(), h.as_str()))
    }

    /// The variables for a child of the current request's caller.
    pub async fn env_for_caller(&self) -> Result<Vec<(String, String)>, CredentialError> {
        let given = current_header_env();
        let mut env = Vec::new();
        let mut missing = Vec::new();
        for (var, header) in &self.headers {
            match given.iter().find(|(v, _)| v == var) {
                Some((_, value)) => env.push((var.clone(), value.clone())),
                None => missing.push(header.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(CredentialError::MissingHeader {
                server: self.server.clone(),
                headers: missing,
            });
        }
        if !self.vars.is_empty() {
            env.extend(self.env_for(current_principal().as_deref()).await?);
        }
        Ok(env)
    }

    /// The variables for a child of `principal`: every one, or an error
    /// naming each missing value.
    pub async fn env_for(
        &self,
        principal: Option<&str>,
    ) -> Result<Vec<(String, String)>, CredentialError> {
        let Some(principal) = principal else {
            return Err(CredentialError::NoPrincipal {
                server: self.server.clone(),
            });
        };
        let Some(store) = &self.store else {
            return Err(CredentialError::NoPrincipal {
                server: self.server.clone(),
            });
        };
        // Checked before the store is asked: the store's refusal would be
        // a `Store` error, which callers answer "unavailable, try again".
        if let Err(reason) = super::check_principal(principal) {
            return Err(CredentialError::UnusablePrincipal {
                principal: principal.chars().take(64).collect(),
                reason,
            });
        }
        let found = store
            .get_for_child(principal, &self.server, &self.names)
            .await?;
        let mut env = Vec::with_capacity(self.vars.len());
        let mut missing = Vec::new();
        for (var, name) in &self.vars {
            match found
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_ref())
            {
                None => missing.push((var.clone(), name.clone())),
                Some(v) => match v.expose_str().filter(|s| !s.contains('\0')) {
                    Some(s) => env.push((var.clone(), s.to_string())),
                    None => {
                        return Err(CredentialError::NotText {
                            principal: principal.into(),
                            server: self.server.clone(),
                            name: name.clone(),
                        });
                    }
                },
            }
        }
        if !missing.is_empty() {
            return Err(CredentialError::Missing {
                principal: principal.into(),
                server: self.server.clone(),
                missing,
            });
        }
        Ok(env)
    }
}
