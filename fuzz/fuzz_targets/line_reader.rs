//! `jsonrpc::LineReader` over a reader that gives the fuzzer's bytes in
//! fuzzer-chosen chunk sizes, with a small `max_line_bytes`, long lines
//! offered for cut-through (and taken up or not, as the fuzzer says) and
//! over-cap lines reported.
//!
//! Oracle: a reference split on `\n` (one trailing CR stripped, lines of
//! whitespace skipped, a line longer than the cap, its CR end not
//! counted, reported with that length, as since c686956): every line comes out exactly as the reference has
//! it, whole or as the chunks of a line passed on, none lost or merged;
//! `OverCap` is followed by that line's `LineTooLong`; a line passed on
//! that EOF cuts off ends nothing.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::jsonrpc::{LineError, LineReader, Piece};
use tokio::io::{AsyncRead, ReadBuf};

/// The input in the fuzzer's chunk sizes, always ready.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    at: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = 1 + usize::from(self.sizes[self.at % self.sizes.len()] % 32);
        self.at += 1;
        let n = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Polls a future whose reader is always ready to its end.
fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Line(Vec<u8>),
    /// A line passed on: its bytes, and whether its end came.
    Passed(Vec<u8>, bool),
    TooLong(usize),
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let (head, input) = data.split_at(11);
    let max = 1 + usize::from(head[0] % 64);
    let offer = 1 + usize::from(head[1] % 80);
    let report = head[2] & 1 != 0;
    let take_up = head[2] >> 1;
    let sizes = &head[3..11];

    let mut r = LineReader::new(
        Chunked {
            data: input,
            sizes,
            at: 0,
        },
        max,
    )
    .offering_long_lines_at(offer);
    if report {
        r = r.reporting_over_cap();
    }
    let mut got = Vec::new();
    let mut offers = 0u32;
    let mut passing: Option<Vec<u8>> = None;
    let mut over_cap = false;
    loop {
        let piece = ready(r.next_piece());
        if over_cap {
            assert!(
                matches!(piece, Err(LineError::LineTooLong { .. })),
                "OverCap followed by {piece:?}"
            );
            over_cap = false;
        }
        match piece {
            Ok(None) => {
                if let Some(bytes) = passing.take() {
                    got.push(Got::Passed(bytes, false));
                }
                break;
            }
            Ok(Some(Piece::Line(line))) => {
                assert!(passing.is_none(), "a line while one is passed on");
                got.push(Got::Line(line.to_vec()));
            }
            Ok(Some(Piece::Long)) => {
                assert!(passing.is_none(), "an offer while a line is passed on");
                offers += 1;
                // Taken up or not as the fuzzer says, but never for a blank
                // line (the worker takes up only a line that starts an
                // answer), so that blank lines are skipped in any case.
                let blank = r.partial().iter().all(u8::is_ascii_whitespace);
                if !blank && take_up >> (offers % 7) & 1 != 0 {
                    let head: Bytes = r.stream_line();
                    passing = Some(head.to_vec());
                }
            }
            Ok(Some(Piece::Chunk(chunk))) => {
                passing
                    .as_mut()
                    .expect("a chunk of a line passed on")
                    .extend_from_slice(&chunk);
            }
            Ok(Some(Piece::LineEnd(end))) => {
                let mut bytes = passing.take().expect("the end of a line passed on");
                bytes.extend_from_slice(&end);
                got.push(Got::Passed(bytes, true));
            }
            Err(LineError::OverCap { limit, .. }) => {
                assert_eq!(limit, max);
                // A line passed on that passes the cap is skipped from there.
                passing = None;
                over_cap = true;
            }
            Err(LineError::LineTooLong { len, limit, .. }) => {
                assert_eq!(limit, max);
                // A line passed on may also end over the cap.
                passing = None;
                got.push(Got::TooLong(len));
            }
            Err(LineError::Io(e)) => panic!("io error {e}"),
        }
    }
    // EOF stays EOF.
    assert!(matches!(ready(r.next_piece()), Ok(None)));

    // The reference: split on LF.
    let mut segments: Vec<(&[u8], bool)> = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        segments.push((&rest[..i], true));
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        segments.push((rest, false));
    }
    let mut got = got.into_iter().peekable();
    for (segment, ended) in segments {
        let content = segment.strip_suffix(b"\r").unwrap_or(segment);
        // A line passed on that EOF cuts off ends nothing, whatever its
        // length (its CR may still be held back at the cap).
        if !ended && matches!(got.peek(), Some(Got::Passed(_, false))) {
            let Some(Got::Passed(bytes, _)) = got.next() else {
                unreachable!()
            };
            assert!(
                segment.starts_with(&bytes) && bytes.len() <= max,
                "cut-off line"
            );
            continue;
        }
        // The cap is on the message: a CR before the LF (or at EOF) is
        // part of the line's end, not counted (README, --max-line-bytes).
        if content.len() > max {
            assert_eq!(
                got.next(),
                Some(Got::TooLong(content.len())),
                "over-cap line {:?} (cap {max})",
                show(segment)
            );
            continue;
        }
        let blank = content.iter().all(u8::is_ascii_whitespace);
        match got.peek() {
            Some(Got::Passed(_, _)) if !blank => {
                let Some(Got::Passed(bytes, end)) = got.next() else {
                    unreachable!()
                };
                assert_eq!(end, ended, "line {:?} passed on", show(segment));
                if ended {
                    assert_eq!(
                        show(&bytes),
                        show(content),
                        "line passed on differs from the line"
                    );
                } else {
                    assert!(segment.starts_with(&bytes), "cut-off line");
                }
            }
            _ if blank => {}
            _ => assert_eq!(
                got.next(),
                Some(Got::Line(content.to_vec())),
                "line {:?} (cap {max})",
                show(segment)
            ),
        }
    }
    assert_eq!(got.next(), None, "more lines than the input has");
});
