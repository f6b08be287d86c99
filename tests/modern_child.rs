//! A 2026-07-28 child (`examples/modern_server`, no `initialize`) behind the
//! proxy: modern clients pass through, session-era clients get a handshake
//! synthesized from `server/discover` and per-request `_meta` added.

mod support;

use serde_json::{Value, json};
use support::{Client, Proxy, SseStream, text_of};

const MODERN: &str = "2026-07-28";

async fn modern_call(proxy: &Proxy, id: Value, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    let r = req
        .json(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn proxy_over_modern(flags: &[&str]) -> Proxy {
    Proxy::start_child(flags, &support::example("modern_server"), &[]).await
}

#[tokio::test]
async fn session_era_clients_work_over_a_modern_child() {
    let proxy = proxy_over_modern(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    let init = c.initialize("2025-06-18", json!({"sampling": {}})).await;
    assert_eq!(
        init["protocolVersion"], "2025-06-18",
        "the client's own revision"
    );
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(init["serverInfo"]["name"].is_string(), "{init}");
    // The modern child refuses requests without _meta version and capabilities; the proxy adds them.
    let r = c
        .call(json!(1), "echo", json!({"message":"translated"}))
        .await;
    assert_eq!(text_of(&r), "translated", "{r}");
    let msgs = c.request(json!(2), "tools/call", json!({"name":"progress","arguments":{"steps":2,"delay_ms":5},"_meta":{"progressToken":"pt"}})).await;
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[0]["params"]["progressToken"], "pt");
    // ping is gone in 2026-07-28; the proxy answers it for the child.
    assert_eq!(
        c.request(json!(3), "ping", json!({})).await[0]["result"],
        json!({})
    );
    proxy.stop().await;
}

#[tokio::test]
async fn modern_clients_pass_through_to_a_modern_child() {
    let proxy = proxy_over_modern(&["--upstream-protocol", "modern"]).await;
    let d = modern_call(&proxy, json!(1), "server/discover", json!({})).await;
    assert_eq!(d["result"]["supportedVersions"], json!([MODERN]));
    assert!(
        d["result"]["ttlMs"].as_u64().unwrap() > 0,
        "the child's own DiscoverResult: {d}"
    );
    let r = modern_call(
        &proxy,
        json!("x"),
        "tools/call",
        json!({"name":"add","arguments":{"a":20,"b":22}}),
    )
    .await;
    assert_eq!(r["id"], "x");
    assert_eq!(text_of(&r), "42");
    proxy.stop().await;
}

#[tokio::test]
async fn a_legacy_only_proxy_passes_the_childs_refusal_of_initialize_on() {
    let proxy = proxy_over_modern(&["--upstream-protocol", "legacy"]).await;
    let c = Client::new(&proxy.mcp());
    let r = c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("mcp-session-id").is_none(),
        "no session for a failed initialize"
    );
    let v = support::read_messages(r).await;
    assert_eq!(v[0]["error"]["code"], -32601, "{v:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_legacy_only_proxy_answers_modern_requests_so_dual_era_clients_fall_back() {
    let proxy = Proxy::start(&["--upstream-protocol", "legacy"]).await;
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "server/discover")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":MODERN}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let code = r.json::<Value>().await.unwrap()["error"]["code"]
        .as_i64()
        .unwrap();
    assert!(
        !(-32022..=-32020).contains(&code),
        "a modern error code ({code}) would stop the fallback"
    );
    // And the fallback works.
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        text_of(
            &c.call(json!(1), "echo", json!({"message":"fell back"}))
                .await
        ),
        "fell back"
    );
    proxy.stop().await;
}

/// What an `everything` child saw before its `initialize`.
async fn early_requests(c: &Client) -> Value {
    let r = c.call(json!("early"), "early_requests", json!({})).await;
    serde_json::from_str(&text_of(&r)).unwrap()
}

/// The same, asked by a 2026-07-28 client (of the shared child for them).
async fn modern_early_requests(proxy: &Proxy) -> Value {
    let r = modern_call(
        proxy,
        json!("early"),
        "tools/call",
        json!({"name":"early_requests","arguments":{}}),
    )
    .await;
    serde_json::from_str(&text_of(&r)).unwrap()
}

#[tokio::test]
async fn only_the_child_of_modern_clients_is_probed_with_server_discover() {
    // Per-session mode over `everything`, a 2025-era child.
    let proxy = Proxy::start(&[]).await;
    let mut session = Client::new(&proxy.mcp());
    session.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        early_requests(&session).await,
        json!([]),
        "a session's own child starts with initialize"
    );
    assert_eq!(
        modern_early_requests(&proxy).await,
        json!(["server/discover"]),
        "the child of 2026-07-28 clients is probed first"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_child_silent_to_the_probe_is_initialized_once_the_probe_times_out() {
    let proxy = Proxy::start_child(
        &["--probe-timeout", "200ms"],
        &support::example("everything"),
        &["--silent-before-initialize"],
    )
    .await;
    let started = std::time::Instant::now();
    let r = modern_call(
        &proxy,
        json!(1),
        "tools/call",
        json!({"name":"echo","arguments":{"message":"legacy"}}),
    )
    .await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "the first request waited for the probe"
    );
    assert_eq!(text_of(&r), "legacy");
    assert_eq!(
        modern_early_requests(&proxy).await,
        json!(["server/discover"])
    );
    proxy.stop().await;
}

async fn initialize_refusals(c: &Client) -> String {
    text_of(&c.call(json!("n"), "initialize_refusals", json!({})).await)
}

#[tokio::test]
async fn once_a_child_refused_initialize_later_children_start_with_server_discover() {
    let proxy = proxy_over_modern(&[]).await;
    let mut first = Client::new(&proxy.mcp());
    first.initialize("2025-11-25", json!({})).await;
    assert_eq!(initialize_refusals(&first).await, "1");
    let mut second = Client::new(&proxy.mcp());
    second.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        initialize_refusals(&second).await,
        "0",
        "the second child was not sent initialize"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_shared_child_of_session_clients_starts_with_initialize() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    assert_eq!(early_requests(&c).await, json!([]));
    proxy.stop().await;
}

/// A session client that declares elicitation, over `modern_server`, and
/// the stream of its call of `ask` with `args`.
async fn ask_over_sse(proxy: &Proxy, id: Value, args: Value) -> (Client, SseStream) {
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"elicitation": {}})).await;
    let resp = c
        .post(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"ask","arguments":args}}))
        .await;
    (c, SseStream::new(resp))
}

#[tokio::test]
async fn a_modern_childs_input_required_becomes_requests_to_a_session_client() {
    let proxy = proxy_over_modern(&[]).await;
    let (c, mut stream) =
        ask_over_sse(&proxy, json!(7), json!({"kind":"elicitation","rounds":2})).await;
    // Two rounds: each an elicitation request on the call's own stream,
    // answered by the client with a POST, then the call's result.
    for (round, name) in ["ada", "grace"].iter().enumerate() {
        let request = stream.next_json().await;
        assert_eq!(request["method"], "elicitation/create", "{request}");
        assert_eq!(
            request["params"]["message"],
            format!("Your name, please (round {round})")
        );
        let answered = c
            .post(&json!({"jsonrpc":"2.0","id":request["id"],"result":{"action":"accept","content":{"name":name}}}))
            .await;
        assert_eq!(answered.status(), 202);
    }
    let result = stream.next_json().await;
    assert_eq!(result["id"], 7);
    assert_eq!(
        serde_json::from_str::<Value>(&text_of(&result)).unwrap(),
        json!({"action":"accept","content":{"name":"grace"}})
    );
    proxy.stop().await;
}

#[tokio::test]
async fn input_the_session_client_cannot_give_fails_the_call_at_once() {
    let proxy = proxy_over_modern(&[]).await;
    // A refusal from the client ends the call with an error naming it.
    let (c, mut stream) = ask_over_sse(&proxy, json!(1), json!({"kind":"elicitation"})).await;
    let request = stream.next_json().await;
    c.post(&json!({"jsonrpc":"2.0","id":request["id"],"error":{"code":-32600,"message":"user closed the dialog"}}))
        .await;
    let answer = stream.next_json().await;
    assert_eq!(answer["id"], 1);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("user closed the dialog"), "{answer}");

    // A capability the client never declared: the child itself refuses to
    // ask (it sees the capabilities the proxy forwards in `_meta`).
    let r = c.call(json!(2), "ask", json!({"kind":"sampling"})).await;
    assert_eq!(text_of(&r), "the client did not declare sampling");
    // A child that asks anyway: the proxy does not forward the request.
    let r = c
        .call(json!(3), "ask", json!({"kind":"sampling","force":true}))
        .await;
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("sampling/createMessage, a capability the client did not declare"),
        "{r}"
    );
    proxy.stop().await;
}

/// Regression: a modern child's log messages for a 2026-07-28 request that
/// asked for them in `_meta` never reached the client. The proxy filtered
/// them by the request's level, which it recorded only for a 2025-era
/// child: over a modern child the level was none, and none means no log
/// message at all.
#[tokio::test]
async fn a_modern_childs_log_messages_reach_the_request_that_asked() {
    let proxy = proxy_over_modern(&["--upstream-protocol", "modern"]).await;
    let call = |asked: Option<&str>| {
        // A progress token: an answer on SSE, where log messages travel.
        let mut meta = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "progressToken": "p",
        });
        if let Some(level) = asked {
            meta["io.modelcontextprotocol/logLevel"] = json!(level);
        }
        reqwest::Client::new()
            .post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "log")
            .json(
                &json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
                "name":"log","arguments":{"level":"error"},"_meta":meta}}),
            )
            .send()
    };
    let r = call(Some("warning")).await.unwrap();
    assert_eq!(r.status(), 200);
    let msgs = support::read_messages(r).await;
    assert_eq!(text_of(msgs.last().unwrap()), "logged", "{msgs:?}");
    assert_eq!(msgs.len(), 2, "the log message, then the answer: {msgs:?}");
    assert_eq!(msgs[0]["method"], "notifications/message", "{msgs:?}");
    assert_eq!(msgs[0]["params"]["level"], "error", "{msgs:?}");
    // Not asked for: none, and the child sends none.
    let msgs = support::read_messages(call(None).await.unwrap()).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(text_of(&msgs[0]), "not logged");
    proxy.stop().await;
}
