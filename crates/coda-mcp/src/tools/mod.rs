//! The tool catalogue, grouped by toolset, and what every tool shares:
//! argument parsing (errors name the argument), pagination, mutation
//! waiting and turning results into `CallToolResult`s.
//!
//! Each submodule holds one toolset's parameter types, its Coda calls and a
//! `#[tool_router]` impl block on [`Coda`], so the tools are methods of the
//! state they share and no tool module imports the server; `server.rs`,
//! above them, merges the routers of the enabled toolsets and calls them
//! with its `Coda`. This module imports no toolset (only `checks` and
//! `error`, which import nothing from it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::budget::{Kept, Reservation};
use super::call;
use super::client::{ApiRequest, CodaClient, CodaError};
use super::config::CodaConfig;
use error::{ToolError, ToolResult};

pub mod account;
pub mod admin;
pub mod checks;
pub mod docs;
pub mod error;
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

/// How long a table's columns are trusted for schema-aware writes.
pub const COLUMN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Tables whose columns are cached at most (oldest dropped first).
pub const COLUMN_CACHE_TABLES: usize = 256;

/// Cached columns of tables, keyed by (doc id, table id or name): when
/// each was read, the columns, and the bytes their parse takes (the room
/// their pages held in `--max-read-bytes` when read), bounded in all by
/// `--column-cache-bytes`.
#[derive(Debug, Default)]
struct ColumnCache {
    tables: std::collections::HashMap<(String, String), CachedColumns>,
    bytes: usize,
}

/// One table's columns in the cache: when they were read, the columns,
/// and the bytes their parse takes.
type CachedColumns = (Instant, Arc<Vec<Value>>, usize);

impl ColumnCache {
    fn get(&self, key: &(String, String)) -> Option<Arc<Vec<Value>>> {
        self.tables
            .get(key)
            .filter(|(at, _, _)| at.elapsed() < COLUMN_CACHE_TTL)
            .map(|(_, cols, _)| cols.clone())
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some((_, _, b)) = self.tables.remove(key) {
            self.bytes -= b;
        }
    }

    /// Keep `cols` (`bytes` parsed) within `max_bytes` and
    /// [`COLUMN_CACHE_TABLES`] in all: the stale go first, then the
    /// oldest. Columns larger than the whole bound are not kept.
    fn insert(
        &mut self,
        key: (String, String),
        cols: Arc<Vec<Value>>,
        bytes: usize,
        max_bytes: usize,
    ) -> bool {
        self.remove(&key);
        if bytes > max_bytes {
            return false;
        }
        let full = |c: &Self| c.tables.len() >= COLUMN_CACHE_TABLES || c.bytes + bytes > max_bytes;
        if full(self) {
            let stale: Vec<_> = self
                .tables
                .iter()
                .filter(|(_, (at, _, _))| at.elapsed() >= COLUMN_CACHE_TTL)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                self.remove(&k);
            }
        }
        while full(self) {
            let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.bytes += bytes;
        self.tables.insert(key, (Instant::now(), cols, bytes));
        true
    }
}

/// Shared state of every tool call: the client, the configuration and the
/// column cache used to check writes before they are sent. It is also what
/// the tool routers serve: every tool is a method of it (one
/// `#[tool_router]` impl block per toolset module).
#[derive(Debug)]
pub struct Coda {
    pub client: CodaClient,
    pub cfg: CodaConfig,
    /// Short-lived (TTL [`COLUMN_CACHE_TTL`]) and bounded
    /// ([`COLUMN_CACHE_TABLES`], `--column-cache-bytes`); a std mutex
    /// held only to read or insert.
    columns: std::sync::Mutex<ColumnCache>,
}

/// A column as Coda returns it, with at most [`SLIM_OPTIONS`] select
/// options (a select list can carry 5000); `optionsCount` says how many
/// there are when some were left out. Keys stay Coda's, so clients written
/// for the whole object read the slim one.
pub fn slim_column(c: &Value) -> Value {
    let mut c = c.clone();
    if let Some(opts) = c
        .pointer_mut("/format/options")
        .and_then(Value::as_array_mut)
        && opts.len() > SLIM_OPTIONS
    {
        let total = opts.len();
        opts.truncate(SLIM_OPTIONS);
        c["optionsCount"] = total.into();
    }
    c
}

/// Select options listed per column in the slim form.
pub const SLIM_OPTIONS: usize = 20;

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
pub fn parse_args<P: DeserializeOwned + JsonSchema + 'static>(args: JsonObject) -> ToolResult<P> {
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
    // makes the error go away (only runs on the error path). Only an
    // argument the tool declares can be it: one it does not is ignored, so
    // removing it changes nothing. Trying every key given cost one parse
    // of all of them per key, on a runtime thread and outside the call
    // deadline: 2000 stray keys took 10 s, 20,000 hours.
    let declared = input::<P>();
    let declared = declared.get("properties").and_then(Value::as_object);
    let candidates: Vec<&String> = args
        .keys()
        .filter(|k| declared.is_some_and(|d| d.contains_key(k.as_str())))
        .collect();
    let without = |k: &String| {
        let mut o = args.clone();
        o.remove(k);
        serde_json::from_value::<P>(Value::Object(o)).map_err(|e| e.to_string())
    };
    let missing = |k: &String, e: &str| e.contains(&format!("missing field `{k}`"));
    // An optional argument: removing it fixes the error. A required one:
    // removing it only changes the error to "missing field".
    let culprit = candidates
        .iter()
        .find(|k| match without(k) {
            Ok(_) => true,
            Err(e) => e != inner && !missing(k, &e),
        })
        .or_else(|| {
            candidates
                .iter()
                .find(|k| without(k).is_err_and(|e| missing(k, &e)))
        });
    Err(ToolError::arg(
        culprit.map(|k| k.as_str()).unwrap_or("arguments"),
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
    P: DeserializeOwned + JsonSchema + 'static,
    F: FnOnce(P) -> Fut,
    Fut: Future<Output = ToolResult<Reply>>,
{
    let outcome = match parse_args::<P>(args) {
        Ok(p) => f(p).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Reply { mut value, text }) => {
            // Schemas say "optional" by leaving a property out, never null.
            crate::schema::strip_nulls(&mut value);
            if let Some(budget) = call::max_result_bytes() {
                fit_result(&mut value, budget);
            }
            let text = text.unwrap_or_else(|| {
                if call::full_text() {
                    value.to_string()
                } else {
                    summary(&value)
                }
            });
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(value);
            r
        }
        Err(e) => {
            tracing::debug!(error = %e, "tool call failed");
            CallToolResult::error(vec![ContentBlock::text(e.call_text())])
        }
    }
}

/// Cut a tool's result to the result budget, if it passes it: lists and
/// object reads keep to it on their own, but a write's result carries
/// Coda's answer (`result`, row data of a bulk update, the values of a
/// verification's mismatches), and an answer of any size must not reach
/// the model whole. What was cut is said in `truncated` and `note` (after
/// any note the result had: it may say the write was accepted).
fn fit_result(value: &mut Value, budget: usize) {
    if json_len(value) <= budget {
        return;
    }
    // Room for the note and the flag added below.
    let cuts = fit_object(value, budget.saturating_sub(1024));
    let Some(o) = value.as_object_mut().filter(|_| !cuts.is_empty()) else {
        return;
    };
    tracing::info!(budget, "tool result cut to the result budget");
    let cut = format!(
        "the result was larger than the result budget ({budget} bytes, --max-result-bytes), so it was cut: {}",
        cuts.join("; ")
    );
    let note = match o.get("note").and_then(Value::as_str) {
        Some(n) => format!("{n}; {cut}"),
        None => cut,
    };
    o.insert("truncated".into(), Value::Bool(true));
    o.insert("note".into(), Value::String(note));
}

/// Keys whose text a model must read to act correctly (a write stopped
/// halfway, was accepted but must not be resent, was not verified): the
/// summary carries them verbatim, first, up to [`MESSAGE_CAP`] chars each.
const MESSAGE_KEYS: [&str; 3] = ["error", "note", "warning"];
/// Longest `error`/`note`/`warning` text carried in a summary.
pub const MESSAGE_CAP: usize = 500;

/// At most `max` characters of `s`, control and bidi characters escaped
/// ([`crate::text::escape_controls`]): a summary stays one line that
/// reads as stored, whatever a name or message from Coda holds.
fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return crate::text::escape_controls(s).into_owned();
    }
    let cut: String = s.chars().take(max).collect();
    let mut out = crate::text::escape_controls(&cut).into_owned();
    out.push('…');
    out
}

/// The text content of a result whose JSON is in `structuredContent`: a
/// line a model can act on (counts, ids, the continuation, scalar fields),
/// not a second copy of the JSON (`--full-text` restores the copy for
/// clients that ignore `structuredContent`). Messages (`error`, `note`,
/// `warning`, at the top or one level down) come first and whole.
pub fn summary(v: &Value) -> String {
    const MAX: usize = 600;
    let Some(o) = v.as_object() else {
        return v.to_string();
    };
    let message = |k: &str, x: &Value| MESSAGE_KEYS.contains(&k) && x.is_string();
    let mut messages: Vec<String> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    // API links (Coda's `href`, `nextPageLink`) are nothing a model acts on.
    for (k, val) in o
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "href" | "nextPageLink"))
    {
        let k = &cap(k, 80);
        if message(k, val) {
            messages.push(format!(
                "{k}: {}",
                cap(val.as_str().unwrap_or(""), MESSAGE_CAP)
            ));
            continue;
        }
        match val {
            Value::Array(a) => parts.push(format!("{k}: {} item(s)", a.len())),
            Value::String(st) if st.chars().count() <= 120 => {
                parts.push(format!("{k}: {}", cap(st, 120)))
            }
            Value::String(st) => parts.push(format!("{k}: {} chars", st.chars().count())),
            Value::Number(_) | Value::Bool(_) => parts.push(format!("{k}: {val}")),
            Value::Object(inner) => {
                for (ik, x) in inner.iter().filter(|(ik, x)| message(ik, x)) {
                    messages.push(format!(
                        "{k}.{}: {}",
                        cap(ik, 80),
                        cap(x.as_str().unwrap_or(""), MESSAGE_CAP)
                    ));
                }
                // One level down for the small objects results carry
                // (mutation state, counts).
                let scalars: Vec<String> = inner
                    .iter()
                    .filter(|(ik, x)| {
                        !message(ik, x)
                            && (x.is_number()
                                || x.is_boolean()
                                || x.as_str().is_some_and(|s| s.len() <= 80))
                    })
                    .take(6)
                    .map(|(ik, x)| match x {
                        Value::String(st) => format!("{}: {}", cap(ik, 80), cap(st, 80)),
                        _ => format!("{}: {x}", cap(ik, 80)),
                    })
                    .collect();
                if scalars.is_empty() {
                    parts.push(format!("{k}: {{…}}"));
                } else {
                    parts.push(format!("{k}: {{{}}}", scalars.join(", ")));
                }
            }
            Value::Null => {}
        }
    }
    let mut out = parts.join("; ");
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    if !messages.is_empty() {
        out = format!("{}; {out}", messages.join("; "));
    }
    out.push_str(" (full result in structuredContent)");
    out
}

/// Which of `items` (Coda objects with `id` and `name`) `raw` names: the
/// one whose id it is, else the one with exactly that name (`None` when
/// none has). A name several share is refused ([`ToolError::ambiguous`]).
pub fn one_named(
    items: &[Value],
    raw: &str,
    kind: &str,
    arg: &str,
    scope: &str,
) -> ToolResult<Option<String>> {
    fn id(v: &Value) -> Option<&str> {
        v.get("id").and_then(Value::as_str)
    }
    if items.iter().any(|v| id(v) == Some(raw)) {
        return Ok(Some(raw.to_owned()));
    }
    let ids: Vec<&str> = items
        .iter()
        .filter(|v| v.get("name").and_then(Value::as_str) == Some(raw))
        .filter_map(id)
        .collect();
    match ids.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).to_owned())),
        _ => Err(ToolError::ambiguous(arg, raw, kind, scope, &ids, false)),
    }
}

/// The id of the one object of `items` (a doc's `kind`s) named `raw`,
/// refusing a name several share; with none, `found` (what Coda returned
/// for `raw`, by a spelling the list does not show: its pick).
pub fn pick_named(
    items: &[Value],
    found: &Value,
    raw: &str,
    kind: &str,
    arg: &str,
    d: &str,
) -> ToolResult<String> {
    match one_named(items, raw, kind, arg, &format!("doc {d}"))? {
        Some(id) => Ok(id),
        None => found
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ToolError::arg(arg, format!("no {kind} {raw:?} in doc {d}"))),
    }
}

/// Whether `raw` has the shape of a Coda id with one of `prefixes`
/// (`grid-AbC_d-1`): reads take such a value as the id it looks like,
/// without a request to check it is not a shared name.
pub fn id_shaped(raw: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        raw.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    })
}

/// A required text argument: refused when empty or blank.
pub fn required<'a>(name: &str, value: &'a str) -> ToolResult<&'a str> {
    if value.trim().is_empty() {
        return Err(ToolError::arg(name, "must not be empty"));
    }
    Ok(value)
}

/// A generic Coda object (doc, page, table, row, …) as returned by the API.
pub type Object = serde_json::Map<String, Value>;

/// `limit` / `pageToken` / `fetchAll` / `maxItems`, flattened into list tools.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageArgs {
    /// Items per page, at least 1. Coda caps some lists (columns 100, page content 500, analytics 5000): a larger limit asks for that many. Keep paging while nextPageToken is returned.
    #[schemars(range(min = 1))]
    pub limit: Option<u32>,
    /// Token from a previous call's nextPageToken. Pass the same other arguments again.
    pub page_token: Option<String>,
    /// Same as pageToken (the name coda-enhanced used).
    pub next_page_token: Option<String>,
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
    /// True when the result stops early (fetchAll reached maxItems, the size budget was reached, or a later page failed); nextPageToken continues where it stopped.
    pub truncated: bool,
    /// Why the list stopped early, when it did for a reason other than maxItems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Coda's API link of the (first) page read, as Coda returns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Coda's API link of the next page, when nextPageToken continues at the start of Coda's next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_link: Option<String>,
}

/// Prefix of every continuation token this server hands out:
/// `cm1.<skip>.<limit>.<check>.<Coda token>` resumes at item `skip` of the
/// page that Coda token (empty: the first page, asked with `limit`)
/// returns; Coda's own `nextPageToken` goes out wrapped so too, with a
/// skip of 0. `check` ([`Resume::check`]) ties the token to the list that
/// handed it out and to its own fields: a first-page token says only
/// "skip N items", so given to another list (another tool, doc, table or
/// filter) it silently skipped that list's first items; Coda's token
/// carries the query it was made for and Coda ignores the request's own,
/// so given bare to another list it answered with the first list's
/// items; and a token edited by hand resumed somewhere else.
const OWN_TOKEN: &str = "cm1.";

/// Where a list resumes: a Coda page (by its token, or the first page with
/// a limit) and how many of its items were already returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Shared: every item gathered from a page has a `Resume` of its own
    /// (to resume at it), and a copy of a 4096-byte token each made a page
    /// of 20,000 small items hold 80 MB.
    pub(crate) coda_token: Option<Arc<str>>,
    pub(crate) limit: Option<u32>,
    pub(crate) skip: usize,
}

/// What a `cm1.` token is bound to: the list request that handed it out,
/// without the parameters Coda takes from the token (`pageToken`, and
/// `limit`, which the token carries). Written as JSON, so that no two
/// requests share it: joined as text, a name holding `/` (a page `a/b`)
/// or a query value holding a line break and `k=v` (a row filter) read
/// as other segments or another parameter, and one list's token passed
/// the check of another.
pub(crate) fn list_identity(req: &ApiRequest) -> String {
    let mut query: Vec<&(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| k != "pageToken" && k != "limit")
        .collect();
    query.sort();
    // Strings only: this always serializes.
    serde_json::to_string(&(req.method.as_str(), &req.segments, query)).unwrap_or_default()
}

/// 64-bit FNV-1a: stable across builds and platforms (a token handed out
/// before a restart still reads), unlike `std`'s hasher. Not a secret: it
/// catches a token given to the wrong list or edited by hand, not an
/// adversary (who gains nothing: a token only selects what to read).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Resume {
    /// The check of a `cm1.` token for the list `identity`.
    fn check(&self, identity: &str) -> String {
        let skip = self.skip.to_string();
        let limit = self.limit.map(|l| l.to_string()).unwrap_or_default();
        let coda = self.coda_token.as_deref().unwrap_or("");
        format!("{:016x}", fnv1a(&[identity, &skip, &limit, coda]))
    }

    /// The token handed out for resuming here in the list `identity`.
    pub(crate) fn encode(&self, identity: &str) -> String {
        format!(
            "{OWN_TOKEN}{}.{}.{}.{}",
            self.skip,
            self.limit.map(|l| l.to_string()).unwrap_or_default(),
            self.check(identity),
            self.coda_token.as_deref().unwrap_or("")
        )
    }

    /// Read a `pageToken` given to the list `identity`: it must be one
    /// this list handed out, unchanged. Anything else, Coda's bare token
    /// included (Coda does not check that it belongs to the list asked
    /// for), is refused.
    pub(crate) fn decode(tok: &str, identity: &str) -> Result<Resume, ToolError> {
        let bad = || {
            ToolError::arg(
                "pageToken",
                "is not a token this list returned: pass the nextPageToken of the same tool, called with the same other arguments (doc, table, filter), unchanged; or omit it to start over",
            )
        };
        let rest = tok.strip_prefix(OWN_TOKEN).ok_or_else(bad)?;
        let mut parts = rest.splitn(4, '.');
        let skip = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let limit = match parts.next().ok_or_else(bad)? {
            "" => None,
            l => Some(l.parse::<u32>().ok().filter(|&l| l >= 1).ok_or_else(bad)?),
        };
        let check = parts.next().ok_or_else(bad)?;
        let coda = parts.next().ok_or_else(bad)?;
        let r = Resume {
            coda_token: (!coda.is_empty()).then(|| Arc::from(coda)),
            limit,
            skip,
        };
        if r.check(identity) != check {
            return Err(bad());
        }
        Ok(r)
    }
}

/// What `pages` gathered: the items, where each came from (for resuming
/// after any of them), and why it stopped.
struct Gathered {
    items: Vec<Value>,
    /// The room in `--max-read-bytes` of the pages the items came from.
    rooms: Vec<Reservation>,
    /// Marks the call as holding room while `rooms` holds any, so that
    /// the next page's read does not wait for room ([`crate::budget`]).
    keeping: Option<crate::call::Keeping>,
    origins: Vec<Resume>,
    next: Option<Resume>,
    capped: bool,
    /// A later page failed; what was gathered before is kept.
    failed: Option<ToolError>,
    /// `href` of the first page Coda returned.
    href: Option<String>,
    /// `nextPageToken` and `nextPageLink` of the last page Coda returned.
    last_next: Option<(String, Option<String>)>,
    /// Why the list stopped before Coda's last token, as its note: Coda
    /// handed out a page token it had already given (following it would
    /// read the same pages forever), or one too long to follow.
    stopped: Option<String>,
}

/// Why a list stopped at a repeated token, for its `note` or error.
fn loop_note(token: &str) -> String {
    format!(
        "Coda returned the page token {:?} a second time, so following it would read the same pages again and never end; the list stopped there and may be incomplete",
        crate::client::model_text(token, 100)
    )
}

/// Longest `nextPageToken` followed and handed out (Coda's are a few
/// hundred characters): a longer one would be sent back in the next URL
/// and returned to the model outside the result budget.
pub const MAX_PAGE_TOKEN_BYTES: usize = 4096;
/// Longest `href` or `nextPageLink` passed on (a longer one is left out).
pub const MAX_LINK_BYTES: usize = 8192;

fn empty_pages_note(pages: usize) -> String {
    format!(
        "Coda returned {pages} pages in a row with no items, each with a new nextPageToken (--max-empty-pages), so the list stopped there and may be incomplete; nextPageToken continues from there"
    )
}

fn long_token_note(len: usize) -> String {
    format!(
        "Coda returned a nextPageToken of {len} bytes (more than {MAX_PAGE_TOKEN_BYTES}), which is neither followed nor handed out; the list stopped there and may be incomplete"
    )
}

/// State of an asynchronous Coda write after optional waiting. The write
/// itself was accepted either way: an error here is about waiting only.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationState {
    /// Coda reported the write as applied.
    pub completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Waiting stopped at the deadline before Coda reported completion.
    pub timed_out: bool,
    /// Why the status could not be read (the write was still accepted: do not resend it; check with coda_get_mutation_status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MutationState {
    fn timed_out() -> Self {
        MutationState {
            completed: false,
            warning: None,
            timed_out: true,
            error: None,
        }
    }

    /// Not waited for: the process stopped (see [`call::finishing`]).
    fn not_waited(request_id: &str) -> Self {
        tracing::info!(
            request_id,
            "stop waiting for Coda to apply a write: the process is stopping"
        );
        MutationState {
            completed: false,
            warning: None,
            timed_out: false,
            error: Some(format!(
                "the write was accepted (requestId {request_id}), but coda-mcp stopped before Coda reported it applied: it may still be applied"
            )),
        }
    }
}

/// What a dry-run replace would change.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplacePreview {
    pub dry_run: bool,
    /// The page's current body as plain text (at most maxChars characters).
    pub current: String,
    /// Characters in the whole current body.
    pub current_chars: usize,
    /// The content that would replace it.
    pub replacement: String,
    pub note: String,
}

/// Result of a write: Coda's response plus the mutation state when waited on.
#[derive(Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationOutput {
    /// Poll with coda_get_mutation_status; absent for synchronous writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Id of the object Coda created or changed, when it says (as at the top level of Coda's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Row of a pushed button, as at the top level of Coda's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_id: Option<String>,
    /// Column of a pushed button, as at the top level of Coda's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_id: Option<String>,
    /// Coda's response body.
    pub result: Object,
    /// Present when `wait` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationState>,
    /// Present when `verify` was true: what Coda stored, compared with what was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<checks::Verification>,
    /// Present for a dry run: what would change; nothing was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<ReplacePreview>,
    /// Present when Coda queued the write and it is not known to be applied yet: it stands (do not resend it) and how to learn when it is applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a model must be told about writes Coda queued (202 with a
/// `requestId`) that are not known to be applied: they stand, reads may
/// not show them yet, and how to learn when they are applied. `None` when
/// they are applied, or when `mutation.error` already says why it is not
/// known. Never suggests calling the write again.
pub fn queued_note(request_ids: &[String], mutation: Option<&MutationState>) -> Option<String> {
    let last = request_ids.last()?;
    let ids = if request_ids.len() == 1 {
        format!("requestId {last}")
    } else {
        format!("requestIds {}", request_ids.join(", "))
    };
    let check = format!(
        "do not resend it; to know when it is applied, call coda_get_mutation_status with requestId {last} (waitSeconds waits for it)"
    );
    match mutation {
        Some(m) if m.completed || m.error.is_some() => None,
        Some(_) => Some(format!(
            "Coda accepted this write ({ids}) but had not applied it when waiting stopped: it stays queued and will be applied, and reads may not show it yet; {check}"
        )),
        None => Some(format!(
            "queued, not yet applied: Coda accepted this write ({ids}) and applies it asynchronously (usually within seconds), so reads may not show it yet; {check}"
        )),
    }
}

impl Coda {
    pub fn new(client: CodaClient, cfg: CodaConfig) -> Self {
        Coda {
            client,
            cfg,
            columns: std::sync::Mutex::new(ColumnCache::default()),
        }
    }

    /// Every column of table `t` in doc `d`, from the cache when fresh.
    /// Columns the cache cannot hold (larger than `--column-cache-bytes`)
    /// keep the room their parse took in `--max-read-bytes` for as long
    /// as the caller keeps them (a write keeps them across its requests);
    /// cached ones are counted in the cache's bound instead.
    pub async fn columns(
        &self,
        d: &str,
        t: &str,
        deadline: Instant,
    ) -> ToolResult<Kept<Arc<Vec<Value>>>> {
        let key = (d.to_owned(), t.to_owned());
        if let Some(cols) = self
            .columns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Kept::new(cols, Vec::new()));
        }
        let req = ApiRequest::get(&["docs", d, "tables", t, "columns"]).query("limit", 100);
        let (cols, _) = self.list_all(req, COMPOSITE_CAP, deadline).await?;
        // Kept past this call, so not in --max-read-bytes (room other
        // calls' reads would wait for) but in the cache's own bound.
        let bytes = cols.reserved_bytes();
        let (cols, rooms) = cols.into_parts();
        let cols = Arc::new(cols);
        let max = self.cfg.column_cache_bytes;
        let kept = self
            .columns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, cols.clone(), bytes, max);
        if !kept {
            tracing::info!(
                bytes,
                max_bytes = max,
                "do not cache a table's columns: their parse is larger than --column-cache-bytes, so each write to it reads them again"
            );
            // Outside every other bound: counted while the call keeps them.
            return Ok(Kept::new(cols, rooms));
        }
        Ok(Kept::new(cols, Vec::new()))
    }

    /// The id of the table or view `raw` names in doc `d`: `raw` itself
    /// when it is an id, else the one table or view of that name. Coda
    /// uses an arbitrary one when several share a name, so a shared name is
    /// refused, with the candidates. A read (`write` false) takes an
    /// id-shaped value (`grid-…`, `table-…`) as it is, saving a request;
    /// a write always checks.
    pub async fn table_id(
        &self,
        d: &str,
        raw: &str,
        arg: &str,
        write: bool,
        deadline: Instant,
    ) -> ToolResult<String> {
        self.named_id(d, "table", raw, arg, write, &["grid-", "table-"], deadline)
            .await
    }

    /// The id of the one `kind` (`table`, `page`, `formula`, `control`: an object
    /// Coda lists at `/docs/{d}/{kind}s`) that `raw` names in doc `d`:
    /// [`Coda::fetch_by_ref`], then the doc's list of them for
    /// [`pick_named`], which refuses a name several share. Coda itself
    /// would use an arbitrary one of them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn named_id(
        &self,
        d: &str,
        kind: &str,
        raw: &str,
        arg: &str,
        write: bool,
        id_prefixes: &[&str],
        deadline: Instant,
    ) -> ToolResult<String> {
        let Some(found) = self
            .fetch_by_ref(d, kind, raw, arg, write, id_prefixes, deadline)
            .await?
        else {
            return Ok(raw.to_owned());
        };
        let collection = format!("{kind}s");
        let list = ApiRequest::get(&["docs", d, &collection]).query("limit", 100);
        // The whole list, not the result budget's share of it: a name
        // shared past what a result holds must be seen too.
        let (items, capped) = self.list_all(list, COMPOSITE_CAP, deadline).await?;
        if capped {
            return Err(ToolError::arg(
                arg,
                format!(
                    "doc {d} has more than {COMPOSITE_CAP} {collection}, too many to check that no other is named {raw:?}: give the {kind} id"
                ),
            ));
        }
        pick_named(&items, &found, raw, kind, arg, d)
    }

    /// The first step of resolving `raw`, the name or id of one of doc
    /// `d`'s `kind`s (`table`, `page`): `None` when `raw` is its id (for a
    /// read, any value shaped like one of `id_prefixes`, unchecked), else
    /// the object Coda found by that name, whose doc's list
    /// [`pick_named`] then checks for other objects of the same name
    /// ([`Coda::named_id`] does both).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch_by_ref(
        &self,
        d: &str,
        kind: &str,
        raw: &str,
        arg: &str,
        write: bool,
        id_prefixes: &[&str],
        deadline: Instant,
    ) -> ToolResult<Option<Value>> {
        if !write && id_shaped(raw, id_prefixes) {
            return Ok(None);
        }
        let collection = format!("{kind}s");
        let req = ApiRequest::get(&["docs", d, &collection, raw]);
        let object = match self.client.send(&req, deadline).await {
            Ok(r) => r.body,
            Err(e) if e.status() == Some(404) => {
                return Err(ToolError::arg(
                    arg,
                    format!("no {kind} {raw:?} in doc {d}: {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if object.get("id").and_then(Value::as_str) == Some(raw) {
            return Ok(None);
        }
        Ok(Some(object))
    }

    /// The id of the column `raw` names in table `t`: `raw` itself when it
    /// is a column id, else the one column of that name (from the cached
    /// columns); a name several columns share is refused, with their ids.
    /// A name no column has is passed on as it is (Coda answers for it).
    pub async fn column_id(
        &self,
        d: &str,
        t: &str,
        raw: &str,
        arg: &str,
        deadline: Instant,
    ) -> ToolResult<String> {
        let columns = self.columns(d, t, deadline).await?;
        Ok(
            one_named(&columns, raw, "column", arg, &format!("table {t}"))?
                .unwrap_or_else(|| raw.to_owned()),
        )
    }

    /// Forget a table's columns (after a write failed on them).
    pub fn forget_columns(&self, d: &str, t: &str) {
        self.columns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(d.to_owned(), t.to_owned()));
    }

    /// Turn a Coda browser URL given for a page, table or row into its id
    /// with `/resolveBrowserLink`; anything else is returned unchanged.
    pub async fn resolve_ref(
        &self,
        arg: &str,
        raw: &str,
        kind: &str,
        deadline: Instant,
    ) -> ToolResult<String> {
        if !raw.contains("://") {
            return Ok(raw.to_owned());
        }
        // Sent as the `--docs` check reads it (see `ids::link`).
        let url = crate::ids::link(raw)
            .ok_or_else(|| ToolError::arg(arg, "is neither an id, a name nor a valid URL"))?;
        let req = ApiRequest::get(&["resolveBrowserLink"]).query("url", url);
        let v = self
            .call(req, deadline)
            .await
            .map_err(|e| ToolError::arg(arg, format!("could not resolve the URL: {e}")))?;
        let ty = v
            .pointer("/resource/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let id = v
            .pointer("/resource/id")
            .and_then(Value::as_str)
            .unwrap_or("");
        if ty != kind || id.is_empty() {
            return Err(ToolError::arg(
                arg,
                format!("the URL points to a {ty}, not a {kind}"),
            ));
        }
        Ok(id.to_owned())
    }

    /// The deadline of the tool call being run: the same instant for every
    /// step of one call. Outside a call (resources, the start-up check) a
    /// new one from now.
    pub fn deadline(&self) -> Instant {
        call::deadline().unwrap_or_else(|| self.cfg.deadline_from(Instant::now()))
    }

    /// One request under `deadline`: Coda's answer. Its parse is counted
    /// in `--max-read-bytes` until it is returned ([`Coda::call_held`] to
    /// keep it counted longer).
    pub async fn call(&self, req: ApiRequest, deadline: Instant) -> ToolResult<Value> {
        Ok(self.client.send(&req, deadline).await?.body)
    }

    /// [`Coda::call`], with the room Coda's answer holds in
    /// `--max-read-bytes` once parsed: keep it while the answer is kept.
    pub async fn call_held(
        &self,
        req: ApiRequest,
        deadline: Instant,
    ) -> ToolResult<(Value, Reservation)> {
        let r = self.client.send(&req, deadline).await?;
        Ok((r.body, r.room))
    }

    /// One request under the call deadline; Coda's answer is the result,
    /// cut to the result budget ([`fit_object`]) with `truncated` and a
    /// `note` saying what was left out.
    pub async fn object(&self, req: ApiRequest) -> ToolResult<Reply> {
        // Counted until it is cut to the result budget.
        let (mut v, _room) = self.call_held(req, self.deadline()).await?;
        let budget = self.cfg.max_result_bytes;
        // Room for the note and the flag added below.
        let cuts = fit_object(&mut v, budget.saturating_sub(1024));
        if !cuts.is_empty() {
            tracing::info!(budget, "object result cut to the result budget");
            if let Some(o) = v.as_object_mut() {
                o.insert("truncated".into(), Value::Bool(true));
                o.insert(
                    "note".into(),
                    Value::String(format!(
                        "Coda's answer was larger than the result budget ({budget} bytes, --max-result-bytes), so it was cut: {}",
                        cuts.join("; ")
                    )),
                );
            }
        }
        Reply::json(v)
    }

    /// [`Coda::list`] under a fresh call deadline, as the tool's result.
    pub async fn list_reply(&self, req: ApiRequest, page: &PageArgs) -> ToolResult<Reply> {
        Reply::json(self.list(req, page, self.deadline()).await?)
    }

    /// [`Coda::mutate`] under a fresh call deadline, as the tool's result.
    pub async fn write_reply(&self, req: ApiRequest, wait: bool) -> ToolResult<Reply> {
        Reply::json(self.mutate(req, wait, self.deadline()).await?)
    }

    /// A write Coda applies before it answers, with no `requestId` (an
    /// unpublish, a doc or folder delete, a doc rename: their answers may
    /// be `{}`), under a fresh call deadline, as the tool's result.
    pub async fn direct_write_reply(&self, req: ApiRequest) -> ToolResult<Reply> {
        Reply::json(self.send_write(req, false, self.deadline()).await?)
    }

    /// One page, or every page with `fetchAll`, within the result budget.
    pub async fn list(
        &self,
        req: ApiRequest,
        page: &PageArgs,
        deadline: Instant,
    ) -> ToolResult<ListOutput> {
        self.list_shaped(req, page, deadline, &|v| v).await
    }

    /// [`Coda::list`] with each item reshaped (slim rows, projections)
    /// before the budget is applied.
    pub async fn list_shaped(
        &self,
        req: ApiRequest,
        page: &PageArgs,
        deadline: Instant,
        shape: &(dyn Fn(Value) -> Value + Sync),
    ) -> ToolResult<ListOutput> {
        if page.limit == Some(0) {
            return Err(ToolError::arg("limit", "must be at least 1"));
        }
        let cap = page
            .max_items
            .map(|m| (m as usize).clamp(1, MAX_FETCH_ALL_CAP))
            .unwrap_or(DEFAULT_FETCH_ALL_CAP);
        let token = page.page_token.as_ref().or(page.next_page_token.as_ref());
        let identity = list_identity(&req);
        let start = match token {
            Some(tok) => Resume::decode(tok, &identity)?,
            None => Resume {
                coda_token: None,
                limit: page.limit.map(|l| max_limit(&req).map_or(l, |m| l.min(m))),
                skip: 0,
            },
        };
        let g = self
            .pages(
                &req,
                start,
                if page.fetch_all { cap } else { 0 },
                Some((self.cfg.max_result_bytes, shape)),
                deadline,
            )
            .await?;
        let mut items: Vec<Value> = g.items.into_iter().map(shape).collect();
        let mut truncated = g.capped;
        let mut note = g.failed.map(|e| {
            truncated = true;
            format!("a later page failed ({e}); the items gathered before it are returned and nextPageToken retries from there")
        });
        if let Some(why) = &g.stopped {
            truncated = true;
            note = Some(why.clone());
        }
        // The byte budget: whole items only, resuming at the first one left
        // out. The result without its items, for keeping `keep` of them.
        let budget = self.cfg.max_result_bytes;
        let total = items.len();
        let shell = |keep: usize| {
            let (mut next, mut truncated, mut note) = (g.next.clone(), truncated, note.clone());
            if keep < total {
                next = Some(g.origins[keep].clone());
                truncated = true;
                note = Some(format!(
                    "stopped at the result budget ({budget} bytes, --max-result-bytes) with {} gathered item(s) left out; continue with nextPageToken{}",
                    total - keep,
                    note.map(|n| format!("; also: {n}")).unwrap_or_default()
                ));
            }
            // Coda's link only where it leads to the same place as the
            // token: the start of the page Coda's last token returns.
            let next_page_link = g
                .last_next
                .as_ref()
                .filter(|(t, _)| {
                    next.as_ref()
                        .is_some_and(|r| r.skip == 0 && r.coda_token.as_deref() == Some(t.as_str()))
                })
                .and_then(|(_, link)| link.clone());
            let next_page_token = next.map(|r| r.encode(&identity));
            ListOutput {
                count: keep,
                items: Vec::new(),
                next_page_token,
                truncated,
                note,
                href: g.href.clone(),
                next_page_link,
            }
        };
        // The token, note and links handed out take room too (Coda's token
        // alone can take 4096 bytes): leave out more items while the whole
        // result passes the budget (one item always stays).
        let sizes: Vec<usize> = items.iter().map(|it| json_len(it) + 1).collect();
        let mut keep = sizes_within(sizes.iter().copied(), budget);
        let mut items_bytes: usize = sizes[..keep].iter().sum();
        let mut out = shell(keep);
        while keep > 1 && json_len(&out) + items_bytes > budget {
            keep -= 1;
            items_bytes -= sizes[keep];
            out = shell(keep);
        }
        items.truncate(keep);
        out.items = items;
        Ok(out)
    }

    /// Every item of a list, up to `cap` (for composites), holding the
    /// room their pages' parse took in `--max-read-bytes` while kept.
    pub async fn list_all(
        &self,
        req: ApiRequest,
        cap: usize,
        deadline: Instant,
    ) -> ToolResult<(Kept<Vec<Value>>, bool)> {
        let start = Resume {
            coda_token: None,
            limit: None,
            skip: 0,
        };
        let g = self.pages(&req, start, cap, None, deadline).await?;
        if let Some(e) = g.failed {
            return Err(e);
        }
        if let Some(why) = g.stopped {
            return Err(ToolError::Coda(CodaError::InvalidResponse {
                status: 200,
                reason: why,
            }));
        }
        // The items go to a caller that keeps them (a composite's
        // summary, a page's text): so does the room of their pages.
        Ok((Kept::new(g.items, g.rooms), g.capped))
    }

    /// Fetch pages starting at `start`. `cap == 0` means just one page.
    /// With `budget` (bytes, and how items are shaped for the result), no
    /// further page is read once the items gathered fill it: the caller
    /// cuts to the budget, and reading more would be thrown away.
    /// A failure after the first page keeps what was gathered.
    async fn pages(
        &self,
        req: &ApiRequest,
        start: Resume,
        cap: usize,
        budget: Option<(usize, &(dyn Fn(Value) -> Value + Sync))>,
        deadline: Instant,
    ) -> ToolResult<Gathered> {
        let mut used = 0usize;
        let mut g = Gathered {
            items: Vec::new(),
            rooms: Vec::new(),
            keeping: None,
            origins: Vec::new(),
            next: None,
            capped: false,
            failed: None,
            href: None,
            last_next: None,
            stopped: None,
        };
        // Every Coda token followed (or started from): one seen again means
        // Coda is leading the list in a circle. Kept as a keyed 64-bit hash
        // (8 bytes a page, not up to 4096): the pages one call reads are
        // bounded only by the read bucket and its deadline (60,000 at
        // `--call-timeout-secs 3600`). The key is this call's own, so a
        // Coda cannot make two tokens collide (2^-64 for any two).
        let keys = std::hash::RandomState::new();
        let hash = |t: &str| std::hash::BuildHasher::hash_one(&keys, t);
        let mut seen: std::collections::HashSet<u64> =
            start.coda_token.as_deref().map(hash).into_iter().collect();
        let mut at = start;
        let mut first = true;
        // Pages in a row that held no item (past the ones skipped).
        let mut empty = 0usize;
        loop {
            let mut current = match &at.coda_token {
                // Coda bakes the other parameters into the token and ignores
                // them; `docIds` stays, so that the `--docs` check of the
                // request (analytics of listed docs only) passes its pages.
                Some(tok) => ApiRequest {
                    query: std::iter::once(("pageToken".into(), tok.to_string()))
                        .chain(req.query.iter().filter(|(k, _)| k == "docIds").cloned())
                        .collect(),
                    ..req.clone()
                },
                None => {
                    let mut r = req.clone();
                    if let Some(l) = at.limit {
                        r.query.retain(|(k, _)| k != "limit");
                        r.query.push(("limit".into(), l.to_string()));
                    }
                    r
                }
            };
            let (mut body, room) = loop {
                match self.call_held(current.clone(), deadline).await {
                    Ok(b) => break b,
                    // Coda times out (504) listing big tables; a first page can
                    // be asked again with a smaller limit (a token cannot change it).
                    Err(ToolError::Coda(e)) if e.status() == Some(504) && first && at.skip == 0 => {
                        match smaller_limit(&current) {
                            Some(next) => {
                                tracing::info!(
                                    "504 from Coda, retrying the list with a smaller page"
                                );
                                current = next;
                            }
                            None => return Err(e.into()),
                        }
                    }
                    Err(e) if first => return Err(e),
                    Err(e) => {
                        g.next = Some(at);
                        g.failed = Some(e);
                        return Ok(g);
                    }
                }
            };
            let page_items = match body.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => Some(items),
                _ => None,
            }
            .ok_or_else(|| {
                ToolError::Coda(CodaError::InvalidResponse {
                    status: 200,
                    reason: "list response has no items array".into(),
                })
            })?;
            // Coda lists objects; anything else would break every list's
            // outputSchema (a validating client rejects the whole result).
            if let Some(i) = page_items.iter().position(|it| !it.is_object()) {
                return Err(ToolError::Coda(CodaError::InvalidResponse {
                    status: 200,
                    reason: format!(
                        "list item {i} of Coda's answer is not an object ({})",
                        crate::client::model_text(&page_items[i].to_string(), 100)
                    ),
                }));
            }
            // The limit this page was asked with, for resuming inside it.
            let asked_limit = current
                .query
                .iter()
                .find(|(k, _)| k == "limit")
                .and_then(|(_, v)| v.parse().ok());
            if page_items.len() <= at.skip {
                empty += 1;
            } else {
                empty = 0;
                // Its items are kept: so is their room.
                if room.bytes() > 0 && g.keeping.is_none() {
                    g.keeping = Some(crate::call::keeping());
                }
                g.rooms.push(room);
            }
            for (i, it) in page_items.into_iter().enumerate().skip(at.skip) {
                if let Some((_, shape)) = budget {
                    used += serde_json::to_string(&shape(it.clone()))
                        .map(|t| t.len() + 1)
                        .unwrap_or(0);
                }
                g.origins.push(Resume {
                    coda_token: at.coda_token.clone(),
                    limit: if at.coda_token.is_none() {
                        asked_limit
                    } else {
                        None
                    },
                    skip: i,
                });
                g.items.push(it);
            }
            let text = |k: &str, max: usize| {
                body.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| s.len() <= max)
                    .map(str::to_owned)
            };
            if first {
                g.href = text("href", MAX_LINK_BYTES);
            }
            g.last_next = text("nextPageToken", MAX_PAGE_TOKEN_BYTES)
                .map(|t| (t, text("nextPageLink", MAX_LINK_BYTES)));
            first = false;
            let next = match body.get("nextPageToken") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if t.is_empty() => None,
                Some(Value::String(t)) => Some(Resume {
                    coda_token: Some(Arc::from(t.as_str())),
                    limit: None,
                    skip: 0,
                }),
                // Coda said more follows but not how to get it: the end of
                // what can be read, not of the list.
                Some(other) => {
                    tracing::warn!("Coda's nextPageToken is not a string");
                    g.stopped = Some(format!(
                        "Coda returned a nextPageToken that is not a string ({}), so the list cannot be followed past this page and may be incomplete",
                        crate::client::model_text(&other.to_string(), 100)
                    ));
                    return Ok(g);
                }
            };
            match next {
                None => return Ok(g),
                Some(n)
                    if n.coda_token
                        .as_ref()
                        .is_some_and(|t| t.len() > MAX_PAGE_TOKEN_BYTES) =>
                {
                    let len = n.coda_token.map_or(0, |t| t.len());
                    tracing::warn!(len, "Coda's nextPageToken is too long to follow");
                    g.stopped = Some(long_token_note(len));
                    return Ok(g);
                }
                Some(n)
                    if n.coda_token
                        .as_deref()
                        .is_some_and(|t| seen.contains(&hash(t))) =>
                {
                    g.stopped = n.coda_token.as_deref().map(loop_note);
                    return Ok(g);
                }
                Some(n) if cap == 0 => {
                    g.next = Some(n);
                    return Ok(g);
                }
                // Coda may hand out a token for ever (an endless chain of
                // new ones): the repeat check cannot see it, and the call
                // would read, on the read budget other calls share, until
                // its deadline.
                Some(n) if empty >= self.cfg.max_empty_pages => {
                    tracing::warn!(
                        pages = empty,
                        "stop a list: Coda returned pages without items in a row (--max-empty-pages)"
                    );
                    g.next = Some(n);
                    g.stopped = Some(empty_pages_note(empty));
                    return Ok(g);
                }
                Some(n) => {
                    // Whole pages only: cutting a page would lose the items
                    // between the cut and the token's position.
                    if g.items.len() >= cap || budget.is_some_and(|(b, _)| used > b) {
                        g.next = Some(n);
                        g.capped = true;
                        return Ok(g);
                    }
                    call::progress(g.items.len() as f64, None, "listing").await;
                    seen.extend(n.coda_token.as_deref().map(hash));
                    at = n;
                }
            }
        }
    }

    /// Send a write Coda queues ([`ApiRequest::queued`]: its answer must
    /// carry a `requestId`); with `wait`, poll `/mutationStatus` until done
    /// or the deadline. Once Coda accepted the write, the result is always
    /// a success carrying its request id: a failure while waiting is
    /// reported in `mutation.error`, never as a failed call (a model would
    /// resend).
    pub async fn mutate(
        &self,
        req: ApiRequest,
        wait: bool,
        deadline: Instant,
    ) -> ToolResult<MutationOutput> {
        self.send_write(req.queued(), wait, deadline).await
    }

    /// [`Coda::mutate`] of a write queued or not, as `req` says.
    async fn send_write(
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
            (Some(id), true) => Some(self.wait_mutation(id, deadline).await),
            _ => None,
        };
        let top = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_owned);
        let note = queued_note(request_id.as_slice(), mutation.as_ref());
        Ok(MutationOutput {
            id: top("id"),
            row_id: top("rowId"),
            column_id: top("columnId"),
            request_id,
            result,
            mutation,
            verification: None,
            preview: None,
            note,
        })
    }

    /// Poll `/mutationStatus/{id}`: sleep first, treat 404 as "not yet" within
    /// the grace window, back off ×1.5 up to 8 s, stop at the deadline. Polls
    /// at least once, however short the deadline. Never fails: an error
    /// while polling is reported in the state.
    pub async fn wait_mutation(&self, request_id: &str, deadline: Instant) -> MutationState {
        let started = Instant::now();
        let mut interval = self.cfg.poll_interval;
        let mut polls = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Leave a quarter of what is left for the poll itself.
            let room = remaining.mul_f64(0.75);
            if polls > 0 && interval >= room {
                return MutationState::timed_out();
            }
            // At the process's stop the write is finished once sent:
            // whether Coda applied it yet changes nothing, and nobody
            // would read the answer (`call::finishing`).
            tokio::select! {
                _ = tokio::time::sleep(interval.min(room)) => {}
                _ = call::finishing() => return MutationState::not_waited(request_id),
            }
            polls += 1;
            interval = (interval.mul_f64(1.5)).min(Duration::from_secs(8));
            call::progress(
                f64::from(polls),
                None,
                "waiting for Coda to apply the write",
            )
            .await;
            let req = ApiRequest::get(&["mutationStatus", request_id]);
            let status = tokio::select! {
                s = self.client.send(&req, deadline) => s,
                _ = call::finishing() => return MutationState::not_waited(request_id),
            };
            match status {
                Ok(resp) => {
                    let completed = resp
                        .body
                        .get("completed")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if completed {
                        return MutationState {
                            completed,
                            warning: resp
                                .body
                                .get("warning")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            timed_out: false,
                            error: None,
                        };
                    }
                }
                Err(e)
                    if e.status() == Some(404) && started.elapsed() < self.cfg.not_found_grace =>
                {
                    tracing::debug!(request_id, "mutation status not replicated yet");
                }
                Err(e) => {
                    tracing::info!(request_id, error = %e, "could not read mutation status");
                    return MutationState {
                        completed: false,
                        warning: None,
                        timed_out: matches!(
                            e,
                            CodaError::DeadlineExceeded(..) | CodaError::LocalRateLimit { .. }
                        ),
                        error: Some(format!(
                            "the write was accepted (requestId {request_id}) but its status could not be read: {e}"
                        )),
                    };
                }
            }
        }
    }

    /// Wait for every write request of a call: `ids` are the request ids
    /// Coda's answers carried, `accepted` how many write requests Coda
    /// accepted. Completed only when every accepted request had an id and
    /// Coda reported each applied: an answer without a `requestId` (a
    /// proxy's `{}`, a broken Coda) gives nothing to wait for, and no
    /// accepted request at all is nothing to call applied. Stops at the
    /// first request not applied, and says which.
    pub async fn wait_all(&self, ids: &[String], accepted: usize, dl: Instant) -> MutationState {
        if accepted == 0 {
            return MutationState {
                completed: false,
                warning: Some(
                    "no write request was accepted, so there was nothing to wait for".into(),
                ),
                timed_out: false,
                error: None,
            };
        }
        let mut warnings = Vec::new();
        for id in ids {
            let mut st = self.wait_mutation(id, dl).await;
            if !st.completed {
                if st.error.is_none() && ids.len() > 1 {
                    st.warning = Some(format!(
                        "requestId {id} was not applied yet when waiting stopped"
                    ));
                }
                return st;
            }
            warnings.extend(st.warning);
        }
        let unknown = accepted.saturating_sub(ids.len());
        MutationState {
            completed: unknown == 0,
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
            timed_out: false,
            error: (unknown > 0).then(|| {
                format!(
                    "Coda's answer to {unknown} of the {accepted} write requests it accepted carried no requestId, so whether they were applied could not be read: do not resend them; re-read what they change to see"
                )
            }),
        }
    }
}

/// Bytes of `v` as compact JSON, counted without writing them anywhere.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // A `Value` (or a string) always serializes: its keys are strings.
    serde_json::to_writer(&mut n, v).map_or(0, |()| n.0)
}

/// The JSON pointer and size of the largest array, string or object in
/// `v` below its root (the part of an answer to cut first).
fn largest_part(v: &Value) -> Option<(String, usize)> {
    let mut best = None;
    sized(v, &mut String::new(), &mut best);
    best
}

/// The size of `v` as compact JSON, from its parts' sizes (each part
/// measured once), keeping in `best` the largest array, string or object
/// below `v`; `at` is `v`'s pointer, restored on return.
fn sized(v: &Value, at: &mut String, best: &mut Option<(String, usize)>) -> usize {
    let child = |x: &Value, at: &mut String, best: &mut Option<(String, usize)>| {
        let size = sized(x, at, best);
        if matches!(x, Value::Array(_) | Value::Object(_) | Value::String(_))
            && best.as_ref().is_none_or(|(_, n)| size > *n)
        {
            *best = Some((at.clone(), size));
        }
        size
    };
    let (open, items) = match v {
        Value::Array(items) => {
            let mut total = 0;
            for (i, x) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                total += child(x, at, best);
                at.truncate(len);
            }
            (total, items.len())
        }
        Value::Object(o) => {
            let mut total = 0;
            for (k, x) in o {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                // `"key":` and the value.
                total += json_len(k.as_str()) + 1 + child(x, at, best);
                at.truncate(len);
            }
            (total, o.len())
        }
        leaf => return json_len(leaf),
    };
    // Brackets, and a comma between items.
    open + 2 + items.saturating_sub(1)
}

/// Cut `v` to at most `budget` bytes of JSON by cutting the tail of its
/// largest array, string or object (whole items, whole characters), again
/// while it is too large; returns what was cut (`/value: kept the first 310
/// of 5000 items`), nothing when it fits. An object read is one answer of
/// any size (a formula's value over a whole table, a long cell): it must
/// not pass the budget every list keeps.
pub fn fit_object(v: &mut Value, budget: usize) -> Vec<String> {
    // Each part cut: its size before the first cut, and the unit counted.
    let mut cut: Vec<(String, usize, &str)> = Vec::new();
    for _ in 0..32 {
        let size = json_len(v);
        if size <= budget {
            break;
        }
        let over = size - budget;
        let Some((ptr, _)) = largest_part(v) else {
            break;
        };
        // Invariant: largest_part returns a pointer into `v`.
        let Some(part) = v.pointer_mut(&ptr) else {
            break;
        };
        let (total, unit) = match part {
            Value::Array(items) => {
                let total = items.len();
                let mut freed = 0;
                while freed < over {
                    let Some(x) = items.pop() else { break };
                    freed += json_len(&x) + 1;
                }
                (total, "items")
            }
            Value::Object(o) => {
                let total = o.len();
                let mut freed = 0;
                while freed < over {
                    let Some(k) = o.keys().next_back().cloned() else {
                        break;
                    };
                    freed += o.remove(&k).map_or(0, |x| json_len(&x)) + k.len() + 4;
                }
                (total, "keys")
            }
            Value::String(text) => {
                let total = text.chars().count();
                // An escaped character takes more room than its bytes:
                // the next round cuts again if this was not enough.
                let mut end = text.len().saturating_sub(over);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                (total, "characters")
            }
            _ => break,
        };
        if !cut.iter().any(|(p, _, _)| *p == ptr) {
            cut.push((ptr, total, unit));
        }
    }
    cut.into_iter()
        .filter_map(|(ptr, total, unit)| {
            let kept = match v.pointer(&ptr)? {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(t) => t.chars().count(),
                _ => return None,
            };
            Some(format!("{ptr}: kept the first {kept} of {total} {unit}"))
        })
        .collect()
}

/// How many leading `items` fit in a result of `budget` bytes (always at
/// least one: a single item over the budget is returned whole).
pub fn items_within(items: &[Value], budget: usize) -> usize {
    sizes_within(items.iter().map(|it| json_len(it) + 1), budget)
}

/// [`items_within`] from the items' sizes (each with its comma).
fn sizes_within(sizes: impl IntoIterator<Item = usize>, budget: usize) -> usize {
    // Room for the result's other fields.
    let mut used = 256;
    let mut n = 0;
    for (i, size) in sizes.into_iter().enumerate() {
        used += size;
        if used > budget && i > 0 {
            return i;
        }
        n = i + 1;
    }
    n
}

/// The largest `limit` Coda's OpenAPI spec allows for the list `req`
/// reads, for the lists that have one: a larger one is answered 400, so
/// a list asks for this many instead (each tool's description says so).
fn max_limit(req: &ApiRequest) -> Option<u32> {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["docs", _, "tables", _, "columns"] => Some(100),
        ["docs", _, "pages", _, "content"] => Some(500),
        ["analytics", ..] => Some(5000),
        _ => None,
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

/// [`row_query`] knowing the table's columns: a column whose *name* is
/// `column` is quoted as a name even when it looks like an id (`c-…`).
pub fn row_query_in(columns: &[Value], column: &str, value: &Value) -> ToolResult<String> {
    let same_name: Vec<&str> = columns
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some(column))
        .filter_map(|c| c.get("id").and_then(Value::as_str))
        .collect();
    let is_id = columns
        .iter()
        .any(|c| c.get("id").and_then(Value::as_str) == Some(column));
    // Coda reads a quoted name in a query as a name: a shared one would
    // filter on an arbitrary column of them.
    if same_name.len() > 1 {
        return Err(ToolError::ambiguous(
            "filter.column",
            column,
            "column",
            "the table",
            &same_name,
            false,
        ));
    }
    let named = !same_name.is_empty();
    let is_id = !named && is_id;
    if named || is_id {
        let col = if is_id {
            column.to_owned()
        } else {
            Value::String(column.to_owned()).to_string()
        };
        return Ok(format!("{col}:{}", query_value(value)?));
    }
    row_query(column, value)
}

fn query_value(value: &Value) -> ToolResult<String> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => Err(ToolError::arg(
            "filter.value",
            "must be a string, number or boolean",
        )),
    }
}

/// Build a row-list `query` from a structured filter: column ids (`c-…`)
/// stay bare, names are JSON-quoted, values are JSON.
pub fn row_query(column: &str, value: &Value) -> ToolResult<String> {
    required("filter.column", column)?;
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

    /// The size measured from the parts is the size of the JSON text, and
    /// the largest part below the root is found with its pointer.
    #[test]
    fn parts_are_measured_once_and_the_largest_is_found() {
        let v = json!({
            "a/b": [1, "two", {"c~d": "x".repeat(50), "e": null}],
            "q\"uote": {"inner": [true, false, 1.5e300], "s": "é\n"},
            "empty": [],
            "o": {},
        });
        let mut best = None;
        assert_eq!(sized(&v, &mut String::new(), &mut best), json_len(&v));
        let (ptr, size) = best.unwrap();
        assert_eq!(ptr, "/a~1b");
        assert_eq!(size, json_len(v.pointer("/a~1b").unwrap()));
        assert_eq!(largest_part(&json!([1, 2])), None);
        let (ptr, _) = largest_part(&json!({"k": {"deep": "y".repeat(10)}, "l": "z"})).unwrap();
        assert_eq!(ptr, "/k");
    }

    #[test]
    fn summary_carries_errors_notes_and_warnings_verbatim() {
        let long = format!("request 2 of 3 failed: {}; do not resend", "x".repeat(150));
        let v = json!({
            "items": [1, 2],
            "bulk": "y".repeat(700),
            "error": long,
            "mutation": {"completed": false, "error": format!("accepted {} do not resend", "z".repeat(100))},
            "verification": {"note": "n".repeat(90)},
            "warning": "w".repeat(2000),
        });
        let s = summary(&v);
        assert!(s.contains(&long), "{s}");
        assert!(s.contains(v["mutation"]["error"].as_str().unwrap()), "{s}");
        assert!(
            s.contains(v["verification"]["note"].as_str().unwrap()),
            "{s}"
        );
        // Capped, not dropped.
        assert!(
            s.contains(&"w".repeat(300)) && !s.contains(&"w".repeat(600)),
            "{s}"
        );
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

    /// Regression: the list identity a token's check covers was the
    /// request written as text (`GET /docs/d/pages/a/b/content`, then
    /// `k=v` lines), so two lists could share it, and each took the
    /// other's tokens: a page named `a/b` and the segments `a`, `b`; a row
    /// filter holding a line break and `sortBy=natural` and the same
    /// filter with that sort.
    #[test]
    fn a_token_is_bound_to_the_request_not_to_its_text() {
        let at = Resume {
            coda_token: Some("tok-1".into()),
            limit: None,
            skip: 0,
        };
        let rows = ["docs", "d", "tables", "t", "rows"];
        let pairs = [
            (
                ApiRequest::get(&rows)
                    .query("query", "\"Name\":\"x\"")
                    .query("sortBy", "natural"),
                ApiRequest::get(&rows).query("query", "\"Name\":\"x\"\nsortBy=natural"),
            ),
            (
                ApiRequest::get(&["docs", "d", "pages", "a/b", "content"]),
                ApiRequest::get(&["docs", "d", "pages", "a", "b", "content"]),
            ),
        ];
        for (a, b) in pairs {
            let tok = at.encode(&list_identity(&a));
            assert_eq!(Resume::decode(&tok, &list_identity(&a)).unwrap(), at);
            assert!(
                Resume::decode(&tok, &list_identity(&b)).is_err(),
                "{:?} took the token of {:?}",
                b.query,
                a.query
            );
        }
        // The parameters a token carries are no part of what it is bound to.
        let a = ApiRequest::get(&rows)
            .query("limit", 5)
            .query("b", 1)
            .query("a", 2);
        let b = ApiRequest::get(&rows)
            .query("a", 2)
            .query("b", 1)
            .query("pageToken", "x");
        assert_eq!(list_identity(&a), list_identity(&b));
    }

    #[derive(Debug, Deserialize, JsonSchema)]
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
        // Not declared, so never taken for the culprit (nor tried).
        o.insert("aStray".into(), json!("ten"));
        let wrong = parse_args::<P>(o).unwrap_err().to_string();
        assert!(wrong.starts_with("invalid argument `limit`"), "{wrong}");
    }
}
