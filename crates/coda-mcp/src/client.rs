//! The Coda REST client: one `reqwest` client, the bearer token, the
//! rate-limit buckets and the retry loop.
//!
//! Every request runs under the deadline of the tool call that made it.
//! 429 is retried for any request (Coda rejected it before running it), and
//! so is a connection that could not be opened (nothing was sent). A 5xx or
//! a connection lost after sending is retried only for a request marked
//! replayable ([`ApiRequest::replayable`]): reads, and writes whose replay
//! leaves the same state and the same answer. Appends, inserts and deletes
//! are not: a 502 may come after Coda applied them, and a resend would
//! duplicate content or report a false failure. Their error says so.
//! Once Coda answered a write with 2xx it was accepted, whatever happens to
//! the body: a cut answer is [`CodaError::Accepted`], never a transport
//! failure (a read's cut answer is read again instead). A whole 2xx answer
//! that is not JSON may not be Coda's (a proxy's page): its outcome is
//! unknown ([`CodaError::OutcomeUnknown`]), never claimed accepted.
//!
//! No path segment may be `.` or `..` (or a percent-encoded form of them):
//! URL normalisation would drop it and send the request to another resource
//! (`DELETE …/rows/..` is `DELETE …/rows`, the bulk delete). The wait
//! is exponential backoff with jitter, or `Retry-After` when Coda sends a
//! longer one (a `Retry-After: 0` would retry at once, in a loop); a wait
//! that would end past the deadline is not taken and the last error is
//! returned instead, so there is never a hot loop. A write that fails after
//! an attempt of it may have run is [`CodaError::OutcomeUnknown`], replayable
//! or not, so its error always says to re-read before doing anything else.
//! A write Coda refused with a 4xx, with no earlier attempt in doubt, is
//! [`CodaError::Refused`]: its error says it was not applied and what to fix.
//!
//! Errors carry Coda's own status and message ([`CodaError::Api`]) and never
//! the token: it only ever goes into the Authorization header, an answer
//! (error or 2xx) that echoes it has it replaced ([`redact_json`]), and export
//! download links (another host) are fetched without it, and only from
//! public addresses ([`PublicOnly`]). API redirects are
//! not followed ([`redirect_error`]): the request, token or not, goes only
//! to the base URL's host.

use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::budget::{
    EXPECTED_PARSE_PER_BYTE, FIRST_STEP, Held, OverBudget, ReadBudget, Reservation,
};
use super::config::{ApiToken, CodaConfig};
use super::json::{AnswerError, parse_answer};
use super::ratelimit::{RateLimiter, RequestClass};
use super::text::{TOKEN_REDACTED, redact_text};
pub use super::text::{escape_controls, model_text};

/// Retries after a 5xx (a 429 is retried until the deadline instead): a
/// server that fails three times in a row is unlikely to recover within
/// the call, and a 504 on a large list is better answered by a smaller page.
pub const MAX_SERVER_ERROR_RETRIES: u32 = 2;

pub use super::budget::MAX_RESPONSE_BYTES;

/// Whether the JSON text `bytes` holds more than `max` values (see
/// [`json_cost`]).
pub fn json_values_over(bytes: &[u8], max: usize) -> bool {
    json_cost(bytes, max).is_none()
}

/// What one value costs parsed (`size_of::<serde_json::Value>()`), in the
/// array or map that holds it.
pub const PARSED_VALUE_BYTES: usize = 32;
/// What a non-empty JSON object costs parsed beyond its members' values:
/// a `serde_json::Map` is a `BTreeMap`, whose first leaf (room for 11
/// members) is 632 bytes, however few it holds.
pub const PARSED_OBJECT_BYTES: usize = 640;
/// What each member costs beyond that: its key's `String` and its share
/// of the nodes past the first (632 bytes for 11).
pub const PARSED_MEMBER_BYTES: usize = 24 + 58;
/// serde_json's nesting limit: an answer nested deeper fails to parse.
const MAX_NESTING: usize = 128;
/// What a string costs beyond its bytes: the allocator's own. glibc's
/// smallest chunk is 32 bytes (24 usable and an 8-byte header), and a
/// larger one is its bytes plus the header rounded up to 16: never more
/// than the bytes plus 23, nor less than 32.
pub const PARSED_STRING_BYTES: usize = 32;

/// The bytes the JSON text `bytes` will take parsed as a
/// `serde_json::Value`, estimated without parsing it, or `None` when it
/// holds more than `max` values (one for the root, one per `[`, `{` and
/// `,` outside strings: each element and member, each container). A value
/// costs far more parsed than as text: a 32 MiB answer of `[0,0,…]` is 16
/// million values and took 568 MB to parse, and `{"a":0}` (8 bytes, two
/// values) takes about 690. The estimate errs high: values at
/// [`PARSED_VALUE_BYTES`] (an array's at the room its `Vec` grew to, up
/// to twice its elements), non-empty objects at [`PARSED_OBJECT_BYTES`],
/// members at [`PARSED_MEMBER_BYTES`], strings at their bytes plus
/// [`PARSED_STRING_BYTES`].
pub fn json_cost(bytes: &[u8], max: usize) -> Option<usize> {
    let mut n = 1usize;
    let (mut objects, mut members, mut strings, mut string_bytes) =
        (0usize, 0usize, 0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    // Just after a `{`: whether the object turns out empty.
    let mut opened = false;
    // The containers open at this point, up to serde_json's nesting limit
    // (a deeper answer fails to parse): an array's elements so far, `None`
    // for an object. A parsed array is a `Vec` grown by doubling, so it
    // holds room for up to twice its elements.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut depth = 0usize;
    let mut spare_slots = 0usize;
    // Just after a `[`: whether the array turns out empty.
    let mut array_opened = false;
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            string_bytes += 1;
            continue;
        }
        if opened && !b.is_ascii_whitespace() {
            opened = false;
            if b != b'}' {
                objects += 1;
            }
        }
        if array_opened && !b.is_ascii_whitespace() {
            array_opened = false;
            if b != b']'
                && let Some(Some(k)) = open.last_mut()
            {
                *k += 1;
            }
        }
        match b {
            b'"' => {
                in_string = true;
                strings += 1;
            }
            b':' => members += 1,
            b'[' | b'{' | b',' => {
                opened = b == b'{';
                array_opened = b == b'[';
                if b == b',' {
                    if let Some(Some(k)) = open.last_mut() {
                        *k += 1;
                    }
                } else {
                    depth += 1;
                    if depth <= MAX_NESTING {
                        open.push((b == b'[').then_some(0));
                    }
                }
                n += 1;
                if n > max {
                    return None;
                }
            }
            b']' | b'}' => {
                if depth <= MAX_NESTING
                    && let Some(Some(k)) = open.pop()
                    && k > 0
                {
                    spare_slots += k.next_power_of_two().max(4) - k;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    Some(
        n.saturating_add(spare_slots)
            .saturating_mul(PARSED_VALUE_BYTES)
            .saturating_add(objects.saturating_mul(PARSED_OBJECT_BYTES))
            .saturating_add(members.saturating_mul(PARSED_MEMBER_BYTES))
            .saturating_add(strings.saturating_mul(PARSED_STRING_BYTES))
            .saturating_add(string_bytes),
    )
}

/// Longest request URL sent (percent-encoded): CDNs refuse URLs past
/// 8 KiB, and the `http` crate cannot hold one of 64 KiB (reqwest's error
/// then quoted the whole URL and passed for a connection failure).
pub const MAX_URL_BYTES: usize = 16 * 1024;

/// Read a response body, refusing one over `cap` bytes as it streams in,
/// into room of the [`ReadBudget`]: the whole `Content-Length` when the
/// answer gives one (with, when it is to be `parsed`, the parse expected
/// of it, [`EXPECTED_PARSE_PER_BYTE`], at least [`FIRST_STEP`] in all, when
/// that fits the budget), else [`FIRST_STEP`] and then doubling. That first
/// reservation, taken while nothing is held for this body, may wait for
/// room until `until` (the call's deadline, or the request's timeout when
/// that ends first); growing never waits (see [`crate::budget`]). The room
/// goes back when the body is dropped, on every path.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    budget: &ReadBudget,
    until: Instant,
    parsed: bool,
) -> Result<Held<Vec<u8>>, BodyError> {
    let known = resp.content_length();
    if known.is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge(cap));
    }
    let first = match known.map(|n| n as usize) {
        Some(len) if parsed => {
            let room = len
                .saturating_mul(1 + EXPECTED_PARSE_PER_BYTE)
                .max(FIRST_STEP);
            // Waiting for more than the budget could never end; such an
            // answer's parse grows its room once read, or it is refused.
            let room = if room <= budget.max_bytes() {
                room
            } else {
                len
            };
            Held::reserve_parsed(budget, len, room, until).await
        }
        Some(len) => Held::reserve(budget, len, until).await,
        None => Held::reserve(budget, FIRST_STEP.min(cap), until).await,
    };
    let mut out = first.map_err(BodyError::Budget)?;
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if out.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        out.extend(budget, &chunk, cap).map_err(BodyError::Budget)?;
    }
    Ok(out)
}

/// Why a body could not be read.
#[derive(Debug)]
enum BodyError {
    Read(reqwest::Error),
    TooLarge(usize),
    /// No room for it in `--max-read-bytes`.
    Budget(OverBudget),
}

/// An error and its causes on one line: reqwest's own message leaves out
/// why (e.g. "operation timed out" is only in its source).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Error from talking to Coda.
#[derive(Debug, thiserror::Error)]
pub enum CodaError {
    /// Coda answered with an error status and (usually) its error body.
    #[error("Coda API error {status} {status_message}: {message}")]
    Api {
        status: u16,
        status_message: String,
        message: String,
    },
    /// The client-side bucket would only free a slot after the deadline.
    #[error("rate limit: no {class:?} request slot before the call deadline (next in {wait:?})")]
    LocalRateLimit { class: RequestClass, wait: Duration },
    /// The tool call's deadline passed (the duration is the time spent on
    /// this request, which may be none: an earlier one used the time up).
    #[error("the call deadline passed ({0:?} into {1})")]
    DeadlineExceeded(Duration, String),
    /// Coda could not be reached or the connection failed.
    #[error("could not reach Coda: {}", with_causes(.0))]
    Transport(#[source] reqwest::Error),
    /// Coda answered 2xx with something that is not the expected JSON.
    #[error("unexpected response from Coda (HTTP {status}): {reason}")]
    InvalidResponse { status: u16, reason: String },
    /// An export download link returned an error document or failed.
    #[error("export download failed: {0}")]
    Download(String),
    /// An id or name that would change the URL's path (`.`, `..`, or an
    /// empty one: `…/pages/` is `…/pages` to a server that trims a slash).
    #[error(
        "invalid id or name {0:?}: an empty one, `.` and `..` (also percent-encoded) cannot name a Coda object"
    )]
    InvalidSegment(String),
    /// The request's URL would be longer than [`MAX_URL_BYTES`] (an id,
    /// name or filter of that size): it is not sent.
    #[error(
        "the request's URL would be {0} bytes (at most {MAX_URL_BYTES}): an id, name or filter this long cannot be sent to Coda"
    )]
    UrlTooLong(usize),
    /// Coda's answer (an API body, an export, its inflated text) found no
    /// room in the budget of answers held at once (`--max-read-bytes`): it
    /// was not read whole. Only a read's: a write answered 2xx is
    /// [`CodaError::Accepted`] instead, and an error answer only loses its
    /// message. Retrying later, or asking for less, fits it.
    #[error(
        "Coda's answer was not read: {0}. This is temporary (answers give their room back as their calls finish): retry the call in a moment, and ask for less (a smaller limit or page, fewer columns) so that the answer fits"
    )]
    OverBudget(OverBudget),
    /// The request names a doc outside the `--docs` allow-list (or would
    /// create a doc under one); it was not sent.
    #[error("refused: {0}; nothing was sent to Coda")]
    NotAllowed(String),
    /// Coda accepted a write (2xx) but its answer could not be read, so
    /// its result (requestId, new ids) is lost; the write stands.
    #[error(
        "Coda accepted the write (HTTP {status}) but {reason}; it was accepted and will be applied, so do not resend it: re-read the doc to see its effect"
    )]
    Accepted { status: u16, reason: String },
    /// A write failed after it was sent (a timeout, a lost connection, a
    /// 5xx): Coda may have applied it or not. What to do next depends on
    /// whether resending it is harmless ([`ApiRequest::replayable`]).
    #[error("{source}; {}", outcome_advice(*.replayable))]
    OutcomeUnknown {
        #[source]
        source: Box<CodaError>,
        /// Sending the write again leaves the same state (set cells,
        /// rename, replace a body).
        replayable: bool,
    },
    /// Coda refused a write with a 4xx status, and no attempt of it may
    /// have run before (else it is [`CodaError::OutcomeUnknown`]): it was
    /// not applied, and the error says so and what to change, so that a
    /// model neither re-reads for an effect that cannot be there nor
    /// resends the same request.
    #[error("{source}; {}", refused_advice(source.status()))]
    Refused {
        /// The [`CodaError::Api`] error Coda answered.
        #[source]
        source: Box<CodaError>,
    },
    /// A write stopped before any attempt of it reached Coda (this
    /// server's rate limiter, the call deadline, an id that cannot be put
    /// in a URL, a connection that could not be opened), or reached it only
    /// to be answered 429 and could not be sent again: it was not applied,
    /// and the error says so, so that a model neither re-reads for an
    /// effect that cannot be there nor takes it for a refusal to fix.
    #[error("{source}; {}", not_sent_advice(source, *.rate_limited))]
    NotSent {
        /// Why it was not sent.
        #[source]
        source: Box<CodaError>,
        /// Coda answered an earlier attempt 429 (it ran none of them).
        rate_limited: bool,
    },
}

/// What a model must know after a write that never reached Coda (or was
/// only ever answered 429): it was not applied, and when to send it again.
fn not_sent_advice(source: &CodaError, rate_limited: bool) -> String {
    if rate_limited {
        return "Coda rate-limited this write request (HTTP 429) and it could not be sent again before the call deadline, so it was NOT applied: send it again later".into();
    }
    let (why, next) = match source {
        CodaError::LocalRateLimit { .. } => (
            "this server's rate limiter had no slot for it before the call deadline",
            "send it again once the wait it names has passed",
        ),
        CodaError::DeadlineExceeded(..) => (
            "the call deadline had passed",
            "send it again in a new call",
        ),
        CodaError::InvalidSegment(_) => {
            ("an id or name in it cannot be sent", "fix that id or name")
        }
        CodaError::UrlTooLong(_) => (
            "its URL would be too long",
            "shorten the id, name or filter",
        ),
        _ => (
            "no connection to Coda could be opened",
            "send it again once Coda can be reached",
        ),
    };
    format!("this write request was NOT sent to Coda ({why}), so it was NOT applied: {next}")
}

/// What a model must know after a write Coda refused (4xx): it was not
/// applied, and what would make it succeed.
fn refused_advice(status: Option<u16>) -> String {
    let fix = match status {
        Some(400) => {
            "fix what the message names (an argument, a column, a value) and send the corrected write"
        }
        Some(401) => "the API token was rejected: no write can succeed until it is replaced",
        Some(403) => {
            "the token may not make this change (no edit access to the doc, a locked page or table, or API writes turned off in the doc): resending it will not help"
        }
        Some(404) => {
            "what it names (doc, page, table, column, row) does not exist or is not visible to this token: check the ids (a list tool shows them) and send it with the right ones"
        }
        Some(409) => {
            "it conflicts with the doc's current state: re-read what it changes and send a write that fits"
        }
        Some(410) => "what it names is gone: re-read the doc before writing again",
        Some(413) => "the request is too large: send it in smaller parts",
        Some(422) => {
            "Coda could not process it as sent: fix what the message names and send the corrected write"
        }
        Some(429) => {
            "Coda rate-limited it (HTTP 429) and no retry fitted before the call deadline: send it again later, after the wait named above if there is one"
        }
        Some(300..=399) => {
            "the answer was a redirect, which is not followed: the API base URL (--api-base-url) must be corrected before any write can succeed"
        }
        _ => "fix what the message names before sending it again",
    };
    let status = status.map_or_else(String::new, |s| format!(" (HTTP {s})"));
    format!("Coda refused this write request{status}, so it was NOT applied: {fix}")
}

/// What a model must do after a write whose outcome is unknown: always
/// re-read first; resend only what is safe to resend.
fn outcome_advice(replayable: bool) -> &'static str {
    if replayable {
        "Coda did not confirm this write: it may have been applied or not. Re-read what it changes before retrying (retrying is safe: it sets the same values again)"
    } else {
        "the write may have been applied: re-read to check, do not resend it blindly (it would be applied twice)"
    }
}

impl CodaError {
    /// Whether the request may have been applied although it failed: it
    /// reached Coda and cannot be known to have been refused.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            CodaError::OutcomeUnknown { .. } | CodaError::Accepted { .. }
        )
    }

    /// The HTTP status Coda returned, if this is an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            CodaError::Api { status, .. } => Some(*status),
            CodaError::OutcomeUnknown { source, .. } | CodaError::Refused { source } => {
                source.status()
            }
            _ => None,
        }
    }
}

/// One request to the Coda API, relative to the base URL.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// Path segments, each percent-encoded on the way out (names may contain `/`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub class: RequestClass,
    /// Safe to send again after a 5xx or a connection lost mid-request:
    /// true for GET, opted into with [`ApiRequest::replayable`] by writes
    /// whose replay changes nothing (set cells, rename, replace a body).
    pub replayable: bool,
    /// Changes something in Coda: any method but GET, unless marked
    /// [`ApiRequest::as_read`]. A write's error says whether it was applied,
    /// and sending one is recorded for the tool call ([`crate::call`]).
    pub write: bool,
    /// A write Coda queues: its answer (a `DocumentMutateResponse`) always
    /// carries the `requestId` to poll. Set with [`ApiRequest::queued`].
    pub queued: bool,
}

impl ApiRequest {
    pub fn new(method: Method, segments: &[&str]) -> Self {
        let class = match method {
            Method::GET => RequestClass::Read,
            _ => RequestClass::Write,
        };
        Self {
            replayable: method == Method::GET,
            write: method != Method::GET,
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            class,
            queued: false,
        }
    }

    pub fn get(segments: &[&str]) -> Self {
        Self::new(Method::GET, segments)
    }

    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn query_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn class(mut self, class: RequestClass) -> Self {
        self.class = class;
        self
    }

    /// Mark a write as safe to resend (its replay leaves the same state).
    pub fn replayable(mut self) -> Self {
        self.replayable = true;
        self
    }

    /// A write Coda queues and answers with a `requestId` (a
    /// `DocumentMutateResponse`: rows, pages, buttons, publishing,
    /// automations). A 2xx answer without one (`{}`) shows nothing of the
    /// write: it is not Coda's answer to it (a proxy's, a broken Coda's),
    /// so its outcome is unknown ([`CodaError::OutcomeUnknown`]), never
    /// "accepted".
    pub fn queued(mut self) -> Self {
        self.queued = true;
        self
    }

    /// A POST that changes nothing a model reads back (starting an
    /// export): its errors are a read's, and it is no write of the call.
    pub fn as_read(mut self) -> Self {
        self.write = false;
        self
    }

    /// Whether `seg` would be removed or resolved by URL normalisation.
    fn dot_segment(seg: &str) -> bool {
        let mut s = seg.to_ascii_lowercase();
        // Decode %2e however often it was encoded (%252e, …).
        loop {
            let next = s.replace("%2e", ".").replace("%25", "%");
            if next == s {
                break;
            }
            s = next;
        }
        s == "." || s == ".."
    }

    /// The first segment that is empty, `.` or `..`, if any: each would
    /// send the request to another resource than the one it names.
    pub fn invalid_segment(&self) -> Option<&str> {
        self.segments
            .iter()
            .map(String::as_str)
            .find(|s| s.is_empty() || Self::dot_segment(s))
    }
}

/// What the attempts of one write may have done, for the error that ends them.
#[derive(Debug, Default)]
struct Sent {
    /// An attempt failed after it was sent (timeout, lost connection, 5xx).
    maybe_applied: bool,
    /// An attempt was answered 2xx (its answer then cut): accepted.
    accepted: Option<u16>,
    /// An attempt was answered 429: it reached Coda, which ran none of them.
    rate_limited: bool,
}

/// A successful answer: status and JSON body (`{}` when the body is empty).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// The room `body` holds in `--max-read-bytes` (its estimated parsed
    /// size, [`json_cost`]): given back when it is dropped, so keep it as
    /// long as the body, or most of it, is kept.
    pub room: Reservation,
}

/// The Coda API client shared by all tool calls.
#[derive(Debug)]
pub struct CodaClient {
    /// API requests: redirects are not followed (see [`redirect_error`]).
    http: reqwest::Client,
    /// Export download links (pre-signed, another host, no token): their
    /// storage may redirect, and nothing secret goes along.
    downloads: reqwest::Client,
    base: Url,
    token: ApiToken,
    limiter: RateLimiter,
    retry_base: Duration,
    retry_max: Duration,
    request_timeout: Duration,
    /// `--max-answer-values`: an answer holding more JSON values is not
    /// parsed ([`json_values_over`]).
    max_answer_values: usize,
    /// `--max-read-bytes`: room for the bodies of Coda's answers held at
    /// once, shared by every call ([`crate::budget`]).
    read_budget: ReadBudget,
    /// `--docs`: the only docs a request may name (`None`: any). Checked in
    /// [`CodaClient::send`], the one door every tool, resource and URL
    /// resolution goes through, on the request itself, so no argument
    /// spelling (`docId`, `doc_id`, a URL, a resolved link) can get around it.
    docs: Option<Vec<String>>,
}

/// Installs rustls' ring provider as the process default, which every
/// reqwest client of this crate (and of its tests and benchmarks) needs:
/// reqwest is built without a provider of its own (see Cargo.toml). A
/// second call, or a provider installed by someone else, is fine.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl CodaClient {
    pub fn new(cfg: &CodaConfig) -> Result<Self, CodaError> {
        Self::with_lookup(cfg, Lookup::System)
    }

    /// [`CodaClient::new`] with the name lookup of export downloads given
    /// (the unit tests give one that answers private addresses).
    fn with_lookup(cfg: &CodaConfig, lookup: Lookup) -> Result<Self, CodaError> {
        install_tls_provider();
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("coda-mcp/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
        };
        let http = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(CodaError::Transport)?;
        let origin = cfg.api_base_url.clone();
        // The names the operator chose (the API's host, a proxy's) may be
        // private; every other name a download reaches must resolve public.
        let mut trusted = Vec::new();
        trusted.extend(cfg.api_base_url.host_str().map(str::to_owned));
        add_proxy_hosts(&mut trusted);
        let downloads = builder()
            .dns_resolver(PublicOnly { trusted, lookup })
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if download_allowed(attempt.url(), &origin) {
                    attempt.follow()
                } else {
                    tracing::warn!(
                        to = %origin_of(attempt.url()),
                        "export download redirected to a host it may not fetch; not followed"
                    );
                    attempt.stop()
                }
            }))
            .build()
            .map_err(CodaError::Transport)?;
        Ok(Self {
            http,
            downloads,
            base: cfg.api_base_url.clone(),
            token: cfg.token.clone(),
            limiter: RateLimiter::new(cfg.rate_limit),
            retry_base: cfg.retry_base,
            retry_max: cfg.retry_max,
            request_timeout: cfg.request_timeout,
            max_answer_values: cfg.max_answer_values,
            read_budget: ReadBudget::new(cfg.max_read_bytes),
            docs: cfg.docs.clone(),
        })
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The budget of bytes of Coda's answers held at once.
    pub fn read_budget(&self) -> &ReadBudget {
        &self.read_budget
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, req: &ApiRequest) -> Url {
        let mut url = self.base.clone();
        // Each segment is encoded here, not by `path_segments_mut`: the URL
        // parser drops tabs and line breaks from what it is given (`a\tb`
        // named `ab`, `.\t.` was `..` and went one level up) and skips `.`
        // and `..` without a word; encoded, no byte can do either.
        let mut path = url.path().trim_end_matches('/').to_owned();
        for seg in &req.segments {
            path.push('/');
            push_segment(&mut path, seg);
        }
        url.set_path(&path);
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        url
    }

    /// The `--docs` allow-list applied to one request: the doc in its path
    /// (`/docs/{docId}/…`, `/analytics/docs/{docId}/…`), the doc of a URL
    /// to resolve, the `docIds` of an analytics list. A request that could
    /// reach other docs is refused: creating or copying a doc, analytics
    /// over all docs. The doc listing is filtered by the server instead.
    fn check_allowed(&self, req: &ApiRequest) -> Result<(), CodaError> {
        let Some(allowed) = &self.docs else {
            return Ok(());
        };
        let check = |id: &str| {
            if allowed.iter().any(|a| a == id) {
                Ok(())
            } else {
                Err(CodaError::NotAllowed(format!(
                    "doc {id} is not in this server's --docs allow-list"
                )))
            }
        };
        let query = |k: &'static str| {
            req.query
                .iter()
                .filter(move |(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["docs"] if req.method != Method::GET => Err(CodaError::NotAllowed(
                "--docs limits this server to the docs in its allow-list, so it cannot create new docs (copies included)".into(),
            )),
            ["docs", d, ..] => check(d),
            ["analytics", "docs"] => {
                let ids: Vec<&str> = query("docIds").flat_map(|v| v.split(',')).collect();
                if ids.is_empty() {
                    return Err(CodaError::NotAllowed(
                        "analytics over all docs would include docs outside the --docs allow-list: pass docIds".into(),
                    ));
                }
                ids.into_iter().try_for_each(|id| check(id.trim()))
            }
            ["analytics", "docs", "summary"] => Err(CodaError::NotAllowed(
                "the analytics summary covers docs outside the --docs allow-list".into(),
            )),
            ["analytics", "docs", d, ..] => check(d),
            ["resolveBrowserLink"] => query("url").try_for_each(|url| match crate::ids::doc_id(url) {
                Ok(id) => check(&id),
                Err(_) => Err(CodaError::NotAllowed(
                    "the URL names no doc, and --docs allows only the docs in its list".into(),
                )),
            }),
            _ => Ok(()),
        }
    }

    /// Send `req`, waiting for a rate-limit slot and retrying 429/5xx, all
    /// before `deadline`. A write that fails after an attempt of it may have
    /// run (a timeout, a lost connection, a 5xx) says so, whatever stopped
    /// the retries ([`CodaError::OutcomeUnknown`]); one answered 2xx is
    /// accepted whatever happens to its answer ([`CodaError::Accepted`]);
    /// one refused with a 4xx, and by no earlier attempt left in doubt, says
    /// it was not applied ([`CodaError::Refused`]).
    pub async fn send(
        &self,
        req: &ApiRequest,
        deadline: Instant,
    ) -> Result<ApiResponse, CodaError> {
        let mut sent = Sent::default();
        let result = match req.invalid_segment() {
            Some(seg) => Err(CodaError::InvalidSegment(seg.to_owned())),
            None => {
                self.check_allowed(req)?;
                let url = self.url(req);
                if url.as_str().len() > MAX_URL_BYTES {
                    Err(CodaError::UrlTooLong(url.as_str().len()))
                } else {
                    self.attempts(req, &url, deadline, &mut sent).await
                }
            }
        };
        if !req.write {
            return result;
        }
        result.map_err(|err| {
            if let Some(status) = sent.accepted {
                CodaError::Accepted {
                    status,
                    reason: format!("its answer was cut, and asking again failed ({err})"),
                }
            } else if sent.maybe_applied && !err.outcome_unknown() {
                CodaError::OutcomeUnknown {
                    source: Box::new(err),
                    replayable: req.replayable,
                }
            } else if matches!(
                err,
                CodaError::Api {
                    status: 300..=499,
                    ..
                }
            ) {
                CodaError::Refused {
                    source: Box::new(err),
                }
            } else if !sent.maybe_applied
                && matches!(
                    err,
                    CodaError::LocalRateLimit { .. }
                        | CodaError::DeadlineExceeded(..)
                        | CodaError::InvalidSegment(_)
                        | CodaError::UrlTooLong(_)
                        | CodaError::Transport(_)
                )
            {
                // A transport error that may have reached Coda set
                // `maybe_applied`: this one is a connection never opened.
                CodaError::NotSent {
                    source: Box::new(err),
                    rate_limited: sent.rate_limited,
                }
            } else {
                err
            }
        })
    }

    /// The attempts of one request, recording in `sent` what may have
    /// reached Coda.
    async fn attempts(
        &self,
        req: &ApiRequest,
        url: &Url,
        deadline: Instant,
        sent: &mut Sent,
    ) -> Result<ApiResponse, CodaError> {
        let write = req.write;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut server_errors: u32 = 0;
        loop {
            self.limiter
                .acquire(req.class, deadline)
                .await
                .map_err(|wait| CodaError::LocalRateLimit {
                    class: req.class,
                    wait,
                })?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CodaError::DeadlineExceeded(
                    started.elapsed(),
                    format!("{} {}", req.method, url.path()),
                ));
            }
            let timeout = remaining.min(self.request_timeout);
            // When reqwest cuts this request, body included: a wait for
            // room to read the answer ends by then, and by the deadline.
            let request_end = Instant::now() + timeout;
            let mut builder = self
                .http
                .request(req.method.clone(), url.clone())
                .bearer_auth(self.token.expose())
                .timeout(timeout);
            if let Some(body) = &req.body {
                builder = builder.json(body);
            }
            tracing::debug!(method = %req.method, path = url.path(), attempt, "sending coda request");
            if write {
                crate::call::note_write_sent();
            }
            let outcome = builder.send().await;
            let (err, retry_after) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_server_error() {
                        // A gateway may answer 5xx after Coda ran the request.
                        sent.maybe_applied = true;
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        sent.rate_limited = true;
                    }
                    if status.is_redirection() {
                        // 303 answers a request that was processed (RFC
                        // 9110 §15.4.4); the others say it was not handled
                        // where it was sent.
                        if status == StatusCode::SEE_OTHER {
                            sent.maybe_applied = true;
                        }
                        return Err(redirect_error(status, resp.headers(), self.token.expose()));
                    }
                    let retry_after = parse_retry_after(resp.headers());
                    // For an answer that is not JSON: what it was instead.
                    let content_type = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| model_text(&redact_text(v, self.token.expose()), 100));
                    let read = read_capped(
                        resp,
                        MAX_RESPONSE_BYTES,
                        &self.read_budget,
                        request_end,
                        true,
                    );
                    let mut bytes = match read.await {
                        Ok(b) => b,
                        Err(BodyError::Budget(over)) if status.is_success() => {
                            return Err(if write {
                                CodaError::Accepted {
                                    status: status.as_u16(),
                                    reason: format!(
                                        "its answer could not be held in memory ({over})"
                                    ),
                                }
                            } else {
                                CodaError::OverBudget(over)
                            });
                        }
                        // Refused or failed: only the error's message is lost.
                        Err(BodyError::Budget(_)) => Held::default(),
                        Err(BodyError::TooLarge(cap)) => {
                            let reason = format!("its answer is larger than {cap} bytes");
                            return Err(if status.is_success() && write {
                                CodaError::Accepted {
                                    status: status.as_u16(),
                                    reason,
                                }
                            } else {
                                CodaError::InvalidResponse {
                                    status: status.as_u16(),
                                    reason: format!(
                                        "{reason}: ask for less (a smaller limit, fewer columns)"
                                    ),
                                }
                            });
                        }
                        Err(BodyError::Read(e))
                            if status.is_success() && write && !req.replayable =>
                        {
                            return Err(CodaError::Accepted {
                                status: status.as_u16(),
                                reason: format!("its answer was cut ({})", with_causes(&e)),
                            });
                        }
                        // A read answer can be asked for again, and so can a
                        // replayable write's (a repeat changes nothing). A
                        // refusal (4xx) is not: only its message was lost.
                        Err(BodyError::Read(e)) if req.replayable && !status.is_client_error() => {
                            if status.is_success() && write {
                                sent.accepted = Some(status.as_u16());
                            }
                            let err = CodaError::Transport(e);
                            if status.is_success() || status.is_server_error() {
                                server_errors += 1;
                            }
                            if server_errors > MAX_SERVER_ERROR_RETRIES {
                                return Err(err);
                            }
                            let backoff = self.backoff(attempt);
                            let wait = retry_after
                                .map_or(backoff, |ra| ra.min(MAX_RETRY_AFTER_WAIT).max(backoff));
                            if Instant::now() + wait >= deadline {
                                return Err(err);
                            }
                            tracing::info!(attempt, ?wait, error = %err, "retrying coda request: answer cut");
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            continue;
                        }
                        Err(BodyError::Read(e)) if status.is_client_error() => {
                            // Refused before it ran; only the message is lost.
                            tracing::debug!(error = %e, "error body unreadable");
                            Default::default()
                        }
                        Err(BodyError::Read(e)) => {
                            return Err(CodaError::OutcomeUnknown {
                                source: Box::new(CodaError::Transport(e)),
                                replayable: false,
                            });
                        }
                    };
                    let max = self.max_answer_values;
                    let cost = json_cost(&bytes, max);
                    if cost.is_none() {
                        tracing::warn!(
                            status = status.as_u16(),
                            bytes = bytes.len(),
                            max,
                            "Coda's answer holds more JSON values than --max-answer-values; not parsed"
                        );
                        let reason = format!(
                            "its answer holds more than {max} JSON values (--max-answer-values)"
                        );
                        if status.is_success() && write {
                            return Err(CodaError::Accepted {
                                status: status.as_u16(),
                                reason,
                            });
                        }
                        if status.is_success() {
                            return Err(CodaError::InvalidResponse {
                                status: status.as_u16(),
                                reason: format!(
                                    "{reason}: ask for less (a smaller limit, fewer columns)"
                                ),
                            });
                        }
                        // An error's body: only its message is lost.
                        bytes = Held::default();
                    }
                    // Its parse is held beside the text until the text is
                    // dropped, and then in its place for as long as the
                    // answer is kept (`ApiResponse::room`): room free now,
                    // as any growth of a body (see `crate::budget`).
                    let parsed = cost.unwrap_or(0);
                    if let Err(over) = bytes.grow_room(&self.read_budget, bytes.len() + parsed) {
                        if status.is_success() {
                            return Err(if write {
                                CodaError::Accepted {
                                    status: status.as_u16(),
                                    reason: format!(
                                        "its answer could not be held in memory once parsed ({over})"
                                    ),
                                }
                            } else {
                                CodaError::OverBudget(over)
                            });
                        }
                        // An error's body: only its message is lost.
                        bytes = Held::default();
                    }
                    if status.is_success() {
                        return match decode_success(
                            status,
                            &bytes,
                            content_type.as_deref(),
                            self.token.expose(),
                        ) {
                            Ok(mut r) => {
                                // The text goes; its parse keeps the room.
                                r.room = std::mem::take(&mut bytes).into_room();
                                if redact_json(&mut r.body, self.token.expose()) {
                                    tracing::warn!(
                                        status = status.as_u16(),
                                        "Coda's answer contained the API token; it was replaced"
                                    );
                                }
                                if req.queued
                                    && !r.body.get("requestId").is_some_and(Value::is_string)
                                {
                                    tracing::warn!(
                                        status = status.as_u16(),
                                        "answer to a queued write has no requestId"
                                    );
                                    return Err(CodaError::OutcomeUnknown {
                                        source: Box::new(CodaError::InvalidResponse {
                                            status: status.as_u16(),
                                            reason: format!(
                                                "the answer ({}) has no requestId, which Coda's answer to this write always carries, so it shows nothing of the write and may not be Coda's",
                                                model_text(&r.body.to_string(), 100)
                                            ),
                                        }),
                                        replayable: req.replayable,
                                    });
                                }
                                Ok(r)
                            }
                            // Coda answers JSON. A whole answer that is not
                            // (a captive portal's or proxy's page, a web app
                            // at a mistyped base URL) may not come from Coda
                            // at all, so whether the write ran is unknown:
                            // not "accepted", which a cut answer is.
                            Err(e @ CodaError::InvalidResponse { .. }) if write => {
                                Err(CodaError::OutcomeUnknown {
                                    source: Box::new(e),
                                    replayable: req.replayable,
                                })
                            }
                            other => other,
                        };
                    }
                    let err = decode_error(status, &bytes, self.token.expose());
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error()
                            && req.replayable
                            && server_errors < MAX_SERVER_ERROR_RETRIES);
                    if status.is_server_error() {
                        server_errors += 1;
                    }
                    if !retryable {
                        if status.is_server_error() && !req.replayable {
                            return Err(CodaError::OutcomeUnknown {
                                source: Box::new(err),
                                replayable: false,
                            });
                        }
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => {
                    // A refused connection sent nothing; anything later may
                    // have reached Coda.
                    if !e.is_connect() {
                        sent.maybe_applied = true;
                    }
                    let safe =
                        e.is_connect() || (req.replayable && (e.is_timeout() || e.is_request()));
                    if !safe {
                        let err = CodaError::Transport(e);
                        if req.replayable {
                            return Err(err);
                        }
                        return Err(CodaError::OutcomeUnknown {
                            source: Box::new(err),
                            replayable: false,
                        });
                    }
                    (CodaError::Transport(e), None)
                }
            };
            // A `Retry-After` shorter than the backoff (`0`, a fraction) is
            // not taken as is: it would retry a refusing server in a loop.
            let backoff = self.backoff(attempt);
            let wait = retry_after.map_or(backoff, |ra| ra.min(MAX_RETRY_AFTER_WAIT).max(backoff));
            if Instant::now() + wait >= deadline {
                tracing::warn!(
                    attempt,
                    ?wait,
                    "giving up: retry would pass the call deadline"
                );
                return Err(match retry_after {
                    Some(ra) if ra > backoff => with_retry_after(err, ra),
                    _ => err,
                });
            }
            tracing::info!(attempt, ?wait, error = %err, "retrying coda request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Exponential backoff (base × 3^attempt, capped) with jitter in [50 %, 100 %].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(3u32.saturating_pow(attempt.min(10)))
            .min(self.retry_max);
        let jitter = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
        exp.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Fetch an export download link: no Authorization header (another
    /// host), gzip bodies inflated, S3-style XML error documents rejected.
    /// The text comes back [`Held`]: its room in `--max-read-bytes` (its
    /// inflated size when it was gzip) goes back when the caller drops it,
    /// which it does before sending another request (see [`crate::budget`]).
    pub async fn download(&self, link: &str, deadline: Instant) -> Result<Held<String>, CodaError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CodaError::DeadlineExceeded(
                Duration::ZERO,
                "export download".into(),
            ));
        }
        let url = Url::parse(link)
            .map_err(|_| CodaError::Download("the download link is not a URL".into()))?;
        if !download_allowed(&url, &self.base) {
            tracing::warn!(to = %origin_of(&url), "export download link not fetched");
            return Err(CodaError::Download(format!(
                "the download link points to {}, which is neither https on a public host nor the API's own host: not fetched",
                origin_of(&url)
            )));
        }
        let timeout = remaining.min(self.request_timeout);
        let request_end = Instant::now() + timeout;
        let resp = self
            .downloads
            .get(url)
            .timeout(timeout)
            .send()
            .await
            // The link is pre-signed: its query is a credential.
            // A host refused by `PublicOnly` is a connect error whose
            // causes name it.
            .map_err(|e| CodaError::Transport(e.without_url()))?;
        let status = resp.status();
        let read = read_capped(
            resp,
            MAX_RESPONSE_BYTES,
            &self.read_budget,
            request_end,
            false,
        );
        let bytes = match read.await {
            Ok(b) => b,
            Err(BodyError::Read(e)) => return Err(CodaError::Transport(e.without_url())),
            Err(BodyError::TooLarge(cap)) => {
                return Err(CodaError::Download(format!(
                    "the export is larger than {cap} bytes"
                )));
            }
            Err(BodyError::Budget(over)) => return Err(CodaError::OverBudget(over)),
        };
        let body = maybe_gunzip(bytes, MAX_RESPONSE_BYTES, &self.read_budget)?;
        let head = body.trim_start();
        if head.starts_with("<?xml") || head.starts_with("<Error>") {
            // The code is the host's text: cut and escaped like Coda's.
            let code = model_text(between(head, "<Code>", "</Code>").unwrap_or("unknown"), 100);
            return Err(CodaError::Download(format!(
                "link returned an error document (HTTP {}, code {code}); it may have expired",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(CodaError::Download(format!(
                "link returned HTTP {}",
                status.as_u16()
            )));
        }
        Ok(body)
    }
}

/// Whether an export download link (or a redirect from it) may be
/// fetched: the link comes from Coda's answer and its body goes to the
/// model, so it must not reach what only this machine can (a metadata
/// service, a local admin page). https to a host that is not a
/// [`public_ip`] literal or `localhost` is; so is the API base URL's own
/// origin (a local Coda, a test fake). A host name passes here on its name
/// alone: what it resolves to is checked by [`PublicOnly`], the resolver
/// the connection then uses.
fn download_allowed(url: &Url, api: &Url) -> bool {
    if url.scheme() == api.scheme()
        && url.host_str() == api.host_str()
        && url.port_or_known_default() == api.port_or_known_default()
    {
        return true;
    }
    if url.scheme() != "https" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => public_ip(ip),
        Err(_) => {
            let d = bare.trim_end_matches('.').to_ascii_lowercase();
            d != "localhost" && !d.ends_with(".localhost")
        }
    }
}

/// Whether `ip` is reachable from anywhere, not only from this machine or
/// its network: not loopback, unspecified ("this network", 0.0.0.0/8),
/// private (RFC 1918), shared (100.64.0.0/10), link-local (169.254.0.0/16,
/// where cloud metadata services answer; fe80::/10), unique-local
/// (fc00::/7), site-local (fec0::/10), multicast, broadcast or reserved
/// (240.0.0.0/4). An IPv6 address that carries an IPv4 one in its low
/// bits (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, which takes in
/// `::1` and `::`) is judged by the IPv4 address. NAT64 and 6to4 prefixes
/// are left to their gateways, which do not forward to private IPv4
/// space (RFC 6052 §3.1, RFC 3056).
fn public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(a == 0
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || a >= 240
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4() {
            Some(v4) => public_ip(IpAddr::V4(v4)),
            None => {
                let s0 = v6.segments()[0];
                !(v6.is_multicast()
                    || (s0 & 0xfe00) == 0xfc00
                    || (s0 & 0xffc0) == 0xfe80
                    || (s0 & 0xffc0) == 0xfec0)
            }
        },
    }
}

/// How a host name is turned into addresses.
#[derive(Clone, Copy)]
enum Lookup {
    /// The system's resolver (getaddrinfo: hosts file, DNS), through
    /// hyper-util's, the one reqwest uses for the API requests.
    System,
    /// Fixed answers (the unit tests).
    #[cfg(test)]
    Given(fn(&str) -> Vec<std::net::SocketAddr>),
}

/// The resolver of the download client: a name resolves to its
/// [`public_ip`] addresses only, and to an error when it has none. The
/// connection goes to the addresses returned here, so a name cannot pass
/// the check with one address and be connected to another (DNS
/// rebinding); redirects resolve through it too. Literal addresses never
/// reach a resolver: [`download_allowed`] checks them.
struct PublicOnly {
    /// Names resolved without the check (lowercase, as URLs give them):
    /// the API base URL's host (a local Coda, a test fake) and the HTTP(S)
    /// proxies' hosts, which the operator chose and which are often private.
    trusted: Vec<String>,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        use tower_service::Service;
        // Lowercase already: it is a URL's host.
        let name = name.as_str().to_owned();
        let trusted = self.trusted.contains(&name);
        let lookup = self.lookup;
        Box::pin(async move {
            let mut found: Vec<std::net::SocketAddr> = match lookup {
                Lookup::System => {
                    let host = name.parse().map_err(std::io::Error::other)?;
                    let addrs = hyper_util::client::legacy::connect::dns::GaiResolver::new()
                        .call(host)
                        .await?;
                    addrs.collect()
                }
                #[cfg(test)]
                Lookup::Given(f) => f(&name),
            };
            found.retain(|a| trusted || public_ip(a.ip()));
            if found.is_empty() {
                return Err(NotPublic(name).into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// A download host refused by [`PublicOnly`] (its name): the cause of
/// the connect error that [`CodaClient::download`] reports.
struct NotPublic(String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the download link's host {} resolves to no public address",
            self.0
        )
    }
}

impl std::fmt::Debug for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotPublic {}

/// Add to `hosts` the hosts of the proxies reqwest takes from the
/// environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, either case, a
/// scheme optional), read when the client is built, as reqwest reads them.
fn add_proxy_hosts(hosts: &mut Vec<String>) {
    for k in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        let Ok(mut v) = std::env::var(k) else {
            continue;
        };
        if !v.contains("://") {
            v.insert_str(0, "http://");
        }
        // Lowercase already (the URL parser's doing); an address is never
        // resolved, so only names matter.
        if let Some(h) = Url::parse(&v).ok().as_ref().and_then(Url::host_str) {
            hosts.push(h.to_owned());
        }
    }
}

/// `scheme://host[:port]` of a URL, for messages: its path and query may
/// be a credential (a pre-signed link).
fn origin_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

/// Inflate a body that starts with the gzip magic bytes (to at most `cap`
/// bytes: a small body can inflate to gigabytes); decode as UTF-8. The
/// inflated text takes room of its own in `budget` as it grows, beside the
/// gzip body's (dropped once inflated); taking it never waits, since this
/// reader holds the gzip body ([`crate::budget`]). A body that is not gzip
/// becomes the text in place, keeping its room.
pub fn maybe_gunzip(
    bytes: Held<Vec<u8>>,
    cap: usize,
    budget: &ReadBudget,
) -> Result<Held<String>, CodaError> {
    let not_utf8 = || CodaError::Download("export body is not UTF-8".into());
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return bytes.into_string().ok_or_else(not_utf8);
    }
    let mut out = Held::try_reserve(budget, FIRST_STEP.min(cap)).map_err(CodaError::OverBudget)?;
    let mut gz = flate2::read::MultiGzDecoder::new(&bytes[..]);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = gz
            .read(&mut buf)
            .map_err(|e| CodaError::Download(format!("bad gzip body: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > cap {
            return Err(CodaError::Download(format!(
                "the export inflates to more than {cap} bytes"
            )));
        }
        out.extend(budget, &buf[..n], cap)
            .map_err(CodaError::OverBudget)?;
    }
    drop(gz);
    drop(bytes);
    out.into_string().ok_or_else(not_utf8)
}

/// Push `seg` percent-encoded as one path segment: every byte but RFC
/// 3986's unreserved ones (`A-Z a-z 0-9 - . _ ~`), so nothing in it can
/// end the segment (`/`), start a query or fragment (`?`, `#`), be decoded
/// twice (`%`) or be dropped by the URL parser (tab, CR, LF). `.` and `..`
/// are refused before ([`ApiRequest::invalid_segment`]).
fn push_segment(out: &mut String, seg: &str) {
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A 3xx answer to an API request. The Coda API does not redirect, and a
/// redirect followed would turn a POST into a GET (whose 200 would pass for
/// the write's success) or send the request, its body included, to another
/// host: it is an error naming where it pointed (scheme, host and port only:
/// a link's path or query may carry a credential).
fn redirect_error(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    secret: &str,
) -> CodaError {
    let to = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| Url::parse(l).ok())
        .filter(|u| u.host_str().is_some())
        .map(|u| {
            format!(
                " to {}",
                model_text(&redact_text(&origin_of(&u), secret), 300)
            )
        })
        .unwrap_or_default();
    CodaError::Api {
        status: status.as_u16(),
        status_message: status.canonical_reason().unwrap_or("Redirect").to_owned(),
        message: format!(
            "the answer is a redirect{to}, which is not followed (the Coda API does not redirect: check --api-base-url)"
        ),
    }
}

/// Longest `Retry-After` reported (a day): past it, a value is read as
/// this long. Waits are shorter still ([`MAX_RETRY_AFTER_WAIT`]).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Longest `Retry-After` waited within a call: a longer one ends the call
/// (the error names it) rather than hold it for most of an hour.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(300);

/// `Retry-After` (RFC 9110 §10.2.3) as the wait it asks for: seconds (a
/// fraction too) or an HTTP-date, which gateways send (a date already
/// past is no wait); at most [`MAX_RETRY_AFTER`]. A negative, non-finite
/// or unreadable value is none, and the backoff applies.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    // delay-seconds (`1*DIGIT`): however many digits, at most a day. Read
    // as an f64, more than 309 digits were infinity, and so no wait.
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())));
    }
    let max = MAX_RETRY_AFTER.as_secs_f64();
    match v.parse::<f64>() {
        Ok(secs) => {
            (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(max)))
        }
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Some(wait.min(MAX_RETRY_AFTER))
        }
    }
}

/// A 429 given up on because its `Retry-After` passes the call deadline:
/// the error says how long Coda asked to wait, so that the request is not
/// sent again at once, into the same limit.
fn with_retry_after(err: CodaError, asked: Duration) -> CodaError {
    match err {
        CodaError::Api {
            status: 429,
            status_message,
            mut message,
        } => {
            // A wait read as its cap (10^20 s) is not one Coda asked for.
            let at_least = if asked >= MAX_RETRY_AFTER {
                "at least "
            } else {
                ""
            };
            message.push_str(&format!(
                " (Coda asked to wait {at_least}{} s before sending it again, which passes this call's deadline: send it after that wait)",
                asked.as_secs_f64().ceil() as u64
            ));
            CodaError::Api {
                status: 429,
                status_message,
                message,
            }
        }
        other => other,
    }
}

/// Replace `secret` (the API token) in every string and key of `v`, and
/// say whether there was any. A gateway, a debugging proxy or an echo
/// service at a mistyped base URL that echoes the request's headers in a
/// 2xx answer must not hand the token to the model: every answer becomes a
/// tool result, its text summary, or an id sent back to Coda.
fn redact_json(v: &mut Value, secret: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    match v {
        Value::String(s) if s.contains(secret) => {
            *s = s.replace(secret, TOKEN_REDACTED);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, x| redact_json(x, secret) | found),
        Value::Object(o) if o.keys().any(|k| k.contains(secret)) => {
            for (k, mut x) in std::mem::take(o) {
                redact_json(&mut x, secret);
                o.insert(k.replace(secret, TOKEN_REDACTED), x);
            }
            true
        }
        Value::Object(o) => o
            .values_mut()
            .fold(false, |found, x| redact_json(x, secret) | found),
        _ => false,
    }
}

/// A 2xx answer's JSON body (`{}` when empty); `content_type` names what
/// came instead when it is not JSON. `secret` (the API token) is replaced
/// in the path of a member it repeats.
fn decode_success(
    status: StatusCode,
    bytes: &[u8],
    content_type: Option<&str>,
    secret: &str,
) -> Result<ApiResponse, CodaError> {
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        parse_answer(bytes, secret).map_err(|e| CodaError::InvalidResponse {
            status: status.as_u16(),
            reason: match e {
                AnswerError::Syntax(e) => match content_type {
                    Some(ct) => format!("body is not JSON ({ct}): {e}"),
                    None => format!("body is not JSON: {e}"),
                },
                repeated @ AnswerError::Repeated { .. } => {
                    tracing::warn!(
                        status = status.as_u16(),
                        error = %repeated,
                        "Coda's answer repeats a member; not used"
                    );
                    format!(
                        "{repeated}; it is not Coda's kind of answer and nothing was taken from it"
                    )
                }
            },
        })?
    };
    // Every answer of the Coda API is an object; anything else is not
    // Coda's (and cannot be a tool's structuredContent, which MCP requires
    // to be an object).
    if !body.is_object() {
        let kind = match &body {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(CodaError::InvalidResponse {
            status: status.as_u16(),
            reason: format!("the body is JSON but not a JSON object ({kind})"),
        });
    }
    Ok(ApiResponse {
        status: status.as_u16(),
        body,
        room: Reservation::default(),
    })
}

/// Longest `message` of a Coda error carried into an error (characters).
pub const ERROR_MESSAGE_CAP: usize = 1000;
/// Longest `statusMessage`, and each part (path, message) of a validation
/// error, carried into an error (characters).
pub const ERROR_PART_CAP: usize = 200;

/// Coda's error body is `{statusCode, statusMessage, message}`; fall back to
/// the reason phrase when it is missing or not JSON. Each part is cut to
/// [`ERROR_MESSAGE_CAP`] or [`ERROR_PART_CAP`] characters, and `secret`
/// (the API token) is replaced wherever it appears: a gateway or a broken
/// Coda that echoes the request's headers in its error must not hand the
/// token to the model.
fn decode_error(status: StatusCode, bytes: &[u8], secret: &str) -> CodaError {
    let reason = status.canonical_reason().unwrap_or("Error").to_owned();
    // An error body that repeats a member is not read: its message would
    // be one of two (the text, shown when short, holds both).
    let parsed: Option<Value> = parse_answer(bytes, secret).ok();
    let redact = |s: &str| redact_text(s, secret);
    let field = |k: &str, max: usize| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(|s| model_text(&redact(s), max))
    };
    let status_message = field("statusMessage", ERROR_PART_CAP).unwrap_or_else(|| reason.clone());
    let mut message = field("message", ERROR_MESSAGE_CAP).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if text.is_empty() || text.len() > 300 {
            reason.clone()
        } else {
            escape_controls(&redact(text)).into_owned()
        }
    });
    // 400s carry per-field reasons in codaDetail.validationErrors.
    let details: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.pointer("/codaDetail/validationErrors"))
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .take(10)
                .filter_map(|e| {
                    let msg = e.get("message").and_then(Value::as_str)?;
                    let msg = model_text(&redact(msg), ERROR_PART_CAP);
                    Some(match e.get("path").and_then(Value::as_str) {
                        Some(p) if !p.is_empty() => {
                            format!("{}: {msg}", model_text(&redact(p), ERROR_PART_CAP))
                        }
                        _ => msg,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if !details.is_empty() {
        message = format!("{message} ({})", details.join("; "));
    }
    if message.contains(" more characters)") || status_message.contains(" more characters)") {
        tracing::warn!(
            status = status.as_u16(),
            bytes = bytes.len(),
            "Coda's error message was cut to {ERROR_MESSAGE_CAP} characters"
        );
    }
    CodaError::Api {
        status: status.as_u16(),
        status_message,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_redacted_whatever_its_case() {
        assert_eq!(
            redact_text("https://ab-cd.example", "AB-CD"),
            "https://[API token].example"
        );
        assert_eq!(
            redact_text("x AB-CD y ab-cd", "ab-cd"),
            "x [API token] y [API token]"
        );
        assert_eq!(redact_text("nothing", "ab-cd"), "nothing");
        assert_eq!(redact_text("ünïcode ab-cd", "AB-CD"), "ünïcode [API token]");
    }

    fn retry_after(v: &str) -> Option<Duration> {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
        parse_retry_after(&h)
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_ignores_nonsense() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(retry_after("1e400"), None);
        assert_eq!(retry_after("-3"), None);
        assert_eq!(retry_after("NaN"), None);
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after("1e300"), Some(MAX_RETRY_AFTER));
        // Regression (fuzz target retry_after): delay-seconds of more
        // digits than an f64 holds read as infinity, so as no wait at all.
        assert_eq!(retry_after(&"9".repeat(400)), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after(&format!("{}129929534305138280", "0".repeat(300))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_after(&format!("{}7", "0".repeat(400))),
            Some(Duration::from_secs(7))
        );
        // A date already past is no wait; one ahead is the time to it.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let ahead = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(90));
        let wait = retry_after(&ahead).unwrap();
        assert!(
            wait > Duration::from_secs(85) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        let far = httpdate::fmt_http_date(
            std::time::SystemTime::now() + Duration::from_secs(10 * 86_400),
        );
        assert_eq!(retry_after(&far), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn error_body_keeps_codas_message() {
        let err = decode_error(
            StatusCode::NOT_FOUND,
            br#"{"statusCode":404,"statusMessage":"Not Found","message":"Page not found"}"#,
            "secret",
        );
        assert_eq!(
            err.to_string(),
            "Coda API error 404 Not Found: Page not found"
        );
    }

    #[test]
    fn validation_details_are_kept() {
        let err = decode_error(
            StatusCode::BAD_REQUEST,
            br#"{"statusCode":400,"statusMessage":"Bad Request","message":"Invalid request","codaDetail":{"validationErrors":[{"path":"rows[0].cells[1].value","message":"Expected a number"}]}}"#,
            "secret",
        );
        assert_eq!(
            err.to_string(),
            "Coda API error 400 Bad Request: Invalid request (rows[0].cells[1].value: Expected a number)"
        );
    }

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for bad in [".", "..", "%2e", "%2E%2e", "%252e%252E", ".%2e"] {
            let req = ApiRequest::get(&["docs", "d", "tables", bad]);
            assert_eq!(req.invalid_segment(), Some(bad), "{bad}");
        }
        assert_eq!(
            ApiRequest::get(&["docs", "d", "pages", ""]).invalid_segment(),
            Some("")
        );
        for good in ["...", "a.b", ".hidden", "Q1 / Q2"] {
            assert!(ApiRequest::get(&["docs", good]).invalid_segment().is_none());
        }
    }

    /// Regression: json_cost counted an array's elements at 32 bytes each,
    /// but serde_json grows the `Vec` by doubling: 100,000 numbers took
    /// 4,194,320 bytes parsed (131,072 slots, measured with a counting
    /// allocator) against an estimate of 3,200,032, so an answer of
    /// arrays was counted in --max-read-bytes at as little as half of
    /// what it took.
    #[test]
    fn an_arrays_estimate_counts_the_room_its_vec_grows_to() {
        let numbers = format!("[{}]", vec!["0"; 100_000].join(","));
        let cost = json_cost(numbers.as_bytes(), usize::MAX).unwrap();
        assert!(cost >= 131_072 * PARSED_VALUE_BYTES, "{cost}");
        // Five elements: room for eight; nested arrays each their own.
        let five = json_cost(b"[1,2,3,4,5]", usize::MAX).unwrap();
        assert_eq!(five, (1 + 8) * PARSED_VALUE_BYTES);
        let nested = json_cost(b"[[1,2,3,4,5], [], [\"a,b]\"]]", usize::MAX).unwrap();
        // root + 3 elements (room for 4) + 5 (room for 8) + 1 (room for 4).
        assert!(nested >= (1 + 4 + 8 + 4) * PARSED_VALUE_BYTES, "{nested}");
        // Nesting past serde_json's limit costs no memory to scan.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(json_cost(deep.as_bytes(), usize::MAX).is_some());
    }

    /// Regression: a string was estimated at its bytes plus 16, but glibc
    /// hands out at least 32 bytes (its smallest chunk) and a larger one
    /// rounded up with its 8-byte header: 100,000 strings of 2 to 6 bytes
    /// took 7,394,320 bytes parsed against an estimate of 6,483,226 (a
    /// counting allocator with glibc's chunk sizes).
    #[test]
    fn a_strings_estimate_is_at_least_what_the_allocator_hands_out() {
        let base = json_cost(b"[0]", usize::MAX).unwrap();
        for len in 1..=200 {
            let text = format!("[\"{}\"]", "x".repeat(len));
            let cost = json_cost(text.as_bytes(), usize::MAX).unwrap() - base;
            let chunk = ((len + 8 + 15) & !15).max(32);
            assert!(cost >= chunk, "{len} bytes: {cost} < {chunk}");
        }
    }

    #[test]
    fn json_values_are_counted_outside_strings() {
        assert!(!json_values_over(br#"{"a":[1,2,3]}"#, 5));
        assert!(json_values_over(br#"{"a":[1,2,3],"b":{}}"#, 5));
        // Commas, brackets and escaped quotes inside strings are text.
        assert!(!json_values_over(br#"{"a":"[,{,\",[,]"}"#, 2));
        assert!(json_values_over(
            &[b"[".as_slice(), &b"0,".repeat(2000), b"0]"].concat(),
            1000
        ));
    }

    #[test]
    fn only_reads_are_replayable_unless_marked() {
        assert!(ApiRequest::get(&["docs"]).replayable);
        assert!(!ApiRequest::new(Method::PUT, &["docs"]).replayable);
        assert!(!ApiRequest::new(Method::DELETE, &["docs"]).replayable);
        assert!(
            ApiRequest::new(Method::PUT, &["docs"])
                .replayable()
                .replayable
        );
    }

    #[test]
    fn non_json_error_body_falls_back_to_reason() {
        let err = decode_error(StatusCode::BAD_GATEWAY, b"", "secret");
        assert_eq!(
            err.to_string(),
            "Coda API error 502 Bad Gateway: Bad Gateway"
        );
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// `bytes` as a body read into room of `budget`.
    fn held(budget: &ReadBudget, bytes: &[u8]) -> Held<Vec<u8>> {
        let mut h = Held::try_reserve(budget, bytes.len()).unwrap();
        h.extend(budget, bytes, usize::MAX).unwrap();
        h
    }

    #[test]
    fn gzip_bodies_are_inflated() {
        let b = ReadBudget::new(1 << 20);
        let gz = gzip(b"# Title\nbody");
        assert_eq!(
            maybe_gunzip(held(&b, &gz), 100, &b).unwrap().as_str(),
            "# Title\nbody"
        );
        assert_eq!(
            maybe_gunzip(held(&b, b"plain"), 100, &b).unwrap().as_str(),
            "plain"
        );
        assert_eq!(b.held_bytes(), 0);
    }

    #[test]
    fn gzip_bodies_inflate_only_up_to_the_cap() {
        let b = ReadBudget::new(4 << 20);
        let gz = gzip(&vec![b'a'; 1 << 20]);
        assert!(gz.len() < 4096);
        let e = maybe_gunzip(held(&b, &gz), 1000, &b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 1000 bytes"), "{e}");
        assert_eq!(
            maybe_gunzip(held(&b, &gz), 1 << 20, &b).unwrap().len(),
            1 << 20
        );
        assert_eq!(b.held_bytes(), 0);
    }

    /// An export's inflated text holds room for its inflated size, for as
    /// long as the text is kept; one that does not fit beside what is held
    /// fails at once, and every byte of room comes back.
    #[test]
    fn inflated_text_counts_its_inflated_size_in_the_read_budget() {
        let b = ReadBudget::new(2 << 20);
        let gz = gzip(&vec![b'a'; 1 << 20]);
        let text = maybe_gunzip(held(&b, &gz), 1 << 20, &b).unwrap();
        assert_eq!(text.len(), 1 << 20);
        assert!(text.reserved_bytes() >= 1 << 20);
        // The gzip body's room went back once it was inflated.
        assert_eq!(b.held_bytes(), text.reserved_bytes());
        // With the first text held, a second does not fit: it fails at
        // once, without waiting, and says what to do.
        let e = maybe_gunzip(held(&b, &gz), 1 << 20, &b).unwrap_err();
        assert!(
            matches!(e, CodaError::OverBudget(ref o) if o.waited.is_none()),
            "{e:?}"
        );
        let text_e = e.to_string();
        assert!(
            text_e.contains("--max-read-bytes")
                && text_e.contains("retry the call")
                && text_e.contains("smaller limit"),
            "{text_e}"
        );
        assert_eq!(b.held_bytes(), text.reserved_bytes());
        drop(text);
        assert_eq!(b.held_bytes(), 0);
        // A bad gzip body gives its room back too.
        let mut bad = gz.clone();
        bad.truncate(gz.len() / 2);
        assert!(maybe_gunzip(held(&b, &bad), 1 << 20, &b).is_err());
        assert_eq!(b.held_bytes(), 0);
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        let cfg = CodaConfig::for_base_url("t", "http://127.0.0.1:1/apis/v1").unwrap();
        let client = CodaClient::new(&cfg).unwrap();
        let req =
            ApiRequest::get(&["docs", "d1", "tables", "Tasks / Q1"]).query("query", "\"A\":1");
        assert_eq!(
            client.url(&req).as_str(),
            "http://127.0.0.1:1/apis/v1/docs/d1/tables/Tasks%20%2F%20Q1?query=%22A%22%3A1"
        );
        for (seg, sent) in [
            (".\t.", ".%09."),
            ("a\nb", "a%0Ab"),
            ("\r..", "%0D.."),
            ("50%", "50%25"),
            ("a\\b", "a%5Cb"),
            ("?#", "%3F%23"),
            ("Café", "Caf%C3%A9"),
        ] {
            let req = ApiRequest::get(&["docs", "d1", "tables", seg]);
            assert_eq!(
                client.url(&req).path(),
                format!("/apis/v1/docs/d1/tables/{sent}"),
                "{seg:?}"
            );
        }
    }

    /// Each way a write stops before it reaches Coda says it was not sent
    /// and not applied; a read stopped the same way says nothing of writes.
    #[tokio::test]
    async fn a_write_stopped_before_it_is_sent_says_it_was_not_applied() {
        // Port 1: nothing listens, so no request can reach anything.
        let cfg = CodaConfig::for_base_url("t", "http://127.0.0.1:1/apis/v1").unwrap();
        let client = CodaClient::new(&cfg).unwrap();
        let post = ApiRequest::new(Method::POST, &["docs", "d1", "tables", "t", "rows"]);
        let soon = Instant::now() + Duration::from_millis(300);
        let cases = [
            (post.clone(), Instant::now(), "the call deadline had passed"),
            (
                ApiRequest::new(Method::DELETE, &["docs", "d1", "tables", "t", "rows", ".."]),
                soon,
                "fix that id or name",
            ),
            (post, soon, "no connection to Coda could be opened"),
        ];
        for (req, deadline, why) in cases {
            let e = client.send(&req, deadline).await.unwrap_err();
            assert!(matches!(e, CodaError::NotSent { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("this write request was NOT sent to Coda")
                    && text.contains("so it was NOT applied")
                    && text.contains(why),
                "{text}"
            );
            assert!(!e.outcome_unknown());
        }
        let read = ApiRequest::get(&["docs", "d1"]);
        let e = client.send(&read, Instant::now()).await.unwrap_err();
        assert!(matches!(e, CodaError::DeadlineExceeded(..)), "{e:?}");
        let export =
            ApiRequest::new(Method::POST, &["docs", "d1", "pages", "p", "export"]).as_read();
        let e = client.send(&export, Instant::now()).await.unwrap_err();
        assert!(matches!(e, CodaError::DeadlineExceeded(..)), "{e:?}");
    }

    #[test]
    fn download_links_reach_only_public_https_hosts_or_the_api_itself() {
        let api = Url::parse("http://127.0.0.1:8080/apis/v1").unwrap();
        let ok = |l: &str| download_allowed(&Url::parse(l).unwrap(), &api);
        assert!(ok("https://codahosted.io/docs/x?sig=1"));
        assert!(ok("http://127.0.0.1:8080/blobs/x"));
        for bad in [
            "http://codahosted.io/x",
            "http://127.0.0.1:8081/x",
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/x",
            "https://10.0.0.5/x",
            "https://192.168.1.1/x",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://a.localhost./x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "ftp://codahosted.io/x",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://224.0.0.1/x",
            "https://255.255.255.255/x",
            "https://[::]/x",
            "https://[::127.0.0.1]/x",
            "https://[fe80::1]/x",
            "https://[ff02::1]/x",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        for public in ["https://8.8.8.8/x", "https://[2606:4700::1111]/x"] {
            assert!(ok(public), "{public}");
        }
    }

    /// Regression: the download host was checked by its name only, so a
    /// link (or a redirect) to a public-looking name that resolves to a
    /// loopback, link-local (metadata), private or IPv4-mapped address was
    /// fetched. The names here resolve through a lookup the test gives, to
    /// a listener on this machine: a connection to it is the fetch.
    #[tokio::test]
    async fn a_download_host_that_resolves_to_a_private_address_is_not_connected_to() {
        fn lookup(name: &str) -> Vec<std::net::SocketAddr> {
            let ips: &[&str] = match name {
                "api.test" | "rebind.test" => &["127.0.0.1"],
                "metadata.test" => &["169.254.169.254", "127.0.0.1"],
                "mapped.test" => &["::ffff:127.0.0.1", "::1"],
                "internal.test" => &["10.0.0.7", "fd00::7"],
                _ => &[],
            };
            ips.iter()
                .map(|ip| (ip.parse::<IpAddr>().unwrap(), 0).into())
                .collect()
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = || {
            let mut n = 0;
            while listener.accept().is_ok() {
                n += 1;
            }
            n
        };
        let cfg =
            CodaConfig::for_base_url("t", &format!("https://api.test:{port}/apis/v1")).unwrap();
        let client = CodaClient::with_lookup(&cfg, Lookup::Given(lookup)).unwrap();
        let deadline = || Instant::now() + Duration::from_secs(5);
        for host in [
            "rebind.test",
            "metadata.test",
            "mapped.test",
            "internal.test",
        ] {
            let link = format!("https://{host}:{port}/blobs/x?sig=secret");
            let e = client
                .download(&link, deadline())
                .await
                .unwrap_err()
                .to_string();
            assert_eq!(
                accepted(),
                0,
                "{host}: a connection reached this machine ({e})"
            );
            assert!(
                e.contains(&format!("{host} resolves to no public address"))
                    && !e.contains("secret"),
                "{host}: {e}"
            );
        }
        // The API's own host is trusted by name: the lookup does route
        // connections to the listener, so the refusals above are the check.
        let _ = client
            .download(
                &format!("https://api.test:{port}/blobs/x"),
                Instant::now() + Duration::from_millis(300),
            )
            .await;
        assert!(accepted() >= 1, "the API host was not connected to");
    }

    /// Regression: an answer with a Content-Length had exactly that
    /// reserved, so its parse (json_cost) had to grow the room at once
    /// (a holder must not wait), and any answer that found the budget
    /// taken at that moment was refused, though, arriving with nothing
    /// held, it could have waited like any first reservation. A write
    /// Coda applied and answered with 54 bytes was reported "accepted,
    /// its answer could not be held in memory" (no ids; a chunked insert
    /// stopped there), and a read said to ask for less. The first
    /// reservation now covers the text and its expected parse.
    #[tokio::test]
    async fn a_small_answer_while_the_budget_is_taken_waits_for_room() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = r#"{"requestId":"mutate:1","addedRowIds":["i-1","i-2"]}"#;
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    // The request, head and body (its Content-Length).
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let cfg =
            CodaConfig::for_base_url("secret-token", &format!("http://127.0.0.1:{port}/apis/v1"))
                .unwrap();
        let client = CodaClient::new(&cfg).unwrap();
        let deadline = || Instant::now() + Duration::from_secs(10);
        let post = ApiRequest::new(Method::POST, &["docs", "d1", "tables", "t", "rows"])
            .body(serde_json::json!({"rows": []}));
        let get = ApiRequest::get(&["docs", "d1"]);
        for req in [post, get] {
            // Another call holds all of the budget but one unit, for 300 ms.
            let b = client.read_budget();
            let other = b
                .reserve(b.max_bytes() - crate::budget::UNIT, deadline())
                .await
                .unwrap();
            let freed = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(other);
            });
            let r = client.send(&req, deadline()).await;
            let r = r.unwrap_or_else(|e| panic!("{} refused: {e}", req.method));
            assert_eq!(r.body["requestId"], "mutate:1", "{} {}", r.status, r.body);
            freed.await.unwrap();
            drop(r);
            assert_eq!(client.read_budget().held_bytes(), 0);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = CodaConfig::for_base_url("t", "http://127.0.0.1:1").unwrap();
        let client = CodaClient::new(&cfg).unwrap();
        let b0 = client.backoff(0);
        assert!(b0 >= Duration::from_millis(1000) && b0 <= Duration::from_millis(2000));
        assert!(client.backoff(9) <= cfg.retry_max);
    }
}
