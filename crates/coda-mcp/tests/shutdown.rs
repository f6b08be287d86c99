//! How coda-mcp stops with a write in flight (src/shutdown.rs).
//!
//! Regression: when the client closed stdin, rmcp waited 5 s for the
//! calls still running and then dropped them, so a chunked insert whose
//! first request Coda answered in 6.5 s had its other chunks never sent:
//! the doc kept a third of the rows, and nobody was told. SIGTERM killed
//! the process on the spot the same way. A call that sent a write now
//! runs to its end (within its own deadline) before the process exits;
//! reads are not waited for; a second signal exits at once.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use fake_coda::FakeCoda;
use harness::{Raw, command};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Past rmcp's 5 s drain after stdin's end.
const PAST_DRAIN: Duration = Duration::from_millis(6500);

/// coda-mcp with chunks of one row (rows of 600 bytes), initialized.
async fn started(fake: &FakeCoda) -> Raw {
    let mut raw = harness::spawn_traced(command(
        fake,
        &[
            "--skip-token-check",
            "--no-rate-limit",
            "--row-chunk-bytes",
            "1024",
        ],
    ));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "shutdown-test", "version": "0"}}});
    send(&mut raw, &init).await;
    let line = tokio::time::timeout(Duration::from_secs(30), raw.out.next_line())
        .await
        .expect("no answer to initialize")
        .unwrap()
        .expect("stdout closed");
    assert!(line.contains("\"result\""), "{line}");
    send(
        &mut raw,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    raw
}

async fn send(raw: &mut Raw, msg: &Value) {
    raw.stdin
        .write_all(msg.to_string().as_bytes())
        .await
        .unwrap();
    raw.stdin.write_all(b"\n").await.unwrap();
    raw.stdin.flush().await.unwrap();
}

/// A chunked insert of three rows: three POSTs, one after the other.
fn insert_three(id: u64) -> Value {
    let rows: Vec<_> = (0..3)
        .map(|i| json!({"Name": format!("chunk-{i}"), "Status": "x".repeat(600)}))
        .collect();
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "coda_create_rows",
        "arguments": {"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}}})
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(raw: &Raw, sig: &str) {
    let pid = raw.child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for the exit (at most `within`): its status, how long it took
/// and the log.
async fn exit(mut raw: Raw, within: Duration) -> (std::process::ExitStatus, Duration, String) {
    let started = Instant::now();
    let status = tokio::time::timeout(within, raw.child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running after {within:?}"))
        .unwrap();
    let took = started.elapsed();
    (status, took, raw.finish().await)
}

#[tokio::test]
async fn a_write_sent_when_stdin_ends_finishes_before_the_exit() {
    let fake = FakeCoda::start().await;
    let before = fake.row_count("grid-tasks");
    fake.delay_next("POST", "/rows", PAST_DRAIN, 1);
    let mut raw = started(&fake).await;
    send(&mut raw, &insert_three(2)).await;
    until("the first chunk reaches Coda", || {
        fake.arrived_at("POST", "/rows") >= 1
    })
    .await;
    let log = raw.finish().await;
    assert_eq!(
        fake.row_count("grid-tasks"),
        before + 3,
        "every chunk applied: {log}"
    );
    assert!(log.contains("finish a write call at shutdown"), "{log}");
    assert!(log.contains("stdin closed, exiting"), "{log}");
}

/// The first SIGTERM stops at once what sent no write (here a read Coda
/// holds for a minute), and the process exits cleanly.
#[tokio::test]
async fn a_sigterm_does_not_wait_for_reads() {
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/whoami", Duration::from_secs(60));
    let mut raw = started(&fake).await;
    let whoami = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "coda_whoami", "arguments": {}}});
    send(&mut raw, &whoami).await;
    until("the read reaches Coda", || {
        fake.arrived_at("GET", "/whoami") >= 1
    })
    .await;
    signal(&raw, "-TERM");
    let (status, took, log) = exit(raw, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}: {log}");
    assert!(took < Duration::from_secs(10), "{took:?}: {log}");
    assert!(log.contains("stopped on a signal, exiting"), "{log}");
}

/// The first SIGTERM with a write in flight: its other chunks are still
/// sent, then the process exits cleanly.
#[tokio::test]
async fn a_sigterm_lets_a_sent_write_finish() {
    let fake = FakeCoda::start().await;
    let before = fake.row_count("grid-tasks");
    fake.delay_next("POST", "/rows", Duration::from_secs(2), 1);
    let mut raw = started(&fake).await;
    send(&mut raw, &insert_three(2)).await;
    until("the first chunk reaches Coda", || {
        fake.arrived_at("POST", "/rows") >= 1
    })
    .await;
    signal(&raw, "-TERM");
    let (status, _, log) = exit(raw, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {log}");
    assert_eq!(
        fake.row_count("grid-tasks"),
        before + 3,
        "every chunk applied: {log}"
    );
    assert!(log.contains("finish a write call at shutdown"), "{log}");
}

/// A second SIGTERM (or SIGINT) does not wait for the write: the process
/// exits at once, with 1, saying so.
#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let fake = FakeCoda::start().await;
    fake.delay_next("POST", "/rows", Duration::from_secs(60), 1);
    let mut raw = started(&fake).await;
    send(&mut raw, &insert_three(2)).await;
    until("the first chunk reaches Coda", || {
        fake.arrived_at("POST", "/rows") >= 1
    })
    .await;
    signal(&raw, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&raw, "-INT");
    let (status, took, log) = exit(raw, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}: {log}");
    assert!(log.contains("exit at once on a second signal"), "{log}");
    assert_eq!(fake.arrived_at("POST", "/rows"), 1);
}

/// Regression: once stdin ended and rmcp stopped the calls still running,
/// the process could exit before those calls saw the stop, so the log
/// lacked the line saying what was cut short (tests/bad_lines.rs failed
/// so under load). It now waits (2 s at most) until every call left is a
/// write that goes on: here all 8 reads Coda holds are logged.
#[tokio::test]
async fn every_call_stopped_at_shutdown_is_logged() {
    const CALLS: u64 = 8;
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/whoami", Duration::from_secs(60));
    let mut raw = started(&fake).await;
    for id in 0..CALLS {
        let whoami = json!({"jsonrpc": "2.0", "id": 10 + id, "method": "tools/call",
            "params": {"name": "coda_whoami", "arguments": {}}});
        send(&mut raw, &whoami).await;
    }
    until("the reads reach Coda", || {
        fake.arrived_at("GET", "/whoami") >= CALLS as usize
    })
    .await;
    let log = raw.finish().await;
    let stopped = log.matches("stop a tool call at shutdown").count();
    assert_eq!(stopped, CALLS as usize, "{log}");
    assert!(log.contains("stdin closed, exiting"), "{log}");
}

/// Regression: a write call whose writes were all sent went on at the
/// stop for as long as it polled Coda for the write's status (`wait`),
/// up to its whole deadline (here 40 s), though the polls change nothing
/// and their answer finds nobody: behind mcp-proxy's default grace (5 s +
/// 5 s) that is a SIGKILL. Once its writes are sent, a call finishing at
/// the stop no longer waits for Coda to apply them.
#[tokio::test]
async fn a_write_finishing_at_the_stop_does_not_wait_for_coda_to_apply_it() {
    let fake = FakeCoda::start().await;
    fake.set_mutation_plan(fake_coda::MutationPlan {
        not_found_polls: 0,
        pending_polls: 1_000_000,
    });
    let mut raw = harness::spawn_traced(command(
        &fake,
        &[
            "--skip-token-check",
            "--no-rate-limit",
            "--call-timeout-secs",
            "40",
        ],
    ));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "shutdown-test", "version": "0"}}});
    send(&mut raw, &init).await;
    tokio::time::timeout(Duration::from_secs(30), raw.out.next_line())
        .await
        .expect("no answer to initialize")
        .unwrap()
        .expect("stdout closed");
    send(
        &mut raw,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let insert = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "coda_create_rows",
        "arguments": {"docId": "doc1", "tableIdOrName": "grid-tasks",
            "rows": [{"Name": "waited"}], "wait": true}}});
    send(&mut raw, &insert).await;
    until("Coda is polled for the write's status", || {
        fake.arrived_at("GET", "/mutationStatus") >= 1
    })
    .await;
    signal(&raw, "-TERM");
    let (status, took, log) = exit(raw, Duration::from_secs(60)).await;
    assert!(status.success(), "{status}: {log}");
    assert!(took < Duration::from_secs(8), "{took:?}: {log}");
    assert!(
        log.contains("stop waiting for Coda to apply a write"),
        "{log}"
    );
    assert!(log.contains("finish a write call at shutdown"), "{log}");
    assert_eq!(fake.arrived_at("POST", "/rows"), 1);
}

/// `--shutdown-wait-secs` bounds the wait for a write that was sent: with
/// Coda holding the insert's answer for a minute and a 40 s call timeout,
/// the default wait (45 s) would keep the process that long after a
/// SIGTERM; with `--shutdown-wait-secs 1` it exits after about a second,
/// warning that the write was cut and may be applied or not.
#[tokio::test]
async fn the_shutdown_wait_flag_bounds_the_wait_for_a_sent_write() {
    let fake = FakeCoda::start().await;
    fake.delay_next("POST", "/rows", Duration::from_secs(60), 1);
    let mut raw = harness::spawn_traced(command(
        &fake,
        &[
            "--skip-token-check",
            "--no-rate-limit",
            "--call-timeout-secs",
            "40",
            "--shutdown-wait-secs",
            "1",
        ],
    ));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "shutdown-test", "version": "0"}}});
    send(&mut raw, &init).await;
    tokio::time::timeout(Duration::from_secs(30), raw.out.next_line())
        .await
        .expect("no answer to initialize")
        .unwrap()
        .expect("stdout closed");
    send(
        &mut raw,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    send(&mut raw, &insert_three(2)).await;
    until("the first chunk reaches Coda", || {
        fake.arrived_at("POST", "/rows") >= 1
    })
    .await;
    signal(&raw, "-TERM");
    let (status, took, log) = exit(raw, Duration::from_secs(60)).await;
    assert!(status.success(), "{status}: {log}");
    // A generous bound, far below the default wait of 45 s.
    assert!(took < Duration::from_secs(20), "{took:?}: {log}");
    assert!(
        log.contains("exit with write calls still running at the end of --shutdown-wait-secs"),
        "{log}"
    );
    assert_eq!(fake.arrived_at("POST", "/rows"), 1);
}

/// Regression: a write call the client cancelled after its first chunk
/// was sent was logged only as "tool call cancelled by the client" (its
/// answer, which says a write may still be applied, is never sent), so
/// the log did not say that Coda may apply what was sent. It now warns
/// so; a cancelled call that sent nothing says that.
#[tokio::test]
async fn a_write_cancelled_after_it_was_sent_is_logged_as_maybe_applied() {
    let fake = FakeCoda::start().await;
    fake.delay_next("POST", "/rows", Duration::from_secs(60), 1);
    let mut raw = started(&fake).await;
    send(&mut raw, &insert_three(7)).await;
    until("the first chunk reaches Coda", || {
        fake.arrived_at("POST", "/rows") >= 1
    })
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 7}});
    send(&mut raw, &cancel).await;
    // A write that never got to send anything: its columns are held.
    fake.add_tables(1);
    fake.delay_next("GET", "/grid-extra-0/columns", Duration::from_secs(60), 1);
    let other = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {
        "name": "coda_create_rows",
        "arguments": {"docId": "doc1", "tableIdOrName": "grid-extra-0", "rows": [{"Name": "x"}]}}});
    send(&mut raw, &other).await;
    until("the second call reads columns", || {
        fake.arrived_at("GET", "/grid-extra-0/columns") >= 1
    })
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 8}});
    send(&mut raw, &cancel).await;
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    send(&mut raw, &ping).await;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), raw.out.next_line())
            .await
            .expect("no answer to ping")
            .unwrap()
            .expect("stdout closed");
        if line.contains("\"id\":9") {
            break;
        }
    }
    let log = raw.finish().await;
    let cancelled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("coda_mcp::server") && l.contains("cancelled by the client"))
        .collect();
    assert_eq!(cancelled.len(), 2, "{log}");
    assert!(
        cancelled
            .iter()
            .any(|l| l.contains("WARN") && l.contains("may be applied")),
        "{log}"
    );
    assert!(
        cancelled
            .iter()
            .any(|l| l.contains("INFO") && l.contains("sent no write")),
        "{log}"
    );
}
