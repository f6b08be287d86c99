//! Regression: the files the configuration names (`--api-key-file`,
//! `--jwt-secret-file`, `--env-file`, and a server's `env_file`) were read
//! whole, at start and at every reload: a file of gigabytes (a log written
//! to the wrong path) was read into memory. Each is now read up to 1 MiB,
//! the bound of the `--config` file itself; past it, the start fails with
//! exit 64 naming the file and the bound, and a reload is refused (one log
//! line) while the running configuration stays.
//!
//! The files here are a little over 1 MiB of valid content, so that the
//! old code accepted them (a file of gigabytes would only have made the
//! test slow, or the machine swap).

mod support;

use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use support::STEP;
use support::process::{Reaped, proxy_command, spawn_logged, tempdir, wait_for_port};

const MIB: usize = 1024 * 1024;
const KEY_A: &str = "alice-key-0123456789";
const KEY_B: &str = "bob-key-9876543210xx";

/// A running proxy (killed and reaped when dropped) and its stderr lines.
struct Proc {
    child: Reaped,
    lines: Receiver<String>,
}

/// Either the exit code and stderr of a proxy that refused to start, or
/// the port of one that started (it then logged "listening on").
fn start(mut c: Command) -> Result<(Proc, u16), (Option<i32>, String)> {
    let (child, lines) = spawn_logged(&mut c);
    let mut p = Proc { child, lines };
    let mut log = Vec::new();
    let err = match wait_for_port(&p.lines, STEP, &mut log) {
        Ok(port) => return Ok((p, port)),
        Err(e) => e,
    };
    let log: String = log.iter().map(|l| format!("{l}\n")).collect();
    match err {
        RecvTimeoutError::Disconnected => Err((p.child.wait().unwrap().code(), log)),
        RecvTimeoutError::Timeout => panic!("neither started nor refused: {log}"),
    }
}

/// `content` followed by `#` comment lines (which key and env files
/// skip) to a little over 1 MiB: a valid file that costs nothing to parse.
fn over_a_mib(content: &str) -> String {
    let mut s = content.to_string();
    let comment = format!("# {}\n", "-".repeat(1000));
    while s.len() <= MIB {
        s.push_str(&comment);
    }
    s
}

#[test]
fn a_named_file_over_1_mib_stops_the_start_with_exit_64_naming_it() {
    let dir = tempdir("start");
    let keys = dir.join("keys");
    std::fs::write(&keys, over_a_mib(&format!("alice: {KEY_A}\n"))).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s".repeat(MIB + 1)).unwrap();
    let env = dir.join("env");
    std::fs::write(&env, over_a_mib("SOME_VAR=value\n")).unwrap();
    let cases: [(&str, &std::path::Path, &[&str]); 3] = [
        ("--api-key-file", &keys, &[]),
        ("--jwt-secret-file", &secret, &["--jwt-audience", "mcp"]),
        ("--env-file", &env, &[]),
    ];
    for (flag, path, extra) in cases {
        let mut c = proxy_command();
        c.args(["--port", "0", flag])
            .arg(path)
            .args(extra)
            .args(["--", "sh", "-c", "sleep 60"]);
        match start(c) {
            Ok(_) => panic!("{flag} of {} bytes: the proxy started", MIB + 1),
            Err((code, log)) => {
                assert_eq!(code, Some(64), "{flag}: {log}");
                assert!(
                    log.starts_with("error: ")
                        && log.contains(flag)
                        && log.contains(&path.display().to_string())
                        && log.contains("1 MiB"),
                    "{flag}: the error names the flag, the file and the bound: {log}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The status of a POST of `{}` to a named server with `key`: 400 when
/// the key was accepted, 401 when not.
fn probe(port: u16, key: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /servers/a/mcp HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut buf = String::new();
    let read = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer ({read:?}): {buf:?}"))
        .parse()
        .unwrap()
}

#[test]
fn a_key_file_grown_past_1_mib_is_refused_at_reload_and_the_running_keys_stay() {
    let dir = tempdir("reload");
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("alice: {KEY_A}\n")).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[auth]\napi_key_file = {:?}\n[[server]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"sleep 60\"]\n",
            keys
        ),
    )
    .unwrap();
    let mut c = proxy_command();
    c.args(["--port", "0", "--config-poll", "100ms", "--config"])
        .arg(&file);
    let (p, port) = start(c).unwrap_or_else(|(code, log)| panic!("exit {code:?}: {log}"));
    assert_eq!(probe(port, KEY_A), 400);
    assert_eq!(probe(port, KEY_B), 401);

    // Bob's key is added, in a file over the bound.
    std::fs::write(
        &keys,
        over_a_mib(&format!("alice: {KEY_A}\nbob: {KEY_B}\n")),
    )
    .unwrap();
    // Several polls (two in a row apply a change).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        probe(port, KEY_B),
        401,
        "the reload applied a key file over 1 MiB"
    );
    assert_eq!(probe(port, KEY_A), 400, "the running keys stay");
    let log: Vec<String> = p.lines.try_iter().collect();
    let refused: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("reload refused"))
        .collect();
    assert_eq!(refused.len(), 1, "one line, not one per poll: {log:#?}");
    assert!(
        refused[0].contains(&keys.display().to_string()) && refused[0].contains("1 MiB"),
        "{}",
        refused[0]
    );
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}
