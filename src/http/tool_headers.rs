//! 2026-07-28 `Mcp-Param-{Name}` headers. A tool may mark arguments with
//! `x-mcp-header` in its input schema; clients then mirror those values
//! into headers, and a server that reads the body must check that the
//! headers say what the body says (400, -32020), so that a load balancer
//! routing on a header and the child acting on the body never disagree.
//! The child (stdio) never sees headers, so the proxy does the check.
//!
//! The proxy learns the annotations from the child's `tools/list` answers
//! as they go back to any client, and checks a `tools/call` of a tool it
//! has learned. A call of a tool no listing has shown makes the proxy list
//! the child's tools itself first (at most once per [`SELF_LIST_EVERY`],
//! see [`super::modern`]): a client need not list before it calls, and one
//! that skips it must not skip the check. A tool still unknown after that
//! (the child has none of that name) is passed on unchecked. Owns: the
//! learned table, bounded in tools and headers. Does not own: the other
//! header rules (see [`super::modern`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use serde_json::Value;
use tracing::warn;

use crate::error::ProxyError;
use crate::jsonrpc::{Frame, Message};
use crate::upstream::AnswerWatch;

/// Tools remembered at most (a bigger catalogue is checked for the first
/// ones learned; the rest pass unchecked).
const MAX_TOOLS: usize = 4096;
/// Annotated arguments per tool at most (more make the tool unchecked).
const MAX_HEADERS_PER_TOOL: usize = 64;
/// `tools/list` answers longer than this are not read.
const MAX_LIST_BYTES: usize = 4 << 20;
/// How often at most the proxy lists the child's tools itself for a call
/// of a tool it does not know (a client calling made-up tools must not
/// make every call cost a whole listing).
pub const SELF_LIST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One annotated argument: its header and where its value sits.
#[derive(Debug, Clone, PartialEq)]
struct ParamHeader {
    /// `mcp-param-<name>`, lower case.
    header: String,
    /// The chain of `properties` keys from the arguments' root.
    path: Vec<String>,
}

/// How a tool may be called as a 2025-11-25 task (its
/// `execution.taskSupport`; absent is `Forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSupport {
    /// Never as a task.
    #[default]
    Forbidden,
    /// Either way.
    Optional,
    /// Only as a task.
    Required,
}

impl TaskSupport {
    fn of(tool: &Value) -> TaskSupport {
        match tool
            .pointer("/execution/taskSupport")
            .and_then(Value::as_str)
        {
            Some("optional") => TaskSupport::Optional,
            Some("required") => TaskSupport::Required,
            _ => TaskSupport::Forbidden,
        }
    }
}

/// What a listing showed of one tool: its annotated arguments (empty:
/// none) and its task support (read by [`super::modern_tasks`]).
#[derive(Debug, Clone, Default)]
struct Tool {
    headers: Vec<ParamHeader>,
    task_support: TaskSupport,
}

/// The annotations learned per tool name (empty: listed, with none), and
/// each tool's task support.
#[derive(Default)]
pub struct ToolHeaders {
    tools: Mutex<HashMap<String, Tool>>,
    /// When the proxy last listed the child's tools itself; held while it
    /// does, so calls arriving meanwhile wait for that listing.
    self_listed: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// The table was full once (said once in the log).
    full_noted: AtomicBool,
    /// A list or a tool was past what is read (said once in the log).
    over_noted: AtomicBool,
}

impl ToolHeaders {
    /// Reads a `tools/list` answer (as it goes back to a client) for its
    /// tools' annotations. An answer that is not a whole list is ignored.
    pub fn learn(&self, answer: &Message) {
        if answer.len() > MAX_LIST_BYTES {
            self.note_over(&format!(
                "a tools/list answer of {} bytes is longer than the {MAX_LIST_BYTES} the proxy reads for x-mcp-header annotations",
                answer.len()
            ));
            return;
        }
        // Each tool read on its own: one no tree can hold (`1e400`, a lone
        // surrogate, nesting past serde_json's limit) must not leave the
        // others unread, their calls unchecked. Such a tool is known by
        // its name, with nothing to check, like a definition clients must
        // reject.
        let bytes = answer.clone().into_bytes();
        let Some(at) = crate::jsonrpc::locate(&bytes, &["result", "tools"]) else {
            return;
        };
        let Ok(tools) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&bytes[at])
        else {
            return;
        };
        let tools = tools.into_iter().filter_map(|raw| {
            serde_json::from_str::<Value>(raw.get()).ok().or_else(|| {
                let name = crate::jsonrpc::readable_member(raw.get().as_bytes(), &["name"])?;
                Some(serde_json::json!({ "name": name }))
            })
        });
        let mut known = crate::lock(&self.tools);
        for tool in tools {
            let tool = &tool;
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some(schema) = tool.get("inputSchema")
                && count_annotations(schema) > MAX_HEADERS_PER_TOOL
            {
                self.note_over(&format!(
                    "tool {:?} has more than {MAX_HEADERS_PER_TOOL} x-mcp-header arguments",
                    name.chars().take(64).collect::<String>()
                ));
            }
            // None, or a definition clients must reject: nothing to check,
            // but the tool is known (its calls need no listing).
            let found = match tool.get("inputSchema").map(annotations) {
                Some(Some(found)) => found,
                _ => Vec::new(),
            };
            if known.len() < MAX_TOOLS || known.contains_key(name) {
                let task_support = TaskSupport::of(tool);
                known.insert(
                    name.to_string(),
                    Tool {
                        headers: found,
                        task_support,
                    },
                );
            } else if !found.is_empty() && !self.full_noted.swap(true, Ordering::Relaxed) {
                warn!(
                    tools = MAX_TOOLS,
                    "more tools than the proxy remembers; calls to the others with x-mcp-header arguments pass their Mcp-Param headers unchecked"
                );
            }
        }
    }

    /// Says once that annotations were left unread: `what`, and what it
    /// means for the calls.
    fn note_over(&self, what: &str) {
        if !self.over_noted.swap(true, Ordering::Relaxed) {
            warn!("{what}; calls to such tools pass their Mcp-Param headers unchecked (said once)");
        }
    }

    /// Whether a listing has shown the tool `call` names (a call without a
    /// name has nothing to check, and counts as known).
    pub fn knows(&self, call: &Frame) -> bool {
        let Some(name) = call_name(call) else {
            return true;
        };
        crate::lock(&self.tools).contains_key(name.as_ref())
    }

    /// The task support a listing showed for the tool `call` names;
    /// `None` for a tool no listing has shown.
    pub fn task_support(&self, call: &Frame) -> Option<TaskSupport> {
        let name = call_name(call)?;
        crate::lock(&self.tools)
            .get(name.as_ref())
            .map(|t| t.task_support)
    }

    /// The turn to list the child's tools (held while listing), unless the
    /// last listing is under [`SELF_LIST_EVERY`] old. Waits for a listing
    /// under way, so a call never goes on before it learned.
    pub async fn self_list_turn(
        &self,
    ) -> Option<tokio::sync::MutexGuard<'_, Option<std::time::Instant>>> {
        let mut last = self.self_listed.lock().await;
        if last.is_some_and(|at| at.elapsed() < SELF_LIST_EVERY) {
            return None;
        }
        *last = Some(std::time::Instant::now());
        Some(last)
    }

    /// Checks a 2026-07-28 `tools/call`'s `Mcp-Param-*` headers against
    /// its arguments. Only the annotated values are read from the body,
    /// each alone: arguments no tree can hold (`1e400`, nesting past the
    /// parser's depth limit) elsewhere in the call do not stop the check.
    pub fn check(&self, headers: &HeaderMap, call: &Frame) -> Result<(), ProxyError> {
        let Some(name) = call_name(call) else {
            return Ok(());
        };
        let expected = {
            let known = crate::lock(&self.tools);
            match known.get(name.as_ref()) {
                Some(t) => t.headers.clone(),
                None => return Ok(()),
            }
        };
        for p in &expected {
            let path: Vec<&str> = std::iter::once("arguments")
                .chain(p.path.iter().map(String::as_str))
                .collect();
            let body = call
                .locate_in_params(&path)
                .map(|at| &call.bytes()[at])
                .filter(|raw| *raw != b"null");
            let mut values = headers.get_all(p.header.as_str()).iter();
            let (sent, again) = (values.next(), values.next());
            if again.is_some() {
                return Err(mismatch(format!("{} is sent twice", p.header)));
            }
            match (sent, body) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(mismatch(format!(
                        "{} header is required: the arguments set {}",
                        p.header,
                        p.path.join(".")
                    )));
                }
                (Some(_), None) => {
                    return Err(mismatch(format!(
                        "{} header is sent but the arguments have no {}",
                        p.header,
                        p.path.join(".")
                    )));
                }
                (Some(h), Some(b)) => {
                    let text = h
                        .to_str()
                        .ok()
                        .and_then(|t| decode_header(t.trim()))
                        .ok_or_else(|| {
                            mismatch(format!("{} has characters it may not have", p.header))
                        })?;
                    // A value no tree holds (`1e400`) matches no header.
                    let b = serde_json::from_slice::<Value>(b).ok();
                    if !b.is_some_and(|b| same_value(&text, &b)) {
                        return Err(mismatch(format!(
                            "{} header does not match the arguments' {}",
                            p.header,
                            p.path.join(".")
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The tool a `tools/call` names, read alone from the bytes: a string
/// without escapes is its bytes (a frame is UTF-8), borrowed.
fn call_name(call: &Frame) -> Option<Cow<'_, str>> {
    let raw = &call.bytes()[call.locate_in_params(&["name"])?];
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            std::str::from_utf8(inner).ok().map(Cow::Borrowed)
        }
        _ => serde_json::from_slice::<String>(raw).ok().map(Cow::Owned),
    }
}

/// Decodes an `=?base64?…?=` header value (`Mcp-Name`, `Mcp-Param-*`);
/// plain values pass as they are. `None` for a sentinel that is not
/// base64 of UTF-8, and for a plain value with a character outside
/// visible ASCII and space (a tab: HTTP allows it in a field value, the
/// revision's "Value Encoding" does not, a value with control characters
/// must be encoded).
pub fn decode_header(value: &str) -> Option<String> {
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let Some(inner) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_string());
    };
    String::from_utf8(LENIENT.decode(inner).ok()?).ok()
}

/// Learns from a `tools/list` answer as it goes back to its client.
pub struct Learn(pub Arc<ToolHeaders>);

impl AnswerWatch for Learn {
    fn answered(self: Box<Self>, message: &Message) {
        self.0.learn(message);
    }
}

fn mismatch(why: String) -> ProxyError {
    ProxyError::HeaderMismatch(why)
}

/// The largest integer every double near it represents exactly (2^53 - 1).
const MAX_EXACT_INTEGER: u128 = (1 << 53) - 1;

/// Whether a header's (decoded) text says what the body's value is:
/// strings as they are, booleans as `true`/`false`, numbers compared as
/// numbers (`42.0` is `42`).
fn same_value(text: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => text == s,
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        // An integer a double holds exactly (the spec's range, ±(2^53-1))
        // compares as a number; a larger one only digit for digit, since
        // doubles would call neighbours equal and a router on the header
        // and the child on the body would then disagree.
        Value::Number(n) => match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
            Some(b) if b.unsigned_abs() > MAX_EXACT_INTEGER => text.parse::<i128>() == Ok(b),
            _ => match (text.parse::<f64>(), n.as_f64()) {
                (Ok(h), Some(b)) => h.is_finite() && h == b,
                _ => false,
            },
        },
        _ => false,
    }
}

/// The annotations of one input schema; `None` for a definition the
/// revision calls invalid (clients must drop such a tool): an annotation
/// off the `properties` chain, a name that is not a header token, or two
/// names equal but for case.
fn annotations(schema: &Value) -> Option<Vec<ParamHeader>> {
    let mut found = Vec::new();
    collect(schema, &mut Vec::new(), &mut found)?;
    if count_annotations(schema) != found.len() || found.len() > MAX_HEADERS_PER_TOOL {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for p in &found {
        if !seen.insert(p.header.clone()) {
            return None;
        }
    }
    Some(found)
}

/// Walks the `properties` chain from `schema`, recording annotations.
fn collect(schema: &Value, path: &mut Vec<String>, found: &mut Vec<ParamHeader>) -> Option<()> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Some(());
    };
    for (key, sub) in props {
        path.push(key.clone());
        if let Some(name) = sub.get("x-mcp-header") {
            let name = name.as_str().filter(|n| is_token(n))?;
            found.push(ParamHeader {
                header: format!("mcp-param-{}", name.to_ascii_lowercase()),
                path: path.clone(),
            });
        }
        collect(sub, path, found)?;
        path.pop();
    }
    Some(())
}

/// Every `x-mcp-header` anywhere in the schema (bounded depth: schemas
/// come from the child, which is trusted, but not unboundedly deep).
fn count_annotations(v: &Value) -> usize {
    fn walk(v: &Value, depth: usize) -> usize {
        if depth > 64 {
            return usize::MAX / 2;
        }
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, sub)| usize::from(k == "x-mcp-header") + walk(sub, depth + 1))
                .sum(),
            Value::Array(a) => a.iter().map(|sub| walk(sub, depth + 1)).sum(),
            _ => 0,
        }
    }
    walk(v, 0)
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed(tools: Value) -> ToolHeaders {
        let t = ToolHeaders::default();
        let answer = json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools}});
        t.learn(&bytes::Bytes::from(answer.to_string()).into());
        t
    }

    fn locate() -> Value {
        json!({"name":"locate","inputSchema":{"type":"object","properties":{
            "region":{"type":"string","x-mcp-header":"Region"},
            "target":{"type":"object","properties":{
                "shard":{"type":"integer","x-mcp-header":"Shard"},
                "dry":{"type":"boolean","x-mcp-header":"Dry"}}},
            "query":{"type":"string"}}}})
    }

    fn tools_call(params: Value) -> Frame {
        Frame::from_value(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params}))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn headers_must_say_what_the_arguments_say() {
        let t = listed(json!([locate()]));
        let call = tools_call(
            json!({"name":"locate","arguments":{"region":"us-west1","target":{"shard":42,"dry":true},"query":"x"}}),
        );
        let ok = headers(&[
            ("mcp-param-region", "us-west1"),
            ("mcp-param-shard", "42.0"),
            ("mcp-param-dry", "true"),
        ]);
        assert!(t.check(&ok, &call).is_ok());
        let encoded = headers(&[
            ("mcp-param-region", "=?base64?dXMtd2VzdDE=?="),
            ("mcp-param-shard", "42"),
            ("mcp-param-dry", "true"),
        ]);
        assert!(t.check(&encoded, &call).is_ok());
        for bad in [
            headers(&[("mcp-param-shard", "42"), ("mcp-param-dry", "true")]),
            headers(&[
                ("mcp-param-region", "eu-west1"),
                ("mcp-param-shard", "42"),
                ("mcp-param-dry", "true"),
            ]),
            headers(&[
                ("mcp-param-region", "us-west1"),
                ("mcp-param-shard", "43"),
                ("mcp-param-dry", "true"),
            ]),
            headers(&[
                ("mcp-param-region", "us-west1"),
                ("mcp-param-region", "us-west1"),
                ("mcp-param-shard", "42"),
                ("mcp-param-dry", "true"),
            ]),
        ] {
            let e = t.check(&bad, &call).unwrap_err();
            assert!(matches!(e, ProxyError::HeaderMismatch(_)), "{e:?}");
        }
        // Absent or null in the body: no header expected, none allowed.
        let sparse = tools_call(json!({"name":"locate","arguments":{"region":null}}));
        assert!(t.check(&HeaderMap::new(), &sparse).is_ok());
        assert!(
            t.check(&headers(&[("mcp-param-region", "x")]), &sparse)
                .is_err()
        );
        // A tool never listed, and unknown Mcp-Param headers, pass.
        let other = tools_call(json!({"name":"other","arguments":{"region":"x"}}));
        assert!(
            t.check(&headers(&[("mcp-param-zone", "a")]), &other)
                .is_ok()
        );
    }

    /// Regression: the arguments were built into one tree, so a call with
    /// `1e400` or deep nesting in an argument beside the annotated ones
    /// could not be checked at all.
    #[test]
    fn arguments_no_tree_can_hold_leave_the_annotated_ones_checked() {
        let t = listed(json!([locate()]));
        let with = |extra: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"locate","arguments":{{"query":{extra},"region":"us-west1"}}}}}}"#
            );
            // Refused from a client since `jsonrpc::portable`; the check
            // itself stays whole for them (lenient parse).
            Frame::parse(bytes::Bytes::from(body), false).unwrap()
        };
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for extra in ["1e400", deep.as_str()] {
            let call = with(extra);
            let ok = headers(&[("mcp-param-region", "us-west1")]);
            assert!(t.check(&ok, &call).is_ok(), "{extra:.20}");
            let wrong = headers(&[("mcp-param-region", "eu-west1")]);
            assert!(t.check(&wrong, &call).is_err(), "{extra:.20}");
            assert!(t.check(&HeaderMap::new(), &call).is_err(), "{extra:.20}");
        }
        // An annotated value no tree holds matches no header.
        let call = Frame::parse(
            bytes::Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"locate","arguments":{"region":"r","target":{"shard":1e400}}}}"#),
            false,
        )
        .unwrap();
        let h = headers(&[("mcp-param-region", "r"), ("mcp-param-shard", "1e400")]);
        assert!(t.check(&h, &call).is_err());
    }

    /// Regression (review): a tools/list answer was built into one tree,
    /// so one tool no tree can hold (`1e400` or a lone surrogate in its
    /// schema, nesting past serde_json's limit in its `_meta`) left the
    /// whole list unread: no tool was known, and every call passed its
    /// Mcp-Param headers unchecked. Each tool is now read on its own.
    #[test]
    fn one_tool_no_tree_can_hold_leaves_the_others_checked() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            let answer = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"odd","inputSchema":{{"type":"object","maximum":{odd}}}}},{}]}}}}"#,
                locate()
            );
            let t = ToolHeaders::default();
            t.learn(&bytes::Bytes::from(answer).into());
            let call = tools_call(json!({"name":"locate","arguments":{"region":"us-west1"}}));
            let wrong = headers(&[("mcp-param-region", "eu-west1")]);
            assert!(t.check(&wrong, &call).is_err(), "{odd:.20}");
            assert!(t.check(&HeaderMap::new(), &call).is_err(), "{odd:.20}");
            let ok = headers(&[("mcp-param-region", "us-west1")]);
            assert!(t.check(&ok, &call).is_ok(), "{odd:.20}");
        }
    }

    #[test]
    fn integers_past_the_exact_range_of_a_double_must_match_digit_for_digit() {
        let big = json!(9_007_199_254_740_993u64);
        assert!(!same_value("9007199254740992", &big));
        assert!(!same_value("9007199254740992.0", &big));
        assert!(same_value("9007199254740993", &big));
        assert!(!same_value("-9223372036854775807", &json!(i64::MIN)));
        // Within the range, 42.0 is 42 (the spec's numeric comparison).
        assert!(same_value("42.0", &json!(42)));
        assert!(same_value("-7", &json!(-7)));
        assert!(!same_value("1e400", &json!(1)));
    }

    #[test]
    fn sentinel_values_are_decoded() {
        assert_eq!(decode_header("plain").unwrap(), "plain");
        assert_eq!(decode_header("=?base64?aGVsbG8=?=").unwrap(), "hello");
        assert_eq!(decode_header("=?base64?aGk?=").unwrap(), "hi");
        assert_eq!(
            decode_header("=?base64?SGVsbG8sIOS4lueVjA==?=").unwrap(),
            "Hello, 世界"
        );
        assert!(decode_header("=?base64?a?=").is_none());
        assert!(decode_header("=?base64?!!?=").is_none());
        assert!(decode_header("=?base64?/w==?=").is_none(), "not UTF-8");
    }

    #[test]
    fn invalid_definitions_are_not_checked_and_a_new_list_replaces_the_old() {
        let bad_name =
            json!({"name":"a","inputSchema":{"properties":{"x":{"x-mcp-header":"Bad Name"}}}});
        let in_items = json!({"name":"b","inputSchema":{"properties":{"x":{"type":"array","items":{"x-mcp-header":"X"}}}}});
        let twice = json!({"name":"c","inputSchema":{"properties":{
            "x":{"x-mcp-header":"Same"},"y":{"x-mcp-header":"same"}}}});
        let t = listed(json!([bad_name, in_items, twice, locate()]));
        let checked = |t: &ToolHeaders| {
            let known = t.tools.lock().unwrap();
            let mut names: Vec<String> = known
                .iter()
                .filter(|(_, t)| !t.headers.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            names.sort();
            (names, known.len())
        };
        // All four are known (a call of one needs no listing), only one is checked.
        assert_eq!(checked(&t), (vec!["locate".to_string()], 4));
        // The tool is listed again without annotations: no longer checked.
        let plain = json!({"name":"locate","inputSchema":{"type":"object"}});
        t.learn(&bytes::Bytes::from(json!({"result":{"tools":[plain]}}).to_string()).into());
        assert_eq!(checked(&t), (vec![], 4));
    }
}
