//! The child's life: when its output ends (it closed stdout, or the
//! worker could not route it), what happens next: requests in flight fail;
//! a shared child is restarted with backoff and re-initialized with the
//! cached parameters; a per-session child ends its session. The worker
//! ([`super::worker`]) reads the child; this task only watches its life.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::worker::Command;
use super::{DEFAULT_HANDSHAKE_TIMEOUT, Health, Upstream, lock};
use crate::child::ChildHandle;
use crate::version::UpstreamProtocol;

/// How long the supervisor waits, after the child's stdout closed, for the
/// exit that usually comes with it (to report it) before stopping a child
/// that keeps running without its stdout.
pub(super) const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// Quick deaths in a row (each before `--restart-max-backoff` of uptime)
/// after which a restarted shared child that nothing initialized yet is
/// not reported ready on its own ([`Health::CrashLooping`]).
pub(super) const CRASHES_NOT_READY: u32 = 3;

/// The first wait before restarting a crashed shared child (or
/// `--restart-max-backoff` if that is shorter); it doubles with every
/// crash up to `--restart-max-backoff`.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The wait before the next restart: back to the first after a child that
/// stayed up longer than the longest wait (it was healthy), else `prev`,
/// which doubles after each restart. Never above `cap`.
pub(super) fn next_backoff(prev: Duration, uptime: Duration, cap: Duration) -> Duration {
    if uptime >= cap { FIRST_BACKOFF } else { prev }.min(cap)
}

impl Upstream {
    /// After a restart, gives the new child what the sessions had asked of
    /// the old one: their resource subscriptions and the log level.
    pub(super) async fn restore_sessions_state(self: &Arc<Self>) {
        if self.era() == UpstreamProtocol::Modern {
            // A 2026-07-28 child has neither; listeners carry them per request.
            return;
        }
        let Some((uris, level)) = self.ask(|done| Command::SessionsState { done }).await else {
            return;
        };
        if !uris.is_empty() {
            info!(
                subscriptions = uris.len(),
                "restoring resource subscriptions at the restarted child"
            );
        }
        for uri in uris {
            self.fire_and_forget("resources/subscribe", serde_json::json!({ "uri": uri }))
                .await;
        }
        if let Some(level) = level {
            self.set_child_level(level).await;
        }
    }

    pub(super) async fn supervise(
        this: Weak<Upstream>,
        mut child: ChildHandle,
        ended: oneshot::Receiver<&'static str>,
    ) {
        // `None` after a failed respawn: there is no output to read.
        let mut ended = Some(ended);
        let mut backoff = FIRST_BACKOFF;
        let mut spawned_at = tokio::time::Instant::now();
        let mut quick_deaths = 0u32;
        loop {
            let Some(up) = this.upgrade() else {
                child.stop().await;
                return;
            };
            let cancel = up.cancel.clone();
            drop(up);
            // The worker says when the child's output ends; it fails what
            // is in flight itself when the proxy stops.
            let why = match ended.take() {
                Some(rx) => tokio::select! {
                    why = rx => why.unwrap_or("the proxy is stopping"),
                    _ = cancel.cancelled() => "the proxy is stopping",
                },
                None => "the MCP server could not be restarted",
            };
            // A crash closes stdout and exits together: name the exit when
            // it follows at once; a child that runs on without its stdout
            // is stopped below all the same.
            let why = match tokio::time::timeout(EXIT_AFTER_EOF, child.exited()).await {
                Ok(exit) if !cancel.is_cancelled() => {
                    format!("the MCP server process exited ({exit})")
                }
                _ => why.to_string(),
            };
            let why = why.as_str();
            let Some(up) = this.upgrade() else {
                child.stop().await;
                return;
            };
            let restart = up.opts.shared && !up.opts.exit_on_child_exit && !cancel.is_cancelled();
            // First fail what is in flight (nobody waits for the stop), then
            // stop the child: one that closed its stdout and runs on is no
            // use, and one that already exited is only reaped.
            up.tidy(Command::ChildGone {
                why: why.to_string(),
                close_sessions: !restart,
            });
            drop(up);
            let exit = child.stop().await;
            let Some(up) = this.upgrade() else { return };
            if !restart {
                up.health.send_replace(Health::Dead(exit.to_string()));
                up.final_exit.send_replace(Some(exit));
                return;
            }
            let uptime = spawned_at.elapsed();
            quick_deaths = if uptime >= up.opts.restart_max_backoff {
                0
            } else {
                quick_deaths.saturating_add(1)
            };
            backoff = next_backoff(backoff, uptime, up.opts.restart_max_backoff);
            warn!(status = %exit, backoff_ms = backoff.as_millis() as u64, "shared child exited; restarting it");
            up.health.send_replace(Health::Starting);
            *lock(&up.child) = None;
            drop(up);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return,
            }
            let Some(up) = this.upgrade() else { return };
            match ChildHandle::spawn(&up.spec, &up.label) {
                Ok((c, r)) => {
                    up.spec.metrics.restarted();
                    child = c;
                    let (tx, rx) = oneshot::channel();
                    ended = Some(rx);
                    up.tidy(Command::Child {
                        io: Box::new(r),
                        ended: tx,
                    });
                    spawned_at = tokio::time::Instant::now();
                    *lock(&up.child) = Some(child.clone());
                    up.initialized_sent.store(false, Ordering::SeqCst);
                    let reinit = up.clone();
                    let crash_loop = quick_deaths >= CRASHES_NOT_READY;
                    let pid = child.pid();
                    // Re-initialize with the cached parameters, off the read path.
                    up.tasks.spawn(async move {
                        let cached = reinit.init.lock().await.clone();
                        match cached {
                            Some(c) => {
                                let budget = reinit
                                    .opts
                                    .request_timeout
                                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
                                let deadline = Instant::now() + budget;
                                match reinit.handshake(&c.params, deadline).await {
                                    Ok(_) => {
                                        reinit.send_initialized().await;
                                        reinit.restore_sessions_state().await;
                                        reinit.health.send_replace(Health::Ready);
                                        info!("shared child restarted and re-initialized");
                                    }
                                    Err(e) => {
                                        // A child that cannot be initialized is no use:
                                        // stop it, and the supervisor starts another.
                                        warn!(error = %e, "re-initializing the restarted child failed; stopping it");
                                        let child = lock(&reinit.child).clone();
                                        if let Some(child) = child {
                                            child.stop().await;
                                        }
                                    }
                                }
                            }
                            None if !crash_loop => {
                                reinit.health.send_replace(Health::Ready);
                            }
                            None => {
                                // Never initialized and dying young: not
                                // ready until a child stays up as long as
                                // the longest backoff (or a handshake works).
                                warn!(
                                    quick_deaths,
                                    "the shared MCP server keeps exiting before anything initialized it; /ready answers 503 until one stays up for --restart-max-backoff"
                                );
                                reinit.health.send_replace(Health::CrashLooping);
                                let probation = reinit.opts.restart_max_backoff;
                                tokio::select! {
                                    _ = tokio::time::sleep(probation) => {}
                                    _ = reinit.cancel.cancelled() => return,
                                }
                                if reinit.pid() == Some(pid) {
                                    reinit.health.send_if_modified(|h| {
                                        let stuck = *h == Health::CrashLooping;
                                        if stuck {
                                            *h = Health::Ready;
                                        }
                                        stuck
                                    });
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "restarting the shared child failed");
                    backoff = (backoff * 2).min(up.opts.restart_max_backoff);
                    spawned_at = tokio::time::Instant::now();
                    // Loop again with a dead child handle and nothing to read.
                    continue;
                }
            }
            backoff = (backoff * 2).min(up.opts.restart_max_backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_backs_off_and_a_child_that_stayed_up_starts_over() {
        let cap = Duration::from_secs(30);
        let mut wait = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..12 {
            // Each child crashes at once: the wait doubles up to the cap.
            wait = next_backoff(wait, Duration::from_millis(5), cap);
            waits.push(wait.as_millis());
            wait = (wait * 2).min(cap);
        }
        assert_eq!(&waits[..4], [100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 30_000);
        assert_eq!(
            next_backoff(cap, Duration::from_secs(31), cap),
            FIRST_BACKOFF
        );
    }

    #[test]
    fn a_cap_below_the_first_wait_bounds_every_wait() {
        let cap = Duration::from_millis(10);
        assert_eq!(next_backoff(FIRST_BACKOFF, Duration::ZERO, cap), cap);
        assert_eq!(next_backoff(cap, Duration::from_secs(1), cap), cap);
    }
}
