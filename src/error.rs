//! The one place where errors become HTTP responses.
//!
//! Handlers return `Result<Response, ProxyError>`; [`ProxyError::into_response`]
//! picks the status (spec `basic/transports`, transport.md §2.11 and §2.13)
//! and writes a JSON-RPC error body without an id. Session-era errors never
//! use the 2026-07-28 codes (-32020…-32022), so that dual-era clients read
//! them as "legacy server" and fall back (transport.md §2.13). Error
//! responses never carry a session id.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use crate::auth::AuthError;
use crate::jsonrpc::{self, FrameError, code};
use crate::metrics::Limit;
use crate::session::TooManySessions;
use crate::sse::{Body, full};
use crate::upstream::UpstreamError;

/// Everything a request can fail with before it reaches the child. A
/// clone is the same error for another request that waited on the work
/// that failed with it (see [`crate::principals`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// Body over `--max-body-bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not fully arrive within `--body-read-timeout`.
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    BodyReadTimeout(std::time::Duration),
    /// The body is not JSON or not JSON-RPC.
    #[error(transparent)]
    BadMessage(#[from] FrameError),
    /// A well-formed message the transport does not accept here.
    #[error("{0}")]
    InvalidRequest(String),
    /// `Content-Type` is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// `Accept` allows neither JSON nor SSE.
    #[error("{0}")]
    NotAcceptable(&'static str),
    /// A non-initialize request without `Mcp-Session-Id`.
    #[error("Mcp-Session-Id header is required (send initialize first to get one)")]
    MissingSession,
    /// Unknown, expired or ended session: the client must initialize again.
    #[error(
        "session not found: it expired, was deleted, or its server process exited; initialize a new session"
    )]
    SessionNotFound,
    /// A session-era `MCP-Protocol-Version` that is unknown or disagrees with the session.
    #[error("{0}")]
    BadProtocolVersion(String),
    /// 2026-07-28: a required header disagrees with the body.
    #[error("{0}")]
    HeaderMismatch(String),
    /// 2026-07-28: a version this proxy does not speak.
    #[error("unsupported protocol version {requested:?}")]
    UnsupportedVersion {
        /// What the client asked for.
        requested: String,
        /// What we speak.
        supported: Vec<&'static str>,
    },
    /// Well-formed, but its params lack what the revision requires (400
    /// with -32602, e.g. a 2026-07-28 `_meta` without `clientCapabilities`).
    #[error("{0}")]
    InvalidParams(String),
    /// 2026-07-28: unknown method (404 with -32601).
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// A present `Origin` that is not allowed (DNS rebinding defence).
    #[error("origin {0:?} is not allowed; add it with --allow-origin")]
    ForbiddenOrigin(String),
    /// A `Host` that is not allowed on a loopback bind.
    #[error("host {0:?} is not allowed; add it with --allowed-host")]
    ForbiddenHost(String),
    /// Authentication refused (401, 403, 429 or 503, see [`crate::auth::AuthError`]).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthRefusal),
    /// `--max-sessions-per-principal` reached.
    #[error(
        "too many sessions for this principal ({0}, --max-sessions-per-principal); end one first"
    )]
    TooManySessionsForPrincipal(usize),
    /// A session's requests in flight (the first) would pass its limit
    /// (the second, `--max-in-flight`).
    #[error(
        "too many requests in flight in this session ({0}, at most {1}, --max-in-flight); wait for answers first"
    )]
    TooManyInFlight(usize, usize),
    /// A principal's requests in flight without a session (`--stateless`,
    /// 2026-07-28; the first) would pass its limit (the second,
    /// `--max-in-flight`).
    #[error(
        "too many requests in flight for this principal ({0}, at most {1}, --max-in-flight); wait for answers first"
    )]
    TooManyInFlightForPrincipal(usize, usize),
    /// The method is not served on this path.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// No such path.
    #[error("not found: {0}")]
    NotFound(String),
    /// `--max-sessions` reached.
    #[error("too many sessions ({0} open, --max-sessions); try again later")]
    TooManySessions(usize),
    /// The child could not be started, is down, or failed the proxy's own
    /// request (typed where it arose, in [`crate::upstream`]).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The proxy is shutting down.
    #[error("the proxy is shutting down")]
    ShuttingDown,
    /// The caller has no stored credential the server's child needs: no
    /// child is started without it.
    #[error("{0}")]
    MissingCredential(String),
    /// The credential store failed or timed out. The message is the
    /// generic [`crate::store::UNAVAILABLE`]: the cause (a path, a host,
    /// an SQL error) is logged where it happened and never reaches a client.
    #[error("{0}")]
    StoreUnavailable(String),
    /// `error`, refusing a 2026-07-28 request whose id could be read: its
    /// error response carries that id (spec `basic/index`, "Error
    /// Responses": the same id as the request, unless it could not be
    /// read). Everything else (status, code, headers) is `error`'s.
    #[error("{error}")]
    Answering {
        /// The request's id, raw JSON.
        id: Box<[u8]>,
        /// Why it was refused.
        error: Box<ProxyError>,
    },
    /// The error within, refusing a 2026-07-28 request: the same status,
    /// message and data, but where the proxy itself failed (the MCP
    /// server could not be started, died, did not answer; the proxy is
    /// stopping; the store failed) the code is -32603, not -32000: that
    /// revision says new implementations should not use -32000…-32019
    /// (spec 2026-07-28 `basic/index`, "Error Codes"). Session-era
    /// refusals keep -32000.
    #[error(transparent)]
    Modern(Box<ProxyError>),
}

impl From<TooManySessions> for ProxyError {
    fn from(e: TooManySessions) -> ProxyError {
        match e {
            TooManySessions::Total(n) => ProxyError::TooManySessions(n),
            TooManySessions::ForPrincipal(n) => ProxyError::TooManySessionsForPrincipal(n),
        }
    }
}

impl ProxyError {
    /// This error as the refusal of the request with id `id` (raw JSON);
    /// `None` (a notification, or an id that could not be read) leaves it
    /// as it is.
    pub fn answering(self, id: Option<&[u8]>) -> ProxyError {
        match (self, id) {
            (e @ ProxyError::Answering { .. }, _) | (e, None) => e,
            (e, Some(id)) => ProxyError::Answering {
                id: id.into(),
                error: Box::new(e),
            },
        }
    }

    /// This error as a 2026-07-28 request's refusal (see
    /// [`ProxyError::Modern`]).
    pub fn modern(self) -> ProxyError {
        match self {
            ProxyError::Answering { id, error } => ProxyError::Answering {
                id,
                error: Box::new(error.modern()),
            },
            e @ ProxyError::Modern(_) => e,
            e => ProxyError::Modern(Box::new(e)),
        }
    }

    /// Whether this refuses a 2026-07-28 request.
    fn is_modern(&self) -> bool {
        match self {
            ProxyError::Answering { error, .. } => error.is_modern(),
            ProxyError::Modern(_) => true,
            _ => false,
        }
    }

    /// The error itself, without the request it answers or its revision.
    pub fn inner(&self) -> &ProxyError {
        match self {
            ProxyError::Answering { error, .. } | ProxyError::Modern(error) => error.inner(),
            e => e,
        }
    }

    fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self.inner() {
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            BadMessage(_)
            | InvalidRequest(_)
            | InvalidParams(_)
            | MissingSession
            | BadProtocolVersion(_) => StatusCode::BAD_REQUEST,
            HeaderMismatch(_) | UnsupportedVersion { .. } => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            SessionNotFound | NotFound(_) | MethodNotFound(_) => StatusCode::NOT_FOUND,
            ForbiddenOrigin(_) | ForbiddenHost(_) | MissingCredential(_) => StatusCode::FORBIDDEN,
            StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Auth(r) => match r.error {
                AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
                AuthError::InsufficientScope => StatusCode::FORBIDDEN,
                AuthError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
            TooManySessionsForPrincipal(_)
            | TooManyInFlight(..)
            | TooManyInFlightForPrincipal(..) => StatusCode::TOO_MANY_REQUESTS,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            TooManySessions(_) | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Upstream(UpstreamError::SessionEnded) => StatusCode::NOT_FOUND,
            Upstream(
                UpstreamError::HandshakeTimeout(_)
                | UpstreamError::NotReading(_)
                | UpstreamError::TimedOut(_),
            ) => StatusCode::GATEWAY_TIMEOUT,
            Upstream(UpstreamError::Overloaded(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Upstream(_) => StatusCode::BAD_GATEWAY,
            // Unwrapped by `inner`.
            Answering { error, .. } | Modern(error) => error.status(),
        }
    }

    /// The bound that refused the request, if one did (for the
    /// `limit_refusals` metric).
    pub fn limit(&self) -> Option<Limit> {
        use ProxyError::*;
        Some(match self.inner() {
            BodyTooLarge { .. } => Limit::BodyBytes,
            BodyReadTimeout(_) => Limit::BodyReadTimeout,
            TooManySessions(_) => Limit::Sessions,
            TooManySessionsForPrincipal(_) => Limit::SessionsPerPrincipal,
            TooManyInFlight(..) => Limit::InFlight,
            TooManyInFlightForPrincipal(..) => Limit::InFlightPerPrincipal,
            _ => return None,
        })
    }

    fn rpc_code(&self) -> i64 {
        use ProxyError::*;
        match self.inner() {
            BadMessage(e) => e.code(),
            HeaderMismatch(_) => code::HEADER_MISMATCH,
            UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            MethodNotFound(_) => code::METHOD_NOT_FOUND,
            InvalidParams(_) => code::INVALID_PARAMS,
            SessionNotFound => -32001,
            Upstream(UpstreamError::DuplicateId(_)) if self.is_modern() => code::INVALID_REQUEST,
            Upstream(_) | TooManySessions(_) | ShuttingDown | StoreUnavailable(_)
            | MissingCredential(_) => crate::upstream::proxy_failure_code(self.is_modern()),
            _ => code::INVALID_REQUEST,
        }
    }

    fn data(&self) -> Option<Value> {
        match self.inner() {
            ProxyError::UnsupportedVersion {
                requested,
                supported,
            } => Some(serde_json::json!({ "supported": supported, "requested": requested })),
            _ => None,
        }
    }

    /// The HTTP response for this error.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (id, error) = match self {
            ProxyError::Answering { id, error } => (Some(id), *error),
            e => (None, e),
        };
        let body = jsonrpc::error_response(
            id.as_deref(),
            error.rpc_code(),
            &error.to_string(),
            error.data(),
        );
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match error.inner() {
            ProxyError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ProxyError::Auth(r) => {
                if let AuthError::RateLimited(retry) = r.error {
                    h.insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(retry.as_secs().max(1)),
                    );
                } else if matches!(r.error, AuthError::Unavailable) {
                    h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                }
                // Every 401 and 403 says how to authenticate (RFC 6750, RFC 9728 §5.1).
                if matches!(
                    r.error,
                    AuthError::Missing | AuthError::Invalid(_) | AuthError::InsufficientScope
                ) && let Ok(v) = HeaderValue::from_str(&r.challenge)
                {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ProxyError::TooManySessionsForPrincipal(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ProxyError::TooManySessions(_) | ProxyError::ShuttingDown => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<Body>) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn statuses_and_codes_follow_the_transport_rules() {
        let cases: Vec<(ProxyError, u16, i64)> = vec![
            (ProxyError::BodyTooLarge { limit: 1 }, 413, -32600),
            (
                ProxyError::BodyReadTimeout(std::time::Duration::from_secs(1)),
                408,
                -32600,
            ),
            (FrameError::NotJson("x".into()).into(), 400, -32700),
            (FrameError::NotJsonRpc("x").into(), 400, -32600),
            (FrameError::RequestIdUnusable.into(), 400, -32600),
            (ProxyError::MissingSession, 400, -32600),
            (ProxyError::SessionNotFound, 404, -32001),
            (ProxyError::UnsupportedMediaType, 415, -32600),
            (ProxyError::NotAcceptable("x"), 406, -32600),
            (ProxyError::BadProtocolVersion("x".into()), 400, -32600),
            (ProxyError::HeaderMismatch("x".into()), 400, -32020),
            (ProxyError::MethodNotFound("x".into()), 404, -32601),
            (ProxyError::ForbiddenOrigin("x".into()), 403, -32600),
            (ProxyError::TooManySessions(3), 503, -32000),
            (ProxyError::InvalidParams("x".into()), 400, -32602),
            (ProxyError::TooManyInFlight(2, 2), 429, -32600),
            (ProxyError::TooManyInFlightForPrincipal(2, 2), 429, -32600),
            (
                UpstreamError::ChildExited("gone".into()).into(),
                502,
                -32000,
            ),
        ];
        for (err, status, code) in cases {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert!(resp.headers().get("mcp-session-id").is_none());
            let v = body_json(resp).await;
            assert_eq!(v["error"]["code"], code);
            assert!(v.get("id").is_none());
        }
    }

    #[tokio::test]
    async fn unsupported_version_lists_what_is_supported() {
        let resp = ProxyError::UnsupportedVersion {
            requested: "2099-01-01".into(),
            supported: vec!["2026-07-28"],
        }
        .into_response();
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], -32022);
        assert_eq!(v["error"]["data"]["supported"][0], "2026-07-28");
    }

    #[tokio::test]
    async fn a_refusal_answering_a_request_carries_its_id_and_nothing_else_changes() {
        let e = ProxyError::TooManyInFlightForPrincipal(2, 2).answering(Some(br#""a-1""#));
        assert_eq!(e.limit(), Some(Limit::InFlightPerPrincipal));
        let e = e.answering(Some(b"2"));
        let resp = e.into_response();
        assert_eq!(resp.status(), 429);
        let v = body_json(resp).await;
        assert_eq!(v["id"], "a-1", "the first id it answered stays");
        assert_eq!(v["error"]["code"], -32600);
        let resp = ProxyError::UnsupportedVersion {
            requested: "2099-01-01".into(),
            supported: vec!["2026-07-28"],
        }
        .answering(Some(b"7"))
        .into_response();
        assert_eq!(resp.status(), 400);
        let v = body_json(resp).await;
        assert_eq!(
            (v["id"].clone(), v["error"]["code"].clone()),
            (7.into(), (-32022).into())
        );
        assert_eq!(v["error"]["data"]["requested"], "2099-01-01");
        let v = body_json(ProxyError::ShuttingDown.answering(None).into_response()).await;
        assert!(v.get("id").is_none());
    }

    #[test]
    fn unauthorized_and_405_carry_their_headers() {
        let r = ProxyError::Auth(crate::auth::AuthRefusal {
            error: AuthError::Missing,
            challenge: r#"Bearer realm="mcp-proxy""#.into(),
        })
        .into_response();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("www-authenticate").is_some());
        let r = ProxyError::Auth(crate::auth::AuthRefusal {
            error: AuthError::RateLimited(std::time::Duration::from_secs(6)),
            challenge: String::new(),
        })
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "6");
        let r = ProxyError::MethodNotAllowed("GET, POST").into_response();
        assert_eq!(r.headers()["allow"], "GET, POST");
    }
}
