//! Stateless Streamable HTTP, revision 2026-07-28 (spec
//! `2026-07-28/basic/transports/streamable-http`, `basic/versioning`,
//! `basic/patterns/mrtr`; transport.md §2.13).
//!
//! Every POST stands alone: no `initialize`, no session, no GET stream.
//! The proxy validates the required headers against the body (`Mcp-Method`,
//! `Mcp-Name`, `MCP-Protocol-Version` versus
//! `_meta["io.modelcontextprotocol/protocolVersion"]`), then serves the request
//! from one shared child through the multiplexer, so many modern clients and
//! the session-era clients share it safely (ids are rewritten).
//!
//! The child speaks a 2025 revision (nearly every stdio server does), so the
//! proxy translates: it initializes the child once, answers `server/discover`
//! from the InitializeResult, serves `subscriptions/listen` from the child's
//! notifications, and turns the child's server-to-client requests into
//! `input_required` results and the client's retries back into answers
//! (`upstream::mrtr`). Closing a response stream cancels
//! the request at the child (`notifications/cancelled`), which is this
//! revision's cancellation signal.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::modern_answer::{CancelUnlessAnswered, error_status};
use super::modern_tasks;
use super::response::{accepted, json_answer, json_ok, sse_response};
use super::tool_headers::{ToolHeaders, decode_header};
use super::{Answer, App, negotiate};
use crate::error::{ProxyError, Refusal};
use crate::jsonrpc::{self, Frame, Kind, code};
use crate::session::InFlightSlots;
use crate::sse::{Body, Outlet, stream_body};
use crate::tail;
use crate::upstream::{
    DEFAULT_HANDSHAKE_TIMEOUT, LOG_LEVEL_KEY, Port, PortKind, Reply, Stamp, Upstream,
    UpstreamError, UpstreamProtocol, log_rank,
};
use crate::version::{self, LATEST_SESSION_VERSION, MODERN_VERSIONS};

/// `_meta` key of the protocol version in every 2026-07-28 request.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// `_meta` key of the client's capabilities, required in every request.
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Whether a message without a session id is a 2026-07-28 one.
pub fn body_is_modern(frame: &Frame) -> bool {
    frame.method() == Some("server/discover") || meta_version(frame).is_some()
}

/// The protocol version a message's `_meta` names, if any.
pub fn meta_version(frame: &Frame) -> Option<String> {
    frame.meta(META_VERSION)?.as_str().map(String::from)
}

/// A GET or DELETE with a 2026-07-28 version: this revision has no GET
/// stream and no sessions to delete.
pub fn not_post(app: &App) -> Result<Response<Body>, ProxyError> {
    refuse_if_legacy_only(app)?;
    Err(ProxyError::MethodNotAllowed("POST, OPTIONS"))
}

/// `--upstream-protocol legacy` makes the proxy a session-era server: a
/// modern request gets a 400 that deliberately does not use the 2026-07-28
/// error codes, which is what tells a dual-era client to fall back to
/// `initialize` (transport.md §2.13).
fn refuse_if_legacy_only(app: &App) -> Result<(), ProxyError> {
    if app.config.upstream_protocol == UpstreamProtocol::Legacy {
        return Err(ProxyError::InvalidRequest(
            "protocol 2026-07-28 is not served here (--upstream-protocol legacy); send initialize"
                .into(),
        ));
    }
    Ok(())
}

/// Checks the 2026-07-28 header rules against the body.
fn validate(
    headers: &HeaderMap,
    frame: &Frame,
    tool_headers: &ToolHeaders,
) -> Result<(), ProxyError> {
    // A second copy of a header is refused, never read past: an
    // intermediary that routes on the last copy and a check of the first
    // would disagree, which is what the check is there to prevent.
    for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ProxyError::HeaderMismatch(format!(
                "{name} is sent more than once"
            )));
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let body_version = meta_version(frame);
    let version = match (header("mcp-protocol-version"), body_version.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ProxyError::HeaderMismatch(format!(
                "MCP-Protocol-Version {h:?} does not match _meta {META_VERSION} {b:?}"
            )));
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => {
            return Err(ProxyError::HeaderMismatch(format!(
                "MCP-Protocol-Version header is required (body says {b:?})"
            )));
        }
        (None, None) => {
            return Err(ProxyError::HeaderMismatch(
                "MCP-Protocol-Version header is required".into(),
            ));
        }
    };
    if !version::is_modern(&version) {
        return Err(ProxyError::UnsupportedVersion {
            requested: version,
            supported: MODERN_VERSIONS.to_vec(),
        });
    }
    if frame.kind() == Kind::Response {
        return Err(ProxyError::InvalidRequest(
            "clients must not send JSON-RPC responses in protocol 2026-07-28".into(),
        ));
    }
    if frame.kind() == Kind::Request {
        // Every request says what the handshake used to: its version
        // (a string, equal to the header's, checked above when present) and
        // the client's capabilities. Without either it is malformed
        // (`basic/index#_meta`), whatever the header says.
        if body_version.is_none() {
            return Err(ProxyError::InvalidParams(format!(
                "params._meta[{META_VERSION:?}] (a string) is required in protocol 2026-07-28"
            )));
        }
        // The message is JSON already: an object is one that starts so.
        let capabilities = frame.meta_raw(META_CAPABILITIES);
        if capabilities.and_then(<[u8]>::first) != Some(&b'{') {
            return Err(ProxyError::InvalidParams(format!(
                "params._meta[{META_CAPABILITIES:?}] (an object) is required in protocol 2026-07-28"
            )));
        }
        // Optional, but a level that is none is refused
        // (`server/utilities/logging`, "Error Handling").
        if let Some(level) = frame.meta(LOG_LEVEL_KEY)
            && level.as_str().and_then(log_rank).is_none()
        {
            return Err(ProxyError::InvalidParams(format!(
                "params._meta[{LOG_LEVEL_KEY:?}] is {level}, not a log level (debug, info, notice, warning, error, critical, alert, emergency)"
            )));
        }
    }
    let method = frame.method().unwrap_or_default();
    match header("mcp-method") {
        Some(m) if m == method => {}
        Some(m) => {
            return Err(ProxyError::HeaderMismatch(format!(
                "Mcp-Method {m:?} does not match the body's method {method:?}"
            )));
        }
        // The revision requires it of requests; for a notification's POST
        // it defines no header rules, so only a header that is there must
        // match.
        None if frame.kind() == Kind::Notification => {}
        None => {
            return Err(ProxyError::HeaderMismatch(
                "Mcp-Method header is required".into(),
            ));
        }
    }
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // The Tasks extension: `Mcp-Name` is the task's id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(key) = name_key {
        // Only the member itself is read: arguments the proxy's parser
        // cannot build into a tree (`1e400`, nesting past its depth limit)
        // are still a valid body, and must not make the name look absent.
        let body_name = frame
            .locate_in_params(&[key])
            .and_then(|at| serde_json::from_slice::<String>(&frame.bytes()[at]).ok());
        let header_name = match header("mcp-name") {
            Some(h) => Some(decode_header(h).ok_or_else(|| {
                ProxyError::HeaderMismatch(
                    "Mcp-Name has characters a plain header value may not have; send it as =?base64?…?="
                        .into(),
                )
            })?),
            None => None,
        };
        match (header_name, body_name) {
            (Some(h), Some(b)) if h == b => {}
            (None, _) => {
                return Err(ProxyError::HeaderMismatch(format!(
                    "Mcp-Name header is required for {method}"
                )));
            }
            (Some(h), b) => {
                return Err(ProxyError::HeaderMismatch(format!(
                    "Mcp-Name {h:?} does not match params.{key} {}",
                    b.map_or_else(|| "(absent)".to_string(), |b| format!("{b:?}"))
                )));
            }
        }
        if method == "tools/call" {
            tool_headers.check(headers, frame)?;
        }
    }
    Ok(())
}

/// The id a refusal of `frame` answers with: a request's, as written
/// (`None` for a notification, which is never answered).
pub fn refusal_id(frame: &Frame) -> Option<&[u8]> {
    (frame.kind() == Kind::Request)
        .then(|| frame.id())
        .flatten()
}

/// Serves one validated-or-not 2026-07-28 message. A request it refuses
/// is answered by its id, as every error response of this revision is
/// (`basic/index`, "Error Responses").
pub async fn serve(app: Arc<App>, parts: &Parts, frame: Frame) -> Result<Response<Body>, Refusal> {
    refuse_if_legacy_only(&app)?;
    let id: Option<Box<[u8]>> = refusal_id(&frame).map(Into::into);
    Box::pin(serve_message(app, parts, frame))
        .await
        .map_err(|e| e.modern().answering(id.as_deref()))
}

async fn serve_message(
    app: Arc<App>,
    parts: &Parts,
    frame: Frame,
) -> Result<Response<Body>, ProxyError> {
    validate(&parts.headers, &frame, &app.tool_headers)?;
    super::check_request_ids(std::slice::from_ref(&frame))?;
    if frame.kind() == Kind::Notification {
        // Cancellation over HTTP is closing the stream; other notifications have no target.
        debug!(
            method = frame.method().unwrap_or_default(),
            "2026-07-28 notification accepted"
        );
        return Ok(accepted());
    }
    if let Some(method) = frame.method().filter(|m| REMOVED_METHODS.contains(m)) {
        // Refused before any child is started for it.
        return Err(ProxyError::MethodNotFound(format!(
            "{method} is not part of protocol 2026-07-28"
        )));
    }
    let principal = super::principal_of(&parts.extensions);
    // Held until the answer went out or the client went away: moved into
    // the response's guard below, else dropped when this returns.
    let slots = Some(app.admit_without_session(&principal, 1)?);
    let upstream = app.modern_upstream(&principal).await?;
    ensure_initialized(&app, &upstream).await?;
    if frame.method() == Some("tools/call") && !app.tool_headers.knows(&frame) {
        // No listing has shown this tool: learn what its headers must say
        // before it runs (validate() passed it as unknown).
        learn_tool_headers(&app, &upstream).await;
        app.tool_headers.check(&parts.headers, &frame)?;
    }
    let id: Box<[u8]> = frame.id().unwrap_or_default().into();
    if frame.method() == Some("server/discover") {
        let cached = upstream.cached_initialize().await.unwrap_or_default();
        let modern = upstream.era() == UpstreamProtocol::Modern;
        return Ok(json_ok(discover_answer(&id, &cached, modern)));
    }
    // The Tasks extension over a 2025-11-25 child's tasks (a 2026-07-28
    // child serves it itself).
    let mut as_task = false;
    let frame = if upstream.era() == UpstreamProtocol::Modern {
        frame
    } else {
        match frame.method() {
            Some("tasks/get" | "tasks/update" | "tasks/cancel") => {
                return Box::pin(modern_tasks::serve(
                    &app, &upstream, &principal, frame, slots,
                ))
                .await;
            }
            Some("tools/call") => {
                let support = app.tool_headers.task_support(&frame);
                // The child's capabilities are read only for a call that
                // may go as a task.
                if modern_tasks::may_go_as_task(&frame, support) {
                    let child_tasks = child_capabilities(&upstream)
                        .await
                        .is_some_and(|c| modern_tasks::child_runs_tool_tasks(&c));
                    as_task = modern_tasks::call_as_task(&frame, support, child_tasks)?;
                }
                modern_tasks::with_task(frame, as_task)?
            }
            Some("subscriptions/listen") => {
                modern_tasks::check_listen(&frame)?;
                frame
            }
            Some("tools/list")
                if child_capabilities(&upstream)
                    .await
                    .is_some_and(|c| modern_tasks::child_runs_tool_tasks(&c)) =>
            {
                // Its tools' 2025-11-25 `execution` is taken out.
                let translate = modern_tasks::without_execution;
                return Box::pin(translated(
                    &app, &upstream, &principal, frame, slots, translate,
                ))
                .await;
            }
            _ => frame,
        }
    };
    if as_task {
        let translate = modern_tasks::create_result;
        return Box::pin(translated(
            &app, &upstream, &principal, frame, slots, translate,
        ))
        .await;
    }
    let listen = frame.method() == Some("subscriptions/listen");
    let answer = negotiate(&parts.headers)?;
    // Plain JSON when it is acceptable and nothing can arrive before the
    // answer (no progress, no log messages asked for): cheaper, and an
    // unknown method can then get its 404.
    let wants_stream =
        listen || has_progress_token(&frame) || frame.meta_raw(LOG_LEVEL_KEY).is_some();
    let answer = if !wants_stream && super::accepts(&parts.headers).1 {
        Answer::Json
    } else {
        answer
    };
    let port = app.new_port(crate::upstream::STATELESS_LABEL.into(), PortKind::Modern);
    port.set_principal(super::owner_key(&principal).as_deref());
    upstream.attach(port.clone());
    if listen {
        return Ok(Box::pin(subscribe(&app, &upstream, port, answer, frame, slots)).await);
    }
    if answer == Answer::Json {
        // Progress, if any was asked for, cannot travel in a JSON body and is dropped.
        let (tx, rx) = oneshot::channel();
        let mut guard = CancelUnlessAnswered::new(&app, &upstream, &port, &id, None, slots);
        let reply = app.reply_for(&principal, &frame, Reply::Json(tx));
        let _ = upstream.request(&port, frame, reply).await;
        let answer = tokio::select! {
            // The proxy's own failures: -32603 in this revision (`UpstreamError::code`).
            r = rx => r.unwrap_or_else(|_| jsonrpc::error_response(Some(&id), code::INTERNAL_ERROR, "the MCP server did not answer", None).into()),
            _ = app.answers_cancel.cancelled() => jsonrpc::error_response(Some(&id), code::INTERNAL_ERROR, "the proxy is shutting down", None).into(),
        };
        guard.answered = true;
        // An error is small; a large answer is a result and is not read again.
        let status = match &answer {
            tail::Answer::Whole(m) if m.len() <= ERROR_PEEK_BYTES => error_status(&m.contiguous()),
            _ => None,
        };
        let mut r = json_answer(answer);
        if let Some(status) = status {
            *r.status_mut() = status;
        }
        return Ok(r);
    }
    let limits = app.stream_limits();
    let (outlet, mut rx) = Outlet::new(0, false, Some(1), limits.max_queue, 0);
    let outlet = Arc::new(
        outlet
            .with_queue_bytes(limits.max_queue_bytes)
            .with_metrics(limits.metrics.clone()),
    );
    // The guard first: a client gone during the write still detaches the port.
    let guard = CancelUnlessAnswered::new(&app, &upstream, &port, &id, Some(outlet.clone()), slots);
    let reply = app.reply_for(&principal, &frame, Reply::Stream(outlet.clone()));
    let _ = upstream.request(&port, frame, reply).await;
    let cancel = app.answers_cancel.child_token();
    rx.hold_first(app.config.keep_alive, &cancel).await;
    // An unknown method, or a capability the client lacks, is answered
    // at once, before anything else: it gets the revision's status, in
    // JSON, on the SSE path too.
    if let Some(message) = rx.held_message()
        && message.len() <= ERROR_PEEK_BYTES
        && let Some(status) = error_status(message)
    {
        let mut r = json_ok(Bytes::copy_from_slice(message));
        *r.status_mut() = status;
        return Ok(r);
    }
    Ok(sse_response(stream_body(
        rx,
        app.config.keep_alive,
        cancel,
        guard,
    )))
}

/// The answer to `server/discover` (request `id`) from the child's cached
/// handshake result: a 2026-07-28 (`modern`) child's own DiscoverResult,
/// as it gave it; else one built from its InitializeResult.
/// Read for nothing: a member serde_json cannot build into a tree
/// (`1e400`) is the client's to read, and must not cost the rest.
fn discover_answer(id: &[u8], cached: &[u8], modern: bool) -> Bytes {
    match (modern, cached.is_empty()) {
        // A frame's result: JSON.
        (true, false) => jsonrpc::envelope(id, "result", cached),
        (true, true) => jsonrpc::result_response(id, &Value::Null),
        (false, _) => jsonrpc::result_response(id, &discover_result(cached)),
    }
}

/// The `nextCursor` of a list answer, if it names another page (read
/// where it lies, as [`capabilities_of`] reads).
fn next_cursor(answer: &[u8]) -> Option<Value> {
    jsonrpc::readable_member(answer, &["result", "nextCursor"]).filter(|c| !c.is_null())
}

/// The `capabilities` of a 2025-era child's InitializeResult.
async fn child_capabilities(upstream: &Arc<Upstream>) -> Option<Value> {
    capabilities_of(&upstream.cached_initialize().await?)
}

/// The `capabilities` of an InitializeResult, each read on its own
/// ([`jsonrpc::readable_members`]).
fn capabilities_of(init: &[u8]) -> Option<Value> {
    jsonrpc::readable_members(init, &["capabilities"]).map(Value::Object)
}

/// A request whose answer the Tasks extension's translation rewrites,
/// answered whole, in JSON: a `tools/call` sent to a 2025-11-25 child as
/// a task (its `CreateTaskResult` becomes the 2026-07-28 `resultType:
/// "task"` result; nothing of a task travels on the call's own response),
/// or a `tools/list` of a child that runs tasks (its tools lose 2025-11-25's
/// `execution`). An answer `translate` leaves alone (`None`: the child's
/// error, an `input_required` asking for input before the task exists)
/// passes as it is.
async fn translated(
    app: &Arc<App>,
    upstream: &Arc<Upstream>,
    principal: &crate::auth::Principal,
    frame: Frame,
    slots: Option<InFlightSlots>,
    translate: fn(&[u8], &Bytes) -> Option<Bytes>,
) -> Result<Response<Body>, ProxyError> {
    let id: Box<[u8]> = frame.id().unwrap_or_default().into();
    let port = app.new_port(crate::upstream::STATELESS_LABEL.into(), PortKind::Modern);
    port.set_principal(super::owner_key(principal).as_deref());
    upstream.attach(port.clone());
    let mut guard = CancelUnlessAnswered::new(app, upstream, &port, &id, None, slots);
    let (tx, rx) = oneshot::channel();
    let reply = app.reply_for(principal, &frame, Reply::Once(tx));
    let _ = upstream.request(&port, frame, reply).await;
    let answer: Bytes = tokio::select! {
        r = rx => r.map_or_else(|_| jsonrpc::error_response(Some(&id), code::INTERNAL_ERROR, "the MCP server did not answer", None), |m| m.into_bytes()),
        _ = app.answers_cancel.cancelled() => jsonrpc::error_response(Some(&id), code::INTERNAL_ERROR, "the proxy is shutting down", None),
    };
    guard.answered = true;
    let answer = translate(&id, &answer).unwrap_or(answer);
    let status = (answer.len() <= ERROR_PEEK_BYTES)
        .then(|| error_status(&answer))
        .flatten();
    let mut r = json_ok(answer);
    if let Some(status) = status {
        *r.status_mut() = status;
    }
    Ok(r)
}

/// Requests of the session era that 2026-07-28 removed (changelog: the
/// handshake, `ping`, `logging/setLevel`, and `resources/subscribe` and
/// `resources/unsubscribe`, replaced by `subscriptions/listen`; and
/// 2025-11-25's `tasks/list` and blocking `tasks/result`, which the Tasks
/// extension does not have): a 2026-07-28 client gets 404 with -32601 for
/// them, as for any method the server does not have
/// (`basic/transports/streamable-http`), never the session-era child's
/// answer.
const REMOVED_METHODS: [&str; 7] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "tasks/list",
    "tasks/result",
];

fn has_progress_token(frame: &Frame) -> bool {
    frame
        .locate_in_params(&["_meta", "progressToken"])
        .is_some()
}

/// Answers up to this size are checked for an unknown-method error (404).
const ERROR_PEEK_BYTES: usize = 64 * 1024;

/// `subscriptions/listen`: a stream that carries the child's list-changed
/// (and, for subscribed URIs, resource-updated) notifications until the
/// client closes it.
async fn subscribe(
    app: &App,
    upstream: &Arc<Upstream>,
    port: Arc<Port>,
    answer: Answer,
    frame: Frame,
    slots: Option<InFlightSlots>,
) -> Response<Body> {
    let limits = app.stream_limits();
    let (outlet, rx) = Outlet::new(0, false, Some(1), limits.max_queue, 0);
    // A client too slow for its notifications is cut off, never sent a
    // thinned stream: it sees the stream end and listens anew, where a
    // dropped list change would never make it look again.
    let outlet = Arc::new(
        outlet
            .with_queue_bytes(limits.max_queue_bytes)
            .with_metrics(limits.metrics.clone())
            .cut_when_slow(),
    );
    if answer == Answer::Json {
        debug!("subscriptions/listen with Accept: application/json only; streaming anyway");
    }
    let id: Box<[u8]> = frame.id().unwrap_or_default().into();
    // The guard first: a client gone while the subscription is set up
    // still detaches the port.
    let guard = CancelUnlessAnswered::new(app, upstream, &port, &id, Some(outlet.clone()), slots);
    if upstream.era() == UpstreamProtocol::Modern {
        // The child serves the subscription itself (acknowledgment, filter,
        // ids); its notifications are routed to this request's stream by
        // their subscription id, and closing the stream cancels it.
        let _ = upstream
            .request(&port, frame, Reply::Stream(outlet.clone()))
            .await;
    } else {
        listen_for_legacy_child(upstream, &port, &outlet, &frame, &id).await;
    }
    // The proxy's drain ends the subscription: it answers the listen
    // request first, so the client knows the end was graceful and not a
    // dropped connection (`basic/patterns/subscriptions`, "Graceful
    // Closure"). The answer finishes the stream (the one response it
    // owes); `end` is the backstop, and the grace's end still ends it.
    let end = app.answers_cancel.child_token();
    let gone = CancellationToken::new();
    let (draining, closing, watch_end, watch_gone, watch_outlet) = (
        app.streams_cancel.clone(),
        closing_response(&id, upstream.stamp().as_deref()),
        end.clone(),
        gone.clone(),
        outlet.clone(),
    );
    app.tasks.spawn(async move {
        tokio::select! {
            _ = draining.cancelled() => {
                watch_outlet.send_response(&closing);
                watch_end.cancel();
            }
            _ = watch_gone.cancelled() => {}
        }
    });
    sse_response(stream_body(
        rx,
        app.config.keep_alive,
        end,
        (guard, gone.drop_guard()),
    ))
}

/// The response that ends a `subscriptions/listen` the server closes: a
/// complete result with the subscription id (the listen request's id) in
/// `_meta`, and the server's identity when the proxy speaks for a
/// 2025-era child that named itself (a 2026-07-28 child's is its own).
fn closing_response(id: &[u8], stamp: Option<&Stamp>) -> Bytes {
    let mut result = br#"{"resultType":"complete","_meta":{"#.to_vec();
    if let Some(stamp) = stamp {
        result.extend_from_slice(stamp.member());
        result.push(b',');
    }
    // Invariant: a string serializes.
    serde_json::to_writer(&mut result, crate::upstream::SUBSCRIPTION_ID_KEY)
        .expect("a string serializes");
    result.push(b':');
    result.extend_from_slice(id);
    result.extend_from_slice(b"}}");
    jsonrpc::envelope(id, "result", &result)
}

/// Serves `subscriptions/listen` from a 2025-era child's notifications:
/// accepts the part of the filter the child can deliver, acknowledges it
/// first (`notifications/subscriptions/acknowledged`), subscribes the child
/// to the requested resources (reference-counted with every other session),
/// then lets through only what was accepted, tagged with the listen id.
async fn listen_for_legacy_child(
    upstream: &Arc<Upstream>,
    port: &Arc<Port>,
    outlet: &Arc<Outlet>,
    frame: &Frame,
    id: &[u8],
) {
    let asked = frame
        .params_value()
        .and_then(|p| p.get("notifications").cloned())
        .unwrap_or_default();
    let caps: Value = child_capabilities(upstream).await.unwrap_or_default();
    let flag = |key: &str, cap: &str| {
        asked.get(key).and_then(Value::as_bool) == Some(true)
            && caps.pointer(cap).and_then(Value::as_bool) == Some(true)
    };
    let can_subscribe = caps
        .pointer("/resources/subscribe")
        .and_then(Value::as_bool)
        == Some(true);
    let mut uris: Vec<String> = Vec::new();
    if can_subscribe {
        let asked_uris = asked
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for uri in asked_uris.iter().filter_map(Value::as_str) {
            if uris.len() == MAX_LISTEN_URIS {
                note_listen_cap();
                break;
            }
            if seen.insert(uri) {
                uris.push(uri.to_string());
            }
        }
    }
    let filter = crate::upstream::ListenFilter {
        id: id.into(),
        tools: flag("toolsListChanged", "/tools/listChanged"),
        prompts: flag("promptsListChanged", "/prompts/listChanged"),
        resources: flag("resourcesListChanged", "/resources/listChanged"),
        uris: uris.clone(),
    };
    let mut accepted = serde_json::Map::new();
    for (key, on) in [
        ("toolsListChanged", filter.tools),
        ("promptsListChanged", filter.prompts),
        ("resourcesListChanged", filter.resources),
    ] {
        if on {
            accepted.insert(key.into(), Value::Bool(true));
        }
    }
    if !uris.is_empty() {
        accepted.insert("resourceSubscriptions".into(), json!(uris));
    }
    let ack = json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":accepted,"_meta":{crate::upstream::SUBSCRIPTION_ID_KEY: null}}});
    let ack = Frame::from_value(&ack);
    // The listen id goes in as the client wrote it, never re-parsed.
    let ack = match ack.locate_in_params(&["_meta", crate::upstream::SUBSCRIPTION_ID_KEY]) {
        Some(at) => ack.with_replaced(at, id),
        None => ack,
    };
    outlet.send(ack.bytes());
    // Sent together, waited for together: one deadline for them all.
    let mut answers = Vec::with_capacity(uris.len());
    for (n, uri) in uris.iter().enumerate() {
        let sub = Frame::from_value(
            &json!({"jsonrpc":"2.0","id":format!("listen-{n}"),"method":"resources/subscribe","params":{"uri":uri}}),
        );
        let (tx, rx) = oneshot::channel();
        if upstream.request(port, sub, Reply::Once(tx)).await.is_ok() {
            answers.push(rx);
        }
    }
    let _ = tokio::time::timeout(
        LISTEN_SUBSCRIBE_WAIT,
        futures_util::future::join_all(answers),
    )
    .await;
    port.set_listen(filter);
    port.set_notify(Some(outlet.clone()));
}

/// Resources one `subscriptions/listen` subscribes a 2025-era child to;
/// the rest of a longer list is left out of the acknowledgment (the
/// client learns what was accepted), so one request cannot make the
/// child track an unbounded number of subscriptions.
const MAX_LISTEN_URIS: usize = 256;

/// How long a listen waits for the child to confirm its subscriptions
/// before its stream carries notifications.
const LISTEN_SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// Says once in the log that a listen filter was cut to [`MAX_LISTEN_URIS`].
fn note_listen_cap() {
    static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(
            limit = MAX_LISTEN_URIS,
            "a subscriptions/listen asked for more resources than one listen may subscribe to; the rest were left out of its acknowledgment (said once)"
        );
    }
}

/// Builds the `server/discover` result from a 2025 InitializeResult. Its
/// capabilities are the child's, less 2025-11-25's `tasks`: 2026-07-28
/// moved tasks to the `io.modelcontextprotocol/tasks` extension, which
/// the proxy declares in their stead when the child runs tool calls as
/// tasks, the one kind of task the extension has (see
/// [`modern_tasks`]), and only then.
///
/// Each member is read on its own, and each capability: the child's
/// messages are not made portable, and one member serde_json cannot read
/// (`1e400`, a lone surrogate, nesting past its limit) would otherwise
/// fail the whole result and cost the client every capability. What
/// cannot be read is left out.
fn discover_result(init: &[u8]) -> Value {
    let mut capabilities =
        Value::Object(jsonrpc::readable_members(init, &["capabilities"]).unwrap_or_default());
    let tool_tasks = modern_tasks::child_runs_tool_tasks(&capabilities);
    if let Some(caps) = capabilities.as_object_mut() {
        caps.remove("tasks");
        if tool_tasks {
            let extensions = caps.entry("extensions").or_insert_with(|| json!({}));
            if let Some(extensions) = extensions.as_object_mut() {
                extensions.insert(modern_tasks::EXTENSION.into(), json!({}));
            }
        }
    }
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": MODERN_VERSIONS,
        "capabilities": capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(instructions) = jsonrpc::readable_member(init, &["instructions"]) {
        result["instructions"] = instructions;
    }
    if let Some(info) = jsonrpc::readable_member(init, &["serverInfo"]) {
        result["_meta"] = json!({ crate::upstream::SERVER_INFO_KEY: info });
    }
    result
}

/// The child of the modern front-end speaks a 2025 revision: the proxy is
/// its one client and initializes it once, within `--request-timeout`.
/// It declares what it can ask a 2026-07-28 client for the child (as
/// `input_required`, see [`crate::upstream::mrtr`]): a 2025 server sends
/// no request its client did not declare. Whether the client of a given
/// call declared it is checked per request, against that request's
/// `clientCapabilities`; the child is refused what it did not.
async fn ensure_initialized(app: &App, upstream: &Arc<Upstream>) -> Result<(), ProxyError> {
    if upstream.cached_initialize().await.is_some() {
        return Ok(());
    }
    let params = crate::upstream::proxy_initialize_params(LATEST_SESSION_VERSION, false);
    let port = app.new_port("proxy".into(), PortKind::Modern);
    let (tx, rx) = oneshot::channel();
    let frame = Frame::from_value(
        &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params }),
    );
    Box::pin(upstream.request(&port, frame, Reply::Once(tx))).await?;
    let budget = app
        .config
        .request_timeout
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let answer: Bytes = match tokio::time::timeout(budget, rx).await {
        Ok(Ok(m)) => m.into_bytes(),
        _ => return Err(UpstreamError::HandshakeTimeout(budget).into()),
    };
    if version::negotiated_version(&answer).is_none() {
        return Err(UpstreamError::Internal {
            method: "initialize",
            reason: format!("refused: {}", String::from_utf8_lossy(&answer)),
        }
        .into());
    }
    Ok(())
}

/// Pages of its own `tools/list` the proxy reads at most.
const MAX_SELF_LIST_PAGES: usize = 16;

/// Lists the child's tools for the proxy itself (every page, up to
/// [`MAX_SELF_LIST_PAGES`]), learning their `x-mcp-header` annotations as a
/// client's listing would teach them; at most once per
/// [`super::tool_headers::SELF_LIST_EVERY`], within `--request-timeout`
/// (else 60 s). A listing that fails leaves the table as it was: the call
/// goes on with what is known.
async fn learn_tool_headers(app: &App, upstream: &Arc<Upstream>) {
    let Some(_turn) = app.tool_headers.self_list_turn().await else {
        return;
    };
    let port = app.new_port("proxy".into(), PortKind::Modern);
    upstream.attach(port.clone());
    let listing = async {
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_SELF_LIST_PAGES {
            let mut params = json!({ "_meta": {
                META_VERSION: MODERN_VERSIONS[0],
                META_CAPABILITIES: {},
            }});
            if let Some(c) = cursor.take() {
                params["cursor"] = c;
            }
            let frame = Frame::from_value(
                &json!({ "jsonrpc": "2.0", "id": page, "method": "tools/list", "params": params }),
            );
            let (tx, rx) = oneshot::channel();
            upstream
                .request(&port, frame, Reply::Once(tx))
                .await
                .map_err(|e| e.to_string())?;
            let answer = rx.await.map_err(|_| "no answer".to_string())?;
            app.tool_headers.learn(&answer);
            match next_cursor(&answer.into_bytes()) {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
        Err(format!(
            "the list has more than {MAX_SELF_LIST_PAGES} pages; tools past them go unchecked"
        ))
    };
    let budget = app
        .config
        .request_timeout
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let listed = tokio::time::timeout(budget, listing).await;
    // A page still unanswered (the deadline passed) is cancelled at the child.
    upstream
        .detach_cancelling(&port, "the proxy stopped waiting for the tool list")
        .await;
    match listed {
        Ok(Ok(())) => debug!("listed the child's tools for their x-mcp-header arguments"),
        Ok(Err(e)) => {
            warn!(error = %e, "listing the child's tools for their x-mcp-header arguments failed")
        }
        Err(_) => warn!(
            timeout_ms = budget.as_millis() as u64,
            "the child did not list its tools in time; calls of unlisted tools go on unchecked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn frame(s: &'static str) -> Frame {
        Frame::parse(Bytes::from_static(s.as_bytes()), true).unwrap()
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

    #[test]
    fn valid_headers_pass() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ]);
        validate(&h, &frame(CALL), &ToolHeaders::default()).unwrap();
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ]);
        validate(&h, &frame(CALL), &ToolHeaders::default()).unwrap();
    }

    #[test]
    fn mismatches_are_header_mismatch_errors() {
        let cases = [
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-name", "echo"),
            ]),
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "other"),
            ]),
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]),
        ];
        for h in cases {
            assert!(matches!(
                validate(&h, &frame(CALL), &ToolHeaders::default()),
                Err(ProxyError::HeaderMismatch(_))
            ));
        }
    }

    /// Regression: the name was read from `params` built into a tree, so
    /// a call whose arguments hold a number no double holds (`1e400`) or
    /// nesting past serde_json's depth limit (both valid JSON that Python
    /// and JavaScript children read) got 400 -32020 "Mcp-Name does not
    /// match params.name (absent)".
    #[test]
    fn arguments_no_tree_can_hold_do_not_hide_the_name() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ]);
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for arg in ["1e400", "-1e400", deep.as_str()] {
            let body = CALL.replacen(
                r#""name":"echo""#,
                &format!(r#""name":"echo","arguments":{{"x":{arg}}}"#),
                1,
            );
            // Refused from a client since `jsonrpc::portable`; the check
            // itself stays whole for them (lenient parse).
            let f = Frame::parse(Bytes::from(body), false).unwrap();
            validate(&h, &f, &ToolHeaders::default()).unwrap();
        }
        // The name is still compared.
        let other = CALL.replacen(
            r#""name":"echo""#,
            r#""name":"other","arguments":{"x":1e400}"#,
            1,
        );
        let f = Frame::parse(Bytes::from(other), false).unwrap();
        assert!(matches!(
            validate(&h, &f, &ToolHeaders::default()),
            Err(ProxyError::HeaderMismatch(_))
        ));
    }

    #[test]
    fn unknown_version_is_unsupported() {
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let f = frame(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(matches!(
            validate(&h, &f, &ToolHeaders::default()),
            Err(ProxyError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn a_request_without_client_capabilities_is_invalid_params() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        let f = frame(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert!(matches!(
            validate(&h, &f, &ToolHeaders::default()),
            Err(ProxyError::InvalidParams(_))
        ));
    }

    #[test]
    fn era_detection() {
        assert!(body_is_modern(&frame(CALL)));
        assert!(!body_is_modern(&frame(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        )));
    }

    #[test]
    fn discover_is_built_from_initialize() {
        let d = discover_result(br#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"x","version":"1"},"instructions":"hi"}"#);
        assert_eq!(d["supportedVersions"][0], "2026-07-28");
        assert_eq!(d["capabilities"]["tools"], json!({}));
        assert_eq!(
            d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "x"
        );
        assert_eq!(d["instructions"], "hi");
    }

    /// Regression (review): the child's answers that go into
    /// `server/discover`, the Tasks extension's and `subscriptions/listen`'s
    /// capability checks and the proxy's own tools listing were each built
    /// whole into a tree, and one member no tree can hold elsewhere in them
    /// gave a 2026-07-28 child's discover answer `"result":null`, no
    /// capabilities, and a listing that stopped after its first page (the
    /// tools of the others passed their Mcp-Param headers unchecked).
    #[test]
    fn the_childs_answers_are_read_where_their_members_lie() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            let discover = format!(
                r#"{{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{{"tools":{{}}}},"x":{odd}}}"#
            );
            let answer = discover_answer(b"1", discover.as_bytes(), true);
            assert_eq!(
                String::from_utf8_lossy(&answer),
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{discover}}}"#),
                "{odd}"
            );
            let init = format!(
                r#"{{"protocolVersion":"2025-11-25","capabilities":{{"tasks":{{"list":{{}}}},"experimental":{{"x":{odd}}}}}}}"#
            );
            assert_eq!(
                capabilities_of(init.as_bytes()).map(|c| c["tasks"].clone()),
                Some(json!({"list": {}})),
                "{odd}"
            );
            let page = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"t","x":{odd}}}],"nextCursor":"p2"}}}}"#
            );
            assert_eq!(next_cursor(page.as_bytes()), Some(json!("p2")), "{odd}");
        }
        assert_eq!(
            next_cursor(br#"{"result":{"tools":[],"nextCursor":null}}"#),
            None
        );
        assert_eq!(next_cursor(br#"{"result":{"tools":[]}}"#), None);
    }

    /// Regression (review): one member serde_json cannot read anywhere in
    /// the child's InitializeResult (`1e400`, a lone surrogate, nesting
    /// past its limit) failed the parse of the whole result, and the
    /// discover answer lost the child's capabilities (so a 2026-07-28
    /// client saw no tools), instructions and identity. Each is read on
    /// its own now, and an unreadable capability drops only itself.
    #[test]
    fn one_unreadable_member_of_initialize_costs_discover_only_itself() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            let init = format!(
                r#"{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{"listChanged":true}},"experimental":{{"x":{odd}}}}},"serverInfo":{{"name":"x","version":"1"}},"instructions":"hi","extra":{odd}}}"#
            );
            let d = discover_result(init.as_bytes());
            assert_eq!(
                d["capabilities"],
                json!({"tools": {"listChanged": true}}),
                "{odd}"
            );
            assert_eq!(d["instructions"], "hi", "{odd}");
            assert_eq!(
                d["_meta"]["io.modelcontextprotocol/serverInfo"],
                json!({"name": "x", "version": "1"}),
                "{odd}"
            );
        }
    }
}
