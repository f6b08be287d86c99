//! Identity (issue #10): every request has a principal, every session and
//! child belongs to one, and no credential leaks. Keys are made here (RSA,
//! P-256, Ed25519), tokens are signed here, the JWKS and the forward-auth
//! `whoami` are real HTTP servers on port 0.
//!
//! A trick used throughout: authentication happens before the body is read,
//! so a POST of `{}` answers 400 when the credential was accepted and
//! 401/403/429/503 when it was not, without starting any child.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{Client, Proxy, STEP, SseStream, text_of};
use tokio_util::sync::CancellationToken;

const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";
const ISS: &str = "https://issuer.example.com";
const AUD: &str = "https://mcp.example.com/mcp";
const MODERN: &str = "2026-07-28";

// ---------- helpers ----------

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcp-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn key_file(name: &str) -> String {
    let p = temp_dir(name).join("keys");
    std::fs::write(&p, format!("# team\nalice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

fn http_with(headers: &[(&str, &str)]) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

fn client(url: &str, headers: &[(&str, &str)]) -> Client {
    let mut c = Client::new(url);
    c.http = http_with(headers);
    c
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// POST `{}` with `headers`: 400 means the credential was accepted.
async fn probe(proxy: &Proxy, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .body("{}");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(STEP, req.send())
        .await
        .expect("answered in time")
        .unwrap()
}

async fn probe_status(proxy: &Proxy, headers: &[(&str, &str)]) -> u16 {
    probe(proxy, headers).await.status().as_u16()
}

/// A 2026-07-28 request with its required headers.
async fn modern(proxy: &Proxy, auth: &[(&str, &str)], body: Value) -> Value {
    let mut req = http_with(auth)
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", body["method"].as_str().unwrap());
    if let Some(name) = body["params"]["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    let r = tokio::time::timeout(STEP, req.json(&body).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn modern_call(id: u32, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args,
        "_meta":{"io.modelcontextprotocol/protocolVersion":MODERN,
            "io.modelcontextprotocol/clientCapabilities":{}}}})
}

/// An HTTP server on port 0 answering with `handler`, counting requests.
struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    token: CancellationToken,
}

type Handler = Arc<dyn Fn(&http::request::Parts) -> (u16, String) + Send + Sync>;

impl Fake {
    async fn start(handler: Handler) -> Fake {
        Fake::start_slow(handler, Duration::ZERO).await
    }

    /// A fake that takes `delay` over every answer.
    async fn start_slow(handler: Handler, delay: Duration) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let (counter, stop) = (hits.clone(), token.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    c = listener.accept() => c.unwrap().0,
                    _ = stop.cancelled() => return,
                };
                let (handler, counter) = (handler.clone(), counter.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (parts, _) = req.into_parts();
                            counter.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = handler(&parts);
                            async move {
                                tokio::time::sleep(delay).await;
                                let mut r = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                r.headers_mut()
                                    .insert("content-type", "application/json".parse().unwrap());
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Fake { addr, hits, token }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

// ---------- keys and tokens ----------

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

fn signer(key: EncodingKey, alg: Algorithm, kid: &str) -> Signer {
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    Signer {
        key,
        alg,
        kid: kid.into(),
        jwk: serde_json::to_value(jwk).unwrap(),
    }
}

/// The RSA key (made once: 2048-bit generation takes a moment) and its
/// public key's DER, which an attacker would use as an HMAC secret.
fn rsa() -> &'static (Signer, Vec<u8>) {
    static RSA: OnceLock<(Signer, Vec<u8>)> = OnceLock::new();
    RSA.get_or_init(|| {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let sk = rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap();
        let der = sk.to_pkcs1_der().unwrap();
        let public = sk
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        (
            signer(
                EncodingKey::from_rsa_der(der.as_bytes()),
                Algorithm::RS256,
                "rsa-1",
            ),
            public,
        )
    })
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    b
}

fn ec(kid: &str) -> Signer {
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::SecretKey::from_slice(&random32()).unwrap();
    let der = sk.to_pkcs8_der().unwrap();
    signer(
        EncodingKey::from_ec_der(der.as_bytes()),
        Algorithm::ES256,
        kid,
    )
}

fn ed(kid: &str) -> Signer {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let sk = ed25519_dalek::SigningKey::from_bytes(&random32());
    let der = sk.to_pkcs8_der().unwrap();
    Signer {
        key: EncodingKey::from_ed_der(der.as_bytes()),
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        jwk: json!({"kty":"OKP","crv":"Ed25519","kid":kid,
            "x": b64(sk.verifying_key().as_bytes())}),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "exp": now() + 600, "iat": now()})
}

fn sign(s: &Signer, claims: &Value) -> String {
    let mut h = Header::new(s.alg);
    h.kid = Some(s.kid.clone());
    encode(&h, claims, &s.key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, by hand (no extra dependency for tests).
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWKS server whose key list can grow during the test.
async fn jwks_server(keys: Vec<Value>) -> (Fake, Arc<Mutex<Vec<Value>>>) {
    let set = Arc::new(Mutex::new(keys));
    let served = set.clone();
    let fake = Fake::start(Arc::new(move |_| {
        (200, json!({ "keys": *served.lock().unwrap() }).to_string())
    }))
    .await;
    (fake, set)
}

/// A child command that leaves a file behind when it starts: (the file, program, args).
fn spawn_marker(name: &str) -> (PathBuf, String, Vec<String>) {
    let marker = temp_dir(name).join("spawned");
    let _ = std::fs::remove_file(&marker);
    let script = format!("touch {}; exec \"$0\"", marker.display());
    (
        marker,
        "sh".into(),
        vec!["-c".into(), script, support::example("everything")],
    )
}

// ---------- principals and sessions ----------

#[tokio::test]
async fn another_key_gets_404_for_a_session_on_post_get_and_delete() {
    let keys = key_file("hijack");
    let proxy = Proxy::start(&["--api-key-file", &keys]).await;
    let a_auth = bearer(KEY_A);
    let mut alice = client(&proxy.mcp(), &[("authorization", &a_auth)]);
    alice.initialize("2025-11-25", json!({})).await;
    let sid = alice.session.clone().unwrap();

    let mut bob = client(&proxy.mcp(), &[("x-api-key", KEY_B)]);
    bob.session = Some(sid.clone());
    bob.version = "2025-11-25".into();
    let r = bob
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 404, "POST with another key's session");
    let r = bob
        .http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "GET with another key's session");
    assert_eq!(
        bob.delete(&proxy.mcp()).await.status(),
        404,
        "DELETE with another key's session"
    );
    // The owner is unaffected.
    let r = alice
        .call(json!(2), "echo", json!({"message": "still mine"}))
        .await;
    assert_eq!(text_of(&r), "still mine");
    assert_eq!(alice.delete(&proxy.mcp()).await.status(), 200);
    assert_eq!(proxy.health().await["auth"], "api-key");
    proxy.stop().await;
}

#[tokio::test]
async fn another_key_cannot_post_to_a_legacy_session() {
    let keys = key_file("legacy");
    let proxy = Proxy::start(&["--api-key-file", &keys]).await;
    let resp = http_with(&[("x-api-key", KEY_A)])
        .get(format!("{}/sse", proxy.base()))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = SseStream::new(resp);
    let endpoint = stream.next().await.unwrap().data;
    let url = format!("{}{endpoint}", proxy.base());
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let r = http_with(&[("x-api-key", KEY_B)])
        .post(&url)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another key's legacy session");
    let r = http_with(&[("x-api-key", KEY_A)])
        .post(&url)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer = stream.next_json().await;
    assert_eq!(answer["id"], 0);
    proxy.stop().await;
}

#[tokio::test]
async fn sessions_per_principal_are_capped_with_429() {
    let keys = key_file("cap");
    let proxy = Proxy::start(&["--api-key-file", &keys, "--max-sessions-per-principal", "1"]).await;
    let mut a1 = client(&proxy.mcp(), &[("x-api-key", KEY_A)]);
    a1.initialize("2025-11-25", json!({})).await;
    let a2 = client(&proxy.mcp(), &[("x-api-key", KEY_A)]);
    let r = a2
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let mut b = client(&proxy.mcp(), &[("x-api-key", KEY_B)]);
    b.initialize("2025-11-25", json!({})).await;
    proxy.stop().await;
}

#[tokio::test]
async fn modern_clients_get_one_child_per_principal() {
    let keys = key_file("modern");
    let proxy = Proxy::start(&["--api-key-file", &keys]).await;
    let a = [("x-api-key", KEY_A)];
    let b = [("x-api-key", KEY_B)];
    let r = modern(
        &proxy,
        &a,
        modern_call(1, "set_state", json!({"value": "alice's secret"})),
    )
    .await;
    assert_eq!(text_of(&r), "ok");
    let r = modern(&proxy, &b, modern_call(2, "get_state", json!({}))).await;
    assert_eq!(text_of(&r), "", "bob must not read alice's state");
    let r = modern(&proxy, &a, modern_call(3, "get_state", json!({}))).await;
    assert_eq!(text_of(&r), "alice's secret", "alice keeps her child");
    let pa = text_of(&modern(&proxy, &a, modern_call(4, "pid", json!({}))).await);
    let pb = text_of(&modern(&proxy, &b, modern_call(5, "pid", json!({}))).await);
    assert_ne!(pa, pb);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_per_principal_children_are_stopped_and_the_next_request_starts_afresh() {
    let keys = key_file("idle-children");
    let proxy = Proxy::start(&["--api-key-file", &keys, "--session-idle-timeout", "1s"]).await;
    let a = [("x-api-key", KEY_A)];
    let b = [("x-api-key", KEY_B)];
    let r = modern(
        &proxy,
        &a,
        modern_call(1, "set_state", json!({"value": "v1"})),
    )
    .await;
    assert_eq!(text_of(&r), "ok");
    let pid = |r: Value| text_of(&r).parse::<u32>().unwrap();
    let pa = pid(modern(&proxy, &a, modern_call(2, "pid", json!({}))).await);
    let pb = pid(modern(&proxy, &b, modern_call(3, "pid", json!({}))).await);
    // Alice's child has a call in flight for longer than the idle timeout;
    // Bob's has nothing.
    let busy = modern(&proxy, &a, modern_call(4, "sleep", json!({"ms": 3000})));
    let watch = async {
        assert!(
            support::eventually(Duration::from_secs(5), || support::reaped(pb)).await,
            "bob's idle child {pb} was stopped and reaped"
        );
        assert!(support::alive(pa), "a child with a call in flight is kept");
    };
    let (r, ()) = tokio::join!(busy, watch);
    assert_eq!(text_of(&r), "slept 3000");
    assert!(
        support::eventually(Duration::from_secs(5), || support::reaped(pa)).await,
        "alice's child {pa} was stopped once idle"
    );
    // The next request starts a fresh child: a new process, no old state.
    let r = modern(&proxy, &a, modern_call(5, "get_state", json!({}))).await;
    assert_eq!(text_of(&r), "");
    let pa2 = pid(modern(&proxy, &a, modern_call(6, "pid", json!({}))).await);
    assert_ne!(pa2, pa);
    assert!(support::alive(pa2));
    proxy.stop().await;
    assert!(
        support::eventually(STEP, || support::reaped(pa2)).await,
        "shutdown stops the fresh child"
    );
}

#[tokio::test]
async fn a_principals_modern_child_takes_one_of_its_session_slots_until_reaped() {
    let keys = key_file("child-slots");
    let proxy = Proxy::start(&[
        "--api-key-file",
        &keys,
        "--max-sessions-per-principal",
        "1",
        "--session-idle-timeout",
        "1s",
    ])
    .await;
    let a = [("x-api-key", KEY_A)];
    let pa: u32 = text_of(&modern(&proxy, &a, modern_call(1, "pid", json!({}))).await)
        .parse()
        .unwrap();
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let r = client(&proxy.mcp(), &a).post(&init).await;
    assert_eq!(
        r.status(),
        429,
        "alice's one slot is her 2026-07-28 child's"
    );
    // Another principal is not affected.
    let mut bob = client(&proxy.mcp(), &[("x-api-key", KEY_B)]);
    bob.initialize("2025-11-25", json!({})).await;
    // Once her idle child is stopped, the slot is hers again.
    assert!(support::eventually(Duration::from_secs(5), || support::reaped(pa)).await);
    let mut alice = client(&proxy.mcp(), &a);
    alice.initialize("2025-11-25", json!({})).await;
    proxy.stop().await;
}

// ---------- JWT ----------

#[tokio::test]
async fn jwts_are_checked_for_signature_algorithm_and_every_claim() {
    let (rsa, rsa_public) = rsa();
    let (ec1, ed1) = (ec("ec-1"), ed("ed-1"));
    let (jwks, set) = jwks_server(vec![rsa.jwk.clone(), ec1.jwk.clone(), ed1.jwk.clone()]).await;
    let url = jwks.url("/certs");
    let proxy = Proxy::start(&[
        "--jwt-jwks-url",
        &url,
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        AUD,
        "--auth-failure-limit",
        "0",
    ])
    .await;
    assert!(
        support::eventually(STEP, || jwks.hits() == 1).await,
        "JWKS fetched at start"
    );
    let status = |token: String| {
        let proxy = &proxy;
        async move {
            let v = bearer(&token);
            probe_status(proxy, &[("authorization", &v)]).await
        }
    };
    for s in [rsa, &ec1, &ed1] {
        assert_eq!(
            status(sign(s, &claims("alice"))).await,
            400,
            "valid {:?}",
            s.alg
        );
    }
    let mut c = claims("alice");
    c["exp"] = json!(now() - 30);
    assert_eq!(
        status(sign(&ec1, &c)).await,
        400,
        "expired within the 60 s leeway"
    );
    c["exp"] = json!(now() - 120);
    assert_eq!(status(sign(&ec1, &c)).await, 401, "expired");
    let mut c = claims("alice");
    c["nbf"] = json!(now() + 600);
    assert_eq!(status(sign(&ec1, &c)).await, 401, "not yet valid");
    let mut c = claims("alice");
    c["iss"] = json!("https://evil.example.com");
    assert_eq!(status(sign(&ed1, &c)).await, 401, "wrong issuer");
    let mut c = claims("alice");
    c["aud"] = json!("https://other.example.com/mcp");
    assert_eq!(status(sign(&ed1, &c)).await, 401, "wrong audience");
    let mut c = claims("alice");
    c["aud"] = json!(["https://other.example.com", AUD]);
    assert_eq!(status(sign(&ed1, &c)).await, 400, "audience in an array");
    let mut c = claims("alice");
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(status(sign(&ed1, &c)).await, 401, "no sub");

    // Bad signature: another key under a known kid.
    let impostor = ec("ec-1");
    assert_eq!(
        status(sign(&impostor, &claims("alice"))).await,
        401,
        "bad signature"
    );
    // Tampered payload: alice's signature over bob's claims.
    let good = sign(&ec1, &claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("bob").to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(status(tampered).await, 401, "tampered payload");
    // alg: none, with and without a signature part.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("alice").to_string().as_bytes());
    assert_eq!(
        status(format!("{none_header}.{payload}.")).await,
        401,
        "alg none"
    );
    assert_eq!(
        status(format!("{none_header}.{payload}.e30")).await,
        401,
        "alg none signed"
    );
    // Algorithm confusion: HS256 keyed with the RSA public key.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let confused = encode(
        &h,
        &claims("alice"),
        &EncodingKey::from_secret(rsa_public).unwrap(),
    )
    .unwrap();
    assert_eq!(status(confused).await, 401, "HS256 with the RSA public key");

    // Unknown kid: one refetch finds a key added since; more unknown kids cost nothing.
    let ec2 = ec("ec-2");
    set.lock().unwrap().push(ec2.jwk.clone());
    assert_eq!(
        status(sign(&ec2, &claims("alice"))).await,
        400,
        "new key found by a refetch"
    );
    assert_eq!(jwks.hits(), 2, "refetched once");
    let ec3 = ec("ec-3");
    set.lock().unwrap().push(ec3.jwk.clone());
    for _ in 0..5 {
        assert_eq!(
            status(sign(&ec3, &claims("alice"))).await,
            401,
            "within the refetch interval"
        );
    }
    assert_eq!(jwks.hits(), 2, "no refetch per request");
    assert_eq!(proxy.health().await["auth"], "jwt");
    proxy.stop().await;
}

#[tokio::test]
async fn cloudflare_access_header_with_bearer_fallback() {
    let ed1 = ed("cf-1");
    let (jwks, _) = jwks_server(vec![ed1.jwk.clone()]).await;
    let url = jwks.url("/cdn-cgi/access/certs");
    let aud_tag = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
    let proxy = Proxy::start(&[
        "--jwt-jwks-url",
        &url,
        "--jwt-issuer",
        "https://team.cloudflareaccess.com",
        "--jwt-audience",
        aud_tag,
        "--jwt-header",
        "cf-access-jwt-assertion",
    ])
    .await;
    let c = json!({"sub":"7335d417-61da-459d-899c-0a01c76a2f94","email":"alice@example.com",
        "iss":"https://team.cloudflareaccess.com","aud":[aud_tag],"exp":now()+600,"iat":now(),"type":"app"});
    let token = sign(&ed1, &c);
    assert_eq!(
        probe_status(&proxy, &[("cf-access-jwt-assertion", &token)]).await,
        400
    );
    let b = bearer(&token);
    assert_eq!(
        probe_status(&proxy, &[("authorization", &b)]).await,
        400,
        "bearer fallback"
    );
    // A service token (machine to machine): an empty sub, its client id in
    // common_name. Without either, the token names nobody.
    let service = json!({"sub":"","common_name":"88bf3b6d86161464f6509f7219099e57.access",
        "iss":"https://team.cloudflareaccess.com","aud":[aud_tag],"exp":now()+600,"iat":now(),"type":"app"});
    assert_eq!(
        probe_status(
            &proxy,
            &[("cf-access-jwt-assertion", &sign(&ed1, &service))]
        )
        .await,
        400,
        "a service token authenticates"
    );
    let nobody =
        json!({"sub":"","iss":"https://team.cloudflareaccess.com","aud":[aud_tag],"exp":now()+600});
    assert_eq!(
        probe_status(&proxy, &[("cf-access-jwt-assertion", &sign(&ed1, &nobody))]).await,
        401,
        "a token without sub or common_name"
    );
    let other = sign(&ed("cf-1"), &c);
    let r = probe(&proxy, &[("cf-access-jwt-assertion", &other)]).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_is_refused_to_another_subject_and_to_a_key() {
    let ec1 = ec("ec-1");
    let (jwks, _) = jwks_server(vec![ec1.jwk.clone()]).await;
    let url = jwks.url("/jwks");
    let proxy = Proxy::start(&[
        "--jwt-jwks-url",
        &url,
        "--jwt-audience",
        AUD,
        "--api-key",
        KEY_A,
    ])
    .await;
    let alice = bearer(&sign(&ec1, &claims("alice")));
    let bob = bearer(&sign(&ec1, &claims("bob")));
    let mut a = client(&proxy.mcp(), &[("authorization", &alice)]);
    a.initialize("2025-11-25", json!({})).await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    for (who, headers) in [
        ("another subject", vec![("authorization", bob.as_str())]),
        ("an API key", vec![("x-api-key", KEY_A)]),
    ] {
        let mut other = client(&proxy.mcp(), &headers);
        other.session = a.session.clone();
        other.version = a.version.clone();
        assert_eq!(other.post(&list).await.status(), 404, "{who}");
        assert_eq!(other.delete(&proxy.mcp()).await.status(), 404, "{who}");
    }
    assert_eq!(a.request(json!(2), "tools/list", json!({})).await.len(), 1);
    assert_eq!(proxy.health().await["auth"], "api-key+jwt");
    proxy.stop().await;
}

#[tokio::test]
async fn hs256_secret_file_and_required_scope() {
    let dir = temp_dir("hs256");
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    std::fs::write(dir.join("secret"), secret).unwrap();
    let proxy = Proxy::start(&[
        "--jwt-secret-file",
        dir.join("secret").to_str().unwrap(),
        "--jwt-audience",
        AUD,
        "--required-scope",
        "mcp:tools",
        "--auth-server",
        "https://auth.example.com",
        "--public-url",
        "https://mcp.example.com",
    ])
    .await;
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let mut c = claims("alice");
    c["scope"] = json!("openid mcp:tools");
    let ok = bearer(&encode(&Header::new(Algorithm::HS256), &c, &key).unwrap());
    assert_eq!(probe_status(&proxy, &[("authorization", &ok)]).await, 400);
    // Regression from review: `exp` at u64::MAX overflowed the cache's
    // expiry check on the second use (a panic in debug builds).
    c["exp"] = json!(u64::MAX);
    let forever = bearer(&encode(&Header::new(Algorithm::HS256), &c, &key).unwrap());
    for _ in 0..2 {
        assert_eq!(
            probe_status(&proxy, &[("authorization", &forever)]).await,
            400
        );
    }
    let unscoped = bearer(&encode(&Header::new(Algorithm::HS256), &claims("alice"), &key).unwrap());
    let r = probe(&proxy, &[("authorization", &unscoped)]).await;
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains(r#"scope="mcp:tools""#), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    // An asymmetric token cannot stand in for the secret.
    let rs = bearer(&sign(&rsa().0, &c));
    assert_eq!(probe_status(&proxy, &[("authorization", &rs)]).await, 401);
    proxy.stop().await;
}

// ---------- RFC 9728 ----------

#[tokio::test]
async fn protected_resource_metadata_and_a_challenge_on_every_401() {
    let proxy = Proxy::start(&[
        "--api-key",
        KEY_A,
        "--auth-server",
        "https://auth.example.com",
        "--public-url",
        "https://mcp.example.com",
    ])
    .await;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = http
            .get(format!("{}{path}", proxy.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://auth.example.com"])
        );
    }
    let want =
        r#"resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#;
    let base = proxy.base();
    let requests = [
        http.post(proxy.mcp())
            .header("content-type", "application/json")
            .body("{}"),
        http.get(proxy.mcp()).header("accept", "text/event-stream"),
        http.delete(proxy.mcp()).header("mcp-session-id", "x"),
        http.get(format!("{base}/sse")),
        http.post(format!("{base}/messages?sessionId=x")).body("{}"),
        http.post(proxy.mcp())
            .header("authorization", "Bearer wrong-key-wrong-key")
            .body("{}"),
    ];
    for req in requests {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{}", r.url());
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains(want), "{challenge}");
    }
    proxy.stop().await;
}

// ---------- abuse ----------

#[tokio::test]
async fn the_eleventh_failure_gets_429_while_another_ip_still_works() {
    let (marker, program, args) = spawn_marker("ratelimit");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start_child(
        &["--api-key", KEY_A, "--trusted-proxy", "127.0.0.1/32"],
        &program,
        &argv,
    )
    .await;
    let attacker = [("x-forwarded-for", "203.0.113.1")];
    for i in 0..10 {
        let s = probe_status(&proxy, &[attacker[0], ("x-api-key", "guess-guess-guess-1")]).await;
        assert_eq!(s, 401, "failure {}", i + 1);
    }
    let r = probe(&proxy, &[attacker[0], ("x-api-key", "guess-guess-guess-1")]).await;
    assert_eq!(r.status(), 429, "the eleventh failure");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Locked out even with the right key: guessing must not go on.
    assert_eq!(
        probe_status(&proxy, &[attacker[0], ("x-api-key", KEY_A)]).await,
        429
    );
    let other = ("x-forwarded-for", "203.0.113.2");
    assert_eq!(
        probe_status(&proxy, &[other, ("x-api-key", KEY_A)]).await,
        400
    );
    // Nothing was spawned for any of it.
    assert!(!marker.exists(), "a refused request started a child");
    proxy.stop().await;
}

/// Regression: past the failure limit, every refused request still wrote
/// an audit record (and a log line), so one client without a key decided
/// how fast the audit file grew: 13,250 records in 5 s on one connection
/// of a debug build. They are sampled now, with a count of the skipped.
#[tokio::test]
async fn refusals_past_the_failure_limit_cannot_flood_the_audit_log() {
    let dir = temp_dir("audit-flood");
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let proxy = Proxy::start(&["--api-key", KEY_A, "--audit-log", audit.to_str().unwrap()]).await;
    let started = std::time::Instant::now();
    let mut limited = 0u64;
    for _ in 0..400 {
        if probe_status(&proxy, &[("x-api-key", "guess-guess-guess-1")]).await == 429 {
            limited += 1;
        }
    }
    let took = started.elapsed().as_secs();
    assert!(limited >= 380, "{limited} of 400 were rate-limited");
    proxy.stop().await;
    let audit = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<Value> = audit
        .lines()
        .filter(|l| l.contains("rate limited"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A burst of 20, then 2 a second.
    assert!(
        (records.len() as u64) <= 20 + 2 * (took + 1),
        "{} records for {limited} rate-limited refusals in {took} s",
        records.len()
    );
    let skipped: u64 = records
        .iter()
        .map(|r| r["not_recorded"].as_u64().unwrap_or(0))
        .sum();
    // Every refusal is either recorded or counted in a later record (the
    // last few may be counted by none, if no record followed them).
    assert!(records.len() as u64 + skipped <= limited);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn browsers_are_refused_cross_site_and_refusals_spawn_no_child() {
    let (marker, program, args) = spawn_marker("browsers");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start_child(
        &[
            "--api-key",
            KEY_A,
            "--allow-origin",
            "https://app.example.com",
        ],
        &program,
        &argv,
    )
    .await;
    let http = reqwest::Client::new();
    let sse = format!("{}/sse", proxy.base());
    // An <img src=/sse> from any page: no Origin, but fetch metadata.
    let r = http
        .get(&sse)
        .header("sec-fetch-site", "cross-site")
        .header("x-api-key", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(http.get(&sse).send().await.unwrap().status(), 401);
    assert!(!marker.exists(), "no child for refused requests");
    // Error responses carry CORS headers for an allowed origin.
    let r = http
        .post(proxy.mcp())
        .header("origin", "https://app.example.com")
        .header("sec-fetch-site", "cross-site")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Mcp-Session-Id")
    );
    let r = http
        .request(reqwest::Method::OPTIONS, proxy.mcp())
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    for h in [
        "authorization",
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "mcp-method",
        "mcp-name",
    ] {
        assert!(allowed.contains(h), "{h}");
    }
    // Health needs no key but gets the Host check.
    let health = format!("{}/health", proxy.base());
    assert_eq!(http.get(&health).send().await.unwrap().status(), 200);
    let r = http
        .get(&health)
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    proxy.stop().await;
}

/// On a public bind with `--allowed-host`, probes and scrapers name the
/// address they connected to (kubelet: `Host: <pod IP>:<port>`; the image's
/// `mcp-proxy healthcheck`: `127.0.0.1:<port>`). An IP address cannot come
/// from DNS rebinding, so `/health`, `/ready` and `/metrics` take it; a name
/// that was not allowed is still refused, and the MCP endpoint still wants
/// an allowed name.
#[tokio::test]
async fn probes_that_name_an_address_pass_the_host_check_on_a_public_bind() {
    let proxy = Proxy::start(&[
        "--host",
        "0.0.0.0",
        "--allowed-host",
        "mcp.example.com",
        "--api-key",
        "probe-test-key-0123456789",
    ])
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str, host: &str| {
        http.get(format!("{}{path}", proxy.base()))
            .header("host", host)
            .send()
    };
    for path in ["/health", "/ready", "/metrics"] {
        for host in [
            "10.1.2.3:8080",
            "127.0.0.1:8080",
            "[fd00::7]:8080",
            "10.1.2.3",
        ] {
            let r = get(path, host).await.unwrap();
            assert_eq!(r.status(), 200, "{path} with Host {host}");
        }
        assert_eq!(get(path, "mcp.example.com").await.unwrap().status(), 200);
        for host in ["attacker.example", "10.1.2.3.nip.io:8080", "localhost:8080"] {
            let r = get(path, host).await.unwrap();
            assert_eq!(r.status(), 403, "{path} with Host {host}");
        }
    }
    let r = http
        .post(proxy.mcp())
        .header("host", "10.1.2.3:8080")
        .header("authorization", "Bearer probe-test-key-0123456789")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the MCP endpoint keeps the allowed names");
    proxy.stop().await;
}

// ---------- forward auth ----------

fn whoami(outage: Arc<AtomicBool>) -> Handler {
    Arc::new(move |parts| {
        if outage.load(Ordering::SeqCst) {
            return (500, "{}".into());
        }
        match parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer coda-token-alice") => (
                200,
                json!({"loginId":"alice@example.com","name":"Alice"}).to_string(),
            ),
            Some("Bearer coda-token-bob") => {
                (200, json!({"loginId":"bob@example.com"}).to_string())
            }
            Some("Bearer coda-token-carol") => {
                (200, json!({"loginId":"carol@example.com"}).to_string())
            }
            _ => (401, json!({"message":"Unauthorized"}).to_string()),
        }
    })
}

/// A proxy behind 127.0.0.1 as a trusted proxy, checking tokens with a
/// forward-auth endpoint that takes 500 ms an answer.
async fn slow_forward_auth() -> (Fake, Proxy) {
    let fake = Fake::start_slow(
        whoami(Arc::new(AtomicBool::new(false))),
        Duration::from_millis(500),
    )
    .await;
    let url = fake.url("/apis/v1/whoami");
    let proxy = Proxy::start(&[
        "--forward-auth-url",
        &url,
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .await;
    (fake, proxy)
}

/// Regression from review: failures were counted only once their check
/// had ended, so guesses sent all at once to a slow forward-auth endpoint
/// (here 500 ms an answer) all reached it: 40 at once gave 40 upstream
/// calls. Checks in progress now hold the failures they may spend.
#[tokio::test]
async fn guesses_sent_at_once_are_bounded_like_guesses_in_a_row() {
    let (fake, proxy) = slow_forward_auth().await;
    let guesses = (0..40).map(|i| {
        let proxy = &proxy;
        async move {
            let token = format!("Bearer guess-{i}");
            probe_status(
                proxy,
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("authorization", &token),
                ],
            )
            .await
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(refused + limited, 40, "{statuses:?}");
    assert!(
        fake.hits() <= 10,
        "{} guesses reached the endpoint",
        fake.hits()
    );
    assert_eq!(refused, fake.hits());
    proxy.stop().await;
}

/// A client's burst with a token not cached yet is one lookup, and is not
/// taken for guessing: 20 requests at once with one good token, to an
/// endpoint that takes 500 ms, all get in on one call.
#[tokio::test]
async fn a_burst_with_one_new_token_is_one_lookup_and_no_guessing() {
    let (fake, proxy) = slow_forward_auth().await;
    let burst = (0..20).map(|_| {
        probe_status(
            &proxy,
            &[
                ("x-forwarded-for", "203.0.113.10"),
                ("authorization", "Bearer coda-token-alice"),
            ],
        )
    });
    let statuses = futures_util::future::join_all(burst).await;
    assert!(statuses.iter().all(|&s| s == 400), "{statuses:?}");
    assert_eq!(fake.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn forward_auth_accepts_caches_isolates_and_fails_closed() {
    let outage = Arc::new(AtomicBool::new(false));
    let fake = Fake::start(whoami(outage.clone())).await;
    let url = fake.url("/apis/v1/whoami");
    let proxy = Proxy::start(&[
        "--forward-auth-url",
        &url,
        "--forward-auth-principal",
        "/loginId",
        "--forward-auth-ttl",
        "60s",
    ])
    .await;
    let alice = [("authorization", "Bearer coda-token-alice")];
    assert_eq!(probe_status(&proxy, &alice).await, 400);
    assert_eq!(probe_status(&proxy, &alice).await, 400);
    assert_eq!(fake.hits(), 1, "the answer is cached");
    assert_eq!(
        probe_status(&proxy, &[("authorization", "Bearer coda-token-eve")]).await,
        401
    );
    assert_eq!(probe_status(&proxy, &[]).await, 401);

    let mut a = client(&proxy.mcp(), &alice);
    a.initialize("2025-11-25", json!({})).await;
    let mut b = client(&proxy.mcp(), &[("authorization", "Bearer coda-token-bob")]);
    b.session = a.session.clone();
    b.version = a.version.clone();
    let r = b
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), 404, "bob cannot use alice's session");

    // The upstream fails: a new credential is refused with 503, never accepted.
    outage.store(true, Ordering::SeqCst);
    let r = probe(&proxy, &[("authorization", "Bearer coda-token-carol")]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        probe_status(&proxy, &alice).await,
        400,
        "cached answers still hold"
    );
    proxy.stop().await;

    // Nothing listening at all: 503 as well.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&["--forward-auth-url", &format!("http://{dead}/whoami")]).await;
    assert_eq!(
        probe_status(&proxy, &[("authorization", "Bearer coda-token-alice")]).await,
        503
    );
    proxy.stop().await;
}

// ---------- the real binary: env, argv, stdin, logs, audit ----------

#[tokio::test]
async fn no_credential_reaches_the_child_the_logs_or_the_audit_file() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = temp_dir("leak");
    let secret_file = dir.join("secret");
    let hs_secret = "jwt-secret-that-must-not-leak-anywhere-0001";
    std::fs::write(&secret_file, hs_secret).unwrap();
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let api_key = "proxy-key-that-must-not-leak-42";
    let script = format!(
        "env > {d}/env.$$; printf '%s\\n' \"$0\" \"$@\" > {d}/argv.$$; tee {d}/stdin.$$ | \"$0\"",
        d = dir.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["--port", "0", "--log-level", "debug", "--jwt-audience", AUD])
        .arg("--jwt-secret-file")
        .arg(&secret_file)
        .arg("--audit-log")
        .arg(&audit)
        .args(["--", "sh", "-c", &script, &support::example("everything")])
        .env("MCP_PROXY_API_KEY", api_key)
        .env("MCP_PROXY_SHUTDOWN_GRACE", "1s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = String::new();
    let base = loop {
        let line = rx.recv_timeout(STEP).expect("the proxy logs its address");
        logs.push_str(&line);
        logs.push('\n');
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break format!("http://{}", rest.split('/').next().unwrap());
        }
    };
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(hs_secret.as_bytes()).unwrap(),
    )
    .unwrap();
    let by_key = bearer(api_key);
    let mut c = client(&format!("{base}/mcp"), &[("authorization", &by_key)]);
    c.initialize("2025-11-25", json!({})).await;
    let r = c.call(json!(1), "echo", json!({"message": "hello"})).await;
    assert_eq!(text_of(&r), "hello");
    let by_jwt = bearer(&token);
    let mut j = client(&format!("{base}/mcp"), &[("authorization", &by_jwt)]);
    j.initialize("2025-11-25", json!({})).await;
    let wrong = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("authorization", "Bearer not-the-key-but-still-secret-9")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(c.delete(&format!("{base}/mcp")).await.status(), 200);
    // Both sessions' children have dumped what they were given.
    let dump = |prefix: &str| {
        let mut all = String::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        all
    };
    let dumps = |prefix: &str| {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    assert!(
        support::eventually(STEP, || dump("stdin.").contains("tools/call")
            && dumps("env.") >= 2)
        .await,
        "both children dumped argv, env and stdin"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "proxy exits on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    logs.extend(rx.try_iter().map(|l| l + "\n"));

    let (env, argv, stdin) = (dump("env."), dump("argv."), dump("stdin."));
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !env.contains("MCP_PROXY_"),
        "the proxy's settings reached the child:\n{env}"
    );
    for secret in [
        api_key,
        hs_secret,
        token.as_str(),
        "not-the-key-but-still-secret-9",
    ] {
        for (what, text) in [
            ("env", &env),
            ("argv", &argv),
            ("stdin", &stdin),
            ("logs", &logs),
            ("audit", &audit),
        ] {
            assert!(!text.contains(secret), "a credential reached the {what}");
        }
    }
    for event in [
        "auth.success",
        "auth.failure",
        "session.create",
        "session.delete",
        "child.spawn",
        "child.exit",
    ] {
        assert!(
            audit.contains(&format!(r#""event":"{event}""#)),
            "{event} missing from the audit log:\n{audit}"
        );
    }
    for line in audit.lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        assert!(v["ts_ms"].is_u64());
    }
    assert!(audit.contains(r#""principal":"alice""#) && audit.contains(r#""method":"jwt""#));
    assert!(audit.contains(r#""principal":"key-1""#));
}

// ---------- tools/call audit ----------

/// The `tools.call` records of an audit file.
fn tool_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|v| v["event"] == "tools.call")
        .collect()
}

#[tokio::test]
async fn every_tools_call_is_audited_once_with_its_outcome_and_never_its_arguments() {
    let dir = temp_dir("tool-audit");
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let keys = key_file("tool-audit");
    let proxy = Proxy::start(&[
        "--api-key-file",
        &keys,
        "--audit-log",
        audit.to_str().unwrap(),
        "--request-timeout",
        "2s",
    ])
    .await;
    // Session era, answers on SSE streams.
    let mut a = client(&proxy.mcp(), &[("x-api-key", KEY_A)]);
    a.initialize("2025-11-25", json!({})).await;
    let r = a
        .call(json!(1), "echo", json!({"message": "argument-secret-1"}))
        .await;
    assert_eq!(text_of(&r), "argument-secret-1");
    let r = a.call(json!(2), "echo", json!({})).await;
    assert_eq!(r["result"]["isError"], true);
    let r = a
        .call(json!(3), "no_such_tool", json!({"x": "argument-secret-2"}))
        .await;
    assert_eq!(r["error"]["code"], -32602);
    let r = a.call(json!(4), "sleep", json!({"ms": 10000})).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    // Session era, JSON answers; one call cancelled by its client.
    let mut b = client(&proxy.mcp(), &[("x-api-key", KEY_B)]);
    b.accept = "application/json";
    b.initialize("2025-11-25", json!({})).await;
    let r = b.call(json!(5), "echo", json!({"message": "x"})).await;
    assert_eq!(text_of(&r), "x");
    let mut slow = client(&proxy.mcp(), &[("x-api-key", KEY_B)]);
    slow.session = b.session.clone();
    slow.version = b.version.clone();
    slow.accept = "application/json";
    let waiting =
        tokio::spawn(async move { slow.call(json!(6), "sleep", json!({"ms": 10000})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = b
        .post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6}}))
        .await;
    assert_eq!(r.status(), 202);
    let r = tokio::time::timeout(STEP, waiting).await.unwrap().unwrap();
    assert_eq!(r["error"]["code"], -32800);
    // 2026-07-28.
    let r = modern(
        &proxy,
        &[("x-api-key", KEY_A)],
        modern_call(7, "echo", json!({"message": "argument-secret-3"})),
    )
    .await;
    assert_eq!(text_of(&r), "argument-secret-3");
    // 2024-11-05 (legacy SSE).
    let resp = http_with(&[("x-api-key", KEY_B)])
        .get(format!("{}/sse", proxy.base()))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::new(resp);
    let url = format!("{}{}", proxy.base(), stream.next().await.unwrap().data);
    let legacy = http_with(&[("x-api-key", KEY_B)]);
    for body in [
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"message":"argument-secret-4"}}}),
    ] {
        let r = legacy.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(stream.next_json().await["id"], body["id"]);
    }

    assert!(
        support::eventually(STEP, || tool_records(&audit).len() >= 8).await,
        "eight tools.call records: {:?}",
        tool_records(&audit)
    );
    proxy.stop().await;
    let records = tool_records(&audit);
    let summary: Vec<(String, String, String, Option<i64>)> = records
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap().to_string(),
                r["tool"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["code"].as_i64(),
            )
        })
        .collect();
    let expected = [
        ("alice", "echo", "ok", None),
        ("alice", "echo", "tool_error", None),
        ("alice", "no_such_tool", "error", Some(-32602)),
        ("alice", "sleep", "timeout", Some(-32000)),
        ("bob", "echo", "ok", None),
        ("bob", "sleep", "cancelled", None),
        ("alice", "echo", "ok", None),
        ("bob", "echo", "ok", None),
    ];
    let expected: Vec<(String, String, String, Option<i64>)> = expected
        .iter()
        .map(|(p, t, o, c)| (p.to_string(), t.to_string(), o.to_string(), *c))
        .collect();
    assert_eq!(summary, expected, "exactly one record per call, in order");
    for r in &records {
        assert_eq!(r["method"], "api-key");
        assert!(r["duration_ms"].is_u64());
    }
    let sleep = &records[3];
    assert!(sleep["duration_ms"].as_u64().unwrap() >= 1900, "{sleep}");
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        "argument-secret-1",
        "argument-secret-2",
        "argument-secret-3",
        "argument-secret-4",
        KEY_A,
        KEY_B,
    ] {
        assert!(!text.contains(secret), "{secret} reached the audit log");
    }
}

/// Regression: a child could have its own error audited as the proxy's
/// timeout: an error with the proxy's timeout code (-32000 for the session
/// era, -32603 for 2026-07-28) and a message starting "request timed out
/// after" was read as one by its text. Only the proxy's own deadline makes
/// an outcome "timeout" now; the child's error is an "error" with its code.
#[tokio::test]
async fn a_child_error_that_reads_like_the_proxys_timeout_is_audited_as_an_error() {
    let dir = temp_dir("fake-timeout-audit");
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let proxy = Proxy::start(&["--audit-log", audit.to_str().unwrap()]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let fake = |code: i64| {
        json!({ "lines": [format!(
            r#"{{"jsonrpc":"2.0","id":$ID,"error":{{"code":{code},"message":"request timed out after 5 ms"}}}}"#
        )] })
    };
    let r = c.call(json!(1), "misbehave_emit", fake(-32000)).await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    let r = modern(&proxy, &[], modern_call(2, "misbehave_emit", fake(-32603))).await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(
        support::eventually(STEP, || tool_records(&audit).len() >= 2).await,
        "two tools.call records: {:?}",
        tool_records(&audit)
    );
    proxy.stop().await;
    let got: Vec<(String, Value)> = tool_records(&audit)
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_string(),
                r["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("error".to_string(), json!(-32000)),
            ("error".to_string(), json!(-32603))
        ]
    );
}

/// Regression (review): a call whose client had gone when the child's
/// answer came (its JSON request's connection closed, its SSE stream
/// dropped: neither cancels a 2025-era call) was recorded `ok` like one
/// that reached its client. Now the record says `"delivered": false`.
#[tokio::test]
async fn an_answer_no_client_was_there_to_take_is_audited_undelivered() {
    let dir = temp_dir("undelivered-audit");
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let proxy = Proxy::start(&["--audit-log", audit.to_str().unwrap()]).await;
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let r = c.call(json!(1), "echo", json!({"message": "here"})).await;
    assert_eq!(text_of(&r), "here");
    // The client gives up on each call 300 ms in; the child answers at 1.5 s.
    for (id, accept) in [
        (2, "application/json"),
        (3, "application/json, text/event-stream"),
    ] {
        let gone = c
            .sibling(accept)
            .post_request(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                "params":{"name":"sleep","arguments":{"ms":1500}}}))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        let gone = match gone {
            Ok(resp) => resp.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(gone.is_err(), "call {id} should have been given up on");
        assert!(
            support::eventually(STEP, || tool_records(&audit).len() as i64 >= id).await,
            "a record for call {id}: {:?}",
            tool_records(&audit)
        );
    }
    proxy.stop().await;
    let got: Vec<(String, String, Value)> = tool_records(&audit)
        .iter()
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["delivered"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, Value)> = [
        ("echo", "ok", json!(true)),
        ("sleep", "ok", json!(false)),
        ("sleep", "ok", json!(false)),
    ]
    .iter()
    .map(|(t, o, d)| (t.to_string(), o.to_string(), d.clone()))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_multi_round_trip_call_is_audited_once_per_request() {
    let dir = temp_dir("mrtr-audit");
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let proxy = Proxy::start(&["--audit-log", audit.to_str().unwrap()]).await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"roots": {}}});
    let first = modern(
        &proxy,
        &[],
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"roots","arguments":{},"_meta":meta}}),
    )
    .await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let retry = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
        "name":"roots","arguments":{},"_meta":meta,
        "inputResponses":{"input":{"roots":[{"uri":"file:///root-secret"}]}},
        "requestState":first["result"]["requestState"]}});
    let second = modern(&proxy, &[], retry).await;
    assert_eq!(second["result"]["resultType"], "complete", "{second}");
    proxy.stop().await;
    let outcomes: Vec<(String, String)> = tool_records(&audit)
        .iter()
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("roots".to_string(), "input_required".to_string()),
            ("roots".to_string(), "ok".to_string())
        ]
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("root-secret"));
}
