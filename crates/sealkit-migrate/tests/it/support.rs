//! Shared helpers: sample data, keyrings, jobs.

use std::sync::Arc;

use sealkit::core::legacy::{self, LegacyFormat, fernet};
use sealkit::random::OsRandom;
use sealkit::{Config, DataKey, KeyUri, Keyring};
use sealkit_migrate::{ColumnSpec, JobSpec, Migrator, Store};

pub(crate) const LEGACY_KEY: [u8; 32] = [0x42; 32];

pub(crate) fn legacy_key() -> DataKey {
    DataKey::from_bytes(LEGACY_KEY)
}

pub(crate) fn email(id: i64, generation: u32) -> String {
    format!("user{id}.g{generation}@example.com")
}

pub(crate) fn note(id: i64) -> String {
    format!("note for customer {id}")
}

pub(crate) fn legacy_email(id: i64, generation: u32) -> Vec<u8> {
    legacy::seal(
        LegacyFormat::AesGcmIv16,
        &legacy_key(),
        &OsRandom,
        email(id, generation).as_bytes(),
        b"",
    )
    .unwrap()
}

pub(crate) fn legacy_note(id: i64) -> Vec<u8> {
    fernet::seal(&legacy_key(), &OsRandom, 1_700_000_000, note(id).as_bytes()).unwrap()
}

pub(crate) fn keyring(home: &std::path::Path) -> Keyring {
    let mut config = Config::default();
    config.provider("local").set("home", home.to_str().unwrap());
    config.resilience.initial_backoff_ms = 5;
    Keyring::builder(config).build().unwrap()
}

pub(crate) async fn target(keyring: &Keyring, name: &str) -> KeyUri {
    let key = KeyUri::parse(&format!("local://{name}")).unwrap();
    if keyring.key_metadata(&key).await.is_err() {
        keyring.create_key(&key).await.unwrap();
    }
    key
}

pub(crate) fn legacy_job(job: &str, target: KeyUri) -> JobSpec {
    let columns = vec![
        "email=aes-gcm-iv16".parse::<ColumnSpec>().unwrap(),
        "notes=fernet".parse().unwrap(),
        "phone=plaintext".parse().unwrap(),
    ];
    let mut spec = JobSpec::new(job, "customers", "id", columns, target).unwrap();
    spec.chunk_rows = 250;
    spec
}

pub(crate) fn migrator(keyring: &Keyring, spec: JobSpec, store: Arc<dyn Store>) -> Migrator {
    Migrator::new(keyring.clone(), spec, store).with_legacy_key(legacy_key())
}

pub(crate) fn quiet(_: &sealkit_migrate::Counts) {}
