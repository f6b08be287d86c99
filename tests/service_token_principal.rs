//! Regression: a JWT whose `sub` is literally `service-token:X` was the same
//! principal as the Cloudflare Access service token X (whose principal was
//! made by prefixing its `common_name` with `service-token:` under the JWT
//! login method): it reached the service token's sessions, its 2026-07-28
//! child and its stored credentials. A service token is now a login method
//! of its own, and a JWT `sub` with that prefix names nobody.
//!
//! The attacker here holds a token signed by the configured key (a user of
//! the same issuer, or a second issuer sharing the audience) and chooses
//! its `sub`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mcp_sidecar::config::Args;
use mcp_sidecar::config_file;
use mcp_sidecar::servers::{self, ServerSet};
use mcp_sidecar::store::{KeyRing, Secret, SecretRef, Store, StoreKey};
use serde_json::{Value, json};
use support::process::tempdir;
use support::{Client, STEP, example, modern_call, text_of};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const AUD: &str = "mcp-test";
const CLIENT_ID: &str = "88bf3b6d86161464f6509f7219099e57.access";

/// An HS256 token for `AUD` with `claims` added.
fn token(extra: Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({"aud": AUD, "exp": now + 600, "iat": now});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// Cloudflare Access's service token: an empty `sub`, the client id in `common_name`.
fn service_token() -> String {
    token(json!({"sub": "", "common_name": CLIENT_ID}))
}

/// A user token whose `sub` spells the service token's principal.
fn forged() -> String {
    token(json!({"sub": format!("service-token:{CLIENT_ID}")}))
}

fn authed(url: &str, token: &str) -> Client {
    let mut c = Client::new(url);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    c.http = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    c
}

fn initialize_body() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

struct Running {
    base: String,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Named server `dump` (children write their environment to `dumps`)
/// behind HS256 JWTs, with `UPSTREAM_TOKEN` from the store when `store`.
async fn start(dir: &std::path::Path, store: Option<Arc<Store>>) -> Running {
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let (store_section, secret_env) = match &store {
        Some(_) => (
            format!("[store]\npath = {:?}\n", dir.join("secrets.db")),
            ", UPSTREAM_TOKEN = { secret = \"tok\" }",
        ),
        None => (String::new(), ""),
    };
    let toml = format!(
        r#"
{store_section}
[[server]]
name = "dump"
command = ["sh", "-c", "env > \"$DUMP_DIR/$$.env\"; exec \"$0\" \"$@\"", {everything:?}]
env = {{ DUMP_DIR = {dumps:?}{secret_env} }}
"#,
        everything = example("everything"),
    );
    std::fs::write(dir.join("proxy.toml"), toml).unwrap();
    std::fs::write(dir.join("jwt"), SECRET).unwrap();
    let args = Args {
        config: Some(dir.join("proxy.toml").to_string_lossy().into_owned()),
        jwt_secret_file: Some(dir.join("jwt").to_string_lossy().into_owned()),
        jwt_audience: vec![AUD.into()],
        ..Args::default()
    };
    let config = config_file::load(args, &|_| None).unwrap();
    let set = ServerSet::new(config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(servers::run(listener, set, token.clone()));
    Running { base, token, task }
}

impl Running {
    fn url(&self) -> String {
        format!("{}/servers/dump/mcp", self.base)
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the proxy stops in time")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_sub_spelling_a_service_token_gets_neither_its_session_nor_its_child() {
    let dir = tempdir("sessions");
    let p = start(&dir, None).await;
    let url = p.url();

    // The service token opens a session and leaves state in its 2026-07-28 child.
    let mut svc = authed(&url, &service_token());
    svc.initialize("2025-11-25", json!({})).await;
    let r = modern_call(
        &svc.http,
        &url,
        "set_state",
        json!({"value": "the service token's state"}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // The forged user presents the service token's session id.
    let mut user = authed(&url, &forged());
    user.session = svc.session.clone();
    user.version = svc.version.clone();
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let status = user.post(&list).await.status().as_u16();
    assert_ne!(
        status, 200,
        "the forged sub reached the service token's session"
    );
    // And asks the per-principal child for its state.
    let r = modern_call(&user.http, &url, "get_state", json!({})).await;
    if r.status() == 200 {
        let state = text_of(&r.json().await.unwrap());
        assert_ne!(
            state, "the service token's state",
            "the forged sub reached the service token's 2026-07-28 child"
        );
    }
    // The service token still has both.
    assert_eq!(
        svc.request(json!(2), "tools/list", json!({})).await.len(),
        1
    );
    let r = modern_call(&svc.http, &url, "get_state", json!({})).await;
    assert_eq!(
        text_of(&r.json().await.unwrap()),
        "the service token's state"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_sub_spelling_a_service_token_never_gets_its_stored_credential() {
    let dir = tempdir("store");
    let store = Arc::new(
        Store::open(
            dir.join("secrets.db").to_str().unwrap(),
            KeyRing::parse(&StoreKey::generate_base64()).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    );
    let p = start(&dir, Some(store.clone())).await;
    let url = p.url();

    // The service token has no credential yet: the 403 names its principal
    // as the store does, and the operator stores one under that name.
    let svc = authed(&url, &service_token());
    let r = svc.post(&initialize_body()).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap().to_string();
    let name = msg
        .split(|c: char| {
            c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '(' || c == ')'
        })
        .find(|w| w.ends_with(CLIENT_ID))
        .unwrap_or_else(|| panic!("the refusal names the service token: {msg}"))
        .to_string();
    store
        .set(
            &SecretRef::new(&name, "dump", "tok"),
            &Secret::new(b"service-cred-6627".to_vec()),
        )
        .await
        .unwrap();
    // What an earlier version told operators to store for the service
    // token, under the name a JWT `sub` could spell.
    store
        .set(
            &SecretRef::new(&format!("jwt:service-token:{CLIENT_ID}"), "dump", "tok"),
            &Secret::new(b"legacy-cred-4410".to_vec()),
        )
        .await
        .unwrap();
    let mut svc = authed(&url, &service_token());
    svc.initialize("2025-11-25", json!({})).await;

    // The forged user, on both eras: refused or served without the
    // credential, never with it.
    let user = authed(&url, &forged());
    let _ = user.post(&initialize_body()).await;
    let _ = modern_call(&user.http, &url, "pid", json!({})).await;
    let with = |value: &str| {
        std::fs::read_dir(dir.join("dumps"))
            .unwrap()
            .filter(|e| {
                std::fs::read_to_string(e.as_ref().unwrap().path())
                    .unwrap()
                    .contains(&format!("UPSTREAM_TOKEN={value}\n"))
            })
            .count()
    };
    assert_eq!(
        with("service-cred-6627"),
        1,
        "only the service token's own child holds its credential (stored as {name})"
    );
    assert_eq!(
        with("legacy-cred-4410"),
        0,
        "a sub spelling the old service token name reached its old row"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
