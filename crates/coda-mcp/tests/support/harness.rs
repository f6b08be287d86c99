//! Test harness for coda-mcp: start the fake Coda, spawn the real
//! `coda-mcp` binary against it and connect rmcp's client over stdio.
//! Every wait has a timeout so a hang fails the test.
#![allow(dead_code)]

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::process::Command;

use super::fake_coda::{FakeCoda, TOKEN};

pub const BIN: &str = env!("CARGO_BIN_EXE_coda-mcp");

/// The binary under test: `CODA_MCP_BIN` (to run a test against another
/// build, e.g. to watch a regression test fail on the code before a fix),
/// or the one cargo built.
pub fn bin() -> String {
    std::env::var("CODA_MCP_BIN").unwrap_or_else(|_| BIN.to_owned())
}
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub fake: FakeCoda,
    pub client: RunningService<RoleClient, ()>,
    /// Output schemas of the listed tools, read on the first call: every
    /// successful call's `structuredContent` is validated against its
    /// tool's advertised schema, as a TypeScript SDK client does.
    pub output_schemas: tokio::sync::OnceCell<std::collections::HashMap<String, Value>>,
}

/// Fast polling and no client-side buckets unless a test says otherwise.
pub const FAST: &[&str] = &[
    "--poll-interval-ms",
    "20",
    "--retry-base-ms",
    "20",
    "--no-rate-limit",
];

pub fn command(fake: &FakeCoda, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--api-base-url")
        .arg(fake.base_url())
        .args(extra)
        .env("CODA_API_TOKEN", TOKEN)
        .env_remove("API_KEY")
        .env_remove("CODA_READ_ONLY")
        .env_remove("CODA_TOOLSETS")
        .env_remove("CODA_API_BASE_URL")
        .env("CODA_MCP_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// coda-mcp spoken to over its raw stdio, with every log line kept: for
/// tests that check stdout line by line or read what it logged.
pub struct Raw {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    log: tokio::task::JoinHandle<String>,
}

/// Starts `cmd` (see [`command`]) logging at trace level, over [`Raw`].
pub fn spawn_traced(mut cmd: Command) -> Raw {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};
    cmd.env("CODA_MCP_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut all = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    Raw {
        child,
        stdin,
        out,
        log,
    }
}

impl Raw {
    /// Closes stdin, waits for the exit (at most [`TIMEOUT`]) and gives
    /// back everything it logged.
    pub async fn finish(self) -> String {
        let Raw {
            mut child,
            stdin,
            log,
            ..
        } = self;
        drop(stdin);
        let _ = tokio::time::timeout(TIMEOUT, child.wait()).await;
        tokio::time::timeout(TIMEOUT, log).await.unwrap().unwrap()
    }
}

pub async fn connect(fake: FakeCoda, extra: &[&str]) -> Harness {
    // Defaults from FAST unless the test sets the same flag.
    let mut args: Vec<&str> = Vec::new();
    for pair in FAST.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(if pair[0].ends_with("rate-limit") {
                &pair[..1]
            } else {
                pair
            });
        }
    }
    args.extend_from_slice(extra);
    serve_with(fake, &args).await
}

/// The binary against `fake` with exactly `args` (none of [`FAST`]'s
/// defaults: e.g. with the real rate limiter), connected.
pub async fn serve_with(fake: FakeCoda, args: &[&str]) -> Harness {
    let cmd = command(&fake, args);
    let transport = TokioChildProcess::new(cmd).expect("spawn coda-mcp");
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize failed");
    Harness {
        fake,
        client,
        output_schemas: Default::default(),
    }
}

/// The strings of the array `v[k]` (a result's list of ids).
pub fn strings(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

pub async fn start(extra: &[&str]) -> Harness {
    connect(FakeCoda::start().await, extra).await
}

impl Harness {
    pub async fn call(&self, name: &str, args: Value) -> CallToolResult {
        let args = match args {
            Value::Object(m) => m,
            other => panic!("arguments must be an object, got {other}"),
        };
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(args);
        let r = tokio::time::timeout(TIMEOUT, self.client.call_tool(params))
            .await
            .unwrap_or_else(|_| panic!("{name} timed out"))
            .unwrap_or_else(|e| panic!("{name}: protocol error {e}"));
        if r.is_error != Some(true)
            && let Some(v) = &r.structured_content
        {
            let schemas = self
                .output_schemas
                .get_or_init(|| async {
                    self.tools()
                        .await
                        .into_iter()
                        .filter_map(|t| {
                            let s = Value::Object((*t.output_schema?).clone());
                            Some((t.name.to_string(), s))
                        })
                        .collect()
                })
                .await;
            if let Some(schema) = schemas.get(name) {
                super::fake_coda::validate(schema, v).unwrap_or_else(|e| {
                    panic!("{name}: structuredContent breaks the outputSchema: {e}")
                });
            }
        }
        r
    }

    /// Call and expect success; returns structuredContent.
    pub async fn ok(&self, name: &str, args: Value) -> Value {
        let r = self.call(name, args).await;
        assert_ne!(r.is_error, Some(true), "{name} failed: {}", text(&r));
        r.structured_content
            .clone()
            .unwrap_or_else(|| panic!("{name}: no structuredContent"))
    }

    /// Call and expect a tool error; returns its text.
    pub async fn fails(&self, name: &str, args: Value) -> String {
        let r = self.call(name, args).await;
        assert_eq!(
            r.is_error,
            Some(true),
            "{name} should have failed: {}",
            text(&r)
        );
        text(&r)
    }

    pub async fn tools(&self) -> Vec<Tool> {
        tokio::time::timeout(TIMEOUT, self.client.list_all_tools())
            .await
            .expect("tools/list timed out")
            .expect("tools/list failed")
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(TIMEOUT, self.client.cancel()).await;
    }
}

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
