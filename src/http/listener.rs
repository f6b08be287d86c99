//! Accepting connections, for a single server ([`super::serve`]) and for
//! named servers ([`crate::servers`]) alike: one front door, so every
//! listener has the same protections before any request reaches a handler.
//!
//! Owns: `--max-connections` (counted from accept, before any
//! authentication; past the cap a new connection is closed at once), the
//! header-read and idle timeouts, the peer address every request carries
//! ([`PeerAddr`]: the failure limiter, the audit log and trusted-proxy
//! handling need it), and the graceful drain of open connections.
//!
//! Does not own: what a request does (the handler), nor what else a
//! shutdown stops (SSE streams, children): the caller does that around
//! [`Connections::drain`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::config::Config;
use crate::sse::Body;

/// The TCP peer of a connection, put in each request's extensions by
/// [`accept`] (authentication rate-limits and audits by it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What every listener enforces per connection, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// `--max-connections`.
    pub max_connections: usize,
    conn: ConnLimits,
}

impl ListenLimits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> ListenLimits {
        ListenLimits {
            max_connections: config.max_connections,
            conn: ConnLimits {
                header_read: config.header_read_timeout,
                idle: config.connection_idle_timeout,
            },
        }
    }
}

/// The connections [`accept`] took: the caller drains them.
pub struct Connections {
    tracker: TaskTracker,
    drain: CancellationToken,
    /// Goes on accepting during the drain (see [`Connections::drain`]).
    late: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Connections {
    /// Asks every connection to finish the request it is serving and
    /// close, then waits up to `grace`; whether all closed in time. The
    /// caller then stops the children, which ends what the rest still
    /// wait on; their sockets close when their tasks end or, at the
    /// latest, with the runtime at exit.
    ///
    /// The listener stays open meanwhile: a call in flight may wait on
    /// its client's answer to the server's request (sampling, elicitation,
    /// roots), which comes in a POST of its own, usually on a new
    /// connection (the idle ones were just closed). Each connection taken
    /// now serves its requests (the handler refuses new work while
    /// draining) and is closed once it has no request in the handler. It
    /// is closed when the drain ends.
    ///
    /// The drain also waits for `settled` (requests in flight whose
    /// clients went away and may come back for the answer, with
    /// `Last-Event-ID`, on a connection taken now), within the same
    /// `grace`; `true` when both were done in time.
    pub async fn drain(self, grace: Duration, settled: impl Future<Output = ()>) -> bool {
        self.drain.cancel();
        self.tracker.close();
        let Connections { tracker, late, .. } = self;
        let done = async {
            tokio::join!(tracker.wait(), settled);
        };
        tokio::select! {
            done = tokio::time::timeout(grace, done) => done.is_ok(),
            () = late => false,
        }
    }
}

/// What serves each accepted connection: the handler, the HTTP builder,
/// the `--max-connections` slots and the connection timeouts.
struct Acceptor<H> {
    handler: H,
    builder: auto::Builder<TokioExecutor>,
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    connections: TaskTracker,
    drain: CancellationToken,
    refusals: crate::logging::RateLimit,
    timeouts: Arc<crate::logging::RateLimit>,
    conn_limits: ConnLimits,
}

/// Accepts connections on `listener` until `shutdown` and serves each
/// request with `handler` (the request carries its [`PeerAddr`]); the
/// listener is closed when the returned connections have drained.
///
/// A connection that has not sent a complete request head within
/// `--header-read-timeout` of being accepted, or that moves no bytes and
/// has no request in the handler for `--connection-idle-timeout`, is closed.
/// Later request heads on a keep-alive connection must complete within
/// `--connection-idle-timeout` (hyper's HTTP/1 header timer).
pub async fn accept<H, F>(
    listener: TcpListener,
    limits: ListenLimits,
    handler: H,
    shutdown: &CancellationToken,
) -> Connections
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 header timer (off without a timer) starts whenever the
    // connection waits for a request head, so it also closes an idle
    // keep-alive connection: it gets the idle timeout, and the first head
    // gets the stricter `header_read` below. A short value here would cut
    // keep-alive connections that clients reuse for their next POST.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.conn.idle);
    let acceptor = Acceptor {
        handler,
        builder,
        slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
        max_connections: limits.max_connections,
        connections: TaskTracker::new(),
        drain: CancellationToken::new(),
        refusals: conn_log_limit(),
        timeouts: Arc::new(conn_log_limit()),
        conn_limits: limits.conn,
    };
    loop {
        tokio::select! {
            conn = listener.accept() => acceptor.take(conn, false).await,
            _ = shutdown.cancelled() => break,
        }
    }
    let (tracker, drain) = (acceptor.connections.clone(), acceptor.drain.clone());
    let late = async move {
        loop {
            acceptor.take(listener.accept().await, true).await;
        }
    };
    Connections {
        tracker,
        drain,
        late: Box::pin(late),
    }
}

impl<H, F> Acceptor<H>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Serves one accepted connection; `late`: taken during the drain.
    async fn take(&self, conn: std::io::Result<(tokio::net::TcpStream, SocketAddr)>, late: bool) {
        let (stream, peer) = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Closed at once (RST-free close): the client sees the refusal
            // instead of waiting in the backlog.
            drop(stream);
            if let Some(dropped) = self.refusals.admit() {
                warn!(
                    %peer,
                    max = self.max_connections,
                    not_logged = dropped,
                    "connection limit reached; closed a new connection (--max-connections)"
                );
            }
            return;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let svc_handler = self.handler.clone();
        let svc_activity = activity.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let handler = svc_handler.clone();
            req.extensions_mut().insert(PeerAddr(peer));
            svc_activity.requests.fetch_add(1, Ordering::Relaxed);
            svc_activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight(svc_activity.clone());
            let span = debug_span!("request", method = %req.method(), path = %req.uri().path());
            async move {
                let _in_flight = in_flight;
                Ok::<_, Infallible>(handler(req).await)
            }
            .instrument(span)
        });
        let conn = self.builder.serve_connection(io, svc).into_owned();
        let drain = self.drain.clone();
        let log_limit = self.timeouts.clone();
        let conn_limits = self.conn_limits;
        let served = activity.clone();
        self.connections.spawn(
            async move {
                // Held for the connection's life: its slot under --max-connections.
                let _permit = permit;
                let mut conn = std::pin::pin!(conn);
                let mut ticks = tokio::time::interval(conn_limits.tick());
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut draining = false;
                loop {
                    tokio::select! {
                        r = conn.as_mut() => {
                            match r {
                                Ok(()) => {}
                                // hyper's header timer: a slow request head
                                // or an idle keep-alive connection.
                                Err(e) if e
                                    .downcast_ref::<hyper::Error>()
                                    .is_some_and(hyper::Error::is_timeout) =>
                                {
                                    if let Some(dropped) = log_limit.admit() {
                                        info!(
                                            reason = "idle, or a request head slower than --connection-idle-timeout",
                                            not_logged = dropped,
                                            "closed a connection"
                                        );
                                    }
                                }
                                Err(e) => debug!(error = %e, "connection ended with an error"),
                            }
                            return;
                        }
                        _ = drain.cancelled(), if !draining && !late => {
                            draining = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        _ = ticks.tick() => {
                            // One accepted during the drain serves what it
                            // came for, then closes.
                            if late
                                && !draining
                                && served.requests.load(Ordering::Relaxed) > 0
                                && served.in_flight.load(Ordering::Relaxed) == 0
                            {
                                draining = true;
                                conn.as_mut().graceful_shutdown();
                            }
                            let Some(why) = conn_limits.expired(&activity) else { continue };
                            if let Some(dropped) = log_limit.admit() {
                                info!(reason = why, not_logged = dropped, "closed a connection");
                            }
                            // Dropping the connection closes the socket.
                            return;
                        }
                    }
                }
            }
            .instrument(debug_span!("conn", %peer)),
        );
    }
}

/// Per-connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// A new connection must deliver a whole request head this soon.
    header_read: Duration,
    /// A connection with no bytes moving and no request being handled is
    /// closed after this.
    idle: Duration,
}

impl ConnLimits {
    /// How often a connection's timers are checked.
    fn tick(&self) -> Duration {
        (self.header_read.min(self.idle) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Why the connection must be closed now, if it must.
    fn expired(&self, a: &Activity) -> Option<&'static str> {
        if a.requests.load(Ordering::Relaxed) == 0 && a.born.elapsed() > self.header_read {
            Some("no complete request head within --header-read-timeout")
        } else if a.in_flight.load(Ordering::Relaxed) == 0 && a.idle_for() > self.idle {
            Some("idle for --connection-idle-timeout")
        } else {
            None
        }
    }
}

/// When a connection last moved bytes, and how many requests it has in
/// the handler, for the idle and header-read timeouts.
struct Activity {
    born: Instant,
    /// Milliseconds after `born` of the last read or write that moved bytes.
    last_ms: std::sync::atomic::AtomicU64,
    /// Requests whose handler is running.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Requests whose head was read (the handler was called).
    requests: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            last_ms: Default::default(),
            in_flight: Default::default(),
            requests: Default::default(),
        }
    }

    fn mark(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
}

/// Decrements the in-flight count when a handler finishes or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.mark();
    }
}

/// The TCP stream, recording when bytes move.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.mark();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            this.activity.mark();
        }
        r
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            this.activity.mark();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Log lines about refused or timed-out connections: an attacker decides
/// their rate.
fn conn_log_limit() -> crate::logging::RateLimit {
    crate::logging::RateLimit::new(20, 2)
}
