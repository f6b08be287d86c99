//! Work that stops halfway: a client cancelling a long call, a later
//! request of a chunked write or of a `fetchAll` failing, one slow row of a
//! bulk update, an export download that fails. Each test checks what the
//! model is told (what happened, what did not, how to continue) and what
//! Coda received; the last one checks that a pre-signed download link
//! reaches neither an error nor the log.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::process::Stdio;
use std::time::Duration;

use fake_coda::{ExportPlan, FakeCoda, MutationPlan};
use harness::{TIMEOUT, command, spawn_traced, start};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A bare JSON-RPC client on the binary's stdio, so a test sees every line
/// the server writes (rmcp's client would hide a late response).
struct Raw {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Every message read so far.
    seen: Vec<Value>,
}

impl Raw {
    async fn start(fake: &FakeCoda, extra: &[&str]) -> Raw {
        let mut cmd = command(fake, extra);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn coda-mcp");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut raw = Raw {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        raw.send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "halfway-test", "version": "0"}}}),
        )
        .await;
        raw.until_response(1).await;
        raw.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        raw
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Read until the response to `id`; every message read is kept.
    async fn until_response(&mut self, id: u64) -> Value {
        loop {
            let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
                .await
                .expect("no response in time")
                .unwrap()
                .expect("server closed stdout");
            let msg: Value = serde_json::from_str(&line).expect("a JSON line");
            self.seen.push(msg.clone());
            if msg["id"] == id && msg.get("method").is_none() {
                return msg;
            }
        }
    }
}

/// Start `tool` as request 2, cancel it once Coda saw `started` requests
/// whose path contains `path`, then check that the work stops (no more such requests)
/// and that no result for request 2 is ever sent.
async fn cancel_midway(
    fake: FakeCoda,
    extra: &[&str],
    tool: &str,
    args: Value,
    method: &str,
    path: &str,
    started: usize,
) {
    let mut raw = Raw::start(&fake, extra).await;
    raw.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": args}}))
        .await;
    let count = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path))
            .count()
    };
    let begun = tokio::time::Instant::now();
    while count() < started {
        assert!(begun.elapsed() < TIMEOUT, "{tool}: the work never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    raw.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2, "reason": "the user gave up"}}),
    )
    .await;
    // A request already in flight may still land; nothing after it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let at_cancel = count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count(),
        at_cancel,
        "{tool}: work went on after the cancellation"
    );
    raw.send(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .await;
    raw.until_response(3).await;
    assert!(
        !raw.seen.iter().any(|m| m["id"] == 2),
        "{tool}: a result was sent for the cancelled request: {:?}",
        raw.seen
    );
    let _ = raw.child.kill().await;
}

#[tokio::test]
async fn a_cancelled_wait_stops_polling_and_sends_no_result() {
    let fake = FakeCoda::start().await;
    fake.set_mutation_plan(MutationPlan {
        not_found_polls: 0,
        pending_polls: 100_000,
    });
    cancel_midway(
        fake,
        &["--poll-interval-ms", "50", "--retry-base-ms", "20", "--no-rate-limit"],
        "coda_update_row",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Done"}, "wait": true}),
        "GET",
        "/mutationStatus/",
        2,
    )
    .await;
}

#[tokio::test]
async fn a_cancelled_fetch_all_stops_paging_and_sends_no_result() {
    let fake = FakeCoda::start().await;
    fake.add_rows(200);
    fake.set_max_page(5);
    fake.delay("GET", "/tables/grid-tasks/rows", Duration::from_millis(50));
    cancel_midway(
        fake,
        &[
            "--poll-interval-ms",
            "20",
            "--retry-base-ms",
            "20",
            "--no-rate-limit",
        ],
        "coda_list_rows",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 5}),
        "GET",
        "/docs/doc1/tables/grid-tasks/rows",
        3,
    )
    .await;
}

#[tokio::test]
async fn a_cancelled_bulk_update_sends_no_more_rows_and_no_result() {
    let fake = FakeCoda::start().await;
    fake.add_rows(40);
    fake.delay("PUT", "/rows/i-bulk-", Duration::from_millis(50));
    let updates: Vec<Value> = (0..40)
        .map(|i| json!({"rowIdOrName": format!("i-bulk-{i}"), "values": {"Status": "Done"}}))
        .collect();
    cancel_midway(
        fake,
        &[
            "--poll-interval-ms",
            "20",
            "--retry-base-ms",
            "20",
            "--no-rate-limit",
        ],
        "coda_bulk_update_rows",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        "PUT",
        "/rows/i-bulk-",
        3,
    )
    .await;
}

/// When a later delete request fails, the result says which rows were
/// deleted (the earlier requests) and which were not, and is not an error
/// (a model would resend the whole delete).
#[tokio::test]
async fn a_failed_later_delete_chunk_reports_deleted_and_not_deleted_rows() {
    let h = start(&[]).await;
    h.fake.add_rows(600);
    let ids: Vec<String> = (0..600).map(|i| format!("i-bulk-{i}")).collect();
    // The first request (500 ids) goes through, the second is refused.
    h.fake
        .fail_after("DELETE", "/docs/doc1/tables/grid-tasks/rows", 403, 1, 1);
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIds": ids}),
        )
        .await;
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(strings("deletedRowIds"), ids[..500]);
    assert_eq!(strings("rowIds"), ids[..500]);
    assert_eq!(strings("notDeletedRowIds"), ids[500..]);
    assert_eq!(strings("requestIds").len(), 1);
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("request 2 of 2"), "{err}");
    assert_eq!(
        h.fake.row_count("grid-tasks"),
        3 + 100,
        "Coda deleted the first 500"
    );
    assert_eq!(
        h.fake
            .calls("DELETE", "/docs/doc1/tables/grid-tasks/rows")
            .len(),
        2
    );
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// When a later page of a `fetchAll` fails, the rows read so far come back
/// with a continuation and the error; the continuation reads the rest.
#[tokio::test]
async fn fetch_all_returns_what_it_read_a_continuation_and_the_error() {
    let h = start(&[]).await;
    h.fake.add_rows(47);
    h.fake.set_max_page(10);
    // Pages 1 and 2 are served, page 3 is refused (403 is never retried).
    h.fake
        .fail_after("GET", "/docs/doc1/tables/grid-tasks/rows", 403, 2, 1);
    let first = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 10}),
        )
        .await;
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = ids(&first);
    assert_eq!(seen.len(), 20, "{first}");
    assert_eq!(first["truncated"], true, "{first}");
    let note = first["note"].as_str().unwrap();
    assert!(
        note.contains("later page failed") && note.contains("403"),
        "{note}"
    );
    let token = first["nextPageToken"].as_str().unwrap();
    let rest = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "pageToken": token}),
        )
        .await;
    assert!(rest.get("nextPageToken").is_none(), "{rest}");
    seen.extend(ids(&rest));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (seen.len(), unique.len()),
        (50, 50),
        "every row exactly once"
    );
    h.close().await;
}

/// A bulk update has one deadline: a first row whose request outlives it
/// leaves the later rows unsent, and each of them says so (they can be
/// sent again; nothing was written to them).
#[tokio::test]
async fn a_slow_row_leaves_the_later_rows_reported_as_not_sent() {
    let h = start(&["--call-timeout-secs", "2"]).await;
    h.fake.delay("PUT", "/rows/i-1", Duration::from_secs(3));
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [
                {"rowIdOrName": "i-1", "values": {"Status": "Blocked"}},
                {"rowIdOrName": "i-2", "values": {"Status": "Blocked"}},
                {"rowIdOrName": "i-3", "values": {"Status": "Blocked"}}
            ]}),
        )
        .await;
    assert_eq!(v["results"][0]["success"], false, "{v}");
    // The error says why, not just that the request failed.
    let err = v["results"][0]["error"].as_str().unwrap();
    assert!(err.contains("timed out"), "{err}");
    for i in [1, 2] {
        let err = v["results"][i]["error"].as_str().unwrap();
        assert!(err.contains("not sent"), "{err}");
    }
    assert_eq!(
        (v["successful"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(h.fake.row_values("i-2").unwrap()["c-status"], "Doing");
    assert!(
        h.fake
            .calls("PUT", "/docs/doc1/tables/grid-tasks/rows/i-2")
            .is_empty()
    );
    h.close().await;
}

/// The download link of an export is pre-signed: its query is a
/// credential. Whether the download fails to connect or keeps returning
/// error documents, neither the tool's error nor the log (at trace level)
/// may contain it.
#[tokio::test]
async fn a_failed_export_download_never_shows_the_signed_link() {
    for plan in [
        ExportPlan {
            dead_host: true,
            ..Default::default()
        },
        ExportPlan {
            dead_links: 10,
            ..Default::default()
        },
    ] {
        let fake = FakeCoda::start().await;
        fake.set_export_plan(plan.clone());
        // Logs: everything, from every crate.
        let mut raw = spawn_traced(command(
            &fake,
            &[
                "--poll-interval-ms",
                "20",
                "--retry-base-ms",
                "20",
                "--no-rate-limit",
            ],
        ));
        for msg in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "halfway-test", "version": "0"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "coda_get_page_content",
                "arguments": {"docId": "doc1", "pageIdOrName": "canvas-overview"}}}),
        ] {
            raw.stdin
                .write_all(format!("{msg}\n").as_bytes())
                .await
                .unwrap();
        }
        let result = loop {
            let line = tokio::time::timeout(TIMEOUT, raw.out.next_line())
                .await
                .expect("no result in time")
                .unwrap()
                .expect("stdout closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == 2 {
                break v;
            }
        };
        let log = raw.finish().await;
        let exports: Vec<String> = fake
            .calls("POST", "/docs/doc1/pages/canvas-overview/export")
            .iter()
            .filter_map(|r| r.response["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(exports.len(), 1, "{plan:?}");
        let sig = fake_coda::signature(&exports[0]);
        assert_eq!(result["result"]["isError"], true, "{plan:?}: {result}");
        let shown = result.to_string();
        assert!(
            !shown.contains(&sig) && !shown.contains("/blobs/"),
            "{plan:?}: the error shows the link: {shown}"
        );
        assert!(log.contains("coda"), "the log was captured: {log}");
        assert!(
            !log.contains(&sig) && !log.contains("/blobs/"),
            "{plan:?}: the log shows the link:\n{}",
            log.lines()
                .filter(|l| l.contains(&sig) || l.contains("/blobs/"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
