//! Hostile 2026-07-28 clients: header tricks, `requestState` replayed by
//! someone else or on another call, and `subscriptions/listen` filters
//! that ask for far more than a child should be made to track.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Proxy, STEP, SseStream, example, json_of};

const MODERN: &str = "2026-07-28";
const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";

fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// POSTs `body` as a 2026-07-28 request with the standard headers derived
/// from it, then `extra` (appended, so a name may occur twice).
async fn post(
    proxy: &Proxy,
    key: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    support::modern_post_as(proxy, key, body, extra).await
}

fn key_file(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("mcp-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("keys");
    std::fs::write(&p, format!("alice: {KEY_A}\nbob: {KEY_B}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_second_mcp_method_or_mcp_name_header_is_a_header_mismatch() {
    let proxy = Proxy::start(&[]).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"message":"hi"},"_meta":meta(json!({}))}});
    // The first copy says what the body says; an intermediary that reads
    // the last one would route on something else.
    for extra in [
        [("mcp-name", "locate")],
        [("mcp-method", "tools/list")],
        [("mcp-protocol-version", "2025-11-25")],
    ] {
        let r = post(&proxy, None, &call, &extra).await;
        assert_eq!(r.status(), 400, "{extra:?}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], -32020, "{extra:?}: {v}");
    }
    // The same request with one copy of each is served.
    let r = post(&proxy, None, &call, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["result"]["content"][0]["text"], "hi");
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_state_serves_only_its_principal_and_its_own_call() {
    // One child for everyone, so both principals reach the same parked call.
    let keys = key_file("state");
    let proxy = Proxy::start(&["--shared", "--api-key-file", &keys]).await;
    let m = meta(json!({"roots": {}}));
    let first = post(
        &proxy,
        Some(KEY_A),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"roots","arguments":{},"_meta":m}}),
        &[],
    )
    .await;
    let first = json_of(first).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].clone();
    let retry = |name: &str| {
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
            "name":name,"arguments":{},"_meta":m,
            "inputResponses":{"input":{"roots":[{"uri":"file:///from-someone"}]}},
            "requestState":state}})
    };
    // Bob holds alice's state: he neither answers her question nor gets her result.
    let bob = json_of(post(&proxy, Some(KEY_B), &retry("roots"), &[]).await).await;
    assert_eq!(bob["error"]["code"], -32602, "{bob}");
    // Alice's state on another call is refused too.
    let other = json_of(post(&proxy, Some(KEY_A), &retry("echo"), &[]).await).await;
    assert_eq!(other["error"]["code"], -32602, "{other}");
    // Neither used the state up: alice's own retry still completes her call.
    let mine = json_of(post(&proxy, Some(KEY_A), &retry("roots"), &[]).await).await;
    assert_eq!(mine["result"]["resultType"], "complete", "{mine}");
    assert_eq!(
        mine["result"]["content"][0]["text"],
        r#"[{"uri":"file:///from-someone"}]"#
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_listen_filter_subscribes_the_child_to_a_bounded_number_of_resources() {
    let proxy = Proxy::start_child(&["--shared"], &example("everything"), &[]).await;
    // Many distinct URIs, and the same one again and again.
    let mut uris: Vec<String> = (0..5000).map(|n| format!("test://r/{n}")).collect();
    uris.extend(std::iter::repeat_n("test://r/0".to_string(), 1000));
    let listen = json!({"jsonrpc":"2.0","id":"l","method":"subscriptions/listen","params":{
        "_meta":meta(json!({})),
        "notifications":{"resourceSubscriptions":uris}}});
    let r = post(&proxy, None, &listen, &[]).await;
    assert_eq!(r.status(), 200);
    let mut stream = SseStream::new(r);
    let ack = stream
        .next_within(Duration::from_secs(60))
        .await
        .expect("the acknowledgment");
    let ack: Value = serde_json::from_str(&ack.data).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    let accepted = ack["params"]["notifications"]["resourceSubscriptions"]
        .as_array()
        .expect("some resources accepted");
    assert!(
        !accepted.is_empty() && accepted.len() <= 1024,
        "accepted {} resources",
        accepted.len()
    );
    let mut seen = std::collections::HashSet::new();
    assert!(
        accepted.iter().all(|u| seen.insert(u.as_str().unwrap())),
        "each accepted once"
    );
    drop(stream);
    proxy.stop().await;
}

/// Regression: a request whose `_meta` lacked
/// `io.modelcontextprotocol/protocolVersion` (or held a number there) was
/// served (200) on the strength of the `MCP-Protocol-Version` header alone,
/// though 2026-07-28 makes the field required on every request and a
/// request missing it malformed: 400 with -32602 (`basic/index#_meta`).
#[tokio::test]
async fn a_request_without_its_protocol_version_in_meta_is_invalid_params() {
    let proxy = Proxy::start(&[]).await;
    let capabilities = json!({"io.modelcontextprotocol/clientCapabilities": {}});
    let mut number = capabilities.clone();
    number["io.modelcontextprotocol/protocolVersion"] = json!(20260728);
    for m in [capabilities, number] {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
            "name":"echo","arguments":{"message":"hi"},"_meta":m}});
        let r = post(&proxy, None, &call, &[]).await;
        assert_eq!(r.status(), 400, "{m}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], -32602, "{m}: {v}");
    }
    // With the field, the same call is served.
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"message":"hi"},"_meta":meta(json!({}))}});
    let r = post(&proxy, None, &call, &[]).await;
    assert_eq!(r.status(), 200);
    // A notification has no required fields: still accepted.
    let note = json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"});
    assert_eq!(post(&proxy, None, &note, &[]).await.status(), 202);
    proxy.stop().await;
}

/// Regression: the notifications of a `subscriptions/listen` stream whose
/// client did not read it were dropped once `--max-queue-bytes` waited,
/// and the stream stayed open: the client never learned that a resource
/// changed (or a list did), and had no reason to look again. A listen
/// stream has no answer to protect and cannot resume, so it is now cut
/// off instead: it ends, and the client listens anew.
#[tokio::test]
async fn a_listen_stream_that_is_not_read_is_cut_off_not_thinned() {
    let proxy = Proxy::start(&[]).await;
    let uri = format!("test://big/{}", "x".repeat(100_000));
    let listen = json!({"jsonrpc":"2.0","id":"l","method":"subscriptions/listen","params":{
        "_meta":meta(json!({})),
        "notifications":{"resourceSubscriptions":[uri]}}});
    let r = post(&proxy, None, &listen, &[]).await;
    assert_eq!(r.status(), 200);
    let mut stream = SseStream::new(r);
    let ack: Value = serde_json::from_str(&stream.next().await.unwrap().data).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    // 20 MB of updates, far more than the socket buffers hold, while the
    // stream is not read.
    let touch = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"touch","arguments":{"uri":uri},"_meta":meta(json!({}))}});
    for _ in 0..200 {
        let r = json_of(post(&proxy, None, &touch, &[]).await).await;
        assert_eq!(r["result"]["content"][0]["text"], "sent", "{r}");
    }
    // What was queued is there, then the stream ends (before: it stayed
    // open, silent, the rest of the updates gone).
    let mut updates = 0;
    while let Some(ev) = stream.next().await {
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(v["method"], "notifications/resources/updated");
        updates += 1;
    }
    assert!(updates < 200, "{updates}");
    proxy.stop().await;
}

/// Regression: a 2026-07-28 request (its `_meta` says so) whose
/// `MCP-Protocol-Version` held a byte outside visible ASCII, or came twice
/// with a session-era value first, got the session era's plain 400
/// (-32600), which a dual-era client reads as a legacy server's answer and
/// falls back to `initialize`. The revision counts a header with invalid
/// characters (or a second copy) as a header validation failure: -32020.
#[tokio::test]
async fn a_bad_version_header_on_a_modern_request_is_a_header_mismatch() {
    let proxy = Proxy::start(&[]).await;
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":meta(json!({}))}});
    let send = |versions: Vec<&'static [u8]>, body: Value| {
        let mut req = reqwest::Client::new()
            .post(proxy.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-method", "tools/list");
        for v in versions {
            req = req.header(
                "mcp-protocol-version",
                reqwest::header::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        async move {
            let r = tokio::time::timeout(STEP, req.body(body.to_string()).send())
                .await
                .unwrap()
                .unwrap();
            (
                r.status().as_u16(),
                json_of(r).await["error"]["code"].clone(),
            )
        }
    };
    for versions in [
        vec![&b"2026-07-28\xe9"[..]],
        vec![&b"2025-06-18"[..], &b"2026-07-28"[..]],
    ] {
        let shown = format!("{versions:?}");
        assert_eq!(
            send(versions, body.clone()).await,
            (400, json!(-32020)),
            "{shown}"
        );
    }
    // A session-era message with such a header keeps the session era's 400.
    let old = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    assert_eq!(
        send(vec![&b"2025-06-18\xe9"[..]], old).await,
        (400, json!(-32600))
    );
    proxy.stop().await;
}

/// Regression: the proxy learned a tool's `x-mcp-header` arguments only
/// from `tools/list` answers passing back to clients, and called a tool it
/// had not seen listed unchecked. A client that never listed (one that
/// cached the list, or a hostile one, right after the proxy started) could
/// send `Mcp-Param-Region: us` for a call whose body says `eu`, and be
/// served: a router on the header and the child on the body disagreed,
/// which the check exists to prevent. The proxy now lists the child's
/// tools itself when a call names a tool no listing has shown.
#[tokio::test]
async fn a_tool_never_listed_still_has_its_param_headers_checked() {
    let proxy = Proxy::start(&[]).await;
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"locate","arguments":{"region":"eu"},"_meta":meta(json!({}))}});
    let r = post(&proxy, None, &call, &[("mcp-param-region", "us")]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["code"], -32020);
    let r = post(&proxy, None, &call, &[]).await;
    assert_eq!(r.status(), 400, "the header the body calls for is missing");
    let r = post(&proxy, None, &call, &[("mcp-param-region", "eu")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(r).await["result"]["content"][0]["text"],
        "located in eu"
    );
    proxy.stop().await;
}

/// A child (`sh`) whose `tools/call` answers are 300 KB long and end in a
/// byte JSON cannot have. Each is written in one write (`dd` of a file
/// made at the start, into the proxy's 1 MiB pipe): the proxy begins
/// passing it on (past 128 KiB) and finds it broken in the same go, before
/// the response's head can have gone out. Every other answer is short.
const BREAKS_OFF: &str = r#"f=$(mktemp); trap 'rm -f "$f"' EXIT; head -c 300000 /dev/zero | tr '\0' a > "$f"; printf 'x\001y"}]}}\n' >> "$f"
while read l; do id=$(printf '%s' "$l" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'); [ -z "$id" ] && continue; case "$l" in
  *'"server/discover"'*) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}\n' "$id";;
  *'"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"b","version":"1"}}}\n' "$id";;
  *'"tools/call"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' "$id"; dd if="$f" bs=1M status=none;;
  *) printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
esac; done"#;

/// Regression: a long answer that broke off before its response's head
/// went out was answered with its request's error in -32000, which
/// 2026-07-28 says new implementations should not use (the proxy's own
/// failures are -32603 for that revision's clients): the tail that
/// carries such an answer, to a JSON body or an SSE stream, built its
/// error without knowing its client's era. Whether the head went out
/// first is a race, which the answer written in one go makes the error
/// win nearly always: each case is asked until its tail's error came
/// twice (a body that broke off after its head, and a line read whole
/// and refused, are the other correct outcomes).
#[tokio::test]
async fn a_long_answer_broken_off_before_its_head_is_a_2026_error() {
    let proxy = Proxy::start_child(&[], "sh", &["-c", BREAKS_OFF]).await;
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"big","arguments":{},"_meta":meta(json!({}))}});
    for accept in ["application/json", "text/event-stream"] {
        let mut whole = 0;
        for _ in 0..30 {
            let mut resp = support::modern_post(&proxy, &call, accept).await;
            assert_eq!(resp.status(), 200, "{accept}");
            let mut body = Vec::new();
            let ended = tokio::time::timeout(STEP, async {
                loop {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => return true,
                        Err(_) => return false,
                    }
                }
            })
            .await
            .expect("the body ends in time");
            if !ended {
                continue;
            }
            let text = String::from_utf8(body).unwrap();
            let data = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or(&text);
            let answer: Value = serde_json::from_str(data).unwrap();
            assert_eq!(answer["id"], 7, "{accept}: {answer}");
            assert_eq!(answer["error"]["code"], -32603, "{accept}: {answer}");
            // The line may also have been read whole first (then it is
            // refused as garbled): only a tail's error counts here.
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            if !message.contains("cut off before its end") {
                continue;
            }
            whole += 1;
            if whole == 2 {
                break;
            }
        }
        assert_eq!(whole, 2, "{accept}: the tail's error twice in 30 tries");
    }
    proxy.stop().await;
}

/// Regression: during the shutdown's drain a new request is refused (503)
/// before its revision was looked at, so a 2026-07-28 request got the
/// session era's refusal: -32000, which that revision says new
/// implementations should not use, and no id. It gets -32603 and its id
/// now (a GET with that revision's header: -32603); session-era refusals
/// are as they were.
#[tokio::test]
async fn a_request_refused_while_draining_is_refused_in_its_revision() {
    let proxy = Proxy::start(&["--shutdown-grace", "10s"]).await;
    // A call in flight keeps the drain going.
    let mut c = support::Client::new(&proxy.mcp());
    c.initialize("2025-11-25", json!({})).await;
    let c = c.sibling("application/json");
    let slow = tokio::spawn(async move { c.call(json!(1), "sleep", json!({"ms": 1500})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.token.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call = json!({"jsonrpc":"2.0","id":"late","method":"tools/call","params":{
        "name":"echo","arguments":{"message":"x"},"_meta":meta(json!({}))}});
    let r = post(&proxy, None, &call, &[]).await;
    assert_eq!(r.status(), 503);
    let v = json_of(r).await;
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!("late"), json!(-32603)),
        "{v}"
    );
    // Without the header too: its `_meta` names the revision.
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("accept", "application/json, text/event-stream")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert_eq!(v["id"], "late", "{v}");
    let r = reqwest::Client::new()
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(json_of(r).await["error"]["code"], -32603);
    // A session-era request is refused as before.
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32000, "{v}");
    assert!(v.get("id").is_none(), "{v}");
    let answer = tokio::time::timeout(STEP, slow).await.unwrap().unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "slept 1500");
    tokio::time::timeout(STEP, proxy.task)
        .await
        .expect("the proxy stops in time")
        .unwrap()
        .ok();
}

/// A 2026-07-28 request the proxy refuses as it reads it is answered by
/// its id when that can be read (`basic/index`, "Error Responses"): a
/// lone surrogate in its progress token, a number no double holds in its
/// arguments, a `jsonrpc` other than "2.0". An id that is itself the
/// fault, or cannot be read, leaves the error without one.
#[tokio::test]
async fn a_request_refused_as_it_is_read_keeps_its_readable_id() {
    let proxy = Proxy::start(&[]).await;
    let meta = meta(json!({})).to_string();
    let raw = |id: &str, jsonrpc: &str, extra: &str| {
        format!(
            r#"{{"jsonrpc":"{jsonrpc}","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"x"{extra}}},"_meta":{meta}}}}}"#
        )
    };
    let token =
        raw(r#""t1""#, "2.0", "").replace(r#""_meta":{"#, r#""_meta":{"progressToken":"\ud800","#);
    let cases = [
        (token, 400, -32600, Some(json!("t1"))),
        (
            raw("7", "2.0", r#","n":1e400"#),
            400,
            -32700,
            Some(json!(7)),
        ),
        (raw("3", "1.0", ""), 400, -32600, Some(json!(3))),
        (raw(r#""\ud800""#, "2.0", ""), 400, -32600, None),
        (raw("null", "2.0", ""), 400, -32600, None),
    ];
    for (body, status, code, id) in cases {
        let r = tokio::time::timeout(
            STEP,
            reqwest::Client::new()
                .post(proxy.mcp())
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", "tools/call")
                .header("mcp-name", "echo")
                .body(body.clone())
                .send(),
        )
        .await
        .expect("an answer in time")
        .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert_eq!(v.get("id").cloned(), id, "{body}: {v}");
    }
}
