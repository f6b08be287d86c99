mod support;
use serde_json::json;
use support::{Client, Proxy, example, read_messages_lenient};

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn probe_burst() {
    let log = std::env::temp_dir().join(format!("probe-{}.log", std::process::id()));
    let script = format!(
        "tee -a '{}' | exec '{}'",
        log.display(),
        example("everything")
    );
    let proxy = Proxy::start_child(&["--max-body-bytes", "64M"], "sh", &["-c", &script]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({"sampling":{}})).await;
    let n = 100_000;
    let lines: Vec<String> = (0..n).map(|i| format!(r#"{{"jsonrpc":"2.0","id":"b-{i}","method":"sampling/createMessage","params":{{"messages":[],"maxTokens":1}}}}"#)).collect();
    let before = rss_kb();
    let t = std::time::Instant::now();
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"misbehave_emit","arguments":{"lines":lines}}});
    let msgs = read_messages_lenient(c.post(&body).await).await;
    let asked = msgs
        .iter()
        .filter(|m| m["method"] == "sampling/createMessage")
        .count();
    println!(
        "elapsed {:?}, client got {} requests, answer {}",
        t.elapsed(),
        asked,
        msgs.last().unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let got = std::fs::read_to_string(&log).unwrap();
    let errors = got
        .lines()
        .filter(|l| l.contains("\"b-") && l.contains("\"error\""))
        .count();
    println!(
        "child got {errors} errors; rss before {before} kB after {} kB",
        rss_kb()
    );
    let m = reqwest::get(format!("{}/metrics", proxy.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for l in m
        .lines()
        .filter(|l| l.contains("server_requests_refused_total{"))
    {
        println!("{l}");
    }
    let _ = std::fs::remove_file(&log);
    proxy.stop().await;
}
