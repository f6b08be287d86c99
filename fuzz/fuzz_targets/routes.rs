//! The id and progress-token rewriting of `upstream::routes`.
//!
//! Oracles:
//! - two client ids whose matching keys (`client_key`, `jsonrpc::id_key`)
//!   are equal are the same JSON value (strings by their decoded text,
//!   numbers by exact decimal value): two different ids never collide;
//! - a child's id that `parse_proxy_id` reads as `n` is the number `n`
//!   exactly (never a string), and every proxy id reads back as itself;
//! - a progress token rewritten to the proxy id and mapped back (as the
//!   child's progress notification is) gives the client's exact bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::fuzzing::{client_id_key, parse_proxy_id, rewrite_progress_token};
use mcp_sidecar::jsonrpc::Frame;
use serde_json::value::RawValue;

/// What an id is, for comparison: a decoded string, the raw text of a
/// string serde_json cannot decode (a lone surrogate), or a number as
/// (negative, digits without leading or trailing zeros, exponent).
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Str(String),
    Raw(Vec<u8>),
    Num(bool, Vec<u8>, i128),
}

fn value(raw: &[u8]) -> Option<Value> {
    match raw.first()? {
        b'"' => Some(match serde_json::from_slice::<String>(raw) {
            Ok(s) => Value::Str(s),
            Err(_) => Value::Raw(raw.to_vec()),
        }),
        _ => number(raw),
    }
}

fn number(raw: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(raw).ok()?;
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, exp) = match text.find(['e', 'E']) {
        // An exponent past i128 is left out of the comparison, unless
        // the number is zero.
        Some(i) => (&text[..i], text[i + 1..].parse::<i128>().unwrap_or(0)),
        None => (text, 0),
    };
    let huge = text
        .find(['e', 'E'])
        .is_some_and(|i| text[i + 1..].parse::<i128>().is_err());
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let mut exp = exp - frac.len() as i128;
    let lead = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..lead);
    while digits.last() == Some(&b'0') {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        return Some(Value::Num(false, Vec::new(), 0));
    }
    if huge {
        return None;
    }
    Some(Value::Num(neg, digits, exp))
}

/// An id a client may send: a JSON string or number, as `Frame::parse`
/// takes it.
fn id(raw: &[u8]) -> Option<&[u8]> {
    let v: &RawValue = serde_json::from_slice(raw).ok()?;
    matches!(v.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9').then_some(v.get().as_bytes())
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    // Two ids, split at the first NUL.
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if let (Some(a), Some(b)) = (id(a), id(b))
        && client_id_key(a) == client_id_key(b)
        && value(a).is_some()
        && value(b).is_some()
    {
        assert_eq!(
            value(a),
            value(b),
            "ids {:?} and {:?} collide",
            show(a),
            show(b)
        );
    }
    for raw in [a, b] {
        let Some(raw) = id(raw) else { continue };
        // The proxy writes its ids as numbers: a string is another id.
        if raw[0] == b'"' {
            assert_eq!(parse_proxy_id(raw), None, "child's id {:?}", show(raw));
        }
        if raw[0] != b'"'
            && number(raw).is_some()
            && let Some(n) = parse_proxy_id(raw)
        {
            assert_eq!(
                number(raw),
                number(n.to_string().as_bytes()),
                "child's id {:?} read as {n}",
                show(raw)
            );
        }
    }
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        assert_eq!(parse_proxy_id(n.to_string().as_bytes()), Some(n));
    }

    // A client's request with this progress token, rewritten, then the
    // child's progress notification mapped back.
    let Ok(frame) = Frame::parse(Bytes::copy_from_slice(data), true) else {
        return;
    };
    let proxy_id = 4_000_000_007;
    let before = frame.locate_in_params(&["_meta", "progressToken"]);
    let original = before.clone().map(|r| frame.bytes()[r].to_vec());
    let (rewritten, token) = rewrite_progress_token(frame, proxy_id);
    assert_eq!(token.as_deref(), original.as_deref());
    let Some(token) = token else {
        return;
    };
    assert!(serde_json::from_slice::<serde::de::IgnoredAny>(rewritten.bytes()).is_ok());
    let at = rewritten
        .locate_in_params(&["_meta", "progressToken"])
        .expect("the token is where it was");
    let seen = &rewritten.bytes()[at];
    assert_eq!(parse_proxy_id(seen), Some(proxy_id));
    let progress = Frame::parse(
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":1}}}}"#,
            String::from_utf8_lossy(seen)
        )),
        false,
    )
    .expect("a progress notification");
    let at = progress
        .locate_in_params(&["progressToken"])
        .expect("its token");
    assert_eq!(
        parse_proxy_id(&progress.bytes()[at.clone()]),
        Some(proxy_id)
    );
    let back = progress.with_replaced(at, &token);
    let at = back
        .locate_in_params(&["progressToken"])
        .expect("its token");
    assert_eq!(&back.bytes()[at], &token[..]);
});
