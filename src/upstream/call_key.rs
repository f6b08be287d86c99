//! What a parked 2026-07-28 call's `requestState` is bound to besides its
//! principal ([`super::mrtr`]): the call's method and its `name` or `uri`.
//! Pure data, read from the request's own bytes.

use crate::jsonrpc::Frame;

/// What a parked call's `requestState` is bound to besides its principal:
/// the call's method and its `name` (or `uri`). The spec asks servers to
/// reject state presented by another principal or on another request
/// (`basic/patterns/mrtr`, server requirements); the arguments may differ
/// in a retry only in ways the child never sees, so they are not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallKey {
    method: Box<str>,
    name: Option<Box<str>>,
}

impl CallKey {
    /// The key of `call` (a `tools/call`, `prompts/get` or `resources/read`).
    pub fn of(call: &Frame) -> CallKey {
        let at = call
            .locate_in_params(&["name"])
            .or_else(|| call.locate_in_params(&["uri"]));
        let name = at
            .and_then(|r| serde_json::from_slice::<String>(&call.bytes()[r]).ok())
            .map(String::into_boxed_str);
        CallKey {
            method: call.method().unwrap_or_default().into(),
            name,
        }
    }
}
