//! Protocol revisions: which exist, which era each belongs to, and what the
//! child speaks. The one place version lists live; the front-ends, the
//! multiplexer and the configuration read them from here.
//!
//! Revisions are dates (`YYYY-MM-DD`), so known ones compare as strings;
//! an unknown value is never placed in an era by comparison (a future
//! `2025-12-01` is not a 2026-07-28 request).

/// Revisions of the session era, oldest first: `initialize`, a session,
/// server-to-client requests (spec `basic/lifecycle` of each).
pub const SESSION_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest session revision: what the proxy asks a 2025-era child for
/// when it initializes the child itself, and what a session-era client of a
/// 2026-07-28 child is answered in when it asked for no known revision.
pub const LATEST_SESSION_VERSION: &str = "2025-11-25";

/// The stateless revisions (no `initialize`, per-request `_meta`).
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// The newest revision; what a 2026-07-28 child is spoken to in.
pub const MODERN_VERSION: &str = "2026-07-28";

/// The only revision in which a POST may carry a JSON-RPC batch.
pub const BATCH_VERSION: &str = "2025-03-26";

/// Whether `v` is a session-era revision this proxy serves.
pub fn is_session(v: &str) -> bool {
    SESSION_VERSIONS.contains(&v)
}

/// Whether `v` is a stateless revision this proxy serves.
pub fn is_modern(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// Whether `v` has a revision's shape, `YYYY-MM-DD`: only such values
/// compare as strings by their age.
pub fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Whether `v` is a revision (a date) of `since` or later; a value that is
/// no date (`draft`) is none, however it sorts.
pub fn at_least(v: &str, since: &str) -> bool {
    is_date(v) && v >= since
}

/// Which protocol generation the child speaks (`--upstream-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// Find out: `initialize` first for a child of session-era clients, a
    /// `server/discover` probe first for the child of 2026-07-28 clients,
    /// the other when the first fails.
    Auto,
    /// A 2024-11-05 … 2025-11-25 server: `initialize` handshake.
    Legacy,
    /// A 2026-07-28 server: `server/discover`, per-request `_meta`.
    Modern,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_are_decided_by_membership_not_by_order() {
        assert!(is_session("2025-03-26"));
        assert!(is_modern("2026-07-28"));
        assert!(!is_session("2025-12-01") && !is_modern("2025-12-01"));
        assert!(!is_modern("2099-01-01"));
    }

    #[test]
    fn only_dates_compare_by_age() {
        assert!(at_least("2025-11-25", "2025-11-25"));
        assert!(at_least("2026-07-28", "2025-11-25"));
        assert!(!at_least("2025-06-18", "2025-11-25"));
        for odd in [
            "draft",
            "DRAFT-2026-v1",
            "2025-11-25x",
            "9999-99-9",
            "2025/11/25",
            "",
        ] {
            assert!(!at_least(odd, "2025-11-25"), "{odd}");
        }
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
