//! Streamable HTTP with sessions: revisions 2025-03-26, 2025-06-18 and
//! 2025-11-25 (spec `basic/transports#streamable-http`; transport.md §2).
//!
//! POST carries one message (or, on 2025-03-26 sessions only, a batch).
//! Notifications and responses get 202 with an empty body; requests get an
//! SSE stream (their response plus whatever the child sends meanwhile) or a
//! JSON body, whichever `Accept` allows. GET opens the session's stream for
//! unrelated messages (a second GET replaces the first); `Last-Event-ID`
//! resumes a stream. DELETE ends the session. `initialize` creates a session
//! and, in per-session mode, its child; the session id is sent once, on the
//! successful initialize response.
//!
//! Requests that carry the 2026-07-28 protocol version are handed to
//! [`super::modern`] before any of this applies.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::{Answer, App, negotiate, require_json, sse_response};
use crate::config::Mode;
use crate::error::ProxyError;
use crate::jsonrpc::{self, Frame, Kind, Message, code};
use crate::session::Session;
use crate::sse::{self, Body, Outlet, empty, full, stream_body};
use crate::upstream::{Port, PortKind, Reply, Upstream};

/// Revisions served here, oldest first.
pub const SESSION_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// How long the child gets to answer `initialize` when no --request-timeout is set.
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// Entry point for the MCP endpoint.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if super::modern::header_is_modern(req.headers()) {
        return super::modern::handle(app, req).await;
    }
    match *req.method() {
        Method::POST => post(app, req).await,
        Method::GET => get(app, req).await,
        Method::DELETE => delete(app, req).await,
        _ => Err(ProxyError::MethodNotAllowed("GET, POST, DELETE, OPTIONS")),
    }
}

/// Parses a POST body into messages; `true` when it was a batch.
pub fn parse_body(bytes: Bytes) -> Result<(Vec<Frame>, bool), ProxyError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'[') {
        return Ok((vec![Frame::parse(bytes, true)?], false));
    }
    let items: Vec<&RawValue> =
        serde_json::from_slice(&bytes).map_err(|e| jsonrpc::FrameError::NotJson(e.to_string()))?;
    if items.is_empty() {
        return Err(ProxyError::InvalidRequest("empty batch".into()));
    }
    let frames = items
        .iter()
        .map(|raw| Frame::parse(bytes.slice_ref(raw.get().as_bytes()), true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((frames, true))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn session_of(app: &App, headers: &HeaderMap) -> Result<Arc<Session>, ProxyError> {
    let id = header_str(headers, "mcp-session-id").ok_or(ProxyError::MissingSession)?;
    let session = app.sessions.get(id).ok_or(ProxyError::SessionNotFound)?;
    check_version(&session, headers)?;
    session.touch();
    Ok(session)
}

/// `MCP-Protocol-Version` after initialization (spec 2025-06-18+
/// `transports#protocol-version-header`): absent is fine (the session
/// knows), an invalid or unsupported value is 400. A different but
/// supported revision is accepted, as the official conformance suite
/// expects; the session's negotiated version still governs (batching).
fn check_version(session: &Session, headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(v) = header_str(headers, "mcp-protocol-version") else {
        return Ok(());
    };
    if !SESSION_VERSIONS.contains(&v) {
        return Err(ProxyError::BadProtocolVersion(format!(
            "unsupported MCP-Protocol-Version {v:?}; this session speaks {}",
            session.protocol_version()
        )));
    }
    Ok(())
}

async fn post(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    require_json(&parts.headers)?;
    let bytes = app.read_body(body, &parts.headers).await?;
    let (frames, batch) = parse_body(bytes)?;
    let has_session = parts.headers.contains_key("mcp-session-id");
    if !batch && !has_session && super::modern::body_is_modern(&frames[0]) {
        return super::modern::serve(app, &parts, frames.into_iter().next().expect("one frame"))
            .await;
    }
    let is_init = |f: &Frame| f.kind() == Kind::Request && f.method() == Some("initialize");
    if batch && frames.iter().any(is_init) {
        return Err(ProxyError::InvalidRequest(
            "initialize must not be part of a batch".into(),
        ));
    }
    if app.config.mode == Mode::Stateless {
        if !frames.iter().any(is_init) {
            check_stateless_version(&parts.headers, batch)?;
        }
        return stateless(app, &parts, frames, batch).await;
    }
    if !batch && is_init(&frames[0]) {
        // A stale session id on initialize is ignored: the client is starting over.
        return initialize(app, &parts, frames.into_iter().next().expect("one frame")).await;
    }
    let session = session_of(&app, &parts.headers)?;
    if batch && session.protocol_version() != "2025-03-26" {
        return Err(ProxyError::InvalidRequest(format!(
            "JSON-RPC batches are only allowed in protocol 2025-03-26; this session speaks {}",
            session.protocol_version()
        )));
    }
    let streams = session.clone();
    dispatch(
        &app,
        &session.port,
        &session.upstream,
        &parts.headers,
        frames,
        batch,
        move |owed| streams.open_stream(owed),
        session.cancel.clone(),
        None,
    )
    .await
}

/// Passes notifications and responses on, then serves the requests.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    app: &Arc<App>,
    port: &Arc<Port>,
    upstream: &Arc<Upstream>,
    headers: &HeaderMap,
    frames: Vec<Frame>,
    batch: bool,
    open_stream: impl FnOnce(usize) -> (Arc<Outlet>, tokio::sync::mpsc::Receiver<Bytes>),
    cancel: tokio_util::sync::CancellationToken,
    guard: Option<DetachGuard>,
) -> Result<Response<Body>, ProxyError> {
    let requests = frames.iter().filter(|f| f.kind() == Kind::Request).count();
    // Refuse before anything reaches the child.
    let answer = if requests > 0 {
        Some(negotiate(headers)?)
    } else {
        None
    };
    let mut pending = Vec::new();
    for frame in frames {
        let r = match frame.kind() {
            Kind::Notification => upstream.notify(port, frame).await,
            Kind::Response => upstream.respond(port, frame).await,
            Kind::Request => {
                pending.push(frame);
                Ok(())
            }
        };
        if let Err(e) = r {
            if requests == 0 {
                return Err(ProxyError::Upstream(e.to_string()));
            }
            debug!(error = %e, "message not delivered to the child");
        }
    }
    let Some(answer) = answer else {
        return Ok(accepted());
    };
    match answer {
        Answer::Sse => {
            let (outlet, rx) = open_stream(pending.len());
            for frame in pending {
                let _ = upstream
                    .request(port, frame, Reply::Stream(outlet.clone()))
                    .await;
            }
            Ok(sse_response(stream_body(
                rx,
                app.config.keep_alive,
                cancel,
                guard,
            )))
        }
        Answer::Json => {
            let mut waiters = Vec::with_capacity(pending.len());
            for frame in pending {
                let id: Box<[u8]> = frame.id().unwrap_or_default().into();
                let (tx, rx) = oneshot::channel();
                let _ = upstream.request(port, frame, Reply::Once(tx)).await;
                waiters.push((id, rx));
            }
            let mut answers = Vec::with_capacity(waiters.len());
            for (id, rx) in waiters {
                let message = tokio::select! {
                    r = rx => r.unwrap_or_else(|_| jsonrpc::error_response(Some(&id), code::SERVER_ERROR, "the session ended before the MCP server answered", None).into()),
                    _ = cancel.cancelled() => jsonrpc::error_response(Some(&id), code::SERVER_ERROR, "the proxy is shutting down", None).into(),
                };
                answers.push(message);
            }
            drop(guard);
            if batch {
                let answers: Vec<Bytes> = answers.into_iter().map(Message::into_bytes).collect();
                return Ok(json_ok(join_batch(&answers)));
            }
            Ok(json_message(answers.pop().unwrap_or_default()))
        }
    }
}

fn join_batch(answers: &[Bytes]) -> Bytes {
    let mut out =
        BytesMut::with_capacity(answers.iter().map(Bytes::len).sum::<usize>() + answers.len() + 2);
    out.extend_from_slice(b"[");
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(a);
    }
    out.extend_from_slice(b"]");
    out.freeze()
}

/// 202 with an empty body: the only answer to notifications and responses.
pub fn accepted() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// 200 with a JSON body.
pub fn json_ok(body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// 200 with a JSON body sent as the pieces it is made of.
pub fn json_message(message: Message) -> Response<Body> {
    let mut r = Response::new(sse::parts(message.into_parts()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// One response as an SSE stream of one event.
pub fn single_event(body: &[u8]) -> Response<Body> {
    sse_response(full(sse::event(None, None, body)))
}

async fn initialize(
    app: Arc<App>,
    parts: &Parts,
    frame: Frame,
) -> Result<Response<Body>, ProxyError> {
    let answer = negotiate(&parts.headers)?;
    let (session, reservation) = app.open_session().await?;
    let upstream = session.upstream.clone();
    let client_id: Box<[u8]> = frame.id().unwrap_or_default().into();
    let (tx, rx) = oneshot::channel();
    let _ = upstream
        .request(&session.port, frame, Reply::Once(tx))
        .await;
    let limit = app.config.request_timeout.unwrap_or(INITIALIZE_TIMEOUT);
    let response = tokio::select! {
        r = rx => r.ok().map(Message::into_bytes),
        _ = tokio::time::sleep(limit) => None,
        _ = session.cancel.cancelled() => None,
    };
    let response = response.unwrap_or_else(|| {
        jsonrpc::error_response(
            Some(&client_id),
            code::SERVER_ERROR,
            &format!(
                "the MCP server did not answer initialize within {} s",
                limit.as_secs()
            ),
            None,
        )
    });
    let version = negotiated_version(&response);
    let Some(version) = version else {
        // No session was created: the error goes back without an id header.
        info!("initialize failed; no session created");
        end_unregistered(&session).await;
        return Ok(answer_one(answer, response));
    };
    session.set_protocol_version(&version);
    app.sessions.insert(session.clone(), reservation);
    if !upstream.is_shared() {
        watch_child(app.clone(), &session);
    }
    let mut resp = answer_one(answer, response);
    // Invariant: session ids are hex.
    resp.headers_mut().insert(
        "mcp-session-id",
        HeaderValue::from_str(&session.id).expect("hex is a valid header"),
    );
    Ok(resp)
}

/// The protocol version of a successful initialize answer.
pub fn negotiated_version(response: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct R {
        result: Option<Init>,
    }
    #[derive(serde::Deserialize)]
    struct Init {
        #[serde(rename = "protocolVersion")]
        protocol_version: String,
    }
    serde_json::from_slice::<R>(response)
        .ok()?
        .result
        .map(|r| r.protocol_version)
}

fn answer_one(answer: Answer, body: Bytes) -> Response<Body> {
    match answer {
        Answer::Json => json_ok(body),
        Answer::Sse => single_event(&body),
    }
}

async fn end_unregistered(session: &Arc<Session>) {
    session.cancel.cancel();
    session.upstream.detach(&session.port).await;
    if !session.upstream.is_shared() {
        session.upstream.stop().await;
    }
}

/// Per-session mode: when the child exits, the session ends (404 afterwards).
pub fn watch_child(app: Arc<App>, session: &Arc<Session>) {
    let upstream = session.upstream.clone();
    let id = session.id.clone();
    let cancel = session.cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = upstream.ended() => app.sessions.remove(&id, "its MCP server process exited").await,
            _ = cancel.cancelled() => false,
        };
    });
}

async fn get(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if app.config.mode == Mode::Stateless {
        return Err(ProxyError::MethodNotAllowed("POST, OPTIONS"));
    }
    let headers = req.headers();
    if negotiate(headers)? != Answer::Sse {
        return Err(ProxyError::NotAcceptable(
            "GET needs Accept: text/event-stream",
        ));
    }
    let session = session_of(&app, headers)?;
    if let Some(last) = header_str(headers, "last-event-id") {
        match session.resume(last) {
            Some(rx) => {
                return Ok(sse_response(stream_body(
                    rx,
                    app.config.keep_alive,
                    session.cancel.clone(),
                    (),
                )));
            }
            None => debug!(
                last_event_id = last,
                "cannot resume that stream (unknown or evicted); opening a fresh one"
            ),
        }
    }
    let rx = session.open_get_stream();
    Ok(sse_response(stream_body(
        rx,
        app.config.keep_alive,
        session.cancel.clone(),
        (),
    )))
}

async fn delete(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if app.config.mode == Mode::Stateless {
        return Err(ProxyError::MethodNotAllowed("POST, OPTIONS"));
    }
    let session = session_of(&app, req.headers())?;
    app.sessions
        .remove(&session.id, "deleted by the client")
        .await;
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

/// Detaches a per-request port when its response is done or abandoned.
pub struct DetachGuard {
    /// The multiplexer.
    pub upstream: Arc<Upstream>,
    /// The one-request session.
    pub port: Arc<Port>,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        let (upstream, port) = (self.upstream.clone(), self.port.clone());
        tokio::spawn(async move { upstream.detach(&port).await });
    }
}

/// `--stateless` has no session to remember a version, so each POST's
/// `MCP-Protocol-Version` is the rule: an unsupported one is 400, and a
/// batch needs 2025-03-26 (also what an absent header means).
fn check_stateless_version(headers: &HeaderMap, batch: bool) -> Result<(), ProxyError> {
    let version = header_str(headers, "mcp-protocol-version");
    if let Some(v) = version
        && !SESSION_VERSIONS.contains(&v)
    {
        return Err(ProxyError::BadProtocolVersion(format!(
            "unsupported MCP-Protocol-Version {v:?}; supported: {}",
            SESSION_VERSIONS.join(", ")
        )));
    }
    match version {
        Some(v) if batch && v != "2025-03-26" => Err(ProxyError::InvalidRequest(format!(
            "JSON-RPC batches are only allowed in protocol 2025-03-26; this request says {v}"
        ))),
        _ => Ok(()),
    }
}

/// `--stateless`: no sessions; every POST is served by the shared child.
async fn stateless(
    app: Arc<App>,
    parts: &Parts,
    frames: Vec<Frame>,
    batch: bool,
) -> Result<Response<Body>, ProxyError> {
    let upstream = app.shared_upstream().await?;
    let port = Port::new(crate::upstream::STATELESS_LABEL.into(), PortKind::Session);
    upstream.attach(port.clone());
    let guard = DetachGuard {
        upstream: upstream.clone(),
        port: port.clone(),
    };
    let limits = app.stream_limits();
    let open = move |owed| {
        let (o, rx) = Outlet::new(0, false, Some(owed), limits.max_queue, 0);
        (Arc::new(o), rx)
    };
    let cancel = app.streams_cancel.child_token();
    dispatch(
        &app,
        &port,
        &upstream,
        &parts.headers,
        frames,
        batch,
        open,
        cancel,
        Some(guard),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_frames_sharing_the_body() {
        let (frames, batch) = parse_body(Bytes::from_static(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
        ))
        .unwrap();
        assert!(batch);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].id().unwrap(), b"1");
        assert_eq!(frames[1].kind(), Kind::Notification);
        assert!(matches!(
            parse_body(Bytes::from_static(b"[]")),
            Err(ProxyError::InvalidRequest(_))
        ));
        assert!(parse_body(Bytes::from_static(b"[1]")).is_err());
    }

    #[test]
    fn negotiated_version_reads_only_successes() {
        assert_eq!(
            negotiated_version(
                br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#
            )
            .as_deref(),
            Some("2025-06-18")
        );
        assert_eq!(
            negotiated_version(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#),
            None
        );
    }
}
