//! Newline-delimited JSON over this process's stdin and stdout, shared by the
//! example servers (included with `#[path]`, so it is not an example itself).
//!
//! Both ends run on dedicated OS threads rather than tokio's stdin/stdout,
//! which go through the blocking pool for every read and write: the example
//! servers are the child in throughput benchmarks and must not be the
//! bottleneck. The writer is the only owner of stdout, so messages never
//! interleave, and it flushes whenever its queue runs dry: each message is on
//! the pipe before the writer waits again, and under load many messages share
//! one `write(2)`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::os::fd::AsFd;

use serde::Serialize;
use tokio::sync::mpsc;

/// Room for this many lines between the stdin thread and the server; when
/// full, the reader stops reading stdin, which pushes back on the client.
const INBOUND_CAPACITY: usize = 1024;

/// Room for this many queued outbound messages; senders await when full.
const OUTBOUND_CAPACITY: usize = 1024;

const IO_BUFFER_BYTES: usize = 64 * 1024;

/// What the stdout thread is asked to do, in order.
pub enum Out {
    /// One complete line, trailing `\n` included.
    Line(Vec<u8>),
    /// Flush everything queued before this, then exit the process.
    Exit(i32),
}

/// Serializes `message` as one compact JSON line.
pub fn line(message: &impl Serialize) -> Out {
    // Serializing our own in-memory values cannot fail: every map key is a string.
    let mut bytes = serde_json::to_vec(message).expect("JSON value serializes");
    bytes.push(b'\n');
    Out::Line(bytes)
}

/// Starts the stdin thread. Yields each non-empty line without its `\n` or
/// `\r\n`; the channel closes at EOF or on a read error.
pub fn spawn_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
    // A private dup of fd 0 so the buffer size is ours, not std's 8 KiB.
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("stdin is open");
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut reader = BufReader::with_capacity(IO_BUFFER_BYTES, File::from(stdin));
            loop {
                let mut buf = Vec::new();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        if buf.is_empty() {
                            continue;
                        }
                        if tx.blocking_send(buf).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("stdin read failed: {e}");
                        break;
                    }
                }
            }
        })
        .expect("spawn stdin thread");
    rx
}

/// Starts the stdout thread. When stdout is gone (the client closed its end),
/// the process exits unless `survive_broken_stdout`, in which case output is
/// dropped from then on.
pub fn spawn_writer(survive_broken_stdout: bool) -> mpsc::Sender<Out> {
    let (tx, mut rx) = mpsc::channel::<Out>(OUTBOUND_CAPACITY);
    // A dup of fd 1 bypasses std's line-buffered stdout, which would issue a
    // write per line.
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .expect("stdout is open");
    std::thread::Builder::new()
        .name("stdout".into())
        .spawn(move || {
            let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, File::from(stdout));
            let mut broken = false;
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(out) = next {
                    match out {
                        Out::Line(bytes) => {
                            if !broken && writer.write_all(&bytes).is_err() {
                                broken = true;
                            }
                        }
                        Out::Exit(code) => {
                            let _ = writer.flush();
                            std::process::exit(code);
                        }
                    }
                    next = rx.try_recv().ok();
                }
                if !broken && writer.flush().is_err() {
                    broken = true;
                }
                // Once broken, later lines are dropped and the channel is
                // still drained so that senders never block.
                if broken && !survive_broken_stdout {
                    eprintln!("stdout closed; exiting");
                    std::process::exit(0);
                }
            }
        })
        .expect("spawn stdout thread");
    tx
}
