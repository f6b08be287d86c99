//! Cut-through forwarding of long answers (`src/tail.rs`): an answer that
//! passes 128 KiB goes to its client before the child has finished writing
//! it, in a JSON body or as one SSE event (no keep-alive inside it),
//! arrives intact and re-addressed, and breaks off (rather than ending
//! early but parseable) when the child cuts it off, passes the line cap or
//! stalls past the request timeout. An SSE client that reconnects in the
//! middle of one gets it whole from the replay buffer; one whose answer
//! broke off gets an error response there. An answer that names its id
//! after the result (the TypeScript SDK's order) goes on the same way when
//! it can only be the one request's in flight, and breaks off if its id
//! turns out to be another's. The child is `everything`'s
//! `misbehave_slow_answer`, which writes half a result, pauses, then ends
//! it, exits or stalls.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Client, Proxy, legacy_session, modern_post, parse_events, ping_batch, read_messages,
    shared_child_paused, text_of,
};

const HALF_A_SECOND: Duration = Duration::from_millis(500);

fn slow_answer(id: Value, bytes: u64, pause_ms: u64, then: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"misbehave_slow_answer","arguments":{"bytes":bytes,"pause_ms":pause_ms,"then":then}}})
}

/// A session whose requests take JSON bodies only.
async fn json_session(proxy: &Proxy) -> Client {
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    c.sibling("application/json")
}

/// Sends `body` in `c`'s session: the response, or how the request failed
/// (a status always comes: see `broken_before_the_head`).
async fn send(c: &Client, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
    c.post_request(body).send().await
}

/// Whether a response failed: its body broke off, or (when that showed
/// before its head went out) it is the request's JSON-RPC error.
async fn broke_off(sent: Result<reqwest::Response, reqwest::Error>) -> bool {
    let resp = sent.expect("a status, whatever broke");
    assert_eq!(resp.status(), 200);
    match read_body(resp, Instant::now()).await.1 {
        Err(_) => true,
        Ok(body) => serde_json::from_slice::<Value>(&body)
            .is_ok_and(|answer| answer["error"]["code"] == -32000),
    }
}

/// `partial` is a POST stream that went away after its priming event and
/// the start of its answer: a resumption from that event gets one message,
/// returned.
async fn resume_after_priming(c: &Client, partial: &str) -> Value {
    let events = parse_events(partial);
    assert_eq!(events.len(), 1, "only the priming event is whole");
    let last_id = events[0].id.clone().expect("events carry ids");
    let resumed = c.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let mut msgs = read_messages(resumed).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    msgs.remove(0)
}

/// Reads a body to its end, noting when its first bytes came: the body,
/// or what came of it before it failed.
async fn read_body(
    mut resp: reqwest::Response,
    started: Instant,
) -> (Option<Duration>, Result<Vec<u8>, Vec<u8>>) {
    let mut first = None;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                first.get_or_insert_with(|| started.elapsed());
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (first, Ok(body)),
            Err(_) => return (first, Err(body)),
        }
    }
}

/// Whether a body whose child paused `pause` in the middle of its answer
/// began to arrive before that pause: its end came at least half the
/// pause after its first bytes. Relative, so that a loaded machine (a
/// slow request, a slow first write) does not fail it; an answer held
/// back until its end arrives in one go.
fn began_before_the_pause(first: Option<Duration>, started: Instant, pause: Duration) -> bool {
    let ended = started.elapsed();
    first.is_some_and(|f| ended.saturating_sub(f) >= pause / 2)
}

#[tokio::test]
async fn a_long_answer_starts_before_the_child_finishes_it_and_arrives_intact() {
    for mode in [
        &[][..],
        &["--shared"][..],
        &["--child-stdout", "socket"][..],
    ] {
        let proxy = Proxy::start(mode).await;
        let c = json_session(&proxy).await;
        let started = Instant::now();
        let resp = c
            .post(&slow_answer(json!("big"), 1 << 20, 1500, "end"))
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let (first, body) = read_body(resp, started).await;
        let first = first.expect("a body");
        // Half the answer was out while the child paused for 1.5 s.
        assert!(
            first < Duration::from_millis(1200),
            "{mode:?}: first bytes after {first:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(1500));
        let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(answer["id"], "big", "{mode:?}");
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text.len(), 1 << 20);
        assert!(text.starts_with('a') && text.ends_with('b'));
        // The child goes on answering.
        let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
        assert_eq!(echo["result"]["content"][0]["text"], "after", "{mode:?}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_long_answer_the_child_cuts_off_fails_the_body_instead_of_ending_it() {
    let proxy = Proxy::start(&[]).await;
    let c = json_session(&proxy).await;
    let started = Instant::now();
    let resp = c.post(&slow_answer(json!(1), 1 << 20, 300, "exit")).await;
    assert_eq!(resp.status(), 200);
    let (first, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(first.is_some());
    assert!(
        body.is_err(),
        "a cut-off answer must not end like a whole one"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_long_answer_over_the_line_cap_fails_the_body_and_the_child_serves_on() {
    let proxy = Proxy::start(&["--max-line-bytes", "512K"]).await;
    let c = json_session(&proxy).await;
    let sent = send(&c, &slow_answer(json!(1), 4 << 20, 0, "end")).await;
    let broke = tokio::time::timeout(Duration::from_secs(10), broke_off(sent))
        .await
        .expect("the body ends within 10 s");
    assert!(broke, "an answer over the cap must fail");
    let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
    assert_eq!(echo["result"]["content"][0]["text"], "after");
    proxy.stop().await;
}

#[tokio::test]
async fn a_long_answer_that_stalls_fails_at_the_request_timeout() {
    let proxy = Proxy::start(&["--request-timeout", "2s"]).await;
    let c = json_session(&proxy).await;
    let started = Instant::now();
    let resp = c.post(&slow_answer(json!(1), 1 << 20, 0, "stall")).await;
    let (first, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(first.is_some_and(|f| f < Duration::from_secs(2)));
    assert!(body.is_err(), "a stalled answer must fail");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) - HALF_A_SECOND && took < Duration::from_secs(5),
        "failed after {took:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_2026_07_28_client_gets_a_long_answer_as_it_arrives_with_its_result_type() {
    // The id before the result, and after it (the TypeScript SDK's order).
    for id_last in [false, true] {
        let proxy = Proxy::start(&[]).await;
        let mut body = slow_answer(json!(7), 1 << 20, 1000, "end");
        body["params"]["arguments"]["id_last"] = json!(id_last);
        body["params"]["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let started = Instant::now();
        let resp = modern_post(&proxy, &body, "application/json").await;
        assert_eq!(resp.status(), 200);
        let (first, body) = read_body(resp, started).await;
        assert!(
            began_before_the_pause(first, started, Duration::from_millis(1000)),
            "id last {id_last}: {first:?} of {:?}",
            started.elapsed()
        );
        let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["result"]["resultType"], "complete");
        assert_eq!(text_of(&answer).len(), 1 << 20);
        // The server's identity (`basic/index`, per-response fields), in a
        // `_meta` of its own at the result's end.
        assert_eq!(
            answer["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "everything",
            "id last {id_last}"
        );
        proxy.stop().await;
    }
}

/// Spec 2026-07-28 `basic/index`, "Per-response protocol fields": servers
/// SHOULD include `io.modelcontextprotocol/serverInfo` in every result's
/// `_meta`. A long answer that has a `_meta` of its own, after its
/// content, gets it there, once, as it passes: not a second `_meta` key,
/// not a second copy of a key the child wrote (in any spelling), nothing
/// re-read (`1e400` stays as written), nothing added to a `_meta` that is
/// not an object. Only `server/discover` carried it.
#[tokio::test]
async fn a_long_answer_gets_the_servers_identity_in_its_own_meta_as_it_passes() {
    let proxy = Proxy::start(&[]).await;
    let info = r#""io.modelcontextprotocol/serverInfo":{"name":"everything","version":"#;
    let cases = [
        (
            r#"{"k":1,"n":1e400}"#,
            r#"{"k":1,"n":1e400,"io.modelcontextprotocol/serverInfo":{"name":"everything","version":"#,
        ),
        (
            r#"{"io.modelcontextprotocol\/serverInfo":{"name":"child","version":"9"}}"#,
            r#"{"io.modelcontextprotocol\/serverInfo":{"name":"child","version":"9"}}"#,
        ),
        (r#"5"#, r#""_meta":5}"#),
    ];
    for (n, (meta, want)) in cases.into_iter().enumerate() {
        let mut body = slow_answer(json!(n), 1 << 20, 800, "end");
        body["params"]["arguments"]["meta"] = json!(meta);
        body["params"]["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let started = Instant::now();
        let resp = modern_post(&proxy, &body, "application/json").await;
        let (first, body) = read_body(resp, started).await;
        assert!(
            began_before_the_pause(first, started, Duration::from_millis(800)),
            "{meta}: {first:?} of {:?}",
            started.elapsed()
        );
        let text = String::from_utf8(body.unwrap()).unwrap();
        let tail = &text[text.len() - 200..];
        assert!(tail.contains(want), "{meta}: {tail}");
        assert_eq!(text.matches("_meta").count(), 1, "{meta}: {tail}");
        let infos = text.matches("serverInfo").count();
        assert_eq!(infos, usize::from(n < 2), "{meta}: {tail}");
        assert_eq!(text.contains(info), n == 0, "{meta}: {tail}");
        assert!(
            text.starts_with(r#"{"jsonrpc":"2.0","id":"#),
            "{}",
            &text[..80]
        );
    }
    proxy.stop().await;
}

/// A 2026-07-28 call of `slow_answer` whose result ends with the child's
/// `_meta` member written as `meta` (raw JSON after `"_meta":`): the
/// bytes the client got, whole (`Ok`) or cut off (`Err`), after checking
/// that the head went on as it arrived and the body ended within 10 s.
async fn long_modern_answer_ending(proxy: &Proxy, meta: &str) -> (Value, Result<Vec<u8>, Vec<u8>>) {
    let mut body = slow_answer(json!(1), 1 << 20, 300, "end");
    body["params"]["arguments"]["meta"] = json!(meta);
    body["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let started = Instant::now();
    let resp = modern_post(proxy, &body, "application/json").await;
    assert_eq!(resp.status(), 200);
    let (first, got) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, started))
        .await
        .expect("the body ends within 10 s");
    assert!(first.is_some(), "its head went on as it arrived");
    (body, got)
}

/// A long answer whose result has a member the proxy puts at its front
/// for a 2026-07-28 client (`resultType`): it went on with the key twice.
/// Now it fails as it passes, where the child's copy begins, as a short
/// one is refused.
#[tokio::test]
async fn a_long_answer_with_a_member_the_proxy_adds_fails_where_the_second_copy_begins() {
    let proxy = Proxy::start(&[]).await;
    let (_, got) =
        long_modern_answer_ending(&proxy, r#"{"a":1},"resultType":"input_required""#).await;
    let part = match got {
        Ok(whole) => panic!(
            "passed whole: {}",
            String::from_utf8_lossy(&whole[whole.len().saturating_sub(120)..])
        ),
        Err(part) => part,
    };
    assert!(
        !String::from_utf8_lossy(&part).contains("input_required"),
        "nothing past the second copy went"
    );
    proxy.stop().await;
}

/// A long answer whose result has `_meta` twice: the proxy put the
/// server's identity into the first copy as it passed, and the client's
/// parser (serde_json here, `JSON.parse`, Python's json) kept the second,
/// without it. Now the answer fails as it passes (the body breaks off at
/// the second `_meta`) for a 2026-07-28 client, as a short one is refused;
/// a session-era client, for which nothing is added, gets it as written.
#[tokio::test]
async fn a_long_answer_with_meta_twice_in_its_result_fails_where_the_identity_would_be_lost() {
    let proxy = Proxy::start(&[]).await;
    let twice = r#"{"a":1},"_meta":{"b":2}"#;
    let (body, got) = long_modern_answer_ending(&proxy, twice).await;
    let got = match got {
        Ok(whole) => {
            let v: Value = serde_json::from_slice(&whole).unwrap();
            panic!(
                "passed whole: the client reads _meta {}",
                v["result"]["_meta"]
            );
        }
        Err(part) => part,
    };
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains(r#""b":2"#),
        "nothing past the second _meta went"
    );
    // The next call is answered as usual.
    let echo = modern_post(
        &proxy,
        &json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
            "name":"echo","arguments":{"message":"after"},"_meta":body["params"]["_meta"]}}),
        "application/json",
    )
    .await;
    let echo: Value = echo.json().await.unwrap();
    assert_eq!(text_of(&echo), "after", "{echo}");
    // A session-era client gets the answer as the child wrote it.
    let c = json_session(&proxy).await;
    let mut plain = slow_answer(json!(3), 1 << 20, 300, "end");
    plain["params"]["arguments"]["meta"] = json!(twice);
    let (_, got) = read_body(c.post(&plain).await, Instant::now()).await;
    let text = String::from_utf8(got.expect("whole")).unwrap();
    assert!(
        text.ends_with(r#""}],"_meta":{"a":1},"_meta":{"b":2}}}"#),
        "{}",
        &text[text.len() - 80..]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_sse_answer_goes_on_as_it_arrives_as_one_event_with_no_keep_alive_inside() {
    let proxy = Proxy::start(&["--keep-alive", "200ms"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let started = Instant::now();
    let mut resp = c
        .post(&slow_answer(json!("sse"), 1 << 20, 1500, "end"))
        .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = Vec::new();
    let mut head_at = None;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        if head_at.is_none() && String::from_utf8_lossy(&body).contains(r#""id":"sse""#) {
            head_at = Some(started.elapsed());
        }
    }
    let body = String::from_utf8(body).unwrap();
    // The answer's head came during the child's pause of 1.5 s.
    assert!(
        head_at.unwrap() < Duration::from_millis(1200),
        "{head_at:?}"
    );
    let events = parse_events(&body);
    let answers: Vec<Value> = events
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| serde_json::from_str(&e.data).expect("the answer's event parses"))
        .collect();
    assert_eq!(answers.len(), 1, "{} events", events.len());
    assert_eq!(answers[0]["id"], "sse");
    assert_eq!(text_of(&answers[0]).len(), 1 << 20);
    assert!(events.iter().all(|e| e.id.is_some()));
    proxy.stop().await;
}

#[tokio::test]
async fn an_sse_answer_cut_off_breaks_its_stream_and_a_resumption_gets_an_error() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let resp = send(&c, &slow_answer(json!("cut"), 1 << 20, 300, "exit"))
        .await
        .unwrap();
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), read_body(resp, Instant::now()))
        .await
        .expect("the stream ends within 10 s");
    // It breaks off after the priming event and the answer's start.
    let partial = String::from_utf8(body.expect_err("a broken stream")).unwrap();
    let answer = resume_after_priming(&c, &partial).await;
    assert_eq!(answer["id"], "cut");
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_sse_answer_whose_client_reconnects_midway_is_replayed_whole() {
    let proxy = Proxy::start(&[]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let mut resp = send(&c, &slow_answer(json!("again"), 1 << 20, 800, "end"))
        .await
        .unwrap();
    // Read until the answer has begun, then go away in its middle.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#""id":"again""#) {
        seen.extend_from_slice(&resp.chunk().await.unwrap().expect("more of the stream"));
    }
    drop(resp);
    let answer = resume_after_priming(&c, &String::from_utf8_lossy(&seen)).await;
    assert_eq!(answer["id"], "again");
    assert_eq!(text_of(&answer).len(), 1 << 20);
    proxy.stop().await;
}

/// A legacy (2024-11-05) stream carries every answer of its session. While
/// a long answer is open on it, an error the proxy makes for another
/// request (its `--request-timeout`) waits, and follows it whole: no event
/// goes out inside another.
#[tokio::test]
async fn on_a_legacy_stream_other_answers_wait_for_the_open_one() {
    let proxy = Proxy::start(&["--request-timeout", "2s"]).await;
    let (mut s, post_url) = legacy_session(&proxy).await;
    let http = reqwest::Client::new();
    let post = |body: Value| http.post(&post_url).json(&body).send();
    // The sleep times out 2 s after it was sent, while the long answer,
    // sent 1 s after it, is open (its pause ends 2.5 s in, before its own
    // deadline 3 s in).
    post(json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":5000}}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    post(slow_answer(json!("long"), 1 << 20, 1500, "end"))
        .await
        .unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let ev = s
            .next_within(Duration::from_secs(10))
            .await
            .expect("both answers within 10 s");
        assert_eq!(ev.name.as_deref(), Some("message"));
        answers.push(serde_json::from_str::<Value>(&ev.data).expect("every event parses"));
    }
    // In that order when the timing holds; on a slow machine the error may
    // come first. Either way each arrives whole, never inside the other.
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(text_of(by_id("long")).len(), 1 << 20);
    assert_eq!(by_id("slow")["error"]["code"], -32000, "{}", by_id("slow"));
    proxy.stop().await;
}

/// A client that hangs up in the middle of a long answer leaves the line
/// to its request: when the line then passes the cap, the one other
/// request in flight is not taken for it and fails.
#[tokio::test]
async fn a_long_answer_left_midway_then_over_the_cap_fails_no_other_request() {
    let proxy = Proxy::start(&["--shared", "--max-line-bytes", "1M"]).await;
    let c = json_session(&proxy).await;
    let other = c.call(json!("other"), "sleep", json!({"ms": 2000}));
    let left = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // 768 KiB at once, then after 500 ms the rest, past the 1 MiB cap.
        let mut resp = send(&c, &slow_answer(json!("left"), 1536 * 1024, 500, "end"))
            .await
            .unwrap();
        assert!(resp.chunk().await.unwrap().is_some());
        drop(resp);
    };
    let (other, ()) = tokio::join!(other, left);
    assert_eq!(other["id"], "other");
    assert!(other.get("result").is_some(), "{other}");
    proxy.stop().await;
}

// ---- answers whose id comes after the result (the TypeScript SDK's order) ----

/// `body` (a `misbehave_slow_answer` call) answered with the id last, and
/// that id replaced by `end_id` if given.
fn id_last(mut body: Value, end_id: Option<Value>) -> Value {
    body["params"]["arguments"]["id_last"] = json!(true);
    if let Some(end_id) = end_id {
        body["params"]["arguments"]["end_id"] = end_id;
    }
    body
}

#[tokio::test]
async fn an_answer_with_its_id_last_goes_on_as_it_arrives_when_it_is_alone_in_flight() {
    for mode in [&[][..], &["--shared"][..]] {
        let proxy = Proxy::start(mode).await;
        // A JSON body.
        let c = json_session(&proxy).await;
        id_last_goes_on(&c, "big").await;
        // An SSE stream.
        let mut s = Client::new(&proxy.mcp());
        s.initialize("2025-11-25", json!({})).await;
        let resp = s
            .post(&id_last(
                slow_answer(json!("sse"), 1 << 20, 1500, "end"),
                None,
            ))
            .await;
        let (first, body) = read_body(resp, Instant::now()).await;
        assert!(first.is_some_and(|f| f < Duration::from_millis(1200)));
        let events = parse_events(&String::from_utf8(body.unwrap()).unwrap());
        let answer: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        assert_eq!(answer["id"], "sse", "{mode:?}");
        assert_eq!(text_of(&answer).len(), 1 << 20);
        let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
        assert_eq!(echo["result"]["content"][0]["text"], "after", "{mode:?}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn an_answer_with_its_id_last_that_names_another_request_fails_instead() {
    let proxy = Proxy::start(&[]).await;
    let c = json_session(&proxy).await;
    let body = id_last(
        slow_answer(json!(1), 1 << 20, 300, "end"),
        Some(json!(987654)),
    );
    let broke = tokio::time::timeout(Duration::from_secs(10), async {
        broke_off(send(&c, &body).await).await
    })
    .await
    .expect("the body ends within 10 s");
    assert!(broke, "another request's answer must not reach this client");
    let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
    assert_eq!(echo["result"]["content"][0]["text"], "after");
    proxy.stop().await;
}

#[tokio::test]
async fn answers_with_their_id_last_are_read_whole_when_another_could_be_theirs() {
    // Two in flight (a call that sleeps, and the long answer): the long
    // answer is not guessed to be either's; it arrives whole and right.
    let proxy = Proxy::start(&["--shared"]).await;
    let a = json_session(&proxy).await;
    let b = json_session(&proxy).await;
    let sleeping = sleep_in(&a, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    id_last_read_whole(&b, "b").await;
    assert!(sleeping.await.unwrap()["result"].is_object());
    // Alone in flight, but just after a request was cancelled (whose late
    // answer this could be): read whole too.
    let waiting = sleep_in(&a, 9);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = a
        .post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(waiting.await.unwrap()["error"]["code"], -32800);
    id_last_read_whole(&b, "c").await;
    proxy.stop().await;
}

#[tokio::test]
async fn requests_the_child_never_got_do_not_stop_answers_with_their_id_last_going_on() {
    // A child that stops reading for 1.5 s while a batch of 8,000 pings
    // arrives: what its pipe and the proxy's queue cannot take fails at
    // once, never written. No answer to those can come late, so the next
    // id-last answer, alone in flight, still goes on as it arrives.
    let (proxy, c, batches) = shared_child_paused(
        &["--max-batch", "10000", "--max-child-queue-bytes", "16k"],
        1500,
    )
    .await;
    let answers = tokio::time::timeout(Duration::from_secs(20), ping_batch(&batches, 8000))
        .await
        .expect("the batch is answered within 20 s");
    assert_eq!(answers.len(), 8000);
    let refused = answers.iter().filter(|a| a.get("error").is_some()).count();
    assert!(
        refused > 0 && refused < 8000,
        "{refused} of 8000 refused: the test needs some of each"
    );
    id_last_goes_on(&c, "big").await;
    proxy.stop().await;
}

/// A long id-last answer for `c` (a JSON session) that must go on as it
/// arrives (its first bytes before the child's 1.5 s pause ends) and
/// arrive whole and right.
async fn id_last_goes_on(c: &Client, id: &str) {
    let started = Instant::now();
    let resp = c
        .post(&id_last(slow_answer(json!(id), 1 << 20, 1500, "end"), None))
        .await;
    assert_eq!(resp.status(), 200);
    let (first, body) = read_body(resp, started).await;
    assert!(
        first.is_some_and(|f| f < Duration::from_millis(1200)),
        "{id}: first bytes after {first:?}"
    );
    let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(answer["id"], id);
    let text = text_of(&answer);
    assert_eq!(text.len(), 1 << 20);
    assert!(text.starts_with('a') && text.ends_with('b'));
}

/// A 3 s `sleep` call with id `id` in `c`'s session, in flight meanwhile.
fn sleep_in(c: &Client, id: u64) -> tokio::task::JoinHandle<Value> {
    let c = c.sibling("application/json");
    tokio::spawn(async move { c.call(json!(id), "sleep", json!({"ms": 3000})).await })
}

/// A long id-last answer for `c` that must be read whole (nothing before
/// the child's 1.5 s pause ends) and arrive right.
async fn id_last_read_whole(c: &Client, id: &str) {
    let started = Instant::now();
    let resp = c
        .post(&id_last(slow_answer(json!(id), 1 << 20, 1500, "end"), None))
        .await;
    let (first, body) = read_body(resp, started).await;
    assert!(
        first.is_some_and(|f| f >= Duration::from_millis(1400)),
        "{id}: read whole, so nothing before the child's pause ended: {first:?}"
    );
    let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(answer["id"], id);
    assert_eq!(text_of(&answer).len(), 1 << 20);
}

/// A child (`sh`) whose `tools/call` answers are 300 KB long and paused
/// midway (so they are cut through), ending as the tool's name says:
/// `bad_utf8` with a byte that is not UTF-8, `both` with an `error` after
/// the `result`, `broken` with bytes that are not JSON.
const LONG_TAILS: &str = r#"while read l; do id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'); [ -z "$id" ] && continue; case "$l" in
  *'"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"b","version":"1"}}}\n' "$id";;
  *'"tools/call"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' "$id"; head -c 300000 /dev/zero | tr '\0' a; sleep 0.3; case "$l" in
    *'"bad_utf8"'*) printf 'x\377y"}]}}\n';;
    *'"both"'*) printf '"}]},"error":{"code":-32001,"message":"both"}}\n';;
    *) printf '"}]}} and more\n';;
  esac;;
  *) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
esac; done"#;

fn tool_call(id: Value, tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
}

/// Regression: a long answer passed on before its line ended went to its
/// client as the child wrote it, so a byte that is not UTF-8 in it reached
/// the client raw (a short answer's is repaired as U+FFFD), in a JSON body
/// and in an SSE event alike.
#[tokio::test]
async fn a_long_answer_with_bytes_that_are_not_utf8_arrives_repaired() {
    let proxy = Proxy::start_child(
        &["--upstream-protocol", "legacy"],
        "sh",
        &["-c", LONG_TAILS],
    )
    .await;
    let mut sse = Client::new(&proxy.mcp());
    sse.initialize("2025-06-18", json!({})).await;
    let json_only = sse.sibling("application/json");
    let (_, body) = read_body(
        json_only.post(&tool_call(json!(1), "bad_utf8")).await,
        Instant::now(),
    )
    .await;
    let body = body.expect("a whole body");
    let text = String::from_utf8(body)
        .map_err(|e| e.utf8_error())
        .expect("the body is UTF-8");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let got = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(got.ends_with("ax\u{FFFD}y"), "{}", &got[got.len() - 10..]);
    let (_, body) = read_body(
        sse.post(&tool_call(json!(2), "bad_utf8")).await,
        Instant::now(),
    )
    .await;
    let text = String::from_utf8(body.expect("a whole stream"))
        .map_err(|e| e.utf8_error())
        .expect("the stream is UTF-8");
    let events = parse_events(&text);
    let answer: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(answer["id"], 2);
    let got = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(got.ends_with("ax\u{FFFD}y"));
    proxy.stop().await;
}

/// Regression: a long answer that carried an `error` after its `result`
/// (or stopped being JSON after its head) reached its client as the child
/// wrote it; a short one is rebuilt as the error (or skipped). Once part
/// of the answer went, failing is what is left: the client's body breaks
/// off, and it never gets a message with both members, or one that does
/// not parse.
#[tokio::test]
async fn a_long_answer_with_an_error_after_its_result_or_not_json_fails_instead() {
    let proxy = Proxy::start_child(
        &["--upstream-protocol", "legacy"],
        "sh",
        &["-c", LONG_TAILS],
    )
    .await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-06-18", json!({})).await;
    let c = c.sibling("application/json");
    for (n, tool) in ["both", "broken"].into_iter().enumerate() {
        let sent = send(&c, &tool_call(json!(n), tool)).await;
        let (_, body) = match sent {
            Ok(resp) => read_body(resp, Instant::now()).await,
            Err(_) => (None, Err(Vec::new())),
        };
        if let Ok(body) = body {
            let whole = String::from_utf8_lossy(&body);
            panic!(
                "{tool}: the body ended normally: {}",
                &whole[whole.len() - 80..]
            );
        }
    }
    // The child serves on.
    let after = c.request(json!(9), "ping", json!({})).await;
    assert_eq!(after[0]["result"], json!({}), "{after:?}");
    proxy.stop().await;
}

/// A child (`sh`) whose `tools/call` answers break off right after their
/// first 300 KB, with no pause (so before the proxy's response head can
/// have gone out), as the tool's name says: `exit` exits, `close` closes
/// its stdout (and exits when its stdin closes), `bad` writes a byte JSON
/// cannot have and goes on, `early` does so just past the 128 KiB at which
/// the proxy would pass it on (so the line may well be read whole),
/// `short` and `short_last` write a short answer with that byte (the id
/// first, and last). Every other answer is short and whole.
const DIES_MIDWAY: &str = r#"while read l; do id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'); [ -z "$id" ] && continue; case "$l" in
  *'"server/discover"'*) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}\n' "$id";;
  *'"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"b","version":"1"}}}\n' "$id";;
  *'"short_last"'*) printf '{"result":{"content":[{"type":"text","text":"x\001y"}]},"jsonrpc":"2.0","id":%s}\n' "$id";;
  *'"short"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"x\001y"}]}}\n' "$id";;
  *'"tools/call"'*) n=300000; case "$l" in *'"early"'*) n=131100;; esac
    printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' "$id"; head -c $n /dev/zero | tr '\0' a; case "$l" in
    *'"exit"'*) exit 0;;
    *'"close"'*) exec 1>&-; while read l; do :; done; exit 0;;
    *) printf 'x\001y"}]}}\n';;
  esac;;
  *) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
esac; done"#;

/// What a client got for a long answer that broke off.
#[derive(Debug)]
enum Got {
    /// No status at all: the connection closed before a response head.
    NoStatus,
    /// A status, and a body that broke off (the head had gone out).
    Broken(u16),
    /// A status and a whole body.
    Whole(u16, String),
}

async fn got(sent: Result<reqwest::Response, reqwest::Error>) -> Got {
    match sent {
        Err(_) => Got::NoStatus,
        Ok(resp) => {
            let status = resp.status().as_u16();
            match read_body(resp, Instant::now()).await.1 {
                Ok(body) => Got::Whole(status, String::from_utf8_lossy(&body).into_owned()),
                Err(_) => Got::Broken(status),
            }
        }
    }
}

/// The answer in a whole body: JSON, or the last message of an SSE stream.
fn answer_in(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| {
        let events = parse_events(body);
        let last = events.iter().rev().find(|e| !e.data.is_empty());
        serde_json::from_str(&last.expect("an answer's event").data).unwrap()
    })
}

/// Regression: a long answer that broke off before the proxy's response
/// head was flushed (the child wrote 300 KB of it and exited, closed its
/// stdout, or wrote a byte JSON cannot have, all without a pause) reached
/// the client as a connection closed with no status at all: hyper drops
/// what it has buffered, the head too, when a body fails. Now the client
/// gets a status, in every era and for JSON and SSE alike: the error for
/// its id in a 200 (what a child that dies before answering gives), or,
/// when the head had gone, a body that breaks off.
#[tokio::test]
async fn a_long_answer_broken_before_the_head_went_out_still_gets_a_status() {
    const JSON: &str = "application/json";
    const BOTH: &str = "application/json, text/event-stream";
    const SSE: &str = "text/event-stream";
    // (era, Accept): a session, `--stateless`, and 2026-07-28.
    let paths = [
        ("session", JSON),
        ("session", BOTH),
        ("stateless", JSON),
        ("stateless", BOTH),
        ("2026-07-28", JSON),
        ("2026-07-28", SSE),
    ];
    // Each case twice, all at once: whether the head went out before the
    // failure is a race, which the old code lost about one time in ten.
    let mut cases = Vec::new();
    for _ in 0..2 {
        for how in ["exit", "close", "bad"] {
            for (era, accept) in paths {
                cases.push(broken_before_the_head(how, era, accept));
            }
        }
    }
    let got = futures_util::future::join_all(cases).await;
    let none: Vec<_> = got.iter().filter(|s| s.contains("NoStatus")).collect();
    assert!(none.is_empty(), "no status at all: {none:#?}");
}

/// One case of the test above: how the child breaks the answer off, the
/// era and the `Accept` of the request; what the client got.
async fn broken_before_the_head(how: &str, era: &str, accept: &'static str) -> String {
    let flags: &[&str] = if era == "stateless" {
        &["--stateless", "--shutdown-grace", "1s"]
    } else {
        &["--shutdown-grace", "1s"]
    };
    // A proxy each: a child that exits is not back at once.
    let proxy = Proxy::start_child(flags, "sh", &["-c", DIES_MIDWAY]).await;
    let ctx = format!("{how}, {era}, {accept}");
    let sent = tokio::time::timeout(Duration::from_secs(10), async {
        match era {
            "session" => {
                let mut c = Client::new(&proxy.mcp());
                c.initialize("2025-11-25", json!({})).await;
                send(&c.sibling(accept), &tool_call(json!(7), how)).await
            }
            "stateless" => {
                reqwest::Client::new()
                    .post(proxy.mcp())
                    .header("accept", accept)
                    .header("mcp-protocol-version", "2025-11-25")
                    .json(&tool_call(json!(7), how))
                    .send()
                    .await
            }
            _ => {
                reqwest::Client::new()
                    .post(proxy.mcp())
                    .header("accept", accept)
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", how)
                    .json(&modern_call(how))
                    .send()
                    .await
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{ctx}: answered within 10 s"));
    let got = tokio::time::timeout(Duration::from_secs(10), got(sent))
        .await
        .unwrap_or_else(|_| panic!("{ctx}: the body ends within 10 s"));
    match &got {
        Got::NoStatus => {}
        Got::Broken(status) => assert_eq!(*status, 200, "{ctx}"),
        Got::Whole(status, body) => {
            assert_eq!(*status, 200, "{ctx}: {body}");
            let answer = answer_in(body);
            assert_eq!(answer["id"], 7, "{ctx}: {answer}");
            // The proxy's own failure: -32603 for 2026-07-28 clients.
            let code = if era == "2026-07-28" { -32603 } else { -32000 };
            assert_eq!(answer["error"]["code"], code, "{ctx}: {answer}");
        }
    }
    proxy.stop().await;
    format!("{ctx}: {got:?}")
}

fn modern_call(tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":{},"_meta":{
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }}})
}

/// A legacy (2024-11-05) stream's head went out long before any answer:
/// a long answer that breaks off there ends the stream, and the session
/// with it (404 on the next POST), so the client sees it broken rather
/// than waiting for an answer that cannot come.
#[tokio::test]
async fn a_long_answer_broken_on_a_legacy_stream_ends_it_and_its_session() {
    for how in ["exit", "bad"] {
        let proxy = Proxy::start_child(&[], "sh", &["-c", DIES_MIDWAY]).await;
        let http = reqwest::Client::new();
        let mut resp = http
            .get(format!("{}/sse", proxy.base()))
            .send()
            .await
            .unwrap();
        let mut seen = String::new();
        while !seen.contains("sessionId=") || !seen.contains("\n\n") {
            let chunk = resp.chunk().await.unwrap().expect("the endpoint event");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let path = seen
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap()
            .to_string();
        let post_url = format!("{}{path}", proxy.base());
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
        assert_eq!(
            http.post(&post_url)
                .json(&init)
                .send()
                .await
                .unwrap()
                .status(),
            202
        );
        let initialized = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        http.post(&post_url)
            .json(&initialized)
            .send()
            .await
            .unwrap();
        let r = http
            .post(&post_url)
            .json(&tool_call(json!(7), how))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return "ended",
                    Err(_) => return "broke off",
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{how}: the stream goes on after its answer broke"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .post(&post_url)
                .json(&json!({"jsonrpc":"2.0","id":8,"method":"ping"}))
                .send()
                .await
                .unwrap();
            if r.status() == 404 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{how}: the session lives on: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.stop().await;
    }
}

/// Regression: an answer that is not valid JSON-RPC (a byte JSON cannot
/// have) and was read whole, short or long (300 KB where the bad byte came
/// in the same read as the 128 KiB at which the proxy passes an answer on)
/// was skipped as a log line, and its request waited for an answer the
/// child would never write again: for ever, without --request-timeout.
/// The id at the line's start (or its end, the TypeScript SDK's order)
/// names the request, which now fails at once with an error.
#[tokio::test]
async fn an_answer_read_whole_that_is_not_json_fails_its_request_at_once() {
    let proxy = Proxy::start_child(&[], "sh", &["-c", DIES_MIDWAY]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let c = c.sibling("application/json");
    for (n, how) in ["short", "short_last", "early"].into_iter().enumerate() {
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            let resp = send(&c, &tool_call(json!(n), how)).await.unwrap();
            assert_eq!(resp.status(), 200);
            read_body(resp, Instant::now()).await.1
        })
        .await
        .unwrap_or_else(|_| panic!("{how}: no answer within 5 s"));
        match sent {
            // Passed on before the bad byte showed: broken off.
            Err(_) => assert_eq!(how, "early"),
            Ok(body) => {
                let answer: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(answer["id"], n, "{how}: {answer}");
                assert_eq!(answer["error"]["code"], -32000, "{how}: {answer}");
            }
        }
    }
    proxy.stop().await;
}

/// A child that, asked for a tool, first sends a request of its own that
/// is not valid JSON-RPC (a byte JSON cannot have), numbered as the call
/// it serves happens to be (the child's ids and the proxy's are separate
/// spaces), the id first or (tool `last`) last, then answers the call.
const GARBLED_REQUEST: &str = r#"while read l; do id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'); [ -z "$id" ] && continue; case "$l" in
  *'"server/discover"'*) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}\n' "$id";;
  *'"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"b","version":"1"}}}\n' "$id";;
  *'"tools/call"'*) case "$l" in
    *'"last"'*) printf '{"method":"roots/list","params":{"x":"a\001b"},"jsonrpc":"2.0","id":%s}\n' "$id";;
    *) printf '{"jsonrpc":"2.0","id":%s,"method":"roots/list","params":{"x":"a\001b"}}\n' "$id";;
    esac
    printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"ok"}]}}\n' "$id";;
  *) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
esac; done"#;

/// Regression: a line of the child's that is not JSON-RPC and showed
/// `"id":N` at its edges failed the client's request the proxy numbered N,
/// even when the line was a request of the child's own (its ids are its
/// own space): the call got "the MCP server's answer was not valid
/// JSON-RPC" and its real answer, a moment later, was dropped. Only a
/// response's edges name a request of the proxy's.
#[tokio::test]
async fn a_garbled_request_of_the_childs_does_not_fail_a_call_of_the_same_number() {
    let proxy = Proxy::start_child(&[], "sh", &["-c", GARBLED_REQUEST]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let c = c.sibling("application/json");
    for (n, how) in ["first", "last"].into_iter().enumerate() {
        let resp =
            tokio::time::timeout(Duration::from_secs(10), send(&c, &tool_call(json!(n), how)))
                .await
                .expect("an answer in time")
                .unwrap();
        assert_eq!(resp.status(), 200);
        let body = read_body(resp, Instant::now()).await.1.expect("whole");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["id"], n, "{how}: {answer}");
        assert_eq!(text_of(&answer), "ok", "{how}: {answer}");
    }
    proxy.stop().await;
}

/// A child (`sh`) whose `tools/call` answers are 300 KB long and end in a
/// byte JSON cannot have, each written in one write (`dd` of a file made
/// at the start, into the proxy's 1 MiB pipe): the proxy begins passing it
/// on and finds it broken in the same go, before the response's head can
/// have gone out. Every other answer is short.
const BREAKS_OFF_AT_ONCE: &str = r#"f=$(mktemp); trap 'rm -f "$f"' EXIT; head -c 300000 /dev/zero | tr '\0' a > "$f"; printf 'x\001y"}]}}\n' >> "$f"
while read l; do id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'); [ -z "$id" ] && continue; case "$l" in
  *'"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"b","version":"1"}}}\n' "$id";;
  *'"tools/call"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' "$id"; dd if="$f" bs=1M status=none;;
  *) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
esac; done"#;

/// Regression: a long answer that broke off before its SSE stream's head
/// went out is sent as its request's error (see above), but that event
/// had no id, while the proxy kept the same error for replay under an id
/// of its own: a client resuming after the last event it got (the error)
/// from a stream that then dropped was given the error again, under
/// another id. The error's event carries the id it is kept under now, so
/// a resumption after it gets nothing more. Asked until that error came
/// twice (a line read whole and refused is the other outcome).
#[tokio::test]
async fn an_error_sent_in_place_of_a_broken_sse_answer_has_the_id_it_is_replayed_under() {
    let proxy = Proxy::start_child(&[], "sh", &["-c", BREAKS_OFF_AT_ONCE]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let mut checked = 0;
    for n in 0..30 {
        let Got::Whole(status, body) = got(send(&c, &tool_call(json!(n), "big")).await).await
        else {
            continue;
        };
        assert_eq!(status, 200);
        let events = parse_events(&body);
        let last = events.last().expect("an answer's event");
        let answer: Value = serde_json::from_str(&last.data).unwrap();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        if !message.contains("cut off before its end") {
            continue;
        }
        assert_eq!(answer["id"], n, "{answer}");
        let id = last
            .id
            .clone()
            .unwrap_or_else(|| panic!("the error's event has no id: {body}"));
        let resumed = c.resume(&id).await;
        assert_eq!(resumed.status(), 200);
        let again = read_messages(resumed).await;
        assert!(again.is_empty(), "given again after {id}: {again:?}");
        checked += 1;
        if checked == 2 {
            break;
        }
    }
    assert_eq!(
        checked, 2,
        "the error in place of the answer twice in 30 tries"
    );
    proxy.stop().await;
}
