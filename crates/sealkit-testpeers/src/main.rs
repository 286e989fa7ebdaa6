//! `sealkit-testpeers gcp-kms [--port N] [--port-file FILE] [--service-account-file FILE]`:
//! serves a test peer on 127.0.0.1 until killed, writing the port it listens on to FILE (for
//! `cargo xtask peers`). With `--service-account-file`, the peer makes a service account,
//! writes its JSON key file there (`token_uri` pointing at the peer) and requires its
//! tokens.

use std::sync::Arc;

use sealkit_testpeers::gcp_auth::{Auth, ServiceAccount};
use sealkit_testpeers::gcp_kms::CloudKms;
use sealkit_testpeers::http::{Service, serve};

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
    let peer = match &key_file {
        None => Arc::new(CloudKms::default()),
        Some(_) => {
            let account =
                ServiceAccount::generate("sealkit-peer@sealkit-test.iam.gserviceaccount.com")
                    .unwrap_or_else(|e| {
                        eprintln!("sealkit-testpeers: cannot make a service account: {e}");
                        std::process::exit(1)
                    });
            Arc::new(CloudKms::with_auth(Auth::new(vec![account])))
        }
    };
    let service: Arc<dyn Service> = peer.clone();
    let addr = match serve(service, port).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sealkit-testpeers: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        }
    };
    if let (Some(file), Some(auth)) = (&key_file, peer.auth()) {
        let token_uri = format!("http://{addr}/token");
        auth.set_token_uri(token_uri.clone());
        let key = auth.accounts()[0].key_file("sealkit-test", &token_uri);
        if let Err(e) = std::fs::write(file, key.to_string()) {
            eprintln!("sealkit-testpeers: cannot write {file}: {e}");
            std::process::exit(1)
        }
    }
    if let Some(file) = port_file
        && let Err(e) = std::fs::write(&file, addr.port().to_string())
    {
        eprintln!("sealkit-testpeers: cannot write {file}: {e}");
        std::process::exit(1)
    }
    eprintln!("sealkit-testpeers: {} on {addr}", args[0]);
    std::future::pending::<()>().await;
}
