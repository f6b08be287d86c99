//! MCP resources and prompts: the row query guide (so tool descriptions
//! stay short) and `coda://docs/{docId}/schema`, a doc's pages, tables and
//! columns in one read, within the result budget of tool results
//! (`--max-result-bytes`).

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
- Rows are objects `{"Column name or id": value}`; values are strings, numbers, booleans,
  arrays of them, or arrays of such arrays (no deeper). `null` is not a value: use `""` to clear a cell.
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

/// Bytes of a schema body kept for what is not budgeted item by item: the
/// keys, counts and the note saying what was left out.
const SCHEMA_OVERHEAD_BYTES: usize = 1024;

/// Bytes of `v` as JSON, plus one for the comma beside it in a list.
fn json_len(v: &Value) -> usize {
    crate::tools::json_len(v) + 1
}

/// Pages, tables and columns of doc `d`, slimmed to what a model needs,
/// within the result budget tools have (`--max-result-bytes`): a doc can
/// hold thousands of tables, each with hundreds of columns. Tables keep
/// Coda's order; the first ones come with their columns until the next
/// one's do not fit, the following ones with id, name and type only (their
/// columns are not read), and those past the budget are left out; pages
/// likewise. `truncated` and `note` say what was left out and which tool
/// reads it.
pub async fn doc_schema(coda: &Coda, d: &str) -> Result<Value, ToolError> {
    let dl = coda.deadline();
    let budget = coda.cfg.max_result_bytes;
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
    let doc = pick(&doc, &["id", "name", "browserLink"]);
    // Listings stop at COMPOSITE_CAP items (whole pages): past it, the
    // counts are of what was read, and the doc holds more.
    let (pages, pages_capped) = pages;
    let (tables, tables_capped) = tables;
    let mut pages: Vec<Value> = pages
        .iter()
        .map(|p| {
            let mut o = pick(p, &["id", "name", "contentType"]);
            if let Some(par) = p.pointer("/parent/id") {
                o["parentId"] = par.clone();
            }
            o
        })
        .collect();
    let mut room = budget.saturating_sub(SCHEMA_OVERHEAD_BYTES + json_len(&doc));
    // Each part is sure of what it needs up to half of what is left, the
    // other part takes the rest: pages against tables, then table ids and
    // names against columns. A small doc is not cut at all.
    let pages_bytes: usize = pages.iter().map(json_len).sum();
    let tables_room = room.saturating_sub(pages_bytes.min(room / 2));
    let mut out_tables: Vec<Value> = tables
        .iter()
        .map(|t| pick(t, &["id", "name", "tableType"]))
        .collect();
    let brief_bytes: Vec<usize> = out_tables.iter().map(json_len).collect();
    let columns_room =
        tables_room.saturating_sub(brief_bytes.iter().sum::<usize>().min(tables_room / 2));
    // Bytes of the columns given so far, and of the first tables' briefs.
    let (mut columns_used, mut briefs) = (0, 0);
    let mut with_columns = 0;
    {
        let ids: Vec<String> = tables
            .iter()
            .map(|t| t.get("id").and_then(Value::as_str).unwrap_or("").to_owned())
            .collect();
        // Columns are read a few tables ahead and dropped (the requests
        // in flight cancelled) once a table's columns do not fit, so at
        // most that many tables' columns are held beyond the budget.
        let mut columns = futures_util::stream::iter(ids)
            .map(|id: String| async move { coda.columns(d, &id, dl).await })
            .buffered(SCHEMA_CONCURRENCY);
        while let Some(cols) = columns.next().await {
            let brief = &out_tables[with_columns];
            let mut o = brief.clone();
            match cols {
                Ok(cols) => {
                    o["columns"] = Value::Array(cols.iter().map(slim_column).collect());
                }
                Err(e) => o["columnsError"] = json!(e.to_string()),
            }
            let extra = json_len(&o) - brief_bytes[with_columns];
            briefs += brief_bytes[with_columns];
            if columns_used + extra > columns_room || columns_used + extra + briefs > tables_room {
                break;
            }
            columns_used += extra;
            out_tables[with_columns] = o;
            with_columns += 1;
        }
    }
    // Then every table that fits, with its columns or without.
    let mut listed_bytes = 0;
    let listed = brief_bytes
        .iter()
        .take_while(|b| {
            listed_bytes += **b;
            columns_used + listed_bytes <= tables_room
        })
        .count();
    out_tables.truncate(listed);
    room = room.saturating_sub(columns_used + brief_bytes[..listed].iter().sum::<usize>());
    let mut pages_used = 0;
    let pages_kept = pages
        .iter()
        .take_while(|p| {
            pages_used += json_len(p);
            pages_used <= room
        })
        .count();
    let pages_total = pages.len();
    pages.truncate(pages_kept);
    let of = |n: usize, capped: bool| {
        if capped {
            format!("more than {n}")
        } else {
            n.to_string()
        }
    };
    let mut left_out = Vec::new();
    if with_columns < tables.len() || tables_capped {
        left_out.push(format!(
            "columns of the first {with_columns} of {} tables and views are given (read the others' with coda_list_columns)",
            of(tables.len(), tables_capped)
        ));
    }
    if out_tables.len() < tables.len() || tables_capped {
        left_out.push(format!(
            "{} of {} tables and views are listed (list them with coda_list_tables)",
            out_tables.len(),
            of(tables.len(), tables_capped)
        ));
    }
    if pages_kept < pages_total || pages_capped {
        left_out.push(format!(
            "{pages_kept} of {} pages are listed (list them with coda_list_pages)",
            of(pages_total, pages_capped)
        ));
    }
    if tables_capped || pages_capped {
        left_out.push(format!(
            "a listing stops at {COMPOSITE_CAP} items, so tablesTotal and pagesTotal count what was read, not the whole doc"
        ));
    }
    let mut out = json!({
        "doc": doc,
        "pages": pages,
        "tables": out_tables,
        "pagesTotal": pages_total,
        "tablesTotal": tables.len(),
        "pagesCapped": pages_capped,
        "tablesCapped": tables_capped,
        "truncated": !left_out.is_empty(),
    });
    if !left_out.is_empty() {
        out["note"] = json!(format!(
            "cut to stay within the result budget ({budget} bytes): {}",
            left_out.join("; ")
        ));
    }
    Ok(out)
}
