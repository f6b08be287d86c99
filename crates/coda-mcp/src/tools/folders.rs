//! Toolset `folders`: list, get, create, update and delete folders.

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::error::ToolError;
use super::{Coda, ListOutput, MutationOutput, Object, PageArgs, input, output, required, run};
use crate::client::ApiRequest;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListFoldersParams {
    /// Only folders in this workspace (ws-…).
    pub workspace_id: Option<String>,
    /// Only starred folders.
    pub is_starred: Option<bool>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FolderParams {
    /// Folder id (fl-…).
    pub folder_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateFolderParams {
    /// Name of the folder.
    pub name: String,
    /// Workspace to create it in (ws-…).
    pub workspace_id: String,
    /// Optional description.
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFolderParams {
    /// Folder id (fl-…).
    pub folder_id: String,
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
}

fn folder_id(raw: &str) -> Result<&str, ToolError> {
    let id = raw.trim();
    if id.is_empty() || id.contains('/') {
        return Err(ToolError::arg(
            "folderId",
            "expected a folder id like fl-1Ab234",
        ));
    }
    Ok(id)
}

#[tool_router(router = folders_router, vis = "pub(crate)")]
impl Coda {
    /// List folders the token can see, optionally in one workspace. Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListFoldersParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_folders(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListFoldersParams| async move {
            let req = ApiRequest::get(&["folders"])
                .query_opt("workspaceId", p.workspace_id.as_ref())
                .query_opt("isStarred", p.is_starred);
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Get one folder.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<FolderParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_folder(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: FolderParams| async move {
            c.object(ApiRequest::get(&["folders", folder_id(&p.folder_id)?]))
                .await
        })
        .await
    }

    /// Create a folder in a workspace.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<CreateFolderParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_create_folder(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: CreateFolderParams| async move {
            required("name", &p.name)?;
            let mut body = json!({"name": p.name, "workspaceId": p.workspace_id});
            if let Some(d) = p.description {
                body["description"] = json!(d);
            }
            c.object(ApiRequest::new(Method::POST, &["folders"]).body(body))
                .await
        })
        .await
    }

    /// Rename a folder or change its description.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpdateFolderParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_update_folder(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: UpdateFolderParams| async move {
            let id = folder_id(&p.folder_id)?;
            if p.name.is_none() && p.description.is_none() {
                return Err(ToolError::arg("name", "give name and/or description"));
            }
            let mut body = json!({});
            if let Some(n) = &p.name {
                body["name"] = json!(n);
            }
            if let Some(d) = &p.description {
                body["description"] = json!(d);
            }
            c.object(
                ApiRequest::new(Method::PATCH, &["folders", id])
                    .replayable()
                    .body(body),
            )
            .await
        })
        .await
    }

    /// Delete an empty folder.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<FolderParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_delete_folder(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: FolderParams| async move {
            let req = ApiRequest::new(Method::DELETE, &["folders", folder_id(&p.folder_id)?]);
            c.direct_write_reply(req).await
        })
        .await
    }
}
