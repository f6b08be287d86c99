//! Which session owns which task (2025-11-25 `basic/utilities/tasks`).
//!
//! A shared child keeps one task table for everyone, so without help any
//! session could list, read, or cancel another session's tasks (transport.md
//! §4.6). The multiplexer records the owner of each task it sees created and
//! answers `tasks/get`, `tasks/result` and `tasks/cancel` for a task the
//! caller does not own with "task not found" (-32602) without asking the
//! child, filters `tasks/list` answers, and sends task-related messages to
//! the owner. Clients without an identity (stateless, 2026-07-28) own
//! nothing and see only tasks no session owns.
//!
//! The table is bounded: past `--max-tasks` the oldest entry is forgotten
//! (its task then belongs to no session), with a warning.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use crate::jsonrpc::Frame;

/// `_meta` key tying a message to a task.
pub const RELATED_TASK_KEY: &str = "io.modelcontextprotocol/related-task";

/// Task id → owning port, oldest first.
pub struct TaskOwners {
    owner: HashMap<Box<str>, u64>,
    order: VecDeque<Box<str>>,
    cap: usize,
    forgotten: u64,
}

impl Default for TaskOwners {
    fn default() -> TaskOwners {
        TaskOwners::new(crate::config::DEFAULT_MAX_TASKS)
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
        }
    }

    /// Records that `port` created `task_id`.
    pub fn record(&mut self, task_id: &str, port: u64) {
        if self.owner.insert(task_id.into(), port).is_none() {
            self.order.push_back(task_id.into());
        }
        while self.owner.len() > self.cap {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.owner.remove(&oldest).is_some() {
                self.forgotten += 1;
                if self.forgotten.is_power_of_two() {
                    warn!(
                        forgotten = self.forgotten,
                        limit = self.cap,
                        "task table full (--max-tasks); the oldest tasks no longer belong to a session"
                    );
                }
            }
        }
    }

    /// Whether a caller may see `task_id`: its owner may; a caller with no
    /// identity may see only tasks that no session owns.
    pub fn may_see(&self, task_id: &str, port: u64, has_identity: bool) -> bool {
        match self.owner.get(task_id) {
            Some(owner) => *owner == port,
            None => !has_identity,
        }
    }

    /// The port that owns `task_id`.
    pub fn owner(&self, task_id: &str) -> Option<u64> {
        self.owner.get(task_id).copied()
    }

    /// Forgets every task of a session that ended.
    pub fn release(&mut self, port: u64) {
        let before = self.owner.len();
        self.owner.retain(|_, p| *p != port);
        if self.owner.len() != before {
            let owner = &self.owner;
            self.order.retain(|id| owner.contains_key(id));
        }
    }

    /// Forgets everything (the child that held the tasks is gone).
    pub fn clear(&mut self) {
        self.owner.clear();
        self.order.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owner.len()
    }
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

/// A `tasks/list` answer with only the tasks `keep` accepts; `None` when it
/// is not a list result (an error passes unchanged).
pub fn filter_list(answer: &[u8], keep: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(answer).ok()?;
    let tasks = v.pointer_mut("/result/tasks")?.as_array_mut()?;
    tasks.retain(|t| t.get("taskId").and_then(Value::as_str).is_some_and(&keep));
    Some(serde_json::to_vec(&v).expect("Value serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_see_their_tasks_and_anonymous_callers_only_unowned_ones() {
        let mut t = TaskOwners::new(10);
        t.record("a", 1);
        assert!(t.may_see("a", 1, true));
        assert!(!t.may_see("a", 2, true));
        assert!(
            !t.may_see("a", 3, false),
            "anonymous callers cannot see owned tasks"
        );
        assert!(!t.may_see("unknown", 1, true));
        assert!(t.may_see("unknown", 3, false));
    }

    #[test]
    fn the_table_forgets_the_oldest_past_its_cap_and_a_sessions_tasks_on_release() {
        let mut t = TaskOwners::new(2);
        t.record("a", 1);
        t.record("b", 2);
        t.record("a", 1); // a repeat does not count twice
        t.record("c", 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.owner("a"), None, "oldest forgotten");
        assert_eq!(t.owner("c"), Some(1));
        t.release(1);
        assert_eq!((t.owner("b"), t.owner("c")), (Some(2), None));
        t.record("d", 3);
        t.record("e", 3);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.owner("b"),
            None,
            "released entries do not hold places in the order"
        );
        t.clear();
        assert_eq!(t.len(), 0);
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
            ),
            None
        );
    }
}
