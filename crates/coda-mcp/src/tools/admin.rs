//! Toolset `admin` (opt-in): doc, page and Pack analytics, workspace members
//! and roles. Analytics requests use their own rate-limit class.

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::account::NoParams;
use super::{ListOutput, Object, PageArgs, Reply, ToolError, doc_id, input, output, run};
use crate::client::ApiRequest;
use crate::ratelimit::RequestClass;
use crate::server::CodaServer;

/// Filters shared by the analytics lists; each is sent only when given.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsFilters {
    /// Start date, YYYY-MM-DD.
    pub since_date: Option<String>,
    /// End date, YYYY-MM-DD.
    pub until_date: Option<String>,
    /// Only this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only published (true) or unpublished (false).
    pub is_published: Option<bool>,
    /// Name search.
    pub query: Option<String>,
    /// daily or cumulative.
    pub scale: Option<String>,
    /// Sort field, e.g. date, views, copies.
    pub order_by: Option<String>,
    /// ascending or descending.
    pub direction: Option<String>,
}

impl AnalyticsFilters {
    fn apply(&self, req: ApiRequest) -> ApiRequest {
        req.class(RequestClass::Analytics)
            .query_opt("sinceDate", self.since_date.as_ref())
            .query_opt("untilDate", self.until_date.as_ref())
            .query_opt("workspaceId", self.workspace_id.as_ref())
            .query_opt("isPublished", self.is_published)
            .query_opt("query", self.query.as_ref())
            .query_opt("scale", self.scale.as_ref())
            .query_opt("orderBy", self.order_by.as_ref())
            .query_opt("direction", self.direction.as_ref())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocAnalyticsParams {
    /// Only these doc ids.
    pub doc_ids: Option<Vec<String>>,
    #[serde(flatten)]
    pub filters: AnalyticsFilters,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageAnalyticsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    pub since_date: Option<String>,
    pub until_date: Option<String>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackAnalyticsParams {
    /// Only these Pack ids.
    pub pack_ids: Option<Vec<u64>>,
    #[serde(flatten)]
    pub filters: AnalyticsFilters,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackFormulaAnalyticsParams {
    /// Pack id.
    pub pack_id: u64,
    #[serde(flatten)]
    pub filters: AnalyticsFilters,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceParams {
    /// Workspace id (ws-…).
    pub workspace_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceMembersParams {
    /// Workspace id (ws-…).
    pub workspace_id: String,
    /// Only these roles, e.g. ["Admin","DocMaker","Editor"].
    pub included_roles: Option<Vec<String>>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRoleParams {
    /// Workspace id (ws-…).
    pub workspace_id: String,
    /// Email of the member.
    pub email: String,
    /// New role: Admin, DocMaker or Editor.
    pub new_role: String,
}

fn ws(id: &str) -> Result<&str, ToolError> {
    let id = id.trim();
    if id.is_empty() || id.contains('/') {
        return Err(ToolError::arg(
            "workspaceId",
            "expected a workspace id like ws-1Ab234",
        ));
    }
    Ok(id)
}

#[tool_router(router = admin_router, vis = "pub(crate)")]
impl CodaServer {
    /// Doc analytics (views, copies, likes, sessions) per doc over a date range. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_doc_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: DocAnalyticsParams| async move {
            let req = p
                .filters
                .apply(ApiRequest::get(&["analytics", "docs"]))
                .query_opt("docIds", p.doc_ids.map(|v| v.join(",")));
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// Totals of doc analytics over a date range.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<AnalyticsFilters>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_doc_analytics_summary(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: AnalyticsFilters| async move {
            c.object(
                p.apply(ApiRequest::get(&["analytics", "docs", "summary"])),
                c.deadline(),
            )
            .await
        })
        .await
    }

    /// Page-level analytics of one doc. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PageAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_page_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: PageAnalyticsParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = ApiRequest::get(&["analytics", "docs", &d, "pages"])
                .class(RequestClass::Analytics)
                .query_opt("sinceDate", p.since_date.as_ref())
                .query_opt("untilDate", p.until_date.as_ref());
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// Pack analytics (installs, invocations) per Pack. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PackAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_pack_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: PackAnalyticsParams| async move {
            let ids = p
                .pack_ids
                .map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
            let req = p
                .filters
                .apply(ApiRequest::get(&["analytics", "packs"]))
                .query_opt("packIds", ids);
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// Totals of Pack analytics.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<AnalyticsFilters>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_pack_analytics_summary(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: AnalyticsFilters| async move {
            c.object(
                p.apply(ApiRequest::get(&["analytics", "packs", "summary"])),
                c.deadline(),
            )
            .await
        })
        .await
    }

    /// Analytics per formula of one Pack. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PackFormulaAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_pack_formula_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: PackFormulaAnalyticsParams| async move {
            let id = p.pack_id.to_string();
            let req = p
                .filters
                .apply(ApiRequest::get(&["analytics", "packs", &id, "formulas"]));
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// When analytics were last updated.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<NoParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_analytics_updated(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |_: NoParams| async move {
            let req = ApiRequest::get(&["analytics", "updated"]).class(RequestClass::Analytics);
            c.object(req, c.deadline()).await
        })
        .await
    }

    /// List a workspace's members and their roles. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<WorkspaceMembersParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_workspace_members(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: WorkspaceMembersParams| async move {
            let req = ApiRequest::get(&["workspaces", ws(&p.workspace_id)?, "users"])
                .query_opt("includedRoles", p.included_roles.map(|r| r.join(",")));
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// Role activity of a workspace (active admins, doc makers, editors).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<WorkspaceParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_list_workspace_role_activity(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: WorkspaceParams| async move {
            c.object(
                ApiRequest::get(&["workspaces", ws(&p.workspace_id)?, "roles"]),
                c.deadline(),
            )
            .await
        })
        .await
    }

    /// Change a workspace member's role (Admin, DocMaker, Editor).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ChangeRoleParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_change_user_role(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: ChangeRoleParams| async move {
            if !p.email.contains('@') {
                return Err(ToolError::arg("email", "must be an email address"));
            }
            let req = ApiRequest::new(
                Method::POST,
                &["workspaces", ws(&p.workspace_id)?, "users", "role"],
            )
            .body(json!({"email": p.email, "newRole": p.new_role}));
            c.object(req, c.deadline()).await
        })
        .await
    }
}
