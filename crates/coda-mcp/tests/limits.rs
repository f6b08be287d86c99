//! Regression: answers from Coda were read whole whatever their size (an
//! API body through `resp.bytes()`, an export through an unbounded
//! gunzip), so one huge answer could take the server's memory. Both are
//! now refused past 32 MiB with an error that says so.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::ExportPlan;
use harness::start;
use serde_json::json;

const HUGE: usize = 33 * 1024 * 1024;

#[tokio::test]
async fn an_api_answer_over_the_cap_is_refused_not_read_whole() {
    let h = start(&[]).await;
    h.fake.insert_line("canvas-overview", &"a".repeat(HUGE));
    let e = h
        .fails(
            "coda_list_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview"}),
        )
        .await;
    assert!(e.contains("larger than"), "{e}");
    h.close().await;
}

#[tokio::test]
async fn an_export_that_inflates_past_the_cap_is_refused() {
    let h = start(&[]).await;
    h.fake.set_export_plan(ExportPlan {
        gzip: true,
        ..ExportPlan::default()
    });
    h.fake.insert_line("canvas-overview", &"a".repeat(HUGE));
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "format": "markdown"}),
        )
        .await;
    assert!(e.contains("more than"), "{e}");
    h.close().await;
}

/// Regression: `fetchAll` read pages up to `maxItems` and only then cut
/// the result to the byte budget, so most of what it read was thrown away.
#[tokio::test]
async fn fetch_all_stops_reading_pages_once_the_budget_is_full() {
    let h = start(&["--max-result-bytes", "4096"]).await;
    h.fake.add_rows(300);
    h.fake.set_max_page(10);
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 10}),
        )
        .await;
    assert_eq!(v["truncated"], true, "{v}");
    let count = v["count"].as_u64().unwrap() as usize;
    let pages = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/docs/doc1/tables/grid-tasks/rows")
        .count();
    // The pages that hold the returned items, and at most one more.
    assert!(
        pages <= count / 10 + 2,
        "{pages} pages read for {count} items"
    );
    // The continuation picks up right after the last item returned.
    let next = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 10, "pageToken": v["nextPageToken"]}),
        )
        .await;
    assert_ne!(next["items"][0]["id"], v["items"][count - 1]["id"]);
    h.close().await;
}

/// Regression: `coda_get_page_content` returned as many characters as
/// `maxChars` asked for, twice (as JSON and as text), past the result
/// budget.
#[tokio::test]
async fn page_content_stays_within_the_result_budget_whatever_max_chars_says() {
    let h = start(&[]).await;
    h.fake.insert_line("canvas-overview", &"é".repeat(300_000));
    let v = h
        .ok(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "format": "plainText", "maxChars": 1_000_000}),
        )
        .await;
    let content = v["content"].as_str().unwrap();
    assert!(content.len() <= 50_000, "{} bytes", content.len());
    assert_eq!(v["truncated"], true);
    // The next read continues where this one stopped.
    let n = content.chars().count();
    let next = h
        .ok(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "format": "plainText", "maxChars": 1_000_000, "offset": n}),
        )
        .await;
    assert_eq!(next["offset"], n);
    h.close().await;
}

/// Regression: `coda_search_tables` returned every match whatever its size.
#[tokio::test]
async fn search_tables_stays_within_the_result_budget_and_says_what_it_left_out() {
    let h = start(&["--max-result-bytes", "2048"]).await;
    h.fake.add_tables(40);
    let v = h
        .ok(
            "coda_search_tables",
            json!({"docId": "doc1", "query": "task"}),
        )
        .await;
    assert_eq!(v["totalFound"], 42);
    let n = v["items"].as_array().unwrap().len();
    assert!((1..42).contains(&n), "{n} items");
    assert!(v.to_string().len() <= 2048, "{} bytes", v.to_string().len());
    let note = v["note"].as_str().unwrap();
    assert!(note.contains(&format!("{} more", 42 - n)), "{note}");
    h.close().await;
}

/// Regression: `coda_get_table_summary` returned its sample rows whatever
/// their size (one long text cell made the result any size).
#[tokio::test]
async fn table_summary_leaves_out_sample_rows_past_the_result_budget() {
    let h = start(&[]).await;
    h.ok(
        "coda_update_row",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "values": {"Status": "s".repeat(150_000)}}),
    )
    .await;
    let v = h
        .ok(
            "coda_get_table_summary",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    assert!(
        v.to_string().len() <= 100_000,
        "{} bytes",
        v.to_string().len()
    );
    assert_eq!(v["columns"].as_array().unwrap().len(), 5);
    assert!(
        v["note"].as_str().unwrap().contains("sample"),
        "{}",
        v["note"]
    );
    h.close().await;
}

/// Regression: `coda_get_document_stats` listed every table and view in
/// its breakdown, whatever the size of the result.
#[tokio::test]
async fn document_stats_list_tables_only_up_to_the_result_budget() {
    let h = start(&["--max-result-bytes", "8192"]).await;
    h.fake.add_tables(500);
    let v = h
        .ok("coda_get_document_stats", json!({"docId": "doc1"}))
        .await;
    assert!(v.to_string().len() <= 8192, "{} bytes", v.to_string().len());
    assert_eq!(v["counts"]["tables"], 501, "{}", v["counts"]);
    let listed = v["breakdown"]["tableNames"].as_array().unwrap().len();
    assert!(listed > 0 && listed < 502, "{listed}");
    assert!(
        v["note"].as_str().unwrap().contains("coda_list_tables"),
        "{}",
        v["note"]
    );
    h.close().await;
}

/// Regression: an object read (`coda_get_formula`, `coda_get_control`,
/// `coda_get_row`, `coda_get_document`…) went to the model whole, outside
/// `--max-result-bytes`: a named formula over a big table (`=Tasks.Notes`)
/// has a value of megabytes, and all of it was one result.
#[tokio::test]
async fn a_formula_value_past_the_result_budget_is_cut_with_a_note() {
    let h = start(&["--max-result-bytes", "20000"]).await;
    let items: Vec<String> = (0..5000).map(|i| format!("note of row {i}")).collect();
    h.fake.add_formula("f-all", "All notes", json!(items));
    let r = h
        .call(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "f-all"}),
        )
        .await;
    let v = r.structured_content.clone().unwrap_or_default();
    let size = v.to_string().len();
    assert!(size <= 20_000, "{size} bytes");
    assert_eq!(v["id"], "f-all", "{v}");
    assert_eq!(v["value"][0], "note of row 0");
    assert_eq!(v["truncated"], true);
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("/value") && note.contains("of 5000 items"),
        "{note}"
    );
    let kept = v["value"].as_array().map_or(0, Vec::len);
    assert!(
        kept > 100 && note.contains(&format!("first {kept} of")),
        "{note}"
    );
    assert!(
        harness::text(&r).contains("--max-result-bytes"),
        "{}",
        harness::text(&r)
    );
    // A long string is cut the same way; a small answer is left alone.
    h.fake
        .add_formula("f-text", "Long text", json!("y".repeat(50_000)));
    let v = h
        .ok(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "f-text"}),
        )
        .await;
    assert!(v.to_string().len() <= 20_000);
    assert!(
        v["note"]
            .as_str()
            .unwrap_or_default()
            .contains("characters"),
        "{v}"
    );
    let v = h.ok("coda_get_document", json!({"docId": "doc1"})).await;
    assert!(
        v.get("truncated").is_none() && v.get("note").is_none(),
        "{v}"
    );
    h.close().await;
}

/// Regression: page reads counted the budget in UTF-8 bytes of the text,
/// but the text goes out as JSON (twice), where a quote, a backslash or a
/// line break takes two bytes and a control character six: a page of
/// quotes came back at twice `--max-result-bytes`, one of control
/// characters at six times.
#[tokio::test]
async fn page_reads_count_the_budget_in_json_bytes() {
    let h = start(&["--max-result-bytes", "20000"]).await;
    h.fake.add_pages(2);
    for (i, ch) in ['"', '\u{1}'].into_iter().enumerate() {
        let page = format!("canvas-p{i}");
        h.fake.insert_line(&page, &ch.to_string().repeat(30_000));
        for (tool, extra) in [
            (
                "coda_get_page_content",
                json!({"format": "plainText", "maxChars": 1_000_000}),
            ),
            ("coda_peek_page", json!({"numLines": 5})),
        ] {
            let mut args = json!({"docId": "doc1", "pageIdOrName": page});
            args.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let r = h.call(tool, args).await;
            let v = r.structured_content.clone().unwrap();
            let text = serde_json::to_string(&harness::text(&r)).unwrap();
            let size = v.to_string().len() + text.len();
            assert!(size <= 20_000, "{tool} {ch:?}: {size} bytes");
            assert_eq!(v["truncated"], true, "{tool} {ch:?}");
            let n = v["content"].as_str().unwrap().chars().count();
            assert!(n > 1000, "{tool} {ch:?}: only {n} characters");
        }
    }
    h.close().await;
}

/// Regression: an answer was parsed whatever it held within the 32 MiB
/// byte cap, and a JSON value costs far more parsed than as text: 32 MiB
/// of `{"a":[0,0,…]}` (16 million values) took coda-mcp to 568 MB of
/// memory for one `coda_get_document`, 1.1 GB for four at once. An answer
/// of more than `--max-answer-values` (1,000,000) values is refused
/// unparsed, saying so; the next call is served.
#[tokio::test]
async fn an_answer_of_too_many_values_is_refused_unparsed() {
    let h = harness::start(&[]).await;
    let mut body = b"{\"a\":[".to_vec();
    body.extend(b"0,".repeat(1_200_000));
    body.extend(b"0]}");
    h.fake.answer_next(
        "GET",
        "/docs/doc1",
        1,
        fake_coda::Hostile {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body,
            ..Default::default()
        },
    );
    let e = h
        .fails("coda_get_document", serde_json::json!({"docId": "doc1"}))
        .await;
    assert!(
        e.contains("more than 1000000 JSON values") && e.contains("--max-answer-values"),
        "{}",
        &e[..e.len().min(400)]
    );
    h.ok("coda_get_document", serde_json::json!({"docId": "doc1"}))
        .await;
    h.close().await;
}
