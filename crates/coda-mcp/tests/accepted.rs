//! Regression: a write Coda accepted (202) whose answer could not be read
//! (the connection cut mid-body, or a body that is not JSON) was reported
//! as "could not reach Coda" or "unexpected response", with nothing saying
//! it may have been applied; a model that resends inserts the rows twice.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::Broken;
use harness::start;
use serde_json::json;

const ROWS: &str = "/docs/doc1/tables/grid-tasks/rows";

/// Inserts one row whose answer is `broken` after Coda applied it, and
/// expects an error containing `said` that says not to resend it.
async fn insert_once_with_a_broken_answer(broken: Broken, said: &str) {
    let h = start(&[]).await;
    let before = h.fake.row_count("grid-tasks");
    h.fake
        .break_next_answer_after_applying("POST", "/rows", broken);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "once"}]}),
        )
        .await;
    assert!(e.contains(said), "{e}");
    assert!(e.contains("do not resend"), "{e}");
    assert!(!e.contains("could not reach Coda"), "{e}");
    assert_eq!(h.fake.calls("POST", ROWS).len(), 1, "sent once");
    assert_eq!(h.fake.row_count("grid-tasks"), before + 1);
    h.close().await;
}

#[tokio::test]
async fn an_insert_whose_202_answer_is_cut_is_reported_accepted_not_unreachable() {
    insert_once_with_a_broken_answer(Broken::CutBody, "accepted").await;
}

/// A whole answer that is not JSON may not be Coda's (see
/// attacker::a_write_answered_with_a_web_page_is_not_called_accepted): it
/// is reported as possibly applied, never as accepted nor unreachable.
#[tokio::test]
async fn an_insert_whose_202_answer_is_not_json_is_reported_as_possibly_applied() {
    insert_once_with_a_broken_answer(
        Broken::NotJson("<html>upstream ok</html>".into()),
        "may have been applied",
    )
    .await;
}

/// Regression: a read answered 4xx with its body cut was retried like a
/// cut 2xx answer, uncounted, until the call's deadline, and ended as a
/// transport failure instead of Coda's refusal.
#[tokio::test]
async fn a_refusal_whose_body_is_cut_is_a_refusal_not_a_retry() {
    let h = start(&[]).await;
    h.fake
        .break_answers_after_applying("GET", "/tables/no-such", Broken::CutBody, 100);
    let e = h
        .fails(
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": "no-such"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let asked = h.fake.calls("GET", "/docs/doc1/tables/no-such").len();
    assert_eq!(asked, 1, "asked {asked} times: {e}");
    h.close().await;
}

#[tokio::test]
async fn a_read_whose_answer_is_cut_is_read_again() {
    let h = start(&[]).await;
    h.fake
        .break_next_answer_after_applying("GET", "/docs/doc1", Broken::CutBody);
    let v = h.ok("coda_get_document", json!({"docId": "doc1"})).await;
    assert_eq!(v["id"], "doc1");
    assert_eq!(h.fake.calls("GET", "/docs/doc1").len(), 2);
    h.close().await;
}

/// Regression: in `coda_bulk_update_rows` by row, an update Coda accepted
/// (2xx) whose answer could not be read (cut, and the repeats of the
/// replayable PUT answered 503) was a row with `success: false`, counted
/// in `failed`: the row was updated, and the result said it failed (its
/// error text said "accepted", its flag and the counts said the
/// opposite). It is now `success: true`, counted in `successful`, its
/// `error` saying why there is no requestId and not to resend it.
#[tokio::test]
async fn a_bulk_update_accepted_with_an_unreadable_answer_is_not_reported_failed() {
    let h = start(&[]).await;
    h.fake
        .break_next_answer_after_applying("PUT", "/rows/i-1", Broken::CutBody);
    h.fake.fail_next("PUT", "/rows/i-1", 503, 10, None);
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [
                {"rowIdOrName": "i-1", "values": {"Status": "Cut"}},
                {"rowIdOrName": "i-2", "values": {"Points": 4}}]}),
        )
        .await;
    // Coda applied it.
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Cut");
    let row = &v["results"][0];
    let e = row["error"].as_str().unwrap_or_default();
    assert!(e.contains("accepted") && e.contains("do not resend"), "{v}");
    assert_eq!(row["success"], true, "{v}");
    assert_eq!(v["successful"], 2, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    h.close().await;
}
