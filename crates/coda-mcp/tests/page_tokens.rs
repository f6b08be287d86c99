//! What a list call keeps of Coda's page tokens (up to 4096 bytes each,
//! `MAX_PAGE_TOKEN_BYTES`), measured as the peak memory of the real
//! binary (`VmHWM`).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/quiet.rs"]
mod quiet;

use fake_coda::FakeCoda;
use quiet::{Raw, answer, next, peak, send};
use serde_json::{Value, json};

/// A token as long as coda-mcp follows.
fn long_token(i: usize) -> String {
    let head = format!("tok-{i}-");
    format!("{head}{}", "t".repeat(4000 - head.len()))
}

/// Lists the tables of doc1 with `fetchAll`; returns the result and how
/// much the peak memory grew.
async fn list_all(raw: &mut Raw, id: u64) -> (Value, u64) {
    let before = peak(raw);
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "coda_list_tables", "arguments": {"docId": "doc1", "fetchAll": true}}});
    send(raw, &call).await;
    let a = next(raw).await;
    assert_eq!(a["id"], id, "{a}");
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
    let mut raw = quiet::started(&fake, &[]).await;
    let (a, grew) = list_all(&mut raw, 2).await;
    assert!(a["result"].is_object(), "{a}");
    assert!(grew < 30 << 20, "peak memory grew by {} MB", grew >> 20);
}

/// Regression: the tokens a list followed were all kept whole to catch
/// Coda handing one out again (a loop): 4 KB a page, for as many pages as
/// the call reads. Bounded by the read bucket (100 / 6 s) that is ~3.8 MB
/// in the default 50 s, but 246 MB at `--call-timeout-secs 3600` (and as
/// much again on the analytics bucket), outside `--max-read-bytes`; here
/// 1,000 pages of fresh 4000-byte tokens (an item every 50th, so
/// `--max-empty-pages` does not stop it) grew the peak by 4.0 MB. A token
/// is now remembered by a keyed 64-bit hash, 8 bytes a page: 0.2 MB.
#[tokio::test]
async fn the_tokens_a_list_followed_are_not_kept_whole() {
    const PAGES: usize = 1000;
    let fake = FakeCoda::start().await;
    let mut raw = quiet::started(&fake, &[]).await;
    // Warm up: what the first list call allocates is not the tokens'.
    list_all(&mut raw, 2).await;
    for i in 0..PAGES {
        let items = if i % 50 == 0 { json!([{}]) } else { json!([]) };
        let mut page = json!({"items": items});
        if i + 1 < PAGES {
            page["nextPageToken"] = json!(long_token(i));
        }
        fake.answer_next("GET", "/docs/doc1/tables", 1, answer(&page));
    }
    let (a, grew) = list_all(&mut raw, 3).await;
    assert!(a["result"].is_object(), "{a}");
    assert_eq!(
        fake.calls("GET", "/docs/doc1/tables").len(),
        PAGES + 1,
        "{a}"
    );
    assert!(grew < 2 << 20, "peak memory grew by {} KB", grew >> 10);
}
