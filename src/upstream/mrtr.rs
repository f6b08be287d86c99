//! Multi round-trip requests (2026-07-28 `basic/patterns/mrtr`) translated
//! for session-era clients.
//!
//! A 2026-07-28 child cannot send requests; when it needs sampling, roots or
//! elicitation to finish a `tools/call`, `prompts/get` or `resources/read`,
//! it answers with an `input_required` result listing the requests, and
//! expects the call again with the answers (`inputResponses`) and its
//! opaque `requestState`. A session-era client expects the opposite: a
//! server-to-client request while its call is in flight. The multiplexer
//! bridges the two: it sends each input request to the client as a request
//! of its own, waits for the answers, and repeats the call to the child
//! with them, so the client sees one call that asked it something.
//!
//! The other way round, a 2025-era child asking a 2026-07-28 client: the
//! child's request becomes the `input_required` answer to the client's call
//! (under the key [`INPUT_KEY`], with a `requestState` token naming the
//! parked call), and the client's retry brings the answer back.
//!
//! This module holds the message shapes and the asking of a session-era
//! client for a 2026-07-28 child ([`Upstream::gather_input`]); the worker
//! parks and resumes the other direction's calls (it owns the tables).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tracing::debug;

use super::routes::{Pending, Retry, ServerRequest};
use super::{Port, Upstream};
use crate::jsonrpc::{self, Frame, code};

/// The `inputRequests` key of a 2025-era child's request.
pub const INPUT_KEY: &str = "input";

/// Rounds of input one call may ask for before the proxy gives up on it.
pub const MAX_ROUNDS: u8 = 16;

/// A fresh `requestState` token naming a parked call: 128 bits from the OS
/// CSPRNG, hex (it travels to the client and must not be guessable).
pub fn new_request_state() -> String {
    let mut bytes = [0u8; 16];
    // The OS CSPRNG failing is not something to serve requests through.
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `method` may be answered with `input_required`.
pub fn may_ask(method: Option<&str>) -> bool {
    matches!(
        method,
        Some("tools/call" | "prompts/get" | "resources/read")
    )
}

/// One request the child needs answered.
#[derive(Debug, Deserialize)]
pub struct InputRequest {
    /// `sampling/createMessage`, `roots/list` or `elicitation/create`.
    pub method: String,
    /// Its params, as the child wrote them.
    #[serde(default)]
    pub params: Option<Box<RawValue>>,
}

/// An `input_required` result.
#[derive(Debug, Default)]
pub struct InputRequired {
    /// Key (the child's) and request, in the child's order.
    pub requests: Vec<(String, InputRequest)>,
    /// To be echoed back unchanged.
    pub request_state: Option<Box<RawValue>>,
}

/// The `input_required` result in a response, if it is one. Cheap for the
/// ordinary answers: those without the marker are not parsed.
pub fn input_required(answer: &[u8]) -> Option<InputRequired> {
    memchr::memmem::find(answer, b"input_required")?;
    #[derive(Deserialize)]
    struct Answer {
        result: Body,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        result_type: String,
        // A map read as pairs, to keep the child's order.
        #[serde(default, with = "ordered")]
        input_requests: Vec<(String, InputRequest)>,
        #[serde(default)]
        request_state: Option<Box<RawValue>>,
    }
    let answer: Answer = serde_json::from_slice(answer).ok()?;
    (answer.result.result_type == "input_required").then_some(InputRequired {
        requests: answer.result.input_requests,
        request_state: answer.result.request_state,
    })
}

mod ordered {
    use serde::Deserializer;
    use serde::de::{MapAccess, Visitor};

    use super::InputRequest;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, InputRequest)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, InputRequest)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of input requests")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    out.push(pair);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Appends `"method":<method>,"params":<params>` with the params as raw JSON.
fn push_method_and_params(out: &mut Vec<u8>, request: &InputRequest) {
    let params = request.params.as_ref().map_or("{}", |p| p.get());
    out.extend_from_slice(br#""method":"#);
    serde_json::to_writer(&mut *out, &request.method).expect("a string serializes");
    out.extend_from_slice(br#","params":"#);
    out.extend_from_slice(params.as_bytes());
}

/// The server-to-client request the client gets for one input request.
pub fn client_request(id: &[u8], request: &InputRequest) -> Vec<u8> {
    let mut out = br#"{"jsonrpc":"2.0","id":"#.to_vec();
    out.extend_from_slice(id);
    out.push(b',');
    push_method_and_params(&mut out, request);
    out.push(b'}');
    out
}

/// The client's answer to one of those requests: its result as the client
/// wrote it (byte for byte, as everything else the retry carries: a tree
/// would round `123456789012345678901234567890`, and refuse `1e400` or
/// nesting past serde_json's 128 levels), or why not.
pub fn client_answer(frame: &Frame) -> Result<Box<RawValue>, String> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        /// `null` is a result like any other (JSON-RPC 2.0 §5).
        #[serde(default, borrow, deserialize_with = "present")]
        result: Option<&'a RawValue>,
        error: Option<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        code: i64,
        message: String,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
        <&RawValue>::deserialize(d).map(Some)
    }
    match serde_json::from_slice::<Answer<'_>>(frame.bytes()) {
        Ok(Answer {
            result: Some(r), ..
        }) => Ok(r.to_owned()),
        Ok(Answer { error: Some(e), .. }) => Err(format!("{} ({})", e.message, e.code)),
        _ => Err("a malformed answer".into()),
    }
}

/// The params of the repeated call: the original ones with the answers and
/// the child's state (spec: the retry carries exactly what the last
/// `input_required` asked for). The client's members and the child's state
/// go as they were written: only the object around them is new, so no
/// value in them is rounded (`123456789012345678901234567890`), refused
/// (`1e400`, nesting past serde_json's 128 levels) or reordered. A
/// member written twice goes once, the last copy, as parsers read it.
pub fn retry_params(
    original: Option<&[u8]>,
    responses: &[(String, Box<RawValue>)],
    request_state: Option<&RawValue>,
) -> Vec<u8> {
    let members = original
        .and_then(|p| serde_json::from_slice::<Members<'_>>(p).ok())
        .map(|m| m.0)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(original.map_or(0, <[u8]>::len) + 64);
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        let later = members[i + 1..].iter().any(|(k, _)| k == key);
        if later || key == "requestState" || key == "inputResponses" {
            continue;
        }
        // Invariant: a string and a map of Values serialize.
        serde_json::to_writer(&mut out, key).expect("a string serializes");
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(br#""inputResponses":{"#);
    let mut first = true;
    for (i, (key, answer)) in responses.iter().enumerate() {
        if responses[i + 1..].iter().any(|(k, _)| k == key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, key).expect("a string serializes");
        out.push(b':');
        out.extend_from_slice(answer.get().as_bytes());
    }
    out.push(b'}');
    if let Some(state) = request_state {
        out.extend_from_slice(br#","requestState":"#);
        out.extend_from_slice(state.get().as_bytes());
    }
    out.push(b'}');
    out
}

/// A JSON object's members in order, each value as written.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    out.push(pair);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The `input_required` result that carries a 2025-era child's request to a
/// 2026-07-28 client.
pub fn input_required_result(request: &InputRequest, token: &str) -> Vec<u8> {
    let mut out = br#"{"resultType":"input_required","inputRequests":{"#.to_vec();
    serde_json::to_writer(&mut out, INPUT_KEY).expect("a string serializes");
    out.extend_from_slice(b":{");
    push_method_and_params(&mut out, request);
    out.extend_from_slice(br#"}},"requestState":"#);
    serde_json::to_writer(&mut out, token).expect("a string serializes");
    out.push(b'}');
    out
}

/// A 2025-era child's -32042 (`URLElicitationRequiredError`, 2025-11-25
/// only) to a 2026-07-28 client's call, in that revision's terms: the
/// call needs the user to visit the URLs in `error.data.elicitations`
/// first, which is an `input_required` result carrying URL-mode
/// `elicitation/create` requests (without `elicitationId`, which
/// 2026-07-28 removed; no `requestState`: the client's retry is the call
/// again, which the child then serves). A client that did not declare
/// URL mode gets -32021 instead (`basic/index`: a request that needs a
/// capability the client did not declare). `None` for any other error,
/// or one whose elicitations are not a non-empty list of objects (it is
/// then passed on as the child's error, see [`super::fill::Fill`]).
/// Returns the envelope member (`result` or `error`) and its value.
pub fn url_elicitation(answer: &Frame, port: &Port) -> Option<(&'static str, Vec<u8>)> {
    #[derive(Deserialize)]
    struct Answer {
        error: Error,
    }
    #[derive(Deserialize)]
    struct Error {
        code: i64,
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        elicitations: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let error = serde_json::from_slice::<Answer>(answer.bytes()).ok()?.error;
    if error.code != code::URL_ELICITATION_REQUIRED {
        return None;
    }
    let elicitations = error.data?.elicitations;
    if elicitations.is_empty() {
        return None;
    }
    let mut requests = serde_json::Map::new();
    for (n, mut params) in elicitations.into_iter().enumerate() {
        params.remove("elicitationId");
        params.insert("mode".into(), "url".into());
        // Invariant: a map of Values serializes.
        let raw = serde_json::to_vec(&params).expect("Value serializes");
        if !port.supports("elicitation/create", Some(&raw)) {
            let missing = serde_json::json!({
                "code": code::MISSING_REQUIRED_CLIENT_CAPABILITY,
                "message": "the MCP server needs the user to open a URL, and the client did not declare URL-mode elicitation",
                "data": { "requiredCapabilities": { "elicitation": { "url": {} } } },
            });
            return Some((
                "error",
                serde_json::to_vec(&missing).expect("Value serializes"),
            ));
        }
        requests.insert(
            format!("url-{n}"),
            serde_json::json!({ "method": "elicitation/create", "params": params }),
        );
    }
    let result = serde_json::json!({ "resultType": "input_required", "inputRequests": requests });
    Some((
        "result",
        serde_json::to_vec(&result).expect("Value serializes"),
    ))
}

/// From a retry's params: the `requestState` and the answer under
/// [`INPUT_KEY`].
pub fn resumption(params: &[u8]) -> (Option<String>, Option<Box<RawValue>>) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Retry {
        request_state: Option<String>,
        #[serde(default)]
        input_responses: Option<std::collections::HashMap<String, Box<RawValue>>>,
    }
    match serde_json::from_slice::<Retry>(params) {
        Ok(r) => (
            r.request_state,
            r.input_responses.and_then(|mut m| m.remove(INPUT_KEY)),
        ),
        Err(_) => (None, None),
    }
}

impl Upstream {
    /// A 2026-07-28 child answered a session-era client's call with
    /// `input_required`: ask the client each question as a request of its
    /// own, then repeat the call with the answers. The call fails with an
    /// error, never hangs, when the client cannot be asked or does not
    /// answer (it is bounded by `--request-timeout` and by the session).
    pub(super) async fn gather_input(
        self: Arc<Self>,
        mut p: Pending,
        port: Arc<Port>,
        asked: InputRequired,
    ) {
        let Some(retry) = p.retry.take() else { return };
        let outcome = if retry.rounds >= MAX_ROUNDS {
            Err(format!(
                "the MCP server asked for input {} times for one call; giving up",
                MAX_ROUNDS
            ))
        } else {
            self.ask_client(&port, &p, &asked).await
        };
        match outcome {
            Ok(responses) => {
                let params = retry_params(
                    retry.frame.params(),
                    &responses,
                    asked.request_state.as_deref(),
                );
                let frame = retry.frame.with_params(&params);
                p.retry = Some(Retry {
                    frame: retry.frame,
                    rounds: retry.rounds + 1,
                });
                let _ = self.send_pending(frame, p).await;
            }
            Err(why) => {
                debug!("input for a 2026-07-28 child could not be gathered: {why}");
                p.reply.respond(&jsonrpc::error_response(
                    Some(&p.client_id),
                    code::INTERNAL_ERROR,
                    &why,
                    None,
                ));
            }
        }
    }

    /// Sends the child's input requests to the client and waits for all the
    /// answers, keyed like the requests.
    pub(super) async fn ask_client(
        &self,
        port: &Arc<Port>,
        p: &Pending,
        asked: &InputRequired,
    ) -> Result<Vec<(String, Box<RawValue>)>, String> {
        let mut ids = Vec::with_capacity(asked.requests.len());
        let outcome = self.ask_client_inner(port, p, asked, &mut ids).await;
        if outcome.is_err() && !ids.is_empty() {
            // Answers that come later are for nobody.
            self.forget_questions(ids);
        }
        outcome
    }

    pub(super) async fn ask_client_inner(
        &self,
        port: &Arc<Port>,
        p: &Pending,
        asked: &InputRequired,
        ids: &mut Vec<Box<[u8]>>,
    ) -> Result<Vec<(String, Box<RawValue>)>, String> {
        let room = (self.opts.max_server_requests_per_session).min(self.opts.max_server_requests);
        if asked.requests.len() > room {
            // Refused whole, before the client is asked anything: a round
            // is answered only once all of it is.
            return Err(format!(
                "the MCP server asked for {} inputs at once; at most {room} may wait for a client's answer (--max-server-requests-per-session, --max-server-requests)",
                asked.requests.len()
            ));
        }
        let mut waits = Vec::with_capacity(asked.requests.len());
        for (key, request) in &asked.requests {
            let method = &request.method;
            if !port.supports(
                method,
                request.params.as_deref().map(|p| p.get().as_bytes()),
            ) {
                return Err(format!(
                    "the MCP server needs {method}, a capability the client did not declare"
                ));
            }
            let Some(outlet) = p
                .reply
                .stream()
                .cloned()
                .or_else(|| port.notify_stream())
                .filter(|o| !o.is_finished())
            else {
                return Err(format!(
                    "the MCP server needs {method}, but the client has no open stream to carry the request"
                ));
            };
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            let id: Box<[u8]> = format!("\"mcp-proxy-input-{n}\"").into_bytes().into();
            let (tx, rx) = oneshot::channel();
            let entry = ServerRequest {
                raw_id: id.clone(),
                port: port.key,
                outlet: Some(outlet.clone()),
                answer: Some(tx),
                deadline: None,
            };
            // Recorded before it is sent: the client's answer comes after.
            self.record_question(id.clone(), entry).await?;
            outlet.send(&client_request(&id, request));
            ids.push(id);
            waits.push((key, method, rx));
        }
        let mut responses = Vec::with_capacity(waits.len());
        for (key, method, rx) in waits {
            let answer = match self.opts.request_timeout {
                Some(t) => tokio::time::timeout(t, rx).await.ok().and_then(Result::ok),
                None => rx.await.ok(),
            };
            let Some(answer) = answer else {
                return Err(format!("the client did not answer the {method} request"));
            };
            let result = client_answer(&answer)
                .map_err(|e| format!("the client refused the {method} request: {e}"))?;
            responses.push((key.clone(), result));
        }
        Ok(responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    #[test]
    fn input_required_results_are_recognised_and_others_are_not() {
        let asked = br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{"b":{"method":"roots/list"},"a":{"method":"elicitation/create","params":{"message":"?"}}},"requestState":"s1"}}"#;
        let r = input_required(asked).unwrap();
        let keys: Vec<&str> = r.requests.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"], "the child's order is kept");
        assert_eq!(r.requests[1].1.method, "elicitation/create");
        assert_eq!(r.request_state.unwrap().get(), r#""s1""#);
        let done = br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete","content":[{"type":"text","text":"input_required"}]}}"#;
        assert!(
            input_required(done).is_none(),
            "the word in a result is not the marker"
        );
        assert!(input_required(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).is_none());
    }

    #[test]
    fn client_requests_and_answers_round_trip() {
        let request = InputRequest {
            method: "sampling/createMessage".into(),
            params: Some(RawValue::from_string(r#"{"maxTokens":5}"#.into()).unwrap()),
        };
        let bytes = client_request(br#""p-1""#, &request);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], "p-1");
        assert_eq!(v["method"], "sampling/createMessage");
        assert_eq!(v["params"]["maxTokens"], 5);

        let ok = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":"p-1","result":{"x":1}}"#),
            false,
        )
        .unwrap();
        assert_eq!(client_answer(&ok).unwrap().get(), r#"{"x":1}"#);
        let no = Frame::parse(
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":"p-1","error":{"code":-1,"message":"declined"}}"#,
            ),
            false,
        )
        .unwrap();
        assert_eq!(client_answer(&no).unwrap_err(), "declined (-1)");
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.into()).unwrap()
    }

    /// Regression (review): the client's answers were read into a
    /// `serde_json::Value`, so a number past u64 in one came back rounded
    /// (`1.2345678901234568e29`), and one a float cannot hold (`1e400`),
    /// or nesting past 128 levels, made the answer "malformed" and failed
    /// the call. An answer now goes into the retry as the client wrote it,
    /// `null` included; an answer named twice goes once, the last.
    #[test]
    fn the_clients_answers_go_into_the_retry_as_written() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let result = format!(
            r#"{{"action":"accept","content":{{"big":123456789012345678901234567890,"x":1e400,"deep":{deep}}}}}"#
        );
        let line = format!(r#"{{"jsonrpc":"2.0","id":"mcp-proxy-input-1","result":{result}}}"#);
        let frame = Frame::parse(Bytes::from(line), false).unwrap();
        let answer = client_answer(&frame).unwrap();
        assert_eq!(answer.get(), result);
        let null = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":"p","result":null}"#),
            false,
        )
        .unwrap();
        assert_eq!(client_answer(&null).unwrap().get(), "null");
        let deep_error = format!(
            r#"{{"jsonrpc":"2.0","id":"p","error":{{"code":-2,"message":"no","data":{deep}}}}}"#
        );
        let frame = Frame::parse(Bytes::from(deep_error), false).unwrap();
        assert_eq!(client_answer(&frame).unwrap_err(), "no (-2)");

        let responses = [
            ("b".to_string(), answer),
            ("a".to_string(), raw("1")),
            ("a".to_string(), raw("null")),
        ];
        let params = retry_params(Some(br#"{"name":"ask"}"#), &responses, None);
        let at = jsonrpc::locate(&params, &["inputResponses"]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&params[at]),
            format!(r#"{{"b":{result},"a":null}}"#)
        );
    }

    #[test]
    fn a_legacy_request_travels_in_input_required_and_comes_back_in_the_retry() {
        let request = InputRequest {
            method: "roots/list".into(),
            params: None,
        };
        let v: Value = serde_json::from_slice(&input_required_result(&request, "tok")).unwrap();
        assert_eq!(v["resultType"], "input_required");
        assert_eq!(v["inputRequests"][INPUT_KEY]["method"], "roots/list");
        assert_eq!(v["requestState"], "tok");
        let (token, answer) = resumption(
            br#"{"name":"t","inputResponses":{"input":{"roots":[]}},"requestState":"tok"}"#,
        );
        assert_eq!(token.as_deref(), Some("tok"));
        assert_eq!(answer.unwrap().get(), r#"{"roots":[]}"#);
        assert_eq!(
            resumption(br#"{"requestState":"tok"}"#)
                .1
                .map(|a| a.to_string()),
            None
        );
    }

    /// Regression: the retry's params were the original ones read into a
    /// tree and written again, and so was the child's state: a number
    /// past u64 in the arguments came back rounded
    /// (`1.2345678901234568e29`), and one a float cannot hold (`1e400`)
    /// or nesting past 128 levels failed the read, so the retry went to
    /// the child with none of the call's params (no `name`, no
    /// `arguments`) and without its `requestState`.
    #[test]
    fn the_retry_keeps_the_original_members_and_the_state_as_written() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let args = format!(r#"{{"big":123456789012345678901234567890,"x":1e400,"deep":{deep}}}"#);
        let original =
            format!(r#"{{"name":"ask","arguments":{args},"requestState":"old","name":"ask2"}}"#);
        let state = r#"{"n":1e400,"k":98765432109876543210987}"#;
        let state = RawValue::from_string(state.into()).unwrap();
        let responses = [("a".to_string(), raw(r#"{"action":"accept"}"#))];
        let params = retry_params(Some(original.as_bytes()), &responses, Some(&state));
        let at = |path: &[&str]| {
            jsonrpc::locate(&params, path).map(|r| String::from_utf8_lossy(&params[r]).into_owned())
        };
        assert_eq!(at(&["arguments"]).as_deref(), Some(args.as_str()));
        assert_eq!(at(&["name"]).as_deref(), Some(r#""ask2""#));
        assert_eq!(at(&["requestState"]).as_deref(), Some(state.get()));
        assert_eq!(
            at(&["inputResponses"]).as_deref(),
            Some(r#"{"a":{"action":"accept"}}"#)
        );
        let text = String::from_utf8_lossy(&params);
        assert!(
            !text.contains("old") && !text.contains(r#""ask""#),
            "{text}"
        );
    }

    #[test]
    fn the_retry_carries_the_original_params_the_answers_and_the_state() {
        let responses = [("a".to_string(), raw(r#"{"action":"accept"}"#))];
        let state = RawValue::from_string(r#""s2""#.into()).unwrap();
        let params = retry_params(
            Some(br#"{"name":"ask","arguments":{"q":1},"requestState":"old"}"#),
            &responses,
            Some(&state),
        );
        let v: Value = serde_json::from_slice(&params).unwrap();
        assert_eq!(v["name"], "ask");
        assert_eq!(v["arguments"]["q"], 1);
        assert_eq!(v["inputResponses"]["a"]["action"], "accept");
        assert_eq!(v["requestState"], "s2");
        let none = retry_params(Some(br#"{"requestState":"old"}"#), &[], None);
        assert_eq!(
            serde_json::from_slice::<Value>(&none).unwrap(),
            serde_json::json!({"inputResponses":{}})
        );
    }
}
