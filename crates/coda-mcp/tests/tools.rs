//! Account, docs, folders, tables, columns, formulas, controls, sharing,
//! automation and admin tools through a real MCP client (rmcp over stdio)
//! against the fake Coda: the happy path and at least one failure each, with
//! the requests Coda received and every response checked against the spec.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use harness::start;
use serde_json::json;

#[tokio::test]
async fn whoami_sends_the_bearer_token_and_returns_the_user() {
    let h = start(&[]).await;
    let v = h.ok("coda_whoami", json!({})).await;
    assert_eq!(v["loginId"], "ada@example.com");
    let calls = h.fake.calls("GET", "/whoami");
    // One at start (token check), one for the tool.
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(
            c.authorization.as_deref(),
            Some(format!("Bearer {}", fake_coda::TOKEN).as_str())
        );
    }
    h.fake.fail_next("GET", "/whoami", 401, 1, None);
    let e = h.fails("coda_whoami", json!({})).await;
    assert!(e.contains("401") && !e.contains(fake_coda::TOKEN), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn resolve_link_returns_the_resource_and_reports_codas_400() {
    let h = start(&[]).await;
    let v = h.ok("coda_resolve_link", json!({"url": "https://coda.io/d/Tracker_ddoc1/Overview_su1", "degradeGracefully": true})).await;
    // The most specific object the URL names: page `1` of doc1.
    assert_eq!(v["resource"]["type"], "page");
    assert_eq!(v["resource"]["id"], "1");
    let r = &h.fake.calls("GET", "/resolveBrowserLink")[0];
    assert_eq!(
        r.q("url"),
        Some("https://coda.io/d/Tracker_ddoc1/Overview_su1")
    );
    assert_eq!(r.q("degradeGracefully"), Some("true"));
    let e = h
        .fails("coda_resolve_link", json!({"url": "https://example.com/x"}))
        .await;
    assert!(e.contains("400") && e.contains("not a Coda URL"), "{e}");
    let e = h
        .fails("coda_resolve_link", json!({"url": "not a url"}))
        .await;
    assert!(e.contains("`url`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn mutation_status_reports_completion_and_unknown_ids_as_pending() {
    let h = start(&[]).await;
    let w = h.ok("coda_update_row", json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "Done"}})).await;
    let rid = w["requestId"].as_str().unwrap().to_owned();
    let v = h
        .ok("coda_get_mutation_status", json!({"requestId": rid}))
        .await;
    assert_eq!(v["completed"], true);
    let v = h
        .ok(
            "coda_get_mutation_status",
            json!({"requestId": "mut-unknown"}),
        )
        .await;
    assert_eq!(v["completed"], false);
    assert_eq!(v["pending"], true);
    let e = h.fails("coda_get_mutation_status", json!({})).await;
    assert!(e.contains("`requestId`") && e.contains("required"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn rate_limit_status_is_local_and_lists_every_bucket() {
    let h = start(&[]).await;
    let before = h.fake.requests().len();
    let v = h.ok("coda_rate_limit_status", json!({})).await;
    assert_eq!(v["buckets"].as_array().unwrap().len(), 5);
    assert_eq!(h.fake.requests().len(), before, "must not call Coda");
    // Stray arguments are ignored, as coda-enhanced did.
    h.ok("coda_rate_limit_status", json!({"x": 1})).await;
    h.close().await;
}

#[tokio::test]
async fn list_documents_sends_filters_and_accepts_no_results() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_list_documents",
            json!({"query": "tracker", "isOwner": true, "folderId": "fl-1", "limit": 10}),
        )
        .await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["items"][0]["id"], "doc1");
    let r = &h.fake.calls("GET", "/docs")[0];
    assert_eq!(r.q("query"), Some("tracker"));
    assert_eq!(r.q("isOwner"), Some("true"));
    assert_eq!(r.q("folderId"), Some("fl-1"));
    assert_eq!(r.q("limit"), Some("10"));
    let e = h.fails("coda_list_documents", json!({"limit": 0})).await;
    assert!(e.contains("`limit`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn get_document_accepts_a_browser_url_and_reports_404() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_get_document",
            json!({"docId": "https://coda.io/d/Project-Tracker_ddoc1/Overview_suX"}),
        )
        .await;
    assert_eq!(v["name"], "Project Tracker");
    assert_eq!(h.fake.calls("GET", "/docs/doc1").len(), 1);
    // The snake_case spelling other Coda servers used is accepted too.
    assert_eq!(
        h.ok("coda_get_document", json!({"doc_id": "doc1"})).await["id"],
        "doc1"
    );
    let e = h.fails("coda_get_document", json!({"docId": "nope"})).await;
    assert!(e.contains("404") && e.contains("Doc not found"), "{e}");
    assert!(!e.contains(fake_coda::TOKEN));
    let e = h
        .fails(
            "coda_get_document",
            json!({"docId": "https://coda.io/workspaces"}),
        )
        .await;
    assert!(e.contains("`docId`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn create_document_posts_title_folder_and_initial_page() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_create_document",
            json!({"title": "Launch", "folderId": "fl-1", "timezone": "Europe/Paris", "initialPage": {"name": "Start", "content": "# Hi"}}),
        )
        .await;
    assert_eq!(v["name"], "Launch");
    let body = h.fake.calls("POST", "/docs")[0].body.clone().unwrap();
    assert_eq!(body["folderId"], "fl-1");
    assert_eq!(
        body["initialPage"]["pageContent"]["canvasContent"]["content"],
        "# Hi"
    );
    let e = h.fails("coda_create_document", json!({"title": ""})).await;
    assert!(e.contains("`title`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn update_document_patches_title_and_needs_a_change() {
    let h = start(&[]).await;
    h.ok(
        "coda_update_document",
        json!({"docId": "doc1", "title": "Renamed", "iconName": "rocket"}),
    )
    .await;
    let body = h.fake.calls("PATCH", "/docs/doc1")[0].body.clone().unwrap();
    assert_eq!(body, json!({"title": "Renamed", "iconName": "rocket"}));
    let e = h
        .fails("coda_update_document", json!({"docId": "doc1"}))
        .await;
    assert!(e.contains("iconName"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn delete_document_requires_confirm() {
    let h = start(&[]).await;
    let e = h
        .fails("coda_delete_document", json!({"docId": "doc2"}))
        .await;
    assert!(e.contains("`confirm`"), "{e}");
    assert!(h.fake.calls("DELETE", "/docs/doc2").is_empty());
    h.ok(
        "coda_delete_document",
        json!({"docId": "doc2", "confirm": true}),
    )
    .await;
    assert_eq!(h.fake.calls("DELETE", "/docs/doc2").len(), 1);
    let e = h
        .fails(
            "coda_delete_document",
            json!({"docId": "doc2", "confirm": true}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn document_stats_count_every_page_of_every_list() {
    let h = start(&[]).await;
    h.fake.set_max_page(2);
    h.fake.add_pages(5);
    let v = h
        .ok("coda_get_document_stats", json!({"docId": "doc1"}))
        .await;
    assert_eq!(v["counts"]["pages"], 8, "{v}");
    assert_eq!(v["counts"]["tables"], 1);
    assert_eq!(v["counts"]["views"], 1);
    assert_eq!(v["counts"]["formulas"], 2);
    assert_eq!(v["counts"]["controls"], 1);
    assert_eq!(v["breakdown"]["pageNames"].as_array().unwrap().len(), 8);
    assert!(
        h.fake.calls("GET", "/docs/doc1/pages").len() >= 4,
        "pages must be followed"
    );
    let e = h
        .fails("coda_get_document_stats", json!({"docId": "missing"}))
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn folder_tools_create_get_update_list_and_delete() {
    let h = start(&[]).await;
    let f = h
        .ok(
            "coda_create_folder",
            json!({"name": "Q3", "workspaceId": "ws-1", "description": "plans"}),
        )
        .await;
    let id = f["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.ok("coda_get_folder", json!({"folderId": id})).await["name"],
        "Q3"
    );
    let u = h
        .ok("coda_update_folder", json!({"folderId": id, "name": "Q4"}))
        .await;
    assert_eq!(u["name"], "Q4");
    let l = h
        .ok("coda_list_folders", json!({"workspaceId": "ws-1"}))
        .await;
    assert_eq!(l["count"], 2);
    assert_eq!(
        h.fake.calls("GET", "/folders")[0].q("workspaceId"),
        Some("ws-1")
    );
    h.ok("coda_delete_folder", json!({"folderId": id})).await;
    let e = h.fails("coda_get_folder", json!({"folderId": id})).await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails("coda_update_folder", json!({"folderId": "fl-1"}))
        .await;
    assert!(e.contains("`name`"), "{e}");
    let e = h
        .fails("coda_delete_folder", json!({"folderId": "fl-nope"}))
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h.fails("coda_create_folder", json!({"name": "x"})).await;
    assert!(e.contains("`workspaceId`"), "{e}");
    let e = h
        .fails("coda_list_folders", json!({"isStarred": "yes"}))
        .await;
    assert!(e.contains("`isStarred`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn table_tools_list_get_search_and_summarise() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_list_tables",
            json!({"docId": "doc1", "tableTypes": ["table"], "sortBy": "name"}),
        )
        .await;
    assert_eq!(v["count"], 1);
    let r = &h.fake.calls("GET", "/docs/doc1/tables")[0];
    assert_eq!(r.q("tableTypes"), Some("table"));
    assert_eq!(r.q("sortBy"), Some("name"));
    assert_eq!(
        h.ok(
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": "Tasks"})
        )
        .await["rowCount"],
        3
    );
    let s = h
        .ok(
            "coda_search_tables",
            json!({"docId": "doc1", "query": "TASK"}),
        )
        .await;
    assert_eq!(s["items"].as_array().unwrap().len(), 2);
    assert_eq!(s["totalFound"], 2);
    assert_eq!(s["searchQuery"], "TASK");
    assert_eq!(s["tablesSearched"], 2);
    let sum = h
        .ok(
            "coda_get_table_summary",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks"}),
        )
        .await;
    assert_eq!(sum["stats"]["totalColumns"], 5);
    assert_eq!(sum["stats"]["calculatedColumns"], 1);
    assert_eq!(sum["stats"]["displayColumn"], "Name");
    assert_eq!(sum["sampleData"].as_array().unwrap().len(), 3);
    assert_eq!(sum["sampleData"][0]["values"]["Name"], "```Design```");
    let e = h
        .fails(
            "coda_get_table",
            json!({"docId": "doc1", "tableIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("404") && e.contains("Table not found"), "{e}");
    let e = h
        .fails(
            "coda_list_tables",
            json!({"docId": "doc1", "tableTypes": ["chart"]}),
        )
        .await;
    assert!(e.contains("`tableTypes"), "{e}");
    let e = h
        .fails("coda_search_tables", json!({"docId": "doc1", "query": " "}))
        .await;
    assert!(e.contains("`query`"), "{e}");
    let e = h
        .fails(
            "coda_get_table_summary",
            json!({"docId": "doc1", "tableIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn column_tools_list_with_pagination_and_get_by_name() {
    let h = start(&[]).await;
    h.fake.set_max_page(2);
    let v = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "visibleOnly": true}),
        )
        .await;
    assert_eq!(v["count"], 2);
    let tok = v["nextPageToken"].as_str().unwrap().to_owned();
    let v2 = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "visibleOnly": true, "pageToken": tok}),
        )
        .await;
    assert_eq!(v2["items"][0]["id"], "c-points");
    let all = h
        .ok(
            "coda_list_columns",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "fetchAll": true}),
        )
        .await;
    assert_eq!(all["count"], 5);
    assert!(all.get("nextPageToken").is_none());
    let c = h
        .ok(
            "coda_get_column",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "columnIdOrName": "Done"}),
        )
        .await;
    assert_eq!(c["id"], "c-done");
    assert_eq!(c["calculated"], true);
    let e = h
        .fails(
            "coda_get_column",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "columnIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h.fails("coda_list_columns", json!({"docId": "doc1"})).await;
    assert!(e.contains("`tableIdOrName`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn formula_and_control_tools_list_and_get() {
    let h = start(&[]).await;
    let f = h
        .ok(
            "coda_list_formulas",
            json!({"docId": "doc1", "sortBy": "name"}),
        )
        .await;
    assert_eq!(f["count"], 2);
    assert_eq!(
        h.fake.calls("GET", "/docs/doc1/formulas")[0].q("sortBy"),
        Some("name")
    );
    assert_eq!(
        h.ok(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "TotalPoints"})
        )
        .await["value"],
        10
    );
    let c = h.ok("coda_list_controls", json!({"docId": "doc1"})).await;
    assert_eq!(c["items"][0]["id"], "ctrl-threshold");
    assert_eq!(
        h.ok(
            "coda_get_control",
            json!({"docId": "doc1", "controlIdOrName": "ctrl-threshold"})
        )
        .await["value"],
        7
    );
    let e = h
        .fails(
            "coda_get_formula",
            json!({"docId": "doc1", "formulaIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails(
            "coda_get_control",
            json!({"docId": "doc1", "controlIdOrName": "Nope"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails(
            "coda_list_formulas",
            json!({"docId": "doc1", "sortBy": "date"}),
        )
        .await;
    assert!(e.contains("`sortBy`"), "{e}");
    let e = h.fails("coda_list_controls", json!({"docId": "zzz"})).await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn sharing_tools_read_and_change_permissions_settings_and_publishing() {
    let h = start(&[]).await;
    let m = h
        .ok("coda_get_sharing_metadata", json!({"docId": "doc1"}))
        .await;
    assert_eq!(m["canShare"], true);
    let p = h
        .ok("coda_list_permissions", json!({"docId": "doc1"}))
        .await;
    assert_eq!(p["count"], 1);
    h.ok("coda_add_permission", json!({"docId": "doc1", "access": "readonly", "principal": {"type": "email", "email": "bob@example.com"}, "suppressEmail": true})).await;
    let body = h.fake.calls("POST", "/docs/doc1/acl/permissions")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["suppressEmail"], true);
    assert_eq!(body["access"], "readonly");
    let s = h
        .ok(
            "coda_search_principals",
            json!({"docId": "doc1", "query": "bob"}),
        )
        .await;
    assert_eq!(s["users"][0]["loginId"], "bob@example.com");
    h.ok(
        "coda_delete_permission",
        json!({"docId": "doc1", "permissionId": "perm-1"}),
    )
    .await;
    let a = h
        .ok("coda_get_acl_settings", json!({"docId": "doc1"}))
        .await;
    assert_eq!(a["allowCopying"], true);
    let a = h
        .ok(
            "coda_update_acl_settings",
            json!({"docId": "doc1", "allowCopying": false}),
        )
        .await;
    assert_eq!(a["allowCopying"], false);
    let cats = h.ok("coda_list_categories", json!({})).await;
    assert_eq!(cats["items"].as_array().unwrap().len(), 1);
    let pub_ = h.ok("coda_publish_document", json!({"docId": "doc1", "slug": "tracker", "mode": "play", "discoverable": false, "wait": true})).await;
    assert_eq!(pub_["mutation"]["completed"], true);
    assert_eq!(
        h.fake.calls("PUT", "/docs/doc1/publish")[0]
            .body
            .clone()
            .unwrap()["mode"],
        "play"
    );
    h.ok("coda_unpublish_document", json!({"docId": "doc1"}))
        .await;
    // Failures.
    let e = h
        .fails(
            "coda_add_permission",
            json!({"docId": "doc1", "access": "owner", "principal": {"type": "anyone"}}),
        )
        .await;
    assert!(e.contains("`access`"), "{e}");
    let e = h
        .fails(
            "coda_add_permission",
            json!({"docId": "doc1", "access": "write", "principal": {}}),
        )
        .await;
    assert!(e.contains("`principal.type`"), "{e}");
    let e = h.fails("coda_add_permission", json!({"docId": "doc1", "access": "write", "principal": {"type": "email", "email": "nope"}})).await;
    assert!(e.contains("400"), "{e}");
    let e = h
        .fails(
            "coda_delete_permission",
            json!({"docId": "doc1", "permissionId": "perm-x"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails("coda_update_acl_settings", json!({"docId": "doc1"}))
        .await;
    assert!(e.contains("setting"), "{e}");
    let e = h
        .fails(
            "coda_search_principals",
            json!({"docId": "doc1", "query": ""}),
        )
        .await;
    assert!(e.contains("`query`"), "{e}");
    let e = h
        .fails("coda_get_sharing_metadata", json!({"docId": "missing"}))
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails("coda_list_permissions", json!({"docId": "missing"}))
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails("coda_get_acl_settings", json!({"docId": "missing"}))
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails(
            "coda_publish_document",
            json!({"docId": "doc1", "mode": "admin"}),
        )
        .await;
    assert!(e.contains("`mode`"), "{e}");
    let e = h
        .fails("coda_unpublish_document", json!({"docId": "missing"}))
        .await;
    assert!(e.contains("404"), "{e}");
    h.ok("coda_list_categories", json!({"extra": true})).await;
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn trigger_automation_posts_the_payload_and_surfaces_422() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_trigger_automation",
            json!({"docId": "doc1", "ruleId": "grid-auto-1", "payload": {"event": "deploy"}}),
        )
        .await;
    assert!(v["requestId"].is_string());
    assert_eq!(
        h.fake
            .calls("POST", "/docs/doc1/hooks/automation/grid-auto-1")[0]
            .body,
        Some(json!({"event": "deploy"}))
    );
    let e = h
        .fails(
            "coda_trigger_automation",
            json!({"docId": "doc1", "ruleId": "rule-x"}),
        )
        .await;
    assert!(e.contains("422") && e.contains("webhook"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn admin_tools_are_opt_in_and_call_the_analytics_and_workspace_endpoints() {
    let h = start(&["--toolsets", "default,admin"]).await;
    let l = h
        .ok(
            "coda_list_doc_analytics",
            json!({"docIds": ["doc1", "doc2"], "sinceDate": "2026-01-01", "scale": "daily"}),
        )
        .await;
    // The fake answers one item per doc asked for.
    assert_eq!(l["count"], 2);
    let r = &h.fake.calls("GET", "/analytics/docs")[0];
    assert_eq!(r.q("docIds"), Some("doc1,doc2"));
    assert_eq!(r.q("sinceDate"), Some("2026-01-01"));
    h.ok(
        "coda_get_doc_analytics_summary",
        json!({"isPublished": true}),
    )
    .await;
    h.ok("coda_list_page_analytics", json!({"docId": "doc1"}))
        .await;
    h.ok("coda_list_pack_analytics", json!({"packIds": [1, 2]}))
        .await;
    assert_eq!(
        h.fake.calls("GET", "/analytics/packs")[0].q("packIds"),
        Some("1,2")
    );
    h.ok("coda_get_pack_analytics_summary", json!({})).await;
    h.ok("coda_list_pack_formula_analytics", json!({"packId": 7}))
        .await;
    h.ok("coda_get_analytics_updated", json!({})).await;
    h.ok(
        "coda_list_workspace_members",
        json!({"workspaceId": "ws-1", "includedRoles": ["Admin"]}),
    )
    .await;
    h.ok(
        "coda_list_workspace_role_activity",
        json!({"workspaceId": "ws-1"}),
    )
    .await;
    h.ok(
        "coda_change_user_role",
        json!({"workspaceId": "ws-1", "email": "bob@example.com", "newRole": "Editor"}),
    )
    .await;
    assert_eq!(
        h.fake.calls("POST", "/workspaces/ws-1/users/role")[0].body,
        Some(json!({"email": "bob@example.com", "newRole": "Editor"}))
    );
    // Failures.
    let e = h
        .fails(
            "coda_change_user_role",
            json!({"workspaceId": "ws-1", "email": "bob", "newRole": "Editor"}),
        )
        .await;
    assert!(e.contains("`email`"), "{e}");
    let e = h
        .fails(
            "coda_list_pack_formula_analytics",
            json!({"packId": "seven"}),
        )
        .await;
    assert!(e.contains("`packId`"), "{e}");
    let e = h
        .fails("coda_list_workspace_members", json!({"workspaceId": ""}))
        .await;
    assert!(e.contains("`workspaceId`"), "{e}");
    let e = h
        .fails("coda_list_workspace_role_activity", json!({}))
        .await;
    assert!(e.contains("`workspaceId`"), "{e}");
    let e = h
        .fails("coda_list_page_analytics", json!({"docId": ""}))
        .await;
    assert!(e.contains("`docId`"), "{e}");
    h.fake.fail_next("GET", "/analytics", 401, 4, None);
    for name in [
        "coda_list_doc_analytics",
        "coda_get_doc_analytics_summary",
        "coda_list_pack_analytics",
        "coda_get_pack_analytics_summary",
    ] {
        let e = h.fails(name, json!({})).await;
        assert!(e.contains("401"), "{name}: {e}");
    }
    // A stray argument is ignored.
    h.ok("coda_get_analytics_updated", json!({"since": "x"}))
        .await;
    h.fake.assert_responses_match_spec();
    h.close().await;
}
