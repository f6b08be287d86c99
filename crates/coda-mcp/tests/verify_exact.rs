//! Regression: `verify: true` reported a row update as matching when Coda
//! had stored another value: numbers were equal within an absolute 1e-9,
//! and text was compared after trimming whitespace and backticks. The fake
//! Coda stores a changed value; the tool must report the mismatch, and
//! still report a match when Coda only parsed text into a number.
//!
//! Also: a bulk update's check must not say more than it did. It stopped at
//! the first row with a formatted column it could not compare (so a later
//! row's changed value went unreported), and past 100 rows it re-read the
//! first 100 and said `matches: true` with no note.
//!
//! Upserts (`keyColumns`) were never re-read ("upserts return no row
//! ids"): each row is now found by its keys and compared.
//!
//! And a page write Coda lost was reported as matching whenever the page
//! already had the text: an append or prepend of text it had, a replace
//! that was to remove lines (the check only looked for the new text).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::FakeCoda;
use harness::connect;
use serde_json::{Value, json};

async fn update_verified(sent: (&str, Value), stored: Option<(&str, Value)>) -> Value {
    let fake = FakeCoda::start().await;
    if let Some((col, v)) = stored {
        fake.change_written_cells(col, v);
    }
    let h = connect(fake, &[]).await;
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1",
                   "values": {sent.0: sent.1}, "verify": true}),
        )
        .await;
    h.close().await;
    v["verification"].clone()
}

#[tokio::test]
async fn a_write_coda_changed_is_reported_as_a_mismatch() {
    let mut missed = Vec::new();
    for (col, name, sent, stored) in [
        ("c-status", "Status", json!("  Shipped "), json!("Shipped")),
        ("c-status", "Status", json!("`v2`"), json!("v2")),
        ("c-points", "Points", json!(0.0000000004), json!(0)),
        (
            "c-status",
            "Status",
            json!("9007199254740993"),
            json!("9007199254740992"),
        ),
    ] {
        let v = update_verified((name, sent.clone()), Some((col, stored.clone()))).await;
        let m = &v["mismatches"][0];
        if v["matches"] != false || (&m["intended"], &m["stored"]) != (&sent, &stored) {
            missed.push(format!("{sent} stored as {stored}: {v}"));
        }
    }
    assert!(
        missed.is_empty(),
        "changes read as verified:\n{}",
        missed.join("\n")
    );
}

#[tokio::test]
async fn a_write_coda_only_parsed_is_reported_as_a_match() {
    let v = update_verified(("Points", json!("8.0")), Some(("c-points", json!(8)))).await;
    assert_eq!(v["matches"], true, "{v}");
    let v = update_verified(("Status", json!("  Shipped ")), None).await;
    assert_eq!(v["matches"], true, "{v}");
}

#[tokio::test]
async fn a_formatted_column_does_not_stop_a_bulk_check_of_later_rows() {
    let fake = FakeCoda::start().await;
    fake.add_column("grid-tasks", "c-due", "Due", "date");
    fake.change_written_cells("c-due", json!("2026-03-01T00:00:00.000-08:00"));
    fake.change_written_cells("c-points", json!(0));
    let h = connect(fake, &[]).await;
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "verify": true, "updates": [
                {"rowIdOrName": "i-1", "values": {"Due": "2026-03-01"}},
                {"rowIdOrName": "i-2", "values": {"Points": 5}},
            ]}),
        )
        .await;
    h.close().await;
    let v = &v["verification"];
    assert_eq!(v["rowsChecked"], 2, "{v}");
    assert_eq!(v["matches"], false, "{v}");
    let m = &v["mismatches"][0];
    assert_eq!(
        (&m["rowId"], &m["column"], &m["intended"], &m["stored"]),
        (&json!("i-2"), &json!("Points"), &json!(5), &json!(0)),
        "{v}"
    );
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("not compared") && note.contains("Due of i-1"),
        "{note}"
    );
}

#[tokio::test]
async fn a_bulk_update_past_the_check_cap_says_the_rest_was_not_re_read() {
    let fake = FakeCoda::start().await;
    fake.add_rows(101);
    let h = connect(fake, &[]).await;
    let updates: Vec<Value> = (0..101)
        .map(|i| json!({"rowIdOrName": format!("i-bulk-{i}"), "values": {"Points": 1000 + i}}))
        .collect();
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "verify": true, "updates": updates}),
        )
        .await;
    h.close().await;
    assert_eq!(v["successful"], 101, "{v}");
    let v = &v["verification"];
    assert_eq!(v["rowsChecked"], 100, "{v}");
    assert_eq!(v["mismatches"], json!([]), "{v}");
    assert_eq!(v["matches"], false, "{v}");
    assert_eq!(v["note"], "only the first 100 rows were re-read", "{v}");
}

#[tokio::test]
async fn an_append_coda_lost_is_a_mismatch_even_when_the_page_had_the_text() {
    let fake = FakeCoda::start().await;
    fake.insert_line("canvas-notes", "Status: OK");
    let h = connect(fake, &[]).await;
    let args = json!({"docId": "doc1", "pageIdOrName": "canvas-notes",
                      "content": "Status: OK\n- Checked", "verify": true});
    for tool in ["coda_append_page_content", "coda_prepend_page_content"] {
        let v = h.ok(tool, args.clone()).await;
        assert_eq!(v["verification"]["matches"], true, "{tool}: {v}");
    }
    h.fake.drop_content_updates();
    for tool in ["coda_append_page_content", "coda_prepend_page_content"] {
        let v = h.ok(tool, args.clone()).await;
        let v = &v["verification"];
        assert_eq!(v["matches"], false, "{tool}: {v}");
        let lost: Vec<_> = v["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["intended"].as_str().unwrap(),
                    m["stored"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lost,
            [
                (
                    "Status: OK",
                    "(on the page 3 times after the write, 3 before it: expected at least 4)"
                ),
                (
                    "Checked",
                    "(on the page 2 times after the write, 2 before it: expected at least 3)"
                )
            ],
            "{tool}"
        );
    }
    h.close().await;
}

#[tokio::test]
async fn a_replace_coda_lost_is_a_mismatch_when_it_was_to_remove_lines() {
    let fake = FakeCoda::start().await;
    let h = connect(fake, &[]).await;
    let write = |content: &str| json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "content": content, "verify": true});
    let v = h
        .ok("coda_replace_page_content", write("# Plan\n- Keep\n- Drop"))
        .await;
    assert_eq!(v["verification"]["matches"], true, "{v}");
    let v = h
        .ok("coda_replace_page_content", write("# Plan\n- Keep"))
        .await;
    assert_eq!(v["verification"]["matches"], true, "{v}");
    h.ok("coda_replace_page_content", write("# Plan\n- Keep\n- Drop"))
        .await;
    h.fake.drop_content_updates();
    let v = h
        .ok("coda_replace_page_content", write("# Plan\n- Keep"))
        .await;
    let v = &v["verification"];
    assert_eq!(v["matches"], false, "{v}");
    assert_eq!(
        v["mismatches"],
        json!([{"rowId": "canvas-notes", "column": "content",
                "intended": "(not in the new content)",
                "stored": "(still on the page after the replace) Drop"}]),
        "{v}"
    );
    h.close().await;
}

#[tokio::test]
async fn upserted_rows_are_found_by_their_keys_and_compared() {
    let fake = FakeCoda::start().await;
    fake.change_written_cells("c-status", json!("Shipped"));
    let h = connect(fake, &[]).await;
    let v = h
        .ok(
            "coda_upsert_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "verify": true,
                   "rows": [{"Name": "Design", "Points": 9}, {"Name": "Ops", "Points": 4},
                            {"Name": "Build", "Points": 2, "Status": "Blocked"}]}),
        )
        .await;
    h.fake.assert_responses_match_spec();
    h.close().await;
    let v = &v["verification"];
    // Design updated, Ops inserted, Build updated: three rows re-read, and
    // the one value Coda changed is the one mismatch.
    assert_eq!(v["rowsChecked"], 3, "{v}");
    assert_eq!(v["matches"], false, "{v}");
    assert!(v.get("note").is_none(), "{v}");
    let m = &v["mismatches"];
    assert_eq!(m.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        (&m[0]["column"], &m[0]["intended"], &m[0]["stored"]),
        (&json!("Status"), &json!("Blocked"), &json!("Shipped")),
        "{v}"
    );
    assert!(m[0]["rowId"].as_str().unwrap().starts_with("i-"), "{v}");
}

#[tokio::test]
async fn an_upserted_row_no_row_matches_afterwards_is_a_mismatch() {
    let fake = FakeCoda::start().await;
    // Coda stores another name than the one sent: no row has the key now.
    fake.change_written_cells("c-name", json!("Renamed"));
    let h = connect(fake, &[]).await;
    let v = h
        .ok(
            "coda_upsert_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "verify": true,
                   "rows": [{"Name": "Fresh", "Points": 1}]}),
        )
        .await;
    h.close().await;
    let v = &v["verification"];
    assert_eq!(v["matches"], false, "{v}");
    assert_eq!(
        v["mismatches"],
        json!([{"rowId": "rows[0]", "column": "Name", "intended": "Fresh"}]),
        "{v}"
    );
}
