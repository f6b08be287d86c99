//! stub
use crate::coda::server::CodaServer;
use rmcp::tool_router;
#[tool_router(router = docs_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
