//! Regression: in `--stateless` mode a request whose client went away, or
//! that its client cancelled, stayed at the child. A dropped POST (JSON or
//! SSE) was forgotten by the proxy without a `notifications/cancelled`,
//! even once `--request-timeout` passed; and a client's own
//! `notifications/cancelled` came in a POST of its own, which could not
//! name a request of an earlier POST, so it got 202 and went nowhere.
//!
//! Each test plays the client against a real proxy on 127.0.0.1:0 over the
//! `everything` child, whose `cancelled` tool reports every cancellation it
//! received (`matched`: for a request it had in flight, by the id it saw).
//! Every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Proxy, STEP, SseStream};
use tokio::task::JoinHandle;

const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";

/// How soon a cancellation must reach the child.
const PROMPT: Duration = Duration::from_secs(1);

/// Long enough for a request to be written to the child.
const SETTLE: Duration = Duration::from_millis(300);

/// A `sleep` that is not answered while a test runs.
fn sleep(id: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":600_000}}})
}

/// A call that sends a progress notification at once, then one every
/// 100 ms for minutes: its first event shows it reached the child.
fn progress(id: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"progress","arguments":{"steps":10_000,"delay_ms":100},"_meta":{"progressToken":format!("tok-{id}")}}})
}

fn cancel(id: &str) -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":id,"reason":"changed my mind"}})
}

/// A stateless POST of `body`, by the holder of `key` (none: anonymous).
fn post(proxy: &Proxy, key: Option<&str>, body: &Value, accept: &str) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(body.to_string());
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req
}

/// Sends a request whose answer is read in a task of its own; aborting the
/// task drops the connection, as a client that gives up would.
fn hold(req: reqwest::RequestBuilder) -> JoinHandle<Option<Value>> {
    tokio::spawn(async move {
        let r = req.send().await.ok()?;
        r.json::<Value>().await.ok()
    })
}

/// An SSE POST of `body`, once its first event (the progress notification
/// the child sends at once) arrived: the request is at the child.
async fn open_sse(proxy: &Proxy, key: Option<&str>, body: &Value) -> SseStream {
    let r = tokio::time::timeout(STEP, post(proxy, key, body, "text/event-stream").send())
        .await
        .expect("SSE answer in time")
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = SseStream::new(r);
    let first: Value = serde_json::from_str(&s.next().await.expect("an event").data).unwrap();
    assert_eq!(first["method"], "notifications/progress", "{first}");
    s
}

/// The cancellations the child received so far, as the holder of `key` asks.
async fn cancellations(proxy: &Proxy, key: Option<&str>) -> Vec<Value> {
    let body = json!({"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":"cancelled","arguments":{}}});
    let r = tokio::time::timeout(STEP, post(proxy, key, &body, "application/json").send())
        .await
        .expect("answer in time")
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    let seen: Value = serde_json::from_str(&support::text_of(&answer)).unwrap();
    seen.as_array().cloned().unwrap_or_default()
}

/// Asks the child until it has received `n` cancellations, for at most
/// [`PROMPT`]; what it has then.
async fn cancellations_within_prompt(proxy: &Proxy, key: Option<&str>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let seen = cancellations(proxy, key).await;
        if seen.len() >= n || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cancellation of a request the child had in flight.
fn assert_matched(seen: &[Value]) {
    assert!(
        seen.iter().all(|c| c["matched"] == true),
        "the child must see the id it knows the request by: {seen:?}"
    );
}

fn key_file(name: &str) -> String {
    let d = std::env::temp_dir().join(format!(
        "mcp-stateless-cancel-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("keys");
    std::fs::write(&p, format!("alice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

/// A stateless proxy whose request deadline passes during the test.
async fn stateless_with_deadline() -> Proxy {
    Proxy::start(&["--stateless", "--request-timeout", "1500ms"]).await
}

/// The child heard of the call dropped at `started` at once, and only
/// once: past the request's deadline, nothing cancels it again.
async fn assert_cancelled_once(proxy: Proxy, started: Instant) {
    let seen = cancellations_within_prompt(&proxy, None, 1).await;
    assert_eq!(seen.len(), 1, "the child was not told: {seen:?}");
    assert_matched(&seen);
    tokio::time::sleep(
        (started + Duration::from_millis(2000)).saturating_duration_since(Instant::now()),
    )
    .await;
    let seen = cancellations(&proxy, None).await;
    assert_eq!(seen.len(), 1, "cancelled more than once: {seen:?}");
    proxy.stop().await;
}

/// Regression: a stateless JSON POST dropped mid-call was forgotten by the
/// proxy and never cancelled at the child, not even at `--request-timeout`.
/// Now the child hears of it at once, and only once (the timeout that
/// would have passed later cancels nothing more).
#[tokio::test]
async fn a_dropped_stateless_json_call_is_cancelled_at_the_child_once() {
    let proxy = stateless_with_deadline().await;
    let started = Instant::now();
    let held = hold(post(&proxy, None, &sleep("j"), "application/json"));
    tokio::time::sleep(SETTLE).await;
    held.abort();
    assert_cancelled_once(proxy, started).await;
}

/// Regression: the same for an SSE answer. A stateless stream has no event
/// ids and no session to resume it from, so once dropped nobody can get
/// the answer.
#[tokio::test]
async fn a_dropped_stateless_sse_call_is_cancelled_at_the_child_once() {
    let proxy = stateless_with_deadline().await;
    let started = Instant::now();
    drop(open_sse(&proxy, None, &progress("s")).await);
    assert_cancelled_once(proxy, started).await;
}

/// Regression: a stateless client's `notifications/cancelled` for its own
/// call in flight got 202 and never reached the child. Now it reaches the
/// child with the id the child saw; the cancelled call's stream ends
/// without an answer, and its JSON wait gets "request cancelled".
#[tokio::test]
async fn a_stateless_client_cancels_its_own_call() {
    let proxy = Proxy::start(&["--stateless"]).await;
    let mut stream = open_sse(&proxy, None, &progress("x")).await;
    let r = post(
        &proxy,
        None,
        &cancel("x"),
        "application/json, text/event-stream",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let seen = cancellations_within_prompt(&proxy, None, 1).await;
    assert_eq!(
        seen.len(),
        1,
        "the cancellation did not reach the child: {seen:?}"
    );
    assert_matched(&seen);
    // What was on its way may still come; then the stream ends, unanswered.
    let rest = async {
        while let Some(ev) = stream.next().await {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(v["method"], "notifications/progress", "{v}");
        }
    };
    tokio::time::timeout(STEP, rest)
        .await
        .expect("the cancelled call's stream ends");

    let held = hold(post(&proxy, None, &sleep("y"), "application/json"));
    tokio::time::sleep(SETTLE).await;
    let r = post(&proxy, None, &cancel("y"), "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer = tokio::time::timeout(STEP, held)
        .await
        .expect("the cancelled call's POST ends")
        .unwrap()
        .expect("a JSON body");
    assert_eq!(answer["id"], "y", "{answer}");
    assert_eq!(answer["error"]["code"], -32800, "{answer}");
    let seen = cancellations_within_prompt(&proxy, None, 2).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_matched(&seen);
    proxy.stop().await;
}

/// A cancellation naming another principal's request, a request of no one,
/// or an id two of the principal's requests share does nothing: 202, and
/// the child hears nothing. The owner's own cancellation then works.
#[tokio::test]
async fn a_stateless_cancellation_reaches_only_its_principals_unambiguous_request() {
    let keys = key_file("principals");
    let proxy = Proxy::start(&["--stateless", "--api-key-file", &keys]).await;
    let mut alices = open_sse(&proxy, Some(KEY_A), &progress("x")).await;
    for (key, id) in [(KEY_B, "x"), (KEY_A, "nobody")] {
        let r = post(&proxy, Some(key), &cancel(id), "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert!(r.bytes().await.unwrap().is_empty(), "a 202 has no body");
    }
    tokio::time::sleep(PROMPT).await;
    assert_eq!(
        cancellations(&proxy, Some(KEY_A)).await,
        Vec::<Value>::new()
    );
    // Alice's call goes on.
    let more: Value =
        serde_json::from_str(&alices.next().await.expect("more progress").data).unwrap();
    assert_eq!(more["method"], "notifications/progress", "{more}");

    // Two of Bob's calls under one id: which one a cancellation means is
    // not known, so neither is cancelled.
    let mut bob1 = open_sse(&proxy, Some(KEY_B), &progress("dup")).await;
    let mut bob2 = open_sse(&proxy, Some(KEY_B), &progress("dup")).await;
    let r = post(&proxy, Some(KEY_B), &cancel("dup"), "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(PROMPT).await;
    assert_eq!(
        cancellations(&proxy, Some(KEY_A)).await,
        Vec::<Value>::new()
    );
    for s in [&mut bob1, &mut bob2] {
        let more: Value =
            serde_json::from_str(&s.next().await.expect("more progress").data).unwrap();
        assert_eq!(more["method"], "notifications/progress", "{more}");
    }

    let r = post(&proxy, Some(KEY_A), &cancel("x"), "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let seen = cancellations_within_prompt(&proxy, Some(KEY_A), 1).await;
    assert_eq!(
        seen.len(),
        1,
        "the owner's cancellation did not reach the child: {seen:?}"
    );
    assert_matched(&seen);
    drop((bob1, bob2));
    proxy.stop().await;
}

/// The session-era promise stands: a session's dropped POST stream is no
/// cancellation (it has event ids; the client may resume it), in both
/// per-session and shared mode.
#[tokio::test]
async fn a_dropped_session_stream_is_still_not_a_cancellation() {
    for flags in [&[][..], &["--shared"][..]] {
        let proxy = Proxy::start(flags).await;
        let mut c = support::Client::new(&proxy.mcp());
        c.initialize("2025-11-25", json!({})).await;
        let r = c.post(&progress("p")).await;
        let mut s = SseStream::new(r);
        let first = s.next().await.unwrap();
        assert!(first.id.is_some(), "session-era events carry ids");
        drop(s);
        tokio::time::sleep(PROMPT).await;
        let seen = support::text_of(&c.call(json!("q"), "cancelled", json!({})).await);
        assert_eq!(seen, "[]", "{flags:?}");
        proxy.stop().await;
    }
}
