//! Regression: every log line was written to stderr by the thread that
//! logged it. With stderr a pipe nobody reads (a log collector that
//! stopped), once the pipe held 64 KiB the next line blocked its thread
//! for ever: at trace level 15 `coda_whoami` calls filled it and the 16th
//! was never answered; and a SIGTERM then never ended the process (the
//! signal task and the exit both log: still running 15 s after it). Lines now go through
//! a bounded queue to a thread of their own (src/log.rs): a line that
//! finds no room is dropped and counted, and the count is logged once
//! stderr is read again.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_coda::FakeCoda;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

/// Calls made: at trace level each logs well over 1 KiB, so a few hundred
/// fill a 64 KiB pipe several times over.
const CALLS: u64 = 300;

struct Silent {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
    /// Held open and not read: the pipe fills.
    stderr: ChildStderr,
}

async fn send(s: &mut Silent, msg: &Value) {
    let mut line = msg.to_string().into_bytes();
    line.push(b'\n');
    s.stdin.write_all(&line).await.unwrap();
    s.stdin.flush().await.unwrap();
}

/// The answer to `id`, within a budget far above what a call takes.
async fn answer(s: &mut Silent, id: u64) -> Value {
    let read = async {
        loop {
            let line = s.out.next_line().await.unwrap().expect("stdout closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no answer to request {id}: a log line blocked it"))
}

/// coda-mcp logging at trace level to a stderr nobody reads, initialized
/// and then asked [`CALLS`] calls, each answered.
async fn filled(fake: &FakeCoda) -> Silent {
    filled_with(fake, "trace").await
}

/// [`filled`], logging what `filter` (`CODA_MCP_LOG`) shows.
async fn filled_with(fake: &FakeCoda, filter: &str) -> Silent {
    let mut cmd = harness::command(fake, &["--skip-token-check", "--no-rate-limit"]);
    // The smallest queue, so that lines are dropped soon (set in the
    // environment: a build without the setting runs, and hangs).
    cmd.env("CODA_MCP_LOG", filter)
        .env("CODA_LOG_QUEUE_BYTES", "65536")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut s = Silent {
        stdin: child.stdin.take().unwrap(),
        out: BufReader::new(child.stdout.take().unwrap()).lines(),
        stderr: child.stderr.take().unwrap(),
        child,
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "stderr-test", "version": "0"}}});
    send(&mut s, &init).await;
    answer(&mut s, 0).await;
    send(
        &mut s,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    for id in 1..=CALLS {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "coda_whoami", "arguments": {}}});
        send(&mut s, &call).await;
        let v = answer(&mut s, id).await;
        assert!(v["result"].is_object(), "{v}");
    }
    s
}

/// The pipe was full: what it holds once the process is gone is at least
/// most of a pipe's 64 KiB (so the calls above ran with a full stderr).
async fn read_all(mut stderr: ChildStderr) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stderr.read_to_end(&mut all))
        .await
        .expect("stderr still open")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn a_stderr_nobody_reads_blocks_neither_calls_nor_a_sigterm() {
    let fake = FakeCoda::start().await;
    let mut s = filled(&fake).await;
    let pid = s.child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(ok.success());
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), s.child.wait())
        .await
        .expect("still running 30 s after SIGTERM: a log line blocked the stop")
        .unwrap();
    assert!(status.success(), "{status}");
    // The exit waits for the log a bounded time (2 s), not for ever.
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = read_all(s.stderr).await;
    assert!(
        log.len() > 48 * 1024,
        "the pipe was never full: {}",
        log.len()
    );
}

#[tokio::test]
async fn lines_dropped_on_a_full_stderr_are_counted_once_it_is_read() {
    dropped_lines_are_counted("trace").await;
}

/// Regression: the count of dropped lines was a warning of the target
/// `coda_mcp::log`, so a filter that hid it lost lines without a word:
/// `rmcp=trace` (rmcp's trace lines alone, megabytes for a few hundred
/// calls) dropped them and never said so, and `error` hides every
/// warning. It is now written whatever the filter.
#[tokio::test]
async fn lines_dropped_are_counted_whatever_the_log_filter_shows() {
    dropped_lines_are_counted("rmcp=trace").await;
}

async fn dropped_lines_are_counted(filter: &str) {
    let fake = FakeCoda::start().await;
    let s = filled_with(&fake, filter).await;
    let Silent {
        mut child,
        stdin,
        stderr,
        ..
    } = s;
    // Reading again: the queue drains, then a warning counts the lines
    // that found no room.
    let reader = tokio::spawn(read_all(stderr));
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("still running 30 s after stdin closed")
        .unwrap();
    // It ended as at any stdin's end. (Its last line, "stdin closed,
    // exiting", is not asked for: at trace level the lines logged as
    // stdin ends can fill the queue again while the reader catches up,
    // and a line that finds it full is dropped, by design.)
    assert!(status.success(), "{status}");
    let log = reader.await.unwrap();
    let note = log
        .lines()
        .find(|l| l.contains("drop log lines"))
        .unwrap_or_else(|| panic!("no count of dropped lines in {} bytes of log", log.len()));
    let dropped: u64 = note
        .split("dropped=")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(dropped > 0, "{note}");
}
