//! The credential store under a hostile or broken backend: a PostgreSQL
//! that accepts and never answers, a SQLite file another connection holds
//! locked, corrupted rows, values at the size limit, and principal names
//! that differ only by case, normalisation or a trailing space. Each must
//! be a clear error within the store's deadline, never a hang, a panic, a
//! plain-text value in a message or another principal's value.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_sidecar::store::{KeyRing, Secret, SecretRef, Store, StoreKey};
use support::process::tempdir;

/// The SQLite store at `path`, with [`ring`] and a 5 s deadline.
async fn open_sqlite(path: &std::path::Path) -> Store {
    Store::open(path.to_str().unwrap(), ring(), Duration::from_secs(5))
        .await
        .unwrap()
}

fn ring() -> KeyRing {
    KeyRing::parse(&StoreKey::generate_base64()).unwrap()
}

/// A TCP listener that accepts, reads whatever comes and never writes: a
/// PostgreSQL that hangs (a stuck process, a full disk, a paused VM).
async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                // Held open until the peer goes: never an answer.
                std::future::pending::<()>().await;
            }));
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_postgres_that_accepts_and_never_answers_is_an_error_within_the_deadline() {
    let (port, task) = silent_listener().await;
    let url = format!("postgres://proxy:hunter2@127.0.0.1:{port}/mcp");
    let deadline = Duration::from_millis(700);
    let started = Instant::now();
    let err = Store::open(&url, ring(), deadline)
        .await
        .err()
        .expect("a store that never answers cannot open")
        .to_string();
    let took = started.elapsed();
    assert!(took < deadline + Duration::from_millis(500), "{took:?}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("proxy"), "{err}");
    task.abort();
}

#[tokio::test]
async fn a_value_at_the_size_limit_is_stored_and_one_byte_more_is_refused_clearly() {
    use mcp_sidecar::store::seal::MAX_SECRET_BYTES;
    let dir = tempdir("size");
    let store = open_sqlite(&dir.join("s.db")).await;
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    let full = vec![b'x'; MAX_SECRET_BYTES];
    store.set(&at, &Secret::new(full.clone())).await.unwrap();
    assert_eq!(store.get(&at).await.unwrap().unwrap().expose(), &full[..]);
    let mut over = vec![b'y'; MAX_SECRET_BYTES];
    over.push(b'z');
    let err = store
        .set(&at, &Secret::new(over))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limited to 65536 bytes"), "{err}");
    assert!(!err.contains("yyyy"), "{err}");
    // The refused write left the stored value alone.
    assert_eq!(store.get(&at).await.unwrap().unwrap().expose(), &full[..]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_corrupted_row_is_an_error_naming_the_row_and_never_its_value() {
    let dir = tempdir("corrupt");
    let path = dir.join("s.db");
    let store = open_sqlite(&path).await;
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    store
        .set(&at, &Secret::new(b"alice-plain-7731".to_vec()))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    for corrupt in [
        // A flipped byte in the ciphertext, a truncated one, an empty one,
        // a nonce of the wrong length.
        "UPDATE secrets SET sealed = CAST(X'00' || substr(sealed, 2) AS BLOB)",
        "UPDATE secrets SET sealed = substr(sealed, 1, 3)",
        "UPDATE secrets SET sealed = X''",
        "UPDATE secrets SET nonce = X'0102'",
    ] {
        store
            .set(&at, &Secret::new(b"alice-plain-7731".to_vec()))
            .await
            .unwrap();
        conn.execute(corrupt, []).unwrap();
        let err = store.get(&at).await.unwrap_err().to_string();
        assert!(err.contains("does not open"), "{corrupt}: {err}");
        assert!(err.contains("api-key:alice/coda/coda"), "{err}");
        assert!(!err.contains("alice-plain"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn principals_that_differ_only_by_case_normalisation_or_spaces_never_share_a_value() {
    let dir = tempdir("names");
    let store = open_sqlite(&dir.join("s.db")).await;
    // NFC "é" (U+00E9) is stored; NFD "e" + U+0301 and the rest must miss.
    let owner = "jwt:ren\u{e9}";
    store
        .set(
            &SecretRef::new(owner, "coda", "coda"),
            &Secret::new(b"owner-value".to_vec()),
        )
        .await
        .unwrap();
    for other in [
        "jwt:RENÉ",
        "jwt:Ren\u{e9}",
        "jwt:rene\u{301}",
        "jwt:ren\u{e9} ",
        " jwt:ren\u{e9}",
        "jwt:ren\u{e9}\u{200b}",
        "api-key:ren\u{e9}",
        "forward:ren\u{e9}",
    ] {
        let got = store
            .get_for_child(other, "coda", &["coda".into()])
            .await
            .map(|v| v.into_iter().filter_map(|(_, v)| v).count());
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "{other:?} got {owner:?}'s value"
        );
    }
    // A NUL or another control character is no principal at all.
    for bad in ["jwt:ren\u{e9}\0", "jwt:a\u{7f}", "jwt:a\nb"] {
        assert!(
            store
                .get_for_child(bad, "coda", &["coda".into()])
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Keeps the store file locked for writing (`BEGIN EXCLUSIVE`) on another
/// connection, as a backup tool or a second process would, until dropped.
struct Locker {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Locker {
    fn lock(path: &std::path::Path) -> Locker {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        });
        ready.recv_timeout(Duration::from_secs(5)).unwrap();
        Locker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Regression: SQLite's busy timeout was the call's deadline itself, so a
/// file another process held locked came back as a bare timeout ("did
/// not answer"), with nothing saying it was locked.
#[tokio::test]
async fn a_locked_sqlite_file_is_a_clear_error_within_the_deadline() {
    let dir = tempdir("locked");
    let path = dir.join("s.db");
    let deadline = Duration::from_millis(800);
    let store = Store::open(path.to_str().unwrap(), ring(), deadline)
        .await
        .unwrap();
    let at = SecretRef::new("api-key:alice", "coda", "coda");
    store.set(&at, &Secret::new(b"v".to_vec())).await.unwrap();
    let locker = Locker::lock(&path);
    let started = Instant::now();
    let err = store.get(&at).await.unwrap_err().to_string();
    let took = started.elapsed();
    assert!(took <= deadline + Duration::from_millis(300), "{took:?}");
    // Named for what it is, not a bare timeout.
    assert!(err.contains("database is locked"), "{err}");
    drop(locker);
    // Once the lock goes, the store answers again.
    assert!(store.get(&at).await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: every SQLite call took a blocking-pool thread at once and
/// then waited there for the one connection. With the file locked by
/// another process, each spawn's lookup gave up at its deadline but its
/// thread stayed, queued behind the others for the lock, each then
/// waiting out SQLite's busy timeout: a burst of session starts filled
/// the whole blocking pool, and everything else that needs it (DNS
/// lookups for JWKS and forward auth, the config poll's read, PID 1's
/// reaping) waited behind calls nobody was waiting for any more.
#[test]
fn a_locked_sqlite_file_cannot_fill_the_blocking_pool() {
    const POOL: usize = 8;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(POOL)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempdir("pool");
        let path = dir.join("s.db");
        let deadline = Duration::from_millis(300);
        let store = Arc::new(
            Store::open(path.to_str().unwrap(), ring(), deadline)
                .await
                .unwrap(),
        );
        let at = SecretRef::new("api-key:alice", "coda", "coda");
        store.set(&at, &Secret::new(b"v".to_vec())).await.unwrap();
        let _locker = Locker::lock(&path);
        // A burst of session starts, each looking its values up.
        let calls: Vec<_> = (0..4 * POOL)
            .map(|_| {
                let (store, at) = (store.clone(), at.clone());
                tokio::spawn(async move { store.get(&at).await })
            })
            .collect();
        let started = Instant::now();
        for c in calls {
            assert!(c.await.unwrap().is_err());
        }
        // Each gave up within about its own deadline.
        assert!(started.elapsed() < deadline * 3, "{:?}", started.elapsed());
        // Other blocking work still runs at once.
        let probe = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(|| ()))
            .await
            .expect("a blocking task never ran")
            .unwrap();
        let waited = probe.elapsed();
        assert!(
            waited < Duration::from_millis(200),
            "a blocking task waited {waited:?} behind abandoned store calls"
        );
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// Regression: a principal the store cannot name (a JWT `sub` or a
/// forward-auth name past 256 bytes, or with a control character) was a
/// store failure, which the proxy answers 503 "the credential store is
/// unavailable; try again later": a client retried for ever what can
/// never work, and the operator's log blamed the store. It is now a
/// credential error (403) that says why.
#[tokio::test]
async fn a_principal_the_store_cannot_name_is_refused_as_such_not_as_a_store_failure() {
    use mcp_sidecar::store::{ChildSecrets, CredentialError};
    let dir = tempdir("principal");
    let store = Arc::new(
        Store::open(
            dir.join("s.db").to_str().unwrap(),
            ring(),
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    );
    let secrets = ChildSecrets::new(store, "coda", vec![("TOKEN".into(), "coda".into())]);
    for principal in [
        format!("jwt:{}", "a".repeat(300)),
        "jwt:alice\u{7f}".to_string(),
        "forward:bob\u{85}".to_string(),
    ] {
        let e = secrets.env_for(Some(&principal)).await.unwrap_err();
        assert!(
            !matches!(e, CredentialError::Store(_)),
            "{principal:?}: answered as a store failure: {e}"
        );
        assert!(
            e.to_string().contains("cannot hold stored credentials"),
            "{e}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
