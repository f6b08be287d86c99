//! The 2026-07-28 revision read clause by clause against what the proxy
//! presents to a client, over a 2025-era child (the `everything`
//! example): error responses, log messages, error codes and methods that
//! revision no longer has. Each test names the clause it checks.

mod support;

use serde_json::{Value, json};
use support::{Proxy, STEP};

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
