//! Secrets (a database password, a legacy key) from an explicit, logged fallback chain.
//!
//! A chain lists where one logical secret lives, in order, e.g.
//! `["vault-kv2:secret/app/db#password", "env:DB_PASSWORD"]`. Each resolution logs which
//! source served it (`secret_fetched`), and every source it skipped and why
//! (`secret_source_unavailable_using_fallback`), never the value. Whether a later source may
//! serve when an earlier one fails is the chain's [`FallbackPolicy`]. Values are cached for a
//! TTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sealkit_core::provider::{Secret, SecretSource};
use sealkit_core::registry::ProviderSettings;

use crate::health::HealthReport;
use crate::{Error, ErrorKind, Result};

/// Secrets from environment variables: the name is the variable.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

#[async_trait]
impl SecretSource for EnvSecrets {
    fn name(&self) -> &str {
        "env"
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        if version.is_some() {
            return Err(Error::invalid_input(format!(
                "environment variable {name} has no versions"
            )));
        }
        match std::env::var_os(name) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v.into_encoded_bytes(), None)),
            _ => Err(Error::not_found(
                "env",
                format!("environment variable {name}"),
            )),
        }
    }
}

/// Secrets from files (e.g. Kubernetes or Docker secrets): the name is a path, relative to
/// the source's directory. A trailing newline is removed.
#[derive(Debug, Clone)]
pub struct FileSecrets {
    dir: PathBuf,
}

impl FileSecrets {
    /// Files under `dir` (absolute names are used as they are).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl SecretSource for FileSecrets {
    fn name(&self) -> &str {
        "file"
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        if version.is_some() {
            return Err(Error::invalid_input(format!(
                "secret file {name} has no versions"
            )));
        }
        let path = self.dir.join(name);
        match tokio::fs::read(&path).await {
            Ok(mut bytes) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                Ok(Secret::new(bytes, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found(
                "file",
                format!("secret file {}", path.display()),
            )),
            Err(e) => Err(Error::unavailable(
                "file",
                format!("reading {}: {e}", path.display()),
            )),
        }
    }
}

/// When a later source in a chain may serve a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FallbackPolicy {
    /// Only the first source; its failure is the chain's failure.
    Never,
    /// The next source serves when one is unavailable or throttling (not when it denies
    /// access or lacks the secret: those are configuration errors to fix).
    #[default]
    OnUnavailable,
    /// The next source serves whenever one fails for any reason but permission denied.
    OnAnyFailure,
}

/// One link of a chain: a source and the secret's name in it.
#[derive(Clone, Debug)]
pub struct SecretRef {
    source: Arc<dyn SecretSource>,
    name: String,
    version: Option<String>,
}

impl SecretRef {
    /// `name` (optionally at `version`) in `source`.
    pub fn new(
        source: Arc<dyn SecretSource>,
        name: impl Into<String>,
        version: Option<String>,
    ) -> Self {
        Self {
            source,
            name: name.into(),
            version,
        }
    }

    /// Stores `value` as the newest version of this secret (see
    /// [`SecretSource::put_secret`]); a reference naming a version is refused. Returns the
    /// version the store reports.
    pub async fn put(&self, value: &[u8]) -> Result<Option<String>> {
        if let Some(version) = &self.version {
            return Err(Error::invalid_input(format!(
                "a secret is written as a new version; drop @{version} from {}:{}",
                self.source.name(),
                self.name
            )));
        }
        self.source.put_secret(&self.name, value).await
    }
}

/// A resolved secret and the source that served it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Resolved {
    /// The value.
    pub secret: Arc<Secret>,
    /// The source's name (`env`, `vault-kv2`, …).
    pub source: String,
}

/// An ordered fallback chain for one logical secret, with a TTL cache.
#[derive(Debug)]
pub struct SecretChain {
    label: String,
    links: Vec<SecretRef>,
    policy: FallbackPolicy,
    ttl: Duration,
    cached: Mutex<Option<(Resolved, Instant)>>,
}

impl SecretChain {
    /// A chain for the secret `label` (a name for logs, e.g. `db_password`).
    pub fn new(label: impl Into<String>, links: Vec<SecretRef>, policy: FallbackPolicy) -> Self {
        Self {
            label: label.into(),
            links,
            policy,
            ttl: Duration::from_secs(300),
            cached: Mutex::new(None),
        }
    }

    /// How long a resolved value is reused (default 5 minutes; zero disables the cache).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The chain's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Fetches the secret from every link (no cache, no fallback) and reports each one: a
    /// real round trip per source, as a health check. Values are dropped at once.
    pub async fn check_links(&self) -> Vec<HealthReport> {
        let mut reports = Vec::with_capacity(self.links.len());
        for link in &self.links {
            let started = Instant::now();
            let result = link
                .source
                .get_secret(&link.name, link.version.as_deref())
                .await;
            reports.push(HealthReport::from_result(
                format!(
                    "secret {} via {}:{}",
                    self.label,
                    link.source.name(),
                    link.name
                ),
                result.as_ref().map(|_| ()),
                started.elapsed(),
            ));
        }
        reports
    }

    fn may_fall_back(&self, error: &Error) -> bool {
        match self.policy {
            FallbackPolicy::Never => false,
            FallbackPolicy::OnUnavailable => error.is_retryable(),
            FallbackPolicy::OnAnyFailure => error.kind() != ErrorKind::PermissionDenied,
        }
    }

    /// Resolves the secret: the cached value, or the first source that serves it.
    pub async fn resolve(&self) -> Result<Resolved> {
        if let Some((resolved, at)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(resolved.clone());
        }
        let mut last = None;
        for (i, link) in self.links.iter().enumerate() {
            let source = link.source.name().to_string();
            match link
                .source
                .get_secret(&link.name, link.version.as_deref())
                .await
            {
                Ok(secret) => {
                    tracing::info!(target: "sealkit::secrets", event = "secret_fetched", secret = %self.label, source = %source, name = %link.name, fallback = i > 0);
                    let resolved = Resolved {
                        secret: Arc::new(secret),
                        source,
                    };
                    if !self.ttl.is_zero() {
                        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((resolved.clone(), Instant::now()));
                    }
                    return Ok(resolved);
                }
                Err(e) => {
                    let next = self.links.get(i + 1).filter(|_| self.may_fall_back(&e));
                    match next {
                        Some(next) => {
                            tracing::warn!(target: "sealkit::secrets", event = "secret_source_unavailable_using_fallback", secret = %self.label, source = %source, name = %link.name, error_kind = e.kind().as_str(), error = %e, next = next.source.name())
                        }
                        None => {
                            tracing::error!(target: "sealkit::secrets", event = "secret_unavailable", secret = %self.label, source = %source, name = %link.name, error_kind = e.kind().as_str(), error = %e)
                        }
                    }
                    let stop = next.is_none();
                    last = Some(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::misconfigured(format!("secret {} has no sources configured", self.label))
        }))
    }
}

/// Named secret sources, so that chains can be written as text (`env:DB_PASSWORD`).
#[derive(Debug, Default, Clone)]
pub struct SecretSources {
    sources: HashMap<String, Arc<dyn SecretSource>>,
}

impl SecretSources {
    /// The sources every build has: `env` (variables) and `file` (paths relative to the
    /// working directory).
    pub fn builtin() -> Self {
        let mut s = Self::default();
        s.register("env", Arc::new(EnvSecrets));
        s.register("file", Arc::new(FileSecrets::new(".")));
        s
    }

    /// [`SecretSources::builtin`] plus the secret sources of every provider in `providers`
    /// (a configuration's [`providers`](crate::Config::providers) table:
    /// `vault-kv1`/`vault-kv2`, `aws-secrets`, `gcp-secrets`…), built from its settings.
    pub fn from_providers(
        providers: &std::collections::BTreeMap<String, ProviderSettings>,
    ) -> Result<Self> {
        let mut s = Self::builtin();
        for (name, settings) in providers {
            let provider = crate::providers::by_name(name)?;
            if !provider.secret_sources.is_empty() {
                s.add_all(provider.build(settings)?.secrets);
            }
        }
        Ok(s)
    }

    /// Registers each source under its own name.
    pub fn add_all(&mut self, sources: impl IntoIterator<Item = Arc<dyn SecretSource>>) {
        for source in sources {
            let name = source.name().to_string();
            self.sources.insert(name, source);
        }
    }

    /// Registers `source` under `prefix` (`vault-kv2`, `aws-secrets`, …).
    pub fn register(&mut self, prefix: &str, source: Arc<dyn SecretSource>) {
        self.sources.insert(prefix.to_string(), source);
    }

    /// Parses `PREFIX:NAME[@VERSION]` into a link (e.g. `vault-kv2:app/db#password@3`).
    pub fn link(&self, spec: &str) -> Result<SecretRef> {
        let (prefix, rest) = spec.split_once(':').ok_or_else(|| {
            Error::invalid_input(format!(
                "secret reference {spec:?} must be SOURCE:NAME, e.g. env:DB_PASSWORD"
            ))
        })?;
        let source = self.sources.get(prefix).ok_or_else(|| {
            let mut known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            known.sort_unstable();
            Error::misconfigured(format!(
                "no secret source {prefix:?} is configured (known: {})",
                known.join(", ")
            ))
        })?;
        let (name, version) = match rest.rsplit_once('@') {
            Some((n, v)) if !v.is_empty() && !v.contains('/') => (n, Some(v.to_string())),
            _ => (rest, None),
        };
        Ok(SecretRef::new(source.clone(), name, version))
    }

    /// A chain from textual links.
    pub fn chain(
        &self,
        label: &str,
        specs: &[&str],
        policy: FallbackPolicy,
    ) -> Result<SecretChain> {
        let links = specs
            .iter()
            .map(|s| self.link(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(SecretChain::new(label, links, policy))
    }
}
