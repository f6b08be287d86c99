//! Hostile 2026-07-28 clients: header tricks, `requestState` replayed by
//! someone else or on another call, and `subscriptions/listen` filters
//! that ask for far more than a child should be made to track.

mod support;

use serde_json::{Value, json};
use support::{Proxy, STEP};

const MODERN: &str = "2026-07-28";

fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// POSTs `body` as a 2026-07-28 request with the standard headers derived
/// from it, then `extra` (appended, so a name may occur twice).
async fn post(
    proxy: &Proxy,
    key: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let method = body["method"].as_str().unwrap_or_default();
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = body["params"]["name"]
        .as_str()
        .or(body["params"]["uri"].as_str())
    {
        req = req.header("mcp-name", name);
    }
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(STEP, req.body(body.to_string()).send())
        .await
        .expect("an answer in time")
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> Value {
    let text = tokio::time::timeout(STEP, r.text()).await.unwrap().unwrap();
    let text = text.trim();
    // An SSE answer: the last data line is the response.
    if let Some(data) = text.lines().rev().find_map(|l| l.strip_prefix("data:")) {
        return serde_json::from_str(data.trim()).unwrap();
    }
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_second_mcp_method_or_mcp_name_header_is_a_header_mismatch() {
    let proxy = Proxy::start(&[]).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"message":"hi"},"_meta":meta(json!({}))}});
    // The first copy says what the body says; an intermediary that reads
    // the last one would route on something else.
    for extra in [
        [("mcp-name", "locate")],
        [("mcp-method", "tools/list")],
        [("mcp-protocol-version", "2025-11-25")],
    ] {
        let r = post(&proxy, None, &call, &extra).await;
        assert_eq!(r.status(), 400, "{extra:?}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], -32020, "{extra:?}: {v}");
    }
    // The same request with one copy of each is served.
    let r = post(&proxy, None, &call, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["result"]["content"][0]["text"], "hi");
    proxy.stop().await;
}
