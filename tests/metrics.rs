//! `GET /metrics`: Prometheus text of a proxy that really served sessions,
//! against the proxy in-process and real `everything` children.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Client, Proxy, STEP, text_of};

const KEY: &str = "metrics-test-key-0123456789";

async fn scrape(proxy: &Proxy, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", proxy.base()));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    tokio::time::timeout(STEP, req.send())
        .await
        .unwrap()
        .unwrap()
}

/// The value of the sample `name` (with its labels, exactly as printed).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_sessions_children_requests_and_exits() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-06-18", json!({})).await;
    let r = c.call(json!(1), "echo", json!({"message": "hi"})).await;
    assert_eq!(text_of(&r), "hi");

    let resp = scrape(&proxy, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert_eq!(
        sample(&text, "mcp_proxy_sessions_open"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "mcp_proxy_children_alive"), Some(1.0));
    assert_eq!(sample(&text, "mcp_proxy_child_spawns_total"), Some(1.0));
    let posts = sample(
        &text,
        "mcp_proxy_http_requests_total{era=\"session\",method=\"POST\",outcome=\"2xx\"}",
    )
    .unwrap_or(0.0);
    // initialize, notifications/initialized, tools/call.
    assert!(posts >= 3.0, "{text}");
    assert!(sample(&text, "mcp_proxy_request_bytes_total").unwrap() > 100.0);
    assert!(sample(&text, "mcp_proxy_response_bytes_total").unwrap() > 100.0);
    assert!(
        sample(
            &text,
            "mcp_proxy_request_duration_seconds_count{era=\"session\"}"
        )
        .unwrap()
            >= 3.0
    );
    // No label carries a session id.
    let sid = c.session.clone().unwrap();
    assert!(!text.contains(&sid));

    // Ending the session stops its child: counted as stopped by the proxy.
    let resp = c.delete(&proxy.mcp()).await;
    assert!(resp.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut last, mut stopped) = (String::new(), false);
    while !stopped && tokio::time::Instant::now() < deadline {
        last = scrape(&proxy, None).await.text().await.unwrap();
        stopped = sample(&last, "mcp_proxy_child_exits_total{reason=\"stopped\"}") == Some(1.0);
        if !stopped {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(stopped, "{last}");
    assert_eq!(sample(&last, "mcp_proxy_children_alive"), Some(0.0));
    assert_eq!(sample(&last, "mcp_proxy_sessions_open"), Some(0.0));
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_are_open_by_default_and_count_auth_failures() {
    let proxy = Proxy::start(&["--api-key", KEY]).await;
    let c = Client::new(&proxy.mcp());
    let resp = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .await;
    assert_eq!(resp.status(), 401);
    let resp = scrape(&proxy, None).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(
        sample(&text, "mcp_proxy_auth_failures_total{reason=\"key\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains(KEY));
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_auth_requires_the_key() {
    let proxy = Proxy::start(&["--api-key", KEY, "--metrics-auth"]).await;
    assert_eq!(scrape(&proxy, None).await.status(), 401);
    assert_eq!(
        scrape(&proxy, Some("wrong-key-wrong-key-wrong"))
            .await
            .status(),
        401
    );
    let resp = scrape(&proxy, Some(KEY)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(
        sample(&text, "mcp_proxy_auth_failures_total{reason=\"key\"}"),
        Some(2.0),
        "{text}"
    );
    proxy.stop().await;
}
