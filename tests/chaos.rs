//! Chaos soak: every broken peer at once, in random order.
//!
//! The real `mcp-proxy` binary runs (per-session, `--shared` or
//! `--stateless`, the mode chosen by the seed) over the `everything` child,
//! and clients of every era talk to it concurrently until the run's time is
//! up: 2025-11-25 and 2025-03-26 sessions (JSON and SSE answers, GET
//! streams resumed with `Last-Event-ID`, DELETE in the middle of a call),
//! legacy 2024-11-05 SSE sessions, 2026-07-28 calls, cancellations, and
//! clients that hang up halfway through a request or a stream. Their calls
//! make the child misbehave at random (the `misbehave_*`, `crash`,
//! `stderr`, `garbage` tools of `examples/everything.rs`): it crashes,
//! closes its stdout and keeps running, stops reading its stdin for a
//! while, writes garbage, lines over `--max-line-bytes`, a long answer cut
//! off halfway, an answer to a wrong id or twice, floods its stderr and its
//! stdout, sends progress, list-changed and server requests, leaves
//! grandchildren behind.
//!
//! What must hold, during and after the run:
//! - every request gets an answer (a JSON-RPC response with its own id, on
//!   its own stream) or an error (an HTTP status, a JSON-RPC error) within
//!   [`budget`], derived from `--request-timeout`; never a hang, a
//!   connection cut without a status, or an SSE stream that ends without
//!   the answer (and cannot be resumed to it);
//! - an `echo` answer carries the text its own caller sent (no answer goes
//!   to another client, whose ids collide on a shared child);
//! - `GET /health` answers within [`HEALTH_BUDGET`] throughout;
//! - once the clients stop (their sessions deleted or left to expire), the
//!   `/metrics` gauges (sessions, SSE streams, children beyond the one a
//!   shared child keeps) return to 0, the proxy has no zombie, its fd count
//!   is what it was after the warm-up and its RSS near it;
//! - on SIGTERM it exits 0 within 2.5 × `--shutdown-grace` + 2 s (the
//!   documented bound) plus slack, and no process it ever started (its
//!   children, their grandchildren, the guard) is left.
//!
//! Known and left (counted, not failed): a client that drops a POST's
//! stream just as its answer is written (the proxy queues the answer for
//! the connection before it sees it closed) cannot get the answer back
//! with `Last-Event-ID`: the answer counts as delivered once queued for a
//! live consumer, which lets the stream's replay buffer go, so the
//! resumption is an empty stream that ends at once. Seed 31 per-session
//! (30 s, 10 clients) lost 3 answers in 29 drops this way; a client that
//! answers an elicitation and drops the call's stream 0-4 ms later, then
//! resumes it 200 ms on, lost 6 and 7 of 10 answers in two runs.
//!
//! `cargo test --test chaos` runs a short fixed set of seeds (a few seconds
//! each). A long run, one seed or many:
//!
//! ```sh
//! cargo build --examples --bins
//! CHAOS_SECS=300 CHAOS_SEED=42 cargo test --test chaos soak -- --nocapture --ignored
//! CHAOS_SECS=60 CHAOS_SEEDS=1-20 cargo test --test chaos soak -- --nocapture --ignored
//! ```
//!
//! `CHAOS_MODE=per-session|shared|stateless` fixes the mode instead of
//! taking it from the seed, `CHAOS_CLIENTS=N` the number of concurrent
//! clients (default 6). Each run prints its seed, mode, counts of requests
//! and outcomes, and the faults it played; a failure prints the seed, the
//! violations and the proxy's last log lines. A seed fixes every random
//! choice (which client does what, which fault, which delay); the
//! interleaving on the machine still varies, so a failing seed is rerun a
//! few times and then minimised into a test of its own.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// `--request-timeout` of the proxy under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// `--shutdown-grace`.
const GRACE: Duration = Duration::from_secs(2);
/// `--session-idle-timeout` (and the one-shot one): short, so sessions the
/// clients abandon end within the run's wind-down, and expire under the
/// clients' feet during it.
const IDLE: Duration = Duration::from_secs(2);
/// `--max-line-bytes`: small, so a line over it is cheap to write.
const MAX_LINE: usize = 1 << 20;
/// How long `/health` may take, whatever the clients do.
const HEALTH_BUDGET: Duration = Duration::from_secs(1);

/// How long any one request may take to be answered: the request timeout,
/// a write to a child that stopped reading (bounded by the same), the
/// handshake of a child started for it (bounded by the same), and a
/// generous margin for a loaded 2-CPU machine.
fn budget() -> Duration {
    REQUEST_TIMEOUT * 4 + Duration::from_secs(10)
}

// ---------------------------------------------------------------- random

/// SplitMix64: small, seedable, the same sequence everywhere.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    /// One of `items` by weight.
    fn weighted<T: Copy>(&mut self, items: &[(u64, T)]) -> T {
        let total: u64 = items.iter().map(|(w, _)| w).sum();
        let mut n = self.below(total);
        for (w, t) in items {
            if n < *w {
                return *t;
            }
            n -= w;
        }
        items[items.len() - 1].1
    }

    /// A child seed for the `n`th client.
    fn fork(&self, n: u64) -> Rng {
        let mut r = Rng::new(self.0 ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d));
        r.next();
        r
    }
}

// ---------------------------------------------------------------- report

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    PerSession,
    Shared,
    Stateless,
}

impl Mode {
    fn flag(self) -> Option<&'static str> {
        match self {
            Mode::PerSession => None,
            Mode::Shared => Some("--shared"),
            Mode::Stateless => Some("--stateless"),
        }
    }

    fn parse(s: &str) -> Mode {
        match s {
            "per-session" => Mode::PerSession,
            "shared" => Mode::Shared,
            "stateless" => Mode::Stateless,
            other => panic!("CHAOS_MODE {other:?}: per-session, shared or stateless"),
        }
    }
}

/// What the run saw: counts by name, and every broken invariant.
#[derive(Default)]
struct Report {
    counts: Mutex<BTreeMap<String, u64>>,
    violations: Mutex<Vec<String>>,
}

impl Report {
    fn count(&self, what: &str) {
        *support_lock(&self.counts)
            .entry(what.to_string())
            .or_default() += 1;
    }

    fn violation(&self, what: String) {
        let what = format!("[{}] {what}", utc_now());
        eprintln!("chaos: VIOLATION {what}");
        let mut v = support_lock(&self.violations);
        if v.len() < 200 {
            v.push(what);
        }
    }
}

/// The time of day in UTC (`HH:MM:SS.mmm`), to find a violation in the
/// proxy's log.
fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn support_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- the proxy

/// The proxy binary, its base URL and the last lines it logged.
struct Running {
    child: Child,
    base: String,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Where the whole log is written; removed after a run that passed.
    log_dir: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(mode: Mode, rng: &mut Rng) -> Running {
        let everything = support::example("everything");
        let mut cmd = support::process::proxy_command();
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let max_queue = rng.weighted(&[(2, "16"), (1, "1024")]).to_string();
        let replay = rng.weighted(&[(3, "256"), (1, "8"), (1, "0")]).to_string();
        let level = std::env::var("CHAOS_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        cmd.args(["--port", "0", "--log-level", &level])
            .args(["--request-timeout", &secs(REQUEST_TIMEOUT)])
            .args(["--shutdown-grace", &secs(GRACE)])
            .args(["--session-idle-timeout", &secs(IDLE)])
            .args(["--oneshot-idle-timeout", &secs(IDLE)])
            .args(["--keep-alive", "1s"])
            .args(["--restart-max-backoff", "500ms"])
            .args(["--max-line-bytes", &MAX_LINE.to_string()])
            .args(["--max-queue", &max_queue])
            .args(["--replay-events", &replay])
            .args(["--max-server-requests", "16"]);
        if let Some(flag) = mode.flag() {
            cmd.arg(flag);
        }
        cmd.arg("--").arg(&everything);
        eprintln!(
            "chaos: proxy flags: {:?}",
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        );
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mcp-proxy starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let keep = log.clone();
        let log_dir = support::process::tempdir("chaos");
        let log_path = log_dir.join("proxy.log");
        eprintln!("chaos: proxy log in {}", log_path.display());
        let mut file = std::io::BufWriter::new(std::fs::File::create(&log_path).unwrap());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = file.flush();
                if let Some(rest) = line.split(support::process::LISTENING).nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
                let mut l = support_lock(&keep);
                if l.len() >= 300 {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        let port = port_rx
            .recv_timeout(support::STEP)
            .expect("the proxy logs its port");
        Running {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            log_dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn last_log(&self) -> String {
        support_lock(&self.log)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------- /proc

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, c)| c.to_string())?;
    let mut f = vec![comm];
    f.extend(rest.split_whitespace().map(str::to_string));
    Some(f)
}

/// A process as seen once: pid, start time (ticks since boot) and name.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Seen {
    pid: u32,
    start: u64,
    comm: String,
}

impl Seen {
    /// Still there and not a zombie.
    fn running(&self) -> bool {
        stat_fields(self.pid).is_some_and(|f| {
            f.get(20).and_then(|s| s.parse().ok()) == Some(self.start) && f[1] != "Z" && f[1] != "X"
        })
    }
}

/// Every process below `root` (by parent chain), and the zombies among
/// its direct children.
fn descendants(root: u32) -> (Vec<Seen>, Vec<u32>) {
    let mut parent = HashMap::new();
    let mut info = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (vec![], vec![]);
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(f) = stat_fields(pid) else { continue };
        let ppid: u32 = f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let start: u64 = f.get(20).and_then(|s| s.parse().ok()).unwrap_or(0);
        parent.insert(pid, ppid);
        info.insert(pid, (f[0].clone(), f[1].clone(), start));
    }
    let mut below = Vec::new();
    let mut zombies = Vec::new();
    for (&pid, &(ref comm, ref state, start)) in &info {
        let mut p = pid;
        let mut hops = 0;
        while p > 1 && hops < 64 {
            let Some(&pp) = parent.get(&p) else { break };
            if pp == root {
                if state == "Z" && p == pid {
                    zombies.push(pid);
                }
                below.push(Seen {
                    pid,
                    start,
                    comm: comm.clone(),
                });
                break;
            }
            p = pp;
            hops += 1;
        }
    }
    (below, zombies)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Samples the proxy's process tree every 50 ms while it runs, so that
/// processes that come and go are checked at the end too.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashSet<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(root: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let (below, _) = descendants(root);
                support_lock(&v).extend(below);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> HashSet<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *support_lock(&self.seen))
    }
}

// ---------------------------------------------------------------- metrics

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------- calls

/// One call the chaos makes, by weight. The benign ones dominate, so that
/// faults meet ordinary traffic rather than only each other.
#[derive(Clone, Copy, Debug)]
enum Act {
    Echo,
    Sleep,
    Progress,
    Log,
    Large,
    Garbage,
    WrongId,
    AnswerTwice,
    ServerPing,
    Notify,
    Flood,
    Stderr,
    Sample,
    Roots,
    Elicit,
    Crash,
    CloseStdout,
    StopReading,
    HugeLine,
    LongLineOk,
    SlowAnswer,
    SlowAnswerExit,
    SlowAnswerStall,
    Grandchild,
    Ping,
    ToolsList,
}

const ACTS: &[(u64, Act)] = &[
    (30, Act::Echo),
    (8, Act::Sleep),
    (8, Act::Progress),
    (4, Act::Log),
    (4, Act::Large),
    (3, Act::Garbage),
    (3, Act::WrongId),
    (3, Act::AnswerTwice),
    (3, Act::ServerPing),
    (3, Act::Notify),
    (3, Act::Flood),
    (3, Act::Stderr),
    (3, Act::Sample),
    (2, Act::Roots),
    (2, Act::Elicit),
    (2, Act::Crash),
    (1, Act::CloseStdout),
    (2, Act::StopReading),
    (2, Act::HugeLine),
    (2, Act::LongLineOk),
    (2, Act::SlowAnswer),
    (1, Act::SlowAnswerExit),
    (1, Act::SlowAnswerStall),
    (2, Act::Grandchild),
    (4, Act::Ping),
    (3, Act::ToolsList),
];

/// The method and params of `act`, and the text an `echo` must come back
/// with.
fn request_of(act: Act, rng: &mut Rng, tag: &str) -> (&'static str, Value, Option<String>) {
    let call = |name: &str, args: Value| json!({"name": name, "arguments": args});
    let with_token = |mut p: Value, token: String| {
        p["_meta"] = json!({"progressToken": token});
        p
    };
    match act {
        Act::Echo => {
            let text = format!("{tag}-{}", rng.next());
            (
                "tools/call",
                call("echo", json!({"message": text})),
                Some(text),
            )
        }
        Act::Sleep => {
            let ms = rng.weighted(&[(4, rng.clone().range(0, 300)), (1, 3000)]);
            ("tools/call", call("sleep", json!({"ms": ms})), None)
        }
        Act::Progress => {
            let steps = rng.range(1, 30);
            let delay = rng.range(1, 80);
            let p = call("progress", json!({"steps": steps, "delay_ms": delay}));
            (
                "tools/call",
                with_token(p, format!("t-{tag}-{}", rng.below(4))),
                None,
            )
        }
        Act::Log => (
            "tools/call",
            call("log", json!({"level": "warning", "message": tag})),
            None,
        ),
        Act::Large => {
            let bytes = rng.weighted(&[(3, rng.clone().range(1, 100_000)), (2, 400_000)]);
            (
                "tools/call",
                call("large", json!({"bytes": bytes, "id_last": rng.chance(50)})),
                None,
            )
        }
        Act::Garbage => (
            "tools/call",
            call("garbage", json!({"text": "{\"jsonrpc\": not json"})),
            None,
        ),
        Act::WrongId => (
            "tools/call",
            call(
                "misbehave_emit",
                json!({"lines": [
                    "{\"jsonrpc\":\"2.0\",\"id\":987654321,\"result\":{}}",
                    "{\"jsonrpc\":\"2.0\",\"id\":\"nobody\",\"error\":{\"code\":-1,\"message\":\"x\"}}",
                    "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}",
                    "{\"jsonrpc\":\"2.0\",\"id\":[1],\"result\":{}}",
                    "[]",
                    "{\"jsonrpc\":\"2.0\"}"
                ]}),
            ),
            None,
        ),
        Act::AnswerTwice => (
            "tools/call",
            call(
                "misbehave_emit",
                json!({"lines": [
                    "{\"jsonrpc\":\"2.0\",\"id\":$ID,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"early\"}]}}"
                ]}),
            ),
            None,
        ),
        Act::ServerPing => {
            let p = call(
                "misbehave_emit",
                json!({"lines": [
                    "{\"jsonrpc\":\"2.0\",\"id\":\"srv-ping\",\"method\":\"ping\"}",
                    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":$TOKEN,\"progress\":1}}",
                    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"forged\",\"progress\":1}}"
                ]}),
            );
            ("tools/call", with_token(p, format!("sp-{tag}")), None)
        }
        Act::Notify => {
            let method = *[
                "notifications/tools/list_changed",
                "notifications/resources/list_changed",
                "notifications/prompts/list_changed",
            ]
            .get(rng.below(3) as usize)
            .unwrap();
            (
                "tools/call",
                call("notify", json!({"method": method})),
                None,
            )
        }
        Act::Flood => (
            "tools/call",
            call(
                "misbehave_flood",
                json!({"count": rng.range(10, 400), "bytes": rng.range(10, 3000)}),
            ),
            None,
        ),
        Act::Stderr => (
            "tools/call",
            call(
                "stderr",
                json!({"lines": rng.range(10, 3000), "bytes_per_line": rng.range(1, 500)}),
            ),
            None,
        ),
        Act::Sample => ("tools/call", call("sample", json!({"prompt": "hi"})), None),
        Act::Roots => ("tools/call", call("roots", json!({})), None),
        Act::Elicit => ("tools/call", call("elicit", json!({"message": "?"})), None),
        Act::Crash => (
            "tools/call",
            call("crash", json!({"code": rng.range(0, 3)})),
            None,
        ),
        Act::CloseStdout => (
            "tools/call",
            call("misbehave_close_stdout", json!({})),
            None,
        ),
        Act::StopReading => (
            "tools/call",
            call(
                "misbehave_stop_reading",
                json!({"pings": rng.range(0, 3), "resume_after_ms": rng.range(100, 3000)}),
            ),
            None,
        ),
        Act::HugeLine => (
            "tools/call",
            call(
                "misbehave_huge_line",
                json!({"bytes": MAX_LINE + 100, "newline_after_ms": rng.range(0, 500)}),
            ),
            None,
        ),
        Act::LongLineOk => (
            "tools/call",
            call(
                "misbehave_huge_line",
                json!({"bytes": rng.range(1000, 300_000), "newline_after_ms": rng.range(0, 300)}),
            ),
            None,
        ),
        Act::SlowAnswer | Act::SlowAnswerExit | Act::SlowAnswerStall => {
            let then = match act {
                Act::SlowAnswer => "end",
                Act::SlowAnswerExit => "exit",
                _ => "stall",
            };
            (
                "tools/call",
                call(
                    "misbehave_slow_answer",
                    json!({"bytes": rng.range(300_000, 600_000), "pause_ms": rng.range(10, 2500),
                        "then": then, "id_last": rng.chance(30)}),
                ),
                None,
            )
        }
        Act::Grandchild => ("tools/call", call("spawn_grandchild", json!({})), None),
        Act::Ping => ("ping", json!({}), None),
        Act::ToolsList => ("tools/list", json!({}), None),
    }
}

/// Whether `what` (an act's name) makes the child write a line long
/// enough to be passed on as it is written (cut-through): such an answer
/// breaks off, and its body with it, when the child dies in its middle
/// or writes another line into it (a shared child serving other calls
/// meanwhile), which the client sees as a broken body (documented).
fn is_long(what: &str) -> bool {
    ["Large", "SlowAnswer", "LongLineOk", "HugeLine"]
        .iter()
        .any(|a| what.starts_with(a))
}

/// Whether error `e` of a request is its body breaking off after its
/// status came: a JSON body that ends before it is complete, or an SSE
/// stream without event ids that breaks (one with ids is resumed, see
/// [`read_answer`], and must bring the answer or its error). A long
/// answer that breaks before its response's head went out is answered
/// with its error instead (a 200, or the stream's event), so a request
/// that got no status at all (`send: … connection closed before message
/// completed`) is a violation whatever the child did.
fn broke_off(e: &str) -> bool {
    e.starts_with("JSON body:") || e.starts_with("body:") || e.starts_with("SSE stream broke")
}

/// The answer of a server→client request a client chose to answer.
fn server_request_answer(method: &str) -> Value {
    match method {
        "sampling/createMessage" => {
            json!({"role":"assistant","content":{"type":"text","text":"sampled"},"model":"chaos"})
        }
        "roots/list" => json!({"roots": [{"uri": "file:///tmp", "name": "tmp"}]}),
        "elicitation/create" => json!({"action": "accept", "content": {"answer": "yes"}}),
        _ => json!({}),
    }
}

/// What became of one request.
enum Outcome {
    /// A JSON-RPC response with the request's id.
    Answered(Value),
    /// An HTTP status other than 200 (a refusal, a lost session...).
    Status(u16),
    /// The client hung up on purpose.
    HungUp,
}

/// Shared by every client of a run.
struct Ctx {
    base: String,
    mode: Mode,
    report: Report,
    /// When the clients stop (per round, see `CHAOS_ROUNDS`).
    deadline: Mutex<Instant>,
}

impl Ctx {
    fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    fn running(&self) -> bool {
        Instant::now() < *support_lock(&self.deadline)
    }

    /// Checks the final answer of a request: its id, and an `echo`'s text.
    fn check_answer(&self, what: &str, id: &Value, answer: &Value, echo: Option<&str>) {
        if answer.get("id") != Some(id) {
            self.report.violation(format!(
                "{what}: answer for another id: sent {id}, got {answer}"
            ));
            return;
        }
        if answer.get("error").is_some() {
            self.report.count("answer: json-rpc error");
            return;
        }
        if answer.get("result").is_none() {
            self.report
                .violation(format!("{what}: neither result nor error: {answer}"));
            return;
        }
        self.report.count("answer: result");
        if let Some(text) = echo {
            let got = answer
                .pointer("/result/content/0/text")
                .and_then(Value::as_str);
            // A child told to answer twice may be answered by its first,
            // "early" answer, which is the request's own.
            if got != Some(text) && got != Some("early") {
                self.report.violation(format!(
                    "{what}: echo of {text:?} came back as {got:?}: another client's answer"
                ));
            }
        }
    }
}

/// Reads an SSE body event by event: `(id, data)` pairs, and whether the
/// stream ended (versus the wait running out).
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    fn new(resp: reqwest::Response) -> Events {
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// The complete events already received: in hand, or waiting on the
    /// connection (read without waiting for more).
    async fn buffered(&mut self) -> Vec<(Option<String>, String)> {
        while let Ok(Ok(Some(c))) =
            tokio::time::timeout(Duration::from_millis(1), self.resp.chunk()).await
        {
            self.buf.extend_from_slice(&c);
        }
        let mut out = Vec::new();
        while let Some(i) = find_blank(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..i + 2).collect();
            let block = String::from_utf8_lossy(&block).into_owned();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(v);
                } else if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                    id = Some(v.to_string());
                }
            }
            out.push((id, data));
        }
        out
    }

    /// The next event with data (comments and priming events are
    /// skipped, but a priming event's id is returned with empty data).
    /// `Ok(None)`: the stream ended. `Err`: a transport error.
    async fn next(&mut self) -> Result<Option<(Option<String>, String)>, String> {
        loop {
            if let Some(i) = find_blank(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..i + 2).collect();
                let block = String::from_utf8_lossy(&block).into_owned();
                let mut id = None;
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                        data.push_str(v);
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                        id = Some(v.to_string());
                    }
                }
                if any || id.is_some() {
                    return Ok(Some((id, data)));
                }
                continue;
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => return Ok(None),
                Err(e) => return Err(chain(&e)),
            }
        }
    }
}

/// An error with its causes, which say what the connection did.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn find_blank(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// A streamable-HTTP client of the session era (or, with `--stateless`,
/// without a session).
struct SessionClient {
    ctx: Arc<Ctx>,
    http: reqwest::Client,
    rng: Rng,
    name: String,
    version: &'static str,
    session: Option<String>,
    accept: &'static str,
    next_id: u64,
    /// Set while this client has DELETEd its session under a call.
    deleting: Arc<AtomicBool>,
    /// Set once this client sent `notifications/cancelled` for its call:
    /// no answer is owed then (the stream may end without one).
    cancelled: Arc<AtomicBool>,
    /// Its cancellations sent a little later, in tasks of their own: the
    /// client is done only when they are (else one still in the air when
    /// the run ends holds a socket the quiet state counts, and fails on a
    /// stopped proxy: CI at a5dd39c, seed 13).
    cancels: tokio_util::task::TaskTracker,
}

impl SessionClient {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(self.ctx.mcp())
            .header("content-type", "application/json")
            .header("accept", self.accept)
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", self.version);
        }
        req
    }

    /// initialize + initialized; false if the proxy refused (counted).
    async fn initialize(&mut self) -> bool {
        self.session = None;
        let caps = json!({"sampling": {}, "roots": {"listChanged": true}, "elicitation": {}});
        let body = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": self.version, "capabilities": caps,
            "clientInfo": {"name": self.name, "version": "1"}}});
        let id = json!(0);
        let sent = self.post(&body);
        let outcome = self.exchange("initialize", sent, &id, None, None).await;
        match outcome {
            Some(Outcome::Answered(a)) if a.get("result").is_some() => {}
            Some(Outcome::Answered(_)) | Some(Outcome::Status(_)) | Some(Outcome::HungUp) => {
                return false;
            }
            None => return false,
        }
        // `exchange` keeps the session id it saw.
        if self.session.is_none() && self.ctx.mode != Mode::Stateless {
            self.ctx.report.violation(format!(
                "{}: initialize answered without a session id",
                self.name
            ));
            return false;
        }
        let r = tokio::time::timeout(
            budget(),
            self.post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
                .send(),
        )
        .await;
        match r {
            Ok(Ok(r)) if r.status() == 202 => true,
            Ok(Ok(r)) => {
                self.ctx
                    .report
                    .count(&format!("initialized: {}", r.status().as_u16()));
                false
            }
            Ok(Err(e)) => {
                self.ctx
                    .report
                    .violation(format!("{}: initialized: transport error {e}", self.name));
                false
            }
            Err(_) => {
                self.ctx.report.violation(format!(
                    "{}: initialized not answered in {:?}",
                    self.name,
                    budget()
                ));
                false
            }
        }
    }

    /// Sends `req` and reads its answer, within the budget (or until
    /// `hangup`, when the client gives up on purpose). `None`: a violation
    /// was recorded.
    async fn exchange(
        &mut self,
        what: &str,
        req: reqwest::RequestBuilder,
        id: &Value,
        echo: Option<&str>,
        hangup: Option<Duration>,
    ) -> Option<Outcome> {
        let ctx = self.ctx.clone();
        let http = self.http.clone();
        let session = self.session.clone();
        let version = self.version;
        let deleting = self.deleting.clone();
        let cancelled = self.cancelled.clone();
        let label = format!("{} {what} id {id}", self.name);
        let mut rng = self.rng.fork(self.next_id);
        let notes: Notes = Arc::default();
        let read = async {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("send: {}", chain(&e)))?;
            let status = resp.status().as_u16();
            if let Some(s) = resp.headers().get("mcp-session-id") {
                let s = s.to_str().unwrap_or_default().to_string();
                return Ok::<_, String>((
                    status,
                    Some(s),
                    read_answer(
                        &ctx,
                        &http,
                        resp,
                        id,
                        session.as_deref(),
                        version,
                        &mut rng,
                        &notes,
                    )
                    .await?,
                ));
            }
            if status != 200 {
                return Ok((status, None, None));
            }
            Ok((
                status,
                None,
                read_answer(
                    &ctx,
                    &http,
                    resp,
                    id,
                    session.as_deref(),
                    version,
                    &mut rng,
                    &notes,
                )
                .await?,
            ))
        };
        let limit = hangup.unwrap_or_else(budget);
        match tokio::time::timeout(limit, read).await {
            Err(_) if hangup.is_some() => {
                ctx.report.count("hung up on purpose");
                Some(Outcome::HungUp)
            }
            Err(_) => {
                ctx.report.violation(format!(
                    "{label}: no answer within {limit:?}; saw {}",
                    notes_text(&notes)
                ));
                None
            }
            Ok(Err(e)) => {
                if deleting.load(Ordering::Relaxed) {
                    ctx.report.count("transport error after own DELETE");
                    return Some(Outcome::Status(0));
                }
                if is_long(what) && broke_off(&e) {
                    ctx.report.count("long answer broke off");
                    return Some(Outcome::Status(0));
                }
                ctx.report.violation(format!("{label}: {e}"));
                None
            }
            Ok(Ok((status, sid, answer))) => {
                if let Some(sid) = sid {
                    self.session = Some(sid);
                }
                if status != 200 {
                    ctx.report.count(&format!("status {status}"));
                    return Some(Outcome::Status(status));
                }
                match answer {
                    Some(a) => {
                        ctx.check_answer(&label, id, &a, echo);
                        Some(Outcome::Answered(a))
                    }
                    None if deleting.load(Ordering::Relaxed) => {
                        ctx.report.count("stream ended by own DELETE");
                        Some(Outcome::Status(0))
                    }
                    None if cancelled.load(Ordering::Relaxed) => {
                        ctx.report.count("stream ended after own cancel");
                        Some(Outcome::HungUp)
                    }
                    None => {
                        ctx.report.violation(format!(
                            "{label}: SSE stream ended without its answer; saw {}",
                            notes_text(&notes)
                        ));
                        None
                    }
                }
            }
        }
    }

    /// A run of calls on one session, then DELETE (or abandon it).
    async fn run(mut self) {
        while self.ctx.running() {
            if !self.initialize().await {
                tokio::time::sleep(self.rng.ms(10, 200)).await;
                continue;
            }
            self.ctx
                .report
                .count(&format!("session {} {}", self.version, self.accept_name()));
            let mut stream = None;
            if self.session.is_some() && self.rng.chance(50) {
                stream = Some(self.open_get_stream());
            }
            let calls = self.rng.range(1, 25);
            let mut gone = false;
            for _ in 0..calls {
                if !self.ctx.running() {
                    break;
                }
                match self.one_call().await {
                    Some(Outcome::Status(404)) => {
                        gone = true;
                        break;
                    }
                    Some(Outcome::Status(0)) => {
                        gone = true;
                        break;
                    }
                    _ => {}
                }
                if self.rng.chance(20) {
                    tokio::time::sleep(self.rng.ms(0, 300)).await;
                }
            }
            if let Some(s) = stream.take() {
                s.abort();
            }
            if !gone && self.session.is_some() {
                if self.rng.chance(80) || !self.ctx.running() {
                    self.delete().await;
                } else {
                    self.ctx.report.count("session abandoned to idle expiry");
                }
            }
            self.deleting.store(false, Ordering::Relaxed);
        }
        if self.session.is_some() {
            self.delete().await;
        }
        self.cancels.close();
        self.cancels.wait().await;
    }

    fn accept_name(&self) -> &'static str {
        match self.accept {
            "application/json" => "json",
            "text/event-stream" => "sse",
            _ => "json+sse",
        }
    }

    async fn delete(&mut self) {
        let Some(s) = self.session.take() else { return };
        let r = tokio::time::timeout(
            budget(),
            self.http
                .delete(self.ctx.mcp())
                .header("mcp-session-id", &s)
                .header("mcp-protocol-version", self.version)
                .send(),
        )
        .await;
        match r {
            Ok(Ok(r)) => self
                .ctx
                .report
                .count(&format!("DELETE {}", r.status().as_u16())),
            Ok(Err(e)) => self
                .ctx
                .report
                .violation(format!("{}: DELETE: transport error {e}", self.name)),
            Err(_) => self.ctx.report.violation(format!(
                "{}: DELETE not answered in {:?}",
                self.name,
                budget()
            )),
        }
    }

    /// One request of a random kind, maybe cancelled, hung up on, or
    /// with its session deleted under it.
    async fn one_call(&mut self) -> Option<Outcome> {
        let act = self.rng.weighted(ACTS);
        self.ctx.report.count(&format!("act {act:?}"));
        self.next_id += 1;
        // Small ids, so that sessions on a shared child collide. Without
        // a session (`--stateless`) every client is the one anonymous
        // principal, whose cancellations name any of its requests by id
        // (documented): there ids are the client's own.
        let id = if self.session.is_none() {
            json!(format!("{}-r{}", self.name, self.next_id))
        } else if self.rng.chance(50) {
            json!(self.next_id)
        } else {
            json!(format!("r{}", self.next_id))
        };
        let (method, params, echo) = request_of(act, &mut self.rng, &self.name);
        let body = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        let batch = self.version == "2025-03-26" && self.session.is_some() && self.rng.chance(15);
        let body = if batch {
            self.ctx.report.count("batch");
            json!([body, {"jsonrpc":"2.0","id":format!("b{}", self.next_id),"method":"ping"}])
        } else {
            body
        };
        let req = self.post(&body);
        let hangup = self.rng.chance(10).then(|| self.rng.ms(0, 1500));
        self.cancelled = Arc::new(AtomicBool::new(false));
        if self.rng.chance(8) {
            // A cancellation in a POST of its own, a little later.
            let cancel = self.post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled",
                "params":{"requestId": id, "reason": "chaos"}}));
            let delay = self.rng.ms(0, 500);
            let ctx = self.ctx.clone();
            let name = self.name.clone();
            let cancelled = self.cancelled.clone();
            self.cancels.spawn(async move {
                tokio::time::sleep(delay).await;
                cancelled.store(true, Ordering::Relaxed);
                match tokio::time::timeout(budget(), cancel.send()).await {
                    Ok(Ok(r)) => ctx.report.count(&format!("cancel {}", r.status().as_u16())),
                    Ok(Err(e)) => ctx.report.violation(format!("{name}: cancel: {e}")),
                    Err(_) => ctx.report.violation(format!("{name}: cancel not answered")),
                }
            });
        }
        if !batch && self.session.is_some() && self.rng.chance(4) {
            // DELETE while the call is in flight.
            self.deleting.store(true, Ordering::Relaxed);
            let del = self
                .http
                .delete(self.ctx.mcp())
                .header("mcp-session-id", self.session.clone().unwrap())
                .header("mcp-protocol-version", self.version);
            let delay = self.rng.ms(0, 800);
            let ctx = self.ctx.clone();
            let name = self.name.clone();
            ctx.report.count("DELETE mid-call");
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match tokio::time::timeout(budget(), del.send()).await {
                    Ok(Ok(r)) => ctx.report.count(&format!("DELETE {}", r.status().as_u16())),
                    Ok(Err(e)) => ctx.report.violation(format!("{name}: DELETE: {e}")),
                    Err(_) => ctx.report.violation(format!("{name}: DELETE not answered")),
                }
            });
            let out = self
                .exchange(&format!("{act:?}"), req, &id, echo.as_deref(), hangup)
                .await;
            self.session = None;
            return Some(out.map_or(Outcome::Status(0), |_| Outcome::Status(0)));
        }
        if batch {
            return self
                .batch_exchange(&format!("{act:?}"), req, &id, hangup)
                .await;
        }
        self.exchange(&format!("{act:?}"), req, &id, echo.as_deref(), hangup)
            .await
    }

    /// A 2025-03-26 batch: the JSON array of answers (or an SSE stream).
    async fn batch_exchange(
        &mut self,
        what: &str,
        req: reqwest::RequestBuilder,
        id: &Value,
        hangup: Option<Duration>,
    ) -> Option<Outcome> {
        let ctx = self.ctx.clone();
        let label = format!("{} batch {what} id {id}", self.name);
        let (http, session, version) = (self.http.clone(), self.session.clone(), self.version);
        let ping = json!(format!("b{}", self.next_id));
        let read = async {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("send: {}", chain(&e)))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Ok::<_, String>((status, vec![]));
            }
            let sse = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
            let mut answers = Vec::new();
            if sse {
                // As `read_answer`: a stream with event ids that ends or
                // breaks before both answers came (its consumer was cut
                // off as too slow, a long answer broke off) is resumed,
                // and must bring them or an error for each.
                let mut ev = Events::new(resp);
                let mut last: Option<String> = None;
                let mut resumes = 0;
                loop {
                    let mut brought = false;
                    loop {
                        match ev.next().await {
                            Ok(Some((eid, data))) => {
                                brought = true;
                                if eid.is_some() {
                                    last = eid;
                                }
                                if let Ok(v) = serde_json::from_str::<Value>(&data)
                                    && v.get("method").is_none()
                                {
                                    answers.push(v);
                                }
                            }
                            Ok(None) => break,
                            Err(_) if last.is_some() && session.is_some() => {
                                ctx.report.count("SSE stream broke, resumed");
                                break;
                            }
                            Err(e) => return Err(format!("SSE stream broke: {e}")),
                        }
                    }
                    let has = |want: &Value| answers.iter().any(|a| a.get("id") == Some(want));
                    let (Some(l), Some(s)) = (last.clone(), session.as_deref()) else {
                        break;
                    };
                    if (has(id) && has(&ping)) || (resumes > 0 && !brought) {
                        break;
                    }
                    resumes += 1;
                    if resumes > 20 {
                        return Err("resumed 20 times without the answers".into());
                    }
                    ctx.report.count("batch stream resumed");
                    let r = http
                        .get(ctx.mcp())
                        .header("accept", "text/event-stream")
                        .header("mcp-session-id", s)
                        .header("mcp-protocol-version", version)
                        .header("last-event-id", &l)
                        .send()
                        .await
                        .map_err(|e| format!("resume: {e}"))?;
                    if r.status() != 200 {
                        // The session or its stream is gone: the client
                        // learns it.
                        ctx.report.count(&format!("resume {}", r.status().as_u16()));
                        let missing: Vec<Value> = [id, &ping]
                            .into_iter()
                            .filter(|w| !has(w))
                            .cloned()
                            .collect();
                        for want in missing {
                            answers.push(json!({"id": want, "error": {"code": 0,
                                "message": format!("resume {}", r.status())}}));
                        }
                        break;
                    }
                    ev = Events::new(r);
                }
            } else {
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| format!("body: {}", chain(&e)))?;
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    format!(
                        "batch body not JSON ({e}): {}",
                        String::from_utf8_lossy(&body)
                    )
                })?;
                match v {
                    Value::Array(a) => answers = a,
                    other => answers.push(other),
                }
            }
            Ok((status, answers))
        };
        let limit = hangup.unwrap_or_else(budget);
        match tokio::time::timeout(limit, read).await {
            Err(_) if hangup.is_some() => Some(Outcome::HungUp),
            Err(_) => {
                ctx.report
                    .violation(format!("{label}: no answer within {limit:?}"));
                None
            }
            Ok(Err(e)) if is_long(what) && broke_off(&e) => {
                ctx.report.count("long answer broke off");
                Some(Outcome::Status(0))
            }
            Ok(Err(e)) => {
                ctx.report.violation(format!("{label}: {e}"));
                None
            }
            Ok(Ok((status, _))) if status != 200 => {
                ctx.report.count(&format!("status {status}"));
                Some(Outcome::Status(status))
            }
            Ok(Ok((_, answers))) => {
                let has = |want: &Value| answers.iter().any(|a| a.get("id") == Some(want));
                // A call its client cancelled is owed no answer.
                let cancelled = self.cancelled.load(Ordering::Relaxed);
                if !(has(id) || cancelled) || !has(&ping) {
                    ctx.report
                        .violation(format!("{label}: batch answers lack an id: {answers:?}"));
                }
                ctx.report.count("batch answered");
                Some(Outcome::Answered(json!(answers)))
            }
        }
    }

    /// A GET stream on the session that answers server requests, drops
    /// and resumes with `Last-Event-ID`, and sometimes just hangs up.
    fn open_get_stream(&mut self) -> tokio::task::JoinHandle<()> {
        let ctx = self.ctx.clone();
        let http = self.http.clone();
        let session = self.session.clone().unwrap();
        let version = self.version;
        let mut rng = self.rng.fork(9_999 + self.next_id);
        let name = self.name.clone();
        ctx.report.count("GET stream");
        tokio::spawn(async move {
            let mut last: Option<String> = None;
            while ctx.running() {
                let mut req = http
                    .get(ctx.mcp())
                    .header("accept", "text/event-stream")
                    .header("mcp-session-id", &session)
                    .header("mcp-protocol-version", version);
                if let Some(l) = &last {
                    req = req.header("last-event-id", l);
                    ctx.report.count("GET resume");
                }
                let resp = match tokio::time::timeout(budget(), req.send()).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        ctx.report.violation(format!("{name}: GET: {e}"));
                        return;
                    }
                    Err(_) => {
                        ctx.report
                            .violation(format!("{name}: GET head not in {:?}", budget()));
                        return;
                    }
                };
                if resp.status() != 200 {
                    ctx.report.count(&format!("GET {}", resp.status().as_u16()));
                    return;
                }
                let mut ev = Events::new(resp);
                let keep = rng.ms(50, 3000);
                let until = tokio::time::Instant::now() + keep;
                loop {
                    let next = tokio::time::timeout_at(until, ev.next()).await;
                    match next {
                        Err(_) => break, // hang up, resume later
                        Ok(Err(_)) | Ok(Ok(None)) => return,
                        Ok(Ok(Some((id, data)))) => {
                            if id.is_some() {
                                last = id;
                            }
                            if let Ok(msg) = serde_json::from_str::<Value>(&data) {
                                answer_server_request(
                                    &ctx, &http, &session, version, &msg, &mut rng,
                                );
                            }
                        }
                    }
                }
                if rng.chance(30) {
                    ctx.report.count("GET hung up for good");
                    return;
                }
            }
        })
    }
}

/// Answers (or, one time in four, ignores) a server→client request
/// that arrived on a session's stream, in a POST of its own.
fn answer_server_request(
    ctx: &Arc<Ctx>,
    http: &reqwest::Client,
    session: &str,
    version: &'static str,
    msg: &Value,
    rng: &mut Rng,
) {
    let (Some(method), Some(id)) = (msg.get("method").and_then(Value::as_str), msg.get("id"))
    else {
        return;
    };
    ctx.report.count(&format!("server request {method}"));
    if rng.chance(25) {
        ctx.report.count("server request ignored");
        return;
    }
    let body = if rng.chance(15) {
        json!({"jsonrpc":"2.0","id":id,"error":{"code":-1,"message":"no"}})
    } else {
        json!({"jsonrpc":"2.0","id":id,"result":server_request_answer(method)})
    };
    let req = http
        .post(ctx.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", version)
        .body(body.to_string());
    let ctx = ctx.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(budget(), req.send()).await {
            Ok(Ok(r)) => ctx
                .report
                .count(&format!("server request answered {}", r.status().as_u16())),
            Ok(Err(e)) => ctx
                .report
                .violation(format!("answer to server request: {e}")),
            Err(_) => ctx
                .report
                .violation("answer to server request not taken".into()),
        }
    });
}

/// The answer to request `id` in `resp` (a JSON body or an SSE stream,
/// answering server requests met on the way, resuming with
/// `Last-Event-ID` if the stream ends early). `Ok(None)`: the stream
/// ended and no resumption brought the answer.
#[allow(clippy::too_many_arguments)]
async fn read_answer(
    ctx: &Arc<Ctx>,
    http: &reqwest::Client,
    resp: reqwest::Response,
    id: &Value,
    session: Option<&str>,
    version: &'static str,
    rng: &mut Rng,
    notes: &Notes,
) -> Result<Option<Value>, String> {
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    if !sse {
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("JSON body: {}", chain(&e)))?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "JSON body not JSON ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        })?;
        return Ok(Some(v));
    }
    ctx.report.count("SSE answer");
    note(notes, "sse");
    let mut ev = Events::new(resp);
    let mut last: Option<String> = None;
    let mut resumes = 0;
    let mut resumed_empty = false;
    // The client drops a stream on purpose at most once per request.
    let mut dropped = false;
    loop {
        match ev.next().await {
            Ok(Some((eid, data))) => {
                resumed_empty = false;
                note(
                    notes,
                    &format!("ev {eid:?} {}", data.chars().take(60).collect::<String>()),
                );
                if eid.is_some() {
                    last = eid;
                }
                if data.is_empty() {
                    continue;
                }
                let msg: Value = match serde_json::from_str(&data) {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(format!(
                            "SSE event not JSON ({e}): {}",
                            data.chars().take(200).collect::<String>()
                        ));
                    }
                };
                if msg.get("method").is_some() {
                    if let Some(s) = session {
                        answer_server_request(ctx, http, s, version, &msg, rng);
                    }
                    // Now and then the client drops the stream on purpose
                    // and resumes it, as a flaky network makes it.
                    if dropped || session.is_none() || last.is_none() || !rng.chance(5) {
                        continue;
                    }
                    dropped = true;
                    // What already arrived is the client's: a client that
                    // threw away bytes it had would lose them whatever the
                    // server kept.
                    for (_, data) in ev.buffered().await {
                        let Ok(msg) = serde_json::from_str::<Value>(&data) else {
                            continue;
                        };
                        if msg.get("method").is_none() && msg.get("id") == Some(id) {
                            note(notes, "answer already received");
                            return Ok(Some(msg));
                        }
                    }
                    ctx.report.count("POST stream dropped on purpose");
                    note(notes, "dropped on purpose");
                } else if msg.get("id") == Some(id) {
                    let message = msg.pointer("/error/message").and_then(Value::as_str);
                    if message.is_some_and(|m| m.contains("answer to this request was lost")) {
                        ctx.report.count("answer lost, reported as an error");
                    }
                    return Ok(Some(msg));
                } else {
                    return Err(format!(
                        "SSE stream carried an answer for another id: {msg}"
                    ));
                }
            }
            Ok(None) => note(notes, "end"),
            // A stream with ids that breaks (a long answer broke off) is
            // resumed as one that ended: the replay buffer has the
            // request's error in place of the answer.
            Err(e) if last.is_some() && session.is_some() => {
                ctx.report.count("SSE stream broke, resumed");
                note(notes, &format!("broke: {e}"));
            }
            Err(e) => return Err(format!("SSE stream broke: {e}")),
        }
        // The stream ended without the answer: resume it, as a client
        // would, if it had event ids.
        let (Some(l), Some(s)) = (last.clone(), session) else {
            return Ok(None);
        };
        if resumed_empty {
            // A resumption that brought nothing: the stream is over, and
            // its answer never came (one the proxy no longer kept comes
            // back as an error to its request, never as nothing).
            return Ok(None);
        }
        resumes += 1;
        if resumes > 20 {
            return Err(format!(
                "resumed 20 times without the answer: {}",
                notes_text(notes)
            ));
        }
        ctx.report.count("POST stream resumed");
        let r = http
            .get(ctx.mcp())
            .header("accept", "text/event-stream")
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", version)
            .header("last-event-id", &l)
            .send()
            .await
            .map_err(|e| format!("resume: {e}"))?;
        note(notes, &format!("resume after {l}: {}", r.status()));
        if r.status() != 200 {
            ctx.report.count(&format!("resume {}", r.status().as_u16()));
            // The session or its stream is gone: the client learns it.
            return Ok(Some(
                json!({"id": id, "error": {"code": 0, "message": format!("resume {}", r.status())}}),
            ));
        }
        ev = Events::new(r);
        resumed_empty = true;
    }
}

/// What a client saw of one request, for a violation's message.
type Notes = Arc<Mutex<Vec<String>>>;

fn note(notes: &Notes, what: &str) {
    // The first events and the last: what happened at the end matters.
    let mut n = support_lock(notes);
    if n.len() >= 80 {
        n.remove(20);
    }
    n.push(what.to_string());
}

fn notes_text(notes: &Notes) -> String {
    support_lock(notes).join(" | ")
}

// ---------------------------------------------------------------- legacy

async fn legacy_client(ctx: Arc<Ctx>, mut rng: Rng, name: String) {
    let http = reqwest::Client::new();
    while ctx.running() {
        let open =
            tokio::time::timeout(budget(), http.get(format!("{}/sse", ctx.base)).send()).await;
        let resp = match open {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                ctx.report.violation(format!("{name}: GET /sse: {e}"));
                return;
            }
            Err(_) => {
                ctx.report
                    .violation(format!("{name}: GET /sse head not in {:?}", budget()));
                return;
            }
        };
        if resp.status() != 200 {
            ctx.report
                .count(&format!("legacy GET /sse {}", resp.status().as_u16()));
            tokio::time::sleep(rng.ms(50, 300)).await;
            continue;
        }
        ctx.report.count("legacy session");
        let mut ev = Events::new(resp);
        let endpoint = match tokio::time::timeout(budget(), ev.next()).await {
            Ok(Ok(Some((_, data)))) => data,
            other => {
                ctx.report.violation(format!(
                    "{name}: no endpoint event: {:?}",
                    other.map(|r| r.map(|o| o.is_some()))
                ));
                return;
            }
        };
        let post_url = format!("{}{}", ctx.base, endpoint);
        // Every answer comes on the stream; a task reads it and hands
        // answers to the waiting calls.
        let waiting: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>> =
            Arc::default();
        let ended = Arc::new(tokio::sync::Notify::new());
        let ended_flag = Arc::new(AtomicBool::new(false));
        let reader = {
            let (waiting, ended, ended_flag, http, post_url) = (
                waiting.clone(),
                ended.clone(),
                ended_flag.clone(),
                http.clone(),
                post_url.clone(),
            );
            let ctx = ctx.clone();
            let mut rng = rng.fork(77);
            tokio::spawn(async move {
                while let Ok(Some((_, data))) = ev.next().await {
                    let Ok(msg) = serde_json::from_str::<Value>(&data) else {
                        ctx.report
                            .violation(format!("legacy event not JSON: {data:.200}"));
                        continue;
                    };
                    if let (Some(method), Some(id)) =
                        (msg.get("method").and_then(Value::as_str), msg.get("id"))
                    {
                        ctx.report.count(&format!("legacy server request {method}"));
                        if rng.chance(75) {
                            let body = json!({"jsonrpc":"2.0","id":id,"result":server_request_answer(method)});
                            let req = http.post(&post_url).json(&body);
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(budget(), req.send()).await;
                            });
                        }
                        continue;
                    }
                    if msg.get("method").is_some() {
                        continue;
                    }
                    let key = msg.get("id").map(Value::to_string).unwrap_or_default();
                    if let Some(tx) = support_lock(&waiting).remove(&key) {
                        let _ = tx.send(msg);
                    } else {
                        ctx.report
                            .violation(format!("legacy answer for no waiting call: {msg:.300}"));
                    }
                }
                ended_flag.store(true, Ordering::SeqCst);
                ended.notify_waiters();
            })
        };
        let init = json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{
            "protocolVersion":"2024-11-05","capabilities":{"sampling":{},"roots":{}},
            "clientInfo":{"name":name,"version":"1"}}});
        let mut ok = legacy_call(
            &ctx,
            &http,
            &post_url,
            &waiting,
            &ended,
            &ended_flag,
            init,
            &name,
            None,
        )
        .await;
        if ok {
            let _ = tokio::time::timeout(
                budget(),
                http.post(&post_url)
                    .json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
                    .send(),
            )
            .await;
        }
        let calls = rng.range(1, 20);
        let mut n = 0;
        while ok && n < calls && ctx.running() {
            n += 1;
            let act = rng.weighted(ACTS);
            ctx.report.count(&format!("act {act:?}"));
            let (method, params, echo) = request_of(act, &mut rng, &name);
            let id = json!(n);
            let body = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
            if rng.chance(5) {
                ctx.report.count("legacy hang up mid-call");
                break;
            }
            ok = legacy_call(
                &ctx,
                &http,
                &post_url,
                &waiting,
                &ended,
                &ended_flag,
                body,
                &name,
                echo.as_deref(),
            )
            .await;
        }
        // Hanging up the stream ends the session.
        reader.abort();
        tokio::time::sleep(rng.ms(0, 100)).await;
    }
}

/// One legacy request: 202 on the POST, the answer on the stream within
/// the budget, or the stream's end (the session ended: a crashed child).
#[allow(clippy::too_many_arguments)]
async fn legacy_call(
    ctx: &Arc<Ctx>,
    http: &reqwest::Client,
    post_url: &str,
    waiting: &Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>>,
    ended: &Arc<tokio::sync::Notify>,
    ended_flag: &Arc<AtomicBool>,
    body: Value,
    name: &str,
    echo: Option<&str>,
) -> bool {
    let id = body["id"].clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    support_lock(waiting).insert(id.to_string(), tx);
    let label = format!("{name} legacy id {id}");
    let ended_wait = ended.notified();
    if ended_flag.load(Ordering::SeqCst) {
        return false;
    }
    let r = tokio::time::timeout(budget(), http.post(post_url).json(&body).send()).await;
    match r {
        Ok(Ok(r)) if r.status() == 202 => {}
        Ok(Ok(r)) => {
            ctx.report
                .count(&format!("legacy POST {}", r.status().as_u16()));
            support_lock(waiting).remove(&id.to_string());
            return false;
        }
        Ok(Err(e)) => {
            ctx.report.violation(format!("{label}: POST: {e}"));
            return false;
        }
        Err(_) => {
            ctx.report.violation(format!("{label}: POST not answered"));
            return false;
        }
    }
    tokio::select! {
        a = rx => match a {
            Ok(a) => { ctx.check_answer(&label, &id, &a, echo); true }
            Err(_) => false,
        },
        _ = ended_wait => { ctx.report.count("legacy stream ended under a call"); false }
        _ = tokio::time::sleep(budget()) => {
            if ended_flag.load(Ordering::SeqCst) {
                return false;
            }
            ctx.report.violation(format!("{label}: no answer on the stream within {:?}", budget()));
            false
        }
    }
}

// ---------------------------------------------------------------- 2026-07-28

async fn modern_client(ctx: Arc<Ctx>, mut rng: Rng, name: String) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        let mut act = rng.weighted(ACTS);
        if matches!(act, Act::Ping | Act::ToolsList) {
            act = Act::Echo;
        }
        ctx.report.count(&format!("act {act:?}"));
        let (_, mut params, echo) = request_of(act, &mut rng, &name);
        let tool = params["name"].as_str().unwrap_or_default().to_string();
        let mut meta = params.get("_meta").cloned().unwrap_or(json!({}));
        meta["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
        meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
        params["_meta"] = meta;
        let id = json!(n % 5);
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params});
        let accept = if rng.chance(50) {
            "application/json"
        } else {
            "application/json, text/event-stream"
        };
        let req = http
            .post(ctx.mcp())
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", &tool)
            .body(body.to_string());
        let hangup = rng.chance(12).then(|| rng.ms(0, 1500));
        let label = format!("{name} 2026 {act:?} id {id}");
        let notes: Notes = Arc::default();
        let read = async {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("send: {}", chain(&e)))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Ok::<_, String>((status, None));
            }
            let mut r = rng.fork(n);
            Ok((
                status,
                read_answer(&ctx, &http, resp, &id, None, "2026-07-28", &mut r, &notes).await?,
            ))
        };
        let limit = hangup.unwrap_or_else(budget);
        match tokio::time::timeout(limit, read).await {
            Err(_) if hangup.is_some() => ctx.report.count("hung up on purpose"),
            Err(_) => ctx.report.violation(format!(
                "{label}: no answer within {limit:?}; saw {}",
                notes_text(&notes)
            )),
            Ok(Err(e)) if is_long(&format!("{act:?}")) && broke_off(&e) => {
                ctx.report.count("long answer broke off")
            }
            Ok(Err(e)) => ctx.report.violation(format!("{label}: {e}")),
            Ok(Ok((status, _))) if status != 200 => ctx.report.count(&format!("status {status}")),
            Ok(Ok((_, Some(a)))) => ctx.check_answer(&label, &id, &a, echo.as_deref()),
            Ok(Ok((_, None))) => ctx
                .report
                .violation(format!("{label}: SSE stream ended without its answer")),
        }
    }
}

// ---------------------------------------------------------------- health

/// CPU time `pid` has used (user and system), in clock ticks (100 Hz).
fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(12) + n(13)
        })
        .unwrap_or(0)
}

/// Probes `/health` every 200 ms. A probe over [`HEALTH_BUDGET`] breaks
/// the invariant when the proxy spent most of that time on the CPU (its
/// own work held the answer up), or took over 5 budgets in any case; one
/// whose proxy mostly waited for a CPU (other processes on a loaded
/// machine) is counted, not failed.
async fn health_watch(ctx: Arc<Ctx>, stop: Arc<AtomicBool>, pid: u32) -> (u64, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut n = 0;
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let cpu0 = cpu_ticks(pid);
        let r = tokio::time::timeout(
            HEALTH_BUDGET * 5,
            http.get(format!("{}/health", ctx.base)).send(),
        )
        .await;
        let took = started.elapsed();
        worst = worst.max(took);
        n += 1;
        match r {
            Ok(Ok(r)) if r.status() == 200 => {}
            Ok(Ok(r)) => ctx
                .report
                .violation(format!("/health answered {}", r.status())),
            Ok(Err(e)) => ctx.report.violation(format!("/health: {e}")),
            Err(_) => {}
        }
        if took > HEALTH_BUDGET {
            let cpu = Duration::from_millis((cpu_ticks(pid) - cpu0) * 10);
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            if cpu * 10 >= took * 8 || took > HEALTH_BUDGET * 5 {
                ctx.report.violation(format!(
                    "/health took {took:?} (budget {HEALTH_BUDGET:?}), the proxy on the CPU for {cpu:?} of it; load {}",
                    load.trim()
                ));
            } else {
                eprintln!(
                    "chaos: /health took {took:?}, the proxy on the CPU for only {cpu:?} of it (machine load {})",
                    load.trim()
                );
                ctx.report
                    .count("slow /health while the proxy waited for a CPU");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (n, worst)
}

// ---------------------------------------------------------------- a run

async fn metrics(base: &str) -> String {
    match tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("{base}/metrics")),
    )
    .await
    {
        Ok(Ok(r)) => r.text().await.unwrap_or_default(),
        _ => String::new(),
    }
}

/// One chaos run of `secs` seconds with `seed`; panics with the seed and
/// every violation if an invariant broke.
async fn chaos(
    seed: u64,
    mode: Option<Mode>,
    run_for: Duration,
    clients: usize,
) -> Result<u64, String> {
    let mut rng = Rng::new(seed);
    let mode = mode.unwrap_or_else(|| {
        rng.weighted(&[
            (2, Mode::PerSession),
            (2, Mode::Shared),
            (1, Mode::Stateless),
        ])
    });
    eprintln!("chaos: seed {seed} mode {mode:?} for {run_for:?} with {clients} clients");
    let mut proxy = Running::start(mode, &mut rng);
    let pid = proxy.pid();
    let sampler = Sampler::start(pid);

    // Warm-up: one session of every era, then quiet; the baseline for
    // fds and RSS is taken after it.
    let ctx = Arc::new(Ctx {
        base: proxy.base.clone(),
        mode,
        report: Report::default(),
        deadline: Mutex::new(Instant::now() + Duration::from_millis(1)),
    });
    warm_up(&ctx).await;
    let quiet = quiesce(&proxy.base, mode, pid).await;
    let base_fds = fd_targets(pid);
    let base_rss = rss_kib(pid);
    eprintln!(
        "chaos: baseline after warm-up ({quiet}): {} fds, RSS {base_rss} KiB",
        base_fds.len()
    );

    let ctx = Arc::new(Ctx {
        base: proxy.base.clone(),
        mode,
        report: Report::default(),
        deadline: Mutex::new(Instant::now()),
    });
    // Rounds of clients on the same proxy, each followed by the quiet
    // checks: what grows round after round is a leak, not the allocator.
    let rounds = env_u64("CHAOS_ROUNDS").unwrap_or(1).max(1);
    let mut health_n = 0;
    let mut health_worst = Duration::ZERO;
    let mut fds = Vec::new();
    let mut rss = 0;
    for round in 1..=rounds {
        *support_lock(&ctx.deadline) = Instant::now() + run_for;
        let stop_health = Arc::new(AtomicBool::new(false));
        let health = tokio::spawn(health_watch(ctx.clone(), stop_health.clone(), pid));
        let mut tasks = Vec::new();
        for n in 0..clients {
            let r = rng.fork(n as u64 + 1);
            let name = format!("c{n}");
            let kind = match n % 6 {
                0 | 3 => "session",
                1 => "legacy",
                2 => "modern",
                4 => "session-old",
                _ => "modern",
            };
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                match kind {
                    "legacy" => legacy_client(ctx, r, name).await,
                    "modern" => modern_client(ctx, r, name).await,
                    _ => {
                        let mut r = r;
                        let accept = r.weighted(&[
                            (1, "application/json"),
                            (1, "text/event-stream"),
                            (2, "application/json, text/event-stream"),
                        ]);
                        let version = if kind == "session" {
                            "2025-11-25"
                        } else {
                            "2025-03-26"
                        };
                        let c = SessionClient {
                            ctx,
                            http: reqwest::Client::new(),
                            rng: r,
                            name,
                            version,
                            session: None,
                            accept,
                            next_id: 0,
                            deleting: Arc::new(AtomicBool::new(false)),
                            cancelled: Arc::new(AtomicBool::new(false)),
                            cancels: Default::default(),
                        };
                        c.run().await
                    }
                }
            }));
        }
        let mut stuck = 0;
        for t in tasks {
            // A client finishes its last call within the budget after the
            // deadline, plus its DELETE.
            match tokio::time::timeout(run_for + budget() * 3, t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => ctx.report.violation(format!("a client panicked: {e}")),
                Err(_) => stuck += 1,
            }
        }
        if stuck > 0 {
            ctx.report
                .violation(format!("{stuck} clients still busy long after the run"));
        }
        stop_health.store(true, Ordering::Relaxed);
        let (n, worst) = health.await.unwrap_or((0, Duration::ZERO));
        health_n += n;
        health_worst = health_worst.max(worst);

        // Afterwards: gauges to 0, no zombie, fds and RSS back.
        let quiet = quiesce(&proxy.base, mode, pid).await;
        if !quiet.is_empty() && quiet != "quiet" {
            ctx.report
                .violation(format!("not quiet after the run: {quiet}"));
        }
        let (_, zombies) = descendants(pid);
        if !zombies.is_empty() {
            ctx.report
                .violation(format!("zombies of the proxy: {zombies:?}"));
        }
        fds = fd_targets(pid);
        rss = rss_kib(pid);
        if rounds > 1 {
            eprintln!(
                "chaos: after round {round} of {rounds}: {} fds, RSS {rss} KiB",
                fds.len()
            );
        }
        if fds.len() > base_fds.len() {
            ctx.report.violation(format!(
                "fds grew from {} to {}: before {base_fds:?} after {fds:?}",
                base_fds.len(),
                fds.len()
            ));
        }
        // The allocator keeps some of what the long lines took.
        if rss > base_rss + 64 * 1024 {
            ctx.report
                .violation(format!("RSS grew from {base_rss} KiB to {rss} KiB"));
        }
    }

    // SIGTERM: exit 0 within the documented bound, nothing left.
    let sent = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let bound = GRACE * 5 / 2 + Duration::from_secs(2) + Duration::from_secs(5);
    let code = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break Some(status);
        }
        if sent.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exit_took = sent.elapsed();
    match code {
        Some(s) if s.code() == Some(0) => {}
        Some(s) => ctx
            .report
            .violation(format!("proxy exited with {s} on SIGTERM")),
        None => ctx
            .report
            .violation(format!("proxy still running {bound:?} after SIGTERM")),
    }
    let seen = sampler.finish();
    let left = {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left: Vec<&Seen> = seen.iter().filter(|s| s.running()).collect();
            if left.is_empty() || Instant::now() > deadline {
                break left.into_iter().cloned().collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if !left.is_empty() {
        ctx.report
            .violation(format!("processes left after the proxy exited: {left:?}"));
    }

    let counts = std::mem::take(&mut *support_lock(&ctx.report.counts));
    let requests: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("act "))
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "chaos: seed {seed} mode {mode:?}: {requests} calls, {} processes seen, /health {health_n} probes (worst {health_worst:?}), exit in {exit_took:?}, fds {} -> {}, RSS {base_rss} -> {rss} KiB",
        seen.len(),
        base_fds.len(),
        fds.len()
    );
    for (k, v) in &counts {
        eprintln!("chaos:   {k}: {v}");
    }
    let violations = std::mem::take(&mut *support_lock(&ctx.report.violations));
    if !violations.is_empty() {
        return Err(format!(
            "chaos seed {seed} mode {mode:?}: {} violations:\n{}\n--- proxy log (last lines) ---\n{}",
            violations.len(),
            violations.join("\n"),
            proxy.last_log()
        ));
    }
    let _ = std::fs::remove_dir_all(&proxy.log_dir);
    Ok(requests)
}

/// One session of every era, deleted or hung up; the proxy's baseline is
/// taken once it is quiet again.
async fn warm_up(ctx: &Arc<Ctx>) {
    let http = reqwest::Client::new();
    let mut c = SessionClient {
        ctx: ctx.clone(),
        http: http.clone(),
        rng: Rng::new(1),
        name: "warm".into(),
        version: "2025-11-25",
        session: None,
        accept: "application/json, text/event-stream",
        next_id: 0,
        deleting: Arc::new(AtomicBool::new(false)),
        cancelled: Arc::new(AtomicBool::new(false)),
        cancels: Default::default(),
    };
    assert!(c.initialize().await, "warm-up initialize");
    let echo = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"warm"}}});
    let req = c.post(&echo);
    c.exchange("warm echo", req, &json!(1), Some("warm"), None)
        .await;
    c.delete().await;
    let _ = support::modern_call(&http, &ctx.mcp(), "echo", json!({"message": "warm"})).await;
    if let Ok(Ok(r)) =
        tokio::time::timeout(support::STEP, http.get(format!("{}/sse", ctx.base)).send()).await
    {
        let mut ev = Events::new(r);
        let _ = tokio::time::timeout(support::STEP, ev.next()).await;
    }
}

/// Waits until no session, no SSE stream, no request but the scrape and
/// no child beyond the shared one is left; "quiet", or what is still there
/// after the wait.
async fn quiesce(base: &str, mode: Mode, pid: u32) -> String {
    // Sessions the clients abandoned expire after IDLE, a 2026-07-28
    // child after IDLE too, and a child being stopped takes up to 2.5 x
    // the grace.
    let deadline = Instant::now() + IDLE * 3 + GRACE * 3 + Duration::from_secs(10);
    let children_left = if mode == Mode::PerSession { 0.0 } else { 1.0 };
    loop {
        let m = metrics(base).await;
        let sessions = gauge(&m, "mcp_proxy_sessions_open");
        let streams = gauge(&m, "mcp_proxy_sse_streams_open");
        // The scrape itself is the one request left.
        let requests = gauge(&m, "mcp_proxy_http_requests_in_flight");
        let children = gauge(&m, "mcp_proxy_children_alive");
        let replay = health_field(base, "replay_bytes").await;
        let (below, _) = descendants(pid);
        // The guard and (shared) the child and its grandchildren remain.
        let procs: Vec<&Seen> = below
            .iter()
            .filter(|s| s.comm != "mcp-proxy-guard")
            .collect();
        let quiet = sessions == Some(0.0)
            && streams == Some(0.0)
            && requests == Some(1.0)
            && children.is_some_and(|c| c <= children_left)
            && replay == Some(0)
            && (mode != Mode::PerSession || procs.is_empty());
        if quiet {
            return "quiet".into();
        }
        if Instant::now() > deadline {
            return format!(
                "sessions {sessions:?}, SSE streams {streams:?}, requests in flight {requests:?} (1 is the scrape), children {children:?}, replay bytes {replay:?}, processes {procs:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A number in `GET /health`.
async fn health_field(base: &str, field: &str) -> Option<u64> {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("{base}/health")),
    )
    .await
    .ok()?
    .ok()?;
    let v: Value = r.json().await.ok()?;
    v.get(field)?.as_u64()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------- tests

/// The short runs take turns: three proxies and their clients at once on
/// a 2-CPU machine would measure the machine, not the proxy (`/health`'s
/// second).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_per_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if let Err(e) = chaos(11, Some(Mode::PerSession), Duration::from_secs(4), 6).await {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_shared() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if let Err(e) = chaos(12, Some(Mode::Shared), Duration::from_secs(4), 6).await {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_stateless() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if let Err(e) = chaos(13, Some(Mode::Stateless), Duration::from_secs(4), 6).await {
        panic!("{e}");
    }
}

/// The long run: `CHAOS_SECS`, `CHAOS_SEED` or `CHAOS_SEEDS=a-b`,
/// `CHAOS_MODE`, `CHAOS_CLIENTS` (see the module doc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with CHAOS_SECS=... --ignored"]
async fn soak() {
    let secs = env_u64("CHAOS_SECS").unwrap_or(60);
    let clients = env_u64("CHAOS_CLIENTS").unwrap_or(6) as usize;
    let mode = std::env::var("CHAOS_MODE").ok().map(|m| Mode::parse(&m));
    let seeds: Vec<u64> = match (std::env::var("CHAOS_SEEDS").ok(), env_u64("CHAOS_SEED")) {
        (Some(range), _) => {
            let (a, b) = range.split_once('-').expect("CHAOS_SEEDS=a-b");
            (a.parse().unwrap()..=b.parse().unwrap()).collect()
        }
        (None, Some(seed)) => vec![seed],
        (None, None) => {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            vec![seed]
        }
    };
    let (mut runs, mut calls, mut failed) = (0, 0, Vec::new());
    for seed in seeds {
        runs += 1;
        match chaos(seed, mode, Duration::from_secs(secs), clients).await {
            Ok(n) => calls += n,
            Err(e) => {
                eprintln!("{e}");
                failed.push(seed);
            }
        }
    }
    eprintln!("chaos: {runs} runs, {calls} calls in the runs that passed, failed seeds {failed:?}");
    assert!(failed.is_empty(), "failed seeds: {failed:?}");
}
