//! The 2026-07-28 revision read clause by clause against what the proxy
//! presents to a client, over a 2025-era child (the `everything`
//! example): error responses, log messages, error codes and methods that
//! revision no longer has. Each test names the clause it checks.

mod support;

use serde_json::{Value, json};
use support::{Proxy, STEP, SseStream};

const MODERN: &str = "2026-07-28";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// POSTs `body` with `headers` only (besides the content type).
async fn post_with(proxy: &Proxy, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(STEP, req.body(body.to_string()).send())
        .await
        .expect("an answer in time")
        .unwrap()
}

/// POSTs `body` as a 2026-07-28 request with the standard headers taken
/// from it and `accept`.
async fn post(proxy: &Proxy, body: &Value, accept: &str) -> reqwest::Response {
    let method = body["method"].as_str().unwrap_or_default().to_string();
    let mut headers = vec![
        ("accept", accept.to_string()),
        ("mcp-protocol-version", MODERN.to_string()),
        ("mcp-method", method),
    ];
    if let Some(name) = body["params"]["name"]
        .as_str()
        .or(body["params"]["uri"].as_str())
    {
        headers.push(("mcp-name", name.to_string()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post_with(proxy, body, &headers).await
}

async fn json_of(r: reqwest::Response) -> Value {
    let text = tokio::time::timeout(STEP, r.text()).await.unwrap().unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `basic/index`, "Error Responses": error responses MUST include the
/// same id as the request they correspond to, except where it could not
/// be read. The proxy's own refusals of a 2026-07-28 request (header
/// validation, version, `_meta`, a method this revision does not have)
/// had no id at all.
#[tokio::test]
async fn the_proxys_refusals_of_a_request_carry_its_id() {
    let proxy = Proxy::start(&[]).await;
    let call = |id: Value| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
            "name":"echo","arguments":{"message":"hi"},"_meta":meta()}})
    };
    let std_headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
    ];
    // HeaderMismatch: Mcp-Name says another tool.
    let mut h = std_headers.to_vec();
    h.push(("mcp-name", "other"));
    let r = post_with(&proxy, &call(json!(7)), &h).await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    assert_eq!(v["id"], 7, "{v}");

    // HeaderMismatch: the version header is missing (the body says 2026-07-28).
    let r = post_with(
        &proxy,
        &call(json!("s-1")),
        &[
            ("accept", "application/json"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    assert_eq!(v["id"], "s-1", "{v}");

    // UnsupportedProtocolVersion.
    let mut body = call(json!(8));
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = post_with(
        &proxy,
        &body,
        &[
            ("accept", "application/json"),
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32022, "{v}");
    assert_eq!(v["id"], 8, "{v}");

    // A required `_meta` field missing: -32602.
    let mut body = call(json!(9));
    body["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let r = post(&proxy, &body, "application/json").await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["id"], 9, "{v}");

    // A method this revision does not have: 404, -32601.
    let ping = json!({"jsonrpc":"2.0","id":10,"method":"ping","params":{"_meta":meta()}});
    let r = post(&proxy, &ping, "application/json").await;
    assert_eq!(r.status(), 404);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert_eq!(v["id"], 10, "{v}");

    // A notification has no id to carry, and its refusal none either.
    let note = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}});
    let r = post_with(
        &proxy,
        &note,
        &[
            ("accept", "application/json"),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    assert!(v.get("id").is_none(), "{v}");
    proxy.stop().await;
}

/// The messages of an SSE answer, in order.
async fn sse_messages(r: reqwest::Response) -> Vec<Value> {
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(STEP, r.text()).await.unwrap().unwrap();
    support::parse_events(&text)
        .into_iter()
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect()
}

/// A `log` call to the child (which logs at every level unless told
/// otherwise), as a stream (its progress token makes it one), with
/// `log_level` in `_meta` if given.
async fn log_call(proxy: &Proxy, id: u64, level: &str, log_level: Option<&str>) -> Vec<Value> {
    let mut meta = meta();
    meta["progressToken"] = json!(format!("p{id}"));
    if let Some(l) = log_level {
        meta["io.modelcontextprotocol/logLevel"] = json!(l);
    }
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"log","arguments":{"level":level,"message":format!("m{id}")},"_meta":meta}});
    let messages =
        sse_messages(post(proxy, &call, "application/json, text/event-stream").await).await;
    let last = messages.last().expect("an answer");
    assert_eq!(last["id"], id, "{messages:?}");
    assert_eq!(
        last["result"]["content"][0]["text"], "logged",
        "{messages:?}"
    );
    messages
}

fn logs(messages: &[Value]) -> usize {
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count()
}

/// `server/utilities/logging`: "The server MUST NOT emit
/// `notifications/message` for a request that does not include
/// [`io.modelcontextprotocol/logLevel`]"; with it, only messages at or
/// above that level. A 2025-era child logs for its session, not per
/// request: the proxy passed every log line of the child to whichever
/// 2026-07-28 request was in flight.
#[tokio::test]
async fn log_messages_reach_only_requests_that_asked_for_them_at_their_level() {
    let proxy = Proxy::start(&[]).await;
    let none = log_call(&proxy, 1, "error", None).await;
    assert_eq!(logs(&none), 0, "no logLevel, no log messages: {none:?}");
    let below = log_call(&proxy, 2, "info", Some("warning")).await;
    assert_eq!(logs(&below), 0, "info is below warning: {below:?}");
    let at = log_call(&proxy, 3, "error", Some("warning")).await;
    assert_eq!(logs(&at), 1, "error is above warning: {at:?}");
    proxy.stop().await;
}

/// Regression: a request that asked for log messages (`_meta` logLevel)
/// but had no progress token got its answer as plain JSON when it
/// accepted both, so the log messages it asked for, which only a stream
/// can carry, were dropped: 0 of 1.
#[tokio::test]
async fn a_request_that_asks_for_log_messages_gets_a_stream_for_them() {
    let proxy = Proxy::start(&[]).await;
    let mut meta = meta();
    meta["io.modelcontextprotocol/logLevel"] = json!("warning");
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"log","arguments":{"level":"error","message":"m7"},"_meta":meta}});
    let messages =
        sse_messages(post(&proxy, &call, "application/json, text/event-stream").await).await;
    assert_eq!(logs(&messages), 1, "{messages:?}");
    assert_eq!(messages.last().unwrap()["id"], 7, "{messages:?}");
    proxy.stop().await;
}

/// The error a 2026-07-28 client gets when the child answers with `line`
/// (its `$ID` is the call's id at the child).
async fn child_error(proxy: &Proxy, id: u64, line: &str) -> Value {
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"misbehave_emit","arguments":{"lines":[line]},"_meta":meta()}});
    let r = post(proxy, &call, "application/json").await;
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["id"], id, "{v}");
    v["error"].clone()
}

/// `basic/index`, "Error Codes": implementations of 2026-07-28 "MUST NOT
/// emit" -32002 (resource not found until 2025-11-25; `server/resources`:
/// "servers MUST return a JSON-RPC error with code -32602") nor any code
/// of -32020…-32099 this revision does not define (-32042, URL
/// elicitation required, is 2025-11-25's). A 2025-era child's codes went
/// to 2026-07-28 clients as they were.
#[tokio::test]
async fn a_legacy_childs_error_codes_are_the_revisions_own() {
    let proxy = Proxy::start(&[]).await;
    let read = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{
        "uri":"file:///nowhere","_meta":meta()}});
    let r = post(&proxy, &read, "application/json").await;
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["id"], 1, "{v}");
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["message"], "resource not found: file:///nowhere");

    let url = r#"{"jsonrpc":"2.0","id":$ID,"error":{"code":-32042,"message":"authorize first","data":{"elicitations":[]}}}"#;
    let e = child_error(&proxy, 2, url).await;
    assert_eq!(e["code"], -32603, "{e}");
    assert_eq!(e["message"], "authorize first", "{e}");
    assert_eq!(e["data"], json!({"elicitations":[]}), "{e}");
    // The specification's own codes, from a child that could not have
    // meant them, are not passed on either.
    let header = r#"{"jsonrpc":"2.0","id":$ID,"error":{"code":-32020,"message":"x"}}"#;
    assert_eq!(child_error(&proxy, 3, header).await["code"], -32603);
    // Codes outside the reserved range are the child's to choose.
    for code in [-32001, -32603, -32700, 7] {
        let line =
            format!(r#"{{"jsonrpc":"2.0","id":$ID,"error":{{"code":{code},"message":"x"}}}}"#);
        assert_eq!(child_error(&proxy, 4, &line).await["code"], code);
    }
    proxy.stop().await;
}

/// `basic/transports/streamable-http`: "If the server does not implement
/// the requested RPC method, it MUST respond with 404 Not Found and a
/// JSON-RPC error with code -32601"; 2026-07-28 replaced
/// `resources/subscribe` and `resources/unsubscribe` with
/// `subscriptions/listen` (changelog, major change 4), and `Mcp-Name` is
/// required of `tools/call`, `resources/read` and `prompts/get` only. The
/// proxy required `Mcp-Name` of the two (400, -32020 without it) and
/// passed them to the 2025-era child (200) for a subscription nothing
/// would ever deliver.
#[tokio::test]
async fn methods_the_revision_removed_are_not_found() {
    let proxy = Proxy::start(&[]).await;
    for (id, method) in [(1, "resources/subscribe"), (2, "resources/unsubscribe")] {
        let body = json!({"jsonrpc":"2.0","id":id,"method":method,"params":{
            "uri":"file:///a.txt","_meta":meta()}});
        // With the Mcp-Name a client might send, and without it.
        let with_name = post(&proxy, &body, "application/json").await;
        let without = post_with(
            &proxy,
            &body,
            &[
                ("accept", "application/json"),
                ("mcp-protocol-version", MODERN),
                ("mcp-method", method),
            ],
        )
        .await;
        for r in [with_name, without] {
            assert_eq!(r.status(), 404, "{method}");
            let v = json_of(r).await;
            assert_eq!(v["error"]["code"], -32601, "{method}: {v}");
            assert_eq!(v["id"], id, "{method}: {v}");
        }
    }
    proxy.stop().await;
}

/// The `_meta` key of the server's identity in a result.
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// `basic/index`, "Per-response protocol fields": "Servers SHOULD include
/// the following `io.modelcontextprotocol/*` field in every result's
/// `_meta` ... `io.modelcontextprotocol/serverInfo`" (an `Implementation`,
/// name and version; schema `ResultMetaObject`). Over a 2025-era child
/// only `server/discover` carried it; every other result, the child's
/// or the proxy's own (`input_required`), had none. The child's own
/// `_meta` members stay beside it.
#[tokio::test]
async fn every_result_carries_the_servers_identity() {
    let proxy = Proxy::start(&[]).await;
    let identity = |v: &Value| v["result"]["_meta"][SERVER_INFO].clone();
    let echo = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"message":"hi"},"_meta":meta()}});
    let v = json_of(post(&proxy, &echo, "application/json").await).await;
    assert_eq!(identity(&v)["name"], "everything", "{v}");
    assert!(identity(&v)["version"].is_string(), "{v}");
    // On a stream (its progress token makes it one).
    let mut streamed = echo.clone();
    streamed["params"]["_meta"]["progressToken"] = json!("p");
    let messages =
        sse_messages(post(&proxy, &streamed, "application/json, text/event-stream").await).await;
    let last = messages.last().expect("an answer");
    assert_eq!(identity(last)["name"], "everything", "{messages:?}");
    // A cacheable one.
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":meta()}});
    let v = json_of(post(&proxy, &list, "application/json").await).await;
    assert_eq!(
        identity(&v)["name"],
        "everything",
        "{}",
        &v.to_string()[..200]
    );
    assert_eq!(v["result"]["cacheScope"], "private");
    // The proxy's own input_required.
    let roots = roots_call(3, json!({}), json!({"roots": {}}), None, json!({}));
    let v = json_of(post(&proxy, &roots, "application/json").await).await;
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    assert_eq!(identity(&v)["name"], "everything", "{v}");
    // A result with a _meta of the child's: both.
    let line = r#"{"jsonrpc":"2.0","id":$ID,"result":{"content":[],"_meta":{"k":1}}}"#;
    let call = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{
        "name":"misbehave_emit","arguments":{"lines":[line]},"_meta":meta()}});
    let v = json_of(post(&proxy, &call, "application/json").await).await;
    assert_eq!(v["result"]["_meta"]["k"], 1, "{v}");
    assert_eq!(identity(&v)["name"], "everything", "{v}");
    proxy.stop().await;
}

/// The answer a 2026-07-28 client gets to a call whose child answers
/// with `result` (the `misbehave_emit` tool writes it under the call's id).
async fn answered_with(proxy: &Proxy, id: usize, result: &str) -> Value {
    let line = format!(r#"{{"jsonrpc":"2.0","id":$ID,"result":{result}}}"#);
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"misbehave_emit","arguments":{"lines":[line]},"_meta":meta()}});
    json_of(post(proxy, &call, "application/json").await).await
}

/// Asserts that `v`, the answer to call `id`, is the proxy's -32603
/// refusal, its message saying `why`.
fn assert_refused(v: &Value, id: usize, why: &str) {
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["error"]["code"], -32603, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{v}");
}

/// A 2025-era child's result with a member the proxy adds for a
/// 2026-07-28 client (`resultType`) went on with the key twice
/// (`{"resultType":"complete",…,"resultType":"input_required"}`): a client
/// that keeps the last copy read the child's, a Rust client's typed parse
/// refused the answer. Such an answer is refused now, as one with `_meta`
/// twice is: -32603, the call's error. Nested deeper, the key is the
/// child's own business.
#[tokio::test]
async fn a_result_with_a_member_the_proxy_adds_is_refused_rather_than_sent_with_the_key_twice() {
    let proxy = Proxy::start(&[]).await;
    for (n, result) in [
        r#"{"content":[],"resultType":"input_required"}"#,
        r#"{"\u0072esultType":"complete","content":[]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        assert_refused(&answered_with(&proxy, n, result).await, n, "resultType");
    }
    let v = answered_with(
        &proxy,
        9,
        r#"{"content":[{"type":"text","text":"t","resultType":"x"}],"ttlMs":5}"#,
    )
    .await;
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["content"][0]["resultType"], "x", "{v}");
    assert_eq!(v["result"]["ttlMs"], 5, "{v}");
    proxy.stop().await;
}

/// A child's result with `_meta` twice: the identity went into the first
/// copy, and the client's parser (serde_json here, as `JSON.parse` and
/// Python's json) keeps the last, so the client saw the child's `_meta`
/// without it. Such an answer is refused now, as one that repeats a
/// member of its envelope is: -32603, the call's error.
#[tokio::test]
async fn a_result_with_meta_twice_is_refused_rather_than_stamped_in_the_copy_clients_drop() {
    let proxy = Proxy::start(&[]).await;
    for (n, result) in [
        r#"{"content":[],"_meta":{"k":1},"_meta":{"k":2}}"#,
        r#"{"_meta":{"k":1},"content":[],"\u005fmeta":{"k":2}}"#,
    ]
    .into_iter()
    .enumerate()
    {
        assert_refused(&answered_with(&proxy, n, result).await, n, "_meta twice");
    }
    // One `_meta` (and one nested in the content) is stamped as before.
    let v = answered_with(
        &proxy,
        9,
        r#"{"content":[{"type":"text","text":"t","_meta":{}}],"_meta":{"k":1}}"#,
    )
    .await;
    assert_eq!(v["result"]["_meta"]["k"], 1, "{v}");
    assert_eq!(
        v["result"]["_meta"][SERVER_INFO]["name"], "everything",
        "{v}"
    );
    proxy.stop().await;
}

fn meta_with(capabilities: Value) -> Value {
    let mut m = meta();
    m["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    m
}

/// A call during which the child asks its client `request` (a 2025-era
/// server-to-client request, `$ID`-free), from a 2026-07-28 client
/// declaring `capabilities`: the client's answer.
async fn asked(proxy: &Proxy, id: u64, capabilities: Value, request: Value) -> Value {
    let line = json!({"jsonrpc":"2.0","id":format!("ask-{id}"),"method":request["method"],"params":request["params"]});
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"misbehave_emit","arguments":{"lines":[line.to_string()]},"_meta":meta_with(capabilities)}});
    let r = post(proxy, &call, "application/json").await;
    assert_eq!(r.status(), 200);
    json_of(r).await
}

/// `client/elicitation`: "Servers MUST NOT send elicitation requests with
/// modes that are not supported by the client" (`"elicitation": {}` is
/// form mode only); `client/sampling`: "Servers MUST NOT send
/// tool-enabled sampling requests to Clients that have not declared
/// support for tool use via the `sampling.tools` capability";
/// `basic/patterns/mrtr`: "Servers MUST NOT send an inputRequests that the
/// client has not declared support for". The proxy checked only that the
/// capability's name was there, so a URL elicitation reached a form-only
/// client and a sampling request with tools a client without tool use.
#[tokio::test]
async fn input_requests_need_the_mode_and_the_tool_use_the_client_declared() {
    let proxy = Proxy::start(&[]).await;
    let url = json!({"method":"elicitation/create","params":{
        "mode":"url","message":"sign in","url":"https://example.com/a","elicitationId":"e1"}});
    let form = json!({"method":"elicitation/create","params":{
        "mode":"form","message":"name?","requestedSchema":{"type":"object","properties":{}}}});
    let tools = json!({"method":"sampling/createMessage","params":{
        "messages":[],"maxTokens":5,"tools":[{"name":"t","inputSchema":{"type":"object"}}]}});
    let plain = json!({"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}});
    let cases = [
        (json!({"elicitation":{}}), &url, false),
        (json!({"elicitation":{"form":{}}}), &url, false),
        (json!({"elicitation":{"url":{}}}), &url, true),
        (json!({"elicitation":{"url":{}}}), &form, false),
        (json!({"elicitation":{}}), &form, true),
        (json!({"sampling":{}}), &tools, false),
        (json!({"sampling":{"tools":{}}}), &tools, true),
        (json!({"sampling":{}}), &plain, true),
    ];
    for (n, (caps, request, passed)) in cases.into_iter().enumerate() {
        let v = asked(&proxy, n as u64 + 1, caps.clone(), request.clone()).await;
        let what = format!("{caps} / {request}: {v}");
        if passed {
            assert_eq!(v["result"]["resultType"], "input_required", "{what}");
            let inner = &v["result"]["inputRequests"]["input"];
            assert_eq!(inner["method"], request["method"], "{what}");
        } else {
            // The child was told no, and its call went on to its answer.
            assert_eq!(v["result"]["content"][0]["text"], "emitted", "{what}");
        }
    }
    proxy.stop().await;
}

/// The translation for a 2025-era child: the child learns what its
/// client supports once, at `initialize`, and a conformant 2025 server
/// sends no request the client did not declare (`client/elicitation`,
/// `client/sampling`, `client/roots` of 2025-11-25). The proxy bridges
/// those requests to 2026-07-28 clients as `input_required`, checking
/// each request's own `clientCapabilities`, yet it initialized the child
/// for them with `"capabilities": {}`: a child built on an SDK that
/// honours them never asked a 2026-07-28 client anything.
#[tokio::test]
async fn the_child_of_modern_clients_is_told_what_the_proxy_can_ask_them() {
    let proxy = Proxy::start(&[]).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"client_info","arguments":{},"_meta":meta()}});
    let v = json_of(post(&proxy, &call, "application/json").await).await;
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let params: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {v}"));
    let caps = &params["capabilities"];
    assert!(caps["roots"].is_object(), "{params}");
    assert!(caps["sampling"]["tools"].is_object(), "{params}");
    assert!(caps["elicitation"]["form"].is_object(), "{params}");
    assert!(caps["elicitation"]["url"].is_object(), "{params}");
    // Nothing the proxy cannot pass on: it sends no roots list change.
    assert!(caps["roots"].get("listChanged").is_none(), "{params}");
    proxy.stop().await;
}

/// `server/utilities/logging`, "Error Handling": "If the
/// `io.modelcontextprotocol/logLevel` value carried in a request's
/// `_meta` is not a recognized log level, the server SHOULD reject that
/// request" with -32602 (400 on HTTP, as for any malformed `_meta`). The
/// proxy served it, with no log messages.
#[tokio::test]
async fn an_unknown_log_level_is_invalid_params() {
    let proxy = Proxy::start(&[]).await;
    for (id, level) in [(1, json!("loud")), (2, json!(3)), (3, json!("Error"))] {
        let mut meta = meta();
        meta["io.modelcontextprotocol/logLevel"] = level.clone();
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
            "name":"echo","arguments":{"message":"hi"},"_meta":meta}});
        let r = post(&proxy, &call, "application/json").await;
        assert_eq!(r.status(), 400, "{level}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], -32602, "{level}: {v}");
        assert_eq!(v["id"], id, "{v}");
    }
    let mut meta = meta();
    meta["io.modelcontextprotocol/logLevel"] = json!("emergency");
    let call = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{
        "name":"echo","arguments":{"message":"hi"},"_meta":meta}});
    let v = json_of(post(&proxy, &call, "application/json").await).await;
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    proxy.stop().await;
}

/// `basic/patterns/subscriptions`, "Graceful Closure": "When the server
/// ends a subscription on its own initiative (for example, during
/// shutdown), it SHOULD respond to the original subscriptions/listen
/// request with a completion result before closing the stream", carrying
/// the subscription id in `_meta`; a stream that just closes tells the
/// client it was dropped, and invites a reconnect. At a drain the proxy
/// just closed every listen stream.
#[tokio::test]
async fn a_listen_stream_ended_by_the_proxy_gets_its_closing_response() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    let listen = json!({"jsonrpc":"2.0","id":"sub-1","method":"subscriptions/listen","params":{
        "_meta":meta(),"notifications":{"toolsListChanged":true}}});
    let mut stream = SseStream::new(post(&proxy, &listen, "text/event-stream").await);
    let ack: Value = serde_json::from_str(&stream.next().await.expect("ack").data).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    let stopping = tokio::spawn(proxy.stop());
    let last = stream.next().await.expect("a closing response");
    let last: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(last["id"], "sub-1", "{last}");
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
    assert_eq!(
        last["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1",
        "{last}"
    );
    assert_eq!(
        last["result"]["_meta"][SERVER_INFO]["name"], "everything",
        "{last}"
    );
    assert!(stream.next().await.is_none(), "the stream ends after it");
    stopping.await.unwrap();
}

/// The translation of 2025-11-25's URL elicitation: a 2025-era child that
/// needs the user to visit a URL before a call can go on answers it with
/// -32042 (`URLElicitationRequiredError`, `data.elicitations`), a code
/// 2026-07-28 forbids (`basic/index`, "Error Codes"). In 2026-07-28 the
/// same thing is an `input_required` result carrying URL-mode
/// `elicitation/create` requests, without the removed `elicitationId`
/// (`basic/patterns/mrtr`, `client/elicitation`, changelog minor change
/// 11), and the client's retry is the call again. A client that did not
/// declare URL mode gets `MissingRequiredClientCapability` (-32021, 400,
/// `basic/index`). The proxy passed -32042 on (since bb81a2f, as -32603).
#[tokio::test]
async fn a_url_elicitation_the_child_requires_is_input_required() {
    let proxy = Proxy::start(&[]).await;
    let required = r#"{"jsonrpc":"2.0","id":$ID,"error":{"code":-32042,"message":"connect first","data":{"elicitations":[{"mode":"url","elicitationId":"e1","url":"https://example.com/connect","message":"Connect your account"}]}}}"#;
    let call = |id: u64, caps: Value| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
            "name":"misbehave_emit","arguments":{"lines":[required]},"_meta":meta_with(caps)}})
    };
    let r = post(
        &proxy,
        &call(1, json!({"elicitation":{"url":{}}})),
        "application/json",
    )
    .await;
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v["id"], 1, "{v}");
    let result = &v["result"];
    assert_eq!(result["resultType"], "input_required", "{v}");
    assert!(result.get("requestState").is_none(), "{v}");
    let asked: Vec<&Value> = result["inputRequests"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(asked.len(), 1, "{v}");
    assert_eq!(asked[0]["method"], "elicitation/create");
    assert_eq!(
        asked[0]["params"],
        json!({"mode":"url","url":"https://example.com/connect","message":"Connect your account"})
    );
    // Without URL mode declared: the capability it lacks.
    for accept in ["application/json", "application/json, text/event-stream"] {
        let mut body = call(2, json!({"elicitation":{"form":{}}}));
        body["params"]["_meta"]["progressToken"] = json!("p2");
        let r = post(&proxy, &body, accept).await;
        assert_eq!(r.status(), 400, "{accept}");
        let v = json_of(r).await;
        assert_eq!(v["id"], 2, "{v}");
        assert_eq!(v["error"]["code"], -32021, "{v}");
        assert_eq!(
            v["error"]["data"]["requiredCapabilities"],
            json!({"elicitation":{"url":{}}}),
            "{v}"
        );
    }
    proxy.stop().await;
}

/// `basic/patterns/mrtr`, "Error Handling": "If the client fails to send
/// all the information requested in a previous InputRequests, and the
/// missing information is necessary for the server to process the
/// request, the server SHOULD respond with a new InputRequiredResult
/// requesting the missing information again, rather than returning an
/// error." A retry of a parked call that brought its `requestState` but
/// not the answer made the proxy fail the child's request, and so the
/// call.
#[tokio::test]
async fn a_retry_without_the_answer_is_asked_again() {
    let proxy = Proxy::start(&[]).await;
    let meta = meta_with(json!({"roots": {}}));
    let call = |id: u64, extra: Value| {
        let mut params = json!({"name":"roots","arguments":{},"_meta":meta.clone()});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params})
    };
    let first = json_of(post(&proxy, &call(1, json!({})), "application/json").await).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].clone();
    // The state, but no answer (none at all, then one under another key).
    for (id, responses) in [(2, json!(null)), (3, json!({"other": {"roots": []}}))] {
        let mut extra = json!({"requestState": state});
        if !responses.is_null() {
            extra["inputResponses"] = responses;
        }
        let again = json_of(post(&proxy, &call(id, extra), "application/json").await).await;
        assert_eq!(again["id"], id, "{again}");
        assert_eq!(again["result"]["resultType"], "input_required", "{again}");
        assert_eq!(
            again["result"]["inputRequests"],
            first["result"]["inputRequests"]
        );
        assert_eq!(again["result"]["requestState"], state, "{again}");
    }
    // The answer at last: the call goes on to its result.
    let extra = json!({"requestState": state,
        "inputResponses": {"input": {"roots": [{"uri": "file:///at-last"}]}}});
    let done = json_of(post(&proxy, &call(4, extra), "application/json").await).await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], r#"[{"uri":"file:///at-last"}]"#,
        "{done}"
    );
    proxy.stop().await;
}

/// A `roots` call (`args`) with `extra` params beside them and `_meta`
/// declaring `capabilities` (and `log_level`, if given).
fn roots_call(
    id: u64,
    args: Value,
    capabilities: Value,
    log_level: Option<&str>,
    extra: Value,
) -> Value {
    let mut meta = meta_with(capabilities);
    if let Some(l) = log_level {
        meta["io.modelcontextprotocol/logLevel"] = json!(l);
    }
    let mut params = json!({"name":"roots","arguments":args,"_meta":meta});
    params
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params})
}

/// `basic/index`, "Per-request protocol fields": a server "MUST NOT rely
/// on capabilities the client has not declared" in the request's own
/// `clientCapabilities`; `basic/patterns/mrtr`: the retry is a new
/// request, with its own `_meta`. A retry that brought the
/// `requestState` but not the answer, and no longer declares `roots`,
/// was asked for `roots/list` again (the first request's capability):
/// the child's request is refused instead, and the call goes on to its
/// answer.
#[tokio::test]
async fn a_retry_is_asked_again_only_for_what_it_declares() {
    let proxy = Proxy::start(&[]).await;
    let first = roots_call(1, json!({}), json!({"roots": {}}), None, json!({}));
    let first = json_of(post(&proxy, &first, "application/json").await).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].clone();
    let retry = roots_call(
        2,
        json!({}),
        json!({}),
        None,
        json!({"requestState": state}),
    );
    let v = json_of(post(&proxy, &retry, "application/json").await).await;
    assert_eq!(v["id"], 2, "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("did not declare"), "{v}");
    proxy.stop().await;
}

/// The same clause, the other way: a retry that declares `roots` and asks
/// for log messages (`_meta` logLevel) is the request in flight once it
/// resumed the call, so the child's next `roots/list` is asked of it and
/// its log messages reach it. The proxy kept the first request's
/// `_meta` for neither: the retry's port had no capabilities recorded (the
/// second `roots/list` was refused, the call failed) and no log level (the
/// child's log message was dropped).
#[tokio::test]
async fn a_resumed_call_follows_the_retrys_capabilities_and_log_level() {
    let proxy = Proxy::start(&[]).await;
    let args = json!({"times": 2, "log": "answered"});
    let caps = json!({"roots": {}});
    let first = roots_call(1, args.clone(), caps.clone(), None, json!({}));
    let first = json_of(post(&proxy, &first, "application/json").await).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let answer = |state: &Value, uri: &str| json!({"requestState": state, "inputResponses": {"input": {"roots": [{"uri": uri}]}}});
    let retry = roots_call(
        2,
        args.clone(),
        caps.clone(),
        Some("info"),
        answer(&first["result"]["requestState"], "file:///one"),
    );
    let messages =
        sse_messages(post(&proxy, &retry, "application/json, text/event-stream").await).await;
    assert_eq!(logs(&messages), 1, "the retry asked for info: {messages:?}");
    let second = messages.last().expect("an answer");
    assert_eq!(second["id"], 2, "{messages:?}");
    assert_eq!(
        second["result"]["resultType"], "input_required",
        "{messages:?}"
    );
    let retry = roots_call(
        3,
        args,
        caps,
        None,
        answer(&second["result"]["requestState"], "file:///two"),
    );
    let done = json_of(post(&proxy, &retry, "application/json").await).await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], r#"[{"uri":"file:///two"}]"#,
        "{done}"
    );
    proxy.stop().await;
}

/// `server/discover` for a 2025-era child: the capabilities are
/// 2026-07-28's. 2025-11-25's experimental `tasks` capability (task
/// augmented requests, `tasks/list`, `tasks/result`) is not part of this
/// revision: tasks moved to the `io.modelcontextprotocol/tasks`
/// extension, advertised under `capabilities.extensions`, with another
/// protocol (changelog, major change 6; `basic/versioning`, "Extension
/// Negotiation"), which the proxy does not translate. The proxy passed
/// the child's `tasks` capability on.
#[tokio::test]
async fn discover_advertises_no_session_era_tasks() {
    let proxy = Proxy::start(&[]).await;
    let discover =
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":meta()}});
    let v = json_of(post(&proxy, &discover, "application/json").await).await;
    let caps = &v["result"]["capabilities"];
    assert!(caps.get("tasks").is_none(), "{v}");
    assert!(
        caps["tools"].is_object() && caps["resources"].is_object(),
        "{v}"
    );
    assert_eq!(v["result"]["supportedVersions"], json!([MODERN]), "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert!(v["result"]["ttlMs"].as_u64().is_some(), "{v}");
    assert!(v["result"]["cacheScope"].is_string(), "{v}");
    proxy.stop().await;
}

/// `basic/transports/streamable-http`, "Value Encoding": a value with
/// control characters (or leading or trailing whitespace) cannot be a
/// plain header value and MUST be sent Base64-encoded, for `Mcp-Name` and
/// `Mcp-Param-*` alike; "Servers MUST reject requests with a recognized
/// Mcp-Param-{Name} header that contains invalid characters", and a
/// header value with invalid characters is a HeaderMismatch (400,
/// -32020). HTTP lets a field value carry a tab; the proxy compared such
/// a value as it was and served the call when the body said the same.
#[tokio::test]
async fn a_plain_header_value_with_a_control_character_is_refused() {
    let proxy = Proxy::start(&[]).await;
    let call = |region: &str| {
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
            "name":"locate","arguments":{"region":region},"_meta":meta()}})
    };
    let headers = |region: &'static str| {
        [
            ("accept", "application/json"),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "locate"),
            ("mcp-param-region", region),
        ]
    };
    // Encoded, the same value is served.
    let ok = post_with(
        &proxy,
        &call("us\twest"),
        &headers("=?base64?dXMJd2VzdA==?="),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        json_of(ok).await["result"]["content"][0]["text"],
        "located in us\twest"
    );
    let r = post_with(&proxy, &call("us\twest"), &headers("us\twest")).await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    // Mcp-Name too.
    let mut body = call("x");
    body["params"]["name"] = json!("lo\tcate");
    let r = post_with(
        &proxy,
        &body,
        &[
            ("accept", "application/json"),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "lo\tcate"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["code"], -32020);
    proxy.stop().await;
}

/// `basic/transports/streamable-http`, "Protocol Version Header": the
/// header "MUST match the io.modelcontextprotocol/protocolVersion field
/// carried in the request body's _meta. If the values do not match, the
/// server MUST reject the request with 400 Bad Request and a
/// HeaderMismatch JSON-RPC error"; `basic/versioning`: "A request
/// carrying modern per-request _meta is served statelessly according to
/// this revision." A sessionless request whose `_meta` says 2026-07-28
/// under a session-era header went to the session era, which answered
/// -32600 "Mcp-Session-Id header is required": not a modern error, so a
/// dual-era client reads the proxy as a legacy server and falls back.
#[tokio::test]
async fn a_session_era_header_on_a_modern_body_is_a_header_mismatch() {
    let proxy = Proxy::start(&[]).await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":meta()}});
    let r = post_with(
        &proxy,
        &list,
        &[
            ("accept", "application/json"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    assert_eq!(v["id"], 1, "{v}");
    proxy.stop().await;
}

/// 2026-07-28 removed `notifications/elicitation/complete` (changelog,
/// minor change 11: the client learns the outcome of a URL elicitation by
/// retrying; it is not among the revision's server notifications), and a
/// notification on a request's stream "MUST relate to the originating
/// client request" (`basic/transports/streamable-http`). A 2025-era
/// child's completion notice, which concerns an elicitation and not the
/// call in flight, reached the 2026-07-28 request's stream.
#[tokio::test]
async fn a_removed_notification_does_not_reach_a_modern_request() {
    let proxy = Proxy::start(&[]).await;
    let mut meta = meta();
    meta["progressToken"] = json!("p1");
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"notify","arguments":{"method":"notifications/elicitation/complete"},"_meta":meta}});
    let messages =
        sse_messages(post(&proxy, &call, "application/json, text/event-stream").await).await;
    assert_eq!(
        messages.last().unwrap()["result"]["content"][0]["text"],
        "ok"
    );
    assert!(
        messages
            .iter()
            .all(|m| m["method"] != "notifications/elicitation/complete"),
        "{messages:?}"
    );
    proxy.stop().await;
}

/// A 2026-07-28 `tools/call` of `tool` with `args`, as plain JSON; the
/// status and the body.
async fn modern_tool(proxy: &Proxy, id: u64, tool: &str, args: Value) -> (u16, Value) {
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":tool,"arguments":args,"_meta":meta()}});
    let r = post(proxy, &call, "application/json").await;
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

/// `basic/index`, "Error Codes": -32000…-32019 is legacy, and "new
/// implementations SHOULD NOT use codes from this sub-range at all". The
/// proxy's own failures (the child died, a request timed out, an answer
/// over `--max-line-bytes`) reached 2026-07-28 clients as -32000; they
/// are -32603 (internal error) now, with the same message. A session-era
/// client still gets -32000 for the same failure.
#[tokio::test]
async fn the_proxys_own_failures_are_internal_errors_in_the_revision() {
    let proxy = Proxy::start(&["--request-timeout", "500ms", "--max-line-bytes", "65536"]).await;

    // Request timeout.
    let (_, v) = modern_tool(&proxy, 1, "sleep", json!({"ms": 5000})).await;
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("request timed out"),
        "{v}"
    );
    // The same timeout for a session-era client keeps -32000.
    let mut session = support::Client::new(&proxy.mcp());
    session.initialize("2025-11-25", json!({})).await;
    let old = session.call(json!(1), "sleep", json!({"ms": 5000})).await;
    assert_eq!(old["error"]["code"], -32000, "{old}");

    // An answer over --max-line-bytes, dropped.
    let (_, v) = modern_tool(
        &proxy,
        2,
        "misbehave_huge_line",
        json!({"bytes": 200000, "newline_after_ms": 10}),
    )
    .await;
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-line-bytes"),
        "{v}"
    );

    // The child dies with the call in flight.
    let (_, v) = modern_tool(&proxy, 3, "crash", json!({"code": 7})).await;
    assert_eq!(v["error"]["code"], -32603, "{v}");
    // And while it is down (or restarting), whatever the proxy answers
    // in its stead is never -32000.
    for id in 10..20 {
        let list = json!({"jsonrpc":"2.0","id":id,"method":"tools/list","params":{"_meta":meta()}});
        let r = post(&proxy, &list, "application/json").await;
        let v = json_of(r).await;
        if !v["error"].is_null() {
            assert_eq!(v["error"]["code"], -32603, "{v}");
        }
    }
    proxy.stop().await;
}

/// As above, for a failure the HTTP layer turns into a status: a child
/// that cannot be started is a 502 whose body was -32000.
#[tokio::test]
async fn a_child_that_cannot_start_is_an_internal_error_in_the_revision() {
    let proxy = Proxy::start_child(&[], "/nonexistent/mcp-server", &[]).await;
    let (status, v) = modern_tool(&proxy, 5, "echo", json!({"message": "hi"})).await;
    assert!(status >= 500, "{status} {v}");
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert_eq!(v["id"], 5, "{v}");
    // A session-era initialize still gets -32000.
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() >= 500, "{}", r.status());
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32000, "{v}");
    proxy.stop().await;
}

/// The audit log says what the client got: a 2026-07-28 call ended by
/// `--request-timeout` gets -32603 (see above), and its `tools.call`
/// record said `"code":-32000` (the session era's code for every
/// timeout), a code no client was sent. A session-era timeout keeps
/// -32000 in both.
#[tokio::test]
async fn a_timed_out_call_is_audited_with_the_code_its_client_got() {
    let audit = std::env::temp_dir().join(format!(
        "mcp-modern-{}-timeout-audit.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&audit);
    let proxy = Proxy::start(&[
        "--request-timeout",
        "500ms",
        "--audit-log",
        audit.to_str().unwrap(),
    ])
    .await;
    let (_, v) = modern_tool(&proxy, 1, "sleep", json!({"ms": 5000})).await;
    assert_eq!(v["error"]["code"], -32603, "{v}");
    let mut session = support::Client::new(&proxy.mcp());
    session.initialize("2025-11-25", json!({})).await;
    let old = session.call(json!(2), "sleep", json!({"ms": 5000})).await;
    assert_eq!(old["error"]["code"], -32000, "{old}");
    let records = || -> Vec<Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
            .filter(|v| v["event"] == "tools.call")
            .collect()
    };
    assert!(
        support::eventually(STEP, || records().len() >= 2).await,
        "two tools.call records: {:?}",
        records()
    );
    proxy.stop().await;
    let got: Vec<(Value, Value)> = records()
        .iter()
        .map(|r| (r["outcome"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("timeout"), json!(-32603)),
            (json!("timeout"), json!(-32000))
        ]
    );
    let _ = std::fs::remove_file(&audit);
}
