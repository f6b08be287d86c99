//! Where requests may come from: the Origin, Host and fetch-metadata checks
//! that defend against DNS rebinding and cross-site use from a browser
//! (spec `basic/transports#security-warning`; transport.md §2.1, §7.F).
//!
//! Loopback origins (`http://localhost:3000`) are allowed only when the
//! proxy itself listens on loopback: on a public bind, a page served from
//! the visitor's own machine is as foreign as any other. A browser request
//! marked `Sec-Fetch-Site: cross-site` is refused unless its origin was
//! allowed with `--allow-origin`: an `<img src=…/sse>` tag sends no
//! `Origin`, but it does send fetch metadata.

use http::HeaderMap;

use crate::error::ProxyError;

/// The access rules of one proxy.
#[derive(Debug, Clone)]
pub struct Access {
    allow_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    loopback: bool,
}

/// Whether `host` (as [`host_part`] gives it: no brackets) is loopback.
fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]` (RFC 3986 authority without userinfo; an
/// IPv6 address in brackets, given without them), or `None` when it is not
/// one: only an IPv6 address goes in brackets, nothing may follow a `]` but
/// a port, and a port is at most 65535. Text around a bracketed address
/// (`[::1]evil.example`, `[[127.0.0.1]`) must not pass as that address.
fn host_part(authority: &str) -> Option<&str> {
    let port_ok = |p: &str| {
        p.is_empty()
            || (p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok())
    };
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after.strip_prefix(':') {
            Some(port) if port_ok(port) => Some(host),
            None if after.is_empty() => Some(host),
            _ => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port_ok(port) => Some(h),
        Some(_) => None,
        None => Some(authority),
    }
}

impl Access {
    /// Rules for a proxy bound to a loopback address (`loopback`) or not.
    pub fn new(allow_origins: &[String], allowed_hosts: &[String], loopback: bool) -> Access {
        Access {
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

    /// An allowed `Origin`, or `None` if the request has none.
    /// Loopback origins pass on loopback binds; others need `--allow-origin`.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<Option<String>, ProxyError> {
        let mut origins = headers.get_all(http::header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return Ok(None);
        };
        if origins.next().is_some() {
            // Which one a browser meant is anybody's guess: neither.
            return Err(ProxyError::ForbiddenOrigin("<repeated>".into()));
        }
        let origin = origin
            .to_str()
            .map_err(|_| ProxyError::ForbiddenOrigin("<not text>".into()))?;
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = normalized.split_once("://").map_or("", |(_, rest)| rest);
        let allowed = self
            .allow_origins
            .iter()
            .any(|o| o == "*" || *o == normalized)
            || (self.loopback
                && (normalized.starts_with("http://") || normalized.starts_with("https://"))
                && host_part(authority).is_some_and(is_loopback_name));
        if allowed {
            Ok(Some(origin.to_string()))
        } else {
            Err(ProxyError::ForbiddenOrigin(origin.to_string()))
        }
    }

    /// Refuses a browser's cross-site request (`Sec-Fetch-Site: cross-site`)
    /// unless its `Origin` was explicitly allowed.
    pub fn check_fetch_site(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if !cross_site {
            return Ok(());
        }
        let origin = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
        let allowed =
            origin.is_some_and(|o| self.allow_origins.iter().any(|a| *a == o || a == "*"));
        if allowed {
            Ok(())
        } else {
            Err(ProxyError::ForbiddenOrigin(
                "a cross-site request (Sec-Fetch-Site)".into(),
            ))
        }
    }

    /// Whether `*` is among the allowed origins.
    pub fn allows_any_origin(&self) -> bool {
        self.allow_origins.iter().any(|o| o == "*")
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
        let mut hosts = headers.get_all(http::header::HOST).iter();
        let header = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => return Err(ProxyError::ForbiddenHost("<repeated>".into())),
            (Some(h), None) => Some(
                h.to_str()
                    .map_err(|_| ProxyError::ForbiddenHost("<not text>".into()))?,
            ),
            (None, _) => None,
        };
        let Some(host) = header.or(authority) else {
            // HTTP/1.0 may name no host at all.
            return Ok(());
        };
        let lower = host.to_ascii_lowercase();
        let name = host_part(&lower);
        let ok = self
            .allowed_hosts
            .iter()
            .any(|h| *h == lower || Some(h.as_str()) == name)
            || (self.loopback && name.is_some_and(is_loopback_name));
        if ok {
            Ok(())
        } else {
            Err(ProxyError::ForbiddenHost(host.to_string()))
        }
    }

    /// The Host check of what probes and scrapers ask (`/health`, `/ready`,
    /// `/metrics`): as [`Access::check_host`], but a Host that is an IP
    /// address passes too. Kubelet probes and Prometheus name the pod's
    /// address, and `mcp-proxy healthcheck` names 127.0.0.1, none of which
    /// an `--allowed-host` list holds; and an address cannot come from DNS
    /// rebinding, whose pages send the attacker's name.
    pub fn check_probe_host(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(), ProxyError> {
        match self.check_host(headers, authority) {
            Err(ProxyError::ForbiddenHost(host)) if names_an_address(&host) => Ok(()),
            checked => checked,
        }
    }
}

/// Whether `host[:port]` names an IP address, written as a URL writes one
/// (`10.0.0.5`, `10.0.0.5:80`, `[fd00::1]:80`).
fn names_an_address(authority: &str) -> bool {
    host_part(authority).is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok())
}

/// Whether `path` is one that probes and scrapers ask for.
pub fn is_probe_path(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
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
    fn origins_loopback_pass_others_need_allowing() {
        let a = Access::new(&["https://app.example.com".into()], &[], true);
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
        // On a public bind a loopback origin is foreign too.
        let public = Access::new(&["https://app.example.com".into()], &[], false);
        assert!(
            public
                .check_origin(&headers(&[("origin", "http://localhost:3000")]))
                .is_err()
        );
        assert!(
            public
                .check_origin(&headers(&[("origin", "https://app.example.com")]))
                .is_ok()
        );
    }

    #[test]
    fn cross_site_requests_need_an_allowed_origin() {
        let a = Access::new(&["https://app.example.com".into()], &[], true);
        assert!(a.check_fetch_site(&headers(&[])).is_ok());
        assert!(
            a.check_fetch_site(&headers(&[("sec-fetch-site", "same-origin")]))
                .is_ok()
        );
        assert!(
            a.check_fetch_site(&headers(&[("sec-fetch-site", "cross-site")]))
                .is_err()
        );
        assert!(
            a.check_fetch_site(&headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://localhost:5173")
            ]))
            .is_err()
        );
        assert!(
            a.check_fetch_site(&headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example.com")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn host_is_checked_on_loopback_binds() {
        let a = Access::new(&[], &["mcp.internal".into()], true);
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
        let public = Access::new(&[], &[], false);
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

    #[test]
    fn probes_may_name_an_address_and_nothing_else_changes() {
        let public = Access::new(&[], &["mcp.example.com".into()], false);
        for host in ["10.0.0.5:8080", "10.0.0.5", "[fd00::1]:80", "[::1]"] {
            let h = headers(&[("host", host)]);
            assert!(public.check_host(&h, None).is_err(), "{host}");
            assert!(public.check_probe_host(&h, None).is_ok(), "{host}");
        }
        for host in [
            "attacker.example",
            "10.0.0.5.nip.io",
            "10.0.0.5:x",
            "10.0.0.5:99999",
            "[fd00::1",
            "[fd00::1]x",
            "fd00::1",
            "[10.0.0.5]",
        ] {
            let h = headers(&[("host", host)]);
            assert!(public.check_probe_host(&h, None).is_err(), "{host}");
        }
        let mut two = headers(&[("host", "10.0.0.5")]);
        two.append("host", http::HeaderValue::from_static("10.0.0.6"));
        assert!(public.check_probe_host(&two, None).is_err());
        assert!(is_probe_path("/metrics") && !is_probe_path("/mcp"));
    }

    /// Regression (fuzz target `versions_and_ids`, which found
    /// `[[[127.0.0.1]26-07E`): the host of a bracketed authority was
    /// whatever stood before the first `]`, brackets trimmed, so text after
    /// it (`[::1]evil.example`), extra or unclosed brackets and a port past
    /// 65535 passed as a loopback (or allowed) host; a WHATWG URL parser
    /// reads none of them as that host.
    #[test]
    fn text_around_a_bracketed_or_loopback_host_is_no_loopback_host() {
        let a = Access::new(&[], &["mcp.internal".into()], true);
        for host in [
            "[::1]evil.example",
            "[[[127.0.0.1]26-07E",
            "[[127.0.0.1]",
            "[127.0.0.1]",
            "[::1]:8080evil",
            "[::1",
            "[mcp.internal]x",
            "localhost:99999",
            "127.0.0.1:8080:80",
            "localhost:+80",
        ] {
            assert!(
                a.check_host(&headers(&[("host", host)]), None).is_err(),
                "Host {host}"
            );
            let origin = format!("http://{host}");
            assert!(
                a.check_origin(&headers(&[("origin", &origin)])).is_err(),
                "Origin {origin}"
            );
        }
        for host in ["[::1]", "[::1]:8080", "localhost:", "mcp.internal:65535"] {
            assert!(
                a.check_host(&headers(&[("host", host)]), None).is_ok(),
                "Host {host}"
            );
        }
        assert!(
            a.check_origin(&headers(&[("origin", "http://[::1]:3000")]))
                .is_ok()
        );
    }

    /// Regression from review: a `Host` that was not text counted as no
    /// `Host` (passing), and only the first of two was read; so was the
    /// first of two `Origin`s.
    #[test]
    fn hosts_and_origins_that_are_not_text_or_repeated_are_refused() {
        let a = Access::new(&[], &[], true);
        let mut h = HeaderMap::new();
        h.insert(
            "host",
            http::HeaderValue::from_bytes(b"evil.com\xe9").unwrap(),
        );
        assert!(a.check_host(&h, Some("127.0.0.1")).is_err());
        let mut h = headers(&[("host", "127.0.0.1")]);
        h.append("host", "evil.com".parse().unwrap());
        assert!(a.check_host(&h, None).is_err());
        let mut h = headers(&[("origin", "http://127.0.0.1:3000")]);
        assert!(a.check_origin(&h).is_ok());
        h.append("origin", "https://evil.com".parse().unwrap());
        assert!(a.check_origin(&h).is_err());
    }
}
