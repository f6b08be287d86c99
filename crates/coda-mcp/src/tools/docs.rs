//! Toolset `docs`: list, get, create, update, delete docs and the doc
//! statistics composite (which pages through every list it counts).

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ToolError;
use super::{
    COMPOSITE_CAP, Coda, ListOutput, MutationOutput, Object, PageArgs, Reply, input, output,
    required, run,
};
use crate::client::ApiRequest;
use crate::ids::doc_id;
use crate::ratelimit::RequestClass;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDocumentsParams {
    /// Search term matched against doc names.
    pub query: Option<String>,
    /// Only docs owned by the token's user.
    pub is_owner: Option<bool>,
    /// Only published docs.
    pub is_published: Option<bool>,
    /// Only starred docs.
    pub is_starred: Option<bool>,
    /// Only docs in the gallery.
    pub in_gallery: Option<bool>,
    /// Only copies of this doc id.
    pub source_doc: Option<String>,
    /// Only docs in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only docs in this folder (fl-…).
    pub folder_id: Option<String>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocParams {
    /// Doc id (e.g. AbCDeFGH) or a Coda URL of the doc.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteDocumentParams {
    /// Doc id or Coda URL of the doc to delete.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Must be true: deleting a doc cannot be undone through the API.
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitialPage {
    /// Name of the first page.
    pub name: Option<String>,
    /// Subtitle of the first page.
    pub subtitle: Option<String>,
    /// Content of the first page.
    pub content: Option<String>,
    /// Format of `content`: markdown (default) or html.
    pub format: Option<ContentFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ContentFormat {
    Markdown,
    Html,
}

impl ContentFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentFormat::Markdown => "markdown",
            ContentFormat::Html => "html",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateDocumentParams {
    /// Title of the new doc.
    pub title: String,
    /// Copy this doc (id or URL) instead of starting empty.
    pub source_doc: Option<String>,
    /// Folder to create the doc in (fl-…).
    pub folder_id: Option<String>,
    /// Time zone, e.g. America/Los_Angeles.
    pub timezone: Option<String>,
    /// First page of the doc (ignored when copying).
    pub initial_page: Option<InitialPage>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDocumentParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// New title.
    pub title: Option<String>,
    /// New icon name (e.g. "rocket").
    pub icon_name: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub pages: usize,
    pub tables: usize,
    pub views: usize,
    pub formulas: usize,
    pub controls: usize,
}

/// A table or view in the stats breakdown.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableBrief {
    #[schemars(with = "Option<String>")]
    pub name: Value,
    /// table or view (Coda's tableType).
    #[schemars(with = "Option<String>")]
    pub r#type: Value,
    #[schemars(with = "Option<String>")]
    pub id: Value,
}

/// The doc itself, as coda-enhanced's stats reported it (plus ownerName and browserLink).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocBrief {
    #[schemars(with = "Option<String>")]
    pub id: Value,
    #[schemars(with = "Option<String>")]
    pub name: Value,
    #[schemars(with = "Option<String>")]
    pub owner: Value,
    #[schemars(with = "Option<String>")]
    pub owner_name: Value,
    #[schemars(with = "Option<String>")]
    pub created_at: Value,
    #[schemars(with = "Option<String>")]
    pub updated_at: Value,
    #[schemars(with = "Option<String>")]
    pub browser_link: Value,
    /// Coda's own size figures (totalRowCount, pageCount…), when reported.
    #[schemars(with = "Option<super::Object>")]
    pub doc_size: Value,
}

/// Names, as coda-enhanced's stats reported them.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Breakdown {
    /// Every table and view.
    pub table_names: Vec<TableBrief>,
    /// First 10 page names.
    #[schemars(with = "Vec<String>")]
    pub page_names: Vec<Value>,
    /// First 10 formula names.
    #[schemars(with = "Vec<String>")]
    pub formula_names: Vec<Value>,
}

/// The shape of coda-enhanced's stats (`document`, `counts`, `breakdown`),
/// with exact counts.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentStats {
    pub document: DocBrief,
    /// Exact counts: every list is paged to the end.
    pub counts: Counts,
    /// True if a list had more than 10000 items and counting stopped there.
    pub counts_capped: bool,
    pub breakdown: Breakdown,
    /// Set when tableNames lists only some tables, to stay within the result budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn list_documents_request(p: &ListDocumentsParams) -> ToolResultReq {
    let source = p.source_doc.as_deref().map(doc_id).transpose()?;
    Ok(ApiRequest::get(&["docs"])
        .class(RequestClass::ListDocs)
        .query_opt("query", p.query.as_ref())
        .query_opt("isOwner", p.is_owner)
        .query_opt("isPublished", p.is_published)
        .query_opt("isStarred", p.is_starred)
        .query_opt("inGallery", p.in_gallery)
        .query_opt("sourceDoc", source)
        .query_opt("workspaceId", p.workspace_id.as_ref())
        .query_opt("folderId", p.folder_id.as_ref()))
}

type ToolResultReq = Result<ApiRequest, ToolError>;

pub(crate) fn canvas_content(content: Option<&str>, format: Option<ContentFormat>) -> Value {
    // An empty canvas is sent as one space: Coda rejects empty content.
    let content = content.filter(|c| !c.is_empty()).unwrap_or(" ");
    json!({
        "type": "canvas",
        "canvasContent": {"format": format.unwrap_or(ContentFormat::Markdown).as_str(), "content": content}
    })
}

#[tool_router(router = docs_router, vis = "pub(crate)")]
impl Coda {
    /// List docs the token can see. Filters: query (name search), isOwner, isPublished, isStarred, inGallery, sourceDoc, workspaceId, folderId. Pages with limit/pageToken; fetchAll gathers everything.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListDocumentsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_documents(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListDocumentsParams| async move {
            let req = list_documents_request(&p)?;
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Get a doc's metadata: name, owner, workspace, folder, dates, docSize.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_document(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: DocParams| async move {
            let d = doc_id(&p.doc_id)?;
            c.object(ApiRequest::get(&["docs", &d])).await
        })
        .await
    }

    /// Create a doc, empty or as a copy of sourceDoc, optionally in a folder, with an initial page (markdown or html).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<CreateDocumentParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_create_document(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: CreateDocumentParams| async move {
            required("title", &p.title)?;
            let mut body = json!({"title": p.title});
            if let Some(s) = &p.source_doc {
                body["sourceDoc"] = json!(
                    doc_id(s)
                        .map_err(|_| ToolError::arg("sourceDoc", "expected a doc id or URL"))?
                );
            }
            if let Some(f) = &p.folder_id {
                body["folderId"] = json!(f);
            }
            if let Some(tz) = &p.timezone {
                body["timezone"] = json!(tz);
            }
            if let Some(ip) = &p.initial_page {
                let mut page =
                    json!({"pageContent": canvas_content(ip.content.as_deref(), ip.format)});
                if let Some(n) = &ip.name {
                    page["name"] = json!(n);
                }
                if let Some(s) = &ip.subtitle {
                    page["subtitle"] = json!(s);
                }
                body["initialPage"] = page;
            }
            let req = ApiRequest::new(Method::POST, &["docs"]).body(body);
            c.object(req).await
        })
        .await
    }

    /// Change a doc's title and/or icon.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpdateDocumentParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_update_document(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: UpdateDocumentParams| async move {
            let d = doc_id(&p.doc_id)?;
            if p.title.is_none() && p.icon_name.is_none() {
                return Err(ToolError::arg("title", "give title and/or iconName"));
            }
            let mut body = json!({});
            if let Some(t) = &p.title {
                body["title"] = json!(t);
            }
            if let Some(i) = &p.icon_name {
                body["iconName"] = json!(i);
            }
            let req = ApiRequest::new(Method::PATCH, &["docs", &d])
                .replayable()
                .body(body);
            c.direct_write_reply(req).await
        })
        .await
    }

    /// Delete a doc permanently. Requires confirm=true.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DeleteDocumentParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_delete_document(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: DeleteDocumentParams| async move {
            let d = doc_id(&p.doc_id)?;
            if !p.confirm {
                return Err(ToolError::arg("confirm", "must be true to delete a doc"));
            }
            let req = ApiRequest::new(Method::DELETE, &["docs", &d]);
            c.direct_write_reply(req).await
        })
        .await
    }

    /// Overview of a doc: owner, dates, size, exact counts of pages, tables, views, formulas and controls (every list is paged to the end), page and formula names, every table and view.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocParams>(),
        output_schema = output::<DocumentStats>()
    )]
    async fn coda_get_document_stats(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DocParams| async move {
            let d = doc_id(&p.doc_id)?;
            let dl = c.deadline();
            let lim = |r: ApiRequest| r.query("limit", 100);
            let (doc, pages, tables, formulas, controls) = tokio::try_join!(
                c.call(ApiRequest::get(&["docs", &d]), dl),
                c.list_all(
                    lim(ApiRequest::get(&["docs", &d, "pages"])),
                    COMPOSITE_CAP,
                    dl
                ),
                c.list_all(
                    lim(ApiRequest::get(&["docs", &d, "tables"])),
                    COMPOSITE_CAP,
                    dl
                ),
                c.list_all(
                    lim(ApiRequest::get(&["docs", &d, "formulas"])),
                    COMPOSITE_CAP,
                    dl
                ),
                c.list_all(
                    lim(ApiRequest::get(&["docs", &d, "controls"])),
                    COMPOSITE_CAP,
                    dl
                ),
            )?;
            let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
            let views = tables
                .0
                .iter()
                .filter(|t| t.get("tableType").and_then(Value::as_str) == Some("view"))
                .count();
            let names = |list: &[Value]| list.iter().take(10).map(|v| field(v, "name")).collect();
            // Every table and view, as long as the result stays within the
            // budget (the rest of the result is small: counts, 10 names each).
            let room = c.cfg.max_result_bytes.saturating_sub(4096);
            let mut used = 0;
            let table_names: Vec<TableBrief> = tables
                .0
                .iter()
                .map(|t| TableBrief {
                    name: field(t, "name"),
                    r#type: field(t, "tableType"),
                    id: field(t, "id"),
                })
                .take_while(|b| {
                    used += serde_json::to_string(b).map_or(0, |t| t.len() + 1);
                    used <= room
                })
                .collect();
            Reply::json(DocumentStats {
                document: DocBrief {
                    id: field(&doc, "id"),
                    name: field(&doc, "name"),
                    owner: field(&doc, "owner"),
                    owner_name: field(&doc, "ownerName"),
                    created_at: field(&doc, "createdAt"),
                    updated_at: field(&doc, "updatedAt"),
                    browser_link: field(&doc, "browserLink"),
                    doc_size: field(&doc, "docSize"),
                },
                counts: Counts {
                    pages: pages.0.len(),
                    tables: tables.0.len() - views,
                    views,
                    formulas: formulas.0.len(),
                    controls: controls.0.len(),
                },
                counts_capped: pages.1 || tables.1 || formulas.1 || controls.1,
                note: (table_names.len() < tables.0.len()).then(|| {
                    format!(
                        "tableNames lists {} of {} tables and views, to stay within the result budget ({} bytes): page through coda_list_tables for the rest",
                        table_names.len(),
                        tables.0.len(),
                        c.cfg.max_result_bytes
                    )
                }),
                breakdown: Breakdown {
                    table_names,
                    page_names: names(&pages.0),
                    formula_names: names(&formulas.0),
                },
            })
        })
        .await
    }
}
