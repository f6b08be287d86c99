//! `bench`: measures what `mcp-proxy` costs on top of talking to a stdio MCP
//! server directly, side by side in one run against the same child binary
//! (`everything`, release build).
//!
//! Direct stdio is the floor: the child's own pipes, no HTTP. Through the
//! proxy it drives Streamable HTTP (2025-11-25: `initialize`, the
//! `Mcp-Session-Id` header, `notifications/initialized` → 202) with a small
//! hand-written HTTP/1.1 client, one keep-alive connection per concurrent
//! worker, so that the load generator stays cheap on a small machine.
//!
//! Every measurement is repeated (`--repeats`) and printed as min / median /
//! max, because the proxy, its children and this load generator share the
//! same cores. Anything the proxy does that the spec would not expect
//! (unexpected statuses, missing headers) is collected and printed after the
//! table rather than aborting the run. `bench/README.md` explains each number.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const PROTOCOL_VERSION: &str = "2025-11-25";
/// What the TypeScript and Python SDKs send as `Accept` on a POST.
const SDK_ACCEPT: &str = "application/json, text/event-stream";
/// The stateless revision, measured as a second front-end of the same proxy.
const MODERN_PROTOCOL_VERSION: &str = "2026-07-28";
const ECHO_MESSAGE: &str = "hello";
/// Requests in flight on the child's stdin in the pipelined direct test.
const PIPELINE_DEPTH: usize = 64;
/// Sessions × connections per session in the HTTP throughput test.
const THROUGHPUT_SESSIONS: usize = 8;
const THROUGHPUT_CONNS_PER_SESSION: usize = 8;
/// Upper bound for any single HTTP exchange; a hung proxy fails the run
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the proxy may take to answer `/health` or stop after SIGTERM.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(argh::FromArgs)]
/// Benchmark mcp-proxy against direct stdio, with `everything` as the child.
struct Args {
    /// the proxy binary (default target/release/mcp-proxy)
    #[argh(option, default = "PathBuf::from(\"target/release/mcp-proxy\")")]
    proxy: PathBuf,
    /// the stdio server binary (default target/release/examples/everything)
    #[argh(
        option,
        default = "PathBuf::from(\"target/release/examples/everything\")"
    )]
    server: PathBuf,
    /// seconds per throughput measurement (default 5)
    #[argh(option, default = "5")]
    duration_secs: u64,
    /// how many times each measurement is repeated (default 3)
    #[argh(option, default = "3")]
    repeats: usize,
    /// sequential calls per latency measurement (default 2000)
    #[argh(option, default = "2000")]
    latency_calls: usize,
    /// payload of the `large` tool in bytes (default 8 MiB)
    #[argh(option, default = "8 * 1024 * 1024")]
    large_bytes: u64,
    /// calls of the `large` tool per transfer measurement (default 10)
    #[argh(option, default = "10")]
    large_calls: usize,
    /// sessions held open for the RSS measurement (default 100)
    #[argh(option, default = "100")]
    sessions: usize,
    /// measure direct stdio only
    #[argh(switch)]
    direct_only: bool,
    /// which measurements to make, comma separated: direct, cold, memory,
    /// latency, throughput, large, modern (default all)
    #[argh(option, default = "String::from(\"all\")")]
    sections: String,
    /// no direct pipe beside the proxy in the latency and large runs
    #[argh(switch)]
    no_direct: bool,
    /// which proxy modes to measure: per-session, shared or both (default both)
    #[argh(option, default = "String::from(\"both\")")]
    mode: String,
    /// directory for the proxy's stderr logs (default $TMPDIR/mcp-bench)
    #[argh(option)]
    log_dir: Option<PathBuf>,
    /// no HTTP floor (a minimal hyper server answering echo itself) beside the proxy
    #[argh(switch)]
    no_floor: bool,
    /// run as the HTTP floor server: print the port, serve until stdin closes
    #[argh(switch)]
    floor_server: bool,
    /// run as the relay floor over --server: print the port, serve until
    /// stdin closes
    #[argh(switch)]
    relay_server: bool,
}

impl Args {
    fn wants(&self, section: &str) -> bool {
        self.sections == "all" || self.sections.split(',').any(|s| s.trim() == section)
    }
}

fn main() {
    let args: Args = argh::from_env();
    if args.floor_server {
        floor::serve();
        return;
    }
    if args.relay_server {
        relay::serve(&args.server);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build tokio runtime");
    if let Err(e) = runtime.block_on(until_signal(run(args))) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Runs `work` until it ends or SIGINT/SIGTERM comes. On a signal `work`
/// is dropped, and with it the proxies, the floor and the direct children
/// it started (each is held with `kill_on_drop`): a bench stopped by a
/// signal leaves nothing running.
async fn until_signal(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        done = work => done,
        _ = term.recv() => Err("stopped by SIGTERM".into()),
        _ = int.recv() => Err("stopped by SIGINT".into()),
    }
}

async fn run(args: Args) -> Result<()> {
    let mut report = Report::default();
    if let Some(note) = idle_polling_note() {
        report.note(note);
    }
    eprintln!("bench: direct stdio against {}", args.server.display());
    if args.wants("direct") {
        direct(&args, &mut report).await?;
    }
    let floor = if args.direct_only || args.no_floor {
        None
    } else {
        let floor = floor::Floor::spawn().await?;
        if args.wants("throughput") || args.wants("latency") {
            eprintln!("bench: the HTTP floor (hyper, echo answered in-process)");
            floor_section(&args, &floor, &mut report).await?;
        }
        Some(floor)
    };
    if !args.direct_only {
        let log_dir = args
            .log_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mcp-bench"));
        std::fs::create_dir_all(&log_dir)?;
        let mut bench = ProxyBench {
            args: &args,
            log_dir,
            spawned: 0,
            floor: floor.as_ref().map(|f| f.addr),
        };
        let modes: &[bool] = match args.mode.as_str() {
            "both" => &[false, true],
            "per-session" => &[false],
            "shared" => &[true],
            other => {
                return Err(format!("--mode {other:?}: use per-session, shared or both").into());
            }
        };
        for &shared in modes {
            let mode = if shared { "shared" } else { "per-session" };
            eprintln!("bench: through the proxy ({mode})");
            if let Err(e) = bench.mode(shared, &mut report).await {
                report.note(format!("{mode} mode aborted: {e}"));
            }
        }
        report.note(format!(
            "proxy stderr logs: {}",
            bench.log_dir.join("proxy-*.log").display()
        ));
    }
    report.print(&args);
    Ok(())
}

/// What the machine does with an idle CPU, when it is a KVM guest with
/// the `haltpoll` idle driver: with `guest_halt_poll_ns` at 0 an idle vCPU
/// halts at once, and every wake-up of a process on it is a VM exit.
/// Latency at concurrency 1 is mostly wake-ups (a proxied call wakes
/// three processes where the floor and the direct call wake two), so the
/// p50 rows depend on this setting more than on any code (see
/// bench/README.md).
fn idle_polling_note() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver")?;
    let poll_ns = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    Some(match poll_ns {
        Some(ns) if driver == "haltpoll" => format!(
            "idle CPUs: driver haltpoll, guest_halt_poll_ns {ns}{}",
            if ns == "0" {
                " (an idle vCPU halts at once: every wake-up is a VM exit, which the p50 rows pay several times per call)"
            } else {
                ""
            }
        ),
        _ => format!("idle CPUs: driver {driver}"),
    })
}

/// Rows of repeated measurements plus free-form observations.
#[derive(Default)]
struct Report {
    rows: Vec<(String, &'static str, Vec<f64>)>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, name: &str, unit: &'static str, value: f64) {
        match self.rows.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, _, values)) => values.push(value),
            None => self.rows.push((name.to_owned(), unit, vec![value])),
        }
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            eprintln!("bench: note: {note}");
            self.notes.push(note);
        }
    }

    fn print(&self, args: &Args) {
        println!(
            "\n{} repeats; {} s per throughput run; {} calls per latency run; `large` = {} bytes\n",
            args.repeats, args.duration_secs, args.latency_calls, args.large_bytes
        );
        println!("| measurement | unit | min | median | max | n |");
        println!("|---|---|---:|---:|---:|---:|");
        for (name, unit, values) in &self.rows {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            println!(
                "| {name} | {unit} | {} | {} | {} | {} |",
                fmt(sorted[0]),
                fmt(median),
                fmt(sorted[sorted.len() - 1]),
                sorted.len()
            );
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest-rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn initialize_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"mcp-bench","version":"0.1.0"}}}}}}"#
    )
}

const INITIALIZED_BODY: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn echo_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{ECHO_MESSAGE}"}}}}}}"#
    )
}

fn modern_echo_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{ECHO_MESSAGE}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN_PROTOCOL_VERSION}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

fn large_body(id: u64, bytes: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"large","arguments":{{"bytes":{bytes}}}}}}}"#
    )
}

/// The `large` call answered with its id after the result.
fn large_id_last_body(id: u64, bytes: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"large","arguments":{{"bytes":{bytes},"id_last":true}}}}}}"#
    )
}

/// Just enough of a JSON-RPC response to check it answers the right request.
#[derive(Deserialize)]
struct RpcResponse {
    id: Value,
    result: Option<IgnoredAny>,
    error: Option<Value>,
}

fn check_response(bytes: &[u8], id: u64) -> Result<()> {
    let response: RpcResponse = serde_json::from_slice(bytes)
        .map_err(|e| format!("unparseable response ({e}): {}", preview(bytes)))?;
    if response.id != id {
        return Err(format!("response id {} for request {id}", response.id).into());
    }
    if let Some(error) = response.error {
        return Err(format!("request {id} failed: {error}").into());
    }
    if response.result.is_none() {
        return Err(format!("response to {id} has no result").into());
    }
    Ok(())
}

/// A cheap check for a `large` response: parsing megabytes of JSON would
/// measure this client's parser rather than the transport.
fn check_large(bytes: &[u8], id: u64, payload: u64) -> Result<()> {
    let head = &bytes[..bytes.len().min(256)];
    let tail = &bytes[bytes.len().saturating_sub(256)..];
    let id_first = format!("\"id\":{id},");
    let id_last = format!("\"id\":{id}}}");
    let has = |at: &[u8], needle: &[u8]| at.windows(needle.len()).any(|w| w == needle);
    let id_ok = has(head, id_first.as_bytes()) || has(tail, id_last.as_bytes());
    if (bytes.len() as u64) < payload || !id_ok || !has(head, b"\"result\"") {
        return Err(format!(
            "bad `large` response to {id} ({} bytes): {}",
            bytes.len(),
            preview(bytes)
        )
        .into());
    }
    Ok(())
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

// ---------------------------------------------------------------------------
// Direct stdio
// ---------------------------------------------------------------------------

/// The child's pipes, used strictly request → response.
/// The direct client's pipe and read size (the proxy's, see `StdioClient::spawn`).
const PIPE_BYTES: usize = 1024 * 1024;

struct StdioClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<Stdout>,
    line: Vec<u8>,
    next_id: u64,
}

/// Which pipe a direct client reads.
#[derive(Clone, Copy, PartialEq)]
enum Pipe {
    /// Grown to 1 MiB and read 1 MiB at a time, as the proxy reads its
    /// child's: the fastest direct reader.
    Grown,
    /// The kernel's default (64 KiB), read 64 KiB at a time: what SDK
    /// clients that spawn a server read.
    Default,
    /// A Unix socket pair, read 1 MiB at a time: what Node.js (libuv)
    /// gives a server it spawns, and what the proxy gives its child.
    Socket,
}

/// The child's stdout as a direct client reads it: a pipe or its end of a
/// socket pair.
enum Stdout {
    Pipe(ChildStdout),
    Socket(tokio::net::UnixStream),
}

impl tokio::io::AsyncRead for Stdout {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stdout::Pipe(p) => std::pin::Pin::new(p).poll_read(cx, buf),
            Stdout::Socket(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl StdioClient {
    async fn spawn(server: &Path, pipe: Pipe) -> Result<Self> {
        let (socket, child_stdout) = if pipe == Pipe::Socket {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            ours.set_nonblocking(true)?;
            (
                Some(tokio::net::UnixStream::from_std(ours)?),
                Stdio::from(std::os::fd::OwnedFd::from(theirs)),
            )
        } else {
            (None, Stdio::piped())
        };
        let mut command = Command::new(server);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(child_stdout)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", server.display()))?;
        // The child's end of a socket pair: ours must not hold it.
        drop(command);
        let stdin = child.stdin.take().expect("stdin is piped");
        // `Grown`: as the proxy does with its child's stdout when it is a
        // pipe (`child.rs`), a pipe of 1 MiB read up to 1 MiB at a time, so
        // that a long answer crosses in a few reads here too.
        let (stdout, read_size) = match (pipe, socket) {
            (_, Some(socket)) => (Stdout::Socket(socket), PIPE_BYTES),
            (Pipe::Grown, None) => {
                use nix::fcntl::{FcntlArg, fcntl};
                let stdout = child.stdout.take().expect("piped");
                if let Err(e) = fcntl(&stdout, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32)) {
                    eprintln!("bench: the direct pipe stays at its default size: {e}");
                }
                (Stdout::Pipe(stdout), PIPE_BYTES)
            }
            (_, None) => (Stdout::Pipe(child.stdout.take().expect("piped")), 64 * 1024),
        };
        let stdout = BufReader::with_capacity(read_size, stdout);
        let mut client = StdioClient {
            child,
            stdin,
            stdout,
            line: Vec::new(),
            next_id: 1,
        };
        let id = client.id();
        client.send(&initialize_body(id)).await?;
        client.recv().await?;
        check_response(&client.line, id)?;
        client.send(INITIALIZED_BODY).await?;
        Ok(client)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// One checked `large` call of `bytes`; how long it took.
    async fn large(&mut self, bytes: u64) -> Result<Duration> {
        let id = self.id();
        let body = large_body(id, bytes);
        let start = Instant::now();
        self.send(&body).await?;
        self.recv().await?;
        let took = start.elapsed();
        check_large(&self.line, id, bytes)?;
        Ok(took)
    }

    async fn send(&mut self, body: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.extend_from_slice(body.as_bytes());
        bytes.push(b'\n');
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Reads one line into `self.line`, without its newline.
    async fn recv(&mut self) -> Result<()> {
        self.line.clear();
        if self.stdout.read_until(b'\n', &mut self.line).await? == 0 {
            return Err("child closed stdout".into());
        }
        self.line.pop();
        Ok(())
    }

    async fn call(&mut self, body: &str, id: u64) -> Result<()> {
        self.send(body).await?;
        self.recv().await?;
        check_response(&self.line, id)
    }

    /// Closes stdin and waits (bounded) for the child to exit.
    async fn close(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await;
    }
}

/// The HTTP floor alone: p50 at concurrency 1 (interleaved with the direct
/// pipe), and throughput with CPU per call at 8 sessions × 8 in flight,
/// measured exactly as the proxy is.
async fn floor_section(args: &Args, floor: &floor::Floor, report: &mut Report) -> Result<()> {
    let mut notes = Vec::new();
    let mut single = McpHttp::open(floor.addr, &mut notes).await?;
    let mut pool = Vec::new();
    for _ in 0..THROUGHPUT_SESSIONS {
        let session = McpHttp::open(floor.addr, &mut notes).await?;
        for _ in 1..THROUGHPUT_CONNS_PER_SESSION {
            pool.push(session.clone_session());
        }
        pool.push(session);
    }
    let mut direct = StdioClient::spawn(&args.server, Pipe::Grown).await?;
    for _ in 0..200 {
        single.echo().await?;
        let id = direct.id();
        direct.call(&echo_body(id), id).await?;
    }
    for _ in 0..args.repeats {
        if args.wants("latency") {
            let mut over_http = Vec::with_capacity(args.latency_calls);
            let mut over_pipe = Vec::with_capacity(args.latency_calls);
            for _ in 0..args.latency_calls {
                let id = direct.id();
                let body = echo_body(id);
                let start = Instant::now();
                direct.call(&body, id).await?;
                over_pipe.push(start.elapsed());
                let start = Instant::now();
                single.echo().await?;
                over_http.push(start.elapsed());
            }
            over_http.sort();
            over_pipe.sort();
            let (f, d) = (quantile(&over_http, 0.5), quantile(&over_pipe, 0.5));
            report.add("HTTP floor: echo p50 (concurrency 1)", "ms", ms(f));
            report.add(
                "HTTP floor: echo p50 + direct p50 (interleaved; the proxy's p50 target less 25 µs)",
                "ms",
                ms(f + d),
            );
        }
        if args.wants("throughput") {
            let cpu_before = cpu_seconds(floor.pid)?;
            let (rate, calls, returned) =
                throughput(pool, Duration::from_secs(args.duration_secs)).await?;
            pool = returned;
            let cpu = cpu_seconds(floor.pid)? - cpu_before;
            report.add(
                &format!(
                    "HTTP floor: echo throughput ({THROUGHPUT_SESSIONS} sessions × {THROUGHPUT_CONNS_PER_SESSION} in flight)"
                ),
                "req/s",
                rate,
            );
            report.add(
                "HTTP floor: server CPU per call during the throughput run",
                "µs",
                cpu * 1e6 / calls as f64,
            );
        }
    }
    direct.close().await;
    for note in notes {
        report.note(format!("HTTP floor: {note}"));
    }
    Ok(())
}

async fn direct(args: &Args, report: &mut Report) -> Result<()> {
    let mut client = StdioClient::spawn(&args.server, Pipe::Grown).await?;
    let mut default_pipe = StdioClient::spawn(&args.server, Pipe::Default).await?;
    let mut socket_pair = StdioClient::spawn(&args.server, Pipe::Socket).await?;
    for _ in 0..200 {
        let id = client.id();
        client.call(&echo_body(id), id).await?;
    }
    for _ in 0..args.repeats {
        let mut samples = Vec::with_capacity(args.latency_calls);
        for _ in 0..args.latency_calls {
            let id = client.id();
            let body = echo_body(id);
            let start = Instant::now();
            client.call(&body, id).await?;
            samples.push(start.elapsed());
        }
        samples.sort();
        report.add(
            "direct stdio: echo p50 (sequential)",
            "ms",
            ms(quantile(&samples, 0.5)),
        );
        report.add(
            "direct stdio: echo p99 (sequential)",
            "ms",
            ms(quantile(&samples, 0.99)),
        );

        let rate = pipelined(&mut client, Duration::from_secs(args.duration_secs)).await?;
        report.add(
            &format!("direct stdio: echo throughput ({PIPELINE_DEPTH} in flight)"),
            "req/s",
            rate,
        );

        for (client, row) in [
            (&mut client, "direct stdio: `large` result"),
            (
                &mut default_pipe,
                "direct stdio: `large` result, default 64 KiB pipe",
            ),
            (
                &mut socket_pair,
                "direct stdio: `large` result, socket pair (as Node.js spawns a server)",
            ),
        ] {
            let mut took = Duration::ZERO;
            for _ in 0..args.large_calls {
                took += client.large(args.large_bytes).await?;
            }
            let bytes = args.large_bytes * args.large_calls as u64;
            report.add(row, "MiB/s", mib_per_s(bytes, took));
        }
    }
    client.close().await;
    default_pipe.close().await;
    socket_pair.close().await;
    Ok(())
}

/// Keeps `PIPELINE_DEPTH` echo calls in flight for `duration`; responses may
/// come back in any order, so only their count is checked.
async fn pipelined(client: &mut StdioClient, duration: Duration) -> Result<f64> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut in_flight = 0;
    let mut done = 0u64;
    let mut batch = String::new();
    for _ in 0..PIPELINE_DEPTH {
        let id = client.id();
        batch.push_str(&echo_body(id));
        batch.push('\n');
        in_flight += 1;
    }
    client.stdin.write_all(batch.as_bytes()).await?;
    client.stdin.flush().await?;
    while in_flight > 0 {
        client.recv().await?;
        if !client.line.windows(8).any(|w| w == b"\"result\"") {
            return Err(format!("unexpected line: {}", preview(&client.line)).into());
        }
        in_flight -= 1;
        done += 1;
        if Instant::now() < deadline {
            let id = client.id();
            client.send(&echo_body(id)).await?;
            in_flight += 1;
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

struct HttpResponse {
    status: u16,
    /// The header block as sent, one `name: value` per line.
    head: String,
    body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value; `name` is matched case-insensitively.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The JSON-RPC message in the body, whether sent as JSON or as SSE.
    fn json(&self) -> Result<&[u8]> {
        let is_sse = self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            return Ok(&self.body);
        }
        // The response is the `data:` line that carries an id and a result or error.
        self.body
            .split(|b| *b == b'\n')
            .filter_map(|line| line.strip_prefix(b"data:"))
            .map(|data| data.strip_prefix(b" ").unwrap_or(data))
            .find(|data| {
                let text = String::from_utf8_lossy(data);
                text.contains("\"id\"")
                    && (text.contains("\"result\"") || text.contains("\"error\""))
            })
            .ok_or_else(|| {
                format!("no JSON-RPC response in SSE body: {}", preview(&self.body)).into()
            })
    }
}

/// One keep-alive connection; reconnects when the server closed it. Kept
/// cheap on purpose (one reused read buffer, no per-header allocation): the
/// load generator shares the cores with the proxy it measures.
struct HttpClient {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    request: Vec<u8>,
    /// Bytes read from the connection and not yet consumed.
    buf: Vec<u8>,
    /// A body buffer handed back with `recycle`, so that a large result
    /// lands in memory that is already mapped, as the direct pipe's line
    /// buffer does.
    spare: Vec<u8>,
}

impl HttpClient {
    fn new(addr: SocketAddr) -> Self {
        HttpClient {
            addr,
            conn: None,
            request: Vec::with_capacity(1024),
            buf: Vec::with_capacity(64 * 1024),
            spare: Vec::new(),
        }
    }

    /// Gives a response body's memory back for the next response.
    fn recycle(&mut self, mut body: Vec<u8>) {
        if body.capacity() > self.spare.capacity() {
            body.clear();
            self.spare = body;
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        use std::io::Write;
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        )?;
        for (name, value) in headers {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                self.request.extend_from_slice(part);
            }
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        let reused = self.conn.is_some();
        match self.try_exchange().await {
            Ok(response) => Ok(response),
            // A kept-alive connection may have been closed by the server
            // between requests; one retry on a fresh one tells that apart
            // from a real failure.
            Err(_) if reused => {
                self.conn = None;
                self.try_exchange().await
            }
            Err(e) => Err(e),
        }
    }

    async fn try_exchange(&mut self) -> Result<HttpResponse> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(stream);
            self.buf.clear();
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.write_all(&self.request).await?;
        let body = std::mem::take(&mut self.spare);
        let result = read_response(conn, &mut self.buf, body).await;
        let close = match &result {
            Ok(r) => r
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            Err(_) => true,
        };
        if close {
            self.conn = None;
        }
        result
    }
}

/// Reads more of the connection into `buf`; an error at end of stream.
async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>, what: &str) -> Result<()> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    if conn.read_buf(buf).await? == 0 {
        return Err(format!("connection closed {what}").into());
    }
    Ok(())
}

async fn read_response(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut body: Vec<u8>,
) -> Result<HttpResponse> {
    // Status line and headers.
    let (status, head_len, head, length, chunked) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut slots);
        if let httparse::Status::Complete(n) = parsed.parse(buf)? {
            let status = parsed.code.ok_or("no status code")?;
            let mut head = String::new();
            let (mut length, mut chunked) = (None, false);
            for h in parsed.headers.iter() {
                let value = std::str::from_utf8(h.value)?;
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.trim().eq_ignore_ascii_case("chunked");
                }
                for part in [h.name, ": ", value, "\n"] {
                    head.push_str(part);
                }
            }
            break (status, n, head, length, chunked);
        }
        fill(conn, buf, "in the headers").await?;
    };
    body.clear();
    let mut pos = head_len;
    if let Some(length) = length {
        // What is buffered already, then the rest straight from the socket
        // (a large result is not copied twice).
        let have = length.min(buf.len() - pos);
        body.reserve_exact(length);
        body.extend_from_slice(&buf[pos..pos + have]);
        pos += have;
        while body.len() < length {
            let want = (length - body.len()) as u64;
            if (&mut *conn).take(want).read_buf(&mut body).await? == 0 {
                return Err("connection closed in the body".into());
            }
        }
    } else if chunked {
        // As with a length: the chunk header from the buffer, its data
        // straight from the socket into the body, and the buffer kept
        // small (a long answer is not copied twice).
        loop {
            let line_end = loop {
                if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                buf.drain(..pos);
                pos = 0;
                fill(conn, buf, "in a chunk header").await?;
            };
            let size = std::str::from_utf8(&buf[pos..line_end])?;
            let size = size.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line: {size:?}"))?;
            pos = line_end + 2;
            if size > 0 {
                let have = size.min(buf.len() - pos);
                body.extend_from_slice(&buf[pos..pos + have]);
                pos += have;
                let mut left = size - have;
                body.reserve(left);
                while left > 0 {
                    let n = (&mut *conn).take(left as u64).read_buf(&mut body).await?;
                    if n == 0 {
                        return Err("connection closed in a chunk".into());
                    }
                    left -= n;
                }
            }
            // The CRLF after the data (or, after the last chunk, the blank
            // line: no trailers are expected).
            while buf.len() < pos + 2 {
                buf.drain(..pos);
                pos = 0;
                fill(conn, buf, "after a chunk").await?;
            }
            pos += 2;
            if size == 0 {
                break;
            }
        }
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        // No length: the body runs to the end of the connection.
        body.extend_from_slice(&buf[pos..]);
        conn.read_to_end(&mut body).await?;
        let mut head = head;
        head.push_str("connection: close\n");
        buf.clear();
        return Ok(HttpResponse { status, head, body });
    }
    buf.drain(..pos);
    Ok(HttpResponse { status, head, body })
}

// ---------------------------------------------------------------------------
// Streamable HTTP sessions through the proxy
// ---------------------------------------------------------------------------

/// A client-side view of one MCP session over one connection.
struct McpHttp {
    http: HttpClient,
    session: Option<String>,
    /// Speaks 2026-07-28: no session, per-request `_meta` and the
    /// `Mcp-Method`/`Mcp-Name` headers.
    modern: bool,
    /// Sends `GET /health` instead of a call: HTTP alone, no child.
    health_only: bool,
    next_id: u64,
}

impl McpHttp {
    /// `initialize` + `notifications/initialized`; statuses or headers the
    /// spec does not expect become notes.
    async fn open(addr: SocketAddr, notes: &mut Vec<String>) -> Result<Self> {
        let mut http = HttpClient::new(addr);
        let response = http
            .send(
                "POST",
                "/mcp",
                &[
                    ("Content-Type", "application/json"),
                    ("Accept", "application/json, text/event-stream"),
                ],
                initialize_body(1).as_bytes(),
            )
            .await?;
        if response.status != 200 {
            return Err(format!(
                "initialize: HTTP {}: {}",
                response.status,
                preview(&response.body)
            )
            .into());
        }
        check_response(response.json()?, 1)?;
        let session = response.header("mcp-session-id").map(str::to_owned);
        if session.is_none() {
            notes.push("initialize response carried no Mcp-Session-Id header".into());
        }
        let mut mcp = McpHttp {
            http,
            session,
            modern: false,
            health_only: false,
            next_id: 1,
        };
        let response = mcp
            .post(INITIALIZED_BODY, "application/json, text/event-stream")
            .await?;
        if response.status != 202 {
            notes.push(format!(
                "notifications/initialized answered HTTP {} (spec: 202)",
                response.status
            ));
        }
        if !response.body.is_empty() {
            notes.push(format!(
                "notifications/initialized answered with a body: {}",
                preview(&response.body)
            ));
        }
        Ok(mcp)
    }

    /// Shares this session on a new connection.
    fn clone_session(&self) -> Self {
        McpHttp {
            http: HttpClient::new(self.http.addr),
            session: self.session.clone(),
            modern: self.modern,
            health_only: self.health_only,
            next_id: 1,
        }
    }

    /// A 2026-07-28 client: nothing to open, every request stands alone.
    fn modern(addr: SocketAddr) -> Self {
        McpHttp {
            http: HttpClient::new(addr),
            session: None,
            modern: true,
            health_only: false,
            next_id: 1,
        }
    }

    async fn post(&mut self, body: &str, accept: &str) -> Result<HttpResponse> {
        let mut headers = vec![("Content-Type", "application/json"), ("Accept", accept)];
        if self.modern {
            // The bench only sends tools/call in this mode.
            headers.extend([
                ("MCP-Protocol-Version", MODERN_PROTOCOL_VERSION),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "echo"),
            ]);
        } else {
            headers.push(("MCP-Protocol-Version", PROTOCOL_VERSION));
        }
        if let Some(session) = &self.session {
            headers.push(("Mcp-Session-Id", session.as_str()));
        }
        self.http
            .send("POST", "/mcp", &headers, body.as_bytes())
            .await
    }

    /// One tools/call with `Accept: application/json`, checked.
    async fn call(&mut self, body: &str, id: u64) -> Result<()> {
        self.call_accepting(body, id, "application/json").await
    }

    /// One tools/call with the given `Accept`, checked.
    async fn call_accepting(&mut self, body: &str, id: u64, accept: &str) -> Result<()> {
        let response = self.post(body, accept).await?;
        if response.status != 200 {
            return Err(format!(
                "tools/call: HTTP {}: {}",
                response.status,
                preview(&response.body)
            )
            .into());
        }
        check_response(response.json()?, id)
    }

    /// Request ids are unique across every connection of the run: several
    /// connections share a session, and a session's requests in flight
    /// must not share an id (the proxy refuses a reused one).
    fn id(&mut self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000);
        self.next_id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.next_id
    }

    async fn echo(&mut self) -> Result<()> {
        if self.health_only {
            let response = self.http.send("GET", "/health", &[], b"").await?;
            if response.status != 200 {
                return Err(format!("GET /health: HTTP {}", response.status).into());
            }
            return Ok(());
        }
        let id = self.id();
        let body = if self.modern {
            modern_echo_body(id)
        } else {
            echo_body(id)
        };
        self.call(&body, id).await
    }

    /// The echo call as the SDK clients ask: `Accept` allows both, and a
    /// session's answer comes on an SSE stream.
    async fn echo_as_sdks_ask(&mut self) -> Result<()> {
        let id = self.id();
        self.call_accepting(&echo_body(id), id, SDK_ACCEPT).await
    }
}

/// One interleaved latency pass, each list sorted.
struct Samples {
    floor: Vec<Duration>,
    health: Vec<Duration>,
    direct: Vec<Duration>,
    proxied: Vec<Duration>,
}

impl Samples {
    fn with_capacity(n: usize) -> Samples {
        Samples {
            floor: Vec::with_capacity(n),
            health: Vec::with_capacity(n),
            direct: Vec::with_capacity(n),
            proxied: Vec::with_capacity(n),
        }
    }

    /// The proxy's p50 less the direct pipe's, in µs.
    fn excess_over_direct(&self) -> Option<f64> {
        (!self.direct.is_empty()).then(|| {
            (quantile(&self.proxied, 0.5).as_secs_f64() - quantile(&self.direct, 0.5).as_secs_f64())
                * 1e6
        })
    }

    /// The proxy's p50 less the floor's and the direct pipe's, in µs.
    fn excess_over_floor(&self) -> Option<f64> {
        let over_direct = self.excess_over_direct()?;
        (!self.floor.is_empty())
            .then(|| over_direct - quantile(&self.floor, 0.5).as_secs_f64() * 1e6)
    }
}

struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// Runs this bench binary with `args` as a server process of its own (the
/// HTTP floor, the relay floor): it prints its port on stdout and serves
/// until its stdin closes, which dropping the returned child (killed on
/// drop) also ends. A server that prints no port within `STARTUP_TIMEOUT`
/// fails the bench.
async fn spawn_own_server(
    args: &[&std::ffi::OsStr],
) -> Result<(tokio::process::Child, std::net::SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout piped")?;
    let mut line = String::new();
    tokio::time::timeout(STARTUP_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .map_err(|_| format!("{args:?}: no port within {STARTUP_TIMEOUT:?}"))??;
    let port: u16 = line.trim().parse()?;
    Ok((child, std::net::SocketAddr::from(([127, 0, 0, 1], port))))
}

/// What a `large` call through the proxy is measured against, each
/// called in turn with it.
struct Directs<'a> {
    /// A direct pipe grown to 1 MiB.
    grown: Option<&'a mut StdioClient>,
    /// A direct pipe of the kernel's default size.
    default: Option<&'a mut StdioClient>,
    /// A direct socket pair.
    socket: Option<&'a mut StdioClient>,
    /// The relay floor.
    relay: Option<&'a mut McpHttp>,
}

struct ProxyBench<'a> {
    args: &'a Args,
    log_dir: PathBuf,
    spawned: usize,
    /// The HTTP floor server, called interleaved in the latency run.
    floor: Option<SocketAddr>,
}

impl ProxyBench<'_> {
    fn spawn(&mut self, shared: bool) -> Result<ProxyProcess> {
        // Bind-and-drop: the port is free now; a race with another process
        // taking it is possible but rare on a bench machine.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        self.spawned += 1;
        let log = self.log_dir.join(format!("proxy-{}.log", self.spawned));
        let mut command = Command::new(&self.args.proxy);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if shared {
            command.arg("--shared");
        }
        command.arg("--").arg(&self.args.server);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.args.proxy.display()))?;
        Ok(ProxyProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        })
    }

    async fn mode(&mut self, shared: bool, report: &mut Report) -> Result<()> {
        let mode = if shared { "shared" } else { "per-session" };
        let mut notes = Vec::new();

        // Cold start: spawn → first initialize answered, polling the port.
        let cold = if self.args.wants("cold") {
            self.args.repeats
        } else {
            0
        };
        for _ in 0..cold {
            let mut proxy = self.spawn(shared)?;
            let start = Instant::now();
            loop {
                match McpHttp::open(proxy.addr, &mut notes).await {
                    Ok(_) => break,
                    Err(_) if start.elapsed() < STARTUP_TIMEOUT => {
                        if let Some(status) = proxy.child.try_wait()? {
                            return Err(exited(&proxy, status).into());
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(e) => {
                        return Err(format!("cold start: {e} (log {})", proxy.log.display()).into());
                    }
                }
            }
            report.add(
                &format!("proxy {mode}: cold start (spawn → initialize answered)"),
                "ms",
                ms(start.elapsed()),
            );
            self.stop(proxy, &mut notes).await;
        }

        // Memory: fresh proxy idle, then with N sessions open.
        let memory = if self.args.wants("memory") {
            self.args.repeats
        } else {
            0
        };
        for _ in 0..memory {
            let proxy = self.spawn(shared)?;
            let pid = proxy.child.id().ok_or("proxy exited")?;
            wait_healthy(&proxy).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            report.add(&format!("proxy {mode}: RSS idle"), "MiB", rss_mib(pid)?);
            let start = Instant::now();
            let mut sessions = Vec::with_capacity(self.args.sessions);
            for _ in 0..self.args.sessions {
                let mut session = McpHttp::open(proxy.addr, &mut notes).await?;
                // Close the connection: the session must outlive it.
                session.http.conn = None;
                sessions.push(session);
            }
            let elapsed = start.elapsed();
            report.add(
                &format!("proxy {mode}: open {} sessions", self.args.sessions),
                "ms",
                ms(elapsed),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            report.add(
                &format!("proxy {mode}: RSS with {} sessions", self.args.sessions),
                "MiB",
                rss_mib(pid)?,
            );
            // Every session must still answer after its connection closed.
            if let Some(session) = sessions.last_mut()
                && let Err(e) = session.echo().await
            {
                notes.push(format!("{mode}: a session failed after reconnecting: {e}"));
            }
            let start = Instant::now();
            self.stop(proxy, &mut notes).await;
            report.add(
                &format!(
                    "proxy {mode}: SIGTERM → exit with {} sessions",
                    self.args.sessions
                ),
                "ms",
                ms(start.elapsed()),
            );
        }

        // Latency, throughput, large transfers: one proxy for all repeats.
        let proxy = self.spawn(shared)?;
        let pid = proxy.child.id().ok_or("proxy exited")?;
        wait_healthy(&proxy).await?;
        let mut single = McpHttp::open(proxy.addr, &mut notes).await?;
        let mut pool = Vec::new();
        for _ in 0..THROUGHPUT_SESSIONS {
            let session = McpHttp::open(proxy.addr, &mut notes).await?;
            for _ in 1..THROUGHPUT_CONNS_PER_SESSION {
                pool.push(session.clone_session());
            }
            pool.push(session);
        }
        let mut modern_single = McpHttp::modern(proxy.addr);
        let mut modern_pool: Vec<McpHttp> = (0..THROUGHPUT_SESSIONS * THROUGHPUT_CONNS_PER_SESSION)
            .map(|_| McpHttp::modern(proxy.addr))
            .collect();
        for _ in 0..200 {
            single.echo().await?;
            modern_single.echo().await?;
        }
        // The floor, measured alongside: calls alternate between the proxy
        // and a direct pipe to a child of its own, so that both see the same
        // machine load and the difference is the proxy's.
        let mut direct = if self.args.no_direct {
            None
        } else {
            let mut client = StdioClient::spawn(&self.args.server, Pipe::Grown).await?;
            for _ in 0..200 {
                let id = client.id();
                client.call(&echo_body(id), id).await?;
            }
            Some(client)
        };
        let mut direct_default = if self.args.no_direct || !self.args.wants("large") {
            None
        } else {
            Some(StdioClient::spawn(&self.args.server, Pipe::Default).await?)
        };
        let mut direct_socket = if self.args.no_direct || !self.args.wants("large") {
            None
        } else {
            Some(StdioClient::spawn(&self.args.server, Pipe::Socket).await?)
        };
        // The relay floor (see `relay`), with a child of its own.
        let relay = if self.args.no_direct || self.args.no_floor || !self.args.wants("large") {
            None
        } else {
            let relay = relay::Relay::spawn(&self.args.server).await?;
            // It gives no session id, which is no news.
            let client = McpHttp::open(relay.addr, &mut Vec::new()).await?;
            Some((relay, client))
        };
        let (_relay, mut relay_client) = match relay {
            Some((relay, client)) => (Some(relay), Some(client)),
            None => (None, None),
        };
        for _ in 0..self.args.repeats {
            if self.args.wants("latency") {
                self.latency(&mut single, direct.as_mut(), mode, report)
                    .await?;
            }
            if self.args.wants("large") {
                self.large(
                    &mut single,
                    Directs {
                        grown: direct.as_mut(),
                        default: direct_default.as_mut(),
                        socket: direct_socket.as_mut(),
                        relay: relay_client.as_mut(),
                    },
                    mode,
                    report,
                )
                .await?;
            }
            if !self.args.wants("throughput") {
                continue;
            }
            let cpu_before = cpu_seconds(pid)?;
            let own_cpu_before = cpu_seconds(std::process::id())?;
            let (rate, calls, returned) =
                throughput(pool, Duration::from_secs(self.args.duration_secs)).await?;
            pool = returned;
            report.add(
                &format!(
                    "proxy {mode}: echo throughput ({THROUGHPUT_SESSIONS} sessions × {THROUGHPUT_CONNS_PER_SESSION} in flight)"
                ),
                "req/s",
                rate,
            );
            let cpu = cpu_seconds(pid)? - cpu_before;
            let own_cpu = cpu_seconds(std::process::id())? - own_cpu_before;
            report.add(
                &format!("proxy {mode}: proxy CPU per call during the throughput run"),
                "µs",
                cpu * 1e6 / calls as f64,
            );
            report.add(
                &format!("proxy {mode}: load generator CPU per call (same run)"),
                "µs",
                own_cpu * 1e6 / calls as f64,
            );

            // The ceiling: the same connections doing HTTP alone.
            let health_pool: Vec<McpHttp> = pool
                .iter()
                .map(|m| McpHttp {
                    health_only: true,
                    ..m.clone_session()
                })
                .collect();
            let (rate, _, _) =
                throughput(health_pool, Duration::from_secs(self.args.duration_secs)).await?;
            report.add(
                &format!("proxy {mode}: GET /health throughput (same 64 connections, no child)"),
                "req/s",
                rate,
            );

            if !self.args.wants("modern") {
                continue;
            }
            // The same echo through the stateless 2026-07-28 front-end.
            let mut samples = Vec::with_capacity(self.args.latency_calls);
            for _ in 0..self.args.latency_calls {
                let start = Instant::now();
                modern_single.echo().await?;
                samples.push(start.elapsed());
            }
            samples.sort();
            report.add(
                &format!("proxy {mode}: 2026-07-28 echo p50 (concurrency 1)"),
                "ms",
                ms(quantile(&samples, 0.5)),
            );
            report.add(
                &format!("proxy {mode}: 2026-07-28 echo p99 (concurrency 1)"),
                "ms",
                ms(quantile(&samples, 0.99)),
            );
            let (rate, _, returned) =
                throughput(modern_pool, Duration::from_secs(self.args.duration_secs)).await?;
            modern_pool = returned;
            report.add(
                &format!(
                    "proxy {mode}: 2026-07-28 echo throughput ({} connections)",
                    THROUGHPUT_SESSIONS * THROUGHPUT_CONNS_PER_SESSION
                ),
                "req/s",
                rate,
            );
        }
        for direct in [direct, direct_default, direct_socket]
            .into_iter()
            .flatten()
        {
            direct.close().await;
        }
        self.stop(proxy, &mut notes).await;
        for note in notes {
            report.note(format!("{mode}: {note}"));
        }
        Ok(())
    }

    /// Echo at concurrency 1: p50/p99 through the proxy and, interleaved
    /// call by call, over the direct pipe.
    async fn latency(
        &self,
        single: &mut McpHttp,
        mut direct: Option<&mut StdioClient>,
        mode: &str,
        report: &mut Report,
    ) -> Result<()> {
        let mut floor_http = match self.floor {
            Some(addr) => Some(McpHttp::open(addr, &mut Vec::new()).await?),
            None => None,
        };
        let mut health = HttpClient::new(single.http.addr);
        let json = self
            .interleaved(
                single,
                direct.as_deref_mut(),
                floor_http.as_mut(),
                Some(&mut health),
                false,
            )
            .await?;
        // Its own pass, so that each proxy call is preceded by the same
        // kinds of call as in the JSON pass.
        let sse = self
            .interleaved(single, direct, floor_http.as_mut(), None, true)
            .await?;
        let p50 = quantile(&json.proxied, 0.5);
        report.add(
            &format!("proxy {mode}: echo p50 (concurrency 1)"),
            "ms",
            ms(p50),
        );
        report.add(
            &format!("proxy {mode}: echo p99 (concurrency 1)"),
            "ms",
            ms(quantile(&json.proxied, 0.99)),
        );
        report.add(
            &format!("proxy {mode}: echo p50 answered on SSE (Accept as the SDKs send it)"),
            "ms",
            ms(quantile(&sse.proxied, 0.5)),
        );
        report.add(
            &format!("proxy {mode}: GET /health p50 (HTTP alone, no child)"),
            "ms",
            ms(quantile(&json.health, 0.5)),
        );
        if let Some(excess) = json.excess_over_direct() {
            report.add(
                &format!("proxy {mode}: echo p50 minus direct p50 (interleaved)"),
                "µs",
                excess,
            );
        }
        if let Some(excess) = json.excess_over_floor() {
            report.add(
                &format!("proxy {mode}: echo p50 minus (HTTP floor p50 + direct p50), interleaved"),
                "µs",
                excess,
            );
        }
        if let Some(excess) = sse.excess_over_floor() {
            report.add(
                &format!(
                    "proxy {mode}: echo p50 answered on SSE minus (HTTP floor p50 + direct p50), interleaved"
                ),
                "µs",
                excess,
            );
        }
        Ok(())
    }

    /// `latency_calls` rounds of: the floor's echo, `/health` (if given),
    /// the direct pipe's echo, the proxy's echo (on SSE if `sse`), each
    /// timed; the samples come back sorted.
    async fn interleaved(
        &self,
        single: &mut McpHttp,
        mut direct: Option<&mut StdioClient>,
        mut floor_http: Option<&mut McpHttp>,
        mut health: Option<&mut HttpClient>,
        sse: bool,
    ) -> Result<Samples> {
        let calls = self.args.latency_calls;
        let mut samples = Samples::with_capacity(calls);
        for _ in 0..calls {
            if let Some(f) = floor_http.as_deref_mut() {
                let start = Instant::now();
                f.echo().await?;
                samples.floor.push(start.elapsed());
            }
            if let Some(http) = health.as_deref_mut() {
                // One HTTP round trip that never reaches the child.
                let start = Instant::now();
                let response = http.send("GET", "/health", &[], b"").await?;
                samples.health.push(start.elapsed());
                if response.status != 200 {
                    return Err(format!("GET /health: HTTP {}", response.status).into());
                }
            }
            if let Some(direct) = direct.as_deref_mut() {
                let id = direct.id();
                let body = echo_body(id);
                let start = Instant::now();
                direct.call(&body, id).await?;
                samples.direct.push(start.elapsed());
            }
            let start = Instant::now();
            if sse {
                single.echo_as_sdks_ask().await?;
            } else {
                single.echo().await?;
            }
            samples.proxied.push(start.elapsed());
        }
        for v in [
            &mut samples.floor,
            &mut samples.health,
            &mut samples.direct,
            &mut samples.proxied,
        ] {
            v.sort();
        }
        Ok(samples)
    }

    /// The `large` tool through the proxy and, interleaved call by call,
    /// over the direct pipe and through the relay floor.
    async fn large(
        &self,
        single: &mut McpHttp,
        directs: Directs<'_>,
        mode: &str,
        report: &mut Report,
    ) -> Result<()> {
        let Directs {
            grown: mut direct,
            default: mut direct_default,
            socket: mut direct_socket,
            mut relay,
        } = directs;
        let payload = self.args.large_bytes;
        // The same call through the relay floor.
        let mut relayed = Duration::ZERO;
        // The same call over a direct pipe of the kernel's default size.
        let mut floor_default = Duration::ZERO;
        // And over a socket pair, as Node.js clients give the server.
        let mut floor_socket = Duration::ZERO;
        let (mut proxied, mut floor) = (Duration::ZERO, Duration::ZERO);
        // The same call answered on an SSE stream, as clients that accept
        // both get it in a session; and with the id after the result.
        let mut over_sse = Duration::ZERO;
        let mut id_last = Duration::ZERO;
        // Call 0 warms every path up (the first 8 MiB buffers, page
        // faults) and is not counted.
        for call in 0..=self.args.large_calls {
            let counted = if call == 0 { 0 } else { 1 };
            for (client, total) in [
                (direct.as_deref_mut(), &mut floor),
                (direct_default.as_deref_mut(), &mut floor_default),
                (direct_socket.as_deref_mut(), &mut floor_socket),
            ] {
                if let Some(client) = client {
                    *total += client.large(payload).await? * counted;
                }
            }
            if let Some(relay) = relay.as_deref_mut() {
                let id = relay.id();
                let start = Instant::now();
                let response = relay
                    .post(&large_body(id, payload), "application/json")
                    .await?;
                relayed += start.elapsed() * counted;
                if response.status != 200 {
                    return Err(format!("relay floor: HTTP {}", response.status).into());
                }
                check_large(response.json()?, id, payload)?;
                relay.http.recycle(response.body);
            }
            // The three proxied forms take turns right after the direct
            // call: whichever comes first pays for what the direct call
            // left behind (caches, page faults), so none always does.
            for turn in 0..3 {
                let form = (call + turn) % 3;
                let (accept, id_at_end, total, what) = match form {
                    0 => ("application/json", false, &mut proxied, "large"),
                    1 => ("text/event-stream", false, &mut over_sse, "large over SSE"),
                    _ => ("application/json", true, &mut id_last, "large, id last"),
                };
                let id = single.id();
                let body = if id_at_end {
                    large_id_last_body(id, payload)
                } else {
                    large_body(id, payload)
                };
                let start = Instant::now();
                let response = single.post(&body, accept).await?;
                let took = start.elapsed();
                *total += took * counted;
                if std::env::var_os("BENCH_TRACE").is_some() {
                    eprintln!("{what}: {took:?} (direct so far {floor:?})");
                }
                if response.status != 200 {
                    return Err(format!("{what}: HTTP {}", response.status).into());
                }
                check_large(response.json()?, id, payload)?;
                single.http.recycle(response.body);
            }
        }
        let bytes = payload * self.args.large_calls as u64;
        report.add(
            &format!("proxy {mode}: `large` result"),
            "MiB/s",
            mib_per_s(bytes, proxied),
        );
        if !relayed.is_zero() {
            report.add(
                "relay floor: `large` result",
                "MiB/s",
                mib_per_s(bytes, relayed),
            );
            if !floor.is_zero() {
                report.add(
                    "relay floor: `large` result as % of direct (interleaved)",
                    "%",
                    100.0 * floor.as_secs_f64() / relayed.as_secs_f64(),
                );
            }
            for (form, took) in [("", proxied), (" over SSE", over_sse)] {
                report.add(
                    &format!(
                        "proxy {mode}: `large` result{form} as % of the relay floor (interleaved)"
                    ),
                    "%",
                    100.0 * relayed.as_secs_f64() / took.as_secs_f64(),
                );
            }
        }
        // Each proxied form as % of each direct rate (one that did not run
        // is zero and gives no row).
        let default_pipe = "with the default 64 KiB pipe ";
        let socket_pair = "over a socket pair (as Node.js spawns a server) ";
        for (form, baseline, direct, took) in [
            ("", "", floor, proxied),
            (" over SSE", "", floor, over_sse),
            (
                ", id after the result (TypeScript SDK order),",
                "",
                floor,
                id_last,
            ),
            ("", default_pipe, floor_default, proxied),
            (" over SSE", default_pipe, floor_default, over_sse),
            ("", socket_pair, floor_socket, proxied),
            (" over SSE", socket_pair, floor_socket, over_sse),
        ] {
            if !direct.is_zero() {
                report.add(
                    &format!(
                        "proxy {mode}: `large` result{form} as % of direct {baseline}(interleaved)"
                    ),
                    "%",
                    100.0 * direct.as_secs_f64() / took.as_secs_f64(),
                );
            }
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if the proxy outlives `STOP_TIMEOUT`.
    async fn stop(&self, mut proxy: ProxyProcess, notes: &mut Vec<String>) {
        if let Some(pid) = proxy.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, proxy.child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                notes.push(format!("proxy exited with {status} after SIGTERM"));
            }
            Ok(_) => {}
            Err(_) => {
                notes.push(format!(
                    "proxy still running {STOP_TIMEOUT:?} after SIGTERM; killed"
                ));
                let _ = proxy.child.kill().await;
            }
        }
    }
}

fn exited(proxy: &ProxyProcess, status: std::process::ExitStatus) -> String {
    let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    format!(
        "proxy exited with {status} before answering; stderr tail: {}",
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )
}

async fn wait_healthy(proxy: &ProxyProcess) -> Result<()> {
    let start = Instant::now();
    let mut http = HttpClient::new(proxy.addr);
    loop {
        if let Ok(response) = http.send("GET", "/health", &[], b"").await
            && response.status == 200
        {
            return Ok(());
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(format!(
                "GET /health not 200 within {STARTUP_TIMEOUT:?} (log {})",
                proxy.log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs every connection of `pool` in its own task, back to back, until
/// `duration` has passed; returns req/s, the number of calls, and the pool
/// for the next run.
async fn throughput(pool: Vec<McpHttp>, duration: Duration) -> Result<(f64, u64, Vec<McpHttp>)> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = pool
        .into_iter()
        .map(|mut mcp| {
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    mcp.echo().await?;
                    done += 1;
                }
                Ok::<_, BoxError>((done, mcp))
            })
        })
        .collect();
    let mut total = 0;
    let mut pool = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (done, mcp) = task.await??;
        total += done;
        pool.push(mcp);
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), total, pool))
}

/// User plus system CPU time of one process (not its children), from
/// /proc; Linux reports it in USER_HZ ticks, which are always 1/100 s.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields are counted after its ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).ok_or("short /proc stat")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Resident set of one process (not its children), from /proc.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

// ---------------------------------------------------------------------------
// The HTTP floor: the least any HTTP front-end of this echo can cost
// ---------------------------------------------------------------------------

/// A minimal hyper server (the same `auto` builder the proxy uses) that
/// answers the bench's own requests itself: `initialize` with a session id,
/// notifications with 202, `tools/call echo` with its result. No child, no
/// routing, no SSE: what is left of the proxy's p50 and CPU per call after
/// this floor and the direct pipe is the proxy's own work.
mod floor {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use serde::Deserialize;
    use serde_json::value::RawValue;

    use tokio::process::Child;

    use super::Result;

    /// The floor server, a process of its own so that its CPU can be read.
    pub struct Floor {
        pub addr: SocketAddr,
        pub pid: u32,
        /// Killed when the bench drops it.
        _child: Child,
    }

    impl Floor {
        pub async fn spawn() -> Result<Floor> {
            let (child, addr) = super::spawn_own_server(&["--floor-server".as_ref()]).await?;
            let pid = child.id().ok_or("floor server exited")?;
            Ok(Floor {
                addr,
                pid,
                _child: child,
            })
        }
    }

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<&'a str>,
        #[serde(borrow)]
        params: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        arguments: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    struct Echo {
        message: String,
    }

    fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    }

    async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return Ok(json(StatusCode::BAD_REQUEST, Vec::new()));
        };
        let Ok(env) = serde_json::from_slice::<Envelope<'_>>(&body) else {
            return Ok(json(StatusCode::BAD_REQUEST, Vec::new()));
        };
        let Some(id) = env.id else {
            return Ok(json(StatusCode::ACCEPTED, Vec::new()));
        };
        let id = id.get();
        let out = match env.method {
            Some("initialize") => {
                let mut r = json(
                    StatusCode::OK,
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"{}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"floor","version":"0"}}}}}}"#, super::PROTOCOL_VERSION).into_bytes(),
                );
                r.headers_mut().insert(
                    "mcp-session-id",
                    hyper::header::HeaderValue::from_static("floor"),
                );
                return Ok(r);
            }
            Some("tools/call") => {
                let message = env
                    .params
                    .and_then(|p| serde_json::from_str::<Call<'_>>(p.get()).ok())
                    .and_then(|c| c.arguments)
                    .and_then(|a| serde_json::from_str::<Echo>(a.get()).ok())
                    .map(|e| e.message)
                    .unwrap_or_default();
                let text = serde_json::to_string(&message).unwrap_or_default();
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":{text}}}],"isError":false}}}}"#
                )
            }
            _ => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
        };
        Ok(json(StatusCode::OK, out.into_bytes()))
    }

    /// Runs the floor server on a runtime like the proxy's default (one
    /// thread, `--worker-threads 1`) until stdin closes.
    pub fn serve() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build tokio runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            println!("{}", listener.local_addr().expect("bound").port());
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // The bench holds our stdin: its end (the bench exited) ends us.
            let (closed_tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                let _ = closed_tx.send(());
            });
            tokio::pin!(stdin_closed);
            loop {
                let (stream, _) = tokio::select! {
                    c = listener.accept() => match c {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                    _ = &mut stdin_closed => return,
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
    }
}

/// The relay floor: the least a proxy can do with a long answer. One
/// thread and blocking calls, no runtime and no HTTP library: it spawns
/// the child, grows its stdout pipe to 1 MiB as the proxy does, writes
/// each request's body to the child's stdin as one line and sends the
/// child's next line back as a chunked body, each read (room for more
/// than the pipe holds, as the proxy's) going out in one `writev` as it
/// arrives. No session, no id rewriting, no checks: the least work a
/// relay that copies a pipe into a socket can do (its rate is not a
/// ceiling: reading and sending take turns here, where the proxy's
/// runtime lets the child write on while the client reads). The proxy is
/// measured against it, and it against the direct pipe.
mod relay {
    use std::io::{IoSlice, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{ChildStdin, ChildStdout, Stdio};

    use super::{PIPE_BYTES, Result};

    /// Room for each read: more than the pipe holds, so a read empties it.
    const READ_ROOM: usize = PIPE_BYTES + 4096;

    /// The relay server, a process of its own like the HTTP floor.
    pub struct Relay {
        pub addr: SocketAddr,
        _child: tokio::process::Child,
    }

    impl Relay {
        pub async fn spawn(server: &Path) -> Result<Relay> {
            let args = [
                "--relay-server".as_ref(),
                "--server".as_ref(),
                server.as_os_str(),
            ];
            let (child, addr) = super::spawn_own_server(&args).await?;
            Ok(Relay {
                addr,
                _child: child,
            })
        }
    }

    /// The child's pipes, and what was read past the last answer's end.
    struct Child {
        stdin: ChildStdin,
        stdout: ChildStdout,
        buf: Vec<u8>,
        /// `buf[start..end]` is read and not sent yet.
        start: usize,
        end: usize,
    }

    impl Child {
        /// Sends the child's next line to `out` as a chunked body.
        fn relay_line(&mut self, out: &mut TcpStream) -> std::io::Result<()> {
            loop {
                let seen = &self.buf[self.start..self.end];
                let (piece, done) = match memchr::memchr(b'\n', seen) {
                    Some(at) => (&seen[..at], true),
                    None => (seen, false),
                };
                let size = format!("{:x}\r\n", piece.len());
                let tail: &[u8] = if done { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                if !piece.is_empty() || done {
                    let parts = if piece.is_empty() {
                        vec![IoSlice::new(b"0\r\n\r\n")]
                    } else {
                        vec![
                            IoSlice::new(size.as_bytes()),
                            IoSlice::new(piece),
                            IoSlice::new(tail),
                        ]
                    };
                    write_all_vectored(out, parts)?;
                }
                if done {
                    self.start += piece.len() + 1;
                    return Ok(());
                }
                self.start = 0;
                self.end = 0;
                let n = self.stdout.read(&mut self.buf[..READ_ROOM])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.end = n;
            }
        }
    }

    fn write_all_vectored(out: &mut TcpStream, parts: Vec<IoSlice<'_>>) -> std::io::Result<()> {
        let mut owned = parts;
        let mut slices = &mut owned[..];
        while !slices.is_empty() {
            let n = out.write_vectored(slices)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    /// Serves one connection's requests in turn.
    fn serve_connection(mut conn: TcpStream, child: &mut Child) -> std::io::Result<()> {
        let mut input = Vec::with_capacity(64 * 1024);
        loop {
            // Headers, then a body of Content-Length bytes.
            let (head_len, body_len) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                if let Ok(httparse::Status::Complete(n)) = req.parse(&input) {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0usize);
                    break (n, len);
                }
                let mut more = [0u8; 16 * 1024];
                let n = conn.read(&mut more)?;
                if n == 0 {
                    return Ok(());
                }
                input.extend_from_slice(&more[..n]);
            };
            while input.len() < head_len + body_len {
                let mut more = [0u8; 16 * 1024];
                let n = conn.read(&mut more)?;
                if n == 0 {
                    return Ok(());
                }
                input.extend_from_slice(&more[..n]);
            }
            let body = &input[head_len..head_len + body_len];
            let expects_answer = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("id").is_some());
            let mut line = body.to_vec();
            line.push(b'\n');
            child.stdin.write_all(&line)?;
            input.drain(..head_len + body_len);
            if expects_answer {
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                )?;
                child.relay_line(&mut conn)?;
            } else {
                conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
            }
        }
    }

    /// Runs the relay over `server` until stdin closes (the bench exited).
    pub fn serve(server: &Path) {
        let mut child = std::process::Command::new(server)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the relay's child");
        let stdout = child.stdout.take().expect("piped");
        {
            use nix::fcntl::{FcntlArg, fcntl};
            if let Err(e) = fcntl(&stdout, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32)) {
                eprintln!("bench: the relay's pipe stays at its default size: {e}");
            }
        }
        let mut io = Child {
            stdin: child.stdin.take().expect("piped"),
            stdout,
            buf: vec![0; READ_ROOM],
            start: 0,
            end: 0,
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        println!("{}", listener.local_addr().expect("bound").port());
        // The bench holds our stdin: its end ends us, and the child with us.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = child.kill();
            let _ = child.wait();
            std::process::exit(0);
        });
        // One connection at a time: the bench's one client.
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_nodelay(true);
            let _ = serve_connection(conn, &mut io);
        }
    }
}
