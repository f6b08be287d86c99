//! The MCP side: [`CodaServer`] implements rmcp's `ServerHandler` with the
//! tool routers of the enabled toolsets, minus every write tool in
//! read-only mode (a tool is a write tool when its `readOnlyHint` is not
//! true, so the annotation and the filter cannot disagree).

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool_handler};

use super::client::{CodaClient, CodaError};
use super::config::CodaConfig;
use super::tools::{Coda, Toolset};

/// The Coda MCP server. Cheap to clone; all clones share one client.
#[derive(Debug, Clone)]
pub struct CodaServer {
    pub(crate) coda: Arc<Coda>,
    tool_router: ToolRouter<CodaServer>,
}

impl CodaServer {
    pub fn new(cfg: CodaConfig) -> Result<Self, CodaError> {
        let client = CodaClient::new(&cfg)?;
        let mut router = ToolRouter::new();
        for set in &cfg.toolsets {
            router += Self::router_for(*set);
        }
        if cfg.read_only {
            let writes: Vec<String> = router
                .list_all()
                .into_iter()
                .filter(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint) != Some(true))
                .map(|t| t.name.to_string())
                .collect();
            for name in writes {
                router.remove_route(&name);
            }
        }
        Ok(Self {
            coda: Arc::new(Coda { client, cfg }),
            tool_router: router,
        })
    }

    fn router_for(set: Toolset) -> ToolRouter<CodaServer> {
        match set {
            Toolset::Account => Self::account_router(),
            Toolset::Docs => Self::docs_router(),
            Toolset::Folders => Self::folders_router(),
            Toolset::Pages => Self::pages_router(),
            Toolset::Tables => Self::tables_router(),
            Toolset::Rows => Self::rows_router(),
            Toolset::Formulas => Self::formulas_router(),
            Toolset::Controls => Self::controls_router(),
            Toolset::Sharing => Self::sharing_router(),
            Toolset::Automations => Self::automations_router(),
            Toolset::Admin => Self::admin_router(),
        }
    }

    /// The tools this server lists (after toolset and read-only filtering).
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    /// Check the token against `/whoami`; returns the user's login id.
    pub async fn check_token(&self) -> Result<String, CodaError> {
        let req = super::client::ApiRequest::get(&["whoami"]);
        let resp = self.coda.client.send(&req, self.coda.deadline()).await?;
        Ok(resp
            .body
            .get("loginId")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned())
    }
}

const INSTRUCTIONS: &str = "Tools for the Coda API. docId accepts a doc id or any Coda browser URL. \
List tools page: pass nextPageToken back as pageToken, or set fetchAll. Writes are asynchronous: \
they return a requestId; pass wait=true (or call coda_get_mutation_status) to know when they are applied.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CodaServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("coda-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
