//! The multiplexer's worker: the one task that owns the routing tables, the
//! order of what goes to the child's stdin, and every deadline.
//!
//! It holds the child's pipes itself and runs one `select!` over the
//! commands of the handles ([`Upstream`]'s methods, on a bounded queue),
//! housekeeping from drop guards and the supervisor, the child's stdout
//! lines, room in the child's stdin pipe, and the soonest deadline (a
//! request's `--request-timeout`, a parked call's input wait, a queued
//! write's deadline). It waits on nothing else: what goes to clients goes
//! to [`super::ReplySink`]s, which never block, and what goes to the child
//! is queued here in order and written (many lines in one system call)
//! whenever the pipe takes it. So the reader of the child's output never
//! waits on its input, a child that stops reading fails what was written
//! to it at the deadline instead of holding anyone, and no other task sits
//! between a request and the child's stdin.
//!
//! The housekeeping queue is unbounded, and cannot grow past the tables:
//! each message on it stands for one entry of a bounded table (a request
//! to forget, a port to attach or cancel for) or for a child start.
//!
//! A panic while routing a line or running a command is caught: the child
//! is then treated as dead (requests in flight fail, a shared child is
//! restarted) and the worker carries on.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, trace, warn};

use super::call_key::CallKey;
use super::check::Check;
use super::cut::Cut;
use super::fanout::{recompute_level, route_notification, task_owner};
use super::mrtr::{InputRequest, input_required_result, new_request_state, resumption};
use super::routes::{
    Crowded, Parked, Pending, Routes, ServerRequest, Target, TaskAnswer, Unasked,
    cancelled_notification, client_key, parse_proxy_id, related_call, related_target,
};
use super::stamp;
use super::{
    DEFAULT_WRITE_TIMEOUT, Port, PortKind, Reply, STATELESS_LABEL, Upstream, UpstreamError,
    UpstreamOptions, mrtr, tasks,
};
use crate::child::ChildIo;
use crate::jsonrpc::{self, Frame, Kind, LineError, LineReader, Piece, code};
use crate::logging::RateLimit;
use crate::metrics::{ChildMetrics, Refusal};
use crate::tail::{self, TailError};

/// Commands the bounded queue holds before a handle has to wait for room
/// (up to its write deadline; then its request fails).
pub(super) const COMMAND_QUEUE: usize = 1024;

/// Lines waiting for the child's stdin pipe; past this (or
/// `--max-child-queue-bytes`) a further write fails at once.
const OUTBOX_LINES: usize = 2048;

/// The longest id (as JSON) of the child's request to a client: the same
/// 1 KiB a client's request id may have (`http::MAX_REQUEST_ID_BYTES`).
/// Longer ones are refused with an error to the child.
const MAX_CHILD_ID_BYTES: usize = 1024;

/// Bytes of each end of a line that is not JSON-RPC searched for the id
/// of the request it answered (`jsonrpc::edge_id`): room for the envelope
/// before the result, or for the id written last.
const GARBLED_EDGE: usize = 64;

/// Lines handed to the pipe in one system call at most.
const WRITE_BATCH: usize = 64;

/// Commands taken in one turn of the loop at most, so that their lines
/// share a write while lines from the child still get their turn.
const COMMAND_BATCH: usize = 32;

/// The child's stdout, line by line.
pub(super) type Reader = LineReader<crate::child::Stdout>;

/// What a [`Command::TaskInput`] asks.
pub enum TaskInputOp {
    /// The task's held requests, as an `inputRequests` object (`None`:
    /// none, or the task is not the caller's).
    List,
    /// Answers (`inputResponses` members, each the result for the child's
    /// request under that key); answered with an empty list when the task
    /// is the caller's, `None` otherwise.
    Answer(Vec<(String, Box<serde_json::value::RawValue>)>),
    /// The task ended (its child says so, or it was cancelled): its held
    /// requests are refused, with this reason.
    End(String),
}

/// What the handles, drop guards and the supervisor ask of the worker.
pub(super) enum Command {
    /// A session attached.
    Attach(Arc<Port>),
    /// A session detached: forget it; answer with the URIs nobody
    /// subscribes to any more and the child's new log level, if it changed.
    /// With `cancel`, its requests still in flight are cancelled at the
    /// child for that reason first (nobody can get their answers). On this
    /// queue, after the port's requests, so none of them can slip past it.
    Detach {
        port: u64,
        cancel: Option<&'static str>,
        done: oneshot::Sender<(Vec<String>, Option<usize>)>,
    },
    /// A request (id and progress token already rewritten): record where
    /// its answer goes, then write it.
    Send {
        id: u64,
        pending: Box<Pending>,
        line: Bytes,
        deadline: Option<Instant>,
    },
    /// A message that needs no entry (a client's notification).
    Write(Bytes),
    /// A session's `notifications/roots/list_changed`: remember the
    /// session (a `roots/list` that follows goes to it), then write it.
    RootsChanged { port: u64, line: Bytes },
    /// A client's `notifications/cancelled`; `at` is its `requestId`.
    Cancel {
        port: u64,
        frame: Box<Frame>,
        at: Range<usize>,
    },
    /// The proxy cancels a client's request (its client went away).
    CancelRequest {
        port: u64,
        client_id: Box<[u8]>,
        reason: String,
    },
    /// A client's answer to a server-to-client request.
    Answer { port: u64, frame: Box<Frame> },
    /// The proxy's own request ended on its side (answered, timed out,
    /// dropped): forget its entry.
    Forget(u64),
    /// Whether a caller may see a task.
    MaySee {
        task: String,
        port: u64,
        session: bool,
        principal: Option<Arc<str>>,
        done: oneshot::Sender<bool>,
    },
    /// The child's requests held for a 2026-07-28 client's task (the Tasks
    /// extension's input), for a caller that may see the task.
    TaskInput {
        task: String,
        port: u64,
        session: bool,
        principal: Option<Arc<str>>,
        op: TaskInputOp,
        done: Option<oneshot::Sender<Option<Vec<u8>>>>,
    },
    /// Counts a session in or out of a URI's subscribers; answers whether
    /// the child must hear of it.
    Subscription {
        uri: String,
        port: u64,
        subscribe: bool,
        done: oneshot::Sender<bool>,
    },
    /// Recomputes the most verbose log level any session asked for.
    Level {
        done: oneshot::Sender<Option<usize>>,
    },
    /// The retry of a parked 2026-07-28 call.
    Resume {
        port: Arc<Port>,
        frame: Box<Frame>,
        client_id: Box<[u8]>,
        reply: Reply,
    },
    /// The proxy asks a client something for a 2026-07-28 child.
    Ask {
        id: Box<[u8]>,
        request: ServerRequest,
        /// Whether it was recorded, or which bound it passed.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Those questions are no longer waited for.
    Unask(Vec<Box<[u8]>>),
    /// What a restarted child needs: the subscribed URIs and the log level.
    SessionsState {
        done: oneshot::Sender<(Vec<String>, Option<usize>)>,
    },
    /// A (re)started child: its pipes, and who to tell when its output ends.
    Child {
        io: Box<ChildIo>,
        ended: oneshot::Sender<&'static str>,
    },
    /// The child is gone: fail what is in flight, and (no restart) end
    /// the sessions' streams.
    ChildGone { why: String, close_sessions: bool },
    /// The shutdown's grace ran out: fail what is in flight with `why`,
    /// each caller getting its error on its stream or in its body; the
    /// child runs on until it is stopped, and its late answers are dropped.
    FailInFlight {
        why: String,
        done: oneshot::Sender<()>,
    },
}

impl Command {
    /// The command could not be queued: whoever waits hears of `e`.
    pub(super) fn refuse(self, e: &UpstreamError) {
        match self {
            Command::Send { pending, .. } => pending.fail(e),
            Command::Resume {
                client_id, reply, ..
            } => reply.fail(&client_id, e, true), // a retry: 2026-07-28
            // The other waiters see their answer channel close.
            _ => {}
        }
    }
}

/// Lines waiting for room in the child's stdin pipe, oldest first.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Queued>,
    bytes: usize,
    /// Set when a queued line's deadline passed (the child stopped
    /// reading): later writes then take room if there is some and
    /// otherwise fail at once; cleared when a line goes through.
    stalled: bool,
}

impl Outbox {
    /// Takes request `id`'s line out of the queue if none of it was
    /// written yet; whether it was.
    fn withdraw(&mut self, id: u64) -> bool {
        let Some(at) = self
            .queue
            .iter()
            .position(|q| q.id == Some(id) && !q.started)
        else {
            return false;
        };
        if let Some(q) = self.queue.remove(at) {
            self.bytes -= q.line.len();
        }
        true
    }

    /// Queues what is left of a line (`started`: part of it went already),
    /// failing it if it still waits after `wait`.
    fn push(&mut self, line: Bytes, id: Option<u64>, wait: Duration, started: bool) {
        self.bytes += line.len();
        self.queue.push_back(Queued {
            line,
            id,
            deadline: Instant::now() + wait,
            started,
        });
    }
}

struct Queued {
    /// What is left to write of the line.
    line: Bytes,
    /// The request it carries, failed if the line never goes.
    id: Option<u64>,
    deadline: Instant,
    /// Part of it went already: it must go whole (or the pipe close), as
    /// what follows would be read as its rest.
    started: bool,
}

/// What one turn of the loop got. Short-lived, on the stack: a command
/// moves through it unboxed.
#[allow(clippy::large_enum_variant)]
enum Step {
    Stop,
    Command(Command, bool),
    Line(Result<Option<Piece>, LineError>),
    Wrote(std::io::Result<usize>),
    CloseStdin,
    Due,
}

/// The worker's state; see the module documentation.
pub(super) struct Worker {
    up: Weak<Upstream>,
    pub(super) opts: UpstreamOptions,
    pub(super) routes: Routes,
    outbox: Outbox,
    /// The child's stdin, while it is open.
    stdin: Option<ChildStdin>,
    /// Ready when the child's stop begins: `stdin` is then dropped. Made
    /// once per child, not once per turn of the loop: a new wait on a
    /// token costs a registration and its removal under the token's lock.
    close_stdin: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: Option<oneshot::Sender<&'static str>>,
    pub(super) tasks: TaskTracker,
    cancel: CancellationToken,
    /// Ports attached plus requests in flight, for [`Upstream::is_idle`].
    busy: Arc<AtomicUsize>,
    /// Non-JSON lines skipped so far, and their log's rate limit.
    skipped: u64,
    noise: RateLimit,
    /// Set when the oversized line being skipped was already reported
    /// (and its request failed) as it passed the cap.
    reported_early: bool,
    /// The long answer being passed on as it arrives (`crate::tail`).
    cut: Option<Cut>,
    /// Counts the child's requests to clients that the proxy refused.
    metrics: ChildMetrics,
    /// The rate limit of the warning that a bound of those bit (a child
    /// may send a burst of thousands).
    refusals: RateLimit,
    /// Set once the child's first request with an unusable id was logged:
    /// the later ones are only counted.
    logged_unusable_id: bool,
}

impl Worker {
    pub(super) fn new(
        up: Weak<Upstream>,
        opts: UpstreamOptions,
        tasks: TaskTracker,
        cancel: CancellationToken,
        busy: Arc<AtomicUsize>,
        noise_per_second: u32,
        metrics: ChildMetrics,
    ) -> Worker {
        let routes = Routes::new(opts.max_tasks);
        Worker {
            up,
            opts,
            routes,
            outbox: Outbox::default(),
            stdin: None,
            close_stdin: Box::pin(CancellationToken::new().cancelled_owned()),
            ended: None,
            tasks,
            cancel,
            busy,
            skipped: 0,
            noise: RateLimit::new(noise_per_second.saturating_mul(4), noise_per_second),
            reported_early: false,
            cut: None,
            metrics,
            refusals: RateLimit::new(4, 1),
            logged_unusable_id: false,
        }
    }

    /// Runs until the upstream is stopped or dropped.
    pub(super) async fn run(
        mut self,
        io: ChildIo,
        ended: oneshot::Sender<&'static str>,
        mut commands: mpsc::Receiver<Command>,
        mut tidy: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut reader = None;
        self.take_child(io, ended, &mut reader);
        // One timer for every deadline. It need only fire no later than the
        // soonest one: firing early finds nothing due and costs a turn, so
        // it is moved only to an earlier instant (not once per request and
        // answer, which would register a timer twice per call).
        let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        let mut armed: Option<Instant> = None;
        // One wait for the whole run (see `close_stdin`).
        let mut stopped = std::pin::pin!(self.cancel.clone().cancelled_owned());
        loop {
            if let Some(at) = self.next_deadline()
                && armed.is_none_or(|a| a > at)
            {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
            let step = tokio::select! {
                _ = stopped.as_mut() => Step::Stop,
                c = tidy.recv() => c.map_or(Step::Stop, |c| Step::Command(c, false)),
                c = commands.recv() => c.map_or(Step::Stop, |c| Step::Command(c, true)),
                line = next_line(&mut reader) => Step::Line(line),
                wrote = write_out(self.stdin.as_mut(), &self.outbox.queue), if !self.outbox.queue.is_empty() => Step::Wrote(wrote),
                // Polled again only for a new child: `drop_stdin` ends `stdin`.
                _ = self.close_stdin.as_mut(), if self.stdin.is_some() => Step::CloseStdin,
                _ = timer.as_mut(), if armed.is_some() => {
                    armed = None;
                    Step::Due
                }
            };
            match step {
                Step::Stop => break,
                Step::Command(c, queued) => {
                    if queued {
                        // Housekeeping sent before this command goes first
                        // (a port attached, then its first request).
                        while let Ok(t) = tidy.try_recv() {
                            self.command(t, &mut reader);
                        }
                    }
                    self.command(c, &mut reader);
                    // Commands that are already here go in the same turn,
                    // so their lines share one write to the child.
                    for _ in 1..COMMAND_BATCH {
                        let Ok(c) = commands.try_recv() else { break };
                        while let Ok(t) = tidy.try_recv() {
                            self.command(t, &mut reader);
                        }
                        self.command(c, &mut reader);
                    }
                }
                Step::Line(line) => self.line(line, &mut reader),
                Step::Wrote(wrote) => self.wrote(wrote),
                Step::CloseStdin => self.drop_stdin("stdin closed"),
                Step::Due => self.expire_due(Instant::now()),
            }
            // What this turn queued for the child goes now, in one write,
            // if the pipe has room; otherwise the select waits for room.
            if !self.outbox.queue.is_empty()
                && let Some(wrote) =
                    write_out(self.stdin.as_mut(), &self.outbox.queue).now_or_never()
            {
                self.wrote(wrote);
            }
            // A task's held requests, and a 2026-07-28 client's task within
            // its ttl, keep the child from counting as idle.
            let tasks = self.routes.task_inputs.len()
                + match self.routes.tasks.next_hold_end() {
                    Some(_) => self.routes.tasks.holding(Instant::now()),
                    None => 0,
                };
            self.busy.store(
                self.routes.ports.len() + self.routes.pending.len() + tasks,
                Ordering::Relaxed,
            );
        }
        // Stopping: everything in flight or still queued fails now.
        self.fail_all("the proxy is stopping", true);
        commands.close();
        tidy.close();
        let stopping = UpstreamError::ChildExited("the proxy is stopping".into());
        while let Ok(c) = commands.try_recv() {
            c.refuse(&stopping);
        }
        while let Ok(c) = tidy.try_recv() {
            c.refuse(&stopping);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.routes.timers.first().map(|(at, _)| *at),
            self.routes.parked_timers.first().map(|(at, _)| *at),
            self.routes.server_timers.first().map(|(at, _)| *at),
            self.routes.task_inputs.next_deadline(),
            self.routes.tasks.next_hold_end(),
            self.outbox
                .queue
                .iter()
                .find(|q| !q.started || q.id.is_some())
                .map(|q| q.deadline),
            self.cut.as_ref().and_then(|c| c.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn write_timeout(&self) -> Duration {
        self.opts.request_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

    /// Runs one command; a panic in it is caught and treated like a panic
    /// while routing.
    fn command(&mut self, c: Command, reader: &mut Option<Reader>) {
        match c {
            Command::Child { io, ended } => self.take_child(*io, ended, reader),
            Command::ChildGone {
                why,
                close_sessions,
            } => {
                *reader = None;
                self.stdin = None;
                self.fail_all(&why, close_sessions);
            }
            c => {
                if catch_unwind(AssertUnwindSafe(|| self.run_command(c))).is_err() {
                    warn!("a command of the multiplexer failed unexpectedly; replacing the child");
                    self.end_output(reader, "the proxy could not route the MCP server's output");
                }
            }
        }
    }

    fn run_command(&mut self, c: Command) {
        match c {
            Command::Attach(port) => {
                self.routes.ports.insert(port.key, port);
            }
            Command::Detach { port, cancel, done } => {
                if let Some(reason) = cancel {
                    self.cancel_port(port, reason);
                }
                for request in self.routes.take_server_requests_of(port) {
                    self.refuse_waiting(
                        request,
                        Refusal::SessionEnded,
                        "the client's session ended before it answered",
                    );
                }
                let unsubscribe = self.routes.forget_port(port);
                let level = recompute_level(&mut self.routes);
                let _ = done.send((unsubscribe, level));
            }
            Command::Send {
                id,
                pending,
                line,
                deadline,
            } => match self.routes.admit(id, *pending, deadline) {
                Ok(_) => self.write(line, Some(id)),
                Err(refused) => {
                    let (e, pending) = *refused;
                    pending.fail(&e);
                }
            },
            Command::Write(line) => self.write(line, None),
            Command::RootsChanged { port, line } => {
                self.routes.roots_changed = Some(port);
                self.write(line, None);
            }
            Command::Cancel { port, frame, at } => self.cancel_from_client(port, *frame, at),
            Command::CancelRequest {
                port,
                client_id,
                reason,
            } => {
                if let Some(id) = self.routes.proxy_id(port, &client_id) {
                    self.cancel_for_client(id, &reason);
                }
            }
            Command::Answer { port, frame } => self.client_answer(port, *frame),
            Command::Forget(id) => {
                self.routes.abandon(id);
            }
            Command::MaySee {
                task,
                port,
                session,
                principal,
                done,
            } => {
                let caller = tasks::Caller {
                    port,
                    session,
                    principal: principal.as_deref(),
                };
                let _ = done.send(self.routes.tasks.may_see(&task, caller));
            }
            Command::TaskInput {
                task,
                port,
                session,
                principal,
                op,
                done,
            } => {
                let caller = tasks::Caller {
                    port,
                    session,
                    principal: principal.as_deref(),
                };
                let visible = self.routes.tasks.may_see(&task, caller);
                let out = self.task_input(&task, port, visible, op);
                if let Some(done) = done {
                    let _ = done.send(out);
                }
            }
            Command::Subscription {
                uri,
                port,
                subscribe,
                done,
            } => {
                let forward = self.routes.count_subscription(&uri, port, subscribe);
                let _ = done.send(forward);
            }
            Command::Level { done } => {
                recompute_level(&mut self.routes);
                let _ = done.send(self.routes.child_log_level);
            }
            Command::Resume {
                port,
                frame,
                client_id,
                reply,
            } => self.resume(&port, &frame, client_id, reply),
            Command::Ask { id, request, done } => {
                let (per_session, per_child) = (
                    self.opts.max_server_requests_per_session,
                    self.opts.max_server_requests,
                );
                let port = request.port;
                let admitted = self
                    .routes
                    .admit_question(id, request, per_session, per_child)
                    .map_err(|unasked| {
                        let port = self.routes.ports.get(&port).cloned();
                        match (unasked, port) {
                            (_, None) => "the session ended".to_string(),
                            (Unasked::Crowded(crowded), Some(port)) => {
                                self.crowded(crowded, &port).1
                            }
                            (Unasked::IdInUse, Some(port)) => {
                                warn!(
                                    session = %port.label,
                                    "a request of the MCP server waiting for the client has the id of the proxy's own question; refusing the question"
                                );
                                "the id of the proxy's question to the client is taken by a request of the MCP server".to_string()
                            }
                        }
                    });
                let _ = done.send(admitted);
            }
            Command::Unask(ids) => {
                for id in ids {
                    self.routes.take_server_request(&id);
                }
            }
            Command::SessionsState { done } => {
                let uris = self.routes.subscriptions.keys().cloned().collect();
                let _ = done.send((uris, self.routes.child_log_level));
            }
            Command::FailInFlight { why, done } => {
                self.fail_all(&why, false);
                let _ = done.send(());
            }
            Command::Child { .. } | Command::ChildGone { .. } => {
                unreachable!("handled by Worker::command")
            }
        }
    }

    /// The proxy cancels request `id` for its client, who went away: one
    /// still waiting to be written is withdrawn (the child never sees it),
    /// one the child has is forgotten and cancelled there (its late answer
    /// is then dropped like any unknown one).
    fn cancel_for_client(&mut self, id: u64, reason: &str) {
        if self.outbox.withdraw(id) {
            self.routes.take(id);
            debug!(
                request = id,
                "client went away before its request reached the child; withdrawn"
            );
        } else if self.routes.abandon(id).is_some() {
            debug!(
                request = id,
                "client went away; cancelling its request at the child"
            );
            self.write_control(&cancelled_notification(id, reason));
        }
    }

    /// [`Worker::cancel_for_client`] for every request of `port` in flight.
    fn cancel_port(&mut self, port: u64, reason: &str) {
        if self
            .routes
            .ports
            .get(&port)
            .is_none_or(|p| p.in_flight() == 0)
        {
            return;
        }
        let mine: Vec<u64> = (self.routes.pending.iter())
            .filter(|(_, p)| p.port == port)
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            self.cancel_for_client(id, reason);
        }
    }

    /// A (re)started child's pipes replace the last one's.
    fn take_child(
        &mut self,
        io: ChildIo,
        ended: oneshot::Sender<&'static str>,
        reader: &mut Option<Reader>,
    ) {
        *reader = Some(
            io.stdout
                .reporting_over_cap()
                .offering_long_lines_at(tail::CUT_THROUGH_BYTES),
        );
        self.cut = None;
        self.stdin = Some(io.stdin);
        self.close_stdin = Box::pin(io.close_stdin.cancelled_owned());
        self.ended = Some(ended);
        self.outbox = Outbox::default();
    }

    /// Stops reading the current child and tells the supervisor why.
    fn end_output(&mut self, reader: &mut Option<Reader>, why: &'static str) {
        *reader = None;
        // An answer being passed on is cut off: its client sees it fail.
        if let Some(cut) = self.cut.take() {
            cut.fail(TailError::Cut);
        }
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(why);
        }
    }

    fn line(&mut self, read: Result<Option<Piece>, LineError>, reader: &mut Option<Reader>) {
        let line = match read {
            Ok(Some(Piece::Line(line))) => line,
            Ok(Some(Piece::Long)) => {
                if let Some(r) = reader.as_mut() {
                    self.offer(r);
                }
                return;
            }
            Ok(Some(Piece::Chunk(chunk))) => {
                // Kept to the line's end even if its client is gone (the
                // rest then goes nowhere): the line is this request's, and
                // no other in flight may be taken for it if it passes the cap.
                if let Some(cut) = &mut self.cut {
                    cut.piece(chunk);
                }
                return;
            }
            Ok(Some(Piece::LineEnd(last))) => {
                if let Some(cut) = self.cut.take() {
                    cut.finish(last);
                }
                return;
            }
            Ok(None) => return self.end_output(reader, "the MCP server closed its output"),
            Err(e @ (LineError::OverCap { limit, .. } | LineError::LineTooLong { limit, .. }))
                if self.cut.is_some() =>
            {
                // The answer being passed on fails as its client reads on.
                // The line was its request's, so no other is guessed at,
                // now (it may end within this read) or when it ends.
                if let Some(cut) = self.cut.take() {
                    cut.fail(TailError::Cut);
                }
                warn!(
                    limit,
                    "child wrote an answer over --max-line-bytes; cutting it off and skipping the line"
                );
                self.reported_early = matches!(e, LineError::OverCap { .. });
                return;
            }
            Err(LineError::OverCap { limit, id }) => {
                warn!(
                    limit,
                    "child is writing a line over --max-line-bytes; failing its request now and skipping the line"
                );
                self.fail_oversized(None, limit, id, true);
                self.reported_early = true;
                return;
            }
            Err(LineError::LineTooLong { len, limit, id }) => {
                // The rest of the stream is fine; the request it answered fails.
                warn!(
                    len,
                    limit, "child wrote a line over --max-line-bytes; skipped it"
                );
                self.fail_oversized(Some(len), limit, id, !self.reported_early);
                self.reported_early = false;
                return;
            }
            Err(LineError::Io(e)) => {
                warn!(error = %e, "reading the child's stdout failed");
                return self.end_output(reader, "the MCP server's output reader stopped");
            }
        };
        let parsed = Frame::parse(line.clone(), false).or_else(|e| -> Result<Frame, jsonrpc::FrameError> {
            // A line that is JSON once a byte-order mark is dropped and
            // bytes that are not UTF-8 become U+FFFD: the answer it
            // carries reaches its client instead of being lost.
            let fixed = repaired(&line).ok_or(e)?;
            let frame = Frame::parse(fixed, false)?;
            if let Some(not_logged) = self.noise.admit() {
                warn!(
                    not_logged,
                    "child wrote a line with a byte-order mark or bytes that are not UTF-8; repaired it"
                );
            }
            Ok(frame)
        });
        match parsed {
            Ok(frame) => {
                if catch_unwind(AssertUnwindSafe(|| self.route(frame))).is_err() {
                    warn!("routing the child's output failed unexpectedly; replacing the child");
                    self.end_output(reader, "the proxy could not route the MCP server's output");
                }
            }
            Err(jsonrpc::FrameError::RequestIdUnusable) => self.refuse_unusable_id(),
            Err(e) => {
                self.skipped += 1;
                // Rate-limited like stderr (`--child-log-rate`): a child
                // printing banners in a loop must not flood the log.
                if let Some(not_logged) = self.noise.admit() {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                    warn!(skipped = self.skipped, not_logged, error = %e, line = %shown, "child wrote a non-JSON-RPC line on stdout; skipped it");
                }
                // A line whose edges show the id of a request in flight
                // was that request's answer, broken (a byte JSON cannot
                // have, a cut): the child will not answer it again, so it
                // fails now rather than wait for --request-timeout, or
                // for ever without one.
                let edge = line.len().min(GARBLED_EDGE);
                if let Some(id) = jsonrpc::edge_id(&line[..edge], &line[line.len() - edge..])
                    && self.routes.pending.contains_key(&id)
                {
                    self.fail_pending(id, &UpstreamError::Garbled(e.to_string()));
                }
            }
        }
    }

    /// A long line without its end yet: when its head shows the result of
    /// a request whose client takes a body of unknown length, the head goes
    /// now and the rest as it arrives (`crate::tail`); else it is read whole.
    ///
    /// A head with no id (the TypeScript SDK writes it after the result)
    /// can only be the answer of the one request in flight, if there is
    /// exactly one and none was abandoned lately
    /// ([`Routes::sole_request`]); the id at its end is checked before the
    /// answer ends (see `cut`). Otherwise it is read whole.
    fn offer(&mut self, reader: &mut Reader) {
        let Some(at) = jsonrpc::result_head(reader.partial()) else {
            return;
        };
        let id = match &at.id {
            Some(range) => parse_proxy_id(&reader.partial()[range.clone()]),
            None => self.routes.sole_request(),
        };
        let Some(id) = id else {
            return;
        };
        let partial = reader.partial();
        let takes = self.routes.pending.get(&id).is_some_and(|p| {
            matches!(p.tasks, TaskAnswer::None)
                && p.retry.is_none()
                && p.reply.takes_pieces()
                && (p.fill.fields().is_none() || at.has_object_result(partial))
        });
        if !takes {
            return;
        }
        let (stamping, fill_keys) = self
            .routes
            .pending
            .get(&id)
            .map_or((false, &[][..]), |p| (p.stamp.is_some(), p.fill.keys()));
        // The head goes only if it is valid so far (else the line is read
        // whole, and repaired or rebuilt like any short one); the rest is
        // checked as it passes (`cut`), the server's identity goes into
        // its result where the check finds the place (`stamp`), and a
        // result with a member the fill adds fails (`Broken::RepeatedFill`).
        let mut check = if stamping || !fill_keys.is_empty() {
            Check::for_result(stamping, fill_keys)
        } else {
            Check::new()
        };
        let Some(now) = check.head(reader.partial()) else {
            return;
        };
        let Some(p) = self.routes.take(id) else {
            return;
        };
        let insert = check
            .take_splice()
            .zip(p.stamp.as_deref())
            .map(|(splice, stamp)| stamp.insertion(splice));
        let head = reader.stream_line().slice(..now);
        let head = jsonrpc::Message::answer_head(&head, &at, &p.client_id, p.fill.fields(), insert);
        debug!(id, "passing a long answer on as it arrives");
        let id_at_end = at.id.is_none();
        let stamp = p.stamp.clone();
        let to = p.reply.respond_in_pieces(head, &p.client_id, p.modern);
        self.cut = to.map(|to| {
            let cut = Cut::new(to, p.deadline, check, stamp);
            if id_at_end {
                cut.with_id_at_end(id, &p.client_id)
            } else {
                cut
            }
        });
    }

    // ---- writes to the child ----

    /// Hands `line` to the child's stdin queue, or keeps it in order until
    /// there is room; the request `id` it carries fails if it cannot go.
    pub(super) fn write(&mut self, line: Bytes, id: Option<u64>) {
        trace!(message = %String::from_utf8_lossy(&line), "to child");
        let wait = self.write_timeout();
        if let Err(e) = self.queue_line(line, id, wait) {
            match id {
                Some(id) => self.fail_unsent(id, &e),
                None => debug!(error = %e, "a message for the child was dropped"),
            }
        }
    }

    /// A request of the child's whose id is null, an object, an array or
    /// a boolean: no answer could be routed back under it, but the child
    /// waits for one. It gets what JSON-RPC 2.0 gives an invalid request,
    /// an error with a null id; logged the first time, counted every time.
    fn refuse_unusable_id(&mut self) {
        self.metrics.server_request_refused(Refusal::InvalidId);
        if !self.logged_unusable_id {
            self.logged_unusable_id = true;
            warn!(
                "child sent a request whose id is not a string or a number; answered it with an invalid-request error (id null), as every later one (counted, not logged)"
            );
        }
        self.write_control(&jsonrpc::error_response(
            Some(b"null"),
            code::INVALID_REQUEST,
            "invalid request: \"id\" must be a string or a number",
            None,
        ));
    }

    /// A message of the proxy's own (answers to the child's `ping`,
    /// refusals of its requests, cancellations).
    pub(super) fn write_control(&mut self, message: &[u8]) {
        self.write(jsonrpc::as_line(message), None);
    }

    fn queue_line(
        &mut self,
        line: Bytes,
        id: Option<u64>,
        wait: Duration,
    ) -> Result<(), UpstreamError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(UpstreamError::ChildExited("stdin closed".into()));
        };
        let mut line = line;
        if self.outbox.queue.is_empty() && self.outbox.stalled {
            // The child stopped reading a while ago: the line goes now if
            // the pipe has room (one poll, no wait), or fails at once.
            match stdin.write(&line).now_or_never() {
                Some(Ok(n)) if n == line.len() => {
                    self.outbox.stalled = false;
                    return Ok(());
                }
                Some(Ok(n)) if n > 0 => {
                    self.outbox.stalled = false;
                    line.advance(n);
                    self.outbox.push(line, id, wait, true);
                    return Ok(());
                }
                Some(_) => {
                    self.drop_stdin("stdin closed");
                    return Err(UpstreamError::ChildExited("stdin closed".into()));
                }
                None => {}
            }
        }
        if self.outbox.stalled {
            return Err(UpstreamError::NotReading(wait));
        }
        // An empty queue takes any one line (a line is capped by the body limit).
        let over_bytes = !self.outbox.queue.is_empty()
            && self.outbox.bytes + line.len() > self.opts.max_child_queue_bytes;
        if self.outbox.queue.len() >= OUTBOX_LINES || over_bytes {
            // Full: like a passed deadline, writes fail at once until a
            // line goes through.
            warn!(
                lines = self.outbox.queue.len(),
                bytes = self.outbox.bytes,
                limit = self.opts.max_child_queue_bytes,
                "the MCP server is not keeping up with its input (--max-child-queue-bytes); messages to it fail until it does"
            );
            self.outbox.stalled = true;
            return Err(UpstreamError::NotReading(wait));
        }
        self.outbox.push(line, id, wait, false);
        Ok(())
    }

    /// The pipe took `n` bytes of the queue (or failed).
    fn wrote(&mut self, wrote: std::io::Result<usize>) {
        let mut n = match wrote {
            Ok(0) | Err(_) => return self.drop_stdin("stdin closed"),
            Ok(n) => n,
        };
        self.outbox.stalled = false;
        while n > 0 {
            let Some(front) = self.outbox.queue.front_mut() else {
                break;
            };
            let take = n.min(front.line.len());
            front.line.advance(take);
            front.started = true;
            self.outbox.bytes -= take;
            n -= take;
            if front.line.is_empty() {
                self.outbox.queue.pop_front();
            }
        }
    }

    /// The child's stdin is closed (its stop began, or it closed the
    /// pipe): what waits for it fails.
    fn drop_stdin(&mut self, why: &str) {
        self.stdin = None;
        let queued = std::mem::take(&mut self.outbox);
        let e = UpstreamError::ChildExited(why.to_string());
        for q in queued.queue {
            match q.id {
                Some(id) if q.started => self.fail_pending(id, &e),
                Some(id) => self.fail_unsent(id, &e),
                None => {}
            }
        }
    }

    // ---- deadlines ----

    fn expire_due(&mut self, now: Instant) {
        if self
            .cut
            .as_ref()
            .and_then(|c| c.deadline)
            .is_some_and(|at| at <= now)
        {
            warn!("a long answer being passed on did not end before --request-timeout; failing it");
            if let Some(cut) = self.cut.take() {
                cut.fail(TailError::TimedOut);
            }
        }
        let (due, _) = self.routes.due(now);
        for id in due {
            self.expire(id);
        }
        let wait = self.server_request_wait();
        for request in self.routes.due_server_requests(now) {
            let why = format!("the client did not answer within {} ms", wait.as_millis());
            self.refuse_waiting(request, Refusal::Expired, &why);
        }
        for token in self.routes.due_parked(now) {
            self.expire_parked(&token);
        }
        for held in self.routes.task_inputs.due(now) {
            let why = format!(
                "the client did not answer this request of task {} within {} ms",
                held.task,
                wait.as_millis()
            );
            self.refuse_held(held, Refusal::Expired, &why);
        }
        let wait = self.write_timeout();
        // (request, whether the child has any of its line)
        let mut failed = Vec::new();
        // A line partly written stays (the pipe must get it whole); its
        // request fails all the same.
        let mut at = 0;
        while let Some(q) = self.outbox.queue.get_mut(at) {
            if q.deadline > now {
                break;
            }
            if q.started {
                failed.extend(q.id.take().map(|id| (id, true)));
                at += 1;
                continue;
            }
            if let Some(q) = self.outbox.queue.remove(at) {
                self.outbox.bytes -= q.line.len();
                failed.extend(q.id.map(|id| (id, false)));
            }
        }
        if !failed.is_empty() && !self.outbox.stalled {
            warn!(
                wait_ms = wait.as_millis() as u64,
                "the MCP server is not reading its input; messages to it fail until it does"
            );
            self.outbox.stalled = true;
        }
        let e = UpstreamError::NotReading(wait);
        for (id, reached) in failed {
            if reached {
                self.fail_pending(id, &e);
            } else {
                self.fail_unsent(id, &e);
            }
        }
    }

    fn expire(&mut self, id: u64) {
        let Some(p) = self.routes.abandon(id) else {
            return;
        };
        let timeout = self.opts.request_timeout.unwrap_or_default();
        warn!(
            request = id,
            timeout_ms = timeout.as_millis() as u64,
            "request timed out; cancelling it at the child"
        );
        let e = UpstreamError::TimedOut(timeout);
        let reason = e.to_string();
        p.fail(&e);
        self.write_control(&cancelled_notification(id, &reason));
    }

    /// Fails a request the child has (all or part of): its answer may
    /// still come, late (see `Routes::abandon`).
    pub(super) fn fail_pending(&mut self, id: u64, e: &UpstreamError) {
        if let Some(p) = self.routes.abandon(id) {
            p.fail(e);
        }
    }

    /// Fails a request none of whose line reached the child: no answer to
    /// it can come, so it does not count as abandoned.
    fn fail_unsent(&mut self, id: u64, e: &UpstreamError) {
        if let Some(p) = self.routes.take(id) {
            p.fail(e);
        }
    }

    /// The child is gone: fail what is in flight and what waits to be
    /// written; with `close_sessions`, end the sessions' streams too.
    fn fail_all(&mut self, why: &str, close_sessions: bool) {
        let pending = self.routes.drain();
        self.outbox = Outbox::default();
        if !pending.is_empty() {
            info!(
                requests = pending.len(),
                "failing requests in flight: {why}"
            );
        }
        let e = UpstreamError::Gone(why.to_string());
        for p in pending {
            p.fail(&e);
        }
        if close_sessions {
            for port in self.routes.ports.values() {
                if let Some(o) = port.notify_stream() {
                    o.finish();
                }
            }
        }
    }

    /// An oversized line was (or is being) dropped: fail the request it
    /// answered rather than let it hang. Which one that was shows at the
    /// line's edges (`jsonrpc::edge_id`), or else it was the only request
    /// in flight (`guess`: not once the line was already reported).
    fn fail_oversized(&mut self, len: Option<usize>, limit: usize, id: Option<u64>, guess: bool) {
        let only = id
            .filter(|id| self.routes.pending.contains_key(id))
            .or_else(|| {
                if guess {
                    related_call(&self.routes)
                } else {
                    None
                }
            });
        if let Some(id) = only {
            let size = len.map_or_else(|| "more than that".to_string(), |l| format!("{l} bytes"));
            self.fail_pending(id, &UpstreamError::Oversized { size, limit });
        }
    }

    // ---- what clients send that needs the tables ----

    fn cancel_from_client(&mut self, port: u64, frame: Frame, at: Range<usize>) {
        let client_id = &frame.bytes()[at.clone()];
        // A `--stateless` POST names a request of an earlier POST of its principal.
        let id = (self.routes.proxy_id(port, client_id))
            .or_else(|| self.routes.stateless_request(port, client_id));
        let Some(id) = id else {
            debug!("cancellation of an unknown or finished request ignored");
            return;
        };
        // A request still waiting for the child is withdrawn, and neither
        // it nor the cancellation goes.
        let withdrawn = self.outbox.withdraw(id);
        let taken = if withdrawn {
            self.routes.take(id)
        } else {
            self.routes.abandon(id)
        };
        if let Some(p) = taken {
            match p.reply.unwatched() {
                // No answer will come: a stream of its own closes, a stream
                // shared with other requests (legacy, batch) carries on.
                Reply::Stream(o) => o.forgo(),
                reply @ (Reply::Once(_) | Reply::Json(_)) => reply.respond(
                    &jsonrpc::error_response(Some(&p.client_id), -32800, "request cancelled", None),
                ),
                Reply::Call(tx) => {
                    let _ = tx.send(Err(UpstreamError::SessionEnded));
                }
                Reply::Detached | Reply::Watched(..) => {}
            }
        }
        if withdrawn {
            debug!(
                request = id,
                "request cancelled before it reached the child; withdrawn"
            );
            return;
        }
        // The client's message with only the id changed: whatever else it
        // carries (`reason`, even a number no parser could hold) passes as is.
        let frame = frame.with_replaced(at, id.to_string().as_bytes());
        self.write(frame.to_line(), None);
    }

    /// A client's response to a server-to-client request. Answers to
    /// requests this session was never sent are dropped.
    fn client_answer(&mut self, port: u64, frame: Frame) {
        let raw = frame.id().unwrap_or_default();
        let key = jsonrpc::id_key(raw).unwrap_or_else(|| raw.into());
        let request = match self.routes.server_requests.get(&key) {
            Some(s) if s.port == port => self.routes.take_server_request(&key),
            _ => None,
        };
        match request {
            Some(ServerRequest {
                answer: Some(waiter),
                ..
            }) => {
                let _ = waiter.send(frame);
            }
            // Back to the child with its id as it wrote it (`1.0` from a
            // client is the child's `1`).
            Some(ServerRequest { raw_id, .. }) => {
                self.write(frame.with_id(&raw_id).to_line(), None)
            }
            None => {
                debug!(id = %String::from_utf8_lossy(raw), "response to an unknown server request dropped");
            }
        }
    }

    // ---- what the child writes ----

    fn route(&mut self, frame: Frame) {
        trace!(message = %String::from_utf8_lossy(frame.bytes()), "from child");
        match frame.kind() {
            Kind::Response => self.route_response(frame),
            Kind::Notification => route_notification(
                &mut self.routes,
                self.opts.shared,
                self.opts.max_broadcast_bytes,
                frame,
            ),
            Kind::Request => self.route_request(frame),
        }
    }

    fn route_response(&mut self, frame: Frame) {
        let id = frame.id().and_then(parse_proxy_id);
        let Some(p) = id.and_then(|id| self.routes.take(id)) else {
            debug!(id = %String::from_utf8_lossy(frame.id().unwrap_or_default()), "response for an unknown or finished request dropped");
            return;
        };
        if p.retry.is_some()
            && let Some(asked) = mrtr::input_required(frame.bytes())
        {
            let port = self.routes.ports.get(&p.port).cloned();
            if let (Some(up), Some(port)) = (self.up.upgrade(), port) {
                self.tasks.spawn(up.gather_input(p, port, asked));
            }
            return;
        }
        if matches!(p.reply, Reply::Detached) {
            // A parked call finished before the client retried: keep the
            // answer for the retry.
            let call = id.unwrap_or_default();
            if let Some(parked) = self.routes.parked.values_mut().find(|k| k.call == call) {
                parked.early = Some((p, frame));
            }
            return;
        }
        self.deliver(p, frame);
    }

    /// Sends the child's answer to the client that asked.
    pub(super) fn deliver(&mut self, p: Pending, frame: Frame) {
        if p.parkable
            && frame.is_error()
            && let Some(port) = self.routes.ports.get(&p.port)
            && let Some(answer) = mrtr::url_elicitation(&frame, port)
        {
            let value = match (&p.stamp, answer.0) {
                (Some(stamp), "result") => stamp.into_result(&answer.1),
                _ => answer.1,
            };
            p.reply
                .respond(&jsonrpc::envelope(&p.client_id, answer.0, &value));
            return;
        }
        let frame = p.fill.error(frame);
        let answer = match stamp::answer(&frame, &p.client_id, p.fill, p.stamp.as_deref()) {
            Ok(answer) => answer,
            Err(e) => {
                warn!(error = %e, "refusing the MCP server's answer to a 2026-07-28 client");
                p.fail(&e);
                return;
            }
        };
        match p.tasks {
            TaskAnswer::None => p.reply.respond_answer(answer, &p.client_id),
            TaskAnswer::Create => {
                if let Some(task) = tasks::created_task(frame.bytes()) {
                    let (session, principal) = self.caller_of(p.port);
                    let caller = tasks::Caller {
                        port: p.port,
                        session,
                        principal: principal.as_deref(),
                    };
                    self.routes.tasks.record(&task, caller);
                    if self.routes.ports.get(&p.port).map(|port| port.kind)
                        == Some(PortKind::Modern)
                    {
                        self.routes.tasks.mark_modern(&task);
                        // Its client has no session to keep the child
                        // alive: the task does, for its ttl.
                        // (At most a day: `tasks::MAX_TASK_HOLD`.)
                        if let Some(until) = tasks::created_ttl(frame.bytes())
                            .and_then(|ttl| Instant::now().checked_add(tasks::hold_for(ttl)))
                        {
                            self.routes.tasks.hold(&task, until);
                        }
                    }
                }
                p.reply.respond_answer(answer, &p.client_id);
            }
            TaskAnswer::List => {
                let bytes = answer.into_bytes();
                let (session, principal) = self.caller_of(p.port);
                let caller = tasks::Caller {
                    port: p.port,
                    session,
                    principal: principal.as_deref(),
                };
                match tasks::filter_list(&bytes, |t| self.routes.tasks.may_see(t, caller)) {
                    Some(filtered) => p.reply.respond(&filtered),
                    // Unfiltered it could show other sessions' tasks.
                    None => p.fail(&UpstreamError::Garbled(
                        "its tasks/list answer could not be read as a list, so it could not be filtered".into(),
                    )),
                }
            }
        }
    }

    fn caller_of(&self, port: u64) -> (bool, Option<Arc<str>>) {
        self.routes
            .ports
            .get(&port)
            .map(|port| (port.has_identity(), port.principal()))
            .unwrap_or((false, None))
    }

    fn route_request(&mut self, frame: Frame) {
        let method = frame.method().unwrap_or_default().to_string();
        // Invariant: requests have ids.
        let id: Box<[u8]> = frame.id().expect("request has an id").into();
        if method == "ping" {
            // Answered at once, like every write: the worker never waits on stdin.
            self.write_control(&jsonrpc::result_response(&id, &serde_json::json!({})));
            return;
        }
        if id.len() > MAX_CHILD_ID_BYTES {
            // Before anything is kept of it: the table would hold the id
            // twice for as long as the request waits.
            self.metrics.server_request_refused(Refusal::LongId);
            let why = format!(
                "a request id may be at most {MAX_CHILD_ID_BYTES} bytes; this one has {}",
                id.len()
            );
            debug!(method, "server-to-client request refused: {why}");
            let refusal = jsonrpc::error_response(Some(&id), code::INVALID_REQUEST, &why, None);
            self.write_control(&refusal);
            return;
        }
        let key = jsonrpc::id_key(&id).unwrap_or_else(|| id.clone());
        let refusal = if self.in_use(&key) {
            // Keeping the first entry: replacing it would send the first
            // request's answer where the second's goes (another session's,
            // in shared mode). The child gets this error and, later, the
            // first request's answer, both under the id it reused.
            Some((
                Refusal::DuplicateId,
                format!(
                    "request id {} is already in use by a request still waiting for its answer",
                    String::from_utf8_lossy(&id)
                ),
            ))
        } else {
            self.take_request(&frame, &method, &id, key)
        };
        if let Some((reason, why)) = refusal {
            debug!(method, "server-to-client request refused: {why}");
            self.metrics.server_request_refused(reason);
            let code = match reason {
                Refusal::DuplicateId | Refusal::LongId => code::INVALID_REQUEST,
                Refusal::NoCapability => code::METHOD_NOT_FOUND,
                _ => code::INTERNAL_ERROR,
            };
            self.write_control(&jsonrpc::error_response(Some(&id), code, &why, None));
        }
    }

    /// Whether a request of the child's (or a question of the proxy's)
    /// with the canonical id `key` still waits for a client's answer.
    fn in_use(&self, key: &[u8]) -> bool {
        let r = &self.routes;
        r.server_requests.contains_key(key)
            || r.task_inputs.contains(key)
            || r.parked.values().any(|p| {
                jsonrpc::id_key(&p.server_request)
                    .as_deref()
                    .unwrap_or(&p.server_request)
                    == key
            })
    }

    /// Passes the child's request to the client it concerns; returns why
    /// it cannot be, if so (the child is then answered with an error).
    fn take_request(
        &mut self,
        frame: &Frame,
        method: &str,
        id: &[u8],
        key: Box<[u8]>,
    ) -> Option<(Refusal, String)> {
        let r = &self.routes;
        let (port, outlet) = match self.task_owner(frame) {
            // Part of a task: its creator answers, on its GET stream.
            Some(port) => (Some(port.clone()), None),
            // Part of a task no live session created (a 2026-07-28 or
            // stateless client's, an ended session's, a forgotten one):
            // nobody can take it, and the call in flight is someone else's.
            None if self.opts.shared && tasks::related_task(frame).is_some() => {
                // A 2026-07-28 client's task: held for its `tasks/get` and
                // `tasks/update`.
                if let Some(task) = tasks::related_task(frame)
                    && self.routes.tasks.takes_input(&task)
                {
                    return self.hold_for_task(&task, frame, method, id, key);
                }
                return Some((
                    Refusal::NoClient,
                    "this request belongs to a task whose creator has no session to take it and is no client's without one".to_string(),
                ));
            }
            None => match related_target(r) {
                Target::Request(p) => (r.ports.get(&p.port).cloned(), p.reply.stream().cloned()),
                Target::Port(port) => (Some(port.clone()), None),
                // No call in flight, so this follows none: a child asks
                // for roots on its own when a session announced a change.
                // That session is asked, once per announcement. Not the
                // union of every session's roots: each is a boundary one
                // client drew, mixing them would let the child work in one
                // session's roots for another, and one slow session would
                // hold the answer of all. With calls in flight it may be
                // part of any of them: refused, as before.
                Target::None if method == "roots/list" && r.client_pending == 0 => {
                    let announced = self.routes.roots_changed.take();
                    (
                        announced.and_then(|key| self.routes.ports.get(&key).cloned()),
                        None,
                    )
                }
                Target::None => (None, None),
            },
        };
        let r = &self.routes;
        let Some(port) = port else {
            return Some((
                Refusal::NoClient,
                "no client session is unambiguously associated with this request".to_string(),
            ));
        };
        let (per_session, per_child) = (
            self.opts.max_server_requests_per_session,
            self.opts.max_server_requests,
        );
        if port.kind == PortKind::Modern {
            // Parked calls count like requests to sessions: a principal
            // (a 2026-07-28 client's only identity) holds the share of a
            // session.
            let owner = port.principal();
            let crowded = if r.parked.len() >= per_child {
                Some(Crowded::Child)
            } else if r.parked.values().filter(|k| k.owner == owner).count() >= per_session {
                Some(Crowded::Session)
            } else {
                None
            };
            if let Some(crowded) = crowded {
                return Some(self.crowded(crowded, &port));
            }
            let wait = self.opts.request_timeout.unwrap_or(self.opts.input_wait);
            let parked = self.park(&port, method, id, frame, wait);
            return parked.err().map(|why| {
                let reason = if why == no_capability(method) {
                    Refusal::NoCapability
                } else {
                    Refusal::NoClient
                };
                (reason, why)
            });
        }
        if &*port.label == STATELESS_LABEL {
            return Some((
                Refusal::NoClient,
                "no client session is tied to this request (stateless mode has no sessions), so nothing can answer it".to_string(),
            ));
        }
        if !port.supports(method, frame.params()) {
            return Some((Refusal::NoCapability, no_capability(method)));
        }
        let outlet = outlet
            .or_else(|| port.notify_stream())
            .filter(|o| !o.is_finished());
        let Some(o) = outlet else {
            return Some((
                Refusal::NoClient,
                "the client has no open stream to carry this request".to_string(),
            ));
        };
        let request = ServerRequest {
            raw_id: id.into(),
            port: port.key,
            outlet: Some(o.clone()),
            answer: None,
            deadline: Some(Instant::now() + self.server_request_wait()),
        };
        match self
            .routes
            .admit_server_request(key, request, per_session, per_child)
        {
            Ok(()) => {
                o.send(frame.bytes());
                None
            }
            Err(crowded) => Some(self.crowded(crowded, &port)),
        }
    }

    /// A bound of the child's requests waiting for clients bit: the
    /// refusal, logged (rate-limited).
    fn crowded(&self, crowded: Crowded, port: &Port) -> (Refusal, String) {
        let (flag, limit, reason) = match crowded {
            Crowded::Session => (
                "--max-server-requests-per-session",
                self.opts.max_server_requests_per_session,
                Refusal::SessionLimit,
            ),
            Crowded::Child => (
                "--max-server-requests",
                self.opts.max_server_requests,
                Refusal::ChildLimit,
            ),
        };
        if let Some(not_logged) = self.refusals.admit() {
            warn!(
                limit,
                not_logged,
                session = %port.label,
                "too many of the MCP server's requests wait for a client's answer ({flag}); refusing another"
            );
        }
        (
            reason,
            format!(
                "too many requests are waiting for the client's answer already ({flag} {limit})"
            ),
        )
    }

    /// How long the child's request waits for a client's answer:
    /// `--request-timeout`, else the session idle timeout (as a parked
    /// 2026-07-28 call waits for its retry).
    fn server_request_wait(&self) -> Duration {
        self.opts.request_timeout.unwrap_or(self.opts.input_wait)
    }

    /// The child's request waiting for a client is given up on (`why`):
    /// the child gets an error, and the client, if its stream is still
    /// open, a cancellation, so it stops asking its user. The proxy's own
    /// questions end with their waiter dropped.
    fn refuse_waiting(&mut self, request: ServerRequest, reason: Refusal, why: &str) {
        if request.answer.is_some() {
            return;
        }
        self.metrics.server_request_refused(reason);
        // Per request, so at debug only: a session that ends may leave
        // hundreds. The count is in the metric.
        debug!("a request of the MCP server to a client ended unanswered: {why}");
        self.write_control(&jsonrpc::error_response(
            Some(&request.raw_id),
            code::INTERNAL_ERROR,
            why,
            None,
        ));
        if let Some(o) = request.outlet.filter(|o| !o.is_finished()) {
            let id: Option<Box<serde_json::value::RawValue>> =
                serde_json::from_slice(&request.raw_id).ok();
            // Invariant: a Value of a raw id and a string serializes.
            let cancel = serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": { "requestId": id, "reason": why },
            }))
            .expect("Value serializes");
            o.send(&cancel);
        }
    }

    /// Holds the child's request `id` (canonical `key`) for `task`, a
    /// 2026-07-28 client's: it is shown in the task's `tasks/get` as an
    /// input request and answered by `tasks/update`, within the bounds of
    /// `--max-server-requests` (in all), `--max-server-requests-per-session`
    /// (per task) and `--max-task-input-bytes`, until
    /// [`Worker::server_request_wait`] passes.
    fn hold_for_task(
        &mut self,
        task: &str,
        frame: &Frame,
        method: &str,
        id: &[u8],
        key: Box<[u8]>,
    ) -> Option<(Refusal, String)> {
        let mut entry = br#"{"method":"#.to_vec();
        // Invariant: a str serializes.
        serde_json::to_writer(&mut entry, method).expect("a str serializes");
        if let Some(params) = frame.params() {
            entry.extend_from_slice(br#","params":"#);
            entry.extend_from_slice(params);
        }
        entry.push(b'}');
        let limits = tasks::InputLimits {
            count: self.opts.max_server_requests,
            per_task: self.opts.max_server_requests_per_session,
            bytes: self.opts.max_task_input_bytes,
        };
        let deadline = Instant::now() + self.server_request_wait();
        let held =
            self.routes
                .task_inputs
                .hold(task, key, id, method, entry.into(), deadline, limits);
        match held {
            Ok(_) => None,
            Err(refused) => {
                let (reason, bound) = match refused {
                    tasks::HoldRefused::Task => (
                        Refusal::SessionLimit,
                        "--max-server-requests-per-session per task, a quarter of --max-task-input-bytes",
                    ),
                    tasks::HoldRefused::Child => (
                        Refusal::ChildLimit,
                        "--max-server-requests, --max-task-input-bytes",
                    ),
                };
                if let Some(not_logged) = self.refusals.admit() {
                    warn!(
                        held = self.routes.task_inputs.len(),
                        not_logged,
                        "too many of the MCP server's task requests wait for their client ({bound}); refusing another"
                    );
                }
                Some((
                    reason,
                    format!(
                        "too many requests of tasks are waiting for their client already ({bound})"
                    ),
                ))
            }
        }
    }

    /// The child's held request is given up on: it gets an error.
    fn refuse_held(&mut self, held: tasks::HeldInput, reason: Refusal, why: &str) {
        self.metrics.server_request_refused(reason);
        self.write_control(&jsonrpc::error_response(
            Some(&held.raw_id),
            code::INTERNAL_ERROR,
            why,
            None,
        ));
    }

    /// Serves [`Command::TaskInput`]: `visible` says whether its caller
    /// may see `task` (an invisible task is as one without requests).
    fn task_input(
        &mut self,
        task: &str,
        port: u64,
        visible: bool,
        op: TaskInputOp,
    ) -> Option<Vec<u8>> {
        match op {
            TaskInputOp::List => {
                let mut out = Vec::new();
                let port = self.routes.ports.get(&port).cloned();
                if visible && let Some(port) = port {
                    // Asked only of a client that declared what they need
                    // (`basic/index`: each request's own capabilities).
                    let undeclared: Vec<Box<[u8]>> = self
                        .routes
                        .task_inputs
                        .of_task(task)
                        .filter(|h| !port.supports(&h.method, h.params()))
                        .map(|h| h.id.clone())
                        .collect();
                    for id in undeclared {
                        if let Some(held) = self.routes.task_inputs.take(&id) {
                            self.metrics.server_request_refused(Refusal::NoCapability);
                            self.write_control(&jsonrpc::error_response(
                                Some(&held.raw_id),
                                code::METHOD_NOT_FOUND,
                                &no_capability(&held.method),
                                None,
                            ));
                        }
                    }
                    for held in self.routes.task_inputs.of_task(task) {
                        out.push(if out.is_empty() { b'{' } else { b',' });
                        // Invariant: a String serializes.
                        serde_json::to_writer(&mut out, &held.key).expect("a str serializes");
                        out.push(b':');
                        out.extend_from_slice(&held.entry);
                    }
                }
                if out.is_empty() {
                    return None;
                }
                out.push(b'}');
                Some(out)
            }
            TaskInputOp::Answer(responses) => {
                if visible {
                    for (key, result) in responses {
                        // Keys not outstanding are ignored (the extension:
                        // never issued, answered already, or given up on).
                        if let Some(held) = self.routes.task_inputs.take_key(task, &key) {
                            let answer =
                                jsonrpc::envelope(&held.raw_id, "result", result.get().as_bytes());
                            self.write_control(&answer);
                        }
                    }
                }
                visible.then(Vec::new)
            }
            TaskInputOp::End(why) => {
                if visible {
                    self.routes.tasks.unhold(task);
                    for held in self.routes.task_inputs.take_task(task) {
                        self.refuse_held(held, Refusal::SessionEnded, &why);
                    }
                }
                None
            }
        }
    }

    /// In shared mode, the session that owns the task a message relates to
    /// (`_meta` related-task).
    pub(super) fn task_owner(&self, frame: &Frame) -> Option<&Arc<Port>> {
        task_owner(&self.routes, self.opts.shared, frame)
    }
}

// ---- multi round-trip requests: parked 2026-07-28 calls (see `mrtr`) ----

impl Worker {
    /// A 2025-era child asks a 2026-07-28 client something during its call:
    /// answer the call with `input_required` carrying the child's request,
    /// and keep the call (detached) until the client's retry brings the
    /// answer ([`Upstream::resume`]). Returns the `requestState` token.
    pub(super) fn park(
        &mut self,
        port: &Arc<Port>,
        method: &str,
        id: &[u8],
        frame: &Frame,
        wait: Duration,
    ) -> Result<String, String> {
        let r = &mut self.routes;
        let call = related_call(r)
            .ok_or("no client call is unambiguously associated with this request")?;
        let p = r.pending.get_mut(&call).ok_or("the call has ended")?;
        if !p.parkable {
            return Err(
                "the client speaks MCP 2026-07-28, which has no server-to-client requests, and this call cannot ask for input"
                    .to_string(),
            );
        }
        if !port.supports(method, frame.params()) {
            return Err(no_capability(method));
        }
        let token = new_request_state();
        let request = InputRequest {
            method: method.to_string(),
            params: frame
                .params()
                .and_then(|p| serde_json::from_slice::<Box<RawValue>>(p).ok()),
        };
        let asked = input_required_result(&request, &token);
        let asked = match &p.stamp {
            Some(stamp) => stamp.into_result(&asked),
            None => asked,
        };
        let reply = std::mem::replace(&mut p.reply, Reply::Detached);
        let client_id = p.client_id.clone();
        let owner = std::mem::replace(&mut p.port, 0);
        r.by_client.remove(&client_key(owner, &client_id));
        r.count_out(owner);
        r.park(
            token.clone(),
            Parked {
                server_request: id.into(),
                call,
                early: None,
                deadline: tokio::time::Instant::now() + wait,
                wait,
                owner: port.principal(),
                call_key: port.call(),
                asked: asked.clone(),
                method: method.into(),
                params: frame.params().map(Into::into),
            },
        );
        reply.respond(&jsonrpc::envelope(&client_id, "result", &asked));
        Ok(token)
    }

    /// The retry of a parked call: the client's answer goes to the child's
    /// request, and the call's answer, now or later, to this retry.
    pub(super) fn resume(
        &mut self,
        port: &Arc<Port>,
        frame: &Frame,
        client_id: Box<[u8]>,
        reply: Reply,
    ) {
        let (token, answer) = resumption(frame.params().unwrap_or_default());
        // Only its principal's retry of the same call resumes a parked
        // call (spec: `requestState` is attacker-controlled input). Any
        // other gets the answer an unknown state gets, and the state
        // stays good for the retry it was given for.
        let token = token.filter(|t| {
            self.routes.parked.get(t).is_some_and(|k| {
                let ours = k.owner == port.principal()
                    && k.call_key.as_ref() == Some(&CallKey::of(frame));
                if !ours {
                    warn!("a requestState was presented by another principal or on another call; refused");
                }
                ours
            })
        });
        let mut undeclared = None;
        if answer.is_none()
            && let Some(parked) = token.as_ref().and_then(|t| self.routes.parked.get(t))
            && parked.early.is_none()
        {
            // The state came back without the answer: the child still
            // needs it, so the client is asked again, under the same
            // state (spec `basic/patterns/mrtr`, "Error Handling": a new
            // input_required rather than an error), if this retry
            // declares what it needs (`basic/index`: each request's own
            // capabilities); else the child is refused, as it would
            // have been had the first request declared as little.
            if port.supports(&parked.method, parked.params.as_deref()) {
                reply.respond(&jsonrpc::envelope(&client_id, "result", &parked.asked));
                return;
            }
            undeclared = Some(no_capability(&parked.method));
        }
        let parked = token.and_then(|t| self.routes.unpark(&t));
        let Some(parked) = parked else {
            reply.respond(&jsonrpc::error_response(
                Some(&client_id),
                code::INVALID_PARAMS,
                "unknown or expired requestState: send the call again without it",
                None,
            ));
            return;
        };
        let to_child = match (&answer, undeclared) {
            (Some(result), _) => {
                jsonrpc::envelope(&parked.server_request, "result", result.get().as_bytes())
            }
            (None, Some(why)) => {
                self.metrics.server_request_refused(Refusal::NoCapability);
                jsonrpc::error_response(
                    Some(&parked.server_request),
                    code::METHOD_NOT_FOUND,
                    &why,
                    None,
                )
            }
            (None, None) => jsonrpc::error_response(
                Some(&parked.server_request),
                code::INTERNAL_ERROR,
                "the client retried without the requested input",
                None,
            ),
        };
        self.write_control(&to_child);
        if let Some((mut p, frame)) = parked.early {
            p.client_id = client_id;
            p.reply = reply;
            self.deliver(p, frame);
            return;
        }
        let r = &mut self.routes;
        match r.pending.get_mut(&parked.call) {
            Some(p) => {
                p.port = port.key;
                p.client_id = client_id.clone();
                p.reply = reply;
                r.by_client
                    .insert(client_key(port.key, &client_id), parked.call);
                r.count_in(port.key);
            }
            // A retry, so a 2026-07-28 client's: -32603 (`UpstreamError::code`).
            None => reply.respond(&jsonrpc::error_response(
                Some(&client_id),
                code::INTERNAL_ERROR,
                "the MCP server ended the call",
                None,
            )),
        }
    }

    /// A parked call whose client never retried: the child's request is
    /// refused and the call cancelled at the child.
    pub(super) fn expire_parked(&mut self, token: &str) {
        let Some(parked) = self.routes.unpark(token) else {
            return;
        };
        warn!(
            wait_ms = parked.wait.as_millis() as u64,
            "a 2026-07-28 client did not retry a call that needed its input; cancelling it"
        );
        self.write_control(&jsonrpc::error_response(
            Some(&parked.server_request),
            code::INTERNAL_ERROR,
            "the client did not provide the input in time",
            None,
        ));
        if self.routes.abandon(parked.call).is_some() {
            self.write_control(&cancelled_notification(
                parked.call,
                "the client did not provide the input in time",
            ));
        }
    }
}

/// `line` without a leading UTF-8 byte-order mark and with every byte
/// that is not UTF-8 replaced by U+FFFD; `None` when it has neither.
fn repaired(line: &Bytes) -> Option<Bytes> {
    let bare = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let fixed = match String::from_utf8_lossy(bare) {
        std::borrow::Cow::Owned(text) => Bytes::from(text),
        std::borrow::Cow::Borrowed(_) if bare.len() < line.len() => line.slice(3..),
        std::borrow::Cow::Borrowed(_) => return None,
    };
    Some(fixed)
}

async fn next_line(reader: &mut Option<Reader>) -> Result<Option<Piece>, LineError> {
    // `next_piece` is cancel-safe: its state and partial line live in the reader.
    match reader {
        Some(r) => r.next_piece().await,
        None => std::future::pending().await,
    }
}

/// Writes the front of the queue (up to [`WRITE_BATCH`] lines in one
/// call); cancel-safe: a write that did not finish wrote nothing.
async fn write_out(
    stdin: Option<&mut ChildStdin>,
    queue: &VecDeque<Queued>,
) -> std::io::Result<usize> {
    let Some(stdin) = stdin else {
        return std::future::pending().await;
    };
    let slices: Vec<std::io::IoSlice<'_>> = queue
        .iter()
        .take(WRITE_BATCH)
        .map(|q| std::io::IoSlice::new(&q.line))
        .collect();
    stdin.write_vectored(&slices).await
}

/// Why a child's request to a client that did not declare the capability
/// for its method is refused (-32601).
fn no_capability(method: &str) -> String {
    format!("the client did not declare the capability for {method}")
}
