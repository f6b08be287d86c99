//! Regression: in single-server mode (`mcp-proxy -- cmd`, no `--config`)
//! the proxy was dumpable, so its child, running as the same user, read
//! `MCP_PROXY_API_KEY` (and every other secret in the proxy's
//! environment) from `/proc/<proxy pid>/environ`, and could ptrace it.
//! Named mode already marked itself not dumpable; every mode does now,
//! once, before any child starts.
//!
//! The proxy runs as `nobody` when the test runs as root (root reads any
//! process's files whatever the flag says).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::example;

/// Kills and reaps the proxy when dropped, so a failing assertion leaves
/// nothing running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).unwrap();
    let p = std::env::temp_dir().join(format!(
        "mcp-dumpable-{tag}-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    std::fs::create_dir_all(&p).unwrap();
    use std::os::unix::fs::PermissionsExt;
    // The unprivileged child writes its dump here.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

/// Runs `cmd` as `nobody` when this test runs as root.
fn unprivileged(cmd: &mut Command) -> &mut Command {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        cmd.uid(65534).gid(65534);
    }
    cmd
}

fn random_hex(n: usize) -> String {
    let mut r = vec![0u8; n];
    getrandom::fill(&mut r).unwrap();
    r.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_child_cannot_read_the_proxys_environment() {
    let dir = tempdir("single");
    let key = random_hex(16);
    let other = random_hex(16);
    let dump = dir.join("parent.env");
    // The child tries to read its parent's environment, then serves.
    let script =
        "cat /proc/$PPID/environ > \"$DUMP\" 2>/dev/null; echo done >> \"$DUMP\"; exec \"$0\"";
    let mut proxy = Reaped(
        unprivileged(
            Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
                .args(["--port", "0", "--env"])
                .arg(format!("DUMP={}", dump.display()))
                .args(["--", "sh", "-c", script])
                .arg(example("everything"))
                .env("MCP_PROXY_API_KEY", &key)
                .env("SOME_OTHER_SECRET", &other)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .unwrap(),
    );
    let stderr = proxy.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let port: u16 = loop {
        let Ok(l) = rx.recv_timeout(Duration::from_secs(20)) else {
            panic!("the proxy never logged its address: {log:#?}");
        };
        log.push(l.clone());
        if let Some(rest) = l.split("http://127.0.0.1:").nth(1) {
            break rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
        }
    };
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/mcp"));
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-api-key", key.parse().unwrap());
    c.http = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    c.initialize("2025-11-25", serde_json::json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let text = std::fs::read(&dump).unwrap_or_default();
        if text.ends_with(b"done\n") {
            break String::from_utf8_lossy(&text).into_owned();
        }
        assert!(Instant::now() < deadline, "the child never ran");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Never printed: it holds the key.
    assert!(
        !seen.contains(&key) && !seen.contains(&other),
        "the child read the proxy's environment ({} bytes, the API key among them)",
        seen.len()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}
