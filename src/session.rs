//! Sessions: the state a session-era client (2024-11-05 … 2025-11-25) has
//! with the proxy.
//!
//! Owns: session ids (128 bits from the OS CSPRNG, hex, so visible ASCII as
//! the spec requires), the negotiated protocol version, the session's SSE
//! streams and their replay registry, idle expiry, and the cap on how many
//! sessions exist (`--max-sessions`). Spec: `basic/transports#session-management`.
//!
//! A session ends on DELETE, idle timeout, the close of its legacy stream,
//! or its child's exit (per-session mode); afterwards its id answers 404.
//!
//! Every session belongs to the [`Principal`] that created it and is looked
//! up as (principal, id): another principal presenting the id gets the same
//! 404 as for an unknown id (spec `basic/security_best_practices#session-hijacking`;
//! transport.md §6). One principal holds at most
//! `--max-sessions-per-principal` sessions.
//!
//! Requests in flight are bounded by `--max-in-flight`: per session
//! ([`Session::admit`]), and, for requests that belong to no session
//! (`--stateless`, 2026-07-28), per principal ([`PrincipalsInFlight`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::auth::Principal;
use crate::lock;
use crate::sse::{LiveRx, Outlet, ReplayBudget, Tombstone};
use crate::upstream::{Port, Upstream};

/// Requests after `initialize` a session may make and still count as a
/// one-shot client's: `notifications/initialized` and one call.
const ONE_SHOT_TOUCHES: u32 = 2;

/// The tombstones of a session's streams let go of, with their bytes.
#[derive(Default)]
struct Gone {
    list: VecDeque<Tombstone>,
    bytes: usize,
}

/// How often a legacy stream looks, during a shutdown, whether its
/// session still has requests in flight ([`Session::legacy_stream_end`]).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);

/// What a session needs to know about limits.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Per-stream live queue.
    pub max_queue: usize,
    /// Per-stream live queue, in bytes of notifications.
    pub max_queue_bytes: usize,
    /// Per-stream replay buffer (0: no event ids, no replay).
    pub replay_events: usize,
    /// Per-stream replay buffer, in bytes.
    pub replay_bytes: usize,
    /// Streams kept per session for `Last-Event-ID` replay, finished ones
    /// included; streams not finished are kept past it
    /// (`--replay-streams`, [`Session::open_stream`]).
    pub streams: usize,
    /// Tombstones of streams let go of ([`crate::sse::Tombstone`]) a
    /// session keeps, oldest dropped first (`--replay-tombstones`), and
    /// their bytes together (`--replay-tombstone-bytes`): a client back
    /// for one gets an error for each answer it may have missed. Past
    /// these, it gets a fresh GET stream (logged), as for an id the
    /// session never gave out.
    pub tombstones: usize,
    /// See `tombstones`.
    pub tombstone_bytes: usize,
    /// Replay memory of all streams of the proxy together.
    pub budget: Arc<ReplayBudget>,
    /// Where slow-consumer cuts are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One client session.
/// The transport a session was opened on. Its id is good on that
/// transport only: a Streamable HTTP session's id on the legacy message
/// endpoint (or the reverse) is an unknown session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP+SSE (2024-11-05): `GET /sse`, `POST /messages?sessionId=…`.
    Legacy,
    /// Streamable HTTP (2025-03-26 … 2025-11-25): `Mcp-Session-Id`.
    Streamable,
}

pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: Arc<str>,
    /// Where the id is good.
    pub transport: Transport,
    /// Who created it: the only principal that may use it.
    pub principal: Principal,
    /// How the multiplexer sees this session.
    pub port: Arc<Port>,
    /// The child (its own, or the shared one).
    pub upstream: Arc<Upstream>,
    /// Negotiated protocol version (from the initialize result).
    protocol_version: Mutex<String>,
    limits: StreamLimits,
    streams: Mutex<VecDeque<Arc<Outlet>>>,
    /// What the streams let go of left behind.
    gone: Mutex<Gone>,
    /// The standalone GET stream, once opened; also the port's stream for
    /// unrelated messages. Checked and replaced under this one lock, so
    /// that two GETs at once share one stream.
    get_stream: Mutex<Option<Arc<Outlet>>>,
    next_stream: AtomicU64,
    last_active: Mutex<Instant>,
    /// Requests seen after `initialize` (each POST, GET or DELETE naming
    /// the session), for the one-shot idle policy.
    touches: std::sync::atomic::AtomicU32,
    /// Whether a GET (or legacy) stream was ever opened.
    streamed: std::sync::atomic::AtomicBool,
    /// POSTs of this session whose client waits for a JSON answer or
    /// reads the POST's stream.
    waiting: std::sync::atomic::AtomicUsize,
    /// A request was refused for too many in flight (logged once per
    /// session: a client that keeps trying gets 429s, not log lines).
    overfull_noted: std::sync::atomic::AtomicBool,
    /// Cancelled when the session ends (or the shutdown's drain has run
    /// out): every stream of it closes.
    pub cancel: CancellationToken,
    /// Cancelled when the session ends or the proxy begins to shut down:
    /// ends the session's GET stream, which carries no answer and never
    /// ends by itself. A POST's stream runs on to its answers.
    pub standalone: CancellationToken,
}

/// A client waiting for a JSON answer or reading a POST's stream in a
/// session ([`Session::waiting`]).
pub struct Waiting(Arc<Session>);

impl Drop for Waiting {
    fn drop(&mut self) {
        // In use until the answer went out: idle from now.
        *lock(&self.0.last_active) = Instant::now();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fresh session id.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS CSPRNG failing is not something to serve sessions through.
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a new session is made of ([`Session::new`]); named, because two of
/// its parts are tokens that only their names tell apart.
pub struct SessionParts {
    /// The fresh session id ([`new_session_id`]).
    pub id: String,
    /// Where the id is good.
    pub transport: Transport,
    /// Its owner.
    pub principal: Principal,
    /// How the multiplexer sees it.
    pub port: Arc<Port>,
    /// Its child (its own, or the shared one).
    pub upstream: Arc<Upstream>,
    /// Its streams' bounds.
    pub limits: StreamLimits,
    /// Ends all of its streams ([`Session::cancel`]).
    pub cancel: CancellationToken,
    /// Ends its GET stream only ([`Session::standalone`]).
    pub standalone: CancellationToken,
}

impl Session {
    /// A session over its upstream, already attached to it.
    pub fn new(parts: SessionParts) -> Arc<Session> {
        let SessionParts {
            id,
            transport,
            principal,
            port,
            upstream,
            limits,
            cancel,
            standalone,
        } = parts;
        upstream.attach(port.clone());
        Arc::new(Session {
            id: id.into(),
            transport,
            principal,
            port,
            upstream,
            protocol_version: Mutex::new(String::new()),
            limits,
            streams: Mutex::new(VecDeque::new()),
            gone: Mutex::default(),
            get_stream: Mutex::new(None),
            next_stream: AtomicU64::new(1),
            last_active: Mutex::new(Instant::now()),
            touches: Default::default(),
            streamed: Default::default(),
            waiting: Default::default(),
            overfull_noted: Default::default(),
            cancel,
            standalone,
        })
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> String {
        lock(&self.protocol_version).clone()
    }

    /// Records the negotiated protocol version.
    pub fn set_protocol_version(&self, v: &str) {
        *lock(&self.protocol_version) = v.to_string();
    }

    /// Whether `MCP-Protocol-Version: v` fits this session: any
    /// session-era revision this proxy supports. The spec asks for 400
    /// only for an invalid or unsupported value, and the official
    /// conformance suite sends `2025-03-26` on sessions that negotiated
    /// `2025-11-25`. What the client asked for in `initialize` counts for
    /// nothing: an unsupported value there was answered with another
    /// version, and the same value in the header is still unsupported
    /// (a POST refuses it before it reaches the session).
    pub fn accepts_version(&self, v: &str) -> bool {
        crate::version::is_session(v)
    }

    /// Whether `more` client requests may go to the child now, given those
    /// of this session still in flight and the limit `max` (`--max-in-flight`,
    /// see [`crate::config::DEFAULT_MAX_IN_FLIGHT`]); the count in flight
    /// when not.
    /// Concurrent POSTs may pass the check together: the excess is bounded
    /// by the requests of those POSTs.
    pub fn admit(&self, more: usize, max: usize) -> Result<(), (usize, usize)> {
        let now = self.port.in_flight();
        if more > 0 && now + more > max {
            if self.overfull_noted.swap(true, Ordering::Relaxed) {
                return Err((now, max));
            }
            warn!(
                session = %crate::logging::tag(&self.id),
                in_flight = now,
                more,
                max,
                "session has too many requests in flight; refusing more (--max-in-flight; said once per session)"
            );
            return Err((now, max));
        }
        Ok(())
    }

    /// Marks the session as used now.
    pub fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
        self.touches.fetch_add(1, Ordering::Relaxed);
    }

    /// A one-shot client (the Inspector CLI, a script) initializes, sends
    /// `notifications/initialized` and one request, and leaves without a
    /// DELETE: at most two touches and never a stream. Such a session
    /// expires after `--oneshot-idle-timeout`; one that did more is an
    /// interactive client and gets the full `--session-idle-timeout`.
    fn is_one_shot(&self) -> bool {
        self.touches.load(Ordering::Relaxed) <= ONE_SHOT_TOUCHES
            && !self.streamed.load(Ordering::Relaxed)
            && !self.has_live_stream()
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_active).elapsed()
    }

    /// A new stream with this session's limits: a POST stream owing
    /// `owed` responses, or the GET stream (`None`). The flag says whether
    /// its events carry ids (and so can be replayed).
    fn new_outlet(&self, owed: Option<usize>) -> (Arc<Outlet>, LiveRx, bool) {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let with_ids = self.limits.replay_events > 0;
        let (outlet, rx) = Outlet::new(
            id,
            with_ids,
            owed,
            self.limits.max_queue,
            self.limits.replay_events,
        );
        (Arc::new(self.with_limits(outlet)), rx, with_ids)
    }

    /// An outlet with this session's byte bounds, budget and metrics.
    fn with_limits(&self, outlet: Outlet) -> Outlet {
        outlet
            .with_replay_bytes(self.limits.replay_bytes)
            .with_queue_bytes(self.limits.max_queue_bytes)
            .with_budget(self.limits.budget.clone())
            .with_metrics(self.limits.metrics.clone())
    }

    /// Adds a stream to the ones kept for `Last-Event-ID`, letting go of
    /// the oldest finished ones past `--replay-streams`. One not finished
    /// is never let go of: its client may come back for it (the GET stream
    /// among them), and there are at most as many as requests in flight
    /// (`--max-in-flight`), each bounded in bytes by the replay budget. A
    /// stream let go of leaves its tombstone, which keeps its lingering
    /// buffer: a resumption gets the same from it as from the stream. So
    /// which finished stream goes first matters little, and the oldest is
    /// found without looking at the rest (streams are in the order they
    /// opened; before 2026-12-06 every kept stream's buffer was looked at
    /// for each new stream, a tenth of what an echo call on SSE cost).
    fn keep_stream(&self, streams: &mut VecDeque<Arc<Outlet>>, outlet: Arc<Outlet>) {
        while streams.len() >= self.limits.streams {
            let oldest = streams.iter().position(|o| o.is_finished());
            let Some(gone) = oldest.and_then(|i| streams.remove(i)) else {
                break;
            };
            debug!(
                session = %crate::logging::tag(&self.id),
                stream = gone.stream_id(),
                kept = self.limits.streams,
                "let go of a finished stream past --replay-streams; a tombstone stands for it"
            );
            if let Some(t) = gone.tombstone() {
                let mut g = lock(&self.gone);
                g.bytes += t.bytes();
                g.list.push_back(t);
                while g.list.len() > self.limits.tombstones || g.bytes > self.limits.tombstone_bytes
                {
                    let Some(old) = g.list.pop_front() else { break };
                    g.bytes -= old.bytes();
                    debug!(
                        session = %crate::logging::tag(&self.id),
                        stream = old.stream_id(),
                        tombstones = self.limits.tombstones,
                        tombstone_bytes = self.limits.tombstone_bytes,
                        "dropped a stream's tombstone past --replay-tombstones or --replay-tombstone-bytes; a client back for it gets a fresh stream"
                    );
                }
            }
        }
        streams.push_back(outlet);
    }

    /// A new POST stream owing `owed` responses.
    pub fn open_stream(&self, owed: usize) -> (Arc<Outlet>, LiveRx) {
        let (outlet, rx, with_ids) = self.new_outlet(Some(owed));
        if with_ids {
            self.keep_stream(&mut lock(&self.streams), outlet.clone());
            if crate::version::at_least(&lock(&self.protocol_version), "2025-11-25") {
                outlet.prime();
            }
        }
        (outlet, rx)
    }

    /// The standalone GET stream: a new GET replaces the previous response
    /// on the same logical stream (no 409; transport.md §7.E).
    pub fn open_get_stream(&self) -> LiveRx {
        self.streamed.store(true, Ordering::Relaxed);
        // Check and attach under one lock: two GETs at once share one
        // stream, the later one replacing the earlier one's response.
        let mut get_stream = lock(&self.get_stream);
        if let Some(o) = get_stream.as_ref().filter(|o| !o.is_finished()) {
            return o.reattach();
        }
        let (outlet, rx, with_ids) = self.new_outlet(None);
        *get_stream = Some(outlet.clone());
        self.port.set_notify(Some(outlet.clone()));
        if with_ids {
            self.keep_stream(&mut lock(&self.streams), outlet);
        }
        rx
    }

    /// Resumes the stream an event id belongs to, replaying what followed
    /// it, with the token it ends on: the GET stream's is
    /// [`Session::standalone`] (it carries no answer), a POST's is
    /// [`Session::cancel`] (it ends after its answers, or when the drain
    /// runs out). `None` when the stream is unknown to this session or
    /// never sent that event; events no longer kept are handled by
    /// [`crate::sse::Outlet::resume`].
    pub fn resume(&self, last_event_id: &str) -> Option<(LiveRx, CancellationToken)> {
        let (stream, seq) = crate::sse::parse_event_id(last_event_id)?;
        let found = lock(&self.streams)
            .iter()
            .find(|o| o.stream_id() == stream)
            .cloned();
        let outlet = match found {
            Some(outlet) => outlet,
            None => self.revive(stream)?,
        };
        let standalone = lock(&self.get_stream)
            .as_ref()
            .is_some_and(|get| Arc::ptr_eq(get, &outlet));
        let end = if standalone {
            self.standalone.clone()
        } else {
            self.cancel.clone()
        };
        Some((outlet.resume(seq)?, end))
    }

    /// A stream let go of, back from its tombstone (see [`Gone`]).
    fn revive(&self, stream: u64) -> Option<Arc<Outlet>> {
        let t = {
            let mut g = lock(&self.gone);
            let i = g.list.iter().position(|t| t.stream_id() == stream)?;
            let t = g.list.remove(i)?;
            g.bytes -= t.bytes();
            t
        };
        let outlet = Outlet::revive(t, self.limits.max_queue, self.limits.replay_events);
        let outlet = Arc::new(self.with_limits(outlet));
        self.keep_stream(&mut lock(&self.streams), outlet.clone());
        Some(outlet)
    }

    /// Whether one of its streams holds an answer no client took, that
    /// came within `recent`.
    fn holds_an_answer_untaken(&self, recent: Duration) -> bool {
        lock(&self.streams).iter().any(|o| o.answer_untaken(recent))
    }

    /// Whether a client is attached to the GET (or legacy) stream.
    fn has_live_stream(&self) -> bool {
        self.port.notify_stream().is_some_and(|o| o.is_live())
    }

    /// Whether a client is there for this session now: on its GET (or
    /// legacy) stream, or on a POST (reading its stream, with or without
    /// event ids, or waiting for its JSON answer).
    /// A request in flight whose client went away does not count: its
    /// answer could only be fetched by a client coming back (a GET with
    /// `Last-Event-ID`), which touches the session.
    fn has_client(&self) -> bool {
        self.has_live_stream()
            || self.waiting.load(Ordering::Relaxed) > 0
            || lock(&self.streams).iter().any(|o| o.is_live())
    }

    /// Marks a client as waiting on this session (a POST answered in
    /// JSON, or the response body of a POST's stream) until the guard is
    /// dropped.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }

    /// When the legacy (2024-11-05) stream ends: with the session, or once
    /// the proxy shuts down ([`Session::standalone`]) and none of the
    /// session's requests is in flight, since their answers travel on
    /// this stream and not on the POSTs. The count is looked at every
    /// [`IN_FLIGHT_POLL`], during a shutdown only; the stream ends one
    /// look after it reached zero, so that the last answer, counted out
    /// just before it is queued, is queued by then.
    pub fn legacy_stream_end(self: &Arc<Self>) -> CancellationToken {
        let end = self.cancel.child_token();
        let (session, watch) = (self.clone(), end.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = watch.cancelled() => return,
                _ = session.standalone.cancelled() => {}
            }
            let mut idle_looks = 0;
            while idle_looks < 2 {
                idle_looks = if session.port.in_flight() == 0 {
                    idle_looks + 1
                } else {
                    0
                };
                tokio::select! {
                    _ = watch.cancelled() => return,
                    _ = tokio::time::sleep(IN_FLIGHT_POLL) => {}
                }
            }
            watch.cancel();
        });
        end
    }

    async fn end(&self) {
        self.cancel.cancel();
        self.standalone.cancel();
        if let Some(o) = self.port.set_notify(None) {
            o.finish();
        }
        for o in lock(&self.streams).drain(..) {
            o.finish();
        }
        // Nobody can get the answers of its calls still in flight any more
        // (the session is gone, its streams with it): a shared child is
        // told to stop working on them, rather than leave every session
        // that shares it to wait behind them.
        self.upstream
            .detach_cancelling(&self.port, "its session ended")
            .await;
        // A child of its own (per-session mode) ends with the session.
        if !self.upstream.is_shared() {
            self.upstream.stop().await;
        }
    }
}

/// Requests in flight per principal, for the requests that belong to no
/// session (`--stateless` POSTs and 2026-07-28 requests): nothing else
/// bounds how many one principal keeps waiting at the shared child (or its
/// own 2026-07-28 child). A request holds its slots from admission until
/// its answer went out or its client went away, whichever is first: the
/// [`InFlightSlots`] guard lives as long as the response (or the handler,
/// for a JSON answer), so every way a request ends gives them back.
///
/// A refusal is logged once per burst: at the first refusal, and again
/// only after the principal fell back to at most half its limit (then with
/// the number refused meanwhile), so a client that keeps trying gets 429s,
/// not log lines.
pub struct PrincipalsInFlight {
    /// `--max-in-flight`.
    max: usize,
    /// Principals with requests in flight; an entry goes with its last one.
    counts: Mutex<HashMap<Principal, InFlightCount>>,
}

/// One principal's requests in flight.
#[derive(Default)]
struct InFlightCount {
    /// Slots held.
    held: usize,
    /// Requests refused in the current burst (0: none since the last
    /// warning was rearmed).
    refused: usize,
}

impl PrincipalsInFlight {
    /// A table allowing `max` requests in flight per principal.
    pub fn new(max: usize) -> Arc<PrincipalsInFlight> {
        Arc::new(PrincipalsInFlight {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Slots for `more` requests of `principal`, held until the guard is
    /// dropped; when they would pass the limit, the count in flight and
    /// the limit.
    pub fn admit(
        self: &Arc<Self>,
        principal: &Principal,
        more: usize,
    ) -> Result<InFlightSlots, (usize, usize)> {
        if more == 0 {
            return Ok(InFlightSlots {
                table: self.clone(),
                principal: principal.clone(),
                held: 0,
            });
        }
        let mut counts = lock(&self.counts);
        let count = counts.entry(principal.clone()).or_default();
        if count.held + more > self.max {
            if count.refused == 0 {
                warn!(
                    principal = %principal,
                    in_flight = count.held,
                    more,
                    max = self.max,
                    "principal has too many requests in flight without a session; refusing more (--max-in-flight; said once per burst)"
                );
            }
            count.refused += 1;
            let now = count.held;
            if now == 0 {
                counts.remove(principal);
            }
            return Err((now, self.max));
        }
        count.held += more;
        drop(counts);
        Ok(InFlightSlots {
            table: self.clone(),
            principal: principal.clone(),
            held: more,
        })
    }

    /// Requests `principal` has in flight now.
    pub fn held(&self, principal: &Principal) -> usize {
        lock(&self.counts).get(principal).map_or(0, |c| c.held)
    }

    fn release(&self, principal: &Principal, n: usize) {
        if n == 0 {
            return;
        }
        let mut counts = lock(&self.counts);
        let Some(count) = counts.get_mut(principal) else {
            return;
        };
        count.held = count.held.saturating_sub(n);
        if count.refused > 0 && count.held <= self.max / 2 {
            info!(
                principal = %principal,
                refused = count.refused,
                in_flight = count.held,
                max = self.max,
                "principal back under its requests in flight (--max-in-flight); refusals will be logged again"
            );
            count.refused = 0;
        }
        if count.held == 0 && count.refused == 0 {
            counts.remove(principal);
        }
    }
}

/// Slots of [`PrincipalsInFlight`] held by one request (or one batch),
/// given back when dropped.
pub struct InFlightSlots {
    table: Arc<PrincipalsInFlight>,
    principal: Principal,
    held: usize,
}

impl Drop for InFlightSlots {
    fn drop(&mut self) {
        self.table.release(&self.principal, self.held);
    }
}

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TooManySessions {
    /// `--max-sessions` reached (the count open).
    #[error("too many sessions ({0})")]
    Total(usize),
    /// `--max-sessions-per-principal` reached (the principal's count).
    #[error("too many sessions for one principal ({0})")]
    ForPrincipal(usize),
}

/// All sessions, keyed by id.
pub struct Sessions {
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Ids reserved by initializes still waiting for their child, and the
    /// slots held by per-principal 2026-07-28 children ([`crate::principals`]).
    reserved: AtomicU64,
    /// Reservations per principal.
    reserved_by: Mutex<HashMap<Principal, usize>>,
    max: usize,
    max_per_principal: usize,
    audit: Arc<Audit>,
    /// Ends of expired sessions (their children's staged stops), run
    /// beside the reaper so that one stubborn child holds up no other
    /// expiry; [`Sessions::clear`] waits for them.
    ending: tokio_util::task::TaskTracker,
}

impl Sessions {
    /// An empty store holding at most `max` sessions, `max_per_principal`
    /// of them for any one principal.
    pub fn new(max: usize, max_per_principal: usize, audit: Arc<Audit>) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            reserved: AtomicU64::new(0),
            reserved_by: Mutex::new(HashMap::new()),
            max,
            max_per_principal,
            audit,
            ending: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Reserves room for one session of `principal` before its child is
    /// spawned; the reservation is released when the returned guard drops.
    pub fn reserve(
        self: &Arc<Self>,
        principal: &Principal,
    ) -> Result<Reservation, TooManySessions> {
        let (open, mine) = {
            let map = lock(&self.map);
            let mine = map.values().filter(|s| s.principal == *principal).count();
            (map.len(), mine)
        };
        // The total first: with one anonymous principal both caps are equal,
        // and a full proxy is a 503, not the caller's fault.
        let reserved = self.reserved.fetch_add(1, Ordering::SeqCst) as usize;
        if open + reserved >= self.max {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            warn!(
                open,
                max = self.max,
                "session limit reached; refusing a new session (--max-sessions)"
            );
            return Err(TooManySessions::Total(open));
        }
        let mut by = lock(&self.reserved_by);
        let pending = by.get(principal).copied().unwrap_or(0);
        if mine + pending >= self.max_per_principal {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            warn!(
                principal = %principal,
                open = mine,
                max = self.max_per_principal,
                "per-principal session limit reached; refusing a new session (--max-sessions-per-principal)"
            );
            return Err(TooManySessions::ForPrincipal(mine));
        }
        *by.entry(principal.clone()).or_insert(0) += 1;
        Ok(Reservation {
            sessions: self.clone(),
            principal: principal.clone(),
        })
    }

    /// Adds a session (consuming its reservation).
    pub fn insert(&self, session: Arc<Session>, reservation: Reservation) {
        lock(&self.map).insert(session.id.clone(), session.clone());
        drop(reservation);
        // Never the id itself at info: it is the session's credential.
        info!(session = %crate::logging::tag(&session.id), principal = %session.principal, version = %session.protocol_version(), "session created");
        self.audit.session(
            "session.create",
            &session.principal,
            &crate::logging::tag(&session.id),
            None,
        );
    }

    /// Looks a session up regardless of its owner (internal use only).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.map).get(id).cloned()
    }

    /// Looks up `principal`'s session `id`: another principal's session is
    /// not found, exactly like an unknown one.
    pub fn get_owned(
        &self,
        id: &str,
        principal: &Principal,
        transport: Transport,
    ) -> Option<Arc<Session>> {
        let session = self.get(id)?;
        if session.transport != transport {
            debug!(session = %crate::logging::tag(id), opened_on = ?session.transport, presented_on = ?transport, "a session id was presented on another transport; answering 404");
            return None;
        }
        if session.principal == *principal {
            Some(session)
        } else {
            warn!(session = %crate::logging::tag(id), owner = %session.principal, presenter = %principal, "a session id was presented by another principal; answering 404");
            None
        }
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends a session; false if it did not exist.
    pub async fn remove(&self, id: &str, why: &str) -> bool {
        let session = lock(&self.map).remove(id);
        match session {
            Some(s) => {
                self.record_end(&s, why);
                s.end().await;
                true
            }
            None => false,
        }
    }

    /// Logs and audits the end of a session just taken out of the map.
    fn record_end(&self, s: &Session, why: &str) {
        info!(session = %crate::logging::tag(&s.id), reason = why, "session ended");
        let event = if why.starts_with("idle") {
            "session.expire"
        } else if why.starts_with("deleted") {
            "session.delete"
        } else {
            "session.end"
        };
        self.audit
            .session(event, &s.principal, &crate::logging::tag(&s.id), Some(why));
    }

    /// Ready once no open session has a request in flight, or an answer
    /// no client took that came within `recent` (`--replay-linger`, how
    /// long a client is expected to take to come back): during the
    /// shutdown's drain, an answer whose client went away (a dropped
    /// stream is not a cancellation) may still come, and its client may
    /// come back for it with `Last-Event-ID`. Looked at every
    /// [`IN_FLIGHT_POLL`]; the drain bounds the wait.
    pub async fn settled(&self, recent: Duration) {
        loop {
            let busy = lock(&self.map)
                .values()
                .any(|s| s.port.in_flight() > 0 || s.holds_an_answer_untaken(recent));
            if !busy {
                return;
            }
            tokio::time::sleep(IN_FLIGHT_POLL).await;
        }
    }

    /// Every open session's multiplexer, each once (sessions may share one).
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<Arc<Upstream>> = Vec::new();
        for s in lock(&self.map).values() {
            if !all.iter().any(|u| Arc::ptr_eq(u, &s.upstream)) {
                all.push(s.upstream.clone());
            }
        }
        all
    }

    /// Ends every session (shutdown), and waits for the ends of expired
    /// ones still under way.
    pub async fn clear(&self) {
        let all: Vec<Arc<str>> = lock(&self.map).keys().cloned().collect();
        let ends = all.iter().map(|id| self.remove(id, "shutdown"));
        futures_util::future::join_all(ends).await;
        self.ending.close();
        self.ending.wait().await;
        self.ending.reopen();
    }

    /// Ends sessions idle longer than `idle` (no request and no client
    /// attached or waiting, see [`Session::has_client`]), and one-shot
    /// sessions idle longer than `oneshot`.
    ///
    /// The sessions a sweep picks leave the map together, under the lock
    /// they were picked under: a client coming back to one gets 404 rather
    /// than being served on a session about to end. Their ends (each
    /// waiting for its child's staged stop) run in the background.
    pub async fn reap(&self, idle: Duration, oneshot: Duration) {
        let mut map = lock(&self.map);
        let expired: Vec<(Arc<str>, &'static str)> = map
            .values()
            .filter(|s| !s.has_client())
            .filter_map(|s| {
                let quiet = s.idle_for();
                if quiet > idle {
                    Some((s.id.clone(), "idle timeout (--session-idle-timeout)"))
                } else if quiet > oneshot && s.is_one_shot() {
                    Some((
                        s.id.clone(),
                        "one-shot client gone quiet (--oneshot-idle-timeout)",
                    ))
                } else {
                    None
                }
            })
            .collect();
        let expired: Vec<(Arc<Session>, &'static str)> = expired
            .into_iter()
            .filter_map(|(id, why)| Some((map.remove(&id)?, why)))
            .collect();
        drop(map);
        for (s, why) in expired {
            self.record_end(&s, why);
            self.ending.spawn(async move { s.end().await });
        }
    }
}

/// Room for one session that is being set up.
pub struct Reservation {
    sessions: Arc<Sessions>,
    principal: Principal,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.sessions.reserved.fetch_sub(1, Ordering::SeqCst);
        let mut by = lock(&self.sessions.reserved_by);
        if let Some(n) = by.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principals_slots_are_bounded_and_every_drop_gives_them_back() {
        let table = PrincipalsInFlight::new(4);
        let alice = Principal::new(crate::auth::AuthMethod::ApiKey, "alice");
        let bob = Principal::new(crate::auth::AuthMethod::ApiKey, "bob");
        let batch = table.admit(&alice, 3).unwrap();
        let one = table.admit(&alice, 1).unwrap();
        assert_eq!(table.admit(&alice, 1).err(), Some((4, 4)));
        assert_eq!(
            table.admit(&alice, 0).map(|_| ()).err(),
            None,
            "nothing to hold"
        );
        let bobs = table.admit(&bob, 4).unwrap();
        drop(one);
        assert_eq!(table.held(&alice), 3);
        let again = table.admit(&alice, 1).unwrap();
        drop((batch, again, bobs));
        assert_eq!(table.held(&alice), 0);
        assert!(
            lock(&table.counts).is_empty(),
            "no entry outlives its requests"
        );
    }

    #[test]
    fn refusals_are_counted_per_burst_and_rearmed_at_half_the_limit() {
        let table = PrincipalsInFlight::new(4);
        let p = Principal::anonymous();
        let held: Vec<_> = (0..4).map(|_| table.admit(&p, 1).unwrap()).collect();
        for _ in 0..10 {
            assert!(table.admit(&p, 1).is_err());
        }
        let refused = |t: &PrincipalsInFlight| lock(&t.counts).get(&p).map_or(0, |c| c.refused);
        assert_eq!(refused(&table), 10, "one burst: logged at the first only");
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(refused(&table), 10, "three of four in flight: same burst");
        drop(held.next());
        assert_eq!(refused(&table), 0, "half the limit: rearmed");
        drop(held);
        assert!(lock(&table.counts).is_empty());
    }

    #[test]
    fn session_ids_are_long_visible_ascii_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        assert_ne!(a, b);
    }
}
