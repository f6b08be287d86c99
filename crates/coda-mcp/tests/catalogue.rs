//! The tool catalogue as a client sees it (tools/list over rmcp stdio):
//! drop-in names and parameters, annotations, output schemas, read-only mode
//! and toolsets; and the binary's start-up: token check and exit codes.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use fake_coda::FakeCoda;
use harness::{BIN, TIMEOUT, start};
use serde_json::{Value, json};

/// The 34 coda-enhanced tools with the parameter names they took.
const CODA_ENHANCED: &[(&str, &[&str])] = &[
    (
        "coda_list_documents",
        &["query", "limit", "isOwner", "isPublished"],
    ),
    ("coda_get_document", &["docId"]),
    ("coda_create_document", &["title", "sourceDoc", "folderId"]),
    ("coda_update_document", &["docId", "title", "iconName"]),
    ("coda_get_document_stats", &["docId"]),
    ("coda_list_pages", &["docId", "limit"]),
    (
        "coda_create_page",
        &[
            "docId",
            "name",
            "content",
            "parentPageId",
            "subtitle",
            "iconName",
        ],
    ),
    ("coda_delete_page", &["docId", "pageIdOrName"]),
    ("coda_get_page_content", &["docId", "pageIdOrName"]),
    ("coda_peek_page", &["docId", "pageIdOrName", "numLines"]),
    (
        "coda_replace_page_content",
        &["docId", "pageIdOrName", "content"],
    ),
    (
        "coda_append_page_content",
        &["docId", "pageIdOrName", "content"],
    ),
    ("coda_duplicate_page", &["docId", "pageIdOrName", "newName"]),
    (
        "coda_rename_page",
        &["docId", "pageIdOrName", "newName", "subtitle"],
    ),
    ("coda_search_pages", &["docId", "query", "includeContent"]),
    ("coda_list_tables", &["docId", "tableTypes", "limit"]),
    ("coda_get_table", &["docId", "tableIdOrName"]),
    ("coda_get_table_summary", &["docId", "tableIdOrName"]),
    ("coda_search_tables", &["docId", "query", "tableTypes"]),
    (
        "coda_list_columns",
        &["docId", "tableIdOrName", "limit", "visibleOnly"],
    ),
    (
        "coda_get_column",
        &["docId", "tableIdOrName", "columnIdOrName"],
    ),
    (
        "coda_list_rows",
        &[
            "docId",
            "tableIdOrName",
            "query",
            "limit",
            "sortBy",
            "useColumnNames",
            "visibleOnly",
        ],
    ),
    (
        "coda_get_row",
        &["docId", "tableIdOrName", "rowIdOrName", "useColumnNames"],
    ),
    (
        "coda_create_rows",
        &["docId", "tableIdOrName", "rows", "keyColumns"],
    ),
    (
        "coda_update_row",
        &["docId", "tableIdOrName", "rowIdOrName", "values"],
    ),
    (
        "coda_delete_row",
        &["docId", "tableIdOrName", "rowIdOrName"],
    ),
    ("coda_delete_rows", &["docId", "tableIdOrName", "rowIds"]),
    (
        "coda_bulk_update_rows",
        &["docId", "tableIdOrName", "updates"],
    ),
    ("coda_list_formulas", &["docId", "limit", "sortBy"]),
    ("coda_get_formula", &["docId", "formulaIdOrName"]),
    ("coda_list_controls", &["docId", "limit", "sortBy"]),
    ("coda_get_control", &["docId", "controlIdOrName"]),
    (
        "coda_push_button",
        &["docId", "tableIdOrName", "rowIdOrName", "columnIdOrName"],
    ),
    ("coda_whoami", &[]),
];

fn props(t: &rmcp::model::Tool) -> BTreeSet<String> {
    t.input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn all_34_coda_enhanced_tools_keep_their_names_and_parameters() {
    let h = start(&[]).await;
    let tools = h.tools().await;
    assert_eq!(tools.len(), 60);
    for (name, params) in CODA_ENHANCED {
        let t = tools
            .iter()
            .find(|t| t.name == *name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let have = props(t);
        for p in *params {
            assert!(have.contains(*p), "{name} lost parameter {p}: {have:?}");
        }
    }
    h.close().await;
}

#[tokio::test]
async fn every_tool_has_all_four_annotations_an_output_schema_and_a_description() {
    let h = start(&["--toolsets", "all"]).await;
    let tools = h.tools().await;
    assert_eq!(tools.len(), 70);
    for t in &tools {
        let a = t
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no annotations", t.name));
        assert!(
            a.read_only_hint.is_some()
                && a.destructive_hint.is_some()
                && a.idempotent_hint.is_some()
                && a.open_world_hint.is_some(),
            "{}",
            t.name
        );
        let out = t
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no outputSchema", t.name));
        assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
        let d = t.description.as_deref().unwrap_or("");
        assert!(d.len() >= 10 && d.len() < 600, "{}: {d}", t.name);
        assert!(
            t.input_schema.get("type") == Some(&json!("object")),
            "{}",
            t.name
        );
        if a.read_only_hint == Some(false)
            && (t.name.contains("delete")
                || t.name.contains("unpublish")
                || t.name.contains("replace"))
        {
            assert_eq!(a.destructive_hint, Some(true), "{}", t.name);
        }
    }
    let rl = tools
        .iter()
        .find(|t| t.name == "coda_rate_limit_status")
        .unwrap();
    assert_eq!(
        rl.annotations.as_ref().unwrap().open_world_hint,
        Some(false)
    );
    h.close().await;
}

#[tokio::test]
async fn structured_content_of_calls_matches_the_declared_output_schema() {
    let h = start(&[]).await;
    let tools = h.tools().await;
    for (name, args) in [
        (
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        ),
        ("coda_get_document_stats", json!({"docId": "doc1"})),
        (
            "coda_peek_page",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "numLines": 1}),
        ),
        (
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "x"}], "wait": true}),
        ),
        (
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Points": 1}}),
        ),
        (
            "coda_get_table_summary",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        ),
        ("coda_search_pages", json!({"docId": "doc1", "query": "o"})),
    ] {
        let v = h.ok(name, args).await;
        let t = tools.iter().find(|t| t.name == name).unwrap();
        let schema = Value::Object((*t.output_schema.clone().unwrap()).clone());
        fake_coda::validate(&schema, &v).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn read_only_mode_hides_every_write_tool() {
    let full = start(&["--toolsets", "all"]).await;
    let all = full.tools().await;
    full.fake.assert_responses_match_spec();
    full.close().await;
    let writes: BTreeSet<String> = all
        .iter()
        .filter(|t| t.annotations.as_ref().unwrap().read_only_hint != Some(true))
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(writes.len(), 29, "{writes:?}");
    let ro = start(&["--toolsets", "all", "--read-only"]).await;
    let listed = ro.tools().await;
    assert_eq!(listed.len(), all.len() - writes.len());
    for t in &listed {
        assert!(
            !writes.contains(t.name.as_ref()),
            "{} listed in read-only mode",
            t.name
        );
    }
    // A hidden tool does not exist: calling it is "tool not found", and Coda is never asked.
    let args = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1"})
        .as_object()
        .unwrap()
        .clone();
    let r = ro
        .client
        .call_tool(rmcp::model::CallToolRequestParams::new("coda_delete_row").with_arguments(args))
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(ro.fake.row_count("grid-tasks"), 3);
    assert!(
        ro.fake
            .calls("DELETE", "/docs/doc1/tables/grid-tasks/rows/i-1")
            .is_empty()
    );
    ro.fake.assert_responses_match_spec();
    ro.close().await;
}

#[tokio::test]
async fn toolsets_limit_the_catalogue() {
    let h = start(&["--toolsets", "rows"]).await;
    let names: BTreeSet<String> = h.tools().await.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.contains("row") || n == "coda_push_button"),
        "{names:?}"
    );
    h.close().await;
}

async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CODA_API_TOKEN")
        .env_remove("API_KEY")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("binary hung")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn missing_token_exits_64_with_a_clear_message() {
    let (code, stdout, stderr) = run_binary(&["--skip-token-check"], &[]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.starts_with("error: no Coda API token"), "{stderr}");
    assert!(stdout.is_empty());
    let (code, _, stderr) = run_binary(&["--toolsets", "bogus"], &[("CODA_API_TOKEN", "t")]).await;
    assert_eq!(code, 64);
    assert!(stderr.contains("unknown toolset \"bogus\""), "{stderr}");
}

#[tokio::test]
async fn rejected_token_exits_1_without_printing_the_token() {
    let fake = FakeCoda::start().await;
    let base = fake.base_url();
    let (code, stdout, stderr) = run_binary(
        &["--api-base-url", &base],
        &[("API_KEY", "wrong-secret-123")],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("rejected") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret-123") && !stdout.contains("wrong-secret-123"));
    assert!(stdout.is_empty(), "stdout is the protocol only: {stdout}");
    let calls = fake.calls("GET", "/whoami");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some("Bearer wrong-secret-123")
    );
    fake.assert_responses_match_spec();
}

#[tokio::test]
async fn unreachable_coda_at_start_warns_and_serves() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/apis/v1");
    let t = std::time::Instant::now();
    let (code, _, stderr) = run_binary(
        &[
            "--api-base-url",
            &url,
            "--call-timeout-secs",
            "2",
            "--retry-base-ms",
            "50",
        ],
        &[("CODA_API_TOKEN", "t")],
    )
    .await;
    // It warns and serves (stdin is null, so serving ends at once).
    let _ = code;
    assert!(stderr.contains("serving anyway"), "{stderr}");
    assert!(stderr.contains("serving coda-mcp on stdio"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn every_schema_of_every_tool_is_portable() {
    let h = start(&["--toolsets", "all"]).await;
    let tools = h.tools().await;
    assert_eq!(tools.len(), 70);
    let mut problems = Vec::new();
    for t in &tools {
        let input = Value::Object((*t.input_schema).clone());
        for p in coda_mcp::schema::problems(&input) {
            problems.push(format!("{} input{p}", t.name));
        }
        let output = Value::Object((*t.output_schema.clone().expect("output schema")).clone());
        for p in coda_mcp::schema::problems(&output) {
            problems.push(format!("{} output{p}", t.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    h.close().await;
}

#[tokio::test]
async fn list_pages_declares_next_page_token_and_a_limit_of_at_least_one() {
    let h = start(&[]).await;
    let tools = h.tools().await;
    let t = tools.iter().find(|t| t.name == "coda_list_pages").unwrap();
    let props = t.input_schema["properties"].as_object().unwrap();
    assert!(props.contains_key("nextPageToken"), "{props:?}");
    assert_eq!(props["limit"]["minimum"], 1);
    let v = h
        .ok("coda_list_pages", json!({"docId": "doc1", "limit": 1}))
        .await;
    let tok = v["nextPageToken"].as_str().unwrap();
    let v2 = h
        .ok(
            "coda_list_pages",
            json!({"docId": "doc1", "nextPageToken": tok}),
        )
        .await;
    assert_ne!(v["items"][0]["id"], v2["items"][0]["id"]);
    h.close().await;
}

#[tokio::test]
async fn the_coda_enhanced_preset_lists_exactly_the_original_34_tools() {
    let h = start(&["--toolsets", "coda-enhanced"]).await;
    let names: BTreeSet<String> = h.tools().await.iter().map(|t| t.name.to_string()).collect();
    let want: BTreeSet<String> = CODA_ENHANCED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, want);
    let server: BTreeSet<String> = coda_mcp::server::CODA_ENHANCED_TOOLS
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(server, want);
    h.close().await;
}

#[tokio::test]
async fn skip_token_check_serves_and_reports_401_as_a_tool_error() {
    let fake = FakeCoda::start().await;
    let mut cmd = harness::command(&fake, &["--skip-token-check"]);
    cmd.env("CODA_API_TOKEN", "bad-token-999");
    let client = {
        use rmcp::ServiceExt;
        tokio::time::timeout(
            TIMEOUT,
            ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()),
        )
        .await
        .unwrap()
        .unwrap()
    };
    let r = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("coda_list_documents")
                .with_arguments(Default::default()),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let text = harness::text(&r);
    assert!(
        text.contains("401") && text.contains("invalid or has been revoked"),
        "{text}"
    );
    assert!(!text.contains("bad-token-999"));
    assert!(fake.calls("GET", "/whoami").is_empty());
    let _ = client.cancel().await;
    fake.assert_responses_match_spec();
}

/// Regression: `coda_add_permission` was annotated `idempotentHint: true`,
/// which MCP defines as "calling it again with the same arguments has no
/// additional effect". Coda's spec promises no such thing: `addPermission`
/// "adds a new permission to the doc" and, unless `suppressEmail`, sends
/// a share notification email each time; its answer is `{}`, so nothing
/// tells a repeat from a first grant. A client may retry an idempotent
/// tool on its own: the hint is false, as `coda_trigger_automation`'s.
#[tokio::test]
async fn adding_a_permission_is_not_annotated_idempotent() {
    let h = start(&["--toolsets", "all"]).await;
    let tools = h.tools().await;
    let add = tools
        .iter()
        .find(|t| t.name == "coda_add_permission")
        .unwrap();
    let a = add.annotations.as_ref().unwrap();
    assert_eq!(a.idempotent_hint, Some(false), "{a:?}");
    assert_eq!(a.read_only_hint, Some(false), "{a:?}");
    // The same grant twice is two requests, each a new permission to Coda.
    let grant = json!({"docId": "doc1", "access": "readonly", "principal": {"type": "email", "email": "ada@example.com"}});
    h.ok("coda_add_permission", grant.clone()).await;
    h.ok("coda_add_permission", grant).await;
    assert_eq!(h.fake.calls("POST", "/docs/doc1/acl/permissions").len(), 2);
    h.close().await;
}
