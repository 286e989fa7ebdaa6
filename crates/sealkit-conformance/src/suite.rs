//! The conformance checks. Each takes the provider (key operations and administration) and a
//! key URI that does not exist yet; each creates that key.

use sealkit_core::provider::{KeyAdmin, KeyEncryption, SecretSource, VersionState};
use sealkit_core::{EncryptionContext, Error, ErrorKind, KeyUri, KeyVersion};

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

/// The admin side names the same scheme; a second create is `AlreadyExists`; the key is
/// listed (by the prefix of its own name) until it is deleted, and then neither listed nor
/// found, and deleting it again is `NotFound`.
pub async fn inventory_and_deletion(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    assert_eq!(admin.scheme(), keys.scheme(), "one scheme for both sides");
    admin.create_key(key).await.expect("create key");
    let again = admin
        .create_key(key)
        .await
        .expect_err("a second create must fail");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    let listed = admin
        .list_keys(Some(key.path()))
        .await
        .expect("list keys by prefix");
    assert!(listed.contains(key), "{key} not in {listed:?}");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "list_keys is sorted");
    let all = admin.list_keys(None).await.expect("list keys");
    let scheme_prefix = format!("{}://", keys.scheme());
    assert!(
        all.iter().all(|k| k.as_str().starts_with(&scheme_prefix)),
        "{all:?}"
    );
    admin.delete_key(key).await.expect("delete key");
    let listed = admin
        .list_keys(Some(key.path()))
        .await
        .expect("list keys after delete");
    assert!(!listed.contains(key), "{key} still listed: {listed:?}");
    let gone = keys
        .key_metadata(key)
        .await
        .expect_err("a deleted key is not found");
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
    let twice = admin
        .delete_key(key)
        .await
        .expect_err("deleting twice must fail");
    assert_eq!(twice.kind(), ErrorKind::NotFound, "{twice}");
}

/// A secret the caller has stored (`present` holding `value`), and one it has not.
#[derive(Debug, Clone, Copy)]
pub struct SecretFixture<'a> {
    /// A name the source serves.
    pub present: &'a str,
    /// Its value.
    pub value: &'a [u8],
    /// A name the source does not have.
    pub missing: &'a str,
    /// Whether the store keeps versions (a version that does not exist is then `NotFound`;
    /// otherwise asking for any version is `InvalidInput`).
    pub versioned: bool,
}

/// What every secret source does: serves the value, says `NotFound` for a missing secret,
/// handles versions per its kind, and never shows the value in `Debug` or errors.
pub async fn secret_source_conforms(source: &dyn SecretSource, f: &SecretFixture<'_>) {
    assert!(!source.name().is_empty());
    let secret = source
        .get_secret(f.present, None)
        .await
        .expect("the present secret");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&secret.value).as_slice(),
        f.value
    );
    let shown = format!("{secret:?} {source:?}");
    let value_text = String::from_utf8_lossy(f.value);
    assert!(
        !shown.contains(&*value_text),
        "the value leaks in Debug: {shown}"
    );
    let missing = source
        .get_secret(f.missing, None)
        .await
        .expect_err("a missing secret");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let version = if f.versioned { "999999" } else { "1" };
    let unknown = source
        .get_secret(f.present, Some(version))
        .await
        .expect_err("an unknown version");
    let want = if f.versioned {
        ErrorKind::NotFound
    } else {
        ErrorKind::InvalidInput
    };
    assert_eq!(unknown.kind(), want, "{unknown}");
    for error in [&missing, &unknown] {
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains(&*value_text),
            "the value leaks in an error: {text}"
        );
    }
}

/// What every writable secret source does with `put_secret`: a new secret is created, a second
/// put replaces what `get` serves (and, where versions are kept, the first version still reads
/// back), `NAME#FIELD` sets one field of a JSON object secret and keeps the others, and a field
/// value that is not text is refused. `fresh` names a secret that does not exist yet.
pub async fn writable_secret_source_conforms(
    source: &dyn SecretSource,
    fresh: &str,
    versioned: bool,
) {
    let get = |name: String, version: Option<String>| async move {
        let secret = source
            .get_secret(&name, version.as_deref())
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"));
        secrecy::ExposeSecret::expose_secret(&secret.value).clone()
    };
    let first = source
        .put_secret(fresh, b"first value")
        .await
        .expect("put creates");
    assert_eq!(get(fresh.to_string(), None).await, b"first value");
    let second = source
        .put_secret(fresh, b"second value")
        .await
        .expect("put again");
    assert_eq!(get(fresh.to_string(), None).await, b"second value");
    if versioned {
        assert!(
            first.is_some() && second.is_some() && first != second,
            "{first:?} {second:?}"
        );
        assert_eq!(get(fresh.to_string(), first).await, b"first value");
    }
    let object = format!("{fresh}-object");
    source
        .put_secret(&format!("{object}#password"), b"s3cret")
        .await
        .expect("put a field of a new secret");
    source
        .put_secret(&format!("{object}#user"), b"app")
        .await
        .expect("put another field");
    assert_eq!(get(format!("{object}#password"), None).await, b"s3cret");
    assert_eq!(get(format!("{object}#user"), None).await, b"app");
    let binary = source
        .put_secret(&format!("{object}#user"), &[0xff, 0xfe])
        .await
        .expect_err("a field holds text");
    assert_eq!(binary.kind(), ErrorKind::InvalidInput, "{binary}");
    assert_eq!(
        get(format!("{object}#user"), None).await,
        b"app",
        "nothing written"
    );
}

/// Destroying an old version succeeds on a live key: DEKs wrapped under it no longer unwrap,
/// the primary's still do, and the version is no longer enabled.
pub async fn destroyed_version_is_gone(
    keys: &dyn KeyEncryption,
    admin: &dyn KeyAdmin,
    key: &KeyUri,
) {
    admin.create_key(key).await.expect("create key");
    let old = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate under v1");
    let v2 = admin.rotate_key(key).await.expect("rotate");
    let fresh = keys
        .generate_data_key(key, &ctx("t"))
        .await
        .expect("generate under v2");
    assert_eq!(fresh.wrapped.key.version, v2);
    admin
        .set_version_state(key, &old.wrapped.key.version, VersionState::Destroyed)
        .await
        .expect("destroy v1");
    let err = keys
        .unwrap(&old.wrapped, &ctx("t"))
        .await
        .expect_err("a DEK under a destroyed version must not unwrap");
    assert!(
        matches!(err.kind(), ErrorKind::KeyDisabled | ErrorKind::NotFound),
        "{err}"
    );
    assert_eq!(
        keys.unwrap(&fresh.wrapped, &ctx("t"))
            .await
            .expect("v2 still unwraps")
            .expose(),
        fresh.plaintext.expose()
    );
    let versions = admin.list_versions(key).await.expect("list versions");
    let v1 = versions
        .iter()
        .find(|v| v.version == old.wrapped.key.version)
        .expect("v1 is listed");
    assert_ne!(v1.state, VersionState::Enabled);
}

/// Every check, each on a fresh key derived from `key`.
pub async fn run_all(keys: &dyn KeyEncryption, admin: &dyn KeyAdmin, key: &KeyUri) {
    round_trip(keys, admin, &derive(key, "rt")).await;
    wrong_context_fails(keys, admin, &derive(key, "ctx")).await;
    tampered_wrapped_key_fails(keys, admin, &derive(key, "tamper")).await;
    unknown_key_is_not_found(keys, admin, &derive(key, "missing")).await;
    rotation_and_rewrap(keys, admin, &derive(key, "rot")).await;
    disabled_version_is_refused(keys, admin, &derive(key, "dis")).await;
    inventory_and_deletion(keys, admin, &derive(key, "inv")).await;
    destroyed_version_is_gone(keys, admin, &derive(key, "destroy")).await;
}
