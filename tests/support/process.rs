//! Tests that run a real program (most often the `mcp-proxy` binary) as a
//! child process: a temporary directory, a command line without the
//! test's own `MCP_PROXY_*` variables, the child's stderr read line by
//! line, the port it logged, and a kill on drop. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What the proxy logs once it serves, followed by its port.
pub const LISTENING: &str = "listening on http://127.0.0.1:";

/// A child killed and reaped when dropped: a failing assertion must not
/// leave a proxy (and its children) running, or a zombie behind.
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // std knows when the child was already reaped: no stray signal.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` random bytes in lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut r = vec![0u8; n];
    getrandom::fill(&mut r).unwrap();
    r.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new directory under the system's temporary one, named after the
/// test binary, `tag` and a random part, so runs and tests never share one.
pub fn tempdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "mcp-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        random_hex(6)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// [`tempdir`] with mode 0777, for a child that runs as `nobody` (see
/// [`unprivileged`]) and writes there.
pub fn world_writable_tempdir(tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = tempdir(tag);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

/// Runs `cmd` as `nobody` when this test runs as root (root reads any
/// process's files whatever their owner says).
pub fn unprivileged(cmd: &mut Command) -> &mut Command {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        cmd.uid(65534).gid(65534);
    }
    cmd
}

/// The `mcp-proxy` binary with none of the `MCP_PROXY_*` variables this
/// test runs under (a test sets the ones it means with `env`), and stdin
/// from /dev/null. stdout and stderr are left to the caller.
pub fn proxy_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MCP_PROXY_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Starts `cmd` with stdout to /dev/null and stderr piped, returning the
/// child (killed and reaped when dropped) and its stderr lines.
pub fn spawn_logged(cmd: &mut Command) -> (Reaped, Receiver<String>) {
    let mut child = Reaped(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = stderr_lines(&mut child);
    (child, lines)
}

/// The lines `child` writes on stderr (which must be piped), read by a
/// thread of their own. The channel closes when the child closes stderr.
pub fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `child` SIGTERM and pushes to `log` every line it writes on
/// `lines` until it closes stderr (it exited) or `within` has passed.
pub fn terminate_and_drain(
    child: &Child,
    lines: &Receiver<String>,
    within: Duration,
    log: &mut Vec<String>,
) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + within;
    while let Ok(l) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push(l);
    }
}

/// The next line on `lines` that contains `needle`, waiting `within` in
/// all. Every line read, that one included, is pushed to `log`. The error
/// says whether the writer closed (`Disconnected`) or time ran out.
pub fn wait_for_line(
    lines: &Receiver<String>,
    needle: &str,
    within: Duration,
    log: &mut Vec<String>,
) -> Result<String, RecvTimeoutError> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = lines.recv_timeout(left)?;
        let hit = l.contains(needle);
        log.push(l.clone());
        if hit {
            return Ok(l);
        }
    }
}

/// The port of the proxy whose stderr is `lines`, from its
/// [`LISTENING`] line, waiting `within` in all; as [`wait_for_line`].
pub fn wait_for_port(
    lines: &Receiver<String>,
    within: Duration,
    log: &mut Vec<String>,
) -> Result<u16, RecvTimeoutError> {
    let line = wait_for_line(lines, LISTENING, within, log)?;
    let rest = line.split(LISTENING).nth(1).unwrap();
    Ok(rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap())
}

/// The text of the file at `path` once it ends with `end` (a child writes
/// it and then that marker), waiting at most `wait`; panics past it.
pub fn wait_for_file_ending(path: &std::path::Path, end: &[u8], wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read(path).unwrap_or_default();
        if text.ends_with(end) {
            return String::from_utf8_lossy(&text).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{} never ended with {:?}",
            path.display(),
            String::from_utf8_lossy(end)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
