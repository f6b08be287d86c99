//! Who may talk to the proxy: API keys, and the Origin and Host checks that
//! defend against DNS rebinding (spec `basic/transports#security-warning`;
//! transport.md §2.1, §7.F).
//!
//! API keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>`
//! and are compared in constant time against every configured key. The key
//! is the proxy's own credential: it is never forwarded to the child.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ProxyError;

/// The access rules of one proxy.
#[derive(Debug, Clone)]
pub struct Access {
    api_keys: Vec<Vec<u8>>,
    allow_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    loopback: bool,
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host[:port]` (with `[v6]` support) and returns the host part.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

impl Access {
    /// Rules for a proxy bound to a loopback address (`loopback`) or not.
    pub fn new(
        api_keys: &[String],
        allow_origins: &[String],
        allowed_hosts: &[String],
        loopback: bool,
    ) -> Access {
        Access {
            api_keys: api_keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            allow_origins: allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            loopback,
        }
    }

    /// "api-key" or "none", for `/health`.
    pub fn mode(&self) -> &'static str {
        if self.api_keys.is_empty() {
            "none"
        } else {
            "api-key"
        }
    }

    /// Checks the API key, if keys are configured.
    pub fn check_key(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        if self.api_keys.is_empty() {
            return Ok(());
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes());
        let header_key = headers.get("x-api-key").map(|v| v.as_bytes());
        let presented = bearer.or(header_key).ok_or(ProxyError::Unauthorized)?;
        // Compare against every key so timing does not reveal which one matched.
        let ok = self.api_keys.iter().fold(0u8, |acc, k| {
            acc | k.as_slice().ct_eq(presented).unwrap_u8()
        });
        if ok == 1 {
            Ok(())
        } else {
            Err(ProxyError::Unauthorized)
        }
    }

    /// An allowed `Origin`, or `None` if the request has none.
    /// Loopback origins are always allowed; others need `--allow-origin`.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<Option<String>, ProxyError> {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return Ok(None);
        };
        let origin = origin
            .to_str()
            .map_err(|_| ProxyError::ForbiddenOrigin("<not text>".into()))?;
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = normalized.split_once("://").map_or("", |(_, rest)| rest);
        let allowed = self
            .allow_origins
            .iter()
            .any(|o| o == "*" || *o == normalized)
            || ((normalized.starts_with("http://") || normalized.starts_with("https://"))
                && is_loopback_name(host_part(authority)));
        if allowed {
            Ok(Some(origin.to_string()))
        } else {
            Err(ProxyError::ForbiddenOrigin(origin.to_string()))
        }
    }

    /// On loopback binds, `Host` must name a loopback host or an allowed one;
    /// elsewhere only `--allowed-host`, when given, restricts it. HTTP/2
    /// carries the host as the URI's `authority` instead, checked the same.
    pub fn check_host(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(), ProxyError> {
        if !self.loopback && self.allowed_hosts.is_empty() {
            return Ok(());
        }
        let header = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let Some(host) = header.or(authority) else {
            // HTTP/1.0 may name no host at all.
            return Ok(());
        };
        let lower = host.to_ascii_lowercase();
        let name = host_part(&lower);
        let ok = self.allowed_hosts.iter().any(|h| *h == lower || *h == name)
            || (self.loopback && is_loopback_name(name));
        if ok {
            Ok(())
        } else {
            Err(ProxyError::ForbiddenHost(host.to_string()))
        }
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

    #[test]
    fn keys_are_accepted_as_bearer_or_x_api_key() {
        let a = Access::new(
            &["0123456789abcdef".into(), "another-key-00000".into()],
            &[],
            &[],
            true,
        );
        assert!(
            a.check_key(&headers(&[("authorization", "Bearer 0123456789abcdef")]))
                .is_ok()
        );
        assert!(
            a.check_key(&headers(&[("authorization", "bearer another-key-00000")]))
                .is_ok()
        );
        assert!(
            a.check_key(&headers(&[("x-api-key", "0123456789abcdef")]))
                .is_ok()
        );
        assert!(
            a.check_key(&headers(&[("authorization", "Bearer wrong")]))
                .is_err()
        );
        assert!(a.check_key(&headers(&[])).is_err());
        assert!(
            Access::new(&[], &[], &[], true)
                .check_key(&headers(&[]))
                .is_ok()
        );
    }

    #[test]
    fn origins_loopback_pass_others_need_allowing() {
        let a = Access::new(&[], &["https://app.example.com".into()], &[], true);
        assert!(a.check_origin(&headers(&[])).unwrap().is_none());
        assert!(
            a.check_origin(&headers(&[("origin", "http://localhost:3000")]))
                .is_ok()
        );
        assert!(
            a.check_origin(&headers(&[("origin", "http://127.0.0.1")]))
                .is_ok()
        );
        assert!(
            a.check_origin(&headers(&[("origin", "https://app.example.com")]))
                .is_ok()
        );
        assert!(
            a.check_origin(&headers(&[("origin", "http://evil.example")]))
                .is_err()
        );
        assert!(
            a.check_origin(&headers(&[("origin", "http://localhost.evil.example")]))
                .is_err()
        );
        assert!(a.check_origin(&headers(&[("origin", "null")])).is_err());
    }

    #[test]
    fn host_is_checked_on_loopback_binds() {
        let a = Access::new(&[], &[], &["mcp.internal".into()], true);
        assert!(
            a.check_host(&headers(&[("host", "127.0.0.1:8080")]), None)
                .is_ok()
        );
        assert!(
            a.check_host(&headers(&[("host", "localhost")]), None)
                .is_ok()
        );
        assert!(
            a.check_host(&headers(&[("host", "[::1]:8080")]), None)
                .is_ok()
        );
        assert!(
            a.check_host(&headers(&[("host", "mcp.internal:8080")]), None)
                .is_ok()
        );
        assert!(
            a.check_host(&headers(&[("host", "attacker.example:8080")]), None)
                .is_err()
        );
        let public = Access::new(&[], &[], &[], false);
        assert!(
            public
                .check_host(&headers(&[("host", "anything")]), None)
                .is_ok()
        );
        // HTTP/2: no Host header, the authority is checked instead.
        assert!(
            a.check_host(&headers(&[]), Some("attacker.example"))
                .is_err()
        );
        assert!(a.check_host(&headers(&[]), Some("127.0.0.1:9")).is_ok());
    }
}
