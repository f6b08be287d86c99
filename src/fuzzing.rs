//! Internals for the fuzz targets in `fuzz/`, compiled only under
//! `--cfg fuzzing` (cargo-fuzz sets it). Thin wrappers, so that the modules
//! they reach keep their privacy in every other build.

use http::HeaderMap;

use crate::auth::jwt::{JwtConfig, JwtVerifier};

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
