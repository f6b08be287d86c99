//! Regression: how much one client may leave in flight at a child, and how
//! long its request ids may be. Each test plays the client against a real
//! proxy on 127.0.0.1:0 over the `everything` child (`sleep` as a call
//! that is not answered while the test runs), and every wait is bounded.
//!
//! A request "held" here is a POST whose answer has not come: its task is
//! aborted to drop the connection, as a client that gives up would.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Proxy, STEP};
use tokio::task::JoinHandle;

const MODERN: &str = "2026-07-28";
const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";

fn call(id: &str, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
}

fn sleep(id: &str) -> Value {
    call(id, "sleep", json!({"ms": 600_000}))
}

fn echo(id: &str) -> Value {
    call(id, "echo", json!({"message": "hi"}))
}

/// The same call as a 2026-07-28 request: its `_meta` says the revision
/// (what else it holds stays).
fn modern(mut body: Value) -> Value {
    let meta = &mut body["params"]["_meta"];
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    body
}

/// How a test's client speaks.
#[derive(Clone, Copy)]
enum Front {
    /// Session-era POSTs without a session (`--stateless`).
    Stateless,
    /// 2026-07-28 requests, with the headers that revision requires.
    Modern,
}

/// A POST of `body` by the holder of `key` (none: anonymous), answered in
/// JSON or SSE as `accept` says.
fn post(
    proxy: &Proxy,
    front: Front,
    key: Option<&str>,
    body: &Value,
    accept: &str,
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", accept);
    let body = match front {
        Front::Stateless => body.clone(),
        Front::Modern => {
            req = req
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", body["method"].as_str().unwrap());
            if let Some(name) = body["params"]["name"].as_str() {
                req = req.header("mcp-name", name);
            }
            modern(body.clone())
        }
    };
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(body.to_string())
}

/// Sends a request whose answer does not come; aborting the task drops
/// its connection.
fn hold(req: reqwest::RequestBuilder) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok(r) = req.send().await {
            let _ = r.bytes().await;
        }
    })
}

/// Status and body of a quick call by `key`.
async fn probe(proxy: &Proxy, front: Front, key: Option<&str>) -> (u16, Value) {
    let r = tokio::time::timeout(
        STEP,
        post(proxy, front, key, &echo("probe"), "application/json").send(),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Probes until the status is `want` (requests held by other tasks take
/// a moment to reach the child); the last answer.
async fn probe_until(proxy: &Proxy, front: Front, key: Option<&str>, want: u16) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, body) = probe(proxy, front, key).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} instead of {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key_file(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("mcp-inflight-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("keys");
    std::fs::write(&p, format!("alice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

fn assert_in_flight_refusal(body: &Value) {
    assert_eq!(body["error"]["code"], -32600, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("in flight") && message.contains("--max-in-flight"),
        "{body}"
    );
}

/// Regression: a principal without a session (`--stateless`, or any
/// 2026-07-28 client) could keep any number of requests in flight at the
/// shared child. Now each principal has at most `--max-in-flight` (429
/// past it, another principal unaffected), and a request whose client
/// drops the connection gives its slot back, in JSON and in SSE.
async fn a_principal_is_bounded_and_dropped_connections_give_slots_back(
    front: Front,
    flags: &[&str],
) {
    let keys = key_file(flags.join("-").replace('/', "_").as_str());
    let mut argv = vec![
        "--max-in-flight",
        "2",
        "--max-batch",
        "2",
        "--api-key-file",
        &keys,
    ];
    argv.extend_from_slice(flags);
    let proxy = Proxy::start(&argv).await;
    let alice = Some(KEY_A);
    let json_held = hold(post(&proxy, front, alice, &sleep("j"), "application/json"));
    let sse_held = hold(post(&proxy, front, alice, &sleep("s"), "text/event-stream"));
    let refused = probe_until(&proxy, front, alice, 429).await;
    assert_in_flight_refusal(&refused);
    assert!(
        refusals(&proxy, "in_flight_per_principal").await >= 1,
        "the refusal is counted in /metrics"
    );
    // Bob's requests are his own.
    assert_eq!(probe(&proxy, front, Some(KEY_B)).await.0, 200);

    json_held.abort();
    probe_until(&proxy, front, alice, 200).await;
    let json_again = hold(post(&proxy, front, alice, &sleep("j2"), "application/json"));
    probe_until(&proxy, front, alice, 429).await;
    sse_held.abort();
    probe_until(&proxy, front, alice, 200).await;
    json_again.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn a_stateless_principal_is_bounded_and_dropped_connections_give_slots_back() {
    a_principal_is_bounded_and_dropped_connections_give_slots_back(
        Front::Stateless,
        &["--stateless"],
    )
    .await;
}

#[tokio::test]
async fn a_2026_principal_is_bounded_and_dropped_connections_give_slots_back() {
    a_principal_is_bounded_and_dropped_connections_give_slots_back(Front::Modern, &[]).await;
    a_principal_is_bounded_and_dropped_connections_give_slots_back(Front::Modern, &["--shared"])
        .await;
}

/// Regression: the slots of requests that end without an answer from the
/// child come back too: by `--request-timeout`, and when the child dies.
#[tokio::test]
async fn slots_come_back_on_timeout_and_on_a_child_crash() {
    let proxy = Proxy::start(&["--stateless", "--max-in-flight", "2", "--max-batch", "2"]).await;
    let pid = probe_pid(&proxy).await;
    let held: Vec<_> = ["a", "b"]
        .map(|id| {
            hold(post(
                &proxy,
                Front::Stateless,
                None,
                &sleep(id),
                "application/json",
            ))
        })
        .into();
    probe_until(&proxy, Front::Stateless, None, 429).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // The shared child restarts; the held calls were failed, not kept.
    probe_until(&proxy, Front::Stateless, None, 200).await;
    for h in held {
        tokio::time::timeout(STEP, h).await.unwrap().unwrap();
    }
    proxy.stop().await;

    let proxy = Proxy::start(&[
        "--max-in-flight",
        "2",
        "--max-batch",
        "2",
        "--request-timeout",
        "3s",
    ])
    .await;
    let held: Vec<_> = ["a", "b"]
        .map(|id| {
            hold(post(
                &proxy,
                Front::Modern,
                None,
                &sleep(id),
                "text/event-stream",
            ))
        })
        .into();
    let started = Instant::now();
    probe_until(&proxy, Front::Modern, None, 429).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "too slow to test"
    );
    probe_until(&proxy, Front::Modern, None, 200).await;
    for h in held {
        tokio::time::timeout(STEP, h).await.unwrap().unwrap();
    }
    proxy.stop().await;
}

async fn probe_pid(proxy: &Proxy) -> u32 {
    let r = post(
        proxy,
        Front::Stateless,
        None,
        &call("pid", "pid", json!({})),
        "application/json",
    )
    .send()
    .await
    .unwrap();
    support::text_of(&r.json().await.unwrap()).parse().unwrap()
}

/// Regression: `--max-in-flight` did not exist; a session's bound was
/// fixed at 1,024 (or `--max-batch`).
#[tokio::test]
async fn max_in_flight_sets_the_bound_of_a_session() {
    let proxy = Proxy::start(&["--max-in-flight", "3", "--max-batch", "3"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-03-26", json!({})).await;
    let r = c.post(&json!([sleep("a"), sleep("b")])).await;
    assert_eq!(r.status(), 200);
    drop(r);
    // Answered after both sleeps reached the routing table.
    let answer = c.call(json!("e"), "echo", json!({"message":"hi"})).await;
    assert_eq!(answer["id"], "e", "{answer}");
    let r = c.post(&json!([sleep("c"), sleep("d")])).await;
    assert_eq!(r.status(), 429, "two more would make four");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-in-flight"),
        "{body}"
    );
    assert_eq!(refusals(&proxy, "in_flight").await, 1);
    assert_eq!(refusals(&proxy, "in_flight_per_principal").await, 0);
    proxy.stop().await;
}

/// `mcp_proxy_limit_refusals_total` for `limit` in the proxy's `/metrics`
/// (0 when absent).
async fn refusals(proxy: &Proxy, limit: &str) -> u64 {
    let base = proxy.mcp();
    let base = base.strip_suffix("/mcp").unwrap();
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = format!("mcp_proxy_limit_refusals_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0, |n| n.parse().unwrap())
}

/// Regression: a bound on requests in flight below `--max-batch` would
/// refuse a batch the operator allowed, on a client with nothing in
/// flight; it is refused at start (exit 64, one line) instead of being
/// raised behind the operator's back.
#[test]
fn max_in_flight_below_max_batch_is_refused_at_start() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"));
        for (k, _) in std::env::vars() {
            if k.starts_with("MCP_PROXY_") {
                c.env_remove(k);
            }
        }
        c.args(args)
            .args(["--port", "0", "--", "true"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} {env:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status.code(), stderr)
    };
    for (args, env) in [
        (&["--max-in-flight", "8", "--max-batch", "16"][..], &[][..]),
        (
            &["--max-batch", "16"][..],
            &[("MCP_PROXY_MAX_IN_FLIGHT", "8")][..],
        ),
    ] {
        let (code, stderr) = run(args, env);
        assert_eq!(code, Some(64), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("--max-in-flight") && stderr.contains("--max-batch"),
            "{stderr}"
        );
    }
}

/// Regression: the 2026-07-28 front end and `--stateless` kept a request
/// id or `_meta.progressToken` of any length (up to `--max-body-bytes`)
/// while the request was in flight; the session-era front ends refused
/// one over 1 KiB.
#[tokio::test]
async fn ids_and_progress_tokens_over_a_kibibyte_are_refused_without_a_session() {
    for (front, flags) in [
        (Front::Modern, &[][..]),
        (Front::Stateless, &["--stateless"][..]),
    ] {
        let proxy = Proxy::start(flags).await;
        let send = |body: Value| {
            let req = post(&proxy, front, None, &body, "application/json");
            async move {
                let r = tokio::time::timeout(STEP, req.send())
                    .await
                    .unwrap()
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or_default())
            }
        };
        let too_long = "x".repeat(4096);
        let (status, body) = send(echo(&too_long)).await;
        assert_eq!(status, 400, "{}", short(&body));
        assert_eq!(body["error"]["code"], -32600, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("1024"),
            "{body}"
        );
        let mut with_token = echo("t");
        with_token["params"]["_meta"] = json!({"progressToken": too_long});
        let (status, body) = send(with_token).await;
        assert_eq!(status, 400, "{}", short(&body));
        let (status, body) = send(echo(&"x".repeat(1000))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], "x".repeat(1000));
        proxy.stop().await;
    }
}

/// The start of an answer that may echo a long id.
fn short(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}
