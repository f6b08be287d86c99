//! The guard: a tiny process that kills every child's process group when
//! the proxy dies, however it dies (SIGKILL, OOM killer, a panic in a
//! signal handler), so no MCP server or its `npx`/`uvx` grandchildren
//! outlive it.
//!
//! Why not `PR_SET_PDEATHSIG`: it fires when the *thread* that spawned the
//! child exits, not the process, and tokio spawns from worker and blocking
//! threads that come and go; it also reaches only the direct child, never
//! the grandchildren in its group.
//!
//! Design: at start the proxy forks one guard (no exec, so it works in any
//! host process, the test harness included). The guard keeps only the read
//! end of a pipe whose write end only the proxy holds (close-on-exec, so
//! children never keep it). A child writes its own process group id
//! between `fork` and `exec` ([`register_self`]), so a proxy killed while
//! the child is being spawned still takes it; the proxy writes the id
//! again once the spawn returns (the guard keeps it once), and its negation
//! once the group is gone. A child whose `exec` failed had registered an id
//! that is about to be free for reuse: the proxy then rebuilds the guard's
//! table ([`Guard::resync`]). When the
//! proxy dies the kernel closes the write end; the guard reads EOF, sends
//! SIGKILL to every group still registered and exits. Between `fork` and
//! `_exit` the guard calls only async-signal-safe system calls and never
//! allocates: its table is allocated before the fork.
//!
//! Measured (README, "What happens when the proxy is killed"): children and
//! grandchildren are gone within milliseconds of `kill -9`.
//!
//! A guard that is itself killed is replaced within a second
//! ([`crate::child::Children::check_guard`]), and so is one that stops
//! reading (SIGSTOP, a frozen cgroup): the write end is non-blocking, so a
//! full pipe costs a registration, never a hung proxy, and marks the guard
//! stuck.
//!
//! A descendant that left its child's group (`setsid`, a daemonising
//! server) is taken two ways: the proxy registers the groups such
//! descendants made, as it does the children's, once a second
//! ([`crate::child::Children::track_escaped`]); and on EOF the guard
//! first stops (SIGSTOP) every registered group, then searches /proc for
//! the descendants of their members outside them, stopping each as it is
//! found so the search ends, and kills them with the groups. Not covered:
//! such a group made in the last second whose parent exited before the
//! search (it belongs to init by then), and the proxy and its guard
//! killed at once (`pkill -9 -f mcp-proxy`).
//!
//! The cost of the child's registration: a `pre_exec` hook makes the
//! standard library `fork` where it would otherwise `posix_spawn` (a
//! `vfork`), so each spawn copies the proxy's page tables (measured in
//! the commit that added it).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use nix::libc;
use nix::unistd::{ForkResult, Pid};
use tracing::warn;

/// Process groups the guard can track at once; registrations beyond it are
/// kept by the proxy only (a warning says so, once, when a spawn passes it:
/// `--max-sessions` is 256 by default, so only a raised cap reaches it).
pub const GUARD_GROUPS: usize = 16 * 1024;

/// Processes outside the registered groups that the guard stops and
/// kills when the proxy dies: descendants of the groups' members that left
/// them (`setsid`, a daemonising server, and their own descendants). Past
/// it, the rest outlive the proxy.
pub const GUARD_ESCAPED: usize = 4096;

/// Passes over /proc the guard makes at most to find them (each finds
/// what forked while the previous one stopped processes, and the children
/// of what it found).
const ESCAPE_PASSES: usize = 32;

/// Entries of a [`Guard::resync`] per write: within `PIPE_BUF` (4,096
/// bytes), which a pipe takes whole or not at all.
const RESYNC_ENTRIES: usize = 1024;

/// Registers the calling process (a child between `fork` and `exec`) as a
/// process group with the guard whose write end is `fd`, so that a proxy
/// killed before its own registration still takes the child (see the
/// module documentation). The write cannot block (the end is
/// non-blocking); if the guard's pipe is full, the proxy's own
/// registration after the spawn finds that out.
///
/// # Safety
/// For `pre_exec` only: it makes two async-signal-safe system calls and
/// touches nothing but its stack. `fd` must be the write end of a live
/// guard ([`Guard::raw_fd`]), kept open until the spawn returns.
pub unsafe fn register_self(fd: std::os::fd::RawFd) {
    // SAFETY: see the function's contract.
    unsafe {
        let v = libc::getpid().to_le_bytes();
        libc::write(fd, v.as_ptr().cast(), v.len());
    }
}

/// The proxy's end of the guard.
pub struct Guard {
    pid: Pid,
    /// The write end; closing it (drop, or the proxy's death) releases the guard.
    pipe: Mutex<Option<File>>,
    /// Registrations the guard could not take (write failed).
    failed: std::sync::atomic::AtomicBool,
    /// The pipe was full: the guard stopped reading (see the module
    /// documentation) and is to be replaced.
    stuck: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("pid", &self.pid).finish()
    }
}

impl Guard {
    /// Forks the guard process.
    pub fn start() -> std::io::Result<Guard> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // The proxy's end only: the guard's reads stay blocking.
        nix::fcntl::fcntl(
            &write,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // Allocated before the fork: the guard must not allocate.
        let mut table = vec![0i32; GUARD_GROUPS];
        let mut escaped = vec![0i32; GUARD_ESCAPED];
        // SAFETY: the child branch runs `guard_main`, which only makes
        // async-signal-safe system calls on memory that already exists and
        // ends in `_exit`; it never returns into Rust code that could touch
        // locks or the allocator another thread held at fork time.
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => unsafe {
                guard_main(
                    read.as_raw_fd(),
                    (table.as_mut_ptr(), table.len()),
                    (escaped.as_mut_ptr(), escaped.len()),
                )
            },
            ForkResult::Parent { child } => {
                drop(read);
                drop(table);
                drop(escaped);
                Ok(Guard {
                    pid: child,
                    pipe: Mutex::new(Some(File::from(write))),
                    failed: Default::default(),
                    stuck: Default::default(),
                })
            }
        }
    }

    /// The guard's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Whether the guard process has ended (it is reaped if so).
    pub fn has_exited(&self) -> bool {
        !matches!(
            nix::sys::wait::waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        )
    }

    /// Whether a registration found the pipe full: the guard is alive but
    /// not reading (stopped), and no longer knows every group.
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends a guard that is alive but of no use ([`Guard::is_stuck`])
    /// without it killing anything: SIGKILL ends it before it reads the
    /// end of its pipe (a stopped process dies of SIGKILL too), and it is
    /// reaped before the pipe closes.
    pub fn discard(self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    /// The write end's descriptor, for [`register_self`] in a child being
    /// spawned. It stays open only while the caller holds whatever keeps
    /// this guard from being replaced (`Children` holds its lock).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        let pipe = crate::lock(&self.pipe);
        pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Starts the guard's table over with `groups` (the guard's own pid
    /// left out): after a spawn whose child registered itself and then
    /// failed to exec, so that no stale id is ever killed. Each write is
    /// within `PIPE_BUF`, which a pipe takes whole: up to 1,023 groups the
    /// rebuild is one write and the guard never acts on half of it; past
    /// that (a raised `--max-sessions`), a proxy killed between two writes
    /// leaves the later groups out.
    pub fn resync(&self, groups: impl Iterator<Item = u32>) {
        let mut all = vec![0i32];
        all.extend(groups.filter(|&g| g != self.pid()).map(|g| g as i32));
        let mut pipe = crate::lock(&self.pipe);
        let Some(file) = pipe.as_mut() else { return };
        for part in all.chunks(RESYNC_ENTRIES) {
            let bytes: Vec<u8> = part.iter().flat_map(|v| v.to_le_bytes()).collect();
            if let Err(e) = file.write_all(&bytes) {
                self.stuck.store(true, std::sync::atomic::Ordering::Relaxed);
                warn!(error = %e, guard = self.pid(), "could not rebuild the guard's table: replacing it");
                return;
            }
        }
    }

    /// Tells the guard about a new child process group (again, if it
    /// registered itself: the guard keeps each group once).
    pub fn register(&self, pgid: u32) {
        self.send(pgid as i32);
    }

    /// Tells the guard a group is gone (so a reused id is never killed).
    pub fn unregister(&self, pgid: u32) {
        self.send(-(pgid as i32));
    }

    fn send(&self, v: i32) {
        let mut pipe = crate::lock(&self.pipe);
        let Some(file) = pipe.as_mut() else { return };
        // 4 bytes: atomic on a pipe, so a write is whole or not at all.
        // The guard reads continuously; a full pipe means it stopped.
        let mut written = file.write(&v.to_le_bytes());
        while matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::Interrupted) {
            written = file.write(&v.to_le_bytes());
        }
        match written {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !self.stuck.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    warn!(
                        guard = self.pid(),
                        "the guard process stopped reading (stopped or frozen): replacing it"
                    );
                }
            }
            Err(e) => {
                if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    warn!(error = %e, guard = self.pid(), "the guard process is gone: children would outlive a killed proxy");
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // EOF releases the guard; it exits at once (every group it knew was
        // unregistered by then, or is killed now). Reap it.
        crate::lock(&self.pipe).take();
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// The guard process. Only async-signal-safe calls from here on.
/// `groups` and `escaped` are (pointer, length) of initialised i32s owned
/// by this (forked) process: the registered groups, and room for the
/// processes that left them.
unsafe fn guard_main(fd: i32, groups: (*mut i32, usize), escaped: (*mut i32, usize)) -> ! {
    let (table, cap) = groups;
    // SAFETY (whole body): plain system calls on integers and on `table`,
    // which is `cap` initialised i32s.
    unsafe {
        // Out of the proxy's process group, so a terminal's ^C or a
        // `kill -TERM -<pgid>` meant for the proxy does not end the guard
        // before the proxy has stopped its children.
        libc::setpgid(0, 0);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let name = b"mcp-proxy-guard\0";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        // Keep only the pipe, as fd 0: nothing else of the proxy (its
        // listening socket, client connections, the write end) stays open here.
        if fd != 0 {
            libc::dup2(fd, 0);
        }
        if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
            for other in 1..65536 {
                libc::close(other);
            }
        }
        let mut len = 0usize;
        let mut buf = [0u8; 4];
        'read: loop {
            let mut got = 0usize;
            while got < 4 {
                let n = libc::read(0, buf.as_mut_ptr().add(got) as *mut libc::c_void, 4 - got);
                if n == 0 {
                    break 'read;
                }
                if n < 0 {
                    if *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    break 'read;
                }
                got += n as usize;
            }
            let v = i32::from_le_bytes(buf);
            if v > 0 {
                let mut known = false;
                let mut i = 0;
                while i < len && !known {
                    known = *table.add(i) == v;
                    i += 1;
                }
                if !known && len < cap {
                    *table.add(len) = v;
                    len += 1;
                }
            } else if v == 0 {
                // A resync: the groups that follow are all there are.
                len = 0;
            } else {
                let gone = -v;
                let mut i = 0;
                while i < len {
                    if *table.add(i) == gone {
                        len -= 1;
                        *table.add(i) = *table.add(len);
                    } else {
                        i += 1;
                    }
                }
            }
        }
        // The groups first, stopped: nothing in them forks from here on.
        for i in 0..len {
            libc::kill(-*table.add(i), libc::SIGSTOP);
        }
        let groups = std::slice::from_raw_parts(table, len);
        let escaped = std::slice::from_raw_parts_mut(escaped.0, escaped.1);
        let found = find_escaped(groups, escaped);
        for &pid in &escaped[..found] {
            libc::kill(pid, libc::SIGKILL);
        }
        for &group in groups {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::_exit(0)
    }
}

/// Fills `out` with the live processes outside `groups` that descend from
/// a member of one (through processes outside them too), each stopped
/// (SIGSTOP) as it is found so that it forks no more; returns how many.
/// A process whose parent exited before the search (re-parented to init)
/// is not found. Async-signal-safe: system calls and the stack only.
///
/// # Safety
/// Called in the guard only (see [`guard_main`]).
unsafe fn find_escaped(groups: &[i32], out: &mut [i32]) -> usize {
    let mut n = 0;
    for _ in 0..ESCAPE_PASSES {
        let before = n;
        // SAFETY: the guard's context; the closure only reads and writes `out`.
        unsafe {
            for_each_process(|pid, ppid, pgrp| {
                if n == out.len() || groups.contains(&pgrp) || out[..n].contains(&pid) {
                    return;
                }
                // Init's and the kernel's children are nobody's leftovers.
                if ppid <= 1 {
                    return;
                }
                let from_tree = out[..n].contains(&ppid)
                    || stat_of(ppid)
                        .is_some_and(|(_, parent_group)| groups.contains(&parent_group));
                if from_tree {
                    libc::kill(pid, libc::SIGSTOP);
                    out[n] = pid;
                    n += 1;
                }
            });
        }
        if n == before {
            break;
        }
    }
    n
}

/// Calls `f(pid, ppid, pgrp)` for every process in /proc that is not a
/// zombie. Async-signal-safe: `open`, `getdents64`, `read` and `close` on
/// stack buffers.
unsafe fn for_each_process(mut f: impl FnMut(i32, i32, i32)) {
    // SAFETY: system calls on a descriptor opened here and on stack
    // buffers of the lengths given; each directory entry is read within
    // the bytes the kernel returned.
    unsafe {
        let dir = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return;
        }
        // u64s: entries are 8-byte aligned within it.
        let mut buf = [0u64; 1024];
        loop {
            let got = libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                std::mem::size_of_val(&buf),
            );
            if got <= 0 {
                break;
            }
            let base = buf.as_ptr().cast::<u8>();
            let mut at = 0usize;
            while at < got as usize {
                // struct linux_dirent64: d_ino u64, d_off i64, d_reclen
                // u16 at 16, d_type u8 at 18, d_name from 19, NUL-ended.
                let entry = base.add(at);
                let reclen = std::ptr::read_unaligned(entry.add(16).cast::<u16>()) as usize;
                if reclen == 0 {
                    break;
                }
                let name = entry.add(19);
                let mut pid: i32 = 0;
                let mut i = 0;
                let mut digits = true;
                while at + 19 + i < at + reclen {
                    let b = *name.add(i);
                    if b == 0 {
                        break;
                    }
                    if !b.is_ascii_digit() || pid > i32::MAX / 10 - 1 {
                        digits = false;
                        break;
                    }
                    pid = pid * 10 + i32::from(b - b'0');
                    i += 1;
                }
                if digits
                    && i > 0
                    && let Some((ppid, pgrp)) = stat_of(pid)
                {
                    f(pid, ppid, pgrp);
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
}

/// `(ppid, pgrp)` of `pid` from `/proc/<pid>/stat`, unless it is gone or
/// a zombie. Async-signal-safe.
unsafe fn stat_of(pid: i32) -> Option<(i32, i32)> {
    // "/proc/" + at most 10 digits + "/stat" + NUL.
    let mut path = [0u8; 32];
    path[..6].copy_from_slice(b"/proc/");
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = pid;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 || d == digits.len() {
            break;
        }
    }
    let mut at = 6;
    while d > 0 {
        d -= 1;
        path[at] = digits[d];
        at += 1;
    }
    path[at..at + 5].copy_from_slice(b"/stat");
    // SAFETY: a NUL-terminated path and a stack buffer of the length given.
    let (text, len) = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        // The fields up to pgrp come early: the command is at most 64 bytes.
        let mut text = [0u8; 512];
        let n = libc::read(fd, text.as_mut_ptr().cast(), text.len());
        libc::close(fd);
        if n <= 0 {
            return None;
        }
        (text, n as usize)
    };
    // After the last ')' (the command may hold one): " S ppid pgrp …".
    let close = text[..len].iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..len]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = fields.next()?;
    if state == b"Z" {
        return None;
    }
    let number = |f: &[u8]| -> Option<i32> {
        let mut v: i32 = 0;
        for &b in f {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
        }
        Some(v)
    };
    let ppid = number(fields.next()?)?;
    let pgrp = number(fields.next()?)?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::time::{Duration, Instant};

    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    }

    #[test]
    fn releasing_the_guard_kills_registered_groups_and_spares_unregistered_ones() {
        let spawn = || {
            std::process::Command::new("sh")
                .args(["-c", "sleep 1000 & exec sleep 1000"])
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut doomed = spawn();
        let mut spared = spawn();
        let guard = Guard::start().unwrap();
        assert!(running(guard.pid()));
        guard.register(doomed.id());
        guard.register(spared.id());
        guard.unregister(spared.id());
        // What the proxy's death does: the write end closes.
        let released = Instant::now();
        drop(guard);
        let _ = doomed.wait();
        assert!(released.elapsed() < Duration::from_secs(2));
        assert_eq!(
            crate::child::live_group_members(doomed.id() as i32),
            Vec::<i32>::new()
        );
        assert!(
            spared.try_wait().unwrap().is_none(),
            "an unregistered group was killed"
        );
        let _ = nix::sys::signal::killpg(
            Pid::from_raw(spared.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = spared.wait();
    }

    /// Regression: a process that left its group (`setsid`, and what it
    /// started in its new session) outlived a proxy killed with SIGKILL,
    /// since the guard killed the registered groups only.
    #[test]
    fn releasing_the_guard_kills_descendants_that_left_their_group() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "setsid sh -c 'sleep 1000 & echo $!; exec sleep 1000' & wait",
            ])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let nested: u32 = line.trim().parse().unwrap();
        // The session leader: the nested `sleep`'s parent.
        let leader = std::fs::read_to_string(format!("/proc/{nested}/stat"))
            .unwrap()
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap();
        assert!(running(nested) && running(leader));
        let guard = Guard::start().unwrap();
        guard.register(child.id());
        let released = Instant::now();
        drop(guard);
        let _ = child.wait();
        while (running(nested) || running(leader)) && released.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<u32> = [nested, leader]
            .into_iter()
            .filter(|&p| running(p))
            .collect();
        for &pid in &left {
            let _ = nix::sys::signal::kill(
                Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert_eq!(left, Vec::<u32>::new(), "outlived the guard's release");
    }

    /// A child registers itself before `exec`, so a proxy killed before it
    /// could register the child (here: it never does) still takes it.
    #[test]
    fn a_child_that_registered_itself_dies_with_the_proxy() {
        let guard = Guard::start().unwrap();
        let fd = guard.raw_fd().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 1000 & exec sleep 1000"])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: what `child::ChildHandle::spawn` does.
        unsafe {
            cmd.pre_exec(move || {
                register_self(fd);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pgid = child.id() as i32;
        drop(guard);
        let released = Instant::now();
        let mut status = None;
        while status.is_none() && released.elapsed() < Duration::from_secs(2) {
            status = child.try_wait().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = status.is_some_and(|s| s.signal() == Some(libc::SIGKILL));
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        assert!(
            killed,
            "the guard did not take a child that registered itself"
        );
        assert_eq!(crate::child::live_group_members(pgid), Vec::<i32>::new());
    }
}
