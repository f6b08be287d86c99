//! Toolset `admin` (opt-in): doc, page and Pack analytics, workspace members
//! and roles. Analytics requests use their own rate-limit class.

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde_json::json;

use super::account::NoParams;
use super::error::ToolError;
use super::{Coda, ListOutput, Object, PageArgs, input, output, run};
use crate::client::ApiRequest;
use crate::ids::doc_id;
use crate::ratelimit::RequestClass;

// Values Coda accepts, from its OpenAPI spec (AnalyticsScale, SortDirection,
// the *OrderBy enums, PackFormulaType, WorkspaceUserRole).
const SCALES: &[&str] = &["daily", "cumulative"];
const DIRECTIONS: &[&str] = &["ascending", "descending"];
#[rustfmt::skip]
const DOC_ORDER: &[&str] = &[
    "date", "docId", "title", "createdAt", "publishedAt", "likes", "copies", "views",
    "sessionsDesktop", "sessionsMobile", "sessionsOther", "totalSessions", "aiCreditsChat",
    "aiCreditsBlock", "aiCreditsColumn", "aiCreditsAssistant", "aiCreditsReviewer", "aiCredits",
];
#[rustfmt::skip]
const PACK_ORDER: &[&str] = &[
    "date", "packId", "name", "createdAt", "docInstalls", "workspaceInstalls",
    "numFormulaInvocations", "numActionInvocations", "numSyncInvocations",
    "numMetadataInvocations", "docsActivelyUsing", "docsActivelyUsing7Day",
    "docsActivelyUsing30Day", "docsActivelyUsing90Day", "docsActivelyUsingAllTime",
    "workspacesActivelyUsing", "workspacesActivelyUsing7Day", "workspacesActivelyUsing30Day",
    "workspacesActivelyUsing90Day", "workspacesActivelyUsingAllTime",
    "workspacesWithActiveSubscriptions", "workspacesWithSuccessfulTrials", "revenueUsd",
];
#[rustfmt::skip]
const FORMULA_ORDER: &[&str] = &[
    "date", "formulaName", "formulaType", "formulaInvocations", "medianLatencyMs",
    "medianResponseSizeBytes", "errors", "docsActivelyUsing", "docsActivelyUsing7Day",
    "docsActivelyUsing30Day", "docsActivelyUsing90Day", "docsActivelyUsingAllTime",
    "workspacesActivelyUsing", "workspacesActivelyUsing7Day", "workspacesActivelyUsing30Day",
    "workspacesActivelyUsing90Day", "workspacesActivelyUsingAllTime",
];
const FORMULA_TYPES: &[&str] = &["action", "formula", "sync", "metadata"];
const ROLES: &[&str] = &["Admin", "DocMaker", "Editor"];

fn one_of(values: &[&str]) -> Schema {
    json_schema!({"type": "string", "enum": values})
}
fn scale(_: &mut SchemaGenerator) -> Schema {
    one_of(SCALES)
}
fn direction(_: &mut SchemaGenerator) -> Schema {
    one_of(DIRECTIONS)
}
fn doc_order(_: &mut SchemaGenerator) -> Schema {
    one_of(DOC_ORDER)
}
fn pack_order(_: &mut SchemaGenerator) -> Schema {
    one_of(PACK_ORDER)
}
fn formula_order(_: &mut SchemaGenerator) -> Schema {
    one_of(FORMULA_ORDER)
}
fn formula_types(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"type": "string", "enum": FORMULA_TYPES}})
}
fn role(_: &mut SchemaGenerator) -> Schema {
    one_of(ROLES)
}
fn roles(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"type": "string", "enum": ROLES}})
}

/// `value` (the argument `name`) must be one of `allowed`: the schema says
/// so, and a model may still send something else.
fn check(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ToolError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(ToolError::arg(
            name,
            format!("must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// Arrays go to Coda comma-separated (`explode: false` in its spec).
fn joined<T: ToString>(v: Option<Vec<T>>) -> Option<String> {
    v.filter(|v| !v.is_empty())
        .map(|v| v.iter().map(T::to_string).collect::<Vec<_>>().join(","))
}

/// Date range: every analytics endpoint takes it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DateRange {
    /// Start date, YYYY-MM-DD.
    pub since_date: Option<String>,
    /// End date, YYYY-MM-DD.
    pub until_date: Option<String>,
}

/// Ordering of the analytics lists; `orderBy` values differ per list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ordering {
    /// daily (default) or cumulative.
    #[serde(default)]
    #[schemars(schema_with = "scale")]
    pub scale: Option<String>,
    /// ascending or descending.
    #[serde(default)]
    #[schemars(schema_with = "direction")]
    pub direction: Option<String>,
}

impl DateRange {
    fn apply(&self, req: ApiRequest) -> ApiRequest {
        req.class(RequestClass::Analytics)
            .query_opt("sinceDate", self.since_date.as_ref())
            .query_opt("untilDate", self.until_date.as_ref())
    }
}

impl Ordering {
    fn apply(
        &self,
        req: ApiRequest,
        order_by: Option<&String>,
        allowed: &[&str],
    ) -> Result<ApiRequest, ToolError> {
        check("scale", self.scale.as_deref(), SCALES)?;
        check("direction", self.direction.as_deref(), DIRECTIONS)?;
        check("orderBy", order_by.map(String::as_str), allowed)?;
        Ok(req
            .query_opt("scale", self.scale.as_ref())
            .query_opt("orderBy", order_by)
            .query_opt("direction", self.direction.as_ref()))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocAnalyticsParams {
    /// Only these doc ids.
    pub doc_ids: Option<Vec<String>>,
    /// Only docs in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only published (true) or unpublished (false) docs.
    pub is_published: Option<bool>,
    /// Search term matched against doc titles.
    pub query: Option<String>,
    /// Sort field.
    #[serde(default)]
    #[schemars(schema_with = "doc_order")]
    pub order_by: Option<String>,
    #[serde(flatten)]
    pub dates: DateRange,
    #[serde(flatten)]
    pub ordering: Ordering,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocAnalyticsSummaryParams {
    /// Only docs in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only published (true) or unpublished (false) docs.
    pub is_published: Option<bool>,
    #[serde(flatten)]
    pub dates: DateRange,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageAnalyticsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    #[serde(flatten)]
    pub dates: DateRange,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackAnalyticsParams {
    /// Only these Pack ids.
    pub pack_ids: Option<Vec<u64>>,
    /// Only Packs in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only published (true) or unpublished (false) Packs.
    pub is_published: Option<bool>,
    /// Search term matched against Pack names.
    pub query: Option<String>,
    /// Sort field.
    #[serde(default)]
    #[schemars(schema_with = "pack_order")]
    pub order_by: Option<String>,
    #[serde(flatten)]
    pub dates: DateRange,
    #[serde(flatten)]
    pub ordering: Ordering,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackAnalyticsSummaryParams {
    /// Only these Pack ids.
    pub pack_ids: Option<Vec<u64>>,
    /// Only Packs in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only published (true) or unpublished (false) Packs.
    pub is_published: Option<bool>,
    #[serde(flatten)]
    pub dates: DateRange,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackFormulaAnalyticsParams {
    /// Pack id.
    #[schemars(range(min = 1))]
    pub pack_id: u64,
    /// Only these formulas, by name.
    pub pack_formula_names: Option<Vec<String>>,
    /// Only these kinds of formula.
    #[serde(default)]
    #[schemars(schema_with = "formula_types")]
    pub pack_formula_types: Option<Vec<String>>,
    /// Sort field.
    #[serde(default)]
    #[schemars(schema_with = "formula_order")]
    pub order_by: Option<String>,
    #[serde(flatten)]
    pub dates: DateRange,
    #[serde(flatten)]
    pub ordering: Ordering,
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
    /// Only these roles.
    #[serde(default)]
    #[schemars(schema_with = "roles")]
    pub included_roles: Option<Vec<String>>,
    /// Token from a previous call's nextPageToken (Coda sets the page size of this list).
    pub page_token: Option<String>,
    /// Follow nextPageToken and return every member, up to maxItems.
    #[serde(default)]
    pub fetch_all: bool,
    /// fetchAll stops once it has at least this many members (default 1000, at most 10000) and returns nextPageToken to continue.
    pub max_items: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRoleParams {
    /// Workspace id (ws-…).
    pub workspace_id: String,
    /// Email of the member.
    pub email: String,
    /// New role.
    #[schemars(schema_with = "role")]
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
impl Coda {
    /// Doc analytics (views, copies, likes, sessions) per doc over a date range. Paged: limit up to 5000, Coda's maximum (a larger one asks for 5000).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_doc_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DocAnalyticsParams| async move {
            let req = p.dates.apply(ApiRequest::get(&["analytics", "docs"]));
            let req = p
                .ordering
                .apply(req, p.order_by.as_ref(), DOC_ORDER)?
                .query_opt("docIds", joined(p.doc_ids))
                .query_opt("workspaceId", p.workspace_id.as_ref())
                .query_opt("isPublished", p.is_published)
                .query_opt("query", p.query.as_ref());
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Totals of doc analytics over a date range.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocAnalyticsSummaryParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_doc_analytics_summary(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DocAnalyticsSummaryParams| async move {
            let req = p
                .dates
                .apply(ApiRequest::get(&["analytics", "docs", "summary"]))
                .query_opt("workspaceId", p.workspace_id.as_ref())
                .query_opt("isPublished", p.is_published);
            c.object(req).await
        })
        .await
    }

    /// Page-level analytics of one doc. Paged: limit up to 5000, Coda's maximum (a larger one asks for 5000).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PageAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_page_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: PageAnalyticsParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = p
                .dates
                .apply(ApiRequest::get(&["analytics", "docs", &d, "pages"]));
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Pack analytics (installs, invocations) per Pack. Paged: limit up to 5000, Coda's maximum (a larger one asks for 5000).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PackAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_pack_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: PackAnalyticsParams| async move {
            let req = p.dates.apply(ApiRequest::get(&["analytics", "packs"]));
            let req = p
                .ordering
                .apply(req, p.order_by.as_ref(), PACK_ORDER)?
                .query_opt("packIds", joined(p.pack_ids))
                .query_opt("workspaceId", p.workspace_id.as_ref())
                .query_opt("isPublished", p.is_published)
                .query_opt("query", p.query.as_ref());
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Totals of Pack analytics.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PackAnalyticsSummaryParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_pack_analytics_summary(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: PackAnalyticsSummaryParams| async move {
            let req = p
                .dates
                .apply(ApiRequest::get(&["analytics", "packs", "summary"]))
                .query_opt("packIds", joined(p.pack_ids))
                .query_opt("workspaceId", p.workspace_id.as_ref())
                .query_opt("isPublished", p.is_published);
            c.object(req).await
        })
        .await
    }

    /// Analytics per formula of one Pack. Paged: limit up to 5000, Coda's maximum (a larger one asks for 5000).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PackFormulaAnalyticsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_pack_formula_analytics(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: PackFormulaAnalyticsParams| async move {
            if p.pack_id == 0 {
                return Err(ToolError::arg("packId", "must be at least 1"));
            }
            for t in p.pack_formula_types.iter().flatten() {
                check("packFormulaTypes", Some(t), FORMULA_TYPES)?;
            }
            let id = p.pack_id.to_string();
            let req = p
                .dates
                .apply(ApiRequest::get(&["analytics", "packs", &id, "formulas"]));
            let req = p
                .ordering
                .apply(req, p.order_by.as_ref(), FORMULA_ORDER)?
                .query_opt("packFormulaNames", joined(p.pack_formula_names))
                .query_opt("packFormulaTypes", joined(p.pack_formula_types));
            c.list_reply(req, &p.page).await
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
        let c = self;
        run(a, |_: NoParams| async move {
            let req = ApiRequest::get(&["analytics", "updated"]).class(RequestClass::Analytics);
            c.object(req).await
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
        let c = self;
        run(a, |p: WorkspaceMembersParams| async move {
            for r in p.included_roles.iter().flatten() {
                check("includedRoles", Some(r), ROLES)?;
            }
            let req = ApiRequest::get(&["workspaces", ws(&p.workspace_id)?, "users"])
                .query_opt("includedRoles", joined(p.included_roles));
            // This list takes no limit: Coda decides its page size.
            let page = PageArgs {
                page_token: p.page_token,
                fetch_all: p.fetch_all,
                max_items: p.max_items,
                ..PageArgs::default()
            };
            c.list_reply(req, &page).await
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
        let c = self;
        run(a, |p: WorkspaceParams| async move {
            c.object(ApiRequest::get(&[
                "workspaces",
                ws(&p.workspace_id)?,
                "roles",
            ]))
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
        let c = self;
        run(a, |p: ChangeRoleParams| async move {
            if !p.email.contains('@') {
                return Err(ToolError::arg("email", "must be an email address"));
            }
            check("newRole", Some(&p.new_role), ROLES)?;
            let req = ApiRequest::new(
                Method::POST,
                &["workspaces", ws(&p.workspace_id)?, "users", "role"],
            )
            .body(json!({"email": p.email, "newRole": p.new_role}));
            c.object(req).await
        })
        .await
    }
}
