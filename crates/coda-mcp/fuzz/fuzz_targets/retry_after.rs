//! `Retry-After` header values, arbitrary bytes. Oracles (RFC 9110
//! §10.2.3): delay-seconds (digits) is that many seconds, capped at a
//! day; an HTTP-date is the time to it (none once past), capped too; a
//! value that is neither (a negative or non-finite number, words) is no
//! wait at all; nothing is ever more than a day.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

const DAY: Duration = Duration::from_secs(86_400);

fuzz_target!(|data: &[u8]| {
    let Some(wait) = coda_mcp::fuzzing::retry_after(data) else {
        return;
    };
    if let Some(w) = wait {
        assert!(w <= DAY, "{:?}: {w:?}", String::from_utf8_lossy(data));
    }
    // A header value is read as text only when it is visible ASCII (and
    // tabs): anything else is no value, so no wait.
    let visible = data
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    let Some(text) = std::str::from_utf8(data).ok().filter(|_| visible) else {
        assert_eq!(wait, None, "{data:?} read as {wait:?}");
        return;
    };
    let v = text.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v
            .parse::<u64>()
            .map_or(DAY.as_secs(), |n| n.min(DAY.as_secs()));
        assert_eq!(wait, Some(Duration::from_secs(secs)), "{v:?}");
        return;
    }
    if let Ok(at) = httpdate::parse_http_date(v) {
        let w = wait.unwrap_or_else(|| panic!("{v:?}: an HTTP-date read as no wait"));
        let ahead = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        assert!(w <= ahead.min(DAY), "{v:?}: {w:?} > {ahead:?}");
        return;
    }
    // Neither delay-seconds nor a date: only a decimal seconds value
    // (`0.5`, which Coda's gateways send) is read, and never a negative
    // or non-finite one.
    if let Some(w) = wait {
        let n: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{v:?} read as {w:?}, but is no number"));
        assert!(n.is_finite() && n >= 0.0, "{v:?} read as {w:?}");
        let expect = Duration::from_secs_f64(n.min(DAY.as_secs_f64()));
        assert_eq!(w, expect, "{v:?}");
    }
});
