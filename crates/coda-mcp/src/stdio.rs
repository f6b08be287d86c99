//! The stdio front of `coda-mcp`: one bounded reader of stdin and one
//! writer of stdout, with rmcp's transport between them on in-memory pipes.
//! It owns framing and the answers to lines that are not messages; the
//! protocol itself (sessions, methods, rmcp's own errors) stays rmcp's.
//!
//! Why it exists: rmcp's stdio transport ignores a line it cannot parse
//! (rust-sdk #938), drops a line over its cap, and answers JSON of the
//! wrong shape without any `id`. A client that sent such a line waits for
//! an answer until its own timeout. Here every line is read first; one that
//! rmcp's own message type reads goes to rmcp, the others are classified
//! ([`classify`]) as JSON-RPC 2.0 (§4, §5, §5.1) says:
//!
//! - not JSON (`1e400`, `NaN`, a cut line, invalid UTF-8): -32700 with
//!   `"id": null`, since the id cannot be read;
//! - JSON but not a message (a batch array, which MCP 2025-06-18 removed, a
//!   number, an object without `"jsonrpc": "2.0"`): -32600, with the
//!   object's id when it is a string or integer, else `null`;
//! - an object rmcp's message type cannot read (params that are not an
//!   object, an id that is null or fractional, both `result` and `error`):
//!   -32600, with its id when usable (never a response's: that id is ours);
//! - a notification rmcp cannot read: no answer (§4.1 forbids one), a line
//!   on stderr;
//! - a line over `--max-line-bytes`: skipped up to its newline without
//!   being buffered, answered -32600 with `"id": null` naming the limit;
//! - a blank line: ignored, as rmcp does;
//! - anything else reaches rmcp byte for byte, in order, and rmcp answers.
//!
//! Stdout has one writer. It copies rmcp's output and writes an error line
//! only between two of rmcp's lines, so the two never interleave. Nothing
//! grows without bound: one line buffer of at most the cap, two pipes of
//! [`PIPE_BYTES`], an error queue of [`ERROR_QUEUE`] lines of a few hundred
//! bytes each (an echoed id is at most [`MAX_ECHOED_ID_BYTES`]). A full
//! pipe or queue makes the reader wait, which is backpressure on stdin.
//!
//! End of stdin ends rmcp's input, so the server stops as it always did;
//! the writer then writes what is still queued and returns.

use std::io;

use rmcp::RoleServer;
use rmcp::model::RequestId;
use rmcp::service::RxJsonRpcMessage;
use rmcp::transport::async_rw::AsyncRwTransport;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// JSON-RPC 2.0 §5.1: invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0 §5.1: the JSON sent is not a valid Request object.
pub const INVALID_REQUEST: i32 = -32600;

/// Buffer of each in-memory pipe (stdin → rmcp, rmcp → stdout), and of the
/// stdin reader. A line longer than this passes in several writes.
pub const PIPE_BYTES: usize = 64 * 1024;
/// Error lines waiting for the writer. When full, the reader waits.
pub const ERROR_QUEUE: usize = 32;
/// Longest string id echoed in an error; a longer one is answered with
/// `null`, so that an error line stays small.
pub const MAX_ECHOED_ID_BYTES: usize = 1024;
/// Longest error message (a serde message can quote the input).
const MAX_MESSAGE_CHARS: usize = 200;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to do with one line of stdin.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Hand the line to rmcp unchanged.
    Forward,
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
/// The line is first parsed as rmcp's own message type, so that "rmcp can
/// read it" means exactly that and not a guess: a valid line costs one
/// parse more than before, small next to what a tool call costs. Only a
/// line that fails is looked at closer.
pub fn classify(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // rmcp skips a UTF-8 BOM (RFC 8259 §8.1 allows it); so do we.
    let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Blank;
    }
    let unreadable = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(_) => return Verdict::Forward,
        Err(e) => e,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
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

/// Reads `\n`-terminated lines of at most `cap` bytes (newline included)
/// without ever holding more than `cap` bytes of one.
struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    cap: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, cap: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(PIPE_BYTES, inner),
            line: Vec::new(),
            cap,
        }
    }

    /// Not cancel safe (a dropped call loses its partial line): the reader
    /// task is the only caller and never races it.
    async fn next(&mut self) -> io::Result<Read> {
        self.line.clear();
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
                if self.line.len() + take > self.cap {
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

/// rmcp's end of the pipes.
pub type FrontTransport = AsyncRwTransport<RoleServer, DuplexStream, DuplexStream>;

/// Start reading `input` and writing `output`; serve rmcp on the transport
/// returned. Must be called inside a tokio runtime.
pub fn start<R, W>(input: R, output: W, max_line_bytes: usize) -> (FrontTransport, StdioFront)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (errors_tx, errors_rx) = mpsc::channel(ERROR_QUEUE);
    let reader = tokio::spawn(read_input(input, to_rmcp, errors_tx, max_line_bytes));
    let writer = tokio::spawn(write_output(from_rmcp, errors_rx, output));
    // Every line rmcp gets is at most the cap, so rmcp's own cap never drops one.
    let transport =
        AsyncRwTransport::new_server(rmcp_in, rmcp_out).with_max_line_length(max_line_bytes);
    (transport, StdioFront { reader, writer })
}

impl StdioFront {
    /// Once rmcp has stopped (and dropped the transport): let the writer
    /// write what is left, then stop the reader, which by then has usually
    /// seen stdin's end already.
    pub async fn finish(self) -> io::Result<()> {
        let written = self.writer.await;
        self.reader.abort();
        written.map_err(io::Error::other)?
    }
}

async fn read_input<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: DuplexStream,
    errors: mpsc::Sender<Vec<u8>>,
    max_line_bytes: usize,
) {
    let mut lines = LineReader::new(input, max_line_bytes);
    loop {
        let rejection = match lines.next().await {
            Ok(Read::Line) => match classify(&lines.line) {
                Verdict::Forward => {
                    if to_rmcp.write_all(&lines.line).await.is_err() {
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
            Ok(Read::Eof) => break,
            Err(e) => {
                tracing::warn!(error = %e, "stop reading stdin: read failed");
                break;
            }
        };
        tracing::warn!(
            code = rejection.code,
            message = %rejection.message,
            "answer a stdin line that is not a message"
        );
        if errors.send(rejection.to_line()).await.is_err() {
            break;
        }
    }
    // rmcp reads its end of input and stops as it did on stdin's end.
    let _ = to_rmcp.shutdown().await;
}

/// The one writer of stdout. Ends when rmcp's output ends, after the error
/// lines queued by then.
async fn write_output<W: AsyncWrite + Unpin>(
    mut from_rmcp: DuplexStream,
    mut errors: mpsc::Receiver<Vec<u8>>,
    mut out: W,
) -> io::Result<()> {
    let mut chunk = vec![0u8; PIPE_BYTES];
    // Whether rmcp's output stands at a line boundary: only then may an
    // error line go out.
    let mut at_line_start = true;
    let mut errors_open = true;
    loop {
        tokio::select! {
            n = from_rmcp.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    break;
                }
                out.write_all(&chunk[..n]).await?;
                out.flush().await?;
                at_line_start = chunk[n - 1] == b'\n';
            }
            line = errors.recv(), if at_line_start && errors_open => match line {
                Some(line) => {
                    out.write_all(&line).await?;
                    out.flush().await?;
                }
                None => errors_open = false,
            },
        }
    }
    if at_line_start {
        while let Ok(line) = errors.try_recv() {
            out.write_all(&line).await?;
        }
        out.flush().await?;
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
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"n":1e400}}}"#,
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
            assert_eq!(classify(line.as_bytes()), Verdict::Forward, "{line}");
        }
        let unreadable = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#;
        assert!(matches!(classify(unreadable), Verdict::Ignore(_)));
        for line in ["", "\n", "  \r\n", "\u{feff}\n"] {
            assert_eq!(classify(line.as_bytes()), Verdict::Blank, "{line:?}");
        }
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
        // Exactly the cap, newline included, is still a line.
        let mut r = LineReader::new(&b"abc\nabcd\n"[..], 4);
        assert_eq!(r.next().await.unwrap(), Read::Line);
        assert_eq!(r.next().await.unwrap(), Read::TooLong);
        assert_eq!(r.next().await.unwrap(), Read::Eof);
    }
}
