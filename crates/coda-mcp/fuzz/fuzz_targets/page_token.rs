//! Continuation tokens (`cm1.…`). Input: two lists (path segments and
//! query, from the fuzzer), a position in the first, an edit of the
//! token, and a forged token. Oracles: a token reads back, in the list
//! that handed it out, as the position it was made for; any other list
//! (other segments, or another query besides `pageToken` and `limit`)
//! refuses it; an edited token is refused or reads as that same
//! position, never another; and a token the fuzzer forges never reads
//! as a position in a list unless it is the token that list would hand
//! out for it.
#![no_main]

use coda_mcp::fuzzing::{Position, decode_token, encode_token, list_identity};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

type List = (Vec<String>, Vec<(String, String)>);

/// A list request the client would send: no segment empty, `.` or `..`
/// (those are refused before sending, see `ApiRequest::invalid_segment`).
fn list(u: &mut Unstructured) -> Result<List> {
    let segments: Vec<String> = u.arbitrary()?;
    if segments
        .iter()
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(libfuzzer_sys::arbitrary::Error::IncorrectFormat);
    }
    Ok((segments, u.arbitrary()?))
}

/// The list a token binds: the segments, and the query without the
/// parameters the token carries, in order.
fn bound(l: &List) -> (Vec<String>, Vec<(String, String)>) {
    let mut q: Vec<_> =
        l.1.iter()
            .filter(|(k, _)| k != "pageToken" && k != "limit")
            .cloned()
            .collect();
    q.sort();
    (l.0.clone(), q)
}

fn identity(l: &List) -> String {
    let segs: Vec<&str> = l.0.iter().map(String::as_str).collect();
    list_identity(&segs, &l.1)
}

fn run(u: &mut Unstructured) -> Result<()> {
    let a = list(u)?;
    let mut b = match u.int_in_range(0..=2u8)? {
        0 => a.clone(),
        1 => list(u)?,
        // The list whose request reads as the same text: segments split
        // again at `/`, query pairs split again at line breaks and `=`.
        _ => {
            let segments: Vec<String> = a.0.join("/").split('/').map(str::to_owned).collect();
            let text: Vec<String> = a.1.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query = text
                .join("\n")
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (l.to_owned(), String::new()),
                })
                .collect();
            if segments
                .iter()
                .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Ok(());
            }
            (segments, query)
        }
    };
    // Often: the same list with one query value changed.
    if u.arbitrary()?
        && let Some(p) = b.1.first_mut()
    {
        p.1.push_str(&u.arbitrary::<String>()?);
    }
    let coda: Option<String> = u.arbitrary()?;
    // Coda's empty token is "no more pages": never a position.
    let coda = coda.filter(|t| !t.is_empty());
    let limit: Option<u32> = u.arbitrary::<Option<u32>>()?.map(|l| l.max(1));
    let skip = u.int_in_range(0..=100_000usize)?;
    let at: Position = (coda, limit, skip);
    let (ia, ib) = (identity(&a), identity(&b));
    let tok = encode_token(&ia, &at);
    assert_eq!(
        decode_token(&tok, &ia).as_ref(),
        Ok(&at),
        "{tok:?} in {ia:?}"
    );
    if bound(&a) != bound(&b) {
        assert!(
            decode_token(&tok, &ib).is_err(),
            "token of {a:?} read by {b:?}: {tok:?}"
        );
    }
    // An edit: replace a byte range of the token with fuzzer bytes.
    let start = u.int_in_range(0..=tok.len())?;
    let end = u.int_in_range(start..=tok.len())?;
    let with: String = u.arbitrary()?;
    if tok.is_char_boundary(start) && tok.is_char_boundary(end) {
        let edited = format!("{}{with}{}", &tok[..start], &tok[end..]);
        if edited != tok
            && let Ok(got) = decode_token(&edited, &ia)
        {
            assert_eq!(got, at, "edited {edited:?} of {tok:?} reads elsewhere");
        }
    }
    // A forged token.
    let forged: String = u.arbitrary()?;
    if let Ok(got) = decode_token(&forged, &ia) {
        assert_eq!(
            encode_token(&ia, &got),
            forged,
            "forged {forged:?} reads as {got:?}"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
