//! Streamable HTTP with sessions (2025-03-26 … 2025-11-25), over raw HTTP,
//! against the proxy in-process and a real `everything` child per session.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, Proxy, STEP, SseStream, alive, eventually, read_messages, reaped, text_of};

#[tokio::test]
async fn initialize_mints_a_session_and_tools_work_over_sse_and_json() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    let init = c.initialize("2025-06-18", json!({})).await;
    assert_eq!(init["protocolVersion"], "2025-06-18");
    assert_eq!(init["serverInfo"]["name"], "everything");
    let sid = c.session.clone().unwrap();
    assert_eq!(sid.len(), 32);
    assert!(sid.bytes().all(|b| (0x21..=0x7e).contains(&b)));

    let r = c
        .call(json!(1), "echo", json!({"message": "over sse"}))
        .await;
    assert_eq!(text_of(&r), "over sse");
    c.accept = "application/json";
    let resp = c.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":40}}})).await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(
        resp.headers().get("mcp-session-id").is_none(),
        "session id only on initialize"
    );
    assert_eq!(text_of(&read_messages(resp).await[0]), "42");
    proxy.stop().await;
}

#[tokio::test]
async fn ids_come_back_byte_exact() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    for id in [
        r#""1""#,
        "1",
        "12345678901234567890123",
        "-7",
        r#""ü-ñ""#,
        "0",
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"x"}}}}}}"#
        );
        let resp = c.post_raw(body.into_bytes()).await;
        let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
        assert!(
            text.contains(&format!(r#""id":{id}"#)),
            "id {id} not echoed exactly in {text}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn notifications_and_responses_get_202_with_an_empty_body() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c
        .post(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}))
        .await;
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":"unknown-server-request","result":{}}))
        .await;
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn session_errors_are_400_for_missing_and_404_for_unknown() {
    let proxy = Proxy::start(&[]).await;
    let c = Client::new(&proxy.mcp());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("mcp-session-id").is_none());
    let mut c2 = Client::new(&proxy.mcp());
    c2.session = Some("0123456789abcdef0123456789abcdef".into());
    let r = c2
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn delete_ends_the_session_and_stops_its_child() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let pid: u32 = text_of(&c.call(json!(1), "pid", json!({})).await)
        .parse()
        .unwrap();
    assert!(alive(pid));
    assert_eq!(c.delete(&proxy.mcp()).await.status(), 200);
    assert!(
        eventually(STEP, || !alive(pid)).await,
        "child {pid} still running after DELETE"
    );
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 404);
    proxy.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_parse_and_invalid_request_errors() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c.post_raw(b"{not json".to_vec()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32700);
    for bad in [
        json!({"hello":"world"}),
        json!({"jsonrpc":"2.0","id":null,"method":"x"}),
        json!(42),
    ] {
        let r = c.post(&bad).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            -32600,
            "{bad}"
        );
    }
    let r = c
        .http
        .post(proxy.mcp())
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    proxy.stop().await;
}

#[tokio::test]
async fn accept_is_negotiated_leniently() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}});
    for (accept, want) in [
        ("text/event-stream", Some("text/event-stream")),
        ("application/json", Some("application/json")),
        ("*/*", Some("text/event-stream")),
        ("text/html", None),
    ] {
        c.accept = accept;
        let r = c.post(&call).await;
        match want {
            Some(ct) => {
                assert_eq!(r.status(), 200, "{accept}");
                assert_eq!(r.headers()["content-type"], ct, "{accept}");
                assert_eq!(text_of(read_messages(r).await.last().unwrap()), "m");
            }
            None => assert_eq!(r.status(), 406, "{accept}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let proxy = Proxy::start(&["--max-body-bytes", "1K"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c.call_raw_big().await;
    assert_eq!(r, 413);
    proxy.stop().await;
}

trait BigCall {
    async fn call_raw_big(&self) -> u16;
}

impl BigCall for Client {
    async fn call_raw_big(&self) -> u16 {
        let big = "x".repeat(4096);
        self.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":big}}})).await.status().as_u16()
    }
}

#[tokio::test]
async fn batches_are_split_for_2025_03_26_and_refused_later() {
    let proxy = Proxy::start(&[]).await;
    let mut old = Client::new(&proxy.mcp());
    old.initialize("2025-03-26", json!({})).await;
    old.accept = "application/json";
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"message":"first"}}},
        {"jsonrpc":"2.0","method":"notifications/roots/list_changed"},
        {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}
    ]);
    let r = old.post(&batch).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let arr = v.as_array().expect("batch answer is an array");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], "a");
    assert_eq!(text_of(&arr[1]), "2");
    let only_notes = json!([{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}]);
    assert_eq!(old.post(&only_notes).await.status(), 202);
    // Regression (fuzz `frame`): an array inside a batch was read as a
    // request by position, passed on, skipped by the child, and its
    // client waited for ever.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        old.post(&json!([["2.0", 7, "tools/list"]])),
    )
    .await
    .expect("an answer, not a wait");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");

    let mut new = Client::new(&proxy.mcp());
    new.initialize("2025-06-18", json!({})).await;
    let r = new.post(&batch).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
    assert!(v.get("id").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn protocol_version_header_must_name_a_supported_revision() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-06-18", json!({})).await;
    // Another supported session-era revision is accepted: the spec's 400
    // is for invalid or unsupported values, and the official conformance
    // suite sends 2025-03-26 on 2025-11-25 sessions.
    c.version = "2025-11-25".into();
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await
            .status(),
        200
    );
    c.version = "1999-01-01".into();
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 400);
    // Session-era errors must not look like 2026-07-28 ones (dual-era clients fall back on them).
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32600);
    c.version = "2025-06-18".into();
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await
            .status(),
        200
    );
    proxy.stop().await;
}

#[tokio::test]
async fn progress_reaches_the_post_stream_with_the_clients_token() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let msgs = c.request(json!(9), "tools/call", json!({"name":"progress","arguments":{"steps":3,"delay_ms":5},"_meta":{"progressToken":"my-token"}})).await;
    assert_eq!(msgs.len(), 4);
    for (i, m) in msgs[..3].iter().enumerate() {
        assert_eq!(m["method"], "notifications/progress");
        assert_eq!(m["params"]["progressToken"], "my-token");
        assert_eq!(m["params"]["progress"], i as u64 + 1);
    }
    assert_eq!(msgs[3]["id"], 9);
    proxy.stop().await;
}

#[tokio::test]
async fn sampling_request_travels_on_the_post_stream_and_the_answer_returns() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"sampling": {}})).await;
    let resp = c.post(&json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"hello"}}})).await;
    let mut stream = SseStream::new(resp);
    let req = stream.next_json().await;
    assert_eq!(req["method"], "sampling/createMessage");
    let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"sampled!"},"model":"m"}});
    assert_eq!(c.post(&answer).await.status(), 202);
    let result = stream.next_json().await;
    assert_eq!(result["id"], 5);
    assert_eq!(text_of(&result), "sampled!");
    assert!(
        stream.next().await.is_none(),
        "stream ends after the response"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn server_request_with_no_stream_to_carry_it_fails_fast_instead_of_hanging() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"sampling": {}})).await;
    c.accept = "application/json";
    let started = std::time::Instant::now();
    let r = c.call(json!(1), "sample", json!({"prompt":"x"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

/// Regression: two GETs at once on a new session both got a stream of
/// their own, and one of them stayed open and received nothing.
#[tokio::test]
async fn concurrent_gets_on_one_session_share_one_stream_and_none_is_left_silent() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let get = || {
        c.http
            .get(proxy.mcp())
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.as_ref().unwrap())
            .send()
    };
    let (a, b, d, e) = tokio::join!(get(), get(), get(), get());
    let mut streams = Vec::new();
    for r in [a, b, d, e] {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(SseStream::new(r));
    }
    c.call(
        json!(1),
        "notify",
        json!({"method":"notifications/tools/list_changed"}),
    )
    .await;
    // Each stream either carries the notification or has ended (replaced
    // by a later GET); one left open without it fails the wait.
    let mut got = 0;
    for s in &mut streams {
        if let Some(ev) = s.next().await {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(v["method"], "notifications/tools/list_changed");
            got += 1;
        }
    }
    assert_eq!(got, 1, "exactly one stream is live and carries it");
    proxy.stop().await;
}

#[tokio::test]
async fn get_stream_carries_unsolicited_messages_and_a_second_get_replaces_the_first() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let get = |c: &Client| {
        c.http
            .get(proxy.mcp())
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.as_ref().unwrap())
            .send()
    };
    let first = get(&c).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-cache, no-transform");
    assert_eq!(first.headers()["x-accel-buffering"], "no");
    let mut first = SseStream::new(first);
    c.call(
        json!(1),
        "notify",
        json!({"method":"notifications/tools/list_changed"}),
    )
    .await;
    assert_eq!(
        first.next_json().await["method"],
        "notifications/tools/list_changed"
    );

    let second = get(&c).await.unwrap();
    assert_eq!(second.status(), 200, "no 409 for a second GET");
    let mut second = SseStream::new(second);
    assert!(first.next().await.is_none(), "the replaced stream ends");
    c.call(
        json!(2),
        "notify",
        json!({"method":"notifications/prompts/list_changed"}),
    )
    .await;
    assert_eq!(
        second.next_json().await["method"],
        "notifications/prompts/list_changed"
    );

    let r = c
        .http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "GET without a session");
    proxy.stop().await;
}

#[tokio::test]
async fn sse_streams_send_keep_alive_comments() {
    let proxy = Proxy::start(&["--keep-alive", "100ms"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let resp = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":450}}})).await;
    let mut s = SseStream::new(resp);
    let r = s.next_json().await;
    assert_eq!(text_of(&r), "slept 450");
    assert!(s.comments >= 2, "only {} keep-alive comments", s.comments);
    proxy.stop().await;
}

#[tokio::test]
async fn sessions_have_separate_children_and_state() {
    let proxy = Proxy::start(&[]).await;
    let mut a = Client::new(&proxy.mcp());
    let mut b = Client::new(&proxy.mcp());
    a.initialize("2025-11-25", json!({})).await;
    b.initialize("2025-11-25", json!({})).await;
    a.call(json!(1), "set_state", json!({"value":"alice's secret"}))
        .await;
    assert_eq!(text_of(&b.call(json!(1), "get_state", json!({})).await), "");
    assert_eq!(
        text_of(&a.call(json!(2), "get_state", json!({})).await),
        "alice's secret"
    );
    let pa = text_of(&a.call(json!(3), "pid", json!({})).await);
    let pb = text_of(&b.call(json!(3), "pid", json!({})).await);
    assert_ne!(pa, pb);
    assert_eq!(proxy.health().await["sessions"], 2);
    proxy.stop().await;
}

#[tokio::test]
async fn child_crash_fails_in_flight_requests_and_the_session_answers_404() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let pid: u32 = text_of(&c.call(json!("pid"), "pid", json!({})).await)
        .parse()
        .unwrap();
    let grandchild: u32 = text_of(&c.call(json!("gc"), "spawn_grandchild", json!({})).await)
        .parse()
        .unwrap();
    let slow_body = json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000}}});
    let slow = c.post(&slow_body);
    let crash = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.post(&json!({"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{"code":3}}})).await
    };
    let (slow, crash) = tokio::join!(slow, crash);
    let started = std::time::Instant::now();
    let slow = read_messages(slow).await;
    assert_eq!(slow[0]["id"], "slow");
    assert_eq!(slow[0]["error"]["code"], -32000);
    assert!(
        slow[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit code 3"),
        "{}",
        slow[0]
    );
    assert_eq!(read_messages(crash).await[0]["error"]["code"], -32000);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Neither a zombie of the crashed child nor an orphan of its group is left.
    assert!(
        eventually(STEP, || reaped(pid)).await,
        "child {pid} not reaped"
    );
    assert!(
        eventually(STEP, || !alive(grandchild)).await,
        "grandchild {grandchild} outlived the crashed child"
    );
    let mut gone = false;
    for _ in 0..100 {
        if c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await
            .status()
            == 404
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "session of a dead child must answer 404");
    let mut fresh = Client::new(&proxy.mcp());
    fresh.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        text_of(
            &fresh
                .call(json!(1), "echo", json!({"message":"alive"}))
                .await
        ),
        "alive"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_on_stdout_and_a_stderr_flood_do_not_break_the_session() {
    let proxy = Proxy::start_child(&[], &support::example("everything"), &["--banner"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    assert!(!text_of(&c.call(json!(1), "garbage", json!({})).await).is_empty());
    // 2 MB of stderr: far beyond a pipe buffer; the child would block if nobody drained it.
    let r = c
        .call(
            json!(2),
            "stderr",
            json!({"lines":2000,"bytes_per_line":1000}),
        )
        .await;
    assert_eq!(text_of(&r), "ok");
    // One 1 MB stderr line: read with a cap, skipped with a note.
    let r = c
        .call(
            json!(4),
            "stderr",
            json!({"lines":1,"bytes_per_line":1_000_000}),
        )
        .await;
    assert_eq!(text_of(&r), "ok");
    assert_eq!(
        text_of(
            &c.call(json!(3), "echo", json!({"message":"still fine"}))
                .await
        ),
        "still fine"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_line_over_the_cap_fails_its_request_and_keeps_the_child() {
    let proxy = Proxy::start(&["--max-line-bytes", "64K"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c.call(json!(1), "large", json!({"bytes": 200_000})).await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max-line-bytes")
    );
    assert_eq!(
        text_of(&c.call(json!(2), "large", json!({"bytes": 1000})).await).len(),
        1000
    );
    proxy.stop().await;
}

#[tokio::test]
async fn large_results_pass_intact() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c
        .call(json!(1), "large", json!({"bytes": 8 * 1024 * 1024}))
        .await;
    assert_eq!(text_of(&r).len(), 8 * 1024 * 1024);
    proxy.stop().await;
}

#[tokio::test]
async fn session_limit_answers_503_with_a_clear_message() {
    let proxy = Proxy::start(&["--max-sessions", "2"]).await;
    let mut a = Client::new(&proxy.mcp());
    let mut b = Client::new(&proxy.mcp());
    a.initialize("2025-11-25", json!({})).await;
    b.initialize("2025-11-25", json!({})).await;
    let c = Client::new(&proxy.mcp());
    let r = c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.text().await.unwrap().contains("max-sessions"));
    proxy.stop().await;
}

#[tokio::test]
async fn client_cancellation_reaches_the_child_with_its_own_id() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let slow_body = json!({"jsonrpc":"2.0","id":"to-cancel","method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000}}});
    let slow = c.post(&slow_body);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"to-cancel","reason":"changed my mind"}})).await
    };
    let (slow, cancel) = tokio::join!(slow, cancel);
    assert_eq!(cancel.status(), 202);
    // The POST stream closes without a response: the client cancelled it.
    let msgs = read_messages(slow).await;
    assert!(msgs.is_empty(), "{msgs:?}");
    let seen = text_of(&c.call(json!(2), "cancelled", json!({})).await);
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(
        seen[0]["matched"], true,
        "the child must see its own id for the request: {seen}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_dropped_post_stream_can_be_resumed_with_last_event_id() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let resp = c.post(&json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"progress","arguments":{"steps":4,"delay_ms":150},"_meta":{"progressToken":1}}})).await;
    let mut s = SseStream::new(resp);
    let first = s.next().await.unwrap();
    let last_id = first.id.clone().expect("events carry ids");
    drop(s); // the client goes away mid-request; that is not a cancellation
    tokio::time::sleep(Duration::from_millis(800)).await;
    let resumed = c.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let msgs = read_messages(resumed).await;
    assert_eq!(
        msgs.len(),
        4,
        "3 missed progress events and the response: {msgs:?}"
    );
    assert_eq!(msgs[0]["params"]["progress"], 2);
    assert_eq!(msgs[3]["id"], "long");
    proxy.stop().await;
}

/// Regression: a client that came back with a `Last-Event-ID` older than
/// the replay buffer keeps (`--replay-events 2`, five progress events
/// missed) got a fresh GET stream, which never carries its answer: it
/// waited forever although the answer was still kept for it. It gets what
/// is kept now, the answer included.
#[tokio::test]
async fn a_resumption_from_before_the_replay_buffer_still_gets_its_answer() {
    let proxy = Proxy::start(&["--replay-events", "2"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let resp = c.post(&json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"progress","arguments":{"steps":6,"delay_ms":20},"_meta":{"progressToken":1}}})).await;
    let mut s = SseStream::new(resp);
    let last_id = s.next().await.unwrap().id.expect("events carry ids");
    drop(s);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resumed = c.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let msgs = tokio::time::timeout(Duration::from_secs(10), read_messages(resumed))
        .await
        .expect("the resumed stream ends with its answer");
    assert_eq!(
        msgs.last().map(|m| &m["id"]),
        Some(&json!("long")),
        "{msgs:?}"
    );
    assert_eq!(text_of(msgs.last().unwrap()), "done 6");
    proxy.stop().await;
}

/// Regression: when the answer itself was no longer kept (larger than
/// `--replay-bytes`), a client resuming from before it got a fresh GET
/// stream and silence. It gets a JSON-RPC error for that request now,
/// so it knows the answer is lost (and that the call may have run).
#[tokio::test]
async fn a_resumption_whose_answer_was_not_kept_gets_an_error_for_it() {
    let proxy = Proxy::start(&["--replay-bytes", "300"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let long = "x".repeat(2000);
    let resp = c.post(&json!({"jsonrpc":"2.0","id":"lost","method":"tools/call","params":{"name":"echo","arguments":{"message":long},"_meta":{"progressToken":1}}})).await;
    // The client reads only the priming event: the answer that follows
    // is lost on its way (the proxy handed it over; the stream breaks).
    let last_id = priming_id(&resp.text().await.unwrap());
    let resumed = c.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let msgs = tokio::time::timeout(Duration::from_secs(10), read_messages(resumed))
        .await
        .expect("the resumed stream ends");
    let last = msgs.last().expect("a message for the lost answer");
    assert_eq!(last["id"], "lost", "{msgs:?}");
    let message = last["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("replay"), "{last}");
    // A second resumption from the same point gets the same error again,
    // not a duplicate of it beside anything else.
    let again = c.resume(&last_id).await;
    let msgs = tokio::time::timeout(Duration::from_secs(10), read_messages(again))
        .await
        .expect("the second resumed stream ends");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["id"], "lost");
    proxy.stop().await;
}

/// The id of the priming event a whole stream's `text` starts with.
fn priming_id(text: &str) -> String {
    let prime = text.split("\n\n").next().unwrap();
    assert!(prime.ends_with("data: "), "a priming event first: {prime}");
    prime
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("the prime carries an id")
        .to_string()
}

/// What a resumption after `last_id` brings, to the stream's end.
async fn resumed_messages(c: &Client, last_id: &str) -> Vec<Value> {
    let resumed = c.resume(last_id).await;
    assert_eq!(resumed.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), read_messages(resumed))
        .await
        .expect("the resumed stream ends")
}

/// `msgs` is one message for request `id`: its echo of `text` when the
/// answer was `kept`, else the lost-answer error.
fn assert_answered_or_lost(msgs: &[Value], id: &str, text: &str, kept: bool, case: &str) {
    assert_eq!(msgs.len(), 1, "{case}: {msgs:?}");
    assert_eq!(msgs[0]["id"], id, "{case}");
    if kept {
        assert_eq!(
            msgs[0]["result"]["content"][0]["text"], text,
            "{case}: {msgs:?}"
        );
    } else {
        let message = msgs[0]["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("lost"), "{case}: {msgs:?}");
    }
}

/// Regression: an answer the proxy handed to a connection that dropped
/// before the client read it was released with its stream's buffer, so
/// the client, back with `Last-Event-ID`, got an error (-32000, "the
/// answer to this request was lost") for a call that had succeeded. The
/// finished stream's buffer now lingers (`--replay-linger`, 10 s).
#[tokio::test]
async fn an_answer_lost_on_a_dropped_connection_is_replayed_whole() {
    for (flags, kept) in [(&[][..], true), (&["--replay-linger", "0"][..], false)] {
        let proxy = Proxy::start(flags).await;
        let mut c = Client::new(&proxy.mcp());
        c.initialize("2025-11-25", json!({})).await;
        let resp = c.post(&json!({"jsonrpc":"2.0","id":"dropped","method":"tools/call","params":{"name":"echo","arguments":{"message":"still here"}}})).await;
        // The client keeps only the priming event: the answer that
        // followed it was on the wire when its connection dropped.
        let last_id = priming_id(&resp.text().await.unwrap());
        let msgs = resumed_messages(&c, &last_id).await;
        assert_answered_or_lost(&msgs, "dropped", "still here", kept, &format!("{flags:?}"));
        proxy.stop().await;
    }
}

/// Regression (hostile review): a session keeps 32 streams for
/// `Last-Event-ID`; once 32 newer ones had opened, an older finished one
/// was dropped from the list, and a client back for it got a fresh, empty
/// GET stream, so it waited for an answer that could never come. A
/// stream let go of now leaves a tombstone: with its buffer lingering,
/// the answer itself comes back; without, an error for it.
#[tokio::test]
async fn a_stream_let_go_of_after_32_newer_ones_still_answers_a_resumption() {
    for (flags, kept) in [(&[][..], true), (&["--replay-linger", "0"][..], false)] {
        let proxy = Proxy::start(flags).await;
        let mut c = Client::new(&proxy.mcp());
        c.initialize("2025-11-25", json!({})).await;
        let echo = |id: Value, text: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"message":text}}});
        let text = c
            .post(&echo(json!("mine"), "THE ANSWER"))
            .await
            .text()
            .await
            .unwrap();
        let last_id = priming_id(&text);
        for n in 0..40 {
            let r = c.post(&echo(json!(n), "later")).await;
            assert_eq!(r.status(), 200);
            let _ = r.text().await.unwrap();
        }
        let msgs = resumed_messages(&c, &last_id).await;
        assert_answered_or_lost(&msgs, "mine", "THE ANSWER", kept, &format!("{flags:?}"));
        proxy.stop().await;
    }
}

/// The streams a session keeps for `Last-Event-ID` (`--replay-streams`)
/// and the tombstones of those it let go of (`--replay-tombstones`,
/// `--replay-tombstone-bytes`) were constants (32, 256, 64 KiB) with no
/// flag. With 2 kept, a stream three requests back is let go of and
/// resumes from its tombstone; with no tombstone kept (or no bytes for
/// one) a client back for it gets a fresh GET stream (which stays open,
/// carrying no answer); with the 32 kept by default it is still there.
#[tokio::test]
async fn the_streams_and_tombstones_a_session_keeps_follow_their_flags() {
    let cases: [(&[&str], bool); 4] = [
        (&["--replay-streams", "2"], true),
        (&["--replay-tombstones", "0"], true),
        (
            &["--replay-streams", "2", "--replay-tombstones", "0"],
            false,
        ),
        (
            &["--replay-streams", "2", "--replay-tombstone-bytes", "0"],
            false,
        ),
    ];
    for (flags, resumes) in cases {
        let proxy = Proxy::start(flags).await;
        let mut c = Client::new(&proxy.mcp());
        c.initialize("2025-11-25", json!({})).await;
        let echo = |id: Value, text: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"message":text}}});
        let text = c
            .post(&echo(json!("mine"), "THE ANSWER"))
            .await
            .text()
            .await
            .unwrap();
        let last_id = priming_id(&text);
        for n in 0..3 {
            let r = c.post(&echo(json!(n), "later")).await;
            assert_eq!(r.status(), 200);
            let _ = r.text().await.unwrap();
        }
        let case = format!("{flags:?}");
        if resumes {
            let msgs = resumed_messages(&c, &last_id).await;
            assert_answered_or_lost(&msgs, "mine", "THE ANSWER", true, &case);
        } else {
            let resumed = c.resume(&last_id).await;
            assert_eq!(resumed.status(), 200, "{case}");
            let read = tokio::time::timeout(Duration::from_millis(1500), read_messages(resumed));
            assert!(read.await.is_err(), "{case}: a fresh GET stream stays open");
        }
        proxy.stop().await;
    }
}

/// Regression: a session keeps 32 streams for `Last-Event-ID`; when all
/// were in flight, opening one more dropped the oldest in-flight stream
/// from the list, so its client, back with `Last-Event-ID`, got a fresh
/// GET stream and never its answer (the GET stream, usually the oldest,
/// was lost the same way).
#[tokio::test]
async fn a_stream_in_flight_stays_resumable_however_many_are_open() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let first = json!({"jsonrpc":"2.0","id":"first","method":"tools/call","params":{"name":"progress","arguments":{"steps":10,"delay_ms":500},"_meta":{"progressToken":1}}});
    let mut s = SseStream::new(c.post(&first).await);
    let last_id = s.next().await.unwrap().id.expect("events carry ids");
    drop(s); // the client goes away; the call (5 s) goes on
    let sleep = |id: usize| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":8000}}});
    let bodies: Vec<Value> = (0..32).map(sleep).collect();
    let open = futures_util::future::join_all(bodies.iter().map(|b| c.post(b))).await;
    let resumed = c.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let msgs = read_messages(resumed).await;
    assert_eq!(
        msgs.last().map(|m| &m["id"]),
        Some(&json!("first")),
        "{msgs:?}"
    );
    drop(open);
    proxy.stop().await;
}

/// Regression (found by tests/chaos.rs, seed 11): a POST stream whose
/// client was cut off as too slow while the child flooded it with
/// notifications could not be resumed once more than `--replay-events`
/// had followed the cut. The GET with `Last-Event-ID` got a fresh GET
/// stream instead, which never carries the answer, so the client waited
/// for it forever. With the defaults (a queue of 1,024, 256 events kept)
/// every such cut is past the buffer too. Now the resumption goes on from
/// the oldest event kept: the notifications in the gap are lost, as on a
/// request stream without ids, and the answer arrives.
#[tokio::test]
async fn a_post_stream_cut_off_in_a_flood_resumes_to_its_answer() {
    let proxy = Proxy::start(&["--max-queue", "16", "--replay-events", "8"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.accept = "text/event-stream";
    c.initialize("2025-11-25", json!({})).await;
    let flood = json!({"jsonrpc":"2.0","id":"flood","method":"tools/call","params":{"name":"misbehave_flood","arguments":{"count":500,"bytes":100}}});
    let resp = c.post(&flood).await;
    assert_eq!(resp.status(), 200);
    // The child writes 500 notifications at once: more than the queue
    // holds, so the consumer is cut off and reads what was queued.
    let mut s = SseStream::new(resp);
    let mut last = None;
    let mut answer = None;
    while let Some(ev) = s.next().await {
        let msg: Value = serde_json::from_str(&ev.data).unwrap();
        if msg.get("id").is_some() {
            answer = Some(msg);
        }
        last = ev.id;
    }
    assert!(answer.is_none(), "the flood did not cut the consumer off");
    let mut last = last.expect("events carry ids");
    // Resumed while the flood goes on, the client may be cut off again:
    // it resumes again, as a client does, until its answer comes.
    for _ in 0..20 {
        let resumed = c.resume(&last).await;
        assert_eq!(resumed.status(), 200);
        let mut s = SseStream::new(resumed);
        let read = async {
            while let Some(ev) = s.next().await {
                let msg: Value = serde_json::from_str(&ev.data).unwrap();
                if let Some(id) = ev.id {
                    last = id;
                }
                if msg.get("id").is_some() {
                    return Some(msg);
                }
            }
            None
        };
        answer = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the resumed stream carries on, not a fresh GET stream");
        if answer.is_some() {
            break;
        }
    }
    let answer = answer.expect("the answer, within 20 resumptions");
    assert_eq!(answer["id"], "flood", "{answer}");
    assert_eq!(text_of(&answer), "flooded");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_sessions_expire() {
    let proxy = Proxy::start(&["--session-idle-timeout", "300ms"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let pid: u32 = text_of(&c.call(json!(1), "pid", json!({})).await)
        .parse()
        .unwrap();
    assert!(
        eventually(STEP, || !alive(pid)).await,
        "idle session's child still running"
    );
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await
            .status(),
        404
    );
    proxy.stop().await;
}

#[tokio::test]
async fn request_timeout_answers_with_an_error_and_cancels_at_the_child() {
    let proxy = Proxy::start(&["--request-timeout", "300ms"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c.call(json!("t"), "sleep", json!({"ms":30000})).await;
    assert_eq!(r["id"], "t");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{r}"
    );
    let seen: Value =
        serde_json::from_str(&text_of(&c.call(json!(2), "cancelled", json!({})).await)).unwrap();
    assert_eq!(seen[0]["matched"], true, "{seen}");
    proxy.stop().await;
}

#[tokio::test]
async fn origin_and_host_are_checked_and_cors_answers_browsers() {
    let proxy = Proxy::start(&["--allow-origin", "https://app.example.com"]).await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let post = |origin: &str| {
        http.post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("origin", origin)
            .json(&init)
            .send()
    };
    let r = post("http://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post("https://app.example.com").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Mcp-Session-Id")
    );
    let pre = http
        .request(reqwest::Method::OPTIONS, proxy.mcp())
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    for h in [
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "authorization",
    ] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    let r = http
        .post(proxy.mcp())
        .header("host", "attacker.example")
        .header("content-type", "application/json")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "DNS-rebinding Host on a loopback bind");
    proxy.stop().await;
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let proxy = Proxy::start(&["--api-key", "correct-horse-battery-staple"]).await;
    let mut c = Client::new(&proxy.mcp());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}))
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        "Bearer correct-horse-battery-staple".parse().unwrap(),
    );
    c.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    c.initialize("2025-11-25", json!({})).await;
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("x-api-key", "wrong-key-wrong-key")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let health = reqwest::get(format!("{}/health", proxy.base()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "probes need no key");
    assert_eq!(health.json::<Value>().await.unwrap()["auth"], "api-key");
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_paths_404_and_wrong_methods_405_with_allow() {
    let proxy = Proxy::start(&[]).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/nope", proxy.base()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = http.put(proxy.mcp()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers()["allow"].to_str().unwrap().contains("POST"));
    let r = http
        .get(format!("{}/ready", proxy.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn post_streams_are_primed_only_for_2025_11_25_sessions() {
    let proxy = Proxy::start(&[]).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}});
    let mut new = Client::new(&proxy.mcp());
    new.initialize("2025-11-25", json!({})).await;
    let text = new.post(&call).await.text().await.unwrap();
    assert!(
        text.starts_with("id: 1-0\ndata: \n\n"),
        "priming event first: {text:?}"
    );
    let mut old = Client::new(&proxy.mcp());
    old.initialize("2025-06-18", json!({})).await;
    let text = old.post(&call).await.text().await.unwrap();
    assert!(
        !text.contains("data: \n"),
        "no empty data for older clients: {text:?}"
    );
    assert!(text.contains("\"text\":\"m\""));
    proxy.stop().await;
}

/// Regression: whether a session's POST streams begin with a priming
/// event (an empty `data:`, which clients before 2025-11-25 choke on) was
/// decided by comparing the version the child answered with
/// `"2025-11-25"` as strings, so a child answering a version that is no
/// date (`draft`) sorted after it and got its client's streams primed.
#[tokio::test]
async fn a_child_answering_a_version_that_is_no_date_gets_no_priming_events() {
    let script = format!(
        r#"'{}' | sed -u 's/"protocolVersion":"2025-11-25"/"protocolVersion":"draft"/'"#,
        support::example("everything")
    );
    let proxy = Proxy::start_child(&[], "sh", &["-c", &script]).await;
    let mut c = Client::new(&proxy.mcp());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 200);
    c.session = Some(r.headers()["mcp-session-id"].to_str().unwrap().to_string());
    let answer = read_messages(r).await;
    assert_eq!(
        answer[0]["result"]["protocolVersion"], "draft",
        "{answer:?}"
    );
    c.version = "2025-11-25".into();
    let r = c
        .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .await;
    assert_eq!(r.status(), 202);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}});
    let text = c.post(&call).await.text().await.unwrap();
    assert!(text.contains("\"text\":\"m\""), "{text:?}");
    assert!(!text.contains("data: \n"), "no priming event: {text:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_over_long_answer_fails_its_own_request_while_others_are_in_flight() {
    let proxy = Proxy::start(&["--max-line-bytes", "64K"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let slow = c.call(json!("slow"), "sleep", json!({"ms": 1500}));
    let large = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let r = c
            .call(json!("large"), "large", json!({"bytes": 200_000}))
            .await;
        (r, started.elapsed())
    };
    let (slow, (large, took)) = tokio::join!(slow, large);
    // The dropped line's id was read from its first bytes, so the answer
    // did not wait for the other request (nor hang without a timeout).
    assert_eq!(large["id"], "large");
    assert_eq!(large["error"]["code"], -32000, "{large}");
    assert!(took < Duration::from_millis(1000), "failed after {took:?}");
    assert_eq!(slow["id"], "slow");
    assert!(slow.get("result").is_some(), "{slow}");
    proxy.stop().await;
}

/// The head of a POST's SSE answer waits (up to a second) for its first
/// message, so that a quick answer leaves in one write with it: before,
/// the head always went alone and the client woke twice per call. A
/// slower answer still gets its head at the bound, on its own.
#[tokio::test]
async fn a_quick_sse_answer_leaves_with_its_head_and_a_slow_one_gets_its_head_at_the_bound() {
    let proxy = Proxy::start(&[]).await;
    let mut client = Client::new(&proxy.mcp());
    client.initialize("2025-11-25", json!({})).await;
    let session = client.session.clone().unwrap();
    let addr = proxy.base().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut first_read = async |id: u64, ms: u64| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"sleep","arguments":{{"ms":{ms}}}}}}}"#
        );
        // `Accept` as the SDKs send it.
        let headers = format!(
            "Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-11-25\r\n"
        );
        support::raw_post_first_read(&mut s, &addr, &headers, &body).await
    };
    // 150 ms: the head waits for the answer and leaves with it, the
    // priming event in front.
    let (first, _) = first_read(1, 150).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    assert!(first.contains("data: \n\n"), "priming event: {first:?}");
    assert!(
        first.contains("slept 150"),
        "answer with the head: {first:?}"
    );
    // 2.5 s: past the bound, the head comes alone and the answer after it.
    let (first, all) = first_read(2, 2500).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    assert!(!first.contains("slept"), "head alone first: {first:?}");
    assert!(all.contains("slept 2500"), "{all:?}");
    proxy.stop().await;
}
