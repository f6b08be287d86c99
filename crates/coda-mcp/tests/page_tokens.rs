//! What a list call keeps of Coda's page tokens (up to 4096 bytes each,
//! `MAX_PAGE_TOKEN_BYTES`), measured as the peak memory of the real
//! binary (`VmHWM`).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use fake_coda::{FakeCoda, Hostile};
use harness::{Raw, command};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A token as long as coda-mcp follows.
fn long_token(i: usize) -> String {
    let head = format!("tok-{i}-");
    format!("{head}{}", "t".repeat(4000 - head.len()))
}

fn answer(v: &Value) -> Hostile {
    Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: v.to_string().into_bytes(),
        ..Hostile::default()
    }
}

async fn started(fake: &FakeCoda) -> Raw {
    let mut raw = harness::spawn_traced(command(fake, &["--skip-token-check", "--no-rate-limit"]));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "page-tokens-test", "version": "0"}}});
    send(&mut raw, &init).await;
    next(&mut raw).await;
    send(
        &mut raw,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    raw
}

async fn send(raw: &mut Raw, msg: &Value) {
    raw.stdin
        .write_all(msg.to_string().as_bytes())
        .await
        .unwrap();
    raw.stdin.write_all(b"\n").await.unwrap();
    raw.stdin.flush().await.unwrap();
}

async fn next(raw: &mut Raw) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), raw.out.next_line())
        .await
        .expect("no answer")
        .unwrap()
        .expect("stdout closed");
    serde_json::from_str(&line).unwrap()
}

/// The peak resident memory of the process, in bytes.
fn peak(raw: &Raw) -> u64 {
    let pid = raw.child.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Lists the tables of doc1 with `fetchAll`; returns the result and how
/// much the peak memory grew.
async fn list_all(raw: &mut Raw) -> (Value, u64) {
    let before = peak(raw);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "coda_list_tables", "arguments": {"docId": "doc1", "fetchAll": true}}});
    send(raw, &call).await;
    let a = next(raw).await;
    assert_eq!(a["id"], 2, "{a}");
    (a, peak(raw).saturating_sub(before))
}

/// Regression: every item gathered kept its own copy of the token of the
/// page it came from (to resume there), so a page of 20,000 small items
/// (`{}`: 60 KB of JSON) after a 4000-byte token held 80 MB of copies of
/// it (a page of 499,999, under the default `--max-answer-values` that
/// counts `{` and `,`: 2 GB, from one answer of 1.5 MB). The items now
/// share the page's token.
#[tokio::test]
async fn the_items_of_a_page_share_its_token() {
    let fake = FakeCoda::start().await;
    let page1 = json!({"items": [{}], "nextPageToken": long_token(0)});
    let items: Vec<Value> = (0..20_000).map(|_| json!({})).collect();
    fake.answer_next("GET", "/docs/doc1/tables", 1, answer(&page1));
    fake.answer_next(
        "GET",
        "/docs/doc1/tables",
        1,
        answer(&json!({"items": items})),
    );
    let mut raw = started(&fake).await;
    let (a, grew) = list_all(&mut raw).await;
    assert!(a["result"].is_object(), "{a}");
    let log = raw.finish().await;
    assert!(
        grew < 30 << 20,
        "peak memory grew by {} MB: {log:.2000}",
        grew >> 20
    );
}
