//! The long answer the worker is passing on as the child writes it
//! (cut-through, see `crate::tail`): where its pieces go, a JSON body's
//! tail or an SSE stream, and until when the client waits for its end.

use bytes::Bytes;
use tokio::time::Instant;

use super::sink::Sink;
use crate::tail::{TailError, TailSender};

/// Where the pieces of a long answer go.
pub(super) enum To {
    /// A JSON body.
    Body(TailSender),
    /// An SSE stream, which opened the response's event.
    Stream(Sink),
}

/// A long answer being passed on. Dropped before it finished, it fails
/// (the child went away, the line is skipped).
pub(super) struct Cut {
    to: Option<To>,
    /// The request's `--request-timeout`: past it the answer fails.
    pub(super) deadline: Option<Instant>,
}

impl Cut {
    pub(super) fn new(to: To, deadline: Option<Instant>) -> Cut {
        Cut {
            to: Some(to),
            deadline,
        }
    }

    /// Passes a piece on (to nobody, once its client is gone).
    pub(super) fn piece(&self, piece: Bytes) {
        match &self.to {
            Some(To::Body(tail)) => {
                tail.send(piece);
            }
            Some(To::Stream(sink)) => sink.response_piece(piece),
            None => {}
        }
    }

    /// The answer ended with `last`.
    pub(super) fn finish(mut self, last: Bytes) {
        match self.to.take() {
            Some(To::Body(tail)) => {
                tail.finish(last);
            }
            Some(To::Stream(sink)) => sink.close_response(Ok(last)),
            None => {}
        }
    }

    /// The answer will not end: its client sees it fail.
    pub(super) fn fail(mut self, why: TailError) {
        self.fail_with(why);
    }

    fn fail_with(&mut self, why: TailError) {
        match self.to.take() {
            Some(To::Body(tail)) => tail.fail(why),
            Some(To::Stream(sink)) => sink.close_response(Err(why)),
            None => {}
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.fail_with(TailError::Cut);
    }
}
