//! Many named servers behind one listener: `/servers/<name>/mcp` (and
//! `/servers/<name>/sse` + `/servers/<name>/messages` for 2024-11-05
//! clients), configured by [`crate::config_file`].
//!
//! Owns: the map name → server, dispatch by path prefix, `/health` (every
//! server), `/ready` (ready while any server is) and the per-server probe
//! `/servers/<name>/ready`, live reload (SIGHUP), and the drain of servers
//! that a reload removed or changed. Each server is an ordinary
//! [`App`], the same one a single-server command line runs, with its own
//! sessions, children, limits and failure counters: a server that cannot
//! start, crashes in a loop or hangs touches no other server's state.
//!
//! Does not own: what happens inside one server (see [`crate::http`]).
//!
//! Reload: a server that is new starts; one that is gone stops taking new
//! sessions and is stopped once its sessions end (or after its idle
//! timeout); one that changed is replaced for new sessions while existing
//! sessions finish on the old settings: requests carrying a session id
//! are routed to whichever generation holds that session. A retiring
//! generation serves only ordinary requests on its own sessions: it starts
//! no child (an `initialize` carrying one of its ids gets 404 and starts
//! over at the current generation; the legacy stream and 2026-07-28
//! requests go to the current one directly), and a caller the current
//! configuration no longer accepts (a removed key) is refused there too.
//! A file with an error is refused and the running set stays as it was.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::config_file::{ServerSpec, ServersConfig};
use crate::error::ProxyError;
use crate::http::response::json_response;
use crate::http::{App, ListenLimits};
use crate::sse::Body;
use crate::store::{ChildSecrets, Store};

/// How often retiring servers are checked for their last session.
const RETIRE_CHECK: Duration = Duration::from_millis(500);

/// One running generation of a named server.
struct Running {
    app: Arc<App>,
    /// A digest of what it was built from, to tell a changed server on
    /// reload (see [`fingerprint`]).
    fingerprint: [u8; 32],
    /// Ends its idle-session reaper.
    reaper: CancellationToken,
    /// Requests being served by this generation, counted until their
    /// response body ends: a 2026-07-28 call has no session, so only this
    /// tells a retiring generation with work in flight (a call, a child
    /// starting for it) from an idle one.
    in_flight: Arc<AtomicUsize>,
}

/// One request counted in [`Running::in_flight`] until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's [`InFlight`] until it ends
/// (or the client goes away and hyper drops it).
struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::sse::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A generation that a reload replaced or removed, serving only the
/// sessions it already had.
struct Retiring {
    name: String,
    running: Running,
    /// When its remaining sessions are ended regardless.
    deadline: Instant,
}

/// Every named server.
pub struct ServerSet {
    base: Config,
    current: RwLock<BTreeMap<String, Running>>,
    retiring: Mutex<Vec<Retiring>>,
    store: Option<Arc<Store>>,
    /// Where the store was configured at start: a reload that says
    /// otherwise is told that it needs a restart.
    store_settings: Option<crate::config_file::StoreSettings>,
    /// One audit log, and one writer thread, for every server of every
    /// generation (`--audit-log` is a flag, the same for all).
    audit: Arc<crate::audit::Audit>,
    started: Instant,
    shutting_down: AtomicBool,
    /// Cancelled on shutdown: ends reapers and the retire loop.
    stop: CancellationToken,
}

/// What tells a changed server from an unchanged one at a reload: every
/// setting, through its `Debug` text, and the secrets that text shows as
/// `<redacted>` (API key values, the HS256 secret), through their digest:
/// a key given a new value under its old name is a change, so the old
/// value stops working. A digest, so that nothing derived from a secret
/// is kept as text.
fn fingerprint(spec: &ServerSpec) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    // The children registry is state, not a setting.
    let mut config = spec.config.clone();
    config.child.children = Arc::default();
    let mut h = Sha256::new();
    h.update(format!("{config:?}|{:?}|{:?}", spec.secrets, spec.header_env).as_bytes());
    h.update(spec.config.auth.secrets_digest());
    h.finalize().into()
}

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Servers started.
    pub added: Vec<String>,
    /// Servers replaced for new sessions.
    pub changed: Vec<String>,
    /// Servers draining to a stop.
    pub removed: Vec<String>,
}

impl ServerSet {
    /// Builds every server. Shared children are started by [`run`].
    pub fn new(config: ServersConfig, store: Option<Arc<Store>>) -> Result<Arc<ServerSet>, String> {
        let audit = Arc::new(crate::http::open_audit(&config.base)?);
        if let Some(store) = &store {
            // Secret reads and writes go where every other record goes.
            store.set_audit(audit.clone());
        }
        let set = Arc::new(ServerSet {
            audit,
            store_settings: config.store,
            base: config.base,
            current: RwLock::new(BTreeMap::new()),
            retiring: Mutex::new(Vec::new()),
            store,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        let mut map = BTreeMap::new();
        for spec in config.servers {
            map.insert(spec.name.clone(), set.build(&spec)?);
        }
        *set.current.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(set)
    }

    fn build(&self, spec: &ServerSpec) -> Result<Running, String> {
        let mut config = spec.config.clone();
        // One registry for every server's children: one guard process, one
        // pipe budget, one live count, as for a single server.
        config.child.children = self.base.child.children.clone();
        // One failed-authentication budget per client for every server
        // and every generation ([auth] is global).
        config.auth.limiter = self.base.auth.limiter.clone();
        // With `inherit_env` (the default) the child starts from the
        // proxy's environment as the OS holds it, byte for byte (a variable
        // that is not UTF-8 included, as on a single-server command line):
        // the spawn removes the proxy's own settings (MCP_PROXY_STORE_KEY
        // above all) and adds the server's variables, which win.
        // Its JWKS, if any, is fetched on the first request that needs it.
        let app = App::with_audit(config, self.audit.clone())
            .map_err(|e| format!("server {:?}: {e}", spec.name))?;
        app.set_server_name(&spec.name);
        if !spec.secrets.is_empty() && self.store.is_none() {
            return Err(format!(
                "server {:?} takes per-user secrets but no credential store is open",
                spec.name
            ));
        }
        if !spec.secrets.is_empty() || !spec.header_env.is_empty() {
            app.set_credentials(Arc::new(ChildSecrets::with_headers(
                self.store.clone(),
                &spec.name,
                spec.secrets.clone(),
                spec.header_env.clone(),
            )));
        }
        let reaper = self.stop.child_token();
        tokio::spawn(crate::http::reap_idle(app.clone(), reaper.clone()));
        Ok(Running {
            app,
            fingerprint: fingerprint(spec),
            reaper,
            in_flight: Arc::default(),
        })
    }

    /// How many generations that a reload replaced are still draining.
    pub fn retiring_count(&self) -> usize {
        crate::lock(&self.retiring).len()
    }

    /// The names of the servers being served, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Running>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the shared children of shared and stateless servers in the
    /// background; one that fails is logged and retried on first use, and
    /// the others are served meanwhile.
    fn start_shared(&self, names: &[String]) {
        for name in names {
            let Some(app) = self.read().get(name).map(|r| r.app.clone()) else {
                continue;
            };
            if app.config.mode == Mode::PerSession {
                continue;
            }
            let name = name.clone();
            tokio::spawn(async move {
                if let Err(e) = app.shared_upstream().await {
                    warn!(server = %name, error = %e, "server could not start; it is retried on first use");
                }
            });
        }
    }

    /// Applies a new configuration (see the module docs). The store and
    /// the listener are not changed by a reload.
    pub fn reload(&self, config: ServersConfig) -> Result<ReloadReport, String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("the proxy is shutting down".into());
        }
        if (config.base.host, config.base.port) != (self.base.host, self.base.port) {
            warn!("reload: listener changes need a restart; keeping the current address");
        }
        if config.store != self.store_settings {
            warn!(
                "reload: credential store changes need a restart; keeping the current store and key"
            );
        }
        for spec in &config.servers {
            if !spec.secrets.is_empty() && self.store.is_none() {
                return Err(format!(
                    "server {:?} takes per-user secrets, but this proxy was started without a credential store (a restart is needed to add one)",
                    spec.name
                ));
            }
        }
        let mut report = ReloadReport::default();
        let mut built = BTreeMap::new();
        {
            let current = self.read();
            for spec in &config.servers {
                match current.get(&spec.name) {
                    Some(r) if r.fingerprint == fingerprint(spec) => {}
                    Some(_) => {
                        report.changed.push(spec.name.clone());
                        built.insert(spec.name.clone(), self.build(spec)?);
                    }
                    None => {
                        report.added.push(spec.name.clone());
                        built.insert(spec.name.clone(), self.build(spec)?);
                    }
                }
            }
            for name in current.keys() {
                if !config.servers.iter().any(|s| &s.name == name) {
                    report.removed.push(name.clone());
                }
            }
        }
        let mut old = Vec::new();
        {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            for name in &report.removed {
                if let Some(r) = current.remove(name) {
                    old.push((name.clone(), r));
                }
            }
            for (name, r) in built {
                if let Some(prev) = current.insert(name.clone(), r) {
                    old.push((name, prev));
                }
            }
        }
        {
            let mut retiring = crate::lock(&self.retiring);
            for (name, running) in old {
                let deadline = Instant::now() + running.app.config.session_idle_timeout;
                info!(server = %name, sessions = running.app.sessions.len(), "server retiring: serving its existing sessions only");
                retiring.push(Retiring {
                    name,
                    running,
                    deadline,
                });
            }
        }
        let mut start = report.added.clone();
        start.extend(report.changed.iter().cloned());
        self.start_shared(&start);
        info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, "configuration reloaded");
        Ok(report)
    }

    /// The generation that should serve this request, and whether it is
    /// a retiring one. A retiring generation serves only requests on the
    /// sessions it holds: a request that starts something (`GET` of the
    /// legacy stream, a 2026-07-28 request, or anything without one of its
    /// session ids) goes to the current generation.
    fn app_for(&self, name: &str, req: &Request<Incoming>) -> Option<(Arc<App>, bool, InFlight)> {
        let current = self
            .read()
            .get(name)
            .map(|r| (r.app.clone(), false, InFlight::new(&r.in_flight)));
        let Some(id) = session_id(req) else {
            return current;
        };
        if current
            .as_ref()
            .is_some_and(|(a, _, _)| a.sessions.get(&id).is_some())
        {
            return current;
        }
        let path = req.uri().path();
        let starts_something = (req.method() == Method::GET && path.ends_with("/sse"))
            || req
                .headers()
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !crate::version::is_session(v.trim()));
        if !starts_something {
            let retiring = crate::lock(&self.retiring);
            if let Some(r) = retiring
                .iter()
                .find(|r| r.name == name && r.running.app.sessions.get(&id).is_some())
            {
                return Some((
                    r.running.app.clone(),
                    true,
                    InFlight::new(&r.running.in_flight),
                ));
            }
        }
        current
    }

    /// Any current server's app: for what `[auth]` decides, which is
    /// global (the Host check, authentication outside a server's path).
    fn any_app(&self) -> Option<Arc<App>> {
        self.read().values().next().map(|r| r.app.clone())
    }

    /// Checks a request bound for a retiring generation against the
    /// current configuration's authentication ([auth] is global, so any
    /// current server's will do): a key a reload removed is refused there
    /// too, although the old generation still holds the old key list.
    async fn still_accepted(&self, req: &Request<Incoming>) -> Result<(), ProxyError> {
        let Some(app) = self.any_app() else {
            return Err(ProxyError::ShuttingDown);
        };
        let peer = req
            .extensions()
            .get::<crate::http::PeerAddr>()
            .map(|p| p.0.ip());
        // The retiring generation authenticates the request again (its
        // principal is the one its sessions know) and records it.
        app.auth.recheck(req.headers(), peer).await?;
        Ok(())
    }

    /// Routes one request; never fails (errors are responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        // Host first, for every path, as a single server does (DNS
        // rebinding; probes may name an address): `[auth]` is global, so
        // any current server's check will do. Paths under a server are
        // checked again by its app.
        let probe = req.method() == Method::GET
            && (crate::auth::access::is_probe_path(&path)
                || path.strip_prefix("/servers/").is_some_and(|rest| {
                    rest.split_once('/')
                        .is_some_and(|(_, tail)| tail == "ready" || tail == "metrics")
                }));
        let authority = req.uri().authority().map(|a| a.as_str());
        if let Some(app) = self.any_app() {
            let checked = if probe {
                app.access.check_probe_host(req.headers(), authority)
            } else {
                app.access.check_host(req.headers(), authority)
            };
            if let Err(e) = checked {
                return e.into_response();
            }
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/metrics") => {
                return self
                    .metrics(&req)
                    .await
                    .unwrap_or_else(ProxyError::into_response);
            }
            (&Method::GET, "/health") => return self.health(),
            (&Method::GET, "/ready") => return self.ready(),
            _ => {}
        }
        // RFC 9728: a server's metadata is at the well-known path followed
        // by its own (`/.well-known/oauth-protected-resource/servers/<name>/mcp`),
        // the URL its 401 challenges name; its app serves it.
        if req.method() == Method::GET
            && let Some(name) = path
                .strip_prefix(crate::auth::metadata::WELL_KNOWN)
                .and_then(|p| p.strip_prefix("/servers/"))
                .and_then(|p| p.split('/').next())
        {
            let app = self.read().get(name).map(|r| r.app.clone());
            return match app {
                Some(app) => app.handle(req).await,
                None => ProxyError::NotFound(path.clone()).into_response(),
            };
        }
        let Some(rest) = path.strip_prefix("/servers/") else {
            return ProxyError::NotFound(path).into_response();
        };
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if req.method() == Method::GET && (tail == "ready" || tail == "metrics") {
            let app = self.read().get(name).map(|r| r.app.clone());
            return match app {
                None => ProxyError::NotFound(path.clone()).into_response(),
                Some(app) if tail == "ready" => app.ready(),
                Some(app) => app
                    .metrics_endpoint(&req)
                    .await
                    .unwrap_or_else(ProxyError::into_response),
            };
        }
        let Some((app, retiring, in_flight)) = self.app_for(name, &req) else {
            return ProxyError::NotFound(format!("{path} (no server named {name:?})"))
                .into_response();
        };
        if retiring && let Err(e) = self.still_accepted(&req).await {
            return e.into_response();
        }
        let caller = crate::store::Caller {
            // The app authenticates and hands its principal to the store at spawn.
            principal: None,
            header_env: app.credential_header_values(req.headers()),
            existing_sessions_only: retiring,
        };
        let resp = crate::store::with_caller(caller, app.handle(req)).await;
        resp.map(|inner| {
            Body::new(Counted {
                inner,
                _in_flight: in_flight,
            })
        })
    }

    /// `GET /metrics`: every current server's metrics, each sample with a
    /// `server` label and each family once (its HELP and TYPE from the
    /// first server that has it), so one scrape covers the process. The
    /// process-wide counts (dropped log lines and audit records, the
    /// build) appear once per server. With `--metrics-auth` the caller
    /// authenticates as for any server (`[auth]` is global).
    async fn metrics(&self, req: &Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let apps: Vec<(String, Arc<App>)> = self
            .read()
            .iter()
            .map(|(n, r)| (n.clone(), r.app.clone()))
            .collect();
        if self.base.metrics_auth
            && let Some(app) = self.any_app()
        {
            let peer = req
                .extensions()
                .get::<crate::http::PeerAddr>()
                .map(|p| p.0.ip());
            app.auth.authenticate(req.headers(), peer).await?;
        }
        let texts: Vec<(String, String)> = apps
            .iter()
            .map(|(name, app)| (name.clone(), app.metrics_text()))
            .collect();
        Ok(crate::http::response::metrics_text(merge_metrics(&texts)))
    }

    fn health(&self) -> Response<Body> {
        let mut servers = serde_json::Map::new();
        for (name, r) in self.read().iter() {
            let ready = r.app.ready().status() == StatusCode::OK;
            servers.insert(
                name.clone(),
                serde_json::json!({
                    "status": if ready { "ok" } else { "unavailable" },
                    "mode": mode_name(r.app.config.mode),
                    "sessions": r.app.sessions.len(),
                    "path": r.app.config.path,
                }),
            );
        }
        let retiring = self.retiring_count();
        let body = serde_json::json!({
            "status": if self.shutting_down.load(Ordering::Relaxed) { "shutting-down" } else { "ok" },
            "service": "mcp-proxy",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "children": self.base.child.children.live(),
            "log_lines_dropped": crate::logging::dropped(),
            "audit_records_dropped": self.audit.dropped(),
            "servers": servers,
            "retiring": retiring,
        });
        json_response(StatusCode::OK, body)
    }

    fn ready(&self) -> Response<Body> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "shutting down" }),
            );
        }
        let ready: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, r)| r.app.ready().status() == StatusCode::OK)
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "no server is ready" }),
            )
        } else {
            json_response(
                StatusCode::OK,
                serde_json::json!({ "status": "ready", "ready": ready }),
            )
        }
    }

    /// Stops retiring generations whose sessions have ended or whose
    /// deadline passed.
    async fn retire_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETIRE_CHECK) => {}
                _ = self.stop.cancelled() => return,
            }
            let done: Vec<Retiring> = {
                let mut retiring = crate::lock(&self.retiring);
                let now = Instant::now();
                // Idle: no session, and no request in flight (a 2026-07-28
                // call on a per-principal child, or a child starting for
                // one). The deadline bounds the wait either way.
                let (done, keep) = std::mem::take(&mut *retiring).into_iter().partition(|r| {
                    (r.running.app.sessions.is_empty()
                        && r.running.in_flight.load(Ordering::SeqCst) == 0)
                        || now >= r.deadline
                });
                *retiring = keep;
                done
            };
            for r in done {
                info!(server = %r.name, sessions = r.running.app.sessions.len(), "retired server stopping");
                stop_app(&r.running).await;
            }
        }
    }
}

async fn stop_app(r: &Running) {
    r.reaper.cancel();
    r.app.answers_cancel.cancel();
    r.app.stop_children().await;
}

/// Prometheus text of several servers as one: each sample gains a
/// `server` label, and each family's samples stand together under one
/// HELP and TYPE (the format allows a family only once).
fn merge_metrics(texts: &[(String, String)]) -> String {
    // Families in first-seen order: (header lines, samples).
    let mut families: Vec<(Vec<&str>, Vec<String>)> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (server, text) in texts {
        let label = format!("server=\"{}\"", escape_label(server));
        let mut current: Option<(usize, bool)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (_, Some(family)) = (words.next(), words.next()) else {
                    continue;
                };
                let (at, new) = match index.get(family) {
                    Some(&at) => (at, false),
                    None => {
                        families.push((Vec::new(), Vec::new()));
                        index.insert(family, families.len() - 1);
                        (families.len() - 1, true)
                    }
                };
                if new || current.is_some_and(|(c, n)| c == at && n) {
                    families[at].0.push(line);
                    current = Some((at, true));
                } else {
                    current = Some((at, false));
                }
            } else if !line.is_empty()
                && let Some((at, _)) = current
            {
                families[at].1.push(with_label(line, &label));
            }
        }
    }
    let mut out = String::new();
    for (header, samples) in families {
        for line in header
            .iter()
            .copied()
            .chain(samples.iter().map(String::as_str))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A sample line with `label` (`name="value"`) first among its labels.
fn with_label(line: &str, label: &str) -> String {
    match line.find(['{', ' ']) {
        Some(i) if line[i..].starts_with("{}") => {
            format!("{}{{{label}}}{}", &line[..i], &line[i + 2..])
        }
        Some(i) if line[i..].starts_with('{') => {
            format!("{}{{{label},{}", &line[..i], &line[i + 1..])
        }
        Some(i) => format!("{}{{{label}}}{}", &line[..i], &line[i..]),
        None => line.to_owned(),
    }
}

/// A label value as the text format writes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::PerSession => "per-session",
        Mode::Shared => "shared",
        Mode::Stateless => "stateless",
    }
}

/// The session a request names, read where and as the app reads it: the
/// legacy `POST …/messages` by its query (`sessionId` or `session_id`),
/// anything else by `Mcp-Session-Id` (every copy and comma-separated part,
/// trimmed), by the very functions the app uses, so that the request goes
/// to the generation holding the session the app then serves. A request
/// that names two sessions, or a header that is not visible ASCII, names
/// none here: every generation refuses it alike, so the current one does.
fn session_id(req: &Request<Incoming>) -> Option<String> {
    let id = if req.uri().path().ends_with("/messages") {
        crate::http::legacy::query_session(req.uri()).ok().flatten()
    } else {
        crate::http::streamable::session_header(req.headers()).ok()
    };
    id.map(str::to_string)
}

/// Serves every server on `listener` until `shutdown`, then drains: SSE
/// streams end first, connections get the grace period, then every
/// child of every generation is stopped.
pub async fn run(listener: TcpListener, set: Arc<ServerSet>, shutdown: CancellationToken) {
    run_until(listener, set, shutdown, CancellationToken::new()).await
}

/// [`run`], with the same duties as a single server (see
/// [`crate::shutdown::start_duties`]): the guard process, PID 1's reaping
/// and signal forwarding (SIGHUP excepted: it reloads), and when `hurry`
/// is cancelled (a second signal) every child of every server is killed
/// at once.
pub async fn run_until(
    listener: TcpListener,
    set: Arc<ServerSet>,
    shutdown: CancellationToken,
    hurry: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, servers = ?set.names(), "listening on http://{addr}/servers/<name>/mcp");
    }
    let _duties = crate::shutdown::start_duties(&set.base.child.children, hurry, false);
    set.start_shared(&set.names());
    let retire = tokio::spawn(set.clone().retire_loop());
    let handler = {
        let set = set.clone();
        move |req| set.clone().handle(req)
    };
    let connections =
        crate::http::listener::accept(listener, ListenLimits::of(&set.base), handler, &shutdown)
            .await;
    info!("shutting down: refusing new work, draining requests in flight");
    set.shutting_down.store(true, Ordering::Relaxed);
    let all: Vec<Arc<App>> = {
        let mut v: Vec<Arc<App>> = set.read().values().map(|r| r.app.clone()).collect();
        v.extend(
            crate::lock(&set.retiring)
                .iter()
                .map(|r| r.running.app.clone()),
        );
        v
    };
    for app in &all {
        app.begin_drain();
    }
    let grace = set.base.child.grace;
    let settled = futures_util::future::join_all(
        all.iter()
            .map(|app| app.sessions.settled(app.config.replay_linger)),
    );
    if !connections
        .drain(grace, async {
            settled.await;
        })
        .await
    {
        warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open, or answers still awaited, after the grace period; closing them"
        );
    }
    // Answers not in by now are not waited for: each gets an error.
    futures_util::future::join_all(all.iter().map(|app| app.give_up_answers())).await;
    set.stop.cancel();
    let _ = retire.await;
    let generations: Vec<Running> = {
        let mut v: Vec<Running> =
            std::mem::take(&mut *set.current.write().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .collect();
        v.extend(
            std::mem::take(&mut *crate::lock(&set.retiring))
                .into_iter()
                .map(|r| r.running),
        );
        v
    };
    futures_util::future::join_all(generations.iter().map(stop_app)).await;
    // Every generation's records, retired ones' too: they share it.
    set.audit.flush(crate::audit::FLUSH_AT_EXIT).await;
    // Each child's writer, stderr drain and exit watcher end with it.
    if !set.base.child.children.wait_tasks(grace).await {
        warn!("a child's stdin writer or stderr reader still running after the grace period");
    }
    info!("shutdown complete");
}

/// Reloads on every SIGHUP with `load` (which re-reads the file); a
/// configuration with an error is refused with its message and the
/// running one stays.
pub fn reload_on_sighup(
    set: Arc<ServerSet>,
    load: impl Fn() -> Result<ServersConfig, String> + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let load = Arc::new(load);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = shutdown.cancelled() => return,
            }
            info!("SIGHUP: reloading the configuration");
            let loaded = tokio::select! {
                loaded = load_off_runtime({ let load = load.clone(); move || load() }) => loaded,
                _ = shutdown.cancelled() => return,
            };
            match loaded.and_then(|c| set.reload(c)) {
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reload refused; the running configuration stays"),
            }
        }
    });
    Ok(())
}

/// Runs `load` (which reads the configuration file and the files it
/// names) on a blocking thread: a file on a network file system that
/// hangs must not stop the runtime's thread, which serves every request.
/// One load at a time: signals that come meanwhile are one more reload.
async fn load_off_runtime<T: Send + 'static>(
    load: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(load)
        .await
        .unwrap_or_else(|e| Err(format!("reading the configuration failed: {e}")))
}

/// Re-reads the configuration through `load` whenever the content of
/// `path`, or of a file it names, changes, checked every `every`
/// (`--config-poll`): the same path as SIGHUP, for deployments that cannot
/// signal the proxy (a mounted Kubernetes ConfigMap or Secret, an editor
/// over ssh). `digest` gives what is compared for the file's bytes
/// ([`crate::config_file::watch_digest`]: the bytes and the content of
/// the API key file, JWT secret file and env files they name), so a key
/// removed from the key file is refused without a signal, and a reload
/// refused for a file it names applies once that file is fixed.
///
/// Why a poll and not inotify: a read of a file of a few kilobytes every
/// two seconds costs nothing measurable, needs no new dependency, and
/// sees changes inotify misses (a ConfigMap's symlink swap, network file
/// systems, a file replaced by rename). The content is compared, not the
/// modification time: two writes within one timestamp tick, or a restore
/// of an older file, are both seen. A content seen before is not applied
/// again, so a broken file is refused (and logged) once, not every poll;
/// fixing it applies it. A new content is applied only once two checks in
/// a row read it: a file caught half-written, which may well be valid
/// TOML (the first of its servers, say), is never applied, since the next
/// check finds it changed again. An edit thus takes one to two intervals.
pub fn reload_on_change(
    set: Arc<ServerSet>,
    path: std::path::PathBuf,
    every: Duration,
    applied: Option<u64>,
    digest: impl Fn(&[u8]) -> u64 + Send + Sync + 'static,
    load: impl Fn(Vec<u8>) -> Result<ServersConfig, String> + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let digest = Arc::new(digest);
    // Parsing reads the files the configuration names: off the runtime's
    // thread too (see `load_off_runtime`).
    let load = Arc::new(load);
    // The file and its digest (which reads the files it names too), off
    // the runtime's thread.
    let read = move |path: &std::path::PathBuf| {
        let (path, digest) = (path.clone(), digest.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                crate::config_file::read_config_file(&path).map(|b| {
                    let d = digest(&b);
                    (b, d)
                })
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        }
    };
    tokio::spawn(async move {
        // The digest of the file the running configuration was built from:
        // an edit made after start-up, even before this task first runs,
        // differs from it.
        let mut seen = applied;
        // The digest the previous check read, when it was new: applied if
        // this check reads it again.
        let mut settling = None;
        // Why the last check could not read the file: each new reason is
        // logged once, however many checks it lasts.
        let mut unreadable: Option<String> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let (bytes, digest) = match read(&path).await {
                Ok(b) => b,
                Err(e) => {
                    let why = e.to_string();
                    if unreadable.as_ref() != Some(&why) {
                        warn!(path = %path.display(), error = %why, "config poll: cannot read the file; the running configuration stays");
                        unreadable = Some(why);
                    }
                    continue;
                }
            };
            unreadable = None;
            if seen == Some(digest) {
                settling = None;
                continue;
            }
            if settling != Some(digest) {
                settling = Some(digest);
                continue;
            }
            settling = None;
            seen = Some(digest);
            info!(path = %path.display(), "config file (or a file it names) changed: reloading the configuration");
            // Exactly the bytes hashed: a second read could catch a writer
            // half-way, and the finished file (this digest) would then
            // never be applied.
            let loaded = {
                let load = load.clone();
                tokio::select! {
                    loaded = load_off_runtime(move || load(bytes)) => loaded,
                    _ = shutdown.cancelled() => return,
                }
            };
            if let Err(e) = loaded.and_then(|c| set.reload(c)) {
                warn!(error = %e, "reload refused; the running configuration stays");
            }
        }
    });
}

/// Makes this process's memory unreadable to its children.
///
/// Children run as the proxy's user, so `/proc/<proxy pid>/environ` (which
/// holds `MCP_PROXY_STORE_KEY`, `MCP_PROXY_API_KEY`, a store URL's
/// password) and, where ptrace is not restricted, `/proc/<proxy pid>/mem`
/// (every credential opened for a child) were open to every child: one
/// principal's child could take the key and, with the store file it can
/// read too, every other principal's credential. A process that is not
/// dumpable has those files owned by root and cannot be traced by its
/// user. Its children are not affected: `exec` makes them dumpable again.
/// The cost is that the proxy leaves no core dump (which would hold the
/// same secrets). Files remain readable by children: see the README.
///
/// The binary calls this once for every mode (a single server after `--`
/// as well as named servers), as soon as logging runs and before any
/// child starts; [`serve_config`] does not, so a library caller decides.
pub fn hide_from_children() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warn!(error = %e, "cannot mark the proxy not dumpable: its children can read its environment, the store key included, through /proc");
    }
}

/// Environment lookup shared with the reload task.
pub type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the binary runs for `--config`/`--server`: opens the credential
/// store (if configured), builds every server, reloads on SIGHUP by
/// re-reading with `args`, and serves until `shutdown`.
pub async fn serve_config(
    listener: TcpListener,
    config: ServersConfig,
    args: crate::config::Args,
    lookup: Lookup,
    shutdown: CancellationToken,
    hurry: CancellationToken,
) -> Result<(), String> {
    let store = match &config.store {
        None => None,
        Some(s) => {
            let keys = crate::store::load_keys(s.key_file.as_deref(), &*lookup)?;
            let store = Store::open(&s.location, keys, s.timeout)
                .await
                .map_err(|e| e.to_string())?;
            info!(store = %store.location(), key_id = %store.key_ids()[0], "credential store open");
            store.check_at_start().await.map_err(|e| e.to_string())?;
            Some(Arc::new(store))
        }
    };
    let (poll, applied) = (config.config_poll, config.file_digest);
    let set = ServerSet::new(config, store)?;
    let load = {
        let lookup = lookup.clone();
        let args = args.clone();
        Arc::new(move || {
            crate::config_file::load(args.clone(), &*lookup).map_err(|e| e.to_string())
        })
    };
    if let (Some(every), Some(path)) = (poll, &args.config) {
        info!(path = %path, every = ?every, "watching the config file for changes");
        let (lookup, args) = (lookup.clone(), args.clone());
        let (digest_lookup, digest_args) = (lookup.clone(), args.clone());
        reload_on_change(
            set.clone(),
            path.into(),
            every,
            applied,
            move |bytes: &[u8]| {
                crate::config_file::watch_digest(&digest_args, &*digest_lookup, bytes)
            },
            move |bytes| {
                crate::config_file::load_bytes(args.clone(), &*lookup, bytes)
                    .map_err(|e| e.to_string())
            },
            shutdown.clone(),
        );
    }
    reload_on_sighup(set.clone(), move || load(), shutdown.clone())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    run_until(listener, set, shutdown, hurry).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A reload reads its files off the runtime's thread (before, on it).
    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_reads_the_configuration_off_the_runtime_thread() {
        let runtime_thread = std::thread::current().id();
        let read_on = super::load_off_runtime(|| Ok::<_, String>(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(read_on, runtime_thread);
    }

    use super::*;

    #[test]
    fn metrics_of_several_servers_merge_into_one_family_each_with_a_server_label() {
        let a = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n\
                 # HELP y Labelled.\n# TYPE y gauge\ny{era=\"none\"} 2\ny{} 3\n";
        let b = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 4\n\
                 # HELP y Labelled.\n# TYPE y gauge\ny{era=\"none\"} 5\n";
        let merged = merge_metrics(&[("a".into(), a.into()), ("b\"c".into(), b.into())]);
        assert_eq!(
            merged,
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{server=\"a\"} 1\nx_total{server=\"b\\\"c\"} 4\n\
             # HELP y Labelled.\n# TYPE y gauge\n\
             y{server=\"a\",era=\"none\"} 2\ny{server=\"a\"} 3\ny{server=\"b\\\"c\",era=\"none\"} 5\n"
        );
    }

    /// A named server's credential headers are read with the mapping of
    /// the generation that serves the request: after a reload renamed the
    /// header, the retiring generation still reads its own, and the
    /// current one the new. (The dispatcher used to read the current
    /// generation's mapping whichever generation it had routed to, so a
    /// reload landing between the two reads gave one generation's child
    /// the other's headers.)
    #[tokio::test]
    async fn credential_headers_are_read_with_the_serving_generations_mapping() {
        use argh::FromArgs;
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some("servers.toml".into());
        let file = |header: &str| {
            format!(
                "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n\
                 credential_headers = {{ TOKEN = \"{header}\" }}\n"
            )
        };
        let load = |header: &str| {
            crate::config_file::load_bytes(args.clone(), &|_| None, file(header).into_bytes())
                .unwrap()
        };
        let set = ServerSet::new(load("X-Old"), None).unwrap();
        let old = set.read().get("a").unwrap().app.clone();
        set.reload(load("X-New")).unwrap();
        let new = set.read().get("a").unwrap().app.clone();
        let retiring = set.retiring.lock().unwrap()[0].running.app.clone();
        assert!(Arc::ptr_eq(&retiring, &old));
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-old", " old-value ".parse().unwrap());
        headers.insert("x-new", "new-value".parse().unwrap());
        let tok = |v: &str| vec![("TOKEN".to_string(), v.to_string())];
        assert_eq!(old.credential_header_values(&headers), tok("old-value"));
        assert_eq!(new.credential_header_values(&headers), tok("new-value"));
        // Empty and non-ASCII values count as absent.
        headers.insert("x-new", "  ".parse().unwrap());
        headers.insert(
            "x-old",
            hyper::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(new.credential_header_values(&headers).is_empty());
        assert!(old.credential_header_values(&headers).is_empty());
    }

    /// An edit made after the configuration was read but before the poll
    /// task first runs (a slow start, a busy machine) is still applied: the
    /// poll compares against what was applied, not against its own first
    /// read.
    #[tokio::test]
    async fn an_edit_before_the_first_poll_is_applied() {
        use argh::FromArgs;
        let dir = std::env::temp_dir().join(format!("mcp-proxy-poll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        let server = |name: &str| format!("[[server]]\nname = \"{name}\"\ncommand = [\"true\"]\n");
        std::fs::write(&file, server("a")).unwrap();
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let config = crate::config_file::load(args.clone(), &|_| None).unwrap();
        let applied = config.file_digest;
        assert!(applied.is_some());
        let set = ServerSet::new(config, None).unwrap();
        std::fs::write(&file, format!("{}{}", server("a"), server("b"))).unwrap();
        let shutdown = CancellationToken::new();
        reload_on_change(
            set.clone(),
            file.clone(),
            Duration::from_millis(20),
            applied,
            crate::config_file::file_digest,
            move |bytes| {
                crate::config_file::load_bytes(args.clone(), &|_| None, bytes)
                    .map_err(|e| e.to_string())
            },
            shutdown.clone(),
        );
        names_become(&set, &["a", "b"], "the edit was never applied").await;
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: the poll hashed one read of the file and parsed a
    /// second; a writer caught between the two left the half-written
    /// second read refused and the finished file (the hash already seen)
    /// never applied.
    #[tokio::test]
    async fn a_file_rewritten_between_the_polls_read_and_the_parse_is_applied() {
        use argh::FromArgs;
        let dir = std::env::temp_dir().join(format!("mcp-proxy-poll-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        let server = |name: &str| format!("[[server]]\nname = \"{name}\"\ncommand = [\"true\"]\n");
        std::fs::write(&file, server("a")).unwrap();
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let config = crate::config_file::load(args.clone(), &|_| None).unwrap();
        let applied = config.file_digest;
        let set = ServerSet::new(config, None).unwrap();
        let full = format!("{}{}", server("a"), server("b"));
        std::fs::write(&file, &full).unwrap();
        let shutdown = CancellationToken::new();
        let first = std::sync::atomic::AtomicBool::new(true);
        let (f, writer_done) = (file.clone(), full.clone());
        reload_on_change(
            set.clone(),
            file.clone(),
            Duration::from_millis(20),
            applied,
            crate::config_file::file_digest,
            move |bytes: Vec<u8>| {
                // A writer rewrites the file under the poll: half of it now,
                // the rest (the same bytes the poll read) just after.
                let racing = first.swap(false, std::sync::atomic::Ordering::SeqCst);
                if racing {
                    std::fs::write(&f, &writer_done[..writer_done.len() / 2 + 3]).unwrap();
                }
                let r = crate::config_file::load_bytes(args.clone(), &|_| None, bytes)
                    .map_err(|e| e.to_string());
                if racing {
                    std::fs::write(&f, &writer_done).unwrap();
                }
                r
            },
            shutdown.clone(),
        );
        names_become(&set, &["a", "b"], "the finished file was never applied").await;
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Starts the poll on `file` at 20 ms, as the binary does.
    fn poll(
        set: &Arc<ServerSet>,
        file: &std::path::Path,
        applied: Option<u64>,
    ) -> CancellationToken {
        use argh::FromArgs;
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let shutdown = CancellationToken::new();
        let digest_args = args.clone();
        reload_on_change(
            set.clone(),
            file.to_path_buf(),
            Duration::from_millis(20),
            applied,
            move |bytes: &[u8]| crate::config_file::watch_digest(&digest_args, &|_| None, bytes),
            move |bytes| {
                crate::config_file::load_bytes(args.clone(), &|_| None, bytes)
                    .map_err(|e| e.to_string())
            },
            shutdown.clone(),
        );
        shutdown
    }

    /// Regression: the poll compared the `--config` file alone, so a key
    /// removed from the `api_key_file` it names (a revoked key, a
    /// Kubernetes Secret updated in place) stayed valid until a SIGHUP.
    #[tokio::test]
    async fn a_key_removed_from_the_key_file_the_config_names_is_refused_without_a_signal() {
        use argh::FromArgs;
        let dir = std::env::temp_dir().join(format!("mcp-proxy-poll-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, keys) = (dir.join("p.toml"), dir.join("keys"));
        let alice = "alice-key-0123456789abcdef0123";
        let bob = "bob-key-0123456789abcdef012345";
        std::fs::write(&keys, format!("alice: {alice}\nbob: {bob}\n")).unwrap();
        std::fs::write(
            &file,
            format!(
                "[auth]\napi_key_file = {keys:?}\n[[server]]\nname = \"a\"\ncommand = [\"true\"]\n"
            ),
        )
        .unwrap();
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let config = crate::config_file::load(args, &|_| None).unwrap();
        let applied = config.file_digest;
        let set = ServerSet::new(config, None).unwrap();
        let accepts = |key: &str| {
            let app = set.read().get("a").unwrap().app.clone();
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
            async move { app.auth.authenticate(&headers, None).await.is_ok() }
        };
        assert!(accepts(bob).await);
        let shutdown = poll(&set, &file, applied);
        // Bob's key is revoked; the config file itself is not touched.
        std::fs::write(&keys, format!("alice: {alice}\n")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while accepts(bob).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a key removed from the key file is still accepted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(accepts(alice).await);
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: a configuration refused because of a file it names (an
    /// `env_file` not there yet) was marked seen, and fixing that file
    /// never applied it: only an edit of the config file or a SIGHUP did.
    #[tokio::test]
    async fn a_reload_refused_for_a_missing_env_file_applies_once_the_file_appears() {
        use argh::FromArgs;
        let dir = std::env::temp_dir().join(format!("mcp-proxy-poll-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, env) = (dir.join("p.toml"), dir.join("b.env"));
        let server = |name: &str| format!("[[server]]\nname = \"{name}\"\ncommand = [\"true\"]\n");
        std::fs::write(&file, server("a")).unwrap();
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let config = crate::config_file::load(args, &|_| None).unwrap();
        let applied = config.file_digest;
        let set = ServerSet::new(config, None).unwrap();
        let shutdown = poll(&set, &file, applied);
        std::fs::write(
            &file,
            format!("{}{}env_file = {env:?}\n", server("a"), server("b")),
        )
        .unwrap();
        // Refused (no such file) and seen: nothing changes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(set.names(), ["a"]);
        std::fs::write(&env, "B_SETTING=1\n").unwrap();
        names_become(&set, &["a", "b"], "the fixed env file was never applied").await;
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: the poll logged only the first of several unreadable
    /// states in a row: a file removed, then put back at 1.1 GB, left one
    /// line saying it was missing and nothing about its size.
    #[tokio::test]
    async fn each_new_reason_a_file_cannot_be_read_is_logged_once() {
        use argh::FromArgs;
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let w = lines.clone();
        let _log = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .finish(),
        );
        let dir = std::env::temp_dir().join(format!("mcp-proxy-poll-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n").unwrap();
        let mut args = crate::config::Args::from_args(&["mcp-proxy"], &[]).unwrap();
        args.config = Some(file.to_string_lossy().into_owned());
        let config = crate::config_file::load(args, &|_| None).unwrap();
        let applied = config.file_digest;
        let set = ServerSet::new(config, None).unwrap();
        let shutdown = poll(&set, &file, applied);
        let warnings = |what: &str| {
            String::from_utf8_lossy(&lines.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains("cannot read the file") && l.contains(what))
                .count()
        };
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Sparse: 1.1 GB on disk costs nothing.
        std::fs::File::create(&file)
            .unwrap()
            .set_len(1100 * 1024 * 1024)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(warnings("No such file"), 1);
        assert_eq!(
            warnings("larger than"),
            1,
            "the new reason was never logged"
        );
        assert_eq!(set.names(), ["a"]);
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Waits up to 5 s for the set to serve exactly `want`.
    async fn names_become(set: &ServerSet, want: &[&str], what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while set.names() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:?}",
                set.names()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
