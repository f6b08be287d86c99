//! Regression: an answer from Coda that holds a member twice in one object
//! (`requestId`, a row's `values`, a status's `completed`) was read as its
//! last copy, silently: a write's outcome, the request id to wait on, the
//! values a model reads all came from whichever copy serde_json kept.
//! Each answer here is the fake's real one (checked against Coda's
//! OpenAPI spec) with one member given a second time.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::Broken;
use harness::start;
use serde_json::json;

fn repeated(name: &str, value: serde_json::Value) -> Broken {
    Broken::Repeated {
        name: name.into(),
        value,
    }
}

/// Symptom: `coda_update_row` answered `{"requestId": "mutate:forged",
/// "requestId": <real>, …}` succeeded with the real id, and with the
/// copies the other way round would have waited on the forged one.
#[tokio::test]
async fn a_write_answer_with_a_repeated_request_id_is_not_called_accepted() {
    let h = start(&[]).await;
    h.fake.break_next_answer_after_applying(
        "PUT",
        "/rows/i-1",
        repeated("requestId", json!("mutate:forged")),
    );
    let e = h
        .fails(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Twice"}, "wait": true}),
        )
        .await;
    assert!(e.contains("repeats the member .requestId"), "{e}");
    assert!(e.contains("may have been applied"), "{e}");
    assert!(!e.contains("accepted the write"), "{e}");
    assert!(
        h.fake
            .calls("GET", "/mutationStatus/mutate:forged")
            .is_empty()
    );
    // An insert (not replayable): the same, and it must not be resent.
    h.fake.break_next_answer_after_applying(
        "POST",
        "/rows",
        repeated("requestId", json!("mutate:forged")),
    );
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "once"}]}),
        )
        .await;
    assert!(e.contains("repeats the member .requestId"), "{e}");
    assert!(e.contains("do not resend"), "{e}");
    assert_eq!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .len(),
        1
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// Symptom: a row list whose first row carried `values` twice showed the
/// model one of the two sets of values as the row's.
#[tokio::test]
async fn a_read_answer_with_a_member_repeated_deep_inside_is_an_error_naming_it() {
    let h = start(&[]).await;
    h.fake.break_next_answer_after_applying(
        "GET",
        "/rows",
        repeated("values", json!({"c-status": "Forged"})),
    );
    let e = h
        .fails(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    assert!(e.contains("repeats the member .items[0].values"), "{e}");
    assert!(!e.contains("Forged"), "{e}");
    // The next answer, without a repeat, is read as usual.
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3, "{v}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// Symptom: a mutation status of `{"completed": false, "completed": true}`
/// said the write was applied. The write itself was accepted (its answer
/// was whole), so it stays accepted; only the wait fails, saying why.
#[tokio::test]
async fn a_mutation_status_with_completed_twice_does_not_say_applied() {
    let h = start(&[]).await;
    h.fake.break_answers_after_applying(
        "GET",
        "/mutationStatus/",
        repeated("completed", json!(true)),
        100,
    );
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Twice"}, "wait": true}),
        )
        .await;
    assert!(v["requestId"].is_string(), "{v}");
    assert_eq!(v["mutation"]["completed"], false, "{v}");
    let err = v["mutation"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("repeats the member .completed"), "{v}");
    h.close().await;
}
