//! Regression: the `--docs` allow-list was checked on the raw `docId` and
//! `sourceDoc` keys only, so `doc_id` (an alias every doc tool accepts), a
//! page URL of another doc, `coda_resolve_link`, the admin `docIds` filter
//! and a copy of an allowed doc all reached Coda for docs outside the list.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::{Map, Value, json};

/// A valid value for each required argument of the doc tools, so that a
/// refusal can only come from the allow-list.
fn value_for(arg: &str) -> Value {
    match arg {
        "pageIdOrName" => json!("canvas-overview"),
        "tableIdOrName" => json!("grid-tasks"),
        "rowIdOrName" => json!("i-1"),
        "columnIdOrName" => json!("c-notify"),
        "controlIdOrName" => json!("ctrl-threshold"),
        "formulaIdOrName" => json!("f-total"),
        "permissionId" => json!("perm-1"),
        "ruleId" => json!("rule-1"),
        "access" => json!("readonly"),
        "principal" => json!({"type": "email", "email": "bob@example.com"}),
        "numLines" => json!(1),
        "rows" => json!([{"Name": "x"}]),
        "keyColumns" => json!(["Name"]),
        "values" => json!({"Status": "x"}),
        "updates" => json!([{"rowIdOrName": "i-1", "values": {"Status": "x"}}]),
        _ => json!("x"),
    }
}

#[tokio::test]
async fn every_doc_tool_refuses_a_doc_outside_the_list_however_it_is_spelled() {
    let h = start(&["--docs", "doc1", "--toolsets", "all"]).await;
    let tools = h.tools().await;
    let mut checked = 0;
    for t in &tools {
        let props = t.input_schema.get("properties").and_then(Value::as_object);
        if !props.is_some_and(|p| p.contains_key("docId")) {
            continue;
        }
        let required: Vec<&str> = t
            .input_schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, doc) in [
            ("doc_id", "doc2"),
            ("docId", "doc2"),
            ("docId", "https://coda.io/d/Wiki_ddoc2/Page_su1"),
        ] {
            let mut args = Map::new();
            for r in &required {
                args.insert((*r).to_owned(), value_for(r));
            }
            args.remove("docId");
            args.insert(key.to_owned(), json!(doc));
            args.insert("confirm".into(), json!(true));
            // Tools that need one of several optional arguments.
            let extra = match t.name.as_ref() {
                "coda_delete_rows" => json!({"rowIds": ["i-1"]}),
                "coda_update_acl_settings" => json!({"allowCopying": true}),
                "coda_update_document" => json!({"title": "T"}),
                "coda_update_page" => json!({"name": "N"}),
                _ => json!({}),
            };
            if let Value::Object(extra) = extra {
                args.extend(extra);
            }
            let e = h.fails(&t.name, Value::Object(args)).await;
            assert!(e.contains("allow-list"), "{} {key}={doc}: {e}", t.name);
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} calls checked");
    let leaked: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("doc2"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(leaked.is_empty(), "sent to Coda: {leaked:?}");
    h.close().await;
}

#[tokio::test]
async fn urls_links_copies_and_analytics_of_other_docs_are_refused() {
    let h = start(&["--docs", "doc1", "--toolsets", "all"]).await;
    // A page URL of doc2 given for a doc1 page argument.
    let e = h
        .fails(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "https://coda.io/d/_ddoc2/_sucanvas-notes"}),
        )
        .await;
    assert!(e.contains("allow-list"), "{e}");
    let e = h
        .fails(
            "coda_resolve_link",
            json!({"url": "https://coda.io/d/Wiki_ddoc2"}),
        )
        .await;
    assert!(e.contains("allow-list"), "{e}");
    // A copy is a new doc, which the allow-list does not allow.
    let e = h
        .fails(
            "coda_create_document",
            json!({"title": "Copy", "sourceDoc": "doc1"}),
        )
        .await;
    assert!(e.contains("allow-list"), "{e}");
    let e = h
        .fails("coda_list_doc_analytics", json!({"docIds": ["doc2"]}))
        .await;
    assert!(e.contains("allow-list"), "{e}");
    let e = h.fails("coda_list_doc_analytics", json!({})).await;
    assert!(e.contains("allow-list"), "{e}");
    assert!(h.fake.calls("POST", "/docs").is_empty());
    assert!(h.fake.calls("GET", "/resolveBrowserLink").is_empty());
    assert!(h.fake.calls("GET", "/analytics/docs").is_empty());
    // The allowed doc still works, by URL too.
    h.ok(
        "coda_resolve_link",
        json!({"url": "https://coda.io/d/Tracker_ddoc1"}),
    )
    .await;
    h.ok("coda_list_doc_analytics", json!({"docIds": ["doc1"]}))
        .await;
    h.ok(
        "coda_get_page",
        json!({"doc_id": "doc1", "pageIdOrName": "https://coda.io/d/_ddoc1/_sucanvas-notes"}),
    )
    .await;
    h.close().await;
}

/// Regression: the next page of a list is asked with Coda's `pageToken`
/// alone, so under `--docs` the second page of `coda_list_doc_analytics`
/// named no `docIds`, read as analytics over all docs and was refused:
/// `nextPageToken` (and `fetchAll`) could not go past the first page.
#[tokio::test]
async fn doc_analytics_of_allowed_docs_continue_past_the_first_page() {
    let h = start(&["--docs", "doc1,doc2", "--toolsets", "all"]).await;
    let args = json!({"docIds": ["doc1", "doc2"], "limit": 1});
    let first = h.ok("coda_list_doc_analytics", args.clone()).await;
    assert_eq!(first["items"][0]["doc"]["id"], "doc1", "{first}");
    let mut next = args.clone();
    next["pageToken"] = first["nextPageToken"].clone();
    let second = h.ok("coda_list_doc_analytics", next).await;
    assert_eq!(second["items"][0]["doc"]["id"], "doc2", "{second}");
    let mut all = args;
    all["fetchAll"] = json!(true);
    let all = h.ok("coda_list_doc_analytics", all).await;
    assert_eq!(all["count"], 2, "{all}");
    assert!(all.get("note").is_none(), "{all}");
    h.close().await;
}
