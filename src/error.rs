//! The one place where errors become HTTP responses.
//!
//! Handlers return `Result<Response, ProxyError>`; [`ProxyError::into_response`]
//! picks the status (spec `basic/transports`, transport.md §2.11 and §2.13)
//! and writes a JSON-RPC error body without an id. Where a request's
//! revision is known, a [`Refusal`] carries the error with what it
//! answers (the request's id, whether it speaks 2026-07-28), and
//! [`Refusal::into_response`] writes it so. Session-era errors never
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
    /// A 2026-07-28 request needs a capability its client did not
    /// declare: 400 with -32021 and the capabilities it needs in
    /// `data.requiredCapabilities` (spec 2026-07-28 `basic/index`).
    #[error("{message}")]
    MissingClientCapability {
        /// What is missing, and for what.
        message: String,
        /// The capabilities object the request needs.
        required: Value,
    },
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
}

/// An error refusing a request, with what it answers: what becomes the
/// HTTP response where the request's revision is known (the front-ends'
/// entry, `App::route`). A bare [`ProxyError`] is one for a request of
/// unknown revision and id.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub error: ProxyError,
    /// The refused request's id, raw JSON: a 2026-07-28 request whose id
    /// could be read is answered with it (spec `basic/index`, "Error
    /// Responses": the same id as the request, unless it could not be
    /// read). Nothing else (status, code, headers) depends on it.
    id: Option<Box<[u8]>>,
    /// It refuses a 2026-07-28 request: the same status, message and
    /// data, but where the proxy itself failed (the MCP server could not
    /// be started, died, did not answer; the proxy is stopping; the store
    /// failed) the code is -32603, not -32000: that revision says new
    /// implementations should not use -32000…-32019 (spec 2026-07-28
    /// `basic/index`, "Error Codes"). Session-era refusals keep -32000.
    modern: bool,
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Refusal {
        Refusal {
            error,
            id: None,
            modern: false,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<TooManySessions> for ProxyError {
    fn from(e: TooManySessions) -> ProxyError {
        match e {
            TooManySessions::Total(n) => ProxyError::TooManySessions(n),
            TooManySessions::ForPrincipal(n) => ProxyError::TooManySessionsForPrincipal(n),
        }
    }
}

impl Refusal {
    /// This refusal as that of the request with id `id` (raw JSON);
    /// `None` (a notification, or an id that could not be read), or an
    /// id it has already, leaves it as it is.
    pub fn answering(mut self, id: Option<&[u8]>) -> Refusal {
        if self.id.is_none() {
            self.id = id.map(Into::into);
        }
        self
    }

    /// This refusal as a 2026-07-28 request's (see [`Refusal`]).
    pub fn modern(mut self) -> Refusal {
        self.modern = true;
        self
    }

    /// The bound that refused the request, if one did (see
    /// [`ProxyError::limit`]).
    pub fn limit(&self) -> Option<Limit> {
        self.error.limit()
    }

    /// The HTTP response for this refusal.
    pub fn into_response(self) -> Response<Body> {
        let Refusal { error, id, modern } = self;
        let body = jsonrpc::error_response(
            id.as_deref(),
            error.rpc_code(modern),
            &error.to_string(),
            error.data(),
        );
        let mut resp = Response::new(full(body));
        *resp.status_mut() = error.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &error {
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

impl ProxyError {
    /// This error as the refusal of the request with id `id` (see
    /// [`Refusal::answering`]).
    pub fn answering(self, id: Option<&[u8]>) -> Refusal {
        Refusal::from(self).answering(id)
    }

    /// This error as a 2026-07-28 request's refusal (see [`Refusal`]).
    pub fn modern(self) -> Refusal {
        Refusal::from(self).modern()
    }

    fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            BadMessage(_)
            | InvalidRequest(_)
            | InvalidParams(_)
            | MissingSession
            | BadProtocolVersion(_) => StatusCode::BAD_REQUEST,
            HeaderMismatch(_) | UnsupportedVersion { .. } | MissingClientCapability { .. } => {
                StatusCode::BAD_REQUEST
            }
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
        }
    }

    /// The bound that refused the request, if one did (for the
    /// `limit_refusals` metric).
    pub fn limit(&self) -> Option<Limit> {
        use ProxyError::*;
        Some(match self {
            BodyTooLarge { .. } => Limit::BodyBytes,
            BodyReadTimeout(_) => Limit::BodyReadTimeout,
            TooManySessions(_) => Limit::Sessions,
            TooManySessionsForPrincipal(_) => Limit::SessionsPerPrincipal,
            TooManyInFlight(..) => Limit::InFlight,
            TooManyInFlightForPrincipal(..) => Limit::InFlightPerPrincipal,
            _ => return None,
        })
    }

    /// The JSON-RPC code of this error refusing a 2026-07-28 (`modern`)
    /// or session-era request.
    fn rpc_code(&self, modern: bool) -> i64 {
        use ProxyError::*;
        match self {
            BadMessage(e) => e.code(),
            HeaderMismatch(_) => code::HEADER_MISMATCH,
            UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            MethodNotFound(_) => code::METHOD_NOT_FOUND,
            MissingClientCapability { .. } => code::MISSING_REQUIRED_CLIENT_CAPABILITY,
            InvalidParams(_) => code::INVALID_PARAMS,
            SessionNotFound => -32001,
            Upstream(UpstreamError::DuplicateId(_)) if modern => code::INVALID_REQUEST,
            Upstream(_) | TooManySessions(_) | ShuttingDown | StoreUnavailable(_)
            | MissingCredential(_) => crate::upstream::proxy_failure_code(modern),
            _ => code::INVALID_REQUEST,
        }
    }

    fn data(&self) -> Option<Value> {
        match self {
            ProxyError::UnsupportedVersion {
                requested,
                supported,
            } => Some(serde_json::json!({ "supported": supported, "requested": requested })),
            ProxyError::MissingClientCapability { required, .. } => {
                Some(serde_json::json!({ "requiredCapabilities": required }))
            }
            _ => None,
        }
    }

    /// The HTTP response for this error, refusing a request of unknown
    /// revision and id.
    pub fn into_response(self) -> Response<Body> {
        Refusal::from(self).into_response()
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
            (
                ProxyError::MissingClientCapability {
                    message: "x".into(),
                    required: serde_json::json!({}),
                },
                400,
                -32021,
            ),
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
