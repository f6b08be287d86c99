//! Regression: `coda_delete_rows` with well-formed row ids of rows that
//! are not in the table reported them deleted. Coda answers the bulk
//! delete 202 and echoes every id it was sent (OpenAPI `deleteRows`:
//! "This endpoint will always return a 202"), deleting only the rows it
//! has. The tool must say which ids were not there, and not send them.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::{start, strings};
use serde_json::json;

#[tokio::test]
async fn deleting_ids_that_are_not_in_the_table_says_so() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ["i-1", "i-gone"]}),
        )
        .await;
    assert_eq!(strings(&v, "deletedRowIds"), ["i-1"], "{v}");
    assert_eq!(strings(&v, "missingRowIds"), ["i-gone"], "{v}");
    assert!(v.get("rowIdsUnchecked").is_none(), "{v}");
    let deletes = h.fake.calls("DELETE", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body.as_ref().unwrap()["rowIds"], json!(["i-1"]));
    // Two ids: a read each, not a listing of the table.
    let reads = row_reads(&h);
    assert_eq!(
        reads,
        [
            "/docs/doc1/tables/grid-tasks/rows/i-1",
            "/docs/doc1/tables/grid-tasks/rows/i-gone"
        ],
        "{reads:?}"
    );

    // None there: nothing is sent, nothing reads as deleted.
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ["i-1", "i-gone"]}),
        )
        .await;
    assert_eq!(strings(&v, "deletedRowIds"), Vec::<String>::new(), "{v}");
    assert_eq!(strings(&v, "missingRowIds"), ["i-1", "i-gone"], "{v}");
    let deletes = h.fake.calls("DELETE", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(deletes.len(), 1, "a delete of absent rows was sent");
    h.close().await;
}

/// Many ids are looked for in a listing of the table (a read per page),
/// not with a read per id; the answer is the same.
#[tokio::test]
async fn many_ids_are_checked_with_one_listing_not_a_read_each() {
    let h = start(&[]).await;
    h.fake.add_rows(40);
    let mut ids: Vec<String> = (0..40).map(|i| format!("i-bulk-{i}")).collect();
    ids.insert(7, "i-gone".into());
    ids.push("i-also-gone".into());
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ids}),
        )
        .await;
    assert_eq!(
        strings(&v, "missingRowIds"),
        ["i-gone", "i-also-gone"],
        "{v}"
    );
    let present: Vec<String> = (0..40).map(|i| format!("i-bulk-{i}")).collect();
    assert_eq!(strings(&v, "deletedRowIds"), present, "{v}");
    let reads = row_reads(&h);
    // 43 rows at the fake's 25 a page: two pages.
    assert_eq!(reads, ["/docs/doc1/tables/grid-tasks/rows"; 2], "{reads:?}");
    h.close().await;
}

/// A table past the 10,000 rows this server lists: more than five ids
/// cannot be checked against it, so they are all sent, and the answer says
/// they were not checked (`rowIdsUnchecked`) rather than naming none
/// missing as if it had looked.
#[tokio::test]
async fn ids_in_a_table_too_big_to_list_are_sent_and_said_unchecked() {
    let h = start(&[]).await;
    h.fake.set_max_page(500);
    h.fake.add_rows(10_000);
    let before = h.fake.row_count("grid-tasks");
    let mut ids: Vec<String> = (0..6).map(|i| format!("i-bulk-{i}")).collect();
    ids.push("i-gone".into());
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ids}),
        )
        .await;
    assert_eq!(v["rowIdsUnchecked"], true, "{v}");
    assert!(v.get("missingRowIds").is_none(), "{v}");
    let deletes = h.fake.calls("DELETE", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body.as_ref().unwrap()["rowIds"], json!(ids));
    assert_eq!(h.fake.row_count("grid-tasks"), before - 6);
    // It listed up to its cap (10,000 rows at 500 a read) and stopped.
    let reads = row_reads(&h);
    assert_eq!(
        reads, ["/docs/doc1/tables/grid-tasks/rows"; 20],
        "{reads:?}"
    );
    h.close().await;
}

/// The paths of every read of rows the fake has had, in order.
fn row_reads(h: &harness::Harness) -> Vec<String> {
    h.fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/rows"))
        .map(|r| r.path)
        .collect()
}
