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
    let post = |body: serde_json::Value| {
        let req = http.post(&post_url).json(&body).send();
        async move {
            tokio::time::timeout(STEP, req)
                .await
                .expect("POST answered in time")
                .unwrap()
                .status()
                .as_u16()
        }
    };
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
