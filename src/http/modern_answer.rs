//! What every 2026-07-28 call's answer needs, whichever handler makes
//! it (the ordinary call in `modern`, the task requests in
//! `modern_tasks`): the HTTP status an error answer takes, and the guard
//! that cancels the call at the child when its client goes.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::App;
use crate::jsonrpc::{self, code};
use crate::session::InFlightSlots;
use crate::sse::Outlet;
use crate::upstream::{Port, Upstream};

/// The HTTP status 2026-07-28 gives an answer that is this error
/// (`basic/transports/streamable-http`: 404 for an unknown method;
/// `basic/index`: 400 for a capability the client did not declare).
pub fn error_status(bytes: &[u8]) -> Option<http::StatusCode> {
    match error_code(bytes)? {
        code::METHOD_NOT_FOUND => Some(http::StatusCode::NOT_FOUND),
        code::MISSING_REQUIRED_CLIENT_CAPABILITY => Some(http::StatusCode::BAD_REQUEST),
        _ => None,
    }
}

fn error_code(bytes: &[u8]) -> Option<i64> {
    // A result (every answer but a few) names no `error` member, in any
    // spelling: not parsed.
    if !jsonrpc::may_have_error(bytes) {
        return None;
    }
    // The member where it lies, the last copy of a repeated one as a
    // client's parser takes it (a derive took the first, so an answer
    // with `error` twice, the second an unknown method, was not a 404),
    // and nothing else of the answer read.
    let error = jsonrpc::locate_checked(bytes, &["error", "code"])?;
    jsonrpc::integer_code(&bytes[error])
}

/// Dropped with the response (sent, or abandoned by the client). A client
/// that went away before its answer has cancelled the request: in this
/// revision closing the connection is the cancellation signal. Its slot
/// under `--max-in-flight` goes back with it.
pub struct CancelUnlessAnswered {
    upstream: Arc<Upstream>,
    port: Arc<Port>,
    id: Box<[u8]>,
    /// SSE mode: the stream finishes when the response has been queued.
    outlet: Option<Arc<Outlet>>,
    /// JSON mode: set once the answer is in hand.
    pub answered: bool,
    /// Where the detach runs (shutdown waits for it).
    tasks: TaskTracker,
    /// The principal's slot for this request.
    _slots: Option<InFlightSlots>,
}

impl CancelUnlessAnswered {
    pub fn new(
        app: &App,
        upstream: &Arc<Upstream>,
        port: &Arc<Port>,
        id: &[u8],
        outlet: Option<Arc<Outlet>>,
        slots: Option<InFlightSlots>,
    ) -> Self {
        CancelUnlessAnswered {
            upstream: upstream.clone(),
            port: port.clone(),
            id: id.into(),
            outlet,
            answered: false,
            tasks: app.tasks.clone(),
            _slots: slots,
        }
    }
}

impl Drop for CancelUnlessAnswered {
    fn drop(&mut self) {
        // A stream cut off for a slow client finished without its answer.
        let answered = self.answered
            || self
                .outlet
                .as_ref()
                .is_some_and(|o| o.is_finished() && !o.was_cut());
        if !answered {
            self.upstream
                .cancel_request(&self.port, &self.id, "the client closed the connection");
        }
        let (upstream, port) = (self.upstream.clone(), self.port.clone());
        self.tasks
            .spawn(async move { upstream.detach(&port).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status follows the error a client's parser reads: the last
    /// copy of a repeated member, whatever lies beside it.
    #[test]
    fn an_answers_status_follows_its_last_error() {
        let status = |s: &str| error_status(s.as_bytes());
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"m"}}"#),
            Some(http::StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1},"error":{"code":-32601}}"#),
            Some(http::StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601},"error":{"code":1}}"#),
            None
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32021,"data":[1e400]}}"#),
            Some(http::StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"result":{"error":{"code":-32601}}}"#),
            None
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1e400}}"#),
            None
        );
        // A code with a fraction or an exponent is the integer a client
        // reads (a JavaScript client has no other): -32601.0 is a 404.
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601.0}}"#),
            Some(http::StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601.5}}"#),
            None
        );
    }
}
