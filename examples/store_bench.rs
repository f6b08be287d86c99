//! What per-user credentials cost at spawn: a per-session child with three
//! store-backed variables (embedded store) against one with none.
//!
//! Two named servers run the same `everything` example in one proxy on
//! 127.0.0.1:0; each round opens a session on each (initialize: spawn,
//! handshake, answer) in alternating order and closes it again. Also
//! measured alone: the store lookup that the three variables add.
//!
//! `cargo run --release --example store_bench -- [rounds]` (default 60).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_sidecar::config::Args;
use mcp_sidecar::config_file;
use mcp_sidecar::servers::{self, ServerSet};
use mcp_sidecar::store::{ChildSecrets, KeyRing, Secret, SecretRef, Store, StoreKey};
use tokio_util::sync::CancellationToken;

fn everything() -> String {
    let mut p = std::env::current_exe().expect("exe path");
    p.pop();
    p.push("everything");
    assert!(
        p.exists(),
        "build the everything example first: {}",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

async fn open_and_close(http: &reqwest::Client, url: &str) -> f64 {
    let t = Instant::now();
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#)
        .send()
        .await
        .expect("initialize sent");
    assert_eq!(r.status(), 200, "initialize failed");
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await.expect("initialize answered");
    let elapsed = t.elapsed().as_secs_f64() * 1e3;
    let _ = http
        .delete(url)
        .header("mcp-session-id", sid)
        .send()
        .await
        .expect("delete sent");
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = std::env::temp_dir().join(format!("mcp-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("secrets.db");
    let key = StoreKey::generate_base64();
    let store = Arc::new(
        Store::open(
            db.to_str().unwrap(),
            KeyRing::parse(&key).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    );
    for name in ["a", "b", "c"] {
        store
            .set(
                &SecretRef::new("anonymous", "creds", name),
                &Secret::new(format!("value-of-{name}-0123456789abcdef").into_bytes()),
            )
            .await
            .unwrap();
    }
    let toml = format!(
        r#"
[store]
path = {db:?}
[[server]]
name = "plain"
command = [{ev:?}]
[[server]]
name = "creds"
command = [{ev:?}]
env = {{ A = {{ secret = "a" }}, B = {{ secret = "b" }}, C = {{ secret = "c" }} }}
"#,
        ev = everything()
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, toml).unwrap();
    let args = Args {
        config: Some(path.to_string_lossy().into_owned()),
        ..Args::default()
    };
    let config = config_file::load(args, &|_| None).expect("bench config loads");
    let set = ServerSet::new(config, Some(store.clone())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(servers::run(listener, set, token.clone()));
    let http = reqwest::Client::new();
    let (plain, creds) = (
        format!("{base}/servers/plain/mcp"),
        format!("{base}/servers/creds/mcp"),
    );
    // Warm up both (page cache, first spawn of the binary).
    for _ in 0..5 {
        open_and_close(&http, &plain).await;
        open_and_close(&http, &creds).await;
    }
    let (mut p, mut c) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            p.push(open_and_close(&http, &plain).await);
            c.push(open_and_close(&http, &creds).await);
        } else {
            c.push(open_and_close(&http, &creds).await);
            p.push(open_and_close(&http, &plain).await);
        }
    }
    // The lookup alone: three variables, one round trip to the file.
    let secrets = ChildSecrets::new(
        store.clone(),
        "creds",
        vec![
            ("A".into(), "a".into()),
            ("B".into(), "b".into()),
            ("C".into(), "c".into()),
        ],
    );
    let mut lookups = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let env = secrets.env_for(Some("anonymous")).await.unwrap();
        lookups.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(env.len(), 3);
    }
    token.cancel();
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&dir);

    let (p50p, p50c) = (pct(&mut p, 0.5), pct(&mut c, 0.5));
    println!("session start (initialize incl. spawn), {rounds} rounds each, alternating:");
    println!(
        "  no store variables:    p50 {p50p:.2} ms  p90 {:.2} ms",
        pct(&mut p, 0.9)
    );
    println!(
        "  3 store variables:     p50 {p50c:.2} ms  p90 {:.2} ms",
        pct(&mut c, 0.9)
    );
    println!("  difference at p50:     {:+.2} ms", p50c - p50p);
    println!(
        "store lookup of 3 variables alone (2000 runs): p50 {:.3} ms  p99 {:.3} ms",
        pct(&mut lookups, 0.5),
        pct(&mut lookups, 0.99)
    );
}
