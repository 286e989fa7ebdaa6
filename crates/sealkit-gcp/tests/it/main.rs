//! Tests of the Secret Manager source against the real emulator (started by
//! `cargo xtask peers up`), spoken to over its REST API as Google's client does.

use std::time::Duration;

use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::SecretPayload;
use sealkit::secrets::{FallbackPolicy, SecretSources};
use sealkit::{Error, ErrorKind};
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_conformance::{FaultMode, FaultProxy};
use sealkit_core::provider::SecretSource;
use sealkit_gcp::{GcpSecrets, GcpSettings};
use secrecy::ExposeSecret;

const PROJECT: &str = "sealkit-test";

fn endpoint() -> Option<String> {
    peer_env(
        "SEALKIT_TEST_GCP_SECRETS_ENDPOINT",
        "the Secret Manager emulator",
    )
}

fn source(endpoint: &str) -> GcpSecrets {
    GcpSecrets::new(
        GcpSettings::default()
            .with_project(PROJECT)
            .with_secrets_endpoint(endpoint)
            .with_timeout(Duration::from_secs(2)),
    )
}

/// Google's client, straight at the emulator: for what the source deliberately cannot do
/// (disable versions, send bad checksums).
async fn raw_client(endpoint: &str) -> SecretManagerService {
    SecretManagerService::builder()
        .with_endpoint(endpoint)
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .unwrap()
}

/// Creates a secret with one version per value (each sent with its CRC32C); returns its id.
async fn create_secret(source: &GcpSecrets, values: &[&[u8]]) -> String {
    let id = unique("db-password");
    source.create_secret(&id).await.unwrap();
    for (n, value) in values.iter().enumerate() {
        let version = source.add_version(&id, value).await.unwrap();
        assert_eq!(version, (n + 1).to_string());
    }
    id
}

#[tokio::test]
async fn latest_numbered_and_disabled_versions() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let id = create_secret(&source, &[b"first", b"second"]).await;

    let latest = source.get_secret(&id, None).await.unwrap();
    assert_eq!(latest.value.expose_secret().as_slice(), b"second");
    assert_eq!(latest.version.as_deref(), Some("2"));
    let first = source.get_secret(&id, Some("1")).await.unwrap();
    assert_eq!(first.value.expose_secret().as_slice(), b"first");
    assert_eq!(first.version.as_deref(), Some("1"));
    let full_name = format!("projects/{PROJECT}/secrets/{id}");
    let by_resource = source.get_secret(&full_name, Some("latest")).await.unwrap();
    assert_eq!(by_resource.value.expose_secret().as_slice(), b"second");

    raw_client(&endpoint)
        .await
        .disable_secret_version()
        .set_name(format!("{full_name}/versions/1"))
        .send()
        .await
        .unwrap();
    let disabled = source.get_secret(&id, Some("1")).await.unwrap_err();
    assert_eq!(disabled.kind(), ErrorKind::KeyDisabled, "{disabled}");
    // Other versions are unaffected.
    assert!(source.get_secret(&id, Some("2")).await.is_ok());

    let missing_version = source.get_secret(&id, Some("9")).await.unwrap_err();
    assert_eq!(
        missing_version.kind(),
        ErrorKind::NotFound,
        "{missing_version}"
    );
    let missing = source
        .get_secret(&unique("missing"), None)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(
        missing.to_string().contains("not found in gcp-secrets"),
        "{missing}"
    );
}

#[tokio::test]
async fn binary_values_round_trip_unchanged() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let binary: Vec<u8> = (0..=255u8).collect();
    let id = create_secret(&source, &[&binary]).await;
    let secret = source.get_secret(&id, None).await.unwrap();
    assert_eq!(secret.value.expose_secret().as_slice(), binary.as_slice());
}

#[tokio::test]
async fn a_payload_that_fails_its_crc32c_is_refused() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let id = create_secret(&source, &[]).await;
    let client = raw_client(&endpoint).await;
    let parent = format!("projects/{PROJECT}/secrets/{id}");
    // A wrong checksum on the way in: the service refuses the version.
    let refused = client
        .add_secret_version()
        .set_parent(&parent)
        .set_payload(
            SecretPayload::new()
                .set_data(b"value".to_vec())
                .set_data_crc32c(12345),
        )
        .send()
        .await;
    assert!(refused.is_err());
    // No checksum on the way in: the emulator then answers with a checksum of 0 (the real
    // service computes one), which does not match the payload, so the read is refused.
    client
        .add_secret_version()
        .set_parent(&parent)
        .set_payload(SecretPayload::new().set_data(b"value".to_vec()))
        .send()
        .await
        .unwrap();
    let error = source.get_secret(&id, None).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains("CRC32C"), "{error}");
}

#[tokio::test]
async fn values_never_appear_in_debug_output_or_errors() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let id = create_secret(&source, &[b"hunter2-value"]).await;
    let secret = source.get_secret(&id, None).await.unwrap();
    assert!(!format!("{secret:?} {source:?}").contains("hunter2"));
    let error = source.get_secret(&id, Some("5")).await.unwrap_err();
    assert!(!format!("{error} {error:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_chain_falls_back_from_secret_manager_only_as_its_policy_allows() {
    let Some(endpoint) = endpoint() else { return };
    let live = source(&endpoint);
    let id = create_secret(&live, &[b"from-gcp"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db-password"), "from-file\n").unwrap();

    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let mut sources = SecretSources::default();
    sources.register("gcp-secrets", std::sync::Arc::new(source(&proxy.url())));
    sources.register(
        "file",
        std::sync::Arc::new(sealkit::secrets::FileSecrets::new(dir.path())),
    );
    let links = [format!("gcp-secrets:{id}"), "file:db-password".to_string()];
    let links: Vec<&str> = links.iter().map(String::as_str).collect();

    // A fresh chain each time, so that no cached value answers.
    let served_by = async |expected_source: &str, expected: &[u8]| {
        let chain = sources
            .chain("db", &links, FallbackPolicy::OnUnavailable)
            .unwrap();
        let resolved = chain.resolve().await.unwrap();
        assert_eq!(resolved.secret.value.expose_secret().as_slice(), expected);
        assert_eq!(resolved.source, expected_source);
    };
    served_by("gcp-secrets", b"from-gcp").await;
    // Secret Manager resets connections: the file serves, as the policy allows.
    proxy.set_mode(FaultMode::Reset);
    served_by("file", b"from-file").await;
    let strict = sources.chain("db", &links, FallbackPolicy::Never).unwrap();
    let error = strict.resolve().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");

    // Slower than the request timeout: unavailable, within about that timeout.
    proxy.set_mode(FaultMode::Delay(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let error = source(&proxy.url())
        .get_secret(&id, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_killed_emulator_gives_unavailable() {
    let Some(bin) = peer_env(
        "SEALKIT_TEST_GCP_SECRETS_BIN",
        "the Secret Manager emulator",
    ) else {
        return;
    };
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (grpc, port) = (free(), free());
    let mut emulator = sealkit_conformance::peers::OwnedPeer::new(
        std::process::Command::new(bin)
            .args([
                "--grpc-port",
                &grpc.to_string(),
                "--http-port",
                &port.to_string(),
            ])
            .env("IAM_MODE", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = source(&format!("http://127.0.0.1:{port}"));
    let id = create_secret(&source, &[b"v"]).await;
    assert!(source.get_secret(&id, None).await.is_ok());
    emulator.kill();
    let error = source.get_secret(&id, None).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(
        error.to_string().contains("check that it is running"),
        "{error}"
    );
}

#[tokio::test]
async fn secret_manager_passes_the_secret_source_suite() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let id = create_secret(&source, &[b"gcp-conformance-value"]).await;
    sealkit_conformance::secret_source_conforms(
        &source,
        &sealkit_conformance::SecretFixture {
            present: &id,
            value: b"gcp-conformance-value",
            missing: &unique("missing"),
            versioned: true,
        },
    )
    .await;
    sealkit_conformance::writable_secret_source_conforms(&source, &unique("put"), true).await;
}

/// Against a server that accepts and never answers, a Secret Manager read ends by its own
/// timeout.
#[tokio::test]
async fn a_read_ends_against_a_silent_service() {
    use sealkit_conformance::{SilentService, ends_against_a_silent_service};
    let silent = SilentService::start().await.unwrap();
    let source = GcpSecrets::new(
        GcpSettings::default()
            .with_project(PROJECT)
            .with_secrets_endpoint(silent.url())
            .with_timeout(Duration::from_millis(300)),
    );
    ends_against_a_silent_service(
        "AccessSecretVersion",
        Duration::from_secs(30),
        source.get_secret("db-password", None),
    )
    .await;
}

/// `ID#FIELD` picks a field of a JSON secret (a database password kept as
/// `{"password": …}`), top-level or a dotted path; a missing field or a non-JSON secret is a
/// clear error.
#[tokio::test]
async fn a_field_of_a_json_secret_is_served_alone() {
    let Some(endpoint) = endpoint() else { return };
    let source = source(&endpoint);
    let id = create_secret(
        &source,
        &[br#"{"password":"s3cret","port":5432,"db":{"user":"app"}}"#],
    )
    .await;
    let field = |f: &str| format!("{id}#{f}");
    let password = source.get_secret(&field("password"), None).await.unwrap();
    assert_eq!(password.value.expose_secret().as_slice(), b"s3cret");
    let port = source.get_secret(&field("port"), Some("1")).await.unwrap();
    assert_eq!(port.value.expose_secret().as_slice(), b"5432");
    let nested = source.get_secret(&field("db.user"), None).await.unwrap();
    assert_eq!(nested.value.expose_secret().as_slice(), b"app");
    let missing = source.get_secret(&field("nope"), None).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let plain = create_secret(&source, &[b"not json"]).await;
    let err = source
        .get_secret(&format!("{plain}#password"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
}
