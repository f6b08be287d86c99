//! The tool catalogue, grouped by toolset, and what every tool shares:
//! argument parsing (errors name the argument), `docId`-or-URL handling,
//! pagination, mutation waiting and turning results into `CallToolResult`s.
//!
//! Each submodule holds one toolset's parameter types, its Coda calls and a
//! `#[tool_router]` impl block on [`CodaServer`](super::server::CodaServer);
//! `server.rs` merges the routers of the enabled toolsets.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{ApiRequest, CodaClient, CodaError};
use super::config::{CodaConfig, ConfigError};

pub mod account;
pub mod admin;
pub mod docs;
pub mod folders;
pub mod pages;
pub mod rows;
pub mod sharing;
pub mod tables;

/// Largest number of items `fetchAll` gathers unless `maxItems` says otherwise.
pub const DEFAULT_FETCH_ALL_CAP: usize = 1000;
/// Hard ceiling for `maxItems`.
pub const MAX_FETCH_ALL_CAP: usize = 10_000;
/// Items a composite (stats, summary, search) reads per list before it stops.
pub const COMPOSITE_CAP: usize = 10_000;

/// A named group of tools that can be switched on with `--toolsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolset {
    Account,
    Docs,
    Folders,
    Pages,
    Tables,
    Rows,
    Formulas,
    Controls,
    Sharing,
    Automations,
    /// Analytics and workspace administration: off by default.
    Admin,
}

impl Toolset {
    pub const ALL: [Toolset; 11] = [
        Toolset::Account,
        Toolset::Docs,
        Toolset::Folders,
        Toolset::Pages,
        Toolset::Tables,
        Toolset::Rows,
        Toolset::Formulas,
        Toolset::Controls,
        Toolset::Sharing,
        Toolset::Automations,
        Toolset::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Toolset::Account => "account",
            Toolset::Docs => "docs",
            Toolset::Folders => "folders",
            Toolset::Pages => "pages",
            Toolset::Tables => "tables",
            Toolset::Rows => "rows",
            Toolset::Formulas => "formulas",
            Toolset::Controls => "controls",
            Toolset::Sharing => "sharing",
            Toolset::Automations => "automations",
            Toolset::Admin => "admin",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.name()).collect()
    }

    /// Every toolset except `admin`.
    pub fn default_set() -> Vec<Toolset> {
        Self::ALL
            .into_iter()
            .filter(|t| *t != Toolset::Admin)
            .collect()
    }

    /// Parse `"rows,pages"`, `"all"` or `"default,admin"`.
    pub fn parse_list(list: &str) -> Result<Vec<Toolset>, ConfigError> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let add: Vec<Toolset> = match name.to_ascii_lowercase().as_str() {
                "all" => Self::ALL.to_vec(),
                "default" => Self::default_set(),
                other => vec![
                    *Self::ALL
                        .iter()
                        .find(|t| t.name() == other)
                        .ok_or_else(|| ConfigError::UnknownToolset(name.to_owned()))?,
                ],
            };
            for t in add {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }
}

/// Shared state of every tool call: the client and the configuration.
#[derive(Debug)]
pub struct Coda {
    pub client: CodaClient,
    pub cfg: CodaConfig,
}

/// Why a tool call failed. Becomes a tool result with `isError: true`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: String, reason: String },
    #[error("{0}")]
    Coda(#[from] CodaError),
    #[error("page export failed: {0}")]
    ExportFailed(String),
    /// A chunked write failed after earlier chunks were accepted.
    #[error("partial write: {done} of {total} rows were accepted before a failure: {detail}")]
    PartialWrite {
        done: usize,
        total: usize,
        detail: String,
    },
}

impl ToolError {
    pub fn arg(name: &str, reason: impl Into<String>) -> Self {
        ToolError::InvalidArgument {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

pub type ToolResult<T> = Result<T, ToolError>;

/// JSON object schema of a parameter type, for `#[tool(input_schema = …)]`.
pub fn input<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .unwrap_or_else(|e| panic!("bad input schema for {}: {e}", std::any::type_name::<T>()))
}

/// JSON object schema of an output type, for `#[tool(output_schema = …)]`.
pub fn output<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_output::<T>()
}

/// Parse arguments, naming the offending argument on failure.
pub fn parse_args<P: DeserializeOwned>(args: JsonObject) -> ToolResult<P> {
    let err = match serde_path_to_error::deserialize::<_, P>(Value::Object(args.clone())) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner().to_string();
    if let Some(field) = inner
        .strip_prefix("missing field `")
        .and_then(|s| s.split('`').next())
    {
        let name = if path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return Err(ToolError::arg(&name, "is required"));
    }
    if path != "." {
        return Err(ToolError::arg(&path, inner));
    }
    // Flattened fields lose their path; find the argument whose removal
    // makes the error go away (only runs on the error path).
    let without = |k: &String| {
        let mut o = args.clone();
        o.remove(k);
        serde_json::from_value::<P>(Value::Object(o)).map_err(|e| e.to_string())
    };
    let missing = |k: &String, e: &str| e.contains(&format!("missing field `{k}`"));
    // An optional argument: removing it fixes the error. A required one:
    // removing it only changes the error to "missing field".
    let culprit = args
        .keys()
        .find(|k| match without(k) {
            Ok(_) => true,
            Err(e) => e != inner && !missing(k, &e),
        })
        .or_else(|| {
            args.keys()
                .find(|k| without(k).is_err_and(|e| missing(k, &e)))
        });
    Err(ToolError::arg(
        culprit.map(String::as_str).unwrap_or("arguments"),
        inner,
    ))
}

/// What a tool hands back: a JSON object, optionally with a text rendering
/// other than the JSON itself (page content returns the markdown as text).
pub struct Reply {
    value: Value,
    text: Option<String>,
}

impl Reply {
    pub fn json<T: Serialize>(v: T) -> ToolResult<Reply> {
        let value = serde_json::to_value(v).map_err(|e| {
            ToolError::Coda(CodaError::InvalidResponse {
                status: 0,
                reason: e.to_string(),
            })
        })?;
        Ok(Reply { value, text: None })
    }

    pub fn with_text<T: Serialize>(v: T, text: String) -> ToolResult<Reply> {
        let mut r = Self::json(v)?;
        r.text = Some(text);
        Ok(r)
    }
}

/// Run one tool: parse arguments, call `f`, and shape the result.
pub async fn run<P, F, Fut>(args: JsonObject, f: F) -> CallToolResult
where
    P: DeserializeOwned,
    F: FnOnce(P) -> Fut,
    Fut: Future<Output = ToolResult<Reply>>,
{
    let outcome = match parse_args::<P>(args) {
        Ok(p) => f(p).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Reply { value, text }) => {
            let text = text.unwrap_or_else(|| value.to_string());
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(value);
            r
        }
        Err(e) => {
            tracing::debug!(error = %e, "tool call failed");
            CallToolResult::error(vec![ContentBlock::text(e.to_string())])
        }
    }
}

/// A generic Coda object (doc, page, table, row, …) as returned by the API.
pub type Object = serde_json::Map<String, Value>;

/// Extract a doc id from an id or a Coda browser/API URL.
///
/// `https://coda.io/d/Launch-Hub_dAbCDeFGH/Page_su1`, `https://coda.io/d/_dAbCDeFGH`
/// and `…/apis/v1/docs/AbCDeFGH/…` all give `AbCDeFGH`.
pub fn doc_id(raw: &str) -> ToolResult<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ToolError::arg("docId", "must not be empty"));
    }
    if !raw.contains("://") {
        if raw.contains('/') {
            return Err(ToolError::arg("docId", "expected a doc id or a Coda URL"));
        }
        return Ok(raw.to_owned());
    }
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ToolError::arg("docId", format!("not a valid URL: {e}")))?;
    let segs: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    for (i, s) in segs.iter().enumerate() {
        if *s == "d"
            && let Some(next) = segs.get(i + 1)
            && let Some(pos) = next.rfind("_d")
        {
            let id = &next[pos + 2..];
            if !id.is_empty() {
                return Ok(id.to_owned());
            }
        }
        if *s == "docs"
            && i > 0
            && segs[i - 1] == "v1"
            && let Some(id) = segs.get(i + 1).filter(|id| !id.is_empty())
        {
            return Ok((*id).to_owned());
        }
    }
    Err(ToolError::arg(
        "docId",
        "URL does not contain a doc id (expected …/d/<name>_d<docId>…)",
    ))
}

/// `limit` / `pageToken` / `fetchAll` / `maxItems`, flattened into list tools.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageArgs {
    /// Items per page (Coda caps this per endpoint; keep paging while nextPageToken is returned).
    pub limit: Option<u32>,
    /// Token from a previous call's nextPageToken; other filters are then ignored by Coda.
    #[serde(alias = "nextPageToken")]
    pub page_token: Option<String>,
    /// Follow nextPageToken and return every item, up to maxItems.
    #[serde(default)]
    pub fetch_all: bool,
    /// fetchAll stops once it has at least this many items (whole pages; default 1000, at most 10000) and returns nextPageToken to continue.
    pub max_items: Option<u32>,
}

/// One page (or, with fetchAll, all pages) of a list.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListOutput {
    pub items: Vec<Value>,
    /// Number of items returned here.
    pub count: usize,
    /// Pass as pageToken to continue; absent when the list is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// True when fetchAll stopped at maxItems; nextPageToken continues where it stopped.
    pub truncated: bool,
}

/// State of an asynchronous Coda write after optional waiting.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationState {
    /// Coda reported the write as applied.
    pub completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Waiting stopped at the deadline before Coda reported completion.
    pub timed_out: bool,
}

/// Result of a write: Coda's response plus the mutation state when waited on.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationOutput {
    /// Poll with coda_get_mutation_status; absent for synchronous writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Coda's response body.
    pub result: Object,
    /// Present when `wait` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
}

impl Coda {
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.call_deadline
    }

    pub async fn call(&self, req: ApiRequest, deadline: Instant) -> ToolResult<Value> {
        Ok(self.client.send(&req, deadline).await?.body)
    }

    pub async fn object(&self, req: ApiRequest, deadline: Instant) -> ToolResult<Reply> {
        let v = self.call(req, deadline).await?;
        Reply::json(v)
    }

    /// One page, or every page with `fetchAll`.
    pub async fn list(
        &self,
        req: ApiRequest,
        page: &PageArgs,
        deadline: Instant,
    ) -> ToolResult<ListOutput> {
        if page.limit == Some(0) {
            return Err(ToolError::arg("limit", "must be at least 1"));
        }
        let cap = page
            .max_items
            .map(|m| (m as usize).clamp(1, MAX_FETCH_ALL_CAP))
            .unwrap_or(DEFAULT_FETCH_ALL_CAP);
        let first = match &page.page_token {
            // Coda bakes the other parameters into the token and ignores them.
            Some(tok) => ApiRequest {
                query: vec![("pageToken".into(), tok.clone())],
                ..req.clone()
            },
            None => req.clone().query_opt("limit", page.limit),
        };
        let (items, next, truncated) = self
            .pages(first, if page.fetch_all { cap } else { 0 }, deadline)
            .await?;
        Ok(ListOutput {
            count: items.len(),
            items,
            next_page_token: next,
            truncated,
        })
    }

    /// Every item of a list, up to `cap` (for composites).
    pub async fn list_all(
        &self,
        req: ApiRequest,
        cap: usize,
        deadline: Instant,
    ) -> ToolResult<(Vec<Value>, bool)> {
        let (items, _, truncated) = self.pages(req, cap, deadline).await?;
        Ok((items, truncated))
    }

    /// Fetch pages starting with `req`. `cap == 0` means just one page.
    async fn pages(
        &self,
        req: ApiRequest,
        cap: usize,
        deadline: Instant,
    ) -> ToolResult<(Vec<Value>, Option<String>, bool)> {
        let mut items = Vec::new();
        let mut current = req.clone();
        loop {
            let body = match self.call(current.clone(), deadline).await {
                Ok(b) => b,
                // Coda times out (504) listing big tables; a first page can
                // be asked again with a smaller limit (a token cannot change it).
                Err(ToolError::Coda(e)) if e.status() == Some(504) && items.is_empty() => {
                    match smaller_limit(&current) {
                        Some(next) => {
                            tracing::info!("504 from Coda, retrying the list with a smaller page");
                            current = next;
                            continue;
                        }
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e),
            };
            let page_items = body
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| {
                    ToolError::Coda(CodaError::InvalidResponse {
                        status: 200,
                        reason: "list response has no items array".into(),
                    })
                })?;
            items.extend(page_items);
            let next = body
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            match next {
                None => return Ok((items, None, false)),
                Some(tok) if cap == 0 => return Ok((items, Some(tok), false)),
                Some(tok) => {
                    // Whole pages only: cutting a page would lose the items
                    // between the cut and the token's position.
                    if items.len() >= cap {
                        return Ok((items, Some(tok), true));
                    }
                    current = ApiRequest {
                        query: vec![("pageToken".into(), tok)],
                        ..req.clone()
                    };
                }
            }
        }
    }

    /// Send a write; with `wait`, poll `/mutationStatus` until done or the deadline.
    pub async fn mutate(
        &self,
        req: ApiRequest,
        wait: bool,
        deadline: Instant,
    ) -> ToolResult<MutationOutput> {
        let body = self.call(req, deadline).await?;
        let result = match body {
            Value::Object(m) => m,
            other => {
                let mut m = Object::new();
                m.insert("value".into(), other);
                m
            }
        };
        let request_id = result
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mutation = match (&request_id, wait) {
            (Some(id), true) => Some(self.wait_mutation(id, deadline).await?),
            _ => None,
        };
        Ok(MutationOutput {
            request_id,
            result,
            mutation,
        })
    }

    /// Poll `/mutationStatus/{id}`: sleep first, treat 404 as "not yet" within
    /// the grace window, back off ×1.5 up to 8 s, stop at the deadline.
    pub async fn wait_mutation(
        &self,
        request_id: &str,
        deadline: Instant,
    ) -> ToolResult<MutationState> {
        let started = Instant::now();
        let mut interval = self.cfg.poll_interval;
        loop {
            if Instant::now() + interval >= deadline {
                return Ok(MutationState {
                    completed: false,
                    warning: None,
                    timed_out: true,
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval.mul_f64(1.5)).min(Duration::from_secs(8));
            let req = ApiRequest::get(&["mutationStatus", request_id]);
            match self.client.send(&req, deadline).await {
                Ok(resp) => {
                    let completed = resp
                        .body
                        .get("completed")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if completed {
                        return Ok(MutationState {
                            completed,
                            warning: resp
                                .body
                                .get("warning")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            timed_out: false,
                        });
                    }
                }
                Err(e)
                    if e.status() == Some(404) && started.elapsed() < self.cfg.not_found_grace =>
                {
                    tracing::debug!(request_id, "mutation status not replicated yet");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The same first-page request with half the `limit` (Coda's default 25
/// when none was given), or `None` when it is a token page or already small.
fn smaller_limit(req: &ApiRequest) -> Option<ApiRequest> {
    if req.query.iter().any(|(k, _)| k == "pageToken") {
        return None;
    }
    let limit = req
        .query
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .unwrap_or(25);
    if limit <= 5 {
        return None;
    }
    let mut next = req.clone();
    next.query.retain(|(k, _)| k != "limit");
    next.query.push(("limit".into(), (limit / 2).to_string()));
    Some(next)
}

/// Build a row-list `query` from a structured filter: column ids (`c-…`)
/// stay bare, names are JSON-quoted, values are JSON.
pub fn row_query(column: &str, value: &Value) -> ToolResult<String> {
    if column.trim().is_empty() {
        return Err(ToolError::arg("filter.column", "must not be empty"));
    }
    let is_id = column.starts_with("c-")
        && column.len() > 2
        && column[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let col = if is_id {
        column.to_owned()
    } else {
        Value::String(column.to_owned()).to_string()
    };
    let val = match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => {
            return Err(ToolError::arg(
                "filter.value",
                "must be a string, number or boolean",
            ));
        }
    };
    Ok(format!("{col}:{val}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doc_id_accepts_ids_and_browser_urls() {
        assert_eq!(doc_id("AbCDeFGH").unwrap(), "AbCDeFGH");
        assert_eq!(
            doc_id("https://coda.io/d/Launch-Hub_dAbCDeFGH/Status_su1#x").unwrap(),
            "AbCDeFGH"
        );
        assert_eq!(doc_id("https://coda.io/d/_dAbC-De_F").unwrap(), "AbC-De_F");
        assert_eq!(
            doc_id("https://coda.io/apis/v1/docs/AbCDeFGH/pages").unwrap(),
            "AbCDeFGH"
        );
    }

    #[test]
    fn doc_id_rejects_urls_without_a_doc() {
        let err = doc_id("https://coda.io/workspaces/ws-1").unwrap_err();
        assert!(err.to_string().contains("`docId`"), "{err}");
        assert!(doc_id("").is_err());
    }

    #[test]
    fn row_query_quotes_names_and_json_encodes_values() {
        assert_eq!(
            row_query("c-tuVwxYz", &json!("Apple")).unwrap(),
            r#"c-tuVwxYz:"Apple""#
        );
        assert_eq!(
            row_query("Status", &json!("Done")).unwrap(),
            r#""Status":"Done""#
        );
        assert_eq!(row_query("Count", &json!(3)).unwrap(), r#""Count":3"#);
        assert_eq!(
            row_query("Say \"hi\"", &json!(true)).unwrap(),
            r#""Say \"hi\"":true"#
        );
        assert!(row_query("A", &json!([1])).is_err());
    }

    #[test]
    fn toolset_lists_parse_with_all_and_default() {
        assert_eq!(Toolset::parse_list("all").unwrap().len(), 11);
        let d = Toolset::parse_list("default").unwrap();
        assert!(!d.contains(&Toolset::Admin));
        assert_eq!(
            Toolset::parse_list("rows, pages").unwrap(),
            vec![Toolset::Rows, Toolset::Pages]
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct P {
        doc_id: String,
        #[serde(flatten)]
        page: PageArgs,
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let missing = parse_args::<P>(JsonObject::new()).unwrap_err();
        assert_eq!(missing.to_string(), "invalid argument `docId`: is required");
        let mut o = JsonObject::new();
        o.insert("docId".into(), json!("d"));
        o.insert("fetchAll".into(), json!(true));
        o.insert("limit".into(), json!("ten"));
        let wrong = parse_args::<P>(o).unwrap_err().to_string();
        assert!(wrong.starts_with("invalid argument `limit`"), "{wrong}");
    }
}
