//! Spinning before the runtime sleeps (`--idle-spin`): a short wait for
//! the next event with the CPU kept awake, on machines where waking a
//! sleeping CPU is dear.
//!
//! A proxied call waits twice in the proxy: for the child's answer, then
//! for the client's next request. Each wait that ends in a sleep ends in
//! a wake-up, and on a virtual machine whose idle vCPUs halt at once
//! (`haltpoll` with `guest_halt_poll_ns` 0, as on the build VM of
//! bench/README.md) a wake-up is a VM exit that costs tens of µs. A guest
//! kernel's default idle driver polls for up to 200 µs before it halts;
//! this does the same for the proxy's one runtime thread alone.
//!
//! Owns: the hooks given to the current-thread runtime's builder. Before
//! the thread parks it asks the runtime's own epoll instance, without
//! taking its events (`poll` on the epoll descriptor), whether anything is
//! ready, until something is or the budget has passed; then the runtime
//! parks as always, and returns at once when an event came. The spin is
//! adaptive, as the kernel's haltpoll is: it is armed only while waits end
//! within the budget (a proxy in a run of calls), so an idle proxy, whose
//! waits are long, never spins. It is off on a machine (or a cgroup quota)
//! with fewer than two CPUs, where the spin would hold the CPU the child
//! needs to answer.
//!
//! What it costs: up to the budget of CPU for each wait of a busy proxy,
//! counted as the proxy's CPU (and against a container's CPU limit). A
//! timer due during a spin fires at its end, at most the budget late.
//! When the runtime ends, a debug line says how many spins saw an event.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

/// `--idle-spin` default: off. Measured on the build VM (bench/README.md)
/// its effect on the p50 was within that machine's noise, and every
/// spin is CPU the proxy is charged for.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::ZERO;

/// Most `--idle-spin`: past it a spin costs more CPU than any wake-up.
pub const MAX_IDLE_SPIN: Duration = Duration::from_millis(1);

/// The hooks' shared state.
#[derive(Debug)]
struct Shared {
    budget: Duration,
    /// The runtime's epoll descriptor, or -1 until it is known (and for
    /// good when it could not be found: no spin then).
    poller: AtomicI32,
    /// Whether the next park spins: the last wait ended within the budget.
    armed: AtomicBool,
    /// When the last park began (its spin included), in ns since `base`.
    parked_at: AtomicU64,
    base: Instant,
    /// Spins that saw an event (the park then returned at once), and all.
    hits: AtomicU64,
    spins: AtomicU64,
}

/// Hooks on a current-thread runtime's builder; see the module docs.
#[derive(Debug, Clone)]
pub struct IdleSpin {
    shared: Arc<Shared>,
}

impl IdleSpin {
    /// Installs the hooks on `builder` (a current-thread runtime's), unless
    /// `budget` is zero or the process may use fewer than two CPUs. Call
    /// [`IdleSpin::attach`] once the runtime is built; until then the
    /// hooks do nothing.
    pub fn install(builder: &mut tokio::runtime::Builder, budget: Duration) -> Option<IdleSpin> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if budget.is_zero() || cpus < 2 {
            return None;
        }
        let spin = IdleSpin {
            shared: Arc::new(Shared {
                budget,
                poller: AtomicI32::new(-1),
                armed: AtomicBool::new(false),
                parked_at: AtomicU64::new(0),
                base: Instant::now(),
                hits: AtomicU64::new(0),
                spins: AtomicU64::new(0),
            }),
        };
        let park = spin.shared.clone();
        let unpark = spin.shared.clone();
        builder
            .on_thread_park(move || park.park())
            .on_thread_unpark(move || unpark.unpark());
        Some(spin)
    }

    /// Points the hooks at `runtime`'s epoll instance; `false`, and no
    /// spin, when it cannot be found. A socket registered with the
    /// runtime shows which: its descriptor is listed (`tfd:`) in the
    /// /proc fdinfo of that instance only, whatever other runtimes the
    /// process has.
    pub fn attach(&self, runtime: &tokio::runtime::Runtime) -> bool {
        use std::os::fd::AsRawFd;
        let _in = runtime.enter();
        let Ok((probe, _other)) = tokio::net::UnixStream::pair() else {
            return false;
        };
        let Some(fd) = poller_of(probe.as_raw_fd()) else {
            return false;
        };
        self.shared.poller.store(fd, Ordering::Relaxed);
        true
    }

    /// Spins so far, and those that saw an event before the budget ran out.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.spins.load(Ordering::Relaxed),
            self.shared.hits.load(Ordering::Relaxed),
        )
    }
}

impl Shared {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn park(&self) {
        let start = self.now();
        self.parked_at.store(start, Ordering::Relaxed);
        let fd = self.poller.load(Ordering::Relaxed);
        if fd < 0 || !self.armed.load(Ordering::Relaxed) {
            return;
        }
        self.spins.fetch_add(1, Ordering::Relaxed);
        let budget = self.budget.as_nanos() as u64;
        let mut ready = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, no timeout. An epoll descriptor
            // reads as ready while it holds events; polling it takes none.
            if unsafe { libc::poll(&mut ready, 1, 0) } > 0 {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if self.now().saturating_sub(start) >= budget {
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn unpark(&self) {
        let waited = self
            .now()
            .saturating_sub(self.parked_at.load(Ordering::Relaxed));
        self.armed.store(
            arm_after(Duration::from_nanos(waited), self.budget),
            Ordering::Relaxed,
        );
    }
}

impl Drop for Shared {
    /// With the runtime: how the spins went, for whoever tunes the budget.
    fn drop(&mut self) {
        let spins = *self.spins.get_mut();
        let hits = *self.hits.get_mut();
        tracing::debug!(
            spins,
            hits,
            "idle spin: {hits} of {spins} spins saw an event within the budget"
        );
    }
}

/// Whether to spin at the next park after a wait of `waited`: only while
/// waits end within the budget, so a proxy between calls seconds apart
/// never spins, and one in a run of calls does.
fn arm_after(waited: Duration, budget: Duration) -> bool {
    waited <= budget
}

/// The epoll descriptor of this process that watches `target`: the
/// `anon_inode:[eventpoll]` in /proc/self/fd whose fdinfo has a `tfd:`
/// line for it. `None` where /proc cannot be read.
fn poller_of(target: RawFd) -> Option<RawFd> {
    let target = target.to_string();
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]")
        })
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .find(|fd| {
            std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
                info.lines().any(|l| {
                    let mut words = l.split_whitespace();
                    words.next() == Some("tfd:") && words.next() == Some(target.as_str())
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_only_while_waits_end_within_the_budget() {
        let budget = Duration::from_micros(50);
        assert!(arm_after(Duration::from_micros(20), budget));
        assert!(arm_after(budget, budget));
        assert!(!arm_after(Duration::from_micros(51), budget));
        assert!(!arm_after(Duration::from_secs(3), budget));
    }

    /// Only one runtime's epoll instance watches the probe, however many
    /// the process has (the other tests' runtimes run beside this one).
    #[test]
    fn the_runtimes_own_epoll_instance_is_found() {
        let others: Vec<_> = (0..3)
            .map(|_| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _in = rt.enter();
                let pair = tokio::net::UnixStream::pair().unwrap();
                drop(_in);
                (rt, pair)
            })
            .collect();
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        let Some(spin) = IdleSpin::install(&mut b, Duration::from_millis(1)) else {
            assert!(std::thread::available_parallelism().map_or(1, usize::from) < 2);
            return;
        };
        let rt = b.build().unwrap();
        assert!(spin.attach(&rt));
        let ours = spin.shared.poller.load(Ordering::Relaxed);
        for (_rt, pair) in &others {
            use std::os::fd::AsRawFd;
            let theirs = poller_of(pair.0.as_raw_fd()).unwrap();
            assert_ne!(theirs, ours);
        }
    }

    /// Events that come within the budget end the spin, and the park
    /// that follows returns at once: the runtime's wait for a pipe that a
    /// thread writes 200 µs later is answered from the spin.
    #[test]
    fn a_spin_sees_the_runtimes_events_without_taking_them() {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        let Some(spin) = IdleSpin::install(&mut b, Duration::from_millis(20)) else {
            return;
        };
        let rt = b.build().unwrap();
        assert!(spin.attach(&rt));
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let mut b = tokio::net::UnixStream::from_std(b).unwrap();
            let mut buf = [0u8; 1];
            for round in 0..20u8 {
                let mut writer = a.try_clone().unwrap();
                let t = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_micros(200));
                    std::io::Write::write_all(&mut writer, &[round]).unwrap();
                });
                b.read_exact(&mut buf).await.unwrap();
                assert_eq!(buf[0], round, "every byte arrives, in order");
                t.join().unwrap();
            }
        });
        let (spins, hits) = spin.counts();
        // The first wait is not armed; once waits end within 20 ms, the
        // spins see the byte come (a loaded machine may miss a few).
        assert!(spins >= 10, "spins {spins}");
        assert!(hits * 2 >= spins, "spins {spins}, hits {hits}");
    }
}
