//! One child, many sessions (`--shared`, `--stateless`): id and token
//! rewriting under collisions, routing, cancellation, restarts.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, Proxy, STEP, SseStream, alive, eventually, read_messages, reaped, text_of};

async fn sessions(proxy: &Proxy, n: usize, caps: Value) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = Client::new(&proxy.mcp());
        c.initialize("2025-11-25", caps.clone()).await;
        out.push(c);
    }
    out
}

/// Calls `tool` until `done` accepts the answer (a restarted child answers
/// errors, or not-yet results, for a moment); `None` after about 5 s.
async fn call_until(
    c: &Client,
    tool: &str,
    args: Value,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    for _ in 0..100 {
        let r = c.call(json!("poll"), tool, args.clone()).await;
        if r.get("result").is_some() && done(&r) {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn get_stream(
    proxy: &Proxy,
    c: &Client,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    c.http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
}

#[tokio::test]
async fn sessions_reusing_the_same_ids_each_get_exactly_their_own_answers() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 8, json!({})).await;
    let pids: Vec<String> = futures_util::future::join_all(
        clients
            .iter()
            .map(|c| async { text_of(&c.call(json!(0), "pid", json!({})).await) }),
    )
    .await;
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "one child serves everyone: {pids:?}"
    );
    let work = clients.iter().enumerate().map(|(s, c)| async move {
        let calls = (1..=25).map(|i| async move {
            let msg = format!("session {s} call {i}");
            let r = c.call(json!(i), "echo", json!({"message": msg})).await;
            assert_eq!(r["id"], i);
            assert_eq!(text_of(&r), msg);
        });
        futures_util::future::join_all(calls).await;
    });
    tokio::time::timeout(STEP, futures_util::future::join_all(work))
        .await
        .expect("all answered");
    proxy.stop().await;
}

#[tokio::test]
async fn colliding_progress_tokens_reach_only_their_own_session() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 4, json!({})).await;
    let work = clients.iter().enumerate().map(|(s, c)| async move {
        let steps = 3 + s as u64;
        let msgs = c.request(json!(1), "tools/call", json!({"name":"progress","arguments":{"steps":steps,"delay_ms":10},"_meta":{"progressToken":"same"}})).await;
        let progress: Vec<&Value> = msgs.iter().filter(|m| m["method"] == "notifications/progress").collect();
        assert_eq!(progress.len() as u64, steps, "session {s} got someone else's progress: {msgs:?}");
        assert!(progress.iter().all(|p| p["params"]["progressToken"] == "same" && p["params"]["total"] == steps));
        assert_eq!(text_of(msgs.last().unwrap()), format!("done {steps}"));
    });
    futures_util::future::join_all(work).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_cancellation_cancels_only_the_senders_request() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 2, json!({})).await;
    let (a, b) = (&clients[0], &clients[1]);
    let body = json!({"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"sleep","arguments":{"ms":1500}}});
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.post(
            &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}),
        )
        .await
    };
    let (ra, rb, rc) = tokio::join!(a.post(&body), b.post(&body), cancel);
    assert_eq!(rc.status(), 202);
    assert!(
        read_messages(ra).await.is_empty(),
        "A's request was cancelled"
    );
    let rb = read_messages(rb).await;
    assert_eq!(
        text_of(&rb[0]),
        "slept 1500",
        "B's request with the same id must complete"
    );
    let seen: Value =
        serde_json::from_str(&text_of(&a.call(json!(2), "cancelled", json!({})).await)).unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["matched"], true);
    proxy.stop().await;
}

#[tokio::test]
async fn list_changed_reaches_every_session_once_and_resource_updates_only_subscribers() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 3, json!({})).await;
    let mut streams = Vec::new();
    for c in &clients {
        streams.push(SseStream::new(get_stream(&proxy, c).await.unwrap()));
    }
    // Two subscribers of demo://a: one subscription reaches the child, one unsubscribe keeps it.
    clients[0]
        .request(json!(1), "resources/subscribe", json!({"uri":"demo://a"}))
        .await;
    clients[1]
        .request(json!(1), "resources/subscribe", json!({"uri":"demo://a"}))
        .await;
    clients[1]
        .request(json!(2), "resources/unsubscribe", json!({"uri":"demo://a"}))
        .await;
    let r = clients[2]
        .call(json!(1), "touch", json!({"uri":"demo://a"}))
        .await;
    assert_eq!(
        text_of(&r),
        "sent",
        "the child must still hold the subscription of session 0"
    );
    clients[2]
        .call(
            json!(2),
            "notify",
            json!({"method":"notifications/tools/list_changed"}),
        )
        .await;

    let first = streams[0].next_json().await;
    assert_eq!(first["method"], "notifications/resources/updated");
    assert_eq!(first["params"]["uri"], "demo://a");
    assert_eq!(
        streams[0].next_json().await["method"],
        "notifications/tools/list_changed"
    );
    for s in &mut streams[1..] {
        // Non-subscribers see the list change first: no resource update leaked to them.
        assert_eq!(
            s.next_json().await["method"],
            "notifications/tools/list_changed"
        );
    }
    // Exactly once: nothing else is queued.
    for s in &mut streams {
        let extra = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
        assert!(extra.is_err(), "no second copy: {extra:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn sampling_goes_to_the_session_whose_request_is_in_flight() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 3, json!({"sampling": {}})).await;
    let mut gets = Vec::new();
    for c in &clients {
        gets.push(SseStream::new(get_stream(&proxy, c).await.unwrap()));
    }
    let asker = &clients[1];
    let resp = asker.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"for session 1"}}})).await;
    let mut post = SseStream::new(resp);
    let req = post.next_json().await;
    assert_eq!(req["method"], "sampling/createMessage");
    // Another session must not be able to answer it.
    let forged = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"forged"},"model":"m"}});
    assert_eq!(clients[0].post(&forged).await.status(), 202);
    let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"genuine"},"model":"m"}});
    assert_eq!(asker.post(&answer).await.status(), 202);
    assert_eq!(text_of(&post.next_json().await), "genuine");
    for g in &mut gets {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), g.next())
                .await
                .is_err(),
            "nothing was broadcast"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_crashed_shared_child_fails_fast_restarts_and_sessions_carry_on() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 2, json!({})).await;
    let before = text_of(&clients[0].call(json!(1), "pid", json!({})).await);
    let grandchild: u32 = text_of(
        &clients[1]
            .call(json!("gc"), "spawn_grandchild", json!({}))
            .await,
    )
    .parse()
    .unwrap();
    let slow_body = json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000}}});
    let crash = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        clients[1].call(json!(2), "crash", json!({"code": 9})).await
    };
    let started = std::time::Instant::now();
    let (slow, _) = tokio::join!(clients[0].post(&slow_body), crash);
    let slow = read_messages(slow).await;
    assert_eq!(slow[0]["error"]["code"], -32000, "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let after = call_until(&clients[0], "pid", json!({}), |_| true)
        .await
        .map(|r| text_of(&r))
        .expect("the child came back");
    assert_ne!(before, after, "a new child process");
    // The crashed child is reaped and its process group is gone.
    let before: u32 = before.parse().unwrap();
    assert!(
        eventually(STEP, || reaped(before)).await,
        "child {before} not reaped"
    );
    assert!(
        eventually(STEP, || !alive(grandchild)).await,
        "grandchild {grandchild} outlived the crashed child"
    );
    assert_eq!(
        text_of(
            &clients[1]
                .call(json!(4), "echo", json!({"message":"same session"}))
                .await
        ),
        "same session"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn exit_on_child_exit_ends_the_proxy_with_the_childs_code() {
    let proxy = Proxy::start(&["--shared", "--exit-on-child-exit"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let _ = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crash","arguments":{"code":7}}})).await;
    let r = tokio::time::timeout(STEP, proxy.task)
        .await
        .expect("proxy ends")
        .unwrap();
    let err = r.expect_err("the child's exit ends the proxy");
    assert_eq!(err.exit_code(), 7);
}

#[tokio::test]
async fn stateless_mode_mints_no_session_and_refuses_get() {
    let proxy = Proxy::start(&["--stateless"]).await;
    let c = Client::new(&proxy.mcp());
    let r = c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("mcp-session-id").is_none());
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await
            .status(),
        202
    );
    assert_eq!(
        text_of(
            &c.call(json!(1), "echo", json!({"message":"no session"}))
                .await
        ),
        "no session"
    );
    let g = c
        .http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), 405);
    proxy.stop().await;
}

#[tokio::test]
async fn later_sessions_get_the_cached_initialize_result() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut a = Client::new(&proxy.mcp());
    let mut b = Client::new(&proxy.mcp());
    let ia = a.initialize("2025-11-25", json!({})).await;
    let ib = b.initialize("2025-11-25", json!({})).await;
    assert_eq!(ia, ib);
    // The child was initialized once, in the first session's version, as
    // the proxy (its one client), not as that session's client.
    let info: Value =
        serde_json::from_str(&text_of(&b.call(json!(1), "client_info", json!({})).await)).unwrap();
    assert_eq!(info["protocolVersion"], "2025-11-25", "{info}");
    assert_eq!(info["clientInfo"]["name"], "mcp-proxy", "{info}");
    proxy.stop().await;
}

/// Calls `sample` in session `c` and answers the sampling request it gets
/// on the call's stream, if one comes; returns the call's answer.
async fn sample_in(c: &Client, id: i64) -> Value {
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"p"}}});
    let mut post = SseStream::new(c.post(&call).await);
    let first = post.next_json().await;
    if first["method"] != "sampling/createMessage" {
        return first;
    }
    let answer = json!({"jsonrpc":"2.0","id":first["id"],"result":{"role":"assistant","content":{"type":"text","text":"sampled"},"model":"m"}});
    assert_eq!(c.post(&answer).await.status(), 202);
    post.next_json().await
}

#[tokio::test]
async fn a_shared_child_is_told_what_the_proxy_relays_and_asks_each_session_only_what_it_declared()
{
    // A server that asks only for what its client declared, as SDK servers do.
    let proxy = Proxy::start_child(
        &["--shared"],
        &support::example("everything"),
        &["--check-capabilities"],
    )
    .await;
    let mut first = Client::new(&proxy.mcp());
    first.initialize("2025-11-25", json!({})).await;
    let mut second = Client::new(&proxy.mcp());
    second
        .initialize("2025-11-25", json!({"sampling": {}}))
        .await;
    let info: Value = serde_json::from_str(&text_of(
        &second.call(json!(1), "client_info", json!({})).await,
    ))
    .unwrap();
    assert_eq!(info["clientInfo"]["name"], "mcp-proxy", "{info}");
    assert_eq!(
        info["capabilities"],
        json!({"roots": {"listChanged": true}, "sampling": {"tools": {}}, "elicitation": {"form": {}, "url": {}}}),
        "what the proxy can relay, not what the first session declared"
    );
    // The session that declared sampling gets the child's request.
    let r = sample_in(&second, 2).await;
    assert_eq!(text_of(&r), "sampled", "{r}");
    // The one that did not is not asked: the child is refused at once.
    let r = tokio::time::timeout(STEP, sample_in(&first, 2))
        .await
        .expect("refused at once, not after the child's wait");
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        text_of(&r).contains("did not declare the capability for sampling/createMessage"),
        "{r}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn each_session_sees_only_logs_at_its_own_level() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 2, json!({})).await;
    let (quiet, chatty) = (&clients[0], &clients[1]);
    quiet
        .request(json!(1), "logging/setLevel", json!({"level":"error"}))
        .await;
    chatty
        .request(json!(1), "logging/setLevel", json!({"level":"debug"}))
        .await;
    // The child now logs at debug (the most verbose asked for) ...
    let msgs = chatty
        .request(
            json!(2),
            "tools/call",
            json!({"name":"log","arguments":{"level":"info","message":"for chatty"}}),
        )
        .await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["method"], "notifications/message");
    assert_eq!(msgs[0]["params"]["data"], "for chatty");
    // ... but the quiet session still sees only errors.
    let msgs = quiet
        .request(
            json!(2),
            "tools/call",
            json!({"name":"log","arguments":{"level":"info","message":"too low"}}),
        )
        .await;
    assert_eq!(
        msgs.len(),
        1,
        "an info log leaked past the session's error level: {msgs:?}"
    );
    let msgs = quiet
        .request(
            json!(3),
            "tools/call",
            json!({"name":"log","arguments":{"level":"error","message":"loud"}}),
        )
        .await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    proxy.stop().await;
}

/// `tasks/list` of one client: the task ids it sees.
async fn listed_tasks(c: &Client) -> Vec<String> {
    let msgs = c.request(json!("list"), "tasks/list", json!({})).await;
    let tasks = msgs.last().unwrap()["result"]["tasks"].clone();
    tasks
        .as_array()
        .unwrap_or_else(|| panic!("a task list: {msgs:?}"))
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_string())
        .collect()
}

async fn create_echo_task(c: &Client, message: &str) -> String {
    let msgs = c
        .request(
            json!(1),
            "tools/call",
            json!({"name":"echo","arguments":{"message":message},"task":{"ttl":60000}}),
        )
        .await;
    let answer = msgs.last().unwrap();
    answer["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a CreateTaskResult: {answer}"))
        .to_string()
}

#[tokio::test]
async fn tasks_stay_private_to_the_session_that_created_them() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut clients = sessions(&proxy, 2, json!({})).await;
    let mut streams = Vec::new();
    for c in &clients {
        streams.push(SseStream::new(get_stream(&proxy, c).await.unwrap()));
    }
    let a_task = create_echo_task(&clients[0], "for a").await;
    let b_task = create_echo_task(&clients[1], "for b").await;
    assert_ne!(a_task, b_task);
    // Each status notification reaches its creator only: the first event on
    // each GET stream is that session's own task.
    for (stream, task) in streams.iter_mut().zip([&a_task, &b_task]) {
        let status = stream.next_json().await;
        assert_eq!(status["method"], "notifications/tasks/status");
        assert_eq!(&status["params"]["taskId"], task.as_str());
    }
    assert_eq!(listed_tasks(&clients[0]).await, vec![a_task.as_str()]);
    assert_eq!(listed_tasks(&clients[1]).await, vec![b_task.as_str()]);

    // Another session's task is "not found", whichever way it is asked for.
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let msgs = clients[1]
            .request(json!(2), method, json!({"taskId": a_task}))
            .await;
        let error = &msgs.last().unwrap()["error"];
        assert_eq!(error["code"], -32602, "{method}: {msgs:?}");
        assert_eq!(error["message"], format!("task not found: {a_task}"));
    }
    // The creator reaches the child: its result, and the child's own refusal
    // to cancel a finished task.
    let result = clients[0]
        .request(json!(3), "tasks/result", json!({"taskId": a_task}))
        .await;
    assert_eq!(text_of(result.last().unwrap()), "for a");
    let cancel = clients[0]
        .request(json!(4), "tasks/cancel", json!({"taskId": a_task}))
        .await;
    let message = cancel.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("already"),
        "the child answered: {cancel:?}"
    );

    // When B ends, its tasks belong to nobody: a new session sees neither.
    let b = clients.pop().unwrap();
    assert_eq!(b.delete(&proxy.mcp()).await.status(), 200);
    let c = sessions(&proxy, 1, json!({})).await.pop().unwrap();
    assert!(listed_tasks(&c).await.is_empty());
    let msgs = c
        .request(json!(5), "tasks/get", json!({"taskId": b_task}))
        .await;
    assert_eq!(msgs.last().unwrap()["error"]["code"], -32602);
    // Nothing else reached A's stream.
    let extra = tokio::time::timeout(Duration::from_millis(300), streams[0].next()).await;
    assert!(
        extra.is_err(),
        "no other session's task messages: {extra:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stateless_clients_share_the_tasks_no_session_owns() {
    let proxy = Proxy::start(&["--stateless"]).await;
    let c = Client::new(&proxy.mcp());
    let task = create_echo_task(&c, "anyone").await;
    // Each POST is its own request with no identity; a later one still finds the task.
    assert!(listed_tasks(&c).await.contains(&task));
    let result = c
        .request(json!(2), "tasks/result", json!({"taskId": task}))
        .await;
    assert_eq!(text_of(result.last().unwrap()), "anyone");
    proxy.stop().await;
}

#[tokio::test]
async fn a_restarted_shared_child_gets_the_sessions_subscriptions_back() {
    let proxy = Proxy::start(&["--shared"]).await;
    let clients = sessions(&proxy, 2, json!({})).await;
    let mut stream = SseStream::new(get_stream(&proxy, &clients[0]).await.unwrap());
    clients[0]
        .request(json!(1), "resources/subscribe", json!({"uri":"demo://a"}))
        .await;
    let before = text_of(&clients[1].call(json!(1), "pid", json!({})).await);
    clients[1].call(json!(2), "crash", json!({"code": 3})).await;
    // Once the new child runs, it holds the subscription again: `touch`
    // reports it subscribed, and the update reaches the subscriber.
    let touched = call_until(&clients[1], "touch", json!({"uri":"demo://a"}), |r| {
        text_of(r) == "sent"
    })
    .await;
    assert!(
        touched.is_some(),
        "the restarted child was subscribed again"
    );
    let after = text_of(&clients[1].call(json!(4), "pid", json!({})).await);
    assert_ne!(before, after, "a new child process");
    let update = stream.next_json().await;
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );
    assert_eq!(update["params"]["uri"], "demo://a");
    proxy.stop().await;
}

#[tokio::test]
async fn a_get_stream_that_carried_a_server_request_outlives_a_shared_restart() {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"sampling": {}})).await;
    let mut get = SseStream::new(get_stream(&proxy, &c).await.unwrap());
    // A JSON-only POST has no stream of its own: the child's sampling
    // request travels on the GET stream and stays unanswered.
    c.accept = "application/json";
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"p"}}});
    let sample = c.post(&body);
    let crash = async {
        let request = get.next_json().await;
        assert_eq!(request["method"], "sampling/createMessage");
        c.call(json!(2), "crash", json!({"code": 3})).await
    };
    let (sample, _) = tokio::join!(sample, crash);
    assert_eq!(read_messages(sample).await[0]["error"]["code"], -32000);
    // After the restart the same GET stream still delivers.
    let notify = json!({"method":"notifications/tools/list_changed"});
    let sent = call_until(&c, "notify", notify, |_| true).await;
    assert!(sent.is_some(), "the child came back");
    let event = get.next_json().await;
    assert_eq!(
        event["method"], "notifications/tools/list_changed",
        "{event}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stateless_requests_follow_their_own_protocol_version_header() {
    let proxy = Proxy::start(&["--stateless"]).await;
    let c = Client::new(&proxy.mcp());
    let post = |version: Option<&'static str>, body: Value| {
        let mut req = c
            .http
            .post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v);
        }
        req.send()
    };
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a"}}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"b"}}}
    ]);
    let ok = post(Some("2025-03-26"), batch.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answers = read_messages(ok).await;
    assert_eq!(answers.len(), 2, "both answered: {answers:?}");
    assert_eq!(post(None, batch.clone()).await.unwrap().status(), 200);
    let r = post(Some("2025-06-18"), batch).await.unwrap();
    assert_eq!(r.status(), 400, "batches need 2025-03-26");
    let single = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"c"}}});
    assert_eq!(
        post(Some("1999-01-01"), single.clone())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(Some("2025-11-25"), single).await.unwrap().status(),
        200
    );
    proxy.stop().await;
}

/// Regression: initializes that waited for another session's handshake to
/// a shared child each ran a handshake of their own after it failed, one
/// behind the other (k failing handshakes for k clients). They now share
/// the outcome of the handshake they waited for.
#[tokio::test]
async fn concurrent_initializes_share_the_one_handshake_in_progress() {
    let log = std::env::temp_dir().join(format!(
        "mcp-sidecar-init-{}-{}.log",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    // The child reads its stdin through `tee`, which records every line;
    // it answers initialize with an error after a moment (the handshake in
    // progress that the others wait for).
    let script = format!(
        "tee -a '{}' | (sleep 0.5; exec '{}' --fail-initialize)",
        log.display(),
        support::example("everything")
    );
    let proxy = Proxy::start_child(
        &["--shared", "--upstream-protocol", "legacy"],
        "sh",
        &["-c", &script],
    )
    .await;
    let init = |n: u64| {
        let c = Client::new(&proxy.mcp());
        async move {
            let body = json!({"jsonrpc":"2.0","id":n,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
            let r = c.post(&body).await;
            let msgs = read_messages(r).await;
            msgs.last().cloned().unwrap_or(Value::Null)
        }
    };
    let answers = tokio::join!(init(1), init(2), init(3), init(4));
    for a in [&answers.0, &answers.1, &answers.2, &answers.3] {
        assert!(a.get("error").is_some(), "{a}");
    }
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let handshakes = lines.matches(r#""method":"initialize""#).count();
    assert_eq!(handshakes, 1, "one handshake for four clients:\n{lines}");
    proxy.stop().await;
}

/// Regression: a shared child that keeps exiting before anything ever
/// initialized it was reported ready again after every restart, so `/ready`
/// said 200 for much of the crash loop.
#[tokio::test]
async fn ready_is_503_while_a_shared_child_crash_loops_before_its_first_initialize() {
    let proxy = Proxy::start_child(
        &["--shared", "--restart-max-backoff", "1s"],
        "sh",
        &["-c", "sleep 0.1; exit 1"],
    )
    .await;
    // The first session starts the shared child; its initialize fails.
    let c = Client::new(&proxy.mcp());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    let _ = read_messages(r).await;
    // Three quick deaths in a row make it a crash loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut ok, mut polls) = (0, 0);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let r = reqwest::get(format!("{}/ready", proxy.base()))
            .await
            .unwrap();
        polls += 1;
        if r.status() == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        ok, 0,
        "{ok} of {polls} polls said ready during the crash loop"
    );
    proxy.stop().await;
}

/// The other half: a crash loop that ends (the child now stays up) makes
/// the proxy ready again without any client, so a readiness gate that
/// keeps clients away cannot keep it unready for good.
#[tokio::test]
async fn ready_returns_once_a_crash_looping_shared_child_stays_up() {
    let count = std::env::temp_dir().join(format!(
        "mcp-sidecar-crashes-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    // The first four children die after 0.1 s; the fifth stays up.
    let script = format!(
        "n=$(cat '{f}' 2>/dev/null || echo 0); echo $((n+1)) > '{f}'; if [ $n -lt 4 ]; then sleep 0.1; exit 1; fi; exec '{e}'",
        f = count.display(),
        e = support::example("everything")
    );
    let proxy = Proxy::start_child(
        &["--shared", "--restart-max-backoff", "1s"],
        "sh",
        &["-c", &script],
    )
    .await;
    let c = Client::new(&proxy.mcp());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    let _ = read_messages(r).await;
    let ready = || async {
        let r = reqwest::get(format!("{}/ready", proxy.base()))
            .await
            .unwrap();
        (r.status() == 200, r.text().await.unwrap_or_default())
    };
    let (mut saw_loop, mut back) = (false, false);
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        let (ok, text) = ready().await;
        if text.contains("keeps exiting") {
            saw_loop = true;
        } else if ok && saw_loop {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = std::fs::remove_file(&count);
    assert!(saw_loop, "the crash loop was reported");
    assert!(back, "ready again once a child stayed up");
    // And it serves.
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    proxy.stop().await;
}

/// Regression: a `--stateless` child was initialized with what a session
/// can be asked (roots with `listChanged`, sampling, elicitation), but a
/// stateless POST has no session and no stream to carry a request of the
/// child's: every such request was refused, to a child told it could ask.
/// It is now told what the mode carries: sampling, elicitation and roots
/// for the 2026-07-28 clients it also serves (asked with `input_required`),
/// and no `listChanged`, since a `roots/list` that follows a stateless
/// client's change notification relates to no request and reaches nobody.
#[tokio::test]
async fn a_stateless_child_is_told_only_what_stateless_mode_can_carry() {
    let proxy = Proxy::start_child(
        &["--stateless"],
        &support::example("everything"),
        &["--check-capabilities"],
    )
    .await;
    let c = Client::new(&proxy.mcp());
    let r = c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(r.status(), 200);
    let info: Value =
        serde_json::from_str(&text_of(&c.call(json!(1), "client_info", json!({})).await)).unwrap();
    assert_eq!(info["clientInfo"]["name"], "mcp-proxy", "{info}");
    assert_eq!(
        info["capabilities"],
        json!({"roots": {}, "sampling": {"tools": {}}, "elicitation": {"form": {}, "url": {}}}),
        "{info}"
    );
    // What is declared is carried: a 2026-07-28 client's call is asked.
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"p"},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}}});
    let r = support::json_of(support::modern_post(&proxy, &call, "application/json").await).await;
    assert_eq!(r["result"]["resultType"], "input_required", "{r}");
    proxy.stop().await;
}

/// Regression: a shared child that asks `roots/list` on a session's
/// `notifications/roots/list_changed` (as SDK servers do) asks it outside
/// any request; with several sessions attached none was "the" session, and
/// the child was refused. The request now goes to the session whose change
/// notification the proxy passed on last (once per notification); the
/// others are not asked, and their roots are never mixed into its answer.
#[tokio::test]
async fn a_shared_childs_roots_list_after_a_change_goes_to_the_session_that_announced_it() {
    let proxy = Proxy::start(&["--shared"]).await;
    let roots = json!({"roots": {"listChanged": true}});
    let clients = sessions(&proxy, 3, roots).await;
    let (changed, idle) = (&clients[1], &clients[2]);
    let get = changed
        .http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", changed.session.as_deref().unwrap())
        .header("mcp-protocol-version", &changed.version)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let mut stream = SseStream::new(get);
    let r = changed
        .post(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}))
        .await;
    assert_eq!(r.status(), 202);
    // Asked on its stream (before, the child was refused at once, and
    // nothing came). No call is in flight meanwhile: one would be the
    // request the child's asks for roots for.
    let asked = tokio::time::timeout(STEP, async {
        loop {
            let m = stream.next_json().await;
            if m["method"] == "roots/list" {
                return m;
            }
        }
    })
    .await
    .expect("the session that announced the change is asked for its roots");
    let answer =
        json!({"jsonrpc":"2.0","id":asked["id"],"result":{"roots":[{"uri":"file:///changed"}]}});
    assert_eq!(changed.post(&answer).await.status(), 202);
    let mut seen = Value::Null;
    for _ in 0..250 {
        let r = idle
            .call(json!("seen"), "roots", json!({"after_change": true}))
            .await;
        seen = serde_json::from_str(&text_of(&r)).unwrap();
        if seen.as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, json!([[{"uri": "file:///changed"}]]));
    proxy.stop().await;
}
