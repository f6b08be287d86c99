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
//! Does not own: HTTP, SSE encoding, session ids or eras (see
//! [`crate::session`], [`crate::http`]); what it routes to a client goes
//! to a [`ReplySink`], which the HTTP layer implements.
//!
//! Where things are: the routing tables in `routes`, a session's view in
//! `port`, the handshake in `handshake`, the child's life in `supervisor`,
//! fan-out of unrelated notifications in `fanout`, task ownership in
//! `tasks`, multi round-trip requests in `mrtr`, the sink trait in `sink`.
//! This file: the [`Upstream`] type, writes to the child, client requests
//! on their way in and the child's answers and requests on their way out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::child::{ChildError, ChildHandle, ChildSpec, Exit};
use crate::jsonrpc::{self, Frame, Kind, Message, code};
pub use crate::version::UpstreamProtocol;

mod fanout;
mod handshake;
mod mrtr;
mod port;
mod routes;
mod sink;
mod supervisor;
mod tasks;

use fanout::{LOG_LEVELS, log_rank, recompute_level};
pub use fanout::{ListenFilter, SUBSCRIPTION_ID_KEY};
pub use handshake::{DEFAULT_HANDSHAKE_TIMEOUT, EraHints};
use handshake::{HandshakeFailure, InitCache, inject_modern_meta};
pub use port::{Port, PortKeys, PortKind, STATELESS_LABEL};
use routes::{
    Fill, Pending, Retry, Routes, ServerRequest, Target, TaskAnswer, cancelled_notification,
    parse_proxy_id, related_target, rewrite_progress_token,
};
pub use sink::{AnswerWatch, ReplySink, Sink};
pub use tasks::DEFAULT_MAX_TASKS;

/// How long the proxy waits for the child's answer to its own requests
/// (the shared child's re-initialization, subscription bookkeeping).
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(60);

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

/// How the error for a request ended by `--request-timeout` begins (the
/// audit log tells a timeout from other errors by it).
pub const TIMEOUT_MESSAGE: &str = "request timed out after";

/// The child's server-to-client requests waiting for a client's answer,
/// per child; past this, further ones are refused at once.
pub const MAX_SERVER_REQUESTS: usize = 1024;

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
    Stream(Sink),
    /// A single waiter for the response only (JSON response mode, batches,
    /// the proxy's own requests).
    Once(oneshot::Sender<Message>),
    /// Nobody, for now: a 2026-07-28 client's call parked while the client
    /// gathers input (see `Parked`).
    Detached,
    /// The reply within, and a watcher told when the answer goes back (or,
    /// dropped unanswered, that none did): the HTTP layer wraps a
    /// `tools/call` so, to audit it.
    Watched(Box<Reply>, Box<dyn AnswerWatch>),
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
            Reply::Watched(reply, watch) => {
                watch.answered(&message);
                reply.respond_message(message);
            }
        }
    }

    /// This reply, telling `watch` (if any) when the answer goes back.
    pub fn watched(self, watch: Option<Box<dyn AnswerWatch>>) -> Reply {
        match watch {
            Some(watch) => Reply::Watched(Box::new(self), watch),
            None => self,
        }
    }

    /// This reply without its watchers, which are dropped unanswered: the
    /// multiplexer answers a cancelled call itself, and no answer of the
    /// server's went back.
    fn unwatched(self) -> Reply {
        match self {
            Reply::Watched(reply, _) => (*reply).unwatched(),
            other => other,
        }
    }

    fn stream(&self) -> Option<&Sink> {
        match self {
            Reply::Stream(o) => Some(o),
            Reply::Once(_) | Reply::Detached => None,
            Reply::Watched(reply, _) => reply.stream(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is plain tables; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The child's life as the outside sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running and usable.
    Ready,
    /// Starting, or restarting after a crash.
    Starting,
    /// Running, but a shared child that keeps exiting soon after it starts
    /// and was never initialized: not ready until one stays up for
    /// `--restart-max-backoff` or completes a handshake.
    CrashLooping,
    /// Gone for good.
    Dead(String),
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
    /// Handshakes made for sessions so far (under `init`); a session that
    /// sees it change while it waited for `init` shares the outcome.
    init_attempts: AtomicU64,
    /// How the last handshake made for a session failed, if it did.
    init_failure: Mutex<Option<HandshakeFailure>>,
    /// What the child turned out to speak (`Auto` until known).
    era: Mutex<UpstreamProtocol>,
    initialized_sent: AtomicBool,
    cancel: CancellationToken,
    /// The exit that ended this upstream, for `--exit-on-child-exit`.
    final_exit: watch::Sender<Option<Exit>>,
    /// Every task this upstream starts (supervisor, the reader of the
    /// child's lines and deadlines, the proxy's own writes and requests);
    /// [`Upstream::stop`] waits for them.
    tasks: TaskTracker,
    /// Control writes queued and not yet taken by the child.
    control_writes: Arc<AtomicUsize>,
    /// Set when a write timed out (the child stopped reading): later
    /// writes then take room if there is some and otherwise fail at once,
    /// instead of each waiting the whole deadline; cleared by the next
    /// write that goes through.
    stdin_stalled: AtomicBool,
    /// Wakes the reader's select when a sooner deadline is added.
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
        let routes = Routes::new(opts.max_tasks);
        let up = Arc::new(Upstream {
            spec,
            label: label.to_string(),
            opts,
            child: Mutex::new(Some(child.clone())),
            routes: Mutex::new(routes),
            next_id: AtomicU64::new(1),
            health: watch::Sender::new(Health::Ready),
            init: tokio::sync::Mutex::new(None),
            init_attempts: AtomicU64::new(0),
            init_failure: Mutex::new(None),
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
        up.tasks
            .spawn(Upstream::supervise(Arc::downgrade(&up), child, reader).instrument(span));
        Ok(up)
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
            let unsubscribe = r.forget_port(port.key);
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
                    let subscribe = method == "resources/subscribe";
                    let forward = lock(&self.routes).count_subscription(&uri, port.key, subscribe);
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
        let deadline = self.opts.request_timeout.map(|t| Instant::now() + t);
        let admitted = lock(&self.routes).admit(id, pending, deadline);
        match admitted {
            Ok(true) => self.timer_wake.notify_one(),
            Ok(false) => {}
            Err(refused) => {
                let (e, pending) = *refused;
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

    /// Ends every request whose deadline has passed.
    fn expire_due(&self) {
        let (due, _) = lock(&self.routes).due(Instant::now());
        for id in due {
            self.expire(id);
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
        let msg = format!("{TIMEOUT_MESSAGE} {} ms", timeout.as_millis());
        p.reply.respond(&jsonrpc::error_response(
            Some(&p.client_id),
            code::SERVER_ERROR,
            &msg,
            None,
        ));
        self.write_control(&cancelled_notification(id, &msg));
    }

    fn take_pending(&self, id: u64) -> Option<Pending> {
        lock(&self.routes).take(id)
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
        let client_id = &frame.bytes()[at.clone()];
        let Some(id) = lock(&self.routes).proxy_id(port.key, client_id) else {
            debug!("cancellation of an unknown or finished request ignored");
            return Ok(());
        };
        if let Some(p) = self.take_pending(id) {
            match p.reply.unwatched() {
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
                Reply::Detached | Reply::Watched(..) => {}
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
        let id = lock(&self.routes).proxy_id(port.key, client_id);
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
        // (which fails what is in flight), the reader, writes.
        self.tasks.close();
        self.tasks.wait().await;
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
