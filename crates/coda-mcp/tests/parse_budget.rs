//! The parsed form of Coda's answers counted in `--max-read-bytes`,
//! measured as the peak memory of the real binary (`VmHWM`).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/quiet.rs"]
mod quiet;

use fake_coda::FakeCoda;
use quiet::{Raw, answer, next, peak, send};
use serde_json::{Value, json};

/// With the smallest read budget, 64 MiB.
async fn started(fake: &FakeCoda) -> Raw {
    quiet::started(fake, &["--max-read-bytes", "67108864"]).await
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
