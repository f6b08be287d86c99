//! OAuth 2.0 Protected Resource Metadata (RFC 9728), served when the proxy
//! acts as a resource server (`--auth-server`, `--public-url`), and the
//! `WWW-Authenticate` challenges that point at it (transport.md §5, §7.F).
//!
//! The document lives at `/.well-known/oauth-protected-resource` and at the
//! path-aware `/.well-known/oauth-protected-resource<mcp-path>`; its
//! `resource` is exactly the public MCP URL (`--public-url` + `--path`),
//! because strict clients reject a mismatch.

use serde_json::{Value, json};

/// The well-known prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What the metadata says, fixed at start.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// The public MCP URL.
    pub resource: String,
    /// Authorization servers (issuer URLs).
    pub authorization_servers: Vec<String>,
    /// Scopes a token needs.
    pub scopes: Vec<String>,
    /// Path-aware metadata URL, for `resource_metadata=` in challenges.
    pub url: String,
    /// The path the path-aware document is served at (local, without the origin).
    pub local_path: String,
}

/// Splits `scheme://authority[/path]` into (origin, path).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let at = rest.find('/').unwrap_or(rest.len());
    if at == 0 {
        return None;
    }
    Some((&url[..scheme.len() + 3 + at], &rest[at..]))
}

impl ResourceMetadata {
    /// Metadata for the MCP endpoint at `public_url` (the URL clients use,
    /// a base such as `https://mcp.example.com` to which `mcp_path` is added).
    pub fn new(
        public_url: &str,
        mcp_path: &str,
        authorization_servers: Vec<String>,
        scopes: Vec<String>,
    ) -> Result<ResourceMetadata, String> {
        let base = public_url.trim_end_matches('/');
        let (origin, prefix) = split_url(base).ok_or_else(|| {
            format!("--public-url: expected an http(s) URL such as https://mcp.example.com, got {public_url:?}")
        })?;
        if base.contains(['?', '#']) {
            return Err("--public-url must not have a query or fragment".into());
        }
        let path = format!("{prefix}{mcp_path}");
        Ok(ResourceMetadata {
            resource: format!("{origin}{path}"),
            authorization_servers,
            scopes,
            url: format!("{origin}{WELL_KNOWN}{path}"),
            local_path: format!("{WELL_KNOWN}{mcp_path}"),
        })
    }

    /// Whether `path` is one of the metadata paths.
    pub fn serves(&self, path: &str) -> bool {
        path == WELL_KNOWN
            || path == self.local_path
            || self.url.ends_with(path) && path.starts_with(WELL_KNOWN)
    }

    /// The JSON document.
    pub fn document(&self) -> Value {
        let mut doc = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcp-proxy",
        });
        if !self.scopes.is_empty() {
            doc["scopes_supported"] = json!(self.scopes);
        }
        doc
    }
}

/// A `WWW-Authenticate: Bearer …` value. `error` is an RFC 6750 code;
/// the description must not repeat anything the client sent.
pub fn challenge(
    metadata: Option<&ResourceMetadata>,
    scopes: &[String],
    error: Option<(&str, &str)>,
) -> String {
    let mut parts = vec![r#"realm="mcp-proxy""#.to_string()];
    if let Some((code, description)) = error {
        parts.push(format!(r#"error="{code}""#));
        let safe: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
            .collect();
        parts.push(format!(r#"error_description="{safe}""#));
    }
    if !scopes.is_empty() {
        parts.push(format!(r#"scope="{}""#, scopes.join(" ")));
    }
    if let Some(m) = metadata {
        parts.push(format!(r#"resource_metadata="{}""#, m.url));
    }
    format!("Bearer {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_and_metadata_url_are_path_aware() {
        let m = ResourceMetadata::new(
            "https://mcp.example.com/",
            "/mcp",
            vec!["https://auth.example.com".into()],
            vec![],
        )
        .unwrap();
        assert_eq!(m.resource, "https://mcp.example.com/mcp");
        assert_eq!(
            m.url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert!(m.serves("/.well-known/oauth-protected-resource"));
        assert!(m.serves("/.well-known/oauth-protected-resource/mcp"));
        assert!(!m.serves("/.well-known/oauth-protected-resource/other"));
        let behind =
            ResourceMetadata::new("https://h.example/tools", "/mcp", vec![], vec![]).unwrap();
        assert_eq!(behind.resource, "https://h.example/tools/mcp");
        assert_eq!(
            behind.url,
            "https://h.example/.well-known/oauth-protected-resource/tools/mcp"
        );
        assert!(behind.serves("/.well-known/oauth-protected-resource/tools/mcp"));
        assert!(ResourceMetadata::new("mcp.example.com", "/mcp", vec![], vec![]).is_err());
    }

    #[test]
    fn challenges_carry_metadata_scope_and_error() {
        let m = ResourceMetadata::new("https://a.example", "/mcp", vec![], vec![]).unwrap();
        let c = challenge(
            Some(&m),
            &["mcp:tools".into()],
            Some(("invalid_token", "token \"expired\"")),
        );
        assert_eq!(
            c,
            r#"Bearer realm="mcp-proxy", error="invalid_token", error_description="token expired", scope="mcp:tools", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp""#
        );
    }
}
