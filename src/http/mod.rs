//! HTTP: routing, and what every request goes through.
//!
//! Owns: serving one [`App`] (connections themselves are [`listener`]'s), routing by
//! path and method, the checks every MCP request passes first (Host,
//! Origin, fetch metadata, then authentication to a [`Principal`] carried
//! in the request's extensions), CORS, body limits, `Accept` negotiation,
//! the health endpoints and the RFC 9728 metadata document. Each protocol era has its own module:
//! - [`streamable`]: Streamable HTTP with sessions (2025-03-26 … 2025-11-25);
//! - [`legacy`]: HTTP+SSE (2024-11-05);
//! - [`modern`]: stateless Streamable HTTP (2026-07-28), with the Tasks
//!   extension served from a 2025-11-25 child's tasks in [`modern_tasks`],
//!   and what both need of a call's answer in [`modern_answer`].
//!
//! The era of a request on the MCP endpoint is decided here, once
//! ([`App::mcp`]), from the `MCP-Protocol-Version` header and, for a POST
//! without one, the body's `_meta`; the front-ends never call each other.
//! Response builders live in [`response`].
//!
//! Handlers return `Result<Response, ProxyError>`; errors become responses
//! in [`crate::error`] only.

pub mod legacy;
pub mod listener;
pub mod modern;
pub mod modern_answer;
pub mod modern_tasks;
pub mod response;
pub mod streamable;
pub mod tool_headers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::{Access, AuthMethod, Authenticator, Principal, access};
use crate::config::{Config, Mode};
use crate::error::{ProxyError, Refusal};
use crate::jsonrpc::{self, Frame};
use crate::metrics::{AuthFailure, Era, HttpMethod, Metrics};
use crate::session::{
    InFlightSlots, PrincipalsInFlight, Reservation, Session, SessionParts, Sessions, StreamLimits,
    Transport, new_session_id,
};
use crate::sse::{Body, ReplayBudget};
use crate::upstream::{
    EraHints, Port, PortKeys, PortKind, Reply, Upstream, UpstreamError, UpstreamOptions,
};
use crate::{trace, version};
use response::json_response;

/// The MCP header names read on every request, parsed once: a lookup by a
/// `&str` parses and hashes the name each time.
pub mod names {
    use http::HeaderName;
    pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
    pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
    pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
}

/// Consecutive spawn failures after which `/ready` reports 503.
const SPAWN_FAILURES_NOT_READY: u32 = 3;

pub use listener::{ListenLimits, PeerAddr};

/// The principal of a request, as authenticated in [`App::handle`]. A
/// request that somehow skipped authentication is nobody: it owns nothing
/// and matches no one's session.
pub fn principal_of(extensions: &http::Extensions) -> Principal {
    extensions
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal::new(AuthMethod::None, ""))
}

/// The principal as the multiplexer's task table knows it: `None` for
/// anonymous (no authentication configured).
pub fn owner_key(principal: &Principal) -> Option<String> {
    (principal.method() != AuthMethod::None).then(|| principal.to_string())
}

/// Everything the handlers share.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Origin, Host and fetch-metadata rules.
    pub access: Access,
    /// Who is asking.
    pub auth: Authenticator,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// Per-principal children of 2026-07-28 clients.
    principal_children: crate::principals::PrincipalChildren,
    /// Session-era sessions.
    pub sessions: Arc<Sessions>,
    /// Requests in flight per principal, for requests without a session
    /// (`--stateless`, 2026-07-28; `--max-in-flight`).
    pub in_flight: Arc<PrincipalsInFlight>,
    /// The shared child: from the start in `--shared`/`--stateless` mode,
    /// on first use by a 2026-07-28 client in per-session mode.
    shared: OnceCell<Arc<Upstream>>,
    /// Cancelled first on shutdown: ends the streams that never end by
    /// themselves (a session's GET stream, a `subscriptions/listen`), and a
    /// legacy stream once no answer is owed on it. A child of
    /// [`App::answers_cancel`].
    pub streams_cancel: CancellationToken,
    /// Cancelled when the drain's grace has run out (or the server stops):
    /// ends every answer still awaited (a POST's stream or JSON wait, an
    /// `initialize`). Until then a request in flight at a SIGTERM gets its
    /// answer, as the drain promises.
    pub answers_cancel: CancellationToken,
    /// Cancelled last: stops children.
    pub children_cancel: CancellationToken,
    started: Instant,
    shutting_down: AtomicBool,
    spawn_failures: AtomicU32,
    /// What children of the command refused.
    era_hints: Arc<EraHints>,
    /// The `x-mcp-header` annotations learned from the children's tool
    /// lists (2026-07-28 `Mcp-Param-*` checks).
    pub tool_headers: Arc<tool_headers::ToolHeaders>,
    /// Keys of the multiplexer's ports (sessions and single requests).
    port_keys: PortKeys,
    /// Work started on behalf of requests that outlives them (cleanups of
    /// abandoned requests and sessions, watchers of per-session children);
    /// shutdown waits for it.
    pub tasks: TaskTracker,
    /// Replay memory of all streams (`--replay-total-bytes`).
    pub replay: Arc<ReplayBudget>,
    /// What `GET /metrics` shows; children count into it through their spec.
    pub metrics: Arc<Metrics>,
    /// Variables a per-session child takes from the credential store, per
    /// caller (named servers with `{ secret = … }`, see [`crate::servers`]).
    credentials: std::sync::OnceLock<Arc<crate::store::ChildSecrets>>,
    /// This server's name behind `--config`/`--server` (audit records).
    server_name: std::sync::OnceLock<Arc<str>>,
}

/// Opens `--audit-log` (or none), with a message naming the file if it fails.
pub fn open_audit(config: &Config) -> Result<Audit, String> {
    Audit::open(config.audit_log.as_deref(), config.audit_queue_bytes).map_err(|e| {
        format!(
            "--audit-log: cannot open {}: {e}",
            config
                .audit_log
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })
}

impl App {
    /// Builds the shared state; fails when the audit log cannot be opened.
    pub fn new(config: Config) -> Result<Arc<App>, String> {
        let audit = Arc::new(open_audit(&config)?);
        App::with_audit(config, audit)
    }

    /// Builds the shared state around an audit log already open (several
    /// servers share one, and one writer thread).
    pub fn with_audit(mut config: Config, audit: Arc<Audit>) -> Result<Arc<App>, String> {
        let metrics = Arc::new(Metrics::new());
        config.child.metrics = metrics.child();
        let access = Access::new(
            &config.allow_origins,
            &config.allowed_hosts,
            config.host.is_loopback(),
        );
        let auth = Authenticator::new(config.auth.clone(), &config.path, audit.clone())?;
        if access.allows_any_origin() && !auth.is_enabled() {
            warn!(
                "--allow-origin '*' without authentication: any web page the user visits can use this MCP server"
            );
        }
        let sessions = Arc::new(Sessions::new(
            config.max_sessions,
            config.max_sessions_per_principal,
            audit.clone(),
        ));
        let tasks = TaskTracker::new();
        let answers_cancel = CancellationToken::new();
        Ok(Arc::new(App {
            principal_children: crate::principals::PrincipalChildren::new(
                sessions.clone(),
                tasks.clone(),
            ),
            sessions,
            in_flight: PrincipalsInFlight::new(config.max_in_flight),
            access,
            auth,
            audit,
            shared: OnceCell::new(),
            streams_cancel: answers_cancel.child_token(),
            answers_cancel,
            children_cancel: CancellationToken::new(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            spawn_failures: AtomicU32::new(0),
            era_hints: Arc::default(),
            tool_headers: Arc::default(),
            port_keys: PortKeys::default(),
            tasks,
            replay: ReplayBudget::new(config.replay_total_bytes, config.replay_linger),
            metrics,
            credentials: std::sync::OnceLock::new(),
            server_name: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// Gives per-session children the caller's credentials from the store;
    /// set once, before serving.
    pub fn set_credentials(&self, credentials: Arc<crate::store::ChildSecrets>) {
        let _ = self.credentials.set(credentials);
    }

    /// The values of this server's credential headers in `headers`, as
    /// (variable, value): trimmed, and left out when empty or not
    /// visible ASCII. Read from the app that serves the request, so a
    /// request routed to one generation of a named server never takes
    /// another generation's headers across a reload.
    pub fn credential_header_values(&self, headers: &hyper::HeaderMap) -> Vec<(String, String)> {
        let Some(credentials) = self.credentials.get() else {
            return Vec::new();
        };
        credentials
            .header_names()
            .filter_map(|(var, header)| {
                let v = headers.get(header)?.to_str().ok()?.trim();
                (!v.is_empty()).then(|| (var.to_string(), v.to_string()))
            })
            .collect()
    }

    /// Starts a child for one session with the caller's credentials, if
    /// the server takes any: a caller without them gets an error naming
    /// what is missing, and no child.
    async fn spawn_session_child_for_caller(
        &self,
        label: &str,
        principal: &Principal,
    ) -> Result<Arc<Upstream>, ProxyError> {
        let mut spec = self.config.child.clone();
        spec.env.extend(self.caller_env(principal).await?);
        let r = Upstream::start(
            spec,
            label,
            self.upstream_options(false),
            self.children_cancel.child_token(),
        );
        self.note_spawn(r, label)
    }

    /// The variables a child of `principal` takes from the credential
    /// store and the request's credential headers (none for a server that
    /// takes no per-user credentials); an error names what is missing.
    async fn caller_env(&self, principal: &Principal) -> Result<Vec<(String, String)>, ProxyError> {
        // A generation that a reload retired serves the sessions it holds
        // and starts nothing: no child (and no stored credential) under a
        // configuration that no longer applies. The client starts over at
        // the current one.
        if crate::store::current_existing_sessions_only() {
            debug!(principal = %principal, "retiring server: no new child; answered 404");
            return Err(ProxyError::SessionNotFound);
        }
        let Some(credentials) = self.credentials.get() else {
            return Ok(Vec::new());
        };
        // The store names a principal by its login method and name
        // (`api-key:alice`, `jwt:alice`): two methods never share a value.
        // Headers the dispatcher took for the server still come from the
        // request.
        let caller = crate::store::Caller {
            principal: Some(crate::store::principal_name(principal).into()),
            header_env: crate::store::current_header_env(),
            existing_sessions_only: false,
        };
        // Boxed: the store's future is large (9.8 KB), and inline it would
        // make every request's future that large, as every await that may
        // start a child embeds it; it runs only when a child starts.
        let r = Box::pin(crate::store::with_caller(
            caller,
            credentials.env_for_caller(),
        ))
        .await;
        let outage = credentials.store().map(|s| s.outage());
        match r {
            Err(crate::store::CredentialError::Store(e)) => {
                // The detail (a path, a host, an SQL error) is for the
                // operator, in the log once per outage; the client learns
                // only that it is temporary.
                if let Some(outage) = outage {
                    outage.failed(&e.to_string());
                }
                debug!(principal = %principal, error = %e, "credential store call failed; answered 503");
                Err(ProxyError::StoreUnavailable(
                    crate::store::UNAVAILABLE.into(),
                ))
            }
            // The store answered (a value, or that there is none).
            r => {
                if let Some(outage) = outage {
                    outage.answered();
                }
                r.map_err(|e| ProxyError::MissingCredential(e.to_string()))
            }
        }
    }

    /// Names this server (a named server of [`crate::servers`]); set once.
    pub fn set_server_name(&self, name: &str) {
        let _ = self.server_name.set(name.into());
    }

    /// Slots for `requests` requests of `principal` that belong to no
    /// session, held until the guard drops (429 past `--max-in-flight`).
    pub fn admit_without_session(
        &self,
        principal: &Principal,
        requests: usize,
    ) -> Result<InFlightSlots, ProxyError> {
        self.in_flight
            .admit(principal, requests)
            .map_err(|(now, max)| ProxyError::TooManyInFlightForPrincipal(now, max))
    }

    /// `reply` for `frame` from `principal`: a `tools/call` is audited
    /// when its answer goes back (see [`crate::audit::ToolCall`]).
    pub fn reply_for(&self, principal: &Principal, frame: &Frame, reply: Reply) -> Reply {
        let call =
            crate::audit::ToolCall::start(&self.audit, principal, self.server_name.get(), frame);
        let reply =
            reply.watched(call.map(|c| Box::new(c) as Box<dyn crate::upstream::AnswerWatch>));
        if frame.method() == Some("tools/list") {
            let learn = tool_headers::Learn(self.tool_headers.clone());
            return reply.watched(Some(Box::new(learn)));
        }
        reply
    }

    /// A port of the multiplexer with a key unique in this proxy.
    pub fn new_port(&self, label: Arc<str>, kind: PortKind) -> Arc<Port> {
        Port::new(self.port_keys.next(), label, kind)
    }

    /// Options for a child's multiplexer.
    fn upstream_options(&self, shared: bool) -> UpstreamOptions {
        UpstreamOptions {
            shared,
            request_timeout: self.config.request_timeout,
            restart_max_backoff: self.config.restart_max_backoff,
            exit_on_child_exit: self.config.exit_on_child_exit,
            protocol: self.config.upstream_protocol,
            max_tasks: self.config.max_tasks,
            // In per-session mode the shared child exists for 2026-07-28 clients.
            discover_first: shared && self.config.mode == Mode::PerSession,
            sessions: self.config.mode == Mode::Shared,
            probe_timeout: self.config.probe_timeout,
            era_hints: self.era_hints.clone(),
            input_wait: self.config.session_idle_timeout,
            max_child_queue_bytes: self.config.max_child_queue_bytes,
            max_server_info_bytes: self.config.max_server_info_bytes,
            max_server_requests: self.config.max_server_requests,
            max_task_input_bytes: self.config.max_task_input_bytes,
            max_server_requests_per_session: self.config.max_server_requests_per_session,
            max_broadcast_bytes: self.config.max_queue_bytes,
        }
    }

    /// Limits for SSE streams.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            max_queue: self.config.max_queue,
            max_queue_bytes: self.config.max_queue_bytes,
            replay_events: self.config.replay_events,
            replay_bytes: self.config.replay_bytes,
            streams: self.config.replay_streams,
            tombstones: self.config.replay_tombstones,
            tombstone_bytes: self.config.replay_tombstone_bytes,
            budget: self.replay.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Starts a child for one session.
    pub fn spawn_session_child(&self, label: &str) -> Result<Arc<Upstream>, ProxyError> {
        let r = Upstream::start(
            self.config.child.clone(),
            label,
            self.upstream_options(false),
            self.children_cancel.child_token(),
        );
        self.note_spawn(r, label)
    }

    fn note_spawn(
        &self,
        r: Result<Arc<Upstream>, UpstreamError>,
        owner: &str,
    ) -> Result<Arc<Upstream>, ProxyError> {
        match r {
            Ok(up) => {
                self.spawn_failures.store(0, Ordering::Relaxed);
                let pid = up.pid();
                self.audit
                    .child_spawn(&self.config.child.program, pid, owner);
                let (audit, watched) = (self.audit.clone(), up.clone());
                tokio::spawn(async move {
                    let exit = watched.ended().await;
                    audit.child_exit(pid, exit);
                });
                Ok(up)
            }
            Err(e) => {
                let n = self.spawn_failures.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(error = %e, consecutive = n, "starting the MCP server failed");
                Err(ProxyError::Upstream(e))
            }
        }
    }

    /// Reserves room for a session-era session, starts its child (or joins
    /// the shared one) and builds it; it is registered once initialized.
    pub async fn open_session(
        &self,
        principal: &Principal,
        transport: Transport,
    ) -> Result<(Arc<Session>, Reservation), ProxyError> {
        // A generation that a reload retired opens no session, on a shared
        // child either: the client starts over at the current one.
        if crate::store::current_existing_sessions_only() {
            debug!(principal = %principal, "retiring server: no new session; answered 404");
            return Err(ProxyError::SessionNotFound);
        }
        let reservation = self.sessions.reserve(principal)?;
        // `--replica-id`: a prefix a router can route on (`r1.<hex>`).
        let id = match &self.config.replica_id {
            Some(r) => format!("{r}.{}", new_session_id()),
            None => new_session_id(),
        };
        let port = self.new_port(id.clone().into(), PortKind::Session);
        port.set_principal(owner_key(principal).as_deref());
        let upstream = match self.config.mode {
            // Logs name the session by a hash: the id is a credential.
            Mode::PerSession => {
                self.spawn_session_child_for_caller(&crate::logging::tag(&id), principal)
                    .await?
            }
            _ => self.shared_upstream().await?,
        };
        let session = Session::new(SessionParts {
            id,
            transport,
            principal: principal.clone(),
            port,
            upstream,
            limits: self.stream_limits(),
            cancel: self.answers_cancel.child_token(),
            standalone: self.streams_cancel.child_token(),
        });
        Ok((session, reservation))
    }

    /// The shared child, started on first use.
    pub async fn shared_upstream(&self) -> Result<Arc<Upstream>, ProxyError> {
        if self.credentials.get().is_some() {
            // One child for every caller cannot hold per-user credentials
            // (config load refuses such a server; this is the backstop).
            return Err(ProxyError::MissingCredential(
                "this server takes per-user credentials, which a shared child cannot hold".into(),
            ));
        }
        self.shared
            .get_or_try_init(|| async {
                let r = Upstream::start(
                    self.config.child.clone(),
                    "shared",
                    self.upstream_options(true),
                    self.children_cancel.child_token(),
                );
                self.note_spawn(r, "shared")
            })
            .await
            .cloned()
    }

    /// The child serving `principal`'s 2026-07-28 requests: in the default
    /// isolating mode with authentication or per-user credentials, one per
    /// principal, started on first use with the principal's own
    /// credentials (no principal reads another's state or uses another's
    /// credential). In that mode without either, every caller is the one
    /// anonymous principal and so shares one child, kept in the same table
    /// for its idle expiry and session slot. In `--shared` and
    /// `--stateless` modes, the shared child.
    pub async fn modern_upstream(
        &self,
        principal: &Principal,
    ) -> Result<Arc<Upstream>, ProxyError> {
        if self.config.mode != Mode::PerSession {
            return self.shared_upstream().await;
        }
        let key = crate::principals::ChildKey::new(principal, &crate::store::current_header_env());
        let label = if self.auth.is_enabled() || self.credentials.get().is_some() {
            format!("principal {principal}")
        } else {
            "2026-07-28 (no authentication: one child for every caller)".to_string()
        };
        self.principal_children
            .get_or_start(&key, || async {
                let mut spec = self.config.child.clone();
                spec.env.extend(self.caller_env(principal).await?);
                let r = Upstream::start(
                    spec,
                    &label,
                    self.upstream_options(true),
                    self.children_cancel.child_token(),
                );
                self.note_spawn(r, &label)
            })
            .await
    }

    /// Every per-principal child started so far.
    fn principal_upstreams(&self) -> Vec<Arc<Upstream>> {
        self.principal_children.all()
    }

    /// The shutdown's grace ran out: every request still in flight, on
    /// any child of this server, is failed with an error that says so, and
    /// then every answer still awaited ends ([`App::answers_cancel`]). A
    /// client thus gets a JSON-RPC error on its stream or in its body, not
    /// a stream that ends without its answer.
    pub async fn give_up_answers(&self) {
        let mut all = self.sessions.upstreams();
        all.extend(self.shared_if_started());
        all.extend(self.principal_upstreams());
        let why =
            "the proxy is shutting down: --shutdown-grace ran out before the MCP server answered";
        let failed = futures_util::future::join_all(all.iter().map(|u| u.fail_in_flight(why)));
        // Each worker takes the command at once (it never waits on its
        // child); the bound only keeps a wedged one from holding the stop.
        let _ = tokio::time::timeout(GIVE_UP_WAIT, failed).await;
        self.answers_cancel.cancel();
    }

    /// Stops every child of this server together: the sessions', the
    /// shared one and the per-principal ones, each by its staged stop, so
    /// that stubborn children of all three kinds take one stop's time, not
    /// three in a row. New children are refused from then on.
    pub async fn stop_children(&self) {
        let shared = async {
            if let Some(up) = self.shared_if_started() {
                up.stop().await;
            }
        };
        tokio::join!(
            self.sessions.clear(),
            shared,
            self.stop_principal_children()
        );
        self.children_cancel.cancel();
    }

    async fn stop_principal_children(&self) {
        let all = self.principal_upstreams();
        futures_util::future::join_all(all.iter().map(|u| u.stop())).await;
    }

    /// Stops the per-principal children idle for `--session-idle-timeout`
    /// (their principals' next requests start fresh ones).
    fn reap_principal_children(&self) {
        let idle = self.config.session_idle_timeout;
        for (key, up) in self.principal_children.take_idle(idle) {
            info!(principal = %key, pid = ?up.pid(), "per-principal child idle (--session-idle-timeout); stopping it");
            self.tasks.spawn(async move { up.stop().await });
        }
    }

    /// The shared child if it was started.
    pub fn shared_if_started(&self) -> Option<Arc<Upstream>> {
        self.shared.get().cloned()
    }

    /// Whether new work is refused.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Begins the shutdown's drain: new work is refused from now on (what
    /// existing sessions still send to finish theirs, answers to the
    /// server's requests and notifications, is taken, see
    /// [`App::refuses_while_draining`]), and the streams that carry no
    /// answer end.
    pub fn begin_drain(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.streams_cancel.cancel();
    }

    /// During the drain, whether a POST of `frames` is refused (503): one
    /// holding a request is new work, and so is anything without a session
    /// (2026-07-28, `--stateless`). Answers to the server's requests
    /// (sampling, elicitation, roots) and notifications (`cancelled`) to an
    /// existing session pass: a call in flight may be waiting on them to
    /// finish within the grace.
    fn refuses_while_draining(&self, frames: &[Frame], has_session: bool) -> bool {
        self.is_shutting_down()
            && (!has_session || frames.iter().any(|f| f.kind() == jsonrpc::Kind::Request))
    }

    /// `e` refusing a request of the 2026-07-28 revision (`is_modern`), whose
    /// message is `single` if it holds one: that revision's refusal (the
    /// request's id, -32603 where the proxy failed), unless this proxy
    /// serves the session era only (`--upstream-protocol legacy`), whose
    /// refusals tell a dual-era client to fall back. Anything else is
    /// refused as it is.
    fn refusal_in(&self, e: ProxyError, is_modern: bool, single: Option<&Frame>) -> Refusal {
        if is_modern && self.config.upstream_protocol != version::UpstreamProtocol::Legacy {
            e.modern().answering(single.and_then(modern::refusal_id))
        } else {
            e.into()
        }
    }

    /// Routes one request; never fails (errors are responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let in_flight = self.metrics.request_started();
        let era = self.era_of(&req);
        let method = HttpMethod::of(req.method());
        let origin = self.access.check_origin(req.headers());
        let mut resp = match self
            .clone()
            .route(req, origin.as_ref().ok().cloned().flatten())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "request refused");
                match &e.error {
                    ProxyError::Auth(_) => self.metrics.auth_failure(AuthFailure::Key),
                    ProxyError::ForbiddenOrigin(_) => {
                        self.metrics.auth_failure(AuthFailure::Origin)
                    }
                    ProxyError::ForbiddenHost(_) => self.metrics.auth_failure(AuthFailure::Host),
                    _ => {}
                }
                if let Some(limit) = e.limit() {
                    self.metrics.limit_refused(limit);
                }
                e.into_response()
            }
        };
        if let Ok(Some(origin)) = origin {
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&origin) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
                h.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(
                        "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate",
                    ),
                );
            }
        }
        self.metrics
            .observe_response(era, method, started, in_flight, resp)
    }

    /// The protocol era of a request, from its path and headers only.
    fn era_of(&self, req: &Request<Incoming>) -> Era {
        let path = req.uri().path();
        let c = &self.config;
        if path == c.sse_path || path == c.message_path {
            Era::Legacy
        } else if path != c.path {
            Era::None
        } else if protocol_version_header(req.headers())
            .ok()
            .flatten()
            .is_some_and(version::is_modern)
        {
            Era::Modern
        } else {
            Era::Streamable
        }
    }

    /// Reads a request body up to `--max-body-bytes` and counts it.
    pub async fn read_body(
        &self,
        body: Incoming,
        headers: &HeaderMap,
    ) -> Result<Bytes, ProxyError> {
        let read = read_body(body, headers, self.config.max_body_bytes);
        let timeout = self.config.body_read_timeout;
        let Ok(bytes) = tokio::time::timeout(timeout, read).await else {
            warn!(
                timeout_ms = timeout.as_millis() as u64,
                "request body not complete within --body-read-timeout; answered 408"
            );
            return Err(ProxyError::BodyReadTimeout(timeout));
        };
        let bytes = bytes?;
        self.metrics.bytes_in(bytes.len());
        Ok(bytes)
    }

    async fn route(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        origin: Option<String>,
    ) -> Result<Response<Body>, Refusal> {
        // Host first, for every path: health probes too (DNS rebinding),
        // though they may name an address (kubelet names the pod's).
        let authority = req.uri().authority().map(|a| a.as_str());
        if access::is_probe_path(req.uri().path()) {
            self.access.check_probe_host(req.headers(), authority)?;
        } else {
            self.access.check_host(req.headers(), authority)?;
        }
        let path = req.uri().path();
        let c = &self.config;
        let is_mcp = path == c.path || path == c.sse_path || path == c.message_path;
        match (req.method(), path) {
            (&Method::GET, "/health") => return Ok(self.health()),
            (&Method::GET, "/ready") => return Ok(self.ready()),
            (&Method::GET, p) if self.auth.metadata().is_some_and(|m| m.serves(p)) => {
                return Ok(self.resource_metadata());
            }
            (&Method::GET, "/metrics") => return Ok(Box::pin(self.metrics_endpoint(&req)).await?),
            _ if !is_mcp => return Err(ProxyError::NotFound(path.to_string()).into()),
            _ => {}
        }
        // Origin before the preflight: a browser's preflight must be refused for a bad origin too.
        self.access.check_origin(req.headers())?;
        self.access.check_fetch_site(req.headers())?;
        if req.method() == Method::OPTIONS {
            return Ok(preflight(origin.as_deref(), req.headers()));
        }
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let principal = self
            .auth
            .authenticate(req.headers(), peer)
            .await
            .map_err(ProxyError::from)?;
        req.extensions_mut().insert(principal);
        // A POST of messages is decided by what it holds (see
        // `refuses_while_draining`), and a resumption of a stream is a
        // client back for its answers (`streamable::get` refuses a fresh
        // stream); anything else is new work.
        let posts_messages = req.method() == Method::POST && (req.uri().path() != c.sse_path);
        let resumes = req.method() == Method::GET
            && req.uri().path() == c.path
            && req.headers().contains_key(names::LAST_EVENT_ID);
        if self.is_shutting_down() && !posts_messages && !resumes {
            let is_modern = protocol_version_header(req.headers())
                .ok()
                .flatten()
                .is_some_and(version::is_modern);
            return Err(self.refusal_in(ProxyError::ShuttingDown, is_modern, None));
        }
        let path = req.uri().path();
        if path == c.path {
            self.mcp(req).await
        } else if path == c.sse_path {
            Ok(legacy::handle_sse(self, req).await?)
        } else {
            Ok(legacy::handle_message(self, req).await?)
        }
    }

    /// RFC 9728 metadata; any origin may read it (browser-based clients discover with it).
    fn resource_metadata(&self) -> Response<Body> {
        let doc = self
            .auth
            .metadata()
            .map(|m| m.document())
            .unwrap_or_default();
        let mut r = json_response(StatusCode::OK, doc);
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        r
    }

    /// The MCP endpoint: decides the request's era once and hands it to
    /// that era's front-end.
    ///
    /// - `MCP-Protocol-Version` must be visible ASCII (else 400, with
    ///   -32020 for a message whose `_meta` names 2026-07-28);
    /// - a 2026-07-28 value goes to [`modern`];
    /// - a POST with no session id whose single message carries a
    ///   `_meta` protocol version (and no session-era header, or one
    ///   beside a `_meta` naming 2026-07-28: -32020) is a 2026-07-28
    ///   request too, and an unknown version in it gets that revision's
    ///   -32022;
    /// - everything else is session-era ([`streamable`]), where an unknown
    ///   version is a plain 400 that never uses the 2026-07-28 codes.
    async fn mcp(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
        // A bad header waits for the body when there is one: it decides
        // which revision's error the request gets.
        let (version, bad_version) = match protocol_version_header(req.headers()) {
            Ok(v) => (v.map(str::to_owned), None),
            Err(e) if req.method() == Method::POST => (None, Some(e)),
            Err(e) => return Err(e.into()),
        };
        let modern_header = version.as_deref().is_some_and(version::is_modern);
        if req.method() != Method::POST {
            if modern_header {
                return Ok(modern::not_post(&self)?);
            }
            return match *req.method() {
                Method::GET => Ok(streamable::get(self, req).await?),
                Method::DELETE => Ok(streamable::delete(self, req).await?),
                _ => Err(ProxyError::MethodNotAllowed("GET, POST, DELETE, OPTIONS").into()),
            };
        }
        let (parts, body) = req.into_parts();
        require_json(&parts.headers)?;
        let bytes = self.read_body(body, &parts.headers).await?;
        let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if modern_header && batch {
            return Err(ProxyError::InvalidRequest(
                "JSON-RPC batches are not part of protocol 2026-07-28".into(),
            )
            .into());
        }
        let (frames, batch) = match parse_body(bytes.clone(), self.config.max_batch) {
            Ok(parsed) => parsed,
            // A 2026-07-28 request refused as it is read (a lone surrogate
            // in its progress token, `1e400` in its arguments, `jsonrpc`
            // not "2.0") is still answered by its id when that can be
            // read (`basic/index`, "Error Responses").
            Err(e) if modern_header => {
                return Err(self
                    .refusal_in(e, true, None)
                    .answering(jsonrpc::readable_id(&bytes)));
            }
            Err(e) => return Err(e.into()),
        };
        let frames = trace::carry(&parts.headers, frames);
        let has_session = parts.headers.contains_key(names::MCP_SESSION_ID);
        let single = (!batch).then(|| &frames[0]);
        // A `_meta` that names 2026-07-28 makes the request that
        // revision's whatever the header says (a session-era header on it
        // is then that revision's header mismatch, -32020).
        let modern_body = single.is_some_and(|f| {
            !has_session
                && match version.as_deref() {
                    None => modern::body_is_modern(f),
                    Some(v) => modern::meta_version(f)
                        .is_some_and(|b| !version::is_session(v) || version::is_modern(&b)),
                }
        });
        if self.refuses_while_draining(&frames, has_session && self.config.mode != Mode::Stateless)
        {
            // In the request's revision: a 2026-07-28 one gets its id and
            // -32603, as its other refusals do (`modern::serve`).
            return Err(self.refusal_in(
                ProxyError::ShuttingDown,
                modern_header || modern_body,
                single,
            ));
        }
        if let Some(e) = bad_version {
            // A message that speaks 2026-07-28 makes it that revision's
            // header validation failure (-32020): a dual-era client reads
            // the session era's plain 400 as a legacy server's and falls
            // back to `initialize`.
            let modern = !has_session
                && single
                    .and_then(modern::meta_version)
                    .is_some_and(|v| version::is_modern(&v));
            return Err(if modern {
                ProxyError::HeaderMismatch(e.to_string())
                    .answering(single.and_then(modern::refusal_id))
            } else {
                e.into()
            });
        }
        if modern_header || modern_body {
            // Invariant: not a batch (refused above, or `single` was set).
            let frame = frames.into_iter().next().expect("one frame");
            return modern::serve(self, &parts, frame).await;
        }
        let initialize = single.is_some_and(|f| f.method() == Some("initialize"));
        if let Some(v) = version.as_deref()
            && !version::is_session(v)
            && !initialize
        {
            return Err(ProxyError::BadProtocolVersion(format!(
                "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                version::SESSION_VERSIONS.join(", ")
            ))
            .into());
        }
        Ok(streamable::post(self, &parts, frames, batch).await?)
    }

    /// Per-session mode: when the session's child exits, the session ends
    /// (404 afterwards). The watcher is one of the app's tasks.
    pub fn watch_child(self: &Arc<Self>, session: &Arc<Session>) {
        let app = self.clone();
        let upstream = session.upstream.clone();
        let id = session.id.clone();
        let cancel = session.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = upstream.ended() => app.sessions.remove(&id, "its MCP server process exited").await,
                _ = cancel.cancelled() => false,
            };
        });
    }

    /// `GET /health` of this server.
    pub fn health(&self) -> Response<Body> {
        let children = self.config.child.children.live();
        let mode = match self.config.mode {
            Mode::PerSession => "per-session",
            Mode::Shared => "shared",
            Mode::Stateless => "stateless",
        };
        let body = serde_json::json!({
            "status": if self.is_shutting_down() { "shutting-down" } else { "ok" },
            "service": "mcp-proxy",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "sessions": self.sessions.len(),
            "children": children,
            "replay_bytes": self.replay.used(),
            "log_lines_dropped": crate::logging::dropped(),
            "audit_records_dropped": self.audit.dropped(),
            "mode": mode,
            "auth": self.auth.config().modes().join("+"),
            "auth_modes": self.auth.config().modes(),
        });
        json_response(StatusCode::OK, body)
    }

    /// `GET /metrics` of this server (`/servers/<name>/metrics` for a named
    /// one): the Host check, then, with `--metrics-auth`, authentication.
    pub async fn metrics_endpoint(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        self.access
            .check_probe_host(req.headers(), req.uri().authority().map(|a| a.as_str()))?;
        if self.config.metrics_auth {
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
            self.auth.authenticate(req.headers(), peer).await?;
        }
        Ok(self.metrics_response())
    }

    fn metrics_response(&self) -> Response<Body> {
        response::metrics_text(self.metrics_text())
    }

    /// This server's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(crate::metrics::Readings {
            sessions_open: self.sessions.len(),
            log_lines_dropped: crate::logging::dropped(),
            audit_records_dropped: self.audit.dropped(),
        })
    }

    /// `GET /ready` of this server: 503 while it cannot serve.
    pub fn ready(&self) -> Response<Body> {
        let failing = self.spawn_failures.load(Ordering::Relaxed) >= SPAWN_FAILURES_NOT_READY;
        let shared_health = self.shared.get().map(|u| u.health());
        let shared_down = shared_health
            .as_ref()
            .is_some_and(|h| *h != crate::upstream::Health::Ready);
        let looping = shared_health == Some(crate::upstream::Health::CrashLooping);
        let (status, why) = if self.is_shutting_down() {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        } else if failing {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the MCP server keeps failing to start",
            )
        } else if looping {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the shared MCP server keeps exiting soon after it starts",
            )
        } else if shared_down {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the shared MCP server is restarting",
            )
        } else {
            (StatusCode::OK, "ready")
        };
        json_response(status, serde_json::json!({ "status": why }))
    }
}

/// `MCP-Protocol-Version`, if sent: a value that is not visible ASCII is
/// a bad version (400), never taken for an absent header. A second copy
/// with another value is a bad version too, never read past (an
/// intermediary that reads the other copy would disagree on the
/// revision); a 2026-07-28 first copy is left to that revision's check,
/// which refuses any second copy with its own code.
fn protocol_version_header(headers: &HeaderMap) -> Result<Option<&str>, ProxyError> {
    fn ascii(v: &HeaderValue) -> Result<&str, ProxyError> {
        v.to_str().map(str::trim).map_err(|_| {
            ProxyError::BadProtocolVersion("MCP-Protocol-Version must be visible ASCII".into())
        })
    }
    let mut copies = headers.get_all(names::MCP_PROTOCOL_VERSION).iter();
    let Some(first) = copies.next().map(ascii).transpose()? else {
        return Ok(None);
    };
    if !version::is_modern(first) {
        for other in copies {
            if ascii(other)? != first {
                return Err(ProxyError::BadProtocolVersion(
                    "MCP-Protocol-Version is sent more than once, with different values".into(),
                ));
            }
        }
    }
    Ok(Some(first))
}

/// The longest request id (or `_meta.progressToken`) a client may send,
/// in bytes of JSON. Both are kept, byte for byte, while their request is
/// in flight, so this and the bound on requests in flight bound what one
/// client holds; real clients send numbers or UUIDs.
pub const MAX_REQUEST_ID_BYTES: usize = 1024;

/// Refuses (400, -32600) requests among `frames` whose id or progress
/// token is over [`MAX_REQUEST_ID_BYTES`]. Every front end checks a POST
/// with this before anything of it reaches the child.
pub fn check_request_ids(frames: &[Frame]) -> Result<(), ProxyError> {
    for f in frames.iter().filter(|f| f.kind() == jsonrpc::Kind::Request) {
        let id = f.id().map_or(0, <[u8]>::len);
        let token = f
            .locate_in_params(&["_meta", "progressToken"])
            .map_or(0, |at| at.len());
        if id.max(token) > MAX_REQUEST_ID_BYTES {
            return Err(ProxyError::InvalidRequest(format!(
                "a request id or progress token may be at most {MAX_REQUEST_ID_BYTES} bytes; this one has {}",
                id.max(token)
            )));
        }
    }
    Ok(())
}

/// Parses a POST body into messages; `true` when it was a batch. A batch
/// over `max_batch` messages is refused before anything reaches the child.
pub fn parse_body(bytes: Bytes, max_batch: usize) -> Result<(Vec<Frame>, bool), ProxyError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'[') {
        return Ok((vec![Frame::parse(bytes, true)?], false));
    }
    let items: Vec<&RawValue> =
        serde_json::from_slice(&bytes).map_err(|e| jsonrpc::FrameError::NotJson(e.to_string()))?;
    if items.is_empty() {
        return Err(ProxyError::InvalidRequest("empty batch".into()));
    }
    if items.len() > max_batch {
        warn!(
            messages = items.len(),
            max_batch, "batch over --max-batch refused"
        );
        return Err(ProxyError::InvalidRequest(format!(
            "a batch may carry at most {max_batch} messages (--max-batch); this one has {}",
            items.len()
        )));
    }
    let frames = items
        .iter()
        .map(|raw| Frame::parse(bytes.slice_ref(raw.get().as_bytes()), true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((frames, true))
}

fn preflight(origin: Option<&str>, headers: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(crate::sse::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    if origin.is_some() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        // Echo what was asked for (Mcp-Param-* names are open-ended) after the base set.
        let base = "content-type, accept, authorization, x-api-key, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name";
        let asked = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let value = if asked.is_empty() {
            base.to_string()
        } else {
            format!("{base}, {asked}")
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    r
}

/// Reads a body up to `limit` bytes (413 beyond).
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        warn!(
            limit,
            declared, "request body over --max-body-bytes refused"
        );
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            warn!(limit, "request body over --max-body-bytes refused");
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::InvalidRequest(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

/// Requires `Content-Type: application/json` (parameters allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ProxyError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ProxyError::UnsupportedMediaType)
    }
}

/// What the client's `Accept` allows for an answer carrying a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `text/event-stream`.
    Sse,
    /// `application/json`.
    Json,
}

/// Picks the answer format leniently: SSE when it is acceptable (it can
/// carry progress and server requests), JSON when only that is; an
/// absent `Accept` or `*/*` means SSE. 406 only when neither is acceptable
/// (transport.md §7.F).
pub fn negotiate(headers: &HeaderMap) -> Result<Answer, ProxyError> {
    match accepts(headers) {
        (true, _) => Ok(Answer::Sse),
        (false, true) => Ok(Answer::Json),
        (false, false) => Err(ProxyError::NotAcceptable(
            "Accept must allow application/json or text/event-stream",
        )),
    }
}

/// Which of (SSE, JSON) the client's `Accept` allows; none given allows both.
///
/// Each type is decided by the most specific range that names it
/// (RFC 9110 12.5.1: `text/event-stream` before `text/*` before `*/*`), so
/// `*/*, text/event-stream;q=0` allows JSON only; ranges of equal
/// specificity allow the type if any of them does.
pub fn accepts(headers: &HeaderMap) -> (bool, bool) {
    // What clients send, as they spell it, decided without a parse.
    let mut all = headers.get_all(header::ACCEPT).iter();
    if let (Some(one), None) = (all.next(), all.next())
        && let Some(known) = common_accept(one.as_bytes())
    {
        return known;
    }
    accepts_parsed(headers)
}

/// [`accepts`] of the `Accept` values the SDKs and most clients send.
fn common_accept(value: &[u8]) -> Option<(bool, bool)> {
    match value {
        b"application/json, text/event-stream" | b"text/event-stream, application/json" => {
            Some((true, true))
        }
        b"application/json" => Some((false, true)),
        b"text/event-stream" => Some((true, false)),
        _ => None,
    }
}

/// [`accepts`] by parsing the media ranges.
fn accepts_parsed(headers: &HeaderMap) -> (bool, bool) {
    let mut values = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    if values.peek().is_none() {
        return (true, true);
    }
    // Per type: (specificity of the best range seen, whether it allows it).
    let (mut sse, mut json) = (None::<(u8, bool)>, None::<(u8, bool)>);
    let take = |best: &mut Option<(u8, bool)>, rank: u8, allowed: bool| match best {
        Some((r, a)) if *r == rank => *a |= allowed,
        Some((r, _)) if *r > rank => {}
        _ => *best = Some((rank, allowed)),
    };
    for item in values.flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or("").trim();
        let allowed = !parts.any(refuses);
        let is = |name: &str| mime.eq_ignore_ascii_case(name);
        if is("text/event-stream") {
            take(&mut sse, 2, allowed);
        } else if is("application/json") {
            take(&mut json, 2, allowed);
        } else if is("text/*") {
            take(&mut sse, 1, allowed);
        } else if is("application/*") {
            take(&mut json, 1, allowed);
        } else if mime == "*/*" {
            take(&mut sse, 0, allowed);
            take(&mut json, 0, allowed);
        }
    }
    let allowed = |best: Option<(u8, bool)>| best.is_some_and(|(_, a)| a);
    (allowed(sse), allowed(json))
}

/// Whether a media-range parameter is `q=0` in any spelling (`Q = 0.000`):
/// the range then refuses its types.
fn refuses(param: &str) -> bool {
    let mut p = param.bytes().filter(|b| *b != b' ' && *b != b'\t');
    if !matches!(
        (p.next(), p.next(), p.next()),
        (Some(b'q' | b'Q'), Some(b'='), Some(b'0'))
    ) {
        return false;
    }
    match p.next() {
        None => true,
        Some(b'.') => {
            let mut digits = 0;
            p.all(|b| {
                digits += 1;
                b == b'0'
            }) && digits <= 3
        }
        Some(_) => false,
    }
}

/// How long [`App::give_up_answers`] waits for the multiplexers to fail
/// what is in flight before it ends the answers regardless.
const GIVE_UP_WAIT: Duration = Duration::from_secs(1);

/// Serves connections until `shutdown` (see [`listener::accept`] for
/// the caps and timeouts every connection gets), then drains: new work is
/// refused ([`App::begin_drain`]), the streams that never finish by
/// themselves are ended first (GET streams, and a legacy stream once
/// nothing is in flight on it), requests in flight get up to the grace
/// period for their answers (the clients' answers to the servers' own
/// requests still come in), then children are stopped.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    let reaper = tokio::spawn(reap_idle(app.clone(), shutdown.clone()));
    let handler = {
        let app = app.clone();
        move |req| app.clone().handle(req)
    };
    let connections =
        listener::accept(listener, ListenLimits::of(&app.config), handler, &shutdown).await;
    info!("shutting down: refusing new work, draining requests in flight");
    app.begin_drain();
    let grace = app.config.child.grace;
    let settled = app.sessions.settled(app.config.replay_linger);
    if !connections.drain(grace, settled).await {
        warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open, or answers still awaited, after the grace period; closing them"
        );
    }
    // Answers not in by now are not waited for: each gets an error, and
    // each stream ends.
    app.give_up_answers().await;
    reaper.abort();
    app.stop_children().await;
    // Cleanups started by requests (detaching abandoned ports, stopping
    // children of abandoned initializes) finish before the proxy returns.
    app.tasks.close();
    if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
        warn!("request cleanups still running after the grace period");
    }
    // Each child's writer, stderr drain and exit watcher end with it.
    if !app.config.child.children.wait_tasks(grace).await {
        warn!("a child's stdin writer or stderr reader still running after the grace period");
    }
    info!("shutdown complete");
}

/// Ends idle sessions of `app` until `shutdown` (also used per named server).
pub async fn reap_idle(app: Arc<App>, shutdown: CancellationToken) {
    let idle = app.config.session_idle_timeout;
    let oneshot = app.config.oneshot_idle_timeout.min(idle);
    let mut every = (oneshot / 10).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let linger = app.config.replay_linger;
    if !linger.is_zero() {
        // Lingering replay buffers go within half their time again.
        every = every.min((linger / 2).max(Duration::from_millis(100)));
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                app.sessions.reap(idle, oneshot).await;
                app.reap_principal_children();
                app.replay.expire(std::time::Instant::now());
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn accept_negotiation_is_lenient() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Answer::Sse);
        assert_eq!(
            negotiate(&accept("application/json, text/event-stream")).unwrap(),
            Answer::Sse
        );
        assert_eq!(
            negotiate(&accept("text/event-stream")).unwrap(),
            Answer::Sse
        );
        assert_eq!(
            negotiate(&accept("application/json")).unwrap(),
            Answer::Json
        );
        assert_eq!(negotiate(&accept("*/*")).unwrap(), Answer::Sse);
        assert_eq!(
            negotiate(&accept("application/json, text/event-stream;q=0")).unwrap(),
            Answer::Json
        );
        assert!(negotiate(&accept("text/html")).is_err());
        // Zero in every spelling refuses; any other weight does not.
        for q in ["q=0", "q=0.", "q=0.000", " q = 0.0", "Q=0"] {
            let h = accept(&format!("Application/JSON, text/event-stream;{q}"));
            assert_eq!(accepts(&h), (false, true), "{q}");
        }
        for q in ["q=0.001", "q=0.5", "q=1", "q=0.0001x"] {
            let h = accept(&format!("application/json, TEXT/Event-Stream;{q}"));
            assert_eq!(accepts(&h), (true, true), "{q}");
        }
        assert_eq!(accepts(&accept("text/*, application/*")), (true, true));
        // The most specific range decides, whatever the order.
        let cases = [
            ("*/*, text/event-stream;q=0", (false, true)),
            ("text/event-stream;q=0, */*", (false, true)),
            ("application/*, application/json;q=0", (false, false)),
            ("*/*;q=0, application/json", (false, true)),
            ("text/*;q=0, text/event-stream", (true, false)),
            ("application/json;q=0, application/json", (false, true)),
            ("*/*;q=0", (false, false)),
        ];
        for (value, want) in cases {
            assert_eq!(accepts(&accept(value)), want, "{value}");
        }
    }

    /// The values decided without a parse are decided as the parse does.
    #[test]
    fn common_accept_values_agree_with_the_parse() {
        for value in [
            "application/json, text/event-stream",
            "text/event-stream, application/json",
            "application/json",
            "text/event-stream",
        ] {
            let h = accept(value);
            let known = common_accept(value.as_bytes());
            assert!(known.is_some(), "{value}");
            assert_eq!(known, Some(accepts_parsed(&h)), "{value}");
        }
        // Anything else is parsed: a second copy of the header, a weight.
        let mut two = accept("application/json");
        two.append(header::ACCEPT, "text/event-stream;q=0".parse().unwrap());
        assert_eq!(accepts(&two), (false, true));
        assert_eq!(
            accepts(&accept("application/json, text/event-stream;q=0")),
            (false, true)
        );
    }

    #[test]
    fn batches_split_into_frames_sharing_the_body_and_are_capped() {
        let body = Bytes::from_static(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
        );
        let (frames, batch) = parse_body(body.clone(), 8).unwrap();
        assert!(batch);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].id().unwrap(), b"1");
        assert_eq!(frames[1].kind(), crate::jsonrpc::Kind::Notification);
        assert!(matches!(
            parse_body(body, 1),
            Err(ProxyError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_body(Bytes::from_static(b"[]"), 8),
            Err(ProxyError::InvalidRequest(_))
        ));
        assert!(parse_body(Bytes::from_static(b"[1]"), 8).is_err());
    }

    #[test]
    fn a_version_header_that_is_not_ascii_is_refused_not_ignored() {
        let mut h = HeaderMap::new();
        assert_eq!(protocol_version_header(&h).unwrap(), None);
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_bytes(b"2025-06-18\xe9").unwrap(),
        );
        assert!(matches!(
            protocol_version_header(&h),
            Err(ProxyError::BadProtocolVersion(_))
        ));
    }

    /// Regression: of two `MCP-Protocol-Version` copies only the first was
    /// read, so `2025-06-18` then `bogus` (or a later copy that is not
    /// ASCII) passed on a session.
    #[test]
    fn a_second_version_header_with_another_value_is_refused() {
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("mcp-protocol-version", HeaderValue::from_bytes(v).unwrap());
            }
            h
        };
        for values in [
            &[&b"2025-06-18"[..], b"bogus"][..],
            &[b"2025-06-18", b"2025-03-26"],
            &[b"2025-06-18", b"2026-07-28"],
            &[b"2025-06-18", b"\xe9"],
        ] {
            assert!(
                matches!(
                    protocol_version_header(&with(values)),
                    Err(ProxyError::BadProtocolVersion(_))
                ),
                "{values:?}"
            );
        }
        // The same value twice is one value; a 2026-07-28 first copy is
        // refused by that revision's own header check (-32020).
        let same = with(&[b"2025-06-18", b" 2025-06-18"]);
        assert_eq!(protocol_version_header(&same).unwrap(), Some("2025-06-18"));
        let modern = with(&[b"2026-07-28", b"2025-06-18"]);
        assert_eq!(
            protocol_version_header(&modern).unwrap(),
            Some("2026-07-28")
        );
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(require_json(&h).is_ok());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(require_json(&h).is_err());
    }
}
