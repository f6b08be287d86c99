//! The tests' fake Coda API v1 as a program, for the deployment tests
//! (`scripts/ship-test.sh` runs coda-mcp in a container against it).
//!
//! `fake_coda --port N` serves the fake (its standard fixture, token
//! `test-token-5f0c`) on 127.0.0.1:N until killed. The fake itself binds an
//! ephemeral port; this program forwards the fixed one to it, so that a
//! container can be given the base URL before the fake starts.

#[path = "../tests/support/fake_coda.rs"]
mod fake_coda;

use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = match args.iter().position(|a| a == "--port") {
        Some(i) => args
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| usage()),
        None => usage(),
    };
    let fake = fake_coda::FakeCoda::start().await;
    let base = fake.base_url();
    // Invariant: base_url() is "http://127.0.0.1:PORT/apis/v1".
    let target = base
        .strip_prefix("http://")
        .and_then(|s| s.split('/').next())
        .expect("fake base url")
        .to_string();
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "fake coda: http://127.0.0.1:{port}/apis/v1 (token {})",
        fake_coda::TOKEN
    );
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn usage() -> ! {
    eprintln!("usage: fake_coda --port N");
    std::process::exit(64);
}
