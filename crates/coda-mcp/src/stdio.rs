//! The stdio front of `coda-mcp`: one bounded reader of stdin and one
//! writer of stdout, and rmcp's transport ([`FrontTransport`]) between them
//! on two bounded channels. It owns framing and the answers to lines that
//! are not messages; the protocol itself (sessions, methods, rmcp's own
//! errors) stays rmcp's.
//!
//! Why it exists: rmcp's stdio transport ignores a line it cannot parse
//! (rust-sdk #938), drops a line over its cap, and answers JSON of the
//! wrong shape without any `id`. A client that sent such a line waits for
//! an answer until its own timeout. Here every line is read first and
//! parsed once, as rmcp's own message type; one that parses goes to rmcp as
//! that message (rmcp does not parse it again), the others are classified
//! ([`classify`]) as JSON-RPC 2.0 (§4, §5, §5.1) says:
//!
//! - not JSON (`NaN`, a cut line, invalid UTF-8): -32700 with
//!   `"id": null`, since the id cannot be read;
//! - JSON but not a message (a batch array, which MCP 2025-06-18 removed, a
//!   number, an object without `"jsonrpc": "2.0"`): -32600, with the
//!   object's id when it is a string or integer, else `null`;
//! - an object rmcp's message type cannot read (params that are not an
//!   object, an id that is null or fractional, both `result` and `error`):
//!   -32600, with its id when usable (never a response's: that id is ours);
//! - a request nested deeper than serde_json's 128 levels, or with a number
//!   past an `f64`'s range (`1e400`): -32600 or -32602 with its id
//!   ([`past_parser_limits`]; such a notification gets no answer);
//! - a notification rmcp cannot read: no answer (§4.1 forbids one), a line
//!   on stderr;
//! - a line over `--max-line-bytes`: skipped up to its newline without
//!   being buffered, answered -32600 with `"id": null` naming the limit;
//! - a request with a number serde_json would round (an integer past 64
//!   bits, more digits than an `f64` holds): -32602 with its id, naming
//!   where it is, the number and what it would become; it never reaches rmcp, so it
//!   is never written to Coda changed ([`inexact_number`]);
//! - a request with a key twice in one object (`"values": {"Status":
//!   "Done", "Status": "Todo"}`): -32602 with its id, naming where (or
//!   -32600 for a member of the envelope, without an id when `id` is the
//!   one twice). serde_json keeps the last silently, so one of the values
//!   the client sent would be dropped without a word (and a parser that
//!   keeps the first reads another message);
//! - a blank line: ignored, as rmcp does;
//! - anything else reaches rmcp as the message it parsed to, in order, and
//!   rmcp answers.
//!
//! Stdout has one writer and one queue of whole lines: rmcp's messages,
//! serialized as rmcp's codec does (JSON and `\n`), and the error lines, so
//! the two never interleave. Nothing grows without bound: one line buffer
//! of at most the cap, [`INPUT_QUEUE`] parsed messages waiting for rmcp,
//! [`OUTPUT_QUEUE`] lines waiting for stdout (an error line is a few
//! hundred bytes: an echoed id is at most [`MAX_ECHOED_ID_BYTES`]). A full
//! queue makes its sender wait, which is backpressure on stdin and on rmcp.
//!
//! rmcp itself reads on while answers wait: it runs each request in a
//! task of its own and each answer's write in another, so a client that
//! sends requests and does not read stdout had every answer held in
//! memory (6000 `tools/list` took 440 MB, and on without end). So at most
//! `--max-pending-requests` requests are between stdin and their answer
//! ([`Pending`]): each takes a permit when it is read, and gives it back
//! when its answer has been written to stdout, or when the client cancels
//! it (rmcp then sends no answer). With none left, stdin is not read until
//! an answer is written; a warning says so once each time.
//!
//! End of stdin ends rmcp's input, so the server stops as it always did;
//! the writer then writes what is still queued and returns.

use std::io;

use rmcp::RoleServer;
use rmcp::model::RequestId;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// JSON-RPC 2.0 §5.1: invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0 §5.1: the JSON sent is not a valid Request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0 §5.1: invalid method parameters (here: a number that
/// would not arrive as written, see [`inexact_number`]).
pub const INVALID_PARAMS: i32 = -32602;

/// Buffer of the stdin reader; a line buffer grown past it by a long line
/// is let go once that line is handled.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Parsed messages waiting for rmcp. One: a message can be the parse of a
/// line of `--max-line-bytes`, and rmcp takes them one at a time.
pub const INPUT_QUEUE: usize = 1;
/// Lines (rmcp's and the error lines) waiting for the writer. When full,
/// rmcp's sends and the reader wait.
pub const OUTPUT_QUEUE: usize = 32;
/// Longest string id echoed in an error; a longer one is answered with
/// `null`, so that an error line stays small.
pub const MAX_ECHOED_ID_BYTES: usize = 1024;
/// Longest error message (a serde message can quote the input).
const MAX_MESSAGE_CHARS: usize = 200;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to do with one line of stdin.
#[derive(Debug)]
pub enum Verdict {
    /// Hand rmcp the message the line parsed to.
    Forward(Box<RxJsonRpcMessage<RoleServer>>),
    /// A blank line: nothing to do, as rmcp does.
    Blank,
    /// A notification nothing is answered to; the reason is logged.
    Ignore(&'static str),
    /// Answer with this error; rmcp never sees the line.
    Reject(Rejection),
}

/// A JSON-RPC error response this layer writes itself.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    pub code: i32,
    pub message: String,
    /// `None` is written as `"id": null` (JSON-RPC 2.0 §5).
    pub id: Option<RequestId>,
}

impl Rejection {
    fn new(code: i32, message: impl Into<String>, id: Option<RequestId>) -> Self {
        let mut message = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        Rejection { code, message, id }
    }

    /// The answer to a line longer than `max_line_bytes`.
    pub fn too_long(max_line_bytes: usize) -> Self {
        Rejection::new(
            INVALID_REQUEST,
            format!(
                "Invalid Request: message longer than the {max_line_bytes}-byte line limit \
                 (--max-line-bytes, CODA_MAX_LINE_BYTES); it was skipped"
            ),
            None,
        )
    }

    /// The answer to bytes that stdin's end cut off without a newline.
    pub fn unterminated() -> Self {
        Rejection::new(
            PARSE_ERROR,
            "Parse error: stdin ended inside a message (every message ends with a newline)",
            None,
        )
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let id = self
            .id
            .clone()
            .map_or(Value::Null, RequestId::into_json_value);
        let msg = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": self.code, "message": self.message},
        });
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        line
    }
}

/// Decide what happens to one line (its `\n` optional). Pure: the unit
/// tests and the reader both call it.
///
/// The line is parsed as rmcp's own message type, so that "rmcp can read
/// it" means exactly that and not a guess, and the message goes to rmcp
/// parsed: a valid line is parsed once, as before the front existed. Only
/// a line that fails is looked at closer (parsed again as a `Value`).
pub fn classify(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // rmcp skips a UTF-8 BOM (RFC 8259 §8.1 allows it); so do we.
    let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Blank;
    }
    let unreadable = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(msg) => {
            if let rmcp::model::JsonRpcMessage::Request(req) = &msg {
                match inexact_number(line) {
                    Some(Finding::Inexact(Inexact {
                        token,
                        became,
                        path,
                    })) => {
                        return Verdict::Reject(Rejection::new(
                            INVALID_PARAMS,
                            format!(
                                "Invalid params: at {path}, the number {became} would be used instead of {token} (too many digits): nothing was done; send it as a string"
                            ),
                            Some(req.id.clone()),
                        ));
                    }
                    Some(Finding::Twice { path, envelope, id }) => {
                        let (code, what) = if envelope {
                            (INVALID_REQUEST, "Invalid Request")
                        } else {
                            (INVALID_PARAMS, "Invalid params")
                        };
                        return Verdict::Reject(Rejection::new(
                            code,
                            format!(
                                "{what}: {path} is given twice in one object, and only one of the two would be read: nothing was done; send each key once"
                            ),
                            (!id).then(|| req.id.clone()),
                        ));
                    }
                    None => {}
                }
            }
            return Verdict::Forward(Box::new(msg));
        }
        Err(e) => e,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            if let Some(v) = past_parser_limits(line, &e) {
                return v;
            }
            return Verdict::Reject(Rejection::new(
                PARSE_ERROR,
                format!("Parse error: {e}"),
                None,
            ));
        }
    };
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            return Verdict::Reject(Rejection::new(
                INVALID_REQUEST,
                "Invalid Request: batches (JSON arrays) are not supported; send one message per line",
                None,
            ));
        }
        other => {
            return Verdict::Reject(Rejection::new(
                INVALID_REQUEST,
                format!(
                    "Invalid Request: a message is a JSON object, not {}",
                    json_kind(&other)
                ),
                None,
            ));
        }
    };
    let id = obj.get("id").and_then(echoable_id);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Verdict::Reject(Rejection::new(
            INVALID_REQUEST,
            r#"Invalid Request: "jsonrpc" must be "2.0""#,
            id,
        ));
    }
    let has_method = obj.get("method").is_some_and(Value::is_string);
    let structured_params = obj
        .get("params")
        .is_none_or(|p| p.is_object() || p.is_array());
    // §4.1: a Request object without an id member.
    let notification = !obj.contains_key("id") && has_method && structured_params;
    let response =
        !obj.contains_key("method") && (obj.contains_key("result") || obj.contains_key("error"));
    // MCP's params are always objects; name what was sent instead.
    let obj_params = obj.get("params").and_then(|p| match p {
        Value::Object(_) => None,
        other => Some(json_kind(other)),
    });
    drop(obj);
    let e = unreadable;
    if notification {
        return Verdict::Ignore(
            "a notification rmcp cannot read (JSON-RPC 2.0 §4.1: never answered)",
        );
    }
    if response {
        // A client's response to a request of ours: echoing its id would
        // read as an answer to a request of the client's own.
        return Verdict::Reject(Rejection::new(
            INVALID_REQUEST,
            format!("Invalid Request: unreadable response: {e}"),
            None,
        ));
    }
    let message = match obj_params {
        Some(kind) => format!(r#"Invalid Request: "params" must be an object, not {kind}"#),
        None => format!("Invalid Request: {e}"),
    };
    Verdict::Reject(Rejection::new(INVALID_REQUEST, message, id))
}

/// The verdict on a line that is JSON but past what serde_json reads
/// (`e` says which): nested deeper than 128 levels, or holding a number
/// past an `f64`'s range (`1e400`), when its envelope can be read. A
/// request is answered with its id (a `null` id would leave the client,
/// or a proxy routing answers by id, waiting for its answer for ever):
/// -32600 for the nesting, -32602 for the number (as for a number that
/// would be rounded, [`inexact_number`]); a notification is ignored. The
/// envelope is read with every other member skipped, which serde_json does
/// without recursing and without reading numbers' values; `None` (a parse
/// error) for anything else: an id itself unreadable, a cut line, a
/// response.
fn past_parser_limits(line: &[u8], e: &serde_json::Error) -> Option<Verdict> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        method: Option<String>,
    }
    let why = e.to_string();
    let (code, what, ignored) = if why.starts_with("recursion limit exceeded") {
        (
            INVALID_REQUEST,
            "Invalid Request: nested deeper than 128 levels, which this server does not read",
            "a notification nested deeper than 128 levels (JSON-RPC 2.0 §4.1: never answered)",
        )
    } else if why.starts_with("number out of range") {
        (
            INVALID_PARAMS,
            "Invalid params: a number past the range of a 64-bit float (such as 1e400), which would not arrive as written",
            "a notification with a number past the range of a 64-bit float (JSON-RPC 2.0 §4.1: never answered)",
        )
    } else {
        return None;
    };
    let envelope: Envelope = serde_json::from_slice(line).ok()?;
    envelope.method.as_ref()?;
    let Some(id) = envelope.id else {
        return Some(Verdict::Ignore(ignored));
    };
    let id = echoable_id(&id)?;
    Some(Verdict::Reject(Rejection::new(
        code,
        format!("{what} ({why}): nothing was done"),
        Some(id),
    )))
}

/// A number serde_json would not hold as written (see [`inexact_number`]).
#[derive(Debug, PartialEq)]
struct Inexact<'a> {
    /// As written.
    token: &'a str,
    /// As it would become.
    became: String,
    /// Where in the message, e.g. `params.arguments.rows[1].Big[1]`.
    path: String,
}

/// What [`inexact_number`] finds in a request line that parses but would
/// not be read as sent.
#[derive(Debug, PartialEq)]
enum Finding<'a> {
    Inexact(Inexact<'a>),
    /// A key an object holds twice, at `path` (the key last): serde_json
    /// keeps the last value silently.
    Twice {
        path: String,
        /// A member of the message itself (`id`, `method`, `params`).
        envelope: bool,
        /// The envelope's `id` is the key twice: which id to answer is
        /// not known.
        id: bool,
    },
}

/// One open object or array on the way to a value, for [`Inexact::path`].
enum Frame {
    /// The span of the current member's key (quotes included), if read yet;
    /// `next_is_key` until the `:`; the keys read so far, as they decode.
    Object {
        key: Option<(usize, usize)>,
        next_is_key: bool,
        seen: std::collections::HashSet<String>,
    },
    Array(usize),
}

/// The first number in `line` (valid JSON) that serde_json would not
/// hold as written: an integer past 64 bits, or more digits than an `f64`
/// keeps (`12345678901234567890123` becomes `1.2345678901234568e22`,
/// `0.1000000000000000000001` becomes `0.1`). Without serde_json's
/// `arbitrary_precision` (which would change the proxy crate too), rmcp and
/// the tools would pass the rounded value on, silently. A number that only
/// changes spelling (`1.50`, `1e2`) is exact. A scan of the bytes, since
/// the parsed message no longer knows what was written; it keeps the
/// path of open objects and arrays (at most serde_json's 128 levels, as
/// the line parsed) so the error can say where the number is.
///
/// The same scan finds a key given twice in one object (compared as the
/// keys decode: `"a"` and `"\u0061"` are one key), which serde_json reads
/// as the last of them without a word.
fn inexact_number(line: &[u8]) -> Option<Finding<'_>> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += usize::from(line[i] == b'\\') + 1;
                }
                let depth = frames.len();
                let mut twice = None;
                if let Some(Frame::Object {
                    key,
                    next_is_key: true,
                    seen,
                }) = frames.last_mut()
                {
                    let span = (start, (i + 1).min(line.len()));
                    *key = Some(span);
                    let name: String =
                        serde_json::from_slice(&line[span.0..span.1]).unwrap_or_default();
                    let id = depth == 1 && name == "id";
                    if !seen.insert(name) {
                        twice = Some(id);
                    }
                }
                if let Some(id) = twice {
                    return Some(Finding::Twice {
                        path: json_path(line, &frames),
                        envelope: depth == 1,
                        id,
                    });
                }
            }
            b'{' => frames.push(Frame::Object {
                key: None,
                next_is_key: true,
                seen: Default::default(),
            }),
            b'[' => frames.push(Frame::Array(0)),
            b'}' | b']' => {
                frames.pop();
            }
            b':' => {
                if let Some(Frame::Object { next_is_key, .. }) = frames.last_mut() {
                    *next_is_key = false;
                }
            }
            b',' => match frames.last_mut() {
                Some(Frame::Array(n)) => *n += 1,
                Some(Frame::Object { next_is_key, .. }) => *next_is_key = true,
                None => {}
            },
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < line.len()
                    && matches!(line[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&line[start..=i]).unwrap_or_default();
                // As serde_json reads and writes it (the parse and the
                // printing the rest of this server already uses).
                let became = serde_json::from_slice::<Value>(token.as_bytes())
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                if !crate::number::same_value(token, &became) {
                    return Some(Finding::Inexact(Inexact {
                        token,
                        became,
                        path: json_path(line, &frames),
                    }));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Characters of a key shown in a path; a longer one is cut and ends `…`.
const PATH_KEY_CHARS: usize = 40;

/// The path of `frames` in `line`: `.key` for a key of letters, digits and
/// `_`, `["key"]` (a JSON string) for any other, `[n]` for an array's
/// element.
fn json_path(line: &[u8], frames: &[Frame]) -> String {
    let mut path = String::new();
    for f in frames {
        match f {
            Frame::Array(n) => path.push_str(&format!("[{n}]")),
            Frame::Object { key: None, .. } => {}
            Frame::Object {
                key: Some((start, end)),
                ..
            } => {
                let key: String = serde_json::from_slice(&line[*start..*end]).unwrap_or_default();
                let word =
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                let mut cut: String = key.chars().take(PATH_KEY_CHARS).collect();
                if cut.len() < key.len() {
                    cut.push('…');
                }
                if word {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&cut);
                } else {
                    path.push_str(&format!("[{}]", Value::String(cut)));
                }
            }
        }
    }
    path
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The id to echo: one rmcp would accept (a string, or an integer, also in
/// float form), short enough to repeat.
fn echoable_id(v: &Value) -> Option<RequestId> {
    let id = RequestId::deserialize(v).ok()?;
    match &id {
        RequestId::String(s) if s.len() > MAX_ECHOED_ID_BYTES => None,
        _ => Some(id),
    }
}

/// Set once stdin has ended (or failed): what stops a call from then on
/// is the shutdown, not the client's cancellation.
static STDIN_ENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdin has ended: rmcp then stops the calls still running after
/// its drain, through the same cancellation a client's request uses.
pub fn stdin_ended() -> bool {
    STDIN_ENDED.load(std::sync::atomic::Ordering::Relaxed)
}

/// What one bounded read of stdin found.
#[derive(Debug, PartialEq)]
enum Read {
    /// A whole line, newline included, is in the buffer.
    Line,
    /// A line over the cap was skipped through its newline (or stdin's end).
    TooLong,
    /// Stdin ended after bytes that had no newline.
    Unterminated,
    Eof,
}

/// Reads `\n`-terminated lines whose message (the line without its LF or
/// CRLF end, which the cap does not count, whichever a client writes) is
/// at most `cap` bytes, without ever holding more than `cap + 2` bytes of
/// one.
struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    cap: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, cap: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, inner),
            line: Vec::new(),
            cap,
        }
    }

    /// Not cancel safe (a dropped call loses its partial line): the reader
    /// task is the only caller and never races it.
    async fn next(&mut self) -> io::Result<Read> {
        if self.line.capacity() > READ_BUFFER_BYTES {
            // Not kept at the size of the longest line seen.
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
        let mut skipping = false;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(match (skipping, self.line.is_empty()) {
                    (true, _) => Read::TooLong,
                    (false, true) => Read::Eof,
                    (false, false) => Read::Unterminated,
                });
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            if !skipping {
                let message = match newline {
                    Some(i) => {
                        let before = match i {
                            0 => self.line.last(),
                            _ => available.get(i - 1),
                        };
                        self.line.len() + i - usize::from(before == Some(&b'\r'))
                    }
                    // A CR at the end may be the start of a CRLF end.
                    None => self.line.len() + take - usize::from(available.last() == Some(&b'\r')),
                };
                if message > self.cap {
                    skipping = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(&available[..take]);
                }
            }
            self.inner.consume(take);
            if newline.is_some() {
                return Ok(if skipping { Read::TooLong } else { Read::Line });
            }
        }
    }
}

/// The running front: its two tasks. rmcp gets the transport from
/// [`start`]; [`StdioFront::finish`] is called once rmcp is done.
pub struct StdioFront {
    reader: JoinHandle<()>,
    writer: JoinHandle<io::Result<()>>,
}

/// A line for stdout, with the permits of the requests it answers
/// ([`Pending`]): they are given back once it is written.
struct Outgoing {
    line: Vec<u8>,
    _answers: Vec<OwnedSemaphorePermit>,
}

impl From<Vec<u8>> for Outgoing {
    fn from(line: Vec<u8>) -> Self {
        Outgoing {
            line,
            _answers: Vec::new(),
        }
    }
}

/// The requests read from stdin and not answered on stdout yet: a permit
/// each, held by id until the answer is written or the request cancelled.
struct Pending {
    slots: std::sync::Arc<Semaphore>,
    max: usize,
    /// By id: a client may reuse an id while a request of it is still
    /// running, and rmcp answers only one of them.
    by_id: std::sync::Mutex<std::collections::HashMap<RequestId, Vec<OwnedSemaphorePermit>>>,
}

impl Pending {
    fn new(max: usize) -> Self {
        Pending {
            slots: std::sync::Arc::new(Semaphore::new(max)),
            max,
            by_id: Default::default(),
        }
    }

    /// A permit for one more request; waits while `max` are unanswered.
    async fn admit(&self, waiting: &mut bool) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            *waiting = false;
            return Some(p);
        }
        if !*waiting {
            *waiting = true;
            tracing::warn!(
                pending = self.max,
                "wait to read stdin: as many requests as --max-pending-requests are unanswered; reading resumes as answers are written"
            );
        }
        self.slots.clone().acquire_owned().await.ok()
    }

    fn hold(&self, id: RequestId, permit: OwnedSemaphorePermit) {
        self.lock().entry(id).or_default().push(permit);
    }

    /// The permits of the requests of `id`: rmcp answers it once.
    fn take(&self, id: &RequestId) -> Vec<OwnedSemaphorePermit> {
        self.lock().remove(id).unwrap_or_default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<RequestId, Vec<OwnedSemaphorePermit>>>
    {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// rmcp's end of the front: the messages the reader parsed, and the queue
/// of stdout's writer.
pub struct FrontTransport {
    incoming: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    /// `None` once rmcp has closed the transport.
    outgoing: Option<mpsc::Sender<Outgoing>>,
    pending: std::sync::Arc<Pending>,
}

impl Transport<RoleServer> for FrontTransport {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outgoing = self.outgoing.clone();
        // An answer gives its request's permit back once it is written.
        let answers = match &item {
            rmcp::model::JsonRpcMessage::Response(r) => self.pending.take(&r.id),
            rmcp::model::JsonRpcMessage::Error(e) => {
                e.id.as_ref()
                    .map(|id| self.pending.take(id))
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        async move {
            let Some(outgoing) = outgoing else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "transport is closed",
                ));
            };
            // As rmcp's own codec writes a message: JSON, then a newline.
            let mut line = serde_json::to_vec(&item)?;
            line.push(b'\n');
            outgoing
                .send(Outgoing {
                    line,
                    _answers: answers,
                })
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "stdout writer has stopped"))
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.outgoing = None;
        Ok(())
    }
}

/// Start reading `input` and writing `output`; serve rmcp on the transport
/// returned. Must be called inside a tokio runtime.
/// `max_pending_requests` requests at most are read and not answered yet.
pub fn start<R, W>(
    input: R,
    output: W,
    max_line_bytes: usize,
    max_pending_requests: usize,
) -> (FrontTransport, StdioFront)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, incoming) = mpsc::channel(INPUT_QUEUE);
    let (outgoing, lines) = mpsc::channel(OUTPUT_QUEUE);
    let pending = std::sync::Arc::new(Pending::new(max_pending_requests.max(1)));
    let reader = tokio::spawn(read_input(
        input,
        to_rmcp,
        outgoing.clone(),
        max_line_bytes,
        pending.clone(),
    ));
    let writer = tokio::spawn(write_output(lines, output));
    let transport = FrontTransport {
        incoming,
        outgoing: Some(outgoing),
        pending,
    };
    (transport, StdioFront { reader, writer })
}

impl StdioFront {
    /// Once rmcp has stopped (and dropped the transport): stop the reader,
    /// which by then has usually seen stdin's end already, then let the
    /// writer write what is queued (the reader's errors included).
    pub async fn finish(self) -> io::Result<()> {
        self.reader.abort();
        // Its end, aborted or not, drops its sender: the writer can end.
        let _ = self.reader.await;
        self.writer.await.map_err(io::Error::other)?
    }
}

async fn read_input<R: AsyncRead + Unpin>(
    input: R,
    to_rmcp: mpsc::Sender<RxJsonRpcMessage<RoleServer>>,
    out: mpsc::Sender<Outgoing>,
    max_line_bytes: usize,
    pending: std::sync::Arc<Pending>,
) {
    use rmcp::model::{ClientNotification, JsonRpcMessage};
    let mut lines = LineReader::new(input, max_line_bytes);
    let mut waiting = false;
    loop {
        let rejection = match lines.next().await {
            Ok(Read::Line) => match classify(&lines.line) {
                Verdict::Forward(msg) => {
                    match msg.as_ref() {
                        JsonRpcMessage::Request(r) => {
                            let Some(permit) = pending.admit(&mut waiting).await else {
                                break;
                            };
                            pending.hold(r.id.clone(), permit);
                        }
                        // rmcp sends no answer to a request the client
                        // cancelled: its permit is given back here.
                        JsonRpcMessage::Notification(n) => {
                            if let ClientNotification::CancelledNotification(c) = &n.notification
                                && let Some(id) = &c.params.request_id
                            {
                                drop(pending.take(id));
                            }
                        }
                        _ => {}
                    }
                    if to_rmcp.send(*msg).await.is_err() {
                        tracing::debug!("stop reading stdin: rmcp has stopped");
                        break;
                    }
                    continue;
                }
                Verdict::Blank => continue,
                Verdict::Ignore(why) => {
                    tracing::warn!(why, "ignore a stdin line");
                    continue;
                }
                Verdict::Reject(r) => r,
            },
            Ok(Read::TooLong) => Rejection::too_long(max_line_bytes),
            Ok(Read::Unterminated) => Rejection::unterminated(),
            Ok(Read::Eof) => {
                STDIN_ENDED.store(true, std::sync::atomic::Ordering::Relaxed);
                break;
            }
            Err(e) => {
                STDIN_ENDED.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "stop reading stdin: read failed");
                break;
            }
        };
        tracing::warn!(
            code = rejection.code,
            message = %rejection.message,
            "answer a stdin line that is not a message"
        );
        if out.send(rejection.to_line().into()).await.is_err() {
            break;
        }
    }
    // Dropping `to_rmcp` ends rmcp's input: it stops as it did on stdin's end.
}

/// The one writer of stdout: whole lines, in the order they were queued.
/// Ends when every sender is gone (rmcp's transport and the reader), after
/// the lines queued by then.
async fn write_output<W: AsyncWrite + Unpin>(
    mut lines: mpsc::Receiver<Outgoing>,
    mut out: W,
) -> io::Result<()> {
    while let Some(line) = lines.recv().await {
        out.write_all(&line.line).await?;
        out.flush().await?;
        // Dropped here: the permits of the requests it answers.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(line: &str) -> Rejection {
        match classify(line.as_bytes()) {
            Verdict::Reject(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn lines_that_are_not_json_are_parse_errors_with_a_null_id() {
        for line in [
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"n":NaN}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":{"n":-Infinity}}"#,
            "hello",
            r#"{"jsonrpc":"2.0","id":3,"method":"ping""#,
        ] {
            let r = rejected(line);
            assert_eq!((r.code, &r.id), (PARSE_ERROR, &None), "{line}");
            assert!(
                r.message.starts_with("Parse error"),
                "{line}: {}",
                r.message
            );
        }
        let bytes = b"{\"jsonrpc\":\"2.0\",\"id\":\"\xff\",\"method\":\"ping\"}\n";
        assert!(matches!(classify(bytes), Verdict::Reject(r) if r.code == PARSE_ERROR));
    }

    /// Regression: a request nested past serde_json's 128 levels, or with
    /// `1e400` in it (valid JSON both), was answered -32700 with `"id":
    /// null`, so the client (or the proxy routing answers by id) waited
    /// for its id's answer for ever.
    #[test]
    fn a_request_too_deep_or_past_f64_is_answered_with_its_id() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let line = format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"x","arguments":{{"a":{deep}}}}},"id":"r-7"}}"#
        );
        let r = rejected(&line);
        assert_eq!(
            (r.code, &r.id),
            (INVALID_REQUEST, &Some(RequestId::String("r-7".into()))),
            "{}",
            r.message
        );
        assert!(r.message.contains("nested deeper than"), "{}", r.message);
        // So is a number past an f64's range, which serde_json refuses
        // (`1e400`): -32602 with the id, as for a number it would round.
        let r = rejected(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"n":1e400}}}"#,
        );
        assert_eq!(
            (r.code, &r.id),
            (INVALID_PARAMS, &Some(RequestId::Number(3))),
            "{}",
            r.message
        );
        assert!(r.message.contains("out of range"), "{}", r.message);
        // A notification as deep gets no answer; one whose id is itself
        // too deep, or that is cut, is still a parse error.
        let note =
            format!(r#"{{"jsonrpc":"2.0","method":"notifications/x","params":{{"a":{deep}}}}}"#);
        assert!(matches!(classify(note.as_bytes()), Verdict::Ignore(_)));
        for line in [
            format!(r#"{{"jsonrpc":"2.0","method":"ping","id":{deep}}}"#),
            format!(
                r#"{{"jsonrpc":"2.0","method":"ping","id":1,"params":{{"a":{}}}"#,
                "[".repeat(200)
            ),
        ] {
            let r = rejected(&line);
            assert_eq!((r.code, &r.id), (PARSE_ERROR, &None), "{}", r.message);
        }
    }

    #[test]
    fn json_that_is_not_a_message_is_an_invalid_request() {
        let batch = rejected(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!((batch.code, &batch.id), (INVALID_REQUEST, &None));
        assert!(batch.message.contains("batch"), "{}", batch.message);
        for line in ["42", "null", r#""ping""#, "true"] {
            assert_eq!(rejected(line).code, INVALID_REQUEST, "{line}");
        }
        let no_version = rejected(r#"{"id":7,"method":"tools/list"}"#);
        assert_eq!(no_version.code, INVALID_REQUEST);
        assert_eq!(no_version.id, Some(RequestId::Number(7)));
        let old = rejected(r#"{"jsonrpc":"1.0","id":"a","method":"tools/list"}"#);
        assert_eq!(old.id, Some(RequestId::String("a".into())));
        // §5's own example: a method that is not a string, no id.
        let r = rejected(r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#);
        assert_eq!((r.code, &r.id), (INVALID_REQUEST, &None));
        let r = rejected(r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#);
        assert_eq!((r.code, &r.id), (INVALID_REQUEST, &None));
        let r = rejected(r#"{"jsonrpc":"2.0","id":4}"#);
        assert_eq!(
            (r.code, &r.id),
            (INVALID_REQUEST, &Some(RequestId::Number(4)))
        );
    }

    #[test]
    fn a_message_rmcp_cannot_read_is_answered_with_its_id_if_usable() {
        let r = rejected(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":[1]}"#);
        assert_eq!(
            (r.code, &r.id),
            (INVALID_REQUEST, &Some(RequestId::Number(9)))
        );
        assert!(r.message.contains("params"), "{}", r.message);
        for line in [
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":5}"#,
            r#"{"jsonrpc":"2.0","id":4,"result":{},"error":{}}"#,
        ] {
            let r = rejected(line);
            assert_eq!((r.code, &r.id), (INVALID_REQUEST, &None), "{line}");
        }
    }

    #[test]
    fn valid_messages_go_to_rmcp_and_notifications_are_never_answered() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"n","arguments":{"a":1e300}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\r\n",
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
            // rmcp's types read these and rmcp answers (or, for notifications, ignores) them.
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"foo/bar"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"nope":true}}"#,
            r#"{"jsonrpc":"2.0","method":"$/lsp-thing"}"#,
        ] {
            let v = classify(line.as_bytes());
            assert!(matches!(v, Verdict::Forward(_)), "{line}: {v:?}");
        }
        let unreadable = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#;
        assert!(matches!(classify(unreadable), Verdict::Ignore(_)));
        for line in ["", "\n", "  \r\n", "\u{feff}\n"] {
            let v = classify(line.as_bytes());
            assert!(matches!(v, Verdict::Blank), "{line:?}: {v:?}");
        }
    }

    /// Regression: serde_json (no `arbitrary_precision`) reads an integer
    /// past 64 bits, or a number with more digits than an `f64` keeps, as
    /// the nearest `f64`, and the rounded value was written to Coda.
    #[test]
    fn a_number_that_would_be_rounded_is_refused_naming_it() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"coda_upsert_rows","arguments":{"rows":[{"A\"b":"1e999 -0.1000000000000000000001"},{"Big":[0,12345678901234567890123]}]}}}"#;
        let Verdict::Reject(r) = classify(line) else {
            panic!("forwarded")
        };
        assert_eq!((r.code, r.id), (INVALID_PARAMS, Some(RequestId::Number(7))));
        assert!(
            r.message.contains(
                "at params.arguments.rows[1].Big[1], the number 1.2345678901234568e+22 would be used instead of 12345678901234567890123"
            ),
            "{}",
            r.message
        );
        let fraction = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"arguments":{"v":0.1000000000000000000001}}}"#;
        assert!(
            matches!(classify(fraction), Verdict::Reject(r) if r.message.contains("at params.arguments.v, the number 0.1 would be used instead of 0.1000000000000000000001"))
        );
        // Keys that are not plain words are quoted (escapes read), long
        // ones cut; commas and colons inside strings are no structure.
        let odd = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"a,b:c":[1,{{"x":"],}}"}},{{"Due \"date\"":{{"{long}":[[0,0.1000000000000000000001]]}}}}]}}}}}}"#,
            long = "k".repeat(100)
        );
        let Verdict::Reject(r) = classify(odd.as_bytes()) else {
            panic!("forwarded")
        };
        let want = format!(
            r#"at params.arguments["a,b:c"][2]["Due \"date\""].{}…[0][1], the number 0.1"#,
            "k".repeat(40)
        );
        assert!(r.message.contains(&want), "{}\nwant {want}", r.message);
        for exact in [
            "18446744073709551615",
            "-9223372036854775808",
            "1.50",
            "1e2",
            "-0.0",
            "0.30000000000000004",
            "1e22",
            "2.5E-300",
        ] {
            let line = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"v":{exact},"s":"12345678901234567890123"}}}}}}"#
            );
            assert!(
                matches!(classify(line.as_bytes()), Verdict::Forward(_)),
                "{exact}"
            );
        }
    }

    /// Regression: a key twice in one object was read as the last one.
    #[test]
    fn a_key_twice_in_one_object_is_refused_naming_it() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"rows":[{"A":1},{"A":1,"B":{"x":"A","A":2,"\u0041":3}}]}}}"#;
        let Verdict::Reject(r) = classify(line) else {
            panic!("forwarded")
        };
        assert_eq!((r.code, r.id), (INVALID_PARAMS, Some(RequestId::Number(7))));
        assert!(
            r.message
                .contains("params.arguments.rows[1].B.A is given twice"),
            "{}",
            r.message
        );
        // The same key in sibling objects, and a key's name as a value.
        let fine = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"t","arguments":{"rows":[{"A":"A"},{"A":{"A":1}}]}}}"#;
        assert!(matches!(classify(fine), Verdict::Forward(_)));
    }

    #[test]
    fn error_lines_carry_a_null_id_when_none_is_known_and_stay_short() {
        let line = Rejection::new(PARSE_ERROR, "x".repeat(10_000), None).to_line();
        assert!(line.len() < 400, "{}", line.len());
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert!(v.as_object().unwrap().contains_key("id"));
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        assert_eq!(line.last(), Some(&b'\n'));
        let long_id = format!(r#"{{"id":"{}","method":"ping"}}"#, "i".repeat(5000));
        assert_eq!(rejected(&long_id).id, None);
    }

    /// A valid line reaches rmcp parsed, rmcp's answer and the error for a
    /// bad line both reach stdout as whole lines, and an error queued before
    /// stdin's end is still written after rmcp has stopped.
    #[tokio::test]
    async fn rmcp_gets_parsed_messages_and_every_line_reaches_stdout() {
        use rmcp::model::{ErrorData, ServerJsonRpcMessage};
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\nnope\n".to_vec();
        let (out, mut stdout) = tokio::io::duplex(64 * 1024);
        let (mut transport, front) = start(std::io::Cursor::new(input), out, 1024, 4);
        let got = Transport::<RoleServer>::receive(&mut transport).await;
        assert!(
            matches!(&got, Some(m) if serde_json::to_value(m).unwrap()["method"] == "ping"),
            "{got:?}"
        );
        let answer = ServerJsonRpcMessage::error(
            ErrorData::internal_error("x", None),
            Some(RequestId::Number(1)),
        );
        Transport::<RoleServer>::send(&mut transport, answer)
            .await
            .unwrap();
        // stdin's end ends rmcp's input.
        assert!(
            Transport::<RoleServer>::receive(&mut transport)
                .await
                .is_none()
        );
        drop(transport);
        front.finish().await.unwrap();
        let mut written = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut written)
            .await
            .unwrap();
        let lines: Vec<Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{written}");
        let codes: Vec<_> = lines.iter().map(|l| l["error"]["code"].clone()).collect();
        assert!(codes.contains(&json!(PARSE_ERROR)), "{written}");
        assert!(lines.iter().any(|l| l["id"] == 1), "{written}");
    }

    #[tokio::test]
    async fn a_long_line_is_skipped_without_being_held_whole() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend(b"\nnext\ntail");
        let mut r = LineReader::new(&input[..], 1000);
        assert_eq!(r.next().await.unwrap(), Read::Line);
        assert_eq!(r.line, b"short\n");
        assert_eq!(r.next().await.unwrap(), Read::TooLong);
        assert!(r.line.capacity() <= 1000);
        assert_eq!(r.next().await.unwrap(), Read::Line);
        assert_eq!(r.line, b"next\n");
        assert_eq!(r.next().await.unwrap(), Read::Unterminated);
        assert_eq!(r.next().await.unwrap(), Read::Eof);
    }

    /// Regression (review): the cap counted the line's end, so a message
    /// of exactly the cap was refused, and one a byte shorter was refused
    /// when the client ended it with CRLF and passed with LF. The cap is
    /// on the message, whatever ends it, read at once or a byte at a time
    /// (a CR at the end of one read, its LF in the next).
    #[tokio::test]
    async fn a_message_at_the_cap_is_a_line_ended_by_lf_or_crlf_and_one_byte_more_is_not() {
        /// At most `chunk` bytes a read.
        struct Trickle(&'static [u8], usize);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                let n = self.1.min(self.0.len()).min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        let input = b"abcd\nabcd\r\nab\rd\r\nabcde\nabcde\r\nab\rcd\n";
        for chunk in [1, 2, 3, 5, 64] {
            let mut r = LineReader::new(Trickle(input, chunk), 4);
            for want in [&b"abcd\n"[..], b"abcd\r\n", b"ab\rd\r\n"] {
                assert_eq!(r.next().await.unwrap(), Read::Line, "{chunk}");
                assert_eq!(r.line, want, "{chunk}");
            }
            // A CR inside the message is a byte of it.
            for _ in 0..3 {
                assert_eq!(r.next().await.unwrap(), Read::TooLong, "{chunk}");
            }
            assert_eq!(r.next().await.unwrap(), Read::Eof, "{chunk}");
        }
    }
}
