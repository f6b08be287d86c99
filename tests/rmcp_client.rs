//! The official Rust MCP SDK (`rmcp`) as a real client against the proxy, in
//! both eras: session-based Streamable HTTP (`initialize`, 2025-11-25) and
//! stateless Streamable HTTP (`server/discover`, 2026-07-28), through the same
//! proxy process at once. The proxy runs in-process over the `everything`
//! example child; every wait has a timeout.

// rmcp marks sampling deprecated (SEP-2577); 2025-era servers still use it.
#![allow(deprecated)]

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
    ElicitationAction, Implementation, JsonObject, ListRootsResult, LoggingLevel,
    LoggingMessageNotificationParam, ProgressNotificationParam, ProtocolVersion, Request, Root,
    SamplingMessage, ServerNotification, ServerResult, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient};
use serde_json::{Value, json};
use support::{Proxy, STEP, alive, eventually};

/// Model name the test client reports for its sampling answers.
const MODEL: &str = "rmcp-test-model";

/// What the test client answers to `roots/list`.
const ROOT: &str = "file:///work/rmcp-root";

/// A client handler that records what the server sent it and answers the
/// server's requests (sampling, roots, elicitation) predictably.
#[derive(Clone, Default)]
struct TestClient {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    logs: Arc<Mutex<Vec<LoggingMessageNotificationParam>>>,
    tool_list_changes: Arc<Mutex<usize>>,
    /// Every server-to-client request, as `method: detail`.
    asked: Arc<Mutex<Vec<String>>>,
    /// Declare the sampling, roots and elicitation capabilities.
    answers_requests: bool,
}

impl TestClient {
    /// A client that declares and answers sampling, roots and elicitation.
    fn answering() -> TestClient {
        TestClient {
            answers_requests: true,
            ..TestClient::default()
        }
    }

    fn progress(&self) -> Vec<ProgressNotificationParam> {
        self.progress.lock().unwrap().clone()
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl ClientHandler for TestClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.logs.lock().unwrap().push(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        *self.tool_list_changes.lock().unwrap() += 1;
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let content = serde_json::to_value(&params.messages[0].content).unwrap();
        let prompt = content
            .get("text")
            .or_else(|| content.pointer("/0/text"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("sampling request without text: {content}"))
            .to_string();
        self.asked
            .lock()
            .unwrap()
            .push(format!("sampling/createMessage: {prompt}"));
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("rmcp sampled <{prompt}>")),
            MODEL.to_string(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.asked.lock().unwrap().push("roots/list".into());
        Ok(ListRootsResult::new(vec![Root::new(ROOT)]))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let message = serde_json::to_value(&request).unwrap()["message"].clone();
        self.asked.lock().unwrap().push(format!(
            "elicitation/create: {}",
            message.as_str().unwrap_or("?")
        ));
        Ok(ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({ "answer": "forty-two" })))
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = if self.answers_requests {
            ClientCapabilities::builder()
                .enable_roots()
                .enable_sampling()
                .enable_elicitation()
                .build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(capabilities, Implementation::new("rmcp-proxy-test", "1.0"))
    }
}

type Client = RunningService<RoleClient, TestClient>;

/// Awaits `fut`, failing the test after [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

fn session_era() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn modern_era() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

/// An rmcp client over Streamable HTTP at `url`.
async fn connect(handler: TestClient, url: &str, lifecycle: ClientLifecycleMode) -> Client {
    let label = format!("{lifecycle:?}");
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    within(
        &format!("rmcp client start ({label})"),
        handler.serve_with_lifecycle(transport, lifecycle),
    )
    .await
    .unwrap_or_else(|e| panic!("rmcp client ({label}) failed to start: {e:?}"))
}

async fn close(client: Client) {
    within("rmcp client cancel", client.cancel())
        .await
        .expect("client closes cleanly");
}

fn args(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, not {other}"),
    }
}

/// Calls `tool` and returns the text of its only content block.
async fn call_text(client: &Client, tool: &'static str, arguments: Value) -> String {
    let result = within(
        &format!("tools/call {tool}"),
        client.call_tool(CallToolRequestParams::new(tool).with_arguments(args(arguments))),
    )
    .await
    .unwrap_or_else(|e| panic!("tools/call {tool} failed: {e:?}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "tool {tool} reported an error: {result:?}"
    );
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .unwrap_or_else(|| panic!("no text content from {tool}: {result:?}"))
        .text
        .clone()
}

async fn echo(client: &Client, message: &str) -> String {
    call_text(client, "echo", json!({ "message": message })).await
}

async fn tool_names(client: &Client) -> Vec<String> {
    within("tools/list", client.list_all_tools())
        .await
        .expect("tools/list succeeds")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

fn assert_has_tools(names: &[String], wanted: &[&str]) {
    for w in wanted {
        assert!(
            names.iter().any(|n| n == w),
            "tool {w} missing from {names:?}"
        );
    }
}

/// Sends `progress{steps}` and returns the request's progress token and the
/// tool's text.
async fn call_progress(client: &Client, steps: u64) -> (rmcp::model::ProgressToken, String) {
    let request = ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new("progress")
            .with_arguments(args(json!({ "steps": steps, "delay_ms": 20 }))),
    ));
    let handle = within(
        "send progress call",
        client.send_cancellable_request(request, PeerRequestOptions::with_timeout(STEP)),
    )
    .await
    .expect("progress call sent");
    let token = handle.progress_token.clone();
    let response = within("progress call answered", handle.await_response())
        .await
        .expect("progress call succeeds");
    let ServerResult::CallToolResult(result) = response else {
        panic!("progress call: unexpected response {response:?}");
    };
    let text = result.content[0].as_text().expect("text").text.clone();
    (token, text)
}

/// Waits until `client` has seen `steps` progress notifications for `token`
/// and checks they are exactly 1..=steps of `steps`; also checks that no
/// notification for any other token arrived.
async fn assert_progress(client: &TestClient, token: &rmcp::model::ProgressToken, steps: u64) {
    let complete = eventually(STEP, || {
        client
            .progress()
            .iter()
            .filter(|p| &p.progress_token == token)
            .count()
            >= steps as usize
    })
    .await;
    let seen = client.progress();
    assert!(
        complete,
        "expected {steps} progress notifications for {token:?}, got {seen:?}"
    );
    assert!(
        seen.iter().all(|p| &p.progress_token == token),
        "progress for a token this client never sent: {seen:?}"
    );
    let values: Vec<f64> = seen.iter().map(|p| p.progress).collect();
    let expected: Vec<f64> = (1..=steps).map(|i| i as f64).collect();
    assert_eq!(values, expected, "progress values in order: {seen:?}");
    assert!(seen.iter().all(|p| p.total == Some(steps as f64)));
}

#[tokio::test]
async fn rmcp_streamable_client_lists_and_calls_tools_through_the_proxy() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), session_era()).await;
    let info = client.peer_info().expect("initialize result kept");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("everything")
    );
    let names = tool_names(&client).await;
    assert_has_tools(&names, &["echo", "add", "progress", "sample"]);
    assert_eq!(
        echo(&client, "hello through the proxy").await,
        "hello through the proxy"
    );
    assert_eq!(
        call_text(&client, "add", json!({ "a": 2, "b": 40 })).await,
        "42"
    );
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_client_receives_progress_for_its_own_call() {
    let proxy = Proxy::start(&[]).await;
    let handler = TestClient::default();
    let client = connect(handler.clone(), &proxy.mcp(), session_era()).await;
    let (token, text) = call_progress(&client, 5).await;
    assert_eq!(text, "done 5");
    assert_progress(&handler, &token, 5).await;
    close(client).await;
    proxy.stop().await;
}

/// rmcp numbers progress tokens per client, so two clients send the same
/// token; over one shared child the proxy must keep them apart.
#[tokio::test]
async fn rmcp_clients_with_colliding_progress_tokens_each_get_their_own_progress() {
    let proxy = Proxy::start(&["--shared"]).await;
    let (ha, hb, hm) = (
        TestClient::default(),
        TestClient::default(),
        TestClient::default(),
    );
    let a = connect(ha.clone(), &proxy.mcp(), session_era()).await;
    let b = connect(hb.clone(), &proxy.mcp(), session_era()).await;
    let m = connect(hm.clone(), &proxy.mcp(), modern_era()).await;
    let ((ta, xa), (tb, xb), (tm, xm)) = tokio::join!(
        call_progress(&a, 3),
        call_progress(&b, 6),
        call_progress(&m, 4)
    );
    assert_eq!(
        (xa.as_str(), xb.as_str(), xm.as_str()),
        ("done 3", "done 6", "done 4")
    );
    assert_progress(&ha, &ta, 3).await;
    assert_progress(&hb, &tb, 6).await;
    assert_progress(&hm, &tm, 4).await;
    close(a).await;
    close(b).await;
    close(m).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_client_answers_sampling_requests_routed_by_the_proxy() {
    let proxy = Proxy::start(&[]).await;
    let handler = TestClient::answering();
    let client = connect(handler.clone(), &proxy.mcp(), session_era()).await;
    let text = call_text(&client, "sample", json!({ "prompt": "what is 6 x 7?" })).await;
    assert_eq!(text, "rmcp sampled <what is 6 x 7?>");
    assert_eq!(handler.asked(), ["sampling/createMessage: what is 6 x 7?"]);
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_modern_2026_client_discovers_and_calls_tools() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), modern_era()).await;
    let info = client.peer_info().expect("discover result kept");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("everything")
    );
    let names = tool_names(&client).await;
    assert_has_tools(&names, &["echo", "add", "progress", "sample"]);
    assert_eq!(echo(&client, "hello from 2026").await, "hello from 2026");
    assert_eq!(
        call_text(&client, "add", json!({ "a": 2, "b": 40 })).await,
        "42"
    );
    close(client).await;
    proxy.stop().await;
}

/// `calls` concurrent echo calls with messages unique to `who`; returns the
/// (sent, received) pairs.
async fn echo_many(client: &Client, who: &str, calls: usize) -> Vec<(String, String)> {
    join_all((0..calls).map(|i| async move {
        let sent = format!("{who} message {i}");
        let got = echo(client, &sent).await;
        (sent, got)
    }))
    .await
}

fn assert_all_own(pairs: &[(String, String)]) {
    let wrong: Vec<_> = pairs.iter().filter(|(s, r)| s != r).collect();
    assert!(
        wrong.is_empty(),
        "answers for someone else's request: {wrong:?}"
    );
}

#[tokio::test]
async fn both_eras_share_one_proxy_at_once() {
    let proxy = Proxy::start(&[]).await;
    let url = proxy.mcp();
    let (session, modern) = tokio::join!(
        connect(TestClient::default(), &url, session_era()),
        connect(TestClient::default(), &url, modern_era())
    );
    assert_eq!(
        session.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );
    assert_eq!(
        modern.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    let (s, m) = tokio::join!(
        echo_many(&session, "session", 50),
        echo_many(&modern, "modern", 50)
    );
    assert_eq!((s.len(), m.len()), (50, 50));
    assert_all_own(&s);
    assert_all_own(&m);
    close(session).await;
    close(modern).await;
    proxy.stop().await;
}

#[tokio::test]
async fn shared_mode_sessions_with_rmcp_clients_get_their_own_answers() {
    let proxy = Proxy::start(&["--shared"]).await;
    let url = proxy.mcp();
    let clients =
        join_all((0..8).map(|_| connect(TestClient::default(), &url, session_era()))).await;
    // One child serves every session: they all see the same process.
    let pids = join_all(clients.iter().map(|c| call_text(c, "pid", json!({})))).await;
    assert!(
        pids.iter().all(|p| p == &pids[0]),
        "--shared sessions on different children: {pids:?}"
    );
    let answers = join_all(
        clients
            .iter()
            .enumerate()
            .map(|(n, c)| async move { echo_many(c, &format!("client {n}"), 20).await }),
    )
    .await;
    for pairs in &answers {
        assert_eq!(pairs.len(), 20);
        assert_all_own(pairs);
    }
    assert_eq!(proxy.health().await["status"], "ok");
    for c in clients {
        close(c).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_auto_lifecycle_falls_back_or_discovers() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(
        TestClient::default(),
        &proxy.mcp(),
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        },
    )
    .await;
    // The proxy answers `server/discover`, so Auto must not fall back.
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    assert_eq!(echo(&client, "auto").await, "auto");
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_client_answers_roots_and_elicitation_requests_routed_by_the_proxy() {
    let proxy = Proxy::start(&[]).await;
    let handler = TestClient::answering();
    let client = connect(handler.clone(), &proxy.mcp(), session_era()).await;
    let roots: Value = serde_json::from_str(&call_text(&client, "roots", json!({})).await).unwrap();
    assert_eq!(roots, json!([{ "uri": ROOT }]));
    let answer = call_text(
        &client,
        "elicit",
        json!({ "message": "what is the answer?" }),
    )
    .await;
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["action"], "accept", "elicitation answer {answer}");
    assert_eq!(answer["content"], json!({ "answer": "forty-two" }));
    assert_eq!(
        handler.asked(),
        ["roots/list", "elicitation/create: what is the answer?"]
    );
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_client_hears_log_messages_and_list_changed_notifications() {
    let proxy = Proxy::start(&[]).await;
    let handler = TestClient::default();
    let client = connect(handler.clone(), &proxy.mcp(), session_era()).await;
    let logged = call_text(
        &client,
        "log",
        json!({ "level": "warning", "message": "disk almost full" }),
    )
    .await;
    assert_eq!(logged, "logged");
    let heard = eventually(STEP, || {
        handler
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.level == LoggingLevel::Warning && l.data == json!("disk almost full"))
    })
    .await;
    assert!(
        heard,
        "log message not delivered: {:?}",
        handler.logs.lock().unwrap()
    );
    // Not tied to any request: it travels on the session's GET stream.
    let sent = call_text(
        &client,
        "notify",
        json!({ "method": "notifications/tools/list_changed" }),
    )
    .await;
    assert_eq!(sent, "ok");
    assert!(
        eventually(STEP, || *handler.tool_list_changes.lock().unwrap() >= 1).await,
        "notifications/tools/list_changed not delivered"
    );
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn closing_an_rmcp_session_stops_its_child() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), session_era()).await;
    let pid: u32 = call_text(&client, "pid", json!({})).await.parse().unwrap();
    assert!(alive(pid), "child {pid} alive while the session is open");
    close(client).await;
    assert!(
        eventually(STEP, || !alive(pid)).await,
        "child {pid} still running after the rmcp client closed its session"
    );
    proxy.stop().await;
}

/// A 2025-era child asks for sampling during a 2026-07-28 client's call:
/// the proxy answers the call with `input_required`, rmcp fulfils it through
/// its handler and retries, and the proxy hands the answer to the child.
#[tokio::test]
async fn rmcp_modern_client_answers_a_legacy_childs_sampling_through_input_required() {
    let proxy = Proxy::start(&[]).await;
    let handler = TestClient::answering();
    let client = connect(handler.clone(), &proxy.mcp(), modern_era()).await;
    let text = call_text(&client, "sample", json!({ "prompt": "hi" })).await;
    assert_eq!(text, "rmcp sampled <hi>");
    assert_eq!(handler.asked(), ["sampling/createMessage: hi"]);
    // The shared child is still fine for this client afterwards.
    assert_eq!(echo(&client, "still here").await, "still here");
    close(client).await;
    proxy.stop().await;
}

/// 2026-07-28 has no GET stream: notifications not tied to a request reach a
/// client through `subscriptions/listen`, which the proxy serves from the
/// child's notifications.
#[tokio::test]
async fn rmcp_modern_client_hears_list_changed_through_subscriptions_listen() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), modern_era()).await;
    let mut subscription = within(
        "subscriptions/listen acknowledged",
        client.listen(SubscriptionFilter::builder().tools_list_changed().build()),
    )
    .await
    .expect("subscriptions/listen succeeds");
    let sent = call_text(
        &client,
        "notify",
        json!({ "method": "notifications/tools/list_changed" }),
    )
    .await;
    assert_eq!(sent, "ok");
    let heard = within("list_changed on the subscription", subscription.next())
        .await
        .expect("subscription stream is healthy");
    assert!(
        matches!(
            heard,
            Some(ServerNotification::ToolListChangedNotification(_))
        ),
        "expected tools/list_changed, got {heard:?}"
    );
    within("subscription cancel", subscription.cancel())
        .await
        .expect("subscription cancels");
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_session_clients_own_initialize_reaches_its_child() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::answering(), &proxy.mcp(), session_era()).await;
    let seen: Value =
        serde_json::from_str(&call_text(&client, "client_info", json!({})).await).unwrap();
    assert_eq!(seen["clientInfo"]["name"], "rmcp-proxy-test", "{seen}");
    assert!(seen["capabilities"]["sampling"].is_object(), "{seen}");
    assert!(seen["capabilities"]["roots"].is_object(), "{seen}");
    close(client).await;
    proxy.stop().await;
}

/// The child dies mid-call: the call fails promptly, the proxy answers 404
/// for the dead session, and rmcp's transport re-initializes by itself onto a
/// fresh child.
#[tokio::test]
async fn rmcp_client_recovers_onto_a_fresh_child_after_a_crash() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), session_era()).await;
    let first: u32 = call_text(&client, "pid", json!({})).await.parse().unwrap();
    let crashed = within(
        "tools/call crash",
        client.call_tool(
            CallToolRequestParams::new("crash").with_arguments(args(json!({ "code": 3 }))),
        ),
    )
    .await;
    assert!(crashed.is_err(), "a crash cannot answer: {crashed:?}");
    assert!(
        eventually(STEP, || !alive(first)).await,
        "child {first} still alive"
    );
    let deadline = tokio::time::Instant::now() + STEP;
    let second = loop {
        let outcome = within(
            "tools/call pid after the crash",
            client.call_tool(CallToolRequestParams::new("pid").with_arguments(JsonObject::new())),
        )
        .await;
        match outcome {
            Ok(result) if result.is_error != Some(true) => {
                break result.content[0]
                    .as_text()
                    .unwrap()
                    .text
                    .parse::<u32>()
                    .unwrap();
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no recovery after the crash; last outcome {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_ne!(first, second, "answered by the dead child?");
    assert!(alive(second));
    assert_eq!(echo(&client, "after the crash").await, "after the crash");
    close(client).await;
    proxy.stop().await;
}

/// Drops a `sleep` call after a moment, as an application abandoning it would,
/// and waits until the child has seen a `notifications/cancelled` that
/// matched the in-flight request (the `cancelled` tool reports them).
async fn abandoned_call_is_cancelled_at_the_child(client: &Client) {
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        client.call_tool(
            CallToolRequestParams::new("sleep").with_arguments(args(json!({ "ms": 60000 }))),
        ),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "sleep 60 s cannot have answered: {abandoned:?}"
    );
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let seen: Value =
            serde_json::from_str(&call_text(client, "cancelled", json!({})).await).unwrap();
        let entries = seen.as_array().unwrap();
        if entries.iter().any(|c| c["matched"] == true) {
            assert_eq!(entries.len(), 1, "one cancellation expected: {seen}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never saw a matching notifications/cancelled: {seen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rmcp_session_client_abandoning_a_call_cancels_it_at_the_child() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), session_era()).await;
    abandoned_call_is_cancelled_at_the_child(&client).await;
    assert_eq!(echo(&client, "after cancel").await, "after cancel");
    close(client).await;
    proxy.stop().await;
}

#[tokio::test]
async fn rmcp_modern_client_abandoning_a_call_cancels_it_at_the_child() {
    let proxy = Proxy::start(&[]).await;
    let client = connect(TestClient::default(), &proxy.mcp(), modern_era()).await;
    abandoned_call_is_cancelled_at_the_child(&client).await;
    assert_eq!(echo(&client, "after cancel").await, "after cancel");
    close(client).await;
    proxy.stop().await;
}

/// One `--shared` child serves a 2026-07-28 client and two session-era
/// clients; the child's sampling requests and log messages carry no session,
/// so the proxy routes them to the only request in flight: the caller's.
#[tokio::test]
async fn shared_child_routes_sampling_and_logs_to_the_session_client_that_asked() {
    let proxy = Proxy::start(&["--shared"]).await;
    let (hm, ha, hb) = (
        TestClient::answering(),
        TestClient::answering(),
        TestClient::answering(),
    );
    let m = connect(hm.clone(), &proxy.mcp(), modern_era()).await;
    let a = connect(ha.clone(), &proxy.mcp(), session_era()).await;
    let b = connect(hb.clone(), &proxy.mcp(), session_era()).await;
    let pids = [
        call_text(&m, "pid", json!({})).await,
        call_text(&a, "pid", json!({})).await,
        call_text(&b, "pid", json!({})).await,
    ];
    assert!(pids.iter().all(|p| p == &pids[0]), "one child: {pids:?}");

    let text = call_text(&a, "sample", json!({ "prompt": "from A" })).await;
    assert_eq!(text, "rmcp sampled <from A>");
    let text = call_text(&b, "sample", json!({ "prompt": "from B" })).await;
    assert_eq!(text, "rmcp sampled <from B>");
    assert_eq!(ha.asked(), ["sampling/createMessage: from A"]);
    assert_eq!(hb.asked(), ["sampling/createMessage: from B"]);
    assert!(
        hm.asked().is_empty(),
        "modern client asked: {:?}",
        hm.asked()
    );

    let logged = call_text(&b, "log", json!({ "level": "error", "message": "for B" })).await;
    assert_eq!(logged, "logged");
    assert!(
        eventually(STEP, || !hb.logs.lock().unwrap().is_empty()).await,
        "B never got its log message"
    );
    assert_eq!(hb.logs.lock().unwrap()[0].data, json!("for B"));
    // Give a wrongly broadcast copy time to arrive elsewhere.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(ha.logs.lock().unwrap().is_empty(), "A got B's log");
    assert!(
        hm.logs.lock().unwrap().is_empty(),
        "the modern client got B's log"
    );
    for c in [m, a, b] {
        close(c).await;
    }
    proxy.stop().await;
}

/// A session-era client pinned to an older revision, on a `--shared` child
/// that was started (and initialized at 2025-11-25) for a 2026-07-28 client.
#[tokio::test]
async fn shared_child_started_for_a_modern_client_still_answers_each_sessions_version() {
    let proxy = Proxy::start(&["--shared"]).await;
    let m = connect(TestClient::default(), &proxy.mcp(), modern_era()).await;
    assert_eq!(echo(&m, "first").await, "first");
    let transport = StreamableHttpClientTransport::from_uri(proxy.mcp());
    let old = within(
        "rmcp 2025-06-18 client start",
        PinnedClient(ProtocolVersion::V_2025_06_18).serve_with_lifecycle(transport, session_era()),
    )
    .await
    .expect("2025-06-18 client starts");
    assert_eq!(
        old.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_06_18,
        "the child supports 2025-06-18, so that is the answer (lifecycle: MUST respond with the same version)"
    );
    let r = within(
        "echo from the 2025-06-18 client",
        old.call_tool(
            CallToolRequestParams::new("echo").with_arguments(args(json!({ "message": "old" }))),
        ),
    )
    .await
    .expect("echo works");
    assert_eq!(r.content[0].as_text().unwrap().text, "old");
    within("cancel", old.cancel()).await.unwrap();
    close(m).await;
    proxy.stop().await;
}

/// A plain client that asks for one protocol revision in `initialize`.
#[derive(Clone)]
struct PinnedClient(ProtocolVersion);

impl ClientHandler for PinnedClient {
    fn get_info(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("rmcp-pinned", "1.0"),
        );
        config.protocol_version = self.0.clone();
        config
    }
}

#[tokio::test]
async fn rmcp_session_client_answers_a_modern_childs_input_requests() {
    // A 2026-07-28 child asks with `input_required`; the proxy turns each
    // round into a server-to-client request rmcp answers, then repeats the
    // call, so the session client just sees a call that asked it things.
    let proxy = Proxy::start_child(&[], &support::example("modern_server"), &[]).await;
    let handler = TestClient::answering();
    let client = connect(handler.clone(), &proxy.mcp(), session_era()).await;
    for (kind, rounds) in [("elicitation", 2), ("sampling", 1), ("roots", 1)] {
        let answer = call_text(&client, "ask", json!({ "kind": kind, "rounds": rounds })).await;
        let answer: Value = serde_json::from_str(&answer).unwrap();
        match kind {
            "elicitation" => assert_eq!(answer["content"], json!({ "answer": "forty-two" })),
            "sampling" => assert_eq!(answer["model"], MODEL, "{answer}"),
            _ => assert_eq!(answer["roots"], json!([{ "uri": ROOT }])),
        }
    }
    assert_eq!(
        handler.asked(),
        [
            "elicitation/create: Your name, please (round 0)",
            "elicitation/create: Your name, please (round 1)",
            "sampling/createMessage: round 0",
            "roots/list",
        ]
    );
    close(client).await;
    proxy.stop().await;
}
