//! Regression: a list a composite tool gathered whole (`list_all`: the
//! stats of a doc, a table's summary, a page's plain text, a search) gave
//! its pages' room in `--max-read-bytes` back as soon as the list was
//! read, though the tool kept every item until its result was built,
//! while it read more lists. `coda_get_document_stats` on a doc of 3000
//! tables held their parse (megabytes) for as long as its last list took,
//! with `coda_rate_limit_status` showing 0 bytes held. Now the items hold
//! their room until the tool drops them ([`coda_mcp::budget::Kept`]).

#[path = "support/fake_coda.rs"]
mod fake_coda;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::start;
use serde_json::json;

#[tokio::test]
async fn a_composites_gathered_items_hold_their_room_until_it_is_done() {
    let h = start(&[]).await;
    h.fake.add_tables(3000);
    h.fake.set_max_page(100);
    // The last list of the stats is held back: the tables are read and
    // kept meanwhile.
    h.fake.delay("GET", "/controls", Duration::from_secs(4));
    let stats = h.call("coda_get_document_stats", json!({"docId": "doc1"}));
    let probe = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        // Every page of tables read, and the controls asked for.
        let mut last = usize::MAX;
        loop {
            assert!(Instant::now() < deadline, "the tables were never read");
            let read = h.fake.arrived_at("GET", "/docs/doc1/tables");
            if read == last && h.fake.arrived_at("GET", "/controls") >= 1 {
                break;
            }
            last = read;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let v = h.ok("coda_rate_limit_status", json!({})).await;
        v["readBudget"]["heldBytes"].as_u64().unwrap()
    };
    let (r, held) = tokio::join!(stats, probe);
    assert!(r.is_error != Some(true), "{}", harness::text(&r));
    let v = r.structured_content.unwrap();
    assert!(v["counts"]["tables"].as_u64().unwrap() >= 3000, "{v}");
    // 3000 tables of the fake are over 1 MB of text, several parsed.
    assert!(
        held > 1024 * 1024,
        "the gathered tables held {held} bytes of --max-read-bytes"
    );
    // And all of it comes back once the call is done.
    let v = h.ok("coda_rate_limit_status", json!({})).await;
    assert_eq!(v["readBudget"]["heldBytes"], 0, "{v}");
    h.close().await;
}

/// Regression: the columns cached for the checks of row writes (60 s, up
/// to 256 tables) were bounded in tables, not bytes: a table whose select
/// lists carry 5000 options each takes megabytes parsed, so 256 of them
/// could hold gigabytes, outside `--max-read-bytes` and any other bound.
/// Now the cache holds at most `--column-cache-bytes` of columns (by the
/// room their parse took); a table's columns larger than that are not
/// cached, and each write reads them again.
#[tokio::test]
async fn the_column_cache_is_bounded_in_bytes() {
    // A table with a select column, of 5000 options: ~100 KB of text.
    let update = json!({"docId": "doc2", "tableIdOrName": "grid-projects",
        "rowIdOrName": "i-p1", "values": {"Budget": 1}});
    for (cache, reads) in [("65536", 2), ("67108864", 1)] {
        let h = start(&["--column-cache-bytes", cache]).await;
        h.fake.add_projects_table();
        h.fake.add_select_options(5000);
        for _ in 0..2 {
            h.ok("coda_update_row", update.clone()).await;
        }
        assert_eq!(
            h.fake.arrived_at("GET", "/columns"),
            reads,
            "--column-cache-bytes {cache}"
        );
        h.close().await;
    }
}

/// Regression: a bulk update by row kept Coda's whole answer to each of
/// its (up to 500) updates until its result was built, however large:
/// 20 answers of 20 KB made a 400 KB result, which the result budget then
/// cut by dropping whole rows from `results`, so 16 of the 20 updates,
/// all accepted, were not reported at all. Coda's answers are now kept
/// only while they fit the result budget; past it a row carries its
/// `requestId` without Coda's answer, and a `note` says so.
#[tokio::test]
async fn a_bulk_update_keeps_codas_answers_only_within_the_result_budget() {
    const UPDATES: usize = 20;
    let h = start(&[]).await;
    let answer = json!({"requestId": "r-big", "id": "i-1", "pad": "x".repeat(20_000)});
    h.fake.answer_next(
        "PUT",
        "/rows/i-1",
        UPDATES,
        fake_coda::Hostile {
            status: 202,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&answer).unwrap(),
            ..Default::default()
        },
    );
    let updates: Vec<_> = (0..UPDATES)
        .map(|i| json!({"rowIdOrName": "i-1", "values": {"Points": i}}))
        .collect();
    let v = h
        .ok(
            "coda_bulk_update_rows",
            json!({"docId": "doc1", "tableIdOrName": "grid-tasks", "updates": updates}),
        )
        .await;
    assert_eq!(v["successful"], UPDATES, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), UPDATES, "every update reported: {v}");
    assert!(results.iter().all(|r| r["requestId"] == "r-big"), "{v}");
    let with_data = results.iter().filter(|r| r.get("data").is_some()).count();
    assert!(with_data > 0 && with_data < UPDATES, "{with_data}");
    assert!(
        v["note"].as_str().unwrap().contains("--max-result-bytes"),
        "{v}"
    );
    h.close().await;
}

/// Regression: `coda_duplicate_page` kept Coda's whole answer about the
/// page it copies across the page's export (its polls and its download),
/// outside `--max-read-bytes`: its room went back when the answer was
/// returned. A page answered with a 20 MB subtitle held 20 MB (more
/// parsed) while `coda_rate_limit_status` showed 0 bytes held. Now only
/// what the copy takes of it (ids, icon, subtitle) is kept, counted when
/// it is more than a little.
#[tokio::test]
async fn a_page_kept_across_its_export_holds_its_room() {
    use fake_coda::Hostile;
    let h = start(&["--max-result-bytes", "1000000"]).await;
    let page = format!(
        r#"{{"id":"canvas-overview","type":"page","name":"Overview","href":"x","browserLink":"x","contentType":"canvas","isHidden":false,"isEffectivelyHidden":false,"children":[],"subtitle":"{}"}}"#,
        "s".repeat(20_000_000)
    );
    // The first GET of the page checks its id; the second is the copy's.
    h.fake.answer_after(
        "GET",
        "/pages/canvas-overview",
        1,
        Hostile {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: page.into_bytes(),
            endless: false,
        },
    );
    // The export's status is held back: the page is kept meanwhile.
    h.fake.delay("GET", "/export/", Duration::from_secs(3));
    let copy = h.call(
        "coda_duplicate_page",
        json!({"docId": "doc1", "pageIdOrName": "canvas-overview", "newName": "Copy"}),
    );
    let probe = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.fake.arrived_at("GET", "/export/") == 0 {
            assert!(Instant::now() < deadline, "the export was never polled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = h.ok("coda_rate_limit_status", json!({})).await;
        v["readBudget"]["heldBytes"].as_u64().unwrap()
    };
    let (_r, held) = tokio::join!(copy, probe);
    assert!(
        held >= 20_000_000,
        "the page kept across its export held {held} bytes of --max-read-bytes"
    );
    let v = h.ok("coda_rate_limit_status", json!({})).await;
    assert_eq!(v["readBudget"]["heldBytes"], 0, "{v}");
    h.close().await;
}

/// Regression: columns too large for `--column-cache-bytes` are not
/// cached, and their room in `--max-read-bytes` went back as they were
/// read, while the write that read them kept them across all its
/// requests (a bulk update's up to 500 PUTs): held, counted nowhere. A
/// table whose select column has 5000 options, --column-cache-bytes
/// 65536: during the bulk update's PUT `coda_rate_limit_status` showed 0
/// bytes held. They now keep their room while the call keeps them.
#[tokio::test]
async fn columns_too_large_to_cache_hold_their_room_while_a_write_keeps_them() {
    let h = start(&["--column-cache-bytes", "65536"]).await;
    h.fake.add_projects_table();
    h.fake.add_select_options(5000);
    h.fake.delay("PUT", "/rows/i-p1", Duration::from_secs(3));
    let update = h.call(
        "coda_bulk_update_rows",
        json!({"docId": "doc2", "tableIdOrName": "grid-projects",
            "updates": [{"rowIdOrName": "i-p1", "values": {"Budget": 1}}]}),
    );
    let probe = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.fake.arrived_at("PUT", "/rows/i-p1") == 0 {
            assert!(Instant::now() < deadline, "the update was never sent");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = h.ok("coda_rate_limit_status", json!({})).await;
        v["readBudget"]["heldBytes"].as_u64().unwrap()
    };
    let (r, held) = tokio::join!(update, probe);
    assert!(r.is_error != Some(true), "{}", harness::text(&r));
    assert!(
        held > 65536,
        "the columns kept across the write held {held} bytes of --max-read-bytes"
    );
    let v = h.ok("coda_rate_limit_status", json!({})).await;
    assert_eq!(v["readBudget"]["heldBytes"], 0, "{v}");
    h.close().await;
}
