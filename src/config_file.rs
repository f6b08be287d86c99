//! Named servers: `--config FILE` (TOML) and `--server NAME=COMMAND`.
//!
//! Owns: reading and validating the file, turning each `[[server]]` into
//! the same [`Config`] a single-server command line produces (so every
//! limit is validated by one piece of code), and the rules that only exist
//! with several servers: unique names, per-user secrets only on children
//! that serve one user. Does not own: serving them (see
//! [`crate::servers`]) or the secrets themselves (see [`crate::store`]).
//!
//! Precedence: a flag or `MCP_PROXY_*` variable wins over the file's
//! global sections; a server's own settings win over both.
//!
//! ```toml
//! [listen]
//! host = "127.0.0.1"
//! port = 8080
//! [auth]
//! api_key_file = "/run/secrets/keys"
//! [limits]
//! max_sessions = 64
//! [store]
//! path = "/var/lib/mcp-proxy/secrets.db"   # or url = "postgres://…"
//! [[server]]
//! name = "coda"
//! command = ["coda-mcp", "--read-only"]
//! mode = "per-session"
//! env = { CODA_LOG = "info", CODA_API_TOKEN = { secret = "coda" } }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Args, Config, ConfigError, Mode, parse_duration};
use crate::store::DEFAULT_STORE_TIMEOUT;

/// Longest server name: it is a URL path segment and a store key part.
pub const MAX_SERVER_NAME: usize = 64;
/// Most servers one proxy serves: each may hold sessions and children.
pub const MAX_SERVERS: usize = 256;

/// One named server, ready to serve.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Its name: the URL segment in `/servers/<name>/mcp` and the store's server.
    pub name: String,
    /// The same configuration a single-server command line builds, with
    /// this server's command, mode, limits and paths.
    pub config: Config,
    /// Environment variables filled from the store at spawn, as
    /// (variable, secret name); their values are per principal.
    pub secrets: Vec<(String, String)>,
    /// Environment variables taken from a request header of the session's
    /// `initialize` (or legacy `GET /sse`), as (variable, lower-case header
    /// name): token passthrough, off unless configured (see README).
    pub header_env: Vec<(String, String)>,
}

/// Where the credential store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// A file path or a `postgres://` URL.
    pub location: String,
    /// Key file, else `MCP_PROXY_STORE_KEY`.
    pub key_file: Option<String>,
    /// Deadline of each store call.
    pub timeout: Duration,
}

/// Every server and the global settings.
#[derive(Debug, Clone)]
pub struct ServersConfig {
    /// Global settings (listener, auth, logging, default limits); its
    /// `child` is unused.
    pub base: Config,
    /// The servers, in file order then `--server` order.
    pub servers: Vec<ServerSpec>,
    /// The credential store, when any server uses secrets or one is set.
    pub store: Option<StoreSettings>,
    /// How often the `--config` file is checked for a change (which then
    /// reloads as SIGHUP does); `None` without a file or with 0.
    pub config_poll: Option<Duration>,
    /// Digest of the `--config` file's bytes this configuration was built
    /// from and of the files they name ([`watch_digest`]): the poll
    /// compares against it, so an edit made between start-up and the
    /// poll's first read is still seen.
    pub file_digest: Option<u64>,
}

/// A digest of a config file's bytes, to tell an edited file from the one
/// already applied (not a security boundary: the file is trusted input).
pub fn file_digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The files a configuration read from `bytes` (the `--config` file's
/// content) reads besides that file: the API key file and JWT secret file
/// (a flag or `MCP_PROXY_*` variable, else the file's `[auth]`) and every
/// server's `env_file`. A file that is not valid TOML names only those
/// the flags and variables do. Sorted, each once.
pub fn named_files(
    args: &Args,
    lookup: &dyn Fn(&str) -> Option<String>,
    bytes: &[u8],
) -> Vec<std::path::PathBuf> {
    let file: Option<FileRaw> = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| toml::from_str(t).ok());
    let given =
        |v: &Option<String>, var: &str| v.clone().or_else(|| lookup(&format!("MCP_PROXY_{var}")));
    let global_env = given(&args.env_file, "ENV_FILE");
    let mut out: Vec<String> = Vec::new();
    out.extend(
        given(&args.api_key_file, "API_KEY_FILE")
            .or_else(|| file.as_ref()?.auth.api_key_file.clone()),
    );
    out.extend(given(&args.jwt_secret_file, "JWT_SECRET_FILE"));
    out.extend(global_env.clone());
    for s in file.iter().flat_map(|f| &f.server) {
        out.extend(s.env_file.clone().or_else(|| global_env.clone()));
    }
    let mut out: Vec<std::path::PathBuf> = out.into_iter().map(Into::into).collect();
    out.sort();
    out.dedup();
    out
}

/// What the config poll compares: the `--config` file's `bytes` and the
/// content of every file it names ([`named_files`], each read up to
/// [`MAX_CONFIG_FILE_BYTES`]; a file that cannot be read counts by its
/// error). So a key removed from the key file, or an `env_file` that was
/// missing when a reload was refused and is there now, reloads as an
/// edit of the file does.
pub fn watch_digest(args: &Args, lookup: &dyn Fn(&str) -> Option<String>, bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    for path in named_files(args, lookup, bytes) {
        path.hash(&mut h);
        match read_config_file(&path) {
            Ok(content) => (0u8, content).hash(&mut h),
            Err(e) => (1u8, e.to_string()).hash(&mut h),
        }
    }
    h.finish()
}

/// Default of `--config-poll`: a changed file applies within about this
/// long, and a check costs one read of a small file.
pub const DEFAULT_CONFIG_POLL: Duration = Duration::from_secs(2);

/// Largest `--config` file read: a config is a few kilobytes, and a file
/// that grew without bound (a log written to the wrong path) must not be
/// read into memory every poll.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a `--config` file, refusing one over [`MAX_CONFIG_FILE_BYTES`]
/// and anything but a regular file: a named pipe put in its place would
/// hold the start, a SIGHUP reload or the poll until a writer came.
pub fn read_config_file(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::config::read_regular_file(path, MAX_CONFIG_FILE_BYTES)
}

/// Longest error message about the file's content: the parser quotes the
/// offending line, which in a broken file can be the whole file.
const MAX_PARSE_ERROR_CHARS: usize = 400;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    #[serde(default)]
    listen: ListenRaw,
    #[serde(default)]
    auth: AuthRaw,
    #[serde(default)]
    limits: LimitsRaw,
    #[serde(default)]
    log: LogRaw,
    store: Option<StoreRaw>,
    #[serde(default)]
    server: Vec<ServerRaw>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListenRaw {
    host: Option<String>,
    port: Option<u16>,
    path_prefix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthRaw {
    #[serde(default)]
    api_keys: Vec<String>,
    api_key_file: Option<String>,
    allow_unauthenticated: Option<bool>,
    #[serde(default)]
    allow_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogRaw {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreRaw {
    path: Option<String>,
    url: Option<String>,
    key_file: Option<String>,
    timeout: Option<String>,
}

/// A number or a string with a unit (`"16M"`, `"30s"`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct LimitsRaw {
    max_body_bytes: Option<Scalar>,
    max_line_bytes: Option<Scalar>,
    max_sessions: Option<Scalar>,
    session_idle_timeout: Option<Scalar>,
    request_timeout: Option<Scalar>,
    keep_alive: Option<Scalar>,
    shutdown_grace: Option<Scalar>,
    max_queue: Option<Scalar>,
    replay_events: Option<Scalar>,
    replay_bytes: Option<Scalar>,
    replay_streams: Option<Scalar>,
    replay_tombstones: Option<Scalar>,
    replay_tombstone_bytes: Option<Scalar>,
    max_tasks: Option<Scalar>,
    restart_max_backoff: Option<Scalar>,
    probe_timeout: Option<Scalar>,
}

/// A command as a list (`["coda-mcp", "--read-only"]`) or one word.
#[derive(Deserialize)]
#[serde(untagged)]
enum CommandRaw {
    List(Vec<String>),
    One(String),
}

/// An environment value: text (numbers and booleans are written as text)
/// or `{ secret = "name" }`, filled per principal from the store.
#[derive(Deserialize)]
#[serde(untagged)]
enum EnvRaw {
    Secret(SecretRaw),
    Text(String),
    Int(i64),
    Bool(bool),
}

/// `{ secret = "name" }`, and nothing else in it: a misspelt or imagined
/// option beside `secret` is an error, as unknown keys are everywhere.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRaw {
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerRaw {
    name: String,
    command: CommandRaw,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, EnvRaw>,
    env_file: Option<String>,
    cwd: Option<String>,
    inherit_env: Option<bool>,
    mode: Option<String>,
    upstream_protocol: Option<String>,
    child_stdout: Option<String>,
    exit_on_child_exit: Option<bool>,
    #[serde(default)]
    credential_headers: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsRaw,
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Which settings a section of the file fills in `args`.
enum Fill<'a> {
    /// The global `[limits]`: only those no flag and no `MCP_PROXY_*`
    /// variable (read through the lookup) set; the README's precedence.
    Unset(&'a dyn Fn(&str) -> Option<String>),
    /// A server's own `[server.limits]`: all it names.
    Always,
}

/// Fills `args` from the file's limits, as `fill` says.
fn apply_limits(args: &mut Args, l: &LimitsRaw, fill: Fill) {
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = &l.$field {
                let free = match &fill {
                    Fill::Always => true,
                    Fill::Unset(lookup) => {
                        args.$field.is_none()
                            && lookup(&format!(
                                "MCP_PROXY_{}",
                                stringify!($field).to_ascii_uppercase()
                            ))
                            .is_none()
                    }
                };
                if free {
                    args.$field = Some(v.text());
                }
            }
        )*};
    }
    set!(
        max_body_bytes,
        max_line_bytes,
        max_sessions,
        session_idle_timeout,
        request_timeout,
        keep_alive,
        shutdown_grace,
        max_queue,
        replay_events,
        replay_bytes,
        replay_streams,
        replay_tombstones,
        replay_tombstone_bytes,
        max_tasks,
        restart_max_backoff,
        probe_timeout
    );
}

fn check_server_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        err(format!(
            "server name {name:?}: expected 1 to {MAX_SERVER_NAME} of A-Z a-z 0-9 - _ . (it becomes a URL path segment)"
        ))
    }
}

fn check_env_name(server: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return err(format!(
            "server {server:?}: invalid environment variable name {name:?}"
        ));
    }
    // As for `--env` and `env_file`: such a variable is most likely meant
    // for the proxy, and would reach only the child.
    if name.starts_with("MCP_PROXY_") {
        return err(format!(
            "server {server:?}: {name} is the proxy's own setting and is never passed to the MCP server"
        ));
    }
    Ok(())
}

/// Variables that decide what code a child runs: the dynamic loader's
/// (`LD_*`, `DYLD_*`), where programs are found, the shell's start-up and
/// imported functions, and the options of common interpreters. Only the
/// operator's own values may set them, never a per-user one (a stored
/// secret or a request header), which would let a user pick a library or
/// a script for the child to run. Not every such variable of every
/// program: the ones that are so in any child.
const CODE_VARIABLE_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_"];
const CODE_VARIABLES: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "NODE_OPTIONS",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PERL5OPT",
    "RUBYOPT",
];

/// [`check_env_name`], and for a variable that takes a per-user value,
/// not one of [`CODE_VARIABLES`].
fn check_per_user_env_name(server: &str, name: &str) -> Result<(), ConfigError> {
    check_env_name(server, name)?;
    if CODE_VARIABLES.contains(&name) || CODE_VARIABLE_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return err(format!(
            "server {server:?}: {name} decides what code the child runs, so it cannot take a per-user value (a secret or a credential header); set it in env as plain text"
        ));
    }
    Ok(())
}

fn parse_mode(server: &str, mode: Option<&str>) -> Result<Mode, ConfigError> {
    match mode.unwrap_or("per-session") {
        "per-session" => Ok(Mode::PerSession),
        "shared" => Ok(Mode::Shared),
        "stateless" => Ok(Mode::Stateless),
        other => err(format!(
            "server {server:?}: mode must be per-session, shared or stateless, got {other:?}"
        )),
    }
}

/// Loads the servers from `args.config` (a TOML file) and `args.server`
/// (`NAME=COMMAND` flags), with flags and `lookup` for everything global.
pub fn load(
    args: Args,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ServersConfig, ConfigError> {
    if !args.command.is_empty() {
        return err(
            "a command after -- cannot be combined with --config or --server; add it as a [[server]] or --server NAME=COMMAND",
        );
    }
    let bytes = match &args.config {
        None => None,
        Some(path) => Some(
            read_config_file(Path::new(path))
                .map_err(|e| ConfigError(format!("--config: cannot read {path}: {e}")))?,
        ),
    };
    load_parts(args, lookup, bytes)
}

/// [`load`] with `bytes` as the `--config` file's content, read by the
/// caller: the config poll parses exactly the bytes it compared, never a
/// second read that a writer may have caught half-way.
pub fn load_bytes(
    args: Args,
    lookup: &dyn Fn(&str) -> Option<String>,
    bytes: Vec<u8>,
) -> Result<ServersConfig, ConfigError> {
    load_parts(args, lookup, Some(bytes))
}

fn load_parts(
    args: Args,
    lookup: &dyn Fn(&str) -> Option<String>,
    bytes: Option<Vec<u8>>,
) -> Result<ServersConfig, ConfigError> {
    if !args.command.is_empty() {
        return err(
            "a command after -- cannot be combined with --config or --server; add it as a [[server]] or --server NAME=COMMAND",
        );
    }
    let (file, digest) = match (&args.config, bytes) {
        (Some(path), Some(bytes)) => {
            let digest = watch_digest(&args, lookup, &bytes);
            let text = String::from_utf8(bytes)
                .map_err(|e| ConfigError(format!("--config: cannot read {path}: {e}")))?;
            (parse_file(Path::new(path), &text)?, Some(digest))
        }
        _ => (FileRaw::default(), None),
    };
    let mut config = from_parts(args, file, lookup)?;
    config.file_digest = digest;
    Ok(config)
}

fn parse_file(path: &Path, text: &str) -> Result<FileRaw, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // Where and why, never what is there: toml's own rendering quotes
        // the whole line, and its message a misplaced string, and either
        // may be an API key or a server's `env` secret. This reaches
        // stderr at start and the log at a reload. Keys are named in
        // backticks, which stay.
        let msg = without_strings(e.message()).replace('\n', " ");
        let mut msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((cut, _)) = msg.char_indices().nth(MAX_PARSE_ERROR_CHARS) {
            msg.truncate(cut);
            msg.push_str(" …");
        }
        match e.span() {
            Some(span) => {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let prefix = String::from_utf8_lossy(&before[line_start..]);
                let column = prefix.chars().count() + 1;
                let near = match key_before(&prefix) {
                    Some(key) => format!(" (after `{key}`)"),
                    None => String::new(),
                };
                ConfigError(format!(
                    "{}: TOML error at line {line}, column {column}{near}: {msg}",
                    path.display()
                ))
            }
            None => ConfigError(format!("{}: TOML error: {msg}", path.display())),
        }
    })
}

/// The bare key of the last `key =` in `line` (the text of a line up to
/// an error), outside strings: a name, which says where the error is
/// without showing a value. `None` when there is none, or it is quoted.
fn key_before(line: &str) -> Option<&str> {
    let mut quote = None;
    let mut escaped = false;
    let mut last_eq = None;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '=' => last_eq = Some(i),
            None => {}
        }
    }
    let head = line[..last_eq?].trim_end();
    // After the last character a bare key cannot hold (which may take
    // more than one byte: `ключ =`).
    let start = head
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    Some(&head[start..]).filter(|k| !k.is_empty())
}

/// `message` with the text of every double-quoted string in it replaced
/// by `…` (serde quotes a misplaced string value as `string "…"`).
fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                out.push('"');
            }
            (c, false) => out.push(c),
            (_, true) => {}
        }
    }
    out
}

fn from_parts(
    mut args: Args,
    file: FileRaw,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ServersConfig, ConfigError> {
    // Global sections fill what flags and the environment left unset.
    let unset = |slot: &Option<String>, flag: &str| {
        slot.is_none() && lookup(&format!("MCP_PROXY_{flag}")).is_none()
    };
    if let Some(h) = &file.listen.host
        && unset(&args.host, "HOST")
    {
        args.host = Some(h.clone());
    }
    if let Some(p) = file.listen.port
        && unset(&args.port, "PORT")
    {
        args.port = Some(p.to_string());
    }
    if let Some(prefix) = &file.listen.path_prefix
        && prefix != "/servers"
    {
        return err(format!(
            "listen.path_prefix: only \"/servers\" is supported, got {prefix:?}"
        ));
    }
    // Lists too: a key given in MCP_PROXY_API_KEY replaces the file's
    // keys, as a flag does, rather than being ignored beside them.
    if args.api_key.is_empty() && lookup("MCP_PROXY_API_KEY").is_none() {
        args.api_key = file.auth.api_keys.clone();
    }
    if let Some(f) = &file.auth.api_key_file
        && unset(&args.api_key_file, "API_KEY_FILE")
    {
        args.api_key_file = Some(f.clone());
    }
    if file.auth.allow_unauthenticated == Some(true)
        && lookup("MCP_PROXY_ALLOW_UNAUTHENTICATED").is_none()
    {
        args.allow_unauthenticated = true;
    }
    if args.allow_origin.is_empty() && lookup("MCP_PROXY_ALLOW_ORIGIN").is_none() {
        args.allow_origin = file.auth.allow_origins.clone();
    }
    if args.allowed_host.is_empty() && lookup("MCP_PROXY_ALLOWED_HOST").is_none() {
        args.allowed_host = file.auth.allowed_hosts.clone();
    }
    if let Some(f) = &file.log.format
        && unset(&args.log_format, "LOG_FORMAT")
    {
        args.log_format = Some(f.clone());
    }
    if let Some(l) = &file.log.level
        && unset(&args.log_level, "LOG_LEVEL")
    {
        args.log_level = Some(l.clone());
    }
    apply_limits(&mut args, &file.limits, Fill::Unset(lookup));
    // Named mode: from_args accepts the empty command (config.rs).
    if args.config.is_none() && args.server.is_empty() {
        args.server.push(String::new());
    }
    let base = Config::from_args(args.clone(), lookup)?;
    if base.exit_on_child_exit {
        return err(
            "--exit-on-child-exit applies to a single server; with several, one that exits must not stop the others",
        );
    }

    // Flags, then variables, then the file's `[store]`, however the
    // store's location was given.
    let key_file = args
        .store_key_file
        .clone()
        .or_else(|| lookup("MCP_PROXY_STORE_KEY_FILE"));
    let timeout = args
        .store_timeout
        .clone()
        .or_else(|| lookup("MCP_PROXY_STORE_TIMEOUT"));
    let store = match (&args.store, &file.store) {
        (Some(location), _) => Some(StoreSettings {
            location: location.clone(),
            key_file,
            timeout: store_timeout(timeout.as_deref())?,
        }),
        (None, _) if lookup("MCP_PROXY_STORE").is_some() => Some(StoreSettings {
            location: lookup("MCP_PROXY_STORE").unwrap_or_default(),
            key_file,
            timeout: store_timeout(timeout.as_deref())?,
        }),
        (None, Some(s)) => {
            let location = match (&s.path, &s.url) {
                (Some(p), None) => p.clone(),
                (None, Some(u)) => u.clone(),
                _ => {
                    return err(
                        "[store]: give exactly one of path (embedded file) or url (postgres://…)",
                    );
                }
            };
            Some(StoreSettings {
                location,
                key_file: key_file.or_else(|| s.key_file.clone()),
                timeout: store_timeout(timeout.as_deref().or(s.timeout.as_deref()))?,
            })
        }
        (None, None) => None,
    };
    if let Some(s) = &store {
        crate::store::check_location(&s.location).map_err(|e| ConfigError(e.to_string()))?;
    }
    if let Some(url) = file.store.as_ref().and_then(|s| s.url.as_ref())
        && store.as_ref().is_some_and(|s| &s.location == url)
        && !crate::store::is_postgres_url(url)
    {
        return err("[store] url: a file is given as path = \"…\"; url is for postgres://…");
    }

    let mut servers = Vec::new();
    for raw in file.server {
        servers.push(build_server(&args, raw, lookup)?);
    }
    for flag in args.server.iter().filter(|s| !s.is_empty()) {
        let Some((name, command)) = flag.split_once('=') else {
            return err(format!("--server: expected NAME=COMMAND, got {flag:?}"));
        };
        let words: Vec<String> = command.split_whitespace().map(String::from).collect();
        let raw = ServerRaw {
            name: name.trim().to_string(),
            command: CommandRaw::List(words),
            args: vec![],
            env: BTreeMap::new(),
            env_file: None,
            cwd: None,
            inherit_env: None,
            mode: None,
            upstream_protocol: None,
            child_stdout: None,
            exit_on_child_exit: None,
            credential_headers: BTreeMap::new(),
            limits: LimitsRaw::default(),
        };
        servers.push(build_server(&args, raw, lookup)?);
    }
    if servers.is_empty() {
        return err(
            "no servers configured: add [[server]] entries to the file or --server NAME=COMMAND",
        );
    }
    if servers.len() > MAX_SERVERS {
        return err(format!("at most {MAX_SERVERS} servers may be configured"));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &servers {
        if !seen.insert(s.name.as_str()) {
            return err(format!("server name {:?} is used twice", s.name));
        }
        if !s.secrets.is_empty()
            && let Some(k) = keys_named_by_position(&base.auth.api_keys).next()
        {
            return err(format!(
                "server {:?} takes per-user secrets, so every API key needs a name of its own (`name: key` lines in --api-key-file or [auth] api_key_file): {} is named by its position, and removing an earlier key would hand its stored credentials to the next one",
                s.name, k.name
            ));
        }
        if !s.secrets.is_empty() && store.is_none() {
            let vars: Vec<&str> = s.secrets.iter().map(|(v, _)| v.as_str()).collect();
            return err(format!(
                "server {:?} takes {} from the credential store, but no store is configured: add a [store] section or --store",
                s.name,
                vars.join(", ")
            ));
        }
    }
    let config_poll = match &args.config {
        None if args.config_poll.is_some() => {
            return err("--config-poll watches the --config file; give --config too");
        }
        None => None,
        Some(_) => config_poll(
            args.config_poll
                .clone()
                .or_else(|| lookup("MCP_PROXY_CONFIG_POLL"))
                .as_deref(),
        )?,
    };
    Ok(ServersConfig {
        base,
        servers,
        store,
        config_poll,
        file_digest: None,
    })
}

/// The keys named by their position (`key-N` at position N): a bare
/// `--api-key`, `[auth] api_keys` entry or key-file line. Such a name
/// belongs to whichever key is N-th, so it cannot own stored credentials.
/// (A key the operator named `key-N` and placed N-th looks the same and is
/// refused too; the message asks for a name, and any other does.)
fn keys_named_by_position(
    keys: &[crate::auth::keys::ApiKey],
) -> impl Iterator<Item = &crate::auth::keys::ApiKey> {
    keys.iter()
        .enumerate()
        .filter(|(i, k)| k.name == format!("key-{}", i + 1))
        .map(|(_, k)| k)
}

fn config_poll(v: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(Some(DEFAULT_CONFIG_POLL)),
        Some(v) => match parse_duration(v) {
            Some(d) if d.is_zero() => Ok(None),
            Some(d) if d >= Duration::from_millis(100) => Ok(Some(d)),
            _ => err(format!(
                "--config-poll: expected 0 (off) or a duration of at least 100ms such as 2s, got {v:?}"
            )),
        },
    }
}

fn store_timeout(v: Option<&str>) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(DEFAULT_STORE_TIMEOUT),
        Some(v) => match parse_duration(v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => err(format!(
                "store timeout: expected a duration such as 5s, got {v:?}"
            )),
        },
    }
}

fn build_server(
    global: &Args,
    raw: ServerRaw,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerSpec, ConfigError> {
    let name = raw.name;
    check_server_name(&name)?;
    let ctx = |e: ConfigError| ConfigError(format!("server {name:?}: {}", e.0));
    let mut command = match raw.command {
        CommandRaw::List(v) => v,
        CommandRaw::One(s) => vec![s],
    };
    command.extend(raw.args);
    if command.first().is_none_or(|p| p.trim().is_empty()) {
        return err(format!("server {name:?}: command is empty"));
    }
    let mode = parse_mode(&name, raw.mode.as_deref())?;
    let mut args = global.clone();
    args.config = None;
    args.server = vec![];
    args.command = command;
    args.env = vec![];
    args.env_file = raw.env_file.or(global.env_file.clone());
    if let Some(cwd) = raw.cwd {
        args.cwd = Some(cwd);
    }
    if let Some(inherit) = raw.inherit_env {
        args.no_inherit_env = !inherit;
    }
    if let Some(p) = raw.upstream_protocol {
        args.upstream_protocol = Some(p);
    }
    if let Some(k) = raw.child_stdout {
        args.child_stdout = Some(k);
    }
    args.exit_on_child_exit = raw.exit_on_child_exit.unwrap_or(false);
    if args.exit_on_child_exit {
        return err(format!(
            "server {name:?}: exit_on_child_exit applies to a single server only"
        ));
    }
    apply_limits(&mut args, &raw.limits, Fill::Always);
    // Mode comes from the file alone, never from MCP_PROXY_SHARED/STATELESS.
    args.shared = false;
    args.stateless = false;
    let mut config = Config::from_args(args, lookup).map_err(ctx)?;
    config.mode = mode;
    config.path = format!("/servers/{name}/mcp");
    config.sse_path = format!("/servers/{name}/sse");
    config.message_path = format!("/servers/{name}/messages");

    let mut secrets = Vec::new();
    for (var, value) in raw.env {
        check_env_name(&name, &var)?;
        let text = match value {
            EnvRaw::Secret(SecretRaw { secret }) => {
                check_per_user_env_name(&name, &var)?;
                // The store's own check: a name it refuses would fail
                // every spawn with a 503 that looks temporary.
                if let Err(e) = crate::store::check_secret_name(&secret) {
                    return err(format!("server {name:?}: {var}: {e}"));
                }
                secrets.push((var, secret));
                continue;
            }
            EnvRaw::Text(t) => t,
            EnvRaw::Int(n) => n.to_string(),
            EnvRaw::Bool(b) => b.to_string(),
        };
        if text.contains('\0') {
            return err(format!("server {name:?}: {var}: value contains a NUL byte"));
        }
        config.child.env.push((var, text));
    }
    let mut header_env = Vec::new();
    for (var, header) in raw.credential_headers {
        check_per_user_env_name(&name, &var)?;
        let header = header.trim().to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return err(format!(
                "server {name:?}: credential_headers.{var}: {header:?} is not a header name"
            ));
        }
        // The client's own credential for the proxy (or its session id)
        // must never reach a child: that is token passthrough.
        if config.auth.carries_client_credential(&header) || header == "mcp-session-id" {
            return err(format!(
                "server {name:?}: credential_headers.{var}: {header:?} carries the client's credential for the proxy, which must never reach a child (token passthrough); use a header of its own, such as X-Upstream-Token"
            ));
        }
        header_env.push((var, header));
    }
    if !header_env.is_empty() && mode != Mode::PerSession {
        return err(format!(
            "server {name:?}: credential_headers need mode = \"per-session\": one child would hold one caller's credential for all"
        ));
    }
    if !secrets.is_empty() && mode != Mode::PerSession {
        let vars: Vec<&str> = secrets.iter().map(|(v, _)| v.as_str()).collect();
        return err(format!(
            "server {name:?}: mode {} cannot use per-user secrets ({}): one child serves every user, so one user's credential would serve all; use mode = \"per-session\"",
            if mode == Mode::Shared {
                "shared"
            } else {
                "stateless"
            },
            vars.join(", ")
        ));
    }
    Ok(ServerSpec {
        name,
        config,
        secrets,
        header_env,
    })
}

/// The credential store's keys, read as the start reads them: a store
/// (`[store]`, `--store`, `MCP_PROXY_STORE`) without a usable key is bad
/// configuration, whether or not a server takes secrets yet, since the
/// start opens the store either way. `check-config` and the start both
/// ask here, so that they agree and both exit 64.
pub fn check_store_key(
    config: &ServersConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match &config.store {
        Some(store) => crate::store::load_keys(store.key_file.as_deref(), lookup)
            .map(drop)
            .map_err(ConfigError),
        None => Ok(()),
    }
}

/// `mcp-proxy check-config FILE`: validates without starting anything;
/// returns the exit code (0, or 64 with one line on stderr).
pub fn check_main(argv: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> i32 {
    use std::io::Write;
    // Never the print macros: they panic on a broken pipe
    // (`mcp-proxy check-config f 2>&1 | head -0`).
    let eprint = |line: &str| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let [file] = argv else {
        eprint("error: usage: mcp-proxy check-config FILE");
        return crate::store::cli::EX_USAGE;
    };
    let args = Args {
        config: Some(file.to_string()),
        ..Args::default()
    };
    let cfg = match load(args, lookup) {
        Ok(c) => c,
        Err(e) => {
            eprint(&format!("error: {e}"));
            return crate::store::cli::EX_USAGE;
        }
    };
    if let Err(e) = check_store_key(&cfg, lookup) {
        eprint(&format!("error: {e}"));
        return crate::store::cli::EX_USAGE;
    }
    let names: Vec<&str> = cfg.servers.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(
        std::io::stdout(),
        "{file}: ok, {} server(s): {}",
        cfg.servers.len(),
        names.join(", ")
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, flags: &[&str]) -> Result<ServersConfig, ConfigError> {
        use argh::FromArgs;
        let mut args = Args::from_args(&["mcp-proxy"], flags).map_err(|e| ConfigError(e.output))?;
        args.config = Some("test.toml".into());
        let file = parse_file(Path::new("test.toml"), text)?;
        from_parts(args, file, &|_| None)
    }

    /// Regression (fuzz `config`, first run on nightly): the key named in
    /// a TOML error was cut at a byte offset one past a character that can
    /// take more bytes, so a config file with `ключ = ...` and an error
    /// after it panicked at start (no exit 64, no message).
    #[test]
    fn a_toml_error_after_a_key_of_any_script_is_reported() {
        assert_eq!(key_before("ключ = 1"), None);
        assert_eq!(key_before("a.ключ_b = 1"), Some("_b"));
        assert_eq!(key_before("ѝname = "), Some("name"));
        let Err(e) = load_str(
            "[[server]]\nname = \"a\"\ncommand = [\"true\"]\nѝenv = 5\n",
            &[],
        ) else {
            panic!("an error");
        };
        assert!(e.0.contains("TOML error at line 4"), "{}", e.0);
    }

    /// Regression: a TOML error quoted the line it was found on, and the
    /// error goes to stderr at start and to the log at a reload: with the
    /// binary, `api_keys = ["alice: key-SECRET-0123456789abcdef", 5]` in
    /// `[auth]` printed `TOML parse error at line 2, column 51 | 2 |
    /// api_keys = ["alice: key-SECRET-0123456789abcdef", 5] | ^ invalid
    /// type: integer `5`, expected a string`, and so did a server's
    /// `env = { TOKEN = "tok-SECRET-123", … }` with any mistake on its
    /// line. The error names the line and column, never what it holds.
    #[test]
    fn a_toml_error_never_quotes_the_line_or_a_string_of_the_file() {
        let server = "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n";
        let cases = [
            (
                format!("[auth]\napi_keys = [\"alice: key-SECRET-0123456789abcdef\", 5]\n{server}"),
                "line 2",
            ),
            (
                format!("[auth]\napi_keys = \"alice: key-SECRET-0123456789abcdef\"\n{server}"),
                "line 2",
            ),
            (
                format!("{server}env = {{ TOKEN = \"tok-SECRET-123\", X = [1] }}\n"),
                "line 4",
            ),
            (
                format!("{server}env = {{ TOKEN = \"tok-SECRET-123\" }}, X = 1\n"),
                "line 4",
            ),
            (
                format!("{server}env = {{ TOKEN = \"tok-SECRET-123\", TOKEN = \"x\" }}\n"),
                "line 4",
            ),
        ];
        for (text, line) in cases {
            let e = load_str(&text, &[]).unwrap_err().0;
            assert!(!e.contains("SECRET"), "quoted: {e}");
            assert!(e.contains(line) && e.contains("column"), "{e}");
            assert!(e.starts_with("test.toml: "), "{e}");
        }
        // The key it is after is named: a name, never a value.
        let e = load_str(
            &format!("{server}env = {{ TOKEN = {{ secret = \"t\", extra = 1 }} }}\n"),
            &[],
        )
        .unwrap_err()
        .0;
        assert!(e.contains("line 4, column 17 (after `TOKEN`)"), "{e}");
    }

    #[test]
    fn the_config_poll_defaults_to_two_seconds_and_zero_turns_it_off() {
        let one = "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n";
        let poll = |flags: &[&str]| load_str(one, flags).map(|c| c.config_poll);
        assert_eq!(poll(&[]).unwrap(), Some(DEFAULT_CONFIG_POLL));
        assert_eq!(
            poll(&["--config-poll", "500ms"]).unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(poll(&["--config-poll", "0"]).unwrap(), None);
        for bad in ["50ms", "soon", "-1s"] {
            let e = poll(&["--config-poll", bad]).unwrap_err().to_string();
            assert!(e.contains("--config-poll"), "{bad}: {e}");
        }
        // From the environment when the flag is absent.
        let args = Args {
            config: Some("test.toml".into()),
            ..Args::default()
        };
        let file = parse_file(Path::new("test.toml"), one).unwrap();
        let env = |k: &str| (k == "MCP_PROXY_CONFIG_POLL").then(|| "0".to_string());
        assert_eq!(from_parts(args, file, &env).unwrap().config_poll, None);
    }

    /// Regression: `MCP_PROXY_STORE_KEY_FILE` and `MCP_PROXY_STORE_TIMEOUT`
    /// were read only when the store itself came from `MCP_PROXY_STORE`:
    /// with `--store` or a `[store]` section they were ignored in silence
    /// (the key then came from `MCP_PROXY_STORE_KEY`, or the file's
    /// `key_file`), against the documented order (flags, then variables,
    /// then the file).
    #[test]
    fn store_variables_apply_whichever_way_the_store_is_given() {
        let one = "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n";
        let in_file = format!("[store]\npath = \"/tmp/x.db\"\nkey_file = \"/file/key\"\n{one}");
        let env = |k: &str| match k {
            "MCP_PROXY_STORE_KEY_FILE" => Some("/env/key".to_string()),
            "MCP_PROXY_STORE_TIMEOUT" => Some("7s".to_string()),
            _ => None,
        };
        for (flags, text) in [
            (vec!["--store", "/tmp/x.db"], one.to_string()),
            (vec![], in_file),
        ] {
            use argh::FromArgs;
            let mut args = Args::from_args(&["mcp-proxy"], &flags).unwrap();
            args.config = Some("test.toml".into());
            let file = parse_file(Path::new("test.toml"), &text).unwrap();
            let store = from_parts(args, file, &env).unwrap().store.unwrap();
            assert_eq!(store.key_file.as_deref(), Some("/env/key"), "{flags:?}");
            assert_eq!(store.timeout, Duration::from_secs(7), "{flags:?}");
        }
    }

    #[test]
    fn a_config_file_over_the_cap_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("mcp-cfg-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.toml");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_CONFIG_FILE_BYTES + 1).unwrap();
        let e = read_config_file(&path).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        f.set_len(MAX_CONFIG_FILE_BYTES).unwrap();
        assert_eq!(
            read_config_file(&path).unwrap().len() as u64,
            MAX_CONFIG_FILE_BYTES
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: the file's `[limits]` and `[auth]` lists filled the
    /// flags' slots, so they won over `MCP_PROXY_*` variables, against the
    /// documented order (flags, then variables, then the file): a key
    /// rotated through `MCP_PROXY_API_KEY` was ignored and the file's old
    /// keys kept working.
    #[test]
    fn variables_win_over_the_files_global_sections() {
        let text = "[auth]\napi_keys = [\"file-key-0123456789abcdef\", \"file-key-fedcba9876543210\"]\nallow_origins = [\"https://file.example\"]\n\
                    [limits]\nmax_sessions = 10\nrequest_timeout = \"2m\"\n\
                    [[server]]\nname = \"a\"\ncommand = [\"true\"]\n\
                    [[server]]\nname = \"b\"\ncommand = [\"true\"]\n[server.limits]\nmax_sessions = 2\n";
        let env = |k: &str| {
            let v = match k {
                "MCP_PROXY_API_KEY" => "env-key-0123456789abcdef",
                "MCP_PROXY_MAX_SESSIONS" => "3",
                "MCP_PROXY_ALLOW_ORIGIN" => "https://env.example",
                _ => return None,
            };
            Some(v.to_string())
        };
        let args = Args {
            config: Some("test.toml".into()),
            ..Args::default()
        };
        let c = from_parts(
            args,
            parse_file(Path::new("test.toml"), text).unwrap(),
            &env,
        )
        .unwrap();
        let keys: Vec<&str> = c
            .base
            .auth
            .api_keys
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(
            keys,
            ["key-1"],
            "the variable's one key, none of the file's two"
        );
        assert_eq!(c.base.allow_origins, ["https://env.example"]);
        assert_eq!(c.base.max_sessions, 3);
        assert_eq!(c.servers[0].config.max_sessions, 3);
        // What the variable does not set, the file still does; a server's
        // own section wins over both.
        assert_eq!(
            c.servers[0].config.request_timeout,
            Some(Duration::from_secs(120))
        );
        assert_eq!(c.servers[1].config.max_sessions, 2);
    }

    const ISSUE_SHAPE: &str = r#"
[[server]]
name = "coda"
command = ["coda-mcp", "--read-only"]
mode = "per-session"
env = { CODA_LOG = "info", CODA_API_TOKEN = { secret = "coda" } }
"#;

    /// Regression: keys without names were numbered by position, so a
    /// reload that removed one handed its stored credential to the next.
    #[test]
    fn keys_named_by_position_are_refused_when_a_server_takes_secrets() {
        let dir = std::env::temp_dir().join(format!("mcp-cfg-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        };
        let k = ["0123456789abcdef0123", "fedcba9876543210fedc"];
        let bare = file("bare", &format!("{}\n{}\n", k[0], k[1]));
        let mixed = file("mixed", &format!("alice: {}\n{}\n", k[0], k[1]));
        let named = file("named", &format!("alice: {}\nbob: {}\n", k[0], k[1]));
        let store = ["--store", "/tmp/x.db"];
        for flags in [
            vec!["--api-key", k[0], "--api-key", k[1]],
            vec!["--api-key-file", &bare],
            vec!["--api-key-file", &mixed],
        ] {
            let all: Vec<&str> = store.iter().copied().chain(flags.iter().copied()).collect();
            let e = load_str(ISSUE_SHAPE, &all).unwrap_err().0;
            assert!(
                e.contains("\"coda\"") && e.contains("name") && e.contains("key-"),
                "{flags:?}: {e}"
            );
        }
        // In the file's [auth] too.
        let text = format!("[auth]\napi_keys = [\"{}\"]\n{ISSUE_SHAPE}", k[0]);
        assert!(load_str(&text, &store).is_err());
        // Named keys are fine, and so are bare keys for servers without secrets.
        let all: Vec<&str> = store
            .iter()
            .copied()
            .chain(["--api-key-file", &named])
            .collect();
        assert!(load_str(ISSUE_SHAPE, &all).is_ok());
        let plain = "[[server]]\nname = \"a\"\ncommand = [\"true\"]\n";
        assert!(load_str(plain, &["--api-key-file", &bare]).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression: a secret name the store refuses (a newline, a NUL, too
    /// long) passed check-config and then failed every spawn with a 503
    /// that looked temporary.
    #[test]
    fn secret_names_the_store_refuses_are_refused_at_load() {
        let with = |name: &str| {
            format!(
                "[[server]]\nname = \"coda\"\ncommand = [\"true\"]\nenv = {{ TOK = {{ secret = {} }} }}\n",
                serde_json::to_string(name).unwrap()
            )
        };
        let long = "x".repeat(crate::store::MAX_NAME_BYTES + 1);
        for bad in ["a\nb", "a\u{0}b", "tab\there", "", long.as_str()] {
            let e = load_str(&with(bad), &["--store", "/tmp/x.db"])
                .unwrap_err()
                .0;
            assert!(e.contains("TOK") && e.contains("secret"), "{bad:?}: {e}");
        }
        assert!(load_str(&with("coda.token-1"), &["--store", "/tmp/x.db"]).is_ok());
    }

    #[test]
    fn the_shape_from_the_issue_loads() {
        let c = load_str(ISSUE_SHAPE, &["--store", "/tmp/x.db"]).unwrap();
        let s = &c.servers[0];
        assert_eq!(s.name, "coda");
        assert_eq!(s.config.child.program, "coda-mcp");
        assert_eq!(s.config.child.args, vec!["--read-only"]);
        assert_eq!(s.config.mode, Mode::PerSession);
        assert_eq!(s.config.path, "/servers/coda/mcp");
        assert_eq!(s.config.sse_path, "/servers/coda/sse");
        assert_eq!(s.config.message_path, "/servers/coda/messages");
        assert_eq!(
            s.config.child.env,
            vec![("CODA_LOG".to_string(), "info".to_string())]
        );
        assert_eq!(
            s.secrets,
            vec![("CODA_API_TOKEN".to_string(), "coda".to_string())]
        );
    }

    #[test]
    fn secrets_without_a_store_are_refused() {
        let e = load_str(ISSUE_SHAPE, &[]).unwrap_err().0;
        assert!(
            e.contains("no store is configured") && e.contains("CODA_API_TOKEN"),
            "{e}"
        );
    }

    #[test]
    fn a_credential_header_can_never_be_one_that_carries_the_clients_own_credential() {
        let server = |header: &str| {
            format!(
                "[[server]]\nname = \"s\"\ncommand = [\"x\"]\ncredential_headers = {{ TOKEN = \"{header}\" }}\n"
            )
        };
        let jwt = [
            "--jwt-jwks-url",
            "https://team.example.com/certs",
            "--jwt-audience",
            "aud",
            "--jwt-header",
            "cf-access-jwt-assertion",
        ];
        for header in [
            "Authorization",
            "proxy-authorization",
            "X-API-Key",
            "cookie",
            "mcp-session-id",
            "Cf-Access-Jwt-Assertion",
        ] {
            let e = load_str(&server(header), &jwt).unwrap_err().0;
            assert!(e.contains("token passthrough"), "{header}: {e}");
        }
        // Without --jwt-header that one is an ordinary header.
        assert!(load_str(&server("cf-access-jwt-assertion"), &[]).is_ok());
        let c = load_str(&server("X-Upstream-Token"), &jwt).unwrap();
        assert_eq!(
            c.servers[0].header_env,
            vec![("TOKEN".to_string(), "x-upstream-token".to_string())]
        );
    }

    /// Regression: a per-user value (a stored secret, or a request
    /// header's) could be put in a variable that decides what code the
    /// child runs: `credential_headers = { LD_PRELOAD = "x-token" }` let
    /// any client name a library for the child to load.
    #[test]
    fn a_per_user_value_never_sets_a_variable_that_decides_what_code_runs() {
        let store = ["--store", "/tmp/x.db"];
        for var in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "PATH",
            "NODE_OPTIONS",
            "BASH_FUNC_ls%%",
        ] {
            for entry in [
                format!("env = {{ \"{var}\" = {{ secret = \"s\" }} }}"),
                format!("credential_headers = {{ \"{var}\" = \"x-token\" }}"),
            ] {
                let text = format!("[[server]]\nname = \"s\"\ncommand = [\"x\"]\n{entry}\n");
                let e = load_str(&text, &store).unwrap_err().0;
                assert!(e.contains(var) && e.contains("per-user"), "{entry}: {e}");
            }
        }
        // The operator's own values may set them.
        let text = "[[server]]\nname = \"s\"\ncommand = [\"x\"]\nenv = { LD_LIBRARY_PATH = \"/opt/lib\", TOKEN = { secret = \"s\" } }\n";
        assert!(load_str(text, &store).is_ok());
    }

    #[test]
    fn a_shared_child_with_per_user_secrets_is_refused() {
        let text = ISSUE_SHAPE.replace("per-session", "shared");
        let e = load_str(&text, &["--store", "/tmp/x.db"]).unwrap_err().0;
        assert!(e.contains("cannot use per-user secrets"), "{e}");
        let text = ISSUE_SHAPE.replace("per-session", "stateless");
        assert!(load_str(&text, &["--store", "/tmp/x.db"]).is_err());
    }

    #[test]
    fn full_file_with_globals_and_server_limits() {
        let text = r#"
[listen]
host = "127.0.0.1"
port = 9001
[auth]
api_keys = ["0123456789abcdef0123"]
[limits]
max_sessions = 10
request_timeout = "2m"
max_body_bytes = "1M"
[store]
path = "/tmp/s.db"
timeout = "2s"
[[server]]
name = "a"
command = "srv-a"
args = ["--x"]
mode = "shared"
upstream_protocol = "legacy"
child_stdout = "socket"
cwd = "/tmp"
[server.limits]
max_sessions = 3
[[server]]
name = "b"
command = ["srv-b"]
mode = "stateless"
"#;
        let c = load_str(text, &["--port", "9002"]).unwrap();
        // A flag wins over the file.
        assert_eq!(c.base.port, 9002);
        assert_eq!(c.base.auth.api_keys.len(), 1);
        let store = c.store.unwrap();
        assert_eq!(store.location, "/tmp/s.db");
        assert_eq!(store.timeout, Duration::from_secs(2));
        let a = &c.servers[0].config;
        assert_eq!(
            (a.child.program.as_str(), a.child.args.as_slice()),
            ("srv-a", &["--x".to_string()][..])
        );
        assert_eq!(a.mode, Mode::Shared);
        assert_eq!(a.max_sessions, 3);
        assert_eq!(a.request_timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.max_body_bytes, 1 << 20);
        assert_eq!(
            a.upstream_protocol,
            crate::upstream::UpstreamProtocol::Legacy
        );
        assert_eq!(a.child.stdout_kind, crate::child::StdoutKind::Socket);
        let b = &c.servers[1].config;
        assert_eq!(b.mode, Mode::Stateless);
        assert_eq!(b.max_sessions, 10);
        assert_eq!(b.child.stdout_kind, crate::child::StdoutKind::Pipe);
    }

    #[test]
    fn mistakes_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                "[[server]]\nname = \"a\"\ncommand = []\n",
                "command is empty",
            ),
            (
                "[[server]]\nname = \"a/b\"\ncommand = \"x\"\n",
                "server name",
            ),
            (
                "[[server]]\nname = \"a\"\ncommand = \"x\"\nmode = \"pooled\"\n",
                "mode must be",
            ),
            (
                "[[server]]\nname = \"a\"\ncommand = \"x\"\n[[server]]\nname = \"a\"\ncommand = \"y\"\n",
                "used twice",
            ),
            (
                "[[server]]\nname = \"a\"\ncommand = \"x\"\ncolour = 1\n",
                "colour",
            ),
            (
                "[[server]]\nname = \"a\"\ncommand = \"x\"\n[server.limits]\nmax_sessions = \"many\"\n",
                "server \"a\": --max-sessions",
            ),
            ("", "no servers configured"),
            ("[[server]\n", "test.toml"),
        ];
        for (text, want) in cases {
            let e = load_str(text, &[]).unwrap_err().0;
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn server_flags_cover_simple_cases() {
        use argh::FromArgs;
        let args = Args::from_args(
            &["mcp-proxy"],
            &[
                "--server",
                "mem=memory-server --db /tmp/m",
                "--server",
                "echo=echo-srv",
            ],
        )
        .unwrap();
        let c = load(args, &|_| None).unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[0].config.child.program, "memory-server");
        assert_eq!(c.servers[0].config.child.args, vec!["--db", "/tmp/m"]);
        assert_eq!(c.servers[1].config.path, "/servers/echo/mcp");
        let args = Args::from_args(&["mcp-proxy"], &["--server", "nocommand"]).unwrap();
        assert!(
            load(args, &|_| None)
                .unwrap_err()
                .0
                .contains("NAME=COMMAND")
        );
    }
}
