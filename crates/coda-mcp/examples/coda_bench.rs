//! coda-mcp latency benchmark: a `tools/call` round trip through coda-mcp
//! against the fake Coda (over stdio, and through mcp-proxy over Streamable
//! HTTP) next to a direct HTTP call to the fake in the same run.
//!
//! The three kinds of call are interleaved (direct, stdio, proxy, direct, …)
//! so that machine noise hits them alike. coda-mcp's own overhead is the
//! per-iteration difference between a stdio tool call and a direct call,
//! both doing the same `GET /docs/{id}`; its median is reported with the
//! p50 of each path. Also reports the binary size and coda-mcp's RSS.
//!
//!     cargo build --release --workspace --bins --example coda_bench
//!     target/release/examples/coda_bench --calls 2000 --repeats 3
//!
//! or `bench/coda.sh`.

#[path = "../tests/support/fake_coda.rs"]
#[allow(dead_code, clippy::all)]
mod fake_coda;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use argh::FromArgs;
use fake_coda::{FakeCoda, TOKEN};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::json;

#[derive(FromArgs)]
/// Measure coda-mcp round trips against the fake Coda.
struct Args {
    /// measured calls per path and repeat (default 2000)
    #[argh(option, default = "2000")]
    calls: usize,
    /// warm-up calls per path (default 200)
    #[argh(option, default = "200")]
    warmup: usize,
    /// repeats, to show the noise (default 3)
    #[argh(option, default = "3")]
    repeats: usize,
    /// path of the coda-mcp binary (default: next to this example's directory)
    #[argh(option)]
    coda_mcp: Option<PathBuf>,
    /// path of the mcp-proxy binary (default: next to coda-mcp)
    #[argh(option)]
    mcp_proxy: Option<PathBuf>,
    /// skip the path through mcp-proxy
    #[argh(switch)]
    no_proxy: bool,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = pct(&v, 0.5);
    println!(
        "  {name:<28} p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        us(p50),
        us(pct(&v, 0.9)),
        us(pct(&v, 0.99))
    );
    p50
}

fn median_diff(a: &[Duration], b: &[Duration]) -> f64 {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| us(*x) - us(*y)).collect();
    d.sort_by(|x, y| x.total_cmp(y));
    d[d.len() / 2]
}

fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = argh::from_env();
    let exe_dir = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let coda_mcp = args
        .coda_mcp
        .clone()
        .unwrap_or_else(|| exe_dir.join("coda-mcp"));
    let proxy_bin = args
        .mcp_proxy
        .clone()
        .unwrap_or_else(|| exe_dir.join("mcp-proxy"));
    let fake = FakeCoda::start().await;
    let base = fake.base_url();

    let size = std::fs::metadata(&coda_mcp)?.len();
    println!(
        "coda-mcp binary: {} ({:.1} MiB)",
        coda_mcp.display(),
        size as f64 / 1048576.0
    );

    // Direct HTTP client, as coda-mcp would make the call (same crate, same TLS-less loopback).
    coda_mcp::client::install_tls_provider();
    let http = reqwest::Client::new();
    let direct_url = format!("{base}/docs/doc1");

    let mut cmd = tokio::process::Command::new(&coda_mcp);
    cmd.args([
        "--api-base-url",
        &base,
        "--skip-token-check",
        "--no-rate-limit",
    ])
    .env("CODA_API_TOKEN", TOKEN)
    .env("CODA_MCP_LOG", "warn");
    let transport = TokioChildProcess::new(cmd)?;
    let pid = transport.id();
    let stdio = ().serve(transport).await?;

    let mut proxy_child = None;
    let proxy_client = if args.no_proxy || !proxy_bin.exists() {
        println!("mcp-proxy: skipped");
        None
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(&proxy_bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--"])
            .arg(&coda_mcp)
            .args([
                "--api-base-url",
                &base,
                "--skip-token-check",
                "--no-rate-limit",
            ])
            .env("CODA_API_TOKEN", TOKEN)
            .env("CODA_MCP_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        proxy_child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err("mcp-proxy did not become healthy".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = format!("http://127.0.0.1:{port}/mcp");
        Some(
            ().serve(StreamableHttpClientTransport::from_uri(url))
                .await?,
        )
    };

    let call = || {
        CallToolRequestParams::new("coda_get_document")
            .with_arguments(json!({"docId": "doc1"}).as_object().unwrap().clone())
    };
    for _ in 0..args.warmup {
        http.get(&direct_url)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .bytes()
            .await?;
        stdio.call_tool(call()).await?;
        if let Some(p) = &proxy_client {
            p.call_tool(call()).await?;
        }
    }
    println!(
        "{} calls per path × {} repeats, interleaved; {} CPUs, load {}",
        args.calls,
        args.repeats,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut overheads = Vec::new();
    for rep in 1..=args.repeats {
        let (mut d, mut s, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.calls {
            let t = Instant::now();
            let body = http
                .get(&direct_url)
                .bearer_auth(TOKEN)
                .send()
                .await?
                .bytes()
                .await?;
            d.push(t.elapsed());
            assert!(!body.is_empty());
            let t = Instant::now();
            let r = stdio.call_tool(call()).await?;
            s.push(t.elapsed());
            assert_ne!(r.is_error, Some(true));
            if let Some(pc) = &proxy_client {
                let t = Instant::now();
                let r = pc.call_tool(call()).await?;
                p.push(t.elapsed());
                assert_ne!(r.is_error, Some(true));
            }
        }
        println!("repeat {rep}:");
        summary("direct HTTP GET /docs/doc1", d.clone());
        summary("tools/call via stdio", s.clone());
        let over = median_diff(&s, &d);
        if !p.is_empty() {
            summary("tools/call via mcp-proxy", p.clone());
            println!(
                "  proxy path minus direct (median of pairs): {:.1} µs",
                median_diff(&p, &d)
            );
        }
        println!("  coda-mcp overhead, stdio minus direct (median of pairs): {over:.1} µs");
        overheads.push(over);
    }
    overheads.sort_by(|a, b| a.total_cmp(b));
    println!(
        "coda-mcp overhead p50 over repeats: min {:.1} µs, max {:.1} µs",
        overheads[0],
        overheads[overheads.len() - 1]
    );
    if let Some((rss, hwm)) = pid.and_then(rss_kb) {
        println!(
            "coda-mcp RSS after the run: {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    let _ = stdio.cancel().await;
    if let Some(p) = proxy_client {
        let _ = p.cancel().await;
    }
    drop(proxy_child);
    Ok(())
}
