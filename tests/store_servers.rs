//! Named servers behind one proxy: isolation, reload under live sessions,
//! and per-user credentials from the store at spawn.

mod store_pg;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_sidecar::config::Args;
use mcp_sidecar::config_file::{self, ServersConfig};
use mcp_sidecar::servers::{self, ServerSet};
use mcp_sidecar::store::{KeyRing, Secret, SecretRef, Store, StoreKey};
use serde_json::{Value, json};
use support::process::tempdir;
use support::{Client, STEP, example, modern_call, text_of};
use tokio_util::sync::CancellationToken;

/// A new store at `db` under a fresh key.
async fn fresh_store(db: &std::path::Path) -> Arc<Store> {
    Arc::new(
        Store::open(
            db.to_str().unwrap(),
            KeyRing::parse(&StoreKey::generate_base64()).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    )
}

/// Loads `toml` as a --config file would be.
fn load(dir: &std::path::Path, toml: &str) -> Result<ServersConfig, String> {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, toml).unwrap();
    let args = Args {
        config: Some(path.to_string_lossy().into_owned()),
        ..Args::default()
    };
    config_file::load(args, &|_| None).map_err(|e| e.to_string())
}

struct Running {
    base: String,
    set: Arc<ServerSet>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: ServersConfig, store: Option<Arc<Store>>) -> Running {
    let set = ServerSet::new(config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(servers::run(listener, set.clone(), token.clone()));
    Running {
        base,
        set,
        token,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the proxy stops in time")
            .unwrap();
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = tokio::time::timeout(STEP, reqwest::get(format!("{}{path}", self.base)))
            .await
            .unwrap()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn client(&self, server: &str) -> Client {
        Client::new(&format!("{}/servers/{server}/mcp", self.base))
    }
}

async fn eventually_async<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn everything_toml(name: &str, extra: &str) -> String {
    format!(
        "[[server]]\nname = \"{name}\"\ncommand = [{:?}]\n{extra}\n",
        example("everything")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_server_does_not_stop_another_from_serving() {
    let dir = tempdir("crash");
    let toml = format!(
        "{}\n[[server]]\nname = \"crashy\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\nmode = \"shared\"\n[server.limits]\nrestart_max_backoff = \"200ms\"\nshutdown_grace = \"1s\"\n",
        everything_toml("good", "")
    );
    let p = start(load(&dir, &toml).unwrap(), None).await;

    // The crashing one answers its clients with errors while the other
    // serves every request in between.
    let crashy = p.client("crashy");
    let mut c = p.client("good");
    c.initialize("2025-11-25", json!({})).await;
    for i in 0..5 {
        let r = crashy
            .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        let text = r.text().await.unwrap();
        assert!(text.contains("\"error\""), "{text}");
        let r = c
            .call(json!(i), "echo", json!({"message": "still here"}))
            .await;
        assert!(text_of(&r).contains("still here"), "{r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, health) = p.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["servers"]["good"]["status"], "ok", "{health}");
    assert_eq!(health["servers"]["good"]["sessions"], 1, "{health}");
    assert_eq!(health["servers"]["crashy"]["mode"], "shared");
    // Ready while any server is; each has its own probe.
    assert_eq!(p.get("/ready").await.0, 200);
    assert_eq!(p.get("/servers/good/ready").await.0, 200);
    // Unknown servers and paths are 404 with a JSON-RPC body.
    let (status, body) = p.get("/servers/nope/mcp").await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    assert_eq!(p.get("/mcp").await.0, 404);
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_servers_under_live_sessions() {
    let dir = tempdir("reload");
    let p = start(load(&dir, &everything_toml("a", "")).unwrap(), None).await;
    let mut on_a = p.client("a");
    on_a.initialize("2025-11-25", json!({})).await;

    // Add b.
    let two = format!("{}{}", everything_toml("a", ""), everything_toml("b", ""));
    let report = p.set.reload(load(&dir, &two).unwrap()).unwrap();
    assert_eq!(report.added, vec!["b"]);
    assert!(report.changed.is_empty() && report.removed.is_empty());
    let mut on_b = p.client("b");
    on_b.initialize("2025-11-25", json!({})).await;
    assert!(text_of(&on_b.call(json!(1), "echo", json!({"message": "b1"})).await).contains("b1"));
    assert!(text_of(&on_a.call(json!(1), "echo", json!({"message": "a1"})).await).contains("a1"));

    // Change b: the live session stays on the old child, new ones get the new settings.
    let changed = format!(
        "{}{}",
        everything_toml("a", ""),
        everything_toml("b", "env = { RELOADED = \"1\" }")
    );
    let report = p.set.reload(load(&dir, &changed).unwrap()).unwrap();
    assert_eq!(report.changed, vec!["b"]);
    assert!(text_of(&on_b.call(json!(2), "echo", json!({"message": "b2"})).await).contains("b2"));
    let mut on_b2 = p.client("b");
    on_b2.initialize("2025-11-25", json!({})).await;

    // Remove a: its live session is served to the end, new ones get 404.
    let report = p
        .set
        .reload(load(&dir, &everything_toml("b", "env = { RELOADED = \"1\" }")).unwrap())
        .unwrap();
    assert_eq!(report.removed, vec!["a"]);
    assert!(text_of(&on_a.call(json!(2), "echo", json!({"message": "a2"})).await).contains("a2"));
    let fresh = p.client("a");
    let r = fresh
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(p.set.names(), vec!["b"]);
    let (_, health) = p.get("/health").await;
    assert!(health["retiring"].as_u64().unwrap() >= 2, "{health}");

    // When a's last session ends, the retired generation stops.
    let url = format!("{}/servers/a/mcp", p.base);
    assert!(on_a.delete(&url).await.status().is_success());
    assert!(
        eventually_async(|| async { p.get("/health").await.1["retiring"] == 1 }).await,
        "a was not retired after its last session"
    );
    // A configuration with an error is refused and changes nothing.
    assert!(load(&dir, "[[server]]\nname = \"b\"\n").is_err());
    let no_store = everything_toml("b", "env = { T = { secret = \"t\" } }");
    assert!(load(&dir, &no_store).is_err());
    assert!(text_of(&on_b2.call(json!(3), "echo", json!({"message": "b3"})).await).contains("b3"));
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression (review): a named server's routing read `Mcp-Session-Id`
/// its own way (the first copy, as written) where the app reads every copy
/// and comma-separated part, trimmed: `S, S` (how a client joins two
/// copies), `, S` or an empty copy before `S` named a session no
/// generation holds, so a session of the retiring generation was sent to
/// the current one, which answered 404, while one copy of `S` was served.
/// Now routing reads the header with the app's function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retiring_session_is_served_however_the_app_reads_its_header() {
    let dir = tempdir("retiring-header");
    let p = start(load(&dir, &everything_toml("b", "")).unwrap(), None).await;
    let mut c = p.client("b");
    c.initialize("2025-11-25", json!({})).await;
    let id = c.session.clone().unwrap();
    let changed = everything_toml("b", "env = { RELOADED = \"1\" }");
    let report = p.set.reload(load(&dir, &changed).unwrap()).unwrap();
    assert_eq!(report.changed, ["b"]);
    let post = |copies: Vec<String>, n: u64| {
        let mut r = c
            .http
            .post(&c.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2025-11-25");
        for v in copies {
            r = r.header("mcp-session-id", v);
        }
        let call = json!({"jsonrpc":"2.0","id":n,"method":"tools/call","params":{"name":"echo","arguments":{"message":format!("old {n}")}}});
        async move {
            let resp = tokio::time::timeout(STEP, r.json(&call).send())
                .await
                .unwrap()
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let served = [
        vec![id.clone()],
        vec![format!("{id}, {id}")],
        vec![format!(", {id}")],
        vec![format!("{id},")],
        vec![String::new(), id.clone()],
        vec![id.clone(), id.clone()],
    ];
    for (n, copies) in served.into_iter().enumerate() {
        let shown = format!("{copies:?}");
        let (status, text) = post(copies, n as u64).await;
        assert_eq!(status, 200, "{shown}: {text}");
        assert!(text.contains(&format!("old {n}")), "{shown}: {text}");
    }
    // Two different ids are refused, by whichever generation.
    let (status, text) = post(vec![format!("{id}, other")], 99).await;
    assert_eq!(status, 400, "{text}");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Captures every log line of this test binary (all levels).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let w = c.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .with_ansi(false)
            .init();
        c
    })
    .clone()
}

const K1: &str = "key-one-0123456789abcdef";
const K2: &str = "key-two-0123456789abcdef";
const K3: &str = "key-three-0123456789abcd";

/// A key file naming K1, K2 and K3 alpha, bravo and charlie: a server
/// that takes per-user secrets needs every key named.
fn named_keys(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("api-keys");
    std::fs::write(&path, format!("alpha: {K1}\nbravo: {K2}\ncharlie: {K3}\n")).unwrap();
    path
}

fn authed(url: &str, key: &str) -> Client {
    let mut c = Client::new(url);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {key}").parse().unwrap());
    c.http = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_principals_get_children_with_their_own_credentials_and_a_third_none() {
    let logs = capture_logs();
    let dir = tempdir("principals");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let keys = || KeyRing::parse(&std::fs::read_to_string(dir.join("key")).unwrap()).unwrap();
    std::fs::write(dir.join("key"), StoreKey::generate_base64()).unwrap();
    let store = Arc::new(
        Store::open(db.to_str().unwrap(), keys(), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    for (who, value) in [
        ("api-key:alpha", "alpha-cred-5521"),
        ("api-key:bravo", "bravo-cred-9034"),
    ] {
        store
            .set(
                &SecretRef::new(who, "dump", "tok"),
                &Secret::new(value.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    // A child that writes its environment to a file, then serves.
    let toml = dump_toml(&db, &dumps, named_keys(&dir).to_str().unwrap(), 1);
    let p = start(load(&dir, &toml).unwrap(), Some(store.clone())).await;
    let url = format!("{}/servers/dump/mcp", p.base);

    let mut one = authed(&url, K1);
    one.initialize("2025-11-25", json!({})).await;
    let mut two = authed(&url, K2);
    two.initialize("2025-11-25", json!({})).await;
    assert!(text_of(&one.call(json!(1), "echo", json!({"message": "x"})).await).contains('x'));

    // The third principal has no credential: a clear error, and no child.
    let three = authed(&url, K3);
    let r = three
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("api-key:charlie") && msg.contains("tok") && msg.contains("UPSTREAM_TOKEN"),
        "{msg}"
    );

    // A 2024-11-05 client without a credential: its stream is refused before any spawn.
    let r = tokio::time::timeout(
        STEP,
        three
            .http
            .get(format!("{}/servers/dump/sse", p.base))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status(), 403);
    let envs: Vec<String> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        envs.len(),
        2,
        "one child per principal with a credential, none for the third"
    );
    let with = |v: &str| {
        envs.iter()
            .filter(|e| e.contains(&format!("UPSTREAM_TOKEN={v}\n")))
            .count()
    };
    assert_eq!(with("alpha-cred-5521"), 1);
    assert_eq!(with("bravo-cred-9034"), 1);
    assert!(
        envs.iter()
            .all(|e| !(e.contains("alpha-cred") && e.contains("bravo-cred")))
    );
    p.stop().await;

    // Neither value is in any log line or in the store file; the reads were audited.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for v in ["alpha-cred-5521", "bravo-cred-9034"] {
        assert!(!text.contains(v), "{v} in the logs");
    }
    assert!(
        text.contains("read-for-child")
            && text.contains("api-key:alpha")
            && text.contains("missing"),
        "no audit lines"
    );
    // The tool call is audited with the server's name.
    assert!(
        text.lines().any(|l| l.contains(r#""event":"tools.call""#)
            && l.contains(r#""server":"dump""#)
            && l.contains(r#""principal":"alpha""#)),
        "no tools.call record naming the server"
    );
    drop(store);
    let file = std::fs::read(&db).unwrap();
    for v in ["alpha-cred-5521", "bravo-cred-9034"] {
        assert!(
            !file.windows(v.len()).any(|w| w == v.as_bytes()),
            "{v} in the store file"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid a 2026-07-28 caller's child reports.
async fn modern_pid(http: &reqwest::Client, url: &str) -> u32 {
    let r = modern_call(http, url, "pid", json!({})).await;
    assert_eq!(r.status(), 200);
    text_of(&r.json().await.unwrap()).parse().unwrap()
}

/// The environment dumped by the child `pid` (the dump is named by the
/// shell's pid, which `exec` hands to the server).
fn env_of(dumps: &std::path::Path, pid: u32) -> String {
    std::fs::read_to_string(dumps.join(format!("{pid}.env"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_clients_get_a_child_per_principal_with_their_own_stored_credentials() {
    let dir = tempdir("modern-principals");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let keys = KeyRing::parse(&StoreKey::generate_base64()).unwrap();
    let store = Arc::new(
        Store::open(db.to_str().unwrap(), keys, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    for (who, value) in [
        ("api-key:alpha", "alpha-cred-7731"),
        ("api-key:bravo", "bravo-cred-2208"),
    ] {
        store
            .set(
                &SecretRef::new(who, "dump", "tok"),
                &Secret::new(value.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    let toml = dump_toml(&db, &dumps, named_keys(&dir).to_str().unwrap(), 1);
    let p = start(load(&dir, &toml).unwrap(), Some(store.clone())).await;
    let url = format!("{}/servers/dump/mcp", p.base);
    let (one, two, three) = (
        authed(&url, K1).http,
        authed(&url, K2).http,
        authed(&url, K3).http,
    );
    let p1 = modern_pid(&one, &url).await;
    let p2 = modern_pid(&two, &url).await;
    assert_ne!(p1, p2, "one child per principal");
    assert_eq!(
        modern_pid(&one, &url).await,
        p1,
        "a principal keeps its child"
    );
    let (e1, e2) = (env_of(&dumps, p1), env_of(&dumps, p2));
    assert!(e1.contains("UPSTREAM_TOKEN=alpha-cred-7731\n") && !e1.contains("bravo"));
    assert!(e2.contains("UPSTREAM_TOKEN=bravo-cred-2208\n") && !e2.contains("alpha"));
    // The third principal has none: 403 with a JSON-RPC error naming what
    // is missing, and no child.
    let r = modern_call(&three, &url, "pid", json!({})).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("api-key:charlie") && msg.contains("tok") && msg.contains("UPSTREAM_TOKEN"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(&dumps).unwrap().count(),
        2,
        "no third child"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_header_reaches_only_that_callers_child_when_configured() {
    let dir = tempdir("header");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let toml = format!(
        r#"
[[server]]
name = "hdr"
command = ["sh", "-c", "env > \"$DUMP_DIR/$$.env\"; exec \"$0\" \"$@\"", {everything:?}]
env = {{ DUMP_DIR = {dumps:?} }}
credential_headers = {{ UPSTREAM_TOKEN = "X-Upstream-Token" }}
"#,
        everything = example("everything"),
    );
    let p = start(load(&dir, &toml).unwrap(), None).await;
    let url = format!("{}/servers/hdr/mcp", p.base);
    let mut with = Client::new(&url);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-upstream-token", "header-cred-6610".parse().unwrap());
    with.http = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    with.initialize("2025-11-25", json!({})).await;
    // Without the header: a clear refusal naming it, and no child.
    let without = Client::new(&url);
    let r = without
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-upstream-token"),
        "{body}"
    );
    let envs: Vec<String> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(envs.len(), 1);
    assert!(envs[0].contains("UPSTREAM_TOKEN=header-cred-6610\n"));
    // 2026-07-28 requests carry the header each time: a request is served
    // only by a child holding the value it carries.
    let http_with = |v: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-upstream-token", v.parse().unwrap());
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    };
    let pa = modern_pid(&http_with("header-cred-a"), &url).await;
    let pb = modern_pid(&http_with("header-cred-b"), &url).await;
    assert_ne!(pa, pb);
    assert_eq!(modern_pid(&http_with("header-cred-a"), &url).await, pa);
    assert!(env_of(&dumps, pa).contains("UPSTREAM_TOKEN=header-cred-a\n"));
    assert!(env_of(&dumps, pb).contains("UPSTREAM_TOKEN=header-cred-b\n"));
    let r = modern_call(&reqwest::Client::new(), &url, "pid", json!({})).await;
    assert_eq!(r.status(), 403, "no header, no child");
    p.stop().await;
    // Off unless the server is per-session.
    let shared = toml.replace(
        "credential_headers",
        "mode = \"shared\"\ncredential_headers",
    );
    assert!(load(&dir, &shared).unwrap_err().contains("per-session"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid of the child serving a session client.
async fn session_pid(c: &Client, id: i64) -> u32 {
    text_of(&c.call(json!(id), "pid", json!({})).await)
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_a_postgres_store_give_children_the_current_value() {
    let Some(pg) = store_pg::Postgres::start() else {
        return;
    };
    let dir = tempdir("pg-two-proxies");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let key = StoreKey::generate_base64();
    // Each proxy opens the store itself, as two replicas would.
    let open = || async {
        Arc::new(
            Store::open(
                &pg.url,
                KeyRing::parse(&key).unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap(),
        )
    };
    let (store_a, store_b) = (open().await, open().await);
    let toml = format!(
        r#"
[auth]
api_key_file = {keys:?}
[store]
url = {url:?}
[[server]]
name = "dump"
mode = "per-session"
command = ["sh", "-c", "env > \"$DUMP_DIR/$$.env\"; exec \"$0\" \"$@\"", {everything:?}]
env = {{ DUMP_DIR = {dumps:?}, UPSTREAM_TOKEN = {{ secret = "tok" }} }}
"#,
        url = pg.url,
        everything = example("everything"),
        keys = named_keys(&dir),
    );
    let a = start(load(&dir, &toml).unwrap(), Some(store_a.clone())).await;
    let b = start(load(&dir, &toml).unwrap(), Some(store_b.clone())).await;
    let url_a = format!("{}/servers/dump/mcp", a.base);
    let url_b = format!("{}/servers/dump/mcp", b.base);

    // Set once (through proxy a's store): children of both proxies see it.
    let tok = SecretRef::new("api-key:alpha", "dump", "tok");
    store_a
        .set(&tok, &Secret::new(b"first-pg-value-4410".to_vec()))
        .await
        .unwrap();
    let mut on_a = authed(&url_a, K1);
    on_a.initialize("2025-11-25", json!({})).await;
    let mut on_b = authed(&url_b, K1);
    on_b.initialize("2025-11-25", json!({})).await;
    let (pa, pb) = (session_pid(&on_a, 1).await, session_pid(&on_b, 1).await);
    assert_ne!(pa, pb);
    for pid in [pa, pb] {
        let env = env_of(&dumps, pid);
        assert!(
            env.contains("UPSTREAM_TOKEN=first-pg-value-4410\n"),
            "{env}"
        );
    }

    // Changed through a: the next child of b has the new value (nothing is
    // cached per proxy), on both eras.
    store_a
        .set(&tok, &Secret::new(b"second-pg-value-8817".to_vec()))
        .await
        .unwrap();
    let mut next_b = authed(&url_b, K1);
    next_b.initialize("2025-11-25", json!({})).await;
    let env = env_of(&dumps, session_pid(&next_b, 1).await);
    assert!(
        env.contains("UPSTREAM_TOKEN=second-pg-value-8817\n"),
        "{env}"
    );
    let modern = authed(&url_b, K1).http;
    let env = env_of(&dumps, modern_pid(&modern, &url_b).await);
    assert!(
        env.contains("UPSTREAM_TOKEN=second-pg-value-8817\n"),
        "{env}"
    );
    // The session started before the change keeps its child and its value.
    assert_eq!(session_pid(&on_b, 2).await, pb);

    // A principal without a value: refused on both proxies, both eras, and
    // no child is started for it.
    let before = std::fs::read_dir(&dumps).unwrap().count();
    for url in [&url_a, &url_b] {
        let r = authed(url, K2)
            .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("api-key:bravo") && msg.contains("UPSTREAM_TOKEN"),
            "{msg}"
        );
        let r = modern_call(&authed(url, K2).http, url, "pid", json!({})).await;
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("api-key:bravo"),
            "{body}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&dumps).unwrap().count(),
        before,
        "no child for bravo"
    );

    // Deleted through b: the next child of a is refused.
    assert!(store_b.delete(&tok).await.unwrap());
    let r = authed(&url_a, K1)
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 403);
    a.stop().await;
    b.stop().await;
    drop((store_a, store_b));
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_2026_child_without_auth_is_stopped_when_idle_and_restarted_on_use() {
    let dir = tempdir("modern-idle");
    let toml = everything_toml(
        "open",
        "mode = \"per-session\"\n[server.limits]\nsession_idle_timeout = \"1s\"",
    );
    let p = start(load(&dir, &toml).unwrap(), None).await;
    let url = format!("{}/servers/open/mcp", p.base);
    let http = reqwest::Client::new();
    // No auth and no per-user credentials: every 2026-07-28 caller shares one child.
    let first = modern_pid(&http, &url).await;
    assert_eq!(modern_pid(&reqwest::Client::new(), &url).await, first);
    // Idle past --session-idle-timeout: the child is stopped...
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        eventually_async(|| async { !alive(first) }).await,
        "the idle 2026-07-28 child {first} is still running"
    );
    // ...and the next request starts a fresh one.
    let second = modern_pid(&http, &url).await;
    assert_ne!(second, first);
    // A child in use is not stopped: requests every 300 ms for 2 s keep it.
    for _ in 0..7 {
        assert_eq!(modern_pid(&http, &url).await, second);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.stop().await;
    assert!(
        eventually_async(|| async { !alive(second) }).await,
        "shutdown stops it"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a broken store's error (the file's path, the SQL error)
/// reached ordinary clients in the body of a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_store_gives_clients_a_generic_503_and_the_log_the_detail() {
    let logs = capture_logs();
    let dir = tempdir("broken-store");
    let db = dir.join("secrets-path-7731.db");
    let keys = KeyRing::parse(&StoreKey::generate_base64()).unwrap();
    let store = Arc::new(
        Store::open(db.to_str().unwrap(), keys, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let toml = everything_toml("vault", "env = { TOK = { secret = \"tok\" } }");
    let toml = format!("[store]\npath = {db:?}\n{toml}");
    let p = start(load(&dir, &toml).unwrap(), Some(store.clone())).await;
    // Someone renames the table under the running proxy.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("ALTER TABLE secrets RENAME TO secrets_gone")
        .unwrap();
    let url = format!("{}/servers/vault/mcp", p.base);
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let r = Client::new(&url).post(&init).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    for leak in ["secrets-path-7731", "no such table", "secrets", "/tmp"] {
        assert!(!body.contains(leak), "{leak:?} reached the client: {body}");
    }
    assert!(
        body.contains("the credential store is unavailable"),
        "{body}"
    );
    let r = modern_call(&reqwest::Client::new(), &url, "pid", json!({})).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("secrets-path-7731") && !body.contains("no such table"),
        "{body}"
    );
    p.stop().await;
    // The operator still gets the detail, in the log.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("no such table"),
        "the log lacks the store's error"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a reload that named another store (or key file) was
/// applied without a word, and its servers went on reading the store
/// opened at start: an operator moving to a new store saw no sign that
/// the old one still served. Now it warns, as for a listener change.
#[tokio::test]
async fn a_reload_naming_another_store_says_it_needs_a_restart() {
    let logs = capture_logs();
    let dir = tempdir("reload-store");
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    let toml =
        |db: &std::path::Path| format!("[store]\npath = {db:?}\n{}", everything_toml("s", ""));
    let set = ServerSet::new(load(&dir, &toml(&a)).unwrap(), Some(fresh_store(&a).await)).unwrap();
    let needle = "credential store changes need a restart";
    set.reload(load(&dir, &toml(&a)).unwrap()).unwrap();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(!text.contains(needle), "the same store is no change");
    set.reload(load(&dir, &toml(&b)).unwrap()).unwrap();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains(needle), "no warning: {text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// An HS256 token for `sub`, accepted by a proxy reading `secret` with
/// audience `aud`.
fn hs256(secret: &str, aud: &str, sub: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": sub, "aud": aud, "exp": now + 600, "iat": now});
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// Regression: an API key named alice and a JWT whose sub is alice shared
/// one stored credential (the store was keyed by the bare name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_user_never_gets_the_credential_of_an_api_key_with_the_same_name() {
    let dir = tempdir("method-names");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let keys = KeyRing::parse(&StoreKey::generate_base64()).unwrap();
    let store = Arc::new(
        Store::open(db.to_str().unwrap(), keys, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    // Only the API key alice has a credential; a bare name is refused.
    store
        .set(
            &SecretRef::new("api-key:alice", "dump", "tok"),
            &Secret::new(b"alices-key-cred-3391".to_vec()),
        )
        .await
        .unwrap();
    assert!(
        store
            .set(
                &SecretRef::new("alice", "dump", "tok"),
                &Secret::new(b"x".to_vec())
            )
            .await
            .is_err(),
        "a principal without its login method is ambiguous"
    );
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    std::fs::write(dir.join("jwt"), secret).unwrap();
    std::fs::write(dir.join("keys"), format!("alice: {K1}\n")).unwrap();
    let toml = format!(
        r#"
[store]
path = {db:?}
[[server]]
name = "dump"
command = ["sh", "-c", "env > \"$DUMP_DIR/$$.env\"; exec \"$0\" \"$@\"", {everything:?}]
env = {{ DUMP_DIR = {dumps:?}, UPSTREAM_TOKEN = {{ secret = "tok" }} }}
"#,
        everything = example("everything"),
    );
    std::fs::write(dir.join("proxy.toml"), toml).unwrap();
    let args = Args {
        config: Some(dir.join("proxy.toml").to_string_lossy().into_owned()),
        api_key_file: Some(dir.join("keys").to_string_lossy().into_owned()),
        jwt_secret_file: Some(dir.join("jwt").to_string_lossy().into_owned()),
        jwt_audience: vec!["mcp-test".into()],
        ..Args::default()
    };
    let config = config_file::load(args, &|_| None).unwrap();
    let p = start(config, Some(store.clone())).await;
    let url = format!("{}/servers/dump/mcp", p.base);

    // The API key alice: a child with her value, on both eras.
    let mut by_key = authed(&url, K1);
    by_key.initialize("2025-11-25", json!({})).await;
    let env = env_of(&dumps, session_pid(&by_key, 1).await);
    assert!(
        env.contains("UPSTREAM_TOKEN=alices-key-cred-3391\n"),
        "{env}"
    );
    // The JWT alice: refused on both eras, naming her as the store does.
    let token = hs256(secret, "mcp-test", "alice");
    let by_jwt = authed(&url, &token);
    let r = by_jwt
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jwt:alice"),
        "{body}"
    );
    let r = modern_call(&by_jwt.http, &url, "pid", json!({})).await;
    assert_eq!(r.status(), 403);
    for e in std::fs::read_dir(&dumps).unwrap() {
        let env = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert_eq!(env.matches("alices-key-cred-3391").count(), 1);
    }
    assert_eq!(
        std::fs::read_dir(&dumps).unwrap().count(),
        1,
        "no child for jwt:alice"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The configuration of `reload_cannot_keep_a_removed_key_alive`: a
/// server dumping its children's environment, generation `generation`.
fn dump_toml(db: &std::path::Path, dumps: &std::path::Path, keys: &str, generation: u32) -> String {
    format!(
        r#"
[auth]
api_key_file = {keys:?}
[store]
path = {db:?}
[[server]]
name = "dump"
command = ["sh", "-c", "env > \"$DUMP_DIR/$$.env\"; exec \"$0\" \"$@\"", {everything:?}]
env = {{ DUMP_DIR = {dumps:?}, GENERATION = "{generation}", UPSTREAM_TOKEN = {{ secret = "tok" }} }}
"#,
        everything = example("everything"),
    )
}

/// How many children were started with `GENERATION=generation`.
fn children_of_generation(dumps: &std::path::Path, generation: u32) -> usize {
    std::fs::read_dir(dumps)
        .unwrap()
        .filter(|e| {
            std::fs::read_to_string(e.as_ref().unwrap().path())
                .unwrap()
                .contains(&format!("GENERATION={generation}\n"))
        })
        .count()
}

/// Regression: a key removed by a reload kept working on the retiring
/// generation, which checked the old key list and accepted `initialize`
/// and 2026-07-28 calls (new children with the stored credential) from
/// anyone holding one of its session ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_cannot_keep_a_removed_key_alive_on_the_retiring_generation() {
    let dir = tempdir("retiring-auth");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let store = fresh_store(&db).await;
    for who in ["api-key:alpha", "api-key:bravo"] {
        store
            .set(
                &SecretRef::new(who, "dump", "tok"),
                &Secret::new(b"v".to_vec()),
            )
            .await
            .unwrap();
    }
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alpha: {K1}\nbravo: {K2}\n")).unwrap();
    let keys = keys.to_str().unwrap().to_string();
    let p = start(
        load(&dir, &dump_toml(&db, &dumps, &keys, 1)).unwrap(),
        Some(store.clone()),
    )
    .await;
    let url = format!("{}/servers/dump/mcp", p.base);
    let mut alpha = authed(&url, K1);
    alpha.initialize("2025-11-25", json!({})).await;
    let mut bravo = authed(&url, K2);
    bravo.initialize("2025-11-25", json!({})).await;
    assert_eq!(children_of_generation(&dumps, 1), 2);

    // alpha's key is removed (and the server changed with it).
    std::fs::write(dir.join("keys"), format!("bravo: {K2}\n")).unwrap();
    let report = p
        .set
        .reload(load(&dir, &dump_toml(&db, &dumps, &keys, 2)).unwrap())
        .unwrap();
    assert_eq!(report.changed, ["dump"]);

    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"pid","arguments":{}}});
    // alpha is refused everywhere, her old session included.
    assert_eq!(alpha.post(&call).await.status(), 401, "an old session");
    assert_eq!(alpha.post(&init).await.status(), 401, "initialize");
    let modern = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid","arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{}}}});
    let modern_with = |c: &Client| {
        c.http
            .post(&url)
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "pid")
            .header("mcp-session-id", c.session.clone().unwrap())
            .json(&modern)
            .send()
    };
    let r = tokio::time::timeout(STEP, modern_with(&alpha))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 401, "a 2026-07-28 call");

    // bravo keeps her old session on the old generation...
    let r = bravo.post(&call).await;
    assert_eq!(r.status(), 200);
    // ...but neither initialize nor a 2026-07-28 call starts anything
    // there: the current generation serves them.
    let r = tokio::time::timeout(STEP, modern_with(&bravo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid: u32 = text_of(&r.json().await.unwrap()).parse().unwrap();
    assert!(env_of(&dumps, pid).contains("GENERATION=2\n"));
    let r = bravo.post(&init).await;
    assert_ne!(r.status(), 200, "no new session on the retiring generation");
    let mut again = authed(&url, K2);
    again.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        children_of_generation(&dumps, 1),
        2,
        "no child started on the retiring generation"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a call on a retiring generation's session was
/// authenticated twice (once against the current key list, once by the
/// old generation), and the audit log recorded two `auth.success` for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_retiring_generation_is_audited_once() {
    let dir = tempdir("retiring-audit");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let store = fresh_store(&db).await;
    store
        .set(
            &SecretRef::new("api-key:bravo", "dump", "tok"),
            &Secret::new(b"v".to_vec()),
        )
        .await
        .unwrap();
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("bravo: {K2}\n")).unwrap();
    let keys = keys.to_str().unwrap().to_string();
    let audit = dir.join("audit.jsonl");
    let with_audit = |generation| {
        let mut c = load(&dir, &dump_toml(&db, &dumps, &keys, generation)).unwrap();
        c.base.audit_log = Some(audit.clone());
        c
    };
    let p = start(with_audit(1), Some(store.clone())).await;
    let url = format!("{}/servers/dump/mcp", p.base);
    let mut bravo = authed(&url, K2);
    bravo.initialize("2025-11-25", json!({})).await;
    let report = p.set.reload(with_audit(2)).unwrap();
    assert_eq!(report.changed, ["dump"]);
    let (_, health) = p.get("/health").await;
    assert_eq!(health["retiring"], 1, "{health}");

    let successes = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"auth.success\""))
            .count()
    };
    // Records reach the file from a writer thread within milliseconds; a
    // second record of the same call is queued before its answer, with
    // the first.
    let settled = |at_least: usize| async move {
        assert!(
            eventually_async(|| async { successes() >= at_least }).await,
            "no auth.success in the audit log"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        successes()
    };
    let before = settled(1).await;
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"pid","arguments":{}}});
    assert_eq!(bravo.post(&call).await.status(), 200);
    assert_eq!(
        settled(before + 1).await,
        before + 1,
        "one call, one auth.success"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Probes of named servers on a public bind with `allowed_hosts` may name
/// an address, as a single server's may (kubelet names the pod's); other
/// names and the servers' MCP endpoints keep the list.
#[tokio::test]
async fn named_server_probes_that_name_an_address_pass_the_host_check() {
    let dir = tempdir("probe-host");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alpha: {K1}\n")).unwrap();
    let config = load(
        &dir,
        &format!(
            "[listen]\nhost = \"0.0.0.0\"\n[auth]\napi_key_file = {keys:?}\n\
             allowed_hosts = [\"mcp.example.com\"]\n\
             [[server]]\nname = \"ev\"\ncommand = [{:?}]\n",
            example("everything")
        ),
    )
    .unwrap();
    let p = start(config, None).await;
    let http = reqwest::Client::new();
    let get = |path: &str, host: &str| {
        http.get(format!("{}{path}", p.base))
            .header("host", host)
            .send()
    };
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/servers/ev/ready",
        "/servers/ev/metrics",
    ] {
        let r = get(path, "10.1.2.3:8080").await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let r = get(path, "attacker.example").await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = http
        .post(format!("{}/servers/ev/mcp", p.base))
        .header("host", "10.1.2.3:8080")
        .header("authorization", format!("Bearer {K1}"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the MCP endpoint keeps the allowed names");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: named servers had an accept loop of their own without the
/// single server's protections: no `--max-connections`, no header-read or
/// idle timeout, and no peer address on requests, so wrong keys were never
/// rate-limited (401 forever, never 429) and the audit log recorded no
/// `auth.*` event at all. Its probes also answered any Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_have_the_same_front_door_as_a_single_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempdir("front-door");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alpha: {K1}\n")).unwrap();
    let audit = dir.join("audit.jsonl");
    let mut config = load(
        &dir,
        &format!(
            "[auth]\napi_key_file = {keys:?}\n[[server]]\nname = \"ev\"\ncommand = [{:?}]\n",
            example("everything")
        ),
    )
    .unwrap();
    config.base.audit_log = Some(audit.clone());
    config.base.max_connections = 4;
    config.base.header_read_timeout = Duration::from_secs(3);
    let p = start(config, None).await;
    let addr = p.base.trim_start_matches("http://").to_string();

    // Wrong keys: refused, then rate-limited, and audited.
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = http
            .post(format!("{}/servers/ev/mcp", p.base))
            .header("authorization", format!("Bearer wrong-key-0123456789-{i}"))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 401);
    assert!(statuses.contains(&429), "never rate-limited: {statuses:?}");
    assert!(
        eventually_async(|| async {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .contains("\"auth.failure\"")
        })
        .await,
        "no auth.failure in the audit log"
    );

    // A foreign Host is refused on every path, probes included (DNS
    // rebinding), as a single server does.
    for path in ["/health", "/ready", "/servers/ev/ready", "/servers/ev/mcp"] {
        let r = http
            .get(format!("{}{path}", p.base))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }

    // --max-connections: four idle connections hold every slot; a fifth
    // is closed at once, long before the header-read timeout.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut buf))
        .await
        .expect("the fifth connection was not closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(idle);

    // A request head that never ends is cut after --header-read-timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(15), slow.read(&mut buf))
        .await
        .expect("a request head that never ended kept its connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: with named servers, the RFC 9728 metadata URL that every
/// 401 names (`/.well-known/oauth-protected-resource/servers/<name>/mcp`)
/// answered 404, so OAuth clients could not discover the authorization
/// server; and no server's metrics could be read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_serve_their_resource_metadata_and_metrics() {
    let dir = tempdir("metadata");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alpha: {K1}\n")).unwrap();
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\napi_key_file = {keys:?}\n[[server]]\nname = \"ev\"\ncommand = [{e:?}]\n[[server]]\nname = \"ev2\"\ncommand = [{e:?}]\n",
            e = example("everything")
        ),
    )
    .unwrap();
    let args = Args {
        config: Some(path.to_string_lossy().into_owned()),
        public_url: Some("https://mcp.example.com".into()),
        auth_server: vec!["https://auth.example.com".into()],
        metrics_auth: true,
        ..Args::default()
    };
    let p = start(config_file::load(args, &|_| None).unwrap(), None).await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{}/servers/ev/mcp", p.base))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"));
    let local = url.replace("https://mcp.example.com", &p.base);
    let r = http.get(&local).send().await.unwrap();
    assert_eq!(r.status(), 200, "{local}");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["resource"], "https://mcp.example.com/servers/ev/mcp");
    assert_eq!(doc["authorization_servers"][0], "https://auth.example.com");
    let r = http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/servers/nope/mcp",
            p.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Metrics, per server, behind the key with --metrics-auth.
    let metrics = format!("{}/servers/ev/metrics", p.base);
    assert_eq!(http.get(&metrics).send().await.unwrap().status(), 401);
    let r = http.get(&metrics).bearer_auth(K1).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("mcp_proxy_sessions_open"));
    // And all servers at once, each sample labelled, each family once.
    assert_eq!(
        http.get(format!("{}/metrics", p.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .get(format!("{}/metrics", p.base))
        .bearer_auth(K1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let all = r.text().await.unwrap();
    for server in ["ev", "ev2"] {
        assert!(
            all.contains(&format!("mcp_proxy_sessions_open{{server=\"{server}\"}} 0")),
            "{all}"
        );
    }
    let types: Vec<&str> = all.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "{all}");
    let r = http
        .get(format!("{}/servers/nope/metrics", p.base))
        .bearer_auth(K1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a per-principal (2026-07-28) child that crashed was
/// restarted with the environment it was first given, so a credential
/// deleted from the store meanwhile kept reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_2026_child_is_not_restarted_with_a_deleted_credential() {
    let dir = tempdir("modern-crash");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = dir.join("secrets.db");
    let store = fresh_store(&db).await;
    let tok = SecretRef::new("api-key:alpha", "dump", "tok");
    store
        .set(&tok, &Secret::new(b"revoked-cred-6120".to_vec()))
        .await
        .unwrap();
    let toml = dump_toml(&db, &dumps, named_keys(&dir).to_str().unwrap(), 1);
    let p = start(load(&dir, &toml).unwrap(), Some(store.clone())).await;
    let url = format!("{}/servers/dump/mcp", p.base);
    let alpha = authed(&url, K1).http;
    let pid = modern_pid(&alpha, &url).await;
    // The operator revokes the credential; then the child crashes.
    assert!(store.delete(&tok).await.unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Once the crash is noticed, the next call reads the store again: 403.
    let refused = eventually_async(|| {
        let (alpha, url) = (alpha.clone(), url.clone());
        async move { modern_call(&alpha, &url, "pid", json!({})).await.status() == 403 }
    })
    .await;
    let with_value = std::fs::read_dir(&dumps)
        .unwrap()
        .filter(|e| {
            std::fs::read_to_string(e.as_ref().unwrap().path())
                .unwrap()
                .contains("revoked-cred-6120")
        })
        .count();
    assert_eq!(
        with_value, 1,
        "a child started again with the revoked value"
    );
    assert!(refused, "the revoked principal was never refused");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: secret reads and writes went only to the `audit` log
/// target on stderr, never to the `--audit-log` file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_reads_reach_the_audit_log_file() {
    let dir = tempdir("audit-file");
    let db = dir.join("secrets.db");
    let audit = dir.join("audit.jsonl");
    let store = fresh_store(&db).await;
    store
        .set(
            &SecretRef::new("api-key:alpha", "vault", "tok"),
            &Secret::new(b"audited-value-5150".to_vec()),
        )
        .await
        .unwrap();
    let toml = format!(
        "[auth]\napi_key_file = {:?}\n[store]\npath = {db:?}\n{}",
        named_keys(&dir),
        everything_toml("vault", "env = { TOK = { secret = \"tok\" } }")
    );
    std::fs::write(dir.join("proxy.toml"), toml).unwrap();
    let args = Args {
        config: Some(dir.join("proxy.toml").to_string_lossy().into_owned()),
        audit_log: Some(audit.to_string_lossy().into_owned()),
        ..Args::default()
    };
    let p = start(
        config_file::load(args, &|_| None).unwrap(),
        Some(store.clone()),
    )
    .await;
    let url = format!("{}/servers/vault/mcp", p.base);
    authed(&url, K1).initialize("2025-11-25", json!({})).await;
    let r = authed(&url, K2)
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    assert_eq!(r.status(), 403);
    p.stop().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let secret_lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "secret")
        .collect();
    let has = |principal: &str, outcome: &str| {
        secret_lines.iter().any(|v| {
            v["action"] == "read-for-child"
                && v["principal"] == principal
                && v["server"] == "vault"
                && v["name"] == "tok"
                && v["outcome"] == outcome
        })
    };
    assert!(has("api-key:alpha", "ok"), "{text}");
    assert!(has("api-key:bravo", "missing"), "{text}");
    assert!(!text.contains("audited-value-5150"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a reload that changed a server stopped the old generation
/// as soon as it had no session, killing its 2026-07-28 calls in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lets_a_2026_call_in_flight_finish_on_the_old_generation() {
    let dir = tempdir("retire-busy");
    let p = start(load(&dir, &everything_toml("slow", "")).unwrap(), None).await;
    let url = format!("{}/servers/slow/mcp", p.base);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":2500},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{}}}});
    let call = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "sleep")
        .json(&body)
        .send();
    let call = tokio::spawn(async move {
        let r = call.await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    });
    // The call is in flight on the first generation; the server changes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = p
        .set
        .reload(load(&dir, &everything_toml("slow", "env = { CHANGED = \"1\" }")).unwrap())
        .unwrap();
    assert_eq!(report.changed, ["slow"]);
    let (status, text) = tokio::time::timeout(STEP, call).await.unwrap().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("slept 2500"),
        "the call was cut short: {text}"
    );
    // Once idle, the old generation stops.
    let set = p.set.clone();
    assert!(
        eventually_async(|| {
            let set = set.clone();
            async move { set.retiring_count() == 0 }
        })
        .await,
        "the old generation never stopped"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A shared server retired by a reload opens no new session on its old
/// child: an `initialize` that still carries a session id of the old
/// generation (and so is routed there) gets 404, and the client starts
/// over on the new configuration.
#[tokio::test]
async fn a_retiring_shared_server_opens_no_session_on_its_old_child() {
    let dir = tempdir("retiring-shared");
    let toml = |generation: u32| {
        format!(
            r#"
[[server]]
name = "s"
mode = "shared"
command = [{everything:?}]
env = {{ GENERATION = "{generation}" }}
"#,
            everything = example("everything"),
        )
    };
    let p = start(load(&dir, &toml(1)).unwrap(), None).await;
    let url = format!("{}/servers/s/mcp", p.base);
    let mut old = Client::new(&url);
    old.initialize("2025-11-25", json!({})).await;
    let report = p.set.reload(load(&dir, &toml(2)).unwrap()).unwrap();
    assert_eq!(report.changed, ["s"]);
    // The old session still works on its generation...
    let pid_of = |v: Value| v["result"]["structuredContent"]["pid"].as_u64();
    let old_child = pid_of(old.call(json!(1), "pid", json!({})).await).expect("a pid");
    // ...but an initialize carrying its id opens nothing there.
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    assert_eq!(old.post(&init).await.status(), 404);
    let mut fresh = Client::new(&url);
    fresh.initialize("2025-11-25", json!({})).await;
    let new_child = pid_of(fresh.call(json!(2), "pid", json!({})).await).expect("a pid");
    assert_ne!(old_child, new_child, "the new session is on the new child");
}

/// Regression: while the store did not answer, the 2026-07-28 requests
/// of one principal that arrived together queued behind each other's
/// lookup: each waited for the one before it to fail and then asked the
/// store again, so the n-th got its 503 only after n store deadlines (a
/// burst of 20 with the default 5 s: the last after 100 s). Requests that
/// arrive while a principal's child is being started now share that
/// start's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_answers_a_burst_of_one_principals_2026_requests_within_one_deadline() {
    const BURST: usize = 8;
    let dir = tempdir("burst");
    let db = dir.join("secrets.db");
    let deadline = Duration::from_millis(600);
    let store = Arc::new(
        Store::open(
            db.to_str().unwrap(),
            KeyRing::parse(&StoreKey::generate_base64()).unwrap(),
            deadline,
        )
        .await
        .unwrap(),
    );
    let toml = everything_toml("vault", "env = { TOK = { secret = \"tok\" } }");
    let toml = format!("[store]\npath = {db:?}\n{toml}");
    let p = start(load(&dir, &toml).unwrap(), Some(store)).await;
    let url = format!("{}/servers/vault/mcp", p.base);
    // Another process holds the file locked: every lookup fails after
    // SQLite's busy timeout, within the deadline.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let locker = std::thread::spawn({
        let db = db.clone();
        move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            ready_tx.send(()).unwrap();
            let _ = stopped.recv();
        }
    });
    ready.recv_timeout(STEP).unwrap();
    let http = reqwest::Client::new();
    let began = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..BURST).map(|_| async {
        let r = modern_call(&http, &url, "echo", json!({"message": "x"})).await;
        (r.status().as_u16(), began.elapsed())
    }))
    .await;
    let _ = stop.send(());
    locker.join().unwrap();
    for (status, took) in &answers {
        assert_eq!(*status, 503, "{answers:?}");
        assert!(
            *took < deadline * 2,
            "a request of the burst waited {took:?}, past two store deadlines ({deadline:?} each): {answers:?}"
        );
    }
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The status of a 2026-07-28 echo call to `url` with `credential`.
async fn echo_status(url: &str, credential: String) -> u16 {
    modern_call(
        &authed(url, &credential).http,
        url,
        "echo",
        json!({"message": "x"}),
    )
    .await
    .status()
    .as_u16()
}

/// Regression: a reload told a changed server from an unchanged one by
/// the `Debug` text of its settings, in which every API key shows as
/// `<redacted>` (and the `--jwt-secret-file` secret too). A key file
/// that gave a key name a new value (the usual answer to a leaked key)
/// changed no server: the reload reported nothing changed, the leaked
/// key kept working and its replacement was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_gives_a_key_name_a_new_value_retires_the_old_value() {
    let dir = tempdir("rekey");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alpha: {K1}\n")).unwrap();
    let toml = format!(
        "[auth]\napi_key_file = {keys:?}\n{}",
        everything_toml("s", "")
    );
    let p = start(load(&dir, &toml).unwrap(), None).await;
    let url = format!("{}/servers/s/mcp", p.base);
    let status = |key: &'static str| echo_status(&url, key.to_string());
    assert_eq!(status(K1).await, 200);
    assert_eq!(status(K2).await, 401);
    // alpha's key leaked: the operator gives alpha a new one.
    std::fs::write(&keys, format!("alpha: {K2}\n")).unwrap();
    let report = p.set.reload(load(&dir, &toml).unwrap()).unwrap();
    assert_eq!(report.changed, ["s"], "{report:?}");
    assert_eq!(status(K2).await, 200, "the new key is refused");
    assert_eq!(status(K1).await, 401, "the leaked key still works");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: as for API keys, a `--jwt-secret-file` given a new secret
/// changed no server at a reload (the secret shows as `<redacted>`): tokens
/// signed with the old secret kept working, and the new ones were refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_jwt_secret_retires_the_old_secret() {
    let dir = tempdir("rejwt");
    let (old, new) = (
        "the-old-secret-of-at-least-32-bytes!!",
        "the-new-secret-of-at-least-32-bytes!!",
    );
    let secret = dir.join("jwt");
    std::fs::write(&secret, old).unwrap();
    std::fs::write(dir.join("proxy.toml"), everything_toml("s", "")).unwrap();
    let args = Args {
        config: Some(dir.join("proxy.toml").to_string_lossy().into_owned()),
        jwt_secret_file: Some(secret.to_string_lossy().into_owned()),
        jwt_audience: vec!["mcp".into()],
        ..Args::default()
    };
    let load = || config_file::load(args.clone(), &|_| None).unwrap();
    let p = start(load(), None).await;
    let url = format!("{}/servers/s/mcp", p.base);
    let status = |secret: &'static str| echo_status(&url, hs256(secret, "mcp", "alice"));
    assert_eq!(status(old).await, 200);
    assert_eq!(status(new).await, 401);
    std::fs::write(&secret, new).unwrap();
    let report = p.set.reload(load()).unwrap();
    assert_eq!(report.changed, ["s"], "{report:?}");
    assert_eq!(status(new).await, 200, "the new secret is refused");
    assert_eq!(status(old).await, 401, "the old secret still works");
    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
