//! The [`Keyring`]: sealing and opening through providers, with caching, policy, audit and
//! metrics.
//!
//! One module per job: [`builder`](KeyringBuilder) assembles a keyring from a [`Config`] and
//! the provider registry; `routing` finds a key's provider and instruments every provider
//! call; `seal`, `open` and `rewrap` move data; `admin` manages keys; `health` checks every
//! dependency.

mod admin;
mod builder;
mod compact;
mod health;
mod open;
mod rewrap;
mod routing;
mod seal;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sealkit_core::legacy::{LegacyFormat, LegacyKey};
use sealkit_core::provider::{KeyAdmin, KeyEncryption};
use sealkit_core::{AeadBackend, Algorithm, KeyUri, KeyVersion};

pub use builder::KeyringBuilder;
pub use compact::DekRewrapReport;

use crate::audit::AuditSink;
use crate::cache::{BoundedCache, CoarseInstant, OpenEntry, SealEntry, SwapCache};
use crate::config::{CacheConfig, Config, Mode};
use crate::resilience::{CircuitState, Resilience};
use crate::secrets::{Resolved, SecretChain};
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
    /// Legacy (pre-envelope) ciphertexts opened (`hybrid` and `legacy` modes).
    pub legacy_opens: u64,
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
    legacy: Option<(LegacyFormat, LegacyKey)>,
    sinks: Vec<Arc<dyn AuditSink>>,
    audit_data_operations: bool,
    resilience: Resilience,
    /// The `sealkit_dek_cache_hits_total{cache="seal"}` metric.
    seal_hit_metric: metrics::Counter,
    /// The `sealkit_dek_cache_hits_total{cache="open"}` metric.
    open_hit_metric: metrics::Counter,
    primaries: std::sync::Mutex<HashMap<KeyUri, (KeyVersion, CoarseInstant)>>,
    kms_calls: AtomicU64,
    /// Opens served by the unwrap cache.
    open_cache_hits: AtomicU64,
    /// Seal hits of the sealing-cache entries dropped so far (those of live entries are read
    /// from their budgets, so a hit costs no shared counter).
    retired_seal_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Legacy ciphertexts opened.
    legacy_opens: AtomicU64,
    /// The configured secrets, by name.
    secrets: BTreeMap<String, SecretChain>,
    /// The DEK store compact envelopes use, when configured.
    deks: Option<compact::Deks>,
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

    /// Builds from [`Config::from_env`]: `SEALKIT_CONFIG`, the `SEALKIT_*` variables, and the
    /// providers detected from their usual variables (`VAULT_ADDR`, `AWS_REGION`, …).
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

    /// Schemes whose keys this keyring can administer (create, list, delete…).
    pub fn admin_schemes(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.inner.admins.keys().map(String::as_str).collect();
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
            legacy_opens: self.inner.legacy_opens.load(Ordering::Relaxed),
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
