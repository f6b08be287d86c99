//! stub
use crate::coda::server::CodaServer;
use rmcp::tool_router;
#[tool_router(router = sharing_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
#[tool_router(router = automations_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
