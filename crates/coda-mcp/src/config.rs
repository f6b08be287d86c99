//! `coda-mcp` configuration: command-line flags and environment variables,
//! merged and validated with no I/O, and the [`Toolset`]s `--toolsets`
//! switches on.
//!
//! The environment is read through a lookup function so tests never call
//! `set_var`. Flags win over the environment. The token is held in
//! [`ApiToken`], whose `Debug` never prints it.

use std::fmt;
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::budget::MAX_RESPONSE_BYTES;
use super::ids::doc_id;

/// Where the Coda REST API lives unless told otherwise.
pub const DEFAULT_API_BASE_URL: &str = "https://coda.io/apis/v1";
/// Upper bound for one tool call, retries and polling included. Below the
/// 60 s request timeout of the TypeScript SDK's clients, so a client does
/// not give up on a call that then completes (or writes) behind its back.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(50);
/// How long the start-up token check may take before coda-mcp serves anyway.
pub const DEFAULT_TOKEN_CHECK_DEADLINE: Duration = Duration::from_secs(10);
/// Largest `structuredContent` a list returns; whole items beyond it are
/// left for the continuation token. About 25k tokens of context.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 100_000;
/// Characters a page read returns unless `maxChars` says otherwise.
pub const DEFAULT_MAX_CHARS: usize = 20_000;
/// First backoff step after a 429/5xx without `Retry-After`; it triples.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(2000);
/// Longest single backoff sleep.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(20);
/// First sleep before polling an export or a mutation (early polls 404).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(1500);
/// How long a 404 from a status endpoint means "not replicated yet".
pub const DEFAULT_NOT_FOUND_GRACE: Duration = Duration::from_secs(30);
/// Target size of one row-insert request body; Coda rejects bodies over 2 MB.
pub const DEFAULT_ROW_CHUNK_BYTES: usize = 1_000_000;
/// Largest `--row-chunk-bytes`: Coda refuses a request body over 2 MB
/// whole (none of its rows applied), so a larger chunk could only fail.
/// 2 MB read as 2,000,000 bytes, the smaller of its two readings.
pub const MAX_ROW_CHUNK_BYTES: usize = 2_000_000;
/// Timeout for one HTTP request to Coda.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest stdin line (one JSON-RPC message, its newline included) that is
/// read; a longer one is skipped and answered with an error. rmcp's own cap
/// (16 MiB), so the default changes nothing about what is accepted.
pub const DEFAULT_MAX_LINE_BYTES: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
/// Smallest `--max-line-bytes`: room for an `initialize` request.
pub const MIN_MAX_LINE_BYTES: usize = 1024;
/// Requests read from stdin and not answered on stdout yet, at most (see
/// [`crate::stdio`]): past it stdin is not read until an answer is
/// written. Each holds a tool call's state or an answer of up to a
/// `tools/list` (about 100 KB), so 64 is a few MB; no client runs that
/// many calls at once.
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 64;
/// How long answers still queued when stdin ends may take to reach
/// stdout before the process exits without them (a client that closed
/// stdin and reads stdout no more would keep it waiting for ever).
pub const DEFAULT_STDOUT_GRACE: Duration = Duration::from_secs(5);
/// Past a write call's deadline, the time it may still take to end
/// (turning Coda's last answer into a result): the default
/// `--shutdown-wait-secs` is the call deadline plus this, so every write
/// sent to Coda before the stop runs to its end.
pub const WRITE_END_MARGIN: Duration = Duration::from_secs(5);
/// Largest `--shutdown-wait-secs`: the longest call deadline and its margin.
pub const MAX_SHUTDOWN_WAIT_SECS: u64 = MAX_CALL_TIMEOUT_SECS + WRITE_END_MARGIN.as_secs();
/// Pages in a row without items, each with a new `nextPageToken`, after
/// which a list stops (a Coda handing out tokens for ever would keep a
/// call reading, on the shared read budget, until its deadline).
pub const DEFAULT_MAX_EMPTY_PAGES: usize = 100;
/// Most JSON values an answer from Coda may hold to be parsed: a value
/// costs 32 to 100 bytes as a `serde_json::Value`, so 1,000,000 is at most
/// about 100 MB; Coda's largest real answers (500 wide rows) hold tens of
/// thousands.
pub const DEFAULT_MAX_ANSWER_VALUES: usize = 1_000_000;
/// Most bytes of Coda's answers held in memory at once, across all calls
/// (`--max-read-bytes`, see [`crate::budget`]): 256 MiB. Without it, the
/// 64 calls `--max-pending-requests` lets run could each hold a 32 MiB
/// answer ([`MAX_RESPONSE_BYTES`]), 2 GiB, and an export twice that. Real
/// answers are a few MiB, so 64 calls of 4 MiB fit, and so do 8 of the
/// largest answers or 4 of the largest exports at once.
pub const DEFAULT_MAX_READ_BYTES: usize = 256 * 1024 * 1024;
/// Smallest `--max-read-bytes`: one largest answer always fits, also an
/// export, whose gzip body and inflated text (each up to
/// [`MAX_RESPONSE_BYTES`]) are held together while it inflates.
pub const MIN_MAX_READ_BYTES: usize = 2 * MAX_RESPONSE_BYTES;
const _: () = assert!(DEFAULT_MAX_READ_BYTES >= MIN_MAX_READ_BYTES);

/// Bytes the column cache may hold (`--column-cache-bytes`: the parse of
/// the columns of the tables written to lately, kept 60 s for the checks
/// of row writes). A table's columns take tens of KiB parsed (100 columns
/// with their formats), a select list of 5000 options a few MiB, so 64 MiB
/// holds dozens of ordinary tables or a few with the largest lists.
pub const DEFAULT_COLUMN_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of log lines waiting for stderr at most (`--log-queue-bytes`,
/// see [`crate::log`]): past it a line is dropped and counted. 8 MiB is
/// tens of thousands of lines, seconds of the busiest debug log.
pub const DEFAULT_LOG_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Smallest `--log-queue-bytes`: room for a few long lines.
pub const MIN_LOG_QUEUE_BYTES: usize = 64 * 1024;

/// Exit code for bad usage or configuration (sysexits `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// Exit code for a runtime failure (including a token rejected by `/whoami`).
pub const EXIT_RUNTIME: i32 = 1;

/// A Coda API token. `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Command-line flags of `coda-mcp`.
#[derive(FromArgs, Debug, Default)]
/// A stdio MCP server for the Coda REST API v1. The token comes from
/// CODA_API_TOKEN (or CODA_API_KEY, or API_KEY).
pub struct CodaArgs {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// only these docs (comma-separated ids or Coda URLs) may be read or
    /// written (env CODA_DOCS; default: every doc the token can reach)
    #[argh(option)]
    pub docs: Option<String>,
    /// largest list result in bytes; whole items beyond it are left for
    /// nextPageToken (env CODA_MAX_RESULT_BYTES; default 100000)
    #[argh(option)]
    pub max_result_bytes: Option<usize>,
    /// repeat each result's JSON as text content instead of a one-line
    /// summary, for clients that ignore structuredContent (env CODA_FULL_TEXT=1)
    #[argh(switch)]
    pub full_text: bool,
    /// coda API base URL, https (http only to localhost) (env CODA_API_BASE_URL; default `https://coda.io/apis/v1`)
    #[argh(option)]
    pub api_base_url: Option<String>,
    /// hide every tool that writes (env CODA_READ_ONLY=1)
    #[argh(switch)]
    pub read_only: bool,
    /// comma-separated toolsets to enable, "all", or "coda-enhanced" (exactly
    /// the 34 tools of coda-enhanced) (env CODA_TOOLSETS; default: every
    /// toolset except admin)
    #[argh(option)]
    pub toolsets: Option<String>,
    /// do not check the token against /whoami at start (offline use)
    #[argh(switch)]
    pub skip_token_check: bool,
    /// deadline for one tool call in seconds, retries and polling included (default 50)
    #[argh(option)]
    pub call_timeout_secs: Option<u64>,
    /// first retry backoff in milliseconds (default 2000)
    #[argh(option)]
    pub retry_base_ms: Option<u64>,
    /// first poll delay for exports and mutations in milliseconds (default 1500)
    #[argh(option)]
    pub poll_interval_ms: Option<u64>,
    /// target bytes per row-insert request, 1024 to 2000000 (default 1000000)
    #[argh(option)]
    pub row_chunk_bytes: Option<usize>,
    /// disable the client-side rate-limit buckets (testing only)
    #[argh(switch)]
    pub no_rate_limit: bool,
    /// longest stdin line (one message) in bytes; a longer one is skipped
    /// and answered with an error (env CODA_MAX_LINE_BYTES; default 16777216)
    #[argh(option)]
    pub max_line_bytes: Option<usize>,
    /// most requests read and not answered yet; past it stdin is not read
    /// until an answer is written (env CODA_MAX_PENDING_REQUESTS; default 64)
    #[argh(option)]
    pub max_pending_requests: Option<usize>,
    /// seconds the answers still queued when stdin ends may take to be
    /// written before exiting without them (env CODA_STDOUT_GRACE_SECS;
    /// default 5)
    #[argh(option)]
    pub stdout_grace_secs: Option<u64>,
    /// seconds coda-mcp waits, once stdin ends or on a first SIGTERM, for
    /// the write calls that sent a write to Coda before exiting without
    /// them, 0 to 3605 (env CODA_SHUTDOWN_WAIT_SECS; default: the call
    /// timeout plus 5, so every write sent finishes)
    #[argh(option)]
    pub shutdown_wait_secs: Option<u64>,
    /// pages in a row with no items but a new nextPageToken after which a
    /// list stops, saying so (env CODA_MAX_EMPTY_PAGES; default 100)
    #[argh(option)]
    pub max_empty_pages: Option<usize>,
    /// most JSON values an answer from Coda may hold; one with more is
    /// refused unparsed (env CODA_MAX_ANSWER_VALUES; default 1000000)
    #[argh(option)]
    pub max_answer_values: Option<usize>,
    /// most bytes of Coda's answers held in memory at once, across all
    /// calls; an answer that finds no room waits for it (until the call
    /// deadline) or fails with an error saying to retry (env
    /// CODA_MAX_READ_BYTES; default 268435456, at least 67108864)
    #[argh(option)]
    pub max_read_bytes: Option<usize>,
    /// most bytes of parsed columns cached (60 s) to check row writes;
    /// a table's columns larger than that are not cached, and are read
    /// again by each write (env CODA_COLUMN_CACHE_BYTES; default 67108864;
    /// 0 caches none)
    #[argh(option)]
    pub column_cache_bytes: Option<usize>,
    /// most bytes of log lines waiting for stderr; past it a line is
    /// dropped and counted, so a stderr nobody reads never blocks coda-mcp
    /// (env CODA_LOG_QUEUE_BYTES; default 8388608, at least 65536)
    #[argh(option)]
    pub log_queue_bytes: Option<usize>,
}

/// A named group of tools that can be switched on with `--toolsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolset {
    Account,
    Docs,
    Folders,
    Pages,
    Tables,
    Rows,
    Formulas,
    Controls,
    Sharing,
    Automations,
    /// Analytics and workspace administration: off by default.
    Admin,
}

impl Toolset {
    pub const ALL: [Toolset; 11] = [
        Toolset::Account,
        Toolset::Docs,
        Toolset::Folders,
        Toolset::Pages,
        Toolset::Tables,
        Toolset::Rows,
        Toolset::Formulas,
        Toolset::Controls,
        Toolset::Sharing,
        Toolset::Automations,
        Toolset::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Toolset::Account => "account",
            Toolset::Docs => "docs",
            Toolset::Folders => "folders",
            Toolset::Pages => "pages",
            Toolset::Tables => "tables",
            Toolset::Rows => "rows",
            Toolset::Formulas => "formulas",
            Toolset::Controls => "controls",
            Toolset::Sharing => "sharing",
            Toolset::Automations => "automations",
            Toolset::Admin => "admin",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.name()).collect()
    }

    /// Every toolset except `admin`.
    pub fn default_set() -> Vec<Toolset> {
        Self::ALL
            .into_iter()
            .filter(|t| *t != Toolset::Admin)
            .collect()
    }

    /// Parse `"rows,pages"`, `"all"` or `"default,admin"`.
    pub fn parse_list(list: &str) -> Result<Vec<Toolset>, ConfigError> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let add: Vec<Toolset> = match name.to_ascii_lowercase().as_str() {
                "all" => Self::ALL.to_vec(),
                "default" => Self::default_set(),
                other => vec![
                    *Self::ALL
                        .iter()
                        .find(|t| t.name() == other)
                        .ok_or_else(|| ConfigError::UnknownToolset(name.to_owned()))?,
                ],
            };
            for t in add {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }
}

/// Largest `--call-timeout-secs`: an hour (a call is answered long before
/// any client waits that long; larger values would overflow `Instant`).
pub const MAX_CALL_TIMEOUT_SECS: u64 = 3600;
/// Smallest `--poll-interval-ms`: polls of Coda are never back to back.
pub const MIN_POLL_INTERVAL_MS: u64 = 10;
/// Largest `--poll-interval-ms`: a minute. Polls grow to 8 s apart, and a
/// first wait past the call's deadline never polls at all (an export gave
/// up at once, a `wait` slept until the deadline).
pub const MAX_POLL_INTERVAL_MS: u64 = 60_000;
/// Largest `--max-pending-requests`: far above what any client runs at
/// once (tokio's semaphore, which counts them, panics past 2^61).
pub const MAX_MAX_PENDING_REQUESTS: usize = 65_536;
/// Smallest `--retry-base-ms`: retries of a 429 or 5xx are never back to
/// back (the backoff is a multiple of it, and `Retry-After: 0` never
/// shortens it).
pub const MIN_RETRY_BASE_MS: u64 = 10;

/// Validated configuration of the Coda server.
#[derive(Debug, Clone)]
pub struct CodaConfig {
    /// Bearer token; never logged.
    pub token: ApiToken,
    /// API root without a trailing slash, e.g. `https://coda.io/apis/v1`.
    pub api_base_url: reqwest::Url,
    /// When true, write tools are not registered at all.
    pub read_only: bool,
    /// Toolsets whose tools are listed.
    pub toolsets: Vec<Toolset>,
    /// Whether `main` checks the token against `/whoami` before serving.
    pub check_token: bool,
    /// Deadline for one tool call (retries and polling included).
    pub call_deadline: Duration,
    /// First backoff step when Coda gives no `Retry-After`.
    pub retry_base: Duration,
    /// Longest single backoff sleep.
    pub retry_max: Duration,
    /// First poll delay for exports and mutation status.
    pub poll_interval: Duration,
    /// Window in which a 404 from a status endpoint is "not yet".
    pub not_found_grace: Duration,
    /// Target bytes per row-insert request body.
    pub row_chunk_bytes: usize,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Client-side rate-limit buckets on (always, except in some tests).
    pub rate_limit: bool,
    /// `--toolsets coda-enhanced`: list exactly the 34 original tools.
    pub coda_enhanced_only: bool,
    /// `--docs`: the only doc ids tools may touch (`None`: any).
    pub docs: Option<Vec<String>>,
    /// Largest list result in bytes (also the bound of the schema resource).
    pub max_result_bytes: usize,
    /// Text content repeats the JSON instead of summarising it.
    pub full_text: bool,
    /// Deadline of the start-up `/whoami` check.
    pub token_check_deadline: Duration,
    /// Longest stdin line read, newline included (see [`crate::stdio`]).
    pub max_line_bytes: usize,
    /// Most requests read from stdin and not answered yet (see
    /// [`crate::stdio`]).
    pub max_pending_requests: usize,
    /// How long answers queued when stdin ends may take to be written.
    pub stdout_grace: Duration,
    /// How long the stop waits for the write calls that sent a write to
    /// Coda ([`crate::shutdown`]).
    pub shutdown_wait: Duration,
    /// Pages in a row with no items after which a list stops.
    pub max_empty_pages: usize,
    /// Most JSON values an answer from Coda may hold to be parsed.
    pub max_answer_values: usize,
    /// Most bytes of Coda's answers held at once ([`crate::budget`]).
    pub max_read_bytes: usize,
    /// Most bytes of log lines waiting for stderr ([`crate::log`]).
    pub log_queue_bytes: usize,
    /// Most bytes of parsed columns the column cache holds.
    pub column_cache_bytes: usize,
}

impl CodaConfig {
    /// `start` plus the call deadline, or a day when that overflows
    /// `Instant` (a huge `--call-timeout-secs`).
    pub fn deadline_from(&self, start: Instant) -> Instant {
        start
            .checked_add(self.call_deadline)
            .or_else(|| start.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(start)
    }
}

/// Why the configuration is unusable. All of these exit with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no Coda API token: set CODA_API_TOKEN (or CODA_API_KEY, or API_KEY)")]
    MissingToken,
    #[error("invalid API base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("unknown toolset {0:?} (known: {known})", known = Toolset::names().join(", "))]
    UnknownToolset(String),
    /// The token holds a character that is not visible ASCII (which an
    /// HTTP header may not carry, or no Coda token holds). Not printed.
    #[error(
        "the API token in {name} holds a control, space or non-ASCII character (character {at}): Coda's tokens are letters, digits and dashes; check how it was copied (nothing was sent)"
    )]
    BadToken { name: &'static str, at: usize },
    /// Its value is not printed: it may be the token.
    #[error("the environment variable {0} is not valid UTF-8")]
    NotUnicode(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidValue {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// A byte count from its flag, else from the environment variable `name`
/// (trimmed); `None` when neither is set.
fn bytes_setting(
    flag: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<usize>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    env(name)
        .map(|v| {
            v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                name,
                value: v.clone(),
                reason: "must be a number of bytes".into(),
            })
        })
        .transpose()
}

/// Refuse `n` below `min` for the flag `name`, saying why when `why` does.
fn at_least<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    n: T,
    min: T,
    why: Option<&str>,
) -> Result<(), ConfigError> {
    if n >= min {
        return Ok(());
    }
    Err(ConfigError::InvalidValue {
        name,
        value: n.to_string(),
        reason: match why {
            Some(why) => format!("must be at least {min} ({why})"),
            None => format!("must be at least {min}"),
        },
    })
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl CodaConfig {
    /// [`CodaConfig::from_args`] with the process's environment, read as
    /// `var_os` reads it through `env`: a variable that is set but not
    /// UTF-8 is refused ([`ConfigError::NotUnicode`]) rather than taken
    /// as unset, which would have silently dropped a `CODA_DOCS`
    /// allow-list, a `CODA_READ_ONLY=1`, a bound, or used `CODA_API_KEY`
    /// instead of `CODA_API_TOKEN`.
    pub fn from_args_os(
        args: &CodaArgs,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let bad = std::cell::RefCell::new(None::<String>);
        let cfg = Self::from_args(args, |k| match env(k)?.into_string() {
            Ok(v) => Some(v),
            Err(_) => {
                bad.borrow_mut().get_or_insert_with(|| k.to_owned());
                None
            }
        });
        match bad.into_inner() {
            Some(name) => Err(ConfigError::NotUnicode(name)),
            None => cfg,
        }
    }

    /// Merge flags with the environment (read through `env`) and validate.
    pub fn from_args(
        args: &CodaArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (token_from, token) = ["CODA_API_TOKEN", "CODA_API_KEY", "API_KEY"]
            .into_iter()
            .filter_map(|k| Some((k, env(k)?.trim().to_owned())))
            .find(|(_, t)| !t.is_empty())
            .ok_or(ConfigError::MissingToken)?;
        // It goes into the Authorization header, which cannot carry a
        // control character: one inside (a newline joining two lines of a
        // file) failed every request before it was sent, and a write's
        // error said it may have been applied. Coda's tokens are visible
        // ASCII, so anything else is a pasting mistake.
        if let Some(at) = token.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(ConfigError::BadToken {
                name: token_from,
                at: at + 1,
            });
        }

        let base = args
            .api_base_url
            .clone()
            .or_else(|| env("CODA_API_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        let api_base_url = parse_base_url(&base)?;

        let read_only = args.read_only || env("CODA_READ_ONLY").is_some_and(|v| truthy(&v));
        let list = args.toolsets.clone().or_else(|| env("CODA_TOOLSETS"));
        let coda_enhanced_only = list
            .as_deref()
            .is_some_and(|l| l.trim().eq_ignore_ascii_case("coda-enhanced"));
        let toolsets = match list {
            _ if coda_enhanced_only => Toolset::default_set(),
            Some(list) => Toolset::parse_list(&list)?,
            None => Toolset::default_set(),
        };
        let docs = match args.docs.clone().or_else(|| env("CODA_DOCS")) {
            None => None,
            Some(list) => {
                let mut ids = Vec::new();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let id = doc_id(item).map_err(|e| ConfigError::InvalidValue {
                        name: "--docs",
                        value: item.to_owned(),
                        reason: e.to_string(),
                    })?;
                    ids.push(id);
                }
                if ids.is_empty() {
                    return Err(ConfigError::InvalidValue {
                        name: "--docs",
                        value: list,
                        reason: "names no doc".into(),
                    });
                }
                Some(ids)
            }
        };
        let max_result_bytes = bytes_setting(args.max_result_bytes, &env, "CODA_MAX_RESULT_BYTES")?
            .unwrap_or(DEFAULT_MAX_RESULT_BYTES);
        at_least("--max-result-bytes", max_result_bytes, 1024, None)?;
        let max_line_bytes = bytes_setting(args.max_line_bytes, &env, "CODA_MAX_LINE_BYTES")?
            .unwrap_or(DEFAULT_MAX_LINE_BYTES);
        at_least("--max-line-bytes", max_line_bytes, MIN_MAX_LINE_BYTES, None)?;
        let max_pending_requests = match args.max_pending_requests {
            Some(n) => n,
            None => env("CODA_MAX_PENDING_REQUESTS")
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                        name: "CODA_MAX_PENDING_REQUESTS",
                        value: v.clone(),
                        reason: "must be a number of requests".into(),
                    })
                })
                .transpose()?
                .unwrap_or(DEFAULT_MAX_PENDING_REQUESTS),
        };
        let stdout_grace = match args.stdout_grace_secs {
            Some(n) => Duration::from_secs(n),
            None => match env("CODA_STDOUT_GRACE_SECS") {
                Some(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| {
                    ConfigError::InvalidValue {
                        name: "CODA_STDOUT_GRACE_SECS",
                        value: v.clone(),
                        reason: "must be a number of seconds".into(),
                    }
                })?,
                None => DEFAULT_STDOUT_GRACE,
            },
        };
        let call_deadline = args
            .call_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_CALL_DEADLINE);
        let shutdown_wait_secs = match args.shutdown_wait_secs {
            Some(n) => Some(n),
            None => env("CODA_SHUTDOWN_WAIT_SECS")
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                        name: "CODA_SHUTDOWN_WAIT_SECS",
                        value: v.clone(),
                        reason: "must be a number of seconds".into(),
                    })
                })
                .transpose()?,
        };
        let shutdown_wait = match shutdown_wait_secs {
            Some(n) if n > MAX_SHUTDOWN_WAIT_SECS => {
                return Err(ConfigError::InvalidValue {
                    name: "--shutdown-wait-secs",
                    value: n.to_string(),
                    reason: format!(
                        "must be between 0 and {MAX_SHUTDOWN_WAIT_SECS} (the longest call timeout and {} s to end)",
                        WRITE_END_MARGIN.as_secs()
                    ),
                });
            }
            Some(n) => Duration::from_secs(n),
            None => call_deadline.saturating_add(WRITE_END_MARGIN),
        };
        let max_empty_pages = match args.max_empty_pages {
            Some(n) => n,
            None => env("CODA_MAX_EMPTY_PAGES")
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                        name: "CODA_MAX_EMPTY_PAGES",
                        value: v.clone(),
                        reason: "must be a number of pages".into(),
                    })
                })
                .transpose()?
                .unwrap_or(DEFAULT_MAX_EMPTY_PAGES),
        };
        at_least("--max-empty-pages", max_empty_pages, 1, None)?;
        let max_answer_values = match args.max_answer_values {
            Some(n) => n,
            None => env("CODA_MAX_ANSWER_VALUES")
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                        name: "CODA_MAX_ANSWER_VALUES",
                        value: v.clone(),
                        reason: "must be a number of values".into(),
                    })
                })
                .transpose()?
                .unwrap_or(DEFAULT_MAX_ANSWER_VALUES),
        };
        at_least(
            "--max-answer-values",
            max_answer_values,
            1000,
            Some("Coda's answers hold hundreds of values"),
        )?;
        let max_read_bytes = bytes_setting(args.max_read_bytes, &env, "CODA_MAX_READ_BYTES")?
            .unwrap_or(DEFAULT_MAX_READ_BYTES);
        at_least(
            "--max-read-bytes",
            max_read_bytes,
            MIN_MAX_READ_BYTES,
            Some(
                "an export's gzip body and its inflated text, up to 32 MiB each, must fit at once",
            ),
        )?;
        let column_cache_bytes =
            bytes_setting(args.column_cache_bytes, &env, "CODA_COLUMN_CACHE_BYTES")?
                .unwrap_or(DEFAULT_COLUMN_CACHE_BYTES);
        let log_queue_bytes = bytes_setting(args.log_queue_bytes, &env, "CODA_LOG_QUEUE_BYTES")?
            .unwrap_or(DEFAULT_LOG_QUEUE_BYTES);
        at_least(
            "--log-queue-bytes",
            log_queue_bytes,
            MIN_LOG_QUEUE_BYTES,
            None,
        )?;
        at_least(
            "--max-pending-requests",
            max_pending_requests,
            1,
            Some("0 would never read a request"),
        )?;
        if let Some(n) = args.call_timeout_secs
            && !(1..=MAX_CALL_TIMEOUT_SECS).contains(&n)
        {
            return Err(ConfigError::InvalidValue {
                name: "--call-timeout-secs",
                value: n.to_string(),
                reason: format!("must be between 1 and {MAX_CALL_TIMEOUT_SECS}"),
            });
        }
        if max_pending_requests > MAX_MAX_PENDING_REQUESTS {
            return Err(ConfigError::InvalidValue {
                name: "--max-pending-requests",
                value: max_pending_requests.to_string(),
                reason: format!("must be at most {MAX_MAX_PENDING_REQUESTS}"),
            });
        }
        if let Some(n) = args.poll_interval_ms {
            at_least(
                "--poll-interval-ms",
                n,
                MIN_POLL_INTERVAL_MS,
                Some("0 would poll Coda in a tight loop"),
            )?;
            if n > MAX_POLL_INTERVAL_MS {
                return Err(ConfigError::InvalidValue {
                    name: "--poll-interval-ms",
                    value: n.to_string(),
                    reason: format!(
                        "must be at most {MAX_POLL_INTERVAL_MS} (polls grow to 8 s apart; a first wait past the call deadline never polls)"
                    ),
                });
            }
        }
        if let Some(n) = args.retry_base_ms {
            at_least(
                "--retry-base-ms",
                n,
                MIN_RETRY_BASE_MS,
                Some("0 would retry a rate-limiting Coda in a tight loop"),
            )?;
        }
        if let Some(n) = args.row_chunk_bytes {
            at_least("--row-chunk-bytes", n, 1024, None)?;
            if n > MAX_ROW_CHUNK_BYTES {
                return Err(ConfigError::InvalidValue {
                    name: "--row-chunk-bytes",
                    value: n.to_string(),
                    reason: format!(
                        "must be at most {MAX_ROW_CHUNK_BYTES} (Coda refuses a request body over 2 MB, and applies none of its rows)"
                    ),
                });
            }
        }
        Ok(Self {
            token: ApiToken::new(token),
            api_base_url,
            read_only,
            toolsets,
            check_token: !args.skip_token_check,
            call_deadline,
            retry_base: args
                .retry_base_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_RETRY_BASE),
            retry_max: DEFAULT_RETRY_MAX,
            poll_interval: args
                .poll_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_POLL_INTERVAL),
            not_found_grace: DEFAULT_NOT_FOUND_GRACE,
            row_chunk_bytes: args.row_chunk_bytes.unwrap_or(DEFAULT_ROW_CHUNK_BYTES),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rate_limit: !args.no_rate_limit,
            coda_enhanced_only,
            docs,
            max_result_bytes,
            full_text: args.full_text || env("CODA_FULL_TEXT").is_some_and(|v| truthy(&v)),
            token_check_deadline: DEFAULT_TOKEN_CHECK_DEADLINE.min(
                args.call_timeout_secs
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_CALL_DEADLINE),
            ),
            max_line_bytes,
            max_pending_requests,
            stdout_grace,
            shutdown_wait,
            max_empty_pages,
            max_answer_values,
            max_read_bytes,
            log_queue_bytes,
            column_cache_bytes,
        })
    }

    /// A configuration for in-process use (tests, benches) with defaults.
    pub fn for_base_url(token: &str, base: &str) -> Result<Self, ConfigError> {
        let args = CodaArgs {
            api_base_url: Some(base.to_owned()),
            ..CodaArgs::default()
        };
        let token = token.to_owned();
        Self::from_args(&args, move |k| {
            (k == "CODA_API_TOKEN").then(|| token.clone())
        })
    }
}

fn parse_base_url(raw: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidBaseUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url =
        reqwest::Url::parse(raw.trim_end_matches('/')).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.query().is_some() {
        return Err(invalid("must be a plain base URL without a query"));
    }
    if url.scheme() == "http" && !on_this_machine(&url) {
        return Err(invalid(
            "plain http is only for a Coda on this machine (localhost, 127.0.0.0/8, [::1]): every request carries the API token, which would cross the network in clear text; use https",
        ));
    }
    Ok(url)
}

/// Whether `url` names a loopback host: the only place an `http://` base
/// URL may point (a local fake, a local forwarding proxy).
fn on_this_machine(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_variable_that_is_not_utf8_is_refused_not_taken_as_unset() {
        use std::os::unix::ffi::OsStringExt;
        for name in ["CODA_DOCS", "CODA_READ_ONLY", "CODA_API_TOKEN"] {
            let env = |k: &str| match k {
                _ if k == name => Some(std::ffi::OsString::from_vec(b"x\xff".to_vec())),
                "CODA_API_TOKEN" | "CODA_API_KEY" => Some("tok".into()),
                _ => None,
            };
            let err = CodaConfig::from_args_os(&CodaArgs::default(), env).unwrap_err();
            assert_eq!(err, ConfigError::NotUnicode(name.into()));
            // Not the value: it may be the token.
            assert!(!err.to_string().contains('\u{fffd}'), "{err}");
        }
        let ok = CodaConfig::from_args_os(&CodaArgs::default(), |k| {
            (k == "CODA_API_TOKEN").then(|| "tok".into())
        })
        .unwrap();
        assert_eq!(ok.token.expose(), "tok");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn missing_token_is_a_config_error() {
        let err = CodaConfig::from_args(&CodaArgs::default(), env_of(&[])).unwrap_err();
        assert_eq!(err, ConfigError::MissingToken);
    }

    #[test]
    fn api_key_is_accepted_as_the_legacy_token_variable() {
        let cfg =
            CodaConfig::from_args(&CodaArgs::default(), env_of(&[("API_KEY", "k1")])).unwrap();
        assert_eq!(cfg.token.expose(), "k1");
        assert_eq!(cfg.api_base_url.as_str(), DEFAULT_API_BASE_URL);
    }

    #[test]
    fn coda_api_key_is_read_too() {
        let cfg =
            CodaConfig::from_args(&CodaArgs::default(), env_of(&[("CODA_API_KEY", "k2")])).unwrap();
        assert_eq!(cfg.token.expose(), "k2");
    }

    #[test]
    fn docs_allow_list_takes_ids_and_urls() {
        let args = CodaArgs {
            docs: Some("AbC, https://coda.io/d/Plan_dXyZ/Page_su1".into()),
            ..Default::default()
        };
        let cfg = CodaConfig::from_args(&args, env_of(&[("CODA_API_TOKEN", "t")])).unwrap();
        assert_eq!(cfg.docs, Some(vec!["AbC".to_owned(), "XyZ".to_owned()]));
    }

    #[test]
    fn coda_enhanced_preset_is_a_toolset_name() {
        let args = CodaArgs {
            toolsets: Some("coda-enhanced".into()),
            ..Default::default()
        };
        let cfg = CodaConfig::from_args(&args, env_of(&[("CODA_API_TOKEN", "t")])).unwrap();
        assert!(cfg.coda_enhanced_only);
        assert!(cfg.call_deadline < Duration::from_secs(60));
    }

    #[test]
    fn coda_api_token_wins_over_api_key() {
        let env = env_of(&[("API_KEY", "old"), ("CODA_API_TOKEN", "new")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), env).unwrap();
        assert_eq!(cfg.token.expose(), "new");
    }

    #[test]
    fn flag_base_url_wins_over_env_and_trailing_slash_is_dropped() {
        let args = CodaArgs {
            api_base_url: Some("http://127.0.0.1:9/apis/v1/".into()),
            ..Default::default()
        };
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_API_BASE_URL", "http://x")]);
        let cfg = CodaConfig::from_args(&args, env).unwrap();
        assert_eq!(cfg.api_base_url.as_str(), "http://127.0.0.1:9/apis/v1");
    }

    #[test]
    fn read_only_comes_from_env_too() {
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_READ_ONLY", "true")]);
        assert!(
            CodaConfig::from_args(&CodaArgs::default(), env)
                .unwrap()
                .read_only
        );
    }

    #[test]
    fn unknown_toolset_is_rejected_by_name() {
        let args = CodaArgs {
            toolsets: Some("rows,nope".into()),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&args, env_of(&[("CODA_API_TOKEN", "t")])).unwrap_err();
        assert_eq!(err, ConfigError::UnknownToolset("nope".into()));
    }

    #[test]
    fn bad_base_url_is_rejected() {
        let args = CodaArgs {
            api_base_url: Some("ftp://x".into()),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&args, env_of(&[("CODA_API_TOKEN", "t")])).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidBaseUrl { .. }));
    }

    /// Regression: `http://` was accepted for any host, so a base URL
    /// such as `http://coda.io/apis/v1` (one letter short) sent the API
    /// token in clear text across the network with the first request,
    /// before Coda's redirect to https could say anything.
    #[test]
    fn plain_http_is_refused_off_this_machine() {
        let base = |url: &str| {
            let args = CodaArgs {
                api_base_url: Some(url.into()),
                ..Default::default()
            };
            CodaConfig::from_args(&args, env_of(&[("CODA_API_TOKEN", "t")]))
        };
        for bad in [
            "http://coda.io/apis/v1",
            "http://10.0.0.5:8080/apis/v1",
            "http://coda-proxy/apis/v1",
            "http://127.0.0.1.nip.io/apis/v1",
        ] {
            let err = base(bad).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidBaseUrl { reason, .. } if reason.contains("https")),
                "{bad}: {err:?}"
            );
        }
        for good in [
            "https://coda.io/apis/v1",
            "http://127.0.0.1:9/apis/v1",
            "http://127.8.0.1/apis/v1",
            "http://localhost:8080/apis/v1",
            "http://[::1]:8080/apis/v1",
        ] {
            base(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn max_line_bytes_comes_from_the_flag_then_the_env_and_has_a_floor() {
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_LINE_BYTES", "4096")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &env).unwrap();
        assert_eq!(cfg.max_line_bytes, 4096);
        let args = CodaArgs {
            max_line_bytes: Some(2048),
            ..Default::default()
        };
        assert_eq!(
            CodaConfig::from_args(&args, &env).unwrap().max_line_bytes,
            2048
        );
        let cfg = CodaConfig::from_args(&CodaArgs::default(), env_of(&[("CODA_API_TOKEN", "t")]));
        assert_eq!(cfg.unwrap().max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        let args = CodaArgs {
            max_line_bytes: Some(10),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&args, &env).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "--max-line-bytes",
                    ..
                }
            ),
            "{err:?}"
        );
        let bad = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_LINE_BYTES", "lots")]);
        let err = CodaConfig::from_args(&CodaArgs::default(), bad).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "CODA_MAX_LINE_BYTES",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn max_pending_requests_comes_from_the_flag_then_the_env_and_is_at_least_one() {
        let token = env_of(&[("CODA_API_TOKEN", "t")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.max_pending_requests, DEFAULT_MAX_PENDING_REQUESTS);
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_PENDING_REQUESTS", "8")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &env).unwrap();
        assert_eq!(cfg.max_pending_requests, 8);
        let args = CodaArgs {
            max_pending_requests: Some(3),
            ..Default::default()
        };
        assert_eq!(
            CodaConfig::from_args(&args, &env)
                .unwrap()
                .max_pending_requests,
            3
        );
        let zero = CodaArgs {
            max_pending_requests: Some(0),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&zero, &token).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "--max-pending-requests",
                    ..
                }
            ),
            "{err:?}"
        );
        let grace = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_STDOUT_GRACE_SECS", "1")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &grace).unwrap();
        assert_eq!(cfg.stdout_grace, Duration::from_secs(1));
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.stdout_grace, DEFAULT_STDOUT_GRACE);
        let empty = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_EMPTY_PAGES", "7")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &empty).unwrap();
        assert_eq!(cfg.max_empty_pages, 7);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.max_empty_pages, DEFAULT_MAX_EMPTY_PAGES);
        assert_eq!(cfg.max_answer_values, DEFAULT_MAX_ANSWER_VALUES);
        let values = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_ANSWER_VALUES", "5000")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &values).unwrap();
        assert_eq!(cfg.max_answer_values, 5000);
        let few = CodaArgs {
            max_answer_values: Some(10),
            ..Default::default()
        };
        assert!(CodaConfig::from_args(&few, &token).is_err());
        let none = CodaArgs {
            max_empty_pages: Some(0),
            ..Default::default()
        };
        assert!(CodaConfig::from_args(&none, &token).is_err());
        let bad = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_STDOUT_GRACE_SECS", "soon")]);
        assert!(CodaConfig::from_args(&CodaArgs::default(), bad).is_err());
        let bad = env_of(&[
            ("CODA_API_TOKEN", "t"),
            ("CODA_MAX_PENDING_REQUESTS", "many"),
        ]);
        let err = CodaConfig::from_args(&CodaArgs::default(), bad).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "CODA_MAX_PENDING_REQUESTS",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn log_queue_bytes_comes_from_the_flag_then_the_env() {
        let token = env_of(&[("CODA_API_TOKEN", "t")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.log_queue_bytes, DEFAULT_LOG_QUEUE_BYTES);
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_LOG_QUEUE_BYTES", "100000")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &env).unwrap();
        assert_eq!(cfg.log_queue_bytes, 100_000);
        let small = CodaArgs {
            log_queue_bytes: Some(MIN_LOG_QUEUE_BYTES - 1),
            ..Default::default()
        };
        assert!(CodaConfig::from_args(&small, &env).is_err());
        let bad = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_LOG_QUEUE_BYTES", "8MiB")]);
        assert!(CodaConfig::from_args(&CodaArgs::default(), bad).is_err());
    }

    #[test]
    fn shutdown_wait_comes_from_the_flag_then_the_env_else_the_call_timeout() {
        let token = env_of(&[("CODA_API_TOKEN", "t")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.shutdown_wait, DEFAULT_CALL_DEADLINE + WRITE_END_MARGIN);
        let short = CodaArgs {
            call_timeout_secs: Some(3),
            ..Default::default()
        };
        let cfg = CodaConfig::from_args(&short, &token).unwrap();
        assert_eq!(cfg.shutdown_wait, Duration::from_secs(8));
        let env = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_SHUTDOWN_WAIT_SECS", " 0 ")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &env).unwrap();
        assert_eq!(cfg.shutdown_wait, Duration::ZERO);
        let flag = CodaArgs {
            shutdown_wait_secs: Some(7),
            ..Default::default()
        };
        let cfg = CodaConfig::from_args(&flag, &env).unwrap();
        assert_eq!(cfg.shutdown_wait, Duration::from_secs(7));
        let long = CodaArgs {
            shutdown_wait_secs: Some(MAX_SHUTDOWN_WAIT_SECS + 1),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&long, &token).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "--shutdown-wait-secs",
                    ..
                }
            ),
            "{err:?}"
        );
        let bad = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_SHUTDOWN_WAIT_SECS", "soon")]);
        let err = CodaConfig::from_args(&CodaArgs::default(), bad).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "CODA_SHUTDOWN_WAIT_SECS",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn max_read_bytes_comes_from_the_flag_then_the_env_and_fits_the_largest_export() {
        let token = env_of(&[("CODA_API_TOKEN", "t")]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &token).unwrap();
        assert_eq!(cfg.max_read_bytes, DEFAULT_MAX_READ_BYTES);
        let env = env_of(&[
            ("CODA_API_TOKEN", "t"),
            ("CODA_MAX_READ_BYTES", " 100000000 "),
        ]);
        let cfg = CodaConfig::from_args(&CodaArgs::default(), &env).unwrap();
        assert_eq!(cfg.max_read_bytes, 100_000_000);
        let args = CodaArgs {
            max_read_bytes: Some(MIN_MAX_READ_BYTES),
            ..Default::default()
        };
        assert_eq!(
            CodaConfig::from_args(&args, &env).unwrap().max_read_bytes,
            MIN_MAX_READ_BYTES
        );
        // Below the floor, from the flag or the env: named, with why.
        let small = CodaArgs {
            max_read_bytes: Some(MIN_MAX_READ_BYTES - 1),
            ..Default::default()
        };
        let err = CodaConfig::from_args(&small, &token).unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::InvalidValue {
                    name: "--max-read-bytes",
                    reason,
                    ..
                } if reason.contains("inflated text")
            ),
            "{err:?}"
        );
        let small = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_READ_BYTES", "1024")]);
        assert!(CodaConfig::from_args(&CodaArgs::default(), small).is_err());
        let bad = env_of(&[("CODA_API_TOKEN", "t"), ("CODA_MAX_READ_BYTES", "256MiB")]);
        let err = CodaConfig::from_args(&CodaArgs::default(), bad).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    name: "CODA_MAX_READ_BYTES",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        let cfg = CodaConfig::for_base_url("secret-token", "http://127.0.0.1:1").unwrap();
        assert!(!format!("{cfg:?}").contains("secret-token"));
    }

    #[test]
    fn toolset_lists_parse_with_all_and_default() {
        assert_eq!(Toolset::parse_list("all").unwrap().len(), 11);
        let d = Toolset::parse_list("default").unwrap();
        assert!(!d.contains(&Toolset::Admin));
        assert_eq!(
            Toolset::parse_list("rows, pages").unwrap(),
            vec![Toolset::Rows, Toolset::Pages]
        );
    }
}
