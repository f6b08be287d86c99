//! Regression: session-era and legacy sessions fed by a hostile client.
//! Each test plays the attacker against a real proxy on 127.0.0.1:0 over
//! the `everything` child (`sleep` as a call that is not answered while
//! the test runs), and every wait is bounded.

mod support;

use serde_json::{Value, json};
use support::{Client, Proxy, legacy_session, legacy_session_at};

/// What a session may have in flight (`config::DEFAULT_MAX_IN_FLIGHT`,
/// the default `--max-batch` being no larger).
const CAP: usize = 1024;

fn sleeps(from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":600_000}}}))
            .collect(),
    )
}

/// Regression: a legacy POST is answered 202 as soon as its requests are
/// passed on, so without `--request-timeout` a client could keep any
/// number of calls in flight in one session (each held in the routing
/// table, its id bytes included) without ever holding a connection. (The
/// session speaks 2025-03-26, the one revision with batches.)
#[tokio::test]
async fn a_legacy_session_cannot_keep_more_than_the_cap_of_calls_in_flight() {
    let proxy = Proxy::start(&[]).await;
    let (mut stream, post_url) = legacy_session_at(&proxy, "2025-03-26").await;
    let http = reqwest::Client::new();
    let r = http
        .post(&post_url)
        .json(&sleeps(0, CAP - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The echo's answer follows every sleep into the routing table.
    let echo = json!({"jsonrpc":"2.0","id":"echo","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}});
    let r = http.post(&post_url).json(&echo).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let answer = stream.next_json().await;
    assert_eq!(answer["id"], "echo", "{answer}");

    let r = http
        .post(&post_url)
        .json(&sleeps(CAP, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "two more calls would pass the cap");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in flight"),
        "{body}"
    );
    // A notification still passes: it holds nothing.
    let r = http
        .post(&post_url)
        .json(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    proxy.stop().await;
}

/// Regression: a Streamable HTTP client can drop each POST's stream (a
/// disconnect is not a cancellation) and so keep any number of calls in
/// flight in its session.
#[tokio::test]
async fn a_streamable_session_cannot_keep_more_than_the_cap_of_calls_in_flight() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-03-26", json!({})).await;
    let r = c.post(&sleeps(0, CAP - 1)).await;
    assert_eq!(r.status(), 200);
    drop(r);
    // Answered after every sleep reached the routing table.
    let echo = c.call(json!("echo"), "echo", json!({"message":"hi"})).await;
    assert_eq!(echo["id"], "echo", "{echo}");

    let r = c.post(&sleeps(CAP, 2)).await;
    assert_eq!(r.status(), 429, "two more calls would pass the cap");
    let r = c
        .post(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}))
        .await;
    assert_eq!(r.status(), 202);
    proxy.stop().await;
}

/// Regression: with two `Mcp-Session-Id` headers the proxy used the first
/// and ignored the second, so a gateway in front that checks the last one
/// (or joins them) and this proxy disagreed on which session a request
/// is for. Two different ids are now a 400; the same id twice (or
/// comma-joined, as some clients do) is that id.
#[tokio::test]
async fn conflicting_session_id_headers_are_refused_and_repeated_ones_accepted() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let mine = c.session.clone().unwrap();
    let http = reqwest::Client::new();
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let post = |ids: &[&str]| {
        let mut req = http
            .post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&ping);
        for id in ids {
            req = req.header("mcp-session-id", *id);
        }
        req.send()
    };
    let other = "0123456789abcdef0123456789abcdef";
    for ids in [[mine.as_str(), other], [other, mine.as_str()]] {
        let r = post(&ids).await.unwrap();
        assert_eq!(r.status(), 400, "{ids:?}");
        assert!(r.headers().get("mcp-session-id").is_none());
    }
    let joined = format!("{mine}, {other}");
    assert_eq!(post(&[&joined]).await.unwrap().status(), 400);

    assert_eq!(post(&[&mine, &mine]).await.unwrap().status(), 200);
    let joined = format!("{mine}, {mine}");
    assert_eq!(post(&[&joined]).await.unwrap().status(), 200);
    assert_eq!(post(&[&mine]).await.unwrap().status(), 200);
    let r = http
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header(
            "mcp-session-id",
            reqwest::header::HeaderValue::from_bytes("s\u{e9}ance".as_bytes()).unwrap(),
        )
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a session id that is not ASCII");
    proxy.stop().await;
}

/// Regression: the idle reaper ended its expired sessions one after
/// another, each waiting for its child's staged stop (up to 1.5 x the
/// grace for a child that ignores stdin and SIGTERM). Meanwhile no other
/// session expired, and those it had already picked stayed open: a client
/// coming back to one was served and then had its session ended under it.
/// Now a sweep takes its picks out at once and their children stop in the
/// background: a session going idle later expires while the first one's
/// child is still being stopped.
#[tokio::test]
async fn an_expiring_session_does_not_wait_for_another_ones_child_to_stop() {
    let proxy = Proxy::start_child(
        &["--session-idle-timeout", "300ms", "--shutdown-grace", "5s"],
        &support::example("everything"),
        &["--ignore-sigterm"],
    )
    .await;
    let sessions = |h: Value| h["sessions"].as_u64().unwrap();
    let mut a = Client::new(&proxy.mcp());
    a.initialize("2025-11-25", json!({})).await;
    let pid_a: u32 = support::text_of(&a.call(json!(1), "pid", json!({})).await)
        .parse()
        .unwrap();
    let mut b = Client::new(&proxy.mcp());
    b.initialize("2025-11-25", json!({})).await;
    // B's open stream keeps it from expiring until it is closed.
    let stream = reqwest::Client::new()
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", b.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let until = |n: u64, what: &'static str| {
        let proxy = &proxy;
        async move {
            let deadline = tokio::time::Instant::now() + support::STEP;
            while sessions(proxy.health().await) > n {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    until(1, "A never expired").await;
    assert!(support::alive(pid_a), "A's stubborn child is being stopped");
    drop(stream);
    until(0, "B never expired").await;
    assert!(
        support::alive(pid_a),
        "B expired only once A's child had stopped: the reaper waited for it"
    );
    proxy.stop().await;
}

/// Regression: a request id is kept byte for byte while its request is in
/// flight, and nothing bounded its length but `--max-body-bytes`, so the
/// cap on requests in flight still let one session hold a GiB of ids.
#[tokio::test]
async fn request_ids_longer_than_a_kibibyte_are_refused_on_both_transports() {
    let proxy = Proxy::start(&[]).await;
    let call = |id: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}});
    let long = "x".repeat(1000);
    let too_long = "x".repeat(4096);

    let (mut stream, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let r = http
        .post(&post_url)
        .json(&call(&too_long))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&post_url)
        .json(&call(&long))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(stream.next_json().await["id"], long.as_str());

    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    assert_eq!(c.post(&call(&too_long)).await.status(), 400);
    let r = c.post(&call(&long)).await;
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}

/// Regression: a request's `_meta.progressToken` is kept byte for byte
/// while it is in flight, like its id, and was not bounded either.
#[tokio::test]
async fn progress_tokens_longer_than_a_kibibyte_are_refused_on_both_transports() {
    let proxy = Proxy::start(&[]).await;
    let call = |token: &str| json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{"progressToken":token}}});
    let too_long = "t".repeat(4096);
    let (_stream, post_url) = legacy_session(&proxy).await;
    let r = reqwest::Client::new()
        .post(&post_url)
        .json(&call(&too_long))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    assert_eq!(c.post(&call(&too_long)).await.status(), 400);
    assert_eq!(c.post(&call("short")).await.status(), 200);
    proxy.stop().await;
}

/// Regression: the version a client asked for in `initialize` was
/// remembered and accepted in `MCP-Protocol-Version` afterwards, so a
/// client that asked for `bogus-1` (and was answered with a supported
/// revision) had GET and DELETE served with `MCP-Protocol-Version:
/// bogus-1` while its POSTs got 400. An unsupported value is 400 on every
/// method (spec 2025-06-18+ `transports#protocol-version-header`).
#[tokio::test]
async fn a_version_the_client_asked_for_but_is_unsupported_is_refused_on_every_method() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("bogus-1", json!({})).await;
    let sid = c.session.clone().expect("a session");
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, version: &'static str| {
        http.request(method, proxy.mcp())
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", version)
            .send()
    };
    let step = std::time::Duration::from_secs(10);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = tokio::time::timeout(step, send(method.clone(), "bogus-1"))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(r.status(), 400, "{method}");
    }
    // A supported revision still reaches the session, which is still there.
    let r = tokio::time::timeout(step, send(reqwest::Method::DELETE, "2025-06-18"))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}
