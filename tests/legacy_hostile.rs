//! The legacy HTTP+SSE transport (2024-11-05) against clients that misuse
//! it: one that never reads its stream, one that leaves with calls in flight.

mod support;

use serde_json::json;
use support::{Proxy, STEP, legacy_session};

/// Regression: a legacy client that opened its stream and never read it
/// could make the proxy hold every answer it asked for: responses on the
/// one legacy stream were queued whatever their size (`--max-queue-bytes`
/// counted notifications only, and an answer passed on as the child wrote
/// it counted only its first bytes), up to 2 × `--max-queue` events, so 400
/// calls of 1 MiB each held 513 MiB in the proxy, and a client asking for
/// larger answers could exhaust its memory. The session now ends when the
/// answers waiting for the client pass `--max-queue-bytes`: its POSTs get
/// 404, and its stream ends once what was queued is read.
#[tokio::test]
async fn a_legacy_client_that_never_reads_is_cut_off_past_the_queue_bytes() {
    let proxy = Proxy::start(&["--max-queue-bytes", "1M"]).await;
    let (mut stream, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| post_status(&http, &post_url, body);
    // 64 MiB of answers, whole events and ones passed on in pieces, far
    // more than the socket buffers between the proxy and this client hold.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..400 {
        let bytes = if i % 2 == 0 { 256 * 1024 } else { 64 * 1024 };
        let status = post(json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"large","arguments":{"bytes":bytes}}})).await;
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(
        statuses
            .keys()
            .copied()
            .filter(|s| *s != 202 && *s != 404)
            .count(),
        0,
        "{statuses:?}"
    );
    // The session ends: a later POST is told so.
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        last = post(json!({"jsonrpc":"2.0","id":"p","method":"ping"})).await;
        if last == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, 404,
        "the session of a client that never reads stays open: {statuses:?}"
    );
    // What was queued before the cut is still there to read, then the stream ends.
    let mut events = 0;
    while stream.next().await.is_some() {
        events += 1;
    }
    assert!(events < 400, "every answer was kept: {events}");
    assert_eq!(proxy.health().await["sessions"], 0);
    proxy.stop().await;
}

/// POSTs `body` to a legacy session's message URL; the status.
async fn post_status(http: &reqwest::Client, url: &str, body: serde_json::Value) -> u16 {
    tokio::time::timeout(STEP, http.post(url).json(&body).send())
        .await
        .expect("POST answered in time")
        .unwrap()
        .status()
        .as_u16()
}

/// The `notifications/cancelled` a shared child has seen, as a streamable
/// session on it reports them (the `cancelled` tool), once some arrived.
async fn cancellations_seen(c: &support::Client) -> serde_json::Value {
    let mut seen = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        let r = c.call(json!("probe"), "cancelled", json!({})).await;
        seen = serde_json::from_str(&support::text_of(&r)).unwrap();
        if seen.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    seen
}

/// Regression: on a shared child, a session that ended with a call in
/// flight (its legacy stream closed, or a DELETE) left the call running
/// in the child: its request was forgotten, never cancelled, though no one
/// could ever get its answer. A client opening a stream, starting a long
/// call and leaving, again and again, piled work on the child that every
/// other session shares, and `--max-in-flight` no longer counted it. The
/// child now gets `notifications/cancelled` for each such call.
#[tokio::test]
async fn a_session_ending_with_calls_in_flight_cancels_them_at_a_shared_child() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut other = support::Client::new(&proxy.mcp());
    other.accept = "application/json";
    other.initialize("2025-11-25", json!({})).await;

    // A legacy client starts a long call, then closes its stream.
    let (stream, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let r = http
        .post(&post_url)
        .json(&json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":600000}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The call is in the child once the child has answered what followed it.
    let r = http
        .post(&post_url)
        .json(&json!({"jsonrpc":"2.0","id":"ping","method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut stream = stream;
    let pong = stream.next_json().await;
    assert_eq!(pong["id"], "ping", "{pong}");
    drop(stream);
    let seen = cancellations_seen(&other).await;
    assert_eq!(
        seen.as_array().map(Vec::len),
        Some(1),
        "the child was never told of the call nobody can get the answer of: {seen}"
    );
    assert_eq!(seen[0]["matched"], true, "{seen}");

    // The same for a streamable session ended by DELETE while its call runs.
    let mut gone = support::Client::new(&proxy.mcp());
    gone.accept = "application/json";
    gone.initialize("2025-11-25", json!({})).await;
    let caller = gone.sibling("application/json");
    let call = tokio::spawn(async move {
        caller
            .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":600000}}}))
            .await
            .status()
    });
    // Wait until the call is in flight: a ping sent after it has come back.
    let _ = gone.request(json!("ping"), "ping", json!({})).await;
    assert_eq!(gone.delete(&proxy.mcp()).await.status(), 200);
    let mut seen = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        seen = cancellations_seen(&other).await;
        if seen.as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen.as_array().map(Vec::len), Some(2), "{seen}");
    assert_eq!(seen[1]["matched"], true, "{seen}");
    let _ = tokio::time::timeout(STEP, call).await;
    proxy.stop().await;
}

/// Regression: notifications for a legacy client that did not read its
/// stream were dropped once `--max-queue`/`--max-queue-bytes` were
/// reached, and the client was never told: progress, log messages and
/// server-to-client requests vanished while its session carried on, and a
/// dropped request left the child waiting for an answer. The legacy stream
/// cannot resume, so such a client is now cut off like one that lets its
/// answers pile up: its session ends, which it sees.
#[tokio::test]
async fn a_legacy_client_that_never_reads_its_notifications_is_cut_off() {
    let proxy = Proxy::start(&["--max-queue-bytes", "64K"]).await;
    let (mut stream, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| post_status(&http, &post_url, body);
    // Progress, megabytes a second of it, far more than the socket buffers
    // hold; no call ends (so no answer comes) within the test.
    // The first call's flood may fill the queue before the twentieth is
    // posted: a 404 then is the cut this test waits for (a faster proxy
    // gets there sooner; the first call must be taken, though).
    let mut last = 0;
    for n in 0..20 {
        let call = json!({"jsonrpc":"2.0","id":n,"method":"tools/call","params":{
            "name":"progress","arguments":{"steps":600000,"delay_ms":0},
            "_meta":{"progressToken":n}}});
        last = post(call).await;
        if n > 0 && last == 404 {
            break;
        }
        assert_eq!(last, 202, "call {n}");
    }
    // Probed with a notification: it has no answer that could count.
    let deadline = tokio::time::Instant::now() + STEP;
    while last != 404 && tokio::time::Instant::now() < deadline {
        last = post(json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})).await;
        if last == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, 404,
        "the session stayed while its notifications were dropped"
    );
    // What was queued is there to read, then the stream ends.
    while stream.next().await.is_some() {}
    proxy.stop().await;
}

/// Regression: on a shared child, the child's request to a session
/// (`roots/list` during its call) stayed unanswered forever when that
/// session ended before answering: the proxy forgot it without a word, so
/// the child kept waiting for an answer no one would send (here even after
/// the call itself was cancelled). It now gets an error at once, as when no
/// session could take the request at all.
#[tokio::test]
async fn a_shared_childs_request_to_a_session_that_ends_gets_an_error() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut other = support::Client::new(&proxy.mcp());
    other.accept = "application/json";
    other.initialize("2025-11-25", json!({})).await;
    let unanswered = |c: &support::Client| {
        let c = c.sibling("application/json");
        async move { support::text_of(&c.call(json!("u"), "unanswered", json!({})).await) }
    };

    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/sse", proxy.base()))
        .send()
        .await
        .unwrap();
    let mut stream = support::SseStream::new(resp);
    let endpoint = stream.next().await.expect("the endpoint event");
    let post_url = format!("{}{}", proxy.base(), endpoint.data);
    for body in [
        json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{"roots":{}},"clientInfo":{"name":"t","version":"1"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":"r","method":"tools/call","params":{"name":"roots","arguments":{}}}),
    ] {
        let r = http.post(&post_url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(stream.next_json().await["id"], "init");
    let ask = stream.next_json().await;
    assert_eq!(ask["method"], "roots/list", "{ask}");
    assert_eq!(unanswered(&other).await, "1");
    // The legacy client leaves without answering.
    drop(stream);
    let mut waiting = String::new();
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        waiting = unanswered(&other).await;
        if waiting == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting, "0",
        "the child still waits for the session that left"
    );
    proxy.stop().await;
}

/// Regression: once answers counted against `--max-queue-bytes` on the
/// legacy stream, the unread rest of one long answer counted too, so a
/// client reading a long answer (a screenshot, say) more slowly than the
/// child wrote it was cut off, its session ended, by the next small answer
/// or progress notification. The latest long answer is the one that always
/// fits: only what piles up beside it counts.
#[tokio::test]
async fn one_long_answer_read_slowly_does_not_cut_a_legacy_client_off() {
    let proxy = Proxy::start(&["--max-queue-bytes", "64K"]).await;
    let (mut stream, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| post_status(&http, &post_url, body);
    // 8 MB, more than the socket buffers hold while this client does not
    // read yet; then a small answer behind it.
    let big = json!({"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"large","arguments":{"bytes":8_000_000}}});
    assert_eq!(post(big).await, 202);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        post(json!({"jsonrpc":"2.0","id":"small","method":"ping"})).await,
        202
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        post(json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})).await,
        202,
        "the session ended under a client reading one long answer"
    );
    // The client reads: both answers arrive.
    let first = stream.next().await.expect("the long answer");
    assert!(first.data.contains(r#""id":"big""#) && first.data.len() > 8_000_000);
    let second = stream.next_json().await;
    assert_eq!(second["id"], "small", "{second}");
    proxy.stop().await;
}

/// Regression: a legacy session never recorded the protocol version it
/// negotiated (a session-era one does, at `initialize`), so nothing could
/// hold it to that version: its POSTs took JSON-RPC batches whatever it
/// negotiated, where `/mcp` takes them only in a 2025-03-26 session
/// (batching exists in that revision alone). Now the version is recorded
/// from the initialize answer, and a legacy batch follows the same rule.
#[tokio::test]
async fn a_legacy_session_batches_only_when_it_negotiated_2025_03_26() {
    let proxy = Proxy::start(&[]).await;
    let http = reqwest::Client::new();
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"ping"},
        {"jsonrpc":"2.0","id":"b","method":"ping"}
    ]);
    // 2024-11-05: refused, as on /mcp.
    let (_stream, post_url) = legacy_session(&proxy).await;
    assert_eq!(post_status(&http, &post_url, batch.clone()).await, 400);
    // 2025-03-26 over the legacy transport: split, each answered.
    let (mut stream, post_url) = support::legacy_session_at(&proxy, "2025-03-26").await;
    assert_eq!(post_status(&http, &post_url, batch).await, 202);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let ev = stream.next().await.expect("an answer of the batch");
        let m: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    proxy.stop().await;
}
