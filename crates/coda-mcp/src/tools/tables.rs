//! Toolsets `tables` (tables, views, columns, the table summary composite),
//! `formulas` and `controls`.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    COMPOSITE_CAP, Coda, ListOutput, Object, PageArgs, Reply, input, items_within, output,
    required, run, slim_column,
};
use crate::client::ApiRequest;
use crate::ids::doc_id;

/// Table or view.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TableType {
    Table,
    View,
}

fn table_types(t: &Option<Vec<TableType>>) -> Option<String> {
    t.as_ref().filter(|v| !v.is_empty()).map(|v| {
        v.iter()
            .map(|t| match t {
                TableType::Table => "table",
                TableType::View => "view",
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListTablesParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Only these kinds: ["table"], ["view"] or both (default).
    pub table_types: Option<Vec<TableType>>,
    /// Sort by "name" instead of document order.
    pub sort_by: Option<NameSort>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NameSort {
    Name,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id (table-…) or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchTablesParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Text to look for in table names (case-insensitive).
    pub query: String,
    /// Only these kinds: ["table"], ["view"] or both.
    pub table_types: Option<Vec<TableType>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListColumnsParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Only columns visible in the table/view.
    pub visible_only: Option<bool>,
    /// Return Coda's whole column objects (with every select option) instead of the slim form.
    #[serde(default)]
    pub full: bool,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Table id (grid-…), view id or name.
    #[serde(alias = "table_id_or_name")]
    pub table_id_or_name: String,
    /// Column id (c-…) or name.
    #[serde(alias = "column_id_or_name")]
    pub column_id_or_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListNamedParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Sort by "name" instead of document order.
    pub sort_by: Option<NameSort>,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormulaParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Named formula id (f-…) or name (a name several formulas share is refused, listing their ids).
    pub formula_id_or_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Control id (ctrl-…) or name (a name several controls share is refused, listing their ids).
    pub control_id_or_name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnBrief {
    #[schemars(with = "String")]
    pub id: Value,
    #[schemars(with = "String")]
    pub name: Value,
    /// Column format type (text, number, select, lookup, person, date…).
    #[schemars(with = "Option<String>")]
    pub r#type: Value,
    #[schemars(with = "Option<bool>")]
    pub is_array: Value,
    pub calculated: bool,
    pub display: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub formula: Option<Value>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryStats {
    pub total_columns: usize,
    pub calculated_columns: usize,
    /// Name of the display column, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_column: Option<String>,
}

/// The shape of coda-enhanced's table summary (`table`, `columns`,
/// `sampleData`, `stats`), with every column instead of the first page.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableSummary {
    /// The table's metadata (rowCount, parent page, displayColumn…); `type` is its tableType (table or view).
    pub table: Object,
    /// Every column (all pages of the column list).
    pub columns: Vec<ColumnBrief>,
    /// Up to 3 rows, values in rich format keyed by column name (fewer when they would pass the result budget).
    pub sample_data: Vec<Value>,
    pub stats: SummaryStats,
    /// Set when sample rows were left out to stay within the result budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The shape of coda-enhanced's table search (`items`, `searchQuery`,
/// `totalFound`), over every table instead of the first page.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchTablesOutput {
    /// Matching tables and views, as Coda lists them.
    pub items: Vec<Value>,
    pub search_query: String,
    pub total_found: usize,
    /// Tables and views looked at (all of them).
    pub tables_searched: usize,
    /// Set when some matches were left out to stay within the result budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[tool_router(router = tables_router, vis = "pub(crate)")]
impl Coda {
    /// List a doc's tables and views (id grid-…/table-…, name, tableType, parent page). Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListTablesParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_tables(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListTablesParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = ApiRequest::get(&["docs", &d, "tables"])
                .query_opt("tableTypes", table_types(&p.table_types))
                .query_opt("sortBy", p.sort_by.map(|_| "name"));
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Get a table's metadata: rowCount, displayColumn, parent page, sorts, layout, filter.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<TableParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_table(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: TableParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            c.object(ApiRequest::get(&[
                "docs",
                &d,
                "tables",
                &p.table_id_or_name,
            ]))
            .await
        })
        .await
    }

    /// One-call overview of a table before reading or writing rows: metadata, every column with its format type, and 3 sample rows.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<TableParams>(),
        output_schema = output::<TableSummary>()
    )]
    async fn coda_get_table_summary(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: TableParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            let t = p.table_id_or_name.as_str();
            let dl = c.deadline();
            let rows_req = ApiRequest::get(&["docs", &d, "tables", t, "rows"])
                .query("limit", 3)
                .query("valueFormat", "rich")
                .query("useColumnNames", true);
            let (table, columns, rows) = tokio::try_join!(
                c.call(ApiRequest::get(&["docs", &d, "tables", t]), dl),
                c.list_all(
                    ApiRequest::get(&["docs", &d, "tables", t, "columns"]).query("limit", 100),
                    COMPOSITE_CAP,
                    dl
                ),
                c.call(rows_req, dl),
            )?;
            let columns: Vec<ColumnBrief> = columns
                .0
                .iter()
                .map(|col| ColumnBrief {
                    id: col.get("id").cloned().unwrap_or(Value::Null),
                    name: col.get("name").cloned().unwrap_or(Value::Null),
                    r#type: col.pointer("/format/type").cloned().unwrap_or(Value::Null),
                    is_array: col
                        .pointer("/format/isArray")
                        .cloned()
                        .unwrap_or(Value::Null),
                    calculated: col
                        .get("calculated")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    display: col.get("display").and_then(Value::as_bool).unwrap_or(false),
                    formula: col.get("formula").cloned(),
                })
                .collect();
            let mut sample_data: Vec<Value> = rows
                .get("items")
                .and_then(Value::as_array)
                .map(|r| r.iter().take(3).cloned().collect())
                .unwrap_or_default();
            let mut table = table.as_object().cloned().unwrap_or_default();
            // coda-enhanced reported the tableType as the table's `type`.
            if let Some(kind) = table.get("tableType").cloned() {
                table.insert("type".into(), kind);
            }
            let stats = SummaryStats {
                total_columns: columns.len(),
                calculated_columns: columns.iter().filter(|c| c.calculated).count(),
                display_column: columns
                    .iter()
                    .find(|c| c.display)
                    .and_then(|c| c.name.as_str())
                    .map(str::to_owned),
            };
            // Sample rows get what the rest leaves of the result budget.
            let rest = serde_json::to_string(&(&table, &columns))
                .map(|t| t.len())
                .unwrap_or(0);
            let room = c.cfg.max_result_bytes.saturating_sub(rest + 400);
            // items_within keeps a first item whatever its size; here a
            // first row too big for the room is left out too.
            let first_fits = sample_data
                .first()
                .is_some_and(|r| super::json_len(r) + 256 <= room);
            let keep = if first_fits {
                items_within(&sample_data, room)
            } else {
                0
            };
            let note = (keep < sample_data.len()).then(|| {
                let left = sample_data.len() - keep;
                sample_data.truncate(keep);
                format!(
                    "{left} sample row(s) left out to stay within the result budget ({} bytes): read rows with coda_list_rows",
                    c.cfg.max_result_bytes
                )
            });
            Reply::json(TableSummary {
                table,
                columns,
                sample_data,
                stats,
                note,
            })
        })
        .await
    }

    /// Find tables/views whose name contains query (case-insensitive), across all tables of the doc.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<SearchTablesParams>(),
        output_schema = output::<SearchTablesOutput>()
    )]
    async fn coda_search_tables(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: SearchTablesParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("query", &p.query)?;
            let needle = p.query.to_lowercase();
            let req = ApiRequest::get(&["docs", &d, "tables"])
                .query("limit", 100)
                .query_opt("tableTypes", table_types(&p.table_types));
            let (tables, _) = c.list_all(req, COMPOSITE_CAP, c.deadline()).await?;
            let mut items: Vec<Value> = tables
                .iter()
                .filter(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.to_lowercase().contains(&needle))
                })
                .cloned()
                .collect();
            let total_found = items.len();
            // Room for the note and the query beside the items.
            let room = c.cfg.max_result_bytes.saturating_sub(300 + p.query.len());
            let keep = items_within(&items, room);
            let note = (keep < total_found).then(|| {
                items.truncate(keep);
                format!(
                    "{} more matching tables were left out to stay within the result budget ({} bytes): use a longer query",
                    total_found - keep,
                    c.cfg.max_result_bytes
                )
            });
            Reply::json(SearchTablesOutput {
                total_found,
                items,
                search_query: p.query,
                tables_searched: tables.len(),
                note,
            })
        })
        .await
    }

    /// List a table's columns (id c-…, name, format, calculated, formula; select lists cut to 20 options unless full=true). Paged: limit up to 100, Coda's maximum (a larger one asks for 100).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListColumnsParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_columns(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListColumnsParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            let req = ApiRequest::get(&["docs", &d, "tables", &p.table_id_or_name, "columns"])
                .query_opt("visibleOnly", p.visible_only);
            if p.full {
                return c.list_reply(req, &p.page).await;
            }
            Reply::json(
                c.list_shaped(req, &p.page, c.deadline(), &|v| slim_column(&v))
                    .await?,
            )
        })
        .await
    }

    /// Get one column: format (type, options, reference table), formula, defaultValue, parent table.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ColumnParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_column(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ColumnParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("tableIdOrName", &p.table_id_or_name)?;
            required("columnIdOrName", &p.column_id_or_name)?;
            let column = c
                .column_id(
                    &d,
                    &p.table_id_or_name,
                    &p.column_id_or_name,
                    "columnIdOrName",
                    c.deadline(),
                )
                .await?;
            let req = ApiRequest::get(&[
                "docs",
                &d,
                "tables",
                &p.table_id_or_name,
                "columns",
                &column,
            ]);
            c.object(req).await
        })
        .await
    }
}

#[tool_router(router = formulas_router, vis = "pub(crate)")]
impl Coda {
    /// List a doc's named formulas (id f-…, name). Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListNamedParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_formulas(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListNamedParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = ApiRequest::get(&["docs", &d, "formulas"])
                .query_opt("sortBy", p.sort_by.map(|_| "name"));
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Get a named formula with its current computed value.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<FormulaParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_formula(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: FormulaParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("formulaIdOrName", &p.formula_id_or_name)?;
            let id = c
                .named_id(
                    &d,
                    "formula",
                    &p.formula_id_or_name,
                    "formulaIdOrName",
                    false,
                    &["f-"],
                    c.deadline(),
                )
                .await?;
            c.object(ApiRequest::get(&["docs", &d, "formulas", &id]))
                .await
        })
        .await
    }
}

#[tool_router(router = controls_router, vis = "pub(crate)")]
impl Coda {
    /// List a doc's controls (sliders, selects, checkboxes, buttons…). Paged.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListNamedParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_controls(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListNamedParams| async move {
            let d = doc_id(&p.doc_id)?;
            let req = ApiRequest::get(&["docs", &d, "controls"])
                .query_opt("sortBy", p.sort_by.map(|_| "name"));
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Get a control with its controlType and current value.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ControlParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_control(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ControlParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("controlIdOrName", &p.control_id_or_name)?;
            let id = c
                .named_id(
                    &d,
                    "control",
                    &p.control_id_or_name,
                    "controlIdOrName",
                    false,
                    &["ctrl-"],
                    c.deadline(),
                )
                .await?;
            c.object(ApiRequest::get(&["docs", &d, "controls", &id]))
                .await
        })
        .await
    }
}
