//! The long answer the worker is passing on as the child writes it
//! (cut-through, see `crate::tail`): where its pieces go, a JSON body's
//! tail or an SSE stream, and until when the client waits for its end.
//! Every piece passes the [`Check`] first: bytes that are not UTF-8 are
//! repaired, and an answer that stops being JSON, or carries an `error`
//! after its `result`, fails where that shows.
//!
//! An answer whose id comes after its result (the TypeScript SDK's order)
//! was taken for the one request in flight; its last bytes are held back
//! until the line ends, and go on re-addressed only if the id there is
//! that request's. Otherwise the answer fails: its client never gets
//! another request's answer under its own id.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::warn;

use super::check::{Broken, Check};
use super::routes::parse_proxy_id;
use super::sink::Sink;
use super::stamp::Stamp;
use crate::jsonrpc;
use crate::tail::{TailError, TailSender};

/// Bytes held back from the end of an answer whose id comes last: room for
/// `,"jsonrpc":"2.0","id":<20 digits>}` and whitespace.
const HELD_BYTES: usize = 256;

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
    /// Set when the id comes at the end.
    id_at_end: Option<IdAtEnd>,
    /// What the client got so far is valid: UTF-8, and JSON up to here.
    check: Check,
    /// The server's identity, put into the result where `check` finds
    /// its place (it was made [`Check::stamping`]).
    stamp: Option<Arc<Stamp>>,
}

/// The id an answer must end with, and the bytes held back until it does.
struct IdAtEnd {
    expect: u64,
    client_id: Bytes,
    held: BytesMut,
}

impl IdAtEnd {
    /// Takes `piece` in and gives back what may go now: all but the last
    /// [`HELD_BYTES`] seen so far (two slices, so a long piece is not
    /// copied).
    fn hold(&mut self, piece: Bytes) -> [Option<Bytes>; 2] {
        if piece.len() >= HELD_BYTES {
            let older = (!self.held.is_empty()).then(|| self.held.split().freeze());
            let cut = piece.len() - HELD_BYTES;
            self.held.extend_from_slice(&piece[cut..]);
            [older, (cut > 0).then(|| piece.slice(..cut))]
        } else {
            self.held.extend_from_slice(&piece);
            let over = self.held.len().saturating_sub(HELD_BYTES);
            [(over > 0).then(|| self.held.split_to(over).freeze()), None]
        }
    }

    /// The held end, re-addressed, if its id is the expected one.
    fn readdress(self) -> Option<Bytes> {
        let end = self.held.freeze();
        let Range { start, end: stop } = jsonrpc::trailing_id(&end)?;
        if parse_proxy_id(&end[start..stop]) != Some(self.expect) {
            return None;
        }
        let mut out = BytesMut::with_capacity(end.len() + self.client_id.len());
        out.extend_from_slice(&end[..start]);
        out.extend_from_slice(&self.client_id);
        out.extend_from_slice(&end[stop..]);
        Some(out.freeze())
    }
}

impl Cut {
    /// `check` has seen the head that went; `stamp` goes where it finds
    /// the place in the rest.
    pub(super) fn new(
        to: To,
        deadline: Option<Instant>,
        check: Check,
        stamp: Option<Arc<Stamp>>,
    ) -> Cut {
        Cut {
            to: Some(to),
            deadline,
            id_at_end: None,
            check,
            stamp,
        }
    }

    /// `piece`, checked, as the pieces that go on: itself, or split where
    /// the server's identity goes in (once per answer).
    fn spliced(&mut self, piece: Bytes) -> [Option<Bytes>; 3] {
        let insert = self
            .check
            .take_splice()
            .zip(self.stamp.as_deref())
            .map(|(splice, stamp)| stamp.insertion(splice));
        match insert {
            None => [Some(piece), None, None],
            Some((at, with)) => [Some(piece.slice(..at)), Some(with), Some(piece.slice(at..))],
        }
    }

    /// The answer names its id only at its end: it must be `expect` (the
    /// proxy's id), which goes back as `client_id`.
    pub(super) fn with_id_at_end(mut self, expect: u64, client_id: &[u8]) -> Cut {
        self.id_at_end = Some(IdAtEnd {
            expect,
            client_id: Bytes::copy_from_slice(client_id),
            held: BytesMut::with_capacity(2 * HELD_BYTES),
        });
        self
    }

    /// Passes a piece on (to nobody, once its client is gone or the
    /// answer failed).
    pub(super) fn piece(&mut self, piece: Bytes) {
        if self.to.is_none() {
            return;
        }
        let piece = match self.check.piece(piece) {
            Ok(piece) => piece,
            Err(broken) => return self.broke(broken),
        };
        for piece in self.spliced(piece).into_iter().flatten() {
            self.pass(piece);
        }
    }

    /// Sends `piece` on, or holds it while the id at the end is not seen.
    fn pass(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        match &mut self.id_at_end {
            None => self.send(piece),
            Some(end) => {
                for piece in end.hold(piece).into_iter().flatten() {
                    self.send(piece);
                }
            }
        }
    }

    fn send(&self, piece: Bytes) {
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
        if self.to.is_none() {
            return;
        }
        let last = match self.check.end(last) {
            Ok(last) => last,
            Err(broken) => return self.broke(broken),
        };
        // What goes before the identity (when its place is in the last
        // piece) goes now, the rest as the last piece.
        let [front, with, rest] = self.spliced(last);
        let last = match (with, rest) {
            (Some(with), Some(rest)) => {
                for piece in [front, Some(with)].into_iter().flatten() {
                    self.pass(piece);
                }
                rest
            }
            _ => front.unwrap_or_default(),
        };
        if self.check.repaired {
            warn!("a long answer had bytes that are not UTF-8; passed them on as U+FFFD");
        }
        let last = match self.id_at_end.take() {
            None => last,
            Some(mut end) => {
                for piece in end.hold(last).into_iter().flatten() {
                    self.send(piece);
                }
                match end.readdress() {
                    Some(last) => last,
                    None => {
                        warn!(
                            "a long answer whose id came last was not for the one request in flight; failing that request"
                        );
                        return self.fail_with(TailError::Cut);
                    }
                }
            }
        };
        match self.to.take() {
            Some(To::Body(tail)) => {
                tail.finish(last);
            }
            Some(To::Stream(sink)) => sink.close_response(Ok(last)),
            None => {}
        }
    }

    /// The answer is not one a client may get: it fails, and the rest of
    /// its line goes nowhere.
    fn broke(&mut self, broken: Broken) {
        match broken {
            Broken::NotJson => {
                warn!("a long answer being passed on stopped being valid JSON; failing it")
            }
            Broken::BothMembers => {
                warn!(
                    "a long answer being passed on carries an error or a method beside its result, or an envelope member twice; failing it"
                )
            }
            Broken::RepeatedMeta => {
                warn!(
                    "a long answer being passed on has _meta twice in its result, so the server's identity may not be where its client reads it; failing it"
                )
            }
            Broken::RepeatedFill => {
                warn!(
                    "a long answer being passed on has a member in its result that the proxy adds for a 2026-07-28 client (resultType, ttlMs or cacheScope), which would go on twice; failing it"
                )
            }
        }
        self.fail_with(TailError::Cut);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn end_check(expect: u64) -> IdAtEnd {
        IdAtEnd {
            expect,
            client_id: Bytes::from_static(br#""c-1""#),
            held: BytesMut::new(),
        }
    }

    /// Feeds `line` cut at `cuts`, the last piece as the line's end.
    fn pass(line: &[u8], cuts: &[usize], expect: u64) -> Option<Vec<u8>> {
        let mut end = end_check(expect);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            for piece in end
                .hold(Bytes::copy_from_slice(&line[at..cut]))
                .into_iter()
                .flatten()
            {
                out.extend_from_slice(&piece);
            }
            at = cut;
        }
        for piece in end
            .hold(Bytes::copy_from_slice(&line[at..]))
            .into_iter()
            .flatten()
        {
            out.extend_from_slice(&piece);
        }
        assert!(end.held.len() <= HELD_BYTES, "holds at most {HELD_BYTES}");
        out.extend_from_slice(&end.readdress()?);
        Some(out)
    }

    #[test]
    fn the_held_end_is_readdressed_however_the_line_is_cut() {
        let text = "x".repeat(3000);
        let line = format!(r#"{{"result":{{"text":"{text}"}},"jsonrpc":"2.0","id":41}}"#);
        let want = format!(r#"{{"result":{{"text":"{text}"}},"jsonrpc":"2.0","id":"c-1"}}"#);
        let n = line.len();
        for cuts in [
            vec![],
            vec![1],
            vec![n - 1],
            vec![n - 3, n - 2],
            vec![100, 200, 300],
            vec![1000, n - 300, n - 255, n - 20],
            (1..n).step_by(97).collect(),
            (1..n).collect(),
        ] {
            let got = pass(line.as_bytes(), &cuts, 41).expect("its id");
            assert_eq!(String::from_utf8(got).unwrap(), want, "cuts {cuts:?}");
        }
        // Another request's id: nothing of the end goes on.
        assert_eq!(pass(line.as_bytes(), &[500, 2000], 42), None);
    }
}
