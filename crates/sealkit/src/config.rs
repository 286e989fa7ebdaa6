//! Configuration: a TOML file and/or environment variables. See `docs/configuration.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Algorithm, Error, KeyUri, Result};

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

impl std::str::FromStr for Mode {
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
/// Defaults: a sealing DEK serves at most 5 minutes, 1,000,000 messages and 1 GiB, and at most
/// 1,000 DEKs (sealing) and 10,000 DEKs (opening) are held. At 100,000 sealed fields under one
/// scope that is one KMS call, where an uncached keyring would make 100,000.
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
            max_age_secs: 300,
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

/// The local provider's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Key store directory (keys live in `home/keys`); `$SEALKIT_HOME`, default `./.sealkit`.
    pub home: PathBuf,
    /// Environment variable holding the key store passphrase, if the store is sealed.
    pub passphrase_env: String,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            home: PathBuf::from(".sealkit"),
            passphrase_env: "SEALKIT_PASSPHRASE".into(),
        }
    }
}

/// Where legacy ciphertexts come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyConfig {
    /// Environment variable holding the base64 legacy master key.
    pub key_env: String,
    /// Layout of legacy ciphertexts (`aes-gcm-iv16` or `aes-gcm-nonce12`).
    pub format: String,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            key_env: "ENCRYPTION_MASTER_KEY".into(),
            format: "aes-gcm-iv16".into(),
        }
    }
}

/// Where audit events go.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A JSON-lines file with hash-chained records; none means tracing only.
    pub path: Option<PathBuf>,
    /// Also record one event per seal and open (key operations are always recorded).
    pub data_operations: Option<bool>,
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

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The key new data is sealed under (`local://customers`, `vault-transit://transit/pii`…).
    pub default_key: Option<String>,
    /// The AEAD for new envelopes.
    pub algorithm: String,
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
    /// Local provider.
    pub local: LocalConfig,
    /// Legacy data.
    pub legacy: LegacyConfig,
    /// Audit.
    pub audit: AuditConfig,
    /// Rotation periods by key URI (`"local://customers" = "90d"`), for `keys rotate-due`.
    pub rotation: std::collections::BTreeMap<String, String>,
    /// Named secrets (`[secrets.db_password]`), served by [`crate::Keyring::secret`] and
    /// checked by [`crate::Keyring::health`].
    pub secrets: std::collections::BTreeMap<String, SecretConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_key: None,
            algorithm: "aes-256-gcm".into(),
            mode: Mode::Kms,
            actor: "sealkit".into(),
            dek_scope: vec!["tenant".into(), "table".into(), "column".into()],
            cache: CacheConfig::default(),
            resilience: ResilienceConfig::default(),
            local: LocalConfig::default(),
            legacy: LegacyConfig::default(),
            audit: AuditConfig::default(),
            rotation: std::collections::BTreeMap::new(),
            secrets: std::collections::BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| Error::misconfigured(format!("invalid configuration: {e}")))
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::misconfigured(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_toml(&text)
    }

    /// The file named by `SEALKIT_CONFIG` (if set), then the `SEALKIT_*` overrides.
    pub fn from_env() -> Result<Self> {
        let base = match std::env::var_os("SEALKIT_CONFIG") {
            Some(path) => Self::from_file(Path::new(&path))?,
            None => Self::default(),
        };
        base.with_env_overrides()
    }

    /// Applies `SEALKIT_DEFAULT_KEY`, `SEALKIT_MODE`, `SEALKIT_ALGORITHM`, `SEALKIT_ACTOR`,
    /// `SEALKIT_HOME`, `SEALKIT_AUDIT_LOG`, `SEALKIT_LEGACY_KEY_ENV`.
    pub fn with_env_overrides(mut self) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("SEALKIT_DEFAULT_KEY") {
            self.default_key = Some(v);
        }
        if let Some(v) = var("SEALKIT_MODE") {
            self.mode = v.parse()?;
        }
        if let Some(v) = var("SEALKIT_ALGORITHM") {
            self.algorithm = v;
        }
        if let Some(v) = var("SEALKIT_ACTOR") {
            self.actor = v;
        }
        if let Some(v) = var("SEALKIT_HOME") {
            self.local.home = PathBuf::from(v);
        }
        if let Some(v) = var("SEALKIT_AUDIT_LOG") {
            self.audit.path = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SEALKIT_LEGACY_KEY_ENV") {
            self.legacy.key_env = v;
        }
        Ok(self)
    }

    /// The parsed algorithm.
    pub fn algorithm(&self) -> Result<Algorithm> {
        self.algorithm.parse()
    }

    /// The rotation periods, parsed.
    pub fn rotation_periods(&self) -> Result<Vec<(KeyUri, Duration)>> {
        self.rotation
            .iter()
            .map(|(k, p)| Ok((KeyUri::parse(k)?, parse_period(p)?)))
            .collect()
    }

    /// The parsed default key.
    pub fn default_key(&self) -> Result<Option<KeyUri>> {
        self.default_key.as_deref().map(KeyUri::parse).transpose()
    }
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
