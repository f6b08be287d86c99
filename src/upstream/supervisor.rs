//! The child's life: the reader of its stdout (its own task, so that a
//! panic while routing is handled as the child's death), what happens when
//! it ends (requests in flight fail; a shared child is restarted with
//! backoff and re-initialized with the cached parameters; a per-session
//! child ends its session), and the lines it writes that cannot be routed
//! (over the line cap, not JSON-RPC).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use super::routes::related_call;
use super::{DEFAULT_HANDSHAKE_TIMEOUT, Health, Upstream, lock};
use crate::child::ChildHandle;
use crate::jsonrpc::{self, Frame, LineError, code};

/// How long the supervisor waits, after the child's stdout closed, for the
/// exit that usually comes with it (to report it) before stopping a child
/// that keeps running without its stdout.
pub(super) const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// Quick deaths in a row (each before `--restart-max-backoff` of uptime)
/// after which a restarted shared child that nothing initialized yet is
/// not reported ready on its own ([`Health::CrashLooping`]).
pub(super) const CRASHES_NOT_READY: u32 = 3;

/// The first wait before restarting a crashed shared child; it doubles
/// with every crash up to `--restart-max-backoff`.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The wait before the next restart: back to the first after a child that
/// stayed up longer than the longest wait (it was healthy), else `prev`,
/// which doubles after each restart.
pub(super) fn next_backoff(prev: Duration, uptime: Duration, cap: Duration) -> Duration {
    if uptime >= cap { FIRST_BACKOFF } else { prev }
}

impl Upstream {
    pub(super) async fn supervise(
        this: Weak<Upstream>,
        mut child: ChildHandle,
        reader: crate::jsonrpc::LineReader<tokio::process::ChildStdout>,
    ) {
        // `None` after a failed respawn: there is no output to read.
        let mut reader = Some(reader);
        let mut backoff = FIRST_BACKOFF;
        let mut spawned_at = tokio::time::Instant::now();
        let mut quick_deaths = 0u32;
        loop {
            let Some(up) = this.upgrade() else {
                child.stop().await;
                return;
            };
            let cancel = up.cancel.clone();
            // The reader runs as a task of its own: if routing ever panics,
            // the panic ends that task only, and is handled here like the
            // child's death (requests fail, the child is replaced).
            let read = match reader.take() {
                Some(r) => up.tasks.spawn(
                    Upstream::read_loop(this.clone(), r).instrument(tracing::Span::current()),
                ),
                None => up.tasks.spawn(async {}),
            };
            drop(up);
            tokio::pin!(read);
            let why = tokio::select! {
                r = &mut read => match r {
                    Ok(()) => "the MCP server closed its output",
                    Err(e) if e.is_panic() => {
                        warn!("routing the child's output failed unexpectedly; replacing the child");
                        "the proxy could not route the MCP server's output"
                    }
                    Err(_) => "the MCP server's output reader stopped",
                },
                _ = cancel.cancelled() => "the proxy is stopping",
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
            up.fail_all(why, !restart);
            drop(up);
            read.abort();
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
                    reader = Some(r.reporting_over_cap());
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
                    // Loop again with a dead child handle: read_loop ends at once.
                    continue;
                }
            }
            backoff = (backoff * 2).min(up.opts.restart_max_backoff);
        }
    }

    pub(super) fn fail_all(&self, why: &str, close_sessions: bool) {
        let (pending, ports) = {
            let mut r = lock(&self.routes);
            (r.drain(), r.ports.values().cloned().collect::<Vec<_>>())
        };
        if !pending.is_empty() {
            info!(
                requests = pending.len(),
                "failing requests in flight: {why}"
            );
        }
        for p in pending {
            p.reply.respond(&jsonrpc::error_response(
                Some(&p.client_id),
                code::SERVER_ERROR,
                why,
                None,
            ));
        }
        if close_sessions {
            for port in ports {
                if let Some(o) = port.notify_stream() {
                    o.finish();
                }
            }
        }
    }

    pub(super) async fn read_loop(
        this: Weak<Upstream>,
        mut reader: crate::jsonrpc::LineReader<tokio::process::ChildStdout>,
    ) {
        let mut skipped = 0u64;
        // Set when the line being skipped was already reported (and its
        // request failed) as it passed the cap.
        let mut reported_early = false;
        let mut noise_limit: Option<crate::logging::RateLimit> = None;
        loop {
            // One select over the child's lines and the request deadlines
            // (`--request-timeout`, kept in `Routes::timers`: an answered
            // request leaves nothing behind). No strong reference is held
            // while waiting. `next_line` is cancel-safe: its state and
            // partial line live in the reader.
            let (next, wake) = {
                let Some(up) = this.upgrade() else { return };
                let next = lock(&up.routes).timers.first().map(|(at, _)| *at);
                (next, up.timer_wake.clone())
            };
            let deadline = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let read = tokio::select! {
                read = reader.next_line() => read,
                _ = deadline => {
                    if let Some(up) = this.upgrade() {
                        up.expire_due();
                    }
                    continue;
                }
                // A sooner deadline was added.
                _ = wake.notified() => continue,
            };
            let line = match read {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(LineError::OverCap { limit, id }) => {
                    warn!(
                        limit,
                        "child is writing a line over --max-line-bytes; failing its request now and skipping the line"
                    );
                    if let Some(up) = this.upgrade() {
                        up.fail_oversized(None, limit, id, true);
                    }
                    reported_early = true;
                    continue;
                }
                Err(LineError::LineTooLong { len, limit, id }) => {
                    // The rest of the stream is fine; the request it answered fails.
                    warn!(
                        len,
                        limit, "child wrote a line over --max-line-bytes; skipped it"
                    );
                    if let Some(up) = this.upgrade() {
                        up.fail_oversized(Some(len), limit, id, !reported_early);
                    }
                    reported_early = false;
                    continue;
                }
                Err(LineError::Io(e)) => {
                    warn!(error = %e, "reading the child's stdout failed");
                    return;
                }
            };
            let Some(up) = this.upgrade() else { return };
            match Frame::parse(line.clone(), false) {
                Ok(frame) => up.route(frame).await,
                Err(e) => {
                    skipped += 1;
                    // Rate-limited like stderr (`--child-log-rate`): a child
                    // printing banners in a loop must not flood the log.
                    let rate = up.spec.stderr_lines_per_second;
                    let limit = noise_limit.get_or_insert_with(|| {
                        crate::logging::RateLimit::new(rate.saturating_mul(4), rate)
                    });
                    if let Some(not_logged) = limit.admit() {
                        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                        warn!(skipped, not_logged, error = %e, line = %shown, "child wrote a non-JSON-RPC line on stdout; skipped it");
                    }
                }
            }
        }
    }

    /// An oversized line was (or is being) dropped: fail the request it
    /// answered rather than let it hang. Which one that was shows at the
    /// line's edges (`jsonrpc::edge_id`), or else it was the only request
    /// in flight (`guess`: not once the line was already reported).
    pub(super) fn fail_oversized(
        &self,
        len: Option<usize>,
        limit: usize,
        id: Option<u64>,
        guess: bool,
    ) {
        let only = {
            let r = lock(&self.routes);
            id.filter(|id| r.pending.contains_key(id))
                .or_else(|| if guess { related_call(&r) } else { None })
        };
        if let Some(id) = only {
            let size = len.map_or_else(|| "more than that".to_string(), |l| format!("{l} bytes"));
            self.fail_pending(
                id,
                &format!("the MCP server's answer ({size}) exceeds --max-line-bytes ({limit})"),
            );
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
}
