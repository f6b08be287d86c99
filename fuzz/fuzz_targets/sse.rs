//! The SSE encoder (`sse::Outlet`: whole events, priming events, long
//! answers opened and sent on in pieces) read back by a reference parser
//! written here from the WHATWG "event stream interpretation" rules
//! (lines end in CRLF, LF or CR; `:` starts a comment; one space after
//! the colon is dropped; an empty line dispatches; empty data dispatches
//! nothing). Oracles: the events read back are the messages sent (and
//! the priming events, with empty data), in order, byte for byte but for CR and LF (JSON whitespace, sent as
//! spaces), each with the id `<stream>-<seq>` that `parse_event_id` reads
//! back (or, without ids, named `message`); and a resumption after any
//! id replays exactly the events that followed it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::sse::{LiveRx, Outlet, parse_event_id};

#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: String,
    name: String,
    data: Vec<u8>,
}

/// WHATWG event stream interpretation, over the whole stream.
fn reference_parse(stream: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let (mut data, mut name, mut last_id) = (Vec::<u8>::new(), String::new(), String::new());
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    // A last line without its end is not processed (the stream is incomplete).
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop(); // the last LF
                events.push(Event {
                    id: last_id.clone(),
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        name.clone()
                    },
                    data: std::mem::take(&mut data),
                });
            }
            data.clear();
            name.clear();
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(at) => {
                let v = &line[at + 1..];
                (&line[..at], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => name = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => last_id = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    events
}

/// Everything the receiver has ready now, or `None` if it waits.
fn drain(rx: &mut LiveRx, out: &mut Vec<u8>) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        let fut = std::pin::pin!(rx.recv());
        match std::future::Future::poll(fut, &mut cx) {
            std::task::Poll::Ready(Some(ev)) => out.extend_from_slice(&ev),
            _ => return,
        }
    }
}

fn spaces(json: &[u8]) -> Vec<u8> {
    json.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Send(Vec<u8>),
    Respond(Vec<u8>),
    /// A long answer: its head pieces, the pieces sent on, and its last.
    Long(Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u8>),
    Prime,
    Drain,
}

fuzz_target!(|input: (u64, bool, Vec<Op>, u64)| {
    let (stream, with_ids, ops, after) = input;
    let (outlet, mut rx) = Outlet::new(stream, with_ids, None, 1 << 16, 1 << 16);
    let mut out = Vec::new();
    // (seq, message) of every event, priming ones with no message.
    let mut sent: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    let json = |b: &[u8]| serde_json::from_slice::<&serde_json::value::RawValue>(b).is_ok();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Send(m) | Op::Respond(m) if !json(&m) => {}
            Op::Send(m) => {
                outlet.send(&m);
                sent.push((seq, m));
                seq += 1;
            }
            Op::Respond(m) => {
                outlet.send_response(&m);
                sent.push((seq, m));
                seq += 1;
            }
            Op::Long(head, pieces, last) => {
                let whole: Vec<u8> = head
                    .iter()
                    .chain(&pieces)
                    .flatten()
                    .chain(&last)
                    .copied()
                    .collect();
                if !json(&whole) || !outlet.takes_pieces() {
                    continue;
                }
                let head: Vec<Bytes> = head.into_iter().map(Bytes::from).collect();
                assert!(outlet.open_response(&head, b"1"));
                for p in pieces {
                    assert!(outlet.response_piece(Bytes::from(p)));
                }
                outlet.close_response(Ok(Bytes::from(last)));
                sent.push((seq, whole));
                seq += 1;
            }
            Op::Prime => {
                if with_ids {
                    // An empty `data:` line: a `message` event with empty
                    // data for a WHATWG parser (the buffer holds one LF).
                    outlet.prime();
                    sent.push((seq, Vec::new()));
                    seq += 1;
                }
            }
            Op::Drain => drain(&mut rx, &mut out),
        }
    }
    drain(&mut rx, &mut out);
    let got = reference_parse(&out);
    let want: Vec<Event> = sent
        .iter()
        .map(|(s, m)| Event {
            id: if with_ids {
                format!("{stream}-{s}")
            } else {
                String::new()
            },
            name: "message".into(),
            data: spaces(m),
        })
        .collect();
    assert_eq!(got, want, "stream {:?}", String::from_utf8_lossy(&out));
    for e in &got {
        if with_ids {
            let (st, _) = parse_event_id(&e.id).expect("an id the proxy reads back");
            assert_eq!(st, stream);
        }
    }

    // Resumption after any event replays what followed it.
    if with_ids && seq > 0 {
        let after = after % seq;
        let mut replayed = Vec::new();
        match outlet.resume(after) {
            Some(mut rx) => drain(&mut rx, &mut replayed),
            None => panic!("resume after {after} of {seq} refused with room for all"),
        }
        let want: Vec<Event> = want
            .into_iter()
            .zip(&sent)
            .filter(|(_, (s, _))| *s > after)
            .map(|(e, _)| e)
            .collect();
        assert_eq!(reference_parse(&replayed), want, "replay after {after}");
    }
});
