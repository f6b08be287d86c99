//! Regression: write tools ran past the call deadline: the per-row path of
//! `coda_bulk_update_rows` took a fresh deadline for every row, and other
//! tools chained fresh deadlines (URL resolution, columns, the write,
//! verify). One call now has one deadline; rows that would start too late
//! are not sent and are reported so.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::start;
use serde_json::{Value, json};

#[tokio::test]
async fn a_bulk_update_stops_at_the_call_deadline_and_reports_rows_not_sent() {
    let h = start(&["--call-timeout-secs", "2"]).await;
    h.fake.add_rows(10);
    h.fake
        .delay("PUT", "/rows/i-bulk-", Duration::from_millis(500));
    let updates: Vec<Value> = (0..10)
        .map(|i| json!({"rowIdOrName": format!("i-bulk-{i}"), "values": {"Status": "Done"}}))
        .collect();
    let t = Instant::now();
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        )
        .await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2600), "took {took:?}");
    let sent = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/rows/i-bulk-"))
        .count();
    assert!(sent < 10, "{sent} rows sent");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    let not_sent = results
        .iter()
        .filter(|r| r["error"].as_str().is_some_and(|e| e.contains("not sent")))
        .count();
    assert_eq!(not_sent, 10 - sent, "{v}");
    assert_eq!(v["successful"].as_u64().unwrap() as usize, sent, "{v}");
    h.close().await;
}

#[tokio::test]
async fn an_update_row_with_verify_keeps_one_deadline() {
    let h = start(&["--call-timeout-secs", "2"]).await;
    // Columns, the row read, the write and the re-read: each alone fits
    // in the deadline, all of them do not.
    h.fake
        .delay("GET", "/tables/grid-tasks", Duration::from_millis(700));
    h.fake.delay("PUT", "/rows/i-1", Duration::from_millis(700));
    let t = Instant::now();
    let r = h
        .call(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}, "verify": true}),
        )
        .await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(2600),
        "took {took:?}: {}",
        harness::text(&r)
    );
    h.close().await;
}
