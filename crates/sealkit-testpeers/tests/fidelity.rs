//! The test peers against the vendors' own clients: `fidelity/gcp_kms.py` drives the Cloud
//! KMS peer with `google-cloud-kms` (REST transport), `fidelity/azure_kv.py` the Key Vault
//! peer with `azure-keyvault-keys`, `azure-keyvault-secrets` and `azure-identity`, each
//! through every operation the peer serves. The Python comes
//! from the peers' venv (`cargo xtask peers up` installs the client and exports
//! `SEALKIT_TEST_PEERS_PYTHON`).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use sealkit_conformance::peers::peer_env;
use sealkit_testpeers::gcp_kms::CloudKms;
use sealkit_testpeers::http::serve;

async fn peer() -> std::net::SocketAddr {
    serve(Arc::new(CloudKms::default()), 0).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_client_drives_the_cloud_kms_peer() {
    let Some(python) = peer_env("SEALKIT_TEST_PEERS_PYTHON", "the peers' Python venv") else {
        return;
    };
    let addr = peer().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fidelity/gcp_kms.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "google-cloud-kms could not drive the peer:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_libraries_authenticate_with_a_key_file_the_peer_made() {
    let Some(python) = peer_env("SEALKIT_TEST_PEERS_PYTHON", "the peers' Python venv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    let addr = sealkit_testpeers::gcp_kms::serve_authenticated(
        0,
        "app@sealkit-test.iam.gserviceaccount.com",
        "sealkit-test",
        &key_file,
    )
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fidelity/gcp_kms_auth.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "Google's libraries could not authenticate to the peer:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_clients_drive_the_key_vault_peer() {
    let Some(python) = peer_env("SEALKIT_TEST_PEERS_PYTHON", "the peers' Python venv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    sealkit_testpeers::azure_kv::serve_key_vault(dir.path(), 0)
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fidelity/azure_kv.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(dir.path())
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "azure-keyvault-keys, azure-keyvault-secrets and azure-identity could not drive the \
         peer:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}

/// One raw HTTP/1.1 exchange: what the server sent before it closed (or the read timed out).
fn exchange(
    addr: std::net::SocketAddr,
    request: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: peer\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: peer\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_throttle_fail_stall_and_reset() {
    let addr = peer().await;
    let ring = "/v1/projects/p/locations/global/keyRings/r";
    let run = move |request: String, timeout: Duration| {
        tokio::task::spawn_blocking(move || exchange(addr, &request, timeout))
    };
    let set = |mode: &str| {
        post(
            "/_peer/fault",
            &format!(r#"{{"mode":"{mode}","retry_after":7}}"#),
        )
    };
    let short = Duration::from_secs(5);

    run(set("throttle"), short).await.unwrap().unwrap();
    let answer = run(get(ring), short).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 7"), "{answer}");
    assert!(answer.contains("\"RESOURCE_EXHAUSTED\""), "{answer}");

    run(set("unavailable"), short).await.unwrap().unwrap();
    let answer = run(get(ring), short).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"UNAVAILABLE\""), "{answer}");

    run(set("reset"), short).await.unwrap().unwrap();
    let answer = run(get(ring), short).await.unwrap();
    assert!(
        !matches!(&answer, Ok(text) if text.starts_with("HTTP/1.1")),
        "a reset sends no answer: {answer:?}"
    );

    run(set("stall"), short).await.unwrap().unwrap();
    let stalled = run(get(ring), Duration::from_millis(500)).await.unwrap();
    assert!(
        matches!(&stalled, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a stall answers nothing: {stalled:?}"
    );

    // The faults were one request each: the peer answers again, with Google's error body.
    let answer = run(get(ring), short).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#""status":"NOT_FOUND""#), "{answer}");
}
