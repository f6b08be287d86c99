//! Regression: chunked writes that fail halfway told the model things that
//! were not known. A delete chunk whose DELETE got a 502 (it may have run)
//! was listed in `notDeletedRowIds`; an insert's advice was to resend rows
//! that may already be in the table; the `keyColumns` path of
//! `coda_bulk_update_rows` dropped the error of a failed chunk.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::{start, strings};
use serde_json::json;

const ROWS: &str = "/docs/doc1/tables/grid-tasks/rows";

#[tokio::test]
async fn a_delete_chunk_with_an_unknown_outcome_is_not_reported_as_not_deleted() {
    let h = start(&[]).await;
    h.fake.add_rows(1100);
    let ids: Vec<String> = (0..1100).map(|i| format!("i-bulk-{i}")).collect();
    // The second of three requests is applied, then answered 502.
    h.fake.fail_after_applying("DELETE", ROWS, 502, 1);
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ids}),
        )
        .await;
    assert_eq!(strings(&v, "deletedRowIds"), ids[..500]);
    assert_eq!(strings(&v, "outcomeUnknownRowIds"), ids[500..1000]);
    assert_eq!(strings(&v, "notDeletedRowIds"), ids[1000..]);
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("may have been"), "{err}");
    assert_eq!(
        h.fake.calls("DELETE", ROWS).len(),
        2,
        "the third was not sent"
    );
    h.close().await;
}

#[tokio::test]
async fn an_insert_chunk_with_an_unknown_outcome_is_counted_apart_and_not_advised_for_resending() {
    let h = start(&["--row-chunk-bytes", "20000"]).await;
    let rows: Vec<_> = (0..60)
        .map(|i| json!({"Name": format!("big-{i}"), "Status": "x".repeat(1000)}))
        .collect();
    h.fake.fail_after_applying("POST", ROWS, 502, 1);
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}),
        )
        .await;
    let posts = h.fake.calls("POST", ROWS);
    assert_eq!(posts.len(), 2, "nothing is sent after an unknown outcome");
    let first = posts[0].body.as_ref().unwrap()["rows"]
        .as_array()
        .unwrap()
        .len();
    let second = posts[1].body.as_ref().unwrap()["rows"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(v["rowsAccepted"], first, "{v}");
    assert_eq!(v["rowsOutcomeUnknown"], second, "{v}");
    assert_eq!(v["rowsNotSent"], 60 - first - second, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("may have been inserted"), "{err}");
    assert!(err.contains("do not resend"), "{err}");
    h.close().await;
}

#[tokio::test]
async fn a_bulk_update_by_key_columns_passes_a_failed_chunk_error_through() {
    let h = start(&["--row-chunk-bytes", "20000"]).await;
    let updates: Vec<_> = (0..60)
        .map(|i| json!({"rowIdOrName": "unused", "values": {"Name": format!("big-{i}"), "Status": "x".repeat(1000)}}))
        .collect();
    h.fake.fail_after("POST", ROWS, 403, 1, 1);
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "updates": updates}),
        )
        .await;
    let err = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"));
    assert!(err.contains("403"), "{err}");
    assert!(v["failed"].as_u64().unwrap() > 0, "{v}");
    h.close().await;
}

/// Regression: the text summary turned a long `error` into "error: 156
/// chars", so a client reading only the text saw a success.
#[tokio::test]
async fn the_text_summary_of_a_partial_insert_carries_its_error_verbatim() {
    let h = start(&["--row-chunk-bytes", "20000"]).await;
    let rows: Vec<_> = (0..60)
        .map(|i| json!({"Name": format!("big-{i}"), "Status": "x".repeat(1000)}))
        .collect();
    h.fake.fail_after_applying("POST", ROWS, 502, 1);
    let r = h
        .call(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}),
        )
        .await;
    let text = harness::text(&r);
    let err = r.structured_content.as_ref().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains(&err), "{text}");
    h.close().await;
}

/// Regression: a verify mismatch whose stored value was missing had
/// `stored` stripped (null) though the outputSchema required it, and an
/// array `intended` broke the schema's string/number/boolean; a client
/// that validates structuredContent (TypeScript SDK) rejected the call.
/// The harness validates every result against its outputSchema.
#[tokio::test]
async fn verify_mismatches_match_the_output_schema() {
    let h = start(&[]).await;
    h.fake.drop_written_cells("c-status");
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": ["a", "b"]}, "verify": true}),
        )
        .await;
    let m = &v["verification"]["mismatches"][0];
    assert_eq!(m["column"], "Status", "{v}");
    assert_eq!(m["intended"], json!(["a", "b"]), "{v}");
    // The fake reads a dropped cell back as "" (the unit tests in
    // checks.rs cover a column missing altogether: `stored` is left out).
    assert_eq!(m["stored"], "", "{v}");
    assert_eq!(v["verification"]["matches"], false);
    h.close().await;
}
