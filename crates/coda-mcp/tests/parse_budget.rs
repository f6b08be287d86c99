//! The parsed form of Coda's answers counted in `--max-read-bytes`,
//! measured as the peak memory of the real binary (`VmHWM`).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use fake_coda::{FakeCoda, Hostile};
use harness::command;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

fn answer(v: &Value) -> Hostile {
    Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: v.to_string().into_bytes(),
        ..Hostile::default()
    }
}

/// coda-mcp on raw pipes, its log (warnings only) discarded: trace
/// logging of thousands of requests would take longer than the test.
struct Raw {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// With the smallest read budget, 64 MiB.
async fn started(fake: &FakeCoda) -> Raw {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let mut cmd = command(
        fake,
        &[
            "--skip-token-check",
            "--no-rate-limit",
            "--max-read-bytes",
            "67108864",
        ],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut raw = Raw {
        stdin: child.stdin.take().unwrap(),
        out: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
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

/// Regression: `--max-read-bytes` counted an answer's bytes while they
/// were read, not the `serde_json::Value` parsed from them, which
/// `--max-answer-values` bounds by count only. Small objects cost most:
/// `{"a":0}` is 8 bytes of JSON and 2 of the million values, parsed a
/// `BTreeMap` leaf of 632 bytes and more. 200,000 of them (1.6 MB)
/// grew the peak memory by 140 MB under a 64 MiB budget; 499,999 (4 MB,
/// under the default 1,000,000 values) are 350 MB, and every one of 64
/// calls could hold that at once against a 256 MiB budget. An answer's
/// estimated parse is now counted beside its bytes: this one does not fit
/// and is refused unparsed, saying to retry and ask for less.
#[tokio::test]
async fn an_answer_whose_parse_does_not_fit_the_budget_is_refused() {
    let fake = FakeCoda::start().await;
    let items: Vec<Value> = (0..200_000).map(|_| json!({"a": 0})).collect();
    let doc = json!({"id": "doc1", "name": "Doc", "items": items});
    fake.answer_next("GET", "/docs/doc1", 1, answer(&doc));
    let mut raw = started(&fake).await;
    let before = peak(&raw);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "coda_get_document", "arguments": {"docId": "doc1"}}});
    send(&mut raw, &call).await;
    let a = next(&mut raw).await;
    let grew = peak(&raw).saturating_sub(before);
    assert!(
        grew < 40 << 20,
        "peak memory grew by {} MB: {a:.600}",
        grew >> 20
    );
    assert_eq!(a["result"]["isError"], true, "{a:.600}");
    let text = a["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("--max-read-bytes"), "{text}");
}
