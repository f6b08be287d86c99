//! Prometheus metrics: what the proxy counts and how `GET /metrics` shows it.
//!
//! Owns: the registry and every metric in it, the label types (each a
//! closed set, so no label can grow with input: no session ids, no tool
//! arguments, no raw paths), and the response body wrapper that counts
//! bytes out, times POSTs and tracks open SSE streams. It does not own the
//! route (that is [`crate::http`]) nor decide what an error means.
//!
//! There is no global state: [`Metrics`] is created with the
//! [`crate::http::App`] and handed down; children get a [`ChildMetrics`]
//! handle through their [`crate::child::ChildSpec`]. A `ChildMetrics` made
//! with `Default` counts into metrics that no registry exports, which is
//! what unit tests and library users who build a `ChildSpec` by hand get.
//!
//! The text is the Prometheus exposition format 0.0.4, written by the
//! `prometheus-client` crate (counters get the `_total` suffix there).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// A response body as the HTTP layer builds it (the same type as
/// `crate::sse::Body`; named here so that metrics sit below the streams
/// that count into them).
type Body = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Which protocol era a request belongs to, as far as its path and
/// headers tell (the body is not parsed for this).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Era {
    /// HTTP+SSE (2024-11-05): the `--sse-path` and `--message-path` endpoints.
    Legacy,
    /// Streamable HTTP with sessions (2025-03-26 … 2025-11-25).
    Streamable,
    /// Stateless Streamable HTTP (2026-07-28): `MCP-Protocol-Version` says so.
    Modern,
    /// Not an MCP endpoint: `/health`, `/ready`, `/metrics`, unknown paths.
    None,
}

impl Era {
    const COUNT: usize = 4;

    fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "2024-11-05",
            Era::Streamable => "session",
            Era::Modern => "2026-07-28",
            Era::None => "none",
        }
    }
}

/// The HTTP method, folded into a closed set.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
    /// `OPTIONS` (CORS preflight).
    Options,
    /// Anything else.
    Other,
}

impl HttpMethod {
    const COUNT: usize = 5;

    /// Folds a request's method.
    pub fn of(m: &http::Method) -> HttpMethod {
        match *m {
            http::Method::GET => HttpMethod::Get,
            http::Method::POST => HttpMethod::Post,
            http::Method::DELETE => HttpMethod::Delete,
            http::Method::OPTIONS => HttpMethod::Options,
            _ => HttpMethod::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Other => "other",
        }
    }
}

/// The response status, by class.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// 1xx and 2xx.
    Success,
    /// 3xx (the proxy sends none today).
    Redirect,
    /// 4xx: the client's request was refused.
    ClientError,
    /// 5xx: the proxy or the MCP server failed.
    ServerError,
}

impl Outcome {
    const COUNT: usize = 4;

    /// The class of `status`.
    pub fn of(status: http::StatusCode) -> Outcome {
        match status.as_u16() {
            0..=299 => Outcome::Success,
            300..=399 => Outcome::Redirect,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "2xx",
            Outcome::Redirect => "3xx",
            Outcome::ClientError => "4xx",
            Outcome::ServerError => "5xx",
        }
    }
}

/// Why a request was refused before reaching a handler.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key, or a wrong one (401).
    Key,
    /// A browser `Origin` that is not allowed (403).
    Origin,
    /// A `Host` that is not allowed (403, DNS rebinding).
    Host,
}

impl AuthFailure {
    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Key => "key",
            AuthFailure::Origin => "origin",
            AuthFailure::Host => "host",
        }
    }
}

/// A bound that refused a request (the response says which, with its
/// flag); counted in `limit_refusals`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Limit {
    /// `--max-body-bytes` (413).
    BodyBytes,
    /// `--body-read-timeout` (408).
    BodyReadTimeout,
    /// `--max-sessions` (503).
    Sessions,
    /// `--max-sessions-per-principal` (429).
    SessionsPerPrincipal,
    /// `--max-in-flight` of a session (429).
    InFlight,
    /// `--max-in-flight` of a principal without a session (429).
    InFlightPerPrincipal,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Limit::BodyBytes => "body_bytes",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::Sessions => "sessions",
            Limit::SessionsPerPrincipal => "sessions_per_principal",
            Limit::InFlight => "in_flight",
            Limit::InFlightPerPrincipal => "in_flight_per_principal",
        }
    }
}

/// Why the proxy answered a child's request to a client (sampling,
/// elicitation, roots) with an error itself; counted in
/// `server_requests_refused`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// No session or stream could take it.
    NoClient,
    /// Its client did not declare the capability for its method.
    NoCapability,
    /// Its session already had `--max-server-requests-per-session` waiting.
    SessionLimit,
    /// The child already had `--max-server-requests` waiting.
    ChildLimit,
    /// Its client did not answer in time.
    Expired,
    /// Its client's session ended before it answered.
    SessionEnded,
    /// The child reused the id of one of its requests still waiting.
    DuplicateId,
    /// Its id is over 1 KiB of JSON.
    LongId,
    /// Its id is null, an object, an array or a boolean.
    InvalidId,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::NoClient => "no_client",
            Refusal::NoCapability => "no_capability",
            Refusal::SessionLimit => "session_limit",
            Refusal::ChildLimit => "child_limit",
            Refusal::Expired => "expired",
            Refusal::SessionEnded => "session_ended",
            Refusal::DuplicateId => "duplicate_id",
            Refusal::LongId => "long_id",
            Refusal::InvalidId => "invalid_id",
        }
    }
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ExitReason {
    /// The proxy stopped it (session ended, shutdown).
    Stopped,
    /// It exited on its own with status 0.
    Exited,
    /// It exited on its own with a non-zero status.
    Failed,
    /// It was killed by a signal it was not sent by the proxy's stop.
    Killed,
}

impl ExitReason {
    fn as_str(self) -> &'static str {
        match self {
            ExitReason::Stopped => "stopped",
            ExitReason::Exited => "exited",
            ExitReason::Failed => "failed",
            ExitReason::Killed => "killed",
        }
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(e, self.as_str())
            }
        }
    )*};
}
label_value!(
    Era,
    HttpMethod,
    Outcome,
    AuthFailure,
    Limit,
    ExitReason,
    Refusal
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    era: Era,
    method: HttpMethod,
    outcome: Outcome,
}

impl RequestLabels {
    /// How many label sets there are.
    const COUNT: usize = Era::COUNT * HttpMethod::COUNT * Outcome::COUNT;

    /// A number of its own for each label set, below [`Self::COUNT`].
    fn index(&self) -> usize {
        (self.era as usize * HttpMethod::COUNT + self.method as usize) * Outcome::COUNT
            + self.outcome as usize
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EraLabels {
    era: Era,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: AuthFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: Limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    reason: ExitReason,
}

/// Buckets in seconds: 0.5 ms to about 65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The child-process metrics, cheap to clone; lives in every
/// [`crate::child::ChildSpec`].
#[derive(Clone, Default)]
pub struct ChildMetrics {
    spawns: Counter,
    spawn_failures: Counter,
    exits: Family<ExitLabels, Counter>,
    restarts: Counter,
    alive: Gauge,
    server_requests_refused: Family<RefusalLabels, Counter>,
}

impl std::fmt::Debug for ChildMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildMetrics")
            .field("alive", &self.alive.get())
            .finish_non_exhaustive()
    }
}

impl ChildMetrics {
    /// A child was started.
    pub fn spawned(&self) {
        self.spawns.inc();
        self.alive.inc();
    }

    /// A child could not be started.
    pub fn spawn_failed(&self) {
        self.spawn_failures.inc();
    }

    /// A started child ended.
    pub fn exited(&self, reason: ExitReason) {
        self.alive.dec();
        self.exits.get_or_create(&ExitLabels { reason }).inc();
    }

    /// A shared child was started again after it died.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// Children running now.
    pub fn alive(&self) -> i64 {
        self.alive.get()
    }

    /// The proxy answered a child's request to a client with an error.
    pub fn server_request_refused(&self, reason: Refusal) {
        self.server_requests_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }
}

/// Every metric of one proxy, and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    /// Handed to every child through its spec.
    child: ChildMetrics,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EraLabels, Histogram, fn() -> Histogram>,
    /// The members of `requests` and `latency` met so far, by their labels'
    /// index ([`RequestLabels::index`], [`Era`] as a number): the family
    /// hashes the labels under a lock on every lookup, this is an array
    /// read. Each holds a handle on the family's own metric.
    requests_seen: [OnceLock<Counter>; RequestLabels::COUNT],
    latency_seen: [OnceLock<Histogram>; Era::COUNT],
    bytes_in: Counter,
    bytes_out: Counter,
    sse_open: Gauge,
    sessions_open: Gauge,
    in_flight: Gauge,
    slow_consumer_cuts: Counter,
    resumed_past_replay: Counter,
    auth_failures: Family<AuthLabels, Counter>,
    limit_refusals: Family<LimitLabels, Counter>,
    log_lines_dropped: Counter,
    audit_records_dropped: Counter,
}

/// What `/metrics` reads from elsewhere at the time it renders (the
/// session table and the writers own these numbers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// Sessions open now.
    pub sessions_open: usize,
    /// Log lines dropped so far ([`crate::logging::dropped`]).
    pub log_lines_dropped: u64,
    /// Audit records dropped so far on the way to the audit file.
    pub audit_records_dropped: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `mcp_proxy_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mcp_proxy");
        let m = Metrics {
            child: ChildMetrics::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            requests_seen: std::array::from_fn(|_| OnceLock::new()),
            latency_seen: std::array::from_fn(|_| OnceLock::new()),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            sse_open: Gauge::default(),
            sessions_open: Gauge::default(),
            in_flight: Gauge::default(),
            slow_consumer_cuts: Counter::default(),
            resumed_past_replay: Counter::default(),
            auth_failures: Family::default(),
            limit_refusals: Family::default(),
            log_lines_dropped: Counter::default(),
            audit_records_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr was full or failing",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records that did not reach --audit-log (its queue was full or a write failed)",
            m.audit_records_dropped.clone(),
        );
        registry.register(
            "build",
            "The proxy's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled or answered now (an SSE stream counts until it ends)",
            m.in_flight.clone(),
        );
        registry.register(
            "sessions_open",
            "Session-era sessions open now (Streamable HTTP and HTTP+SSE)",
            m.sessions_open.clone(),
        );
        registry.register(
            "children_alive",
            "MCP server child processes running now",
            m.child.alive.clone(),
        );
        registry.register(
            "child_spawns",
            "MCP server child processes started",
            m.child.spawns.clone(),
        );
        registry.register(
            "child_spawn_failures",
            "MCP server child processes that could not be started",
            m.child.spawn_failures.clone(),
        );
        registry.register(
            "child_exits",
            "MCP server child processes ended, by reason (stopped by the proxy, exited 0, failed, killed by a signal)",
            m.child.exits.clone(),
        );
        registry.register(
            "child_restarts",
            "Shared child processes started again after they died",
            m.child.restarts.clone(),
        );
        registry.register(
            "server_requests_refused",
            "Requests of MCP servers to clients (sampling, elicitation, roots) the proxy answered with an error, by reason (no_client, no_capability, session_limit, child_limit, expired, session_ended, duplicate_id, long_id, invalid_id)",
            m.child.server_requests_refused.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by protocol era, HTTP method and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a POST's arrival on an MCP endpoint to the end of its response body, by protocol era",
            m.latency.clone(),
        );
        registry.register(
            "request_bytes",
            "Request body bytes read",
            m.bytes_in.clone(),
        );
        registry.register(
            "response_bytes",
            "Response body bytes written (SSE streams included)",
            m.bytes_out.clone(),
        );
        registry.register(
            "sse_streams_open",
            "Server-sent event responses open now",
            m.sse_open.clone(),
        );
        registry.register(
            "slow_consumer_cuts",
            "SSE clients cut off because their queue was full",
            m.slow_consumer_cuts.clone(),
        );
        registry.register(
            "resumed_past_replay",
            "Streams resumed (Last-Event-ID) from before what their replay buffer kept: the events between were lost, and each answer among them came back as an error",
            m.resumed_past_replay.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by the access checks, by reason (key, origin, host)",
            m.auth_failures.clone(),
        );
        registry.register(
            "limit_refusals",
            "Requests refused by a bound, by limit (body_bytes, body_read_timeout, sessions, sessions_per_principal, in_flight, in_flight_per_principal)",
            m.limit_refusals.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The handle children count into.
    pub fn child(&self) -> ChildMetrics {
        self.child.clone()
    }

    /// Request body bytes read.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// A request refused by an access check.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    /// A request refused by a bound.
    pub fn limit_refused(&self, limit: Limit) {
        self.limit_refusals
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// An SSE client was cut off as too slow.
    pub fn slow_consumer_cut(&self) {
        self.slow_consumer_cuts.inc();
    }

    /// A stream was resumed from before its replay buffer.
    pub fn resumed_past_replay(&self) {
        self.resumed_past_replay.inc();
    }

    /// A request arrived: it counts in `http_requests_in_flight` until the
    /// guard is dropped, which [`Metrics::observe_response`] leaves to the
    /// end of its body (a handler dropped halfway drops it at once).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts an answered request and wraps its body, which then counts
    /// the bytes it writes, keeps `sse_streams_open` while it lives and,
    /// for a POST, observes the time until it ends; `in_flight` ends with it.
    pub fn observe_response(
        self: &Arc<Self>,
        era: Era,
        method: HttpMethod,
        started: Instant,
        in_flight: InFlight,
        resp: http::Response<Body>,
    ) -> http::Response<Body> {
        let labels = RequestLabels {
            era,
            method,
            outcome: Outcome::of(resp.status()),
        };
        self.requests_seen[labels.index()]
            .get_or_init(|| self.requests.get_or_create(&labels).clone())
            .inc();
        let sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let timed = method == HttpMethod::Post && era != Era::None;
        if sse {
            self.sse_open.inc();
        }
        let guard = BodyGuard {
            metrics: self.clone(),
            sse,
            timed: timed.then_some((era, started)),
            _in_flight: in_flight,
        };
        resp.map(|inner| CountingBody { inner, guard }.boxed_unsync())
    }

    /// The Prometheus text of every metric, with `now`'s numbers read
    /// from their owners by the caller.
    pub fn render(&self, now: Readings) -> String {
        self.sessions_open.set(now.sessions_open as i64);
        // The owners count; these counters catch up (they never go back).
        for (counter, total) in [
            (&self.log_lines_dropped, now.log_lines_dropped),
            (&self.audit_records_dropped, now.audit_records_dropped),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        // Invariant: writing to a String cannot fail, and every label value
        // is one of the fixed strings above.
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

/// Undoes what a response body's life counted, however it ends (finished,
/// or dropped when the client went away).
struct BodyGuard {
    metrics: Arc<Metrics>,
    sse: bool,
    timed: Option<(Era, Instant)>,
    _in_flight: InFlight,
}

/// One request in `http_requests_in_flight` ([`Metrics::request_started`]).
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if self.sse {
            self.metrics.sse_open.dec();
        }
        if let Some((era, started)) = self.timed {
            let m = &self.metrics;
            m.latency_seen[era as usize]
                .get_or_init(|| m.latency.get_or_create(&EraLabels { era }).clone())
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// A response body that counts the bytes it yields.
struct CountingBody {
    inner: Body,
    guard: BodyGuard,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.guard.metrics.bytes_out.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_label_set_has_an_index_of_its_own() {
        // A variant added to one of these fails to compile here until it is
        // listed, and then the COUNT checks below tell if a COUNT is stale.
        let eras = [Era::Legacy, Era::Streamable, Era::Modern, Era::None];
        let methods = [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Delete,
            HttpMethod::Options,
            HttpMethod::Other,
        ];
        let outcomes = [
            Outcome::Success,
            Outcome::Redirect,
            Outcome::ClientError,
            Outcome::ServerError,
        ];
        for e in eras {
            match e {
                Era::Legacy | Era::Streamable | Era::Modern | Era::None => {}
            }
        }
        for m in methods {
            match m {
                HttpMethod::Get
                | HttpMethod::Post
                | HttpMethod::Delete
                | HttpMethod::Options
                | HttpMethod::Other => {}
            }
        }
        for o in outcomes {
            match o {
                Outcome::Success
                | Outcome::Redirect
                | Outcome::ClientError
                | Outcome::ServerError => {}
            }
        }
        assert_eq!(eras.len(), Era::COUNT);
        assert_eq!(methods.len(), HttpMethod::COUNT);
        assert_eq!(outcomes.len(), Outcome::COUNT);
        let mut seen = std::collections::HashSet::new();
        for era in eras {
            assert!((era as usize) < Era::COUNT);
            for method in methods {
                for outcome in outcomes {
                    let i = RequestLabels {
                        era,
                        method,
                        outcome,
                    }
                    .index();
                    assert!(i < RequestLabels::COUNT);
                    assert!(seen.insert(i), "{era:?} {method:?} {outcome:?}");
                }
            }
        }
    }

    #[test]
    fn render_has_every_metric_and_fixed_labels() {
        let m = Arc::new(Metrics::new());
        let child = m.child();
        child.spawned();
        child.spawned();
        child.exited(ExitReason::Failed);
        child.spawn_failed();
        child.restarted();
        m.auth_failure(AuthFailure::Key);
        m.bytes_in(10);
        m.slow_consumer_cut();
        m.limit_refused(Limit::InFlightPerPrincipal);
        let text = m.render(Readings {
            sessions_open: 3,
            log_lines_dropped: 4,
            audit_records_dropped: 5,
        });
        for line in [
            "mcp_proxy_sessions_open 3",
            "mcp_proxy_log_lines_dropped_total 4",
            "mcp_proxy_audit_records_dropped_total 5",
            "mcp_proxy_children_alive 1",
            "mcp_proxy_child_spawns_total 2",
            "mcp_proxy_child_spawn_failures_total 1",
            "mcp_proxy_child_exits_total{reason=\"failed\"} 1",
            "mcp_proxy_child_restarts_total 1",
            "mcp_proxy_auth_failures_total{reason=\"key\"} 1",
            "mcp_proxy_request_bytes_total 10",
            "mcp_proxy_slow_consumer_cuts_total 1",
            "mcp_proxy_limit_refusals_total{limit=\"in_flight_per_principal\"} 1",
            "mcp_proxy_sse_streams_open 0",
            "mcp_proxy_http_requests_in_flight 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("mcp_proxy_build_info{version=\""));
    }

    #[tokio::test]
    async fn a_response_body_counts_bytes_streams_and_time() {
        let m = Arc::new(Metrics::new());
        let mut resp = http::Response::new(crate::sse::full(b"hello".to_vec()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        let has = |line: &str| m.render(Readings::default()).lines().any(|l| l == line);
        let in_flight = m.request_started();
        // A handler dropped halfway (its client went away) counts no more.
        drop(m.request_started());
        assert!(has("mcp_proxy_http_requests_in_flight 1"));
        let resp = m.observe_response(
            Era::Modern,
            HttpMethod::Post,
            Instant::now(),
            in_flight,
            resp,
        );
        assert!(has("mcp_proxy_sse_streams_open 1"));
        assert!(
            has("mcp_proxy_http_requests_in_flight 1"),
            "until its body ends"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        let text = m.render(Readings::default());
        assert!(
            text.lines().any(|l| l == "mcp_proxy_sse_streams_open 0"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "mcp_proxy_http_requests_in_flight 0"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "mcp_proxy_response_bytes_total 5"),
            "{text}"
        );
        assert!(text.lines().any(|l| l
            == "mcp_proxy_http_requests_total{era=\"2026-07-28\",method=\"POST\",outcome=\"2xx\"} 1"));
        assert!(
            text.lines()
                .any(|l| l == "mcp_proxy_request_duration_seconds_count{era=\"2026-07-28\"} 1")
        );
    }

    #[test]
    fn a_default_child_handle_counts_without_a_registry() {
        let c = ChildMetrics::default();
        c.spawned();
        c.exited(ExitReason::Stopped);
        assert_eq!(c.alive(), 0);
    }
}
