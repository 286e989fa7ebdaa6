//! Jobs over SQLite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::params;
use sealkit::core::Envelope;
use sealkit_migrate::{ColumnSpec, JobSpec, SqliteStore, Store};

use crate::support::*;

fn fill(path: &std::path::Path, rows: i64) {
    let mut db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB, notes TEXT, phone BLOB)",
    )
    .unwrap();
    let tx = db.transaction().unwrap();
    for id in 1..=rows {
        let notes = String::from_utf8(legacy_note(id)).unwrap();
        let phone = if id % 10 == 0 {
            None
        } else {
            Some(format!("+1-555-{id:04}").into_bytes())
        };
        tx.execute(
            "INSERT INTO customers VALUES (?1, ?2, ?3, ?4)",
            params![id, legacy_email(id, 0), notes, phone],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A customers table of `rows` rows in a fresh directory, a keyring there with the target
/// key `customers`, and a store over the database.
struct Fixture {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    keyring: sealkit::Keyring,
    key: sealkit::KeyUri,
    store: Arc<dyn Store>,
}

impl Fixture {
    async fn new(rows: i64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        fill(&path, rows);
        let keyring = keyring(dir.path());
        let key = target(&keyring, "customers").await;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
        Self {
            dir,
            path,
            keyring,
            key,
            store,
        }
    }
}

async fn check_all(
    keyring: &sealkit::Keyring,
    path: &std::path::Path,
    expected_email: &HashMap<i64, String>,
) {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut stmt = db
        .prepare("SELECT id, email, notes, phone FROM customers ORDER BY id")
        .unwrap();
    type Stored = (i64, Vec<u8>, Vec<u8>, Option<Vec<u8>>);
    let rows: Vec<Stored> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), expected_email.len());
    for (id, email_ct, notes_ct, phone_ct) in rows {
        let ctx = |c: &str| {
            sealkit::EncryptionContext::parse(&format!("table=customers,column={c},id={id}"))
                .unwrap()
        };
        assert_eq!(
            String::from_utf8(keyring.open(&email_ct, &ctx("email")).await.unwrap()).unwrap(),
            expected_email[&id],
            "row {id}"
        );
        assert_eq!(
            keyring.open(&notes_ct, &ctx("notes")).await.unwrap(),
            note(id).as_bytes()
        );
        match phone_ct {
            Some(p) => assert_eq!(
                keyring.open(&p, &ctx("phone")).await.unwrap(),
                format!("+1-555-{id:04}").as_bytes()
            ),
            None => assert_eq!(id % 10, 0, "NULLs stay NULL"),
        }
    }
}

#[tokio::test]
async fn legacy_to_kms_then_rotation_then_idempotent_rerun() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(2000).await;
    let job = migrator(&keyring, legacy_job("to-kms", key.clone()), store.clone());

    let plan = job.plan().await.unwrap();
    assert_eq!(plan.rows, 2000);
    assert_eq!(plan.formats["notes"]["fernet"], 2000);
    assert_eq!(plan.formats["email"]["aes-gcm-iv16 (declared)"], 2000);
    assert!(
        plan.estimated_kms_calls >= 3 && plan.estimated_kms_calls < 10,
        "{plan:?}"
    );

    let calls = keyring.stats().kms_calls;
    let report = job.run("w1", &quiet).await.unwrap();
    assert_eq!(report.migrated, 2000 + 2000 + 1800);
    assert_eq!(report.failed, 0);
    assert!(
        keyring.stats().kms_calls - calls < 20,
        "a few data keys, not one per row"
    );
    let status = job.status().await.unwrap();
    assert_eq!(
        (status.pending, status.running, status.done),
        (0, 0, 9),
        "keys 1..=2000 in chunks of 250 aligned at 0"
    );
    assert_eq!(status.migrated, 5800);
    let verify = job.verify().await.unwrap();
    assert_eq!(
        (verify.values, verify.ok, verify.problem_count),
        (5800, 5800, 0),
        "{:?}",
        verify.problems
    );
    let expected: HashMap<i64, String> = (1..=2000).map(|id| (id, email(id, 0))).collect();
    check_all(&keyring, &path, &expected).await;

    // The same job again: nothing to do.
    let again = migrator(&keyring, legacy_job("to-kms", key.clone()), store.clone());
    assert_eq!(again.run("w1", &quiet).await.unwrap().migrated, 0);
    // Another spec under the same name is refused.
    let mut other = legacy_job("to-kms", key.clone());
    other.pk = "rowid".into();
    assert!(
        migrator(&keyring, other, store.clone())
            .run("w1", &quiet)
            .await
            .is_err()
    );

    // KEK rotation: a rewrap job moves every envelope to v2 without touching data ciphertexts.
    let before: Vec<Vec<u8>> = {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = db
            .prepare("SELECT email FROM customers ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    keyring.rotate_key(&key).await.unwrap();
    let columns = vec![
        "email=envelope".parse::<ColumnSpec>().unwrap(),
        "notes=envelope".parse().unwrap(),
        "phone=envelope".parse().unwrap(),
    ];
    let rotate = migrator(
        &keyring,
        JobSpec::new("rotate-v2", "customers", "id", columns, key.clone()).unwrap(),
        store.clone(),
    );
    let calls = keyring.stats().kms_calls;
    let report = rotate.run("w1", &quiet).await.unwrap();
    assert_eq!(report.migrated, 5800);
    assert!(
        keyring.stats().kms_calls - calls < 30,
        "one rewrap per DEK, not per row"
    );
    assert_eq!(rotate.verify().await.unwrap().problem_count, 0);
    // Old versions are retired only once verify passes for the legacy job's spec too (it
    // targets the same key, and every value is now under v2).
    let retired = rotate.retire_old_versions().await.unwrap();
    assert_eq!(
        retired.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        vec!["1"]
    );
    let db = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = db
        .prepare("SELECT email FROM customers ORDER BY id")
        .unwrap();
    let after: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (old, new) in before.iter().zip(&after) {
        let (o, n) = (Envelope::parse(old).unwrap(), Envelope::parse(new).unwrap());
        assert_eq!(
            (o.nonce(), o.ciphertext(), o.tag()),
            (n.nonce(), n.ciphertext(), n.tag())
        );
        assert_eq!(n.key_ref().unwrap().unwrap().version.as_str(), "2");
    }
    check_all(&keyring, &path, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_application_writes_are_preserved() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(3000).await;
    let job = migrator(&keyring, legacy_job("live", key.clone()), store);

    // While the job runs, the application updates existing rows and inserts new ones. Half of
    // its instances are already in hybrid mode (they write envelopes), half still write the
    // legacy format.
    let writer_path = path.clone();
    let (app, app_key) = (keyring.clone(), key.clone());
    let writer = tokio::spawn(async move {
        let db = rusqlite::Connection::open(&writer_path).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let mut expected = HashMap::new();
        for round in 1..=300u32 {
            let id = i64::from(round * 7 % 3000 + 1);
            let value = if round % 2 == 0 {
                let ctx = sealkit::EncryptionContext::parse(&format!(
                    "table=customers,column=email,id={id}"
                ))
                .unwrap();
                app.seal_with(&app_key, email(id, round).as_bytes(), &ctx)
                    .await
                    .unwrap()
            } else {
                legacy_email(id, round)
            };
            db.execute(
                "UPDATE customers SET email = ?1 WHERE id = ?2",
                params![value, id],
            )
            .unwrap();
            expected.insert(id, email(id, round));
            let new_id = 3000 + i64::from(round);
            let notes = String::from_utf8(legacy_note(new_id)).unwrap();
            db.execute(
                "INSERT INTO customers VALUES (?1, ?2, ?3, ?4)",
                params![
                    new_id,
                    legacy_email(new_id, 0),
                    notes,
                    format!("+1-555-{new_id:04}").into_bytes()
                ],
            )
            .unwrap();
            expected.insert(new_id, email(new_id, 0));
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        expected
    });
    let first = job.run("w1", &quiet).await.unwrap();
    let changed = writer.await.unwrap();
    // Legacy writes that landed after their chunk was done are caught by a sweep; nothing the
    // application wrote is overwritten or lost.
    let sweep = job.sweep("w1", &quiet).await.unwrap();
    assert_eq!(first.failed + sweep.failed, 0);
    let mut expected: HashMap<i64, String> = (1..=3000).map(|id| (id, email(id, 0))).collect();
    expected.extend(changed);
    let verify = job.verify().await.unwrap();
    assert_eq!(verify.problem_count, 0, "{:?}", verify.problems);
    check_all(&keyring, &path, &expected).await;
}

#[tokio::test]
async fn undeclared_or_wrong_key_values_are_counted_not_lost() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(100).await;
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        // Row 5 was written with another key: it cannot be converted and must stay as it is.
        db.execute("UPDATE customers SET email = X'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00' WHERE id = 5", []).unwrap();
    }
    let job = migrator(&keyring, legacy_job("partial", key), store);
    let report = job.run("w1", &quiet).await.unwrap();
    assert_eq!(report.failed, 1);
    // Retiring is refused while a value still needs the old key.
    let err = job.retire_old_versions().await.unwrap_err();
    assert!(err.to_string().contains("1 values"), "{err}");
    let verify = job.verify().await.unwrap();
    assert_eq!(verify.problem_count, 1);
    assert_eq!(verify.problems[0].0, sealkit_migrate::RowKey::Int(5));
    let db = rusqlite::Connection::open(&path).unwrap();
    let kept: Vec<u8> = db
        .query_row("SELECT email FROM customers WHERE id = 5", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept.len(), 33, "the unconvertible value is left untouched");
}

#[tokio::test]
async fn reseal_gives_every_value_a_fresh_data_key() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(600).await;
    migrator(&keyring, legacy_job("to-kms", key.clone()), store.clone())
        .run("w1", &quiet)
        .await
        .unwrap();
    let dek_of = |v: &[u8]| {
        Envelope::parse(v)
            .unwrap()
            .wrapped_bytes()
            .unwrap()
            .to_vec()
    };
    let read = || -> Vec<Vec<u8>> {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = db
            .prepare("SELECT email FROM customers ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before: HashSet<Vec<u8>> = read().iter().map(|v| dek_of(v)).collect();
    keyring.rotate_key(&key).await.unwrap();
    let columns = vec![
        "email=envelope".parse::<ColumnSpec>().unwrap(),
        "notes=envelope".parse().unwrap(),
        "phone=envelope".parse().unwrap(),
    ];
    let mut spec = JobSpec::new("reseal", "customers", "id", columns, key.clone()).unwrap();
    spec.reseal = true;
    let job = migrator(&keyring, spec, store);
    assert_eq!(job.run("w1", &quiet).await.unwrap().migrated, 600 * 3 - 60);
    let after = read();
    for v in &after {
        assert!(
            !before.contains(&dek_of(v)),
            "a value kept its old data key"
        );
        assert_eq!(
            Envelope::parse(v)
                .unwrap()
                .key_ref()
                .unwrap()
                .unwrap()
                .version
                .as_str(),
            "2"
        );
    }
    assert_eq!(job.verify().await.unwrap().problem_count, 0);
    let expected: HashMap<i64, String> = (1..=600).map(|id| (id, email(id, 0))).collect();
    check_all(&keyring, &path, &expected).await;
}

/// A generator whose first bytes are an envelope header: legacy values sealed with it start
/// like a (compact) envelope, as one random IV in 2^24 does.
#[derive(Debug)]
struct EnvelopeLookingIv;

impl sealkit::core::SecureRandom for EnvelopeLookingIv {
    fn fill(&self, dest: &mut [u8]) -> sealkit::Result<()> {
        let header = [
            sealkit::core::MAGIC[0],
            sealkit::core::MAGIC[1],
            sealkit::core::FORMAT_VERSION,
            sealkit::core::EnvelopeLayout::Compact.code(),
            sealkit::Algorithm::Aes256Gcm.code(),
        ];
        for (i, byte) in dest.iter_mut().enumerate() {
            *byte = header.get(i).copied().unwrap_or(i as u8);
        }
        Ok(())
    }
}

#[tokio::test]
async fn legacy_values_that_look_like_envelopes_still_migrate() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(20).await;
    let crafted = sealkit::core::legacy::seal(
        sealkit::core::legacy::LegacyFormat::AesGcmIv16,
        &legacy_key(),
        &EnvelopeLookingIv,
        email(7, 0).as_bytes(),
        b"",
    )
    .unwrap();
    assert!(
        Envelope::parse(&crafted).is_ok(),
        "the legacy value parses as an envelope"
    );
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE customers SET email = ?1 WHERE id = 7",
            params![crafted],
        )
        .unwrap();
    let job = migrator(&keyring, legacy_job("look-alike", key.clone()), store);
    let report = job.run("w1", &quiet).await.unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(job.verify().await.unwrap().problem_count, 0);
    let expected: HashMap<i64, String> = (1..=20).map(|id| (id, email(id, 0))).collect();
    check_all(&keyring, &path, &expected).await;
}

/// A `plaintext` column holding a ciphertext (a Fernet token here) is refused, not sealed as
/// if it were data — unless forced.
#[tokio::test]
async fn ciphertexts_in_a_plaintext_column_are_refused_unless_forced() {
    let Fixture {
        dir: _dir,
        path,
        keyring,
        key,
        store,
    } = Fixture::new(20).await;
    let token = legacy_note(3);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "UPDATE customers SET phone = ?1 WHERE id = 3",
        params![token],
    )
    .unwrap();
    let phone = |db: &rusqlite::Connection| -> Vec<u8> {
        db.query_row("SELECT phone FROM customers WHERE id = 3", [], |r| r.get(0))
            .unwrap()
    };
    let job = migrator(&keyring, legacy_job("plain", key.clone()), store.clone());
    let report = job.run("w1", &quiet).await.unwrap();
    assert_eq!(report.failed, 1, "the token is refused");
    assert_eq!(phone(&db), token, "and left as it was");
    assert_eq!(job.verify().await.unwrap().problem_count, 1);

    let mut forced = legacy_job("plain", key.clone());
    forced.force_plaintext = true;
    let job = migrator(&keyring, forced, store);
    job.sweep("w1", &quiet).await.unwrap();
    let sealed = phone(&db);
    let ctx = sealkit::EncryptionContext::parse("table=customers,column=phone,id=3").unwrap();
    assert_eq!(keyring.open(&sealed, &ctx).await.unwrap(), token);
}

/// A TEXT column holding base64url ciphertexts (`email=aes-gcm-iv16@base64url`) migrates, and
/// its envelopes are written back as TEXT in the same encoding; a value that is not base64url
/// fails alone with its reason and nothing else is touched.
#[tokio::test]
async fn text_columns_keep_their_encoding() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
            .unwrap();
        for id in 1..=50i64 {
            let stored = if id == 7 {
                "not base64url!".to_string()
            } else {
                url.encode(legacy_email(id, 0))
            };
            db.execute("INSERT INTO people VALUES (?1, ?2)", params![id, stored])
                .unwrap();
        }
    }
    let keyring = keyring(dir.path());
    let key = target(&keyring, "people").await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let column: ColumnSpec = "email=aes-gcm-iv16@base64url".parse().unwrap();
    let spec = JobSpec::new("people", "people", "id", vec![column], key).unwrap();
    let report = migrator(&keyring, spec, store)
        .run("w1", &quiet)
        .await
        .unwrap();
    assert_eq!((report.migrated, report.failed), (49, 1));
    let db = rusqlite::Connection::open(&path).unwrap();
    let mut rows = db
        .prepare("SELECT id, typeof(email), email FROM people ORDER BY id")
        .unwrap();
    let rows: Vec<(i64, String, String)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, kind, stored) in rows {
        assert_eq!(kind, "text", "row {id} stays text");
        if id == 7 {
            assert_eq!(stored, "not base64url!", "the bad value is left as it was");
            continue;
        }
        let sealed = url.decode(&stored).expect("base64url, unpadded");
        let ctx = sealkit::EncryptionContext::parse(&format!("table=people,column=email,id={id}"))
            .unwrap();
        assert_eq!(
            keyring.open(&sealed, &ctx).await.unwrap(),
            email(id, 0).as_bytes()
        );
    }
}
