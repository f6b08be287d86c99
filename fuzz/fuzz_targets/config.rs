//! The configuration on arbitrary input: flags and `MCP_PROXY_*`
//! variables (`Config::from_args`, `config_file::load_bytes` with a
//! `--config` file's TOML), and the duration and size parsers. Oracles:
//! - never a panic: a bad value is a `ConfigError`, which the binary
//!   prints as one line (`error: …`) and exits 64 with, so the message is
//!   one line;
//! - `parse_duration` accepts only `<decimal><unit>` (`ms`, `s`, `m`, `h`,
//!   none for seconds) and never more than a year; `parse_bytes` only
//!   `<digits>[K|M|G|B]`, and its value is the number times the unit.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcp_sidecar::config::{Config, parse_bytes, parse_duration};
use mcp_sidecar::config_file;

/// Every option of `Args` (switches in `SWITCHES`).
const FLAGS: &[&str] = &[
    "host",
    "port",
    "path",
    "sse-path",
    "message-path",
    "env",
    "env-file",
    "cwd",
    "api-key",
    "api-key-file",
    "jwt-jwks-url",
    "jwt-secret-file",
    "jwt-issuer",
    "jwt-audience",
    "jwt-header",
    "forward-auth-url",
    "forward-auth-principal",
    "forward-auth-ttl",
    "auth-server",
    "public-url",
    "required-scope",
    "auth-failure-limit",
    "trusted-proxy",
    "max-sessions-per-principal",
    "audit-log",
    "audit-queue-bytes",
    "log-queue-bytes",
    "allow-origin",
    "allowed-host",
    "max-body-bytes",
    "max-line-bytes",
    "max-sessions",
    "session-idle-timeout",
    "request-timeout",
    "keep-alive",
    "shutdown-grace",
    "max-queue",
    "max-queue-bytes",
    "max-child-queue-bytes",
    "replay-events",
    "replay-bytes",
    "max-tasks",
    "replay-total-bytes",
    "replay-linger",
    "max-server-requests",
    "max-server-requests-per-session",
    "max-batch",
    "max-in-flight",
    "upstream-protocol",
    "child-stdout",
    "probe-timeout",
    "restart-max-backoff",
    "oneshot-idle-timeout",
    "header-read-timeout",
    "body-read-timeout",
    "connection-idle-timeout",
    "max-connections",
    "worker-threads",
    "child-log-rate",
    "replica-id",
    "log-format",
    "log-level",
    "config-poll",
    "server",
    "store-timeout",
];
const SWITCHES: &[&str] = &[
    "no-inherit-env",
    "allow-unauthenticated",
    "metrics-auth",
    "shared",
    "stateless",
    "exit-on-child-exit",
];

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn one_line(e: &impl std::fmt::Display) {
    let text = format!("error: {e}");
    assert!(!text.contains(['\n', '\r']), "a multi-line error: {text:?}");
}

fuzz_target!(
    |input: (Vec<(u8, String)>, Vec<(u8, String)>, Option<String>, String)| {
        let (flags, env, toml, word) = input;

        // The parsers alone.
        if let Some(d) = parse_duration(&word) {
            assert!(d <= YEAR, "{word:?} is {d:?}");
            let t = word.trim();
            let num = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &t[num.len()..];
            assert!(
                matches!(unit, "" | "ms" | "s" | "m" | "h")
                    && !num.is_empty()
                    && num.bytes().all(|c| c.is_ascii_digit() || c == b'.'),
                "{word:?} read as {d:?}"
            );
        }
        if let Some(n) = parse_bytes(&word) {
            let t = word.trim();
            let (num, mult) = match t.as_bytes().last() {
                Some(b'k' | b'K') => (&t[..t.len() - 1], 1usize << 10),
                Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
                Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
                _ => (t.trim_end_matches(['b', 'B']), 1),
            };
            let digits = num.trim();
            let digits = digits.strip_prefix('+').unwrap_or(digits);
            assert!(
                !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()),
                "{word:?} read as {n}"
            );
            assert_eq!(
                digits
                    .parse::<usize>()
                    .ok()
                    .and_then(|d| d.checked_mul(mult)),
                Some(n)
            );
        }

        // Flags and variables, with or without a --config file.
        let mut argv: Vec<String> = Vec::new();
        for (i, v) in &flags {
            let i = usize::from(*i);
            if i < FLAGS.len() {
                argv.push(format!("--{}", FLAGS[i]));
                argv.push(v.clone());
            } else {
                argv.push(format!(
                    "--{}",
                    SWITCHES[(i - FLAGS.len()) % SWITCHES.len()]
                ));
            }
        }
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(i, v)| {
                let all = FLAGS.iter().chain(SWITCHES).collect::<Vec<_>>();
                let name = all[usize::from(*i) % all.len()];
                (
                    format!("MCP_PROXY_{}", name.to_ascii_uppercase().replace('-', "_")),
                    v.clone(),
                )
            })
            .collect();
        let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match &toml {
            None => {
                argv.push("--".into());
                argv.push("server".into());
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let Ok(args) = mcp_sidecar::fuzzing::args(&argv) else {
                    return;
                };
                if let Err(e) = Config::from_args(args, &lookup) {
                    one_line(&e);
                }
            }
            Some(text) => {
                argv.push("--config".into());
                argv.push("fuzz.toml".into());
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let Ok(args) = mcp_sidecar::fuzzing::args(&argv) else {
                    return;
                };
                if let Err(e) = config_file::load_bytes(args, &lookup, text.clone().into_bytes()) {
                    one_line(&e);
                }
            }
        }
    }
);
