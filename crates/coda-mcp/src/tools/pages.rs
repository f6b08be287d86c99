//! Toolset `pages`: page metadata, page writes, and reading page bodies.
//!
//! Reading markdown/html goes through Coda's export: start it, poll its
//! status (404 right after the start means "not replicated yet" for a grace
//! window; back off ×1.5 to 8 s; `failed`/`error` ends it), then fetch the
//! short-lived download link without the token, inflating gzip and
//! re-polling for a fresh link when the old one returns an error document.
//! Plain text comes from `GET …/content` instead, which needs no export.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::docs::{ContentFormat, canvas_content};
use super::error::{ToolError, ToolResult};
use super::{
    COMPOSITE_CAP, Coda, ListOutput, MutationOutput, Object, PageArgs, ReplacePreview, Reply,
    input, output, required, run,
};
use crate::budget::{Held, Kept};
use crate::client::{ApiRequest, CodaError};
use crate::ids::doc_id;
use crate::ratelimit::RequestClass;

/// Pages whose content `coda_search_pages` reads at the same time.
const SEARCH_CONCURRENCY: usize = 4;
/// Matches `coda_search_pages` returns unless `limit` says otherwise.
pub const DEFAULT_SEARCH_RESULTS: usize = 100;
/// Most matches `coda_search_pages` returns, whatever `limit` says.
pub const MAX_SEARCH_RESULTS: usize = 1000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListPagesParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageRefParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name. Ids are safer: names may be ambiguous.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WritePageRefParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// Wait until Coda has applied the write (polls mutation status).
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePageParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page name.
    pub name: String,
    /// Page body (markdown by default, see format). Empty gives an empty page.
    pub content: Option<String>,
    /// Format of content: markdown (default) or html.
    pub format: Option<ContentFormat>,
    /// Create as a subpage of this page id.
    pub parent_page_id: Option<String>,
    pub subtitle: Option<String>,
    /// Icon name, e.g. "rocket".
    pub icon_name: Option<String>,
    /// Cover image URL.
    pub image_url: Option<String>,
    /// Make an embed page showing this URL instead of a canvas.
    pub embed_url: Option<String>,
    /// Wait until Coda has applied the write.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePageParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    pub name: Option<String>,
    pub subtitle: Option<String>,
    pub icon_name: Option<String>,
    pub image_url: Option<String>,
    pub is_hidden: Option<bool>,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenamePageParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// New page name.
    pub new_name: String,
    /// New subtitle.
    pub subtitle: Option<String>,
    #[serde(default)]
    pub wait: bool,
}

/// Output format of a page read.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ReadFormat {
    Markdown,
    Html,
    /// Text of each element, no export needed (fastest).
    PlainText,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetPageContentParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// markdown (default), html (keeps attachments) or plainText (no export).
    pub format: Option<ReadFormat>,
    /// Return at most this many characters (default 20000; fewer when they would pass the result budget; continue with offset).
    pub max_chars: Option<usize>,
    /// Character offset to start from.
    #[serde(default)]
    pub offset: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeekPageParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// Number of lines to return.
    pub num_lines: usize,
    /// plainText (default, no export, headings/lists rendered as markdown) or markdown (full export).
    pub format: Option<ReadFormat>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageContentOutput {
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    pub format: ReadFormat,
    pub content: String,
    /// Characters in the whole page body.
    pub total_chars: usize,
    pub offset: usize,
    /// More content follows: call again with offset = offset + content length.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListPageContentParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    #[serde(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentWriteParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// Content to write (markdown by default).
    pub content: String,
    /// markdown (default) or html.
    pub format: Option<ContentFormat>,
    /// Element id (cl-…, from coda_list_page_content) to edit relative to, instead of the whole page.
    pub element_id: Option<String>,
    #[serde(default)]
    pub wait: bool,
    /// Wait until applied, re-read the page and report lines of content that are not found in it (implies wait). Also reads the page before the write: after an append or prepend (or a replace of one element, less what it held) each line must be there more times than before; after a replace of the whole page no earlier line the content lacks may remain.
    #[serde(default)]
    pub verify: bool,
    /// Replace only: return the current body and what would replace it; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Lines of written content as they should appear in the page's plain
/// text: markdown markers and html tags removed, blank lines dropped.
fn content_lines(content: &str, html: bool) -> Vec<String> {
    let mut out = Vec::new();
    for line in content.lines() {
        let mut t = line.trim().to_owned();
        if html {
            let mut o = String::new();
            let mut inside = false;
            for ch in t.chars() {
                match ch {
                    '<' => inside = true,
                    '>' => inside = false,
                    c if !inside => o.push(c),
                    _ => {}
                }
            }
            t = o.trim().to_owned();
        } else {
            t = t
                .trim_start_matches(['#', '>', '-', '*', '+'])
                .trim_start()
                .trim_start_matches("[ ] ")
                .to_owned();
            if let Some((num, rest)) = t.split_once(". ")
                && num.chars().all(|c| c.is_ascii_digit())
            {
                t = rest.to_owned();
            }
            t = t.replace("**", "").replace('`', "");
        }
        if !t.is_empty() {
            out.push(t);
        }
    }
    out
}

/// At most this many lines a replace should have removed are named.
const MAX_LEFT_LINES: usize = 20;

/// What `verify` found wrong with a content write: (intended, stored)
/// pairs for the lines, and how many lines past [`MAX_LEFT_LINES`] were
/// left unnamed.
#[derive(Debug, Default, PartialEq)]
struct ContentCheck {
    lines: Vec<(String, String)>,
    left_out: usize,
}

/// Checks a content write from the page's plain text `after` it, the
/// content's `lines` ([`content_lines`]) and, when read, the plain text
/// `before` it.
///
/// - Every line must be on the page. With `before`, an append or
///   prepend must leave each line there at least as many more times as
///   the content holds it: text the page already had ("Status: OK" once
///   more) proves nothing by being found. A replace of one element is
///   counted so too, less what the element itself held (`removed`, its
///   plain text before the write).
/// - A replace of the whole page (`before` given) must leave none of the
///   page's earlier lines that the content does not hold: a lost replace
///   that was to remove lines leaves a page where every new line is
///   found.
fn content_mismatches(
    lines: &[String],
    before: Option<&str>,
    removed: &str,
    after: &str,
    replace: bool,
) -> ContentCheck {
    let mut out = ContentCheck::default();
    let sent = lines.join("\n");
    let mut seen = std::collections::HashSet::new();
    for line in lines {
        if !seen.insert(line.as_str()) {
            continue;
        }
        let found = after.matches(line.as_str()).count();
        let wrong = match before {
            Some(b) if !replace => {
                let had = b.matches(line.as_str()).count();
                // More when a line is also part of another line.
                let want = (had + sent.matches(line.as_str()).count())
                    .saturating_sub(removed.matches(line.as_str()).count());
                (found < want).then(|| {
                    format!("(on the page {found} times after the write, {had} before it: expected at least {want})")
                })
            }
            _ => (found == 0).then(|| "(not found in the page)".to_owned()),
        };
        if let Some(stored) = wrong {
            out.lines.push((line.clone(), stored));
        }
    }
    if let (Some(b), true) = (before, replace) {
        let now: std::collections::HashSet<String> =
            content_lines(after, false).into_iter().collect();
        let mut left = std::collections::HashSet::new();
        for old in content_lines(b, false) {
            if !sent.contains(&old) && now.contains(&old) && left.insert(old.clone()) {
                if left.len() > MAX_LEFT_LINES {
                    out.left_out += 1;
                } else {
                    out.lines.push((
                        "(not in the new content)".to_owned(),
                        format!("(still on the page after the replace) {old}"),
                    ));
                }
            }
        }
    }
    out
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletePageContentParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// Element ids (cl-…) to delete; omit to delete the whole body.
    pub element_ids: Option<Vec<String>>,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuplicatePageParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Page id (canvas-…) or name to copy.
    #[serde(alias = "page_id_or_name")]
    pub page_id_or_name: String,
    /// Name of the copy.
    pub new_name: String,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateOutput {
    /// Id of the new page (the key coda-enhanced returned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[schemars(with = "Option<String>")]
    pub source_page_id: Value,
    /// Id of the new page.
    #[schemars(with = "Option<String>")]
    pub new_page_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_page_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<super::MutationState>,
    /// The copy is an HTML round-trip; some content (e.g. tables, buttons) may not survive. When Coda queued the copy and it is not known to be applied, this says so first: do not resend it.
    pub note: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPagesParams {
    /// Doc id or Coda URL.
    #[serde(alias = "doc_id")]
    pub doc_id: String,
    /// Text to look for (case-insensitive).
    pub query: String,
    /// Also search page bodies (plain text, no export).
    #[serde(default)]
    pub include_content: bool,
    /// Most matches to return (default 100, at most 1000; fewer when they would pass the result budget).
    #[schemars(range(min = 1))]
    pub limit: Option<usize>,
}

/// The shape of coda-enhanced's page search (`items`, `searchQuery`,
/// `searchedContent`, `totalFound`), over every page instead of the first
/// page of the list. Each item is the page as Coda lists it, plus
/// `matchedIn`, `snippet` and, for pages found by their body only,
/// coda-enhanced's `matchedInContent: true`. Name matches come first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPagesOutput {
    pub items: Vec<Value>,
    pub search_query: String,
    /// Whether page bodies were searched (includeContent).
    pub searched_content: bool,
    /// Matching pages, including any left out by the result budget.
    pub total_found: usize,
    /// Pages looked at (all pages of the doc).
    pub pages_searched: usize,
    /// Pages whose body could not be read (e.g. embeds, sync pages).
    pub content_errors: usize,
    /// Some matches were left out (limit or the result budget): narrow the query.
    pub truncated: bool,
    /// Set when matches were left out: how many, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Bytes `c` takes in a JSON string: page text goes out as JSON (twice),
/// where a quote, a backslash or a line break takes two bytes and another
/// control character six (`\u0001`).
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if c < ' ' => 6,
        c => c.len_utf8(),
    }
}

/// Room for each copy of a page's text (JSON and text content) in a
/// result of `budget` bytes, the other fields counted in.
fn page_text_room(budget: usize) -> usize {
    budget.saturating_sub(1024) / 2
}

/// The longest head of `s` of at most `room` bytes as JSON (whole
/// characters, [`json_char_len`]), and whether anything was cut.
fn head_within(mut s: String, room: usize) -> (String, bool) {
    let mut used = 0;
    let Some((cut, _)) = s.char_indices().find(|(_, c)| {
        used += json_char_len(*c);
        used > room
    }) else {
        return (s, false);
    };
    s.truncate(cut);
    (s, true)
}

/// Render plain-text elements as light markdown (headings, lists, quotes).
pub fn render_plain(items: &[Value]) -> String {
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let Some(ic) = it.get("itemContent") else {
            continue;
        };
        let text = ic.get("content").and_then(Value::as_str).unwrap_or("");
        let level = ic.get("lineLevel").and_then(Value::as_u64).unwrap_or(0) as usize;
        let indent = "  ".repeat(level);
        let line = match ic
            .get("style")
            .and_then(Value::as_str)
            .unwrap_or("paragraph")
        {
            "h1" => format!("# {text}"),
            "h2" => format!("## {text}"),
            "h3" => format!("### {text}"),
            "bulletedList" | "collapsibleList" => format!("{indent}- {text}"),
            "numberedList" => format!("{indent}1. {text}"),
            "checkboxList" => format!("{indent}- [ ] {text}"),
            "blockQuote" | "pullQuote" => format!("> {text}"),
            "code" => format!("    {text}"),
            _ => text.to_owned(),
        };
        out.push(line);
    }
    out.join("\n")
}

impl Coda {
    /// The id of the page a call names: `raw` itself when it is a page id,
    /// else the one page called `raw`. Coda picks an arbitrary page when
    /// several share a name, so a name that matches several (or none) is
    /// refused, with the candidates. A read (`write` false) takes an
    /// id-shaped value (`canvas-…`) as it is, saving a request; a write
    /// always checks.
    pub async fn page_id(
        &self,
        d: &str,
        raw: &str,
        arg: &str,
        write: bool,
        deadline: Instant,
    ) -> ToolResult<String> {
        // Every page is checked, not the budgeted list a model reads.
        self.named_id(d, "page", raw, arg, write, &["canvas-"], deadline)
            .await
    }
    /// Every plain-text element of page `p`, or [`ToolError::TooLarge`]
    /// when it has more than `cap`.
    async fn plain_items(
        &self,
        d: &str,
        p: &str,
        cap: usize,
        deadline: Instant,
    ) -> ToolResult<Kept<Vec<Value>>> {
        let req = ApiRequest::get(&["docs", d, "pages", p, "content"])
            .query("contentFormat", "plainText")
            .query("limit", cap.clamp(1, 500));
        let (items, capped) = self.list_all(req, cap, deadline).await?;
        // Every caller takes the items for the whole body (a read, a
        // search, a verify, a preview): a cut one would pass for it.
        if capped {
            return Err(ToolError::TooLarge(format!(
                "page {p} has more than {cap} content elements, more than a plain-text read takes: read it with format markdown or html (an export), or page through it with coda_list_page_content"
            )));
        }
        Ok(items)
    }

    /// Export a page as markdown or html and download it. The text holds
    /// its room in `--max-read-bytes` until it is dropped: drop it before
    /// sending another request ([`crate::budget`]).
    pub async fn export_page(
        &self,
        d: &str,
        p: &str,
        format: ContentFormat,
        deadline: Instant,
    ) -> ToolResult<Held<String>> {
        // A second export of the same page is harmless: replayable.
        let start = ApiRequest::new(Method::POST, &["docs", d, "pages", p, "export"])
            .replayable()
            .as_read()
            .body(json!({"outputFormat": format.as_str()}));
        // Starting an export changes nothing a model reads back: its
        // failure is a read's, not a write whose outcome is unknown.
        let begun = match self.client.send(&start, deadline).await {
            Ok(r) => r.body,
            Err(CodaError::OutcomeUnknown { source, .. }) => return Err((*source).into()),
            Err(e) => return Err(e.into()),
        };
        let id = begun
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError::ExportFailed("Coda returned no export id".into()))?
            .to_owned();
        // Coda's text, named in errors: cut and escaped like its names.
        let shown = crate::client::model_text(&id, 100);
        let started = Instant::now();
        let mut interval = self.cfg.poll_interval;
        let mut fresh_links = 0;
        loop {
            if Instant::now() + interval >= deadline {
                return Err(ToolError::ExportFailed(format!(
                    "export {shown} did not finish within the call deadline ({:?})",
                    self.cfg.call_deadline
                )));
            }
            tokio::time::sleep(interval).await;
            interval = interval.mul_f64(1.5).min(Duration::from_secs(8));
            crate::call::progress(
                started.elapsed().as_secs_f64().round(),
                None,
                "exporting the page, seconds",
            )
            .await;
            let status_req = ApiRequest::get(&["docs", d, "pages", p, "export", &id]);
            let st = match self.client.send(&status_req, deadline).await {
                Ok(r) => r.body,
                Err(e)
                    if e.status() == Some(404) && started.elapsed() < self.cfg.not_found_grace =>
                {
                    tracing::debug!(export = %shown, "export status not replicated yet");
                    continue;
                }
                Err(CodaError::DeadlineExceeded(..) | CodaError::LocalRateLimit { .. }) => {
                    return Err(ToolError::ExportFailed(format!(
                        "export {shown} did not finish within the call deadline ({:?})",
                        self.cfg.call_deadline
                    )));
                }
                Err(e) if e.status() == Some(410) => {
                    return Err(ToolError::ExportFailed(format!(
                        "export {shown} expired (410); try again"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let status = st.get("status").and_then(Value::as_str).unwrap_or("");
            if let Some(err) = st.get("error").and_then(Value::as_str) {
                return Err(ToolError::ExportFailed(crate::client::model_text(
                    err,
                    crate::client::ERROR_MESSAGE_CAP,
                )));
            }
            if status == "failed" {
                return Err(ToolError::ExportFailed(format!(
                    "Coda reported export {shown} as failed"
                )));
            }
            let Some(link) = st.get("downloadLink").and_then(Value::as_str) else {
                continue;
            };
            match self.client.download(link, deadline).await {
                Ok(body) => return Ok(body),
                Err(CodaError::Download(why)) if fresh_links < 2 => {
                    // Links expire after minutes; the status endpoint hands out a new one.
                    tracing::info!(export = %shown, %why, "download link failed, asking for a fresh one");
                    fresh_links += 1;
                    interval = self.cfg.poll_interval;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn read_page(
        &self,
        d: &str,
        p: &str,
        format: ReadFormat,
        deadline: Instant,
    ) -> ToolResult<Held<String>> {
        match format {
            // Rendered from parsed elements, which go: the text keeps
            // their room, as much as it takes.
            ReadFormat::PlainText => {
                let items = self.plain_items(d, p, COMPOSITE_CAP, deadline).await?;
                let text = render_plain(&items);
                let bytes = text.capacity();
                Ok(items.remade(text, bytes))
            }
            ReadFormat::Markdown => {
                self.export_page(d, p, ContentFormat::Markdown, deadline)
                    .await
            }
            ReadFormat::Html => self.export_page(d, p, ContentFormat::Html, deadline).await,
        }
    }

    async fn content_update(
        &self,
        p: ContentWriteParams,
        mode: &str,
    ) -> ToolResult<MutationOutput> {
        let d = doc_id(&p.doc_id)?;
        if p.content.is_empty() && mode != "replace" {
            return Err(ToolError::arg("content", "must not be empty"));
        }
        let mut update = json!({
            "insertionMode": mode,
            "canvasContent": {"format": p.format.unwrap_or(ContentFormat::Markdown).as_str(), "content": p.content},
        });
        if let Some(el) = &p.element_id {
            update["elementId"] = json!(el);
        }
        let mut req = ApiRequest::new(Method::PUT, &["docs", &d, "pages", &p.page_id_or_name])
            .class(RequestClass::DocContentWrite)
            .body(json!({"contentUpdate": update}));
        // Replacing the whole body leaves the same body however often it
        // runs; appending and prepending twice duplicate the content. So
        // does a replace of one element: once applied, the element is gone
        // (a replay is refused, a false failure) or, if Coda gives its id
        // to the first new element, a replay replaces that one and leaves
        // the rest of the first copy on the page.
        req.replayable = mode == "replace" && p.element_id.is_none();
        // What was on the page before, for `verify` (see content_mismatches):
        // appended text may already be there, and a replace that was lost
        // leaves lines it should have removed.
        // And the text of the element a replace of one element removes:
        // the rest of the page must keep its count of each line.
        let (before, removed) = if p.verify {
            match self
                .plain_items(&d, &p.page_id_or_name, COMPOSITE_CAP, self.deadline())
                .await
            {
                Ok(items) => {
                    let element: Vec<Value> = items
                        .iter()
                        .filter(|it| {
                            p.element_id.is_some()
                                && it.get("id").and_then(Value::as_str) == p.element_id.as_deref()
                        })
                        .cloned()
                        .collect();
                    let removed = render_plain(&element);
                    let text = render_plain(&items);
                    // Kept across the write and the re-read: counted in
                    // --max-read-bytes, as much as the texts take.
                    let bytes = text.capacity() + removed.capacity();
                    (Some(Ok(items.remade_kept(text, bytes))), removed)
                }
                Err(e) => (Some(Err(e)), String::new()),
            }
        } else {
            (None, String::new())
        };
        let mut out = self
            .mutate(req, p.wait || p.verify, self.deadline())
            .await?;
        if p.verify {
            let mut v = super::checks::Verification::default();
            if let Some(m) = out.mutation.as_ref().filter(|m| !m.completed) {
                v.stop(super::checks::not_applied(m));
            } else {
                let html = matches!(p.format, Some(ContentFormat::Html));
                match self
                    .plain_items(&d, &p.page_id_or_name, COMPOSITE_CAP, self.deadline())
                    .await
                {
                    Ok(items) => {
                        v.rows_checked = 1;
                        let before = match before {
                            Some(Err(e)) => {
                                v.stop(format!("could not read the page before the write, so lines it already had could not be told from new ones: {e}"));
                                None
                            }
                            Some(Ok(b)) => Some(b),
                            None => None,
                        };
                        let found = content_mismatches(
                            &content_lines(&p.content, html),
                            before.as_ref().map(|b| b.as_str()),
                            &removed,
                            &render_plain(&items),
                            mode == "replace" && p.element_id.is_none(),
                        );
                        if found.left_out > 0 {
                            v.stop(format!(
                                "{} more lines the replace should have removed are still on the page",
                                found.left_out
                            ));
                        }
                        for (intended, stored) in found.lines {
                            v.mismatches.push(super::checks::Mismatch {
                                row_id: p.page_id_or_name.clone(),
                                column: "content".into(),
                                intended: Value::String(intended),
                                stored: Some(Value::String(stored)),
                            });
                        }
                    }
                    Err(e) => v.stop(format!("could not re-read the page: {e}")),
                }
            }
            out.verification = Some(v.finish());
        }
        Ok(out)
    }
}

async fn search_one(
    c: &Coda,
    d: &str,
    needle: &str,
    i: usize,
    id: String,
    dl: Instant,
) -> (usize, Result<Option<String>, ()>) {
    let r = match c.plain_items(d, &id, COMPOSITE_CAP, dl).await {
        Ok(items) => Ok(items.iter().find_map(|it| {
            let t = it.pointer("/itemContent/content").and_then(Value::as_str)?;
            t.to_lowercase()
                .contains(needle)
                .then(|| t.chars().take(200).collect())
        })),
        Err(e) => {
            tracing::debug!(page = %id, error = %e, "could not read page content");
            Err(())
        }
    };
    (i, r)
}

#[tool_router(router = pages_router, vis = "pub(crate)")]
impl Coda {
    /// List a doc's pages (id, name, parent, children, contentType). Paged: pass nextPageToken back as pageToken, or fetchAll.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListPagesParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_pages(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: ListPagesParams| async move {
            let d = doc_id(&p.doc_id)?;
            c.list_reply(ApiRequest::get(&["docs", &d, "pages"]), &p.page)
                .await
        })
        .await
    }

    /// Get a page's metadata: name, subtitle, icon, contentType, parent, children, authors, timestamps.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PageRefParams>(),
        output_schema = output::<Object>()
    )]
    async fn coda_get_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: PageRefParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            c.object(ApiRequest::get(&["docs", &d, "pages", &p.page_id_or_name]))
                .await
        })
        .await
    }

    /// Create a page (optionally a subpage) with markdown or html content, or an embed page (embedUrl). Returns the new page id and requestId; wait=true waits until it exists.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<CreatePageParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_create_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: CreatePageParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("name", &p.name)?;
            let content = match &p.embed_url {
                Some(url) => json!({"type": "embed", "url": url}),
                None => canvas_content(p.content.as_deref(), p.format),
            };
            let mut body = json!({"name": p.name, "pageContent": content});
            for (k, v) in [
                ("parentPageId", &p.parent_page_id),
                ("subtitle", &p.subtitle),
                ("iconName", &p.icon_name),
                ("imageUrl", &p.image_url),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let req = ApiRequest::new(Method::POST, &["docs", &d, "pages"])
                .class(RequestClass::DocContentWrite)
                .body(body);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Change a page's name, subtitle, icon, cover image or hidden flag (not its content).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<UpdatePageParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_update_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: UpdatePageParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            let mut body = json!({});
            for (k, v) in [
                ("name", &p.name),
                ("subtitle", &p.subtitle),
                ("iconName", &p.icon_name),
                ("imageUrl", &p.image_url),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(h) = p.is_hidden {
                body["isHidden"] = json!(h);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                return Err(ToolError::arg(
                    "name",
                    "give at least one of name, subtitle, iconName, imageUrl, isHidden",
                ));
            }
            let req = ApiRequest::new(Method::PUT, &["docs", &d, "pages", &p.page_id_or_name])
                .replayable()
                .body(body);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Rename a page (and optionally set its subtitle).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<RenamePageParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_rename_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: RenamePageParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            required("newName", &p.new_name)?;
            let mut body = json!({"name": p.new_name});
            if let Some(s) = &p.subtitle {
                body["subtitle"] = json!(s);
            }
            let req = ApiRequest::new(Method::PUT, &["docs", &d, "pages", &p.page_id_or_name])
                .replayable()
                .body(body);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Delete a page and its content.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<WritePageRefParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_delete_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: WritePageRefParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            let req = ApiRequest::new(Method::DELETE, &["docs", &d, "pages", &p.page_id_or_name]);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Read a page body. format: markdown (default, via export), html (keeps attachments) or plainText (fast, no export). Long pages: use maxChars and offset.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<GetPageContentParams>(),
        output_schema = output::<PageContentOutput>()
    )]
    async fn coda_get_page_content(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: GetPageContentParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            if p.max_chars == Some(0) {
                return Err(ToolError::arg("maxChars", "must be at least 1"));
            }
            let format = p.format.unwrap_or(ReadFormat::Markdown);
            let full = c
                .read_page(&d, &p.page_id_or_name, format, c.deadline())
                .await?;
            let total = full.chars().count();
            let take = p.max_chars.unwrap_or(crate::config::DEFAULT_MAX_CHARS);
            // The content goes out twice (JSON and text): each copy gets
            // half the result budget, whatever maxChars asks for.
            let room = page_text_room(c.cfg.max_result_bytes);
            let mut bytes = 0;
            let content: String = full
                .chars()
                .skip(p.offset)
                .take(take)
                .take_while(|ch| {
                    bytes += json_char_len(*ch);
                    bytes <= room
                })
                .collect();
            let truncated = p.offset.saturating_add(content.chars().count()) < total;
            let text = content.clone();
            Reply::with_text(
                PageContentOutput {
                    doc_id: d,
                    page_id_or_name: p.page_id_or_name,
                    format,
                    content,
                    total_chars: total,
                    offset: p.offset,
                    truncated,
                },
                text,
            )
        })
        .await
    }

    /// First numLines lines of a page. Default format plainText reads elements directly (no export; headings and lists shown as markdown); markdown does a full export.
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<PeekPageParams>(),
        output_schema = output::<PageContentOutput>()
    )]
    async fn coda_peek_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: PeekPageParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            if p.num_lines == 0 {
                return Err(ToolError::arg("numLines", "must be at least 1"));
            }
            let format = p.format.unwrap_or(ReadFormat::PlainText);
            let dl = c.deadline();
            let (content, truncated) = match format {
                ReadFormat::PlainText => {
                    let req =
                        ApiRequest::get(&["docs", &d, "pages", &p.page_id_or_name, "content"])
                            .query("contentFormat", "plainText")
                            .query("limit", p.num_lines.min(500));
                    // The budget below cuts long before COMPOSITE_CAP lines.
                    let (items, more) = c.list_all(req, p.num_lines.min(COMPOSITE_CAP), dl).await?;
                    // Coda may return more than asked (whole pages).
                    let more = more || items.len() > p.num_lines;
                    let items = &items[..items.len().min(p.num_lines)];
                    // One element can hold several lines.
                    let all = render_plain(items);
                    let more = more || all.lines().count() > p.num_lines;
                    let text = all.lines().take(p.num_lines).collect::<Vec<_>>().join("\n");
                    (text, more)
                }
                other => {
                    let body = c.read_page(&d, &p.page_id_or_name, other, dl).await?;
                    let lines: Vec<&str> = body.lines().collect();
                    (
                        lines
                            .iter()
                            .take(p.num_lines)
                            .copied()
                            .collect::<Vec<_>>()
                            .join("\n"),
                        lines.len() > p.num_lines,
                    )
                }
            };
            // The content goes out twice (JSON and text): each copy gets
            // half the result budget, whatever numLines asks for.
            let (content, cut) = head_within(content, page_text_room(c.cfg.max_result_bytes));
            let truncated = truncated || cut;
            let text = content.clone();
            Reply::with_text(
                PageContentOutput {
                    doc_id: d,
                    page_id_or_name: p.page_id_or_name,
                    format,
                    total_chars: content.chars().count(),
                    content,
                    offset: 0,
                    truncated,
                },
                text,
            )
        })
        .await
    }

    /// List a page's content elements (id cl-…, style, plain text, lineLevel). Element ids anchor elementId edits and coda_delete_page_content. Paged: limit up to 500, Coda's maximum (a larger one asks for 500).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<ListPageContentParams>(),
        output_schema = output::<ListOutput>()
    )]
    async fn coda_list_page_content(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: ListPageContentParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            let req = ApiRequest::get(&["docs", &d, "pages", &p.page_id_or_name, "content"])
                .query("contentFormat", "plainText");
            c.list_reply(req, &p.page).await
        })
        .await
    }

    /// Replace a page's whole body (or one element, with elementId) with markdown or html content. Overwrites: read it first if unsure. A whole-body replace is safe to repeat; an elementId replace is not.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<ContentWriteParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_replace_page_content(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: ContentWriteParams| async move {
            if p.dry_run {
                let d = doc_id(&p.doc_id)?;
                required("pageIdOrName", &p.page_id_or_name)?;
                let current = render_plain(&c.plain_items(&d, &p.page_id_or_name, COMPOSITE_CAP, c.deadline()).await?);
                let current_chars = current.chars().count();
                let preview = ReplacePreview {
                    dry_run: true,
                    current: current.chars().take(crate::config::DEFAULT_MAX_CHARS).collect(),
                    current_chars,
                    replacement: p.content,
                    note: if p.element_id.is_some() {
                        "dry run: with elementId only that element would be replaced; current shows the whole body".into()
                    } else {
                        "dry run: nothing was written; the whole body would be replaced".into()
                    },
                };
                return Reply::json(MutationOutput {
                    preview: Some(preview),
                    ..MutationOutput::default()
                });
            }
            Reply::json(c.content_update(p, "replace").await?)
        })
        .await
    }

    /// Append markdown or html to the end of a page (or after the element elementId).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<ContentWriteParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_append_page_content(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: ContentWriteParams| async move {
            if p.dry_run {
                return Err(ToolError::arg(
                    "dryRun",
                    "is only for coda_replace_page_content",
                ));
            }
            Reply::json(c.content_update(p, "append").await?)
        })
        .await
    }

    /// Insert markdown or html at the start of a page (or before the element elementId).
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<ContentWriteParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_prepend_page_content(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: ContentWriteParams| async move {
            if p.dry_run {
                return Err(ToolError::arg(
                    "dryRun",
                    "is only for coda_replace_page_content",
                ));
            }
            Reply::json(c.content_update(p, "prepend").await?)
        })
        .await
    }

    /// Delete content elements of a page by elementIds (cl-…), or the whole body when elementIds is omitted.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<DeletePageContentParams>(),
        output_schema = output::<MutationOutput>()
    )]
    async fn coda_delete_page_content(
        &self,
        Parameters(a): Parameters<JsonObject>,
    ) -> CallToolResult {
        let c = self;
        run(a, |p: DeletePageContentParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            if p.element_ids.as_ref().is_some_and(|ids| ids.is_empty()) {
                return Err(ToolError::arg(
                    "elementIds",
                    "omit it to delete everything; an empty list is ambiguous",
                ));
            }
            let body = match &p.element_ids {
                Some(ids) => json!({"elementIds": ids}),
                None => json!({}),
            };
            let req = ApiRequest::new(
                Method::DELETE,
                &["docs", &d, "pages", &p.page_id_or_name, "content"],
            )
            .class(RequestClass::DocContentWrite)
            .body(body);
            c.write_reply(req, p.wait).await
        })
        .await
    }

    /// Copy a page under a new name, next to the original (same parent, subtitle and icon). The body is copied via HTML export; complex elements may not survive.
    #[tool(
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true),
        input_schema = input::<DuplicatePageParams>(),
        output_schema = output::<DuplicateOutput>()
    )]
    async fn coda_duplicate_page(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: DuplicatePageParams| async move {
            let d = doc_id(&p.doc_id)?;
            required("pageIdOrName", &p.page_id_or_name)?;
            required("newName", &p.new_name)?;
            let dl = c.deadline();
            let (src, room) = c.call_held(ApiRequest::get(&["docs", &d, "pages", &p.page_id_or_name]), dl).await?;
            // Only what the copy takes of the page is kept across the
            // export, not Coda's whole answer; it is counted in
            // --max-read-bytes while kept when it is more than a little.
            let text = |at: &str| src.pointer(at).and_then(Value::as_str).map(str::to_owned);
            let source = CopiedFrom {
                id: text("/id").unwrap_or_else(|| p.page_id_or_name.clone()),
                parent: text("/parent/id"),
                subtitle: text("/subtitle"),
                icon: text("/icon/name"),
            };
            drop(src);
            let source = source.kept(room);
            let source_id = source.id.clone();
            let html = c.export_page(&d, &source_id, ContentFormat::Html, dl).await?;
            let mut body = json!({"name": p.new_name, "pageContent": canvas_content(Some(&html), Some(ContentFormat::Html))});
            // The export's room goes back before the write is sent: a call
            // holding it would wait for room to read the write's answer.
            drop(html);
            let CopiedFrom { parent, subtitle, icon, .. } = source.into_parts().0;
            if let Some(par) = &parent {
                body["parentPageId"] = json!(par);
            }
            if let Some(s) = subtitle {
                body["subtitle"] = json!(s);
            }
            if let Some(i) = icon {
                body["iconName"] = json!(i);
            }
            let req = ApiRequest::new(Method::POST, &["docs", &d, "pages"])
                .class(RequestClass::DocContentWrite)
                .body(body);
            let out = c.mutate(req, p.wait, dl).await?;
            Reply::json(DuplicateOutput {
                id: out.id.clone(),
                source_page_id: json!(source_id),
                new_page_id: out.result.get("id").cloned().unwrap_or(Value::Null),
                parent_page_id: parent,
                request_id: out.request_id,
                mutation: out.mutation,
                // A queued copy says so first, as every queued write does:
                // a model that does not see the page yet must not copy again.
                note: [out.note.as_deref(), Some("copied through an HTML export; complex elements may differ from the original")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        })
        .await
    }

    /// Find pages whose name contains query (case-insensitive) across all pages of the doc; includeContent also searches page bodies (plain text, a few pages at a time).
    #[tool(
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        input_schema = input::<SearchPagesParams>(),
        output_schema = output::<SearchPagesOutput>()
    )]
    async fn coda_search_pages(&self, Parameters(a): Parameters<JsonObject>) -> CallToolResult {
        let c = self;
        run(a, |p: SearchPagesParams| async move {
            let d = doc_id(&p.doc_id)?;
            let needle = p.query.to_lowercase();
            required("query", &needle)?;
            if p.limit == Some(0) {
                return Err(ToolError::arg("limit", "must be at least 1"));
            }
            let limit = p
                .limit
                .unwrap_or(DEFAULT_SEARCH_RESULTS)
                .min(MAX_SEARCH_RESULTS);
            let dl = c.deadline();
            let (pages, _) = c
                .list_all(
                    ApiRequest::get(&["docs", &d, "pages"]).query("limit", 100),
                    COMPOSITE_CAP,
                    dl,
                )
                .await?;
            let mut snippets: Vec<Option<Result<Option<String>, ()>>> = vec![None; pages.len()];
            if p.include_content {
                let d = d.as_str();
                let needle = needle.as_str();
                let jobs: Vec<(usize, String)> = pages
                    .iter()
                    .enumerate()
                    .filter_map(|(i, pg)| {
                        let id = pg.get("id").and_then(Value::as_str)?.to_owned();
                        let canvas = pg
                            .get("contentType")
                            .and_then(Value::as_str)
                            .unwrap_or("canvas")
                            == "canvas";
                        canvas.then_some((i, id))
                    })
                    .collect();
                let results: Vec<(usize, Result<Option<String>, ()>)> =
                    futures_util::stream::iter(jobs)
                        .map(|(i, id)| search_one(c, d, needle, i, id, dl))
                        .buffer_unordered(SEARCH_CONCURRENCY)
                        .collect()
                        .await;
                for (i, r) in results {
                    snippets[i] = Some(r);
                }
            }
            let mut by_name = Vec::new();
            let mut by_content = Vec::new();
            let mut content_errors = 0;
            for (pg, snip) in pages.iter().zip(snippets) {
                let name = pg.get("name").and_then(Value::as_str).unwrap_or("");
                let in_name = name.to_lowercase().contains(&needle);
                let snippet = match snip {
                    Some(Ok(s)) => s,
                    Some(Err(())) => {
                        content_errors += 1;
                        None
                    }
                    None => None,
                };
                if !in_name && snippet.is_none() {
                    continue;
                }
                let mut item = pg.clone();
                let mut matched_in = Vec::new();
                if in_name {
                    matched_in.push("name");
                }
                if let Some(s) = snippet {
                    matched_in.push("content");
                    item["snippet"] = json!(s);
                }
                item["matchedIn"] = json!(matched_in);
                if in_name {
                    by_name.push(item);
                } else {
                    item["matchedInContent"] = json!(true);
                    by_content.push(item);
                }
            }
            let mut items = by_name;
            items.append(&mut by_content);
            let total_found = items.len();
            items.truncate(limit);
            // Room for the other fields and the query beside the items.
            let budget = c.cfg.max_result_bytes;
            let room = budget.saturating_sub(400 + p.query.len());
            items.truncate(super::items_within(&items, room));
            let note = (items.len() < total_found).then(|| {
                let why = if items.len() < limit.min(total_found) {
                    format!("to stay within the result budget ({budget} bytes)")
                } else {
                    format!("past limit ({limit})")
                };
                format!(
                    "{} of {total_found} matching pages returned, {} left out {why}: use a longer query{}",
                    items.len(),
                    total_found - items.len(),
                    if limit < MAX_SEARCH_RESULTS && why.starts_with("past") {
                        " or a higher limit"
                    } else {
                        ""
                    }
                )
            });
            Reply::json(SearchPagesOutput {
                note,
                truncated: items.len() < total_found,
                items,
                search_query: p.query,
                searched_content: p.include_content,
                total_found,
                pages_searched: pages.len(),
                content_errors,
            })
        })
        .await
    }
}

/// What `coda_duplicate_page` takes of the page it copies, kept while the
/// page is exported.
struct CopiedFrom {
    id: String,
    parent: Option<String>,
    subtitle: Option<String>,
    icon: Option<String>,
}

/// Bytes of kept text below which [`CopiedFrom`] holds no room of
/// `--max-read-bytes`: holding any makes the call's later reads refuse
/// rather than wait for room (`crate::budget`), and a page's ids, icon and
/// subtitle are a few dozen bytes; only a Coda answering megabytes in
/// them (a 30 MB subtitle) makes it worth counting.
const COPIED_UNCOUNTED_BYTES: usize = 64 * 1024;

impl CopiedFrom {
    /// Kept with as much of `room` (the page answer's) as its text takes,
    /// when that is more than [`COPIED_UNCOUNTED_BYTES`].
    fn kept(self, room: crate::budget::Reservation) -> Kept<CopiedFrom> {
        let bytes = [
            Some(&self.id),
            self.parent.as_ref(),
            self.subtitle.as_ref(),
            self.icon.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
        if bytes <= COPIED_UNCOUNTED_BYTES {
            return Kept::new(self, Vec::new());
        }
        Kept::new((), vec![room]).remade_kept(self, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_elements_render_as_light_markdown() {
        let items = vec![
            json!({"id":"cl-1","type":"line","itemContent":{"style":"h1","format":"plainText","content":"Title"}}),
            json!({"id":"cl-2","type":"line","itemContent":{"style":"bulletedList","format":"plainText","content":"a","lineLevel":1}}),
            json!({"id":"cl-3","type":"line","itemContent":{"style":"paragraph","format":"plainText","content":"p"}}),
        ];
        assert_eq!(render_plain(&items), "# Title\n  - a\np");
    }

    #[test]
    fn a_content_write_is_judged_by_what_changed_not_only_by_what_is_there() {
        let lines = content_lines("Status: OK\n- Checked", false);
        let page = "# Log\nStatus: OK";
        let appended = "# Log\nStatus: OK\nStatus: OK\nChecked";
        let check = |before: Option<&str>, after: &str, replace: bool| {
            content_mismatches(&lines, before, "", after, replace)
        };
        // An append that happened; one that was lost, with and without the
        // page read before it.
        assert_eq!(check(Some(page), appended, false), ContentCheck::default());
        let lost = check(Some(page), page, false);
        assert_eq!(
            lost.lines,
            [
                (
                    "Status: OK".to_owned(),
                    "(on the page 1 times after the write, 1 before it: expected at least 2)"
                        .to_owned()
                ),
                (
                    "Checked".to_owned(),
                    "(on the page 0 times after the write, 0 before it: expected at least 1)"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(
            check(None, "Status: OK\nChecked", false),
            ContentCheck::default()
        );
        // A replace that happened, and one that was lost: the old heading
        // is still there; the line it kept is no mismatch.
        let old = "# Old heading\nStatus: OK\n- Checked";
        assert_eq!(
            check(Some(old), "Status: OK\n- Checked", true),
            ContentCheck::default()
        );
        let lost = check(Some(old), old, true);
        assert_eq!(
            lost.lines,
            [(
                "(not in the new content)".to_owned(),
                "(still on the page after the replace) Old heading".to_owned()
            )]
        );
        // A replace of one element: what it held is not counted on, what
        // the rest of the page holds proves nothing.
        let one = content_lines("Status: OK", false);
        let page = "Status: OK\nold";
        assert_eq!(
            content_mismatches(&one, Some(page), "old", page, false)
                .lines
                .len(),
            1
        );
        let replaced = "Status: OK\nStatus: OK";
        assert_eq!(
            content_mismatches(&one, Some(page), "old", replaced, false),
            ContentCheck::default()
        );
        // Replacing an element with its own text leaves the page as meant.
        assert_eq!(
            content_mismatches(&one, Some(page), "Status: OK", page, false),
            ContentCheck::default()
        );
        // Many such lines: the first ones are named, the rest counted.
        let long: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let lost = check(Some(&long), &long, true);
        assert_eq!((lost.lines.len(), lost.left_out), (MAX_LEFT_LINES + 2, 10));
    }
}
