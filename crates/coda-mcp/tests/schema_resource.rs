//! Regression: the `coda://docs/{docId}/schema` resource had no size bound.
//! It read the columns of every table and view of the doc (up to 10,000 of
//! them) and returned them all, with every page, in one body: a doc with
//! many tables gave a body of megabytes and held every table's columns in
//! memory at once. It now stays within `--max-result-bytes`, like tool
//! results, stops reading columns once they no longer fit, and says in
//! the body what it left out and which tool reads it.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::{Harness, TIMEOUT, start};
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::Value;

async fn schema_body(h: &Harness) -> String {
    let r = tokio::time::timeout(
        TIMEOUT,
        h.client
            .read_resource(ReadResourceRequestParams::new("coda://docs/doc1/schema")),
    )
    .await
    .expect("resources/read timed out")
    .expect("resources/read failed");
    match &r.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    }
}

fn column_reads(h: &Harness) -> usize {
    h.fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/columns"))
        .count()
}

#[tokio::test]
async fn a_doc_with_many_tables_gives_a_schema_within_the_result_budget_that_says_what_it_left_out()
{
    let h = start(&[]).await;
    // 2 seeded tables + 600 (each with grid-tasks' 5 columns) and 3 + 900 pages.
    h.fake.add_tables(600);
    h.fake.add_pages(900);
    let body = schema_body(&h).await;
    assert!(body.len() <= 100_000, "{} bytes", body.len());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["truncated"], true, "{v}");
    assert_eq!(v["tablesTotal"], 602);
    assert_eq!(v["pagesTotal"], 903);
    let tables = v["tables"].as_array().unwrap();
    let pages = v["pages"].as_array().unwrap();
    let with_columns = tables
        .iter()
        .take_while(|t| t.get("columns").is_some())
        .count();
    // Columns for a prefix of the tables, then tables without them.
    assert!(with_columns > 10, "{with_columns}");
    assert!(
        tables[with_columns..]
            .iter()
            .all(|t| t.get("columns").is_none())
    );
    assert!(tables.len() < 602 && pages.len() < 903);
    let note = v["note"].as_str().unwrap();
    for said in [
        format!("columns of the first {with_columns} of 602 tables"),
        format!("{} of 903 pages", pages.len()),
        "coda_list_columns".into(),
        "coda_list_tables".into(),
        "coda_list_pages".into(),
        "100000 bytes".into(),
    ] {
        assert!(note.contains(&said), "{said:?} not in {note}");
    }
    // Columns stop being read once they no longer fit (a few in flight).
    let reads = column_reads(&h);
    eprintln!(
        "schema body: {} bytes, {reads} column reads; {note}",
        body.len()
    );
    assert!(reads <= with_columns + 8, "{reads} column reads");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_small_doc_gives_its_whole_schema_with_no_note() {
    let h = start(&["--max-result-bytes", "20000"]).await;
    let body = schema_body(&h).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["truncated"], false, "{v}");
    assert!(v.get("note").is_none(), "{v}");
    let tables = v["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    assert!(
        tables
            .iter()
            .all(|t| t["columns"].as_array().unwrap().len() == 5)
    );
    assert_eq!(v["pages"].as_array().unwrap().len(), 3);
    // A tight budget cuts even this doc, and says so.
    h.close().await;
    let h = start(&["--max-result-bytes", "2048"]).await;
    let body = schema_body(&h).await;
    assert!(body.len() <= 2048, "{} bytes", body.len());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["truncated"], true, "{v}");
    assert!(v["note"].as_str().unwrap().contains("2048 bytes"), "{v}");
    h.close().await;
}

/// Regression: the schema resource is read outside a tool call, so the
/// rule that a reader holding room never waits for more (crate::budget)
/// did not hold for it: its tables and pages, kept while their columns
/// are read, hold room, and a table's columns whose answer did not fit in
/// what was left waited for room that only the read itself held, until
/// the request's timeout (30 s). Reproduced: tables listed in an answer
/// whose parse holds ~30 MiB of the smallest --max-read-bytes (64 MiB),
/// then columns answered with 4 MB (36 MiB reserved with their parse):
/// the read took 30 s. Now the read is run as a call, so such a column
/// read finds no room at once and the table says so (`columnsError`).
#[tokio::test]
async fn a_schema_read_holding_room_never_waits_for_more() {
    use fake_coda::Hostile;
    let h = start(&["--max-read-bytes", "67108864"]).await;
    // Built as text: a 30 MiB string through json! is slow in a debug build.
    let tables = format!(
        r#"{{"items":[{{"id":"grid-big","type":"table","tableType":"table","href":"x","name":"{}"}}]}}"#,
        "n".repeat(30 * 1024 * 1024)
    );
    let ok = |body: Vec<u8>| Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body,
        endless: false,
    };
    h.fake
        .answer_next("GET", "/docs/doc1/tables", 1, ok(tables.into_bytes()));
    let cols: Vec<Value> = (0..50_000)
        .map(|i| serde_json::json!({"id": format!("c-{i}"), "type": "column", "name": format!("C{i}"), "href": "x", "format": {"type": "text"}}))
        .collect();
    let cols = serde_json::json!({"items": cols}).to_string();
    assert!(cols.len() > 4_000_000, "{}", cols.len());
    h.fake
        .answer_next("GET", "/columns", 1, ok(cols.into_bytes()));
    let started = std::time::Instant::now();
    let body = schema_body(&h).await;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(15),
        "the schema read took {took:?}: a column read waited for room the read held"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tablesTotal"], 1, "{}", &body[..body.len().min(500)]);
    h.close().await;
}
