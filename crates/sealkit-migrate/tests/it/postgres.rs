//! Jobs over the PostgreSQL peer: several workers, and jobs one after another on one table.
//! (The provider outage mid-run is in the store suite, on both backends.)

use std::collections::HashSet;
use std::sync::Arc;

use sealkit::KeyUri;
use sealkit_conformance::peers::{peer_env, unique};
use sealkit_migrate::{PgStore, Store};

use crate::support::*;

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A fresh table of `rows` legacy customers; returns its name.
async fn fill(url: &str, rows: i64) -> String {
    let table = unique("customers").replace('-', "_");
    let db = client(url).await;
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, email BYTEA, notes BYTEA, phone BYTEA)"
    ))
    .await
    .unwrap();
    for start in (1..=rows).step_by(1000) {
        let ids: Vec<i64> = (start..(start + 1000).min(rows + 1)).collect();
        let emails: Vec<Vec<u8>> = ids.iter().map(|id| legacy_email(*id, 0)).collect();
        let notes: Vec<Vec<u8>> = ids.iter().map(|id| legacy_note(*id)).collect();
        let phones: Vec<Option<Vec<u8>>> = ids
            .iter()
            .map(|id| (id % 10 != 0).then(|| format!("+1-555-{id:04}").into_bytes()))
            .collect();
        db.execute(
            &format!("INSERT INTO {table} SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])"),
            &[&ids, &emails, &notes, &phones],
        )
        .await
        .unwrap();
    }
    table
}

fn job(table: &str, name: &str, target: KeyUri) -> sealkit_migrate::JobSpec {
    let mut spec = legacy_job(name, target);
    spec.table = table.to_string();
    spec.chunk_rows = 500;
    spec
}

async fn workers_finish_the_job_exactly_once(workers: usize) {
    let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let rows = 12_000;
    let table = fill(&url, rows).await;
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path());
    let key = target(&keyring, "pg").await;
    let name = format!("{table}-job");
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
        let migrator = migrator(&keyring, job(&table, &name, key.clone()), store);
        tasks.push(tokio::spawn(async move {
            migrator.run(&format!("worker-{w}"), &quiet).await.unwrap()
        }));
    }
    let mut seen = HashSet::new();
    let mut migrated = 0;
    let mut busy = 0;
    for t in tasks {
        let report = t.await.unwrap();
        migrated += report.migrated;
        busy += usize::from(report.chunks > 0);
        for row in report.rows {
            assert!(
                seen.insert(row.clone()),
                "row {row} migrated by two workers"
            );
        }
    }
    assert_eq!(seen.len() as i64, rows, "every row migrated");
    assert_eq!(migrated, (rows * 3 - rows / 10) as u64);
    assert!(busy >= 2, "the chunks were shared between workers");
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
    let check = migrator(&keyring, job(&table, &name, key), store);
    let verify = check.verify().await.unwrap();
    assert_eq!(verify.problem_count, 0, "{:?}", verify.problems);
    let status = check.status().await.unwrap();
    assert_eq!((status.pending, status.running), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_job() {
    workers_finish_the_job_exactly_once(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_job() {
    workers_finish_the_job_exactly_once(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_then_rotation_jobs_on_one_table() {
    let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let table = fill(&url, 3000).await;
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path());
    let key = target(&keyring, "pg-rotation").await;
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
    let first = migrator(
        &keyring,
        job(&table, &format!("{table}-to-kms"), key.clone()),
        store.clone(),
    );
    assert_eq!(
        first.run("w1", &quiet).await.unwrap().migrated,
        3000 * 3 - 300
    );
    keyring.rotate_key(&key).await.unwrap();
    let columns = vec![
        "email=envelope".parse().unwrap(),
        "notes=envelope".parse().unwrap(),
        "phone=envelope".parse().unwrap(),
    ];
    let mut spec = sealkit_migrate::JobSpec::new(
        &format!("{table}-rotate"),
        &table,
        "id",
        columns,
        key.clone(),
    )
    .unwrap();
    spec.chunk_rows = 500;
    let second = migrator(&keyring, spec, store);
    assert_eq!(
        second.run("w1", &quiet).await.unwrap().migrated,
        3000 * 3 - 300
    );
    assert_eq!(second.verify().await.unwrap().problem_count, 0);
}

/// Four workers started together on a database that has no job tables yet (a fresh schema)
/// all succeed: creating the tables is serialised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_starting_together_on_a_fresh_database_all_succeed() {
    let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let schema = unique("fresh").replace('-', "_");
    client(&url)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    // Every session of this test works in the fresh schema.
    let scoped = format!("{url}?options=-csearch_path%3D{schema}");
    let table = fill(&scoped, 2_000).await;
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path());
    let key = target(&keyring, "fresh").await;
    let name = format!("{table}-job");
    let mut stores = Vec::new();
    for _ in 0..4 {
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&scoped).await.unwrap());
        stores.push(store);
    }
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            let migrator = migrator(&keyring, job(&table, &name, key.clone()), store);
            tokio::spawn(async move { migrator.run(&format!("worker-{w}"), &quiet).await })
        })
        .collect();
    let mut migrated = 0;
    for task in tasks {
        migrated += task.await.unwrap().expect("every worker succeeds").migrated;
    }
    assert_eq!(migrated, 2_000 * 3 - 200);
}

/// PostgreSQL column types: an `integer` key and `text` columns holding base64 and hex
/// ciphertexts migrate, the envelopes written back as text in the same encodings; a `numeric`
/// key, a text column without a declared encoding, or another type is a clear error naming the
/// column and its type, before anything is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_keys_and_text_columns_migrate_and_other_types_are_refused_clearly() {
    use base64::Engine;
    use sealkit_migrate::{ColumnSpec, StoredEncoding};
    let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let db = client(&url).await;
    let table = unique("texty").replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id SERIAL PRIMARY KEY, email TEXT, phone VARCHAR(400), odd INTEGER)"
    ))
    .await
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for id in 1..=300i64 {
        db.execute(
            &format!("INSERT INTO {table} (email, phone) VALUES ($1, $2)"),
            &[
                &b64.encode(legacy_email(id, 0)),
                &hex::encode(legacy_note(id)),
            ],
        )
        .await
        .unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let keyring = keyring(home.path());
    let key = target(&keyring, "texty").await;
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
    let columns = vec![
        ColumnSpec::new("email", "aes-gcm-iv16".parse().unwrap())
            .unwrap()
            .stored_as(StoredEncoding::Base64),
        ColumnSpec::new("phone", "fernet".parse().unwrap())
            .unwrap()
            .stored_as(StoredEncoding::Hex),
    ];
    let mut spec =
        sealkit_migrate::JobSpec::new(&table, &table, "id", columns, key.clone()).unwrap();
    spec.chunk_rows = 100;
    let job = migrator(&keyring, spec.clone(), store.clone());
    let report = job.run("w1", &quiet).await.unwrap();
    assert_eq!(report.migrated, 600);
    assert_eq!(job.verify().await.unwrap().problem_count, 0);
    let rows = db
        .query(
            &format!("SELECT id::bigint, email, phone FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let (id, email_text, phone_text): (i64, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let sealed = b64.decode(&email_text).expect("written back as base64");
        let ctx = sealkit::EncryptionContext::parse(&format!("table={table},column=email,id={id}"))
            .unwrap();
        assert_eq!(
            keyring.open(&sealed, &ctx).await.unwrap(),
            email(id, 0).as_bytes()
        );
        let sealed = hex::decode(&phone_text).expect("written back as hex");
        let ctx = sealkit::EncryptionContext::parse(&format!("table={table},column=phone,id={id}"))
            .unwrap();
        assert_eq!(
            keyring.open(&sealed, &ctx).await.unwrap(),
            note(id).as_bytes()
        );
    }

    // Clear refusals, naming the column and its type.
    let refused = |columns: Vec<ColumnSpec>, pk: &'static str, job_name: &'static str| {
        let (keyring, store, key, table) = (&keyring, store.clone(), key.clone(), table.clone());
        async move {
            let job_name = unique(job_name);
            let spec = sealkit_migrate::JobSpec::new(&job_name, &table, pk, columns, key).unwrap();
            migrator(keyring, spec, store)
                .run("w1", &quiet)
                .await
                .unwrap_err()
        }
    };
    let bare_text = refused(
        vec![ColumnSpec::new("email", "aes-gcm-iv16".parse().unwrap()).unwrap()],
        "id",
        "bare-text",
    )
    .await;
    assert_eq!(bare_text.kind(), sealkit::ErrorKind::Misconfigured);
    assert!(
        bare_text.to_string().contains("email=aes-gcm-iv16@base64"),
        "{bare_text}"
    );
    let integer_column = refused(
        vec![ColumnSpec::new("odd", "aes-gcm-iv16".parse().unwrap()).unwrap()],
        "id",
        "odd-column",
    )
    .await;
    assert!(
        integer_column.to_string().contains("column odd"),
        "{integer_column}"
    );
    assert!(
        integer_column.to_string().contains("integer"),
        "{integer_column}"
    );
    let numeric_table = unique("numerickey").replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE {numeric_table} (id NUMERIC PRIMARY KEY, email BYTEA)"
    ))
    .await
    .unwrap();
    let spec = sealkit_migrate::JobSpec::new(
        &unique("numeric-key"),
        &numeric_table,
        "id",
        vec![ColumnSpec::new("email", "aes-gcm-iv16".parse().unwrap()).unwrap()],
        key.clone(),
    )
    .unwrap();
    let numeric_key = migrator(&keyring, spec, store.clone())
        .run("w1", &quiet)
        .await
        .unwrap_err();
    assert_eq!(numeric_key.kind(), sealkit::ErrorKind::Misconfigured);
    assert!(
        numeric_key.to_string().contains("key column id")
            && numeric_key.to_string().contains("numeric"),
        "{numeric_key}"
    );
}
