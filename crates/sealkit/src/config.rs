//! Configuration: a TOML file and/or environment variables. See `docs/configuration.md`.
//!
//! Every field is typed and parsed when the configuration is loaded ([`Config::from_toml`],
//! [`Config::from_env`]); an error names the field. [`Config::default`] and the TOML loaders
//! read no environment variable: [`Config::from_env`] is the one opt-in path that does, and
//! the variables it reads are listed in [`ENV_VARIABLES`] and in each provider's
//! [`ProviderDescriptor::settings`](sealkit_core::registry::ProviderDescriptor).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sealkit_core::legacy::{LegacyFormat, LegacyKey};
use sealkit_core::registry::ProviderSettings;
use serde::{Deserialize, Deserializer};

use crate::{Algorithm, Error, KeyUri, Result};

/// The `SEALKIT_*` variables [`Config::from_env`] reads (besides each provider's, listed in
/// its descriptor), with what each sets. `docs/configuration.md` is checked against this table.
pub const ENV_VARIABLES: &[(&str, &str)] = &[
    ("SEALKIT_CONFIG", "a TOML configuration file, read first"),
    ("SEALKIT_DEFAULT_KEY", "`default_key`"),
    ("SEALKIT_MODE", "`mode`: legacy, hybrid or kms"),
    ("SEALKIT_ALGORITHM", "`algorithm`"),
    ("SEALKIT_ACTOR", "`actor`, for audit records"),
    ("SEALKIT_AUDIT_LOG", "`audit.path`"),
    (
        "SEALKIT_AUDIT_KEY",
        "the audit key (base64 of 32 bytes); `audit.key_env` names another variable",
    ),
    (
        "SEALKIT_LEGACY_KEY_ENV",
        "`legacy.key_env`: the variable holding the legacy key",
    ),
    (
        "SEALKIT_DEK_STORE",
        "`deks.store`: the DEK store of compact envelopes (an SQLite path or a postgres:// URL)",
    ),
    ("SEALKIT_LAYOUT", "`deks.layout`: full or compact"),
];

/// Parses a field with `FromStr`; serde's error then names the field.
fn parsed<'de, D, T>(de: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let text = String::deserialize(de)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn parsed_option<'de, D, T>(de: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    Option::<String>::deserialize(de)?
        .map(|text| text.parse().map_err(serde::de::Error::custom))
        .transpose()
}

fn parsed_list<'de, D, T>(de: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    Vec::<String>::deserialize(de)?
        .iter()
        .map(|text| text.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn rotation_table<'de, D>(de: D) -> std::result::Result<BTreeMap<KeyUri, Duration>, D::Error>
where
    D: Deserializer<'de>,
{
    BTreeMap::<String, String>::deserialize(de)?
        .into_iter()
        .map(|(key, period)| {
            let named = |e: Error| serde::de::Error::custom(format!("rotation \"{key}\": {e}"));
            Ok((
                KeyUri::parse(&key).map_err(named)?,
                parse_period(&period).map_err(named)?,
            ))
        })
        .collect()
}

/// `[providers.NAME]` tables: each value as text (numbers and booleans too).
fn provider_tables<'de, D>(
    de: D,
) -> std::result::Result<BTreeMap<String, ProviderSettings>, D::Error>
where
    D: Deserializer<'de>,
{
    let tables = BTreeMap::<String, BTreeMap<String, toml::Value>>::deserialize(de)?;
    tables
        .into_iter()
        .map(|(name, table)| {
            let mut settings = ProviderSettings::new();
            for (key, value) in table {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                        value.to_string()
                    }
                    _ => {
                        return Err(serde::de::Error::custom(format!(
                            "providers.{name}.{key} must be a string, number or boolean"
                        )));
                    }
                };
                settings.set(&key, text);
            }
            Ok((name, settings))
        })
        .collect()
}

/// How the keyring treats legacy (pre-envelope) ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Seal in the legacy format under the env key; open legacy data and envelopes (so a
    /// rollback from `hybrid` still reads what was written meanwhile).
    Legacy,
    /// Seal envelopes under the KMS key; open envelopes and legacy data.
    Hybrid,
    /// Seal and open envelopes only; legacy data is refused with a clear error.
    #[default]
    Kms,
}

impl Mode {
    /// The configuration name (`legacy`, `hybrid`, `kms`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Hybrid => "hybrid",
            Self::Kms => "kms",
        }
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "legacy" => Ok(Self::Legacy),
            "hybrid" => Ok(Self::Hybrid),
            "kms" => Ok(Self::Kms),
            _ => Err(Error::misconfigured(format!(
                "mode {s:?} must be legacy, hybrid or kms"
            ))),
        }
    }
}

/// Bounds of the data-key caches.
///
/// Defaults: a sealing DEK serves at most one minute, 1,000,000 messages and 1 GiB, and at most
/// 1,000 DEKs (sealing) and 10,000 DEKs (opening) are held. At 100,000 sealed fields under one
/// scope that is one KMS call, where an uncached keyring would make 100,000. The age limit is
/// also the freshness bound: a key rotated or disabled by another process applies to this
/// keyring within it (see [`crate::Keyring::refresh`] to apply it at once).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Seconds a sealing DEK stays in use (and an unwrapped DEK stays cached).
    pub max_age_secs: u64,
    /// Messages one sealing DEK may seal (capped by the algorithm's hard limit).
    pub max_messages: u64,
    /// Plaintext bytes one sealing DEK may seal.
    pub max_bytes: u64,
    /// Sealing DEKs held at once.
    pub max_entries: usize,
    /// Unwrapped DEKs held at once for opening.
    pub max_open_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_age_secs: 60,
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            max_entries: 1_000,
            max_open_entries: 10_000,
        }
    }
}

impl CacheConfig {
    /// No caching: every seal asks the KMS for a fresh DEK, every open unwraps.
    pub fn disabled() -> Self {
        Self {
            max_age_secs: 0,
            max_messages: 1,
            max_bytes: u64::MAX,
            max_entries: 0,
            max_open_entries: 0,
        }
    }

    /// The age limit as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
}

/// Retries, timeouts and the circuit breaker for provider calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Attempts per call, the first included (retryable errors only).
    pub max_attempts: u32,
    /// First backoff, in milliseconds; doubles each retry, with full jitter.
    pub initial_backoff_ms: u64,
    /// Largest backoff, in milliseconds.
    pub max_backoff_ms: u64,
    /// Timeout of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Consecutive failed calls that open a provider's circuit.
    pub failure_threshold: u32,
    /// Seconds an open circuit refuses calls before letting one through.
    pub open_secs: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 2_000,
            timeout_ms: 5_000,
            failure_threshold: 5,
            open_secs: 30,
        }
    }
}

/// Where legacy ciphertexts come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyConfig {
    /// Environment variable holding the base64 legacy master key (read by
    /// [`Config::from_env`] in `legacy` and `hybrid` modes).
    pub key_env: String,
    /// Layout of legacy ciphertexts (`aes-gcm-iv16` or `aes-gcm-nonce12`).
    #[serde(deserialize_with = "parsed")]
    pub format: LegacyFormat,
    /// Where to fetch the legacy key from instead of `key_env`: a secret chain, first choice
    /// first (`key = ["aws-secrets:app/legacy-key", "env:ENCRYPTION_MASTER_KEY"]` in TOML),
    /// fetched by [`Config::fetch_secret_keys`] (and so by `build_async` and the CLI).
    #[serde(rename = "key")]
    pub key_sources: Vec<String>,
    /// The legacy key itself: never in a file; set by [`Config::from_env`] from `key_env`, by
    /// [`Config::fetch_secret_keys`] from `key`, or by the application. Its `Debug` shows no
    /// key material.
    #[serde(skip)]
    pub key: Option<LegacyKey>,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            key_env: LegacyKey::DEFAULT_ENV.into(),
            format: LegacyFormat::AesGcmIv16,
            key_sources: Vec::new(),
            key: None,
        }
    }
}

/// Resolves `chain` to text; `what` names the value in errors. Returns the text and the link
/// that served it (`aws-secrets:app/key`), never the value in a message.
async fn fetch_text(
    chain: &crate::secrets::SecretChain,
    what: &str,
) -> Result<(zeroize::Zeroizing<String>, String)> {
    let resolved = chain.resolve().await?;
    let bytes = secrecy::ExposeSecret::expose_secret(&resolved.secret.value);
    let source = format!("{} (served by {})", chain.label(), resolved.source);
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::misconfigured(format!(
            "{what} from {source} is not text; it must hold base64 of 32 bytes"
        ))
    })?;
    Ok((zeroize::Zeroizing::new(text.to_string()), source))
}

/// Reads and validates the legacy key from the environment variable `name`.
pub fn legacy_key_from_env(name: &str) -> Result<LegacyKey> {
    match std::env::var(name) {
        Ok(value) => LegacyKey::from_base64(name, &zeroize::Zeroizing::new(value)),
        Err(std::env::VarError::NotPresent) => Err(Error::misconfigured(format!(
            "the legacy master key variable {name} is not set; export it (base64 of 32 bytes) \
             or set mode = \"kms\" if no legacy data remains"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::misconfigured(format!(
            "the legacy master key variable {name} is not valid text; it must hold base64 of 32 bytes"
        ))),
    }
}

/// Where audit events go.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A JSON-lines file with MAC-chained records; none means tracing only.
    pub path: Option<PathBuf>,
    /// Also record one event per seal and open (key operations are always recorded).
    pub data_operations: Option<bool>,
    /// Where the file's checkpoints go (default: `path` with `.checkpoint` appended).
    pub checkpoint: Option<PathBuf>,
    /// Environment variable holding the audit key, base64 of 32 bytes (read by
    /// [`Config::from_env`] when `path` is set).
    pub key_env: String,
    /// A `[secrets.NAME]` entry that holds the audit key instead, fetched by
    /// [`KeyringBuilder::build_async`](crate::KeyringBuilder::build_async).
    pub key_secret: Option<String>,
    /// Longest wait, in milliseconds, before a data operation's record is written (default 100).
    pub flush_interval_ms: u64,
    /// When the file is synced: `on-flush` (default), `key-operations` or `always`.
    pub fsync: crate::audit::FsyncPolicy,
    /// The audit key itself: never in a file; set by [`Config::from_env`] from `key_env`, by
    /// `build_async` from `key_secret`, or by the application. Its `Debug` shows only its id.
    #[serde(skip)]
    pub key: Option<crate::audit::AuditKey>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: None,
            data_operations: None,
            checkpoint: None,
            key_env: "SEALKIT_AUDIT_KEY".into(),
            key_secret: None,
            flush_interval_ms: 100,
            fsync: crate::audit::FsyncPolicy::OnFlush,
            key: None,
        }
    }
}

impl AuditConfig {
    /// The `[secrets.NAME]` entry to fetch the audit key from: set when a file is configured,
    /// no key is in hand and `key_secret` names one.
    pub fn key_to_fetch(&self) -> Option<&str> {
        match (&self.path, &self.key) {
            (Some(_), None) => self.key_secret.as_deref(),
            _ => None,
        }
    }

    /// Where checkpoints of the configured file go.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.checkpoint.clone().or_else(|| {
            self.path
                .as_deref()
                .map(crate::audit::default_checkpoint_path)
        })
    }

    /// The file sink's options.
    pub fn file_options(&self) -> crate::audit::AuditFileOptions {
        let mut options = crate::audit::AuditFileOptions::default();
        options.checkpoint = self.checkpoint_path();
        options.flush_interval = Duration::from_millis(self.flush_interval_ms);
        options.fsync = self.fsync;
        options
    }
}

/// One logical secret (a database password, a legacy key) and where it lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// Links tried in order, `SOURCE:NAME[@VERSION]` (`vault-kv2:secret/app#db_password`,
    /// `env:DB_PASSWORD`).
    pub sources: Vec<String>,
    /// When a later link may serve: `never`, `on-unavailable` (default) or `on-any-failure`.
    #[serde(default)]
    pub fallback: crate::secrets::FallbackPolicy,
    /// Seconds a fetched value is reused (default 300; 0 fetches every time).
    #[serde(default = "default_secret_ttl")]
    pub ttl_secs: u64,
}

fn default_secret_ttl() -> u64 {
    300
}

/// The layout new envelopes get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Layout {
    /// Self-contained: the envelope carries its wrapped DEK (127 bytes of overhead for a
    /// local key; the export format).
    #[default]
    Full,
    /// The envelope names its DEK by a 16-byte id, and the wrapped DEK lives once in the DEK
    /// store (49 bytes of overhead with AES-256-GCM); needs `[deks] store`.
    Compact,
}

/// Compact envelopes and the DEK store (`[deks]`).
///
/// ```toml
/// [deks]
/// store = "sqlite:/var/lib/app/app.db"   # or postgres://…, the application's own database
/// layout = "compact"                     # or per key: compact_keys = ["local://customers"]
/// subject = "tenant"                     # DEKs per tenant, shreddable with keys shred
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DekConfig {
    /// The DEK store: an SQLite path (`sqlite:PATH` or a bare path) or a `postgres://` URL.
    /// Compact envelopes are sealed and opened only with one.
    pub store: Option<String>,
    /// The store's table.
    pub table: String,
    /// The layout new envelopes get under every key.
    pub layout: Layout,
    /// Keys whose new envelopes are compact whatever `layout` says.
    #[serde(deserialize_with = "parsed_list")]
    pub compact_keys: Vec<KeyUri>,
    /// The context key that names a DEK's subject (`tenant`, `user`), for crypto-shredding:
    /// it must be one of `dek_scope`, so each subject's values have DEKs of their own.
    pub subject: Option<String>,
    /// Messages a process reserves at a time from a stored DEK's shared budget.
    pub reserve_block: u64,
    /// A stored DEK's message budget across every process (default: `cache.max_messages`).
    pub message_limit: Option<u64>,
}

impl Default for DekConfig {
    fn default() -> Self {
        Self {
            store: None,
            table: "sealkit_deks".into(),
            layout: Layout::Full,
            compact_keys: Vec::new(),
            subject: None,
            reserve_block: 65_536,
            message_limit: None,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The key new data is sealed under (`local://customers`, `vault-transit://transit/pii`…).
    #[serde(deserialize_with = "parsed_option")]
    pub default_key: Option<KeyUri>,
    /// The AEAD for new envelopes.
    #[serde(deserialize_with = "parsed")]
    pub algorithm: Algorithm,
    /// `legacy`, `hybrid` or `kms`.
    pub mode: Mode,
    /// Who performs the operations, for audit records.
    pub actor: String,
    /// Context keys that scope a data key: envelopes sharing the values of these keys share a
    /// DEK, which is wrapped with those values as the KMS's associated data.
    pub dek_scope: Vec<String>,
    /// Cache bounds.
    pub cache: CacheConfig,
    /// Retries, timeouts, circuit breaker.
    pub resilience: ResilienceConfig,
    /// Providers to build, by name (`[providers.vault]`, `[providers.local]`), with their
    /// settings; see each provider's settings in docs/configuration.md. A `local://` key
    /// named by this configuration adds the local provider with its defaults.
    #[serde(deserialize_with = "provider_tables")]
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Legacy data.
    pub legacy: LegacyConfig,
    /// Audit.
    pub audit: AuditConfig,
    /// Rotation periods by key URI (`"local://customers" = "90d"`), for `keys rotate-due`.
    #[serde(deserialize_with = "rotation_table")]
    pub rotation: BTreeMap<KeyUri, Duration>,
    /// Named secrets (`[secrets.db_password]`), served by [`crate::Keyring::secret`] and
    /// checked by [`crate::Keyring::health`].
    pub secrets: BTreeMap<String, SecretConfig>,
    /// Compact envelopes and the DEK store.
    pub deks: DekConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_key: None,
            algorithm: Algorithm::Aes256Gcm,
            mode: Mode::Kms,
            actor: "sealkit".into(),
            dek_scope: vec!["tenant".into(), "table".into(), "column".into()],
            cache: CacheConfig::default(),
            resilience: ResilienceConfig::default(),
            providers: BTreeMap::new(),
            legacy: LegacyConfig::default(),
            audit: AuditConfig::default(),
            rotation: BTreeMap::new(),
            secrets: BTreeMap::new(),
            deks: DekConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML; an error names the field (and line) at fault. Reads no environment.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // Name the field: the line it is on, as written.
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count();
                    let written = text.lines().nth(line).unwrap_or("").trim();
                    format!(" at line {} (`{written}`)", line + 1)
                })
                .unwrap_or_default();
            Error::misconfigured(format!("invalid configuration{at}: {}", e.message().trim()))
                .with_source(e)
        })?;
        config.check_providers()?;
        Ok(config)
    }

    /// Reads a TOML file. Reads no environment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::misconfigured(format!("cannot read configuration file {}", path.display()))
                .with_source(e)
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Misconfigured { detail, source } => Error::Misconfigured {
                detail: format!("{}: {detail}", path.display()),
                source,
            },
            other => other,
        })
    }

    /// The opt-in environment path: the file named by `SEALKIT_CONFIG` (if set), then the
    /// `SEALKIT_*` overrides ([`ENV_VARIABLES`]), then provider detection: every compiled-in
    /// provider whose variables say it is configured (`VAULT_ADDR`, `AWS_REGION`…) is added
    /// to [`Config::providers`] (file settings win over variables), and in `legacy`/`hybrid`
    /// mode the legacy key is read from `legacy.key_env`.
    pub fn from_env() -> Result<Self> {
        let base = match std::env::var_os("SEALKIT_CONFIG") {
            Some(path) => Self::from_file(Path::new(&path))?,
            None => Self::default(),
        };
        base.with_env()
    }

    /// Applies the `SEALKIT_*` overrides, detects providers and reads the legacy key, as
    /// [`Config::from_env`] does after loading the file.
    pub fn with_env(mut self) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("SEALKIT_DEFAULT_KEY") {
            self.default_key = Some(named("SEALKIT_DEFAULT_KEY", v.parse())?);
        }
        if let Some(v) = var("SEALKIT_MODE") {
            self.mode = named("SEALKIT_MODE", v.parse())?;
        }
        if let Some(v) = var("SEALKIT_ALGORITHM") {
            self.algorithm = named("SEALKIT_ALGORITHM", v.parse())?;
        }
        if let Some(v) = var("SEALKIT_ACTOR") {
            self.actor = v;
        }
        if let Some(v) = var("SEALKIT_AUDIT_LOG") {
            self.audit.path = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SEALKIT_LEGACY_KEY_ENV") {
            self.legacy.key_env = v;
        }
        if let Some(v) = var("SEALKIT_DEK_STORE") {
            self.deks.store = Some(v);
        }
        if let Some(v) = var("SEALKIT_LAYOUT") {
            self.deks.layout = match v.as_str() {
                "full" => Layout::Full,
                "compact" => Layout::Compact,
                _ => {
                    return Err(Error::misconfigured(format!(
                        "SEALKIT_LAYOUT={v:?} must be full or compact"
                    )));
                }
            };
        }
        for provider in crate::providers::builtin() {
            let from_env = provider.settings_from(&var);
            let configured = self.providers.contains_key(provider.name);
            if configured || (provider.detect)(&from_env) {
                self.providers
                    .entry(provider.name.to_string())
                    .or_default()
                    .fill_from(&from_env);
            }
        }
        if self.audit.path.is_some()
            && self.audit.key.is_none()
            && let Some(text) = var(&self.audit.key_env)
        {
            let text = zeroize::Zeroizing::new(text);
            self.audit.key = Some(crate::audit::AuditKey::from_base64(
                &self.audit.key_env,
                &text,
            )?);
        }
        if self.mode != Mode::Kms && self.legacy.key.is_none() && self.legacy.key_sources.is_empty()
        {
            // Missing is reported by the keyring builder, which needs the key in these modes.
            if std::env::var_os(&self.legacy.key_env).is_some() {
                self.legacy.key = Some(legacy_key_from_env(&self.legacy.key_env)?);
            }
        }
        self.check_providers()?;
        Ok(self)
    }

    /// Whether [`Config::fetch_secret_keys`] has anything to fetch.
    pub fn has_secret_keys_to_fetch(&self) -> bool {
        self.audit.key_to_fetch().is_some()
            || (self.legacy.key.is_none() && !self.legacy.key_sources.is_empty())
    }

    /// Fetches, through `sources`, the keys the configuration names by secret reference: the
    /// audit key from the `[secrets.NAME]` entry `audit.key_secret` names (when an audit file
    /// is configured and no key is set), and the legacy key from the `legacy.key` chain (when
    /// none is set). The source that served each is logged.
    pub async fn fetch_secret_keys(
        &mut self,
        sources: &crate::secrets::SecretSources,
    ) -> Result<()> {
        if let Some(name) = self.audit.key_to_fetch().map(str::to_string) {
            let secret = self.secrets.get(&name).ok_or_else(|| {
                Error::misconfigured(format!(
                    "audit.key_secret names [secrets.{name}], which is not configured"
                ))
            })?;
            let specs: Vec<&str> = secret.sources.iter().map(String::as_str).collect();
            let chain = sources.chain(&name, &specs, secret.fallback)?;
            let (text, source) = fetch_text(&chain, "the audit key").await?;
            tracing::info!(secret = %name, source = %source, "audit key fetched");
            self.audit.key = Some(crate::audit::AuditKey::from_base64(&source, &text)?);
        }
        if self.legacy.key.is_none() && !self.legacy.key_sources.is_empty() {
            let specs: Vec<&str> = self.legacy.key_sources.iter().map(String::as_str).collect();
            let chain = sources.chain("legacy.key", &specs, Default::default())?;
            let (text, source) = fetch_text(&chain, "the legacy master key").await?;
            tracing::info!(source = %source, "legacy master key fetched");
            self.legacy.key = Some(LegacyKey::from_base64(&source, &text)?);
        }
        Ok(())
    }

    /// The settings table of provider `name`, created empty if absent (so that
    /// `config.provider("local").set("home", dir)` configures the local provider).
    pub fn provider(&mut self, name: &str) -> &mut ProviderSettings {
        self.providers.entry(name.to_string()).or_default()
    }

    /// Refuses provider tables that no compiled-in provider knows, or settings they don't.
    fn check_providers(&self) -> Result<()> {
        for (name, settings) in &self.providers {
            crate::providers::by_name(name)?.check_names(settings)?;
        }
        Ok(())
    }

    /// Every key URI this configuration names (the default key, rotation periods).
    pub fn key_uris(&self) -> impl Iterator<Item = &KeyUri> {
        self.default_key.iter().chain(self.rotation.keys())
    }
}

/// Prefixes a parse error with the variable it came from.
fn named<T>(variable: &str, parsed: Result<T>) -> Result<T> {
    parsed.map_err(|e| Error::misconfigured(format!("{variable}: {e}")))
}

/// Parses `90d`, `12h`, `30m`, `45s` (or a bare number of days).
pub fn parse_period(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().map_err(|_| {
        Error::misconfigured(format!(
            "rotation period {text:?} must look like 90d, 12h, 30m or 45s"
        ))
    })?;
    let secs = match unit {
        "" | "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => {
            return Err(Error::misconfigured(format!(
                "rotation period {text:?} must look like 90d, 12h, 30m or 45s"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn typed_fields_are_parsed_when_loaded_and_errors_name_the_field() {
        let config = Config::from_toml(
            "default_key = \"local://customers\"\nalgorithm = \"xchacha20-poly1305\"\n\
             [legacy]\nformat = \"aes-gcm-nonce12\"\n[rotation]\n\"local://customers\" = \"12h\"\n",
        )
        .unwrap();
        assert_eq!(config.default_key.unwrap().as_str(), "local://customers");
        assert_eq!(config.algorithm, Algorithm::XChaCha20Poly1305);
        assert_eq!(config.legacy.format, LegacyFormat::AesGcmNonce12);
        assert_eq!(
            config.rotation.values().next(),
            Some(&Duration::from_secs(12 * 3600))
        );
        for (text, field) in [
            ("default_key = \"customers\"", "default_key"),
            ("algorithm = \"rot13\"", "algorithm"),
            ("[legacy]\nformat = \"aes-cbc\"", "format"),
            ("[rotation]\n\"local://k\" = \"soon\"", "local://k"),
            ("mode = \"sometimes\"", "mode"),
            ("defualt_key = \"local://k\"", "defualt_key"),
        ] {
            let err = refused(text);
            assert!(err.contains(field), "{text:?} gave {err}");
        }
    }

    #[test]
    fn provider_tables_are_checked_against_the_registry() {
        let err = refused("[providers.nosuch]\naddress = \"x\"");
        assert!(err.contains("nosuch") && err.contains("feature"), "{err}");
        #[cfg(feature = "local")]
        {
            let err = refused("[providers.local]\nhomedir = \"x\"");
            assert!(err.contains("`homedir`") && err.contains("home"), "{err}");
            let config = Config::from_toml("[providers.local]\nhome = \"/tmp/k\"").unwrap();
            assert_eq!(config.providers["local"].get("home"), Some("/tmp/k"));
        }
    }

    #[test]
    fn a_pure_config_names_no_provider_and_secrets_stay_out_of_debug() {
        let mut config = Config::default();
        assert!(config.providers.is_empty());
        config.provider("vault").set("token", "s3cret-token");
        assert!(!format!("{config:?}").contains("s3cret-token"));
    }
}
