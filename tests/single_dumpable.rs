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

use std::time::Duration;

use support::STEP;
use support::example;
use support::process::{
    proxy_command, random_hex, spawn_logged, unprivileged, wait_for_file_ending, wait_for_port,
    world_writable_tempdir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_child_cannot_read_the_proxys_environment() {
    // The unprivileged child writes its dump here.
    let dir = world_writable_tempdir("single");
    let key = random_hex(16);
    let other = random_hex(16);
    let dump = dir.join("parent.env");
    // The child tries to read its parent's environment, then serves.
    let script =
        "cat /proc/$PPID/environ > \"$DUMP\" 2>/dev/null; echo done >> \"$DUMP\"; exec \"$0\"";
    let (proxy, rx) = spawn_logged(unprivileged(
        proxy_command()
            .args(["--port", "0", "--env"])
            .arg(format!("DUMP={}", dump.display()))
            .args(["--", "sh", "-c", script])
            .arg(example("everything"))
            .env("MCP_PROXY_API_KEY", &key)
            .env("SOME_OTHER_SECRET", &other),
    ));
    let mut log = Vec::new();
    let port = wait_for_port(&rx, STEP, &mut log)
        .unwrap_or_else(|_| panic!("the proxy never logged its address: {log:#?}"));
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/mcp"));
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-api-key", key.parse().unwrap());
    c.http = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    c.initialize("2025-11-25", serde_json::json!({})).await;
    // The child dumps what it can read of the proxy, then "done".
    let seen = wait_for_file_ending(&dump, b"done\n", Duration::from_secs(10));
    // Never printed: it holds the key.
    assert!(
        !seen.contains(&key) && !seen.contains(&other),
        "the child read the proxy's environment ({} bytes, the API key among them)",
        seen.len()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}
