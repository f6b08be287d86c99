//! `everything`: a stdio MCP server for the 2024-11-05, 2025-03-26,
//! 2025-06-18 and 2025-11-25 revisions, written on raw JSON-RPC (no SDK) so
//! that it can misbehave on demand. It is the child in the proxy's
//! integration tests and benchmarks.
//!
//! Spec: `basic/lifecycle`, `basic/transports` (stdio), `basic/utilities/
//! {ping,cancellation,progress}`, `server/{tools,resources,prompts}`,
//! `server/utilities/logging`, `client/{sampling,roots,elicitation}` of the
//! revisions above, and `basic/utilities/tasks` of 2025-11-25 (task-augmented
//! `echo`, which completes at once, and `task_job`, which runs only as a
//! task, for `ms` milliseconds, and ends as its `outcome` says).
//!
//! Requests are served in arrival order; the ones that wait on something
//! (timers, the client, a blocked stderr) get a task of their own, so a slow
//! call never delays the others. Requests are served before `initialize` too,
//! because an HTTP front-end may race them. Logs go to stderr only.
//!
//! Flags: `--banner` (a non-JSON line on stdout at startup),
//! `--ignore-sigterm` (survive SIGTERM and stdin EOF, for testing SIGKILL
//! escalation), `--exit-on-eof` (with `--ignore-sigterm`: still exit on EOF,
//! so only a proxy that closes stdin stops it quickly),
//! `--startup-delay-ms N`, `--fail-initialize`, `--silent-before-initialize`
//! (leave requests that come before `initialize` unanswered, as a few
//! servers do with a `server/discover` probe).
//!
//! Hidden `misbehave_*` tools (module `misbehave`, not in `tools/list`) make
//! the child break the protocol on demand for the proxy's fault tests: raw
//! lines on stdout, a line without end, stdout closed while running, stdin
//! no longer read, a flood of notifications.

#[path = "common/stdio.rs"]
mod stdio;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use stdio::Out;

const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const LATEST_VERSION: &str = "2025-11-25";

/// Severity order of `logging/setLevel` and `notifications/message`.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// How long a server→client request (sampling, roots, elicitation) may wait
/// for its answer before the tool call fails; a proxy that loses the request
/// then shows up as a tool error instead of a hung test.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const RESOURCES: [(&str, &str, &str); 2] = [
    ("demo://a", "a", "Resource A"),
    ("demo://b", "b", "Resource B"),
];

#[derive(argh::FromArgs)]
/// A stdio MCP server for testing proxies: many tools, misbehaviour on demand.
struct Args {
    /// print a non-JSON line on stdout at startup, like careless servers do
    #[argh(switch)]
    banner: bool,
    /// ignore SIGTERM and keep running after stdin closes (only SIGKILL stops it)
    #[argh(switch)]
    ignore_sigterm: bool,
    /// exit when stdin closes, even with --ignore-sigterm (without that flag,
    /// exiting on EOF is the default)
    #[argh(switch)]
    exit_on_eof: bool,
    /// wait this many milliseconds before reading stdin
    #[argh(option, default = "0")]
    startup_delay_ms: u64,
    /// answer initialize with an error
    #[argh(switch)]
    fail_initialize: bool,
    /// leave requests that arrive before initialize unanswered
    #[argh(switch)]
    silent_before_initialize: bool,
    /// ask the client for sampling, roots or elicitation only when its
    /// initialize declared the capability, as SDK servers do (else the
    /// tool fails with "the client did not declare ...")
    #[argh(switch)]
    check_capabilities: bool,
}

/// Any JSON-RPC message; which fields are present says what it is.
#[derive(Deserialize)]
struct Incoming {
    /// Kept as parsed, so it goes back with the type and value it came with.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: T,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: RpcError,
}

#[derive(Serialize)]
struct RpcError {
    code: i64,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

#[derive(Serialize)]
struct Notification<T: Serialize> {
    jsonrpc: &'static str,
    method: &'static str,
    params: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult<'a> {
    content: [TextContent<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    structured_content: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_error: bool,
}

#[derive(Serialize)]
struct TextContent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: std::borrow::Cow<'a, str>,
}

impl<'a> ToolResult<'a> {
    fn text(text: impl Into<std::borrow::Cow<'a, str>>) -> Self {
        ToolResult {
            content: [TextContent {
                kind: "text",
                text: text.into(),
            }],
            structured_content: None,
            is_error: false,
        }
    }

    fn error(text: impl Into<std::borrow::Cow<'a, str>>) -> Self {
        ToolResult {
            is_error: true,
            ..ToolResult::text(text)
        }
    }
}

/// The answer to one request: a result or a JSON-RPC error.
enum Outcome {
    Result(Box<RawValue>),
    Error(RpcError),
}

fn ok(result: &impl Serialize) -> Outcome {
    Outcome::Result(serde_json::value::to_raw_value(result).expect("JSON value serializes"))
}

fn rpc_error(code: i64, message: impl Into<String>) -> Outcome {
    Outcome::Error(RpcError {
        code,
        message: message.into(),
        data: None,
    })
}

/// Per-process state; every section that locks it is short and never awaits.
#[derive(Default)]
struct State {
    /// Index into `LOG_LEVELS`; `None` until `logging/setLevel`, meaning all.
    log_level: Option<usize>,
    /// The `initialize` params, returned by `client_info` so tests can see
    /// what the proxy told the child (its capabilities, its version).
    initialize_params: Option<Value>,
    /// Requests being served by their own task, keyed by the id's JSON text
    /// (so `1` and `"1"` differ), for `notifications/cancelled`.
    in_flight: HashMap<String, CancellationToken>,
    /// Every `notifications/cancelled` seen, for the `cancelled` tool.
    cancellations: Vec<Value>,
    /// Our requests to the client awaiting a response, keyed like `in_flight`.
    pending: HashMap<String, oneshot::Sender<Result<Value, Value>>>,
    subscriptions: HashSet<String>,
    /// The `set_state`/`get_state` value; proves which process a client reaches.
    value: String,
    /// Held so that they are reaped if they exit; never waited on otherwise.
    grandchildren: Vec<std::process::Child>,
    /// Tasks in creation order.
    tasks: Vec<TaskEntry>,
    /// Methods of the requests that came before `initialize`.
    early_requests: Vec<String>,
    /// What each `roots/list` asked on `notifications/roots/list_changed`
    /// got: the roots, or `{"error": …}`.
    roots_after_change: Vec<Value>,
}

/// A task: its `Task` object as created, when its work is done, and what
/// `tasks/result` then gives (a result, or a JSON-RPC error).
struct TaskEntry {
    task: Value,
    done_at: std::time::Instant,
    outcome: Result<Value, Value>,
}

impl TaskEntry {
    /// The `Task` now: `working` until its work is done, then `completed`
    /// (`failed` for an error or a tool result with `isError`, as
    /// 2025-11-25 says), unless it was cancelled first.
    fn current(&mut self) -> &Value {
        let working = self.task["status"] == "working";
        if working && std::time::Instant::now() >= self.done_at {
            let failed = match &self.outcome {
                Ok(result) => result.get("isError") == Some(&Value::Bool(true)),
                Err(_) => true,
            };
            self.task["status"] = json!(if failed { "failed" } else { "completed" });
            self.task["lastUpdatedAt"] = json!(now_rfc3339());
        }
        &self.task
    }
}

struct Server {
    out: mpsc::Sender<Out>,
    state: Mutex<State>,
    fail_initialize: bool,
    silent_before_initialize: bool,
    check_capabilities: bool,
    next_client_request: AtomicU64,
    /// `tools/list` result, built once.
    tools: Box<RawValue>,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

fn main() {
    let args: Args = argh::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    if args.ignore_sigterm {
        // Registering a handler replaces the default action (terminate).
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::spawn(async move {
            while sigterm.recv().await.is_some() {
                eprintln!("everything: ignoring SIGTERM");
            }
        });
    }
    let stay_alive = args.ignore_sigterm && !args.exit_on_eof;
    let out = stdio::spawn_writer(stay_alive);
    if args.banner {
        let _ = out
            .send(Out::Line(
                b"everything: starting up (this line is not JSON)\n".to_vec(),
            ))
            .await;
    }
    if args.startup_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.startup_delay_ms)).await;
    }
    let server = Arc::new(Server {
        out: out.clone(),
        state: Mutex::new(State::default()),
        fail_initialize: args.fail_initialize,
        silent_before_initialize: args.silent_before_initialize,
        check_capabilities: args.check_capabilities,
        next_client_request: AtomicU64::new(1),
        tools: serde_json::value::to_raw_value(&json!({ "tools": tool_catalogue() }))
            .expect("JSON value serializes"),
    });
    let mut lines = stdio::spawn_reader();
    while let Some(line) = lines.recv().await {
        server.on_line(&line).await;
        if misbehave::stdin_abandoned() {
            // `misbehave_stop_reading`: stdin fills up, as with a wedged
            // server, for good or until `resume_after_ms` has passed.
            match misbehave::resume_after() {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    misbehave::resume_reading();
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
    if stay_alive {
        eprintln!("everything: stdin closed; staying alive (--ignore-sigterm)");
        std::future::pending::<()>().await;
    }
    // Let queued responses reach stdout, then exit; tasks still running
    // (a `sleep`, a `sample`) are abandoned, as a real server would.
    let _ = out.send(Out::Exit(0)).await;
    std::future::pending::<()>().await;
}

impl Server {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock already aborts the test that caused it.
        self.state.lock().expect("state lock not poisoned")
    }

    async fn send(&self, out: Out) {
        if misbehave::stdout_closed() {
            return;
        }
        // The writer only goes away when the process is exiting.
        let _ = self.out.send(out).await;
    }

    async fn notify(&self, method: &'static str, params: impl Serialize) {
        self.send(stdio::line(&Notification {
            jsonrpc: "2.0",
            method,
            params,
        }))
        .await;
    }

    async fn reply(&self, id: &Value, outcome: Outcome) {
        let out = match outcome {
            Outcome::Result(result) => stdio::line(&Reply {
                jsonrpc: "2.0",
                id,
                result,
            }),
            Outcome::Error(error) => stdio::line(&ErrorReply {
                jsonrpc: "2.0",
                id,
                error,
            }),
        };
        self.send(out).await;
    }

    async fn on_line(self: &Arc<Self>, line: &[u8]) {
        let message: Incoming = match serde_json::from_slice(line) {
            Ok(m) => m,
            Err(e) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                eprintln!("everything: skipping malformed line ({e}): {shown}");
                return;
            }
        };
        match (message.method, message.id) {
            (Some(method), Some(id)) => self.on_request(method, id, message.params).await,
            (Some(method), None) => self.on_notification(&method, &message.params),
            (None, Some(id)) => {
                let answer = match message.error {
                    Some(error) => Err(error),
                    None => Ok(message.result.unwrap_or(Value::Null)),
                };
                match self.state().pending.remove(&id_key(&id)) {
                    Some(waiter) => {
                        let _ = waiter.send(answer);
                    }
                    None => eprintln!("everything: response to unknown request {id}"),
                }
            }
            (None, None) => eprintln!("everything: skipping message with neither id nor method"),
        }
    }

    fn on_notification(self: &Arc<Self>, method: &str, params: &Value) {
        match method {
            "notifications/cancelled" => {
                let request_id = params.get("requestId").cloned().unwrap_or(Value::Null);
                let mut state = self.state();
                let token = state.in_flight.remove(&id_key(&request_id));
                let matched = token.is_some();
                if let Some(token) = token {
                    token.cancel();
                }
                state
                    .cancellations
                    .push(json!({ "requestId": request_id, "matched": matched }));
            }
            "notifications/roots/list_changed" => {
                // As SDK servers do: ask for the new list at once, outside
                // any request; `roots {"after_change": true}` tells what came.
                let me = self.clone();
                tokio::spawn(async move {
                    let got = match me.ask_client("roots/list", json!({})).await {
                        Ok(result) => result.get("roots").cloned().unwrap_or(Value::Null),
                        Err(e) => json!({ "error": e }),
                    };
                    me.state().roots_after_change.push(got);
                });
            }
            "notifications/initialized" => {}
            other => eprintln!("everything: ignoring notification {other}"),
        }
    }

    async fn on_request(self: &Arc<Self>, method: String, id: Value, params: Value) {
        if method != "initialize" {
            let mut state = self.state();
            if state.initialize_params.is_none() {
                state.early_requests.push(method.clone());
                if self.silent_before_initialize {
                    return;
                }
            }
        }
        let outcome = match method.as_str() {
            "initialize" => self.initialize(params),
            "ping" => ok(&json!({})),
            "logging/setLevel" => {
                let level = params.get("level").and_then(Value::as_str);
                match level.and_then(|l| LOG_LEVELS.iter().position(|x| *x == l)) {
                    Some(index) => {
                        self.state().log_level = Some(index);
                        ok(&json!({}))
                    }
                    None => rpc_error(-32602, "unknown log level"),
                }
            }
            "tools/list" => Outcome::Result(self.tools.clone()),
            "tools/call" if params.get("task").is_some_and(Value::is_object) => {
                return self.create_task(id, params).await;
            }
            "tools/call" => return self.call_tool(id, params).await,
            "tasks/list" => {
                let tasks: Vec<Value> = self
                    .state()
                    .tasks
                    .iter_mut()
                    .map(|t| t.current().clone())
                    .collect();
                ok(&json!({ "tasks": tasks }))
            }
            "tasks/get" | "tasks/result" | "tasks/cancel" => self.task_request(&method, &params),
            "resources/list" => ok(&json!({
                "resources": RESOURCES.iter().map(|(uri, name, _)| json!({
                    "uri": uri, "name": name, "mimeType": "text/plain"
                })).collect::<Vec<_>>()
            })),
            "resources/templates/list" => ok(&json!({ "resourceTemplates": [] })),
            "resources/read" => {
                let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
                match RESOURCES.iter().find(|(u, _, _)| *u == uri) {
                    Some((uri, _, text)) => ok(&json!({
                        "contents": [{ "uri": uri, "mimeType": "text/plain", "text": text }]
                    })),
                    None => rpc_error(-32002, format!("resource not found: {uri}")),
                }
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                match params.get("uri").and_then(Value::as_str) {
                    Some(uri) => {
                        let mut state = self.state();
                        if method == "resources/subscribe" {
                            state.subscriptions.insert(uri.to_owned());
                        } else {
                            state.subscriptions.remove(uri);
                        }
                        ok(&json!({}))
                    }
                    None => rpc_error(-32602, "missing uri"),
                }
            }
            "prompts/list" => ok(&json!({
                "prompts": [{
                    "name": "greet",
                    "description": "Greets someone by name",
                    "arguments": [{ "name": "name", "description": "Who to greet", "required": true }]
                }]
            })),
            "prompts/get" => {
                let name = params.get("name").and_then(Value::as_str);
                let who = params
                    .pointer("/arguments/name")
                    .and_then(Value::as_str)
                    .unwrap_or("world");
                match name {
                    Some("greet") => ok(&json!({
                        "description": "A greeting",
                        "messages": [{
                            "role": "user",
                            "content": { "type": "text", "text": format!("Hello, {who}!") }
                        }]
                    })),
                    _ => rpc_error(-32602, "unknown prompt"),
                }
            }
            _ => rpc_error(-32601, format!("method not found: {method}")),
        };
        self.reply(&id, outcome).await;
    }

    fn initialize(&self, params: Value) -> Outcome {
        if self.fail_initialize {
            return rpc_error(-32603, "initialize refused (--fail-initialize)");
        }
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let version = match requested {
            Some(v) if SUPPORTED_VERSIONS.contains(&v) => v,
            _ => LATEST_VERSION,
        };
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": { "listChanged": true },
                "resources": { "subscribe": true, "listChanged": true },
                "prompts": { "listChanged": true },
                "logging": {},
                "tasks": { "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } }
            },
            "serverInfo": { "name": "everything", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "A test server: every tool does one small, predictable thing."
        });
        self.state().initialize_params = Some(params);
        ok(&result)
    }

    /// A task-augmented `tools/call`: `echo` completes at once; `task_job`
    /// works for `ms` milliseconds and ends as its `outcome` says (`ok`,
    /// `tool_error` or `rpc_error`), with a `ttl` of its argument's when
    /// the requestor gave none; with `elicit: true` it asks the client
    /// for input (`elicitation/create`, tied to the task by its `_meta`
    /// related-task) right after the `CreateTaskResult`, and its result is
    /// then what the client answered, or why no answer came. The task is
    /// announced with `notifications/tasks/status` after the
    /// `CreateTaskResult`, and its result waits for `tasks/result`.
    async fn create_task(self: &Arc<Self>, id: Value, params: Value) {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").cloned().unwrap_or(Value::Null);
        let (ms, outcome) = match (name, args.get("message").and_then(Value::as_str)) {
            ("echo", Some(message)) => (
                0,
                Ok(serde_json::to_value(ToolResult::text(message)).expect("JSON value serializes")),
            ),
            ("echo", None) => {
                return self
                    .reply(&id, rpc_error(-32602, "missing string argument: message"))
                    .await;
            }
            ("task_job", _) => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                let outcome = match args.get("outcome").and_then(Value::as_str) {
                    Some("tool_error") => Ok(serde_json::to_value(ToolResult::error(
                        "the job failed".to_string(),
                    ))
                    .expect("JSON value serializes")),
                    Some("rpc_error") => Err(json!({ "code": -32603, "message": "the job broke" })),
                    _ => Ok(serde_json::to_value(ToolResult::text("the job is done"))
                        .expect("JSON value serializes")),
                };
                (ms, outcome)
            }
            _ => {
                return self
                    .reply(
                        &id,
                        rpc_error(-32601, format!("tool {name} cannot run as a task")),
                    )
                    .await;
            }
        };
        let task = {
            let mut state = self.state();
            let mut entry = TaskEntry {
                task: json!({
                    "taskId": format!("task-{}-{}", std::process::id(), state.tasks.len() + 1),
                    "status": "working",
                    "createdAt": now_rfc3339(),
                    "lastUpdatedAt": now_rfc3339(),
                    // The requestor's, else the `ttl` argument's (a
                    // receiver picks its own; a test can make it pick one).
                    "ttl": params.pointer("/task/ttl").or_else(|| args.get("ttl")).cloned().unwrap_or(Value::Null),
                    "pollInterval": 50,
                }),
                done_at: std::time::Instant::now() + Duration::from_millis(ms),
                outcome,
            };
            let task = entry.current().clone();
            state.tasks.push(entry);
            task
        };
        self.reply(&id, ok(&json!({ "task": task }))).await;
        let elicit = args.get("elicit") == Some(&Value::Bool(true));
        let task_id = task["taskId"].as_str().unwrap_or_default().to_string();
        self.notify("notifications/tasks/status", task).await;
        if elicit {
            let server = self.clone();
            tokio::spawn(async move {
                let request = json!({
                    "message": "Which job?",
                    "requestedSchema": {
                        "type": "object",
                        "properties": { "answer": { "type": "string" } },
                    },
                    "_meta": { "io.modelcontextprotocol/related-task": { "taskId": task_id } },
                });
                let answer = match server.ask_client("elicitation/create", request).await {
                    Ok(result) => format!("answered: {result}"),
                    Err(e) => format!("refused: {e}"),
                };
                let mut state = server.state();
                if let Some(entry) = state.tasks.iter_mut().find(|t| t.task["taskId"] == task_id) {
                    entry.outcome = Ok(serde_json::to_value(ToolResult::text(answer))
                        .expect("JSON value serializes"));
                    entry.done_at = std::time::Instant::now();
                }
            });
        }
    }

    fn task_request(&self, method: &str, params: &Value) -> Outcome {
        let task_id = params.get("taskId").and_then(Value::as_str).unwrap_or("");
        let mut state = self.state();
        let Some(entry) = state.tasks.iter_mut().find(|t| t.task["taskId"] == task_id) else {
            return rpc_error(-32602, format!("task not found: {task_id}"));
        };
        let task = entry.current().clone();
        match (method, task["status"].as_str().unwrap_or("")) {
            ("tasks/get", _) => ok(&task),
            ("tasks/result", "working") => {
                rpc_error(-32603, format!("task {task_id} is still working"))
            }
            ("tasks/result", "cancelled") => {
                rpc_error(-32603, format!("task {task_id} was cancelled"))
            }
            ("tasks/result", _) => {
                let related =
                    json!({ "io.modelcontextprotocol/related-task": { "taskId": task_id } });
                match &entry.outcome {
                    Ok(result) => {
                        let mut result = result.clone();
                        result["_meta"] = related;
                        ok(&result)
                    }
                    Err(error) => Outcome::Error(RpcError {
                        code: error["code"].as_i64().unwrap_or(-32603),
                        message: error["message"].as_str().unwrap_or("").to_string(),
                        data: None,
                    }),
                }
            }
            ("tasks/cancel", "working") => {
                entry.task["status"] = json!("cancelled");
                entry.task["statusMessage"] = json!("cancelled at the client's request");
                entry.task["lastUpdatedAt"] = json!(now_rfc3339());
                ok(&entry.task)
            }
            (_, status) => rpc_error(-32602, format!("task {task_id} is already {status:?}")),
        }
    }

    /// Answers at once for tools that never wait; the others get a task of
    /// their own, registered as in flight before the next line is read so
    /// that a `notifications/cancelled` right behind the request finds it.
    async fn call_tool(self: &Arc<Self>, id: Value, params: Value) {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").unwrap_or(&Value::Null);
        let outcome = match name {
            // 2025-11-25: a tool that requires a task, called without one.
            "task_job" => rpc_error(-32601, "tool task_job runs only as a task"),
            "echo" => match args.get("message").and_then(Value::as_str) {
                Some(message) => ok(&ToolResult::text(message)),
                None => ok(&ToolResult::error("missing string argument: message")),
            },
            "locate" => {
                let region = args.get("region").and_then(Value::as_str).unwrap_or("");
                ok(&ToolResult::text(format!("located in {region}")))
            }
            "add" => {
                let (a, b) = (args.get("a"), args.get("b"));
                match (
                    a.and_then(Value::as_i64),
                    b.and_then(Value::as_i64),
                    a.and_then(Value::as_f64),
                    b.and_then(Value::as_f64),
                ) {
                    (Some(a), Some(b), _, _) if a.checked_add(b).is_some() => {
                        let sum = a + b;
                        ok(&ToolResult {
                            structured_content: Some(json!({ "sum": sum })),
                            ..ToolResult::text(sum.to_string())
                        })
                    }
                    (_, _, Some(a), Some(b)) => ok(&ToolResult {
                        structured_content: Some(json!({ "sum": a + b })),
                        ..ToolResult::text((a + b).to_string())
                    }),
                    _ => ok(&ToolResult::error("a and b must be numbers")),
                }
            }
            "large" => match args.get("bytes").and_then(Value::as_u64) {
                Some(bytes) => {
                    let id_last = args.get("id_last").and_then(Value::as_bool) == Some(true);
                    let line = large_reply(&id, bytes as usize, id_last);
                    self.send(Out::Line(line)).await;
                    return;
                }
                None => ok(&ToolResult::error("missing integer argument: bytes")),
            },
            "log" => {
                let level = args.get("level").and_then(Value::as_str).unwrap_or("info");
                let message = args.get("message").cloned().unwrap_or(Value::Null);
                match LOG_LEVELS.iter().position(|l| *l == level) {
                    Some(index) => {
                        let threshold = self.state().log_level.unwrap_or(0);
                        if index >= threshold {
                            self.notify(
                                "notifications/message",
                                json!({ "level": level, "logger": "everything", "data": message }),
                            )
                            .await;
                        }
                        ok(&ToolResult::text("logged"))
                    }
                    None => ok(&ToolResult::error(format!("unknown log level: {level}"))),
                }
            }
            "garbage" => {
                let text = args
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("this is not json");
                let mut bytes = text.replace('\n', " ").into_bytes();
                bytes.push(b'\n');
                self.send(Out::Line(bytes)).await;
                ok(&ToolResult::text("sent garbage"))
            }
            "cancelled" => {
                let seen = Value::Array(self.state().cancellations.clone());
                ok(&ToolResult::text(seen.to_string()))
            }
            "unanswered" => {
                let waiting = self.state().pending.len();
                ok(&ToolResult::text(waiting.to_string()))
            }
            "crash" => {
                let code = args.get("code").and_then(Value::as_i64).unwrap_or(1);
                eprintln!("everything: crashing with exit code {code}");
                std::process::exit(code as i32);
            }
            "set_state" => {
                let value = match args.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                self.state().value = value;
                ok(&ToolResult::text("ok"))
            }
            "get_state" => {
                let value = self.state().value.clone();
                ok(&ToolResult::text(value))
            }
            "pid" => {
                let pid = std::process::id();
                ok(&ToolResult {
                    structured_content: Some(json!({ "pid": pid })),
                    ..ToolResult::text(pid.to_string())
                })
            }
            "early_requests" => {
                let early = self.state().early_requests.clone();
                ok(&ToolResult::text(json!(early).to_string()))
            }
            "meta" => {
                let meta = params.get("_meta").cloned().unwrap_or(Value::Null);
                ok(&ToolResult::text(meta.to_string()))
            }
            "client_info" => {
                let params = self.state().initialize_params.clone();
                ok(&ToolResult::text(params.unwrap_or(Value::Null).to_string()))
            }
            "notify" => match args.get("method").and_then(Value::as_str) {
                Some(method) => {
                    self.send(stdio::line(&json!({ "jsonrpc": "2.0", "method": method })))
                        .await;
                    ok(&ToolResult::text("ok"))
                }
                None => ok(&ToolResult::error("missing string argument: method")),
            },
            "touch" => {
                let uri = args.get("uri").and_then(Value::as_str).unwrap_or("");
                let subscribed = self.state().subscriptions.contains(uri);
                if subscribed {
                    self.notify("notifications/resources/updated", json!({ "uri": uri }))
                        .await;
                    ok(&ToolResult::text("sent"))
                } else {
                    ok(&ToolResult::text("not subscribed"))
                }
            }
            "spawn_grandchild" => {
                // Same process group as this server (no setsid), and no stdio
                // inherited: the proxy must find it by group, not by pipes.
                let spawned = std::process::Command::new("sleep")
                    .arg("1000")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                match spawned {
                    Ok(child) => {
                        let pid = child.id();
                        self.state().grandchildren.push(child);
                        ok(&ToolResult {
                            structured_content: Some(json!({ "pid": pid })),
                            ..ToolResult::text(pid.to_string())
                        })
                    }
                    Err(e) => ok(&ToolResult::error(format!("spawn sleep: {e}"))),
                }
            }
            "progress" | "sleep" | "sample" | "roots" | "elicit" | "stderr" => {
                let token = CancellationToken::new();
                self.state().in_flight.insert(id_key(&id), token.clone());
                let server = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        _ = token.cancelled() => None,
                        outcome = server.slow_tool(&params) => Some(outcome),
                    };
                    server.state().in_flight.remove(&id_key(&id));
                    match outcome {
                        Some(outcome) => server.reply(&id, outcome).await,
                        None => eprintln!("everything: request {id} cancelled"),
                    }
                });
                return;
            }
            name if name.starts_with("misbehave_") => {
                let server = Arc::clone(self);
                tokio::spawn(async move { misbehave::call(&server, id, params).await });
                return;
            }
            _ => rpc_error(-32602, format!("unknown tool: {name}")),
        };
        self.reply(&id, outcome).await;
    }

    async fn slow_tool(&self, params: &Value) -> Outcome {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").unwrap_or(&Value::Null);
        match name {
            "sleep" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ok(&ToolResult::text(format!("slept {ms}")))
            }
            "progress" => {
                let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(3);
                let delay = Duration::from_millis(
                    args.get("delay_ms").and_then(Value::as_u64).unwrap_or(10),
                );
                let token = params.pointer("/_meta/progressToken");
                for i in 1..=steps {
                    if i > 1 {
                        tokio::time::sleep(delay).await;
                    }
                    if let Some(token) = token {
                        self.notify(
                            "notifications/progress",
                            json!({
                                "progressToken": token,
                                "progress": i,
                                "total": steps,
                                "message": format!("step {i} of {steps}")
                            }),
                        )
                        .await;
                    }
                }
                ok(&ToolResult::text(format!("done {steps}")))
            }
            "sample" => {
                let prompt = args.get("prompt").and_then(Value::as_str).unwrap_or("");
                let request = json!({
                    "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
                    "maxTokens": 100
                });
                match self.ask_client("sampling/createMessage", request).await {
                    Ok(result) => {
                        // 2025-11-25 allows an array of content blocks.
                        let content = match result.get("content") {
                            Some(Value::Array(blocks)) => blocks.first(),
                            other => other,
                        };
                        match content.and_then(|c| c.get("text")).and_then(Value::as_str) {
                            Some(text) => ok(&ToolResult::text(text)),
                            None => ok(&ToolResult::error(format!(
                                "sampling result without text: {result}"
                            ))),
                        }
                    }
                    Err(e) => ok(&ToolResult::error(e)),
                }
            }
            "roots" if args.get("after_change") == Some(&Value::Bool(true)) => {
                let seen = Value::Array(self.state().roots_after_change.clone());
                ok(&ToolResult::text(seen.to_string()))
            }
            "roots" => {
                // `times` rounds, one after the other; after each answer,
                // `log` (if given) as an info log message.
                let times = args
                    .get("times")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1);
                let log = args.get("log").cloned();
                let mut roots = Value::Null;
                for _ in 0..times {
                    match self.ask_client("roots/list", json!({})).await {
                        Ok(result) => roots = result.get("roots").cloned().unwrap_or(Value::Null),
                        Err(e) => return ok(&ToolResult::error(e)),
                    }
                    if let Some(message) = &log {
                        self.notify(
                            "notifications/message",
                            json!({ "level": "info", "logger": "everything", "data": message }),
                        )
                        .await;
                    }
                }
                ok(&ToolResult::text(roots.to_string()))
            }
            "elicit" => {
                let message = args
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("Please answer");
                let request = json!({
                    "message": message,
                    "requestedSchema": {
                        "type": "object",
                        "properties": { "answer": { "type": "string" } },
                        "required": ["answer"]
                    }
                });
                match self.ask_client("elicitation/create", request).await {
                    Ok(result) => ok(&ToolResult::text(result.to_string())),
                    Err(e) => ok(&ToolResult::error(e)),
                }
            }
            "stderr" => {
                let lines = args.get("lines").and_then(Value::as_u64).unwrap_or(1);
                let bytes = args
                    .get("bytes_per_line")
                    .and_then(Value::as_u64)
                    .unwrap_or(80) as usize;
                // Blocks for as long as nobody drains stderr: that is the test.
                let written = tokio::task::spawn_blocking(move || {
                    let mut line = vec![b'e'; bytes];
                    line.push(b'\n');
                    let mut stderr = std::io::stderr().lock();
                    for _ in 0..lines {
                        stderr.write_all(&line)?;
                    }
                    stderr.flush()
                })
                .await;
                match written {
                    Ok(Ok(())) => ok(&ToolResult::text("ok")),
                    Ok(Err(e)) => ok(&ToolResult::error(format!("write stderr: {e}"))),
                    Err(e) => ok(&ToolResult::error(format!("stderr task: {e}"))),
                }
            }
            _ => unreachable!("call_tool only spawns the slow tools"),
        }
    }

    /// Sends a server→client request with a fresh string id and waits for
    /// the answer; an error response becomes `Err` with its message.
    async fn ask_client(&self, method: &'static str, params: Value) -> Result<Value, String> {
        if self.check_capabilities {
            let capability = method.split('/').next().unwrap_or(method);
            let declared = self
                .state()
                .initialize_params
                .as_ref()
                .and_then(|p| p.pointer(&format!("/capabilities/{capability}")))
                .is_some();
            if !declared {
                return Err(format!("the client did not declare {capability}"));
            }
        }
        let n = self.next_client_request.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("s-{n}"));
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        self.state().pending.insert(key.clone(), tx);
        self.send(stdio::line(&json!({
            "jsonrpc": "2.0", "id": id, "method": method, "params": params
        })))
        .await;
        let answer = tokio::time::timeout(CLIENT_REQUEST_TIMEOUT, rx).await;
        self.state().pending.remove(&key);
        match answer {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => Err(error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string())),
            Ok(Err(_)) => Err(format!("{method}: request dropped")),
            Err(_) => Err(format!(
                "{method}: no answer within {}s",
                CLIENT_REQUEST_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The `large` response, written straight into one buffer of the final size:
/// the payload needs no escaping, and going through serde would scan it and
/// grow the buffer several times over.
/// The `large` answer, with the id first (as serde writes it) or, with
/// `id_last`, after the result (as the TypeScript SDK writes it).
fn large_reply(id: &Value, bytes: usize, id_last: bool) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"result":{"content":[{"type":"text","text":""#;
    let id = serde_json::to_vec(id).expect("JSON value serializes");
    let mut line = Vec::with_capacity(HEAD.len() + bytes + id.len() + 40);
    if id_last {
        line.extend_from_slice(HEAD);
    } else {
        line.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        line.extend_from_slice(&id);
        line.push(b',');
        line.extend_from_slice(&HEAD[1..]);
    }
    line.resize(line.len() + bytes, b'x');
    line.extend_from_slice(b"\"}]}");
    if id_last {
        line.extend_from_slice(br#","jsonrpc":"2.0","id":"#);
        line.extend_from_slice(&id);
    }
    line.extend_from_slice(b"}\n");
    line
}

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": { "type": "object", "properties": properties, "required": required }
    })
}

fn tool_catalogue() -> Vec<Value> {
    let string = |d: &str| json!({ "type": "string", "description": d });
    let integer = |d: &str| json!({ "type": "integer", "minimum": 0, "description": d });
    let boolean = |d: &str| json!({ "type": "boolean", "description": d });
    let mut add = tool(
        "add",
        "Adds two numbers",
        json!({ "a": { "type": "number" }, "b": { "type": "number" } }),
        &["a", "b"],
    );
    add["outputSchema"] = json!({
        "type": "object", "properties": { "sum": { "type": "number" } }, "required": ["sum"]
    });
    let mut pid = tool("pid", "Returns this server's process id", json!({}), &[]);
    pid["outputSchema"] = json!({
        "type": "object", "properties": { "pid": { "type": "integer" } }, "required": ["pid"]
    });
    let mut spawn_grandchild = tool(
        "spawn_grandchild",
        "Spawns `sleep 1000` in this server's process group and returns its pid",
        json!({}),
        &[],
    );
    spawn_grandchild["outputSchema"] = pid["outputSchema"].clone();
    let mut echo = tool(
        "echo",
        "Returns the message",
        json!({ "message": string("Text to echo") }),
        &["message"],
    );
    echo["execution"] = json!({ "taskSupport": "optional" });
    // 2026-07-28 `x-mcp-header`: clients mirror these arguments into
    // `Mcp-Param-Region` and `Mcp-Param-Shard` headers.
    let locate = tool(
        "locate",
        "Says where a query would run (its region and shard travel as headers too)",
        json!({
            "region": { "type": "string", "description": "Region", "x-mcp-header": "Region" },
            "target": { "type": "object", "properties": {
                "shard": { "type": "integer", "description": "Shard", "x-mcp-header": "Shard" }
            } }
        }),
        &["region"],
    );
    let mut task_job = tool(
        "task_job",
        "Runs only as a task: works for ms milliseconds, then ends as outcome says",
        json!({
            "ms": integer("How long the job works"),
            "outcome": { "type": "string", "enum": ["ok", "tool_error", "rpc_error"] }
        }),
        &[],
    );
    task_job["execution"] = json!({ "taskSupport": "required" });
    vec![
        echo,
        task_job,
        locate,
        add,
        tool(
            "large",
            "Returns one text block of exactly `bytes` bytes",
            json!({
                "bytes": integer("Payload size"),
                "id_last": { "type": "boolean", "description": "Write the answer's id after its result, as the TypeScript SDK does" }
            }),
            &["bytes"],
        ),
        tool(
            "progress",
            "Sends `steps` progress notifications `delay_ms` apart, then returns",
            json!({ "steps": integer("Number of steps"), "delay_ms": integer("Delay between steps") }),
            &[],
        ),
        tool(
            "sample",
            "Asks the client to sample (sampling/createMessage) and returns its text",
            json!({ "prompt": string("User message") }),
            &["prompt"],
        ),
        tool(
            "roots",
            "Asks the client for its roots (roots/list) and returns them as JSON",
            json!({
                "times": integer("Rounds of roots/list, one after the other (default 1); the last answer is returned"),
                "log": string("Logged at info after each answer"),
                "after_change": boolean("Ask nothing: return what each roots/list sent on notifications/roots/list_changed got"),
            }),
            &[],
        ),
        tool(
            "elicit",
            "Asks the client for input (elicitation/create) and returns the answer as JSON",
            json!({ "message": string("Question for the user") }),
            &["message"],
        ),
        tool(
            "log",
            "Sends notifications/message at `level` (subject to logging/setLevel)",
            json!({
                "level": { "type": "string", "enum": LOG_LEVELS },
                "message": string("Log data")
            }),
            &["message"],
        ),
        tool(
            "garbage",
            "Writes a non-JSON line on stdout, then answers normally",
            json!({ "text": string("The line to write") }),
            &[],
        ),
        tool(
            "sleep",
            "Waits `ms` milliseconds; a notifications/cancelled stops it without a response",
            json!({ "ms": integer("Milliseconds") }),
            &["ms"],
        ),
        tool(
            "cancelled",
            "Returns the notifications/cancelled received so far as JSON",
            json!({}),
            &[],
        ),
        tool(
            "unanswered",
            "Returns how many of this server's requests to the client still wait for an answer",
            json!({}),
            &[],
        ),
        tool(
            "crash",
            "Exits the process at once with `code`, without answering",
            json!({ "code": { "type": "integer", "description": "Exit code (default 1)" } }),
            &[],
        ),
        tool(
            "stderr",
            "Writes `lines` lines of `bytes_per_line` bytes to stderr",
            json!({ "lines": integer("Line count"), "bytes_per_line": integer("Bytes per line") }),
            &[],
        ),
        tool(
            "set_state",
            "Stores a string in this process",
            json!({ "value": string("Value to keep") }),
            &["value"],
        ),
        tool("get_state", "Returns the stored string", json!({}), &[]),
        pid,
        tool(
            "client_info",
            "Returns the initialize params this process received, as JSON",
            json!({}),
            &[],
        ),
        tool(
            "meta",
            "Returns the `_meta` of this tools/call request, as JSON",
            json!({}),
            &[],
        ),
        tool(
            "early_requests",
            "Returns the methods of the requests that came before initialize, as JSON",
            json!({}),
            &[],
        ),
        tool(
            "notify",
            "Sends a notification with `method` and no params",
            json!({ "method": string("e.g. notifications/tools/list_changed") }),
            &["method"],
        ),
        tool(
            "touch",
            "Sends notifications/resources/updated for `uri` if it is subscribed",
            json!({ "uri": string("Resource URI") }),
            &["uri"],
        ),
        spawn_grandchild,
    ]
}

/// The current UTC time as RFC 3339 (`2026-12-03T07:08:21Z`), for task timestamps.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Protocol breakage on demand, for the proxy's fault tests. Each tool runs
/// in a task of its own; none is listed in `tools/list`.
///
/// - `misbehave_emit {lines, line_bytes}`: writes each string as a raw
///   stdout line (`$TOKEN` becomes the call's progress token, `$ID` its
///   id, both as JSON; with `line_bytes`, `$FILL` becomes as many `x` as
///   make the line, LF not counted, that long), then answers `emitted`.
/// - `misbehave_huge_line {bytes, newline_after_ms}`: writes `bytes` bytes
///   with no newline, ends the line `newline_after_ms` later, then answers.
/// - `misbehave_slow_answer {bytes, pause_ms, then, id_last, end_id}`:
///   writes the first half of a text result of `bytes` bytes, pauses, then
///   by `then`: `"end"` writes the rest; `"exit"` exits in the middle of
///   the line; `"stall"` never writes the rest (and goes on serving). With
///   `id_last` the id comes after the result, as the TypeScript SDK writes
///   it, and is `end_id` if given.
/// - `misbehave_flood {count, bytes}`: `count` log notifications of about
///   `bytes` bytes each, then the answer.
/// - `misbehave_stop_reading {pings, resume_after_ms}`: answers `stopped`,
///   writes `pings` ping requests, and reads no more of stdin: never
///   again, or (with `resume_after_ms`) until that long has passed.
/// - `misbehave_close_stdout`: closes stdout and keeps running, silent.
mod misbehave {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::{Out, Server, ToolResult, ok};

    static STDIN_ABANDONED: AtomicBool = AtomicBool::new(false);
    static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
    static RESUME_AFTER_MS: AtomicU64 = AtomicU64::new(0);

    pub fn stdin_abandoned() -> bool {
        STDIN_ABANDONED.load(Ordering::SeqCst)
    }

    /// How long `misbehave_stop_reading` stops for; `None`: for good.
    pub fn resume_after() -> Option<Duration> {
        match RESUME_AFTER_MS.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The pause of `misbehave_stop_reading` is over: stdin is read again.
    pub fn resume_reading() {
        STDIN_ABANDONED.store(false, Ordering::SeqCst);
    }

    pub fn stdout_closed() -> bool {
        STDOUT_CLOSED.load(Ordering::SeqCst)
    }

    fn arg_u64(params: &Value, key: &str, default: u64) -> u64 {
        params
            .pointer(&format!("/arguments/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(default)
    }

    pub async fn call(server: &Server, id: Value, params: Value) {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        match name {
            "misbehave_emit" => {
                let token = params
                    .pointer("/_meta/progressToken")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "null".into());
                let id_text = id.to_string();
                let lines = params
                    .pointer("/arguments/lines")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let line_bytes = params
                    .pointer("/arguments/line_bytes")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize);
                for line in lines.iter().filter_map(Value::as_str) {
                    let mut line = line.replace("$TOKEN", &token).replace("$ID", &id_text);
                    if let Some(n) = line_bytes {
                        let fill = n.saturating_sub(line.len() - "$FILL".len());
                        line = line.replacen("$FILL", &"x".repeat(fill), 1);
                    }
                    let mut bytes = line.into_bytes();
                    bytes.push(b'\n');
                    server.send(Out::Line(bytes)).await;
                }
                server.reply(&id, ok(&ToolResult::text("emitted"))).await;
            }
            "misbehave_huge_line" => {
                let bytes = arg_u64(&params, "bytes", 8 << 20) as usize;
                let after = arg_u64(&params, "newline_after_ms", 1000);
                server.send(Out::Line(vec![b'x'; bytes])).await;
                tokio::time::sleep(Duration::from_millis(after)).await;
                server.send(Out::Line(b"\n".to_vec())).await;
                server.reply(&id, ok(&ToolResult::text("line ended"))).await;
            }
            "misbehave_slow_answer" => {
                let bytes = arg_u64(&params, "bytes", 1 << 20) as usize;
                let pause = arg_u64(&params, "pause_ms", 1000);
                let then = params
                    .pointer("/arguments/then")
                    .and_then(Value::as_str)
                    .unwrap_or("end")
                    .to_string();
                // The TypeScript SDK's order: the id after the result,
                // optionally another id than the request's.
                let id_last = params
                    .pointer("/arguments/id_last")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let end_id = params
                    .pointer("/arguments/end_id")
                    .cloned()
                    .unwrap_or_else(|| id.clone());
                // Raw JSON for a `_meta` member after the content, as written.
                let meta = params
                    .pointer("/arguments/meta")
                    .and_then(Value::as_str)
                    .map(|m| format!(",\"_meta\":{m}"))
                    .unwrap_or_default();
                let mut head = if id_last {
                    r#"{"result":{"content":[{"type":"text","text":""#.to_string()
                } else {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#
                    )
                }
                .into_bytes();
                head.resize(head.len() + bytes / 2, b'a');
                server.send(Out::Line(head)).await;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                match then.as_str() {
                    "exit" => std::process::exit(3),
                    "stall" => {}
                    _ => {
                        let mut rest = vec![b'b'; bytes - bytes / 2];
                        if id_last {
                            rest.extend_from_slice(
                                format!("\"}}]{meta}}},\"jsonrpc\":\"2.0\",\"id\":{end_id}}}\n")
                                    .as_bytes(),
                            );
                        } else {
                            rest.extend_from_slice(format!("\"}}]{meta}}}}}\n").as_bytes());
                        }
                        server.send(Out::Line(rest)).await;
                    }
                }
            }
            "misbehave_flood" => {
                let count = arg_u64(&params, "count", 100);
                let bytes = arg_u64(&params, "bytes", 1024) as usize;
                let data = "f".repeat(bytes);
                for n in 0..count {
                    server
                        .notify(
                            "notifications/message",
                            json!({ "level": "info", "data": { "n": n, "fill": data } }),
                        )
                        .await;
                }
                server.reply(&id, ok(&ToolResult::text("flooded"))).await;
            }
            "misbehave_stop_reading" => {
                RESUME_AFTER_MS.store(arg_u64(&params, "resume_after_ms", 0), Ordering::SeqCst);
                STDIN_ABANDONED.store(true, Ordering::SeqCst);
                server.reply(&id, ok(&ToolResult::text("stopped"))).await;
                for n in 0..arg_u64(&params, "pings", 0) {
                    let ping =
                        json!({ "jsonrpc": "2.0", "id": format!("ping-{n}"), "method": "ping" });
                    server.send(super::stdio::line(&ping)).await;
                }
            }
            "misbehave_close_stdout" => {
                STDOUT_CLOSED.store(true, Ordering::SeqCst);
                close_stdout_pipe();
            }
            other => {
                let error = super::rpc_error(-32602, format!("unknown tool: {other}"));
                server.reply(&id, error).await;
            }
        }
    }

    /// Closes every descriptor of this process that refers to the pipe on
    /// fd 1 (the writer thread holds a dup of it), so the reader sees EOF.
    fn close_stdout_pipe() {
        let target = std::fs::read_link("/proc/self/fd/1").ok();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            if std::fs::read_link(format!("/proc/self/fd/{fd}")).ok() == target && target.is_some()
            {
                // SAFETY: the descriptor is open (just listed) and refers to
                // the stdout pipe, which nothing writes to any more
                // (`STDOUT_CLOSED` is set); closing it is the point.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let _ = owned.as_raw_fd();
                drop(owned);
            }
        }
    }
}
