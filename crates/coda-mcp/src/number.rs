//! Numbers written in decimal (JSON number syntax), compared by the value
//! they spell rather than by the `f64` a parser rounds them to: `5`, `5.0`
//! and `0.5e1` are one value; `9007199254740993` and `9007199254740992`
//! are two, although both parse to the same `f64`.
//!
//! Used where a number must not change unseen: `verify` comparing a cell
//! written with the one read back ([`crate::tools::checks`]), and the stdio
//! front refusing an argument that serde_json would round ([`crate::stdio`]).
//! It owns no parsing of JSON itself.

/// A decimal value: `digits × 10^exp`, `digits` without leading or
/// trailing zeros (empty for zero, whose sign is dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct Decimal<'a> {
    negative: bool,
    /// The significant digits, as two pieces of the text (around the `.`).
    digits: (&'a str, &'a str),
    exp: i64,
}

/// The value `s` spells in JSON number syntax (RFC 8259 §6: `-`, digits
/// with no leading zero, optional fraction, optional exponent), or `None`
/// for anything else (`+5`, `.5`, `007`, `1,000`, `$5`, `NaN`, an exponent
/// past `i64`).
pub fn decimal(s: &str) -> Option<Decimal<'_>> {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => {
            let e = &s[i + 1..];
            // i64's parser takes the sign JSON allows (`+` or `-`).
            (&s[..i], e.parse::<i64>().ok()?)
        }
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !digits(int)
        || (int.len() > 1 && int.starts_with('0'))
        || !digits(frac)
        || mantissa.ends_with('.')
    {
        return None;
    }
    // int ++ frac × 10^(exp − frac.len()), then trailing zeros dropped
    // (each raises the exponent) and leading ones (which change nothing).
    let trimmed = frac.trim_end_matches('0');
    // Lengths are far below i64::MAX; an exponent near its ends saturates.
    let mut exp = exp.saturating_sub(trimmed.len() as i64);
    let mut frac = trimmed;
    let mut int = int.trim_start_matches('0');
    if int.is_empty() {
        frac = frac.trim_start_matches('0');
    }
    if frac.is_empty() {
        let kept = int.trim_end_matches('0');
        exp = exp.saturating_add((int.len() - kept.len()) as i64);
        int = kept;
    }
    let zero = int.is_empty() && frac.is_empty();
    Some(Decimal {
        negative: negative && !zero,
        digits: (int, frac),
        exp: if zero { 0 } else { exp },
    })
}

/// Whether `a` and `b` spell the same number (both in JSON number syntax).
pub fn same_value(a: &str, b: &str) -> bool {
    match (decimal(a), decimal(b)) {
        (Some(x), Some(y)) => {
            x.negative == y.negative
                && x.exp == y.exp
                && x.digits.0.bytes().chain(x.digits.1.bytes()).eq(y
                    .digits
                    .0
                    .bytes()
                    .chain(y.digits.1.bytes()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_value_are_the_same() {
        for (a, b) in [
            ("5", "5.0"),
            ("5", "0.5e1"),
            ("500", "5E+2"),
            ("0.001", "1e-3"),
            ("-0", "0.0"),
            ("1.2345678901234568e22", "12345678901234568000000"),
        ] {
            assert!(same_value(a, b), "{a} {b}");
        }
    }

    #[test]
    fn values_one_f64_apart_or_closer_differ() {
        for (a, b) in [
            ("9007199254740993", "9007199254740992"),
            ("12345678901234567890123", "1.2345678901234568e22"),
            ("1e-10", "0"),
            ("1000000000000.0001", "1000000000000"),
            ("-1", "1"),
        ] {
            assert!(!same_value(a, b), "{a} {b}");
        }
    }

    #[test]
    fn only_json_number_syntax_is_a_number() {
        for bad in [
            "",
            "-",
            "+5",
            ".5",
            "5.",
            "1,000",
            "$5",
            "NaN",
            "inf",
            "1e",
            "1e99999999999999999999",
            " 5",
            "007",
            "-007",
            "00",
            "00.5",
            "01e2",
        ] {
            assert!(decimal(bad).is_none(), "{bad:?}");
        }
        for good in ["0", "-0", "0.05", "0e5", "10", "100.00", "-0.5E-1"] {
            assert!(decimal(good).is_some(), "{good:?}");
        }
    }
}
