//! The context of the tool call being run: its progress token and the peer
//! to send `notifications/progress` to, and per-call output settings.
//!
//! It lives in a tokio task-local set by `CodaServer::call_tool` around the
//! tool's future, so the loops that take time (mutation and export polls,
//! `fetchAll` paging, chunked and paced writes) report progress without
//! every function passing it along. Outside a tool call (unit tests) every
//! function here is a no-op. It also holds the call's one deadline, so no
//! step of a tool can start a fresh one, and whether the call sent a write
//! yet, so a write tool that fails before it did says nothing was applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use tokio_util::sync::CancellationToken;

/// What a tool call knows about its request.
#[derive(Debug)]
pub struct CallContext {
    /// `_meta.progressToken` of the request, with the peer to notify.
    pub progress: Option<(ProgressToken, Peer<RoleServer>)>,
    /// Progress must increase with every notification (spec: lifecycle/
    /// progress); steps from nested loops are folded into one counter.
    pub steps: AtomicU64,
    /// Text content repeats the JSON (`--full-text`) instead of a summary.
    pub full_text: bool,
    /// `--max-result-bytes`: no result of the call is larger (lists keep
    /// to it item by item; anything else is cut to it in `tools::run`).
    pub max_result_bytes: usize,
    /// When the call must be answered (`--call-timeout-secs` after it
    /// started): every request, retry, poll and wait of the call shares it.
    pub deadline: Instant,
    /// The tool changes something in Coda (its `readOnlyHint` is not true).
    pub write: bool,
    /// A write request of this call was handed to the HTTP client (it may
    /// have reached Coda): until then, whatever stops the call, nothing it
    /// was asked to change was changed. Shared with the server, which at
    /// shutdown lets a call that sent one finish (see [`crate::shutdown`]).
    pub write_sent: Arc<AtomicBool>,
    /// Cancelled when the process stops and this call goes on only to
    /// finish the writes it sent ([`crate::shutdown`]): from then on it
    /// no longer waits for Coda to apply them (a poll changes nothing in
    /// Coda, and its answer finds nobody).
    pub finishing: CancellationToken,
    /// Parsed answers this call keeps past the request that read them,
    /// with their room in `--max-read-bytes` ([`Keeping`]): while there
    /// are any, the call holds room, so its next reads must not wait for
    /// room (see [`crate::budget`]).
    pub kept: AtomicUsize,
}

/// Held while the tool call being run keeps room in `--max-read-bytes`
/// past the request that took it ([`keeps_room`]). Outside a call it
/// counts nothing.
#[derive(Debug)]
pub struct Keeping {
    counted: bool,
}

/// A [`Keeping`] for the tool call being run.
pub fn keeping() -> Keeping {
    let counted = CALL
        .try_with(|c| c.kept.fetch_add(1, Ordering::Relaxed))
        .is_ok();
    Keeping { counted }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        if self.counted {
            let _ = CALL.try_with(|c| c.kept.fetch_sub(1, Ordering::Relaxed));
        }
    }
}

/// Whether the tool call being run keeps room past its requests (a
/// [`Keeping`] is alive): its reads then take room free now or fail,
/// never wait for it (`false` outside a call).
pub fn keeps_room() -> bool {
    CALL.try_with(|c| c.kept.load(Ordering::Relaxed) > 0)
        .unwrap_or(false)
}

tokio::task_local! {
    static CALL: CallContext;
}

/// Run `fut` as the tool call described by `ctx`.
pub async fn scope<F: Future>(ctx: CallContext, fut: F) -> F::Output {
    CALL.scope(ctx, fut).await
}

/// The deadline of the tool call being run (`None` outside one).
pub fn deadline() -> Option<Instant> {
    CALL.try_with(|c| c.deadline).ok()
}

/// Record that a write request is being sent (see [`CallContext::write_sent`]).
pub fn note_write_sent() {
    let _ = CALL.try_with(|c| c.write_sent.store(true, Ordering::Relaxed));
}

/// Resolves once the tool call being run goes on only to finish the
/// writes it sent, at the process's stop (see
/// [`CallContext::finishing`]); never outside a call.
pub async fn finishing() {
    match CALL.try_with(|c| c.finishing.clone()) {
        Ok(t) => t.cancelled_owned().await,
        Err(_) => std::future::pending().await,
    }
}

/// Whether [`finishing`] has resolved (`false` outside a call).
pub fn is_finishing() -> bool {
    CALL.try_with(|c| c.finishing.is_cancelled())
        .unwrap_or(false)
}

/// Whether the tool call being run is a write tool's and has not sent any
/// write request yet (`false` outside a call).
pub fn write_unsent() -> bool {
    CALL.try_with(|c| c.write && !c.write_sent.load(Ordering::Relaxed))
        .unwrap_or(false)
}

/// The result budget of the tool call being run (`None` outside one).
pub fn max_result_bytes() -> Option<usize> {
    CALL.try_with(|c| c.max_result_bytes).ok()
}

/// Whether results carry the JSON as text too.
pub fn full_text() -> bool {
    CALL.try_with(|c| c.full_text).unwrap_or(false)
}

/// Send a progress notification if the client asked for them. `done` and
/// `total` are in the caller's units and go into the message; the
/// notification's `progress` is a counter that always increases. A failed
/// send is ignored: progress is advisory.
pub async fn progress(done: f64, total: Option<f64>, what: &str) {
    let Ok(Some((token, peer, step))) = CALL.try_with(|c| {
        c.progress.as_ref().map(|(t, p)| {
            (
                t.clone(),
                p.clone(),
                c.steps.fetch_add(1, Ordering::Relaxed) + 1,
            )
        })
    }) else {
        return;
    };
    let message = match total {
        Some(t) => format!("{what}: {done} of {t}"),
        None => format!("{what}: {done}"),
    };
    let param = ProgressNotificationParam::new(token, step as f64).with_message(message);
    if let Err(e) = peer.notify_progress(param).await {
        tracing::debug!(error = %e, "could not send progress");
    }
}
