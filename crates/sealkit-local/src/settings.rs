//! The local provider's settings and its registry entry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealkit_core::Result;
use sealkit_core::registry::{ProviderDescriptor, ProviderParts, ProviderSettings, Setting};
use secrecy::SecretString;

use crate::LocalKeyStore;

/// The settings the local provider reads, with their variables.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "home",
        variables: &["SEALKIT_HOME"],
        help: "key store directory (keys live in HOME/keys); default ./.sealkit",
        secret: false,
    },
    Setting {
        name: "passphrase",
        variables: &["SEALKIT_PASSPHRASE"],
        help: "passphrase sealing the key files (argon2id); none by default",
        secret: true,
    },
];

/// The local provider as one value, for the facade's registry. It is the embedded default, so
/// it always detects itself; opening the store creates nothing until a key is created.
pub const PROVIDER: ProviderDescriptor = ProviderDescriptor {
    name: "local",
    scheme: Some(crate::SCHEME),
    secret_sources: &[],
    settings: SETTINGS,
    detect: |_| true,
    build: build_from_settings,
};

fn build_from_settings(settings: &ProviderSettings) -> Result<ProviderParts> {
    let store = LocalKeyStore::from_settings(&LocalSettings::from_provider_settings(settings))?;
    Ok(ProviderParts::new().with_managed_keys(Arc::new(store)))
}

/// Where the local key store lives and the passphrase that seals it.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    home: PathBuf,
    passphrase: Option<SecretString>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            home: PathBuf::from(".sealkit"),
            passphrase: None,
        }
    }
}

impl LocalSettings {
    /// `SEALKIT_HOME` and `SEALKIT_PASSPHRASE`, with the defaults for what is unset.
    pub fn from_env() -> Result<Self> {
        Ok(Self::from_provider_settings(
            &PROVIDER.settings_from(&|name| std::env::var(name).ok()),
        ))
    }

    /// From a settings table (`home`, `passphrase`).
    pub fn from_provider_settings(settings: &ProviderSettings) -> Self {
        let mut out = Self::default();
        if let Some(home) = settings.get("home") {
            out.home = PathBuf::from(home);
        }
        out.passphrase = settings.get("passphrase").map(SecretString::from);
        out
    }

    /// Sets the key store directory.
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = home.into();
        self
    }

    /// Seals new key files with `passphrase`.
    pub fn with_passphrase(mut self, passphrase: SecretString) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// The key store directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The passphrase, if any.
    pub fn passphrase(&self) -> Option<&SecretString> {
        self.passphrase.as_ref()
    }
}
