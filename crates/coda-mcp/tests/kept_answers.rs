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
