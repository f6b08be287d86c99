//! The small parsers of the HTTP edge on arbitrary text: protocol
//! revisions (`version`), `Last-Event-ID` (`sse::parse_event_id`), the
//! legacy `sessionId` query, `X-Forwarded-Prefix` in the legacy `endpoint`
//! event, and the Origin and Host checks (`auth::access`). Oracles:
//! - `is_date` is the `YYYY-MM-DD` shape, `at_least` compares only dates,
//!   every served revision is a date;
//! - an event id the outlet writes parses back to its numbers, and an
//!   accepted one has the outlet's shape (digits `-` digits);
//! - the endpoint with the kept prefix, resolved by a WHATWG URL parser
//!   (the `url` crate, as browsers and Node resolve it) against the SSE
//!   URL, stays on the proxy's origin, starts with the prefix, and
//!   carries the session id;
//! - an Origin accepted as loopback is a serialized origin (RFC 6454) whose
//!   host is loopback, and a Host accepted as loopback names a loopback
//!   host.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::auth::access::Access;
use mcp_sidecar::fuzzing;
use mcp_sidecar::sse::parse_event_id;
use mcp_sidecar::version;

fn loopback_host(h: &url::Host<&str>) -> bool {
    match h {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fuzz_target!(|input: (String, String, u64, u64, Vec<u8>)| {
    let (text, other, a, b, raw) = input;

    // Revisions.
    let shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    assert_eq!(version::is_date(&text), shape, "{text:?}");
    for since in version::SESSION_VERSIONS
        .iter()
        .chain(&version::MODERN_VERSIONS)
    {
        assert!(version::is_date(since));
        assert_eq!(
            version::at_least(&text, since),
            shape && text.as_str() >= *since
        );
    }
    if version::is_session(&text) || version::is_modern(&text) {
        assert!(shape);
    }

    // Last-Event-ID.
    assert_eq!(parse_event_id(&format!("{a}-{b}")), Some((a, b)));
    if let Some((s, q)) = parse_event_id(&text) {
        let t = text.trim();
        let (l, r) = t.split_once('-').expect("a dash");
        let num = |p: &str, n: u64| {
            let digits = p.strip_prefix('+').unwrap_or(p);
            !digits.is_empty()
                && digits.bytes().all(|c| c.is_ascii_digit())
                && digits.parse() == Ok(n)
        };
        assert!(
            num(l, s) && num(r, q),
            "Last-Event-ID {text:?} read as ({s}, {q})"
        );
    }

    // sessionId in the legacy POST's query.
    if let Ok(uri) = format!("/messages?{text}").parse::<http::Uri>() {
        let named: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| *k == "sessionId" || *k == "session_id")
            .map(|(_, v)| v)
            .collect();
        match fuzzing::query_session(&uri) {
            Ok(None) => assert!(named.is_empty()),
            Ok(Some(id)) => assert!(named.iter().all(|v| *v == id) && !named.is_empty()),
            Err(_) => assert!(named.windows(2).any(|w| w[0] != w[1])),
        }
    }

    // X-Forwarded-Prefix into the endpoint event.
    if let Ok(v) = HeaderValue::from_bytes(&raw) {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", v);
        let prefix = fuzzing::forwarded_prefix(&h);
        let endpoint = format!("{prefix}/messages?sessionId=0123abcd");
        let base = url::Url::parse("http://proxy.example:8080/sse").unwrap();
        let url = base.join(&endpoint).expect("the endpoint resolves");
        assert_eq!(
            url.origin(),
            base.origin(),
            "prefix {:?} moves the endpoint to {url}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(url.query(), Some("sessionId=0123abcd"), "{url}");
        assert!(
            !prefix.contains(['\\', '?', '#']) && (prefix.is_empty() || prefix.starts_with('/')),
            "{prefix:?}"
        );
    }

    // Origin and Host on a loopback bind with nothing allowed.
    let access = Access::new(&[], &[], true);
    if let Ok(v) = HeaderValue::from_str(&text) {
        let mut h = HeaderMap::new();
        h.insert(http::header::ORIGIN, v.clone());
        if access.check_origin(&h).is_ok() {
            let url = url::Url::parse(&text);
            let ok = url.as_ref().is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some_and(|h| loopback_host(&h))
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            assert!(ok, "Origin {text:?} accepted as loopback ({url:?})");
        }
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, v);
        if access.check_host(&h, None).is_ok() {
            let url = url::Url::parse(&format!("http://{text}/"));
            let ok = url.as_ref().is_ok_and(|u| {
                u.host().is_some_and(|h| loopback_host(&h))
                    && u.username().is_empty()
                    && u.path() == "/"
            });
            assert!(ok, "Host {text:?} accepted as loopback ({url:?})");
        }
    }
    let _ = other;
});
