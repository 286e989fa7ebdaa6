//! Faults: the peer killed mid-run, slow and resetting connections.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use sealkit_conformance::peers::OwnedPeer;
use std::sync::Arc;
use std::time::Duration;

use sealkit::{CircuitState, Config, EncryptionContext, Error, KeyUri, Keyring};
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_conformance::{FaultMode, FaultProxy};
use sealkit_core::provider::KeyAdmin;
use sealkit_vault::{VaultAuth, VaultSettings, VaultTransit};

use crate::support::root_config;

fn keyring(vault: VaultSettings, default_key: &str, home: &std::path::Path) -> Keyring {
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse(default_key).unwrap());
    config.provider("local").set("home", home.to_str().unwrap());
    config.resilience.max_attempts = 3;
    config.resilience.initial_backoff_ms = 10;
    config.resilience.max_backoff_ms = 50;
    config.resilience.timeout_ms = 500;
    config.resilience.failure_threshold = 2;
    config.resilience.open_secs = 1;
    Keyring::builder(config)
        .with_managed_provider(Arc::new(VaultTransit::new(vault)))
        .build()
        .unwrap()
}

fn ctx(id: u32) -> EncryptionContext {
    EncryptionContext::parse(&format!("table=t,column=c,id={id}")).unwrap()
}

fn start_bao(bin: &str, port: u16) -> OwnedPeer {
    OwnedPeer::new(
        Command::new(bin)
            .args([
                "server",
                "-dev",
                "-dev-root-token-id=fault-root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env(
                "BAO_CLUSTER_ADDR",
                format!("https://127.0.0.1:{}", port + 1),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a private OpenBao"),
    )
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let config = VaultSettings::new(
                format!("http://127.0.0.1:{port}"),
                VaultAuth::Token("fault-root".to_string().into()),
            );
            let transit = VaultTransit::new(config);
            if transit
                .list_versions(&KeyUri::parse("vault-transit://transit/none").unwrap())
                .await
                .is_err()
            {
                // Answering at all (404 / no mount) means it is up.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the private OpenBao on port {port} did not come up");
}

async fn enable_transit(port: u16) {
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(format!("http://127.0.0.1:{port}"))
        .token("fault-root")
        .build()
        .unwrap();
    let client = vaultrs::client::VaultClient::new(settings).unwrap();
    vaultrs::sys::mount::enable(&client, "transit", "transit", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn killed_peer_gives_unavailable_opens_the_circuit_and_recovers() {
    let Some(bin) = peer_env("SEALKIT_TEST_BAO_BIN", "OpenBao") else {
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut bao = start_bao(&bin, port);
    wait_healthy(port).await;
    enable_transit(port).await;
    let home = tempfile::tempdir().unwrap();
    let vault = VaultSettings::new(
        format!("http://127.0.0.1:{port}"),
        VaultAuth::Token("fault-root".to_string().into()),
    );
    let uri = "vault-transit://transit/fault";
    let keyring = keyring(vault, uri, home.path());
    keyring
        .create_key(&KeyUri::parse(uri).unwrap())
        .await
        .unwrap();
    let sealed = keyring.seal(b"before the crash", &ctx(1)).await.unwrap();

    bao.kill();
    // A new scope needs a new DEK: the KMS call fails after its retries, within the timeouts.
    let started = std::time::Instant::now();
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=u,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no hang beyond the timeouts"
    );
    // Cached DEKs keep working while the KMS is down.
    assert_eq!(
        keyring.open(&sealed, &ctx(1)).await.unwrap(),
        b"before the crash"
    );
    let _ = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=v,column=c,id=1").unwrap(),
        )
        .await;
    assert_eq!(keyring.circuit_state("vault-transit"), CircuitState::Open);
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=w,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("circuit open"), "{err}");

    // Back up (a dev server starts empty): after the open period the circuit lets a call
    // through, the provider answers, and the circuit closes.
    let mut bao = start_bao(&bin, port);
    wait_healthy(port).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=z,column=c,id=1").unwrap(),
        )
        .await;
    assert!(matches!(answer, Err(Error::NotFound { .. })), "{answer:?}");
    assert_eq!(keyring.circuit_state("vault-transit"), CircuitState::Closed);
    bao.kill();
}

#[tokio::test]
async fn slow_and_resetting_connections_are_retried_then_reported() {
    let Some(root) = root_config() else { return };
    let target: SocketAddr = root
        .address()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(target).await.unwrap();
    let token = peer_env("SEALKIT_TEST_VAULT_TOKEN", "OpenBao").unwrap();
    let via_proxy = VaultSettings::new(proxy.url(), VaultAuth::Token(token.into()));
    let home = tempfile::tempdir().unwrap();
    let uri = format!("vault-transit://transit/{}", unique("slow"));
    let keyring = keyring(via_proxy, &uri, home.path());
    keyring
        .create_key(&KeyUri::parse(&uri).unwrap())
        .await
        .unwrap();
    assert!(keyring.seal(b"ok", &ctx(1)).await.is_ok());

    // Slower than the 500 ms attempt timeout: three attempts, then Unavailable.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(800)));
    let (calls, connections) = (keyring.stats().kms_calls, proxy.connections());
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=slow,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert_eq!(keyring.stats().kms_calls - calls, 3, "three attempts");
    // The first attempt may reuse a kept-alive connection; each retry after a timeout opens one.
    assert!(proxy.connections() - connections >= 2);

    // A delay under the timeout only slows things down.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_millis(1100)).await; // let a possibly open circuit half-open
    assert!(
        keyring
            .seal(
                b"x",
                &EncryptionContext::parse("table=slowish,column=c,id=1").unwrap()
            )
            .await
            .is_ok()
    );

    // Connection resets: retried, then Unavailable.
    proxy.set_mode(FaultMode::Reset);
    let err = keyring
        .seal(
            b"x",
            &EncryptionContext::parse("table=reset,column=c,id=1").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    proxy.set_mode(FaultMode::Pass);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        keyring
            .seal(
                b"x",
                &EncryptionContext::parse("table=back,column=c,id=1").unwrap()
            )
            .await
            .is_ok()
    );
}

/// Against a server that accepts and never answers, Transit and KV calls end by the client's
/// own timeout.
#[tokio::test]
async fn every_call_ends_against_a_silent_service() {
    use sealkit_conformance::{SilentService, ends_against_a_silent_service};
    use sealkit_core::provider::{KeyEncryption, SecretSource};
    use sealkit_vault::{KvVersion, VaultKv};
    let silent = SilentService::start().await.unwrap();
    let settings = VaultSettings::new(silent.url(), VaultAuth::Token("t".to_string().into()))
        .with_timeout(Duration::from_millis(300));
    let bound = Duration::from_secs(30);
    let transit = VaultTransit::new(settings.clone());
    let key = KeyUri::parse("vault-transit://transit/silent").unwrap();
    ends_against_a_silent_service(
        "Transit datakey",
        bound,
        transit.generate_data_key(&key, &ctx(1)),
    )
    .await;
    for version in [KvVersion::V1, KvVersion::V2] {
        let kv = VaultKv::any_mount(settings.clone(), version);
        ends_against_a_silent_service("KV read", bound, kv.get_secret("secret/app#pw", None)).await;
    }
}
