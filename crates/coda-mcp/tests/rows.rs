//! Row tools through rmcp over stdio against the fake Coda: value formats,
//! structured filters, pagination, chunked inserts, upserts, bulk updates,
//! deletes and button pushes.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::json;

#[tokio::test]
async fn list_rows_builds_a_quoted_query_from_a_structured_filter() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "Tasks", "filter": {"column": "Status", "value": "Done"}, "useColumnNames": true, "valueFormat": "simpleWithArrays", "sortBy": "updatedAt"}),
        )
        .await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["items"][0]["values"]["Name"], "Design");
    let r = &h.fake.calls("GET", "/docs/doc1/tables/grid-tasks/rows")[0];
    assert_eq!(r.q("query"), Some(r#""Status":"Done""#));
    assert_eq!(r.q("useColumnNames"), Some("true"));
    assert_eq!(r.q("valueFormat"), Some("simpleWithArrays"));
    assert_eq!(r.q("sortBy"), Some("updatedAt"));
    let v = h.ok("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "filter": {"column": "c-points", "value": 5}})).await;
    assert_eq!(v["items"][0]["id"], "i-2");
    assert_eq!(
        h.fake.calls("GET", "/docs/doc1/tables/grid-tasks/rows")[1].q("query"),
        Some("c-points:5")
    );
    let v = h.ok("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "query": "\"Done\":false", "valueFormat": "rich"})).await;
    assert_eq!(v["count"], 2);
    assert_eq!(v["items"][0]["values"]["c-name"], "```Build```");
    // Failures: Coda's 400 for a bad query, argument errors for the rest.
    let e = h
        .fails(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "query": "Status:Done"}),
        )
        .await;
    assert!(e.contains("400"), "{e}");
    let e = h.fails("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "query": "x", "filter": {"column": "a", "value": 1}})).await;
    assert!(e.contains("`filter`"), "{e}");
    let e = h.fails("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "filter": {"column": "Status", "value": {"a": 1}}})).await;
    assert!(e.contains("`filter.value`"), "{e}");
    let e = h
        .fails(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "valueFormat": "fancy"}),
        )
        .await;
    assert!(e.contains("`valueFormat`"), "{e}");
    let e = h.fails("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "sortBy": "natural", "visibleOnly": false})).await;
    assert!(e.contains("400") && e.contains("visibleOnly"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn list_rows_fetch_all_follows_tokens_up_to_the_cap() {
    let h = start(&[]).await;
    h.fake.set_max_page(10);
    h.fake.add_rows(42);
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 100}),
        )
        .await;
    assert_eq!(v["count"], 45);
    assert_eq!(v["truncated"], false);
    assert!(v.get("nextPageToken").is_none());
    let calls = h.fake.calls("GET", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(
        calls.len(),
        5,
        "Coda capped pages at 10 silently; the tool kept going"
    );
    let v = h.ok("coda_list_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "maxItems": 15})).await;
    assert_eq!(
        v["count"], 20,
        "whole pages: nothing between the cut and the token is lost"
    );
    assert_eq!(v["truncated"], true);
    let tok = v["nextPageToken"].as_str().unwrap().to_owned();
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "pageToken": tok}),
        )
        .await;
    assert_eq!(
        v["items"][0]["values"]["c-name"], "Row 17",
        "continues right after the last returned row"
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn get_row_passes_value_format_and_reports_missing_rows() {
    let h = start(&[]).await;
    let v = h.ok("coda_get_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Build", "useColumnNames": true, "valueFormat": "rich"})).await;
    assert_eq!(v["id"], "i-2");
    assert_eq!(v["values"]["Status"], "```Doing```");
    assert_eq!(v["parent"]["id"], "grid-tasks");
    let e = h
        .fails(
            "coda_get_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-404"}),
        )
        .await;
    assert!(e.contains("404") && e.contains("Row not found"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn create_rows_maps_objects_to_cells_and_returns_added_ids() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "Deploy", "Points": 8}, {"cells": [{"column": "c-name", "value": "Celebrate"}]}], "disableParsing": true, "wait": true}),
        )
        .await;
    assert_eq!(v["addedRowIds"].as_array().unwrap().len(), 2);
    assert_eq!(v["mutation"]["completed"], true);
    assert_eq!(v["requests"], 1);
    let r = &h.fake.calls("POST", "/docs/doc1/tables/grid-tasks/rows")[0];
    assert_eq!(r.q("disableParsing"), Some("true"));
    assert_eq!(
        r.body.clone().unwrap()["rows"][0],
        json!({"cells": [{"column": "Name", "value": "Deploy"}, {"column": "Points", "value": 8}]})
    );
    assert_eq!(h.fake.row_count("grid-tasks"), 5);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Nope": 1}]}),
        )
        .await;
    // Refused before sending, with the table's columns as a hint.
    assert!(e.contains("Nope") && e.contains("did you mean"), "{e}");
    assert_eq!(h.fake.row_count("grid-tasks"), 5);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": []}),
        )
        .await;
    assert!(e.contains("`rows`"), "{e}");
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "Open Tasks", "rows": [{"Name": "x"}]}),
        )
        .await;
    assert!(e.contains("400") && e.contains("view"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn large_inserts_are_chunked_by_bytes_in_order() {
    let h = start(&["--row-chunk-bytes", "20000"]).await;
    let rows: Vec<_> = (0..60)
        .map(|i| json!({"Name": format!("big-{i}"), "Status": "x".repeat(1000)}))
        .collect();
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}),
        )
        .await;
    let posts = h.fake.calls("POST", "/docs/doc1/tables/grid-tasks/rows");
    assert!(posts.len() >= 4, "{} requests", posts.len());
    assert_eq!(v["requests"], posts.len());
    assert_eq!(v["requestIds"].as_array().unwrap().len(), posts.len());
    assert_eq!(v["addedRowIds"].as_array().unwrap().len(), 60);
    let mut names = Vec::new();
    for p in &posts {
        let body = p.body.clone().unwrap();
        assert!(body.to_string().len() <= 20_000);
        for r in body["rows"].as_array().unwrap() {
            names.push(r["cells"][0]["value"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        names,
        (0..60).map(|i| format!("big-{i}")).collect::<Vec<_>>()
    );
    let e = h
        .fails("coda_create_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "y".repeat(90 * 1024)}]}))
        .await;
    assert!(e.contains("`rows[0]`") && e.contains("85 KB"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn upsert_rows_updates_matching_keys_and_requires_key_columns() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_upsert_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "rows": [{"Name": "Build", "Status": "Done"}, {"Name": "Launch", "Status": "Todo"}]}),
        )
        .await;
    assert_eq!(v["rowCount"], 2);
    assert_eq!(h.fake.row_values("i-2").unwrap()["c-status"], "Done");
    assert_eq!(h.fake.row_count("grid-tasks"), 4);
    assert_eq!(
        h.fake.calls("POST", "/docs/doc1/tables/grid-tasks/rows")[0]
            .body
            .clone()
            .unwrap()["keyColumns"],
        json!(["Name"])
    );
    let e = h.fails("coda_upsert_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": [], "rows": [{"Name": "x"}]})).await;
    assert!(e.contains("`keyColumns`"), "{e}");
    let e = h
        .fails(
            "coda_upsert_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "x"}]}),
        )
        .await;
    assert!(e.contains("`keyColumns`") && e.contains("required"), "{e}");
    let e = h.fails("coda_upsert_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Ghost"], "rows": [{"Name": "x"}]})).await;
    assert!(e.contains("`keyColumns`") && e.contains("Ghost"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn update_row_puts_cells_and_rejects_empty_or_object_values() {
    let h = start(&[]).await;
    let v = h.ok("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-3", "values": {"Status": "Done", "c-points": 4}, "wait": true})).await;
    assert_eq!(v["result"]["id"], "i-3");
    assert_eq!(v["mutation"]["completed"], true);
    assert_eq!(h.fake.row_values("i-3").unwrap()["c-points"], 4);
    assert_eq!(
        h.fake.calls("PUT", "/docs/doc1/tables/grid-tasks/rows/i-3")[0].body,
        Some(
            json!({"row": {"cells": [{"column": "Status", "value": "Done"}, {"column": "c-points", "value": 4}]}})
        )
    );
    let e = h.fails("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-3", "values": {}})).await;
    assert!(e.contains("`values`"), "{e}");
    let e = h.fails("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-3", "values": {"Status": null}})).await;
    assert!(e.contains("`values.Status`"), "{e}");
    let e = h.fails("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-9", "values": {"Status": "x"}})).await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn delete_row_and_delete_rows_by_ids_or_filter() {
    let h = start(&[]).await;
    h.ok(
        "coda_delete_row",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1"}),
    )
    .await;
    assert_eq!(h.fake.row_count("grid-tasks"), 2);
    let e = h
        .fails(
            "coda_delete_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.add_rows(3);
    let v = h.ok("coda_delete_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "filter": {"column": "Status", "value": "Bulk"}, "wait": true})).await;
    assert_eq!(
        v["deletedRowIds"],
        json!(["i-bulk-0", "i-bulk-1", "i-bulk-2"])
    );
    assert_eq!(v["mutation"]["completed"], true);
    assert_eq!(h.fake.row_count("grid-tasks"), 2);
    h.ok(
        "coda_delete_rows",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ["i-2"]}),
    )
    .await;
    let del = h.fake.calls("DELETE", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(del.last().unwrap().body, Some(json!({"rowIds": ["i-2"]})));
    let e = h
        .fails(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    assert!(e.contains("`rowIds`"), "{e}");
    let e = h
        .fails(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": []}),
        )
        .await;
    assert!(e.contains("`rowIds`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn bulk_update_reports_each_row_or_uses_one_upsert_with_key_columns() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [{"rowIdOrName": "i-1", "values": {"Points": 1}}, {"rowIdOrName": "i-missing", "values": {"Points": 2}}, {"rowIdOrName": "Test", "values": {"Points": 3}}]}),
        )
        .await;
    assert_eq!(v["successful"], 2);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["totalUpdates"], 3);
    assert_eq!(v["results"][1]["success"], false);
    assert!(v["results"][1]["error"].as_str().unwrap().contains("404"));
    assert_eq!(h.fake.row_values("i-3").unwrap()["c-points"], 3);
    let before = h.fake.requests().len();
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "updates": [{"rowIdOrName": "i-1", "values": {"Name": "Design", "Points": 9}}, {"rowIdOrName": "i-2", "values": {"Name": "Build", "Points": 9}}]}),
        )
        .await;
    assert_eq!(v["successful"], 2);
    let sent: Vec<_> = h.fake.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        sent,
        ["POST /docs/doc1/tables/grid-tasks/rows"],
        "one upsert request"
    );
    assert_eq!(h.fake.row_values("i-2").unwrap()["c-points"], 9);
    let e = h
        .fails(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": []}),
        )
        .await;
    assert!(e.contains("`updates`"), "{e}");
    let e = h.fails("coda_bulk_update_rows", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [{"values": {"a": 1}}]})).await;
    assert!(e.contains("`updates[0].rowIdOrName`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn push_button_posts_to_the_button_column() {
    let h = start(&[]).await;
    let v = h.ok("coda_push_button", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "columnIdOrName": "Notify"})).await;
    assert_eq!(v["result"]["columnId"], "c-notify");
    assert_eq!(
        h.fake
            .calls(
                "POST",
                "/docs/doc1/tables/grid-tasks/rows/i-1/buttons/c-notify"
            )
            .len(),
        1
    );
    let e = h.fails("coda_push_button", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "columnIdOrName": "Name"})).await;
    assert!(e.contains("400") && e.contains("not a button"), "{e}");
    let e = h
        .fails(
            "coda_push_button",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1"}),
        )
        .await;
    assert!(e.contains("`columnIdOrName`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}
