//! Text from Coda as it may reach a model or a log: the API token
//! replaced wherever an answer echoes it, and the characters that would
//! change how the text around them reads (line breaks, bidi overrides)
//! escaped, cut to a length. Used by the client's errors, the answer
//! parser's paths (`json`) and the tools' summaries.

/// What the API token is replaced with wherever an answer carries it.
pub(crate) const TOKEN_REDACTED: &str = "[API token]";

/// `s` (text from an answer: an error's message, where a redirect points,
/// a content type) with `secret` replaced, for an error: a server that
/// echoes the request's headers may put the token anywhere, the host name
/// included. ASCII case is ignored: a URL parser lowercases a host.
pub(crate) fn redact_text(s: &str, secret: &str) -> String {
    let (lower, needle) = (s.to_ascii_lowercase(), secret.to_ascii_lowercase());
    if needle.is_empty() || !lower.contains(&needle) {
        return s.to_owned();
    }
    tracing::warn!("Coda's answer contained the API token; it was replaced");
    // ASCII lowercasing keeps every byte offset, so `lower`'s match
    // positions are `s`'s.
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (i, _) in lower.match_indices(&needle) {
        out.push_str(&s[at..i]);
        out.push_str(TOKEN_REDACTED);
        at = i + needle.len();
    }
    out.push_str(&s[at..]);
    out
}

/// Whether `c` would change how the text around it reads rather than be
/// read itself: control characters (a newline starts what looks like a
/// line of its own), line and paragraph separators, and bidirectional
/// overrides and isolates (which reverse what follows on screen).
fn disguising(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Push `c`, escaped (`\n`, `\u{202e}`) when it is [`disguising`].
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if disguising(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// `s` with its control, line-separator and bidi characters escaped, so
/// that text from Coda stays on its line of a summary or an error and
/// reads in the order it is stored (JSON escapes them in
/// `structuredContent` already).
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(disguising) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out.into()
}

/// Text from Coda (an error's message, a name) as it may reach a model in
/// an error or a summary: at most `max` characters, the rest replaced by a
/// count of what was cut, and [`escape_controls`]. Coda's strings have no
/// length limit, and an error is returned whole, outside every result
/// budget.
pub fn model_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    for c in chars.by_ref().take(max) {
        push_escaped(&mut out, c);
    }
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("… ({rest} more characters)"));
    }
    out
}
