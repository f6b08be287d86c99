//! Regression: a write stopped by this server's rate limiter or by the
//! call deadline before it was sent said only why it stopped ("rate limit:
//! no DocContentWrite request slot before the call deadline"), and a
//! chunked insert or delete stopped that way partway said its later request
//! "was refused". Nothing said whether the doc had changed, while a refused
//! write says "NOT applied" and an unconfirmed one "may have been applied".
//! A write request stopped before it was sent now says it was NOT sent and
//! NOT applied, and a chunked write stopped partway says which requests
//! were sent and which were not.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::FakeCoda;
use harness::{Harness, TIMEOUT, command};
use rmcp::ServiceExt;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

/// What a write request stopped before it was sent says.
const REQUEST_NOT_SENT: &str = "this write request was NOT sent to Coda";
const NOT_APPLIED: &str = "so it was NOT applied";

const ROWS: &str = "/docs/doc1/tables/grid-tasks/rows";

/// The binary with the real client-side buckets (5 doc-content writes per
/// 10 s) and a 1 s call deadline: a write that would wait for a token
/// longer than that is refused by the limiter at once.
async fn rate_limited(extra: &[&str]) -> Harness {
    let fake = FakeCoda::start().await;
    let mut args = vec![
        "--poll-interval-ms",
        "20",
        "--retry-base-ms",
        "20",
        "--call-timeout-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    let cmd = command(&fake, &args);
    let client = tokio::time::timeout(TIMEOUT, ().serve(TokioChildProcess::new(cmd).unwrap()))
        .await
        .expect("initialize timed out")
        .expect("initialize failed");
    Harness {
        fake,
        client,
        output_schemas: Default::default(),
    }
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_write_the_rate_limiter_stops_says_it_was_not_sent_and_not_applied() {
    let h = rate_limited(&[]).await;
    let update = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Doing"}});
    // Spend the five doc-content write tokens.
    for _ in 0..5 {
        h.ok("coda_update_row", update.clone()).await;
    }
    let calls = [
        ("coda_update_row", update),
        (
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "new"}]}),
        ),
        (
            "coda_append_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "content": "more"}),
        ),
    ];
    for (tool, args) in calls {
        let e = h.fails(tool, args).await;
        assert!(
            e.contains("rate limit")
                && e.contains(REQUEST_NOT_SENT)
                && e.contains(NOT_APPLIED)
                && !e.contains("may have been"),
            "{tool}: {e}"
        );
    }
    assert_eq!(h.fake.calls("PUT", &format!("{ROWS}/i-1")).len(), 5);
    assert!(h.fake.calls("POST", ROWS).is_empty());
    h.close().await;
}

#[tokio::test]
async fn an_insert_the_rate_limiter_stops_partway_says_which_requests_were_sent() {
    let h = rate_limited(&["--row-chunk-bytes", "20000"]).await;
    let rows: Vec<_> = (0..150)
        .map(|i| json!({"Name": format!("big-{i}"), "Status": "x".repeat(1000)}))
        .collect();
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}),
        )
        .await;
    let posts = h.fake.calls("POST", ROWS);
    assert_eq!(posts.len(), 5, "the limiter lets five through");
    let sent: usize = posts
        .iter()
        .map(|p| p.body.as_ref().unwrap()["rows"].as_array().unwrap().len())
        .sum();
    assert_eq!(v["rowsAccepted"], sent, "{v}");
    assert_eq!(v["rowsNotSent"], 150 - sent, "{v}");
    assert!(v.get("rowsOutcomeUnknown").is_none(), "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("request 6 of")
            && err.contains("was NOT sent")
            && err.contains(REQUEST_NOT_SENT)
            && err.contains("requests 1 to 5) were sent and accepted")
            && err.contains("were NOT written")
            && !err.contains("refused")
            && !err.contains("may have been"),
        "{err}"
    );
    h.close().await;
}

#[tokio::test]
async fn a_delete_the_rate_limiter_stops_partway_says_which_requests_were_sent() {
    let h = rate_limited(&[]).await;
    h.fake.add_rows(3000);
    let ids: Vec<String> = (0..3000).map(|i| format!("i-bulk-{i}")).collect();
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ids}),
        )
        .await;
    assert_eq!(h.fake.calls("DELETE", ROWS).len(), 5);
    assert_eq!(strings(&v, "deletedRowIds"), ids[..2500]);
    assert_eq!(strings(&v, "notDeletedRowIds"), ids[2500..]);
    assert!(v.get("outcomeUnknownRowIds").is_none(), "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("request 6 of 6 was NOT sent")
            && err.contains(REQUEST_NOT_SENT)
            && err.contains("Requests 1 to 5 were sent")
            && err.contains("were NOT deleted")
            && !err.contains("refused")
            && !err.contains("may have been"),
        "{err}"
    );
    h.close().await;
}
