//! `sealkit-testpeers gcp-kms [--port N] [--port-file FILE]`: serves a test peer on
//! 127.0.0.1 until killed, writing the port it listens on to FILE (for `cargo xtask peers`).

use std::sync::Arc;

use sealkit_testpeers::gcp_kms::CloudKms;
use sealkit_testpeers::http::{Service, serve};

fn usage() -> ! {
    eprintln!("usage: sealkit-testpeers gcp-kms [--port N] [--port-file FILE]");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let service: Arc<dyn Service> = match args.first().map(String::as_str) {
        Some("gcp-kms") => Arc::new(CloudKms::default()),
        _ => usage(),
    };
    let mut port = 0u16;
    let mut port_file = None;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--port", Some(p)) => port = p.parse().unwrap_or_else(|_| usage()),
            ("--port-file", Some(f)) => port_file = Some(f.clone()),
            _ => usage(),
        }
    }
    let addr = match serve(service, port).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sealkit-testpeers: cannot listen on 127.0.0.1:{port}: {e}");
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
