//! The 2026-07-28 `Mcp-Param-*` check (`ToolHeaders::check`) on a learned
//! tool with one annotated argument, for an arbitrary argument value and
//! arbitrary header values. Oracles, against a reference decoder written
//! here from the spec's rules:
//! - an accepted call's header decodes (plain, or `=?base64?…?=`) to the
//!   text of the body's value, and a repeated or absent header is never
//!   accepted where the body has a value;
//! - the header a client builds for a value (base64 of its text, or the
//!   text as it is when it is plain visible ASCII) is accepted.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::http::tool_headers::ToolHeaders;
use mcp_sidecar::jsonrpc::Frame;
use serde_json::Value;

const HEADER: &str = "mcp-param-region";

fn table() -> &'static ToolHeaders {
    static T: OnceLock<ToolHeaders> = OnceLock::new();
    T.get_or_init(|| {
        let t = ToolHeaders::default();
        let list = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"t","inputSchema":{"type":"object","properties":{"region":{"x-mcp-header":"Region"}}}}]}}"#;
        t.learn(&Bytes::from_static(list).into());
        t
    })
}

/// The spec's decoding: visible ASCII, trimmed, base64 inside the sentinel.
fn reference_decode(v: &HeaderValue) -> Option<String> {
    let t = v.to_str().ok()?.trim_matches([' ', '\t']);
    match t
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        None => Some(t.to_string()),
        Some(inner) => {
            let inner = inner.trim_end_matches('=');
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(inner)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
    }
}

fn reference_same(text: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => s == text,
        Value::Bool(b) => text == b.to_string(),
        Value::Number(n) => {
            let Some(b) = n.as_f64() else { return false };
            let Ok(h) = text.parse::<f64>() else {
                return false;
            };
            let exact = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            match exact {
                Some(i) if i.unsigned_abs() >= 1 << 53 => text.parse::<i128>() == Ok(i),
                _ => h.is_finite() && h == b,
            }
        }
        _ => false,
    }
}

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>)| {
    let (arg, values) = input;
    // One JSON value, so that the call has exactly one `region`.
    if serde_json::from_slice::<&serde_json::value::RawValue>(&arg).is_err() {
        return;
    }
    let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"region":"#.to_vec();
    body.extend_from_slice(&arg);
    body.extend_from_slice(b"}}}");
    let Ok(call) = Frame::parse(Bytes::from(body), true) else {
        return;
    };
    let value = serde_json::from_slice::<Value>(&arg).ok();
    let t = table();

    // Arbitrary headers: accepted only when they say what the body says.
    let mut headers = HeaderMap::new();
    for v in &values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(HEADER, v);
        }
    }
    if t.check(&headers, &call).is_ok() {
        let sent: Vec<_> = headers.get_all(HEADER).iter().collect();
        match value.as_ref().filter(|v| !v.is_null()) {
            None => assert!(
                sent.is_empty() && (value.is_some() || arg.trim_ascii() == b"null"),
                "accepted {sent:?} for a body value {:?}",
                String::from_utf8_lossy(&arg)
            ),
            Some(body) => {
                assert_eq!(sent.len(), 1, "accepted {sent:?} for {body}");
                let text = reference_decode(sent[0]);
                assert!(
                    text.as_deref().is_some_and(|t| reference_same(t, body)),
                    "accepted {:?} (decoded {text:?}) for {body}",
                    sent[0]
                );
            }
        }
    }

    // The headers a client builds for the value are accepted.
    let built: Vec<String> = match &value {
        Some(Value::String(s)) => {
            let mut v = vec![format!(
                "=?base64?{}?=",
                base64::engine::general_purpose::STANDARD.encode(s)
            )];
            let plain = s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                && s.trim() == s
                && !s.is_empty()
                && !s.starts_with("=?base64?");
            if plain {
                v.push(s.clone());
            }
            v
        }
        Some(Value::Bool(b)) => vec![b.to_string()],
        Some(Value::Number(n)) => vec![n.to_string()],
        _ => vec![],
    };
    for h in built {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(&h).expect("visible ASCII"));
        let r = t.check(&headers, &call);
        assert!(
            r.is_ok(),
            "built header {h:?} for {:?} refused: {r:?}",
            String::from_utf8_lossy(&arg)
        );
    }
});
