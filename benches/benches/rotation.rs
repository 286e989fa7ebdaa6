//! A KEK rotation of 1,000,000 rows (one 64-byte column, one DEK scope) on SQLite, full
//! layout against compact: the full layout rewrites every row through a migration job
//! (`envelope` column, rewrap); the compact layout rewraps the DEK store's rows and writes no
//! data row. A one-shot measurement printed as a table (seconds, data rows written, KMS
//! calls); run with `cargo xtask bench rotation`.

use std::time::Instant;

use sealkit::{Config, EncryptionContext, KeyUri, Keyring, Layout};
use sealkit_migrate::{JobSpec, Migrator, SqliteStore};

const ROWS: i64 = 1_000_000;

/// A keyring over local keys in `home`, compact with its DEK store in `db` if `compact`.
async fn keyring(home: &std::path::Path, db: &std::path::Path, compact: bool) -> Keyring {
    let mut config = Config::default();
    config.provider("local").set("home", home.to_str().unwrap());
    if compact {
        config.deks.store = Some(format!("sqlite:{}", db.display()));
        config.deks.layout = Layout::Compact;
    }
    Keyring::builder(config).build_async().await.unwrap()
}

/// Fills `t` with ROWS sealed 64-byte values.
async fn fill(keyring: &Keyring, key: &KeyUri, db: &std::path::Path) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, email BLOB)")
        .unwrap();
    // Sealed before the insert transaction starts: a compact seal may reserve messages in the
    // DEK store, which needs SQLite's write lock (see docs/runbooks/dek-store.md).
    let mut sealed = Vec::with_capacity(ROWS as usize);
    for id in 1..=ROWS {
        sealed.push(
            keyring
                .seal_with(key, &[0x61; 64], &context(id))
                .await
                .unwrap(),
        );
    }
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO t VALUES (?1, ?2)").unwrap();
        for (id, value) in (1..=ROWS).zip(&sealed) {
            insert.execute(rusqlite::params![id, value]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn context(id: i64) -> EncryptionContext {
    EncryptionContext::parse(&format!("table=t,column=email,id={id}")).unwrap()
}

/// A digest of every stored value, to count the rows a rotation wrote.
fn values(db: &std::path::Path) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT email FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Distinct DEKs among the values: wrapped DEKs (full) or DEK ids (compact).
fn distinct_deks(values: &[Vec<u8>]) -> usize {
    use sealkit::core::Envelope;
    use sealkit::core::envelope::KeySlot;
    let mut seen = std::collections::HashSet::new();
    for v in values {
        let envelope = Envelope::parse(v).unwrap();
        let dek: Vec<u8> = match envelope.slot() {
            KeySlot::DekId(id) => id.to_vec(),
            _ => envelope.wrapped_bytes().unwrap_or_default().to_vec(),
        };
        seen.insert(dek);
    }
    seen.len()
}

fn changed(before: &[Vec<u8>], after: &[Vec<u8>]) -> usize {
    before.iter().zip(after).filter(|(a, b)| a != b).count()
}

fn main() {
    if !sealkit_benches::selected("rotation") {
        return;
    }
    let rt = sealkit_benches::runtime(2);
    rt.block_on(async {
        println!("| KEK rotation, {ROWS} rows × 64 B, SQLite | seconds | data rows written | KMS calls | DEKs |");
        println!("|---|---|---|---|---|");
        for compact in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("app.db");
            let k = keyring(dir.path(), &db, compact).await;
            let key = KeyUri::parse("local://rotation").unwrap();
            k.create_key(&key).await.unwrap();
            fill(&k, &key, &db).await;
            let before = values(&db);
            let deks = distinct_deks(&before);
            k.rotate_key(&key).await.unwrap();
            let calls = k.stats().kms_calls;
            let started = Instant::now();
            if compact {
                let report = k.rewrap_deks(&key, &key, false).await.unwrap();
                assert_eq!(report.conflicts, 0);
            } else {
                let mut spec = JobSpec::new(
                    "rotate",
                    "t",
                    "id",
                    vec!["email=envelope".parse().unwrap()],
                    key.clone(),
                )
                .unwrap();
                spec.chunk_rows = 1000;
                let store = std::sync::Arc::new(SqliteStore::open(db.to_str().unwrap()).unwrap());
                let report = Migrator::new(k.clone(), spec, store)
                    .run("w1", &|_: &sealkit_migrate::Counts| {})
                    .await
                    .unwrap();
                assert_eq!(report.failed, 0);
            }
            let seconds = started.elapsed().as_secs_f64();
            let calls = k.stats().kms_calls - calls;
            let after = values(&db);
            let written = changed(&before, &after);
            println!(
                "| {} | {seconds:.3} | {written} | {calls} | {deks} |",
                if compact { "compact (DEK store rows rewrapped)" } else { "full (migration job rewraps every row)" }
            );
            // Every value still opens in a new process.
            let fresh = keyring(dir.path(), &db, compact).await;
            for id in [1, ROWS / 2, ROWS] {
                let v = &after[(id - 1) as usize];
                assert_eq!(fresh.open(v, &context(id)).await.unwrap(), [0x61; 64]);
            }
        }
    });
}
