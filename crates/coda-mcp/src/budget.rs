//! The process-wide budget of bytes of Coda's answers held in memory at
//! once (`--max-read-bytes`, [`ReadBudget`]).
//!
//! One answer is capped at [`MAX_RESPONSE_BYTES`],
//! but up to `--max-pending-requests` calls (64) run at once: without this
//! budget they could hold 64 × 32 MiB = 2 GiB of bodies, and an export
//! twice that (its gzip body and its inflated text). Every body read from
//! Coda (an API answer as it streams in, an export download, its inflated
//! text) lives in a [`Held`] value, which owns a [`Reservation`] of the
//! budget at least as large as its buffer's capacity. The reservation is
//! an ordinary field: it goes back when the value is dropped, whether the
//! body was used, a read failed half way (the `?` drops it), or the call's
//! future was dropped (a cancelled call, a deadline).
//!
//! # Why it cannot deadlock
//!
//! Readers that each hold part of the budget and all wait for more would
//! all hang until their deadlines. So a reservation is taken in one of two
//! ways, and only the first may wait:
//!
//! - **First reservation** of a body ([`ReadBudget::reserve`]), by a reader
//!   that holds nothing of the budget for it: the whole `Content-Length`
//!   when Coda sends one (with, for an API answer, the parse expected of
//!   it: [`EXPECTED_PARSE_PER_BYTE`], at least [`FIRST_STEP`] in all,
//!   when that fits the budget), else [`FIRST_STEP`]. It takes free room at once
//!   or waits for it, in arrival order, but never past the instant it is
//!   given (the call's deadline, or the request's own timeout when that
//!   ends first); then it fails with [`OverBudget`]. A reservation larger
//!   than the whole budget fails at once: no wait could satisfy it.
//! - **Growing** ([`Held::extend`], [`Held::try_reserve`]): a body longer
//!   than its first step, or an export's inflated text beside the gzip body
//!   it came from. It never waits: it takes room that is free now
//!   ([`Semaphore::try_acquire_many_owned`]) or fails at once with
//!   [`OverBudget`], and its reader then drops what it held.
//!
//! A holder therefore never waits for the budget: it is reading (bounded
//! by the request timeout), or done and about to drop its body. Room always
//! comes back, and a waiter gets it or reaches its deadline. Room that
//! comes free goes to the waiters first, in order, so a body that grows
//! while others wait is refused rather than jumping the queue. A value handed
//! out of the client with its reservation (an export's text) follows the
//! same rule: the call drops it before it sends another request, or it
//! would wait while holding.
//!
//! # Cost
//!
//! The budget is a [`tokio::sync::Semaphore`] counted in [`UNIT`]s (1 KiB).
//! Appending a chunk only compares lengths; the semaphore is touched when a
//! buffer grows, which doubles it (at most 9 times from 64 KiB to 32 MiB),
//! and when it is dropped. Its one lock is taken only when an answer is
//! refused, to rate-limit the warning.
//!
//! # Parsed answers
//!
//! An API answer's parse (its `serde_json::Value`) costs more than its
//! text, up to ~86 times for small objects (`{"a":0}`: 8 bytes, ~690
//! parsed). Before parsing, the body's room is set to its length plus the
//! parse's estimate ([`crate::client::json_cost`]), taken like any growth
//! (free now, or the answer is refused); the text then goes and the room
//! stays with the parsed answer (`ApiResponse::room`): until a single
//! object's result is cut to `--max-result-bytes`, and for a list's pages
//! until its result is built.
//!
//! # Answers a tool keeps
//!
//! A whole list a tool gathers page by page (a composite's items, handed
//! to the code that summarises them; a page's plain text, which a content
//! write with `verify` keeps across the write) comes as [`Kept`]: the
//! items with the room of their pages, held until the tool drops them
//! (or what it made of them, [`Kept::remade`]). While a call keeps room
//! so, it is a holder: its next first reservations take free room or
//! fail, never wait ([`crate::call::keeps_room`]), as the rule above
//! wants. Pages gathered for a list's result hold theirs until it is
//! built, under the same rule.
//!
//! # What it does not count
//!
//! The columns cached for the checks of row writes (kept across calls:
//! counted in `--column-cache-bytes` instead, by the room their parse
//! took; columns too large for it hold their room while a call keeps
//! them, as a [`Kept`]); a single answer a tool keeps while it sends a request or two
//! more (a row read before it is written), bounded by the room it got
//! when it was parsed (a page copied by `coda_duplicate_page` keeps only
//! its ids, icon and subtitle across its export, counted when over
//! 64 KiB); the chunk reqwest hands over between two appends; the old
//! buffer for the moment a growth moves it.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Largest answer read from Coda (API body or export download, after
/// gunzip): bigger ones are refused rather than held in memory. The
/// largest real answers (a 500-row page of wide rows, a long page export)
/// are a few MiB. Here, with the budget all answers share, so that the
/// client and the configuration both take it from the module they both
/// depend on.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Bytes per permit of the budget's semaphore.
pub const UNIT: usize = 1024;

/// First reservation of a body whose length Coda does not say (a chunked
/// or compressed answer): larger than most answers, so that growing is
/// rare, and small enough that an empty answer costs nothing to speak of.
pub const FIRST_STEP: usize = 64 * 1024;

/// What an API answer's parse is expected to take per byte of its text,
/// reserved with its `Content-Length` before it is read: its parse is
/// counted too ([`crate::client::json_cost`]), and growing then, while
/// holding the text, cannot wait, so an answer that arrived while others
/// waited for room was refused where it could have waited. Measured
/// estimates for Coda's answers: 5 (a write's ids) to 7-8 (pages of
/// rows) to 12 (docs, rich rows); more for small objects (a column's
/// select options: 39).
pub const EXPECTED_PARSE_PER_BYTE: usize = 8;

/// At most one warning about refused answers in this long.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// An answer that did not fit in the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes the answer asked to hold in all, what it held included (a
    /// growing body asks for twice what it held).
    pub needed: usize,
    /// Bytes of the budget held by other answers (of this call or others)
    /// when it was refused.
    pub held_by_others: usize,
    /// The budget (`--max-read-bytes`, in whole [`UNIT`]s).
    pub max_bytes: usize,
    /// How long it waited for room; `None` when it did not wait (it held
    /// bytes already, or needed more than the whole budget).
    pub waited: Option<Duration>,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            needed,
            held_by_others,
            max_bytes,
            waited,
        } = self;
        match waited {
            Some(w) => write!(
                f,
                "no room for its {needed} bytes came free in the {:.1} s it could wait (until the call's deadline or its request's timeout)",
                w.as_secs_f64()
            )?,
            None => write!(f, "it needed {needed} bytes, more than was free")?,
        }
        write!(
            f,
            ": coda-mcp holds at most {max_bytes} bytes of Coda's answers at once (--max-read-bytes), and other answers held {held_by_others} of them"
        )
    }
}

/// Refusals since the last warning, for the rate-limited warning.
#[derive(Debug, Default)]
struct Refusals {
    last_warned: Option<Instant>,
    since: u64,
}

/// The budget of bytes of Coda's answers held at once, shared by every
/// call of the server (see the module documentation).
#[derive(Debug)]
pub struct ReadBudget {
    sem: Arc<Semaphore>,
    /// The budget in [`UNIT`]s.
    units: usize,
    refusals: Mutex<Refusals>,
}

impl ReadBudget {
    /// A budget of `max_bytes`, rounded down to whole [`UNIT`]s (at least one).
    pub fn new(max_bytes: usize) -> Self {
        let units = (max_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(units)),
            units,
            refusals: Mutex::default(),
        }
    }

    /// The budget in bytes.
    pub fn max_bytes(&self) -> usize {
        self.units * UNIT
    }

    /// Bytes held now (reserved by bodies, or set aside for a waiter).
    pub fn held_bytes(&self) -> usize {
        self.units.saturating_sub(self.sem.available_permits()) * UNIT
    }

    /// The first reservation of a body, `bytes` long, for a reader that
    /// holds nothing of the budget for it: free room at once, else the
    /// first room that comes free before `until` (waiters are served in
    /// arrival order), else [`OverBudget`]. A request for more than the
    /// whole budget fails at once.
    pub async fn reserve(&self, bytes: usize, until: Instant) -> Result<Reservation, OverBudget> {
        let n = units_for(bytes);
        if n == 0 {
            return Ok(Reservation::default());
        }
        let Some(n32) = u32::try_from(n).ok().filter(|_| n <= self.units) else {
            return Err(self.refuse(bytes, 0, None));
        };
        match self.sem.clone().try_acquire_many_owned(n32) {
            Ok(p) => return Ok(Reservation(Some(p))),
            // A call that keeps room from earlier answers is a holder:
            // it must not wait (see the module documentation).
            Err(TryAcquireError::NoPermits) if crate::call::keeps_room() => {
                return Err(self.refuse(bytes, 0, None));
            }
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(self.refuse(bytes, 0, None)),
        }
        let started = Instant::now();
        let wait = self.sem.clone().acquire_many_owned(n32);
        match tokio::time::timeout_at(until.into(), wait).await {
            Ok(Ok(p)) => {
                tracing::debug!(
                    bytes,
                    waited = ?started.elapsed(),
                    "room for Coda's answer in --max-read-bytes after a wait"
                );
                Ok(Reservation(Some(p)))
            }
            // Dropping the wait gives back any room already set aside for it.
            _ => Err(self.refuse(bytes, 0, Some(started.elapsed()))),
        }
    }

    /// Grow `r` to at least `bytes` with room that is free now, or say
    /// why not; never waits.
    fn grow(&self, r: &mut Reservation, bytes: usize) -> Result<(), OverBudget> {
        let have = r.units();
        let want = units_for(bytes);
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have).map_err(|_| self.refuse(bytes, r.bytes(), None))?;
        match self.sem.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                match &mut r.0 {
                    Some(held) => held.merge(p),
                    None => r.0 = Some(p),
                }
                Ok(())
            }
            Err(_) => Err(self.refuse(bytes, r.bytes(), None)),
        }
    }

    /// The error for an answer refused, and a warning at most once every
    /// [`WARN_EVERY`] (with how many were refused since the last one).
    fn refuse(&self, needed: usize, own: usize, waited: Option<Duration>) -> OverBudget {
        let held = self.held_bytes();
        let e = OverBudget {
            needed,
            held_by_others: held.saturating_sub(own),
            max_bytes: self.max_bytes(),
            waited,
        };
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        r.since += 1;
        let now = Instant::now();
        if r.last_warned
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(
                needed,
                held,
                max_bytes = e.max_bytes,
                waited = ?waited,
                refused = r.since,
                "an answer from Coda found no room in --max-read-bytes and was refused (at most one such warning a second; `refused` counts the refusals since the last)"
            );
            r.last_warned = Some(now);
            r.since = 0;
        }
        e
    }
}

/// Whole [`UNIT`]s that hold `bytes`.
fn units_for(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// Room in a [`ReadBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Reservation {
    fn units(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.units() * UNIT
    }
}

/// A body read from Coda and the room it holds in the [`ReadBudget`]:
/// both go when it is dropped. It derefs to the body, read-only, so the
/// buffer cannot grow past what is reserved except through
/// [`Held::extend`].
#[derive(Debug, Default)]
pub struct Held<T> {
    value: T,
    reservation: Reservation,
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Held<T> {
    /// A value that holds no room: text not read from Coda as bytes (a
    /// plain-text page rendered from parsed elements).
    pub fn unreserved(value: T) -> Self {
        Self {
            value,
            reservation: Reservation::default(),
        }
    }

    /// The bytes of the budget it holds.
    pub fn reserved_bytes(&self) -> usize {
        self.reservation.bytes()
    }
}

impl Held<Vec<u8>> {
    /// An empty body with a first reservation of `first` bytes, waiting for
    /// room until `until` (see [`ReadBudget::reserve`]): for a reader that
    /// holds nothing yet. Nothing is allocated until the first byte.
    pub async fn reserve(
        budget: &ReadBudget,
        first: usize,
        until: Instant,
    ) -> Result<Self, OverBudget> {
        Ok(Self {
            value: Vec::new(),
            reservation: budget.reserve(first, until).await?,
        })
    }

    /// [`Held::reserve`] for an API answer of `len` bytes (its
    /// `Content-Length`) that will be parsed: `room` bytes in all (its text
    /// and the parse expected of it; at least `len`), the buffer sized for
    /// the text alone. Once the parse's estimate is known
    /// ([`Held::grow_room`]) the slack goes back, or the room grows.
    pub async fn reserve_parsed(
        budget: &ReadBudget,
        len: usize,
        room: usize,
        until: Instant,
    ) -> Result<Self, OverBudget> {
        let reservation = budget.reserve(room.max(len), until).await?;
        Ok(Self {
            value: Vec::with_capacity(len),
            reservation,
        })
    }

    /// An empty body with a first reservation of `first` bytes taken from
    /// room free now: for a reader whose call already holds bytes (an
    /// export's inflated text beside its gzip body), which must not wait.
    pub fn try_reserve(budget: &ReadBudget, first: usize) -> Result<Self, OverBudget> {
        let mut reservation = Reservation::default();
        budget.grow(&mut reservation, first)?;
        Ok(Self {
            value: Vec::new(),
            reservation,
        })
    }

    /// Append `chunk`. Past the reservation, it doubles (to at most `cap`
    /// bytes, at least what the chunk needs) with room free now, or fails
    /// at once: growing never waits. The buffer's capacity never
    /// passes the reservation. The caller checks `cap` itself first.
    pub fn extend(
        &mut self,
        budget: &ReadBudget,
        chunk: &[u8],
        cap: usize,
    ) -> Result<(), OverBudget> {
        let need = self.value.len() + chunk.len();
        if need > self.value.capacity() {
            let have = self.reservation.bytes();
            if need > have {
                // Doubling keeps growths (and reallocations) few; growing
                // by what each chunk needs would copy the body every time.
                let to = have.saturating_mul(2).min(cap).max(need);
                budget.grow(&mut self.reservation, to)?;
            }
            // Up to what is reserved, exactly: `reserve_exact` asks for no more.
            self.value
                .reserve_exact(self.reservation.bytes() - self.value.len());
        }
        self.value.extend_from_slice(chunk);
        Ok(())
    }

    /// Make the room held `bytes` in all (a body's parse beside it): first
    /// the buffer's slack past its length goes back (a body read without a
    /// `Content-Length` doubled up to it), then the room grows with room
    /// free now, or fails at once: it holds room, so it must not wait (see
    /// the module documentation).
    pub fn grow_room(&mut self, budget: &ReadBudget, bytes: usize) -> Result<(), OverBudget> {
        self.value.shrink_to_fit();
        let keep = units_for(self.value.capacity().max(bytes));
        if let Some(held) = self.reservation.0.as_mut()
            && held.num_permits() > keep
        {
            drop(held.split(held.num_permits() - keep));
        }
        budget.grow(&mut self.reservation, bytes)
    }

    /// The room, without the body: for what was parsed from it.
    pub fn into_room(self) -> Reservation {
        self.reservation
    }

    /// The body as text, keeping its buffer and its reservation; `None`
    /// when it is not UTF-8 (the room goes back).
    pub fn into_string(self) -> Option<Held<String>> {
        let Self { value, reservation } = self;
        String::from_utf8(value)
            .ok()
            .map(|value| Held { value, reservation })
    }
}

/// Parsed answers a tool keeps past the request that read them (the
/// items of a whole list, gathered page by page, that a composite then
/// summarises), with the room each page's parse held: counted in
/// `--max-read-bytes` for as long as they are kept. It derefs to the
/// value; [`Kept::into_parts`] hands both out.
///
/// While one holds room, the tool call keeping it is a holder: its
/// next reads take room free now or fail, never wait
/// ([`crate::call::keeps_room`]), as for any holder.
#[derive(Debug)]
pub struct Kept<T> {
    value: T,
    rooms: Vec<Reservation>,
    /// Marks the call as holding room while `rooms` holds any (read by
    /// its `Drop` alone).
    _keeping: Option<crate::call::Keeping>,
}

impl<T> Kept<T> {
    /// `value`, holding `rooms` for as long as it is kept.
    pub fn new(value: T, rooms: Vec<Reservation>) -> Self {
        let keeping = rooms
            .iter()
            .any(|r| r.units() > 0)
            .then(crate::call::keeping);
        Self {
            value,
            rooms,
            _keeping: keeping,
        }
    }

    /// The bytes of the budget it holds.
    pub fn reserved_bytes(&self) -> usize {
        self.rooms.iter().map(Reservation::bytes).sum()
    }

    /// The value and its room: keep the room while the value (or what is
    /// made of it) is kept.
    pub fn into_parts(self) -> (T, Vec<Reservation>) {
        (self.value, self.rooms)
    }

    /// `made` (something made of the value, which then goes), holding at
    /// most `bytes` of the value's room, what `made` takes, for as long
    /// as it is kept (across later requests of the call too).
    pub fn remade_kept<U>(self, made: U, bytes: usize) -> Kept<U> {
        let held = self.remade(made, bytes);
        Kept::new(held.value, vec![held.reservation])
    }

    /// [`Kept::remade`] for a value used at once (no request of the call
    /// follows while it is kept).
    pub fn remade<U>(self, made: U, bytes: usize) -> Held<U> {
        let mut room = Reservation::default();
        for r in self.rooms {
            match (&mut room.0, r.0) {
                (Some(held), Some(p)) => held.merge(p),
                (slot @ None, p) => *slot = p,
                (Some(_), None) => {}
            }
        }
        let keep = units_for(bytes);
        if let Some(held) = room.0.as_mut()
            && held.num_permits() > keep
        {
            drop(held.split(held.num_permits() - keep));
        }
        Held {
            value: made,
            reservation: room,
        }
    }
}

impl<T> Deref for Kept<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Kept<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// A body read chunk by chunk as [`crate::client`] reads one, with an
    /// await between chunks (where a real read waits for the network).
    async fn read(
        budget: &ReadBudget,
        chunks: usize,
        chunk: usize,
        until: Instant,
    ) -> Result<Held<Vec<u8>>, OverBudget> {
        let mut body = Held::reserve(budget, FIRST_STEP, until).await?;
        let piece = vec![7u8; chunk];
        for _ in 0..chunks {
            tokio::task::yield_now().await;
            body.extend(budget, &piece, usize::MAX)?;
        }
        Ok(body)
    }

    /// A call that keeps room past its requests (a [`crate::call::Keeping`]
    /// alive) is a holder: its first reservations fail at once when no
    /// room is free, where a call holding nothing waits until `until`.
    #[tokio::test]
    async fn a_call_that_keeps_room_never_waits_for_more() {
        let b = ReadBudget::new(1024 * KIB);
        let _all = b.reserve(1024 * KIB, soon(0)).await.unwrap();
        let ctx = crate::call::CallContext {
            progress: None,
            steps: Default::default(),
            full_text: false,
            max_result_bytes: 100_000,
            deadline: soon(60_000),
            write: false,
            write_sent: Default::default(),
            finishing: Default::default(),
            kept: Default::default(),
        };
        crate::call::scope(ctx, async {
            let e = b.reserve(KIB, soon(300)).await.unwrap_err();
            assert!(e.waited.is_some(), "{e:?}");
            let keeping = crate::call::keeping();
            assert!(crate::call::keeps_room());
            let started = Instant::now();
            let e = b.reserve(KIB, soon(30_000)).await.unwrap_err();
            assert_eq!(e.waited, None, "{e:?}");
            assert!(started.elapsed() < Duration::from_secs(10));
            drop(keeping);
            assert!(!crate::call::keeps_room());
        })
        .await;
    }

    #[tokio::test]
    async fn room_comes_back_when_the_body_is_dropped() {
        let b = ReadBudget::new(1024 * KIB);
        assert_eq!(b.max_bytes(), 1024 * KIB);
        let body = read(&b, 10, 50 * KIB, soon(1000)).await.unwrap();
        assert_eq!(body.len(), 500 * KIB);
        // 64 KiB doubled to 512 KiB: the reservation covers the capacity.
        assert_eq!(body.reserved_bytes(), 512 * KIB);
        assert!(body.capacity() <= body.reserved_bytes());
        assert_eq!(b.held_bytes(), 512 * KIB);
        drop(body);
        assert_eq!(b.held_bytes(), 0);
        // Known length: exactly that, rounded up to a unit.
        let r = b.reserve(1000 * KIB + 1, soon(0)).await.unwrap();
        assert_eq!(r.bytes(), 1001 * KIB);
        drop(r);
        assert_eq!(b.held_bytes(), 0);
        assert_eq!(b.reserve(0, soon(0)).await.unwrap().bytes(), 0);
    }

    #[tokio::test]
    async fn room_comes_back_when_growing_fails_half_way() {
        let b = ReadBudget::new(1024 * KIB);
        let other = b.reserve(600 * KIB, soon(0)).await.unwrap();
        // Grows 64 → 128 → 256 KiB, then asks for 512 with 168 free.
        let t = Instant::now();
        let e = read(&b, 10, 50 * KIB, soon(5000)).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "a holder waited");
        assert_eq!(e.waited, None, "a holder must not wait");
        assert_eq!(e.held_by_others, 600 * KIB);
        assert_eq!(e.max_bytes, 1024 * KIB);
        assert_eq!(e.needed, 512 * KIB, "{e:?}");
        assert_eq!(b.held_bytes(), 600 * KIB);
        let text = e.to_string();
        assert!(
            text.contains("more than was free") && text.contains("--max-read-bytes"),
            "{text}"
        );
        drop(other);
        assert_eq!(b.held_bytes(), 0);
    }

    #[tokio::test]
    async fn room_comes_back_when_the_reading_future_is_dropped() {
        let b = Arc::new(ReadBudget::new(1024 * KIB));
        // A read that holds room and never finishes (a call cancelled
        // while its answer streams in).
        let reader = {
            let b = b.clone();
            tokio::spawn(async move {
                let _body = read(&b, 5, 100 * KIB, soon(1000)).await.unwrap();
                std::future::pending::<()>().await;
            })
        };
        while b.held_bytes() < 512 * KIB {
            tokio::task::yield_now().await;
        }
        // A waiter given the free half and waiting for the rest, dropped
        // (a call cancelled while it waits for room).
        let waiting = b.reserve(800 * KIB, soon(60_000));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting)
                .await
                .is_err()
        );
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());
        assert_eq!(
            b.held_bytes(),
            0,
            "the cancelled reader or waiter kept room"
        );
        assert_eq!(
            b.reserve(1024 * KIB, soon(0)).await.unwrap().bytes(),
            1024 * KIB
        );
    }

    #[tokio::test]
    async fn a_reader_that_holds_nothing_waits_for_room_until_its_deadline() {
        let b = Arc::new(ReadBudget::new(1024 * KIB));
        let holder = b.reserve(800 * KIB, soon(0)).await.unwrap();
        // No room comes free: it returns at its deadline, saying so.
        let t = Instant::now();
        let e = b.reserve(300 * KIB, soon(200)).await.unwrap_err();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(e.waited.is_some(), "{e:?}");
        assert!(e.to_string().contains("the call's deadline"), "{e}");
        // Room that comes free goes to the waiter.
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(300 * KIB, soon(10_000)).await.map(|r| r.bytes()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(holder);
        let got = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Ok(300 * KIB));
        assert_eq!(b.held_bytes(), 0);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_fails_at_once() {
        let b = ReadBudget::new(1024 * KIB);
        let t = Instant::now();
        let e = b.reserve(1024 * KIB + 1, soon(10_000)).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(e.waited, None);
        assert_eq!(e.needed, 1024 * KIB + 1);
    }

    /// The deadlock the policy rules out: many readers each holding part of
    /// the budget and all needing more. Each either finishes or fails at
    /// once, none waits for its deadline, and all the room comes back.
    #[tokio::test]
    async fn readers_holding_part_of_the_budget_never_wait_on_each_other() {
        let b = Arc::new(ReadBudget::new(2048 * KIB));
        let t = Instant::now();
        let readers: Vec<_> = (0..16)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    // 1 MiB each: 16 MiB wanted of 2 MiB, deadline far off.
                    read(&b, 32, 32 * KIB, soon(60_000)).await.map(|body| {
                        assert!(body.capacity() <= body.reserved_bytes());
                        body.len()
                    })
                })
            })
            .collect();
        let mut done = 0;
        let mut refused = 0;
        for r in readers {
            match tokio::time::timeout(Duration::from_secs(5), r)
                .await
                .expect("a reader hung")
                .unwrap()
            {
                Ok(n) => {
                    assert_eq!(n, 1024 * KIB);
                    done += 1;
                }
                Err(e) => {
                    assert!(e.needed <= 2048 * KIB, "{e:?}");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "16 readers of 1 MiB fitted in 2 MiB");
        assert!(done + refused == 16);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(b.held_bytes(), 0);
    }

    #[tokio::test]
    async fn growing_never_passes_the_cap_and_text_keeps_its_room() {
        let b = ReadBudget::new(1024 * KIB);
        let mut body = Held::try_reserve(&b, FIRST_STEP).unwrap();
        for _ in 0..3 {
            body.extend(&b, &[b'a'; 40 * KIB], 100 * KIB).unwrap();
        }
        // 64 KiB, then 128 capped at 100, then what the chunk needs (the
        // caller refuses a body past its cap before appending to it).
        assert_eq!(body.len(), 120 * KIB);
        assert_eq!(body.reserved_bytes(), 120 * KIB);
        let text = body.into_string().unwrap();
        assert_eq!(text.len(), 120 * KIB);
        assert_eq!(b.held_bytes(), 120 * KIB);
        drop(text);
        let mut bad = Held::try_reserve(&b, 1).unwrap();
        bad.extend(&b, &[0xff], 10).unwrap();
        assert!(bad.into_string().is_none());
        assert_eq!(b.held_bytes(), 0);
    }
}
