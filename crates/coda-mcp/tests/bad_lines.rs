//! Regression: a stdin line rmcp could not parse (a `tools/call` with
//! `1e400` in its arguments, `NaN`, text that is not JSON) or one over its
//! 16 MiB cap got no answer at all, so the client waited for its own
//! timeout; a batch array got an error without an `id` member. Each must be
//! answered with a JSON-RPC error at once, and the requests after it as
//! before.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::process::Stdio;
use std::time::Duration;

use fake_coda::FakeCoda;
use harness::command;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long an answer to a bad line may take: it needs no Coda.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The binary on raw pipes, initialized.
struct Pipes {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Pipes {
    async fn start(fake: &FakeCoda, env: &[(&str, &str)]) -> Pipes {
        let mut cmd = command(fake, &["--skip-token-check", "--no-rate-limit"]);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn coda-mcp");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pipes = Pipes { child, stdin, out };
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bad-lines-test", "version": "0"}}});
        pipes.send(init.to_string().as_bytes()).await;
        let answer = pipes.next(Duration::from_secs(30)).await;
        assert_eq!(answer["id"], 1, "{answer}");
        assert!(answer.get("result").is_some(), "{answer}");
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        pipes.send(done.to_string().as_bytes()).await;
        pipes
    }

    async fn send(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next stdout line, which must come within `within` and be JSON.
    async fn next(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer within {within:?}"))
            .unwrap()
            .expect("stdout closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line not JSON ({e}): {line}"))
    }

    /// Send `line` and expect a JSON-RPC error with `code` and `id`.
    async fn rejected(&mut self, line: &[u8], code: i64, id: Value) -> String {
        self.send(line).await;
        let answer = self.next(ANSWER_WITHIN).await;
        let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
        assert_eq!(answer["jsonrpc"], "2.0", "{shown}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{shown}: {answer}");
        assert!(
            answer.as_object().unwrap().contains_key("id") && answer["id"] == id,
            "{shown}: id should be {id}: {answer}"
        );
        answer["error"]["message"].as_str().unwrap().to_owned()
    }

    /// `tools/list` as request `id` is answered with the catalogue.
    async fn lists_tools(&mut self, id: u64) {
        let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        self.send(list.to_string().as_bytes()).await;
        let answer = self.next(Duration::from_secs(30)).await;
        assert_eq!(answer["id"], id, "{answer}");
        assert!(
            !answer["result"]["tools"].as_array().unwrap().is_empty(),
            "{answer}"
        );
    }

    /// Closing stdin still ends the server.
    async fn close(mut self) {
        drop(self.stdin);
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("coda-mcp did not exit after stdin closed")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn lines_that_are_not_messages_are_answered_and_later_requests_still_are() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[]).await;
    let huge = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"coda_list_pages","arguments":{"docId":"doc1","limit":1e400}}}"#;
    // Past an f64's range: refused with its id, as a rounded number is.
    let msg = p.rejected(huge, -32602, json!(2)).await;
    assert!(msg.contains("out of range"), "{msg}");
    let nan = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"coda_list_pages","arguments":{"docId":"doc1","limit":NaN}}}"#;
    p.rejected(nan, -32700, Value::Null).await;
    p.rejected(b"this is not JSON", -32700, Value::Null).await;
    let batch = br#"[{"jsonrpc":"2.0","id":4,"method":"tools/list"}]"#;
    let msg = p.rejected(batch, -32600, Value::Null).await;
    assert!(msg.contains("batch"), "{msg}");
    p.rejected(b"42", -32600, Value::Null).await;
    let old = br#"{"jsonrpc":"1.0","id":"six","method":"tools/list"}"#;
    p.rejected(old, -32600, json!("six")).await;
    p.lists_tools(10).await;
    // A notification rmcp cannot read is not answered (JSON-RPC 2.0 §4.1):
    // the next line out is the answer to the request after it.
    p.send(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#)
        .await;
    p.lists_tools(11).await;
    p.close().await;
}

#[tokio::test]
async fn a_line_over_the_cap_is_answered_naming_the_limit_and_the_next_request_is_served() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[("CODA_MAX_LINE_BYTES", "4096")]).await;
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"coda_list_pages","arguments":{{"docId":"{}"}}}}}}"#,
        "x".repeat(200_000)
    );
    let msg = p.rejected(long.as_bytes(), -32600, Value::Null).await;
    assert!(msg.contains("4096"), "{msg}");
    p.lists_tools(3).await;
    p.close().await;
}

/// Regression (review): the cap counted the line's LF (and a CRLF line's
/// CR too), so a message of exactly `CODA_MAX_LINE_BYTES` was refused,
/// and one a byte shorter was refused when the client ended it with CRLF.
/// The cap is on the message, whatever ends the line.
#[tokio::test]
async fn a_message_of_exactly_the_cap_is_served_ended_by_lf_or_crlf() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[("CODA_MAX_LINE_BYTES", "4096")]).await;
    let padded = |id: u64, len: usize| {
        let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list""#);
        let mut line = head.into_bytes();
        line.resize(len - 1, b' ');
        line.push(b'}');
        line
    };
    for (id, end) in [(2, &b""[..]), (3, b"\r")] {
        let mut line = padded(id, 4096);
        line.extend_from_slice(end);
        p.send(&line).await;
        let answer = p.next(Duration::from_secs(30)).await;
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["result"]["tools"].is_array(), "{answer}");
    }
    let msg = p.rejected(&padded(4, 4097), -32600, Value::Null).await;
    assert!(msg.contains("4096"), "{msg}");
    p.lists_tools(5).await;
    p.close().await;
}

#[tokio::test]
async fn a_line_over_the_default_16_mib_cap_is_answered_too() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[]).await;
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"coda_list_pages","arguments":{{"docId":"{}"}}}}}}"#,
        "x".repeat(17 << 20)
    );
    let msg = p.rejected(long.as_bytes(), -32600, Value::Null).await;
    assert!(msg.contains("16777216"), "{msg}");
    p.lists_tools(3).await;
    p.close().await;
}

/// Regression: serde_json (without `arbitrary_precision`) reads
/// 12345678901234567890123 as the nearest `f64`, and the tool wrote
/// 1.2345678901234568e22 to Coda with no word. The request is refused
/// (-32602 with its id, naming the number) and nothing reaches Coda; the
/// same value sent as a string is written as sent.
#[tokio::test]
async fn a_number_too_long_to_keep_is_refused_and_never_written() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[]).await;
    let call = |id: u32, points: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"coda_update_row","arguments":{{"docId":"doc1","tableIdOrName":"grid-tasks","rowIdOrName":"i-1","values":{{"Points":{points}}}}}}}}}"#
        )
    };
    let msg = p
        .rejected(
            call(2, "12345678901234567890123").as_bytes(),
            -32602,
            json!(2),
        )
        .await;
    assert!(
        msg.contains("1.2345678901234568e+22 would be used instead of 12345678901234567890123"),
        "{msg}"
    );
    let writes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "Coda got {writes:?}");
    p.send(call(3, r#""12345678901234567890123""#).as_bytes())
        .await;
    let answer = p.next(Duration::from_secs(30)).await;
    assert_eq!(answer["id"], 3, "{answer}");
    assert_eq!(
        fake.row_values("i-1").unwrap()["c-points"],
        "12345678901234567890123"
    );
    p.close().await;
}

/// Regression: a key given twice in one object of a request was read as
/// the last of the two by serde_json, without a word: `coda_update_row`
/// with `"values": {"Status": "Done", "Status": "Todo"}` wrote `Todo` and
/// reported success, the `Done` the model also sent dropped (and a parser
/// that keeps the first, in a gateway before this server, reads the
/// other). The request is refused (-32602 with its id, naming where) and
/// nothing reaches Coda; the same key in two different objects is fine.
#[tokio::test]
async fn a_key_given_twice_is_refused_and_nothing_is_written() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[]).await;
    let call = |id: u32, values: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"coda_update_row","arguments":{{"docId":"doc1","tableIdOrName":"grid-tasks","rowIdOrName":"i-1","values":{values}}}}}}}"#
        )
    };
    for (id, values) in [
        (2, r#"{"Status":"Done","Status":"Todo"}"#),
        (3, r#"{"Status":"Done","St\u0061tus":"Todo"}"#),
    ] {
        let msg = p
            .rejected(call(id, values).as_bytes(), -32602, json!(id))
            .await;
        assert!(
            msg.contains("params.arguments.values.Status is given twice"),
            "{msg}"
        );
    }
    let twice_doc = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"coda_update_row","arguments":{"docId":"doc2","tableIdOrName":"grid-tasks","rowIdOrName":"i-1","values":{"Status":"Done"},"docId":"doc1"}}}"#;
    let msg = p.rejected(twice_doc.as_bytes(), -32602, json!(4)).await;
    assert!(msg.contains("params.arguments.docId"), "{msg}");
    let writes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "Coda got {writes:?}");
    p.send(call(5, r#"{"Status":"Done"}"#).as_bytes()).await;
    let answer = p.next(Duration::from_secs(30)).await;
    assert_eq!(answer["id"], 5, "{answer}");
    assert_eq!(fake.row_values("i-1").unwrap()["c-status"], "Done");
    p.close().await;
}

/// Regression: a client that closed stdin while answers were still queued
/// for a stdout it no longer read (here 40 `tools/list`, past the pipe's
/// buffer) kept coda-mcp waiting on the full pipe for ever: it never
/// exited. It now exits once the answers have had a grace to be written.
#[tokio::test]
async fn stdin_closed_with_stdout_unread_still_ends_the_server() {
    let fake = FakeCoda::start().await;
    let mut p = Pipes::start(&fake, &[]).await;
    for id in 100..140 {
        let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        p.send(list.to_string().as_bytes()).await;
    }
    // The answers are being written (the first few fill the pipe).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Pipes {
        mut child,
        stdin,
        out,
    } = p;
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("coda-mcp did not exit after stdin closed with stdout unread")
        .unwrap();
    assert!(status.success(), "{status}");
    drop(out);
}

/// `id`'s `tools/call` of `coda_whoami`, as a line.
fn whoami(id: u32) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "coda_whoami", "arguments": {}}})
    .to_string()
}

/// Regression: rmcp runs every request in a task of its own and writes
/// each answer from another, and reads stdin on meanwhile, so a client that
/// sends requests faster than it reads the answers had all of them in
/// memory at once: 6000 `tools/list` unread took 440 MB and growing, 100,000
/// `ping`s grew the process by 2.7 MB a second. At most
/// `--max-pending-requests` requests now run or wait to be written; stdin
/// is read again as answers go out. Here 3: of six calls Coda holds for
/// 2 s, three reach it, and all six are answered.
#[tokio::test]
async fn no_more_requests_than_the_limit_are_taken_in_and_each_is_answered() {
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/whoami", Duration::from_secs(2));
    let mut p = Pipes::start(&fake, &[("CODA_MAX_PENDING_REQUESTS", "3")]).await;
    for id in 10..16 {
        p.send(whoami(id).as_bytes()).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.arrived() < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", fake.arrived());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other three were sent too: taken in, they would have reached
    // Coda by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.arrived(), 3);
    let mut answered = Vec::new();
    for _ in 10..16 {
        let a = p.next(Duration::from_secs(30)).await;
        assert!(a.get("result").is_some(), "{a}");
        answered.push(a["id"].as_u64().unwrap());
    }
    answered.sort();
    assert_eq!(answered, (10..16).collect::<Vec<u64>>());
    assert_eq!(fake.arrived(), 6);
    p.close().await;
}

/// A request the client cancels gets no answer (rmcp sends none), so its
/// place is given back when the cancellation is read: with a limit of one,
/// a `ping` after a cancelled call that Coda still holds is answered.
#[tokio::test]
async fn a_cancelled_request_gives_its_place_back() {
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/whoami", Duration::from_secs(60));
    let mut p = Pipes::start(&fake, &[("CODA_MAX_PENDING_REQUESTS", "1")]).await;
    p.send(whoami(20).as_bytes()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.arrived() < 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 20, "reason": "test"}});
    p.send(cancel.to_string().as_bytes()).await;
    p.send(br#"{"jsonrpc":"2.0","id":21,"method":"ping"}"#)
        .await;
    let a = p.next(Duration::from_secs(20)).await;
    assert_eq!(a["id"], 21, "{a}");
    p.close().await;
}

/// Regression: a `resources/read` of a doc's schema (many Coda reads) ran
/// on after the client cancelled it, though nobody would read its answer
/// (rmcp sends none), and its place among the pending requests is given
/// back at the cancellation: a client could keep any number running. It
/// now stops at the cancellation, as a tool call does: no Coda request
/// after it.
#[tokio::test]
async fn a_cancelled_resource_read_stops() {
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/tables", Duration::from_secs(2));
    let mut p = Pipes::start(&fake, &[]).await;
    let read = json!({"jsonrpc": "2.0", "id": 40, "method": "resources/read",
        "params": {"uri": "coda://docs/doc1/schema"}});
    p.send(read.to_string().as_bytes()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.arrived() < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", fake.arrived());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 40, "reason": "test"}});
    p.send(cancel.to_string().as_bytes()).await;
    // Past the delay: a read still running has asked for the columns.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(fake.arrived(), 3, "{paths:?}");
    p.close().await;
}

/// Regression: stdin closed while a call was still running (here one Coda
/// holds) ended it after rmcp's 5 s drain through the same cancellation a
/// client's request uses, and the log said "tool call cancelled by the
/// client", for a call the client never cancelled, with nothing on a write
/// it may have sent. The process exits cleanly, and the log says the call
/// was stopped at shutdown.
#[tokio::test]
async fn a_call_cut_short_by_stdin_closing_is_logged_as_such() {
    let fake = FakeCoda::start().await;
    fake.delay("GET", "/whoami", Duration::from_secs(60));
    let mut raw = harness::spawn_traced(command(&fake, &["--skip-token-check", "--no-rate-limit"]));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "bad-lines-test", "version": "0"}}});
    for line in [
        init.to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        whoami(2),
    ] {
        raw.stdin.write_all(line.as_bytes()).await.unwrap();
        raw.stdin.write_all(b"\n").await.unwrap();
    }
    raw.stdin.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.arrived() < 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = raw.finish().await;
    assert!(
        log.contains("stop a tool call at shutdown") && !log.contains("cancelled by the client"),
        "{log}"
    );
    assert!(log.contains("stdin closed, exiting"), "{log}");
}
