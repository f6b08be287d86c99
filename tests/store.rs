//! The credential store: the embedded file and a real PostgreSQL server,
//! sealing at rest, rotation under load, and the `secrets` subcommand.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mcp_sidecar::store::{KeyRing, Secret, SecretRef, Store, StoreKey};

mod store_pg;
mod support;
use store_pg::Postgres;
use support::process::{proxy_command, tempdir};

const T: Duration = Duration::from_secs(10);

fn ring(keys: &[&str]) -> KeyRing {
    KeyRing::parse(&keys.join(",")).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn embedded_store_sets_gets_lists_and_deletes() {
    let dir = tempdir("basic");
    let path = dir.join("secrets.db");
    let key = StoreKey::generate_base64();
    let store = Store::open(path.to_str().unwrap(), ring(&[&key]), T)
        .await
        .unwrap();
    let alice = SecretRef::new("api-key:alice", "coda", "coda");
    let bob = SecretRef::new("api-key:bob", "coda", "coda");
    store
        .set(&alice, &Secret::new(b"alice-token-7f3a9c".to_vec()))
        .await
        .unwrap();
    store
        .set(&bob, &Secret::new(b"bob-token-2b8e41".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        store.get(&alice).await.unwrap().unwrap().expose(),
        b"alice-token-7f3a9c"
    );
    // Replace.
    store
        .set(&alice, &Secret::new(b"alice-token-v2-0d1e".to_vec()))
        .await
        .unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|(_, k)| k == store.key_ids()[0]));
    // One round trip for a child: present and missing names.
    let got = store
        .get_for_child("api-key:alice", "coda", &["coda".into(), "other".into()])
        .await
        .unwrap();
    assert_eq!(got[0].1.as_ref().unwrap().expose(), b"alice-token-v2-0d1e");
    assert!(got[1].1.is_none());
    assert!(store.delete(&bob).await.unwrap());
    assert!(!store.delete(&bob).await.unwrap());
    assert!(store.get(&bob).await.unwrap().is_none());

    // At rest: the file is owner-only and holds no value in plain text.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    for v in [
        "alice-token-7f3a9c",
        "alice-token-v2-0d1e",
        "bob-token-2b8e41",
    ] {
        assert!(!contains(&bytes, v.as_bytes()), "{v} in the store file");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_row_copied_to_another_principal_does_not_open() {
    let dir = tempdir("move");
    let path = dir.join("secrets.db");
    let key = StoreKey::generate_base64();
    let store = Store::open(path.to_str().unwrap(), ring(&[&key]), T)
        .await
        .unwrap();
    store
        .set(
            &SecretRef::new("api-key:alice", "coda", "coda"),
            &Secret::new(b"alice-secret".to_vec()),
        )
        .await
        .unwrap();
    // An attacker with write access to the file copies alice's row to mallory.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO secrets SELECT 'api-key:mallory', server, name, key_id, nonce, sealed, updated_at FROM secrets WHERE principal = 'api-key:alice'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = store
        .get(&SecretRef::new("api-key:mallory", "coda", "coda"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not open"), "{err}");
    assert!(!err.contains("alice-secret"));
    // Alice's own row still opens.
    assert!(
        store
            .get(&SecretRef::new("api-key:alice", "coda", "coda"))
            .await
            .unwrap()
            .is_some()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a value was opened against the row the backend returned,
/// not the row asked for. A file edited to compare principals without
/// case (its table rebuilt `COLLATE NOCASE`, alice's own row deleted)
/// answered alice's lookup with Alice's row, which opened, and alice's
/// child got another principal's credential.
#[tokio::test]
async fn a_row_the_backend_returns_for_another_principal_does_not_open() {
    let dir = tempdir("collate");
    let path = dir.join("secrets.db");
    let key = StoreKey::generate_base64();
    let store = Store::open(path.to_str().unwrap(), ring(&[&key]), T)
        .await
        .unwrap();
    for (who, value) in [
        ("api-key:Alice", "Alice-secret"),
        ("api-key:alice", "alice-secret"),
    ] {
        store
            .set(
                &SecretRef::new(who, "coda", "coda"),
                &Secret::new(value.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DELETE FROM secrets WHERE principal = 'api-key:alice';
         CREATE TABLE s2 (principal TEXT COLLATE NOCASE NOT NULL, server TEXT NOT NULL,
             name TEXT NOT NULL, key_id TEXT NOT NULL, nonce BLOB NOT NULL,
             sealed BLOB NOT NULL, updated_at INTEGER NOT NULL);
         INSERT INTO s2 SELECT * FROM secrets;
         DROP TABLE secrets;
         ALTER TABLE s2 RENAME TO secrets;",
    )
    .unwrap();
    drop(conn);
    let got = store
        .get(&SecretRef::new("api-key:alice", "coda", "coda"))
        .await;
    let shown = format!(
        "{:?}",
        got.as_ref()
            .map(|v| v.as_ref().map(|s| s.expose_str().map(str::to_owned)))
    );
    let err = got.expect_err(&shown).to_string();
    assert!(err.contains("does not open"), "{err}");
    assert!(!err.contains("lice-secret"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Readers keep getting every value while `rotate` re-seals under them.
async fn rotation_under_load(location: &str) {
    let (old, new) = (StoreKey::generate_base64(), StoreKey::generate_base64());
    let before = Store::open(location, ring(&[&old]), T).await.unwrap();
    for i in 0..40 {
        before
            .set(
                &SecretRef::new(&format!("api-key:user{i}"), "coda", "coda"),
                &Secret::new(format!("value-{i}").into_bytes()),
            )
            .await
            .unwrap();
    }
    // Every proxy is given both keys (new first), then the rotation runs.
    let during = Arc::new(Store::open(location, ring(&[&new, &old]), T).await.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4 {
        let (store, stop) = (during.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 40 {
                let i = (reads as usize * 7 + r) % 40;
                let got = store
                    .get_for_child(&format!("api-key:user{i}"), "coda", &["coda".into()])
                    .await
                    .expect("reads never fail during a rotation");
                assert_eq!(
                    got[0].1.as_ref().expect("value present").expose(),
                    format!("value-{i}").as_bytes()
                );
                reads += 1;
            }
            reads
        }));
    }
    // A write during the rotation lands under the new key and is kept.
    let writer = {
        let store = during.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                store
                    .set(
                        &SecretRef::new(&format!("api-key:user{i}"), "coda", "coda"),
                        &Secret::new(format!("value-{i}").into_bytes()),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let report = during.rotate().await.unwrap();
    writer.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() >= 40);
    }
    assert_eq!(report.resealed + report.raced + report.current, 40);
    // Afterwards the new key alone opens everything; the old alone nothing.
    let after = Store::open(location, ring(&[&new]), T).await.unwrap();
    let listed = after.list().await.unwrap();
    assert!(
        listed.iter().all(|(_, k)| k == after.key_ids()[0]),
        "{listed:?}"
    );
    for i in 0..40 {
        let v = after
            .get(&SecretRef::new(&format!("api-key:user{i}"), "coda", "coda"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.expose(), format!("value-{i}").as_bytes());
    }
    let old_only = Store::open(location, ring(&[&old]), T).await.unwrap();
    assert!(
        old_only
            .get(&SecretRef::new("api-key:user0", "coda", "coda"))
            .await
            .is_err()
    );
}

/// `secrets set` reads a value of the full size with its line ending
/// (the read buffer's bound), and refuses one byte more.
#[test]
fn secrets_set_takes_a_value_of_the_full_size_from_stdin_and_not_one_byte_more() {
    use mcp_sidecar::store::seal::MAX_SECRET_BYTES;
    let dir = tempdir("cli-size");
    let db = dir.join("s.db");
    let db = db.to_str().unwrap();
    let key = StoreKey::generate_base64();
    let env = [("MCP_PROXY_STORE_KEY", key.as_str())];
    let args = ["--store", db, "set", "api-key:alice", "coda", "coda"];
    let mut full = vec![b'v'; MAX_SECRET_BYTES];
    full.extend_from_slice(b"\r\n");
    let (code, _, err) = cli(&args, &env, &full);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(
        &["--store", db, "get", "api-key:alice", "coda", "coda"],
        &env,
        b"",
    );
    assert_eq!((code, out.len()), (0, MAX_SECRET_BYTES));
    let over = vec![b'w'; MAX_SECRET_BYTES + 1];
    let (code, _, err) = cli(&args, &env, &over);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("exceeds {MAX_SECRET_BYTES} bytes")),
        "{err}"
    );
    assert!(!err.contains("www"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A row the ring cannot open (sealed under a key it lacks, or damaged)
/// does not stop a rotation: every other row is re-sealed, and the report
/// names the ones left, so the operator knows the old key is still needed
/// by nothing but them. (The rotation used to stop at the first such row,
/// leaving every row after it under the old key, run after run.)
#[tokio::test]
async fn a_row_the_ring_cannot_open_does_not_stop_a_rotation() {
    let dir = tempdir("rotate-partial");
    let location = dir.join("s.db");
    let location = location.to_str().unwrap();
    let (old, lost, new) = (
        StoreKey::generate_base64(),
        StoreKey::generate_base64(),
        StoreKey::generate_base64(),
    );
    let value = |p: &str| Secret::new(format!("value-{p}").into_bytes());
    let under_old = Store::open(location, ring(&[&old]), T).await.unwrap();
    for p in ["api-key:a0", "api-key:a1", "api-key:a3", "api-key:a4"] {
        under_old
            .set(&SecretRef::new(p, "coda", "coda"), &value(p))
            .await
            .unwrap();
    }
    // One row, listed among the others, under a key the rotation lacks.
    let under_lost = Store::open(location, ring(&[&lost]), T).await.unwrap();
    let stray = SecretRef::new("api-key:a2", "coda", "coda");
    under_lost.set(&stray, &value("api-key:a2")).await.unwrap();
    let rotating = Store::open(location, ring(&[&new, &old]), T).await.unwrap();
    let report = rotating
        .rotate()
        .await
        .expect("the rotation goes on past the row");
    assert_eq!(report.resealed, 4, "{report:?}");
    assert_eq!(report.unopened, vec![stray.clone()], "{report:?}");
    let after = Store::open(location, ring(&[&new]), T).await.unwrap();
    for p in ["api-key:a0", "api-key:a1", "api-key:a3", "api-key:a4"] {
        let got = after
            .get(&SecretRef::new(p, "coda", "coda"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), value(p).expose());
    }
    // The row is left as it was: its own key still opens it.
    let got = under_lost.get(&stray).await.unwrap().unwrap();
    assert_eq!(got.expose(), b"value-api-key:a2");
    // `secrets rotate-key` says which, and fails, as long as one is left.
    let both = format!("{new},{old}");
    let (code, _, err) = cli(
        &["--store", location, "rotate-key"],
        &[("MCP_PROXY_STORE_KEY", both.as_str())],
        b"",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot open api-key:a2/coda/coda"), "{err}");
    assert!(err.contains("1 value(s) could not be opened"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_embedded() {
    let dir = tempdir("rotate");
    rotation_under_load(dir.join("s.db").to_str().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------ PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_is_shared_by_two_handles_and_rotates_under_load() {
    let Some(pg) = Postgres::start() else { return };
    let key = StoreKey::generate_base64();
    // Two proxies open the same store at once: the migration runs once.
    let (a, b) = tokio::join!(
        Store::open(&pg.url, ring(&[&key]), T),
        Store::open(&pg.url, ring(&[&key]), T)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    a.set(&at, &Secret::new(b"pg-alice-value".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        b.get(&at).await.unwrap().unwrap().expose(),
        b"pg-alice-value"
    );
    assert!(b.delete(&at).await.unwrap());
    assert!(a.get(&at).await.unwrap().is_none());
    // The table holds sealed bytes only.
    a.set(&at, &Secret::new(b"pg-alice-value".to_vec()))
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for row in client
        .query("SELECT sealed, nonce FROM mcp_proxy_secrets", &[])
        .await
        .unwrap()
    {
        let sealed: Vec<u8> = row.get(0);
        assert!(!contains(&sealed, b"pg-alice-value"));
    }
    drop((a, b));
    // Rotation under load on the shared store.
    client
        .execute("DELETE FROM mcp_proxy_secrets", &[])
        .await
        .unwrap();
    rotation_under_load(&pg.url).await;
}

#[tokio::test]
async fn postgres_store_down_is_an_error_within_the_deadline() {
    // Nothing listens on this port: the open fails fast with a message that
    // hides the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db");
    let started = std::time::Instant::now();
    let err = Store::open(
        &url,
        ring(&[&StoreKey::generate_base64()]),
        Duration::from_secs(2),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!err.contains("hunter2"), "{err}");
}

/// A TCP forwarder to `target` that can freeze the connections it holds:
/// they stay open and carry nothing more, as a connection does behind a
/// NAT that forgot it or a peer that vanished. New connections work.
struct Forwarder {
    port: u16,
    /// Connections accepted before the current epoch are frozen.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: std::net::SocketAddr) -> Forwarder {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let e = epoch.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let born = e.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let e = e.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if e.load(Ordering::SeqCst) != born {
                                // Frozen: hold both ends open, pass nothing.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Forwarder { port, epoch, task }
    }

    fn freeze_existing(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Regression: a PostgreSQL connection that went silent (no RST, no FIN)
/// was reused for ever: every call timed out while a fresh connection
/// worked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_postgres_connection_is_replaced_after_a_timeout() {
    let Some(pg) = Postgres::start() else { return };
    let target: std::net::SocketAddr = pg
        .url
        .trim_start_matches("postgres://mcp@")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let fwd = Forwarder::start(target).await;
    let url = format!("postgres://mcp@127.0.0.1:{}/postgres", fwd.port);
    let store = Store::open(
        &url,
        ring(&[&StoreKey::generate_base64()]),
        Duration::from_millis(800),
    )
    .await
    .unwrap();
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    store.set(&at, &Secret::new(b"v1".to_vec())).await.unwrap();
    fwd.freeze_existing();
    let err = store.get(&at).await.unwrap_err().to_string();
    assert!(err.contains("did not answer"), "{err}");
    // The next call reconnects instead of waiting on the dead connection.
    let started = std::time::Instant::now();
    let got = store.get(&at).await.expect("a fresh connection answers");
    assert_eq!(got.unwrap().expose(), b"v1");
    assert!(started.elapsed() < Duration::from_millis(800));
    // The same after a frozen write.
    fwd.freeze_existing();
    assert!(store.set(&at, &Secret::new(b"v2".to_vec())).await.is_err());
    assert!(store.list().await.is_ok());
}

/// Regression: a query the store gave up on at its deadline went on
/// running in PostgreSQL. With the table locked by another session (a
/// migration, a `LOCK TABLE`, a long transaction), every spawn's lookup
/// timed out and left a backend behind, waiting for the lock whatever
/// happened to the connection (a backend blocked on a lock does not
/// notice its client has gone): each 503 cost one of the server's
/// `max_connections`, shared with every other client of that server,
/// until the lock went. Each query now carries the store's deadline to
/// the server (`statement_timeout`), which ends it there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_query_abandoned_at_its_deadline_ends_on_the_server_too() {
    let Some(pg) = Postgres::start() else { return };
    let deadline = Duration::from_millis(400);
    let store = Store::open(&pg.url, ring(&[&StoreKey::generate_base64()]), deadline)
        .await
        .unwrap();
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    store.set(&at, &Secret::new(b"v".to_vec())).await.unwrap();
    let (locker, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute("BEGIN; LOCK TABLE mcp_proxy_secrets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(store.get(&at).await.is_err(), "the table is locked");
    }
    // Give the server a deadline's time to end what it was told to.
    tokio::time::sleep(deadline * 2).await;
    let waiting: i64 = locker
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'mcp-proxy' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        waiting, 0,
        "queries abandoned by the store still hold backends"
    );
    // The store answers again once the lock goes.
    assert!(store.get(&at).await.unwrap().is_some());
}

// ------------------------------------------------------------ CLI

fn cli(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (i32, String, String) {
    let mut cmd = proxy_command();
    cmd.arg("secrets")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        // A command line that is refused exits before it reads its input:
        // the write may then meet a closed pipe, which is not the test's concern.
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn secrets_subcommand_round_trip_with_value_from_stdin() {
    let dir = tempdir("cli");
    let db = dir.join("s.db");
    let db = db.to_str().unwrap();
    let key = StoreKey::generate_base64();
    let env = [("MCP_PROXY_STORE_KEY", key.as_str())];
    let (code, _, err) = cli(
        &["--store", db, "set", "api-key:alice", "coda", "coda"],
        &env,
        b"cli-secret-value-93\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("cli-secret-value-93"), "{err}");
    let (code, out, _) = cli(
        &["--store", db, "get", "api-key:alice", "coda", "coda"],
        &env,
        b"",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "cli-secret-value-93");
    let (code, out, _) = cli(&["--store", db, "list"], &env, b"");
    assert_eq!(code, 0);
    assert!(out.starts_with("api-key:alice\tcoda\tcoda\t"), "{out}");
    assert!(!out.contains("cli-secret-value-93"));
    // Rotation: new key first, old second.
    let new = StoreKey::generate_base64();
    let both = format!("{new},{key}");
    let (code, _, err) = cli(
        &["--store", db, "rotate-key"],
        &[("MCP_PROXY_STORE_KEY", both.as_str())],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-sealed 1"), "{err}");
    let (code, out, _) = cli(
        &["--store", db, "get", "api-key:alice", "coda", "coda"],
        &[("MCP_PROXY_STORE_KEY", new.as_str())],
        b"",
    );
    assert_eq!((code, out.as_str()), (0, "cli-secret-value-93"));
    let (code, _, _) = cli(
        &["--store", db, "delete", "api-key:alice", "coda", "coda"],
        &[("MCP_PROXY_STORE_KEY", new.as_str())],
        b"",
    );
    assert_eq!(code, 0);
    let (code, _, err) = cli(
        &["--store", db, "get", "api-key:alice", "coda", "coda"],
        &[("MCP_PROXY_STORE_KEY", new.as_str())],
        b"",
    );
    assert_eq!(code, 1);
    assert!(err.contains("no secret api-key:alice/coda/coda"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: `secrets set` with the wrong key succeeded silently, and
/// the store then held values sealed under two keys (half of them
/// unreadable to every proxy).
#[test]
fn secrets_set_refuses_a_key_that_opens_none_of_the_stored_values() {
    let dir = tempdir("cli-wrong-key");
    let db = dir.join("s.db");
    let db = db.to_str().unwrap();
    let (right, wrong) = (StoreKey::generate_base64(), StoreKey::generate_base64());
    let set = |key: &str, extra: &[&str], who: &str| {
        let mut args = vec!["--store", db, "set"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[who, "coda", "coda"]);
        cli(&args, &[("MCP_PROXY_STORE_KEY", key)], b"value-1")
    };
    // The first value of an empty store may use any key.
    assert_eq!(set(&right, &[], "api-key:alice").0, 0);
    let (code, _, err) = set(&wrong, &[], "api-key:bob");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--new-key") && err.contains("key"), "{err}");
    let (_, out, _) = cli(
        &["--store", db, "list"],
        &[("MCP_PROXY_STORE_KEY", &right)],
        b"",
    );
    assert_eq!(out.lines().count(), 1, "nothing was written: {out}");
    // Asked for explicitly, it is allowed; a ring holding the old key too
    // (a rotation) needs no flag.
    assert_eq!(set(&wrong, &["--new-key"], "api-key:bob").0, 0);
    assert_eq!(set(&format!("{wrong},{right}"), &[], "api-key:carol").0, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: `secrets set` read a value typed at a terminal, which the
/// terminal echoed: the secret stood on the screen (and in its
/// scrollback, a recording, a shared screen). A terminal on stdin is now
/// refused as usage, before anything is read.
#[test]
fn secrets_set_refuses_a_terminal_on_stdin_rather_than_echo_the_value() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    // A pseudo-terminal: the test holds the master, the command gets the slave.
    // SAFETY: plain libc calls on descriptors this test owns; each result is checked.
    let (master, slave) = unsafe {
        let m = nix::libc::posix_openpt(nix::libc::O_RDWR | nix::libc::O_NOCTTY);
        assert!(m >= 0);
        assert_eq!(nix::libc::grantpt(m), 0);
        assert_eq!(nix::libc::unlockpt(m), 0);
        let mut name = [0 as nix::libc::c_char; 128];
        assert_eq!(nix::libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = nix::libc::open(name.as_ptr(), nix::libc::O_RDWR | nix::libc::O_NOCTTY);
        assert!(s >= 0);
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    };
    let dir = tempdir("tty");
    let db = dir.join("s.db");
    let key = StoreKey::generate_base64();
    let mut cmd = proxy_command();
    cmd.args([
        "secrets",
        "--store",
        db.to_str().unwrap(),
        "set",
        "api-key:bob",
        "coda",
        "coda",
    ])
    .env("MCP_PROXY_STORE_KEY", &key)
    .stdin(Stdio::from(slave))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let child = cmd.spawn().unwrap();
    // What a person would type; a command that reads it finishes too.
    let mut m = master;
    let _ = m.write_all(b"typed-secret\n\x04");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(T).expect("the command ends").unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("terminal"), "{err}");
    assert!(!db.exists(), "nothing is stored, nor the store created");
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a PostgreSQL error with a DETAIL or HINT (here "Perhaps
/// you meant to reference the column …" after a column was renamed)
/// reached `secrets` stderr over several lines; the CLI's errors are one.
#[tokio::test]
async fn a_postgres_error_with_a_hint_is_one_line_from_the_cli() {
    let Some(pg) = Postgres::start() else { return };
    let key = StoreKey::generate_base64();
    drop(Store::open(&pg.url, ring(&[&key]), T).await.unwrap());
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("ALTER TABLE mcp_proxy_secrets RENAME COLUMN sealed TO sealed_x")
        .await
        .unwrap();
    let url = pg.url.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        cli(
            &["--store", &url, "list"],
            &[("MCP_PROXY_STORE_KEY", key.as_str())],
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sealed_x"), "the hint is kept: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn secrets_bad_usage_is_one_line_and_exit_64() {
    let key = StoreKey::generate_base64();
    let long = "x".repeat(300);
    let env = [("MCP_PROXY_STORE_KEY", key.as_str())];
    for (args, env, stdin) in [
        (
            vec!["--store", "/tmp/x.db", "set", "api-key:alice", "coda"],
            &env[..],
            &b"v"[..],
        ),
        (
            vec!["--store", "/tmp/x.db", "frobnicate"],
            &env[..],
            &b""[..],
        ),
        // The value comes from stdin only.
        (
            vec![
                "--store",
                "/tmp/x.db",
                "set",
                "a",
                "b",
                "c",
                "value-on-argv",
            ],
            &env[..],
            &b""[..],
        ),
        (
            vec!["--store", "/tmp/x.db", "set", "a", "b", "c"],
            &env[..],
            &b""[..],
        ),
        (vec!["set", "a", "b", "c"], &env[..], &b"v"[..]),
        // A principal must say how it logs in: `alice` could be a key or a JWT.
        (
            vec!["--store", "/tmp/x.db", "set", "alice", "coda", "coda"],
            &env[..],
            &b"v"[..],
        ),
        (
            vec!["--store", "/tmp/x.db", "get", "ldap:alice", "coda", "coda"],
            &env[..],
            &b""[..],
        ),
        // So must the server and the secret name: refused before the
        // store is opened, as usage, not as a runtime failure (exit 1).
        (
            vec!["--store", "/tmp/x.db", "set", "api-key:alice", "", "coda"],
            &env[..],
            &b"v"[..],
        ),
        (
            vec![
                "--store",
                "/tmp/x.db",
                "get",
                "api-key:alice",
                "coda",
                "a\tb",
            ],
            &env[..],
            &b""[..],
        ),
        (
            vec![
                "--store",
                "/tmp/x.db",
                "delete",
                "api-key:alice",
                &long,
                "coda",
            ],
            &env[..],
            &b""[..],
        ),
        (vec!["--store", "/tmp/x.db", "list"], &[][..], &b""[..]),
        (
            vec!["--store", "/tmp/x.db", "list"],
            &[("MCP_PROXY_STORE_KEY", "short")][..],
            &b""[..],
        ),
    ] {
        let (code, out, err) = cli(&args, env, stdin);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(out.is_empty());
    }
}

/// Regression: `secrets set` took a value that is not UTF-8 (a binary
/// file piped in by mistake, a token in another encoding), and every
/// spawn of that principal's child was then refused with 403 "not valid
/// text for an environment variable": a value the proxy can never use
/// was stored without a word. It is now refused at `set`, as a NUL byte
/// already was, and nothing is stored.
#[test]
fn a_value_no_child_can_be_given_is_refused_at_set() {
    let dir = tempdir("cli-text");
    let db = dir.join("s.db");
    let db = db.to_str().unwrap();
    let key = StoreKey::generate_base64();
    let env = [("MCP_PROXY_STORE_KEY", key.as_str())];
    for (what, value) in [("NUL", &b"tok\0en"[..]), ("not UTF-8", &b"tok\xffen"[..])] {
        let (code, out, err) = cli(
            &["--store", db, "set", "api-key:alice", "coda", "coda"],
            &env,
            value,
        );
        assert_eq!(code, 64, "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(out.is_empty(), "{what}");
        let (code, _, err) = cli(
            &["--store", db, "get", "api-key:alice", "coda", "coda"],
            &env,
            b"",
        );
        assert_eq!(code, 1, "{what}: stored anyway: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a store location was a PostgreSQL server only when it
/// began with `postgres://` or `postgresql://` exactly; anything else was
/// a file path. A libpq connection string (`host=db user=proxy
/// password=…`, which PostgreSQL's own tools take) or a URL with its
/// scheme capitalised (`Postgres://…`) became an SQLite file, named with
/// the password, in the working directory: the replicas shared nothing,
/// and the password went into file names, error messages and the start's
/// log line (a file path is shown as given). Such a location is now
/// refused, and never shown.
#[test]
fn a_store_location_that_is_neither_a_postgres_url_nor_a_path_is_refused_unshown() {
    let dir = tempdir("cli-location");
    let key = StoreKey::generate_base64();
    let env = [("MCP_PROXY_STORE_KEY", key.as_str())];
    let locations = [
        "host=db.internal user=proxy password=hunter2 dbname=mcp",
        "Postgres://proxy:hunter2@db.internal/mcp",
        "POSTGRESQL://proxy:hunter2@db.internal/mcp",
        "mysql://proxy:hunter2@db.internal/mcp",
    ];
    for location in locations {
        let mut c = proxy_command();
        c.current_dir(&dir)
            .args(["secrets", "--store", location, "list"])
            .env("MCP_PROXY_STORE_KEY", &key);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{location}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{location}: {err}");
        assert!(
            !err.contains("hunter2"),
            "{location}: the password is shown: {err}"
        );
        // The named server's configuration refuses it the same way.
        let file = dir.join("proxy.toml");
        std::fs::write(
            &file,
            format!("[store]\nurl = {location:?}\n[[server]]\nname = \"s\"\ncommand = [\"x\"]\nenv = {{ T = {{ secret = \"t\" }} }}\n"),
        )
        .unwrap();
        let out = proxy_command()
            .current_dir(&dir)
            .arg("check-config")
            .arg(&file)
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "check-config {location}: {err}"
        );
        assert!(
            !err.contains("hunter2"),
            "{location}: the password is shown: {err}"
        );
        std::fs::remove_file(&file).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files created: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a store path that is a named pipe (or another file that is
/// not a regular file) was opened as if it were the SQLite file: open(2)
/// waited for a writer that never came, on a thread the process could not
/// get back. The store's deadline answered "did not answer within 1000ms",
/// which blamed the wrong thing, and `mcp-proxy secrets` then never
/// exited (the runtime waits for that thread at exit). Such a path is now
/// refused at once, named for what it is.
#[test]
fn a_store_path_that_is_a_fifo_is_refused_at_once_and_the_cli_exits() {
    let dir = tempdir("cli-fifo");
    let fifo = dir.join("s.db");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let key = StoreKey::generate_base64();
    let mut child = proxy_command()
        .args([
            "secrets",
            "--store",
            fifo.to_str().unwrap(),
            "--store-timeout",
            "1s",
            "list",
        ])
        .env("MCP_PROXY_STORE_KEY", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("still running after 10 s; stderr: {err}"));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}
