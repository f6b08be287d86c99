//! A throwaway PostgreSQL server for the store tests (tests/store.rs,
//! tests/store_servers.rs): a temp dir, a loopback port, run as the
//! `postgres` user when the tests run as root, never a system service.
//!
//! Missing PostgreSQL is a skip with a printed notice on a developer's
//! machine and a failure wherever it is required: when `CI` is set (CI runs
//! scripts/test.sh with `CI=true`, which installs the Debian package) or
//! `MCP_PROXY_TEST_POSTGRES=required` (scripts/test.sh sets it once the
//! binaries are there). A test that needs PostgreSQL can then never pass
//! in CI without having run.

use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Postgres {
    dir: std::path::PathBuf,
    /// `postgres://mcp@127.0.0.1:<port>/postgres`, trust auth on loopback.
    pub url: String,
    child: std::process::Child,
}

/// Why PostgreSQL must run here, if it must.
fn required_because() -> Option<&'static str> {
    if std::env::var("MCP_PROXY_TEST_POSTGRES").as_deref() == Ok("required") {
        return Some("MCP_PROXY_TEST_POSTGRES=required");
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        return Some("CI is set");
    }
    None
}

/// Fails the test when PostgreSQL is required, else prints why it skips.
fn unavailable(why: &str) -> Option<Postgres> {
    if let Some(because) = required_because() {
        panic!(
            "PostgreSQL is required ({because}) but unavailable: {why}; scripts/test.sh installs the Debian package"
        );
    }
    eprintln!("skipped: PostgreSQL unavailable: {why} (scripts/test.sh installs it)");
    None
}

fn tempdir() -> std::path::PathBuf {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).unwrap();
    let p = std::env::temp_dir().join(format!(
        "mcp-store-pg-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

impl Postgres {
    /// A running server, or `None` (a skip) where it is not required.
    pub fn start() -> Option<Postgres> {
        let root = std::env::var_os("MCP_PROXY_TEST_POSTGRES_ROOT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/usr/lib/postgresql".into());
        let bin = std::fs::read_dir(&root).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .find(|p| p.join("initdb").exists())
        });
        let Some(bin) = bin else {
            return unavailable(&format!("no server binaries under {}", root.display()));
        };
        let is_root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        let dir = tempdir();
        let data = dir.join("data");
        let as_user = |prog: &str| -> Command {
            if is_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
                c
            } else {
                Command::new(bin.join(prog))
            }
        };
        if is_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = std::fs::remove_dir_all(&dir);
                return unavailable("cannot hand the temp dir to the postgres user");
            }
        }
        let out = as_user("initdb")
            .args(["-A", "trust", "-U", "mcp", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = as_user("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("postgres://mcp@127.0.0.1:{port}/postgres");
        let pg = Postgres { dir, url, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ready = || {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        };
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pg)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT to the postmaster itself (runuser does not pass it on):
        // PostgreSQL's fast shutdown.
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
