//! `coda-mcp`: parse flags → Coda config → logging to stderr → token check
//! → serve MCP over stdio through [`coda_mcp::stdio`] → at stdin's end or
//! a first SIGTERM/SIGINT, wait for the write calls that sent a write to
//! Coda ([`coda_mcp::shutdown`]). stdout carries only the protocol.
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

/// `error: …` and its `caused by:` lines, through the log's queue once it
/// is running (a full or broken stderr neither blocks nor panics; see
/// [`coda_mcp::log`]).
fn print_error(err: &dyn Error) {
    let mut text = format!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    coda_mcp::log::raw(&text);
}

/// `text` with its control characters, line separators and bidi
/// overrides escaped (`\n`, `\u{202e}`): argh's errors quote the
/// argument as given, and `--docs $'a\nerror: …'` must not print a line
/// of its own.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            _ if c.is_control() => c.escape_debug().to_string(),
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                c.escape_unicode().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

fn main() -> ExitCode {
    // `std::env::args` panics on an argument that is not UTF-8: a usage
    // error like any other, one line and 64.
    let mut argv: Vec<String> = Vec::new();
    for (i, arg) in std::env::args_os().enumerate() {
        match arg.into_string() {
            Ok(a) => argv.push(a),
            Err(bad) => {
                coda_mcp::log::raw(&format!(
                    "error: argument {i} is not valid UTF-8: {:?}",
                    bad.to_string_lossy()
                ));
                return ExitCode::from(EXIT_USAGE as u8);
            }
        }
    }
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cmd = strs.first().copied().unwrap_or("coda-mcp");
    let args = match CodaArgs::from_args(&[cmd], strs.get(1..).unwrap_or(&[])) {
        Ok(a) => a,
        Err(argh::EarlyExit { output, status }) => {
            return match status {
                // --help
                Ok(()) => {
                    coda_mcp::log::stdout(&output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    coda_mcp::log::raw(&format!("error: {}", one_line(output.trim_end())));
                    ExitCode::from(EXIT_USAGE as u8)
                }
            };
        }
    };
    if args.version {
        coda_mcp::log::stdout(&format!("coda-mcp {}", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    let cfg = match CodaConfig::from_args_os(&args, |k| std::env::var_os(k)) {
        Ok(cfg) => cfg,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // CODA_MCP_LOG: a level or `info,coda_mcp=debug`; unset or unparsable
    // means info, the latter with a warning once logging is up (a typo
    // must not silently log at another level than asked).
    let asked = std::env::var_os("CODA_MCP_LOG");
    let parsed = asked
        .as_ref()
        .and_then(|f| f.to_str())
        .and_then(|f| f.parse::<tracing_subscriber::filter::Targets>().ok());
    let unparsable = asked.is_some() && parsed.is_none();
    let filter = parsed.unwrap_or_else(|| {
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    });
    // Through a bounded queue and a thread of its own: a stderr nobody
    // reads must not block a call, the signal task or the exit.
    coda_mcp::log::init(filter, cfg.log_queue_bytes);
    if let Some(asked) = asked.filter(|_| unparsable) {
        tracing::warn!(
            CODA_MCP_LOG = ?asked,
            "ignore CODA_MCP_LOG: not a level or a filter such as `info,coda_mcp=debug`; logging at info"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&e);
            coda_mcp::log::finish(coda_mcp::log::FLUSH_AT_EXIT);
            return ExitCode::from(EXIT_RUNTIME as u8);
        }
    };
    let served = runtime.block_on(serve(cfg));
    // Not waited for: a write to a stdout nobody reads runs on a blocking
    // thread that never returns, and dropping the runtime would wait for it.
    runtime.shutdown_background();
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(e.as_ref());
            ExitCode::from(EXIT_RUNTIME as u8)
        }
    };
    // The log's last lines, for a bounded time: a stderr nobody reads
    // does not keep the process.
    coda_mcp::log::finish(coda_mcp::log::FLUSH_AT_EXIT);
    code
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
    // How long the writes still running at the stop may take
    // (`--shutdown-wait-secs`; by default their deadline and a margin, as
    // every request of a write call ends by its deadline).
    let writes_bound = cfg.shutdown_wait;
    let server = CodaServer::new(cfg)?;
    let shutdown = server.shutdown();
    // The first SIGTERM/SIGINT stops (writes sent finish), a second exits.
    coda_mcp::shutdown::on_signal(shutdown.clone(), EXIT_RUNTIME)?;
    if check {
        let checked = tokio::select! {
            c = server.check_token(std::time::Instant::now() + check_deadline) => c,
            _ = shutdown.stopped() => {
                tracing::info!("stop on a signal before serving, exiting");
                return Ok(());
            }
        };
        match checked {
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
    let mut signalled = false;
    let served: Result<(), Box<dyn Error + Send + Sync>> = tokio::select! {
        started = server.serve(transport) => match started {
            Ok(running) => {
                let stop_rmcp = running.cancellation_token();
                tokio::select! {
                    r = running.waiting() => r.map(|_| ()).map_err(Into::into),
                    // rmcp stops reading; its drain writes the answers of
                    // the calls that end within 2 s (the others stop at
                    // the signal, but writes sent to Coda).
                    _ = shutdown.stopped() => {
                        stop_rmcp.cancel();
                        signalled = true;
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e.into()),
        },
        // Waiting for the client's `initialize`.
        _ = shutdown.stopped() => {
            signalled = true;
            Ok(())
        }
    };
    // rmcp has dropped the transport (or will, after its drain): the
    // writer ends after what is queued. A stdout that closed under us ends
    // the server as it did before the front existed: logged, not a
    // failure of its own. So does one that nobody reads, after a grace.
    // Meanwhile the write calls that sent a write to Coda run to their end.
    let running = shutdown.writes_running();
    if running > 0 {
        tracing::info!(
            writes = running,
            bound = ?writes_bound,
            "wait for the write calls that sent a write to Coda before exiting"
        );
    }
    let (written, writes_left) =
        tokio::join!(tokio::time::timeout(stdout_grace, front.finish()), async {
            // The calls stopped log it before the runtime goes.
            shutdown
                .calls_settled(coda_mcp::shutdown::CALLS_SETTLE)
                .await;
            shutdown.writes_done(writes_bound).await
        },);
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "stop writing stdout: write failed"),
        Err(_) => tracing::warn!(
            grace = ?stdout_grace,
            "stop writing stdout: the client has read none of it since stdin ended; answers still queued are dropped"
        ),
    }
    if writes_left > 0 {
        tracing::warn!(
            writes = writes_left,
            bound = ?writes_bound,
            "exit with write calls still running at the end of --shutdown-wait-secs: they may be applied or not"
        );
    }
    served?;
    if signalled {
        tracing::info!("stopped on a signal, exiting");
    } else {
        tracing::info!("stdin closed, exiting");
    }
    Ok(())
}
