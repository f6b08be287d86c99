//! The attacker's side of authentication: names the proxy is handed by a
//! token or a forward-auth endpoint, and where a presented credential may
//! travel. Real binaries and real sockets on 127.0.0.1; every wait bounded.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{Proxy, STEP};
use tokio_util::sync::CancellationToken;

const ISS: &str = "https://issuer.example.com";
const AUD: &str = "https://mcp.example.com/mcp";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An Ed25519 signing key: its JWK (with `kid`) and a signer of claims.
struct Ed {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Ed {
    fn new(kid: &str, seed: u8) -> Ed {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
        Ed {
            kid: kid.into(),
            key: EncodingKey::from_ed_der(sk.to_pkcs8_der().unwrap().as_bytes()),
            jwk: json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":x}),
        }
    }

    fn sign(&self, claims: Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        encode(&h, &claims, &self.key).unwrap()
    }
}

fn claims(iss: &str, aud: &str) -> Value {
    json!({"sub": "alice", "iss": iss, "aud": aud, "exp": now() + 600, "iat": now()})
}

/// An HTTP server on port 0 that answers every request with `answer`
/// and remembers each request's `Authorization`.
struct Upstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Upstream {
    async fn start(status: u16, answer: Value) -> Upstream {
        Upstream::start_slow(status, answer, std::time::Duration::ZERO).await
    }

    /// One that takes `delay` over every answer.
    async fn start_slow(status: u16, answer: Value, delay: std::time::Duration) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (s, h, t) = (seen.clone(), hits.clone(), stop.clone());
        let body = answer.to_string();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    c = listener.accept() => c.unwrap().0,
                    _ = t.cancelled() => return,
                };
                let (s, h, body) = (s.clone(), h.clone(), body.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            h.fetch_add(1, Ordering::SeqCst);
                            if let Some(v) = req.headers().get("authorization") {
                                s.lock()
                                    .unwrap()
                                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                            }
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.clone()),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            async move {
                                tokio::time::sleep(delay).await;
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
        Upstream {
            addr,
            seen,
            hits,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The status of a POST of `{}` to `url` with `headers`: 400 means the
/// credential was accepted (authentication comes before the body is read).
async fn post_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body("{}");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    tokio::time::timeout(STEP, req.send())
        .await
        .expect("answered in time")
        .unwrap()
        .status()
        .as_u16()
}

/// POST `{}` with `Authorization: Bearer token`.
async fn probe(proxy: &Proxy, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    post_status(&proxy.mcp(), &[("authorization", &bearer)]).await
}

/// A proxy taking JWTs of [`ISS`] for [`AUD`] signed by a key of the set
/// `jwks` serves, then asking `whoami` about any other bearer credential.
async fn jwt_then_forward(jwks: &Upstream, whoami: &Upstream) -> Proxy {
    Proxy::start(&[
        "--jwt-jwks-url",
        &jwks.url("/jwks"),
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        AUD,
        "--forward-auth-url",
        &whoami.url("/whoami"),
    ])
    .await
}

/// Regression: with JWT and forward auth combined, a bearer JWT the JWT
/// check did not accept was sent on to the forward-auth endpoint, an API
/// of somebody else's: a token of this proxy's own issuer went there when
/// the JWKS could not be fetched (a live token: the endpoint could replay
/// it here), when it was signed by the issuer's key for another audience
/// or had expired, and when its key was not known yet. The old code made
/// 4 calls to the endpoint below, each with the token. A token of this
/// proxy's issuer (signed by one of its keys, or naming its issuer or
/// audience) now goes nowhere else; other tokens still reach the endpoint.
#[tokio::test]
async fn a_token_of_this_proxys_issuer_never_reaches_the_forward_auth_endpoint() {
    let ours = Ed::new("k1", 1);
    let rotated = Ed::new("k2", 2);
    let theirs = Ed::new("elsewhere", 3);
    let whoami = Upstream::start(401, json!({"message": "Unauthorized"})).await;
    let seen = whoami.seen.clone();

    // The JWKS cannot be fetched: whose token it is cannot be told.
    let down = Upstream::start(500, json!({})).await;
    let proxy = jwt_then_forward(&down, &whoami).await;
    let live = ours.sign(claims(ISS, AUD));
    assert_eq!(probe(&proxy, &live).await, 503);
    proxy.stop().await;

    let jwks = Upstream::start(200, json!({"keys": [ours.jwk]})).await;
    let proxy = jwt_then_forward(&jwks, &whoami).await;
    assert_eq!(probe(&proxy, &live).await, 400, "the token itself is good");
    // Signed by the issuer's key, for another of its audiences.
    let other_audience = ours.sign(claims(ISS, "https://other.example.com"));
    assert_eq!(probe(&proxy, &other_audience).await, 401);
    // Expired.
    let mut old = claims(ISS, AUD);
    old["exp"] = json!(now() - 3600);
    assert_eq!(probe(&proxy, &ours.sign(old)).await, 401);
    // Signed with a key the JWKS does not list yet (a rotation).
    assert_eq!(probe(&proxy, &rotated.sign(claims(ISS, AUD))).await, 401);
    let leaked: Vec<String> = seen.lock().unwrap().clone();
    assert!(
        leaked.is_empty(),
        "{} of this issuer's tokens reached the forward-auth endpoint",
        leaked.len()
    );

    // Somebody else's JWT and an opaque token are the endpoint's to judge.
    let foreign = theirs.sign(claims("https://api.example.net", "api"));
    assert_eq!(probe(&proxy, &foreign).await, 401);
    assert_eq!(probe(&proxy, "opaque-upstream-token").await, 401);
    let asked: Vec<String> = seen.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![
            format!("Bearer {foreign}"),
            "Bearer opaque-upstream-token".to_string()
        ]
    );
    assert_eq!(whoami.hits.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}

/// POST `{}` with `X-API-Key: key` and `X-Forwarded-For: xff`.
async fn probe_key_from(proxy: &Proxy, key: &str, xff: &str) -> u16 {
    post_status(
        &proxy.mcp(),
        &[("x-api-key", key), ("x-forwarded-for", xff)],
    )
    .await
}

/// Regression: behind a trusted proxy that writes the client's address
/// with its port (`203.0.113.5:4321`, as some load balancers do), that
/// entry did not parse and was skipped, so the client IP became whatever
/// the client itself had written to the left: each guess with a new
/// made-up address had a fresh failure budget (the old code answered all
/// 30 guesses below with 401, none with 429). Such an entry is read with
/// its port now, and an entry that is not an address at all ends the
/// walk: nothing left of it is believed.
#[tokio::test]
async fn a_client_cannot_pick_its_address_left_of_an_entry_with_a_port() {
    let proxy = Proxy::start(&[
        "--api-key",
        "the-real-key-0123456789",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--auth-failure-limit",
        "5",
    ])
    .await;
    for (tag, real) in [
        ("v4", "203.0.113.5:4321"),
        ("v6", "[2001:db8::5]:4321"),
        ("garbage", "unknown"),
    ] {
        let mut statuses = Vec::new();
        for i in 0..10 {
            let xff = format!("198.51.100.{i}, {real}");
            statuses.push(probe_key_from(&proxy, &format!("guess-{tag}-{i}-xxxxxxxx"), &xff).await);
        }
        assert!(
            statuses.iter().filter(|&&s| s == 429).count() >= 5,
            "{tag}: every made-up address had a budget of its own: {statuses:?}"
        );
    }
    proxy.stop().await;
}

/// Regression: with API keys and forward auth combined, a wrong key sent
/// as a bearer token went on to the forward-auth endpoint, and while that
/// endpoint failed (a 5xx, a timeout, or a 429 of its own rate limit,
/// which a flood of garbage tokens brings about) the answer was 503 and no
/// failure was counted: keys could be guessed without limit, 503 meaning
/// "not a key" and 400 "a key". The old code answered all 20 guesses
/// below with 503. A credential the key check refused counts as a failure
/// whatever forward auth could say about it.
#[tokio::test]
async fn a_failing_forward_auth_endpoint_does_not_lift_the_limit_on_key_guesses() {
    let whoami = Upstream::start(429, json!({"message": "slow down"})).await;
    let proxy = Proxy::start(&[
        "--api-key",
        "the-real-key-0123456789",
        "--forward-auth-url",
        &whoami.url("/whoami"),
        "--auth-failure-limit",
        "5",
    ])
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(probe(&proxy, &format!("guessed-key-{i:04}-xxxxxxxx")).await);
    }
    assert!(
        statuses.iter().filter(|&&s| s == 429).count() >= 10,
        "key guesses were not limited: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 503 || s == 429),
        "{statuses:?}"
    );
    proxy.stop().await;

    // A forward-auth user's own retries during the outage, with no key
    // configured, are not taken for guesses: no key check refused them.
    let proxy = Proxy::start(&[
        "--forward-auth-url",
        &whoami.url("/whoami"),
        "--auth-failure-limit",
        "5",
    ])
    .await;
    for _ in 0..10 {
        assert_eq!(probe(&proxy, "a-users-upstream-token").await, 503);
    }
    proxy.stop().await;
}

/// Regression from review: a forward-auth endpoint that refuses a bad
/// credential with a client error other than 401/403 (400 "malformed
/// token", 404 "no such user": APIs do) was taken as "unavailable": 503,
/// and no failure counted, so credentials could be guessed without limit
/// (the old code answered all 20 guesses below with 503, each one reaching
/// the endpoint). A 4xx other than 408 and 429 is the endpoint's refusal
/// of the request it was sent, which carried nothing but the credential:
/// 401, counted.
#[tokio::test]
async fn a_forward_auth_endpoint_refusing_with_another_4xx_is_a_refusal_and_counted() {
    for status in [400, 404] {
        let whoami = Upstream::start(status, json!({"message": "invalid token"})).await;
        let proxy = Proxy::start(&[
            "--forward-auth-url",
            &whoami.url("/whoami"),
            "--auth-failure-limit",
            "5",
        ])
        .await;
        let mut statuses = Vec::new();
        for i in 0..20 {
            statuses.push(probe(&proxy, &format!("guess-{i:04}")).await);
        }
        assert!(
            statuses.iter().all(|&s| s == 401 || s == 429),
            "{status}: {statuses:?}"
        );
        assert!(
            statuses.iter().filter(|&&s| s == 429).count() >= 10,
            "{status}: guesses were not limited: {statuses:?}"
        );
        assert!(
            whoami.hits.load(Ordering::SeqCst) <= 10,
            "{status}: {} guesses reached the endpoint",
            whoami.hits.load(Ordering::SeqCst)
        );
        proxy.stop().await;
    }
    // A 408 or 429 from the endpoint says nothing of the credential: 503.
    let whoami = Upstream::start(408, json!({})).await;
    let proxy = Proxy::start(&["--forward-auth-url", &whoami.url("/whoami")]).await;
    assert_eq!(probe(&proxy, "a-users-upstream-token").await, 503);
    proxy.stop().await;
}

/// Regression: each named server had a failed-authentication limiter of
/// its own, so a client had `--auth-failure-limit` guesses a minute per
/// server (and a fresh budget after every reload): with three servers,
/// the old code answered 9 of the 12 guesses below with 401 before the
/// first 429. `[auth]` is global, and so is its limiter now.
#[tokio::test]
async fn one_failure_budget_per_client_for_every_named_server() {
    use mcp_sidecar::config::Args;
    use mcp_sidecar::config_file;
    use mcp_sidecar::servers::{self, ServerSet};
    let dir = support::process::tempdir("named-budget");
    let everything = support::example("everything");
    let toml: String = ["a", "b", "c"]
        .iter()
        .map(|n| format!("[[server]]\nname = \"{n}\"\ncommand = [{everything:?}]\n"))
        .collect();
    std::fs::write(dir.join("proxy.toml"), toml).unwrap();
    let args = Args {
        config: Some(dir.join("proxy.toml").to_string_lossy().into_owned()),
        api_key: vec!["the-real-key-0123456789".into()],
        auth_failure_limit: Some("3".into()),
        ..Args::default()
    };
    let config = config_file::load(args, &|_| None).unwrap();
    let set = ServerSet::new(config, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(servers::run(listener, set, token.clone()));

    let mut statuses = Vec::new();
    for i in 0..12 {
        let server = ["a", "b", "c"][i % 3];
        let key = format!("guessed-key-{i:04}-xxxxxxxx");
        let url = format!("{base}/servers/{server}/mcp");
        statuses.push(post_status(&url, &[("x-api-key", &key)]).await);
    }
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    assert_eq!(refused, 3, "guesses checked across servers: {statuses:?}");
    token.cancel();
    tokio::time::timeout(STEP, task)
        .await
        .expect("the proxy stops in time")
        .unwrap();
}

/// Regression: a request is checked as two keys when it carries both
/// `Authorization: Bearer` and `X-API-Key`, but it cost one failure, so
/// a guesser had twice `--auth-failure-limit` key guesses a minute (the
/// old code let 6 such requests, 12 guesses, through with 401 below). Each
/// distinct key refused counts now.
/// The statuses of `n` requests to a proxy with one key and
/// `--auth-failure-limit limit`, request `i` carrying the bearer token and
/// the `X-API-Key` that `guess(i)` gives.
async fn key_guesses(limit: &str, n: usize, guess: impl Fn(usize) -> (String, String)) -> Vec<u16> {
    let proxy = Proxy::start(&[
        "--api-key",
        "the-real-key-0123456789",
        "--auth-failure-limit",
        limit,
    ])
    .await;
    let mut statuses = Vec::new();
    for i in 0..n {
        let (bearer, key) = guess(i);
        let bearer = format!("Bearer {bearer}");
        let headers = [("authorization", &*bearer), ("x-api-key", &*key)];
        statuses.push(post_status(&proxy.mcp(), &headers).await);
    }
    proxy.stop().await;
    statuses
}

#[tokio::test]
async fn two_keys_in_one_request_are_two_guesses() {
    let statuses = key_guesses("6", 8, |i| {
        (
            format!("guess-a-{i:04}-xxxxxxxx"),
            format!("guess-b-{i:04}-xxxxxxxx"),
        )
    })
    .await;
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    assert_eq!(refused, 3, "requests of two guesses checked: {statuses:?}");
    // The same key twice is one guess.
    let same = key_guesses("4", 6, |i| {
        let key = format!("guess-{i:04}-xxxxxxxxxx");
        (key.clone(), key)
    })
    .await;
    assert_eq!(same.iter().filter(|&&s| s == 401).count(), 4, "{same:?}");
}

/// Regression: on a dual-stack listener (`--host ::`) an IPv4 peer is
/// `::ffff:a.b.c.d`, which no IPv4 `--trusted-proxy` contained, so the
/// reverse proxy's `X-Forwarded-For` was ignored and every client behind
/// it shared the reverse proxy's failure budget: one guesser locked
/// everybody out (the old code answered the other client below with 429).
/// Addresses are compared in their canonical form now.
#[tokio::test]
async fn a_trusted_ipv4_proxy_is_trusted_on_a_dual_stack_listener() {
    use argh::FromArgs;
    use mcp_sidecar::config::{Args, Config};
    let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("skipped: no IPv6 on this host");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let example = support::example("everything");
    let argv = [
        "--api-key",
        "the-real-key-0123456789",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--auth-failure-limit",
        "3",
        "--",
        example.as_str(),
    ];
    let args = Args::from_args(&["mcp-proxy"], &argv).unwrap();
    let config = Config::from_args(args, &|_| None).unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(mcp_sidecar::proxy::run(listener, config, token.clone()));
    let url = format!("http://127.0.0.1:{port}/mcp");
    let guess = |client: &'static str, i: usize| {
        let url = url.clone();
        async move {
            let key = format!("guess-{client}-{i:04}-xxxxxxxx");
            post_status(&url, &[("x-api-key", &key), ("x-forwarded-for", client)]).await
        }
    };
    let mut attacker = Vec::new();
    for i in 0..5 {
        attacker.push(guess("198.51.100.66", i).await);
    }
    assert_eq!(attacker, [401, 401, 401, 429, 429]);
    assert_eq!(
        guess("203.0.113.7", 0).await,
        401,
        "another client behind the same reverse proxy is not locked out"
    );
    token.cancel();
    let _ = tokio::time::timeout(STEP, task)
        .await
        .expect("stops in time");
}

/// Regression: requests presenting the same credential at once held one
/// failure between them while in progress, as promised, but each spent a
/// failure of its own when refused: a client's burst of 10 requests with
/// one stale key (an HTTP/2 client's parallel calls) emptied its IP's
/// budget, and the old code answered the client's next, corrected
/// attempt, and everybody else's behind the same address, with 429. A
/// burst of one credential now spends one failure.
#[tokio::test]
async fn a_burst_with_one_stale_key_spends_one_failure() {
    let (_fake, proxy) = {
        let whoami =
            Upstream::start_slow(401, json!({}), std::time::Duration::from_millis(300)).await;
        let proxy = Proxy::start(&[
            "--api-key",
            "the-real-key-0123456789",
            "--forward-auth-url",
            &whoami.url("/whoami"),
            "--auth-failure-limit",
            "10",
        ])
        .await;
        (whoami, proxy)
    };
    let burst = (0..10).map(|_| probe(&proxy, "a-stale-key-0123456789"));
    let statuses = futures_util::future::join_all(burst).await;
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(
        probe(&proxy, "the-real-key-0123456789").await,
        400,
        "the corrected key gets in"
    );
    for i in 0..5 {
        assert_eq!(
            probe(&proxy, &format!("another-guess-{i}-xxxxxxxx")).await,
            401
        );
    }
    proxy.stop().await;
}

/// Regression: the failure limiter is per address, and it refused a
/// request before looking at its credential, so a guesser behind the same
/// address as a user (one office's NAT, one reverse proxy without
/// `--trusted-proxy`) locked the user out: the old code answered the
/// user's next request, with a JWT verified a moment before, with 429. A
/// JWT the proxy has verified and still remembers (by its SHA-256) cannot
/// be a guess, and skips the limiter.
#[tokio::test]
async fn a_guesser_at_the_same_address_does_not_lock_out_a_verified_jwt() {
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    let dir = support::process::tempdir("verified-jwt");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let proxy = Proxy::start(&[
        "--api-key",
        "the-real-key-0123456789",
        "--jwt-secret-file",
        secret.to_str().unwrap(),
        "--jwt-audience",
        AUD,
        "--auth-failure-limit",
        "3",
    ])
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let alice = encode(&Header::new(Algorithm::HS256), &claims(ISS, AUD), &key).unwrap();
    assert_eq!(probe(&proxy, &alice).await, 400, "alice gets in");
    let mut guesses = Vec::new();
    for i in 0..5 {
        guesses.push(probe(&proxy, &format!("guessed-key-{i:04}-xxxxxxxx")).await);
    }
    assert_eq!(guesses, [401, 401, 401, 429, 429]);
    assert_eq!(probe(&proxy, &alice).await, 400, "alice is not locked out");
    // A token not verified before is still behind the limit.
    let mut other = claims(ISS, AUD);
    other["sub"] = json!("bob");
    let bob = encode(&Header::new(Algorithm::HS256), &other, &key).unwrap();
    assert_eq!(probe(&proxy, &bob).await, 429);
    proxy.stop().await;
}

/// Regression: a principal name had no length bound. A forward-auth
/// answer could name one of up to 1 MiB (the answer's own bound), kept in
/// each of up to 10,000 cache entries and in every session, log and audit
/// line of its principal; a JWT's `sub` was bounded only by the header.
/// The old code accepted both names below. Up to 512 bytes are taken.
#[tokio::test]
async fn a_principal_name_over_512_bytes_is_refused() {
    for (bytes, want) in [(512, 400), (513, 503)] {
        let name = "a".repeat(bytes);
        let whoami = Upstream::start(200, json!({"login": name})).await;
        let proxy = Proxy::start(&[
            "--forward-auth-url",
            &whoami.url("/whoami"),
            "--forward-auth-principal",
            "/login",
        ])
        .await;
        assert_eq!(
            probe(&proxy, "opaque-token-0123456789").await,
            want,
            "{bytes} bytes"
        );
        proxy.stop().await;
    }
    let ours = Ed::new("k1", 1);
    let jwks = Upstream::start(200, json!({"keys": [ours.jwk]})).await;
    let proxy = Proxy::start(&[
        "--jwt-jwks-url",
        &jwks.url("/jwks"),
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        AUD,
    ])
    .await;
    for (bytes, want) in [(512, 400), (513, 401)] {
        let mut c = claims(ISS, AUD);
        c["sub"] = json!("s".repeat(bytes));
        assert_eq!(
            probe(&proxy, &ours.sign(c)).await,
            want,
            "sub of {bytes} bytes"
        );
    }
    proxy.stop().await;
}

/// Regression: a request carrying a credential that authenticates (a
/// JWT) and a second, different one was authenticated by whichever
/// checked out, and the other cost nothing: the limiter counts refusals
/// only, and a remembered JWT skipped it altogether. So anyone with a
/// valid token could guess API keys without limit beside it, and learn
/// each answer from the principal the request got (a session opened
/// with a right guess belongs to the key, and the token alone then gets
/// 404 on it): all 6 guesses below were accepted (400 from the probe's
/// body), none refused. A credential a request presents that is not
/// good refuses the request now, and counts as a failure.
#[tokio::test]
async fn a_valid_credential_cannot_carry_unlimited_key_guesses_beside_it() {
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    const KEY: &str = "the-real-key-0123456789";
    let dir = support::process::tempdir("guess-beside");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let jwt = encode(
        &Header::new(Algorithm::HS256),
        &claims(ISS, AUD),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let bearer_jwt = format!("Bearer {jwt}");
    let guesses: Vec<String> = (0..6)
        .map(|i| format!("guessed-key-{i:04}-xxxxxxxx"))
        .collect();
    // Three ways to carry a guess beside a good credential.
    type Build = fn(&str, &str, &str) -> Vec<(&'static str, String)>;
    let cases: [(&str, Build); 3] = [
        ("X-API-Key beside a bearer JWT", |bearer_jwt, _, guess| {
            vec![
                ("authorization", bearer_jwt.into()),
                ("x-api-key", guess.into()),
            ]
        }),
        ("a bearer beside a good X-API-Key", |_, _, guess| {
            vec![
                ("x-api-key", KEY.into()),
                ("authorization", format!("Bearer {guess}")),
            ]
        }),
        ("a bearer beside the JWT header", |_, jwt, guess| {
            vec![
                ("cf-access-jwt-assertion", jwt.into()),
                ("authorization", format!("Bearer {guess}")),
            ]
        }),
    ];
    for (what, build) in cases {
        let proxy = Proxy::start(&[
            "--api-key",
            KEY,
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--jwt-audience",
            AUD,
            "--jwt-header",
            "cf-access-jwt-assertion",
            "--auth-failure-limit",
            "3",
        ])
        .await;
        // The good credentials work on their own (and the JWT is remembered).
        assert_eq!(
            post_status(&proxy.mcp(), &[("authorization", &bearer_jwt)]).await,
            400
        );
        assert_eq!(
            post_status(&proxy.mcp(), &[("cf-access-jwt-assertion", &jwt)]).await,
            400
        );
        assert_eq!(post_status(&proxy.mcp(), &[("x-api-key", KEY)]).await, 400);
        let mut statuses = Vec::new();
        for guess in &guesses {
            let headers = build(&bearer_jwt, &jwt, guess);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            statuses.push(post_status(&proxy.mcp(), &headers).await);
        }
        assert!(
            statuses.iter().all(|&s| s == 401 || s == 429) && statuses.ends_with(&[429, 429]),
            "{what}: {statuses:?}"
        );
        proxy.stop().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An endpoint on port 0 answering every request with the status in
/// `status` (changed by the test) and `{"login":"bob"}`.
async fn switchable(status: Arc<std::sync::atomic::AtomicU16>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let status = status.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(br#"{"login":"bob"}"#),
                    ));
                    *r.status_mut() =
                        hyper::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Regression: while the forward-auth endpoint or the JWKS failed, every
/// request that needed it wrote its own warning, and anyone decides how
/// many requests there are (no failure is counted for a 503). With the
/// debug binary and a forward-auth endpoint that refuses connections,
/// 200 requests with made-up bearer tokens wrote 200 `forward auth
/// unavailable` warnings (an endpoint answering 500 two per request, with
/// `forward-auth endpoint failed`), and a JWKS that cannot be fetched one
/// `JWT signing keys unavailable` per JWT, drowning the rest of the log
/// (a full log queue drops lines). Each outage is now one warning when it
/// starts, a reminder at most once a minute, and one line when it ends.
#[tokio::test]
async fn an_auth_endpoint_outage_is_logged_once_not_per_request() {
    use support::process::{proxy_command, spawn_logged, terminate_and_drain, wait_for_port};
    let status = Arc::new(std::sync::atomic::AtomicU16::new(500));
    let whoami = switchable(status.clone()).await;
    // A JWKS endpoint that refuses connections.
    let jwks = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (proxy, lines) = spawn_logged(proxy_command().args([
        "--port",
        "0",
        "--forward-auth-url",
        &format!("http://{whoami}/whoami"),
        "--forward-auth-principal",
        "/login",
        "--jwt-jwks-url",
        &format!("http://{jwks}/jwks"),
        "--jwt-audience",
        "mcp",
        "--",
        &support::example("everything"),
    ]));
    let mut log = Vec::new();
    let port = wait_for_port(&lines, STEP, &mut log).unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let http = reqwest::Client::new();
    let post = |token: String| {
        http.post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
    };
    const N: usize = 30;
    for i in 0..N {
        // An opaque token goes to forward auth, a JWT to the JWKS.
        let opaque = post(format!("made-up-{i}")).await.unwrap().status();
        let jwt = post(format!(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln{i}"
        ))
        .await
        .unwrap()
        .status();
        assert_eq!((opaque.as_u16(), jwt.as_u16()), (503, 503), "request {i}");
    }
    status.store(200, Ordering::SeqCst);
    let back = post("made-up-ok".into()).await.unwrap().status().as_u16();
    assert!(
        back != 503 && back != 401,
        "the endpoint answers again: {back}"
    );
    terminate_and_drain(&proxy, &lines, STEP, &mut log);
    let text = log.join("\n");
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains(" WARN ")).collect();
    // At start: the JWKS could not be fetched. Then one per outage.
    assert!(warnings.len() <= 3, "{} warnings:\n{text}", warnings.len());
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("forward-auth endpoint unavailable"), 1, "{text}");
    assert_eq!(count("JWKS endpoint unavailable"), 1, "{text}");
    let again: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("forward-auth endpoint answers again"))
        .collect();
    assert_eq!(again.len(), 1, "{text}");
    assert!(again[0].contains(&format!("failures={N}")), "{}", again[0]);
    drop(proxy);
}
