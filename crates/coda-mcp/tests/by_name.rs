//! Regression: a row write by name went to Coda as the name, and Coda
//! picks an arbitrary row when several share it (the spec says so: "an
//! arbitrary row will be affected / removed"). A write by name now finds
//! the row first and refuses, with the candidates, when the name matches
//! no row or several. Page names are checked against every page of the
//! doc, not the share a list result holds.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::json;

const ROWS: &str = "/docs/doc1/tables/grid-tasks/rows";

#[tokio::test]
async fn a_row_write_by_a_shared_name_is_refused_with_the_candidates() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "Build"}]}),
        )
        .await;
    let twin = v["addedRowIds"][0].as_str().unwrap().to_owned();
    let base = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Build"});
    let mut update = base.clone();
    update["values"] = json!({"Status": "Done"});
    let e = h.fails("coda_update_row", update).await;
    assert!(e.contains("i-2") && e.contains(&twin), "{e}");
    let e = h.fails("coda_delete_row", base.clone()).await;
    assert!(e.contains("i-2") && e.contains(&twin), "{e}");
    let mut push = base.clone();
    push["columnIdOrName"] = json!("Notify");
    let e = h.fails("coda_push_button", push).await;
    assert!(e.contains("i-2") && e.contains(&twin), "{e}");
    let r = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [{"rowIdOrName": "Build", "values": {"Status": "Done"}}]}),
        )
        .await;
    assert_eq!(r["failed"], 1, "{r}");
    assert!(
        r["results"][0]["error"].as_str().unwrap().contains(&twin),
        "{r}"
    );
    let writes: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.starts_with(&format!("{ROWS}/")))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "sent: {writes:?}");
    assert_eq!(h.fake.row_count("grid-tasks"), 4);
    h.close().await;
}

#[tokio::test]
async fn a_row_write_by_a_unique_name_goes_to_that_rows_id() {
    let h = start(&[]).await;
    h.ok(
        "coda_update_row",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Design", "values": {"Status": "Again"}}),
    )
    .await;
    assert_eq!(h.fake.calls("PUT", &format!("{ROWS}/i-1")).len(), 1);
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Again");
    let e = h
        .fails(
            "coda_delete_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("Nope"), "{e}");
    assert!(h.fake.calls("DELETE", ROWS).is_empty());
    h.close().await;
}

#[tokio::test]
async fn a_page_write_by_a_shared_name_is_refused_with_the_candidates() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Overview"}),
        )
        .await;
    let twin = v["id"].as_str().unwrap().to_owned();
    for (tool, extra) in [
        ("coda_rename_page", json!({"newName": "Renamed"})),
        ("coda_append_page_content", json!({"content": "more"})),
        ("coda_delete_page", json!({})),
    ] {
        let mut args = json!({"doc_id": "doc1", "pageIdOrName": "Overview"});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = h.fails(tool, args).await;
        assert!(
            e.contains("canvas-overview") && e.contains(&twin),
            "{tool}: {e}"
        );
    }
    let writes: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/docs/doc1/pages/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "sent: {writes:?}");
    h.ok(
        "coda_append_page_content",
        json!({"docId": "doc1", "pageIdOrName": "Meeting Notes", "content": "more"}),
    )
    .await;
    assert_eq!(
        h.fake.calls("PUT", "/docs/doc1/pages/canvas-notes").len(),
        1
    );
    h.close().await;
}

/// Regression: the pages a page name was checked against came from the
/// budgeted list (`--max-result-bytes`), so in a doc whose page list
/// passed the budget, two pages sharing a name past it were not seen: the
/// write went to Coda by name, and Coda deleted an arbitrary one of them.
#[tokio::test]
async fn a_page_name_shared_past_the_result_budget_is_still_refused() {
    let h = start(&["--max-result-bytes", "4000"]).await;
    h.fake.add_pages(60);
    let mut twins = Vec::new();
    for _ in 0..2 {
        let v = h
            .ok("coda_create_page", json!({"docId": "doc1", "name": "Twin"}))
            .await;
        twins.push(v["id"].as_str().unwrap().to_owned());
    }
    // The list a model reads stops well before the twins.
    let v = h
        .ok(
            "coda_list_pages",
            json!({"docId": "doc1", "fetchAll": true}),
        )
        .await;
    assert_eq!(v["truncated"], true);
    assert!(!v.to_string().contains("Twin"), "{v}");
    let e = h
        .fails(
            "coda_delete_page",
            json!({"docId": "doc1", "pageIdOrName": "Twin"}),
        )
        .await;
    assert!(e.contains(&twins[0]) && e.contains(&twins[1]), "{e}");
    assert!(
        !h.fake
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.starts_with("/docs/doc1/pages/")),
        "a DELETE was sent"
    );
    assert!(twins.iter().all(|t| h.fake.page_exists(t)));
    h.close().await;
}

/// Regression: `coda_delete_rows` sent `rowIds` as they came, and Coda
/// answers a row delete 202 whatever the ids ("This endpoint will always
/// return a 202"): a row name, or a link, given for an id deleted
/// nothing, and the result listed it in `deletedRowIds`.
#[tokio::test]
async fn a_row_name_in_row_ids_is_refused_not_reported_deleted() {
    let h = start(&[]).await;
    let e = h
        .fails(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ["i-1", "Build"]}),
        )
        .await;
    assert!(e.contains("\"Build\"") && e.contains("rowIds"), "{e}");
    assert!(h.fake.calls("DELETE", ROWS).is_empty());
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ["i-1"]}),
        )
        .await;
    assert_eq!(v["deletedRowIds"], json!(["i-1"]));
    assert_eq!(h.fake.row_count("grid-tasks"), 2);
    h.close().await;
}
