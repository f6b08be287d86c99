//! The stdio MCP server as a child process.
//!
//! Owns: spawning the command (exec'd directly, never through a shell) in a
//! process group of its own, its stdin and stdout (a pipe, or with
//! `--child-stdout socket` a socket pair: see [`StdoutKind`]; handed to the one task
//! that talks to it, stdout as a [`LineReader`] that ends with the child
//! even when an escaped descendant holds the pipe: see [`ChildOutput`]),
//! stderr drained line by line into the log so the child never blocks on a
//! full pipe, and the staged stop: close stdin, wait, SIGTERM the whole
//! group (so `npx`/`uvx` grandchildren go too), SIGKILL after the grace
//! period, and reap. Spec: `basic/lifecycle` (shutdown, stdio).
//!
//! Does not own: what the lines mean (see [`crate::upstream`]).

use std::collections::HashSet;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::guard::Guard;
use crate::jsonrpc::{LineError, LineReader};
use crate::lock;
use crate::logging::RateLimit;

/// Lines of stderr longer than this are cut before logging.
const MAX_STDERR_LINE_BYTES: usize = 8 * 1024;
/// Longest stderr line read at all; a longer one is skipped with a note.
const MAX_STDERR_READ_BYTES: usize = 64 * 1024;

/// Pipe buffer asked for on the child's stdout: a large result then crosses
/// in a few reads instead of one per 64 KiB, each with a wake-up on both
/// sides (in the bench, 8 MiB results went from ~60% to ~100% of the direct
/// pipe's rate).
const STDOUT_PIPE_BYTES: usize = 1024 * 1024;

/// A child's stderr may burst this many times its per-second rate.
const STDERR_BURST_FACTOR: u32 = 4;

/// Time allowed for a child to be reaped and its exit logged once its
/// group got SIGKILL (the kernel ends it at once; this covers a loaded
/// machine's scheduling).
pub const REAP_MARGIN: Duration = Duration::from_secs(2);

/// The children of one proxy, and what they share: the live count (for
/// `/health`), the budget for grown pipes, the process groups to kill at
/// once on a second signal, the pids the PID-1 reaper must leave to their
/// owners, and the guard that kills them all if the proxy dies. Owned by
/// the proxy (through its [`ChildSpec`]), so two proxies in one process
/// (the test harness) never share it.
#[derive(Default)]
pub struct Children {
    /// Children spawned and not yet reaped.
    live: AtomicUsize,
    /// Children spawned so far: a new one makes the escape pass look
    /// again soon (see the shutdown module's `ScanPace`).
    spawned: std::sync::atomic::AtomicU64,
    /// Bytes of grown stdout pipes in use, against [`Children::pipe_budget`].
    grown_pipe_bytes: AtomicUsize,
    pipe_budget: OnceLock<usize>,
    /// Pids (= process group ids) of children spawned and not yet reaped.
    /// Held while spawning, so the reaper never sees an unregistered child.
    groups: Mutex<HashSet<u32>>,
    /// Process groups that descendants of the children made outside the
    /// children's own (`setsid`, a daemonising server), registered with
    /// the guard too ([`Children::track_escaped`]). Locked after `groups`.
    escaped: Mutex<HashSet<u32>>,
    /// Processes that were already the proxy's own (adopted, not spawned)
    /// at the last [`Children::track_escaped`]: daemons of children that
    /// still ran then, which another child's exit leaves alone
    /// ([`Children::kill_leftovers`]). Locked after `groups`.
    adopted_seen: Mutex<HashSet<u32>>,
    /// Kills every group if the proxy dies; installed by
    /// [`Children::start_guard`], replaced by [`Children::check_guard`].
    /// Never locked while `groups` is held by the same thread.
    guard: Mutex<Option<Guard>>,
    /// Each child's own tasks (its stderr drain and its supervisor, which
    /// stops and reaps it); [`Children::wait_tasks`] waits for them at
    /// shutdown.
    tasks: tokio_util::task::TaskTracker,
    /// Whether the warning that children outnumber the guard's table
    /// ([`crate::guard::GUARD_GROUPS`]) was logged (once per proxy).
    beyond_guard_warned: std::sync::atomic::AtomicBool,
    /// The longest `--shutdown-grace` any child was spawned with, in
    /// milliseconds: how long [`Children::wait_tasks`] lets a stop take.
    longest_grace_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children")
            .field("live", &self.live())
            .field("guard", &self.guard_pid())
            .finish()
    }
}

impl Children {
    /// Children spawned so far.
    pub fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Children spawned and not yet reaped.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Waits until every child's own tasks have ended (the children's
    /// stops were begun before); returns whether they did. It waits at
    /// least `within` and at least as long as a staged stop may take (half
    /// the longest grace after stdin closes, the grace after SIGTERM, and
    /// [`REAP_MARGIN`] to reap after SIGKILL), so that a child ignoring
    /// SIGTERM is stopped by its own staged stop, reaped and logged, not
    /// left for the guard to kill when the proxy exits. Groups still there
    /// after that get SIGKILL, and [`REAP_MARGIN`] more to be reaped.
    pub async fn wait_tasks(&self, within: Duration) -> bool {
        self.tasks.close();
        let grace = Duration::from_millis(self.longest_grace_ms.load(Ordering::Relaxed));
        let stop_bound = grace / 2 + grace + REAP_MARGIN;
        let mut done = tokio::time::timeout(within.max(stop_bound), self.tasks.wait())
            .await
            .is_ok();
        if !done {
            let killed = self.kill_all();
            warn!(
                children = killed,
                "children still stopping after their grace periods; sending SIGKILL to their groups"
            );
            done = tokio::time::timeout(REAP_MARGIN, self.tasks.wait())
                .await
                .is_ok();
        }
        // Children may still be started later (a named server's reload).
        self.tasks.reopen();
        // Each child's supervisor killed its own leftovers; this takes the
        // rest (a child still being stopped when the wait ran out). The
        // proxy is about to exit: a /proc read on this thread holds up
        // nothing else.
        self.kill_leftovers(None);
        done
    }

    /// Starts the guard process (once); children spawned afterwards die
    /// with the proxy. Errors leave the proxy running without one.
    pub fn start_guard(&self) -> std::io::Result<u32> {
        let mut slot = lock(&self.guard);
        if let Some(g) = slot.as_ref() {
            return Ok(g.pid());
        }
        // Its pid is ours to reap, never the PID-1 reaper's, and no child's
        // leftover: the set is held from the fork on.
        let mut groups = lock(&self.groups);
        let guard = Guard::start()?;
        let pid = guard.pid();
        groups.insert(pid);
        *slot = Some(guard);
        Ok(pid)
    }

    /// If the guard has died (someone killed it) or stopped reading
    /// ([`Guard::is_stuck`]: it is ended first), starts another and
    /// registers every live group with it. Returns the new guard's pid.
    pub fn check_guard(&self) -> Option<u32> {
        let mut slot = lock(&self.guard);
        let old = slot.as_ref()?;
        let old_pid = old.pid();
        if old.is_stuck() {
            if let Some(stuck) = slot.take() {
                stuck.discard();
            }
        } else if old.has_exited() {
            *slot = None;
        } else {
            return None;
        }
        // Held from the fork on, as in `start_guard`.
        let mut owned = lock(&self.groups);
        owned.remove(&old_pid);
        let guard = match Guard::start() {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "the guard process died and cannot be restarted: children would outlive a killed proxy");
                return None;
            }
        };
        let pid = guard.pid();
        let groups: Vec<u32> = owned
            .iter()
            .chain(lock(&self.escaped).iter())
            .copied()
            .collect();
        owned.insert(pid);
        drop(owned);
        for g in &groups {
            guard.register(*g);
        }
        warn!(
            old = old_pid,
            new = pid,
            groups = groups.len(),
            "the guard process died or stopped reading; started another"
        );
        *slot = Some(guard);
        Some(pid)
    }

    fn guard_pid(&self) -> Option<u32> {
        lock(&self.guard).as_ref().map(Guard::pid)
    }

    fn with_guard(&self, f: impl FnOnce(&Guard)) {
        if let Some(g) = lock(&self.guard).as_ref() {
            f(g);
        }
    }

    /// Sends SIGKILL to every child's process group now (a second
    /// SIGTERM/SIGINT during shutdown). Their supervisors then reap them.
    pub fn kill_all(&self) -> usize {
        let guard_pid = self.guard_pid();
        let groups: Vec<u32> = lock(&self.groups)
            .iter()
            .copied()
            .filter(|p| Some(*p) != guard_pid)
            .collect();
        for &g in &groups {
            let _ = killpg(Pid::from_raw(g as i32), Signal::SIGKILL);
        }
        groups.len()
    }

    /// Sends `signal` to every child's process group (PID 1 forwarding).
    pub fn signal_all(&self, signal: Signal) {
        let guard_pid = self.guard_pid();
        for &g in lock(&self.groups).iter() {
            if Some(g) != guard_pid {
                let _ = killpg(Pid::from_raw(g as i32), signal);
            }
        }
    }

    /// Whether [`Children::track_escaped`] has anything to do: children
    /// live, or groups are still registered for them.
    pub fn tracks_escaped(&self) -> bool {
        self.live() > 0 || !lock(&self.escaped).is_empty()
    }

    /// Keeps the guard told about the process groups that descendants of
    /// the children made outside the children's own (`setsid`, a
    /// daemonising server), so that a killed proxy takes them too: each
    /// such group is registered as a child's is, and unregistered once no
    /// process is left in it. A descendant counts while its ancestry to a
    /// child's group is unbroken, or once it is a leftover the proxy
    /// adopted ([`adopt_orphans`]).
    ///
    /// Run every second while it finds something, and again a second after
    /// each child's start, otherwise less and less often, down to once a
    /// minute (the shutdown module's `start_duties` and `ScanPace`: a pass
    /// reads every process's `stat`, about 28 ms of CPU on a host of 1,000
    /// processes). So a group made since the last run is the guard's only
    /// if the guard's own search finds it when the proxy dies (its leader's
    /// parent still there); and a group that ended may stay registered up
    /// to a second, during which its id, reused by another group leader,
    /// would be killed with a killed proxy. Reads /proc with spawning held
    /// off: off the runtime's threads. Returns whether it found any such
    /// group or leftover.
    pub fn track_escaped(&self) -> bool {
        let guard = lock(&self.guard);
        let owned = lock(&self.groups);
        let (now, adopted) = escaped_groups(
            &process_groups_table(),
            &owned,
            Scan {
                me: std::process::id(),
                own_group: nix::unistd::getpgrp().as_raw() as u32,
                guard: guard.as_ref().map(Guard::pid),
                // Only a subreaper's other children are its children's
                // leftovers: in a host process (the test harness, two
                // proxies in one process) they are the host's, or another
                // proxy's, own.
                adopting: is_adopting(),
            },
        );
        let found = !now.is_empty() || !adopted.is_empty();
        *lock(&self.adopted_seen) = adopted;
        let mut escaped = lock(&self.escaped);
        if let Some(g) = guard.as_ref() {
            for &group in now.difference(&escaped) {
                g.register(group);
            }
            for &group in escaped.difference(&now) {
                g.unregister(group);
            }
        }
        let new = now.difference(&escaped).count();
        if new > 0 {
            debug!(
                groups = new,
                "descendants of children left their process groups; the guard takes those too"
            );
        }
        *escaped = now;
        found
    }

    /// Kills what children left behind outside their process groups, once
    /// it is the proxy's (see [`adopt_orphans`]; nothing
    /// without it): every child of the proxy that is neither one of its
    /// children nor its guard is such a leftover (a `setsid` grandchild
    /// whose parent exited). Each, and every descendant of it, is stopped
    /// as it is found (SIGSTOP: it forks no more, so the search ends with
    /// all of them), then all get SIGKILL; the shutdown module's `reap_orphans`
    /// reaps them. Reads /proc: call it off the runtime's threads. Returns
    /// how many processes were killed.
    ///
    /// No SIGTERM first, unlike a child's staged stop, on purpose: a stopped
    /// process handles no signal, so a SIGTERM would mean letting it run
    /// for a grace period, during which it may fork, move the new process
    /// to a session of its own and exit. The orphan becomes the proxy's
    /// and a later pass would find it, but a proxy killed in between leaves
    /// it to nobody: the guard searches only from members of registered
    /// groups, and the orphan's ancestry to them is gone. Frozen as found
    /// and then killed, none gets that chance.
    ///
    /// With `exited` (the child, and group, that just exited), the
    /// processes that were already the proxy's at the last once-a-second
    /// pass are spared: a double-forked daemon is the proxy's from its
    /// start, and one that a child started while it ran is that child's
    /// helper until the proxy stops (the pass cannot tell whose it is; the
    /// exited child's own leftovers became the proxy's only now). One
    /// adopted in the second before another child's exit is taken for
    /// that child's. So are the members of the exited child's group, which
    /// its SIGKILL is ending already (they are not outside it).
    pub fn kill_leftovers(&self, exited: Option<u32>) -> usize {
        if !is_adopting() {
            return 0;
        }
        let me = std::process::id();
        // Held throughout: no child or guard is spawned meanwhile, so a
        // child of ours that is not in the set is not one being spawned.
        let owned = lock(&self.groups);
        let spared = if exited.is_some() {
            lock(&self.adopted_seen).clone()
        } else {
            HashSet::new()
        };
        let mut doomed = HashSet::new();
        // Members of the exited group still dying: not leftovers, but
        // what they started outside the group is.
        let mut dying = HashSet::new();
        for _ in 0..LEFTOVER_PASSES {
            let found = doomed.len();
            let table = process_groups_table();
            loop {
                let before = doomed.len() + dying.len();
                for &(pid, ppid, pgrp) in &table {
                    if Some(pgrp) == exited {
                        dying.insert(pid);
                        continue;
                    }
                    let leftover = ppid == me && !owned.contains(&pid) && !spared.contains(&pid);
                    let descendant = doomed.contains(&ppid) || dying.contains(&ppid);
                    if (leftover || descendant) && doomed.insert(pid) {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                    }
                }
                if doomed.len() + dying.len() == before {
                    break;
                }
            }
            // A pass that finds nothing new: whatever forked before it was
            // stopped is in this table.
            if doomed.len() == found {
                break;
            }
        }
        drop(owned);
        for &pid in &doomed {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Their ids are free once reaped: never spare a later process by one.
        lock(&self.adopted_seen).retain(|pid| !doomed.contains(pid));
        if !doomed.is_empty() {
            info!(
                processes = doomed.len(),
                "killed processes a child left behind outside its process group"
            );
        }
        doomed.len()
    }

    /// Runs `f` with the set of pids that have owners (children and the
    /// guard), with spawning held off: what the PID-1 reaper must not reap.
    pub fn with_owned_pids<T>(&self, f: impl FnOnce(&HashSet<u32>) -> T) -> T {
        f(&lock(&self.groups))
    }

    fn pipe_budget(&self) -> usize {
        *self.pipe_budget.get_or_init(|| {
            let pages: usize = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(16384);
            if pages == 0 {
                // No soft limit set.
                usize::MAX
            } else {
                pages * 4096 / 4
            }
        })
    }

    /// Best-effort `F_SETPIPE_SZ` within the budget; the bytes granted, to
    /// be given back with [`Children::release_pipe`] when the child is gone.
    ///
    /// Pipe memory is charged to the user: past `fs.pipe-user-pages-soft`,
    /// the kernel gives every new pipe of that user (ours and anyone
    /// else's) two pages only. Grown pipes may use a quarter of that quota;
    /// children beyond it keep the default 64 KiB.
    fn grow_pipe(&self, pipe: &impl std::os::fd::AsFd, bytes: usize) -> usize {
        use nix::fcntl::{FcntlArg, fcntl};
        let taken = self.grown_pipe_bytes.fetch_add(bytes, Ordering::Relaxed);
        if taken.saturating_add(bytes) > self.pipe_budget() {
            self.grown_pipe_bytes.fetch_sub(bytes, Ordering::Relaxed);
            debug!("pipe budget used up; this child's stdout keeps the default pipe size");
            return 0;
        }
        match fcntl(pipe.as_fd(), FcntlArg::F_SETPIPE_SZ(bytes as i32)) {
            Ok(_) => bytes,
            Err(e) => {
                self.grown_pipe_bytes.fetch_sub(bytes, Ordering::Relaxed);
                debug!(error = %e, bytes, "could not grow the child's stdout pipe; keeping the default size");
                0
            }
        }
    }

    fn release_pipe(&self, bytes: usize) {
        self.grown_pipe_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bookkeeping once a child is reaped and its group killed.
    fn forget(&self, pid: u32, grown_pipe: usize) {
        lock(&self.groups).remove(&pid);
        self.with_guard(|g| g.unregister(pid));
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.release_pipe(grown_pipe);
    }
}

/// Why the server command cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Not on PATH (or, with a `/`, no such file).
    #[error("the MCP server command `{0}` was not found{1}")]
    NotFound(String, &'static str),
    /// It exists but cannot be executed.
    #[error("the MCP server command `{0}` is not executable ({1})")]
    NotExecutable(String, String),
}

/// Resolves the program as `exec` will: a name with a `/` is a path
/// (relative to the child's working directory), any other name is looked
/// up on the PATH the child gets. Returns the file that would run.
pub fn resolve_program(spec: &ChildSpec) -> Result<PathBuf, CommandError> {
    use std::os::unix::fs::PermissionsExt;
    let program = spec.program.as_str();
    let check = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("it is a directory".into());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("no execute permission".into());
        }
        nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).map_err(|e| e.to_string())
    };
    if program.is_empty() {
        return Err(CommandError::NotFound(String::new(), ""));
    }
    if program.contains('/') {
        let mut path = PathBuf::from(program);
        if path.is_relative()
            && let Some(cwd) = &spec.cwd
        {
            path = cwd.join(path);
        }
        if !path.exists() {
            return Err(CommandError::NotFound(program.into(), ""));
        }
        return check(&path)
            .map(|()| path)
            .map_err(|e| CommandError::NotExecutable(program.into(), e));
    }
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| {
            spec.inherit_env
                .then(|| std::env::var("PATH").ok())
                .flatten()
        })
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut last_error = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if !candidate.exists() {
            continue;
        }
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(CommandError::NotExecutable(program.into(), e)),
        None => Err(CommandError::NotFound(program.into(), " on PATH")),
    }
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program; looked up on PATH.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to (or, with `inherit_env = false`, forming) its environment.
    pub env: Vec<(String, String)>,
    /// Whether the child starts from the proxy's own environment.
    pub inherit_env: bool,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Longest stdout line accepted.
    pub max_line_bytes: usize,
    /// What the child's stdout is: a socket or a pipe (`--child-stdout`).
    pub stdout_kind: StdoutKind,
    /// Time between SIGTERM and SIGKILL, and for the child to exit after stdin closes.
    pub grace: Duration,
    /// The proxy's children (shared by every clone of this spec).
    pub children: Arc<Children>,
    /// Where spawns and exits are counted (the app's, or an unexported default).
    pub metrics: crate::metrics::ChildMetrics,
    /// stderr lines per second logged for one child (bursts of four times
    /// that); the rest are counted and the count logged (`--child-log-rate`).
    pub stderr_lines_per_second: u32,
}

/// A child's pipes, for the one task that talks to it (the multiplexer's
/// worker): no other task sits between it and the child.
pub struct ChildIo {
    /// Its stdout, line by line; it ends when the child has exited and
    /// what it wrote has been read, even if a descendant that left its
    /// process group still holds the pipe open.
    pub stdout: LineReader<Stdout>,
    /// Its stdin; dropping it closes the pipe.
    pub stdin: tokio::process::ChildStdin,
    /// Cancelled when the staged stop begins: whoever holds `stdin` then
    /// drops it (closing stdin is the polite first step of a stop).
    pub close_stdin: tokio_util::sync::CancellationToken,
}

/// The child's stdout as its multiplexer reads it.
pub type Stdout = ChildOutput<StdoutEnd>;

/// What a child's stdout is (`--child-stdout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdoutKind {
    /// A pipe, grown to [`STDOUT_PIPE_BYTES`] within the budget, as
    /// Python's `subprocess` gives. Small answers cross it faster than a
    /// socket (the bench's direct echo p50 was 5-12 µs lower), and a
    /// server can open `/dev/stdout` on it.
    #[default]
    Pipe,
    /// One end of a Unix stream socket pair, as Node.js (libuv) gives the
    /// servers it spawns. The child's writes and the proxy's reads copy
    /// side by side, where on a pipe they take turns under its lock, so
    /// long answers cross faster and at less CPU; a server cannot open
    /// `/dev/stdout` on it.
    Socket,
}

/// The proxy's end of a child's stdout.
pub enum StdoutEnd {
    /// The proxy's half of the socket pair (see [`StdoutKind::Socket`]).
    Socket(tokio::net::UnixStream),
    /// The read end of the pipe.
    Pipe(ChildStdout),
}

impl AsyncRead for StdoutEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            StdoutEnd::Socket(s) => Pin::new(s).poll_read(cx, buf),
            StdoutEnd::Pipe(p) => Pin::new(p).poll_read(cx, buf),
        }
    }
}

impl AsFd for StdoutEnd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StdoutEnd::Socket(s) => s.as_fd(),
            StdoutEnd::Pipe(p) => p.as_fd(),
        }
    }
}

/// A socket pair for a child's stdout: the proxy's end (non-blocking, its
/// writing half shut so that a child reading its stdout sees the end, not
/// a hang) and the child's (blocking, as a program expects its stdout).
fn stdout_socket() -> std::io::Result<(tokio::net::UnixStream, std::os::unix::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.shutdown(std::net::Shutdown::Write)?;
    ours.set_nonblocking(true)?;
    Ok((tokio::net::UnixStream::from_std(ours)?, theirs))
}

/// One of a child's output pipes, read until the child has exited and what
/// it wrote has been read.
///
/// A pipe ends for its reader only once every process holding its write
/// end has closed it. A descendant that left the child's process group
/// (`setsid`, a daemonising helper) survives the group's SIGKILL and may
/// hold it open for ever: the proxy would then take a dead child for a
/// live one (no restart, calls in flight never answered) and keep the pipe
/// and its reader for as long as that descendant lives. So once the child
/// is reaped, the bytes in the pipe at that moment are read (all the child
/// wrote: a process's writes are in the pipe before it can be reaped) and
/// then the pipe reads as ended; what a descendant writes later is not the
/// child's.
pub struct ChildOutput<P> {
    pipe: P,
    /// Resolves once the child is reaped; `None` after that.
    reaped: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// After the reap: bytes of the child's still to be read.
    left: usize,
}

impl<P: AsyncRead + AsFd + Unpin> ChildOutput<P> {
    fn new(pipe: P, reaped: CancellationToken) -> ChildOutput<P> {
        ChildOutput {
            pipe,
            reaped: Some(Box::pin(reaped.cancelled_owned())),
            left: 0,
        }
    }
}

impl<P: AsyncRead + AsFd + Unpin> AsyncRead for ChildOutput<P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(reaped) = this.reaped.as_mut() {
            if let Poll::Ready(r) = Pin::new(&mut this.pipe).poll_read(cx, buf) {
                return Poll::Ready(r);
            }
            if reaped.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.reaped = None;
            this.left = bytes_in_pipe(this.pipe.as_fd());
        }
        // The child is gone: the rest of what it wrote, read directly (the
        // reactor may not have reported it yet), then the end.
        let want = this.left.min(buf.remaining());
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match nix::unistd::read(this.pipe.as_fd(), buf.initialize_unfilled_to(want)) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => this.left = 0,
                Ok(n) => {
                    this.left -= n;
                    buf.advance(n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            return Poll::Ready(Ok(()));
        }
    }
}

/// Bytes waiting in the pipe `fd` (`FIONREAD`); 0 if that cannot be told.
fn bytes_in_pipe(fd: BorrowedFd<'_>) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // at `n`, alive for the call; `fd` is an open descriptor we borrow.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    if r == 0 { n.max(0) as usize } else { 0 }
}

/// Why a child could not be started or talked to.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The command could not be spawned (not found, not executable…).
    #[error("cannot start `{program}`: {source}")]
    SpawnFailed {
        /// The program that failed.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The child's stdin is closed: it exited or is stopping.
    #[error("the MCP server process has exited")]
    Exited,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Still running.
    Running,
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Running => write!(f, "running"),
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

impl From<ExitStatus> for Exit {
    fn from(s: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// A running child: send lines to it, watch for its exit, stop it.
/// Cloning shares the same process.
#[derive(Clone)]
pub struct ChildHandle {
    inner: Arc<ChildInner>,
}

struct ChildInner {
    pid: u32,
    exit: watch::Receiver<Exit>,
    stop: mpsc::Sender<()>,
}

impl ChildHandle {
    /// Spawns the child. Returns the handle and its pipes.
    /// `label` names the owner in the child's log lines (never a session
    /// id: see [`crate::logging::tag`]).
    pub fn spawn(spec: &ChildSpec, label: &str) -> Result<(ChildHandle, ChildIo), ChildError> {
        let spawn_failed = |source| ChildError::SpawnFailed {
            program: spec.program.clone(),
            source,
        };
        let (socket, child_stdout) = match spec.stdout_kind {
            StdoutKind::Socket => {
                let (ours, theirs) = stdout_socket().map_err(|e| {
                    // Counted as a failed spawn, as a pipe that cannot be
                    // made (no descriptors left) is inside `spawn`.
                    spec.metrics.spawn_failed();
                    spawn_failed(e)
                })?;
                (Some(ours), Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            }
            StdoutKind::Pipe => (None, Stdio::piped()),
        };
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(child_stdout)
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !spec.inherit_env {
            cmd.env_clear();
        } else {
            // The proxy's own settings (MCP_PROXY_API_KEY among them) are
            // credentials of the proxy, never of the child (transport.md §5).
            for (k, _) in std::env::vars_os() {
                if k.as_encoded_bytes().starts_with(b"MCP_PROXY_") {
                    cmd.env_remove(&k);
                }
            }
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let children = spec.children.clone();
        // The guard stays locked until the spawn returns: the descriptor
        // the child registers itself through stays open, and no other
        // registration comes between a failed spawn and the resync.
        let guard = lock(&children.guard);
        if let Some(fd) = guard.as_ref().and_then(Guard::raw_fd) {
            // SAFETY: `register_self` is fit for `pre_exec` (two
            // async-signal-safe calls); `fd` is open until the lock goes.
            unsafe {
                cmd.pre_exec(move || {
                    crate::guard::register_self(fd);
                    Ok(())
                });
            }
        }
        // The set stays locked from spawn to registration: the PID-1 reaper
        // must never reap a child it has not been told about.
        let mut groups = lock(&children.groups);
        let mut child = cmd.spawn().map_err(|source| {
            if let Some(g) = guard.as_ref() {
                g.resync(groups.iter().chain(lock(&children.escaped).iter()).copied());
            }
            spec.metrics.spawn_failed();
            spawn_failed(source)
        })?;
        // The child's end of a socket pair lives in `cmd`: closed here, so
        // that the proxy's end reads the end once the child's copies close.
        drop(cmd);
        // Invariant: all three pipes were requested above.
        let pid = child.id().expect("a just-spawned child has a pid");
        groups.insert(pid);
        children.spawned.fetch_add(1, Ordering::Relaxed);
        let beyond_guard = groups.len() > crate::guard::GUARD_GROUPS;
        drop(groups);
        if beyond_guard && !children.beyond_guard_warned.swap(true, Ordering::Relaxed) {
            warn!(
                limit = crate::guard::GUARD_GROUPS,
                "more children than the guard process tracks: those beyond it would outlive a killed proxy"
            );
        }
        if let Some(g) = guard.as_ref() {
            g.register(pid);
        }
        drop(guard);
        children.live.fetch_add(1, Ordering::Relaxed);
        children.longest_grace_ms.fetch_max(
            u64::try_from(spec.grace.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let stdin = child.stdin.take().expect("stdin piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (stdout, grown) = match socket {
            Some(ours) => (StdoutEnd::Socket(ours), 0),
            None => {
                let pipe = child.stdout.take().expect("stdout piped");
                let grown = children.grow_pipe(&pipe, STDOUT_PIPE_BYTES);
                (StdoutEnd::Pipe(pipe), grown)
            }
        };
        spec.metrics.spawned();
        let span = info_span!("child", pid, session = %label);
        info!(parent: &span, program = %spec.program, "child spawned");

        let (exit_tx, exit_rx) = watch::channel(Exit::Running);
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let close_stdin = CancellationToken::new();
        let reaped = CancellationToken::new();
        let stdout = ChildOutput::new(stdout, reaped.clone());
        let stderr = ChildOutput::new(stderr, reaped.clone());
        let tasks = children.tasks.clone();
        tasks.spawn(drain_stderr(stderr, spec.stderr_lines_per_second).instrument(span.clone()));
        tasks.spawn(
            supervise(
                child,
                pid,
                spec.grace,
                Ends {
                    stop: stop_rx,
                    exit: exit_tx,
                    close_stdin: close_stdin.clone(),
                    reaped,
                },
                grown,
                children,
                spec.metrics.clone(),
            )
            .instrument(span),
        );
        let handle = ChildHandle {
            inner: Arc::new(ChildInner {
                pid,
                exit: exit_rx,
                stop: stop_tx,
            }),
        };
        let io = ChildIo {
            stdout: LineReader::new(stdout, spec.max_line_bytes),
            stdin,
            close_stdin,
        };
        Ok((handle, io))
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Current exit state.
    pub fn exit(&self) -> Exit {
        *self.inner.exit.borrow()
    }

    /// Waits until the child has exited and been reaped.
    pub async fn exited(&self) -> Exit {
        let mut rx = self.inner.exit.clone();
        // An error means the supervisor is gone, which only happens after it published the exit.
        let _ = rx.wait_for(|e| *e != Exit::Running).await;
        *rx.borrow()
    }

    /// Starts the staged stop and waits for it to finish.
    pub async fn stop(&self) -> Exit {
        let _ = self.inner.stop.try_send(());
        self.exited().await
    }
}

async fn drain_stderr(stderr: ChildOutput<ChildStderr>, per_second: u32) {
    // Bounded like stdout: a line without end cannot grow the proxy's memory.
    let mut reader = LineReader::new(stderr, MAX_STDERR_READ_BYTES);
    // A child that floods stderr must not flood the log: the lines beyond
    // the rate are counted and the count is logged with the next line.
    let limit = RateLimit::new(per_second.saturating_mul(STDERR_BURST_FACTOR), per_second);
    loop {
        let line = reader.next_line().await;
        if matches!(line, Ok(Some(_)) | Err(LineError::LineTooLong { .. })) {
            match limit.admit() {
                None => continue,
                Some(0) => {}
                Some(dropped) => {
                    warn!(
                        dropped,
                        "child stderr lines dropped by the log rate limit (--child-log-rate)"
                    );
                }
            }
        }
        match line {
            Ok(None) | Err(LineError::Io(_)) => break,
            Ok(Some(line)) => {
                let text = String::from_utf8_lossy(&line[..line.len().min(MAX_STDERR_LINE_BYTES)]);
                let text = text.trim_end();
                if !text.is_empty() {
                    // stderr is the child's log, not an error signal (2025-11-25 stdio).
                    info!(target: "mcp_sidecar::child::stderr", "{text}");
                }
            }
            Err(LineError::LineTooLong { len, limit, .. }) => {
                info!(target: "mcp_sidecar::child::stderr", len, limit, "(a stderr line too long to log was skipped)");
            }
            // Not enabled on this reader.
            Err(LineError::OverCap { .. }) => {}
        }
    }
}

/// How the supervisor of one child talks to the rest: the stop request
/// it obeys, and the ends of the child's life it announces.
struct Ends {
    /// A request for the staged stop.
    stop: mpsc::Receiver<()>,
    /// The exit status, published once the child is reaped.
    exit: watch::Sender<Exit>,
    /// Cancelled when the stop begins or the child is gone: stdin closes.
    close_stdin: CancellationToken,
    /// Cancelled once the child is reaped: its stdout and stderr end after
    /// what it wrote (see [`ChildOutput`]).
    reaped: CancellationToken,
}

async fn supervise(
    mut child: Child,
    pid: u32,
    grace: Duration,
    ends: Ends,
    grown_pipe: usize,
    children: Arc<Children>,
    metrics: crate::metrics::ChildMetrics,
) {
    let Ends {
        mut stop,
        exit,
        close_stdin,
        reaped,
    } = ends;
    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = stop.recv() => {
            stopped = true;
            close_stdin.cancel();
            staged_stop(&mut child, pid, grace).await
        }
    };
    close_stdin.cancel();
    reaped.cancel();
    let status = match status {
        Ok(s) => Exit::from(s),
        Err(e) => {
            warn!(error = %e, "waiting for child failed");
            Exit::Code(-1)
        }
    };
    // Whatever the child left behind in its group goes with it.
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    metrics.exited(match status {
        _ if stopped => crate::metrics::ExitReason::Stopped,
        Exit::Code(0) => crate::metrics::ExitReason::Exited,
        Exit::Signal(_) => crate::metrics::ExitReason::Killed,
        Exit::Code(_) | Exit::Running => crate::metrics::ExitReason::Failed,
    });
    // The pipe goes when the reader drops its end, right after EOF.
    children.forget(pid, grown_pipe);
    info!(status = %status, "child exited");
    let _ = exit.send(status);
    // Then whatever it left outside its group, now the proxy's (after the
    // exit is out: whoever waits for it, a session's slot say, need not
    // wait for a pass over /proc; shutdown waits for this task still).
    if is_adopting() {
        let children = children.clone();
        let _ = tokio::task::spawn_blocking(move || children.kill_leftovers(Some(pid))).await;
    }
}

/// With stdin already closed (the writer task was told to drop it): wait,
/// SIGTERM the group, wait, SIGKILL the group.
async fn staged_stop(child: &mut Child, pid: u32, grace: Duration) -> std::io::Result<ExitStatus> {
    let group = Pid::from_raw(pid as i32);
    if let Ok(status) = tokio::time::timeout(grace / 2, child.wait()).await {
        return status;
    }
    debug!("child still running after stdin closed; sending SIGTERM to its group");
    let _ = killpg(group, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    warn!(
        grace_ms = grace.as_millis() as u64,
        "child ignored SIGTERM; sending SIGKILL to its group"
    );
    let _ = killpg(group, Signal::SIGKILL);
    child.wait().await
}

/// Parses `KEY=VALUE` lines of an env file (blank lines and `#` comments skipped,
/// an optional `export ` prefix and matching quotes removed).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("line {}: empty variable name", n + 1));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Set by [`adopt_orphans`].
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// Makes the proxy a child subreaper (`PR_SET_CHILD_SUBREAPER`): a
/// process that a child leaves behind outside its process group (a
/// `setsid` grandchild, a daemonising server) becomes the proxy's own
/// child when the child exits, instead of init's, so the proxy can find
/// it, kill it ([`Children::kill_leftovers`]) and reap it
/// (the shutdown module's `reap_orphans`). Without it such a process outlived its child and
/// the proxy, however either stopped.
///
/// For the binary only (like [`crate::servers::hide_from_children`]): in a
/// host process, the test harness say, the orphans of the host's own
/// processes would be taken for a child's leftovers. As PID 1 it is not
/// needed (every orphan of the container is already the proxy's, and the
/// kernel ends them all when PID 1 exits) and leftovers are only reaped:
/// an orphan there may be a `docker exec` user's.
pub fn adopt_orphans() {
    if std::process::id() == 1 {
        return;
    }
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => ADOPTING.store(true, Ordering::Relaxed),
        Err(e) => {
            warn!(error = %e, "cannot become a child subreaper: a process a child leaves behind outside its process group would outlive it")
        }
    }
}

/// Whether [`adopt_orphans`] made this process the reaper of its
/// children's orphans (never as PID 1).
pub fn is_adopting() -> bool {
    ADOPTING.load(Ordering::Relaxed)
}

/// Who is looking at /proc, for [`escaped_groups`].
#[derive(Clone, Copy)]
struct Scan {
    /// The proxy's pid.
    me: u32,
    /// The proxy's own process group.
    own_group: u32,
    /// The guard's pid (and group).
    guard: Option<u32>,
    /// Whether the proxy is a subreaper ([`adopt_orphans`]).
    adopting: bool,
}

/// From `(pid, ppid, pgrp)` rows: the process groups outside `owned` (the
/// children's) that hold descendants of the children, or of processes
/// the proxy adopted; and the adopted processes themselves. Never the
/// proxy's own group (a descendant may join it: it is in the same
/// session), which may hold the proxy's neighbours in a shell pipeline
/// (`mcp-proxy … | tee log`) or the program that started it.
fn escaped_groups(
    table: &[(u32, u32, u32)],
    owned: &HashSet<u32>,
    scan: Scan,
) -> (HashSet<u32>, HashSet<u32>) {
    let adopted = |pid: u32, ppid: u32| scan.adopting && ppid == scan.me && !owned.contains(&pid);
    // The children's groups and the proxy's adopted leftovers, then
    // everything descending from them.
    let mut tree: HashSet<u32> = table
        .iter()
        .filter(|&&(pid, ppid, pgrp)| {
            (owned.contains(&pgrp) && Some(pgrp) != scan.guard) || adopted(pid, ppid)
        })
        .map(|&(pid, _, _)| pid)
        .collect();
    loop {
        let before = tree.len();
        for &(pid, ppid, _) in table {
            if tree.contains(&ppid) {
                tree.insert(pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let groups = table
        .iter()
        .filter(|&&(pid, _, pgrp)| {
            tree.contains(&pid) && !owned.contains(&pgrp) && pgrp != scan.own_group && pgrp > 1
        })
        .map(|&(_, _, pgrp)| pgrp)
        .collect();
    let adopted = table
        .iter()
        .filter(|&&(pid, ppid, _)| adopted(pid, ppid))
        .map(|&(pid, _, _)| pid)
        .collect();
    (groups, adopted)
}

/// Passes over /proc that [`Children::kill_leftovers`] makes at most
/// (each finds what forked while the previous one stopped processes).
const LEFTOVER_PASSES: usize = 8;

/// `(pid, ppid, pgrp)` of every process that is not a zombie, from /proc.
fn process_groups_table() -> Vec<(u32, u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command: state, ppid, pgrp, …
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, ppid, pgrp))
        })
        .collect()
}

/// Pids of the processes in group `pgid` that are still running (not
/// zombies), read from /proc. Used to prove that nothing outlives a stop.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the parenthesised command: state, ppid, pgrp, …
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_parses_comments_quotes_and_export() {
        let vars = parse_env_file("# c\n\nexport A=1\nB=\"two words\"\nC='x=y'\n").unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
        assert!(parse_env_file("nonsense").unwrap_err().contains("line 1"));
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_and_takes_the_group() {
        let spec = ChildSpec {
            program: "sh".into(),
            // Ignores SIGTERM and stdin EOF; leaves a grandchild in its group.
            args: vec![
                "-c".into(),
                "trap '' TERM; sleep 1000 & while :; do sleep 1; done".into(),
            ],
            env: vec![],
            inherit_env: true,
            cwd: None,
            max_line_bytes: 1024,
            stdout_kind: StdoutKind::default(),
            grace: Duration::from_millis(200),
            children: Arc::default(),
            stderr_lines_per_second: 50,
            metrics: Default::default(),
        };
        let (child, _out) = ChildHandle::spawn(&spec, "test").unwrap();
        let pid = child.pid() as i32;
        let exit = tokio::time::timeout(Duration::from_secs(5), child.stop())
            .await
            .unwrap();
        assert_eq!(exit, Exit::Signal(9));
        // Nothing of the group is left running (zombies await their new parent, init).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(live_group_members(pid), Vec::<i32>::new());
    }

    /// A guard that stops reading (SIGSTOP) must not hang the proxy once
    /// its pipe is full (16,384 registrations: about 8,000 spawns), and is
    /// replaced by one that knows every live group.
    #[test]
    fn a_stopped_guard_never_blocks_the_proxy_and_is_replaced() {
        use std::os::unix::process::CommandExt;
        let children = Arc::new(Children::default());
        let first = children.start_guard().unwrap();
        /// Killed however the test ends.
        struct Member(std::process::Child);
        impl Drop for Member {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut member = Member(
            std::process::Command::new("sleep")
                .arg("1000")
                .process_group(0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pgid = member.0.id();
        lock(&children.groups).insert(pgid);
        children.with_guard(|g| g.register(pgid));
        nix::sys::signal::kill(Pid::from_raw(first as i32), Signal::SIGSTOP).unwrap();
        // Spawns and exits of other children: far more than the pipe holds.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let flood = children.clone();
        std::thread::spawn(move || {
            for i in 0..40_000u32 {
                flood.with_guard(|g| g.unregister(4_000_000 + i % 1000));
            }
            let _ = done_tx.send(());
        });
        let returned = done_rx.recv_timeout(Duration::from_secs(20)).is_ok();
        if !returned {
            // Frees the blocked writer (EPIPE) before the test fails.
            let _ = nix::sys::signal::kill(Pid::from_raw(first as i32), Signal::SIGKILL);
        }
        assert!(returned, "registering with a stopped guard blocked");
        let second = children.check_guard().expect("a stuck guard is replaced");
        assert_ne!(second, first);
        assert!(
            !std::path::Path::new(&format!("/proc/{first}")).exists(),
            "the stuck guard was not ended and reaped"
        );
        assert!(
            member.0.try_wait().unwrap().is_none(),
            "ending the stuck guard killed a child"
        );
        // The proxy dies: the new guard takes the group it was told about.
        let released = std::time::Instant::now();
        drop(lock(&children.guard).take());
        let _ = member.0.wait();
        assert!(released.elapsed() < Duration::from_secs(2));
        assert_eq!(live_group_members(pgid as i32), Vec::<i32>::new());
    }

    /// A spawn whose `exec` fails rebuilds the guard's table (its child
    /// registered itself first); the live children stay in it.
    #[tokio::test]
    async fn a_failed_spawn_leaves_the_live_children_with_the_guard() {
        let children = Arc::new(Children::default());
        children.start_guard().unwrap();
        let spec = |program: &str| ChildSpec {
            program: program.into(),
            args: vec!["-c".into(), "sleep 1000 & exec sleep 1000".into()],
            env: vec![],
            inherit_env: true,
            cwd: None,
            max_line_bytes: 1024,
            stdout_kind: StdoutKind::default(),
            grace: Duration::from_millis(200),
            children: children.clone(),
            stderr_lines_per_second: 50,
            metrics: Default::default(),
        };
        let (live, _io) = ChildHandle::spawn(&spec("sh"), "test").unwrap();
        let pgid = live.pid() as i32;
        assert!(ChildHandle::spawn(&spec("/nonexistent/mcp-server"), "test").is_err());
        // The proxy dies.
        drop(lock(&children.guard).take());
        let gone = tokio::time::timeout(Duration::from_secs(2), async {
            while !live_group_members(pgid).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        assert!(gone.is_ok(), "a live child left the guard's table");
    }

    /// Regression: in a host process (two proxies in one test binary), the
    /// once-a-second pass took the host's other processes for one proxy's
    /// adopted leftovers and registered their groups with that proxy's
    /// guard, which killed them when that proxy went away.
    #[test]
    fn the_escape_pass_leaves_the_hosts_other_processes_alone() {
        use std::os::unix::process::CommandExt;
        let children = Children::default();
        children.start_guard().unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        children.track_escaped();
        let registered = lock(&children.escaped).contains(&other.id());
        let _ = other.kill();
        let _ = other.wait();
        assert!(
            !registered,
            "a process of the host was registered with the guard"
        );
    }

    /// Regression: a descendant that joined the proxy's own process group
    /// (allowed: same session) had that group registered with the guard,
    /// which would kill the proxy's neighbours in it (`mcp-proxy | tee`,
    /// or the test runner that spawned the proxy) with a killed proxy.
    #[test]
    fn the_escape_pass_never_registers_the_proxys_own_group() {
        // The proxy 10 in group 5 (its shell's job, with `tee` 11), its
        // guard 12, its child 20 (group 20), whose child 21 joined group 5
        // and whose child 22 left for a session of its own.
        let table = [
            (10, 1, 5),
            (11, 1, 5),
            (12, 10, 12),
            (20, 10, 20),
            (21, 20, 5),
            (22, 20, 22),
        ];
        let owned = HashSet::from([20, 12]);
        let scan = Scan {
            me: 10,
            own_group: 5,
            guard: Some(12),
            adopting: true,
        };
        let (groups, adopted) = escaped_groups(&table, &owned, scan);
        assert_eq!(groups, HashSet::from([22]));
        assert!(adopted.is_empty());
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let spec = ChildSpec {
            program: "/nonexistent/mcp-server".into(),
            args: vec![],
            env: vec![],
            inherit_env: true,
            cwd: None,
            max_line_bytes: 1024,
            stdout_kind: StdoutKind::default(),
            grace: Duration::from_millis(200),
            children: Arc::default(),
            stderr_lines_per_second: 50,
            metrics: Default::default(),
        };
        let err = ChildHandle::spawn(&spec, "test").err().unwrap();
        assert!(err.to_string().contains("/nonexistent/mcp-server"));
    }
}
