//! The legacy HTTP+SSE transport, revision 2024-11-05 (spec
//! `2024-11-05/basic/transports#http-with-sse`; transport.md §3).
//!
//! `GET /sse` opens a session and its one stream; the first event is
//! `endpoint`, a relative URL (keeping any `X-Forwarded-Prefix`) to POST
//! messages to. Every answer travels on the stream as a `message` event; the
//! POST itself gets 202 `Accepted`. The session ends when the stream closes.
//! A POST to `/sse` gets 405 so that newer clients probing it fall back
//! correctly (transport.md §2.10).

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::response::sse_response;
use super::{App, parse_body, require_json};
use crate::error::ProxyError;
use crate::jsonrpc::Kind;

use crate::jsonrpc::Message;
use crate::session::{Session, Transport};
use crate::sse::{self, Body, Outlet, full, stream_body};
use crate::upstream::{AnswerWatch, Reply};
use crate::version::{self, BATCH_VERSION};

/// `GET /sse`.
pub async fn handle_sse(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if req.method() != Method::GET {
        return Err(ProxyError::MethodNotAllowed("GET, OPTIONS"));
    }
    let (session, reservation) = app
        .open_session(&super::principal_of(req.extensions()), Transport::Legacy)
        .await?;
    let limits = app.stream_limits();
    let (outlet, rx) = Outlet::new(0, false, None, limits.max_queue, 0);
    // The stream cannot be resumed: once its client falls too far behind
    // (`--max-queue-bytes` of answers waiting), it ends, and so does the
    // session, so that the client learns it (404 on its next POST).
    let too_slow = CancellationToken::new();
    let outlet = Arc::new(
        outlet
            .with_queue_bytes(limits.max_queue_bytes)
            .with_metrics(limits.metrics.clone())
            .with_cut_notice(too_slow.clone()),
    );
    session.port.set_notify(Some(outlet.clone()));
    let endpoint = format!(
        "{}{}?sessionId={}",
        forwarded_prefix(req.headers()),
        app.config.message_path,
        session.id
    );
    outlet.send_raw(sse::event(None, Some("endpoint"), endpoint.as_bytes()));
    app.sessions.insert(session.clone(), reservation);
    // A hash, never the id: it is the session's credential (and in a URL).
    info!(session = %crate::logging::tag(&session.id), "legacy SSE session opened");
    if !session.upstream.is_shared() {
        app.watch_child(&session);
    }
    let (ends, id, ended) = (app.clone(), session.id.clone(), session.cancel.clone());
    app.tasks.spawn(async move {
        tokio::select! {
            _ = too_slow.cancelled() => {
                ends.sessions.remove(&id, "its SSE client was too slow (--max-queue-bytes)").await;
            }
            _ = ended.cancelled() => {}
        }
    });
    let guard = EndOnDrop {
        app: app.clone(),
        id: session.id.clone(),
    };
    Ok(sse_response(stream_body(
        rx,
        app.config.keep_alive,
        session.legacy_stream_end(),
        guard,
    )))
}

/// Ends a legacy session when its stream's response is dropped.
struct EndOnDrop {
    app: Arc<App>,
    id: Arc<str>,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let (app, id) = (self.app.clone(), self.id.clone());
        self.app
            .tasks
            .spawn(async move { app.sessions.remove(&id, "its SSE stream closed").await });
    }
}

/// A path prefix a reverse proxy says it strips (`X-Forwarded-Prefix`),
/// sanitized: kept only as an absolute path that no URL parser can read as
/// naming another host. WHATWG URL parsers (browsers, Node's `URL`, which
/// the TypeScript SDK resolves the endpoint with) take `\` for `/` in
/// http(s) URLs, so `/\host` is `//host` there.
pub(crate) fn forwarded_prefix(headers: &HeaderMap) -> String {
    let Some(p) = headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
    else {
        return String::new();
    };
    let p = p.trim().trim_end_matches('/');
    let safe = p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
    if safe { p.to_string() } else { String::new() }
}

/// The session named in the query (`sessionId`, or `session_id` as some
/// clients spell it). Two different values are refused, as two different
/// `Mcp-Session-Id` headers are: which one a front proxy, a log or an
/// access rule looked at is not known.
pub(crate) fn query_session(uri: &http::Uri) -> Result<Option<&str>, ProxyError> {
    let mut found = None;
    let pairs = uri.query().unwrap_or("").split('&');
    for v in pairs.filter_map(|pair| match pair.split_once('=') {
        Some(("sessionId" | "session_id", v)) => Some(v),
        _ => None,
    }) {
        match found {
            Some(seen) if seen != v => {
                return Err(ProxyError::InvalidRequest(
                    "two different session ids in the query (sessionId, session_id)".into(),
                ));
            }
            _ => found = Some(v),
        }
    }
    Ok(found)
}

/// `POST /messages?sessionId=…`.
pub async fn handle_message(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if req.method() != Method::POST {
        return Err(ProxyError::MethodNotAllowed("POST, OPTIONS"));
    }
    let id = query_session(req.uri())?
        .ok_or_else(|| ProxyError::InvalidRequest("sessionId query parameter is required".into()))?
        .to_string();
    let session = app
        .sessions
        .get_owned(
            &id,
            &super::principal_of(req.extensions()),
            Transport::Legacy,
        )
        .ok_or(ProxyError::SessionNotFound)?;
    // A stream that ended (its client left or fell too far behind) takes
    // nothing more: its session is ending.
    let outlet = session
        .port
        .notify_stream()
        .filter(|o| o.is_live())
        .ok_or(ProxyError::SessionNotFound)?;
    let (parts, body) = req.into_parts();
    require_json(&parts.headers)?;
    let bytes = app.read_body(body, &parts.headers).await?;
    let (frames, batch) = parse_body(bytes, app.config.max_batch)?;
    if batch {
        check_batch(&session, &frames)?;
    }
    if app.refuses_while_draining(&frames, true) {
        return Err(ProxyError::ShuttingDown);
    }
    super::streamable::admit(&app, &session, &frames)?;
    let frames = crate::trace::carry(&parts.headers, frames);
    session.touch();
    let principal = super::principal_of(&parts.extensions);
    for frame in frames {
        let r = match frame.kind() {
            Kind::Request => {
                let mut reply = Reply::Stream(outlet.clone());
                if frame.method() == Some("initialize") {
                    reply = reply.watched(Some(Box::new(NoteVersion(session.clone()))));
                }
                let reply = app.reply_for(&principal, &frame, reply);
                session.upstream.request(&session.port, frame, reply).await
            }
            Kind::Notification => session.upstream.notify(&session.port, frame).await,
            Kind::Response => session.upstream.respond(&session.port, frame).await,
        };
        if let Err(e) = r {
            // Requests already got their error on the stream; the rest are lost with the child.
            tracing::debug!(error = %e, "message not delivered to the child");
        }
    }
    let mut r = Response::new(full("Accepted"));
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// A batch in a legacy session, as on `/mcp` (transport.md §2.8):
/// JSON-RPC batches exist in protocol 2025-03-26 alone, and `initialize`
/// is never part of one. A session not yet initialized has no version.
fn check_batch(session: &Session, frames: &[crate::jsonrpc::Frame]) -> Result<(), ProxyError> {
    if frames.iter().any(|f| f.method() == Some("initialize")) {
        return Err(ProxyError::InvalidRequest(
            "initialize must not be part of a batch".into(),
        ));
    }
    let version = session.protocol_version();
    if version != BATCH_VERSION {
        return Err(ProxyError::InvalidRequest(format!(
            "JSON-RPC batches are only allowed in protocol {BATCH_VERSION}; this session speaks {}",
            if version.is_empty() {
                "none yet"
            } else {
                &version
            }
        )));
    }
    Ok(())
}

/// Records the version a legacy session negotiated, from its initialize
/// answer, as a session-era session records it at `initialize`: what a
/// session may do (batches) depends on it, and the log names it.
struct NoteVersion(Arc<Session>);

impl AnswerWatch for NoteVersion {
    fn answered(self: Box<Self>, message: &Message) {
        if let Some(v) = version::negotiated_version(&message.contiguous()) {
            info!(session = %crate::logging::tag(&self.0.id), version = %v, "legacy session initialized");
            self.0.set_protocol_version(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_comes_from_either_spelling() {
        let q = |uri: &str| query_session(&uri.parse().unwrap()).map(|s| s.map(str::to_string));
        assert_eq!(
            q("/messages?sessionId=abc").unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            q("/messages?x=1&session_id=def").unwrap().as_deref(),
            Some("def")
        );
        assert_eq!(q("/messages").unwrap(), None);
        assert_eq!(
            q("/messages?sessionId=abc&session_id=abc")
                .unwrap()
                .as_deref(),
            Some("abc")
        );
    }

    /// Regression: with two different session ids in the query the first
    /// won (`?sessionId=mine&sessionId=other` reached `mine`, the reverse
    /// got 404), so a front proxy or access rule reading the other copy
    /// saw another session than the proxy served.
    #[test]
    fn two_different_session_ids_are_refused() {
        for uri in [
            "/messages?sessionId=abc&sessionId=zzz",
            "/messages?session_id=abc&sessionId=zzz",
            "/messages?sessionId=abc&x=1&session_id=",
        ] {
            assert!(
                matches!(
                    query_session(&uri.parse().unwrap()),
                    Err(ProxyError::InvalidRequest(_))
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn forwarded_prefix_is_kept_only_when_safe() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", "/tools/coda/".parse().unwrap());
        assert_eq!(forwarded_prefix(&h), "/tools/coda");
        h.insert("x-forwarded-prefix", "//evil.example".parse().unwrap());
        assert_eq!(forwarded_prefix(&h), "");
        h.insert(
            "x-forwarded-prefix",
            "https://evil.example".parse().unwrap(),
        );
        assert_eq!(forwarded_prefix(&h), "");
    }

    /// Regression: `/\\evil.example` passed the `//` check, and the
    /// endpoint `/\\evil.example/messages?sessionId=…` resolves, for a
    /// WHATWG URL parser, to `http://evil.example/messages?sessionId=…`:
    /// a client that does not compare origins would post its messages,
    /// session id included, to that host.
    #[test]
    fn a_forwarded_prefix_with_a_backslash_is_dropped() {
        let mut h = HeaderMap::new();
        for p in ["/\\evil.example", "/tools\\x", "\\\\evil.example"] {
            h.insert("x-forwarded-prefix", p.parse().unwrap());
            assert_eq!(forwarded_prefix(&h), "", "{p}");
        }
    }
}
