//! Regression: a write Coda refused with a 4xx (400, 403, 404, 409,
//! 422…) came back as Coda's status and message only
//! ("Coda API error 409 Conflict: …"), with nothing saying whether it had
//! been applied, while a 5xx or a timeout says it may have been and a
//! queued write (202) says it is not applied yet. A model could re-read
//! for an effect that cannot be there, or resend the same refused request.
//! A refused write now says plainly that it was NOT applied and what to
//! fix; the three classes read differently.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::{start, text};
use serde_json::json;

const NOT_APPLIED: &str = "so it was NOT applied";

#[tokio::test]
async fn a_write_coda_refuses_with_a_4xx_says_it_was_not_applied_and_what_to_fix() {
    let h = start(&[]).await;
    let update = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Doing"}});
    for (status, fix) in [
        (400, "send the corrected write"),
        (403, "resending it will not help"),
        (404, "check the ids"),
        (409, "re-read what it changes"),
        (422, "send the corrected write"),
    ] {
        h.fake.fail_next("PUT", "/rows/i-1", status, 1, None);
        let e = h.fails("coda_update_row", update.clone()).await;
        assert!(
            e.contains(&format!("Coda API error {status}"))
                && e.contains(&format!(
                    "Coda refused this write request (HTTP {status}), {NOT_APPLIED}"
                ))
                && e.contains(fix)
                && !e.contains("may have been applied"),
            "{status}: {e}"
        );
    }
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Done");
    // Writes that are never resent by the client say the same.
    h.fake
        .fail_next("POST", "/tables/grid-tasks/rows", 400, 1, None);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "New"}]}),
        )
        .await;
    assert!(
        e.contains(NOT_APPLIED) && !e.contains("may have been applied"),
        "{e}"
    );
    h.fake.fail_next("DELETE", "/rows/i-2", 404, 1, None);
    let e = h
        .fails(
            "coda_delete_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2"}),
        )
        .await;
    assert!(
        e.contains(NOT_APPLIED) && e.contains("check the ids"),
        "{e}"
    );
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    h.close().await;
}

#[tokio::test]
async fn refused_unconfirmed_and_queued_writes_each_say_something_different() {
    let h = start(&[]).await;
    let update = |row: &str, value: &str| json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": row, "values": {"Status": value}});
    // 5xx on a write the client does not resend: may have been applied.
    h.fake
        .fail_next("POST", "/tables/grid-tasks/rows", 500, 1, None);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "New"}]}),
        )
        .await;
    assert!(
        e.contains("may have been applied") && !e.contains("NOT applied"),
        "{e}"
    );
    // 5xx on a replayable write, retried until it gives up: the same.
    h.fake.fail_next("PUT", "/rows/i-1", 503, 10, None);
    let e = h.fails("coda_update_row", update("i-1", "Doing")).await;
    assert!(
        e.contains("may have been applied")
            && e.contains("before retrying")
            && !e.contains("NOT applied"),
        "{e}"
    );
    // A 4xx to the retry of a write whose first attempt got a 502 after
    // Coda applied it: not a refusal, the first attempt may have run.
    h.fake.fail_next_after_applying("PUT", "/rows/i-2", 502, 1);
    h.fake.fail_next("PUT", "/rows/i-2", 409, 1, None);
    let e = h.fails("coda_update_row", update("i-2", "Again")).await;
    assert!(
        e.contains("409") && e.contains("may have been applied") && !e.contains("NOT applied"),
        "{e}"
    );
    assert_eq!(h.fake.row_values("i-2").unwrap()["c-status"], "Again");
    // 202, not waited for: queued, not yet applied; not an error.
    let r = h.call("coda_update_row", update("i-3", "Queued")).await;
    assert_ne!(r.is_error, Some(true));
    let t = text(&r);
    assert!(
        t.contains("queued") && t.contains("do not resend") && !t.contains("NOT applied"),
        "{t}"
    );
    h.close().await;
}
