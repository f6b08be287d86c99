//! Scale-out behind real nginx: three proxies (`--replica-id r1..r3`), each
//! with real `everything` children, behind nginx run from
//! `examples/nginx/mcp-proxy.conf` (the shipped config, unchanged but for its
//! listen address) and an upstreams file written like
//! `examples/nginx/upstreams.compose.conf`, in a temp dir on loopback ports.
//!
//! Ignored by default: it needs nginx (Debian `nginx-light`), which
//! `scripts/ship-test.sh` installs before running it with `--ignored`.
//! `NGINX` names another binary.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Proxy, SseStream, text_of};

const MODERN: &str = "2026-07-28";
const CLIENTS: usize = 24;
const CALLS: usize = 8;

/// nginx as a child of the test, killed on drop.
struct Nginx {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn upstreams(replicas: &[(String, u16)]) -> String {
    let server = |port: u16, extra: &str| format!("    server 127.0.0.1:{port}{extra};\n");
    let mut s =
        String::from("upstream mcp {\n    hash $http_mcp_session_id$arg_sessionId consistent;\n");
    for (_, port) in replicas {
        s += &server(*port, " max_fails=1 fail_timeout=10s");
    }
    s += "    keepalive 32;\n}\n";
    for (tag, port) in replicas {
        s += &format!("upstream mcp_{tag} {{\n");
        s += &server(*port, "");
        for (other, p) in replicas {
            if other != tag {
                s += &server(*p, " backup");
            }
        }
        s += "    keepalive 16;\n}\n";
    }
    s += "map \"$mcp_tag_header$mcp_tag_query\" $mcp_upstream {\n";
    for (tag, _) in replicas {
        s += &format!("    {tag} mcp_{tag};\n");
    }
    s += "    default mcp;\n}\n";
    s
}

async fn start_nginx(replicas: &[(String, u16)]) -> Nginx {
    let bin = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let dir = std::env::temp_dir().join(format!("mcp-nginx-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/mcp-proxy.conf"),
    )
    .unwrap();
    assert!(shipped.contains("listen 8080;"));
    let site = shipped.replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
    std::fs::write(dir.join("mcp-proxy.conf"), site).unwrap();
    std::fs::write(dir.join("upstreams.conf"), upstreams(replicas)).unwrap();
    let d = dir.display();
    let main = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n\
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
         include {d}/upstreams.conf;\n  include {d}/mcp-proxy.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let conf = dir.join("nginx.conf");
    let check = std::process::Command::new(&bin)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} (apt-get install nginx-light): {e}"));
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = tokio::process::Command::new(&bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let nginx = Nginx { child, dir, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not listen on {port}");
}

/// A session-era client over nginx; returns the session id.
async fn initialize(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"nginx-test","version":"1"}}}),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("initialize: {}", r.status()));
    }
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await;
    let r = post(
        http,
        url,
        &sid,
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await?;
    if r.status() != 202 {
        return Err(format!("initialized: {}", r.status()));
    }
    Ok(sid)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    sid: &str,
    body: Value,
) -> Result<reqwest::Response, String> {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())
}

async fn echo(http: &reqwest::Client, url: &str, sid: &str, i: usize) -> Result<(), String> {
    let msg = format!("call {i} of {sid}");
    let r = post(
        http,
        url,
        sid,
        json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"message":msg}}}),
    )
    .await?;
    if r.status() != 200 {
        return Err(format!("{sid}: tools/call {i}: {}", r.status()));
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if text_of(&v) != msg {
        return Err(format!("{sid}: wrong answer {v}"));
    }
    Ok(())
}

fn tag(sid: &str) -> &str {
    sid.split_once('.').map(|(t, _)| t).unwrap_or("")
}

/// `mcp_proxy_http_requests_total` of one era, summed, from a replica's /metrics.
async fn requests_of_era(proxy: &Proxy, era: &str) -> f64 {
    let text = proxy.metrics_text().await;
    let prefix = format!("mcp_proxy_http_requests_total{{era=\"{era}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs nginx (Debian nginx-light); scripts/ship-test.sh runs it"]
async fn sessions_stick_to_their_replica_behind_nginx() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the nginx scenario finishes within 120 s");
}

async fn scenario() {
    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let tag = format!("r{i}");
        let p = Proxy::start(&["--replica-id", &tag]).await;
        replicas.push((tag, p.addr.port()));
        proxies.push(Some(p));
    }
    let nginx = start_nginx(&replicas).await;
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let url = format!("{base}/mcp");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // 1. Many clients at once, each with its session: every call reaches the
    // replica that holds the session (any other would answer 404).
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let sid = initialize(&http, &url).await?;
            for i in 1..=CALLS {
                echo(&http, &url, &sid, i).await?;
            }
            Ok::<_, String>(sid)
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sessions.push(
            r.unwrap()
                .unwrap_or_else(|e| panic!("a client failed: {e}")),
        );
    }
    let mut per_tag: HashMap<&str, usize> = HashMap::new();
    for s in &sessions {
        *per_tag.entry(tag(s)).or_default() += 1;
    }
    assert!(
        per_tag.keys().all(|t| ["r1", "r2", "r3"].contains(t)),
        "session ids carry the replica tag: {per_tag:?}"
    );
    assert!(
        per_tag.len() >= 2,
        "new sessions spread over the replicas: {per_tag:?}"
    );

    // 2. 2026-07-28 requests carry no session and spread over every replica.
    let mut before = Vec::new();
    for p in proxies.iter().flatten() {
        before.push(requests_of_era(p, MODERN).await);
    }
    for i in 0..30 {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .json(
                &json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{
                "name":"echo","arguments":{"message":"modern"},
                "_meta":{"io.modelcontextprotocol/protocolVersion":MODERN,
                    "io.modelcontextprotocol/clientInfo":{"name":"nginx-test","version":"1"},
                    "io.modelcontextprotocol/clientCapabilities":{}}}}),
            )
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "2026-07-28 call through nginx: {v}");
        assert_eq!(text_of(&v), "modern", "{v}");
    }
    for (i, p) in proxies.iter().flatten().enumerate() {
        let n = requests_of_era(p, MODERN).await - before[i];
        assert!(n >= 1.0, "replica r{} served no 2026-07-28 request", i + 1);
    }

    // 3. Legacy HTTP+SSE: the stream and the POSTs (sessionId in the query)
    // meet on one replica.
    let mut legacy_tags = HashSet::new();
    for n in 0..6 {
        let resp = http
            .get(format!("{base}/sse"))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut s = SseStream::new(resp);
        let ev = s.next().await.unwrap();
        assert_eq!(ev.name.as_deref(), Some("endpoint"));
        let sid = ev.data.split("sessionId=").nth(1).unwrap().to_string();
        legacy_tags.insert(tag(&sid).to_string());
        let post_url = format!("{base}{}", ev.data);
        let send = |body: Value| {
            http.post(&post_url)
                .header("content-type", "application/json")
                .json(&body)
                .send()
        };
        let r = send(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await.unwrap();
        assert_eq!(r.status(), 202, "legacy session {sid}");
        let init: Value = serde_json::from_str(&s.next().await.unwrap().data).unwrap();
        assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
        send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await
            .unwrap();
        for i in 2..5 {
            let msg = format!("legacy {n}.{i}");
            let r = send(json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"message":msg}}})).await.unwrap();
            assert_eq!(r.status(), 202);
            let v: Value = serde_json::from_str(&s.next().await.unwrap().data).unwrap();
            assert_eq!(text_of(&v), msg);
        }
    }
    assert!(
        legacy_tags.len() >= 2,
        "legacy sessions spread: {legacy_tags:?}"
    );

    // 4. One replica stops: its sessions answer 404 (from a live replica,
    // which does not know them), and a client that initializes again lands
    // on a live replica and works.
    let victim = "r2";
    let (idx, _) = replicas
        .iter()
        .enumerate()
        .find(|(_, (t, _))| t == victim)
        .unwrap();
    let orphaned: Vec<&String> = sessions.iter().filter(|s| tag(s) == victim).collect();
    assert!(!orphaned.is_empty(), "{victim} holds sessions: {per_tag:?}");
    proxies[idx].take().unwrap().stop().await;
    for sid in &orphaned {
        let r = post(
            &http,
            &url,
            sid,
            json!({"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 404, "a session of the stopped replica");
    }
    for _ in 0..6 {
        let sid = initialize(&http, &url).await.unwrap();
        assert_ne!(tag(&sid), victim, "a new session on a live replica");
        echo(&http, &url, &sid, 1).await.unwrap();
    }
    // Sessions of the live replicas are untouched.
    for sid in sessions.iter().filter(|s| tag(s) != victim).take(6) {
        echo(&http, &url, sid, 100).await.unwrap();
    }

    drop(nginx);
    for p in proxies.into_iter().flatten() {
        p.stop().await;
    }
}
