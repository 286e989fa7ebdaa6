//! A provider as one value: what a provider crate exports so that the facade can list it.
//!
//! Each provider crate exports one [`ProviderDescriptor`] (`sealkit_vault::PROVIDER`,
//! `sealkit_aws::PROVIDER`, …): its name, the key URI scheme it serves, the secret sources it
//! adds, the environment variables it reads, how it tells from them that it is configured,
//! and how it is built from [`ProviderSettings`]. The facade keeps one list of descriptors and
//! uses it for building keyrings, detection, secret sources, health checks and the CLI, so
//! adding a provider is one crate, one line in that list and one feature.
//!
//! Definitions only: the core reads no environment. Settings come from a configuration table
//! or from variables read by whoever holds the process environment (the facade's
//! `Config::from_env`), through [`ProviderSettings::from_variables`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use zeroize::Zeroizing;

use crate::provider::{KeyAdmin, KeyEncryption, SecretSource};
use crate::{Error, Result};

/// One setting a provider reads, and the environment variables that supply it (the first
/// one set wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The setting's name in a configuration table (`address`, `region`, `home`…).
    pub name: &'static str,
    /// Variables that supply it, in order of preference (`SEALKIT_VAULT_ADDR`, `VAULT_ADDR`).
    pub variables: &'static [&'static str],
    /// What it is, for docs and errors.
    pub help: &'static str,
    /// Whether the value is secret (a token, a passphrase): never shown.
    pub secret: bool,
}

/// A provider's settings as text, from a configuration table (`[providers.vault]`) or from
/// environment variables. Values are zeroized on drop and never printed: `Debug` shows the
/// setting names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    values: BTreeMap<String, Zeroizing<String>>,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl ProviderSettings {
    /// No settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value` (builder style).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values
            .insert(name.to_string(), Zeroizing::new(value.into()));
    }

    /// The value of `name`, if set and not blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, or a [`Error::Misconfigured`] naming the setting and its variables.
    pub fn require(&self, provider: &ProviderDescriptor, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| {
            let variables = provider
                .settings
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.variables.join(" or "))
                .unwrap_or_default();
            Error::misconfigured(format!(
                "the {} provider needs `{name}`: set it in [providers.{}] or export {variables}",
                provider.name, provider.name
            ))
        })
    }

    /// Parses the value of `name` with `FromStr`; an error names the setting.
    pub fn parse<T: core::str::FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.trim().parse().map_err(|e| {
                    Error::misconfigured(format!("setting `{name}` = {v:?} is invalid: {e}"))
                })
            })
            .transpose()
    }

    /// The names that are set.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds every setting of `other` that is not set here (file values first, then the
    /// environment's, say).
    pub fn fill_from(&mut self, other: &ProviderSettings) {
        for (name, value) in &other.values {
            self.values
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
    }

    /// Reads each of `settings` from the first of its variables that `lookup` finds set.
    pub fn from_variables(settings: &[Setting], lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut out = Self::new();
        for setting in settings {
            if let Some(value) = setting
                .variables
                .iter()
                .find_map(|v| lookup(v).filter(|value| !value.trim().is_empty()))
            {
                out.set(setting.name, value);
            }
        }
        out
    }
}

/// What a provider built: its key encryption, its admin side and its secret sources, each
/// optional.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ProviderParts {
    /// Wrapping and unwrapping under `scheme://` keys.
    pub keys: Option<Arc<dyn KeyEncryption>>,
    /// Administration of `scheme://` keys.
    pub admin: Option<Arc<dyn KeyAdmin>>,
    /// Secret sources, each registered under its [`SecretSource::name`].
    pub secrets: Vec<Arc<dyn SecretSource>>,
}

impl fmt::Debug for ProviderParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderParts")
            .field("keys", &self.keys.as_ref().map(|k| k.scheme()))
            .field("admin", &self.admin.as_ref().map(|a| a.scheme()))
            .field(
                "secrets",
                &self.secrets.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ProviderParts {
    /// No parts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value that both encrypts and administers keys.
    #[must_use]
    pub fn with_managed_keys<P: KeyEncryption + KeyAdmin + 'static>(mut self, p: Arc<P>) -> Self {
        self.admin = Some(p.clone());
        self.keys = Some(p);
        self
    }

    /// Adds a secret source.
    #[must_use]
    pub fn with_secrets(mut self, source: Arc<dyn SecretSource>) -> Self {
        self.secrets.push(source);
        self
    }
}

/// A provider as one value. See the [module docs](self).
#[derive(Clone, Copy)]
pub struct ProviderDescriptor {
    /// Its name: the configuration table (`[providers.NAME]`) and the cargo feature.
    pub name: &'static str,
    /// The key URI scheme it serves (`vault-transit`), if it serves keys.
    pub scheme: Option<&'static str>,
    /// The secret-source prefixes it adds (`vault-kv2` in `vault-kv2:secret/app#password`).
    pub secret_sources: &'static [&'static str],
    /// The settings it reads, with their variables.
    pub settings: &'static [Setting],
    /// Whether `settings` (read from the environment) say the provider is meant to be used.
    pub detect: fn(&ProviderSettings) -> bool,
    /// Builds the provider. Must not block or do I/O beyond what the settings name (clients
    /// connect lazily, on their first call).
    pub build: fn(&ProviderSettings) -> Result<ProviderParts>,
}

impl fmt::Debug for ProviderDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderDescriptor")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field("secret_sources", &self.secret_sources)
            .finish_non_exhaustive()
    }
}

impl ProviderDescriptor {
    /// Reads this provider's settings through `lookup` (an environment).
    pub fn settings_from(&self, lookup: &dyn Fn(&str) -> Option<String>) -> ProviderSettings {
        ProviderSettings::from_variables(self.settings, lookup)
    }

    /// Refuses settings this provider does not know, naming them and the known ones.
    pub fn check_names(&self, settings: &ProviderSettings) -> Result<()> {
        for name in settings.names() {
            if !self.settings.iter().any(|s| s.name == name) {
                let known: Vec<&str> = self.settings.iter().map(|s| s.name).collect();
                return Err(Error::misconfigured(format!(
                    "[providers.{}] has an unknown setting `{name}` (known: {})",
                    self.name,
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Builds the provider after checking the setting names.
    pub fn build(&self, settings: &ProviderSettings) -> Result<ProviderParts> {
        self.check_names(settings)?;
        (self.build)(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &ProviderSettings) -> bool {
        false
    }

    fn nothing(_: &ProviderSettings) -> Result<ProviderParts> {
        Ok(ProviderParts::new())
    }

    const DEMO: ProviderDescriptor = ProviderDescriptor {
        name: "demo",
        scheme: Some("demo"),
        secret_sources: &[],
        settings: &[
            Setting {
                name: "address",
                variables: &["SEALKIT_DEMO_ADDR", "DEMO_ADDR"],
                help: "where it is",
                secret: false,
            },
            Setting {
                name: "token",
                variables: &["DEMO_TOKEN"],
                help: "who we are",
                secret: true,
            },
        ],
        detect: never,
        build: nothing,
    };

    #[test]
    fn variables_are_read_in_order_and_blank_ones_skipped() {
        let env = |name: &str| match name {
            "SEALKIT_DEMO_ADDR" => Some(" ".to_string()),
            "DEMO_ADDR" => Some("http://127.0.0.1:1".to_string()),
            "DEMO_TOKEN" => Some("s3cret".to_string()),
            _ => None,
        };
        let settings = DEMO.settings_from(&env);
        assert_eq!(settings.get("address"), Some("http://127.0.0.1:1"));
        assert_eq!(settings.get("token"), Some("s3cret"));
        let shown = alloc::format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("token"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_and_missing_settings_are_named() {
        let bad = ProviderSettings::new().with("adress", "x");
        let err = DEMO.build(&bad).unwrap_err().to_string();
        assert!(
            err.contains("`adress`") && err.contains("address, token"),
            "{err}"
        );
        let err = bad.require(&DEMO, "address").unwrap_err().to_string();
        assert!(
            err.contains("[providers.demo]") && err.contains("SEALKIT_DEMO_ADDR or DEMO_ADDR"),
            "{err}"
        );
        let err = ProviderSettings::new()
            .with("timeout_ms", "soon")
            .parse::<u64>("timeout_ms")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`timeout_ms`"), "{err}");
    }

    #[test]
    fn fill_from_keeps_what_is_set() {
        let mut file = ProviderSettings::new().with("address", "file");
        file.fill_from(
            &ProviderSettings::new()
                .with("address", "env")
                .with("token", "t"),
        );
        assert_eq!(file.get("address"), Some("file"));
        assert_eq!(file.get("token"), Some("t"));
    }
}
