//! Regression: faults found by playing a hostile Coda and a careless or
//! hostile model against the write-trust promise ("every write says
//! exactly what happened, never claims more than it checked, never
//! double-applies on a retry, never leaks the token, stays within its
//! budgets"). Each test failed on the code before its fix, except
//! `a_page_write_with_verify_keeps_one_deadline`, which pins a promise the
//! review found kept (its three requests share the call's one deadline).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{TIMEOUT, start};
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::{Value, json};

// ----- replay safety of element-relative content writes -----

/// Symptom: `coda_replace_page_content` with `elementId` was marked
/// replayable like a whole-page replace. Answered 502 after Coda applied
/// it, it was sent again (the element it names is gone by then, or, if
/// Coda keeps its id on the first new element, the replace runs twice and
/// leaves a copy of the content), and the error said "retrying is safe".
#[tokio::test]
async fn an_element_replace_answered_502_after_it_applied_is_not_sent_again() {
    let h = start(&[]).await;
    h.fake
        .fail_next_after_applying("PUT", "/pages/canvas-overview", 502, 1);
    let e = h
        .fails(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "elementId": "cl-1", "content": "New one\n\nNew two"}),
        )
        .await;
    assert_eq!(
        h.fake
            .calls("PUT", "/docs/doc1/pages/canvas-overview")
            .len(),
        1,
        "{e}"
    );
    assert!(e.contains("may have been applied"), "{e}");
    assert!(!e.contains("retrying is safe"), "{e}");
    let lines = h.fake.page_lines("canvas-overview");
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("New two")).count(),
        1,
        "{lines:?}"
    );
    // A whole-page replace is still replayed: it leaves the same body.
    h.fake
        .fail_next_after_applying("PUT", "/pages/canvas-overview", 502, 1);
    h.ok(
        "coda_replace_page_content",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "Whole"}),
    )
    .await;
    assert_eq!(
        h.fake
            .calls("PUT", "/docs/doc1/pages/canvas-overview")
            .len(),
        3
    );
    // Its annotation no longer promises what the elementId form cannot keep.
    let tools = h.tools().await;
    let replace = tools
        .iter()
        .find(|t| t.name == "coda_replace_page_content")
        .unwrap();
    let a = replace.annotations.as_ref().unwrap();
    assert_eq!(a.idempotent_hint, Some(false), "{a:?}");
    h.close().await;
}

// ----- the schema resource says when the doc has more tables than read -----

async fn schema(h: &harness::Harness) -> Value {
    let r = tokio::time::timeout(
        TIMEOUT,
        h.client
            .read_resource(ReadResourceRequestParams::new("coda://docs/doc1/schema")),
    )
    .await
    .expect("resources/read timed out")
    .expect("resources/read failed");
    match &r.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => serde_json::from_str(text).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Symptom: a doc with more than 10,000 tables gave `tablesTotal: 10000`
/// and a note counting "of 10000 tables": the table listing stops at
/// 10,000, and the resource dropped the flag that said so.
#[tokio::test]
async fn a_schema_of_a_doc_with_more_tables_than_are_read_says_so() {
    let h = start(&[]).await;
    h.fake.add_tables(10_050);
    let v = schema(&h).await;
    assert_eq!(v["tablesCapped"], true, "{}", v["note"]);
    assert_eq!(v["truncated"], true);
    let note = v["note"].as_str().unwrap();
    assert!(note.contains("more than 10000 tables"), "{note}");
    assert!(!note.contains("of 10000 tables"), "{note}");
    h.close().await;
}

// ----- continuation tokens -----

/// Symptom: `limit: 0` is refused as an argument, but the same limit
/// inside one of the server's own `cm1.` tokens was sent to Coda
/// (`limit=0`, below the spec's minimum of 1).
#[tokio::test]
async fn a_token_carrying_a_zero_limit_is_refused_not_sent() {
    let h = start(&[]).await;
    for tok in [
        "cm1.0.0.",
        "cm1.1.0.",
        "cm1.0.-1.",
        "cm1.-1..",
        "cm1.0.99999999999.",
    ] {
        let e = h
            .fails(
                "coda_list_pages",
                json!({"docId": "doc1", "pageToken": tok}),
            )
            .await;
        assert!(e.contains("pageToken"), "{tok}: {e}");
    }
    assert!(
        h.fake.requests().iter().all(|r| r.q("limit") != Some("0")),
        "limit=0 was sent"
    );
    h.close().await;
}

/// Symptom: a `cm1.` token (resume at item N of a first page) handed out
/// by one list was taken by any other: given to `coda_list_tables`, a
/// token of `coda_list_pages` skipped the first tables and answered an
/// empty list, complete, with no error.
#[tokio::test]
async fn a_token_of_another_list_is_refused() {
    let h = start(&["--max-result-bytes", "1024"]).await;
    h.fake.add_pages(40);
    let v = h
        .ok("coda_list_pages", json!({"docId": "doc1", "limit": 20}))
        .await;
    let tok = v["nextPageToken"].as_str().unwrap().to_owned();
    assert!(tok.starts_with("cm1."), "{tok}");
    // The same list goes on with it.
    let next = h
        .ok(
            "coda_list_pages",
            json!({"docId": "doc1", "pageToken": tok}),
        )
        .await;
    assert!(next["count"].as_u64().unwrap() >= 1, "{next}");
    for (tool, args) in [
        (
            "coda_list_tables",
            json!({"docId": "doc1", "pageToken": tok}),
        ),
        (
            "coda_list_pages",
            json!({"docId": "doc2", "pageToken": tok}),
        ),
        (
            "coda_list_formulas",
            json!({"docId": "doc1", "pageToken": tok}),
        ),
    ] {
        let e = h.fails(tool, args).await;
        assert!(e.contains("pageToken"), "{tool}: {e}");
    }
    // A tampered token (its position changed) is refused too.
    let tampered = tok
        .replacen("cm1.1", "cm1.3", 1)
        .replacen("cm1.2", "cm1.5", 1);
    assert_ne!(tampered, tok);
    let e = h
        .fails(
            "coda_list_pages",
            json!({"docId": "doc1", "pageToken": tampered}),
        )
        .await;
    assert!(e.contains("pageToken"), "{e}");
    h.close().await;
}

/// Symptom: Coda's own `nextPageToken` was handed out bare and taken bare
/// by any list. Coda's token carries the query it was made for and Coda
/// ignores the request's, so `coda_list_pages`' token given to
/// `coda_list_tables` (or to the pages of another doc) was sent as the
/// tables' token: the answer was whatever Coda makes of it, skipping the
/// first tables, with no error.
#[tokio::test]
async fn a_coda_page_token_of_another_list_is_refused() {
    let h = start(&[]).await;
    h.fake.add_pages(5);
    let first = h
        .ok("coda_list_pages", json!({"docId": "doc1", "limit": 1}))
        .await;
    let tok = first["nextPageToken"].as_str().unwrap().to_owned();
    assert!(tok.starts_with("cm1."), "handed out bare: {tok}");
    // Coda's token inside it, as Coda's link carries it.
    let link = first["nextPageLink"].as_str().unwrap();
    let coda = link.split("pageToken=").nth(1).unwrap().to_owned();
    assert!(tok.ends_with(&format!(".{coda}")), "{tok} / {link}");
    let next = h
        .ok(
            "coda_list_pages",
            json!({"docId": "doc1", "pageToken": tok}),
        )
        .await;
    assert_ne!(next["items"][0]["id"], first["items"][0]["id"], "{next}");
    for (tool, args) in [
        (
            "coda_list_tables",
            json!({"docId": "doc1", "pageToken": tok}),
        ),
        (
            "coda_list_formulas",
            json!({"docId": "doc1", "pageToken": tok}),
        ),
        (
            "coda_list_pages",
            json!({"docId": "doc2", "pageToken": tok}),
        ),
        // Coda's bare token says nothing of the list it came from.
        (
            "coda_list_tables",
            json!({"docId": "doc1", "pageToken": coda}),
        ),
        (
            "coda_list_pages",
            json!({"docId": "doc1", "pageToken": coda}),
        ),
    ] {
        let e = h.fails(tool, args.clone()).await;
        assert!(e.contains("pageToken"), "{tool} {args}: {e}");
    }
    let sent: Vec<String> = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.q("pageToken").is_some())
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(sent, ["/docs/doc1/pages"], "Coda's token sent elsewhere");
    h.close().await;
}

// ----- one deadline for a page write with verify -----

/// The read before, the write and the read after of a verified page
/// write: the first two fit in the deadline (2.5 s + 1 s of 4 s), the
/// re-read does not. The call must end at its one deadline (about 4 s),
/// not at 6 s as it would if the re-read got a deadline of its own.
#[tokio::test]
async fn a_page_write_with_verify_keeps_one_deadline() {
    let h = start(&["--call-timeout-secs", "4"]).await;
    h.fake.delay(
        "GET",
        "/pages/canvas-overview/content",
        Duration::from_millis(2500),
    );
    h.fake
        .delay("PUT", "/pages/canvas-overview", Duration::from_millis(1000));
    let t = Instant::now();
    let r = h
        .call(
            "coda_append_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "content": "Late line", "verify": true}),
        )
        .await;
    let took = t.elapsed();
    let text = harness::text(&r);
    assert!(took < Duration::from_secs(5), "took {took:?}: {text}");
    // The write was accepted: the re-read that ran out says so, and the
    // result does not claim the content was checked.
    assert!(text.contains("could not re-read"), "{text}");
    h.close().await;
}

// ----- Retry-After as a date, and a wait past the deadline -----

/// An HTTP-date `now + secs` (RFC 9110 IMF-fixdate).
fn http_date_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let s = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (s / 86_400, s % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Symptom: `Retry-After` given as an HTTP-date (RFC 9110 allows it, and
/// gateways send it) was ignored: the request was sent again after the
/// 20 ms backoff, into the rate limit Coda had just named.
#[tokio::test]
async fn a_retry_after_date_is_waited_for() {
    let h = start(&[]).await;
    h.fake
        .fail_next("GET", "/docs/doc1", 429, 1, Some(&http_date_in(2)));
    let t = Instant::now();
    h.ok("coda_get_document", json!({"docId": "doc1"})).await;
    // The date has whole seconds: it is 1 to 2 s away when read.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.fake.calls("GET", "/docs/doc1").len(), 2);
    h.close().await;
}

/// Symptom: a 429 whose `Retry-After` passes the call deadline (seconds
/// or a date) ended the call at once with Coda's bare "429 Too Many
/// Requests" (a write's saying "Coda kept rate-limiting it until the call
/// deadline"), with nothing on when to try again: a model resent it at
/// once, into the same limit.
#[tokio::test]
async fn a_429_that_asks_to_wait_past_the_deadline_says_how_long() {
    let h = start(&["--call-timeout-secs", "5"]).await;
    h.fake.fail_next("GET", "/docs/doc1", 429, 1, Some("120"));
    let e = h.fails("coda_get_document", json!({"docId": "doc1"})).await;
    assert!(e.contains("429"), "{e}");
    assert!(e.contains("120 s"), "{e}");
    h.fake
        .fail_next("PUT", "/rows/i-1", 429, 1, Some(&http_date_in(90)));
    let e = h
        .fails(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}}),
        )
        .await;
    assert!(e.contains("NOT applied"), "{e}");
    assert!(e.contains("wait") && e.contains(" s"), "{e}");
    assert!(!e.contains("until the call deadline"), "{e}");
    assert_eq!(
        h.fake
            .calls("PUT", "/docs/doc1/tables/grid-tasks/rows/i-1")
            .len(),
        1
    );
    // Regression: a wait of 10^20 s (read as its cap, a day) was reported
    // as "Coda asked to wait 86400 s", a wait it never asked for.
    h.fake
        .fail_next("GET", "/docs/doc1", 429, 1, Some("100000000000000000000"));
    let e = h.fails("coda_get_document", json!({"docId": "doc1"})).await;
    assert!(e.contains("at least 86400 s"), "{e}");
    h.close().await;
}

// ----- the --docs allow-list and links to resolve -----

/// Symptom: with `--docs doc1`, a link was checked in one reading and
/// sent in another. The check parsed it as a URL (`/d/_ddoc2/../_ddoc1`
/// is `/d/_ddoc1`; of `Wiki_ddoc2_ddoc1` it took the last `_d`, doc1),
/// but the raw text went to `/resolveBrowserLink`, where a resolver that
/// reads it otherwise (the fake: the first `_d`) resolved doc2's object.
#[tokio::test]
async fn a_link_to_resolve_is_sent_as_the_allow_list_read_it() {
    let h = start(&["--docs", "doc1"]).await;
    for url in [
        "https://coda.io/d/_ddoc2/../_ddoc1",
        "https://coda.io/d/_ddoc2/%2e%2e/_ddoc1",
        "https://coda.io/d/Wiki_ddoc2_ddoc1",
    ] {
        let r = h.call("coda_resolve_link", json!({"url": url})).await;
        let text = harness::text(&r);
        assert!(!text.contains("doc2"), "{url}: {text}");
        let r = h
            .call(
                "coda_get_page",
                json!({"docId": "doc1", "pageIdOrName": format!("{url}/Overview_sucanvas-overview")}),
            )
            .await;
        let text = harness::text(&r);
        assert!(!text.contains("doc2"), "{url}: {text}");
    }
    for r in h.fake.requests() {
        assert!(!r.path.contains("doc2"), "{} {}", r.method, r.path);
        let sent = r.q("url").unwrap_or("");
        assert!(!sent.contains("doc2"), "sent {sent}");
    }
    h.close().await;
}

// ----- wait and verify claim nothing they did not check -----

fn empty_answer(status: u16) -> fake_coda::Hostile {
    fake_coda::Hostile {
        status,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: b"{}".to_vec(),
        ..Default::default()
    }
}

/// Symptom: an insert answered 2xx without `requestId` or `addedRowIds`
/// (a proxy's `{}`, a broken Coda) came back with `wait: true` and
/// `verify: true` as `mutation: {completed: true}` and `verification:
/// {rowsChecked: 0, matches: true}`: nothing was waited for or re-read,
/// and nothing had been written. Now such an answer shows nothing of the
/// write (see a_queued_write_answered_with_an_empty_object_is_not_called_accepted).
#[tokio::test]
async fn an_insert_with_nothing_to_wait_for_or_re_read_is_not_called_applied_or_matching() {
    let h = start(&[]).await;
    h.fake.answer_next("POST", "/rows", 1, empty_answer(200));
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "a"}, {"Name": "b"}], "verify": true}),
        )
        .await;
    assert!(e.contains("no requestId"), "{e}");
    assert!(e.contains("may have been applied"), "{e}");
    // An answer with a requestId (one Coda applied) but one row id for
    // two rows: the row without an id is not re-read, and is not passed.
    let prior = h
        .ok(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Name": "a"}, "wait": true}),
        )
        .await;
    let prior = prior["requestId"].as_str().unwrap().to_owned();
    h.fake.answer_next(
        "POST",
        "/rows",
        1,
        fake_coda::Hostile {
            status: 202,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: json!({"requestId": prior, "addedRowIds": ["i-1"]})
                .to_string()
                .into_bytes(),
            ..Default::default()
        },
    );
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "a"}, {"Name": "b"}], "verify": true}),
        )
        .await;
    assert_eq!(v["mutation"]["completed"], true, "{v}");
    assert_eq!(v["verification"]["matches"], false, "{v}");
    assert!(
        v["verification"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("1 row ids for the 2 rows")),
        "{v}"
    );
    h.close().await;
}

/// Symptom: a write Coda queues (its answer always carries the
/// `requestId` to poll) answered 2xx with `{}` (a proxy's answer, a broken
/// Coda) was a success: `result: {}`, no note, and with `wait: true` no
/// `mutation` at all, as if it had been accepted with nothing to wait
/// for; a chunked insert counted the rows as `rowsAccepted`. The answer
/// shows nothing of the write: whether it ran is unknown, and the result
/// says that, not more. A write Coda answers `{}` by design (unpublish)
/// is still a success.
#[tokio::test]
async fn a_queued_write_answered_with_an_empty_object_is_not_called_accepted() {
    // Chunks of one row each (rows of 600 bytes).
    let h = start(&["--row-chunk-bytes", "1024", "--toolsets", "all"]).await;
    let update = json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}});
    for wait in [false, true] {
        h.fake.answer_next("PUT", "/rows/i-1", 1, empty_answer(200));
        let mut args = update.clone();
        args["wait"] = json!(wait);
        let e = h.fails("coda_update_row", args).await;
        assert!(e.contains("no requestId"), "wait {wait}: {e}");
        assert!(e.contains("may have been applied"), "wait {wait}: {e}");
        assert!(!e.contains("accepted"), "wait {wait}: {e}");
    }
    h.fake.answer_next("POST", "/pages", 1, empty_answer(202));
    let e = h
        .fails("coda_create_page", json!({"docId": "doc1", "name": "New"}))
        .await;
    assert!(e.contains("may have been applied"), "{e}");
    // The second of three chunks answered `{}`: its rows are not accepted.
    h.fake.answer_after("POST", "/rows", 1, empty_answer(202));
    let rows: Vec<_> = (0..3)
        .map(|i| json!({"Name": format!("chunk-{i}"), "Status": "x".repeat(600)}))
        .collect();
    let v = h
        .ok(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": rows}),
        )
        .await;
    assert_eq!(v["rowsAccepted"], 1, "{v}");
    assert_eq!(v["rowsOutcomeUnknown"], 1, "{v}");
    h.fake
        .answer_next("DELETE", "/publish", 1, empty_answer(200));
    h.ok("coda_unpublish_document", json!({"docId": "doc1"}))
        .await;
    h.close().await;
}

/// Symptom: a bulk update whose every row failed (not found, so not
/// sent) answered `verify: true` with `matches: true` (0 rows checked)
/// and `wait: true` with `mutation: {completed: true}`.
#[tokio::test]
async fn a_bulk_update_that_wrote_nothing_does_not_verify_as_matching() {
    let h = start(&[]).await;
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": [{"rowIdOrName": "i-none", "values": {"Status": "x"}}], "verify": true}),
        )
        .await;
    assert_eq!(v["successful"], 0, "{v}");
    assert_ne!(v["mutation"]["completed"], true, "{v}");
    assert_eq!(v["verification"]["matches"], false, "{v}");
    h.close().await;
}

// ----- a 2xx answer that is not Coda's -----

fn html_page(status: u16) -> fake_coda::Hostile {
    fake_coda::Hostile {
        status,
        headers: vec![("content-type".into(), b"text/html".to_vec())],
        body: b"<html><body><h1>Sign in to continue</h1></body></html>".to_vec(),
        ..Default::default()
    }
}

/// Symptom: a write answered 200 with an HTML page (a captive portal, a
/// proxy's sign-in page, a web app at a mistyped base URL: not Coda, and
/// nothing applied) was reported "Coda accepted the write … it was
/// accepted and will be applied, so do not resend it". Whether it was
/// applied is unknown, and the error must say that, not more.
#[tokio::test]
async fn a_write_answered_with_a_web_page_is_not_called_accepted() {
    let h = start(&[]).await;
    h.fake.answer_next("PUT", "/rows/i-1", 1, html_page(200));
    let e = h
        .fails(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}}),
        )
        .await;
    assert!(!e.contains("will be applied"), "{e}");
    assert!(!e.contains("accepted the write"), "{e}");
    assert!(e.contains("may have been applied"), "{e}");
    assert!(e.contains("text/html"), "{e}");
    h.fake.answer_next("POST", "/rows", 1, html_page(200));
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "once"}]}),
        )
        .await;
    assert!(!e.contains("will be applied"), "{e}");
    assert!(e.contains("may have been applied"), "{e}");
    assert!(e.contains("do not resend"), "{e}");
    assert_eq!(
        h.fake
            .calls("POST", "/docs/doc1/tables/grid-tasks/rows")
            .len(),
        1
    );
    h.close().await;
}

// ----- write results stay within the result budget -----

/// Symptom: list and object reads kept to `--max-result-bytes`, but a
/// write's result carried Coda's answer whole (`result`), so a Coda (or a
/// gateway) answering a row update with a megabyte of JSON handed all of
/// it to the model, as `structuredContent` and again in the summary.
#[tokio::test]
async fn a_write_answer_past_the_result_budget_is_cut_with_a_note() {
    let h = start(&[]).await;
    let big = json!({"requestId": "mut-x", "id": "i-1", "echo": "x".repeat(1_000_000)});
    h.fake.answer_next(
        "PUT",
        "/rows/i-1",
        1,
        fake_coda::Hostile {
            status: 202,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: big.to_string().into_bytes(),
            ..Default::default()
        },
    );
    let r = h
        .call(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}}),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", harness::text(&r));
    let v = r.structured_content.clone().unwrap();
    let size = v.to_string().len();
    assert!(size <= 100_000, "{size} bytes");
    assert_eq!(v["truncated"], true);
    assert_eq!(v["requestId"], "mut-x", "{}", v["note"]);
    assert!(
        v["note"]
            .as_str()
            .is_some_and(|n| n.contains("100000 bytes")),
        "{}",
        v["note"]
    );
    assert!(harness::text(&r).len() < 5_000);
    h.close().await;
}

// ----- answers whose JSON is not the shape every Coda answer has -----

fn json_answer(v: Value) -> fake_coda::Hostile {
    fake_coda::Hostile {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: v.to_string().into_bytes(),
        ..Default::default()
    }
}

/// Symptom: an answer that is JSON but not an object (`[1,2,3]`, a
/// string) became the tool's `structuredContent` as it was, which MCP
/// requires to be an object and the tool's outputSchema declares one;
/// list items that are not objects (`1`, `null`) broke the list's
/// outputSchema. A client that validates (the TypeScript SDK does)
/// rejected the whole result instead of showing an error.
#[tokio::test]
async fn answers_that_are_not_objects_are_errors_not_broken_results() {
    let h = start(&[]).await;
    for bad in [json!([1, 2, 3]), json!("a string"), json!(7)] {
        h.fake
            .answer_next("GET", "/docs/doc1", 1, json_answer(bad.clone()));
        let e = h.fails("coda_get_document", json!({"docId": "doc1"})).await;
        assert!(e.contains("not a JSON object"), "{bad}: {e}");
    }
    h.fake.answer_next(
        "GET",
        "/docs/doc1/pages",
        1,
        json_answer(json!({"items": [{"id": "canvas-a", "name": "A"}, 1, null, "x"]})),
    );
    let e = h.fails("coda_list_pages", json!({"docId": "doc1"})).await;
    assert!(e.contains("not an object"), "{e}");
    h.close().await;
}

// ----- the token in headers Coda controls -----

/// Symptom: headers of a hostile answer reached errors unredacted: the
/// host of a redirect's `Location` (`https://<token>.example/`) was named
/// as where it pointed, and a `Content-Type` echoing the request's header
/// was named in the "body is not JSON" error of the commit before.
#[tokio::test]
async fn the_token_echoed_in_a_header_is_not_handed_to_the_model() {
    let h = start(&[]).await;
    let tok = fake_coda::TOKEN;
    h.fake.answer_next(
        "GET",
        "/docs/doc1",
        1,
        fake_coda::Hostile {
            status: 302,
            headers: vec![(
                "location".into(),
                format!("https://{tok}.example/x").into_bytes(),
            )],
            ..Default::default()
        },
    );
    let e = h.fails("coda_get_document", json!({"docId": "doc1"})).await;
    assert!(e.contains("redirect"), "{e}");
    assert!(!e.contains(tok), "{e}");
    h.fake.answer_next(
        "PUT",
        "/rows/i-1",
        1,
        fake_coda::Hostile {
            status: 200,
            headers: vec![(
                "content-type".into(),
                format!("text/html; echo=Bearer {tok}").into_bytes(),
            )],
            body: b"<html></html>".to_vec(),
            ..Default::default()
        },
    );
    let e = h
        .fails(
            "coda_update_row",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rowIdOrName": "i-1", "values": {"Status": "x"}}),
        )
        .await;
    assert!(e.contains("text/html"), "{e}");
    assert!(!e.contains(tok), "{e}");
    h.close().await;
}

// ----- a 303 answers a request that was processed -----

/// Symptom: a write answered 303 See Other was reported "Coda refused this
/// write request (HTTP 303), so it was NOT applied". A 303 is how a server
/// answers a request it processed (RFC 9110 §15.4.4: "an indirect response
/// to the original request"); whether the write ran is unknown. Other
/// redirects (the request was not handled there) stay "not applied".
#[tokio::test]
async fn a_write_answered_303_is_not_called_not_applied() {
    let h = start(&[]).await;
    let redirect = |status: u16| fake_coda::Hostile {
        status,
        headers: vec![("location".into(), b"/apis/v1/docs/doc1".to_vec())],
        ..Default::default()
    };
    h.fake.answer_next("POST", "/rows", 1, redirect(303));
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "a"}]}),
        )
        .await;
    assert!(!e.contains("NOT applied"), "{e}");
    assert!(e.contains("may have been applied"), "{e}");
    assert!(e.contains("do not resend"), "{e}");
    h.fake.answer_next("POST", "/rows", 1, redirect(307));
    let e = h
        .fails(
            "coda_create_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "rows": [{"Name": "a"}]}),
        )
        .await;
    assert!(e.contains("NOT applied"), "{e}");
    h.close().await;
}

// ----- verify of an element replace -----

/// Symptom: `verify` of a replace of one element (`elementId`) did not
/// read the page before the write, so a line the page already had
/// elsewhere passed as written: replacing "ship it" with "Overview" (the
/// page's heading) verified as matching though Coda never applied it.
#[tokio::test]
async fn a_lost_element_replace_does_not_verify_by_text_already_on_the_page() {
    let h = start(&[]).await;
    h.fake.drop_content_updates();
    let v = h
        .ok(
            "coda_replace_page_content",
            json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "elementId": "cl-2", "content": "Overview", "verify": true}),
        )
        .await;
    assert_eq!(v["verification"]["matches"], false, "{v}");
    assert_eq!(
        v["verification"]["mismatches"][0]["intended"], "Overview",
        "{v}"
    );
    h.close().await;
}
