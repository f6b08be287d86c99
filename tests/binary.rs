//! The real `mcp-proxy` binary: argv, exit codes, signals, and that no
//! process outlives it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use support::{Client, STEP, alive, eventually, text_of};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-proxy");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("MCP_PROXY_PORT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary on port 0, with the address it logged.
struct Running {
    child: Child,
    base: String,
    log: mpsc::Receiver<String>,
}

fn start(flags: &[&str], command: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--port", "0"])
        .args(flags)
        .arg("--")
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Owned by the guard from here on, so a failed wait below still reaps it.
    let mut running = Running {
        child,
        base: String::new(),
        log: rx,
    };
    let deadline = Instant::now() + STEP;
    loop {
        let line = running
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("proxy logs its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            running.base = format!("http://{}", rest.split('/').next().unwrap());
            return running;
        }
    }
}

impl Running {
    fn terminate(&mut self) -> (i32, Duration) {
        let started = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = started + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_usage_exits_64_with_one_line() {
    let (code, err) = run(&["--no-such-flag", "--", "x"]);
    assert_eq!(code, 64);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, 64);
    assert!(err.contains("no MCP server command"), "{err}");
    let (code, err) = run(&["--port", "banana", "--", "x"]);
    assert_eq!(code, 64);
    assert!(err.contains("--port"), "{err}");
}

#[test]
fn a_public_bind_without_a_key_is_refused_with_the_fix() {
    let (code, err) = run(&["--host", "0.0.0.0", "--", "x"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("--api-key") && err.contains("--allow-unauthenticated"),
        "{err}"
    );
}

#[test]
fn help_explains_the_sharing_trade_off() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--shared") && text.contains("shared by all users"),
        "{text}"
    );
}

#[test]
fn a_child_command_that_cannot_start_fails_the_proxy_at_once() {
    // Checked at start in every mode (tests/faults_process.rs has the cases).
    for mode in ["--shared", "--stateless"] {
        let (code, err) = run(&["--port", "0", mode, "--", "/nonexistent/server"]);
        assert_eq!(code, 64);
        assert!(err.contains("/nonexistent/server"), "{err}");
    }
    let (code, err) = run(&["--port", "0", "--", "/nonexistent/server"]);
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/server"), "{err}");
}

#[tokio::test]
async fn sigterm_drains_and_leaves_no_process_behind() {
    let mut p = start(&[], &[&support::example("everything")]);
    let url = format!("{}/mcp", p.base);
    let mut pids = Vec::new();
    let mut open_streams = Vec::new();
    for _ in 0..3 {
        let mut c = Client::new(&url);
        c.initialize("2025-11-25", json!({})).await;
        pids.push(
            text_of(&c.call(json!(1), "pid", json!({})).await)
                .parse::<u32>()
                .unwrap(),
        );
        pids.push(
            text_of(&c.call(json!(2), "spawn_grandchild", json!({})).await)
                .parse::<u32>()
                .unwrap(),
        );
        // An open GET stream must not hold the shutdown up.
        open_streams.push(
            c.http
                .get(&url)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", c.session.clone().unwrap())
                .send()
                .await
                .unwrap(),
        );
    }
    assert!(pids.iter().all(|&p| alive(p)));
    let (code, took) = p.terminate();
    assert_eq!(code, 0, "{}", p.logs());
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)).await,
            "pid {pid} outlived the proxy"
        );
    }
    assert!(p.logs().contains("shutdown complete"));
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let mut p = start(
        &["--shutdown-grace", "400ms"],
        &[&support::example("everything"), "--ignore-sigterm"],
    );
    let mut c = Client::new(&format!("{}/mcp", p.base));
    c.initialize("2025-11-25", json!({})).await;
    let pid: u32 = text_of(&c.call(json!(1), "pid", json!({})).await)
        .parse()
        .unwrap();
    let (code, took) = p.terminate();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)).await,
        "stubborn child {pid} survived"
    );
    let logs = p.logs();
    assert!(logs.contains("SIGKILL"), "{logs}");
}

#[tokio::test]
async fn environment_flags_reach_the_child_and_the_api_key_does_not() {
    let dir = std::env::temp_dir().join(format!("mcp-proxy-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("env");
    std::fs::write(&env_file, "FROM_FILE=file-value\n# comment\n").unwrap();
    let p = start(
        &[
            "--env",
            "FROM_FLAG=flag-value",
            "--env-file",
            env_file.to_str().unwrap(),
            "--api-key",
            "key-must-not-leak-1234",
            "--cwd",
            dir.to_str().unwrap(),
        ],
        &[
            "sh",
            "-c",
            "printf '%s|%s|%s|%s\\n' \"$FROM_FLAG\" \"$FROM_FILE\" \"$(pwd)\" \"$(env | grep -c key-must-not-leak)\" >&2; exec \"$0\"",
            &support::example("everything"),
        ],
    );
    let mut c = Client::new(&format!("{}/mcp", p.base));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", "key-must-not-leak-1234".parse().unwrap());
    c.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    c.initialize("2025-11-25", json!({})).await;
    let want = format!("flag-value|file-value|{}|0", dir.display());
    let mut logs = String::new();
    let ok = eventually(STEP, || {
        logs.push_str(&p.logs());
        logs.contains(&want)
    })
    .await;
    assert!(ok, "child stderr line {want:?} not in logs:\n{logs}");
    assert!(
        !logs.contains("key-must-not-leak"),
        "the API key appeared in the logs"
    );
}

/// The CPUs this process may run on, as tokio counts them for a pool.
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn worker_threads_sets_the_runtime_threads() {
    // A new thread names itself once it first runs, which on a loaded
    // machine can come after the proxy says it listens: the count is read
    // until it is right, for up to 5 s, and the last reading is reported.
    let threads = |pid: u32, want: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "tokio-rt-worker")
                .count();
            if n == want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The default runs on the main thread: no pool at all.
    let mut p = start(&[], &["sleep", "60"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        threads(p.child.id(), 0),
        0,
        "the default is one thread, no pool"
    );
    assert_eq!(p.terminate().0, 0);
    for (flag, n) in [("3", 3), ("0", available_cpus())] {
        let mut p = start(&["--worker-threads", flag], &["sleep", "60"]);
        assert_eq!(threads(p.child.id(), n), n, "--worker-threads {flag}");
        assert_eq!(p.terminate().0, 0);
    }
    let (code, err) = run(&["--worker-threads", "1025", "--", "true"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--worker-threads"), "{err}");
}

/// Audit records skip tracing's formatter: with `--log-format json` each is
/// one flat object (its fields beside `timestamp`, `level`, `target`), not
/// a JSON string inside `message`; plain lines carry the object as is.
#[tokio::test]
async fn audit_records_are_flat_json_lines_in_either_log_format() {
    for format in ["json", "plain"] {
        let mut p = start(
            &["--log-format", format],
            &[&support::example("everything")],
        );
        let mut c = Client::new(&format!("{}/mcp", p.base));
        c.initialize("2025-11-25", json!({})).await;
        c.call(json!(1), "echo", json!({"message": "hi"})).await;
        let mut record = None;
        let deadline = Instant::now() + STEP;
        while record.is_none() && Instant::now() < deadline {
            let Ok(line) = p.log.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            if !line.contains("tools.call") {
                continue;
            }
            let object = match format {
                "json" => line.as_str(),
                _ => line
                    .split_once("  INFO audit: ")
                    .map(|(time, object)| {
                        assert!(time.ends_with('Z') && time.len() == 27, "{line}");
                        object
                    })
                    .unwrap_or_else(|| panic!("not an audit line: {line}")),
            };
            record = Some(serde_json::from_str::<serde_json::Value>(object).unwrap());
        }
        let r = record.unwrap_or_else(|| panic!("{format}: no tools.call record"));
        assert_eq!(r["event"], "tools.call", "{r}");
        assert_eq!(r["tool"], "echo", "{r}");
        assert_eq!(r["outcome"], "ok", "{r}");
        if format == "json" {
            assert_eq!(r["target"], "audit", "{r}");
            assert_eq!(r["level"], "INFO", "{r}");
            assert!(
                r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{r}"
            );
            assert!(r.get("message").is_none(), "{r}");
        }
        assert_eq!(p.terminate().0, 0);
    }
}

/// A FIFO in a fresh directory, with its read end held open (non-blocking)
/// and not read: once the pipe's 64 KiB are full, every write to it
/// blocks, as on a stalled filesystem.
fn stalled_fifo(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    (dir, fifo, reader)
}

#[tokio::test]
async fn an_audit_file_nobody_drains_holds_up_no_request_and_loses_nothing() {
    use std::io::Read;
    let (dir, fifo, mut reader) = stalled_fifo("mcp-audit-fifo");
    let mut p = start(
        &["--shared", "--audit-log", fifo.to_str().unwrap()],
        &[&support::example("everything")],
    );
    let mut c = Client::new(&format!("{}/mcp", p.base));
    c.accept = "application/json";
    c.initialize("2025-11-25", json!({})).await;
    const CALLS: usize = 1000; // about 200 KiB of records
    for i in 0..CALLS {
        let call = c.call(json!(i), "echo", json!({"message": "x"}));
        let r = tokio::time::timeout(STEP, call)
            .await
            .unwrap_or_else(|_| panic!("call {i} waited on the audit file"));
        assert_eq!(text_of(&r), "x");
    }
    let health: serde_json::Value = reqwest::get(format!("{}/health", p.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["audit_records_dropped"], 0, "{health}");
    // Drained now, the file gets every record.
    let mut text = Vec::new();
    let deadline = Instant::now() + STEP;
    let calls = |t: &[u8]| {
        String::from_utf8_lossy(t)
            .lines()
            .filter(|l| l.contains(r#""event":"tools.call""#))
            .count()
    };
    while calls(&text) < CALLS && Instant::now() < deadline {
        let mut buf = [0u8; 65536];
        match reader.read(&mut buf) {
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        calls(&text),
        CALLS,
        "every tools.call record reached the file"
    );
    assert_eq!(p.terminate().0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn audit_records_past_the_queue_bytes_are_dropped_and_counted() {
    let (dir, fifo, _reader) = stalled_fifo("mcp-audit-full");
    let mut p = start(
        &[
            "--shared",
            "--audit-log",
            fifo.to_str().unwrap(),
            "--audit-queue-bytes",
            "4k",
        ],
        &[&support::example("everything")],
    );
    let mut c = Client::new(&format!("{}/mcp", p.base));
    c.accept = "application/json";
    c.initialize("2025-11-25", json!({})).await;
    // About 200 KiB of records: more than the pipe's 64 KiB, the 64 KiB the
    // writer thread holds while its write waits, and the 4 KiB queue.
    for i in 0..1000 {
        let call = c.call(json!(i), "echo", json!({"message": "x"}));
        let r = tokio::time::timeout(STEP, call).await.expect("calls go on");
        assert_eq!(text_of(&r), "x");
    }
    let base = p.base.clone();
    let dropped = || async {
        let health: serde_json::Value = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("mcp_proxy_audit_records_dropped_total "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        (
            health["audit_records_dropped"].as_u64().unwrap_or(0),
            counted,
        )
    };
    let (in_health, in_metrics) = dropped().await;
    assert!(in_health > 0, "no record counted as dropped");
    assert!(
        in_metrics.is_some_and(|n| n >= in_health),
        "{in_metrics:?} in /metrics"
    );
    assert_eq!(p.terminate().0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: the plain log wrote a field as it was, so a principal with
/// a line break (a JWT `sub`, a forward-auth name) started a line of its
/// own, forged to look like any event. Every event is one line now.
#[tokio::test]
async fn a_line_break_in_a_principal_cannot_forge_a_log_line() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = std::env::temp_dir().join(format!("mcp-log-forge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    let key = "a-shared-secret-of-at-least-32-bytes!!";
    std::fs::write(&secret, key).unwrap();
    let mut p = start(
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--jwt-audience",
            "aud",
        ],
        &[&support::example("everything")],
    );
    let forged = "2026-01-01T00:00:00.000000Z  INFO forged: admin granted";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": format!("alice\n{forged}\r"), "aud": "aud", "exp": now + 600}),
        &EncodingKey::from_secret(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut c = Client::new(&format!("{}/mcp", p.base));
    c.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    c.initialize("2025-11-25", json!({})).await;
    let mut created = None;
    let deadline = Instant::now() + STEP;
    while created.is_none() && Instant::now() < deadline {
        if let Ok(line) = p.log.recv_timeout(Duration::from_millis(100)) {
            assert!(!line.starts_with(forged), "a forged line: {line}");
            if line.contains("session created") {
                created = Some(line);
            }
        }
    }
    let created = created.expect("a session created line");
    assert!(created.contains(r"alice\n2026-01-01"), "{created}");
    assert_eq!(p.terminate().0, 0);
    let rest = p.logs();
    assert!(
        !rest.lines().any(|l| l.starts_with(forged)),
        "a forged line: {rest}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
