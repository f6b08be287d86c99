//! Regression: how long a client's request ids may be, on the front ends
//! without a session. Each test plays the client against a real proxy on
//! 127.0.0.1:0 over the `everything` child, and every wait is bounded.

mod support;

use serde_json::{Value, json};
use support::{Proxy, STEP};

const MODERN: &str = "2026-07-28";

fn call(id: &str, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
}

fn echo(id: &str) -> Value {
    call(id, "echo", json!({"message": "hi"}))
}

/// The same call as a 2026-07-28 request: its `_meta` says the revision
/// (what else it holds stays).
fn modern(mut body: Value) -> Value {
    let meta = &mut body["params"]["_meta"];
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    body
}

/// How a test's client speaks.
#[derive(Clone, Copy)]
enum Front {
    /// Session-era POSTs without a session (`--stateless`).
    Stateless,
    /// 2026-07-28 requests, with the headers that revision requires.
    Modern,
}

/// A POST of `body` by the holder of `key` (none: anonymous), answered in
/// JSON or SSE as `accept` says.
fn post(
    proxy: &Proxy,
    front: Front,
    key: Option<&str>,
    body: &Value,
    accept: &str,
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", accept);
    let body = match front {
        Front::Stateless => body.clone(),
        Front::Modern => {
            req = req
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", body["method"].as_str().unwrap());
            if let Some(name) = body["params"]["name"].as_str() {
                req = req.header("mcp-name", name);
            }
            modern(body.clone())
        }
    };
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(body.to_string())
}

/// Regression: the 2026-07-28 front end and `--stateless` kept a request
/// id or `_meta.progressToken` of any length (up to `--max-body-bytes`)
/// while the request was in flight; the session-era front ends refused
/// one over 1 KiB.
#[tokio::test]
async fn ids_and_progress_tokens_over_a_kibibyte_are_refused_without_a_session() {
    for (front, flags) in [
        (Front::Modern, &[][..]),
        (Front::Stateless, &["--stateless"][..]),
    ] {
        let proxy = Proxy::start(flags).await;
        let send = |body: Value| {
            let req = post(&proxy, front, None, &body, "application/json");
            async move {
                let r = tokio::time::timeout(STEP, req.send())
                    .await
                    .unwrap()
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or_default())
            }
        };
        let too_long = "x".repeat(4096);
        let (status, body) = send(echo(&too_long)).await;
        assert_eq!(status, 400, "{}", short(&body));
        assert_eq!(body["error"]["code"], -32600, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("1024"),
            "{body}"
        );
        let mut with_token = echo("t");
        with_token["params"]["_meta"] = json!({"progressToken": too_long});
        let (status, body) = send(with_token).await;
        assert_eq!(status, 400, "{}", short(&body));
        let (status, body) = send(echo(&"x".repeat(1000))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], "x".repeat(1000));
        proxy.stop().await;
    }
}

/// The start of an answer that may echo a long id.
fn short(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}
