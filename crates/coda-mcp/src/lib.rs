//! The Coda MCP server (`coda-mcp`): a stdio MCP server for the Coda REST
//! API v1, built on rmcp. It is a drop-in replacement for the TypeScript
//! coda-enhanced server (same 34 tool names and parameter names) plus the
//! additions listed in this crate's `README.md`. It is its own crate so that
//! the proxy (`mcp-sidecar`) builds without it, and shares no code with it.
//!
//! # Architecture
//!
//! Read from the wire inwards:
//!
//! - [`stdio`]: the front of stdin and stdout. It reads lines under a cap
//!   (`--max-line-bytes`) and answers with a JSON-RPC error every line rmcp
//!   would leave unanswered (not JSON, not a message, too long); the rest
//!   reaches rmcp as the message the front parsed (each line is parsed
//!   once). One task writes stdout, so rmcp's lines and these errors never
//!   interleave. At most `--max-pending-requests` requests are between
//!   stdin and their answer on stdout: past it stdin waits.
//! - [`server`]: [`CodaServer`], the rmcp `ServerHandler`. It merges the tool
//!   routers of the enabled toolsets and, in read-only mode, removes every
//!   tool whose `readOnlyHint` is not true, so write tools are not listed at
//!   all. It lists portable schemas, runs each call in a [`call`] context
//!   (progress, cancellation), enforces the `--docs` allow-list and turns
//!   page/table/row URLs into ids. rmcp does protocol negotiation
//!   (2024-11-05 … 2026-07-28).
//! - [`shutdown`]: what the process waits for before it exits. A write
//!   call holds a token of its tracker from its start; once stdin ends (or
//!   a first SIGTERM/SIGINT) one that sent a write to Coda runs to its
//!   end, within its deadline, and the binary waits for it; reads and
//!   unsent writes are stopped. A second signal exits at once.
//! - [`schema`]: rewrites schemars output into the JSON Schema subset every
//!   client accepts, and the checker the tests run over every tool.
//! - [`resources`]: the `coda://docs/{docId}/schema` resource and the row
//!   query guide (resource and prompt).
//! - [`call`]: the task-local context of one tool call: progress token and
//!   peer, output settings.
//! - [`tools`]: the catalogue. One submodule per toolset (`account`, `docs`,
//!   `folders`, `pages`, `tables` with formulas and controls, `rows`,
//!   `sharing` with automations, `admin`), each with its parameter and output
//!   types (schemars gives `inputSchema` and `outputSchema`) and an
//!   `#[tool_router]` block on [`tools::Coda`], the state every tool call
//!   shares (so the tools import nothing from `server`). What tools share lives in `tools/mod.rs`:
//!   argument parsing that names the bad argument, pagination (`limit`,
//!   `pageToken` → `nextPageToken`, `fetchAll` with a cap, the result byte
//!   budget with its own continuation tokens), waiting on `/mutationStatus`
//!   (never turning an accepted write into a failure), the column cache and
//!   the slim column, and the shape of every result (`structuredContent`
//!   plus a one-line text summary; failures are `isError: true` results
//!   carrying Coda's status and message). `tools/error.rs` holds
//!   `ToolError` and `tools/checks.rs` the schema-aware checks of row
//!   writes and `verify`; both sit under `tools/mod.rs` and import nothing
//!   from it or from a toolset.
//! - [`client`]: the HTTP client. Bearer token (never logged, never in an
//!   error), per-class rate-limit buckets ([`ratelimit`]), retries of 429 for
//!   every method and of 5xx/transport errors for replay-safe methods, with
//!   `Retry-After` or exponential backoff with jitter, all under the tool
//!   call's deadline. Export downloads go to another host without the token.
//! - [`json`]: Coda's answers parsed, refusing an object that holds a
//!   member twice (serde_json keeps the last copy silently): an ambiguous
//!   answer is a protocol error, and a write answered so has an unknown
//!   outcome.
//! - [`text`]: Coda's text as it may reach a model or a log: the API
//!   token replaced wherever an answer echoes it, line breaks and bidi
//!   overrides escaped, cut to a length.
//! - [`budget`]: the bytes of Coda's answers held at once, across all calls
//!   (`--max-read-bytes`): every body holds room while it is kept, and a
//!   body that finds none fails with an error saying to retry; only a
//!   reader holding nothing waits for room (until its deadline), so
//!   readers can never wait on each other.
//! - [`config`]: flags and environment (`CODA_API_TOKEN`/`CODA_API_KEY`/
//!   `API_KEY`, `CODA_API_BASE_URL`, `CODA_READ_ONLY`, `CODA_TOOLSETS`,
//!   `CODA_DOCS`, `CODA_MAX_RESULT_BYTES`, `CODA_FULL_TEXT`,
//!   `CODA_MAX_LINE_BYTES`, `CODA_MAX_PENDING_REQUESTS`,
//!   `CODA_MAX_READ_BYTES`) read through a
//!   lookup function, validated, no I/O; the [`config::Toolset`]s that
//!   `--toolsets` names.
//! - [`log`]: the stderr log. Lines go through a queue bounded in bytes
//!   (`--log-queue-bytes`) to a thread of their own, so a stderr nobody
//!   reads (a full pipe) or a broken one never blocks a call, the signal
//!   task or the exit: a line that finds no room is dropped and counted,
//!   the count is logged once writing works again and at exit, and the
//!   exit gives the queue a bounded time to drain.
//! - [`number`]: decimal numbers compared by the value they spell, not
//!   by the `f64` they round to (`verify`, the stdio front).
//! - [`ids`]: a doc id from an id or a Coda browser/API URL, for `--docs`,
//!   the allow-list, resources and tools alike.
//!
//! # Decisions worth knowing
//!
//! - 429 is retried until the deadline, a 5xx at most twice and only for
//!   requests marked replayable (never an append, insert or delete); a list
//!   whose first page keeps answering 504 is asked again with half the page
//!   size.
//! - Every tool call has one deadline (`--call-timeout-secs`, default 50 s,
//!   under the TypeScript SDK clients' 60 s)
//!   covering rate-limit waits, retries and polling; a wait that would end
//!   after it is not started.
//! - Polls (exports, mutations) sleep first, treat 404 as "not replicated
//!   yet" for 30 s, and back off ×1.5 up to 8 s. Exports end on `failed` or
//!   `error`; a download link that returns an error document is replaced by
//!   re-polling the status (twice at most); gzip bodies are sniffed by magic.
//! - Row inserts are chunked so that no body exceeds `--row-chunk-bytes`
//!   (1 MB; Coda's limit is 2 MB); a row over Coda's 85 KB limit is refused
//!   before anything is sent. A failure after earlier chunks succeeded is
//!   still a success result saying how many rows were accepted, with their
//!   request ids and the error.
//! - Exit codes of the binary: 64 for usage/configuration errors (including a
//!   missing token, an unknown flag), 1 for runtime failures (including a
//!   token `/whoami` rejects with 401/403; an unreachable Coda at start-up
//!   is only a warning).

pub mod budget;
pub mod call;
pub mod client;
pub mod config;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod json;
pub mod log;
pub mod number;
pub mod ratelimit;
pub mod resources;
pub mod schema;
pub mod server;
pub mod shutdown;
pub mod stdio;
pub mod text;
pub mod tools;

pub use config::{CodaArgs, CodaConfig, ConfigError};
pub use server::CodaServer;
