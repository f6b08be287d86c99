//! The routing tables of one child, and the rewriting of ids that makes
//! them work: client request ids become proxy-unique integers on the way
//! in and go back byte-exact on the way out; `_meta.progressToken` is
//! rewritten the same way (spec `basic/utilities/{cancellation,progress}`;
//! transport.md §4.4–4.6, §7.B).
//!
//! Pure data: no I/O, no locks, no tasks. Who holds the tables and when
//! they change is [`super::Upstream`]'s business.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::fill::Fill;
use super::tasks::{TaskInputs, TaskOwners};
use super::{Port, PortKind, Reply, STATELESS_LABEL, Sink, UpstreamError};
use crate::jsonrpc::{self, Frame};

/// What the multiplexer reads in an answer about tasks (shared mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskAnswer {
    /// Nothing.
    None,
    /// A task-augmented request: the answer may create a task for this session.
    Create,
    /// `tasks/list`: keep only what this session may see.
    List,
}

pub(super) struct Pending {
    pub(super) port: u64,
    /// The client speaks 2026-07-28: the proxy's own failures reach it
    /// as -32603, not -32000 (see `UpstreamError::code`).
    pub(super) modern: bool,
    pub(super) fill: Fill,
    /// The child's identity, for the `_meta` of a 2026-07-28 client's
    /// result (set with a fill, when the child named itself).
    pub(super) stamp: Option<Arc<super::stamp::Stamp>>,
    pub(super) tasks: TaskAnswer,
    pub(super) client_id: Box<[u8]>,
    /// The client's own progress token, restored on progress notifications.
    pub(super) token: Option<Box<[u8]>>,
    /// Set when an `input_required` answer is to be turned into questions
    /// to the client and a repeated call.
    pub(super) retry: Option<Retry>,
    /// A 2026-07-28 client's call to a 2025-era child that may answer the
    /// child's server-to-client request as `input_required`.
    pub(super) parkable: bool,
    /// When `--request-timeout` ends it (its key in `Routes::timers`).
    pub(super) deadline: Option<Instant>,
    pub(super) reply: Reply,
}

impl Pending {
    /// Answers the request with error `e`, in its client's revision's code.
    pub(super) fn fail(self, e: &super::UpstreamError) {
        self.reply.fail(&self.client_id, e, self.modern);
    }
}

/// A 2026-07-28 client's call whose 2025-era child asked the client
/// something: the client got `input_required` with a `requestState` naming
/// this entry, and its retry brings the answer.
pub(super) struct Parked {
    /// The child's request, raw id, waiting for the client's answer.
    pub(super) server_request: Box<[u8]>,
    /// The call's proxy id; it stays in `pending` with a detached reply.
    pub(super) call: u64,
    /// The child's answer to the call, if it came before the retry.
    pub(super) early: Option<(Pending, Frame)>,
    /// When the client's retry is too late (its key in `Routes::parked_timers`).
    pub(super) deadline: Instant,
    /// How long the client had.
    pub(super) wait: std::time::Duration,
    /// The principal whose call it is (`None`: anonymous): only its retry resumes it.
    pub(super) owner: Option<Arc<str>>,
    /// The call itself: a retry of another call does not resume it.
    pub(super) call_key: Option<super::call_key::CallKey>,
    /// The `input_required` result the client got (asked again of a
    /// retry that did not bring the answer).
    pub(super) asked: Vec<u8>,
    /// The child's request's method and raw params: a retry is asked
    /// again only if it declares what they need.
    pub(super) method: Box<str>,
    pub(super) params: Option<Box<[u8]>>,
}

/// What repeating a call after `input_required` needs.
pub(super) struct Retry {
    /// The call as first sent, before id and token rewriting.
    pub(super) frame: Frame,
    /// Rounds of input asked for so far.
    pub(super) rounds: u8,
}

pub(super) struct ServerRequest {
    /// The id as the child wrote it; the client's answer goes back with it.
    pub(super) raw_id: Box<[u8]>,
    pub(super) port: u64,
    pub(super) outlet: Option<Sink>,
    /// Set when the proxy itself asked (for a 2026-07-28 child's
    /// `input_required`): the client's answer goes here, not to the child.
    pub(super) answer: Option<oneshot::Sender<Frame>>,
    /// When the child is told its client did not answer (its key in
    /// `Routes::server_timers`); `None` for the proxy's own questions,
    /// which their asker bounds.
    pub(super) deadline: Option<Instant>,
}

/// Why a child's request to a client was not admitted to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Crowded {
    /// Its session already has `--max-server-requests-per-session` waiting.
    Session,
    /// The child already has `--max-server-requests` waiting.
    Child,
}

/// Why the proxy's own question to a client was not recorded
/// ([`Routes::admit_question`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unasked {
    /// A bound of waiting requests bit.
    Crowded(Crowded),
    /// A request of the child's still waiting has its id.
    IdInUse,
}

/// A map keyed by numbers the proxy hands out itself (request ids, port
/// keys): no client chooses them, so the table needs no defence against
/// chosen collisions, and SipHash, the default, cost more per call than
/// any other single step of routing one.
pub(super) type ProxyIdMap<V> = HashMap<u64, V, BuildHasherDefault<ProxyIdHasher>>;

/// One multiplication (Fibonacci hashing): it spreads consecutive ids
/// over the high bits the table's control bytes take as well as the low
/// bits that pick its slot.
#[derive(Default)]
pub(super) struct ProxyIdHasher(u64);

impl Hasher for ProxyIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
}

#[derive(Default)]
pub(super) struct Routes {
    pub(super) pending: ProxyIdMap<Pending>,
    /// (port, the client's id in canonical form, [`jsonrpc::id_key`]) → proxy id.
    pub(super) by_client: HashMap<(u64, Box<[u8]>), u64>,
    /// `--stateless` requests in flight by (principal, canonical client
    /// id): each POST there is a port of its own, so a client's
    /// `notifications/cancelled` (a POST of its own) finds its request
    /// here ([`Routes::stateless_request`]). An index of `pending`, entry
    /// for entry (in [`Routes::admit`], out in [`Routes::take`] and
    /// [`Routes::drain`]), so it holds no more than the requests in flight,
    /// which `--max-in-flight` bounds per principal.
    pub(super) by_principal: HashMap<PrincipalKey, Vec<u64>>,
    /// The child's requests to clients, by canonical id (and the proxy's
    /// own questions for a 2026-07-28 child). Bounded per session and in
    /// all ([`Routes::admit_server_request`]), and each of the child's
    /// expires: nothing stays for as long as a session lives.
    pub(super) server_requests: HashMap<Box<[u8]>, ServerRequest>,
    /// Their deadlines, soonest first.
    pub(super) server_timers: BTreeSet<(Instant, Box<[u8]>)>,
    /// How many of them each port holds (ports holding none are absent).
    pub(super) server_requests_per_port: ProxyIdMap<usize>,
    /// Request deadlines, soonest first: one timer task serves them all,
    /// and an answered request leaves no timer behind.
    pub(super) timers: BTreeSet<(Instant, u64)>,
    pub(super) ports: ProxyIdMap<Arc<Port>>,
    pub(super) subscriptions: HashMap<String, HashSet<u64>>,
    /// Requests in flight that belong to a client (not the proxy's own).
    pub(super) client_pending: usize,
    /// The level last sent to the child.
    pub(super) child_log_level: Option<usize>,
    /// Which session created which task (shared mode).
    pub(super) tasks: TaskOwners,
    /// The child's requests tied to a sessionless client's task, waiting
    /// for that client's `tasks/update`.
    pub(super) task_inputs: TaskInputs,
    /// Calls waiting for a 2026-07-28 client's retry, by `requestState`.
    pub(super) parked: HashMap<String, Parked>,
    /// Their deadlines, soonest first.
    pub(super) parked_timers: BTreeSet<(Instant, String)>,
    /// The session whose `notifications/roots/list_changed` went to the
    /// child last, until a `roots/list` of the child's that relates to no
    /// request is sent to it (see `Worker::take_request`).
    pub(super) roots_changed: Option<u64>,
    /// When a request the child had seen last left the table without its
    /// answer (cancelled, timed out, its client gone): the child may
    /// still answer it, so for a while an answer is not guessed to be
    /// another request's ([`Routes::sole_request`]).
    pub(super) abandoned_at: Option<Instant>,
}

/// How long after a request was abandoned its late answer is still
/// expected more likely than not.
const LATE_ANSWER_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl Routes {
    /// Empty tables; the task table remembers at most `max_tasks` owners.
    pub(super) fn new(max_tasks: usize) -> Routes {
        Routes {
            tasks: TaskOwners::new(max_tasks),
            ..Routes::default()
        }
    }

    /// Records request `id` (already rewritten) and where its answer goes,
    /// with its deadline, if any. A client's request is refused when its
    /// session was detached on the way (nothing would ever remove the
    /// entry) or when its id is already in flight for that session; the
    /// request comes back with the reason. `Ok(true)`: the deadline is now
    /// the soonest, and the timer must be woken.
    pub(super) fn admit(
        &mut self,
        id: u64,
        mut pending: Pending,
        deadline: Option<Instant>,
    ) -> Result<bool, Box<(UpstreamError, Pending)>> {
        let client = pending.port != 0;
        let key = client_key(pending.port, &pending.client_id);
        let port = self.ports.get(&pending.port);
        if client && port.is_none() {
            return Err(Box::new((UpstreamError::SessionEnded, pending)));
        }
        let stateless = port.and_then(|port| principal_key(port, &key.1));
        if client && self.by_client.contains_key(&key) {
            let shown = String::from_utf8_lossy(&pending.client_id).into_owned();
            return Err(Box::new((UpstreamError::DuplicateId(shown), pending)));
        }
        let mut sooner = false;
        if let Some(at) = deadline {
            pending.deadline = Some(at);
            sooner = self.timers.first().is_none_or(|(first, _)| at < *first);
            self.timers.insert((at, id));
        }
        if client {
            self.by_client.insert(key, id);
            self.count_in(pending.port);
        }
        if let Some(stateless) = stateless {
            self.by_principal.entry(stateless).or_default().push(id);
        }
        self.pending.insert(id, pending);
        Ok(sooner)
    }

    /// The proxy id of the `--stateless` request `client_id` of the
    /// principal behind `port` (another stateless POST: the one carrying
    /// the client's cancellation), when exactly one of its requests in
    /// flight has that id. Another principal's requests are never found,
    /// and two of one principal's (two clients without authentication
    /// are one anonymous principal) are ambiguous, so neither is.
    pub(super) fn stateless_request(&self, port: u64, client_id: &[u8]) -> Option<u64> {
        let canonical = jsonrpc::id_key(client_id).unwrap_or_else(|| client_id.into());
        let key = principal_key(self.ports.get(&port)?, &canonical)?;
        match self.by_principal.get(&key)?.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    /// Takes proxy id `id` (request `canonical_id` of `port`) out of
    /// [`Routes::by_principal`].
    fn unindex_stateless(&mut self, port: u64, canonical_id: &[u8], id: u64) {
        let Some(found) = self.ports.get(&port) else {
            // Not reached: a stateless request leaves before its port does
            // (`forget_port`), and nothing re-labels a port. Should it
            // happen, the entry still goes.
            self.by_principal.retain(|_, ids| {
                ids.retain(|i| *i != id);
                !ids.is_empty()
            });
            return;
        };
        // Another kind of port (a session's, a 2026-07-28 request's on the
        // same child): never indexed.
        let Some(key) = principal_key(found, canonical_id) else {
            return;
        };
        if let Some(ids) = self.by_principal.get_mut(&key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_principal.remove(&key);
            }
        }
    }

    /// One more client request in flight, for session `port`.
    pub(super) fn count_in(&mut self, port: u64) {
        self.client_pending += 1;
        if let Some(port) = self.ports.get(&port) {
            port.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One client request of session `port` fewer in flight.
    pub(super) fn count_out(&mut self, port: u64) {
        self.client_pending -= 1;
        if let Some(port) = self.ports.get(&port) {
            port.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records the child's request `key` (canonical id) to a client, or
    /// says why not: its session may hold `per_session` of them, the child
    /// `per_child`. The caller checked that `key` is not in use.
    pub(super) fn admit_server_request(
        &mut self,
        key: Box<[u8]>,
        request: ServerRequest,
        per_session: usize,
        per_child: usize,
    ) -> Result<(), Crowded> {
        if self.server_requests.len() >= per_child {
            return Err(Crowded::Child);
        }
        let held = self
            .server_requests_per_port
            .entry(request.port)
            .or_default();
        if *held >= per_session {
            return Err(Crowded::Session);
        }
        *held += 1;
        if let Some(at) = request.deadline {
            self.server_timers.insert((at, key.clone()));
        }
        debug_assert!(!self.server_requests.contains_key(&key), "id in use");
        self.server_requests.insert(key, request);
        Ok(())
    }

    /// Records the proxy's own question `key` to a client (for a
    /// 2026-07-28 child's `input_required`), within the same bounds as
    /// the child's requests; an id already in use is refused too.
    pub(super) fn admit_question(
        &mut self,
        key: Box<[u8]>,
        request: ServerRequest,
        per_session: usize,
        per_child: usize,
    ) -> Result<(), Unasked> {
        if self.server_requests.contains_key(&key) {
            // Not reached with the proxy's own ids, which a child would
            // have to guess; the child's entry keeps its route.
            return Err(Unasked::IdInUse);
        }
        self.admit_server_request(key, request, per_session, per_child)
            .map_err(Unasked::Crowded)
    }

    /// Takes the request to a client `key` (canonical id) out of the
    /// table, with its deadline and its count.
    pub(super) fn take_server_request(&mut self, key: &[u8]) -> Option<ServerRequest> {
        let request = self.server_requests.remove(key)?;
        if let Some(at) = request.deadline {
            self.server_timers.remove(&(at, Box::from(key)));
        }
        if let Some(held) = self.server_requests_per_port.get_mut(&request.port) {
            *held -= 1;
            if *held == 0 {
                self.server_requests_per_port.remove(&request.port);
            }
        }
        Some(request)
    }

    /// Takes every request to a client of `port` (its session ended).
    pub(super) fn take_server_requests_of(&mut self, port: u64) -> Vec<ServerRequest> {
        if !self.server_requests_per_port.contains_key(&port) {
            return Vec::new();
        }
        let keys: Vec<Box<[u8]>> = (self.server_requests.iter())
            .filter(|(_, s)| s.port == port)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| self.take_server_request(k))
            .collect()
    }

    /// Takes the requests to clients whose deadline is at or before `now`.
    pub(super) fn due_server_requests(&mut self, now: Instant) -> Vec<ServerRequest> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.server_timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.server_timers.pop_first()
                && let Some(request) = self.take_server_request(&key)
            {
                due.push(request);
            }
        }
        due
    }

    /// Keeps a parked call under `token` until its deadline.
    pub(super) fn park(&mut self, token: String, parked: Parked) {
        self.parked_timers.insert((parked.deadline, token.clone()));
        self.parked.insert(token, parked);
    }

    /// Takes the parked call `token` (its deadline removed).
    pub(super) fn unpark(&mut self, token: &str) -> Option<Parked> {
        let parked = self.parked.remove(token)?;
        self.parked_timers
            .remove(&(parked.deadline, token.to_string()));
        Some(parked)
    }

    /// The tokens of parked calls whose deadline is at or before `now`,
    /// their deadlines removed ([`Routes::unpark`] then takes the calls).
    pub(super) fn due_parked(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while self.parked_timers.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, token)) = self.parked_timers.pop_first() {
                due.push(token);
            }
        }
        due
    }

    /// Removes request `id` with its index entry and its deadline: an
    /// answered, failed or cancelled request leaves nothing behind.
    pub(super) fn take(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if let Some(at) = p.deadline {
            self.timers.remove(&(at, id));
        }
        if p.port != 0 {
            let key = client_key(p.port, &p.client_id);
            if self.by_client.get(&key) == Some(&id) {
                self.by_client.remove(&key);
            }
            self.count_out(p.port);
            if !self.by_principal.is_empty() {
                self.unindex_stateless(p.port, &key.1, id);
            }
        }
        Some(p)
    }

    /// [`Routes::take`] for a request that ends without its answer.
    pub(super) fn abandon(&mut self, id: u64) -> Option<Pending> {
        let p = self.take(id)?;
        self.abandoned_at = Some(Instant::now());
        Some(p)
    }

    /// The one request in flight, when an answer that does not name its
    /// id up front can only be its own: exactly one is in flight and none
    /// was abandoned in the last minute (whose late answer this could be).
    pub(super) fn sole_request(&self) -> Option<u64> {
        if self.pending.len() != 1
            || self
                .abandoned_at
                .is_some_and(|at| at.elapsed() < LATE_ANSWER_WINDOW)
        {
            return None;
        }
        self.pending.keys().next().copied()
    }

    /// The proxy id of session `port`'s request `client_id` in flight.
    pub(super) fn proxy_id(&self, port: u64, client_id: &[u8]) -> Option<u64> {
        self.by_client.get(&client_key(port, client_id)).copied()
    }

    /// Takes the requests whose deadline is at or before `now`, soonest
    /// first (their deadlines removed); also returns the next deadline.
    pub(super) fn due(&mut self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            due.push(id);
        }
        (due, self.timers.first().map(|(at, _)| *at))
    }

    /// Counts `port` in (`subscribe`) or out of the subscribers of `uri`;
    /// `true` when the child must hear of it: the first subscriber in, or
    /// the last one out.
    pub(super) fn count_subscription(&mut self, uri: &str, port: u64, subscribe: bool) -> bool {
        let subs = self.subscriptions.entry(uri.to_string()).or_default();
        let forward = if subscribe {
            subs.insert(port) && subs.len() == 1
        } else {
            subs.remove(&port) && subs.is_empty()
        };
        if subs.is_empty() {
            self.subscriptions.remove(uri);
        }
        forward
    }

    /// Forgets a detached session: its requests (late answers are then
    /// dropped), the child's requests to it, its tasks and its
    /// subscriptions. Returns the URIs nobody subscribes to any more.
    pub(super) fn forget_port(&mut self, port: u64) -> Vec<String> {
        let mine: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.port == port)
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            self.abandon(id);
        }
        self.ports.remove(&port);
        // The worker took (and refused) the child's requests to it before;
        // what is left here are the proxy's own questions.
        self.take_server_requests_of(port);
        self.tasks.release(port);
        let mut unsubscribe = Vec::new();
        self.subscriptions.retain(|uri, subs| {
            if subs.remove(&port) && subs.is_empty() {
                unsubscribe.push(uri.clone());
            }
            !subs.is_empty()
        });
        unsubscribe
    }

    /// Empties the tables of everything tied to the child (it died):
    /// returns the requests in flight, to be failed. Ports and
    /// subscriptions stay (the sessions outlive a shared child).
    pub(super) fn drain(&mut self) -> Vec<Pending> {
        self.by_client.clear();
        self.by_principal.clear();
        self.timers.clear();
        self.client_pending = 0;
        for port in self.ports.values() {
            port.in_flight.store(0, Ordering::Relaxed);
        }
        self.tasks.clear();
        self.task_inputs.clear();
        self.parked.clear();
        self.parked_timers.clear();
        // The streams that carried the child's requests stay open: they
        // may be a session's GET or legacy stream, which outlive the child.
        self.server_requests.clear();
        self.server_timers.clear();
        self.server_requests_per_port.clear();
        self.pending.drain().map(|(_, p)| p).collect()
    }
}

pub(super) enum Target<'a> {
    Request(&'a Pending),
    Port(&'a Arc<Port>),
    None,
}

/// The one place a message that relates to "the current request" can go:
/// the only client request in flight, else the only session, else nowhere.
pub(super) fn related_target(r: &Routes) -> Target<'_> {
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
pub(super) fn related_call(r: &Routes) -> Option<u64> {
    if r.client_pending != 1 {
        return None;
    }
    r.pending
        .iter()
        .find(|(_, p)| p.port != 0)
        .map(|(id, _)| *id)
}

/// The key of a client's request in `Routes::by_client`: its session and
/// its id in canonical form (`1.0` and `1` are one id).
pub(crate) fn client_key(port: u64, id: &[u8]) -> (u64, Box<[u8]>) {
    (port, jsonrpc::id_key(id).unwrap_or_else(|| id.into()))
}

/// Who sent a `--stateless` request, and its id: the principal (`None`:
/// anonymous, everyone when no authentication is configured) and the id
/// in canonical form.
pub(super) type PrincipalKey = (Option<Arc<str>>, Box<[u8]>);

/// The [`PrincipalKey`] of request `canonical_id` on `port`, if `port` is
/// a `--stateless` POST's (a session-era port with no session).
fn principal_key(port: &Port, canonical_id: &[u8]) -> Option<PrincipalKey> {
    (port.kind == PortKind::Session && &*port.label == STATELESS_LABEL)
        .then(|| (port.principal(), canonical_id.into()))
}

/// `notifications/cancelled` for the proxy's request `id`.
pub(super) fn cancelled_notification(id: u64, reason: &str) -> Vec<u8> {
    // Invariant: a Value of a string and an integer serializes.
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": id, "reason": reason },
    }))
    .expect("Value serializes")
}

/// The proxy id a child's answer (or progress token, or subscription id)
/// names: a JSON number equal to an integer the proxy issued, however
/// JSON writes that number (`2`, `2.0`, `2e0`, `20E-1`), judged by the
/// same canonical form as a client's ids ([`jsonrpc::id_key`]). Nothing
/// else: the proxy writes its ids as numbers, and the string `"2"` is
/// another id (JSON-RPC 2.0 §5: the response's id is the request's);
/// `+2`, ` 2` and `02` are no JSON at all.
pub(crate) fn parse_proxy_id(raw: &[u8]) -> Option<u64> {
    if !raw
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
    {
        return None;
    }
    let canonical = jsonrpc::id_key(raw)?;
    std::str::from_utf8(&canonical).ok()?.parse().ok()
}

/// Replaces `params._meta.progressToken` with the proxy id; returns the
/// client's original token. Only that value is replaced, byte for byte;
/// messages without one pass as they are (a byte search first keeps tool
/// arguments from being scanned twice).
pub(crate) fn rewrite_progress_token(frame: Frame, id: u64) -> (Frame, Option<Box<[u8]>>) {
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
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;

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
        assert_eq!(parse_proxy_id(b"\"x\""), None);
        assert_eq!(parse_proxy_id(b"17.0"), Some(17));
        assert_eq!(parse_proxy_id(b"1.7e1"), Some(17));
        assert_eq!(parse_proxy_id(b"170e-1"), Some(17));
        assert_eq!(parse_proxy_id(b"1.7E+1"), Some(17));
        for other in [
            &b"17.5"[..],
            b"-0",
            b"0.0",
            b"1e400",
            b"{\"n\":17}",
            b"[17]",
        ] {
            assert!(
                parse_proxy_id(other).is_none_or(|id| id == 0),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// Regression (review): `"17"`, `+17`, ` 17` and `017` all named proxy
    /// id 17 (`str::parse` after trimming quotes), while a client's ids are
    /// matched by `jsonrpc::id_key`, which tells a string from a number:
    /// an answer whose id the proxy never issued reached request 17.
    #[test]
    fn only_the_issued_number_names_a_proxy_id() {
        for other in [
            &b"\"17\""[..],
            b"\"\"17\"\"",
            b"+17",
            b" 17",
            b"17 ",
            b"017",
            b"-017",
            b"0017.0",
            b"17.",
            b".17e2",
            b"1.7e",
            b"1.7e+",
            b"-17",
        ] {
            assert_eq!(
                parse_proxy_id(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert_eq!(parse_proxy_id(b"0"), Some(0));
        assert_eq!(parse_proxy_id(b"0.17e2"), Some(17));
    }

    fn pending(
        port: u64,
        client_id: &[u8],
    ) -> (Pending, oneshot::Receiver<crate::jsonrpc::Message>) {
        let (tx, rx) = oneshot::channel();
        let p = Pending {
            port,
            modern: false,
            fill: Fill::None,
            stamp: None,
            tasks: TaskAnswer::None,
            client_id: client_id.into(),
            token: None,
            retry: None,
            parkable: false,
            deadline: None,
            reply: Reply::Once(tx),
        };
        (p, rx)
    }

    fn with_ports(keys: &[u64]) -> Routes {
        let mut r = Routes::new(16);
        for &k in keys {
            r.ports.insert(
                k,
                Port::new(k, format!("s{k}").into(), super::super::PortKind::Session),
            );
        }
        r
    }

    #[test]
    fn only_a_lone_request_with_no_late_answer_due_may_be_guessed() {
        let mut r = with_ports(&[1]);
        assert_eq!(r.sole_request(), None, "nothing in flight");
        assert!(r.admit(1, pending(1, b"1").0, None).is_ok());
        assert_eq!(r.sole_request(), Some(1));
        assert!(r.admit(2, pending(1, b"2").0, None).is_ok());
        assert_eq!(r.sole_request(), None, "two in flight");
        // Answered: no late answer can come.
        assert!(r.take(2).is_some());
        assert_eq!(r.sole_request(), Some(1));
        // Abandoned: its late answer could come, so none is guessed.
        assert!(r.admit(3, pending(1, b"3").0, None).is_ok());
        assert!(r.abandon(1).is_some());
        assert_eq!(r.sole_request(), None);
        r.abandoned_at = Some(Instant::now() - LATE_ANSWER_WINDOW);
        assert_eq!(r.sole_request(), Some(3), "after the window");
    }

    #[test]
    fn an_answered_request_leaves_no_index_entry_and_no_timer() {
        let mut r = with_ports(&[1]);
        let at = Instant::now() + std::time::Duration::from_secs(5);
        assert!(matches!(
            r.admit(7, pending(1, b"\"a\"").0, Some(at)),
            Ok(true)
        ));
        assert_eq!(r.proxy_id(1, b"\"a\""), Some(7));
        assert_eq!(r.client_pending, 1);
        let p = r.take(7).expect("in flight");
        assert_eq!(&*p.client_id, b"\"a\"");
        assert!(r.take(7).is_none());
        assert!(r.by_client.is_empty() && r.timers.is_empty() && r.pending.is_empty());
        assert_eq!(r.client_pending, 0);
    }

    #[test]
    fn a_reused_client_id_is_refused_even_written_differently() {
        let mut r = with_ports(&[1, 2]);
        assert!(r.admit(1, pending(1, b"1").0, None).is_ok());
        // `1.0` is the id `1`: refused while the first is in flight.
        let (e, back) = *r.admit(2, pending(1, b"1.0").0, None).unwrap_err();
        assert!(matches!(e, UpstreamError::DuplicateId(_)));
        assert_eq!(&*back.client_id, b"1.0");
        // Another session may use the same id.
        assert!(r.admit(3, pending(2, b"1").0, None).is_ok());
        assert_eq!(r.client_pending, 2);
        assert!(!r.pending.contains_key(&2));
    }

    #[test]
    fn a_request_for_a_detached_session_is_refused_but_the_proxys_own_are_not() {
        let mut r = with_ports(&[]);
        let (e, _) = *r.admit(1, pending(9, b"1").0, None).unwrap_err();
        assert!(matches!(e, UpstreamError::SessionEnded));
        // Port 0 is the proxy's own requests: not a client's, not counted.
        assert!(r.admit(2, pending(0, b"2").0, None).is_ok());
        assert_eq!(r.client_pending, 0);
        assert!(r.take(2).is_some());
    }

    #[test]
    fn deadlines_fall_due_soonest_first_and_name_the_next() {
        let mut r = with_ports(&[1]);
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        assert!(matches!(
            r.admit(1, pending(1, b"1").0, Some(now + s(3))),
            Ok(true)
        ));
        assert!(matches!(
            r.admit(2, pending(1, b"2").0, Some(now + s(1))),
            Ok(true)
        ));
        // Later than the soonest: the timer need not be woken.
        assert!(matches!(
            r.admit(3, pending(1, b"3").0, Some(now + s(5))),
            Ok(false)
        ));
        r.take(1);
        let (due, next) = r.due(now + s(4));
        assert_eq!(due, [2]);
        assert_eq!(next, Some(now + s(5)));
        assert_eq!(r.due(now).0, Vec::<u64>::new());
    }

    #[test]
    fn subscriptions_reach_the_child_once_per_uri() {
        let mut r = with_ports(&[1, 2]);
        assert!(r.count_subscription("file:///a", 1, true));
        assert!(!r.count_subscription("file:///a", 2, true));
        assert!(!r.count_subscription("file:///a", 2, true));
        assert!(!r.count_subscription("file:///a", 1, false));
        // Unsubscribing what was never subscribed tells the child nothing.
        assert!(!r.count_subscription("file:///b", 1, false));
        assert!(r.count_subscription("file:///a", 2, false));
        assert!(r.subscriptions.is_empty());
    }

    #[test]
    fn a_forgotten_session_leaves_nothing_and_frees_its_last_subscriptions() {
        let mut r = with_ports(&[1, 2]);
        let at = Instant::now() + std::time::Duration::from_secs(5);
        assert!(r.admit(1, pending(1, b"1").0, Some(at)).is_ok());
        assert!(r.admit(2, pending(2, b"1").0, None).is_ok());
        r.count_subscription("file:///shared", 1, true);
        r.count_subscription("file:///shared", 2, true);
        r.count_subscription("file:///mine", 1, true);
        let request = ServerRequest {
            raw_id: b"\"q\"".to_vec().into(),
            port: 1,
            outlet: None,
            answer: None,
            deadline: Some(at),
        };
        assert!(
            r.admit_server_request(b"\"q\"".to_vec().into(), request, 8, 8)
                .is_ok()
        );
        // Regression: the proxy's question under an id a child's request
        // holds was refused as --max-server-requests being full.
        let question = ServerRequest {
            raw_id: b"\"q\"".to_vec().into(),
            port: 1,
            outlet: None,
            answer: None,
            deadline: None,
        };
        assert_eq!(
            r.admit_question(b"\"q\"".to_vec().into(), question, 8, 8),
            Err(Unasked::IdInUse)
        );
        let unsubscribe = r.forget_port(1);
        assert_eq!(unsubscribe, ["file:///mine"]);
        assert!(!r.ports.contains_key(&1));
        assert!(!r.pending.contains_key(&1) && r.pending.contains_key(&2));
        assert!(r.timers.is_empty() && r.server_requests.is_empty());
        assert!(r.server_timers.is_empty() && r.server_requests_per_port.is_empty());
        assert_eq!(r.client_pending, 1);
        assert_eq!(r.proxy_id(2, b"1"), Some(2));
    }

    #[test]
    fn requests_to_clients_are_bounded_per_session_and_in_all_and_fall_due() {
        let mut r = with_ports(&[1, 2, 3]);
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        let request = |port, at| ServerRequest {
            raw_id: b"0".to_vec().into(),
            port,
            outlet: None,
            answer: None,
            deadline: Some(at),
        };
        let key = |n: u32| -> Box<[u8]> { n.to_string().into_bytes().into() };
        // Per session 2, in all 3.
        assert!(
            r.admit_server_request(key(1), request(1, now + s(1)), 2, 3)
                .is_ok()
        );
        assert!(
            r.admit_server_request(key(2), request(1, now + s(2)), 2, 3)
                .is_ok()
        );
        assert_eq!(
            r.admit_server_request(key(3), request(1, now), 2, 3),
            Err(Crowded::Session)
        );
        assert!(
            r.admit_server_request(key(4), request(2, now + s(3)), 2, 3)
                .is_ok()
        );
        assert_eq!(
            r.admit_server_request(key(5), request(3, now), 2, 3),
            Err(Crowded::Child)
        );
        // An answered one frees its session's room.
        assert!(r.take_server_request(&key(1)).is_some());
        assert!(
            r.admit_server_request(key(6), request(1, now + s(5)), 2, 3)
                .is_ok()
        );
        let due = r.due_server_requests(now + s(3));
        assert_eq!(due.len(), 2, "the ones due at 2 s and 3 s");
        assert_eq!(r.server_requests_per_port.get(&2), None);
        assert_eq!(r.take_server_requests_of(1).len(), 1);
        assert!(r.server_requests.is_empty() && r.server_timers.is_empty());
        assert!(r.server_requests_per_port.is_empty());
    }

    #[test]
    fn the_related_call_is_the_only_client_call_in_flight() {
        let mut r = with_ports(&[1, 2]);
        assert!(matches!(related_target(&r), Target::None));
        assert!(r.admit(5, pending(0, b"5").0, None).is_ok());
        assert_eq!(
            related_call(&r),
            None,
            "the proxy's own requests do not count"
        );
        assert!(r.admit(6, pending(1, b"1").0, None).is_ok());
        assert_eq!(related_call(&r), Some(6));
        assert!(matches!(related_target(&r), Target::Request(p) if p.port == 1));
        assert!(r.admit(7, pending(2, b"1").0, None).is_ok());
        assert_eq!(related_call(&r), None, "two calls: ambiguous");
        r.take(6);
        r.take(7);
        r.ports.remove(&2);
        assert!(matches!(related_target(&r), Target::Port(p) if p.key == 1));
    }

    #[test]
    fn a_dead_child_fails_everything_in_flight_and_keeps_the_sessions() {
        let mut r = with_ports(&[1]);
        let at = Instant::now() + std::time::Duration::from_secs(5);
        assert!(r.admit(1, pending(1, b"1").0, Some(at)).is_ok());
        assert!(r.admit(2, pending(0, b"2").0, None).is_ok());
        r.count_subscription("file:///a", 1, true);
        let failed = r.drain();
        assert_eq!(failed.len(), 2);
        assert!(r.pending.is_empty() && r.by_client.is_empty() && r.timers.is_empty());
        assert_eq!(r.client_pending, 0);
        assert!(r.ports.contains_key(&1) && r.subscriptions.contains_key("file:///a"));
    }

    #[test]
    fn each_session_counts_its_own_requests_in_flight() {
        let mut r = with_ports(&[1, 2]);
        let count = |r: &Routes, k: u64| r.ports[&k].in_flight();
        assert!(r.admit(1, pending(1, b"1").0, None).is_ok());
        assert!(r.admit(2, pending(1, b"2").0, None).is_ok());
        assert!(r.admit(3, pending(2, b"1").0, None).is_ok());
        assert!(r.admit(4, pending(0, b"4").0, None).is_ok());
        assert_eq!((count(&r, 1), count(&r, 2)), (2, 1));
        // A refused duplicate is not counted.
        assert!(r.admit(5, pending(1, b"1").0, None).is_err());
        r.take(2);
        r.take(4);
        assert_eq!((count(&r, 1), count(&r, 2)), (1, 1));
        let port2 = r.ports[&2].clone();
        r.forget_port(2);
        assert_eq!(
            port2.in_flight(),
            0,
            "a detached session has nothing in flight"
        );
        r.drain();
        assert_eq!(count(&r, 1), 0);
    }

    #[test]
    fn a_parked_call_leaves_no_deadline_once_resumed_and_falls_due_otherwise() {
        let mut r = with_ports(&[]);
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        let parked = |call, at| Parked {
            server_request: b"7".to_vec().into(),
            call,
            early: None,
            deadline: at,
            wait: s(1),
            owner: None,
            call_key: None,
            asked: Vec::new(),
            method: "roots/list".into(),
            params: None,
        };
        r.park("a".into(), parked(1, now + s(1)));
        r.park("b".into(), parked(2, now + s(2)));
        assert!(r.unpark("a").is_some_and(|p| p.call == 1));
        assert!(r.unpark("a").is_none());
        assert_eq!(
            r.parked_timers.len(),
            1,
            "the resumed call's deadline went with it"
        );
        assert_eq!(r.due_parked(now + s(1)), Vec::<String>::new());
        assert_eq!(r.due_parked(now + s(3)), ["b"]);
        assert!(r.parked_timers.is_empty());
        assert!(r.unpark("b").is_some_and(|p| p.call == 2));
        r.park("c".into(), parked(3, now + s(1)));
        r.drain();
        assert!(r.parked.is_empty() && r.parked_timers.is_empty());
    }

    /// Stateless POST ports (`key`, principal), as `--stateless` makes them.
    fn with_stateless_ports(ports: &[(u64, Option<&str>)]) -> Routes {
        let mut r = Routes::new(16);
        for &(k, principal) in ports {
            let port = Port::new(k, STATELESS_LABEL.into(), PortKind::Session);
            port.set_principal(principal);
            r.ports.insert(k, port);
        }
        r
    }

    #[test]
    fn a_stateless_request_is_found_by_its_principal_and_id_only() {
        // Ports 1 and 2: Alice's POSTs; 3: Bob's; 4: anonymous; 5: a session.
        let mut r = with_stateless_ports(&[
            (1, Some("alice")),
            (2, Some("alice")),
            (3, Some("bob")),
            (4, None),
        ]);
        r.ports
            .insert(5, Port::new(5, "s5".into(), PortKind::Session));
        assert!(r.admit(10, pending(1, b"\"x\"").0, None).is_ok());
        assert!(r.admit(11, pending(5, b"7").0, None).is_ok());
        // Alice's later POST (her cancellation) finds it, by any spelling of the id.
        assert_eq!(r.stateless_request(2, b"\"x\""), Some(10));
        assert_eq!(r.stateless_request(2, b"\"\\u0078\""), Some(10));
        assert_eq!(r.stateless_request(3, b"\"x\""), None, "Bob's POST");
        assert_eq!(r.stateless_request(4, b"\"x\""), None, "an anonymous POST");
        assert_eq!(r.stateless_request(2, b"\"y\""), None, "another id");
        // A session's requests are its own (`proxy_id`), never looked up so.
        assert_eq!(r.stateless_request(1, b"7"), None);
        assert_eq!(r.stateless_request(5, b"7"), None);
        // Two of Alice's requests with one id: ambiguous, so neither.
        assert!(r.admit(12, pending(2, b"\"x\"").0, None).is_ok());
        assert_eq!(r.stateless_request(1, b"\"x\""), None);
        // Answered: the other is found again, and nothing stays behind.
        assert!(r.take(10).is_some());
        assert_eq!(r.stateless_request(1, b"\"x\""), Some(12));
        r.forget_port(2);
        assert_eq!(r.stateless_request(1, b"\"x\""), None);
        assert!(r.by_principal.is_empty(), "{:?}", r.by_principal.keys());
    }

    #[test]
    fn the_stateless_index_holds_only_requests_in_flight() {
        let mut r = with_stateless_ports(&[(1, None), (2, None)]);
        for (id, port, client_id) in [(1, 1, b"1"), (2, 1, b"2"), (3, 2, b"1")] {
            assert!(r.admit(id, pending(port, client_id).0, None).is_ok());
        }
        assert_eq!(r.by_principal.values().map(Vec::len).sum::<usize>(), 3);
        assert!(r.abandon(2).is_some());
        assert_eq!(r.by_principal.values().map(Vec::len).sum::<usize>(), 2);
        r.drain();
        assert!(r.by_principal.is_empty());
    }

    #[test]
    fn cancellation_names_the_proxy_id() {
        let v: Value = serde_json::from_slice(&cancelled_notification(12, "gone")).unwrap();
        assert_eq!(v["method"], "notifications/cancelled");
        assert_eq!(v["params"]["requestId"], 12);
        assert_eq!(v["params"]["reason"], "gone");
    }
}
