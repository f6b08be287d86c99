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
