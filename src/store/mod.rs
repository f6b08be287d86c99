//! The credential store: (principal, server, name) → a secret, sealed at rest.
//!
//! Owns: choosing a backend from `--store` (a file path for the embedded
//! SQLite store, `postgres://…` for a store shared by replicas), sealing
//! every value before it reaches a backend ([`seal`]), the deadline on every
//! call to a backend, key rotation, and the audit events of secret reads and
//! writes (event `secret`: principal, server, name, action, outcome; never
//! the value), through the proxy's audit log (`--audit-log` too) or, in
//! the `secrets` CLI, the `audit` log target. Does not own: who the
//! principal is (the authenticator decides) or what a child does with its
//! values.
//!
//! Backends only ever see sealed bytes, so a copy of the file or the table
//! holds no plain-text secret, and a value moved between rows fails to open
//! (the seal binds its row).

pub mod child_env;
pub mod cli;
pub mod postgres;
pub mod seal;
pub mod sqlite;

use std::time::Duration;

use tracing::{debug, info, warn};

pub use child_env::{
    Caller, ChildSecrets, CredentialError, current_existing_sessions_only, current_header_env,
    current_principal, with_caller, with_principal,
};
pub use seal::{KeyRing, SealError, Sealed, Secret, SecretRef, StoreKey};

/// Deadline of one call to the store: a spawn waits on it, so it is short.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a client is told when the store fails: the cause (a path, a host,
/// an SQL error) goes to the log only.
pub const UNAVAILABLE: &str = "the credential store is unavailable; try again later";
/// Longest principal, server or secret name: names, not payloads.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a store call failed. Never carries a secret value or a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer within the deadline.
    #[error("the credential store did not answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// The backend failed (I/O, SQL, connection).
    #[error("credential store {where_}: {message}")]
    Backend {
        /// Which store (a path, or a URL without its password).
        where_: String,
        /// What went wrong.
        message: String,
    },
    /// A value could not be sealed or opened.
    #[error("secret {at}: {source}")]
    Seal {
        /// The row.
        at: SecretRef,
        /// Why.
        source: SealError,
    },
    /// The store holds values, and the key ring opens none of them.
    #[error(
        "none of the {rows} stored value(s) can be opened with the key(s) given (key id {}): they are sealed under key id {}; is MCP_PROXY_STORE_KEY or --store-key-file the store's key?",
        ring.join(", "),
        stored.join(", ")
    )]
    WrongKey {
        /// How many rows the store holds.
        rows: usize,
        /// The key ids the rows are sealed under.
        stored: Vec<String>,
        /// The key ring's ids.
        ring: Vec<String>,
    },
    /// A principal that does not say how it logs in.
    #[error(
        "principal {0:?} does not say how it logs in: write METHOD:NAME, where METHOD is api-key, jwt, forward or none (api-key:{0}, jwt:{0}, forward:{0}; none:anonymous without authentication)"
    )]
    UnqualifiedPrincipal(String),
    /// A location that is neither a `postgres://` URL nor a file path
    /// (see [`check_location`]); the location itself is never shown.
    #[error(
        "the credential store's location is neither a file path nor a postgres:// URL: {0} (the location is not shown: it may hold a password)"
    )]
    BadLocation(String),
    /// A name that is empty, too long or has control characters.
    #[error("invalid {what} {value:?}: expected 1 to {MAX_NAME_BYTES} printable characters")]
    BadName {
        /// Which part.
        what: &'static str,
        /// The name (names are not secret).
        value: String,
    },
}

/// One row as a backend keeps it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Where it belongs.
    pub at: SecretRef,
    /// The sealed value.
    pub sealed: Sealed,
}

/// How the key ring fits the stored values (see [`Store::key_fit`]).
#[derive(Debug, Default, Clone)]
pub struct KeyFit {
    /// Every stored row's place.
    pub rows: Vec<SecretRef>,
    /// Rows sealed under a key the ring lacks.
    pub unknown: usize,
}

/// What `rotate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Rows re-sealed under the sealing key.
    pub resealed: usize,
    /// Rows that changed while being re-sealed (a concurrent write, which
    /// sealed them under the sealing key already).
    pub raced: usize,
    /// Rows sealed under the sealing key before the rotation began.
    pub current: usize,
    /// Rows the ring could not open (sealed under a key it lacks, or
    /// damaged), left as they were: set them again or delete them before
    /// the old key is dropped.
    pub unopened: Vec<SecretRef>,
}

pub(crate) enum Backend {
    Sqlite(sqlite::SqliteBackend),
    Postgres(Box<postgres::PgBackend>),
}

impl Backend {
    async fn get_many(
        &self,
        principal: &str,
        server: &str,
        names: &[String],
    ) -> Result<Vec<Row>, String> {
        match self {
            Backend::Sqlite(b) => b.get_many(principal, server, names).await,
            Backend::Postgres(b) => b.get_many(principal, server, names).await,
        }
    }
    async fn put(&self, row: Row) -> Result<(), String> {
        match self {
            Backend::Sqlite(b) => b.put(row).await,
            Backend::Postgres(b) => b.put(row).await,
        }
    }
    async fn delete(&self, at: &SecretRef) -> Result<bool, String> {
        match self {
            Backend::Sqlite(b) => b.delete(at).await,
            Backend::Postgres(b) => b.delete(at).await,
        }
    }
    async fn list(&self) -> Result<Vec<Row>, String> {
        match self {
            Backend::Sqlite(b) => b.list().await,
            Backend::Postgres(b) => b.list().await,
        }
    }
    async fn replace(&self, old: &Row, new: &Sealed) -> Result<bool, String> {
        match self {
            Backend::Sqlite(b) => b.replace(old, new).await,
            Backend::Postgres(b) => b.replace(old, new).await,
        }
    }
    /// After a timeout or an error: PostgreSQL reconnects on the next
    /// call; SQLite's file needs nothing.
    fn discard_connection(&self) {
        match self {
            Backend::Sqlite(_) => {}
            Backend::Postgres(b) => b.discard(),
        }
    }
}

/// The store: a backend, the keys, and a deadline on every call.
pub struct Store {
    backend: Backend,
    keys: KeyRing,
    timeout: Duration,
    /// For messages: a path, or a URL with its password removed.
    location: String,
    /// Where secret reads and writes are recorded, once a proxy serving
    /// this store sets it ([`Store::set_audit`]).
    audit: std::sync::OnceLock<std::sync::Arc<crate::audit::Audit>>,
    /// The store's failures as a proxy serving it logs them: once per
    /// outage, not per request ([`Store::outage`]).
    outage: crate::logging::Outage,
}

/// Whether `--store` names a PostgreSQL server rather than a file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Whether `location` can name a store: a `postgres://` or
/// `postgresql://` URL, or a file path. What else was most likely meant
/// as a PostgreSQL server, and may hold its password, is refused: a libpq
/// key=value connection string (`host=db password=…`), a URL whose scheme
/// is not written in lower case (`Postgres://…`), or one of another
/// scheme. Taken for a path, each became an SQLite file in the working
/// directory, named with the password (so shown in every message and
/// log line that names the store) and shared by no replica.
pub fn check_location(location: &str) -> Result<(), StoreError> {
    if is_postgres_url(location) {
        return Ok(());
    }
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        return Err(StoreError::BadLocation(
            "write a PostgreSQL server as postgres://USER:PASSWORD@HOST/DB, its scheme in lower case".into(),
        ));
    }
    if let Some((scheme, _)) = location.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(StoreError::BadLocation(format!(
            "a {scheme}:// URL (a store is a file or PostgreSQL)"
        )));
    }
    // A path has no `key=value` words that PostgreSQL's parser takes.
    if location.contains('=') && location.parse::<tokio_postgres::Config>().is_ok() {
        return Err(StoreError::BadLocation(
            "a PostgreSQL key=value connection string; write it as postgres://USER:PASSWORD@HOST/DB"
                .into(),
        ));
    }
    Ok(())
}

/// A store location fit for logs and errors. A file path is shown as
/// given; a PostgreSQL URL is parsed and rebuilt from its hosts, ports and
/// database only, so no password (in the userinfo or in any query
/// parameter such as `password` or `sslpassword`), user name or other
/// option can reach a message. A URL that does not parse is not shown.
pub fn redact_location(location: &str) -> String {
    if !is_postgres_url(location) {
        return location.to_string();
    }
    let Ok(config) = location.parse::<tokio_postgres::Config>() else {
        return "postgres://(a URL that does not parse; not shown)".into();
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) if name.contains(':') => {
                    format!("[{name}]")
                }
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
            };
            // One port for every host, or one each.
            match ports.get(i).or(ports.first().filter(|_| ports.len() == 1)) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

fn check_name(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(StoreError::BadName {
            what,
            value: value.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// How a principal logged in, as the store spells it: the prefix of every
/// stored principal (`api-key:alice`, `jwt:alice`, `service-token:<client
/// id>`, `forward:alice`, `none:anonymous`), so that two login methods
/// never share a credential.
pub const PRINCIPAL_METHODS: &[&str] = &["api-key", "jwt", "service-token", "forward", "none"];

/// The store's name for `principal`: `<method>:<name>`. An API key named
/// `alice` and a JWT whose `sub` is `alice` are different principals (as
/// sessions already hold), so they never share a stored credential.
pub fn principal_name(principal: &crate::auth::Principal) -> String {
    format!("{}:{}", principal.method().as_str(), principal.name())
}

pub(crate) fn check_principal(value: &str) -> Result<(), StoreError> {
    check_name("principal", value)?;
    let qualified = value
        .split_once(':')
        .is_some_and(|(method, name)| PRINCIPAL_METHODS.contains(&method) && !name.is_empty());
    if !qualified {
        return Err(StoreError::UnqualifiedPrincipal(
            value.chars().take(64).collect(),
        ));
    }
    Ok(())
}

/// Whether the store accepts `name` as a secret name (the config checks
/// `{ secret = "…" }` with it at load).
pub fn check_secret_name(name: &str) -> Result<(), StoreError> {
    check_name("secret name", name)
}

pub(crate) fn check_ref(at: &SecretRef) -> Result<(), StoreError> {
    check_principal(&at.principal)?;
    check_name("server", &at.server)?;
    check_name("secret name", &at.name)
}

/// One audit event for a secret read or write: to the proxy's [`Audit`]
/// (the `audit` log target and the `--audit-log` file) when the store
/// serves one, else (the `secrets` CLI) to the `audit` log target. Never
/// the value.
///
/// [`Audit`]: crate::audit::Audit
fn audit(sink: Option<&crate::audit::Audit>, action: &str, at: &SecretRef, outcome: &str) {
    match sink {
        Some(a) => a.emit(
            "secret",
            serde_json::json!({
                "action": action,
                "principal": at.principal,
                "server": at.server,
                "name": at.name,
                "outcome": outcome,
            }),
        ),
        None => info!(
            target: "audit",
            event = "secret",
            action,
            principal = %at.principal,
            server = %at.server,
            name = %at.name,
            outcome,
            "secret {action}"
        ),
    }
}

impl Store {
    /// Opens (and migrates) the store at `location`: a file path, or a
    /// `postgres://` URL. Opening is bounded by `timeout` too.
    pub async fn open(
        location: &str,
        keys: KeyRing,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        check_location(location)?;
        let redacted = redact_location(location);
        let backend_err = |message: String| StoreError::Backend {
            where_: redacted.clone(),
            message,
        };
        let backend = if is_postgres_url(location) {
            let b = tokio::time::timeout(timeout, postgres::PgBackend::open(location, timeout))
                .await
                .map_err(|_| StoreError::Timeout(timeout))?
                .map_err(backend_err)?;
            Backend::Postgres(Box::new(b))
        } else {
            let b = tokio::time::timeout(timeout, sqlite::SqliteBackend::open(location, timeout))
                .await
                .map_err(|_| StoreError::Timeout(timeout))?
                .map_err(backend_err)?;
            Backend::Sqlite(b)
        };
        Ok(Store {
            backend,
            keys,
            timeout,
            location: redacted,
            audit: std::sync::OnceLock::new(),
            outage: crate::logging::Outage::new("credential store"),
        })
    }

    /// Records secret reads and writes through `audit` (the proxy's one
    /// audit log, `--audit-log` included) from now on; set once.
    pub fn set_audit(&self, audit: std::sync::Arc<crate::audit::Audit>) {
        let _ = self.audit.set(audit);
    }

    fn audit(&self, action: &str, at: &SecretRef, outcome: &str) {
        audit(self.audit.get().map(|a| &**a), action, at, outcome);
    }

    /// Where a proxy reports the outcome of the store calls its requests
    /// make: the log says when the store starts failing and when it
    /// answers again, not once per request. (The `secrets` command prints
    /// its one error instead.)
    pub fn outage(&self) -> &crate::logging::Outage {
        &self.outage
    }

    /// Where the store is, fit for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The key ring's ids, sealing key first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.ids()
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => {
                // The caller reports the failure (a proxy once per
                // outage, see `Store::outage`).
                debug!(store = %self.location, timeout_ms = self.timeout.as_millis() as u64, "credential store call timed out; reconnecting on the next call");
                self.backend.discard_connection();
                Err(StoreError::Timeout(self.timeout))
            }
            Ok(Err(message)) => {
                self.backend.discard_connection();
                Err(StoreError::Backend {
                    where_: self.location.clone(),
                    message,
                })
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Stores (or replaces) a value.
    pub async fn set(&self, at: &SecretRef, value: &Secret) -> Result<(), StoreError> {
        check_ref(at)?;
        let sealed = self
            .keys
            .seal(at, value)
            .map_err(|source| StoreError::Seal {
                at: at.clone(),
                source,
            })?;
        let r = self
            .call(self.backend.put(Row {
                at: at.clone(),
                sealed,
            }))
            .await;
        self.audit("set", at, if r.is_ok() { "ok" } else { "error" });
        r
    }

    /// Reads one value.
    pub async fn get(&self, at: &SecretRef) -> Result<Option<Secret>, StoreError> {
        check_ref(at)?;
        let mut found = self
            .get_many(
                &at.principal,
                &at.server,
                std::slice::from_ref(&at.name),
                "get",
            )
            .await?;
        Ok(found.pop().and_then(|(_, v)| v))
    }

    /// Reads the values a child of `server` needs for `principal`, in one
    /// round trip; a name without a value comes back as `None`.
    pub async fn get_for_child(
        &self,
        principal: &str,
        server: &str,
        names: &[String],
    ) -> Result<Vec<(String, Option<Secret>)>, StoreError> {
        self.get_many(principal, server, names, "read-for-child")
            .await
    }

    async fn get_many(
        &self,
        principal: &str,
        server: &str,
        names: &[String],
        action: &str,
    ) -> Result<Vec<(String, Option<Secret>)>, StoreError> {
        check_principal(principal)?;
        check_name("server", server)?;
        for n in names {
            check_name("secret name", n)?;
        }
        let rows = match self
            .call(self.backend.get_many(principal, server, names))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                for n in names {
                    self.audit(action, &SecretRef::new(principal, server, n), "error");
                }
                return Err(e);
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let at = SecretRef::new(principal, server, n);
            match rows.iter().find(|r| &r.at.name == n) {
                None => {
                    self.audit(action, &at, "missing");
                    out.push((n.clone(), None));
                }
                // Opened as the row asked for, not as the row the backend
                // says it returned: a backend that matched another row (a
                // collation, an edited schema) gets a value that does not
                // open, never another principal's.
                Some(row) => match self.keys.open(&at, &row.sealed) {
                    Ok(v) => {
                        self.audit(action, &at, "ok");
                        out.push((n.clone(), Some(v)));
                    }
                    Err(source) => {
                        self.audit(action, &at, "unsealable");
                        return Err(StoreError::Seal { at, source });
                    }
                },
            }
        }
        Ok(out)
    }

    /// Deletes a value; whether it existed.
    pub async fn delete(&self, at: &SecretRef) -> Result<bool, StoreError> {
        check_ref(at)?;
        let r = self.call(self.backend.delete(at)).await;
        let outcome = match &r {
            Ok(true) => "ok",
            Ok(false) => "missing",
            Err(_) => "error",
        };
        self.audit("delete", at, outcome);
        r
    }

    /// Every row's place and sealing key id (no values are opened).
    pub async fn list(&self) -> Result<Vec<(SecretRef, String)>, StoreError> {
        let rows = self.call(self.backend.list()).await?;
        Ok(rows.into_iter().map(|r| (r.at, r.sealed.key_id)).collect())
    }

    /// Whether the key ring fits the stored values: an error when the
    /// store holds values and the ring opens none of them (a wrong key:
    /// every spawn would fail). Rows under keys the ring lacks, while
    /// others fit (a rotation left unfinished), are counted in `unknown`.
    pub async fn key_fit(&self) -> Result<KeyFit, StoreError> {
        let rows = self.list().await?;
        let ring: Vec<String> = self.keys.ids().into_iter().map(String::from).collect();
        let mut stored = std::collections::BTreeMap::<String, usize>::new();
        for (_, key_id) in &rows {
            *stored.entry(key_id.clone()).or_default() += 1;
        }
        let unknown: usize = stored
            .iter()
            .filter(|(id, _)| !ring.contains(id))
            .map(|(_, n)| n)
            .sum();
        if !rows.is_empty() && unknown == rows.len() {
            return Err(StoreError::WrongKey {
                rows: rows.len(),
                stored: stored.into_keys().collect(),
                ring,
            });
        }
        Ok(KeyFit {
            rows: rows.into_iter().map(|(at, _)| at).collect(),
            unknown,
        })
    }

    /// The checks at a proxy's start: a key ring that opens no stored
    /// value is an error (the proxy would be ready and answer every spawn
    /// with 503). Rows under a key the ring lacks, and rows whose
    /// principal has no login method (written by an earlier version,
    /// which keyed principals by name alone), are never used: a warning.
    pub async fn check_at_start(&self) -> Result<(), StoreError> {
        let fit = match self.key_fit().await {
            Ok(fit) => fit,
            Err(e @ StoreError::WrongKey { .. }) => return Err(e),
            // Serve anyway: each spawn then gets its own 503 until the
            // store answers.
            Err(e) => {
                warn!(error = %e, "credential store: cannot check its rows at start");
                return Ok(());
            }
        };
        if fit.unknown > 0 {
            warn!(
                rows = fit.unknown,
                key_ids = ?self.keys.ids(),
                "credential store: some stored values are sealed under a key this proxy does not hold and cannot be opened; add that key (second in the ring) or set them again"
            );
        }
        let bare: std::collections::BTreeSet<&str> = fit
            .rows
            .iter()
            .map(|at| at.principal.as_str())
            .filter(|p| check_principal(p).is_err())
            .collect();
        if !bare.is_empty() {
            warn!(
                count = bare.len(),
                principals = ?bare.iter().take(10).collect::<Vec<_>>(),
                "credential store: stored principals without a login method are never used; set them again as METHOD:NAME (api-key:NAME, jwt:SUB, forward:NAME, none:anonymous) and delete the old rows"
            );
        }
        Ok(())
    }

    /// Re-seals every row not sealed under the sealing key. Rows are
    /// replaced one at a time, each only if it did not change meanwhile, so
    /// proxies holding both keys keep serving throughout. A row the ring
    /// cannot open is left as it is and named in the report; the others
    /// are re-sealed all the same.
    pub async fn rotate(&self) -> Result<Rotation, StoreError> {
        let primary = self.keys.primary_id().to_string();
        let rows = self.call(self.backend.list()).await?;
        let mut report = Rotation::default();
        for row in rows {
            if row.sealed.key_id == primary {
                report.current += 1;
                continue;
            }
            let value = match self.keys.open(&row.at, &row.sealed) {
                Ok(value) => value,
                Err(e) => {
                    warn!(at = %row.at, key_id = %row.sealed.key_id, error = %e, "key rotation: cannot open this value; left as it is");
                    self.audit("reseal", &row.at, "unopened");
                    report.unopened.push(row.at);
                    continue;
                }
            };
            let resealed = self
                .keys
                .seal(&row.at, &value)
                .map_err(|source| StoreError::Seal {
                    at: row.at.clone(),
                    source,
                })?;
            if self.call(self.backend.replace(&row, &resealed)).await? {
                self.audit("reseal", &row.at, "ok");
                report.resealed += 1;
            } else {
                self.audit("reseal", &row.at, "raced");
                report.raced += 1;
            }
        }
        info!(target: "audit", event = "key-rotation", key_id = %primary, resealed = report.resealed, raced = report.raced, unopened = report.unopened.len(), "store re-sealed under key {primary}");
        Ok(report)
    }
}

/// Where the store's keys come from: `MCP_PROXY_STORE_KEY` (base64; a
/// comma-separated list during a rotation, sealing key first) or a key file
/// (one key per line, sealing key first). The file wins when both are given.
pub fn load_keys(
    key_file: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<KeyRing, String> {
    if let Some(path) = key_file {
        let cannot = |e: String| format!("--store-key-file: cannot read {path}: {e}");
        let bytes = crate::config::read_regular_file(
            std::path::Path::new(path),
            crate::config::MAX_NAMED_FILE_BYTES,
        )
        .map_err(|e| cannot(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| cannot("it is not UTF-8 text".into()))?;
        return KeyRing::parse(&text).map_err(|e| format!("--store-key-file {path}: {e}"));
    }
    match lookup("MCP_PROXY_STORE_KEY") {
        Some(v) => KeyRing::parse(&v).map_err(|e| format!("MCP_PROXY_STORE_KEY: {e}")),
        None => Err(
            "the credential store needs a key: set MCP_PROXY_STORE_KEY (32 bytes, base64; make one with `mcp-proxy secrets gen-key`) or pass --store-key-file"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the store's key file was read whole, whatever it was:
    /// `/dev/zero` filled memory, a FIFO hung the start. Now it is read
    /// like every file the configuration names: a regular file of at most
    /// 1 MiB.
    #[test]
    fn the_key_file_is_a_regular_file_of_at_most_a_mib() {
        let none = |_: &str| None;
        let err = load_keys(Some("/dev/zero"), &none).err().unwrap();
        assert!(
            err.starts_with("--store-key-file: cannot read /dev/zero"),
            "{err}"
        );
        let path = std::env::temp_dir().join(format!("store-key-big-{}", std::process::id()));
        std::fs::write(&path, "#".repeat(1024 * 1024 + 1)).unwrap();
        let err = load_keys(path.to_str(), &none).err().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn postgres_passwords_never_reach_messages() {
        for url in [
            "postgres://proxy:hunter2@db:5432/mcp",
            "postgres://proxy@db/mcp?password=hunter2",
            "postgresql://db/mcp?user=proxy&password=hunter2&application_name=x",
            "postgres://proxy:hunter2@db/mcp?password=hunter2",
            "postgres://proxy@db/mcp?sslpassword=hunter2",
            "postgres://proxy:hunter2@db:5432,db2:5433/mcp?connect_timeout=3",
            "postgres://proxy:hunter2@[::1/mcp",
            "postgres://proxy:hunter%32@db/mcp",
        ] {
            let shown = redact_location(url);
            assert!(
                !shown.contains("hunter") && !shown.contains("proxy"),
                "{url} shown as {shown}"
            );
        }
        assert_eq!(
            redact_location("postgres://proxy:hunter2@db:5432/mcp?password=x"),
            "postgres://db:5432/mcp"
        );
        assert_eq!(
            redact_location("postgres://proxy:hunter2@a:1,b:2/mcp"),
            "postgres://a:1,b:2/mcp"
        );
        assert_eq!(redact_location("/var/lib/x.db"), "/var/lib/x.db");
    }

    #[test]
    fn paths_and_postgres_urls_are_locations() {
        for ok in [
            "/var/lib/mcp-proxy/secrets.db",
            "secrets.db",
            "./a=b.db",
            "/srv/x=1 y=2.db",
            "postgres://proxy:pw@db/mcp",
            "postgresql://db/mcp?user=proxy",
        ] {
            assert!(check_location(ok).is_ok(), "{ok}");
        }
        for bad in [
            "host=db password=pw",
            "dbname=mcp",
            "Postgres://db/mcp",
            "postgres:/db/mcp",
            "sqlite:///var/lib/x.db",
        ] {
            let e = check_location(bad).unwrap_err().to_string();
            assert!(!e.contains("pw") && !e.contains("db/"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("principal", "").is_err());
        assert!(check_name("principal", "a\nb").is_err());
        assert!(check_name("principal", &"x".repeat(300)).is_err());
        assert!(check_name("principal", "alice@example.com").is_ok());
        assert!(check_principal("jwt:alice@example.com").is_ok());
        assert!(check_principal("none:anonymous").is_ok());
        for bare in ["alice", "key-1", "jwt:", ":alice", "ldap:alice"] {
            assert!(check_principal(bare).is_err(), "{bare}");
        }
    }
}
