//! `sealkit-testpeers gcp-kms [--port N] [--port-file FILE] [--service-account-file FILE]`:
//! serves a test peer on 127.0.0.1 until killed, writing the port it listens on to FILE (for
//! `cargo xtask peers`). With `--service-account-file`, the peer makes a service account,
//! writes its JSON key file there (`token_uri` pointing at the peer) and requires its
//! tokens.

use std::sync::Arc;

use sealkit_testpeers::gcp_kms::{CloudKms, serve_authenticated};
use sealkit_testpeers::http::serve;

fn usage() -> ! {
    eprintln!(
        "usage: sealkit-testpeers gcp-kms [--port N] [--port-file FILE] [--service-account-file FILE]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("gcp-kms") {
        usage();
    }
    let mut port = 0u16;
    let mut port_file = None;
    let mut key_file = None;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--port", Some(p)) => port = p.parse().unwrap_or_else(|_| usage()),
            ("--port-file", Some(f)) => port_file = Some(f.clone()),
            ("--service-account-file", Some(f)) => key_file = Some(f.clone()),
            _ => usage(),
        }
    }
    let served = match &key_file {
        None => serve(Arc::new(CloudKms::default()), port).await,
        Some(file) => {
            serve_authenticated(
                port,
                "sealkit-peer@sealkit-test.iam.gserviceaccount.com",
                "sealkit-test",
                std::path::Path::new(file),
            )
            .await
        }
    };
    let addr = match served {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sealkit-testpeers: cannot serve on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        }
    };
    if let Some(file) = port_file
        && let Err(e) = std::fs::write(&file, addr.port().to_string())
    {
        eprintln!("sealkit-testpeers: cannot write {file}: {e}");
        std::process::exit(1)
    }
    eprintln!("sealkit-testpeers: {} on {addr}", args[0]);
    std::future::pending::<()>().await;
}
