//! The embedded backend: one SQLite file, created owner-only (0600).
//!
//! Owns: the file, its schema (`migrations/sqlite/`, versioned with
//! `PRAGMA user_version`) and the blocking calls, which run on tokio's
//! blocking pool so a slow disk never stalls the runtime. The caller
//! ([`super::Store`]) puts a deadline on each call; SQLite's own busy
//! timeout (three quarters of that deadline, so that a file another
//! process holds locked is reported as locked, not as a bare timeout)
//! bounds waits for another process's lock.
//!
//! A call waits for the one connection *before* it takes a thread of the
//! blocking pool, and that wait ends with the caller's deadline: at most
//! one thread is ever busy with the store. Taking the thread first (and
//! waiting for the connection on it) let a burst of calls against a locked
//! file fill the whole pool with calls whose callers had given up, and
//! starve everything else that needs it (DNS lookups, the config poll,
//! PID 1's reaping).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::{Row, Sealed, SecretRef};

/// Schema migrations, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite/0001_secrets.sql")];

pub(crate) struct SqliteBackend {
    /// One connection: SQLite serialises writers anyway, and every
    /// statement here is a single indexed lookup or write. An async lock,
    /// taken before the blocking pool is (see the module docs).
    conn: Arc<tokio::sync::Mutex<Connection>>,
}

/// SQLite's busy timeout for a call deadline of `deadline`: shorter, so
/// that a lock held by another process ends the call with "database is
/// locked" before the deadline turns it into a bare timeout.
fn busy_timeout(deadline: Duration) -> Duration {
    deadline * 3 / 4
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        at: SecretRef {
            principal: r.get(0)?,
            server: r.get(1)?,
            name: r.get(2)?,
        },
        sealed: Sealed {
            key_id: r.get(3)?,
            nonce: r.get(4)?,
            ciphertext: r.get(5)?,
        },
    })
}

impl SqliteBackend {
    pub(crate) async fn open(path: &str, busy: Duration) -> Result<SqliteBackend, String> {
        let path = path.to_string();
        tokio::task::spawn_blocking(move || Self::open_blocking(Path::new(&path), busy))
            .await
            .map_err(|e| format!("opening the store failed: {e}"))?
    }

    fn open_blocking(path: &Path, busy: Duration) -> Result<SqliteBackend, String> {
        // Create the file owner-only before SQLite opens it with the umask's
        // mode. Without blocking: a named pipe would hold open(2) (and a
        // thread nothing gets back) until a reader came; it, a device or a
        // directory is refused for what it is.
        {
            use std::os::unix::fs::OpenOptionsExt;
            let cannot = |e: &dyn std::fmt::Display| format!("cannot open {}: {e}", path.display());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| match std::fs::metadata(path) {
                    Ok(m) if !m.is_file() => cannot(&"it is not a regular file"),
                    _ => cannot(&e),
                })?;
            if !file.metadata().map_err(|e| cannot(&e))?.is_file() {
                return Err(cannot(&"it is not a regular file"));
            }
        }
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(busy_timeout(busy))
            .map_err(|e| e.to_string())?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| format!("not a credential store ({e})"))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(format!(
                "schema version {version} is newer than this proxy knows ({}); upgrade mcp-proxy",
                MIGRATIONS.len()
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(|e| format!("migration {} failed: {e}", i + 1))?;
        }
        Ok(SqliteBackend {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        // Cancelled with the caller (its deadline): a call that never got
        // the connection never takes a thread.
        let conn = self.conn.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|e| format!("store task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn get_many(
        &self,
        principal: &str,
        server: &str,
        names: &[String],
    ) -> Result<Vec<Row>, String> {
        let (p, s, names) = (principal.to_string(), server.to_string(), names.to_vec());
        self.run(move |c| {
            // One statement for every name: a spawn waits on this.
            let marks = (0..names.len())
                .map(|i| format!("?{}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = c.prepare_cached(&format!(
                "SELECT principal, server, name, key_id, nonce, sealed FROM secrets \
                 WHERE principal = ?1 AND server = ?2 AND name IN ({marks})"
            ))?;
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![&p, &s];
            params.extend(names.iter().map(|n| n as &dyn rusqlite::ToSql));
            st.query_map(params.as_slice(), row_from)?.collect()
        })
        .await
    }

    pub(crate) async fn put(&self, row: Row) -> Result<(), String> {
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO secrets (principal, server, name, key_id, nonce, sealed, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (principal, server, name) DO UPDATE SET \
                 key_id = excluded.key_id, nonce = excluded.nonce, sealed = excluded.sealed, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![
                row.at.principal,
                row.at.server,
                row.at.name,
                row.sealed.key_id,
                row.sealed.nonce,
                row.sealed.ciphertext,
                now()
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete(&self, at: &SecretRef) -> Result<bool, String> {
        let at = at.clone();
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM secrets WHERE principal = ?1 AND server = ?2 AND name = ?3",
                )?
                .execute(params![at.principal, at.server, at.name])?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn list(&self) -> Result<Vec<Row>, String> {
        self.run(|c| {
            let mut st = c.prepare_cached(
                "SELECT principal, server, name, key_id, nonce, sealed FROM secrets \
                 ORDER BY principal, server, name",
            )?;
            st.query_map([], row_from)?.collect()
        })
        .await
    }

    pub(crate) async fn replace(&self, old: &Row, new: &Sealed) -> Result<bool, String> {
        let (old, new) = (old.clone(), new.clone());
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE secrets SET key_id = ?1, nonce = ?2, sealed = ?3, updated_at = ?4 \
                     WHERE principal = ?5 AND server = ?6 AND name = ?7 AND nonce = ?8",
                )?
                .execute(params![
                    new.key_id,
                    new.nonce,
                    new.ciphertext,
                    now(),
                    old.at.principal,
                    old.at.server,
                    old.at.name,
                    old.sealed.nonce
                ])?;
            Ok(n > 0)
        })
        .await
    }
}
