//! [`KeyringBuilder`]: a keyring from a [`Config`] and the provider registry. Pure: it reads no
//! environment variable and touches no file the configuration does not name.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealkit_core::dek_store::DekStore;
use sealkit_core::legacy::LegacyKey;
use sealkit_core::provider::{KeyAdmin, KeyEncryption, SecretSource};
use sealkit_core::registry::{ProviderParts, ProviderSettings};
use sealkit_core::{AeadBackend, DataKey, default_backend};

use super::{Inner, Keyring};
use crate::audit::{AuditKey, AuditSink, JsonlAuditSink};
use crate::cache::{BoundedCache, SwapCache};
use crate::config::{Config, Mode};
use crate::metrics_names as m;
use crate::resilience::Resilience;
use crate::secrets::SecretSources;
use crate::{Error, Result, providers};

/// Builds a [`Keyring`].
///
/// Providers come from [`Config::providers`] (each built by its registry entry; a `local://`
/// key named by the configuration adds the local provider with its defaults) and from the
/// `with_*` methods, which win over a configured provider of the same scheme.
pub struct KeyringBuilder {
    config: Config,
    keys: Vec<Arc<dyn KeyEncryption>>,
    admins: Vec<Arc<dyn KeyAdmin>>,
    secret_sources: Vec<Arc<dyn SecretSource>>,
    sinks: Vec<Arc<dyn AuditSink>>,
    backend: &'static dyn AeadBackend,
    configured_providers: bool,
    named_secret_sources: Option<SecretSources>,
    dek_store: Option<Arc<dyn DekStore>>,
}

impl std::fmt::Debug for KeyringBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeyringBuilder {
    /// Starts from a configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            keys: Vec::new(),
            admins: Vec::new(),
            secret_sources: Vec::new(),
            sinks: Vec::new(),
            backend: default_backend(),
            configured_providers: true,
            named_secret_sources: None,
            dek_store: None,
        }
    }

    /// Uses `store` for compact envelopes (instead of opening `[deks] store`).
    pub fn with_dek_store(mut self, store: Arc<dyn DekStore>) -> Self {
        self.dek_store = Some(store);
        self
    }

    /// The sources the configured secrets (`[secrets.NAME]`) are read from, instead of
    /// `env`, `file` and the secret sources of the keyring's providers.
    pub fn with_secret_sources(mut self, sources: SecretSources) -> Self {
        self.named_secret_sources = Some(sources);
        self
    }

    /// Registers a provider for key operations (by its scheme).
    pub fn with_provider(mut self, provider: Arc<dyn KeyEncryption>) -> Self {
        self.keys.push(provider);
        self
    }

    /// Registers a provider for key administration (by its scheme).
    pub fn with_admin(mut self, admin: Arc<dyn KeyAdmin>) -> Self {
        self.admins.push(admin);
        self
    }

    /// Registers a provider for both key operations and administration.
    pub fn with_managed_provider<P: KeyEncryption + KeyAdmin + 'static>(
        self,
        provider: Arc<P>,
    ) -> Self {
        self.with_admin(provider.clone()).with_provider(provider)
    }

    /// Registers everything a provider built (keys, admin, secret sources).
    pub fn with_provider_parts(mut self, parts: ProviderParts) -> Self {
        self.keys.extend(parts.keys);
        self.admins.extend(parts.admin);
        self.secret_sources.extend(parts.secrets);
        self
    }

    /// The key that chains the configured audit file (instead of `audit.key_env` or
    /// `audit.key_secret`).
    pub fn with_audit_key(mut self, key: AuditKey) -> Self {
        self.config.audit.key = Some(key);
        self
    }

    /// Builds the keyring, first fetching the keys the configuration names by secret reference
    /// (the audit key, the legacy key: [`Config::fetch_secret_keys`]) and opening the DEK store
    /// `[deks] store` names (features `dek-store-sqlite`, `dek-store-postgres`).
    pub async fn build_async(mut self) -> Result<Keyring> {
        #[cfg(any(feature = "dek-store-sqlite", feature = "dek-store-postgres"))]
        if self.dek_store.is_none()
            && let Some(db) = &self.config.deks.store
        {
            self.dek_store =
                Some(sealkit_dekstore::open_dek_store(db, &self.config.deks.table).await?);
        }
        if self.config.has_secret_keys_to_fetch() {
            let mut sources = match &self.named_secret_sources {
                Some(sources) => sources.clone(),
                None => SecretSources::from_providers(&self.config.providers)?,
            };
            sources.add_all(self.secret_sources.iter().cloned());
            self.config.fetch_secret_keys(&sources).await?;
        }
        self.build()
    }

    /// Adds an audit sink (besides `tracing` and the configured file).
    pub fn with_audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Chooses the AEAD backend (default: `ring`).
    pub fn with_backend(mut self, backend: &'static dyn AeadBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Supplies the legacy master key (instead of [`Config::from_env`] reading it from
    /// `legacy.key_env`).
    pub fn with_legacy_key(mut self, key: DataKey) -> Self {
        self.config.legacy.key = Some(LegacyKey::from_key("the application", key));
        self
    }

    /// Ignores the configuration's providers: only those registered on this builder serve.
    pub fn without_configured_providers(mut self) -> Self {
        self.configured_providers = false;
        self
    }

    /// The provider tables to build: the configured ones, plus the local provider when the
    /// configuration names a `local://` key.
    fn provider_tables(&self) -> BTreeMap<String, ProviderSettings> {
        if !self.configured_providers {
            return BTreeMap::new();
        }
        let mut tables = self.config.providers.clone();
        for key in self.config.key_uris() {
            if let Some(provider) = providers::for_scheme(key.scheme()) {
                tables.entry(provider.name.to_string()).or_default();
            }
        }
        tables
    }

    /// Builds the keyring.
    pub fn build(mut self) -> Result<Keyring> {
        for (name, settings) in self.provider_tables() {
            let provider = providers::by_name(&name)?;
            let explicit = |scheme: &str| self.keys.iter().any(|k| k.scheme() == scheme);
            if provider.scheme.is_some_and(explicit) {
                continue;
            }
            let parts = provider.build(&settings)?;
            tracing::debug!(provider = provider.name, ?parts, "provider configured");
            self = self.with_provider_parts(parts);
        }
        let config = self.config;
        let providers: HashMap<String, Arc<dyn KeyEncryption>> = self
            .keys
            .into_iter()
            .rev() // the first registration of a scheme wins
            .map(|p| (p.scheme().to_string(), p))
            .collect();
        let admins: HashMap<String, Arc<dyn KeyAdmin>> = self
            .admins
            .into_iter()
            .rev()
            .map(|a| (a.scheme().to_string(), a))
            .collect();
        if let Some(key) = &config.default_key
            && !providers.contains_key(key.scheme())
        {
            return Err(Error::misconfigured(format!(
                "default key {key} needs the {:?} provider, which is not configured (compiled features or [providers] in the configuration)",
                key.scheme()
            )));
        }
        let legacy = match (&config.legacy.key, config.mode) {
            (Some(key), _) => Some((config.legacy.format, key.clone())),
            (None, Mode::Kms) => None,
            (None, _) => {
                return Err(Error::misconfigured(format!(
                    "mode {} needs the legacy master key, and {} is not set: export it (base64 of 32 bytes; Config::from_env reads it), name a secret chain in [legacy] key (fetched by build_async), or pass the key with KeyringBuilder::with_legacy_key",
                    config.mode.as_str(),
                    config.legacy.key_env
                )));
            }
        };
        let mut sinks = self.sinks;
        if let Some(path) = &config.audit.path {
            let key = config.audit.key.as_ref().ok_or_else(|| {
                Error::misconfigured(format!(
                    "audit.path is set ({}) but there is no audit key to chain its records: export {} (base64 of 32 bytes; `sealkit audit new-key` makes one), name a secret with audit.key_secret, or pass KeyringBuilder::with_audit_key",
                    path.display(),
                    config.audit.key_env
                ))
            })?;
            sinks.push(Arc::new(JsonlAuditSink::open(
                path,
                key,
                config.audit.file_options(),
            )?));
        }
        let secrets = if config.secrets.is_empty() {
            BTreeMap::new()
        } else {
            let sources = self.named_secret_sources.unwrap_or_else(|| {
                let mut sources = SecretSources::builtin();
                sources.add_all(self.secret_sources);
                sources
            });
            config
                .secrets
                .iter()
                .map(|(name, secret)| {
                    let specs: Vec<&str> = secret.sources.iter().map(String::as_str).collect();
                    let chain = sources
                        .chain(name, &specs, secret.fallback)?
                        .with_ttl(Duration::from_secs(secret.ttl_secs));
                    Ok((name.clone(), chain))
                })
                .collect::<Result<_>>()?
        };
        let max_messages = config
            .cache
            .max_messages
            .clamp(1, config.algorithm.max_messages());
        let deks = dek_store(self.dek_store, &config, max_messages)?;
        Ok(Keyring {
            inner: Arc::new(Inner {
                providers,
                admins,
                default_key: config.default_key,
                algorithm: config.algorithm,
                mode: config.mode,
                actor: config.actor,
                dek_scope: config.dek_scope,
                max_messages,
                seal_cache: SwapCache::new(config.cache.max_entries),
                open_cache: BoundedCache::new(config.cache.max_open_entries),
                cache: config.cache,
                backend: self.backend,
                legacy,
                sinks,
                audit_data_operations: config.audit.data_operations.unwrap_or(true),
                resilience: Resilience::new(config.resilience),
                seal_hit_metric: metrics::counter!(m::DEK_CACHE_HITS_TOTAL, "cache" => "seal"),
                open_hit_metric: metrics::counter!(m::DEK_CACHE_HITS_TOTAL, "cache" => "open"),
                primaries: Mutex::new(HashMap::new()),
                kms_calls: AtomicU64::new(0),
                open_cache_hits: AtomicU64::new(0),
                retired_seal_hits: AtomicU64::new(0),
                cache_misses: AtomicU64::new(0),
                legacy_opens: AtomicU64::new(0),
                secrets,
                deks,
            }),
        })
    }
}

/// The keyring's DEK store: the one given, checked against `[deks]`.
fn dek_store(
    store: Option<Arc<dyn DekStore>>,
    config: &Config,
    max_messages: u64,
) -> Result<Option<super::compact::Deks>> {
    let deks = &config.deks;
    if let Some(field) = &deks.subject
        && !config.dek_scope.contains(field)
    {
        return Err(Error::misconfigured(format!(
            "[deks] subject = {field:?} must be one of dek_scope ({}), so that each subject's values have DEKs of their own",
            config.dek_scope.join(", ")
        )));
    }
    let Some(store) = store else {
        if let Some(db) = &deks.store {
            return Err(Error::misconfigured(format!(
                "[deks] store = {db:?} is opened by KeyringBuilder::build_async (with the dek-store-sqlite or dek-store-postgres feature); or pass it with with_dek_store"
            )));
        }
        if deks.layout == crate::config::Layout::Compact || !deks.compact_keys.is_empty() {
            return Err(Error::misconfigured(
                "compact envelopes need a DEK store: set [deks] store (or SEALKIT_DEK_STORE)",
            ));
        }
        return Ok(None);
    };
    let limit = deks
        .message_limit
        .unwrap_or(max_messages)
        .clamp(1, config.algorithm.max_messages());
    Ok(Some(super::compact::Deks::new(
        store,
        deks,
        limit,
        (config.cache.max_entries, config.cache.max_open_entries),
    )))
}
