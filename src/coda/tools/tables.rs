//! stub
use crate::coda::server::CodaServer;
use rmcp::tool_router;
#[tool_router(router = tables_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
#[tool_router(router = formulas_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
#[tool_router(router = controls_router, vis = "pub(crate)", allow_empty)]
impl CodaServer {}
