//! Regression: a SIGTERM dropped every call in flight. The shutdown ended
//! every SSE stream at once, a POST's stream (which ends by itself with
//! its answer) included, and a JSON wait got "the proxy is shutting down"
//! at once: a call that would have been answered 600 ms later, well
//! within `--shutdown-grace`, got a stream closed without its answer, so
//! every rolling update failed every call in flight. Now a request in
//! flight keeps its stream (or JSON wait) until it is answered or the
//! grace runs out; only the streams that carry no answer (a session's GET
//! stream, a legacy stream with nothing in flight) end at once.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Proxy, STEP, SseStream, legacy_session, read_messages, text_of};

/// The proxy stops (as on SIGTERM) while `call` is in flight: started,
/// then stopped `after` later; returns what `call` gave.
async fn stop_during<F>(proxy: Proxy, after: Duration, call: F) -> Value
where
    F: std::future::Future<Output = Value> + Send + 'static,
{
    let call = tokio::spawn(call);
    tokio::time::sleep(after).await;
    let stopping = tokio::spawn(proxy.stop());
    let answer = tokio::time::timeout(STEP, call)
        .await
        .expect("the call ends in time")
        .unwrap();
    tokio::time::timeout(STEP, stopping)
        .await
        .expect("the proxy stops in time")
        .unwrap();
    answer
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_gets_its_answer_on_its_stream() {
    for version in ["2025-06-18", "2025-11-25"] {
        let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
        let mut c = Client::new(&proxy.mcp());
        c.initialize(version, json!({})).await;
        let answer = stop_during(proxy, Duration::from_millis(200), async move {
            let resp = c
                .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                    "params":{"name":"sleep","arguments":{"ms":800}}}))
                .await;
            read_messages(resp).await.pop().unwrap_or(Value::Null)
        })
        .await;
        assert_eq!(text_of(&answer), "slept 800", "{version}: {answer}");
    }
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_gets_its_json_answer() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-06-18", json!({})).await;
    let c = c.sibling("application/json");
    let answer = stop_during(proxy, Duration::from_millis(200), async move {
        c.call(json!(7), "sleep", json!({"ms": 800})).await
    })
    .await;
    assert_eq!(text_of(&answer), "slept 800", "{answer}");
}

#[tokio::test]
async fn a_legacy_call_in_flight_at_shutdown_gets_its_answer_on_the_stream() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    let (mut stream, post_url) = legacy_session(&proxy).await;
    let r = reqwest::Client::new()
        .post(&post_url)
        .json(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"sleep","arguments":{"ms":800}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer = stop_during(proxy, Duration::from_millis(200), async move {
        match stream.next().await {
            Some(event) => serde_json::from_str(&event.data).unwrap(),
            None => Value::Null,
        }
    })
    .await;
    assert_eq!(text_of(&answer), "slept 800", "{answer}");
}

/// The other side: what carries no answer does not hold the drain up for
/// its grace (30 s here), nor does a call whose answer came.
#[tokio::test]
async fn streams_without_answers_owed_end_at_once_at_shutdown() {
    let proxy = Proxy::start(&["--shutdown-grace", "30s"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let get = tokio::time::timeout(
        STEP,
        c.http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .header("mcp-protocol-version", &c.version)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(get.status(), 200);
    let (legacy, _post_url) = legacy_session(&proxy).await;
    assert_eq!(
        text_of(&c.call(json!(1), "echo", json!({"message": "hi"})).await),
        "hi"
    );
    let stopping = Instant::now();
    proxy.stop().await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "an open GET or legacy stream held the shutdown for {took:?}"
    );
    drop((get, legacy));
}

/// A GET stream resumed with `Last-Event-ID` carries no answer either: it
/// ends at once too, rather than hold the drain for the whole grace.
#[tokio::test]
async fn a_resumed_get_stream_ends_at_once_at_shutdown() {
    let proxy = Proxy::start(&["--shutdown-grace", "30s"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let open_get = || {
        c.http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .header("mcp-protocol-version", &c.version)
    };
    let get = tokio::time::timeout(STEP, open_get().send())
        .await
        .unwrap()
        .unwrap();
    let mut get = support::SseStream::new(get);
    // An event on the GET stream, for its id.
    c.call(
        json!(1),
        "notify",
        json!({"method": "notifications/tools/list_changed"}),
    )
    .await;
    let event = get
        .next()
        .await
        .expect("the notification on the GET stream");
    let id = event.id.expect("an event id on the GET stream");
    drop(get);
    let resumed = tokio::time::timeout(STEP, open_get().header("last-event-id", &id).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let stopping = Instant::now();
    proxy.stop().await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "a resumed GET stream held the shutdown for {took:?}"
    );
    drop(resumed);
}

/// A call still unanswered when the grace runs out gets an error naming
/// the shutdown, on its stream or in its JSON body, rather than a stream
/// that ends without its answer (which a 2025-11-25 client takes for a
/// dropped connection, and tries to resume from a proxy that is gone).
#[tokio::test]
async fn a_call_unanswered_when_the_grace_runs_out_gets_an_error() {
    for accept in ["application/json, text/event-stream", "application/json"] {
        let proxy = Proxy::start(&["--shutdown-grace", "1s"]).await;
        let mut c = Client::new(&proxy.mcp());
        c.initialize("2025-11-25", json!({})).await;
        let c = c.sibling(accept);
        let answer = stop_during(proxy, Duration::from_millis(200), async move {
            let resp = c
                .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                    "params":{"name":"sleep","arguments":{"ms":60000}}}))
                .await;
            read_messages(resp).await.pop().unwrap_or(Value::Null)
        })
        .await;
        assert_eq!(answer["id"], 7, "{accept}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("shutting down"), "{accept}: {answer}");
    }
}

/// Regression: a call in flight that waits on its client's answer to the
/// server's request (here `sample`: the child asks for
/// `sampling/createMessage`) could never finish during the drain. The
/// listener closed at the signal (the answer, on a new connection since
/// the idle ones are closed, was refused) and a POST that got in was
/// answered 503 whatever it held, so the call waited out the grace and got
/// an error. Now the listener stays open during the drain: an existing
/// session's answers and notifications are taken (202), new requests get
/// 503.
#[tokio::test]
async fn a_clients_answer_to_the_servers_request_is_taken_during_the_drain() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"sampling": {}})).await;
    let resp = c
        .post(&json!({"jsonrpc":"2.0","id":"call","method":"tools/call",
            "params":{"name":"sample","arguments":{"prompt":"hi"}}}))
        .await;
    let mut stream = SseStream::new(resp);
    let ask: Value = loop {
        let ev = stream.next().await.expect("the sampling request");
        let m: Value = serde_json::from_str(&ev.data).unwrap();
        if m["method"] == "sampling/createMessage" {
            break m;
        }
    };
    proxy.token.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fresh client: a new connection, as a client's pool has none left.
    let post = |body: Value| {
        reqwest::Client::new()
            .post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
            .send()
    };
    let new_call = post(json!({"jsonrpc":"2.0","id":"new","method":"tools/call",
        "params":{"name":"echo","arguments":{"message":"x"}}}))
    .await
    .expect("the listener is open during the drain");
    assert_eq!(new_call.status(), 503, "new work is refused");
    let answered = post(json!({"jsonrpc":"2.0","id":ask["id"],"result":{
        "role":"assistant","content":{"type":"text","text":"sampled"},"model":"m"}}))
    .await
    .expect("the listener is open during the drain");
    assert_eq!(answered.status(), 202);
    let answer = loop {
        let ev = stream.next().await.expect("the call's answer");
        let m: Value = serde_json::from_str(&ev.data).unwrap();
        if m["id"] == "call" {
            break m;
        }
    };
    assert_eq!(text_of(&answer), "sampled", "{answer}");
    tokio::time::timeout(STEP, proxy.task)
        .await
        .expect("the proxy stops in time")
        .unwrap()
        .ok();
}

/// Regression (hostile review): the drain waited only for open
/// connections. A 2025-era client whose stream dropped (a load balancer
/// cutting connections at SIGTERM) has no connection open, so its call
/// was failed at once with "--shutdown-grace ran out" (untrue), and a
/// GET with `Last-Event-ID` during the drain got 503: the answer, which
/// came within the grace, could never be fetched. The drain now also
/// waits, within the grace, for requests in flight and for answers no
/// client took (here the answer comes first: the proxy holds a stream's
/// head up to a second for its first message, so the client drops after
/// the sleep is nearly done), and lets such a resumption through (a
/// fresh GET stream is still refused).
#[tokio::test]
async fn a_stream_dropped_at_shutdown_is_resumed_to_its_answer_during_the_drain() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let mut resp = c
        .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"sleep","arguments":{"ms":1200}}}))
        .await;
    // The priming event comes with the head; the client takes its id and
    // its connection drops.
    let first = resp.chunk().await.unwrap().expect("a priming event");
    let first = String::from_utf8_lossy(&first).into_owned();
    let last_id = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("the prime carries an id")
        .to_string();
    drop(resp);
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fresh connection: the drain closed the idle ones.
    let mut back = c.sibling("application/json, text/event-stream");
    back.http = reqwest::Client::new();
    let fresh = back
        .http
        .get(&back.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", back.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 503, "no fresh GET stream during the drain");
    // Again a fresh connection: the drain closes each after its request.
    back.http = reqwest::Client::new();
    let resumed = back.resume(&last_id).await;
    assert_eq!(resumed.status(), 200);
    let msgs = tokio::time::timeout(STEP, read_messages(resumed))
        .await
        .expect("the resumed stream ends with its answer");
    assert_eq!(
        msgs.last().map(text_of).as_deref(),
        Some("slept 1200"),
        "{msgs:?}"
    );
    tokio::time::timeout(STEP, stopping)
        .await
        .expect("the proxy stops in time")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "not the whole grace"
    );
}
