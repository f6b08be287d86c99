//! Logging: tracing to stderr, always (stdout may be a protocol stream),
//! plain or JSON. Message bodies appear only at trace level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format.
pub use crate::config::LogFormat;

/// Installs the global subscriber. `filter` is a level (`info`) or an
/// `EnvFilter` directive list (`info,mcp_sidecar=debug`).
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("--log-level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let r = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    r.map_err(|e| e.to_string())
}
