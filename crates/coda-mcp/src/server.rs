//! The MCP side: [`CodaServer`] implements rmcp's `ServerHandler` with the
//! tool routers of the enabled toolsets, minus every write tool in
//! read-only mode (a tool is a write tool when its `readOnlyHint` is not
//! true, so the annotation and the filter cannot disagree).
//!
//! `tools/list` serves the catalogue with portable schemas
//! ([`crate::schema`]), computed once. `tools/call` runs the tool inside a
//! [`crate::call`] context (progress notifications when the request has a
//! progress token) and ends it when the client cancels the request. The
//! `--docs` allow-list is enforced by the client on every request
//! ([`crate::client`]), whatever argument named the doc; this module only
//! filters the doc listing.
//! Resources and prompts live in [`crate::resources`].
//!
//! The routers serve [`Coda`], the state the tools share (each toolset
//! writes its tools as methods of it); the server holds it and hands it to
//! the router on every call. So this module sits above the tools and
//! resources, and neither imports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::call::{self, CallContext};
use super::client::{ApiRequest, CodaClient, CodaError};
use super::config::{CodaConfig, Toolset};
use super::shutdown::Shutdown;
use super::tools::Coda;
use super::tools::error::ToolError;

/// The 34 tools of coda-enhanced, exposed alone by `--toolsets coda-enhanced`.
pub const CODA_ENHANCED_TOOLS: [&str; 34] = [
    "coda_list_documents",
    "coda_get_document",
    "coda_create_document",
    "coda_update_document",
    "coda_get_document_stats",
    "coda_list_pages",
    "coda_create_page",
    "coda_delete_page",
    "coda_get_page_content",
    "coda_peek_page",
    "coda_replace_page_content",
    "coda_append_page_content",
    "coda_duplicate_page",
    "coda_rename_page",
    "coda_search_pages",
    "coda_list_tables",
    "coda_get_table",
    "coda_get_table_summary",
    "coda_search_tables",
    "coda_list_columns",
    "coda_get_column",
    "coda_list_rows",
    "coda_get_row",
    "coda_create_rows",
    "coda_update_row",
    "coda_delete_row",
    "coda_delete_rows",
    "coda_bulk_update_rows",
    "coda_push_button",
    "coda_list_formulas",
    "coda_get_formula",
    "coda_list_controls",
    "coda_get_control",
    "coda_whoami",
];

/// The Coda MCP server. Cheap to clone; all clones share one client.
#[derive(Debug, Clone)]
pub struct CodaServer {
    pub(crate) coda: Arc<Coda>,
    tool_router: ToolRouter<Coda>,
    /// What `tools/list` returns: the router's tools with portable schemas.
    tools: Arc<Vec<Tool>>,
    /// The write calls the process waits for, and the stop on a signal.
    shutdown: Shutdown,
}

impl CodaServer {
    pub fn new(cfg: CodaConfig) -> Result<Self, CodaError> {
        let client = CodaClient::new(&cfg)?;
        let mut router = ToolRouter::new();
        for set in &cfg.toolsets {
            router += Self::router_for(*set);
        }
        if cfg.coda_enhanced_only {
            let extra: Vec<String> = router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .filter(|n| !CODA_ENHANCED_TOOLS.contains(&n.as_str()))
                .collect();
            for name in extra {
                router.remove_route(&name);
            }
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
        let tools = router
            .list_all()
            .into_iter()
            .map(|mut t| {
                t.input_schema = Arc::new(crate::schema::portable(&t.input_schema));
                t.output_schema = t.output_schema.map(|s| {
                    Arc::new(crate::schema::without_descriptions(
                        crate::schema::portable(&s),
                    ))
                });
                t
            })
            .collect();
        Ok(Self {
            coda: Arc::new(Coda::new(client, cfg)),
            tool_router: router,
            tools: Arc::new(tools),
            shutdown: Shutdown::new(),
        })
    }

    fn router_for(set: Toolset) -> ToolRouter<Coda> {
        match set {
            Toolset::Account => Coda::account_router(),
            Toolset::Docs => Coda::docs_router(),
            Toolset::Folders => Coda::folders_router(),
            Toolset::Pages => Coda::pages_router(),
            Toolset::Tables => Coda::tables_router(),
            Toolset::Rows => Coda::rows_router(),
            Toolset::Formulas => Coda::formulas_router(),
            Toolset::Controls => Coda::controls_router(),
            Toolset::Sharing => Coda::sharing_router(),
            Toolset::Automations => Coda::automations_router(),
            Toolset::Admin => Coda::admin_router(),
        }
    }

    /// The write calls this server runs, and its stop: the binary waits
    /// for the first and signals start the second ([`crate::shutdown`]).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The tools this server lists (after toolset and read-only filtering),
    /// with their portable schemas.
    pub fn tools(&self) -> Vec<Tool> {
        self.tools.as_ref().clone()
    }

    /// Check the token against `/whoami` within `deadline`; returns the
    /// user's login id.
    pub async fn check_token(&self, deadline: std::time::Instant) -> Result<String, CodaError> {
        let req = ApiRequest::get(&["whoami"]);
        let resp = self.coda.client.send(&req, deadline).await?;
        Ok(resp
            .body
            .get("loginId")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned())
    }

    /// Page, table and row arguments given as Coda browser URLs become ids
    /// (through `/resolveBrowserLink`) before the tool sees them, so every
    /// tool accepts them the way `docId` does.
    async fn resolve_urls(&self, args: &mut rmcp::model::JsonObject) -> Result<(), ToolError> {
        const REFS: [(&str, &str); 5] = [
            ("pageIdOrName", "page"),
            ("parentPageId", "page"),
            ("tableIdOrName", "table"),
            ("rowIdOrName", "row"),
            ("pageId", "page"),
        ];
        let dl = self.coda.deadline();
        for (key, kind) in REFS {
            if let Some(Value::String(raw)) = args.get(key)
                && raw.contains("://")
            {
                let id = self.coda.resolve_ref(key, raw, kind, dl).await?;
                args.insert(key.to_owned(), Value::String(id));
            }
        }
        if let Some(Value::Array(updates)) = args.get_mut("updates") {
            for (i, u) in updates.iter_mut().enumerate() {
                if let Some(Value::String(raw)) = u.get("rowIdOrName")
                    && raw.contains("://")
                {
                    let at = format!("updates[{i}].rowIdOrName");
                    let id = self.coda.resolve_ref(&at, raw, "row", dl).await?;
                    u["rowIdOrName"] = Value::String(id);
                }
            }
        }
        Ok(())
    }

    /// Whether `tool` is a write tool (its `readOnlyHint` is not true).
    fn is_write(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| {
            t.name == tool && t.annotations.as_ref().and_then(|a| a.read_only_hint) != Some(true)
        })
    }

    /// Page and table arguments given as names become the id of the one
    /// page or table with that name ([`Coda::page_id`], [`Coda::table_id`]):
    /// Coda would use an arbitrary one when several share it, for reads as
    /// for writes. A write always checks; a read takes an id-shaped value
    /// as the id.
    async fn names_to_ids(
        &self,
        args: &mut rmcp::model::JsonObject,
        write: bool,
    ) -> Result<(), ToolError> {
        let doc = ["docId", "doc_id"]
            .iter()
            .find_map(|k| args.get(*k).and_then(Value::as_str));
        let Some(Ok(d)) = doc.map(crate::ids::doc_id) else {
            // No doc (or a bad one): the tool reports it.
            return Ok(());
        };
        let dl = self.coda.deadline();
        for key in ["pageIdOrName", "page_id_or_name"] {
            if let Some(Value::String(raw)) = args.get(key)
                && !raw.trim().is_empty()
            {
                let id = self.coda.page_id(&d, raw, key, write, dl).await?;
                args.insert(key.to_owned(), Value::String(id));
            }
        }
        // A new page's parent: a write, so always checked.
        if let Some(Value::String(raw)) = args.get("parentPageId")
            && !raw.trim().is_empty()
        {
            let id = self.coda.page_id(&d, raw, "parentPageId", true, dl).await?;
            args.insert("parentPageId".to_owned(), Value::String(id));
        }
        for key in ["tableIdOrName", "table_id_or_name"] {
            if let Some(Value::String(raw)) = args.get(key)
                && !raw.trim().is_empty()
            {
                let id = self.coda.table_id(&d, raw, key, write, dl).await?;
                args.insert(key.to_owned(), Value::String(id));
            }
        }
        Ok(())
    }

    /// With `--docs`, a doc listing shows only allowed docs.
    fn filter_doc_list(&self, tool: &str, result: &mut CallToolResult) {
        let (Some(allowed), "coda_list_documents") = (&self.coda.cfg.docs, tool) else {
            return;
        };
        let Some(v) = result.structured_content.as_mut() else {
            return;
        };
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            items.retain(|d| {
                d.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| allowed.iter().any(|a| a == id))
            });
            let n = items.len();
            v["count"] = n.into();
        }
        let text = if self.coda.cfg.full_text {
            v.to_string()
        } else {
            super::tools::summary(v)
        };
        result.content = vec![ContentBlock::text(text)];
    }
}

const INSTRUCTIONS: &str = "Tools for the Coda API. docId, and page, table and row arguments, accept ids, names or Coda browser URLs. \
Lists page: pass nextPageToken back as pageToken with the same arguments, or set fetchAll; results stop at a size budget and say how to continue. \
Writes are asynchronous: they return a requestId; pass wait=true (or call coda_get_mutation_status) to know when they are applied, \
verify=true to re-read what was written. Row filter syntax and value formats: the coda://guide/rows resource or the coda_rows_guide prompt; \
a doc's pages, tables and columns in one read: coda://docs/{docId}/schema.";

/// Runs a request's handler; a panic in it (a bug) answers the request
/// with an internal error. Unanswered, the client would wait for ever,
/// and the request would keep its place under `--max-pending-requests`
/// (given back only when its answer is written), so a few such requests
/// would stop the server from reading stdin at all.
async fn unless_panicked<T>(
    what: &'static str,
    handler: impl std::future::Future<Output = Result<T, ErrorData>>,
) -> Result<T, ErrorData> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::error!(
                request = what,
                "a request's handler panicked; it is answered with an internal error"
            );
            Err(ErrorData::internal_error(
                "coda-mcp failed while handling this request (a bug: its log has the details)",
                None,
            ))
        }
    }
}

impl ServerHandler for CodaServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("coda-mcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut request = request;
        let name = request.name.to_string();
        let ctx = CallContext {
            progress: context
                .meta
                .get_progress_token()
                .map(|t| (t, context.peer.clone())),
            steps: AtomicU64::new(0),
            full_text: self.coda.cfg.full_text,
            max_result_bytes: self.coda.cfg.max_result_bytes,
            deadline: self.coda.cfg.deadline_from(std::time::Instant::now()),
            write: self.is_write(&name),
            write_sent: Arc::new(AtomicBool::new(false)),
            finishing: tokio_util::sync::CancellationToken::new(),
            kept: Default::default(),
        };
        let finishing = ctx.finishing.clone();
        let cancelled = context.ct.clone();
        let write = ctx.write;
        let sent = ctx.write_sent.clone();
        // The process waits for a write call that sent a write before it
        // exits (`crate::shutdown`): taken before the call can send one.
        let _tracked = write.then(|| self.shutdown.track_write());
        let _call = self.shutdown.track_call();
        // URL and name resolution run inside the call, under its deadline.
        let run = unless_panicked(
            "tools/call",
            call::scope(ctx, async move {
                if let Some(args) = request.arguments.as_mut() {
                    let resolved = match self.resolve_urls(args).await {
                        Ok(()) => self.names_to_ids(args, write).await,
                        other => other,
                    };
                    if let Err(e) = resolved {
                        return Ok(
                            CallToolResult::error(vec![ContentBlock::text(e.call_text())]).into(),
                        );
                    }
                }
                let tcc = ToolCallContext::new(self.coda.as_ref(), request, context);
                self.tool_router.call(tcc).await
            }),
        );
        let mut run = std::pin::pin!(run);
        // Dropping the tool's future stops it between Coda requests; a
        // request already sent may still be applied by Coda.
        let shutdown = tokio::select! {
            r = &mut run => Ok(r?),
            _ = cancelled.cancelled() => Err(self.shutdown.stopping()),
            _ = self.shutdown.stopped() => Err(true),
        };
        let mut out = match shutdown {
            Ok(out) => out,
            // The stop (stdin's end past rmcp's drain, or a signal) and a
            // write of this call is out: it runs to its end, within its
            // deadline, so Coda is not left with half of it. The process
            // waits for it (`_tracked`); its answer may find nobody.
            // (`sent` cannot change here: the call is not being polled.)
            Err(true) if write && sent.load(Ordering::Relaxed) => {
                tracing::info!(
                    tool = %name,
                    "let a write call finish at shutdown: it sent a write to Coda"
                );
                // Its writes go on; waiting for Coda to apply them stops.
                finishing.cancel();
                let out = run.await?;
                let failed = match &out {
                    CallToolResponse::Complete(r) => r.is_error == Some(true),
                    _ => false,
                };
                tracing::info!(tool = %name, failed, "finish a write call at shutdown");
                out
            }
            Err(at_shutdown) => {
                let why = if at_shutdown {
                    // Nobody will read an answer, but the log must say
                    // what was cut short.
                    tracing::warn!(
                        tool = %name,
                        write,
                        "stop a tool call at shutdown: it did not finish in time and sent no write to Coda"
                    );
                    "stopped at shutdown"
                } else if write && sent.load(Ordering::Relaxed) {
                    // Its answer, which says so, goes to nobody: the log
                    // is where an operator learns it.
                    tracing::warn!(
                        tool = %name,
                        "tool call cancelled by the client after it sent a write to Coda: what was sent may be applied or not"
                    );
                    "cancelled by the client"
                } else {
                    tracing::info!(
                        tool = %name,
                        write,
                        "tool call cancelled by the client: it sent no write to Coda"
                    );
                    "cancelled by the client"
                };
                let tail = if write && !sent.load(Ordering::Relaxed) {
                    "the write was NOT sent to Coda, so it was NOT applied"
                } else {
                    "a write already sent to Coda may still be applied"
                };
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "{why}; {tail}"
                ))])
                .into());
            }
        };
        if let CallToolResponse::Complete(r) = &mut out {
            self.filter_doc_list(&name, r);
        }
        Ok(out)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(crate::resources::list())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(crate::resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        // A doc's schema takes many Coda reads: a cancelled read stops
        // between them, as a tool call does. rmcp sends no answer to a
        // cancelled request, and the stdio front gives its place back, so
        // one left running was work nobody waits for, and unbounded.
        // Run as a read-only call: its deadline, and above all the rule
        // that a reader keeping room never waits for more (its tables
        // and pages are kept while their columns are read; outside a
        // call, such a column read waited for room only it held).
        let ctx = CallContext {
            progress: None,
            steps: AtomicU64::new(0),
            full_text: false,
            max_result_bytes: self.coda.cfg.max_result_bytes,
            deadline: self.coda.cfg.deadline_from(std::time::Instant::now()),
            write: false,
            write_sent: Arc::new(AtomicBool::new(false)),
            finishing: tokio_util::sync::CancellationToken::new(),
            kept: Default::default(),
        };
        let read = unless_panicked(
            "resources/read",
            call::scope(ctx, crate::resources::read(&self.coda, &request.uri)),
        );
        tokio::select! {
            r = read => r.map(Into::into),
            _ = context.ct.cancelled() => {
                tracing::info!("resource read cancelled by the client");
                Err(ErrorData::internal_error("cancelled by the client", None))
            }
            // A signal: reads are not waited for (`crate::shutdown`).
            _ = self.shutdown.stopped() => {
                Err(ErrorData::internal_error("stopped at shutdown", None))
            }
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(crate::resources::prompts())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        crate::resources::prompt(&request.name).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_with_an_internal_error() {
        let answered = unless_panicked("test", async {
            if std::hint::black_box(true) {
                panic!("a bug");
            }
            Ok::<u8, ErrorData>(1)
        })
        .await;
        let e = answered.expect_err("an error, not a panic passed on");
        assert_eq!(e.code, rmcp::model::ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            unless_panicked("test", async { Ok::<u8, ErrorData>(7) })
                .await
                .unwrap(),
            7
        );
    }
}
