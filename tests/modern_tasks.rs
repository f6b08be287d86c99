//! The 2026-07-28 Tasks extension (`io.modelcontextprotocol/tasks`) over
//! a 2025-11-25 child's tasks (the `everything` example: `echo` may run
//! as a task, `task_job` runs only as one), through the proxy on a real
//! socket.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Proxy, STEP};

const MODERN: &str = "2026-07-28";
const EXTENSION: &str = "io.modelcontextprotocol/tasks";
const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";

fn meta(declares: bool) -> Value {
    let capabilities = if declares {
        json!({ "extensions": { EXTENSION: {} }, "elicitation": {} })
    } else {
        json!({})
    };
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// POSTs a 2026-07-28 request with the headers its body implies (`Mcp-Name`
/// is the tool's name, or the task's id); returns the status and the body.
async fn post(proxy: &Proxy, key: Option<&str>, body: &Value) -> (u16, Value) {
    let r = support::modern_post_as(proxy, key, body, &[]).await;
    let status = r.status().as_u16();
    (status, support::json_of(r).await)
}

fn call(id: u64, tool: &str, args: Value, declares: bool) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":tool,"arguments":args,"_meta":meta(declares)}})
}

fn task_request(id: u64, method: &str, task: &str, declares: bool) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":{
        "taskId":task,"_meta":meta(declares)}})
}

/// Polls `tasks/get` until the task is no longer `working`.
async fn poll(proxy: &Proxy, key: Option<&str>, task: &str) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, v) = post(proxy, key, &task_request(9, "tasks/get", task, true)).await;
        assert_eq!(status, 200, "{v}");
        let result = v["result"].clone();
        assert_eq!(result["resultType"], "complete", "{v}");
        assert_eq!(result["taskId"], task, "{v}");
        if result["status"] != "working" {
            return result;
        }
        assert!(Instant::now() < deadline, "the task is still working: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `tasks/get` until the task's status is `want` (or it ended
/// otherwise, which fails the test).
async fn poll_until(proxy: &Proxy, key: Option<&str>, task: &str, want: &str) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, v) = post(proxy, key, &task_request(9, "tasks/get", task, true)).await;
        assert_eq!(status, 200, "{v}");
        let result = v["result"].clone();
        if result["status"] == want {
            return result;
        }
        assert!(
            result["status"] == "working" || result["status"] == "input_required",
            "the task ended as {want:?} never came: {v}"
        );
        assert!(Instant::now() < deadline, "never {want}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn update(id: u64, task: &str, responses: Value) -> Value {
    let mut v = task_request(id, "tasks/update", task, true);
    v["params"]["inputResponses"] = responses;
    v
}

/// The only input request of an `input_required` task: its key and itself.
fn only_input(task: &Value) -> (String, Value) {
    let requests = task["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{task}");
    let (k, v) = requests.iter().next().unwrap();
    (k.clone(), v.clone())
}

#[tokio::test]
async fn discover_declares_the_extension_of_a_child_that_runs_tool_calls_as_tasks() {
    let proxy = Proxy::start(&[]).await;
    let discover =
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":meta(false)}});
    let (status, v) = post(&proxy, None, &discover).await;
    assert_eq!(status, 200);
    let caps = &v["result"]["capabilities"];
    assert_eq!(caps["extensions"][EXTENSION], json!({}), "{v}");
    assert!(
        caps.get("tasks").is_none(),
        "2025-11-25's member is gone: {v}"
    );
    proxy.stop().await;
}

/// 2026-07-28's Tool has no `execution`: whether a call becomes a task is
/// the server's choice. A listing leaves 2025-11-25's `taskSupport` out,
/// and the proxy still knows it (a required task still goes as one).
#[tokio::test]
async fn tools_list_leaves_out_2025s_execution() {
    let proxy = Proxy::start(&[]).await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":meta(true)}});
    let (status, v) = post(&proxy, None, &list).await;
    assert_eq!(status, 200, "{v}");
    let tools = v["result"]["tools"].as_array().expect("tools");
    let job = tools
        .iter()
        .find(|t| t["name"] == "task_job")
        .expect("task_job");
    assert!(job.get("execution").is_none(), "{job}");
    assert!(job["inputSchema"].is_object(), "{job}");
    assert!(tools.iter().all(|t| t.get("execution").is_none()), "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    let (_, v) = post(&proxy, None, &call(2, "task_job", json!({}), true)).await;
    assert_eq!(v["result"]["resultType"], "task", "{v}");
    let (status, v) = post(&proxy, None, &call(3, "task_job", json!({}), false)).await;
    assert_eq!((status, &v["error"]["code"]), (400, &json!(-32021)), "{v}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_task_is_created_polled_and_its_result_or_error_carried_in_the_task() {
    let proxy = Proxy::start(&[]).await;
    // Required: a task handle, in the extension's shape.
    let (status, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 200, "outcome": "ok"}), true),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let created = &v["result"];
    assert_eq!(created["resultType"], "task", "{v}");
    assert_eq!(created["status"], "working", "{v}");
    assert!(created.get("task").is_none(), "{v}");
    assert!(created["ttlMs"].is_null(), "no ttl asked, none given: {v}");
    assert_eq!(created["pollIntervalMs"], 50, "{v}");
    assert!(created["createdAt"].is_string() && created["lastUpdatedAt"].is_string());
    let task = created["taskId"].as_str().unwrap().to_string();
    let done = poll(&proxy, None, &task).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["content"][0]["text"], "the job is done");

    // A tool error is `completed` (2025-11-25 called it `failed`).
    let (_, v) = post(
        &proxy,
        None,
        &call(2, "task_job", json!({"outcome": "tool_error"}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    let done = poll(&proxy, None, &task).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["isError"], true, "{done}");

    // A JSON-RPC error is `failed`, with the error.
    let (_, v) = post(
        &proxy,
        None,
        &call(3, "task_job", json!({"outcome": "rpc_error"}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    let done = poll(&proxy, None, &task).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["message"], "the job broke", "{done}");
    assert!(done.get("result").is_none(), "{done}");

    // Optional: a task too, for a client that declared the extension.
    let (_, v) = post(
        &proxy,
        None,
        &call(4, "echo", json!({"message": "hi"}), true),
    )
    .await;
    assert_eq!(v["result"]["resultType"], "task", "{v}");
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    assert_eq!(
        poll(&proxy, None, &task).await["result"]["content"][0]["text"],
        "hi"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_did_not_declare_the_extension_never_gets_a_task() {
    let proxy = Proxy::start(&[]).await;
    // Optional: an ordinary call.
    let (status, v) = post(
        &proxy,
        None,
        &call(1, "echo", json!({"message": "hi"}), false),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    // A 2025-11-25 `task` member of its own is not passed on.
    let mut sneaky = call(2, "echo", json!({"message": "hi"}), false);
    sneaky["params"]["task"] = json!({"ttl": 1000});
    let (_, v) = post(&proxy, None, &sneaky).await;
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    assert!(v["result"].get("task").is_none(), "{v}");
    // Required: refused, naming the extension.
    let (status, v) = post(&proxy, None, &call(3, "task_job", json!({}), false)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32021, "{v}");
    assert_eq!(
        v["error"]["data"]["requiredCapabilities"]["extensions"][EXTENSION],
        json!({}),
        "{v}"
    );
    // The extension's methods too.
    for method in ["tasks/get", "tasks/cancel", "tasks/update"] {
        let (status, v) = post(&proxy, None, &task_request(4, method, "any", false)).await;
        assert_eq!(status, 400, "{method}: {v}");
        assert_eq!(v["error"]["code"], -32021, "{method}: {v}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn cancel_update_and_the_methods_the_extension_does_not_have() {
    let proxy = Proxy::start(&[]).await;
    let (_, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 60000}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    // 2026-07-28 acknowledges a cancellation with an empty result.
    let (status, v) = post(&proxy, None, &task_request(2, "tasks/cancel", &task, true)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert!(v["result"].get("status").is_none(), "{v}");
    assert_eq!(poll(&proxy, None, &task).await["status"], "cancelled");
    // A finished task's cancellation is acknowledged too (the extension:
    // cancellation is cooperative, and may come after the task ended),
    // though the 2025-11-25 child refuses it with -32602.
    let (status, v) = post(&proxy, None, &task_request(3, "tasks/cancel", &task, true)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(poll(&proxy, None, &task).await["status"], "cancelled");
    // An unknown task's cancellation still gets -32602.
    let (_, v) = post(&proxy, None, &task_request(3, "tasks/cancel", "nope", true)).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // Responses for keys not outstanding are ignored, as the extension says.
    let (status, v) = post(
        &proxy,
        None,
        &update(4, &task, json!({"k": {"action": "accept"}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!({"resultType": "complete"}), "{v}");
    // An update of an unknown task, or without responses, is refused.
    let (_, v) = post(&proxy, None, &update(4, "nope", json!({}))).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["message"], "task not found: nope", "{v}");
    for responses in [json!(null), json!([]), json!({"k": "accept"})] {
        let (status, v) = post(&proxy, None, &update(4, &task, responses.clone())).await;
        assert_eq!(status, 400, "{responses}: {v}");
        assert_eq!(v["error"]["code"], -32602, "{responses}: {v}");
    }
    // An unknown task: -32602, the extension's code for it.
    let (_, v) = post(&proxy, None, &task_request(5, "tasks/get", "nope", true)).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // 2025-11-25's tasks/result and tasks/list are not the extension's.
    for method in ["tasks/result", "tasks/list"] {
        let (status, v) = post(&proxy, None, &task_request(6, method, &task, true)).await;
        assert_eq!(status, 404, "{method}: {v}");
        assert_eq!(v["error"]["code"], -32601, "{method}: {v}");
    }
    // Mcp-Name must be the task's id.
    let body = task_request(7, "tasks/get", &task, true);
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tasks/get")
        .header("mcp-name", "another-task")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32020, "{v}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_task_is_its_creators_on_a_shared_child() {
    let d = std::env::temp_dir().join(format!("mcp-tasks27-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let keys = d.join("keys");
    std::fs::write(&keys, format!("alice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    let proxy = Proxy::start(&["--shared", "--api-key-file", keys.to_str().unwrap()]).await;
    let (_, v) = post(
        &proxy,
        Some(KEY_A),
        &call(1, "task_job", json!({"ms": 60000}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    for method in ["tasks/get", "tasks/cancel"] {
        let (_, v) = post(&proxy, Some(KEY_B), &task_request(2, method, &task, true)).await;
        assert_eq!(v["error"]["code"], -32602, "{method}: {v}");
        assert_eq!(
            v["error"]["message"],
            format!("task not found: {task}"),
            "{method}: {v}"
        );
    }
    let (_, v) = post(
        &proxy,
        Some(KEY_A),
        &task_request(3, "tasks/get", &task, true),
    )
    .await;
    assert_eq!(v["result"]["status"], "working", "{v}");
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&d);
}

fn key_file(tag: &str) -> (std::path::PathBuf, String) {
    let d = std::env::temp_dir().join(format!("mcp-tasks27-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let keys = d.join("keys");
    std::fs::write(&keys, format!("alice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    (d, keys.to_string_lossy().into_owned())
}

/// Regression: a request a 2025-11-25 child sent for a task (`_meta`
/// related-task) whose creator has no session (a 2026-07-28 or stateless
/// client) went to whichever call was the only one in flight: on a shared
/// child, another principal's. Bob's `sleep` was answered with
/// `input_required` carrying Alice's task's elicitation, and Alice's task
/// waited for Bob's answer. Now it waits for Alice: her `tasks/get` shows
/// it, her `tasks/update` answers it; Bob can neither see nor answer it.
#[tokio::test]
async fn a_tasks_own_request_never_reaches_a_bystanders_call() {
    let (d, keys) = key_file("bystander");
    let proxy = Proxy::start(&["--shared", "--api-key-file", &keys]).await;
    let bob = {
        let url = proxy.mcp();
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
            "name":"sleep","arguments":{"ms":1500},"_meta":{
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}}});
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", "tools/call")
                .header("mcp-name", "sleep")
                .header("x-api-key", KEY_B)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    // Bob's call is in flight at the child before Alice's task asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = post(
        &proxy,
        Some(KEY_A),
        &call(1, "task_job", json!({"ms": 60000, "elicit": true}), true),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    let asked = poll_until(&proxy, Some(KEY_A), &task, "input_required").await;
    let (key, _) = only_input(&asked);
    let bob = tokio::time::timeout(STEP, bob).await.unwrap().unwrap();
    assert_eq!(bob["result"]["content"][0]["text"], "slept 1500", "{bob}");
    // Bob learns nothing of it, and cannot answer it.
    for method in ["tasks/get", "tasks/update"] {
        let mut r = task_request(2, method, &task, true);
        r["params"]["inputResponses"] =
            json!({ key.as_str(): {"action": "accept", "content": {"answer": "bob's"}} });
        let (_, v) = post(&proxy, Some(KEY_B), &r).await;
        assert_eq!(v["error"]["code"], -32602, "{method}: {v}");
        assert_eq!(
            v["error"]["message"],
            format!("task not found: {task}"),
            "{v}"
        );
    }
    let still = poll_until(&proxy, Some(KEY_A), &task, "input_required").await;
    assert_eq!(only_input(&still).0, key, "{still}");
    let answer = json!({ key.as_str(): {"action": "accept", "content": {"answer": "alice's"}} });
    let (status, v) = post(&proxy, Some(KEY_A), &update(3, &task, answer)).await;
    assert_eq!(status, 200, "{v}");
    let done = poll_until(&proxy, Some(KEY_A), &task, "completed").await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("answered:") && text.contains("alice's"),
        "{done}"
    );
    assert!(!text.contains("bob's"), "{done}");
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&d);
}

/// The extension: a task's own request of the 2025-11-25 child (its
/// `elicitation/create` tied to the task) makes the task `input_required`
/// with the request in `inputRequests` until `tasks/update` answers it;
/// the answer reaches the child as the response to its request.
#[tokio::test]
async fn a_tasks_input_request_is_polled_and_answered_with_tasks_update() {
    let proxy = Proxy::start(&[]).await;
    let (_, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 60000, "elicit": true}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    let asked = poll_until(&proxy, None, &task, "input_required").await;
    assert_eq!(asked["resultType"], "complete", "{asked}");
    let (key, request) = only_input(&asked);
    assert_eq!(request["method"], "elicitation/create", "{asked}");
    assert_eq!(request["params"]["message"], "Which job?", "{asked}");
    assert!(asked.get("result").is_none(), "{asked}");
    // Asked again, the same request under the same key.
    let again = poll_until(&proxy, None, &task, "input_required").await;
    assert_eq!(again["inputRequests"], asked["inputRequests"]);
    let answer =
        json!({ key.as_str(): {"action": "accept", "content": {"answer": "the blue one"}} });
    let (status, v) = post(&proxy, None, &update(2, &task, answer.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!({"resultType": "complete"}), "{v}");
    let done = poll_until(&proxy, None, &task, "completed").await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("answered:"), "{done}");
    assert!(text.contains("the blue one"), "{done}");
    assert!(done.get("inputRequests").is_none(), "{done}");
    // Answered once: the same answer again is ignored, not an error.
    let (status, v) = post(&proxy, None, &update(3, &task, answer)).await;
    assert_eq!(
        (status, &v["result"]["resultType"]),
        (200, &json!("complete")),
        "{v}"
    );
    proxy.stop().await;
}

/// A task's request is asked only of a poll that declares what it needs
/// (each request's own capabilities): one that declares the extension but
/// not elicitation gets the task without it, and the child is refused.
#[tokio::test]
async fn a_tasks_input_request_needs_the_polls_capability() {
    let proxy = Proxy::start(&[]).await;
    let (_, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 60000, "elicit": true}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    poll_until(&proxy, None, &task, "input_required").await;
    let mut bare = task_request(2, "tasks/get", &task, true);
    bare["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({ "extensions": { EXTENSION: {} } });
    let (_, v) = post(&proxy, None, &bare).await;
    assert!(v["result"].get("inputRequests").is_none(), "{v}");
    assert_ne!(v["result"]["status"], "input_required", "{v}");
    let done = poll_until(&proxy, None, &task, "completed").await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("refused:") && text.contains("did not declare"),
        "{done}"
    );
    proxy.stop().await;
}

/// The held requests are bounded (`--max-server-requests`): past it the
/// child is refused at once; a cancelled task's requests leave the table
/// (the child is refused them), so they do not keep another task's out.
/// One nobody answers is refused after `--request-timeout`.
#[tokio::test]
async fn a_tasks_held_requests_are_bounded_released_and_timed_out() {
    let proxy = Proxy::start(&["--max-server-requests", "1", "--request-timeout", "2s"]).await;
    let job = |id| call(id, "task_job", json!({"ms": 60000, "elicit": true}), true);
    let (_, v) = post(&proxy, None, &job(1)).await;
    let a = v["result"]["taskId"].as_str().unwrap().to_string();
    poll_until(&proxy, None, &a, "input_required").await;
    let (_, v) = post(&proxy, None, &job(2)).await;
    let b = v["result"]["taskId"].as_str().unwrap().to_string();
    let refused = poll_until(&proxy, None, &b, "completed").await;
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("refused:") && text.contains("--max-server-requests"),
        "{refused}"
    );
    let (_, v) = post(&proxy, None, &task_request(3, "tasks/cancel", &a, true)).await;
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    let (_, v) = post(&proxy, None, &job(4)).await;
    let c = v["result"]["taskId"].as_str().unwrap().to_string();
    poll_until(&proxy, None, &c, "input_required").await;
    // Nobody answers: the child is refused once --request-timeout passed.
    let expired = poll_until(&proxy, None, &c, "completed").await;
    let text = expired["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("refused:") && text.contains("did not answer"),
        "{expired}"
    );
    proxy.stop().await;
}

/// A task lives in its principal's child: one nobody polls for
/// `--session-idle-timeout` goes with that child when it is stopped, and
/// a later poll gets "task not found", never a hang or another child's task.
#[tokio::test]
async fn a_task_nobody_polls_goes_with_its_idle_child() {
    let proxy = Proxy::start(&["--session-idle-timeout", "1s"]).await;
    let (_, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 60000}), true),
    )
    .await;
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    polled_until_gone(&proxy, 2, &task, "the idle child was never stopped").await;
    proxy.stop().await;
}

/// Polls `task` (`tasks/get` under `id`) every 1.5 s while it is
/// working, until its child is gone and the task with it ("task not
/// found"); fails with `never` past [`STEP`].
async fn polled_until_gone(proxy: &Proxy, id: u64, task: &str, never: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, v) = post(proxy, None, &task_request(id, "tasks/get", task, true)).await;
        if v["error"]["code"] == -32602 {
            assert_eq!(
                v["error"]["message"],
                format!("task not found: {task}"),
                "{v}"
            );
            return;
        }
        assert_eq!(v["result"]["status"], "working", "{v}");
        assert!(Instant::now() < deadline, "{never}: {v}");
    }
}

/// A 2026-07-28 client has no session to keep its child alive between
/// polls: a live task does, for its ttl (the child's own), so a client
/// that polls less often than `--session-idle-timeout` still finds its
/// task. Past the ttl the child goes as any idle one does.
#[tokio::test]
async fn a_task_keeps_its_child_alive_for_its_ttl() {
    let proxy = Proxy::start(&["--session-idle-timeout", "1s"]).await;
    let (_, v) = post(
        &proxy,
        None,
        &call(1, "task_job", json!({"ms": 60000, "ttl": 4000}), true),
    )
    .await;
    assert_eq!(v["result"]["ttlMs"], 4000, "{v}");
    let task = v["result"]["taskId"].as_str().unwrap().to_string();
    // No event to await: the child must still be there after twice the
    // idle timeout without a poll.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, v) = post(&proxy, None, &task_request(2, "tasks/get", &task, true)).await;
    assert_eq!(v["result"]["status"], "working", "{v}");
    polled_until_gone(&proxy, 3, &task, "the child outlived its task's ttl").await;
    proxy.stop().await;
}

/// The extension: a client that asks `subscriptions/listen` for task
/// status notifications without declaring it MUST get -32021; one that
/// declared it is acknowledged without `taskIds` (none are sent).
#[tokio::test]
async fn a_listen_for_task_notifications_needs_the_extension() {
    let proxy = Proxy::start(&[]).await;
    let listen = |declares: bool| {
        json!({"jsonrpc":"2.0","id":5,"method":"subscriptions/listen","params":{
            "notifications":{"taskIds":["t-1"],"toolsListChanged":true},"_meta":meta(declares)}})
    };
    let (status, v) = post(&proxy, None, &listen(false)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["id"], 5);
    assert_eq!(v["error"]["code"], -32021, "{v}");
    // Declared: the stream opens with an acknowledgment that leaves taskIds out.
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "subscriptions/listen")
        .body(listen(true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = support::SseStream::new(r);
    let ack = stream.next_json().await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );
    assert!(
        ack["params"]["notifications"].get("taskIds").is_none(),
        "{ack}"
    );
    drop(stream);
    proxy.stop().await;
}
