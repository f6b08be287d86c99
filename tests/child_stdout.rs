//! What a child's stdout is (`--child-stdout`): by default a pipe, on
//! which a server may open `/dev/stdout`; with `socket`, one end of a Unix
//! socket pair, as Node.js gives the servers it spawns. The children are
//! `sh` wrappers around `everything` that start only if their stdout is
//! what they test for.

mod support;

use serde_json::json;
use support::{Client, Proxy, example};

/// `sh -c SCRIPT everything`: the script runs `everything` as `"$0"`.
async fn proxy_over(flags: &[&str], script: &str) -> Proxy {
    Proxy::start_child(flags, "sh", &["-c", script, &example("everything")]).await
}

/// Whether a session over the proxy starts and answers an echo call.
async fn serves(proxy: &Proxy) -> bool {
    let mut c = Client::new(&proxy.mcp());
    let resp = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .send()
        .await
        .unwrap();
    if resp.status() != 200 {
        return false;
    }
    c.session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    if c.session.is_none() {
        return false;
    }
    c.version = "2025-11-25".into();
    let echo = c.call(json!(2), "echo", json!({"message":"hi"})).await;
    echo["result"]["content"][0]["text"] == "hi"
}

/// Starts `everything` only if `/dev/stdout` is a pipe, opened by name.
const ON_A_PIPE_OPENED_BY_NAME: &str = r#"[ -p /dev/stdout ] && exec "$0" > /dev/stdout; exit 3"#;

#[tokio::test]
async fn by_default_the_childs_stdout_is_a_pipe_that_dev_stdout_opens() {
    let proxy = proxy_over(&[], ON_A_PIPE_OPENED_BY_NAME).await;
    assert!(serves(&proxy).await, "the child's stdout is not a pipe");
    proxy.stop().await;
}

#[tokio::test]
async fn with_socket_the_childs_stdout_is_a_socket_that_dev_stdout_cannot_open() {
    let script = r#"[ -S /dev/stdout ] && exec "$0"; exit 3"#;
    let proxy = proxy_over(&["--child-stdout", "socket"], script).await;
    assert!(serves(&proxy).await, "the child's stdout is not a socket");
    proxy.stop().await;
    // What the pipe is kept for: no socket can be opened by path.
    let script = r#"exec "$0" > /dev/stdout"#;
    let flags = [
        "--child-stdout",
        "socket",
        "--shared",
        "--request-timeout",
        "3s",
    ];
    let proxy = proxy_over(&flags, script).await;
    assert!(!serves(&proxy).await);
    proxy.stop().await;
}

#[tokio::test]
async fn a_child_reading_its_stdout_socket_sees_the_end_not_a_hang() {
    // `read` returns at once: the proxy's end of the pair cannot write.
    let script = r#"read -r line <&1; exec "$0""#;
    let proxy = proxy_over(
        &["--child-stdout", "socket", "--request-timeout", "5s"],
        script,
    )
    .await;
    assert!(serves(&proxy).await);
    proxy.stop().await;
}
