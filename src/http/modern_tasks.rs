//! The 2026-07-28 Tasks extension (`io.modelcontextprotocol/tasks`,
//! SEP-2663) served from a 2025-11-25 child's tasks
//! (`basic/utilities/tasks`).
//!
//! What is translated:
//! - `server/discover` declares the extension when the child declared
//!   task-augmented `tools/call` (`tasks.requests.tools.call`), and only
//!   then (see [`super::modern`]).
//! - A `tools/call` whose client declared the extension in its
//!   per-request capabilities goes to the child task-augmented (`"task":
//!   {}`) when the tool's `execution.taskSupport`, as a `tools/list` of the
//!   child's showed it, is `required` or `optional` (a client that
//!   declared it can poll; its call then outlives neither one HTTP
//!   response nor `--request-timeout`); the child's `CreateTaskResult`
//!   becomes a `resultType: "task"` result. A client that did not declare
//!   it never gets a task: a `task` member it sent itself is taken out,
//!   and a tool that requires a task is refused with 400 and -32021 naming
//!   the extension, without reaching the child.
//! - A `tools/list` of such a child is answered whole, in JSON (no log
//!   messages or progress on the way), its tools without 2025-11-25's
//!   `execution` (`taskSupport`): 2026-07-28's Tool has no such member,
//!   as a task is the server's choice per call. The proxy still learns
//!   each tool's support from the child's answer.
//! - `tasks/get` is the child's `tasks/get`; for a task the child calls
//!   `completed` or `failed` the proxy also asks `tasks/result` and puts
//!   the result (`completed`, a tool error with `isError` included) or the
//!   JSON-RPC error (`failed`) in the Task. A task's own requests of the
//!   child (`_meta` related-task: an elicitation, a sampling request) are
//!   held by the multiplexer for the task's client (`upstream::tasks`,
//!   [`Upstream::task_inputs`]): while any is held the task is
//!   `input_required` with them in `inputRequests`, each under a key never
//!   used again, if the `tasks/get` declares what it needs (else the
//!   child is refused it); `input_required` of the child's with none held is
//!   `working` (nothing to answer). A finished task's held requests are
//!   refused at the child.
//! - `tasks/update` gives each `inputResponses` member to the child as the
//!   result of its request under that key; keys not outstanding are
//!   ignored, as the extension says. It is answered by the proxy (the
//!   child has no such method), with an empty result, or "task not found"
//!   (-32602) for a task that is not the caller's.
//! - `tasks/cancel` is the child's `tasks/cancel`, answered with an empty
//!   result, and the task's held requests are refused at the child. The
//!   child's -32602 for a task that has finished is acknowledged too (the
//!   extension's cancellation is cooperative and may come late): the
//!   child's `tasks/get` tells it from an unknown task, whose -32602
//!   passes on.
//!
//! Held requests are bounded by `--max-server-requests` (in all),
//! `--max-server-requests-per-session` (per task) and
//! `--max-task-input-bytes` (in all; a task a quarter), wait at most
//! `--request-timeout` (else `--session-idle-timeout`), and go with
//! their child.
//!
//! Which caller sees which task is the multiplexer's (`upstream::tasks`):
//! a task is its creating principal's. A task within its ttl (the
//! child's; none without one) or with a request held keeps its child from
//! counting as idle, as a session would: its client has none.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::App;
use super::modern_answer::{CancelUnlessAnswered, error_status};
use super::response::json_ok;
use super::tool_headers::TaskSupport;
use crate::auth::Principal;
use crate::error::ProxyError;
use crate::jsonrpc::{self, Frame};
use crate::session::InFlightSlots;
use crate::sse::Body;
use crate::upstream::{DEFAULT_HANDSHAKE_TIMEOUT, Port, PortKind, Reply, Upstream};

/// The extension's identifier.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// `_meta` key of the client's capabilities.
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Whether a 2025-11-25 child's capabilities let it run `tools/call` as a task.
pub fn child_runs_tool_tasks(capabilities: &Value) -> bool {
    capabilities
        .pointer("/tasks/requests/tools/call")
        .is_some_and(Value::is_object)
}

/// Whether a 2026-07-28 request declares the extension in its
/// capabilities. Capabilities that do not name it (nor escape a
/// character) are not parsed: most calls never declare it.
pub fn client_declares(frame: &Frame) -> bool {
    let Some(raw) = frame.meta_raw(META_CAPABILITIES) else {
        return false;
    };
    if memchr::memmem::find(raw, EXTENSION.as_bytes()).is_none()
        && memchr::memchr(b'\\', raw).is_none()
    {
        return false;
    }
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|c| c.get("extensions")?.get(EXTENSION).map(Value::is_object))
        == Some(true)
}

/// Whether a `tools/call` of a tool with `support` may go as a task at
/// all, before the child's capabilities are read: a tool no listing
/// showed, one that forbids it, or an optional one called by a client
/// that did not declare the extension never does.
pub fn may_go_as_task(frame: &Frame, support: Option<TaskSupport>) -> bool {
    match support.unwrap_or_default() {
        TaskSupport::Forbidden => false,
        TaskSupport::Optional => client_declares(frame),
        TaskSupport::Required => true,
    }
}

/// The capabilities a request refused for want of the extension needs.
fn required() -> Value {
    json!({ "extensions": { EXTENSION: {} } })
}

fn missing(message: String) -> ProxyError {
    ProxyError::MissingClientCapability {
        message,
        required: required(),
    }
}

/// A `subscriptions/listen` that asks for task status notifications
/// (`notifications.taskIds`) must come from a client that declared the
/// extension (-32021 otherwise). One that did gets an acknowledgment
/// without `taskIds`: the proxy sends no `notifications/tasks` (a client
/// polls).
pub fn check_listen(frame: &Frame) -> Result<(), ProxyError> {
    if frame
        .locate_in_params(&["notifications", "taskIds"])
        .is_some()
        && !client_declares(frame)
    {
        return Err(missing(format!(
            "task status notifications are part of the {EXTENSION} extension: declare it in {META_CAPABILITIES}"
        )));
    }
    Ok(())
}

/// Whether a 2026-07-28 `tools/call` goes to a 2025-11-25 child as a
/// task: `support` is the tool's (`None`: no listing showed it, which is
/// taken as forbidden), `child_tasks` whether the child runs tool calls as
/// tasks at all. A tool that requires a task, called by a client that did
/// not declare the extension, is refused.
pub fn call_as_task(
    frame: &Frame,
    support: Option<TaskSupport>,
    child_tasks: bool,
) -> Result<bool, ProxyError> {
    if !child_tasks {
        return Ok(false);
    }
    match support.unwrap_or_default() {
        TaskSupport::Forbidden => Ok(false),
        TaskSupport::Optional => Ok(client_declares(frame)),
        TaskSupport::Required if client_declares(frame) => Ok(true),
        TaskSupport::Required => Err(missing(format!(
            "this tool runs only as a task: declare the {EXTENSION} extension in {META_CAPABILITIES}"
        ))),
    }
}

/// The call as the child gets it: without a `task` member of the
/// client's (2026-07-28 has none; a client that did not declare the
/// extension must not get a task through one), with `"task": {}` when it
/// goes as a task. Nothing else of it is read or rewritten: arguments no
/// tree can hold (`1e400`, nesting past the parser's depth) pass as they
/// are, except when a `task` member of the client's must be taken out.
pub fn with_task(frame: Frame, as_task: bool) -> Result<Frame, ProxyError> {
    let theirs = frame.locate_in_params(&["task"]);
    match (as_task, theirs) {
        (false, None) => Ok(frame),
        // The client's value is replaced by the proxy's.
        (true, Some(at)) => Ok(frame.with_replaced(at, b"{}")),
        (true, None) => {
            let params = frame.params().unwrap_or(b"{}");
            let body = params.trim_ascii();
            let Some(inner) = body.strip_prefix(b"{") else {
                return Err(ProxyError::InvalidParams(
                    "tools/call params must be an object".into(),
                ));
            };
            let mut out = Vec::with_capacity(params.len() + 12);
            out.extend_from_slice(br#"{"task":{}"#);
            if !inner.trim_ascii_start().starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(inner);
            Ok(frame.with_params(&out))
        }
        (false, Some(_)) => {
            let raw = frame.params().unwrap_or(b"{}");
            let params = serde_json::from_slice::<IndexedMembers>(raw)
                .map_err(|e| ProxyError::InvalidParams(format!("tools/call params: {e}")))?;
            let mut out = Vec::with_capacity(raw.len());
            params.write_without("task", &mut out);
            Ok(frame.with_params(&out))
        }
    }
}

/// An object's members in their order, each value as written.
struct IndexedMembers(Vec<(String, Box<RawValue>)>);

impl IndexedMembers {
    /// Writes the object again, in its order, without the member `key`
    /// (every copy), each value as it was written.
    fn write_without(&self, key: &str, out: &mut Vec<u8>) {
        out.push(b'{');
        let kept = self.0.iter().filter(|(k, _)| k != key);
        for (i, (k, v)) in kept.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Invariant: a str serializes.
            serde_json::to_writer(&mut *out, k).expect("a string serializes");
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
}

impl<'de> serde::Deserialize<'de> for IndexedMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = IndexedMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<IndexedMembers, A::Error> {
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(kv);
                }
                Ok(IndexedMembers(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A 2025-11-25 `Task`'s members as a 2026-07-28 Task has them: `ttl`
/// is `ttlMs` (required, `null` for unlimited), `pollInterval`
/// `pollIntervalMs`; `input_required` is `working` (see the module's
/// notes). Members of neither revision's Task are left out.
fn task_members(task: &Map<String, Value>, out: &mut Map<String, Value>) {
    for key in [
        "taskId",
        "status",
        "statusMessage",
        "createdAt",
        "lastUpdatedAt",
    ] {
        if let Some(v) = task.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if out.get("status").and_then(Value::as_str) == Some("input_required") {
        out.insert("status".into(), json!("working"));
    }
    out.insert(
        "ttlMs".into(),
        task.get("ttl").cloned().unwrap_or(Value::Null),
    );
    if let Some(poll) = task.get("pollInterval") {
        out.insert("pollIntervalMs".into(), poll.clone());
    }
}

/// The child's answer as a parsed object: `Ok(result)`, or `Err` with the
/// answer as it is (an error, or not a result object), to pass on.
fn result_of(answer: &Bytes) -> Result<Map<String, Value>, ()> {
    let v: Value = serde_json::from_slice(answer).map_err(|_| ())?;
    match v {
        Value::Object(mut o) => match o.remove("result") {
            Some(Value::Object(r)) => Ok(r),
            _ => Err(()),
        },
        _ => Err(()),
    }
}

/// A `CreateTaskResult` of 2025-11-25 (`{"task": {...}}`) as the
/// 2026-07-28 `resultType: "task"` result; `None` for any other answer
/// (a plain result, `input_required`, an error), which passes as it is.
pub fn create_result(id: &[u8], answer: &Bytes) -> Option<Bytes> {
    let mut result = result_of(answer).ok()?;
    let Some(Value::Object(task)) = result.remove("task") else {
        return None;
    };
    let mut out = Map::new();
    out.insert("resultType".into(), json!("task"));
    task_members(&task, &mut out);
    if let Some(meta) = result.remove("_meta") {
        out.insert("_meta".into(), meta);
    }
    Some(jsonrpc::result_response(id, &Value::Object(out)))
}

/// A 2025-11-25 `tools/list` answer as a 2026-07-28 client gets it: its
/// tools without `execution` (`taskSupport`), which that revision's Tool
/// does not have (a task is the server's choice, made per call; a tool
/// that needs one refuses a client without the extension with -32021).
/// Everything else stays as the child wrote it, tools without the member
/// byte for byte. `None` when nothing is taken out (or the answer is not
/// a list result), so the answer passes as it is.
pub fn without_execution(_id: &[u8], answer: &Bytes) -> Option<Bytes> {
    memchr::memmem::find(answer, b"execution")?;
    let at = jsonrpc::locate_checked(answer, &["result", "tools"])?;
    // (The type the batch splitter reads too: one instance of the parser.)
    let tools: Vec<&RawValue> = serde_json::from_slice(&answer[at.clone()]).ok()?;
    let mut out = Vec::with_capacity(answer.len());
    out.extend_from_slice(&answer[..at.start]);
    out.push(b'[');
    let mut changed = false;
    for (n, tool) in tools.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let raw = tool.get().as_bytes();
        let members = (memchr::memmem::find(raw, b"execution").is_some())
            .then(|| serde_json::from_slice::<IndexedMembers>(raw).ok())
            .flatten()
            .filter(|m| m.0.iter().any(|(k, _)| k == "execution"));
        let Some(members) = members else {
            out.extend_from_slice(raw);
            continue;
        };
        changed = true;
        members.write_without("execution", &mut out);
    }
    out.push(b']');
    out.extend_from_slice(&answer[at.end..]);
    changed.then(|| Bytes::from(out))
}

/// Serves `tasks/get`, `tasks/cancel` and `tasks/update` of a 2026-07-28
/// client for a 2025-11-25 child.
pub async fn serve(
    app: &Arc<App>,
    upstream: &Arc<Upstream>,
    principal: &Principal,
    frame: Frame,
    slots: Option<InFlightSlots>,
) -> Result<Response<Body>, ProxyError> {
    let method = frame.method().unwrap_or_default().to_string();
    if !client_declares(&frame) {
        return Err(missing(format!(
            "{method} is part of the {EXTENSION} extension: declare it in {META_CAPABILITIES}"
        )));
    }
    let Some(task_id) = frame.params().and_then(task_id) else {
        return Err(ProxyError::InvalidParams(format!(
            "{method} needs params.taskId, a string"
        )));
    };
    let id: Box<[u8]> = frame.id().unwrap_or_default().into();
    let port = app.new_port(crate::upstream::STATELESS_LABEL.into(), PortKind::Modern);
    port.set_principal(super::owner_key(principal).as_deref());
    if method == "tasks/update" {
        let responses = input_responses(&frame)?;
        // The proxy holds the task's requests: the child is not asked.
        if !upstream
            .answer_task_inputs(&port, &task_id, responses)
            .await
        {
            return Err(ProxyError::InvalidParams(format!(
                "task not found: {task_id}"
            )));
        }
        return Ok(json_ok(jsonrpc::envelope(
            &id,
            "result",
            br#"{"resultType":"complete"}"#,
        )));
    }
    upstream.attach(port.clone());
    let mut guard = CancelUnlessAnswered::new(app, upstream, &port, &id, None, slots);
    let answer = ask(app, upstream, &port, frame.clone()).await?;
    let out = match result_of(&answer) {
        Err(()) if method == "tasks/cancel" && is_invalid_params(&answer) => {
            // 2025-11-25 refuses to cancel a finished task (-32602, as for
            // an unknown one); the extension acknowledges it, as a
            // cancellation that came too late. Which one it is, the
            // child's tasks/get tells.
            let get = child_request(&id, "tasks/get", &task_id);
            match result_of(&ask(app, upstream, &port, get).await?) {
                Ok(_) => {
                    upstream.end_task_inputs(&port, &task_id, "the task has ended");
                    acknowledgment(&id, None)
                }
                Err(()) => answer,
            }
        }
        Err(()) => answer,
        Ok(task) if method == "tasks/cancel" => {
            upstream.end_task_inputs(&port, &task_id, "the task was cancelled");
            acknowledgment(&id, task.get("_meta"))
        }
        Ok(task) => {
            let mut out = Map::new();
            out.insert("resultType".into(), json!("complete"));
            task_members(&task, &mut out);
            let status = task.get("status").and_then(Value::as_str);
            let mut outcome = None;
            let mut inputs = None;
            if matches!(status, Some("completed" | "failed" | "cancelled")) {
                upstream.end_task_inputs(&port, &task_id, "the task has ended");
            } else {
                inputs = upstream.task_inputs(&port, &frame, &task_id).await;
            }
            if matches!(status, Some("completed" | "failed")) {
                let result = child_request(&id, "tasks/result", &task_id);
                let answer = ask(app, upstream, &port, result).await?;
                outcome = Some(answer);
            }
            if let Some(meta) = task.get("_meta") {
                out.insert("_meta".into(), meta.clone());
            }
            match (&outcome, &inputs) {
                (Some(answer), _) => {
                    let (name, raw) = settle(&mut out, answer);
                    jsonrpc::envelope(&id, "result", &with_member(&out, name, raw))
                }
                (None, Some(requests)) => {
                    // Outstanding requests make the task `input_required`,
                    // whatever the child calls it (2025-11-25 only says it
                    // should): the extension's status for them.
                    out.insert("status".into(), json!("input_required"));
                    let result = with_member(&out, "inputRequests", requests);
                    jsonrpc::envelope(&id, "result", &result)
                }
                (None, None) => jsonrpc::result_response(&id, &Value::Object(out)),
            }
        }
    };
    guard.answered = true;
    let status = error_status(&out);
    let mut r = json_ok(out);
    if let Some(status) = status {
        *r.status_mut() = status;
    }
    Ok(r)
}

/// The proxy's own `method` request about `task` to the child, under the
/// client's `id`: the answer comes back under it.
fn child_request(id: &[u8], method: &str, task: &str) -> Frame {
    Frame::from_value(&json!({
        "jsonrpc": "2.0", "id": 0, "method": method,
        "params": { "taskId": task },
    }))
    .with_id(id)
}

/// The extension's acknowledgment of `tasks/cancel`: an empty result
/// (with the child's `_meta`, if any).
fn acknowledgment(id: &[u8], meta: Option<&Value>) -> Bytes {
    let mut out = Map::new();
    out.insert("resultType".into(), json!("complete"));
    if let Some(meta) = meta {
        out.insert("_meta".into(), meta.clone());
    }
    jsonrpc::result_response(id, &Value::Object(out))
}

/// Whether the child's answer is a -32602 error.
fn is_invalid_params(answer: &[u8]) -> bool {
    jsonrpc::locate_checked(answer, &["error", "code"])
        .and_then(|at| serde_json::from_slice::<i64>(&answer[at]).ok())
        == Some(jsonrpc::code::INVALID_PARAMS)
}

/// `params.inputResponses` of a `tasks/update`: an object whose members
/// are each the result for the input request under that key (an object),
/// as written.
fn input_responses(frame: &Frame) -> Result<Vec<(String, Box<RawValue>)>, ProxyError> {
    let bad = || {
        ProxyError::InvalidParams(
            "tasks/update needs params.inputResponses, an object of results by input request key"
                .into(),
        )
    };
    let at = frame
        .locate_in_params(&["inputResponses"])
        .ok_or_else(bad)?;
    let members = serde_json::from_slice::<IndexedMembers>(&frame.bytes()[at])
        .map_err(|_| bad())?
        .0;
    if members.iter().any(|(_, v)| !v.get().starts_with('{')) {
        return Err(bad());
    }
    Ok(members)
}

/// A finished task's outcome, from the child's `tasks/result` answer: its
/// result makes it `completed` (a tool result with `isError` too), its
/// JSON-RPC error `failed`, as 2026-07-28 defines them. Sets `status` (and
/// `statusMessage` from the error's message when the child gave none) in
/// `out`, and gives the member to add to it, raw, as the child wrote it:
/// a tool's result is never built into a tree, so what no tree holds in
/// it (`1e400`, nesting past serde_json's limit) cannot turn a task that
/// completed into one that failed, and a long result is not copied twice.
fn settle<'a>(out: &mut Map<String, Value>, answer: &'a [u8]) -> (&'static str, &'a [u8]) {
    if let Some(at) = jsonrpc::locate_checked(answer, &["result"]) {
        out.insert("status".into(), json!("completed"));
        return ("result", &answer[at]);
    }
    out.insert("status".into(), json!("failed"));
    let error = jsonrpc::locate_checked(answer, &["error"])
        .map(|at| &answer[at])
        .filter(|raw| raw.starts_with(b"{"));
    let Some(error) = error else {
        // -32603: `jsonrpc::code::INTERNAL_ERROR`.
        return (
            "error",
            br#"{"code":-32603,"message":"the MCP server gave no result for this task"}"#,
        );
    };
    if !out.contains_key("statusMessage")
        && let Some(at) = jsonrpc::locate_checked(error, &["message"])
        && let Ok(m) = serde_json::from_slice::<String>(&error[at])
    {
        out.insert("statusMessage".into(), json!(m));
    }
    ("error", error)
}

/// The JSON object `out` with member `name` added last, its value `raw`
/// (JSON, not parsed again).
fn with_member(out: &Map<String, Value>, name: &str, raw: &[u8]) -> Vec<u8> {
    // Invariant: a Map of Values serializes.
    let mut object = serde_json::to_vec(out).expect("a Map serializes");
    object.pop(); // its closing brace
    if !out.is_empty() {
        object.push(b',');
    }
    object.push(b'"');
    object.extend_from_slice(name.as_bytes());
    object.extend_from_slice(b"\":");
    object.extend_from_slice(raw);
    object.push(b'}');
    object
}

/// `taskId` of a request's params, a string.
fn task_id(params: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(rename = "taskId")]
        task_id: String,
    }
    serde_json::from_slice::<P>(params).ok().map(|p| p.task_id)
}

/// Sends `frame` to the child on `port` and waits for its answer, within
/// `--request-timeout` (60 s when none is set): a task request the child
/// leaves unanswered fails rather than hangs.
async fn ask(
    app: &App,
    upstream: &Arc<Upstream>,
    port: &Arc<Port>,
    frame: Frame,
) -> Result<Bytes, ProxyError> {
    let budget = app
        .config
        .request_timeout
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let (tx, rx) = oneshot::channel();
    upstream.request(port, frame, Reply::Once(tx)).await?;
    tokio::select! {
        r = tokio::time::timeout(budget, rx) => match r {
            Ok(Ok(m)) => Ok(m.into_bytes()),
            Ok(Err(_)) => Err(crate::upstream::UpstreamError::ChildExited("the MCP server did not answer".into()).into()),
            Err(_) => Err(crate::upstream::UpstreamError::TimedOut(budget).into()),
        },
        _ = app.answers_cancel.cancelled() => Err(ProxyError::ShuttingDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(params: &str) -> Frame {
        Frame::parse(
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#
            )),
            false,
        )
        .unwrap()
    }

    const DECLARES: &str = r#""_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}"#;

    #[test]
    fn a_call_is_a_task_only_when_tool_child_and_client_all_allow_it() {
        let with = call(&format!(r#"{{"name":"t",{DECLARES}}}"#));
        let without = call(r#"{"name":"t","_meta":{}}"#);
        use TaskSupport::*;
        assert!(call_as_task(&with, Some(Required), true).unwrap());
        assert!(call_as_task(&with, Some(Optional), true).unwrap());
        assert!(!call_as_task(&with, Some(Forbidden), true).unwrap());
        assert!(!call_as_task(&with, None, true).unwrap());
        assert!(!call_as_task(&with, Some(Required), false).unwrap());
        assert!(!call_as_task(&without, Some(Optional), true).unwrap());
        assert!(matches!(
            call_as_task(&without, Some(Required), true),
            Err(ProxyError::MissingClientCapability { .. })
        ));
        // The child's capabilities are read only where they can matter.
        assert!(may_go_as_task(&with, Some(Optional)));
        assert!(!may_go_as_task(&without, Some(Optional)));
        assert!(may_go_as_task(&without, Some(Required)));
        assert!(!may_go_as_task(&with, Some(Forbidden)) && !may_go_as_task(&with, None));
    }

    #[test]
    fn the_extension_is_found_however_its_name_is_written() {
        let escaped = call(
            r#"{"name":"t","_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol\/tasks":{}}}}}"#,
        );
        assert!(client_declares(&escaped));
        let not_an_object = call(
            r#"{"name":"t","_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":true}}}}"#,
        );
        assert!(!client_declares(&not_an_object));
        let elsewhere = call(
            r#"{"name":"t","_meta":{"io.modelcontextprotocol/clientCapabilities":{"io.modelcontextprotocol/tasks":{}}}}"#,
        );
        assert!(!client_declares(&elsewhere));
    }

    #[test]
    fn the_clients_task_member_goes_and_the_proxys_comes() {
        let sent = call(r#"{"name":"t","task":{"ttl":5},"arguments":{"x":1e400}}"#);
        let plain = with_task(sent.clone(), false).unwrap();
        assert_eq!(
            plain.params().unwrap(),
            br#"{"name":"t","arguments":{"x":1e400}}"#
        );
        let task = with_task(sent, true).unwrap();
        assert_eq!(
            task.params().unwrap(),
            br#"{"name":"t","task":{},"arguments":{"x":1e400}}"#
        );
        // Added at the front, nothing else read: nesting no tree holds passes.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let nested = call(&format!(r#"{{"name":"t","arguments":{{"x":{deep}}}}}"#));
        let task = with_task(nested, true).unwrap();
        assert_eq!(
            task.params().unwrap(),
            format!(r#"{{"task":{{}},"name":"t","arguments":{{"x":{deep}}}}}"#).as_bytes()
        );
        let empty = with_task(call("{ }"), true).unwrap();
        assert_eq!(empty.params().unwrap(), br#"{"task":{} }"#);
        let untouched = call(r#"{"name":"t"}"#);
        assert_eq!(
            with_task(untouched.clone(), false).unwrap().bytes(),
            untouched.bytes()
        );
    }

    #[test]
    fn a_listings_tools_lose_execution_and_nothing_else() {
        let answer = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","tools":[{"name":"a","execution":{"taskSupport":"required"},"inputSchema":{"type":"object","x":1e400}},{"name":"b","description":"no execution here"},{"execution":{},"name":"c"}],"nextCursor":"n"}}"#,
        );
        let out = without_execution(b"1", &answer).unwrap();
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","tools":[{"name":"a","inputSchema":{"type":"object","x":1e400}},{"name":"b","description":"no execution here"},{"name":"c"}],"nextCursor":"n"}}"#
        );
        let plain = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"execution"}]}}"#,
        );
        assert_eq!(without_execution(b"1", &plain), None);
        let error = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"execution"}}"#,
        );
        assert_eq!(without_execution(b"1", &error), None);
    }

    #[test]
    fn a_created_task_is_a_task_result() {
        let answer = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","task":{"taskId":"a","status":"working","createdAt":"c","lastUpdatedAt":"u","ttl":60000,"pollInterval":50,"odd":1},"_meta":{"k":1}}}"#,
        );
        let out: Value = serde_json::from_slice(&create_result(b"7", &answer).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"jsonrpc":"2.0","id":7,"result":{"resultType":"task","taskId":"a","status":"working","createdAt":"c","lastUpdatedAt":"u","ttlMs":60000,"pollIntervalMs":50,"_meta":{"k":1}}})
        );
        let plain = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[]}}"#,
        );
        assert_eq!(create_result(b"1", &plain), None);
    }

    #[test]
    fn a_finished_tasks_outcome_is_its_result_or_its_error() {
        let task = |answer: &[u8]| {
            let mut out = Map::new();
            out.insert("resultType".into(), json!("complete"));
            let (name, raw) = settle(&mut out, answer);
            String::from_utf8(with_member(&out, name, raw)).unwrap()
        };
        let done = task(br#"{"id":1,"result":{"content":[],"isError":true}}"#);
        let v: Value = serde_json::from_str(&done).unwrap();
        assert_eq!(v["status"], "completed", "{done}");
        assert_eq!(v["result"]["isError"], true, "{done}");
        let broke = task(br#"{"id":1,"error":{"code":-32603,"message":"broke"}}"#);
        let v: Value = serde_json::from_str(&broke).unwrap();
        assert_eq!(v["status"], "failed", "{broke}");
        assert_eq!(v["error"]["message"], "broke", "{broke}");
        assert_eq!(v["statusMessage"], "broke", "{broke}");
        // Regression (review): the answer was built into a tree, and one
        // no tree holds made a task that completed a failed one, with
        // "no result". Its result now goes as the child wrote it.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for result in [
            r#"{"content":[],"structuredContent":{"n":1e400}}"#.to_string(),
            format!(r#"{{"content":[],"structuredContent":{deep}}}"#),
        ] {
            let answer = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
            let out = task(answer.as_bytes());
            assert!(
                out.starts_with(r#"{"resultType":"complete","status":"completed","result":"#),
                "{out}"
            );
            assert!(out.ends_with(&format!("{result}}}")), "{out}");
        }
        let none = task(br#"{"jsonrpc":"2.0","id":1}"#);
        assert!(none.contains(r#""status":"failed""#), "{none}");
        assert!(none.contains("gave no result"), "{none}");
        let v: Value = serde_json::from_str(&none).unwrap();
        assert_eq!(v["error"]["code"], crate::jsonrpc::code::INTERNAL_ERROR);
    }
}
