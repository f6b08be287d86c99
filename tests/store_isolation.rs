//! Regression: a child could read the proxy's secrets through /proc.
//!
//! Every child runs as the proxy's user, so `/proc/<proxy pid>/environ`
//! was open to it: `MCP_PROXY_STORE_KEY` (with the store file, which the
//! same user can read too, every principal's stored credentials),
//! `MCP_PROXY_API_KEY` and a PostgreSQL URL's password. Where ptrace is
//! not restricted, `/proc/<proxy pid>/mem` gave it every credential the
//! proxy had opened as well. One principal's child, running code that
//! processes untrusted input, could thus take every other principal's
//! credential. The proxy now marks itself not dumpable, which makes those
//! files its own (root's) and refuses ptrace; its children, which `exec`,
//! are dumpable as usual.
//!
//! The proxy runs as `nobody` when the test runs as root (root reads any
//! process's files whatever the flag says).

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::STEP;
use support::example;
use support::process::{
    proxy_command, spawn_logged, unprivileged, wait_for_file_ending, wait_for_port,
    world_writable_tempdir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cannot_read_the_store_key_from_the_proxys_environment() {
    // The unprivileged proxy creates its store and the child its dump here.
    let dir = world_writable_tempdir("environ");
    let db = dir.join("s.db");
    let key = mcp_sidecar::store::StoreKey::generate_base64();
    let mut set = unprivileged(
        proxy_command()
            .args(["secrets", "set", "none:anonymous", "dump", "tok"])
            .env("MCP_PROXY_STORE", &db)
            .env("MCP_PROXY_STORE_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        set.stdin.take().unwrap().write_all(b"tok-anon").unwrap();
    }
    assert!(set.wait().unwrap().success());
    // The child tries to read its parent's environment, then serves.
    let dump = dir.join("parent.env");
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[[server]]\nname = \"dump\"\ncommand = [\"sh\", \"-c\", \"cat /proc/$PPID/environ > \\\"$DUMP\\\" 2>/dev/null; echo done >> \\\"$DUMP\\\"; exec \\\"$0\\\"\", {:?}]\nenv = {{ DUMP = {dump:?}, TOKEN = {{ secret = \"tok\" }} }}\n",
            example("everything")
        ),
    )
    .unwrap();
    let (proxy, rx) = spawn_logged(unprivileged(
        proxy_command()
            .arg("--config")
            .arg(&file)
            .args(["--port", "0", "--config-poll", "0"])
            .env("MCP_PROXY_STORE", &db)
            .env("MCP_PROXY_STORE_KEY", &key),
    ));
    let mut log = Vec::new();
    let port = wait_for_port(&rx, STEP, &mut log)
        .unwrap_or_else(|_| panic!("the proxy never logged its address: {log:#?}"));
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/servers/dump/mcp"));
    c.initialize("2025-11-25", serde_json::json!({})).await;
    // The child dumps what it can read of the proxy, then "done".
    let seen = wait_for_file_ending(&dump, b"done\n", Duration::from_secs(10));
    // Never printed: it is this test's whole environment.
    assert!(
        !seen.contains(&key) && !seen.contains("MCP_PROXY_"),
        "the child read the proxy's environment ({} bytes, the store key among them)",
        seen.len()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}
