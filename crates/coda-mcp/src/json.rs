//! Coda's answers read as JSON, refusing an object that holds a member
//! twice.
//!
//! RFC 8259 §4 says the names of an object SHOULD be unique and leaves a
//! repeated one to the reader: serde_json keeps the last copy without a
//! word, another reader the first. An answer with `requestId` (or `id`,
//! `href`, a row's `values`, a status's `completed`) twice is ambiguous, so
//! nothing is decided on it: Coda never sends one (a gateway, a proxy or a
//! broken server may), and the caller treats it as a protocol error (for a
//! write: whether it was applied is unknown). The check is the map insert
//! serde_json's own `Value` makes anyway, so it costs nothing on long
//! answers; the path of the repeated member is only built on the way out
//! of a failure. serde_json's nesting limit (128) still applies.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Not JSON (or nested past 128 levels, or a number past `f64`).
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// An object holds the member at `path` (its name last, as
    /// `items[3].values["c-1"]`) more than once.
    #[error(
        "it repeats the member {path} in one object, so it is ambiguous (a JSON reader keeps one of the copies, and which one differs)"
    )]
    Repeated { path: String },
}

/// Parse `bytes` as one JSON value, refusing an object with a member given
/// twice at any depth (names compared as they decode: `"a"` and `"\u0061"`
/// are one name). `secret` (the API token) is replaced in the path of a
/// repeated member, before its name is cut: a server that echoes the
/// request's headers may put it in a name.
pub fn parse_answer(bytes: &[u8], secret: &str) -> Result<Value, AnswerError> {
    let state = State {
        found: RefCell::new(None),
        secret,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict(&state)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, state.found.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(mut segments)) => {
            segments.reverse();
            Err(AnswerError::Repeated {
                path: segments.concat(),
            })
        }
        (Err(e), None) => Err(AnswerError::Syntax(e)),
    }
}

/// Characters of a member's name shown in a path; a longer one is cut and
/// ends `…` (a name has no length limit).
const PATH_NAME_CHARS: usize = 40;

/// A path segment for the member `name`, `secret` replaced: `.name` for
/// letters, digits and `_`, `["name"]` (a JSON string, `\u{202e}`
/// escaped) for any other.
fn member_segment(name: &str, secret: &str) -> String {
    let name = crate::text::redact_text(name, secret);
    let name = name.as_str();
    let mut cut: String = name.chars().take(PATH_NAME_CHARS).collect();
    if cut.len() < name.len() {
        cut.push('…');
    }
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        format!(".{cut}")
    } else {
        // JSON escapes control characters; line separators and bidi
        // overrides are escaped too, as everywhere Coda's text is shown.
        format!(
            "[{}]",
            crate::text::escape_controls(&Value::String(cut).to_string())
        )
    }
}

/// What one parse shares.
struct State<'a> {
    /// `Some(segments)` once a repeated member was found: its path,
    /// innermost segment first, which each enclosing container completes
    /// as the error passes through it (a syntax error leaves it `None`,
    /// and no path is built).
    found: RefCell<Option<Vec<String>>>,
    /// The API token, replaced in a path.
    secret: &'a str,
}

/// The seed and visitor of one value.
#[derive(Clone, Copy)]
struct Strict<'a>(&'a State<'a>);

impl Strict<'_> {
    /// Add `segment` to the path of a repeated member found inside.
    fn enclose(self, segment: impl FnOnce() -> String) {
        if let Some(path) = self.0.found.borrow_mut().as_mut() {
            path.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // JSON text holds no NaN or infinity (serde_json refuses `1e400`).
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    let i = items.len();
                    self.enclose(|| format!("[{i}]"));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            match members.entry(name) {
                serde_json::map::Entry::Occupied(o) => {
                    *self.0.found.borrow_mut() = Some(vec![member_segment(o.key(), self.0.secret)]);
                    return Err(de::Error::custom("a member is repeated"));
                }
                serde_json::map::Entry::Vacant(slot) => match map.next_value_seed(self) {
                    Ok(v) => {
                        slot.insert(v);
                    }
                    Err(e) => {
                        self.enclose(|| member_segment(slot.key(), self.0.secret));
                        return Err(e);
                    }
                },
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(text: &str) -> String {
        match parse_answer(text.as_bytes(), "tok-123") {
            Err(AnswerError::Repeated { path }) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_member_given_twice_at_any_depth_is_refused_with_its_path() {
        assert_eq!(
            repeated(r#"{"requestId":"a","requestId":"b"}"#),
            ".requestId"
        );
        assert_eq!(
            repeated(
                r#"{"items":[{"id":"i-1","values":{}},{"id":"i-2","values":{"c-1":1,"c-1":2}}]}"#
            ),
            r#".items[1].values["c-1"]"#
        );
        // Names compare as they decode.
        assert_eq!(repeated(r#"{"a":1,"\u0061":2}"#), ".a");
        assert_eq!(
            repeated(r#"[[{"x":{"y":[1,{"z":0,"z":0}]}}]]"#),
            "[0][0].x.y[1].z"
        );
        assert_eq!(
            repeated("{\"a\\n\u{202e}b\":1,\"a\\n\u{202e}b\":2}"),
            r#"["a\n\u{202e}b"]"#
        );
        // The token is replaced before a long name is cut.
        let long = format!("Authorization: Bearer TOK-123 {}", "x".repeat(50));
        assert_eq!(
            repeated(&format!(r#"{{"items":[{{"{long}":1,"{long}":2}}]}}"#)),
            r#".items[0]["Authorization: Bearer [API token] xxxxxx…"]"#
        );
    }

    #[test]
    fn answers_without_repeats_parse_as_serde_json_reads_them() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,true,null,"s\n"],"b":{"a":{}},"c":[]}"#,
            r#"{"a":{"b":1},"c":{"b":2}}"#,
            "[]",
            "\"x\"",
            "18446744073709551615",
        ] {
            let ours = parse_answer(text.as_bytes(), "tok-123").unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_a_syntax_error_without_a_path() {
        for text in ["{\"a\":1e400}", "{\"a\":1,}", "[1] 2", &"[".repeat(200)] {
            assert!(
                matches!(
                    parse_answer(text.as_bytes(), "tok-123"),
                    Err(AnswerError::Syntax(_))
                ),
                "{text}"
            );
        }
    }
}
