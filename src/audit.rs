//! The audit log: one JSON object per security-relevant event, on the
//! tracing target `audit` and, with `--audit-log FILE`, appended to FILE.
//!
//! Events: `auth.success` (principal, method, ip), `auth.failure` (reason,
//! ip), `session.create` / `session.delete` / `session.expire` (principal,
//! session), `child.spawn` (command, pid, owner), `child.exit` (pid, code or
//! signal), `tools.call` (principal, server, tool, outcome, error code,
//! whether a client took the answer, duration; see [`ToolCall`]) and `secret` (a credential-store read or
//! write: principal, server, name, action, outcome; see
//! [`crate::store`]). A record
//! never holds a credential, a header value or tool arguments: callers pass
//! only the fields named here.
//!
//! The file is written by a thread of its own ([`LineWriter`]): a slow or
//! full filesystem never stops the runtime. A record that finds the queue
//! full, or whose write fails, is dropped, counted (`/health`'s
//! `audit_records_dropped`) and reported in the log; the proxy goes on.
//! Records go to whatever file the path names when they are written: a
//! file moved away (rotated) or deleted is followed by a new one at the
//! path ([`AuditFile`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::{Level, info, warn};

use crate::auth::principal::Principal;
use crate::jsonrpc::{Frame, Kind, Message};
use crate::upstream::AnswerWatch;
use crate::writer::{LineWriter, Report};

/// How long the end of a run waits for queued records to reach the file.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Where audit records go.
#[derive(Default)]
pub struct Audit {
    file: Option<LineWriter>,
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
    /// (created if missing, appended to, mode 0600; made again if moved
    /// or deleted), with up to
    /// `queue_bytes` of records waiting for it.
    pub fn open(path: Option<&Path>, queue_bytes: usize) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => {
                let file = AuditFile::open(p)?;
                let mut failed = false;
                Some(LineWriter::start(
                    "audit-writer",
                    queue_bytes,
                    file,
                    move |_, report| match report {
                        Report::Failed(e) if !failed => {
                            failed = true;
                            warn!(error = %e, "writing the audit log failed; its records are dropped and counted until a write succeeds");
                        }
                        Report::Failed(_) => {}
                        Report::Dropped { total } => {
                            failed = false;
                            warn!(
                                total,
                                "audit log records dropped so far (the file was slow or failing)"
                            );
                        }
                    },
                ))
            }
            None => None,
        };
        Ok(Audit { file })
    }

    /// Records dropped on the way to the audit file (queue full or a failed
    /// write).
    pub fn dropped(&self) -> u64 {
        self.file.as_ref().map_or(0, LineWriter::dropped)
    }

    /// Waits up to `within` for queued records to reach the file (at the
    /// end of a run), on the blocking pool.
    pub async fn flush(self: &Arc<Self>, within: Duration) {
        if self.file.is_none() {
            return;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(f) = &me.file {
                f.flush(within);
            }
        })
        .await;
    }

    /// Whether records go anywhere (the file, or a log that takes them).
    pub fn enabled(&self) -> bool {
        self.file.is_some() || tracing::enabled!(target: "audit", Level::INFO)
    }

    /// Writes one record: `event` plus `fields` (an object).
    pub fn emit(&self, event: &str, fields: Value) {
        self.emit_fields(event, &fields);
    }

    /// [`Audit::emit`] for any fields that serialize as an object (a
    /// struct costs less to write than a `Value` built for it).
    fn emit_fields(&self, event: &str, fields: &impl serde::Serialize) {
        if !self.enabled() {
            return;
        }
        let mut line = record_head(event);
        let at = line.len();
        // Invariant: plain structs serialize (to a Vec, which cannot fail
        // to take the bytes).
        serde_json::to_writer(&mut line, fields).expect("audit fields serialize");
        if line[at..].starts_with(b"{}") || line.get(at) != Some(&b'{') {
            line.truncate(at);
            line.push(b'}');
        } else {
            line[at] = b',';
        }
        self.send(line);
    }

    /// Hands a whole record on to the log and the file.
    fn send(&self, mut line: Vec<u8>) {
        if tracing::enabled!(target: "audit", Level::INFO) {
            crate::logging::audit_record(&line);
        }
        if let Some(file) = &self.file {
            line.push(b'\n');
            file.send(line);
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

    /// A request was refused by the failed-authentication limiter;
    /// `not_recorded` such refusals before it had no record of their own.
    pub fn auth_rate_limited(&self, ip: IpAddr, not_recorded: u64) {
        self.emit(
            "auth.failure",
            json!({ "reason": "rate limited", "ip": ip.to_string(), "not_recorded": not_recorded }),
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

    /// A `tools/call` finished (see [`ToolCall`], which calls this). The
    /// commonest record, one per call: its members are written in place
    /// (literal keys; only the values that come from outside are escaped)
    /// rather than through a struct's serializer.
    pub fn tool_call(&self, call: &ToolCall, outcome: Outcome, duration_ms: u64, delivered: bool) {
        if !self.enabled() {
            return;
        }
        // Invariant: strs and numbers serialize (to a Vec, which cannot
        // fail to take the bytes).
        fn value(line: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
            serde_json::to_writer(line, v).expect("a str or a number serializes");
        }
        let mut line = record_head("tools.call");
        line.extend_from_slice(br#","principal":"#);
        value(&mut line, call.principal.name());
        line.extend_from_slice(br#","method":""#);
        line.extend_from_slice(call.principal.method().as_str().as_bytes());
        line.extend_from_slice(br#"","server":"#);
        match call.server.as_deref() {
            Some(server) => value(&mut line, server),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(br#","tool":"#);
        value(&mut line, &call.tool);
        line.extend_from_slice(br#","outcome":""#);
        line.extend_from_slice(outcome.name().as_bytes());
        line.extend_from_slice(br#"","code":"#);
        match outcome.code() {
            Some(code) => value(&mut line, &code),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(br#","delivered":"#);
        value(&mut line, &delivered);
        line.extend_from_slice(br#","duration_ms":"#);
        value(&mut line, &duration_ms);
        line.push(b'}');
        self.send(line);
    }
}

/// The start of a record, `{"ts_ms":…,"event":…`, its members to follow.
fn record_head(event: &str) -> Vec<u8> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(br#"{"ts_ms":"#);
    // Invariant: a number and a str serialize (to a Vec, which cannot fail
    // to take the bytes).
    serde_json::to_writer(&mut line, &ts).expect("a number serializes");
    line.extend_from_slice(br#","event":"#);
    serde_json::to_writer(&mut line, event).expect("a str serializes");
    line
}

/// Opens `path` as [`Audit::open`] will, so that the binary can refuse a
/// path that cannot work as bad configuration (exit 64) before anything
/// starts. The caller holds the file until [`Audit::open`] has run: a
/// named pipe's reader then sees no end of input between the two opens.
pub fn check_path(path: &Path) -> std::io::Result<std::fs::File> {
    open_append(path)
}

/// The audit file as the writer thread sees it: whatever file its path
/// names when a write comes. Before each write it checks that the path
/// still names the file it holds; one moved away (a rotation: rename, and
/// a new file is expected) or deleted is let go, and the path opened again
/// (created, 0600), so records are never written where no reader looks:
/// into a rotated file for ever, or into a deleted one, uncounted. One
/// `stat` per write, and the writer writes a batch at a time, at most
/// one batch per [`crate::writer`] gathering pause. When the path cannot
/// be opened again (its directory is gone), the write fails: its records
/// are dropped and counted, and the next write tries again.
struct AuditFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    /// Device and inode of `file`.
    id: (u64, u64),
}

impl AuditFile {
    fn open(path: &Path) -> std::io::Result<AuditFile> {
        use std::os::unix::fs::MetadataExt;
        let file = open_append(path)?;
        let meta = file.metadata()?;
        Ok(AuditFile {
            path: path.to_path_buf(),
            file,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Opens the path again if it no longer names the file held.
    fn follow_path(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if !same {
            *self = AuditFile::open(&self.path)?;
            info!(path = %self.path.display(), "reopened the audit log: its file was moved or deleted");
        }
        Ok(())
    }
}

impl std::io::Write for AuditFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.follow_path()?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Opens (creating, mode 0600) the audit file for appending, without ever
/// blocking: a named pipe with no reader would otherwise hold the start
/// in `open` for good, past SIGTERM. Such a pipe is refused; one with a
/// reader is taken, and its writes may then block the writer thread only.
/// A directory or a device is refused too.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ENXIO) {
                std::io::Error::other("it is a named pipe that nobody reads")
            } else {
                e
            }
        })?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return Err(std::io::Error::other(
            "it is not a regular file (nor a named pipe)",
        ));
    }
    // Blocking again: the writer thread waits for a slow file, the queue
    // in front of it takes the pressure (crate::writer).
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

/// Longest tool name recorded (a client chooses it; the rest is cut).
const MAX_TOOL_NAME: usize = 128;

/// Answers up to this size are read for their outcome (an error code,
/// `isError`, `input_required`). A larger one is not read again: that
/// would cost the child's reader time in proportion to its size, and
/// errors are small. It is recorded as [`Outcome::Unchecked`].
const OUTCOME_PEEK_BYTES: usize = 64 * 1024;

/// How a `tools/call` ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result.
    Ok,
    /// A result with `isError: true` (the tool failed; the call did not).
    ToolError,
    /// A 2026-07-28 `input_required` result: the client is asked for input
    /// and retries (the retry is a call of its own).
    InputRequired,
    /// A JSON-RPC error, with its code.
    Error(i64),
    /// The proxy's `--request-timeout` ended it, with the code of the
    /// error its client got (-32000 in the session era, -32603 for
    /// 2026-07-28: see `crate::upstream::proxy_failure_code`).
    Timeout(i64),
    /// No answer went back: the client cancelled, went away, or its
    /// session ended first.
    Cancelled,
    /// An answer too large to be read again ([`OUTCOME_PEEK_BYTES`]):
    /// it went back, what it said is not known.
    Unchecked,
}

impl Outcome {
    /// The `outcome` field.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::InputRequired => "input_required",
            Outcome::Error(_) => "error",
            Outcome::Timeout(_) => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Unchecked => "unchecked",
        }
    }

    /// The `code` field: the JSON-RPC error code, if any.
    pub fn code(self) -> Option<i64> {
        match self {
            Outcome::Error(c) | Outcome::Timeout(c) => Some(c),
            _ => None,
        }
    }

    /// Reads an answer (a JSON-RPC response) for its outcome.
    pub fn of_answer(message: &[u8]) -> Outcome {
        use crate::jsonrpc::{code::INTERNAL_ERROR, locate_checked};
        // What is read below cannot be there without one of these words
        // in the text, or an escape that could spell one: the common
        // plain result skips the rest. (Answers reach this point parsed
        // as JSON-RPC already; a text that is not an object still gets
        // the check below and its error.)
        let may_say = |word: &[u8]| crate::jsonrpc::contains(message, word);
        if !(crate::jsonrpc::may_have_error(message)
            || may_say(b"isError")
            || may_say(b"input_required"))
            && message.starts_with(b"{")
        {
            return Outcome::Ok;
        }
        // Each member is read where it lies (the last copy of a repeated
        // one, as elsewhere), never the whole answer into a tree: what
        // lies beside them (`1e400`, nesting past serde_json's limit in
        // `structuredContent` or `data`) is the client's to read, and does
        // not make a call that succeeded look failed.
        // The answer went through the proxy's parse already, so a text
        // without a backslash is walked rather than parsed for each.
        fn member<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
            locate_checked(json, &[key]).map(|r| &json[r])
        }
        fn read<T: serde::de::DeserializeOwned>(json: &[u8], key: &str) -> Option<T> {
            serde_json::from_slice(member(json, key)?).ok()
        }
        if let Some(error) = member(message, "error").filter(|e| *e != b"null") {
            // Whatever its text says: the proxy's own timeout is not read
            // from an answer (a child can write any), it is told apart
            // (`AnswerWatch::failed`).
            let code = member(error, "code").and_then(crate::jsonrpc::integer_code);
            return Outcome::Error(code.unwrap_or(INTERNAL_ERROR));
        }
        let Some(result) = member(message, "result") else {
            // Neither member: an answer of nothing, or not JSON at all.
            return match serde_json::from_slice::<serde::de::IgnoredAny>(message) {
                Ok(_) => Outcome::Ok,
                Err(_) => Outcome::Error(INTERNAL_ERROR),
            };
        };
        let result_type = read::<String>(result, "resultType");
        let is_error = read::<bool>(result, "isError");
        if result_type.as_deref() == Some("input_required") {
            Outcome::InputRequired
        } else if is_error == Some(true) {
            Outcome::ToolError
        } else {
            Outcome::Ok
        }
    }
}

/// One client's `tools/call`, from the moment it is handed to the child
/// until its answer goes back: records `tools.call` exactly once, with
/// [`ToolCall::answered`], or as [`Outcome::Cancelled`] when dropped
/// unanswered. Holds the tool's name only, never its arguments.
pub struct ToolCall {
    audit: Arc<Audit>,
    principal: Principal,
    server: Option<Arc<str>>,
    tool: String,
    started: Instant,
    recorded: bool,
}

impl std::fmt::Debug for ToolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCall")
            .field("tool", &self.tool)
            .finish()
    }
}

impl ToolCall {
    /// The record of `frame` if it is a `tools/call` request and audit
    /// records are written at all.
    pub fn start(
        audit: &Arc<Audit>,
        principal: &Principal,
        server: Option<&Arc<str>>,
        frame: &Frame,
    ) -> Option<ToolCall> {
        if frame.kind() != Kind::Request || frame.method() != Some("tools/call") {
            return None;
        }
        if !audit.enabled() {
            return None;
        }
        let mut tool = frame
            .locate_in_params(&["name"])
            .and_then(|at| match &frame.bytes()[at] {
                // A string without escapes is its bytes (the frame is UTF-8).
                [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
                    std::str::from_utf8(inner).ok().map(str::to_owned)
                }
                raw => serde_json::from_slice::<String>(raw).ok(),
            })
            .unwrap_or_default();
        if tool.len() > MAX_TOOL_NAME {
            let mut end = MAX_TOOL_NAME;
            while !tool.is_char_boundary(end) {
                end -= 1;
            }
            tool.truncate(end);
        }
        Some(ToolCall {
            audit: audit.clone(),
            principal: principal.clone(),
            server: server.cloned(),
            tool,
            started: Instant::now(),
            recorded: false,
        })
    }

    /// The answer goes back to the client now.
    pub fn answered(self, message: &Message) {
        self.handed_over(message, true);
    }

    /// The answer goes back now, to a client that is there to take it
    /// (`taken`) or to one that had gone: recorded with its outcome all
    /// the same (the child did the work), and `"delivered": false`.
    pub fn handed_over(mut self, message: &Message, taken: bool) {
        let outcome = if message.len() > OUTCOME_PEEK_BYTES {
            Outcome::Unchecked
        } else {
            Outcome::of_answer(&message.contiguous())
        };
        self.record(outcome, taken);
    }

    fn record(&mut self, outcome: Outcome, delivered: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let ms = self.started.elapsed().as_millis() as u64;
        self.audit.tool_call(self, outcome, ms, delivered);
    }
}

impl Drop for ToolCall {
    fn drop(&mut self) {
        // No answer of the server's went back.
        self.record(Outcome::Cancelled, false);
    }
}

impl AnswerWatch for ToolCall {
    fn answered(self: Box<Self>, message: &Message) {
        ToolCall::answered(*self, message);
    }

    fn handed_over(self: Box<Self>, message: &Message, taken: bool) {
        ToolCall::handed_over(*self, message, taken);
    }

    fn failed(mut self: Box<Self>, _: &Message, taken: bool, code: i64, timed_out: bool) {
        let outcome = if timed_out {
            Outcome::Timeout(code)
        } else {
            Outcome::Error(code)
        };
        self.record(outcome, taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_answer() {
        let cases: [(&str, Outcome); 18] = [
            // Regression (review): a code written with a fraction or an
            // exponent is the integer every JavaScript client reads; it
            // was recorded as -32603, a code no client got.
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602.0,"message":"m"}}"#,
                Outcome::Error(-32602),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-3.2601e4,"message":"m"}}"#,
                Outcome::Error(-32601),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#,
                Outcome::Ok,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
                Outcome::ToolError,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"x"}}"#,
                Outcome::InputRequired,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unknown tool: x"}}"#,
                Outcome::Error(-32602),
            ),
            // The text of the proxy's own timeout, written by a child: its
            // error (only the proxy's deadline makes a timeout).
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"request timed out after 2000 ms"}}"#,
                Outcome::Error(-32000),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"request timed out after 2000 ms"}}"#,
                Outcome::Error(-32603),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"the MCP server process exited"}}"#,
                Outcome::Error(-32000),
            ),
            // A code no parser can hold, or none: still an error.
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"message":"?"}}"#,
                Outcome::Error(crate::jsonrpc::code::INTERNAL_ERROR),
            ),
            (
                "not json",
                Outcome::Error(crate::jsonrpc::code::INTERNAL_ERROR),
            ),
            // The words in a tool's text are not members; members spelled
            // with escapes are.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"an error, not a tool error"}]}}"#,
                Outcome::Ok,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"error\""}],"isError":false}}"#,
                Outcome::Ok,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"code":-32602,"message":"x"}}"#,
                Outcome::Error(-32602),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"is\u0045rror":true}}"#,
                Outcome::ToolError,
            ),
            // A result that is not an object, or whose members have other
            // types, is an ordinary one, whether or not its text holds
            // the words the prefilter looks for.
            (r#"{"jsonrpc":"2.0","id":1,"result":"done"}"#, Outcome::Ok),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":"isError"}"#,
                Outcome::Ok,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"yes"}}"#,
                Outcome::Ok,
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(Outcome::of_answer(answer.as_bytes()), want, "{answer}");
        }
        // Regression (review): what a result holds beside the members read
        // (a number no double holds, nesting past serde_json's 128 levels)
        // made the answer unreadable, and a call that succeeded was
        // recorded as an error, -32603, the code of no answer its client got.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for (result, want) in [
            (
                r#"{"content":[],"isError":false,"structuredContent":{"n":1e400}}"#.to_string(),
                Outcome::Ok,
            ),
            (
                format!(r#"{{"content":[],"isError":true,"structuredContent":{deep}}}"#),
                Outcome::ToolError,
            ),
            (
                r#"{"resultType":"input_required","requestState":"x","n":1e400}"#.to_string(),
                Outcome::InputRequired,
            ),
        ] {
            let answer = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
            assert_eq!(Outcome::of_answer(answer.as_bytes()), want, "{result}");
        }
        let answer = format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32602,"message":"m","data":{deep}}}}}"#
        );
        assert_eq!(
            Outcome::of_answer(answer.as_bytes()),
            Outcome::Error(-32602)
        );
        // The record says the code the client got.
        let timed_out = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"request timed out after 2000 ms"}}"#;
        assert_eq!(
            Outcome::of_answer(timed_out.as_bytes()).code(),
            Some(-32603)
        );
    }

    /// An audit log of its own in a fresh temporary directory: the
    /// directory, the file and the log.
    fn audit_in_temp(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, Arc<Audit>) {
        let dir = std::env::temp_dir().join(format!("mcp-audit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let audit = Arc::new(Audit::open(Some(&path), 1 << 20).unwrap());
        (dir, path, audit)
    }

    #[test]
    fn a_call_record_escapes_what_comes_from_outside() {
        let (dir, path, audit) = audit_in_temp("escape");
        let name = "al\"ice\\\n\u{1}é";
        let who = Principal::new(crate::auth::principal::AuthMethod::Jwt, name);
        let call = Frame::parse(
            bytes::Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t\"o\\ol\n\u0007"}}"#,
            ),
            true,
        )
        .unwrap();
        let server: Arc<str> = Arc::from("s\"v");
        ToolCall::start(&audit, &who, Some(&server), &call)
            .unwrap()
            .answered(
                &bytes::Bytes::from_static(
                    br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#,
                )
                .into(),
            );
        assert!(audit.file.as_ref().unwrap().flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let record: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "code",
                "delivered",
                "duration_ms",
                "event",
                "method",
                "outcome",
                "principal",
                "server",
                "tool",
                "ts_ms"
            ]
        );
        assert_eq!(record["event"], "tools.call");
        assert_eq!(record["principal"], name);
        assert_eq!(record["method"], "jwt");
        assert_eq!(record["server"], "s\"v");
        assert_eq!(record["tool"], "t\"o\\ol\n\u{7}");
        assert_eq!(record["outcome"], "error");
        assert_eq!(record["code"], -32601);
        assert_eq!(record["delivered"], true);
        assert!(record["duration_ms"].is_u64() && record["ts_ms"].is_u64());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_call_is_recorded_once_and_an_unanswered_one_as_cancelled() {
        let (dir, path, audit) = audit_in_temp("unit");
        let who = Principal::new(crate::auth::principal::AuthMethod::ApiKey, "alice");
        let frame =
            |s: &'static str| Frame::parse(bytes::Bytes::from_static(s.as_bytes()), true).unwrap();
        let call = frame(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"arg-secret"}}}"#,
        );
        let list = frame(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert!(ToolCall::start(&audit, &who, None, &list).is_none());
        let answered = ToolCall::start(&audit, &who, Some(&Arc::from("coda")), &call).unwrap();
        answered.answered(
            &bytes::Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).into(),
        );
        drop(ToolCall::start(&audit, &who, None, &call).unwrap());
        // An answer over the peek size is not read again, even if it is an error.
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32000,"message":"x","data":"{}"}}}}"#,
            "y".repeat(OUTCOME_PEEK_BYTES)
        );
        ToolCall::start(&audit, &who, None, &call)
            .unwrap()
            .answered(&bytes::Bytes::from(big).into());
        assert!(audit.file.as_ref().unwrap().flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 3, "{text}");
        assert_eq!(records[0]["outcome"], "ok");
        assert_eq!(records[0]["server"], "coda");
        assert_eq!(records[0]["tool"], "echo");
        assert_eq!(records[1]["outcome"], "cancelled");
        assert!(records[1]["server"].is_null());
        assert_eq!(records[2]["outcome"], "unchecked");
        assert!(records[2]["code"].is_null());
        assert!(!text.contains("arg-secret"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The events of the records in the file at `path` (none if it is gone).
    fn events_at(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["event"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// Regression: the file was opened once, at start. Moved away (the
    /// `create` rotation of logrotate: rename, then a new file is
    /// expected) every later record went to the moved file, and deleted
    /// they went to a file no name reaches: nothing was ever written at
    /// the path again, and none of it was counted as dropped (with the
    /// binary: 3 records, `mv audit.log audit.log.1`, 9 more records all in
    /// `audit.log.1`; `rm` it, 9 more records gone, `audit_records_dropped`
    /// 0). The writer now follows the path.
    #[test]
    fn records_follow_the_path_when_the_file_is_moved_or_deleted() {
        let (dir, path, audit) = audit_in_temp("follow");
        let file = audit.file.as_ref().unwrap();
        audit.emit("one", json!({}));
        assert!(file.flush(Duration::from_secs(5)));
        let moved = dir.join("audit.log.1");
        std::fs::rename(&path, &moved).unwrap();
        audit.emit("two", json!({}));
        assert!(file.flush(Duration::from_secs(5)));
        assert_eq!(
            events_at(&moved),
            ["one"],
            "the moved file is left as it was"
        );
        assert_eq!(events_at(&path), ["two"], "a new file at the path");
        std::fs::remove_file(&path).unwrap();
        audit.emit("three", json!({}));
        assert!(file.flush(Duration::from_secs(5)));
        assert_eq!(events_at(&path), ["three"], "a deleted file is made again");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "made owner-only, as at start");
        assert_eq!(audit.dropped(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
