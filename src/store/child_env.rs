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

tokio::task_local! {
    /// Who the current request is from, set by the dispatcher around the
    /// request's handling and read at spawn. A seam: the authenticator
    /// names the principal; this carries the name to the spawn.
    static PRINCIPAL: Option<Arc<str>>;
}

/// Runs `f` with `principal` as the caller of the current request.
pub async fn with_principal<F: Future>(principal: Option<Arc<str>>, f: F) -> F::Output {
    PRINCIPAL.scope(principal, f).await
}

/// The caller of the current request, if the dispatcher set one.
pub fn current_principal() -> Option<Arc<str>> {
    PRINCIPAL.try_with(|p| p.clone()).ok().flatten()
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
    /// The store failed or timed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store-backed variables of one server.
pub struct ChildSecrets {
    store: Arc<Store>,
    server: String,
    /// (variable, secret name).
    vars: Vec<(String, String)>,
    names: Vec<String>,
}

impl ChildSecrets {
    /// The variables `vars` (variable, secret name) of `server`.
    pub fn new(store: Arc<Store>, server: &str, vars: Vec<(String, String)>) -> ChildSecrets {
        let names = vars.iter().map(|(_, n)| n.clone()).collect();
        ChildSecrets {
            store,
            server: server.to_string(),
            vars,
            names,
        }
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
        let found = self
            .store
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
