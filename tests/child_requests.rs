//! Regression: what a child sends its clients that is not an answer (its
//! sampling, elicitation and roots requests) could be held forever, starve
//! other sessions or be routed to the wrong client: one session that never
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
use support::{Client, Proxy, STEP, eventually, example, read_messages_lenient};

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
