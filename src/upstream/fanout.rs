//! Fan-out of what the child sends to no request in particular:
//! list-changed notifications to every session, resource updates to the
//! sessions subscribed to the URI (subscriptions counted, so the child
//! sees one subscribe and one unsubscribe per URI), log messages filtered
//! by each session's `logging/setLevel` (the child gets the most verbose
//! level any session asked for) or a 2026-07-28 request's `_meta` level, task status to the task's owner, and a
//! 2026-07-28 `subscriptions/listen` stream's share, tagged with its id.

use std::sync::Arc;

use tracing::{debug, warn};

use super::routes::{Routes, ServerRequest, Target, parse_proxy_id, related_target};
use super::{Port, PortKind, Upstream, lock, tasks};
use crate::jsonrpc::{self, Frame};

/// The log levels of `logging/setLevel`, least to most severe.
pub(super) const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The rank of a log level's name (`debug` 0 … `emergency` 7).
pub fn log_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// `_meta` key naming the `subscriptions/listen` request a notification belongs to.
pub const SUBSCRIPTION_ID_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// What a 2026-07-28 listener accepted, and its id.
#[derive(Debug, Clone, Default)]
pub struct ListenFilter {
    /// The listen request's id, raw JSON.
    pub id: Box<[u8]>,
    /// `toolsListChanged`.
    pub tools: bool,
    /// `promptsListChanged`.
    pub prompts: bool,
    /// `resourcesListChanged`.
    pub resources: bool,
    /// `resourceSubscriptions`.
    pub uris: Vec<String>,
}

impl ListenFilter {
    /// The notification as this listener should see it (tagged with its
    /// id in `_meta`, nothing else parsed or rewritten), or `None` if it
    /// did not ask for it.
    pub(super) fn admit(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let frame = Frame::parse(bytes::Bytes::copy_from_slice(bytes), false).ok()?;
        let wanted = match frame.method()? {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => {
                let uri = frame
                    .locate_in_params(&["uri"])
                    .and_then(|at| serde_json::from_slice::<String>(&frame.bytes()[at]).ok());
                uri.is_some_and(|uri| self.uris.contains(&uri))
            }
            _ => false,
        };
        if !wanted {
            return None;
        }
        let mut member = serde_json::to_vec(SUBSCRIPTION_ID_KEY).ok()?;
        member.push(b':');
        member.extend_from_slice(&self.id);
        Some(frame.with_meta_member(&member).bytes().to_vec())
    }
}

/// Notifications of the session era that 2026-07-28 removed (changelog,
/// minor change 11): a 2025-era child's never reach a 2026-07-28 client.
const REMOVED_NOTIFICATIONS: [&str; 1] = ["notifications/elicitation/complete"];

/// Whether a notification of `method` goes to `port`: a log message
/// (`level`, its rank; `None` for another notification, or one whose
/// level is not a level) at or above the level the session set; for a
/// 2026-07-28 port, nothing that revision removed. A 2026-07-28 request
/// gets log messages only when its `_meta` asked for them, and then only
/// those of a known level at or above it (spec 2026-07-28
/// `server/utilities/logging`: none for a request without
/// `io.modelcontextprotocol/logLevel`).
pub(super) fn passes(port: Option<&Arc<Port>>, method: &str, level: Option<usize>) -> bool {
    let min = port.and_then(|p| *lock(&p.log_level));
    if port.is_some_and(|p| p.kind == PortKind::Modern) {
        if REMOVED_NOTIFICATIONS.contains(&method) {
            return false;
        }
        if method == "notifications/message" {
            return matches!((min, level), (Some(min), Some(level)) if level >= min);
        }
    }
    match (min, level) {
        (Some(min), Some(level)) => level >= min,
        _ => true,
    }
}

/// Recomputes the child's log level (what the sessions set: a 2026-07-28
/// request's level is its own); `Some` when it changed.
pub(super) fn recompute_level(r: &mut Routes) -> Option<usize> {
    let level = r
        .ports
        .values()
        .filter(|p| p.kind == PortKind::Session)
        .filter_map(|p| *lock(&p.log_level))
        .min();
    if level != r.child_log_level {
        r.child_log_level = level;
        level
    } else {
        None
    }
}

impl Upstream {
    /// Tells the child the log level the sessions want, as the proxy's own request.
    pub(super) async fn set_child_level(self: &Arc<Self>, level: usize) {
        self.fire_and_forget(
            "logging/setLevel",
            serde_json::json!({ "level": LOG_LEVELS[level] }),
        )
        .await;
    }
}

/// A notification that goes to every session (or every subscriber) as
/// what it must say only, when it is larger than `max_bytes`: each stream
/// encodes a copy of its own, and an empty stream queue takes one of any
/// size (`--max-queue-bytes`), so the child's free-form params would
/// otherwise be held once per session. A list change says only which
/// list changed; a resource update, which URI (with a URI over the bound
/// too, `None`: dropped).
fn broadcast_form(frame: Frame, max_bytes: usize) -> Option<Frame> {
    if frame.bytes().len() <= max_bytes {
        return Some(frame);
    }
    let method = frame.method().unwrap_or_default();
    let minimal = if method == "notifications/resources/updated" {
        let uri = updated_uri(&frame)?;
        serde_json::json!({ "jsonrpc": "2.0", "method": method, "params": { "uri": uri } })
    } else {
        serde_json::json!({ "jsonrpc": "2.0", "method": method })
    };
    // Invariant: a Value of strings serializes.
    let minimal = serde_json::to_vec(&minimal).expect("Value serializes");
    let fits = minimal.len() <= max_bytes;
    warn!(
        method,
        bytes = frame.bytes().len(),
        limit = max_bytes,
        "the MCP server sent every session a notification over --max-queue-bytes; {}",
        if fits {
            "passing on what it must say only"
        } else {
            "dropped it"
        }
    );
    if !fits {
        return None;
    }
    Frame::parse(minimal.into(), false).ok()
}

/// Routes a notification of the child that answers no request (see the
/// module documentation); `shared`: tasks belong to sessions; a
/// notification for every session larger than `max_broadcast_bytes` goes
/// in its minimal form ([`broadcast_form`]).
pub(super) fn route_notification(
    routes: &mut Routes,
    shared: bool,
    max_broadcast_bytes: usize,
    frame: Frame,
) {
    let method = frame.method().unwrap_or_default();
    if let Some(sub) = subscription_of(&frame) {
        // A modern child's notification for one `subscriptions/listen`
        // request: it goes to that request's stream only, with the
        // client's own request id restored.
        // Only that value is replaced, byte for byte: nothing else in the
        // message is parsed into values and written again.
        let at = frame.locate_in_params(&["_meta", SUBSCRIPTION_ID_KEY]);
        if let (Some(p), Some(at)) = (routes.pending.get(&sub), at)
            && let Some(o) = p.reply.stream()
        {
            o.send(frame.with_replaced(at, &p.client_id).bytes());
        }
        return;
    }
    match method {
        "notifications/progress" => {
            let Some(at) = frame.locate_in_params(&["progressToken"]) else {
                return;
            };
            let token = parse_proxy_id(&frame.bytes()[at.clone()]);
            let r = &*routes;
            let Some(p) = token.and_then(|t| r.pending.get(&t)) else {
                debug!("progress for an unknown or finished request dropped");
                return;
            };
            let Some(original) = &p.token else { return };
            // The child's message with the client's token put back;
            // nothing else in it is read or rebuilt.
            let out = frame.with_replaced(at, original);
            match p.reply.stream() {
                Some(o) => o.send(out.bytes()),
                None => {
                    if let Some(port) = r.ports.get(&p.port) {
                        port.send_unrelated(out.bytes());
                    }
                }
            }
        }
        "notifications/cancelled" => {
            // The child withdraws one of its own requests: tell whoever has it.
            let Some(at) = frame.locate_in_params(&["requestId"]) else {
                return;
            };
            let Some(key) = jsonrpc::id_key(&frame.bytes()[at]) else {
                return;
            };
            // One held for a task's client is withdrawn from its
            // `inputRequests` (its id is the child's to use again).
            routes.task_inputs.take(&key);
            let target = routes.take_server_request(&key);
            if let Some(ServerRequest {
                outlet: Some(o), ..
            }) = target
            {
                o.send(frame.bytes());
            }
        }
        "notifications/tasks/status" if shared => {
            let r = &*routes;
            let owner = frame
                .params()
                .and_then(tasks::task_param)
                .and_then(|t| r.tasks.owner(&t))
                .and_then(|key| r.ports.get(&key));
            match owner {
                Some(port) => {
                    port.send_unrelated(frame.bytes());
                }
                None => debug!("status of a task no session owns dropped"),
            }
        }
        m if m.ends_with("/list_changed") => {
            let Some(frame) = broadcast_form(frame, max_broadcast_bytes) else {
                return;
            };
            let ports: Vec<Arc<Port>> = routes.ports.values().cloned().collect();
            for port in ports {
                port.send_unrelated(frame.bytes());
            }
        }
        "notifications/resources/updated" => {
            let Some(frame) = broadcast_form(frame, max_broadcast_bytes) else {
                return;
            };
            let uri = updated_uri(&frame);
            let r = &*routes;
            let subscribers = uri.and_then(|u| r.subscriptions.get(&u));
            for key in subscribers.into_iter().flatten() {
                if let Some(port) = r.ports.get(key) {
                    port.send_unrelated(frame.bytes());
                }
            }
        }
        _ => {
            let level = (method == "notifications/message")
                .then(|| message_level(&frame))
                .flatten();
            let r = &*routes;
            if let Some(port) = task_owner(r, shared, &frame) {
                if passes(Some(port), method, level) {
                    port.send_unrelated(frame.bytes());
                }
                return;
            }
            if shared && tasks::related_task(&frame).is_some() {
                // A task no live session created: the call in flight is
                // someone else's.
                debug!(method, "message of a task no session owns dropped");
                return;
            }
            match related_target(r) {
                Target::Request(p) => {
                    let port = r.ports.get(&p.port);
                    if !passes(port, method, level) {
                        return;
                    }
                    match p.reply.stream() {
                        Some(o) => o.send(frame.bytes()),
                        None => {
                            if let Some(port) = port {
                                port.send_unrelated(frame.bytes());
                            }
                        }
                    }
                }
                Target::Port(port) => {
                    if passes(Some(port), method, level) {
                        port.send_unrelated(frame.bytes());
                    }
                }
                Target::None => {
                    debug!(method, "notification with no unambiguous session dropped")
                }
            }
        }
    }
}

/// The `uri` of a `notifications/resources/updated`, read where it lies:
/// the rest of the params is never built into a tree, so a value no
/// parser can hold (`1e400`) or deep nesting beside it cannot hide it.
fn updated_uri(frame: &Frame) -> Option<String> {
    let at = frame.locate_in_params(&["uri"])?;
    serde_json::from_slice(&frame.bytes()[at]).ok()
}

/// The rank of a `notifications/message`'s `level`, read where it lies, as
/// [`updated_uri`] reads its `uri`: a value beside it that no tree can hold
/// (`1e400`, deep nesting in `data`) must not take the level filter away.
fn message_level(frame: &Frame) -> Option<usize> {
    let at = frame.locate_in_params(&["level"])?;
    log_rank(&serde_json::from_slice::<String>(&frame.bytes()[at]).ok()?)
}

/// The `subscriptions/listen` request a modern child's notification is for.
fn subscription_of(frame: &Frame) -> Option<u64> {
    let id = frame.meta(SUBSCRIPTION_ID_KEY)?;
    parse_proxy_id(id.to_string().as_bytes())
}

/// In shared mode, the session that owns the task a message relates to
/// (`_meta` related-task).
pub(super) fn task_owner<'r>(r: &'r Routes, shared: bool, frame: &Frame) -> Option<&'r Arc<Port>> {
    if !shared {
        return None;
    }
    let task = tasks::related_task(frame)?;
    r.ports.get(&r.tasks.owner(&task)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::PortKind;

    const MESSAGE: &str = "notifications/message";

    fn port(key: u64, level: Option<&str>) -> Arc<Port> {
        let p = Port::new(key, format!("s{key}").into(), PortKind::Session);
        *lock(&p.log_level) = level.and_then(log_rank);
        p
    }

    /// Regression: the level was read from a tree of the whole params, so
    /// `1e400` or nesting past 128 levels in `data` lost it, and a debug
    /// message passed a session that asked for errors only.
    #[test]
    fn a_messages_level_is_read_whatever_sits_in_its_data() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for data in ["1e400", deep.as_str(), "\"plain\""] {
            let line = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":{data},"level":"debug"}}}}"#
            );
            let frame = Frame::parse(bytes::Bytes::from(line), false).unwrap();
            assert_eq!(message_level(&frame), log_rank("debug"), "data {data:.20}");
            assert!(!passes(
                Some(&port(1, Some("error"))),
                MESSAGE,
                message_level(&frame)
            ));
        }
        let odd = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":7}}"#;
        let frame = Frame::parse(bytes::Bytes::from(odd), false).unwrap();
        assert_eq!(message_level(&frame), None);
    }

    #[test]
    fn log_messages_pass_at_or_above_the_sessions_level() {
        let p = port(1, Some("warning"));
        assert!(passes(Some(&p), MESSAGE, log_rank("error")));
        assert!(passes(Some(&p), MESSAGE, log_rank("warning")));
        assert!(!passes(Some(&p), MESSAGE, log_rank("info")));
        // No level asked for, or a message without one: it passes.
        assert!(passes(Some(&port(2, None)), MESSAGE, log_rank("debug")));
        assert!(passes(Some(&p), MESSAGE, None));
        assert!(passes(None, MESSAGE, log_rank("debug")));
        assert_eq!(log_rank("loud"), None);
    }

    /// A 2026-07-28 request asks for log messages in its own `_meta`: none
    /// without it, and with it none below it or of no known level; other
    /// notifications are not log messages and pass.
    #[test]
    fn a_modern_request_gets_log_messages_only_at_the_level_it_asked_for() {
        let modern = |level: Option<&str>| {
            let p = Port::new(9, "m".into(), PortKind::Modern);
            *lock(&p.log_level) = level.and_then(log_rank);
            p
        };
        let none = modern(None);
        assert!(!passes(Some(&none), MESSAGE, log_rank("emergency")));
        assert!(!passes(Some(&none), MESSAGE, None));
        assert!(passes(Some(&none), "notifications/progress", None));
        let warning = modern(Some("warning"));
        assert!(passes(Some(&warning), MESSAGE, log_rank("error")));
        assert!(!passes(Some(&warning), MESSAGE, log_rank("info")));
        assert!(!passes(Some(&warning), MESSAGE, None));
        let removed = "notifications/elicitation/complete";
        assert!(!passes(Some(&warning), removed, None));
        assert!(passes(Some(&port(3, None)), removed, None), "a session's");
        // Its level is not the child's: that is what the sessions set.
        let mut r = Routes::new(4);
        r.ports.insert(1, modern(Some("debug")));
        assert_eq!(recompute_level(&mut r), None);
        r.ports.insert(2, port(2, Some("error")));
        assert_eq!(recompute_level(&mut r), log_rank("error"));
    }

    #[test]
    fn the_child_gets_the_most_verbose_level_any_session_asked_for() {
        let mut r = Routes::new(4);
        r.ports.insert(1, port(1, Some("error")));
        assert_eq!(recompute_level(&mut r), log_rank("error"));
        r.ports.insert(2, port(2, Some("info")));
        assert_eq!(recompute_level(&mut r), log_rank("info"));
        // Unchanged: nothing to tell the child.
        assert_eq!(recompute_level(&mut r), None);
        r.ports.remove(&2);
        assert_eq!(recompute_level(&mut r), log_rank("error"));
    }

    /// A plain session-era request of port 1, answered on `stream`.
    fn streamed(client_id: &[u8], stream: super::super::Sink) -> super::super::routes::Pending {
        super::super::routes::Pending {
            port: 1,
            modern: false,
            fill: super::super::fill::Fill::None,
            stamp: None,
            tasks: super::super::routes::TaskAnswer::None,
            client_id: client_id.into(),
            token: None,
            retry: None,
            parkable: false,
            deadline: None,
            reply: super::super::Reply::Stream(stream),
        }
    }

    #[test]
    fn a_listen_requests_notification_gets_the_clients_id_and_is_otherwise_untouched() {
        use super::super::Sink;
        use super::super::sink::testing::Recorder;
        let mut r = Routes::new(4);
        r.ports.insert(1, port(1, None));
        let sink = Arc::new(Recorder::default());
        let stream: Sink = sink.clone();
        let pending = streamed(br#""listen-1""#, stream);
        assert!(r.admit(7, pending, None).is_ok());
        // A number no parser can hold and deep nesting pass as they are.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let line = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{"uri":"file:///a","big":1e400,"deep":{deep},"_meta":{{"{SUBSCRIPTION_ID_KEY}":7}}}}}}"#
        );
        let frame = Frame::parse(bytes::Bytes::from(line.clone()), false).unwrap();
        route_notification(&mut r, false, usize::MAX, frame);
        let sent = sink.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let want = line.replace(
            &format!(r#""{SUBSCRIPTION_ID_KEY}":7"#),
            &format!(r#""{SUBSCRIPTION_ID_KEY}":"listen-1""#),
        );
        assert_eq!(String::from_utf8_lossy(&sent[0]), want);
    }

    /// Regression: a log message tied to a task no live session created
    /// (a 2026-07-28 or stateless client's: `_meta` related-task) went to
    /// the stream of the one call in flight, whoever's it was.
    #[test]
    fn a_message_of_a_task_no_session_owns_reaches_no_bystander() {
        use super::super::Sink;
        use super::super::sink::testing::Recorder;
        use super::super::tasks::Caller;
        let mut r = Routes::new(4);
        r.ports.insert(1, port(1, Some("debug")));
        r.tasks.record(
            "t-1",
            Caller {
                port: 2,
                session: false,
                principal: Some("api-key:alice"),
            },
        );
        let sink = Arc::new(Recorder::default());
        let stream: Sink = sink.clone();
        let pending = streamed(b"1", stream);
        assert!(r.admit(7, pending, None).is_ok());
        let line = |meta: &str| {
            let line = format!(
                r#"{{"jsonrpc":"2.0","method":"{MESSAGE}","params":{{"level":"error","data":"x"{meta}}}}}"#
            );
            Frame::parse(bytes::Bytes::from(line), false).unwrap()
        };
        let related = r#","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t-1"}}"#;
        route_notification(&mut r, true, usize::MAX, line(related));
        assert!(
            sink.sent.lock().unwrap().is_empty(),
            "alice's task's message"
        );
        // A message of no task still goes to the call in flight.
        route_notification(&mut r, true, usize::MAX, line(""));
        assert_eq!(sink.sent.lock().unwrap().len(), 1);
    }

    /// A request the child held for a task's client and then withdrew
    /// (`notifications/cancelled`) stayed in the task's `inputRequests`
    /// until it timed out, and its id stayed taken.
    #[test]
    fn a_held_request_the_child_withdraws_leaves_the_task() {
        let mut r = Routes::new(4);
        let limits = super::super::tasks::InputLimits {
            count: 4,
            per_task: 4,
            bytes: 1 << 20,
        };
        let at = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let entry: Box<[u8]> = br#"{"method":"elicitation/create"}"#.as_slice().into();
        let held = r.task_inputs.hold(
            "t-1",
            b"\"s-1\"".as_slice().into(),
            b"\"s-1\"",
            "elicitation/create",
            entry,
            at,
            limits,
        );
        assert!(held.is_ok());
        let cancel = Frame::parse(
            bytes::Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"s-1"}}"#,
            ),
            false,
        )
        .unwrap();
        route_notification(&mut r, true, usize::MAX, cancel);
        assert_eq!(r.task_inputs.len(), 0);
        assert_eq!(r.task_inputs.next_deadline(), None);
    }

    /// Regression: the `uri` of a resource update was read by building
    /// the whole params into a tree, so an update with a value no parser
    /// can hold (`1e400`) or nesting past 128 levels anywhere in its
    /// params (its `_meta`, say) reached none of the resource's
    /// subscribers, and was dropped without a word.
    #[test]
    fn a_resource_update_reaches_its_subscribers_whatever_sits_beside_its_uri() {
        use super::super::Sink;
        use super::super::sink::testing::Recorder;
        let mut r = Routes::new(4);
        let p = port(1, None);
        let sink = Arc::new(Recorder::default());
        let outlet: Sink = sink.clone();
        p.set_notify(Some(outlet));
        r.ports.insert(1, p);
        assert!(r.count_subscription("file:///a", 1, true));
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let lines = [
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a","_meta":{"n":1e400}}}"#.to_string(),
            format!(r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{"deep":{deep},"uri":"file:///a"}}}}"#),
        ];
        for line in &lines {
            let frame = Frame::parse(bytes::Bytes::from(line.clone()), false).unwrap();
            route_notification(&mut r, true, usize::MAX, frame);
        }
        let sent = sink.sent.lock().unwrap();
        let sent: Vec<String> = sent
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(sent, lines);
    }

    #[test]
    fn a_listener_sees_what_it_asked_for_tagged_with_its_id() {
        let f = ListenFilter {
            id: b"\"L1\"".to_vec().into(),
            tools: true,
            uris: vec!["file:///a".into()],
            ..ListenFilter::default()
        };
        let tools = f
            .admit(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tools).unwrap();
        assert_eq!(v["params"]["_meta"][SUBSCRIPTION_ID_KEY], "L1");
        assert!(
            f.admit(br#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#)
                .is_none()
        );
        let updated = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#;
        assert!(f.admit(updated).is_some());
        // A number no parser can hold passes untouched.
        let big = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a","n":1e400}}"#;
        let tagged = String::from_utf8(f.admit(big).unwrap()).unwrap();
        assert_eq!(
            tagged,
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{"_meta":{{"{SUBSCRIPTION_ID_KEY}":"L1"}},"uri":"file:///a","n":1e400}}}}"#
            )
        );
        let other = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///b"}}"#;
        assert!(f.admit(other).is_none());
        assert!(
            f.admit(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#)
                .is_none()
        );
    }
}
