//! Regression: what a child sends its clients that is not an answer (its
//! sampling, elicitation and roots requests, its notifications) could be
//! held forever, starve other sessions, be routed to the wrong client or
//! be copied once per session however large: one session that never
//! answered filled the table every session shares, a request whose session
//! ended or whose client never answered was never answered at all, and a
//! child that reused one of its ids while the first was unanswered had the
//! first's entry replaced. Each test plays the broken child (`everything`'s
//! `misbehave_emit` writes the child's requests) or the silent client, with
//! the child's stdin recorded through `tee` so the test sees every answer
//! the child gets; every wait is bounded.

mod support;

use serde_json::{Value, json};
use std::path::PathBuf;
use support::{Client, Proxy, STEP, SseStream, eventually, example, read_messages_lenient};

/// A child that is `everything` with its stdin recorded in a file.
struct Recorded {
    log: PathBuf,
    script: String,
}

impl Recorded {
    fn new(name: &str) -> Recorded {
        let log = std::env::temp_dir().join(format!(
            "mcp-sidecar-c2c-{name}-{}-{}.log",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let script = format!(
            "tee -a '{}' | exec '{}'",
            log.display(),
            example("everything")
        );
        Recorded { log, script }
    }

    async fn start(&self, flags: &[&str]) -> Proxy {
        Proxy::start_child(flags, "sh", &["-c", &self.script]).await
    }

    /// Every message the child has been sent so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The answers (no method) the child got for its request `id`.
    fn answers_to(&self, id: &Value) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|m| m.get("method").is_none() && m.get("id") == Some(id))
            .collect()
    }

    /// Waits (bounded) until the child got `n` answers to `id`.
    async fn wait_answers(&self, id: &Value, n: usize) -> Vec<Value> {
        eventually(STEP, || self.answers_to(id).len() >= n).await;
        self.answers_to(id)
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A child's `sampling/createMessage` with id `id`, as a raw line.
fn sampling_line(id: &Value, prompt: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":prompt}}],"maxTokens":1}}).to_string()
}

/// Has the child write `lines` while `c`'s call is in flight (so they
/// relate to it), then answer; returns every message of the call's stream.
async fn emit(c: &Client, id: Value, lines: &[String]) -> Vec<Value> {
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"misbehave_emit","arguments":{"lines":lines}}});
    let messages = tokio::time::timeout(STEP, async {
        read_messages_lenient(c.post(&body).await).await
    })
    .await
    .expect("misbehave_emit answered in time");
    let answer = messages
        .iter()
        .rfind(|m| m.get("id") == Some(&id))
        .expect("an answer to misbehave_emit");
    assert_eq!(
        answer["result"]["content"][0]["text"], "emitted",
        "{answer}"
    );
    messages
}

fn sampling_answer(id: &Value, text: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"result":{"role":"assistant","content":{"type":"text","text":text},"model":"m"}})
}

async fn session(proxy: &Proxy, caps: Value) -> Client {
    let mut c = Client::new(&proxy.mcp());
    c.initialize("2025-11-25", caps).await;
    c
}

/// Regression: in `--shared` mode the child's requests waiting for a
/// client shared one bound of 1,024 entries with no expiry, so one session
/// that never answered (here, 1,100 sampling requests it ignores) made
/// every other session's sampling fail with "too many requests are
/// waiting". Now each session holds at most a quarter of the bound, and
/// what is refused is answered to the child with an error.
#[tokio::test]
async fn a_session_that_never_answers_cannot_starve_another_sessions_sampling() {
    let child = Recorded::new("hog");
    let proxy = child.start(&["--shared", "--max-queue", "4096"]).await;
    let hog = session(&proxy, json!({"sampling": {}})).await;
    let other = session(&proxy, json!({"sampling": {}})).await;
    let lines: Vec<String> = (0..1100)
        .map(|n| sampling_line(&json!(format!("hog-{n}")), "ignored"))
        .collect();
    let seen = emit(&hog, json!(1), &lines).await;
    let delivered = seen
        .iter()
        .filter(|m| m["method"] == "sampling/createMessage")
        .count();
    assert_eq!(delivered, 256, "a quarter of --max-server-requests");
    // Every request the hog was not given was answered to the child.
    let refused = 1100 - delivered;
    let answered = |child: &Recorded| {
        child
            .received()
            .iter()
            .filter(|m| {
                m["id"].as_str().is_some_and(|id| id.starts_with("hog-"))
                    && m.get("error").is_some()
            })
            .count()
    };
    eventually(STEP, || answered(&child) >= refused).await;
    assert_eq!(answered(&child), refused, "one error per refused request");
    let metrics = proxy.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "mcp_proxy_server_requests_refused_total{{reason=\"session_limit\"}} {refused}"
        )),
        "{metrics}"
    );

    // The other session still gets (and answers) its own sampling request.
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sample","arguments":{"prompt":"mine"}}});
    let mut post = SseStream::new(other.post(&body).await);
    let first = post.next_json().await;
    assert_eq!(first["method"], "sampling/createMessage", "{first}");
    let r = other.post(&sampling_answer(&first["id"], "genuine")).await;
    assert_eq!(r.status(), 202);
    let done = post.next_json().await;
    assert_eq!(done["result"]["content"][0]["text"], "genuine", "{done}");
    proxy.stop().await;
}

/// Regression: a child's request its client never answered stayed in the
/// table for as long as the session lived (an open GET stream keeps a
/// session forever), and the child never heard back. Now it expires with
/// `--request-timeout` (else the session idle timeout) and the child gets
/// an error; the client's late answer is dropped, not passed on as a
/// second answer.
#[tokio::test]
async fn a_request_its_client_never_answers_expires_with_an_error_to_the_child() {
    let child = Recorded::new("expire");
    let proxy = child.start(&["--request-timeout", "1s"]).await;
    let c = session(&proxy, json!({"sampling": {}})).await;
    let id = json!("late-1");
    let seen = emit(&c, json!(1), &[sampling_line(&id, "no one answers")]).await;
    assert!(seen.iter().any(|m| m["id"] == id), "the client got it");
    let answers = child.wait_answers(&id, 1).await;
    assert_eq!(answers.len(), 1, "the child got an answer: {answers:?}");
    assert!(answers[0].get("error").is_some(), "{}", answers[0]);
    // The client's late answer goes nowhere.
    let r = c.post(&sampling_answer(&id, "too late")).await;
    assert_eq!(r.status(), 202);
    let echo = c.call(json!(2), "echo", json!({"message":"after"})).await;
    assert_eq!(echo["result"]["content"][0]["text"], "after");
    assert_eq!(
        child.answers_to(&id).len(),
        1,
        "{:?}",
        child.answers_to(&id)
    );
    proxy.stop().await;
}

/// Regression: when a session ended (DELETE, idle, its legacy stream
/// closed), the shared child's requests to it were forgotten without a
/// word, so the child waited for answers that could never come.
#[tokio::test]
async fn a_request_to_a_session_that_ends_is_answered_with_an_error() {
    let child = Recorded::new("ended");
    let proxy = child.start(&["--shared"]).await;
    let c = session(&proxy, json!({"sampling": {}})).await;
    let id = json!("orphan-1");
    emit(&c, json!(1), &[sampling_line(&id, "then the session ends")]).await;
    assert!(child.answers_to(&id).is_empty());
    let r = c.delete(&proxy.mcp()).await;
    assert!(r.status().is_success(), "{}", r.status());
    let answers = child.wait_answers(&id, 1).await;
    assert_eq!(answers.len(), 1, "the child got an answer: {answers:?}");
    assert!(answers[0].get("error").is_some(), "{}", answers[0]);
    proxy.stop().await;
}

/// Regression: a child that sent a second request with the id of one still
/// unanswered replaced the first's entry, so the client got both and the
/// first's answer was routed by the second's entry (to another session in
/// `--shared` mode, or dropped). Now the duplicate is refused with an
/// error to the child and the first keeps its route.
#[tokio::test]
async fn a_child_reusing_an_id_still_unanswered_gets_an_error_and_the_first_keeps_its_route() {
    let child = Recorded::new("dup");
    let proxy = child.start(&[]).await;
    let c = session(&proxy, json!({"sampling": {}})).await;
    let id = json!("dup");
    let seen = emit(
        &c,
        json!(1),
        &[sampling_line(&id, "first"), sampling_line(&id, "second")],
    )
    .await;
    let asked: Vec<&Value> = seen
        .iter()
        .filter(|m| m["method"] == "sampling/createMessage")
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "only the first reaches the client: {asked:?}"
    );
    assert_eq!(
        asked[0]["params"]["messages"][0]["content"]["text"],
        "first"
    );
    let refused = child.wait_answers(&id, 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].get("error").is_some(), "{}", refused[0]);
    // The first's answer still reaches the child.
    let r = c.post(&sampling_answer(&id, "genuine")).await;
    assert_eq!(r.status(), 202);
    let answers = child.wait_answers(&id, 2).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[1]["result"]["content"]["text"], "genuine");
    proxy.stop().await;
}

fn get_stream(
    proxy: &Proxy,
    c: &Client,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    c.http
        .get(proxy.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
}

/// Regression: a list-changed notification goes to every session, each
/// stream encoding its own copy, and a stream's empty queue takes one
/// notification of any size: a child that wrote one as long as
/// `--max-line-bytes` allows (its params are free-form) made the proxy
/// hold that much per session. Now a notification sent to every session
/// (or every subscriber) that is larger than `--max-queue-bytes` goes in
/// its minimal form, which says all a list change can say.
#[tokio::test]
async fn a_huge_list_changed_notification_reaches_every_session_in_its_minimal_form() {
    let proxy = Proxy::start(&["--shared", "--max-queue-bytes", "64K"]).await;
    let a = session(&proxy, json!({})).await;
    let b = session(&proxy, json!({})).await;
    let mut streams = Vec::new();
    for c in [&a, &b] {
        streams.push(SseStream::new(get_stream(&proxy, c).await.unwrap()));
    }
    let fill = "x".repeat(200_000);
    let huge = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"fill":fill}}});
    emit(&a, json!(1), &[huge.to_string()]).await;
    for s in &mut streams {
        let event = s.next_json().await;
        assert_eq!(event["method"], "notifications/tools/list_changed");
        let size = event.to_string().len();
        assert!(size < 1024, "{size} bytes: {}", &event.to_string()[..200]);
    }
    proxy.stop().await;
}

/// Regression: the child's request ids had no bound, so a child could
/// keep `--max-server-requests` ids as long as its lines (64 MiB each)
/// in the table for as long as they wait, twice over (as written and in
/// canonical form). Now an id over 1 KiB of JSON is refused at once with
/// an error to the child, as a client's is with 400.
#[tokio::test]
async fn a_child_request_with_an_id_over_1_kib_is_refused_at_once() {
    let child = Recorded::new("long-id");
    let proxy = child.start(&[]).await;
    let c = session(&proxy, json!({"sampling": {}})).await;
    let id = json!("i".repeat(2000));
    let seen = emit(&c, json!(1), &[sampling_line(&id, "long id")]).await;
    assert!(
        !seen.iter().any(|m| m["method"] == "sampling/createMessage"),
        "the client was not asked"
    );
    let answers = child.wait_answers(&id, 1).await;
    assert_eq!(answers.len(), 1, "the child got an answer");
    assert_eq!(
        answers[0]["error"]["code"], -32600,
        "{}",
        answers[0]["error"]
    );
    proxy.stop().await;
}

/// A 2026-07-28 `tools/call` of `roots` (the child asks the client for its
/// roots, which parks the call) with API key `key`.
async fn modern_roots(proxy: &Proxy, key: &str, id: u64) -> Value {
    let meta = json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{"roots":{}}});
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"roots","arguments":{},"_meta":meta}});
    let r = reqwest::Client::new()
        .post(proxy.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "roots")
        .json(&body)
        .send();
    let r = tokio::time::timeout(STEP, r).await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Regression: a 2026-07-28 client's call whose child asks it something
/// is parked until the client retries, and the parked calls of a shared
/// child had one bound of 1,024 for all principals: one that never
/// retries took every other principal's room. Now they count like the
/// child's requests to sessions: `--max-server-requests` in all, and the
/// per-session share per principal.
#[tokio::test]
async fn a_principal_that_never_retries_cannot_take_every_parked_slot() {
    const A: &str = "principal-a-key-0001";
    const B: &str = "principal-b-key-0002";
    let proxy = Proxy::start(&[
        "--shared",
        "--api-key",
        A,
        "--api-key",
        B,
        "--max-server-requests",
        "8",
    ])
    .await;
    for id in 1..=2 {
        let parked = modern_roots(&proxy, A, id).await;
        assert_eq!(parked["result"]["resultType"], "input_required", "{parked}");
    }
    // A's share (a quarter of 8) is taken: its next call is told at once.
    let refused = modern_roots(&proxy, A, 3).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("--max-server-requests-per-session"), "{text}");
    // B still has its own.
    let parked = modern_roots(&proxy, B, 1).await;
    assert_eq!(parked["result"]["resultType"], "input_required", "{parked}");
    proxy.stop().await;
}

/// Regression: a 2026-07-28 child's `input_required` becomes requests of
/// the proxy's own to a session-era client, and those went into the table
/// of requests waiting for clients without its bounds: one answer listing
/// thousands of input requests became thousands of requests to the
/// client, all kept until answered. Now they count against the same
/// bounds as a 2025-era child's requests, and a round that does not fit
/// fails the call at once, before the client is asked anything.
#[tokio::test]
async fn a_modern_childs_input_requests_are_bounded_like_a_legacy_childs_requests() {
    let proxy = Proxy::start_child(
        &["--max-server-requests", "8"],
        &example("modern_server"),
        &[],
    )
    .await;
    let c = session(&proxy, json!({"elicitation": {}})).await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask","arguments":{"kind":"elicitation","extra":20}}});
    let messages = tokio::time::timeout(STEP, async {
        read_messages_lenient(c.post(&body).await).await
    })
    .await
    .expect("the call ended in time");
    let asked = messages
        .iter()
        .filter(|m| m["method"] == "elicitation/create")
        .count();
    assert_eq!(asked, 0, "the client was asked nothing");
    let answer = messages.last().unwrap();
    assert_eq!(answer["id"], 1);
    let why = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("--max-server-requests"), "{answer}");
    proxy.stop().await;
}

/// Regression: the child's answer is matched to its request by the proxy's
/// id, and only in the form the proxy wrote it (`2`, or `"2"`), while a
/// client's ids match by value (`1` and `1.0` are one id). A child whose
/// JSON library writes `2.0` back had its answer dropped, and the client
/// waited for ever (there is no `--request-timeout` by default). Ids that
/// are another value (`-0`, `1e400`, `2.5`, objects, the string `"2"`)
/// match nothing: the string was taken for the number until the review.
#[tokio::test]
async fn an_answer_whose_id_is_the_requests_written_otherwise_reaches_its_client() {
    let proxy = Proxy::start(&[]).await;
    let c = session(&proxy, json!({})).await;
    let lines = [
        r#"{"jsonrpc":"2.0","id":-0,"result":{"content":[{"type":"text","text":"minus zero"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1e400,"result":{"content":[{"type":"text","text":"huge"}]}}"#,
        r#"{"jsonrpc":"2.0","id":{"n":$ID},"result":{"content":[{"type":"text","text":"object"}]}}"#,
        r#"{"jsonrpc":"2.0","id":$ID.5,"result":{"content":[{"type":"text","text":"fraction"}]}}"#,
        r#"{"jsonrpc":"2.0","id":"$ID","result":{"content":[{"type":"text","text":"quoted"}]}}"#,
        r#"{"jsonrpc":"2.0","id":$ID.0,"result":{"content":[{"type":"text","text":"dotted"}]}}"#,
    ];
    let body = json!({"jsonrpc":"2.0","id":"mine","method":"tools/call","params":{"name":"misbehave_emit","arguments":{"lines":lines}}});
    let messages = tokio::time::timeout(STEP, async {
        read_messages_lenient(c.post(&body).await).await
    })
    .await
    .expect("answered in time");
    let answers: Vec<&Value> = messages.iter().filter(|m| m["id"] == "mine").collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["result"]["content"][0]["text"], "dotted");
    proxy.stop().await;
}

/// Regression (review): an answer with a top-level key that is a lone
/// surrogate escape (`"\ud800"`) was refused short (its envelope does not
/// parse) but went to its client long (cut through past 128 KiB, where
/// the check read the key as naming no member). Now neither reaches the
/// client, whatever the answer's length; the child's real answer follows.
#[tokio::test]
async fn an_answer_with_a_lone_surrogate_key_is_refused_short_and_long() {
    let proxy = Proxy::start(&[]).await;
    let c = session(&proxy, json!({})).await;
    for fill in [10, 200 * 1024] {
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":$ID,"result":{{"content":[{{"type":"text","text":"{}"}}]}},"\ud800":0}}"#,
            "z".repeat(fill)
        );
        let body = json!({"jsonrpc":"2.0","id":"mine","method":"tools/call","params":{"name":"misbehave_emit","arguments":{"lines":[line]}}});
        let req = c.post_request(&body);
        let got = tokio::time::timeout(STEP, async { req.send().await?.bytes().await })
            .await
            .expect("answered in time");
        // Long, the response breaks off (a transport error) or ends in an
        // error; short, the line names the request in its first bytes, so
        // the request fails with it at once (since 2da4f99; before, the
        // line was skipped and "emitted" was the answer).
        if let Ok(bytes) = got {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("zzzzzzzzzz"),
                "{fill}: {}",
                &text[..text.len().min(300)]
            );
            if fill == 10 {
                assert!(
                    text.contains(r#""id":"mine","error""#)
                        && text.contains("answer was not valid JSON-RPC"),
                    "{text}"
                );
            }
        }
    }
    proxy.stop().await;
}

/// Regression: a child's request whose id is null, an object, an array or
/// a boolean was skipped as an unreadable line, so the child waited for an
/// answer that never came. JSON-RPC 2.0 answers an invalid request with an
/// error whose id is null (its own cannot be used); each is counted.
#[tokio::test]
async fn a_child_request_with_an_unusable_id_gets_an_invalid_request_error_with_id_null() {
    let child = Recorded::new("bad-id");
    let proxy = child.start(&[]).await;
    let c = session(&proxy, json!({"sampling": {}})).await;
    let ids = [json!(null), json!({"a": 1}), json!([1]), json!(true)];
    let lines: Vec<String> = ids.iter().map(|id| sampling_line(id, "bad id")).collect();
    let seen = emit(&c, json!(1), &lines).await;
    assert!(
        !seen.iter().any(|m| m["method"] == "sampling/createMessage"),
        "the client was not asked: {seen:?}"
    );
    let errors = || -> Vec<Value> {
        child
            .received()
            .into_iter()
            .filter(|m| m.get("method").is_none() && m.get("id") == Some(&Value::Null))
            .collect()
    };
    eventually(std::time::Duration::from_secs(5), || {
        errors().len() >= ids.len()
    })
    .await;
    let errors = errors();
    assert_eq!(errors.len(), ids.len(), "{errors:?}");
    for e in &errors {
        assert_eq!(e["error"]["code"], -32600, "{e}");
    }
    let metrics = proxy.metrics_text().await;
    assert!(
        metrics.contains("mcp_proxy_server_requests_refused_total{reason=\"invalid_id\"} 4"),
        "{metrics}"
    );
    proxy.stop().await;
}
