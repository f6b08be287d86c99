//! Streamable HTTP with sessions: revisions 2025-03-26, 2025-06-18 and
//! 2025-11-25 (spec `basic/transports#streamable-http`; transport.md §2).
//!
//! POST carries one message (or, on 2025-03-26 sessions only, a batch).
//! Notifications and responses get 202 with an empty body; requests get an
//! SSE stream (their response plus whatever the child sends meanwhile) or a
//! JSON body, whichever `Accept` allows. A batch is passed on in its order
//! (a request and its own cancellation stay in that order). GET opens the
//! session's stream for unrelated messages (a second GET replaces the
//! first); `Last-Event-ID` resumes a stream. DELETE ends the session.
//! `initialize` creates a session and, in per-session mode, its child; the
//! session id is sent once, on the successful initialize response.
//!
//! Requests reach this module once [`super::App::mcp`] decided they are
//! session-era.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::response::{accepted, json_answer, json_ok, single_event, sse_response};
use super::{Answer, App, names, negotiate};
use crate::config::Mode;
use crate::error::ProxyError;
use crate::jsonrpc::{self, Frame, Kind, Message, code};
use crate::session::{InFlightSlots, Session, Transport};
use crate::sse::{Body, Outlet, empty, stream_body};
use crate::tail;
use crate::upstream::{DEFAULT_HANDSHAKE_TIMEOUT, Port, PortKind, Reply, Upstream};
use crate::version::{self, BATCH_VERSION, SESSION_VERSIONS};

fn header_str(headers: &HeaderMap, name: http::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The one session id a request names. Every copy of `Mcp-Session-Id`,
/// and every comma-separated part of one (clients join repeated headers),
/// must be the same id: were several ids taken by their first, a gateway
/// in front that reads another copy would disagree with this proxy on
/// which session the request is for, so that is a 400. Named servers
/// route by it too (`servers`), so that a request goes to the generation
/// that holds the session the app then reads.
pub(crate) fn session_header(headers: &HeaderMap) -> Result<&str, ProxyError> {
    let mut id: Option<&str> = None;
    for value in headers.get_all(names::MCP_SESSION_ID) {
        let value = value.to_str().map_err(|_| {
            ProxyError::InvalidRequest("Mcp-Session-Id must be visible ASCII".into())
        })?;
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match id {
                Some(seen) if seen != part => {
                    return Err(ProxyError::InvalidRequest(
                        "the request names more than one Mcp-Session-Id".into(),
                    ));
                }
                _ => id = Some(part),
            }
        }
    }
    id.ok_or(ProxyError::MissingSession)
}

/// The caller's session: one of another principal is not found, like an unknown one.
fn session_of(
    app: &App,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<Arc<Session>, ProxyError> {
    let id = session_header(headers)?;
    let session = app
        .sessions
        .get_owned(id, &super::principal_of(extensions), Transport::Streamable)
        .ok_or(ProxyError::SessionNotFound)?;
    check_version(&session, headers)?;
    session.touch();
    Ok(session)
}

/// `MCP-Protocol-Version` after initialization (spec 2025-06-18+
/// `transports#protocol-version-header`, transport.md §2.7): absent is
/// fine (the session knows); an unknown, non-ASCII or 2026-07-28 value
/// is 400. Any supported session-era revision is accepted
/// ([`Session::accepts_version`]): the official conformance suite sends
/// one other than the negotiated revision.
fn check_version(session: &Session, headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(v) = header_str(headers, names::MCP_PROTOCOL_VERSION) else {
        return Ok(());
    };
    if !session.accepts_version(v) {
        let negotiated = session.protocol_version();
        return Err(ProxyError::BadProtocolVersion(format!(
            "MCP-Protocol-Version {v:?} does not match this session's {negotiated:?}"
        )));
    }
    Ok(())
}

/// Whether a POST's requests may go to `session`'s child: each id and
/// progress token within [`super::MAX_REQUEST_ID_BYTES`] and the session's
/// requests in flight within `--max-in-flight`. Checked before anything of
/// the POST reaches the child.
pub(super) fn admit(app: &App, session: &Session, frames: &[Frame]) -> Result<(), ProxyError> {
    super::check_request_ids(frames)?;
    let requests = frames.iter().filter(|f| f.kind() == Kind::Request).count();
    session
        .admit(requests, app.config.max_in_flight)
        .map_err(|(now, max)| ProxyError::TooManyInFlight(now, max))
}

/// A session-era POST, parsed by [`super::App::mcp`].
pub async fn post(
    app: Arc<App>,
    parts: &Parts,
    frames: Vec<Frame>,
    batch: bool,
) -> Result<Response<Body>, ProxyError> {
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
        return stateless(app, parts, frames, batch).await;
    }
    if !batch && is_init(&frames[0]) {
        // A stale session id on initialize is ignored: the client is starting over.
        // Boxed: once per session, and large (it awaits the handshake).
        return Box::pin(initialize(
            app,
            parts,
            frames.into_iter().next().expect("one frame"),
        ))
        .await;
    }
    let session = session_of(&app, &parts.headers, &parts.extensions)?;
    if batch && session.protocol_version() != BATCH_VERSION {
        return Err(ProxyError::InvalidRequest(format!(
            "JSON-RPC batches are only allowed in protocol {BATCH_VERSION}; this session speaks {}",
            session.protocol_version()
        )));
    }
    admit(&app, &session, &frames)?;
    let streams = session.clone();
    // The client is there while it waits for its JSON answer or reads its
    // stream (to the stream's end): only resumable streams are in the
    // session's list, so without this a stream without event ids
    // (`--replay-events 0`) would leave its session to the idle reaper.
    let waiting = session.waiting();
    dispatch(
        &app,
        &session.port,
        &session.upstream,
        parts,
        frames,
        batch,
        move |owed| streams.open_stream(owed),
        session.cancel.clone(),
        waiting,
    )
    .await
}

/// Passes every message on, in the order of the body; requests are
/// answered on one stream (or in one JSON body). Notifications and
/// responses never fail the POST: a child that is down loses them, as any
/// transport would, and the POST still gets 202. `guard` lives as long as
/// the answer: the JSON wait, or the stream's response body.
#[allow(clippy::too_many_arguments)]
async fn dispatch<G: Send + 'static>(
    app: &Arc<App>,
    port: &Arc<Port>,
    upstream: &Arc<Upstream>,
    parts: &Parts,
    frames: Vec<Frame>,
    batch: bool,
    open_stream: impl FnOnce(usize) -> (Arc<Outlet>, crate::sse::LiveRx),
    cancel: tokio_util::sync::CancellationToken,
    guard: G,
) -> Result<Response<Body>, ProxyError> {
    let requests = frames.iter().filter(|f| f.kind() == Kind::Request).count();
    if requests == 0 {
        for frame in frames {
            deliver_other(port, upstream, frame).await;
        }
        return Ok(accepted());
    }
    // Refuse before anything reaches the child.
    let answer = negotiate(&parts.headers)?;
    let principal = super::principal_of(&parts.extensions);
    match answer {
        Answer::Sse => {
            let (outlet, mut rx) = open_stream(requests);
            for frame in frames {
                match frame.kind() {
                    Kind::Request => {
                        let reply =
                            app.reply_for(&principal, &frame, Reply::Stream(outlet.clone()));
                        let _ = upstream.request(port, frame, reply).await;
                    }
                    _ => deliver_other(port, upstream, frame).await,
                }
            }
            rx.hold_first(app.config.keep_alive, &cancel).await;
            Ok(sse_response(stream_body(
                rx,
                app.config.keep_alive,
                cancel,
                guard,
            )))
        }
        Answer::Json => {
            let mut waiters = Vec::with_capacity(requests);
            for frame in frames {
                if frame.kind() != Kind::Request {
                    deliver_other(port, upstream, frame).await;
                    continue;
                }
                let id: Box<[u8]> = frame.id().unwrap_or_default().into();
                // A batch joins its answers; a single one may be long and
                // go on as it arrives.
                let (reply, waiter) = if batch {
                    let (tx, rx) = oneshot::channel();
                    (Reply::Once(tx), Waiter::Batch(rx))
                } else {
                    let (tx, rx) = oneshot::channel();
                    (Reply::Json(tx), Waiter::Single(rx))
                };
                let reply = app.reply_for(&principal, &frame, reply);
                let _ = upstream.request(port, frame, reply).await;
                waiters.push((id, waiter));
            }
            let mut answers = Vec::with_capacity(waiters.len());
            for (id, waiter) in waiters {
                let answer = tokio::select! {
                    r = waiter.answer() => r.unwrap_or_else(|| jsonrpc::error_response(Some(&id), code::SERVER_ERROR, "the session ended before the MCP server answered", None).into()),
                    _ = cancel.cancelled() => jsonrpc::error_response(Some(&id), code::SERVER_ERROR, "the proxy is shutting down", None).into(),
                };
                answers.push(answer);
            }
            drop(guard);
            if batch {
                let answers: Vec<Bytes> = answers
                    .into_iter()
                    .filter_map(|a| match a {
                        tail::Answer::Whole(m) => Some(m.into_bytes()),
                        // A batch's replies are `Once`: never streamed.
                        tail::Answer::Streamed(..) => None,
                    })
                    .collect();
                return Ok(json_ok(join_batch(&answers)));
            }
            Ok(json_answer(
                answers.pop().unwrap_or_else(|| Message::default().into()),
            ))
        }
    }
}

/// A notification or a response from the client, to the child.
async fn deliver_other(port: &Arc<Port>, upstream: &Arc<Upstream>, frame: Frame) {
    let r = match frame.kind() {
        Kind::Notification => upstream.notify(port, frame).await,
        _ => upstream.respond(port, frame).await,
    };
    if let Err(e) = r {
        debug!(error = %e, "message not delivered to the child");
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

/// Ends a session that never got registered (its initialize failed, or
/// its client went away first) unless disarmed: the session's child must
/// not outlive an initialize nobody waits for.
struct Unregistered {
    session: Option<Arc<Session>>,
    tasks: TaskTracker,
}

impl Unregistered {
    fn disarm(&mut self) {
        self.session = None;
    }
}

impl Drop for Unregistered {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.tasks
                .spawn(async move { end_unregistered(&session).await });
        }
    }
}

async fn initialize(
    app: Arc<App>,
    parts: &Parts,
    frame: Frame,
) -> Result<Response<Body>, ProxyError> {
    let answer = negotiate(&parts.headers)?;
    let (session, reservation) = app
        .open_session(
            &super::principal_of(&parts.extensions),
            Transport::Streamable,
        )
        .await?;
    // From here on, a client that goes away ends this session and its child.
    let mut pending_session = Unregistered {
        session: Some(session.clone()),
        tasks: app.tasks.clone(),
    };
    let upstream = session.upstream.clone();
    let client_id: Box<[u8]> = frame.id().unwrap_or_default().into();
    let (tx, rx) = oneshot::channel();
    let limit = app
        .config
        .request_timeout
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    // The handshake itself is bounded by `limit` inside the multiplexer;
    // the wait here covers the answer's delivery.
    let _ = upstream
        .request(&session.port, frame, Reply::Once(tx))
        .await;
    let response = tokio::select! {
        r = rx => r.ok().map(Message::into_bytes).ok_or_else(|| {
            "the MCP server did not answer initialize".to_string()
        }),
        _ = tokio::time::sleep(limit) => Err(format!(
            "the MCP server did not answer initialize within {} ms",
            limit.as_millis()
        )),
        // The drain's grace ran out (or the session ended) first.
        _ = session.cancel.cancelled() => Err(
            "the proxy is shutting down; initialize was not answered in time".to_string()
        ),
    };
    let response = response.unwrap_or_else(|why| {
        jsonrpc::error_response(Some(&client_id), code::SERVER_ERROR, &why, None)
    });
    let Some(version) = version::negotiated_version(&response) else {
        // No session was created: the error goes back without an id header.
        info!("initialize failed; no session created");
        pending_session.disarm();
        // The client has its answer now; its child's staged stop (up to
        // 1.5 x the grace for one that ignores stdin and SIGTERM) goes on
        // in a task the app owns, holding the session's slot under
        // --max-sessions until the child is gone.
        app.tasks.spawn(async move {
            end_unregistered(&session).await;
            drop(reservation);
        });
        return Ok(answer_one(answer, response));
    };
    session.set_protocol_version(&version);
    app.sessions.insert(session.clone(), reservation);
    pending_session.disarm();
    if !upstream.is_shared() {
        app.watch_child(&session);
    }
    let mut resp = answer_one(answer, response);
    // Invariant: session ids are hex.
    resp.headers_mut().insert(
        "mcp-session-id",
        HeaderValue::from_str(&session.id).expect("hex is a valid header"),
    );
    Ok(resp)
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

/// GET: the session's stream for unrelated messages, or the resumption of
/// a stream.
pub async fn get(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if app.config.mode == Mode::Stateless {
        return Err(ProxyError::MethodNotAllowed("POST, OPTIONS"));
    }
    let headers = req.headers();
    if negotiate(headers)? != Answer::Sse {
        return Err(ProxyError::NotAcceptable(
            "GET needs Accept: text/event-stream",
        ));
    }
    let session = session_of(&app, headers, req.extensions())?;
    if let Some(last) = header_str(headers, names::LAST_EVENT_ID) {
        match session.resume(last) {
            Some((rx, end)) => {
                return Ok(sse_response(stream_body(
                    rx,
                    app.config.keep_alive,
                    end,
                    (),
                )));
            }
            None => debug!(
                last_event_id = last,
                "cannot resume that stream (unknown, or an event it never sent); opening a fresh one"
            ),
        }
    }
    if app.is_shutting_down() {
        // Let through to resume a stream, not to open one.
        return Err(ProxyError::ShuttingDown);
    }
    let rx = session.open_get_stream();
    Ok(sse_response(stream_body(
        rx,
        app.config.keep_alive,
        session.standalone.clone(),
        (),
    )))
}

/// DELETE: ends the session.
pub async fn delete(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    if app.config.mode == Mode::Stateless {
        return Err(ProxyError::MethodNotAllowed("POST, OPTIONS"));
    }
    let session = session_of(&app, req.headers(), req.extensions())?;
    app.sessions
        .remove(&session.id, "deleted by the client")
        .await;
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

/// Detaches a `--stateless` POST's port when its response is done or
/// abandoned, and gives its requests' slots back (`--max-in-flight`).
///
/// A request still in flight then is cancelled at the child (its late
/// answer, if any, is dropped). These revisions say a disconnect is no
/// cancellation so that the client can resume the stream (`Last-Event-ID`)
/// or have the answer kept for it; a stateless answer has neither (no
/// event ids, no session), so once its JSON wait or SSE stream is dropped
/// nobody can get it, and the child's work would only pile up. A
/// session's streams keep the other rule (see `session`).
pub struct DetachGuard {
    /// The multiplexer.
    upstream: Arc<Upstream>,
    /// The one-request session.
    port: Arc<Port>,
    /// Where the detach runs (shutdown waits for it).
    tasks: TaskTracker,
    /// The principal's slots for the POST's requests.
    _slots: InFlightSlots,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        let (upstream, port) = (self.upstream.clone(), self.port.clone());
        self.tasks.spawn(async move {
            upstream
                .detach_cancelling(&port, "the client closed the connection")
                .await
        });
    }
}

/// `--stateless` has no session to remember a version, so each POST's
/// `MCP-Protocol-Version` is the rule: an unsupported one is 400, and a
/// batch needs 2025-03-26 (also what an absent header means).
fn check_stateless_version(headers: &HeaderMap, batch: bool) -> Result<(), ProxyError> {
    let version = header_str(headers, names::MCP_PROTOCOL_VERSION);
    if let Some(v) = version
        && !version::is_session(v)
    {
        return Err(ProxyError::BadProtocolVersion(format!(
            "unsupported MCP-Protocol-Version {v:?}; supported: {}",
            SESSION_VERSIONS.join(", ")
        )));
    }
    match version {
        Some(v) if batch && v != BATCH_VERSION => Err(ProxyError::InvalidRequest(format!(
            "JSON-RPC batches are only allowed in protocol {BATCH_VERSION}; this request says {v}"
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
    super::check_request_ids(&frames)?;
    let requests = frames.iter().filter(|f| f.kind() == Kind::Request).count();
    let slots = app.admit_without_session(&super::principal_of(&parts.extensions), requests)?;
    let upstream = app.shared_upstream().await?;
    let port = app.new_port(crate::upstream::STATELESS_LABEL.into(), PortKind::Session);
    port.set_principal(super::owner_key(&super::principal_of(&parts.extensions)).as_deref());
    upstream.attach(port.clone());
    let guard = DetachGuard {
        upstream: upstream.clone(),
        port: port.clone(),
        tasks: app.tasks.clone(),
        _slots: slots,
    };
    let limits = app.stream_limits();
    let open = move |owed| {
        let (o, rx) = Outlet::new(0, false, Some(owed), limits.max_queue, 0);
        let o = o
            .with_queue_bytes(limits.max_queue_bytes)
            .with_metrics(limits.metrics.clone());
        (Arc::new(o), rx)
    };
    let cancel = app.answers_cancel.child_token();
    dispatch(
        &app, &port, &upstream, parts, frames, batch, open, cancel, guard,
    )
    .await
}

/// Where a JSON-mode request's answer comes from.
enum Waiter {
    /// Part of a batch: whole, to be joined.
    Batch(oneshot::Receiver<Message>),
    /// Alone: whole, or a long one as it arrives.
    Single(oneshot::Receiver<tail::Answer>),
}

impl Waiter {
    /// The answer; `None` when the session ended first.
    async fn answer(self) -> Option<tail::Answer> {
        match self {
            Waiter::Batch(rx) => rx.await.ok().map(tail::Answer::Whole),
            Waiter::Single(rx) => rx.await.ok(),
        }
    }
}
