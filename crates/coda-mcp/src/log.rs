//! The stderr log, which never holds coda-mcp up.
//!
//! stdout is the protocol, so every log line goes to stderr. Written
//! there by the thread that logs, a line to a pipe nobody reads (a log
//! collector that stopped) blocks that thread for ever once the pipe is
//! full (64 KiB): a tool call, the task that handles SIGTERM, the exit.
//! So tracing's lines go through a queue bounded in bytes
//! (`--log-queue-bytes`, each line counting [`LINE_COST`] beyond its bytes)
//! to one writer thread, and the logging thread never waits:
//!
//! - a line that finds the queue full is dropped and counted;
//! - a write that fails (stderr closed, a broken pipe) drops its lines,
//!   counted, and is not retried: a broken stderr is otherwise ignored;
//! - the first write that succeeds after drops is followed by a warning
//!   with the count so far, and so is the exit ([`finish`]); that
//!   warning is written whatever `CODA_MCP_LOG` filters out (`error`,
//!   or `rmcp=trace`, which hides every line of coda_mcp), since the
//!   lines it counts were shown by that filter;
//! - at exit, the queue gets at most a bounded time to reach stderr
//!   ([`finish`]): a stderr nobody reads does not keep the process.
//!
//! This module imports nothing of the crate.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What a queued line costs beyond its bytes (its buffer's header and
/// allocation, its slot in the channel), so that a queue of empty lines
/// is bounded too.
pub const LINE_COST: u64 = 64;

/// Bytes written in one call at most; the rest goes in the next.
const BATCH_BYTES: usize = 64 * 1024;

/// How long [`finish`] lets the queue reach stderr at exit.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// The writer thread's queue (global because tracing's subscriber is).
static QUEUE: OnceLock<Queue> = OnceLock::new();

struct Queue {
    tx: Sender<Vec<u8>>,
    max_bytes: u64,
    counts: &'static Counts,
}

#[derive(Default)]
struct Counts {
    /// Lines queued and not yet written or dropped.
    pending: AtomicU64,
    /// Their bytes, each line with its [`LINE_COST`].
    pending_bytes: AtomicU64,
    /// Lines dropped: queue full, no writer thread, or a failed write.
    dropped: AtomicU64,
    /// `dropped` when it was last reported.
    reported: AtomicU64,
}

impl Queue {
    /// Queues `line` (with its newline); never waits. `false` when the
    /// line was dropped.
    fn send(&self, line: Vec<u8>) -> bool {
        let len = line.len() as u64 + LINE_COST;
        let queued = self.counts.pending_bytes.fetch_add(len, Ordering::Relaxed);
        // An empty queue takes any one line, so no line is too long to go.
        if queued > 0 && queued + len > self.max_bytes {
            self.counts.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.counts.pending.fetch_add(1, Ordering::Release);
        if self.tx.send(line).is_err() {
            self.counts.pending.fetch_sub(1, Ordering::Release);
            self.counts.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Installs the global subscriber: tracing's plain lines, filtered by
/// `filter`, through a queue of at most `queue_bytes` to stderr. Call it
/// once, before the runtime starts.
pub fn init(filter: Targets, queue_bytes: usize) {
    let counts: &'static Counts = Box::leak(Box::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = QUEUE.set(Queue {
        tx,
        max_bytes: queue_bytes as u64,
        counts,
    });
    // If the thread cannot start, `rx` is dropped and every line is
    // counted as dropped.
    let _ = std::thread::Builder::new()
        .name("coda-mcp-log".into())
        .spawn(move || write_lines(rx, std::io::stderr(), counts));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(QueueWriter)
                .with_ansi(false)
                // Its default reports a failed write with `eprintln!`,
                // which blocks on a full stderr and panics on a broken one.
                .log_internal_errors(false)
                .with_filter(filter),
        )
        .try_init();
}

/// Lines dropped so far.
pub fn dropped() -> u64 {
    QUEUE
        .get()
        .map_or(0, |q| q.counts.dropped.load(Ordering::Relaxed))
}

/// Queues `text` as lines of their own, not through tracing (the binary's
/// `error: …` lines at exit). Before [`init`] (a usage error), written to
/// stderr by a thread of its own, waited for at most [`EARLY_WRITE`]
/// ([`write_bounded`]), a failure ignored.
pub fn raw(text: &str) {
    let mut line = text.as_bytes().to_vec();
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    match QUEUE.get() {
        Some(q) => {
            q.send(line);
        }
        None => {
            write_bounded(Stream::Stderr, line, EARLY_WRITE);
        }
    }
}

/// `text` and a newline on stdout (`--help`, `--version`), waited for at
/// most [`EARLY_WRITE`], a failure ignored: `println!` panics on a
/// broken pipe (`coda-mcp --help | true`) and blocks on a full one.
pub fn stdout(text: &str) {
    let mut line = text.as_bytes().to_vec();
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    write_bounded(Stream::Stdout, line, EARLY_WRITE);
}

/// How long a line written before [`init`] (a usage error, `--help`) may
/// take to reach its pipe: the process exits after it either way.
pub const EARLY_WRITE: Duration = Duration::from_secs(2);

/// Where [`write_bounded`] writes.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Writes `bytes` from a thread of its own and waits at most `within`
/// for it; `true` when they were written. A pipe nobody reads blocks
/// that thread, not the caller, and the process exits without it; a
/// broken one is an error, ignored. Without a thread, nothing is written.
fn write_bounded(to: Stream, bytes: Vec<u8>, within: Duration) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("coda-mcp-early".into())
        .spawn(move || {
            let written = match to {
                Stream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes).and_then(|()| out.flush())
                }
                Stream::Stderr => std::io::stderr().lock().write_all(&bytes),
            };
            let _ = done_tx.send(written.is_ok());
        });
    spawned.is_ok() && done_rx.recv_timeout(within).unwrap_or(false)
}

/// Waits up to `within` for the queued lines to be written (or dropped);
/// `true` when none is left. Blocks the calling thread.
pub fn flush(within: Duration) -> bool {
    let Some(q) = QUEUE.get() else {
        return true;
    };
    let deadline = Instant::now() + within;
    loop {
        if q.counts.pending.load(Ordering::Acquire) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// At exit: a warning with the lines dropped since the last one said so
/// (if any), then at most `within` for the queue to reach stderr. Past
/// it, what is queued is lost with the process.
pub fn finish(within: Duration) {
    report_drops();
    flush(within);
}

/// A warning with the count of dropped lines, when it grew since the last.
fn report_drops() {
    let Some(q) = QUEUE.get() else {
        return;
    };
    let total = q.counts.dropped.load(Ordering::Relaxed);
    if q.counts.reported.fetch_max(total, Ordering::Relaxed) < total {
        q.send(drops_line(total));
    }
}

/// The warning with the count of dropped lines, as tracing writes a
/// line, but queued past `CODA_MCP_LOG`'s filter: lines can be lost at
/// any level and from any target (`rmcp=trace` floods, while a warning
/// of `coda_mcp::log` would be filtered out; `error` hides every
/// warning), and the report of the loss must be seen whenever what was
/// lost would have been.
fn drops_line(total: u64) -> Vec<u8> {
    use tracing_subscriber::fmt::time::FormatTime;
    let mut line = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut line));
    line.push_str(&format!(
        "  WARN coda_mcp::log: drop log lines: stderr was full (not read) or failed; `dropped` counts them since the start (--log-queue-bytes) dropped={total}\n"
    ));
    line.into_bytes()
}

/// tracing's writer: each event is one `write` of a whole line, queued
/// without waiting.
#[derive(Clone, Copy)]
struct QueueWriter;

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(q) = QUEUE.get() {
            q.send(buf.to_vec());
        }
        // Written either way: the caller must never retry or fail.
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

/// The writer thread: what has gathered, in one write, until the queue's
/// sender is gone.
fn write_lines<W: Write>(rx: Receiver<Vec<u8>>, mut out: W, counts: &Counts) {
    let mut batch = Vec::with_capacity(16 * 1024);
    // A failed write left a line without its end.
    let mut torn = false;
    while let Ok(line) = rx.recv() {
        batch.clear();
        if torn {
            batch.push(b'\n');
        }
        let from = batch.len();
        batch.extend_from_slice(&line);
        drop(line);
        let mut lines = 1u64;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        // Out of the queue: its room is free while the write waits.
        counts.pending_bytes.fetch_sub(
            (batch.len() - from) as u64 + lines * LINE_COST,
            Ordering::Relaxed,
        );
        let written = write_batch(&mut out, &batch);
        match written {
            Ok(()) => {
                torn = false;
                // Writing works (again): say how many were lost before.
                report_drops();
            }
            Err(n) => {
                if n > 0 {
                    torn = batch[n - 1] != b'\n';
                }
                counts.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
        counts.pending.fetch_sub(lines, Ordering::Release);
    }
}

/// Writes all of `batch`; a failure says how many bytes went before it.
fn write_batch<W: Write>(out: &mut W, batch: &[u8]) -> Result<(), usize> {
    let mut written = 0;
    while written < batch.len() {
        match out.write(&batch[written..]) {
            Ok(0) => return Err(written),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(written),
        }
    }
    out.flush().map_err(|_| written)
}
