//! Cut-through forwarding: the rest of a long answer, still arriving.
//!
//! A child's answer is one stdio line. A short one is read whole, checked
//! and sent on. A long one (a result of megabytes) would cross the proxy
//! store-and-forward: the client would get its first byte only after the
//! child wrote its last, and the copy to the client would start only then.
//! Instead, once a line passes [`CUT_THROUGH_BYTES`] without ending and its
//! head shows a result for a request whose client takes a body of unknown
//! length, the multiplexer sends the head on (the id re-addressed) and
//! hands the rest over as it arrives, through a [`Tail`].
//!
//! What a tail promises: its chunks in order, then either its end or a
//! failure: the line passed `--max-line-bytes`, the child's output ended
//! before the line did, or the request's deadline passed (the multiplexer
//! watches it). SSE streams take long answers in pieces too
//! (`crate::sse::Outlet::open_response`), through a tail of their own. A body made from
//! a failed tail fails too, so the client sees a broken response, never a
//! shorter one that still parses. The head is checked (`jsonrpc::result_head`);
//! the rest passes as the child wrote it, as a direct pipe would pass it.
//!
//! Memory: the sender stops at `--max-line-bytes`, so what waits in a tail
//! for a slow client is bounded as the whole line was before.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::jsonrpc::Message;

/// A line that passes this length without ending is offered for
/// cut-through. Shorter answers are read whole and fully checked; longer
/// ones gain most from going on at once.
pub const CUT_THROUGH_BYTES: usize = 128 * 1024;

enum Piece {
    Data(Bytes),
    End,
    Fail(TailError),
}

/// The multiplexer's end of a tail. Dropped before [`TailSender::finish`],
/// the tail fails.
pub struct TailSender {
    tx: mpsc::UnboundedSender<Piece>,
}

/// The rest of an answer, chunk by chunk (see the module documentation).
pub struct Tail {
    rx: mpsc::UnboundedReceiver<Piece>,
    done: bool,
}

/// Why a tail ended before its answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TailError {
    /// The line was cut off (over the cap, the child's output ended, the
    /// proxy is stopping).
    #[error("the MCP server's answer was cut off before its end")]
    Cut,
    /// The request's deadline passed before the answer ended.
    #[error("the MCP server's answer did not end before --request-timeout")]
    TimedOut,
}

/// A new tail and its sender.
pub fn channel() -> (TailSender, Tail) {
    let (tx, rx) = mpsc::unbounded_channel();
    (TailSender { tx }, Tail { rx, done: false })
}

impl TailSender {
    /// Passes a chunk on; `false` when nobody reads the tail any more.
    pub fn send(&self, chunk: Bytes) -> bool {
        chunk.is_empty() || self.tx.send(Piece::Data(chunk)).is_ok()
    }

    /// The answer ended with `last`; `true` when its reader was there.
    pub fn finish(self, last: Bytes) -> bool {
        self.send(last) && self.tx.send(Piece::End).is_ok()
    }

    /// The answer will not end: the tail fails with `why`.
    pub fn fail(self, why: TailError) {
        let _ = self.tx.send(Piece::Fail(why));
    }
}

impl Tail {
    /// The next chunk; `Ok(None)` once the answer ended.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TailError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Piece::Data(b)) => Ok(Some(b)),
            Some(Piece::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Piece::Fail(why)) => Err(why),
            None => Err(TailError::Cut),
        }
    }
}

/// What a client that takes one JSON body gets: the answer whole, or a
/// long one's head and the rest as it arrives.
pub enum Answer {
    /// The whole answer.
    Whole(Message),
    /// The head (already re-addressed) and the rest.
    Streamed(Message, Tail),
}

impl From<Message> for Answer {
    fn from(m: Message) -> Answer {
        Answer::Whole(m)
    }
}

impl From<Bytes> for Answer {
    fn from(b: Bytes) -> Answer {
        Answer::Whole(b.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_in_order_then_the_end() {
        let (tx, mut tail) = channel();
        assert!(tx.send(Bytes::from_static(b"ab")));
        tx.finish(Bytes::from_static(b"c"));
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert_eq!(tail.next().await.unwrap().unwrap(), "c");
        assert!(tail.next().await.unwrap().is_none());
        assert!(tail.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_sender_dropped_before_the_end_fails_the_tail() {
        let (tx, mut tail) = channel();
        tx.send(Bytes::from_static(b"ab"));
        drop(tx);
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert!(matches!(tail.next().await, Err(TailError::Cut)));
    }

    #[tokio::test]
    async fn a_failed_tail_says_why() {
        let (tx, mut tail) = channel();
        tx.fail(TailError::TimedOut);
        assert_eq!(tail.next().await.unwrap_err(), TailError::TimedOut);
    }

    #[tokio::test]
    async fn the_sender_learns_that_nobody_reads() {
        let (tx, tail) = channel();
        drop(tail);
        assert!(!tx.send(Bytes::from_static(b"x")));
    }
}
