//! The real binary with named servers: `check-config`, `--config`, a
//! SIGHUP reload and a `--config-poll` reload (a good file applies, a bad one is refused and the
//! running servers stay).

mod support;

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use support::process::{
    LISTENING, Reaped, proxy_command, spawn_logged, tempdir, terminate_and_drain, wait_for_line,
    wait_for_port,
};
use support::{STEP, example};

fn server(name: &str) -> String {
    format!(
        "[[server]]\nname = \"{name}\"\ncommand = [{:?}]\n",
        example("everything")
    )
}

#[test]
fn check_config_accepts_the_issue_shape_and_refuses_mistakes_with_exit_64() {
    let dir = tempdir("check");
    let file = dir.join("p.toml");
    let run = |text: &str, env: &[(&str, &str)]| {
        std::fs::write(&file, text).unwrap();
        let out = proxy_command()
            .arg("check-config")
            .arg(&file)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key = mcp_sidecar::store::StoreKey::generate_base64();
    let issue = "[store]\npath = \"/nonexistent/never-opened.db\"\n[[server]]\nname = \"coda\"\ncommand = [\"coda-mcp\", \"--read-only\"]\nmode = \"per-session\"\nenv = { CODA_LOG = \"info\", CODA_API_TOKEN = { secret = \"coda\" } }\n";
    let (code, out, err) = run(issue, &[("MCP_PROXY_STORE_KEY", &key)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok, 1 server(s): coda"), "{out}");
    // Nothing was started or created.
    assert!(!std::path::Path::new("/nonexistent/never-opened.db").exists());
    for (text, env, want) in [
        (issue, &[][..], "MCP_PROXY_STORE_KEY"),
        (
            &*issue.replace("per-session", "shared"),
            &[("MCP_PROXY_STORE_KEY", key.as_str())][..],
            "per-user secrets",
        ),
        ("[[server]]\nname = \"x\"\n", &[][..], "command"),
        ("nonsense = [", &[][..], "p.toml"),
    ] {
        let (code, out, err) = run(text, env);
        assert_eq!(code, 64, "{text}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_applies_a_good_file_and_refuses_a_bad_one() {
    let dir = tempdir("hup");
    let file = dir.join("p.toml");
    let audit = dir.join("audit.log");
    std::fs::write(&file, server("a")).unwrap();
    let (mut child, rx) = spawn_logged(
        proxy_command()
            .arg("--config")
            .arg(&file)
            .arg("--audit-log")
            .arg(&audit)
            .args(["--port", "0"]),
    );
    let wait_for = |needle: &str| -> String { next_line_with(&rx, needle) };
    let port = wait_for_port(&rx, STEP, &mut Vec::new())
        .unwrap_or_else(|_| panic!("no log line with {LISTENING:?}"));
    let status = |path: &str| http_status(port, path);
    assert_eq!(status("/servers/a/ready"), 200);
    assert_eq!(status("/servers/b/ready"), 404);
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    std::fs::write(&file, format!("{}{}", server("a"), server("b"))).unwrap();
    hup();
    wait_for("configuration reloaded");
    assert_eq!(status("/servers/b/ready"), 200);
    // Every server (and generation) writes through one audit writer
    // thread; before, each server opened the file with a thread of its own.
    let writers = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "audit-writer")
        .count();
    assert_eq!(writers, 1, "audit writer threads for two servers");
    // A bad file: refused with its reason, and both servers stay.
    std::fs::write(&file, "[[server]]\nname = \"a\"\ncommand = []\n").unwrap();
    hup();
    let refused = wait_for("reload refused");
    assert!(refused.contains("command is empty"), "{refused}");
    assert_eq!(status("/servers/a/ready"), 200);
    assert_eq!(status("/servers/b/ready"), 200);
    // SIGTERM: a clean exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_gives_a_child_its_callers_secret_but_never_the_store_key() {
    let dir = tempdir("env");
    let db = dir.join("s.db");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let key = mcp_sidecar::store::StoreKey::generate_base64();
    let secret = "binary-secret-value-4471";
    // The operator stores the value (stdin), as the README says.
    let mut set = proxy_command()
        .args(["secrets", "set", "none:anonymous", "dump", "tok"])
        .env("MCP_PROXY_STORE", &db)
        .env("MCP_PROXY_STORE_KEY", &key)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin
            .take()
            .unwrap()
            .write_all(secret.as_bytes())
            .unwrap();
    }
    assert!(set.wait().unwrap().success());
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[[server]]\nname = \"dump\"\ncommand = [\"sh\", \"-c\", \"env > \\\"$DUMP_DIR/$$.env\\\"; exec \\\"$0\\\"\", {:?}]\nenv = {{ DUMP_DIR = {dumps:?}, TOKEN = {{ secret = \"tok\" }} }}\n",
            example("everything")
        ),
    )
    .unwrap();
    let (mut child, rx) = spawn_logged(
        proxy_command()
            .arg("--config")
            .arg(&file)
            .args(["--port", "0", "--log-level", "trace"])
            .env("MCP_PROXY_STORE", &db)
            .env("MCP_PROXY_STORE_KEY", &key),
    );
    let mut log = Vec::new();
    let port = wait_for_port(&rx, STEP, &mut log).expect("the proxy logs its address");
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/servers/dump/mcp"));
    c.initialize("2025-11-25", serde_json::json!({})).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push(l);
    }
    let envs: Vec<String> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(envs.len(), 1);
    assert!(envs[0].contains(&format!("TOKEN={secret}\n")));
    assert!(!envs[0].contains("MCP_PROXY_"), "{}", envs[0]);
    assert!(!envs[0].contains(&key));
    let log = log.join("\n");
    assert!(
        !log.contains(secret) && !log.contains(&key),
        "a secret in the log"
    );
    assert!(log.contains("read-for-child"), "no audit line");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_a_second_sigterm_kills_children_at_once() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let (mut child, rx) = spawn_logged(
        proxy_command()
            .arg("--server")
            .arg(format!(
                "stubborn={} --ignore-sigterm",
                example("everything")
            ))
            .args(["--port", "0", "--shutdown-grace", "30s"]),
    );
    let port = wait_for_port(&rx, STEP, &mut Vec::new()).expect("the proxy logs its address");
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/servers/stubborn/mcp"));
    c.initialize("2025-11-25", serde_json::json!({})).await;
    let pid: u32 = support::text_of(
        &c.call(serde_json::json!(1), "pid", serde_json::json!({}))
            .await,
    )
    .parse()
    .unwrap();
    let proxy = Pid::from_raw(child.id() as i32);
    let asked = std::time::Instant::now();
    kill(proxy, Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        support::alive(pid),
        "the stubborn child should still be in its grace period"
    );
    kill(proxy, Signal::SIGTERM).unwrap();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "a second SIGTERM did not end the proxy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(code, Some(0));
    assert!(
        support::eventually(Duration::from_secs(2), || !support::alive(pid)).await,
        "the child {pid} was killed"
    );
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("killed every child at once")),
        "{logs:?}"
    );
}

/// Pids of zombies whose parent is `ppid`.
fn zombies_of(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_string()))
                .is_some_and(|r| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.len() > 1 && f[0] == "Z" && f[1] == ppid.to_string()
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_as_pid_1_reap_orphans_forward_signals_and_reload_on_sighup() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` needs root and util-linux");
        return;
    }
    let dir = tempdir("pid1");
    let file = dir.join("p.toml");
    // A shared server (started at once) whose shell orphans two
    // grandchildren that exit 300 and 400 ms later, and reports the
    // signals it gets; the server runs beside it on the same stdin.
    let script = "trap 'echo got-usr1 >&2' USR1; trap 'echo got-hup >&2' HUP; (sleep 0.3 &); (sleep 0.4 &); exec 3<&0; \"$0\" <&3 3<&- & wait; wait; wait";
    let a = format!(
        "[[server]]\nname = \"a\"\nmode = \"shared\"\ncommand = [\"sh\", \"-c\", {script:?}, {:?}]\n",
        example("everything")
    );
    std::fs::write(&file, &a).unwrap();
    let (mut unshare, rx) = spawn_logged(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_mcp-proxy"))
            .arg("--config")
            .arg(&file)
            .args(["--port", "0"])
            .stdin(Stdio::null()),
    );
    let mut seen = Vec::new();
    let wait_for =
        |seen: &mut Vec<String>, needle: &str| wait_for_line(&rx, needle, STEP, seen).is_ok();
    assert!(wait_for(&mut seen, "listening on http://"));
    let proxy = *support::children_of(unshare.id())
        .first()
        .expect("the proxy runs under unshare");
    let proxy_pid = Pid::from_raw(proxy as i32);
    // Killing `unshare` would leave its PID 1 running: kill the proxy on failure.
    struct KillOnDrop(Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGKILL);
        }
    }
    let _inner = KillOnDrop(proxy_pid);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let zombies = zombies_of(proxy);
    assert!(zombies.is_empty(), "zombies left under PID 1: {zombies:?}");
    // SIGHUP reloads the named servers and is not forwarded.
    std::fs::write(&file, format!("{a}{}", server("b"))).unwrap();
    kill(proxy_pid, Signal::SIGHUP).unwrap();
    assert!(wait_for(&mut seen, "configuration reloaded"), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen.extend(rx.try_iter());
    // A forwarded SIGHUP would end the server (its default action) and
    // the shared child would be restarted.
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("got-hup") || l.contains("child exited")),
        "SIGHUP reached a child: {seen:?}"
    );
    // Signals PID 1 has no use for go to the children (last: SIGUSR1 also
    // ends the server, whose default action it is).
    kill(proxy_pid, Signal::SIGUSR1).unwrap();
    assert!(
        wait_for(&mut seen, "got-usr1"),
        "SIGUSR1 forwarded to the children"
    );
    kill(proxy_pid, Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = unshare.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// A proxy binary (killed and reaped when dropped) with its stderr lines
/// on a channel and its port.
struct Proc {
    /// Held for its drop.
    _child: Reaped,
    lines: Receiver<String>,
    port: u16,
    /// The lines logged up to "listening on".
    startup: Vec<String>,
}

impl Proc {
    fn start(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Proc {
        let (child, lines) = spawn_logged(
            proxy_command()
                .args(args)
                .args(["--port", "0"])
                .envs(env.iter().copied()),
        );
        let mut startup = Vec::new();
        let port = wait_for_port(&lines, STEP, &mut startup).expect("the proxy starts");
        Proc {
            _child: child,
            lines,
            port,
            startup,
        }
    }

    /// The next stderr line containing `needle` (20 s at most).
    fn wait_for(&self, needle: &str) -> String {
        next_line_with(&self.lines, needle)
    }

    fn status(&self, path: &str) -> u16 {
        http_status(self.port, path)
    }

    /// Polls `path` until it answers `want`, returning how long that took.
    fn until_status(&self, path: &str, want: u16, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        while self.status(path) != want {
            assert!(
                started.elapsed() < within,
                "{path} did not answer {want} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }
}

#[test]
fn an_edited_config_file_applies_without_a_signal_and_a_broken_one_is_refused() {
    let dir = tempdir("poll");
    let file = dir.join("p.toml");
    std::fs::write(&file, server("a")).unwrap();
    // The interval from the environment, as a container would set it.
    let p = Proc::start(
        &["--config".as_ref(), file.as_os_str()],
        &[("MCP_PROXY_CONFIG_POLL", "250ms")],
    );
    assert!(
        p.startup
            .iter()
            .any(|l| l.contains("watching the config file") && l.contains("250ms")),
        "{:?}",
        p.startup
    );
    assert_eq!(p.status("/servers/a/ready"), 200);
    assert_eq!(p.status("/servers/b/ready"), 404);

    // Added: b answers within a bound (the poll interval plus a reload).
    std::fs::write(&file, format!("{}{}", server("a"), server("b"))).unwrap();
    let took = p.until_status("/servers/b/ready", 200, Duration::from_secs(5));
    eprintln!("added server answered {took:?} after the write (poll 250ms)");
    p.wait_for("configuration reloaded");

    // Broken: refused with its reason, once, and both servers keep serving.
    std::fs::write(&file, "[[server]]\nname = \"a\"\ncommand = []\n").unwrap();
    let refused = p.wait_for("reload refused");
    assert!(refused.contains("command is empty"), "{refused}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(p.status("/servers/a/ready"), 200);
    assert_eq!(p.status("/servers/b/ready"), 200);
    assert!(
        p.lines.try_iter().all(|l| !l.contains("reload refused")),
        "the same broken file is refused once, not at every poll"
    );

    // Removed (a fixed file applies): b is gone for new sessions.
    std::fs::write(&file, server("a")).unwrap();
    p.until_status("/servers/b/ready", 404, Duration::from_secs(5));
    assert_eq!(p.status("/servers/a/ready"), 200);
    drop(p);

    // --config-poll 0 turns it off: an edit does nothing without SIGHUP.
    std::fs::write(&file, server("a")).unwrap();
    let p = Proc::start(
        &[
            "--config".as_ref(),
            file.as_os_str(),
            "--config-poll".as_ref(),
            "0".as_ref(),
        ],
        &[],
    );
    std::fs::write(&file, format!("{}{}", server("a"), server("b"))).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(p.status("/servers/b/ready"), 404);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a file caught half-written by the poll was applied when
/// the half was valid TOML on its own (here: the first server only), so
/// the servers after it were removed and then started afresh a poll later.
/// A content is applied only once two checks in a row read it now.
#[test]
fn a_config_file_caught_half_written_is_never_applied() {
    let dir = tempdir("half");
    let file = dir.join("p.toml");
    std::fs::write(&file, format!("{}{}", server("a"), server("b"))).unwrap();
    let p = Proc::start(
        &["--config".as_ref(), file.as_os_str()],
        &[("MCP_PROXY_CONFIG_POLL", "1s")],
    );
    // An edit, to learn when the checks happen: it is applied right after
    // one. The next ones follow a second apart.
    std::fs::write(&file, format!("# edited\n{}{}", server("a"), server("b"))).unwrap();
    p.wait_for("configuration reloaded");
    // Half a second later, the editor has written the first server of the
    // new file; a second after that, all of it. One check reads the half.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&file, server("a")).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(
        &file,
        format!("{}{}{}", server("a"), server("b"), server("c")),
    )
    .unwrap();
    let reload = p.wait_for("configuration reloaded");
    assert!(
        reload.contains(r#"added=["c"]"#) && reload.contains("removed=[]"),
        "{reload}"
    );
    assert_eq!(p.status("/servers/b/ready"), 200);
    assert_eq!(p.status("/servers/c/ready"), 200);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_poll_refuses_nonsense_with_exit_64() {
    let dir = tempdir("poll-bad");
    let file = dir.join("p.toml");
    std::fs::write(&file, server("a")).unwrap();
    for args in [
        vec!["--config", file.to_str().unwrap(), "--config-poll", "10ms"],
        vec!["--config", file.to_str().unwrap(), "--config-poll", "soon"],
        vec!["--server", "a=true", "--config-poll", "2s"],
    ] {
        let out = proxy_command()
            .args(&args)
            .args(["--port", "0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("--config-poll"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn named_server_flags_on_a_single_server_command_line_exit_64() {
    for flag in [
        ["--store", "/tmp/never-created.db"],
        ["--store-key-file", "/tmp/never-read.key"],
        ["--store-timeout", "5s"],
        ["--config-poll", "2s"],
    ] {
        // Before the check the proxy started and served: kill it then.
        let mut child = Reaped(
            proxy_command()
                .args(flag)
                .args(["--port", "0", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{flag:?}: the proxy started instead of refusing the flag");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(code, Some(64), "{flag:?}: {err}");
        assert!(
            err.contains(flag[0]) && err.contains("named servers"),
            "{flag:?}: {err}"
        );
    }
    assert!(!std::path::Path::new("/tmp/never-created.db").exists());
}

/// The next line on `lines` containing `needle` (20 s at most).
fn next_line_with(lines: &Receiver<String>, needle: &str) -> String {
    wait_for_line(lines, needle, STEP, &mut Vec::new())
        .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
}

/// The status of `GET path` on the proxy at `port` (one connection, 10 s at most).
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Regression: named mode panicked at start (exit 101) when the proxy's
/// environment held a variable that is not UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_environment_variable_reaches_the_child_and_stops_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir("non-utf8");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[[server]]\nname = \"dump\"\ncommand = [\"sh\", \"-c\", \"env > \\\"$DUMP_DIR/$$.env\\\"; exec \\\"$0\\\"\", {:?}]\nenv = {{ DUMP_DIR = {dumps:?} }}\n",
            example("everything")
        ),
    )
    .unwrap();
    let (mut child, rx) = spawn_logged(
        proxy_command()
            .arg("--config")
            .arg(&file)
            .args(["--port", "0"])
            .env("ODD_LATIN1", std::ffi::OsStr::from_bytes(b"caf\xe9-value"))
            .env("MCP_PROXY_ODD", std::ffi::OsStr::from_bytes(b"\xff")),
    );
    let port = wait_for_port(&rx, STEP, &mut Vec::new()).unwrap_or_else(|_| {
        panic!(
            "the proxy did not start: exit {:?}",
            child.try_wait().unwrap()
        )
    });
    let mut c = support::Client::new(&format!("http://127.0.0.1:{port}/servers/dump/mcp"));
    c.initialize("2025-11-25", serde_json::json!({})).await;
    let dumps: Vec<Vec<u8>> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(dumps.len(), 1);
    // Passed through byte for byte, as a single-server command line does;
    // the proxy's own variables never reach the child.
    let has = |needle: &[u8]| dumps[0].windows(needle.len()).any(|w| w == needle);
    assert!(has(b"ODD_LATIN1=caf\xe9-value\n"));
    assert!(!has(b"MCP_PROXY_"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: a proxy started with the wrong store key was ready (200)
/// and then answered every spawn with 503.
#[test]
fn a_store_key_that_opens_no_stored_value_stops_the_start() {
    let dir = tempdir("wrong-key");
    let db = dir.join("s.db");
    let right = mcp_sidecar::store::StoreKey::generate_base64();
    let wrong = mcp_sidecar::store::StoreKey::generate_base64();
    let mut set = proxy_command()
        .args(["secrets", "set", "none:anonymous", "dump", "tok"])
        .env("MCP_PROXY_STORE", &db)
        .env("MCP_PROXY_STORE_KEY", &right)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin.take().unwrap().write_all(b"v").unwrap();
    }
    assert!(set.wait().unwrap().success());
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "{}env = {{ TOKEN = {{ secret = \"tok\" }} }}\n",
            server("dump")
        ),
    )
    .unwrap();
    let run = |key: &str| {
        let (mut child, rx) = spawn_logged(
            proxy_command()
                .arg("--config")
                .arg(&file)
                .args(["--port", "0"])
                .env("MCP_PROXY_STORE", &db)
                .env("MCP_PROXY_STORE_KEY", key),
        );
        let mut log = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                    log.push(l);
                }
                return (status.code(), log.join("\n"));
            }
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                let up = l.contains("listening on");
                log.push(l);
                if up {
                    return (None, log.join("\n"));
                }
            }
            assert!(std::time::Instant::now() < deadline, "{log:?}");
        }
    };
    let (code, log) = run(&wrong);
    assert_eq!(
        code,
        Some(1),
        "the proxy started with a key that opens nothing: {log}"
    );
    assert!(log.contains("key"), "{log}");
    assert!(!log.contains(&wrong) && !log.contains(&right));
    let (code, log) = run(&right);
    assert_eq!(code, None, "the right key starts: {log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: while the credential store failed, every request that
/// needed it wrote its own warning, two for a call that timed out
/// (`credential store call timed out; reconnecting on the next call`
/// and `credential store call failed; answered 503`): a client starting
/// sessions in a loop filled the log with the same line, and the log
/// queue then drops other lines. The outage is now one warning when it
/// starts, a reminder at most once a minute, and one line when the store
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_logged_once_not_per_request() {
    let dir = tempdir("store-outage");
    let db = dir.join("s.db");
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "{}env = {{ TOKEN = {{ secret = \"tok\" }} }}\n",
            server("vault")
        ),
    )
    .unwrap();
    let key = mcp_sidecar::store::StoreKey::generate_base64();
    let (proxy, lines) = spawn_logged(
        proxy_command()
            .arg("--config")
            .arg(&file)
            .args(["--port", "0", "--store-timeout", "400ms"])
            .env("MCP_PROXY_STORE", &db)
            .env("MCP_PROXY_STORE_KEY", &key),
    );
    let mut log = Vec::new();
    let port = wait_for_port(&lines, STEP, &mut log).unwrap();
    // Another process holds the file locked.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/servers/vault/mcp");
    let initialize = |i: usize| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
            ))
            .send()
    };
    const N: usize = 8;
    for i in 0..N {
        assert_eq!(initialize(i).await.unwrap().status(), 503, "request {i}");
    }
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    // The store answers again: there is no value for this caller.
    let after = initialize(N).await.unwrap().status();
    assert_eq!(after, 403, "the store answers: no credential stored");
    terminate_and_drain(&proxy, &lines, STEP, &mut log);
    let text = log.join("\n");
    let warnings = log.iter().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(warnings, 1, "{text}");
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("credential store unavailable"), 1, "{text}");
    let again: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("credential store answers again"))
        .collect();
    assert_eq!(again.len(), 1, "{text}");
    assert!(again[0].contains(&format!("failures={N}")), "{}", again[0]);
}
