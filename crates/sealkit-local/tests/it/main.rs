//! Tests of the local provider against real files.

use sealkit_core::legacy::LegacyKey;
use sealkit_core::provider::{KeyAdmin, KeyEncryption, VersionState};
use sealkit_core::{EncryptionContext, Error, KeyUri, KeyVersion, WrappedKey};
use sealkit_local::LocalKeyStore;
use sealkit_local::store::CrashPoint;
use secrecy::SecretString;

fn ctx(table: &str) -> EncryptionContext {
    EncryptionContext::from_pairs([("table", table), ("column", "email")]).unwrap()
}

fn uri(s: &str) -> KeyUri {
    KeyUri::parse(s).unwrap()
}

#[tokio::test]
async fn wrap_unwrap_rotate_disable_destroy() {
    let home = tempfile::tempdir().unwrap();
    let store = LocalKeyStore::open(home.path(), None).unwrap();
    let key = uri("local://customers");
    store.create_key(&key).await.unwrap();
    let g1 = store
        .generate_data_key(&key, &ctx("customers"))
        .await
        .unwrap();
    assert_eq!(g1.wrapped.key.version.as_str(), "1");
    assert_eq!(
        store
            .unwrap(&g1.wrapped, &ctx("customers"))
            .await
            .unwrap()
            .expose(),
        g1.plaintext.expose()
    );
    // Wrong context and tampered bytes fail without revealing which.
    assert!(matches!(
        store.unwrap(&g1.wrapped, &ctx("orders")).await,
        Err(Error::InvalidCiphertext)
    ));
    let mut bad = g1.wrapped.clone();
    bad.bytes[20] ^= 1;
    assert!(matches!(
        store.unwrap(&bad, &ctx("customers")).await,
        Err(Error::InvalidCiphertext)
    ));
    // Rotation: new wraps use v2, v1 still opens; rewrap moves to v2.
    assert_eq!(store.rotate_key(&key).await.unwrap().as_str(), "2");
    let g2 = store
        .generate_data_key(&key, &ctx("customers"))
        .await
        .unwrap();
    assert_eq!(g2.wrapped.key.version.as_str(), "2");
    assert!(store.unwrap(&g1.wrapped, &ctx("customers")).await.is_ok());
    let moved = store
        .rewrap(&g1.wrapped, &key, &ctx("customers"))
        .await
        .unwrap();
    assert_eq!(moved.key.version.as_str(), "2");
    assert_eq!(
        store
            .unwrap(&moved, &ctx("customers"))
            .await
            .unwrap()
            .expose(),
        g1.plaintext.expose()
    );
    // The primary cannot be disabled; v1 can, and is then refused; re-enabled it works.
    let v1 = KeyVersion::number(1);
    assert!(
        store
            .set_version_state(&key, &KeyVersion::number(2), VersionState::Disabled)
            .await
            .is_err()
    );
    store
        .set_version_state(&key, &v1, VersionState::Disabled)
        .await
        .unwrap();
    assert!(matches!(
        store.unwrap(&g1.wrapped, &ctx("customers")).await,
        Err(Error::KeyDisabled { .. })
    ));
    store
        .set_version_state(&key, &v1, VersionState::Enabled)
        .await
        .unwrap();
    assert!(store.unwrap(&g1.wrapped, &ctx("customers")).await.is_ok());
    store
        .set_version_state(&key, &v1, VersionState::Destroyed)
        .await
        .unwrap();
    assert!(matches!(
        store.unwrap(&g1.wrapped, &ctx("customers")).await,
        Err(Error::KeyDisabled { .. })
    ));
    assert!(
        store
            .set_version_state(&key, &v1, VersionState::Enabled)
            .await
            .is_err()
    );
    let versions = store.list_versions(&key).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].state, VersionState::Destroyed);
    // Unknown key and unknown version.
    assert!(matches!(
        store
            .generate_data_key(&uri("local://nope"), &ctx("t"))
            .await,
        Err(Error::NotFound { .. })
    ));
    let mut unknown = g2.wrapped.clone();
    unknown.key.version = KeyVersion::number(9);
    assert!(matches!(
        store.unwrap(&unknown, &ctx("customers")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn files_are_private_and_another_process_sees_rotations() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let a = LocalKeyStore::open(home.path(), None).unwrap();
    let key = uri("local://k");
    a.create_key(&key).await.unwrap();
    let mode = std::fs::metadata(a.dir().join("k.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = LocalKeyStore::open(home.path(), None).unwrap();
    let old = b.generate_data_key(&key, &ctx("t")).await.unwrap();
    a.rotate_key(&key).await.unwrap();
    let fresh = a.generate_data_key(&key, &ctx("t")).await.unwrap();
    // b has v1 cached and reloads to find v2.
    assert_eq!(
        b.unwrap(&fresh.wrapped, &ctx("t")).await.unwrap().expose(),
        fresh.plaintext.expose()
    );
    assert!(b.unwrap(&old.wrapped, &ctx("t")).await.is_ok());
}

#[tokio::test]
async fn passphrase_sealed_store() {
    let home = tempfile::tempdir().unwrap();
    let pass = || Some(SecretString::from("correct horse battery staple"));
    let store = LocalKeyStore::open(home.path(), pass()).unwrap();
    let key = uri("local://sealed");
    store.create_key(&key).await.unwrap();
    let g = store.generate_data_key(&key, &ctx("t")).await.unwrap();
    let text = std::fs::read_to_string(store.dir().join("sealed.json")).unwrap();
    assert!(text.contains("argon2id"));
    // Right passphrase in a fresh store instance.
    let again = LocalKeyStore::open(home.path(), pass()).unwrap();
    assert!(again.unwrap(&g.wrapped, &ctx("t")).await.is_ok());
    // Wrong passphrase and missing passphrase: clear errors, no key material in them.
    let wrong = LocalKeyStore::open(home.path(), Some(SecretString::from("nope"))).unwrap();
    let err = wrong.unwrap(&g.wrapped, &ctx("t")).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    assert!(err.to_string().contains("wrong passphrase"));
    let none = LocalKeyStore::open(home.path(), None).unwrap();
    let err = none.unwrap(&g.wrapped, &ctx("t")).await.unwrap_err();
    assert!(err.to_string().contains("SEALKIT_PASSPHRASE"), "{err}");
}

#[tokio::test]
async fn corrupt_key_file_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let store = LocalKeyStore::open(home.path(), None).unwrap();
    let key = uri("local://c");
    store.create_key(&key).await.unwrap();
    std::fs::write(store.dir().join("c.json"), b"{ not json").unwrap();
    let fresh = LocalKeyStore::open(home.path(), None).unwrap();
    let err = fresh.key_metadata(&key).await.unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }));
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn a_crash_at_any_step_of_a_rotation_leaves_a_loadable_store() {
    for point in [CrashPoint::MidWrite, CrashPoint::BeforeRename] {
        let home = tempfile::tempdir().unwrap();
        let store = LocalKeyStore::open(home.path(), None).unwrap();
        let key = uri("local://r");
        store.create_key(&key).await.unwrap();
        store.rotate_key(&key).await.unwrap();
        let before = store.generate_data_key(&key, &ctx("t")).await.unwrap();
        store.inject_crash(point);
        assert!(store.rotate_key(&key).await.is_err());
        // A new process finds the store as it was before the interrupted rotation.
        let reopened = LocalKeyStore::open(home.path(), None).unwrap();
        let meta = reopened.key_metadata(&key).await.unwrap();
        assert_eq!(meta.primary.as_str(), "2", "{point:?}");
        assert!(reopened.unwrap(&before.wrapped, &ctx("t")).await.is_ok());
        // And the next rotation succeeds, ignoring the leftover temporary file.
        assert_eq!(reopened.rotate_key(&key).await.unwrap().as_str(), "3");
    }
}

#[test]
fn legacy_key_validation_never_echoes_the_value() {
    let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    assert!(LegacyKey::from_base64("TEST", good).is_ok());
    for (bad, expect) in [
        ("", "empty"),
        ("not base64!!", "base64"),
        ("c2hvcnQ=", "32"),
    ] {
        let err = LegacyKey::from_base64("ENCRYPTION_MASTER_KEY", bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expect) && err.contains("ENCRYPTION_MASTER_KEY"),
            "{err}"
        );
        if !bad.is_empty() {
            assert!(!err.contains(bad), "{err}");
        }
    }
}

#[tokio::test]
async fn wrapped_key_for_other_scheme_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let store = LocalKeyStore::open(home.path(), None).unwrap();
    let w = WrappedKey::new(
        sealkit_core::KeyRef::parse("aws-kms://alias/x", "1").unwrap(),
        vec![1; 60],
    );
    assert!(matches!(
        store.unwrap(&w, &ctx("t")).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn local_store_passes_the_conformance_suite() {
    let home = tempfile::tempdir().unwrap();
    let store = LocalKeyStore::open(home.path(), None).unwrap();
    sealkit_conformance::run_all(&store, &store, &uri("local://conformance")).await;
}

#[tokio::test]
async fn envelopes_naming_missing_versions_cost_no_file_read_each() {
    let home = tempfile::tempdir().unwrap();
    let store = LocalKeyStore::open(home.path(), None).unwrap();
    let key = uri("local://negative");
    store.create_key(&key).await.unwrap();
    let g = store.generate_data_key(&key, &ctx("t")).await.unwrap();
    let reads = store.file_reads();
    let missing = WrappedKey::new(
        sealkit_core::KeyRef::new(key.clone(), KeyVersion::number(99)),
        g.wrapped.bytes.clone(),
    );
    for _ in 0..40 {
        assert!(matches!(
            store.unwrap(&missing, &ctx("t")).await,
            Err(Error::NotFound { .. })
        ));
    }
    assert!(
        store.file_reads() - reads <= 1,
        "{} key-file reads for 40 envelopes naming a missing version",
        store.file_reads() - reads
    );
}

#[test]
fn concurrent_creates_of_one_key_have_one_winner() {
    let home = tempfile::tempdir().unwrap();
    let key = uri("local://race");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Eight stores (each with its own memory and lock file handle, as eight processes have).
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (home, key, runtime) = (home.path(), key.clone(), &runtime);
                scope.spawn(move || {
                    let store = LocalKeyStore::open(home, None).unwrap();
                    let created = runtime.block_on(store.create_key(&key));
                    (store, created)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one create succeeds");
    for (_, outcome) in &outcomes {
        if let Err(e) = outcome {
            assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        }
    }
    // Every store uses the one key on disk: a DEK wrapped by any opens in all.
    runtime.block_on(async {
        for (store, _) in &outcomes {
            let g = store.generate_data_key(&key, &ctx("t")).await.unwrap();
            for (other, _) in &outcomes {
                assert!(other.unwrap(&g.wrapped, &ctx("t")).await.is_ok());
            }
        }
    });
}
