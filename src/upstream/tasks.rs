//! Which session owns which task (2025-11-25 `basic/utilities/tasks`).
//!
//! A shared child keeps one task table for everyone, so without help any
//! session could list, read, or cancel another session's tasks (transport.md
//! §4.6). The multiplexer records the owner of each task it sees created and
//! answers `tasks/get`, `tasks/result` and `tasks/cancel` for a task the
//! caller does not own with "task not found" (-32602) without asking the
//! child, filters `tasks/list` answers, and sends task-related messages to
//! the owner.
//!
//! Ownership is fail-closed (issue #10): a task is visible to the session
//! that created it and, when the proxy authenticates, to every session and
//! request of the same principal, even after the creating session ended.
//! A task of an ended anonymous session is visible to no one. Clients
//! without a session (stateless, 2026-07-28) share the tasks created by
//! such clients of the same principal (anonymous with anonymous). A task
//! the table does not know (never seen, or forgotten) is visible to no one.
//!
//! The table is bounded: past `--max-tasks` the oldest entry is forgotten
//! (its task is then visible to no one), with a warning.
//!
//! [`TaskInputs`] holds the child's requests tied to a task that a client
//! without a session created (a 2026-07-28 client's: it answers them with
//! the Tasks extension's `tasks/update`, see `http::modern_tasks`), until
//! they are answered, time out, or their task ends.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Deserialize;
use tokio::time::Instant;
use tracing::warn;

use crate::jsonrpc::Frame;

/// `_meta` key tying a message to a task.
pub const RELATED_TASK_KEY: &str = "io.modelcontextprotocol/related-task";

/// Port key of a task whose creating session has ended.
/// Tasks whose owning session a shared child's multiplexer remembers,
/// unless configured otherwise (`--max-tasks`).
pub const DEFAULT_MAX_TASKS: usize = 10_000;

const ENDED: u64 = u64::MAX;
/// Port key of a task created by a client without a session.
const SESSIONLESS: u64 = 0;

/// Who created a task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    /// The creating session's port key, [`SESSIONLESS`] or [`ENDED`].
    port: u64,
    /// The creator's authenticated principal (`None`: anonymous).
    principal: Option<std::sync::Arc<str>>,
    /// Created by a 2026-07-28 client: the task's requests wait for its
    /// `tasks/update` ([`TaskInputs`]).
    modern: bool,
    /// Until when the task keeps its child busy ([`TaskOwners::hold`]).
    hold: Option<Instant>,
}

/// Who is asking about a task.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Its port key.
    pub port: u64,
    /// Whether it is a session (it can own tasks of its own).
    pub session: bool,
    /// Its authenticated principal (`None`: anonymous).
    pub principal: Option<&'a str>,
}

/// Task id → owner, oldest first.
pub struct TaskOwners {
    owner: HashMap<Box<str>, Owner>,
    order: VecDeque<Box<str>>,
    cap: usize,
    forgotten: u64,
    /// 2026-07-28 clients' tasks that keep their child from counting as
    /// idle, until their ttl ends (soonest first); see [`TaskOwners::hold`].
    holds: BTreeSet<(Instant, String)>,
}

impl Default for TaskOwners {
    fn default() -> TaskOwners {
        TaskOwners::new(DEFAULT_MAX_TASKS)
    }
}

impl TaskOwners {
    /// An empty table holding at most `cap` tasks.
    pub fn new(cap: usize) -> TaskOwners {
        TaskOwners {
            owner: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            forgotten: 0,
            holds: BTreeSet::new(),
        }
    }

    /// Records that `caller` created `task_id`.
    pub fn record(&mut self, task_id: &str, caller: Caller<'_>) {
        let owner = Owner {
            port: if caller.session {
                caller.port
            } else {
                SESSIONLESS
            },
            principal: caller.principal.map(std::sync::Arc::from),
            modern: false,
            hold: None,
        };
        if self.owner.insert(task_id.into(), owner).is_none() {
            self.order.push_back(task_id.into());
        }
        while self.owner.len() > self.cap {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(o) = self.owner.remove(&oldest) {
                if let Some(at) = o.hold {
                    self.holds.remove(&(at, oldest.to_string()));
                }
                self.forgotten += 1;
                if self.forgotten.is_power_of_two() {
                    warn!(
                        forgotten = self.forgotten,
                        limit = self.cap,
                        "task table full (--max-tasks); the oldest tasks are now visible to no one"
                    );
                }
            }
        }
    }

    /// Whether `caller` may see `task_id`; an unknown task is visible to no one.
    pub fn may_see(&self, task_id: &str, caller: Caller<'_>) -> bool {
        let Some(o) = self.owner.get(task_id) else {
            return false;
        };
        if caller.session && o.port == caller.port {
            return true;
        }
        match (&o.principal, caller.principal) {
            (Some(owner), Some(asker)) => **owner == *asker,
            (None, None) => o.port == SESSIONLESS && !caller.session,
            _ => false,
        }
    }

    /// The live session port that owns `task_id`.
    pub fn owner(&self, task_id: &str) -> Option<u64> {
        self.owner
            .get(task_id)
            .map(|o| o.port)
            .filter(|p| *p != ENDED && *p != SESSIONLESS)
    }

    /// Notes that `task_id`, just recorded, is a 2026-07-28 client's.
    pub fn mark_modern(&mut self, task_id: &str) {
        if let Some(o) = self.owner.get_mut(task_id) {
            o.modern = true;
        }
    }

    /// Keeps `task_id`'s child from counting as idle until `until` (its
    /// ttl's end) or until the task is seen to end ([`TaskOwners::unhold`]):
    /// a 2026-07-28 client has no session to keep the child alive between
    /// its polls, and a child stopped as idle takes its tasks with it.
    pub fn hold(&mut self, task_id: &str, until: Instant) {
        let Some(o) = self.owner.get_mut(task_id) else {
            return;
        };
        if let Some(at) = o.hold.replace(until) {
            self.holds.remove(&(at, task_id.to_string()));
        }
        self.holds.insert((until, task_id.to_string()));
    }

    /// `task_id` ended: it no longer keeps its child busy.
    pub fn unhold(&mut self, task_id: &str) {
        if let Some(at) = self.owner.get_mut(task_id).and_then(|o| o.hold.take()) {
            self.holds.remove(&(at, task_id.to_string()));
        }
    }

    /// How many tasks keep the child busy at `now` (those whose ttl ended
    /// are let go of).
    pub fn holding(&mut self, now: Instant) -> usize {
        while let Some((at, _)) = self.holds.first()
            && *at <= now
        {
            if let Some((_, task)) = self.holds.pop_first()
                && let Some(o) = self.owner.get_mut(task.as_str())
            {
                o.hold = None;
            }
        }
        self.holds.len()
    }

    /// When the next hold ends.
    pub fn next_hold_end(&self) -> Option<Instant> {
        self.holds.first().map(|(at, _)| *at)
    }

    /// Whether `task_id` was created by a 2026-07-28 client (and is still
    /// remembered): its requests wait for that client's `tasks/update`.
    pub fn takes_input(&self, task_id: &str) -> bool {
        self.owner.get(task_id).is_some_and(|o| o.modern)
    }

    /// A session ended: its tasks stay its principal's (or no one's), never everyone's.
    pub fn release(&mut self, port: u64) {
        for o in self.owner.values_mut() {
            if o.port == port {
                o.port = ENDED;
            }
        }
    }

    /// Forgets everything (the child that held the tasks is gone).
    pub fn clear(&mut self) {
        self.owner.clear();
        self.order.clear();
        self.holds.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owner.len()
    }
}

/// One request of the child's, tied to a task, waiting for the task's
/// client to answer it with `tasks/update`.
#[derive(Debug)]
pub struct HeldInput {
    /// The task it belongs to.
    pub task: Box<str>,
    /// Its `inputRequests` key: unique over the child's life, so over the
    /// task's (the extension forbids reusing one).
    pub key: String,
    /// The child's id, canonical (the table's key).
    pub id: Box<[u8]>,
    /// Its method.
    pub method: Box<str>,
    /// The child's id, as written (its answer goes back under it).
    pub raw_id: Box<[u8]>,
    /// The `inputRequests` entry (`{"method":…,"params":…}`), as JSON.
    pub entry: Box<[u8]>,
    /// When it is given up on.
    pub deadline: Instant,
}

impl HeldInput {
    /// Its params, as written, if it has any.
    pub fn params(&self) -> Option<&[u8]> {
        let at = crate::jsonrpc::locate_checked(&self.entry, &["params"])?;
        Some(&self.entry[at])
    }
}

/// Why a request could not be held.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldRefused {
    /// Its task holds as many requests, or as many bytes, as one may.
    Task,
    /// The child's held requests are at the count or the byte bound.
    Child,
}

/// Bounds of [`TaskInputs`].
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Requests held in all (`--max-server-requests`).
    pub count: usize,
    /// Requests held for one task (`--max-server-requests-per-session`).
    pub per_task: usize,
    /// Bytes of their entries in all (`--max-task-input-bytes`); a task
    /// may hold a quarter of them.
    pub bytes: usize,
}

/// The child's task requests waiting for a 2026-07-28 client, oldest
/// first. Every one waits the same time, so that is also deadline order;
/// a list, since `--max-server-requests` keeps it short and it is most
/// often empty.
#[derive(Default)]
pub struct TaskInputs {
    held: Vec<HeldInput>,
    bytes: usize,
    next: u64,
}

impl TaskInputs {
    /// Holds the child's request (`id` canonical, `raw_id` as written,
    /// `entry` its `{"method":…,"params":…}`) for `task` until `deadline`,
    /// which is no earlier than any held before; returns its key.
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &mut self,
        task: &str,
        id: Box<[u8]>,
        raw_id: &[u8],
        method: &str,
        entry: Box<[u8]>,
        deadline: Instant,
        limits: InputLimits,
    ) -> Result<String, HoldRefused> {
        if self.held.len() >= limits.count || self.bytes + entry.len() > limits.bytes {
            return Err(HoldRefused::Child);
        }
        let (n, bytes) = self
            .of_task(task)
            .fold((0, 0), |(n, b), h| (n + 1, b + h.entry.len()));
        if n >= limits.per_task || bytes + entry.len() > (limits.bytes / 4).max(1) {
            return Err(HoldRefused::Task);
        }
        self.next += 1;
        let key = format!("r{}", self.next);
        self.bytes += entry.len();
        self.held.push(HeldInput {
            task: task.into(),
            key: key.clone(),
            id,
            method: method.into(),
            raw_id: raw_id.into(),
            entry,
            deadline,
        });
        Ok(key)
    }

    /// Whether the child's request `id` (canonical) is held.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.held.iter().any(|h| *h.id == *id)
    }

    /// `task`'s held requests, oldest first.
    pub fn of_task<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a HeldInput> + 'a {
        self.held.iter().filter(move |h| &*h.task == task)
    }

    fn take_at(&mut self, at: usize) -> HeldInput {
        let h = self.held.remove(at);
        self.bytes -= h.entry.len();
        h
    }

    /// Takes `task`'s request under `key`.
    pub fn take_key(&mut self, task: &str, key: &str) -> Option<HeldInput> {
        let at = self
            .held
            .iter()
            .position(|h| &*h.task == task && h.key == key)?;
        Some(self.take_at(at))
    }

    /// Takes the request the child sent under `id` (canonical).
    pub fn take(&mut self, id: &[u8]) -> Option<HeldInput> {
        let at = self.held.iter().position(|h| *h.id == *id)?;
        Some(self.take_at(at))
    }

    /// Takes every request of `task`.
    pub fn take_task(&mut self, task: &str) -> Vec<HeldInput> {
        let mut out = Vec::new();
        while let Some(at) = self.held.iter().position(|h| &*h.task == task) {
            out.push(self.take_at(at));
        }
        out
    }

    /// Takes the requests whose deadline is at or before `now`.
    pub fn due(&mut self, now: Instant) -> Vec<HeldInput> {
        let mut out = Vec::new();
        while self.held.first().is_some_and(|h| h.deadline <= now) {
            out.push(self.take_at(0));
        }
        out
    }

    /// The soonest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.first().map(|h| h.deadline)
    }

    /// Forgets everything (the child that sent them is gone).
    pub fn clear(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

/// The `ttl` (milliseconds) a `CreateTaskResult` answer gives its task:
/// `result.task.ttl`; `None` when it is `null` (unlimited), absent or not
/// a count.
pub fn created_ttl(answer: &[u8]) -> Option<u64> {
    let at = crate::jsonrpc::locate_checked(answer, &["result", "task", "ttl"])?;
    let ttl = serde_json::from_slice::<i64>(&answer[at]).ok()?;
    u64::try_from(ttl).ok()
}

/// The longest a task keeps its child from counting as idle
/// ([`TaskOwners::hold`]), whatever ttl the child gave it: a client that
/// creates tasks and never polls them again must not keep a child for
/// the years a ttl can say.
pub const MAX_TASK_HOLD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long a task whose child gave it `ttl_ms` keeps its child:
/// at most [`MAX_TASK_HOLD`].
pub fn hold_for(ttl_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ttl_ms).min(MAX_TASK_HOLD)
}

#[derive(Deserialize)]
struct TaskRef {
    #[serde(rename = "taskId")]
    task_id: String,
}

/// The task a `CreateTaskResult` answer announces: `result.task.taskId`.
pub fn created_task(answer: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        result: Created,
    }
    #[derive(Deserialize)]
    struct Created {
        task: TaskRef,
    }
    serde_json::from_slice::<Answer>(answer)
        .ok()
        .map(|a| a.result.task.task_id)
}

/// The `taskId` parameter of `tasks/get`, `tasks/result`, `tasks/cancel`
/// and `notifications/tasks/status`.
pub fn task_param(params: &[u8]) -> Option<String> {
    serde_json::from_slice::<TaskRef>(params)
        .ok()
        .map(|t| t.task_id)
}

/// The task a request or notification relates to, from `_meta`.
pub fn related_task(frame: &Frame) -> Option<String> {
    let related = frame.meta(RELATED_TASK_KEY)?;
    related.get("taskId")?.as_str().map(String::from)
}

/// A `tasks/list` answer with only the tasks `keep` accepts (an error
/// passes unchanged); `None` when it cannot be read as a list, so that
/// nothing of it may go. Each task is read on its own, as written: one
/// that serde_json cannot build into a tree (`1e400`, a lone surrogate,
/// nesting past its limit) costs neither the filter nor the other tasks,
/// and a task whose id cannot be read is not kept.
pub fn filter_list(answer: &[u8], keep: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    type Members = std::collections::BTreeMap<String, Box<RawValue>>;
    // A repeated key keeps its last copy, as the tree did.
    let mut envelope: Members = serde_json::from_slice(answer).ok()?;
    let Some(result) = envelope.get("result") else {
        return Some(answer.to_vec());
    };
    let mut result: Members = serde_json::from_str(result.get()).ok()?;
    let tasks: Vec<Box<RawValue>> = serde_json::from_str(result.get("tasks")?.get()).ok()?;
    let kept: Vec<Box<RawValue>> = tasks
        .into_iter()
        .filter(|t| {
            crate::jsonrpc::readable_member(t.get().as_bytes(), &["taskId"])
                .is_some_and(|id| id.as_str().is_some_and(&keep))
        })
        .collect();
    // Invariant: raw values, lists and maps of them serialize.
    fn raw(v: &impl serde::Serialize) -> Box<RawValue> {
        serde_json::value::to_raw_value(v).expect("raw values serialize")
    }
    result.insert("tasks".into(), raw(&kept));
    envelope.insert("result".into(), raw(&result));
    Some(serde_json::to_vec(&envelope).expect("raw values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_holds_its_child_for_its_ttl_but_never_past_a_day() {
        assert_eq!(hold_for(5_000), std::time::Duration::from_secs(5));
        assert_eq!(hold_for(u64::MAX), MAX_TASK_HOLD);
        assert_eq!(hold_for(25 * 3600 * 1000), MAX_TASK_HOLD);
    }
    use serde_json::Value;

    fn session(port: u64, principal: Option<&str>) -> Caller<'_> {
        Caller {
            port,
            session: true,
            principal,
        }
    }

    fn sessionless(principal: Option<&str>) -> Caller<'_> {
        Caller {
            port: 99,
            session: false,
            principal,
        }
    }

    #[test]
    fn anonymous_owners_see_their_tasks_and_nobody_sees_unknown_ones() {
        let mut t = TaskOwners::new(10);
        t.record("a", session(1, None));
        assert!(t.may_see("a", session(1, None)));
        assert!(!t.may_see("a", session(2, None)));
        assert!(
            !t.may_see("a", sessionless(None)),
            "sessionless callers cannot see session tasks"
        );
        assert!(!t.may_see("unknown", session(1, None)));
        assert!(
            !t.may_see("unknown", sessionless(None)),
            "unknown is denied, never open"
        );
        t.record("m", sessionless(None));
        assert!(t.may_see("m", sessionless(None)));
        assert!(!t.may_see("m", session(1, None)));
    }

    #[test]
    fn tasks_belong_to_their_principal_and_stay_private_after_the_session() {
        let mut t = TaskOwners::new(10);
        t.record("a", session(1, Some("api-key:alice")));
        t.record("z", session(3, None));
        assert!(
            t.may_see("a", session(2, Some("api-key:alice"))),
            "alice's other session"
        );
        assert!(t.may_see("a", sessionless(Some("api-key:alice"))));
        assert!(!t.may_see("a", session(2, Some("api-key:bob"))));
        t.release(1);
        t.release(3);
        assert!(t.may_see("a", session(4, Some("api-key:alice"))));
        assert!(!t.may_see("a", sessionless(None)), "ended: not everyone's");
        assert!(!t.may_see("a", sessionless(Some("api-key:bob"))));
        assert!(
            !t.may_see("z", sessionless(None)),
            "an ended anonymous session's task: no one's"
        );
        assert!(!t.may_see("z", session(3, None)));
        t.record("m", sessionless(Some("api-key:bob")));
        assert!(t.may_see("m", sessionless(Some("api-key:bob"))));
        assert!(!t.may_see("m", sessionless(Some("api-key:alice"))));
        assert!(!t.may_see("m", sessionless(None)));
    }

    #[test]
    fn the_table_forgets_the_oldest_past_its_cap_and_forgotten_tasks_are_denied() {
        let mut t = TaskOwners::new(2);
        t.record("a", session(1, None));
        t.record("b", session(2, None));
        t.record("a", session(1, None)); // a repeat does not count twice
        t.record("c", session(1, None));
        assert_eq!(t.len(), 2);
        assert_eq!(t.owner("a"), None, "oldest forgotten");
        assert!(!t.may_see("a", session(1, None)), "forgotten: denied");
        assert!(!t.may_see("a", sessionless(None)), "forgotten: denied");
        assert_eq!(t.owner("c"), Some(1));
        t.release(1);
        assert_eq!((t.owner("b"), t.owner("c")), (Some(2), None));
        t.clear();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn held_requests_are_bounded_per_task_and_in_all_and_leave_no_trace() {
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        let limits = InputLimits {
            count: 3,
            per_task: 2,
            bytes: 400,
        };
        let mut t = TaskInputs::default();
        let entry = |n: usize| vec![b'x'; n].into_boxed_slice();
        let hold = |t: &mut TaskInputs, task: &str, id: &str, n: usize, at| {
            t.hold(
                task,
                id.as_bytes().into(),
                id.as_bytes(),
                "m",
                entry(n),
                at,
                limits,
            )
        };
        let a1 = hold(&mut t, "a", "1", 10, now + s(1)).unwrap();
        let a2 = hold(&mut t, "a", "2", 10, now + s(2)).unwrap();
        assert_ne!(a1, a2, "keys are never reused");
        assert_eq!(hold(&mut t, "a", "3", 10, now), Err(HoldRefused::Task));
        assert_eq!(
            hold(&mut t, "b", "4", 101, now),
            Err(HoldRefused::Task),
            "a task holds a quarter of the bytes"
        );
        hold(&mut t, "b", "5", 100, now + s(3)).unwrap();
        assert_eq!(hold(&mut t, "c", "6", 1, now), Err(HoldRefused::Child));
        assert!(t.contains(b"5") && !t.contains(b"6"));
        let keys: Vec<&str> = t.of_task("a").map(|h| h.key.as_str()).collect();
        assert_eq!(keys, [a1.as_str(), a2.as_str()], "oldest first");
        assert_eq!(t.next_deadline(), Some(now + s(1)));
        assert_eq!(
            t.take_key("b", &a1).map(|h| h.key),
            None,
            "another task's key"
        );
        assert_eq!(t.take_key("a", &a2).unwrap().raw_id.as_ref(), b"2");
        assert_eq!(t.due(now + s(1)).len(), 1);
        assert_eq!(t.take_task("b").len(), 1);
        assert_eq!((t.len(), t.bytes, t.next_deadline()), (0, 0, None));
    }

    #[test]
    fn a_task_holds_its_child_until_its_ttl_or_its_end() {
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        let mut t = TaskOwners::new(2);
        t.record("a", sessionless(None));
        t.record("b", sessionless(None));
        t.hold("a", now + s(2));
        t.hold("b", now + s(1));
        t.hold("unknown", now + s(9));
        assert_eq!(t.holding(now), 2);
        assert_eq!(t.next_hold_end(), Some(now + s(1)));
        assert_eq!(t.holding(now + s(1)), 1, "b's ttl ended");
        t.unhold("a");
        assert_eq!((t.holding(now), t.next_hold_end()), (0, None));
        t.hold("a", now + s(5));
        t.record("c", sessionless(None));
        t.record("d", sessionless(None));
        assert_eq!(t.holding(now), 0, "a forgotten task holds nothing");
        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","ttl":60000}}}"#;
        assert_eq!(created_ttl(answer), Some(60000));
        let unlimited = br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","ttl":null}}}"#;
        assert_eq!(created_ttl(unlimited), None);
    }

    #[test]
    fn task_ids_are_read_from_answers_params_and_meta() {
        let created =
            br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-1","status":"working"}}}"#;
        assert_eq!(created_task(created).as_deref(), Some("t-1"));
        assert_eq!(
            created_task(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            None
        );
        assert_eq!(task_param(br#"{"taskId":"t-2"}"#).as_deref(), Some("t-2"));
        assert_eq!(task_param(br#"{"taskId":7}"#), None);
        let notification = |params: &str| {
            let message = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{params}}}"#
            );
            Frame::parse(bytes::Bytes::from(message), false).unwrap()
        };
        let meta =
            r#"{"message":"?","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t-3"}}}"#;
        assert_eq!(related_task(&notification(meta)).as_deref(), Some("t-3"));
        let mention = r#"{"message":"io.modelcontextprotocol/related-task"}"#;
        assert_eq!(related_task(&notification(mention)), None);
    }

    #[test]
    fn list_answers_keep_only_what_the_caller_may_see() {
        let answer = br#"{"jsonrpc":"2.0","id":"x","result":{"tasks":[{"taskId":"a"},{"taskId":"b"}],"nextCursor":"c"}}"#;
        let kept: Value =
            serde_json::from_slice(&filter_list(answer, |id| id == "b").unwrap()).unwrap();
        assert_eq!(kept["result"]["tasks"], serde_json::json!([{"taskId":"b"}]));
        assert_eq!(kept["result"]["nextCursor"], "c");
        assert_eq!(kept["id"], "x");
        assert_eq!(
            filter_list(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}"#,
                |_| true
            )
            .as_deref(),
            Some(&br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}"#[..])
        );
    }

    /// Regression (review): a list answer serde_json could not build into
    /// a tree (`1e400`, a lone surrogate or nesting past its limit in any
    /// task) was not filtered, and went to the caller whole: every
    /// session's tasks, in shared mode, to any session that listed them.
    /// Each task is now read on its own; a caller gets only what it may
    /// see, or, when the list cannot be read at all, nothing of it.
    #[test]
    fn a_list_no_tree_can_hold_is_filtered_all_the_same_or_withheld() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for odd in ["1e400", r#""\udc00""#, deep.as_str()] {
            for (mine, theirs) in [("{}", odd), (odd, "{}")] {
                let answer = format!(
                    r#"{{"jsonrpc":"2.0","id":"x","result":{{"tasks":[{{"taskId":"theirs","x":{theirs}}},{{"taskId":"mine","x":{mine}}}],"nextCursor":"c"}}}}"#
                );
                let kept = filter_list(answer.as_bytes(), |id| id == "mine");
                let kept = String::from_utf8(kept.expect("a list")).unwrap();
                assert!(!kept.contains("theirs"), "{kept}");
                assert!(kept.contains(r#""taskId":"mine""#), "{kept}");
                assert!(kept.contains(r#""nextCursor":"c""#), "{kept}");
            }
        }
        // Whatever the list cannot say is withheld: a list that is no
        // array, a task id no string holds.
        for result in [
            r#"{"tasks":{"taskId":"theirs"}}"#,
            r#"{"tasks":[{"taskId":"\ud800theirs"}]}"#,
        ] {
            let answer = format!(r#"{{"jsonrpc":"2.0","id":"x","result":{result}}}"#);
            let kept = filter_list(answer.as_bytes(), |_| true);
            assert!(
                kept.as_deref()
                    .is_none_or(|k| !String::from_utf8_lossy(k).contains("theirs")),
                "{result}"
            );
        }
    }
}
