//! Lines written by a thread of their own: the log's stderr and the audit
//! file. A caller hands a whole line to a queue bounded in bytes (each
//! line also counts a fixed [`LINE_COST`], so the bound holds the count
//! of lines too) and never waits, so
//! a destination that is slow (a network filesystem), full (a pipe nobody
//! reads) or broken never stops the proxy's runtime. Beyond the queue, or
//! when a write fails, lines are dropped and counted, never retried; a
//! line that a failed write cut short is ended before the next is written,
//! so every line that does arrive whole stands on its own.
//!
//! The thread writes what has gathered in one call, then sleeps briefly so
//! that, under load, senders find it awake (no futex wake-up and context
//! switch per line) and the next write carries many lines.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender};
use std::time::{Duration, Instant};

/// How long the thread lets lines gather after a write. A line waits at
/// most this long beyond the write before it.
const GATHER: Duration = Duration::from_millis(2);

/// Bytes written in one call at most (the rest goes in the next), so the
/// thread's buffer never grows much past this.
const BATCH_BYTES: usize = 64 * 1024;

/// What a queued line costs beyond its bytes: its buffer's header and
/// allocation, and its slot in the queue. A queue of empty lines is
/// bounded too.
pub const LINE_COST: u64 = 64;

/// What the writer thread tells its owner's `report` hook (run on the
/// writer thread, with the destination, after a write).
#[derive(Debug)]
pub enum Report<'a> {
    /// A write failed; its lines are dropped.
    Failed(&'a std::io::Error),
    /// A write succeeded after lines were dropped; `total` so far.
    Dropped { total: u64 },
}

/// The sending side. Dropping it lets the thread write what is queued and
/// end.
pub struct LineWriter {
    tx: Sender<Vec<u8>>,
    counts: Arc<Counts>,
    max_bytes: u64,
}

#[derive(Default)]
struct Counts {
    /// Lines queued and not yet written or dropped ([`LineWriter::flush`]).
    pending: AtomicU64,
    /// Their bytes, each line with its [`LINE_COST`].
    pending_bytes: AtomicU64,
    /// Lines dropped: queue full, thread gone, or a failed write.
    dropped: AtomicU64,
}

impl std::fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter")
            .field("pending", &self.counts.pending.load(Ordering::Relaxed))
            .field("dropped", &self.counts.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl LineWriter {
    /// Starts a thread named `name` that writes to `out`, with room for
    /// `bytes` bytes in its queue (lines and their [`LINE_COST`]). `report` runs on
    /// that thread after a failed write, and after the first good write
    /// that follows drops. If the thread cannot start, every line is
    /// dropped and counted.
    pub fn start<W, R>(name: &str, bytes: usize, out: W, report: R) -> LineWriter
    where
        W: Write + Send + 'static,
        R: FnMut(&mut W, Report<'_>) + Send + 'static,
    {
        // Unbounded as a channel: `send` bounds it in bytes.
        let (tx, rx) = std::sync::mpsc::channel();
        let counts = Arc::new(Counts::default());
        let theirs = counts.clone();
        let _ = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_lines(rx, out, report, &theirs));
        LineWriter {
            tx,
            counts,
            max_bytes: bytes as u64,
        }
    }

    /// Queues one line (with its newline). Never waits; `false` when the
    /// line was dropped.
    pub fn send(&self, line: Vec<u8>) -> bool {
        let len = line.len() as u64 + LINE_COST;
        let queued = self.counts.pending_bytes.fetch_add(len, Ordering::Relaxed);
        // An empty queue takes any one line, so no line is too long to go.
        if queued > 0 && queued + len > self.max_bytes {
            self.counts.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.counts.pending.fetch_add(1, Ordering::Release);
        match self.tx.send(line) {
            Ok(()) => true,
            Err(SendError(_)) => {
                self.counts.pending.fetch_sub(1, Ordering::Release);
                self.counts.pending_bytes.fetch_sub(len, Ordering::Relaxed);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `within` for queued lines to be written (or dropped);
    /// `true` when none is left. Blocks the calling thread: for the end of
    /// the program, or from a blocking task.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.counts.pending.load(Ordering::Acquire) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn write_lines<W: Write, R: FnMut(&mut W, Report<'_>)>(
    rx: Receiver<Vec<u8>>,
    mut out: W,
    mut report: R,
    counts: &Counts,
) {
    let mut reported = 0;
    let mut batch = Vec::with_capacity(16 * 1024);
    // Whether a failed write left a line without its end in `out`.
    let mut torn = false;
    while let Ok(line) = rx.recv() {
        batch.clear();
        // The line after a torn one starts a line of its own: appended to
        // it, it would make one line of two records that no reader takes.
        if torn {
            batch.push(b'\n');
        }
        let queued_from = batch.len();
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
        // Out of the queue now: its room is free while the write waits.
        counts.pending_bytes.fetch_sub(
            (batch.len() - queued_from) as u64 + lines * LINE_COST,
            Ordering::Relaxed,
        );
        match write_batch(&mut out, &batch) {
            Err((written, e)) => {
                if written > 0 {
                    torn = batch[written - 1] != b'\n';
                }
                counts.dropped.fetch_add(lines, Ordering::Relaxed);
                report(&mut out, Report::Failed(&e));
            }
            Ok(()) => {
                torn = false;
                let total = counts.dropped.load(Ordering::Relaxed);
                if total > reported {
                    report(&mut out, Report::Dropped { total });
                    reported = total;
                }
            }
        }
        counts.pending.fetch_sub(lines, Ordering::Release);
        std::thread::sleep(GATHER);
    }
}

/// Writes all of `batch` to `out` and flushes it, as `write_all` does,
/// but a failure says how many bytes went before it: a batch is whole
/// lines, so whether the destination was left in the middle of one.
fn write_batch<W: Write>(out: &mut W, batch: &[u8]) -> Result<(), (usize, std::io::Error)> {
    let mut written = 0;
    while written < batch.len() {
        match out.write(&batch[written..]) {
            Ok(0) => return Err((written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    out.flush().map_err(|e| (written, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A destination that records writes and fails while `fail` is set.
    #[derive(Clone, Default)]
    struct Probe {
        written: Arc<Mutex<Vec<u8>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for Probe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("refused"));
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_flush_waits_for_them() {
        let probe = Probe::default();
        let w = LineWriter::start("test-writer", 1 << 20, probe.clone(), |_, _| {});
        for i in 0..500 {
            assert!(w.send(format!("{i}\n").into_bytes()));
        }
        assert!(w.flush(Duration::from_secs(5)));
        let text = String::from_utf8(probe.written.lock().unwrap().clone()).unwrap();
        let got: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!(w.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_without_waiting_and_a_failed_write_is_reported() {
        // A destination that blocks until released: the queue fills.
        struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Probe);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let probe = Probe::default();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        // Room for four lines of two bytes.
        let w = LineWriter::start(
            "test-writer",
            4 * (2 + LINE_COST as usize),
            Gate(gate.clone(), probe.clone()),
            move |_, r| seen.lock().unwrap().push(format!("{r:?}")),
        );
        let started = Instant::now();
        let sent = (0..100).filter(|_| w.send(b"x\n".to_vec())).count();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "send never waits"
        );
        // One line may be in the thread's hands, four in the queue.
        assert!((4..=5).contains(&sent), "{sent} queued");
        assert_eq!(w.dropped(), 100 - sent as u64);
        assert!(!w.flush(Duration::from_millis(50)), "the gate holds them");
        probe.fail.store(true, Ordering::Relaxed);
        {
            let (open, cv) = &*gate;
            *open.lock().unwrap() = true;
            cv.notify_all();
        }
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(w.dropped(), 100, "failed writes count as dropped");
        assert!(reports.lock().unwrap()[0].starts_with("Failed"));
        probe.fail.store(false, Ordering::Relaxed);
        assert!(w.send(b"y\n".to_vec()));
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(&probe.written.lock().unwrap()[..], b"y\n");
        let last = reports.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last, "Dropped { total: 100 }");
    }

    /// A destination with `room` bytes left, like a filling disk: a
    /// write takes what fits and the next one fails with ENOSPC.
    #[derive(Clone, Default)]
    struct Disk {
        written: Arc<Mutex<Vec<u8>>>,
        room: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(Ordering::Relaxed);
            if room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::Relaxed);
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Regression: a write that failed part of the way through a line
    /// (a full disk takes what fits, then ENOSPC) left that line without
    /// its end, and the first line written once there was room again was
    /// appended to it: two records in one line that no JSON reader takes
    /// (with a 64 KiB tmpfs as the `--audit-log` directory, filled, then
    /// emptied: `{…"principal":"ali{"ts_ms":…,"event":"auth.success",…}`).
    /// The line after a torn one now starts a line of its own.
    #[test]
    fn a_line_torn_by_a_failed_write_is_not_glued_to_the_next() {
        let disk = Disk::default();
        disk.room.store(10, Ordering::Relaxed);
        let w = LineWriter::start("test-writer", 1 << 20, disk.clone(), |_, _| {});
        assert!(w.send(b"0123456789abcdef\n".to_vec()));
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(w.dropped(), 1);
        // A write that fails before it writes anything tears nothing more.
        assert!(w.send(b"lost\n".to_vec()));
        assert!(w.flush(Duration::from_secs(5)));
        disk.room.store(1 << 20, Ordering::Relaxed);
        assert!(w.send(b"whole\n".to_vec()));
        assert!(w.send(b"next\n".to_vec()));
        assert!(w.flush(Duration::from_secs(5)));
        let text = String::from_utf8(disk.written.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "0123456789\nwhole\nnext\n");
    }

    /// A destination that never takes anything: what is queued stays.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer with `room` bytes whose thread has taken `first` and is
    /// stuck writing it: nothing more leaves the queue.
    fn stuck_after(room: usize, first: Vec<u8>) -> LineWriter {
        let w = LineWriter::start("test-writer", room, Stuck, |_, _| {});
        assert!(w.send(first));
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.counts.pending_bytes.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the thread took the line");
            std::thread::sleep(Duration::from_millis(2));
        }
        w
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_takes_one_long_line_when_empty() {
        // The first line is over the byte budget alone and still goes (the
        // thread takes it and is stuck writing it, so its room is free).
        let w = stuck_after(1000, vec![b'x'; 5000]);
        let sent = (0..100).filter(|_| w.send(vec![b'y'; 100])).count();
        assert_eq!(sent, 6, "1000 bytes of 100-byte lines costing 164");
        assert_eq!(w.dropped(), 94);
        // Empty lines are bounded too, by their cost.
        let sent = (0..100).filter(|_| w.send(Vec::new())).count();
        assert_eq!(sent, 0, "no room left");
    }

    #[test]
    fn empty_lines_are_bounded_by_their_cost() {
        let w = stuck_after(640, b"first\n".to_vec());
        let sent = (0..1000).filter(|_| w.send(Vec::new())).count();
        assert_eq!(sent, 10, "640 bytes of room, 64 per empty line");
        assert_eq!(w.dropped(), 990);
    }
}
