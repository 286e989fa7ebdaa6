//! KV v1 and v2 secrets.

use std::collections::HashMap;

use sealkit_conformance::peers::unique;
use sealkit_core::Error;
use sealkit_core::provider::SecretSource;
use sealkit_vault::{KvVersion, VaultKv};
use secrecy::ExposeSecret;

use crate::support::{root_client, root_config};

#[tokio::test]
async fn kv2_by_version_and_field() {
    let (Some(config), Some(client)) = (root_config(), root_client()) else {
        return;
    };
    let path = unique("db");
    vaultrs::kv2::set(
        &client,
        "secret",
        &path,
        &HashMap::from([("password", "first"), ("user", "app")]),
    )
    .await
    .unwrap();
    vaultrs::kv2::set(
        &client,
        "secret",
        &path,
        &HashMap::from([("password", "second"), ("user", "app")]),
    )
    .await
    .unwrap();
    let kv = VaultKv::new(config, "secret", KvVersion::V2);
    let latest = kv
        .get_secret(&format!("{path}#password"), None)
        .await
        .unwrap();
    assert_eq!(latest.value.expose_secret().as_slice(), b"second");
    let first = kv
        .get_secret(&format!("{path}#password"), Some("1"))
        .await
        .unwrap();
    assert_eq!(first.value.expose_secret().as_slice(), b"first");
    assert_eq!(first.version.as_deref(), Some("1"));
    let err = kv
        .get_secret(&format!("{path}#nope"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = kv.get_secret(&unique("missing"), None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // Debug output never shows the value.
    assert!(!format!("{latest:?}").contains("second"));
}

#[tokio::test]
async fn kv1_value() {
    let (Some(config), Some(client)) = (root_config(), root_client()) else {
        return;
    };
    let path = unique("legacy");
    vaultrs::kv1::set(
        &client,
        "kv1",
        &path,
        &HashMap::from([("value", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")]),
    )
    .await
    .unwrap();
    let kv = VaultKv::new(config, "kv1", KvVersion::V1);
    let secret = kv.get_secret(&path, None).await.unwrap();
    assert_eq!(secret.value.expose_secret().len(), 44);
    assert!(
        kv.get_secret(&path, Some("1")).await.is_err(),
        "KV v1 has no versions"
    );
}

#[tokio::test]
async fn kv1_and_kv2_pass_the_secret_source_suite() {
    let (Some(config), Some(client)) = (root_config(), root_client()) else {
        return;
    };
    let path = unique("conformance");
    let value = "kv-conformance-value";
    vaultrs::kv1::set(&client, "kv1", &path, &HashMap::from([("value", value)]))
        .await
        .unwrap();
    vaultrs::kv2::set(&client, "secret", &path, &HashMap::from([("value", value)]))
        .await
        .unwrap();
    let missing = unique("missing");
    for (source, versioned) in [
        (VaultKv::any_mount(config.clone(), KvVersion::V1), false),
        (VaultKv::any_mount(config.clone(), KvVersion::V2), true),
    ] {
        let mount = if versioned { "secret" } else { "kv1" };
        sealkit_conformance::secret_source_conforms(
            &source,
            &sealkit_conformance::SecretFixture {
                present: &format!("{mount}/{path}"),
                value: value.as_bytes(),
                missing: &format!("{mount}/{missing}"),
                versioned,
            },
        )
        .await;
        sealkit_conformance::writable_secret_source_conforms(
            &source,
            &format!("{mount}/{}", unique("put")),
            versioned,
        )
        .await;
    }
}
