//! The [`Keyring`]: sealing and opening through providers, with caching, policy, audit and
//! metrics.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealkit_core::envelope::KeySlot;
use sealkit_core::legacy::{self, LegacyFormat};
use sealkit_core::provider::{KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState};
use sealkit_core::{
    AeadBackend, Algorithm, DataKey, DekCipher, EncryptionContext, Envelope, KeyRef, KeyUri,
    KeyVersion, WrappedKey, default_backend,
};

use crate::audit::{AuditEvent, AuditSink, JsonlAuditSink, Operation};
use crate::cache::{
    BoundedCache, CacheKey, CoarseInstant, LATENCY_SAMPLE, OpenEntry, SealEntry, SealKey,
    SwapCache, within_age,
};
use crate::config::{CacheConfig, Config, Mode};
use crate::metrics_names as m;
use crate::random::OsRandom;
use crate::resilience::{CircuitState, Resilience};
use crate::secrets::{Resolved, SecretChain, SecretSources};
use crate::{Error, Result};

/// Counters a report can print (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyringStats {
    /// Calls made to providers (generate, unwrap, rewrap, admin).
    pub kms_calls: u64,
    /// Seals and opens served by a cached DEK.
    pub cache_hits: u64,
    /// Seals and opens that needed a provider call.
    pub cache_misses: u64,
}

/// What [`Keyring::rewrap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewrapOutcome {
    /// The envelope's DEK was re-wrapped; the new envelope differs only in its key slot.
    Rewrapped(Vec<u8>),
    /// The envelope was already wrapped under the target key's primary version.
    AlreadyCurrent,
}

/// One component's health.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HealthReport {
    /// What was checked (`provider local`, `audit log`, `legacy key`…).
    pub component: String,
    /// `None` when healthy, else what is wrong.
    pub problem: Option<String>,
    /// How long the check took.
    pub latency: Duration,
}

impl HealthReport {
    /// Whether the component is healthy.
    pub fn is_healthy(&self) -> bool {
        self.problem.is_none()
    }
}

/// Builds a [`Keyring`].
pub struct KeyringBuilder {
    config: Config,
    providers: Vec<Arc<dyn KeyEncryption>>,
    admins: Vec<(String, Arc<dyn KeyAdmin>)>,
    sinks: Vec<Arc<dyn AuditSink>>,
    backend: &'static dyn AeadBackend,
    legacy_key: Option<DataKey>,
    auto_providers: bool,
    secret_sources: Option<SecretSources>,
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
            providers: Vec::new(),
            admins: Vec::new(),
            sinks: Vec::new(),
            backend: default_backend(),
            legacy_key: None,
            auto_providers: true,
            secret_sources: None,
        }
    }

    /// The sources the configured secrets (`[secrets.NAME]`) are read from; by default
    /// [`SecretSources::with_defaults`].
    pub fn with_secret_sources(mut self, sources: SecretSources) -> Self {
        self.secret_sources = Some(sources);
        self
    }

    /// Registers a provider for key operations (by its scheme).
    pub fn with_provider(mut self, provider: Arc<dyn KeyEncryption>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Registers a provider for key administration under `scheme`.
    pub fn with_admin(mut self, scheme: &str, admin: Arc<dyn KeyAdmin>) -> Self {
        self.admins.push((scheme.to_string(), admin));
        self
    }

    /// Registers a provider for both key operations and administration.
    pub fn with_managed_provider<P: KeyEncryption + KeyAdmin + 'static>(
        mut self,
        provider: Arc<P>,
    ) -> Self {
        self.add_managed(provider);
        self
    }

    fn add_managed<P: KeyEncryption + KeyAdmin + 'static>(&mut self, provider: Arc<P>) {
        self.admins
            .push((provider.scheme().to_string(), provider.clone()));
        self.providers.push(provider);
    }

    /// Whether auto-detection may register a provider for `scheme` (it is on, and no provider
    /// for that scheme was registered explicitly).
    #[cfg_attr(
        not(any(feature = "local", feature = "vault", feature = "aws")),
        allow(dead_code)
    )]
    fn may_detect(&self, scheme: &str) -> bool {
        self.auto_providers && !self.providers.iter().any(|p| p.scheme() == scheme)
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

    /// Supplies the legacy master key directly instead of from `legacy.key_env`.
    pub fn with_legacy_key(mut self, key: DataKey) -> Self {
        self.legacy_key = Some(key);
        self
    }

    /// Turns off auto-detection: only explicitly registered providers are used.
    pub fn without_auto_providers(mut self) -> Self {
        self.auto_providers = false;
        self
    }

    /// Builds the keyring, auto-detecting providers from the configuration and environment.
    #[cfg_attr(
        not(any(feature = "local", feature = "vault", feature = "aws")),
        allow(unused_mut)
    )]
    pub fn build(mut self) -> Result<Keyring> {
        let algorithm = self.config.algorithm()?;
        let default_key = self.config.default_key()?;
        #[cfg(feature = "local")]
        if self.may_detect(sealkit_local::SCHEME) {
            let passphrase = std::env::var(&self.config.local.passphrase_env)
                .ok()
                .map(secrecy::SecretString::from);
            let store = sealkit_local::LocalKeyStore::open(&self.config.local.home, passphrase)?;
            self.add_managed(Arc::new(store));
        }
        #[cfg(feature = "vault")]
        if self.may_detect(sealkit_vault::SCHEME) && crate::detect::vault_configured() {
            self.add_managed(Arc::new(sealkit_vault::VaultTransit::from_env()?));
            tracing::info!("Vault Transit provider configured from VAULT_ADDR");
        }
        #[cfg(feature = "aws")]
        if self.may_detect(sealkit_aws::SCHEME) && crate::detect::aws_configured() {
            self.add_managed(Arc::new(sealkit_aws::AwsKms::from_env()));
            tracing::info!("AWS KMS provider configured from the AWS environment");
        }
        let config = self.config;
        let providers: HashMap<String, Arc<dyn KeyEncryption>> = self
            .providers
            .into_iter()
            .map(|p| (p.scheme().to_string(), p))
            .collect();
        let admins: HashMap<String, Arc<dyn KeyAdmin>> = self.admins.into_iter().collect();
        if let Some(key) = &default_key
            && !providers.contains_key(key.scheme())
        {
            return Err(Error::misconfigured(format!(
                "default key {key} needs the {:?} provider, which is not configured (compiled features or environment)",
                key.scheme()
            )));
        }
        let legacy_format: LegacyFormat = config.legacy.format.parse()?;
        let legacy_key = match (self.legacy_key, config.mode) {
            (Some(k), _) => Some(k),
            (None, Mode::Kms) => None,
            (None, _) => Some(load_legacy_key(&config.legacy.key_env)?),
        };
        let mut sinks = self.sinks;
        if let Some(path) = &config.audit.path {
            sinks.push(Arc::new(JsonlAuditSink::open(path)?));
        }
        let max_messages = config.cache.max_messages.clamp(1, algorithm.max_messages());
        let secrets = if config.secrets.is_empty() {
            BTreeMap::new()
        } else {
            let sources = match self.secret_sources {
                Some(sources) => sources,
                None => SecretSources::with_defaults()?,
            };
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
        Ok(Keyring {
            inner: Arc::new(Inner {
                providers,
                admins,
                default_key,
                algorithm,
                mode: config.mode,
                actor: config.actor,
                dek_scope: config.dek_scope,
                max_messages,
                seal_cache: SwapCache::new(config.cache.max_entries),
                open_cache: BoundedCache::new(config.cache.max_open_entries),
                cache: config.cache,
                backend: self.backend,
                legacy: legacy_key.map(|k| (legacy_format, k)),
                sinks,
                audit_data_operations: config.audit.data_operations.unwrap_or(true),
                resilience: Resilience::new(config.resilience),
                seal_hits: metrics::counter!(m::DEK_CACHE_HITS_TOTAL, "cache" => "seal"),
                open_hits: metrics::counter!(m::DEK_CACHE_HITS_TOTAL, "cache" => "open"),
                primaries: std::sync::Mutex::new(HashMap::new()),
                kms_calls: AtomicU64::new(0),
                open_cache_hits: AtomicU64::new(0),
                retired_seal_hits: AtomicU64::new(0),
                cache_misses: AtomicU64::new(0),
                secrets,
            }),
        })
    }
}

#[cfg(feature = "local")]
fn load_legacy_key(var: &str) -> Result<DataKey> {
    Ok(sealkit_local::LegacyKey::from_env(var)?.key().clone())
}

#[cfg(not(feature = "local"))]
fn load_legacy_key(var: &str) -> Result<DataKey> {
    Err(Error::misconfigured(format!(
        "legacy/hybrid mode needs the legacy key from {var}, which the `local` feature reads; enable it"
    )))
}

/// Seals and opens application data. Cheap to clone; share one per process.
///
/// ```no_run
/// # async fn demo() -> sealkit::Result<()> {
/// use sealkit::{EncryptionContext, Keyring};
/// let keyring = Keyring::from_env()?; // SEALKIT_DEFAULT_KEY=local://customers, …
/// let ctx = EncryptionContext::parse("table=customers,column=email,id=42")?;
/// let sealed = keyring.seal(b"alice@example.com", &ctx).await?;
/// assert_eq!(keyring.open(&sealed, &ctx).await?, b"alice@example.com");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    providers: HashMap<String, Arc<dyn KeyEncryption>>,
    admins: HashMap<String, Arc<dyn KeyAdmin>>,
    default_key: Option<KeyUri>,
    algorithm: Algorithm,
    mode: Mode,
    actor: String,
    dek_scope: Vec<String>,
    max_messages: u64,
    cache: CacheConfig,
    seal_cache: SwapCache<SealEntry>,
    open_cache: BoundedCache<OpenEntry>,
    backend: &'static dyn AeadBackend,
    legacy: Option<(LegacyFormat, DataKey)>,
    sinks: Vec<Arc<dyn AuditSink>>,
    audit_data_operations: bool,
    resilience: Resilience,
    seal_hits: metrics::Counter,
    open_hits: metrics::Counter,
    primaries: std::sync::Mutex<HashMap<KeyUri, (KeyVersion, CoarseInstant)>>,
    kms_calls: AtomicU64,
    /// Opens served by the unwrap cache.
    open_cache_hits: AtomicU64,
    /// Seal hits of the sealing-cache entries dropped so far (those of live entries are read
    /// from their budgets, so a hit costs no shared counter).
    retired_seal_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// The configured secrets, by name.
    secrets: BTreeMap<String, SecretChain>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field("default_key", &self.inner.default_key)
            .field("algorithm", &self.inner.algorithm)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A builder.
    pub fn builder(config: Config) -> KeyringBuilder {
        KeyringBuilder::new(config)
    }

    /// Builds from `SEALKIT_CONFIG` and `SEALKIT_*` variables with provider auto-detection.
    pub fn from_env() -> Result<Self> {
        KeyringBuilder::new(Config::from_env()?).build()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The default key, if configured.
    pub fn default_key(&self) -> Option<&KeyUri> {
        self.inner.default_key.as_ref()
    }

    /// Registered provider schemes.
    pub fn schemes(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.inner.providers.keys().map(String::as_str).collect();
        s.sort_unstable();
        s
    }

    /// Counters since the keyring was built.
    pub fn stats(&self) -> KeyringStats {
        KeyringStats {
            kms_calls: self.inner.kms_calls.load(Ordering::Relaxed),
            cache_hits: self.inner.open_cache_hits.load(Ordering::Relaxed)
                + self.inner.retired_seal_hits.load(Ordering::Relaxed)
                + self.inner.seal_cache.sum(SealEntry::hits),
            cache_misses: self.inner.cache_misses.load(Ordering::Relaxed),
        }
    }

    /// Makes buffered audit records durable.
    pub fn flush_audit(&self) -> Result<()> {
        self.inner.sinks.iter().try_for_each(|s| s.flush())
    }

    /// The state of a provider's circuit breaker.
    pub fn circuit_state(&self, scheme: &str) -> CircuitState {
        self.inner.resilience.state(scheme)
    }

    fn provider(&self, scheme: &str) -> Result<&Arc<dyn KeyEncryption>> {
        self.inner.providers.get(scheme).ok_or_else(|| {
            Error::misconfigured(format!(
                "no provider for {scheme}:// keys is configured; enable its feature and set its environment (see docs/configuration.md)"
            ))
        })
    }

    fn admin(&self, key: &KeyUri) -> Result<&Arc<dyn KeyAdmin>> {
        self.inner.admins.get(key.scheme()).ok_or_else(|| {
            Error::misconfigured(format!(
                "no key administration for {}:// keys is configured",
                key.scheme()
            ))
        })
    }

    fn default_key_required(&self) -> Result<&KeyUri> {
        self.inner.default_key.as_ref().ok_or_else(|| {
            Error::misconfigured("no default key: set default_key in the config or SEALKIT_DEFAULT_KEY, or use seal_with")
        })
    }

    fn audit(
        &self,
        operation: Operation,
        key: Option<&KeyRef>,
        uri: Option<&KeyUri>,
        context: Option<&EncryptionContext>,
        error: Option<&Error>,
    ) {
        let inner = &self.inner;
        if !operation.is_key_operation() && !inner.audit_data_operations {
            return;
        }
        let mut event = AuditEvent::new(&inner.actor, operation);
        event.key = key.map(|k| k.uri.as_str()).or(uri.map(KeyUri::as_str));
        event.key_version = key.map(|k| k.version.as_str());
        event.context = context;
        event.error = error.map(Error::kind);
        if operation.is_key_operation() {
            tracing::info!(target: "sealkit::audit", actor = %inner.actor, operation = operation.as_str(), key = event.key, key_version = event.key_version, context = ?context.map(|c| c.to_string()), outcome = if error.is_none() { "success" } else { "failure" }, error = ?event.error.map(|k| k.as_str()));
        } else {
            tracing::debug!(target: "sealkit::audit", actor = %inner.actor, operation = operation.as_str(), key = event.key, key_version = event.key_version, outcome = if error.is_none() { "success" } else { "failure" }, error = ?event.error.map(|k| k.as_str()));
        }
        for sink in &inner.sinks {
            sink.record(&event);
        }
    }

    fn count_error(&self, operation: Operation, provider: &str, error: &Error) {
        metrics::counter!(m::ERRORS_TOTAL, "operation" => operation.as_str(), "provider" => provider.to_string(), "error_type" => error.kind().as_str()).increment(1);
    }

    /// The DEK scope of a context: the pairs named by `dek_scope` (or `scope=shared`).
    fn scope_of(&self, context: &EncryptionContext) -> EncryptionContext {
        let keys: Vec<&str> = self.inner.dek_scope.iter().map(String::as_str).collect();
        context.project(&keys).unwrap_or_else(|| {
            EncryptionContext::from_pairs([("scope", "shared")]).expect("a static, valid context")
        })
    }

    fn scope_key(&self, out: &mut CacheKey, context: &EncryptionContext) {
        for (k, v) in context.iter() {
            if self.inner.dek_scope.iter().any(|s| s == k) {
                out.push_field(k.as_bytes());
                out.push_field(v.as_bytes());
            }
        }
    }

    async fn kms_call<T, F, Fut>(&self, scheme: &str, operation: Operation, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut calls = 0u64;
        let mut call = call;
        let result = self
            .inner
            .resilience
            .call(scheme, || {
                calls += 1;
                call()
            })
            .await;
        self.inner.kms_calls.fetch_add(calls, Ordering::Relaxed);
        metrics::counter!(m::KMS_CALLS_TOTAL, "provider" => scheme.to_string(), "operation" => operation.as_str()).increment(calls);
        metrics::histogram!(m::OPERATION_DURATION, "operation" => operation.as_str(), "provider" => scheme.to_string()).record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.count_error(operation, scheme, e);
        }
        result
    }

    // ----- sealing -------------------------------------------------------------------------

    /// Seals `plaintext` under the default key, bound to `context`.
    pub async fn seal(&self, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        let key = self.default_key_required()?;
        self.seal_with(key, plaintext, context).await
    }

    /// Seals `plaintext` under `key`, bound to `context`.
    pub async fn seal_with(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        if self.inner.mode == Mode::Legacy {
            let (format, legacy_key) = self.legacy()?;
            let result = legacy::seal(format, legacy_key, &OsRandom, plaintext, b"");
            self.audit(
                Operation::Seal,
                None,
                None,
                Some(context),
                result.as_ref().err(),
            );
            return result;
        }
        let now = CoarseInstant::now();
        if let Some(result) = self.seal_cached(key, plaintext, context, now) {
            return result;
        }
        // The slow path is boxed so that the future of every seal stays small.
        Box::pin(self.seal_fresh(key, plaintext, context, now)).await
    }

    /// Seals with the cached DEK for `context`, if one is cached and within its bounds; `None`
    /// on a miss (a stale entry is dropped).
    #[inline]
    fn seal_cached(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Option<Result<Vec<u8>>> {
        let cache_key = SealKey::new(key, context, &self.inner.dek_scope);
        let hit = self.inner.seal_cache.with(&cache_key, |entry| {
            if !entry.admit(&self.inner.cache, plaintext.len(), now) {
                return None;
            }
            match self.seal_with_entry(entry, key, plaintext, context) {
                Err(Error::MessageBudgetExhausted) => None,
                result => Some(result),
            }
        });
        match hit {
            Some(Some(result)) => {
                self.inner.seal_hits.increment(1);
                Some(result)
            }
            // Stale: too old, too many bytes or messages.
            Some(None) => {
                self.retire_sealers(self.inner.seal_cache.remove(&cache_key));
                None
            }
            None => None,
        }
    }

    /// Seals with a fresh DEK, caching it. A DEK can be exhausted by other tasks between its
    /// creation and our seal: retried a few times.
    async fn seal_fresh(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        let cache_key = SealKey::new(key, context, &self.inner.dek_scope);
        for attempt in 0..3 {
            if attempt > 0
                && let Some(result) = self.seal_cached(key, plaintext, context, now)
            {
                return result;
            }
            self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::DEK_CACHE_MISSES_TOTAL, "cache" => "seal").increment(1);
            let entry = self.new_sealer(key, context, now).await?;
            entry
                .bytes
                .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
            self.retire_sealers(self.inner.seal_cache.insert(&cache_key, entry.clone()));
            match self.seal_with_entry(&entry, key, plaintext, context) {
                Err(Error::MessageBudgetExhausted) => {
                    self.retire_sealers(self.inner.seal_cache.remove(&cache_key))
                }
                result => return result,
            }
        }
        Err(Error::MessageBudgetExhausted)
    }

    /// Accounts for sealing-cache entries that left the cache.
    fn retire_sealers(&self, dropped: Vec<Arc<SealEntry>>) {
        let hits: u64 = dropped.iter().map(|entry| entry.hits()).sum();
        self.inner
            .retired_seal_hits
            .fetch_add(hits, Ordering::Relaxed);
    }

    /// Seals with a cached or fresh DEK, recording metrics and the audit event.
    fn seal_with_entry(
        &self,
        entry: &SealEntry,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        // Latency is sampled (1 in LATENCY_SAMPLE) to keep clock reads off the hot path;
        // provider calls on misses are always timed.
        let timer = entry
            .cipher
            .budget()
            .used()
            .is_multiple_of(LATENCY_SAMPLE)
            .then(Instant::now);
        let result = entry.cipher.seal(&OsRandom, context, plaintext);
        match &result {
            Ok(_) => {
                entry.encrypted.increment(1);
                if let Some(started) = timer {
                    entry.duration.record(started.elapsed().as_secs_f64());
                }
            }
            // An exhausted budget is not a failure: the caller fetches a fresh DEK.
            Err(Error::MessageBudgetExhausted) => return result,
            Err(e) => self.count_error(Operation::Seal, key.scheme(), e),
        }
        self.audit(
            Operation::Seal,
            Some(&entry.key),
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    /// A weak handle on the sealing DEK cached for `context` under the default key (tests
    /// use it to observe that eviction drops the key).
    #[doc(hidden)]
    pub fn __weak_seal_cipher_for_tests(
        &self,
        context: &EncryptionContext,
    ) -> Option<std::sync::Weak<DekCipher>> {
        let key = self.inner.default_key.as_ref()?;
        let entry =
            self.inner
                .seal_cache
                .get(&SealKey::new(key, context, &self.inner.dek_scope))?;
        Some(Arc::downgrade(&entry.cipher))
    }

    async fn new_sealer(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Arc<SealEntry>> {
        let provider = self.provider(key.scheme())?.clone();
        let scope = self.scope_of(context);
        let generated = self
            .kms_call(key.scheme(), Operation::GenerateDataKey, || {
                provider.generate_data_key(key, &scope)
            })
            .await;
        self.audit(
            Operation::GenerateDataKey,
            generated.as_ref().ok().map(|g| &g.wrapped.key),
            Some(key),
            Some(&scope),
            generated.as_ref().err(),
        );
        let generated = generated?;
        let cipher = Arc::new(
            DekCipher::new(
                self.inner.backend,
                self.inner.algorithm,
                &generated.plaintext,
            )?
            .with_wrapped_key(&generated.wrapped)?
            .with_message_limit(self.inner.max_messages)?,
        );
        let wrapped = &generated.wrapped;
        // Prime the open cache: data sealed now is often read back soon.
        let open_entry = self.open_entry(cipher.clone(), wrapped, now);
        self.inner.open_cache.insert(
            self.open_cache_key(&wrapped.bytes, &wrapped.key, context)
                .to_vec(),
            open_entry,
        );
        let (scheme, version) = (key.scheme().to_string(), wrapped.key.version.to_string());
        Ok(Arc::new(SealEntry {
            cipher,
            key: wrapped.key.clone(),
            created: now,
            bytes: AtomicU64::new(0),
            encrypted: metrics::counter!(m::ENCRYPT_TOTAL, "provider" => scheme.clone(), "key_version" => version),
            duration: metrics::histogram!(m::OPERATION_DURATION, "operation" => "seal", "provider" => scheme),
        }))
    }

    /// Seals many fields under the default key; fields sharing a DEK scope share one DEK.
    pub async fn seal_batch(&self, items: &[(&[u8], &EncryptionContext)]) -> Result<Vec<Vec<u8>>> {
        let key = self.default_key_required()?.clone();
        let mut out = Vec::with_capacity(items.len());
        for (plaintext, context) in items {
            out.push(self.seal_with(&key, plaintext, context).await?);
        }
        Ok(out)
    }

    // ----- opening -------------------------------------------------------------------------

    fn legacy(&self) -> Result<(LegacyFormat, &DataKey)> {
        self.inner.legacy.as_ref().map(|(f, k)| (*f, k)).ok_or_else(|| {
            Error::misconfigured("legacy data needs the legacy master key (legacy.key_env, default ENCRYPTION_MASTER_KEY)")
        })
    }

    fn open_cache_key(
        &self,
        wrapped: &[u8],
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> CacheKey {
        self.slot_cache_key(wrapped, key.uri.as_str(), key.version.as_str(), context)
    }

    /// The open-cache key of a wrapped DEK, its key and version, and the DEK scope.
    fn slot_cache_key(
        &self,
        wrapped: &[u8],
        uri: &str,
        version: &str,
        context: &EncryptionContext,
    ) -> CacheKey {
        let mut out = CacheKey::new();
        out.push_field(wrapped);
        out.push_field(uri.as_bytes());
        out.push_field(version.as_bytes());
        self.scope_key(&mut out, context);
        out
    }

    fn open_entry(
        &self,
        cipher: Arc<DekCipher>,
        wrapped: &WrappedKey,
        now: CoarseInstant,
    ) -> Arc<OpenEntry> {
        let key = &wrapped.key;
        let (scheme, version) = (key.scheme().to_string(), key.version.to_string());
        Arc::new(OpenEntry {
            cipher,
            key: key.clone(),
            wrapped: wrapped.clone(),
            created: now,
            opened: AtomicU64::new(0),
            decrypted: metrics::counter!(m::DECRYPT_TOTAL, "provider" => scheme.clone(), "key_version" => version),
            duration: metrics::histogram!(m::OPERATION_DURATION, "operation" => "open", "provider" => scheme),
        })
    }

    /// The cipher for an envelope's DEK: from the cache, or unwrapped by its provider.
    async fn cipher_for(
        &self,
        envelope: &Envelope<'_>,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Arc<OpenEntry>> {
        let KeySlot::Wrapped {
            uri,
            version,
            wrapped,
            ..
        } = envelope.slot()
        else {
            return Err(Error::misconfigured(
                "compact envelopes need a DEK store, which this keyring does not have; seal with the full layout",
            ));
        };
        // The cache key comes from the envelope's borrowed slot: a hit validates and copies
        // nothing (the cached cipher's commitment check covers the slot bytes).
        let cache_key = self.slot_cache_key(wrapped, uri, version, context);
        if let Some(entry) = self.inner.open_cache.get(cache_key.as_slice()) {
            if within_age(&self.inner.cache, entry.created, now) {
                self.inner.open_cache_hits.fetch_add(1, Ordering::Relaxed);
                self.inner.open_hits.increment(1);
                return Ok(entry);
            }
            self.inner.open_cache.remove(cache_key.as_slice());
        }
        self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::DEK_CACHE_MISSES_TOTAL, "cache" => "open").increment(1);
        let wrapped = envelope
            .wrapped_key()
            .ok_or_else(|| Error::misconfigured("no wrapped key"))??;
        let scheme = wrapped.key.scheme().to_string();
        let provider = self.provider(&scheme)?.clone();
        let scope = self.scope_of(context);
        let dek = self
            .kms_call(&scheme, Operation::Unwrap, || {
                provider.unwrap(&wrapped, &scope)
            })
            .await;
        self.audit(
            Operation::Unwrap,
            Some(&wrapped.key),
            None,
            Some(&scope),
            dek.as_ref().err(),
        );
        let dek = dek?;
        let cipher = DekCipher::new(self.inner.backend, envelope.algorithm(), &dek)?
            .with_wrapped_key(&wrapped)?;
        let entry = self.open_entry(Arc::new(cipher), &wrapped, now);
        self.inner
            .open_cache
            .insert(cache_key.to_vec(), entry.clone());
        Ok(entry)
    }

    /// Opens a ciphertext bound to `context`: an envelope under any registered provider and
    /// key version, or (in `hybrid` and `legacy` modes) a legacy ciphertext.
    pub async fn open(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        let now = CoarseInstant::now();
        let parsed = if Envelope::looks_like(ciphertext) {
            Some(Envelope::parse(ciphertext))
        } else {
            None
        };
        match (parsed, self.inner.mode) {
            (Some(Ok(envelope)), _) => {
                let result = self.open_envelope(&envelope, context, now).await;
                if result.is_err() && self.inner.mode != Mode::Kms && self.inner.legacy.is_some() {
                    // One legacy ciphertext in 2^24 starts like an envelope; try it as legacy.
                    if let Ok(plain) = self.open_legacy(ciphertext, context) {
                        return Ok(plain);
                    }
                }
                result
            }
            (parsed, Mode::Kms) => {
                let e = match parsed {
                    Some(Err(e)) => e,
                    _ => not_an_envelope(),
                };
                self.count_error(Operation::Open, "envelope", &e);
                self.audit(Operation::Open, None, None, Some(context), Some(&e));
                Err(e)
            }
            _ => self.open_legacy(ciphertext, context),
        }
    }

    async fn open_envelope(
        &self,
        envelope: &Envelope<'_>,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        let entry = match self.cipher_for(envelope, context, now).await {
            Ok(e) => e,
            Err(e) => {
                self.audit(
                    Operation::Open,
                    envelope.key_ref().and_then(Result::ok).as_ref(),
                    None,
                    Some(context),
                    Some(&e),
                );
                return Err(e);
            }
        };
        let timer =
            (entry.opened.fetch_add(1, Ordering::Relaxed) % LATENCY_SAMPLE == 0).then(Instant::now);
        let result = entry.cipher.open(envelope, context);
        match &result {
            Ok(_) => {
                entry.decrypted.increment(1);
                if let Some(started) = timer {
                    entry.duration.record(started.elapsed().as_secs_f64());
                }
            }
            Err(e) => self.count_error(Operation::Open, entry.key.scheme(), e),
        }
        self.audit(
            Operation::Open,
            Some(&entry.key),
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    fn open_legacy(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        let result = self
            .legacy()
            .and_then(|(format, key)| legacy::open(format, key, ciphertext, b""));
        if let Err(e) = &result {
            self.count_error(Operation::Open, "legacy", e);
        }
        self.audit(
            Operation::Open,
            None,
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    /// Opens many ciphertexts; envelopes sharing a DEK cost one unwrap.
    pub async fn open_batch(&self, items: &[(&[u8], &EncryptionContext)]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(items.len());
        for (ciphertext, context) in items {
            out.push(self.open(ciphertext, context).await?);
        }
        Ok(out)
    }

    // ----- rewrap and administration -------------------------------------------------------

    /// Re-wraps an envelope's DEK under the primary version of `target` (default: the
    /// envelope's own key, i.e. after a rotation). Only the key slot changes: the nonce,
    /// ciphertext and tag are copied, and no data is decrypted. The new wrapped DEK is
    /// unwrapped once and checked against the envelope's commitment before it is used, so a
    /// faulty rewrap can never produce an envelope that does not open.
    pub async fn rewrap(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        target: Option<&KeyUri>,
    ) -> Result<RewrapOutcome> {
        let now = CoarseInstant::now();
        let envelope = Envelope::parse(ciphertext)?;
        let old = self.cipher_for(&envelope, context, now).await?;
        let target = target.unwrap_or(&old.key.uri).clone();
        let primary = self.primary_version(&target, now).await?;
        if old.key.uri == target && old.key.version == primary {
            return Ok(RewrapOutcome::AlreadyCurrent);
        }
        // One rewrap per distinct (old wrapped DEK, scope, target primary): cache the result.
        let mut cache_key = self.open_cache_key(
            envelope.wrapped_bytes().unwrap_or_default(),
            &old.key,
            context,
        );
        cache_key.push_field(b"rewrap");
        cache_key.push_field(target.as_str().as_bytes());
        cache_key.push_field(primary.as_str().as_bytes());
        let new = match self.inner.open_cache.get(cache_key.as_slice()) {
            Some(entry) => entry,
            None => {
                let wrapped = envelope.wrapped_key().ok_or_else(|| {
                    Error::invalid_input("compact envelopes are rewrapped in their DEK store")
                })??;
                let scope = self.scope_of(context);
                let provider = self.provider(wrapped.key.scheme())?.clone();
                let target_provider = self.provider(target.scheme())?.clone();
                let rewrapped = if wrapped.key.scheme() == target.scheme() {
                    self.kms_call(target.scheme(), Operation::Rewrap, || {
                        provider.rewrap(&wrapped, &target, &scope)
                    })
                    .await
                } else {
                    let dek = self
                        .kms_call(wrapped.key.scheme(), Operation::Unwrap, || {
                            provider.unwrap(&wrapped, &scope)
                        })
                        .await?;
                    self.kms_call(target.scheme(), Operation::Rewrap, || {
                        target_provider.wrap(&target, &dek, &scope)
                    })
                    .await
                };
                self.audit(
                    Operation::Rewrap,
                    rewrapped.as_ref().ok().map(|w| &w.key),
                    Some(&target),
                    Some(&scope),
                    rewrapped.as_ref().err(),
                );
                let rewrapped: WrappedKey = rewrapped?;
                let dek = self
                    .kms_call(target.scheme(), Operation::Unwrap, || {
                        target_provider.unwrap(&rewrapped, &scope)
                    })
                    .await?;
                let cipher = DekCipher::new(self.inner.backend, envelope.algorithm(), &dek)?
                    .with_wrapped_key(&rewrapped)?;
                if cipher.dek_id() != old.cipher.dek_id() {
                    return Err(Error::other(
                        target.scheme(),
                        "rewrap returned a different data key; nothing was changed",
                    ));
                }
                let entry = self.open_entry(Arc::new(cipher), &rewrapped, now);
                self.inner
                    .open_cache
                    .insert(cache_key.to_vec(), entry.clone());
                self.inner.open_cache.insert(
                    self.open_cache_key(&rewrapped.bytes, &rewrapped.key, context)
                        .to_vec(),
                    entry.clone(),
                );
                entry
            }
        };
        Ok(RewrapOutcome::Rewrapped(
            new.cipher.rewrap_envelope(&envelope, &new.wrapped)?,
        ))
    }

    /// The primary version of `key`, as new seals use it: cached for up to a minute (or the
    /// cache's age limit), forgotten when this keyring rotates the key.
    pub async fn current_version(&self, key: &KeyUri) -> Result<KeyVersion> {
        self.primary_version(key, CoarseInstant::now()).await
    }

    /// The primary version of `key`, cached for up to a minute (and forgotten on rotation).
    async fn primary_version(&self, key: &KeyUri, now: CoarseInstant) -> Result<KeyVersion> {
        let ttl_ms = self.inner.cache.max_age_secs.min(60) * 1000;
        if let Some((version, at)) = self
            .inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            && now.duration_since(*at).as_millis() < ttl_ms
        {
            return Ok(version.clone());
        }
        let primary = self.key_metadata(key).await?.primary;
        self.inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (primary.clone(), now));
        Ok(primary)
    }

    /// Describes a key.
    pub async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let provider = self.provider(key.scheme())?.clone();
        self.kms_call(key.scheme(), Operation::HealthCheck, || {
            provider.key_metadata(key)
        })
        .await
    }

    /// Creates a key.
    pub async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::CreateKey, || admin.create_key(key))
            .await;
        self.audit(
            Operation::CreateKey,
            result.as_ref().ok().map(|m| m.primary_ref()).as_ref(),
            Some(key),
            None,
            result.as_ref().err(),
        );
        result
    }

    /// Rotates a key; new seals use the new version at once (sealing DEKs under the old
    /// version are dropped from the cache).
    pub async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::RotateKey, || admin.rotate_key(key))
            .await;
        let key_ref = result
            .as_ref()
            .ok()
            .map(|v| KeyRef::new(key.clone(), v.clone()));
        self.audit(
            Operation::RotateKey,
            key_ref.as_ref(),
            Some(key),
            None,
            result.as_ref().err(),
        );
        if result.is_ok() {
            self.retire_sealers(self.inner.seal_cache.retain(|e| &e.key.uri != key));
            self.inner
                .primaries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
        result
    }

    /// Rotates each key whose newest version is older than its period; returns the keys
    /// rotated with their new versions. Run it on a schedule (cron, a Kubernetes CronJob).
    pub async fn rotate_due(
        &self,
        periods: &[(KeyUri, Duration)],
    ) -> Result<Vec<(KeyUri, KeyVersion)>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rotated = Vec::new();
        for (key, period) in periods {
            let newest = self
                .list_versions(key)
                .await?
                .iter()
                .filter_map(|v| v.created_unix)
                .max();
            let due = match newest {
                Some(created) => now.saturating_sub(created) >= period.as_secs(),
                None => true,
            };
            if due {
                let version = self.rotate_key(key).await?;
                tracing::info!(key = %key, version = %version, "scheduled rotation");
                rotated.push((key.clone(), version));
            }
        }
        Ok(rotated)
    }

    /// Has the provider rotate `key` by itself every `period`, where it can.
    pub async fn set_rotation_period(&self, key: &KeyUri, period: Option<Duration>) -> Result<()> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::RotateKey, || {
                admin.set_rotation_period(key, period)
            })
            .await;
        self.audit(
            Operation::RotateKey,
            None,
            Some(key),
            None,
            result.as_ref().err(),
        );
        result
    }

    /// Lists a key's versions.
    pub async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        let admin = self.admin(key)?.clone();
        self.kms_call(key.scheme(), Operation::HealthCheck, || {
            admin.list_versions(key)
        })
        .await
    }

    /// Enables, disables or destroys a version; cached DEKs under it are dropped.
    pub async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::SetVersionState, || {
                admin.set_version_state(key, version, state)
            })
            .await;
        let key_ref = KeyRef::new(key.clone(), version.clone());
        self.audit(
            Operation::SetVersionState,
            Some(&key_ref),
            None,
            None,
            result.as_ref().err(),
        );
        if result.is_ok() && state != VersionState::Enabled {
            self.retire_sealers(self.inner.seal_cache.retain(|e| e.key != key_ref));
            self.inner.open_cache.retain(|e| e.key != key_ref);
        }
        result
    }

    /// Checks every provider (a real generate/unwrap round trip on the default key where it
    /// belongs to that provider, otherwise a metadata call), the legacy key and the audit sinks.
    pub async fn health(&self) -> Vec<HealthReport> {
        let mut reports = Vec::new();
        let probe = EncryptionContext::from_pairs([("sealkit", "health")]).expect("static context");
        for scheme in self.schemes() {
            let started = Instant::now();
            let provider = self.inner.providers[scheme].clone();
            let problem = match self
                .inner
                .default_key
                .as_ref()
                .filter(|k| k.scheme() == scheme)
            {
                Some(key) => {
                    let round_trip = async {
                        let g = self
                            .kms_call(scheme, Operation::HealthCheck, || {
                                provider.generate_data_key(key, &probe)
                            })
                            .await?;
                        let back = self
                            .kms_call(scheme, Operation::HealthCheck, || {
                                provider.unwrap(&g.wrapped, &probe)
                            })
                            .await?;
                        if back.expose() == g.plaintext.expose() {
                            Ok(())
                        } else {
                            Err(Error::other(scheme, "round trip returned another key"))
                        }
                    };
                    round_trip.await.err().map(|e| e.to_string())
                }
                None => None,
            };
            let mut report = HealthReport {
                component: format!("provider {scheme}"),
                problem,
                latency: started.elapsed(),
            };
            if self.circuit_state(scheme) == CircuitState::Open && report.problem.is_none() {
                report.problem = Some("circuit open".into());
            }
            self.audit(
                Operation::HealthCheck,
                None,
                self.inner
                    .default_key
                    .as_ref()
                    .filter(|k| k.scheme() == scheme),
                None,
                None,
            );
            reports.push(report);
        }
        if self.inner.mode != Mode::Kms {
            let started = Instant::now();
            reports.push(HealthReport {
                component: "legacy key".into(),
                problem: self.legacy().err().map(|e| e.to_string()),
                latency: started.elapsed(),
            });
        }
        for chain in self.inner.secrets.values() {
            reports.extend(chain.check_links().await);
        }
        for sink in &self.inner.sinks {
            let started = Instant::now();
            reports.push(HealthReport {
                component: format!("audit sink {sink:?}"),
                problem: sink.flush().err().map(|e| e.to_string()),
                latency: started.elapsed(),
            });
        }
        reports
    }

    /// The configured secret `name` (`[secrets.NAME]`), from the first of its sources that
    /// serves it under its fallback policy (cached for its TTL).
    pub async fn secret(&self, name: &str) -> Result<Resolved> {
        let chain = self.inner.secrets.get(name).ok_or_else(|| {
            Error::misconfigured(format!(
                "no secret {name:?} is configured; add a [secrets.{name}] section with its sources"
            ))
        })?;
        chain.resolve().await
    }

    /// Number of DEKs cached for sealing and for opening.
    pub fn cached_deks(&self) -> (usize, usize) {
        (self.inner.seal_cache.len(), self.inner.open_cache.len())
    }
}

/// The error for input that is not an envelope at all, in `kms` mode.
fn not_an_envelope() -> Error {
    Error::invalid_input(
        "the ciphertext is not a Sealkit envelope; if it is legacy data, open it in mode \"hybrid\" (with the legacy key)",
    )
}
