//! Tests of the AWS provider against a real moto server (started by `cargo xtask peers up`).
//! Requests are SigV4-signed with test credentials, as against AWS.

use std::sync::Arc;
use std::time::Duration;

use sealkit::{CircuitState, Config, EncryptionContext, Error, KeyUri, Keyring};
use sealkit_aws::{AwsKms, AwsSecrets, AwsSettings};
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_conformance::{FaultMode, FaultProxy};
use sealkit_core::provider::{KeyAdmin, KeyEncryption, SecretSource};
use secrecy::ExposeSecret;

fn settings(endpoint: &str) -> AwsSettings {
    AwsSettings::default()
        .with_region("us-east-1")
        .with_endpoint(endpoint)
        .with_static_credentials("testing", "testing")
}

/// The AWS SDK's own Secrets Manager client, straight at moto: to seed secrets.
async fn raw_secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&aws_config_for(endpoint).await)
}

fn endpoint() -> Option<String> {
    peer_env("SEALKIT_TEST_AWS_ENDPOINT", "moto")
}

fn ctx(table: &str) -> EncryptionContext {
    EncryptionContext::from_pairs([("table", table), ("column", "email")]).unwrap()
}

#[tokio::test]
async fn kms_passes_the_conformance_suite() {
    let Some(endpoint) = endpoint() else { return };
    let kms = AwsKms::new(settings(&endpoint));
    let key = KeyUri::parse(&format!("aws-kms://alias/{}", unique("conf"))).unwrap();
    sealkit_conformance::run_all(&kms, &kms, &key).await;
}

#[tokio::test]
async fn unmanaged_key_ids_work_for_key_operations() {
    let Some(endpoint) = endpoint() else { return };
    let kms = AwsKms::new(settings(&endpoint));
    let sdk = aws_sdk_kms::Client::new(&aws_config_for(&endpoint).await);
    let id = sdk
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_string();
    let key = KeyUri::parse(&format!("aws-kms://{id}")).unwrap();
    let g = kms.generate_data_key(&key, &ctx("t")).await.unwrap();
    assert_eq!(g.wrapped.key.version.as_str(), "1");
    assert_eq!(
        kms.unwrap(&g.wrapped, &ctx("t")).await.unwrap().expose(),
        g.plaintext.expose()
    );
    assert!(matches!(
        kms.unwrap(&g.wrapped, &ctx("u")).await,
        Err(Error::InvalidCiphertext)
    ));
    assert!(
        kms.rotate_key(&key)
            .await
            .unwrap_err()
            .to_string()
            .contains("alias/NAME")
    );
}

/// The AWS SDK's own configuration for moto: for clients that set up what Sealkit would not
/// (seeded secrets, keys disabled behind its back, taken aliases).
async fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

#[tokio::test]
async fn secrets_manager_by_stage_version_and_json_field() {
    let Some(endpoint) = endpoint() else { return };
    let secrets = AwsSecrets::new(settings(&endpoint));
    let name = unique("prod/db");
    let client = raw_secrets_client(&endpoint).await;
    client
        .create_secret()
        .name(&name)
        .secret_string(r#"{"password":"first","user":"app"}"#)
        .send()
        .await
        .unwrap();
    let second = client
        .put_secret_value()
        .secret_id(&name)
        .secret_string(r#"{"password":"second","user":"app"}"#)
        .send()
        .await
        .unwrap();
    let current = secrets
        .get_secret(&format!("{name}#password"), None)
        .await
        .unwrap();
    assert_eq!(current.value.expose_secret().as_slice(), b"second");
    assert_eq!(current.version.as_deref(), second.version_id());
    let previous = secrets
        .get_secret(&format!("{name}#password"), Some("AWSPREVIOUS"))
        .await
        .unwrap();
    assert_eq!(previous.value.expose_secret().as_slice(), b"first");
    let by_id = secrets
        .get_secret(&name, second.version_id())
        .await
        .unwrap();
    assert!(by_id.value.expose_secret().starts_with(b"{"));
    let bin_name = unique("bin");
    client
        .create_secret()
        .name(&bin_name)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(vec![
            0u8, 1, 2, 255,
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        secrets
            .get_secret(&bin_name, None)
            .await
            .unwrap()
            .value
            .expose_secret()
            .as_slice(),
        &[0u8, 1, 2, 255]
    );
    assert!(matches!(
        secrets.get_secret(&unique("missing"), None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        secrets.get_secret(&format!("{name}#nope"), None).await,
        Err(Error::NotFound { .. })
    ));
}

fn keyring(kms: AwsKms, default_key: &str, home: &std::path::Path) -> Keyring {
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse(default_key).unwrap());
    config.provider("local").set("home", home.to_str().unwrap());
    config.resilience.max_attempts = 3;
    config.resilience.initial_backoff_ms = 10;
    config.resilience.max_backoff_ms = 50;
    config.resilience.timeout_ms = 1500;
    config.resilience.failure_threshold = 2;
    config.resilience.open_secs = 1;
    Keyring::builder(config)
        .with_managed_provider(Arc::new(kms))
        .build()
        .unwrap()
}

#[tokio::test]
async fn keyring_rotation_rewraps_with_reencrypt_and_survives_faults() {
    let Some(endpoint) = endpoint() else { return };
    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let uri = format!("aws-kms://alias/{}", unique("keyring"));
    let keyring = keyring(AwsKms::new(settings(&proxy.url())), &uri, home.path());
    let key = KeyUri::parse(&uri).unwrap();
    keyring.create_key(&key).await.unwrap();
    let c = EncryptionContext::parse("table=customers,column=email,id=7").unwrap();
    let sealed = keyring.seal(b"alice@example.com", &c).await.unwrap();
    keyring.rotate_key(&key).await.unwrap();
    let sealkit::RewrapOutcome::Rewrapped(moved) = keyring.rewrap(&sealed, &c, None).await.unwrap()
    else {
        panic!("not rewrapped")
    };
    assert_eq!(
        sealkit::core::Envelope::parse(&moved)
            .unwrap()
            .key_ref()
            .unwrap()
            .unwrap()
            .version
            .as_str(),
        "2"
    );
    assert_eq!(
        keyring.open(&moved, &c).await.unwrap(),
        b"alice@example.com"
    );

    // Slow beyond the timeout, then resets: Unavailable after retries; the circuit opens.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(2000)));
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=a,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    proxy.set_mode(FaultMode::Reset);
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=b,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert_eq!(keyring.circuit_state("aws-kms"), CircuitState::Open);
    // Back to normal: after the open period the circuit closes on the first success.
    proxy.set_mode(FaultMode::Pass);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=c,column=c,id=1").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(keyring.circuit_state("aws-kms"), CircuitState::Closed);
}

#[tokio::test]
async fn killed_moto_gives_unavailable_within_the_timeouts() {
    let Some(bin) = peer_env("SEALKIT_TEST_MOTO_BIN", "moto") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut moto = sealkit_conformance::peers::OwnedPeer::new(
        std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let home = tempfile::tempdir().unwrap();
    let uri = "aws-kms://alias/killed";
    let keyring = keyring(AwsKms::new(settings(&endpoint)), uri, home.path());
    keyring
        .create_key(&KeyUri::parse(uri).unwrap())
        .await
        .unwrap();
    let c = EncryptionContext::parse("table=t,column=c,id=1").unwrap();
    let sealed = keyring.seal(b"kept", &c).await.unwrap();
    moto.kill();
    let started = std::time::Instant::now();
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=u,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // Data under cached DEKs still opens while KMS is down.
    assert_eq!(keyring.open(&sealed, &c).await.unwrap(), b"kept");
}

#[tokio::test]
async fn secrets_manager_passes_the_secret_source_suite() {
    let Some(endpoint) = endpoint() else { return };
    let name = unique("conformance");
    raw_secrets_client(&endpoint)
        .await
        .create_secret()
        .name(&name)
        .secret_string("aws-conformance-value")
        .send()
        .await
        .unwrap();
    sealkit_conformance::secret_source_conforms(
        &AwsSecrets::new(settings(&endpoint)),
        &sealkit_conformance::SecretFixture {
            present: &name,
            value: b"aws-conformance-value",
            missing: &unique("missing"),
            versioned: true,
        },
    )
    .await;
    sealkit_conformance::writable_secret_source_conforms(
        &AwsSecrets::new(settings(&endpoint)),
        &unique("put"),
        true,
    )
    .await;
}

/// The AWS KMS client itself, straight at moto: to set up states Sealkit would not create.
async fn raw_kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&aws_config_for(endpoint).await)
}

#[tokio::test]
async fn already_exists_from_aws_maps_to_its_kind_and_keeps_the_sdk_error() {
    let Some(endpoint) = endpoint() else { return };
    let raw = raw_kms_client(&endpoint).await;
    let kms = AwsKms::new(settings(&endpoint));

    // AWS answers AlreadyExistsException (here: a version alias someone else created).
    let name = unique("taken");
    let other = raw.create_key().send().await.unwrap();
    let other_id = other.key_metadata().unwrap().key_id().to_string();
    raw.create_alias()
        .alias_name(format!("alias/{name}/v1"))
        .target_key_id(&other_id)
        .send()
        .await
        .unwrap();
    let key = KeyUri::parse(&format!("aws-kms://alias/{name}")).unwrap();
    let err = kms.create_key(&key).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");

    // Nothing listening: Unavailable, with the SDK's dispatch failure kept as the source.
    let nowhere = AwsKms::new(settings("http://127.0.0.1:1"));
    let err = nowhere
        .generate_data_key(&key, &ctx("t"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");

    // (A key disabled at AWS answers DisabledException; moto never does, so that mapping is
    // unit-tested in src/error.rs.)
}

/// Against a server that accepts and never answers, KMS and Secrets Manager calls end by
/// their own timeout, and a fallback chain moves on to its next source.
#[tokio::test]
async fn every_call_ends_against_a_silent_service() {
    use sealkit::secrets::{EnvSecrets, FallbackPolicy, SecretChain, SecretRef};
    use sealkit_conformance::{SilentService, ends_against_a_silent_service};
    let silent = SilentService::start().await.unwrap();
    let settings = settings(&silent.url())
        .with_timeout(Duration::from_millis(300))
        .with_connect_timeout(Duration::from_millis(300));
    let bound = Duration::from_secs(30);
    let kms = AwsKms::new(settings.clone());
    let key = KeyUri::parse("aws-kms://alias/silent").unwrap();
    ends_against_a_silent_service(
        "GenerateDataKey",
        bound,
        kms.generate_data_key(&key, &ctx("t")),
    )
    .await;
    let secrets = Arc::new(AwsSecrets::new(settings));
    ends_against_a_silent_service("GetSecretValue", bound, secrets.get_secret("db", None)).await;
    let chain = SecretChain::new(
        "path",
        vec![
            SecretRef::new(secrets, "db", None),
            SecretRef::new(Arc::new(EnvSecrets), "PATH", None),
        ],
        FallbackPolicy::OnUnavailable,
    );
    let resolved = tokio::time::timeout(bound, chain.resolve())
        .await
        .expect("the chain moves on")
        .unwrap();
    assert_eq!(resolved.source, "env");
}
