//! `run(listener, config, shutdown)`: what `main` and the tests call.
//!
//! Starts the guard process (children die with the proxy, even by
//! SIGKILL: see [`crate::guard`]), takes on PID 1's duties when the proxy
//! is a container's init (reaping orphans, forwarding signals), starts the
//! shared child first when the mode needs one (so a command that cannot
//! start fails the proxy at once, not its first client), serves until
//! `shutdown` is cancelled, and returns once every connection has drained
//! and every child has been stopped and reaped. [`run_until`] adds the
//! `hurry` token: cancelled (a second signal), every child is killed now.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::child::Exit;
use crate::config::{Config, Mode};
use crate::http::{App, serve};

/// Why the proxy stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The shared child could not be started.
    #[error("{0}")]
    Start(String),
    /// `--exit-on-child-exit`: the shared child ended.
    #[error("the MCP server process exited ({0})")]
    ChildExited(Exit),
}

impl RunError {
    /// The exit code the binary should end with.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Start(_) => 1,
            RunError::ChildExited(Exit::Code(c)) => *c,
            RunError::ChildExited(Exit::Signal(s)) => 128 + s,
            RunError::ChildExited(Exit::Running) => 1,
        }
    }
}

/// Serves MCP on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    run_until(listener, config, shutdown, CancellationToken::new()).await
}

/// [`run`], and when `hurry` is cancelled during the drain every child's
/// process group gets SIGKILL at once instead of its grace period.
pub async fn run_until(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    hurry: CancellationToken,
) -> Result<(), RunError> {
    let _duties = crate::shutdown::start_duties(&config.child.children, hurry, true);
    let addr = listener.local_addr().ok();
    let mode = config.mode;
    let exit_on_child_exit = config.exit_on_child_exit;
    let app: Arc<App> = App::new(config).map_err(RunError::Start)?;
    app.auth.prefetch().await;
    let mut child_exit = None;
    if mode != Mode::PerSession {
        let up = app
            .shared_upstream()
            .await
            .map_err(|e| RunError::Start(e.to_string()))?;
        if exit_on_child_exit {
            child_exit = Some(up);
        }
    }
    if let Some(addr) = addr {
        info!(addr = %addr, path = %app.config.path, sse = %app.config.sse_path, mode = ?mode, auth = %app.auth.config().modes().join("+"), "listening on http://{addr}{}", app.config.path);
    }
    let serve_token = shutdown.child_token();
    let server = tokio::spawn(serve(listener, app.clone(), serve_token.clone()));
    let mut result = Ok(());
    if let Some(up) = child_exit {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            code = up.ended() => {
                warn!(status = %code, "shared child exited; stopping the proxy (--exit-on-child-exit)");
                result = Err(RunError::ChildExited(code));
                serve_token.cancel();
            }
        }
    }
    // An error here means the server task panicked; the children are killed on drop regardless.
    let _ = server.await;
    app.audit.flush(crate::audit::FLUSH_AT_EXIT).await;
    result
}
