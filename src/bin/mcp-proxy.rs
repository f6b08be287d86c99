//! `mcp-proxy [flags] -- <command> [args...]`: parse, check, configure,
//! log, run. `mcp-proxy healthcheck [--url URL]`: probe a running proxy.
//!
//! Exit codes: 0 after a clean shutdown, 64 for bad usage or configuration
//! (one line on stderr, never a panic), 1 for a runtime failure, the
//! child's code with `--exit-on-child-exit`.

use std::io::Write;

use argh::FromArgs;
use mcp_sidecar::config::{Args, Config};
use mcp_sidecar::healthcheck::Probe;
use mcp_sidecar::{child, logging, proxy, servers, shutdown};
use tokio_util::sync::CancellationToken;

// The static musl build's allocator: see the dependency's note in Cargo.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed memory glibc's allocator keeps for reuse instead of handing back
/// to the kernel (`M_TRIM_THRESHOLD`), and the size from which a block is
/// mapped on its own (`M_MMAP_THRESHOLD`, above the 1 MiB blocks a long
/// answer is read into). With glibc's defaults, each 8 MiB answer grew the
/// heap by about 5 MiB of fresh pages and gave them back at its end, so
/// the next one faulted them in again: those faults were 13% of the
/// proxy's CPU passing long answers. Kept, the same transfers cost 18% less
/// CPU (measured in the commit that added this). The cost is at most this
/// much RSS kept after a burst of long answers. `GLIBC_TUNABLES` with
/// `glibc.malloc.` settings wins over both.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_FREED_BYTES: i32 = 8 << 20;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const OWN_MAP_BYTES: i32 = 2 << 20;

/// See [`KEEP_FREED_BYTES`]; a no-op for other C libraries (the static
/// musl build has mimalloc, see Cargo.toml).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."));
        if !chosen {
            // SAFETY: mallopt only sets two of the allocator's parameters;
            // it runs before any other thread exists.
            unsafe {
                nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, OWN_MAP_BYTES);
                nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
            }
        }
    }
}

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EX_USAGE: i32 = 64;

/// How long queued log lines get to reach stderr before the process exits.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// Prints to stdout; a closed stdout (`mcp-proxy --help | head`) is not an error.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The runtime (`--worker-threads`): 1 runs everything on this thread, 0
/// is a pool of one worker per CPU, more is a pool of that many.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// One `error: …` line on stderr and exit. A closed or broken stderr is
/// ignored (the `eprintln!` macro would panic on a broken pipe).
fn fail(code: i32, message: &str) -> ! {
    say(&format!("error: {message}"));
    std::process::exit(code);
}

/// One line on stderr, ignoring a closed or broken stderr.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The first `MCP_PROXY_*` variable [`lookup`] found that is not UTF-8.
static NOT_UTF8: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The environment as the configuration reads it. A variable that is set
/// but not UTF-8 reads as unset and is remembered: [`check_lookups`] then
/// refuses to start, rather than run with the default in its place.
/// Variables the proxy does not read are not looked at (they go to the
/// child as they are).
fn lookup(name: &str) -> Option<String> {
    match std::env::var_os(name)?.into_string() {
        Ok(v) => Some(v),
        Err(_) => {
            let mut first = NOT_UTF8.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| name.to_string());
            None
        }
    }
}

/// Exits 64 if any variable read so far was not UTF-8.
fn check_lookups() {
    let first = NOT_UTF8.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(name) = first {
        fail(
            EX_USAGE,
            &format!("{name} is not valid UTF-8; give it as UTF-8 text or unset it"),
        );
    }
}

/// The arguments as UTF-8, or exit 64 naming the first that is not (the
/// standard library's `args()` would panic on it).
fn argv() -> Vec<String> {
    std::env::args_os()
        .enumerate()
        .map(|(i, a)| {
            a.into_string().unwrap_or_else(|a| {
                fail(
                    EX_USAGE,
                    &format!(
                        "argument {i} ({}) is not valid UTF-8",
                        a.to_string_lossy().escape_debug()
                    ),
                )
            })
        })
        .collect()
}

/// `--audit-log`, opened as the proxy will open it: a path that cannot
/// work (a directory, a named pipe nobody reads) is bad configuration,
/// refused before anything starts. The file returned is to be held until
/// the proxy has opened it too (see `audit::check_path`).
fn check_audit_log(config: &Config) -> Option<std::fs::File> {
    let path = config.audit_log.as_deref()?;
    match mcp_sidecar::audit::check_path(path) {
        Ok(f) => Some(f),
        Err(e) => fail(
            EX_USAGE,
            &format!("--audit-log: cannot open {}: {e}", path.display()),
        ),
    }
}

/// The command a server runs, checked as `exec` and `chdir` will see it:
/// a typo fails the start, not every client.
fn check_child(spec: &child::ChildSpec) -> Result<(), String> {
    if let Some(cwd) = &spec.cwd {
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("--cwd {}: not a directory", cwd.display())),
            Err(e) => return Err(format!("--cwd {}: {e}", cwd.display())),
        }
    }
    child::resolve_program(spec)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Starts logging for `config`, then makes the proxy not dumpable
/// ([`servers::hide_from_children`]): its children run as its user and
/// would otherwise read `/proc/<proxy pid>/environ` (`MCP_PROXY_API_KEY`,
/// the store key, any secret given to the proxy) and could ptrace it; and
/// makes it the reaper of what its children leave behind outside their
/// process groups ([`mcp_sidecar::child::adopt_orphans`]). Both
/// modes come through here once, before the runtime exists and so before
/// any child starts; after logging, so that a failure is logged.
fn start_logging(config: &Config) -> Result<(), String> {
    logging::init(config.log_format, &config.log_level, config.log_queue_bytes)?;
    servers::hide_from_children();
    mcp_sidecar::child::adopt_orphans();
    Ok(())
}

fn main() {
    tune_allocator();
    let argv = argv();
    if argv.get(1).map(String::as_str) == Some("healthcheck") {
        healthcheck(&argv[2..]);
    }
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    if strs.get(1) == Some(&"secrets") {
        let code = mcp_sidecar::store::cli::main(&strs[2..], &lookup);
        std::process::exit(code);
    }
    if strs.get(1) == Some(&"check-config") {
        let code = mcp_sidecar::config_file::check_main(&strs[2..], &lookup);
        check_lookups();
        std::process::exit(code);
    }
    let args = match Args::from_args(&["mcp-proxy"], &strs[1.min(strs.len())..]) {
        Ok(a) => a,
        Err(early) => match early.status {
            Ok(()) => {
                print_stdout(&early.output);
                return;
            }
            Err(()) => {
                let first = early.output.lines().next().unwrap_or("invalid arguments");
                fail(EX_USAGE, &format!("{first} (see mcp-proxy --help)"));
            }
        },
    };
    if args.version {
        print_stdout(&format!("mcp-proxy {}", env!("CARGO_PKG_VERSION")));
        return;
    }
    let mut args = args;
    if args.config.is_none() {
        args.config = lookup("MCP_PROXY_CONFIG");
    }
    check_lookups();
    if args.config.is_some() || !args.server.is_empty() {
        std::process::exit(named::main(args));
    }
    // Named-server flags (or their variables) would otherwise be ignored
    // in silence: a single server started with --store would run without
    // the per-user credentials its operator meant it to have.
    for (flag, var, given) in [
        ("--store", "MCP_PROXY_STORE", args.store.is_some()),
        (
            "--store-key-file",
            "MCP_PROXY_STORE_KEY_FILE",
            args.store_key_file.is_some(),
        ),
        (
            "--store-timeout",
            "MCP_PROXY_STORE_TIMEOUT",
            args.store_timeout.is_some(),
        ),
        (
            "--config-poll",
            "MCP_PROXY_CONFIG_POLL",
            args.config_poll.is_some(),
        ),
    ] {
        let source = if given {
            flag
        } else if lookup(var).is_some() {
            var
        } else {
            continue;
        };
        fail(
            EX_USAGE,
            &format!(
                "{source} applies to named servers only (--config FILE or --server NAME=COMMAND); a single server after -- takes no credential store"
            ),
        );
    }
    let config = Config::from_args(args, &lookup);
    check_lookups();
    let config = match config {
        Ok(c) => c,
        Err(e) => fail(EX_USAGE, &e.to_string()),
    };
    // A typo in the command or its directory fails here, not at the first client.
    if let Err(e) = check_child(&config.child) {
        fail(EX_USAGE, &e);
    }
    let _audit_file = check_audit_log(&config);
    if let Err(e) = start_logging(&config) {
        fail(EX_USAGE, &e);
    }
    let runtime = match runtime(config.worker_threads) {
        Ok(r) => r,
        Err(e) => fail(1, &format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(async move {
        let addr = (config.host, config.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                say(&format!(
                    "error: cannot listen on {}:{}: {e}",
                    config.host, config.port
                ));
                return 1;
            }
        };
        let token = CancellationToken::new();
        let hurry = CancellationToken::new();
        // SIGHUP stops a single server too (nothing to reload), except as
        // PID 1, which forwards it to the children.
        let hangup = !shutdown::is_pid1();
        if let Err(e) = shutdown::on_signal(token.clone(), hurry.clone(), hangup) {
            say(&format!("error: cannot install signal handlers: {e}"));
            return 1;
        }
        match proxy::run_until(listener, config, token, hurry).await {
            Ok(()) => 0,
            Err(e) => {
                say(&format!("error: {e}"));
                e.exit_code()
            }
        }
    });
    // Children were stopped and reaped inside run; nothing is left to wait for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    logging::flush(LOG_FLUSH);
    std::process::exit(code);
}

fn healthcheck(args: &[String]) -> ! {
    let probe = Probe::from_args(args, &lookup);
    check_lookups();
    let probe = match probe {
        Ok(p) => p,
        Err(e) => fail(EX_USAGE, &e),
    };
    match probe.run() {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(1, &format!("healthcheck: {e}")),
    }
}

/// `--config FILE` / `--server NAME=COMMAND`: several named servers.
mod named {
    use std::sync::Arc;

    use mcp_sidecar::config::Args;
    use mcp_sidecar::{config_file, logging, servers, shutdown};
    use tokio_util::sync::CancellationToken;

    pub fn main(args: Args) -> i32 {
        let lookup: servers::Lookup = Arc::new(super::lookup);
        let config = config_file::load(args.clone(), &*lookup);
        super::check_lookups();
        let config = match config {
            Ok(c) => c,
            Err(e) => super::fail(super::EX_USAGE, &e.to_string()),
        };
        // A store without a usable key is bad configuration (64), as
        // `check-config` says, not a failure of the running proxy (1).
        if let Err(e) = config_file::check_store_key(&config, &*lookup) {
            super::fail(super::EX_USAGE, &e.to_string());
        }
        // As with a single server: a command or directory that cannot
        // work fails the start, not every client of that server.
        for s in &config.servers {
            if let Err(e) = super::check_child(&s.config.child) {
                super::fail(super::EX_USAGE, &format!("server {:?}: {e}", s.name));
            }
        }
        let _audit_file = super::check_audit_log(&config.base);
        if let Err(e) = super::start_logging(&config.base) {
            super::say(&format!("error: {e}"));
            return super::EX_USAGE;
        }
        let runtime = match super::runtime(config.base.worker_threads) {
            Ok(r) => r,
            Err(e) => {
                super::say(&format!("error: cannot start the runtime: {e}"));
                return 1;
            }
        };
        let code = runtime.block_on(async move {
            let (host, port) = (config.base.host, config.base.port);
            let listener = match tokio::net::TcpListener::bind((host, port)).await {
                Ok(l) => l,
                Err(e) => {
                    super::say(&format!("error: cannot listen on {host}:{port}: {e}"));
                    return 1;
                }
            };
            let token = CancellationToken::new();
            let hurry = CancellationToken::new();
            // SIGHUP reloads (servers::reload_on_sighup).
            if let Err(e) = shutdown::on_signal(token.clone(), hurry.clone(), false) {
                super::say(&format!("error: cannot install signal handlers: {e}"));
                return 1;
            }
            match servers::serve_config(listener, config, args, lookup, token, hurry).await {
                Ok(()) => 0,
                Err(e) => {
                    super::say(&format!("error: {e}"));
                    1
                }
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        logging::flush(super::LOG_FLUSH);
        code
    }
}
