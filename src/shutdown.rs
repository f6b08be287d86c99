//! SIGTERM and SIGINT: the two ways an operator or orchestrator asks the
//! proxy to stop. Both mean "drain and exit"; a second signal while draining
//! is not special-cased, the drain has its own deadline (`--shutdown-grace`).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested");
        token.cancel();
    });
    Ok(())
}
