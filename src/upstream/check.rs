//! The check of a long answer passed on as it arrives (cut-through, see
//! `cut`): the bytes a client gets are valid UTF-8 and, once the line
//! ends, one valid JSON-RPC response, or the answer fails.
//!
//! A short answer is parsed whole before it goes (and repaired, or rebuilt
//! when it has both `result` and `error`, see `worker`); a long one cannot
//! be, as it goes on before its end is written. So its bytes are checked
//! as they pass, holding nothing back but an incomplete UTF-8 character:
//! - bytes that are not UTF-8 become U+FFFD, as on a short line;
//! - the JSON grammar is followed byte by byte (strings, which carry
//!   nearly all of a long answer, are skipped eight bytes at a time), so
//!   a line that stops being JSON fails the answer where it does;
//! - the top-level object must be what the short path takes for one
//!   result: an `error` or a `method` beside the `result` fails the
//!   answer (with an `error`, the short path's reading is that the call
//!   failed), as does any member of the envelope written twice (a second
//!   `result`, or a second `id` that the client would read as the
//!   answer's: the short path refuses such a line). Keys are compared
//!   decoded, as the client's parser reads them.
//!
//! Failing is all that is left once part of an answer went: its client
//! sees the response break off (a transport error), never a message that
//! does not parse. The open containers are kept one bit each, so the
//! check holds at most an eighth of `--max-line-bytes` however deep an
//! answer nests (a short answer is not limited in depth either).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// Why an answer cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// The bytes stopped being JSON here (or it nests too deep, or it
    /// ended before its last brace).
    NotJson,
    /// A member beside `result` says `error` or `method`, or a member of
    /// the envelope comes twice (`result`, `id`, ...).
    BothMembers,
    /// The result has a second `_meta` member, when the check looks for
    /// where the server's identity goes ([`Check::stamping`]): the one
    /// copy it went into is not the one every client keeps (serde_json,
    /// `JSON.parse` and Python keep the last, others the first).
    RepeatedMeta,
    /// The result has a member the proxy puts at its front for a
    /// 2026-07-28 client (`resultType`, the caching hints), when the
    /// check looks for them ([`Check::for_result`]): with both, the
    /// result would hold the key twice.
    RepeatedFill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come (the start, after `:`, after `,` in an array).
    Value,
    /// After `[`.
    ValueOrClose,
    /// After `{`.
    KeyOrClose,
    /// After `,` in an object.
    Key,
    /// After a key.
    Colon,
    /// After a value in a container.
    CommaOrClose,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    Unicode {
        key: bool,
        left: u8,
    },
    Number(Num),
    Literal {
        rest: &'static [u8],
    },
    /// The top-level value ended: only whitespace may follow.
    Done,
}

/// The streaming check; see the module documentation.
pub(crate) struct Check {
    state: State,
    /// Open containers, innermost last.
    stack: Nesting,
    /// The top-level key being read as written (escapes and all, up to
    /// [`KEY_BYTES`] and one more), or the last one.
    key: Vec<u8>,
    /// The members of the envelope met so far, a bit each ([`ENVELOPE`]).
    seen: u8,
    /// The code unit of the `\u` escape being read.
    unit: u16,
    /// The top-level key being read has just had a high surrogate escape,
    /// which a low one must follow at once.
    high: bool,
    /// The start of a UTF-8 character whose end has not come yet.
    carry: Vec<u8>,
    /// Bytes that were not UTF-8 were replaced.
    pub(super) repaired: bool,
    /// Where the server's identity goes in, when this check looks for it
    /// ([`Check::stamping`]).
    stamp: Option<Box<StampScan>>,
}

/// Where `io.modelcontextprotocol/serverInfo` goes into an answer's
/// `result` (see `super::stamp`): into the result's `_meta` member, when
/// it is an object, before its closing brace, unless it has the key
/// already; or, when the result has no `_meta` member at all, as a new
/// one before the result's closing brace. A result with a second `_meta`
/// member (decoded keys: `"\u005fmeta"` too) fails the answer
/// ([`Broken::RepeatedMeta`]): parsers differ on which copy they keep, and
/// the one that went on with the identity cannot be taken back. Found as
/// the bytes pass, from the keys of the result's and that `_meta`'s own
/// members (decoded, as a parser reads them), so nothing is held back and
/// nothing is added twice: at most one insertion per answer.
#[derive(Default)]
struct StampScan {
    /// Where the identity goes is looked for (the child named itself):
    /// a second `_meta` fails the answer.
    identity: bool,
    /// The keys the proxy puts at the result's front
    /// (`super::fill::Fill::keys`): one of them in the result fails it.
    fill_keys: &'static [&'static [u8]],
    /// The top-level key just read is `result`.
    result_next: bool,
    /// The second open container is the result object.
    in_result: bool,
    /// The result's key just read is `_meta`.
    meta_next: bool,
    /// The third open container is the result's `_meta` object.
    in_meta: bool,
    /// The result has a `_meta` member (an object or not).
    seen_meta: bool,
    /// The `_meta` being read has a member.
    meta_members: bool,
    /// The `_meta` being read has the key already.
    meta_has: bool,
    /// The result ended: nothing more to look for.
    done: bool,
    /// Set by the closing brace the member goes before.
    fresh: Option<SpliceKind>,
    /// Where it goes, in the bytes scanned last.
    splice: Option<Splice>,
}

/// Where the member goes: before the byte at `at` (a closing brace) of the
/// bytes the check passed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Splice {
    pub(crate) at: usize,
    pub(crate) kind: SpliceKind,
}

/// What goes in at a [`Splice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpliceKind {
    /// The member, into the result's `_meta` (with a comma before it
    /// unless that object is `empty`).
    IntoMeta { empty: bool },
    /// A `_meta` member holding it, at the end of the result (which has
    /// members: the 2026-07-28 fields go at its front).
    EndOfResult,
}

/// The key [`StampScan`] looks for in a result's `_meta`.
const SERVER_INFO_KEY: &[u8] = b"io.modelcontextprotocol/serverInfo";

/// The longest the keys [`StampScan`] compares can be written: every
/// character of [`SERVER_INFO_KEY`] as a six-byte `\u` escape.
const STAMP_KEY_BYTES: usize = 34 * 6;

impl Check {
    pub(crate) fn new() -> Check {
        Check {
            state: State::Value,
            stack: Nesting::default(),
            key: Vec::new(),
            seen: 0,
            unit: 0,
            high: false,
            carry: Vec::new(),
            repaired: false,
            stamp: None,
        }
    }

    /// A check that also finds where the server's identity goes into the
    /// answer's result ([`StampScan`]); [`Check::take_splice`] tells.
    #[cfg(test)]
    pub(crate) fn stamping() -> Check {
        Check::for_result(true, &[])
    }

    /// A check that reads the members of the answer's result: where the
    /// server's identity goes, when `identity` ([`Check::stamping`]), and
    /// whether the result has one of `fill_keys`, the members the proxy
    /// puts at its front ([`Broken::RepeatedFill`]).
    pub(crate) fn for_result(identity: bool, fill_keys: &'static [&'static [u8]]) -> Check {
        Check {
            stamp: Some(Box::new(StampScan {
                identity,
                fill_keys,
                ..StampScan::default()
            })),
            ..Check::new()
        }
    }

    /// Where the member goes, once the bytes that show it were passed
    /// (by [`Check::head`], [`Check::piece`] or [`Check::end`]): an offset
    /// into the bytes that call returned (the head's first bytes).
    pub(crate) fn take_splice(&mut self) -> Option<Splice> {
        self.stamp.as_mut()?.splice.take()
    }

    /// Checks the head of an answer, before any of it went: how many of
    /// its bytes may go now (the rest, the start of a character, is kept
    /// for the next piece). `None` when the head is not valid UTF-8 or
    /// not JSON so far: it is then better read whole (the short path
    /// repairs or rebuilds it).
    pub(crate) fn head(&mut self, head: &[u8]) -> Option<usize> {
        let keep = incomplete_tail(head);
        let now = &head[..head.len() - keep];
        std::str::from_utf8(now).ok()?;
        self.scan(now).ok()?;
        self.carry.extend_from_slice(&head[now.len()..]);
        Some(now.len())
    }

    /// Checks the next piece: what may go on (the piece itself when it
    /// is valid, repaired when it is not UTF-8), or why the answer fails.
    pub(crate) fn piece(&mut self, piece: Bytes) -> Result<Bytes, Broken> {
        let joined = if self.carry.is_empty() {
            piece
        } else {
            let mut joined = BytesMut::with_capacity(self.carry.len() + piece.len());
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(&piece);
            self.carry.clear();
            joined.freeze()
        };
        let keep = incomplete_tail(&joined);
        let now = joined.slice(..joined.len() - keep);
        self.carry.extend_from_slice(&joined[now.len()..]);
        let now = self.utf8(now);
        self.scan(&now)?;
        Ok(now)
    }

    /// The line ended with `last`: what goes last, or why the answer fails
    /// (it is not one whole JSON value).
    pub(crate) fn end(&mut self, last: Bytes) -> Result<Bytes, Broken> {
        let mut last = self.piece(last)?;
        if !self.carry.is_empty() {
            // A character the line never finished.
            let mut with = BytesMut::from(&last[..]);
            with.extend_from_slice("\u{FFFD}".as_bytes());
            self.scan("\u{FFFD}".as_bytes())?;
            self.carry.clear();
            self.repaired = true;
            last = with.freeze();
        }
        // A number at the very end is complete only now.
        self.scan(b" ")?;
        if self.state == State::Done {
            Ok(last)
        } else {
            Err(Broken::NotJson)
        }
    }

    /// `bytes` (with no character cut at its end) as valid UTF-8.
    fn utf8(&mut self, bytes: Bytes) -> Bytes {
        // The check alone is many times faster than the lossy conversion,
        // which valid bytes never need.
        if std::str::from_utf8(&bytes).is_ok() {
            return bytes;
        }
        match String::from_utf8_lossy(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(fixed) => {
                self.repaired = true;
                Bytes::from(fixed)
            }
        }
    }

    /// Follows the grammar over `bytes`.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Str { key } = self.state {
                if key && self.high && bytes[i] != b'\\' {
                    // A high surrogate not followed by its low one.
                    return Err(Broken::NotJson);
                }
                // The bulk of a long answer: skip to what ends or escapes.
                let run = plain_run(&bytes[i..]);
                if key && self.keeps_key() {
                    self.note_key(&bytes[i..i + run]);
                }
                i += run;
                let Some(&b) = bytes.get(i) else { break };
                match b {
                    b'"' => {
                        self.state = if key {
                            State::Colon
                        } else {
                            self.value_done()?
                        };
                    }
                    b'\\' => {
                        if key && self.keeps_key() {
                            // An escaped key: decoded when it ends.
                            self.note_key(b"\\");
                        }
                        self.state = State::Escape { key };
                    }
                    _ => return Err(Broken::NotJson),
                }
                i += 1;
                continue;
            }
            if let State::Number(Num::Int | Num::Frac | Num::Exp) = self.state {
                // Digits leave the state as it is.
                let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                i += digits;
                if i == bytes.len() {
                    break;
                }
            }
            self.step(bytes[i])?;
            if let Some(stamp) = &mut self.stamp
                && let Some(kind) = stamp.fresh.take()
            {
                stamp.splice = Some(Splice { at: i, kind });
            }
            i += 1;
        }
        Ok(())
    }

    /// Whether a key being read is a member of the top-level object.
    fn top_key(&self) -> bool {
        self.stack.len() == 1
    }

    /// Whether the key being read is kept: a top-level one, or one the
    /// stamp compares (a member of the result, or of its `_meta`).
    fn keeps_key(&self) -> bool {
        self.top_key() || self.stamp_key_depth()
    }

    /// Whether a key being read is one [`StampScan`] compares.
    fn stamp_key_depth(&self) -> bool {
        self.stamp.as_ref().is_some_and(|s| {
            !s.done
                && match self.stack.len() {
                    2 => s.in_result,
                    3 => s.in_meta,
                    _ => false,
                }
        })
    }

    fn note_key(&mut self, part: &[u8]) {
        let most = if self.top_key() {
            KEY_BYTES
        } else {
            STAMP_KEY_BYTES
        };
        let room = (most + 1).saturating_sub(self.key.len());
        self.key.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// The key just read, decoded as any parser reads it (`"\u005fmeta"`
    /// is `_meta`), if it is at most `most` bytes as written.
    fn decoded_key(&self, most: usize) -> Option<Cow<'_, [u8]>> {
        if self.key.len() > most {
            return None;
        }
        if !self.key.contains(&b'\\') {
            return Some(Cow::Borrowed(&self.key[..]));
        }
        let mut quoted = Vec::with_capacity(self.key.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&self.key);
        quoted.push(b'"');
        let decoded = serde_json::from_slice::<String>(&quoted).ok()?;
        Some(Cow::Owned(decoded.into_bytes()))
    }

    /// A key of the result or of its `_meta` was read (see [`StampScan`]).
    fn stamp_key_read(&mut self) -> Result<(), Broken> {
        let depth = self.stack.len();
        let want: &[u8] = if depth == 2 {
            b"_meta"
        } else {
            SERVER_INFO_KEY
        };
        let key = self.decoded_key(STAMP_KEY_BYTES);
        let hit = key.as_deref() == Some(want);
        let filled = depth == 2
            && self
                .stamp
                .as_ref()
                .is_some_and(|s| key.as_deref().is_some_and(|k| s.fill_keys.contains(&k)));
        if filled {
            return Err(Broken::RepeatedFill);
        }
        let Some(stamp) = self.stamp.as_mut() else {
            return Ok(());
        };
        if depth == 2 {
            stamp.meta_next = hit;
        } else {
            stamp.meta_members = true;
            stamp.meta_has |= hit;
        }
        Ok(())
    }

    /// Which member of the envelope the top-level key just read names,
    /// decoded as any parser reads it (`"\u0069d"` is `id`).
    fn envelope_member(&self) -> Option<u8> {
        // A key whose surrogates do not pair failed the answer when it
        // ended (`surrogate`).
        let key = self.decoded_key(KEY_BYTES)?;
        ENVELOPE.iter().position(|m| *m == &key[..]).map(|i| 1 << i)
    }

    /// A `\u` escape of a top-level key ended: surrogates must pair, as
    /// the short path's parser reads a key (`Frame::parse` refuses a line
    /// with a key it cannot decode, such as `"\ud800"`), whatever the
    /// key's length.
    fn surrogate(&mut self) -> Result<(), Broken> {
        let low = (0xDC00..=0xDFFF).contains(&self.unit);
        if std::mem::take(&mut self.high) != low {
            return Err(Broken::NotJson);
        }
        self.high = (0xD800..=0xDBFF).contains(&self.unit);
        Ok(())
    }

    /// One byte outside a string's plain run.
    fn step(&mut self, b: u8) -> Result<(), Broken> {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.state = match self.state {
            State::Str { .. } => unreachable!("strings are scanned by runs"),
            State::Escape { key } => {
                if key && self.keeps_key() {
                    self.note_key(&[b]);
                }
                match b {
                    _ if key && self.high && b != b'u' => return Err(Broken::NotJson),
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => State::Str { key },
                    b'u' => {
                        self.unit = 0;
                        State::Unicode { key, left: 4 }
                    }
                    _ => return Err(Broken::NotJson),
                }
            }
            State::Unicode { key, left } => {
                let Some(digit) = (b as char).to_digit(16) else {
                    return Err(Broken::NotJson);
                };
                self.unit = self.unit << 4 | digit as u16;
                if key && self.keeps_key() {
                    self.note_key(&[b]);
                }
                if left == 1 {
                    if key && self.top_key() {
                        self.surrogate()?;
                    }
                    State::Str { key }
                } else {
                    State::Unicode {
                        key,
                        left: left - 1,
                    }
                }
            }
            State::Literal { rest } => {
                if rest.first() != Some(&b) {
                    return Err(Broken::NotJson);
                }
                if rest.len() == 1 {
                    self.value_done()?
                } else {
                    State::Literal { rest: &rest[1..] }
                }
            }
            State::Number(n) => match self.number(n, b) {
                Some(next) => State::Number(next),
                None => {
                    // The number ended before `b`, which is read afresh.
                    if matches!(n, Num::Minus | Num::Dot | Num::E | Num::ESign) {
                        return Err(Broken::NotJson);
                    }
                    self.state = self.value_done()?;
                    return self.step(b);
                }
            },
            _ if ws => return Ok(()),
            State::Done => return Err(Broken::NotJson),
            State::Value => self.value_start(b)?,
            State::ValueOrClose if b == b']' => self.close(false)?,
            State::ValueOrClose => self.value_start(b)?,
            State::KeyOrClose if b == b'}' => self.close(true)?,
            State::KeyOrClose | State::Key if b == b'"' => {
                if self.top_key() {
                    self.key.clear();
                    self.high = false;
                } else if self.stamp_key_depth() {
                    self.key.clear();
                }
                State::Str { key: true }
            }
            State::KeyOrClose | State::Key => return Err(Broken::NotJson),
            State::Colon if b == b':' => {
                if self.top_key() {
                    self.key_read()?;
                } else if self.stamp_key_depth() {
                    self.stamp_key_read()?;
                }
                State::Value
            }
            State::Colon => return Err(Broken::NotJson),
            State::CommaOrClose => match (b, self.stack.innermost()) {
                (b',', Some(true)) => State::Key,
                (b',', Some(false)) => State::Value,
                (b'}', Some(true)) => self.close(true)?,
                (b']', Some(false)) => self.close(false)?,
                _ => return Err(Broken::NotJson),
            },
        };
        Ok(())
    }

    /// A top-level key was read: what it means for the answer. The rules
    /// are `Frame::parse`'s for a whole line: no member of the envelope
    /// twice, and a `result` with neither `error` nor `method`.
    fn key_read(&mut self) -> Result<(), Broken> {
        let member = self.envelope_member();
        if let Some(stamp) = &mut self.stamp {
            stamp.result_next = member == Some(ENVELOPE_RESULT);
        }
        let Some(member) = member else {
            return Ok(());
        };
        if self.seen & member != 0 {
            return Err(Broken::BothMembers);
        }
        self.seen |= member;
        if self.seen & ENVELOPE_RESULT != 0 && self.seen & (ENVELOPE_ERROR | ENVELOPE_METHOD) != 0 {
            return Err(Broken::BothMembers);
        }
        Ok(())
    }

    fn value_start(&mut self, b: u8) -> Result<State, Broken> {
        if let Some(stamp) = &mut self.stamp
            && !stamp.done
        {
            match self.stack.len() {
                1 if std::mem::take(&mut stamp.result_next) => stamp.in_result = b == b'{',
                2 if stamp.in_result && std::mem::take(&mut stamp.meta_next) => {
                    if stamp.seen_meta && stamp.identity {
                        return Err(Broken::RepeatedMeta);
                    }
                    stamp.seen_meta = true;
                    if b == b'{' {
                        stamp.in_meta = true;
                        stamp.meta_members = false;
                        stamp.meta_has = false;
                    }
                }
                _ => {}
            }
        }
        Ok(match b {
            b'{' | b'[' => {
                self.stack.push(b == b'{');
                if b == b'{' {
                    State::KeyOrClose
                } else {
                    State::ValueOrClose
                }
            }
            b'"' => State::Str { key: false },
            b'-' => State::Number(Num::Minus),
            b'0' => State::Number(Num::Zero),
            b'1'..=b'9' => State::Number(Num::Int),
            b't' => State::Literal { rest: b"rue" },
            b'f' => State::Literal { rest: b"alse" },
            b'n' => State::Literal { rest: b"ull" },
            _ => return Err(Broken::NotJson),
        })
    }

    /// The state after a number in state `n` reads `b`; `None` when `b`
    /// is not part of it.
    fn number(&self, n: Num, b: u8) -> Option<Num> {
        let digit = b.is_ascii_digit();
        Some(match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, _) if digit => Num::Int,
            (Num::Int, _) if digit => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, _) if digit => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, _) if digit => Num::Exp,
            _ => return None,
        })
    }

    /// A container closes.
    fn close(&mut self, object: bool) -> Result<State, Broken> {
        let depth = self.stack.len();
        if self.stack.pop() != Some(object) {
            return Err(Broken::NotJson);
        }
        if let Some(stamp) = &mut self.stamp
            && !stamp.done
        {
            if depth == 3 && stamp.in_meta {
                // The result's other members are still read: a second
                // `_meta` among them fails the answer.
                stamp.in_meta = false;
                if !stamp.meta_has {
                    stamp.fresh = Some(SpliceKind::IntoMeta {
                        empty: !stamp.meta_members,
                    });
                }
            } else if depth == 2 && stamp.in_result {
                stamp.in_result = false;
                stamp.done = true;
                if !stamp.seen_meta {
                    stamp.fresh = Some(SpliceKind::EndOfResult);
                }
            }
        }
        self.value_done()
    }

    /// A value ended: what may come next.
    fn value_done(&mut self) -> Result<State, Broken> {
        Ok(if self.stack.is_empty() {
            State::Done
        } else {
            State::CommaOrClose
        })
    }
}

/// The members of a JSON-RPC message's envelope (`jsonrpc::Frame`'s), in
/// the order of their bits in `Check::seen`.
const ENVELOPE: [&[u8]; 6] = [b"jsonrpc", b"id", b"method", b"params", b"result", b"error"];
const ENVELOPE_METHOD: u8 = 1 << 2;
const ENVELOPE_RESULT: u8 = 1 << 4;
const ENVELOPE_ERROR: u8 = 1 << 5;

/// The longest a top-level key can be written and still name a member of
/// [`ENVELOPE`]: seven characters, each as a six-byte `\u` escape.
const KEY_BYTES: usize = 7 * 6;

/// The open containers of an answer, a bit each (`1`: an object).
#[derive(Default)]
struct Nesting {
    bits: Vec<u64>,
    len: usize,
}

impl Nesting {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, object: bool) {
        let (word, bit) = (self.len / 64, self.len % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.len += 1;
    }

    fn innermost(&self) -> Option<bool> {
        let at = self.len.checked_sub(1)?;
        Some(self.bits[at / 64] & (1 << (at % 64)) != 0)
    }

    fn pop(&mut self) -> Option<bool> {
        let object = self.innermost()?;
        self.len -= 1;
        if self.len.is_multiple_of(64) {
            self.bits.truncate(self.len / 64);
        }
        Some(object)
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 character that
/// does not end there (0 to 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: its lead is further back
        }
        let want = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        let cut = want > back
            && std::str::from_utf8(&bytes[len - back..])
                .err()
                .is_some_and(|e| e.valid_up_to() == 0 && e.error_len().is_none());
        return if cut { back } else { 0 };
    }
    0
}

/// How many bytes from the start of `s` are plain string content: not a
/// quote, a backslash or a control character. The quote or backslash is
/// found by `memchr` (vector instructions); the run before it is then
/// checked for control characters 64 bytes at a time, in a loop the
/// compiler vectorizes too.
fn plain_run(s: &[u8]) -> usize {
    // Most strings of a structured answer are short: their end is found
    // before `memchr` would have been set up.
    for (at, &b) in s.iter().take(16).enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return at;
        }
    }
    if s.len() <= 16 {
        return s.len();
    }
    let end = memchr::memchr2(b'"', b'\\', s).unwrap_or(s.len());
    let run = &s[..end];
    let mut at = 0;
    for block in run.chunks(64) {
        if block.iter().fold(0u8, |seen, &b| seen | u8::from(b < 0x20)) != 0 {
            // Invariant: the block holds one.
            return at
                + block
                    .iter()
                    .position(|&b| b < 0x20)
                    .expect("a control byte");
        }
        at += block.len();
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `line` cut at every `step` bytes; the check's outcome and
    /// what went on.
    fn pass(line: &[u8], step: usize) -> Result<Vec<u8>, Broken> {
        let mut c = Check::new();
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = line.chunks(step.max(1)).collect();
        let (last, rest) = pieces.split_last().unwrap();
        for p in rest {
            out.extend_from_slice(&c.piece(Bytes::copy_from_slice(p))?);
        }
        out.extend_from_slice(&c.end(Bytes::copy_from_slice(last))?);
        Ok(out)
    }

    #[test]
    fn valid_answers_pass_unchanged_however_they_are_cut() {
        let lines: [&[u8]; 5] = [
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\"b\\c\u00e9 \u20ac"}],"n":[-0,1.5e+3,0.25E-2,true,false,null,{}]}}"#,
            br#"{"result":[],"jsonrpc":"2.0","id":"x"}"#,
            " {\"id\":7,\"result\":\"caf\u{e9} \u{1F600}\"}\r\n\t".as_bytes(),
            br#"{"id":1,"result":{"error":1},"_meta":{"error":2}}"#,
            br#"{"id":1,"result":12}"#,
        ];
        for line in lines {
            for step in [1, 2, 3, 7, 64, line.len()] {
                assert_eq!(pass(line, step).as_deref(), Ok(line), "step {step}");
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let line = b"{\"id\":1,\"result\":\"a\xFFb\xE2\x82\"}";
        for step in [1, 2, 5, line.len()] {
            let out = pass(line, step).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "{\"id\":1,\"result\":\"a\u{FFFD}b\u{FFFD}\"}",
                "step {step}"
            );
        }
        // A character cut at a piece's edge goes whole with the next.
        let euro = "{\"id\":1,\"result\":\"\u{20ac}\u{20ac}\"}".as_bytes();
        for step in 1..euro.len() {
            assert_eq!(pass(euro, step).unwrap(), euro, "step {step}");
        }
    }

    #[test]
    fn an_error_after_the_result_or_anything_not_json_fails_the_answer() {
        let both: [&[u8]; 3] = [
            br#"{"id":1,"result":{"a":1},"error":{"code":-1,"message":"x"}}"#,
            br#"{"result":"x","error":null,"jsonrpc":"2.0","id":1}"#,
            br#"{"id":1,"result":1,"result":2}"#,
        ];
        for line in both {
            for step in [1, 4, line.len()] {
                assert_eq!(pass(line, step), Err(Broken::BothMembers), "step {step}");
            }
        }
        let broken: [&[u8]; 9] = [
            br#"{"id":1,"result":"a"} trailing"#,
            br#"{"id":1,"result":"a"#,
            br#"{"id":1,"result":[1,]}"#,
            br#"{"id":1,"result":{"a" 1}}"#,
            br#"{"id":1,"result":01}"#,
            br#"{"id":1,"result":-}"#,
            br#"{"id":1,"result":tru}"#,
            b"{\"id\":1,\"result\":\"a\tb\"}",
            br#"{"id":1,"result":"\x"}"#,
        ];
        for line in broken {
            assert_eq!(
                pass(line, 3),
                Err(Broken::NotJson),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // Deep nesting is followed, bit by bit, and must still match.
        let deep = format!(
            r#"{{"id":1,"result":{}1{}}}"#,
            "[{\"a\":".repeat(5000),
            "}]".repeat(5000)
        );
        assert_eq!(pass(deep.as_bytes(), 4096).as_deref(), Ok(deep.as_bytes()));
        let crossed = format!(
            r#"{{"id":1,"result":{}1{}}}"#,
            "[{\"a\":".repeat(70),
            "]}".repeat(70)
        );
        assert_eq!(pass(crossed.as_bytes(), 64), Err(Broken::NotJson));
    }

    /// Regression (fuzz `check`): a member of the envelope written twice
    /// after the result (`"id":2` after `"id":1`, which the client's
    /// parser reads as the answer's id), or a `method` beside it, went on,
    /// where the short path refuses such a line; and any escaped key
    /// after the result (`"_m\u0065ta"`) failed a good answer. Keys are
    /// now read decoded against the envelope's members.
    #[test]
    fn envelope_members_count_however_written_and_no_other_key_does() {
        let broken: [&[u8]; 5] = [
            br#"{"jsonrpc":"2.0","id":1,"result":{"a":[1,2]},"id":2}"#,
            br#"{"result":{},"jsonrpc":"2.0","id":3,"i\u0064":4}"#,
            br#"{"id":1,"result":1,"jsonrpc":"2.0","jsonrpc":"2.0"}"#,
            br#"{"id":1,"result":1,"\u0065rror":{"code":1,"message":"x"}}"#,
            br#"{"id":1,"result":1,"method":"x"}"#,
        ];
        for line in broken {
            for step in [1, 4, line.len()] {
                assert_eq!(
                    pass(line, step),
                    Err(Broken::BothMembers),
                    "step {step}: {}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        let good: [&[u8]; 3] = [
            br#"{"id":1,"result":1,"_m\u0065ta":{"id":2}}"#,
            br#"{"id":1,"result":{"id":2,"error":3},"ids":[],"\/":0}"#,
            br#"{"id":1,"result":1,"i\u0064s":2,"\ud800\udc00":0,"\u0072\u0065\u0073\u0075\u006c\u0074x":1}"#,
        ];
        for line in good {
            for step in [1, 4, line.len()] {
                assert_eq!(
                    pass(line, step).as_deref(),
                    Ok(line),
                    "step {step}: {}",
                    String::from_utf8_lossy(line)
                );
            }
        }
    }

    #[test]
    fn a_head_is_checked_and_keeps_a_cut_character_back() {
        let mut c = Check::new();
        let head = "{\"id\":1,\"result\":\"\u{20ac}".as_bytes();
        let now = c.head(&head[..head.len() - 1]).unwrap();
        assert_eq!(now, head.len() - 3);
        let rest = c.piece(Bytes::from_static(&[0xAC])).unwrap();
        assert_eq!(&rest[..], "\u{20ac}".as_bytes());
        assert_eq!(&c.end(Bytes::from_static(b"\"}")).unwrap()[..], b"\"}");
        // Not UTF-8, or not JSON: read whole instead.
        assert_eq!(Check::new().head(b"{\"id\":1,\"result\":\"\xFF"), None);
        assert_eq!(Check::new().head(b"{\"id\":1,,"), None);
    }

    #[test]
    fn plain_runs_stop_at_quotes_backslashes_and_control_characters() {
        for (s, n) in [
            (&b"abcdefghijklmnop\"x"[..], 16),
            (b"abcdefg\\", 7),
            (b"abcdefghij\x1f", 10),
            (b"\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC\"", 9),
            (b"", 0),
            (b"short", 5),
        ] {
            assert_eq!(plain_run(s), n, "{}", String::from_utf8_lossy(s));
        }
    }

    /// Regression (review): a top-level key with a lone surrogate escape
    /// (`"\ud800"`) was read as naming no member and went on in a long
    /// answer, while `Frame::parse` refuses the same line short (its
    /// parser cannot decode the key). Now surrogates in top-level keys
    /// must pair, whatever the key's length, and the two paths give the
    /// same verdict for the same line. Keys inside the result and values
    /// are not decoded by either.
    #[test]
    fn a_line_gets_the_short_paths_verdict_on_surrogates_in_top_level_keys() {
        let long_key = "k".repeat(80);
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud800":0}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\udc00":0}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud800\u0041":0}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud800\ud800\udc00":0}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud800x":0}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud800\n":0}"#.into(),
            r#"{"\uDBFF":0,"jsonrpc":"2.0","id":1,"result":1}"#.into(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":1,"{long_key}\ud800":0}}"#),
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":1,"\ud800{long_key}":0}}"#),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\ud83d\ude00":0}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"\uD800\uDC00x\u00e9":0}"#.into(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":1,"{long_key}\udbff\udfff":0}}"#),
            r#"{"jsonrpc":"2.0","id":1,"result":{"\ud800":1},"x":"\ud800"}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":1,"_meta":{"\udc00":[]}}"#.into(),
        ];
        for line in &lines {
            let short =
                crate::jsonrpc::Frame::parse(Bytes::copy_from_slice(line.as_bytes()), false)
                    .is_ok();
            for step in [1, 3, line.len()] {
                let long = pass(line.as_bytes(), step);
                assert_eq!(long.is_ok(), short, "step {step}: {line} ({long:?})");
                if let Err(e) = long {
                    assert_eq!(e, Broken::NotJson, "{line}");
                }
            }
        }
        let verdicts: Vec<bool> = lines
            .iter()
            .map(|l| pass(l.as_bytes(), 4).is_ok())
            .collect();
        assert_eq!(
            verdicts.iter().filter(|ok| !**ok).count(),
            9,
            "{verdicts:?}"
        );
    }
}
