//! End to end: rmcp's Streamable HTTP client → `mcp-proxy` → `coda-mcp`
//! (stdio child) → fake Coda.
//!
//! `mcp-proxy` belongs to the other package of the workspace (`mcp-sidecar`),
//! so cargo does not hand this test its path. It is found next to
//! `coda-mcp` in the shared target directory (`target/<profile>/mcp-proxy`),
//! built there with `cargo build -p mcp-sidecar --bin mcp-proxy` when
//! missing; `MCP_PROXY_BIN` points at another build instead.

#[path = "support/fake_coda.rs"]
mod fake_coda;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_coda::{FakeCoda, TOKEN};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `mcp-proxy` binary: `MCP_PROXY_BIN`, or beside `coda-mcp`
/// (built with the same profile if it is not there yet).
fn mcp_proxy() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let coda = Path::new(env!("CARGO_BIN_EXE_coda-mcp"));
    let dir = coda.parent().expect("coda-mcp lives in a directory");
    let proxy = dir.join(format!("mcp-proxy{}", std::env::consts::EXE_SUFFIX));
    if !proxy.exists() {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "mcp-sidecar",
            "--bin",
            "mcp-proxy",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building mcp-proxy failed");
    }
    assert!(proxy.exists(), "mcp-proxy not found at {}", proxy.display());
    proxy
}

struct Proxy {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_proxy(fake: &FakeCoda) -> Proxy {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(mcp_proxy())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--"])
        .arg(env!("CARGO_BIN_EXE_coda-mcp"))
        .args([
            "--api-base-url",
            &fake.base_url(),
            "--skip-token-check",
            "--poll-interval-ms",
            "20",
        ])
        .env("CODA_API_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mcp-proxy");
    let base = format!("http://127.0.0.1:{port}");
    coda_mcp::client::install_tls_provider();
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "mcp-proxy /health never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proxy {
        child,
        url: format!("{base}/mcp"),
    }
}

#[tokio::test]
async fn http_client_reaches_fake_coda_through_the_proxy_and_coda_mcp() {
    let fake = FakeCoda::start().await;
    let proxy = start_proxy(&fake).await;
    let client = tokio::time::timeout(
        TIMEOUT,
        ().serve(StreamableHttpClientTransport::from_uri(proxy.url.clone())),
    )
    .await
    .expect("initialize timed out")
    .expect("initialize failed");
    let tools = tokio::time::timeout(TIMEOUT, client.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tools.len(), 60);

    let args = |v: Value| v.as_object().unwrap().clone();
    let r = tokio::time::timeout(
        TIMEOUT,
        client.call_tool(CallToolRequestParams::new("coda_list_rows").with_arguments(args(json!({
            "docId": "https://coda.io/d/Tracker_ddoc1", "tableIdOrName": "Tasks", "filter": {"column": "Status", "value": "Doing"}
        })))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let v = r.structured_content.unwrap();
    assert_eq!(v["items"][0]["id"], "i-2");

    let r = client
        .call_tool(CallToolRequestParams::new("coda_create_rows").with_arguments(args(json!({
            "docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "via proxy"}], "wait": true
        }))))
        .await
        .unwrap();
    assert_eq!(r.structured_content.unwrap()["mutation"]["completed"], true);
    assert_eq!(fake.row_count("grid-tasks"), 4);

    let r = client
        .call_tool(
            CallToolRequestParams::new("coda_get_page")
                .with_arguments(args(json!({"docId": "doc1", "pageIdOrName": "Nope"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));

    let q = &fake.calls("GET", "/docs/doc1/tables/grid-tasks/rows")[0];
    assert_eq!(q.q("query"), Some(r#""Status":"Doing""#));
    assert_eq!(
        q.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    fake.assert_responses_match_spec();
    let _ = client.cancel().await;
    drop(proxy);
}
