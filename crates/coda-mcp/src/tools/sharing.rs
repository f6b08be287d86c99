//! Toolsets `sharing` (permissions, ACL settings, publishing) and
//! `automations` (webhook-triggered automation rules).

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::account::NoParams;
use super::docs::DocParams;
use super::error::ToolError;
use super::{Coda, ListOutput, MutationOutput, Object, PageArgs, input, output, required, run};
use crate::client::ApiRequest;
use crate::ids::doc_id;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    Readonly,
    Write,
    Comment,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListPermissionsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPrincipalsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Name or email fragment.
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddPermissionParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// readonly, write or comment.
    pub access: Access,
    /// Who gets access: {"type":"email","email":"a@b.com"}, {"type":"domain","domain":"b.com"}, {"type":"group","groupId":"…"}, {"type":"workspace","workspaceId":"ws-…"} or {"type":"anyone"}.
    pub principal: Object,
    /// Do not send the notification email.
    #[serde(default)]
    pub suppress_email: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletePermissionParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Permission id from coda_list_permissions.
    pub permission_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAclSettingsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    pub allow_editors_to_change_permissions: Option<bool>,
    pub allow_copying: Option<bool>,
    pub allow_viewers_to_request_editing: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PublishMode {
    View,
    Play,
    Edit,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// URL slug for the published doc.
    pub slug: Option<String>,
    /// Listed in the gallery and search engines.
    pub discoverable: Option<bool>,
    /// Require sign-in so the publisher earns credit.
    pub earn_credit: Option<bool>,
    /// Gallery category names (see coda_list_categories).
    pub category_names: Option<Vec<String>>,
    /// What readers can do: view, play or edit.
    pub mode: Option<PublishMode>,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAutomationParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Automation rule id (grid-auto-…), from the rule's webhook settings.
    pub rule_id: String,
    /// JSON payload handed to the rule (available to its steps).
    pub payload: Option<Object>,
    #[serde(default)]
    pub wait: bool,
}

#[tool_router(router = sharing_router, vis = "pub(crate)")]
impl Coda {
    /// Sharing metadata of a doc: whether the token's user can share, and with whom.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_sharing_metadata(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DocParams| async move {
            let d = doc_id(&p.doc_id)?;
            c.object(ApiRequest::get(&["docs", &d, "acl", "metadata"]))
                .await
        })
        .await
    }

    /// List who has access to a doc (permission id, access, principal). Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListPermissionsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_permissions(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListPermissionsParams| async move {
            let d = doc_id(&p.doc_id)?;
            c.list_reply(
                ApiRequest::get(&["docs", &d, "acl", "permissions"]),
                &p.page,
            )
            .await
        })
        .await
    }

    /// Find users and groups to share a doc with, by name or email fragment.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<SearchPrincipalsParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_search_principals(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: SearchPrincipalsParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("query", &p.query)?;
            let req = ApiRequest::get(&["docs", &d, "acl", "principals", "search"])
                .query("query", &p.query);
            c.object(req).await
        })
        .await
    }

    /// A doc's sharing settings (allowEditorsToChangePermissions, allowCopying, allowViewersToRequestEditing).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_acl_settings(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: DocParams| async move {
            let d = doc_id(&p.doc_id)?;
            c.object(ApiRequest::get(&["docs", &d, "acl", "settings"]))
                .await
        })
        .await
    }

    /// Share a doc: give a principal (email, domain, group, workspace or anyone) readonly, comment or write access. Each call adds a permission and, unless suppressEmail, sends a share email: check coda_list_permissions before repeating one.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<AddPermissionParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_add_permission(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: AddPermissionParams| async move {
            let d = doc_id(&p.doc_id)?;
            if p.principal.get("type").and_then(Value::as_str).is_none() {
                return Err(ToolError::arg(
                    "principal.type",
                    "is required (email, domain, group, workspace, anyone)",
                ));
            }
            let mut body = json!({"access": p.access, "principal": p.principal});
            if p.suppress_email {
                body["suppressEmail"] = json!(true);
            }
            let req = ApiRequest::new(Method::POST, &["docs", &d, "acl", "permissions"]).body(body);
            c.object(req).await
        })
        .await
    }

    /// Remove a permission (by id from coda_list_permissions) from a doc.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DeletePermissionParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_delete_permission(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DeletePermissionParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("permissionId", &p.permission_id)?;
            let req = ApiRequest::new(
                Method::DELETE,
                &["docs", &d, "acl", "permissions", &p.permission_id],
            );
            c.object(req).await
        })
        .await
    }

    /// Change a doc's sharing settings.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpdateAclSettingsParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_update_acl_settings(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: UpdateAclSettingsParams| async move {
            let d = doc_id(&p.doc_id)?;
            let mut body = json!({});
            for (k, v) in [
                (
                    "allowEditorsToChangePermissions",
                    p.allow_editors_to_change_permissions,
                ),
                ("allowCopying", p.allow_copying),
                (
                    "allowViewersToRequestEditing",
                    p.allow_viewers_to_request_editing,
                ),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                return Err(ToolError::arg("allowCopying", "give at least one setting"));
            }
            let req = ApiRequest::new(Method::PATCH, &["docs", &d, "acl", "settings"])
                .replayable()
                .body(body);
            c.object(req).await
        })
        .await
    }

    /// List the gallery categories a published doc can be filed under.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<NoParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_list_categories(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |_: NoParams| async move {
            c.object(ApiRequest::get(&["categories"])).await
        })
        .await
    }

    /// Publish a doc (or change its publishing settings): slug, discoverable, earnCredit, categoryNames, mode view/play/edit.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PublishParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_publish_document(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: PublishParams| async move {
            let d = doc_id(&p.doc_id)?;
            let mut body = json!({});
            if let Some(s) = &p.slug {
                body["slug"] = json!(s);
            }
            if let Some(v) = p.discoverable {
                body["discoverable"] = json!(v);
            }
            if let Some(v) = p.earn_credit {
                body["earnCredit"] = json!(v);
            }
            if let Some(v) = &p.category_names {
                body["categoryNames"] = json!(v);
            }
            if let Some(m) = p.mode {
                body["mode"] = json!(m);
            }
            let req = ApiRequest::new(Method::PUT, &["docs", &d, "publish"])
                .replayable()
                .body(body);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Unpublish a doc.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DocParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_unpublish_document(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DocParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = ApiRequest::new(Method::DELETE, &["docs", &d, "publish"]);
            c.direct_write_reply(req).await
        })
        .await
    }
}

#[tool_router(router = automations_router, vis = "pub(crate)")]
impl Coda {
    /// Run a webhook-triggered automation rule with an optional JSON payload. Coda answers 422 if the rule is not webhook-triggered or is off.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<TriggerAutomationParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_trigger_automation(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: TriggerAutomationParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("ruleId", &p.rule_id)?;
            let req = ApiRequest::new(
                Method::POST,
                &["docs", &d, "hooks", "automation", &p.rule_id],
            )
            .body(Value::Object(p.payload.unwrap_or_default()));
            c.write_reply(req, p.wait).await
        })
        .await
    }
}
