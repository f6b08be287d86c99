//! Toolset `account`: who the token is, resolving browser links, mutation
//! status and the local rate-limit and read budgets.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ToolError;
use super::{Coda, Object, Reply, input, output, required, run};
use crate::client::ApiRequest;
use crate::ratelimit::BucketStatus;

/// No arguments. Stray keys are ignored, as coda-enhanced did.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolveLinkParams {
    /// A Coda browser URL (doc, page, table, row…).
    pub url: String,
    /// Return the closest resolvable object instead of failing on partially invalid URLs.
    #[serde(default)]
    pub degrade_gracefully: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationStatusParams {
    /// The requestId returned by a write tool.
    pub request_id: String,
    /// Poll up to this many seconds until completed (0 = check once).
    #[serde(default)]
    pub wait_seconds: u32,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationStatusOutput {
    pub request_id: String,
    pub completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The write is not applied yet: Coda reports it unfinished, does not know the request yet (early 404, replication lag), or waiting timed out.
    pub pending: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitOutput {
    pub buckets: Vec<BucketStatus>,
    /// Memory for Coda's answers (--max-read-bytes): an answer that finds no room fails with an error saying to retry.
    pub read_budget: ReadBudgetStatus,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadBudgetStatus {
    /// Most bytes of Coda's answers held at once, across all calls.
    pub max_bytes: usize,
    /// Bytes held now by answers being read or used.
    pub held_bytes: usize,
}

#[tool_router(router = account_router, vis = "pub(crate)")]
impl Coda {
    /// Show who the API token belongs to: name, loginId (email), whether the token is scoped, its name and workspace.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<NoParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_whoami(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |_: NoParams| async move {
            c.object(ApiRequest::get(&["whoami"])).await
        })
        .await
    }

    /// Resolve a Coda browser URL to the API object it points to: {resource:{type,id,name,href}}. Use it to get page, table or row ids from links.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ResolveLinkParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_resolve_link(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ResolveLinkParams| async move {
            let Some(url) = crate::ids::link(&p.url).filter(|_| p.url.contains("://")) else {
                return Err(ToolError::arg("url", "must be an absolute Coda URL"));
            };
            let req = ApiRequest::get(&["resolveBrowserLink"])
                .query("url", &url)
                .query_opt("degradeGracefully", p.degrade_gracefully.then_some(true));
            c.object(req).await
        })
        .await
    }

    /// Check whether an asynchronous write (identified by its requestId) has been applied. waitSeconds polls until it completes.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<MutationStatusParams>(),
        output_schema = output::<MutationStatusOutput>()
    )]
    async fn coda_get_mutation_status(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: MutationStatusParams| async move {
            required("requestId", &p.request_id)?;
            if p.wait_seconds > 0 {
                let wait = std::time::Duration::from_secs(u64::from(p.wait_seconds));
                let deadline = c.deadline().min(std::time::Instant::now() + wait);
                let st = c.wait_mutation(&p.request_id, deadline).await;
                return Reply::json(MutationStatusOutput {
                    request_id: p.request_id,
                    completed: st.completed,
                    warning: st.warning.or(st.error),
                    pending: !st.completed,
                });
            }
            let req = ApiRequest::get(&["mutationStatus", &p.request_id]);
            match c.client.send(&req, c.deadline()).await {
                Ok(resp) => {
                    let completed = resp.body.get("completed").and_then(|v| v.as_bool()).unwrap_or(false);
                    Reply::json(MutationStatusOutput {
                        request_id: p.request_id,
                        completed,
                        warning: resp.body.get("warning").and_then(|v| v.as_str()).map(str::to_owned),
                        // Known to Coda and not finished: still to be applied.
                        pending: !completed,
                    })
                }
                // Right after a write Coda may not know the id yet.
                Err(e) if e.status() == Some(404) => Reply::json(MutationStatusOutput {
                    request_id: p.request_id,
                    completed: false,
                    warning: Some("Coda does not know this requestId yet (it can take a few seconds after a write), or it expired".into()),
                    pending: true,
                }),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Show this server's client-side rate-limit buckets (requests left per class) and the memory its reads of Coda's answers hold. Local only: makes no Coda call.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        input_schema = input::<NoParams>(),
        output_schema = output::<RateLimitOutput>()
    )]
    async fn coda_rate_limit_status(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |_: NoParams| async move {
            let budget = c.client.read_budget();
            Reply::json(RateLimitOutput {
                buckets: c.client.limiter().status(),
                read_budget: ReadBudgetStatus {
                    max_bytes: budget.max_bytes(),
                    held_bytes: budget.held_bytes(),
                },
            })
        })
        .await
    }
}
