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
use mcp_sidecar::{child, logging, proxy, shutdown};
use tokio_util::sync::CancellationToken;

// The static musl build's allocator: see the dependency's note in Cargo.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// One `error: …` line on stderr (ignoring a closed stderr) and exit.
fn fail(code: i32, message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    std::process::exit(code);
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("healthcheck") {
        healthcheck(&argv[2..]);
    }
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    if strs.get(1) == Some(&"secrets") {
        let code = mcp_sidecar::store::cli::main(&strs[2..], &|k| std::env::var(k).ok());
        std::process::exit(code);
    }
    if strs.get(1) == Some(&"check-config") {
        let code = mcp_sidecar::config_file::check_main(&strs[2..], &|k| std::env::var(k).ok());
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
        args.config = std::env::var("MCP_PROXY_CONFIG").ok();
    }
    if args.config.is_some() || !args.server.is_empty() {
        std::process::exit(named::main(args));
    }
    // Named-server flags would otherwise be ignored in silence: a single
    // server started with --store would run without the per-user
    // credentials its operator meant it to have.
    for (flag, given) in [
        ("--store", args.store.is_some()),
        ("--store-key-file", args.store_key_file.is_some()),
        ("--store-timeout", args.store_timeout.is_some()),
        ("--config-poll", args.config_poll.is_some()),
    ] {
        if given {
            fail(
                EX_USAGE,
                &format!(
                    "{flag} applies to named servers only (--config FILE or --server NAME=COMMAND); a single server after -- takes no credential store"
                ),
            );
        }
    }
    let config = match Config::from_args(args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => fail(EX_USAGE, &e.to_string()),
    };
    // A typo in the command fails here, not at the first client.
    if let Err(e) = child::resolve_program(&config.child) {
        fail(EX_USAGE, &e.to_string());
    }
    if let Err(e) = logging::init(config.log_format, &config.log_level, config.log_queue_bytes) {
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
                let _ = writeln!(
                    std::io::stderr(),
                    "error: cannot listen on {}:{}: {e}",
                    config.host,
                    config.port
                );
                return 1;
            }
        };
        let token = CancellationToken::new();
        let hurry = CancellationToken::new();
        if let Err(e) = shutdown::on_signal(token.clone(), hurry.clone()) {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot install signal handlers: {e}"
            );
            return 1;
        }
        match proxy::run_until(listener, config, token, hurry).await {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
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
    let probe = match Probe::from_args(args, &|k| std::env::var(k).ok()) {
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
        let lookup: servers::Lookup = Arc::new(|k| std::env::var(k).ok());
        let config = match config_file::load(args.clone(), &*lookup) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return super::EX_USAGE;
            }
        };
        if let Err(e) = logging::init(
            config.base.log_format,
            &config.base.log_level,
            config.base.log_queue_bytes,
        ) {
            eprintln!("error: {e}");
            return super::EX_USAGE;
        }
        let runtime = match super::runtime(config.base.worker_threads) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return 1;
            }
        };
        let code = runtime.block_on(async move {
            let (host, port) = (config.base.host, config.base.port);
            let listener = match tokio::net::TcpListener::bind((host, port)).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {host}:{port}: {e}");
                    return 1;
                }
            };
            let token = CancellationToken::new();
            let hurry = CancellationToken::new();
            if let Err(e) = shutdown::on_signal(token.clone(), hurry.clone()) {
                eprintln!("error: cannot install signal handlers: {e}");
                return 1;
            }
            match servers::serve_config(listener, config, args, lookup, token, hurry).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        logging::flush(super::LOG_FLUSH);
        code
    }
}
