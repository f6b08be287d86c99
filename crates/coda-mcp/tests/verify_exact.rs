//! Regression: `verify: true` reported a row update as matching when Coda
//! had stored another value: numbers were equal within an absolute 1e-9,
//! and text was compared after trimming whitespace and backticks. The fake
//! Coda stores a changed value; the tool must report the mismatch, and
//! still report a match when Coda only parsed text into a number.

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
