//! `modern_server`: a stdio MCP server that speaks only the stateless
//! 2026-07-28 revision, for testing the proxy against modern children.
//!
//! Implements, from `docs/specification/2026-07-28/` and
//! `schema/2026-07-28/schema.ts`:
//! - `basic/index.mdx` "_meta": every request must carry
//!   `io.modelcontextprotocol/protocolVersion` and
//!   `io.modelcontextprotocol/clientCapabilities`; a request missing either is
//!   malformed (-32602); every result carries `resultType` and
//!   `_meta["io.modelcontextprotocol/serverInfo"]`.
//! - `basic/versioning.mdx`: no handshake; an unsupported version gets
//!   `UnsupportedProtocolVersionError` (-32022, `data.supported`,
//!   `data.requested`); a modern-only server names its versions in the error
//!   it gives `initialize` (here -32601, since the method does not exist).
//! - `server/discover` (schema `DiscoverResult`): `supportedVersions`,
//!   `capabilities`, `instructions`, and the `CacheableResult` fields
//!   `ttlMs`/`cacheScope`, which `tools/list` carries too.
//! - `notifications/cancelled` on stdio stops a running `sleep` with no
//!   response; `notifications/progress` for `progress` when the request has
//!   `_meta.progressToken`.
//!
//! `ping`, `logging/setLevel` and the resource/prompt methods were removed or
//! are not offered, so they get -32601 like any unknown method. Tools:
//! `echo`, `add`, `large`, `progress`, `sleep`, `pid`, `log` (one
//! `notifications/message` when the request's `_meta` log level asks for it),
//! `initialize_refusals`
//! (how many `initialize` requests this process refused), and `ask`, which
//! needs input from the client (`basic/patterns/mrtr.mdx`): it answers with
//! `input_required` (one `elicitation/create`, `sampling/createMessage` or
//! `roots/list` per round, `rounds` rounds; `extra` more of the same in
//! each round) and keeps no state between calls: the round travels in
//! `requestState`.

#[path = "common/stdio.rs"]
mod stdio;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use stdio::Out;

const SUPPORTED_VERSIONS: [&str; 1] = ["2026-07-28"];

const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Log levels, least to most severe (`server/utilities/logging`).
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

const INVALID_PARAMS: i64 = -32602;
const METHOD_NOT_FOUND: i64 = -32601;
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Freshness hint for `server/discover` and `tools/list`: the catalogue never
/// changes during the process's life, and nothing in it is per-user.
const CACHE_TTL_MS: u64 = 60_000;

#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Value,
}

struct Server {
    out: mpsc::Sender<Out>,
    /// Running `sleep`/`progress` calls by the JSON text of their id, for
    /// `notifications/cancelled`.
    in_flight: Mutex<HashMap<String, CancellationToken>>,
    initialize_refusals: std::sync::atomic::AtomicU64,
}

enum Outcome {
    Result(Value),
    Error(i64, String, Option<Value>),
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let out = stdio::spawn_writer(false);
    let server = Arc::new(Server {
        out: out.clone(),
        in_flight: Mutex::new(HashMap::new()),
        initialize_refusals: std::sync::atomic::AtomicU64::new(0),
    });
    let mut lines = stdio::spawn_reader();
    while let Some(line) = lines.recv().await {
        server.on_line(&line).await;
    }
    // The spec asks stdio servers to exit promptly on stdin EOF.
    let _ = out.send(Out::Exit(0)).await;
    std::future::pending::<()>().await;
}

fn server_info() -> Value {
    json!({ "name": "modern_server", "version": env!("CARGO_PKG_VERSION") })
}

fn text_result(text: impl Into<String>, is_error: bool) -> Outcome {
    let mut result = json!({ "content": [{ "type": "text", "text": text.into() }] });
    if is_error {
        result["isError"] = Value::Bool(true);
    }
    Outcome::Result(result)
}

impl Server {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.in_flight.lock().expect("in-flight lock not poisoned")
    }

    async fn send(&self, message: &Value) {
        let _ = self.out.send(stdio::line(message)).await;
    }

    async fn reply(&self, id: &Value, outcome: Outcome) {
        let message = match outcome {
            Outcome::Result(mut result) => {
                if result.get("resultType").is_none() {
                    result["resultType"] = json!("complete");
                }
                result["_meta"] = json!({ META_SERVER_INFO: server_info() });
                json!({ "jsonrpc": "2.0", "id": id, "result": result })
            }
            Outcome::Error(code, message, data) => {
                let mut error = json!({ "code": code, "message": message });
                if let Some(data) = data {
                    error["data"] = data;
                }
                json!({ "jsonrpc": "2.0", "id": id, "error": error })
            }
        };
        self.send(&message).await;
    }

    async fn on_line(self: &Arc<Self>, line: &[u8]) {
        let message: Incoming = match serde_json::from_slice(line) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("modern_server: skipping malformed line: {e}");
                return;
            }
        };
        match (message.method, message.id) {
            (Some(method), Some(id)) => self.on_request(&method, id, message.params).await,
            (Some(method), None) if method == "notifications/cancelled" => {
                let request_id = message.params.get("requestId").unwrap_or(&Value::Null);
                if let Some(token) = self.in_flight().remove(&request_id.to_string()) {
                    token.cancel();
                }
            }
            (Some(method), None) => eprintln!("modern_server: ignoring notification {method}"),
            // This server never sends requests, so it expects no responses.
            (None, _) => eprintln!("modern_server: ignoring a message that is not a request"),
        }
    }

    async fn on_request(self: &Arc<Self>, method: &str, id: Value, params: Value) {
        if method == "initialize" {
            self.initialize_refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let supported = SUPPORTED_VERSIONS.join(", ");
            let outcome = Outcome::Error(
                METHOD_NOT_FOUND,
                format!("initialize is not supported: this server speaks only {supported}"),
                Some(json!({ "supported": SUPPORTED_VERSIONS })),
            );
            return self.reply(&id, outcome).await;
        }
        if let Err(outcome) = check_meta(&params) {
            return self.reply(&id, outcome).await;
        }
        let outcome = match method {
            "server/discover" => Outcome::Result(json!({
                "supportedVersions": SUPPORTED_VERSIONS,
                "capabilities": { "tools": {} },
                "instructions": "A test server: every tool does one small, predictable thing.",
                "ttlMs": CACHE_TTL_MS,
                "cacheScope": "public"
            })),
            "tools/list" => Outcome::Result(json!({
                "tools": tool_catalogue(),
                "ttlMs": CACHE_TTL_MS,
                "cacheScope": "public"
            })),
            "tools/call" => return self.call_tool(id, params).await,
            _ => Outcome::Error(
                METHOD_NOT_FOUND,
                format!("method not found: {method}"),
                None,
            ),
        };
        self.reply(&id, outcome).await;
    }

    async fn call_tool(self: &Arc<Self>, id: Value, params: Value) {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").unwrap_or(&Value::Null);
        let outcome = match name {
            "echo" => match args.get("message").and_then(Value::as_str) {
                Some(message) => text_result(message, false),
                None => text_result("missing string argument: message", true),
            },
            "add" => match (
                args.get("a").and_then(Value::as_f64),
                args.get("b").and_then(Value::as_f64),
            ) {
                (Some(a), Some(b)) => {
                    // Integers stay integers unless the sum would overflow.
                    let int_sum = args["a"]
                        .as_i64()
                        .zip(args["b"].as_i64())
                        .and_then(|(a, b)| a.checked_add(b));
                    let sum = int_sum.map_or_else(|| json!(a + b), |s| json!(s));
                    let mut result = text_result(sum.to_string(), false);
                    if let Outcome::Result(r) = &mut result {
                        r["structuredContent"] = json!({ "sum": sum });
                    }
                    result
                }
                _ => text_result("a and b must be numbers", true),
            },
            "large" => match args.get("bytes").and_then(Value::as_u64) {
                Some(bytes) => text_result("x".repeat(bytes as usize), false),
                None => text_result("missing integer argument: bytes", true),
            },
            "pid" => text_result(std::process::id().to_string(), false),
            "log" => {
                // `server/utilities/logging`: log messages only for a
                // request whose `_meta` asks, at or above its level.
                let level = args.get("level").and_then(Value::as_str).unwrap_or("error");
                let asked = params
                    .pointer("/_meta/io.modelcontextprotocol~1logLevel")
                    .and_then(Value::as_str);
                let rank = |l: &str| LOG_LEVELS.iter().position(|x| *x == l);
                let sent = match (asked.and_then(rank), rank(level)) {
                    (Some(min), Some(at)) if at >= min => {
                        self.send(&json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/message",
                            "params": { "level": level, "logger": "modern_server", "data": "logged" }
                        }))
                        .await;
                        true
                    }
                    _ => false,
                };
                text_result(if sent { "logged" } else { "not logged" }, false)
            }
            "ask" => ask(&params),
            "initialize_refusals" => text_result(
                self.initialize_refusals
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
                false,
            ),
            "sleep" | "progress" => {
                let token = CancellationToken::new();
                self.in_flight().insert(id.to_string(), token.clone());
                let server = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        _ = token.cancelled() => None,
                        outcome = server.slow_tool(&params) => Some(outcome),
                    };
                    server.in_flight().remove(&id.to_string());
                    if let Some(outcome) = outcome {
                        server.reply(&id, outcome).await;
                    }
                });
                return;
            }
            _ => Outcome::Error(INVALID_PARAMS, format!("unknown tool: {name}"), None),
        };
        self.reply(&id, outcome).await;
    }

    async fn slow_tool(&self, params: &Value) -> Outcome {
        let args = params.get("arguments").unwrap_or(&Value::Null);
        if params.get("name").and_then(Value::as_str) == Some("sleep") {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return text_result(format!("slept {ms}"), false);
        }
        let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(3);
        let delay =
            Duration::from_millis(args.get("delay_ms").and_then(Value::as_u64).unwrap_or(10));
        let token = params.pointer("/_meta/progressToken");
        for i in 1..=steps {
            if i > 1 {
                tokio::time::sleep(delay).await;
            }
            if let Some(token) = token {
                self.send(&json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {
                        "progressToken": token,
                        "progress": i,
                        "total": steps,
                        "message": format!("step {i} of {steps}")
                    }
                }))
                .await;
            }
        }
        text_result(format!("done {steps}"), false)
    }
}

/// Checks the per-request fields every modern request must carry.
/// The `ask` tool: round `k` of `rounds` is in `requestState` ("round-k");
/// each round asks one question keyed `q<k>`, and the last answer is the
/// result, as JSON text.
fn ask(params: &Value) -> Outcome {
    let args = params.get("arguments").unwrap_or(&Value::Null);
    let kind = args
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("elicitation");
    let rounds = args.get("rounds").and_then(Value::as_u64).unwrap_or(1);
    let round = match params.get("requestState").and_then(Value::as_str) {
        None => 0,
        Some(state) => match state
            .strip_prefix("round-")
            .and_then(|k| k.parse::<u64>().ok())
        {
            Some(k) if (1..=rounds).contains(&k) => k,
            _ => return Outcome::Error(-32602, format!("invalid requestState: {state}"), None),
        },
    };
    if round > 0 {
        let key = format!("q{}", round - 1);
        let Some(answer) = params.pointer(&format!("/inputResponses/{key}")) else {
            return Outcome::Error(-32602, format!("inputResponses lacks {key}"), None);
        };
        if round == rounds {
            return text_result(answer.to_string(), false);
        }
    }
    let (capability, request) = match kind {
        "elicitation" => (
            "elicitation",
            json!({
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": format!("Your name, please (round {round})"),
                    "requestedSchema": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] }
                }
            }),
        ),
        "sampling" => (
            "sampling",
            json!({
                "method": "sampling/createMessage",
                "params": {
                    "messages": [{ "role": "user", "content": { "type": "text", "text": format!("round {round}") } }],
                    "maxTokens": 16
                }
            }),
        ),
        "roots" => ("roots", json!({ "method": "roots/list", "params": {} })),
        other => return text_result(format!("unknown kind: {other}"), true),
    };
    let declared = params
        .pointer("/_meta")
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .and_then(|c| c.get(capability))
        .is_some();
    // `force` misbehaves on purpose: it asks anyway.
    let force = args.get("force").and_then(Value::as_bool).unwrap_or(false);
    if !declared && !force {
        // The spec forbids asking for what the client did not declare.
        return text_result(format!("the client did not declare {capability}"), true);
    }
    // `extra` misbehaves too: as many more requests in the same round,
    // which the proxy must bound like any requests to a client.
    let extra = args.get("extra").and_then(Value::as_u64).unwrap_or(0);
    let mut requests = serde_json::Map::new();
    requests.insert(format!("q{round}"), request.clone());
    for n in 0..extra {
        requests.insert(format!("q{round}-extra-{n}"), request.clone());
    }
    Outcome::Result(json!({
        "resultType": "input_required",
        "inputRequests": requests,
        "requestState": format!("round-{}", round + 1)
    }))
}

fn check_meta(params: &Value) -> Result<(), Outcome> {
    let meta = params.get("_meta");
    let version = meta
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let Some(version) = version else {
        return Err(Outcome::Error(
            INVALID_PARAMS,
            format!("missing _meta[\"{META_PROTOCOL_VERSION}\"]"),
            None,
        ));
    };
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(Outcome::Error(
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version".into(),
            Some(json!({ "supported": SUPPORTED_VERSIONS, "requested": version })),
        ));
    }
    if !meta
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object)
    {
        return Err(Outcome::Error(
            INVALID_PARAMS,
            format!("missing _meta[\"{META_CLIENT_CAPABILITIES}\"]"),
            None,
        ));
    }
    Ok(())
}

fn tool_catalogue() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let integer = json!({ "type": "integer", "minimum": 0 });
    json!([
        {
            "name": "echo",
            "description": "Returns the message",
            "inputSchema": object(json!({ "message": { "type": "string" } }), &["message"])
        },
        {
            "name": "add",
            "description": "Adds two numbers",
            "inputSchema": object(json!({ "a": { "type": "number" }, "b": { "type": "number" } }), &["a", "b"]),
            "outputSchema": object(json!({ "sum": { "type": "number" } }), &["sum"])
        },
        {
            "name": "large",
            "description": "Returns one text block of exactly `bytes` bytes",
            "inputSchema": object(json!({ "bytes": integer }), &["bytes"])
        },
        {
            "name": "progress",
            "description": "Sends `steps` progress notifications `delay_ms` apart, then returns",
            "inputSchema": object(json!({ "steps": integer, "delay_ms": integer }), &[])
        },
        {
            "name": "sleep",
            "description": "Waits `ms` milliseconds; notifications/cancelled stops it without a response",
            "inputSchema": object(json!({ "ms": integer }), &["ms"])
        },
        {
            "name": "log",
            "description": "Sends one notifications/message at `level` (default error) if the request's _meta logLevel asks for it",
            "inputSchema": object(json!({ "level": { "type": "string" } }), &[])
        },
        {
            "name": "pid",
            "description": "Returns this server's process id",
            "inputSchema": object(json!({}), &[])
        },
        {
            "name": "ask",
            "description": "Asks the client for input (elicitation, sampling or roots) over `rounds` rounds and returns the last answer",
            "inputSchema": object(json!({ "kind": { "type": "string", "enum": ["elicitation", "sampling", "roots"] }, "rounds": integer, "force": { "type": "boolean" } }), &[])
        },
        {
            "name": "initialize_refusals",
            "description": "Returns how many initialize requests this process refused",
            "inputSchema": object(json!({}), &[])
        }
    ])
}
