//! The child's one handshake and era detection: `initialize` for a
//! 2025-era child, `server/discover` for a 2026-07-28 one, with `auto`
//! finding out which (spec 2026-07-28 `basic/versioning`); the cached
//! result replayed to later sessions in the version each asked for; and
//! the translation of a DiscoverResult into an InitializeResult for a
//! session-era client of a 2026-07-28 child.
//!
//! The whole handshake, era probe and fallback included, fits in
//! `--request-timeout` (else [`DEFAULT_HANDSHAKE_TIMEOUT`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Health, INTERNAL_TIMEOUT, LOG_LEVELS, Port, Reply, Upstream, UpstreamError, lock};
use crate::jsonrpc::{self, Frame, code};
use crate::version::{
    self, LATEST_SESSION_VERSION, MODERN_VERSION, SESSION_VERSIONS, UpstreamProtocol,
};

/// How long the handshake (`initialize`, the era probe and its fallback,
/// all together) may take when `--request-timeout` is not set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// What children of this proxy's command refused, shared by every upstream
/// of one proxy, so that later children skip a handshake that cannot work
/// (the spec lets a client remember the era per server configuration, and
/// re-probe when the assumption fails).
#[derive(Debug, Default)]
pub struct EraHints {
    /// A child refused `initialize` and answered `server/discover`: 2026-07-28 only.
    pub(super) refuses_initialize: AtomicBool,
    /// A child refused the `server/discover` probe or did not answer it: 2025-era only.
    pub(super) refuses_discover: AtomicBool,
}

/// How a handshake failed, kept so that the sessions that waited for it
/// get the same answer.
#[derive(Debug, Clone)]
pub(super) enum HandshakeFailure {
    /// The child answered with this JSON-RPC error object.
    Rpc(Bytes),
    /// No answer within the budget.
    Timeout(Duration),
    /// Anything else, as its message.
    Other(String),
}

impl HandshakeFailure {
    pub(super) fn of(e: &UpstreamError) -> HandshakeFailure {
        match e {
            UpstreamError::Rpc { error, .. } => HandshakeFailure::Rpc(error.clone()),
            UpstreamError::HandshakeTimeout(d) => HandshakeFailure::Timeout(*d),
            other => HandshakeFailure::Other(other.to_string()),
        }
    }

    /// The answer to the client's `initialize` with id `client_id`.
    pub(super) fn response(&self, client_id: &[u8]) -> Bytes {
        match self {
            HandshakeFailure::Rpc(error) => jsonrpc::envelope(client_id, "error", error),
            other => jsonrpc::error_response(
                Some(client_id),
                code::SERVER_ERROR,
                &other.error().to_string(),
                None,
            ),
        }
    }

    /// The error, for the caller.
    pub(super) fn error(&self) -> UpstreamError {
        match self {
            HandshakeFailure::Rpc(error) => UpstreamError::Rpc {
                method: "initialize",
                error: error.clone(),
            },
            HandshakeFailure::Timeout(d) => UpstreamError::HandshakeTimeout(*d),
            HandshakeFailure::Other(reason) => UpstreamError::Internal {
                method: "initialize",
                reason: reason.clone(),
            },
        }
    }
}

impl EraHints {
    /// Whether the handshake of a child speaking `era` starts with the
    /// `server/discover` probe: only when the era is to be found out
    /// (`auto`), and then when the child serves 2026-07-28 clients
    /// (`prefer_discover`) unless an earlier child refused the probe, or
    /// when an earlier child refused `initialize`.
    pub(super) fn probe_first(&self, era: UpstreamProtocol, prefer_discover: bool) -> bool {
        era == UpstreamProtocol::Auto
            && if prefer_discover {
                !self.refuses_discover.load(Ordering::Relaxed)
            } else {
                self.refuses_initialize.load(Ordering::Relaxed)
            }
    }
}

/// The child's one handshake: the parameters it was made with (replayed
/// after a restart) and its answer, an InitializeResult for a legacy child
/// or a DiscoverResult for a modern one.
#[derive(Clone)]
pub(super) struct InitCache {
    pub(super) params: Bytes,
    pub(super) result: Bytes,
}

/// A cached InitializeResult for a later session: in the version that
/// session asked for when the child was initialized at that version or a
/// newer one (servers keep supporting older revisions, and the proxy
/// handles the transport differences per session); otherwise unchanged,
/// and the client decides whether it can live with the child's version.
pub(super) fn answer_in_version(result: &Bytes, requested: Option<&str>) -> Bytes {
    let Some(requested) = requested.filter(|v| SESSION_VERSIONS.contains(v)) else {
        return result.clone();
    };
    // Replaced where it lies, the rest as the child wrote it: a member
    // no tree can hold (`1e400`) must not keep the version unchanged.
    let Some(at) = jsonrpc::locate(result, &["protocolVersion"]) else {
        return result.clone();
    };
    match serde_json::from_slice::<String>(&result[at.clone()]) {
        Ok(negotiated) if negotiated != requested && version::at_least(&negotiated, requested) => {
            let mut out = Vec::with_capacity(result.len());
            out.extend_from_slice(&result[..at.start]);
            // Invariant: a str serializes.
            serde_json::to_writer(&mut out, requested).expect("a str serializes");
            out.extend_from_slice(&result[at.end..]);
            Bytes::from(out)
        }
        _ => result.clone(),
    }
}

/// An InitializeResult for a session-era client of a modern child, built
/// from the child's DiscoverResult: the client's version if it is a session
/// revision, else the newest session revision. Each member is read on
/// its own, and each capability (see [`jsonrpc::readable_members`]).
pub(super) fn initialize_from_discover(discover: &[u8], requested: Option<&str>) -> Value {
    let version = requested
        .filter(|v| SESSION_VERSIONS.contains(v))
        .unwrap_or(LATEST_SESSION_VERSION);
    let server_info = jsonrpc::readable_member(discover, &["_meta", super::SERVER_INFO_KEY])
        .unwrap_or_else(|| serde_json::json!({ "name": "mcp-server", "version": "unknown" }));
    let capabilities = jsonrpc::readable_members(discover, &["capabilities"]).unwrap_or_default();
    let mut r = serde_json::json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": server_info,
    });
    if let Some(i) = jsonrpc::readable_member(discover, &["instructions"]) {
        r["instructions"] = i;
    }
    r
}

/// The `initialize` params of a child the proxy is the one client of (a
/// shared child, `--shared` and `--stateless`, or the child of 2026-07-28
/// clients): what the proxy can relay, whichever client comes first, and
/// the proxy's own identity. Roots, sampling with tool use, elicitation
/// in form and URL mode (a session is asked on its stream, a 2026-07-28
/// client with `input_required`, also in `--stateless` mode, whose
/// session-era POSTs alone could carry none); roots with `listChanged`
/// only when `sessions` (`--shared`) pass on their
/// `notifications/roots/list_changed` and can be asked the `roots/list`
/// that follows (a 2026-07-28 client sends no notification, and a
/// `--stateless` POST's has no session behind it). Each of the
/// child's requests is then checked against what the client it goes to
/// declared, and refused at once when that client did not (see
/// `Port::supports`). `version` is the revision the first client asked
/// for.
pub fn proxy_initialize_params(version: &str, sessions: bool) -> Value {
    let roots = if sessions {
        serde_json::json!({ "listChanged": true })
    } else {
        serde_json::json!({})
    };
    serde_json::json!({
        "protocolVersion": version,
        "capabilities": {
            "roots": roots,
            "sampling": { "tools": {} },
            "elicitation": { "form": {}, "url": {} },
        },
        "clientInfo": { "name": "mcp-proxy", "version": env!("CARGO_PKG_VERSION") },
    })
}

/// `params` holding only the `_meta` a 2026-07-28 request needs.
pub(super) fn modern_meta_params(capabilities: &Value, client_info: &Value) -> Vec<u8> {
    let mut meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": if capabilities.is_null() { serde_json::json!({}) } else { capabilities.clone() },
    });
    if !client_info.is_null() {
        meta["io.modelcontextprotocol/clientInfo"] = client_info.clone();
    }
    serde_json::to_vec(&serde_json::json!({ "_meta": meta })).expect("Value serializes")
}

/// Adds the 2026-07-28 per-request `_meta` (version, client capabilities
/// and info, log level) to a session-era request, keeping what it has.
pub(super) fn inject_modern_meta(frame: Frame, port: &Port) -> Frame {
    let mut params: serde_json::Map<String, Value> = frame
        .params()
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or_default();
    let meta = params
        .entry("_meta")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("io.modelcontextprotocol/protocolVersion")
            .or_insert_with(|| MODERN_VERSION.into());
        let caps = lock(&port.capabilities).clone();
        meta.entry("io.modelcontextprotocol/clientCapabilities")
            .or_insert_with(|| {
                if caps.is_null() {
                    serde_json::json!({})
                } else {
                    caps
                }
            });
        let info = lock(&port.client_info).clone();
        if !info.is_null() {
            meta.entry("io.modelcontextprotocol/clientInfo")
                .or_insert(info);
        }
        if let Some(level) = *lock(&port.log_level) {
            meta.entry("io.modelcontextprotocol/logLevel")
                .or_insert_with(|| LOG_LEVELS[level].into());
        }
    }
    frame.with_params(&serde_json::to_vec(&params).expect("Value serializes"))
}

impl Upstream {
    /// Every `initialize` of every session lands here. The first one
    /// performs the child's one handshake (with that client's parameters);
    /// later ones are answered from the cached result with the caller's id.
    /// A modern child has no handshake: its `server/discover` result is
    /// turned into an InitializeResult for the version the client asked for.
    pub(super) async fn initialize(
        self: &Arc<Self>,
        frame: &Frame,
        client_id: &[u8],
        reply: Reply,
        budget: Duration,
    ) -> Result<(), UpstreamError> {
        // The whole handshake, waiting for another session's handshake in
        // progress included, fits in the caller's budget.
        let deadline = Instant::now() + budget;
        let seen = self.init_attempts.load(Ordering::SeqCst);
        let init = tokio::time::timeout_at(deadline, self.init.lock()).await;
        let mut init = match init {
            Ok(guard) => guard,
            Err(_) => {
                let e = UpstreamError::HandshakeTimeout(budget);
                reply.respond(&jsonrpc::error_response(
                    Some(client_id),
                    code::SERVER_ERROR,
                    &e.to_string(),
                    None,
                ));
                return Err(e);
            }
        };
        if init.is_none() {
            // A handshake ended while this session waited for it, and
            // failed: its outcome is this session's too, rather than a
            // second handshake behind the first.
            let shared = (self.init_attempts.load(Ordering::SeqCst) != seen)
                .then(|| lock(&self.init_failure).clone())
                .flatten();
            if let Some(failure) = shared {
                reply.respond(&failure.response(client_id));
                return Err(failure.error());
            }
            let params = if self.opts.shared {
                // Not the first client's capabilities and identity: they
                // would be every later session's, which may declare more
                // (the child would never ask it) or less. The shared child
                // of per-session mode serves 2026-07-28 clients only.
                let version = frame
                    .params_value()
                    .and_then(|p| p.get("protocolVersion")?.as_str().map(String::from))
                    .unwrap_or_else(|| LATEST_SESSION_VERSION.to_string());
                Bytes::from(
                    serde_json::to_vec(&proxy_initialize_params(&version, self.opts.sessions))
                        .expect("Value serializes"),
                )
            } else {
                Bytes::copy_from_slice(frame.params().unwrap_or(b"{}"))
            };
            let outcome =
                match tokio::time::timeout_at(deadline, self.handshake(&params, deadline)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(UpstreamError::HandshakeTimeout(budget)),
                };
            self.init_attempts.fetch_add(1, Ordering::SeqCst);
            match outcome {
                Ok(cache) => {
                    if self.era() != UpstreamProtocol::Modern {
                        let stamp = super::Stamp::of_initialize(
                            &cache.result,
                            self.opts.max_server_info_bytes,
                        )
                        .map(Arc::new);
                        let _ = self.stamp.set(stamp);
                    }
                    *init = Some(cache);
                    // A handshake that works ends a crash loop.
                    self.health.send_if_modified(|h| {
                        let looping = *h == Health::CrashLooping;
                        if looping {
                            *h = Health::Ready;
                        }
                        looping
                    });
                }
                Err(e) => {
                    let failure = HandshakeFailure::of(&e);
                    reply.respond(&failure.response(client_id));
                    *lock(&self.init_failure) = Some(failure);
                    return Err(e);
                }
            }
        }
        // Invariant: set just above or earlier.
        let cache = init.as_ref().expect("initialized");
        let requested = frame.params_value().and_then(|p| {
            p.get("protocolVersion")
                .and_then(Value::as_str)
                .map(String::from)
        });
        let result = match self.era() {
            UpstreamProtocol::Modern => Bytes::from(
                serde_json::to_vec(&initialize_from_discover(
                    &cache.result,
                    requested.as_deref(),
                ))
                .expect("Value serializes"),
            ),
            _ => answer_in_version(&cache.result, requested.as_deref()),
        };
        reply.respond(&jsonrpc::envelope(client_id, "result", &result));
        Ok(())
    }

    /// The child's handshake: `server/discover` (modern) or `initialize`
    /// (legacy). With `auto`, the era that suits the child's clients is
    /// tried first: `initialize` for a child of session-era clients (a
    /// dual-era child then keeps its session semantics, with no
    /// translation), a `server/discover` probe for the child of
    /// 2026-07-28 clients (spec 2026-07-28 `basic/versioning`, stdio: an
    /// error, or silence for `probe_timeout`, means a 2025-era child). When
    /// the first handshake fails, the other is tried. A handshake that an
    /// earlier child of the same command refused does not go first.
    pub(super) async fn handshake(
        self: &Arc<Self>,
        params: &Bytes,
        deadline: Instant,
    ) -> Result<InitCache, UpstreamError> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let era = self.era();
        let probe = modern_meta_params(&Value::Null, &Value::Null);
        let cache = |result| InitCache {
            params: params.clone(),
            result,
        };
        if era == UpstreamProtocol::Modern {
            return Ok(cache(
                self.call_within("server/discover", &probe, left()).await?,
            ));
        }
        let hints = &self.opts.era_hints;
        if hints.probe_first(era, self.opts.discover_first) {
            match self
                .call_within(
                    "server/discover",
                    &probe,
                    self.opts.probe_timeout.min(left()),
                )
                .await
            {
                Ok(result) => {
                    self.learn(UpstreamProtocol::Modern);
                    return Ok(cache(result));
                }
                Err(e) => {
                    debug!(error = %e, "no answer to the server/discover probe: trying initialize");
                    hints.refuses_discover.store(true, Ordering::Relaxed);
                }
            }
        }
        match self.call_within("initialize", params, left()).await {
            Ok(result) => {
                hints.refuses_initialize.store(false, Ordering::Relaxed);
                self.learn(UpstreamProtocol::Legacy);
                self.send_initialized().await;
                Ok(cache(result))
            }
            // Refused, or no usable answer: the child may be modern (asked
            // even after a failed probe, which a slow-starting child misses).
            Err(e @ (UpstreamError::Rpc { .. } | UpstreamError::Internal { .. }))
                if era == UpstreamProtocol::Auto =>
            {
                match self.call_within("server/discover", &probe, left()).await {
                    Ok(result) => {
                        hints.refuses_initialize.store(true, Ordering::Relaxed);
                        hints.refuses_discover.store(false, Ordering::Relaxed);
                        self.learn(UpstreamProtocol::Modern);
                        Ok(cache(result))
                    }
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Waits (up to the internal timeout) while a restarted shared child is
    /// being re-initialized; after that the request goes, or fails, as is.
    pub(super) async fn wait_until_restarted(&self) {
        let mut health = self.watch_health();
        let _ = tokio::time::timeout(
            INTERNAL_TIMEOUT.min(self.write_timeout()),
            health.wait_for(|h| *h != Health::Starting),
        )
        .await;
    }

    /// Records what the child speaks.
    pub(super) fn learn(&self, era: UpstreamProtocol) {
        *lock(&self.era) = era;
        if era == UpstreamProtocol::Modern {
            info!("the MCP server answered server/discover: speaking 2026-07-28 to it");
        }
    }

    /// The cached handshake result (InitializeResult or, for a modern child,
    /// DiscoverResult), if the handshake happened.
    pub async fn cached_initialize(&self) -> Option<Bytes> {
        self.init.lock().await.as_ref().map(|c| c.result.clone())
    }

    /// A 2025-era child's identity for the `_meta` of 2026-07-28 results
    /// (see [`super::stamp`]), once its handshake is done.
    pub fn stamp(&self) -> Option<Arc<super::Stamp>> {
        self.stamp.get().cloned().flatten()
    }

    pub(super) async fn send_initialized(&self) {
        if !self.initialized_sent.swap(true, Ordering::SeqCst) {
            let n = Frame::from_value(
                &serde_json::json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            );
            let _ = self.write(&n).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::PortKind;

    #[test]
    fn a_shared_handshake_failure_answers_each_waiter_with_its_own_id() {
        let rpc = HandshakeFailure::of(&UpstreamError::Rpc {
            method: "initialize",
            error: Bytes::from_static(br#"{"code":-32603,"message":"no"}"#),
        });
        let v: Value = serde_json::from_slice(&rpc.response(b"\"a\"")).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], -32603);
        assert!(matches!(rpc.error(), UpstreamError::Rpc { .. }));
        let late = HandshakeFailure::of(&UpstreamError::HandshakeTimeout(Duration::from_secs(3)));
        let v: Value = serde_json::from_slice(&late.response(b"7")).unwrap();
        assert_eq!(v["id"], 7);
        assert!(v["error"]["message"].as_str().unwrap().contains("3000 ms"));
        assert!(matches!(late.error(), UpstreamError::HandshakeTimeout(_)));
    }

    #[test]
    fn the_probe_goes_first_only_in_auto_and_not_after_a_refusal() {
        let hints = EraHints::default();
        assert!(!hints.probe_first(UpstreamProtocol::Legacy, true));
        assert!(!hints.probe_first(UpstreamProtocol::Modern, true));
        assert!(hints.probe_first(UpstreamProtocol::Auto, true));
        assert!(!hints.probe_first(UpstreamProtocol::Auto, false));
        hints.refuses_discover.store(true, Ordering::Relaxed);
        assert!(!hints.probe_first(UpstreamProtocol::Auto, true));
        hints.refuses_initialize.store(true, Ordering::Relaxed);
        assert!(hints.probe_first(UpstreamProtocol::Auto, false));
    }

    #[test]
    fn a_cached_result_is_answered_in_an_older_requested_version_only() {
        let result = Bytes::from_static(br#"{"protocolVersion":"2025-06-18","capabilities":{}}"#);
        let older = answer_in_version(&result, Some("2025-03-26"));
        let v: Value = serde_json::from_slice(&older).unwrap();
        assert_eq!(v["protocolVersion"], "2025-03-26");
        assert_eq!(answer_in_version(&result, Some("2025-11-25")), result);
        assert_eq!(answer_in_version(&result, Some("1999-01-01")), result);
        assert_eq!(answer_in_version(&result, None), result);
    }

    /// Regression (review): a cached InitializeResult that serde_json
    /// could not build into a tree (`1e400`, a lone surrogate, nesting
    /// past its limit, anywhere in it) was answered in the child's
    /// version, not the older one a later session asked for, which that
    /// client may refuse. The version is now replaced where it lies, and
    /// the rest goes as the child wrote it.
    #[test]
    fn a_cached_result_no_tree_can_hold_is_answered_in_the_older_version_all_the_same() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            let written = format!(
                r#"{{"protocolVersion":"2025-06-18","capabilities":{{"experimental":{{"x":{odd}}}}},"serverInfo":{{"name":"s","version":"1"}}}}"#
            );
            let older = answer_in_version(&Bytes::from(written.clone()), Some("2025-03-26"));
            assert_eq!(
                String::from_utf8_lossy(&older),
                written.replace("2025-06-18", "2025-03-26"),
                "{odd}"
            );
        }
    }

    #[test]
    fn a_discover_result_becomes_an_initialize_result_in_a_session_version() {
        let d = br#"{"capabilities":{"tools":{}},"instructions":"hi","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}}}"#;
        let r = initialize_from_discover(d, Some("2025-06-18"));
        assert_eq!(r["protocolVersion"], "2025-06-18");
        assert_eq!(r["capabilities"]["tools"], serde_json::json!({}));
        assert_eq!(r["serverInfo"]["name"], "s");
        assert_eq!(r["instructions"], "hi");
        let r = initialize_from_discover(b"not json", Some(MODERN_VERSION));
        assert_eq!(r["protocolVersion"], LATEST_SESSION_VERSION);
        assert_eq!(r["serverInfo"]["name"], "mcp-server");
    }

    /// Regression (review): one member serde_json cannot read anywhere
    /// in a 2026-07-28 child's DiscoverResult (`1e400`, a lone surrogate,
    /// nesting past its limit) failed the parse of the whole, and its
    /// session-era clients were told no capabilities, no instructions and
    /// a made-up identity. Each is read on its own now.
    #[test]
    fn one_unreadable_member_of_discover_costs_initialize_only_itself() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            let d = format!(
                r#"{{"capabilities":{{"tools":{{}},"experimental":{{"x":{odd}}}}},"instructions":"hi","extra":{odd},"_meta":{{"io.modelcontextprotocol/serverInfo":{{"name":"s","version":"1"}}}}}}"#
            );
            let r = initialize_from_discover(d.as_bytes(), Some("2025-06-18"));
            assert_eq!(r["capabilities"], serde_json::json!({"tools": {}}), "{odd}");
            assert_eq!(r["serverInfo"]["name"], "s", "{odd}");
            assert_eq!(r["instructions"], "hi", "{odd}");
        }
    }

    #[test]
    fn a_session_era_request_to_a_modern_child_carries_what_the_handshake_set() {
        let port = Port::new(1, "s".into(), PortKind::Session);
        port.set_client(&serde_json::json!({
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "c", "version": "2"},
        }));
        *lock(&port.log_level) = Some(3);
        let f = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"kept"}}}"#),
            true,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(inject_modern_meta(f, &port).bytes()).unwrap();
        let meta = &v["params"]["_meta"];
        assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], "kept");
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"]["sampling"],
            serde_json::json!({})
        );
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "c");
        assert_eq!(meta["io.modelcontextprotocol/logLevel"], LOG_LEVELS[3]);
        let p: Value =
            serde_json::from_slice(&modern_meta_params(&Value::Null, &Value::Null)).unwrap();
        assert_eq!(
            p["_meta"]["io.modelcontextprotocol/protocolVersion"],
            MODERN_VERSION
        );
        assert_eq!(
            p["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            serde_json::json!({})
        );
    }
}
