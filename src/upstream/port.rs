//! A session as the multiplexer sees it: its key in the routing tables,
//! what kind of client it is, its stream for messages unrelated to any
//! request, and what its client declared (capabilities, identity, log
//! level, principal).
//!
//! Does not own: the session's id, streams or lifetime
//! ([`crate::session`]), nor any routing table ([`super::routes`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::fanout::ListenFilter;
use super::{Sink, lock};
use crate::jsonrpc::Frame;

/// `_meta` key of a 2026-07-28 request's log level.
pub const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";

/// What kind of client a session is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A session-based client (2024-11-05 … 2025-11-25): can take requests.
    Session,
    /// A 2026-07-28 client: streams may carry notifications, never requests.
    Modern,
}

/// A session as the multiplexer sees it.
pub struct Port {
    /// Key in the routing tables.
    pub key: u64,
    /// Session id (for logs only).
    pub label: Arc<str>,
    /// Whether it can take server-to-client requests.
    pub kind: PortKind,
    /// The stream for messages unrelated to any request (the GET stream, or
    /// the single stream of a legacy session).
    pub(super) notify: Mutex<Option<Sink>>,
    /// Client capabilities from its `initialize` (sampling, roots, elicitation).
    pub(super) capabilities: Mutex<Value>,
    /// `clientInfo` from its `initialize`, forwarded in `_meta` to a modern child.
    pub(super) client_info: Mutex<Value>,
    /// Set on a 2026-07-28 `subscriptions/listen` port.
    pub(super) listen: Mutex<Option<ListenFilter>>,
    /// The level this session asked for with `logging/setLevel` (a
    /// 2026-07-28 port: its request, in `_meta`).
    pub(super) log_level: Mutex<Option<usize>>,
    /// The authenticated principal behind this port (`None`: anonymous);
    /// its tasks are that principal's (see [`tasks`]).
    pub(super) principal: Mutex<Option<Arc<str>>>,
    /// Its requests in flight, counted by the worker (`Routes`).
    pub(super) in_flight: AtomicUsize,
    /// A 2026-07-28 port's call that may be parked (see [`super::mrtr`]):
    /// what its `requestState` is then bound to, with the principal.
    pub(super) call: Mutex<Option<super::call_key::CallKey>>,
}

impl Port {
    /// A new port; `key` must be unique among the ports of one proxy (see
    /// [`PortKeys`]).
    pub fn new(key: u64, label: Arc<str>, kind: PortKind) -> Arc<Port> {
        Arc::new(Port {
            key,
            label,
            kind,
            notify: Mutex::new(None),
            capabilities: Mutex::new(Value::Null),
            client_info: Mutex::new(Value::Null),
            listen: Mutex::new(None),
            log_level: Mutex::new(None),
            principal: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            call: Mutex::new(None),
        })
    }

    /// Its requests in flight, as the worker last counted them.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records the authenticated principal behind this port.
    pub fn set_principal(&self, principal: Option<&str>) {
        *lock(&self.principal) = principal.map(Arc::from);
    }

    /// Who this port is, for the task table.
    pub(super) fn principal(&self) -> Option<Arc<str>> {
        lock(&self.principal).clone()
    }

    /// Sets (or replaces) the stream for unrelated messages; returns the old one.
    pub fn set_notify(&self, outlet: Option<Sink>) -> Option<Sink> {
        std::mem::replace(&mut *lock(&self.notify), outlet)
    }

    /// The stream for unrelated messages, if one is attached.
    pub fn notify_stream(&self) -> Option<Sink> {
        lock(&self.notify).clone()
    }

    /// Records the client's capabilities and identity from its initialize params.
    pub fn set_client(&self, params: &Value) {
        *lock(&self.capabilities) = params.get("capabilities").cloned().unwrap_or(Value::Null);
        *lock(&self.client_info) = params.get("clientInfo").cloned().unwrap_or(Value::Null);
    }

    /// Records the capabilities a 2026-07-28 request declares in `_meta`.
    pub(super) fn note_modern_capabilities(&self, frame: &Frame) {
        let caps = frame.meta("io.modelcontextprotocol/clientCapabilities");
        *lock(&self.capabilities) = caps.unwrap_or(Value::Null);
    }

    /// Records the least severe log level a 2026-07-28 request asked for
    /// in `_meta` (`io.modelcontextprotocol/logLevel`); none asked, none
    /// recorded, and then it is sent no log message at all.
    pub(super) fn note_modern_log_level(&self, frame: &Frame) {
        let level = frame
            .meta(LOG_LEVEL_KEY)
            .as_ref()
            .and_then(Value::as_str)
            .and_then(super::fanout::log_rank);
        *lock(&self.log_level) = level;
    }

    /// Records the call a 2026-07-28 port makes that may be parked.
    pub(super) fn note_call(&self, frame: &Frame) {
        *lock(&self.call) = Some(super::call_key::CallKey::of(frame));
    }

    /// The call [`Port::note_call`] recorded.
    pub(super) fn call(&self) -> Option<super::call_key::CallKey> {
        lock(&self.call).clone()
    }

    /// Whether the client declared what a request of `method` with
    /// `params` (raw JSON) needs: the capability, and for an elicitation
    /// its mode (`{}` alone is form mode only), for sampling with `tools`
    /// tool use (spec 2025-11-25 and 2026-07-28 `client/elicitation`:
    /// servers "MUST NOT send elicitation requests with modes that are not
    /// supported by the client"; `client/sampling`: "MUST NOT send
    /// tool-enabled sampling requests" without `sampling.tools`). Only the
    /// members it needs are read from `params`.
    pub(super) fn supports(&self, method: &str, params: Option<&[u8]>) -> bool {
        let member = |key: &str| {
            let p = params?;
            let at = crate::jsonrpc::locate(p, &[key])?;
            Some(&p[at]).filter(|raw| *raw != b"null")
        };
        let caps = lock(&self.capabilities);
        match method {
            "roots/list" => caps.get("roots").is_some(),
            "sampling/createMessage" => caps.get("sampling").is_some_and(|sampling| {
                member("tools").is_none() || sampling.get("tools").is_some()
            }),
            "elicitation/create" => caps.get("elicitation").is_some_and(|elicitation| {
                let mode = member("mode").map(serde_json::from_slice::<String>);
                match mode {
                    None => elicitation.get("form").is_some() || is_empty_object(elicitation),
                    Some(Ok(mode)) => {
                        elicitation.get(&mode).is_some()
                            || (mode == "form" && is_empty_object(elicitation))
                    }
                    Some(Err(_)) => false,
                }
            }),
            _ => true,
        }
    }

    pub(super) fn send_unrelated(&self, bytes: &[u8]) -> bool {
        let listen = lock(&self.listen).clone();
        let rewritten;
        let bytes = match listen {
            None => bytes,
            Some(l) => match l.admit(bytes) {
                Some(b) => {
                    rewritten = b;
                    &rewritten
                }
                None => return false,
            },
        };
        match lock(&self.notify).as_ref() {
            Some(o) if !o.is_finished() => {
                o.send(bytes);
                true
            }
            _ => false,
        }
    }

    /// Whether this is a session that can own tasks (not a stateless or
    /// 2026-07-28 request, which has no identity between requests).
    pub(super) fn has_identity(&self) -> bool {
        self.kind == PortKind::Session && &*self.label != STATELESS_LABEL
    }

    /// Makes this port a 2026-07-28 `subscriptions/listen` stream: only what
    /// `filter` accepts reaches it, tagged with the subscription id.
    pub fn set_listen(&self, filter: ListenFilter) {
        *lock(&self.listen) = Some(filter);
    }
}

/// Hands out port keys, unique within one proxy (it lives in the proxy's
/// shared state, not in a static, so in-process proxies share nothing).
#[derive(Debug)]
pub struct PortKeys(AtomicU64);

impl Default for PortKeys {
    fn default() -> Self {
        // 0 is the proxy's own requests.
        PortKeys(AtomicU64::new(1))
    }
}

impl PortKeys {
    /// The next key.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(serde_json::Map::is_empty)
}

/// Label of the port of a request that belongs to no session.
pub const STATELESS_LABEL: &str = "stateless";

#[cfg(test)]
mod tests {
    use super::super::sink::ReplySink;
    use super::super::sink::testing::Recorder;
    use super::*;

    #[test]
    fn unrelated_messages_reach_the_open_stream_only() {
        let port = Port::new(1, "s".into(), PortKind::Session);
        assert!(!port.send_unrelated(b"{}"), "no stream attached");
        let sink = Arc::new(Recorder::default());
        port.set_notify(Some(sink.clone()));
        assert!(port.send_unrelated(br#"{"a":1}"#));
        assert_eq!(*sink.sent.lock().unwrap(), [br#"{"a":1}"#.to_vec()]);
        sink.finish();
        assert!(
            !port.send_unrelated(b"{}"),
            "a finished stream takes nothing"
        );
    }

    #[test]
    fn a_listen_stream_takes_only_what_it_asked_for() {
        let port = Port::new(1, "l".into(), PortKind::Modern);
        let sink = Arc::new(Recorder::default());
        port.set_notify(Some(sink.clone()));
        port.set_listen(ListenFilter {
            id: b"7".to_vec().into(),
            prompts: true,
            ..ListenFilter::default()
        });
        let tools = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        let prompts = br#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#;
        assert!(!port.send_unrelated(tools));
        assert!(port.send_unrelated(prompts));
        let sent = sink.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let v: Value = serde_json::from_slice(&sent[0]).unwrap();
        assert_eq!(v["params"]["_meta"][super::super::SUBSCRIPTION_ID_KEY], 7);
    }

    #[test]
    fn capabilities_decide_which_requests_a_client_can_take() {
        let port = Port::new(1, "s".into(), PortKind::Session);
        port.set_client(&serde_json::json!({"capabilities": {"roots": {}}}));
        assert!(port.supports("roots/list", None));
        assert!(!port.supports("sampling/createMessage", None));
        assert!(!port.supports("elicitation/create", None));
        assert!(port.supports("ping", None));
    }

    #[test]
    fn an_elicitation_needs_its_mode_and_sampling_with_tools_tool_use() {
        let port = |caps: Value| {
            let p = Port::new(1, "s".into(), PortKind::Session);
            p.set_client(&serde_json::json!({ "capabilities": caps }));
            p
        };
        let url = Some(&br#"{"mode":"url","url":"https://e","message":"m"}"#[..]);
        let form = Some(&br#"{"mode":"form","message":"m"}"#[..]);
        let unsaid = Some(&br#"{"message":"m"}"#[..]);
        let odd = Some(&br#"{"mode":7}"#[..]);
        let empty = port(serde_json::json!({"elicitation": {}}));
        assert!(empty.supports("elicitation/create", form));
        assert!(empty.supports("elicitation/create", unsaid));
        assert!(!empty.supports("elicitation/create", url));
        let url_only = port(serde_json::json!({"elicitation": {"url": {}}}));
        assert!(url_only.supports("elicitation/create", url));
        assert!(!url_only.supports("elicitation/create", form));
        assert!(!url_only.supports("elicitation/create", unsaid));
        assert!(!url_only.supports("elicitation/create", odd));
        let both = port(serde_json::json!({"elicitation": {"form": {}, "url": {}}}));
        assert!(
            both.supports("elicitation/create", url) && both.supports("elicitation/create", form)
        );
        let tools = Some(&br#"{"messages":[],"maxTokens":1,"tools":[]}"#[..]);
        let no_tools = Some(&br#"{"messages":[],"maxTokens":1,"tools":null}"#[..]);
        let sampling = port(serde_json::json!({"sampling": {}}));
        assert!(!sampling.supports("sampling/createMessage", tools));
        assert!(sampling.supports("sampling/createMessage", no_tools));
        let tool_use = port(serde_json::json!({"sampling": {"tools": {}}}));
        assert!(tool_use.supports("sampling/createMessage", tools));
    }
}
