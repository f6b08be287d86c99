//! `ids::doc_id` and `ids::link` on arbitrary text. Oracles: an id read
//! is a fixed point (given back as a bare id it reads as itself) and
//! holds no `/`; a link is sent to Coda as it was read, so the doc id of
//! the link sent is the doc id the `--docs` check read from the text, and
//! writing a link out again changes nothing.
#![no_main]

use coda_mcp::ids::{doc_id, link};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let read = doc_id(raw);
    if let Ok(id) = &read {
        assert!(!id.is_empty(), "{raw:?}: empty id");
        assert!(!id.contains('/'), "{raw:?}: id {id:?} holds a slash");
        assert_eq!(
            doc_id(id).as_ref(),
            Ok(id),
            "{raw:?}: id {id:?} does not read as itself"
        );
    }
    if let Some(sent) = link(raw) {
        assert_eq!(
            link(&sent).as_ref(),
            Some(&sent),
            "{raw:?}: link not stable"
        );
        // Read again as a URL (written out, a link may lose its `//`:
        // then it is no URL to `doc_id`, which reads it as a bare id).
        if raw.contains("://") && sent.contains("://") {
            assert_eq!(
                doc_id(&sent).ok(),
                read.clone().ok(),
                "{raw:?}: the link sent ({sent:?}) names another doc than the one checked"
            );
        }
    }
});
