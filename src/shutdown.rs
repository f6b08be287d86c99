//! Signals: how an operator or orchestrator stops the proxy, and what the
//! proxy does for its children when it is PID 1 in a container.
//!
//! - The first SIGTERM or SIGINT means "drain and exit": `shutdown` is
//!   cancelled *before* anything is logged, so a log write that cannot
//!   complete (stderr a broken or full pipe) cannot hold the stop up.
//! - A second SIGTERM or SIGINT while draining means "now": `hurry` is
//!   cancelled and the caller kills every child's group at once.
//! - SIGHUP is the same for a single server that is not PID 1 (nothing
//!   to reload); named servers reload on it.
//! - As PID 1 (no init in the container), SIGHUP, SIGUSR1 and SIGUSR2 are
//!   forwarded to every child's process group, and [`reap_orphans`] reaps
//!   the zombies re-parented to us (orphaned grandchildren).
//! - Otherwise the binary makes the proxy a child subreaper
//!   ([`crate::child::adopt_orphans`]): what a child leaves behind outside its process
//!   group becomes the proxy's when the child exits, and is killed and
//!   reaped then.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::child::Children;

/// Cancels `shutdown` on the first SIGTERM or SIGINT and `hurry` on the
/// second. With `hangup`, SIGHUP counts as one of them: a single server
/// has no configuration to reload, and SIGHUP's default action ended the
/// proxy on the spot (a closed terminal, a supervisor's reload), leaving
/// calls in flight unanswered and the children to the guard's SIGKILL
/// instead of their staged stop. Named servers reload on SIGHUP, and PID 1
/// forwards it to the children: they pass `false`.
///
/// The deliveries are counted in the signal handler itself: a stream
/// wakes its task once for every signal that arrived before the task ran,
/// so two SIGTERMs sent back to back (`kill -TERM $p; kill -TERM $p`)
/// were one, and the children got their whole grace period.
pub fn on_signal(
    shutdown: CancellationToken,
    hurry: CancellationToken,
    hangup: bool,
) -> std::io::Result<()> {
    // Counted before tokio's own action runs (actions run in the order
    // they were registered): once the task wakes, the count includes
    // every delivery its wake-up stands for.
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut counted = vec![nix::libc::SIGTERM, nix::libc::SIGINT];
    if hangup {
        counted.push(nix::libc::SIGHUP);
    }
    for sig in counted {
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
    let mut hup = if hangup {
        Some(signal(SignalKind::hangup())?)
    } else {
        None
    };
    tokio::spawn(async move {
        let mut next = async || {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup_recv => "SIGHUP",
            }
        };
        let name = next().await;
        // Cancel first: logging may fail or stall, the stop must not.
        shutdown.cancel();
        info!(signal = name, "shutdown requested");
        let name = if delivered.load(Ordering::SeqCst) >= 2 {
            // The second arrived with the first.
            name
        } else {
            next().await
        };
        hurry.cancel();
        warn!(
            signal = name,
            "second signal during shutdown: killing the children now"
        );
    });
    Ok(())
}

/// Whether this process is PID 1 (a container's init).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// The longest wait between two passes of [`Children::track_escaped`],
/// in [`GUARD_CHECK`]s, once passes find nothing.
const ESCAPE_SCAN_MAX_CHECKS: u32 = 64;

/// When the escape pass ([`Children::track_escaped`]) runs: a pass reads
/// every process's `stat` (about 28 ms of CPU on a host of 1,000
/// processes), so it runs at every check only while it finds something,
/// and at the first check after a child started (servers that daemonise
/// do it as they start); after a pass that found nothing the wait doubles,
/// up to [`ESCAPE_SCAN_MAX_CHECKS`].
struct ScanPace {
    /// Checks between passes now.
    every: u32,
    /// Checks since the last pass.
    since: u32,
    /// [`Children::spawned`] at the last check.
    spawned: u64,
}

impl ScanPace {
    fn new() -> ScanPace {
        ScanPace {
            every: 1,
            since: 0,
            spawned: 0,
        }
    }

    /// One check has passed, with `spawned` children started so far:
    /// whether a pass is due (the caller then reports [`ScanPace::scanned`]).
    fn due(&mut self, spawned: u64) -> bool {
        self.since = self.since.saturating_add(1);
        if spawned != self.spawned {
            self.spawned = spawned;
            self.every = 1;
        }
        self.since >= self.every
    }

    /// A pass ran and `found` escaped groups or leftovers, or not.
    fn scanned(&mut self, found: bool) {
        self.since = 0;
        self.every = if found {
            1
        } else {
            (self.every * 2).min(ESCAPE_SCAN_MAX_CHECKS)
        };
    }
}

/// How often the guard process is checked for life.
const GUARD_CHECK: Duration = Duration::from_secs(1);

/// What the proxy does for its children while it serves, one server or
/// named servers alike: starts the guard process (see [`crate::guard`])
/// and replaces it within [`GUARD_CHECK`] if it is killed, and as often
/// tells it the groups the children's descendants made outside their own
/// ([`Children::track_escaped`]); as PID 1,
/// reaps orphans and forwards signals (SIGHUP only when `forward_hup`:
/// named servers reload on it instead); when `hurry` is cancelled (a
/// second signal), kills every child's group at once. All of it ends
/// when the returned guard is dropped.
pub fn start_duties(
    children: &Arc<Children>,
    hurry: CancellationToken,
    forward_hup: bool,
) -> tokio_util::sync::DropGuard {
    match children.start_guard() {
        Ok(pid) => debug!(guard = pid, "guard process started"),
        Err(e) => {
            warn!(error = %e, "cannot start the guard process: children would outlive a killed proxy")
        }
    }
    let duties = CancellationToken::new();
    if is_pid1() {
        info!(
            forward_hup,
            "running as PID 1: reaping orphaned processes and forwarding signals to children"
        );
        tokio::spawn(reap_orphans(children.clone(), duties.clone()));
        if let Err(e) = forward_signals(children.clone(), duties.clone(), forward_hup) {
            warn!(error = %e, "cannot install the signal forwarders");
        }
    } else if crate::child::is_adopting() {
        // The leftovers the proxy kills are its children: it reaps them.
        tokio::spawn(reap_orphans(children.clone(), duties.clone()));
    }
    {
        let children = children.clone();
        let duties = duties.clone();
        tokio::spawn(async move {
            let mut pace = ScanPace::new();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(GUARD_CHECK) => {
                        children.check_guard();
                        if pace.due(children.spawned()) && children.tracks_escaped() {
                            let children = children.clone();
                            let found = tokio::task::spawn_blocking(move || children.track_escaped())
                                .await
                                .unwrap_or(true);
                            pace.scanned(found);
                        }
                    }
                    _ = duties.cancelled() => return,
                }
            }
        });
    }
    {
        let children = children.clone();
        let duties = duties.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = hurry.cancelled() => {
                    let n = children.kill_all();
                    warn!(children = n, "killed every child at once");
                }
                _ = duties.cancelled() => {}
            }
        });
    }
    duties.drop_guard()
}

/// As PID 1: forwards SIGUSR1, SIGUSR2 and (with `hup`) SIGHUP to every
/// child's group until `stop`. (Without it PID 1 ignores them: the kernel
/// drops signals that PID 1 has no handler for.)
pub fn forward_signals(
    children: Arc<Children>,
    stop: CancellationToken,
    hup: bool,
) -> std::io::Result<()> {
    let mut hup = if hup {
        Some(signal(SignalKind::hangup())?)
    } else {
        None
    };
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let sig = tokio::select! {
                _ = hup_recv => Signal::SIGHUP,
                _ = usr1.recv() => Signal::SIGUSR1,
                _ = usr2.recv() => Signal::SIGUSR2,
                _ = stop.cancelled() => return,
            };
            children.signal_all(sig);
            info!(signal = %sig, "forwarded a signal to the children");
        }
    });
    Ok(())
}

/// How often the orphan reaper looks without a SIGCHLD: as PID 1 (a
/// container's few processes, a pass is cheap) and as a subreaper (a
/// pass reads every process's `stat`: about 28 ms of CPU on a host of
/// 1,000 processes, so the signal does the work there).
const ORPHAN_SWEEP_PID1: Duration = Duration::from_secs(1);
const ORPHAN_SWEEP_SUBREAPER: Duration = Duration::from_secs(60);

/// As PID 1 or a subreaper ([`crate::child::adopt_orphans`]): reaps every
/// zombie whose parent is this process and that no
/// [`crate::child::ChildHandle`] owns (grandchildren orphaned by a child
/// are re-parented to us). Runs on SIGCHLD, and without one every second
/// as PID 1, every minute as a subreaper, until `stop`; the owned children
/// are left to their supervisors.
pub async fn reap_orphans(children: Arc<Children>, stop: CancellationToken) {
    let Ok(mut chld) = signal(SignalKind::child()) else {
        warn!("cannot watch SIGCHLD; orphaned processes are reaped once a second");
        return reap_loop_without_signal(children, stop).await;
    };
    let sweep = if is_pid1() {
        ORPHAN_SWEEP_PID1
    } else {
        ORPHAN_SWEEP_SUBREAPER
    };
    loop {
        tokio::select! {
            _ = chld.recv() => {}
            _ = tokio::time::sleep(sweep) => {}
            _ = stop.cancelled() => return,
        }
        reap_off_thread(&children).await;
    }
}

/// [`reap_once`] on the blocking pool: a pass reads /proc, which must not
/// hold up the runtime (one thread by default).
async fn reap_off_thread(children: &Arc<Children>) {
    let children = children.clone();
    let _ = tokio::task::spawn_blocking(move || reap_once(&children)).await;
}

async fn reap_loop_without_signal(children: Arc<Children>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => reap_off_thread(&children).await,
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass: the zombie children of this process no one owns, reaped.
pub fn reap_once(children: &Children) -> usize {
    let me = std::process::id();
    children.with_owned_pids(|owned| {
        let mut reaped = 0;
        for pid in zombie_children(me) {
            if owned.contains(&pid) {
                continue;
            }
            if waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)).is_ok() {
                reaped += 1;
            }
        }
        if reaped > 0 {
            debug!(reaped, "reaped orphaned processes");
        }
        reaped
    })
}

/// Pids of zombies whose parent is `ppid`, from /proc.
fn zombie_children(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = ppid.to_string();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_whitespace();
            f.next() == Some("Z") && f.next() == Some(parent.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// The escape pass runs at every check while it finds something and
    /// after a child starts, and backs off to once every 64 checks while
    /// it finds nothing.
    #[test]
    fn the_escape_pass_backs_off_while_it_finds_nothing() {
        let mut pace = ScanPace::new();
        // Passes that find nothing, no child started: 1, 2, 4, … 64 apart.
        let mut gaps = Vec::new();
        let mut since = 0;
        for _ in 0..400 {
            since += 1;
            if pace.due(0) {
                gaps.push(since);
                since = 0;
                pace.scanned(false);
            }
        }
        assert_eq!(&gaps[..8], &[1, 2, 4, 8, 16, 32, 64, 64]);
        // A child starts: the next check passes again.
        assert!(pace.due(1));
        pace.scanned(true);
        // It found something: every check, for as long as it does.
        for _ in 0..5 {
            assert!(pace.due(1));
            pace.scanned(true);
        }
        assert!(pace.due(1));
        pace.scanned(false);
        assert!(
            !pace.due(1),
            "two checks apart after one pass found nothing"
        );
        assert!(pace.due(1));
    }

    use super::*;

    /// Regression: two SIGTERMs sent back to back (`kill -TERM $p; kill
    /// -TERM $p`) were taken for one when both arrived before the task
    /// watching them ran (the signal stream wakes once for both): stubborn
    /// children then got their whole staged stop instead of SIGKILL at
    /// once. Here both are delivered (`raise` runs the handler before it
    /// returns) before this single-threaded runtime polls the task.
    #[test]
    fn two_signals_before_the_watcher_runs_are_a_second_signal() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (shutdown, hurry) = (CancellationToken::new(), CancellationToken::new());
            on_signal(shutdown.clone(), hurry.clone(), false).unwrap();
            nix::sys::signal::raise(Signal::SIGTERM).unwrap();
            nix::sys::signal::raise(Signal::SIGTERM).unwrap();
            let hurried = tokio::time::timeout(Duration::from_secs(5), hurry.cancelled()).await;
            assert!(shutdown.is_cancelled(), "the first signal was not seen");
            assert!(hurried.is_ok(), "the second signal was not seen");
        });
    }
}
