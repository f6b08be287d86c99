//! `coda-mcp`: parse flags → Coda config → logging to stderr → token check
//! → serve MCP over stdio through [`coda_mcp::stdio`]. stdout carries only
//! the protocol.
//!
//! Exit codes: 64 for bad usage or configuration (an unknown flag, a
//! missing token), 1 for runtime failures (including a token that `/whoami`
//! rejects with 401 or 403, since that is only known after talking to
//! Coda). When Coda cannot be reached at start-up, the check gives up after
//! a short deadline, warns, and serves anyway: the network may come back.

use std::error::Error;
use std::process::ExitCode;

use argh::FromArgs;
use coda_mcp::config::{EXIT_RUNTIME, EXIT_USAGE};
use coda_mcp::{CodaArgs, CodaConfig, CodaServer};
use rmcp::ServiceExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn print_error(err: &dyn Error) {
    eprintln!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cmd = strs.first().copied().unwrap_or("coda-mcp");
    let args = match CodaArgs::from_args(&[cmd], strs.get(1..).unwrap_or(&[])) {
        Ok(a) => a,
        Err(argh::EarlyExit { output, status }) => {
            return match status {
                // --help
                Ok(()) => {
                    println!("{output}");
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("error: {}", output.trim_end());
                    ExitCode::from(EXIT_USAGE as u8)
                }
            };
        }
    };
    if args.version {
        println!("coda-mcp {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cfg = match CodaConfig::from_args(&args, |k| std::env::var(k).ok()) {
        Ok(cfg) => cfg,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // CODA_MCP_LOG: a level or `info,coda_mcp=debug`; unset or unparsable means info.
    let filter = std::env::var("CODA_MCP_LOG")
        .ok()
        .and_then(|f| f.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::INFO)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(EXIT_RUNTIME as u8);
        }
    };
    let served = runtime.block_on(serve(cfg));
    // Not waited for: a write to a stdout nobody reads runs on a blocking
    // thread that never returns, and dropping the runtime would wait for it.
    runtime.shutdown_background();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(e.as_ref());
            ExitCode::from(EXIT_RUNTIME as u8)
        }
    }
}

async fn serve(cfg: CodaConfig) -> Result<(), Box<dyn Error + Send + Sync>> {
    let check = cfg.check_token;
    let base = cfg.api_base_url.clone();
    let check_deadline = cfg.token_check_deadline;
    let max_line_bytes = cfg.max_line_bytes;
    let max_pending_requests = cfg.max_pending_requests;
    // How long the answers still queued when stdin ends may take to be
    // written: a client that closed stdin and reads stdout no more would
    // otherwise keep this process waiting on a full pipe for ever.
    let stdout_grace = cfg.stdout_grace;
    let server = CodaServer::new(cfg)?;
    if check {
        match server
            .check_token(std::time::Instant::now() + check_deadline)
            .await
        {
            Ok(login) => tracing::info!(user = %login, "token accepted by /whoami"),
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                return Err(
                    format!("the Coda API token was rejected by {base}/whoami: {e}").into(),
                );
            }
            Err(e) => tracing::warn!(
                error = %e,
                "could not check the token against /whoami; serving anyway"
            ),
        }
    }
    tracing::info!(tools = server.tools().len(), "serving coda-mcp on stdio");
    // rmcp reads and writes through the front, which answers the lines rmcp
    // would leave unanswered (see `coda_mcp::stdio`).
    let (stdin, stdout) = rmcp::transport::stdio();
    let (transport, front) =
        coda_mcp::stdio::start(stdin, stdout, max_line_bytes, max_pending_requests);
    let served: Result<(), Box<dyn Error + Send + Sync>> = match server.serve(transport).await {
        Ok(running) => match running.waiting().await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    // rmcp has dropped the transport: the writer ends after what is queued.
    // A stdout that closed under us ends the server as it did before the
    // front existed: logged, not a failure of its own. So does one that
    // nobody reads, after a grace.
    match tokio::time::timeout(stdout_grace, front.finish()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "stop writing stdout: write failed"),
        Err(_) => tracing::warn!(
            grace = ?stdout_grace,
            "stop writing stdout: the client has read none of it since stdin ended; answers still queued are dropped"
        ),
    }
    served?;
    tracing::info!("stdin closed, exiting");
    Ok(())
}
