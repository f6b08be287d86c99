//! The real binary against hostile and careless configuration: bytes that
//! are not UTF-8, empty values, settings that contradict each other or
//! would be ignored, files that are pipes or devices, and a stderr nobody
//! reads. Each must end in one `error:` line and exit 64 at once: never a
//! panic, a hang, or a start with a default in place of what was meant.

mod support;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, STEP};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-proxy");

/// How long a refusal may take: a proxy still running after this started
/// (or hangs) instead of refusing.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

/// The binary with none of the test's own `MCP_PROXY_*` variables.
fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"MCP_PROXY_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

/// Runs `c` to its end, or kills it after [`REFUSE_WITHIN`]: the exit code
/// (`None` if it had to be killed) and its stderr.
fn outcome(mut c: Command) -> (Option<i32>, String) {
    let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + REFUSE_WITHIN;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            // SIGKILL: a proxy stuck in open(2) does not answer SIGTERM.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, reader.join().unwrap())
}

/// Asserts that `c` is refused: exit 64 at once, one `error:` line that
/// contains `needle`, no panic.
#[track_caller]
fn refused(what: &str, c: Command, needle: &str) {
    let (code, err) = outcome(c);
    assert_eq!(
        code,
        Some(64),
        "{what}: expected exit 64, got {code:?} (None: still running after {REFUSE_WITHIN:?}); stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
}

/// `mcp-proxy --port 0 FLAGS -- everything`, with `env`.
fn proxy(flags: &[&OsStr], env: &[(&str, &OsStr)]) -> Command {
    let mut c = command();
    c.args(["--port", "0"]).args(flags);
    c.arg("--").arg(support::example("everything"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bytes_that_are_not_utf8_are_refused_not_panicked_on_or_ignored() {
    let ff = OsStr::from_bytes(b"\xff");
    // The standard library's args() panics on such an argument.
    refused(
        "argument",
        proxy(&[os("--host"), ff], &[]),
        "not valid UTF-8",
    );
    // A variable the proxy reads but cannot: it used to read as unset, so
    // this one started a proxy without a key.
    refused(
        "MCP_PROXY_API_KEY",
        proxy(&[], &[("MCP_PROXY_API_KEY", ff)]),
        "MCP_PROXY_API_KEY",
    );
    refused(
        "MCP_PROXY_MAX_BODY_BYTES",
        proxy(&[], &[("MCP_PROXY_MAX_BODY_BYTES", ff)]),
        "MCP_PROXY_MAX_BODY_BYTES",
    );
    let mut c = command();
    c.arg("healthcheck").env("MCP_PROXY_PORT", ff);
    refused("healthcheck", c, "MCP_PROXY_PORT");
}

#[test]
fn empty_values_are_refused_rather_than_read_as_defaults() {
    let empty = os("");
    // A key secret that failed to mount: no key at all, on loopback.
    for v in ["", " , "] {
        refused(
            &format!("MCP_PROXY_API_KEY={v:?}"),
            proxy(&[], &[("MCP_PROXY_API_KEY", os(v))]),
            "MCP_PROXY_API_KEY",
        );
    }
    // An empty filter turned every log line off.
    refused(
        "--log-level",
        proxy(&[os("--log-level"), empty], &[]),
        "--log-level",
    );
    refused(
        "MCP_PROXY_CWD",
        proxy(&[], &[("MCP_PROXY_CWD", empty)]),
        "MCP_PROXY_CWD",
    );
    refused(
        "MCP_PROXY_AUDIT_LOG",
        proxy(&[], &[("MCP_PROXY_AUDIT_LOG", empty)]),
        "MCP_PROXY_AUDIT_LOG",
    );
    refused(
        "--allow-origin",
        proxy(&[os("--allow-origin"), empty], &[]),
        "--allow-origin",
    );
}

/// What is refused, its flags, its variables, and what the error names.
type Case<'a> = (&'a str, Vec<&'a OsStr>, Vec<(&'a str, &'a OsStr)>, &'a str);

#[test]
fn settings_that_contradict_or_would_be_ignored_are_refused() {
    let dir = temp_dir("ignored");
    let file = dir.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let nul_env = dir.join("nul.env");
    std::fs::write(&nul_env, b"TOKEN=ab\0cd\n").unwrap();
    let store = dir.join("s.db");
    let cases: Vec<Case> = vec![
        (
            "both modes",
            vec![os("--shared"), os("--stateless")],
            vec![],
            "--stateless",
        ),
        (
            "both modes by variable",
            vec![],
            vec![
                ("MCP_PROXY_SHARED", os("true")),
                ("MCP_PROXY_STATELESS", os("true")),
            ],
            "MCP_PROXY_STATELESS",
        ),
        (
            "a JWT header without JWT",
            vec![],
            vec![("MCP_PROXY_JWT_HEADER", os("cf-access-jwt-assertion"))],
            "--jwt-header",
        ),
        (
            "forward-auth settings without its URL",
            vec![os("--forward-auth-ttl"), os("5s")],
            vec![],
            "--forward-auth-url",
        ),
        (
            "a store for a single server",
            vec![],
            vec![("MCP_PROXY_STORE", store.as_os_str())],
            "MCP_PROXY_STORE",
        ),
        (
            "a config poll without a config",
            vec![],
            vec![("MCP_PROXY_CONFIG_POLL", os("1s"))],
            "MCP_PROXY_CONFIG_POLL",
        ),
        (
            "a log rate past its cap, once clamped in silence",
            vec![os("--child-log-rate"), os("5000000")],
            vec![],
            "--child-log-rate",
        ),
        (
            "a body cap that refuses every request",
            vec![os("--max-body-bytes"), os("0")],
            vec![],
            "--max-body-bytes",
        ),
        (
            "a missing working directory",
            vec![os("--cwd"), os("/nonexistent/dir")],
            vec![],
            "--cwd",
        ),
        (
            "a working directory that is a file",
            vec![os("--cwd"), file.as_os_str()],
            vec![],
            "not a directory",
        ),
        (
            "no streams kept for resumption",
            vec![os("--replay-streams"), os("0")],
            vec![],
            "--replay-streams (MCP_PROXY_REPLAY_STREAMS) must be at least 1",
        ),
        (
            "tombstones that are not a number",
            vec![],
            vec![("MCP_PROXY_REPLAY_TOMBSTONES", os("many"))],
            "MCP_PROXY_REPLAY_TOMBSTONES: expected a whole number",
        ),
        (
            "tombstone bytes that are not a byte count",
            vec![os("--replay-tombstone-bytes"), os("64Q")],
            vec![],
            "--replay-tombstone-bytes: expected a byte count",
        ),
        (
            "a NUL in an env file",
            vec![os("--env-file"), nul_env.as_os_str()],
            vec![],
            "NUL",
        ),
    ];
    for (what, flags, env, needle) in cases {
        refused(what, proxy(&flags, &env), needle);
    }
    // Named servers: a command that cannot run fails the start, as it
    // does for a single server.
    let mut c = command();
    c.args(["--port", "0", "--server", "broken=/nonexistent/server"]);
    refused("a named server's command", c, "/nonexistent/server");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn files_that_are_pipes_or_devices_are_refused_without_waiting() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let p = fifo.as_os_str();
    for flag in ["--api-key-file", "--env-file"] {
        refused(flag, proxy(&[os(flag), p], &[]), "named pipe");
    }
    let mut c = command();
    c.args(["--port", "0", "--config"]).arg(p);
    refused("--config", c, "named pipe");
    refused(
        "--jwt-secret-file",
        proxy(
            &[os("--jwt-secret-file"), p, os("--jwt-audience"), os("a")],
            &[],
        ),
        "named pipe",
    );
    // Nobody reads this pipe: open(2) for writing used to wait for a
    // reader forever, past SIGTERM.
    refused(
        "--audit-log",
        proxy(&[os("--audit-log"), p], &[]),
        "named pipe",
    );
    let mut c = command();
    c.arg("check-config").arg(p);
    refused("check-config", c, "named pipe");
    // Read until memory ran out.
    refused(
        "/dev/zero",
        proxy(&[os("--env-file"), os("/dev/zero")], &[]),
        "device",
    );
    refused(
        "a directory",
        proxy(&[os("--api-key-file"), dir.as_os_str()], &[]),
        "directory",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_stderr_nobody_reads_never_turns_a_refusal_into_a_panic() {
    let dir = temp_dir("epipe");
    let bad = dir.join("bad.toml");
    // A parse error quotes the offending line: keep that line long.
    std::fs::write(&bad, format!("a = {}\n", "[".repeat(100_000))).unwrap();
    let bad_arg: OsString = bad.clone().into();
    for args in [
        vec![os("--port"), os("0"), os("--config"), &bad_arg],
        vec![os("check-config"), &bad_arg],
        vec![
            os("--port"),
            os("0"),
            os("--server"),
            os("a=/nonexistent/server"),
        ],
    ] {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let mut c = command();
        c.args(&args).stderr(Stdio::from(write));
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + REFUSE_WITHIN;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // 101 is a panic (the print macros on a broken pipe).
        assert_eq!(status.and_then(|s| s.code()), Some(64), "{args:?}");
    }
    // And where stderr is read, the parse error is one short line, not
    // the 100 KB line it quotes.
    let mut c = command();
    c.arg("check-config").arg(&bad);
    let (code, err) = outcome(c);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.len() < 1024, "{} bytes: {}", err.len(), &err[..200]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: `--request-timeout 0s` (unlike `0`) was a deadline of zero,
/// so every request, the handshake first, failed at once.
#[tokio::test]
async fn a_zero_request_timeout_in_any_spelling_means_none() {
    for zero in ["0s", "0ms"] {
        let mut c = proxy(&[os("--request-timeout"), os(zero)], &[]);
        let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let base = loop {
            let line = match rx.recv_timeout(STEP) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{zero}: the proxy did not start");
                }
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break format!("http://{}", rest.split('/').next().unwrap());
            }
        };
        let mut client = Client::new(&format!("{base}/mcp"));
        client.accept = "application/json";
        let init = client
            .post(
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},
                "clientInfo":{"name":"t","version":"1"}}}),
            )
            .await;
        let session = init.headers().get("mcp-session-id").cloned();
        let body: serde_json::Value = init.json().await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(body.get("result").is_some(), "{zero}: {body}");
        assert!(session.is_some(), "{zero}: {body}");
    }
}

/// Regression: a NUL byte written into a `[[server]]`'s `args`, `command`
/// or `cwd` (TOML spells it `\u0000`) passed `check-config` (exit 0) and
/// the start, and a reload applied it; no process can be given such an
/// argument or directory, so every spawn of that server then failed with
/// 502 ("nul byte found in provided data"). An environment value with a
/// NUL was already refused at load for the same reason.
#[test]
fn a_nul_byte_in_a_servers_command_args_or_cwd_is_refused_at_load() {
    let dir = temp_dir("nul");
    let everything = support::example("everything");
    for (what, server) in [
        (
            "args",
            format!("command = [{everything:?}]\nargs = [\"a\\u0000b\"]"),
        ),
        (
            "command",
            format!("command = [{everything:?}, \"a\\u0000b\"]"),
        ),
        ("program", "command = \"every\\u0000thing\"".to_string()),
        (
            "cwd",
            format!("command = [{everything:?}]\ncwd = \"/tmp\\u0000x\""),
        ),
    ] {
        let file = dir.join(format!("{what}.toml"));
        std::fs::write(&file, format!("[[server]]\nname = \"s\"\n{server}\n")).unwrap();
        let mut c = command();
        c.arg("check-config").arg(&file);
        refused(&format!("check-config, NUL in {what}"), c, "NUL");
        let mut c = command();
        c.args(["--port", "0", "--config"]).arg(&file);
        refused(&format!("start, NUL in {what}"), c, "NUL");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a `{ secret = … }` environment value took any other key
/// without a word (`{ secret = "coda", fallback = "…" }`, a misspelt or
/// imagined option), although unknown keys are errors everywhere else in
/// the file so that a typo never goes unnoticed.
#[test]
fn a_secret_reference_with_another_key_is_refused() {
    let dir = temp_dir("secret-keys");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        "[store]\npath = \"/tmp/never-opened.db\"\n[[server]]\nname = \"s\"\ncommand = \"x\"\nenv = { TOKEN = { secret = \"coda\", fallback = \"none\" } }\n",
    )
    .unwrap();
    let mut c = command();
    c.arg("check-config").arg(&file).env(
        "MCP_PROXY_STORE_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    refused("a secret reference with another key", c, "TOKEN");
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a credential store whose key is missing or malformed
/// (`MCP_PROXY_STORE_KEY` unset, not base64, or a `key_file` that is not
/// there) is bad configuration, and `check-config` said so with exit 64;
/// the start said the same words but exited 1, the code for a runtime
/// failure, so a supervisor retried it for ever. And `check-config`
/// passed a store with no key when no server took secrets yet, which the
/// start then refused. Both now exit 64, the start before it listens.
#[test]
fn a_store_without_a_usable_key_is_bad_configuration_at_start_too() {
    let dir = temp_dir("store-key");
    // A config file `name` with a store at `dir/s.db` (its `[store]` lines
    // then `store_extra`) and one server with `server_extra`.
    let config = |name: &str, store_extra: &str, server_extra: &str| {
        let file = dir.join(name);
        let text = format!(
            "[store]\npath = {:?}\n{store_extra}[[server]]\nname = \"s\"\ncommand = \"cat\"\n{server_extra}",
            dir.join("s.db")
        );
        std::fs::write(&file, text).unwrap();
        file
    };
    let secret = "env = { T = { secret = \"t\" } }\n";
    let with_secret = config("secret.toml", "", secret);
    let key_file = format!("key_file = {:?}\n", dir.join("no-such-key"));
    let missing_file = config("key-file.toml", &key_file, secret);
    let no_secret = config("plain.toml", "", "");
    for (what, file, key, needle) in [
        ("no key", &with_secret, None, "MCP_PROXY_STORE_KEY"),
        (
            "a key that is not base64",
            &with_secret,
            Some("short!"),
            "MCP_PROXY_STORE_KEY",
        ),
        (
            "a key file that is not there",
            &missing_file,
            None,
            "no-such-key",
        ),
        (
            "no key, no secret yet",
            &no_secret,
            None,
            "MCP_PROXY_STORE_KEY",
        ),
    ] {
        for start in [false, true] {
            let mut c = command();
            if start {
                c.args(["--port", "0", "--config"]).arg(file);
            } else {
                c.arg("check-config").arg(file);
            }
            if let Some(k) = key {
                c.env("MCP_PROXY_STORE_KEY", k);
            }
            let how = if start { "start" } else { "check-config" };
            refused(&format!("{how}, {what}"), c, needle);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a `[[server]]`'s `env` (or `credential_headers`) could
/// name a variable `MCP_PROXY_*`, which `--env` and a server's `env_file`
/// refuse as the proxy's own setting: `env = { MCP_PROXY_MAX_SESSIONS =
/// "3" }`, meant as a limit, was passed to the child instead and the
/// limit stayed the default, without a word.
#[test]
fn a_servers_env_cannot_name_a_setting_of_the_proxy() {
    let dir = temp_dir("own-setting");
    for (what, line) in [
        ("env", "env = { MCP_PROXY_MAX_SESSIONS = \"3\" }"),
        (
            "credential_headers",
            "credential_headers = { MCP_PROXY_API_KEY = \"X-Upstream-Token\" }",
        ),
    ] {
        let file = dir.join(format!("{what}.toml"));
        std::fs::write(
            &file,
            format!("[[server]]\nname = \"s\"\ncommand = \"cat\"\n{line}\n"),
        )
        .unwrap();
        let mut c = command();
        c.arg("check-config").arg(&file);
        refused(what, c, "MCP_PROXY_");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a user name and password in a URL the proxy fetches from
/// (`http://user:pw@host/whoami`) were taken, never sent (the HTTP client
/// makes no `Authorization` header of them, so the endpoint refused and
/// every login was 503 or 401), and written to the log: with
/// `--log-level trace` and such a `--forward-auth-url`, every request
/// logged `checkout waiting for idle connection: ("http",
/// u:pw-SECRET@127.0.0.1:18799)`. In an `--auth-server` they would be
/// published to every client in the RFC 9728 document. And a URL refused
/// for its scheme was echoed whole in the error. Such a URL is refused
/// now, without being shown.
#[test]
fn a_url_with_a_user_or_password_is_refused_and_never_shown() {
    let cases: [(&str, Vec<&OsStr>, &str); 5] = [
        (
            "forward auth",
            vec![
                os("--forward-auth-url"),
                os("http://user:pw-SECRET@127.0.0.1:9/whoami"),
            ],
            "--forward-auth-url",
        ),
        (
            "a user name alone",
            vec![
                os("--forward-auth-url"),
                os("http://token-SECRET@127.0.0.1:9/whoami"),
            ],
            "--forward-auth-url",
        ),
        (
            "JWKS",
            vec![
                os("--jwt-jwks-url"),
                os("https://user:pw-SECRET@idp.example.com/jwks"),
                os("--jwt-audience"),
                os("mcp"),
            ],
            "--jwt-jwks-url",
        ),
        (
            "authorization server",
            vec![
                os("--api-key"),
                os("0123456789abcdef0123"),
                os("--public-url"),
                os("https://mcp.example.com"),
                os("--auth-server"),
                os("https://user:pw-SECRET@idp.example.com"),
            ],
            "--auth-server",
        ),
        (
            "a scheme that is refused anyway",
            vec![
                os("--forward-auth-url"),
                os("ftp://user:pw-SECRET@127.0.0.1/whoami"),
            ],
            "--forward-auth-url",
        ),
    ];
    for (what, flags, needle) in cases {
        let (code, err) = outcome(proxy(&flags, &[]));
        assert_eq!(code, Some(64), "{what}: {err}");
        assert!(!err.contains("SECRET"), "{what}: shown: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{what}: {err}"
        );
    }
}
