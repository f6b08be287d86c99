//! `number::decimal` and `same_value` on arbitrary text. Oracles: a
//! number is accepted exactly when it is in JSON number syntax (RFC 8259
//! §6, checked here by its grammar, and by serde_json where serde_json
//! reads it); respelling it (a trailing fractional zero, an exponent
//! moved by one digit) keeps the same value; two spellings of the same
//! value parse to the same `f64`; and one `f64` apart values differ.
#![no_main]

use coda_mcp::number::{decimal, same_value};
use libfuzzer_sys::fuzz_target;

/// RFC 8259 §6, `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`,
/// with leading zeros too (`007`): `decimal` reads them, as the value
/// they spell, for cells written as people write numbers.
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The exponent of `s`, if it has one that fits an i64.
fn exponent(s: &str) -> Option<Option<i64>> {
    match s.find(['e', 'E']) {
        Some(i) => s[i + 1..].parse::<i64>().ok().map(Some),
        None => Some(None),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ok = decimal(s).is_some();
    let grammar = json_number(s);
    // decimal refuses only exponents past i64 among grammatical numbers.
    let fits = exponent(s).is_some();
    assert_eq!(
        ok,
        grammar && fits,
        "decimal({s:?}) = {ok}, grammar {grammar}"
    );
    // serde_json skips whitespace around a value, and reads an exponent
    // past i64 (as 0 or infinity); decimal reads neither.
    let bare = s.trim_matches([' ', '\t', '\n', '\r']) == s;
    if bare && fits && serde_json::from_str::<serde_json::Number>(s).is_ok() {
        assert!(ok, "serde_json reads {s:?} as a number, decimal does not");
    }
    if !ok {
        return;
    }
    assert!(same_value(s, s), "{s:?} differs from itself");
    // Respellings of the same value.
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().unwrap()),
        None => (s, 0),
    };
    let with_zero = if mantissa.contains('.') {
        format!("{mantissa}0e{exp}")
    } else {
        format!("{mantissa}.0e{exp}")
    };
    assert!(same_value(s, &with_zero), "{s:?} vs {with_zero:?}");
    // One more digit, one less in the exponent: `5e3` is `50e2`.
    if let Some(e) = exp.checked_sub(1)
        && !mantissa.contains('.')
    {
        let shifted = format!("{mantissa}0e{e}");
        assert!(same_value(s, &shifted), "{s:?} vs {shifted:?}");
    }
    // Same value ⇒ same f64 (each rounds the one value it spells).
    let x: f64 = s.parse().unwrap();
    for t in [with_zero.as_str()] {
        let y: f64 = t.parse().unwrap();
        assert!(
            x == y || (x.is_nan() && y.is_nan()),
            "{s:?} {x} vs {t:?} {y}"
        );
    }
    // A value one f64 step away (where that step is visible in 17
    // significant digits) is another value.
    if x.is_finite() && x != 0.0 {
        let next = f64::from_bits(x.to_bits() + 1);
        if next.is_finite() {
            let t = format!("{next:e}");
            if t.parse::<f64>().ok() == Some(next) {
                assert!(!same_value(s, &t) || x == next, "{s:?} same as {t:?}");
            }
        }
    }
});
