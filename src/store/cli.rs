//! `mcp-proxy secrets …`: manage the credential store from a shell.
//!
//! Values are read from stdin, never from argv (argv is visible to every
//! user of the host in `ps`). `get` writes the value to stdout and nothing
//! else; everything else goes to stderr. Bad usage is one line on stderr
//! and exit 64, a failure exit 1.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use argh::FromArgs;

use super::seal::MAX_SECRET_BYTES;
use super::{DEFAULT_STORE_TIMEOUT, Secret, SecretRef, Store, StoreKey, load_keys};

/// Exit code for bad usage (sysexits EX_USAGE).
pub const EX_USAGE: i32 = 64;

/// Manage per-user credentials in the store (values are read from stdin).
#[derive(FromArgs, Debug)]
pub struct SecretsArgs {
    /// the store: a file path (embedded SQLite) or postgres://user:pass@host/db (env MCP_PROXY_STORE)
    #[argh(option)]
    pub store: Option<String>,
    /// file with the store key(s), base64, sealing key first (default: MCP_PROXY_STORE_KEY)
    #[argh(option)]
    pub store_key_file: Option<String>,
    /// deadline of each store call, e.g. 5s (default 5s)
    #[argh(option)]
    pub store_timeout: Option<String>,
    #[argh(subcommand)]
    pub command: SecretsCommand,
}

/// What to do.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum SecretsCommand {
    /// Store a value.
    Set(SetArgs),
    /// Print a value.
    Get(GetArgs),
    /// Remove a value.
    Delete(DeleteArgs),
    /// List stored secrets (never their values).
    List(ListArgs),
    /// Re-seal every value under the first key.
    RotateKey(RotateArgs),
    /// Print a new random store key.
    GenKey(GenKeyArgs),
}

/// Store a value piped to stdin, never a terminal (one trailing newline is dropped).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set")]
pub struct SetArgs {
    /// who the secret belongs to, METHOD:NAME as the proxy names them: api-key:NAME (a named key of --api-key-file), jwt:SUB, forward:NAME, or none:anonymous without authentication
    #[argh(positional)]
    pub principal: String,
    /// the configured server it is for
    #[argh(positional)]
    pub server: String,
    /// the secret's name in the server's config ({ secret = "NAME" })
    #[argh(positional)]
    pub name: String,
    /// store under this key although it opens none of the values already stored (the store's key was lost, or this is a new key on purpose); without it, such a key is refused
    #[argh(switch)]
    pub new_key: bool,
}

/// Print a value to stdout.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "get")]
pub struct GetArgs {
    /// principal, METHOD:NAME (api-key:alice, jwt:alice, forward:alice, none:anonymous)
    #[argh(positional)]
    pub principal: String,
    /// server
    #[argh(positional)]
    pub server: String,
    /// secret name
    #[argh(positional)]
    pub name: String,
}

/// Remove a value.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
pub struct DeleteArgs {
    /// principal, METHOD:NAME (api-key:alice, jwt:alice, forward:alice, none:anonymous)
    #[argh(positional)]
    pub principal: String,
    /// server
    #[argh(positional)]
    pub server: String,
    /// secret name
    #[argh(positional)]
    pub name: String,
}

/// List principal, server, name and sealing key id of every stored secret.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {}

/// Re-seal every value under the first key of MCP_PROXY_STORE_KEY / --store-key-file; the other keys open the old values. Running proxies keep serving if they hold both keys.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "rotate-key")]
pub struct RotateArgs {}

/// Print a new random 32-byte store key, base64.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "gen-key")]
pub struct GenKeyArgs {}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg} (see mcp-proxy secrets --help)");
    EX_USAGE
}

/// Runs `mcp-proxy secrets <argv…>`; returns the exit code.
pub fn main(argv: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> i32 {
    let args = match SecretsArgs::from_args(&["mcp-proxy", "secrets"], argv) {
        Ok(a) => a,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    0
                }
                Err(()) => usage(early.output.lines().next().unwrap_or("invalid arguments")),
            };
        }
    };
    if let SecretsCommand::GenKey(_) = args.command {
        println!("{}", StoreKey::generate_base64());
        return 0;
    }
    let Some(location) = args.store.clone().or_else(|| lookup("MCP_PROXY_STORE")) else {
        return usage("--store is required (a file path or postgres://…), or set MCP_PROXY_STORE");
    };
    if let Err(e) = super::check_location(&location) {
        return usage(e);
    }
    let timeout = match args
        .store_timeout
        .clone()
        .or_else(|| lookup("MCP_PROXY_STORE_TIMEOUT"))
    {
        None => DEFAULT_STORE_TIMEOUT,
        Some(v) => match crate::config::parse_duration(&v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                return usage(format!(
                    "--store-timeout: expected a duration such as 5s, got {v:?}"
                ));
            }
        },
    };
    let key_file = args
        .store_key_file
        .clone()
        .or_else(|| lookup("MCP_PROXY_STORE_KEY_FILE"));
    let keys = match load_keys(key_file.as_deref(), lookup) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    // Audit lines (target `audit`) and warnings go to stderr.
    let _ = crate::logging::init(
        crate::logging::LogFormat::Plain,
        "warn,audit=info",
        crate::config::DEFAULT_WRITER_QUEUE_BYTES,
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(args.command, &location, keys, timeout))
}

async fn run(
    command: SecretsCommand,
    location: &str,
    keys: super::KeyRing,
    timeout: Duration,
) -> i32 {
    // A principal that does not say how it logs in, or a server or secret
    // name the store refuses, is a usage error, found before the store is
    // opened (or created).
    let at = match &command {
        SecretsCommand::Set(a) => Some(SecretRef::new(&a.principal, &a.server, &a.name)),
        SecretsCommand::Get(a) => Some(SecretRef::new(&a.principal, &a.server, &a.name)),
        SecretsCommand::Delete(a) => Some(SecretRef::new(&a.principal, &a.server, &a.name)),
        _ => None,
    };
    if let Some(Err(e)) = at.as_ref().map(super::check_ref) {
        return usage(e);
    }
    // Read the value before opening the store: a bad value is a usage error.
    let value = match &command {
        SecretsCommand::Set(_) => match read_value() {
            Ok(v) => Some(v),
            Err(e) => return usage(e),
        },
        _ => None,
    };
    let store = match Store::open(location, keys, timeout).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let r: Result<i32, super::StoreError> = async {
        match command {
            SecretsCommand::Set(a) => {
                let at = SecretRef::new(&a.principal, &a.server, &a.name);
                // A key that opens none of the stored values is most likely
                // the wrong one: writing under it would leave the store
                // sealed under two keys, half of it unreadable to any proxy.
                if !a.new_key {
                    match store.key_fit().await {
                        Err(e @ super::StoreError::WrongKey { .. }) => {
                            eprintln!("error: {e} (pass --new-key to store under this key anyway)");
                            return Ok(1);
                        }
                        r => {
                            r?;
                        }
                    }
                }
                // Invariant: read above for Set.
                store.set(&at, &value.expect("value read")).await?;
                eprintln!("stored {at}");
                Ok(0)
            }
            SecretsCommand::Get(a) => {
                let at = SecretRef::new(&a.principal, &a.server, &a.name);
                match store.get(&at).await? {
                    None => {
                        eprintln!("error: no secret {at}");
                        Ok(1)
                    }
                    Some(v) => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(v.expose());
                        if out.is_terminal() {
                            let _ = out.write_all(b"\n");
                        }
                        let _ = out.flush();
                        Ok(0)
                    }
                }
            }
            SecretsCommand::Delete(a) => {
                let at = SecretRef::new(&a.principal, &a.server, &a.name);
                if store.delete(&at).await? {
                    eprintln!("deleted {at}");
                    Ok(0)
                } else {
                    eprintln!("error: no secret {at}");
                    Ok(1)
                }
            }
            SecretsCommand::List(_) => {
                let mut out = std::io::stdout().lock();
                for (at, key_id) in store.list().await? {
                    let _ = writeln!(out, "{}\t{}\t{}\t{key_id}", at.principal, at.server, at.name);
                }
                Ok(0)
            }
            SecretsCommand::RotateKey(_) => {
                let r = store.rotate().await?;
                eprintln!(
                    "re-sealed {} value(s) under key {} ({} already current, {} changed meanwhile and were written under it)",
                    r.resealed,
                    store.key_ids()[0],
                    r.current,
                    r.raced
                );
                if r.unopened.is_empty() {
                    return Ok(0);
                }
                for at in &r.unopened {
                    eprintln!("cannot open {at} with these keys: left as it is");
                }
                eprintln!(
                    "error: {} value(s) could not be opened and are still sealed under an old or unknown key: set them again or delete them before dropping the old key",
                    r.unopened.len()
                );
                Ok(1)
            }
            SecretsCommand::GenKey(_) => Ok(0),
        }
    }
    .await;
    r.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        1
    })
}

/// The value from stdin, which is not a terminal: at most
/// [`MAX_SECRET_BYTES`], one trailing newline dropped, no NUL (it goes into
/// an environment variable).
///
/// No copy of it is left behind in freed memory: the buffer has room for
/// the whole bound from the start (so it is never moved by growing), it
/// is wiped when dropped, and stdin is read through its descriptor, not
/// through the standard library's buffer, which would keep a copy until
/// the process ends.
fn read_value() -> Result<Secret, String> {
    use std::os::fd::AsFd;
    // A terminal echoes what is typed: the value would stand on the screen.
    if std::io::stdin().is_terminal() {
        return Err(
            "stdin is a terminal, which would echo the value: pipe it in (read -rs TOKEN; printf %s \"$TOKEN\" | mcp-proxy secrets set …)".into(),
        );
    }
    let mut buf = Secret::new(Vec::with_capacity(MAX_SECRET_BYTES + 2));
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    std::fs::File::from(fd)
        .take(MAX_SECRET_BYTES as u64 + 2)
        .read_to_end(buf.expose_mut_for_read())
        .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    let mut bytes = buf.expose();
    if let Some(b) = bytes.strip_suffix(b"\n") {
        bytes = b.strip_suffix(b"\r").unwrap_or(b);
    }
    if bytes.is_empty() {
        return Err(
            "no value on stdin (pipe it in: printf %s \"$TOKEN\" | mcp-proxy secrets set …)".into(),
        );
    }
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(format!("the value exceeds {MAX_SECRET_BYTES} bytes"));
    }
    if bytes.contains(&0) {
        return Err("the value contains a NUL byte, which no environment variable can hold".into());
    }
    // A child's variables are text: a value that is not would be refused
    // at every spawn (see `CredentialError::NotText`).
    if std::str::from_utf8(bytes).is_err() {
        return Err(
            "the value is not UTF-8 text, which a child's environment variable must be".into(),
        );
    }
    // The line ending goes in place: no second copy of the value.
    let len = bytes.len();
    buf.expose_mut_for_read().truncate(len);
    Ok(buf)
}
