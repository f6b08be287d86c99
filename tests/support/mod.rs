//! Test harness: start the proxy in-process on 127.0.0.1:0 over a real child
//! (the `everything` example), talk to it over real HTTP, read SSE streams.
//! Every wait has a timeout so that a bug fails a test instead of hanging it.

#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use mcp_sidecar::config::{Args, Config};
use mcp_sidecar::proxy;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Path of a built example. `cargo test` builds examples as programs, but
/// `cargo test --all-targets` and nextest build them only as test harnesses,
/// so a missing one is built here (cargo's own lock serialises test binaries
/// that try at once).
pub fn example(name: &str) -> String {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut p: PathBuf = std::env::current_exe().expect("test exe path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let release = p.ends_with("release");
    p.push("examples");
    p.push(name);
    if !p.exists() {
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !p.exists() {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args(["build", "--quiet", "--example", name])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building example {name} failed");
        }
    }
    assert!(p.exists(), "example {name} not built at {}", p.display());
    p.to_string_lossy().into_owned()
}

/// A proxy running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub task: JoinHandle<Result<(), proxy::RunError>>,
}

impl Proxy {
    /// Starts the proxy with `flags` over `everything` plus `child_args`.
    pub async fn start(flags: &[&str]) -> Proxy {
        Proxy::start_child(flags, &example("everything"), &[]).await
    }

    /// Starts the proxy with `flags` over `program child_args…`.
    pub async fn start_child(flags: &[&str], program: &str, child_args: &[&str]) -> Proxy {
        let mut argv: Vec<&str> = flags.to_vec();
        argv.push("--");
        argv.push(program);
        argv.extend_from_slice(child_args);
        let args = Args::from_args(&["mcp-proxy"], &argv).expect("valid test flags");
        let mut config = Config::from_args(args, &|_| None).expect("valid test config");
        config.port = 0;
        Proxy::start_config(config).await
    }

    /// Starts the proxy with a ready configuration.
    pub async fn start_config(config: Config) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(proxy::run(listener, config, token.clone()));
        Proxy { addr, token, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Streamable HTTP endpoint.
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base())
    }

    /// Stops it and waits for the drain to finish.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("proxy stops in time")
            .unwrap()
            .ok();
    }

    /// The status of `GET /ready`.
    pub async fn ready_status(&self) -> u16 {
        reqwest::get(format!("{}/ready", self.base()))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `GET /metrics` as text (no key).
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> Value {
        reqwest::get(format!("{}/health", self.base()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A hand-rolled session-era client over raw HTTP.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    pub accept: &'static str,
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: url.to_string(),
            session: None,
            version: "2025-11-25".into(),
            accept: "application/json, text/event-stream",
        }
    }

    /// Another client in this client's session (one to move into a task),
    /// accepting `accept`.
    pub fn sibling(&self, accept: &'static str) -> Client {
        Client {
            http: self.http.clone(),
            url: self.url.clone(),
            session: self.session.clone(),
            version: self.version.clone(),
            accept,
        }
    }

    /// A POST with the session headers.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.post_raw(serde_json::to_vec(body).unwrap()).await
    }

    /// The POST of `body` in this client's session, not sent yet: for a
    /// test that reads how it fails rather than expecting an answer.
    pub fn post_request(&self, body: &Value) -> reqwest::RequestBuilder {
        self.post_request_raw(serde_json::to_vec(body).unwrap())
    }

    fn post_request_raw(&self, body: Vec<u8>) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", self.accept)
            .body(body);
        match &self.session {
            Some(s) => req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", &self.version),
            None => req,
        }
    }

    pub async fn post_raw(&self, body: Vec<u8>) -> reqwest::Response {
        let req = self.post_request_raw(body);
        tokio::time::timeout(STEP, req.send())
            .await
            .expect("POST answered in time")
            .unwrap()
    }

    /// DELETE of this client's session.
    pub async fn delete(&self, url: &str) -> reqwest::Response {
        let session = self.session.as_deref().expect("a session to delete");
        let req = self.http.delete(url).header("mcp-session-id", session);
        tokio::time::timeout(STEP, req.send())
            .await
            .expect("DELETE answered in time")
            .unwrap()
    }

    /// GET of this client's session resuming after event `last_event_id`.
    pub async fn resume(&self, last_event_id: &str) -> reqwest::Response {
        let req = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header(
                "mcp-session-id",
                self.session.as_deref().expect("a session"),
            )
            .header("last-event-id", last_event_id);
        tokio::time::timeout(STEP, req.send())
            .await
            .expect("GET answered in time")
            .unwrap()
    }

    /// initialize + notifications/initialized; returns the result.
    pub async fn initialize(&mut self, version: &str, capabilities: Value) -> Value {
        self.version = version.to_string();
        let resp = self
            .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":version,"capabilities":capabilities,"clientInfo":{"name":"test","version":"1"}}}))
            .await;
        assert_eq!(resp.status(), 200);
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .expect("session id on initialize")
            .to_str()
            .unwrap()
            .to_string();
        let msgs = read_messages(resp).await;
        self.session = Some(sid);
        let result = msgs.last().unwrap()["result"].clone();
        self.version = result["protocolVersion"].as_str().unwrap().to_string();
        let r = self
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        assert_eq!(r.status(), 202);
        result
    }

    /// A request; returns every message of its answer (SSE or JSON).
    pub async fn request(&self, id: Value, method: &str, params: Value) -> Vec<Value> {
        let resp = self
            .post(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .await;
        assert_eq!(resp.status(), 200, "status for {method}");
        read_messages(resp).await
    }

    /// tools/call; returns the final response.
    pub async fn call(&self, id: Value, tool: &str, args: Value) -> Value {
        let msgs = self
            .request(id, "tools/call", json!({"name":tool,"arguments":args}))
            .await;
        msgs.last().unwrap().clone()
    }
}

/// All JSON-RPC messages of a response: the SSE events, or the JSON body.
pub async fn read_messages(resp: reqwest::Response) -> Vec<Value> {
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = tokio::time::timeout(STEP, resp.bytes())
        .await
        .expect("body complete in time")
        .unwrap();
    if !sse {
        return vec![serde_json::from_slice(&body).unwrap()];
    }
    parse_events(&String::from_utf8_lossy(&body))
        .into_iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

/// As [`read_messages`], without a deadline on the body, and leaving out
/// the messages that carry what no JSON parser here can hold (`1e400`,
/// deep nesting), which the proxy passes through unchanged.
pub async fn read_messages_lenient(resp: reqwest::Response) -> Vec<Value> {
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = resp.bytes().await.unwrap();
    if !sse {
        return serde_json::from_slice(&body).into_iter().collect();
    }
    parse_events(&String::from_utf8_lossy(&body))
        .into_iter()
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect()
}

/// A legacy (2024-11-05) session, initialized: its event stream (past the
/// `endpoint` event and the `initialize` answer) and the URL to POST to.
pub async fn legacy_session(proxy: &Proxy) -> (SseStream, String) {
    legacy_session_at(proxy, "2024-11-05").await
}

/// As [`legacy_session`], the client asking for protocol `version` (a
/// legacy-transport client may speak a later revision; batches, say, need
/// 2025-03-26).
pub async fn legacy_session_at(proxy: &Proxy, version: &str) -> (SseStream, String) {
    let http = reqwest::Client::new();
    let resp = tokio::time::timeout(STEP, http.get(format!("{}/sse", proxy.base())).send())
        .await
        .expect("GET /sse answered in time")
        .unwrap();
    let mut s = SseStream::new(resp);
    let endpoint = s.next().await.expect("the endpoint event");
    assert_eq!(endpoint.name.as_deref(), Some("endpoint"));
    let post_url = format!("{}{}", proxy.base(), endpoint.data);
    for body in [
        json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":version,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    ] {
        let r = http.post(&post_url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let init = s.next().await.expect("the initialize answer");
    assert!(init.data.contains(version), "{}", init.data);
    (s, post_url)
}

/// A 2026-07-28 POST with the required headers derived from the body.
/// A `--shared` proxy (plus `flags`) whose child has stopped reading its
/// stdin for `pause_ms` (`misbehave_stop_reading`), and two sessions on it
/// taking JSON bodies: 2025-11-25, and 2025-03-26 for batches.
/// A `--shared` proxy and two 2025-11-25 sessions on its one child.
pub async fn two_shared_sessions() -> (Proxy, Client, Client) {
    let proxy = Proxy::start(&["--shared"]).await;
    let mut a = Client::new(&proxy.mcp());
    a.initialize("2025-11-25", json!({})).await;
    let mut b = Client::new(&proxy.mcp());
    b.initialize("2025-11-25", json!({})).await;
    (proxy, a, b)
}

pub async fn shared_child_paused(flags: &[&str], pause_ms: u64) -> (Proxy, Client, Client) {
    let mut all = vec!["--shared"];
    all.extend_from_slice(flags);
    let proxy = Proxy::start(&all).await;
    let mut c = Client::new(&proxy.mcp());
    c.accept = "application/json";
    c.initialize("2025-11-25", json!({})).await;
    let mut batches = Client::new(&proxy.mcp());
    batches.accept = "application/json";
    batches.initialize("2025-03-26", json!({})).await;
    let stopped = c
        .call(
            json!(1),
            "misbehave_stop_reading",
            json!({"resume_after_ms": pause_ms}),
        )
        .await;
    assert_eq!(stopped["result"]["content"][0]["text"], "stopped");
    (proxy, c, batches)
}

/// A batch of `n` pings (ids `p0`, `p1`, ...); its answers in order.
pub async fn ping_batch(c: &Client, n: usize) -> Vec<Value> {
    let batch: Vec<Value> = (0..n)
        .map(|n| json!({"jsonrpc":"2.0","id":format!("p{n}"),"method":"ping"}))
        .collect();
    let r = c.post(&json!(batch)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// POSTs a 2026-07-28 request with the headers its body implies
/// (`Mcp-Method`; `Mcp-Name` from its tool's name, resource URI or task
/// id) and `Accept: accept`, answered within [`STEP`].
pub async fn modern_post(proxy: &Proxy, body: &Value, accept: &str) -> reqwest::Response {
    modern_request(proxy, None, body, &[], accept).await
}

/// [`modern_post`] as the SDKs send it (JSON or SSE), with API key `key`
/// if any, then `extra` headers (appended, so a name may occur twice).
pub async fn modern_post_as(
    proxy: &Proxy,
    key: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    modern_request(
        proxy,
        key,
        body,
        extra,
        "application/json, text/event-stream",
    )
    .await
}

async fn modern_request(
    proxy: &Proxy,
    key: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
    accept: &str,
) -> reqwest::Response {
    let method = body["method"].as_str().unwrap_or_default();
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    let params = &body["params"];
    if let Some(name) = params["name"]
        .as_str()
        .or(params["uri"].as_str())
        .or(params["taskId"].as_str())
    {
        req = req.header("mcp-name", name);
    }
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(STEP, req.json(body).send())
        .await
        .expect("an answer in time")
        .unwrap()
}

/// The JSON-RPC message of a response: its JSON body, or the last data
/// line of its SSE stream.
pub async fn json_of(r: reqwest::Response) -> Value {
    let text = tokio::time::timeout(STEP, r.text()).await.unwrap().unwrap();
    let text = text.trim();
    if let Some(data) = text.lines().rev().find_map(|l| l.strip_prefix("data:")) {
        return serde_json::from_str(data.trim()).unwrap();
    }
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// POSTs `body` to `/mcp` on `s` (HTTP/1.1, `headers` added, each ending
/// in CRLF, `Accept` among them) and reads a chunked response to its end:
/// returns what the first read got, and the whole response. What one
/// write of the proxy's carries comes in one read.
pub async fn raw_post_first_read(
    s: &mut tokio::net::TcpStream,
    addr: &str,
    headers: &str,
    body: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    let mut all = first.clone();
    while !all.ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the rest in time: {all:?}"))
            .unwrap();
        assert!(n > 0, "connection closed mid-response: {all:?}");
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    (first, all)
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub name: Option<String>,
    pub data: String,
}

/// Parses complete events out of SSE text (comments skipped).
pub fn parse_events(text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut ev = Event {
            id: None,
            name: None,
            data: String::new(),
        };
        let mut has_data = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("data: ") {
                ev.data.push_str(v);
                has_data = true;
            } else if let Some(v) = line.strip_prefix("id: ") {
                ev.id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev.name = Some(v.to_string());
            }
        }
        // Priming events (SEP-1699) carry an id and empty data: no message.
        if has_data && !ev.data.is_empty() {
            out.push(ev);
        }
    }
    out
}

/// Reads an open SSE stream event by event.
pub struct SseStream {
    resp: reqwest::Response,
    buf: String,
    pub comments: usize,
}

impl SseStream {
    pub fn new(resp: reqwest::Response) -> SseStream {
        SseStream {
            resp,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ended. Panics after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                if block.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                if let Some(ev) = parse_events(&block).pop() {
                    return Some(ev);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("SSE event in time")
                .unwrap();
            match chunk {
                Some(c) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                None => return None,
            }
        }
    }

    pub async fn next(&mut self) -> Option<Event> {
        self.next_within(STEP).await
    }

    /// The next event's data as JSON.
    pub async fn next_json(&mut self) -> Value {
        let ev = self.next().await.expect("stream still open");
        serde_json::from_str(&ev.data).unwrap()
    }
}

/// Pids of live processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 1 && f[0] != "Z" && f[1] == ppid.to_string()
        })
        .collect()
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next().unwrap_or("").to_string())
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Whether `pid` is gone from the process table: exited and reaped (a
/// zombie still has its entry).
pub fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `cond` until true or `wait` passes.
pub async fn eventually(wait: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The text of a tools/call result.
pub fn text_of(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"))
        .to_string()
}

/// A 2026-07-28 `tools/call` of `tool` with `args` to `url` by `http`
/// (which carries the credentials), answered within [`STEP`].
pub async fn modern_call(
    http: &reqwest::Client,
    url: &str,
    tool: &str,
    args: Value,
) -> reqwest::Response {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args,
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{}}}});
    tokio::time::timeout(
        STEP,
        http.post(url)
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .json(&body)
            .send(),
    )
    .await
    .expect("answered in time")
    .unwrap()
}
