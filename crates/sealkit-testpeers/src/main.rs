//! `sealkit-testpeers PEER [OPTIONS]`: serves a test peer on 127.0.0.1 until killed, writing
//! the port it listens on to `--port-file` (for `cargo xtask peers`).
//!
//! - `gcp-kms [--port N] [--port-file FILE] [--service-account-file FILE]`: Cloud KMS. With
//!   `--service-account-file`, the peer makes a service account, writes its JSON key file
//!   there (`token_uri` pointing at the peer) and requires its tokens.
//! - `azure-kv --dir DIR [--port N] [--port-file FILE]`: Key Vault over HTTPS, writing to DIR
//!   the certificate authority to trust (`ca.pem`), how to sign in (`credentials.json`) and
//!   the workload identity's federated token (`federated-token`).

use std::sync::Arc;

use sealkit_testpeers::azure_kv::serve_key_vault;
use sealkit_testpeers::gcp_kms::{CloudKms, serve_authenticated};
use sealkit_testpeers::http::serve;

fn usage() -> ! {
    eprintln!(
        "usage: sealkit-testpeers gcp-kms [--port N] [--port-file FILE] [--service-account-file FILE]\n       \
         sealkit-testpeers azure-kv --dir DIR [--port N] [--port-file FILE]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(peer) = args.first().cloned() else {
        usage()
    };
    let mut port = 0u16;
    let mut port_file = None;
    let mut key_file = None;
    let mut dir = None;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--port", Some(p)) => port = p.parse().unwrap_or_else(|_| usage()),
            ("--port-file", Some(f)) => port_file = Some(f.clone()),
            ("--service-account-file", Some(f)) if peer == "gcp-kms" => key_file = Some(f.clone()),
            ("--dir", Some(d)) if peer == "azure-kv" => dir = Some(d.clone()),
            _ => usage(),
        }
    }
    let served = match (peer.as_str(), &key_file, &dir) {
        ("gcp-kms", None, _) => serve(Arc::new(CloudKms::default()), port).await,
        ("gcp-kms", Some(file), _) => {
            serve_authenticated(
                port,
                "sealkit-peer@sealkit-test.iam.gserviceaccount.com",
                "sealkit-test",
                std::path::Path::new(file),
            )
            .await
        }
        ("azure-kv", _, Some(dir)) => serve_key_vault(std::path::Path::new(dir), port)
            .await
            .map(|peer| peer.addr),
        _ => usage(),
    };
    let addr = match served {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sealkit-testpeers: cannot serve {peer} on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        }
    };
    if let Some(file) = port_file
        && let Err(e) = std::fs::write(&file, addr.port().to_string())
    {
        eprintln!("sealkit-testpeers: cannot write {file}: {e}");
        std::process::exit(1)
    }
    eprintln!("sealkit-testpeers: {peer} on {addr}");
    std::future::pending::<()>().await;
}
