//! Cut-through forwarding of long answers (`src/tail.rs`): a JSON body
//! whose answer passes 128 KiB starts before the child has finished
//! writing it, arrives intact and re-addressed, and fails (rather than
//! ending early but parseable) when the child cuts it off, passes the line
//! cap or stalls past the request timeout. The child is `everything`'s
//! `misbehave_slow_answer`, which writes half a result, pauses, then ends
//! it, exits or stalls.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Proxy, modern_post};

const HALF_A_SECOND: Duration = Duration::from_millis(500);

fn slow_answer(id: Value, bytes: u64, pause_ms: u64, then: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"misbehave_slow_answer","arguments":{"bytes":bytes,"pause_ms":pause_ms,"then":then}}})
}

/// A session whose requests take JSON bodies only.
async fn json_session(proxy: &Proxy) -> Client {
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    c.sibling("application/json")
}

/// Reads a body to its end, noting when its first bytes came.
async fn read_body(
    mut resp: reqwest::Response,
    started: Instant,
) -> (Option<Duration>, Result<Vec<u8>, reqwest::Error>) {
    let mut first = None;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                first.get_or_insert_with(|| started.elapsed());
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (first, Ok(body)),
            Err(e) => return (first, Err(e)),
        }
    }
}

#[tokio::test]
async fn a_long_answer_starts_before_the_child_finishes_it_and_arrives_intact() {
    for mode in [&[][..], &["--shared"][..]] {
        let proxy = Proxy::start(mode).await;
        let c = json_session(&proxy).await;
        let started = Instant::now();
        let resp = c
            .post(&slow_answer(json!("big"), 1 << 20, 1500, "end"))
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let (first, body) = read_body(resp, started).await;
        let first = first.expect("a body");
        // Half the answer was out while the child paused for 1.5 s.
        assert!(
            first < Duration::from_millis(1200),
            "{mode:?}: first bytes after {first:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(1500));
        let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(answer["id"], "big", "{mode:?}");
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text.len(), 1 << 20);
        assert!(text.starts_with('a') && text.ends_with('b'));
        // The child goes on answering.
        let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
        assert_eq!(echo["result"]["content"][0]["text"], "after", "{mode:?}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_long_answer_the_child_cuts_off_fails_the_body_instead_of_ending_it() {
    let proxy = Proxy::start(&[]).await;
    let c = json_session(&proxy).await;
    let started = Instant::now();
    let resp = c.post(&slow_answer(json!(1), 1 << 20, 300, "exit")).await;
    assert_eq!(resp.status(), 200);
    let (first, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(first.is_some());
    assert!(
        body.is_err(),
        "a cut-off answer must not end like a whole one"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_long_answer_over_the_line_cap_fails_the_body_and_the_child_serves_on() {
    let proxy = Proxy::start(&["--max-line-bytes", "512K"]).await;
    let c = json_session(&proxy).await;
    let started = Instant::now();
    let resp = c.post(&slow_answer(json!(1), 4 << 20, 0, "end")).await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(body.is_err(), "an answer over the cap must fail");
    let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
    assert_eq!(echo["result"]["content"][0]["text"], "after");
    proxy.stop().await;
}

#[tokio::test]
async fn a_long_answer_that_stalls_fails_at_the_request_timeout() {
    let proxy = Proxy::start(&["--request-timeout", "2s"]).await;
    let c = json_session(&proxy).await;
    let started = Instant::now();
    let resp = c.post(&slow_answer(json!(1), 1 << 20, 0, "stall")).await;
    let (first, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(first.is_some_and(|f| f < Duration::from_secs(2)));
    assert!(body.is_err(), "a stalled answer must fail");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) - HALF_A_SECOND && took < Duration::from_secs(5),
        "failed after {took:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_2026_07_28_client_gets_a_long_answer_as_it_arrives_with_its_result_type() {
    let proxy = Proxy::start(&[]).await;
    let mut body = slow_answer(json!(7), 1 << 20, 1000, "end");
    body["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let started = Instant::now();
    let resp = modern_post(&proxy, &body, "application/json").await;
    assert_eq!(resp.status(), 200);
    let (first, body) = read_body(resp, started).await;
    assert!(
        first.is_some_and(|f| f < Duration::from_millis(900)),
        "{first:?}"
    );
    let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["resultType"], "complete");
    assert_eq!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .len(),
        1 << 20
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_sse_answer_is_still_read_whole_and_arrives_intact() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let msgs = c
        .request(
            json!(1),
            "tools/call",
            json!({"name":"misbehave_slow_answer","arguments":{"bytes":1 << 20,"pause_ms":100,"then":"end"}}),
        )
        .await;
    let answer = msgs.last().unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .len(),
        1 << 20
    );
    proxy.stop().await;
}
