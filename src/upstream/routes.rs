//! The routing tables of one child, and the rewriting of ids that makes
//! them work: client request ids become proxy-unique integers on the way
//! in and go back byte-exact on the way out; `_meta.progressToken` is
//! rewritten the same way (spec `basic/utilities/{cancellation,progress}`;
//! transport.md §4.4–4.6, §7.B).
//!
//! Pure data: no I/O, no locks, no tasks. Who holds the tables and when
//! they change is [`super::Upstream`]'s business.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::tasks::TaskOwners;
use super::{Port, Reply};
use crate::jsonrpc::{self, Frame};
use crate::sse::Outlet;

/// What a 2026-07-28 client needs added to a 2025-era child's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// Nothing: same era on both sides.
    None,
    /// `resultType` (every 2026-07-28 result has one).
    Complete,
    /// `resultType` plus the caching hints of list and read results.
    Cacheable,
}

/// What the multiplexer reads in an answer about tasks (shared mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskAnswer {
    /// Nothing.
    None,
    /// A task-augmented request: the answer may create a task for this session.
    Create,
    /// `tasks/list`: keep only what this session may see.
    List,
}

pub(super) struct Pending {
    pub(super) port: u64,
    pub(super) fill: Fill,
    pub(super) tasks: TaskAnswer,
    pub(super) client_id: Box<[u8]>,
    /// The client's own progress token, restored on progress notifications.
    pub(super) token: Option<Box<[u8]>>,
    /// Set when an `input_required` answer is to be turned into questions
    /// to the client and a repeated call.
    pub(super) retry: Option<Retry>,
    /// A 2026-07-28 client's call to a 2025-era child that may answer the
    /// child's server-to-client request as `input_required`.
    pub(super) parkable: bool,
    /// When `--request-timeout` ends it (its key in `Routes::timers`).
    pub(super) deadline: Option<Instant>,
    pub(super) reply: Reply,
}

/// A 2026-07-28 client's call whose 2025-era child asked the client
/// something: the client got `input_required` with a `requestState` naming
/// this entry, and its retry brings the answer.
pub(super) struct Parked {
    /// The child's request, raw id, waiting for the client's answer.
    pub(super) server_request: Box<[u8]>,
    /// The call's proxy id; it stays in `pending` with a detached reply.
    pub(super) call: u64,
    /// The child's answer to the call, if it came before the retry.
    pub(super) early: Option<(Pending, Frame)>,
}

/// What repeating a call after `input_required` needs.
pub(super) struct Retry {
    /// The call as first sent, before id and token rewriting.
    pub(super) frame: Frame,
    /// Rounds of input asked for so far.
    pub(super) rounds: u8,
}

pub(super) struct ServerRequest {
    /// The id as the child wrote it; the client's answer goes back with it.
    pub(super) raw_id: Box<[u8]>,
    pub(super) port: u64,
    pub(super) outlet: Option<Arc<Outlet>>,
    /// Set when the proxy itself asked (for a 2026-07-28 child's
    /// `input_required`): the client's answer goes here, not to the child.
    pub(super) answer: Option<oneshot::Sender<Frame>>,
}

#[derive(Default)]
pub(super) struct Routes {
    pub(super) pending: HashMap<u64, Pending>,
    /// (port, the client's id in canonical form, [`jsonrpc::id_key`]) → proxy id.
    pub(super) by_client: HashMap<(u64, Box<[u8]>), u64>,
    /// The child's requests to clients, by canonical id.
    pub(super) server_requests: HashMap<Box<[u8]>, ServerRequest>,
    /// Request deadlines, soonest first: one timer task serves them all,
    /// and an answered request leaves no timer behind.
    pub(super) timers: BTreeSet<(Instant, u64)>,
    pub(super) ports: HashMap<u64, Arc<Port>>,
    pub(super) subscriptions: HashMap<String, HashSet<u64>>,
    /// Requests in flight that belong to a client (not the proxy's own).
    pub(super) client_pending: usize,
    /// The level last sent to the child.
    pub(super) child_log_level: Option<usize>,
    /// Which session created which task (shared mode).
    pub(super) tasks: TaskOwners,
    /// Calls waiting for a 2026-07-28 client's retry, by `requestState`.
    pub(super) parked: HashMap<String, Parked>,
}

pub(super) enum Target<'a> {
    Request(&'a Pending),
    Port(&'a Arc<Port>),
    None,
}

/// The one place a message that relates to "the current request" can go:
/// the only client request in flight, else the only session, else nowhere.
pub(super) fn related_target(r: &Routes) -> Target<'_> {
    if let Some(p) = related_call(r).and_then(|id| r.pending.get(&id)) {
        return Target::Request(p);
    }
    if r.ports.len() == 1 {
        // Invariant: len() == 1.
        return Target::Port(r.ports.values().next().expect("one port"));
    }
    Target::None
}

/// The proxy id of the only client call in flight.
pub(super) fn related_call(r: &Routes) -> Option<u64> {
    if r.client_pending != 1 {
        return None;
    }
    r.pending
        .iter()
        .find(|(_, p)| p.port != 0)
        .map(|(id, _)| *id)
}

/// The key of a client's request in `Routes::by_client`: its session and
/// its id in canonical form (`1.0` and `1` are one id).
pub(super) fn client_key(port: u64, id: &[u8]) -> (u64, Box<[u8]>) {
    (port, jsonrpc::id_key(id).unwrap_or_else(|| id.into()))
}

/// `notifications/cancelled` for the proxy's request `id`.
pub(super) fn cancelled_notification(id: u64, reason: &str) -> Vec<u8> {
    // Invariant: a Value of a string and an integer serializes.
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": id, "reason": reason },
    }))
    .expect("Value serializes")
}

pub(super) fn parse_proxy_id(raw: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(raw).ok()?;
    s.trim_matches('"').parse().ok()
}

/// Replaces `params._meta.progressToken` with the proxy id; returns the
/// client's original token. Only that value is replaced, byte for byte;
/// messages without one pass as they are (a byte search first keeps tool
/// arguments from being scanned twice).
pub(super) fn rewrite_progress_token(frame: Frame, id: u64) -> (Frame, Option<Box<[u8]>>) {
    let Some(params) = frame.params() else {
        return (frame, None);
    };
    let finder = memchr::memmem::find;
    if finder(params, b"progressToken").is_none() && finder(params, b"\\u").is_none() {
        return (frame, None);
    }
    let Some(at) = frame.locate_in_params(&["_meta", "progressToken"]) else {
        return (frame, None);
    };
    let token: Box<[u8]> = frame.bytes()[at.clone()].into();
    (
        frame.with_replaced(at, id.to_string().as_bytes()),
        Some(token),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;

    #[test]
    fn progress_token_is_rewritten_and_the_original_kept() {
        let f = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"p","_meta":{"progressToken":"tok-1"}}}"#),
            true,
        )
        .unwrap();
        let (g, token) = rewrite_progress_token(f, 99);
        assert_eq!(token.as_deref(), Some(&br#""tok-1""#[..]));
        let v: Value = serde_json::from_slice(g.bytes()).unwrap();
        assert_eq!(v["params"]["_meta"]["progressToken"], 99);
        assert_eq!(v["params"]["name"], "p");
    }

    #[test]
    fn messages_without_token_pass_untouched() {
        let bytes = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"progress"}}}"#);
        let f = Frame::parse(bytes.clone(), true).unwrap();
        let (g, token) = rewrite_progress_token(f, 5);
        assert!(token.is_none());
        assert_eq!(g.bytes(), &bytes);
    }

    #[test]
    fn proxy_ids_parse_from_numbers_and_strings() {
        assert_eq!(parse_proxy_id(b"17"), Some(17));
        assert_eq!(parse_proxy_id(b"\"17\""), Some(17));
        assert_eq!(parse_proxy_id(b"\"x\""), None);
    }
}
