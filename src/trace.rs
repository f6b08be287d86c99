//! W3C trace context into the child: the `traceparent` (and `tracestate`)
//! header of an HTTP request is copied into `params._meta` of each request
//! and notification it carries, the place MCP servers read it from, so a
//! trace continues into the server.
//!
//! Only well-formed values are carried (W3C Trace Context, level 1), and a
//! message that already names a `traceparent` or a `tracestate` in its
//! `_meta` keeps its own: the client's in-band context is the more
//! specific one. The message is
//! edited by byte splices, like every other rewrite (`crate::jsonrpc`).

use std::ops::Range;

use http::HeaderMap;

use crate::jsonrpc::{Frame, Kind};

/// A `traceparent`'s version, trace-id, parent-id and flags, with their
/// dashes: what is carried of it.
const TRACEPARENT_LEN: usize = 55;

/// `tracestate` longer than this is dropped (512 bytes is what every
/// implementation must pass on).
const MAX_TRACESTATE: usize = 512;

/// The trace context of one HTTP request, as JSON members ready to splice
/// into a `_meta` object (`"traceparent":"00-…"[,"tracestate":"…"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    members: Vec<u8>,
}

impl TraceContext {
    /// The request's trace context, if its `traceparent` is well formed.
    /// A `tracestate` without a valid `traceparent` means nothing and is
    /// dropped, as the W3C text says.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let mut all = headers.get_all("traceparent").iter();
        let parent = all.next()?.to_str().ok()?.trim();
        if all.next().is_some() || !valid_traceparent(parent) {
            return None;
        }
        // Only the fields level 1 defines go on, as the W3C text parses a
        // later version: whatever follows them is the client's to size (up
        // to the whole request head), and it would be copied into every
        // message of a batch.
        let parent = &parent[..TRACEPARENT_LEN];
        // Invariant: a valid traceparent is lowercase hex and dashes, and a
        // kept tracestate is printable ASCII: both serialise.
        let mut members = format!("\"traceparent\":{}", serde_json::to_string(parent).ok()?);
        if let Some(state) = tracestate(headers) {
            members.push_str(",\"tracestate\":");
            members.push_str(&serde_json::to_string(&state).ok()?);
        }
        Some(TraceContext {
            members: members.into_bytes(),
        })
    }

    /// `frame` with the context added to its `params._meta`. Responses,
    /// messages whose `params` or `_meta` is not an object, and messages
    /// that carry their own `traceparent` or `tracestate` are returned
    /// unchanged (one added beside the other would be a member twice, or
    /// a state of another trace).
    pub fn apply(&self, frame: Frame) -> Frame {
        if !matches!(frame.kind(), Kind::Request | Kind::Notification)
            || frame.locate_in_params(&["_meta", "traceparent"]).is_some()
            || frame.locate_in_params(&["_meta", "tracestate"]).is_some()
        {
            return frame;
        }
        frame.with_meta_member(&self.members)
    }
}

/// `frames` with the trace context of `headers`, if any, added.
pub fn carry(headers: &HeaderMap, frames: Vec<Frame>) -> Vec<Frame> {
    match TraceContext::from_headers(headers) {
        Some(ctx) => frames.into_iter().map(|f| ctx.apply(f)).collect(),
        None => frames,
    }
}

/// `version "-" trace-id "-" parent-id "-" flags`, lowercase hex; version
/// `ff`, an all-zero trace-id or parent-id are invalid. A later version may
/// append fields after a dash; version `00` may not.
fn valid_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    let hex = |r: Range<usize>| {
        b.get(r)
            .is_some_and(|s| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let nonzero = |r: Range<usize>| b[r].iter().any(|&c| c != b'0');
    b.len() >= TRACEPARENT_LEN
        && hex(0..2)
        && &b[0..2] != b"ff"
        && b[2] == b'-'
        && hex(3..35)
        && nonzero(3..35)
        && b[35] == b'-'
        && hex(36..52)
        && nonzero(36..52)
        && b[52] == b'-'
        && hex(53..55)
        && (b.len() == TRACEPARENT_LEN || (&b[0..2] != b"00" && b[TRACEPARENT_LEN] == b'-'))
}

/// Most list members a `tracestate` may have (W3C Trace Context §3.3.1.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The request's `tracestate`: its list members, from every header line,
/// joined with commas (empty members and the spaces around members left
/// out), if the list is valid W3C Trace Context (§3.3.1): each member
/// `key=value` with the key and value grammar of the text, no key twice,
/// at most [`MAX_TRACESTATE_MEMBERS`] members, and not over
/// [`MAX_TRACESTATE`] bytes. Anything else is dropped whole, as the text
/// lets a vendor do with an invalid list: carried on, it would be a
/// list the next hop must not read either.
fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for line in headers.get_all("tracestate") {
        let Ok(line) = line.to_str() else {
            return dropped("not visible ASCII");
        };
        for member in line.split(',').map(|m| m.trim_matches([' ', '\t'])) {
            if member.is_empty() {
                continue;
            }
            let Some((key, value)) = member.split_once('=') else {
                return dropped("a member without '='");
            };
            if !valid_key(key) || !valid_value(value) {
                return dropped("a key or value outside the grammar");
            }
            if members.iter().any(|(k, _)| *k == key) {
                return dropped("a key twice");
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return dropped("more than 32 members");
            }
            members.push((key, value));
        }
    }
    if members.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (key, value) in members {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    if out.len() > MAX_TRACESTATE {
        return dropped("over 512 bytes");
    }
    Some(out)
}

/// Logs why a request's `tracestate` is not carried.
fn dropped(why: &'static str) -> Option<String> {
    tracing::debug!(why, "drop a tracestate that is not valid W3C trace context");
    None
}

/// `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`,
/// or `tenant-id "@" system-id`: a tenant of 1 to 241 of those characters
/// starting with `lcalpha` or a digit, a system of 1 to 14 starting with
/// `lcalpha`.
fn valid_key(key: &str) -> bool {
    let rest = |s: &[u8]| {
        s.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    let b = key.as_bytes();
    match key.split_once('@') {
        None => (1..=256).contains(&b.len()) && b[0].is_ascii_lowercase() && rest(b),
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && rest(t)
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && rest(s)
        }
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 characters of 0x20-0x7E but
/// `,` and `=`, the last not a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{Value, json};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn apply(ctx: &TraceContext, msg: &str) -> Value {
        let frame = Frame::parse(Bytes::copy_from_slice(msg.as_bytes()), true).unwrap();
        let out = ctx.apply(frame);
        // The spliced frame's own ranges must still be right.
        let params = out
            .params()
            .map(|p| serde_json::from_slice::<Value>(p).unwrap());
        let whole: Value = serde_json::from_slice(out.bytes()).unwrap();
        assert_eq!(params.as_ref(), whole.get("params"));
        whole
    }

    #[test]
    fn only_well_formed_traceparents_are_carried() {
        assert!(valid_traceparent(PARENT));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd"
        ));
        assert!(TraceContext::from_headers(&headers(&[("traceparent", "nope")])).is_none());
        assert!(TraceContext::from_headers(&headers(&[("tracestate", "a=b")])).is_none());
        let twice = headers(&[("traceparent", PARENT), ("traceparent", PARENT)]);
        assert!(TraceContext::from_headers(&twice).is_none());
    }

    #[test]
    fn the_context_lands_in_meta_whatever_the_params_look_like() {
        let ctx = TraceContext::from_headers(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        let want =
            json!({"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"});

        let v = apply(&ctx, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(v["params"]["_meta"], want);

        let v = apply(
            &ctx,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{ }}"#,
        );
        assert_eq!(v["params"], json!({"_meta": want}));

        let v = apply(
            &ctx,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"n":[[1]]}}}"#,
        );
        assert_eq!(v["params"]["_meta"], want);
        assert_eq!(v["params"]["arguments"]["n"], json!([[1]]));

        // A value no parser can hold passes through untouched.
        let huge =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"n":1e400}}}"#;
        // Refused from a client since `jsonrpc::portable` (lenient here).
        let frame = Frame::parse(Bytes::from_static(huge.as_bytes()), false).unwrap();
        let out = ctx.apply(frame);
        let text = std::str::from_utf8(out.bytes()).unwrap();
        assert!(text.contains(r#""arguments":{"n":1e400}"#), "{text}");
        assert!(text.contains(PARENT), "{text}");

        let v = apply(
            &ctx,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"_meta":{"progressToken":7},"progress":1}}"#,
        );
        assert_eq!(v["params"]["_meta"]["progressToken"], 7);
        assert_eq!(v["params"]["_meta"]["traceparent"], PARENT);
        assert_eq!(v["params"]["progress"], 1);

        let v = apply(
            &ctx,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{}}}"#,
        );
        assert_eq!(v["params"]["_meta"], want);
    }

    #[test]
    fn the_clients_own_context_and_odd_shapes_are_left_alone() {
        let ctx = TraceContext::from_headers(&headers(&[("traceparent", PARENT)])).unwrap();
        for msg in [
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"mine"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":"odd"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ] {
            let frame = Frame::parse(Bytes::copy_from_slice(msg.as_bytes()), true).unwrap();
            assert_eq!(ctx.apply(frame).bytes().as_ref(), msg.as_bytes(), "{msg}");
        }
    }

    /// Regression (review): a message whose `_meta` had a `tracestate` of
    /// its own but no `traceparent` got the request's context put in
    /// front of it: `tracestate` twice in one object (parsers differ on
    /// which they keep; a derive refuses the message), or the request's
    /// `traceparent` beside a state of another trace. A message that names
    /// either keeps its own context.
    #[test]
    fn a_message_with_a_tracestate_of_its_own_is_left_alone() {
        for pairs in [
            &[("traceparent", PARENT), ("tracestate", "rojo=1")][..],
            &[("traceparent", PARENT)],
        ] {
            let ctx = TraceContext::from_headers(&headers(pairs)).unwrap();
            for msg in [
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"tracestate":"mine=1"}}}"#,
                r#"{"jsonrpc":"2.0","method":"n","params":{"_meta":{"k":1,"tr\u0061cestate":"mine=1"}}}"#,
            ] {
                let frame = Frame::parse(Bytes::copy_from_slice(msg.as_bytes()), true).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(ctx.apply(frame).bytes()),
                    msg,
                    "{pairs:?}"
                );
            }
        }
    }

    /// Regression (review): only the characters of `tracestate` were
    /// checked, so a list W3C Trace Context calls invalid (a member without
    /// `=`, an uppercase key, a key twice, 33 members) was carried into the
    /// child's `_meta` as if it were one.
    #[test]
    fn only_a_valid_tracestate_list_is_carried() {
        let carried = |lines: &[&str]| {
            let mut pairs = vec![("traceparent", PARENT)];
            pairs.extend(lines.iter().map(|l| ("tracestate", *l)));
            let ctx = TraceContext::from_headers(&headers(&pairs)).unwrap();
            let v = apply(&ctx, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            assert_eq!(v["params"]["_meta"]["traceparent"], PARENT);
            v["params"]["_meta"]["tracestate"]
                .as_str()
                .map(str::to_string)
        };
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for bad in [
            "novalue",
            "Upper=1",
            "1key=1",
            "k=",
            "k=a=b",
            "=v",
            "a=1,a=2",
            "t@sys=1,t@sys=2",
            "t@=1",
            "@s=1",
            "t@1sys=1",
            "t@systemnameistoolong=1",
            &many(33),
            &format!("{}=1", "k".repeat(257)),
            &format!("k={}", "v".repeat(257)),
        ] {
            assert_eq!(carried(&[bad]), None, "{bad:?}");
        }
        assert_eq!(carried(&["a=1", "a=2"]), None, "a key twice across lines");
        for (lines, want) in [
            (&["rojo=00f067aa0ba902b7"][..], "rojo=00f067aa0ba902b7"),
            (&["a=1 , ,\tb=x y", ""], "a=1,b=x y"),
            (
                &["1tenant@sys-1=v", "a_b-c*d/e=!~"],
                "1tenant@sys-1=v,a_b-c*d/e=!~",
            ),
            (&["k= leading"], "k= leading"),
        ] {
            assert_eq!(carried(lines).as_deref(), Some(want), "{lines:?}");
        }
        assert_eq!(carried(&[&many(32)]), Some(many(32)));
        assert_eq!(carried(&[",, ,"]), None);
    }

    #[test]
    fn an_unusable_tracestate_is_dropped_but_the_parent_kept() {
        let long = format!("a={}", "b".repeat(MAX_TRACESTATE));
        let ctx =
            TraceContext::from_headers(&headers(&[("traceparent", PARENT), ("tracestate", &long)]))
                .unwrap();
        let v = apply(&ctx, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(v["params"]["_meta"], json!({"traceparent": PARENT}));
    }
}
