//! The multiplexer: one child process, any number of attached sessions.
//!
//! Owns: the child-side id space and every routing table. Client request ids
//! become proxy-unique integers on the way in and go back byte-exact on the
//! way out; `_meta.progressToken` is rewritten the same way, and
//! `notifications/cancelled` in both directions (spec `basic/utilities/
//! {cancellation,progress}`; transport.md §4.4–4.6, §7.B). Every message the
//! child writes goes to exactly one place, except list-changed
//! notifications, which go once to every session.
//!
//! Per-session mode is this same multiplexer with one session attached, so
//! both modes share one code path. Shared mode adds: one `initialize`
//! (cached and replayed to later sessions), reference-counted resource
//! subscriptions, the most verbose `logging/setLevel` any session asked
//! for, and restarts of a crashed child.
//!
//! Routing of what the child sends:
//! - responses: by id, to the stream or waiter of that request;
//! - `notifications/progress`: by token, to that request's stream;
//! - `notifications/*/list_changed`: to every session's notification stream;
//! - `notifications/resources/updated`: to the sessions subscribed to the URI;
//! - other notifications (logs): to the request in flight when exactly one
//!   is, else to the only session, else dropped (broadcasting would leak);
//! - requests (sampling, roots, elicitation): the same rule; when no stream
//!   can carry one, the child gets an error at once instead of waiting
//!   forever (transport.md §2.9). `ping` is answered here.
//! - in shared mode, anything tied to a task (`notifications/tasks/status`,
//!   `_meta` related-task) goes to the session that created the task, and
//!   tasks stay private to it (module `tasks`).
//! - across eras, a server-to-client request and an `input_required` result
//!   are translated into each other (module `mrtr`): a 2026-07-28 child's
//!   questions reach a session-era client as requests, a 2025-era child's
//!   requests reach a 2026-07-28 client as `input_required`.
//!
//! Does not own: HTTP, session ids or eras (see [`crate::session`], [`crate::http`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::child::{ChildError, ChildHandle, ChildSpec, Exit};
use crate::jsonrpc::{self, Frame, Kind, LineError, Message, code};
use crate::sse::Outlet;
pub use crate::version::UpstreamProtocol;
use crate::version::{LATEST_SESSION_VERSION, MODERN_VERSION, SESSION_VERSIONS};

mod mrtr;
mod tasks;

use tasks::TaskOwners;

/// How long the proxy waits for the child's answer to its own requests
/// (the shared child's re-initialization, subscription bookkeeping).
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the handshake (`initialize`, the era probe and its fallback,
/// all together) may take when `--request-timeout` is not set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the supervisor waits, after the child's stdout closed, for the
/// exit that usually comes with it (to report it) before stopping a child
/// that keeps running without its stdout.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// How long a message may wait for room in the child's stdin queue when
/// `--request-timeout` is not set. A child that stops reading its input
/// fails the request after this instead of holding its handler forever.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the proxy makes from the child's own output (the answer to its
/// `ping`, refusals of its requests, cancellations of expired requests) are
/// queued without waiting, in tasks of their own; past this many in flight
/// (a child that floods requests and reads nothing) further ones are
/// dropped with a log line, so the reader of the child's stdout never
/// waits on its stdin.
const MAX_CONTROL_WRITES: usize = 1024;

/// Parked 2026-07-28 calls (waiting for the client's retry) per child;
/// past this, a further server-to-client request is refused at once.
pub const MAX_PARKED: usize = 1024;

/// The child's server-to-client requests waiting for a client's answer,
/// per child; past this, further ones are refused at once.
pub const MAX_SERVER_REQUESTS: usize = 1024;

/// The first wait before restarting a crashed shared child; it doubles
/// with every crash up to `--restart-max-backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The wait before the next restart: back to the first after a child that
/// stayed up longer than the longest wait (it was healthy), else `prev`,
/// which doubles after each restart.
fn next_backoff(prev: Duration, uptime: Duration, cap: Duration) -> Duration {
    if uptime >= cap { FIRST_BACKOFF } else { prev }
}

/// Why a message could not be passed to the child.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The child is not running (exited, restarting, or stopped).
    #[error("the MCP server process is not running ({0})")]
    ChildExited(String),
    /// The child could not be started.
    #[error(transparent)]
    Spawn(#[from] ChildError),
    /// The child answered the proxy's own request with this JSON-RPC error object.
    #[error("the MCP server answered {method} with an error: {}", String::from_utf8_lossy(.error))]
    Rpc {
        /// The method the proxy sent.
        method: &'static str,
        /// The raw `error` object.
        error: Bytes,
    },
    /// The child did not take the message within the write deadline: it
    /// stopped reading its input.
    #[error("the MCP server did not read its input within {} ms", .0.as_millis())]
    NotReading(Duration),
    /// The session (port) was detached while the request was on its way.
    #[error("the session ended")]
    SessionEnded,
    /// The client reused the id of one of its requests still in flight.
    #[error("request id {0} is already in use by a request in flight")]
    DuplicateId(String),
    /// The handshake did not finish within its budget.
    #[error("the MCP server did not answer initialize within {} ms", .0.as_millis())]
    HandshakeTimeout(Duration),
    /// The child answered the proxy's own request with an error or not at all.
    #[error("the MCP server did not complete {method}: {reason}")]
    Internal {
        /// The method the proxy sent.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Where a request's response (and what relates to it) goes.
pub enum Reply {
    /// An SSE stream: related messages, then the response.
    Stream(Arc<Outlet>),
    /// A single waiter for the response only (JSON response mode, batches,
    /// the proxy's own requests).
    Once(oneshot::Sender<Message>),
    /// Nobody, for now: a 2026-07-28 client's call parked while the client
    /// gathers input (see `Parked`).
    Detached,
    /// A `tools/call`: the reply within, and its audit record, written when
    /// the answer goes back or, unanswered, when dropped (see
    /// [`crate::audit::ToolCall`]; the HTTP layer wraps).
    Audited(Box<Reply>, crate::audit::ToolCall),
}

impl Reply {
    fn respond(self, bytes: &[u8]) {
        self.respond_message(Bytes::copy_from_slice(bytes).into());
    }

    /// As `respond`, without copying an owned answer (large tool results).
    fn respond_message(self, message: Message) {
        match self {
            Reply::Stream(o) => o.send_response(&message.into_bytes()),
            Reply::Once(tx) => {
                let _ = tx.send(message);
            }
            Reply::Detached => {}
            Reply::Audited(reply, call) => {
                call.answered(&message);
                reply.respond_message(message);
            }
        }
    }

    fn stream(&self) -> Option<&Arc<Outlet>> {
        match self {
            Reply::Stream(o) => Some(o),
            Reply::Once(_) | Reply::Detached => None,
            Reply::Audited(reply, _) => reply.stream(),
        }
    }
}

/// What kind of client a session is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A session-based client (2024-11-05 … 2025-11-25): can take requests.
    Session,
    /// A 2026-07-28 client: streams may carry notifications, never requests.
    Modern,
}

/// The log levels of `logging/setLevel`, least to most severe.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

fn log_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// A session as the multiplexer sees it.
pub struct Port {
    /// Key in the routing tables.
    pub key: u64,
    /// Session id (for logs only).
    pub label: Arc<str>,
    /// Whether it can take server-to-client requests.
    pub kind: PortKind,
    /// The stream for messages unrelated to any request (the GET stream, or
    /// the single stream of a legacy session).
    notify: Mutex<Option<Arc<Outlet>>>,
    /// Client capabilities from its `initialize` (sampling, roots, elicitation).
    capabilities: Mutex<Value>,
    /// `clientInfo` from its `initialize`, forwarded in `_meta` to a modern child.
    client_info: Mutex<Value>,
    /// Set on a 2026-07-28 `subscriptions/listen` port.
    listen: Mutex<Option<ListenFilter>>,
    /// The level this session asked for with `logging/setLevel`.
    log_level: Mutex<Option<usize>>,
    /// The authenticated principal behind this port (`None`: anonymous);
    /// its tasks are that principal's (see [`tasks`]).
    principal: Mutex<Option<Arc<str>>>,
}

impl Port {
    /// A new port; `key` must be unique among the ports of one proxy (see
    /// [`PortKeys`]).
    pub fn new(key: u64, label: Arc<str>, kind: PortKind) -> Arc<Port> {
        Arc::new(Port {
            key,
            label,
            kind,
            notify: Mutex::new(None),
            capabilities: Mutex::new(Value::Null),
            client_info: Mutex::new(Value::Null),
            listen: Mutex::new(None),
            log_level: Mutex::new(None),
            principal: Mutex::new(None),
        })
    }

    /// Records the authenticated principal behind this port.
    pub fn set_principal(&self, principal: Option<&str>) {
        *lock(&self.principal) = principal.map(Arc::from);
    }

    /// Who this port is, for the task table.
    fn principal(&self) -> Option<Arc<str>> {
        lock(&self.principal).clone()
    }

    /// The stream for unrelated messages: the one attached, or a new one
    /// from `make`, decided under one lock so that two concurrent GETs
    /// cannot both attach a stream. `true` when it was already there.
    pub fn notify_or_attach(&self, make: impl FnOnce() -> Arc<Outlet>) -> (Arc<Outlet>, bool) {
        let mut notify = lock(&self.notify);
        match notify.as_ref() {
            Some(o) if !o.is_finished() => (o.clone(), true),
            _ => {
                let o = make();
                *notify = Some(o.clone());
                (o, false)
            }
        }
    }

    /// Sets (or replaces) the stream for unrelated messages; returns the old one.
    pub fn set_notify(&self, outlet: Option<Arc<Outlet>>) -> Option<Arc<Outlet>> {
        std::mem::replace(&mut *lock(&self.notify), outlet)
    }

    /// The stream for unrelated messages, if one is attached.
    pub fn notify_stream(&self) -> Option<Arc<Outlet>> {
        lock(&self.notify).clone()
    }

    /// Records the client's capabilities and identity from its initialize params.
    pub fn set_client(&self, params: &Value) {
        *lock(&self.capabilities) = params.get("capabilities").cloned().unwrap_or(Value::Null);
        *lock(&self.client_info) = params.get("clientInfo").cloned().unwrap_or(Value::Null);
    }

    /// Records the capabilities a 2026-07-28 request declares in `_meta`.
    fn note_modern_capabilities(&self, frame: &Frame) {
        let caps = frame.meta("io.modelcontextprotocol/clientCapabilities");
        *lock(&self.capabilities) = caps.unwrap_or(Value::Null);
    }

    fn supports(&self, method: &str) -> bool {
        let cap = match method {
            "sampling/createMessage" => "sampling",
            "roots/list" => "roots",
            "elicitation/create" => "elicitation",
            _ => return true,
        };
        lock(&self.capabilities).get(cap).is_some()
    }

    fn send_unrelated(&self, bytes: &[u8]) -> bool {
        let listen = lock(&self.listen).clone();
        let rewritten;
        let bytes = match listen {
            None => bytes,
            Some(l) => match l.admit(bytes) {
                Some(b) => {
                    rewritten = b;
                    &rewritten
                }
                None => return false,
            },
        };
        match lock(&self.notify).as_ref() {
            Some(o) if !o.is_finished() => {
                o.send(bytes);
                true
            }
            _ => false,
        }
    }

    /// Whether this is a session that can own tasks (not a stateless or
    /// 2026-07-28 request, which has no identity between requests).
    fn has_identity(&self) -> bool {
        self.kind == PortKind::Session && &*self.label != STATELESS_LABEL
    }

    /// Makes this port a 2026-07-28 `subscriptions/listen` stream: only what
    /// `filter` accepts reaches it, tagged with the subscription id.
    pub fn set_listen(&self, filter: ListenFilter) {
        *lock(&self.listen) = Some(filter);
    }
}

/// Hands out port keys, unique within one proxy (it lives in the proxy's
/// shared state, not in a static, so in-process proxies share nothing).
#[derive(Debug)]
pub struct PortKeys(AtomicU64);

impl Default for PortKeys {
    fn default() -> Self {
        // 0 is the proxy's own requests.
        PortKeys(AtomicU64::new(1))
    }
}

impl PortKeys {
    /// The next key.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Label of the port of a request that belongs to no session.
pub const STATELESS_LABEL: &str = "stateless";

/// `_meta` key naming the `subscriptions/listen` request a notification belongs to.
pub const SUBSCRIPTION_ID_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// What a 2026-07-28 listener accepted, and its id.
#[derive(Debug, Clone, Default)]
pub struct ListenFilter {
    /// The listen request's id, raw JSON.
    pub id: Box<[u8]>,
    /// `toolsListChanged`.
    pub tools: bool,
    /// `promptsListChanged`.
    pub prompts: bool,
    /// `resourcesListChanged`.
    pub resources: bool,
    /// `resourceSubscriptions`.
    pub uris: Vec<String>,
}

impl ListenFilter {
    /// The notification as this listener should see it, or `None` if it did not ask for it.
    fn admit(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(bytes).ok()?;
        let wanted = match v.get("method").and_then(Value::as_str)? {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => {
                let uri = v
                    .pointer("/params/uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.uris.iter().any(|u| u == uri)
            }
            _ => false,
        };
        if !wanted {
            return None;
        }
        let id: Value = serde_json::from_slice(&self.id).ok()?;
        let params = v
            .as_object_mut()?
            .entry("params")
            .or_insert_with(|| serde_json::json!({}));
        let meta = params
            .as_object_mut()?
            .entry("_meta")
            .or_insert_with(|| serde_json::json!({}));
        meta.as_object_mut()?.insert(SUBSCRIPTION_ID_KEY.into(), id);
        serde_json::to_vec(&v).ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is plain tables; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a 2026-07-28 client needs added to a 2025-era child's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Nothing: same era on both sides.
    None,
    /// `resultType` (every 2026-07-28 result has one).
    Complete,
    /// `resultType` plus the caching hints of list and read results.
    Cacheable,
}

/// What the multiplexer reads in an answer about tasks (shared mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskAnswer {
    /// Nothing.
    None,
    /// A task-augmented request: the answer may create a task for this session.
    Create,
    /// `tasks/list`: keep only what this session may see.
    List,
}

struct Pending {
    port: u64,
    fill: Fill,
    tasks: TaskAnswer,
    client_id: Box<[u8]>,
    /// The client's own progress token, restored on progress notifications.
    token: Option<Box<[u8]>>,
    /// Set when an `input_required` answer is to be turned into questions
    /// to the client and a repeated call.
    retry: Option<Retry>,
    /// A 2026-07-28 client's call to a 2025-era child that may answer the
    /// child's server-to-client request as `input_required`.
    parkable: bool,
    /// When `--request-timeout` ends it (its key in `Routes::timers`).
    deadline: Option<Instant>,
    reply: Reply,
}

/// A 2026-07-28 client's call whose 2025-era child asked the client
/// something: the client got `input_required` with a `requestState` naming
/// this entry, and its retry brings the answer.
struct Parked {
    /// The child's request, raw id, waiting for the client's answer.
    server_request: Box<[u8]>,
    /// The call's proxy id; it stays in `pending` with a detached reply.
    call: u64,
    /// The child's answer to the call, if it came before the retry.
    early: Option<(Pending, Frame)>,
}

/// What repeating a call after `input_required` needs.
struct Retry {
    /// The call as first sent, before id and token rewriting.
    frame: Frame,
    /// Rounds of input asked for so far.
    rounds: u8,
}

struct ServerRequest {
    /// The id as the child wrote it; the client's answer goes back with it.
    raw_id: Box<[u8]>,
    port: u64,
    outlet: Option<Arc<Outlet>>,
    /// Set when the proxy itself asked (for a 2026-07-28 child's
    /// `input_required`): the client's answer goes here, not to the child.
    answer: Option<oneshot::Sender<Frame>>,
}

#[derive(Default)]
struct Routes {
    pending: HashMap<u64, Pending>,
    /// (port, the client's id in canonical form, [`jsonrpc::id_key`]) → proxy id.
    by_client: HashMap<(u64, Box<[u8]>), u64>,
    /// The child's requests to clients, by canonical id.
    server_requests: HashMap<Box<[u8]>, ServerRequest>,
    /// Request deadlines, soonest first: one timer task serves them all,
    /// and an answered request leaves no timer behind.
    timers: BTreeSet<(Instant, u64)>,
    ports: HashMap<u64, Arc<Port>>,
    subscriptions: HashMap<String, HashSet<u64>>,
    /// Requests in flight that belong to a client (not the proxy's own).
    client_pending: usize,
    /// The level last sent to the child.
    child_log_level: Option<usize>,
    /// Which session created which task (shared mode).
    tasks: TaskOwners,
    /// Calls waiting for a 2026-07-28 client's retry, by `requestState`.
    parked: HashMap<String, Parked>,
}

/// The child's life as the outside sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running and usable.
    Ready,
    /// Starting, or restarting after a crash.
    Starting,
    /// Gone for good.
    Dead(String),
}

/// What children of this proxy's command refused, shared by every upstream
/// of one proxy, so that later children skip a handshake that cannot work
/// (the spec lets a client remember the era per server configuration, and
/// re-probe when the assumption fails).
#[derive(Debug, Default)]
pub struct EraHints {
    /// A child refused `initialize` and answered `server/discover`: 2026-07-28 only.
    refuses_initialize: AtomicBool,
    /// A child refused the `server/discover` probe or did not answer it: 2025-era only.
    refuses_discover: AtomicBool,
}

/// What the multiplexer needs to know about its mode.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Several sessions share this child: initialize once, restart on crash.
    pub shared: bool,
    /// Per-request deadline.
    pub request_timeout: Option<Duration>,
    /// Longest backoff between restarts.
    pub restart_max_backoff: Duration,
    /// Do not restart; report the exit instead (`--exit-on-child-exit`).
    pub exit_on_child_exit: bool,
    /// What the child speaks, or whether to find out.
    pub protocol: UpstreamProtocol,
    /// Tasks whose owner is remembered (shared mode).
    pub max_tasks: usize,
    /// With `auto`: try `server/discover` before `initialize` (for a child
    /// that serves 2026-07-28 clients), rather than after.
    pub discover_first: bool,
    /// How long `auto` waits for the answer to its `server/discover` probe.
    pub probe_timeout: Duration,
    /// What earlier children of the same command refused.
    pub era_hints: Arc<EraHints>,
    /// How long a 2026-07-28 client has to retry a call that needs its
    /// input before the child's request is refused (`--request-timeout`
    /// when set wins).
    pub input_wait: Duration,
}

/// The child's one handshake: the parameters it was made with (replayed
/// after a restart) and its answer, an InitializeResult for a legacy child
/// or a DiscoverResult for a modern one.
#[derive(Clone)]
struct InitCache {
    params: Bytes,
    result: Bytes,
}

/// One child and its routing tables.
pub struct Upstream {
    spec: ChildSpec,
    label: String,
    opts: UpstreamOptions,
    child: Mutex<Option<ChildHandle>>,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    health: watch::Sender<Health>,
    /// The one handshake, made by whichever session came first.
    init: tokio::sync::Mutex<Option<InitCache>>,
    /// What the child turned out to speak (`Auto` until known).
    era: Mutex<UpstreamProtocol>,
    initialized_sent: AtomicBool,
    cancel: CancellationToken,
    /// The exit that ended this upstream, for `--exit-on-child-exit`.
    final_exit: watch::Sender<Option<Exit>>,
    /// Every task this upstream starts (supervisor, reader, timers, the
    /// proxy's own writes and requests); [`Upstream::stop`] waits for them.
    tasks: TaskTracker,
    /// Control writes queued and not yet taken by the child.
    control_writes: Arc<AtomicUsize>,
    /// Set when a write timed out (the child stopped reading): later
    /// writes then take room if there is some and otherwise fail at once,
    /// instead of each waiting the whole deadline; cleared by the next
    /// write that goes through.
    stdin_stalled: AtomicBool,
    /// Wakes the timer task when a sooner deadline is added.
    timer_wake: Arc<Notify>,
}

impl Upstream {
    /// Spawns the child and starts routing its output.
    pub fn start(
        spec: ChildSpec,
        label: &str,
        opts: UpstreamOptions,
        cancel: CancellationToken,
    ) -> Result<Arc<Upstream>, UpstreamError> {
        let (child, reader) = ChildHandle::spawn(&spec, label)?;
        let reader = reader.reporting_over_cap();
        let protocol = opts.protocol;
        let routes = Routes {
            tasks: TaskOwners::new(opts.max_tasks),
            ..Routes::default()
        };
        let up = Arc::new(Upstream {
            spec,
            label: label.to_string(),
            opts,
            child: Mutex::new(Some(child.clone())),
            routes: Mutex::new(routes),
            next_id: AtomicU64::new(1),
            health: watch::Sender::new(Health::Ready),
            init: tokio::sync::Mutex::new(None),
            era: Mutex::new(protocol),
            initialized_sent: AtomicBool::new(false),
            cancel: cancel.clone(),
            final_exit: watch::Sender::new(None),
            tasks: TaskTracker::new(),
            control_writes: Arc::default(),
            stdin_stalled: AtomicBool::new(false),
            timer_wake: Arc::default(),
        });
        let span = info_span!("upstream", session = %label, pid = child.pid());
        up.tasks.spawn(
            Upstream::supervise(Arc::downgrade(&up), child, reader).instrument(span.clone()),
        );
        up.tasks
            .spawn(Upstream::run_timers(Arc::downgrade(&up), cancel).instrument(span));
        Ok(up)
    }

    /// The one timer of this upstream: ends requests whose
    /// `--request-timeout` passed. Deadlines live in `Routes::timers`, so
    /// an answered request leaves nothing behind.
    async fn run_timers(this: Weak<Upstream>, cancel: CancellationToken) {
        loop {
            let Some(up) = this.upgrade() else { return };
            let now = Instant::now();
            let (due, next) = {
                let mut r = lock(&up.routes);
                let mut due = Vec::new();
                while let Some(&(at, id)) = r.timers.first() {
                    if at > now {
                        break;
                    }
                    r.timers.pop_first();
                    due.push(id);
                }
                (due, r.timers.first().map(|(at, _)| *at))
            };
            for id in due {
                up.expire(id);
            }
            let wake = up.timer_wake.clone();
            drop(up);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = wake.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// How long a message may wait for room in the child's stdin queue.
    fn write_timeout(&self) -> Duration {
        self.opts.request_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

    /// Queues one line for the child within the write deadline (no wait at
    /// all while the child is known to be stalled).
    async fn send_line(&self, child: &ChildHandle, line: Bytes) -> Result<(), UpstreamError> {
        let stalled = self.stdin_stalled.load(Ordering::Relaxed);
        let wait = if stalled {
            Duration::ZERO
        } else {
            self.write_timeout()
        };
        // A zero timeout still polls the send once: room is taken if there is some.
        match tokio::time::timeout(wait, child.send(line)).await {
            Ok(Ok(())) => {
                if stalled {
                    self.stdin_stalled.store(false, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(Err(_)) => Err(UpstreamError::ChildExited("stdin closed".into())),
            Err(_) => {
                if !stalled {
                    warn!(
                        wait_ms = wait.as_millis() as u64,
                        "the MCP server is not reading its input; messages to it fail until it does"
                    );
                    self.stdin_stalled.store(true, Ordering::Relaxed);
                }
                Err(UpstreamError::NotReading(self.write_timeout()))
            }
        }
    }

    /// Queues a message of the proxy's own for the child without waiting
    /// (see [`MAX_CONTROL_WRITES`]): what the reader of the child's output
    /// writes back, and cancellations.
    fn write_control(&self, message: &[u8]) {
        let Ok(child) = self.child() else { return };
        if self.control_writes.fetch_add(1, Ordering::Relaxed) >= MAX_CONTROL_WRITES {
            self.control_writes.fetch_sub(1, Ordering::Relaxed);
            warn!(
                "the MCP server is not reading its input; a message of the proxy's own was dropped"
            );
            return;
        }
        let line = jsonrpc::as_line(message);
        let counter = self.control_writes.clone();
        let wait = self.write_timeout();
        trace!(message = %String::from_utf8_lossy(message), "to child");
        self.tasks.spawn(async move {
            let _ = tokio::time::timeout(wait, child.send(line)).await;
            counter.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Whether several sessions share this child.
    pub fn is_shared(&self) -> bool {
        self.opts.shared
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Watches health changes.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Waits until the upstream has ended for good; returns the child's last exit.
    pub async fn ended(&self) -> Exit {
        let mut rx = self.final_exit.subscribe();
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(e) => *e,
            Err(_) => None,
        };
        exit.unwrap_or(Exit::Code(-1))
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(ChildHandle::pid)
    }

    /// Attaches a session.
    pub fn attach(&self, port: Arc<Port>) {
        lock(&self.routes).ports.insert(port.key, port);
    }

    /// Detaches a session: its requests are forgotten (late answers are
    /// dropped), its subscriptions released.
    pub async fn detach(self: &Arc<Self>, port: &Port) {
        let (unsubscribe, level) = {
            let mut r = lock(&self.routes);
            r.ports.remove(&port.key);
            let mine: Vec<u64> = r
                .pending
                .iter()
                .filter(|(_, p)| p.port == port.key)
                .map(|(id, _)| *id)
                .collect();
            for id in mine {
                if let Some(p) = r.pending.remove(&id) {
                    r.by_client.remove(&client_key(p.port, &p.client_id));
                    if let Some(at) = p.deadline {
                        r.timers.remove(&(at, id));
                    }
                    r.client_pending -= 1;
                }
            }
            r.server_requests.retain(|_, s| s.port != port.key);
            r.tasks.release(port.key);
            let mut unsubscribe = Vec::new();
            r.subscriptions.retain(|uri, subs| {
                if subs.remove(&port.key) && subs.is_empty() {
                    unsubscribe.push(uri.clone());
                }
                !subs.is_empty()
            });
            (unsubscribe, recompute_level(&mut r))
        };
        for uri in unsubscribe {
            self.fire_and_forget("resources/unsubscribe", serde_json::json!({ "uri": uri }))
                .await;
        }
        if let Some(level) = level {
            self.set_child_level(level).await;
        }
    }

    /// Whether no session is attached and nothing is in flight (an idle
    /// per-principal child may be stopped, see [`crate::principals`]).
    pub fn is_idle(&self) -> bool {
        let r = lock(&self.routes);
        r.ports.is_empty() && r.pending.is_empty()
    }

    /// Number of one session's requests in flight.
    pub fn in_flight_of(&self, port: &Port) -> usize {
        let r = lock(&self.routes);
        if r.ports.len() == 1 {
            return r.client_pending;
        }
        r.pending.values().filter(|p| p.port == port.key).count()
    }

    fn child(&self) -> Result<ChildHandle, UpstreamError> {
        match lock(&self.child).as_ref() {
            Some(c) if c.exit() == Exit::Running => Ok(c.clone()),
            Some(c) => Err(UpstreamError::ChildExited(c.exit().to_string())),
            None => Err(UpstreamError::ChildExited("restarting".into())),
        }
    }

    /// Queues a message for the child, waiting at most the write deadline
    /// for room (a child that stops reading fails the caller, never holds it).
    async fn write(&self, frame: &Frame) -> Result<(), UpstreamError> {
        trace!(message = %String::from_utf8_lossy(frame.bytes()), "to child");
        let child = self.child()?;
        self.send_line(&child, frame.to_line()).await
    }

    /// Passes a client request to the child. The response, and whatever
    /// relates to it, goes to `reply`.
    pub async fn request(
        self: &Arc<Self>,
        port: &Arc<Port>,
        frame: Frame,
        reply: Reply,
    ) -> Result<(), UpstreamError> {
        let method = frame.method().unwrap_or_default();
        // Invariant: callers pass requests, which have ids.
        let client_id: Box<[u8]> = frame.id().expect("request has an id").into();
        if port.kind == PortKind::Modern
            && self.era() != UpstreamProtocol::Modern
            && mrtr::may_ask(Some(method))
            && frame.params_has("requestState")
        {
            return self.resume(port, &frame, client_id, reply).await;
        }
        match method {
            "initialize" => {
                if let Some(p) = frame.params_value() {
                    port.set_client(&p);
                }
                let budget = self
                    .opts
                    .request_timeout
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
                return self.initialize(&frame, &client_id, reply, budget).await;
            }
            "ping" | "logging/setLevel" if self.era() == UpstreamProtocol::Modern => {
                // Gone in 2026-07-28: the proxy answers for the child (a log
                // level then travels in each request's `_meta`).
                if method == "logging/setLevel" {
                    let level = frame
                        .params_value()
                        .and_then(|p| p.get("level").and_then(Value::as_str).and_then(log_rank));
                    *lock(&port.log_level) = level;
                }
                reply.respond(&jsonrpc::result_response(
                    &client_id,
                    &serde_json::json!({}),
                ));
                return Ok(());
            }
            "tasks/get" | "tasks/result" | "tasks/cancel" if self.opts.shared => {
                let task = frame.params().and_then(tasks::task_param);
                let principal = port.principal();
                let caller = tasks::Caller {
                    port: port.key,
                    session: port.has_identity(),
                    principal: principal.as_deref(),
                };
                let visible = task
                    .as_deref()
                    .is_some_and(|t| lock(&self.routes).tasks.may_see(t, caller));
                if !visible {
                    // The same answer as for a task that does not exist:
                    // another session's task ids reveal nothing.
                    reply.respond(&jsonrpc::error_response(
                        Some(&client_id),
                        code::INVALID_PARAMS,
                        &format!("task not found: {}", task.unwrap_or_default()),
                        None,
                    ));
                    return Ok(());
                }
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                let uri = frame
                    .params_value()
                    .and_then(|p| p.get("uri").and_then(Value::as_str).map(String::from));
                if let Some(uri) = uri {
                    let forward = {
                        let mut r = lock(&self.routes);
                        let subs = r.subscriptions.entry(uri.clone()).or_default();
                        let forward = if method == "resources/subscribe" {
                            subs.insert(port.key) && subs.len() == 1
                        } else {
                            subs.remove(&port.key) && subs.is_empty()
                        };
                        if subs.is_empty() {
                            r.subscriptions.remove(&uri);
                        }
                        forward
                    };
                    if !forward {
                        // Another session already holds (or still holds) the child's subscription.
                        reply.respond(&jsonrpc::result_response(
                            &client_id,
                            &serde_json::json!({}),
                        ));
                        return Ok(());
                    }
                }
            }
            "logging/setLevel" => {
                let level = frame
                    .params_value()
                    .and_then(|p| p.get("level").and_then(Value::as_str).and_then(log_rank));
                if let Some(level) = level {
                    *lock(&port.log_level) = Some(level);
                    let most_verbose = {
                        let mut r = lock(&self.routes);
                        recompute_level(&mut r);
                        r.child_log_level.unwrap_or(level)
                    };
                    let params = serde_json::json!({ "level": LOG_LEVELS[most_verbose] });
                    let frame =
                        frame.with_params(&serde_json::to_vec(&params).expect("Value serializes"));
                    return self.forward(port, frame, client_id, reply).await;
                }
            }
            _ => {}
        }
        self.forward(port, frame, client_id, reply).await
    }

    async fn forward(
        self: &Arc<Self>,
        port: &Arc<Port>,
        frame: Frame,
        client_id: Box<[u8]>,
        reply: Reply,
    ) -> Result<(), UpstreamError> {
        let modern_child = self.era() == UpstreamProtocol::Modern;
        let frame = if port.kind == PortKind::Session && modern_child {
            // A session-era client over a 2026-07-28 child: each request must
            // carry what the handshake used to establish.
            inject_modern_meta(frame, port)
        } else {
            frame
        };
        let fill = if port.kind == PortKind::Modern && !modern_child {
            match frame.method().unwrap_or_default() {
                "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read" => Fill::Cacheable,
                _ => Fill::Complete,
            }
        } else {
            Fill::None
        };
        let tasks = match frame.method() {
            _ if !self.opts.shared => TaskAnswer::None,
            Some("tasks/list") => TaskAnswer::List,
            _ if frame.params_has("task") => TaskAnswer::Create,
            _ => TaskAnswer::None,
        };
        // A session-era client cannot take `input_required`: the proxy asks
        // it in its own revision and repeats the call (see [`mrtr`]).
        let retry = (port.kind == PortKind::Session
            && modern_child
            && mrtr::may_ask(frame.method()))
        .then(|| Retry {
            frame: frame.clone(),
            rounds: 0,
        });
        // The reverse: a 2026-07-28 client over a 2025-era child can answer
        // the child's requests through `input_required` and a retry.
        let parkable =
            port.kind == PortKind::Modern && !modern_child && mrtr::may_ask(frame.method());
        if parkable {
            port.note_modern_capabilities(&frame);
        }
        let pending = Pending {
            port: port.key,
            fill,
            tasks,
            retry,
            parkable,
            client_id,
            token: None,
            deadline: None,
            reply,
        };
        self.send_pending(frame, pending).await
    }

    /// Gives a client request a proxy id, records where its answer goes and
    /// writes it to the child.
    async fn send_pending(
        self: &Arc<Self>,
        frame: Frame,
        mut pending: Pending,
    ) -> Result<(), UpstreamError> {
        if self.opts.shared && self.health() == Health::Starting && lock(&self.child).is_some() {
            // A restarted child takes requests once it is initialized again
            // (between restarts, with no child, requests fail at once).
            self.wait_until_restarted().await;
        }
        let child = match self.child() {
            Ok(c) => c,
            Err(e) => {
                pending.reply.respond(&jsonrpc::error_response(
                    Some(&pending.client_id),
                    code::SERVER_ERROR,
                    &e.to_string(),
                    None,
                ));
                return Err(e);
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (frame, token) = rewrite_progress_token(frame, id);
        pending.token = token;
        let frame = frame.with_id(id.to_string().as_bytes());
        let mut holder = Some(pending);
        let refused = {
            let mut r = lock(&self.routes);
            // Invariant: `holder` is full until the insertion below.
            let pending = holder.as_mut().expect("pending not yet stored");
            let key = client_key(pending.port, &pending.client_id);
            if pending.port != 0 && !r.ports.contains_key(&pending.port) {
                // The session was detached (DELETE, idle expiry) while this
                // request was on its way: nothing would ever remove it.
                Some(UpstreamError::SessionEnded)
            } else if pending.port != 0 && r.by_client.contains_key(&key) {
                Some(UpstreamError::DuplicateId(
                    String::from_utf8_lossy(&pending.client_id).into_owned(),
                ))
            } else {
                if let Some(t) = self.opts.request_timeout {
                    let at = Instant::now() + t;
                    pending.deadline = Some(at);
                    let sooner = r.timers.first().is_none_or(|(first, _)| at < *first);
                    r.timers.insert((at, id));
                    if sooner {
                        self.timer_wake.notify_one();
                    }
                }
                if pending.port != 0 {
                    r.by_client.insert(key, id);
                    r.client_pending += 1;
                }
                let pending = holder.take().expect("pending not yet stored");
                r.pending.insert(id, pending);
                None
            }
        };
        if let Some(e) = refused {
            let pending = holder.expect("a refused request was not stored");
            let code = match e {
                UpstreamError::DuplicateId(_) => code::INVALID_REQUEST,
                _ => code::SERVER_ERROR,
            };
            pending.reply.respond(&jsonrpc::error_response(
                Some(&pending.client_id),
                code,
                &e.to_string(),
                None,
            ));
            return Err(e);
        }
        trace!(message = %String::from_utf8_lossy(frame.bytes()), "to child");
        match self.send_line(&child, frame.to_line()).await {
            Ok(()) => Ok(()),
            Err(UpstreamError::ChildExited(why)) => {
                self.fail_pending(id, "the MCP server process exited");
                Err(UpstreamError::ChildExited(why))
            }
            Err(e) => {
                self.fail_pending(id, &e.to_string());
                Err(e)
            }
        }
    }

    fn expire(&self, id: u64) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        let timeout = self.opts.request_timeout.unwrap_or_default();
        warn!(
            request = id,
            timeout_ms = timeout.as_millis() as u64,
            "request timed out; cancelling it at the child"
        );
        let msg = format!("request timed out after {} ms", timeout.as_millis());
        p.reply.respond(&jsonrpc::error_response(
            Some(&p.client_id),
            code::SERVER_ERROR,
            &msg,
            None,
        ));
        self.write_control(&cancelled_notification(id, &msg));
    }

    fn take_pending(&self, id: u64) -> Option<Pending> {
        let mut r = lock(&self.routes);
        let p = r.pending.remove(&id)?;
        if let Some(at) = p.deadline {
            r.timers.remove(&(at, id));
        }
        if p.port != 0 {
            let key = client_key(p.port, &p.client_id);
            if r.by_client.get(&key) == Some(&id) {
                r.by_client.remove(&key);
            }
            r.client_pending -= 1;
        }
        Some(p)
    }

    fn fail_pending(&self, id: u64, why: &str) {
        if let Some(p) = self.take_pending(id) {
            p.reply.respond(&jsonrpc::error_response(
                Some(&p.client_id),
                code::SERVER_ERROR,
                why,
                None,
            ));
        }
    }

    /// What the child speaks, as far as is known.
    pub fn era(&self) -> UpstreamProtocol {
        *lock(&self.era)
    }

    /// Every `initialize` of every session lands here. The first one
    /// performs the child's one handshake (with that client's parameters);
    /// later ones are answered from the cached result with the caller's id.
    /// A modern child has no handshake: its `server/discover` result is
    /// turned into an InitializeResult for the version the client asked for.
    async fn initialize(
        self: &Arc<Self>,
        frame: &Frame,
        client_id: &[u8],
        reply: Reply,
        budget: Duration,
    ) -> Result<(), UpstreamError> {
        // The whole handshake, waiting for another session's handshake in
        // progress included, fits in the caller's budget.
        let deadline = Instant::now() + budget;
        let init = tokio::time::timeout_at(deadline, self.init.lock()).await;
        let mut init = match init {
            Ok(guard) => guard,
            Err(_) => {
                let e = UpstreamError::HandshakeTimeout(budget);
                reply.respond(&jsonrpc::error_response(
                    Some(client_id),
                    code::SERVER_ERROR,
                    &e.to_string(),
                    None,
                ));
                return Err(e);
            }
        };
        if init.is_none() {
            let params = Bytes::copy_from_slice(frame.params().unwrap_or(b"{}"));
            let outcome =
                match tokio::time::timeout_at(deadline, self.handshake(&params, deadline)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(UpstreamError::HandshakeTimeout(budget)),
                };
            match outcome {
                Ok(cache) => *init = Some(cache),
                Err(e) => {
                    let out = match &e {
                        UpstreamError::Rpc { error, .. } => {
                            jsonrpc::envelope(client_id, "error", error)
                        }
                        other => jsonrpc::error_response(
                            Some(client_id),
                            code::SERVER_ERROR,
                            &other.to_string(),
                            None,
                        ),
                    };
                    reply.respond(&out);
                    return Err(e);
                }
            }
        }
        // Invariant: set just above or earlier.
        let cache = init.as_ref().expect("initialized");
        let requested = frame.params_value().and_then(|p| {
            p.get("protocolVersion")
                .and_then(Value::as_str)
                .map(String::from)
        });
        let result = match self.era() {
            UpstreamProtocol::Modern => Bytes::from(
                serde_json::to_vec(&initialize_from_discover(
                    &cache.result,
                    requested.as_deref(),
                ))
                .expect("Value serializes"),
            ),
            _ => answer_in_version(&cache.result, requested.as_deref()),
        };
        reply.respond(&jsonrpc::envelope(client_id, "result", &result));
        Ok(())
    }

    /// The child's handshake: `server/discover` (modern) or `initialize`
    /// (legacy). With `auto`, the era that suits the child's clients is
    /// tried first: `initialize` for a child of session-era clients (a
    /// dual-era child then keeps its session semantics, with no
    /// translation), a `server/discover` probe for the child of
    /// 2026-07-28 clients (spec 2026-07-28 `basic/versioning`, stdio: an
    /// error, or silence for `probe_timeout`, means a 2025-era child). When
    /// the first handshake fails, the other is tried. A handshake that an
    /// earlier child of the same command refused does not go first.
    async fn handshake(
        self: &Arc<Self>,
        params: &Bytes,
        deadline: Instant,
    ) -> Result<InitCache, UpstreamError> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let era = self.era();
        let probe = modern_meta_params(&Value::Null, &Value::Null);
        let cache = |result| InitCache {
            params: params.clone(),
            result,
        };
        if era == UpstreamProtocol::Modern {
            return Ok(cache(
                self.call_within("server/discover", &probe, left()).await?,
            ));
        }
        let hints = &self.opts.era_hints;
        let discover_first = era == UpstreamProtocol::Auto
            && if self.opts.discover_first {
                !hints.refuses_discover.load(Ordering::Relaxed)
            } else {
                hints.refuses_initialize.load(Ordering::Relaxed)
            };
        if discover_first {
            match self
                .call_within(
                    "server/discover",
                    &probe,
                    self.opts.probe_timeout.min(left()),
                )
                .await
            {
                Ok(result) => {
                    self.learn(UpstreamProtocol::Modern);
                    return Ok(cache(result));
                }
                Err(e) => {
                    debug!(error = %e, "no answer to the server/discover probe: trying initialize");
                    hints.refuses_discover.store(true, Ordering::Relaxed);
                }
            }
        }
        match self.call_within("initialize", params, left()).await {
            Ok(result) => {
                hints.refuses_initialize.store(false, Ordering::Relaxed);
                self.learn(UpstreamProtocol::Legacy);
                self.send_initialized().await;
                Ok(cache(result))
            }
            // Refused, or no usable answer: the child may be modern (asked
            // even after a failed probe, which a slow-starting child misses).
            Err(e @ (UpstreamError::Rpc { .. } | UpstreamError::Internal { .. }))
                if era == UpstreamProtocol::Auto =>
            {
                match self.call_within("server/discover", &probe, left()).await {
                    Ok(result) => {
                        hints.refuses_initialize.store(true, Ordering::Relaxed);
                        hints.refuses_discover.store(false, Ordering::Relaxed);
                        self.learn(UpstreamProtocol::Modern);
                        Ok(cache(result))
                    }
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Waits (up to the internal timeout) while a restarted shared child is
    /// being re-initialized; after that the request goes, or fails, as is.
    async fn wait_until_restarted(&self) {
        let mut health = self.watch_health();
        let _ = tokio::time::timeout(
            INTERNAL_TIMEOUT.min(self.write_timeout()),
            health.wait_for(|h| *h != Health::Starting),
        )
        .await;
    }

    /// Records what the child speaks.
    fn learn(&self, era: UpstreamProtocol) {
        *lock(&self.era) = era;
        if era == UpstreamProtocol::Modern {
            info!("the MCP server answered server/discover: speaking 2026-07-28 to it");
        }
    }

    /// The cached handshake result (InitializeResult or, for a modern child,
    /// DiscoverResult), if the handshake happened.
    pub async fn cached_initialize(&self) -> Option<Bytes> {
        self.init.lock().await.as_ref().map(|c| c.result.clone())
    }

    async fn send_initialized(&self) {
        if !self.initialized_sent.swap(true, Ordering::SeqCst) {
            let n = Frame::from_value(
                &serde_json::json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            );
            let _ = self.write(&n).await;
        }
    }

    /// The proxy's own request to the child; returns the raw `result`.
    pub async fn call(
        self: &Arc<Self>,
        method: &'static str,
        params: &[u8],
    ) -> Result<Bytes, UpstreamError> {
        self.call_within(method, params, INTERNAL_TIMEOUT).await
    }

    /// [`Upstream::call`] with its own deadline.
    async fn call_within(
        self: &Arc<Self>,
        method: &'static str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut msg = Vec::with_capacity(params.len() + 64);
        msg.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        msg.extend_from_slice(id.to_string().as_bytes());
        msg.extend_from_slice(br#","method":""#);
        msg.extend_from_slice(method.as_bytes());
        msg.extend_from_slice(br#"","params":"#);
        msg.extend_from_slice(params);
        msg.push(b'}');
        let frame = Frame::parse(Bytes::from(msg), false).map_err(|e| UpstreamError::Internal {
            method,
            reason: e.to_string(),
        })?;
        lock(&self.routes).pending.insert(
            id,
            Pending {
                port: 0,
                fill: Fill::None,
                tasks: TaskAnswer::None,
                retry: None,
                parkable: false,
                client_id: id.to_string().into_bytes().into(),
                token: None,
                deadline: None,
                reply: Reply::Once(tx),
            },
        );
        // However this ends (answer, timeout, the caller dropped), the
        // entry goes.
        struct Forget<'a>(&'a Upstream, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.take_pending(self.1);
            }
        }
        let _forget = Forget(self, id);
        self.write(&frame).await?;
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(message)) => message.into_bytes(),
            Ok(Err(_)) => {
                return Err(UpstreamError::Internal {
                    method,
                    reason: "no answer".into(),
                });
            }
            Err(_) => {
                self.take_pending(id);
                return Err(UpstreamError::Internal {
                    method,
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                });
            }
        };
        #[derive(serde::Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            result: Option<&'a RawValue>,
            #[serde(borrow)]
            error: Option<&'a RawValue>,
        }
        match serde_json::from_slice::<Answer<'_>>(&answer) {
            Ok(Answer {
                result: Some(r), ..
            }) => Ok(Bytes::copy_from_slice(r.get().as_bytes())),
            Ok(Answer { error: Some(e), .. }) => Err(UpstreamError::Rpc {
                method,
                error: Bytes::copy_from_slice(e.get().as_bytes()),
            }),
            _ => Err(UpstreamError::Internal {
                method,
                reason: "malformed answer".into(),
            }),
        }
    }

    async fn fire_and_forget(self: &Arc<Self>, method: &'static str, params: Value) {
        let up = self.clone();
        let params = serde_json::to_vec(&params).expect("Value serializes");
        self.tasks.spawn(async move {
            if let Err(e) = up.call(method, &params).await {
                debug!(method, error = %e, "proxy bookkeeping request failed");
            }
        });
    }

    /// Tells the child the log level the sessions want, as the proxy's own request.
    async fn set_child_level(self: &Arc<Self>, level: usize) {
        self.fire_and_forget(
            "logging/setLevel",
            serde_json::json!({ "level": LOG_LEVELS[level] }),
        )
        .await;
    }

    /// After a restart, gives the new child what the sessions had asked of
    /// the old one: their resource subscriptions and the log level.
    async fn restore_sessions_state(self: &Arc<Self>) {
        if self.era() == UpstreamProtocol::Modern {
            // A 2026-07-28 child has neither; listeners carry them per request.
            return;
        }
        let (uris, level) = {
            let r = lock(&self.routes);
            let uris: Vec<String> = r.subscriptions.keys().cloned().collect();
            (uris, r.child_log_level)
        };
        if !uris.is_empty() {
            info!(
                subscriptions = uris.len(),
                "restoring resource subscriptions at the restarted child"
            );
        }
        for uri in uris {
            self.fire_and_forget("resources/subscribe", serde_json::json!({ "uri": uri }))
                .await;
        }
        if let Some(level) = level {
            self.set_child_level(level).await;
        }
    }

    /// Passes a client notification to the child.
    pub async fn notify(
        self: &Arc<Self>,
        port: &Arc<Port>,
        frame: Frame,
    ) -> Result<(), UpstreamError> {
        match frame.method().unwrap_or_default() {
            "notifications/initialized" => {
                // The proxy sent the child its one `initialized` right after
                // the handshake, so requests can never overtake it.
                return Ok(());
            }
            "notifications/cancelled" => return self.cancel_from_client(port, &frame).await,
            _ => {}
        }
        self.write(&frame).await
    }

    async fn cancel_from_client(&self, port: &Port, frame: &Frame) -> Result<(), UpstreamError> {
        let Some(at) = frame.locate_in_params(&["requestId"]) else {
            debug!("notifications/cancelled without a requestId dropped");
            return Ok(());
        };
        let key = client_key(port.key, &frame.bytes()[at.clone()]);
        let Some(id) = lock(&self.routes).by_client.get(&key).copied() else {
            debug!("cancellation of an unknown or finished request ignored");
            return Ok(());
        };
        if let Some(p) = self.take_pending(id) {
            match p.reply.unaudited() {
                // No answer will come: a stream of its own closes, a stream
                // shared with other requests (legacy, batch) carries on.
                Reply::Stream(o) => o.forgo(),
                Reply::Once(tx) => {
                    let _ = tx.send(
                        jsonrpc::error_response(
                            Some(&p.client_id),
                            -32800,
                            "request cancelled",
                            None,
                        )
                        .into(),
                    );
                }
                Reply::Detached | Reply::Audited(..) => {}
            }
        }
        // The client's message with only the id changed: whatever else it
        // carries (`reason`, even a number no parser could hold) passes as is.
        let frame = frame.with_replaced(at, id.to_string().as_bytes());
        self.write(&frame).await
    }

    /// The proxy cancels a client's request itself (a 2026-07-28 client
    /// closed its stream, which is that era's cancellation).
    pub fn cancel_request(&self, port: &Port, client_id: &[u8], reason: &str) {
        let id = lock(&self.routes)
            .by_client
            .get(&client_key(port.key, client_id))
            .copied();
        if let Some(id) = id
            && self.take_pending(id).is_some()
        {
            debug!(
                request = id,
                "client went away; cancelling its request at the child"
            );
            self.write_control(&cancelled_notification(id, reason));
        }
    }

    /// Passes a client's response (to a server-to-client request) to the child.
    /// Answers to requests this session was never sent are dropped.
    pub async fn respond(&self, port: &Port, frame: Frame) -> Result<(), UpstreamError> {
        let raw = frame.id().unwrap_or_default();
        let key = jsonrpc::id_key(raw).unwrap_or_else(|| raw.into());
        let request = {
            let mut r = lock(&self.routes);
            match r.server_requests.get(&key) {
                Some(s) if s.port == port.key => r.server_requests.remove(&key),
                _ => None,
            }
        };
        match request {
            Some(ServerRequest {
                answer: Some(waiter),
                ..
            }) => {
                let _ = waiter.send(frame);
                Ok(())
            }
            // Back to the child with its id as it wrote it (`1.0` from a
            // client is the child's `1`).
            Some(ServerRequest { raw_id, .. }) => self.write(&frame.with_id(&raw_id)).await,
            None => {
                debug!(id = %String::from_utf8_lossy(raw), "response to an unknown server request dropped");
                Ok(())
            }
        }
    }

    /// Stops the child and fails whatever is in flight.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let child = lock(&self.child).clone();
        if let Some(child) = child {
            child.stop().await;
        }
        // Everything this upstream started ends with it: the supervisor
        // (which fails what is in flight), the reader, the timer, writes.
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn supervise(
        this: Weak<Upstream>,
        mut child: ChildHandle,
        reader: crate::jsonrpc::LineReader<tokio::process::ChildStdout>,
    ) {
        // `None` after a failed respawn: there is no output to read.
        let mut reader = Some(reader);
        let mut backoff = FIRST_BACKOFF;
        let mut spawned_at = tokio::time::Instant::now();
        loop {
            let Some(up) = this.upgrade() else {
                child.stop().await;
                return;
            };
            let cancel = up.cancel.clone();
            // The reader runs as a task of its own: if routing ever panics,
            // the panic ends that task only, and is handled here like the
            // child's death (requests fail, the child is replaced).
            let read = match reader.take() {
                Some(r) => up.tasks.spawn(
                    Upstream::read_loop(this.clone(), r).instrument(tracing::Span::current()),
                ),
                None => up.tasks.spawn(async {}),
            };
            drop(up);
            tokio::pin!(read);
            let why = tokio::select! {
                r = &mut read => match r {
                    Ok(()) => "the MCP server closed its output",
                    Err(e) if e.is_panic() => {
                        warn!("routing the child's output failed unexpectedly; replacing the child");
                        "the proxy could not route the MCP server's output"
                    }
                    Err(_) => "the MCP server's output reader stopped",
                },
                _ = cancel.cancelled() => "the proxy is stopping",
            };
            // A crash closes stdout and exits together: name the exit when
            // it follows at once; a child that runs on without its stdout
            // is stopped below all the same.
            let why = match tokio::time::timeout(EXIT_AFTER_EOF, child.exited()).await {
                Ok(exit) if !cancel.is_cancelled() => {
                    format!("the MCP server process exited ({exit})")
                }
                _ => why.to_string(),
            };
            let why = why.as_str();
            let Some(up) = this.upgrade() else {
                child.stop().await;
                return;
            };
            let restart = up.opts.shared && !up.opts.exit_on_child_exit && !cancel.is_cancelled();
            // First fail what is in flight (nobody waits for the stop), then
            // stop the child: one that closed its stdout and runs on is no
            // use, and one that already exited is only reaped.
            up.fail_all(why, !restart);
            drop(up);
            read.abort();
            let exit = child.stop().await;
            let Some(up) = this.upgrade() else { return };
            if !restart {
                let _ = up.health.send(Health::Dead(exit.to_string()));
                let _ = up.final_exit.send(Some(exit));
                return;
            }
            backoff = next_backoff(backoff, spawned_at.elapsed(), up.opts.restart_max_backoff);
            warn!(status = %exit, backoff_ms = backoff.as_millis() as u64, "shared child exited; restarting it");
            let _ = up.health.send(Health::Starting);
            *lock(&up.child) = None;
            drop(up);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return,
            }
            let Some(up) = this.upgrade() else { return };
            match ChildHandle::spawn(&up.spec, &up.label) {
                Ok((c, r)) => {
                    up.spec.metrics.restarted();
                    child = c;
                    reader = Some(r.reporting_over_cap());
                    spawned_at = tokio::time::Instant::now();
                    *lock(&up.child) = Some(child.clone());
                    up.initialized_sent.store(false, Ordering::SeqCst);
                    let reinit = up.clone();
                    // Re-initialize with the cached parameters, off the read path.
                    up.tasks.spawn(async move {
                        let cached = reinit.init.lock().await.clone();
                        match cached {
                            Some(c) => {
                                let budget = reinit
                                    .opts
                                    .request_timeout
                                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
                                let deadline = Instant::now() + budget;
                                match reinit.handshake(&c.params, deadline).await {
                                    Ok(_) => {
                                        reinit.send_initialized().await;
                                        reinit.restore_sessions_state().await;
                                        let _ = reinit.health.send(Health::Ready);
                                        info!("shared child restarted and re-initialized");
                                    }
                                    Err(e) => {
                                        // A child that cannot be initialized is no use:
                                        // stop it, and the supervisor starts another.
                                        warn!(error = %e, "re-initializing the restarted child failed; stopping it");
                                        let child = lock(&reinit.child).clone();
                                        if let Some(child) = child {
                                            child.stop().await;
                                        }
                                    }
                                }
                            }
                            None => {
                                let _ = reinit.health.send(Health::Ready);
                            }
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "restarting the shared child failed");
                    backoff = (backoff * 2).min(up.opts.restart_max_backoff);
                    spawned_at = tokio::time::Instant::now();
                    // Loop again with a dead child handle: read_loop ends at once.
                    continue;
                }
            }
            backoff = (backoff * 2).min(up.opts.restart_max_backoff);
        }
    }

    fn fail_all(&self, why: &str, close_sessions: bool) {
        let (pending, ports) = {
            let mut r = lock(&self.routes);
            r.by_client.clear();
            r.client_pending = 0;
            r.tasks.clear();
            r.parked.clear();
            let pending: Vec<Pending> = r.pending.drain().map(|(_, p)| p).collect();
            // The streams that carried the child's requests stay open: they
            // may be a session's GET or legacy stream, which outlive the child.
            r.server_requests.clear();
            (pending, r.ports.values().cloned().collect::<Vec<_>>())
        };
        if !pending.is_empty() {
            info!(
                requests = pending.len(),
                "failing requests in flight: {why}"
            );
        }
        for p in pending {
            p.reply.respond(&jsonrpc::error_response(
                Some(&p.client_id),
                code::SERVER_ERROR,
                why,
                None,
            ));
        }
        if close_sessions {
            for port in ports {
                if let Some(o) = port.notify_stream() {
                    o.finish();
                }
            }
        }
    }

    async fn read_loop(
        this: Weak<Upstream>,
        mut reader: crate::jsonrpc::LineReader<tokio::process::ChildStdout>,
    ) {
        let mut skipped = 0u64;
        // Set when the line being skipped was already reported (and its
        // request failed) as it passed the cap.
        let mut reported_early = false;
        let mut noise_limit: Option<crate::logging::RateLimit> = None;
        loop {
            let line = match reader.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(LineError::OverCap { limit, id }) => {
                    warn!(
                        limit,
                        "child is writing a line over --max-line-bytes; failing its request now and skipping the line"
                    );
                    if let Some(up) = this.upgrade() {
                        up.fail_oversized(None, limit, id, true);
                    }
                    reported_early = true;
                    continue;
                }
                Err(LineError::LineTooLong { len, limit, id }) => {
                    // The rest of the stream is fine; the request it answered fails.
                    warn!(
                        len,
                        limit, "child wrote a line over --max-line-bytes; skipped it"
                    );
                    if let Some(up) = this.upgrade() {
                        up.fail_oversized(Some(len), limit, id, !reported_early);
                    }
                    reported_early = false;
                    continue;
                }
                Err(LineError::Io(e)) => {
                    warn!(error = %e, "reading the child's stdout failed");
                    return;
                }
            };
            let Some(up) = this.upgrade() else { return };
            match Frame::parse(line.clone(), false) {
                Ok(frame) => up.route(frame).await,
                Err(e) => {
                    skipped += 1;
                    // Rate-limited like stderr (`--child-log-rate`): a child
                    // printing banners in a loop must not flood the log.
                    let rate = up.spec.stderr_lines_per_second;
                    let limit = noise_limit.get_or_insert_with(|| {
                        crate::logging::RateLimit::new(rate.saturating_mul(4), rate)
                    });
                    if let Some(not_logged) = limit.admit() {
                        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                        warn!(skipped, not_logged, error = %e, line = %shown, "child wrote a non-JSON-RPC line on stdout; skipped it");
                    }
                }
            }
        }
    }

    /// An oversized line was (or is being) dropped: fail the request it
    /// answered rather than let it hang. Which one that was shows at the
    /// line's edges (`jsonrpc::edge_id`), or else it was the only request
    /// in flight (`guess`: not once the line was already reported).
    fn fail_oversized(&self, len: Option<usize>, limit: usize, id: Option<u64>, guess: bool) {
        let only = {
            let r = lock(&self.routes);
            id.filter(|id| r.pending.contains_key(id))
                .or_else(|| if guess { related_call(&r) } else { None })
        };
        if let Some(id) = only {
            let size = len.map_or_else(|| "more than that".to_string(), |l| format!("{l} bytes"));
            self.fail_pending(
                id,
                &format!("the MCP server's answer ({size}) exceeds --max-line-bytes ({limit})"),
            );
        }
    }

    async fn route(self: &Arc<Self>, frame: Frame) {
        trace!(message = %String::from_utf8_lossy(frame.bytes()), "from child");
        match frame.kind() {
            Kind::Response => self.route_response(frame),
            Kind::Notification => self.route_notification(frame),
            Kind::Request => self.route_request(frame).await,
        }
    }

    fn route_response(self: &Arc<Self>, frame: Frame) {
        let id = frame.id().and_then(parse_proxy_id);
        let Some(p) = id.and_then(|id| self.take_pending(id)) else {
            debug!(id = %String::from_utf8_lossy(frame.id().unwrap_or_default()), "response for an unknown or finished request dropped");
            return;
        };
        if p.retry.is_some()
            && let Some(asked) = mrtr::input_required(frame.bytes())
        {
            self.tasks.spawn(self.clone().gather_input(p, asked));
            return;
        }
        if matches!(p.reply, Reply::Detached) {
            // A parked call finished before the client retried: keep the
            // answer for the retry.
            let call = id.unwrap_or_default();
            let mut r = lock(&self.routes);
            if let Some(parked) = r.parked.values_mut().find(|k| k.call == call) {
                parked.early = Some((p, frame));
            }
            return;
        }
        self.deliver(p, frame);
    }

    /// Sends the child's answer to the client that asked.
    fn deliver(&self, p: Pending, frame: Frame) {
        let fields: Option<&[u8]> = match p.fill {
            Fill::None => None,
            Fill::Complete => Some(br#""resultType":"complete""#),
            Fill::Cacheable => Some(br#""resultType":"complete","ttlMs":0,"cacheScope":"private""#),
        };
        let answer = frame.answer(&p.client_id, fields);
        match p.tasks {
            TaskAnswer::None => p.reply.respond_message(answer),
            TaskAnswer::Create => {
                if let Some(task) = tasks::created_task(frame.bytes()) {
                    let mut r = lock(&self.routes);
                    let (session, principal) = r
                        .ports
                        .get(&p.port)
                        .map(|port| (port.has_identity(), port.principal()))
                        .unwrap_or((false, None));
                    let caller = tasks::Caller {
                        port: p.port,
                        session,
                        principal: principal.as_deref(),
                    };
                    r.tasks.record(&task, caller);
                }
                p.reply.respond_message(answer);
            }
            TaskAnswer::List => {
                let bytes = answer.into_bytes();
                let filtered = {
                    let r = lock(&self.routes);
                    let (session, principal) = r
                        .ports
                        .get(&p.port)
                        .map(|port| (port.has_identity(), port.principal()))
                        .unwrap_or((false, None));
                    let caller = tasks::Caller {
                        port: p.port,
                        session,
                        principal: principal.as_deref(),
                    };
                    tasks::filter_list(&bytes, |t| r.tasks.may_see(t, caller))
                };
                p.reply.respond(filtered.as_deref().unwrap_or(&bytes));
            }
        }
    }

    /// A 2025-era child asks a 2026-07-28 client something during its call:
    /// answer the call with `input_required` carrying the child's request,
    /// and keep the call (detached) until the client's retry brings the
    /// answer ([`Upstream::resume`]). Returns the `requestState` token.
    fn park(
        &self,
        r: &mut Routes,
        port: &Arc<Port>,
        method: &str,
        id: &[u8],
        frame: &Frame,
    ) -> Result<String, String> {
        let call = related_call(r)
            .ok_or("no client call is unambiguously associated with this request")?;
        let p = r.pending.get_mut(&call).ok_or("the call has ended")?;
        if !p.parkable {
            return Err(
                "the client speaks MCP 2026-07-28, which has no server-to-client requests, and this call cannot ask for input"
                    .to_string(),
            );
        }
        if !port.supports(method) {
            return Err(format!(
                "the client did not declare the capability for {method}"
            ));
        }
        let token = mrtr::new_request_state();
        let reply = std::mem::replace(&mut p.reply, Reply::Detached);
        let client_id = p.client_id.clone();
        let owner = std::mem::replace(&mut p.port, 0);
        r.by_client.remove(&client_key(owner, &client_id));
        r.client_pending -= 1;
        r.parked.insert(
            token.clone(),
            Parked {
                server_request: id.into(),
                call,
                early: None,
            },
        );
        let request = mrtr::InputRequest {
            method: method.to_string(),
            params: frame
                .params()
                .and_then(|p| serde_json::from_slice::<Box<RawValue>>(p).ok()),
        };
        reply.respond(&jsonrpc::envelope(
            &client_id,
            "result",
            &mrtr::input_required_result(&request, &token),
        ));
        Ok(token)
    }

    /// The retry of a parked call: the client's answer goes to the child's
    /// request, and the call's answer, now or later, to this retry.
    async fn resume(
        self: &Arc<Self>,
        port: &Arc<Port>,
        frame: &Frame,
        client_id: Box<[u8]>,
        reply: Reply,
    ) -> Result<(), UpstreamError> {
        let (token, answer) = mrtr::resumption(frame.params().unwrap_or_default());
        let parked = token.and_then(|t| lock(&self.routes).parked.remove(&t));
        let Some(parked) = parked else {
            reply.respond(&jsonrpc::error_response(
                Some(&client_id),
                code::INVALID_PARAMS,
                "unknown or expired requestState: send the call again without it",
                None,
            ));
            return Ok(());
        };
        let to_child = match &answer {
            Some(result) => {
                jsonrpc::envelope(&parked.server_request, "result", result.get().as_bytes())
            }
            None => jsonrpc::error_response(
                Some(&parked.server_request),
                code::INTERNAL_ERROR,
                "the client retried without the requested input",
                None,
            ),
        };
        let _ = self.write_bytes(&to_child).await;
        if let Some((mut p, frame)) = parked.early {
            p.client_id = client_id;
            p.reply = reply;
            self.deliver(p, frame);
            return Ok(());
        }
        let mut r = lock(&self.routes);
        match r.pending.get_mut(&parked.call) {
            Some(p) => {
                p.port = port.key;
                p.client_id = client_id.clone();
                p.reply = reply;
                r.by_client
                    .insert(client_key(port.key, &client_id), parked.call);
                r.client_pending += 1;
            }
            None => reply.respond(&jsonrpc::error_response(
                Some(&client_id),
                code::SERVER_ERROR,
                "the MCP server ended the call",
                None,
            )),
        }
        Ok(())
    }

    /// A parked call whose client never retried: the child's request is
    /// refused and the call cancelled at the child.
    fn expire_parked(&self, token: &str, wait: Duration) {
        let Some(parked) = lock(&self.routes).parked.remove(token) else {
            return;
        };
        warn!(
            wait_ms = wait.as_millis() as u64,
            "a 2026-07-28 client did not retry a call that needed its input; cancelling it"
        );
        self.write_control(&jsonrpc::error_response(
            Some(&parked.server_request),
            code::INTERNAL_ERROR,
            "the client did not provide the input in time",
            None,
        ));
        if self.take_pending(parked.call).is_some() {
            self.write_control(&cancelled_notification(
                parked.call,
                "the client did not provide the input in time",
            ));
        }
    }

    /// A 2026-07-28 child answered a session-era client's call with
    /// `input_required`: ask the client each question as a request of its
    /// own, then repeat the call with the answers. The call fails with an
    /// error, never hangs, when the client cannot be asked or does not
    /// answer (it is bounded by `--request-timeout` and by the session).
    async fn gather_input(self: Arc<Self>, mut p: Pending, asked: mrtr::InputRequired) {
        let Some(retry) = p.retry.take() else { return };
        let port = lock(&self.routes).ports.get(&p.port).cloned();
        let outcome = match port {
            None => return, // The session ended; nobody waits for the answer.
            Some(_) if retry.rounds >= mrtr::MAX_ROUNDS => Err(format!(
                "the MCP server asked for input {} times for one call; giving up",
                mrtr::MAX_ROUNDS
            )),
            Some(port) => self.ask_client(&port, &p, &asked).await,
        };
        match outcome {
            Ok(responses) => {
                let params = mrtr::retry_params(
                    retry.frame.params(),
                    responses,
                    asked.request_state.as_deref(),
                );
                let frame = retry.frame.with_params(&params);
                p.retry = Some(Retry {
                    frame: retry.frame,
                    rounds: retry.rounds + 1,
                });
                let _ = self.send_pending(frame, p).await;
            }
            Err(why) => {
                debug!("input for a 2026-07-28 child could not be gathered: {why}");
                p.reply.respond(&jsonrpc::error_response(
                    Some(&p.client_id),
                    code::INTERNAL_ERROR,
                    &why,
                    None,
                ));
            }
        }
    }

    /// Sends the child's input requests to the client and waits for all the
    /// answers, keyed like the requests.
    async fn ask_client(
        &self,
        port: &Arc<Port>,
        p: &Pending,
        asked: &mrtr::InputRequired,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let mut ids = Vec::with_capacity(asked.requests.len());
        let outcome = self.ask_client_inner(port, p, asked, &mut ids).await;
        if outcome.is_err() {
            // Answers that come later are for nobody.
            let mut r = lock(&self.routes);
            for id in &ids {
                r.server_requests.remove(id);
            }
        }
        outcome
    }

    async fn ask_client_inner(
        &self,
        port: &Arc<Port>,
        p: &Pending,
        asked: &mrtr::InputRequired,
        ids: &mut Vec<Box<[u8]>>,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let mut waits = Vec::with_capacity(asked.requests.len());
        for (key, request) in &asked.requests {
            let method = &request.method;
            if !port.supports(method) {
                return Err(format!(
                    "the MCP server needs {method}, a capability the client did not declare"
                ));
            }
            let Some(outlet) = p
                .reply
                .stream()
                .cloned()
                .or_else(|| port.notify_stream())
                .filter(|o| !o.is_finished())
            else {
                return Err(format!(
                    "the MCP server needs {method}, but the client has no open stream to carry the request"
                ));
            };
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            let id: Box<[u8]> = format!("\"mcp-proxy-input-{n}\"").into_bytes().into();
            let (tx, rx) = oneshot::channel();
            lock(&self.routes).server_requests.insert(
                id.clone(),
                ServerRequest {
                    raw_id: id.clone(),
                    port: port.key,
                    outlet: Some(outlet.clone()),
                    answer: Some(tx),
                },
            );
            outlet.send(&mrtr::client_request(&id, request));
            ids.push(id);
            waits.push((key, method, rx));
        }
        let mut responses = serde_json::Map::new();
        for (key, method, rx) in waits {
            let answer = match self.opts.request_timeout {
                Some(t) => tokio::time::timeout(t, rx).await.ok().and_then(Result::ok),
                None => rx.await.ok(),
            };
            let Some(answer) = answer else {
                return Err(format!("the client did not answer the {method} request"));
            };
            let result = mrtr::client_answer(&answer)
                .map_err(|e| format!("the client refused the {method} request: {e}"))?;
            responses.insert(key.clone(), result);
        }
        Ok(responses)
    }

    fn route_notification(&self, frame: Frame) {
        let method = frame.method().unwrap_or_default();
        if let Some(sub) = self.subscription_of(&frame) {
            // A modern child's notification for one `subscriptions/listen`
            // request: it goes to that request's stream only, with the
            // client's own request id restored.
            let r = lock(&self.routes);
            if let Some(p) = r.pending.get(&sub) {
                let mut v: Value = serde_json::from_slice(frame.bytes()).unwrap_or_default();
                if let (Some(meta), Ok(id)) = (
                    v.pointer_mut("/params/_meta")
                        .and_then(Value::as_object_mut),
                    serde_json::from_slice::<Value>(&p.client_id),
                ) {
                    meta.insert(SUBSCRIPTION_ID_KEY.into(), id);
                }
                if let Some(o) = p.reply.stream() {
                    o.send(&serde_json::to_vec(&v).expect("Value serializes"));
                }
            }
            return;
        }
        match method {
            "notifications/progress" => {
                let Some(at) = frame.locate_in_params(&["progressToken"]) else {
                    return;
                };
                let token = parse_proxy_id(&frame.bytes()[at.clone()]);
                let r = lock(&self.routes);
                let Some(p) = token.and_then(|t| r.pending.get(&t)) else {
                    debug!("progress for an unknown or finished request dropped");
                    return;
                };
                let Some(original) = &p.token else { return };
                // The child's message with the client's token put back;
                // nothing else in it is read or rebuilt.
                let out = frame.with_replaced(at, original);
                match p.reply.stream() {
                    Some(o) => o.send(out.bytes()),
                    None => {
                        if let Some(port) = r.ports.get(&p.port) {
                            port.send_unrelated(out.bytes());
                        }
                    }
                }
            }
            "notifications/cancelled" => {
                // The child withdraws one of its own requests: tell whoever has it.
                let Some(at) = frame.locate_in_params(&["requestId"]) else {
                    return;
                };
                let Some(key) = jsonrpc::id_key(&frame.bytes()[at]) else {
                    return;
                };
                let target = lock(&self.routes).server_requests.remove(&key);
                if let Some(ServerRequest {
                    outlet: Some(o), ..
                }) = target
                {
                    o.send(frame.bytes());
                }
            }
            "notifications/tasks/status" if self.opts.shared => {
                let r = lock(&self.routes);
                let owner = frame
                    .params()
                    .and_then(tasks::task_param)
                    .and_then(|t| r.tasks.owner(&t))
                    .and_then(|key| r.ports.get(&key));
                match owner {
                    Some(port) => {
                        port.send_unrelated(frame.bytes());
                    }
                    None => debug!("status of a task no session owns dropped"),
                }
            }
            m if m.ends_with("/list_changed") => {
                let ports: Vec<Arc<Port>> = lock(&self.routes).ports.values().cloned().collect();
                for port in ports {
                    port.send_unrelated(frame.bytes());
                }
            }
            "notifications/resources/updated" => {
                let uri = frame
                    .params_value()
                    .and_then(|p| p.get("uri").and_then(Value::as_str).map(String::from));
                let r = lock(&self.routes);
                let subscribers = uri.and_then(|u| r.subscriptions.get(&u));
                for key in subscribers.into_iter().flatten() {
                    if let Some(port) = r.ports.get(key) {
                        port.send_unrelated(frame.bytes());
                    }
                }
            }
            _ => {
                let level = (method == "notifications/message")
                    .then(|| {
                        frame
                            .params_value()
                            .and_then(|p| p.get("level").and_then(Value::as_str).and_then(log_rank))
                    })
                    .flatten();
                let r = lock(&self.routes);
                if let Some(port) = self.task_owner(&r, &frame) {
                    if passes(Some(port), level) {
                        port.send_unrelated(frame.bytes());
                    }
                    return;
                }
                match related_target(&r) {
                    Target::Request(p) => {
                        let port = r.ports.get(&p.port);
                        if !passes(port, level) {
                            return;
                        }
                        match p.reply.stream() {
                            Some(o) => o.send(frame.bytes()),
                            None => {
                                if let Some(port) = port {
                                    port.send_unrelated(frame.bytes());
                                }
                            }
                        }
                    }
                    Target::Port(port) => {
                        if passes(Some(port), level) {
                            port.send_unrelated(frame.bytes());
                        }
                    }
                    Target::None => {
                        debug!(method, "notification with no unambiguous session dropped")
                    }
                }
            }
        }
    }

    /// In shared mode, the session that owns the task a message relates to
    /// (`_meta` related-task).
    fn task_owner<'r>(&self, r: &'r Routes, frame: &Frame) -> Option<&'r Arc<Port>> {
        if !self.opts.shared {
            return None;
        }
        let task = tasks::related_task(frame)?;
        r.ports.get(&r.tasks.owner(&task)?)
    }

    fn subscription_of(&self, frame: &Frame) -> Option<u64> {
        let id = frame.meta(SUBSCRIPTION_ID_KEY)?;
        parse_proxy_id(id.to_string().as_bytes())
    }

    async fn route_request(self: &Arc<Self>, frame: Frame) {
        let method = frame.method().unwrap_or_default().to_string();
        // Invariant: requests have ids.
        let id: Box<[u8]> = frame.id().expect("request has an id").into();
        if method == "ping" {
            // Answered without waiting: the reader never waits on stdin.
            self.write_control(&jsonrpc::result_response(&id, &serde_json::json!({})));
            return;
        }
        let key = jsonrpc::id_key(&id).unwrap_or_else(|| id.clone());
        let refusal = {
            let mut r = lock(&self.routes);
            let (port, outlet) = match self.task_owner(&r, &frame) {
                // Part of a task: its creator answers, on its GET stream.
                Some(port) => (Some(port.clone()), None),
                None => match related_target(&r) {
                    Target::Request(p) => {
                        (r.ports.get(&p.port).cloned(), p.reply.stream().cloned())
                    }
                    Target::Port(port) => (Some(port.clone()), None),
                    Target::None => (None, None),
                },
            };
            match port {
                None => Some(
                    "no client session is unambiguously associated with this request".to_string(),
                ),
                Some(_) if r.parked.len() >= MAX_PARKED
                    || r.server_requests.len() >= MAX_SERVER_REQUESTS =>
                {
                    warn!("too many server-to-client requests waiting for clients; refusing another");
                    Some("too many requests are waiting for clients already".to_string())
                }
                Some(port) if port.kind == PortKind::Modern => {
                    match self.park(&mut r, &port, &method, &id, &frame) {
                        Ok(token) => {
                            let up = Arc::downgrade(self);
                            let wait = self.opts.request_timeout.unwrap_or(self.opts.input_wait);
                            let cancel = self.cancel.clone();
                            self.tasks.spawn(async move {
                                tokio::select! {
                                    _ = tokio::time::sleep(wait) => {}
                                    _ = cancel.cancelled() => return,
                                }
                                if let Some(up) = up.upgrade() {
                                    up.expire_parked(&token, wait);
                                }
                            });
                            None
                        }
                        Err(why) => Some(why),
                    }
                }
                Some(port) if &*port.label == STATELESS_LABEL => Some(
                    "no client session is tied to this request (stateless mode has no sessions), so nothing can answer it".to_string(),
                ),
                Some(port) if !port.supports(&method) => Some(format!(
                    "the client did not declare the capability for {method}"
                )),
                Some(port) => {
                    let outlet = outlet
                        .or_else(|| port.notify_stream())
                        .filter(|o| !o.is_finished());
                    match outlet {
                        None => {
                            Some("the client has no open stream to carry this request".to_string())
                        }
                        Some(o) => {
                            o.send(frame.bytes());
                            r.server_requests.insert(
                                key,
                                ServerRequest {
                                    raw_id: id.clone(),
                                    port: port.key,
                                    outlet: Some(o),
                                    answer: None,
                                },
                            );
                            None
                        }
                    }
                }
            }
        };
        if let Some(why) = refusal {
            debug!(method, "server-to-client request refused: {why}");
            let code = if why.contains("capability") {
                code::METHOD_NOT_FOUND
            } else {
                code::INTERNAL_ERROR
            };
            self.write_control(&jsonrpc::error_response(Some(&id), code, &why, None));
        }
    }

    async fn write_bytes(&self, bytes: &[u8]) -> Result<(), UpstreamError> {
        let frame = Frame::parse(Bytes::copy_from_slice(bytes), false).map_err(|e| {
            UpstreamError::Internal {
                method: "reply",
                reason: e.to_string(),
            }
        })?;
        self.write(&frame).await
    }
}

enum Target<'a> {
    Request(&'a Pending),
    Port(&'a Arc<Port>),
    None,
}

/// The one place a message that relates to "the current request" can go:
/// the only client request in flight, else the only session, else nowhere.
fn related_target(r: &Routes) -> Target<'_> {
    if let Some(p) = related_call(r).and_then(|id| r.pending.get(&id)) {
        return Target::Request(p);
    }
    if r.ports.len() == 1 {
        // Invariant: len() == 1.
        return Target::Port(r.ports.values().next().expect("one port"));
    }
    Target::None
}

/// The proxy id of the only client call in flight.
fn related_call(r: &Routes) -> Option<u64> {
    if r.client_pending != 1 {
        return None;
    }
    r.pending
        .iter()
        .find(|(_, p)| p.port != 0)
        .map(|(id, _)| *id)
}

fn passes(port: Option<&Arc<Port>>, level: Option<usize>) -> bool {
    match (port.and_then(|p| *lock(&p.log_level)), level) {
        (Some(min), Some(level)) => level >= min,
        _ => true,
    }
}

/// Recomputes the child's log level; `Some` when it changed.
fn recompute_level(r: &mut Routes) -> Option<usize> {
    let level = r.ports.values().filter_map(|p| *lock(&p.log_level)).min();
    if level != r.child_log_level {
        r.child_log_level = level;
        level
    } else {
        None
    }
}

/// The key of a client's request in `Routes::by_client`: its session and
/// its id in canonical form (`1.0` and `1` are one id).
fn client_key(port: u64, id: &[u8]) -> (u64, Box<[u8]>) {
    (port, jsonrpc::id_key(id).unwrap_or_else(|| id.into()))
}

/// `notifications/cancelled` for the proxy's request `id`.
fn cancelled_notification(id: u64, reason: &str) -> Vec<u8> {
    // Invariant: a Value of a string and an integer serializes.
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": id, "reason": reason },
    }))
    .expect("Value serializes")
}

/// A cached InitializeResult for a later session: in the version that
/// session asked for when the child was initialized at that version or a
/// newer one (servers keep supporting older revisions, and the proxy
/// handles the transport differences per session); otherwise unchanged,
/// and the client decides whether it can live with the child's version.
fn answer_in_version(result: &Bytes, requested: Option<&str>) -> Bytes {
    let Some(requested) = requested.filter(|v| SESSION_VERSIONS.contains(v)) else {
        return result.clone();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(result) else {
        return result.clone();
    };
    match v.get("protocolVersion").and_then(Value::as_str) {
        Some(negotiated) if negotiated != requested && negotiated > requested => {
            v["protocolVersion"] = requested.into();
            Bytes::from(serde_json::to_vec(&v).expect("Value serializes"))
        }
        _ => result.clone(),
    }
}

/// An InitializeResult for a session-era client of a modern child, built
/// from the child's DiscoverResult: the client's version if it is a session
/// revision, else the newest session revision.
fn initialize_from_discover(discover: &[u8], requested: Option<&str>) -> Value {
    let d: Value = serde_json::from_slice(discover).unwrap_or_default();
    let version = requested
        .filter(|v| SESSION_VERSIONS.contains(v))
        .unwrap_or(LATEST_SESSION_VERSION);
    let server_info = d
        .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({ "name": "mcp-server", "version": "unknown" }));
    let mut r = serde_json::json!({
        "protocolVersion": version,
        "capabilities": d.get("capabilities").cloned().unwrap_or_else(|| serde_json::json!({})),
        "serverInfo": server_info,
    });
    if let Some(i) = d.get("instructions") {
        r["instructions"] = i.clone();
    }
    r
}

/// `params` holding only the `_meta` a 2026-07-28 request needs.
fn modern_meta_params(capabilities: &Value, client_info: &Value) -> Vec<u8> {
    let mut meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": if capabilities.is_null() { serde_json::json!({}) } else { capabilities.clone() },
    });
    if !client_info.is_null() {
        meta["io.modelcontextprotocol/clientInfo"] = client_info.clone();
    }
    serde_json::to_vec(&serde_json::json!({ "_meta": meta })).expect("Value serializes")
}

/// Adds the 2026-07-28 per-request `_meta` (version, client capabilities
/// and info, log level) to a session-era request, keeping what it has.
fn inject_modern_meta(frame: Frame, port: &Port) -> Frame {
    let mut params: serde_json::Map<String, Value> = frame
        .params()
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or_default();
    let meta = params
        .entry("_meta")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("io.modelcontextprotocol/protocolVersion")
            .or_insert_with(|| MODERN_VERSION.into());
        let caps = lock(&port.capabilities).clone();
        meta.entry("io.modelcontextprotocol/clientCapabilities")
            .or_insert_with(|| {
                if caps.is_null() {
                    serde_json::json!({})
                } else {
                    caps
                }
            });
        let info = lock(&port.client_info).clone();
        if !info.is_null() {
            meta.entry("io.modelcontextprotocol/clientInfo")
                .or_insert(info);
        }
        if let Some(level) = *lock(&port.log_level) {
            meta.entry("io.modelcontextprotocol/logLevel")
                .or_insert_with(|| LOG_LEVELS[level].into());
        }
    }
    frame.with_params(&serde_json::to_vec(&params).expect("Value serializes"))
}

fn parse_proxy_id(raw: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(raw).ok()?;
    s.trim_matches('"').parse().ok()
}

/// Replaces `params._meta.progressToken` with the proxy id; returns the
/// client's original token. Only that value is replaced, byte for byte;
/// messages without one pass as they are (a byte search first keeps tool
/// arguments from being scanned twice).
fn rewrite_progress_token(frame: Frame, id: u64) -> (Frame, Option<Box<[u8]>>) {
    let Some(params) = frame.params() else {
        return (frame, None);
    };
    let finder = memchr::memmem::find;
    if finder(params, b"progressToken").is_none() && finder(params, b"\\u").is_none() {
        return (frame, None);
    }
    let Some(at) = frame.locate_in_params(&["_meta", "progressToken"]) else {
        return (frame, None);
    };
    let token: Box<[u8]> = frame.bytes()[at.clone()].into();
    (
        frame.with_replaced(at, id.to_string().as_bytes()),
        Some(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_backs_off_and_a_child_that_stayed_up_starts_over() {
        let cap = Duration::from_secs(30);
        let mut wait = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..12 {
            // Each child crashes at once: the wait doubles up to the cap.
            wait = next_backoff(wait, Duration::from_millis(5), cap);
            waits.push(wait.as_millis());
            wait = (wait * 2).min(cap);
        }
        assert_eq!(&waits[..4], [100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 30_000);
        assert_eq!(
            next_backoff(cap, Duration::from_secs(31), cap),
            FIRST_BACKOFF
        );
    }

    #[test]
    fn progress_token_is_rewritten_and_the_original_kept() {
        let f = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"p","_meta":{"progressToken":"tok-1"}}}"#),
            true,
        )
        .unwrap();
        let (g, token) = rewrite_progress_token(f, 99);
        assert_eq!(token.as_deref(), Some(&br#""tok-1""#[..]));
        let v: Value = serde_json::from_slice(g.bytes()).unwrap();
        assert_eq!(v["params"]["_meta"]["progressToken"], 99);
        assert_eq!(v["params"]["name"], "p");
    }

    #[test]
    fn messages_without_token_pass_untouched() {
        let bytes = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"progress"}}}"#);
        let f = Frame::parse(bytes.clone(), true).unwrap();
        let (g, token) = rewrite_progress_token(f, 5);
        assert!(token.is_none());
        assert_eq!(g.bytes(), &bytes);
    }

    #[test]
    fn proxy_ids_parse_from_numbers_and_strings() {
        assert_eq!(parse_proxy_id(b"17"), Some(17));
        assert_eq!(parse_proxy_id(b"\"17\""), Some(17));
        assert_eq!(parse_proxy_id(b"\"x\""), None);
    }
}
