//! Internals for the fuzz targets in `fuzz/`, compiled only under
//! `--cfg fuzzing` (cargo-fuzz sets it). Thin wrappers, so that the items
//! they reach keep their privacy in every other build.

use std::time::Duration;

use crate::client::ApiRequest;
use crate::tools::Resume;

/// `Retry-After` read from one header value: `None` when the bytes are
/// not a header value at all, else what the client makes of it.
pub fn retry_after(value: &[u8]) -> Option<Option<Duration>> {
    let v = reqwest::header::HeaderValue::from_bytes(value).ok()?;
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::RETRY_AFTER, v);
    Some(crate::client::parse_retry_after(&h))
}

/// What a continuation token of a GET list at `segments` with `query`
/// is bound to.
pub fn list_identity(segments: &[&str], query: &[(String, String)]) -> String {
    let mut req = ApiRequest::get(segments);
    req.query = query.to_vec();
    crate::tools::list_identity(&req)
}

/// Where a list resumes: Coda's page token, the first page's limit, and
/// the items of that page already returned.
pub type Position = (Option<String>, Option<u32>, usize);

/// The `nextPageToken` handed out for resuming at `at` in the list `identity`.
pub fn encode_token(identity: &str, at: &Position) -> String {
    Resume {
        coda_token: at.0.as_deref().map(std::sync::Arc::from),
        limit: at.1,
        skip: at.2,
    }
    .encode(identity)
}

/// A `pageToken` read by the list `identity`, or why it is refused.
pub fn decode_token(tok: &str, identity: &str) -> Result<Position, String> {
    Resume::decode(tok, identity)
        .map(|r| (r.coda_token.map(|t| t.to_string()), r.limit, r.skip))
        .map_err(|e| e.to_string())
}
