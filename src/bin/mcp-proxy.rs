//! `mcp-proxy [flags] -- <command> [args...]`: parse, configure, log, run.

use argh::FromArgs;
use mcp_sidecar::config::{Args, Config};
use mcp_sidecar::{logging, proxy, shutdown};
use tokio_util::sync::CancellationToken;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EX_USAGE: i32 = 64;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
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
                println!("{}", early.output);
                return;
            }
            Err(()) => {
                let first = early.output.lines().next().unwrap_or("invalid arguments");
                eprintln!("error: {first} (see mcp-proxy --help)");
                std::process::exit(EX_USAGE);
            }
        },
    };
    let mut args = args;
    if args.config.is_none() {
        args.config = std::env::var("MCP_PROXY_CONFIG").ok();
    }
    if args.config.is_some() || !args.server.is_empty() {
        std::process::exit(named::main(args));
    }
    let config = match Config::from_args(args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(EX_USAGE);
        }
    };
    if let Err(e) = logging::init(config.log_format, &config.log_level) {
        eprintln!("error: {e}");
        std::process::exit(EX_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let addr = (config.host, config.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: cannot listen on {}:{}: {e}",
                    config.host, config.port
                );
                return 1;
            }
        };
        let token = CancellationToken::new();
        if let Err(e) = shutdown::on_signal(token.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return 1;
        }
        match proxy::run(listener, config, token).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        }
    });
    // Children were stopped and reaped inside run; nothing is left to wait for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
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
        if let Err(e) = logging::init(config.base.log_format, &config.base.log_level) {
            eprintln!("error: {e}");
            return super::EX_USAGE;
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
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
            if let Err(e) = shutdown::on_signal(token.clone()) {
                eprintln!("error: cannot install signal handlers: {e}");
                return 1;
            }
            match servers::serve_config(listener, config, args, lookup, token).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        code
    }
}
