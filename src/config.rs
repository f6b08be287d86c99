//! Configuration: command-line flags and `MCP_PROXY_*` environment variables.
//!
//! Every flag has an environment variable (`--max-body-bytes` ↔
//! `MCP_PROXY_MAX_BODY_BYTES`); a flag wins over its variable. Repeatable
//! flags take a comma-separated list from the environment. The environment
//! is read through a lookup function so tests never touch the real one.
//! Reading files named by flags (`--env-file`, `--api-key-file`) is the only
//! I/O here, and it happens once, at start.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::auth::AuthConfig;
use crate::child::{ChildSpec, StdoutKind};
use crate::logging::LogFormat;
use crate::version::UpstreamProtocol;

/// Default listen address: loopback, the spec's advice for local servers.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default Streamable HTTP endpoint.
pub const DEFAULT_PATH: &str = "/mcp";
/// Default legacy SSE endpoint.
pub const DEFAULT_SSE_PATH: &str = "/sse";
/// Default legacy message endpoint.
pub const DEFAULT_MESSAGE_PATH: &str = "/messages";
/// Largest HTTP request body: tool arguments can carry files.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest line from the child: tool results carry base64 images.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Most concurrent sessions; in per-session mode each one is a process.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Sessions with no request and no open stream end after this.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// SSE comment interval; below the ~300 s idle cut of common intermediaries.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Time a child gets after stdin closes and again after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Messages waiting for one SSE consumer before it is cut off as too slow.
pub const DEFAULT_MAX_QUEUE: usize = 1024;
/// Bytes of notifications waiting for one SSE consumer before the queue
/// policy applies (cut off if it can resume, else notifications dropped).
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Default `--log-queue-bytes` and `--audit-queue-bytes`.
pub const DEFAULT_WRITER_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of messages waiting for a child's stdin (a child that reads
/// slowly or not at all) before further messages to it fail at once.
pub const DEFAULT_MAX_CHILD_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of a 2025-era child's `serverInfo` put into every 2026-07-28
/// result as written; a larger one goes as its name and version.
pub const DEFAULT_MAX_SERVER_INFO_BYTES: usize = 4096;
/// Bytes of a child's requests held for tasks of 2026-07-28 clients (the
/// Tasks extension's input requests), in all; a task holds a quarter.
pub const DEFAULT_MAX_TASK_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// Events kept per stream for `Last-Event-ID` replay.
pub const DEFAULT_REPLAY_EVENTS: usize = 256;
/// Bytes kept per stream for replay: a session keeps up to
/// `--replay-streams` (32) streams, so
/// large tool results are not held for replay.
pub const DEFAULT_REPLAY_BYTES: usize = 4 * 1024 * 1024;
/// Tasks whose owning session a shared child's multiplexer remembers.
pub use crate::upstream::{DEFAULT_MAX_SERVER_REQUESTS, DEFAULT_MAX_TASKS};
/// Replay memory of every stream of the proxy together: this bounds what
/// slow or vanished clients can pin, and what finished streams' buffers
/// may linger in (they go first when a live stream needs the room).
pub const DEFAULT_REPLAY_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// Streams a session keeps for `Last-Event-ID` resumption, finished ones
/// included (those not finished are kept past it): a client resumes the
/// stream it just lost, so a few dozen cover many requests at once.
pub const DEFAULT_REPLAY_STREAMS: usize = 32;
/// Tombstones (the ids of its answers, its buffer while that lingers) a
/// session keeps of streams let go of past `--replay-streams`, and their
/// bytes together: a client back for one gets its answers or an error
/// for each. Past these it gets a fresh GET stream.
pub const DEFAULT_REPLAY_TOMBSTONES: usize = 256;
/// See [`DEFAULT_REPLAY_TOMBSTONES`].
pub const DEFAULT_REPLAY_TOMBSTONE_BYTES: usize = 64 * 1024;
/// How long a finished stream's replay buffer is kept after its last
/// answer was handed to a client, for a client whose connection dropped
/// before it read the answer: the TypeScript and Python SDKs come back
/// within a few seconds (two retries from 1 s).
pub const DEFAULT_REPLAY_LINGER: Duration = Duration::from_secs(10);
/// Messages in one JSON-RPC batch (2025-03-26 sessions and `--stateless`).
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Client requests one client may have waiting for the child: a session,
/// or, where there is none (`--stateless`, 2026-07-28), a principal. A
/// legacy POST is answered 202 once its requests are passed on, and a
/// 2025-era client may drop a POST's stream (not a cancellation), so
/// without `--request-timeout` nothing else bounds the routing entries
/// (each holding its client id) one session can create; without a
/// session, nothing else bounds what one principal holds at the shared
/// child. Never below `--max-batch`, so that any batch the operator allows
/// fits a client with nothing in flight: the default follows a larger
/// `--max-batch`, and a value set below it is refused.
///
/// Without authentication everyone is the one anonymous principal, so
/// without a session this bounds the whole proxy: 1024 is what
/// `--max-connections` lets HTTP/1.1 clients hold anyway (each request in
/// flight holds a connection), and more than one stdio child works
/// through at once, so it only bites clients multiplexing HTTP/2 streams.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Wait for the answer to the `server/discover` probe; a legacy server
/// usually answers it with an error at once, a few stay silent.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between restarts of a crashed shared child.
pub const DEFAULT_RESTART_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One-shot sessions (no stream, at most one request after `initialize`)
/// end after this much quiet: a script or the Inspector CLI that never
/// sends DELETE does not hold a child for half an hour.
pub const DEFAULT_ONESHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A new connection must send a whole request head this soon (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's whole body must arrive this soon after its head (a body
/// that drips or never comes holds a handler, and the idle timeout does
/// not apply while a request is being handled).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with no bytes moving and no request being handled is
/// closed after this. Open SSE streams send keep-alives, so they stay.
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A child's stderr lines logged per second (bursts of four times that).
pub const DEFAULT_CHILD_LOG_RATE: u32 = 50;
/// Most open TCP connections, counted before authentication.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Longest duration any flag accepts: beyond it timers overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest count any flag accepts (queues, caps).
pub const MAX_COUNT: usize = 1 << 24;

/// Most `--child-log-rate`: a higher rate is no limit at all.
pub const MAX_CHILD_LOG_RATE: usize = 1_000_000;

/// Least `--max-body-bytes`: an `initialize` request alone is a few
/// hundred bytes, so a smaller cap refuses every client.
pub const MIN_BODY_BYTES: usize = 1024;

/// Most `--worker-threads`: more threads than this only cost memory.
pub const MAX_WORKER_THREADS: usize = 1024;

/// `--worker-threads` default: one thread runs everything (a current-thread
/// runtime). A call then never wakes a second thread, which costs less CPU
/// and latency per call than a pool (see the README's Performance), and one
/// thread serves tens of thousands of calls a second; the children are
/// processes of their own either way.
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// Put any stdio MCP server on HTTP: Streamable HTTP (2025-03-26 to
/// 2026-07-28) and legacy HTTP+SSE (2024-11-05). Every flag also reads
/// MCP_PROXY_<FLAG> from the environment (e.g. MCP_PROXY_API_KEY); the flag wins.
///
/// By default each session gets its own child process, so no state leaks
/// between clients. --shared serves every session from one child: faster and
/// lighter, but tool state (open files, browser pages, cwd) is then shared
/// by all users.
#[derive(FromArgs, Debug, Default, Clone)]
pub struct Args {
    /// address to listen on (default 127.0.0.1)
    #[argh(option)]
    pub host: Option<String>,
    /// port to listen on; 0 picks a free one (default 8080)
    #[argh(option)]
    pub port: Option<String>,
    /// path of the Streamable HTTP endpoint (default /mcp)
    #[argh(option)]
    pub path: Option<String>,
    /// legacy HTTP+SSE stream path (default /sse)
    #[argh(option)]
    pub sse_path: Option<String>,
    /// legacy HTTP+SSE message path (default /messages)
    #[argh(option)]
    pub message_path: Option<String>,
    /// a KEY=VALUE added to the child's environment (repeatable)
    #[argh(option)]
    pub env: Vec<String>,
    /// file of KEY=VALUE lines added to the child's environment
    #[argh(option)]
    pub env_file: Option<String>,
    /// working directory of the child
    #[argh(option)]
    pub cwd: Option<String>,
    /// start the child with only --env/--env-file variables
    #[argh(switch)]
    pub no_inherit_env: bool,
    /// an API key clients must send as "Authorization: Bearer <key>" or "X-API-Key" (repeatable)
    #[argh(option)]
    pub api_key: Vec<String>,
    /// file of API keys, one per line as "name: key" (the name identifies its holder) or a bare key (named key-N)
    #[argh(option)]
    pub api_key_file: Option<String>,
    /// URL of the JWKS that signs accepted JWT access tokens (e.g. https://TEAM.cloudflareaccess.com/cdn-cgi/access/certs)
    #[argh(option)]
    pub jwt_jwks_url: Option<String>,
    /// file holding the HS256 secret that signs accepted JWTs (at least 32 bytes)
    #[argh(option)]
    pub jwt_secret_file: Option<String>,
    /// accepted JWT issuer (iss) (repeatable)
    #[argh(option)]
    pub jwt_issuer: Vec<String>,
    /// accepted JWT audience (aud): this server's identifier, e.g. a Cloudflare Access AUD tag (repeatable; default --public-url + --path)
    #[argh(option)]
    pub jwt_audience: Vec<String>,
    /// header carrying the JWT, e.g. cf-access-jwt-assertion; Authorization: Bearer is still accepted (default Authorization)
    #[argh(option)]
    pub jwt_header: Option<String>,
    /// URL that vouches for a client's bearer credential (e.g. an API's whoami endpoint): 2xx accepts, 401/403 refuse, anything else is 503
    #[argh(option)]
    pub forward_auth_url: Option<String>,
    /// JSON pointer to the principal in the forward-auth answer, e.g. /loginId
    #[argh(option)]
    pub forward_auth_principal: Option<String>,
    /// how long a forward-auth answer is reused, e.g. 60s; 0 disables the cache (default 60s)
    #[argh(option)]
    pub forward_auth_ttl: Option<String>,
    /// OAuth authorization server (issuer URL) named in /.well-known/oauth-protected-resource (repeatable; needs --public-url)
    #[argh(option)]
    pub auth_server: Vec<String>,
    /// the URL clients reach this proxy at, e.g. https://mcp.example.com; the MCP resource is this plus --path
    #[argh(option)]
    pub public_url: Option<String>,
    /// OAuth scope every JWT must carry; missing gives 403 insufficient_scope (repeatable)
    #[argh(option)]
    pub required_scope: Vec<String>,
    /// failed authentications allowed per client IP per minute before 429; 0 disables (default 10)
    #[argh(option)]
    pub auth_failure_limit: Option<String>,
    /// CIDR of a reverse proxy whose X-Forwarded-For is believed, e.g. 10.0.0.0/8 (repeatable)
    #[argh(option)]
    pub trusted_proxy: Vec<String>,
    /// most concurrent sessions one principal may hold (default a quarter of --max-sessions)
    #[argh(option)]
    pub max_sessions_per_principal: Option<String>,
    /// also append the audit log (one JSON object per line) to this file
    #[argh(option)]
    pub audit_log: Option<String>,
    /// bytes of audit records waiting for a slow --audit-log file; past it records are dropped and counted (default 8M)
    #[argh(option)]
    pub audit_queue_bytes: Option<String>,
    /// bytes of log lines waiting for a slow or full stderr; past it lines are dropped and counted (default 8M)
    #[argh(option)]
    pub log_queue_bytes: Option<String>,
    /// allow listening beyond loopback without an API key
    #[argh(switch)]
    pub allow_unauthenticated: bool,
    /// require the API key on GET /metrics too (by default it is open, like /health)
    #[argh(switch)]
    pub metrics_auth: bool,
    /// allowed browser Origin, e.g. https://app.example.com, or * (repeatable; loopback origins are always allowed)
    #[argh(option)]
    pub allow_origin: Vec<String>,
    /// allowed Host header value (repeatable; on loopback binds only localhost names pass by default)
    #[argh(option)]
    pub allowed_host: Vec<String>,
    /// largest request body in bytes (default 16 MiB)
    #[argh(option)]
    pub max_body_bytes: Option<String>,
    /// longest line the child may write, in bytes (default 64 MiB)
    #[argh(option)]
    pub max_line_bytes: Option<String>,
    /// most concurrent sessions, counting each principal's 2026-07-28 child (default 256)
    #[argh(option)]
    pub max_sessions: Option<String>,
    /// end sessions (and stop 2026-07-28 per-principal children) idle this long, e.g. 30m (default 30m)
    #[argh(option)]
    pub session_idle_timeout: Option<String>,
    /// fail requests the child has not answered after this long, e.g. 2m (default: none)
    #[argh(option)]
    pub request_timeout: Option<String>,
    /// interval of SSE keep-alive comments (default 15s)
    #[argh(option)]
    pub keep_alive: Option<String>,
    /// time a child gets to exit after stdin closes and after SIGTERM (default 5s)
    #[argh(option)]
    pub shutdown_grace: Option<String>,
    /// messages queued for one SSE stream before the slow client is cut off (default 1024)
    #[argh(option)]
    pub max_queue: Option<String>,
    /// bytes of notifications queued for one SSE stream before the slow client is cut off, or on a request's stream without event ids the notification dropped; on the legacy stream answers count too, and past it the session ends (default 4M)
    #[argh(option)]
    pub max_queue_bytes: Option<String>,
    /// bytes of messages waiting for a child that does not read its stdin fast enough; past it messages to that child fail at once (default 16M)
    #[argh(option)]
    pub max_child_queue_bytes: Option<String>,
    /// bytes of a 2025-era child's serverInfo that every 2026-07-28 result carries as written; a larger one goes as its name and version only, or is left out when those do not fit either (default 4K)
    #[argh(option)]
    pub max_server_info_bytes: Option<String>,
    /// events kept per stream for Last-Event-ID replay; 0 disables resumption (default 256)
    #[argh(option)]
    pub replay_events: Option<String>,
    /// bytes of events kept per stream for Last-Event-ID replay; a larger event cannot be replayed (default 4M)
    #[argh(option)]
    pub replay_bytes: Option<String>,
    /// tasks (2025-11-25) whose owning session a shared child remembers; the oldest is forgotten first (default 10000)
    #[argh(option)]
    pub max_tasks: Option<String>,
    /// bytes of replay buffers of all streams together; past it, events are not kept for resumption (default 64M)
    #[argh(option)]
    pub replay_total_bytes: Option<String>,
    /// how long a finished stream's replay buffer is kept after its last answer went out, for a client whose connection dropped before it read it; lingering buffers go first when --replay-total-bytes is reached; 0 releases at once (default 10s)
    #[argh(option)]
    pub replay_linger: Option<String>,
    /// streams a session keeps for Last-Event-ID resumption, finished ones included (those not finished are kept past it); the oldest finished one goes first, leaving a tombstone (default 32)
    #[argh(option)]
    pub replay_streams: Option<String>,
    /// tombstones a session keeps of streams let go of past --replay-streams, so that a client back for one gets its answers or an error for each; the oldest goes first; 0 keeps none (default 256)
    #[argh(option)]
    pub replay_tombstones: Option<String>,
    /// bytes of a session's tombstones together (answer ids, lingering buffers); the oldest goes first (default 64K)
    #[argh(option)]
    pub replay_tombstone_bytes: Option<String>,
    /// requests of one child to its clients (sampling, elicitation, roots) waiting for an answer; more are refused with an error to the child (default 1024)
    #[argh(option)]
    pub max_server_requests: Option<String>,
    /// the same per session, so one client that never answers cannot take the others' room (default --max-server-requests / 4 with --shared, else --max-server-requests)
    #[argh(option)]
    pub max_server_requests_per_session: Option<String>,
    /// bytes of a child's requests held for 2026-07-28 clients' tasks until a tasks/update answers them; one task may hold a quarter; more are refused with an error to the child (default 4M)
    #[argh(option)]
    pub max_task_input_bytes: Option<String>,
    /// messages in one JSON-RPC batch; a larger batch gets 400 (default 1024)
    #[argh(option)]
    pub max_batch: Option<String>,
    /// requests one client may leave unanswered: a session, or a principal where there is no session (--stateless, 2026-07-28); more get 429; at least --max-batch (default 1024, or --max-batch if larger)
    #[argh(option)]
    pub max_in_flight: Option<String>,
    /// serve every session from one shared child (state is shared between users)
    #[argh(switch)]
    pub shared: bool,
    /// no session ids: every request is served by one shared child
    #[argh(switch)]
    pub stateless: bool,
    /// with a shared child: exit with the child's code when it dies instead of restarting it
    #[argh(switch)]
    pub exit_on_child_exit: bool,
    /// what the child speaks: auto (initialize or a server/discover probe first, by the clients it serves), legacy (2024-11-05 to 2025-11-25) or modern (2026-07-28) (default auto)
    #[argh(option)]
    pub upstream_protocol: Option<String>,
    /// what the child's stdout is: pipe, or socket (a Unix socket pair, as Node.js gives the servers it spawns: long answers cross faster, short ones a few µs slower) (default pipe)
    #[argh(option)]
    pub child_stdout: Option<String>,
    /// how long auto waits for an answer to its server/discover probe before trying initialize (default 2s)
    #[argh(option)]
    pub probe_timeout: Option<String>,
    /// longest backoff between restarts of the shared child (default 30s)
    #[argh(option)]
    pub restart_max_backoff: Option<String>,
    /// end sessions that never opened a stream and made at most one request after initialize (one-shot clients such as the Inspector CLI) after this much quiet (default 60s)
    #[argh(option)]
    pub oneshot_idle_timeout: Option<String>,
    /// close a connection that has not sent a complete request head this long after it was accepted (default 10s)
    #[argh(option)]
    pub header_read_timeout: Option<String>,
    /// answer 408 to a request whose body has not fully arrived this long after its head (default 30s)
    #[argh(option)]
    pub body_read_timeout: Option<String>,
    /// close a connection that moves no bytes and has no request in progress for this long; must exceed --keep-alive (default 2m)
    #[argh(option)]
    pub connection_idle_timeout: Option<String>,
    /// most open client connections, counted before authentication; more are closed at once (default 1024)
    #[argh(option)]
    pub max_connections: Option<String>,
    /// threads that serve HTTP and route messages; 0 is one per CPU (default 1: one thread, the least CPU and latency per call)
    #[argh(option)]
    pub worker_threads: Option<String>,
    /// stderr lines per second logged for each child, in bursts of up to four times that; the rest are counted (default 50)
    #[argh(option)]
    pub child_log_rate: Option<String>,
    /// a tag put in front of every session id ("<tag>.<hex>") so a router can send a session to its replica (default none)
    #[argh(option)]
    pub replica_id: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// log format: plain or json (default plain)
    #[argh(option)]
    pub log_format: Option<String>,
    /// log level or filter, e.g. info, debug, mcp_sidecar=trace (default info)
    #[argh(option)]
    pub log_level: Option<String>,
    /// a TOML file of named servers, each served at /servers/<name>/mcp (see README); SIGHUP reloads it
    #[argh(option)]
    pub config: Option<String>,
    /// with --config: check the file this often and reload when its content changed, as SIGHUP does; 0 turns it off (default 2s)
    #[argh(option)]
    pub config_poll: Option<String>,
    /// a named server as NAME=COMMAND (split on spaces), served at /servers/NAME/mcp (repeatable)
    #[argh(option)]
    pub server: Vec<String>,
    /// credential store for per-user secrets: a file path (embedded) or postgres://user:pass@host/db
    #[argh(option)]
    pub store: Option<String>,
    /// file with the store key(s), base64, sealing key first (default: MCP_PROXY_STORE_KEY)
    #[argh(option)]
    pub store_key_file: Option<String>,
    /// deadline of each credential store call (default 5s)
    #[argh(option)]
    pub store_timeout: Option<String>,
    /// the stdio MCP server to run, after --
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// How sessions map to children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One child per session (default): no state shared between clients.
    PerSession,
    /// One child for every session.
    Shared,
    /// No sessions at all; one child.
    Stateless,
}

/// The validated configuration of the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub host: IpAddr,
    /// Listen port (0 = any).
    pub port: u16,
    /// Streamable HTTP path.
    pub path: String,
    /// Legacy SSE path.
    pub sse_path: String,
    /// Legacy message path.
    pub message_path: String,
    /// The child to run.
    pub child: ChildSpec,
    /// Authentication (API keys, JWT, forward auth, RFC 9728); none configured means none required.
    pub auth: AuthConfig,
    /// Sessions one principal may hold at once.
    pub max_sessions_per_principal: usize,
    /// `--audit-log`: file the audit records are appended to.
    pub audit_log: Option<PathBuf>,
    /// Bytes of audit records that may wait for that file.
    pub audit_queue_bytes: usize,
    /// Bytes of log lines that may wait for stderr.
    pub log_queue_bytes: usize,
    /// Extra allowed origins (`*` allows any).
    pub allow_origins: Vec<String>,
    /// Extra allowed Host values.
    pub allowed_hosts: Vec<String>,
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Session cap.
    pub max_sessions: usize,
    /// Idle session expiry.
    pub session_idle_timeout: Duration,
    /// Per-request deadline, if any.
    pub request_timeout: Option<Duration>,
    /// SSE keep-alive interval.
    pub keep_alive: Duration,
    /// Per-stream queue cap.
    pub max_queue: usize,
    /// Per-stream queue cap, in bytes.
    pub max_queue_bytes: usize,
    /// Bytes waiting for one child's stdin.
    pub max_child_queue_bytes: usize,
    /// A child's `serverInfo` in 2026-07-28 results, in bytes.
    pub max_server_info_bytes: usize,
    /// Per-stream replay buffer.
    pub replay_events: usize,
    /// Per-stream replay buffer, in bytes.
    pub replay_bytes: usize,
    /// Task-ownership table cap of a shared child.
    pub max_tasks: usize,
    /// Replay buffers of all streams together, in bytes.
    pub replay_total_bytes: usize,
    /// How long a finished stream's replay buffer lingers.
    pub replay_linger: Duration,
    /// Streams a session keeps for resumption.
    pub replay_streams: usize,
    /// Tombstones of streams let go of, per session.
    pub replay_tombstones: usize,
    /// Their bytes together, per session.
    pub replay_tombstone_bytes: usize,
    /// A child's requests to clients waiting for an answer.
    pub max_server_requests: usize,
    /// The same, per session.
    pub max_server_requests_per_session: usize,
    /// Bytes of a child's requests held for 2026-07-28 clients' tasks.
    pub max_task_input_bytes: usize,
    /// Messages per JSON-RPC batch.
    pub max_batch: usize,
    /// Requests in flight per session, or per principal without one.
    pub max_in_flight: usize,
    /// Session/child mapping.
    pub mode: Mode,
    /// Exit when the shared child dies.
    pub exit_on_child_exit: bool,
    /// Restart backoff cap.
    pub restart_max_backoff: Duration,
    /// What the child speaks.
    pub upstream_protocol: UpstreamProtocol,
    /// Wait for the `server/discover` probe.
    pub probe_timeout: Duration,
    /// Idle expiry of one-shot sessions.
    pub oneshot_idle_timeout: Duration,
    /// Deadline for a new connection's first request head.
    pub header_read_timeout: Duration,
    /// Deadline for a request's body, from its head.
    pub body_read_timeout: Duration,
    /// Idle connection expiry.
    pub connection_idle_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Runtime threads: 1 is a current-thread runtime, 0 one per CPU.
    pub worker_threads: usize,
    /// Session id prefix naming this replica.
    pub replica_id: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// `GET /metrics` needs the API key.
    pub metrics_auth: bool,
}

/// A configuration problem: the message is shown to the user as one line
/// (`error: …`, exit 64; a log line on reload). Messages quote what the
/// user gave (file names, values, TOML's own reports), so control
/// characters are written escaped (`\r`, `\n`, `\u{1b}`) here, in the one
/// place every message passes: a file name with a line break in it must
/// not split the line, nor an escape sequence rewrite the terminal.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Parses `500ms`, `15s`, `30m`, `2h`, or a bare number of seconds, up to
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// Parses a byte count with an optional `K`/`M`/`G` (binary) suffix.
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s.trim_end_matches(['b', 'B']), 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn env_name(flag: &str) -> String {
    format!("MCP_PROXY_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

struct Resolver<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    /// The flag's value, or its environment variable's, with where it came
    /// from (an empty value too: see [`Resolver::value`]).
    fn get(&self, flag: &str, value: &Option<String>) -> Option<(String, String)> {
        match value {
            Some(v) => Some((v.clone(), format!("--{flag}"))),
            None => (self.lookup)(&env_name(flag)).map(|v| (v, env_name(flag))),
        }
    }

    /// [`Resolver::get`], refusing an empty value: a
    /// `MCP_PROXY_LOG_LEVEL=` or `--cwd ""` left by a template that lost
    /// its value must not quietly mean the default, or nothing.
    fn value(
        &self,
        flag: &str,
        value: &Option<String>,
    ) -> Result<Option<(String, String)>, ConfigError> {
        match self.get(flag, value) {
            Some((v, source)) if v.trim().is_empty() => err(format!(
                "{source} is given but empty; give a value or leave it out"
            )),
            other => Ok(other),
        }
    }

    /// A repeatable flag, or its variable as a comma-separated list. An
    /// empty item, or a variable that is set but lists nothing, is an
    /// error: `MCP_PROXY_API_KEY=""` from a secret that failed to mount
    /// would otherwise start a proxy with no key at all.
    fn list(&self, flag: &str, values: &[String]) -> Result<Vec<String>, ConfigError> {
        if !values.is_empty() {
            if values.iter().any(|v| v.trim().is_empty()) {
                return err(format!("--{flag} is given an empty value"));
            }
            return Ok(values.to_vec());
        }
        let Some(v) = (self.lookup)(&env_name(flag)) else {
            return Ok(Vec::new());
        };
        let items: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if items.is_empty() {
            return err(format!(
                "{} is set but lists nothing; give a value or unset it",
                env_name(flag)
            ));
        }
        Ok(items)
    }

    fn switch(&self, flag: &str, value: bool) -> Result<bool, ConfigError> {
        if value {
            return Ok(true);
        }
        match (self.lookup)(&env_name(flag)) {
            None => Ok(false),
            Some(v) => parse_bool(&v).map_or_else(
                || {
                    err(format!(
                        "{}: expected true or false, got {v:?}",
                        env_name(flag)
                    ))
                },
                Ok,
            ),
        }
    }

    fn parsed<T>(
        &self,
        flag: &str,
        value: &Option<String>,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.value(flag, value)? {
            None => Ok(default),
            Some((v, source)) => {
                parse(&v).map_or_else(|| err(format!("{source}: expected {what}, got {v:?}")), Ok)
            }
        }
    }
}

fn normalize_path(source: &str, p: String) -> Result<String, ConfigError> {
    if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
        return err(format!(
            "{source}: expected a path starting with /, got {p:?}"
        ));
    }
    Ok(if p.len() > 1 {
        p.trim_end_matches('/').to_string()
    } else {
        p
    })
}

/// Reads a file the configuration names, at most `max` bytes, refusing
/// anything but a regular file: a FIFO would hold the start (or a reload)
/// until some writer came, `/dev/zero` would be read until memory ran out.
/// The file is opened without blocking and checked through the open
/// descriptor, so what is checked is what is read.
pub fn read_regular_file(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a named pipe"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(std::io::Error::other(format!(
            "it is {what}, not a regular file"
        )));
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        let shown = if max.is_multiple_of(1 << 20) {
            format!("{} MiB", max >> 20)
        } else {
            format!("{max} bytes")
        };
        return Err(std::io::Error::other(format!(
            "larger than {shown}, the most read of a configuration file"
        )));
    }
    Ok(bytes)
}

/// Most bytes read of a file the configuration names (`--api-key-file`,
/// `--jwt-secret-file`, `--env-file`, a server's `env_file`): the bound of
/// the `--config` file itself (`config_file::MAX_CONFIG_FILE_BYTES`), which
/// the config poll also reads these files up to. Such a file holds a few
/// lines; one of gigabytes (a log written to the wrong path) must not be
/// read into memory at start and at every reload.
pub const MAX_NAMED_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the file `file` given by `source` (a flag or variable) as UTF-8,
/// at most [`MAX_NAMED_FILE_BYTES`]; every file the configuration names
/// comes through here. The error names the source, the file and the bound.
fn read_file(source: &str, file: &str) -> Result<String, ConfigError> {
    let cannot = |e: String| ConfigError(format!("{source}: cannot read {file}: {e}"));
    let bytes = read_regular_file(std::path::Path::new(file), MAX_NAMED_FILE_BYTES)
        .map_err(|e| cannot(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| cannot("it is not UTF-8 text".into()))
}

/// An `http(s)` URL the proxy fetches from or publishes. One with a user
/// name or password (`https://user:pw@host/…`) is refused, and never
/// echoed: the HTTP client sends no `Authorization` made of them (the
/// endpoint would refuse every call), its trace log prints them, and an
/// `--auth-server` is published to every client.
fn parse_url(source: &str, v: &str) -> Result<http::Uri, ConfigError> {
    let Ok(uri) = v.parse::<http::Uri>() else {
        // What does not parse may still hold a password: not shown then.
        return match v.contains('@') {
            true => err(format!(
                "{source}: expected a URL (not shown: it looks like it holds a user name or password)"
            )),
            false => err(format!("{source}: expected a URL, got {v:?}")),
        };
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return err(format!(
            "{source}: the URL has a user name or password (not shown), which would never be sent and would reach the logs: remove it (a forward-auth endpoint gets the client's Authorization header)"
        ));
    }
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => err(format!("{source}: expected an http(s) URL, got {v:?}")),
    }
}

/// The authentication flags.
fn auth_config(r: &Resolver, args: &Args, mcp_path: &str) -> Result<AuthConfig, ConfigError> {
    use crate::auth::{forward, jwt, keys, limit};
    let mut api_keys = keys::name_by_position(r.list("api-key", &args.api_key)?);
    if let Some((file, source)) = r.value("api-key-file", &args.api_key_file)? {
        let text = read_file(&source, &file)?;
        api_keys.extend(
            keys::parse_key_file(&text, api_keys.len())
                .map_err(|e| ConfigError(format!("{source} {file}: {e}")))?,
        );
    }
    keys::validate(&api_keys).map_err(ConfigError)?;

    let public_url = r.value("public-url", &args.public_url)?.map(|(v, _)| v);
    let auth_servers = r.list("auth-server", &args.auth_server)?;
    for s in &auth_servers {
        parse_url("--auth-server", s)?;
    }
    if !auth_servers.is_empty() && public_url.is_none() {
        return err("--auth-server needs --public-url: the metadata must name the URL clients use");
    }
    if let Some(u) = &public_url {
        crate::auth::metadata::ResourceMetadata::new(u, mcp_path, vec![], vec![])
            .map_err(ConfigError)?;
    }

    let jwks_url = match r.value("jwt-jwks-url", &args.jwt_jwks_url)? {
        Some((v, source)) => Some(parse_url(&source, &v)?),
        None => None,
    };
    let secret = match r.value("jwt-secret-file", &args.jwt_secret_file)? {
        Some((file, source)) => {
            let text = read_file(&source, &file)?;
            let secret = text.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
            if secret.len() < 32 {
                return err(format!(
                    "{source}: the HS256 secret must be at least 32 bytes"
                ));
            }
            Some(secret)
        }
        None => None,
    };
    let issuers = r.list("jwt-issuer", &args.jwt_issuer)?;
    let mut audiences = r.list("jwt-audience", &args.jwt_audience)?;
    let header_given = r.value("jwt-header", &args.jwt_header)?;
    let named_header = header_given.is_some();
    let header = match header_given {
        None => jwt::TokenHeader::Bearer,
        Some((v, _)) if v.eq_ignore_ascii_case("authorization") => jwt::TokenHeader::Bearer,
        Some((v, source)) => jwt::TokenHeader::Named(
            http::HeaderName::from_bytes(v.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| ConfigError(format!("{source}: not a header name: {v:?}")))?,
        ),
    };
    let jwt = if jwks_url.is_some() || secret.is_some() {
        if audiences.is_empty() {
            match &public_url {
                Some(u) => audiences.push(format!("{}{mcp_path}", u.trim_end_matches('/'))),
                None => {
                    return err(
                        "JWT validation needs --jwt-audience (or --public-url): a token issued for another service must be refused",
                    );
                }
            }
        }
        Some(jwt::JwtConfig {
            jwks_url,
            secret,
            issuers,
            audiences,
            header,
            jwks_min_refetch: jwt::DEFAULT_JWKS_MIN_REFETCH,
        })
    } else if !issuers.is_empty() || !audiences.is_empty() || named_header {
        return err(
            "--jwt-issuer, --jwt-audience and --jwt-header need --jwt-jwks-url or --jwt-secret-file",
        );
    } else {
        None
    };

    let forward = match r.value("forward-auth-url", &args.forward_auth_url)? {
        Some((v, source)) => Some(forward::ForwardConfig {
            url: parse_url(&source, &v)?,
            principal_pointer: match r.get("forward-auth-principal", &args.forward_auth_principal) {
                Some((p, _)) if p.is_empty() || p.starts_with('/') => Some(p),
                Some((p, source)) => {
                    return err(format!(
                        "{source}: expected a JSON pointer such as /loginId, got {p:?}"
                    ));
                }
                None => None,
            },
            ttl: r.parsed(
                "forward-auth-ttl",
                &args.forward_auth_ttl,
                forward::DEFAULT_FORWARD_AUTH_TTL,
                parse_duration,
                "a duration such as 60s",
            )?,
        }),
        None => {
            // Given without the URL they belong to, they would be ignored.
            for (flag, given) in [
                (
                    "forward-auth-principal",
                    r.get("forward-auth-principal", &args.forward_auth_principal),
                ),
                (
                    "forward-auth-ttl",
                    r.get("forward-auth-ttl", &args.forward_auth_ttl),
                ),
            ] {
                if let Some((_, source)) = given {
                    return err(format!(
                        "{source} needs --forward-auth-url ({flag} configures forward auth)"
                    ));
                }
            }
            None
        }
    };

    Ok(AuthConfig {
        api_keys,
        jwt,
        forward,
        auth_servers,
        public_url,
        required_scopes: r.list("required-scope", &args.required_scope)?,
        failure_limit: r.parsed(
            "auth-failure-limit",
            &args.auth_failure_limit,
            limit::DEFAULT_AUTH_FAILURE_LIMIT,
            |s| s.parse().ok(),
            "a whole number",
        )?,
        trusted_proxies: limit::parse_trusted(&r.list("trusted-proxy", &args.trusted_proxy)?)
            .map_err(ConfigError)?,
        limiter: limit::SharedLimiter::default(),
    })
}

impl Config {
    /// Builds the configuration from parsed flags and an environment lookup.
    pub fn from_args(
        args: Args,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let r = Resolver { lookup };
        // With --config/--server the servers carry their own commands
        // (crate::config_file); this Config then holds the global settings.
        let named = args.config.is_some() || !args.server.is_empty();
        let no_program = String::new();
        let Some((program, rest)) = args
            .command
            .split_first()
            .or(named.then_some((&no_program, &[][..])))
        else {
            return err(
                "no MCP server command given; usage: mcp-proxy [flags] -- <command> [args...] (or --config FILE, --server NAME=COMMAND)",
            );
        };
        let host = r.parsed(
            "host",
            &args.host,
            DEFAULT_HOST.parse::<IpAddr>().expect("valid default"),
            |s| s.parse().ok(),
            "an IP address",
        )?;
        let port = r.parsed(
            "port",
            &args.port,
            DEFAULT_PORT,
            |s| s.parse().ok(),
            "a port number",
        )?;
        let path = |flag, v: &Option<String>, default: &str| -> Result<String, ConfigError> {
            let (p, source) = r
                .get(flag, v)
                .unwrap_or_else(|| (default.to_string(), String::new()));
            normalize_path(&source, p)
        };
        let mcp_path = path("path", &args.path, DEFAULT_PATH)?;
        let sse_path = path("sse-path", &args.sse_path, DEFAULT_SSE_PATH)?;
        let message_path = path("message-path", &args.message_path, DEFAULT_MESSAGE_PATH)?;
        if mcp_path == sse_path || mcp_path == message_path || sse_path == message_path {
            return err("--path, --sse-path and --message-path must differ");
        }

        let mut env = Vec::new();
        if let Some((file, source)) = r.value("env-file", &args.env_file)? {
            let text = read_file(&source, &file)?;
            env.extend(
                crate::child::parse_env_file(&text)
                    .map_err(|e| ConfigError(format!("{source} {file}: {e}")))?,
            );
        }
        for kv in r.list("env", &args.env)? {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
                _ => return err(format!("--env: expected KEY=VALUE, got {kv:?}")),
            }
        }

        // A NUL cannot reach an environment: every spawn would fail.
        if let Some((k, _)) = env
            .iter()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return err(format!(
                "--env/--env-file: {k:?} contains a NUL byte, which no environment can hold"
            ));
        }

        let auth = auth_config(&r, &args, &mcp_path)?;
        let allow_unauthenticated =
            r.switch("allow-unauthenticated", args.allow_unauthenticated)?;
        if !host.is_loopback() && !auth.is_enabled() && !allow_unauthenticated {
            return err(format!(
                "refusing to listen on {host} without authentication: anyone who can reach it could run the MCP server; \
                 set --api-key (or MCP_PROXY_API_KEY), --jwt-jwks-url or --forward-auth-url, or pass --allow-unauthenticated to accept the risk"
            ));
        }
        // The child never sees the proxy's own settings, secrets included.
        if let Some((k, _)) = env.iter().find(|(k, _)| k.starts_with("MCP_PROXY_")) {
            return err(format!(
                "--env/--env-file: {k} is the proxy's own setting and is never passed to the MCP server"
            ));
        }

        let metrics_auth = r.switch("metrics-auth", args.metrics_auth)?;
        if metrics_auth && !auth.is_enabled() {
            return err(
                "--metrics-auth needs an authentication method (--api-key, --jwt-jwks-url, --forward-auth-url…)",
            );
        }

        let shared = r.switch("shared", args.shared)?;
        let stateless = r.switch("stateless", args.stateless)?;
        let mode = match (shared, stateless) {
            (true, true) => {
                return err(
                    "--shared and --stateless (or MCP_PROXY_SHARED and MCP_PROXY_STATELESS) exclude each other: choose one",
                );
            }
            (_, true) => Mode::Stateless,
            (true, false) => Mode::Shared,
            (false, false) => Mode::PerSession,
        };
        let exit_on_child_exit = r.switch("exit-on-child-exit", args.exit_on_child_exit)?;
        if exit_on_child_exit && mode == Mode::PerSession {
            return err(
                "--exit-on-child-exit needs --shared or --stateless (per-session children come and go)",
            );
        }

        let dur = "a duration such as 500ms, 15s, 30m (at most 365 days)";
        let positive = |flag: &str, d: Duration| -> Result<Duration, ConfigError> {
            if d.is_zero() {
                err(format!(
                    "--{flag} ({}) must be greater than zero",
                    env_name(flag)
                ))
            } else {
                Ok(d)
            }
        };
        let max_line_bytes = r.parsed(
            "max-line-bytes",
            &args.max_line_bytes,
            DEFAULT_MAX_LINE_BYTES,
            parse_bytes,
            "a byte count",
        )?;
        let shutdown_grace = r.parsed(
            "shutdown-grace",
            &args.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
            parse_duration,
            dur,
        )?;
        let cwd = r.value("cwd", &args.cwd)?;
        // Nor can one reach an argument or a directory (argv and
        // environment variables cannot carry one; a config file's
        // `\u0000` can).
        if let Some(word) = args.command.iter().find(|w| w.contains('\0')) {
            return err(format!(
                "the MCP server command: {word:?} contains a NUL byte, which no program can be given"
            ));
        }
        if let Some((c, source)) = cwd.as_ref().filter(|(c, _)| c.contains('\0')) {
            return err(format!(
                "{source}: {c:?} contains a NUL byte, which no directory name can hold"
            ));
        }
        let cwd = cwd.map(|(c, _)| PathBuf::from(c));
        let request_timeout = match r.value("request-timeout", &args.request_timeout)? {
            None => None,
            Some((v, _)) if v.trim() == "none" => None,
            // Zero, however it is written (`0`, `0s`, `0ms`), is no
            // timeout: a zero deadline would fail every request, the
            // handshake first.
            Some((v, source)) => Some(parse_duration(&v).ok_or_else(|| {
                ConfigError(format!("{source}: expected {dur} or none, got {v:?}"))
            })?)
            .filter(|d| !d.is_zero()),
        };
        let log_format = match r.value("log-format", &args.log_format)? {
            None => LogFormat::Plain,
            Some((v, _)) if v == "plain" => LogFormat::Plain,
            Some((v, _)) if v == "json" => LogFormat::Json,
            Some((v, source)) => {
                return err(format!("{source}: expected plain or json, got {v:?}"));
            }
        };
        let count = |flag: &str,
                     v: &Option<String>,
                     default: usize,
                     min: usize|
         -> Result<usize, ConfigError> {
            let n = r.parsed(flag, v, default, |s| s.parse().ok(), "a whole number")?;
            if n < min {
                err(format!(
                    "--{flag} ({}) must be at least {min}",
                    env_name(flag)
                ))
            } else if n > MAX_COUNT {
                err(format!(
                    "--{flag} ({}) must be at most {MAX_COUNT}",
                    env_name(flag)
                ))
            } else {
                Ok(n)
            }
        };

        let keep_alive = positive(
            "keep-alive",
            r.parsed(
                "keep-alive",
                &args.keep_alive,
                DEFAULT_KEEP_ALIVE,
                parse_duration,
                dur,
            )?,
        )?;
        let connection_idle_timeout = positive(
            "connection-idle-timeout",
            r.parsed(
                "connection-idle-timeout",
                &args.connection_idle_timeout,
                DEFAULT_CONNECTION_IDLE_TIMEOUT,
                parse_duration,
                dur,
            )?,
        )?;
        if connection_idle_timeout <= keep_alive {
            return err(
                "--connection-idle-timeout must be longer than --keep-alive (open SSE streams would be cut)",
            );
        }
        let replica_id = match r.get("replica-id", &args.replica_id) {
            None => None,
            Some((v, _)) if v.is_empty() => None,
            Some((v, source)) => {
                if v.len() > 32
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return err(format!(
                        "{source}: expected up to 32 letters, digits, - or _, got {v:?}"
                    ));
                }
                Some(v)
            }
        };

        let max_batch = count("max-batch", &args.max_batch, DEFAULT_MAX_BATCH, 1)?;
        let max_server_requests = count(
            "max-server-requests",
            &args.max_server_requests,
            DEFAULT_MAX_SERVER_REQUESTS,
            1,
        )?;
        // Shared: four sessions that never answer fill the child's table,
        // one cannot. Otherwise the child has one session.
        let max_server_requests_per_session = count(
            "max-server-requests-per-session",
            &args.max_server_requests_per_session,
            if mode == Mode::Shared {
                (max_server_requests / 4).max(1)
            } else {
                max_server_requests
            },
            1,
        )?;
        let max_in_flight = count(
            "max-in-flight",
            &args.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT.max(max_batch),
            1,
        )?;
        if max_in_flight < max_batch {
            // Only a value given can be below it: the default follows.
            return err(format!(
                "--max-in-flight ({max_in_flight}) must be at least --max-batch ({max_batch}): a batch that large could never be admitted"
            ));
        }

        Ok(Config {
            host,
            port,
            path: mcp_path,
            sse_path,
            message_path,
            child: ChildSpec {
                program: program.clone(),
                args: rest.to_vec(),
                env,
                inherit_env: !r.switch("no-inherit-env", args.no_inherit_env)?,
                cwd,
                max_line_bytes: if max_line_bytes < 1024 {
                    return err("--max-line-bytes must be at least 1024");
                } else {
                    max_line_bytes
                },
                stdout_kind: match r.value("child-stdout", &args.child_stdout)? {
                    None => StdoutKind::default(),
                    Some((v, source)) => match v.as_str() {
                        "socket" => StdoutKind::Socket,
                        "pipe" => StdoutKind::Pipe,
                        _ => {
                            return err(format!("{source}: expected socket or pipe, got {v:?}"));
                        }
                    },
                },
                grace: shutdown_grace,
                children: Default::default(),
                stderr_lines_per_second: match count(
                    "child-log-rate",
                    &args.child_log_rate,
                    DEFAULT_CHILD_LOG_RATE as usize,
                    1,
                )? {
                    n if n > MAX_CHILD_LOG_RATE => {
                        return err(format!(
                            "--child-log-rate must be at most {MAX_CHILD_LOG_RATE}"
                        ));
                    }
                    // Invariant: at most MAX_CHILD_LOG_RATE, which fits.
                    n => n as u32,
                },
                // The app puts its own in (crate::http::App::new).
                metrics: Default::default(),
            },
            max_sessions_per_principal: {
                let max_sessions =
                    count("max-sessions", &args.max_sessions, DEFAULT_MAX_SESSIONS, 1)?;
                // Without authentication everyone is one anonymous
                // principal: the per-principal cap is then the total one.
                let default = if auth.is_enabled() {
                    (max_sessions / 4).max(1)
                } else {
                    max_sessions
                };
                count(
                    "max-sessions-per-principal",
                    &args.max_sessions_per_principal,
                    default,
                    1,
                )?
            },
            audit_log: r
                .value("audit-log", &args.audit_log)?
                .map(|(p, _)| PathBuf::from(p)),
            audit_queue_bytes: r.parsed(
                "audit-queue-bytes",
                &args.audit_queue_bytes,
                DEFAULT_WRITER_QUEUE_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            log_queue_bytes: r.parsed(
                "log-queue-bytes",
                &args.log_queue_bytes,
                DEFAULT_WRITER_QUEUE_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            auth,
            allow_origins: r.list("allow-origin", &args.allow_origin)?,
            allowed_hosts: r.list("allowed-host", &args.allowed_host)?,
            max_body_bytes: match r.parsed(
                "max-body-bytes",
                &args.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                parse_bytes,
                "a byte count",
            )? {
                n if n < MIN_BODY_BYTES => {
                    return err(format!(
                        "--max-body-bytes must be at least {MIN_BODY_BYTES}"
                    ));
                }
                n => n,
            },
            max_sessions: count("max-sessions", &args.max_sessions, DEFAULT_MAX_SESSIONS, 1)?,
            session_idle_timeout: positive(
                "session-idle-timeout",
                r.parsed(
                    "session-idle-timeout",
                    &args.session_idle_timeout,
                    DEFAULT_SESSION_IDLE_TIMEOUT,
                    parse_duration,
                    dur,
                )?,
            )?,
            request_timeout,
            keep_alive,
            max_queue: count("max-queue", &args.max_queue, DEFAULT_MAX_QUEUE, 1)?,
            max_queue_bytes: r.parsed(
                "max-queue-bytes",
                &args.max_queue_bytes,
                DEFAULT_MAX_QUEUE_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            max_child_queue_bytes: r.parsed(
                "max-child-queue-bytes",
                &args.max_child_queue_bytes,
                DEFAULT_MAX_CHILD_QUEUE_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            max_server_info_bytes: r.parsed(
                "max-server-info-bytes",
                &args.max_server_info_bytes,
                DEFAULT_MAX_SERVER_INFO_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            replay_events: count(
                "replay-events",
                &args.replay_events,
                DEFAULT_REPLAY_EVENTS,
                0,
            )?,
            replay_bytes: r.parsed(
                "replay-bytes",
                &args.replay_bytes,
                DEFAULT_REPLAY_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            max_tasks: count("max-tasks", &args.max_tasks, DEFAULT_MAX_TASKS, 1)?,
            replay_total_bytes: r.parsed(
                "replay-total-bytes",
                &args.replay_total_bytes,
                DEFAULT_REPLAY_TOTAL_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            replay_linger: r.parsed(
                "replay-linger",
                &args.replay_linger,
                DEFAULT_REPLAY_LINGER,
                parse_duration,
                dur,
            )?,
            replay_streams: count(
                "replay-streams",
                &args.replay_streams,
                DEFAULT_REPLAY_STREAMS,
                1,
            )?,
            replay_tombstones: count(
                "replay-tombstones",
                &args.replay_tombstones,
                DEFAULT_REPLAY_TOMBSTONES,
                0,
            )?,
            replay_tombstone_bytes: r.parsed(
                "replay-tombstone-bytes",
                &args.replay_tombstone_bytes,
                DEFAULT_REPLAY_TOMBSTONE_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            max_server_requests,
            max_server_requests_per_session,
            max_task_input_bytes: r.parsed(
                "max-task-input-bytes",
                &args.max_task_input_bytes,
                DEFAULT_MAX_TASK_INPUT_BYTES,
                parse_bytes,
                "a byte count",
            )?,
            max_batch,
            max_in_flight,
            mode,
            exit_on_child_exit,
            restart_max_backoff: positive(
                "restart-max-backoff",
                r.parsed(
                    "restart-max-backoff",
                    &args.restart_max_backoff,
                    DEFAULT_RESTART_MAX_BACKOFF,
                    parse_duration,
                    dur,
                )?,
            )?,
            upstream_protocol: match r.value("upstream-protocol", &args.upstream_protocol)? {
                None => UpstreamProtocol::Auto,
                Some((v, source)) => match v.as_str() {
                    "auto" => UpstreamProtocol::Auto,
                    "legacy" => UpstreamProtocol::Legacy,
                    "modern" => UpstreamProtocol::Modern,
                    _ => {
                        return err(format!(
                            "{source}: expected auto, legacy or modern, got {v:?}"
                        ));
                    }
                },
            },
            probe_timeout: positive(
                "probe-timeout",
                r.parsed(
                    "probe-timeout",
                    &args.probe_timeout,
                    DEFAULT_PROBE_TIMEOUT,
                    parse_duration,
                    dur,
                )?,
            )?,
            oneshot_idle_timeout: positive(
                "oneshot-idle-timeout",
                r.parsed(
                    "oneshot-idle-timeout",
                    &args.oneshot_idle_timeout,
                    DEFAULT_ONESHOT_IDLE_TIMEOUT,
                    parse_duration,
                    dur,
                )?,
            )?,
            header_read_timeout: positive(
                "header-read-timeout",
                r.parsed(
                    "header-read-timeout",
                    &args.header_read_timeout,
                    DEFAULT_HEADER_READ_TIMEOUT,
                    parse_duration,
                    dur,
                )?,
            )?,
            body_read_timeout: positive(
                "body-read-timeout",
                r.parsed(
                    "body-read-timeout",
                    &args.body_read_timeout,
                    DEFAULT_BODY_READ_TIMEOUT,
                    parse_duration,
                    dur,
                )?,
            )?,
            connection_idle_timeout,
            max_connections: count(
                "max-connections",
                &args.max_connections,
                DEFAULT_MAX_CONNECTIONS,
                1,
            )?,
            worker_threads: match count(
                "worker-threads",
                &args.worker_threads,
                DEFAULT_WORKER_THREADS,
                0,
            )? {
                n if n > MAX_WORKER_THREADS => {
                    return err(format!(
                        "--worker-threads must be at most {MAX_WORKER_THREADS}"
                    ));
                }
                n => n,
            },
            replica_id,
            log_format,
            log_level: r
                .value("log-level", &args.log_level)?
                .map(|(v, _)| v)
                .unwrap_or_else(|| "info".into()),
            metrics_auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args = Args::from_args(&["mcp-proxy"], argv).map_err(|e| ConfigError(e.output))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args(args, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    /// Regression (fuzz target `config`): a file name with a CR or LF
    /// (`--api-key-file ")\r"`) went into the error as it was, so the
    /// binary's one `error: …` line became two.
    #[test]
    fn an_error_quoting_a_line_break_is_still_one_line() {
        for name in [")\r", "a\nerror: forged", "\u{1b}[2J"] {
            let e = parse(&["--api-key-file", name, "--", "server"], &[]).unwrap_err();
            let line = e.to_string();
            assert!(!line.contains(|c: char| c.is_control()), "{line:?}");
            assert!(line.contains("--api-key-file"), "{line}");
        }
        assert_eq!(ConfigError("a\r\nb".into()).to_string(), "a\\r\\nb");
    }

    #[test]
    fn defaults_suit_a_local_run() {
        let c = parse(&["--", "server", "--flag"], &[]).unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 8080);
        assert_eq!(c.path, "/mcp");
        assert_eq!(c.child.program, "server");
        assert_eq!(c.child.args, vec!["--flag"]);
        assert_eq!(c.mode, Mode::PerSession);
        assert_eq!(c.child.max_line_bytes, 64 << 20);
        assert_eq!(c.session_idle_timeout, Duration::from_secs(1800));
        assert!(c.request_timeout.is_none());
    }

    #[test]
    fn child_stdout_is_a_pipe_unless_socket_is_asked_for() {
        let c = parse(&["--", "s"], &[]).unwrap();
        assert_eq!(c.child.stdout_kind, StdoutKind::Pipe);
        let c = parse(&["--child-stdout", "socket", "--", "s"], &[]).unwrap();
        assert_eq!(c.child.stdout_kind, StdoutKind::Socket);
        let c = parse(&["--", "s"], &[("MCP_PROXY_CHILD_STDOUT", "socket")]).unwrap();
        assert_eq!(c.child.stdout_kind, StdoutKind::Socket);
        let e = parse(&["--child-stdout", "file", "--", "s"], &[]).unwrap_err();
        assert!(e.0.contains("expected socket or pipe"), "{}", e.0);
    }

    #[test]
    fn flag_wins_over_environment() {
        let c = parse(
            &["--port", "9000", "--", "s"],
            &[
                ("MCP_PROXY_PORT", "7000"),
                ("MCP_PROXY_MAX_BODY_BYTES", "1M"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.max_body_bytes, 1 << 20);
        let c = parse(
            &["--", "s"],
            &[("MCP_PROXY_PORT", "7000"), ("MCP_PROXY_SHARED", "true")],
        )
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.mode, Mode::Shared);
    }

    #[test]
    fn a_sessions_share_of_the_childs_requests_is_a_quarter_only_when_shared() {
        let c = parse(&["--", "s"], &[]).unwrap();
        assert_eq!(c.max_server_requests, DEFAULT_MAX_SERVER_REQUESTS);
        assert_eq!(c.max_server_requests_per_session, c.max_server_requests);
        let c = parse(
            &["--shared", "--max-server-requests", "100", "--", "s"],
            &[],
        )
        .unwrap();
        assert_eq!(c.max_server_requests_per_session, 25);
        let c = parse(
            &["--shared", "--max-server-requests", "2", "--", "s"],
            &[("MCP_PROXY_MAX_SERVER_REQUESTS_PER_SESSION", "2")],
        )
        .unwrap();
        assert_eq!(c.max_server_requests_per_session, 2);
        let c = parse(&["--shared", "--max-server-requests", "3", "--", "s"], &[]).unwrap();
        assert_eq!(c.max_server_requests_per_session, 1, "never 0");
        assert!(parse(&["--max-server-requests", "0", "--", "s"], &[]).is_err());
    }

    #[test]
    fn max_in_flight_follows_max_batch_and_is_never_below_it() {
        let c = parse(&["--", "s"], &[]).unwrap();
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        let c = parse(&["--max-batch", "4096", "--", "s"], &[]).unwrap();
        assert_eq!(c.max_in_flight, 4096, "the default follows --max-batch");
        let c = parse(
            &["--max-in-flight", "16", "--max-batch", "16", "--", "s"],
            &[],
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 16);
        let c = parse(
            &["--max-batch", "8", "--", "s"],
            &[("MCP_PROXY_MAX_IN_FLIGHT", "10")],
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 10);
        let e = parse(&["--max-in-flight", "8", "--", "s"], &[]).unwrap_err();
        assert!(e.0.contains("--max-batch (1024)"), "{e}");
        assert!(
            parse(
                &["--max-in-flight", "0", "--max-batch", "1", "--", "s"],
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn missing_command_is_an_error() {
        assert!(
            parse(&[], &[])
                .unwrap_err()
                .0
                .contains("no MCP server command")
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        assert!(
            parse(&["--port", "x", "--", "s"], &[])
                .unwrap_err()
                .0
                .contains("--port")
        );
        assert!(
            parse(&["--", "s"], &[("MCP_PROXY_KEEP_ALIVE", "soon")])
                .unwrap_err()
                .0
                .contains("MCP_PROXY_KEEP_ALIVE")
        );
        assert!(
            parse(&["--path", "mcp", "--", "s"], &[])
                .unwrap_err()
                .0
                .contains("--path")
        );
        assert!(
            parse(&["--env", "NOEQUALS", "--", "s"], &[])
                .unwrap_err()
                .0
                .contains("KEY=VALUE")
        );
    }

    #[test]
    fn public_bind_without_key_is_refused_with_the_fix() {
        let e = parse(&["--host", "0.0.0.0", "--", "s"], &[]).unwrap_err().0;
        assert!(
            e.contains("--api-key") && e.contains("--allow-unauthenticated"),
            "{e}"
        );
        assert!(
            parse(
                &["--host", "0.0.0.0", "--allow-unauthenticated", "--", "s"],
                &[]
            )
            .is_ok()
        );
        let c = parse(
            &["--host", "0.0.0.0", "--", "s"],
            &[("MCP_PROXY_API_KEY", "0123456789abcdef,fedcba9876543210")],
        )
        .unwrap();
        assert_eq!(c.auth.api_keys.len(), 2);
        assert_eq!(c.auth.api_keys[1].name, "key-2");
        assert_eq!(c.max_sessions_per_principal, DEFAULT_MAX_SESSIONS / 4);
        let c = parse(&["--max-sessions", "8", "--", "s"], &[]).unwrap();
        assert_eq!(c.max_sessions_per_principal, 8, "one anonymous principal");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_bytes("64M"), Some(64 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("12x"), None);
    }

    #[test]
    fn absurd_values_are_errors_not_panics() {
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_duration("1e400"), None);
        for (flag, v) in [
            ("--session-idle-timeout", "99999999999999999999h"),
            ("--keep-alive", "9999999999h"),
            ("--request-timeout", "99999999999999999999h"),
            ("--max-queue", "99999999999999999999"),
            ("--max-connections", "18446744073709551615"),
            ("--replica-id", "has.a.dot"),
        ] {
            let e = parse(&[flag, v, "--", "s"], &[]).unwrap_err().0;
            assert!(e.contains(flag), "{flag} {v}: {e}");
        }
        assert!(
            parse(&["--keep-alive", "3m", "--", "s"], &[])
                .unwrap_err()
                .0
                .contains("--connection-idle-timeout")
        );
    }

    #[test]
    fn zero_request_timeout_is_none_however_written() {
        for zero in ["0", "0s", "0ms", "0.0m", "none"] {
            let c = parse(&["--request-timeout", zero, "--", "s"], &[]).unwrap();
            assert_eq!(c.request_timeout, None, "{zero}");
        }
        let c = parse(&["--request-timeout", "1ms", "--", "s"], &[]).unwrap();
        assert_eq!(c.request_timeout, Some(Duration::from_millis(1)));
    }

    #[test]
    fn empty_values_and_lists_are_errors() {
        for (k, v) in [
            ("MCP_PROXY_API_KEY", ""),
            ("MCP_PROXY_API_KEY", " , "),
            ("MCP_PROXY_LOG_LEVEL", ""),
            ("MCP_PROXY_PORT", " "),
        ] {
            let e = parse(&["--", "s"], &[(k, v)]).unwrap_err().0;
            assert!(e.contains(k), "{k}={v:?}: {e}");
        }
        let e = parse(&["--allowed-host", "", "--", "s"], &[])
            .unwrap_err()
            .0;
        assert!(e.contains("--allowed-host"), "{e}");
        // Where empty means something, it still does.
        let c = parse(&["--", "s"], &[("MCP_PROXY_REPLICA_ID", "")]).unwrap();
        assert_eq!(c.replica_id, None);
    }

    #[test]
    fn connection_limits_have_production_defaults_and_env() {
        let c = parse(&["--", "s"], &[]).unwrap();
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(c.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        assert_eq!(c.max_queue_bytes, DEFAULT_MAX_QUEUE_BYTES);
        assert_eq!(c.connection_idle_timeout, DEFAULT_CONNECTION_IDLE_TIMEOUT);
        assert_eq!(c.oneshot_idle_timeout, DEFAULT_ONESHOT_IDLE_TIMEOUT);
        assert_eq!(c.replica_id, None);
        assert_eq!(c.worker_threads, DEFAULT_WORKER_THREADS);
        assert_eq!(c.audit_queue_bytes, DEFAULT_WRITER_QUEUE_BYTES);
        assert_eq!(c.log_queue_bytes, DEFAULT_WRITER_QUEUE_BYTES);
        let c = parse(
            &["--", "s"],
            &[
                ("MCP_PROXY_MAX_CONNECTIONS", "7"),
                ("MCP_PROXY_HEADER_READ_TIMEOUT", "2s"),
                ("MCP_PROXY_BODY_READ_TIMEOUT", "3s"),
                ("MCP_PROXY_MAX_QUEUE_BYTES", "64k"),
                ("MCP_PROXY_CONNECTION_IDLE_TIMEOUT", "1m"),
                ("MCP_PROXY_ONESHOT_IDLE_TIMEOUT", "5s"),
                ("MCP_PROXY_REPLICA_ID", "r-1"),
                ("MCP_PROXY_CHILD_LOG_RATE", "5"),
                ("MCP_PROXY_WORKER_THREADS", "3"),
                ("MCP_PROXY_AUDIT_QUEUE_BYTES", "1m"),
                ("MCP_PROXY_LOG_QUEUE_BYTES", "512k"),
            ],
        )
        .unwrap();
        assert_eq!(c.worker_threads, 3);
        assert_eq!(c.audit_queue_bytes, 1 << 20);
        assert_eq!(c.log_queue_bytes, 512 << 10);
        for flag in ["--audit-queue-bytes", "--log-queue-bytes"] {
            let e = parse(&[flag, "lots", "--", "s"], &[]).unwrap_err();
            assert!(e.0.contains(flag), "{}", e.0);
        }
        for bad in ["-1", "many", "1025"] {
            let e = parse(&["--worker-threads", bad, "--", "s"], &[]).unwrap_err();
            assert!(e.0.contains("--worker-threads"), "{bad}: {}", e.0);
        }
        assert_eq!(c.child.stderr_lines_per_second, 5);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.body_read_timeout, Duration::from_secs(3));
        assert_eq!(c.max_queue_bytes, 64 * 1024);
        assert_eq!(c.connection_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.oneshot_idle_timeout, Duration::from_secs(5));
        assert_eq!(c.replica_id.as_deref(), Some("r-1"));
    }
}
