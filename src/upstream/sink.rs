//! Where the multiplexer puts what it routes to a client: a reply sink.
//!
//! The multiplexer decides which client gets a message; how the message
//! travels (an SSE stream with event ids and replay, a JSON body, a legacy
//! `message` event) is the HTTP layer's business, which implements
//! [`ReplySink`] for its streams (`crate::sse::Outlet`). The upstream
//! module therefore knows nothing of SSE encoding, and depends on no part
//! of the HTTP layer.

use std::sync::Arc;

use bytes::Bytes;

use crate::jsonrpc::Message;
use crate::tail::TailError;

/// One stream to a client. Every method returns at once: a sink never
/// makes the multiplexer (or the reader of the child's stdout) wait; what
/// a sink does with a slow consumer is its own policy, except that a
/// response must never be lost silently (see `send_response`).
pub trait ReplySink: Send + Sync {
    /// A message related to a request this stream carries, or to none
    /// (notifications, the child's requests to the client). May be dropped
    /// for a slow consumer.
    fn send(&self, message: &[u8]);
    /// The response to a request this stream carries. Never dropped
    /// silently; a stream that owes no more responses then ends.
    fn send_response(&self, message: &[u8]);
    /// [`ReplySink::send_response`] for an answer to request `client_id`
    /// (as the client wrote it, already the answer's id), which the
    /// stream need not look for in the message.
    fn send_answer(&self, message: &Message, client_id: &[u8]) {
        let _ = client_id;
        self.send_response(&message.contiguous());
    }
    /// The response to one of this stream's requests will not come (the
    /// request was cancelled): a stream that owed only that one ends.
    fn forgo(&self);
    /// Ends the stream (its session or child ended).
    fn finish(&self);
    /// Whether the stream has ended: nothing sent to it reaches anyone.
    fn is_finished(&self) -> bool;
    /// Whether a client is attached to the stream right now.
    fn is_live(&self) -> bool;

    /// Whether a long response may go on in pieces now
    /// ([`ReplySink::open_response`]); `false` keeps it whole.
    fn takes_pieces(&self) -> bool {
        false
    }
    /// The head of a long response (to request `client_id`, which this
    /// stream carries), to be followed by [`ReplySink::response_piece`]s and one
    /// [`ReplySink::close_response`]; nothing else goes out in between.
    /// If it breaks off, the request's error has `code` (its client's
    /// code for the proxy's own failures, `super::proxy_failure_code`).
    /// `false` when it could not open (the stream ended, or one is open).
    fn open_response(&self, head: Message, client_id: &[u8], code: i64) -> bool {
        let _ = (head, client_id, code);
        false
    }
    /// The next piece of the open response.
    fn response_piece(&self, piece: Bytes) {
        let _ = piece;
    }
    /// The open response ended with `last`, or broke off.
    fn close_response(&self, last: Result<Bytes, TailError>) {
        let _ = last;
    }
}

/// A shared reply sink, as the routing tables hold it.
pub type Sink = Arc<dyn ReplySink>;

/// Told how one request ended, as its client saw it: `answered` when its
/// answer goes back; dropped without that call, no answer went back
/// (cancelled, the client gone, the session ended). A layer above wraps a
/// reply in one (`Reply::watched`), e.g. to audit a `tools/call`; the
/// multiplexer knows nothing of what it records.
pub trait AnswerWatch: Send + Sync {
    /// The answer goes back to the client now.
    fn answered(self: Box<Self>, message: &Message);
    /// [`AnswerWatch::answered`], saying whether a client was there to
    /// take it (`taken`; for a long answer, its start): `false` when the
    /// client had gone (its connection closed, its stream dropped), so the
    /// answer reaches nobody unless a resumption takes it from the
    /// stream's replay buffer later.
    fn handed_over(self: Box<Self>, message: &Message, taken: bool) {
        let _ = taken;
        self.answered(message);
    }
    /// The proxy answers with an error of its own instead of the
    /// child's (`message`, with `code`): the child died, did not read its
    /// input, or `--request-timeout` passed (`timed_out`). Said apart from
    /// [`AnswerWatch::handed_over`] because a child can write any error
    /// text: only this call says the proxy timed the request out.
    fn failed(self: Box<Self>, message: &Message, taken: bool, code: i64, timed_out: bool) {
        let _ = (code, timed_out);
        self.handed_over(message, taken);
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! A sink that records what it got, for unit tests of routing.

    use std::sync::Mutex;

    use super::ReplySink;

    /// Records every message; `finished` once told so.
    #[derive(Default)]
    pub struct Recorder {
        /// What `send` got.
        pub sent: Mutex<Vec<Vec<u8>>>,
        /// What `send_response` got.
        pub responses: Mutex<Vec<Vec<u8>>>,
        /// Set by `finish`.
        pub finished: Mutex<bool>,
    }

    impl ReplySink for Recorder {
        fn send(&self, message: &[u8]) {
            self.sent.lock().unwrap().push(message.to_vec());
        }
        fn send_response(&self, message: &[u8]) {
            self.responses.lock().unwrap().push(message.to_vec());
        }
        fn forgo(&self) {}
        fn finish(&self) {
            *self.finished.lock().unwrap() = true;
        }
        fn is_finished(&self) -> bool {
            *self.finished.lock().unwrap()
        }
        fn is_live(&self) -> bool {
            !self.is_finished()
        }
    }
}
