//! The server's identity in every result a 2026-07-28 client gets from a
//! 2025-era child. Spec 2026-07-28 `basic/index`, "Per-response protocol
//! fields": servers SHOULD include `io.modelcontextprotocol/serverInfo` (an
//! `Implementation`: `name` and `version`, optionally more) in every
//! result's `_meta`, unless configured not to, so that a client knows who
//! answered without any prior connection state (schema `ResultMetaObject`;
//! `server/discover` too, where the proxy has always put it). A 2025-era
//! child names itself once, in its InitializeResult's `serverInfo`; the
//! proxy adds that value, as the child wrote it, to the child's results,
//! and to the results it makes itself (`input_required`, the closing
//! response of `subscriptions/listen`).
//!
//! Nothing of the child's result is parsed or rewritten: the member goes
//! in where the result's own `_meta` ends, or in a `_meta` of its own
//! when the result has none ([`super::check::StampScan`]); a `_meta` that
//! has the key already, or is not an object, is left as it is. A short
//! answer without `_meta` or an escape in its result (nearly every one)
//! gets it with the `resultType` at its front, in the same insertion.

use bytes::{BufMut, Bytes, BytesMut};

use super::UpstreamError;
use super::check::{Broken, Check, Splice, SpliceKind};
use super::fill::Fill;
use crate::jsonrpc::{self, Frame, Message};

/// The `_meta` key of the server's identity in a result.
pub const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// `{"name":…,"version":…}` of a `serverInfo` object, when both are
/// strings of a size that fits in `max` bytes.
fn name_and_version(info: &[u8], max: usize) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Brief<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        version: std::borrow::Cow<'a, str>,
    }
    let brief: Brief<'_> = serde_json::from_slice(info).ok()?;
    let out = serde_json::to_vec(&serde_json::json!({
        "name": brief.name,
        "version": brief.version,
    }))
    .ok()?;
    (out.len() <= max).then_some(out)
}

/// The pieces that put one child's identity into results, made once per
/// child from its InitializeResult.
#[derive(Debug)]
pub struct Stamp {
    /// `"io.modelcontextprotocol/serverInfo":<serverInfo>`.
    member: Bytes,
    /// [`Fill::Complete`]'s fields with a `_meta` holding `member`.
    complete: Bytes,
    /// [`Fill::Cacheable`]'s fields with a `_meta` holding `member`.
    cacheable: Bytes,
}

impl Stamp {
    /// From a 2025 InitializeResult (raw JSON): its `serverInfo`, as
    /// written, when it is an object of at most `max` bytes
    /// (`--max-server-info-bytes`), else its name and version; `None`
    /// when there is none, or those do not fit either (nothing to say).
    pub fn of_initialize(result: &[u8], max: usize) -> Option<Stamp> {
        let at = jsonrpc::locate(result, &["serverInfo"])?;
        let info = &result[at];
        if info.first() != Some(&b'{') {
            return None;
        }
        // Every result carries it: a child's `serverInfo` past the cap
        // (icons as data URIs, a long description) goes as its name and
        // version only, so that it cannot grow every result by as much;
        // so does one serde_json (Rust clients) cannot read, with a number
        // past a double (`1e400`), a lone surrogate or nesting past its
        // limit, which would make every result unreadable to them.
        let why = if info.len() > max {
            Some("it is over --max-server-info-bytes")
        } else if serde_json::from_slice::<serde_json::Value>(info).is_err() {
            Some("not every client's parser can read it")
        } else {
            None
        };
        let brief;
        let info = if let Some(why) = why {
            let Some(short) = name_and_version(info, max) else {
                tracing::warn!(
                    bytes = info.len(),
                    limit = max,
                    "leaves the child's serverInfo out of 2026-07-28 results: {why}, and its name and version are not strings that fit"
                );
                return None;
            };
            tracing::warn!(
                bytes = info.len(),
                limit = max,
                "shortens the child's serverInfo in 2026-07-28 results to its name and version: {why}"
            );
            brief = short;
            &brief[..]
        } else {
            info
        };
        let mut member = BytesMut::with_capacity(SERVER_INFO_KEY.len() + info.len() + 3);
        member.put_u8(b'"');
        member.put_slice(SERVER_INFO_KEY.as_bytes());
        member.put_slice(b"\":");
        member.put_slice(info);
        let member = member.freeze();
        let with_meta = |fields: &[u8]| {
            let mut out = BytesMut::with_capacity(fields.len() + member.len() + 11);
            out.put_slice(fields);
            out.put_slice(b",\"_meta\":{");
            out.put_slice(&member);
            out.put_u8(b'}');
            out.freeze()
        };
        Some(Stamp {
            complete: with_meta(Fill::Complete.fields().unwrap_or_default()),
            cacheable: with_meta(Fill::Cacheable.fields().unwrap_or_default()),
            member,
        })
    }

    /// The member alone (`"io.modelcontextprotocol/serverInfo":{…}`).
    pub fn member(&self) -> &Bytes {
        &self.member
    }

    /// `fill`'s fields with a `_meta` that holds the member.
    fn fields(&self, fill: Fill) -> Option<&[u8]> {
        match fill {
            Fill::None => None,
            Fill::Complete => Some(&self.complete),
            Fill::Cacheable => Some(&self.cacheable),
        }
    }

    /// What goes in at `splice` ([`Check::take_splice`]), and where.
    pub(super) fn insertion(&self, splice: Splice) -> (usize, Bytes) {
        let bytes = match splice.kind {
            SpliceKind::IntoMeta { empty: true } => self.member.clone(),
            SpliceKind::IntoMeta { empty: false } => {
                let mut out = BytesMut::with_capacity(self.member.len() + 1);
                out.put_u8(b',');
                out.put_slice(&self.member);
                out.freeze()
            }
            SpliceKind::EndOfResult => {
                let mut out = BytesMut::with_capacity(self.member.len() + 11);
                out.put_slice(b",\"_meta\":{");
                out.put_slice(&self.member);
                out.put_u8(b'}');
                out.freeze()
            }
        };
        (splice.at, bytes)
    }

    /// `result`, an object the proxy made that has no `_meta`, with one
    /// holding the member, at its front.
    pub fn into_result(&self, result: &[u8]) -> Vec<u8> {
        let Some(rest) = result.strip_prefix(b"{") else {
            return result.to_vec();
        };
        let mut out = Vec::with_capacity(result.len() + self.member.len() + 12);
        out.extend_from_slice(b"{\"_meta\":{");
        out.extend_from_slice(&self.member);
        out.push(b'}');
        if rest.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out
    }
}

/// The child's whole answer `frame` as its 2026-07-28 client gets it:
/// re-addressed to `client_id`, with `fill`'s fields and, when the child
/// named itself, its identity in the result's `_meta`. A result that
/// would hold a key twice is refused, as a long one fails: `_meta` twice
/// ([`Broken::RepeatedMeta`]), or a member `fill` puts at its front
/// ([`Broken::RepeatedFill`]); the client would keep one copy, which one
/// depends on its parser, and a Rust client's typed parse refuses both.
pub(super) fn answer(
    frame: &Frame,
    client_id: &[u8],
    fill: Fill,
    stamp: Option<&Stamp>,
) -> Result<Message, UpstreamError> {
    let plain = || Ok(frame.answer(client_id, fill.fields()));
    if stamp.is_none() && fill.keys().is_empty() {
        return plain();
    }
    let Some(result) = frame.result_range() else {
        return plain();
    };
    let bytes = &frame.bytes()[result];
    if bytes.first() != Some(&b'{') {
        return plain();
    }
    let fields = match stamp {
        Some(stamp) => stamp.fields(fill),
        None => fill.fields(),
    };
    // None of the keys anywhere in it, in any spelling (`\u005fmeta`):
    // it goes with the fields, in one insertion.
    let escaped = memchr::memchr(b'\\', bytes).is_some();
    let meta = stamp.is_some() && jsonrpc::contains(bytes, b"_meta");
    if !escaped && !meta && !fill.keys().iter().any(|k| jsonrpc::contains(bytes, k)) {
        return Ok(frame.answer(client_id, fields));
    }
    // Rarely: the result's members read as a long answer's are. A frame
    // is valid JSON, so the check passes it unless its result repeats
    // `_meta` or has a member of the fill.
    let mut check = Check::for_result(stamp.is_some(), fill.keys());
    let splice = match check.end(frame.bytes().clone()) {
        Ok(_) => check.take_splice(),
        Err(Broken::RepeatedMeta) => {
            return Err(UpstreamError::Garbled(
                "its result has _meta twice, and clients differ on which copy they keep".into(),
            ));
        }
        Err(Broken::RepeatedFill) => {
            return Err(UpstreamError::Garbled(
                "its result has a member the proxy adds for a 2026-07-28 client (resultType, ttlMs or cacheScope), which would go on twice".into(),
            ));
        }
        Err(_) => None,
    };
    match stamp {
        Some(stamp) => {
            Ok(frame.answer_with(client_id, fill.fields(), splice.map(|s| stamp.insertion(s))))
        }
        None => plain(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const MAX: usize = crate::config::DEFAULT_MAX_SERVER_INFO_BYTES;

    fn stamp() -> Stamp {
        Stamp::of_initialize(
            br#"{"protocolVersion":"2025-11-25","serverInfo":{"name":"s","version":"1"}}"#,
            MAX,
        )
        .expect("a serverInfo")
    }

    fn answered(line: &str, fill: Fill) -> String {
        let frame = Frame::parse(Bytes::copy_from_slice(line.as_bytes()), false).unwrap();
        let out = answer(&frame, br#""c""#, fill, Some(&stamp()))
            .expect("not refused")
            .into_bytes();
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// Every result has the identity once, the child's `_meta` members
    /// stay, and the text is JSON every parser reads alike: no key twice
    /// in any object (checked on the raw text, as serde_json keeps the last).
    #[test]
    fn the_identity_goes_into_every_result_shape_once() {
        let info = r#"{"name":"s","version":"1"}"#;
        let cases: &[(&str, &str)] = &[
            // No _meta: one of its own.
            (
                r#"{"content":[]}"#,
                r#"{"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":INFO},"content":[]}"#,
            ),
            (
                r#"{}"#,
                r#"{"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":INFO}}"#,
            ),
            // _meta last, first, empty.
            (
                r#"{"content":[],"_meta":{"a":1}}"#,
                r#"{"resultType":"complete","content":[],"_meta":{"a":1,"io.modelcontextprotocol/serverInfo":INFO}}"#,
            ),
            (
                r#"{"_meta":{"a":1},"content":[]}"#,
                r#"{"resultType":"complete","_meta":{"a":1,"io.modelcontextprotocol/serverInfo":INFO},"content":[]}"#,
            ),
            (
                r#"{"_meta":{ },"x":1}"#,
                r#"{"resultType":"complete","_meta":{ "io.modelcontextprotocol/serverInfo":INFO},"x":1}"#,
            ),
            // Escaped key: still the result's _meta.
            (
                r#"{"\u005fmeta":{"a":1}}"#,
                r#"{"resultType":"complete","\u005fmeta":{"a":1,"io.modelcontextprotocol/serverInfo":INFO}}"#,
            ),
            // The child's own identity, in any spelling: kept, not doubled.
            (
                r#"{"_meta":{"io.modelcontextprotocol\/serverInfo":{"name":"c","version":"2"}}}"#,
                r#"{"resultType":"complete","_meta":{"io.modelcontextprotocol\/serverInfo":{"name":"c","version":"2"}}}"#,
            ),
            // _meta not an object: left alone, no second _meta.
            (
                r#"{"_meta":null,"x":1}"#,
                r#"{"resultType":"complete","_meta":null,"x":1}"#,
            ),
            (
                r#"{"_meta":[{"a":1}]}"#,
                r#"{"resultType":"complete","_meta":[{"a":1}]}"#,
            ),
            // _meta nested in content, or in a string: not the result's.
            (
                r#"{"content":[{"_meta":{"b":2},"text":"\"_meta\":{}"}]}"#,
                r#"{"resultType":"complete","content":[{"_meta":{"b":2},"text":"\"_meta\":{}"}],"_meta":{"io.modelcontextprotocol/serverInfo":INFO}}"#,
            ),
            // A number no double holds passes as written.
            (
                r#"{"_meta":{"n":1e400},"v":-0.0000000000000000000001}"#,
                r#"{"resultType":"complete","_meta":{"n":1e400,"io.modelcontextprotocol/serverInfo":INFO},"v":-0.0000000000000000000001}"#,
            ),
        ];
        for (result, want) in cases {
            let line = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
            let want = format!(
                r#"{{"jsonrpc":"2.0","id":"c","result":{}}}"#,
                want.replace("INFO", info)
            );
            assert_eq!(answered(&line, Fill::Complete), want, "{result}");
        }
        // A result that is not an object, and an error: as before.
        let line = r#"{"jsonrpc":"2.0","id":7,"result":[1]}"#;
        assert_eq!(
            answered(line, Fill::Complete),
            r#"{"jsonrpc":"2.0","id":"c","result":[1]}"#
        );
        let line = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"_meta"}}"#;
        assert_eq!(
            answered(line, Fill::Complete),
            r#"{"jsonrpc":"2.0","id":"c","error":{"code":-1,"message":"_meta"}}"#
        );
        // Cacheable results keep their hints.
        let got: Value = serde_json::from_str(&answered(
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#,
            Fill::Cacheable,
        ))
        .unwrap();
        assert_eq!(got["result"]["cacheScope"], "private");
        assert_eq!(got["result"]["_meta"][SERVER_INFO_KEY]["name"], "s");
    }

    /// `line` as cut-through passes it, cut once at `at`: the head, then
    /// the rest as the line's end, the identity put in where the check
    /// says (as `cut` does).
    fn passed(line: &[u8], at: usize, stamp: &Stamp) -> Option<Vec<u8>> {
        passed_in_three(line, at, at, stamp)
    }

    /// `line` as cut-through passes it in three pieces (cut at `a` and
    /// `b`), the identity put in where the check says.
    fn passed_in_three(line: &[u8], a: usize, b: usize, stamp: &Stamp) -> Option<Vec<u8>> {
        let mut check = Check::stamping();
        let mut out = Vec::new();
        let put = |bytes: &[u8], check: &mut Check, out: &mut Vec<u8>| {
            let mut bytes = bytes.to_vec();
            if let Some(splice) = check.take_splice() {
                let (at, with) = stamp.insertion(splice);
                bytes.splice(at..at, with.iter().copied());
            }
            out.extend_from_slice(&bytes);
        };
        let now = check.head(&line[..a])?;
        put(&line[..now], &mut check, &mut out);
        // What the head kept back (a cut character) the check holds; the
        // line reader goes on from where the head ended.
        let middle = check.piece(Bytes::copy_from_slice(&line[a..b])).ok()?;
        put(&middle, &mut check, &mut out);
        let last = check.end(Bytes::copy_from_slice(&line[b..])).ok()?;
        put(&last, &mut check, &mut out);
        Some(out)
    }

    /// Keys spelled with escapes, split anywhere across three reads (a
    /// `\u` escape, a multi-byte character and a key cut in two places),
    /// give the whole line's answer: the identity once, where the short
    /// path puts it.
    #[test]
    fn keys_split_across_reads_stamp_as_the_whole_line_does() {
        let s = stamp();
        for result in [
            r#"{"\u005fmeta":{"a":"\u00e9"},"b":"é"}"#,
            r#"{"é":1,"_m\u0065ta":{}}"#,
            r#"{"_meta":{"io.modelcontextprotocol\/serverInfo":{"x":1}}}"#,
            r#"{"_meta":{"io.modelcontextprotocol\/serverInfO":{}},"c":"\ud83d\ude00"}"#,
            r#"{"\ud83d\ude00":{"_meta":{}},"_meta":{"k":[{}]}}"#,
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
            let frame = Frame::parse(Bytes::from(line.clone()), false).unwrap();
            let whole = answer(&frame, b"7", Fill::None, Some(&s))
                .expect("not refused")
                .into_bytes();
            let got: Value = serde_json::from_slice(&whole).unwrap();
            assert!(
                got["result"]["_meta"][SERVER_INFO_KEY].is_object(),
                "{result}"
            );
            let line = line.as_bytes();
            for a in 1..line.len() {
                for b in a..=line.len() {
                    let got = passed_in_three(line, a, b, &s).expect("valid");
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&whole),
                        "{result} cut at {a} and {b}"
                    );
                }
            }
        }
    }

    /// A long answer gets the identity at the same place however its
    /// bytes are cut, hostile shapes included, and once.
    #[test]
    fn a_long_answer_gets_the_identity_once_wherever_it_is_cut() {
        let s = stamp();
        let info = r#""io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}"#;
        let cases: &[(&str, &str)] = &[
            (
                r#"{"content":[{"text":"_meta"}]}"#,
                r#"{"content":[{"text":"_meta"}],"_meta":{INFO}}"#,
            ),
            (
                r#"{"a":1,"_meta":{"x":[1,{"_meta":{}}]},"b":2}"#,
                r#"{"a":1,"_meta":{"x":[1,{"_meta":{}}],INFO},"b":2}"#,
            ),
            (r#"{"_meta":{}}"#, r#"{"_meta":{INFO}}"#),
            (
                r#"{"_meta":{"io.modelcontextprotocol/serverInfo":1}}"#,
                r#"{"_meta":{"io.modelcontextprotocol/serverInfo":1}}"#,
            ),
            (
                r#"{"x":{"_meta":{}}}"#,
                r#"{"x":{"_meta":{}},"_meta":{INFO}}"#,
            ),
        ];
        for (result, want) in cases {
            let line = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
            let want = format!(
                r#"{{"jsonrpc":"2.0","id":7,"result":{}}}"#,
                want.replace("INFO", info)
            );
            for at in 1..=line.len() {
                let got = passed(line.as_bytes(), at, &s).expect("valid");
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want,
                    "{result} cut at {at}"
                );
            }
        }
    }

    /// A result with `_meta` twice, in any spelling and whatever the
    /// copies hold, is refused, short or long, however it is cut: serde_json,
    /// `JSON.parse` and Python keep the last copy, which the identity did
    /// not go into.
    #[test]
    fn a_result_with_meta_twice_is_refused_short_or_long() {
        let s = stamp();
        for result in [
            r#"{"_meta":{},"_meta":{}}"#,
            r#"{"_meta":{"a":1},"content":[{"_meta":{}}],"_meta":{"b":2}}"#,
            r#"{"_meta":"no","_meta":{"a":1e400}}"#,
            r#"{"_meta":{"a":1},"_meta":{"b":2}}"#,
            r#"{"_meta":{"io.modelcontextprotocol/serverInfo":1},"x":1,"_meta":{}}"#,
            r#"{"_meta":null,"_meta":null}"#,
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
            let frame = Frame::parse(Bytes::copy_from_slice(line.as_bytes()), false).unwrap();
            let refused = answer(&frame, br#""c""#, Fill::Complete, Some(&s));
            assert!(
                matches!(refused, Err(UpstreamError::Garbled(_))),
                "{result} short"
            );
            for at in 1..=line.len() {
                assert!(
                    passed(line.as_bytes(), at, &s).is_none(),
                    "{result} cut at {at}"
                );
            }
            let mut check = Check::stamping();
            assert_eq!(
                check.end(Bytes::from(line.clone())).err(),
                Some(Broken::RepeatedMeta),
                "{result}"
            );
        }
        // A `_meta` of a nested object, or in a string, is not the result's.
        let line = r#"{"jsonrpc":"2.0","id":7,"result":{"_meta":{},"c":[{"_meta":{}},"\"_meta\":{}"],"d":{"_meta":1}}}"#;
        let want = r#"{"jsonrpc":"2.0","id":7,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}},"c":[{"_meta":{}},"\"_meta\":{}"],"d":{"_meta":1}}}"#;
        for at in 1..=line.len() {
            let got = passed(line.as_bytes(), at, &s).expect("valid");
            assert_eq!(String::from_utf8(got).unwrap(), want, "cut at {at}");
        }
        // Without stamping (a session-era client), nothing is looked for.
        let mut check = Check::new();
        assert!(
            check
                .end(Bytes::from_static(
                    br#"{"jsonrpc":"2.0","id":7,"result":{"_meta":{},"_meta":{}}}"#
                ))
                .is_ok()
        );
    }

    /// A result with a member the fill puts at its front, in any spelling,
    /// is refused with or without an identity to stamp; one nested deeper,
    /// or one the fill does not add, goes on.
    #[test]
    fn a_result_with_a_member_the_fill_adds_is_refused() {
        let frame = |result: &str| {
            Frame::parse(
                Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#)),
                false,
            )
            .unwrap()
        };
        let stamp = stamp();
        for with in [None, Some(&stamp)] {
            for (result, fill, refused) in [
                (r#"{"resultType":"task"}"#, Fill::Complete, true),
                (r#"{"a":1,"\u0072esultType":"x"}"#, Fill::Complete, true),
                (r#"{"ttlMs":1}"#, Fill::Cacheable, true),
                (r#"{"cacheScope":"public","a":[]}"#, Fill::Cacheable, true),
                (r#"{"ttlMs":1}"#, Fill::Complete, false),
                (
                    r#"{"a":{"resultType":1},"b":"resultType"}"#,
                    Fill::Complete,
                    false,
                ),
                (r#"{"resultType":"complete"}"#, Fill::None, false),
            ] {
                let r = answer(&frame(result), b"3", fill, with);
                assert_eq!(r.is_err(), refused, "{result} {fill:?} {}", with.is_some());
                if let Ok(m) = r {
                    let v: Value = serde_json::from_slice(&m.into_bytes()).unwrap();
                    assert_eq!(v["id"], 3, "{v}");
                }
            }
        }
    }

    #[test]
    fn a_child_without_an_object_server_info_is_not_stamped() {
        assert!(Stamp::of_initialize(br#"{"serverInfo":"x"}"#, MAX).is_none());
        // Past the cap: its name and version only; without them, nothing.
        let icon = "A".repeat(MAX);
        let big = format!(
            r#"{{"serverInfo":{{"name":"n\u00e9","version":"1","icons":[{{"src":"data:image/png;base64,{icon}"}}]}}}}"#
        );
        let stamp = Stamp::of_initialize(big.as_bytes(), MAX).expect("a stamp");
        assert_eq!(
            std::str::from_utf8(stamp.member()).unwrap(),
            "\"io.modelcontextprotocol/serverInfo\":{\"name\":\"n\u{e9}\",\"version\":\"1\"}"
        );
        let nameless = format!(r#"{{"serverInfo":{{"version":"1","d":"{icon}"}}}}"#);
        assert!(Stamp::of_initialize(nameless.as_bytes(), MAX).is_none());
        assert!(Stamp::of_initialize(br#"{"capabilities":{}}"#, MAX).is_none());
        // The cap is the flag's: a small one shortens a small serverInfo,
        // and one too small for the name and version leaves it out.
        let info = br#"{"serverInfo":{"name":"s","version":"1","title":"A server"}}"#;
        let whole = Stamp::of_initialize(info, 64).expect("a stamp");
        assert!(
            std::str::from_utf8(whole.member())
                .unwrap()
                .contains("title")
        );
        let short = Stamp::of_initialize(info, 40).expect("a stamp");
        assert_eq!(
            std::str::from_utf8(short.member()).unwrap(),
            "\"io.modelcontextprotocol/serverInfo\":{\"name\":\"s\",\"version\":\"1\"}"
        );
        assert!(Stamp::of_initialize(info, 10).is_none());
    }

    /// Regression (review): a `serverInfo` that serde_json (rmcp, and
    /// every Rust client) cannot read, with a number past a double
    /// (`1e400`), a lone surrogate or nesting past its limit, went into
    /// every result as written, so that results the child wrote cleanly
    /// (and those the proxy makes) became unreadable to such clients. It
    /// now goes as its name and version when those read, else not at all.
    #[test]
    fn a_server_info_no_parser_of_every_client_reads_is_not_copied_into_results() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for (info, want) in [
            (
                r#"{"name":"s","version":"1","x":1e400}"#.to_string(),
                Some(r#"{"name":"s","version":"1"}"#),
            ),
            (
                format!(r#"{{"name":"s","version":"1","x":{deep}}}"#),
                Some(r#"{"name":"s","version":"1"}"#),
            ),
            (
                r#"{"name":"s","version":"1","title":"\ud800"}"#.to_string(),
                Some(r#"{"name":"s","version":"1"}"#),
            ),
            (r#"{"name":"s\udc00","version":"1"}"#.to_string(), None),
        ] {
            let init = format!(r#"{{"protocolVersion":"2025-11-25","serverInfo":{info}}}"#);
            let stamp = Stamp::of_initialize(init.as_bytes(), MAX);
            let member = stamp
                .as_ref()
                .map(|s| std::str::from_utf8(s.member()).unwrap().to_string());
            let want = want.map(|w| format!(r#""{SERVER_INFO_KEY}":{w}"#));
            assert_eq!(member, want, "{info}");
            if let Some(stamp) = stamp {
                let result = stamp.into_result(b"{}");
                assert!(
                    serde_json::from_slice::<Value>(&result).is_ok(),
                    "{}",
                    String::from_utf8_lossy(&result)
                );
            }
        }
    }

    #[test]
    fn results_the_proxy_makes_get_a_meta_at_their_front() {
        let s = stamp();
        assert_eq!(
            String::from_utf8(s.into_result(br#"{"resultType":"input_required"}"#)).unwrap(),
            r#"{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}},"resultType":"input_required"}"#
        );
        assert_eq!(
            String::from_utf8(s.into_result(b"{}")).unwrap(),
            r#"{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}}}"#
        );
    }
}
