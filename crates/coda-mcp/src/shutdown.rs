//! How `coda-mcp` stops, and what it waits for before it exits.
//!
//! A tool call that has sent a write to Coda (a row upsert, a page
//! replace, a chunked insert or delete) runs to its end before the
//! process exits, within its own deadline (`--call-timeout-secs`: every
//! request of a call is cut by then), so the client hanging up never
//! leaves a doc with a multi-request write applied half way and nobody
//! knowing where it stopped. Every write call holds a token of
//! [`Shutdown`]'s tracker from its start; the binary waits for them after
//! rmcp returns, for at most `--shutdown-wait-secs` (by default the call
//! deadline and [`crate::config::WRITE_END_MARGIN`], so every write sent
//! ends; a shorter wait suits a supervisor that kills sooner, and a
//! warning then says how many writes were cut). Reads, and write calls that
//! sent nothing yet, are not waited for: they are stopped (nothing of
//! them reached Coda).
//!
//! What starts the stop:
//!
//! - stdin ends: rmcp answers the calls that end within its 5 s drain,
//!   then cancels the rest; a write call that sent a write goes on (its
//!   answer can no longer be written, its end is logged);
//! - the first SIGTERM or SIGINT: the same at once ([`Shutdown::stop`]):
//!   reads and unsent writes stop, rmcp stops reading, writes already
//!   sent finish;
//! - a second SIGTERM or SIGINT: exit at once, whatever is running (a
//!   warning says how many writes were cut: they may be applied or not).
//!
//! This module imports nothing of the crate but [`crate::stdio`]'s
//! `stdin_ended` and [`crate::log`]'s `finish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// How long the log may take to reach stderr when a second signal exits.
const SECOND_SIGNAL_FLUSH: Duration = Duration::from_millis(500);

/// How long the calls that are not waited for may take to see the stop
/// and log it: they end at once, so this bites only on a stuck runtime.
pub const CALLS_SETTLE: Duration = Duration::from_secs(2);

/// The running write calls, and whether a signal asked to stop. Cheap to
/// clone; clones share both.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Every tool call, while it runs.
    calls: TaskTracker,
    writes: TaskTracker,
    stop: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Held by every tool call from its start to its end: once stopped, a
    /// call ends at once (or goes on as a write), and the process waits
    /// for that ([`Shutdown::calls_settled`]) so that what each did is
    /// logged before the runtime is dropped.
    pub fn track_call(&self) -> TaskTrackerToken {
        self.calls.token()
    }

    /// Wait, at most `bound`, until every call still running is a write
    /// that goes on (the others end as soon as they see the stop).
    pub async fn calls_settled(&self, bound: Duration) {
        let settled = async {
            while self.calls.len() > self.writes.len() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(bound, settled).await;
    }

    /// Held by a write call from its start to its end: the process waits
    /// for it ([`Shutdown::writes_done`]).
    pub fn track_write(&self) -> TaskTrackerToken {
        self.writes.token()
    }

    /// Ask every call to stop (a signal): reads and writes that sent
    /// nothing stop at once, writes already sent go on.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether the stop has begun: a signal, or the end of stdin.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled() || crate::stdio::stdin_ended()
    }

    /// Resolves when a signal asked to stop.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// How many write calls are running.
    pub fn writes_running(&self) -> usize {
        self.writes.len()
    }

    /// Wait until no write call runs, for at most `bound`; returns how
    /// many are still running then.
    pub async fn writes_done(&self, bound: Duration) -> usize {
        self.writes.close();
        let _ = tokio::time::timeout(bound, self.writes.wait()).await;
        self.writes.len()
    }
}

/// Watch SIGTERM and SIGINT: the first calls [`Shutdown::stop`], a second
/// one exits the process at once with `code`.
///
/// Deliveries are counted in the signal handler itself: tokio's signal
/// stream wakes its task once for all the signals that arrived before it
/// ran, so two sent back to back (`kill -TERM $p; kill -TERM $p`) would be
/// one, and the second would not cut the wait for writes.
pub fn on_signal(shutdown: Shutdown, code: i32) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let delivered = Arc::new(AtomicUsize::new(0));
    for sig in [libc_sigterm(), libc_sigint()] {
        let delivered = delivered.clone();
        // SAFETY: the action only increments an atomic integer, which is
        // async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            signal_hook_registry::register(sig, move || {
                delivered.fetch_add(1, Ordering::SeqCst);
            })
        }?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        };
        let name = next().await;
        // Stop first: a log line that cannot be written (stderr a full
        // pipe) must not hold the stop up.
        shutdown.stop();
        tracing::info!(
            signal = name,
            writes = shutdown.writes_running(),
            "stop on a signal: reads and unsent writes stop, writes sent to Coda finish first (a second signal exits at once)"
        );
        let name = if delivered.load(Ordering::SeqCst) >= 2 {
            name
        } else {
            next().await
        };
        tracing::warn!(
            signal = name,
            writes = shutdown.writes_running(),
            "exit at once on a second signal: the writes still running are cut and may be applied or not"
        );
        // The log's last lines, briefly: a stderr nobody reads must not
        // hold up an exit asked to be at once.
        crate::log::finish(SECOND_SIGNAL_FLUSH);
        std::process::exit(code);
    });
    Ok(())
}

/// SIGTERM's number, through tokio's own name for it.
fn libc_sigterm() -> i32 {
    tokio::signal::unix::SignalKind::terminate().as_raw_value()
}

/// SIGINT's number.
fn libc_sigint() -> i32 {
    tokio::signal::unix::SignalKind::interrupt().as_raw_value()
}
