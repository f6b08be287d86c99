//! A fake Coda REST API v1 on 127.0.0.1:0 (plain hyper), for tests.
//!
//! In-memory docs, pages (with content elements), tables, columns, rows,
//! formulas, controls, folders and permissions; pagination with opaque
//! tokens that carry the original query (Coda ignores other parameters when
//! `pageToken` is given, and so does this fake); asynchronous writes with
//! mutation status; page exports with a configurable life cycle (early 404s,
//! in-progress polls, failure, dead download links, gzip bodies); injected
//! faults (429 with or without `Retry-After`, 5xx).
//!
//! Objects are built from the OpenAPI spec's own minimal instances
//! (`Spec::synth`) plus overrides, and every response is recorded with its
//! request so tests assert on paths, queries, bodies and the Authorization
//! header, and call [`FakeCoda::assert_responses_match_spec`] to validate
//! every recorded body and query string against the spec.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

#[path = "openapi.rs"]
mod openapi;
pub use openapi::{spec, validate};

pub const TOKEN: &str = "test-token-5f0c";
const BASE: &str = "/apis/v1";

/// One request the fake received, with the answer it gave.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path relative to the API base, still percent-encoded (e.g. `/docs/d1/pages`).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
    pub response: Value,
    /// False for download links (not part of the API).
    pub api: bool,
}

impl Recorded {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    remaining: usize,
    retry_after: Option<String>,
    /// Apply the request first, then answer with `status` (a gateway
    /// that times out after Coda did the work).
    after_apply: bool,
    /// Matching requests to let through before failing.
    skip: usize,
    /// With `after_apply`: answer the applied request's own status with a
    /// broken body instead of an error.
    broken: Option<Broken>,
    /// Answer exactly this instead (nothing is applied).
    hostile: Option<Hostile>,
}

impl Fault {
    /// `remaining` answers of `status` to `method` requests whose path
    /// contains `path_contains`, before anything is applied.
    fn new(method: &str, path_contains: &str, status: u16, remaining: usize) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            status,
            remaining,
            retry_after: None,
            after_apply: false,
            skip: 0,
            broken: None,
            hostile: None,
        }
    }
}

/// An answer no well-behaved Coda gives, sent as is: any status, header
/// bytes that need not be UTF-8, any body, or a body that never ends.
#[derive(Debug, Clone, Default)]
pub struct Hostile {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Send `body` again every 100 ms, forever.
    pub endless: bool,
}

/// How an accepted request's answer is broken.
#[derive(Debug, Clone)]
pub enum Broken {
    /// The connection is closed halfway through the body.
    CutBody,
    /// The body is this text, not JSON (a proxy's page).
    NotJson(String),
    /// The answer as it is, but with its first member named `name` (at
    /// whatever depth) given twice: `value` first, then the real one.
    Repeated { name: String, value: Value },
}

#[derive(Debug, Clone)]
pub struct Line {
    pub id: String,
    pub style: String,
    pub text: String,
}

#[derive(Debug, Clone)]
struct PageRec {
    doc: String,
    id: String,
    name: String,
    subtitle: Option<String>,
    icon: Option<String>,
    parent: Option<String>,
    content_type: String,
    hidden: bool,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct ColumnRec {
    id: String,
    name: String,
    kind: String,
    display: bool,
    calculated: bool,
}

#[derive(Debug, Clone)]
struct RowRec {
    id: String,
    values: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct TableRec {
    doc: String,
    id: String,
    name: String,
    table_type: String,
    page: String,
    columns: Vec<ColumnRec>,
    rows: Vec<RowRec>,
}

#[derive(Debug, Clone)]
struct ExportRec {
    doc: String,
    page: String,
    format: String,
    polls: usize,
    dead_links_served: usize,
}

/// How exports behave; set per test.
#[derive(Debug, Clone, Default)]
pub struct ExportPlan {
    /// Status polls answered 404 before the export is known.
    pub not_found_polls: usize,
    /// Polls answered `inProgress` after that.
    pub in_progress_polls: usize,
    /// End with `status: failed` and an error message instead of a link.
    pub fail: bool,
    /// Hand out download links to a host that refuses connections.
    pub dead_host: bool,
    /// Download links that answer with an S3-style XML error first.
    pub dead_links: usize,
    /// The `<Code>` of those errors, instead of `AccessDenied`.
    pub dead_link_code: Option<String>,
    /// Serve the download gzip-compressed without Content-Encoding.
    pub gzip: bool,
    /// Hand out this download link instead of the fake's own.
    pub link: Option<String>,
    /// Answer the download link with a 302 to this URL.
    pub redirect_to: Option<String>,
}

/// How mutation status behaves.
#[derive(Debug, Clone, Default)]
pub struct MutationPlan {
    /// Polls answered 404 first (replication lag).
    pub not_found_polls: usize,
    /// Polls answered `completed: false` after that.
    pub pending_polls: usize,
}

#[derive(Default)]
struct State {
    docs: Vec<Value>,
    folders: Vec<Value>,
    pages: Vec<PageRec>,
    tables: Vec<TableRec>,
    formulas: Vec<(String, Value)>,
    controls: Vec<(String, Value)>,
    permissions: Vec<(String, Value)>,
    acl_settings: HashMap<String, Value>,
    published: HashMap<String, Value>,
    tokens: HashMap<String, (Vec<(String, String)>, usize)>,
    faults: Vec<Fault>,
    mutations: HashMap<String, usize>,
    exports: HashMap<String, ExportRec>,
    export_plan: ExportPlan,
    mutation_plan: MutationPlan,
    /// Largest page the fake returns, whatever `limit` says (Coda caps silently).
    max_page: usize,
    /// Options of every select column beyond Plan, Build and Ship.
    extra_select_options: usize,
    /// Column ids whose cells a row update drops (a row read back then
    /// lacks them), to play a write Coda stored differently.
    drop_on_write: Vec<String>,
    /// (column id, value): a row update stores this value in the column
    /// instead of the one sent, to play a write Coda changed.
    change_on_write: Vec<(String, Value)>,
    /// Answers sent slowly, without a Content-Length (see
    /// [`FakeCoda::trickle_next`]).
    trickles: Vec<TrickleRule>,
    /// Page content updates are answered 202 and not applied, to play a
    /// write Coda lost.
    drop_content_updates: bool,
    /// (method, path substring, delay): answer matching requests late.
    delays: Vec<(String, String, Duration)>,
    /// (method, path substring, delay, times left): answer only the next
    /// matching requests late.
    delays_next: Vec<(String, String, Duration, usize)>,
    /// (method, path) of every request that arrived, answered or not yet.
    arrivals: Vec<(String, String)>,
    /// Requests that arrived, answered or not yet (a delayed one is
    /// recorded in `requests` only once answered).
    arrived: usize,
    /// List paths whose every page says `nextPageToken: "tok-loop"`: the
    /// same token forever (a Coda bug, played).
    looping: Vec<String>,
    counter: usize,
    requests: Vec<Recorded>,
    base_url: String,
}

impl State {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }
}

/// The next `remaining` answers to `method` requests whose path contains
/// `path_contains` are sent in pieces (see [`FakeCoda::trickle_next`]).
struct TrickleRule {
    method: String,
    path_contains: String,
    remaining: usize,
    piece: usize,
    pause: Duration,
    /// Every matching answer starts once all `remaining` requests arrived.
    together: Arc<tokio::sync::Barrier>,
}

/// The running fake. Dropping it stops the server.
pub struct FakeCoda {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCoda {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn obj(name: &str, overrides: Value) -> Value {
    let mut base = spec().synth(name);
    merge(&mut base, overrides);
    base
}

fn merge(base: &mut Value, over: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), over) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

fn error_body(status: u16, message: &str) -> Value {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    json!({"statusCode": status, "statusMessage": reason, "message": message})
}

struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
    raw: Option<Vec<u8>>,
}

fn ok(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body,
        headers: Vec::new(),
        raw: None,
    }
}

fn err(status: u16, message: &str) -> Reply {
    ok(status, error_body(status, message))
}

impl FakeCoda {
    /// Start with the standard fixture (see [`FakeCoda::seed`]).
    pub async fn start() -> FakeCoda {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            max_page: 25,
            base_url: format!("http://{addr}{BASE}"),
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move {
                            let Ok(resp) = handle(st, req).await;
                            Ok::<_, Infallible>(cut_if_marked(resp))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let fake = FakeCoda { addr, state, task };
        fake.seed();
        fake
    }

    /// API base URL to give coda-mcp.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Doc `doc1` ("Project Tracker") with pages, a table `grid-tasks`
    /// ("Tasks": Name, Status, Points, Done, Notify button), a view, two
    /// formulas and a control; doc `doc2`; folder `fl-1`.
    fn seed(&self) {
        self.with(|s| {
            let base = s.base_url.clone();
            for (id, name, folder) in [("doc1", "Project Tracker", "fl-1"), ("doc2", "Team Wiki", "fl-2")] {
                s.docs.push(obj(
                    "Doc",
                    json!({
                        "id": id, "name": name, "href": format!("{base}/docs/{id}"),
                        "browserLink": format!("https://coda.io/d/_d{id}"),
                        "folderId": folder,
                        "folder": obj("FolderReference", json!({"id": folder})),
                        "docSize": {"totalRowCount": 3, "tableAndViewCount": 2, "pageCount": 3, "overApiSizeLimit": false},
                    }),
                ));
            }
            s.folders.push(obj("Folder", json!({"id": "fl-1", "name": "Projects"})));
            let lines = |v: &[(&str, &str)]| -> Vec<Line> {
                v.iter()
                    .enumerate()
                    .map(|(i, (style, text))| Line {
                        id: format!("cl-{i}"),
                        style: style.to_string(),
                        text: text.to_string(),
                    })
                    .collect()
            };
            s.pages.push(PageRec {
                doc: "doc1".into(),
                id: "canvas-overview".into(),
                name: "Overview".into(),
                subtitle: Some("Start here".into()),
                icon: Some("rocket".into()),
                parent: None,
                content_type: "canvas".into(),
                hidden: false,
                lines: lines(&[("h1", "Overview"), ("paragraph", "Launch is on Friday."), ("bulletedList", "ship it")]),
            });
            s.pages.push(PageRec {
                doc: "doc1".into(),
                id: "canvas-notes".into(),
                name: "Meeting Notes".into(),
                subtitle: None,
                icon: None,
                parent: Some("canvas-overview".into()),
                content_type: "canvas".into(),
                hidden: false,
                lines: lines(&[("h2", "Monday"), ("paragraph", "Budget approved by finance.")]),
            });
            s.pages.push(PageRec {
                doc: "doc1".into(),
                id: "canvas-embed".into(),
                name: "Dashboard".into(),
                subtitle: None,
                icon: None,
                parent: None,
                content_type: "embed".into(),
                hidden: false,
                lines: Vec::new(),
            });
            let cols = vec![
                ColumnRec { id: "c-name".into(), name: "Name".into(), kind: "text".into(), display: true, calculated: false },
                ColumnRec { id: "c-status".into(), name: "Status".into(), kind: "text".into(), display: false, calculated: false },
                ColumnRec { id: "c-points".into(), name: "Points".into(), kind: "number".into(), display: false, calculated: false },
                ColumnRec { id: "c-done".into(), name: "Done".into(), kind: "checkbox".into(), display: false, calculated: true },
                ColumnRec { id: "c-notify".into(), name: "Notify".into(), kind: "button".into(), display: false, calculated: false },
            ];
            let row = |id: &str, name: &str, status: &str, points: i64| RowRec {
                id: id.into(),
                values: [
                    ("c-name", json!(name)),
                    ("c-status", json!(status)),
                    ("c-points", json!(points)),
                    ("c-done", json!(status == "Done")),
                    ("c-notify", json!("")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            };
            s.tables.push(TableRec {
                doc: "doc1".into(),
                id: "grid-tasks".into(),
                name: "Tasks".into(),
                table_type: "table".into(),
                page: "canvas-overview".into(),
                columns: cols.clone(),
                rows: vec![row("i-1", "Design", "Done", 3), row("i-2", "Build", "Doing", 5), row("i-3", "Test", "Todo", 2)],
            });
            s.tables.push(TableRec {
                doc: "doc1".into(),
                id: "table-open".into(),
                name: "Open Tasks".into(),
                table_type: "view".into(),
                page: "canvas-overview".into(),
                columns: cols,
                rows: Vec::new(),
            });
            for (id, name, value) in [("f-total", "TotalPoints", json!(10)), ("f-owner", "Owner", json!("Ada"))] {
                s.formulas.push(("doc1".into(), obj("Formula", json!({"id": id, "name": name, "value": value, "href": format!("{base}/docs/doc1/formulas/{id}")}))));
            }
            s.controls.push((
                "doc1".into(),
                obj("Control", json!({"id": "ctrl-threshold", "name": "Threshold", "controlType": "slider", "value": 7, "href": format!("{base}/docs/doc1/controls/ctrl-threshold")})),
            ));
            s.permissions.push((
                "doc1".into(),
                json!({"id": "perm-1", "access": "write", "principal": {"type": "email", "email": "ada@example.com"}}),
            ));
            s.counter = 100;
        });
    }

    // ----- knobs -----

    /// Answer the next `times` requests whose method matches and whose path
    /// contains `path_contains` with `status` (and `Retry-After` if given).
    pub fn fail_next(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        times: usize,
        retry_after: Option<&str>,
    ) {
        self.with(|s| {
            s.faults.push(Fault {
                retry_after: retry_after.map(str::to_owned),
                ..Fault::new(method, path_contains, status, times)
            })
        });
    }

    /// Like [`FakeCoda::fail_next`], but let the first `skip` matching
    /// requests through (fail a later page or chunk, not the first).
    pub fn fail_after(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        skip: usize,
        times: usize,
    ) {
        self.with(|s| {
            s.faults.push(Fault {
                skip,
                ..Fault::new(method, path_contains, status, times)
            })
        });
    }

    /// Answer the next `times` requests whose method matches and whose path
    /// contains `path_contains` with `answer`, applying nothing.
    pub fn answer_next(&self, method: &str, path_contains: &str, times: usize, answer: Hostile) {
        self.with(|s| {
            let status = answer.status;
            s.faults.push(Fault {
                hostile: Some(answer),
                ..Fault::new(method, path_contains, status, times)
            })
        });
    }

    /// Like [`FakeCoda::answer_next`], once, after letting the first `skip`
    /// matching requests through (a later chunk, not the first).
    pub fn answer_after(&self, method: &str, path_contains: &str, skip: usize, answer: Hostile) {
        self.with(|s| {
            let status = answer.status;
            s.faults.push(Fault {
                skip,
                hostile: Some(answer),
                ..Fault::new(method, path_contains, status, 1)
            })
        });
    }

    /// Add `n` empty tables "Task list {i}" (ids `grid-extra-{i}`) to doc1.
    pub fn add_tables(&self, n: usize) {
        self.with(|s| {
            let base = s.tables[0].clone();
            for i in 0..n {
                s.tables.push(TableRec {
                    id: format!("grid-extra-{i}"),
                    name: format!("Task list {i}"),
                    rows: Vec::new(),
                    ..base.clone()
                });
            }
        });
    }

    /// Add an empty table `id` called `name` to doc1, with the columns of
    /// `grid-tasks` (names may repeat: Coda uses an arbitrary one then).
    pub fn add_table_named(&self, id: &str, name: &str) {
        self.with(|s| {
            let base = s.tables[0].clone();
            s.tables.push(TableRec {
                id: id.into(),
                name: name.into(),
                rows: Vec::new(),
                ..base
            });
        });
    }

    /// Add named formula `id` called `name` (names may repeat) to doc1.
    pub fn add_formula(&self, id: &str, name: &str, value: Value) {
        self.with(|s| {
            let href = format!("{}/docs/doc1/formulas/{id}", s.base_url);
            s.formulas.push((
                "doc1".into(),
                obj(
                    "Formula",
                    json!({"id": id, "name": name, "value": value, "href": href}),
                ),
            ));
        });
    }

    /// Add slider control `id` called `name` (names may repeat) to doc1.
    pub fn add_control(&self, id: &str, name: &str, value: Value) {
        self.with(|s| {
            let href = format!("{}/docs/doc1/controls/{id}", s.base_url);
            s.controls.push((
                "doc1".into(),
                obj("Control", json!({"id": id, "name": name, "controlType": "slider", "value": value, "href": href})),
            ));
        });
    }

    /// Add column `id` called `name` (of `kind`) to `table`; rows hold no
    /// value for it.
    pub fn add_column(&self, table: &str, id: &str, name: &str, kind: &str) {
        self.with(|s| {
            let t = s.tables.iter_mut().find(|t| t.id == table).unwrap();
            t.columns.push(ColumnRec {
                id: id.into(),
                name: name.into(),
                kind: kind.into(),
                display: false,
                calculated: false,
            });
        });
    }

    /// Every page of the list at `path` (e.g. `/docs/doc1/pages`) says
    /// `nextPageToken: "tok-loop"`, which gives the second page, which
    /// says `tok-loop` again.
    pub fn loop_page_token(&self, path: &str) {
        self.with(|s| s.looping.push(path.into()));
    }

    /// Drop the cells of column `col_id` from every row update: the row
    /// read back lacks the column.
    pub fn drop_written_cells(&self, col_id: &str) {
        self.with(|s| s.drop_on_write.push(col_id.into()));
    }

    /// Store `value` in column `col_id` on every row update (single-row
    /// `PUT`), and on every insert or upsert that writes the column,
    /// whatever was sent: plays a write Coda changed.
    pub fn change_written_cells(&self, col_id: &str, value: Value) {
        self.with(|s| s.change_on_write.push((col_id.into(), value)));
    }

    /// Answer every page content update 202 without applying it.
    pub fn drop_content_updates(&self) {
        self.with(|s| s.drop_content_updates = true);
    }

    /// Answer every request whose method matches and whose path contains
    /// `path_contains` only after `delay` (a slow Coda).
    pub fn delay(&self, method: &str, path_contains: &str, delay: Duration) {
        self.with(|s| s.delays.push((method.into(), path_contains.into(), delay)));
    }

    /// As [`FakeCoda::delay`], for the next `times` matching requests only.
    pub fn delay_next(&self, method: &str, path_contains: &str, delay: Duration, times: usize) {
        self.with(|s| {
            s.delays_next
                .push((method.into(), path_contains.into(), delay, times))
        });
    }

    /// Apply the next `times` matching requests, then answer `status`
    /// anyway: the write happened, the client cannot know.
    pub fn fail_next_after_applying(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        times: usize,
    ) {
        self.with(|s| {
            s.faults.push(Fault {
                after_apply: true,
                ..Fault::new(method, path_contains, status, times)
            })
        });
    }

    /// Like [`FakeCoda::fail_next_after_applying`] for one request, after
    /// letting the first `skip` matching requests through.
    pub fn fail_after_applying(&self, method: &str, path_contains: &str, status: u16, skip: usize) {
        self.with(|s| {
            s.faults.push(Fault {
                after_apply: true,
                skip,
                ..Fault::new(method, path_contains, status, 1)
            })
        });
    }

    /// Apply the next matching request and answer with its own (2xx)
    /// status, but with a broken body: the write was accepted, the client
    /// cannot read the answer.
    pub fn break_next_answer_after_applying(
        &self,
        method: &str,
        path_contains: &str,
        broken: Broken,
    ) {
        self.break_answers_after_applying(method, path_contains, broken, 1);
    }

    /// [`Self::break_next_answer_after_applying`] for the next `times`
    /// matching requests.
    pub fn break_answers_after_applying(
        &self,
        method: &str,
        path_contains: &str,
        broken: Broken,
        times: usize,
    ) {
        self.with(|s| {
            s.faults.push(Fault {
                after_apply: true,
                broken: Some(broken),
                ..Fault::new(method, path_contains, 0, times)
            })
        });
    }

    /// Send the answers to the next `times` `method` requests whose path
    /// contains `path_contains` (the full path: `/apis/v1/…`, or `/blobs/`
    /// for export downloads; answered as usual, or as
    /// [`FakeCoda::answer_next`] says, otherwise) in pieces of
    /// `piece` bytes, `pause` apart, with no Content-Length (chunked, as a
    /// compressed or streamed answer comes): a client cannot know their
    /// size before the end. No body starts before all `times` answers are
    /// on their way (or 10 s passed), so they are read at the same time.
    pub fn trickle_next(
        &self,
        method: &str,
        path_contains: &str,
        times: usize,
        piece: usize,
        pause: Duration,
    ) {
        self.with(|s| {
            s.trickles.push(TrickleRule {
                method: method.into(),
                path_contains: path_contains.into(),
                remaining: times,
                piece: piece.max(1),
                pause,
                together: Arc::new(tokio::sync::Barrier::new(times)),
            })
        });
    }

    /// Put a content element first on `page`; its text may hold newlines
    /// (Coda's plain text of a code block or a soft-wrapped paragraph does).
    pub fn insert_line(&self, page: &str, text: &str) {
        self.with(|s| {
            let p = s.pages.iter_mut().find(|p| p.id == page).unwrap();
            p.lines.insert(
                0,
                Line {
                    id: "cl-multi".into(),
                    style: "paragraph".into(),
                    text: text.into(),
                },
            );
        });
    }

    /// Doc `doc2` gets page `canvas-plan` with table `grid-projects`
    /// ("Projects"): Name (text, display), Stage (select Plan/Build/Ship),
    /// Lead (person), Due (date), Budget (number), Score (formula), c-x
    /// (a text column whose *name* looks like an id), and row `i-p1`.
    pub fn add_projects_table(&self) {
        self.with(|s| {
            s.pages.push(PageRec {
                doc: "doc2".into(),
                id: "canvas-plan".into(),
                name: "Plan".into(),
                subtitle: None,
                icon: None,
                parent: None,
                content_type: "canvas".into(),
                hidden: false,
                lines: Vec::new(),
            });
            let c = |id: &str, name: &str, kind: &str, display: bool, calculated: bool| ColumnRec {
                id: id.into(),
                name: name.into(),
                kind: kind.into(),
                display,
                calculated,
            };
            let mut values = Map::new();
            for (k, v) in [
                ("c-pname", json!("Apollo")),
                ("c-stage", json!("Plan")),
                ("c-lead", json!("ada@example.com")),
                ("c-due", json!("2026-03-01")),
                ("c-budget", json!(100)),
                ("c-score", json!(1)),
                ("c-weird", json!("w")),
            ] {
                values.insert(k.into(), v);
            }
            s.tables.push(TableRec {
                doc: "doc2".into(),
                id: "grid-projects".into(),
                name: "Projects".into(),
                table_type: "table".into(),
                page: "canvas-plan".into(),
                columns: vec![
                    c("c-pname", "Name", "text", true, false),
                    c("c-stage", "Stage", "select", false, false),
                    c("c-lead", "Lead", "person", false, false),
                    c("c-due", "Due", "date", false, false),
                    c("c-budget", "Budget", "number", false, false),
                    c("c-score", "Score", "number", false, true),
                    c("c-weird", "c-x", "text", false, false),
                ],
                rows: vec![RowRec {
                    id: "i-p1".into(),
                    values,
                }],
            });
        });
    }

    /// Give every select column `n` more options (Coda lists up to 5000).
    pub fn add_select_options(&self, n: usize) {
        self.with(|s| s.extra_select_options = n);
    }

    pub fn set_max_page(&self, n: usize) {
        self.with(|s| s.max_page = n);
    }

    pub fn set_export_plan(&self, plan: ExportPlan) {
        self.with(|s| s.export_plan = plan);
    }

    pub fn set_mutation_plan(&self, plan: MutationPlan) {
        self.with(|s| s.mutation_plan = plan);
    }

    /// Add `n` rows named `Row <i>` to `grid-tasks`.
    pub fn add_rows(&self, n: usize) {
        self.with(|s| {
            let t = s.tables.iter_mut().find(|t| t.id == "grid-tasks").unwrap();
            for i in 0..n {
                let mut values = Map::new();
                values.insert("c-name".into(), json!(format!("Row {i}")));
                values.insert("c-status".into(), json!("Bulk"));
                values.insert("c-points".into(), json!(i));
                values.insert("c-done".into(), json!(false));
                values.insert("c-notify".into(), json!(""));
                t.rows.push(RowRec {
                    id: format!("i-bulk-{i}"),
                    values,
                });
            }
        });
    }

    /// Add `n` pages named `Page <i>` to doc1.
    pub fn add_pages(&self, n: usize) {
        self.with(|s| {
            for i in 0..n {
                s.pages.push(PageRec {
                    doc: "doc1".into(),
                    id: format!("canvas-p{i}"),
                    name: format!("Page {i}"),
                    subtitle: None,
                    icon: None,
                    parent: None,
                    content_type: "canvas".into(),
                    hidden: false,
                    lines: vec![Line {
                        id: "cl-x".into(),
                        style: "paragraph".into(),
                        text: format!("body {i}"),
                    }],
                });
            }
        });
    }

    // ----- inspection -----

    /// How many requests have arrived, answered or still delayed.
    pub fn arrived(&self) -> usize {
        self.with(|s| s.arrived)
    }

    /// How many requests with this method and a path containing
    /// `path_contains` have arrived, answered or still delayed.
    pub fn arrived_at(&self, method: &str, path_contains: &str) -> usize {
        self.with(|s| {
            s.arrivals
                .iter()
                .filter(|(m, p)| m == method && p.contains(path_contains))
                .count()
        })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// API requests with this method whose path matches exactly.
    pub fn calls(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    pub fn row_values(&self, row_id: &str) -> Option<Map<String, Value>> {
        self.with(|s| {
            s.tables
                .iter()
                .flat_map(|t| t.rows.iter())
                .find(|r| r.id == row_id)
                .map(|r| r.values.clone())
        })
    }

    pub fn row_count(&self, table: &str) -> usize {
        self.with(|s| {
            s.tables
                .iter()
                .find(|t| t.id == table)
                .map(|t| t.rows.len())
                .unwrap_or(0)
        })
    }

    pub fn page_lines(&self, page: &str) -> Vec<String> {
        self.with(|s| {
            s.pages
                .iter()
                .find(|p| p.id == page || p.name == page)
                .map(|p| {
                    p.lines
                        .iter()
                        .map(|l| format!("{}:{}", l.style, l.text))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    pub fn page_exists(&self, page: &str) -> bool {
        self.with(|s| s.pages.iter().any(|p| p.id == page || p.name == page))
    }

    pub fn page_parent(&self, page: &str) -> Option<String> {
        self.with(|s| {
            s.pages
                .iter()
                .find(|p| p.id == page || p.name == page)
                .and_then(|p| p.parent.clone())
        })
    }

    /// Every API response body matches its OpenAPI schema, and every JSON
    /// request body matches the operation's request schema.
    pub fn assert_responses_match_spec(&self) {
        let sp = spec();
        let mut problems = Vec::new();
        let reqs = self.requests();
        assert!(!reqs.is_empty(), "the fake received no requests");
        for r in reqs.iter().filter(|r| r.api) {
            if let Err(e) = sp.validate_response(&r.method, &r.path, r.status, &r.response) {
                problems.push(e);
            }
            if let Err(e) = sp.validate_query(&r.method, &r.path, &r.query) {
                problems.push(e);
            }
            if let (Some(body), Some(schema)) = (&r.body, sp.request_schema(&r.method, &r.path))
                && let Err(e) = validate(&schema, body)
            {
                problems.push(format!(
                    "request body of {} {}: {e}\nbody: {body}",
                    r.method, r.path
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{} spec mismatches:\n{}",
            problems.len(),
            problems.join("\n\n")
        );
    }
}

/// Marks a response whose body is cut: only these bytes are sent, then the
/// connection fails, so the client sees a body it cannot finish.
#[derive(Debug, Clone)]
struct CutHere(Bytes);

/// A body that sends its bytes, waits a moment (so the head and those
/// bytes are flushed), then fails.
struct CutBody(Option<Bytes>, std::pin::Pin<Box<tokio::time::Sleep>>);

impl hyper::body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
        }
        std::task::ready!(self.1.as_mut().poll(cx));
        std::task::Poll::Ready(Some(Err(std::io::Error::other("body cut by the fake"))))
    }
}

/// Marks a response whose body is these bytes every 100 ms, forever.
#[derive(Debug, Clone)]
struct Endless(Bytes);

/// The body of an [`Endless`] response.
struct EndlessBody(Bytes, std::pin::Pin<Box<tokio::time::Sleep>>);

impl hyper::body::Body for EndlessBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::task::ready!(self.1.as_mut().poll(cx));
        self.1 = Box::pin(tokio::time::sleep(Duration::from_millis(100)));
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.0.clone()))))
    }
}

/// Marks a response whose body is `rest`, sent in pieces of `piece`
/// bytes, `pause` apart, with no Content-Length, once every answer of its
/// rule is on its way (`together`).
#[derive(Debug, Clone)]
struct Trickle {
    piece: usize,
    pause: Duration,
    rest: Bytes,
    together: Arc<tokio::sync::Barrier>,
}

type Start = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// The body of a [`Trickle`] response: the wait for the other answers of
/// its rule (at most 10 s), then its pieces and the pause before the next.
struct TrickleBody(
    Trickle,
    Option<Start>,
    std::pin::Pin<Box<tokio::time::Sleep>>,
);

impl TrickleBody {
    fn new(t: Trickle) -> Self {
        let together = t.together.clone();
        let start: Start = Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), together.wait()).await;
        });
        TrickleBody(t, Some(start), Box::pin(tokio::time::sleep(Duration::ZERO)))
    }
}

impl hyper::body::Body for TrickleBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if let Some(start) = self.1.as_mut() {
            std::task::ready!(start.as_mut().poll(cx));
            self.1 = None;
        }
        if self.0.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.2.as_mut().poll(cx));
        self.2 = Box::pin(tokio::time::sleep(self.0.pause));
        let n = self.0.piece.min(self.0.rest.len());
        let piece = self.0.rest.split_to(n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        // Unknown: sent chunked, with no Content-Length.
        hyper::body::SizeHint::default()
    }
}

type AnyBody = http_body_util::Either<
    Full<Bytes>,
    http_body_util::Either<CutBody, http_body_util::Either<EndlessBody, TrickleBody>>,
>;

fn cut_if_marked(resp: Response<Full<Bytes>>) -> Response<AnyBody> {
    use http_body_util::Either::{Left, Right};
    if let Some(Endless(chunk)) = resp.extensions().get::<Endless>().cloned() {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(
            parts,
            Right(Right(Left(EndlessBody(
                chunk,
                Box::pin(tokio::time::sleep(Duration::ZERO)),
            )))),
        );
    }
    if let Some(t) = resp.extensions().get::<Trickle>().cloned() {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Right(Right(Right(TrickleBody::new(t)))));
    }
    let Some(CutHere(first)) = resp.extensions().get::<CutHere>().cloned() else {
        return resp.map(Left);
    };
    let (parts, _) = resp.into_parts();
    Response::from_parts(
        parts,
        Right(Left(CutBody(
            Some(first),
            Box::pin(tokio::time::sleep(Duration::from_millis(50))),
        ))),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let uri = req.uri().clone();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query: Vec<(String, String)> = uri
        .query()
        .and_then(|q| reqwest::Url::parse(&format!("http://x/?{q}")).ok())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let full_path = uri.path().to_owned();
    let delay = {
        let mut s = state.lock().unwrap();
        s.arrived += 1;
        s.arrivals.push((method.clone(), full_path.clone()));
        let once = s
            .delays_next
            .iter_mut()
            .find(|(m, p, _, left)| *left > 0 && *m == method && full_path.contains(p.as_str()))
            .map(|(_, _, d, left)| {
                *left -= 1;
                *d
            });
        once.or_else(|| {
            s.delays
                .iter()
                .find(|(m, p, _)| *m == method && full_path.contains(p.as_str()))
                .map(|(_, _, d)| *d)
        })
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }

    let reply = {
        let mut s = state.lock().unwrap();
        let (reply, api, path) = if let Some(blob) = full_path.strip_prefix("/blobs/") {
            (download(&mut s, blob), false, full_path.clone())
        } else if let Some(path) = full_path.strip_prefix(BASE) {
            let path = path.to_owned();
            let r = if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                err(
                    401,
                    "Unauthorized: the API token is invalid or has been revoked",
                )
            } else if let Some(f) = s
                .faults
                .iter_mut()
                .find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))
                .and_then(|f| {
                    if f.skip > 0 {
                        f.skip -= 1;
                        None
                    } else {
                        Some(f)
                    }
                })
            {
                f.remaining -= 1;
                if let Some(h) = f.hostile.clone() {
                    s.requests.push(Recorded {
                        method: method.clone(),
                        path: path.clone(),
                        query: query.clone(),
                        authorization: authorization.clone(),
                        body: body.clone(),
                        status: h.status,
                        response: Value::Null,
                        api: false,
                    });
                    let trickle = take_trickle(&mut s, &method, &full_path);
                    drop(s);
                    let mut resp = Response::builder().status(h.status);
                    for (k, v) in &h.headers {
                        resp = resp.header(
                            k.as_str(),
                            hyper::header::HeaderValue::from_bytes(v).unwrap(),
                        );
                    }
                    if h.endless {
                        resp = resp.extension(Endless(Bytes::from(h.body)));
                        return Ok(resp.body(Full::new(Bytes::new())).unwrap());
                    }
                    return Ok(with_body(resp, h.body, trickle));
                }
                if f.after_apply
                    && let Some(broken) = f.broken.clone()
                {
                    let applied = route(&mut s, &method, &path, &query, body.as_ref());
                    s.requests.push(Recorded {
                        method: method.clone(),
                        path: path.clone(),
                        query: query.clone(),
                        authorization: authorization.clone(),
                        body: body.clone(),
                        status: applied.status,
                        response: applied.body.clone(),
                        api: true,
                    });
                    drop(s);
                    let payload = serde_json::to_vec(&applied.body).unwrap();
                    let mut resp = Response::builder()
                        .status(applied.status)
                        .header("content-type", "application/json");
                    let sent = match broken {
                        Broken::CutBody => {
                            resp = resp
                                .header("content-length", payload.len())
                                .extension(CutHere(Bytes::copy_from_slice(
                                    &payload[..payload.len() / 2],
                                )));
                            payload
                        }
                        Broken::NotJson(t) => t.into_bytes(),
                        Broken::Repeated { name, value } => {
                            let text = String::from_utf8(payload).unwrap();
                            let member = format!("{}:", Value::String(name));
                            let at = text.find(&member).unwrap_or_else(|| {
                                panic!("no member {member} in the answer {text}")
                            });
                            format!("{}{member}{value},{}", &text[..at], &text[at..]).into_bytes()
                        }
                    };
                    return Ok(resp.body(Full::new(Bytes::from(sent))).unwrap());
                }
                if f.after_apply {
                    let status = f.status;
                    let _applied = route(&mut s, &method, &path, &query, body.as_ref());
                    let r = err(status, "Injected failure after the write was applied");
                    s.requests.push(Recorded {
                        method: method.clone(),
                        path: path.clone(),
                        query: query.clone(),
                        authorization: authorization.clone(),
                        body: body.clone(),
                        status: r.status,
                        response: r.body.clone(),
                        api: true,
                    });
                    drop(s);
                    let payload = serde_json::to_vec(&r.body).unwrap();
                    return Ok(Response::builder()
                        .status(r.status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(payload)))
                        .unwrap());
                }
                let mut r = err(
                    f.status,
                    if f.status == 429 {
                        "Rate limit exceeded"
                    } else {
                        "Injected failure"
                    },
                );
                if let Some(ra) = &f.retry_after {
                    r.headers.push(("retry-after".into(), ra.clone()));
                }
                r
            } else {
                route(&mut s, &method, &path, &query, body.as_ref())
            };
            (r, true, path)
        } else {
            (err(404, "Not Found"), false, full_path.clone())
        };
        s.requests.push(Recorded {
            method: method.clone(),
            path,
            query: query.clone(),
            authorization,
            body: body.clone(),
            status: reply.status,
            response: reply.body.clone(),
            api,
        });
        reply
    };
    let mut builder = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        builder = builder.header(k, v);
    }
    let payload = match reply.raw {
        Some(raw) => raw,
        None => {
            builder = builder.header("content-type", "application/json");
            serde_json::to_vec(&reply.body).unwrap()
        }
    };
    let trickle = take_trickle(&mut state.lock().unwrap(), &method, &full_path);
    Ok(with_body(builder, payload, trickle))
}

/// A piece size, pause and start barrier, when a [`FakeCoda::trickle_next`]
/// rule takes the answer to `method` `full_path`.
fn take_trickle(
    s: &mut State,
    method: &str,
    full_path: &str,
) -> Option<(usize, Duration, Arc<tokio::sync::Barrier>)> {
    s.trickles
        .iter_mut()
        .find(|t| t.remaining > 0 && t.method == method && full_path.contains(&t.path_contains))
        .map(|t| {
            t.remaining -= 1;
            (t.piece, t.pause, t.together.clone())
        })
}

/// The answer `builder` with `payload`, marked to be sent in pieces when a
/// trickle rule took it.
fn with_body(
    builder: hyper::http::response::Builder,
    payload: Vec<u8>,
    trickle: Option<(usize, Duration, Arc<tokio::sync::Barrier>)>,
) -> Response<Full<Bytes>> {
    let Some((piece, pause, together)) = trickle else {
        return builder.body(Full::new(Bytes::from(payload))).unwrap();
    };
    let rest = Bytes::from(payload);
    builder
        .extension(Trickle {
            piece,
            pause,
            rest,
            together,
        })
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The signature part of an export's download link.
pub fn signature(export_id: &str) -> String {
    format!("sig{export_id}c0ffee")
}

fn download(s: &mut State, blob: &str) -> Reply {
    let plan = s.export_plan.clone();
    let Some(exp) = s.exports.get_mut(blob) else {
        return Reply {
            status: 404,
            body: Value::Null,
            headers: Vec::new(),
            raw: Some(b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>".to_vec()),
        };
    };
    if let Some(to) = &plan.redirect_to {
        return Reply {
            status: 302,
            body: Value::Null,
            headers: vec![("location".into(), to.clone())],
            raw: Some(Vec::new()),
        };
    }
    if exp.dead_links_served < plan.dead_links {
        exp.dead_links_served += 1;
        return Reply {
            status: 200,
            body: Value::Null,
            headers: vec![("content-type".into(), "application/xml".into())],
            raw: Some(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>Request has expired</Message></Error>",
                plan.dead_link_code.as_deref().unwrap_or("AccessDenied")
            ).into_bytes()),
        };
    }
    let (doc, page, format) = (exp.doc.clone(), exp.page.clone(), exp.format.clone());
    let text = match s.pages.iter().find(|p| p.doc == doc && p.id == page) {
        Some(p) => render(p, &format),
        None => String::new(),
    };
    let raw = if plan.gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    } else {
        text.into_bytes()
    };
    Reply {
        status: 200,
        body: Value::Null,
        headers: vec![("content-type".into(), "text/plain".into())],
        raw: Some(raw),
    }
}

fn render(p: &PageRec, format: &str) -> String {
    let mut out = Vec::new();
    for l in &p.lines {
        out.push(match (format, l.style.as_str()) {
            ("html", "h1") => format!("<h1>{}</h1>", l.text),
            ("html", "h2") => format!("<h2>{}</h2>", l.text),
            ("html", "bulletedList") => format!("<ul><li>{}</li></ul>", l.text),
            ("html", _) => format!("<p>{}</p>", l.text),
            (_, "h1") => format!("# {}", l.text),
            (_, "h2") => format!("## {}", l.text),
            (_, "h3") => format!("### {}", l.text),
            (_, "bulletedList") => format!("- {}", l.text),
            _ => l.text.clone(),
        });
    }
    out.join("\n")
}

/// Parse markdown or the fake's own html back into lines.
fn parse_lines(s: &mut State, format: &str, content: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for raw in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (style, text) = if format == "html" {
            let strip = |t: &str| {
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
                o
            };
            let style = if raw.starts_with("<h1") {
                "h1"
            } else if raw.starts_with("<h2") {
                "h2"
            } else if raw.starts_with("<ul") {
                "bulletedList"
            } else {
                "paragraph"
            };
            (style, strip(raw))
        } else if let Some(t) = raw.strip_prefix("### ") {
            ("h3", t.to_owned())
        } else if let Some(t) = raw.strip_prefix("## ") {
            ("h2", t.to_owned())
        } else if let Some(t) = raw.strip_prefix("# ") {
            ("h1", t.to_owned())
        } else if let Some(t) = raw.strip_prefix("- ") {
            ("bulletedList", t.to_owned())
        } else {
            ("paragraph", raw.to_owned())
        };
        let id = s.next("cl-n");
        out.push(Line {
            id,
            style: style.into(),
            text,
        });
    }
    out
}

fn q<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

fn decode(seg: &str) -> String {
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Paginate `items` using the fake's opaque tokens.
fn paginate(
    s: &mut State,
    key: &str,
    items: Vec<Value>,
    query: &[(String, String)],
) -> (Vec<Value>, Option<String>) {
    let (offset, limit) = match q(query, "pageToken") {
        Some(tok) => match s.tokens.get(tok) {
            Some((orig, off)) => (
                *off,
                q(orig, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(25usize),
            ),
            None => return (Vec::new(), None),
        },
        None => (
            0,
            q(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(25usize),
        ),
    };
    let limit = limit.clamp(1, s.max_page.max(1));
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = if offset + limit < items.len() {
        let tok = format!("tok-{key}-{}", s.next(""));
        let orig = match q(query, "pageToken").and_then(|t| s.tokens.get(t)) {
            Some((o, _)) => o.clone(),
            None => query.to_vec(),
        };
        s.tokens.insert(tok.clone(), (orig, offset + limit));
        Some(tok)
    } else {
        None
    };
    (page, next)
}

/// The effective query: the original one when a pageToken is given.
fn effective(s: &State, query: &[(String, String)]) -> Vec<(String, String)> {
    match q(query, "pageToken").and_then(|t| s.tokens.get(t)) {
        Some((o, _)) => o.clone(),
        None => query.to_vec(),
    }
}

fn list_body(
    s: &mut State,
    path: &str,
    items: Vec<Value>,
    query: &[(String, String)],
    with_href: bool,
) -> Reply {
    let (page, mut next) = paginate(s, path, items, query);
    if s.looping.iter().any(|p| p == path) {
        // The token gives the second page, whose next token is itself.
        let orig = effective(s, query);
        let limit = q(&orig, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(25usize)
            .clamp(1, s.max_page.max(1));
        s.tokens.insert("tok-loop".into(), (orig, limit));
        next = Some("tok-loop".into());
    }
    let mut body = json!({"items": page});
    if with_href {
        body["href"] = json!(format!("{}{path}", s.base_url));
    }
    if let Some(t) = next {
        body["nextPageLink"] = json!(format!("{}{path}?pageToken={t}", s.base_url));
        body["nextPageToken"] = json!(t);
    }
    ok(200, body)
}

fn mutation(s: &mut State) -> String {
    let id = s.next("mut-");
    s.mutations.insert(id.clone(), 0);
    id
}

/// 202 for an asynchronous write: `body` plus a new mutation's `requestId`.
fn accepted(s: &mut State, mut body: Value) -> Reply {
    body["requestId"] = json!(mutation(s));
    ok(202, body)
}

/// A one-item list of the spec's minimal `schema` instance.
fn synth_list(s: &mut State, path: &str, schema: &str, query: &[(String, String)]) -> Reply {
    let item = spec().synth(schema);
    list_body(s, path, vec![item], query, false)
}

fn page_json(s: &State, p: &PageRec) -> Value {
    let base = &s.base_url;
    let pref = |id: &str, name: &str| {
        obj(
            "PageReference",
            json!({"id": id, "name": name, "href": format!("{base}/docs/{}/pages/{id}", p.doc), "browserLink": format!("https://coda.io/d/_d{}/_su{id}", p.doc)}),
        )
    };
    let children: Vec<Value> = s
        .pages
        .iter()
        .filter(|c| c.doc == p.doc && c.parent.as_deref() == Some(&p.id))
        .map(|c| pref(&c.id, &c.name))
        .collect();
    let mut v = obj(
        "Page",
        json!({
            "id": p.id, "name": p.name, "href": format!("{base}/docs/{}/pages/{}", p.doc, p.id),
            "browserLink": format!("https://coda.io/d/_d{}/_su{}", p.doc, p.id),
            "children": children, "contentType": p.content_type, "isHidden": p.hidden, "isEffectivelyHidden": p.hidden,
        }),
    );
    if let Some(sub) = &p.subtitle {
        v["subtitle"] = json!(sub);
    }
    if let Some(i) = &p.icon {
        v["icon"] = json!({"name": i, "type": "image/png", "browserLink": format!("https://cdn.coda.io/icons/{i}.png")});
    }
    if let Some(par) = &p.parent
        && let Some(pp) = s.pages.iter().find(|x| x.doc == p.doc && &x.id == par)
    {
        v["parent"] = pref(&pp.id, &pp.name);
    }
    v
}

fn table_ref(s: &State, t: &TableRec) -> Value {
    let base = &s.base_url;
    obj(
        "TableReference",
        json!({"id": t.id, "name": t.name, "tableType": t.table_type, "href": format!("{base}/docs/{}/tables/{}", t.doc, t.id), "browserLink": format!("https://coda.io/d/_d{}#_tu{}", t.doc, t.id)}),
    )
}

fn table_json(s: &State, t: &TableRec) -> Value {
    let base = &s.base_url;
    let page = s.pages.iter().find(|p| p.id == t.page).unwrap();
    let display = t.columns.iter().find(|c| c.display).unwrap();
    obj(
        "Table",
        json!({
            "id": t.id, "name": t.name, "tableType": t.table_type,
            "href": format!("{base}/docs/{}/tables/{}", t.doc, t.id),
            "browserLink": format!("https://coda.io/d/_d{}#_tu{}", t.doc, t.id),
            "parent": obj("PageReference", json!({"id": page.id, "name": page.name, "href": format!("{base}/docs/{}/pages/{}", t.doc, page.id), "browserLink": "https://coda.io/d/x"})),
            "displayColumn": {"id": display.id, "type": "column", "href": format!("{base}/docs/{}/tables/{}/columns/{}", t.doc, t.id, display.id)},
            "rowCount": t.rows.len(), "sorts": [], "layout": "default",
            "viewId": null,
        }),
    )
}

fn column_json(s: &State, t: &TableRec, c: &ColumnRec, detail: bool) -> Value {
    let base = &s.base_url;
    let format = match c.kind.as_str() {
        "number" => json!({"type": "number", "isArray": false}),
        "select" => {
            let mut options = vec![
                json!({"name": "Plan"}),
                json!({"name": "Build"}),
                json!({"name": "Ship"}),
            ];
            options.extend(
                (0..s.extra_select_options).map(|i| json!({"name": format!("Option {i}")})),
            );
            // SelectColumnFormat.options: "Returns the first 5000 options."
            options.truncate(5000);
            json!({"type": "select", "isArray": false, "options": options})
        }
        "person" => json!({"type": "person", "isArray": false}),
        "date" => json!({"type": "date", "isArray": false}),
        "checkbox" => json!({"type": "checkbox", "isArray": false, "displayType": "toggle"}),
        "button" => json!({"type": "button", "isArray": false, "label": "Notify"}),
        _ => json!({"type": "text", "isArray": false}),
    };
    let mut v = json!({
        "id": c.id, "type": "column", "name": c.name, "format": format,
        "href": format!("{base}/docs/{}/tables/{}/columns/{}", t.doc, t.id, c.id),
        "display": c.display, "calculated": c.calculated,
    });
    if c.calculated {
        v["formula"] = json!("thisRow.Status = \"Done\"");
    }
    if detail {
        v["parent"] = table_ref(s, t);
    }
    v
}

fn row_json(
    s: &State,
    t: &TableRec,
    idx: usize,
    r: &RowRec,
    query: &[(String, String)],
    detail: bool,
) -> Value {
    let base = &s.base_url;
    let names = q(query, "useColumnNames") == Some("true");
    let fmt = q(query, "valueFormat").unwrap_or("simple");
    let mut values = Map::new();
    for c in &t.columns {
        let v = r.values.get(&c.id).cloned().unwrap_or(json!(""));
        let v = match (&v, fmt) {
            (Value::String(st), "rich") if !st.is_empty() && c.kind == "text" => {
                json!(format!("```{st}```"))
            }
            (Value::Array(a), "simple") => json!(
                a.iter()
                    .map(|x| x.as_str().map(str::to_owned).unwrap_or(x.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => v,
        };
        values.insert(if names { c.name.clone() } else { c.id.clone() }, v);
    }
    let display = t.columns.iter().find(|c| c.display).unwrap();
    let mut v = json!({
        "id": r.id, "type": "row", "href": format!("{base}/docs/{}/tables/{}/rows/{}", t.doc, t.id, r.id),
        "name": r.values.get(&display.id).and_then(Value::as_str).unwrap_or(""),
        "index": idx, "browserLink": format!("https://coda.io/d/_d{}#_tu{}/_ru{}", t.doc, t.id, r.id),
        "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-02T00:00:00.000Z",
        "values": values,
    });
    if detail {
        v["parent"] = table_ref(s, t);
    }
    v
}

/// `"Name":"value"` or `c-id:value` → (column, value).
fn parse_query(query: &str) -> Option<(String, Value)> {
    let (col, rest) = if query.starts_with('"') {
        let mut de = serde_json::Deserializer::from_str(query).into_iter::<Value>();
        let col = de.next()?.ok()?;
        let used = de.byte_offset();
        (col.as_str()?.to_owned(), &query[used..])
    } else {
        let i = query.find(':')?;
        (query[..i].to_owned(), &query[i..])
    };
    let rest = rest.strip_prefix(':')?;
    Some((col, serde_json::from_str(rest).ok()?))
}

fn col_id(t: &TableRec, key: &str) -> Option<String> {
    t.columns
        .iter()
        .find(|c| c.id == key || c.name == key)
        .map(|c| c.id.clone())
}

fn route(
    s: &mut State,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Reply {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let base = s.base_url.clone();
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    match (method, segs.as_slice()) {
        ("GET", ["whoami"]) => ok(
            200,
            obj(
                "User",
                json!({"name": "Ada Lovelace", "loginId": "ada@example.com", "tokenName": "tests", "href": format!("{base}/whoami")}),
            ),
        ),
        ("GET", ["resolveBrowserLink"]) => {
            let url = q(query, "url").unwrap_or("");
            if !url.starts_with("https://coda.io/") {
                return err(400, "The URL is not a Coda URL");
            }
            let Some(id) = url
                .split("_d")
                .nth(1)
                .map(|r| r.split(['/', '#']).next().unwrap_or("").to_owned())
            else {
                return err(404, "Could not resolve the URL");
            };
            if !s.docs.iter().any(|d| d["id"] == id) {
                return err(404, "Could not resolve the URL");
            }
            // The most specific object the URL names: row, table, page, doc.
            let part = |tag: &str| {
                url.split(tag)
                    .nth(1)
                    .map(|r| r.split(['/', '#', '?']).next().unwrap_or("").to_owned())
                    .filter(|x| !x.is_empty())
            };
            let (ty, rid, href) = if let (Some(t), Some(r)) = (part("_tu"), part("_ru")) {
                (
                    "row",
                    r.clone(),
                    format!("{base}/docs/{id}/tables/{t}/rows/{r}"),
                )
            } else if let Some(t) = part("_tu") {
                ("table", t.clone(), format!("{base}/docs/{id}/tables/{t}"))
            } else if let Some(p) = part("_su") {
                ("page", p.clone(), format!("{base}/docs/{id}/pages/{p}"))
            } else {
                ("doc", id.clone(), format!("{base}/docs/{id}"))
            };
            ok(
                200,
                obj(
                    "ApiLink",
                    json!({"href": format!("{base}/resolveBrowserLink"), "browserLink": url, "resource": {"type": ty, "id": rid, "name": "Resolved", "href": href}}),
                ),
            )
        }
        ("GET", ["mutationStatus", id]) => {
            let plan = s.mutation_plan.clone();
            let Some(polls) = s.mutations.get_mut(*id) else {
                return err(404, "Unknown request id");
            };
            *polls += 1;
            if *polls <= plan.not_found_polls {
                return err(404, "Unknown request id");
            }
            let completed = *polls > plan.not_found_polls + plan.pending_polls;
            ok(200, json!({"completed": completed}))
        }
        ("GET", ["categories"]) => ok(
            200,
            json!({"items": [obj("DocCategory", json!({"name": "Project management"}))]}),
        ),
        ("GET", ["folders"]) => {
            let items = s.folders.clone();
            list_body(s, path, items, query, true)
        }
        ("POST", ["folders"]) => {
            let id = s.next("fl-");
            let f = obj("Folder", json!({"id": id, "name": body["name"]}));
            s.folders.push(f.clone());
            ok(201, f)
        }
        ("GET", ["folders", id]) => match s.folders.iter().find(|f| f["id"] == *id) {
            Some(f) => ok(200, f.clone()),
            None => err(404, "Folder not found"),
        },
        ("PATCH", ["folders", id]) => match s.folders.iter_mut().find(|f| f["id"] == *id) {
            Some(f) => {
                if let Some(n) = body.get("name") {
                    f["name"] = n.clone();
                }
                if let Some(d) = body.get("description") {
                    f["description"] = d.clone();
                }
                ok(200, f.clone())
            }
            None => err(404, "Folder not found"),
        },
        ("DELETE", ["folders", id]) => {
            let before = s.folders.len();
            s.folders.retain(|f| f["id"] != *id);
            if before == s.folders.len() {
                err(404, "Folder not found")
            } else {
                ok(200, json!({}))
            }
        }
        ("GET", ["analytics", "updated"]) => ok(200, spec().synth("AnalyticsLastUpdatedResponse")),
        ("GET", ["analytics", "docs", "summary"]) => ok(200, spec().synth("DocAnalyticsSummary")),
        ("GET", ["analytics", "packs", "summary"]) => ok(200, spec().synth("PackAnalyticsSummary")),
        ("GET", ["analytics", "docs"]) => {
            // One item per doc of `docIds` (of the query a token carries).
            let wanted = effective(s, query);
            let items: Vec<Value> = q(&wanted, "docIds")
                .unwrap_or("doc1")
                .split(',')
                .map(|d| {
                    let mut item = spec().synth("DocAnalyticsItem");
                    item["doc"]["id"] = json!(d);
                    item
                })
                .collect();
            list_body(s, path, items, query, false)
        }
        ("GET", ["analytics", "docs", _, "pages"]) => {
            synth_list(s, path, "PageAnalyticsItem", query)
        }
        ("GET", ["analytics", "packs"]) => synth_list(s, path, "PackAnalyticsItem", query),
        ("GET", ["analytics", "packs", _, "formulas"]) => {
            synth_list(s, path, "PackFormulaAnalyticsItem", query)
        }
        ("GET", ["workspaces", _, "users"]) => synth_list(s, path, "WorkspaceUser", query),
        ("GET", ["workspaces", _, "roles"]) => ok(
            200,
            json!({"items": [spec().synth("WorkspaceRoleActivity")]}),
        ),
        ("POST", ["workspaces", _, "users", "role"]) => ok(200, spec().synth("ChangeRoleResult")),
        ("GET", ["docs"]) => {
            let eq = effective(s, query);
            let needle = q(&eq, "query").map(str::to_lowercase);
            let folder = q(&eq, "folderId");
            let items: Vec<Value> = s
                .docs
                .iter()
                .filter(|d| {
                    needle
                        .as_ref()
                        .is_none_or(|n| d["name"].as_str().unwrap().to_lowercase().contains(n))
                })
                .filter(|d| folder.is_none_or(|f| d["folderId"] == f))
                .cloned()
                .collect();
            list_body(s, path, items, query, true)
        }
        ("POST", ["docs"]) => {
            let id = format!("doc{}", s.next(""));
            let title = body["title"].as_str().unwrap_or("Untitled");
            let d = obj(
                "Doc",
                json!({"id": id, "name": title, "href": format!("{base}/docs/{id}"), "browserLink": format!("https://coda.io/d/_d{id}")}),
            );
            s.docs.push(d.clone());
            let mut created = d;
            created["requestId"] = json!(mutation(s));
            ok(201, created)
        }
        ("GET", ["docs", d]) => match s.docs.iter().find(|x| x["id"] == *d) {
            Some(doc) => ok(200, doc.clone()),
            None => err(404, "Doc not found"),
        },
        ("PATCH", ["docs", d]) => match s.docs.iter_mut().find(|x| x["id"] == *d) {
            Some(doc) => {
                if let Some(t) = body.get("title") {
                    doc["name"] = t.clone();
                }
                ok(200, json!({}))
            }
            None => err(404, "Doc not found"),
        },
        ("DELETE", ["docs", d]) => {
            let before = s.docs.len();
            s.docs.retain(|x| x["id"] != *d);
            if before == s.docs.len() {
                err(404, "Doc not found")
            } else {
                ok(202, json!({}))
            }
        }
        (_, ["docs", d, rest @ ..]) => {
            if !s.docs.iter().any(|x| x["id"] == *d) {
                return err(404, "Doc not found");
            }
            doc_route(s, method, path, d, rest, query, body)
        }
        _ => err(404, "Not Found"),
    }
}

fn find_page<'a>(s: &'a State, d: &str, p: &str) -> Option<&'a PageRec> {
    s.pages
        .iter()
        .find(|x| x.doc == d && (x.id == p || x.name == p))
}

fn doc_route(
    s: &mut State,
    method: &str,
    path: &str,
    d: &str,
    rest: &[&str],
    query: &[(String, String)],
    body: &Value,
) -> Reply {
    let base = s.base_url.clone();
    match (method, rest) {
        ("GET", ["pages"]) => {
            let items: Vec<Value> = s
                .pages
                .iter()
                .filter(|p| p.doc == d)
                .map(|p| page_json(s, p))
                .collect();
            list_body(s, path, items, query, true)
        }
        ("POST", ["pages"]) => {
            let Some(name) = body["name"].as_str() else {
                return err(400, "name is required");
            };
            let id = s.next("canvas-new");
            let (ctype, lines) = match body.pointer("/pageContent/type").and_then(Value::as_str) {
                Some("embed") => ("embed", Vec::new()),
                _ => {
                    let fmt = body
                        .pointer("/pageContent/canvasContent/format")
                        .and_then(Value::as_str)
                        .unwrap_or("markdown")
                        .to_owned();
                    let content = body
                        .pointer("/pageContent/canvasContent/content")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    ("canvas", parse_lines(s, &fmt, &content))
                }
            };
            if let Some(par) = body["parentPageId"].as_str()
                && find_page(s, d, par).is_none()
            {
                return err(404, "Parent page not found");
            }
            s.pages.push(PageRec {
                doc: d.into(),
                id: id.clone(),
                name: name.into(),
                subtitle: body["subtitle"].as_str().map(str::to_owned),
                icon: body["iconName"].as_str().map(str::to_owned),
                parent: body["parentPageId"].as_str().map(str::to_owned),
                content_type: ctype.into(),
                hidden: false,
                lines,
            });
            accepted(s, json!({"id": id}))
        }
        ("GET", ["pages", p]) => match find_page(s, d, p) {
            Some(pg) => ok(200, page_json(s, pg)),
            None => err(404, "Page not found"),
        },
        ("PUT", ["pages", p]) => {
            let Some(idx) = s
                .pages
                .iter()
                .position(|x| x.doc == d && (x.id == *p || x.name == *p))
            else {
                return err(404, "Page not found");
            };
            if let Some(cu) = body
                .get("contentUpdate")
                .filter(|_| !s.drop_content_updates)
            {
                let mode = cu["insertionMode"].as_str().unwrap_or("append").to_owned();
                let fmt = cu
                    .pointer("/canvasContent/format")
                    .and_then(Value::as_str)
                    .unwrap_or("markdown")
                    .to_owned();
                let content = cu
                    .pointer("/canvasContent/content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let new = parse_lines(s, &fmt, &content);
                let pg = &mut s.pages[idx];
                let anchor = cu["elementId"]
                    .as_str()
                    .and_then(|e| pg.lines.iter().position(|l| l.id == e));
                if cu["elementId"].is_string() && anchor.is_none() {
                    return err(400, "Element not found");
                }
                match (mode.as_str(), anchor) {
                    ("replace", None) => pg.lines = new,
                    ("replace", Some(i)) => {
                        pg.lines.splice(i..=i, new);
                    }
                    ("prepend", None) => {
                        pg.lines.splice(0..0, new);
                    }
                    ("prepend", Some(i)) => {
                        pg.lines.splice(i..i, new);
                    }
                    (_, None) => pg.lines.extend(new),
                    (_, Some(i)) => {
                        pg.lines.splice(i + 1..i + 1, new);
                    }
                }
            }
            let pg = &mut s.pages[idx];
            if let Some(n) = body["name"].as_str() {
                pg.name = n.into();
            }
            if let Some(sub) = body["subtitle"].as_str() {
                pg.subtitle = Some(sub.into());
            }
            if let Some(i) = body["iconName"].as_str() {
                pg.icon = Some(i.into());
            }
            if let Some(h) = body["isHidden"].as_bool() {
                pg.hidden = h;
            }
            let id = pg.id.clone();
            accepted(s, json!({"id": id}))
        }
        ("DELETE", ["pages", p]) => {
            let Some(pg) = find_page(s, d, p) else {
                return err(404, "Page not found");
            };
            let id = pg.id.clone();
            s.pages.retain(|x| x.id != id);
            accepted(s, json!({"id": id}))
        }
        ("GET", ["pages", p, "content"]) => {
            let Some(pg) = find_page(s, d, p) else {
                return err(404, "Page not found");
            };
            if pg.content_type != "canvas" {
                return err(404, "This page has no canvas content");
            }
            let items: Vec<Value> = pg
                .lines
                .iter()
                .map(|l| json!({"id": l.id, "type": "line", "itemContent": {"style": l.style, "format": "plainText", "content": l.text}}))
                .collect();
            list_body(s, path, items, query, true)
        }
        ("DELETE", ["pages", p, "content"]) => {
            let Some(idx) = s
                .pages
                .iter()
                .position(|x| x.doc == d && (x.id == *p || x.name == *p))
            else {
                return err(404, "Page not found");
            };
            let ids: Vec<String> = body["elementIds"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let pg = &mut s.pages[idx];
            if ids.is_empty() {
                pg.lines.clear();
            } else {
                pg.lines.retain(|l| !ids.contains(&l.id));
            }
            let id = pg.id.clone();
            accepted(s, json!({"id": id}))
        }
        ("POST", ["pages", p, "export"]) => {
            let Some(pg) = find_page(s, d, p) else {
                return err(404, "Page not found");
            };
            if pg.content_type != "canvas" {
                return err(400, "Only canvas pages can be exported");
            }
            let page = pg.id.clone();
            let id = s.next("exp-");
            let format = body["outputFormat"].as_str().unwrap_or("html").to_owned();
            s.exports.insert(
                id.clone(),
                ExportRec {
                    doc: d.into(),
                    page: page.clone(),
                    format,
                    polls: 0,
                    dead_links_served: 0,
                },
            );
            ok(
                202,
                json!({"id": id, "status": "inProgress", "href": format!("{base}/docs/{d}/pages/{page}/export/{id}")}),
            )
        }
        ("GET", ["pages", p, "export", id]) => {
            let plan = s.export_plan.clone();
            let Some(exp) = s.exports.get_mut(*id) else {
                return err(404, "Export not found");
            };
            exp.polls += 1;
            if exp.polls <= plan.not_found_polls {
                return err(404, "Export not found");
            }
            let href = format!("{base}/docs/{d}/pages/{p}/export/{id}");
            if exp.polls <= plan.not_found_polls + plan.in_progress_polls {
                return ok(200, json!({"id": id, "status": "inProgress", "href": href}));
            }
            if plan.fail {
                return ok(
                    200,
                    json!({"id": id, "status": "failed", "href": href, "error": "Page could not be rendered"}),
                );
            }
            let host = if plan.dead_host {
                "http://127.0.0.1:1".to_owned()
            } else {
                base.trim_end_matches(BASE).to_owned()
            };
            // Pre-signed, as Coda's are: the query is a credential.
            let link = plan.link.clone().unwrap_or_else(|| {
                format!(
                    "{host}/blobs/{id}?X-Amz-Expires=300&X-Amz-Signature={}",
                    signature(id)
                )
            });
            ok(
                200,
                json!({"id": id, "status": "complete", "href": href, "downloadLink": link}),
            )
        }
        ("GET", ["tables"]) => {
            let eq = effective(s, query);
            let types =
                q(&eq, "tableTypes").map(|t| t.split(',').map(str::to_owned).collect::<Vec<_>>());
            // Indices first, objects for the page only: a doc of 10,000
            // tables is listed page by page without building them all.
            let picked: Vec<Value> = s
                .tables
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    t.doc == d && types.as_ref().is_none_or(|ty| ty.contains(&t.table_type))
                })
                .map(|(i, _)| json!(i))
                .collect();
            let mut reply = list_body(s, path, picked, query, true);
            let picked = std::mem::take(&mut reply.body["items"]);
            reply.body["items"] = picked
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| table_ref(s, &s.tables[i.as_u64().unwrap_or_default() as usize]))
                .collect();
            reply
        }
        (_, ["tables", t, more @ ..]) => {
            let Some(ti) = s
                .tables
                .iter()
                .position(|x| x.doc == d && (x.id == *t || x.name == *t))
            else {
                return err(404, "Table not found");
            };
            table_route(s, method, path, ti, more, query, body)
        }
        ("GET", ["formulas"]) => {
            let items: Vec<Value> = s
                .formulas
                .iter()
                .filter(|(doc, _)| doc == d)
                .map(|(_, f)| json!({"id": f["id"], "type": "formula", "href": f["href"], "name": f["name"]}))
                .collect();
            list_body(s, path, items, query, true)
        }
        ("GET", ["formulas", f]) => match s
            .formulas
            .iter()
            .find(|(doc, x)| doc == d && (x["id"] == *f || x["name"] == *f))
        {
            Some((_, x)) => ok(200, x.clone()),
            None => err(404, "Formula not found"),
        },
        ("GET", ["controls"]) => {
            let items: Vec<Value> = s
                .controls
                .iter()
                .filter(|(doc, _)| doc == d)
                .map(|(_, c)| json!({"id": c["id"], "type": "control", "href": c["href"], "name": c["name"]}))
                .collect();
            list_body(s, path, items, query, true)
        }
        ("GET", ["controls", c]) => match s
            .controls
            .iter()
            .find(|(doc, x)| doc == d && (x["id"] == *c || x["name"] == *c))
        {
            Some((_, x)) => ok(200, x.clone()),
            None => err(404, "Control not found"),
        },
        ("GET", ["acl", "metadata"]) => ok(
            200,
            json!({"canShare": true, "canShareWithWorkspace": true, "canShareWithOrg": false, "canCopy": true}),
        ),
        ("GET", ["acl", "permissions"]) => {
            let items: Vec<Value> = s
                .permissions
                .iter()
                .filter(|(doc, _)| doc == d)
                .map(|(_, p)| p.clone())
                .collect();
            list_body(s, path, items, query, true)
        }
        ("POST", ["acl", "permissions"]) => {
            if body["principal"]["type"] == "email"
                && !body["principal"]["email"]
                    .as_str()
                    .is_some_and(|e| e.contains('@'))
            {
                return err(400, "Invalid email principal");
            }
            let id = s.next("perm-");
            s.permissions.push((
                d.into(),
                json!({"id": id, "access": body["access"], "principal": body["principal"]}),
            ));
            ok(200, json!({}))
        }
        ("DELETE", ["acl", "permissions", id]) => {
            let before = s.permissions.len();
            s.permissions.retain(|(_, p)| p["id"] != *id);
            if before == s.permissions.len() {
                err(404, "Permission not found")
            } else {
                ok(200, json!({}))
            }
        }
        ("GET", ["acl", "principals", "search"]) => {
            let needle = q(query, "query").unwrap_or("").to_lowercase();
            let users: Vec<Value> = s
                .permissions
                .iter()
                .filter_map(|(_, p)| p["principal"]["email"].as_str())
                .filter(|e| e.contains(&needle))
                .map(|e| {
                    obj(
                        "UserSummary",
                        json!({"loginId": e, "name": e.split('@').next().unwrap()}),
                    )
                })
                .collect();
            ok(200, json!({"users": users, "groups": []}))
        }
        ("GET", ["acl", "settings"]) => {
            let v = s.acl_settings.get(d).cloned().unwrap_or(json!({"allowEditorsToChangePermissions": true, "allowCopying": true, "allowViewersToRequestEditing": false}));
            ok(200, v)
        }
        ("PATCH", ["acl", "settings"]) => {
            let mut v = s.acl_settings.get(d).cloned().unwrap_or(json!({"allowEditorsToChangePermissions": true, "allowCopying": true, "allowViewersToRequestEditing": false}));
            merge(&mut v, body.clone());
            s.acl_settings.insert(d.into(), v.clone());
            ok(200, v)
        }
        ("PUT", ["publish"]) => {
            s.published.insert(d.into(), body.clone());
            accepted(s, json!({}))
        }
        ("DELETE", ["publish"]) => {
            s.published.remove(d);
            ok(200, json!({}))
        }
        ("POST", ["hooks", "automation", rule]) => {
            if !rule.starts_with("grid-auto-") {
                return err(422, "The rule is not a webhook-triggered automation");
            }
            accepted(s, json!({}))
        }
        _ => err(404, "Not Found"),
    }
}

fn table_route(
    s: &mut State,
    method: &str,
    path: &str,
    ti: usize,
    rest: &[&str],
    query: &[(String, String)],
    body: &Value,
) -> Reply {
    match (method, rest) {
        ("GET", []) => ok(200, table_json(s, &s.tables[ti])),
        ("GET", ["columns"]) => {
            let t = &s.tables[ti];
            let items: Vec<Value> = t
                .columns
                .iter()
                .map(|c| column_json(s, t, c, false))
                .collect();
            list_body(s, path, items, query, true)
        }
        ("GET", ["columns", c]) => {
            let t = &s.tables[ti];
            match t.columns.iter().find(|x| x.id == *c || x.name == *c) {
                Some(col) => ok(200, column_json(s, t, col, true)),
                None => err(404, "Column not found"),
            }
        }
        ("GET", ["rows"]) => {
            let eq = effective(s, query);
            if q(&eq, "sortBy") == Some("natural") && q(&eq, "visibleOnly") == Some("false") {
                return err(400, "sortBy=natural requires visibleOnly");
            }
            let t = &s.tables[ti];
            let filter = match q(&eq, "query") {
                Some(raw) => match parse_query(raw) {
                    Some((col, val)) => match col_id(t, &col) {
                        Some(cid) => Some((cid, val)),
                        None => return err(400, &format!("Unknown column in query: {col}")),
                    },
                    None => return err(400, "Invalid query: expected <column>:<JSON value>"),
                },
                None => None,
            };
            let items: Vec<Value> = t
                .rows
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    filter
                        .as_ref()
                        .is_none_or(|(c, v)| r.values.get(c) == Some(v))
                })
                .map(|(i, r)| row_json(s, t, i, r, &eq, false))
                .collect();
            let (page, next) = paginate(s, path, items, query);
            let mut out = json!({"items": page, "href": format!("{}{path}", s.base_url)});
            if let Some(tok) = next {
                out["nextPageLink"] = json!(format!("{}{path}?pageToken={tok}", s.base_url));
                out["nextPageToken"] = json!(tok);
            }
            ok(200, out)
        }
        ("POST", ["rows"]) => {
            if s.tables[ti].table_type == "view" {
                return err(400, "Cannot insert rows into a view");
            }
            let Some(rows) = body["rows"].as_array() else {
                return err(400, "rows is required");
            };
            let keys: Vec<String> = body["keyColumns"]
                .as_array()
                .map(|k| {
                    k.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut key_ids = Vec::new();
            for k in &keys {
                match col_id(&s.tables[ti], k) {
                    Some(id) => key_ids.push(id),
                    None => return err(400, &format!("Unknown key column: {k}")),
                }
            }
            let mut edits = Vec::new();
            for r in rows {
                let mut values = Map::new();
                for cell in r["cells"].as_array().into_iter().flatten() {
                    let col = cell["column"].as_str().unwrap_or("");
                    match col_id(&s.tables[ti], col) {
                        Some(id) => {
                            values.insert(id, cell["value"].clone());
                        }
                        None => return err(400, &format!("Could not find column {col}")),
                    }
                }
                edits.push(values);
            }
            let mut added = Vec::new();
            for values in edits {
                let existing = if key_ids.is_empty() {
                    None
                } else {
                    s.tables[ti]
                        .rows
                        .iter()
                        .position(|r| key_ids.iter().all(|k| r.values.get(k) == values.get(k)))
                };
                let written: Vec<String> = values.keys().cloned().collect();
                let ri = match existing {
                    Some(i) => {
                        s.tables[ti].rows[i].values.extend(values);
                        i
                    }
                    None => {
                        let id = s.next("i-new");
                        let mut full = Map::new();
                        for c in &s.tables[ti].columns {
                            full.insert(c.id.clone(), json!(""));
                        }
                        full.extend(values);
                        s.tables[ti].rows.push(RowRec {
                            id: id.clone(),
                            values: full,
                        });
                        added.push(id);
                        s.tables[ti].rows.len() - 1
                    }
                };
                for (c, v) in s.change_on_write.clone() {
                    if written.contains(&c) {
                        s.tables[ti].rows[ri].values.insert(c, v);
                    }
                }
            }
            // Coda returns addedRowIds only for inserts.
            let out = if key_ids.is_empty() {
                json!({"addedRowIds": added})
            } else {
                json!({})
            };
            accepted(s, out)
        }
        ("DELETE", ["rows"]) => {
            let ids: Vec<String> = body["rowIds"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return err(400, "rowIds is required");
            }
            s.tables[ti].rows.retain(|r| !ids.contains(&r.id));
            accepted(s, json!({"rowIds": ids}))
        }
        (_, ["rows", r, more @ ..]) => {
            let t = &s.tables[ti];
            let display = t.columns.iter().find(|c| c.display).unwrap().id.clone();
            let Some(ri) = t.rows.iter().position(|x| {
                x.id == *r || x.values.get(&display).and_then(Value::as_str) == Some(*r)
            }) else {
                return err(404, "Row not found");
            };
            match (method, more) {
                ("GET", []) => ok(200, row_json(s, t, ri, &t.rows[ri], query, true)),
                ("PUT", []) => {
                    let mut updates = Map::new();
                    for cell in body
                        .pointer("/row/cells")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let col = cell["column"].as_str().unwrap_or("");
                        match col_id(t, col) {
                            Some(id) => {
                                updates.insert(id, cell["value"].clone());
                            }
                            None => return err(400, &format!("Could not find column {col}")),
                        }
                    }
                    let id = t.rows[ri].id.clone();
                    s.tables[ti].rows[ri].values.extend(updates);
                    for c in s.drop_on_write.clone() {
                        s.tables[ti].rows[ri].values.remove(&c);
                    }
                    for (c, v) in s.change_on_write.clone() {
                        if let Some(old) = s.tables[ti].rows[ri].values.get_mut(&c) {
                            *old = v;
                        }
                    }
                    accepted(s, json!({"id": id}))
                }
                ("DELETE", []) => {
                    let id = s.tables[ti].rows.remove(ri).id;
                    accepted(s, json!({"id": id}))
                }
                ("POST", ["buttons", c]) => {
                    let Some(col) = t.columns.iter().find(|x| x.id == *c || x.name == *c) else {
                        return err(404, "Column not found");
                    };
                    if col.kind != "button" {
                        return err(400, "Column is not a button column");
                    }
                    let (row_id, col_id) = (t.rows[ri].id.clone(), col.id.clone());
                    accepted(s, json!({"rowId": row_id, "columnId": col_id}))
                }
                _ => err(404, "Not Found"),
            }
        }
        _ => err(404, "Not Found"),
    }
}
