//! Regression: a table, a column, a page read or a new page's parent, a
//! row read, or a named formula or control read, named by a name that
//! several share went to Coda as the name, and Coda uses an arbitrary one
//! of them ("an arbitrary one will be selected"): a read showed another
//! table's rows or another formula's value, a write changed another table
//! or column. Every tool that takes a table, column, page, formula or
//! control by name now finds the one object of that name first and
//! refuses a shared name, with the candidates' ids, before anything is
//! sent.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::{Value, json};

fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// Requests other than GET: what was written.
fn writes(h: &harness::Harness) -> Vec<String> {
    h.fake
        .requests()
        .into_iter()
        .filter(|r| r.api && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn a_table_name_two_tables_share_is_refused_by_every_table_tool_with_both_ids() {
    let h = start(&[]).await;
    h.fake.add_table_named("grid-tasks2", "Tasks");
    let base = json!({"docId": "doc1", "tableIdOrName": "Tasks"});
    for (tool, extra) in [
        ("coda_get_table", json!({})),
        ("coda_get_table_summary", json!({})),
        ("coda_list_columns", json!({})),
        ("coda_get_column", json!({"columnIdOrName": "Status"})),
        ("coda_list_rows", json!({})),
        ("coda_get_row", json!({"rowIdOrName": "i-1"})),
        ("coda_create_rows", json!({"rows": [{"Name": "X"}]})),
        (
            "coda_upsert_rows",
            json!({"rows": [{"Name": "X"}], "keyColumns": ["Name"]}),
        ),
        (
            "coda_update_row",
            json!({"rowIdOrName": "i-1", "values": {"Status": "Done"}}),
        ),
        ("coda_delete_row", json!({"rowIdOrName": "i-1"})),
        ("coda_delete_rows", json!({"rowIds": ["i-1"]})),
        (
            "coda_bulk_update_rows",
            json!({"updates": [{"rowIdOrName": "i-1", "values": {"Status": "Done"}}]}),
        ),
        (
            "coda_push_button",
            json!({"rowIdOrName": "i-1", "columnIdOrName": "Notify"}),
        ),
    ] {
        let e = h.fails(tool, with(&base, extra)).await;
        assert!(
            e.contains("`tableIdOrName`") && e.contains("(grid-tasks, grid-tasks2)"),
            "{tool}: {e}"
        );
    }
    assert!(writes(&h).is_empty(), "sent: {:?}", writes(&h));
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    // A name only one table has is sent as that table's id; ids pass.
    h.ok(
        "coda_list_rows",
        json!({"docId": "doc1", "tableIdOrName": "Open Tasks"}),
    )
    .await;
    assert_eq!(
        h.fake
            .calls("GET", "/docs/doc1/tables/table-open/rows")
            .len(),
        1
    );
    let t = h
        .ok(
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks2"}),
        )
        .await;
    assert_eq!(
        (t["id"].as_str(), t["name"].as_str()),
        (Some("grid-tasks2"), Some("Tasks"))
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_page_read_by_a_name_two_pages_share_is_refused_with_both_ids() {
    let h = start(&[]).await;
    let twin = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Overview"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = h
        .fails(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Child", "parentPageId": "Overview"}),
        )
        .await;
    assert!(
        e.contains("`parentPageId`") && e.contains(&format!("(canvas-overview, {twin})")),
        "{e}"
    );
    assert_eq!(h.fake.calls("POST", "/docs/doc1/pages").len(), 1);
    let base = json!({"docId": "doc1", "pageIdOrName": "Overview"});
    for (tool, extra) in [
        ("coda_get_page", json!({})),
        ("coda_get_page_content", json!({"format": "plainText"})),
        ("coda_peek_page", json!({"numLines": 2})),
        ("coda_list_page_content", json!({})),
    ] {
        let e = h.fails(tool, with(&base, extra)).await;
        assert!(
            e.contains("`pageIdOrName`") && e.contains(&format!("(canvas-overview, {twin})")),
            "{tool}: {e}"
        );
    }
    // A page id is read with no lookup before it.
    let before = h.fake.requests().len();
    h.ok(
        "coda_get_page",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview"}),
    )
    .await;
    assert_eq!(h.fake.requests().len(), before + 1);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_column_name_two_columns_share_is_refused_with_both_ids() {
    let h = start(&[]).await;
    h.fake
        .add_column("grid-tasks", "c-status2", "Status", "text");
    h.fake
        .add_column("grid-tasks", "c-notify2", "Notify", "button");
    let base = json!({"docId": "doc1", "tableIdOrName": "grid-tasks"});
    for (tool, extra, arg) in [
        (
            "coda_update_row",
            json!({"rowIdOrName": "i-1", "values": {"Status": "Done"}}),
            "`values.Status`",
        ),
        (
            "coda_create_rows",
            json!({"rows": [{"Name": "New", "Status": "Done"}]}),
            "`rows[0].Status`",
        ),
        (
            "coda_upsert_rows",
            json!({"rows": [{"Name": "New", "Points": 1}], "keyColumns": ["Status"]}),
            "`keyColumns`",
        ),
        (
            "coda_bulk_update_rows",
            json!({"updates": [{"rowIdOrName": "i-1", "values": {"Status": "Done"}}]}),
            "`updates[0].values.Status`",
        ),
        (
            "coda_list_rows",
            json!({"filter": {"column": "Status", "value": "Done"}}),
            "`filter.column`",
        ),
        (
            "coda_delete_rows",
            json!({"filter": {"column": "Status", "value": "Done"}}),
            "`filter.column`",
        ),
        (
            "coda_get_column",
            json!({"columnIdOrName": "Status"}),
            "`columnIdOrName`",
        ),
    ] {
        let e = h.fails(tool, with(&base, extra)).await;
        assert!(
            e.contains(arg) && e.contains("(c-status, c-status2)"),
            "{tool}: {e}"
        );
    }
    let e = h
        .fails(
            "coda_push_button",
            with(
                &base,
                json!({"rowIdOrName": "i-1", "columnIdOrName": "Notify"}),
            ),
        )
        .await;
    assert!(e.contains("(c-notify, c-notify2)"), "{e}");
    assert!(writes(&h).is_empty(), "sent: {:?}", writes(&h));
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    // By id, each column is written.
    h.ok(
        "coda_update_row",
        with(
            &base,
            json!({"rowIdOrName": "i-1", "values": {"c-status2": "Again"}}),
        ),
    )
    .await;
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status2"], "Again");
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Done");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_row_read_by_a_name_two_rows_share_is_refused_with_both_ids() {
    let h = start(&[]).await;
    let twin = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "Build"}]}),
        )
        .await["addedRowIds"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let e = h
        .fails(
            "coda_get_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Build"}),
        )
        .await;
    assert!(
        e.contains("`rowIdOrName`") && e.contains(&format!("(i-2, {twin})")),
        "{e}"
    );
    // A unique name reads its row; an id is read with no lookup first.
    let v = h
        .ok(
            "coda_get_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "Design"}),
        )
        .await;
    assert_eq!(v["id"], "i-1");
    let before = h.fake.requests().len();
    h.ok(
        "coda_get_row",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-3"}),
    )
    .await;
    assert_eq!(h.fake.requests().len(), before + 1);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_formula_or_control_name_two_share_is_refused_with_both_ids() {
    let h = start(&[]).await;
    h.fake.add_formula("f-total2", "TotalPoints", json!(99));
    h.fake.add_control("ctrl-threshold2", "Threshold", json!(1));
    for (tool, extra, arg, ids) in [
        (
            "coda_get_formula",
            json!({"formulaIdOrName": "TotalPoints"}),
            "`formulaIdOrName`",
            "(f-total, f-total2)",
        ),
        (
            "coda_get_control",
            json!({"controlIdOrName": "Threshold"}),
            "`controlIdOrName`",
            "(ctrl-threshold, ctrl-threshold2)",
        ),
    ] {
        let e = h.fails(tool, with(&json!({"docId": "doc1"}), extra)).await;
        assert!(
            e.contains(arg) && e.contains(ids) && e.contains("Coda would use an arbitrary one"),
            "{tool}: {e}"
        );
    }
    // A name only one has reads that one; ids are read with no lookup.
    let v = h
        .ok(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "Owner"}),
        )
        .await;
    assert_eq!(
        (v["id"].as_str(), v["value"].as_str()),
        (Some("f-owner"), Some("Ada"))
    );
    let before = h.fake.requests().len();
    let v = h
        .ok(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "f-total2"}),
        )
        .await;
    assert_eq!(v["value"], 99);
    let v = h
        .ok(
            "coda_get_control",
            json!({"docId": "doc1", "controlIdOrName": "ctrl-threshold2"}),
        )
        .await;
    assert_eq!(v["value"], 1);
    assert_eq!(h.fake.requests().len(), before + 2);
    h.fake.assert_responses_match_spec();
    h.close().await;
}
