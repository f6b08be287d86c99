//! `TraceContext::from_headers` and `apply` on arbitrary `traceparent` /
//! `tracestate` header lines and an arbitrary message. Oracles:
//! - a context is made exactly when there is one `traceparent` and it
//!   matches the W3C level 1 grammar (reference check below, written
//!   from the text: version `00` is exactly 55 characters, a later
//!   version may go on after a `-`, version `ff` and all-zero ids are
//!   invalid);
//! - what is carried is the first 55 characters, and the `tracestate`
//!   as the README says (lines joined by commas, printable ASCII, at most
//!   512 bytes, else dropped);
//! - the message it is applied to is still JSON, with the context in its
//!   `params._meta` (a request or notification whose `params` and `_meta`
//!   are objects, or absent, without its own `traceparent`), and nothing
//!   else changed.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::jsonrpc::Frame;
use mcp_sidecar::trace::TraceContext;
use serde_json::{Map, Value};

fn lower_hex(s: &[u8]) -> bool {
    s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// W3C Trace Context level 1, `traceparent`, as a receiver parses it.
fn reference_traceparent(v: &str) -> Option<&str> {
    let b = v.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    let ok = dashes
        && lower_hex(version)
        && version != b"ff"
        && lower_hex(trace_id)
        && trace_id.iter().any(|&c| c != b'0')
        && lower_hex(parent_id)
        && parent_id.iter().any(|&c| c != b'0')
        && lower_hex(flags);
    let rest_ok = if version == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || b[55] == b'-'
    };
    (ok && rest_ok).then(|| &v[..55])
}

fn reference_tracestate(headers: &HeaderMap) -> Option<String> {
    let mut parts = Vec::new();
    for v in headers.get_all("tracestate") {
        let s = v.to_str().ok()?.trim();
        if !s.is_empty() {
            parts.push(s);
        }
    }
    let joined = parts.join(",");
    (!joined.is_empty() && joined.len() <= 512 && joined.bytes().all(|c| (0x20..0x7f).contains(&c)))
        .then_some(joined)
}

fuzz_target!(|input: (
    Vec<Vec<u8>>,
    Vec<Vec<u8>>,
    Option<(u8, [u8; 16], [u8; 8], u8, Vec<u8>)>,
    Vec<u8>
)| {
    let (parents, states, built, msg) = input;
    let mut headers = HeaderMap::new();
    if let Some((version, trace_id, parent_id, flags, tail)) = built {
        // A well-formed start, so that the fuzzer reaches past the grammar.
        let mut v = format!("{version:02x}-");
        v.extend(trace_id.iter().map(|b| format!("{b:02x}")));
        v.push('-');
        v.extend(parent_id.iter().map(|b| format!("{b:02x}")));
        v.push_str(&format!("-{flags:02x}"));
        let mut v = v.into_bytes();
        v.extend_from_slice(&tail);
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            headers.append("traceparent", v);
        }
    }
    for p in &parents {
        if let Ok(v) = HeaderValue::from_bytes(p) {
            headers.append("traceparent", v);
        }
    }
    for s in &states {
        if let Ok(v) = HeaderValue::from_bytes(s) {
            headers.append("tracestate", v);
        }
    }
    let all: Vec<_> = headers.get_all("traceparent").iter().collect();
    let expected_parent = match all.as_slice() {
        [one] => one
            .to_str()
            .ok()
            .and_then(|s| reference_traceparent(s.trim())),
        _ => None,
    };
    let ctx = TraceContext::from_headers(&headers);
    assert_eq!(
        ctx.is_some(),
        expected_parent.is_some(),
        "traceparent {all:?}: context {ctx:?}"
    );
    let Some(ctx) = ctx else { return };
    let mut want = Map::new();
    want.insert("traceparent".into(), Value::from(expected_parent.unwrap()));
    if let Some(state) = reference_tracestate(&headers) {
        want.insert("tracestate".into(), Value::from(state));
    }

    let Ok(frame) = Frame::parse(Bytes::from(msg.clone()), true) else {
        return;
    };
    let out = ctx.apply(frame);
    let line = out.to_line();
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    assert!(
        serde_json::from_slice::<&serde_json::value::RawValue>(text).is_ok(),
        "not JSON after the trace context: {:?}",
        String::from_utf8_lossy(text)
    );
    // Compare as trees where the message has one (no 1e400, no deep nesting).
    let (Ok(before), Ok(after)) = (
        serde_json::from_slice::<Value>(&msg),
        serde_json::from_slice::<Value>(text),
    ) else {
        return;
    };
    let is_call = before.get("method").is_some_and(Value::is_string)
        && before.get("result").is_none()
        && before.get("error").is_none();
    let params = before.get("params");
    let meta = params.and_then(|p| p.get("_meta"));
    let takes = is_call
        && params.is_none_or(Value::is_object)
        && meta.is_none_or(Value::is_object)
        && meta.and_then(|m| m.get("traceparent")).is_none();
    if !takes {
        // Frame::parse decides the kind; only check what the reference is sure of.
        if !is_call || meta.is_some_and(|m| m.get("traceparent").is_some()) {
            assert_eq!(before, after, "a message that takes no context was changed");
        }
        return;
    }
    let mut expected = before.clone();
    let obj = expected.as_object_mut().unwrap();
    let params = obj
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .unwrap();
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .unwrap();
    for (k, v) in want {
        meta.insert(k, v);
    }
    assert_eq!(after, expected, "the context did not land as it should");
});
