//! Server-sent event streams.
//!
//! Owns: event encoding, keep-alive comments, and [`Outlet`], the sending
//! side of one logical stream. An outlet numbers its events (ids encode the
//! stream and a sequence number, so they are unique within a session),
//! keeps the last few in a bounded buffer for `Last-Event-ID` replay
//! (spec 2025-03-26+ `transports#resumability-and-redelivery`), and
//! forwards each event to the live HTTP response if one is attached.
//!
//! Queue policy: the live response has a bounded queue (`--max-queue`
//! events and `--max-queue-bytes` bytes for notifications, plus room
//! reserved for every response the stream still owes; a notification is
//! always taken by an empty queue, however large). The producer, ultimately the child's stdout reader,
//! never waits on a client. When notifications fill the queue the consumer
//! is too slow: a stream with event ids cuts it off (it resumes from the
//! replay buffer). A request's own stream without them (`--stateless`,
//! 2026-07-28, `--replay-events 0`) cannot resume, so it drops the
//! notification instead and keeps the consumer, whose response always has
//! room: the client gets its response, never silence. A stream that owes no
//! set number of responses (legacy, GET) would keep every answer for a
//! client that does not read, so there answers count against
//! `--max-queue-bytes` too (with what waits behind an answer going on in
//! pieces, and what earlier such answers have not yet had taken: the
//! latest one is the answer that always fits), and past either cap such a
//! stream without ids is cut off rather than made to drop anything: it
//! ends (a legacy stream with its session), which its client sees, where a
//! dropped message would be lost without a trace (a dropped server request
//! would leave the child waiting). So is a 2026-07-28 `subscriptions/listen`
//! stream ([`Outlet::cut_when_slow`]): its notifications are all it is for.
//!
//! Replay memory: a stream's buffer lingers for `--replay-linger` once
//! its last response was handed to a live consumer (whose connection may
//! still drop before the client read it), then goes; all buffers of the
//! proxy together stay within one byte budget (`--replay-total-bytes`,
//! [`ReplayBudget`]), where lingering ones are the first to go. A resumption from before what is kept still
//! resumes: each answer lost with the evicted events comes back as a
//! JSON-RPC error to its request ([`Outlet::resume`]), never as silence.
//!
//! Long answers (`crate::tail`): a response the multiplexer passes on as
//! the child writes it opens an event ([`Outlet::open_response`]) whose
//! pieces go to the live consumer as they come, as one queue item; nothing
//! else (no keep-alive either) goes out until it closes. Its pieces are
//! also kept, so that if the consumer goes away midway the event is
//! completed all the same: kept for replay within the caps, or delivered
//! whole to the next consumer. One that breaks off fails its consumer's
//! stream, and the request gets an error response instead.
//!
//! Priming events (SEP-1699) go only to sessions that negotiated
//! 2025-11-25 or later; older clients choke on an empty `data:`. Not done,
//! on purpose (transport.md §7.D): `retry:` lines (some gateways reject
//! them) and server-initiated early close.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::jsonrpc::Message;
use crate::tail::{Instead, Tail, TailSender};

/// Why a response body broke off: the client then sees the connection
/// fail rather than a body that ends early but still parses.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every handler.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// How long a POST's SSE response waits for its first message before its
/// head goes out alone (see [`LiveRx::hold_first`]). Answers quicker than
/// this leave in one write with the head; a slower one gets its head this
/// much later, which no client can tell from a slower server (nothing but
/// the head would have come sooner). One second is also the longest period
/// of a connection's own timer check, so this wait is never the runtime's
/// next timer and registering it costs no extra wake-up.
const HEAD_HOLD: Duration = Duration::from_secs(1);

/// A keep-alive comment: ignored by clients, keeps intermediaries from
/// cutting an idle stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encodes one event. `data` is one JSON message; CR and LF in it can only
/// be insignificant whitespace and are replaced so it stays one `data:` line.
pub fn event(id: Option<&str>, name: Option<&str>, data: &[u8]) -> Bytes {
    event_of(id, name, Text::Flat(data))
}

/// [`event`] of a message's text, whole or in pieces.
fn event_of(id: Option<&str>, name: Option<&str>, data: Text<'_>) -> Bytes {
    let mut out = event_start(id, name, data.len() + 2);
    let start = out.len();
    data.put(&mut out);
    blank_line_breaks(&mut out[start..]);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The text of a message going out: one slice, or the pieces of an answer
/// whose id was replaced ([`crate::jsonrpc::Message`]), which go into its
/// event without being joined first.
#[derive(Clone, Copy)]
enum Text<'a> {
    Flat(&'a [u8]),
    Parts(&'a [Bytes]),
}

impl Text<'_> {
    /// Whether it is a request (a message with a `method` and an `id`):
    /// only such go out flat, besides notifications and responses.
    fn is_request(self) -> bool {
        match self {
            Text::Flat(b) => {
                crate::jsonrpc::locate(b, &["method"]).is_some()
                    && crate::jsonrpc::locate(b, &["id"]).is_some()
            }
            Text::Parts(_) => false,
        }
    }

    fn len(self) -> usize {
        match self {
            Text::Flat(b) => b.len(),
            Text::Parts(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    fn put(self, out: &mut BytesMut) {
        match self {
            Text::Flat(b) => out.put_slice(b),
            Text::Parts(parts) => parts.iter().for_each(|p| out.put_slice(p)),
        }
    }

    fn to_bytes(self) -> Bytes {
        match self {
            Text::Flat(b) => Bytes::copy_from_slice(b),
            Text::Parts([one]) => one.clone(),
            Text::Parts(_) => {
                let mut out = BytesMut::with_capacity(self.len());
                self.put(&mut out);
                out.freeze()
            }
        }
    }
}

/// What a message going out on a stream is.
#[derive(Clone, Copy)]
enum Sent<'a> {
    /// A notification or a request of the server's (may be dropped for a
    /// slow consumer of a stream that cannot resume).
    Other,
    /// A response, with its request's id as the client wrote it when the
    /// sender knows it (else it is read from the message).
    Answer(Option<&'a [u8]>),
}

/// Answers a stream remembers the request ids of, for errors when they
/// are lost (see [`Outlet::resume`]), unless it owes more: a stream
/// carries the answers to one POST, so it remembers them all, bounded by
/// `--max-batch` (which has its flag); this bounds only a stream that
/// owes no set number (a GET stream carries no answers).
const ANSWERS_KEPT: usize = 1024;

/// The error a client resuming from before a lost answer gets for it.
const LOST_ANSWER: &str = "the answer to this request was lost: the stream was resumed from before the events the proxy still keeps for replay (--replay-events, --replay-bytes, --replay-linger); the request may have been carried out";

/// Whether a response going out now (`delivered`: to a live consumer)
/// settles its stream's replay memory (it lingers, or is released): the
/// last response the stream owes reached its consumer, and only a
/// connection that drops before the client read it resumes now.
fn answer_releases(inner: &OutletInner, delivered: bool) -> bool {
    delivered && matches!(inner.owed, Some(0 | 1))
}

/// An event's fields up to its `data: `, with room for `more` bytes.
fn event_start(id: Option<&str>, name: Option<&str>, more: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(more + 48);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out
}

/// CR and LF in JSON can only be insignificant whitespace: spaces keep
/// the data on one line.
fn blank_line_breaks(data: &mut [u8]) {
    let mut at = 0;
    while let Some(i) = memchr::memchr2(b'\n', b'\r', &data[at..]) {
        data[at + i] = b' ';
        at += i + 1;
    }
}

/// A piece of a `data:` line: CR and LF (insignificant whitespace in
/// JSON) become spaces, copying only when there are any.
fn data_line(piece: Bytes) -> Bytes {
    if memchr::memchr2(b'\n', b'\r', &piece).is_none() {
        return piece;
    }
    let mut out = BytesMut::from(&piece[..]);
    blank_line_breaks(&mut out);
    out.freeze()
}

/// Wraps a receiver of encoded events into a response body that also sends
/// keep-alive comments and ends on `cancel`. `guard` is dropped when the
/// body is (the client went away or the stream ended).
pub fn stream_body<G: Send + 'static>(
    mut rx: LiveRx,
    keep_alive: Duration,
    cancel: CancellationToken,
    guard: G,
) -> Body {
    let stream = async_stream::stream! {
        let _guard = guard;
        // When a keep-alive is due if nothing goes out before. The timer
        // exists only while the stream waits: a response whose events are
        // there when its body is polled (most are) sets none.
        let mut due = tokio::time::Instant::now() + keep_alive;
        'events: loop {
            let item = match rx.ready_item() {
                Some(item) => item,
                None => tokio::select! {
                    biased;
                    item = rx.recv_item() => item,
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(due) => {
                        due = tokio::time::Instant::now() + keep_alive;
                        yield Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)));
                        continue;
                    }
                },
            };
            match item {
                Some(Item::Event(bytes) | Item::Prime(bytes)) => {
                    yield Ok::<_, BodyError>(Frame::data(bytes));
                    due = tokio::time::Instant::now() + keep_alive;
                }
                Some(Item::Open(first, mut tail, unread)) => {
                    // An event still arriving: its pieces, and nothing
                    // else (no keep-alive) until it ends.
                    yield Ok(Frame::data(first));
                    loop {
                        let piece = tokio::select! {
                            piece = tail.next() => piece,
                            _ = cancel.cancelled() => break 'events,
                        };
                        match piece {
                            Ok(Some(piece)) => {
                                unread.fetch_sub(piece.len(), Ordering::Relaxed);
                                yield Ok(Frame::data(piece));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                debug!(error = %e, "a long answer broke off; failing its stream");
                                // Once, so that what went before (the
                                // response head among it) is flushed: see
                                // `streamed`.
                                tokio::task::yield_now().await;
                                yield Err(e.into());
                                break 'events;
                            }
                        }
                    }
                    due = tokio::time::Instant::now() + keep_alive;
                }
                None => break,
            }
        }
    };
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// The receiving side of a stream's live queue: what the HTTP response
/// takes events from. It gives back the bytes it takes, so that the
/// outlet's byte cap counts only what is still waiting.
pub struct LiveRx {
    rx: mpsc::Receiver<Item>,
    queued: Arc<AtomicUsize>,
    /// Items taken early by [`LiveRx::hold_first`], given out first.
    held: VecDeque<Item>,
    /// The queue ended while items were being held.
    ended: bool,
}

/// One item of a live queue.
enum Item {
    /// An encoded event, whole.
    Event(Bytes),
    /// The SEP-1699 priming event: an id and no message.
    Prime(Bytes),
    /// An event still arriving (a long answer passed on as the child
    /// writes it): its first bytes, then the rest from the tail, and the
    /// bytes of the rest sent but not yet taken. The tail is boxed: it
    /// is rare (answers past the cut-through threshold), and every item
    /// moved through the queue is the size of the largest.
    Open(Bytes, Box<Tail>, Arc<AtomicUsize>),
}

impl Item {
    /// Bytes counted against the queue's byte cap.
    fn len(&self) -> usize {
        match self {
            Item::Event(b) | Item::Prime(b) | Item::Open(b, ..) => b.len(),
        }
    }
}

impl LiveRx {
    fn new(rx: mpsc::Receiver<Item>) -> LiveRx {
        LiveRx {
            rx,
            queued: Arc::default(),
            held: VecDeque::new(),
            ended: false,
        }
    }

    /// An item there now without waiting (`Some(None)`: the queue ended),
    /// or `None` when the next must be awaited.
    fn ready_item(&mut self) -> Option<Option<Item>> {
        if let Some(item) = self.held.pop_front() {
            return Some(Some(item));
        }
        if self.ended {
            return Some(None);
        }
        match self.rx.try_recv() {
            Ok(item) => {
                self.queued.fetch_sub(item.len(), Ordering::Relaxed);
                Some(Some(item))
            }
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.ended = true;
                Some(None)
            }
        }
    }

    async fn recv_item(&mut self) -> Option<Item> {
        if let Some(item) = self.held.pop_front() {
            return Some(item);
        }
        if self.ended {
            return None;
        }
        let item = self.rx.recv().await?;
        self.queued.fetch_sub(item.len(), Ordering::Relaxed);
        Some(item)
    }

    /// Waits for the stream's first message (a priming event alone does
    /// not count), keeping what it takes for the body; at most
    /// [`HEAD_HOLD`], or the stream's `keep_alive` period if shorter (no
    /// stream is silent longer than that), and not past `cancel`.
    ///
    /// A response returned after this leaves with its first event in the
    /// same write as its head, and a quick answer costs the client one
    /// wake-up instead of two (hyper sends the head on its own as soon as
    /// the body has nothing ready). Bounded: at most one priming event and
    /// one message are held.
    ///
    /// A long answer held as it began whose rest failed already is held
    /// as its request's error instead: the response's head has not gone,
    /// so its client gets a whole stream rather than one that breaks off
    /// (see `crate::tail::Answer::settled`). That is the error's event
    /// as the outlet made it ([`Outlet::close_response`]), under the id
    /// it keeps it for replay under: a resumption after it does not get
    /// it again.
    pub async fn hold_first(&mut self, keep_alive: Duration, cancel: &CancellationToken) {
        let deadline = tokio::time::sleep(HEAD_HOLD.min(keep_alive));
        tokio::pin!(deadline);
        while !self.ended && !self.holds_a_message() {
            tokio::select! {
                biased;
                item = self.rx.recv() => match item {
                    Some(item) => {
                        self.queued.fetch_sub(item.len(), Ordering::Relaxed);
                        self.held.push_back(item);
                    }
                    None => self.ended = true,
                },
                _ = &mut deadline => return,
                _ = cancel.cancelled() => return,
            }
        }
        let held = std::mem::take(&mut self.held);
        self.held = held
            .into_iter()
            .filter_map(|mut item| {
                if let Item::Open(_, tail, _) = &mut item
                    && let Some(why) = tail.failed_by_now()
                {
                    debug!(error = %why, "a long answer broke off before its stream's head went out; sending what goes in its place");
                    return match tail.instead() {
                        Instead::Event(ev) => Some(Item::Event(ev.clone())),
                        // A resumption took the stream over: the answer,
                        // or its error, goes there under its id, and
                        // this stream ends before it.
                        Instead::Nothing => None,
                        // No error was made for it (the stream had
                        // ended): nothing can replay one either.
                        Instead::Error => Some(Item::Event(event(None, None, &tail.error_for(why)))),
                    };
                }
                Some(item)
            })
            .collect();
    }

    fn holds_a_message(&self) -> bool {
        self.held.iter().any(|i| !matches!(i, Item::Prime(_)))
    }

    /// The message of the first event [`LiveRx::hold_first`] holds, if it
    /// arrived whole (its `data:` text, the JSON-RPC message).
    pub fn held_message(&self) -> Option<&[u8]> {
        let Some(Item::Event(ev)) = self.held.iter().find(|i| !matches!(i, Item::Prime(_))) else {
            return None;
        };
        // An event's data is one line (see `event`).
        ev.split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"data: "))
    }

    /// The next event, whole (one still arriving is awaited to its end),
    /// or `None` once the outlet let go of this response (or an event
    /// broke off).
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self.recv_item().await? {
            Item::Event(b) | Item::Prime(b) => Some(b),
            Item::Open(first, mut tail, unread) => {
                let mut whole = BytesMut::from(&first[..]);
                while let Some(piece) = tail.next().await.ok()? {
                    unread.fetch_sub(piece.len(), Ordering::Relaxed);
                    whole.extend_from_slice(&piece);
                }
                Some(whole.freeze())
            }
        }
    }
}

/// A full body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of several buffers sent one after another, without joining them;
/// its length is known, so it goes out with `Content-Length`.
pub fn parts(parts: Vec<Bytes>) -> Body {
    Parts {
        remaining: parts.iter().map(|p| p.len() as u64).sum(),
        parts: parts.into(),
    }
    .map_err(|never| match never {})
    .boxed_unsync()
}

/// A body of unknown length: a long answer's head, then its rest as it
/// arrives (`crate::tail`). If the rest fails, so does the body.
pub fn streamed(head: Vec<Bytes>, mut tail: crate::tail::Tail) -> Body {
    let stream = async_stream::stream! {
        for part in head {
            yield Ok::<_, BodyError>(Frame::data(part));
        }
        loop {
            match tail.next().await {
                Ok(Some(chunk)) => yield Ok(Frame::data(chunk)),
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "a long answer broke off; failing its body");
                    // hyper drops what it has not flushed yet when a body
                    // fails, the response head too, and the client would
                    // get no status at all. Waiting once lets it flush
                    // (it does whenever the body has nothing ready): the
                    // client gets the head and sees the body break off.
                    tokio::task::yield_now().await;
                    yield Err(e.into());
                    break;
                }
            }
        }
    };
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

struct Parts {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop_front().map(|p| {
            self.remaining -= p.len() as u64;
            Ok(Frame::data(p))
        });
        std::task::Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Lingering buffers the budget tracks at most; past it the oldest is
/// released early. Each entry is a few words; this bounds the list when
/// many small streams finish faster than they expire.
const MAX_LINGERING: usize = 16 * 1024;

/// A finished stream's replay buffer, kept for a while after its last
/// answer was handed to a consumer (see [`ReplayBudget`]).
struct Lingered {
    buffer: VecDeque<Kept>,
    bytes: usize,
}

/// Where a lingering buffer lives: its stream holds it, the budget's list
/// a weak reference to it. Whoever takes the buffer out gives its bytes
/// back (or keeps them, when its stream takes it back to replay). Nothing
/// else is locked while one is held.
type LingerSlot = Arc<Mutex<Option<Lingered>>>;
type WeakSlot = Weak<Mutex<Option<Lingered>>>;

/// The bytes every replay buffer of one proxy may hold together, and the
/// buffers of finished streams that linger.
///
/// A stream's last answer handed to its consumer may still be lost: the
/// client's connection can drop before it read what the socket took. So a
/// finished stream's buffer is not released at once but lingers for
/// `--replay-linger`, and a client that comes back with `Last-Event-ID`
/// in that time gets the answer itself, not an error for it. Lingering
/// buffers are the first to go when a live stream needs room in the
/// budget, oldest first, and [`ReplayBudget::expire`] releases those past
/// their time.
#[derive(Debug)]
pub struct ReplayBudget {
    limit: usize,
    used: AtomicUsize,
    linger: Duration,
    /// Lingering buffers, oldest first, with when they began to linger.
    lingering: Mutex<VecDeque<(Instant, WeakSlot)>>,
}

impl ReplayBudget {
    /// A budget of `limit` bytes, whose finished streams' buffers linger
    /// for `linger` (zero: released at once).
    pub fn new(limit: usize, linger: Duration) -> Arc<ReplayBudget> {
        Arc::new(ReplayBudget {
            limit,
            used: AtomicUsize::new(0),
            linger,
            lingering: Mutex::new(VecDeque::new()),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u + bytes <= self.limit).then_some(u + bytes)
            })
            .is_ok()
    }

    /// Takes `bytes`, releasing lingering buffers, oldest first, while
    /// they do not fit.
    fn take_or_make_room(&self, bytes: usize) -> bool {
        if bytes > self.limit {
            // No room made could fit it: nothing lingering is released for it.
            return false;
        }
        loop {
            if self.take(bytes) {
                return true;
            }
            let Some((_, oldest)) = crate::lock(&self.lingering).pop_front() else {
                return false;
            };
            if let Some(slot) = oldest.upgrade() {
                let freed = self.free(&slot);
                if freed > 0 {
                    debug!(
                        bytes = freed,
                        "a finished stream's lingering replay buffer released early: --replay-total-bytes is needed by a live stream"
                    );
                }
            }
        }
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Lets a finished stream's buffer linger from now on (the caller
    /// checked that buffers linger, [`ReplayBudget::lingers`]).
    fn hold(&self, lingered: Lingered) -> LingerSlot {
        let slot = Arc::new(Mutex::new(Some(lingered)));
        let early = {
            let mut list = crate::lock(&self.lingering);
            list.push_back((Instant::now(), Arc::downgrade(&slot)));
            (list.len() > MAX_LINGERING)
                .then(|| list.pop_front())
                .flatten()
        };
        if let Some(slot) = early.and_then(|(_, weak)| weak.upgrade()) {
            let freed = self.free(&slot);
            if freed > 0 {
                debug!(
                    bytes = freed,
                    lingering = MAX_LINGERING,
                    "a finished stream's lingering replay buffer released early: too many linger at once (--replay-linger)"
                );
            }
        }
        slot
    }

    /// Empties a lingering slot and gives its bytes back; how many.
    fn free(&self, slot: &Mutex<Option<Lingered>>) -> usize {
        let bytes = crate::lock(slot).take().map_or(0, |l| l.bytes);
        self.give(bytes);
        bytes
    }

    /// Whether finished streams' buffers linger.
    fn lingers(&self) -> bool {
        !self.linger.is_zero()
    }

    /// Releases the buffers that have lingered `--replay-linger` by `now`.
    pub fn expire(&self, now: Instant) {
        loop {
            let next = {
                let mut list = crate::lock(&self.lingering);
                match list.front() {
                    Some((since, _)) if now.saturating_duration_since(*since) >= self.linger => {
                        list.pop_front()
                    }
                    _ => None,
                }
            };
            let Some((_, weak)) = next else {
                return;
            };
            if let Some(slot) = weak.upgrade() {
                self.free(&slot);
            }
        }
    }
}

/// Bytes waiting for the live consumer: in its queue, held behind an
/// event going on in pieces, and the pieces not yet taken of every such
/// event but the latest. The latest is the one answer that always fits,
/// however large: a client reading a long answer slowly is not too slow
/// for what arrives meanwhile unless that piles up too.
fn backlog(inner: &OutletInner) -> usize {
    let earlier = inner.unread.split_last().map_or(&[][..], |(_, e)| e);
    earlier
        .iter()
        .fold(inner.queued.load(Ordering::Relaxed), |n, e| {
            n.saturating_add(e.load(Ordering::Relaxed))
        })
        .saturating_add(inner.held_bytes)
}

impl OutletInner {
    /// Counts one more notification dropped; whether to say so (the 1st,
    /// 2nd, 4th, 8th …, so that a flood of drops is a few lines).
    fn count_dropped(&mut self) -> bool {
        self.dropped += 1;
        self.dropped.is_power_of_two()
    }

    /// The live consumer taking a long answer in pieces is let go of
    /// while the stream goes on, to be resumed: it gives nothing in the
    /// answer's place if its response has not begun (see
    /// [`LiveRx::hold_first`]), as the consumer that resumes gets the
    /// answer, or its error, whole and under its event id. Sending an
    /// error without an id there would answer the request twice.
    fn hand_over_open(&mut self) {
        if let Some(open) = self.open.as_mut()
            && open.generation == self.generation
            && let Some(tx) = open.tail.take()
        {
            tx.fail_elsewhere(crate::tail::TailError::Cut);
        }
    }

    fn set_live(&mut self, live: Option<mpsc::Sender<Item>>) {
        // What the last consumer had not taken is no longer waiting for
        // the next one.
        self.unread.clear();
        self.live = live;
        self.generation += 1;
    }
}

/// A response event going on in pieces (see [`Outlet::open_response`]).
struct OpenEvent {
    seq: u64,
    /// The id of the request it answers, and the code of the error it
    /// gets if this breaks off.
    client_id: Box<[u8]>,
    code: i64,
    /// Every piece so far, encoded: the whole event if the response that
    /// got its start is gone, and for the replay buffer.
    pieces: Vec<Bytes>,
    bytes: usize,
    /// The live response that got its start, while it takes the rest.
    tail: Option<TailSender>,
    /// The bytes sent to that response's tail and not yet taken.
    unread: Arc<AtomicUsize>,
    generation: u64,
}

/// An event in a replay buffer.
struct Kept {
    seq: u64,
    ev: Bytes,
    /// It carries a response (which a request's stream must not lose).
    response: bool,
}

/// What a finished stream leaves when its session lets go of it (see
/// `crate::session`): the ids of the answers it carried, where its events
/// ended, and its buffer while that lingers, so that a client coming back
/// for it gets its answers, or an error for each it may have missed
/// ([`Outlet::revive`]), never an empty stream. A few words and the ids;
/// the lingering buffer stays in the replay budget, and goes as it would
/// have gone with the stream.
pub struct Tombstone {
    stream_id: u64,
    next_seq: u64,
    answers: VecDeque<(u64, Box<[u8]>)>,
    lingering: Option<LingerSlot>,
    budget: Option<Arc<ReplayBudget>>,
}

impl Drop for Tombstone {
    fn drop(&mut self) {
        if let (Some(b), Some(slot)) = (&self.budget, self.lingering.take()) {
            b.free(&slot);
        }
    }
}

impl Tombstone {
    /// The stream it was.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Bytes it holds, about.
    pub fn bytes(&self) -> usize {
        self.answers
            .iter()
            .fold(48, |n, (_, id)| n.saturating_add(24 + id.len()))
    }
}

/// The sending side of one SSE stream, with its replay buffer.
pub struct Outlet {
    /// Unique within the session; first half of every event id.
    stream_id: u64,
    /// Legacy (2024-11-05) and stateless streams carry no ids.
    with_ids: bool,
    /// Capacity of a live response's queue.
    max_queue: usize,
    /// Bytes of notifications a live response's queue may hold.
    max_queue_bytes: usize,
    /// Events kept for replay (0: none).
    replay: usize,
    /// Bytes kept for replay, all events together.
    replay_bytes: usize,
    /// The proxy-wide cap on replay memory, if any.
    budget: Option<Arc<ReplayBudget>>,
    /// Counts the consumers this outlet cuts off as too slow.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Cancelled when a stream without ids ends because its consumer was
    /// too slow: the legacy session it belongs to ends with it.
    cut_notice: Option<CancellationToken>,
    /// A stream without ids whose notifications are the point (a
    /// 2026-07-28 `subscriptions/listen`): cut off when too slow, never
    /// thinned (see the queue policy above).
    cut_when_slow: bool,
    /// Answers whose request ids it remembers: [`ANSWERS_KEPT`], or the
    /// responses it owes if more.
    answers_kept: usize,
    inner: Mutex<OutletInner>,
}

struct OutletInner {
    /// The attached HTTP response, if any.
    live: Option<mpsc::Sender<Item>>,
    /// Bumped whenever `live` is replaced or let go: an open event goes
    /// on in pieces only to the response that got its start.
    generation: u64,
    /// The response event going on in pieces, if any.
    open: Option<OpenEvent>,
    /// Messages sent while an event is open (only the proxy's own can
    /// come then: errors for other requests, its requests of a multi
    /// round-trip call, cancellations of the child's requests): they
    /// follow it. Bounded as [`Outlet::hold`] says.
    held: Vec<(Bytes, bool)>,
    /// Their size.
    held_bytes: usize,
    /// How many of them are notifications, and their size.
    held_notes: (usize, usize),
    /// The pieces not yet taken of each event going on in pieces that the
    /// live consumer still holds (or is reading), oldest first; see
    /// [`backlog`].
    unread: Vec<Arc<AtomicUsize>>,
    /// Bytes in the live response's queue (shared with its [`LiveRx`]).
    queued: Arc<AtomicUsize>,
    /// The last `replay` events, by sequence number (on a stream that owes
    /// responses, its responses before its notifications: see
    /// [`Outlet::keep`]).
    buffer: VecDeque<Kept>,
    /// Their total size.
    buffered_bytes: usize,
    next_seq: u64,
    /// Responses still owed on this stream; at zero the stream finishes.
    /// `None` for streams that live as long as their session.
    owed: Option<usize>,
    finished: bool,
    /// It finished because its consumer was too slow.
    was_cut: bool,
    /// Notifications dropped for a slow consumer of a stream without ids.
    dropped: u64,
    /// The event that carried each response of a stream with ids, and the
    /// id of the request it answered (as the client wrote it), oldest
    /// first, at most [`ANSWERS_KEPT`]: a client resuming from before an
    /// answer that is no longer kept gets an error for that request (see
    /// [`Outlet::resume`]).
    answers: VecDeque<(u64, Box<[u8]>)>,
    /// The buffer of a finished stream whose answers went out, while it
    /// lingers (see [`ReplayBudget`]); `buffer` is empty meanwhile.
    lingering: Option<LingerSlot>,
    /// When its last answer went to no consumer (until a resumption
    /// takes it).
    untaken: Option<Instant>,
}

impl Outlet {
    /// A new stream and the receiver for its first live response. `owed`
    /// responses end it; `None` keeps it open until [`Outlet::finish`].
    pub fn new(
        stream_id: u64,
        with_ids: bool,
        owed: Option<usize>,
        max_queue: usize,
        replay: usize,
    ) -> (Outlet, LiveRx) {
        let (tx, rx) = mpsc::channel(queue_capacity(max_queue, owed));
        let rx = LiveRx::new(rx);
        let outlet = Outlet {
            stream_id,
            with_ids,
            max_queue,
            max_queue_bytes: usize::MAX,
            replay,
            replay_bytes: usize::MAX,
            budget: None,
            metrics: None,
            cut_notice: None,
            cut_when_slow: false,
            answers_kept: owed.map_or(ANSWERS_KEPT, |n| n.max(ANSWERS_KEPT)),
            inner: Mutex::new(OutletInner {
                live: Some(tx),
                generation: 0,
                open: None,
                held: Vec::new(),
                held_bytes: 0,
                held_notes: (0, 0),
                unread: Vec::new(),
                queued: rx.queued.clone(),
                buffer: VecDeque::new(),
                buffered_bytes: 0,
                next_seq: 0,
                owed,
                finished: false,
                was_cut: false,
                dropped: 0,
                answers: VecDeque::new(),
                lingering: None,
                untaken: None,
            }),
        };
        (outlet, rx)
    }

    /// Caps the replay buffer at `bytes` in all. An event larger than that
    /// is not kept, and neither is anything before it: a resumption from
    /// before it then fails as if the buffer had overflowed, rather than
    /// skipping the event silently.
    pub fn with_replay_bytes(mut self, bytes: usize) -> Outlet {
        self.replay_bytes = bytes;
        self
    }

    /// Caps the notifications queued for the live response at `bytes`
    /// (`--max-queue-bytes`); past it the queue policy of this module applies.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Outlet {
        self.max_queue_bytes = bytes;
        self
    }

    /// Counts the consumers this outlet cuts off as too slow in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Outlet {
        self.metrics = Some(metrics);
        self
    }

    /// Cancels `notice` when this stream, having no ids, ends because its
    /// consumer was too slow (see the queue policy above).
    pub fn with_cut_notice(mut self, notice: CancellationToken) -> Outlet {
        self.cut_notice = Some(notice);
        self
    }

    /// Cuts off a consumer too slow for its notifications rather than drop
    /// any (a stream without ids whose notifications are its purpose).
    pub fn cut_when_slow(mut self) -> Outlet {
        self.cut_when_slow = true;
        self
    }

    /// Charges the replay buffer to the proxy-wide `budget` (see above).
    pub fn with_budget(mut self, budget: Arc<ReplayBudget>) -> Outlet {
        self.budget = Some(budget);
        self
    }

    /// Room kept in the live queue for responses: every one still owed, or
    /// for streams that count none (GET, legacy) as much again as
    /// `--max-queue`.
    fn reserve(&self, inner: &OutletInner) -> usize {
        inner.owed.unwrap_or(self.max_queue)
    }

    /// Whether this stream's buffer lingers once its answers went out.
    fn lingers(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.lingers())
    }

    /// The stream's last answer went to a consumer: its buffer lingers,
    /// or, where buffers do not, is released.
    fn settle(&self, inner: &mut OutletInner) {
        match &self.budget {
            Some(b) if b.lingers() && !inner.buffer.is_empty() => {
                if let Some(old) = inner.lingering.take() {
                    b.free(&old);
                }
                let lingered = Lingered {
                    buffer: std::mem::take(&mut inner.buffer),
                    bytes: std::mem::take(&mut inner.buffered_bytes),
                };
                inner.lingering = Some(b.hold(lingered));
            }
            _ => self.release(inner),
        }
    }

    /// Takes a lingering buffer back to replay from it.
    fn unlinger(&self, inner: &mut OutletInner) {
        let Some(slot) = inner.lingering.take() else {
            return;
        };
        if let Some(l) = crate::lock(&slot).take() {
            // Empty while it lingered; its bytes are still counted.
            inner.buffer = l.buffer;
            inner.buffered_bytes = l.bytes;
        }
    }

    /// Empties the replay buffer and gives its bytes back.
    fn release(&self, inner: &mut OutletInner) {
        inner.buffer.clear();
        if let Some(b) = &self.budget {
            b.give(inner.buffered_bytes);
        }
        inner.buffered_bytes = 0;
    }

    /// The tombstone of a finished stream that carried answers, its
    /// buffer released; `None` for any other.
    pub fn tombstone(&self) -> Option<Tombstone> {
        let mut inner = self.lock();
        if !inner.finished || inner.answers.is_empty() {
            return None;
        }
        // Kept events (answers no consumer took) linger from now on, or go.
        if !inner.buffer.is_empty() {
            self.settle(&mut inner);
        }
        Some(Tombstone {
            stream_id: self.stream_id,
            next_seq: inner.next_seq,
            answers: std::mem::take(&mut inner.answers),
            lingering: inner.lingering.take(),
            budget: self.budget.clone(),
        })
    }

    /// A finished stream again from its tombstone, with its lingering
    /// buffer if it still has one: a resumption from it gets what that
    /// holds and an error for each other answer after its point
    /// ([`Outlet::resume`]). Built with [`Outlet::new`]'s bounds, then
    /// the same `with_*` as the stream it was (the budget among them).
    pub fn revive(mut t: Tombstone, max_queue: usize, replay: usize) -> Outlet {
        let (mut outlet, _) = Outlet::new(t.stream_id, true, Some(0), max_queue, replay);
        // Its lingering bytes are this budget's, whatever else is set.
        outlet.budget = t.budget.take();
        {
            let mut inner = outlet.lock();
            inner.finished = true;
            inner.set_live(None);
            inner.next_seq = t.next_seq;
            inner.answers = std::mem::take(&mut t.answers);
            inner.lingering = t.lingering.take();
        }
        outlet
    }

    /// Whether it finished, within `recent`, with an answer no consumer
    /// took: the client that went away may come back for it.
    pub fn answer_untaken(&self, recent: Duration) -> bool {
        let inner = self.lock();
        inner.finished
            && !inner.buffer.is_empty()
            && inner.untaken.is_some_and(|at| at.elapsed() < recent)
    }

    /// This stream's id within its session.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Sends one JSON-RPC message as a `message` event (named only on
    /// legacy streams, where the 2024-11-05 spec names it).
    pub fn send(&self, json: &[u8]) {
        self.push(Text::Flat(json), Sent::Other);
    }

    /// Sends a response; the stream finishes when no more are owed.
    pub fn send_response(&self, json: &[u8]) {
        self.push(Text::Flat(json), Sent::Answer(None));
    }

    /// [`Outlet::send_response`] of the answer to request `client_id` (as
    /// the client wrote it: the answer's id), in its pieces.
    pub fn send_answer(&self, answer: &Message, client_id: &[u8]) {
        self.push(Text::Parts(answer.parts()), Sent::Answer(Some(client_id)));
    }

    /// Sends a pre-encoded event (the legacy `endpoint` event) without an id.
    pub fn send_raw(&self, event: Bytes) {
        let mut inner = self.lock();
        self.deliver(&mut inner, Item::Event(event), true);
    }

    fn push(&self, json: Text<'_>, sent: Sent<'_>) {
        let mut inner = self.lock();
        self.push_locked(&mut inner, json, sent);
    }

    /// Sends a message: the event made of it (`None`: dropped, or held
    /// behind an event going on in pieces).
    fn push_locked(
        &self,
        inner: &mut OutletInner,
        json: Text<'_>,
        sent: Sent<'_>,
    ) -> Option<Bytes> {
        let is_response = matches!(sent, Sent::Answer(_));
        if inner.finished {
            debug!(
                stream = self.stream_id,
                "message for a finished stream dropped"
            );
            return None;
        }
        if is_response && self.cut_if_answers_overflow(inner, json.len()) {
            return None;
        }
        if inner.open.is_some() {
            self.hold(inner, json, is_response);
            return None;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let ev = event_of(self.event_id(seq).as_deref(), self.event_name(), json);
        if self.with_ids && self.replay > 0 {
            match (sent, json) {
                (Sent::Answer(Some(id)), _) => self.record_answer(inner, seq, id),
                (Sent::Answer(None), Text::Flat(json)) => {
                    if let Some(id) = crate::jsonrpc::locate(json, &["id"]) {
                        self.record_answer(inner, seq, &json[id]);
                    }
                }
                // Pieces come with their id (`send_answer`).
                (Sent::Answer(None), Text::Parts(_)) | (Sent::Other, _) => {}
            }
            self.keep(inner, seq, ev.clone(), is_response);
        }
        let delivered = self.deliver(inner, Item::Event(ev.clone()), is_response);
        if is_response {
            self.answered(inner, delivered);
        }
        Some(ev)
    }

    /// Holds a message sent while an event goes on in pieces: it follows
    /// that event. Responses always wait (what the stream owes bounds
    /// them, or `--max-queue-bytes` on a stream that owes no count, see
    /// [`Outlet::answers_overflow`]), and so do requests (the protocol
    /// cannot do without them; the bounds on requests waiting for a client
    /// bound them). Notifications wait up to `--max-queue` of them and
    /// `--max-queue-bytes` (one always), as in the live queue; past that,
    /// a stream that cannot resume and counts no responses (legacy) is cut
    /// off, as there, and any other drops the notification, logged and
    /// counted: its client is not too slow (nothing goes out until the
    /// long answer ends, however fast it reads), so cutting it off would
    /// not bring the notification sooner, and with no event id yet a
    /// resumption could not bring it at all.
    fn hold(&self, inner: &mut OutletInner, json: Text<'_>, is_response: bool) {
        let len = json.len();
        let needed = is_response || json.is_request();
        let (notes, note_bytes) = inner.held_notes;
        let full = notes >= self.max_queue
            || (notes > 0 && note_bytes.saturating_add(len) > self.max_queue_bytes);
        if needed || !full {
            inner.held_bytes += len;
            if !needed {
                inner.held_notes = (notes + 1, note_bytes + len);
            }
            inner.held.push((json.to_bytes(), is_response));
            return;
        }
        let cap = if notes >= self.max_queue {
            "--max-queue"
        } else {
            "--max-queue-bytes"
        };
        if !self.with_ids && (inner.owed.is_none() || self.cut_when_slow) {
            warn!(
                stream = self.stream_id,
                held_bytes = note_bytes,
                "cut off an sse stream that cannot resume: notifications at {cap} wait behind a long answer, and none is dropped silently"
            );
            self.cut(inner);
            return;
        }
        if inner.count_dropped() {
            warn!(
                stream = self.stream_id,
                dropped = inner.dropped,
                held_bytes = note_bytes,
                "drop a notification: notifications at {cap} wait behind a long answer; responses and requests kept"
            );
        }
    }

    fn event_id(&self, seq: u64) -> Option<String> {
        self.with_ids.then(|| {
            let mut id = String::with_capacity(41);
            push_decimal(&mut id, self.stream_id);
            id.push('-');
            push_decimal(&mut id, seq);
            id
        })
    }

    /// Legacy streams name their events, as the 2024-11-05 spec does.
    fn event_name(&self) -> Option<&'static str> {
        (!self.with_ids).then_some("message")
    }

    /// A response went out (`delivered`: to a live consumer): the stream
    /// finishes when it owes no more.
    fn answered(&self, inner: &mut OutletInner, delivered: bool) {
        let release = answer_releases(inner, delivered);
        if let Some(owed) = inner.owed.as_mut() {
            *owed = owed.saturating_sub(1);
            if *owed == 0 {
                inner.finished = true;
                inner.untaken = (!delivered).then(Instant::now);
                inner.set_live(None);
            }
        }
        if release {
            self.settle(inner);
        }
    }

    /// Whether a long response may go on in pieces now: the stream is
    /// open, has a live consumer and no event going on in pieces already.
    pub fn takes_pieces(&self) -> bool {
        let inner = self.lock();
        !inner.finished && inner.open.is_none() && inner.live.is_some()
    }

    /// Opens the event of a long response (to request `client_id`; if it
    /// breaks off, the request's error has `code`): its
    /// first bytes go to the live consumer now, the rest as
    /// [`Outlet::response_piece`]s, and [`Outlet::close_response`] ends it.
    /// Until then anything else sent here waits. If the consumer that got
    /// its start goes away, the event is completed all the same, and kept
    /// for replay or delivered whole to the next consumer like any event.
    /// `false` (nothing opened) when the stream finished or has an open
    /// response already.
    pub fn open_response(&self, head: &[Bytes], client_id: &[u8], code: i64) -> bool {
        let mut inner = self.lock();
        if inner.finished || inner.open.is_some() {
            debug!(
                stream = self.stream_id,
                "long answer for a finished or busy stream not opened"
            );
            return false;
        }
        let head_bytes = head.iter().map(Bytes::len).sum();
        if self.cut_if_answers_overflow(&mut inner, head_bytes) {
            return false;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        // The event's fields, then the head as it was read: its pieces
        // (up to a pipe's worth) go on as they are, not copied behind the
        // fields.
        let first = event_start(self.event_id(seq).as_deref(), self.event_name(), 0).freeze();
        let mut pieces = Vec::with_capacity(head.len() + 1);
        pieces.push(first.clone());
        let (tx, tail) = crate::tail::channel(client_id, code);
        for part in head {
            let piece = data_line(part.clone());
            tx.send(piece.clone());
            pieces.push(piece);
        }
        // Counted before the consumer can see them (it takes them only
        // once the item is queued), so that its count never goes below zero.
        let unread = Arc::new(AtomicUsize::new(pieces[1..].iter().map(Bytes::len).sum()));
        let delivered = self.deliver(
            &mut inner,
            Item::Open(first, Box::new(tail), unread.clone()),
            true,
        );
        if delivered {
            // Events the consumer is done with (it dropped them) go.
            inner.unread.retain(|e| Arc::strong_count(e) > 1);
            inner.unread.push(unread.clone());
        }
        inner.open = Some(OpenEvent {
            seq,
            client_id: client_id.into(),
            code,
            bytes: pieces.iter().map(Bytes::len).sum(),
            pieces,
            tail: delivered.then_some(tx),
            unread,
            generation: inner.generation,
        });
        true
    }

    /// The next piece of the open response; `false` once no event is open
    /// (the stream finished).
    pub fn response_piece(&self, piece: Bytes) -> bool {
        let mut inner = self.lock();
        if inner.finished {
            // Its session ended: the rest of the line need not come here.
            inner.open = None;
            return false;
        }
        let generation = inner.generation;
        let Some(open) = inner.open.as_mut() else {
            return false;
        };
        let piece = data_line(piece);
        open.bytes += piece.len();
        open.pieces.push(piece.clone());
        if let Some(tx) = &open.tail {
            // Counted before the consumer can take it (see `open_response`).
            let len = piece.len();
            open.unread.fetch_add(len, Ordering::Relaxed);
            if open.generation != generation || !tx.send(piece) {
                open.unread.fetch_sub(len, Ordering::Relaxed);
                open.tail = None;
            }
        }
        true
    }

    /// Ends the open response: with `last`, the event is complete; with an
    /// error, its consumer's stream fails and the request gets an error
    /// response instead (kept for replay like any), which that consumer
    /// sends in the answer's place, under the same id, if it has not
    /// begun to send the answer ([`LiveRx::hold_first`]).
    pub fn close_response(&self, last: Result<Bytes, crate::tail::TailError>) {
        let mut inner = self.lock();
        let Some(mut open) = inner.open.take() else {
            return;
        };
        let live_tail = open
            .tail
            .take()
            .filter(|_| open.generation == inner.generation);
        match last {
            Ok(last) => {
                let mut end = BytesMut::from(&data_line(last)[..]);
                end.put_slice(b"\n\n");
                let end = end.freeze();
                open.bytes += end.len();
                open.pieces.push(end.clone());
                let whole = || {
                    let mut whole = BytesMut::with_capacity(open.bytes);
                    for p in &open.pieces {
                        whole.put_slice(p);
                    }
                    whole.freeze()
                };
                let live = live_tail.map(|tx| {
                    open.unread.fetch_add(end.len(), Ordering::Relaxed);
                    let taken = tx.finish(end.clone());
                    if !taken {
                        open.unread.fetch_sub(end.len(), Ordering::Relaxed);
                    }
                    taken
                });
                // Joined for the replay buffer only if `answered` will not
                // release that buffer at once: else the join would copy
                // the whole answer only to drop it.
                let released_anyway =
                    answer_releases(&inner, live == Some(true)) && !self.lingers();
                if self.with_ids && self.replay > 0 {
                    self.record_answer(&mut inner, open.seq, &open.client_id);
                }
                if self.with_ids && self.replay > 0 && !released_anyway {
                    if open.bytes > self.replay_bytes {
                        debug!(
                            stream = self.stream_id,
                            bytes = open.bytes,
                            "event larger than --replay-bytes is not kept for resumption"
                        );
                        self.release(&mut inner);
                    } else {
                        self.keep(&mut inner, open.seq, whole(), true);
                    }
                }
                let delivered = match live {
                    Some(delivered) => delivered,
                    None => self.deliver(&mut inner, Item::Event(whole()), true),
                };
                self.answered(&mut inner, delivered);
            }
            Err(why) => {
                if live_tail.is_some() {
                    // Its stream is broken now; the error goes to the next.
                    inner.set_live(None);
                }
                let error = crate::tail::error(&open.client_id, open.code, why);
                let ev = self.push_locked(&mut inner, Text::Flat(&error), Sent::Answer(None));
                if let Some(tx) = live_tail {
                    match ev {
                        Some(ev) => tx.fail_instead(why, ev),
                        None => tx.fail(why),
                    }
                }
            }
        }
        inner.held_bytes = 0;
        inner.held_notes = (0, 0);
        for (json, is_response) in std::mem::take(&mut inner.held) {
            let sent = if is_response {
                Sent::Answer(None)
            } else {
                Sent::Other
            };
            self.push_locked(&mut inner, Text::Flat(&json), sent);
        }
    }

    /// Sends the SEP-1699 priming event (an id and empty data) that lets a
    /// client resume a stream that drops before its first message.
    pub fn prime(&self) {
        if !self.with_ids {
            return;
        }
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let ev = Bytes::from(format!("id: {}-{}\ndata: \n\n", self.stream_id, seq));
        if self.replay > 0 {
            self.keep(&mut inner, seq, ev.clone(), false);
        }
        self.deliver(&mut inner, Item::Prime(ev), true);
    }

    /// A response this stream owed will not come (its request was
    /// cancelled): a stream that owed only that closes; one that owes more,
    /// or counts nothing (GET, legacy), stays open.
    pub fn forgo(&self) {
        let mut inner = self.lock();
        if let Some(owed) = inner.owed.as_mut() {
            *owed = owed.saturating_sub(1);
            if *owed == 0 {
                inner.finished = true;
                inner.set_live(None);
            }
        }
    }

    /// Adds an event to the replay buffer within both of its caps. On a
    /// stream that owes responses (a request's own), the oldest
    /// notification goes first when the buffer is full, and a response
    /// only when nothing else is left: what a client that comes back
    /// after more than `--replay-events` must get is its answer (see
    /// [`Outlet::resume`]).
    fn keep(&self, inner: &mut OutletInner, seq: u64, ev: Bytes, response: bool) {
        if ev.len() > self.replay_bytes {
            debug!(
                stream = self.stream_id,
                bytes = ev.len(),
                limit = self.replay_bytes,
                "event larger than --replay-bytes is not kept for resumption"
            );
            // The gap must show: with the buffer starting after it,
            // resumptions from before it fail.
            self.release(inner);
            return;
        }
        if let Some(b) = &self.budget
            && !b.take_or_make_room(ev.len())
        {
            warn!(
                stream = self.stream_id,
                bytes = ev.len(),
                "replay memory of all streams is at --replay-total-bytes; an event is not kept for resumption"
            );
            self.release(inner);
            return;
        }
        inner.buffered_bytes += ev.len();
        inner.buffer.push_back(Kept { seq, ev, response });
        while inner.buffer.len() > self.replay || inner.buffered_bytes > self.replay_bytes {
            let oldest_notification = inner
                .owed
                .and_then(|_| inner.buffer.iter().position(|k| !k.response))
                .unwrap_or(0);
            match inner.buffer.remove(oldest_notification) {
                Some(old) => {
                    inner.buffered_bytes -= old.ev.len();
                    if let Some(b) = &self.budget {
                        b.give(old.ev.len());
                    }
                }
                None => break,
            }
        }
    }

    fn count_cut(&self) {
        if let Some(m) = &self.metrics {
            m.slow_consumer_cut();
        }
    }

    /// Whether a response of `len` more bytes would take what waits for
    /// the consumer past `--max-queue-bytes`, on a stream that counts no
    /// responses (legacy, GET): on the others, the responses a stream owes
    /// bound what it holds, but here a client that does not read would make
    /// the proxy keep every answer it asks for. One response is always
    /// taken, however large, when nothing else waits.
    fn answers_overflow(&self, inner: &OutletInner, len: usize) -> bool {
        let waiting = backlog(inner);
        inner.owed.is_none()
            && inner.live.is_some()
            && waiting > 0
            && waiting.saturating_add(len) > self.max_queue_bytes
    }

    /// Cuts the consumer off when a response of `len` more bytes would
    /// take what waits for it past `--max-queue-bytes` (see
    /// [`Outlet::answers_overflow`]); `true` when the stream has ended
    /// with it (one without ids: the response has nowhere to go).
    fn cut_if_answers_overflow(&self, inner: &mut OutletInner, len: usize) -> bool {
        if !self.answers_overflow(inner, len) {
            return false;
        }
        warn!(
            stream = self.stream_id,
            queued_bytes = backlog(inner),
            "sse client too slow: answers waiting for it passed --max-queue-bytes, cutting it off"
        );
        self.cut(inner);
        inner.finished
    }

    /// Lets go of a consumer too slow to keep up (the caller logs why). A
    /// stream with ids keeps its events, and the consumer resumes; one
    /// without cannot deliver anything it did not queue, so it ends there
    /// (an event going on in pieces breaks off, so the client sees a broken
    /// stream, never a shorter one), and its cut notice tells its session.
    fn cut(&self, inner: &mut OutletInner) {
        self.count_cut();
        if self.with_ids {
            // Its client resumes, and gets the answer there.
            inner.hand_over_open();
            inner.set_live(None);
            return;
        }
        inner.set_live(None);
        inner.finished = true;
        inner.was_cut = true;
        if let Some(tx) = inner.open.take().and_then(|open| open.tail) {
            tx.fail(crate::tail::TailError::Cut);
        }
        inner.held.clear();
        inner.held_bytes = 0;
        inner.held_notes = (0, 0);
        if let Some(notice) = &self.cut_notice {
            notice.cancel();
        }
    }

    /// Hands an event to the live consumer, if one is attached, following
    /// the queue policy of this module; `true` when it was queued.
    fn deliver(&self, inner: &mut OutletInner, ev: Item, must_arrive: bool) -> bool {
        let reserve = self.reserve(inner);
        let Some(tx) = &inner.live else {
            return false;
        };
        let queued = backlog(inner);
        let over_bytes = queued > 0 && queued.saturating_add(ev.len()) > self.max_queue_bytes;
        if !must_arrive && (tx.capacity() <= reserve || over_bytes) {
            let cap = if over_bytes {
                "--max-queue-bytes"
            } else {
                "--max-queue"
            };
            if self.with_ids {
                warn!(
                    stream = self.stream_id,
                    queued_bytes = queued,
                    "sse client too slow: queue at {cap}, disconnecting it (it may resume with Last-Event-ID)"
                );
                self.cut(inner);
            } else if inner.owed.is_none() || self.cut_when_slow {
                warn!(
                    stream = self.stream_id,
                    queued_bytes = queued,
                    "sse client too slow on a stream that cannot resume: queue at {cap}, cutting it off rather than dropping what it was sent"
                );
                self.cut(inner);
            } else {
                if inner.count_dropped() {
                    warn!(
                        stream = self.stream_id,
                        dropped = inner.dropped,
                        queued_bytes = queued,
                        "sse client too slow on a stream that cannot resume: queue at {cap}, notifications dropped, responses kept"
                    );
                }
            }
            return false;
        }
        let len = ev.len();
        match tx.try_send(ev) {
            Ok(()) => {
                inner.queued.fetch_add(len, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    stream = self.stream_id,
                    "sse client too slow: queue full, disconnecting it"
                );
                self.cut(inner);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                inner.set_live(None);
                false
            }
        }
    }

    /// Ends the stream: the live response closes after what it has queued.
    pub fn finish(&self) {
        let mut inner = self.lock();
        inner.finished = true;
        inner.set_live(None);
    }

    /// Whether the stream has ended.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Whether the stream ended because its consumer was too slow (not
    /// because what it owed was sent).
    pub fn was_cut(&self) -> bool {
        self.lock().was_cut
    }

    /// Whether an HTTP response is currently attached.
    pub fn is_live(&self) -> bool {
        self.lock().live.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Attaches a new response that first replays the events after `after`
    /// (a sequence number of this stream), then continues live. Replaces any
    /// previous response. Returns `None` if `after` names an event this
    /// stream has not sent (a forged id).
    ///
    /// Events after `after` that are no longer kept (evicted by the
    /// buffer's caps, or released when the stream's buffer stopped
    /// lingering after its last answer went out) cannot be replayed: the client
    /// gets what is kept, and for each answer among the lost events an
    /// error response to its request, so it never waits for an answer
    /// that cannot come (the request may have been carried out). A
    /// request's stream keeps its responses before its notifications (see
    /// [`Outlet::keep`]), so what is lost is mostly notifications; they
    /// are gone, and the gap shows in the event ids. The resumption is
    /// logged and counted. Refusing instead would leave the client a fresh
    /// GET stream, which never carries the answer it waits for: after a
    /// cut in a burst of notifications longer than `--replay-events` (256
    /// by default, where the queue that overflows holds 1,024), it would
    /// wait forever.
    pub fn resume(&self, after: u64) -> Option<LiveRx> {
        let mut inner = self.lock();
        if after >= inner.next_seq {
            return None;
        }
        self.unlinger(&mut inner);
        inner.hand_over_open();
        let kept_after = inner.buffer.iter().filter(|k| k.seq > after).count() as u64;
        let lost = inner.next_seq - after - 1 - kept_after;
        let mut missed: Vec<Bytes> = inner
            .buffer
            .iter()
            .filter(|k| k.seq > after)
            .map(|k| k.ev.clone())
            .collect();
        if lost > 0 {
            missed.extend(self.answer_lost(&mut inner, after, lost));
        }
        let capacity = queue_capacity(self.max_queue, inner.owed).max(missed.len());
        let (tx, rx) = mpsc::channel(capacity);
        let rx = LiveRx::new(rx);
        for ev in missed {
            let len = ev.len();
            // Invariant: capacity covers every missed event.
            if tx.try_send(Item::Event(ev)).is_ok() {
                rx.queued.fetch_add(len, Ordering::Relaxed);
            }
        }
        let live = (!inner.finished).then_some(tx);
        inner.set_live(live);
        inner.queued = rx.queued.clone();
        inner.untaken = None;
        if inner.finished && self.lingers() {
            // Handed to this consumer, which may lose it as the last did.
            self.settle(&mut inner);
        }
        Some(rx)
    }

    /// Records that event `seq` answered the request `client_id`.
    fn record_answer(&self, inner: &mut OutletInner, seq: u64, client_id: &[u8]) {
        if inner.answers.len() >= self.answers_kept
            && let Some((lost, _)) = inner.answers.pop_front()
        {
            debug!(
                stream = self.stream_id,
                event = lost,
                kept = self.answers_kept,
                "forgot the request id of an old answer on a stream: a resumption from before it gets no error for it"
            );
        }
        inner.answers.push_back((seq, client_id.into()));
    }

    /// `events` of the events after `after` are no longer kept: each
    /// answer among them becomes an error response to its request, a new
    /// event (kept for replay like any, so a second resumption from the
    /// same point gets it again, once). Returns those events.
    fn answer_lost(&self, inner: &mut OutletInner, after: u64, events: u64) -> Vec<Bytes> {
        // Found before any error is kept: keeping one may evict an answer
        // this resumption replays.
        let lost: Vec<usize> = (0..inner.answers.len())
            .filter(|&i| {
                let seq = inner.answers[i].0;
                // The buffer is in sequence order (eviction only removes).
                seq > after && inner.buffer.binary_search_by_key(&seq, |k| k.seq).is_err()
            })
            .collect();
        let mut errors = Vec::new();
        for i in lost {
            let error = crate::jsonrpc::error_response(
                Some(&inner.answers[i].1),
                crate::jsonrpc::code::SERVER_ERROR,
                LOST_ANSWER,
                None,
            );
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let ev = event(self.event_id(seq).as_deref(), self.event_name(), &error);
            inner.answers[i].0 = seq;
            self.keep(inner, seq, ev.clone(), true);
            errors.push(ev);
        }
        if let Some(m) = &self.metrics {
            m.resumed_past_replay();
        }
        if errors.is_empty() {
            debug!(
                stream = self.stream_id,
                lost_events = events,
                "stream resumed from before its replay buffer: notifications lost"
            );
        } else {
            warn!(
                stream = self.stream_id,
                lost_events = events,
                lost_answers = errors.len(),
                "stream resumed from before its replay buffer (--replay-events, --replay-bytes): answers lost, errors sent for them"
            );
        }
        errors
    }

    /// Replaces the live response with a fresh one (a new GET on the session).
    pub fn reattach(&self) -> LiveRx {
        let (tx, rx) = mpsc::channel(queue_capacity(self.max_queue, None));
        let rx = LiveRx::new(rx);
        let mut inner = self.lock();
        if !inner.finished {
            inner.set_live(Some(tx));
            inner.queued = rx.queued.clone();
        }
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutletInner> {
        // A panic while holding this lock leaves only plain data behind; go on.
        crate::lock(&self.inner)
    }
}

/// The multiplexer's view of a stream (see [`crate::upstream::ReplySink`]).
impl crate::upstream::ReplySink for Outlet {
    fn send(&self, message: &[u8]) {
        Outlet::send(self, message);
    }
    fn send_response(&self, message: &[u8]) {
        Outlet::send_response(self, message);
    }
    fn send_answer(&self, message: &Message, client_id: &[u8]) {
        Outlet::send_answer(self, message, client_id);
    }
    fn forgo(&self) {
        Outlet::forgo(self);
    }
    fn finish(&self) {
        Outlet::finish(self);
    }
    fn is_finished(&self) -> bool {
        Outlet::is_finished(self)
    }
    fn is_live(&self) -> bool {
        Outlet::is_live(self)
    }
    fn takes_pieces(&self) -> bool {
        Outlet::takes_pieces(self)
    }
    fn open_response(&self, head: crate::jsonrpc::Message, client_id: &[u8], code: i64) -> bool {
        Outlet::open_response(self, &head.into_parts(), client_id, code)
    }
    fn response_piece(&self, piece: Bytes) {
        Outlet::response_piece(self, piece);
    }
    fn close_response(&self, last: Result<Bytes, crate::tail::TailError>) {
        Outlet::close_response(self, last);
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            let mut inner = self.lock();
            b.give(inner.buffered_bytes);
            if let Some(slot) = inner.lingering.take() {
                b.free(&slot);
            }
        }
    }
}

/// The live queue: `--max-queue` for notifications plus the room reserved
/// for responses (see [`Outlet::reserve`]).
fn queue_capacity(max_queue: usize, owed: Option<usize>) -> usize {
    max_queue.max(1) + owed.unwrap_or(max_queue)
}

/// Appends `n` in decimal (an event id is made for every event).
fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    out.extend(
        crate::jsonrpc::decimal(n, &mut digits)
            .iter()
            .map(|&d| char::from(d)),
    );
}

/// Splits an event id made by an [`Outlet`] into (stream, sequence).
pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::code::SERVER_ERROR;

    #[test]
    fn event_ids_are_decimal_and_parse_back() {
        for (stream, seq) in [(0, 0), (1, 9), (10, 1234567890), (u64::MAX, u64::MAX)] {
            let mut id = String::new();
            push_decimal(&mut id, stream);
            id.push('-');
            push_decimal(&mut id, seq);
            assert_eq!(id, format!("{stream}-{seq}"));
            assert_eq!(parse_event_id(&id), Some((stream, seq)));
        }
    }

    #[test]
    fn event_encoding_keeps_data_on_one_line() {
        let ev = event(Some("3-0"), None, b"{\"a\":\n1}");
        assert_eq!(ev.as_ref(), b"id: 3-0\ndata: {\"a\": 1}\n\n");
        let ev = event(None, Some("endpoint"), b"/messages?sessionId=x");
        assert_eq!(
            ev.as_ref(),
            b"event: endpoint\ndata: /messages?sessionId=x\n\n"
        );
    }

    /// Polls a body once without waiting: what hyper finds ready right
    /// after it encoded the response head goes out in the same write.
    fn ready_now(body: &mut Body) -> Option<Bytes> {
        use hyper::body::Body as _;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(body).poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_held_first_message_is_ready_with_the_head_and_the_priming_event_waits_for_it() {
        let (o, mut rx) = Outlet::new(2, true, Some(1), 8, 8);
        let o = Arc::new(o);
        o.prime();
        let answer = {
            let o = o.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                o.send_response(b"{\"id\":1}");
            })
        };
        let cancel = CancellationToken::new();
        rx.hold_first(Duration::from_secs(15), &cancel).await;
        let mut body = stream_body(rx, Duration::from_secs(15), cancel, ());
        assert_eq!(
            ready_now(&mut body).as_deref(),
            Some(&b"id: 2-0\ndata: \n\n"[..])
        );
        assert_eq!(
            ready_now(&mut body).as_deref(),
            Some(&b"id: 2-1\ndata: {\"id\":1}\n\n"[..])
        );
        answer.await.unwrap();
    }

    #[tokio::test]
    async fn without_the_hold_a_body_has_nothing_ready_when_its_head_goes_out() {
        // What `hold_first` is for: hyper writes the head alone here.
        let (o, rx) = Outlet::new(3, true, Some(1), 8, 8);
        let mut body = stream_body(rx, Duration::from_secs(15), CancellationToken::new(), ());
        assert_eq!(ready_now(&mut body), None);
        o.send_response(b"{\"id\":1}");
        assert!(ready_now(&mut body).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_ends_at_its_bound_or_on_cancel_and_loses_nothing() {
        let (o, mut rx) = Outlet::new(4, true, Some(1), 8, 8);
        let start = tokio::time::Instant::now();
        rx.hold_first(Duration::from_secs(15), &CancellationToken::new())
            .await;
        assert_eq!(start.elapsed(), HEAD_HOLD);
        // A shorter keep-alive period bounds it: never silent longer.
        rx.hold_first(Duration::from_millis(100), &CancellationToken::new())
            .await;
        assert_eq!(start.elapsed(), HEAD_HOLD + Duration::from_millis(100));
        let cancel = CancellationToken::new();
        cancel.cancel();
        rx.hold_first(Duration::from_secs(15), &cancel).await;
        assert_eq!(
            start.elapsed(),
            HEAD_HOLD + Duration::from_millis(100),
            "cancelled: no wait"
        );
        // A notification counts as the first message; the response follows.
        o.send(b"{\"method\":\"p\"}");
        rx.hold_first(Duration::from_secs(15), &CancellationToken::new())
            .await;
        o.send_response(b"{\"id\":1}");
        assert!(
            rx.recv()
                .await
                .unwrap()
                .ends_with(b"{\"method\":\"p\"}\n\n")
        );
        assert!(rx.recv().await.unwrap().ends_with(b"{\"id\":1}\n\n"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_that_ends_while_held_ends_the_body_after_what_was_held() {
        let (o, mut rx) = Outlet::new(5, true, Some(1), 8, 8);
        o.send_response(b"{\"id\":1}");
        rx.hold_first(Duration::from_secs(15), &CancellationToken::new())
            .await;
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
        assert!(o.is_finished());
    }

    #[tokio::test]
    async fn stream_finishes_after_owed_responses() {
        let (o, mut rx) = Outlet::new(7, true, Some(1), 8, 8);
        o.send(b"{\"progress\":1}");
        o.send_response(b"{\"id\":1}");
        o.send(b"{\"late\":1}");
        assert_eq!(
            rx.recv().await.unwrap().as_ref(),
            b"id: 7-0\ndata: {\"progress\":1}\n\n"
        );
        assert_eq!(
            rx.recv().await.unwrap().as_ref(),
            b"id: 7-1\ndata: {\"id\":1}\n\n"
        );
        assert!(rx.recv().await.is_none());
        assert!(o.is_finished());
    }

    #[tokio::test]
    async fn an_open_response_goes_in_pieces_and_what_comes_meanwhile_follows_it() {
        let (o, mut rx) = Outlet::new(4, true, None, 8, 8);
        o.open_response(
            &[Bytes::from_static(b"{\"id\":1,\"result\":\"a\r")],
            b"1",
            SERVER_ERROR,
        );
        assert!(!o.takes_pieces(), "one open response at a time");
        assert!(!o.open_response(&[Bytes::from_static(b"{")], b"2", SERVER_ERROR));
        o.send(b"{\"method\":\"n\"}");
        assert!(o.response_piece(Bytes::from_static(b"b\nb")));
        o.close_response(Ok(Bytes::from_static(b"\"}")));
        // CR and LF inside become spaces; the notification gets the next id.
        assert_eq!(
            rx.recv().await.unwrap().as_ref(),
            b"id: 4-0\ndata: {\"id\":1,\"result\":\"a b b\"}\n\n"
        );
        assert_eq!(
            rx.recv().await.unwrap().as_ref(),
            b"id: 4-1\ndata: {\"method\":\"n\"}\n\n"
        );
        // A resumption after it gets what followed it.
        let mut replay = o.resume(0).unwrap();
        assert!(
            replay
                .recv()
                .await
                .unwrap()
                .ends_with(b"{\"method\":\"n\"}\n\n")
        );
        assert!(o.takes_pieces());
    }

    #[tokio::test]
    async fn an_open_response_whose_consumer_changes_reaches_the_next_one_whole() {
        let (o, rx) = Outlet::new(5, true, None, 8, 8);
        o.open_response(
            &[Bytes::from_static(b"{\"id\":1,\"result\":\"a")],
            b"1",
            SERVER_ERROR,
        );
        drop(rx);
        assert!(o.response_piece(Bytes::from_static(b"b")));
        let mut next = o.reattach();
        o.close_response(Ok(Bytes::from_static(b"\"}")));
        assert_eq!(
            next.recv().await.unwrap().as_ref(),
            b"id: 5-0\ndata: {\"id\":1,\"result\":\"ab\"}\n\n"
        );
    }

    #[tokio::test]
    async fn an_open_response_that_breaks_off_fails_its_stream_and_leaves_an_error() {
        let (o, mut rx) = Outlet::new(6, true, Some(1), 8, 8);
        o.open_response(
            &[Bytes::from_static(b"{\"id\":\"c\",\"result\":\"a")],
            b"\"c\"",
            SERVER_ERROR,
        );
        o.close_response(Err(crate::tail::TailError::TimedOut));
        // The consumer that got the start sees its stream fail.
        assert!(rx.recv().await.is_none());
        // A resumption gets the error response in its place.
        let mut again = o.resume(0).unwrap();
        let error = again.recv().await.unwrap();
        let error = std::str::from_utf8(&error).unwrap();
        assert!(error.starts_with("id: 6-1\ndata: {"), "{error}");
        assert!(
            error.contains("\"id\":\"c\"") && error.contains("-32000"),
            "{error}"
        );
    }

    /// Its head not gone yet (held by `hold_first`), a long answer that
    /// broke off goes as its request's error, in a stream that ends
    /// whole, rather than as a stream that fails before its head could
    /// be flushed (the client got no status at all).
    #[tokio::test]
    async fn an_open_response_broken_off_while_held_goes_as_its_error() {
        let (o, mut rx) = Outlet::new(7, true, Some(1), 8, 8);
        o.prime();
        o.open_response(
            &[Bytes::from_static(b"{\"id\":\"c\",\"result\":\"a")],
            b"\"c\"",
            SERVER_ERROR,
        );
        o.response_piece(Bytes::from_static(b"bb"));
        o.close_response(Err(crate::tail::TailError::Cut));
        rx.hold_first(Duration::from_secs(15), &CancellationToken::new())
            .await;
        let body = stream_body(rx, Duration::from_secs(15), CancellationToken::new(), ());
        let whole = body.collect().await.expect("a whole stream").to_bytes();
        let text = std::str::from_utf8(&whole).unwrap();
        let error = "{\"jsonrpc\":\"2.0\",\"id\":\"c\",\"error\":{\"code\":-32000,\"message\":\"the MCP server's answer was cut off before its end\"}}";
        // Under the id it is kept for replay under (the answer's own,
        // 7-1, was never whole): every event a client is given has one.
        assert_eq!(
            text,
            format!("id: 7-0\ndata: \n\nid: 7-2\ndata: {error}\n\n")
        );
        // A resumption after it does not get it again.
        let mut after = o.resume(2).expect("a known event");
        assert!(after.recv().await.is_none());
        // One from before it gets it, once, under the same id.
        let mut before = o.resume(0).expect("a known event");
        let again = before.recv().await.expect("the error again");
        assert_eq!(again, format!("id: 7-2\ndata: {error}\n\n"));
        assert!(before.recv().await.is_none());
    }

    /// A stream resumed by another consumer while the first still held a
    /// long answer's start (its response head not gone): the first gives
    /// nothing in the answer's place and ends after the priming event, from
    /// which its client resumes; the one that resumed gets the answer, or
    /// its error, once, under its id. Before, the first sent the request's
    /// error without an id, and the request was answered twice (an error
    /// there, the answer here).
    #[tokio::test]
    async fn a_consumer_taken_over_mid_answer_gives_nothing_in_its_place() {
        let error = "{\"jsonrpc\":\"2.0\",\"id\":\"c\",\"error\":{\"code\":-32000,\"message\":\"the MCP server's answer was cut off before its end\"}}";
        for broken in [false, true] {
            let (o, mut rx) = Outlet::new(7, true, Some(1), 8, 8);
            o.prime();
            o.open_response(
                &[Bytes::from_static(b"{\"id\":\"c\",\"result\":\"a")],
                b"\"c\"",
                SERVER_ERROR,
            );
            let mut resumed = o.resume(0).expect("a known event");
            o.response_piece(Bytes::from_static(b"bb"));
            o.close_response(if broken {
                Err(crate::tail::TailError::Cut)
            } else {
                Ok(Bytes::from_static(b"\"}"))
            });
            rx.hold_first(Duration::from_secs(15), &CancellationToken::new())
                .await;
            let body = stream_body(rx, Duration::from_secs(15), CancellationToken::new(), ());
            let whole = body.collect().await.expect("a whole stream").to_bytes();
            assert_eq!(
                std::str::from_utf8(&whole).unwrap(),
                "id: 7-0\ndata: \n\n",
                "broken: {broken}"
            );
            let got = resumed.recv().await.expect("the answer or its error");
            let want = if broken {
                format!("id: 7-2\ndata: {error}\n\n")
            } else {
                "id: 7-1\ndata: {\"id\":\"c\",\"result\":\"abb\"}\n\n".to_string()
            };
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
    }

    /// A body whose long answer broke off: its data so far, then once
    /// nothing (so that hyper flushes what it has: it drops it, head and
    /// all, when a body fails at once, and the client gets no status),
    /// then the failure.
    fn fails_after_a_wait(mut body: Body) {
        use hyper::body::Body as _;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut body = std::pin::Pin::new(&mut body);
        let mut polled = body.as_mut().poll_frame(&mut cx);
        let mut data = 0;
        while matches!(polled, std::task::Poll::Ready(Some(Ok(_)))) {
            data += 1;
            polled = body.as_mut().poll_frame(&mut cx);
        }
        assert!(data > 0, "what came before");
        assert!(polled.is_pending(), "once, to flush");
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            std::task::Poll::Ready(Some(Err(_)))
        ));
    }

    #[tokio::test]
    async fn a_stream_or_body_broken_off_waits_once_before_it_fails() {
        let (o, rx) = Outlet::new(8, false, Some(1), 8, 0);
        o.open_response(
            &[Bytes::from_static(b"{\"id\":1,\"result\":\"a")],
            b"1",
            SERVER_ERROR,
        );
        o.close_response(Err(crate::tail::TailError::Cut));
        fails_after_a_wait(stream_body(
            rx,
            Duration::from_secs(15),
            CancellationToken::new(),
            (),
        ));
        let (tx, tail) = crate::tail::channel(b"1", SERVER_ERROR);
        tx.send(Bytes::from_static(b"a"));
        tx.fail(crate::tail::TailError::Cut);
        fails_after_a_wait(streamed(vec![Bytes::from_static(b"{")], tail));
    }

    /// Regression (review): what waits behind a long answer going on in
    /// pieces was bounded in count only (`--max-queue`, responses counted
    /// among it), never in bytes, and past the count a stream with ids
    /// dropped the message at debug level, a request among them (the
    /// proxy's question of a multi round-trip call, which the protocol
    /// cannot do without: the call waited for an answer that could not
    /// come). Here, `--max-queue` 2 and 66 bytes: the old code held the
    /// second 40-byte notification and dropped all four requests. Now
    /// notifications wait within both caps (past them: dropped, with a
    /// warning, counted), requests and responses always.
    #[tokio::test]
    async fn what_waits_behind_a_long_answer_is_bounded_and_requests_always_wait() {
        let (o, rx) = Outlet::new(3, true, Some(2), 2, 16);
        let o = o.with_queue_bytes(66);
        let note = |c: char, n: usize| {
            let s = format!(
                "{{\"method\":\"n\",\"params\":\"{}\"}}",
                c.to_string().repeat(n)
            );
            s.into_bytes()
        };
        let first = note('a', 14);
        assert_eq!(first.len(), 40);
        o.open_response(
            &[Bytes::from_static(b"{\"id\":1,\"result\":\"a")],
            b"1",
            SERVER_ERROR,
        );
        // What waits is kept for replay once the answer ends: read from
        // there, so that the live queue's own policy plays no part.
        drop(rx);
        o.send(&first);
        // Second of two, but past 66 bytes: dropped.
        o.send(&note('b', 14));
        for i in 0..4 {
            o.send(format!("{{\"method\":\"elicitation/create\",\"id\":\"q{i}\"}}").as_bytes());
        }
        // Fits the bytes (40 + 26), and is the second.
        let small = note('c', 0);
        assert_eq!(small.len(), 26);
        o.send(&small);
        // A third: past --max-queue.
        o.send(&note('d', 0));
        o.send_response(b"{\"id\":2,\"error\":{\"code\":1,\"message\":\"m\"}}");
        o.close_response(Ok(Bytes::from_static(b"\"}")));
        assert!(o.is_finished());
        let mut rx = o.resume(0).expect("resumes after the answer");
        let got: Vec<String> = drain(&mut rx)
            .await
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect();
        let data: Vec<&str> = got
            .iter()
            .map(|e| e.split("data: ").nth(1).unwrap_or("").trim_end())
            .collect();
        assert_eq!(
            data,
            [
                "{\"method\":\"n\",\"params\":\"aaaaaaaaaaaaaa\"}",
                "{\"method\":\"elicitation/create\",\"id\":\"q0\"}",
                "{\"method\":\"elicitation/create\",\"id\":\"q1\"}",
                "{\"method\":\"elicitation/create\",\"id\":\"q2\"}",
                "{\"method\":\"elicitation/create\",\"id\":\"q3\"}",
                "{\"method\":\"n\",\"params\":\"\"}",
                "{\"id\":2,\"error\":{\"code\":1,\"message\":\"m\"}}",
            ],
            "{got:?}"
        );
    }

    /// Regression: a stream remembered the request ids of its last 1,024
    /// answers only, so a batch larger than that (`--max-batch` raised)
    /// resumed from before its answers got an error for the last 1,024
    /// lost ones and nothing for the others. It remembers as many as it
    /// owes now.
    #[tokio::test]
    async fn a_resumption_gets_an_error_for_every_lost_answer_of_a_large_batch() {
        let n = 1500;
        let (o, rx) = Outlet::new(9, true, Some(n + 1), 8, 1);
        drop(rx);
        for i in 0..n {
            o.send_response(format!("{{\"id\":{i},\"result\":{{}}}}").as_bytes());
        }
        let mut again = o.resume(0).unwrap();
        let mut errors = 0;
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(200), again.recv()).await
        {
            errors += usize::from(ev.windows(6).any(|w| w == b"-32000"));
        }
        // The first is before the resumption point, the last is kept.
        assert_eq!(errors, n - 2);
    }

    #[tokio::test]
    async fn the_live_queue_is_capped_in_bytes_and_responses_still_arrive() {
        // No event ids: over the byte cap, notifications are dropped.
        let (o, mut rx) = Outlet::new(1, false, Some(1), 1000, 0);
        let o = o.with_queue_bytes(300);
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
        o.send(big.as_bytes()); // an empty queue takes it, whatever its size
        o.send(big.as_bytes()); // over 300 bytes queued: dropped
        o.send_response(b"{\"id\":1}"); // a response is never dropped
        assert!(rx.recv().await.unwrap().ends_with(b"\"}\n\n"));
        assert!(rx.recv().await.unwrap().ends_with(b"{\"id\":1}\n\n"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn taken_events_give_their_bytes_back() {
        let (o, mut rx) = Outlet::new(2, true, None, 1000, 16);
        let o = o.with_queue_bytes(300);
        let big = format!("{{\"pad\":\"{}\"}}", "y".repeat(200));
        for _ in 0..4 {
            o.send(big.as_bytes());
            // Taken at once: the queue never holds more than one.
            assert!(rx.recv().await.is_some());
        }
        o.send(big.as_bytes());
        o.send(big.as_bytes());
        // The second went over the cap: a resumable consumer is cut off.
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
        assert!(o.resume(4).is_some());
    }

    #[tokio::test]
    async fn a_slow_consumer_cut_is_counted() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (o, _rx) = Outlet::new(1, true, None, 2, 16);
        let o = o.with_metrics(metrics.clone());
        for i in 0..5 {
            o.send(format!("{{\"n\":{i}}}").as_bytes());
        }
        let text = metrics.render(crate::metrics::Readings::default());
        assert!(
            text.lines()
                .any(|l| l == "mcp_proxy_slow_consumer_cuts_total 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn slow_consumer_is_cut_off_and_can_resume() {
        let (o, mut rx) = Outlet::new(1, true, None, 2, 16);
        for i in 0..5 {
            o.send(format!("{{\"n\":{i}}}").as_bytes());
        }
        // Two fit, the third overflowed and cut the consumer off.
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
        let mut rx = o.resume(1).unwrap();
        for i in 2..5 {
            let ev = rx.recv().await.unwrap();
            assert!(ev.starts_with(format!("id: 1-{i}\n").as_bytes()));
        }
    }

    /// Drains what a resumed receiver holds now (its stream is finished or
    /// it has nothing more queued).
    async fn drain(rx: &mut LiveRx) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            out.push(ev);
        }
        out
    }

    #[tokio::test]
    async fn a_resumption_past_evicted_notifications_gets_what_is_kept() {
        let (o, _rx) = Outlet::new(1, true, None, 64, 2);
        for i in 0..5 {
            o.send(format!("{{\"n\":{i}}}").as_bytes());
        }
        let mut rx = o.resume(0).expect("resumes with a gap");
        let got = drain(&mut rx).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with(b"id: 1-3\n"), "{got:?}");
        assert!(got[1].starts_with(b"id: 1-4\n"), "{got:?}");
        assert_eq!(parse_event_id("12-34"), Some((12, 34)));
        assert_eq!(parse_event_id("x"), None);
    }

    #[tokio::test]
    async fn an_answer_lost_to_eviction_comes_back_as_an_error_once() {
        // A batch stream owing three answers, keeping 2 events: once its
        // notifications are gone, its oldest answer is evicted.
        let (o, rx) = Outlet::new(1, true, Some(3), 64, 2);
        drop(rx);
        o.prime(); // seq 0
        o.send(b"{}"); // seq 1
        o.send_response(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#); // seq 2
        o.send_response(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#); // seq 3
        o.send_response(br#"{"jsonrpc":"2.0","id":8,"result":{}}"#); // seq 4
        let mut rx = o.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with(b"id: 1-3\n"),
            "what is kept first: {got:?}"
        );
        assert!(got[1].starts_with(b"id: 1-4\n"), "{got:?}");
        let error = std::str::from_utf8(&got[2]).unwrap();
        assert!(error.starts_with("id: 1-5\n"), "{error}");
        assert!(
            error.contains(r#""id":"a","error":{"code":-32000"#),
            "{error}"
        );
        // From the same point again: every answer comes once, as itself or
        // as an error (keeping the first error evicted answer 7).
        let answered = |events: &[Bytes]| {
            let mut ids: Vec<String> = events
                .iter()
                .map(|e| {
                    let data = std::str::from_utf8(e)
                        .unwrap()
                        .split("data: ")
                        .nth(1)
                        .unwrap();
                    let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                    v["id"].to_string()
                })
                .collect();
            ids.sort();
            ids
        };
        let mut rx = o.resume(0).expect("resumes");
        let again = drain(&mut rx).await;
        assert_eq!(answered(&again), ["\"a\"", "7", "8"], "{again:?}");
        assert!(
            again.contains(&got[2]),
            "the first error is replayed as it was"
        );
        // From the last answer on: only what came after it.
        let mut rx = o.resume(5).expect("resumes");
        let after = drain(&mut rx).await;
        assert_eq!(answered(&after), ["7"], "{after:?}");
    }

    #[tokio::test]
    async fn an_answer_released_after_delivery_comes_back_as_an_error() {
        // The answer went to a consumer that dropped it unread; without a
        // budget, nothing lingers: the buffer was released on delivery.
        let (o, rx) = Outlet::new(1, true, Some(1), 64, 16);
        o.prime(); // seq 0
        o.send_response(br#"{"id" : 12.0 , "jsonrpc":"2.0","result":{}}"#); // seq 1
        drop(rx);
        let mut rx = o.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let error = std::str::from_utf8(&got[0]).unwrap();
        assert!(
            error.contains(r#""id":12.0,"error""#),
            "the id as written: {error}"
        );
        assert!(o.resume(2).is_some(), "after the error, nothing more");
        assert!(o.resume(3).is_none(), "an event never sent");
    }

    /// An answer handed over in pieces (the child's line with the client's
    /// id put in) is one event whose data is the pieces joined, and the id
    /// it is remembered by is the one it came with, not one read from it.
    #[tokio::test]
    async fn an_answer_in_pieces_is_one_event_remembered_by_its_given_id() {
        let child = crate::jsonrpc::Frame::parse(
            Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":\"p-4\",\"result\":{\"n\":1}}"),
            false,
        )
        .unwrap();
        let answer = child.answer(b"[\"x\"]", None);
        assert!(answer.parts().len() > 1, "edited in place: {answer:?}");
        let (o, rx) = Outlet::new(1, true, Some(1), 64, 16);
        o.prime(); // seq 0
        // The id given is the client's; a reader of the text would find
        // `["x"]`, which no request may have: only the given id can be
        // what the error names.
        o.send_answer(&answer, b"\"given\"");
        let mut rx = rx;
        let got = drain(&mut rx).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[1],
            event(Some("1-1"), None, &answer.contiguous()),
            "one event of the whole answer"
        );
        drop(rx);
        let mut rx = o.resume(0).expect("resumes");
        let error = drain(&mut rx).await;
        assert_eq!(error.len(), 1, "{error:?}");
        let error = std::str::from_utf8(&error[0]).unwrap();
        assert!(error.contains(r#""id":"given","error""#), "{error}");
    }

    /// Regression: an answer handed to a consumer whose connection then
    /// dropped was released with its stream's buffer, so the client,
    /// back with `Last-Event-ID` a moment later, got an error instead.
    #[tokio::test]
    async fn a_delivered_answer_lingers_for_a_client_that_lost_it() {
        let budget = ReplayBudget::new(1 << 20, Duration::from_secs(60));
        let (o, rx) = Outlet::new(1, true, Some(1), 64, 16);
        let o = o.with_budget(budget.clone());
        o.prime(); // seq 0
        o.send_response(br#"{"jsonrpc":"2.0","id":12,"result":{"n":1}}"#); // seq 1
        assert!(o.is_finished());
        drop(rx); // the connection dropped after the answer was handed over
        let held = budget.used();
        assert!(held > 0, "the buffer lingers");
        for _ in 0..2 {
            let mut rx = o.resume(0).expect("resumes");
            let got = drain(&mut rx).await;
            assert_eq!(got.len(), 1, "{got:?}");
            let text = std::str::from_utf8(&got[0]).unwrap();
            assert!(
                text.contains(r#""result":{"n":1}"#),
                "the answer itself: {text}"
            );
            assert_eq!(budget.used(), held, "still lingering, counted once");
        }
        budget.expire(Instant::now());
        assert_eq!(budget.used(), held, "not before its time");
        drop(o);
        assert_eq!(budget.used(), 0, "a dropped stream gives its buffer back");
    }

    /// Lingering buffers are released when their time is up, and before
    /// that whenever a live stream needs their room in the budget; the
    /// client of one released early gets an error for its answer.
    #[tokio::test]
    async fn lingering_buffers_expire_and_make_room_for_live_streams() {
        let budget = ReplayBudget::new(1500, Duration::from_secs(60));
        let answered = |id: u64| {
            let (o, rx) = Outlet::new(id, true, Some(1), 64, 16);
            let o = o.with_budget(budget.clone());
            o.prime();
            let answer = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":"{}"}}"#,
                "a".repeat(500)
            );
            o.send_response(answer.as_bytes());
            drop(rx);
            o
        };
        let first = answered(1);
        let second = answered(2);
        let lingering = budget.used();
        assert!(lingering > 1000 && lingering <= 1500, "{lingering}");
        // A live GET stream needs room: the oldest lingering buffer goes.
        let (live, _live_rx) = Outlet::new(3, true, None, 64, 16);
        let live = live.with_budget(budget.clone());
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"n","params":"{}"}}"#,
            "b".repeat(500)
        );
        live.send(note.as_bytes());
        let mut rx = first.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        let text = std::str::from_utf8(&got[0]).unwrap();
        assert!(text.contains(r#""id":1,"error""#), "released early: {text}");
        let mut rx = second.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        let text = std::str::from_utf8(&got[0]).unwrap();
        assert!(text.contains(r#""id":2,"result""#), "still kept: {text}");
        // Past their time, the lingering buffers go; the live one stays.
        let before = budget.used();
        budget.expire(Instant::now() + Duration::from_secs(61));
        let after = budget.used();
        assert!(after < before && after > 500, "{before} -> {after}");
        drop((first, second));
        assert_eq!(budget.used(), after);
        drop(live);
        assert_eq!(budget.used(), 0);
    }

    /// A stream its session lets go of leaves a tombstone that keeps its
    /// lingering buffer (in the budget until the tombstone goes), and the
    /// stream revived from it replays the answer; without the buffer, it
    /// answers with an error for it.
    #[tokio::test]
    async fn a_tombstone_keeps_what_lingers_and_gives_it_back_when_it_goes() {
        let budget = ReplayBudget::new(1 << 20, Duration::from_secs(60));
        let finished = || {
            let (o, rx) = Outlet::new(4, true, Some(1), 64, 16);
            let o = o.with_budget(budget.clone());
            o.prime();
            o.send_response(br#"{"jsonrpc":"2.0","id":"a","result":{"n":4}}"#);
            drop(rx);
            o
        };
        let o = finished();
        let held = budget.used();
        let t = o.tombstone().expect("a finished stream with an answer");
        drop(o);
        assert_eq!(budget.used(), held, "the tombstone holds the buffer");
        let o = Outlet::revive(t, 64, 16).with_budget(budget.clone());
        let mut rx = o.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        let text = std::str::from_utf8(&got[0]).unwrap();
        assert!(text.contains(r#""id":"a","result":{"n":4}"#), "{text}");
        assert!(text.starts_with("id: 4-1\n"), "{text}");
        // A tombstone dropped gives the bytes back.
        let t = o.tombstone().expect("again");
        drop(o);
        drop(t);
        assert_eq!(budget.used(), 0);
        // Its buffer gone (expired), the revived stream sends an error.
        let t = finished().tombstone().unwrap();
        budget.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(budget.used(), 0);
        let o = Outlet::revive(t, 64, 16).with_budget(budget.clone());
        let got = drain(&mut o.resume(0).expect("resumes")).await;
        let text = std::str::from_utf8(&got[0]).unwrap();
        assert!(text.contains(r#""id":"a","error""#), "{text}");
        assert!(
            text.starts_with("id: 4-2\n"),
            "the error continues the stream: {text}"
        );
        assert!(o.resume(3).is_none(), "an event never sent");
        // Streams not finished, or without answers, leave none.
        let (open, _rx) = Outlet::new(5, true, Some(1), 64, 16);
        assert!(open.tombstone().is_none());
        let (get, _rx) = Outlet::new(6, true, None, 64, 16);
        get.finish();
        assert!(get.tombstone().is_none());
    }

    /// With `--replay-linger 0` a delivered answer's buffer goes at once.
    #[tokio::test]
    async fn without_lingering_a_delivered_answer_is_released_at_once() {
        let budget = ReplayBudget::new(1 << 20, Duration::ZERO);
        let (o, rx) = Outlet::new(1, true, Some(1), 64, 16);
        let o = o.with_budget(budget.clone());
        o.prime();
        o.send_response(br#"{"jsonrpc":"2.0","id":12,"result":{}}"#);
        drop(rx);
        assert_eq!(budget.used(), 0);
        let mut rx = o.resume(0).expect("resumes");
        let got = drain(&mut rx).await;
        assert!(
            std::str::from_utf8(&got[0])
                .unwrap()
                .contains(r#""id":12,"error""#)
        );
    }

    /// A request's stream (owing two responses, a batch) keeps its first
    /// response while later notifications overflow its buffer, and a
    /// resumption from before the gap gets both responses; a GET stream
    /// (owing none) still refuses such a resumption.
    #[tokio::test]
    async fn a_request_stream_resumes_past_evicted_notifications_to_its_responses() {
        let (o, rx) = Outlet::new(1, true, Some(2), 64, 2);
        drop(rx); // the client went away
        o.send(b"{\"n\":0}");
        o.send_response(b"{\"id\":1}");
        for i in 1..6 {
            o.send(format!("{{\"n\":{i}}}").as_bytes());
        }
        o.send_response(b"{\"id\":2}");
        let mut rx = o.resume(0).expect("resumes past the gap");
        let first = rx.recv().await.unwrap();
        assert!(first.ends_with(b"data: {\"id\":1}\n\n"), "{first:?}");
        let second = rx.recv().await.unwrap();
        assert!(second.ends_with(b"data: {\"id\":2}\n\n"), "{second:?}");
        assert!(rx.recv().await.is_none(), "the stream owed two and ends");
        // A GET stream (owing none) resumes past its gap too, to what is
        // kept: a fresh stream would lose the same notifications.
        let (get, _rx) = Outlet::new(2, true, None, 64, 2);
        for _ in 0..5 {
            get.send(b"{}");
        }
        let mut rx = get.resume(0).expect("resumes");
        assert!(rx.recv().await.unwrap().starts_with(b"id: 2-3\n"));
    }

    /// Regression: `Last-Event-ID: 1-18446744073709551615` overflowed the
    /// eviction check (a panic in debug builds). An id this stream never
    /// sent resumes nothing.
    #[test]
    fn resume_refuses_an_event_the_stream_never_sent() {
        let (o, _rx) = Outlet::new(1, true, None, 64, 16);
        for _ in 0..3 {
            o.send(b"{}");
        }
        assert!(o.resume(u64::MAX).is_none());
        assert!(o.resume(3).is_none());
        assert!(o.resume(2).is_some());
    }

    #[tokio::test]
    async fn the_replay_buffer_is_capped_in_bytes_and_never_skips_an_event() {
        let (o, _rx) = Outlet::new(1, true, None, 64, 100);
        let o = o.with_replay_bytes(200);
        let small = vec![b'1'; 20];
        for _ in 0..3 {
            o.send(&small); // seq 0, 1, 2: about 40 bytes each as events
        }
        assert!(o.resume(0).is_some(), "small events fit");
        o.send(&[b'2'; 500]); // seq 3: too large to keep
        o.send(&small); // seq 4
        let mut rx = o.resume(2).expect("resumes, without the large event");
        let ev = rx.recv().await.unwrap();
        assert!(
            ev.starts_with(b"id: 1-4\n"),
            "the large event is skipped: {ev:?}"
        );
        let mut rx = o.resume(3).expect("after the large event, replay works");
        let ev = rx.recv().await.unwrap();
        assert!(ev.starts_with(b"id: 1-4\n"), "{ev:?}");
        for _ in 0..10 {
            o.send(&small);
        }
        let inner = o.lock();
        assert!(
            inner.buffered_bytes <= 200 && inner.buffer.len() < 10,
            "evicted by bytes"
        );
    }
}
