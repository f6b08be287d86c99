//! The Coda MCP server (`coda-mcp`): a stdio MCP server for the Coda REST API v1.
pub mod client;
pub mod config;
pub mod ratelimit;
pub mod server;
pub mod tools;

pub use config::{CodaArgs, CodaConfig, ConfigError};
pub use server::CodaServer;
