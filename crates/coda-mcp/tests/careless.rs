//! A careless model: arguments that are valid JSON and valid to the
//! schema but say something twice or nothing at all, or ids with
//! characters a URL cannot carry as they are. coda-mcp refuses them before
//! anything is sent, instead of letting Coda pick, or sends them encoded.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::json;

/// Two cells for one column (by name and by id, by two spellings of its
/// name, or twice in `cells`) were sent as they came, and Coda stored one
/// of them: the write reported success whichever it kept.
#[tokio::test]
async fn two_values_for_one_column_are_refused_before_sending() {
    let h = start(&[]).await;
    let cases = [
        (
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Done", "c-status": "Todo"}}),
        ),
        (
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Done", "status": "Todo"}}),
        ),
        (
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "ok"}, {"cells": [{"column": "Name", "value": "a"}, {"column": "Name", "value": "b"}]}]}),
        ),
        (
            "coda_upsert_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "rows": [{"Name": "Design", "Points": 1, "c-points": 2}]}),
        ),
    ];
    for (tool, args) in cases {
        let e = h.fails(tool, args.clone()).await;
        assert!(
            e.contains("same column") && e.contains("NOT sent"),
            "{tool} {args}: {e}"
        );
    }
    let writes: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "sent: {writes:?}");
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Done");
    h.close().await;
}

/// An argument of a megabyte is the model's own mistake, but its error
/// echoed it whole (twice, in the name and the URL): the error is cut in
/// the middle, keeping what failed and the advice at its end.
#[tokio::test]
async fn a_huge_argument_is_not_echoed_whole_in_the_error() {
    let h = start(&["--call-timeout-secs", "5"]).await;
    let huge = "T".repeat(1 << 20);
    for (tool, args) in [
        (
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": huge}),
        ),
        (
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": huge, "values": {"Name": "x"}}),
        ),
        (
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {huge.clone(): "x"}}),
        ),
    ] {
        let e = h.fails(tool, args).await;
        if tool != "coda_get_table" {
            assert!(
                e.ends_with("so it was NOT applied"),
                "{tool}: {}",
                &e[e.len() - 300..]
            );
        }
        assert!(
            e.len() < 10_000,
            "{tool}: the error is {} bytes: {}…",
            e.len(),
            &e[..200]
        );
    }
    h.close().await;
}

/// Regression: a wrong argument inside a flattened group (`limit`,
/// `pageToken`, `maxItems`…) loses its path in serde's error, and the
/// argument to blame was found by parsing the arguments again without each
/// key given in turn: one parse of n keys per key, on a runtime thread and
/// outside the call deadline. `coda_list_pages` with a bad `limit` and
/// 2000 stray keys (a 20 KB line) took 10 s to answer (debug build), and
/// the time grew with the square of the keys: 20,000 would take hours, and
/// two such calls held both runtime threads. Only declared arguments are
/// tried now; the error still names `limit`, at once.
#[tokio::test]
async fn stray_arguments_do_not_make_an_argument_error_slow() {
    let h = start(&[]).await;
    let mut args = serde_json::Map::new();
    args.insert("docId".into(), json!("doc1"));
    for i in 0..20_000 {
        // Named to sort before `limit`: the keys are tried in order.
        args.insert(format!("a{i}"), json!(i));
    }
    args.insert("limit".into(), json!("ten"));
    let params = rmcp::model::CallToolRequestParams::new("coda_list_pages").with_arguments(args);
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        h.client.call_tool(params),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer in 20 s"))
    .unwrap();
    let e = harness::text(&r);
    assert_eq!(r.is_error, Some(true), "{e}");
    assert!(e.starts_with("invalid argument `limit`"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let sent: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/pages"))
        .collect();
    assert!(sent.is_empty(), "{sent:?}");
    h.close().await;
}

/// An id or name that makes the URL longer than 16 KiB is not sent: the
/// http crate cannot hold a 64 KiB URL, and reqwest's "builder error"
/// quoted the whole URL and passed for "could not reach Coda" (a write
/// was reported as "no connection could be opened").
#[tokio::test]
async fn an_id_too_long_for_a_url_is_refused_before_sending() {
    let h = start(&[]).await;
    let long = "T".repeat(20_000);
    let e = h
        .fails(
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": long}),
        )
        .await;
    assert!(
        e.contains("URL would be") && !e.contains("could not reach"),
        "{}",
        &e[..300.min(e.len())]
    );
    let e = h
        .fails(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": long, "values": {"Name": "x"}}),
        )
        .await;
    assert!(
        e.contains("URL would be") && e.contains("NOT sent"),
        "{}",
        &e[..300.min(e.len())]
    );
    let sent = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.len() > 10_000)
        .count();
    assert_eq!(sent, 0);
    h.close().await;
}

/// Every tool, every required string argument empty (docId aside): no
/// request goes out with an empty path segment (`…/rows/` is `…/rows`
/// to a server that trims the slash: the bulk delete, a list).
#[tokio::test]
async fn no_tool_sends_an_empty_path_segment() {
    let h = start(&["--toolsets", "all"]).await;
    for tool in h.tools().await {
        let schema = serde_json::Value::Object((*tool.input_schema).clone());
        let mut args = serde_json::Map::new();
        for req in schema["required"].as_array().into_iter().flatten() {
            let k = req.as_str().unwrap();
            let v = match schema["properties"][k]["type"].as_str() {
                Some("string") if k == "docId" => json!("doc1"),
                Some("string") => json!(""),
                Some("array") => json!([""]),
                Some("object") => json!({"": ""}),
                Some("boolean") => json!(false),
                Some("integer") | Some("number") => json!(1),
                _ => json!(""),
            };
            args.insert(k.to_owned(), v);
        }
        let _ = h.call(&tool.name, serde_json::Value::Object(args)).await;
    }
    let bad: Vec<String> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("//") || r.path.ends_with('/'))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    // coda_replace_page_content took an empty pageIdOrName to `PUT …/pages/`.
    let e = h
        .fails(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "", "content": "x"}),
        )
        .await;
    assert!(e.contains("NOT sent"), "{e}");
    h.close().await;
}

/// A bulk update by row reports on every row: 20,000 updates made a
/// 3 MB result under the default 100 KB budget (most rows 'not sent',
/// paced past the deadline). More rows than the report can hold within
/// --max-result-bytes are refused before anything is sent.
#[tokio::test]
async fn a_bulk_update_too_big_to_report_is_refused_before_sending() {
    let h = start(&["--call-timeout-secs", "3"]).await;
    let updates: Vec<_> = (0..20_000)
        .map(|_| json!({"rowIdOrName": "i-1", "values": {"Points": 1}}))
        .collect();
    let e = h
        .fails(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        )
        .await;
    assert!(e.contains("at most 500") && e.contains("NOT sent"), "{e}");
    assert!(h.fake.requests().iter().all(|r| r.method == "GET"));
    let updates: Vec<_> = (0..500)
        .map(|i| json!({"rowIdOrName": "i-1", "values": {"Points": i}}))
        .collect();
    let r = h
        .call(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        )
        .await;
    let size = r.structured_content.as_ref().unwrap().to_string().len();
    assert!(size <= 110_000, "{size} bytes");
    h.close().await;
}

/// Regression: the URL parser drops tabs and line breaks inside a path
/// segment, so an id or name holding one was sent as another: `Ta\tsks`
/// read the table `Tasks`, and `.\n.` or `..\t` became `..`, which the
/// dot-segment guard did not see, so the request went one level up
/// (`POST …/hooks/automation/.\n.` was a POST to `…/docs/doc1/hooks`,
/// `GET /mutationStatus/..\t` a GET of the API root).
#[tokio::test]
async fn tabs_and_line_breaks_in_ids_are_sent_encoded_not_dropped() {
    let h = start(&[]).await;
    let cases = [
        (
            "coda_trigger_automation",
            json!({"docId": "doc1", "ruleId": ".\n."}),
            "/docs/doc1/hooks/automation/.%0A.",
        ),
        (
            "coda_get_mutation_status",
            json!({"requestId": "..\t"}),
            "/mutationStatus/..%09",
        ),
        (
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": "Ta\tsks"}),
            "/docs/doc1/tables/Ta%09sks",
        ),
        (
            "coda_delete_permission",
            json!({"docId": "doc1", "permissionId": "\r..\r"}),
            "/docs/doc1/acl/permissions/%0D..%0D",
        ),
    ];
    for (tool, args, path) in cases {
        let before = h.fake.requests().len();
        h.call(tool, args).await;
        let sent: Vec<String> = h.fake.requests()[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            !sent.is_empty() && sent.iter().all(|s| s.ends_with(path)),
            "{tool}: {sent:?}"
        );
    }
    h.close().await;
}

/// Regression: an upsert row without a value for a key column was sent,
/// and Coda can match it to no row, so it was inserted as a new row, once
/// more on every call: `coda_upsert_rows` (annotated idempotent) made
/// duplicates. `coda_bulk_update_rows` with keyColumns refused such rows;
/// `coda_upsert_rows` and `coda_create_rows` with keyColumns did not.
#[tokio::test]
async fn an_upsert_row_without_its_key_values_is_refused_before_sending() {
    let h = start(&[]).await;
    let before = h.fake.row_count("grid-tasks");
    for tool in ["coda_upsert_rows", "coda_create_rows", "coda_upsert_rows"] {
        let e = h
            .fails(
                tool,
                json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"],
                    "rows": [{"Name": "Design", "Status": "Done"}, {"Status": "Todo"}]}),
            )
            .await;
        assert!(
            e.contains("rows[1]") && e.contains("\"Name\""),
            "{tool}: {e}"
        );
    }
    assert_eq!(h.fake.row_count("grid-tasks"), before);
    assert!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .is_empty()
    );
    // The key given by its column id counts too.
    h.ok(
        "coda_upsert_rows",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"],
            "rows": [{"c-name": "Design", "Status": "Done"}]}),
    )
    .await;
    assert_eq!(h.fake.row_count("grid-tasks"), before);
    h.close().await;
}

/// Regression: Coda lists at most the first 5000 options of a select
/// column ("Returns the first 5000 options"), and the schema-aware check
/// took that list as all of them: a value that is an option past the
/// first 5000 was refused as "not one of its options", and nothing was
/// written.
#[tokio::test]
async fn a_select_option_past_the_5000_coda_lists_is_not_refused() {
    let h = start(&[]).await;
    h.fake.add_projects_table();
    h.fake.add_select_options(5100);
    h.ok(
        "coda_update_row",
        json!({"docId": "doc2", "tableIdOrName": "grid-projects", "rowIdOrName": "i-p1",
            "values": {"Stage": "Option 5050"}}),
    )
    .await;
    assert_eq!(h.fake.row_values("i-p1").unwrap()["c-stage"], "Option 5050");
    h.close().await;
}
