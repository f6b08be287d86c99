//! Retries, deadlines, client-side rate limiting, mutation waits and
//! protocol revisions, through rmcp over stdio against the fake Coda.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use fake_coda::{FakeCoda, MutationPlan};
use harness::{TIMEOUT, command, start};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientLifecycleMode, ClientServiceExt, ServiceExt};
use serde_json::json;

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_delay() {
    let h = start(&[]).await;
    h.fake.fail_next("GET", "/docs/doc1", 429, 2, Some("0.2"));
    let t = Instant::now();
    let v = h.ok("coda_get_document", json!({"docId": "doc1"})).await;
    assert_eq!(v["id"], "doc1");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "waited {:?}",
        t.elapsed()
    );
    let calls = h.fake.calls("GET", "/docs/doc1");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 429, 200]
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_exponentially() {
    let h = start(&["--retry-base-ms", "100"]).await;
    h.fake.fail_next("GET", "/docs/doc1/tables", 429, 2, None);
    let t = Instant::now();
    h.ok("coda_list_tables", json!({"docId": "doc1"})).await;
    // 100 ms then 300 ms, each with jitter in [50 %, 100 %].
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(h.fake.calls("GET", "/docs/doc1/tables").len(), 3);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn persistent_429s_end_at_the_call_deadline_without_a_hot_loop() {
    let h = start(&["--call-timeout-secs", "2", "--retry-base-ms", "200"]).await;
    h.fake
        .fail_next("GET", "/docs/doc1/formulas", 429, 1000, None);
    let t = Instant::now();
    let e = h
        .fails("coda_list_formulas", json!({"docId": "doc1"}))
        .await;
    assert!(
        e.contains("429") && e.contains("Rate limit exceeded"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    let n = h.fake.calls("GET", "/docs/doc1/formulas").len();
    assert!((2..=5).contains(&n), "{n} attempts in 2 s");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn server_errors_are_retried_for_reads_but_not_for_inserts() {
    let h = start(&[]).await;
    h.fake.fail_next("GET", "/docs/doc1/controls", 503, 1, None);
    h.ok("coda_list_controls", json!({"docId": "doc1"})).await;
    assert_eq!(h.fake.calls("GET", "/docs/doc1/controls").len(), 2);
    h.fake.fail_next("POST", "/rows", 500, 1, None);
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "once"}]}),
        )
        .await;
    assert!(e.contains("500"), "{e}");
    assert_eq!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .len(),
        1,
        "an insert is never replayed after a 5xx"
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_list_that_keeps_timing_out_is_retried_with_a_smaller_page() {
    let h = start(&[]).await;
    // Three 504s: the first request and its two retries; then a smaller page.
    h.fake.fail_next("GET", "/rows", 504, 3, None);
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "limit": 100}),
        )
        .await;
    assert_eq!(v["count"], 3);
    let calls = h.fake.calls("GET", "/docs/doc1/tables/grid-tasks/rows");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![504, 504, 504, 200]
    );
    assert_eq!(calls[2].q("limit"), Some("100"));
    assert_eq!(calls[3].q("limit"), Some("50"));
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn doc_content_writes_are_paced_by_the_client_side_bucket() {
    // No --no-rate-limit here: the real buckets (5 doc-content writes / 10 s).
    let fake = FakeCoda::start().await;
    let h = harness::Harness {
        client: {
            let cmd = command(&fake, &["--poll-interval-ms", "20"]);
            ().serve(TokioChildProcess::new(cmd).unwrap())
                .await
                .unwrap()
        },
        fake,
        output_schemas: Default::default(),
    };
    let updates: Vec<_> = (0..6)
        .map(|i| json!({"rowIdOrName": "i-1", "values": {"Points": i}}))
        .collect();
    let t = Instant::now();
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        )
        .await;
    assert_eq!(v["successful"], 6);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "the 6th write must wait for a token, took {:?}",
        t.elapsed()
    );
    let status = h.ok("coda_rate_limit_status", json!({})).await;
    let dcw = status["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["class"] == "DocContentWrite")
        .unwrap()
        .clone();
    assert!(dcw["available"].as_f64().unwrap() < 1.0, "{dcw}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn waiting_writes_poll_mutation_status_through_early_404s() {
    let h = start(&[]).await;
    h.fake.set_mutation_plan(MutationPlan {
        not_found_polls: 2,
        pending_polls: 2,
    });
    let v = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Waited", "wait": true}),
        )
        .await;
    assert_eq!(v["mutation"]["completed"], true);
    assert_eq!(v["mutation"]["timedOut"], false);
    let rid = v["requestId"].as_str().unwrap();
    let polls = h.fake.calls("GET", &format!("/mutationStatus/{rid}"));
    assert_eq!(
        polls.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![404, 404, 200, 200, 200]
    );
    let s = h
        .ok(
            "coda_get_mutation_status",
            json!({"requestId": rid, "waitSeconds": 5}),
        )
        .await;
    assert_eq!(s["completed"], true);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_mutation_that_never_completes_reports_a_timeout_at_the_deadline() {
    let h = start(&["--call-timeout-secs", "1"]).await;
    h.fake.set_mutation_plan(MutationPlan {
        not_found_polls: 0,
        pending_polls: 1_000_000,
    });
    let t = Instant::now();
    let v = h.ok("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Points": 1}, "wait": true})).await;
    assert_eq!(v["mutation"]["completed"], false);
    assert_eq!(v["mutation"]["timedOut"], true);
    assert!(t.elapsed() < Duration::from_secs(3));
    let s = h
        .ok(
            "coda_get_mutation_status",
            json!({"requestId": v["requestId"], "waitSeconds": 1}),
        )
        .await;
    assert_eq!(s["pending"], true);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn a_mutation_404_past_the_grace_window_is_an_error_only_after_the_grace() {
    // Mutation ids unknown to Coda keep answering 404; within the grace window
    // that means "not yet", so a short deadline ends as a timeout, not an error.
    let h = start(&["--call-timeout-secs", "1"]).await;
    h.fake.set_mutation_plan(MutationPlan {
        not_found_polls: 1_000_000,
        pending_polls: 0,
    });
    let v = h.ok("coda_delete_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "wait": true})).await;
    assert_eq!(v["mutation"]["timedOut"], true);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn every_protocol_revision_rmcp_speaks_is_negotiated() {
    let fake = FakeCoda::start().await;
    for v in ProtocolVersion::KNOWN_VERSIONS {
        let cmd = command(&fake, &["--skip-token-check"]);
        let transport = TokioChildProcess::new(cmd).unwrap();
        // 2026-07-28 has no initialize handshake: the client discovers.
        let cfg = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("test", "1"),
        )
        .with_protocol_version(v.clone());
        let mode = if *v == ProtocolVersion::V_2026_07_28 {
            ClientLifecycleMode::Discover {
                preferred_versions: vec![v.clone()],
            }
        } else {
            ClientLifecycleMode::Initialize
        };
        let client = tokio::time::timeout(TIMEOUT, cfg.serve_with_lifecycle(transport, mode))
            .await
            .expect("timeout")
            .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let info = client.peer_info().expect("server info");
        assert_eq!(&info.protocol_version, v);
        let tools = client.list_all_tools().await.unwrap();
        assert_eq!(tools.len(), 60, "{v:?}");
        let r = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new("coda_whoami")
                    .with_arguments(Default::default()),
            )
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true), "{v:?}");
        assert_eq!(r.structured_content.unwrap()["loginId"], "ada@example.com");
        let _ = client.cancel().await;
    }
    fake.assert_responses_match_spec();
}
