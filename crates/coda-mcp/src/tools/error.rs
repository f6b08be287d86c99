//! Why a tool call fails: [`ToolError`], which becomes a tool result with
//! `isError: true`. A leaf of the tools: it imports no tool module, so the
//! shared code, the checks, the toolsets, resources and the server all
//! take it from here.

use crate::client::CodaError;
use crate::ids::DocIdError;

/// Said by a write tool's call that failed before sending any write
/// request, in the words of [`CodaError::NotSent`].
pub const NOT_SENT: &str = "the write was NOT sent to Coda, so it was NOT applied";

/// Longest error text returned (characters): an error reaches the model
/// whole, outside every result budget, and may echo an argument of any
/// size. A longer one keeps its start (what failed) and its end (whether
/// it was applied, what to do), with the middle left out.
pub const MAX_ERROR_CHARS: usize = 4000;

/// `text` within [`MAX_ERROR_CHARS`]: its first 2500 and last 1200
/// characters around a count of what was left out.
pub fn bounded_error(text: String) -> String {
    let n = text.chars().count();
    if n <= MAX_ERROR_CHARS {
        return text;
    }
    let (head, tail) = (2500, 1200);
    tracing::info!(chars = n, "error text cut to {MAX_ERROR_CHARS} characters");
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!(
        "{start} … ({} characters left out) … {end}",
        n - head - tail
    )
}

/// Ids listed when a name is shared by several objects.
pub const NAME_CANDIDATES_SHOWN: usize = 10;

/// Why a tool call failed. Becomes a tool result with `isError: true`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: String, reason: String },
    #[error("{0}")]
    Coda(#[from] CodaError),
    #[error("page export failed: {0}")]
    ExportFailed(String),
    /// What Coda holds is more than this server reads in one call (a page
    /// of more elements than a plain-text read takes): refused whole rather
    /// than cut without a word.
    #[error("{0}")]
    TooLarge(String),
}

impl ToolError {
    /// Whether the failed write may have been applied (see
    /// [`CodaError::outcome_unknown`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ToolError::Coda(e) if e.outcome_unknown())
    }

    /// The error's text as the tool call being run reports it: a write
    /// tool's call that fails before sending any write request also says
    /// that nothing was applied ([`NOT_SENT`]), unless the error already
    /// says it was not sent.
    pub fn call_text(&self) -> String {
        let says_so = matches!(
            self,
            ToolError::Coda(CodaError::NotSent { .. } | CodaError::NotAllowed(_))
        );
        if says_so || !crate::call::write_unsent() {
            return bounded_error(self.to_string());
        }
        bounded_error(format!("{self}; {NOT_SENT}"))
    }

    /// Whether the failed write never reached Coda ([`CodaError::NotSent`]).
    pub fn not_sent(&self) -> bool {
        matches!(self, ToolError::Coda(CodaError::NotSent { .. }))
    }

    pub fn arg(name: &str, reason: impl Into<String>) -> Self {
        ToolError::InvalidArgument {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// The refusal of a name that several objects share (Coda would use an
    /// arbitrary one of them), listing the candidates' `ids` (`more`: there
    /// are others besides them).
    pub fn ambiguous(
        arg: &str,
        raw: &str,
        kind: &str,
        scope: &str,
        ids: &[&str],
        more: bool,
    ) -> Self {
        let shown: Vec<&str> = ids.iter().take(NAME_CANDIDATES_SHOWN).copied().collect();
        Self::arg(
            arg,
            format!(
                "{}{} {kind}s of {scope} are named {raw:?} ({}); Coda would use an arbitrary one, so the call was refused and nothing was written: give the {kind} id",
                ids.len(),
                if more { "+" } else { "" },
                shown.join(", ")
            ),
        )
    }
}

/// A doc argument that names no doc is an invalid `docId` argument.
impl From<DocIdError> for ToolError {
    fn from(e: DocIdError) -> Self {
        ToolError::arg("docId", e.reason)
    }
}

pub type ToolResult<T> = Result<T, ToolError>;
