//! Regression: the defects of issue #12, each driven through rmcp over
//! stdio against the fake Coda, and the features that go past other Coda
//! servers (schema-aware and verified writes, dry runs, the doc schema
//! resource, the `--docs` allow-list, URLs for page/table/row arguments).
//!
//! Each regression test failed on the code before its fix; run a test
//! against another build with `CODA_MCP_BIN=/path/to/coda-mcp`.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_coda::{FakeCoda, TOKEN};
use harness::{TIMEOUT, command, connect, start, text};
use rmcp::model::{
    CallToolRequestParams, ProgressNotificationParam, ProgressToken, ReadResourceRequestParams,
    RequestMetaObject,
};
use rmcp::service::NotificationContext;
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

// ----- 1. an accepted write is always reported as accepted -----

/// Symptom: with `wait: true`, a failure while polling `/mutationStatus`
/// turned an accepted write into `isError` and dropped its ids; a model
/// then resent it.
#[tokio::test]
async fn an_accepted_write_stays_accepted_when_its_status_cannot_be_read() {
    let h = start(&[]).await;
    h.fake.fail_next("GET", "/mutationStatus/", 500, 50, None);
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "values": {"Status": "Done"}, "wait": true}),
        )
        .await;
    assert!(v["requestId"].is_string(), "{v}");
    assert_eq!(v["mutation"]["completed"], false, "{v}");
    assert!(
        v["mutation"]["error"]
            .as_str()
            .unwrap()
            .contains("accepted"),
        "{v}"
    );
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "New"}], "wait": true}),
        )
        .await;
    assert_eq!(v["addedRowIds"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["requestIds"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["mutation"]["error"].is_string(), "{v}");
    assert_eq!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .len(),
        1
    );
    h.close().await;
}

// ----- 2. keyed bulk updates need their key values -----

/// Symptom: `keyColumns: ["Name"]` with an update that named a row but
/// carried no Name inserted a new row, reported success, and left the
/// named row unchanged.
#[tokio::test]
async fn a_keyed_bulk_update_without_its_key_values_is_refused() {
    let h = start(&[]).await;
    let e = h
        .fails(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "keyColumns": ["Name"], "updates": [{"rowIdOrName": "i-1", "values": {"Status": "Blocked"}}]}),
        )
        .await;
    assert!(e.contains("updates[0].values") && e.contains("Name"), "{e}");
    assert!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .is_empty()
    );
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    assert_eq!(h.fake.row_values("i-1").unwrap()["c-status"], "Done");
    h.close().await;
}

// ----- 3. replay safety is per request, not per method -----

/// Symptom: a page append answered 502 after Coda applied it was resent,
/// and the content appeared twice.
#[tokio::test]
async fn an_append_answered_502_after_it_applied_is_not_sent_again() {
    let h = start(&[]).await;
    h.fake
        .fail_next_after_applying("PUT", "/pages/canvas-overview", 502, 1);
    let e = h
        .fails(
            "coda_append_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "Appended once"}),
        )
        .await;
    assert!(e.contains("may have been applied"), "{e}");
    assert_eq!(
        h.fake
            .calls("PUT", "/docs/doc1/pages/canvas-overview")
            .len(),
        1
    );
    let lines = h.fake.page_lines("canvas-overview");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with("Appended once"))
            .count(),
        1,
        "{lines:?}"
    );
    h.close().await;
}

/// Symptom: a content delete answered 502 after it applied was replayed
/// and reported a false failure.
#[tokio::test]
async fn a_content_delete_answered_502_after_it_applied_is_not_replayed() {
    let h = start(&[]).await;
    h.fake
        .fail_next_after_applying("DELETE", "/pages/canvas-overview/content", 502, 1);
    let e = h
        .fails(
            "coda_delete_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "elementIds": ["cl-1"]}),
        )
        .await;
    assert!(e.contains("may have been applied"), "{e}");
    assert_eq!(
        h.fake
            .calls("DELETE", "/docs/doc1/pages/canvas-overview/content")
            .len(),
        1
    );
    h.close().await;
}

// ----- 4. `.` and `..` never reach a URL -----

/// Symptom: `coda_get_table(".")` returned the table list as one table and
/// `coda_delete_row("..")` sent `DELETE …/rows` (the bulk delete).
#[tokio::test]
async fn dot_segments_are_refused_in_every_spelling() {
    let h = start(&[]).await;
    for bad in [".", "..", "%2e", "%2E%2e"] {
        let e = h
            .fails(
                "coda_get_table",
                json!({"docId": "doc1", "tableIdOrName": bad}),
            )
            .await;
        assert!(e.contains("cannot name a Coda object"), "{bad}: {e}");
        let e = h
            .fails(
                "coda_delete_row",
                json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": bad}),
            )
            .await;
        assert!(e.contains("cannot name a Coda object"), "{bad}: {e}");
    }
    assert!(
        h.fake.requests().iter().all(|r| r.method != "DELETE"),
        "a DELETE reached Coda"
    );
    assert!(h.fake.calls("GET", "/docs/doc1/tables").is_empty());
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    h.close().await;
}

// ----- 5. results fit a context window -----

/// Symptom: `fetchAll` returned up to 10,000 rows in one result, twice
/// (text and structuredContent).
#[tokio::test]
async fn a_large_list_stops_at_the_byte_budget_and_continues_exactly() {
    let h = start(&["--max-result-bytes", "8000"]).await;
    h.fake.add_rows(300);
    h.fake.set_max_page(40);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let mut args =
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "limit": 40});
        if let Some(t) = &token {
            args["pageToken"] = json!(t);
        }
        let r = h.call("coda_list_rows", args).await;
        assert_ne!(r.is_error, Some(true), "{}", text(&r));
        let v = r.structured_content.clone().unwrap();
        assert!(
            v.to_string().len() <= 8000,
            "result of {} bytes",
            v.to_string().len()
        );
        let t = text(&r);
        assert!(
            t.len() < 1000 && !t.contains("\"values\""),
            "text is a copy: {t}"
        );
        for it in v["items"].as_array().unwrap() {
            assert_eq!(
                it.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["id", "name", "values"],
                "rows are slim by default"
            );
            seen.push(it["id"].as_str().unwrap().to_owned());
        }
        match v["nextPageToken"].as_str() {
            Some(t) => {
                assert_eq!(v["truncated"], true, "{v}");
                token = Some(t.to_owned());
            }
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 303, "every row once");
    assert_eq!(unique.len(), 303);
    h.close().await;
}

/// Symptom: page reads had no default `maxChars`; columns carried every
/// select option; rows had no projection.
#[tokio::test]
async fn page_reads_columns_and_rows_are_bounded_by_default() {
    let h = start(&[]).await;
    let long = "word ".repeat(6000);
    let v = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Long", "content": long}),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let v = h
        .ok(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": id, "format": "plainText"}),
        )
        .await;
    assert_eq!(v["content"].as_str().unwrap().chars().count(), 20_000);
    assert_eq!(v["truncated"], true);
    let v = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    // Slim columns keep Coda's keys (select lists are cut: tests/dropin.rs).
    assert_eq!(v["items"][0]["format"]["type"], "text", "{v}");
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "columns": ["c-name"]}),
        )
        .await;
    assert_eq!(v["items"][0]["values"], json!({"c-name": "Design"}));
    h.close().await;
}

// ----- 6. progress, and a deadline under the clients' timeout -----

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().push(params);
    }
}

/// Symptom: no `notifications/progress` during waits, so a client could
/// not tell a slow write from a dead server.
#[tokio::test]
async fn a_waiting_write_sends_progress_to_a_client_that_asks() {
    let fake = FakeCoda::start().await;
    fake.set_mutation_plan(fake_coda::MutationPlan {
        not_found_polls: 0,
        pending_polls: 3,
    });
    let cmd = command(
        &fake,
        &[
            "--poll-interval-ms",
            "20",
            "--retry-base-ms",
            "20",
            "--no-rate-limit",
        ],
    );
    let rec = Recorder::default();
    let client = tokio::time::timeout(
        TIMEOUT,
        rec.clone().serve(TokioChildProcess::new(cmd).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let args = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "values": {"Status": "Done"}, "wait": true});
    let mut params = CallToolRequestParams::new("coda_update_row")
        .with_arguments(args.as_object().unwrap().clone());
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        rmcp::model::NumberOrString::String("p-1".into()),
    )));
    let r = tokio::time::timeout(TIMEOUT, client.call_tool(params))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    assert_eq!(r.structured_content.unwrap()["mutation"]["completed"], true);
    // Notifications may trail the response by a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = rec.0.lock().unwrap().clone();
    assert!(got.len() >= 3, "{got:?}");
    assert!(got.windows(2).all(|w| w[1].progress > w[0].progress));
    let _ = client.cancel().await;
}

// ----- 8. drop-in gaps -----

/// Symptom: stray arguments failed tools without parameters; the original
/// ignored them.
#[tokio::test]
async fn stray_arguments_are_ignored_by_tools_without_parameters() {
    let h = start(&[]).await;
    let v = h.ok("coda_whoami", json!({"verbose": true})).await;
    assert_eq!(v["loginId"], "ada@example.com");
    h.close().await;
}

// ----- 9. start-up with Coda unreachable -----

/// Symptom: with Coda unreachable, start-up waited 90 s and then exited
/// saying the token was rejected.
#[tokio::test]
async fn an_unreachable_coda_at_start_up_is_a_warning_not_an_exit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there any more.
    let mut cmd = tokio::process::Command::new(harness::bin());
    cmd.arg("--api-base-url")
        .arg(format!("http://127.0.0.1:{port}/apis/v1"))
        .args(["--retry-base-ms", "20"])
        .env("CODA_API_TOKEN", TOKEN)
        .env("CODA_MCP_LOG", "warn")
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let client = tokio::time::timeout(
        Duration::from_secs(25),
        ().serve(TokioChildProcess::new(cmd).unwrap()),
    )
    .await
    .expect("start-up took longer than 25 s")
    .expect("coda-mcp exited instead of serving");
    assert!(started.elapsed() < Duration::from_secs(20));
    let tools = client.list_all_tools().await.unwrap();
    assert!(!tools.is_empty());
    let _ = client.cancel().await;
}

// ----- 10. smaller defects -----

/// Symptom: an unknown flag exited 1 (the docs promise 64); no --version.
#[tokio::test]
async fn an_unknown_flag_exits_64_and_version_prints() {
    let out = tokio::process::Command::new(harness::bin())
        .arg("--no-such-flag")
        .env("CODA_API_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = tokio::process::Command::new(harness::bin())
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("coda-mcp "));
}

/// A value for an advertised argument, from its schema.
fn sample(name: &str, schema: &Value) -> Value {
    if let Some(e) = schema["enum"].as_array() {
        return e[0].clone();
    }
    match schema["type"].as_str() {
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([sample(name, &schema["items"])]),
        _ if name.ends_with("Date") => json!("2026-01-01"),
        _ if name == "docId" => json!("doc1"),
        _ if name == "workspaceId" => json!("ws-1"),
        _ => json!("x"),
    }
}

/// Symptom: the analytics summary tools advertised `query`, `scale`,
/// `orderBy` and `direction`, which their endpoints do not take; the Pack
/// summary did not take `packIds`; the formula analytics advertised
/// `workspaceId`, `isPublished` and `query` and lacked `packFormulaNames`
/// and `packFormulaTypes`; the member list advertised a `limit` Coda does
/// not take. Every advertised argument must be sent, and every argument
/// sent must be one the endpoint declares (the fake checks each query
/// against the spec).
#[tokio::test]
async fn admin_tools_advertise_only_arguments_they_send_and_coda_takes() {
    let h = start(&["--toolsets", "admin"]).await;
    let tools = h.tools().await;
    let client_side = ["fetchAll", "maxItems", "pageToken", "nextPageToken"];
    let mut checked = 0;
    let mut problems = Vec::new();
    for t in tools
        .iter()
        .filter(|t| t.name.contains("analytics") || t.name.starts_with("coda_list_workspace"))
    {
        let props = t.input_schema.get("properties").and_then(Value::as_object);
        let mut args = json!({});
        for (k, schema) in props.into_iter().flatten() {
            if !client_side.contains(&k.as_str()) {
                args[k] = sample(k, schema);
            }
        }
        let before = h.fake.requests().len();
        h.ok(&t.name, args.clone()).await;
        let sent = h.fake.requests();
        let req = sent[before..].last().unwrap();
        for (k, v) in args.as_object().unwrap() {
            let in_path = v
                .as_str()
                .map(str::to_owned)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
                .is_some_and(|s| req.path.split('/').any(|seg| seg == s));
            if req.q(k).is_none() && !in_path {
                problems.push(format!(
                    "{}: `{k}` is advertised but not sent ({:?})",
                    t.name, req.query
                ));
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 9, "7 analytics tools and 2 workspace lists");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// Symptom: `CODA_API_KEY` was not read.
#[tokio::test]
async fn coda_api_key_is_accepted() {
    let fake = FakeCoda::start().await;
    let mut cmd = command(&fake, &["--skip-token-check"]);
    cmd.env_remove("CODA_API_TOKEN").env("CODA_API_KEY", TOKEN);
    let client = tokio::time::timeout(TIMEOUT, ().serve(TokioChildProcess::new(cmd).unwrap()))
        .await
        .unwrap()
        .expect("coda-mcp did not start with CODA_API_KEY");
    let _ = client.cancel().await;
}

/// Symptom: `waitSeconds` shorter than the poll interval never polled.
#[tokio::test]
async fn a_short_wait_still_polls_once() {
    let h = start(&["--poll-interval-ms", "3000"]).await;
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "values": {"Status": "Done"}}),
        )
        .await;
    let v = h
        .ok(
            "coda_get_mutation_status",
            json!({"requestId": v["requestId"], "waitSeconds": 1}),
        )
        .await;
    assert_eq!(v["completed"], true, "{v}");
    h.close().await;
}

/// Symptom: `coda_peek_page` returned more than `numLines` lines.
#[tokio::test]
async fn peek_returns_at_most_num_lines() {
    let h = start(&[]).await;
    h.fake.insert_line("canvas-overview", "one\ntwo\nthree");
    let v = h
        .ok(
            "coda_peek_page",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "numLines": 2}),
        )
        .await;
    assert_eq!(v["content"].as_str().unwrap().lines().count(), 2, "{v}");
    assert_eq!(v["truncated"], true);
    h.close().await;
}

/// Symptom: a column *named* like an id (`c-x`) was sent bare, as an id.
#[tokio::test]
async fn a_column_named_like_an_id_is_quoted_as_a_name() {
    let h = start(&[]).await;
    h.fake.add_projects_table();
    let v = h
        .ok(
            "coda_list_rows",
            json!({"docId": "doc2", "tableIdOrName": "grid-projects", "filter": {"column": "c-x", "value": "w"}}),
        )
        .await;
    assert_eq!(v["count"], 1, "{v}");
    let r = &h.fake.calls("GET", "/docs/doc2/tables/grid-projects/rows")[0];
    assert_eq!(r.q("query"), Some(r#""c-x":"w""#));
    h.close().await;
}

// ----- beyond: schema-aware, verified and dry-run writes -----

#[tokio::test]
async fn writes_that_cannot_fit_the_columns_are_refused_before_sending() {
    let h = start(&[]).await;
    h.fake.add_projects_table();
    let base = json!({"docId": "doc2", "tableIdOrName": "grid-projects"});
    let cases = [
        (json!({"Stgae": "Plan"}), "did you mean \"Stage\""),
        (json!({"Score": 3}), "formula column"),
        (json!({"Stage": "Blocked"}), "not one of its options"),
        (json!({"Lead": "Ada"}), "email address"),
        (json!({"Due": "soon"}), "ISO 8601"),
        (json!({"Budget": "lots"}), "give a number"),
    ];
    for (row, why) in cases {
        let mut args = base.clone();
        args["rows"] = json!([row]);
        let e = h.fails("coda_create_rows", args).await;
        assert!(e.contains(why), "{row}: {e}");
    }
    assert!(
        h.fake
            .calls("POST", "/docs/doc2/tables/grid-projects/rows")
            .is_empty()
    );
    let mut args = base.clone();
    args["rows"] = json!([{"Name": "Gemini", "Stage": "build", "Lead": "bo@example.com", "Due": "2026-04-01", "Budget": "$1,200"}]);
    h.ok("coda_create_rows", args).await;
    h.close().await;
}

#[tokio::test]
async fn verified_writes_reread_what_they_wrote() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-2", "values": {"Status": "Shipped", "Points": "8"}, "verify": true}),
        )
        .await;
    assert_eq!(v["mutation"]["completed"], true, "{v}");
    assert_eq!(v["verification"]["rowsChecked"], 1, "{v}");
    assert_eq!(v["verification"]["matches"], true, "{v}");
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "A"}, {"Name": "B"}], "verify": true}),
        )
        .await;
    assert_eq!(v["verification"]["rowsChecked"], 2, "{v}");
    assert_eq!(v["verification"]["matches"], true, "{v}");
    let v = h
        .ok(
            "coda_append_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "content": "## Tuesday\n- Demo went well", "verify": true}),
        )
        .await;
    assert_eq!(v["verification"]["matches"], true, "{v}");
    h.close().await;
}

#[tokio::test]
async fn dry_runs_show_what_would_change_and_change_nothing() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_delete_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "filter": {"column": "Status", "value": "Done"}, "dryRun": true}),
        )
        .await;
    assert_eq!(
        v["wouldDelete"],
        json!([{"id": "i-1", "name": "Design"}]),
        "{v}"
    );
    assert_eq!(h.fake.row_count("grid-tasks"), 3);
    let v = h
        .ok(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "# New", "dryRun": true}),
        )
        .await;
    assert!(
        v["preview"]["current"]
            .as_str()
            .unwrap()
            .contains("Launch is on Friday."),
        "{v}"
    );
    assert!(
        h.fake
            .calls("PUT", "/docs/doc1/pages/canvas-overview")
            .is_empty()
    );
    h.close().await;
}

#[tokio::test]
async fn the_docs_allow_list_is_enforced_on_every_tool() {
    let h = start(&["--docs", "doc1"]).await;
    let e = h.fails("coda_get_document", json!({"docId": "doc2"})).await;
    assert!(e.contains("allow-list"), "{e}");
    let e = h
        .fails(
            "coda_list_pages",
            json!({"docId": "https://coda.io/d/Wiki_ddoc2"}),
        )
        .await;
    assert!(e.contains("allow-list"), "{e}");
    assert!(h.fake.requests().iter().all(|r| !r.path.contains("doc2")));
    let v = h.ok("coda_list_documents", json!({})).await;
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["items"][0]["id"], "doc1");
    h.ok("coda_get_document", json!({"docId": "doc1"})).await;
    h.close().await;
}

#[tokio::test]
async fn page_table_and_row_arguments_take_browser_urls() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_get_row",
            json!({"docId": "doc1", "tableIdOrName": "https://coda.io/d/_ddoc1#_tugrid-tasks", "rowIdOrName": "https://coda.io/d/_ddoc1#_tugrid-tasks/_rui-2"}),
        )
        .await;
    assert_eq!(v["id"], "i-2", "{v}");
    let v = h
        .ok(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "https://coda.io/d/_ddoc1/_sucanvas-notes"}),
        )
        .await;
    assert_eq!(v["id"], "canvas-notes", "{v}");
    let e = h
        .fails(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "https://coda.io/d/_ddoc1#_tugrid-tasks"}),
        )
        .await;
    assert!(e.contains("not a page"), "{e}");
    h.close().await;
}

#[tokio::test]
async fn the_doc_schema_resource_and_the_rows_guide_are_served() {
    let h = start(&[]).await;
    let r = tokio::time::timeout(
        TIMEOUT,
        h.client
            .read_resource(ReadResourceRequestParams::new("coda://docs/doc1/schema")),
    )
    .await
    .unwrap()
    .unwrap();
    let body = match &r.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    let tasks = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "grid-tasks")
        .unwrap();
    let names: Vec<&str> = tasks["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Status", "Points", "Done", "Notify"]);
    assert!(v["pages"].as_array().unwrap().len() >= 3);
    let t = h.client.list_all_resource_templates().await.unwrap();
    assert_eq!(t[0].uri_template, "coda://docs/{docId}/schema");
    let p = h
        .client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("coda_rows_guide"))
        .await
        .unwrap();
    assert!(format!("{:?}", p.messages[0]).contains("keyColumns"));
    h.close().await;
}

/// Keep the fake honest for everything above.
#[tokio::test]
async fn new_fake_behaviour_matches_the_spec() {
    let h = connect(FakeCoda::start().await, &[]).await;
    h.fake.add_projects_table();
    h.ok(
        "coda_list_columns",
        json!({"docId": "doc2", "tableIdOrName": "grid-projects", "full": true}),
    )
    .await;
    h.ok("coda_get_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "https://coda.io/d/_ddoc1#_tugrid-tasks/_rui-1"}))
        .await;
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// A measurement, not a check: the size of the biggest results at default
/// settings (structuredContent plus text content, in bytes), printed for
/// the notes. Run it against any build:
/// `CODA_MCP_BIN=… cargo test -p coda-mcp --test issue12 measure -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_result_sizes_at_default_settings() {
    let h = start(&[]).await;
    h.fake.add_rows(3000);
    h.fake.set_max_page(500);
    let size = |r: &rmcp::model::CallToolResult| {
        r.structured_content
            .as_ref()
            .map(|v| v.to_string().len())
            .unwrap_or(0)
            + text(r).len()
    };
    let r = h
        .call(
            "coda_list_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true, "maxItems": 10000, "limit": 500}),
        )
        .await;
    println!("list_rows fetchAll over 3003 rows: {} bytes", size(&r));
    let long = "word ".repeat(40_000);
    let v = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Long", "content": long}),
        )
        .await;
    let r = h
        .call(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": v["id"], "format": "plainText"}),
        )
        .await;
    println!("get_page_content of a 200000-char page: {} bytes", size(&r));
    h.close().await;
}
