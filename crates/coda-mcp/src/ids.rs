//! Doc ids as users give them: a bare id, or a Coda browser or API URL
//! that contains one. Pure parsing with no I/O, so that the configuration
//! (`--docs`), the server's allow-list, resources and tools all read doc
//! arguments the same way.

/// Why a doc argument names no doc. Its message is the one a tool gives
/// for an invalid `docId` argument, and tools turn it into that error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid argument `docId`: {reason}")]
pub struct DocIdError {
    pub reason: String,
}

impl DocIdError {
    fn new(reason: impl Into<String>) -> Self {
        DocIdError {
            reason: reason.into(),
        }
    }
}

/// Extract a doc id from an id or a Coda browser/API URL.
///
/// `https://coda.io/d/Launch-Hub_dAbCDeFGH/Page_su1`, `https://coda.io/d/_dAbCDeFGH`
/// and `…/apis/v1/docs/AbCDeFGH/…` all give `AbCDeFGH`.
pub fn doc_id(raw: &str) -> Result<String, DocIdError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(DocIdError::new("must not be empty"));
    }
    if !raw.contains("://") {
        if raw.contains('/') {
            return Err(DocIdError::new("expected a doc id or a Coda URL"));
        }
        return Ok(raw.to_owned());
    }
    let url =
        reqwest::Url::parse(raw).map_err(|e| DocIdError::new(format!("not a valid URL: {e}")))?;
    let segs: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    for (i, s) in segs.iter().enumerate() {
        if *s == "d"
            && let Some(next) = segs.get(i + 1)
            && let Some(pos) = next.rfind("_d")
        {
            // `Name_dAbC`: a slug holds no `_`, an id may. With `_d` twice
            // the doc is not known: the last one was taken here, and a
            // resolver that takes the first reads another doc.
            if next.matches("_d").count() > 1 {
                return Err(DocIdError::new(
                    "the URL names its doc ambiguously (`_d` more than once in /d/…): give the doc id",
                ));
            }
            let id = &next[pos + 2..];
            if !id.is_empty() {
                return Ok(id.to_owned());
            }
        }
        if *s == "docs"
            && i > 0
            && segs[i - 1] == "v1"
            && let Some(id) = segs.get(i + 1).filter(|id| !id.is_empty())
        {
            return Ok((*id).to_owned());
        }
    }
    Err(DocIdError::new(
        "URL does not contain a doc id (expected …/d/<name>_d<docId>…)",
    ))
}

/// A link as it is sent to Coda (`/resolveBrowserLink`): parsed and
/// written out again, so that Coda reads the URL that [`doc_id`] (and with
/// it the `--docs` allow-list) read: dot segments resolved (`/d/_dA/../_dB`
/// is `/d/_dB`), backslashes as slashes. `None` for text that is not a URL,
/// and for one whose written form reads back as another URL (a `file:`
/// URL whose path holds a drive letter loses its host when read again):
/// Coda would read that other URL, not the one checked.
pub fn link(raw: &str) -> Option<String> {
    let sent = String::from(reqwest::Url::parse(raw.trim()).ok()?);
    let again = reqwest::Url::parse(&sent).ok()?;
    (again.as_str() == sent).then_some(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_accepts_ids_and_browser_urls() {
        assert_eq!(doc_id("AbCDeFGH").unwrap(), "AbCDeFGH");
        assert_eq!(
            doc_id("https://coda.io/d/Launch-Hub_dAbCDeFGH/Status_su1#x").unwrap(),
            "AbCDeFGH"
        );
        assert_eq!(doc_id("https://coda.io/d/_dAbC-De_F").unwrap(), "AbC-De_F");
        assert_eq!(
            doc_id("https://coda.io/apis/v1/docs/AbCDeFGH/pages").unwrap(),
            "AbCDeFGH"
        );
    }

    #[test]
    fn a_link_is_sent_as_it_was_read() {
        assert_eq!(
            link("https://coda.io/d/_ddoc2/../_ddoc1").as_deref(),
            Some("https://coda.io/d/_ddoc1")
        );
        assert_eq!(
            link(" https://coda.io/d/_ddoc2/%2E%2e/_ddoc1#x").as_deref(),
            Some("https://coda.io/d/_ddoc1#x")
        );
        assert_eq!(
            doc_id("https://coda.io/d/_ddoc2/../_ddoc1").unwrap(),
            "doc1"
        );
        assert!(doc_id("https://coda.io/d/Wiki_ddoc2_ddoc1").is_err());
        assert!(link("not a url").is_none());
    }

    /// Regression (fuzz target ids): a link was sent as it was written
    /// out after parsing, but some written forms read back as another URL
    /// (here the host `e)` is dropped on the second reading), so Coda was
    /// sent a URL other than the one the `--docs` check read.
    #[test]
    fn a_link_that_reads_back_as_another_is_not_sent() {
        let raw = "\u{10}file:/\\e)//s:/z00\n//J&/J\u{2}:/../J+";
        assert_eq!(link(raw), None);
        for ok in [
            "https://coda.io/d/_ddoc1",
            "https://coda.io/d/Name_ddoc1/Page_su1#x",
        ] {
            assert_eq!(link(ok).as_deref(), Some(ok));
        }
    }

    #[test]
    fn doc_id_rejects_urls_without_a_doc() {
        let err = doc_id("https://coda.io/workspaces/ws-1").unwrap_err();
        assert!(err.to_string().contains("`docId`"), "{err}");
        assert!(doc_id("").is_err());
    }
}
