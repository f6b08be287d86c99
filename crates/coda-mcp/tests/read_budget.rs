//! Regression: each answer from Coda was capped at 32 MiB, but nothing
//! bounded them together, so the 64 calls `--max-pending-requests` lets
//! run could hold 2 GiB of bodies (an export twice that). `--max-read-bytes`
//! bounds the bytes of answers held at once: an answer that finds no room
//! fails with an error saying to retry and to ask for less, no call hangs,
//! and the room comes back when each body is dropped.
//!
//! The answers here come without a Content-Length, in pieces, all at once
//! ([`fake_coda::FakeCoda::trickle_next`]): each grows to 32 MiB while it
//! is read, so the smallest budget the flag takes (64 MiB) holds two.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Harness, start, text};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

const BUDGET: usize = 64 * 1024 * 1024;
/// An answer's size: over 16 MiB, so a doubling buffer holds 32 MiB.
const ANSWER: usize = 20 * 1024 * 1024;
/// Longest a call may take here: far less than a hang would.
const CALL_BOUND: Duration = Duration::from_secs(25);

/// Starts coda-mcp with the smallest read budget.
async fn small_budget() -> Harness {
    let budget = BUDGET.to_string();
    start(&["--max-read-bytes", &budget, "--call-timeout-secs", "15"]).await
}

/// `n` calls of `tool` at once, each bounded by [`CALL_BOUND`].
async fn at_once(h: &Harness, n: usize, tool: &str, args: &Value) -> Vec<CallToolResult> {
    let calls = (0..n).map(|_| tokio::time::timeout(CALL_BOUND, h.call(tool, args.clone())));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("a call hung on the read budget"))
        .collect()
}

/// How many of `results` were read and how many refused for want of room;
/// every refusal says what happened and what to do, and nothing else fails.
fn read_and_refused(results: &[CallToolResult]) -> (usize, usize) {
    let (mut read, mut refused) = (0, 0);
    for r in results {
        let t = text(r);
        if r.is_error == Some(true) {
            assert!(
                t.contains("Coda's answer was not read")
                    && t.contains("--max-read-bytes")
                    && t.contains(&format!("at most {BUDGET} bytes"))
                    && t.contains("retry the call")
                    && t.contains("smaller limit"),
                "{t}"
            );
            refused += 1;
        } else {
            read += 1;
        }
    }
    (read, refused)
}

/// No byte of the budget is held.
async fn all_room_back(h: &Harness) {
    let status = h.ok("coda_rate_limit_status", json!({})).await;
    assert_eq!(status["readBudget"]["maxBytes"], BUDGET, "{status}");
    assert_eq!(status["readBudget"]["heldBytes"], 0, "{status}");
}

#[tokio::test]
async fn concurrent_api_answers_past_the_read_budget_fail_clearly_and_give_their_room_back() {
    let h = small_budget().await;
    let path = "/docs/doc1/pages/canvas-overview/content";
    let args = json!({"docId": "doc1", "pageIdOrName": "canvas-overview"});
    // A page of no elements, padded to 20 MiB.
    let big = fake_coda::Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: serde_json::to_vec(&json!({"items": [], "pad": "x".repeat(ANSWER)})).unwrap(),
        ..Default::default()
    };

    // Six at once: 6 × 32 MiB asked of 64 MiB.
    h.fake.answer_next("GET", path, 6, big.clone());
    h.fake
        .trickle_next("GET", path, 6, 1 << 20, Duration::from_millis(30));
    let results = at_once(&h, 6, "coda_list_page_content", &args).await;
    let (read, refused) = read_and_refused(&results);
    assert!(refused >= 1, "6 answers of 32 MiB fitted in 64 MiB");
    assert!(
        read >= 1,
        "no answer was read at all: was refused room given back?"
    );
    // A refused read is not sent again within the call.
    assert_eq!(h.fake.calls("GET", path).len(), 6);

    // Every byte came back: two answers that need the whole budget at
    // once are both read (one unit kept back would refuse one of them).
    // Padded with spaces, which parse to nothing: the 20 MiB string above
    // is 20 MiB more once parsed, counted beside its text.
    all_room_back(&h).await;
    let mut spaces = serde_json::to_vec(&json!({"items": []})).unwrap();
    spaces.resize(ANSWER, b' ');
    let big = fake_coda::Hostile {
        body: spaces,
        ..big
    };
    h.fake.answer_next("GET", path, 2, big);
    h.fake
        .trickle_next("GET", path, 2, 1 << 20, Duration::from_millis(20));
    let results = at_once(&h, 2, "coda_list_page_content", &args).await;
    assert_eq!(read_and_refused(&results), (2, 0));
    // An ordinary answer (with a Content-Length: reserved whole up front).
    let v = h.ok("coda_list_page_content", args).await;
    assert!(!v["items"].as_array().unwrap().is_empty(), "{v}");
    all_room_back(&h).await;
    h.close().await;
}

/// The same for export downloads, whose text is held until the tool is
/// done with it.
#[tokio::test]
async fn concurrent_exports_past_the_read_budget_fail_clearly_and_give_their_room_back() {
    let h = small_budget().await;
    let lines = 20;
    for i in 0..lines {
        let line = format!("{i:02} {}", "x".repeat(ANSWER / lines));
        h.fake.insert_line("canvas-overview", &line);
    }
    let args = json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "format": "markdown"});

    h.fake
        .trickle_next("GET", "/blobs/", 6, 1 << 20, Duration::from_millis(30));
    let results = at_once(&h, 6, "coda_get_page_content", &args).await;
    let (read, refused) = read_and_refused(&results);
    assert!(refused >= 1, "6 exports of 32 MiB fitted in 64 MiB");
    assert!(
        read >= 1,
        "no export was read at all: was refused room given back?"
    );

    all_room_back(&h).await;
    h.fake
        .trickle_next("GET", "/blobs/", 2, 1 << 20, Duration::from_millis(20));
    let results = at_once(&h, 2, "coda_get_page_content", &args).await;
    assert_eq!(read_and_refused(&results), (2, 0));
    let v = h.ok("coda_get_page_content", args).await;
    assert_eq!(v["truncated"], true, "{v}");
    all_room_back(&h).await;
    h.close().await;
}
