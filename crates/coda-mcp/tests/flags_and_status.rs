//! Regression: a single `coda_get_mutation_status` check said
//! `completed: false, pending: false` for a write Coda had not finished;
//! `--call-timeout-secs` too large for `Instant` panicked at the first
//! call; `--poll-interval-ms 0` polled Coda in a tight loop;
//! `--row-chunk-bytes` past Coda's 2 MB request limit was accepted.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::{MutationPlan, TOKEN};
use harness::start;
use serde_json::json;

#[tokio::test]
async fn a_single_status_check_of_an_unfinished_write_says_pending() {
    let h = start(&[]).await;
    h.fake.set_mutation_plan(MutationPlan {
        not_found_polls: 0,
        pending_polls: 1_000,
    });
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Points": 1}}),
        )
        .await;
    let s = h
        .ok(
            "coda_get_mutation_status",
            json!({"requestId": v["requestId"]}),
        )
        .await;
    assert_eq!(s["completed"], false, "{s}");
    assert_eq!(s["pending"], true, "{s}");
    h.close().await;
}

#[tokio::test]
async fn out_of_range_timeouts_and_intervals_exit_64_with_one_line() {
    for args in [
        ["--call-timeout-secs", "18446744073709551615"],
        ["--call-timeout-secs", "100000"],
        ["--poll-interval-ms", "0"],
        // Regression: accepted, so a 429 storm (Retry-After 0 or absent)
        // was retried back to back until the call deadline.
        ["--retry-base-ms", "0"],
        // Below one largest export (its gzip body and its text).
        ["--max-read-bytes", "1048576"],
        // Past the longest call timeout and its margin.
        ["--shutdown-wait-secs", "3606"],
        ["--shutdown-wait-secs", "soon"],
        // Regression: tokio's semaphore panicked at start (exit 101).
        ["--max-pending-requests", "18446744073709551615"],
        // Regression: accepted; an export then gave up at once ("did not
        // finish within the call deadline") and a `wait` slept until it.
        ["--poll-interval-ms", "18446744073709551615"],
        // Regression: accepted, so every chunk of a big insert went out
        // larger than Coda's 2 MB request limit and was refused whole.
        ["--row-chunk-bytes", "2000001"],
        ["--row-chunk-bytes", "18446744073709551615"],
    ] {
        let out = tokio::process::Command::new(harness::bin())
            .args(args)
            .args([
                "--skip-token-check",
                "--api-base-url",
                "http://127.0.0.1:1/apis/v1",
            ])
            .env("CODA_API_TOKEN", TOKEN)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

/// Regression: a token holding a character an HTTP header cannot carry (a
/// newline from a two-line file, a DEL) was taken: the start-up check
/// said Coda "could not be reached", the server served anyway, and every
/// request failed before it was sent, a write's error saying it "may have
/// been applied". Now it is a one-line usage error that does not quote it.
#[tokio::test]
async fn a_token_that_cannot_go_in_a_header_is_a_usage_error_that_does_not_quote_it() {
    for token in [
        "secret-one\nsecret-two",
        "secret\u{7f}three",
        "secret\u{1}four",
        "secr\u{e9}tfive",
    ] {
        let out = tokio::process::Command::new(harness::bin())
            .args([
                "--skip-token-check",
                "--api-base-url",
                "http://127.0.0.1:1/apis/v1",
            ])
            .env("CODA_API_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{token:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{token:?}: {err}");
        assert!(err.contains("CODA_API_TOKEN"), "{token:?}: {err}");
        assert!(!err.contains("secr"), "{token:?}: {err}");
    }
}
