//! The proxy's own outbound HTTP: fetching a JWKS and asking a forward-auth
//! endpoint. One small client (hyper-util's, with rustls on the `ring`
//! provider and the bundled Mozilla roots), every call under a deadline and
//! a cap on the answer's size, so an upstream that never answers or answers
//! forever cannot hold a request (or memory) hostage.
//!
//! Does not own: what the answers mean (see [`super::jwt`], [`super::forward`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Deadline of one outbound call, connect to last byte.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a JWKS or forward-auth endpoint.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why an outbound call failed (never an accept: callers turn this into 503).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the deadline.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// Connection or protocol failure.
    #[error("request to {0} failed: {1}")]
    Failed(String, String),
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("answer from {0} is over {MAX_ANSWER_BYTES} bytes")]
    TooLarge(String),
}

/// A shared outbound client.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Warns when `uri` is plain `http` to a host that is not loopback: then
/// anyone on the path can read or change what `what` carries (a JWKS's
/// keys, so tokens of their own making; a forward-auth call's bearer
/// tokens). Not refused: an in-cluster endpoint over http may be meant.
pub fn warn_if_cleartext(what: &str, uri: &Uri) {
    if cleartext_off_host(uri) {
        tracing::warn!(
            url = %redact_url(uri),
            "{what} is plain http to a host that is not loopback: anyone on the network path can read and change it; use https"
        );
    }
}

fn cleartext_off_host(uri: &Uri) -> bool {
    let loopback = uri.host().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    uri.scheme_str() == Some("http") && !loopback
}

/// Where a URL's query and userinfo are cut off for logs and errors: a
/// forward-auth URL may carry a secret in its query.
pub fn redact_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(p) => format!("{scheme}://{host}:{p}{}", uri.path()),
        None => format!("{scheme}://{host}{}", uri.path()),
    }
}

impl Fetcher {
    /// A client whose calls each end within `timeout`.
    pub fn new(timeout: Duration) -> Fetcher {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Invariant: the ring provider supports rustls' default protocol versions.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .expect("ring supports the default TLS versions")
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Fetcher { client, timeout }
    }

    /// `GET uri` with `headers`; the status and the whole (capped) body.
    pub async fn get(
        &self,
        uri: &Uri,
        headers: HeaderMap,
    ) -> Result<(StatusCode, HeaderMap, Bytes), FetchError> {
        let shown = redact_url(uri);
        let mut req = Request::get(uri.clone())
            .body(Empty::new())
            .map_err(|e| FetchError::Failed(shown.clone(), e.to_string()))?;
        req.headers_mut().extend(headers);
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Failed(shown.clone(), e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(shown.clone())
                    } else {
                        FetchError::Failed(shown.clone(), e.to_string())
                    }
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| FetchError::Timeout(shown.clone(), self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_lose_query_and_userinfo() {
        let u: Uri = "https://user:pw@api.example.com:8443/whoami?token=s3cret"
            .parse()
            .unwrap();
        assert_eq!(redact_url(&u), "https://api.example.com:8443/whoami");
    }

    #[test]
    fn plain_http_is_flagged_unless_it_stays_on_the_host() {
        let flagged = |u: &str| cleartext_off_host(&u.parse().unwrap());
        assert!(flagged("http://10.1.2.3/jwks"));
        assert!(flagged("http://keycloak.auth.svc:8080/certs"));
        assert!(!flagged("https://idp.example.com/jwks"));
        assert!(!flagged("http://127.0.0.1:9000/whoami"));
        assert!(!flagged("http://[::1]:9000/whoami"));
        assert!(!flagged("http://localhost/whoami"));
    }
}
