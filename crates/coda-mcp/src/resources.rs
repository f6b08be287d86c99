//! MCP resources and prompts: the row query guide (so tool descriptions
//! stay short) and `coda://docs/{docId}/schema`, a doc's pages, tables and
//! columns in one read.

use futures_util::StreamExt;
use rmcp::ErrorData;
use rmcp::model::{
    GetPromptResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, Prompt,
    PromptMessage, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};
use serde_json::{Value, json};

use crate::client::ApiRequest;
use crate::ids::doc_id;
use crate::tools::error::ToolError;
use crate::tools::{COMPOSITE_CAP, Coda, slim_column};

/// URI of the row query guide.
pub const GUIDE_URI: &str = "coda://guide/rows";
/// Name of the prompt carrying the same guide.
pub const GUIDE_PROMPT: &str = "coda_rows_guide";
/// Tables whose columns the schema resource reads at the same time.
const SCHEMA_CONCURRENCY: usize = 4;

/// How to filter rows and write values; served as a resource and a prompt.
pub const GUIDE: &str = r#"# Coda rows: filters and values

## Filtering (coda_list_rows, coda_delete_rows)
- Prefer `filter: {"column": "Status", "value": "Done"}`: exact match, quoted for you.
- Raw `query` is `<column>:<JSON value>`: a column name in double quotes or a column id
  (`c-…`) bare, then the value as JSON: `"Status":"Done"`, `c-AbCdEf:3`, `"Done":true`.
  Only one equality is supported by Coda; combine filters by reading and filtering yourself.
- `sortBy`: createdAt (default), natural (the view's order), updatedAt.
- Rows come slim by default (`id`, `name`, `values`); `columns` keeps only some values;
  `fullRows: true` returns Coda's whole row objects.

## Writing values (coda_create_rows, coda_upsert_rows, coda_update_row, coda_bulk_update_rows)
- Rows are objects `{"Column name or id": value}`; values are strings, numbers, booleans or
  arrays of them. `null` is not a value: use `""` to clear a cell.
- Text: any string. Numbers, percent, currency: a number (`12.5`) or its text (`"12.5"`).
- Dates and times: ISO 8601 (`"2026-03-01"`, `"2026-03-01T14:00:00Z"`) or text Coda parses
  like the UI does (`"March 1"`) unless `disableParsing` is true.
- Select lists: the option's exact name; several for multi-select as an array.
- People: an email address (`"ada@example.com"`) or an array of them.
- Checkboxes: `true` / `false`. Lookups (references): the referenced row's display value or id.
- Formula columns cannot be written; the server refuses them before sending.
- With `keyColumns`, rows whose key values match are updated, others inserted: every row must
  contain every key column.

## Knowing that a write happened
- Writes return `requestId`. `wait: true` waits until Coda applied them; `verify: true` also
  re-reads the rows and reports any value that differs from what was sent.
- If a result has `mutation.error`, the write WAS accepted: do not send it again.
"#;

fn not_found(uri: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!("unknown resource {uri}; see resources/list and resources/templates/list"),
        None,
    )
}

pub fn list() -> ListResourcesResult {
    let mut r = Resource::new(GUIDE_URI, "coda-rows-guide");
    r.description = Some("Row filter syntax and value formats for Coda tables.".into());
    r.mime_type = Some("text/markdown".into());
    ListResourcesResult::with_all_items(vec![r])
}

pub fn templates() -> ListResourceTemplatesResult {
    let mut t = ResourceTemplate::new("coda://docs/{docId}/schema", "coda-doc-schema");
    t.description = Some(
        "A doc's pages, tables and views with their columns (id, name, type, formula, select options) in one read."
            .into(),
    );
    t.mime_type = Some("application/json".into());
    ListResourceTemplatesResult::with_all_items(vec![t])
}

pub fn prompts() -> ListPromptsResult {
    ListPromptsResult::with_all_items(vec![Prompt::new(
        GUIDE_PROMPT,
        Some("How to filter Coda rows and which value formats writes accept."),
        None,
    )])
}

pub fn prompt(name: &str) -> Result<GetPromptResult, ErrorData> {
    if name != GUIDE_PROMPT {
        return Err(ErrorData::invalid_params(
            format!("unknown prompt {name:?}; the only prompt is {GUIDE_PROMPT}"),
            None,
        ));
    }
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(
        rmcp::model::Role::User,
        GUIDE,
    )])
    .with_description("Coda row filters and value formats"))
}

pub async fn read(coda: &Coda, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    if uri == GUIDE_URI {
        let mut c = ResourceContents::text(GUIDE, uri);
        if let ResourceContents::TextResourceContents { mime_type, .. } = &mut c {
            *mime_type = Some("text/markdown".into());
        }
        return Ok(ReadResourceResult::new(vec![c]));
    }
    let Some(raw) = uri
        .strip_prefix("coda://docs/")
        .and_then(|r| r.strip_suffix("/schema"))
    else {
        return Err(not_found(uri));
    };
    let d = doc_id(raw).map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
    if let Some(allowed) = &coda.cfg.docs
        && !allowed.iter().any(|a| a == &d)
    {
        return Err(ErrorData::invalid_params(
            format!("doc {d} is not in this server's --docs allow-list"),
            None,
        ));
    }
    let schema = doc_schema(coda, &d)
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let mut c = ResourceContents::text(schema.to_string(), uri);
    if let ResourceContents::TextResourceContents { mime_type, .. } = &mut c {
        *mime_type = Some("application/json".into());
    }
    Ok(ReadResourceResult::new(vec![c]))
}

/// Pages, tables and columns of doc `d`, slimmed to what a model needs.
pub async fn doc_schema(coda: &Coda, d: &str) -> Result<Value, ToolError> {
    let dl = coda.deadline();
    let (doc, pages, tables) = tokio::try_join!(
        coda.call(ApiRequest::get(&["docs", d]), dl),
        coda.list_all(
            ApiRequest::get(&["docs", d, "pages"]).query("limit", 100),
            COMPOSITE_CAP,
            dl
        ),
        coda.list_all(
            ApiRequest::get(&["docs", d, "tables"]).query("limit", 100),
            COMPOSITE_CAP,
            dl
        ),
    )?;
    let pick = |v: &Value, keys: &[&str]| {
        let mut o = serde_json::Map::new();
        for k in keys {
            if let Some(x) = v.get(*k).filter(|x| !x.is_null()) {
                o.insert((*k).to_owned(), x.clone());
            }
        }
        Value::Object(o)
    };
    let pages: Vec<Value> = pages
        .0
        .iter()
        .map(|p| {
            let mut o = pick(p, &["id", "name", "contentType"]);
            if let Some(par) = p.pointer("/parent/id") {
                o["parentId"] = par.clone();
            }
            o
        })
        .collect();
    let table_jobs: Vec<Value> = tables.0.clone();
    let columns: Vec<Result<std::sync::Arc<Vec<Value>>, ToolError>> = futures_util::stream::iter(
        table_jobs
            .iter()
            .map(|t| t.get("id").and_then(Value::as_str).unwrap_or("").to_owned())
            .collect::<Vec<String>>(),
    )
    .map(|id: String| async move { coda.columns(d, &id, dl).await })
    .buffered(SCHEMA_CONCURRENCY)
    .collect()
    .await;
    let mut out_tables = Vec::new();
    for (t, cols) in table_jobs.iter().zip(columns) {
        let mut o = pick(t, &["id", "name", "tableType"]);
        match cols {
            Ok(cols) => {
                o["columns"] = Value::Array(cols.iter().map(slim_column).collect());
            }
            Err(e) => o["columnsError"] = json!(e.to_string()),
        }
        out_tables.push(o);
    }
    Ok(json!({
        "doc": pick(&doc, &["id", "name", "browserLink"]),
        "pages": pages,
        "tables": out_tables,
        "pagesCapped": pages.len() >= COMPOSITE_CAP,
    }))
}
