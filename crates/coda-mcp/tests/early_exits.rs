//! Regression: the exits before logging is set up (a usage error, `--help`,
//! `--version`) wrote straight to stderr or stdout from the main thread.
//! With stderr a pipe nobody reads and full (64 KiB), `coda-mcp --bogus`
//! never exited (still running 5 s later, and for ever); with stdout a
//! broken pipe, `--help` and `--version` panicked (`failed printing to
//! stdout`, exit 101); and an argument that is not UTF-8 panicked in
//! `std::env::args` (exit 101). Each now exits with its code within a
//! bounded time (`log::EARLY_WRITE`, 2 s), and a usage error is one line.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Far above the 2 s an early write may take, far below "for ever".
const BUDGET: Duration = Duration::from_secs(15);

fn base(args: &[OsString]) -> Command {
    let mut cmd = Command::new(harness::bin());
    cmd.args(args)
        .env("CODA_API_TOKEN", fake_coda::TOKEN)
        .env_remove("CODA_API_KEY")
        .env_remove("API_KEY")
        .stdin(Stdio::null());
    cmd
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Waits for `child` within [`BUDGET`]; kills it and fails if it hangs.
fn exits(mut child: Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + BUDGET;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {BUDGET:?} after it started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pipe that is full and that nobody reads: both ends (the reading end
/// held open). `dd` writes into it without blocking until the kernel
/// refuses more (EAGAIN), whatever the pipe's capacity.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (r, w) = std::io::pipe().unwrap();
    let out = Command::new("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/stdout",
            "bs=4096",
            "count=65536",
            "oflag=nonblock",
        ])
        .stdout(w.try_clone().unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("temporarily unavailable"),
        "not filled: {said}"
    );
    (r, w)
}

#[test]
fn a_usage_error_exits_64_when_stderr_is_full() {
    // argh's error, then the configuration's.
    for args in [vec!["--bogus"], vec!["--max-read-bytes", "1"]] {
        let (_r, w) = full_pipe();
        let child = base(&os(&args))
            .stdout(Stdio::null())
            .stderr(w)
            .spawn()
            .unwrap();
        let status = exits(child, &format!("{args:?} with stderr full"));
        assert_eq!(status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn a_usage_error_exits_64_when_stderr_is_broken() {
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let child = base(&os(&["--bogus"]))
        .stdout(Stdio::null())
        .stderr(w)
        .spawn()
        .unwrap();
    assert_eq!(exits(child, "stderr broken").code(), Some(64));
}

#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error_of_one_line() {
    let bad = OsString::from_vec(b"--docs=\xff".to_vec());
    let out = base(&[OsString::from("--skip-token-check"), bad])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn help_and_version_exit_0_when_stdout_is_broken_or_full() {
    for arg in ["--help", "--version"] {
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let mut child = base(&os(&[arg]))
            .stdout(w)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = exits(child, &format!("{arg} with stdout broken"));
        assert_eq!(status.code(), Some(0), "{arg}: {err}");
        assert!(!err.contains("panicked"), "{arg}: {err}");

        let (_r, w) = full_pipe();
        let child = base(&os(&[arg]))
            .stdout(w)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = exits(child, &format!("{arg} with stdout full"));
        assert_eq!(status.code(), Some(0), "{arg}");
    }
}

/// Regression: a variable set but not UTF-8 was taken as unset
/// (`std::env::var(..).ok()`): `CODA_DOCS` so dropped the allow-list and
/// served every doc, `CODA_READ_ONLY` listed the write tools.
#[test]
fn a_variable_that_is_not_utf8_is_a_usage_error_of_one_line() {
    let out = base(&os(&["--skip-token-check"]))
        .env("CODA_DOCS", OsString::from_vec(b"\xff".to_vec()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("CODA_DOCS") && err.contains("UTF-8"), "{err}");
}

/// Regression: argh's error quotes the argument as given, so a value
/// holding a newline printed two lines, the second one of the caller's
/// making (`--call-timeout-secs $'1\nerror: forged'`). Control characters
/// are now escaped, and the error is one line.
#[test]
fn a_usage_error_quoting_a_line_break_is_still_one_line() {
    for args in [
        vec!["--call-timeout-secs", "1\nerror: forged"],
        vec!["x\ny\u{202e}z"],
    ] {
        let out = base(&os(&args)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("\\n") && !err.contains('\u{202e}'), "{err}");
    }
}

/// Regression: a `CODA_MCP_LOG` that does not parse (`coda_mcp=loud`) was
/// taken as `info` without a word, so a typo logged at another level
/// than asked. It still is (as documented), with a warning saying so.
#[test]
fn an_unparsable_log_filter_is_warned_about() {
    for bad in [
        OsString::from("coda_mcp=loud"),
        OsString::from_vec(b"debug\xff".to_vec()),
    ] {
        let out = base(&os(&[
            "--skip-token-check",
            "--api-base-url",
            "http://127.0.0.1:1/apis/v1",
        ]))
        .env("CODA_MCP_LOG", &bad)
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines()
                .any(|l| l.contains("WARN") && l.contains("ignore CODA_MCP_LOG")),
            "{bad:?}: {err}"
        );
    }
}
