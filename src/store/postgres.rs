//! The shared backend: PostgreSQL, for replicas that must see the same
//! credentials (`--store postgres://user:pass@host/db`).
//!
//! Owns: the connection (opened lazily again after it breaks, times out or
//! fails a query: a connection that went silent, with no RST or FIN, looks
//! open for ever, so a timeout is the only sign; TCP keepalives end such a
//! connection at the socket level too), the schema
//! (`migrations/postgres/`, applied once under an advisory lock so replicas
//! starting together do not race) and the queries. The caller
//! ([`super::Store`]) puts a deadline on each call; the connect timeout and
//! the server's `statement_timeout` are the same deadline, so that a query
//! the store gave up on ends on the server too.
//!
//! TLS is not built in: reach the server over a private network, a Unix
//! socket (`host=/run/postgresql`) or a local TLS sidecar. The values are
//! sealed before they leave the proxy either way; TLS would protect the
//! principal and server names and the database password.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tracing::{debug, warn};

use super::{Row, Sealed, SecretRef};

/// Schema migrations, in order; `mcp_proxy_schema` records those applied.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_secrets.sql")];
/// TCP keepalive: first probe after this long idle…
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// …then one every this long…
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// …and the connection is dead after this many unanswered.
const KEEPALIVE_RETRIES: u32 = 3;
/// Advisory lock key for migrations ("mcpproxy" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d63_7070_726f_7879;

pub(crate) struct PgBackend {
    config: tokio_postgres::Config,
    /// The live connection, replaced when it breaks. Held only to clone the
    /// `Arc` or to reconnect; queries run on the clone, pipelined.
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

fn row_from(r: &tokio_postgres::Row) -> Row {
    Row {
        at: SecretRef {
            principal: r.get(0),
            server: r.get(1),
            name: r.get(2),
        },
        sealed: Sealed {
            key_id: r.get(3),
            nonce: r.get(4),
            ciphertext: r.get(5),
        },
    }
}

fn pg_err(e: tokio_postgres::Error) -> String {
    // The Display of a database error is terse ("db error"); the source says
    // why, with its DETAIL and HINT on lines of their own: joined here, as
    // every message of the store (and `secrets` stderr) is one line.
    let message = match std::error::Error::source(&e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    message.lines().collect::<Vec<_>>().join("; ")
}

impl PgBackend {
    pub(crate) async fn open(url: &str, timeout: Duration) -> Result<PgBackend, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        config.connect_timeout(timeout);
        // The store gives up on a call at its deadline; the server must
        // too. A query waiting for a lock (another session's `LOCK
        // TABLE`, a long transaction) does not notice that its client has
        // gone, and would hold one of the server's connections until the
        // lock went: one per abandoned call.
        // In milliseconds, at most what the server takes (an i32).
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        let deadline = format!("-c statement_timeout={ms}");
        let options = match config.get_options() {
            Some(given) => format!("{given} {deadline}"),
            None => deadline,
        };
        config.options(&options);
        config.application_name("mcp-proxy");
        // A peer that vanished (a failover, a NAT that dropped the flow) is
        // noticed by the kernel within about a minute even with no query.
        config.keepalives(true);
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.keepalives_interval(KEEPALIVE_INTERVAL);
        config.keepalives_retries(KEEPALIVE_RETRIES);
        let b = PgBackend {
            config,
            client: tokio::sync::Mutex::new(None),
        };
        let mut client = b.connect().await?;
        migrate(&mut client).await?;
        *b.client.lock().await = Some(Arc::new(client));
        Ok(b)
    }

    async fn connect(&self) -> Result<Client, String> {
        let (client, conn) = self.config.connect(NoTls).await.map_err(pg_err)?;
        // The connection task ends when its client is dropped or the socket breaks.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %e, "credential store connection ended");
            }
        });
        Ok(client)
    }

    /// Forgets the cached connection, so that the next call connects
    /// afresh: after a timeout or an error, the connection may be dead
    /// without knowing it. Queries still running on it keep their `Arc`
    /// and end with their own deadline; dropping the last one closes it.
    /// A connect in progress holds the lock and is left alone (it makes a
    /// fresh connection anyway).
    pub(crate) fn discard(&self) {
        if let Ok(mut guard) = self.client.try_lock()
            && guard.take().is_some()
        {
            debug!("credential store connection discarded; the next call reconnects");
        }
    }

    async fn client(&self) -> Result<Arc<Client>, String> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        debug!("connecting to the credential store");
        let c = Arc::new(self.connect().await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn get_many(
        &self,
        principal: &str,
        server: &str,
        names: &[String],
    ) -> Result<Vec<Row>, String> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT principal, server, name, key_id, nonce, sealed FROM mcp_proxy_secrets \
                 WHERE principal = $1 AND server = $2 AND name = ANY($3)",
                &[&principal, &server, &names],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(row_from).collect())
    }

    pub(crate) async fn put(&self, row: Row) -> Result<(), String> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO mcp_proxy_secrets (principal, server, name, key_id, nonce, sealed) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (principal, server, name) DO UPDATE SET \
             key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, \
             updated_at = now()",
            &[
                &row.at.principal,
                &row.at.server,
                &row.at.name,
                &row.sealed.key_id,
                &row.sealed.nonce,
                &row.sealed.ciphertext,
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn delete(&self, at: &SecretRef) -> Result<bool, String> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM mcp_proxy_secrets WHERE principal = $1 AND server = $2 AND name = $3",
                &[&at.principal, &at.server, &at.name],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    pub(crate) async fn list(&self) -> Result<Vec<Row>, String> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT principal, server, name, key_id, nonce, sealed FROM mcp_proxy_secrets \
                 ORDER BY principal, server, name",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(row_from).collect())
    }

    pub(crate) async fn replace(&self, old: &Row, new: &Sealed) -> Result<bool, String> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE mcp_proxy_secrets SET key_id = $1, nonce = $2, sealed = $3, updated_at = now() \
                 WHERE principal = $4 AND server = $5 AND name = $6 AND nonce = $7",
                &[
                    &new.key_id,
                    &new.nonce,
                    &new.ciphertext,
                    &old.at.principal,
                    &old.at.server,
                    &old.at.name,
                    &old.sealed.nonce,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }
}

/// Applies the migrations not yet recorded, in one transaction under an
/// advisory lock (replicas starting at once wait for each other).
async fn migrate(client: &mut Client) -> Result<(), String> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mcp_proxy_schema (version INTEGER PRIMARY KEY)")
        .await
        .map_err(pg_err)?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM mcp_proxy_schema",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(format!(
            "schema version {applied} is newer than this proxy knows ({}); upgrade mcp-proxy",
            MIGRATIONS.len()
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {} failed: {}", i + 1, pg_err(e)))?;
        tx.execute(
            "INSERT INTO mcp_proxy_schema (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}
