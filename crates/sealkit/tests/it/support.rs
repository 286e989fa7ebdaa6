//! Shared helpers.

use std::path::Path;
use std::sync::Arc;

use sealkit::config::CacheConfig;
use sealkit::local::LocalKeyStore;
use sealkit::{Config, EncryptionContext, KeyUri, Keyring, Mode};

pub(crate) fn ctx(table: &str, column: &str, id: u64) -> EncryptionContext {
    EncryptionContext::builder()
        .with("table", table)
        .with("column", column)
        .with("id", &id.to_string())
        .build()
        .unwrap()
}

pub(crate) fn uri(s: &str) -> KeyUri {
    KeyUri::parse(s).unwrap()
}

/// The audit key of the tests' logs.
pub(crate) fn audit_key() -> sealkit::audit::AuditKey {
    sealkit::audit::AuditKey::from_bytes([0xA7; 32])
}

/// `cfg` with an audit file at `path` under [`audit_key`].
pub(crate) fn with_audit_log(mut cfg: Config, path: &Path) -> Config {
    cfg.audit.path = Some(path.to_path_buf());
    cfg.audit.key = Some(audit_key());
    cfg
}

pub(crate) fn config(home: &Path, default_key: &str) -> Config {
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse(default_key).unwrap());
    config.provider("local").set("home", home.to_str().unwrap());
    config.resilience.initial_backoff_ms = 1;
    config
}

pub(crate) fn keyring(home: &Path, default_key: &str) -> Keyring {
    Keyring::builder(config(home, default_key)).build().unwrap()
}

pub(crate) fn keyring_with(config: Config, cache: CacheConfig, mode: Mode) -> Keyring {
    let mut config = config;
    config.cache = cache;
    config.mode = mode;
    Keyring::builder(config).build().unwrap()
}

pub(crate) fn extra_store(home: &Path, scheme: &str) -> Arc<LocalKeyStore> {
    Arc::new(
        LocalKeyStore::open(home, None)
            .unwrap()
            .with_scheme(scheme)
            .unwrap(),
    )
}
