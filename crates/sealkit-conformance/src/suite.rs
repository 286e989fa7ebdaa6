//! The conformance checks. Each takes the provider (key operations and administration) and a
//! key URI that does not exist yet; each creates that key.

use sealkit_core::provider::{KeyAdmin, KeyEncryption, VersionState};
use sealkit_core::{EncryptionContext, Error, KeyUri, KeyVersion};

fn ctx(table: &str) -> EncryptionContext {
    EncryptionContext::from_pairs([("table", table), ("column", "email")]).expect("valid context")
}

/// `key` with a suffix, so that each check has a fresh key.
fn derive(key: &KeyUri, suffix: &str) -> KeyUri {
    KeyUri::parse(&format!("{key}-{suffix}")).expect("valid key URI")
}

/// Generated and wrapped DEKs unwrap to the same bytes.
pub async fn round_trip(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    admin.create_key(key).await.expect("create key");
    let g = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate data key");
    assert_eq!(g.wrapped.key.uri, *key);
    assert_eq!(
        keys.unwrap(&g.wrapped, &ctx("t"))
            .await
            .expect("unwrap")
            .expose(),
        g.plaintext.expose()
    );
    let wrapped = keys.wrap(key, &g.plaintext, &ctx("t")).await.expect("wrap");
    assert_ne!(
        wrapped.bytes, g.wrapped.bytes,
        "two wraps of one DEK must differ (random nonces)"
    );
    assert_eq!(
        keys.unwrap(&wrapped, &ctx("t"))
            .await
            .expect("unwrap")
            .expose(),
        g.plaintext.expose()
    );
    let meta = keys.key_metadata(key).await.expect("metadata");
    assert_eq!(meta.primary, g.wrapped.key.version);
}

/// Unwrapping with another context fails, without saying why.
pub async fn wrong_context_fails(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    admin.create_key(key).await.expect("create key");
    let g = keys
        .generate_data_key(key, &ctx("customers"))
        .await
        .expect("generate");
    let err = keys
        .unwrap(&g.wrapped, &ctx("orders"))
        .await
        .expect_err("wrong context must fail");
    assert!(
        matches!(err, Error::InvalidCiphertext),
        "wrong context gave {err:?}"
    );
}

/// A wrapped key with any altered byte fails to unwrap.
pub async fn tampered_wrapped_key_fails(
    keys: &dyn KeyEncryption,
    admin: &dyn KeyAdmin,
    key: &KeyUri,
) {
    admin.create_key(key).await.expect("create key");
    let g = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate");
    let n = g.wrapped.bytes.len();
    for i in [n / 2, n - 1, n - 5] {
        let mut bad = g.wrapped.clone();
        bad.bytes[i] ^= 0x01;
        let result = keys.unwrap(&bad, &ctx("t")).await;
        assert!(
            result.is_err(),
            "a wrapped key altered at byte {i} of {n} unwrapped"
        );
    }
}

/// Operations on a key that does not exist fail with `NotFound`.
pub async fn unknown_key_is_not_found(
    keys: &dyn KeyEncryption,
    _admin: &dyn KeyAdmin,
    key: &KeyUri,
) {
    let err = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect_err("unknown key");
    assert!(
        matches!(err, Error::NotFound { .. }),
        "unknown key gave {err:?}"
    );
    let err = keys.key_metadata(key).await.expect_err("unknown key");
    assert!(
        matches!(err, Error::NotFound { .. }),
        "unknown key metadata gave {err:?}"
    );
}

/// After a rotation new DEKs use the new version and old ones still unwrap; rewrap moves an
/// old DEK to the new version and keeps its bytes.
pub async fn rotation_and_rewrap(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    admin.create_key(key).await.expect("create key");
    let old = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate");
    let v2 = admin.rotate_key(key).await.expect("rotate");
    assert_ne!(v2, old.wrapped.key.version);
    let new = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate");
    assert_eq!(new.wrapped.key.version, v2);
    assert_eq!(
        keys.unwrap(&old.wrapped, &ctx("t"))
            .await
            .expect("old unwraps")
            .expose(),
        old.plaintext.expose()
    );
    let moved = keys
        .rewrap(&old.wrapped, key, &ctx("t"))
        .await
        .expect("rewrap");
    assert_eq!(moved.key.version, v2);
    assert_eq!(
        keys.unwrap(&moved, &ctx("t"))
            .await
            .expect("rewrapped unwraps")
            .expose(),
        old.plaintext.expose()
    );
    let versions = admin.list_versions(key).await.expect("list versions");
    assert_eq!(versions.len(), 2);
}

/// A disabled version refuses to unwrap until enabled again; the primary cannot be disabled.
pub async fn disabled_version_is_refused(
    keys: &dyn KeyEncryption,
    admin: &dyn KeyAdmin,
    key: &KeyUri,
) {
    admin.create_key(key).await.expect("create key");
    let old = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate");
    let v1 = old.wrapped.key.version.clone();
    let v2 = admin.rotate_key(key).await.expect("rotate");
    assert!(
        admin
            .set_version_state(key, &v2, VersionState::Disabled)
            .await
            .is_err(),
        "primary disabled"
    );
    admin
        .set_version_state(key, &v1, VersionState::Disabled)
        .await
        .expect("disable v1");
    let err = keys
        .unwrap(&old.wrapped, &ctx("t"))
        .await
        .expect_err("disabled version must refuse");
    assert!(
        matches!(err, Error::KeyDisabled { .. }),
        "disabled version gave {err:?}"
    );
    let states = admin.list_versions(key).await.expect("list");
    assert_eq!(
        states.iter().find(|v| v.version == v1).map(|v| v.state),
        Some(VersionState::Disabled)
    );
    admin
        .set_version_state(key, &v1, VersionState::Enabled)
        .await
        .expect("enable v1");
    assert!(
        keys.unwrap(&old.wrapped, &ctx("t")).await.is_ok(),
        "re-enabled version must unwrap"
    );
    let unknown = KeyVersion::number(99);
    assert!(
        admin
            .set_version_state(key, &unknown, VersionState::Disabled)
            .await
            .is_err()
    );
}

/// Every check, each on a fresh key derived from `key`.
pub async fn run_all(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    round_trip(keys, admin, &derive(key, "rt")).await;
    wrong_context_fails(keys, admin, &derive(key, "ctx")).await;
    tampered_wrapped_key_fails(keys, admin, &derive(key, "tamper")).await;
    unknown_key_is_not_found(keys, admin, &derive(key, "missing")).await;
    rotation_and_rewrap(keys, admin, &derive(key, "rot")).await;
    disabled_version_is_refused(keys, admin, &derive(key, "dis")).await;
}
