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

use super::checks::{self, MAX_VERIFY_ROWS, Verification};
use super::error::{ToolError, ToolResult};
use super::{
    Coda, ListOutput, MAX_FETCH_ALL_CAP, MutationOutput, MutationState, Object, PageArgs, Reply,
    input, output, queued_note, required, row_query_in, run,
};
use crate::call;
use crate::client::{ApiRequest, CodaError};

/// Least time left in the call for a bulk update to start another row.
const MIN_ROW_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Rows listed when a row name is shared by several.
const NAME_CANDIDATES: u32 = 10;
use crate::ids::doc_id;
use crate::ratelimit::RequestClass;

/// Coda's limit for one row edit, in its own size measure.
pub const MAX_ROW_BYTES: usize = 85 * 1024;
/// Row ids per `DELETE …/rows` request.
const DELETE_CHUNK: usize = 500;
/// Up to this many `rowIds` of a bulk delete are checked one read each;
/// more, against one listing of the table.
const CHECK_EACH_MAX: usize = 5;
/// Rows read back per upserted row by `verify`: those sharing its first key.
const UPSERT_MATCHES_READ: usize = 100;

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
    #[schemars(schema_with = "crate::schema::scalar")]
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
    /// Keep only these columns' values (names or ids, as the values are keyed).
    pub columns: Option<Vec<String>>,
    /// Return Coda's whole row objects (href, index, browserLink, timestamps) instead of id, name and values.
    #[serde(default)]
    pub full_rows: bool,
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
    /// Row id (i-…) or the display-column value (a value several rows share is refused, listing their ids).
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
    /// Wait until applied, re-read the written rows and report any value Coda stored differently (implies wait).
    #[serde(default)]
    pub verify: bool,
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
    /// Wait until applied, re-read the written rows and report any value Coda stored differently (implies wait).
    #[serde(default)]
    pub verify: bool,
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
    /// Row id (i-…) or display value (a write refuses a value that several rows share, listing their ids).
    #[serde(alias = "row_id_or_name")]
    pub row_id_or_name: String,
    /// New cell values {"Column name or id": value}.
    pub values: Object,
    #[serde(default)]
    pub disable_parsing: bool,
    #[serde(default)]
    pub wait: bool,
    /// Wait until applied, re-read the written rows and report any value Coda stored differently (implies wait).
    #[serde(default)]
    pub verify: bool,
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
    /// Row id (i-…) or display value (a write refuses a value that several rows share, listing their ids).
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
    /// Row ids (i-…) to delete; names are refused (coda_delete_row takes one by name).
    pub row_ids: Option<Vec<String>>,
    /// Or delete every row matching this filter (ids are looked up first).
    pub filter: Option<RowFilter>,
    #[serde(default)]
    pub wait: bool,
    /// Only report which rows would be deleted (ids and names); delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowUpdate {
    /// Row id (i-…) or display value (a write refuses a value that several rows share, listing their ids).
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
    /// Wait until applied, re-read the written rows and report any value Coda stored differently (implies wait).
    #[serde(default)]
    pub verify: bool,
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
    /// Row id (i-…) or display value (a write refuses a value that several rows share, listing their ids).
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
    /// The last request's id (the only one unless the rows were split; see requestIds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// One requestId per request Coda accepted.
    pub request_ids: Vec<String>,
    /// Ids of inserted rows (only without keyColumns).
    pub added_row_ids: Vec<String>,
    /// Requests made (rows are chunked by size).
    pub requests: usize,
    /// Present when `wait` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
    /// Present when `verify` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Rows in the requests Coda accepted (the first rowsAccepted rows; all of them unless `error` is set).
    pub rows_accepted: usize,
    /// Rows after those, in a request that failed after it was sent: they may have been written. List the table before sending them again.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_outcome_unknown: usize,
    /// The last rows, not sent because a request before them failed: they were not written.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_not_sent: usize,
    /// A later request failed: what was accepted, what may have been written and what was not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when Coda queued the writes and they are not known to be applied yet: they stand (do not resend them) and how to learn when they are applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One row of a bulk update, with coda-enhanced's keys.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowResult {
    /// The rowIdOrName of the update.
    pub row_id: String,
    /// Coda accepted the update (2xx), also when its answer was lost
    /// (then `error` says so, and there is no requestId).
    pub success: bool,
    /// Coda's answer ({requestId, id}) when it accepted the update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Object>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shape of coda-enhanced's bulk update (`results`, `totalUpdates`,
/// `successful`, `failed`).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpdateOutput {
    pub total_updates: usize,
    /// Updates Coda accepted.
    pub successful: usize,
    pub failed: usize,
    /// Per-row outcome (one PUT per row), empty when done as one upsert.
    pub results: Vec<RowResult>,
    /// Request ids of the upsert path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
    /// The upsert path stopped at a failed request: which updates were accepted, which may have been applied, which were not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when Coda queued the writes and they are not known to be applied yet: they stand (do not resend them) and how to learn when they are applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
    /// Present when `verify` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRowsOutput {
    /// The last request's id (the only one unless there were more than 500 rows; see requestIds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Rows Coda accepted for deletion (Coda's key; the same as deletedRowIds).
    pub row_ids: Vec<String>,
    /// Rows in the delete requests Coda accepted.
    pub deleted_row_ids: Vec<String>,
    pub request_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
    /// A later request failed; deletedRowIds lists what was accepted before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present when Coda queued the writes and they are not known to be applied yet: they stand (do not resend them) and how to learn when they are applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Rows not deleted: their request was refused by Coda, or not sent because an earlier one failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_deleted_row_ids: Vec<String>,
    /// Rows in a request that failed after it was sent: they may have been deleted. Read them before deciding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcome_unknown_row_ids: Vec<String>,
    /// Row ids of rows not in the table (checked before deleting): there was nothing to delete, and they were not sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_row_ids: Vec<String>,
    /// True when the table has more rows than this server lists (10,000), so the rowIds could not be checked: Coda deletes only the rows it has, and lists an id of a row not in the table as deleted all the same.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub row_ids_unchecked: bool,
    /// dryRun: the rows that would be deleted ({id, name}); nothing was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<Vec<Value>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A cell value as Coda's API takes it (`Value` in its spec): a scalar, a
/// list of them, or a list of such lists; nothing nested deeper, no
/// `null`, no object.
fn check_value(v: &Value, at: &str) -> ToolResult<()> {
    check_value_in(v, at, 0)
}

/// [`check_value`] for a value `depth` lists down.
fn check_value_in(v: &Value, at: &str, depth: usize) -> ToolResult<()> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        Value::Array(_) if depth >= 2 => Err(ToolError::arg(
            at,
            "nests lists more than two deep: a Coda cell value is a value, a list of values, or a list of lists of values",
        )),
        Value::Array(items) => items
            .iter()
            .try_for_each(|i| check_value_in(i, at, depth + 1)),
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

/// Room a row's report takes in a bulk update's result (`{rowId,
/// success, data | error}`): at most `--max-result-bytes` / this many
/// updates are taken per call.
pub const BULK_ROW_REPORT_BYTES: usize = 200;

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
    // The options of one write, each its tool's own argument.
    #[allow(clippy::too_many_arguments)]
    async fn write_rows(
        &self,
        d: &str,
        t: &str,
        edits: Vec<Value>,
        key_columns: Option<&[String]>,
        disable_parsing: bool,
        wait: bool,
        verify: bool,
    ) -> ToolResult<RowsWriteOutput> {
        let row_count = edits.len();
        let dl = self.deadline();
        let columns = self.columns(d, t, dl).await?;
        for (i, e) in edits.iter().enumerate() {
            checks::check_cells(&columns, &checks::edit_cells(e), &format!("rows[{i}]"))?;
        }
        if let Some(k) = key_columns {
            checks::check_keys(&columns, k)?;
            checks::check_rows_carry_keys(&columns, &edits, k)?;
        }
        let sent: Vec<Vec<Value>> = if verify {
            edits.iter().map(checks::edit_cells).collect()
        } else {
            Vec::new()
        };
        let wait = wait || verify;
        let chunks = chunk_rows(edits, self.cfg.row_chunk_bytes)?;
        let mut out = RowsWriteOutput {
            row_count,
            request_id: None,
            request_ids: Vec::new(),
            added_row_ids: Vec::new(),
            requests: 0,
            mutation: None,
            verification: None,
            rows_accepted: 0,
            rows_outcome_unknown: 0,
            rows_not_sent: 0,
            error: None,
            note: None,
        };
        let total = chunks.len();
        for chunk in chunks {
            let n = chunk.len();
            let mut body = json!({"rows": chunk});
            if let Some(k) = key_columns {
                body["keyColumns"] = json!(k);
            }
            let req = ApiRequest::new(Method::POST, &["docs", d, "tables", t, "rows"])
                .class(RequestClass::DocContentWrite)
                .queued()
                .query_opt("disableParsing", disable_parsing.then_some(true))
                .body(body);
            let resp = match self.call(req, dl).await {
                Ok(r) => r,
                // Earlier chunks were accepted: report them as accepted
                // (a failed call would make a model resend them).
                Err(e) if out.requests > 0 => {
                    let unknown = e.outcome_unknown();
                    if unknown {
                        out.rows_outcome_unknown = n;
                    }
                    out.rows_not_sent = row_count - out.rows_accepted - out.rows_outcome_unknown;
                    out.error = Some(if unknown {
                        format!(
                            "request {} of {total} failed after it was sent: {e}. The first {} of {row_count} rows were accepted; the next {n} may have been inserted (do not resend them before listing the table); the last {} were not sent",
                            out.requests + 1,
                            out.rows_accepted,
                            out.rows_not_sent
                        )
                    } else if e.not_sent() {
                        format!(
                            "request {} of {total} was NOT sent: {e}. The first {} of {row_count} rows (requests 1 to {}) were sent and accepted; the last {} (requests {} to {total}) were not sent, so they were NOT written: send them again",
                            out.requests + 1,
                            out.rows_accepted,
                            out.requests,
                            out.rows_not_sent,
                            out.requests + 1,
                        )
                    } else {
                        format!(
                            "request {} of {total} was refused: {e}. The first {} of {row_count} rows were accepted; the last {} were not written",
                            out.requests + 1,
                            out.rows_accepted,
                            out.rows_not_sent
                        )
                    });
                    break;
                }
                Err(e) => return Err(e),
            };
            out.requests += 1;
            out.rows_accepted += n;
            call::progress(
                out.rows_accepted as f64,
                Some(row_count as f64),
                "rows sent",
            )
            .await;
            if let Some(id) = resp.get("requestId").and_then(Value::as_str) {
                out.request_ids.push(id.to_owned());
            }
            if let Some(ids) = resp.get("addedRowIds").and_then(Value::as_array) {
                out.added_row_ids
                    .extend(ids.iter().filter_map(Value::as_str).map(str::to_owned));
            }
        }
        out.request_id = out.request_ids.last().cloned();
        if wait {
            out.mutation = Some(self.wait_all(&out.request_ids, out.requests, dl).await);
        }
        out.note = queued_note(&out.request_ids, out.mutation.as_ref());
        if verify {
            let mut v = Verification::default();
            if let Some(m) = out.mutation.as_ref().filter(|m| !m.completed) {
                v.stop(checks::not_applied(m));
            } else if let Some(keys) = key_columns {
                self.verify_upserted(d, t, &columns, keys, &sent, &mut v)
                    .await;
            } else {
                // Coda returns addedRowIds in the order the rows were sent;
                // a row without one cannot be re-read, so is not checked.
                let written = out.rows_accepted.min(sent.len());
                if out.added_row_ids.len() < written.min(MAX_VERIFY_ROWS) {
                    v.stop(format!(
                        "Coda's answers gave {} row ids for the {written} rows it accepted, so the rows without one were not re-read",
                        out.added_row_ids.len()
                    ));
                }
                for (id, cells) in out.added_row_ids.iter().zip(&sent).take(MAX_VERIFY_ROWS) {
                    let req = ApiRequest::get(&["docs", d, "tables", t, "rows", id]);
                    match self.call(req, self.deadline()).await {
                        Ok(row) => checks::compare_row(&columns, id, cells, &row, &mut v),
                        Err(e) => {
                            v.stop(format!("could not re-read row {id}: {e}"));
                            break;
                        }
                    }
                }
                v.cap(out.added_row_ids.len());
            }
            out.verification = Some(v.finish());
        }
        Ok(out)
    }

    /// `verify` for an upsert, which returns no row ids: each row sent (the
    /// first [`MAX_VERIFY_ROWS`]) is looked up by its first key column
    /// (one listing, at most [`UPSERT_MATCHES_READ`] rows), narrowed to
    /// the rows whose every key matches, and each such row is compared.
    /// A row sent that no row matches afterwards is a mismatch on its
    /// first key (nothing stored).
    async fn verify_upserted(
        &self,
        d: &str,
        t: &str,
        columns: &[Value],
        keys: &[String],
        sent: &[Vec<Value>],
        v: &mut Verification,
    ) {
        for (i, cells) in sent.iter().enumerate().take(MAX_VERIFY_ROWS) {
            let key_cells = checks::key_cells(columns, keys, cells);
            let Some((first_id, first_name, first_value)) = key_cells.first() else {
                continue;
            };
            let query = match row_query_in(columns, first_id, first_value) {
                Ok(q) => q,
                Err(_) => {
                    v.stop(format!("rows[{i}] was not re-read: its key {first_name} is not a string, number or boolean, which a row query cannot look up"));
                    continue;
                }
            };
            let req = ApiRequest::get(&["docs", d, "tables", t, "rows"])
                .query("query", query)
                .query("limit", UPSERT_MATCHES_READ);
            let listed = match self.call(req, self.deadline()).await {
                Ok(l) => l,
                Err(e) => {
                    v.stop(format!("could not re-read rows[{i}]: {e}"));
                    break;
                }
            };
            if listed.get("nextPageToken").is_some_and(|t| !t.is_null()) {
                v.stop(format!("rows[{i}]: more than {UPSERT_MATCHES_READ} rows have its {first_name}; only those were compared"));
            }
            let items = listed
                .get("items")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut matched = 0;
            for row in items {
                let all_keys = key_cells.iter().all(|(id, _, want)| {
                    checks::stored_value(row, id).is_some_and(|got| checks::same(want, got))
                });
                if !all_keys {
                    continue;
                }
                matched += 1;
                let id = row.get("id").and_then(Value::as_str).unwrap_or("");
                checks::compare_row(columns, id, cells, row, v);
            }
            if matched == 0 {
                v.mismatches.push(checks::Mismatch {
                    row_id: format!("rows[{i}]"),
                    column: first_name.clone(),
                    intended: first_value.clone(),
                    stored: None,
                });
            }
        }
        v.cap(sent.len());
    }

    /// Columns of a table for a row filter, or none when they cannot be read
    /// (the filter then falls back to guessing ids by their `c-` prefix).
    async fn filter_query(&self, d: &str, t: &str, f: &RowFilter) -> ToolResult<String> {
        required("filter.column", &f.column)?;
        match self.columns(d, t, self.deadline()).await {
            Ok(cols) => row_query_in(&cols, &f.column, &f.value),
            Err(_) => row_query_in(&[], &f.column, &f.value),
        }
    }

    /// The id of the row a call names: `raw` itself when it is a row id,
    /// else the one row whose display value is `raw`. Coda uses an
    /// arbitrary row when several share a name, so a name that matches no
    /// row or several is refused, with the candidates.
    pub(crate) async fn row_id(
        &self,
        d: &str,
        t: &str,
        raw: &str,
        arg: &str,
        deadline: std::time::Instant,
    ) -> ToolResult<String> {
        let req = ApiRequest::get(&["docs", d, "tables", t, "rows", raw]);
        let row = match self.client.send(&req, deadline).await {
            Ok(r) => r.body,
            Err(e) if e.status() == Some(404) => {
                return Err(ToolError::arg(
                    arg,
                    format!("no row {raw:?} in table {t}: {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if row.get("id").and_then(Value::as_str) == Some(raw) {
            return Ok(raw.to_owned());
        }
        let columns = self.columns(d, t, deadline).await?;
        let Some(display) = columns
            .iter()
            .find(|c| c.get("display").and_then(Value::as_bool) == Some(true))
            .and_then(|c| c.get("id").and_then(Value::as_str))
        else {
            return Err(ToolError::arg(
                arg,
                format!(
                    "{raw:?} is a row name and table {t} has no display column to check it is unique: give the row id"
                ),
            ));
        };
        let query = row_query_in(&columns, display, &Value::String(raw.to_owned()))?;
        let req = ApiRequest::get(&["docs", d, "tables", t, "rows"])
            .query("query", query)
            .query("limit", NAME_CANDIDATES);
        let found = self.call(req, deadline).await?;
        let ids: Vec<&str> = found
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .collect();
        let more = found.get("nextPageToken").is_some_and(|t| !t.is_null());
        match ids.as_slice() {
            [one] if !more => Ok((*one).to_owned()),
            [] => Err(ToolError::arg(
                arg,
                format!("no row of table {t} has the display value {raw:?}"),
            )),
            _ => Err(ToolError::ambiguous(
                arg,
                raw,
                "row",
                &format!("table {t}"),
                &ids,
                more,
            )),
        }
    }

    async fn verify_row(
        &self,
        d: &str,
        t: &str,
        row: &str,
        cells: &[Value],
        mutation: Option<&MutationState>,
        v: &mut Verification,
    ) {
        if let Some(m) = mutation.filter(|m| !m.completed) {
            v.stop(checks::not_applied(m));
            return;
        }
        let columns = match self.columns(d, t, self.deadline()).await {
            Ok(c) => c,
            Err(e) => {
                v.stop(format!("could not read the table's columns: {e}"));
                return;
            }
        };
        match self
            .call(
                ApiRequest::get(&["docs", d, "tables", t, "rows", row]),
                self.deadline(),
            )
            .await
        {
            Ok(stored) => {
                let id = stored
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or(row)
                    .to_owned();
                checks::compare_row(&columns, &id, cells, &stored, v);
            }
            Err(e) => v.stop(format!("could not re-read row {row}: {e}")),
        }
    }

    /// The rows (id, name) `filter` matches, or without one every row of
    /// the table, from one listing (a read per 500 rows). Past
    /// [`MAX_FETCH_ALL_CAP`] rows a filter is refused (narrow it), and
    /// the whole table is `None` (too many to list).
    async fn matching_row_ids(
        &self,
        d: &str,
        t: &str,
        filter: Option<&RowFilter>,
    ) -> ToolResult<Option<Vec<(String, Value)>>> {
        let mut req = ApiRequest::get(&["docs", d, "tables", t, "rows"]);
        if let Some(f) = filter {
            req = req.query("query", self.filter_query(d, t, f).await?);
        }
        let req = req.query("limit", 500);
        let (rows, capped) = self
            .list_all(req, MAX_FETCH_ALL_CAP, self.deadline())
            .await?;
        if capped && filter.is_some() {
            return Err(ToolError::arg(
                "filter",
                format!("matches more than {MAX_FETCH_ALL_CAP} rows; narrow it"),
            ));
        }
        Ok((!capped).then(|| {
            rows.iter()
                .filter_map(|r| {
                    let id = r.get("id").and_then(Value::as_str)?.to_owned();
                    Some((id, r.get("name").cloned().unwrap_or(Value::Null)))
                })
                .collect()
        }))
    }
}

/// A row as list results carry it by default: id, name and values (only
/// `columns`, when given).
fn slim_row(row: Value, full: bool, columns: Option<&[String]>) -> Value {
    let mut row = row;
    if let (Some(cols), Some(values)) = (
        columns,
        row.get_mut("values").and_then(Value::as_object_mut),
    ) {
        values.retain(|k, _| cols.iter().any(|c| c == k));
    }
    if full {
        return row;
    }
    let mut o = serde_json::Map::new();
    for k in ["id", "name", "values"] {
        if let Some(v) = row.get(k) {
            o.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(o)
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
impl Coda {
    /// List rows of a table or view: id, name and values (columns keeps some values; fullRows for Coda's whole objects). Filter with `filter` {column, value} (exact match) or a raw `query` (syntax: resource coda://guide/rows). useColumnNames keys values by name. Paged: limit, pageToken → nextPageToken, or fetchAll; large results stop at a size budget with nextPageToken.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListRowsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            let query = match (&p.query, &p.filter) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::arg(
                        "filter",
                        "give either query or filter, not both",
                    ));
                }
                (Some(q), None) => Some(q.clone()),
                (None, Some(f)) => Some(c.filter_query(&d, &p.table_id_or_name, f).await?),
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
            let full = p.full_rows;
            let cols = p.columns.clone().filter(|c| !c.is_empty());
            let shape = move |v: Value| slim_row(v, full, cols.as_deref());
            Reply::json(c.list_shaped(req, &p.page, c.deadline(), &shape).await?)
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
        let c = self;
        run(a, |p: GetRowParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            required("rowIdOrName", &p.row_id_or_name)?;
            // An id-shaped value is read as the id it looks like, with no
            // lookup first; a name is checked for rows that share it.
            let row = if super::id_shaped(&p.row_id_or_name, &["i-"]) {
                p.row_id_or_name.clone()
            } else {
                c.row_id(
                    &d,
                    &p.table_id_or_name,
                    &p.row_id_or_name,
                    "rowIdOrName",
                    c.deadline(),
                )
                .await?
            };
            let req = ApiRequest::get(&["docs", &d, "tables", &p.table_id_or_name, "rows", &row])
                .query_opt("useColumnNames", p.use_column_names)
                .query_opt("valueFormat", value_format(p.value_format));
            c.object(req).await
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
        let c = self;
        run(a, |p: CreateRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
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
                    p.verify,
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
        let c = self;
        run(a, |p: UpsertRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
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
                    p.verify,
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
        let c = self;
        run(a, |p: UpdateRowParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            required("rowIdOrName", &p.row_id_or_name)?;
            let cells = cells_from_values(&p.values, "values")?;
            let columns = c.columns(&d, &p.table_id_or_name, c.deadline()).await?;
            checks::check_cells(&columns, &cells, "values")?;
            let row = c
                .row_id(
                    &d,
                    &p.table_id_or_name,
                    &p.row_id_or_name,
                    "rowIdOrName",
                    c.deadline(),
                )
                .await?;
            let req = ApiRequest::new(
                Method::PUT,
                &["docs", &d, "tables", &p.table_id_or_name, "rows", &row],
            )
            .class(RequestClass::DocContentWrite)
            .replayable()
            .query_opt("disableParsing", p.disable_parsing.then_some(true))
            .body(json!({"row": {"cells": cells.clone()}}));
            let mut out = c.mutate(req, p.wait || p.verify, c.deadline()).await?;
            if p.verify {
                let mut v = Verification::default();
                c.verify_row(
                    &d,
                    &p.table_id_or_name,
                    &row,
                    &cells,
                    out.mutation.as_ref(),
                    &mut v,
                )
                .await;
                out.verification = Some(v.finish());
            }
            Reply::json(out)
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
        let c = self;
        run(a, |p: RowRefParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            required("rowIdOrName", &p.row_id_or_name)?;
            let row = c
                .row_id(
                    &d,
                    &p.table_id_or_name,
                    &p.row_id_or_name,
                    "rowIdOrName",
                    c.deadline(),
                )
                .await?;
            let req = ApiRequest::new(
                Method::DELETE,
                &["docs", &d, "tables", &p.table_id_or_name, "rows", &row],
            )
            .class(RequestClass::DocContentWrite);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Delete many rows: by rowIds (checked first: ids of rows not in the table are listed in missingRowIds and not sent), or every row matching filter {column, value}.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DeleteRowsParams>(),
        output_schema = output::<DeleteRowsOutput>()
    )]
    async fn coda_delete_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: DeleteRowsParams| async move {
            let d = doc_id(&p.doc_id)?;
            let t = p.table_id_or_name.as_str();
            required("tableIdOrName", t)?;
            let given = match (&p.row_ids, &p.filter) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::arg(
                        "rowIds",
                        "give either rowIds or filter, not both",
                    ));
                }
                (Some(ids), None) if ids.is_empty() => {
                    return Err(ToolError::arg("rowIds", "must not be empty"));
                }
                (Some(_), None) if p.dry_run => {
                    return Err(ToolError::arg("dryRun", "works with filter; with rowIds you already know what would be deleted"));
                }
                (Some(ids), None) => {
                    // Coda answers a row delete 202 whatever the ids and
                    // deletes the rows it has: a name or a link would delete
                    // nothing and still be reported deleted.
                    let not_ids: Vec<String> = ids
                        .iter()
                        .filter(|i| !super::id_shaped(i, &["i-"]))
                        .map(|i| format!("{:?}", crate::client::model_text(i, 100)))
                        .collect();
                    if !not_ids.is_empty() {
                        return Err(ToolError::arg(
                            "rowIds",
                            format!(
                                "takes row ids (i-…), and {} of them {} not: {}{}. Coda answers a delete 202 whatever the ids and deletes only rows it has, so these would delete nothing and still read as deleted; find the ids with coda_list_rows, delete one row by name with coda_delete_row, or delete by filter",
                                not_ids.len(),
                                if not_ids.len() == 1 { "is" } else { "are" },
                                not_ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                                if not_ids.len() > 10 { ", …" } else { "" }
                            ),
                        ));
                    }
                    Some(ids)
                }
                (None, Some(_)) => None,
                (None, None) => {
                    return Err(ToolError::arg("rowIds", "is required (or give filter)"));
                }
            };
            // Coda answers a bulk delete 202 and echoes every id it was
            // sent, deleting only the rows it has, so an id of a row that
            // is not there would read as deleted: it is reported and not
            // sent. A few ids are looked up one read each (a big table
            // would take a read per 500 rows); more are checked against
            // one listing of the table, which is also what a filter reads.
            let listed = match &given {
                Some(ids) if ids.len() <= CHECK_EACH_MAX => {
                    let dl = c.deadline();
                    let mut present = Vec::new();
                    for id in ids.iter() {
                        let req = ApiRequest::get(&["docs", &d, "tables", t, "rows", id]);
                        match c.client.send(&req, dl).await {
                            // By id, not a row that has this text as its name.
                            Ok(r) if r.body.get("id").and_then(Value::as_str) == Some(id) => {
                                present.push((id.clone(), Value::Null));
                            }
                            Ok(_) => {}
                            Err(e) if e.status() == Some(404) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Some(present)
                }
                _ => c.matching_row_ids(&d, t, p.filter.as_ref()).await?,
            };
            if p.dry_run {
                return Reply::json(DeleteRowsOutput {
                    would_delete: Some(listed.unwrap_or_default().into_iter().map(|(id, name)| json!({"id": id, "name": name})).collect()),
                    ..DeleteRowsOutput::default()
                });
            }
            let dl = c.deadline();
            let mut out = DeleteRowsOutput {
                row_ids_unchecked: given.is_some() && listed.is_none(),
                ..DeleteRowsOutput::default()
            };
            let ids: Vec<String> = match (given, listed) {
                (Some(given), Some(rows)) => {
                    let mut seen = std::collections::HashSet::<String>::new();
                    for (id, _) in rows {
                        seen.extend(Some(id));
                    }
                    let mut ids = Vec::new();
                    for id in given {
                        if seen.contains(id) {
                            ids.push(id.clone());
                        } else {
                            out.missing_row_ids.push(id.clone());
                        }
                    }
                    ids
                }
                (Some(given), None) => given.clone(),
                (None, rows) => rows.unwrap_or_default().into_iter().map(|(id, _)| id).collect(),
            };
            let chunks: Vec<&[String]> = ids.chunks(DELETE_CHUNK).collect();
            // Requests Coda accepted, for waiting on them.
            let mut accepted = 0;
            for (i, chunk) in chunks.iter().enumerate() {
                let req = ApiRequest::new(Method::DELETE, &["docs", &d, "tables", t, "rows"])
                    .class(RequestClass::DocContentWrite)
                    .queued()
                    .body(json!({"rowIds": chunk}));
                let resp = match c.call(req, dl).await {
                    Ok(r) => r,
                    Err(e) if i > 0 => {
                        let later = chunks[i + 1..].concat();
                        out.error = Some(if e.outcome_unknown() {
                            out.outcome_unknown_row_ids = chunk.to_vec();
                            out.not_deleted_row_ids = later;
                            format!(
                                "request {} of {} failed after it was sent: {e}. The rows of earlier requests were deleted; the rows of this one (outcomeUnknownRowIds) may have been deleted; later ones were not sent (notDeletedRowIds)",
                                i + 1,
                                chunks.len()
                            )
                        } else if e.not_sent() {
                            out.not_deleted_row_ids = chunks[i..].concat();
                            format!(
                                "request {} of {} was NOT sent: {e}. Requests 1 to {i} were sent and their rows deleted (deletedRowIds); requests {} to {} were not sent, so their rows were NOT deleted (notDeletedRowIds): send them again",
                                i + 1,
                                chunks.len(),
                                i + 1,
                                chunks.len()
                            )
                        } else {
                            out.not_deleted_row_ids = chunks[i..].concat();
                            format!(
                                "request {} of {} was refused: {e}. The rows of earlier requests were deleted; the rest were not (notDeletedRowIds)",
                                i + 1,
                                chunks.len()
                            )
                        });
                        break;
                    }
                    Err(e) => return Err(e),
                };
                out.deleted_row_ids.extend(chunk.iter().cloned());
                accepted += 1;
                if let Some(id) = resp.get("requestId").and_then(Value::as_str) {
                    out.request_ids.push(id.to_owned());
                }
            }
            out.request_id = out.request_ids.last().cloned();
            out.row_ids = out.deleted_row_ids.clone();
            if p.wait {
                out.mutation = Some(c.wait_all(&out.request_ids, accepted, dl).await);
            }
            out.note = queued_note(&out.request_ids, out.mutation.as_ref());
            Reply::json(out)
        })
        .await
    }

    /// Update several rows with different values: updates [{rowIdOrName, values}]. With keyColumns it is one upsert (fast, rate-limit friendly) that matches rows by their key values: every update must contain every key column, and rowIdOrName is not used. Otherwise one update per row, paced by the rate limiter, with a per-row report.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<BulkUpdateParams>(),
        output_schema = output::<BulkUpdateOutput>()
    )]
    async fn coda_bulk_update_rows(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: BulkUpdateParams| async move {
            let d = doc_id(&p.doc_id)?;
            let t = p.table_id_or_name.as_str();
            required("tableIdOrName", t)?;
            if p.updates.is_empty() {
                return Err(ToolError::arg("updates", "must contain at least one update"));
            }
            if let Some(keys) = p.key_columns.as_ref().filter(|k| !k.is_empty()) {
                // An upsert finds rows by their key values only: an update
                // without them would insert a new row and leave the one
                // named by rowIdOrName unchanged.
                for (i, u) in p.updates.iter().enumerate() {
                    if let Some(k) = keys.iter().find(|k| !u.values.contains_key(k.as_str())) {
                        return Err(ToolError::arg(
                            &format!("updates[{i}].values"),
                            format!("must contain the key column {k:?}: with keyColumns, rows are matched by their key values and rowIdOrName is not used"),
                        ));
                    }
                }
                let e = p
                    .updates
                    .iter()
                    .enumerate()
                    .map(|(i, u)| Ok(json!({"cells": cells_from_values(&u.values, &format!("updates[{i}].values"))?})))
                    .collect::<ToolResult<Vec<_>>>()?;
                let w = c.write_rows(&d, t, e, Some(keys), p.disable_parsing, p.wait, p.verify).await?;
                return Reply::json(BulkUpdateOutput {
                    total_updates: w.row_count,
                    successful: w.rows_accepted,
                    failed: w.row_count - w.rows_accepted,
                    results: Vec::new(),
                    request_ids: w.request_ids,
                    error: w.error,
                    note: w.note,
                    mutation: w.mutation,
                    verification: w.verification,
                });
            }
            // One report per row: as many as the result budget can hold.
            let most = (c.cfg.max_result_bytes / BULK_ROW_REPORT_BYTES).max(1);
            if p.updates.len() > most {
                tracing::info!(
                    updates = p.updates.len(),
                    most,
                    "bulk update refused: more rows than its report can hold"
                );
                return Err(ToolError::arg(
                    "updates",
                    format!(
                        "{} updates, but one call takes at most {most}: each row gets its own report, and they must fit the result budget (--max-result-bytes {}, about {BULK_ROW_REPORT_BYTES} bytes a row); send them in parts, or give keyColumns to upsert them in bulk",
                        p.updates.len(),
                        c.cfg.max_result_bytes
                    ),
                ));
            }
            let mut cells = Vec::with_capacity(p.updates.len());
            let columns = c.columns(&d, t, c.deadline()).await?;
            for (i, u) in p.updates.iter().enumerate() {
                required(&format!("updates[{i}].rowIdOrName"), &u.row_id_or_name)?;
                let at = format!("updates[{i}].values");
                let row_cells = cells_from_values(&u.values, &at)?;
                checks::check_cells(&columns, &row_cells, &at)?;
                cells.push(row_cells);
            }
            let sent = if p.verify { cells.clone() } else { Vec::new() };
            let total = p.updates.len();
            let mut results = Vec::new();
            // One deadline for the call: a row is not started when less
            // time is left than the slowest row took (or MIN_ROW_TIME), so
            // the call answers in time and says which rows were not sent.
            let dl = c.deadline();
            let mut slowest = MIN_ROW_TIME;
            // Bytes of Coda's answers kept in `results`, and the answers
            // left out past the result budget.
            let mut data_bytes = 0usize;
            let mut data_left_out = 0usize;
            for (u, cells) in p.updates.iter().zip(cells) {
                let left = dl.saturating_duration_since(std::time::Instant::now());
                if left < slowest {
                    results.push(RowResult {
                        row_id: u.row_id_or_name.clone(),
                        success: false,
                        request_id: None,
                        data: None,
                        error: Some(format!(
                            "not sent: the call deadline was near ({} ms left); nothing was written to this row, send it again in a new call",
                            left.as_millis()
                        )),
                    });
                    continue;
                }
                let started = std::time::Instant::now();
                let row = match c.row_id(&d, t, &u.row_id_or_name, "rowIdOrName", dl).await {
                    Ok(row) => row,
                    Err(e) => {
                        results.push(RowResult {
                            row_id: u.row_id_or_name.clone(),
                            success: false,
                            request_id: None,
                            data: None,
                            error: Some(format!(
                                "not sent: the row could not be found ({e}); nothing was written to this row"
                            )),
                        });
                        continue;
                    }
                };
                let req = ApiRequest::new(Method::PUT, &["docs", &d, "tables", t, "rows", &row])
                    .class(RequestClass::DocContentWrite)
                    .queued()
                    .replayable()
                    .query_opt("disableParsing", p.disable_parsing.then_some(true))
                    .body(json!({"row": {"cells": cells}}));
                results.push(match c.call(req, dl).await {
                    Ok(v) => {
                        // Coda's answers are kept until the result is
                        // built, up to 500 of them: only while they fit
                        // the result budget (Coda's is `{requestId, id}`;
                        // past it, the request id alone says enough).
                        let len = super::json_len(&v);
                        let keep = data_bytes + len <= c.cfg.max_result_bytes;
                        if keep {
                            data_bytes += len;
                        } else {
                            data_left_out += 1;
                        }
                        RowResult {
                            row_id: u.row_id_or_name.clone(),
                            success: true,
                            request_id: v.get("requestId").and_then(Value::as_str).map(str::to_owned),
                            data: if keep { v.as_object().cloned() } else { None },
                            error: None,
                        }
                    }
                    // Coda accepted it (2xx) and its answer is lost: the
                    // row is updated, so it is not a failure; the error
                    // says why there is no requestId, and not to resend.
                    Err(e @ ToolError::Coda(CodaError::Accepted { .. })) => RowResult {
                        row_id: u.row_id_or_name.clone(),
                        success: true,
                        request_id: None,
                        data: None,
                        error: Some(e.to_string()),
                    },
                    Err(e) => RowResult {
                        row_id: u.row_id_or_name.clone(),
                        success: false,
                        request_id: None,
                        data: None,
                        error: Some(e.to_string()),
                    },
                });
                slowest = slowest.max(started.elapsed());
                call::progress(results.len() as f64, Some(total as f64), "rows updated").await;
            }
            let ids: Vec<String> = results.iter().filter_map(|r| r.request_id.clone()).collect();
            let successful = results.iter().filter(|r| r.success).count();
            let mutation = if p.wait || p.verify { Some(c.wait_all(&ids, successful, c.deadline()).await) } else { None };
            let verification = if p.verify {
                let mut v = Verification::default();
                let written: Vec<_> = results.iter().zip(&sent).filter(|(r, _)| r.success).collect();
                for (r, cells) in written.iter().take(MAX_VERIFY_ROWS) {
                    c.verify_row(&d, t, &r.row_id, cells, mutation.as_ref(), &mut v).await;
                    if v.stopped() {
                        break;
                    }
                }
                v.cap(written.len());
                Some(v.finish())
            } else {
                None
            };
            let mut note = queued_note(&ids, mutation.as_ref());
            if data_left_out > 0 {
                let left = format!(
                    "Coda's answers to {data_left_out} accepted updates were larger than the result budget ({} bytes, --max-result-bytes) together with the others, so their results carry the requestId without Coda's answer (data)",
                    c.cfg.max_result_bytes
                );
                note = Some(match note {
                    Some(n) => format!("{n}. {left}"),
                    None => left,
                });
            }
            Reply::json(BulkUpdateOutput {
                total_updates: total,
                successful,
                failed: results.len() - successful,
                results,
                request_ids: Vec::new(),
                error: None,
                note,
                mutation,
                verification,
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
        let c = self;
        run(a, |p: PushButtonParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            required("rowIdOrName", &p.row_id_or_name)?;
            required("columnIdOrName", &p.column_id_or_name)?;
            let row = c
                .row_id(
                    &d,
                    &p.table_id_or_name,
                    &p.row_id_or_name,
                    "rowIdOrName",
                    c.deadline(),
                )
                .await?;
            let column = c
                .column_id(
                    &d,
                    &p.table_id_or_name,
                    &p.column_id_or_name,
                    "columnIdOrName",
                    c.deadline(),
                )
                .await?;
            let req = ApiRequest::new(
                Method::POST,
                &[
                    "docs",
                    &d,
                    "tables",
                    &p.table_id_or_name,
                    "rows",
                    &row,
                    "buttons",
                    &column,
                ],
            )
            .class(RequestClass::DocContentWrite);
            c.write_reply(req, p.wait).await
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

    /// Regression: a cell value of lists nested three or more deep (past
    /// Coda's `Value`: a scalar, a list, or a list of lists) was sent as
    /// it came, for Coda to refuse or flatten.
    #[test]
    fn lists_nested_past_coda_value_are_rejected_naming_the_cell() {
        for ok in [json!([["a"], ["b", 2]]), json!([1, [2, 3]]), json!([])] {
            row_edit(&json!({"Tags": ok}), 0).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [json!([[["a"]]]), json!(["a", [1, [2]]])] {
            let err = row_edit(&json!({"Tags": bad}), 2)
                .map(|_| "accepted".to_owned())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                err.contains("`rows[2].Tags`") && err.contains("two deep"),
                "{bad}: {err}"
            );
            let err = row_edit(&json!({"cells": [{"column": "c-1", "value": bad}]}), 0)
                .map(|_| "accepted".to_owned())
                .unwrap_or_else(|e| e.to_string());
            assert!(err.contains("two deep"), "{bad}: {err}");
        }
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
