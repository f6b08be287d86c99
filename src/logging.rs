//! Logging: tracing to stderr, always (stdout may be a protocol stream),
//! plain or JSON. Message bodies appear only at trace level.
//!
//! Owns: the subscriber, the writer behind it, and two helpers every
//! module that logs outside input uses: [`tag`] (a short hash that stands in
//! for a session id, which is a bearer credential) and [`RateLimit`] (for
//! lines whose rate the outside world decides, such as a child's stderr);
//! and [`Outage`], how an endpoint the proxy depends on is logged while it
//! fails.
//!
//! A log write must never stop the proxy. Formatted lines go through a
//! bounded queue to one writer thread; when the queue is full (stderr is a
//! pipe nobody reads) or a write fails (stderr is a broken pipe), the line
//! is dropped and counted ([`dropped`]), never waited for, never a panic.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::writer::{LineWriter, Report};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The writer thread's queue (global because the subscriber is).
static QUEUE: OnceLock<LineWriter> = OnceLock::new();

/// Log lines dropped so far (full queue or failed write).
pub fn dropped() -> u64 {
    QUEUE.get().map_or(0, LineWriter::dropped)
}

/// Installs the global subscriber. `filter` is a level (`info`) or a
/// directive list (`info,mcp_sidecar=debug`): a default level and
/// per-target levels, without span or field filters (no regex engine in
/// the binary).
pub fn init(format: LogFormat, filter: &str, queue_bytes: usize) -> Result<(), String> {
    let targets: Targets = filter.parse().map_err(|e| format!("--log-level: {e}"))?;
    let ansi = std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(QueueWriter::start(queue_bytes, ansi))
        .with_ansi(ansi)
        // Its default reports a failed write with eprintln!, which panics on
        // a broken pipe: the failure is counted instead.
        .log_internal_errors(false)
        .with_target(false);
    let r = match format {
        LogFormat::Plain => tracing_subscriber::registry()
            .with(layer.with_filter(targets))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(targets),
            )
            .try_init(),
    };
    r.map_err(|e| e.to_string())?;
    let _ = FORMAT.set(format);
    Ok(())
}

/// The format [`init`] chose, for lines written past tracing ([`audit_record`]).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Writes one audit record, a JSON object with members, as an INFO line of the `audit`
/// target in the log's format:
///
/// - plain: `<time>  INFO audit: <object>`;
/// - JSON: the object's own fields after `timestamp`, `level` and `target`
///   (one flat object, not a JSON string inside `message`).
///
/// It goes straight to the writer queue: the record is JSON already, and
/// tracing's formatter would copy it again and scan it character by
/// character for terminal escapes, which JSON cannot hold unescaped.
/// Before [`init`] (the library in tests) it is an ordinary tracing event.
/// The caller checks the level (`tracing::enabled!`).
pub fn audit_record(object: &[u8]) {
    let Some(format) = FORMAT.get() else {
        tracing::info!(target: "audit", "{}", String::from_utf8_lossy(object));
        return;
    };
    // The whole line in one allocation: the head (at most 77 bytes), the
    // object, the newline.
    let mut line = String::with_capacity(80 + object.len());
    match format {
        LogFormat::Plain => {
            rfc3339_micros(std::time::SystemTime::now(), &mut line);
            line.push_str("  INFO audit: ");
        }
        LogFormat::Json => {
            line.push_str(r#"{"timestamp":""#);
            rfc3339_micros(std::time::SystemTime::now(), &mut line);
            line.push_str(r#"","level":"INFO","target":"audit","#);
        }
    }
    let mut line = line.into_bytes();
    match format {
        LogFormat::Plain => line.extend_from_slice(object),
        // Invariant: a record is an object with members (`ts_ms` and
        // `event` at least), so its members follow ours.
        LogFormat::Json => line.extend_from_slice(object.strip_prefix(b"{").unwrap_or(object)),
    }
    line.push(b'\n');
    if let Some(q) = QUEUE.get() {
        q.send(line);
    }
}

/// `t` in UTC as RFC 3339 with microseconds (`2026-12-04T05:58:37.962919Z`),
/// as tracing's own lines show it.
fn rfc3339_micros(t: std::time::SystemTime, out: &mut String) {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    // Digit by digit: `write!` with widths cost ten times as much, once
    // per audit record.
    let fields: [(u64, usize, u8); 7] = [
        (y.clamp(0, 9999) as u64, 4, b'-'),
        (u64::from(m), 2, b'-'),
        (u64::from(day), 2, b'T'),
        (s / 3600, 2, b':'),
        (s / 60 % 60, 2, b':'),
        (s % 60, 2, b'.'),
        (u64::from(d.subsec_micros()), 6, b'Z'),
    ];
    let mut buf = [0u8; 27];
    let mut at = 0;
    for (value, width, after) in fields {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        buf[at + width] = after;
        at += width + 1;
    }
    // Invariant: only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf).expect("ASCII"));
}

/// The proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01 (the well-known era-of-400-years computation).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Waits up to `within` for queued lines to reach stderr (before exit).
pub fn flush(within: Duration) {
    if let Some(q) = QUEUE.get() {
        q.flush(within);
    }
}

/// The subscriber's writer: each event is one `write` of a whole line,
/// handed to the writer thread without waiting.
#[derive(Clone, Copy)]
struct QueueWriter {
    /// The formatter colours its lines: ESC is its own, not escaped.
    ansi: bool,
}

impl QueueWriter {
    fn start(queue_bytes: usize, ansi: bool) -> QueueWriter {
        QUEUE.get_or_init(|| {
            LineWriter::start(
                "log-writer",
                queue_bytes,
                std::io::stderr(),
                |stderr, report| {
                    if let Report::Dropped { total } = report {
                        let note = format!("(log: {total} lines dropped so far)\n");
                        let _ = stderr.write_all(note.as_bytes());
                    }
                },
            )
        });
        QueueWriter { ansi }
    }
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(q) = QUEUE.get() {
            q.send(one_line(buf, self.ansi));
        }
        // Reported as written either way: the caller must never retry or fail.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> QueueWriter {
        *self
    }
}

/// One formatted event as exactly one line. The plain format writes a
/// field's text as it is, so a value from outside (a JWT's `sub`, a
/// forward-auth principal, an error quoting input) holding a line break
/// would start a line of its own, which a reader or a log shipper takes
/// for another event, forged to look like anything; other control
/// characters (NUL, ESC, ...) would reach the terminal or the tool that
/// reads the log as they are. Line breaks inside an event are written as
/// `\n` and `\r`, other control characters but TAB as `\xNN` (ESC kept
/// when `ansi`: the formatter's colours); JSON lines hold none, so they
/// pass as they are.
fn one_line(buf: &[u8], ansi: bool) -> Vec<u8> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let escaped = |b: u8| (b < 0x20 && b != b'\t' && !(ansi && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| escaped(b)) {
        return buf.to_vec();
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if escaped(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

/// A short, stable stand-in for a secret identifier (a session id is a
/// bearer credential: whoever has it can act in the session) in logs:
/// 8 hex digits of a keyed hash, enough to follow one session through the
/// log and useless for reaching it.
pub fn tag(id: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = KEY.get_or_init(Default::default).build_hasher();
    h.write(id.as_bytes());
    format!("{:08x}", h.finish() as u32)
}

/// A token bucket for log lines whose rate someone else decides: `burst`
/// lines at once, then `per_second`. [`RateLimit::admit`] says whether to log
/// this line and how many were suppressed since the last one logged.
pub struct RateLimit {
    burst: f64,
    per_second: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

impl RateLimit {
    /// A bucket that starts full.
    pub fn new(burst: u32, per_second: u32) -> RateLimit {
        RateLimit {
            burst: burst as f64,
            per_second: per_second as f64,
            state: Mutex::new(Bucket {
                tokens: burst as f64,
                at: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed_before)` when this line may be logged, `None` when
    /// it is to be dropped (and is counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut b = crate::lock(&self.state);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Some(std::mem::take(&mut b.suppressed))
        } else {
            b.suppressed += 1;
            None
        }
    }
}

/// Least time between two warnings of one outage.
pub const OUTAGE_REMIND_EVERY: Duration = Duration::from_secs(60);

/// The log's account of an endpoint that the proxy depends on while it
/// fails (the JWKS, the forward-auth endpoint, the credential store): one
/// warning when it starts failing, then at most one a minute with the
/// number of calls that failed since, and one line when it answers again.
/// Never a line per request: while such an endpoint is down, every
/// request that needs it fails the same way, and whoever sends requests
/// (for authentication, anyone) decides how many there are.
pub struct Outage {
    /// What fails, for the log (`"forward-auth endpoint"`).
    what: &'static str,
    state: Mutex<OutageState>,
    /// Whether an outage lasts (`state.since` is set): an answer, the
    /// common case, reads this and takes no lock.
    down: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct OutageState {
    /// When the outage began, while it lasts.
    since: Option<Instant>,
    /// Failures since it began.
    failures: u64,
    /// When it was last logged.
    said: Option<Instant>,
}

impl Outage {
    /// No outage yet of `what`.
    pub fn new(what: &'static str) -> Outage {
        Outage {
            what,
            state: Mutex::new(OutageState::default()),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A call that failed with `error` (never a secret: a redacted URL, a
    /// status, a connection error).
    pub fn failed(&self, error: &str) {
        let now = Instant::now();
        let mut s = crate::lock(&self.state);
        s.failures += 1;
        let Some(since) = s.since else {
            s.since = Some(now);
            s.said = Some(now);
            self.down.store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!(
                error,
                "{} unavailable: refusing what needs it with 503 (logged again once a minute while it lasts)",
                self.what
            );
            return;
        };
        if s.said
            .is_none_or(|t| now.duration_since(t) >= OUTAGE_REMIND_EVERY)
        {
            s.said = Some(now);
            tracing::warn!(
                error,
                failures = s.failures,
                down_for_s = now.duration_since(since).as_secs(),
                "{} still unavailable",
                self.what
            );
        }
    }

    /// A call that got an answer: ends an outage, if there was one.
    pub fn answered(&self) {
        if !self.down.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut s = crate::lock(&self.state);
        self.down.store(false, std::sync::atomic::Ordering::Release);
        if let Some(since) = s.since.take() {
            tracing::info!(
                failures = s.failures,
                down_for_s = since.elapsed().as_secs(),
                "{} answers again",
                self.what
            );
            *s = OutageState::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_a_burst_then_counts_what_it_drops() {
        let r = RateLimit::new(3, 10);
        let t0 = Instant::now();
        assert_eq!(r.admit_at(t0), Some(0));
        assert_eq!(r.admit_at(t0), Some(0));
        assert_eq!(r.admit_at(t0), Some(0));
        assert_eq!(r.admit_at(t0), None);
        assert_eq!(r.admit_at(t0), None);
        // 100 ms later one token is back: the line says two were dropped.
        assert_eq!(r.admit_at(t0 + Duration::from_millis(100)), Some(2));
        assert_eq!(r.admit_at(t0 + Duration::from_millis(100)), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            rfc3339_micros(
                std::time::UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros),
                &mut s,
            );
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // A leap day, the last second of a leap year, a century that is
        // not a leap year, and a time seen in a tracing line.
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_735_689_599, 999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(1_796_363_917, 962_919), "2026-12-04T05:58:37.962919Z");
    }

    #[test]
    fn an_event_is_always_one_line() {
        assert_eq!(one_line(b"plain event\n", false), b"plain event\n");
        assert_eq!(
            one_line(
                b"INFO session created principal=jwt:a\nINFO forged\r\n",
                false
            ),
            b"INFO session created principal=jwt:a\\nINFO forged\\r\n"
        );
        assert_eq!(one_line(b"no newline at all", false), b"no newline at all");
    }

    /// Regression: a JWT `sub` of `al\u0000ice\u001b[31m` reached the plain
    /// log with its NUL and ESC raw (only line breaks were escaped).
    #[test]
    fn control_characters_from_outside_are_escaped() {
        let line = b"INFO session created principal=jwt:al\x00ice\x1b[31m\x7f\tend\n";
        assert_eq!(
            one_line(line, false),
            b"INFO session created principal=jwt:al\\x00ice\\x1b[31m\\x7f\tend\n"
        );
        // A coloured terminal keeps ESC (the formatter's), not the rest.
        assert_eq!(
            one_line(b"\x1b[32mINFO\x1b[0m a\x00b\n", true),
            b"\x1b[32mINFO\x1b[0m a\\x00b\n"
        );
    }

    #[test]
    fn tags_are_short_stable_and_do_not_contain_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(tag(id), tag(id));
        assert_eq!(tag(id).len(), 8);
        assert_ne!(tag(id), tag("another"));
    }
}
