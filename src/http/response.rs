//! Response builders shared by every front-end: statuses, content types and
//! the SSE headers, in one place.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::jsonrpc::Message;
use crate::sse::{self, Body, empty, full};
use crate::tail::Answer;

/// 202 with an empty body: the only answer to notifications and responses.
pub fn accepted() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// 200 with a JSON body.
pub fn json_ok(body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// 200 with a JSON body sent as the pieces it is made of.
pub fn json_message(message: Message) -> Response<Body> {
    let mut r = Response::new(sse::parts(message.into_parts()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// 200 with a JSON body: the answer whole, or a long one's head and its
/// rest as it arrives (no `Content-Length` then). A long one whose rest
/// failed already is answered with its error ([`Answer::settled`]).
pub fn json_answer(answer: Answer) -> Response<Body> {
    match answer.settled() {
        Answer::Whole(message) => json_message(message),
        Answer::Streamed(head, tail) => {
            let mut r = Response::new(sse::streamed(head.into_parts(), tail));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

/// A JSON body with a status.
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    // Invariant: a Value built by the proxy serializes.
    let mut r = json_ok(Bytes::from(
        serde_json::to_vec(&body).expect("Value serializes"),
    ));
    *r.status_mut() = status;
    r
}

/// Headers every SSE response carries (transport.md §7.D).
pub fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// One response as an SSE stream of one event.
pub fn single_event(body: &[u8]) -> Response<Body> {
    sse_response(full(sse::event(None, None, body)))
}

/// A `200` of metrics in the Prometheus text format.
pub fn metrics_text(text: String) -> Response<Body> {
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}
