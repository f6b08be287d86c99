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
//!   tasks stay private to it (module `tasks`); a 2026-07-28 client's
//!   task's requests are held for its `tasks/get` and `tasks/update`
//!   ([`Upstream::task_inputs`]).
//! - across eras, a server-to-client request and an `input_required` result
//!   are translated into each other (module `mrtr`): a 2026-07-28 child's
//!   questions reach a session-era client as requests, a 2025-era child's
//!   requests reach a 2026-07-28 client as `input_required`.
//!
//! Does not own: HTTP, SSE encoding, session ids or eras (see
//! [`crate::session`], [`crate::http`]); what it routes to a client goes
//! to a [`ReplySink`], which the HTTP layer implements.
//!
//! Where things are: the task that owns the tables and reads and writes
//! the child in `worker` (with the routing of the child's answers and
//! requests), the routing tables in `routes`, a session's view in `port`,
//! the handshake in `handshake`, the child's life in `supervisor`, fan-out
//! of unrelated notifications in `fanout`, task ownership in `tasks`, multi
//! round-trip requests in `mrtr` (and what a parked call is bound to in
//! `call_key`), the sink trait in `sink`, a long answer
//! being passed on as it arrives (cut-through) in `cut`, and the check of
//! its bytes on the way in `check`. This file: the
//! [`Upstream`] handle (what sessions call; it talks to the worker over a
//! bounded command queue) and client requests on their way in.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::child::{ChildError, ChildHandle, ChildSpec, Exit};
use crate::jsonrpc::{self, Frame, Message, code};
use crate::lock;
use crate::tail::Answer;
pub use crate::version::UpstreamProtocol;

mod call_key;
mod check;
mod cut;
mod fanout;
mod fill;
mod handshake;
mod mrtr;
mod port;
mod routes;
mod sink;
mod stamp;
mod supervisor;
mod tasks;
mod worker;

use fanout::LOG_LEVELS;
pub use fanout::{ListenFilter, SUBSCRIPTION_ID_KEY, log_rank};
use fill::Fill;
pub use handshake::{DEFAULT_HANDSHAKE_TIMEOUT, EraHints, proxy_initialize_params};
use handshake::{HandshakeFailure, InitCache, inject_modern_meta};
pub use port::{LOG_LEVEL_KEY, Port, PortKeys, PortKind, STATELESS_LABEL};
pub(crate) use routes::rewrite_progress_token;
use routes::{Pending, Retry, TaskAnswer};
pub use sink::{AnswerWatch, ReplySink, Sink};
pub use stamp::{SERVER_INFO_KEY, Stamp};
pub use tasks::DEFAULT_MAX_TASKS;
use worker::{COMMAND_QUEUE, Command, TaskInputOp, Worker};

/// For `crate::fuzzing` only.
#[cfg(fuzzing)]
pub(crate) use check::{Broken, Check};
#[cfg(fuzzing)]
pub(crate) use routes::{client_key, parse_proxy_id};

/// How long the proxy waits for the child's answer to its own requests
/// (the shared child's re-initialization, subscription bookkeeping).
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a message may wait for room in the child's stdin queue when
/// `--request-timeout` is not set. A child that stops reading its input
/// fails the request after this instead of holding its handler forever.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the error for a request ended by `--request-timeout` begins (for
/// its client to read; the audit log is told of a timeout apart, see
/// [`AnswerWatch::failed`]).
pub const TIMEOUT_MESSAGE: &str = "request timed out after";

/// The child's server-to-client requests waiting for a client's answer,
/// per child, unless configured otherwise (`--max-server-requests`); past
/// this, further ones are refused at once with an error to the child.
pub const DEFAULT_MAX_SERVER_REQUESTS: usize = 1024;

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
    /// The child died, or the proxy is stopping, while the request was in
    /// flight; the text says which.
    #[error("{0}")]
    Gone(String),
    /// `--request-timeout` passed without an answer.
    #[error("{TIMEOUT_MESSAGE} {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// The child's answer was over `--max-line-bytes` and was dropped.
    #[error("the MCP server's answer ({size}) exceeds --max-line-bytes ({limit})")]
    Oversized {
        /// The answer's size, as far as it is known.
        size: String,
        /// The cap.
        limit: usize,
    },
    /// The multiplexer did not take the message within the write deadline
    /// (it is overloaded).
    #[error("the proxy could not queue the message within {} ms", .0.as_millis())]
    Overloaded(Duration),
    /// The child's answer, known by the id at its edges, was not valid
    /// JSON-RPC and was skipped.
    #[error("the MCP server's answer was not valid JSON-RPC ({0})")]
    Garbled(String),
}

/// The same error again, for another waiter on the work that failed with
/// it: a failed spawn (whose cause is an I/O error, which cannot be
/// cloned) is repeated as its message, with the same code.
impl Clone for UpstreamError {
    fn clone(&self) -> UpstreamError {
        use UpstreamError::*;
        match self {
            ChildExited(s) => ChildExited(s.clone()),
            Spawn(e) => ChildExited(e.to_string()),
            Rpc { method, error } => Rpc {
                method,
                error: error.clone(),
            },
            NotReading(d) => NotReading(*d),
            SessionEnded => SessionEnded,
            DuplicateId(s) => DuplicateId(s.clone()),
            HandshakeTimeout(d) => HandshakeTimeout(*d),
            Internal { method, reason } => Internal {
                method,
                reason: reason.clone(),
            },
            Gone(s) => Gone(s.clone()),
            TimedOut(d) => TimedOut(*d),
            Oversized { size, limit } => Oversized {
                size: size.clone(),
                limit: *limit,
            },
            Overloaded(d) => Overloaded(*d),
            Garbled(s) => Garbled(s.clone()),
        }
    }
}

impl UpstreamError {
    /// The JSON-RPC error code a client gets for it. The proxy's own
    /// failures (the child died, did not answer in time, answered
    /// garbage) are -32000 for a session-era client, as they always
    /// were, and -32603 for a 2026-07-28 (`modern`) one: that revision
    /// says new implementations should not use -32000…-32019 at all
    /// (spec 2026-07-28 `basic/index`, "Error Codes").
    pub fn code(&self, modern: bool) -> i64 {
        match self {
            UpstreamError::DuplicateId(_) => code::INVALID_REQUEST,
            _ => proxy_failure_code(modern),
        }
    }
}

/// The code of an error the proxy itself answers with because the MCP
/// server failed (see [`UpstreamError::code`]): -32000 for a session-era
/// client, -32603 for a 2026-07-28 one.
pub fn proxy_failure_code(modern: bool) -> i64 {
    if modern {
        code::INTERNAL_ERROR
    } else {
        code::SERVER_ERROR
    }
}

/// Where a request's response (and what relates to it) goes.
pub enum Reply {
    /// An SSE stream: related messages, then the response.
    Stream(Sink),
    /// A single waiter for the response only (a batch's JSON answers).
    Once(oneshot::Sender<Message>),
    /// A single JSON body for the response only: a long answer may come as
    /// its head and the rest as it arrives (`crate::tail`).
    Json(oneshot::Sender<Answer>),
    /// The proxy's own request: the answer, or why there is none.
    Call(oneshot::Sender<Result<Message, UpstreamError>>),
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
            Reply::Json(tx) => {
                let _ = tx.send(Answer::Whole(message));
            }
            Reply::Call(tx) => {
                let _ = tx.send(Ok(message));
            }
            Reply::Detached => {}
            Reply::Watched(reply, watch) => {
                watch.handed_over(&message, reply.has_taker());
                reply.respond_message(message);
            }
        }
    }

    /// As `respond_message`, for the child's answer to request
    /// `client_id` (already its id): a stream takes it in its pieces and
    /// need not look for its id.
    fn respond_answer(self, message: Message, client_id: &[u8]) {
        match self {
            Reply::Stream(o) => o.send_answer(&message, client_id),
            Reply::Watched(reply, watch) => {
                watch.handed_over(&message, reply.has_taker());
                reply.respond_answer(message, client_id);
            }
            other => other.respond_message(message),
        }
    }

    /// Answers request `client_id` with error `e`, in the code a
    /// 2026-07-28 (`modern`) or session-era client takes (the proxy's own
    /// requests get `e` itself).
    fn fail(self, client_id: &[u8], e: &UpstreamError, modern: bool) {
        match self {
            Reply::Call(tx) => {
                let _ = tx.send(Err(e.clone()));
            }
            other => {
                let code = e.code(modern);
                let message = jsonrpc::error_response(Some(client_id), code, &e.to_string(), None);
                other.fail_with(
                    message.into(),
                    code,
                    matches!(e, UpstreamError::TimedOut(_)),
                );
            }
        }
    }

    /// Answers with the proxy's own error `message` (see [`Reply::fail`]),
    /// telling each watcher it is the proxy's, and whether the proxy timed
    /// the request out.
    fn fail_with(self, message: Message, code: i64, timed_out: bool) {
        match self {
            Reply::Watched(reply, watch) => {
                watch.failed(&message, reply.has_taker(), code, timed_out);
                reply.fail_with(message, code, timed_out);
            }
            other => other.respond_message(message),
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

    /// Whether a long answer may go on in pieces
    /// ([`Reply::respond_in_pieces`]).
    fn takes_pieces(&self) -> bool {
        match self {
            Reply::Json(_) => true,
            Reply::Stream(sink) => sink.takes_pieces(),
            Reply::Watched(reply, _) => reply.takes_pieces(),
            Reply::Once(_) | Reply::Call(_) | Reply::Detached => false,
        }
    }

    /// Answers with a long answer's head; where its pieces go is returned.
    /// If the answer breaks off, its error is in the code a 2026-07-28
    /// (`modern`) or session-era client takes (see [`Reply::fail`]).
    /// Only for a reply that [`Reply::takes_pieces`]; any other gets an
    /// error, and `None`.
    fn respond_in_pieces(self, head: Message, client_id: &[u8], modern: bool) -> Option<cut::To> {
        let code = proxy_failure_code(modern);
        match self {
            Reply::Json(tx) => {
                let (pieces, tail) = crate::tail::channel(client_id, code);
                let _ = tx.send(Answer::Streamed(head, tail));
                Some(cut::To::Body(pieces))
            }
            Reply::Stream(sink) => {
                if sink.open_response(head, client_id, code) {
                    return Some(cut::To::Stream(sink));
                }
                // Checked just before (`takes_pieces`), so only a stream
                // that ended since gets here: it drops this too.
                sink.send_response(&jsonrpc::error_response(
                    Some(client_id),
                    code::INTERNAL_ERROR,
                    "the answer could not be passed on",
                    None,
                ));
                None
            }
            Reply::Watched(reply, watch) => {
                watch.handed_over(&head, reply.has_taker());
                reply.respond_in_pieces(head, client_id, modern)
            }
            other => {
                debug_assert!(false, "respond_in_pieces on a reply that takes none");
                other.respond(&jsonrpc::error_response(
                    Some(client_id),
                    code::INTERNAL_ERROR,
                    "the answer could not be passed on",
                    None,
                ));
                None
            }
        }
    }

    /// Whether a client is there now to take an answer given to this
    /// reply: its JSON body's waiter, or a live consumer of its stream.
    /// `false` when the client went away (closed its connection, dropped
    /// its stream): an answer then reaches nobody, unless a resumption
    /// takes it from the stream's replay buffer later.
    fn has_taker(&self) -> bool {
        match self {
            Reply::Stream(s) => !s.is_finished() && s.is_live(),
            Reply::Once(tx) => !tx.is_closed(),
            Reply::Json(tx) => !tx.is_closed(),
            Reply::Call(tx) => !tx.is_closed(),
            Reply::Detached => false,
            Reply::Watched(reply, _) => reply.has_taker(),
        }
    }

    fn stream(&self) -> Option<&Sink> {
        match self {
            Reply::Stream(o) => Some(o),
            Reply::Once(_) | Reply::Json(_) | Reply::Call(_) | Reply::Detached => None,
            Reply::Watched(reply, _) => reply.stream(),
        }
    }
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
    /// The child's clients are sessions (`--shared`), which pass on their
    /// `notifications/roots/list_changed` and can be asked the
    /// `roots/list` that follows: the proxy's own `initialize` declares
    /// roots with `listChanged` only then. A `--stateless` POST's
    /// notification reaches the child too, but a request that follows it
    /// relates to no call and has nobody to go to.
    pub sessions: bool,
    /// How long `auto` waits for the answer to its `server/discover` probe.
    pub probe_timeout: Duration,
    /// What earlier children of the same command refused.
    pub era_hints: Arc<EraHints>,
    /// How long a 2026-07-28 client has to retry a call that needs its
    /// input before the child's request is refused (`--request-timeout`
    /// when set wins).
    pub input_wait: Duration,
    /// Bytes waiting for the child's stdin before further messages to it
    /// fail at once (`--max-child-queue-bytes`).
    pub max_child_queue_bytes: usize,
    /// A 2025-era child's `serverInfo` put into 2026-07-28 results as
    /// written up to this many bytes (`--max-server-info-bytes`).
    pub max_server_info_bytes: usize,
    /// The child's requests waiting for a client's answer, in all
    /// (`--max-server-requests`).
    pub max_server_requests: usize,
    /// Bytes of the child's requests held for tasks of clients without a
    /// session, in all (`--max-task-input-bytes`; a task holds a quarter).
    pub max_task_input_bytes: usize,
    /// The same, per session (`--max-server-requests-per-session`): one
    /// client that never answers cannot take the room of the others.
    pub max_server_requests_per_session: usize,
    /// A notification for every session larger than this goes in its
    /// minimal form (`--max-queue-bytes`, which bounds a stream's queue).
    pub max_broadcast_bytes: usize,
}

/// One child, as the sessions see it: a handle on the [`worker`] that owns
/// the routing tables, plus what the handshake and the supervisor keep.
pub struct Upstream {
    spec: ChildSpec,
    label: String,
    opts: UpstreamOptions,
    child: Mutex<Option<ChildHandle>>,
    /// Commands for the worker (bounded: a handle waits for room, up to
    /// its write deadline).
    commands: mpsc::Sender<Command>,
    /// Housekeeping for the worker that cannot wait (drop guards, the
    /// supervisor); see [`worker`] for its bound.
    tidy: mpsc::UnboundedSender<Command>,
    /// Ports attached plus requests in flight, as the worker last saw them.
    busy: Arc<AtomicUsize>,
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
    /// A 2025-era child's identity for 2026-07-28 results, from its
    /// handshake (`None` inside: it named none, or it is a 2026-07-28
    /// child, which names itself).
    stamp: std::sync::OnceLock<Option<Arc<Stamp>>>,
    initialized_sent: AtomicBool,
    cancel: CancellationToken,
    /// The exit that ended this upstream, for `--exit-on-child-exit`.
    final_exit: watch::Sender<Option<Exit>>,
    /// Every task this upstream starts (the worker, the supervisor, the
    /// proxy's own requests); [`Upstream::stop`] waits for them.
    tasks: TaskTracker,
}

impl Upstream {
    /// Spawns the child and starts routing its output.
    pub fn start(
        spec: ChildSpec,
        label: &str,
        opts: UpstreamOptions,
        cancel: CancellationToken,
    ) -> Result<Arc<Upstream>, UpstreamError> {
        let (child, io) = ChildHandle::spawn(&spec, label)?;
        let protocol = opts.protocol;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (tidy, tidy_rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let noise_rate = spec.stderr_lines_per_second;
        let metrics = spec.metrics.clone();
        let up = Arc::new(Upstream {
            spec,
            label: label.to_string(),
            opts: opts.clone(),
            child: Mutex::new(Some(child.clone())),
            commands,
            tidy,
            busy: busy.clone(),
            next_id: AtomicU64::new(1),
            health: watch::Sender::new(Health::Ready),
            init: tokio::sync::Mutex::new(None),
            init_attempts: AtomicU64::new(0),
            init_failure: Mutex::new(None),
            era: Mutex::new(protocol),
            stamp: std::sync::OnceLock::new(),
            initialized_sent: AtomicBool::new(false),
            cancel: cancel.clone(),
            final_exit: watch::Sender::new(None),
            tasks: TaskTracker::new(),
        });
        let span = info_span!("upstream", session = %label, pid = child.pid());
        let worker = Worker::new(
            Arc::downgrade(&up),
            opts,
            up.tasks.clone(),
            cancel,
            busy,
            noise_rate,
            metrics,
        );
        let (ended_tx, ended_rx) = oneshot::channel();
        up.tasks.spawn(
            worker
                .run(io, ended_tx, command_rx, tidy_rx)
                .instrument(span.clone()),
        );
        up.tasks
            .spawn(Upstream::supervise(Arc::downgrade(&up), child, ended_rx).instrument(span));
        Ok(up)
    }

    /// How long a message may wait for room in the child's stdin queue.
    fn write_timeout(&self) -> Duration {
        self.opts.request_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

    /// Queues a command for the worker, waiting at most the write deadline
    /// for room; a command that cannot be queued is refused (its waiter
    /// hears why).
    async fn command(&self, command: Command) -> Result<(), UpstreamError> {
        // Room at once is the common case, and needs no timer (a closed
        // queue is answered below, as when it closes while waiting).
        if let Ok(permit) = self.commands.try_reserve() {
            permit.send(command);
            return Ok(());
        }
        let wait = self.write_timeout();
        let e = match tokio::time::timeout(wait, self.commands.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(command);
                return Ok(());
            }
            Ok(Err(_)) => UpstreamError::ChildExited("the proxy is stopping".into()),
            Err(_) => {
                warn!(
                    wait_ms = wait.as_millis() as u64,
                    "the multiplexer did not take a message in time; failing it"
                );
                UpstreamError::Overloaded(wait)
            }
        };
        command.refuse(&e);
        Err(e)
    }

    /// Asks the worker something and waits for the answer, within the
    /// write deadline (`None`: the worker is gone, or the command could not
    /// be queued or answered in time; the worker answers within the step
    /// that takes the command, so only a stopping one keeps a caller).
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.command(command(tx)).await.ok()?;
        tokio::time::timeout(self.write_timeout(), rx)
            .await
            .ok()?
            .ok()
    }

    /// `task`'s requests the child holds for its client (a 2026-07-28
    /// client's), as an `inputRequests` object; `None` when it has none,
    /// or `port`'s caller may not see the task. A request the capabilities
    /// of `frame` (the client's `tasks/get`) do not declare is refused at
    /// the child instead, as the retry of a call that asks for input is.
    pub async fn task_inputs(&self, port: &Port, frame: &Frame, task: &str) -> Option<Vec<u8>> {
        port.note_modern_capabilities(frame);
        self.task_input(port, task, TaskInputOp::List).await
    }

    /// Gives the child the client's answers to `task`'s held requests
    /// (`inputResponses` members); keys not outstanding are ignored.
    /// `false` when `port`'s caller may not see the task.
    pub async fn answer_task_inputs(
        &self,
        port: &Port,
        task: &str,
        responses: Vec<(String, Box<serde_json::value::RawValue>)>,
    ) -> bool {
        let op = TaskInputOp::Answer(responses);
        self.task_input(port, task, op).await.is_some()
    }

    /// `task` ended: the child's requests held for it get an error (`why`).
    pub fn end_task_inputs(&self, port: &Port, task: &str, why: &str) {
        self.tidy(Command::TaskInput {
            task: task.into(),
            port: port.key,
            session: port.has_identity(),
            principal: port.principal(),
            op: TaskInputOp::End(why.into()),
            done: None,
        });
    }

    /// One [`Command::TaskInput`] and its answer (one call site: the
    /// image holds one copy of the wait).
    async fn task_input(&self, port: &Port, task: &str, op: TaskInputOp) -> Option<Vec<u8>> {
        let (port_key, session, principal) = (port.key, port.has_identity(), port.principal());
        self.ask(|done| Command::TaskInput {
            task: task.into(),
            port: port_key,
            session,
            principal,
            op,
            done: Some(done),
        })
        .await
        .flatten()
    }

    /// Fails every request in flight with `why` (the shutdown's grace ran
    /// out) and waits until the worker has done so, so that each error is
    /// queued on its stream before the streams are ended.
    pub async fn fail_in_flight(&self, why: &str) {
        let why = why.to_string();
        let _ = self.ask(|done| Command::FailInFlight { why, done }).await;
    }

    /// Housekeeping that cannot wait (drop guards); see [`worker`].
    fn tidy(&self, command: Command) {
        let _ = self.tidy.send(command);
    }

    /// Records a question the proxy asks a client for a 2026-07-28 child
    /// (before it is sent: the answer comes after); why not, when a bound
    /// of the requests waiting for clients refuses it.
    async fn record_question(
        &self,
        id: Box<[u8]>,
        request: routes::ServerRequest,
    ) -> Result<(), String> {
        self.ask(|done| Command::Ask { id, request, done })
            .await
            .unwrap_or_else(|| Err("the proxy could not record the request".to_string()))
    }

    /// Those questions are no longer waited for.
    fn forget_questions(&self, ids: Vec<Box<[u8]>>) {
        self.tidy(Command::Unask(ids));
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

    /// Attaches a session (before any of its requests).
    pub fn attach(&self, port: Arc<Port>) {
        self.tidy(Command::Attach(port));
    }

    /// Detaches a session: its requests are forgotten (late answers are
    /// dropped), its subscriptions released.
    pub async fn detach(self: &Arc<Self>, port: &Port) {
        self.detach_with(port, None).await;
    }

    /// Detaches a port whose requests still in flight nobody can get the
    /// answers of (a `--stateless` POST, whose stream has no ids to resume
    /// it by; a session that ended): each is cancelled at the child for `reason`, exactly as
    /// [`Upstream::cancel_request`] would, and the rest is [`Upstream::detach`].
    /// Answered requests are not in flight, so this costs nothing for them.
    /// The detach goes on the command queue behind the port's own requests,
    /// so none can reach the child after it uncancelled.
    pub async fn detach_cancelling(self: &Arc<Self>, port: &Port, reason: &'static str) {
        self.detach_with(port, Some(reason)).await;
    }

    async fn detach_with(self: &Arc<Self>, port: &Port, cancel: Option<&'static str>) {
        let key = port.key;
        let detach = |done| Command::Detach {
            port: key,
            cancel,
            done,
        };
        let Some((unsubscribe, level)) = self.ask(detach).await else {
            return;
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
    /// per-principal child may be stopped, see [`crate::principals`]), as
    /// the worker last saw it.
    pub fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
    }

    fn child(&self) -> Result<ChildHandle, UpstreamError> {
        match lock(&self.child).as_ref() {
            Some(c) if c.exit() == Exit::Running => Ok(c.clone()),
            Some(c) => Err(UpstreamError::ChildExited(c.exit().to_string())),
            None => Err(UpstreamError::ChildExited("restarting".into())),
        }
    }

    /// Queues a message for the child (after whatever was queued before it).
    async fn write(&self, frame: &Frame) -> Result<(), UpstreamError> {
        self.child()?;
        self.command(Command::Write(frame.to_line())).await
    }

    /// Passes a client request to the child. The response, and whatever
    /// relates to it, goes to `reply`; so does any error, which is also
    /// returned when it is known at once.
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
            // The retry is a request of its own (spec 2026-07-28
            // `basic/index`, per-request fields): once it resumes the
            // call, what the child asks next is checked against its
            // capabilities, and its log level decides which log messages
            // it gets, never the first request's.
            port.note_modern_log_level(&frame);
            port.note_modern_capabilities(&frame);
            port.note_call(&frame);
            return self
                .command(Command::Resume {
                    port: port.clone(),
                    frame: Box::new(frame),
                    client_id,
                    reply,
                })
                .await;
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
                // Boxed, as every path taken once per child or session: a
                // future embeds all it may await, and every call's would
                // carry the handshake's otherwise.
                return Box::pin(self.initialize(&frame, &client_id, reply, budget)).await;
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
                let visible = match &task {
                    Some(t) => {
                        let (task, key) = (t.clone(), port.key);
                        let (session, principal) = (port.has_identity(), port.principal());
                        self.ask(|done| Command::MaySee {
                            task,
                            port: key,
                            session,
                            principal,
                            done,
                        })
                        .await
                        .unwrap_or(false)
                    }
                    None => false,
                };
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
                    let key = port.key;
                    let forward = self
                        .ask(|done| Command::Subscription {
                            uri,
                            port: key,
                            subscribe,
                            done,
                        })
                        .await
                        .unwrap_or(true);
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
                    let most_verbose = self
                        .ask(|done| Command::Level { done })
                        .await
                        .flatten()
                        .unwrap_or(level);
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
        let stamp = match fill {
            Fill::None => None,
            _ => self.stamp.get().cloned().flatten(),
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
        if port.kind == PortKind::Modern {
            // This request takes only the log messages its own `_meta`
            // asked for (see `fanout::passes`): a 2025-era child logs for
            // its session, a 2026-07-28 one for the request, which the
            // level is then the request's own for too (none recorded
            // would pass none of them).
            port.note_modern_log_level(&frame);
        }
        if parkable {
            port.note_modern_capabilities(&frame);
            port.note_call(&frame);
        }
        let pending = Pending {
            port: port.key,
            modern: port.kind == PortKind::Modern,
            fill,
            stamp,
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

    /// Gives a request a proxy id and hands it to the worker, which records
    /// where its answer goes and writes it to the child.
    async fn send_pending(
        self: &Arc<Self>,
        frame: Frame,
        mut pending: Pending,
    ) -> Result<(), UpstreamError> {
        if self.opts.shared && self.health() == Health::Starting && lock(&self.child).is_some() {
            // A restarted child takes requests once it is initialized again
            // (between restarts, with no child, requests fail at once).
            Box::pin(self.wait_until_restarted()).await;
        }
        if let Err(e) = self.child() {
            pending.fail(&e);
            return Err(e);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (frame, token) = rewrite_progress_token(frame, id);
        pending.token = token;
        let deadline = self.opts.request_timeout.map(|t| Instant::now() + t);
        self.command(Command::Send {
            id,
            pending: Box::new(pending),
            line: frame.line_with_id(id),
            deadline,
        })
        .await
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
        self.child()?;
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
        let pending = Pending {
            port: 0,
            modern: false,
            fill: Fill::None,
            stamp: None,
            tasks: TaskAnswer::None,
            retry: None,
            parkable: false,
            client_id: id.to_string().into_bytes().into(),
            token: None,
            deadline: None,
            reply: Reply::Call(tx),
        };
        // However this ends (answer, timeout, the caller dropped), the
        // entry goes.
        struct Forget<'a>(&'a Upstream, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.tidy(Command::Forget(self.1));
            }
        }
        let _forget = Forget(self, id);
        self.command(Command::Send {
            id,
            pending: Box::new(pending),
            line: frame.to_line(),
            deadline: None,
        })
        .await?;
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(message))) => message.into_bytes(),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => {
                return Err(UpstreamError::Internal {
                    method,
                    reason: "no answer".into(),
                });
            }
            Err(_) => {
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
                Ok(())
            }
            "notifications/cancelled" => {
                let Some(at) = frame.locate_in_params(&["requestId"]) else {
                    debug!("notifications/cancelled without a requestId dropped");
                    return Ok(());
                };
                self.child()?;
                self.command(Command::Cancel {
                    port: port.key,
                    frame: Box::new(frame),
                    at,
                })
                .await
            }
            "notifications/roots/list_changed" => {
                self.child()?;
                self.command(Command::RootsChanged {
                    port: port.key,
                    line: frame.to_line(),
                })
                .await
            }
            _ => self.write(&frame).await,
        }
    }

    /// The proxy cancels a client's request itself (a 2026-07-28 client
    /// closed its stream, which is that era's cancellation).
    pub fn cancel_request(&self, port: &Port, client_id: &[u8], reason: &str) {
        self.tidy(Command::CancelRequest {
            port: port.key,
            client_id: client_id.into(),
            reason: reason.to_string(),
        });
    }

    /// Passes a client's response (to a server-to-client request) to the child.
    /// Answers to requests this session was never sent are dropped.
    pub async fn respond(&self, port: &Port, frame: Frame) -> Result<(), UpstreamError> {
        self.command(Command::Answer {
            port: port.key,
            frame: Box::new(frame),
        })
        .await
    }

    /// Stops the child and fails whatever is in flight.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let child = lock(&self.child).clone();
        if let Some(child) = child {
            child.stop().await;
        }
        // Everything this upstream started ends with it: the worker (which
        // fails what is in flight), the supervisor, the proxy's own requests.
        self.tasks.close();
        self.tasks.wait().await;
    }
}
