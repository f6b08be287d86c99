//! Children of 2026-07-28 clients, one per principal (the default
//! isolating mode with authentication or per-user credentials): no
//! principal reads another's state, and each child may hold its
//! principal's own credentials (see [`crate::store::ChildSecrets`]).
//!
//! Owns: the table principal → child, its cap (each child holds one of
//! its principal's session slots, so `--max-sessions` and
//! `--max-sessions-per-principal` bound children of both eras together),
//! the start on first use (one start even when requests race: those that
//! arrive while it is under way share its outcome, a failure included), and idle
//! expiry: a child with nothing attached,
//! nothing in flight and no request for `--session-idle-timeout` leaves
//! the table and is stopped; the principal's next request starts a fresh
//! one. A child that crashes leaves the table too, and is stopped rather
//! than restarted: it was started with its principal's stored credentials
//! of that moment, and a restart would reuse them (a credential deleted
//! since included); the principal's next request starts a fresh child
//! with what the store holds then. Does not own: how a child is started
//! (the caller passes that in, see [`crate::http::App`]) or the
//! multiplexer itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::auth::Principal;
use crate::error::ProxyError;
use crate::lock;
use crate::session::{Reservation, Sessions};
use crate::upstream::{Health, Upstream};

/// What picks a child: the principal and, for a server that takes
/// credentials from request headers, a digest of those values (a request
/// is served only by a child holding what it carries; a new value gets a
/// child of its own, and the old one is reaped when idle).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildKey {
    principal: Principal,
    headers: Option<[u8; 32]>,
}

impl ChildKey {
    /// The key of `principal`'s requests carrying `header_env`
    /// ((variable, value) pairs; empty for servers that take none).
    pub fn new(principal: &Principal, header_env: &[(String, String)]) -> ChildKey {
        use sha2::{Digest, Sha256};
        let headers = (!header_env.is_empty()).then(|| {
            let mut h = Sha256::new();
            for (var, value) in header_env {
                // Length-prefixed: no two lists hash alike by concatenation.
                for part in [var, value] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
            }
            h.finalize().into()
        });
        ChildKey {
            principal: principal.clone(),
            headers,
        }
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl std::fmt::Display for ChildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the header values, nor their digest.
        write!(f, "{}", self.principal)
    }
}

/// One principal's child, started on first use.
struct Entry {
    child: OnceCell<Arc<Upstream>>,
    /// How many starts on this entry failed, and the last one's error. A
    /// request that joined the entry before a start failed gets that
    /// error rather than starting again: else, while the store does not
    /// answer, a burst of one principal's requests would ask it one after
    /// the other, the n-th answered after n store deadlines.
    failed: Mutex<(u64, Option<ProxyError>)>,
    /// The last request that asked for this child.
    last_used: Mutex<Option<Instant>>,
    /// The session slot this child takes, given back when the entry goes.
    _slot: Reservation,
}

impl Entry {
    fn touch(&self) {
        *lock(&self.last_used) = Some(Instant::now());
    }

    fn quiet_for(&self) -> Duration {
        lock(&self.last_used).map_or(Duration::MAX, |t| t.elapsed())
    }

    /// How many starts have failed so far.
    fn failures(&self) -> u64 {
        lock(&self.failed).0
    }

    /// The error of a start that failed after `seen` failures were
    /// counted, if one did.
    fn failed_since(&self, seen: u64) -> Option<ProxyError> {
        let failed = lock(&self.failed);
        if failed.0 > seen {
            failed.1.clone()
        } else {
            None
        }
    }

    fn record_failure(&self, e: &ProxyError) {
        let mut failed = lock(&self.failed);
        failed.0 += 1;
        failed.1 = Some(e.clone());
    }
}

/// The per-principal children of one server.
pub struct PrincipalChildren {
    /// Where each child takes its slot.
    sessions: Arc<Sessions>,
    children: Arc<Mutex<HashMap<ChildKey, Arc<Entry>>>>,
    /// Owns the crash watchers (shutdown waits for them).
    tasks: TaskTracker,
}

impl PrincipalChildren {
    /// An empty table whose children take their slots from `sessions`;
    /// its watchers run on `tasks`.
    pub fn new(sessions: Arc<Sessions>, tasks: TaskTracker) -> PrincipalChildren {
        PrincipalChildren {
            sessions,
            children: Arc::new(Mutex::new(HashMap::new())),
            tasks,
        }
    }

    /// The child of `key`, started with `start` if there is none; a new
    /// child beyond the session caps gets the error a new session would
    /// (503 for `--max-sessions`, 429 for `--max-sessions-per-principal`).
    pub async fn get_or_start<F, Fut>(
        &self,
        key: &ChildKey,
        start: F,
    ) -> Result<Arc<Upstream>, ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<Upstream>, ProxyError>>,
    {
        let (entry, seen) = {
            let mut children = lock(&self.children);
            let entry = match children.get(key) {
                Some(e) => e.clone(),
                None => {
                    let slot = self.sessions.reserve(&key.principal).map_err(|e| {
                        warn!("no room for another 2026-07-28 child");
                        ProxyError::from(e)
                    })?;
                    let e = Arc::new(Entry {
                        child: OnceCell::new(),
                        failed: Mutex::new((0, None)),
                        last_used: Mutex::new(None),
                        _slot: slot,
                    });
                    children.insert(key.clone(), e.clone());
                    e
                }
            };
            // Under the table's lock: the reaper sees this request or
            // removed the entry before it (and a new one is made here).
            entry.touch();
            let seen = entry.failures();
            (entry, seen)
        };
        let started = std::sync::atomic::AtomicBool::new(false);
        let child = entry
            .child
            .get_or_try_init(|| async {
                // A start that failed while this request waited for it
                // answers this request too; a request that comes after
                // it tries again.
                if let Some(e) = entry.failed_since(seen) {
                    return Err(e);
                }
                let r = start().await;
                match &r {
                    Ok(_) => started.store(true, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => entry.record_failure(e),
                }
                r
            })
            .await
            .cloned();
        // A slow start counts from its end, not its beginning.
        entry.touch();
        if let Ok(up) = &child
            && started.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.evict_on_crash(key.clone(), &entry, up);
        }
        if child.is_err() {
            // A failed start holds no slot, unless another request is
            // about to try again on this entry.
            let mut children = lock(&self.children);
            let ours = children
                .get(key)
                .is_some_and(|e| Arc::ptr_eq(e, &entry) && e.child.get().is_none());
            if ours && Arc::strong_count(&entry) == 2 {
                children.remove(key);
            }
        }
        child
    }

    /// Watches `up`, just started for `key`: once it crashes (the
    /// multiplexer would restart it with the same environment), its entry
    /// leaves the table and it is stopped, so the
    /// principal's next request starts a child with the store's current
    /// values. The watch ends with the child; it holds neither the entry
    /// nor the table alive.
    fn evict_on_crash(&self, key: ChildKey, entry: &Arc<Entry>, up: &Arc<Upstream>) {
        let mut health = up.watch_health();
        let (table, entry) = (Arc::downgrade(&self.children), Arc::downgrade(entry));
        let up = Arc::downgrade(up);
        self.tasks.spawn(async move {
            // A child starts Ready; only the restart after a crash reports
            // anything else (Starting, then Ready or CrashLooping).
            // A child stopped on purpose (idle, shutdown) ends Dead, and
            // there is nothing to do for it.
            loop {
                if health.changed().await.is_err() {
                    return;
                }
                match *health.borrow_and_update() {
                    Health::Ready => {}
                    Health::Dead(_) => return,
                    Health::Starting | Health::CrashLooping => break,
                }
            }
            let evicted = match (table.upgrade(), entry.upgrade()) {
                (Some(table), Some(entry)) => {
                    let mut children = lock(&table);
                    let ours = children.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry));
                    if ours {
                        children.remove(&key);
                    }
                    ours
                }
                _ => false,
            };
            if evicted && let Some(up) = up.upgrade() {
                warn!(principal = %key, "per-principal child exited; not restarting it with its old credentials (the next request starts a fresh one)");
                up.stop().await;
            }
        });
    }

    /// Takes out every child that has been idle for `idle`: nothing
    /// attached, nothing in flight, no request for it since. The caller
    /// stops them. An entry whose start failed is dropped the same way,
    /// so that it does not hold a slot.
    pub fn take_idle(&self, idle: Duration) -> Vec<(ChildKey, Arc<Upstream>)> {
        let mut children = lock(&self.children);
        let mut out = Vec::new();
        children.retain(|key, entry| {
            // Another holder is a request between its lookup and its start.
            if Arc::strong_count(entry) > 1 || entry.quiet_for() < idle {
                return true;
            }
            match entry.child.get() {
                Some(up) if !up.is_idle() => true,
                Some(up) => {
                    out.push((key.clone(), up.clone()));
                    false
                }
                None => false,
            }
        });
        out
    }

    /// Every child started so far.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        lock(&self.children)
            .values()
            .filter_map(|e| e.child.get().cloned())
            .collect()
    }

    /// How many principals hold a child (or are starting one).
    pub fn len(&self) -> usize {
        lock(&self.children).len()
    }

    /// Whether no principal holds a child.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
