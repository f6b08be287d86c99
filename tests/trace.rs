//! W3C trace context: a request's `traceparent` and `tracestate` headers reach
//! the child in `params._meta`, for session-era and 2026-07-28 clients, and a
//! client's own `_meta.traceparent` is left as it is. The child (`everything`'s
//! `meta` tool) reports the `_meta` it received.

mod support;

use serde_json::{Value, json};
use support::{Client, Proxy, read_messages, text_of};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const MODERN: &str = "2026-07-28";

/// The `_meta` the child saw for a `tools/call meta` sent with `headers`.
async fn meta_seen(client: &Client, body: Value, headers: &[(&str, &str)]) -> Value {
    let mut req = client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", client.accept)
        .json(&body);
    if let Some(s) = &client.session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", &client.version);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let msgs = read_messages(resp).await;
    serde_json::from_str(&text_of(msgs.last().unwrap())).unwrap()
}

#[tokio::test]
async fn a_session_clients_trace_context_reaches_the_child() {
    let proxy = Proxy::start(&[]).await;
    let mut client = Client::new(&proxy.mcp());
    client.initialize("2025-11-25", json!({})).await;
    let call = |meta: Option<Value>| {
        let mut params = json!({"name":"meta","arguments":{}});
        if let Some(m) = meta {
            params["_meta"] = m;
        }
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params})
    };

    let seen = meta_seen(
        &client,
        call(None),
        &[("traceparent", PARENT), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(seen["traceparent"], PARENT, "{seen}");
    assert_eq!(seen["tracestate"], "vendor=abc", "{seen}");

    // Beside a progress token, and never over the client's own context.
    let seen = meta_seen(
        &client,
        call(Some(json!({"progressToken":"p1"}))),
        &[("traceparent", PARENT)],
    )
    .await;
    assert_eq!(seen["traceparent"], PARENT, "{seen}");
    assert!(seen.get("progressToken").is_some(), "{seen}");
    let own = "00-11111111111111111111111111111111-2222222222222222-00";
    let seen = meta_seen(
        &client,
        call(Some(json!({"traceparent": own}))),
        &[("traceparent", PARENT)],
    )
    .await;
    assert_eq!(seen["traceparent"], own, "{seen}");

    // No header, or a malformed one: nothing added.
    let seen = meta_seen(&client, call(None), &[]).await;
    assert!(seen.get("traceparent").is_none(), "{seen}");
    let seen = meta_seen(&client, call(None), &[("traceparent", "00-zz-yy-01")]).await;
    assert!(seen.get("traceparent").is_none(), "{seen}");
    proxy.stop().await;
}

/// Regression (review): a `tracestate` the W3C text calls invalid (a
/// member without `=`, an uppercase key, a key twice across two header
/// lines) reached the child beside a valid `traceparent`. Now it is
/// dropped whole; the `traceparent` still goes, and a valid list from two
/// lines goes joined.
#[tokio::test]
async fn an_invalid_tracestate_does_not_reach_the_child() {
    let proxy = Proxy::start(&[]).await;
    let mut client = Client::new(&proxy.mcp());
    client.initialize("2025-11-25", json!({})).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"meta","arguments":{}}});
    for bad in [&["novalue"][..], &["Vendor=1"], &["a=1", "a=2"]] {
        let mut headers = vec![("traceparent", PARENT)];
        headers.extend(bad.iter().map(|v| ("tracestate", *v)));
        let seen = meta_seen(&client, call.clone(), &headers).await;
        assert_eq!(seen["traceparent"], PARENT, "{bad:?}: {seen}");
        assert!(seen.get("tracestate").is_none(), "{bad:?}: {seen}");
    }
    let good = [
        ("traceparent", PARENT),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    ];
    let seen = meta_seen(&client, call, &good).await;
    assert_eq!(seen["tracestate"], "a=1,b=2", "{seen}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_2026_07_28_clients_trace_context_reaches_the_child() {
    let proxy = Proxy::start(&[]).await;
    let client = Client::new(&proxy.mcp());
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"meta","arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":MODERN,
                 "io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},
                 "io.modelcontextprotocol/clientCapabilities":{}}}});
    let seen = meta_seen(
        &client,
        body,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "meta"),
            ("traceparent", PARENT),
        ],
    )
    .await;
    assert_eq!(seen["traceparent"], PARENT, "{seen}");
    proxy.stop().await;
}

/// Regression: a later version's `traceparent` was carried whole, and
/// what follows its four fields is the client's to size (up to the whole
/// request head, about 400 KB): copied into each of a batch's 1,024
/// messages, one 30 KB request took the proxy from 21 MB to 322 MB.
/// Only the fields level 1 defines are carried now.
#[tokio::test]
async fn a_later_versions_traceparent_is_carried_as_its_four_fields() {
    let proxy = Proxy::start(&[]).await;
    let mut client = Client::new(&proxy.mcp());
    client.initialize("2025-03-26", json!({})).await;
    let fields = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let long = format!("{fields}-{}", "a".repeat(64 * 1024));
    let calls: Vec<Value> = (0..8)
        .map(|i| {
            json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
                        "params":{"name":"meta","arguments":{}}})
        })
        .collect();
    let resp = client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", client.accept)
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-03-26")
        .header("traceparent", &long)
        .json(&Value::Array(calls))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A batch's answers come as one array or as one event each.
    let answers: Vec<Value> = read_messages(resp)
        .await
        .into_iter()
        .flat_map(|m| match m {
            Value::Array(a) => a,
            one => vec![one],
        })
        .filter(|m| m.get("id").is_some())
        .collect();
    assert_eq!(answers.len(), 8);
    for a in &answers {
        let seen: Value = serde_json::from_str(&text_of(a)).unwrap();
        let carried = seen["traceparent"].as_str().unwrap_or_default();
        assert_eq!(
            carried.len(),
            fields.len(),
            "{} bytes carried",
            carried.len()
        );
        assert_eq!(carried, fields);
    }
    proxy.stop().await;
}
