//! `mcp-proxy healthcheck [--url URL] [--timeout DURATION]`: probes the
//! proxy's `/health` and exits 0 (200) or 1 (anything else), so a container
//! image needs no curl or shell for its `HEALTHCHECK`.
//!
//! Without `--url` it probes the address the proxy itself would listen on,
//! from the same environment (`MCP_PROXY_HOST`, `MCP_PROXY_PORT`): a
//! wildcard host becomes loopback. Plain HTTP/1.1 over a std socket, one
//! request, bounded in time; no TLS (the probe runs beside the proxy).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::{DEFAULT_HOST, DEFAULT_PORT, parse_duration};

/// The whole probe's deadline unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the subcommand was asked.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    /// `http://host:port/path`.
    pub url: String,
    /// Deadline for connect, write and read together.
    pub timeout: Duration,
}

impl Probe {
    /// Parses the subcommand's arguments (after `healthcheck`).
    pub fn from_args(
        args: &[String],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Probe, String> {
        let mut url = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--url" => url = Some(value()?),
                "--timeout" => {
                    let v = value()?;
                    timeout = parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                        format!("--timeout: expected a duration such as 3s, got {v:?}")
                    })?;
                }
                other => {
                    return Err(format!(
                        "healthcheck: unknown argument {other:?} (usage: mcp-proxy healthcheck [--url URL] [--timeout DURATION])"
                    ));
                }
            }
        }
        let url = match url {
            Some(u) => u,
            None => {
                let host = lookup("MCP_PROXY_HOST").unwrap_or_else(|| DEFAULT_HOST.into());
                let host = match host.trim() {
                    "0.0.0.0" | "" => "127.0.0.1".to_string(),
                    "::" | "[::]" => "[::1]".to_string(),
                    h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                    h => h.to_string(),
                };
                let port = match lookup("MCP_PROXY_PORT") {
                    None => DEFAULT_PORT,
                    Some(p) => p.trim().parse().map_err(|_| {
                        format!("MCP_PROXY_PORT: expected a port number, got {p:?}")
                    })?,
                };
                format!("http://{host}:{port}/health")
            }
        };
        Ok(Probe { url, timeout })
    }

    /// Runs the probe: `Ok(())` on 200, otherwise what went wrong.
    pub fn run(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url: only http:// URLs are supported, got {:?}", self.url))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/health"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {authority}"))?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let mut s = TcpStream::connect_timeout(&addr, left())
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_write_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mcp-proxy-healthcheck\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("cannot send the probe: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            s.set_read_timeout(Some(left()))
                .map_err(|e| e.to_string())?;
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("no answer from {addr}: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("");
        let status = line.split_whitespace().nth(1).unwrap_or("");
        if line.starts_with("HTTP/1.") && status == "200" {
            Ok(())
        } else if line.is_empty() {
            Err(format!("{} answered nothing", self.url))
        } else {
            Err(format!("{} answered {line:?}", self.url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_url_follows_the_proxys_environment() {
        let p = Probe::from_args(&[], &|_| None).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:8080/health");
        let env = |k: &str| match k {
            "MCP_PROXY_PORT" => Some("9100".to_string()),
            "MCP_PROXY_HOST" => Some("0.0.0.0".to_string()),
            _ => None,
        };
        let p = Probe::from_args(&[], &env).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:9100/health");
        let p = Probe::from_args(&args(&["--url", "http://h:1/x", "--timeout=1s"]), &env).unwrap();
        assert_eq!(p.url, "http://h:1/x");
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert!(Probe::from_args(&args(&["--bogus"]), &env).is_err());
        assert!(Probe::from_args(&args(&["--url"]), &env).is_err());
    }

    #[test]
    fn a_closed_port_fails_the_probe() {
        // Bind, learn the port, close: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Probe {
            url: format!("http://127.0.0.1:{port}/health"),
            timeout: Duration::from_secs(2),
        };
        assert!(p.run().is_err());
    }
}
