//! Page tools through rmcp over stdio against the fake Coda, including the
//! export polling life cycle (early 404s, in-progress, failure, expired
//! download links, gzip bodies) and the plain-text path that avoids exports.

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use fake_coda::ExportPlan;
use harness::start;
use serde_json::json;

#[tokio::test]
async fn list_pages_pages_through_tokens_and_accepts_the_legacy_next_page_token_name() {
    let h = start(&[]).await;
    h.fake.set_max_page(2);
    let v = h
        .ok("coda_list_pages", json!({"docId": "doc1", "limit": 2}))
        .await;
    assert_eq!(v["count"], 2);
    let tok = v["nextPageToken"].as_str().unwrap().to_owned();
    // coda-enhanced called the parameter nextPageToken.
    let v2 = h
        .ok(
            "coda_list_pages",
            json!({"docId": "doc1", "nextPageToken": tok.clone()}),
        )
        .await;
    assert_eq!(v2["items"][0]["id"], "canvas-embed");
    let sent = h.fake.calls("GET", "/docs/doc1/pages");
    // Only Coda's token is sent: the one this server's wraps.
    assert_eq!(sent[1].query.len(), 1, "{:?}", sent[1].query);
    let (k, coda) = &sent[1].query[0];
    assert_eq!(k, "pageToken");
    assert!(tok.ends_with(&format!(".{coda}")), "{tok} / {coda}");
    let e = h.fails("coda_list_pages", json!({"docId": "nope"})).await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn get_page_returns_metadata_with_parent_and_children() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "Overview"}),
        )
        .await;
    assert_eq!(v["children"][0]["id"], "canvas-notes");
    let v = h
        .ok(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "canvas-notes"}),
        )
        .await;
    assert_eq!(v["parent"]["id"], "canvas-overview");
    let e = h
        .fails(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": "Missing"}),
        )
        .await;
    assert!(e.contains("404") && e.contains("Page not found"), "{e}");
    let e = h
        .fails(
            "coda_get_page",
            json!({"docId": "doc1", "pageIdOrName": ""}),
        )
        .await;
    assert!(e.contains("`pageIdOrName`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn create_page_sends_canvas_markdown_and_waits_for_the_mutation() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_create_page",
            json!({"docId": "doc1", "name": "Plan", "content": "# Goals\n- ship", "parentPageId": "canvas-overview", "subtitle": "Q3", "iconName": "star", "wait": true}),
        )
        .await;
    assert_eq!(v["mutation"]["completed"], true);
    let id = v["result"]["id"].as_str().unwrap();
    assert_eq!(h.fake.page_lines(id), vec!["h1:Goals", "bulletedList:ship"]);
    let body = h.fake.calls("POST", "/docs/doc1/pages")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["pageContent"]["type"], "canvas");
    assert_eq!(body["pageContent"]["canvasContent"]["format"], "markdown");
    assert_eq!(body["parentPageId"], "canvas-overview");
    let rid = v["requestId"].as_str().unwrap();
    assert!(
        !h.fake
            .calls("GET", &format!("/mutationStatus/{rid}"))
            .is_empty()
    );
    // Empty content is sent as a single space (Coda rejects empty canvases).
    h.ok(
        "coda_create_page",
        json!({"docId": "doc1", "name": "Empty"}),
    )
    .await;
    let body = h.fake.calls("POST", "/docs/doc1/pages")[1]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["pageContent"]["canvasContent"]["content"], " ");
    h.ok(
        "coda_create_page",
        json!({"docId": "doc1", "name": "Site", "embedUrl": "https://example.com"}),
    )
    .await;
    assert_eq!(
        h.fake.calls("POST", "/docs/doc1/pages")[2]
            .body
            .clone()
            .unwrap()["pageContent"]["type"],
        "embed"
    );
    let e = h
        .fails(
            "coda_create_page",
            json!({"docId": "doc1", "name": "X", "parentPageId": "canvas-nope"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h.fails("coda_create_page", json!({"docId": "doc1"})).await;
    assert!(e.contains("`name`") && e.contains("required"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn update_rename_and_delete_page() {
    let h = start(&[]).await;
    h.ok("coda_update_page", json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "isHidden": true, "iconName": "book"})).await;
    assert_eq!(
        h.fake.calls("PUT", "/docs/doc1/pages/canvas-notes")[0].body,
        Some(json!({"iconName": "book", "isHidden": true}))
    );
    h.ok("coda_rename_page", json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "newName": "Minutes", "subtitle": "weekly"})).await;
    assert_eq!(
        h.fake.calls("PUT", "/docs/doc1/pages/canvas-notes")[1].body,
        Some(json!({"name": "Minutes", "subtitle": "weekly"}))
    );
    assert!(h.fake.page_exists("Minutes"));
    h.ok(
        "coda_delete_page",
        json!({"docId": "doc1", "pageIdOrName": "Minutes", "wait": true}),
    )
    .await;
    assert!(!h.fake.page_exists("canvas-notes"));
    let e = h
        .fails(
            "coda_update_page",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview"}),
        )
        .await;
    assert!(e.contains("at least one"), "{e}");
    let e = h
        .fails(
            "coda_rename_page",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "newName": " "}),
        )
        .await;
    assert!(e.contains("`newName`"), "{e}");
    let e = h
        .fails(
            "coda_delete_page",
            json!({"docId": "doc1", "pageIdOrName": "canvas-notes"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails(
            "coda_update_page",
            json!({"docId": "doc1", "pageIdOrName": "gone", "name": "x"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn get_page_content_exports_markdown_through_early_404s_and_progress() {
    let h = start(&[]).await;
    h.fake.set_export_plan(ExportPlan {
        not_found_polls: 2,
        in_progress_polls: 2,
        ..Default::default()
    });
    let r = h
        .call(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Overview"}),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", harness::text(&r));
    assert_eq!(
        harness::text(&r),
        "# Overview\nLaunch is on Friday.\n- ship it"
    );
    let v = r.structured_content.unwrap();
    assert_eq!(v["format"], "markdown");
    assert_eq!(v["truncated"], false);
    let start_req = &h
        .fake
        .calls("POST", "/docs/doc1/pages/canvas-overview/export")[0];
    assert_eq!(start_req.body, Some(json!({"outputFormat": "markdown"})));
    let polls = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/export/"))
        .count();
    assert_eq!(polls, 5, "two 404s, two inProgress, one complete");
    // The download link is fetched without the token.
    let dl: Vec<_> = h.fake.requests().into_iter().filter(|r| !r.api).collect();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].authorization, None);
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn export_failure_is_reported_with_codas_error() {
    let h = start(&[]).await;
    h.fake.set_export_plan(ExportPlan {
        fail: true,
        ..Default::default()
    });
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "format": "html"}),
        )
        .await;
    assert!(
        e.contains("export failed") && e.contains("Page could not be rendered"),
        "{e}"
    );
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Dashboard"}),
        )
        .await;
    assert!(e.contains("400"), "embeds cannot be exported: {e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn expired_download_links_are_refreshed_and_gzip_bodies_inflated() {
    let h = start(&[]).await;
    h.fake.set_export_plan(ExportPlan {
        dead_links: 1,
        gzip: true,
        ..Default::default()
    });
    let v = h
        .ok(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-notes", "format": "html"}),
        )
        .await;
    assert_eq!(
        v["content"],
        "<h2>Monday</h2>\n<p>Budget approved by finance.</p>"
    );
    let downloads = h.fake.requests().into_iter().filter(|r| !r.api).count();
    assert_eq!(downloads, 2, "one dead link, one fresh");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn export_that_never_finishes_stops_at_the_call_deadline() {
    let h = start(&["--call-timeout-secs", "1"]).await;
    h.fake.set_export_plan(ExportPlan {
        in_progress_polls: 1_000_000,
        ..Default::default()
    });
    let t = std::time::Instant::now();
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Overview"}),
        )
        .await;
    assert!(e.contains("did not finish"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    h.close().await;
}

#[tokio::test]
async fn plain_text_content_and_peek_avoid_exports() {
    let h = start(&[]).await;
    let v = h.ok("coda_get_page_content", json!({"docId": "doc1", "pageIdOrName": "Overview", "format": "plainText", "maxChars": 10, "offset": 2})).await;
    assert_eq!(v["content"], "Overview\nL");
    assert_eq!(v["truncated"], true);
    let p = h
        .ok(
            "coda_peek_page",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "numLines": 2}),
        )
        .await;
    assert_eq!(p["content"], "# Overview\nLaunch is on Friday.");
    assert_eq!(p["truncated"], true);
    assert_eq!(
        h.fake
            .calls("GET", "/docs/doc1/pages/canvas-overview/content")[1]
            .q("limit"),
        Some("2")
    );
    assert!(
        h.fake
            .requests()
            .iter()
            .all(|r| !r.path.contains("/export")),
        "no export for plain text"
    );
    let p = h.ok("coda_peek_page", json!({"docId": "doc1", "pageIdOrName": "Overview", "numLines": 1, "format": "markdown"})).await;
    assert_eq!(p["content"], "# Overview");
    let e = h
        .fails(
            "coda_peek_page",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "numLines": 0}),
        )
        .await;
    assert!(e.contains("`numLines`"), "{e}");
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "format": "pdf"}),
        )
        .await;
    assert!(e.contains("`format`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn page_content_elements_list_and_element_anchored_writes() {
    let h = start(&[]).await;
    let l = h
        .ok(
            "coda_list_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "limit": 2}),
        )
        .await;
    assert_eq!(l["count"], 2);
    assert_eq!(l["items"][1]["id"], "cl-1");
    assert_eq!(
        h.fake
            .calls("GET", "/docs/doc1/pages/canvas-overview/content")[0]
            .q("contentFormat"),
        Some("plainText")
    );
    h.ok("coda_append_page_content", json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "after one", "elementId": "cl-1"})).await;
    h.ok(
        "coda_prepend_page_content",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "## Top"}),
    )
    .await;
    assert_eq!(
        h.fake.page_lines("canvas-overview"),
        vec![
            "h2:Top",
            "h1:Overview",
            "paragraph:Launch is on Friday.",
            "paragraph:after one",
            "bulletedList:ship it"
        ]
    );
    let put = h.fake.calls("PUT", "/docs/doc1/pages/canvas-overview");
    assert_eq!(
        put[0].body.clone().unwrap()["contentUpdate"]["elementId"],
        "cl-1"
    );
    assert_eq!(
        put[1].body.clone().unwrap()["contentUpdate"]["insertionMode"],
        "prepend"
    );
    h.ok(
        "coda_delete_page_content",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "elementIds": ["cl-0"]}),
    )
    .await;
    assert!(
        !h.fake
            .page_lines("canvas-overview")
            .contains(&"h1:Overview".to_owned())
    );
    h.ok("coda_replace_page_content", json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "<h1>New</h1>", "format": "html", "wait": true})).await;
    assert_eq!(h.fake.page_lines("canvas-overview"), vec!["h1:New"]);
    h.ok(
        "coda_delete_page_content",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview"}),
    )
    .await;
    assert!(h.fake.page_lines("canvas-overview").is_empty());
    // Failures.
    let e = h.fails("coda_append_page_content", json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "x", "elementId": "cl-nope"})).await;
    assert!(e.contains("400") && e.contains("Element not found"), "{e}");
    let e = h
        .fails(
            "coda_prepend_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": ""}),
        )
        .await;
    assert!(e.contains("`content`"), "{e}");
    let e = h
        .fails(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Missing", "content": "x"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    let e = h
        .fails(
            "coda_delete_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "elementIds": []}),
        )
        .await;
    assert!(e.contains("`elementIds`"), "{e}");
    let e = h
        .fails(
            "coda_list_page_content",
            json!({"docId": "doc1", "pageIdOrName": "Dashboard"}),
        )
        .await;
    assert!(e.contains("404") && e.contains("no canvas content"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn duplicate_page_keeps_parent_subtitle_and_icon() {
    let h = start(&[]).await;
    let v = h.ok("coda_duplicate_page", json!({"docId": "doc1", "pageIdOrName": "Meeting Notes", "newName": "Notes copy", "wait": true})).await;
    assert_eq!(v["parentPageId"], "canvas-overview");
    assert_eq!(v["mutation"]["completed"], true);
    let new_id = v["newPageId"].as_str().unwrap();
    assert_eq!(v["id"], new_id);
    assert_eq!(
        h.fake.page_parent(new_id).as_deref(),
        Some("canvas-overview")
    );
    assert_eq!(
        h.fake.page_lines(new_id),
        vec!["h2:Monday", "paragraph:Budget approved by finance."]
    );
    let body = h.fake.calls("POST", "/docs/doc1/pages")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["pageContent"]["canvasContent"]["format"], "html");
    let v = h
        .ok(
            "coda_duplicate_page",
            json!({"docId": "doc1", "pageIdOrName": "Overview", "newName": "Overview 2"}),
        )
        .await;
    assert!(v.get("parentPageId").is_none());
    let body = h.fake.calls("POST", "/docs/doc1/pages")[1]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["subtitle"], "Start here");
    assert_eq!(body["iconName"], "rocket");
    let e = h
        .fails(
            "coda_duplicate_page",
            json!({"docId": "doc1", "pageIdOrName": "Missing", "newName": "x"}),
        )
        .await;
    assert!(e.contains("404"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

#[tokio::test]
async fn search_pages_covers_every_page_and_page_bodies() {
    let h = start(&[]).await;
    h.fake.set_max_page(2);
    h.fake.add_pages(4);
    let v = h
        .ok(
            "coda_search_pages",
            json!({"docId": "doc1", "query": "page 3"}),
        )
        .await;
    assert_eq!(v["pagesSearched"], 7);
    assert_eq!(v["items"][0]["id"], "canvas-p3");
    assert_eq!(v["items"][0]["matchedIn"], json!(["name"]));
    assert!(v["items"][0].get("matchedInContent").is_none(), "{v}");
    let v = h
        .ok(
            "coda_search_pages",
            json!({"docId": "doc1", "query": "BUDGET", "includeContent": true}),
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["totalFound"], 1, "{v}");
    assert_eq!(v["searchedContent"], true, "{v}");
    assert_eq!(v["items"][0]["matchedIn"], json!(["content"]));
    assert_eq!(v["items"][0]["matchedInContent"], true);
    assert_eq!(v["items"][0]["snippet"], "Budget approved by finance.");
    assert_eq!(
        v["contentErrors"], 0,
        "the embed page is skipped, not an error"
    );
    assert!(
        h.fake
            .requests()
            .iter()
            .all(|r| !r.path.contains("/export")),
        "content search uses plain text"
    );
    let e = h
        .fails("coda_search_pages", json!({"docId": "doc1", "query": ""}))
        .await;
    assert!(e.contains("`query`"), "{e}");
    h.fake.assert_responses_match_spec();
    h.close().await;
}

/// Regression: a plain-text read took a page's first 10000 content
/// elements (COMPOSITE_CAP) and dropped the rest without a word: a longer
/// page came back with `truncated: false` and a `totalChars` that counted
/// only what was read, a content search did not look past it, and a
/// dry-run replace previewed part of the body as the whole.
#[tokio::test]
async fn a_page_longer_than_a_plain_text_read_takes_is_not_cut_silently() {
    let h = start(&[]).await;
    h.fake.set_max_page(500);
    // The page's own lines end up after these.
    for i in 0..10_000 {
        h.fake
            .insert_line("canvas-overview", &format!("filler {i}"));
    }
    let tail = h
        .fake
        .page_lines("canvas-overview")
        .last()
        .cloned()
        .unwrap();
    let needle = tail.split(':').next_back().unwrap().to_owned();
    let e = h
        .fails(
            "coda_get_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "format": "plainText", "maxChars": 100}),
        )
        .await;
    assert!(
        e.contains("more than 10000") && e.contains("markdown"),
        "{e}"
    );
    let v = h
        .ok(
            "coda_search_pages",
            json!({"docId": "doc1", "query": needle, "includeContent": true}),
        )
        .await;
    assert!(
        v["totalFound"] == 1 || v["contentErrors"] == 1,
        "{needle}: {v}"
    );
    let e = h
        .fails(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "x", "dryRun": true}),
        )
        .await;
    assert!(e.contains("more than 10000"), "{e}");
    h.close().await;
}

/// Regression: a `limit` above the maximum Coda's OpenAPI spec gives a
/// list (page content 500, columns 100) was passed on as it came, for
/// Coda to refuse with a 400. Such a list asks for the maximum instead,
/// as the tool descriptions say, and continues with nextPageToken.
#[tokio::test]
async fn a_limit_above_codas_maximum_asks_for_the_maximum() {
    let h = start(&[]).await;
    for i in 0..3 {
        h.fake.insert_line("canvas-overview", &format!("line {i}"));
    }
    for (limit, sent) in [(501, "500"), (100_000, "500"), (500, "500"), (7, "7")] {
        let v = h
            .ok(
                "coda_list_page_content",
                json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "limit": limit}),
            )
            .await;
        assert!(v["count"].as_u64().unwrap() >= 3, "{v}");
        let last = h
            .fake
            .calls("GET", "/docs/doc1/pages/canvas-overview/content")
            .pop()
            .unwrap();
        assert_eq!(last.q("limit"), Some(sent), "limit {limit}");
    }
    h.ok(
        "coda_list_columns",
        json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "limit": 101}),
    )
    .await;
    let last = h
        .fake
        .calls("GET", "/docs/doc1/tables/grid-tasks/columns")
        .pop()
        .unwrap();
    assert_eq!(last.q("limit"), Some("100"));
    h.fake.assert_responses_match_spec();
    h.close().await;
}
