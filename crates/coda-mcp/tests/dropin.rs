//! Regression: results renamed keys that coda-enhanced's 34 tools return
//! (`items`/`searchQuery`/`totalFound` of the searches, `document` and
//! `breakdown` of the stats, `sampleData`/`stats` of the table summary,
//! `successful`/`results[].rowId` of the bulk update, `rowId`/`columnId`
//! of a button push, `requestId` of row writes, a column's `format`), so a
//! client written for the original could not read them.
//!
//! For each of the 34 tools, called with the original's arguments only,
//! every key the original returned must be in `structuredContent` (more
//! keys are fine). What the original returned is Coda's response body for
//! the plain tools and, for the composites, the shapes its source builds
//! (coda-enhanced 1.4.2). Two deliberate differences are not checked here:
//! row lists are slim by default (`id`, `name`, `values`; `fullRows: true`
//! gives Coda's whole rows) and page reads answer with the content as text
//! plus a structured copy, where the original answered with text only.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::{start, text};
use serde_json::{Value, json};

/// Every pointer must resolve in `v`.
fn has(tool: &str, v: &Value, pointers: &[&str]) -> Vec<String> {
    pointers
        .iter()
        .filter(|p| v.pointer(p).is_none())
        .map(|p| format!("{tool}: no {p} in {v}"))
        .collect()
}

#[tokio::test]
async fn every_coda_enhanced_tool_returns_the_keys_the_original_returned() {
    let h = start(&[]).await;
    let tools = h.tools().await;
    // Each result must also match the output schema the tool declares.
    let declared = |tool: &str, v: &Value| -> Option<String> {
        let t = tools.iter().find(|t| t.name == tool)?;
        let schema = Value::Object((*t.output_schema.clone()?).clone());
        fake_coda::validate(&schema, v)
            .err()
            .map(|e| format!("{tool}: output does not match its schema: {e}"))
    };
    let d = "doc1";
    let mut missing = Vec::new();
    // (tool, arguments as the original took them, keys the original returned)
    let reads: Vec<(&str, Value, &[&str])> = vec![
        (
            "coda_whoami",
            json!({}),
            &[
                "/name",
                "/loginId",
                "/type",
                "/scoped",
                "/tokenName",
                "/href",
                "/workspace",
            ],
        ),
        (
            "coda_list_documents",
            json!({"limit": 1}),
            &[
                "/items/0/id",
                "/items/0/name",
                "/href",
                "/nextPageToken",
                "/nextPageLink",
            ],
        ),
        (
            "coda_get_document",
            json!({"docId": d}),
            &[
                "/id",
                "/type",
                "/href",
                "/browserLink",
                "/name",
                "/owner",
                "/createdAt",
                "/updatedAt",
            ],
        ),
        (
            "coda_get_document_stats",
            json!({"docId": d}),
            &[
                "/document/id",
                "/document/name",
                "/document/owner",
                "/document/createdAt",
                "/document/updatedAt",
                "/document/docSize",
                "/counts/pages",
                "/counts/tables",
                "/counts/views",
                "/counts/formulas",
                "/counts/controls",
                "/breakdown/tableNames/0/name",
                "/breakdown/tableNames/0/type",
                "/breakdown/pageNames/0",
                "/breakdown/formulaNames/0",
            ],
        ),
        (
            "coda_list_pages",
            json!({"docId": d, "limit": 1}),
            &[
                "/items/0/id",
                "/items/0/name",
                "/items/0/type",
                "/href",
                "/nextPageToken",
                "/nextPageLink",
            ],
        ),
        (
            "coda_search_pages",
            json!({"docId": d, "query": "finance", "includeContent": true}),
            &[
                "/items/0/id",
                "/items/0/type",
                "/items/0/href",
                "/items/0/name",
                "/items/0/matchedInContent",
                "/searchQuery",
                "/searchedContent",
                "/totalFound",
            ],
        ),
        (
            "coda_list_tables",
            json!({"docId": d}),
            &[
                "/items/0/id",
                "/items/0/name",
                "/items/0/tableType",
                "/href",
            ],
        ),
        (
            "coda_get_table",
            json!({"docId": d, "tableIdOrName": "grid-tasks"}),
            &[
                "/id",
                "/type",
                "/tableType",
                "/name",
                "/rowCount",
                "/displayColumn",
            ],
        ),
        (
            "coda_get_table_summary",
            json!({"docId": d, "tableIdOrName": "grid-tasks"}),
            &[
                "/table/id",
                "/table/name",
                "/table/type",
                "/table/rowCount",
                "/table/createdAt",
                "/table/updatedAt",
                "/columns/0/name",
                "/columns/0/id",
                "/columns/0/type",
                "/columns/0/calculated",
                "/columns/0/display",
                "/sampleData/0/id",
                "/stats/totalColumns",
                "/stats/calculatedColumns",
                "/stats/displayColumn",
            ],
        ),
        (
            "coda_search_tables",
            json!({"docId": d, "query": "TASKS"}),
            &[
                "/items/0/id",
                "/items/0/name",
                "/items/0/tableType",
                "/searchQuery",
                "/totalFound",
            ],
        ),
        (
            "coda_list_columns",
            json!({"docId": d, "tableIdOrName": "grid-tasks"}),
            &[
                "/items/0/id",
                "/items/0/type",
                "/items/0/href",
                "/items/0/name",
                "/items/0/format/type",
                "/items/0/format/isArray",
                "/href",
            ],
        ),
        (
            "coda_get_column",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "columnIdOrName": "c-status"}),
            &["/id", "/type", "/name", "/format/type", "/parent"],
        ),
        (
            "coda_list_rows",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "limit": 1}),
            &[
                "/items/0/id",
                "/items/0/name",
                "/items/0/values",
                "/href",
                "/nextPageToken",
                "/nextPageLink",
            ],
        ),
        (
            "coda_get_row",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1"}),
            &["/id", "/type", "/name", "/values", "/href"],
        ),
        (
            "coda_list_formulas",
            json!({"docId": d}),
            &["/items/0/id", "/items/0/name", "/href"],
        ),
        (
            "coda_get_formula",
            json!({"docId": d, "formulaIdOrName": "f-total"}),
            &["/id", "/name", "/value"],
        ),
        (
            "coda_list_controls",
            json!({"docId": d}),
            &["/items/0/id", "/items/0/name", "/href"],
        ),
        (
            "coda_get_control",
            json!({"docId": d, "controlIdOrName": "ctrl-threshold"}),
            &["/id", "/name", "/controlType", "/value"],
        ),
    ];
    for (tool, args, keys) in &reads {
        let v = h.ok(tool, args.clone()).await;
        missing.extend(has(tool, &v, keys));
        missing.extend(declared(tool, &v));
    }

    // The original reported a view's tableType as the summary's `type`.
    let v = h
        .ok(
            "coda_get_table_summary",
            json!({"docId": d, "tableIdOrName": "table-open"}),
        )
        .await;
    if v.pointer("/table/type") != Some(&json!("view")) {
        missing.push(format!(
            "coda_get_table_summary of a view: table.type is not \"view\": {v}"
        ));
    }

    // Page reads answer with the content itself as text, as the original did.
    for (tool, args) in [
        (
            "coda_get_page_content",
            json!({"docId": d, "pageIdOrName": "canvas-overview"}),
        ),
        (
            "coda_peek_page",
            json!({"docId": d, "pageIdOrName": "canvas-overview", "numLines": 2}),
        ),
    ] {
        let r = h.call(tool, args).await;
        let t = text(&r);
        if !t.contains("Overview") || t.contains("structuredContent") {
            missing.push(format!("{tool}: text is not the page content: {t}"));
        }
    }

    // Writes, in an order where each still has something to act on.
    let writes: Vec<(&str, Value, &[&str])> = vec![
        (
            "coda_create_document",
            json!({"title": "Copy"}),
            &["/id", "/type", "/name", "/href"],
        ),
        (
            "coda_create_page",
            json!({"docId": d, "name": "Drafts", "content": "hello"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_rename_page",
            json!({"docId": d, "pageIdOrName": "canvas-notes", "newName": "Notes"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_replace_page_content",
            json!({"docId": d, "pageIdOrName": "canvas-notes", "content": "new"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_append_page_content",
            json!({"docId": d, "pageIdOrName": "canvas-notes", "content": "more"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_duplicate_page",
            json!({"docId": d, "pageIdOrName": "canvas-overview", "newName": "Overview 2"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_create_rows",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rows": [{"Name": "Ship"}]}),
            &["/requestId", "/addedRowIds/0"],
        ),
        (
            "coda_update_row",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Doing"}}),
            &["/requestId", "/id"],
        ),
        (
            "coda_bulk_update_rows",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "updates": [
                {"rowIdOrName": "i-2", "values": {"Status": "Done"}},
                {"rowIdOrName": "i-missing", "values": {"Status": "Done"}}
            ]}),
            &[
                "/results/0/rowId",
                "/results/0/success",
                "/results/0/data/requestId",
                "/results/1/rowId",
                "/results/1/success",
                "/results/1/error",
                "/totalUpdates",
                "/successful",
                "/failed",
            ],
        ),
        (
            "coda_push_button",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "columnIdOrName": "c-notify"}),
            &["/requestId", "/rowId", "/columnId"],
        ),
        (
            "coda_delete_row",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rowIdOrName": "i-3"}),
            &["/requestId", "/id"],
        ),
        (
            "coda_delete_rows",
            json!({"docId": d, "tableIdOrName": "grid-tasks", "rowIds": ["i-2"]}),
            &["/requestId", "/rowIds/0"],
        ),
        (
            "coda_delete_page",
            json!({"docId": d, "pageIdOrName": "canvas-notes"}),
            &["/requestId", "/id"],
        ),
    ];
    for (tool, args, keys) in &writes {
        let v = h.ok(tool, args.clone()).await;
        missing.extend(has(tool, &v, keys));
        missing.extend(declared(tool, &v));
    }
    // coda_update_document: Coda (and the original) answer with an empty object.
    h.ok(
        "coda_update_document",
        json!({"docId": d, "title": "Renamed"}),
    )
    .await;

    assert!(
        missing.is_empty(),
        "{} original key(s) missing:\n{}",
        missing.len(),
        missing.join("\n")
    );
    let mut called: Vec<&str> = reads.iter().chain(&writes).map(|(t, _, _)| *t).collect();
    called.extend([
        "coda_get_page_content",
        "coda_peek_page",
        "coda_update_document",
    ]);
    called.sort();
    called.dedup();
    assert_eq!(called.len(), 34, "every one of the 34 tools is called");
    let v = h
        .ok("coda_bulk_update_rows", json!({"docId": d, "tableIdOrName": "grid-tasks", "updates": [{"rowIdOrName": "i-1", "values": {"Status": "Done"}}]}))
        .await;
    assert_eq!(
        (
            v["successful"].as_u64(),
            v["failed"].as_u64(),
            v["results"][0]["success"].as_bool()
        ),
        (Some(1), Some(0), Some(true)),
        "{v}"
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// A select column's options are cut to 20 in the default (slim) column
/// list, but the column keeps Coda's keys (`format.type`, `format.options`).
#[tokio::test]
async fn slim_columns_keep_codas_keys_and_cut_long_select_lists() {
    let h = start(&[]).await;
    h.fake.add_projects_table();
    h.fake.add_select_options(100);
    let v = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc2", "tableIdOrName": "grid-projects"}),
        )
        .await;
    let cols = v["items"].as_array().unwrap();
    assert_eq!(cols.len(), 7, "{v}");
    for c in cols {
        assert_eq!(c["type"], "column", "{c}");
        assert!(c["format"]["type"].is_string(), "{c}");
    }
    let stage = cols.iter().find(|c| c["name"] == "Stage").unwrap();
    assert_eq!(stage["format"]["type"], "select", "{stage}");
    assert_eq!(stage["format"]["options"].as_array().unwrap().len(), 20);
    assert_eq!(stage["format"]["options"][0]["name"], "Plan");
    assert_eq!(stage["optionsCount"], 103);
    let v = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc2", "tableIdOrName": "grid-projects", "full": true}),
        )
        .await;
    let stage = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Stage")
        .unwrap();
    assert_eq!(stage["format"]["options"].as_array().unwrap().len(), 103);
    h.close().await;
}
