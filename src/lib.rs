//! mcp-sidecar: put any stdio MCP server on HTTP, for clients of every
//! protocol era. The Rust-native Coda MCP server that ships beside it is its
//! own crate in this workspace (`crates/coda-mcp`), so the proxy builds
//! without an HTTP client or the MCP server SDK.
//!
//! # Layout
//!
//! The module list is the architecture, read from the child outwards:
//!
//! - [`jsonrpc`]: JSON-RPC message envelopes (ids kept as raw JSON so they go
//!   back byte-exact) and the newline line codec with a length cap.
//! - [`child`]: the stdio server as a child process in its own process
//!   group: one stdin writer, one stdout reader, stderr drained to the log,
//!   and the staged stop (close stdin, SIGTERM the group, SIGKILL).
//! - [`guard`]: the process that kills every child's group, and what the
//!   children started outside their groups, when the proxy dies, even by
//!   SIGKILL.
//! - [`upstream`]: the multiplexer over one child. It rewrites request ids and
//!   progress tokens to proxy-unique values, routes every message the child
//!   sends to the session and stream it belongs to, performs the child's one
//!   handshake (`initialize`, or `server/discover` for a 2026-07-28 child),
//!   fails in-flight requests when the child dies and restarts a shared one.
//!   Per-session mode is the same multiplexer with one session attached.
//!   `Upstream` is a handle; `upstream::worker` is the one task that owns
//!   the routing tables, the order of writes to the child and every
//!   deadline, in one `select!` over commands, the child's lines, room in
//!   its stdin and timers. Its other parts, one concern per file:
//!   `upstream::routes` (the routing tables and id/progress-token
//!   rewriting), `upstream::port` (a session as the multiplexer sees it),
//!   `upstream::handshake` (the handshake and era detection),
//!   `upstream::supervisor` (the child's life: death, restart and
//!   backoff), `upstream::fanout` (list-changed,
//!   resource updates, log levels), `upstream::tasks` (which session owns
//!   which task in shared mode), `upstream::mrtr` (multi round-trip
//!   requests translated between eras), `upstream::fill` (the members
//!   and error codes a 2026-07-28 client needs in a 2025-era child's
//!   answer), `upstream::stamp` (the child's `serverInfo` in each such
//!   result's `_meta`), `upstream::cut` (a long answer
//!   being passed on as the child writes it, and its deadline),
//!   `upstream::check` (the streaming UTF-8 and JSON check of its
//!   bytes) and `upstream::sink` (the
//!   `ReplySink` trait through which it hands messages to the HTTP layer,
//!   which it does not depend on).
//! - [`principals`]: the children of 2026-07-28 clients, one per
//!   principal: started on first use (with the principal's stored
//!   credentials), capped, stopped when idle.
//! - [`tail`]: cut-through forwarding: a long answer's rest, passed on
//!   from the child's stdout to the client's body as it arrives.
//! - [`trace`]: the W3C `traceparent`/`tracestate` of an HTTP request,
//!   carried into the `_meta` of the messages it holds.
//! - [`session`]: session-era sessions: CSPRNG ids, negotiated version,
//!   their streams, idle expiry and the session cap.
//! - [`http`]: the accept loop (`http::listener`, shared by single and
//!   named servers) and one front-end per protocol era:
//!   Streamable HTTP with sessions (2025-03-26 … 2025-11-25), the legacy
//!   HTTP+SSE transport (2024-11-05), stateless Streamable HTTP
//!   (2026-07-28), and health endpoints.
//! - [`sse`]: server-sent events: encoding, keep-alive comments, and the
//!   outlet of one stream with its bounded queue and `Last-Event-ID` replay buffer.
//! - [`auth`]: who is asking: an authenticator (named API keys, JWT with
//!   JWKS, forward auth) that yields a `Principal` or a typed refusal,
//!   failed-auth rate limiting, RFC 9728 metadata, and the Origin, Host and
//!   fetch-metadata checks.
//! - [`audit`]: the audit log (auth, sessions, children, tool calls), one
//!   JSON line per event.
//! - [`metrics`]: Prometheus metrics for `GET /metrics` (owned state,
//!   handed down from the app; bounded label sets).
//! - [`error`]: the one place where errors become HTTP statuses and
//!   JSON-RPC error bodies.
//! - [`healthcheck`]: `mcp-proxy healthcheck`, the container probe of `/health`.
//! - [`store`]: the credential store, (principal, server, name) → a secret
//!   sealed with AES-256-GCM, in an embedded SQLite file or PostgreSQL;
//!   and the `mcp-proxy secrets` subcommand.
//! - [`config`]: flags and `MCP_PROXY_*` environment variables, validated;
//!   the only I/O is reading `--env-file` and `--api-key-file` once.
//! - [`config_file`]: `--config FILE` (TOML) and `--server NAME=COMMAND`:
//!   named servers, each turned into the same [`config::Config`].
//! - [`version`]: the protocol revisions and their eras, in one place.
//! - [`proxy`]: `run(listener, config, shutdown)`, what `main` and the tests call.
//! - [`servers`]: many named servers behind one listener at
//!   `/servers/<name>/…`, each an ordinary [`http::App`]; health, readiness
//!   and SIGHUP reload across them.
//! - [`shutdown`]: SIGTERM/SIGINT (and SIGHUP for a single server; a
//!   second one kills children at once), PID 1's duties (reaping orphans,
//!   forwarding signals), and the binary's subreaper duty (what children
//!   leave outside their groups is killed and reaped).
//! - [`logging`]: tracing to stderr, plain or JSON, through a queue that
//!   never blocks (lines that cannot be written are dropped and counted);
//!   session-id hashes and rate limits for logs.
//! - [`writer`]: a thread that writes lines for the log and the audit file,
//!   fed by a bounded queue that never makes its caller wait.

pub mod audit;
pub mod auth;
pub mod child;
pub mod config;
pub mod config_file;
pub mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod healthcheck;
pub mod http;
pub mod jsonrpc;
pub mod logging;
pub mod metrics;
pub mod principals;
pub mod proxy;
pub mod servers;
pub mod session;
pub mod shutdown;
pub mod sse;
pub mod store;
pub mod tail;
pub mod trace;
pub mod upstream;
pub mod version;
pub mod writer;

/// Locks a mutex whose data stays usable after a panic elsewhere (plain
/// tables and counters): a poisoned lock is taken as it is, so one
/// panicking task does not take every later request down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
