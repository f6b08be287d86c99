//! The Coda MCP server (`coda-mcp`): a stdio MCP server for the Coda REST API v1.
