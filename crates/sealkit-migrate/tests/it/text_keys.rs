//! Tables keyed by text and uuid, on both backends: SQLite `TEXT` and `UUID`-declared keys,
//! PostgreSQL `text`, `varchar` and `uuid` keys. Jobs walk them in key order; rows inserted
//! after a chunk was done (random keys land anywhere) are migrated by a plain re-run.

use std::collections::HashSet;
use std::sync::Arc;

use sealkit::{EncryptionContext, Keyring};
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_migrate::{ColumnSpec, JobSpec, PgStore, RowKey, SqliteStore, Store, Update, Value};

use crate::support::*;

/// A database and the key type of the table made on it.
enum KeyTable {
    Sqlite {
        dir: tempfile::TempDir,
        key_type: &'static str,
    },
    Postgres {
        url: String,
        key_type: &'static str,
    },
}

/// The `n`th row's key: a version-4 uuid spread over the whole key space, as an application's
/// random keys are.
fn key(n: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(n.wrapping_add(0x9e37_79b9)), mix(n ^ 0x5555_aaaa));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// The number the shared helpers make the email of key number `n` from.
fn id(n: u64) -> i64 {
    n as i64
}

impl KeyTable {
    /// Every table kind this run has: SQLite always, PostgreSQL when its peer is up.
    fn all() -> Vec<Self> {
        let mut out = vec![
            Self::Sqlite {
                dir: tempfile::tempdir().unwrap(),
                key_type: "TEXT",
            },
            Self::Sqlite {
                dir: tempfile::tempdir().unwrap(),
                key_type: "UUID",
            },
        ];
        if let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") {
            for key_type in ["uuid", "text", "varchar(64)"] {
                out.push(Self::Postgres {
                    url: url.clone(),
                    key_type,
                });
            }
        }
        out
    }

    fn name(&self) -> String {
        match self {
            Self::Sqlite { key_type, .. } => format!("sqlite {key_type}"),
            Self::Postgres { key_type, .. } => format!("postgres {key_type}"),
        }
    }

    fn sqlite(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db
    }

    async fn pg(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    async fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite { dir, .. } => {
                Self::sqlite(dir);
                let path = dir.path().join("app.db");
                Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap())
            }
            Self::Postgres { url, .. } => Arc::new(PgStore::connect(url).await.unwrap()),
        }
    }

    /// Runs `sql` (no parameters).
    async fn execute(&self, sql: &str) {
        match self {
            Self::Sqlite { dir, .. } => Self::sqlite(dir).execute_batch(sql).unwrap(),
            Self::Postgres { url, .. } => Self::pg(url).await.batch_execute(sql).await.unwrap(),
        }
    }

    /// A fresh table; returns its name.
    async fn create(&self) -> String {
        let table = unique("keyed").replace('-', "_");
        let (key_type, blob) = match self {
            Self::Sqlite { key_type, .. } => (*key_type, "BLOB"),
            Self::Postgres { key_type, .. } => (*key_type, "BYTEA"),
        };
        self.execute(&format!(
            "CREATE TABLE {table} (id {key_type} PRIMARY KEY, email {blob})"
        ))
        .await;
        table
    }

    /// Inserts legacy rows with key numbers `numbers`.
    async fn insert(&self, table: &str, numbers: impl Iterator<Item = u64>) {
        let rows: Vec<(String, Vec<u8>)> =
            numbers.map(|n| (key(n), legacy_email(id(n), 0))).collect();
        match self {
            Self::Sqlite { dir, .. } => {
                let mut db = Self::sqlite(dir);
                let tx = db.transaction().unwrap();
                for (k, email) in rows {
                    tx.execute(
                        &format!("INSERT INTO {table} VALUES (?1, ?2)"),
                        rusqlite::params![k, email],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            Self::Postgres { url, key_type } => {
                let (keys, emails): (Vec<String>, Vec<Vec<u8>>) = rows.into_iter().unzip();
                Self::pg(url)
                    .await
                    .execute(
                        &format!("INSERT INTO {table} SELECT k::{key_type}, e FROM unnest($1::text[], $2::bytea[]) AS u(k, e)"),
                        &[&keys, &emails],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Every row's key (as text) and email.
    async fn emails(&self, table: &str) -> Vec<(String, Vec<u8>)> {
        let sql = format!("SELECT CAST(id AS TEXT), email FROM {table}");
        match self {
            Self::Sqlite { dir, .. } => {
                let db = Self::sqlite(dir);
                let mut stmt = db.prepare(&sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Self::Postgres { url, .. } => Self::pg(url)
                .await
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }
}

fn email_job(table: &str, target: sealkit::KeyUri, chunk_rows: i64) -> JobSpec {
    let columns = vec!["email=aes-gcm-iv16".parse::<ColumnSpec>().unwrap()];
    let mut spec = JobSpec::new(&format!("{table}-job"), table, "id", columns, target).unwrap();
    spec.chunk_rows = chunk_rows;
    spec
}

/// Every row's email opens under its context (the key in its text form as `id`) to the email
/// of its key number, and the table holds exactly the key numbers `numbers`.
async fn check_emails(keyring: &Keyring, t: &KeyTable, table: &str, numbers: &[u64]) {
    let stored = t.emails(table).await;
    assert_eq!(stored.len(), numbers.len(), "{}", t.name());
    for n in numbers {
        let k = key(*n);
        let (_, sealed) = stored
            .iter()
            .find(|(stored_key, _)| *stored_key == k)
            .unwrap_or_else(|| panic!("{}: row {k} missing", t.name()));
        let ctx = EncryptionContext::parse(&format!("table={table},column=email,id={k}")).unwrap();
        let opened = keyring.open(sealed, &ctx).await.unwrap_or_else(|e| {
            panic!("{}: row {k} does not open: {e}", t.name());
        });
        assert_eq!(opened, email(id(*n), 0).as_bytes(), "{}", t.name());
    }
}

/// Two workers migrate every row exactly once; rows inserted after the run land inside
/// finished chunks and a plain re-run migrates exactly those; verify finds every value under
/// the target and reports deleted rows per key range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_uuid_keys_migrate_resume_and_verify_on_every_backend() {
    for t in KeyTable::all() {
        let name = t.name();
        let table = t.create().await;
        t.insert(&table, 0..230).await;
        let home = tempfile::tempdir().unwrap();
        let keyring = keyring(home.path());
        let target = target(&keyring, "textkeys").await;
        let spec = email_job(&table, target, 40);

        let mut workers = Vec::new();
        for w in 0..2 {
            let job = migrator(&keyring, spec.clone(), t.store().await);
            workers.push(tokio::spawn(async move {
                job.run(&format!("w{w}"), &quiet).await.unwrap()
            }));
        }
        let mut reports = Vec::new();
        for w in workers {
            reports.push(w.await.unwrap());
        }
        let mut seen = HashSet::new();
        for row in reports.iter().flat_map(|r| r.rows.iter()) {
            assert!(matches!(row, RowKey::Text(_)), "{name}: {row:?}");
            assert!(seen.insert(row.clone()), "{name}: {row} migrated twice");
        }
        assert_eq!(seen.len(), 230, "{name}");
        assert_eq!(
            reports.iter().map(|r| r.migrated).sum::<u64>(),
            230,
            "{name}"
        );
        let numbers: Vec<u64> = (0..230).collect();
        check_emails(&keyring, &t, &table, &numbers).await;

        // Random keys inserted after the run fall inside finished chunks.
        t.insert(&table, 1000..1025).await;
        let job = migrator(&keyring, spec.clone(), t.store().await);
        let status = job.status().await.unwrap();
        assert_eq!((status.pending, status.running), (0, 0), "{name}");
        assert_eq!(status.done, 6, "{name}: 230 rows in chunks of 40");
        let again = job.run("w1", &quiet).await.unwrap();
        assert_eq!(
            again.migrated, 25,
            "{name}: a plain re-run covers rows added since"
        );
        let rerun = job.run("w1", &quiet).await.unwrap();
        assert_eq!(rerun.chunks, 0, "{name}: nothing left to do");
        let numbers: Vec<u64> = (0..230).chain(1000..1025).collect();
        check_emails(&keyring, &t, &table, &numbers).await;
        let verify = job.verify().await.unwrap();
        assert_eq!(
            (verify.values, verify.problem_count),
            (255, 0),
            "{name}: {:?}",
            verify.problems
        );

        // Deleted rows are reported against the key range that held them.
        for n in [3, 4, 200] {
            t.execute(&format!(
                "DELETE FROM {table} WHERE CAST(id AS TEXT) = '{}'",
                key(n)
            ))
            .await;
        }
        let verify = job.verify().await.unwrap();
        assert_eq!(verify.vanished_rows, 3, "{name}: {:?}", verify.vanished);
        for (chunk, _) in &verify.vanished {
            assert!(chunk.keys.is_some(), "{name}: {chunk}");
            assert!(
                chunk.to_string().starts_with("keys from "),
                "{name}: {chunk}"
            );
        }
    }
}

/// The job's table access by text key: one row re-read by its key, and a compare-and-swap
/// that takes effect only on the value it read.
#[tokio::test]
async fn a_text_keyed_row_is_reread_and_swapped_by_its_key_on_every_backend() {
    for t in KeyTable::all() {
        let name = t.name();
        let table = t.create().await;
        t.insert(&table, 0..5).await;
        let home = tempfile::tempdir().unwrap();
        let keyring = keyring(home.path());
        let target = target(&keyring, "textkeys").await;
        let job = t.store().await.bind(&email_job(&table, target, 40));
        let pk = RowKey::Text(key(2));
        let row = job.row(&pk).await.unwrap().expect("row 2");
        assert_eq!(row.pk, pk, "{name}");
        let old = row.values[0].clone().unwrap();
        let stale = Update {
            pk: pk.clone(),
            column: 0,
            old: Value::Blob(b"not what is stored".to_vec()),
            new: Value::Blob(b"lost".to_vec()),
        };
        assert!(!job.swap(&stale).await.unwrap(), "{name}: stale value");
        let fresh = Update {
            old,
            new: Value::Blob(b"new".to_vec()),
            ..stale
        };
        assert!(job.swap(&fresh).await.unwrap(), "{name}");
        let row = job.row(&pk).await.unwrap().unwrap();
        assert_eq!(row.values[0], Some(Value::Blob(b"new".to_vec())), "{name}");
        assert!(
            job.row(&RowKey::Text(key(99))).await.unwrap().is_none(),
            "{name}"
        );
    }
}
