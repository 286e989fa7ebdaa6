//! The Cloud KMS provider against Sealkit's Cloud KMS test peer (started by `cargo xtask
//! peers up`; its fidelity is checked with Google's own Python client): the whole provider
//! conformance suite, the faults a KMS has (throttled, unavailable, stalled, reset, gone), and
//! a round trip through the facade. Tests that inject faults run a private peer of their own,
//! so that their faults reach no other test.

use std::time::{Duration, Instant};

use sealkit::{Config, EncryptionContext, ErrorKind, KeyUri, Keyring};
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_core::provider::{KeyAdmin, KeyEncryption};
use sealkit_gcp::{GcpKms, GcpSettings};

fn endpoint() -> Option<String> {
    peer_env("SEALKIT_TEST_GCP_KMS_ENDPOINT", "the Cloud KMS test peer")
}

/// A private Cloud KMS test peer in this process, for fault tests.
async fn private_peer() -> String {
    let addr = sealkit_testpeers::http::serve(
        std::sync::Arc::new(sealkit_testpeers::gcp_kms::CloudKms::default()),
        0,
    )
    .await
    .unwrap();
    format!("http://{addr}")
}

fn provider(endpoint: &str, project: &str) -> GcpKms {
    GcpKms::new(
        GcpSettings::default()
            .with_project(project)
            .with_kms_endpoint(endpoint)
            .with_timeout(Duration::from_secs(2)),
    )
}

fn key(project: &str, name: &str) -> KeyUri {
    KeyUri::parse(&format!(
        "gcp-kms://projects/{project}/locations/global/keyRings/sealkit/cryptoKeys/{name}"
    ))
    .unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::parse("table=customers,column=email").unwrap()
}

/// Injects `count` faults of `mode` into the peer.
async fn fault(endpoint: &str, mode: &str, count: u64) {
    let addr = endpoint.trim_start_matches("http://").to_string();
    let body = format!(r#"{{"mode":"{mode}","count":{count},"retry_after":1}}"#);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /_peer/fault HTTP/1.1\r\nhost: peer\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_kms_passes_the_provider_conformance_suite() {
    let Some(endpoint) = endpoint() else { return };
    let project = unique("conformance");
    let kms = provider(&endpoint, &project);
    sealkit_conformance::run_all(&kms, &kms, &key(&project, "suite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wraps_bind_the_scope_and_name_the_version_that_encrypted() {
    let Some(endpoint) = endpoint() else { return };
    let project = unique("wrap");
    let kms = provider(&endpoint, &project);
    let k = key(&project, "pii");
    kms.create_key(&k).await.unwrap();
    let g = kms.generate_data_key(&k, &ctx()).await.unwrap();
    assert_eq!(g.wrapped.key.version.as_str(), "1");
    let v2 = kms.rotate_key(&k).await.unwrap();
    let moved = kms.rewrap(&g.wrapped, &k, &ctx()).await.unwrap();
    assert_eq!(
        moved.key.version, v2,
        "rewrap is decrypt + encrypt under the primary"
    );
    assert_eq!(
        kms.unwrap(&moved, &ctx()).await.unwrap().expose(),
        g.plaintext.expose()
    );
    kms.set_rotation_period(&k, Some(Duration::from_secs(90 * 86_400)))
        .await
        .unwrap();
    let listed = kms.list_keys(None).await.unwrap();
    assert_eq!(listed, vec![k.clone()]);
    let bad = KeyUri::parse("gcp-kms://projects/p/keyRings/r").unwrap();
    let err = kms.generate_data_key(&bad, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("cryptoKeys/K"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_classified_and_nothing_hangs() {
    let endpoint = private_peer().await;
    let project = unique("faults");
    let kms = provider(&endpoint, &project);
    let k = key(&project, "pii");
    kms.create_key(&k).await.unwrap();
    for (mode, kind) in [
        ("throttle", ErrorKind::Throttled),
        ("unavailable", ErrorKind::Unavailable),
        ("reset", ErrorKind::Unavailable),
        ("stall", ErrorKind::Unavailable),
    ] {
        fault(&endpoint, mode, 1).await;
        let started = Instant::now();
        let err = kms.generate_data_key(&k, &ctx()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{mode}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode}: bounded by the 2-second request timeout"
        );
    }
    assert!(
        kms.generate_data_key(&k, &ctx()).await.is_ok(),
        "answers again"
    );
    // A peer that is gone.
    let gone = provider("http://127.0.0.1:9", &project);
    let err = gone.generate_data_key(&k, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_seals_under_cloud_kms_keys_and_retries_throttling() {
    let endpoint = private_peer().await;
    let project = unique("facade");
    let uri = key(&project, "customers");
    let mut config = Config::default();
    config.default_key = Some(uri.clone());
    config.provider("gcp").set("project", &project);
    config.provider("gcp").set("kms_endpoint", &endpoint);
    config.resilience.initial_backoff_ms = 50;
    let keyring = Keyring::builder(config).build().unwrap();
    keyring.create_key(&uri).await.unwrap();
    let c = EncryptionContext::parse("table=customers,column=email,id=7").unwrap();
    fault(&endpoint, "throttle", 2).await;
    let sealed = keyring.seal(b"alice@example.com", &c).await.unwrap();
    assert_eq!(
        keyring.open(&sealed, &c).await.unwrap(),
        b"alice@example.com"
    );
    assert!(
        keyring.stats().kms_calls >= 3,
        "two throttled calls retried"
    );
    let health = keyring.health().await;
    assert!(
        health
            .iter()
            .any(|r| r.component.contains("gcp-kms") && r.is_healthy()),
        "{health:?}"
    );
}

/// A peer that requires Google's service-account authentication: the provider, given the key
/// file the peer made, signs its requests (self-signed JWTs, as Google's client does) and is
/// served; without it, it is refused as unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_key_file_authenticates_and_nothing_else_does() {
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
    let endpoint = format!("http://{addr}");
    let k = key("sealkit-test", "authed");

    let anonymous = provider(&endpoint, "sealkit-test");
    let err = anonymous.create_key(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("cloudkms"),
        "names the role: {err}"
    );

    let signed = GcpKms::new(
        GcpSettings::default()
            .with_project("sealkit-test")
            .with_kms_endpoint(&endpoint)
            .with_credentials_file(&key_file),
    );
    signed.create_key(&k).await.unwrap();
    let g = signed.generate_data_key(&k, &ctx()).await.unwrap();
    assert_eq!(
        signed.unwrap(&g.wrapped, &ctx()).await.unwrap().expose(),
        g.plaintext.expose()
    );
    let missing = GcpKms::new(
        GcpSettings::default()
            .with_kms_endpoint(&endpoint)
            .with_credentials_file(dir.path().join("nope.json")),
    );
    let err = missing.key_metadata(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured, "{err}");
}
