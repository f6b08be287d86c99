//! Replay memory of several streams sharing one `sse::ReplayBudget`:
//! request streams owing answers and GET streams, notifications and
//! answers of fuzzer-chosen sizes, consumers that go away, resumptions
//! from any event, lingering buffers that expire or make room for live
//! streams, streams dropped.
//!
//! Oracles:
//! - the budget never holds more than its limit, and is back at zero once
//!   every stream is gone (a lost give-back stays counted; a double one
//!   wraps below zero to a huge count);
//! - a resumption after event `after` of a stream is refused exactly when
//!   the stream never sent that event, and otherwise returns, for every
//!   answer the stream sent after it, exactly one message with that
//!   answer's id: the answer itself (byte for byte) or the error for a
//!   lost answer, never another id's, and the event ids of those errors
//!   continue the stream's sequence; all of this holds as well for a
//!   stream revived from its tombstone.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mcp_sidecar::sse::{LiveRx, Outlet, ReplayBudget, parse_event_id};

#[derive(Debug, arbitrary::Arbitrary)]
struct Setup {
    limit: u16,
    linger: bool,
    replay_events: u8,
    replay_bytes: u16,
    max_queue: u8,
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    /// A request's stream owing 1 to 3 answers, or (0) a GET stream.
    Open(u8),
    Send(u8, u16),
    Respond(u8, u16),
    Prime(u8),
    /// The consumer goes away (its connection dropped).
    Hangup(u8),
    Drain(u8),
    Resume(u8, u16),
    /// Time passes, by this many seconds of a lingering buffer's hour.
    Expire(u8),
    DropStream(u8),
    /// The session lets go of the stream (a tombstone) and a client comes
    /// back for it (revived from the tombstone).
    Bury(u8),
}

/// What the model knows of one stream.
struct Model {
    outlet: Outlet,
    rx: Option<LiveRx>,
    id: u64,
    next_seq: u64,
    owed: Option<usize>,
    finished: bool,
    /// Every answer: the sequence number of the event that carries it
    /// (moved on when it is lost and an error carries it), its id, and
    /// the message.
    answers: Vec<(u64, u64, Vec<u8>)>,
}

/// An event's id and data (each item is one whole event here).
fn parse(event: &[u8]) -> (u64, u64, Vec<u8>) {
    let text = std::str::from_utf8(event).expect("events are UTF-8 here");
    let mut id = None;
    let mut data = None;
    for line in text.split('\n') {
        if let Some(v) = line.strip_prefix("id: ") {
            id = parse_event_id(v);
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.as_bytes().to_vec());
        }
    }
    let (stream, seq) = id.expect("every event carries an id");
    (stream, seq, data.expect("every event carries data"))
}

fn drain(rx: &mut LiveRx) -> Vec<(u64, u64, Vec<u8>)> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        let fut = std::pin::pin!(rx.recv());
        match std::future::Future::poll(fut, &mut cx) {
            std::task::Poll::Ready(Some(ev)) => out.push(parse(&ev)),
            _ => return out,
        }
    }
}

fn message(len: u16, id: Option<u64>) -> Vec<u8> {
    let pad = "x".repeat(usize::from(len) % 4096);
    match id {
        Some(id) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"{pad}"}}"#),
        None => format!(r#"{{"jsonrpc":"2.0","method":"n","params":"{pad}"}}"#),
    }
    .into_bytes()
}

/// The id of an answer or error, and whether it is the lost-answer error.
fn answer_id(data: &[u8]) -> Option<(u64, bool)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let id = v.get("id")?.as_u64()?;
    let lost = v.pointer("/error/message").and_then(|m| m.as_str()).is_some_and(|m| m.contains("was lost"));
    Some((id, lost))
}

fuzz_target!(|input: (Setup, Vec<Op>)| {
    let (setup, ops) = input;
    let limit = usize::from(setup.limit);
    let linger = if setup.linger {
        Duration::from_secs(3600)
    } else {
        Duration::ZERO
    };
    let budget = ReplayBudget::new(limit, linger);
    let start = Instant::now();
    let mut streams: Vec<Model> = Vec::new();
    let mut next_id = 0u64;
    for op in ops.into_iter().take(96) {
        let pick = |s: u8, n: usize| (n > 0).then(|| usize::from(s) % n);
        match op {
            Op::Open(owed) => {
                let owed = match owed % 4 {
                    0 => None,
                    n => Some(usize::from(n)),
                };
                let id = streams.len() as u64;
                let (outlet, rx) = Outlet::new(
                    id,
                    true,
                    owed,
                    usize::from(setup.max_queue % 8) + 1,
                    usize::from(setup.replay_events % 8) + 1,
                );
                let outlet = outlet
                    .with_replay_bytes(usize::from(setup.replay_bytes % 4096) + 64)
                    .with_budget(budget.clone());
                streams.push(Model {
                    outlet,
                    rx: Some(rx),
                    id,
                    next_seq: 0,
                    owed,
                    finished: false,
                    answers: Vec::new(),
                });
            }
            Op::Send(s, len) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                let m = &mut streams[i];
                m.outlet.send(&message(len, None));
                if !m.finished {
                    m.next_seq += 1;
                }
            }
            Op::Prime(s) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                let m = &mut streams[i];
                if !m.finished {
                    m.outlet.prime();
                    m.next_seq += 1;
                }
            }
            Op::Respond(s, len) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                let m = &mut streams[i];
                next_id += 1;
                let answer = message(len, Some(next_id));
                m.outlet.send_response(&answer);
                if !m.finished {
                    m.answers.push((m.next_seq, next_id, answer));
                    m.next_seq += 1;
                    if let Some(owed) = m.owed.as_mut() {
                        *owed -= 1;
                        m.finished = *owed == 0;
                    }
                }
            }
            Op::Hangup(s) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                streams[i].rx = None;
            }
            Op::Drain(s) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                if let Some(rx) = streams[i].rx.as_mut() {
                    for (stream, _, _) in drain(rx) {
                        assert_eq!(stream, streams[i].id);
                    }
                }
            }
            Op::Resume(s, after) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                let m = &mut streams[i];
                let after = u64::from(after) % (m.next_seq + 2);
                let Some(mut rx) = m.outlet.resume(after) else {
                    assert!(after >= m.next_seq, "resume after {after} of {} refused", m.next_seq);
                    continue;
                };
                assert!(after < m.next_seq, "resume after {after} of {} taken", m.next_seq);
                let got = drain(&mut rx);
                m.rx = Some(rx);
                let mut seen = std::collections::BTreeMap::new();
                for (stream, seq, data) in &got {
                    assert_eq!(*stream, m.id);
                    assert!(*seq > after, "event {seq} replayed after {after}");
                    let Some((id, lost)) = answer_id(data) else { continue };
                    assert!(seen.insert(id, (*seq, lost, data.clone())).is_none(), "answer {id} twice");
                }
                let want: Vec<u64> = m.answers.iter().filter(|a| a.0 > after).map(|a| a.1).collect();
                assert_eq!(seen.keys().copied().collect::<Vec<_>>(), {
                    let mut w = want.clone();
                    w.sort();
                    w
                }, "answers after {after}: {got:?}");
                // Errors are new events, in the order of the answers.
                for a in m.answers.iter_mut().filter(|a| a.0 > after) {
                    let (seq, lost, data) = &seen[&a.1];
                    if *lost {
                        if *seq >= m.next_seq {
                            assert_eq!(*seq, m.next_seq, "a lost answer's error continues the sequence");
                            m.next_seq += 1;
                        }
                        a.0 = *seq;
                    } else {
                        assert_eq!(*seq, a.0);
                        assert_eq!(data, &a.2, "an answer replayed as it was sent");
                    }
                }
            }
            Op::Expire(secs) => {
                budget.expire(start + Duration::from_secs(u64::from(secs) * 15));
            }
            Op::Bury(s) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                let m = &mut streams[i];
                let Some(t) = m.outlet.tombstone() else {
                    assert!(!m.finished || m.answers.is_empty(), "a finished stream with answers leaves a tombstone");
                    continue;
                };
                assert!(m.finished, "only a finished stream leaves a tombstone");
                let revived = Outlet::revive(
                    t,
                    usize::from(setup.max_queue % 8) + 1,
                    usize::from(setup.replay_events % 8) + 1,
                )
                .with_replay_bytes(usize::from(setup.replay_bytes % 4096) + 64)
                .with_budget(budget.clone());
                m.outlet = revived;
                m.rx = None;
            }
            Op::DropStream(s) => {
                let Some(i) = pick(s, streams.len()) else { continue };
                // Ids stay those of the streams' positions when opened.
                let m = streams.swap_remove(i);
                drop(m);
            }
        }
        assert!(budget.used() <= limit, "budget {} over its limit {limit}", budget.used());
    }
    drop(streams);
    assert_eq!(budget.used(), 0, "every stream gone, and bytes still counted");
});
