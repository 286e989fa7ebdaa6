//! Sealing, opening, routing, modes, caching, rewrap and errors through the facade.

use base64::Engine;
use sealkit::config::CacheConfig;
use sealkit::core::legacy::{self, LegacyFormat};
use sealkit::core::provider::VersionState;
use sealkit::random::OsRandom;
use sealkit::{DataKey, Error, KeyVersion, Keyring, Mode, RewrapOutcome};

use crate::support::*;

#[tokio::test]
async fn routes_across_key_versions_and_two_key_stores() {
    let home = tempfile::tempdir().unwrap();
    let archive_home = tempfile::tempdir().unwrap();
    let archive = extra_store(archive_home.path(), "local-archive");
    let keyring = Keyring::builder(config(home.path(), "local://customers"))
        .with_managed_provider(archive)
        .build()
        .unwrap();
    let customers = uri("local://customers");
    let cold = uri("local-archive://cold");
    keyring.create_key(&customers).await.unwrap();
    keyring.create_key(&cold).await.unwrap();

    let c = ctx("customers", "email", 1);
    let v1 = keyring.seal(b"under v1", &c).await.unwrap();
    keyring.rotate_key(&customers).await.unwrap();
    let v2 = keyring.seal(b"under v2", &c).await.unwrap();
    let archived = keyring.seal_with(&cold, b"archived", &c).await.unwrap();

    // A fresh keyring (empty caches) opens all three by the key reference in each envelope.
    let archive = extra_store(archive_home.path(), "local-archive");
    let fresh = Keyring::builder(config(home.path(), "local://customers"))
        .with_managed_provider(archive)
        .build()
        .unwrap();
    assert_eq!(fresh.open(&v1, &c).await.unwrap(), b"under v1");
    assert_eq!(fresh.open(&v2, &c).await.unwrap(), b"under v2");
    assert_eq!(fresh.open(&archived, &c).await.unwrap(), b"archived");
    assert_eq!(fresh.stats().kms_calls, 3, "one unwrap per distinct DEK");
}

#[tokio::test]
async fn bad_input_gets_distinct_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path(), "local://k");
    let key = uri("local://k");
    keyring.create_key(&key).await.unwrap();
    let c = ctx("t", "c", 1);
    let sealed = keyring.seal(b"secret", &c).await.unwrap();

    // Wrong context: opaque.
    let err = keyring.open(&sealed, &ctx("t", "c", 2)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCiphertext), "{err}");
    // Wrong DEK scope (another table): the unwrap fails too.
    let fresh = keyring_with(
        config(home.path(), "local://k"),
        CacheConfig::default(),
        Mode::Kms,
    );
    assert!(matches!(
        fresh.open(&sealed, &ctx("u", "c", 1)).await,
        Err(Error::InvalidCiphertext)
    ));
    // Every single-byte tamper and every truncation fails, never panics.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x80;
        assert!(
            keyring.open(&bad, &c).await.is_err(),
            "tamper at {i} opened"
        );
    }
    for n in 0..sealed.len() {
        assert!(
            keyring.open(&sealed[..n], &c).await.is_err(),
            "truncation to {n} opened"
        );
    }
    // Not an envelope at all (kms mode): says what to do.
    let err = keyring.open(b"plain text", &c).await.unwrap_err();
    assert!(err.to_string().contains("hybrid"), "{err}");
    // Unknown key.
    let err = keyring
        .seal_with(&uri("local://missing"), b"x", &c)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }) && err.to_string().contains("keys create"),
        "{err}"
    );
    // Unknown provider.
    let err = keyring
        .seal_with(&uri("aws-kms://alias/x"), b"x", &c)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err}");
    // Disabled version: rotate, disable v1, then a fresh keyring refuses v1 data.
    keyring.rotate_key(&key).await.unwrap();
    keyring
        .set_version_state(&key, &KeyVersion::number(1), VersionState::Disabled)
        .await
        .unwrap();
    let fresh = keyring_with(
        config(home.path(), "local://k"),
        CacheConfig::default(),
        Mode::Kms,
    );
    let err = fresh.open(&sealed, &c).await.unwrap_err();
    assert!(matches!(err, Error::KeyDisabled { .. }), "{err}");
    // Unknown version: relabel v1 → v9 in the header.
    let text_pos = sealed.windows(9).position(|w| w == b"local://k").unwrap() + 9;
    let mut relabelled = sealed.clone();
    relabelled[text_pos + 1] = b'9';
    let err = fresh.open(&relabelled, &c).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // No key material in any message.
    assert!(!format!("{err:?}").contains("material"));
}

#[tokio::test]
async fn hybrid_mode_opens_legacy_rows_from_sqlite_and_seals_envelopes() {
    let home = tempfile::tempdir().unwrap();
    let legacy_key = DataKey::from_bytes([0x24; 32]);
    let db = rusqlite::Connection::open(home.path().join("app.db")).unwrap();
    db.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB NOT NULL)")
        .unwrap();
    for id in 1..=50u64 {
        let ct = legacy::seal(
            LegacyFormat::AesGcmIv16,
            &legacy_key,
            &OsRandom,
            format!("user{id}@example.com").as_bytes(),
            b"",
        )
        .unwrap();
        db.execute(
            "INSERT INTO customers (id, email) VALUES (?1, ?2)",
            rusqlite::params![id, ct],
        )
        .unwrap();
    }
    let mut cfg = config(home.path(), "local://customers");
    cfg.mode = Mode::Hybrid;
    let keyring = Keyring::builder(cfg)
        .with_legacy_key(legacy_key.clone())
        .build()
        .unwrap();
    keyring.create_key(&uri("local://customers")).await.unwrap();
    // Half the rows get rewritten as envelopes, as an application in hybrid mode would.
    for id in 1..=25u64 {
        let c = ctx("customers", "email", id);
        let sealed = keyring
            .seal(format!("new{id}@example.com").as_bytes(), &c)
            .await
            .unwrap();
        db.execute(
            "UPDATE customers SET email = ?1 WHERE id = ?2",
            rusqlite::params![sealed, id],
        )
        .unwrap();
    }
    let mut stmt = db
        .prepare("SELECT id, email FROM customers ORDER BY id")
        .unwrap();
    let rows: Vec<(u64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, ct) in &rows {
        let plain = keyring
            .open(ct, &ctx("customers", "email", *id))
            .await
            .unwrap();
        let expected = if *id <= 25 {
            format!("new{id}@example.com")
        } else {
            format!("user{id}@example.com")
        };
        assert_eq!(plain, expected.as_bytes());
    }
    // kms mode refuses the legacy rows with a clear error, and still opens envelopes.
    let kms = keyring_with(
        config(home.path(), "local://customers"),
        CacheConfig::default(),
        Mode::Kms,
    );
    assert!(
        kms.open(&rows[30].1, &ctx("customers", "email", 31))
            .await
            .unwrap_err()
            .to_string()
            .contains("hybrid")
    );
    assert!(
        kms.open(&rows[0].1, &ctx("customers", "email", 1))
            .await
            .is_ok()
    );
    // legacy mode seals legacy data and still opens envelopes (rollback keeps new data readable).
    let mut cfg = config(home.path(), "local://customers");
    cfg.mode = Mode::Legacy;
    let rollback = Keyring::builder(cfg)
        .with_legacy_key(legacy_key.clone())
        .build()
        .unwrap();
    let legacy_ct = rollback
        .seal(b"old style", &ctx("customers", "email", 99))
        .await
        .unwrap();
    assert_eq!(
        legacy::open(LegacyFormat::AesGcmIv16, &legacy_key, &legacy_ct, b"").unwrap(),
        b"old style"
    );
    assert!(
        rollback
            .open(&rows[0].1, &ctx("customers", "email", 1))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn hybrid_mode_reads_the_legacy_key_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let var = "SEALKIT_TEST_LEGACY_KEY_HYBRID";
    let mut cfg = config(home.path(), "local://k");
    cfg.mode = Mode::Hybrid;
    cfg.legacy.key_env = var.into();
    // The pure builder never reads the variable; `with_env` (as `Config::from_env`) does.
    let err = Keyring::builder(cfg.with_env().unwrap())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains(var) && err.to_string().contains("not set"),
        "{err}"
    );
    // The variable is set only in a child process running `hybrid_child`, so no other test
    // of this binary sees it (setting variables in-process is unsafe in edition 2024).
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "keyring::hybrid_child", "--nocapture"])
        .env(var, key)
        .env("SEALKIT_HYBRID_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success(), "the child test with {var} set failed");
}

#[tokio::test]
async fn hybrid_child() {
    // Runs only in the child spawned above, with the variable set.
    if std::env::var("SEALKIT_HYBRID_CHILD").is_err() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut cfg = config(home.path(), "local://k");
    cfg.mode = Mode::Hybrid;
    cfg.legacy.key_env = "SEALKIT_TEST_LEGACY_KEY_HYBRID".into();
    let keyring = Keyring::builder(cfg.with_env().unwrap()).build().unwrap();
    let legacy = legacy::seal(
        LegacyFormat::AesGcmIv16,
        &DataKey::from_bytes([7; 32]),
        &OsRandom,
        b"hi",
        b"",
    )
    .unwrap();
    assert_eq!(
        keyring.open(&legacy, &ctx("t", "c", 1)).await.unwrap(),
        b"hi"
    );
}

#[tokio::test]
async fn cache_bounds_are_honoured() {
    let home = tempfile::tempdir().unwrap();
    let mut cache = CacheConfig::default();
    cache.max_messages = 10;
    cache.max_entries = 2;
    let keyring = keyring_with(config(home.path(), "local://k"), cache.clone(), Mode::Kms);
    keyring.create_key(&uri("local://k")).await.unwrap();
    // 35 seals under one scope with a 10-message budget need 4 DEKs: never more than 10 each.
    let mut dek_ids = std::collections::HashMap::new();
    for id in 0..35 {
        let sealed = keyring.seal(b"x", &ctx("t", "c", id)).await.unwrap();
        let env = sealkit::core::Envelope::parse(&sealed).unwrap();
        *dek_ids
            .entry(env.wrapped_bytes().unwrap().to_vec())
            .or_insert(0) += 1;
    }
    assert_eq!(dek_ids.len(), 4);
    assert!(dek_ids.values().all(|&n| n <= 10), "{dek_ids:?}");
    // Three scopes with room for two: the cache holds at most two sealing DEKs.
    for table in ["a", "b", "c"] {
        keyring.seal(b"x", &ctx(table, "c", 1)).await.unwrap();
    }
    assert!(keyring.cached_deks().0 <= 2);
    // Byte budget: 3 seals of 40 bytes under a 100-byte budget need 2 DEKs.
    let mut cache = CacheConfig::default();
    cache.max_bytes = 100;
    let k2 = keyring_with(config(home.path(), "local://k"), cache, Mode::Kms);
    let before = k2.stats().kms_calls;
    for id in 0..3 {
        k2.seal(&[0u8; 40], &ctx("t", "c", id)).await.unwrap();
    }
    assert_eq!(k2.stats().kms_calls - before, 2);
    // Age: a zero max age means every seal fetches a fresh DEK.
    let mut cache = CacheConfig::default();
    cache.max_age_secs = 0;
    let k3 = keyring_with(config(home.path(), "local://k"), cache, Mode::Kms);
    for id in 0..3 {
        k3.seal(b"x", &ctx("t", "c", id)).await.unwrap();
    }
    assert_eq!(k3.stats().kms_calls, 3);
    // Default caching: 1,000 seals in one scope cost one KMS call.
    let k4 = crate::support::keyring(home.path(), "local://k");
    for id in 0..1000 {
        k4.seal(b"x", &ctx("t", "c", id)).await.unwrap();
    }
    assert_eq!(k4.stats().kms_calls, 1);
    assert_eq!(k4.stats().cache_hits, 999);
}

#[tokio::test]
async fn evicted_deks_are_dropped() {
    // Eviction drops the last reference to the DekCipher, whose derived keys are Zeroizing /
    // zeroize-on-drop types; a Weak reference observes that the value is gone.
    let home = tempfile::tempdir().unwrap();
    let mut cache = CacheConfig::default();
    cache.max_entries = 1;
    cache.max_open_entries = 1;
    let keyring = keyring_with(config(home.path(), "local://k"), cache, Mode::Kms);
    keyring.create_key(&uri("local://k")).await.unwrap();
    keyring.seal(b"x", &ctx("a", "c", 1)).await.unwrap();
    assert_eq!(keyring.cached_deks(), (1, 1));
    keyring.seal(b"x", &ctx("b", "c", 1)).await.unwrap();
    assert_eq!(keyring.cached_deks(), (1, 1));
    let weak = keyring.weak_seal_cipher(&ctx("b", "c", 1)).expect("cached");
    keyring.seal(b"x", &ctx("c", "c", 1)).await.unwrap();
    assert!(weak.upgrade().is_none(), "an evicted DEK is still alive");
}

#[tokio::test]
async fn rotation_then_rewrap_changes_only_the_key_slot() {
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path(), "local://k");
    let key = uri("local://k");
    keyring.create_key(&key).await.unwrap();
    let mut sealed = Vec::new();
    for id in 0..100 {
        sealed.push(
            keyring
                .seal(format!("row {id}").as_bytes(), &ctx("t", "c", id))
                .await
                .unwrap(),
        );
    }
    keyring.rotate_key(&key).await.unwrap();
    let calls = keyring.stats().kms_calls;
    for (id, old) in sealed.iter().enumerate() {
        let c = ctx("t", "c", id as u64);
        let RewrapOutcome::Rewrapped(new) = keyring.rewrap(old, &c, None).await.unwrap() else {
            panic!("row {id} was not rewrapped");
        };
        let (o, n) = (
            sealkit::core::Envelope::parse(old).unwrap(),
            sealkit::core::Envelope::parse(&new).unwrap(),
        );
        assert_eq!(n.key_ref().unwrap().unwrap().version.as_str(), "2");
        assert_eq!(
            (o.nonce(), o.ciphertext(), o.tag()),
            (n.nonce(), n.ciphertext(), n.tag())
        );
        assert_eq!(
            keyring.rewrap(&new, &c, None).await.unwrap(),
            RewrapOutcome::AlreadyCurrent
        );
        let fresh = keyring_with(
            config(home.path(), "local://k"),
            CacheConfig::default(),
            Mode::Kms,
        );
        if id % 25 == 0 {
            assert_eq!(
                fresh.open(&new, &c).await.unwrap(),
                format!("row {id}").as_bytes()
            );
        }
    }
    // One DEK for 100 rows: metadata lookups aside, one rewrap and one verifying unwrap.
    let rewrap_calls = keyring.stats().kms_calls - calls;
    assert!(rewrap_calls <= 2 + 200, "{rewrap_calls}");
    // Retire v1: the rewrapped data still opens in a fresh keyring.
    keyring
        .set_version_state(&key, &KeyVersion::number(1), VersionState::Disabled)
        .await
        .unwrap();
}

#[tokio::test]
async fn health_reports_every_component() {
    let home = tempfile::tempdir().unwrap();
    let cfg = with_audit_log(
        config(home.path(), "local://k"),
        &home.path().join("audit.jsonl"),
    );
    let keyring = Keyring::builder(cfg).build().unwrap();
    let reports = keyring.health().await;
    // The default key does not exist yet: the provider check says so.
    let local = reports
        .iter()
        .find(|r| r.component == "provider local")
        .unwrap();
    assert!(
        local
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("keys create"),
        "{local:?}"
    );
    keyring.create_key(&uri("local://k")).await.unwrap();
    let reports = keyring.health().await;
    assert!(reports.iter().all(|r| r.is_healthy()), "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|r| r.component.starts_with("audit sink"))
    );
}

/// One crafted envelope (the algorithm byte flipped) must not make the genuine envelopes of
/// its DEK fail to open: the open cache is keyed by everything the cipher is built from and
/// filled only after an envelope authenticates.
#[tokio::test]
async fn a_crafted_envelope_cannot_poison_the_open_cache() {
    let home = tempfile::tempdir().unwrap();
    let sealer = keyring(home.path(), "local://poison");
    sealer.create_key(&uri("local://poison")).await.unwrap();
    let c = ctx("customers", "email", 1);
    let genuine = sealer.seal(b"alice@example.com", &c).await.unwrap();
    assert_eq!(genuine[4], 1, "AES-256-GCM");
    let mut crafted = genuine.clone();
    crafted[4] = 2; // XChaCha20-Poly1305, same key slot
    // A reader whose cache is cold meets the crafted envelope first, then both, interleaved.
    let reader = keyring(home.path(), "local://poison");
    for _ in 0..3 {
        assert!(matches!(
            reader.open(&crafted, &c).await,
            Err(Error::InvalidCiphertext)
        ));
        assert_eq!(
            reader.open(&genuine, &c).await.unwrap(),
            b"alice@example.com"
        );
    }
    // A rewrap of the crafted envelope is refused too, and leaves the genuine one working.
    let fresh = keyring(home.path(), "local://poison");
    assert!(fresh.rewrap(&crafted, &c, None).await.is_err());
    assert_eq!(
        fresh.open(&genuine, &c).await.unwrap(),
        b"alice@example.com"
    );
}

/// A key changed by another process applies here within the freshness bound: one keyring
/// seals while another (its own key store in memory, as a second process has) rotates and
/// then disables the old version.
#[tokio::test]
async fn key_changes_made_elsewhere_apply_within_the_freshness_bound() {
    let home = tempfile::tempdir().unwrap();
    let mut cfg = config(home.path(), "local://fresh");
    cfg.cache.max_age_secs = 1;
    let sealer = Keyring::builder(cfg).build().unwrap();
    let other = keyring(home.path(), "local://fresh");
    let key = uri("local://fresh");
    other.create_key(&key).await.unwrap();
    let c = ctx("customers", "email", 1);
    let old = sealer.seal(b"before", &c).await.unwrap();
    let version_of = |sealed: &[u8]| {
        sealkit::core::Envelope::parse(sealed)
            .unwrap()
            .key_ref()
            .unwrap()
            .unwrap()
            .version
    };
    assert_eq!(version_of(&old), KeyVersion::number(1));
    // A liveness bound well above the documented one (max_age 1 s, key-file check 2 s).
    let bound = std::time::Duration::from_secs(30);

    other.rotate_key(&key).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let sealed = sealer.seal(b"after", &c).await.unwrap();
        if version_of(&sealed) == KeyVersion::number(2) {
            break;
        }
        assert!(started.elapsed() < bound, "still sealing under v1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    other
        .set_version_state(&key, &KeyVersion::number(1), VersionState::Disabled)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        match sealer.open(&old, &c).await {
            Err(Error::KeyDisabled { .. }) => break,
            Ok(_) => assert!(started.elapsed() < bound, "v1 still opens"),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // refresh() applies a change at once.
    other
        .set_version_state(&key, &KeyVersion::number(1), VersionState::Enabled)
        .await
        .unwrap();
    sealer.refresh();
    assert_eq!(sealer.open(&old, &c).await.unwrap(), b"before");
}

/// Legacy reads are counted and audited apart from envelope opens, so operators can watch
/// them fall to zero before leaving hybrid mode.
#[tokio::test]
async fn legacy_opens_are_counted_and_audited_distinctly() {
    let home = tempfile::tempdir().unwrap();
    let legacy_key = DataKey::from_bytes([0x24; 32]);
    let audit_path = home.path().join("audit.jsonl");
    let mut cfg = with_audit_log(config(home.path(), "local://customers"), &audit_path);
    cfg.mode = Mode::Hybrid;
    let keyring = Keyring::builder(cfg)
        .with_legacy_key(legacy_key.clone())
        .build()
        .unwrap();
    keyring.create_key(&uri("local://customers")).await.unwrap();
    let c = ctx("customers", "email", 1);
    let old = legacy_iv16(&legacy_key, b"old");
    let new = keyring.seal(b"new", &c).await.unwrap();
    for _ in 0..2 {
        assert_eq!(keyring.open(&old, &c).await.unwrap(), b"old");
    }
    assert_eq!(keyring.open(&new, &c).await.unwrap(), b"new");
    assert_eq!(keyring.stats().legacy_opens, 2);
    keyring.flush_audit().unwrap();
    let log = std::fs::read_to_string(&audit_path).unwrap();
    let count = |op: &str| log.matches(&format!("\"op\":\"{op}\"")).count();
    assert_eq!(count("open_legacy"), 2, "{log}");
    assert_eq!(count("open"), 1, "{log}");
}

/// The legacy key can come from a secret chain (`[legacy] key = [...]`), fetched by
/// `build_async`; the first link that serves wins.
#[tokio::test]
async fn the_legacy_key_comes_from_a_secret_chain() {
    let home = tempfile::tempdir().unwrap();
    let legacy_key = DataKey::from_bytes([0x42; 32]);
    let key_file = home.path().join("legacy-key");
    std::fs::write(&key_file, base64_of(&[0x42; 32])).unwrap();
    let toml = format!(
        "mode = \"hybrid\"\ndefault_key = \"local://customers\"\n[providers.local]\nhome = {:?}\n[legacy]\nkey = [\"file:{}\", \"env:SEALKIT_TEST_UNSET_LEGACY\"]\n",
        home.path().join(".sealkit"),
        key_file.display()
    );
    let cfg = sealkit::Config::from_toml(&toml).unwrap();
    let err = Keyring::builder(cfg.clone()).build().unwrap_err();
    assert!(err.to_string().contains("[legacy] key"), "{err}");
    let keyring = Keyring::builder(cfg).build_async().await.unwrap();
    let old = legacy_iv16(&legacy_key, b"old");
    let c = ctx("customers", "email", 1);
    assert_eq!(keyring.open(&old, &c).await.unwrap(), b"old");
    // A chain that serves something else than base64 of 32 bytes is a clear error.
    std::fs::write(&key_file, "not a key").unwrap();
    let cfg = sealkit::Config::from_toml(&toml).unwrap();
    let err = Keyring::builder(cfg).build_async().await.unwrap_err();
    assert!(err.to_string().contains("legacy.key"), "{err}");
    assert!(
        !err.to_string().contains("not a key"),
        "never the value: {err}"
    );
}

/// `plaintext` sealed as the legacy application did (AES-256-GCM, 16-byte IV) under `key`.
fn legacy_iv16(key: &DataKey, plaintext: &[u8]) -> Vec<u8> {
    legacy::seal(LegacyFormat::AesGcmIv16, key, &OsRandom, plaintext, b"").unwrap()
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
