//! Re-encryption throughput on 100,000 rows × 2 columns: legacy → KMS and KEK-rotation rewrap,
//! on SQLite and on PostgreSQL with 1 and 2 workers, with KMS calls per row, each against a
//! floor: the same chunked read-modify-write over the same table shape with no cryptography
//! (each value replaced by a same-length copy, compare-and-swap as the jobs do). A one-shot
//! measurement (each job runs once over fresh data), printed as a table; run with
//! `cargo xtask bench migrate` (which starts the PostgreSQL peer).

use std::sync::Arc;
use std::time::Instant;

use sealkit::core::legacy::{self, LegacyFormat};
use sealkit::random::OsRandom;
use sealkit::{Config, DataKey, KeyUri, Keyring};
use sealkit_benches::peer;
use sealkit_migrate::{ColumnSpec, JobSpec, Migrator, PgStore, SqliteStore, Store};

const ROWS: i64 = 100_000;
const LEGACY: [u8; 32] = [0x42; 32];

fn values() -> (Vec<i64>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let key = DataKey::from_bytes(LEGACY);
    let ids: Vec<i64> = (1..=ROWS).collect();
    let seal = |s: String| {
        legacy::seal(LegacyFormat::AesGcmIv16, &key, &OsRandom, s.as_bytes(), b"").unwrap()
    };
    let emails = ids
        .iter()
        .map(|id| seal(format!("user{id}@example.com")))
        .collect();
    let phones = ids
        .iter()
        .map(|id| seal(format!("+1-555-{id:06}")))
        .collect();
    (ids, emails, phones)
}

fn spec(job: &str, table: &str, format: &str, key: &KeyUri) -> JobSpec {
    let columns = vec![
        format!("email={format}").parse::<ColumnSpec>().unwrap(),
        format!("phone={format}").parse().unwrap(),
    ];
    JobSpec::new(job, table, "id", columns, key.clone()).unwrap()
}

async fn run(keyring: &Keyring, stores: Vec<Arc<dyn Store>>, spec: JobSpec) -> (f64, u64) {
    let calls = keyring.stats().kms_calls;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, store) in stores.into_iter().enumerate() {
        let m = Migrator::new(keyring.clone(), spec.clone(), store)
            .with_legacy_key(DataKey::from_bytes(LEGACY));
        tasks.push(tokio::spawn(async move {
            m.run(&format!("w{w}"), &|_: &sealkit_migrate::Counts| {})
                .await
                .unwrap()
        }));
    }
    let mut migrated = 0;
    for t in tasks {
        migrated += t.await.unwrap().migrated;
    }
    assert_eq!(migrated, ROWS as u64 * 2);
    (
        ROWS as f64 / started.elapsed().as_secs_f64(),
        keyring.stats().kms_calls - calls,
    )
}

fn report(label: &str, floor: f64, (rate, calls): (f64, u64)) {
    println!(
        "| {label} | {rate:>9.0} | {:.2} | {calls} | {:.5} |",
        rate / floor,
        calls as f64 / ROWS as f64
    );
}

/// A value's stand-in in the floor loops: same length, different bytes.
fn touched(value: &[u8]) -> Vec<u8> {
    value.iter().map(|b| b ^ 0x5A).collect()
}

/// The SQLite floor: chunks of 1,000 keys, each read and written back value by value with a
/// compare-and-swap in one immediate transaction, as the SQLite store does; rows/s.
fn sqlite_floor(path: &std::path::Path, table: &str) -> f64 {
    let mut db = rusqlite::Connection::open(path).unwrap();
    let started = Instant::now();
    for lo in (1..=ROWS).step_by(1000) {
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = tx
            .prepare_cached(&format!(
                "SELECT id, email, phone FROM {table} WHERE id >= ?1 AND id < ?2 ORDER BY id"
            ))
            .unwrap()
            .query_map([lo, lo + 1000], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (id, email, phone) in rows {
            for (column, old) in [("email", email), ("phone", phone)] {
                tx.prepare_cached(&format!(
                    "UPDATE {table} SET {column} = ?1 WHERE id = ?2 AND {column} = ?3"
                ))
                .unwrap()
                .execute(rusqlite::params![touched(&old), id, old])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    ROWS as f64 / started.elapsed().as_secs_f64()
}

/// The PostgreSQL floor: chunks of 1,000 keys, each read, then written back with one
/// compare-and-swap `UPDATE … FROM unnest(…)` per column in one transaction, as the PostgreSQL
/// store does; rows/s.
async fn pg_floor(url: &str, table: &str) -> f64 {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    for lo in (1..=ROWS).step_by(1000) {
        let tx = client.transaction().await.unwrap();
        let rows = tx
            .query(
                &format!(
                    "SELECT id, email, phone FROM {table} WHERE id >= $1 AND id < $2 ORDER BY id"
                ),
                &[&lo, &(lo + 1000)],
            )
            .await
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        for (i, column) in ["email", "phone"].into_iter().enumerate() {
            let old: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1 + i)).collect();
            let new: Vec<Vec<u8>> = old.iter().map(|v| touched(v)).collect();
            tx.query(
                &format!("UPDATE {table} AS t SET {column} = u.new FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u(id, new, old) WHERE t.id = u.id AND t.{column} = u.old RETURNING t.id"),
                &[&ids, &new, &old],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    ROWS as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if !sealkit_benches::selected("migrate") {
        return;
    }
    let rt = sealkit_benches::runtime(2);
    rt.block_on(async {
        let home = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
        let keyring = Keyring::builder(config).build().unwrap();
        let key = KeyUri::parse("local://bench").unwrap();
        keyring.create_key(&key).await.unwrap();
        let (ids, emails, phones) = values();
        println!("| job (100,000 rows × 2 columns) | rows/s | of the floor | KMS calls | KMS calls per row |");
        println!("|---|---|---|---|---|");

        // SQLite, one worker.
        let path = home.path().join("bench.db");
        {
            let mut db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB, phone BLOB)").unwrap();
            let tx = db.transaction().unwrap();
            for i in 0..ids.len() {
                tx.execute("INSERT INTO customers VALUES (?1, ?2, ?3)", rusqlite::params![ids[i], emails[i], phones[i]]).unwrap();
            }
            tx.commit().unwrap();
        }
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE floor (id INTEGER PRIMARY KEY, email BLOB, phone BLOB); INSERT INTO floor SELECT * FROM customers").unwrap();
        }
        let sqlite_floor_rate = sqlite_floor(&path, "floor");
        println!("| SQLite floor: read-modify-write, no cryptography | {sqlite_floor_rate:>9.0} | 1.00 | 0 | 0 |");
        let sqlite = |workers: usize| -> Vec<Arc<dyn Store>> {
            (0..workers).map(|_| Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap()) as Arc<dyn Store>).collect()
        };
        report("SQLite, legacy → KMS, 1 worker", sqlite_floor_rate, run(&keyring, sqlite(1), spec("to-kms", "customers", "aes-gcm-iv16", &key)).await);
        keyring.rotate_key(&key).await.unwrap();
        report("SQLite, rotation rewrap, 1 worker", sqlite_floor_rate, run(&keyring, sqlite(1), spec("rotate", "customers", "envelope", &key)).await);
        // Two workers on one SQLite file: conversions run in parallel, writes take turns.
        keyring.rotate_key(&key).await.unwrap();
        report("SQLite, rotation rewrap, 2 workers", sqlite_floor_rate, run(&keyring, sqlite(2), spec("rotate-2", "customers", "envelope", &key)).await);
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("DROP TABLE customers; CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB, phone BLOB)").unwrap();
            let tx = db.unchecked_transaction().unwrap();
            for i in 0..ids.len() {
                tx.execute("INSERT INTO customers VALUES (?1, ?2, ?3)", rusqlite::params![ids[i], emails[i], phones[i]]).unwrap();
            }
            tx.commit().unwrap();
        }
        report("SQLite, legacy → KMS, 2 workers", sqlite_floor_rate, run(&keyring, sqlite(2), spec("to-kms-2", "customers", "aes-gcm-iv16", &key)).await);

        // PostgreSQL, 1 and 2 workers.
        let Some(url) = peer("SEALKIT_TEST_PG_URL") else {
            eprintln!("skipped PostgreSQL: the peer is not running (cargo xtask peers up)");
            return;
        };
        for workers in [1usize, 2] {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let table = format!("bench_{}_{workers}", std::process::id());
            client.batch_execute(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, email BYTEA, phone BYTEA)")).await.unwrap();
            for start in (0..ids.len()).step_by(5000) {
                let end = (start + 5000).min(ids.len());
                client
                    .execute(
                        &format!("INSERT INTO {table} SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])"),
                        &[&ids[start..end].to_vec(), &emails[start..end].to_vec(), &phones[start..end].to_vec()],
                    )
                    .await
                    .unwrap();
            }
            let floor_table = format!("{table}_floor");
            client.batch_execute(&format!("CREATE TABLE {floor_table} AS SELECT * FROM {table}; ALTER TABLE {floor_table} ADD PRIMARY KEY (id)")).await.unwrap();
            let pg_floor_rate = pg_floor(&url, &floor_table).await;
            if workers == 1 {
                println!("| PostgreSQL floor: read-modify-write, no cryptography | {pg_floor_rate:>9.0} | 1.00 | 0 | 0 |");
            }
            let mut stores: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..workers {
                stores.push(Arc::new(PgStore::connect(&url).await.unwrap()));
            }
            report(&format!("PostgreSQL, legacy → KMS, {workers} worker(s)"), pg_floor_rate, run(&keyring, stores, spec(&format!("{table}-to-kms"), &table, "aes-gcm-iv16", &key)).await);
            keyring.rotate_key(&key).await.unwrap();
            let mut stores: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..workers {
                stores.push(Arc::new(PgStore::connect(&url).await.unwrap()));
            }
            report(&format!("PostgreSQL, rotation rewrap, {workers} worker(s)"), pg_floor_rate, run(&keyring, stores, spec(&format!("{table}-rotate"), &table, "envelope", &key)).await);
        }
    });
}
