//! The log's account of an endpoint that authentication depends on (the
//! JWKS, the forward-auth endpoint) while it fails: one warning when it
//! starts failing, then at most one a minute with the number of calls
//! that failed since, and one line when it answers again. Never a line
//! per request: while such an endpoint is down, every request that needs
//! it fails the same way, and anyone, unauthenticated, decides how many
//! requests there are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::lock;

/// Least time between two warnings of one outage.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// One endpoint's failures, as logged.
pub struct Outage {
    /// What fails, for the log (`"forward-auth endpoint"`).
    what: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the outage began, while it lasts.
    since: Option<Instant>,
    /// Failures since it began.
    failures: u64,
    /// When it was last logged.
    said: Option<Instant>,
}

impl Outage {
    /// No outage yet of `what`.
    pub fn new(what: &'static str) -> Outage {
        Outage {
            what,
            state: Mutex::new(State::default()),
        }
    }

    /// A call that failed with `error` (never a secret: a redacted URL, a
    /// status, a connection error).
    pub fn failed(&self, error: &str) {
        let now = Instant::now();
        let mut s = lock(&self.state);
        s.failures += 1;
        let Some(since) = s.since else {
            s.since = Some(now);
            s.said = Some(now);
            warn!(
                error,
                "{} unavailable: refusing what needs it with 503 (logged again once a minute while it lasts)",
                self.what
            );
            return;
        };
        if s.said.is_none_or(|t| now.duration_since(t) >= REMIND_EVERY) {
            s.said = Some(now);
            warn!(
                error,
                failures = s.failures,
                down_for_s = now.duration_since(since).as_secs(),
                "{} still unavailable",
                self.what
            );
        }
    }

    /// A call that got an answer: ends an outage, if there was one.
    pub fn answered(&self) {
        let mut s = lock(&self.state);
        if let Some(since) = s.since.take() {
            info!(
                failures = s.failures,
                down_for_s = since.elapsed().as_secs(),
                "{} answers again",
                self.what
            );
            *s = State::default();
        }
    }

    /// Whether an outage is going on.
    pub fn is_down(&self) -> bool {
        lock(&self.state).since.is_some()
    }
}
