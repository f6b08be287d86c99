//! What authentication costs per request: p50 and p90 latency of the same
//! request against proxies with no authentication, an API key, a JWT
//! (HS256, verified once and then cached) and forward auth (a local fake
//! `whoami`, answer cached), and the difference to no authentication.
//!
//! The request is a POST of `{}` over one keep-alive connection: it is
//! authenticated, then refused with 400 before any child is involved, so the
//! difference between the rows is the authentication alone.
//!
//! A second table times `Authenticator::authenticate` alone, in process:
//! on a loaded machine the HTTP round trip's noise is far larger than the
//! few microseconds being measured.
//!
//!     cargo run --release --example auth_bench -- [requests]

// `http::serve`'s future nests deeper than rustc's default query depth
// (128) when this crate lays it out in a release build.
#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use argh::FromArgs;
use mcp_sidecar::config::{Args, Config};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench-key-0123456789abcdef";
const SECRET: &str = "bench-secret-of-at-least-thirty-two-bytes";
const AUD: &str = "https://bench.example/mcp";

/// A row: its name, the proxy's flags, the header the client sends.
type Case = (&'static str, Vec<String>, Option<(String, String)>);

async fn start(flags: &[&str]) -> (String, CancellationToken) {
    let mut argv: Vec<&str> = flags.to_vec();
    argv.extend(["--", "true"]);
    let args = Args::from_args(&["mcp-proxy"], &argv).expect("valid flags");
    let config = Config::from_args(args, &|_| None).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(mcp_sidecar::proxy::run(listener, config, token.clone()));
    (format!("http://{addr}/mcp"), token)
}

async fn fake_whoami() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"loginId":"bench@example.com"}"#,
                        )),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/whoami")
}

async fn measure(url: &str, header: Option<(&str, &str)>, n: usize) -> (Duration, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let send = || {
        let mut req = http
            .post(url)
            .header("content-type", "application/json")
            .body("{}");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        req.send()
    };
    for _ in 0..200 {
        let r = send().await.unwrap();
        assert_eq!(r.status(), 400, "the credential must be accepted");
        r.bytes().await.unwrap();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = send().await.unwrap();
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (times[n / 2], times[n * 9 / 10])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub":"bench","aud":AUD,"exp":exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let whoami = fake_whoami().await;
    let limit = ["--auth-failure-limit", "0"];
    let cases: Vec<Case> = vec![
        ("none", vec![], None),
        (
            "api-key",
            vec!["--api-key".into(), KEY.into()],
            Some(("authorization".into(), format!("Bearer {KEY}"))),
        ),
        (
            "jwt (cached)",
            vec![
                "--jwt-secret-file".into(),
                secret.to_string_lossy().into(),
                "--jwt-audience".into(),
                AUD.into(),
            ],
            Some(("authorization".into(), format!("Bearer {jwt}"))),
        ),
        (
            "forward (cached)",
            vec![
                "--forward-auth-url".into(),
                whoami,
                "--forward-auth-ttl".into(),
                "1h".into(),
            ],
            Some(("authorization".into(), "Bearer some-upstream-token".into())),
        ),
    ];
    println!("authenticate() alone, {n} calls each: p50 / p90 / mean in µs");
    for (name, flags, header) in &cases {
        let mut argv: Vec<&str> = flags.iter().map(String::as_str).collect();
        argv.extend(limit);
        argv.extend(["--", "true"]);
        let args = Args::from_args(&["mcp-proxy"], &argv).expect("valid flags");
        let config = Config::from_args(args, &|_| None).expect("valid config");
        let auth = mcp_sidecar::auth::Authenticator::new(
            config.auth,
            "/mcp",
            std::sync::Arc::new(mcp_sidecar::audit::Audit::default()),
        )
        .unwrap();
        let mut headers = http::HeaderMap::new();
        if let Some((k, v)) = header {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let ip = Some("127.0.0.1".parse().unwrap());
        for _ in 0..100 {
            auth.authenticate(&headers, ip).await.unwrap();
        }
        let mut times = Vec::with_capacity(n);
        let all = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let p = auth.authenticate(&headers, ip).await;
            times.push(t.elapsed());
            assert!(p.is_ok());
        }
        // The mean over the whole loop does not depend on the clock's resolution.
        let mean = all.elapsed().as_secs_f64() * 1e6 / n as f64;
        times.sort();
        println!(
            "{name:<18} p50 {:>7.2}  p90 {:>7.2}  mean {mean:>7.2}",
            times[n / 2].as_secs_f64() * 1e6,
            times[n * 9 / 10].as_secs_f64() * 1e6
        );
    }
    let mut base = None;
    println!("{n} requests each, p50 / p90 in µs, Δ p50 against no authentication");
    for (name, flags, header) in cases {
        let mut f: Vec<&str> = flags.iter().map(String::as_str).collect();
        f.extend(limit);
        let (url, token) = start(&f).await;
        let header = header.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
        let (p50, p90) = measure(&url, header, n).await;
        let b = *base.get_or_insert(p50);
        let delta = p50.as_secs_f64() * 1e6 - b.as_secs_f64() * 1e6;
        println!(
            "{name:<18} p50 {:>7.1}  p90 {:>7.1}  Δp50 {:>+6.1}",
            p50.as_secs_f64() * 1e6,
            p90.as_secs_f64() * 1e6,
            delta
        );
        token.cancel();
    }
}
