//! The streaming check of a long answer (`upstream::check`), fed a line
//! cut at fuzzer-chosen points, as the child's pipe would cut it. Only
//! lines whose head the proxy would pass on are checked (`result_head`
//! reads it and the check takes it), as in the worker.
//!
//! Oracles:
//! - when it passes, what went on is the line with bytes that are not
//!   UTF-8 replaced as `String::from_utf8_lossy` does, it is JSON per
//!   serde_json, and its top-level object has one `result`, no `error`
//!   or `method`, and no envelope member twice (the short path refuses
//!   such a line);
//! - when the repaired line is such a JSON object, it passes (a false
//!   alarm fails a good answer);
//! - the cuts do not change the verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_sidecar::fuzzing::{CheckFailure, check_answer};
use mcp_sidecar::jsonrpc;
use serde::de::{IgnoredAny, MapAccess, Visitor};

/// The top-level keys of a JSON object, decoded, in order, repeats kept.
struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(keys)
    }
}

fn keys(bytes: &[u8]) -> Option<Vec<String>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let keys = serde::Deserializer::deserialize_map(&mut de, Keys).ok()?;
    de.end().ok()?;
    Some(keys)
}

/// A good answer, as the short path (`Frame::parse`, lenient) reads a
/// whole one: one JSON object, with one `result`, no `error` and no
/// `method`, and no envelope member twice.
fn good(bytes: &[u8]) -> bool {
    keys(bytes).is_some_and(|keys| {
        let count = |name: &str| keys.iter().filter(|k| *k == name).count();
        count("result") == 1
            && count("error") == 0
            && count("method") == 0
            && ["id", "jsonrpc", "params"].iter().all(|k| count(k) <= 1)
    })
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(line: &[u8], cuts: &[usize]) -> Option<Result<Vec<u8>, CheckFailure>> {
    let (head, rest) = line.split_at(cuts[0]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for &cut in &cuts[1..] {
        pieces.push(&rest[at..cut - cuts[0]]);
        at = cut - cuts[0];
    }
    check_answer(head, &pieces, &rest[at..])
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    if data.len() < n {
        return;
    }
    let (cuts, line) = data.split_at(n);
    if line.is_empty() {
        return;
    }
    // The head ends at the first cut; the others cut the rest.
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| 1 + usize::from(c) * line.len() / 256)
        .map(|c| c.min(line.len()))
        .collect();
    // The head ends somewhere after `"result":` when there is one (the
    // worker offers only such heads), as far past it as the first cut says.
    if let Some(at) = line.windows(9).position(|w| w == b"\"result\":") {
        let after = at + 9;
        cuts[0] = (after + cuts[0] % (line.len() - after + 1)).clamp(1, line.len());
    }
    cuts.sort_unstable();
    cuts.dedup();
    if jsonrpc::result_head(&line[..cuts[0]]).is_none() {
        return;
    }
    let Some(verdict) = run(line, &cuts) else {
        return;
    };
    let repaired = String::from_utf8_lossy(line);
    match &verdict {
        Ok(out) => {
            assert_eq!(show(out), repaired, "what went on is not the repaired line");
            // A top-level key with a lone surrogate (`"\ud976"`) does not
            // decode: the check takes it for no member of the envelope
            // (it cannot decode keys past 42 bytes), where serde_json
            // reads no keys at all.
            let undecodable = keys(out).is_none()
                && serde_json::from_slice::<IgnoredAny>(out).is_ok()
                && out.windows(3).any(|w| w == b"\\ud" || w == b"\\uD");
            assert!(
                good(out) || undecodable,
                "passed an answer that is not one result: {:?}",
                show(out)
            );
        }
        Err(why) => assert!(
            !good(repaired.as_bytes()),
            "a good answer failed ({why:?}): {:?}",
            repaired
        ),
    }
    // The same head with the rest in one piece: the same verdict.
    let whole = run(line, &cuts[..1]).expect("the same head");
    assert_eq!(
        whole.as_ref().map_err(|_| ()),
        verdict.as_ref().map_err(|_| ()),
        "the cuts {cuts:?} changed the verdict on {:?}",
        show(line)
    );
});
