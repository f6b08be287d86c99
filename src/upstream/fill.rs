//! What a 2026-07-28 client needs done to a 2025-era child's answer:
//! the members its results must have (`resultType`, and the caching
//! hints of list and read results), and the error codes that revision
//! gives back to the specification. The server's identity in each
//! result is [`super::stamp`]'s.

use crate::jsonrpc::{self, Frame};

/// What a 2026-07-28 client needs added to a 2025-era child's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// Nothing: same era on both sides.
    None,
    /// `resultType` (every 2026-07-28 result has one).
    Complete,
    /// `resultType` plus the caching hints of list and read results.
    Cacheable,
}

impl Fill {
    /// The raw members this fill adds at the front of an object result.
    pub(super) fn fields(&self) -> Option<&'static [u8]> {
        match self {
            Fill::None => None,
            Fill::Complete => Some(br#""resultType":"complete""#),
            Fill::Cacheable => Some(br#""resultType":"complete","ttlMs":0,"cacheScope":"private""#),
        }
    }
}

impl Fill {
    /// The keys of [`Fill::fields`]: a result that has one of its own is
    /// refused (`super::check::Broken::RepeatedFill`), since it would go
    /// on with the key twice.
    pub(super) fn keys(&self) -> &'static [&'static [u8]] {
        match self {
            Fill::None => &[],
            Fill::Complete => &[b"resultType"],
            Fill::Cacheable => &[b"resultType", b"ttlMs", b"cacheScope"],
        }
    }

    /// The code a 2026-07-28 client gets for the 2025-era child's error
    /// `code`, where the revision forbids passing it on (spec 2026-07-28
    /// `basic/index`, "Error Codes"): -32002, resource not found until
    /// 2025-11-25, is -32602 now (`server/resources`); any other code
    /// of -32020…-32099 is the specification's, and a child of an
    /// earlier revision cannot have meant what this one defines there
    /// (-32042, URL elicitation required, is 2025-11-25's), so it becomes
    /// -32603 with the child's message and data. `None`: unchanged.
    pub(super) fn error_code(&self, code: i64) -> Option<i64> {
        if *self == Fill::None {
            return None;
        }
        match code {
            -32002 => Some(jsonrpc::code::INVALID_PARAMS),
            -32099..=-32020 => Some(jsonrpc::code::INTERNAL_ERROR),
            _ => None,
        }
    }

    /// `answer`, the child's, with its error code as a 2026-07-28 client
    /// must get it (see [`Fill::error_code`]); only that value is
    /// rewritten.
    pub(super) fn error(&self, answer: Frame) -> Frame {
        if *self == Fill::None || !answer.is_error() {
            return answer;
        }
        let Some(at) = jsonrpc::locate(answer.bytes(), &["error", "code"]) else {
            return answer;
        };
        let code = jsonrpc::integer_code(&answer.bytes()[at.clone()]);
        match code.and_then(|c| self.error_code(c)) {
            Some(to) => answer.with_replaced(at, to.to_string().as_bytes()),
            None => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;

    #[test]
    fn only_a_modern_clients_answers_get_the_revisions_error_codes() {
        let error = |code: &str| {
            Frame::parse(
                Bytes::from(format!(
                    r#"{{"jsonrpc":"2.0","id":5,"error":{{"message":"m","code":{code},"data":{{"code":-32002}}}}}}"#
                )),
                false,
            )
            .unwrap()
        };
        let code = |f: &Frame| -> Value {
            serde_json::from_slice::<Value>(f.bytes()).unwrap()["error"].clone()
        };
        let modern = Fill::Complete.error(error("-32002"));
        assert_eq!(code(&modern)["code"], -32602);
        assert_eq!(code(&modern)["data"]["code"], -32002, "data is the child's");
        assert_eq!(
            code(&Fill::Cacheable.error(error("-32042")))["code"],
            -32603
        );
        assert_eq!(
            code(&Fill::Cacheable.error(error("-32019")))["code"],
            -32019
        );
        // Written with a fraction or an exponent, the same code (the
        // integer a JavaScript client reads): it was passed on unchanged,
        // -32002 where 2026-07-28 has -32602.
        let modern = Fill::Complete.error(error("-3.2002e4"));
        assert_eq!(code(&modern)["code"], -32602);
        assert_eq!(
            code(&Fill::Complete.error(error("-32042.0")))["code"],
            -32603
        );
        // A session-era client's answer is the child's.
        assert_eq!(code(&Fill::None.error(error("-32002")))["code"], -32002);
        // A result is never touched, whatever it holds.
        let result = Frame::parse(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":5,"result":{"error":{"code":-32002}}}"#),
            false,
        )
        .unwrap();
        assert_eq!(Fill::Complete.error(result.clone()).bytes(), result.bytes());
    }
}
