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
//! shorter one that still parses; and a tail that failed before its
//! response's head went out is answered with its request's error instead
//! ([`Answer::settled`]), so the client always gets a status. The head is checked (`jsonrpc::result_head`);
//! the rest passes as the child wrote it, as a direct pipe would pass it.
//!
//! Memory: the sender stops at `--max-line-bytes`, so what waits in a tail
//! for a slow client is bounded as the whole line was before.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use crate::jsonrpc::{self, Message};

/// A line that passes this length without ending is offered for
/// cut-through. Shorter answers are read whole and fully checked; longer
/// ones gain most from going on at once.
pub const CUT_THROUGH_BYTES: usize = 128 * 1024;

enum Piece {
    Data(Bytes),
    End,
    /// The failure, and what its reader gives in the answer's place if it
    /// has not begun to pass the answer on (see [`TailSender::fail_instead`]).
    Fail(TailError, Instead),
}

/// What the reader of a tail that failed gives in the answer's place, if
/// it has not begun to pass the answer on ([`Tail::instead`]).
#[derive(Debug, Clone, Default)]
pub enum Instead {
    /// Its request's error ([`Tail::error_for`]): a JSON body's, or an
    /// SSE stream's whose sender said nothing else (the stream ended,
    /// and nothing can replay an error either).
    #[default]
    Error,
    /// This, as its stream carries it: the request's error as an SSE
    /// event, under the id it is kept for replay under.
    Event(Bytes),
    /// Nothing: another consumer took its stream over (a resumption),
    /// and gets the answer or its error, under its event id.
    Nothing,
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
    /// Chunks [`Tail::failed_by_now`] took in, given out first (`done`
    /// may be set already: the answer's end came after them).
    early: VecDeque<Bytes>,
    failed: Option<TailError>,
    /// What the sender gave to go in the answer's place when it failed.
    instead: Instead,
    /// The client's id of the request answered and the code of the
    /// error made for it when the tail fails before anything of the
    /// answer went out.
    client_id: Box<[u8]>,
    code: i64,
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

/// A new tail and its sender, for an answer to the client's request
/// `client_id`, whose error, if the answer breaks off before any of it
/// went out, has `code`: the code the request's client gets for the
/// proxy's own failures (-32000 in the session era, -32603 for
/// 2026-07-28, see `crate::upstream::proxy_failure_code`).
pub fn channel(client_id: &[u8], code: i64) -> (TailSender, Tail) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tail = Tail {
        rx,
        done: false,
        early: VecDeque::new(),
        failed: None,
        instead: Instead::Error,
        client_id: client_id.into(),
        code,
    };
    (TailSender { tx }, tail)
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
        let _ = self.tx.send(Piece::Fail(why, Instead::Error));
    }

    /// As [`TailSender::fail`], with what a reader that has not begun to
    /// pass the answer on gives in its place ([`Tail::instead`]): the
    /// request's error as its stream carries it (an SSE event, under the
    /// id it is kept for replay under).
    pub fn fail_instead(self, why: TailError, instead: Bytes) {
        let _ = self.tx.send(Piece::Fail(why, Instead::Event(instead)));
    }

    /// As [`TailSender::fail`], for a reader whose stream another reader
    /// took over: it gives nothing in the answer's place.
    pub fn fail_elsewhere(self, why: TailError) {
        let _ = self.tx.send(Piece::Fail(why, Instead::Nothing));
    }
}

impl Tail {
    /// The next chunk; `Ok(None)` once the answer ended.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TailError> {
        if let Some(chunk) = self.early.pop_front() {
            return Ok(Some(chunk));
        }
        if let Some(why) = self.failed {
            return Err(why);
        }
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Piece::Data(b)) => Ok(Some(b)),
            Some(Piece::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Piece::Fail(why, instead)) => {
                self.instead = instead;
                Err(why)
            }
            None => Err(TailError::Cut),
        }
    }

    /// Whether the tail failed already: takes in, without waiting, what
    /// has arrived by now (given out by [`Tail::next`] as before) up to
    /// its end or its failure. Bounded: what it takes in was sent
    /// already, within `--max-line-bytes`.
    pub fn failed_by_now(&mut self) -> Option<TailError> {
        if self.done || self.failed.is_some() {
            return self.failed;
        }
        loop {
            match self.rx.try_recv() {
                Ok(Piece::Data(chunk)) => self.early.push_back(chunk),
                Ok(Piece::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Piece::Fail(why, instead)) => {
                    self.instead = instead;
                    break Some(*self.failed.insert(why));
                }
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    break Some(*self.failed.insert(TailError::Cut));
                }
            }
        }
    }

    /// What goes in the answer's place, once it failed: what its sender
    /// said ([`TailSender::fail_instead`], [`TailSender::fail_elsewhere`]),
    /// else its request's error.
    pub fn instead(&self) -> &Instead {
        &self.instead
    }

    /// The JSON-RPC error its request gets instead of an answer that
    /// failed with `why` before any of it went out: the error a request
    /// gets whose child died before it answered, in the code its client
    /// takes (see [`channel`]).
    pub fn error_for(&self, why: TailError) -> Bytes {
        error(&self.client_id, self.code, why)
    }
}

/// The error response to request `client_id` whose long answer broke off
/// with `why`, in `code` (see [`channel`]).
pub fn error(client_id: &[u8], code: i64, why: TailError) -> Bytes {
    jsonrpc::error_response(Some(client_id), code, &why.to_string(), None)
}

/// What a client that takes one JSON body gets: the answer whole, or a
/// long one's head and the rest as it arrives.
pub enum Answer {
    /// The whole answer.
    Whole(Message),
    /// The head (already re-addressed) and the rest.
    Streamed(Message, Tail),
}

impl Answer {
    /// The answer as it may go out now, when its response head has not
    /// gone yet: a long one whose rest failed already (the child wrote
    /// its start and died, or a byte JSON cannot have) becomes the error
    /// for its request. Once the head is out, a failure can only break
    /// the body off; before it, the client gets a status and its error
    /// (hyper drops a response whose body fails before it flushed it,
    /// head and all, and the client would be left with no status).
    pub fn settled(self) -> Answer {
        match self {
            Answer::Streamed(head, mut tail) => match tail.failed_by_now() {
                Some(why) => {
                    debug!(error = %why, "a long answer broke off before its response went out; answering with an error");
                    Answer::Whole(tail.error_for(why).into())
                }
                None => Answer::Streamed(head, tail),
            },
            whole => whole,
        }
    }
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
    use crate::jsonrpc::code;

    #[tokio::test]
    async fn chunks_arrive_in_order_then_the_end() {
        let (tx, mut tail) = channel(b"1", code::SERVER_ERROR);
        assert!(tx.send(Bytes::from_static(b"ab")));
        tx.finish(Bytes::from_static(b"c"));
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert_eq!(tail.next().await.unwrap().unwrap(), "c");
        assert!(tail.next().await.unwrap().is_none());
        assert!(tail.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_sender_dropped_before_the_end_fails_the_tail() {
        let (tx, mut tail) = channel(b"1", code::SERVER_ERROR);
        tx.send(Bytes::from_static(b"ab"));
        drop(tx);
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert!(matches!(tail.next().await, Err(TailError::Cut)));
    }

    #[tokio::test]
    async fn a_failed_tail_says_why() {
        let (tx, mut tail) = channel(b"1", code::SERVER_ERROR);
        tx.fail(TailError::TimedOut);
        assert_eq!(tail.next().await.unwrap_err(), TailError::TimedOut);
    }

    fn head() -> Message {
        Bytes::from_static(br#"{"jsonrpc":"2.0","id":"c-1","result":{"text":""#).into()
    }

    #[tokio::test]
    async fn a_tail_failed_before_its_head_went_out_becomes_its_error() {
        // In the code its client takes for the proxy's own failures.
        for code in [code::SERVER_ERROR, code::INTERNAL_ERROR] {
            let (tx, tail) = channel(br#""c-1""#, code);
            tx.send(Bytes::from_static(b"ab"));
            tx.fail(TailError::Cut);
            let Answer::Whole(m) = Answer::Streamed(head(), tail).settled() else {
                panic!("a whole answer");
            };
            let v: serde_json::Value = serde_json::from_slice(&m.into_bytes()).unwrap();
            assert_eq!(v["id"], "c-1");
            assert_eq!(v["error"]["code"], code);
        }
    }

    #[tokio::test]
    async fn a_tail_still_arriving_or_ended_is_settled_as_it_is() {
        let (tx, tail) = channel(b"1", code::SERVER_ERROR);
        tx.send(Bytes::from_static(b"ab"));
        let Answer::Streamed(_, mut tail) = Answer::Streamed(head(), tail).settled() else {
            panic!("still streamed");
        };
        tx.finish(Bytes::from_static(b"c"));
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert_eq!(tail.next().await.unwrap().unwrap(), "c");
        assert!(tail.next().await.unwrap().is_none());
        let (tx, tail) = channel(b"1", code::SERVER_ERROR);
        tx.send(Bytes::from_static(b"ab"));
        tx.finish(Bytes::from_static(b"c"));
        let Answer::Streamed(_, mut tail) = Answer::Streamed(head(), tail).settled() else {
            panic!("still streamed");
        };
        assert_eq!(tail.next().await.unwrap().unwrap(), "ab");
        assert_eq!(tail.next().await.unwrap().unwrap(), "c");
        assert!(tail.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_sender_learns_that_nobody_reads() {
        let (tx, tail) = channel(b"1", code::SERVER_ERROR);
        drop(tail);
        assert!(!tx.send(Bytes::from_static(b"x")));
    }
}
