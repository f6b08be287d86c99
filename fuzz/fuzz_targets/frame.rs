//! `Frame::parse` on arbitrary bytes, strict (client input) and lenient
//! (child output). Oracle: a frame is only accepted when serde_json reads
//! the same bytes as JSON, and what the proxy writes on is JSON again.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::jsonrpc::Frame;

fuzz_target!(|data: &[u8]| {
    for strict in [true, false] {
        let Ok(frame) = Frame::parse(Bytes::copy_from_slice(data), strict) else {
            continue;
        };
        let line = frame.to_line();
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        assert!(
            serde_json::from_slice::<&serde_json::value::RawValue>(body).is_ok(),
            "accepted frame written on as non-JSON: {:?}",
            String::from_utf8_lossy(body)
        );
    }
});
