//! The Azure provider against Sealkit's Key Vault test peer (HTTPS, its certificate trusted
//! explicitly; its fidelity is checked with Microsoft's own Python clients): the provider
//! conformance suite, the secret-source suite, the sign-ins (client secret, workload
//! identity), refusals (wrong secret, no access), the faults a KMS has (throttled,
//! unavailable, stalled, reset, gone) and a round trip through the facade. Each test runs a
//! peer of its own in this process, so that its faults reach no other test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sealkit::{Config, EncryptionContext, ErrorKind, KeyUri, Keyring};
use sealkit_azure::{AzureKeyVault, AzureSecrets, AzureSettings, SignIn};
use sealkit_conformance::peers::unique;
use sealkit_core::provider::{KeyAdmin, KeyEncryption, SecretSource, VersionState};
use secrecy::ExposeSecret;
use serde_json::Value;

/// The vault the tests name; the peer serves it at its own address (`connect_to`).
const VAULT: &str = "sealkit-test.vault.azure.net";

struct Peer {
    addr: std::net::SocketAddr,
    ca_file: PathBuf,
    creds: Value,
    _dir: tempfile::TempDir,
}

async fn peer() -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let peer = sealkit_testpeers::azure_kv::serve_key_vault(dir.path(), 0)
        .await
        .unwrap();
    let creds = serde_json::from_slice(&std::fs::read(&peer.credentials_file).unwrap()).unwrap();
    Peer {
        addr: peer.addr,
        ca_file: peer.ca_file,
        creds,
        _dir: dir,
    }
}

impl Peer {
    fn with(&self, sign_in: SignIn) -> AzureSettings {
        AzureSettings::new(sign_in)
            .with_vault(VAULT)
            .with_authority_host(format!("https://{}", self.addr))
            .with_connect_to(self.addr.to_string())
            .with_ca_file(&self.ca_file)
            .with_timeout(Duration::from_secs(20))
    }

    fn client_secret(&self, who: &str, secret: Option<&str>) -> SignIn {
        SignIn::ClientSecret {
            tenant_id: self.creds["tenant_id"].as_str().unwrap().into(),
            client_id: self.creds[who]["client_id"].as_str().unwrap().into(),
            secret: secret
                .unwrap_or_else(|| self.creds[who]["client_secret"].as_str().unwrap())
                .to_string()
                .into(),
        }
    }

    fn settings(&self) -> AzureSettings {
        self.with(self.client_secret("app", None))
    }

    /// Injects `count` faults of `mode`.
    async fn fault(&self, mode: &str, count: u64) {
        let pem = std::fs::read(&self.ca_file).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        let status = client
            .post(format!("https://{}/_peer/fault", self.addr))
            .body(format!(
                r#"{{"mode":"{mode}","count":{count},"retry_after":1}}"#
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
}

fn key(name: &str) -> KeyUri {
    KeyUri::parse(&format!("azure-kv://{VAULT}/keys/{}", unique(name))).unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::parse("table=customers,column=email,id=7").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_passes_the_provider_conformance_suite() {
    let peer = peer().await;
    let kv = AzureKeyVault::new(peer.settings());
    sealkit_conformance::run_all(&kv, &kv, &key("suite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wraps_bind_the_scope_and_name_the_version_that_wrapped() {
    let peer = peer().await;
    let kv = AzureKeyVault::new(peer.settings());
    let k = key("pii");
    let meta = kv.create_key(&k).await.unwrap();
    let g = kv.generate_data_key(&k, &ctx()).await.unwrap();
    assert_eq!(g.wrapped.key.version, meta.primary);
    assert_eq!(
        g.wrapped.key.version.as_str().len(),
        32,
        "Key Vault's version id"
    );
    assert_eq!(g.wrapped.bytes.len(), 384, "RSA 3072 ciphertext");
    let other = EncryptionContext::parse("table=customers,column=email,id=8").unwrap();
    let err = kv.unwrap(&g.wrapped, &other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCiphertext, "{err}");
    let v2 = kv.rotate_key(&k).await.unwrap();
    let moved = kv.rewrap(&g.wrapped, &k, &ctx()).await.unwrap();
    assert_eq!(moved.key.version, v2);
    assert_eq!(
        kv.unwrap(&moved, &ctx()).await.unwrap().expose(),
        g.plaintext.expose()
    );
    kv.set_rotation_period(&k, Some(Duration::from_secs(90 * 86_400)))
        .await
        .unwrap();
    let err = kv
        .set_rotation_period(&k, Some(Duration::from_secs(3600)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = kv
        .set_version_state(&k, &v2, VersionState::Destroyed)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "the primary is not destroyed: {err}"
    );
    kv.set_version_state(&k, &meta.primary, VersionState::Destroyed)
        .await
        .unwrap();
    let versions = kv.list_versions(&k).await.unwrap();
    assert_eq!(versions[0].state, VersionState::Destroyed, "{versions:?}");
    let err = kv
        .set_version_state(&k, &meta.primary, VersionState::Enabled)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "a destroyed version stays so: {err}"
    );
    assert_eq!(kv.list_keys(None).await.unwrap(), vec![k.clone()]);
    let bad = KeyUri::parse("azure-kv://v.vault.azure.net/secrets/x").unwrap();
    let err = kv.generate_data_key(&bad, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_checked_and_refusals_say_what_to_grant() {
    let peer = peer().await;
    let k = key("auth");
    AzureKeyVault::new(peer.settings())
        .create_key(&k)
        .await
        .unwrap();
    let wrong = AzureKeyVault::new(peer.with(peer.client_secret("app", Some("not-it"))));
    let err = wrong.generate_data_key(&k, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    let reader = AzureKeyVault::new(peer.with(peer.client_secret("reader", None)));
    let err = reader.generate_data_key(&k, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("Key Vault Crypto User"), "{err}");
    let workload = AzureKeyVault::new(
        peer.with(SignIn::WorkloadIdentity {
            tenant_id: peer.creds["tenant_id"].as_str().unwrap().into(),
            client_id: peer.creds["workload"]["client_id"].as_str().unwrap().into(),
            token_file: peer.creds["workload"]["token_file"]
                .as_str()
                .unwrap()
                .into(),
        }),
    );
    let g = workload.generate_data_key(&k, &ctx()).await.unwrap();
    assert_eq!(
        workload.unwrap(&g.wrapped, &ctx()).await.unwrap().expose(),
        g.plaintext.expose()
    );
    // A certificate nobody trusts is refused: verification is never off.
    let untrusted = AzureKeyVault::new(
        AzureSettings::new(peer.client_secret("app", None))
            .with_authority_host(format!("https://{}", peer.addr))
            .with_connect_to(peer.addr.to_string())
            .with_timeout(Duration::from_secs(20)),
    );
    let err = untrusted.generate_data_key(&k, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_classified_and_nothing_hangs() {
    let peer = peer().await;
    let k = key("faults");
    AzureKeyVault::new(peer.settings())
        .create_key(&k)
        .await
        .unwrap();
    let kv = AzureKeyVault::new(peer.settings().with_timeout(Duration::from_secs(2)));
    // Sign in before the faults, so they hit the vault.
    kv.generate_data_key(&k, &ctx()).await.unwrap();
    for (mode, kind) in [
        ("throttle", ErrorKind::Throttled),
        ("unavailable", ErrorKind::Unavailable),
        ("reset", ErrorKind::Unavailable),
        ("stall", ErrorKind::Unavailable),
    ] {
        peer.fault(mode, 1).await;
        let started = Instant::now();
        let err = kv.generate_data_key(&k, &ctx()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{mode}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode}: bounded by the 2-second request timeout"
        );
    }
    assert!(
        kv.generate_data_key(&k, &ctx()).await.is_ok(),
        "answers again"
    );
    let gone = AzureKeyVault::new(peer.settings().with_connect_to("127.0.0.1:9"));
    let err = gone.generate_data_key(&k, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// A peer that dies while the client holds open connections (its runtime is dropped: the
/// listener and every connection close) answers nothing more: `Unavailable`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_unavailable_and_nothing_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let peer_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let peer = runtime
            .block_on(sealkit_testpeers::azure_kv::serve_key_vault(&path, 0))
            .unwrap();
        up_tx.send(peer).unwrap();
        let _ = kill_rx.recv();
        drop(runtime);
    });
    let served = tokio::task::spawn_blocking(move || up_rx.recv().unwrap())
        .await
        .unwrap();
    let peer = Peer {
        addr: served.addr,
        ca_file: served.ca_file.clone(),
        creds: serde_json::from_slice(&std::fs::read(&served.credentials_file).unwrap()).unwrap(),
        _dir: dir,
    };
    let kv = AzureKeyVault::new(peer.settings().with_timeout(Duration::from_secs(2)));
    let k = key("killed");
    AzureKeyVault::new(peer.settings())
        .create_key(&k)
        .await
        .unwrap();
    let g = kv.generate_data_key(&k, &ctx()).await.unwrap();
    kill_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || peer_thread.join().unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = kv.unwrap(&g.wrapped, &ctx()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "bounded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_seals_under_key_vault_keys_and_retries_throttling() {
    let peer = peer().await;
    let uri = key("customers");
    let mut config = Config::default();
    config.default_key = Some(uri.clone());
    let azure = config.provider("azure");
    azure.set("tenant_id", peer.creds["tenant_id"].as_str().unwrap());
    azure.set(
        "client_id",
        peer.creds["app"]["client_id"].as_str().unwrap(),
    );
    azure.set(
        "client_secret",
        peer.creds["app"]["client_secret"].as_str().unwrap(),
    );
    azure.set("authority_host", format!("https://{}", peer.addr));
    azure.set("connect_to", peer.addr.to_string());
    azure.set("ca_file", peer.ca_file.to_str().unwrap());
    azure.set("vault", VAULT);
    config.resilience.initial_backoff_ms = 50;
    let keyring = Keyring::builder(config).build().unwrap();
    keyring.create_key(&uri).await.unwrap();
    peer.fault("throttle", 2).await;
    let sealed = keyring.seal(b"alice@example.com", &ctx()).await.unwrap();
    assert_eq!(
        keyring.open(&sealed, &ctx()).await.unwrap(),
        b"alice@example.com"
    );
    let health = keyring.health().await;
    assert!(
        health
            .iter()
            .any(|r| r.component.contains("azure-kv") && r.is_healthy()),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_secrets_pass_the_secret_source_suite() {
    let peer = peer().await;
    let source = AzureSecrets::new(peer.settings());
    let name = unique("db");
    source
        .put_secret(&name, b"azure-conformance-value")
        .await
        .unwrap();
    sealkit_conformance::secret_source_conforms(
        &source,
        &sealkit_conformance::SecretFixture {
            present: &name,
            value: b"azure-conformance-value",
            missing: &unique("missing"),
            versioned: true,
        },
    )
    .await;
    sealkit_conformance::writable_secret_source_conforms(&source, &unique("put"), true).await;
    // The legacy key and the database password, as the application keeps them.
    let full = format!("{VAULT}/{}", unique("app"));
    source
        .put_secret(&format!("{full}#password"), b"hunter2")
        .await
        .unwrap();
    let password = source
        .get_secret(&format!("{full}#password"), None)
        .await
        .unwrap();
    assert_eq!(password.value.expose_secret().as_slice(), b"hunter2");
}
