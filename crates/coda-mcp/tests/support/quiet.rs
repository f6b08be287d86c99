//! coda-mcp on raw pipes with its log discarded, for tests that measure
//! the real binary's peak memory (`VmHWM`) around one call: started with
//! `--skip-token-check --no-rate-limit` and initialized.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::fake_coda::{FakeCoda, Hostile};
use crate::harness::command;

pub fn answer(v: &Value) -> Hostile {
    Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: v.to_string().into_bytes(),
        ..Hostile::default()
    }
}

/// coda-mcp on raw pipes, its log (warnings only) discarded: trace
/// logging of thousands of requests would take longer than the test.
pub struct Raw {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

pub async fn started(fake: &FakeCoda, extra: &[&str]) -> Raw {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let mut args = vec!["--skip-token-check", "--no-rate-limit"];
    args.extend_from_slice(extra);
    let mut cmd = command(fake, &args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut raw = Raw {
        stdin: child.stdin.take().unwrap(),
        out: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "coda-mcp-test", "version": "0"}}});
    send(&mut raw, &init).await;
    next(&mut raw).await;
    send(
        &mut raw,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    raw
}

pub async fn send(raw: &mut Raw, msg: &Value) {
    raw.stdin
        .write_all(msg.to_string().as_bytes())
        .await
        .unwrap();
    raw.stdin.write_all(b"\n").await.unwrap();
    raw.stdin.flush().await.unwrap();
}

pub async fn next(raw: &mut Raw) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), raw.out.next_line())
        .await
        .expect("no answer")
        .unwrap()
        .expect("stdout closed");
    serde_json::from_str(&line).unwrap()
}

/// The peak resident memory of the process, in bytes.
pub fn peak(raw: &Raw) -> u64 {
    let pid = raw.child.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
