//! Schema-aware row writes: every cell of a write is checked against the
//! table's columns (cached for [`COLUMN_CACHE_TTL`](super::COLUMN_CACHE_TTL))
//! before anything is sent, and `verify` compares what was written with
//! what Coda stored.
//!
//! Refused before sending: a column the table does not have (with a "did
//! you mean" from the closest names), a formula column, a value no select
//! option matches, a person that is not an email address, a date with no
//! digits, a number that does not parse, a non-boolean checkbox. Values
//! Coda parses freely (text, lookups, unknown types) pass.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::error::{ToolError, ToolResult};

/// Cells whose stored value `verify` reports, at most.
pub const MAX_VERIFY_ROWS: usize = 100;

/// Most options Coda lists for a select column (`SelectColumnFormat.options`:
/// "Returns the first 5000 options"): a list this long may not be all of
/// them, so a value missing from it is not refused.
pub const CODA_SELECT_OPTIONS_LISTED: usize = 5000;

/// One column as the checks need it.
struct Col<'a> {
    id: &'a str,
    name: &'a str,
    calculated: bool,
    kind: &'a str,
    is_array: bool,
    options: Option<Vec<&'a str>>,
}

fn col(c: &Value) -> Col<'_> {
    let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("");
    let options = c
        .pointer("/format/options/items")
        .or_else(|| c.pointer("/format/options"))
        .and_then(Value::as_array)
        .filter(|o| o.len() < CODA_SELECT_OPTIONS_LISTED)
        .map(|o| {
            o.iter()
                .filter_map(|x| x.get("name").and_then(Value::as_str).or_else(|| x.as_str()))
                .collect()
        });
    Col {
        id: s("/id"),
        name: s("/name"),
        calculated: c
            .get("calculated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        kind: s("/format/type"),
        is_array: c
            .pointer("/format/isArray")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        options,
    }
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The column a write names: by id, else by exact name, else by a unique
/// case-insensitive name. A name several columns share is `Err` with
/// their ids: Coda would write an arbitrary one of them.
fn find<'a>(cols: &'a [Col<'a>], key: &str) -> Result<Option<&'a Col<'a>>, Vec<&'a str>> {
    if let Some(c) = cols.iter().find(|c| c.id == key) {
        return Ok(Some(c));
    }
    let named: Vec<&Col<'_>> = cols.iter().filter(|c| c.name == key).collect();
    match named.as_slice() {
        [one] => return Ok(Some(one)),
        [] => {}
        many => return Err(many.iter().map(|c| c.id).collect()),
    }
    let mut it = cols.iter().filter(|c| c.name.eq_ignore_ascii_case(key));
    Ok(match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    })
}

/// [`find`] for an argument `at`: an unknown or shared column is refused.
fn find_arg<'a>(cols: &'a [Col<'a>], key: &str, at: &str) -> ToolResult<&'a Col<'a>> {
    match find(cols, key) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(ToolError::arg(
            at,
            format!(
                "the table has no column {key:?}; {}",
                did_you_mean(cols, key)
            ),
        )),
        Err(ids) => Err(ToolError::ambiguous(
            at,
            key,
            "column",
            "the table",
            &ids,
            false,
        )),
    }
}

fn did_you_mean(cols: &[Col<'_>], key: &str) -> String {
    let mut best: Vec<(usize, &str)> = cols
        .iter()
        .map(|c| (distance(c.name, key), c.name))
        .collect();
    best.sort();
    let close: Vec<String> = best
        .iter()
        .filter(|(d, _)| *d <= key.chars().count().max(3) / 2 + 1)
        .take(3)
        .map(|(_, n)| format!("{n:?}"))
        .collect();
    if close.is_empty() {
        let all: Vec<String> = cols
            .iter()
            .take(15)
            .map(|c| format!("{:?}", c.name))
            .collect();
        format!("the table's columns are {}", all.join(", "))
    } else {
        format!("did you mean {}?", close.join(" or "))
    }
}

fn number_like(s: &str) -> bool {
    let t: String = s
        .trim()
        .trim_start_matches(['$', '€', '£', '¥'])
        .trim_end_matches('%')
        .chars()
        .filter(|c| *c != ',' && *c != '_' && !c.is_whitespace())
        .collect();
    // Rust's parser also takes `NaN`, `inf`, `infinity` and values past
    // f64's range (as infinity): none is a number Coda can store.
    !t.is_empty() && t.parse::<f64>().is_ok_and(f64::is_finite)
}

fn check_scalar(c: &Col<'_>, v: &Value) -> Result<(), String> {
    match c.kind {
        "number" | "percent" | "currency" | "slider" | "scale" | "duration" => match v {
            Value::Number(_) => Ok(()),
            Value::String(s) if s.is_empty() || number_like(s) || c.kind == "duration" => Ok(()),
            _ => Err(format!("is a {} column: give a number, not {v}", c.kind)),
        },
        "checkbox" => match v {
            Value::Bool(_) => Ok(()),
            Value::String(s)
                if matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "") =>
            {
                Ok(())
            }
            _ => Err(format!("is a checkbox column: give true or false, not {v}")),
        },
        "person" => match v {
            Value::String(s) if s.is_empty() || s.contains('@') => Ok(()),
            _ => Err(format!(
                "is a person column: give an email address, not {v}"
            )),
        },
        "date" | "dateTime" | "time" => match v {
            Value::String(s) if s.is_empty() || s.chars().any(|ch| ch.is_ascii_digit()) => Ok(()),
            _ => Err(format!(
                "is a {} column: give an ISO 8601 value like \"2026-03-01\"{}, not {v}",
                c.kind,
                if c.kind == "date" {
                    ""
                } else {
                    " or \"2026-03-01T14:00:00Z\""
                }
            )),
        },
        "select" => {
            let (Value::String(s), Some(opts)) = (v, &c.options) else {
                return Ok(());
            };
            if s.is_empty() || opts.iter().any(|o| o.eq_ignore_ascii_case(s)) {
                Ok(())
            } else {
                let shown: Vec<String> = opts.iter().take(10).map(|o| format!("{o:?}")).collect();
                Err(format!(
                    "is a select list: {s:?} is not one of its options ({}{})",
                    shown.join(", "),
                    if opts.len() > 10 { ", …" } else { "" }
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Check the cells `[{column, value}]` of one row edit against `columns`.
/// Two cells for one column (its name and its id, two spellings of its
/// name) are refused: Coda would store one of them, its pick.
pub fn check_cells(columns: &[Value], cells: &[Value], at: &str) -> ToolResult<()> {
    let cols: Vec<Col<'_>> = columns.iter().map(col).collect();
    let mut written: Vec<(&str, &str)> = Vec::new();
    for cell in cells {
        let key = cell.get("column").and_then(Value::as_str).unwrap_or("");
        let here = format!("{at}.{key}");
        let c = find_arg(&cols, key, &here)?;
        if let Some((first, _)) = written.iter().find(|(_, id)| *id == c.id) {
            return Err(ToolError::arg(
                &here,
                format!(
                    "names the same column as {first:?} ({:?}, {}): give one value per column",
                    c.name, c.id
                ),
            ));
        }
        written.push((key, c.id));
        if c.calculated {
            return Err(ToolError::arg(
                &here,
                format!(
                    "{:?} is a formula column: its value is calculated and cannot be written",
                    c.name
                ),
            ));
        }
        let v = cell.get("value").unwrap_or(&Value::Null);
        let result = match v {
            Value::Array(items) if c.is_array || c.kind == "select" || c.kind == "person" => {
                items.iter().try_for_each(|x| check_scalar(c, x))
            }
            Value::Array(_)
                if matches!(c.kind, "number" | "checkbox" | "date" | "dateTime" | "time") =>
            {
                Err(format!(
                    "is a single-value {} column: give one value, not a list",
                    c.kind
                ))
            }
            other => check_scalar(c, other),
        };
        result.map_err(|why| ToolError::arg(&here, format!("{:?} {why}", c.name)))?;
    }
    Ok(())
}

/// Check that every key column exists and can identify rows.
pub fn check_keys(columns: &[Value], keys: &[String]) -> ToolResult<()> {
    let cols: Vec<Col<'_>> = columns.iter().map(col).collect();
    for k in keys {
        find_arg(&cols, k, "keyColumns")?;
    }
    Ok(())
}

/// Check that every row edit of an upsert has a value for every key
/// column (named in `keys` or in a cell by name or id): Coda matches a row
/// by its key values, so a row without them is matched to none and
/// inserted as a new row, once more on every call.
pub fn check_rows_carry_keys(
    columns: &[Value],
    edits: &[Value],
    keys: &[String],
) -> ToolResult<()> {
    let cols: Vec<Col<'_>> = columns.iter().map(col).collect();
    let key_ids = keys
        .iter()
        .map(|k| find_arg(&cols, k, "keyColumns").map(|c| (k, c.id)))
        .collect::<ToolResult<Vec<_>>>()?;
    for (i, edit) in edits.iter().enumerate() {
        let cells = edit_cells(edit);
        if let Some((k, _)) = key_ids
            .iter()
            .find(|(_, id)| cell_value(&cols, &cells, id).is_none())
        {
            return Err(ToolError::arg(
                &format!("rows[{i}]"),
                format!(
                    "has no value for the key column {k:?}: with keyColumns a row is matched by its key values, and one without them matches no row and would be inserted as a new row on every call"
                ),
            ));
        }
    }
    Ok(())
}

/// The key cells of one row of an upsert, in `keys` order: (column id,
/// column name, value sent). A key the row lacks is left out
/// ([`check_rows_carry_keys`] refuses such rows before they are sent).
pub fn key_cells(
    columns: &[Value],
    keys: &[String],
    cells: &[Value],
) -> Vec<(String, String, Value)> {
    let cols: Vec<Col<'_>> = columns.iter().map(col).collect();
    keys.iter()
        .filter_map(|k| {
            let c = find(&cols, k).ok().flatten()?;
            let value = cell_value(&cols, cells, c.id)?.clone();
            Some((c.id.to_owned(), c.name.to_owned(), value))
        })
        .collect()
}

/// The value of the cell among `cells` whose column (by name or id) is
/// the column `id`.
fn cell_value<'a>(cols: &[Col<'_>], cells: &'a [Value], id: &str) -> Option<&'a Value> {
    cells.iter().find_map(|cell| {
        let key = cell.get("column").and_then(Value::as_str).unwrap_or("");
        match find(cols, key) {
            Ok(Some(c)) if c.id == id => cell.get("value"),
            _ => None,
        }
    })
}

/// The value a row read back (values keyed by column id) has in column
/// `col_id`.
pub fn stored_value<'a>(row: &'a Value, col_id: &str) -> Option<&'a Value> {
    row.get("values").and_then(|v| v.get(col_id))
}

/// One cell whose stored value differs from what was written.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    pub row_id: String,
    pub column: String,
    /// The value sent.
    #[schemars(schema_with = "crate::schema::cell_value")]
    pub intended: Value,
    /// The value read back; absent when the row read back has no value for the column.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::cell_value")]
    pub stored: Option<Value>,
}

/// What `verify` found.
#[derive(Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Rows re-read.
    pub rows_checked: usize,
    /// True when every written value was found as sent.
    pub matches: bool,
    pub mismatches: Vec<Mismatch>,
    /// Why some rows or values could not be checked: every reason met,
    /// in order ([`Verification::finish`] joins them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Reasons checking stopped short or left rows out, as they were met.
    #[serde(skip)]
    stops: Vec<String>,
    /// Differences in columns Coda shows formatted ("Col of row: sent x,
    /// shown y"), neither matches nor mismatches.
    #[serde(skip)]
    not_compared: Vec<String>,
}

/// The verification note when waiting for a write did not see it
/// applied: it was not yet when waiting stopped, or its status could not
/// be read (`mutation.error`: no `requestId`, a failing status read).
pub fn not_applied(m: &super::MutationState) -> &'static str {
    if m.error.is_some() {
        "whether Coda applied the write could not be read (see mutation.error), so nothing was compared"
    } else {
        "Coda had not applied the write when waiting stopped: nothing to compare yet"
    }
}

/// At most this many bytes of `not compared` examples in a note.
const NOT_COMPARED_BYTES: usize = 600;

impl Verification {
    /// Checking stopped short or left something out, and why (a row that
    /// could not be re-read, rows past [`MAX_VERIFY_ROWS`]). Each reason
    /// is kept: a later one never hides an earlier one.
    pub fn stop(&mut self, why: impl Into<String>) {
        self.stops.push(why.into());
    }

    /// `rows` were written: past [`MAX_VERIFY_ROWS`], the note says the
    /// rest were not re-read.
    pub fn cap(&mut self, rows: usize) {
        if rows > MAX_VERIFY_ROWS {
            self.stop(format!(
                "only the first {MAX_VERIFY_ROWS} rows were re-read"
            ));
        }
    }

    /// True once [`Verification::stop`] was called: callers stop
    /// re-reading rows then. A value only shown formatted does not count.
    pub fn stopped(&self) -> bool {
        !self.stops.is_empty()
    }

    /// The verdict: `note` says every reason something was not checked,
    /// and `matches` is true only when something was re-read, nothing
    /// differed and everything was checked.
    pub fn finish(mut self) -> Verification {
        let mut parts = std::mem::take(&mut self.stops);
        // Nothing re-read is nothing checked: no write to compare (none
        // accepted, no row ids given), never a match.
        if self.rows_checked == 0 && self.mismatches.is_empty() && parts.is_empty() {
            parts.push("nothing was re-read, so nothing was checked".into());
        }
        if !self.not_compared.is_empty() {
            let mut seen = String::new();
            for (i, s) in self.not_compared.iter().enumerate() {
                if i > 0 && seen.len() + s.len() > NOT_COMPARED_BYTES {
                    seen.push_str(&format!("; and {} more", self.not_compared.len() - i));
                    break;
                }
                if i > 0 {
                    seen.push_str("; ");
                }
                seen.push_str(s);
            }
            parts.push(format!(
                "not compared, as Coda shows these columns formatted (re-read them to judge): {seen}"
            ));
        }
        self.note = (!parts.is_empty()).then(|| parts.join("; "));
        self.matches = self.mismatches.is_empty() && self.note.is_none();
        self
    }
}

/// Whether the value Coda stores is the value sent. Exact, except where
/// Coda legitimately changes the form and not the value:
///
/// - Coda parses text into the column's type (unless `disableParsing`), so
///   text sent to a number column comes back a number, and a number sent
///   to a text column comes back text: a string and a number are the same
///   when the string, without surrounding whitespace, spells the number's
///   value in JSON number syntax ([`crate::number`]: `"5.0"` is `5`,
///   `"9007199254740993"` is not `9007199254740992`).
/// - Rows are read back in the `simple` value format, which joins an array
///   into one comma-delimited string: an array is the same as that string.
/// - A boolean is the same as the text `true` or `false`.
///
/// Two numbers compare by value, with no tolerance: Coda stores what it is
/// sent as a double and returns it as written, so any difference is a
/// change. Two strings compare exactly: whitespace or backticks Coda
/// dropped are a change worth reporting, not noise.
pub fn same(intended: &Value, stored: &Value) -> bool {
    if intended == stored {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    match (intended, stored) {
        (Value::Number(a), Value::Number(b)) => {
            crate::number::same_value(&a.to_string(), &b.to_string())
        }
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            crate::number::same_value(s.trim(), &n.to_string())
        }
        _ => text(intended) == text(stored),
    }
}

/// Column kinds whose value the `simple` format shows in a display form (a
/// currency symbol, a percent rounded to the column's places, a date with
/// its time zone, a person's name): a value that differs there may differ
/// in form only, so it is reported as not compared, never as a mismatch.
const SHOWN_FORMATTED: &[&str] = &[
    "currency",
    "percent",
    "date",
    "dateTime",
    "time",
    "duration",
    "person",
    "lookup",
    "image",
    "imageReference",
    "attachments",
    "button",
    "packObject",
    "reaction",
    "other",
];

/// Column kinds that hold a number, which Coda also takes (and a currency
/// or percent column shows) as text: `"$1,200"`, `"15%"`.
const NUMERIC: &[&str] = &["number", "slider", "scale", "currency", "percent"];

/// A number written as people write it (`"$1,200.50"`, `"-€3"`, `"15%"`,
/// `"12 USD"`) as a plain decimal in JSON number syntax (`"1200.50"`,
/// `"-3"`, `"15e-2"`); `None` when it is not one beyond doubt (a decimal
/// comma, parentheses, thousands groups that are not of three).
///
/// Beside [`number_like`], which says whether Coda takes a text as a number
/// (it is looser: `1_000`, `1,2345`), this says which number, where that
/// is beyond doubt.
fn entry_number(text: &str) -> Option<String> {
    let t = text.trim();
    if crate::number::decimal(t).is_some() {
        return Some(t.to_owned());
    }
    let (t, percent) = match t.strip_suffix('%') {
        Some(rest) => (rest.trim_end(), true),
        None => (t, false),
    };
    let start = t.find(|c: char| c.is_ascii_digit() || c == '.')?;
    let (prefix, rest) = t.split_at(start);
    let negative = prefix.contains('-');
    if prefix.chars().any(|c| c.is_ascii_digit() || c == '(') {
        return None;
    }
    let body =
        rest.trim_end_matches(|c: char| c.is_alphabetic() || c.is_whitespace() || !c.is_ascii());
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let mut groups = int.split(',');
    let first = groups.next().unwrap_or("");
    let grouped: Vec<&str> = groups.collect();
    if !grouped.is_empty()
        && (first.is_empty() || first.len() > 3 || grouped.iter().any(|g| g.len() != 3))
    {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let int: String = std::iter::once(first).chain(grouped).collect();
    // People write `007`; JSON writes `7` (no leading zero).
    let int = match int.trim_start_matches('0') {
        "" if !int.is_empty() || frac.is_some() => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    if !digits(&int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    Some(format!(
        "{}{int}{}{}",
        if negative { "-" } else { "" },
        frac.map(|f| format!(".{f}")).unwrap_or_default(),
        if percent { "e-2" } else { "" },
    ))
}

/// Whether a number cell's value is the one sent, each side taken as a
/// number however it is written (see [`entry_number`]).
fn same_number(intended: &Value, stored: &Value) -> bool {
    let as_number = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => entry_number(s),
        _ => None,
    };
    match (as_number(intended), as_number(stored)) {
        (Some(a), Some(b)) => crate::number::same_value(&a, &b),
        _ => false,
    }
}

/// Compare one row's intended cells with a row read back (values keyed by
/// column id), adding mismatches to `out`; values of columns the `simple`
/// format shows formatted that differ in form go to its note
/// ([`Verification::finish`] gives the verdict).
pub fn compare_row(
    columns: &[Value],
    row_id: &str,
    cells: &[Value],
    stored: &Value,
    out: &mut Verification,
) {
    let cols: Vec<Col<'_>> = columns.iter().map(col).collect();
    out.rows_checked += 1;
    for cell in cells {
        let key = cell.get("column").and_then(Value::as_str).unwrap_or("");
        let Ok(Some(c)) = find(&cols, key) else {
            continue;
        };
        let intended = cell.get("value").cloned().unwrap_or(Value::Null);
        let got = stored_value(stored, c.id).cloned().unwrap_or(Value::Null);
        if same(&intended, &got) || (NUMERIC.contains(&c.kind) && same_number(&intended, &got)) {
            continue;
        }
        if SHOWN_FORMATTED.contains(&c.kind) {
            let seen = format!(
                "{} of {row_id}: sent {}, shown {}",
                c.name,
                crate::client::model_text(&intended.to_string(), 60),
                crate::client::model_text(&got.to_string(), 60)
            );
            out.not_compared.push(seen);
            continue;
        }
        out.mismatches.push(Mismatch {
            row_id: row_id.to_owned(),
            column: c.name.to_owned(),
            intended,
            stored: Some(got).filter(|g| !g.is_null()),
        });
    }
}

/// `{column, value}` cells of a RowEdit value.
pub fn edit_cells(edit: &Value) -> Vec<Value> {
    edit.get("cells")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> Vec<Value> {
        vec![
            json!({"id": "c-1", "name": "Name", "format": {"type": "text"}}),
            json!({"id": "c-2", "name": "Status", "format": {"type": "select", "options": {"items": [{"name": "Todo"}, {"name": "Done"}]}}}),
            json!({"id": "c-3", "name": "Points", "format": {"type": "number"}}),
            json!({"id": "c-4", "name": "Done", "calculated": true, "format": {"type": "checkbox"}}),
            json!({"id": "c-5", "name": "Owner", "format": {"type": "person"}}),
            json!({"id": "c-6", "name": "Due", "format": {"type": "date"}}),
        ]
    }

    fn cell(c: &str, v: Value) -> Vec<Value> {
        vec![json!({"column": c, "value": v})]
    }

    #[test]
    fn unknown_columns_get_a_suggestion() {
        let e = check_cells(&cols(), &cell("Stauts", json!("Done")), "rows[0]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"Status\""), "{e}");
    }

    #[test]
    fn formula_columns_and_bad_values_are_refused() {
        assert!(check_cells(&cols(), &cell("Done", json!(true)), "r").is_err());
        assert!(check_cells(&cols(), &cell("Status", json!("Blocked")), "r").is_err());
        assert!(check_cells(&cols(), &cell("Points", json!("many")), "r").is_err());
        assert!(check_cells(&cols(), &cell("Owner", json!("Ada")), "r").is_err());
        assert!(check_cells(&cols(), &cell("Due", json!("soon")), "r").is_err());
        for ok in [
            ("Status", json!("done")),
            ("Points", json!("$1,200")),
            ("Owner", json!("ada@example.com")),
            ("Due", json!("2026-03-01")),
            ("c-1", json!("x")),
        ] {
            check_cells(&cols(), &cell(ok.0, ok.1.clone()), "r")
                .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    /// Regression: a number cell's text was checked with Rust's `f64`
    /// parser, which takes `NaN`, `inf`, `infinity` and `1e400` (as
    /// infinity): words and out-of-range values passed as numbers and were
    /// sent for Coda to store as whatever it makes of them.
    #[test]
    fn number_words_and_out_of_range_numbers_are_refused() {
        for bad in ["NaN", "nan", "inf", "-Infinity", "+inf", "1e400", "-1e999"] {
            let e = check_cells(&cols(), &cell("Points", json!(bad)), "r")
                .map(|()| "accepted".to_owned())
                .unwrap_or_else(|e| e.to_string());
            assert!(e.contains("give a number"), "{bad}: {e}");
        }
        for ok in ["1e3", "-2.5", "$1,200", "15%", " 7 ", "1.5E-3", ""] {
            check_cells(&cols(), &cell("Points", json!(ok)), "r")
                .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn a_column_missing_from_the_row_read_back_has_no_stored_value() {
        let mut v = Verification::default();
        let row = json!({"id": "i-1", "values": {"c-1": "x"}});
        compare_row(&cols(), "i-1", &cell("Points", json!([1, 2])), &row, &mut v);
        let m = serde_json::to_value(&v.mismatches[0]).unwrap();
        assert_eq!(m["intended"], json!([1, 2]));
        assert!(m.get("stored").is_none(), "{m}");
    }

    /// Every reason something went unchecked reaches the note, in the
    /// order met: a later stop never hides an earlier one, nor the values
    /// shown formatted; only the stops end a caller's re-reading.
    #[test]
    fn the_note_keeps_every_reason_and_only_stops_stop() {
        let cols = vec![json!({"id": "c-6", "name": "Due", "format": {"type": "date"}})];
        let mut v = Verification::default();
        for row in ["i-1", "i-2"] {
            let stored = json!({"id": row, "values": {"c-6": "2026-03-01T00:00:00.000-08:00"}});
            compare_row(
                &cols,
                row,
                &cell("Due", json!("2026-03-01")),
                &stored,
                &mut v,
            );
        }
        assert!(!v.stopped(), "a value shown formatted is no stop");
        v.stop("could not re-read row i-3: 503");
        v.stop("only the first 100 rows were re-read");
        assert!(v.stopped());
        let v = v.finish();
        let note = v.note.as_deref().unwrap();
        assert!(
            note.starts_with(
                "could not re-read row i-3: 503; only the first 100 rows were re-read; not compared"
            ),
            "{note}"
        );
        assert!(
            note.contains("Due of i-1") && note.contains("Due of i-2"),
            "{note}"
        );
        assert!(!v.matches);
        assert_eq!(v.rows_checked, 2);
        // Many values shown formatted: the note names some and counts the rest.
        let mut v = Verification::default();
        for i in 0..100 {
            let row = format!("i-{i}");
            let stored = json!({"id": row, "values": {"c-6": "2026-03-01T00:00:00.000-08:00"}});
            compare_row(
                &cols,
                &row,
                &cell("Due", json!("2026-03-01")),
                &stored,
                &mut v,
            );
        }
        let note = v.finish().note.unwrap();
        assert!(note.len() < NOT_COMPARED_BYTES + 200, "{}", note.len());
        assert!(note.ends_with(" more"), "{note}");
        // Nothing re-read is no match.
        let none = Verification::default().finish();
        assert!(!none.matches);
        assert!(none.note.unwrap().contains("nothing was re-read"));
    }

    #[test]
    fn stored_values_compare_loosely() {
        assert!(same(&json!("5"), &json!(5)));
        assert!(same(&json!(["a", "b"]), &json!("a,b")));
        assert!(!same(&json!("Done"), &json!("Doing")));
    }

    /// Regression: `verify` compared numbers with an absolute tolerance of
    /// 1e-9 (after parsing both sides as `f64`) and text after trimming
    /// whitespace and backticks, so values Coda changed read as verified.
    #[test]
    fn a_value_coda_changed_is_never_the_same() {
        for (sent, stored) in [
            (json!(1e-10), json!(0)),
            (json!(0.0000000004), json!(0.0000000001)),
            (json!("1e-10"), json!(0)),
            (json!("9007199254740993"), json!(9007199254740992_u64)),
            (json!("9007199254740993"), json!("9007199254740992")),
            (json!(" Launch "), json!("Launch")),
            (json!("`code`"), json!("code")),
            (json!("5"), json!("5.0")),
            (json!("01234"), json!(1234)),
            (json!("-007"), json!(-7)),
        ] {
            assert!(!same(&sent, &stored), "{sent} read as {stored}");
        }
    }

    /// Regression (review): `number::decimal` took `007` for a number,
    /// which JSON numbers never are, so a text cell `"01234"` (a postal
    /// code) that Coda stored as the number 1234, its leading zero lost,
    /// was reported verified. In a number column people's `007` is still
    /// the number 7 (`entry_number`).
    #[test]
    fn a_leading_zero_coda_dropped_from_text_is_a_mismatch_but_not_in_a_number_column() {
        let cols = vec![
            json!({"id": "c-1", "name": "Zip", "format": {"type": "text"}}),
            json!({"id": "c-3", "name": "Points", "format": {"type": "number"}}),
        ];
        let check = |col: &str, id: &str, sent: Value, stored: Value| {
            let mut v = Verification::default();
            let row = json!({"id": "i-1", "values": {id: stored}});
            compare_row(&cols, "i-1", &cell(col, sent), &row, &mut v);
            v.finish()
        };
        let v = check("Zip", "c-1", json!("01234"), json!(1234));
        assert_eq!(v.mismatches.len(), 1, "{v:?}");
        let v = check("Points", "c-3", json!("007"), json!(7));
        assert!(v.matches, "{v:?}");
        let v = check("Points", "c-3", json!("007"), json!(8));
        assert_eq!(v.mismatches.len(), 1, "{v:?}");
    }

    /// Numbers written as people write them compare by value in number
    /// columns; a currency or percent column's display form too. A
    /// difference in a column Coda shows formatted is not compared (a
    /// note), never a mismatch; elsewhere it is a mismatch.
    #[test]
    fn formatted_columns_compare_by_value_or_say_they_were_not_compared() {
        let cols = vec![
            json!({"id": "c-3", "name": "Points", "format": {"type": "number"}}),
            json!({"id": "c-7", "name": "Price", "format": {"type": "currency"}}),
            json!({"id": "c-8", "name": "Share", "format": {"type": "percent"}}),
            json!({"id": "c-6", "name": "Due", "format": {"type": "date"}}),
        ];
        let check = |col: &str, id: &str, sent: Value, stored: Value| {
            let mut v = Verification::default();
            let row = json!({"id": "i-1", "values": {id: stored}});
            compare_row(&cols, "i-1", &cell(col, sent), &row, &mut v);
            v.finish()
        };
        for (col, id, sent, stored) in [
            ("Points", "c-3", json!("$1,200"), json!(1200)),
            ("Points", "c-3", json!("15%"), json!(0.15)),
            ("Points", "c-3", json!("1e3"), json!(1000)),
            ("Price", "c-7", json!(12.34), json!("$12.34")),
            ("Price", "c-7", json!(1234.5), json!("$1,234.50")),
            ("Price", "c-7", json!(-3), json!("-€3.00")),
            ("Price", "c-7", json!(12), json!("12 USD")),
            ("Share", "c-8", json!(0.25), json!("25%")),
        ] {
            let v = check(col, id, sent.clone(), stored.clone());
            assert!(v.matches, "{col}: {sent} shown as {stored}: {v:?}");
        }
        // A number changed in a number column is a mismatch.
        let v = check("Points", "c-3", json!("$1,200"), json!(1300));
        assert_eq!(v.mismatches.len(), 1, "{v:?}");
        // Shown rounded, in another locale, or as a date: not compared.
        for (col, id, sent, stored) in [
            ("Share", "c-8", json!(0.333), json!("33%")),
            ("Price", "c-7", json!(12.34), json!("12,34 €")),
            (
                "Due",
                "c-6",
                json!("2026-03-01"),
                json!("2026-03-01T00:00:00.000-08:00"),
            ),
        ] {
            let v = check(col, id, sent.clone(), stored.clone());
            assert!(!v.matches && v.mismatches.is_empty(), "{col}: {v:?}");
            let note = v.note.unwrap();
            assert!(
                note.starts_with("not compared") && note.contains(col),
                "{note}"
            );
        }
        for (text, plain) in [
            ("$1,200.50", Some("1200.50")),
            ("-$5", Some("-5")),
            (".5", Some("0.5")),
            ("15 %", Some("15e-2")),
            ("1.5E-3", Some("1.5E-3")),
            ("007", Some("7")),
            ("-$007.50", Some("-7.50")),
            ("000", Some("0")),
            ("00.5", Some("0.5")),
            ("12,34", None),
            ("1,2345", None),
            ("(5)", None),
            ("1.234,00 €", None),
            ("abc", None),
        ] {
            assert_eq!(entry_number(text).as_deref(), plain, "{text}");
        }
    }

    /// What Coda changes in form only (parsing text into a number, the
    /// simple format joining arrays) is the same value.
    #[test]
    fn a_value_coda_only_reformatted_is_the_same() {
        for (sent, stored) in [
            (json!("5.0"), json!(5)),
            (json!(" 42 "), json!(42)),
            (json!(7), json!("7")),
            (json!(1000000000000.0001), json!(1000000000000.0001)),
            (json!("1e21"), json!(1e21)),
            (json!(2.5), json!(2.50)),
            (json!(true), json!("true")),
            (json!([1, "b"]), json!("1,b")),
        ] {
            assert!(same(&sent, &stored), "{sent} read as {stored}");
        }
    }
}
