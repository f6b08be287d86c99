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
//! before the line did, or the request's deadline passed. A body made from
//! a failed tail fails too, so the client sees a broken response, never a
//! shorter one that still parses. The head is checked (`jsonrpc::result_head`);
//! the rest passes as the child wrote it, as a direct pipe would pass it.
//!
//! Memory: the sender stops at `--max-line-bytes`, so what waits in a tail
//! for a slow client is bounded as the whole line was before.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::jsonrpc::Message;

/// A line that passes this length without ending is offered for
/// cut-through. Shorter answers are read whole and fully checked; longer
/// ones gain most from going on at once.
pub const CUT_THROUGH_BYTES: usize = 128 * 1024;

enum Piece {
    Data(Bytes),
    End,
}

/// The multiplexer's end of a tail. Dropped before [`TailSender::finish`],
/// the tail fails.
pub struct TailSender {
    tx: mpsc::UnboundedSender<Piece>,
}

/// The rest of an answer, chunk by chunk (see the module documentation).
pub struct Tail {
    rx: mpsc::UnboundedReceiver<Piece>,
    deadline: Option<Instant>,
    done: bool,
}

/// Why a tail ended before its answer did.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The line was cut off (over the cap, the child's output ended, the
    /// proxy is stopping).
    #[error("the MCP server's answer was cut off before its end")]
    Cut,
    /// The request's deadline passed before the answer ended.
    #[error("the MCP server's answer did not end before --request-timeout")]
    TimedOut,
}

/// A tail that fails at `deadline` if it has not ended by then.
pub fn channel(deadline: Option<Instant>) -> (TailSender, Tail) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        TailSender { tx },
        Tail {
            rx,
            deadline,
            done: false,
        },
    )
}

impl TailSender {
    /// Passes a chunk on; `false` when nobody reads the tail any more.
    pub fn send(&self, chunk: Bytes) -> bool {
        chunk.is_empty() || self.tx.send(Piece::Data(chunk)).is_ok()
    }

    /// The answer ended with `last`.
    pub fn finish(self, last: Bytes) {
        self.send(last);
        let _ = self.tx.send(Piece::End);
    }
}

impl Tail {
    /// The next chunk; `Ok(None)` once the answer ended.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TailError> {
        if self.done {
            return Ok(None);
        }
        let piece = match self.deadline {
            Some(at) => tokio::time::timeout_at(at, self.rx.recv())
                .await
                .map_err(|_| TailError::TimedOut)?,
            None => self.rx.recv().await,
        };
        match piece {
            Some(Piece::Data(b)) => Ok(Some(b)),
            Some(Piece::End) => {
                self.done = true;
                Ok(None)
            }
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
        let (tx, mut tail) = channel(None);
        assert!(tx.send(Bytes::from_static(b"ab")));
        tx.finish(Bytes::from_static(b"c"));
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert_eq!(tail.next().await.unwrap().unwrap(), "c");
        assert!(tail.next().await.unwrap().is_none());
        assert!(tail.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_sender_dropped_before_the_end_fails_the_tail() {
        let (tx, mut tail) = channel(None);
        tx.send(Bytes::from_static(b"ab"));
        drop(tx);
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert!(matches!(tail.next().await, Err(TailError::Cut)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tail_that_stalls_past_its_deadline_fails() {
        let at = Instant::now() + std::time::Duration::from_secs(3);
        let (tx, mut tail) = channel(Some(at));
        assert!(matches!(tail.next().await, Err(TailError::TimedOut)));
        drop(tx);
    }

    #[tokio::test]
    async fn the_sender_learns_that_nobody_reads() {
        let (tx, tail) = channel(None);
        drop(tail);
        assert!(!tx.send(Bytes::from_static(b"x")));
    }
}
