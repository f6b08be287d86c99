//! Toolset `rows`: read rows (value formats, structured filters), insert and
//! upsert with byte-aware chunking, update, delete, push buttons.
//!
//! Inserts are split so that no request body passes
//! [`CodaConfig::row_chunk_bytes`](crate::config::CodaConfig) (Coda
//! rejects bodies over 2 MB and applies nothing), and a single row larger
//! than Coda's 85 KB row limit is refused before anything is sent.

use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Coda, ListOutput, MAX_FETCH_ALL_CAP, MutationOutput, MutationState, Object, PageArgs, Reply,
    ToolError, ToolResult, doc_id, input, output, row_query, run,
};
use crate::client::ApiRequest;
use crate::ratelimit::RequestClass;
use crate::server::CodaServer;

/// Coda's limit for one row edit, in its own size measure.
pub const MAX_ROW_BYTES: usize = 85 * 1024;
/// Row ids per `DELETE …/rows` request.
const DELETE_CHUNK: usize = 500;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ValueFormat {
    /// Strings, numbers, booleans; arrays joined as text (Coda's default).
    Simple,
    /// Like simple, but arrays stay JSON arrays.
    SimpleWithArrays,
    /// Structured values: people, lookups, currency as JSON-LD objects; text as markdown.
    Rich,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RowSort {
    CreatedAt,
    Natural,
    UpdatedAt,
}

/// One equality filter, turned into a correctly quoted `query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowFilter {
    /// Column id (c-…) or name.
    pub column: String,
    /// Value the cell must equal: string, number or boolean.
    pub value: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListRowsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Raw Coda filter `<column>:<JSON value>`: names in double quotes, strings as JSON, e.g. `"Status":"Done"`, `c-AbC:3`. Prefer `filter`.
    pub query: Option<String>,
    /// Structured equality filter {column, value}; quoted for you.
    pub filter: Option<RowFilter>,
    /// createdAt (default), natural (view order), updatedAt.
    pub sort_by: Option<RowSort>,
    /// Key values by column name instead of column id.
    pub use_column_names: Option<bool>,
    /// simple (default), simpleWithArrays or rich.
    pub value_format: Option<ValueFormat>,
    /// Only visible rows/columns.
    pub visible_only: Option<bool>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetRowParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Row id (i-…) or the display-column value (ambiguous names hit an arbitrary row).
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    pub use_column_names: Option<bool>,
    pub value_format: Option<ValueFormat>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRowsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Base table id (grid-…) or name; views cannot take inserts.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Rows as objects {"Column name or id": value}; values are strings, numbers, booleans or arrays. `{"cells":[{column,value}]}` is accepted too.
    pub rows: Vec<Value>,
    /// Column ids/names that identify a row: matching rows are updated instead of inserted.
    pub key_columns: Option<Vec<String>>,
    /// Store values as given instead of parsing them like the UI does (dates, people, selects).
    #[serde(default)]
    pub disable_parsing: bool,
    /// Wait until Coda has applied every request.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsertRowsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Base table id (grid-…) or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Rows as objects {"Column name or id": value}; each must contain the key columns.
    pub rows: Vec<Value>,
    /// Column ids/names whose values identify a row (required).
    pub key_columns: Vec<String>,
    #[serde(default)]
    pub disable_parsing: bool,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRowParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Row id (i-…) or display value.
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    /// New cell values {"Column name or id": value}.
    pub values: Object,
    #[serde(default)]
    pub disable_parsing: bool,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowRefParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Row id (i-…) or display value.
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRowsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…) or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Row ids (i-…) to delete.
    pub row_ids: Option<Vec<String>>,
    /// Or delete every row matching this filter (ids are looked up first).
    pub filter: Option<RowFilter>,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowUpdate {
    /// Row id (i-…) or display value.
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    /// New cell values {"Column name or id": value}.
    pub values: Object,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpdateParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…) or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// One entry per row: {rowIdOrName, values}.
    pub updates: Vec<RowUpdate>,
    /// When given, all updates go as one upsert keyed on these columns (values must include them) instead of one request per row.
    pub key_columns: Option<Vec<String>>,
    #[serde(default)]
    pub disable_parsing: bool,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushButtonParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…) or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Row id (i-…) or display value.
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    /// The button column's id (c-…) or name.
    #[serde(alias = "column_id_or_name")]
    pub column_id_or_name: String,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowsWriteOutput {
    /// Rows sent.
    pub row_count: usize,
    /// One requestId per request Coda accepted.
    pub request_ids: Vec<String>,
    /// Ids of inserted rows (only without keyColumns).
    pub added_row_ids: Vec<String>,
    /// Requests made (rows are chunked by size).
    pub requests: usize,
    /// Present when `wait` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowResult {
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpdateOutput {
    pub succeeded: usize,
    pub failed: usize,
    /// Per-row outcome (one PUT per row), absent when done as one upsert.
    pub results: Vec<RowResult>,
    /// Request ids of the upsert path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRowsOutput {
    pub deleted_row_ids: Vec<String>,
    pub request_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
}

fn check_value(v: &Value, at: &str) -> ToolResult<()> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        Value::Array(items) => items.iter().try_for_each(|i| check_value(i, at)),
        Value::Null => Err(ToolError::arg(
            at,
            "null is not a Coda value; use \"\" to clear a cell",
        )),
        Value::Object(_) => Err(ToolError::arg(
            at,
            "must be a string, number, boolean or array, not an object",
        )),
    }
}

/// `{col: value}` → `[{column, value}]`, checking each value.
pub fn cells_from_values(values: &Object, at: &str) -> ToolResult<Vec<Value>> {
    if values.is_empty() {
        return Err(ToolError::arg(at, "has no cell values"));
    }
    values
        .iter()
        .map(|(k, v)| {
            check_value(v, &format!("{at}.{k}"))?;
            Ok(json!({"column": k, "value": v}))
        })
        .collect()
}

/// Turn one `rows[i]` input into a RowEdit `{cells:[…]}`.
pub fn row_edit(row: &Value, i: usize) -> ToolResult<Value> {
    let at = format!("rows[{i}]");
    let obj = row
        .as_object()
        .ok_or_else(|| ToolError::arg(&at, "must be an object"))?;
    if obj.len() == 1
        && let Some(Value::Array(cells)) = obj.get("cells")
    {
        for (j, cell) in cells.iter().enumerate() {
            let cat = format!("{at}.cells[{j}]");
            let col = cell
                .get("column")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty());
            if col.is_none() {
                return Err(ToolError::arg(&cat, "needs a column"));
            }
            check_value(
                cell.get("value").unwrap_or(&Value::Null),
                &format!("{cat}.value"),
            )?;
        }
        return Ok(json!({"cells": cells}));
    }
    Ok(json!({"cells": cells_from_values(obj, &at)?}))
}

/// Coda's row size measure: UTF-8 bytes with newlines counted twice.
pub fn coda_row_size(edit: &Value) -> usize {
    let s = edit.to_string();
    s.len() + s.matches("\\n").count()
}

/// Split row edits into chunks whose JSON stays under `max_bytes`.
pub fn chunk_rows(edits: Vec<Value>, max_bytes: usize) -> ToolResult<Vec<Vec<Value>>> {
    // Room for `{"rows":[…],"keyColumns":[…]}` around the rows.
    let budget = max_bytes.saturating_sub(4096).max(1);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for (i, e) in edits.into_iter().enumerate() {
        let n = e.to_string().len() + 1;
        if coda_row_size(&e) > MAX_ROW_BYTES {
            return Err(ToolError::arg(
                &format!("rows[{i}]"),
                format!(
                    "is about {} KB; Coda rejects row edits over 85 KB",
                    coda_row_size(&e) / 1024
                ),
            ));
        }
        if !current.is_empty() && size + n > budget {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(e);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

impl Coda {
    async fn write_rows(
        &self,
        d: &str,
        t: &str,
        edits: Vec<Value>,
        key_columns: Option<&[String]>,
        disable_parsing: bool,
        wait: bool,
    ) -> ToolResult<RowsWriteOutput> {
        let row_count = edits.len();
        let chunks = chunk_rows(edits, self.cfg.row_chunk_bytes)?;
        let dl = self.deadline();
        let mut out = RowsWriteOutput {
            row_count,
            request_ids: Vec::new(),
            added_row_ids: Vec::new(),
            requests: 0,
            mutation: None,
        };
        let total = chunks.len();
        let mut sent_rows = 0;
        for chunk in chunks {
            let n = chunk.len();
            let mut body = json!({"rows": chunk});
            if let Some(k) = key_columns {
                body["keyColumns"] = json!(k);
            }
            let req = ApiRequest::new(Method::POST, &["docs", d, "tables", t, "rows"])
                .class(RequestClass::DocContentWrite)
                .query_opt("disableParsing", disable_parsing.then_some(true))
                .body(body);
            let resp = match self.call(req, dl).await {
                Ok(r) => r,
                Err(e) if out.requests > 0 => {
                    return Err(ToolError::PartialWrite {
                        done: sent_rows,
                        total: row_count,
                        detail: format!(
                            "request {} of {total} failed: {e}; earlier requestIds: {:?}",
                            out.requests + 1,
                            out.request_ids
                        ),
                    });
                }
                Err(e) => return Err(e),
            };
            out.requests += 1;
            sent_rows += n;
            if let Some(id) = resp.get("requestId").and_then(Value::as_str) {
                out.request_ids.push(id.to_owned());
            }
            if let Some(ids) = resp.get("addedRowIds").and_then(Value::as_array) {
                out.added_row_ids
                    .extend(ids.iter().filter_map(Value::as_str).map(str::to_owned));
            }
        }
        if wait {
            out.mutation = Some(self.wait_all(&out.request_ids, dl).await?);
        }
        Ok(out)
    }

    /// Wait for several mutations; the result is completed only if all are.
    async fn wait_all(&self, ids: &[String], dl: std::time::Instant) -> ToolResult<MutationState> {
        let mut warnings = Vec::new();
        for id in ids {
            let st = self.wait_mutation(id, dl).await?;
            if !st.completed {
                return Ok(st);
            }
            warnings.extend(st.warning);
        }
        Ok(MutationState {
            completed: true,
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
            timed_out: false,
        })
    }

    async fn matching_row_ids(
        &self,
        d: &str,
        t: &str,
        filter: &RowFilter,
    ) -> ToolResult<Vec<String>> {
        let q = row_query(&filter.column, &filter.value)?;
        let req = ApiRequest::get(&["docs", d, "tables", t, "rows"])
            .query("query", q)
            .query("limit", 500);
        let (rows, capped) = self
            .list_all(req, MAX_FETCH_ALL_CAP, self.deadline())
            .await?;
        if capped {
            return Err(ToolError::arg(
                "filter",
                format!("matches more than {MAX_FETCH_ALL_CAP} rows; narrow it"),
            ));
        }
        Ok(rows
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}

fn nonempty(name: &str, v: &str) -> ToolResult<()> {
    if v.trim().is_empty() {
        return Err(ToolError::arg(name, "must not be empty"));
    }
    Ok(())
}

fn edits(rows: &[Value]) -> ToolResult<Vec<Value>> {
    if rows.is_empty() {
        return Err(ToolError::arg("rows", "must contain at least one row"));
    }
    rows.iter()
        .enumerate()
        .map(|(i, r)| row_edit(r, i))
        .collect()
}

fn value_format(v: Option<ValueFormat>) -> Option<&'static str> {
    v.map(|v| match v {
        ValueFormat::Simple => "simple",
        ValueFormat::SimpleWithArrays => "simpleWithArrays",
        ValueFormat::Rich => "rich",
    })
}

#[tool_router(router = rows_router, vis = "pub(crate)")]
impl CodaServer {
    /// List rows of a table or view. Filter with `filter` {column, value} (exact match), or a raw `query` like `"Status":"Done"` (column names in double quotes, values as JSON). valueFormat rich returns people/lookups/currency as objects; useColumnNames keys values by name. Paged: limit, pageToken → nextPageToken, or fetchAll.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListRowsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: ListRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            let query = match (&p.query, &p.filter) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::arg(
                        "filter",
                        "give either query or filter, not both",
                    ));
                }
                (Some(q), None) => Some(q.clone()),
                (None, Some(f)) => Some(row_query(&f.column, &f.value)?),
                (None, None) => None,
            };
            let req = ApiRequest::get(&["docs", &d, "tables", &p.table_id_or_name, "rows"])
                .query_opt("query", query)
                .query_opt(
                    "sortBy",
                    p.sort_by.map(|s| match s {
                        RowSort::CreatedAt => "createdAt",
                        RowSort::Natural => "natural",
                        RowSort::UpdatedAt => "updatedAt",
                    }),
                )
                .query_opt("useColumnNames", p.use_column_names)
                .query_opt("valueFormat", value_format(p.value_format))
                .query_opt("visibleOnly", p.visible_only);
            Reply::json(c.list(req, &p.page, c.deadline()).await?)
        })
        .await
    }

    /// Get one row with its values (valueFormat and useColumnNames as in coda_list_rows).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<GetRowParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_row(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: GetRowParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            nonempty("rowIdOrName", &p.row_id_or_name)?;
            let req = ApiRequest::get(&[
                "docs",
                &d,
                "tables",
                &p.table_id_or_name,
                "rows",
                &p.row_id_or_name,
            ])
            .query_opt("useColumnNames", p.use_column_names)
            .query_opt("valueFormat", value_format(p.value_format));
            c.object(req, c.deadline()).await
        })
        .await
    }

    /// Insert rows ({"Column": value} objects), or upsert them when keyColumns is given. Large batches are split by size automatically. Returns requestIds and addedRowIds; wait=true waits until applied.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<CreateRowsParams>(),
        output_schema = output::<RowsWriteOutput>()
    )]
    async fn coda_create_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: CreateRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            let e = edits(&p.rows)?;
            let keys = p.key_columns.filter(|k| !k.is_empty());
            Reply::json(
                c.write_rows(
                    &d,
                    &p.table_id_or_name,
                    e,
                    keys.as_deref(),
                    p.disable_parsing,
                    p.wait,
                )
                .await?,
            )
        })
        .await
    }

    /// Insert-or-update rows keyed on keyColumns: rows whose key values match are updated, others inserted. One request per ~1 MB of rows instead of one per row.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpsertRowsParams>(),
        output_schema = output::<RowsWriteOutput>()
    )]
    async fn coda_upsert_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: UpsertRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            if p.key_columns.is_empty() {
                return Err(ToolError::arg(
                    "keyColumns",
                    "must name at least one column",
                ));
            }
            let e = edits(&p.rows)?;
            Reply::json(
                c.write_rows(
                    &d,
                    &p.table_id_or_name,
                    e,
                    Some(&p.key_columns),
                    p.disable_parsing,
                    p.wait,
                )
                .await?,
            )
        })
        .await
    }

    /// Update cells of one row: values {"Column": value}. Unlisted columns are left alone.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpdateRowParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_update_row(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: UpdateRowParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            nonempty("rowIdOrName", &p.row_id_or_name)?;
            let cells = cells_from_values(&p.values, "values")?;
            let req = ApiRequest::new(
                Method::PUT,
                &[
                    "docs",
                    &d,
                    "tables",
                    &p.table_id_or_name,
                    "rows",
                    &p.row_id_or_name,
                ],
            )
            .class(RequestClass::DocContentWrite)
            .query_opt("disableParsing", p.disable_parsing.then_some(true))
            .body(json!({"row": {"cells": cells}}));
            Reply::json(c.mutate(req, p.wait, c.deadline()).await?)
        })
        .await
    }

    /// Delete one row.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<RowRefParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_delete_row(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: RowRefParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            nonempty("rowIdOrName", &p.row_id_or_name)?;
            let req = ApiRequest::new(
                Method::DELETE,
                &[
                    "docs",
                    &d,
                    "tables",
                    &p.table_id_or_name,
                    "rows",
                    &p.row_id_or_name,
                ],
            )
            .class(RequestClass::DocContentWrite);
            Reply::json(c.mutate(req, p.wait, c.deadline()).await?)
        })
        .await
    }

    /// Delete many rows: by rowIds, or every row matching filter {column, value}.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DeleteRowsParams>(),
        output_schema = output::<DeleteRowsOutput>()
    )]
    async fn coda_delete_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: DeleteRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            let t = p.table_id_or_name.as_str();
            nonempty("tableIdOrName", t)?;
            let ids = match (&p.row_ids, &p.filter) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::arg(
                        "rowIds",
                        "give either rowIds or filter, not both",
                    ));
                }
                (Some(ids), None) if ids.is_empty() => {
                    return Err(ToolError::arg("rowIds", "must not be empty"));
                }
                (Some(ids), None) => ids.clone(),
                (None, Some(f)) => c.matching_row_ids(&d, t, f).await?,
                (None, None) => {
                    return Err(ToolError::arg("rowIds", "is required (or give filter)"));
                }
            };
            let dl = c.deadline();
            let mut out = DeleteRowsOutput {
                deleted_row_ids: Vec::new(),
                request_ids: Vec::new(),
                mutation: None,
            };
            for chunk in ids.chunks(DELETE_CHUNK) {
                let req = ApiRequest::new(Method::DELETE, &["docs", &d, "tables", t, "rows"])
                    .class(RequestClass::DocContentWrite)
                    .body(json!({"rowIds": chunk}));
                let resp = c.call(req, dl).await?;
                out.deleted_row_ids.extend(chunk.iter().cloned());
                if let Some(id) = resp.get("requestId").and_then(Value::as_str) {
                    out.request_ids.push(id.to_owned());
                }
            }
            if p.wait {
                out.mutation = Some(c.wait_all(&out.request_ids, dl).await?);
            }
            Reply::json(out)
        })
        .await
    }

    /// Update several rows with different values: updates [{rowIdOrName, values}]. With keyColumns it is one upsert (fast, rate-limit friendly); otherwise one update per row, paced by the rate limiter, with a per-row report.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<BulkUpdateParams>(),
        output_schema = output::<BulkUpdateOutput>()
    )]
    async fn coda_bulk_update_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: BulkUpdateParams| async move {
            let d = doc_id(&p.doc_id)?;
            let t = p.table_id_or_name.as_str();
            nonempty("tableIdOrName", t)?;
            if p.updates.is_empty() {
                return Err(ToolError::arg("updates", "must contain at least one update"));
            }
            if let Some(keys) = p.key_columns.as_ref().filter(|k| !k.is_empty()) {
                let e = p
                    .updates
                    .iter()
                    .enumerate()
                    .map(|(i, u)| Ok(json!({"cells": cells_from_values(&u.values, &format!("updates[{i}].values"))?})))
                    .collect::<ToolResult<Vec<_>>>()?;
                let w = c.write_rows(&d, t, e, Some(keys), p.disable_parsing, p.wait).await?;
                return Reply::json(BulkUpdateOutput {
                    succeeded: w.row_count,
                    failed: 0,
                    results: Vec::new(),
                    request_ids: w.request_ids,
                    mutation: w.mutation,
                });
            }
            let mut cells = Vec::with_capacity(p.updates.len());
            for (i, u) in p.updates.iter().enumerate() {
                nonempty(&format!("updates[{i}].rowIdOrName"), &u.row_id_or_name)?;
                cells.push(cells_from_values(&u.values, &format!("updates[{i}].values"))?);
            }
            let dl = c.deadline();
            let mut results = Vec::new();
            for (u, cells) in p.updates.iter().zip(cells) {
                let req = ApiRequest::new(Method::PUT, &["docs", &d, "tables", t, "rows", &u.row_id_or_name])
                    .class(RequestClass::DocContentWrite)
                    .query_opt("disableParsing", p.disable_parsing.then_some(true))
                    .body(json!({"row": {"cells": cells}}));
                results.push(match c.call(req, dl).await {
                    Ok(v) => RowResult {
                        row_id_or_name: u.row_id_or_name.clone(),
                        ok: true,
                        request_id: v.get("requestId").and_then(Value::as_str).map(str::to_owned),
                        error: None,
                    },
                    Err(e) => RowResult {
                        row_id_or_name: u.row_id_or_name.clone(),
                        ok: false,
                        request_id: None,
                        error: Some(e.to_string()),
                    },
                });
            }
            let ids: Vec<String> = results.iter().filter_map(|r| r.request_id.clone()).collect();
            let mutation = if p.wait { Some(c.wait_all(&ids, dl).await?) } else { None };
            let succeeded = results.iter().filter(|r| r.ok).count();
            Reply::json(BulkUpdateOutput {
                succeeded,
                failed: results.len() - succeeded,
                results,
                request_ids: Vec::new(),
                mutation,
            })
        })
        .await
    }

    /// Push a button in a table's button column for one row (runs the button's action; not idempotent).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<PushButtonParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_push_button(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = &self.coda;
        run(a, |p: PushButtonParams| async move {
            let d = doc_id(&p.doc_id)?;
            nonempty("tableIdOrName", &p.table_id_or_name)?;
            nonempty("rowIdOrName", &p.row_id_or_name)?;
            nonempty("columnIdOrName", &p.column_id_or_name)?;
            let req = ApiRequest::new(
                Method::POST,
                &[
                    "docs",
                    &d,
                    "tables",
                    &p.table_id_or_name,
                    "rows",
                    &p.row_id_or_name,
                    "buttons",
                    &p.column_id_or_name,
                ],
            )
            .class(RequestClass::DocContentWrite);
            Reply::json(c.mutate(req, p.wait, c.deadline()).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_rows_become_cells_and_cells_rows_pass_through() {
        let e = row_edit(&json!({"Name": "A", "Qty": 2}), 0).unwrap();
        assert_eq!(
            e,
            json!({"cells": [{"column": "Name", "value": "A"}, {"column": "Qty", "value": 2}]})
        );
        let e = row_edit(&json!({"cells": [{"column": "c-1", "value": [1, 2]}]}), 0).unwrap();
        assert_eq!(e, json!({"cells": [{"column": "c-1", "value": [1, 2]}]}));
    }

    #[test]
    fn object_values_are_rejected_naming_the_cell() {
        let err = row_edit(&json!({"Owner": {"name": "x"}}), 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`rows[3].Owner`"), "{err}");
    }

    #[test]
    fn chunks_stay_under_the_byte_budget_and_keep_order() {
        let rows: Vec<Value> = (0..100)
            .map(|i| json!({"cells": [{"column": "Text", "value": format!("{i}:{}", "x".repeat(1000))}]}))
            .collect();
        let chunks = chunk_rows(rows.clone(), 20_000).unwrap();
        assert!(chunks.len() >= 6, "{}", chunks.len());
        for ch in &chunks {
            assert!(json!({ "rows": ch }).to_string().len() <= 20_000);
        }
        assert_eq!(chunks.concat(), rows);
    }

    #[test]
    fn a_row_over_85_kb_is_refused_before_sending() {
        let big = json!({"cells": [{"column": "T", "value": "y".repeat(90 * 1024)}]});
        let err = chunk_rows(vec![json!({"cells": []}), big], 1_000_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`rows[1]`"), "{err}");
    }
}
