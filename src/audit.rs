//! The audit log: one JSON object per security-relevant event, on the
//! tracing target `audit` and, with `--audit-log FILE`, appended to FILE.
//!
//! Events: `auth.success` (principal, method, ip), `auth.failure` (reason,
//! ip), `session.create` / `session.delete` / `session.expire` (principal,
//! session), `child.spawn` (command, pid, owner), `child.exit` (pid, code or
//! signal) and `tools.call` (principal, tool, outcome, duration). A record
//! never holds a credential, a header value or tool arguments: callers pass
//! only the fields named here. A failed write is reported once and never
//! stops the proxy.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::{Level, warn};

use crate::auth::Principal;

/// Where audit records go.
#[derive(Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
    write_failed: AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("file", &self.file.is_some())
            .finish()
    }
}

impl Audit {
    /// Records to the `audit` tracing target and, if given, to `path`
    /// (created if missing, appended to, mode 0600).
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(Audit {
            file,
            write_failed: AtomicBool::new(false),
        })
    }

    fn enabled(&self) -> bool {
        self.file.is_some() || tracing::enabled!(target: "audit", Level::INFO)
    }

    /// Writes one record: `event` plus `fields` (an object).
    pub fn emit(&self, event: &str, fields: Value) {
        if !self.enabled() {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut record = json!({ "ts_ms": ts, "event": event });
        if let (Some(r), Value::Object(f)) = (record.as_object_mut(), fields) {
            r.extend(f);
        }
        let line = record.to_string();
        tracing::info!(target: "audit", "{line}");
        if let Some(file) = &self.file {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let r = f.write_all(format!("{line}\n").as_bytes());
            if let Err(e) = r
                && !self.write_failed.swap(true, Ordering::Relaxed)
            {
                warn!(error = %e, "writing the audit log failed; records go to the log only");
            }
        }
    }

    /// A request authenticated.
    pub fn auth_success(&self, p: &Principal, ip: IpAddr) {
        self.emit(
            "auth.success",
            json!({ "principal": p.name(), "method": p.method().as_str(), "email": p.email(), "ip": ip.to_string() }),
        );
    }

    /// A request was refused.
    pub fn auth_failure(&self, reason: &str, ip: IpAddr) {
        self.emit(
            "auth.failure",
            json!({ "reason": reason, "ip": ip.to_string() }),
        );
    }

    /// A session was created, deleted or expired.
    pub fn session(&self, event: &str, p: &Principal, session: &str, why: Option<&str>) {
        self.emit(
            event,
            json!({ "principal": p.name(), "method": p.method().as_str(), "session": session, "reason": why }),
        );
    }

    /// A child was started.
    pub fn child_spawn(&self, command: &str, pid: Option<u32>, owner: &str) {
        self.emit(
            "child.spawn",
            json!({ "command": command, "pid": pid, "owner": owner }),
        );
    }

    /// A child ended.
    pub fn child_exit(&self, pid: Option<u32>, exit: crate::child::Exit) {
        let (code, signal) = match exit {
            crate::child::Exit::Code(c) => (Some(c), None),
            crate::child::Exit::Signal(s) => (None, Some(s)),
            crate::child::Exit::Running => (None, None),
        };
        self.emit(
            "child.exit",
            json!({ "pid": pid, "code": code, "signal": signal }),
        );
    }

    /// A `tools/call` finished.
    pub fn tool_call(&self, p: &Principal, tool: &str, outcome: &str, duration_ms: u64) {
        self.emit(
            "tools.call",
            json!({ "principal": p.name(), "method": p.method().as_str(), "tool": tool, "outcome": outcome, "duration_ms": duration_ms }),
        );
    }
}
