//! `Frame::parse` on arbitrary bytes, strict (client input) and lenient
//! (child output), and every rewrite the proxy makes of an accepted frame.
//!
//! Oracles:
//! - a frame is only accepted when serde_json reads the same bytes as JSON
//!   (`IgnoredAny`: no depth limit, numbers not converted, as the proxy);
//!   a client's (strict) frame also reads as a `serde_json::Value` object,
//!   as a Rust server reads it, and differs from the input only where a
//!   lone surrogate was replaced in place;
//! - what the proxy writes on (`to_line`, `with_id`, `answer`,
//!   `with_params`, `with_meta_member`, `with_replaced`) is JSON again,
//!   parses as a frame of the same kind, and carries the id put in;
//! - `locate`, and `Frame::locate_in_params`, agree with serde_json
//!   reading the object into a map (last copy of a key wins), `contains`
//!   with a naive window search;
//! - `result_head`, `trailing_id` and `edge_id` point at the frame's own
//!   `id` and `result`, as `locate` finds them.
#![no_main]

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::jsonrpc::{self, Frame, Kind};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The reference for `locate`: each level read into a map by serde_json.
fn reference_locate(json: &[u8], path: &[&str]) -> Option<Range<usize>> {
    let mut range = 0..json.len();
    for key in path {
        let level = &json[range.clone()];
        let map: BTreeMap<String, &RawValue> = serde_json::from_slice(level).ok()?;
        let value = map.get(*key)?.get();
        let start = value.as_ptr() as usize - json.as_ptr() as usize;
        range = start..start + value.len();
    }
    Some(range)
}

/// A rewrite the proxy makes: JSON, a frame again, of the same kind.
fn reparse(what: &str, bytes: &[u8], kind: Kind, strict: bool) -> Frame {
    assert!(is_json(bytes), "{what} wrote non-JSON: {:?}", show(bytes));
    let again = Frame::parse(Bytes::copy_from_slice(bytes), strict)
        .unwrap_or_else(|e| panic!("{what} wrote a non-frame ({e}): {:?}", show(bytes)));
    assert_eq!(again.kind(), kind, "{what}: {:?}", show(bytes));
    again
}

const PATHS: [&[&str]; 5] = [
    &["_meta", "progressToken"],
    &["name"],
    &["task", "ttl"],
    &["a/b"],
    &["_meta"],
];

fuzz_target!(|data: &[u8]| {
    // `contains` against a window search, needles taken from the input.
    for len in 1..=data.len().min(4) {
        let needle = &data[..len];
        let hay = &data[len..];
        assert_eq!(
            jsonrpc::contains(hay, needle),
            hay.windows(len).any(|w| w == needle),
            "contains({:?}, {:?})",
            show(hay),
            show(needle)
        );
    }
    // `locate` reads text a frame holds, UTF-8 (values it skips are not
    // checked for it).
    for path in PATHS.iter().filter(|_| std::str::from_utf8(data).is_ok()) {
        assert_eq!(
            jsonrpc::locate(data, path),
            reference_locate(data, path),
            "locate {path:?} in {:?}",
            show(data)
        );
    }

    for strict in [true, false] {
        let Ok(frame) = Frame::parse(Bytes::copy_from_slice(data), strict) else {
            continue;
        };
        let kind = frame.kind();
        // A lenient parse of an answer with both members rebuilds it.
        let rebuilt = frame.bytes()[..] != *data;
        assert!(
            is_json(data) && std::str::from_utf8(data).is_ok(),
            "accepted non-JSON or non-UTF-8 {:?}",
            show(data)
        );
        // A client's frame is one every serde_json server reads (a JSON
        // object, its lone surrogates replaced in place, nothing else).
        if strict {
            assert!(
                serde_json::from_slice::<serde_json::Value>(frame.bytes())
                    .is_ok_and(|v| v.is_object()),
                "a client's frame a serde_json server cannot read: {:?}",
                show(frame.bytes())
            );
            if rebuilt {
                assert_eq!(frame.bytes().len(), data.len(), "repaired in place");
                let changed = frame
                    .bytes()
                    .iter()
                    .zip(data)
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(changed > 0 && changed <= 4 * data.len() / 6);
                assert!(
                    serde_json::from_slice::<serde_json::Value>(data).is_err(),
                    "strict parse rebuilt what serde_json reads {:?}",
                    show(data)
                );
            }
        }

        // `locate_in_params` (a byte walk when the params hold no escape,
        // the parse otherwise) finds what the reference finds in them.
        if let Some(params) = frame.params_range() {
            for path in PATHS {
                let expected = reference_locate(&frame.bytes()[params.clone()], path)
                    .map(|r| params.start + r.start..params.start + r.end);
                assert_eq!(
                    frame.locate_in_params(path),
                    expected,
                    "locate_in_params {path:?} in {:?}",
                    show(frame.bytes())
                );
            }
        }

        let line = frame.to_line();
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        assert!(
            !body.contains(&b'\n'),
            "a line with a newline: {:?}",
            show(&line)
        );
        let again = reparse("to_line", body, kind, strict);
        assert_eq!(again.id(), frame.id());
        assert_eq!(again.method(), frame.method());

        // The id read back is the id put in.
        if frame.id().is_some() {
            for id in [&b"12345678901234567890"[..], br#""c-\u00e9\"x""#, b"-1.5e3"] {
                let with = frame.with_id(id);
                let again = reparse("with_id", with.bytes(), kind, strict);
                assert_eq!(again.id(), Some(id));
                assert_eq!(again.params(), frame.params());
                assert_eq!(again.method(), frame.method());
                assert!(jsonrpc::id_key(id).is_some());
            }
        }
        if kind == Kind::Response {
            let fields: &[u8] = br#""resultType":"complete","ttlMs":0"#;
            for fields in [None, Some(fields)] {
                let out = frame.answer(br#""c-1""#, fields).into_bytes();
                let again = reparse("answer", &out, kind, strict);
                assert_eq!(again.id(), Some(&br#""c-1""#[..]));
            }
            let filled = frame.with_result_fields(fields);
            reparse("with_result_fields", filled.bytes(), kind, strict);
        }

        // Params replaced, or added, or a `_meta` member put in.
        let with = frame.with_params(br#"{"x":[1,2]}"#);
        let again = reparse("with_params", with.bytes(), kind, strict);
        assert_eq!(again.params(), Some(&br#"{"x":[1,2]}"#[..]));
        assert_eq!(with.params(), again.params());
        assert_eq!(again.id(), frame.id());

        let member: &[u8] = br#""io.x/k":{"n":7}"#;
        let with = frame.with_meta_member(member);
        let again = reparse("with_meta_member", with.bytes(), kind, strict);
        assert_eq!(again.id(), frame.id());
        // The member is there unless params or `_meta` is not an object.
        let object = |r: Option<Range<usize>>| {
            r.is_none_or(|r| {
                frame.bytes()[r].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            })
        };
        if object(frame.params_range()) && object(frame.locate_in_params(&["_meta"])) {
            let at = again.locate_in_params(&["_meta", "io.x/k", "n"]);
            assert_eq!(
                at.map(|r| &again.bytes()[r]),
                Some(&b"7"[..]),
                "with_meta_member lost its member: {:?}",
                show(with.bytes())
            );
            // `meta` builds `_meta` into a tree: it reads the member
            // wherever serde_json can read the whole message into one.
            if serde_json::from_slice::<serde_json::Value>(with.bytes()).is_ok() {
                assert_eq!(
                    again.meta("io.x/k"),
                    Some(serde_json::json!({ "n": 7 })),
                    "meta misses the member in {:?}",
                    show(with.bytes())
                );
            }
        } else {
            assert_eq!(with.bytes(), frame.bytes());
        }

        // Every value `locate_in_params` finds can be replaced in place.
        for path in PATHS {
            let Some(at) = frame.locate_in_params(path) else {
                continue;
            };
            assert!(is_json(&frame.bytes()[at.clone()]));
            let params = frame.params_range().expect("located in params");
            assert_eq!(
                Some(at.start - params.start..at.end - params.start),
                reference_locate(&frame.bytes()[params.clone()], path)
            );
            let with = frame.with_replaced(at, b"\"tok\"");
            let again = reparse("with_replaced", with.bytes(), kind, strict);
            assert_eq!(
                again.locate_in_params(path).map(|r| &again.bytes()[r]),
                Some(&b"\"tok\""[..])
            );
            assert_eq!(again.id(), frame.id());
        }

        // What the long-answer path reads off a head or an end is the
        // frame's own id and result.
        let bytes = frame.bytes();
        if !rebuilt && kind == Kind::Response {
            let id_at = jsonrpc::locate(bytes, &["id"]);
            let result_at = jsonrpc::locate(bytes, &["result"]);
            for cut in [bytes.len(), bytes.len() / 2, bytes.len() / 3] {
                let head = &bytes[..cut];
                if let Some(at) = jsonrpc::result_head(head) {
                    assert_eq!(
                        Some(at.result),
                        result_at.clone().map(|r| r.start),
                        "result_head's result in {:?}",
                        show(bytes)
                    );
                    if let Some(id) = at.id {
                        assert_eq!(
                            Some(id),
                            id_at.clone(),
                            "result_head's id in {:?}",
                            show(bytes)
                        );
                    }
                }
                let end = &bytes[bytes.len() - cut..];
                if let Some(id) = jsonrpc::trailing_id(end) {
                    let base = bytes.len() - cut;
                    assert_eq!(
                        Some(base + id.start..base + id.end),
                        id_at.clone(),
                        "trailing_id in {:?}",
                        show(bytes)
                    );
                }
            }
            if let Some(n) = jsonrpc::edge_id(
                &bytes[..bytes.len().min(64)],
                &bytes[bytes.len().saturating_sub(64)..],
            ) {
                assert_eq!(
                    frame.id(),
                    Some(n.to_string().as_bytes()),
                    "edge_id in {:?}",
                    show(bytes)
                );
            }
        }
    }
});
