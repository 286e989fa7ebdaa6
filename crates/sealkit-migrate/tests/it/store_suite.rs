//! One store suite, run on both backends (SQLite and the PostgreSQL peer): several workers,
//! application writes racing the job (compare-and-swap conflicts), rows appended mid-run, and
//! a provider outage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sealkit::vault::{VaultAuth, VaultSettings, VaultTransit};
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};
use sealkit_conformance::peers::{peer_env, unique, vault_peer};
use sealkit_conformance::{FaultMode, FaultProxy};
use sealkit_migrate::{JobSpec, PgStore, SqliteStore, Store};

use crate::support::*;

/// A database the suite runs on: it makes tables of legacy customers and plays the
/// application (its own connection per call).
#[async_trait]
trait Backend: Send + Sync {
    /// A fresh table of `rows` legacy customers; returns its name.
    async fn fill(&self, rows: i64) -> String;
    /// A store with its own connection.
    async fn store(&self) -> Arc<dyn Store>;
    /// The application sets row `id`'s email.
    async fn set_email(&self, table: &str, id: i64, value: Vec<u8>);
    /// The application inserts legacy customer `id`.
    async fn insert(&self, table: &str, id: i64);
    /// The application deletes row `id`.
    async fn delete(&self, table: &str, id: i64);
    /// Every row's id and email.
    async fn emails(&self, table: &str) -> Vec<(i64, Vec<u8>)>;
    /// The database as a DEK store location (`[deks] store`).
    fn location(&self) -> String;
}

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn conn(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(self.dir.path().join("app.db")).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn fill(&self, rows: i64) -> String {
        let table = unique("customers").replace('-', "_");
        let mut db = self.conn();
        db.execute_batch(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, email BLOB, notes BLOB, phone BLOB)"
        ))
        .unwrap();
        let tx = db.transaction().unwrap();
        for id in 1..=rows {
            tx.execute(
                &format!("INSERT INTO {table} VALUES (?1, ?2, ?3, ?4)"),
                rusqlite::params![id, legacy_email(id, 0), legacy_note(id), phone(id)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        table
    }

    async fn store(&self) -> Arc<dyn Store> {
        let path = self.dir.path().join("app.db");
        Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap())
    }

    async fn set_email(&self, table: &str, id: i64, value: Vec<u8>) {
        self.conn()
            .execute(
                &format!("UPDATE {table} SET email = ?1 WHERE id = ?2"),
                rusqlite::params![value, id],
            )
            .unwrap();
    }

    async fn insert(&self, table: &str, id: i64) {
        self.conn()
            .execute(
                &format!("INSERT INTO {table} VALUES (?1, ?2, ?3, ?4)"),
                rusqlite::params![id, legacy_email(id, 0), legacy_note(id), phone(id)],
            )
            .unwrap();
    }

    async fn delete(&self, table: &str, id: i64) {
        self.conn()
            .execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])
            .unwrap();
    }

    fn location(&self) -> String {
        format!("sqlite:{}", self.dir.path().join("app.db").display())
    }

    async fn emails(&self, table: &str) -> Vec<(i64, Vec<u8>)> {
        let db = self.conn();
        let mut stmt = db
            .prepare(&format!("SELECT id, email FROM {table} ORDER BY id"))
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

struct Postgres {
    url: String,
}

impl Postgres {
    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn fill(&self, rows: i64) -> String {
        let table = unique("customers").replace('-', "_");
        let db = self.client().await;
        db.batch_execute(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, email BYTEA, notes BYTEA, phone BYTEA)"
        ))
        .await
        .unwrap();
        let ids: Vec<i64> = (1..=rows).collect();
        let emails: Vec<Vec<u8>> = ids.iter().map(|id| legacy_email(*id, 0)).collect();
        let notes: Vec<Vec<u8>> = ids.iter().map(|id| legacy_note(*id)).collect();
        let phones: Vec<Option<Vec<u8>>> = ids.iter().map(|id| phone(*id)).collect();
        db.execute(
            &format!("INSERT INTO {table} SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])"),
            &[&ids, &emails, &notes, &phones],
        )
        .await
        .unwrap();
        table
    }

    async fn store(&self) -> Arc<dyn Store> {
        Arc::new(PgStore::connect(&self.url).await.unwrap())
    }

    async fn set_email(&self, table: &str, id: i64, value: Vec<u8>) {
        self.client()
            .await
            .execute(
                &format!("UPDATE {table} SET email = $1 WHERE id = $2"),
                &[&value, &id],
            )
            .await
            .unwrap();
    }

    async fn insert(&self, table: &str, id: i64) {
        self.client()
            .await
            .execute(
                &format!("INSERT INTO {table} VALUES ($1, $2, $3, $4)"),
                &[&id, &legacy_email(id, 0), &legacy_note(id), &phone(id)],
            )
            .await
            .unwrap();
    }

    async fn delete(&self, table: &str, id: i64) {
        self.client()
            .await
            .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
            .await
            .unwrap();
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    async fn emails(&self, table: &str) -> Vec<(i64, Vec<u8>)> {
        self.client()
            .await
            .query(&format!("SELECT id, email FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn phone(id: i64) -> Option<Vec<u8>> {
    (id % 10 != 0).then(|| format!("+1-555-{id:04}").into_bytes())
}

/// Every backend this run has: SQLite always, PostgreSQL when its peer is up.
fn backends() -> Vec<(&'static str, Box<dyn Backend>)> {
    let mut out: Vec<(&'static str, Box<dyn Backend>)> = vec![("sqlite", Box::new(Sqlite::new()))];
    if let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") {
        out.push(("postgres", Box::new(Postgres { url })));
    }
    out
}

/// A fresh table of `rows` legacy customers on `backend`, and a local keyring (in its own
/// directory, returned to keep it alive) with the target key.
async fn setup(backend: &dyn Backend, rows: i64) -> (String, tempfile::TempDir, Keyring, KeyUri) {
    let table = backend.fill(rows).await;
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path());
    let key = target(&keyring, "suite").await;
    (table, home, keyring, key)
}

fn spec(table: &str, target: KeyUri, chunk_rows: i64) -> JobSpec {
    let mut spec = legacy_job(&format!("{table}-job"), target);
    spec.table = table.to_string();
    spec.chunk_rows = chunk_rows;
    spec
}

fn ctx(table: &str, id: i64) -> EncryptionContext {
    EncryptionContext::parse(&format!("table={table},column=email,id={id}")).unwrap()
}

/// Each row's email opens to what `expected` says (the original one otherwise).
async fn check_emails(
    keyring: &Keyring,
    backend: &dyn Backend,
    table: &str,
    rows: i64,
    expected: &HashMap<i64, String>,
) {
    let stored = backend.emails(table).await;
    assert_eq!(stored.len() as i64, rows, "{table}");
    for (id, value) in stored {
        let want = expected.get(&id).cloned().unwrap_or_else(|| email(id, 0));
        let got = keyring.open(&value, &ctx(table, id)).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), want, "{table} row {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_finish_the_job_exactly_once_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 6_000;
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let mut tasks = Vec::new();
        for w in 0..2 {
            let job = migrator(
                &keyring,
                spec(&table, key.clone(), 250),
                backend.store().await,
            );
            tasks.push(tokio::spawn(async move {
                job.run(&format!("worker-{w}"), &quiet).await.unwrap()
            }));
        }
        let mut seen = HashSet::new();
        let mut migrated = 0;
        for t in tasks {
            let report = t.await.unwrap();
            migrated += report.migrated;
            for row in report.rows {
                assert!(
                    seen.insert(row.clone()),
                    "{name}: row {row} migrated by two workers"
                );
            }
        }
        assert_eq!(seen.len() as i64, rows, "{name}: every row migrated");
        assert_eq!(migrated, (rows * 3 - rows / 10) as u64, "{name}");
        let check = migrator(&keyring, spec(&table, key, 250), backend.store().await);
        let verify = check.verify().await.unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);
        let status = check.status().await.unwrap();
        assert_eq!((status.pending, status.running), (0, 0), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_writes_during_a_run_are_never_overwritten_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 2_000;
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let job = migrator(
            &keyring,
            spec(&table, key.clone(), 100),
            backend.store().await,
        );
        let backend: Arc<dyn Backend> = Arc::from(backend);
        let writer = {
            let (backend, table, app, key) =
                (backend.clone(), table.clone(), keyring.clone(), key.clone());
            tokio::spawn(async move {
                // Half the application's writes are envelopes (hybrid instances), half legacy.
                let mut expected = HashMap::new();
                for round in 1..=150u32 {
                    let id = i64::from(round * 13) % rows + 1;
                    let value = if round % 2 == 0 {
                        app.seal_with(&key, email(id, round).as_bytes(), &ctx(&table, id))
                            .await
                            .unwrap()
                    } else {
                        legacy_email(id, round)
                    };
                    backend.set_email(&table, id, value).await;
                    expected.insert(id, email(id, round));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                expected
            })
        };
        let first = job.run("w1", &quiet).await.unwrap();
        let expected = writer.await.unwrap();
        // Legacy writes that landed after their chunk was done are caught by a sweep.
        let sweep = job.sweep("w1", &quiet).await.unwrap();
        assert_eq!(first.failed + sweep.failed, 0, "{name}");
        let verify = job.verify().await.unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);
        check_emails(&keyring, backend.as_ref(), &table, rows, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_appended_mid_run_are_migrated_by_that_run_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 1_000;
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let job = migrator(
            &keyring,
            spec(&table, key.clone(), 100),
            backend.store().await,
        );
        let backend: Arc<dyn Backend> = Arc::from(backend);
        // After the first chunk, the application appends 250 rows (past every chunk the job
        // knew when it started); the run waits for them before it goes on.
        let (appended_tx, appended_rx) = std::sync::mpsc::channel::<()>();
        let appended_rx = std::sync::Mutex::new(appended_rx);
        let appender = {
            let (backend, table) = (backend.clone(), table.clone());
            let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                start_rx.await.unwrap();
                for id in rows + 1..=rows + 250 {
                    backend.insert(&table, id).await;
                }
                appended_tx.send(()).unwrap();
            });
            (task, std::sync::Mutex::new(Some(start_tx)))
        };
        let started = AtomicBool::new(false);
        let progress = |_: &sealkit_migrate::Counts| {
            if !started.swap(true, Ordering::SeqCst) {
                if let Some(start) = appender.1.lock().unwrap().take() {
                    start.send(()).unwrap();
                }
                let rx = appended_rx.lock().unwrap();
                rx.recv_timeout(Duration::from_secs(60)).unwrap();
            }
        };
        let report = job.run("w1", &progress).await.unwrap();
        appender.0.await.unwrap();
        let total = rows + 250;
        assert_eq!(
            report.migrated,
            (total * 3 - total / 10) as u64,
            "{name}: the run migrated the appended rows too"
        );
        let verify = job.verify().await.unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);
        check_emails(&keyring, backend.as_ref(), &table, total, &HashMap::new()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_outage_pauses_the_job_until_the_kms_is_back_on_every_backend() {
    let Some((vault_addr, token)) = vault_peer() else {
        return;
    };
    for (name, backend) in backends() {
        let rows = 1_500;
        let table = backend.fill(rows).await;
        let proxy = FaultProxy::start(vault_addr.trim_start_matches("http://").parse().unwrap())
            .await
            .unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config
            .provider("local")
            .set("home", home.path().to_str().unwrap());
        config.resilience.max_attempts = 2;
        config.resilience.initial_backoff_ms = 5;
        config.resilience.timeout_ms = 500;
        config.resilience.open_secs = 1;
        config.cache.max_messages = 500; // several data keys: the job needs the KMS as it goes
        let vault = VaultTransit::new(VaultSettings::new(
            proxy.url(),
            VaultAuth::Token(token.clone().into()),
        ));
        let keyring = Keyring::builder(config)
            .with_managed_provider(Arc::new(vault))
            .build()
            .unwrap();
        let key = KeyUri::parse(&format!("vault-transit://transit/{}", unique("outage"))).unwrap();
        keyring.create_key(&key).await.unwrap();
        proxy.set_mode(FaultMode::Reset);
        let job = Arc::new(
            migrator(
                &keyring,
                spec(&table, key.clone(), 250),
                backend.store().await,
            )
            .with_max_pause(Duration::from_secs(60)),
        );
        let running = {
            let job = job.clone();
            tokio::spawn(async move { job.run("w1", &quiet).await })
        };
        let mut note = None;
        for _ in 0..200 {
            // (Until the run has recorded the job, status says it does not exist.)
            if let Ok(status) = job.status().await {
                note = status.note;
            }
            if note.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let note = note.unwrap_or_else(|| panic!("{name}: the job says it is paused"));
        assert!(
            note.contains("paused") && note.contains("unavailable"),
            "{name}: {note}"
        );
        assert!(!running.is_finished(), "{name}: a paused job waits");
        proxy.set_mode(FaultMode::Pass);
        let report = tokio::time::timeout(Duration::from_secs(90), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(report.pauses >= 1, "{name}");
        assert_eq!(report.migrated, (rows * 3 - rows / 10) as u64, "{name}");
        assert_eq!(
            job.status().await.unwrap().note,
            None,
            "{name}: note cleared"
        );
        assert_eq!(job.verify().await.unwrap().problem_count, 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_appended_after_a_finished_run_are_migrated_by_a_plain_rerun_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 950; // the last chunk, 900..1000, has room for more keys
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let job = migrator(
            &keyring,
            spec(&table, key.clone(), 100),
            backend.store().await,
        );
        job.run("w1", &quiet).await.unwrap();
        for id in rows + 1..=rows + 120 {
            backend.insert(&table, id).await;
        }
        let again = job.run("w1", &quiet).await.unwrap();
        assert_eq!(
            again.migrated,
            120 * 3 - 12,
            "{name}: a plain re-run covers every row added since"
        );
        let verify = job.verify().await.unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);
        check_emails(
            &keyring,
            backend.as_ref(),
            &table,
            rows + 120,
            &HashMap::new(),
        )
        .await;
    }
}

/// A mistake in the job (a column the table lacks) stops the run at once with an error that
/// says what to fix; it is not an outage to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_stops_the_job_at_once_on_every_backend() {
    for (name, backend) in backends() {
        let (table, _home, keyring, key) = setup(backend.as_ref(), 100).await;
        let mut wrong = spec(&table, key.clone(), 50);
        wrong.columns[0] = "emial=aes-gcm-iv16".parse().unwrap();
        let job = migrator(&keyring, wrong, backend.store().await)
            .with_max_pause(Duration::from_secs(120));
        let err = tokio::time::timeout(Duration::from_secs(60), job.run("w1", &quiet))
            .await
            .unwrap_or_else(|_| panic!("{name}: the job waited instead of stopping"))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            sealkit::ErrorKind::Misconfigured,
            "{name}: {err}"
        );
        assert!(err.to_string().contains("emial"), "{name}: {err}");
        // Not paused; on PostgreSQL the catalog check refuses the job before recording it.
        match job.status().await {
            Ok(status) => assert_eq!(status.note, None, "{name}: not paused"),
            Err(e) => assert_eq!(e.kind(), sealkit::ErrorKind::NotFound, "{name}: {e}"),
        }
    }
}

/// A mistyped SQLite path is an error, and creates no empty database.
#[tokio::test]
async fn a_mistyped_sqlite_path_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.dbb");
    let err = sealkit_migrate::open_store(path.to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sealkit::ErrorKind::Misconfigured, "{err}");
    assert!(err.to_string().contains("--db"), "{err}");
    assert!(!path.exists(), "no empty database was created");
}

/// A worker that dies holding a chunk: the others wait for it instead of reporting the job
/// done, status shows the held chunk, and once its lease expires they take it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_chunk_is_waited_for_and_taken_over_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 400;
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let mut job_spec = spec(&table, key.clone(), 100);
        job_spec.lease_secs = 3;
        // The dead worker claimed the first chunk and never came back.
        let ledger = backend.store().await.bind(&job_spec);
        ledger.prepare().await.unwrap();
        let held = ledger.claim("dead").await.unwrap().expect("a chunk");
        let status = ledger.counts().await.unwrap();
        assert_eq!(status.held.len(), 1, "{name}");
        assert_eq!(status.held[0].worker, "dead", "{name}");
        assert_eq!(status.held[0].chunk, held, "{name}");
        let job = migrator(&keyring, job_spec, backend.store().await);
        let report = tokio::time::timeout(Duration::from_secs(60), job.run("w1", &quiet))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            report.migrated,
            (rows * 3 - rows / 10) as u64,
            "{name}: the run took over the dead worker's chunk"
        );
        let status = job.status().await.unwrap();
        assert_eq!((status.pending, status.running), (0, 0), "{name}");
        assert!(status.held.is_empty(), "{name}");
    }
}

/// A wrong or missing legacy key refuses the run at once, with nothing changed; values that
/// failed are retried by the next plain run, and failures are not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_key_problems_are_refused_and_failed_values_retried_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 300;
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let store = backend.store().await;
        // A wrong key: refused before any chunk is done.
        let wrong = sealkit_migrate::Migrator::new(
            keyring.clone(),
            spec(&table, key.clone(), 100),
            store.clone(),
        )
        .with_legacy_key(sealkit::DataKey::from_bytes([0x99; 32]));
        let err = wrong.run("w1", &quiet).await.unwrap_err();
        assert_eq!(
            err.kind(),
            sealkit::ErrorKind::Misconfigured,
            "{name}: {err}"
        );
        assert!(err.to_string().contains("email"), "{name}: {err}");
        assert_eq!(
            wrong.status().await.unwrap().done,
            0,
            "{name}: nothing was done"
        );
        // No key at all: refused too.
        let missing = sealkit_migrate::Migrator::new(
            keyring.clone(),
            spec(&table, key.clone(), 100),
            store.clone(),
        );
        let err = missing.run("w1", &quiet).await.unwrap_err();
        assert_eq!(
            err.kind(),
            sealkit::ErrorKind::Misconfigured,
            "{name}: {err}"
        );

        // Three values that do not open with the right key: counted as failed, left as
        // they are.
        for id in [5, 150, 280] {
            backend
                .set_email(&table, id, b"not a ciphertext at all, just bytes".to_vec())
                .await;
        }
        let job = migrator(&keyring, spec(&table, key.clone(), 100), store.clone());
        let first = job.run("w1", &quiet).await.unwrap();
        assert_eq!(first.failed, 3, "{name}");
        assert_eq!(job.status().await.unwrap().failed, 3, "{name}");
        // The application rewrites them properly; a plain run (no --sweep) retries them,
        // and the failure count starts afresh instead of piling up.
        for id in [5, 150, 280] {
            backend.set_email(&table, id, legacy_email(id, 0)).await;
        }
        let second = job.run("w1", &quiet).await.unwrap();
        assert_eq!(second.migrated, 3, "{name}");
        assert_eq!(second.failed, 0, "{name}");
        assert_eq!(job.status().await.unwrap().failed, 0, "{name}");
        assert_eq!(job.verify().await.unwrap().problem_count, 0, "{name}");
    }
}

/// `status` of a job the database has never seen is an error, not zeros.
#[tokio::test]
async fn the_status_of_an_unknown_job_is_not_found_on_every_backend() {
    for (name, backend) in backends() {
        let (table, _home, keyring, key) = setup(backend.as_ref(), 10).await;
        let job = migrator(&keyring, spec(&table, key, 100), backend.store().await);
        let err = job.status().await.unwrap_err();
        assert_eq!(err.kind(), sealkit::ErrorKind::NotFound, "{name}: {err}");
        assert!(err.to_string().contains("migrate run"), "{name}: {err}");
    }
}

/// `verify` reports its progress: rows read of the table's total, values checked, monotonic,
/// ending at the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_progress_up_to_the_tables_row_count_on_every_backend() {
    for (name, backend) in backends() {
        let rows = 12_000; // more than one scan batch of 5,000
        let (table, _home, keyring, key) = setup(backend.as_ref(), rows).await;
        let job = migrator(&keyring, spec(&table, key, 4_000), backend.store().await);
        job.run("w1", &quiet).await.unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let report = job
            .verify_with_progress(&|p| seen.lock().unwrap().push(*p))
            .await
            .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.first().unwrap().rows, 0, "{name}");
        assert!(
            seen.len() >= 4,
            "{name}: one report per batch of rows: {seen:?}"
        );
        assert!(
            seen.windows(2)
                .all(|w| w[0].rows <= w[1].rows && w[0].values <= w[1].values)
        );
        let last = seen.last().unwrap();
        assert_eq!(
            (last.rows, last.total_rows),
            (rows as u64, rows as u64),
            "{name}"
        );
        assert_eq!(last.values, report.values, "{name}");
    }
}

/// `verify` reports rows the job processed that are gone since, per key range; a re-run does
/// not bring them back and appended rows do not hide them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_rows_deleted_since_the_job_processed_them_on_every_backend() {
    for (name, backend) in backends() {
        let (table, _home, keyring, key) = setup(backend.as_ref(), 300).await;
        let job = migrator(&keyring, spec(&table, key, 100), backend.store().await);
        job.run("w1", &quiet).await.unwrap();
        let clean = job.verify().await.unwrap();
        assert_eq!((clean.vanished_rows, clean.problem_count), (0, 0), "{name}");
        for id in [5, 6, 7, 150] {
            backend.delete(&table, id).await;
        }
        backend.insert(&table, 301).await; // appended after the run: not counted as seen
        let report = job.verify().await.unwrap();
        assert_eq!(report.vanished_rows, 4, "{name}: {:?}", report.vanished);
        let ranges: Vec<(i64, u64)> = report.vanished.iter().map(|(c, n)| (c.lo, *n)).collect();
        assert_eq!(ranges.len(), 2, "{name}: {ranges:?}");
        assert_eq!(ranges[0].1, 3, "{name}: {ranges:?}");
        assert_eq!(ranges[1].1, 1, "{name}: {ranges:?}");
        assert_eq!(
            report.problem_count, 3,
            "{name}: the appended row's three legacy values are not migrated yet"
        );
    }
}

/// A keyring whose DEK store is a table of `backend`'s database, with local keys in `home`
/// and, as the provider a move goes to, a second local store (`local-b://`) in `other`.
async fn compact_keyring(
    backend: &dyn Backend,
    table: &str,
    home: &std::path::Path,
    other: &std::path::Path,
) -> Keyring {
    let mut config = Config::default();
    config.provider("local").set("home", home.to_str().unwrap());
    config.deks.store = Some(backend.location());
    config.deks.table = format!("{table}_deks");
    let second = sealkit::local::LocalKeyStore::open(other, None)
        .unwrap()
        .with_scheme("local-b")
        .unwrap();
    Keyring::builder(config)
        .with_managed_provider(Arc::new(second))
        .build_async()
        .await
        .unwrap()
}

/// Compact envelopes in a real table: a job converts legacy values to compact envelopes; a KEK
/// rotation and a provider move then rewrap the DEK store only — every data value compared
/// byte for byte before and after, the cost one provider call per DEK — and verify checks the
/// DEKs' keys; a last job converts back to the full layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_jobs_rotations_and_moves_leave_data_rows_alone_on_every_backend() {
    for (name, backend) in backends() {
        let table = backend.fill(300).await;
        let (home, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let keyring = compact_keyring(backend.as_ref(), &table, home.path(), other.path()).await;
        let key = target(&keyring, "compact").await;
        let mut to_compact = spec(&table, key.clone(), 100);
        to_compact.layout = Some(sealkit::Layout::Compact);
        let job = migrator(&keyring, to_compact.clone(), backend.store().await);
        let report = job.run("w1", &quiet).await.unwrap();
        assert_eq!(report.failed, 0, "{name}");
        let compact = backend.emails(&table).await;
        for (id, value) in &compact {
            assert_eq!(value.len(), email(*id, 0).len() + 49, "{name}: compact");
        }
        let verify = job.verify().await.unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);

        // KEK rotation: DEK rows only.
        let deks = keyring
            .dek_stats()
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum::<u64>();
        keyring.rotate_key(&key).await.unwrap();
        let stale = migrator(&keyring, to_compact.clone(), backend.store().await)
            .verify()
            .await
            .unwrap();
        assert_eq!(
            (stale.problem_count, stale.values),
            (870, 870),
            "{name}: every DEK under the old version (300 rows, 30 phones NULL)"
        );
        let calls = keyring.stats().kms_calls;
        let rewrapped = keyring.rewrap_deks(&key, &key, false).await.unwrap();
        assert_eq!(rewrapped.rewrapped, deks, "{name}");
        assert!(
            keyring.stats().kms_calls - calls <= deks + 1,
            "{name}: a call per DEK"
        );
        assert_eq!(
            backend.emails(&table).await,
            compact,
            "{name}: no data row written"
        );
        let verify = migrator(&keyring, to_compact.clone(), backend.store().await)
            .verify()
            .await
            .unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);

        // Provider move with a dual wrap, then the cut-over.
        let moved = KeyUri::parse("local-b://compact").unwrap();
        keyring.create_key(&moved).await.unwrap();
        keyring.rewrap_deks(&key, &moved, true).await.unwrap();
        assert_eq!(keyring.drop_dek_wraps(&key).await.unwrap(), deks, "{name}");
        assert_eq!(
            backend.emails(&table).await,
            compact,
            "{name}: no data row written"
        );
        let mut on_moved = to_compact.clone();
        on_moved.target = moved.clone();
        let verify = migrator(&keyring, on_moved, backend.store().await)
            .verify()
            .await
            .unwrap();
        assert_eq!(verify.problem_count, 0, "{name}: {:?}", verify.problems);

        // Back to the self-contained layout.
        let mut to_full = spec(&table, moved.clone(), 100);
        to_full.job = format!("{table}-full");
        to_full.layout = Some(sealkit::Layout::Full);
        let job = migrator(&keyring, to_full, backend.store().await);
        assert_eq!(job.run("w1", &quiet).await.unwrap().failed, 0, "{name}");
        assert_eq!(job.verify().await.unwrap().problem_count, 0, "{name}");
        for (id, value) in backend.emails(&table).await {
            assert!(value.len() > email(id, 0).len() + 100, "{name}: full again");
        }
    }
}

/// After a key compromise, a reseal job renews compact values whose DEKs were made under the
/// exposed version: each gets a new DEK under the new primary, stays compact and opens; a
/// second run finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_renews_the_deks_of_compact_values_on_every_backend() {
    for (name, backend) in backends() {
        let table = backend.fill(120).await;
        let (home, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let keyring = compact_keyring(backend.as_ref(), &table, home.path(), other.path()).await;
        let key = target(&keyring, "reseal").await;
        let mut to_compact = spec(&table, key.clone(), 50);
        to_compact.layout = Some(sealkit::Layout::Compact);
        migrator(&keyring, to_compact, backend.store().await)
            .run("w1", &quiet)
            .await
            .unwrap();
        let exposed: HashSet<Vec<u8>> = backend
            .emails(&table)
            .await
            .into_iter()
            .map(|(_, v)| v[5..21].to_vec())
            .collect();
        keyring.rotate_key(&key).await.unwrap();
        let mut reseal = spec(&table, key.clone(), 50);
        reseal.job = format!("{table}-reseal");
        reseal.columns = vec!["email=envelope".parse().unwrap()];
        reseal.reseal = true;
        let job = migrator(&keyring, reseal.clone(), backend.store().await);
        let report = job.run("w1", &quiet).await.unwrap();
        assert_eq!((report.migrated, report.failed), (120, 0), "{name}");
        for (id, value) in backend.emails(&table).await {
            assert_eq!(
                value.len(),
                email(id, 0).len() + 49,
                "{name}: still compact"
            );
            assert!(!exposed.contains(&value[5..21]), "{name}: a new DEK");
        }
        assert_eq!(job.verify().await.unwrap().problem_count, 0, "{name}");
        reseal.job = format!("{table}-reseal-again");
        let again = migrator(&keyring, reseal, backend.store().await)
            .run("w1", &quiet)
            .await
            .unwrap();
        assert_eq!((again.migrated, again.skipped), (0, 120), "{name}");
    }
}
