//! Internals for the fuzz targets in `fuzz/`, compiled only under
//! `--cfg fuzzing` (cargo-fuzz sets it). Thin wrappers, so that the modules
//! they reach keep their privacy in every other build.

use bytes::Bytes;
use http::HeaderMap;

use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::jsonrpc::Frame;
use crate::upstream::{Broken, Check};

/// The `X-Forwarded-Prefix` the legacy `endpoint` event would carry.
pub fn forwarded_prefix(headers: &HeaderMap) -> String {
    crate::http::legacy::forwarded_prefix(headers)
}

/// The legacy session a `POST /messages?…` names (`Err`: a 400).
pub fn query_session(uri: &http::Uri) -> Result<Option<String>, String> {
    crate::http::legacy::query_session(uri)
        .map(|s| s.map(String::from))
        .map_err(|e| e.to_string())
}

/// A JWT verifier holding the keys of `jwks`, that never fetches.
pub fn jwt_verifier(config: JwtConfig, jwks: &[u8]) -> Result<JwtVerifier, String> {
    JwtVerifier::with_jwks(config, jwks)
}

/// The flags of `argv` (without the program name), as the binary reads them.
pub fn args(argv: &[&str]) -> Result<crate::config::Args, String> {
    <crate::config::Args as argh::FromArgs>::from_args(&["mcp-proxy"], argv).map_err(|e| e.output)
}

/// Why the streaming check failed a long answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFailure {
    /// It stopped being JSON.
    NotJson,
    /// A member after `result` makes it not one plain result.
    BothMembers,
}

/// Runs the streaming check of a long answer (`upstream::check`) over
/// `head`, then `pieces`, then the line's `last` bytes. `None`: the head
/// was refused (the line is then read whole); otherwise what went on, all
/// of it, or why the answer failed.
pub fn check_answer(
    head: &[u8],
    pieces: &[&[u8]],
    last: &[u8],
) -> Option<Result<Vec<u8>, CheckFailure>> {
    let mut check = Check::new();
    let now = check.head(head)?;
    let mut out = head[..now].to_vec();
    let failure = |b: Broken| match b {
        Broken::NotJson => CheckFailure::NotJson,
        // A repeated `_meta` fails only a check that stamps; this one does not.
        Broken::BothMembers | Broken::RepeatedMeta | Broken::RepeatedFill => {
            CheckFailure::BothMembers
        }
    };
    for piece in pieces {
        match check.piece(Bytes::copy_from_slice(piece)) {
            Ok(went) => out.extend_from_slice(&went),
            Err(b) => return Some(Err(failure(b))),
        }
    }
    match check.end(Bytes::copy_from_slice(last)) {
        Ok(went) => out.extend_from_slice(&went),
        Err(b) => return Some(Err(failure(b))),
    }
    Some(Ok(out))
}

/// The key a client's request id is matched by in its session
/// (`upstream::routes::client_key`, through `jsonrpc::id_key`).
pub fn client_id_key(id: &[u8]) -> Box<[u8]> {
    crate::upstream::client_key(1, id).1
}

/// The proxy id a child's answer or progress token names.
pub fn parse_proxy_id(raw: &[u8]) -> Option<u64> {
    crate::upstream::parse_proxy_id(raw)
}

/// `params._meta.progressToken` replaced by the proxy id `id`, and the
/// client's own token.
pub fn rewrite_progress_token(frame: Frame, id: u64) -> (Frame, Option<Box<[u8]>>) {
    crate::upstream::rewrite_progress_token(frame, id)
}
